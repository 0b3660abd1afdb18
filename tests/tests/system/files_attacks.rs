//! Attacks on material files between nodes (issue 14), from an outside
//! review: real binaries, real data directories, real QUIC. Each test
//! fails if its attack succeeds.

use serde_json::Value;
use std::path::Path;
use system_tests::samples::{files_under as all_files, pdf_of_size as pdf, write_file as write};
use system_tests::{ok_json, s, take_case, County, Server};

const TOWNSHIP: &str = "511421101";
const VILLAGE: &str = "511421101001";
/// A village of the same township.
const NEIGHBOUR: &str = "511421101002";
/// A village of another township.
const OTHER: &str = "511421102001";

fn attach(data: &Path, case: &str, material: &str, file: &Path) -> String {
    let args = ["case", "attach", "--data", s(data), case, "--material", material, "--file", s(file), "--as", "王芳"];
    ok_json("village-node", &[&args[..], &["--json"]].concat())["hash"].as_str().unwrap().to_string()
}

fn files(program: &str, data: &Path, case: &str) -> Vec<Value> {
    ok_json(program, &["case", "files", "--data", s(data), case, "--json"]).as_array().unwrap().clone()
}

fn sync(program: &str, data: &Path, peer: &str) -> Value {
    ok_json(program, &["sync", "--data", s(data), "--peer", peer, "--json"])
}

fn db(data: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(data.join("node.db")).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c
}

fn serve(program: &str, data: &Path) -> Server {
    Server::start(program, &["serve", "--data", s(data), "--listen", "127.0.0.1:0"])
}

/// Scope of files: "asking by hash gets nothing else". A thief holding
/// another village's laptop and passphrase (or any hostile enrolled node)
/// who learns the hash and size of a file of a case outside its scope (a
/// desk URL in a browser's history, a log line, a screenshot) signs an
/// AttachFile naming that hash on a case of its own lane. Every receiver
/// takes the event (its checks are of the body's limits and the author's
/// authority over its own case), and the county then finds the file "of a
/// case in the receiver's scope" and sends it.
///
/// Here the thief's event is made by attaching the bytes and then removing
/// them from its data directory (file and `files_held` row), so that it
/// holds the event only: the event on the wire is exactly the one a thief
/// knowing only the hash would sign.
#[test]
fn a_forged_reference_does_not_fetch_another_villages_file() {
    let county = County::new();
    let a = county.enrol(VILLAGE, "village-node");
    let thief = county.enrol(OTHER, "village-node");
    let hub = serve("county-hub", &county.hub());
    let work = tempfile::tempdir().unwrap();

    let case = take_case(s(&a), "张三", 1);
    let scan = pdf(300 * 1024, 21);
    let path = write(work.path(), "户口簿.pdf", &scan);
    let hash = attach(&a, &case, "户口簿", &path);
    assert_eq!(sync("village-node", &a, &hub.addr)["files_sent"], 1);

    // The thief's own case names the hash; it holds no byte of the file.
    let own = take_case(s(&thief), "李四", 2);
    assert_eq!(attach(&thief, &own, "户口簿", &path), hash);
    let stored = thief.join("files").join(&hash[..2]).join(&hash);
    std::fs::remove_file(&stored).unwrap();
    db(&thief).execute("DELETE FROM files_held", []).unwrap();
    assert_eq!(files("village-node", &thief, &own)[0]["here"], false);

    let got = sync("village-node", &thief, &hub.addr);
    assert!(
        !stored.exists() && got["files_received"] == 0,
        "the county sent village {VILLAGE}'s file to village {OTHER} for a reference it signed itself: {got}"
    );
}

