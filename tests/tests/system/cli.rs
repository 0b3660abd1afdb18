//! The offline node's command line (issue 2): taking and working cases,
//! every refusal writing nothing, personal data never stored in the clear,
//! and a store that survives being killed mid-write.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use system_tests::{fails, id_number, ok, ok_json, run, s, County, Server};

const VILLAGE: &str = "511421101001";
const TOWNSHIP: &str = "511421101";

fn digest(program: &str, data: &str) -> Value {
    ok_json(program, &["digest", "--data", data, "--json"])
}

fn new_case(program: &str, data: &str, item: &str, serial: u32) -> String {
    let v = ok_json(
        program,
        &[
            "case",
            "new",
            "--data",
            data,
            "--item",
            item,
            "--applicant",
            "张三",
            "--id-number",
            &id_number(serial),
            "--phone",
            "13800001234",
            "--material",
            "居民身份证",
            "--material",
            "申请表",
            // What V001 and V006 also require, so the deciding node accepts.
            "--material",
            if item == "V006" { "党员组织关系介绍信" } else { "户口簿" },
            "--as",
            "王芳",
            "--json",
        ],
    );
    v["case_id"].as_str().expect("case_id").to_string()
}

fn show(program: &str, data: &str, case: &str) -> Value {
    ok_json(program, &["case", "show", "--data", data, case, "--json"])
}

#[test]
fn county_init_lists_the_whole_topology_and_enrols_nodes() {
    let county = County::new();
    let nodes = ok_json("county-hub", &["nodes", "--data", s(&county.hub()), "--json"]);
    let nodes = nodes.as_array().unwrap();
    let count = |t: &str| nodes.iter().filter(|n| n["tier"] == t).count();
    assert_eq!((count("county"), count("township"), count("village")), (1, 27, 293));
    let v = nodes.iter().find(|n| n["id"] == VILLAGE).unwrap();
    assert_eq!(v["parent"], TOWNSHIP);
    assert!(v["name"].as_str().unwrap().contains("便民服务室"));

    let data = county.enrol(VILLAGE, "village-node");
    let items =
        ok_json("village-node", &["catalogue", "list", "--data", s(&data), "--accepted-at", "village", "--json"]);
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 106, "a village room takes 106 items");
    assert!(items.iter().all(|i| i["accepted_at"].as_array().unwrap().contains(&Value::from("village"))));
    assert!(items.iter().any(|i| i["name"] == "城乡居民基本医疗保险参保登记"));
    let hub_items = ok_json("county-hub", &["catalogue", "list", "--data", s(&county.hub()), "--json"]);
    let at = |t: &str| {
        hub_items
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["accepted_at"].as_array().unwrap().contains(&Value::from(t)))
            .count()
    };
    assert_eq!((at("village"), at("township"), at("county")), (106, 216, 1371));

    // A bundle for a village cannot initialise a township node, and a data
    // directory is initialised once.
    let bundle = county.root.path().join(format!("{VILLAGE}.bundle.json"));
    let err = fails("township-node", &["init", "--data", s(&county.root.path().join("t")), "--enrollment", s(&bundle)]);
    assert!(err.contains("village-node"), "{err}");
    let err = fails("village-node", &["init", "--data", s(&data), "--enrollment", s(&bundle)]);
    assert!(err.contains("already holds a node"), "{err}");

    // enroll --all writes one bundle per township and village not yet
    // enrolled (the one above holds a live key: enrolling it again would
    // leave two laptops able to sign as it).
    let out = county.root.path().join("bundles");
    ok("county-hub", &["enroll", "--data", s(&county.hub()), "--all", "--out-dir", s(&out)]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 319);
    let err =
        fails("county-hub", &["enroll", "--data", s(&county.hub()), "--node", "511421101001", "--out", s(&bundle)]);
    assert!(err.contains("revoke it first"), "{err}");
}

