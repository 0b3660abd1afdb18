//! Materials as files at one node (issue 14): attach by content type,
//! limits, stored once, sealed at rest, read back checked, replaced and
//! taken off as events. Real binaries on real data directories.

use serde_json::Value;
use std::path::{Path, PathBuf};
use system_tests::samples::{files_under as all_files, write_file as write};
use system_tests::{fails, ok, ok_json, s, take_case, County};

const VILLAGE: &str = "511421101001";
const MARKER: &[u8] = b"MARKER-7f3a-ID-CARD-SCAN";

/// A PDF of `size` bytes holding the marker, the rest pseudo-random (so
/// nothing compresses it away).
fn pdf(size: usize, seed: u64) -> Vec<u8> {
    let mut bytes = system_tests::samples::pdf_of_size(size.max(64), seed);
    bytes[40..40 + MARKER.len()].copy_from_slice(MARKER);
    bytes
}

fn attach(data: &str, case: &str, material: &str, file: &Path, extra: &[&str]) -> Value {
    let args = ["case", "attach", "--data", data, case, "--material", material, "--file", s(file), "--as", "王芳"];
    ok_json("village-node", &[&args[..], extra, &["--json"]].concat())
}

fn files(data: &str, case: &str) -> Vec<Value> {
    ok_json("village-node", &["case", "files", "--data", data, case, "--json"]).as_array().unwrap().clone()
}

#[test]
fn a_scan_is_attached_stored_once_sealed_and_read_back_checked() {
    let county = County::new();
    let v = county.enrol(VILLAGE, "village-node");
    let data = s(&v).to_string();
    let work = tempfile::tempdir().unwrap();
    let (one, two) = (take_case(&data, "张三", 1), take_case(&data, "李四", 2));

    // A 2 MB PDF: its type told by content, its hash, size and pages printed.
    let scan = pdf(2 * 1024 * 1024, 1);
    let path = write(work.path(), "身份证.pdf", &scan);
    let a = attach(&data, &one, "居民身份证", &path, &[]);
    assert_eq!(
        (a["media_type"].as_str(), a["size"].as_u64(), a["stored"].as_bool()),
        (Some("application/pdf"), Some(scan.len() as u64), Some(true))
    );
    assert_eq!(a["pages"], 1);
    let hash = a["hash"].as_str().unwrap().to_string();
    assert_eq!(hash, blake3::hash(&scan).to_hex().as_str(), "the hash is BLAKE3 of the bytes");

    // The same bytes on a second case (one ID card, two items): stored once.
    let b = attach(&data, &two, "居民身份证", &path, &[]);
    assert_eq!((b["hash"].as_str(), b["stored"].as_bool()), (Some(hash.as_str()), Some(false)));
    let stored: Vec<PathBuf> = all_files(&v.join("files"));
    assert_eq!(stored.len(), 1, "{stored:?}");

    // Listed with here = true, and the material counts as received.
    let listed = files(&data, &one);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["material"].as_str(), listed[0]["here"].as_bool()), (Some("居民身份证"), Some(true)));
    assert_eq!(listed[0]["name"], "身份证.pdf");

    // Read back identical.
    let out = work.path().join("back.pdf");
    ok("village-node", &["case", "file", "--data", &data, &one, &hash, "--out", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), scan);

    // Nowhere in the data directory in the clear (files, database, WAL).
    for f in all_files(&v) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER), "{} holds the scan in the clear", f.display());
    }

    // Refused with nothing written: an executable, a file over 20 MB.
    let digest_before = ok("village-node", &["digest", "--data", &data, "--json"]);
    let elf = write(work.path(), "scan.pdf", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0 not a scan");
    let err = fails(
        "village-node",
        &["case", "attach", "--data", &data, &one, "--material", "户口簿", "--file", s(&elf), "--as", "王芳"],
    );
    assert!(err.contains("only PDF, JPEG, PNG and OFD"), "{err}");
    let big = write(work.path(), "big.pdf", &pdf(21 * 1024 * 1024, 2));
    let err = fails(
        "village-node",
        &["case", "attach", "--data", &data, &one, "--material", "户口簿", "--file", s(&big), "--as", "王芳"],
    );
    assert!(err.contains("20 MB"), "{err}");
    assert_eq!(ok("village-node", &["digest", "--data", &data, "--json"]), digest_before, "a refusal wrote an event");
    assert_eq!(all_files(&v.join("files")).len(), 1, "a refusal left a file behind");

    // 补正: a PNG replaces the PDF; the PDF stays in the history. Then the
    // PNG is taken off: an event, and its bytes stay.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(pdf(4000, 3));
    let png_path = write(work.path(), "重拍.png", &png);
    let r = attach(&data, &one, "居民身份证", &png_path, &["--replaces", &hash]);
    let new_hash = r["hash"].as_str().unwrap().to_string();
    let listed = files(&data, &one);
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0]["current"].as_bool(), listed[0]["replaced_by"].as_str()),
        (Some(false), Some(new_hash.as_str()))
    );
    assert_eq!(listed[1]["current"], true);
    ok(
        "village-node",
        &[
            "case",
            "detach",
            "--data",
            &data,
            &one,
            "--material",
            "居民身份证",
            "--hash",
            &new_hash,
            "--note",
            "拍糊了",
            "--as",
            "王芳",
        ],
    );
    let listed = files(&data, &one);
    assert!(listed[1]["removed_by"].is_string() && listed[1]["here"] == true, "{listed:?}");
    let shown = ok_json("village-node", &["case", "show", "--data", &data, &one, "--json"]);
    let kinds: Vec<&str> = shown["history"].as_array().unwrap().iter().filter_map(|h| h["kind"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "attach_file").count(), 2, "{kinds:?}");
    assert!(kinds.contains(&"detach_file"));

    // Stored bytes altered on disk: refused with the reason, nothing written at --out.
    let stored = &all_files(&v.join("files")).into_iter().find(|p| p.ends_with(&hash)).unwrap();
    let mut bytes = std::fs::read(stored).unwrap();
    bytes[5000] ^= 0x40;
    std::fs::write(stored, &bytes).unwrap();
    let out2 = work.path().join("tampered.pdf");
    let err = fails("village-node", &["case", "file", "--data", &data, &two, &hash, "--out", s(&out2)]);
    assert!(err.contains("damaged"), "{err}");
    assert!(!out2.exists(), "a damaged file was written out");
    assert_eq!(
        ok_json("village-node", &["verify", "--data", &data, "--json"])["ok"],
        true,
        "the ledger itself is sound"
    );
}

