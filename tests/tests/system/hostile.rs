//! Issue 11, finding 4: any enrolled node could exhaust the hub. Here a
//! client holding valid village certificates attacks a real `county-hub
//! serve` process (malformed frames, idle connections, too many
//! connections) while a legitimate village syncs, and a client whose hub
//! dies mid-sync must give up within seconds and resume next time.

use node::Bundle;
use proto::sync::Message;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use system_tests::{ok, ok_json, run, runtime, s, County, Server};

const LEGIT: &str = "511421101001";
const MB: u64 = 1024 * 1024;

fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the hub is running");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in status"));
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of kB")
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:") * 1024
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the hub is running").count()
}

/// Samples a process's memory and descriptors every 20 ms; keeps the peaks.
struct Monitor {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, usize)>,
}

impl Monitor {
    fn start(pid: u32) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut rss_peak, mut fd_peak) = (0, 0);
            while !flag.load(Ordering::SeqCst) {
                rss_peak = rss_peak.max(rss(pid));
                fd_peak = fd_peak.max(fds(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            (rss_peak, fd_peak)
        });
        Monitor { stop, thread }
    }

    /// Peak RSS (bytes) and descriptors.
    fn finish(self) -> (u64, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("monitor thread")
    }
}

/// Identities of `n` villages other than the legitimate one, from bundles
/// written by `county-hub enroll --all`.
fn village_identities(county: &County, n: usize) -> Vec<Bundle> {
    let dir = county.root.path().join("bundles");
    ok("county-hub", &["enroll", "--data", s(&county.hub()), "--all", "--out-dir", s(&dir)]);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
        .iter()
        .map(|p| node::Bundle::read(p).unwrap())
        .filter(|b| b.identity.node.tier == proto::Tier::Village && b.identity.node.id.as_str() != LEGIT)
        .take(n)
        .collect()
}

fn client_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// A revoked laptop's thief re-encodes its certificate's ECDSA signature
/// (s as n - s: no CA key needed), so that its SHA-256, which the
/// revocation names, changes while the county CA's verifier still accepts
/// it. The hub refuses it as revoked all the same (it was let in).
#[test]
fn a_revoked_village_reencoding_its_certificate_is_still_refused() {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let county = County::new();
    let id = village_identities(&county, 1).remove(0);
    let village = id.identity.node.id.to_string();
    let hub_dir = county.hub();
    ok(
        "county-hub",
        &["revoke", "--data", s(&hub_dir), "--node", &village, "--reason", "笔记本丢失", "--as", "县管理员"],
    );
    let der = CertificateDer::from_pem_slice(id.identity.tls_cert_pem.as_bytes()).unwrap();
    // The first form is for P-256, the county CA's curve.
    let other = node::identity::other_signature_forms(&der).remove(0);
    let mut thief = id.clone();
    thief.identity.tls_cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", other));
    let hub = Server::start("county-hub", &["serve", "--data", s(&hub_dir), "--listen", "127.0.0.1:0"]);
    let addr: SocketAddr = hub.addr.parse().unwrap();
    runtime().block_on(async {
        let ep = client_endpoint();
        for bundle in [&id, &thief] {
            let conn = connect(&ep, bundle, addr).await;
            let why = closed_because(&conn, Duration::from_secs(10)).await;
            assert!(why.contains("revoked"), "{why}");
        }
    });
}

/// A mutually authenticated connection to the hub with a valid certificate.
async fn connect(ep: &quinn::Endpoint, id: &Bundle, addr: SocketAddr) -> quinn::Connection {
    let cfg = node::sync::client_config(&id.identity, &id.secrets).unwrap();
    ep.connect_with(cfg, addr, "peer.node").unwrap().await.expect("the handshake succeeds")
}

/// Why the hub closed a connection, waiting at most `within`.
async fn closed_because(conn: &quinn::Connection, within: Duration) -> String {
    match tokio::time::timeout(within, conn.closed()).await {
        Err(_) => format!("still open after {} s", within.as_secs()),
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => String::from_utf8_lossy(&c.reason).into_owned(),
        Ok(other) => format!("closed without a reason: {other}"),
    }
}