#[test]
fn a_village_decides_a_village_item_through_the_whole_lifecycle() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    // V006 党员组织关系转接 is decided by the village itself (村直审).
    let case = new_case("village-node", d, "V006", 1);
    for (cmd, extra) in [
        ("prereview", Some("--pass")),
        ("accept", None),
        ("suspend", None),
        ("resume", None),
        ("approve", None),
        ("issue", None),
        ("close", None),
    ] {
        let mut args = vec!["case", cmd, "--data", d, &case, "--as", "王芳"];
        args.extend(extra);
        ok("village-node", &args);
    }
    ok("village-node", &["case", "rate", "--data", d, &case, "--level", "1", "--note", "很快", "--as", "王芳"]);
    let st = show("village-node", d, &case);
    assert_eq!(st["state"], "closed");
    assert_eq!(st["ratings"][0]["level"], 1);
    let kinds: Vec<&str> = st["history"].as_array().unwrap().iter().map(|h| h["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["create", "prereview_pass", "accept", "suspend", "resume", "approve", "issue", "close", "rate"]);
    assert!(st["history"].as_array().unwrap().iter().all(|h| h["actor"] == "王芳"));
    assert_eq!(st["flagged"], false);

    let list = ok_json("village-node", &["case", "list", "--data", d, "--state", "closed", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["home"], VILLAGE);
    let list = ok_json("village-node", &["case", "list", "--data", d, "--state", "received", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 0);
    let v = ok_json("village-node", &["verify", "--data", d, "--json"]);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn a_village_forwards_a_township_item_and_edits_are_recorded() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    let case = new_case("village-node", d, "V001", 2);
    ok("village-node", &["case", "prereview", "--data", d, &case, "--pass", "--as", "王芳"]);
    ok("village-node", &["case", "forward", "--data", d, &case, "--as", "王芳"]);
    ok(
        "village-node",
        &["case", "edit", "--data", d, &case, "--field", "address", "--value", "文林镇一组", "--as", "王芳"],
    );
    ok("village-node", &["case", "material", "--data", d, &case, "--add", "户口簿", "--as", "王芳"]);
    let st = show("village-node", d, &case);
    assert_eq!(st["state"], "forwarded");
    assert_eq!(st["handler"], TOWNSHIP, "a township item goes to the village's township");
    assert_eq!(st["materials"], serde_json::json!(["居民身份证", "户口簿", "申请表"]));
    ok("village-node", &["case", "material", "--data", d, &case, "--remove", "居民身份证", "--as", "王芳"]);
    let st = show("village-node", d, &case);
    assert_eq!(st["materials"], serde_json::json!(["户口簿", "申请表"]), "a removed material leaves the list");
    // Personal data is shown masked.
    let id = id_number(2);
    assert_eq!(st["fields"]["id_number"][0], format!("{}********{}", &id[..6], &id[14..]));
    assert_eq!(st["fields"]["phone"][0], "138****1234");
    assert_eq!(st["fields"]["address"][0], "文林镇**");
    // Findable by the ID number, through its keyed hash.
    let found = ok_json("village-node", &["case", "find", "--data", d, "--id-number", &id, "--json"]);
    assert_eq!(found, serde_json::json!([case]));
}

/// Every refusal exits non-zero, says what to do, and writes nothing.
#[test]
fn every_refusal_writes_nothing() {
    let county = County::new();
    let village = county.enrol(VILLAGE, "village-node");
    let township = county.enrol(TOWNSHIP, "township-node");
    let (v, t, hub) = (s(&village), s(&township), county.hub());
    let hub = s(&hub);
    let case = new_case("village-node", v, "V001", 3);
    let withdrawn = new_case("village-node", v, "V006", 4);
    ok("village-node", &["case", "withdraw", "--data", v, &withdrawn, "--as", "王芳"]);

    let before = (digest("village-node", v), digest("township-node", t), digest("county-hub", hub));
    let good_id = id_number(5);
    // Input beyond the limits (proto::limits) and of odd characters.
    let name_65 = "张".repeat(65);
    let name_131071 = "x".repeat(131_071);
    let field_33 = "f".repeat(33);
    let field_100000 = "f".repeat(100_000);
    let value_1001 = "值".repeat(1001);
    let note_2001 = "注".repeat(2001);
    let material_101 = "材".repeat(101);
    let materials_51: Vec<String> = (0..51).map(|i| format!("材料{i}")).collect();
    let new_case_args = |applicant: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["case", "new", "--data", v, "--item", "V001", "--id-number", &good_id]
            .into_iter()
            .map(String::from)
            .collect();
        a.extend(["--applicant".to_string(), applicant.to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        if !extra.contains(&"--as") {
            a.extend(["--as".to_string(), "a".to_string()]);
        }
        a
    };
    let mut many_materials: Vec<&str> = Vec::new();
    for m in &materials_51 {
        many_materials.extend(["--material", m]);
    }
    let owned: Vec<(Vec<String>, &str)> = vec![
        (new_case_args(&name_65, &[]), "at most 64"),
        (new_case_args(&name_131071, &[]), "at most 64"),
        (new_case_args("张\u{1b}[31m三", &[]), "control"),
        (new_case_args("张三\u{202e}", &[]), "control"),
        (new_case_args("张三", &many_materials), "at most 50 materials"),
        (new_case_args("张三", &["--material", &material_101]), "at most 100"),
        (new_case_args("张三", &["--material", "居民\n身份证"]), "control"),
        (new_case_args("张三", &["--phone", "1380000123412345678901"]), "at most 20"),
        (new_case_args("张三", &["--as", &name_65]), "at most 64"),
        (new_case_args("张三", &["--as", "王\u{1b}]0;x\u{7}芳"]), "control"),
    ];
    let mut cases: Vec<(&str, Vec<&str>, &str)> =
        owned.iter().map(|(a, hint)| ("village-node", a.iter().map(String::as_str).collect(), *hint)).collect();
    cases.extend(vec![
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", &field_33, "--value", "y", "--as", "a"],
            "at most 32",
        ),
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", &field_100000, "--value", "y", "--as", "a"],
            "at most 32",
        ),
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", "state", "--value", "closed", "--as", "a"],
            "reserved",
        ),
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", "home", "--value", "x", "--as", "a"],
            "reserved",
        ),
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", "handler", "--value", "x", "--as", "a"],
            "reserved",
        ),
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", "note", "--value", &value_1001, "--as", "a"],
            "at most 1000",
        ),
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", "address", "--value", &value_1001, "--as", "a"],
            "at most 1000",
        ),
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", "note", "--value", "\u{1b}[2J", "--as", "a"],
            "control",
        ),
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", "address", "--value", "一组\u{1b}[8m", "--as", "a"],
            "control",
        ),
        (
            "village-node",
            vec!["case", "material", "--data", v, &case, "--add", &material_101, "--as", "a"],
            "at most 100",
        ),
        ("village-node", vec!["case", "material", "--data", v, &case, "--add", "户口\u{7}簿", "--as", "a"], "control"),
        (
            "village-node",
            vec!["case", "prereview", "--data", v, &case, "--pass", "--note", &note_2001, "--as", "a"],
            "at most 2000",
        ),
        (
            "village-node",
            vec!["case", "prereview", "--data", v, &case, "--pass", "--note", "好\u{1b}[1A", "--as", "a"],
            "control",
        ),
        (
            "village-node",
            vec!["case", "rate", "--data", v, &case, "--level", "1", "--note", &note_2001, "--as", "a"],
            "at most 2000",
        ),
        ("county-sim", vec!["generate", "--data", v, "--count", "10001", "--as", "a"], "at most 10000"),
        (
            "county-hub",
            vec!["revoke", "--data", hub, "--node", VILLAGE, "--reason", &note_2001, "--as", "a"],
            "at most 2000",
        ),
        // an ID number with a multi-byte character: refused, not a panic
        (
            "village-node",
            vec![
                "case",
                "new",
                "--data",
                v,
                "--item",
                "V001",
                "--applicant",
                "李四",
                "--id-number",
                "123456789012345中67",
                "--as",
                "a",
            ],
            "only digits",
        ),
        ("village-node", vec!["case", "find", "--data", v, "--id-number", "123456789012345中67"], "only digits"),
    ]);
    cases.extend(vec![
        // unknown item
        (
            "village-node",
            vec![
                "case",
                "new",
                "--data",
                v,
                "--item",
                "X999",
                "--applicant",
                "李四",
                "--id-number",
                &good_id,
                "--as",
                "a",
            ],
            "catalogue list",
        ),
        // invalid ID numbers
        (
            "village-node",
            vec![
                "case",
                "new",
                "--data",
                v,
                "--item",
                "V001",
                "--applicant",
                "李四",
                "--id-number",
                "110105194912310021",
                "--as",
                "a",
            ],
            "check digit",
        ),
        (
            "village-node",
            vec![
                "case",
                "new",
                "--data",
                v,
                "--item",
                "V001",
                "--applicant",
                "李四",
                "--id-number",
                "12345",
                "--as",
                "a",
            ],
            "18 characters",
        ),
        (
            "village-node",
            vec![
                "case",
                "new",
                "--data",
                v,
                "--item",
                "V001",
                "--applicant",
                "李四",
                "--id-number",
                "11010519491331002X",
                "--as",
                "a",
            ],
            "birth date",
        ),
        // item not accepted at this tier: 村直审 items only at villages; township items not at the county
        (
            "township-node",
            vec![
                "case",
                "new",
                "--data",
                t,
                "--item",
                "V006",
                "--applicant",
                "李四",
                "--id-number",
                &good_id,
                "--as",
                "a",
            ],
            "not accepted at township",
        ),
        (
            "county-hub",
            vec![
                "case",
                "new",
                "--data",
                hub,
                "--item",
                "T001",
                "--applicant",
                "李四",
                "--id-number",
                &good_id,
                "--as",
                "a",
            ],
            "not accepted at county",
        ),
        // transition not allowed in this state
        ("village-node", vec!["case", "close", "--data", v, &case, "--as", "a"], "allowed: "),
        ("village-node", vec!["case", "forward", "--data", v, &case, "--as", "a"], "received"),
        ("village-node", vec!["case", "resume", "--data", v, &withdrawn, "--as", "a"], "finished"),
        // tier not allowed to author it: a village accepting a township item
        ("village-node", vec!["case", "accept", "--data", v, &case, "--as", "a"], "deciding tier (township)"),
        ("village-node", vec!["case", "approve", "--data", v, &case, "--as", "a"], "deciding tier"),
        // a case another node holds, and a malformed one
        (
            "township-node",
            vec!["case", "edit", "--data", t, &case, "--field", "x", "--value", "y", "--as", "a"],
            "not held",
        ),
        ("village-node", vec!["case", "show", "--data", v, "nope", "--json"], "not held"),
        // bad field name, bad phone, bad rating level, nobody at the desk
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", "Bad Name", "--value", "y", "--as", "a"],
            "lower-case",
        ),
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", "phone", "--value", "call me", "--as", "a"],
            "phone",
        ),
        (
            "village-node",
            vec!["case", "edit", "--data", v, &case, "--field", "id_number", "--value", "123", "--as", "a"],
            "18 characters",
        ),
        ("village-node", vec!["case", "rate", "--data", v, &case, "--level", "6", "--as", "a"], "6"),
        ("village-node", vec!["case", "close", "--data", v, &case], "--as NAME"),
        // data directory that holds no node
        ("village-node", vec!["case", "list", "--data", "/nonexistent/dir", "--json"], "init"),
    ]);
    for (program, args, hint) in &cases {
        let err = fails(program, args);
        let shown = |a: &&str| if a.len() > 80 { format!("<{} bytes>", a.len()) } else { a.to_string() };
        let args: Vec<String> = args.iter().map(shown).collect();
        assert!(err.contains(hint), "{program} {args:?}: message {err:?} should mention {hint:?}");
        assert!(err.starts_with("error:"), "{program} {args:?}: {err}");
        assert!(!err.contains("panicked"), "{program} {args:?}: {err}");
        assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "raw control characters printed: {err:?}");
    }
    // An operator name is a name too.
    fails("village-node", &["config", "--data", v, "--operator", &name_65]);
    assert!(ok("village-node", &["config", "--data", v]).contains("(not set)"));
    let after = (digest("village-node", v), digest("township-node", t), digest("county-hub", hub));
    assert_eq!(before, after, "a refusal wrote something");
    assert_eq!(after.0["events"], 3);
}

