//! Issue 10: the county publishes, the network follows. A catalogue
//! version published at the hub reaches a village through its township by
//! sync (as a change, not the whole catalogue); the village takes the new
//! item, cannot take the cancelled one, and keeps its old cases under the
//! version they were taken under. Bad versions are refused with nothing
//! written; a node enrolled afterwards starts with the newest version.

use serde_json::Value;
use std::path::PathBuf;
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

fn digest(program: &str, data: &std::path::Path, home: &str) -> Value {
    let d = ok_json(program, &["digest", "--data", s(data), "--home", home, "--json"]);
    serde_json::json!({"cases": d["cases"], "events": d["events"], "digest": d["digest"]})
}

/// One sync of the node in `data` with `peer`, as its summary.
fn sync(program: &str, data: &std::path::Path, peer: &str) -> Value {
    ok_json(program, &["sync", "--data", s(data), "--peer", peer, "--json"])
}

/// The township a village moves to in the tests below.
const NEW_TOWNSHIP: &str = "511421102";

/// A county with the village's township, the township it will move to,
/// and the village: (county, hub, old township, new township, village).
fn before_a_move() -> (County, PathBuf, PathBuf, PathBuf, PathBuf) {
    let county = County::new();
    let hub = county.hub();
    let old_town = county.enrol(TOWNSHIP, "township-node");
    let new_town = county.enrol(NEW_TOWNSHIP, "township-node");
    let village = county.enrol(VILLAGE, "village-node");
    (county, hub, old_town, new_town, village)
}

/// A village moves to another township: its new township receives the
/// village's whole lane at its next session with the county (its digest
/// for the village equals the county's), the old township keeps what it
/// had and receives nothing new of it, and the village learns of the move
/// from its old township and syncs with the new one. A move to a node
/// that does not exist, or of a township, is refused with nothing written.
#[test]
fn a_village_moves_to_another_township_with_its_history() {
    let (_county, hub, old_town, new_town, village) = before_a_move();
    let first = take_case(s(&village), "张三", 1);
    take_case(s(&village), "李四", 2);
    // A scan, which the old township will hold until it purges the lane.
    let work = tempfile::tempdir().unwrap();
    let scan = system_tests::samples::pdf_of_size(100 * 1024, 5);
    let path = system_tests::samples::write_file(work.path(), "id.pdf", &scan);
    let attached = ok_json(
        "village-node",
        &[
            "case",
            "attach",
            "--data",
            s(&village),
            &first,
            "--material",
            "居民身份证",
            "--file",
            s(&path),
            "--as",
            "王芳",
            "--json",
        ],
    );
    let hash = attached["hash"].as_str().unwrap().to_string();
    let hub_server = Server::start("county-hub", &["serve", "--data", s(&hub), "--listen", "127.0.0.1:0"]);
    let old_server = Server::start("township-node", &["serve", "--data", s(&old_town), "--listen", "127.0.0.1:0"]);
    let new_server = Server::start("township-node", &["serve", "--data", s(&new_town), "--listen", "127.0.0.1:0"]);
    sync("village-node", &village, &old_server.addr);
    sync("township-node", &old_town, &hub_server.addr);
    assert_eq!(digest("county-hub", &hub, VILLAGE)["cases"], 2);

    // Refused, nothing written: a node that does not exist, a township moved.
    let versions = || ok_json("county-hub", &["nodes", "--data", s(&hub), "--json"]);
    let before = versions();
    let bad = fails("county-hub", &["topology", "move", "--data", s(&hub), "--node", VILLAGE, "--to", "511421999"]);
    assert!(bad.contains("511421999 is not in the topology"), "{bad}");
    let bad = fails("county-hub", &["topology", "move", "--data", s(&hub), "--node", TOWNSHIP, "--to", NEW_TOWNSHIP]);
    assert!(bad.contains("is a township node, not a village node"), "{bad}");
    assert_eq!(versions(), before, "nothing written");

    let moved =
        ok_json("county-hub", &["topology", "move", "--data", s(&hub), "--node", VILLAGE, "--to", NEW_TOWNSHIP]);
    assert_eq!(moved["version"], 2, "{moved}");

    // The new township learns of the move, then takes the lane whole, and
    // the lane's data key from the county (its bundle predates the move),
    // then the village's scans.
    let learned = sync("township-node", &new_town, &hub_server.addr);
    assert_eq!(learned["keys_kept"], 1, "{learned}");
    sync("township-node", &new_town, &hub_server.addr);
    assert_eq!(digest("township-node", &new_town, VILLAGE), digest("county-hub", &hub, VILLAGE));
    let out = work.path().join("back.pdf");
    system_tests::ok("township-node", &["case", "file", "--data", s(&new_town), &first, &hash, "--out", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), scan, "the new township reads the village's scan");

    // The village learns of the move from its old township and syncs with
    // the new one; a case it takes now reaches the county through it.
    sync("township-node", &old_town, &hub_server.addr);
    sync("village-node", &village, &old_server.addr);
    let third = take_case(s(&village), "王五", 3);
    sync("village-node", &village, &new_server.addr);
    sync("township-node", &new_town, &hub_server.addr);
    ok_json("county-hub", &["case", "show", "--data", s(&hub), &third, "--json"]);
    assert_eq!(digest("county-hub", &hub, VILLAGE)["cases"], 3);
    assert_eq!(digest("township-node", &new_town, VILLAGE), digest("county-hub", &hub, VILLAGE));

    // The old township keeps the two cases it had, marked as moved, and
    // gets nothing new.
    sync("township-node", &old_town, &hub_server.addr);
    sync("village-node", &village, &old_server.addr);
    assert_eq!(digest("township-node", &old_town, VILLAGE)["cases"], 2);
    let quarantined = ok_json("county-hub", &["quarantine", "list", "--data", s(&hub), "--json"]);
    assert_eq!(quarantined.as_array().map(Vec::len), Some(0), "{quarantined}");
    let holds_scan = |dir: &std::path::Path| {
        system_tests::samples::files_under(&dir.join("files")).iter().any(|p| p.to_string_lossy().contains(&hash))
    };
    assert!(holds_scan(&old_town), "the old township held the scan");
    let kept = ok_json("township-node", &["case", "show", "--data", s(&old_town), &first, "--json"]);
    assert_eq!(kept["moved_to"], NEW_TOWNSHIP, "{kept}");

    // An explicit purge, logged: refused for a village that did not move.
    let refused = fails("township-node", &["purge-moved", "--data", s(&new_town), "--home", VILLAGE, "--json"]);
    assert!(refused.contains("did not move away"), "{refused}");
    let purged = ok_json("township-node", &["purge-moved", "--data", s(&old_town), "--home", VILLAGE, "--json"]);
    assert!(purged["events_removed"].as_u64().unwrap() >= 2, "{purged}");
    assert_eq!(digest("township-node", &old_town, VILLAGE)["cases"], 0);
    assert!(!holds_scan(&old_town), "the purge took the scan off the old township's disk too");
    let log = ok_json("township-node", &["quarantine", "list", "--data", s(&old_town), "--json"]);
    assert!(log.to_string().contains("purged_lane"), "{log}");
    // Nothing was lost: the county and the new township still agree.
    assert_eq!(digest("township-node", &new_town, VILLAGE), digest("county-hub", &hub, VILLAGE));
}

