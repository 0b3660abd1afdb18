//! Restored and copied data directories (issue 11, finding 2): a village
//! laptop restored from a backup, and two laptops running one village's
//! copied data directory, with real processes, real SQLite files and real
//! QUIC. Nothing either copy takes is lost, the copy that is stale is told
//! in plain words and `sync` says so with its exit status, and the county
//! records it for an administrator.

use serde_json::Value;
use std::path::Path;
use system_tests::{copy_dir, ok, ok_json, run, s, take_case, County, Server};

const VILLAGE: &str = "511421101001";

fn applicants(hub: &str) -> Vec<String> {
    let list = ok_json("county-hub", &["case", "list", "--data", hub, "--json"]);
    let mut names: Vec<String> =
        list.as_array().unwrap().iter().map(|c| c["applicant"].as_str().unwrap_or_default().to_string()).collect();
    names.sort();
    names
}

/// Syncs once and returns (succeeded, stderr).
fn sync(data: &str, peer: &str) -> (bool, String) {
    let out = run("village-node", &["sync", "--data", data, "--peer", peer, "--json"]);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn setup() -> (County, Server, String) {
    let county = County::new();
    county.enrol(VILLAGE, "village-node");
    let hub = Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let v = s(&county.data(VILLAGE)).to_string();
    (county, hub, v)
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    v.sort();
    v
}

#[test]
fn a_restored_laptop_loses_none_of_the_cases_it_takes_after_the_restore() {
    let (county, hub, v) = setup();
    let hub_data = s(&county.hub()).to_string();
    for (i, name) in ["甲一", "甲二", "甲三"].iter().enumerate() {
        take_case(&v, name, i as u32);
    }
    assert!(sync(&v, &hub.addr).0);
    let backup = county.data("backup");
    copy_dir(Path::new(&v), &backup);
    for (i, name) in ["甲四", "甲五"].iter().enumerate() {
        take_case(&v, name, 10 + i as u32);
    }
    assert!(sync(&v, &hub.addr).0);
    // The laptop is restored from the backup and takes new cases.
    std::fs::remove_dir_all(&v).unwrap();
    copy_dir(&backup, Path::new(&v));
    for (i, name) in ["乙一", "乙二", "乙三"].iter().enumerate() {
        take_case(&v, name, 20 + i as u32);
    }
    let (ok_exit, stderr) = sync(&v, &hub.addr);
    assert!(!ok_exit, "a sync that found the laptop stale exits non-zero");
    assert!(stderr.contains("older than the network's copy"), "{stderr}");
    assert!(stderr.contains("new case numbers"), "{stderr}");
    assert_eq!(applicants(&hub_data), sorted(&["甲一", "甲二", "甲三", "甲四", "甲五", "乙一", "乙二", "乙三"]));
    // Work goes on as usual afterwards, and both sides agree.
    take_case(&v, "乙四", 30);
    let (ok_exit, stderr) = sync(&v, &hub.addr);
    assert!(ok_exit, "{stderr}");
    assert_eq!(applicants(&hub_data).len(), 9);
    ok("village-node", &["verify", "--data", &v]);
    let here = ok_json("village-node", &["digest", "--data", &v, "--home", VILLAGE, "--json"]);
    let there = ok_json("county-hub", &["digest", "--data", &hub_data, "--home", VILLAGE, "--json"]);
    assert_eq!(here["digest"], there["digest"]);
}

#[test]
fn two_laptops_with_one_copied_directory_both_reach_the_county() {
    let (county, hub, v) = setup();
    let hub_data = s(&county.hub()).to_string();
    take_case(&v, "共一", 1);
    assert!(sync(&v, &hub.addr).0);
    let twin = county.data("twin");
    copy_dir(Path::new(&v), &twin);
    let twin = s(&twin).to_string();
    take_case(&v, "原一", 2);
    take_case(&v, "原二", 3);
    take_case(&twin, "副一", 4);
    take_case(&twin, "副二", 5);
    take_case(&twin, "副三", 6);
    assert!(sync(&v, &hub.addr).0);
    let (ok_exit, stderr) = sync(&twin, &hub.addr);
    assert!(!ok_exit);
    assert!(stderr.contains("older than the network's copy"), "{stderr}");
    // Both keep working.
    take_case(&v, "原三", 7);
    take_case(&twin, "副四", 8);
    for d in [&v, &twin, &v, &twin] {
        let (ok_exit, stderr) = sync(d, &hub.addr);
        assert!(ok_exit, "{stderr}");
    }
    assert_eq!(applicants(&hub_data), sorted(&["共一", "原一", "原二", "原三", "副一", "副二", "副三", "副四"]));
    // The county's administrator sees that the village runs twice.
    let q: Value = ok_json("county-hub", &["quarantine", "list", "--data", &hub_data, "--json"]);
    assert!(
        q.as_array().unwrap().iter().any(|r| r["reason"].as_str().unwrap().contains("continues as incarnation")),
        "{q}"
    );
    for d in [&v, &twin] {
        let here = ok_json("village-node", &["digest", "--data", d, "--home", VILLAGE, "--json"]);
        let there = ok_json("county-hub", &["digest", "--data", &hub_data, "--home", VILLAGE, "--json"]);
        assert_eq!(here["digest"], there["digest"]);
    }
}