fn sync(program: &str, data: &str, peer: &str) -> Value {
    ok_json(program, &["sync", "--data", data, "--peer", peer, "--json"])
}

/// A 2 MB scan taken at a village reaches the township that pre-reviews it
/// and the county that decides, identical, sealed at rest everywhere; sent
/// once though two cases attach it; another village holds none of it.
#[test]
fn a_scan_travels_up_the_tiers_in_scope_only() {
    const TOWNSHIP: &str = "511421101";
    const OTHER: &str = "511421102001";
    let county = County::new();
    let v = county.enrol(VILLAGE, "village-node");
    let t = county.enrol(TOWNSHIP, "township-node");
    let o = county.enrol(OTHER, "village-node");
    let hub =
        system_tests::Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let township = system_tests::Server::start("township-node", &["serve", "--data", s(&t), "--listen", "127.0.0.1:0"]);
    let data = s(&v).to_string();
    let work = tempfile::tempdir().unwrap();
    let (one, two) = (take_case(&data, "张三", 1), take_case(&data, "李四", 2));
    let scan = pdf(2 * 1024 * 1024, 9);
    let path = write(work.path(), "户口簿.pdf", &scan);
    let hash = attach(&data, &one, "户口簿", &path, &[])["hash"].as_str().unwrap().to_string();
    attach(&data, &two, "户口簿", &path, &[]);

    let up = sync("village-node", &data, &township.addr);
    assert_eq!(up["files_sent"], 1, "{up}");
    assert_eq!(up["file_bytes_sent"].as_u64(), Some(scan.len() as u64), "sent once for two cases: {up}");
    let relay = sync("township-node", s(&t), &hub.addr);
    assert_eq!(relay["files_sent"], 1, "{relay}");
    // Nothing more to send: a second sync moves no file. With a township
    // the file phase always runs (no receipt tells what it lacks).
    let again = sync("village-node", &data, &township.addr);
    assert_eq!((again["files_sent"].as_u64(), again["files_received"].as_u64()), (Some(0), Some(0)));
    assert_eq!(again["files_left_out"], false, "{again}");

    for (program, dir) in [("township-node", t.clone()), ("county-hub", county.hub())] {
        let listed = ok_json(program, &["case", "files", "--data", s(&dir), &one, "--json"]);
        assert_eq!(listed[0]["here"], true, "{program}: {listed}");
        let out = work.path().join(format!("{program}.pdf"));
        ok(program, &["case", "file", "--data", s(&dir), &one, &hash, "--out", s(&out)]);
        assert_eq!(std::fs::read(&out).unwrap(), scan, "{program} holds the scan identical");
        for f in all_files(&dir) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER), "{} holds the scan in the clear", f.display());
        }
    }
    // The other village syncs with the county: no case, no byte of the scan.
    let other = sync("village-node", s(&o), &hub.addr);
    assert_eq!(other["files_received"], 0);
    assert!(!o.join("files").exists() || all_files(&o.join("files")).is_empty());
}

