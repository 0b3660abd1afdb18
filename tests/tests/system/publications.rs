//! Issue 10: the county publishes, the network follows. A catalogue
//! version published at the hub reaches a village through its township by
//! sync (as a change, not the whole catalogue); the village takes the new
//! item, cannot take the cancelled one, and keeps its old cases under the
//! version they were taken under. Bad versions are refused with nothing
//! written; a node enrolled afterwards starts with the newest version.

use serde_json::Value;
use system_tests::{fails, ok_json, s, take_case, County, Server};

const TOWNSHIP: &str = "511421101";
const VILLAGE: &str = "511421101001";
const LATER_VILLAGE: &str = "511421101002";

fn codes(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap().to_string()).collect()
}

fn new_case(data: &str, item: &str) -> std::process::Output {
    system_tests::run(
        "village-node",
        &[
            "case",
            "new",
            "--data",
            data,
            "--item",
            item,
            "--applicant",
            "李四",
            "--id-number",
            &system_tests::id_number(7),
            "--as",
            "王芳",
            "--json",
        ],
    )
}

#[test]
fn a_catalogue_version_reaches_the_village_through_its_township() {
    let county = County::new();
    let hub = county.hub();
    let township = county.enrol(TOWNSHIP, "township-node");
    let village = county.enrol(VILLAGE, "village-node");
    let work = tempfile::tempdir().unwrap();
    let old_case = take_case(s(&village), "张三", 1);

    // Published at the county: version 2, sent as the change.
    let v2 = system_tests::samples::next_catalogue(work.path(), 2);
    let published = ok_json("county-hub", &["catalogue", "publish", "--data", s(&hub), "--file", s(&v2)]);
    assert_eq!(published["version"], 2, "{published}");
    assert_eq!(published["added"], serde_json::json!(["V900"]));
    assert_eq!(published["changed"], serde_json::json!(["V002"]));
    assert_eq!(published["cancelled"], serde_json::json!(["V006"]));
    let (sent, whole) = (published["bytes"].as_u64().unwrap(), published["bytes_whole"].as_u64().unwrap());
    assert!(sent * 50 < whole, "the change ({sent} B) is a small part of the whole catalogue ({whole} B)");

    // Versions go 1, 2, 3: the same file again, or one that skips, is
    // refused with nothing written.
    let again = fails("county-hub", &["catalogue", "publish", "--data", s(&hub), "--file", s(&v2)]);
    assert!(again.contains("the next version is 3"), "{again}");
    let v5 = system_tests::samples::next_catalogue(work.path(), 5);
    let skipped = fails("county-hub", &["catalogue", "publish", "--data", s(&hub), "--file", s(&v5)]);
    assert!(skipped.contains("file is catalogue version 5, but the next version is 3"), "{skipped}");
    let versions = ok_json("county-hub", &["catalogue", "versions", "--data", s(&hub), "--json"]);
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");

    // Not at the village yet: it still takes under v1.
    let listed = ok_json("village-node", &["catalogue", "list", "--data", s(&village), "--json"]);
    assert!(!codes(&listed).contains(&"V900".to_string()));

    // Through the township: township ↔ county, then village ↔ township.
    let hub_server = Server::start("county-hub", &["serve", "--data", s(&hub), "--listen", "127.0.0.1:0"]);
    ok_json("township-node", &["sync", "--data", s(&township), "--peer", &hub_server.addr, "--json"]);
    let town_server = Server::start("township-node", &["serve", "--data", s(&township), "--listen", "127.0.0.1:0"]);
    ok_json("village-node", &["sync", "--data", s(&village), "--peer", &town_server.addr, "--json"]);

    let listed = ok_json("village-node", &["catalogue", "list", "--data", s(&village), "--json"]);
    let held = codes(&listed);
    assert!(held.contains(&"V900".to_string()) && !held.contains(&"V006".to_string()), "{held:?}");
    let v1 = ok_json("village-node", &["catalogue", "list", "--data", s(&village), "--json", "--version", "1"]);
    assert!(codes(&v1).contains(&"V006".to_string()), "v1 is still held");
    let diff =
        ok_json("village-node", &["catalogue", "diff", "--data", s(&village), "--from", "1", "--to", "2", "--json"]);
    assert_eq!(
        (diff["added"].clone(), diff["changed"].clone(), diff["cancelled"].clone()),
        (serde_json::json!(["V900"]), serde_json::json!(["V002"]), serde_json::json!(["V006"]))
    );

    // The new item is taken under v2; the cancelled one is refused, with
    // the reason, nothing written; the old case keeps v1.
    let count =
        || ok_json("village-node", &["case", "list", "--data", s(&village), "--json"]).as_array().unwrap().len();
    let before = count();
    let out = new_case(s(&village), "V900");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let taken: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_id = taken["case_id"].as_str().unwrap().to_string();
    let shown = ok_json("village-node", &["case", "show", "--data", s(&village), &new_id, "--json"]);
    assert_eq!(shown["catalogue_version"], 2, "{shown}");
    let refused = new_case(s(&village), "V006");
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("item V006 was cancelled in catalogue v2"), "{why}");
    assert_eq!(count(), before + 1, "the refusal wrote nothing");
    let old = ok_json("village-node", &["case", "show", "--data", s(&village), &old_case, "--json"]);
    assert_eq!(old["catalogue_version"], 1, "{old}");

    // The v2 case goes up and the township and the county accept its creation.
    ok_json("village-node", &["sync", "--data", s(&village), "--peer", &town_server.addr, "--json"]);
    ok_json("township-node", &["sync", "--data", s(&township), "--peer", &hub_server.addr, "--json"]);
    let at_hub = ok_json("county-hub", &["case", "show", "--data", s(&hub), &new_id, "--json"]);
    assert_eq!(at_hub["catalogue_version"], 2, "{at_hub}");
    let quarantined = ok_json("county-hub", &["quarantine", "list", "--data", s(&hub), "--json"]);
    assert_eq!(quarantined.as_array().map(Vec::len), Some(0), "{quarantined}");

    // A village enrolled after the publication starts with v2.
    let later = county.enrol(LATER_VILLAGE, "village-node");
    let listed = ok_json("village-node", &["catalogue", "list", "--data", s(&later), "--json"]);
    assert!(codes(&listed).contains(&"V900".to_string()), "the bundle brings the newest version");
}