/// One file on cases of two lanes: an e-licence (OFD) or a form downloaded
/// from the national platform is the same bytes wherever it is attached.
/// It is stored once per hash, sealed under the key of the lane of the case
/// that brought it first; reading it through the other lane's case must
/// not find it "damaged", set it aside and drop it from the files held
/// (to be fetched and set aside again at every reading). A hostile village
/// naming another village's hash on its own case triggers the same at the
/// township and the county.
#[test]
fn a_file_on_cases_of_two_villages_reads_back_through_both() {
    let county = County::new();
    let a = county.enrol(VILLAGE, "village-node");
    let b = county.enrol(OTHER, "village-node");
    let hub_dir = county.hub();
    let hub = serve("county-hub", &hub_dir);
    let work = tempfile::tempdir().unwrap();
    let form = pdf(200 * 1024, 33);
    let path = write(work.path(), "申请表.pdf", &form);

    let case_a = take_case(s(&a), "张三", 1);
    let hash = attach(&a, &case_a, "申请表", &path);
    sync("village-node", &a, &hub.addr);
    let case_b = take_case(s(&b), "李四", 2);
    attach(&b, &case_b, "申请表", &path);
    sync("village-node", &b, &hub.addr);

    for case in [&case_a, &case_b, &case_a] {
        let out = work.path().join(format!("{case}.pdf"));
        let read =
            system_tests::run("county-hub", &["case", "file", "--data", s(&hub_dir), case, &hash, "--out", s(&out)]);
        assert!(
            read.status.success(),
            "the county cannot read the file through case {case}: {}",
            String::from_utf8_lossy(&read.stderr)
        );
        assert_eq!(std::fs::read(&out).unwrap(), form);
    }
    assert!(!hub_dir.join("files").join(".damaged").exists(), "a sound file was set aside as damaged");
}

