//! Keys at rest (issue 11, finding 3): a stolen laptop's disk holds no key
//! in the clear, its keys open only with the node's passphrase, and its
//! data keys open only its own village's personal data.

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use system_tests::{cmd, copy_dir, id_number, ok, ok_json, s, take_case, County, PASSPHRASE_ENV};

const VILLAGE_A: &str = "511421101001";
const VILLAGE_B: &str = "511421102001";
const TOWNSHIP: &str = "511421101";

fn bundle(county: &County, node: &str) -> Value {
    let text = std::fs::read_to_string(county.root.path().join(format!("{node}.bundle.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every byte of every file in a data directory.
fn disk(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_laptop_disk_holds_no_key_in_the_clear() {
    let county = County::new();
    let a = county.enrol(VILLAGE_A, "village-node");
    let a_s = s(&a).to_string();
    ok(
        "village-node",
        &[
            "case",
            "new",
            "--data",
            &a_s,
            "--item",
            "V001",
            "--applicant",
            "张三",
            "--id-number",
            &id_number(1),
            "--as",
            "王芳",
        ],
    );
    let b = bundle(&county, VILLAGE_A);
    let secrets = &b["secrets"];
    let signing = secrets["signing_key"].as_str().unwrap();
    let tls_body: String =
        secrets["tls_key_pem"].as_str().unwrap().lines().filter(|l| !l.starts_with("-----")).collect();
    let lane_key = secrets["data_keys"]["lanes"][VILLAGE_A].as_str().unwrap();
    let bytes = disk(&a);
    for (what, secret) in [("signing key", signing), ("TLS key", &tls_body[..40]), ("data key", lane_key)] {
        assert!(!contains(&bytes, secret.as_bytes()), "the {what} is on disk in the clear");
        if let Ok(raw) = hex::decode(secret) {
            assert!(!contains(&bytes, &raw), "the {what} is on disk in raw bytes");
        }
    }
    let hub_bytes = disk(&county.hub());
    assert!(!contains(&hub_bytes, b"BEGIN PRIVATE KEY"), "the hub's CA key is on disk in the clear");
    assert!(!contains(&hub_bytes, signing.as_bytes()), "the hub keeps a node's signing key in the clear");
}

#[test]
fn writing_needs_the_passphrase_and_reading_does_not() {
    let county = County::new();
    let a = county.enrol(VILLAGE_A, "village-node");
    let a_s = s(&a).to_string();
    let new_case = ["case", "new", "--data", &a_s, "--item", "V001", "--applicant", "李四", "--id-number"];
    let id = id_number(2);
    let run = |pass: Option<&str>, stdin: Option<&str>, extra: &[&str]| {
        let mut c = cmd("village-node");
        c.args(new_case).arg(&id).args(["--as", "王芳"]).args(extra);
        match pass {
            Some(p) => c.env(PASSPHRASE_ENV, p),
            None => c.env_remove(PASSPHRASE_ENV),
        };
        c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let locked = run(None, None, &[]);
    assert!(!locked.status.success());
    assert!(String::from_utf8_lossy(&locked.stderr).contains("locked under its passphrase"));
    let wrong = run(Some("not the passphrase"), None, &[]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"), "{wrong:?}");
    let piped = run(None, Some(&format!("{}\n", system_tests::PASSPHRASE)), &["--passphrase-stdin"]);
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    // Nothing was written by the refused attempts; the listing needs no key.
    let mut list = cmd("village-node");
    list.args(["case", "list", "--data", &a_s, "--json"]).env_remove(PASSPHRASE_ENV);
    let out = list.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cases: Value = serde_json::from_slice(out.stdout.rsplit(|b| *b == b'\n').nth(1).unwrap()).unwrap();
    assert_eq!(cases.as_array().unwrap().len(), 1);
}

/// One village's bundle opens its own lane's personal data only; its
/// township's opens its villages'; no bundle holds the county's master key.
#[test]
fn data_keys_are_scoped_to_the_lanes_a_node_may_hold() {
    let county = County::new();
    county.enrol(VILLAGE_A, "village-node");
    county.enrol(VILLAGE_B, "village-node");
    county.enrol(TOWNSHIP, "township-node");
    let lanes = |node| {
        let b = bundle(&county, node);
        assert!(b["secrets"]["data_keys"]["master"].is_null(), "{node}'s bundle holds the master key");
        b["secrets"]["data_keys"]["lanes"].as_object().unwrap().clone()
    };
    let a = lanes(VILLAGE_A);
    assert_eq!(a.keys().collect::<Vec<_>>(), vec![VILLAGE_A]);
    let b = lanes(VILLAGE_B);
    assert_ne!(a[VILLAGE_A], b[VILLAGE_B], "villages do not share a data key");
    let t = lanes(TOWNSHIP);
    assert!(t.contains_key(TOWNSHIP) && t.contains_key(VILLAGE_A));
    assert!(!t.contains_key(VILLAGE_B), "{VILLAGE_B} lies under another township");
    assert_eq!(t[VILLAGE_A], a[VILLAGE_A]);
    // The same ID number taken in two villages has unrelated lookups.
    let id = id_number(3);
    for (node, name) in [(VILLAGE_A, "甲"), (VILLAGE_B, "乙")] {
        let d = county.data(node);
        ok(
            "village-node",
            &[
                "case",
                "new",
                "--data",
                s(&d),
                "--item",
                "V001",
                "--applicant",
                name,
                "--id-number",
                &id,
                "--as",
                "王芳",
            ],
        );
        let found = ok_json("village-node", &["case", "find", "--data", s(&d), "--id-number", &id, "--json"]);
        assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    }
}

/// A lost laptop is revoked; the village gets a replacement with fresh
/// keys the same day. The replacement takes back the village's history and
/// works at once, through the county and through its township; the stolen
/// laptop stays refused everywhere, and what the thief signs after the
/// revocation is never applied (a township that took it before it heard
/// of the revocation sets it aside in quarantine).
#[test]
fn a_revoked_laptop_stays_refused_while_its_replacement_works() {
    let county = County::new();
    let township = county.enrol(TOWNSHIP, "township-node");
    let v = county.enrol(VILLAGE_A, "village-node");
    let (t, v, hub_data) = (s(&township).to_string(), s(&v).to_string(), s(&county.hub()).to_string());
    let hub = system_tests::Server::start("county-hub", &["serve", "--data", &hub_data, "--listen", "127.0.0.1:0"]);
    let tsrv = system_tests::Server::start("township-node", &["serve", "--data", &t, "--listen", "127.0.0.1:0"]);
    take_case(&v, "甲", 1);
    take_case(&v, "乙", 2);
    ok("village-node", &["sync", "--data", &v, "--peer", &hub.addr]);
    ok("township-node", &["sync", "--data", &t, "--peer", &hub.addr]);
    // The laptop is stolen; the county revokes it and enrols a replacement.
    let stolen = county.root.path().join("stolen");
    copy_dir(Path::new(&v), &stolen);
    let stolen = s(&stolen).to_string();
    ok(
        "county-hub",
        &["revoke", "--data", &hub_data, "--node", VILLAGE_A, "--reason", "笔记本被盗", "--as", "县管理员"],
    );
    let bundle = county.root.path().join("replacement.bundle.json");
    ok("county-hub", &["enroll", "--data", &hub_data, "--node", VILLAGE_A, "--out", s(&bundle)]);
    let fresh = county.root.path().join("replacement");
    let fresh_s = s(&fresh).to_string();
    ok("village-node", &["init", "--data", &fresh_s, "--enrollment", s(&bundle)]);
    // The replacement syncs: it takes back the village's history and works.
    let out = ok_json("village-node", &["sync", "--data", &fresh_s, "--peer", &hub.addr, "--json"]);
    assert!(out["recovery"]["taken_back"].as_u64().unwrap() >= 2, "{out}");
    assert_eq!(ok_json("village-node", &["case", "list", "--data", &fresh_s, "--json"]).as_array().unwrap().len(), 2);
    take_case(&fresh_s, "丙", 3);
    ok("village-node", &["sync", "--data", &fresh_s, "--peer", &hub.addr]);
    // The thief is refused by the county at once…
    let err = system_tests::fails("village-node", &["sync", "--data", &stolen, "--peer", &hub.addr]);
    assert!(err.contains("revoked") || err.contains("closed"), "{err}");
    // …and reaches the township, which has not heard of the revocation yet.
    take_case(&stolen, "贼", 4);
    ok("village-node", &["sync", "--data", &stolen, "--peer", &tsrv.addr]);
    // The township hears of it: the thief's work is set aside, not relayed.
    // (Its first sync may already have offered it, and been told the county
    // refused it: a sync with refusals exits non-zero.)
    system_tests::run("township-node", &["sync", "--data", &t, "--peer", &hub.addr]);
    ok("township-node", &["sync", "--data", &t, "--peer", &hub.addr]);
    let names = |program: &str, d: &str| -> Vec<String> {
        let list = ok_json(program, &["case", "list", "--data", d, "--json"]);
        let mut v: Vec<String> =
            list.as_array().unwrap().iter().map(|c| c["applicant"].as_str().unwrap().to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(names("county-hub", &hub_data), vec!["丙", "乙", "甲"]);
    assert_eq!(names("township-node", &t), vec!["丙", "乙", "甲"]);
    let q = ok_json("township-node", &["quarantine", "list", "--data", &t, "--json"]);
    assert!(q.as_array().unwrap().iter().any(|r| r["reason"].as_str().unwrap().contains("revoked")), "{q}");
    // The stolen laptop is now refused by the township too; the
    // replacement works through it.
    let err = system_tests::fails("village-node", &["sync", "--data", &stolen, "--peer", &tsrv.addr]);
    assert!(err.contains("revoked") || err.contains("closed"), "{err}");
    take_case(&fresh_s, "丁", 5);
    ok("village-node", &["sync", "--data", &fresh_s, "--peer", &tsrv.addr]);
    ok("township-node", &["sync", "--data", &t, "--peer", &hub.addr]);
    assert_eq!(names("county-hub", &hub_data), vec!["丁", "丙", "乙", "甲"]);
    for (program, d) in [("county-hub", &hub_data), ("township-node", &t), ("village-node", &fresh_s)] {
        assert_eq!(ok_json(program, &["verify", "--data", d, "--json"])["ok"], true, "{program}");
    }
}

/// The tables derived from the county's enrolments and vouchers are
/// rebuilt by `verify --repair` like every derived table: a hub whose
/// `node_keys` rows were lost knows every enrolled key again.
#[test]
fn verify_repair_rebuilds_the_keys_the_county_enrolled() {
    let county = County::new();
    let v = county.enrol(VILLAGE_A, "village-node");
    let (v, hub_data) = (s(&v).to_string(), s(&county.hub()).to_string());
    ok(
        "village-node",
        &[
            "case",
            "new",
            "--data",
            &v,
            "--item",
            "V001",
            "--applicant",
            "甲",
            "--id-number",
            &id_number(9),
            "--as",
            "王芳",
        ],
    );
    let conn = rusqlite::Connection::open(county.hub().join("node.db")).unwrap();
    conn.execute("DELETE FROM node_keys", []).unwrap();
    drop(conn);
    ok("county-hub", &["verify", "--data", &hub_data, "--repair", "--json"]);
    let hub = system_tests::Server::start("county-hub", &["serve", "--data", &hub_data, "--listen", "127.0.0.1:0"]);
    ok("village-node", &["sync", "--data", &v, "--peer", &hub.addr]);
    let digest = |program: &str, d: &str| ok_json(program, &["digest", "--data", d, "--home", VILLAGE_A, "--json"]);
    assert_eq!(digest("county-hub", &hub_data), digest("village-node", &v));
}

/// The process id of the key agent serving the node in `dir`.
fn agent_of(dir: &Path) -> Option<u32> {
    let want = std::fs::canonicalize(dir).unwrap();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let serves = args.get(1) == Some(&b"agent".as_slice())
            && args.get(3).is_some_and(|d| {
                std::fs::canonicalize(std::str::from_utf8(d).unwrap_or("")).ok() == Some(want.clone())
            });
        serves.then_some(pid)
    })
}

/// Ends a node's key agent when a test ends, passed or not.
struct Locks(String);

impl Drop for Locks {
    fn drop(&mut self) {
        let _ = cmd("village-node").args(["lock", "--data", &self.0]).output();
    }
}

/// `unlock` derives the keys once and leaves them with an agent: commands
/// then write without the passphrase (a scheduler's sync), until `lock`,
/// after which they ask for it again. A wrong passphrase starts nothing,
/// and the agent's socket is reachable only by the node's account.
#[test]
fn unlocked_commands_need_no_passphrase_until_lock() {
    let county = County::new();
    let a = county.enrol(VILLAGE_A, "village-node");
    let a_s = s(&a).to_string();
    let _locks = Locks(a_s.clone());
    let new_case = |n: u32| {
        let mut c = cmd("village-node");
        c.args(["case", "new", "--data", &a_s, "--item", "V001", "--applicant", "李四", "--id-number"])
            .arg(id_number(n))
            .args(["--as", "王芳"])
            .env_remove(PASSPHRASE_ENV);
        c.output().unwrap()
    };
    let wrong = cmd("village-node")
        .args(["unlock", "--data", &a_s, "--for", "5m"])
        .env(PASSPHRASE_ENV, "not the passphrase")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"), "{wrong:?}");
    assert!(!a.join("agent/agent.sock").exists(), "an agent started on a wrong passphrase");
    assert!(!new_case(3).status.success(), "written while locked");

    let said = ok("village-node", &["unlock", "--data", &a_s, "--for", "5m"]);
    assert!(said.contains("unlocked for 0h05"), "{said}");
    // The agent runs in a session of its own (a closed terminal's hang-up
    // does not reach it) and says nothing of the keys on its command line.
    let agent = agent_of(&a).expect("an agent process");
    let stat = std::fs::read_to_string(format!("/proc/{agent}/stat")).unwrap();
    let session: u32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(session, agent, "the agent leads its own session");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(a.join("agent")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
    let written = new_case(4);
    assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
    // A bad time is refused before anything is asked.
    let long = cmd("village-node").args(["unlock", "--data", &a_s, "--for", "3d"]).output().unwrap();
    assert!(!long.status.success());

    let said = ok("village-node", &["lock", "--data", &a_s]);
    assert!(said.contains("locked"), "{said}");
    assert!(!a.join("agent/agent.sock").exists());
    let refused = new_case(5);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("locked under its passphrase"), "{refused:?}");
    let cases = ok_json("village-node", &["case", "list", "--data", &a_s, "--json"]);
    assert_eq!(cases.as_array().unwrap().len(), 1, "only the case written while unlocked");
}
