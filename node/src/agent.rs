//! The key agent: a node's keys unlocked once for a working day.
//!
//! Unsealing a node's keys costs an Argon2id derivation on purpose (a
//! thief without the passphrase pays it per guess), and every command run
//! as its own process pays it again: most of a no-op `sync` started by a
//! scheduler. `unlock` derives the key of each sealed blob of the node
//! once, checks it opens the blob, and leaves it with a small background
//! process (this module, run as the hidden `agent` command) that hands it
//! to the node's commands for a set time, as ssh-agent and gpg-agent do;
//! `lock` ends it sooner.
//!
//! What it holds and gives: only the derived key of each sealed blob it
//! was started for (by the blob's salt), never the passphrase (which staff
//! may use elsewhere), and it derives nothing new. It answers on a Unix
//! socket inside a directory of the data directory that only the node's
//! account may enter (mode 0700), and only to a peer of that account
//! (`SO_PEERCRED`). A process of that account can read the keys either
//! way (as it can read a running desk's memory); a powered-off or
//! locked laptop holds them nowhere: the agent keeps them in memory only
//! (zeroed when dropped, never in a core dump), and ends at its time, by
//! the wall clock or the boot clock (which counts sleep and which no one
//! sets), whichever comes first, at `lock`, or when its socket is removed
//! or replaced. Not yet: its memory is not locked against swap (the
//! workspace forbids the unsafe code `mlock` needs).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::keystore::{Kdf, Sealed};

/// The directory of the agent's socket, inside the data directory.
pub const AGENT_DIR: &str = "agent";
const SOCKET: &str = "agent.sock";
/// Longest an agent may keep keys: a working day and its evening.
pub const MOST_HOURS: u64 = 16;
/// How long a command waits for the agent's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The longest socket path the system takes (`sun_path`, 108 bytes with
/// its terminating zero).
const MOST_SOCKET_PATH: usize = 107;

/// The socket of the agent of the node in `dir`, by the directory's
/// canonical path (a command given a relative one finds the same agent).
pub fn socket_path(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()).join(AGENT_DIR).join(SOCKET)
}

/// One key the agent holds: the salt and cost of the blob it opens.
#[derive(Clone, PartialEq, Eq)]
pub struct Held {
    pub salt: String,
    pub kdf: Kdf,
    pub key: [u8; 32],
}

impl Drop for Held {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("salt", &self.salt).field("kdf", &self.kdf).finish_non_exhaustive()
    }
}

fn request_of(sealed: &Sealed) -> String {
    format!("key {} {} {}\n", sealed.salt, sealed.kdf.memory_kib, sealed.kdf.passes)
}

/// Asks the agent of the node in `dir` for the key of `sealed`. `None`
/// when no agent runs there, it does not hold that key, or it does not
/// answer in time: the caller then derives the key from the passphrase.
///
/// An agent that did not answer is not asked again by this process (a
/// stopped agent would otherwise cost every later command two seconds).
pub fn ask(dir: &Path, sealed: &Sealed) -> Option<[u8; 32]> {
    static GAVE_UP: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let path = socket_path(dir);
    if !path.exists() || GAVE_UP.lock().unwrap_or_else(|p| p.into_inner()).contains(&path) {
        return None;
    }
    let answer = match exchange(&path, &request_of(sealed)) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("the key agent of {} did not answer: {e:#}", dir.display());
            GAVE_UP.lock().unwrap_or_else(|p| p.into_inner()).push(path);
            return None;
        }
    };
    // The key's text and bytes are zeroed when dropped.
    let answer = zeroize::Zeroizing::new(answer);
    let bytes = zeroize::Zeroizing::new(hex::decode(answer.strip_prefix("key ")?.trim()).ok()?);
    <[u8; 32]>::try_from(bytes.as_slice()).ok()
}