/// A node asks for at most 20,000 files a session, the first by hash. A
/// hostile village signs AttachFile events naming 20,000 files that do not
/// exist, with hashes that sort first (each event passes every receiver's
/// checks: a name, a material, a size under 20 MB). From then on the
/// county (and the village's township) asks every peer for those files
/// only, and no real file of any village reaches it again.
///
/// The 20,000 references are put straight into the county's `file_refs`
/// (the rows those events fold to), to keep the test fast.
#[test]
fn references_to_files_that_never_existed_do_not_starve_real_files() {
    let county = County::new();
    let t = county.enrol(TOWNSHIP, "township-node");
    let a = county.enrol(VILLAGE, "village-node");
    county.enrol(NEIGHBOUR, "village-node");
    let hub_dir = county.hub();
    {
        let mut conn = db(&hub_dir);
        let tx = conn.transaction().unwrap();
        for i in 0..20_000u32 {
            let mut hash = [0u8; 32];
            hash[28..].copy_from_slice(&i.to_be_bytes());
            tx.execute(
                "INSERT INTO file_refs (hash, case_id, home, size) VALUES (?1, ?2, ?3, 1)",
                rusqlite::params![&hash[..], format!("{NEIGHBOUR}-{}", i / 500 + 1), NEIGHBOUR],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let hub = serve("county-hub", &hub_dir);
    let township = serve("township-node", &t);
    let work = tempfile::tempdir().unwrap();

    let case = take_case(s(&a), "张三", 1);
    let scan = pdf(200 * 1024, 44);
    let hash = attach(&a, &case, "居民身份证", &write(work.path(), "身份证.pdf", &scan));
    assert_eq!(sync("village-node", &a, &township.addr)["files_sent"], 1);
    let relay = sync("township-node", &t, &hub.addr);
    let listed = files("county-hub", &hub_dir, &case);
    assert_eq!(
        (relay["files_sent"].as_u64(), listed[0]["here"].as_bool()),
        (Some(1), Some(true)),
        "the county never asked the township for village {VILLAGE}'s file {hash}: {relay}"
    );
}

/// A file on its way is sealed group by group under the key of the lane of
/// "the first case naming it" as the receiver sees it at each group. When a
/// case of another lane naming the same file arrives between a cut
/// transfer and its resumption (here: the same form attached at a second
/// village, whose case id sorts first), the groups kept before the cut and
/// those kept after it are sealed under two keys, and the file, once
/// complete, is damaged as soon as it is read.
#[test]
fn a_transfer_resumed_after_another_lanes_case_names_the_file_reads_back() {
    let county = County::new();
    // The village whose case id sorts first attaches second.
    let first = county.enrol(NEIGHBOUR, "village-node");
    let second = county.enrol(VILLAGE, "village-node");
    let hub_dir = county.hub();
    let hub = serve("county-hub", &hub_dir);
    let link = Server::start(
        "county-sim",
        &["link", "--listen", "127.0.0.1:0", "--target", &hub.addr, "--rtt-ms", "100", "--kbps", "4000"],
    );
    let work = tempfile::tempdir().unwrap();
    let form = pdf(3 * 1024 * 1024, 55);
    let path = write(work.path(), "申请表.pdf", &form);
    let case_first = take_case(s(&first), "张三", 1);
    let hash = attach(&first, &case_first, "申请表", &path);
    let partial = hub_dir.join("files").join(".partial").join(&hash);
    let held = || std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);

    // The first village's sync is cut half way through the file.
    let mut child = system_tests::cmd("village-node")
        .args(["sync", "--data", s(&first), "--peer", &link.addr, "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while held() < form.len() as u64 / 2 && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut last = held();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(700));
        if held() == last {
            break;
        }
        last = held();
    }
    assert!(last > 4 && last < form.len() as u64, "cut at {last} bytes");

    // The same form at the other village, whose case sorts first: it
    // sends the rest of the file.
    let case_second = take_case(s(&second), "李四", 2);
    attach(&second, &case_second, "申请表", &path);
    assert!(case_second < case_first);
    let rest = sync("village-node", &second, &hub.addr);
    assert_eq!(rest["files_sent"], 1, "{rest}");

    for case in [&case_first, &case_second] {
        let out = work.path().join(format!("{case}.pdf"));
        let read =
            system_tests::run("county-hub", &["case", "file", "--data", s(&hub_dir), case, &hash, "--out", s(&out)]);
        assert!(
            read.status.success(),
            "the county cannot read the file through case {case}: {}",
            String::from_utf8_lossy(&read.stderr)
        );
        assert_eq!(std::fs::read(&out).unwrap(), form);
    }
}

/// A file's hash fixes its size, but a receiver asks for the largest size
/// any reference names. A hostile village that learns the hash of a file
/// of its township (another village's scan) signs an AttachFile naming it
/// with a size of 20 MB on a case of its own lane: from then on the county
/// asks the township for that file at the wrong size, the township (which
/// holds it whole, at its true size) answers NotHere, and the county never
/// holds the file.
///
/// The hostile reference is put straight into the county's `file_refs`
/// (the row its event folds to), before the true file arrives.
#[test]
fn a_reference_with_a_wrong_size_does_not_keep_a_real_file_away() {
    let county = County::new();
    let t = county.enrol(TOWNSHIP, "township-node");
    let a = county.enrol(VILLAGE, "village-node");
    county.enrol(NEIGHBOUR, "village-node");
    let hub_dir = county.hub();
    let work = tempfile::tempdir().unwrap();
    let scan = pdf(200 * 1024, 66);
    let hash = blake3::hash(&scan);
    db(&hub_dir)
        .execute(
            "INSERT INTO file_refs (hash, case_id, home, size) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![&hash.as_bytes()[..], format!("{NEIGHBOUR}-1"), NEIGHBOUR, 20 * 1024 * 1024],
        )
        .unwrap();
    let hub = serve("county-hub", &hub_dir);
    let township = serve("township-node", &t);

    let case = take_case(s(&a), "张三", 1);
    attach(&a, &case, "居民身份证", &write(work.path(), "身份证.pdf", &scan));
    assert_eq!(sync("village-node", &a, &township.addr)["files_sent"], 1);
    let relay = sync("township-node", &t, &hub.addr);
    assert_eq!(
        files("county-hub", &hub_dir, &case)[0]["here"],
        true,
        "a reference naming the file's hash with a wrong size kept it from the county: {relay}"
    );
}

/// "Personal data exists in the clear only in process memory": an ID
/// number typed into the form is sealed, masked and hashed. Clerks name
/// their scans after the applicant's ID number and phone (a scanner's
/// "save as" field, "身份证-<ID>.jpg"); the original file name travels in
/// the signed event, in the clear, to the township and the county, and
/// lies in every store, where a thief with no passphrase reads it.
#[test]
fn an_id_number_or_phone_in_a_file_name_is_not_kept_in_the_clear() {
    let county = County::new();
    let a = county.enrol(VILLAGE, "village-node");
    let work = tempfile::tempdir().unwrap();
    let id = system_tests::id_number(7);
    let phone = "13912345678";
    let case = take_case(s(&a), "张三", 7);
    let scan = pdf(10 * 1024, 77);
    attach(&a, &case, "居民身份证", &write(work.path(), &format!("身份证-{id}-{phone}.pdf"), &scan));
    let listed = files("village-node", &a, &case);
    let name = listed[0]["name"].as_str().unwrap();
    assert!(name.contains("身份证") && name.ends_with(".pdf"), "{name}");
    for f in all_files(&a) {
        let bytes = std::fs::read(&f).unwrap();
        for clear in [id.as_bytes(), phone.as_bytes()] {
            assert!(
                !bytes.windows(clear.len()).any(|w| w == clear),
                "{} holds {} in the clear (from the file name {name:?})",
                f.display(),
                String::from_utf8_lossy(clear)
            );
        }
    }
}

/// 电子证照 for a material: "a material can also be satisfied by an issued
/// licence ... verified by its signature". The check before citing
/// (`node/src/ledger.rs` `verify_licence`, called by `cite_licence`) and
/// the one shown again by `case show --json` (`licences[].valid`) look at
/// the licence alone: signature, key, issuer, expiry. Nothing ties it to
/// the case that cites it: not its holder (name, ID number) to the case's
/// applicant, not its result or item to the material it stands for. A
/// village clerk (no key, no forgery: the ordinary CLI or desk) cites
/// citizen A's genuine licence (a township result for 周杰) for citizen
/// B's 户口簿, and every node, the county included, shows it valid; the
/// material counts as received for 受理.
#[test]
fn a_licence_of_another_citizen_does_not_satisfy_a_material() {
    let county = County::new();
    let t = county.enrol(TOWNSHIP, "township-node");
    let v = county.enrol(VILLAGE, "village-node");
    let hub = serve("county-hub", &county.hub());
    let (t, data) = (s(&t).to_string(), s(&v).to_string());
    let work = tempfile::tempdir().unwrap();
    let licence = work.path().join("licence.json");
    // The township issues 周杰 (ID number 7) a result and its licence.
    let id = system_tests::id_number(7);
    let issued = system_tests::township_result(&t, "周杰", 7, "approve");
    system_tests::ok("township-node", &["case", "licence", "--data", &t, &issued, "--out", s(&licence)]);
    system_tests::ok("township-node", &["sync", "--data", &t, "--peer", &hub.addr]);
    system_tests::ok("village-node", &["sync", "--data", &data, "--peer", &hub.addr]);

    // Another citizen, 李四 (ID number 9), applies at the village without
    // a 户口簿; the clerk cites 周杰's licence for it.
    let args = ["case", "new", "--data", &data, "--item", "V001", "--applicant", "李四"];
    let other_id = system_tests::id_number(9);
    let case = ok_json(
        "village-node",
        &[
            &args[..],
            &["--id-number", &other_id, "--material", "居民身份证", "--material", "申请表"],
            &["--as", "王芳", "--json"],
        ]
        .concat(),
    )["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    let cited = system_tests::run(
        "village-node",
        &["case", "cite", "--data", &data, &case, "--material", "户口簿", "--licence", s(&licence), "--as", "王芳"],
    );
    let shown = ok_json("village-node", &["case", "show", "--data", &data, &case, "--json"]);
    let satisfied = shown["materials"].as_array().unwrap().iter().any(|m| m == "户口簿");
    let valid = shown["licences"].get(0).map(|l| l["valid"].clone());
    assert!(
        !cited.status.success() && !satisfied,
        "周杰's licence (ID …{}) was cited for 李四's 户口簿 (ID …{}): the material counts as received and the \
         licence is shown valid={valid:?}",
        &id[14..],
        &other_id[14..]
    );
}

/// 县级已接收, files: "a township that withholds or drops a village's
/// events or files is detected ... the desk says so in plain words". A
/// township that relays a village's events but never its files (it keeps
/// taking them from the village and drops them before relaying) is not:
/// the county's receipt covers the events and lists the file as missing,
/// and `Ledger::unconfirmed` (`node/src/receipts.rs`) looks only at events
/// (`upstream_held` records event seqs only), so `sync` neither warns nor
/// sets `unconfirmed_by_county`; only `case files` shows the one file's
/// `county_received: false`, which nobody is told to look at.
#[test]
fn a_township_that_drops_a_villages_files_is_noticed() {
    let county = County::new();
    let v = county.enrol(VILLAGE, "village-node");
    let t = county.enrol(TOWNSHIP, "township-node");
    let data = s(&v).to_string();
    system_tests::ok("village-node", &["config", "--data", &data, "--receipt-grace-minutes", "0"]);
    let hub = serve("county-hub", &county.hub());
    let township = serve("township-node", &t);
    let work = tempfile::tempdir().unwrap();
    let case = take_case(&data, "张三", 1);
    let hash = attach(Path::new(&data), &case, "居民身份证", &write(work.path(), "id.pdf", &pdf(100 * 1024, 31)));
    // The township takes the village's events and file, drops the file,
    // and relays the rest; twice, as a withholding township would.
    let mut last = Value::Null;
    let mut stderr = String::new();
    for _ in 0..2 {
        let out = system_tests::run("village-node", &["sync", "--data", &data, "--peer", &township.addr, "--json"]);
        stderr = String::from_utf8_lossy(&out.stderr).to_string();
        last = serde_json::from_slice(&out.stdout).unwrap();
        let c = db(&t);
        let raw = hex::decode(&hash).unwrap();
        c.execute("DELETE FROM files_held WHERE hash = ?1", [&raw]).unwrap();
        c.execute("DELETE FROM file_lanes WHERE hash = ?1", [&raw]).unwrap();
        drop(c);
        for p in all_files(&t.join("files")) {
            if p.to_string_lossy().contains(&hash) {
                std::fs::remove_file(p).unwrap();
            }
        }
        ok_json("township-node", &["sync", "--data", s(&t), "--peer", &hub.addr, "--json"]);
    }
    let out = system_tests::run("village-node", &["sync", "--data", &data, "--peer", &township.addr, "--json"]);
    stderr.push_str(&String::from_utf8_lossy(&out.stderr));
    last = serde_json::from_slice(&out.stdout).unwrap_or(last);
    let shown = ok_json("village-node", &["case", "show", "--data", &data, &case, "--json"]);
    let file = &files("village-node", Path::new(&data), &case)[0];
    assert_eq!(file["county_received"], false, "the county never got the file: {file}");
    assert!(
        last["unconfirmed_by_county"]["files"] == 1 && stderr.contains("1 of this node's material files"),
        "the township withheld the village's file from the county and the village was not told: \
         case county_received={}, sync summary {last}",
        shown["county_received"]
    );
}

/// 电子证照 of a refused application. The workflow lets a denied case be
/// issued (送达 of the 不予 notice: `proto/src/workflow.rs`, `(Approved |
/// Denied, Step::Issue) => Issued`), and `Ledger::licence`
/// (`node/src/ledger.rs`) signs a licence for any issued case, with the
/// item's result from the catalogue and no word of the decision; every
/// `verify_licence` (the `verify-licence` command, `case show`'s
/// `licences[].valid`, the check before `case cite`) finds it valid. A
/// citizen whose application was denied holds a genuine, offline-verifiable
/// licence for the result, and a village may cite it for a material.
#[test]
fn a_denied_case_yields_no_valid_licence() {
    let county = County::new();
    let t = county.enrol(TOWNSHIP, "township-node");
    let t = s(&t).to_string();
    let work = tempfile::tempdir().unwrap();
    let licence = work.path().join("licence.json");
    let case = system_tests::township_result(&t, "赵六", 11, "deny");
    let signed = system_tests::run("township-node", &["case", "licence", "--data", &t, &case, "--out", s(&licence)]);
    let verified = signed
        .status
        .success()
        .then(|| system_tests::run("township-node", &["verify-licence", "--data", &t, s(&licence), "--json"]));
    let valid = verified.as_ref().is_some_and(|o| o.status.success());
    assert!(
        !valid,
        "a licence of a denied case was signed and verifies: {}",
        verified.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default()
    );
}