/// A length prefix followed by `body`.
fn framed(len: u32, body: &[u8]) -> Vec<u8> {
    let mut f = len.to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn packed(msg: &Message) -> Vec<u8> {
    let body = zstd::bulk::compress(&msg.encode(), 3).unwrap();
    framed(body.len() as u32, &body)
}

/// Deterministic bytes that are no zstd frame.
fn garbage(n: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sync(data: &str, peer: &str) -> Value {
    ok_json("village-node", &["sync", "--data", data, "--peer", peer, "--json"])
}

fn digest(program: &str, data: &str) -> Value {
    ok_json(program, &["digest", "--data", data, "--home", LEGIT, "--json"])
}

#[test]
fn a_hostile_enrolled_node_cannot_exhaust_the_hub() {
    let county = County::new();
    let legit = county.enrol(LEGIT, "village-node");
    let legit = s(&legit).to_string();
    let ids = village_identities(&county, 60);
    let hub = Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let pid = hub.child.id();
    let addr: SocketAddr = hub.addr.parse().unwrap();

    // Warm up with one legitimate session, then take the baseline.
    ok("county-sim", &["generate", "--data", &legit, "--count", "20", "--seed", "1", "--as", "王芳"]);
    sync(&legit, &hub.addr);
    ok("county-sim", &["generate", "--data", &legit, "--count", "20", "--seed", "2", "--as", "王芳"]);
    std::thread::sleep(Duration::from_millis(300));
    let (base_rss, base_fds) = (rss(pid), fds(pid));
    let monitor = Monitor::start(pid);

    let bomb = zstd::bulk::compress(&vec![0u8; 100 * MB as usize], 3).unwrap();
    let hostile: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        // (attack, bytes sent, finish the stream, what the hub must say)
        ("oversized length prefix", framed(u32::MAX, b"x"), false, "over the 16777216-byte limit"),
        ("200 MiB length prefix", framed(200 * MB as u32, &[0; 1024]), false, "over the 16777216-byte limit"),
        ("stalled frame just under the limit", framed(16 * MB as u32 - 1, &[7; 256 * 1024]), false, "no Hello"),
        ("truncated frame", framed(1000, &[1; 10]), true, "ended the stream inside a frame"),
        ("garbage bytes", framed(4096, &garbage(4096)), false, "does not decompress"),
        ("decompression bomb", framed(bomb.len() as u32, &bomb), false, "beyond any honest message"),
        (
            "batch before hello",
            packed(&Message::Batch { n: 0, segments: vec![], unreadable: vec![] }),
            false,
            "must be a Hello",
        ),
    ];
    let wants: Vec<&str> = hostile.iter().map(|h| h.3).collect();
    let idle_ids = ids[hostile.len()..].to_vec();
    let idle_count = 2 * idle_ids.len();
    let rt = runtime();
    let legit2 = legit.clone();
    let hub_addr = hub.addr.clone();
    let (malformed, no_stream, no_hello, over_cap, legit_sync, idle_closed_after) = rt.block_on(async move {
        let ep = client_endpoint();
        // Malformed frames, each from its own certificate.
        let mut attacks = Vec::new();
        for ((name, bytes, finish, _), id) in hostile.iter().zip(&ids) {
            let (ep, id, bytes, finish, name) = (ep.clone(), id.clone(), bytes.clone(), *finish, name.to_string());
            attacks.push(tokio::spawn(async move {
                let conn = connect(&ep, &id, addr).await;
                let (mut send, _recv) = conn.open_bi().await.unwrap();
                let _ = send.write_all(&bytes).await;
                if finish {
                    let _ = send.finish();
                }
                (name, closed_because(&conn, Duration::from_secs(15)).await)
            }));
        }
        // Idle connections: two per certificate (the most one node may
        // hold), one never opening a stream, one never sending a Hello.
        let mut idle = Vec::new();
        let idle_since = Instant::now();
        for id in &idle_ids {
            let quiet = connect(&ep, id, addr).await;
            let stalled = connect(&ep, id, addr).await;
            let (mut send, recv) = stalled.open_bi().await.unwrap();
            send.write_all(&[0, 0, 4]).await.unwrap(); // part of a length prefix
            idle.push((quiet, stalled, send, recv));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A third connection from the same certificates is refused.
        let mut over_cap = Vec::new();
        for id in &idle_ids {
            let conn = connect(&ep, id, addr).await;
            over_cap.push(closed_because(&conn, Duration::from_secs(3)).await);
        }
        // A legitimate village syncs while all of that is held open.
        let legit_sync =
            tokio::task::spawn_blocking(move || sync(&legit2, &hub_addr)).await.expect("the legitimate sync ran");
        let mut malformed = Vec::new();
        for a in attacks {
            malformed.push(a.await.unwrap());
        }
        let (mut no_stream, mut no_hello) = (Vec::new(), Vec::new());
        for (quiet, stalled, _send, _recv) in &idle {
            no_stream.push(closed_because(quiet, Duration::from_secs(15)).await);
            no_hello.push(closed_because(stalled, Duration::from_secs(15)).await);
        }
        (malformed, no_stream, no_hello, over_cap, legit_sync, idle_since.elapsed())
    });
    drop(rt);
    std::thread::sleep(Duration::from_millis(500));
    let (peak_rss, peak_fds) = monitor.finish();
    let (after_rss, after_fds) = (rss(pid), fds(pid));
    eprintln!(
        "hub under attack: RSS baseline {:.1} MB, peak {:.1} MB, after {:.1} MB; descriptors baseline {base_fds}, \
         peak {peak_fds}, after {after_fds}; {} idle connections dropped within {:.1} s",
        base_rss as f64 / MB as f64,
        peak_rss as f64 / MB as f64,
        after_rss as f64 / MB as f64,
        idle_count,
        idle_closed_after.as_secs_f64()
    );

    for ((name, reason), want) in malformed.iter().zip(&wants) {
        assert!(reason.contains(want), "{name}: the hub said {reason:?}, expected {want:?}");
    }
    for r in &no_stream {
        assert!(r.contains("opened no stream within 10 s"), "{r}");
    }
    for r in &no_hello {
        assert!(r.contains("no Hello from the peer within 10 s"), "{r}");
    }
    for r in &over_cap {
        assert!(r.contains("already holds 2 connections"), "{r}");
    }
    assert!(legit_sync["sent_events"].as_u64().unwrap() >= 20, "{legit_sync}");
    assert_eq!(digest("village-node", &legit), digest("county-hub", s(&county.hub())));
    assert!(idle_closed_after < Duration::from_secs(20), "idle connections held for {idle_closed_after:?}");
    assert!(peak_rss < base_rss + 100 * MB, "hub RSS peaked at {peak_rss} bytes from a baseline of {base_rss}");
    assert!(peak_fds < base_fds + 20, "hub held {peak_fds} descriptors from a baseline of {base_fds}");
    assert!(after_rss < base_rss + 50 * MB, "hub kept {after_rss} bytes after the attack (baseline {base_rss})");
    assert!(after_fds <= base_fds + 2, "hub kept {after_fds} descriptors after the attack (baseline {base_fds})");
}

/// The total connection limit (here 3, through CASE_NODE_MAX_CONNECTIONS)
/// and the per-node limit refuse extra connections with a reason, before
/// any ledger is opened; once the deadlines drop the idle ones, a village
/// syncs again.
#[test]
fn connections_over_the_limits_are_refused_with_a_reason() {
    let county = County::new();
    let legit = county.enrol(LEGIT, "village-node");
    let ids = village_identities(&county, 2);
    let hub = Server::start_with_env(
        "county-hub",
        &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"],
        &[("CASE_NODE_MAX_CONNECTIONS", "3")],
    );
    let addr: SocketAddr = hub.addr.parse().unwrap();
    let rt = runtime();
    let (per_node, total, held) = rt.block_on(async {
        let ep = client_endpoint();
        let a1 = connect(&ep, &ids[0], addr).await;
        let a2 = connect(&ep, &ids[0], addr).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let a3 = connect(&ep, &ids[0], addr).await;
        let per_node = closed_because(&a3, Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b1 = connect(&ep, &ids[1], addr).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b2 = connect(&ep, &ids[1], addr).await;
        let total = closed_because(&b2, Duration::from_secs(5)).await;
        let mut held = Vec::new();
        for c in [&a1, &a2, &b1] {
            held.push(closed_because(c, Duration::from_secs(15)).await);
        }
        (per_node, total, held)
    });
    assert!(per_node.contains("already holds 2 connections"), "{per_node}");
    assert!(total.contains("serving 3 connections, its limit"), "{total}");
    for r in &held {
        assert!(r.contains("opened no stream within 10 s"), "{r}");
    }
    ok("county-sim", &["generate", "--data", s(&legit), "--count", "3", "--as", "王芳"]);
    let out = sync(s(&legit), &hub.addr);
    assert!(out["sent_events"].as_u64().unwrap() >= 3, "{out}");
    assert_eq!(digest("village-node", s(&legit)), digest("county-hub", s(&county.hub())));
}

/// The hub is killed (SIGKILL) in the middle of a sync over a slow link:
/// the village gives up within seconds, says why, and the next sync
/// resumes where the stored events end.
#[test]
fn a_sync_whose_hub_dies_gives_up_within_seconds_and_resumes() {
    let county = County::new();
    let data = county.enrol(LEGIT, "village-node");
    let data = s(&data).to_string();
    let hub_dir = county.hub();
    ok("county-sim", &["generate", "--data", &data, "--count", "1500", "--seed", "5", "--as", "王芳"]);
    let mut hub = Server::start("county-hub", &["serve", "--data", s(&hub_dir), "--listen", "127.0.0.1:0"]);
    let link = Server::start(
        "county-sim",
        &["link", "--listen", "127.0.0.1:0", "--target", &hub.addr, "--rtt-ms", "100", "--kbps", "1000"],
    );
    let client = system_tests::cmd("village-node")
        .args(["sync", "--data", &data, "--peer", &link.addr, "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    let killed = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(client.wait_with_output());
    });
    let out = rx.recv_timeout(Duration::from_secs(30)).expect("the client exits within 30 s").unwrap();
    let gave_up = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the sync cannot have completed: {stderr}");
    assert!(gave_up < Duration::from_secs(15), "the client waited {gave_up:?} for a dead hub");
    assert!(stderr.contains("stopped answering") && stderr.contains("run sync again"), "{stderr}");
    eprintln!("client gave up {:.1} s after the hub died", gave_up.as_secs_f64());

    // The hub comes back; the next sync sends only what it had not stored.
    let partial = digest("county-hub", s(&hub_dir))["events"].as_u64().unwrap();
    let hub = Server::start("county-hub", &["serve", "--data", s(&hub_dir), "--listen", "127.0.0.1:0"]);
    let done = run("village-node", &["sync", "--data", &data, "--peer", &hub.addr, "--json"]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let done: Value = serde_json::from_slice(&done.stdout).unwrap();
    let total = digest("village-node", &data)["events"].as_u64().unwrap();
    assert!(partial < total, "the hub was killed after the sync completed; slow the link");
    assert_eq!(done["sent_events"].as_u64().unwrap() + partial, total, "{done}");
    assert_eq!(digest("village-node", &data), digest("county-hub", s(&hub_dir)));
}

/// Review of issue 11: first packets of handshakes that are never finished
/// (no certificate needed to send them) must not take the places of
/// villages. Once a network has `UNVALIDATED_PER_NETWORK` handshakes in
/// progress, the hub answers its first packets with a QUIC Retry and keeps
/// nothing until the sender answers; a sender that does answer may hold at
/// most `HANDSHAKES_PER_ADDRESS` handshakes at once.
#[test]
fn half_open_handshakes_do_not_lock_villages_out() {
    let county = County::new();
    let legit = s(&county.enrol(LEGIT, "village-node")).to_string();
    let hub_data = s(&county.hub()).to_string();
    let hub = Server::start("county-hub", &["serve", "--data", &hub_data, "--listen", "127.0.0.1:0"]);
    ok("county-sim", &["generate", "--data", &legit, "--count", "3", "--as", "王芳"]);
    let hub_addr: SocketAddr = hub.addr.parse().unwrap();
    let bundle = village_identities(&county, 1).remove(0);
    // Capture 400 genuine first packets (ClientHellos) without answering.
    let initials: Vec<Vec<u8>> = runtime().block_on(async move {
        let mut out = Vec::new();
        for _ in 0..400 {
            let trap = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let ep = client_endpoint();
            let cfg = node::sync::client_config(&bundle.identity, &bundle.secrets).unwrap();
            let connecting = ep.connect_with(cfg, trap.local_addr().unwrap(), "peer.node").unwrap();
            let mut buf = vec![0u8; 2048];
            let n = tokio::time::timeout(Duration::from_secs(2), trap.recv(&mut buf)).await.unwrap().unwrap();
            buf.truncate(n);
            out.push(buf);
            drop(connecting);
        }
        out
    });
    let mut sockets = Vec::new();
    for initial in &initials {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(initial, hub_addr).unwrap();
        sockets.push(sock); // kept open, never answering
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = run("village-node", &["sync", "--data", &legit, "--peer", &hub.addr, "--json"]);
    assert!(out.status.success(), "a village was locked out: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(digest("village-node", &legit), digest("county-hub", &hub_data));
}

/// Second review of issue 11: handshakes that pass address validation
/// (Retry) and then stall at TLS, 32 from each of ten addresses of one
/// network (320, more than the 256 sessions a hub serves), do not lock out
/// a village from another network: handshakes have their own budget
/// (`MAX_HANDSHAKES`), capped per network (`HANDSHAKES_PER_ADDRESS` per
/// IPv4 /24), and never count against sessions.
#[test]
fn stalled_handshakes_from_several_networks_leave_room_for_villages() {
    let county = County::new();
    let legit = s(&county.enrol(LEGIT, "village-node")).to_string();
    let hub_data = s(&county.hub()).to_string();
    let hub = Server::start("county-hub", &["serve", "--data", &hub_data, "--listen", "127.0.0.1:0"]);
    ok("county-sim", &["generate", "--data", &legit, "--count", "2", "--as", "王芳"]);
    let hub_addr: SocketAddr = hub.addr.parse().unwrap();
    let b = village_identities(&county, 1).remove(0);
    let rt = runtime();
    let flood = rt.spawn(async move {
        let (mut tasks, mut eps) = (Vec::new(), Vec::new());
        for host in 2..12u8 {
            let ip: std::net::IpAddr = std::net::Ipv4Addr::new(127, 0, 1, host).into();
            for _ in 0..32 {
                // A relay passing only the client's first two packets (the
                // Initial and the Initial with the Retry token): a handshake
                // that validates its address, then stalls.
                let up = Arc::new(tokio::net::UdpSocket::bind((ip, 0)).await.unwrap());
                up.connect(hub_addr).await.unwrap();
                let down = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
                let ep = client_endpoint();
                let cfg = node::sync::client_config(&b.identity, &b.secrets).unwrap();
                eps.push((ep.clone(), ep.connect_with(cfg, down.local_addr().unwrap(), "peer.node").unwrap()));
                tasks.push(tokio::spawn(async move {
                    let (mut buf, mut buf2) = (vec![0u8; 65536], vec![0u8; 65536]);
                    let (mut client, mut forwarded) = (None, 0);
                    loop {
                        tokio::select! {
                            r = down.recv_from(&mut buf) => {
                                let Ok((n, from)) = r else { break };
                                client = Some(from);
                                if forwarded < 2 { forwarded += 1; let _ = up.send(&buf[..n]).await; }
                            }
                            r = up.recv(&mut buf2) => {
                                let Ok(n) = r else { break };
                                if let Some(c) = client { let _ = down.send_to(&buf2[..n], c).await; }
                            }
                        }
                    }
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(eps);
        tasks.into_iter().for_each(|t| t.abort());
    });
    std::thread::sleep(Duration::from_secs(2));
    let out = run("village-node", &["sync", "--data", &legit, "--peer", &hub.addr, "--json"]);
    flood.abort();
    assert!(out.status.success(), "a village was locked out: {}", String::from_utf8_lossy(&out.stderr));
}