/// Ends the agent of the node in `dir`. Returns whether one was running.
pub fn lock(dir: &Path) -> Result<bool> {
    let path = socket_path(dir);
    if !path.exists() {
        return Ok(false);
    }
    match exchange(&path, "lock\n") {
        Ok(a) if a.trim() == "locked" => Ok(true),
        Ok(other) => bail!("the key agent of {} answered {other:?} to lock", dir.display()),
        Err(e) if refused(&e) => {
            // Its socket outlived it (the laptop was switched off).
            let _ = std::fs::remove_file(&path);
            Ok(false)
        }
        Err(e) => bail!(
            "the key agent of {} did not answer ({e:#}); it may be stopped: end it with `pkill -f 'agent --data'` \
             (its keys stay in its memory until it ends)",
            dir.display()
        ),
    }
}

/// Whether connecting failed because nothing listens there any more.
fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rustix::io::Errno>()
            .is_some_and(|n| *n == rustix::io::Errno::CONNREFUSED || *n == rustix::io::Errno::NOENT)
    })
}

/// Reads one line of at most `most` bytes before `deadline`, however the
/// bytes trickle in.
fn read_line_by(stream: &UnixStream, most: usize, deadline: std::time::Instant) -> Result<String> {
    let mut buf = Vec::with_capacity(64);
    let mut byte = [0u8; 64];
    while !buf.contains(&b'\n') && buf.len() < most {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            bail!("no answer in time");
        }
        stream.set_read_timeout(Some(left))?;
        let n = (&*stream).read(&mut byte)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    let line = String::from_utf8_lossy(&buf).lines().next().unwrap_or_default().to_string() + "\n";
    zeroize::Zeroize::zeroize(&mut buf);
    Ok(line)
}

/// One request and its one-line answer. The connection is made without
/// waiting (an agent that stopped answering, its backlog full, fails at
/// once), and only to an agent of this account.
fn exchange(path: &Path, request: &str) -> Result<String> {
    use rustix::net::{connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC, None)?;
    connect(&fd, &SocketAddrUnix::new(path)?).with_context(|| format!("connecting to {}", path.display()))?;
    let mut stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    if peer_uid(&stream) != Some(rustix::process::geteuid().as_raw()) {
        bail!("{} is held by another account", path.display());
    }
    let deadline = std::time::Instant::now() + ANSWER_WAIT;
    stream.set_write_timeout(Some(ANSWER_WAIT))?;
    stream.write_all(request.as_bytes())?;
    read_line_by(&stream, 256, deadline)
}

/// The agent's socket, made ready: its directory only the node's account
/// may enter, any socket left by an agent that is gone removed.
pub fn listen(dir: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let path = socket_path(dir);
    if path.as_os_str().len() > MOST_SOCKET_PATH {
        bail!(
            "the agent's socket would be {} ({} bytes), longer than the system allows ({MOST_SOCKET_PATH}); \
             keep the data directory at a shorter path",
            path.display(),
            path.as_os_str().len()
        );
    }
    let home = path.parent().context("the agent's directory")?.to_path_buf();
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&home) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e).with_context(|| {
                format!("cannot make {} (is the data directory on read-only media?)", home.display())
            });
        }
    }
    let meta = std::fs::symlink_metadata(&home)?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me {
        bail!("{} is not a directory of this account; remove it and unlock again", home.display());
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
    }
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            bail!("a key agent already answers for {}; lock it first", dir.display());
        }
        std::fs::remove_file(&path)?;
    }
    UnixListener::bind(&path).with_context(|| format!("cannot listen on {}", path.display()))
}

/// The user id of the process at the other end of `stream`.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    rustix::net::sockopt::socket_peercred(stream).ok().map(|cred| cred.uid.as_raw())
}