/// Issue 9: a village syncing straight with the county leaves the file
/// phase out while the county's receipt says nothing would move (every
/// event and file of its lane held there) and the event phase was quiet,
/// and runs it again as soon as new work brings a file, or as soon as the
/// county turns out to have lost what its receipt says (a county restored
/// from a backup takes the village's events again: the files follow in the
/// same session). The server closes such a session at once: back-to-back
/// syncs are never turned away for connections still held.
#[test]
fn a_village_with_nothing_new_for_the_county_leaves_the_file_phase_out() {
    let county = County::new();
    let v = county.enrol(VILLAGE, "village-node");
    let hub_dir = county.hub();
    let backup = tempfile::tempdir().unwrap();
    system_tests::copy_dir(&hub_dir, backup.path());
    let serve =
        || system_tests::Server::start("county-hub", &["serve", "--data", s(&hub_dir), "--listen", "127.0.0.1:0"]);
    let mut hub = serve();
    let data = s(&v).to_string();
    let work = tempfile::tempdir().unwrap();
    let scan = |name: &str, seed| write(work.path(), name, &pdf(64 * 1024, seed));
    let one = take_case(&data, "张三", 1);
    let hash = attach(&data, &one, "户口簿", &scan("户口簿.pdf", 1), &[])["hash"].as_str().unwrap().to_string();
    let first = sync("village-node", &data, &hub.addr);
    assert_eq!((first["files_sent"].as_u64(), first["files_left_out"].as_bool()), (Some(1), Some(false)), "{first}");
    for _ in 0..3 {
        let again = sync("village-node", &data, &hub.addr);
        assert_eq!(again["files_left_out"], true, "the receipt covers everything: {again}");
        assert_eq!((again["sent_events"].as_u64(), again["files_sent"].as_u64()), (Some(0), Some(0)));
    }
    // New work with a file: the receipt no longer covers the lane.
    let two = take_case(&data, "李四", 2);
    attach(&data, &two, "户口簿", &scan("户口簿二.pdf", 2), &[]);
    let next = sync("village-node", &data, &hub.addr);
    assert_eq!((next["files_sent"].as_u64(), next["files_left_out"].as_bool()), (Some(1), Some(false)), "{next}");
    assert_eq!(sync("village-node", &data, &hub.addr)["files_left_out"], true);
    // A receipt altered on the laptop's disk is not taken at its word.
    {
        // One bit of the signature flipped: a constant byte written over it
        // would change nothing about one time in sixteen (an Ed25519
        // signature's last byte is small).
        let db = rusqlite::Connection::open(v.join("node.db")).unwrap();
        let mut signed: Vec<u8> =
            db.query_row("SELECT signed FROM county_receipts WHERE home = ?1", [VILLAGE], |r| r.get(0)).unwrap();
        *signed.last_mut().unwrap() ^= 1;
        let n = db
            .execute("UPDATE county_receipts SET signed = ?1 WHERE home = ?2", rusqlite::params![signed, VILLAGE])
            .unwrap();
        assert_eq!(n, 1);
    }
    let altered = sync("village-node", &data, &hub.addr);
    assert_eq!(altered["files_left_out"], false, "{altered}");
    assert_eq!(sync("village-node", &data, &hub.addr)["files_left_out"], true, "a genuine receipt again");
    // The county restored from a backup taken before all of this.
    drop(hub);
    std::fs::remove_dir_all(&hub_dir).unwrap();
    system_tests::copy_dir(backup.path(), &hub_dir);
    hub = serve();
    let restored = sync("village-node", &data, &hub.addr);
    assert!(restored["sent_events"].as_u64() > Some(0), "{restored}");
    assert_eq!((restored["files_sent"].as_u64(), restored["files_left_out"].as_bool()), (Some(2), Some(false)));
    let listed = ok_json("county-hub", &["case", "files", "--data", s(&hub_dir), &one, "--json"]);
    assert_eq!((listed[0]["hash"].as_str(), listed[0]["here"].as_bool()), (Some(hash.as_str()), Some(true)));
    // The village's desk still reads the county as holding both cases.
    for case in [&one, &two] {
        let shown = ok_json("village-node", &["case", "show", "--data", &data, case, "--json"]);
        assert_eq!(shown["county_received"], true, "{shown}");
    }
}

