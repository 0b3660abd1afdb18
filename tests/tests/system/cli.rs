//! The offline node's command line (issue 2): taking and working cases,
//! every refusal writing nothing, personal data never stored in the clear,
//! and a store that survives being killed mid-write.

use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;
use system_tests::{id_number, ok, ok_json, refused, run, s, County};

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
    let items = ok_json("village-node", &["catalogue", "list", "--data", s(&data), "--json"]);
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
    let err =
        refused("township-node", &["init", "--data", s(&county.root.path().join("t")), "--enrollment", s(&bundle)]);
    assert!(err.contains("village-node"), "{err}");
    let err = refused("village-node", &["init", "--data", s(&data), "--enrollment", s(&bundle)]);
    assert!(err.contains("already holds a node"), "{err}");

    // enroll --all writes one bundle per township and village not yet
    // enrolled (the one above holds a live key: enrolling it again would
    // leave two laptops able to sign as it).
    let out = county.root.path().join("bundles");
    ok("county-hub", &["enroll", "--data", s(&county.hub()), "--all", "--out-dir", s(&out)]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 319);
    let err =
        refused("county-hub", &["enroll", "--data", s(&county.hub()), "--node", "511421101001", "--out", s(&bundle)]);
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
    assert_eq!(st["materials"], serde_json::json!(["居民身份证", "户口簿"]));
    ok("village-node", &["case", "material", "--data", d, &case, "--remove", "居民身份证", "--as", "王芳"]);
    let st = show("village-node", d, &case);
    assert_eq!(st["materials"], serde_json::json!(["户口簿"]), "a removed material leaves the list");
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
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
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
    ];
    for (program, args, hint) in &cases {
        let err = refused(program, args);
        assert!(err.contains(hint), "{program} {args:?}: message {err:?} should mention {hint:?}");
        assert!(err.starts_with("error:") || err.contains("error:"), "{err}");
    }
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
    for entry in std::fs::read_dir(&data).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
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