/// The socket file this agent bound (device and inode): what it removes
/// and watches, never a socket a later agent bound at the same path.
fn identity_of(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn remove_own(path: &Path, own: Option<(u64, u64)>) {
    if own.is_some() && identity_of(path) == own {
        let _ = std::fs::remove_file(path);
    }
}

/// Serves `held` on `listener` until `until_ms` (ms since the epoch, by
/// the wall clock, so a laptop that slept past it finds the agent gone),
/// a `lock`, or its socket removed or replaced; then removes its socket
/// (if still its own) and returns. Each connection has its own thread and
/// two seconds.
pub fn serve(listener: UnixListener, held: Vec<Held>, until_ms: u64) -> Result<()> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let path = listener.local_addr()?.as_pathname().map(Path::to_path_buf).context("the agent's socket has no path")?;
    let own = identity_of(&path);
    let held = std::sync::Arc::new(held);
    // The same time on the boot clock, which counts sleep and which no one
    // sets: a wall clock set back (staff correcting a fast clock) does not
    // lengthen it.
    let boot_until = boot_ms() + until_ms.saturating_sub(crate::wall_clock_ms());
    let over = move || crate::wall_clock_ms() >= until_ms || boot_ms() >= boot_until;
    // A `lock` answered on its thread wakes the loop through this pair.
    let (wake_rx, wake_tx) = UnixStream::pair()?;
    let wake_tx = std::sync::Arc::new(wake_tx);
    let busy = std::sync::Arc::new(AtomicUsize::new(0));
    let me = rustix::process::geteuid().as_raw();
    let second = Timespec { tv_sec: 1, tv_nsec: 0 };
    listener.set_nonblocking(true)?;
    loop {
        if over() || identity_of(&path) != own {
            break;
        }
        let mut fds = [PollFd::new(&listener, PollFlags::IN), PollFd::new(&wake_rx, PollFlags::IN)];
        if poll(&mut fds, Some(&second)).unwrap_or(0) == 0 {
            continue;
        }
        if !fds[1].revents().is_empty() {
            break;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                // Out of descriptors, say: not a loop at full speed.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if peer_uid(&stream) != Some(me) || stream.set_nonblocking(false).is_err() {
            continue;
        }
        if busy.load(Ordering::SeqCst) >= MOST_AT_ONCE {
            continue;
        }
        busy.fetch_add(1, Ordering::SeqCst);
        let (held, path, wake_tx, busy_done) = (held.clone(), path.clone(), wake_tx.clone(), busy.clone());
        let spawned = std::thread::Builder::new().spawn(move || {
            let deadline = std::time::Instant::now() + ANSWER_WAIT;
            if let Ok(line) = read_line_by(&stream, 512, deadline) {
                let answer = answer(&held, line.trim(), over());
                let lock = answer == "locked\n";
                if lock {
                    // Gone before it says so: an `unlock` that follows binds
                    // its own socket, which this agent then never touches.
                    remove_own(&path, own);
                }
                let _ = stream.set_write_timeout(Some(deadline.saturating_duration_since(std::time::Instant::now())));
                // Zeroed when dropped.
                let answer = zeroize::Zeroizing::new(answer);
                let _ = (&stream).write_all(answer.as_bytes());
                if lock {
                    let _ = (&*wake_tx).write_all(b"!");
                }
            }
            busy_done.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
    remove_own(&path, own);
    Ok(())
}

/// Requests answered at once, at most (each on its own thread).
const MOST_AT_ONCE: usize = 16;

/// Milliseconds on the boot clock (`CLOCK_BOOTTIME`: counts sleep, set by
/// no one).
fn boot_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec as u64) * 1000 + (t.tv_nsec as u64) / 1_000_000
}

/// The answer to one request; `over` when the agent's time has passed.
fn answer(held: &[Held], request: &str, over: bool) -> String {
    let mut words = request.split(' ');
    match (words.next(), words.next(), words.next(), words.next(), words.next()) {
        (Some("key"), ..) if over => "none\n".into(),
        (Some("key"), Some(salt), Some(memory), Some(passes), None) => {
            let kdf = (memory.parse(), passes.parse());
            let found = held
                .iter()
                .find(|h| h.salt == salt && matches!(kdf, (Ok(m), Ok(p)) if h.kdf == Kdf { memory_kib: m, passes: p }));
            match found {
                Some(h) => format!("key {}\n", hex::encode(h.key)),
                None => "none\n".into(),
            }
        }
        (Some("lock"), None, ..) => "locked\n".into(),
        _ => "unknown\n".into(),
    }
}

/// What `unlock` passes to the agent it starts, on its standard input
/// (never on its command line, which other accounts can read).
pub fn handover(held: &[Held], until_ms: u64) -> String {
    let mut text = format!("until {until_ms}\n");
    for h in held {
        text.push_str(&format!("held {} {} {} {}\n", h.salt, h.kdf.memory_kib, h.kdf.passes, hex::encode(h.key)));
    }
    text
}

/// Reads [`handover`]'s text.
pub fn read_handover(text: &str) -> Result<(Vec<Held>, u64)> {
    let mut held = Vec::new();
    let mut until = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["until", ms] => until = Some(ms.parse().context("the agent's time")?),
            ["held", salt, memory, passes, key] => held.push(Held {
                salt: salt.to_string(),
                kdf: Kdf { memory_kib: memory.parse()?, passes: passes.parse()? },
                key: hex::decode(key)?.try_into().map_err(|_| anyhow::anyhow!("a key of the wrong length"))?,
            }),
            _ => bail!("the agent was handed something it does not read"),
        }
    }
    Ok((held, until.context("the agent was not told until when")?))
}