/// A file transfer over a slow link cut in the middle (the village's sync
/// killed): the next sync resumes at the first group the county lacks, so
/// nothing it holds is sent again.
#[test]
fn a_cut_file_transfer_resumes_at_the_first_group_missing() {
    let county = County::new();
    let v = county.enrol(VILLAGE, "village-node");
    let hub_dir = county.hub();
    let hub = system_tests::Server::start("county-hub", &["serve", "--data", s(&hub_dir), "--listen", "127.0.0.1:0"]);
    let link = || {
        system_tests::Server::start(
            "county-sim",
            &["link", "--listen", "127.0.0.1:0", "--target", &hub.addr, "--rtt-ms", "100", "--kbps", "4000"],
        )
    };
    let cut = link();
    let data = s(&v).to_string();
    let work = tempfile::tempdir().unwrap();
    let case = take_case(&data, "张三", 1);
    let scan = pdf(3 * 1024 * 1024, 5);
    let path = write(work.path(), "申请表.pdf", &scan);
    let hash = attach(&data, &case, "申请表", &path, &[])["hash"].as_str().unwrap().to_string();
    let partial = hub_dir.join("files").join(".partial").join(&hash);
    let held = || std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);

    let mut child = system_tests::cmd("village-node")
        .args(["sync", "--data", &data, "--peer", &cut.addr, "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    // Cut at a quarter: what is in flight on the emulated link (its queue
    // grows with the sender's window) must not complete the file.
    while held() < scan.len() as u64 / 4 && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The link goes too, with what its queue held (on a loaded machine it
    // could pause past any wait and deliver more after it): only what the
    // county already received may still land. Then count the groups it holds.
    drop(cut);
    let mut last = held();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(700));
        if held() == last {
            break;
        }
        last = held();
    }
    let group = 64 * 1024u64;
    let sealed = group + 16;
    let have = (last.saturating_sub(4)) / sealed;
    assert!(have > 0 && have * group < scan.len() as u64, "cut at {have} groups");

    let retry = link();
    let done = ok_json("village-node", &["sync", "--data", &data, "--peer", &retry.addr, "--json"]);
    assert_eq!(done["files_sent"], 1, "{done}");
    assert_eq!(
        done["file_bytes_sent"].as_u64(),
        Some(scan.len() as u64 - have * group),
        "the retry sent exactly what the county lacked: {done}"
    );
    let out = work.path().join("back.pdf");
    ok("county-hub", &["case", "file", "--data", s(&hub_dir), &case, &hash, "--out", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), scan);
}