/// A village added to the map is enrolled and works at once (its bundle
/// carries the change); a township merged into another hands its villages
/// over with their history and is retired (no new laptop for it); a
/// township that still has villages cannot be retired.
#[test]
fn a_village_is_added_and_a_township_merged_into_another() {
    const MERGED: &str = "511421102";
    const MERGED_VILLAGE: &str = "511421102001";
    const ADDED: &str = "511421101099";
    let county = County::new();
    let hub = county.hub();
    let town = county.enrol(TOWNSHIP, "township-node");
    let merged = county.enrol(MERGED, "township-node");
    let village = county.enrol(MERGED_VILLAGE, "village-node");
    take_case(s(&village), "张三", 1);
    let hub_server = Server::start("county-hub", &["serve", "--data", s(&hub), "--listen", "127.0.0.1:0"]);
    sync("village-node", &village, &hub_server.addr);
    sync("township-node", &merged, &hub_server.addr);

    let added = ok_json(
        "county-hub",
        &[
            "topology",
            "add-node",
            "--data",
            s(&hub),
            "--id",
            ADDED,
            "--tier",
            "village",
            "--parent",
            TOWNSHIP,
            "--name",
            "新建村",
        ],
    );
    assert_eq!(added["version"], 2);
    let new_village = county.enrol(ADDED, "village-node");
    take_case(s(&new_village), "李四", 2);
    sync("village-node", &new_village, &hub_server.addr);
    assert_eq!(digest("county-hub", &hub, ADDED)["cases"], 1);

    let refused = fails("county-hub", &["topology", "retire", "--data", s(&hub), "--node", MERGED]);
    assert!(refused.contains("still has villages"), "{refused}");
    let merge = ok_json("county-hub", &["topology", "merge", "--data", s(&hub), "--from", MERGED, "--into", TOWNSHIP]);
    assert_eq!(merge["version"], 3);
    let nodes = ok_json("county-hub", &["nodes", "--data", s(&hub), "--json"]);
    let node = |id: &str| nodes.as_array().unwrap().iter().find(|n| n["id"] == id).unwrap().clone();
    assert_eq!(node(MERGED_VILLAGE)["parent"], TOWNSHIP, "{nodes}");
    let again = fails("county-hub", &["enroll", "--data", s(&hub), "--node", MERGED, "--out", s(&hub.join("x.json"))]);
    assert!(again.contains("retired"), "{again}");

    // The township that took the villages over gets their history.
    sync("township-node", &town, &hub_server.addr);
    sync("township-node", &town, &hub_server.addr);
    assert_eq!(digest("township-node", &town, MERGED_VILLAGE), digest("county-hub", &hub, MERGED_VILLAGE));
    assert_eq!(digest("township-node", &town, ADDED), digest("county-hub", &hub, ADDED));
    // The retired township may still hand up what it holds.
    sync("township-node", &merged, &hub_server.addr);
}