/// The blobs sealed under the node's passphrase in its store, by what
/// they hold: the node's keys, and at the county hub its CA's.
const SEALED_BLOBS: [(&str, &str); 2] = [("secrets", "node keys"), ("hub_secrets", "the county hub's CA key")];

/// Reads a time to stay unlocked: `8h`, `90m`, `600s`.
pub fn parse_for(text: &str) -> Result<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().with_context(|| format!("{text:?} is not a time such as 8h, 90m or 600s"))?;
    let secs = match unit {
        "h" => n * 3600,
        "m" => n * 60,
        "s" => n,
        _ => bail!("{text:?} is not a time such as 8h, 90m or 600s"),
    };
    if secs == 0 || secs > MOST_HOURS * 3600 {
        bail!("the keys stay unlocked for at most {MOST_HOURS}h, and some time");
    }
    Ok(Duration::from_secs(secs))
}

/// Unlocks the node in `dir` for `time`: derives the key of each blob
/// sealed under its passphrase (given, from the environment, or typed;
/// never from a running agent), checks that it opens it, and starts the
/// agent (this program's hidden `agent` command) with them, replacing an
/// agent already running. Returns until when (ms since the epoch).
pub fn unlock(dir: &Path, time: Duration) -> Result<u64> {
    let store = crate::store::Store::open_read(dir)?;
    let node = crate::store::meta_get::<crate::identity::Identity>(store.conn(), "identity")?
        .map_or_else(|| dir.display().to_string(), |i| i.node.id.0);
    let mut held = Vec::new();
    let mut passphrase = None;
    for (name, _) in SEALED_BLOBS {
        let Some(sealed) = crate::store::meta_get::<Sealed>(store.conn(), name)? else { continue };
        let pass = match &passphrase {
            Some(p) => p,
            None => passphrase.insert(crate::keystore::passphrase(&format!("node {node}"))?),
        };
        let key = crate::keystore::derive_for(&sealed, pass)?;
        crate::keystore::open_with_key(&sealed, &key)?;
        held.push(Held { salt: sealed.salt.clone(), kdf: sealed.kdf, key });
    }
    drop(store);
    if held.is_empty() {
        bail!("{} holds no sealed keys: initialise it from its enrolment bundle first", dir.display());
    }
    lock(dir)?;
    let until_ms = crate::wall_clock_ms() + time.as_millis() as u64;
    start(dir, &held, until_ms)?;
    Ok(until_ms)
}