#[test]
fn the_configured_operator_is_recorded() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    ok("village-node", &["config", "--data", d, "--operator", "李娜"]);
    let v = ok_json(
        "village-node",
        &["case", "new", "--data", d, "--item", "V001", "--applicant", "赵六", "--id-number", &id_number(6), "--json"],
    );
    let st = show("village-node", d, v["case_id"].as_str().unwrap());
    assert_eq!(st["history"][0]["actor"], "李娜");
}

/// ID numbers and phones never appear in the clear in any file of the data
/// directory (database, WAL, shared memory).
#[test]
fn personal_data_is_never_stored_in_the_clear() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    let id = id_number(7);
    let case = new_case("village-node", d, "V001", 7);
    ok(
        "village-node",
        &["case", "edit", "--data", d, &case, "--field", "phone", "--value", "13912345678", "--as", "a"],
    );
    let masked = format!("{}********{}", &id[..6], &id[14..]);
    let mut masked_seen = false;
    // Folded case states are stored compressed: scan them unpacked too,
    // beside every file's raw bytes.
    let conn = rusqlite::Connection::open(data.join("node.db")).unwrap();
    let mut stmt = conn.prepare("SELECT folded FROM cases").unwrap();
    let scanned: Vec<Vec<u8>> = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|row| proto::codec::encode(&node::at_rest::unpack_case(&row.unwrap()).unwrap()))
        .collect();
    drop(stmt);
    drop(conn);
    let files = std::fs::read_dir(&data).unwrap().map(|entry| std::fs::read(entry.unwrap().path()).unwrap());
    for bytes in files.chain(scanned) {
        masked_seen |= bytes.windows(masked.len()).any(|w| w == masked.as_bytes());
        for secret in [id.as_bytes(), b"13800001234".as_slice(), b"13912345678".as_slice()] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret), "personal data in the clear");
        }
    }
    assert!(masked_seen, "the scan did not see the stored case at all");
}