/// A scan altered on the village's disk is refused when read, with the
/// reason in quarantine, set aside (kept), and fetched again whole from
/// the county at the next sync.
#[test]
fn a_damaged_scan_is_refused_and_fetched_again() {
    let county = County::new();
    let v = county.enrol(VILLAGE, "village-node");
    let hub =
        system_tests::Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let data = s(&v).to_string();
    let work = tempfile::tempdir().unwrap();
    let case = take_case(&data, "张三", 1);
    let scan = pdf(300 * 1024, 4);
    let path = write(work.path(), "身份证.pdf", &scan);
    let hash = attach(&data, &case, "居民身份证", &path, &[])["hash"].as_str().unwrap().to_string();
    let up = ok_json("village-node", &["sync", "--data", &data, "--peer", &hub.addr, "--json"]);
    assert_eq!(up["files_sent"], 1);

    let stored = all_files(&v.join("files")).into_iter().find(|p| p.ends_with(&hash)).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[200_000] ^= 0x01;
    std::fs::write(&stored, &bytes).unwrap();
    let out = work.path().join("out.pdf");
    let err = fails("village-node", &["case", "file", "--data", &data, &case, &hash, "--out", s(&out)]);
    assert!(err.contains("damaged") && err.contains("fetched again"), "{err}");
    assert!(!out.exists());
    let quarantine = ok("village-node", &["quarantine", "list", "--data", &data]);
    assert!(quarantine.contains(&hash) && quarantine.contains("damaged"), "{quarantine}");
    assert_eq!(files(&data, &case)[0]["here"], false);

    let back = ok_json("village-node", &["sync", "--data", &data, "--peer", &hub.addr, "--json"]);
    assert_eq!(back["files_received"], 1, "{back}");
    ok("village-node", &["case", "file", "--data", &data, &case, &hash, "--out", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), scan);
    assert!(v.join("files").join(".damaged").read_dir().unwrap().count() == 1, "the damaged copy is kept aside");
}