/// A township's desk that was running when a village moved to it (the
/// county's map, the village's lane and its lane key taken by a sync in
/// another process) shows that village's cases and reads their personal
/// data without a restart. Found by review: the desk read the store again
/// only on its intake page, so the moved cases were "not found" (404),
/// and its handle kept the keys it had unsealed, so a reveal failed (500).
#[test]
fn a_running_desk_reads_a_moved_villages_personal_data() {
    use system_tests::desks;
    let (_county, hub, old_town, new_town, village) = before_a_move();
    let moved_case = take_case(s(&village), "张三", 1);
    let own_case = system_tests::township_result(s(&new_town), "李四", 2, "approve");
    let old_own = system_tests::township_result(s(&old_town), "王五", 3, "approve");
    desks::add_staff("township-node", &new_town, "lina", "李娜", "reviewer");
    desks::add_staff("township-node", &old_town, "zhoumin", "周敏", "reviewer");
    let hub_server = Server::start("county-hub", &["serve", "--data", s(&hub), "--listen", "127.0.0.1:0"]);
    // The old township serves its village and its desk in one process.
    let old_desk = desks::DeskProc::start(
        "township-node",
        &["serve", "--data", s(&old_town), "--listen", "127.0.0.1:0", "--desk", "127.0.0.1:0"],
    );
    sync("village-node", &village, old_desk.sync_addr.as_deref().expect("the old township serves sync"));
    sync("township-node", &old_town, &hub_server.addr);

    let desk = desks::DeskProc::start(
        "township-node",
        &["serve", "--data", s(&new_town), "--listen", "127.0.0.1:0", "--desk", "127.0.0.1:0"],
    );
    let (mut lina, _) = desks::log_in(desk.addr(), "lina", desks::PASSWORD);
    let (mut zhoumin, _) = desks::log_in(old_desk.addr(), "zhoumin", desks::PASSWORD);
    let reveal = |lina: &mut system_tests::http::Session, case: &str| {
        let page = lina.get(&format!("/case/{case}"));
        assert_eq!(page.status, 200, "{case}: {}", page.text());
        let csrf = desks::field_value(&page.text(), "csrf").expect("a CSRF token");
        lina.post_form(&format!("/case/{case}/reveal"), &[("csrf", &csrf), ("field", "id_number")]).text()
    };
    // The desk unseals its keys for its own case; the old township's desk
    // reads the village's case.
    assert!(reveal(&mut lina, &own_case).contains(&system_tests::id_number(2)));
    assert!(reveal(&mut zhoumin, &moved_case).contains(&system_tests::id_number(1)));

    // The village moves here; a sync in another process takes its lane and
    // its lane's key from the county.
    ok_json("county-hub", &["topology", "move", "--data", s(&hub), "--node", VILLAGE, "--to", NEW_TOWNSHIP]);
    let learned = sync("township-node", &new_town, &hub_server.addr);
    assert_eq!(learned["keys_kept"], 1, "{learned}");
    sync("township-node", &new_town, &hub_server.addr);
    let shown = reveal(&mut lina, &moved_case);
    assert!(shown.contains(&system_tests::id_number(1)), "the running desk reads the moved village's data: {shown}");

    // The old township learns of the move: its running desk no longer
    // shows the village's case, nor after the purge (which seals its keys
    // again without the village's), and still reads its own.
    sync("township-node", &old_town, &hub_server.addr);
    assert_eq!(zhoumin.get(&format!("/case/{moved_case}")).status, 404);
    ok_json("township-node", &["purge-moved", "--data", s(&old_town), "--home", VILLAGE, "--json"]);
    assert_eq!(zhoumin.get(&format!("/case/{moved_case}")).status, 404);
    assert!(reveal(&mut zhoumin, &old_own).contains(&system_tests::id_number(3)));
}