/// Several processes writing to one data directory at once: all writes
/// land, the chain has no gap or fork.
#[test]
fn concurrent_writers_share_one_store() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data).to_string();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let d = d.clone();
            std::thread::spawn(move || {
                (0..8).map(|i| new_case("village-node", &d, "V001", w * 100 + i)).collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: BTreeSet<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(ids.len(), 32);
    let v = ok_json("village-node", &["verify", "--data", &d, "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    let own = v["chains"].as_array().unwrap().iter().find(|c| c["origin"] == "511421101001").unwrap();
    assert_eq!(own["events"], 32);
}

/// A process killed with SIGKILL in the middle of writing leaves a
/// consistent store that holds every acknowledged case.
#[test]
fn killed_writers_lose_nothing_acknowledged() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data).to_string();
    let mut acknowledged = Vec::new();
    let mut killed = 0;
    for i in 0..60u32 {
        let mut child = system_tests::cmd("village-node")
            .args([
                "case",
                "new",
                "--data",
                &d,
                "--item",
                "V001",
                "--applicant",
                "钱七",
                "--id-number",
                &id_number(i),
                "--as",
                "a",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(u64::from(i % 12) * 2));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            acknowledged.push(v["case_id"].as_str().unwrap().to_string());
        }
    }
    assert!(killed > 0, "no process was killed mid-run; the test did not test anything");
    let v = ok_json("village-node", &["verify", "--data", &d, "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    let list = ok_json("village-node", &["case", "list", "--data", &d, "--json"]);
    let held: BTreeSet<&str> = list.as_array().unwrap().iter().map(|c| c["case_id"].as_str().unwrap()).collect();
    for a in &acknowledged {
        assert!(held.contains(a.as_str()), "acknowledged case {a} was lost");
    }
    // And the node keeps working afterwards.
    new_case("village-node", &d, "V001", 999);
    let out = run("village-node", &["verify", "--data", &d, "--json"]);
    assert!(out.status.success());
}

/// Output to a reader that went away (`| head`) ends the command quietly
/// with 0, whatever it prints, instead of a panic.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    let case = new_case("village-node", d, "V001", 30);
    ok("county-sim", &["generate", "--data", d, "--count", "20", "--as", "王芳"]);
    let hub = county.hub();
    let h = s(&hub);
    ok("county-sim", &["generate", "--data", h, "--count", "5", "--as", "县窗口"]);
    let id = id_number(30);
    let out = county.root.path().join("t.bundle.json").to_string_lossy().into_owned();
    let commands: Vec<(&str, Vec<&str>)> = vec![
        ("village-node", vec!["case", "list", "--data", d]),
        ("village-node", vec!["case", "list", "--data", d, "--json"]),
        ("village-node", vec!["case", "show", "--data", d, &case]),
        ("village-node", vec!["case", "find", "--data", d, "--id-number", &id]),
        ("village-node", vec!["digest", "--data", d]),
        ("village-node", vec!["verify", "--data", d]),
        ("village-node", vec!["catalogue", "list", "--data", d]),
        ("village-node", vec!["quarantine", "list", "--data", d]),
        ("village-node", vec!["config", "--data", d]),
        ("county-hub", vec!["catalogue", "list", "--data", h, "--json"]),
        ("county-hub", vec!["nodes", "--data", h]),
        ("county-hub", vec!["ledger", "--data", h]),
        ("county-hub", vec!["enroll", "--data", h, "--node", TOWNSHIP, "--out", &out]),
        // A write whose confirmation cannot be printed is still done.
        ("village-node", vec!["case", "material", "--data", d, &case, "--add", "户口簿", "--as", "王芳"]),
    ];
    for (program, args) in &commands {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = system_tests::cmd(program).args(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{program} {args:?} into a closed pipe: {} {err}", out.status);
        assert!(
            !err.contains("panicked") && !err.contains("error") && !err.contains("pipe"),
            "{program} {args:?}: {err}"
        );
    }
    assert_eq!(show("village-node", d, &case)["materials"], serde_json::json!(["居民身份证", "户口簿", "申请表"]));
}

/// Appends an event to the node's own chain in `data` as a forged client
/// holding the node's key would: none of the local checks, but a valid
/// chain and seal, so only the receivers' checks stand in its way.
fn forge(data: &Path, case: &str, actor: &str, body: proto::Body) {
    let conn = rusqlite::Connection::open(data.join("node.db")).unwrap();
    let identity: String = conn.query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| r.get(0)).unwrap();
    let identity: Value = serde_json::from_str(&identity).unwrap();
    let me = proto::NodeId::new(identity["node"]["id"].as_str().unwrap());
    // The node's keys are sealed in its store; a forger holding the bundle
    // (kept beside the data directory in these tests) has the key.
    let bundle = data.parent().unwrap().join(format!("{me}.bundle.json"));
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(bundle).unwrap()).unwrap();
    let key: [u8; 32] = hex::decode(bundle["secrets"]["signing_key"].as_str().unwrap()).unwrap().try_into().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&key);
    let seq: u64 =
        conn.query_row("SELECT MAX(seq) FROM events WHERE origin = ?1", [me.as_str()], |r| r.get(0)).unwrap();
    let (pos, prev, wall): (u64, Vec<u8>, u64) = conn
        .query_row(
            "SELECT pos, hash, hlc_wall FROM events WHERE lane = ?1 AND origin = ?1 ORDER BY pos DESC LIMIT 1",
            [me.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let e = proto::Event {
        id: proto::EventId { origin: me.clone(), seq: seq + 1 },
        lane: proto::Lane::Home(me.clone()),
        pos: pos + 1,
        prev: proto::Hash(prev.try_into().unwrap()),
        hlc: proto::Hlc { wall_ms: wall + 1, logical: 0 },
        actor: actor.into(),
        case: proto::CaseId(case.into()),
        // The author saw the case: its context covers the creation.
        context: {
            let case_id = proto::CaseId(case.into());
            let mut c = crdts::VClock::new();
            crdts::CmRDT::apply(&mut c, crdts::Dot::new(case_id.minted_by().unwrap(), case_id.minted_seq().unwrap()));
            c
        },
        body,
    };
    system_tests::rows::insert_stored_event(&conn, &e);
    let seal = proto::Seal::sign(&key, &e);
    conn.execute(
        "UPDATE seals SET pos = ?1, seq = ?2, head = ?3, signature = ?4 WHERE origin = ?5 AND lane = ?5",
        rusqlite::params![seal.pos, seal.seq, seal.head.0.to_vec(), seal.signature, me.as_str()],
    )
    .unwrap();
}

/// Text refused as input but arriving from elsewhere (here a forged client
/// writing straight into its store): receivers quarantine it, and where it
/// is shown, control characters are escaped and a reserved field name
/// never passes for a line of the case view.
#[test]
fn forged_odd_events_are_quarantined_upstream_and_shown_escaped() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    let case = new_case("village-node", d, "V001", 40);
    let value = "\u{1b}[2J已办结\u{9b}31m";
    forge(
        &data,
        &case,
        "王芳\u{1b}[31m",
        proto::Body::SetField { field: "state".into(), value: proto::event::FieldValue::Text(value.into()) },
    );
    // The node folds what it holds (the forged event is well formed).
    assert_eq!(ok_json("village-node", &["verify", "--data", d, "--repair", "--json"])["ok"], true);
    let text = ok("village-node", &["case", "show", "--data", d, &case]);
    assert!(!text.contains('\u{1b}') && !text.contains('\u{9b}'), "raw control characters printed: {text:?}");
    assert!(text.contains("\\u{1b}[2J已办结\\u{9b}31m"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("state ")).count(), 1, "{text}");
    assert!(text.contains("field \"state\""), "{text}");
    let raw = String::from_utf8(run("village-node", &["case", "show", "--data", d, &case, "--json"]).stdout).unwrap();
    assert!(!raw.contains('\u{1b}') && !raw.contains('\u{9b}'), "{raw:?}");
    let st: Value = serde_json::from_str(raw.trim()).unwrap();
    assert_eq!(st["fields"]["state"][0], value, "JSON readers get the value back");
    assert_eq!(st["state"], "received");

    let hub = Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let out = run("village-node", &["sync", "--data", d, "--peer", &hub.addr, "--json"]);
    assert!(!out.status.success(), "a sync with refusals exits non-zero");
    let summary: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(summary["quarantined_by_peer"], 1, "{summary}");
    let q = ok_json("county-hub", &["quarantine", "list", "--data", s(&county.hub()), "--json"]);
    assert!(q[0]["reason"].as_str().unwrap().contains("control"), "{q}");
    let held = ok_json("county-hub", &["case", "show", "--data", s(&county.hub()), &case, "--json"]);
    assert!(held["fields"].get("state").is_none(), "the forged field did not reach the county: {held}");
    let listed = ok("county-hub", &["quarantine", "list", "--data", s(&county.hub())]);
    assert!(!listed.contains('\u{1b}'), "{listed:?}");
}

/// Overwrites `pages` leaf pages of `table` in a node's database with
/// garbage, as a failing disk or a careless hand would, after the node has
/// closed it cleanly.
fn damage_pages(data: &Path, table: &str, pages: usize) {
    let path = data.join("node.db");
    let (page_size, numbers): (u64, Vec<u64>) = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let size = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        let mut stmt =
            conn.prepare("SELECT pageno FROM dbstat WHERE name = ?1 AND pagetype = 'leaf' ORDER BY pageno").unwrap();
        let numbers = stmt.query_map([table], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        (size, numbers)
    };
    assert!(!numbers.is_empty(), "{table} has no pages");
    // Timestamps are coarse: let the clock move past the last clean close.
    std::thread::sleep(Duration::from_millis(50));
    let mut bytes = std::fs::read(&path).unwrap();
    for n in numbers.iter().take(pages) {
        let start = ((n - 1) * page_size) as usize;
        bytes[start..start + page_size as usize].iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7 + 13) as u8);
    }
    std::fs::write(&path, bytes).unwrap();
}