/// 县级已接收: the county's signed receipt travels down through the
/// township; the village sees its case and file received by the county.
/// A township that drops a village's records is noticed: the county's next
/// receipt lacks what the township acknowledged, and the village is told.
#[test]
fn county_receipts_reach_the_village_and_a_withholding_township_is_noticed() {
    const TOWNSHIP: &str = "511421101";
    let county = County::new();
    let v = county.enrol(VILLAGE, "village-node");
    let t = county.enrol(TOWNSHIP, "township-node");
    let hub_dir = county.hub();
    // No grace for the township (a test).
    let data = s(&v).to_string();
    ok("village-node", &["config", "--data", &data, "--receipt-grace-minutes", "0"]);
    let hub = system_tests::Server::start("county-hub", &["serve", "--data", s(&hub_dir), "--listen", "127.0.0.1:0"]);
    let township = system_tests::Server::start("township-node", &["serve", "--data", s(&t), "--listen", "127.0.0.1:0"]);
    let work = tempfile::tempdir().unwrap();
    // Up to the county; its receipt comes back in the same session.
    let relay = || ok_json("township-node", &["sync", "--data", s(&t), "--peer", &hub.addr, "--json"]);

    let first = take_case(&data, "张三", 1);
    let path = write(work.path(), "身份证.pdf", &pdf(100 * 1024, 7));
    attach(&data, &first, "居民身份证", &path, &[]);
    let show = |case: &str| ok_json("village-node", &["case", "show", "--data", &data, case, "--json"]);
    assert_eq!(show(&first)["county_received"], false);
    ok_json("village-node", &["sync", "--data", &data, "--peer", &township.addr, "--json"]);
    relay();
    let down = ok_json("village-node", &["sync", "--data", &data, "--peer", &township.addr, "--json"]);
    assert!(down["unconfirmed_by_county"].is_null(), "{down}");
    assert_eq!(show(&first)["county_received"], true, "the county's receipt came down through the township");
    assert_eq!(files(&data, &first)[0]["county_received"], true);

    // The township drops the village's next records before relaying them.
    let second = take_case(&data, "李四", 2);
    ok_json("village-node", &["sync", "--data", &data, "--peer", &township.addr, "--json"]);
    let db = rusqlite::Connection::open(t.join("node.db")).unwrap();
    let dropped =
        db.execute("DELETE FROM event_rows WHERE case_no = (SELECT id FROM names WHERE name = ?1)", [&second]).unwrap();
    assert!(dropped > 0);
    drop(db);
    relay();
    let out = system_tests::run("village-node", &["sync", "--data", &data, "--peer", &township.addr, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["unconfirmed_by_county"]["events"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["unconfirmed_by_county"]["peer"], TOWNSHIP);
    assert!(stderr.contains("withholding"), "{stderr}");
    assert_eq!(show(&second)["county_received"], false);
    assert_eq!(show(&first)["county_received"], true);
}

/// A village's sync through its township that brings nothing new writes
/// nothing to its store: the county receipt the township relays says what
/// the village holds already, only at a later time, and no acknowledgement
/// waits on it (each such sync cost the laptop a commit: five fsyncs and a
/// checkpoint). Nor does it touch the store's state file (a session marked
/// open and recorded clean again: two replacing renames, which ext4 writes
/// out at once); nor does a sync straight with the county that moves
/// nothing. New work brings a receipt that says more, and it is kept.
#[test]
fn a_sync_that_brings_nothing_new_writes_nothing_at_the_village() {
    const TOWNSHIP: &str = "511421101";
    let county = County::new();
    let v = county.enrol(VILLAGE, "village-node");
    let t = county.enrol(TOWNSHIP, "township-node");
    let hub_dir = county.hub();
    let hub = system_tests::Server::start("county-hub", &["serve", "--data", s(&hub_dir), "--listen", "127.0.0.1:0"]);
    let township = system_tests::Server::start("township-node", &["serve", "--data", s(&t), "--listen", "127.0.0.1:0"]);
    let data = s(&v).to_string();
    let sync = || ok_json("village-node", &["sync", "--data", &data, "--peer", &township.addr, "--json"]);
    let relay = || ok_json("township-node", &["sync", "--data", s(&t), "--peer", &hub.addr, "--json"]);
    let receipt_at = || -> i64 {
        let db = rusqlite::Connection::open_with_flags(v.join("node.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
        db.query_row("SELECT at_ms FROM county_receipts WHERE home = ?1", [VILLAGE], |r| r.get(0)).unwrap()
    };
    let written = || std::fs::metadata(v.join("node.db")).unwrap().modified().unwrap();
    let state = || {
        let path = v.join("node.state");
        (std::fs::metadata(&path).unwrap().modified().unwrap(), std::fs::read_to_string(&path).unwrap())
    };
    take_case(&data, "张三", 1);
    sync();
    relay();
    sync();
    let (at, stamp, session) = (receipt_at(), written(), state());
    assert!(session.1.starts_with("clean "), "{session:?}");
    for _ in 0..2 {
        std::thread::sleep(std::time::Duration::from_millis(30));
        // The township brings a fresh receipt: the same, signed later.
        relay();
        let out = sync();
        assert_eq!(out["sent_events"], 0, "{out}");
        assert_eq!(receipt_at(), at, "the relayed receipt that says nothing new is not stored");
        assert_eq!(written(), stamp, "nothing was written to the store");
        assert_eq!(state(), session, "the state file is left as it was");
    }
    // Straight with the county: the first sync takes its clock for
    // reference (news), the second moves nothing.
    let direct = || ok_json("village-node", &["sync", "--data", &data, "--peer", &hub.addr, "--json"]);
    direct();
    let session = state();
    let out = direct();
    assert_eq!((out["sent_events"].as_u64(), out["received_events"].as_u64()), (Some(0), Some(0)), "{out}");
    assert_eq!(state(), session, "a sync with the county that moved nothing: {out}");
    take_case(&data, "李四", 2);
    sync();
    relay();
    sync();
    assert!(receipt_at() > at, "a receipt covering the new case is kept");
}

/// The county keeps its files in an S3-compatible object store (a real
/// SeaweedFS): a scan from a village lands there sealed, not on the hub's
/// disk, and after a restart of the hub it is still served, to the hub's
/// own `case file` and to a township that syncs.
#[test]
fn the_county_keeps_its_files_in_an_object_store() {
    const TOWNSHIP: &str = "511421101";
    let s3 = system_tests::ObjectStore::start("county-files");
    let county = County::new();
    let v = county.enrol(VILLAGE, "village-node");
    let t = county.enrol(TOWNSHIP, "township-node");
    let hub_dir = county.hub();
    let creds = [("AWS_ACCESS_KEY_ID", "county"), ("AWS_SECRET_ACCESS_KEY", "county-secret")];
    let with_creds = |program: &str, args: &[&str]| {
        let out = system_tests::cmd(program).envs(creds).args(args).output().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // A wrong endpoint is refused before anything is saved.
    let bad = system_tests::cmd("county-hub")
        .envs(creds)
        .args(["config", "--data", s(&hub_dir), "--blobs", "s3://county-files", "--s3-endpoint", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let shown = with_creds(
        "county-hub",
        &["config", "--data", s(&hub_dir), "--blobs", "s3://county-files", "--s3-endpoint", &s3.endpoint],
    );
    assert!(shown.contains("s3://county-files"), "{shown}");

    let data = s(&v).to_string();
    let case = take_case(&data, "张三", 1);
    let scan = pdf(1024 * 1024 + 77, 11);
    let work = tempfile::tempdir().unwrap();
    let path = write(work.path(), "户口簿.pdf", &scan);
    let hash = attach(&data, &case, "户口簿", &path, &[])["hash"].as_str().unwrap().to_string();

    let start_hub = || {
        system_tests::Server::start_with_env(
            "county-hub",
            &["serve", "--data", s(&hub_dir), "--listen", "127.0.0.1:0"],
            &creds,
        )
    };
    let hub = start_hub();
    let up = ok_json("village-node", &["sync", "--data", &data, "--peer", &hub.addr, "--json"]);
    assert_eq!(up["files_sent"], 1, "{up}");
    // In the object store, not on the hub's disk.
    let on_disk =
        hub_dir.join("files").exists() && all_files(&hub_dir.join("files")).iter().any(|p| p.ends_with(&hash));
    assert!(!on_disk, "the hub kept the file on its own disk");
    let key = format!("/county-files/files/{}/{hash}", &hash[..2]);
    assert_eq!(s3.http("HEAD", &key), Some(200), "the file is in the bucket");

    // The hub restarts; a township syncs and gets the file from the store.
    drop(hub);
    let hub = start_hub();
    let down = ok_json("township-node", &["sync", "--data", s(&t), "--peer", &hub.addr, "--json"]);
    assert_eq!(down["files_received"], 1, "{down}");
    let out = work.path().join("township.pdf");
    ok("township-node", &["case", "file", "--data", s(&t), &case, &hash, "--out", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), scan);
    let hub_out = work.path().join("hub.pdf");
    with_creds("county-hub", &["case", "file", "--data", s(&hub_dir), &case, &hash, "--out", s(&hub_out)]);
    assert_eq!(std::fs::read(&hub_out).unwrap(), scan);
}

/// A laptop's disk stays bounded: the bytes of files whose cases are
/// finished and that the county's receipt covers are pruned, never those
/// of open cases or of files the county lacks; a pruned file is not asked
/// for again until fetched back, then comes with the next sync.
#[test]
fn files_the_county_holds_of_finished_cases_are_pruned_and_fetched_back() {
    let county = County::new();
    let v = county.enrol(VILLAGE, "village-node");
    let hub =
        system_tests::Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let data = s(&v).to_string();
    let work = tempfile::tempdir().unwrap();
    let (done, open, unsent) = (take_case(&data, "张三", 1), take_case(&data, "李四", 2), take_case(&data, "王五", 3));
    let scan = pdf(200 * 1024, 21);
    let hash = attach(&data, &done, "居民身份证", &write(work.path(), "a.pdf", &scan), &[])["hash"]
        .as_str()
        .unwrap()
        .to_string();
    attach(&data, &open, "居民身份证", &write(work.path(), "b.pdf", &pdf(100 * 1024, 22)), &[]);
    ok("village-node", &["case", "withdraw", "--data", &data, &done, "--as", "王芳"]);
    ok_json("village-node", &["sync", "--data", &data, "--peer", &hub.addr, "--json"]);
    // Attached after the sync: the county lacks it.
    attach(&data, &unsent, "居民身份证", &write(work.path(), "c.pdf", &pdf(100 * 1024, 23)), &[]);
    ok("village-node", &["case", "withdraw", "--data", &data, &unsent, "--as", "王芳"]);

    let pruned = ok_json("village-node", &["files", "prune", "--data", &data, "--days", "0", "--json"]);
    let pruned: Vec<&str> = pruned.as_array().unwrap().iter().map(|p| p["hash"].as_str().unwrap()).collect();
    assert_eq!(pruned, vec![hash.as_str()], "only the finished case's file the county holds");
    assert!(!all_files(&v.join("files")).iter().any(|p| p.ends_with(&hash)), "its bytes are gone");
    assert_eq!(files(&data, &done)[0]["here"], false);
    assert_eq!(files(&data, &open)[0]["here"], true);
    assert_eq!(files(&data, &unsent)[0]["here"], true);

    let again = ok_json("village-node", &["sync", "--data", &data, "--peer", &hub.addr, "--json"]);
    assert_eq!(again["files_received"], 0, "a pruned file is not asked for again: {again}");
    ok("village-node", &["files", "fetch", "--data", &data, &hash]);
    let back = ok_json("village-node", &["sync", "--data", &data, "--peer", &hub.addr, "--json"]);
    assert_eq!(back["files_received"], 1, "{back}");
    let out = work.path().join("back.pdf");
    ok("village-node", &["case", "file", "--data", &data, &done, &hash, "--out", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), scan);
}

/// A material satisfied by an electronic licence (电子证照) this county
/// issued, by reference, with no file: checked offline before it is cited
/// (a forged one is refused, nothing written), and checked again by every
/// node that shows the case.
#[test]
fn a_material_is_satisfied_by_a_licence_of_this_county() {
    const TOWNSHIP: &str = "511421101";
    let county = County::new();
    let t = county.enrol(TOWNSHIP, "township-node");
    let v = county.enrol(VILLAGE, "village-node");
    let hub =
        system_tests::Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let (t, data) = (s(&t).to_string(), s(&v).to_string());
    let work = tempfile::tempdir().unwrap();
    let licence = work.path().join("licence.json");
    // The township issues a result and its licence.
    let issued = system_tests::township_result(&t, "周杰", 7, "approve");
    ok("township-node", &["case", "licence", "--data", &t, &issued, "--out", s(&licence)]);
    ok("township-node", &["sync", "--data", &t, "--peer", &hub.addr]);
    ok("village-node", &["sync", "--data", &data, "--peer", &hub.addr]);

    let case = take_case(&data, "周杰", 7);
    // Forged: the result changed. Refused, nothing written.
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&licence).unwrap()).unwrap();
    doc["result"] = serde_json::json!("准予（伪造）");
    let forged = write(work.path(), "forged.json", &serde_json::to_vec(&doc).unwrap());
    let before = ok("village-node", &["digest", "--data", &data, "--json"]);
    let err = fails(
        "village-node",
        &["case", "cite", "--data", &data, &case, "--material", "户口簿", "--licence", s(&forged), "--as", "王芳"],
    );
    assert!(err.contains("does not verify") && err.contains("signature"), "{err}");
    assert_eq!(ok("village-node", &["digest", "--data", &data, "--json"]), before);

    ok(
        "village-node",
        &["case", "cite", "--data", &data, &case, "--material", "户口簿", "--licence", s(&licence), "--as", "王芳"],
    );
    let shown = ok_json("village-node", &["case", "show", "--data", &data, &case, "--json"]);
    assert!(shown["materials"].as_array().unwrap().iter().any(|m| m == "户口簿"), "{shown}");
    assert_eq!(shown["licences"][0]["case"], issued.as_str());
    assert_eq!(shown["licences"][0]["valid"], true, "{shown}");
    assert!(files(&data, &case).is_empty(), "no file was needed");
    // The county checks it again when it shows the case.
    ok("village-node", &["sync", "--data", &data, "--peer", &hub.addr]);
    let at_county = ok_json("county-hub", &["case", "show", "--data", s(&county.hub()), &case, "--json"]);
    assert_eq!(at_county["licences"][0]["valid"], true, "{at_county}");
}