/// Starts the agent in its own process group (it outlives the command
/// that started it), hands it the keys on its standard input, and waits
/// until it answers.
fn start(dir: &Path, held: &[Held], until_ms: u64) -> Result<()> {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().context("cannot find this program to start the key agent")?;
    let mut child = Command::new(exe)
        .arg("agent")
        .arg("--data")
        .arg(dir)
        .env_remove(crate::keystore::PASSPHRASE_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the key agent")?;
    let mut input = child.stdin.take().context("the agent's input")?;
    let mut text = handover(held, until_ms);
    let written = input.write_all(text.as_bytes());
    zeroize::Zeroize::zeroize(&mut text);
    written?;
    drop(input);
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("the agent's output")?).read_line(&mut line)?;
    match line.trim() {
        "ready" => Ok(()),
        "" => bail!("the key agent ended before it was ready: {:?}", child.wait()?),
        why => bail!("the key agent did not start: {why}"),
    }
}

/// The hidden `agent` command: reads its keys from standard input, listens,
/// says `ready` on standard output, and serves until its time or `lock`.
/// It also ends when its socket is removed (the data directory deleted or
/// initialised again).
pub fn run(dir: &Path) -> Result<()> {
    // Its own session (no terminal's hang-up reaches it), no core dump or
    // debugger of the same account's unprivileged kind, nothing held open
    // in the directory it was started from.
    let _ = rustix::process::setsid();
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit { current: Some(0), maximum: Some(0) },
    );
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{} is not a data directory", dir.display()))?;
    std::env::set_current_dir("/")?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin().take(64 * 1024), &mut text)?;
    let parsed = read_handover(&text);
    zeroize::Zeroize::zeroize(&mut text);
    let (held, until_ms) = parsed?;
    let dir = dir.as_path();
    let listener = match listen(dir) {
        Ok(l) => l,
        Err(e) => {
            println!("{e:#}");
            return Err(e);
        }
    };
    println!("ready");
    std::io::stdout().flush()?;
    serve(listener, held, until_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore;

    /// An agent hands the key of the blob it holds (which opens it) to a
    /// command of the same account, nothing for another blob, and after
    /// `lock` answers no more and leaves no socket.
    #[test]
    fn an_agent_hands_the_key_it_holds_and_nothing_after_lock() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = keystore::seal(b"node keys", "correct horse battery", Kdf::SIMULATION).unwrap();
        let other = keystore::seal(b"other keys", "correct horse battery", Kdf::SIMULATION).unwrap();
        let key = keystore::derive_for(&sealed, "correct horse battery").unwrap();
        let held = vec![Held { salt: sealed.salt.clone(), kdf: sealed.kdf, key }];
        let listener = listen(dir.path()).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(AGENT_DIR)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700, "only the node's account may reach the socket");
        let until_ms = crate::wall_clock_ms() + 60_000;
        let serving = std::thread::spawn(move || serve(listener, held, until_ms));
        let got = ask(dir.path(), &sealed).expect("the key held");
        assert_eq!(keystore::open_with_key(&sealed, &got).unwrap(), b"node keys");
        assert_eq!(ask(dir.path(), &other), None, "a blob it was not given");
        assert!(listen(dir.path()).is_err(), "a second agent while one answers");
        assert!(lock(dir.path()).unwrap());
        serving.join().unwrap().unwrap();
        assert!(!socket_path(dir.path()).exists());
        assert_eq!(ask(dir.path(), &sealed), None);
        assert!(!lock(dir.path()).unwrap(), "nothing left to lock");
    }

    fn serving(dir: &Path, held: Vec<Held>, until_ms: u64) -> std::thread::JoinHandle<Result<()>> {
        let listener = listen(dir).unwrap();
        std::thread::spawn(move || serve(listener, held, until_ms))
    }

    fn sealed_and_held(pass: &str) -> (Sealed, Vec<Held>) {
        let sealed = keystore::seal(b"node keys", pass, Kdf::SIMULATION).unwrap();
        let key = keystore::derive_for(&sealed, pass).unwrap();
        let held = vec![Held { salt: sealed.salt.clone(), kdf: sealed.kdf, key }];
        (sealed, held)
    }

    /// Its time is the wall clock's: a key asked at or after it is not
    /// given (a laptop that slept past it), and an agent started past it
    /// ends at once, its socket gone.
    #[test]
    fn an_agent_past_its_time_gives_nothing_and_ends() {
        let (sealed, held) = sealed_and_held("correct horse battery");
        let request = request_of(&sealed);
        assert!(answer(&held, request.trim(), false).starts_with("key "));
        assert_eq!(answer(&held, request.trim(), true), "none\n");
        let dir = tempfile::tempdir().unwrap();
        serving(dir.path(), held, crate::wall_clock_ms() - 1).join().unwrap().unwrap();
        assert!(!socket_path(dir.path()).exists());
    }

    /// An agent that does not answer (stopped, or not an agent) costs a
    /// command at most its two seconds, then the command goes on without.
    #[test]
    fn an_agent_that_does_not_answer_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let (sealed, _) = sealed_and_held("correct horse battery");
        let _silent = listen(dir.path()).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(ask(dir.path(), &sealed), None);
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        // Not asked again by this process.
        let again = std::time::Instant::now();
        assert_eq!(ask(dir.path(), &sealed), None);
        assert!(again.elapsed() < Duration::from_millis(100), "{:?}", again.elapsed());
        // `lock` says it did not answer, rather than that none was running.
        assert!(format!("{:#}", lock(dir.path()).unwrap_err()).contains("did not answer"));
    }

    /// `lock` ends the agent at once (not at its next second), and a
    /// request trickled in a byte at a time holds a thread no longer than
    /// its two seconds.
    #[test]
    fn lock_ends_the_agent_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_, held) = sealed_and_held("correct horse battery");
        let agent = serving(dir.path(), held, crate::wall_clock_ms() + 60_000);
        let mut slow = UnixStream::connect(socket_path(dir.path())).unwrap();
        slow.write_all(b"ke").unwrap();
        let started = std::time::Instant::now();
        assert!(lock(dir.path()).unwrap());
        agent.join().unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    }

    /// Locked and unlocked again at once: the old agent never removes the
    /// new one's socket (it removes only the socket it bound itself).
    #[test]
    fn a_locked_agent_leaves_the_next_one_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (sealed, held) = sealed_and_held("correct horse battery");
        let until_ms = crate::wall_clock_ms() + 60_000;
        let first = serving(dir.path(), held.clone(), until_ms);
        assert!(lock(dir.path()).unwrap());
        let second = serving(dir.path(), held, until_ms);
        first.join().unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        assert!(ask(dir.path(), &sealed).is_some(), "the second agent lost its socket");
        assert!(lock(dir.path()).unwrap());
        second.join().unwrap().unwrap();
    }

    /// A process that had its key from the agent keeps it after `lock`
    /// (a desk started while unlocked goes on signing).
    #[test]
    fn a_key_had_from_the_agent_stays_with_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let (sealed, held) = sealed_and_held("another horse battery");
        let agent = serving(dir.path(), held, crate::wall_clock_ms() + 60_000);
        let key = keystore::key_in(dir.path(), &sealed, "test node").unwrap();
        assert!(lock(dir.path()).unwrap());
        agent.join().unwrap().unwrap();
        assert_eq!(keystore::key_in(dir.path(), &sealed, "test node").unwrap(), key);
    }

    #[test]
    fn the_handover_reads_back_what_was_written() {
        let held = vec![Held { salt: "ab".repeat(16), kdf: Kdf::STANDARD, key: [3; 32] }];
        assert_eq!(read_handover(&handover(&held, 42)).unwrap(), (held, 42));
        assert!(read_handover("held x\n").is_err());
        assert!(read_handover("").is_err(), "no time given");
    }
}