fn wal_len(data: &Path) -> u64 {
    std::fs::metadata(data.join("node.db-wal")).map(|m| m.len()).unwrap_or(0)
}

/// A store whose pages were damaged after a clean close takes no more work
/// (it could never be sent), says how to recover, and recovering that way
/// (a fresh directory from the bundle, pulled back from the county) works.
#[test]
fn a_damaged_store_refuses_work_and_is_recovered_from_upstream() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    let hub = Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let mut synced: Vec<String> = (0..3).map(|i| new_case("village-node", d, "V001", 50 + i)).collect();
    ok("village-node", &["sync", "--data", d, "--peer", &hub.addr]);
    let unsynced = new_case("village-node", d, "V001", 53);
    damage_pages(&data, "event_rows", 1);

    let db = std::fs::read(data.join("node.db")).unwrap();
    let id = id_number(54);
    let take = ["case", "new", "--data", d, "--item", "V001", "--applicant", "孙八", "--id-number", &id, "--as", "a"];
    for _ in 0..2 {
        let err = fails("village-node", &take);
        for hint in ["is damaged", "Nothing was written", "init --data", "--enrollment", "sync --data"] {
            assert!(err.contains(hint), "{hint:?} not in {err}");
        }
    }
    let err = fails("village-node", &["case", "withdraw", "--data", d, &unsynced, "--as", "a"]);
    assert!(err.contains("is damaged"), "{err}");
    let err = fails("village-node", &["sync", "--data", d, "--peer", &hub.addr]);
    assert!(err.contains("is damaged") && err.contains("init --data"), "{err}");
    assert_eq!(std::fs::read(data.join("node.db")).unwrap(), db, "a refused write changed the file");
    assert_eq!(wal_len(&data), 0, "a refused write left changes to apply");

    // Recover as the message says.
    let fresh = county.root.path().join("fresh");
    let bundle = county.root.path().join(format!("{VILLAGE}.bundle.json"));
    ok("village-node", &["init", "--data", s(&fresh), "--enrollment", s(&bundle)]);
    let pulled = ok_json("village-node", &["sync", "--data", s(&fresh), "--peer", &hub.addr, "--json"]);
    assert_eq!(pulled["received_events"], 3, "{pulled}");
    let held: Vec<String> = ok_json("village-node", &["case", "list", "--data", s(&fresh), "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["case_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(held, synced, "what was synced is back; {unsynced}, never synced, is lost");
    let home = |program: &str, dir: &str| ok_json(program, &["digest", "--data", dir, "--home", VILLAGE, "--json"]);
    assert_eq!(home("village-node", s(&fresh)), home("county-hub", s(&county.hub())));
    // Work goes on from there and reaches the county.
    synced.push(new_case("village-node", s(&fresh), "V001", 55));
    let up = ok_json("village-node", &["sync", "--data", s(&fresh), "--peer", &hub.addr, "--json"]);
    assert_eq!((up["sent_events"].as_u64(), up["quarantined_by_peer"].as_u64()), (Some(1), Some(0)), "{up}");
    assert_eq!(home("village-node", s(&fresh)), home("county-hub", s(&county.hub())));
    assert_eq!(ok_json("village-node", &["verify", "--data", s(&fresh), "--json"])["ok"], true);
}

/// One event that cannot be decoded: `verify` reports it instead of
/// stopping, and sync and writes are refused with the way out, instead of
/// failing on it for ever.
#[test]
fn an_undecodable_event_is_reported_and_refused_with_the_way_out() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    new_case("village-node", d, "V001", 60);
    new_case("village-node", d, "V001", 61);
    std::thread::sleep(Duration::from_millis(50));
    rusqlite::Connection::open(data.join("node.db"))
        .unwrap()
        .execute("UPDATE event_rows SET content = x'0102' WHERE seq = 1", [])
        .unwrap();
    let out = run("village-node", &["verify", "--data", d, "--json"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("a report, not an abort");
    assert_eq!(report["ok"], false);
    assert_eq!(report["repairable"], false);
    assert!(report["problems"][0].as_str().unwrap().contains("/1 cannot be decoded"), "{report}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("init --data"));
    // No peer is listening there: the store is checked before connecting.
    let err = fails("village-node", &["sync", "--data", d, "--peer", "127.0.0.1:9"]);
    assert!(err.contains("cannot be decoded") && err.contains("init --data"), "{err}");
    let err = fails(
        "village-node",
        &[
            "case",
            "new",
            "--data",
            d,
            "--item",
            "V001",
            "--applicant",
            "周九",
            "--id-number",
            &id_number(62),
            "--as",
            "a",
        ],
    );
    assert!(err.contains("cannot be decoded"), "{err}");
}

/// An event altered on disk cannot be repaired: `verify --repair` says
/// so, and every later write is refused with the way to recover (the
/// repair's session had recorded the store as clean, and the next write
/// took it at that word).
#[test]
fn damage_a_repair_leaves_refuses_later_writes() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    let case = new_case("village-node", d, "V001", 80);
    {
        let conn = rusqlite::Connection::open(data.join("node.db")).unwrap();
        let n = conn.execute("UPDATE event_rows SET hash = zeroblob(32) WHERE seq = 1", []).unwrap();
        assert!(n > 0);
    }
    let out = run("village-node", &["verify", "--data", d, "--repair", "--json"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("a report");
    assert_eq!((report["ok"].as_bool(), report["repairable"].as_bool()), (Some(false), Some(false)), "{report}");
    let err = fails("village-node", &["case", "close", "--data", d, &case, "--as", "a"]);
    assert!(err.contains("damaged"), "{err}");
}

/// Derived rows damaged (undecodable, wrong columns, missing or stray
/// index entries): `verify` reports every one without stopping or
/// changing anything, writes are refused with the way to repair, and
/// `verify --repair` rebuilds them from the events.
#[test]
fn verify_repair_rebuilds_damaged_derived_rows() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    let cases: Vec<String> = (0..3).map(|i| new_case("village-node", d, "V001", 70 + i)).collect();
    ok(
        "village-node",
        &["case", "edit", "--data", d, &cases[1], "--field", "address", "--value", "文林镇二组", "--as", "a"],
    );
    let before = digest("village-node", d);
    let find =
        |d: &str| ok_json("village-node", &["case", "find", "--data", d, "--id-number", &id_number(72), "--json"]);
    assert_eq!(find(d), serde_json::json!([cases[2]]));
    std::thread::sleep(Duration::from_millis(50));
    {
        let conn = rusqlite::Connection::open(data.join("node.db")).unwrap();
        conn.execute("UPDATE cases SET folded = x'deadbeef' WHERE case_id = ?1", [&cases[0]]).unwrap();
        conn.execute("UPDATE cases SET state = 'closed' WHERE case_id = ?1", [&cases[1]]).unwrap();
        conn.execute("DELETE FROM person_index", []).unwrap();
        conn.execute(
            "INSERT INTO cases (case_id, item, state, home, handler, flagged, updated_wall, folded)
             VALUES ('511421101001-999', 'V001', 'received', ?1, ?1, 0, 0, x'00')",
            [VILLAGE],
        )
        .unwrap();
    }
    let db = std::fs::read(data.join("node.db")).unwrap();
    let out = run("village-node", &["verify", "--data", d, "--json"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("a report, not an abort");
    let problems = report["problems"].to_string();
    for p in [
        format!("{} cannot be decoded", cases[0]),
        format!("{} differs", cases[1]),
        "index entries are missing".into(),
        "511421101001-999".into(),
    ] {
        assert!(problems.contains(&p), "{p:?} not in {problems}");
    }
    assert_eq!(report["repairable"], true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--repair"));
    assert_eq!(std::fs::read(data.join("node.db")).unwrap(), db, "verify without --repair changed the store");
    // The file changed behind the node's back: the next write checks it.
    let err = fails("village-node", &["case", "close", "--data", d, &cases[2], "--as", "a"]);
    assert!(err.contains("verify --data") && err.contains("--repair"), "{err}");
    let err = fails("village-node", &["case", "show", "--data", d, &cases[0]]);
    assert!(err.contains("--repair"), "{err}");

    let repaired = ok_json("village-node", &["verify", "--data", d, "--repair", "--json"]);
    assert_eq!(repaired["ok"], true, "{repaired}");
    assert!(!repaired["repaired"].as_array().unwrap().is_empty(), "{repaired}");
    assert_eq!(ok_json("village-node", &["verify", "--data", d, "--json"])["ok"], true);
    assert_eq!(digest("village-node", d), before);
    assert_eq!(find(d), serde_json::json!([cases[2]]));
    ok("village-node", &["case", "withdraw", "--data", d, &cases[2], "--as", "a"]);
}

/// Makes a data directory unwritable for as long as it lives: read-only
/// permissions, or, for root (whom permissions do not stop), the immutable
/// attribute. None when neither can be had here.
struct ReadOnly(PathBuf, bool);

impl ReadOnly {
    fn make(dir: &Path) -> Option<ReadOnly> {
        let entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        let set_mode = |p: &Path, write: bool| {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p).unwrap().permissions().mode();
            let mode = if write { mode | 0o200 } else { mode & !0o222 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        for p in entries.iter().chain([&dir.to_path_buf()]) {
            set_mode(p, false);
        }
        let probe = dir.join("probe");
        if std::fs::write(&probe, b"x").is_err() {
            return Some(ReadOnly(dir.to_path_buf(), false));
        }
        // Running as root: permissions do not stop writes.
        let _ = std::fs::remove_file(&probe);
        for p in entries.iter().chain([&dir.to_path_buf()]) {
            set_mode(p, true);
        }
        let mut chattr = std::process::Command::new("chattr");
        chattr.arg("+i").args(&entries).arg(dir);
        if !chattr.status().is_ok_and(|s| s.success()) {
            return None;
        }
        if std::fs::write(&probe, b"x").is_ok() {
            let _ = std::fs::remove_file(&probe);
            return None;
        }
        Some(ReadOnly(dir.to_path_buf(), true))
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
            let entries: Vec<PathBuf> = std::fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().path()).collect();
            let _ = std::process::Command::new("chattr").arg("-i").args(&entries).status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700));
            for e in std::fs::read_dir(&self.0).unwrap() {
                let _ = std::fs::set_permissions(e.unwrap().path(), std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}

/// Every reading command works on a store that cannot be written (a copy
/// on read-only media); a write is refused with why.
#[test]
fn reading_commands_work_on_read_only_media() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    let case = new_case("village-node", d, "V001", 80);
    let before = digest("village-node", d);
    let files = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    let listed = files(&data);
    let Some(guard) = ReadOnly::make(&data) else {
        // Root without the immutable attribute (e.g. on tmpfs): nothing here
        // can make the directory unwritable, so this cannot be tested.
        eprintln!("skipped: cannot make {d} read-only here");
        return;
    };
    assert_eq!(digest("village-node", d), before);
    let id = id_number(80);
    for args in [
        vec!["case", "list", "--data", d, "--json"],
        vec!["case", "show", "--data", d, &case, "--json"],
        vec!["case", "find", "--data", d, "--id-number", &id, "--json"],
        vec!["verify", "--data", d, "--json"],
        vec!["quarantine", "list", "--data", d, "--json"],
        vec!["catalogue", "list", "--data", d, "--json"],
        vec!["config", "--data", d],
    ] {
        ok("village-node", &args);
    }
    assert_eq!(
        ok_json("village-node", &["case", "find", "--data", d, "--id-number", &id, "--json"]),
        serde_json::json!([case])
    );
    let err = fails("village-node", &["case", "withdraw", "--data", d, &case, "--as", "a"]);
    assert!(err.contains("cannot be written"), "{err}");
    drop(guard);
    assert_eq!(files(&data), listed, "reading left files behind");
    assert_eq!(digest("village-node", d), before);
}

/// `init` refuses a bundle its node could not run on, and creates nothing.
#[test]
fn init_refuses_a_bundle_that_cannot_run_its_node() {
    let county = County::new();
    let other_county = County::new();
    let bundle = |c: &County, node: &str| -> Value {
        let path = c.root.path().join(format!("{node}.bundle.json"));
        ok("county-hub", &["enroll", "--data", s(&c.hub()), "--node", node, "--out", s(&path)]);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let good = bundle(&county, VILLAGE);
    let neighbour = bundle(&county, "511421101002");
    let foreign = bundle(&other_county, VILLAGE);
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|b| b["node"]["id"] = "511421999999".into()), "not in the topology"),
        (Box::new(|b| b["node"]["tier"] = "township".into()), "in its topology"),
        (Box::new(|b| b["tls_cert_pem"] = "garbage".into()), "certificate is missing or not PEM"),
        (Box::new(|b| b["secrets"]["tls_key_pem"] = "garbage".into()), "TLS key"),
        (Box::new(|b| b["ca_cert_pem"] = "".into()), "no county CA"),
        (
            Box::new({
                let n = neighbour.clone();
                move |b| b["secrets"]["tls_key_pem"] = n["secrets"]["tls_key_pem"].clone()
            }),
            "does not belong",
        ),
        (
            Box::new({
                let n = neighbour.clone();
                move |b| {
                    b["secrets"]["tls_key_pem"] = n["secrets"]["tls_key_pem"].clone();
                    b["tls_cert_pem"] = n["tls_cert_pem"].clone();
                }
            }),
            "does not name",
        ),
        (
            Box::new({
                let f = foreign.clone();
                move |b| b["ca_cert_pem"] = f["ca_cert_pem"].clone()
            }),
            "not issued by its county CA",
        ),
        (
            Box::new({
                let n = neighbour.clone();
                move |b| b["secrets"]["signing_key"] = n["secrets"]["signing_key"].clone()
            }),
            "signing key",
        ),
        (
            Box::new(|b| {
                b["catalogue"]["items"] = serde_json::json!([]);
                b["catalogue"]["bundles"] = serde_json::json!([]);
            }),
            "no items",
        ),
        (Box::new(|b| b["catalogue"]["items"][0]["accepted_at"] = serde_json::json!([])), "does not hold together"),
        (Box::new(|b| b["topology"]["nodes"] = serde_json::json!([])), "not an enrolment bundle"),
        (Box::new(|b| b["hub_address"] = "".into()), "hub address"),
    ];
    for (i, (edit, hint)) in cases.iter().enumerate() {
        let mut b = good.clone();
        edit(&mut b);
        let path = county.root.path().join(format!("bad{i}.json"));
        std::fs::write(&path, b.to_string()).unwrap();
        let dir = county.root.path().join(format!("node{i}"));
        let err = fails("village-node", &["init", "--data", s(&dir), "--enrollment", s(&path)]);
        assert!(err.contains(hint), "bundle {i}: {hint:?} not in {err}");
        assert!(!dir.exists(), "bundle {i}: init created {}", dir.display());
    }
    let path = county.root.path().join("good.json");
    std::fs::write(&path, good.to_string()).unwrap();
    ok("village-node", &["init", "--data", s(&county.root.path().join("fine")), "--enrollment", s(&path)]);
}

/// Case rows folded by another version of the fold are rebuilt from the
/// events the first time the node is opened for writing (issue 12): a new
/// release never shows rows an older fold wrote.
#[test]
fn rows_of_an_older_fold_are_rebuilt_from_the_events() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let d = s(&data);
    let case = new_case("village-node", d, "V001", 77);
    let conn = rusqlite::Connection::open(data.join("node.db")).unwrap();
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'fold_version'", []).unwrap();
    conn.execute("UPDATE cases SET state = 'closed'", []).unwrap();
    drop(conn);
    ok("village-node", &["config", "--data", d, "--operator", "王芳"]);
    assert_eq!(show("village-node", d, &case)["state"], "received", "the stale row was rebuilt");
}

/// Development tooling is not in the field binaries (issue 12): a laptop's
/// `village-node` cannot generate signed work, and the hub's binary runs no
/// simulation or link emulator; `county-sim` does.
#[test]
fn field_binaries_carry_no_development_tooling() {
    for (program, args) in [
        ("village-node", vec!["case", "generate", "--data", "x", "--count", "1"]),
        ("township-node", vec!["case", "generate", "--data", "x", "--count", "1"]),
        ("county-hub", vec!["demo", "--exit"]),
        ("county-hub", vec!["link", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:1"]),
        ("county-hub", vec!["bench-ingest", "--data", "x"]),
    ] {
        let err = fails(program, &args);
        assert!(err.contains("unrecognized subcommand"), "{program} {args:?}: {err}");
    }
    let help = ok("county-sim", &["--help"]);
    for sub in ["demo", "generate", "link", "bench-ingest"] {
        assert!(help.contains(sub), "county-sim --help lists {sub}: {help}");
    }
}