/// A calendar version published at the county times cases everywhere it
/// reaches; a version out of order is refused.
#[test]
fn a_calendar_version_reaches_the_village_and_out_of_order_is_refused() {
    let county = County::new();
    let hub = county.hub();
    let village = county.enrol(VILLAGE, "village-node");
    let work = tempfile::tempdir().unwrap();
    let mut cal: Value = serde_json::from_str(include_str!("../../../deploy/calendar.json")).unwrap();
    cal["version"] = 2.into();
    cal["years"]["2027"] = serde_json::json!({
        "source": "国务院办公厅关于2027年部分节假日安排的通知",
        "holidays": [["2027-01-01", "2027-01-03"]],
        "workdays": []
    });
    let path = work.path().join("calendar.json");
    std::fs::write(&path, serde_json::to_vec(&cal).unwrap()).unwrap();
    let published = ok_json("county-hub", &["calendar", "publish", "--data", s(&hub), "--file", s(&path)]);
    assert_eq!(published["version"], 2);
    let again = fails("county-hub", &["calendar", "publish", "--data", s(&hub), "--file", s(&path)]);
    assert!(again.contains("the next version is 3"), "{again}");

    let shown = ok_json("village-node", &["calendar", "show", "--data", s(&village), "--json"]);
    assert_eq!(shown["version"], 1);
    let hub_server = Server::start("county-hub", &["serve", "--data", s(&hub), "--listen", "127.0.0.1:0"]);
    ok_json("village-node", &["sync", "--data", s(&village), "--peer", &hub_server.addr, "--json"]);
    let shown = ok_json("village-node", &["calendar", "show", "--data", s(&village), "--json"]);
    assert_eq!(shown["version"], 2, "{shown}");
    assert!(shown["years"]["2027"].is_object(), "{shown}");
}
