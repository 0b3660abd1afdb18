//! Three-tier sync over real QUIC with mutual TLS on loopback (issue 3):
//! real `serve` and `sync` processes, real SQLite files.

use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;
use system_tests::{fails, ok, ok_json, run, runtime, s, County, Server};

const HUB: &str = "511421";
const TOWNSHIP: &str = "511421101";
const VILLAGE_A: &str = "511421101001";
const VILLAGE_B: &str = "511421102001";

fn digest(program: &str, data: &str, home: &str) -> Value {
    ok_json(program, &["digest", "--data", data, "--home", home, "--json"])
}

fn sync(program: &str, data: &str, peer: &str) -> Value {
    ok_json(program, &["sync", "--data", data, "--peer", peer, "--json"])
}

/// A sync in which something was refused, either way: it completes and
/// prints its summary, but exits non-zero so scripts and staff notice.
fn sync_with_refusals(program: &str, data: &str, peer: &str) -> Value {
    let out = run(program, &["sync", "--data", data, "--peer", peer, "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a sync with refusals must exit non-zero: {stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn cases(program: &str, data: &str) -> Vec<Value> {
    ok_json(program, &["case", "list", "--data", data, "--json"]).as_array().unwrap().clone()
}

struct Net {
    county: County,
    hub: Server,
    township: Server,
}

fn network() -> Net {
    let county = County::new();
    county.enrol(TOWNSHIP, "township-node");
    county.enrol(VILLAGE_A, "village-node");
    county.enrol(VILLAGE_B, "village-node");
    let hub = Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let township =
        Server::start("township-node", &["serve", "--data", s(&county.data(TOWNSHIP)), "--listen", "127.0.0.1:0"]);
    Net { county, hub, township }
}

fn data(net: &Net, node: &str) -> String {
    s(&net.county.data(node)).to_string()
}

#[test]
fn both_paths_reach_the_county_and_decisions_come_back() {
    let net = network();
    let (a, b, t, hub) = (data(&net, VILLAGE_A), data(&net, VILLAGE_B), data(&net, TOWNSHIP), data(&net, HUB));
    ok("county-sim", &["generate", "--data", &a, "--count", "20", "--seed", "1", "--as", "王芳"]);
    ok("county-sim", &["generate", "--data", &b, "--count", "20", "--seed", "2", "--as", "李娜"]);

    // A goes through its township, B straight to the county.
    let up = sync("village-node", &a, &net.township.addr);
    assert!(up["sent_events"].as_u64().unwrap() >= 20);
    sync("township-node", &t, &net.hub.addr);
    sync("village-node", &b, &net.hub.addr);
    assert_eq!(cases("county-hub", &hub).len(), 40);

    // The county decides a county item forwarded by A; the township one of its items.
    let held = cases("county-hub", &hub);
    let at = |handler: &str| {
        held.iter()
            .find(|c| c["home"] == VILLAGE_A && c["handler"] == handler && c["state"] == "forwarded")
            .map(|c| c["case_id"].as_str().unwrap().to_string())
    };
    let county_case = at(HUB).expect("a county item forwarded by village A");
    ok("county-hub", &["case", "accept", "--data", &hub, &county_case, "--as", "县审批科"]);
    ok("county-hub", &["case", "approve", "--data", &hub, &county_case, "--as", "县审批科"]);
    if let Some(tc) = at(TOWNSHIP) {
        ok("township-node", &["case", "accept", "--data", &t, &tc, "--as", "镇窗口"]);
    }

    // Down again: county -> township -> A; B directly.
    sync("township-node", &t, &net.hub.addr);
    sync("village-node", &a, &net.township.addr);
    sync("village-node", &b, &net.hub.addr);
    let shown = ok_json("village-node", &["case", "show", "--data", &a, &county_case, "--json"]);
    assert_eq!(shown["state"], "approved", "the county's decision reached the village through its township");

    // Every replica agrees with the county for its scope.
    let da = digest("village-node", &a, VILLAGE_A);
    assert_eq!(da, digest("township-node", &t, VILLAGE_A));
    assert_eq!(da, digest("county-hub", &hub, VILLAGE_A));
    assert_eq!(digest("village-node", &b, VILLAGE_B), digest("county-hub", &hub, VILLAGE_B));
    assert_eq!(da["cases"], 20);

    // The other path gives the same state: A syncing with the county directly has nothing to do.
    let direct = sync("village-node", &a, &net.hub.addr);
    assert_eq!((direct["sent_events"].as_u64(), direct["received_events"].as_u64()), (Some(0), Some(0)));
    // A Hello with nothing new: positions, and the latest seal of each chain
    // of either party's origins in the shared lanes (proof material for
    // telling two copies of a node apart).
    assert!(direct["bytes_sent"].as_u64().unwrap() < 450, "no-op sync sent {} bytes", direct["bytes_sent"]);

    // No village holds another village's cases; the township holds only its own subtree.
    let homes = |program: &str, d: &str| -> BTreeSet<String> {
        cases(program, d).iter().map(|c| c["home"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(homes("village-node", &a), BTreeSet::from([VILLAGE_A.to_string()]));
    assert_eq!(homes("village-node", &b), BTreeSet::from([VILLAGE_B.to_string()]));
    assert_eq!(homes("township-node", &t), BTreeSet::from([VILLAGE_A.to_string()]));

    // The merged ledger at the county: one JSON event per line, all of them.
    let ledger = ok("county-hub", &["ledger", "--data", &hub, "--json"]);
    let total = ok_json("county-hub", &["digest", "--data", &hub, "--json"])["events"].as_u64().unwrap();
    let lines: Vec<Value> =
        ledger.lines().map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line")).collect();
    // Every case event, and the county's global events (enrolments) besides.
    assert_eq!(lines.iter().filter(|l| l["lane"] != "*").count() as u64, total);
    assert!(lines.iter().any(|l| l["kind"] == "enrol"));
    for d in [&a, &b, &t, &hub] {
        assert_eq!(ok_json("village-node", &["verify", "--data", d, "--json"])["ok"], true);
    }
}

#[test]
fn concurrent_edits_at_village_and_county_both_survive() {
    let net = network();
    let (a, hub) = (data(&net, VILLAGE_A), data(&net, HUB));
    let v = ok_json(
        "village-node",
        &[
            "case",
            "new",
            "--data",
            &a,
            "--item",
            "V004",
            "--applicant",
            "张三",
            "--id-number",
            "11010519491231002X",
            "--as",
            "王芳",
            "--json",
        ],
    );
    let case = v["case_id"].as_str().unwrap().to_string();
    sync("village-node", &a, &net.hub.addr);
    ok(
        "village-node",
        &["case", "edit", "--data", &a, &case, "--field", "applicant", "--value", "张叁", "--as", "王芳"],
    );
    ok(
        "county-hub",
        &["case", "edit", "--data", &hub, &case, "--field", "applicant", "--value", "張三", "--as", "县窗口"],
    );
    sync("village-node", &a, &net.hub.addr);
    for (program, d) in [("village-node", &a), ("county-hub", &hub)] {
        let st = ok_json(program, &["case", "show", "--data", d, &case, "--json"]);
        assert_eq!(st["fields"]["applicant"], serde_json::json!(["张叁", "張三"]), "{program}");
        assert_eq!(st["conflicts"][0]["kind"], "concurrent_values");
    }
    assert_eq!(digest("village-node", &a, VILLAGE_A), digest("county-hub", &hub, VILLAGE_A));
}

#[test]
fn a_revoked_village_is_refused_everywhere() {
    let net = network();
    let (a, t, hub) = (data(&net, VILLAGE_A), data(&net, TOWNSHIP), data(&net, HUB));
    ok("county-sim", &["generate", "--data", &a, "--count", "2", "--as", "王芳"]);
    sync("village-node", &a, &net.township.addr);
    sync("township-node", &t, &net.hub.addr);
    let before = digest("county-hub", &hub, VILLAGE_A);
    ok("county-hub", &["revoke", "--data", &hub, "--node", VILLAGE_A, "--reason", "笔记本丢失", "--as", "县管理员"]);
    let err = fails("village-node", &["sync", "--data", &a, "--peer", &net.hub.addr]);
    assert!(err.contains("revoked") || err.contains("closed"), "{err}");
    // The thief works on and reaches the township, which has not heard yet…
    ok("county-sim", &["generate", "--data", &a, "--count", "2", "--seed", "9", "--as", "冒名者"]);
    sync("village-node", &a, &net.township.addr);
    // …but the county refuses what the township relays from a revoked node.
    let relay = sync_with_refusals("township-node", &t, &net.hub.addr);
    assert!(relay["quarantined_by_peer"].as_u64().unwrap() > 0, "{relay}");
    assert_eq!(digest("county-hub", &hub, VILLAGE_A), before, "nothing from after the revocation was applied");
    let q = ok_json("county-hub", &["quarantine", "list", "--data", &hub, "--json"]);
    assert!(q.as_array().unwrap().iter().any(|r| r["reason"].as_str().unwrap().contains("revoked")), "{q}");
    // The revocation has travelled to the township, which now refuses the village too.
    let err = fails("village-node", &["sync", "--data", &a, "--peer", &net.township.addr]);
    assert!(err.contains("revoked") || err.contains("closed"), "{err}");
    // Holding a revocation, the stores still verify, and it is no case.
    for (program, d) in [("county-hub", &hub), ("township-node", &t)] {
        assert_eq!(ok_json(program, &["verify", "--data", d, "--json"])["ok"], true, "{program}");
        assert!(cases(program, d).iter().all(|c| c["case_id"] != "*"));
    }
    // Another village of the same township is still served.
    let other = net.county.enrol("511421101002", "village-node");
    sync("village-node", s(&other), &net.township.addr);
}

#[test]
fn a_village_may_not_sync_with_another_township() {
    let net = network();
    let b = data(&net, VILLAGE_B);
    let err = fails("village-node", &["sync", "--data", &b, "--peer", &net.township.addr]);
    assert!(err.contains("does not sync with") || err.contains("closed"), "{err}");
    // The library says why as a kind a program can act on (issue 12).
    node::keystore::set_passphrase(system_tests::PASSPHRASE);
    let rt = runtime();
    let typed = rt.block_on(node::sync::sync_with(std::path::Path::new(&b), &net.township.addr, false));
    match typed {
        Err(node::Error::Peer(p)) => {
            assert_eq!(p.kind, node::error::PeerErrorKind::NotAdmitted, "{}", p.message);
            assert!(p.message.contains("does not sync with"), "{}", p.message);
        }
        other => panic!("expected a typed refusal, got {other:?}"),
    }
}

/// A sync over a slow, lossy link killed with SIGKILL in the middle, then
/// retried: nothing is lost and nothing duplicated.
#[test]
fn a_killed_sync_over_a_rural_link_resumes_without_loss() {
    let net = network();
    let (a, hub) = (data(&net, VILLAGE_A), data(&net, HUB));
    ok("county-sim", &["generate", "--data", &a, "--count", "1500", "--seed", "3", "--as", "王芳"]);
    let link = Server::start(
        "county-sim",
        &[
            "link",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &net.hub.addr,
            "--rtt-ms",
            "300",
            "--loss",
            "0.03",
            "--kbps",
            "1000",
        ],
    );
    let mut child = system_tests::cmd("village-node")
        .args(["sync", "--data", &a, "--peer", &link.addr, "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the hub has stored part of the work (a batch or more).
    let started = std::time::Instant::now();
    while digest("county-hub", &hub, VILLAGE_A)["events"].as_u64().unwrap() == 0
        && started.elapsed() < Duration::from_secs(30)
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = child.try_wait().unwrap().is_none();
    child.kill().ok();
    child.wait().unwrap();
    assert!(killed, "the sync finished before it could be killed; make the workload larger");

    // Retry over the same link until it completes (an attempt cut short by
    // the lossy link stores what it acknowledged; the next one goes on).
    let mut done = None;
    let mut partial = 0;
    for _ in 0..3 {
        // What the hub holds once it stores nothing more: the link still
        // delivers what the killed client had sent, and the hub stores
        // those batches after the kill (the retry then need not resend
        // them).
        partial = settled_count(&hub);
        let out = run("village-node", &["sync", "--data", &a, "--peer", &link.addr, "--json"]);
        if out.status.success() {
            done = Some(serde_json::from_slice::<Value>(&out.stdout).unwrap());
            break;
        }
    }
    let done = done.expect("sync over the rural link completed");
    let total = digest("village-node", &a, VILLAGE_A)["events"].as_u64().unwrap();
    // The hub may still store a batch it had received from the killed client
    // after `partial` was read; the retry must not resend what it stored.
    let sent = done["sent_events"].as_u64().unwrap();
    assert!(sent + partial >= total && sent < total, "the retry resent only what was missing: {sent} + {partial}");
    assert_eq!(digest("village-node", &a, VILLAGE_A), digest("county-hub", &hub, VILLAGE_A));
    assert_eq!(ok_json("county-hub", &["verify", "--data", &hub, "--json"])["ok"], true);
}

/// The hub's count of a village's events once it has not changed for a
/// second (at most 20 s).
fn settled_count(hub: &str) -> u64 {
    let count = || digest("county-hub", hub, VILLAGE_A)["events"].as_u64().unwrap();
    let (mut last, started) = (count(), std::time::Instant::now());
    while started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_secs(1));
        let now = count();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Tampered and forged events end in quarantine, are never applied, and the
/// rest of the batch goes through.
#[test]
fn tampered_and_forged_events_are_quarantined() {
    let net = network();
    let (a, b, hub) = (data(&net, VILLAGE_A), data(&net, VILLAGE_B), data(&net, HUB));
    ok("county-sim", &["generate", "--data", &a, "--count", "3", "--seed", "4", "--as", "王芳"]);
    ok("county-sim", &["generate", "--data", &b, "--count", "3", "--seed", "5", "--as", "李娜"]);
    // Tamper with A's first event on disk, as a thief might: the rows are
    // kept consistent (the stored hashes of the event and of every later
    // one of its chain, or A's own check would refuse to send them), so
    // only the chain and the seal give it away.
    let conn = rusqlite::Connection::open(net.county.data(VILLAGE_A).join("node.db")).unwrap();
    let mut e = system_tests::rows::stored_event(&conn, VILLAGE_A, 1);
    e.actor = "冒名者".into();
    system_tests::rows::rewrite_stored_event(&conn, &e);
    // Forge B's seal: sign its chain head with A's key instead of B's.
    let bundle: Value = serde_json::from_str(
        &std::fs::read_to_string(net.county.root.path().join(format!("{VILLAGE_A}.bundle.json"))).unwrap(),
    )
    .unwrap();
    let a_key: [u8; 32] = hex::decode(bundle["secrets"]["signing_key"].as_str().unwrap()).unwrap().try_into().unwrap();
    let conn_b = rusqlite::Connection::open(net.county.data(VILLAGE_B).join("node.db")).unwrap();
    let head = system_tests::rows::last_stored_event(&conn_b, VILLAGE_B);
    let forged = proto::Seal::sign(&ed25519_dalek::SigningKey::from_bytes(&a_key), &head);
    conn_b.execute("UPDATE seals SET signature = ?1 WHERE origin = ?2", (forged.signature, VILLAGE_B)).unwrap();
    drop((conn, conn_b));

    let out_a = sync_with_refusals("village-node", &a, &net.hub.addr);
    assert!(out_a["quarantined_by_peer"].as_u64().unwrap() > 0, "the village is told: {out_a}");
    sync_with_refusals("village-node", &b, &net.hub.addr);
    let q = ok_json("county-hub", &["quarantine", "list", "--data", &hub, "--json"]);
    let reasons: Vec<&str> = q.as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("do not end at the origin's seal")),
        "the altered event breaks A's chain, which no longer ends at A's seal: {reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("not signed by")), "{reasons:?}");
    let kinds: Vec<&str> = q.as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"broken_chain") && kinds.contains(&"bad_seal"), "typed kinds beside the text: {kinds:?}");
    // Syncing again does not pile up duplicate entries.
    let before = q.as_array().unwrap().len();
    sync_with_refusals("village-node", &b, &net.hub.addr);
    let again = ok_json("county-hub", &["quarantine", "list", "--data", &hub, "--json"]);
    assert_eq!(again.as_array().unwrap().len(), before);
    // None of it was applied.
    assert_eq!(digest("county-hub", &hub, VILLAGE_A)["events"], 0);
    assert_eq!(digest("county-hub", &hub, VILLAGE_B)["events"], 0);
}

/// Issue 11, finding 5: a laptop whose clock runs a day ahead is told so,
/// its work is accepted (not refused) and flagged, the county's clock is
/// not dragged forward, staff are warned before they write again, and once
/// the clock is fixed work flows at the next sync; `verify` finds nothing
/// wrong anywhere.
#[test]
fn a_village_with_a_wrong_clock_is_warned_and_nothing_is_lost() {
    let net = network();
    let (a, hub) = (data(&net, VILLAGE_A), data(&net, HUB));
    let skewed = |args: &[&str]| {
        let program = if args[0] == "generate" { "county-sim" } else { "village-node" };
        let out = system_tests::cmd(program)
            .args(args)
            .env("CASE_NODE_CLOCK_SKEW_MS", (24 * 3600 * 1000).to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    skewed(&["generate", "--data", &a, "--count", "2", "--as", "王芳"]);
    let (out, err) = skewed(&["sync", "--data", &a, "--peer", &net.hub.addr, "--json"]);
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(summary["clock_warning"].as_str().unwrap().contains("clock"), "{summary}");
    assert!(err.contains("WARNING"), "staff see the warning: {err:?}");
    assert_eq!(summary["quarantined_by_peer"], 0, "nothing is refused for its stamp");
    assert_eq!(digest("county-hub", &hub, VILLAGE_A), digest("village-node", &a, VILLAGE_A));
    // The next write is preceded by a warning naming the offset.
    let (_, err) = skewed(&["generate", "--data", &a, "--count", "1", "--seed", "8", "--as", "王芳"]);
    assert!(err.contains("clock was 1 days ahead") || err.contains("clock was 24 hours ahead"), "{err}");
    // The county's own next event is stamped by its own clock.
    let id = cases("county-hub", &hub)[0]["case_id"].as_str().unwrap().to_string();
    ok(
        "county-hub",
        &["case", "edit", "--data", &hub, &id, "--field", "note", "--value", "县复核", "--as", "县管理员"],
    );
    let ledger = ok("county-hub", &["ledger", "--data", &hub, "--json"]);
    let hub_event: Value = ledger
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["origin"] == HUB && e["kind"] == "set_field")
        .unwrap();
    let stamp: u64 = hub_event["hlc"].as_str().unwrap().split('.').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(stamp < now + 5 * 60 * 1000, "the county's clock was dragged a day ahead: {stamp} vs {now}");
    // The clock is fixed: new work flows at the next sync, nothing is lost.
    ok("county-sim", &["generate", "--data", &a, "--count", "1", "--seed", "9", "--as", "王芳"]);
    let after = sync("village-node", &a, &net.hub.addr);
    assert!(after["clock_warning"].is_null(), "{after}");
    assert_eq!(digest("county-hub", &hub, VILLAGE_A)["cases"], 4);
    assert_eq!(digest("county-hub", &hub, VILLAGE_A), digest("village-node", &a, VILLAGE_A));
    for (program, d) in [("county-hub", &hub), ("village-node", &a)] {
        assert_eq!(ok_json(program, &["verify", "--data", d, "--json"])["ok"], true, "{program}");
    }
}

/// A township serving with --upstream relays its villages' work to the
/// county on its own, every --every seconds.
#[test]
fn a_township_relays_to_the_county_on_its_own() {
    let net = network();
    let (a, hub) = (data(&net, VILLAGE_A), data(&net, HUB));
    let t2 = net.county.enrol("511421103", "township-node");
    let v2 = net.county.enrol("511421103001", "village-node");
    let _relay = Server::start(
        "township-node",
        &["serve", "--data", s(&t2), "--listen", "127.0.0.1:0", "--upstream", &net.hub.addr, "--every", "1"],
    );
    let relay_addr = _relay.addr.clone();
    ok("county-sim", &["generate", "--data", s(&v2), "--count", "5", "--as", "王芳"]);
    sync("village-node", s(&v2), &relay_addr);
    let want = digest("village-node", s(&v2), "511421103001");
    let mut got = Value::Null;
    for _ in 0..40 {
        got = digest("county-hub", &hub, "511421103001");
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(got, want, "the township did not relay to the county");
    drop(a);
}

/// A village still on the previous release (it offers only sync message
/// format version 1) syncs both ways through a current township, which
/// relays to the county in the newest format: the versions agree per
/// connection and every replica ends the same (issue 12).
#[test]
fn a_village_on_the_previous_format_syncs_with_the_current_release() {
    let net = network();
    let (a, t, hub) = (data(&net, VILLAGE_A), data(&net, TOWNSHIP), data(&net, HUB));
    ok("county-sim", &["generate", "--data", &a, "--count", "20", "--seed", "1", "--as", "王芳"]);
    node::keystore::set_passphrase(system_tests::PASSPHRASE);
    let old_village = |peer: &str| {
        let rt = runtime();
        rt.block_on(node::sync::sync_with_versions(std::path::Path::new(&a), peer, false, &[1])).unwrap()
    };
    let up = old_village(&net.township.addr);
    assert_eq!(up.format_version, 1, "the township answers the previous release in its format");
    assert!(up.stats.sent_events >= 20);
    assert_eq!((up.stats.quarantined_by_peer, up.stats.held_by_peer), (0, 0));
    let relay = sync("township-node", &t, &net.hub.addr);
    assert_eq!(relay["format_version"], proto::wire::NEWEST, "two current nodes speak the newest format");

    // A county decision travels back down to the old village.
    let case = cases("county-hub", &hub)
        .iter()
        .find(|c| c["handler"] == HUB && c["state"] == "forwarded")
        .map(|c| c["case_id"].as_str().unwrap().to_string())
        .expect("a county item forwarded by the village");
    ok("county-hub", &["case", "accept", "--data", &hub, &case, "--as", "县审批科"]);
    sync("township-node", &t, &net.hub.addr);
    let down = old_village(&net.township.addr);
    assert_eq!((down.format_version, down.stats.quarantined_events), (1, 0));
    assert!(down.stats.received_events >= 1);
    let shown = ok_json("village-node", &["case", "show", "--data", &a, &case, "--json"]);
    assert_eq!(shown["state"], "accepted");
    let da = digest("village-node", &a, VILLAGE_A);
    assert_eq!(da, digest("township-node", &t, VILLAGE_A));
    assert_eq!(da, digest("county-hub", &hub, VILLAGE_A));
}

/// A server opens the node once per process and per session running at
/// once, not once per session (issue 12): four sessions one after the
/// other, each seeing what the one before stored.
#[test]
fn a_server_opens_its_ledger_once_for_many_sessions() {
    let county = County::new();
    let a = county.enrol(VILLAGE_A, "village-node");
    node::keystore::set_passphrase(system_tests::PASSPHRASE);
    let rt = runtime();
    rt.block_on(async {
        let server = node::sync::start_server(&county.hub(), "127.0.0.1:0").await.unwrap();
        let addr = server.addr.to_string();
        for round in 0..4u32 {
            ok(
                "county-sim",
                &["generate", "--data", s(&a), "--count", "2", "--seed", &round.to_string(), "--as", "王芳"],
            );
            let summary = node::sync::sync_with(&a, &addr, false).await.unwrap();
            assert!(summary.stats.sent_events >= 2, "round {round}");
            assert_eq!((summary.stats.quarantined_by_peer, summary.stats.held_by_peer), (0, 0), "round {round}");
        }
        assert_eq!(server.ledgers_opened(), 1, "one ledger for four sessions one after the other");
    });
    assert_eq!(digest("county-hub", s(&county.hub()), VILLAGE_A)["cases"], 8);
}

/// A county with village A enrolled holding two generated cases, this
/// process's passphrase set to open its stores.
fn village_a_with_two_cases() -> (County, std::path::PathBuf) {
    let county = County::new();
    let a = county.enrol(VILLAGE_A, "village-node");
    ok("county-sim", &["generate", "--data", s(&a), "--count", "2", "--seed", "1", "--as", "王芳"]);
    node::keystore::set_passphrase(system_tests::PASSPHRASE);
    (county, a)
}

/// A session that stores nothing writes nothing at the server (issue 9: a
/// no-op sync committed the peer's last contact, a write and a durable
/// commit per session at 9 a.m.); the contacts are written together, at
/// the latest when the server stops.
#[test]
fn a_session_that_stores_nothing_writes_nothing_at_the_server() {
    let (county, a) = village_a_with_two_cases();
    let db = county.hub().join(node::store::DB_FILE);
    let watcher = rusqlite::Connection::open(&db).unwrap();
    let version = || watcher.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)).unwrap();
    let contact =
        || watcher.query_row("SELECT last_ms FROM contacts WHERE node = ?1", [VILLAGE_A], |r| r.get::<_, i64>(0)).ok();
    let rt = runtime();
    rt.block_on(async {
        // Contacts written only at the end (not by the 5-second tick).
        let limits = node::sync::Limits { contacts_every: Duration::from_secs(3600), ..Default::default() };
        let server = node::sync::start_server_with(&county.hub(), "127.0.0.1:0", limits).await.unwrap();
        let addr = server.addr.to_string();
        let first = node::sync::sync_with(&a, &addr, false).await.unwrap();
        assert!(first.stats.sent_events >= 2, "the village's cases go up");
        let before = version();
        // Another writer holds the store's write lock meanwhile: a session
        // that wrote would wait for it.
        watcher.execute_batch("BEGIN IMMEDIATE").unwrap();
        for _ in 0..3 {
            let again = tokio::time::timeout(Duration::from_secs(20), node::sync::sync_with(&a, &addr, false))
                .await
                .expect("a no-op session does not wait for the write lock")
                .unwrap();
            assert_eq!((again.stats.sent_events, again.stats.received_events), (0, 0));
        }
        watcher.execute_batch("ROLLBACK").unwrap();
        assert_eq!(version(), before, "no-op sessions committed nothing at the server");
        drop(server);
    });
    assert!(contact().is_some(), "the village's last contact is written when the server stops");
}

/// A session that brings nothing new runs wholly on the server's worker
/// (issue 9): handing its small steps to another thread and back (the
/// frames, the Hello, the file phase's start and end) was a quarter of a
/// no-op session's CPU at the hub. A session with batches still hands
/// their checks off.
#[test]
fn a_no_op_session_hands_nothing_off_the_servers_worker() {
    let (county, a) = village_a_with_two_cases();
    let rt = runtime();
    rt.block_on(async {
        let server = node::sync::start_server(&county.hub(), "127.0.0.1:0").await.unwrap();
        let addr = server.addr.to_string();
        let first = node::sync::sync_with(&a, &addr, false).await.unwrap();
        assert!(first.stats.sent_events >= 2, "the village's cases go up");
        let after_first = server.handed_off();
        assert!(after_first > 0, "a session with batches hands their checks off the worker");
        for _ in 0..3 {
            let again = node::sync::sync_with(&a, &addr, false).await.unwrap();
            assert_eq!((again.stats.sent_events, again.stats.received_events), (0, 0));
        }
        assert_eq!(server.handed_off(), after_first, "no-op sessions handed work off the worker");
    });
}

/// A Hello is handled on the server's one worker only when it lists a few
/// chains, and decoded there only when it expands to a few KiB: a peer's
/// Hello of 5,000 copies of one seal compresses to a few hundred bytes,
/// and comparing them stalled every other session for seconds (found by
/// review). Both now go to another thread.
#[test]
fn a_hello_listing_many_chains_is_handled_off_the_servers_worker() {
    use proto::event::{Hash, KeyId, Lane, Seal};
    use proto::sync::Message;
    use proto::NodeId;
    let (county, a) = village_a_with_two_cases();
    let hub_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = hub_rt.block_on(node::sync::start_server(&county.hub(), "127.0.0.1:0")).unwrap();
    let addr = server.addr;
    rt.block_on(node::sync::sync_with(&a, &addr.to_string(), false)).unwrap();

    let bundle = node::Bundle::read(&county.root.path().join(format!("{VILLAGE_A}.bundle.json"))).unwrap();
    let key: [u8; 32] = hex::decode(&bundle.secrets.signing_key).unwrap().try_into().unwrap();
    let key = KeyId::of(&ed25519_dalek::SigningKey::from_bytes(&key).verifying_key());
    let db = rusqlite::Connection::open(a.join(node::store::DB_FILE)).unwrap();
    // What the village holds: the hub has nothing to send back.
    let held: Vec<(Lane, NodeId, u64)> = db
        .prepare("SELECT lane, origin, MAX(pos) FROM events GROUP BY lane, origin")
        .unwrap()
        .query_map([], |r| {
            let (lane, origin, pos): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let lane = if lane == "*" { Lane::Global } else { Lane::Home(NodeId::new(lane)) };
            Ok((lane, NodeId::new(origin), pos as u64))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let own = held.iter().find(|(_, o, _)| o.is_incarnation_of(&NodeId::new(VILLAGE_A))).unwrap().1.clone();
    let seal = Seal {
        origin: own,
        lane: Lane::Home(NodeId::new(VILLAGE_A)),
        pos: 1,
        seq: 1,
        head: Hash([9; 32]),
        key,
        signature: vec![0; 64],
    };
    // A Hello compressed, and what follows it in its frame.
    let packed = |hello: &Message, tail: &[u8]| -> Vec<u8> {
        let mut body = zstd::bulk::compress(&hello.encode(), 19).unwrap();
        body.extend_from_slice(tail);
        body
    };
    // Hand-overs of a session opened by hand that sends a Hello's frame and
    // reads the hub's Hello and what it sends after handling ours.
    let session = |body: Vec<u8>| -> usize {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let before = server.handed_off();
        rt.block_on(async {
            let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            let cfg = node::sync::client_config(&bundle.identity, &bundle.secrets).unwrap();
            let conn = ep.connect_with(cfg, addr, "peer.node").unwrap().await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&frame).await.unwrap();
            for _ in 0..2 {
                let mut len = [0u8; 4];
                recv.read_exact(&mut len).await.unwrap();
                let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
                recv.read_exact(&mut buf).await.unwrap();
            }
            conn.close(0u32.into(), b"");
        });
        server.handed_off() - before
    };
    // A session cut off like these drops its ledger, and the next opens one
    // (a hand-over): the second honest one counts as the stalling one will.
    let hello = Message::Hello { wall_ms: 0, positions: held.clone(), heads: vec![seal.clone()] };
    session(packed(&hello, &[]));
    let honest = session(packed(&hello, &[]));
    let many = Message::Hello { wall_ms: 0, positions: held.clone(), heads: vec![seal.clone(); 5_000] };
    let wire = packed(&many, &[]).len();
    assert!(wire < 4096, "the Hello of 5,000 seals is small on the wire ({wire} bytes)");
    assert_eq!(session(packed(&many, &[])), honest + 2, "its decoding and its handling are handed off the worker");
    // A few seals, each a signature check when it differs from what is
    // held: handled off the worker, decoded in place.
    let few = Message::Hello { wall_ms: 0, positions: held, heads: vec![seal; 8] };
    assert_eq!(session(packed(&few, &[])), honest + 1, "eight seals are checked off the worker");
    // An honest Hello followed by 20 KiB of skippable zstd frames: every
    // frame is read in turn, whatever the first one states.
    let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18];
    skippable.extend_from_slice(&(20u32 * 1024).to_le_bytes());
    skippable.resize(8 + 20 * 1024, 0);
    assert_eq!(session(packed(&hello, &skippable)), honest + 1, "a long frame is decoded off the worker");
}

/// The county's receipts at the end of a peer's files are made on the
/// server's worker only when they are a few seeks and one signature: a
/// village's one lane with nothing missing; not a township's lanes, nor a
/// lane whose missing list a peer can make long (found by review).
#[test]
fn the_countys_receipts_are_quick_only_for_one_lane_with_nothing_missing() {
    let county = County::new();
    node::keystore::set_passphrase(system_tests::PASSPHRASE);
    let hub = node::Ledger::open(&county.hub()).unwrap();
    let village = proto::NodeId::new(VILLAGE_A);
    assert!(hub.receipts_are_quick(&village).unwrap(), "a village's one lane, nothing missing");
    assert!(!hub.receipts_are_quick(&proto::NodeId::new(&VILLAGE_A[..9])).unwrap(), "a township's lanes");
    let other = rusqlite::Connection::open(county.hub().join(node::store::DB_FILE)).unwrap();
    other
        .execute(
            "INSERT INTO file_refs (hash, case_id, home, size) VALUES (?1, 'c', ?2, 10)",
            rusqlite::params![vec![7u8; 32], VILLAGE_A],
        )
        .unwrap();
    assert!(!hub.receipts_are_quick(&village).unwrap(), "a file of the lane missing at the county");
}

/// A session's summary reports what it took of the link (datagrams and
/// bytes each way), and a session that has nothing to move costs a metered
/// village link a few kilobytes: no path-MTU search, whose padded probes
/// and their acknowledgements made a no-op session 39 datagrams and 16.7 KB
/// instead of 25 and 5.3 KB.
#[test]
fn a_no_op_session_costs_the_link_a_few_kilobytes() {
    let (county, a) = village_a_with_two_cases();
    let rt = runtime();
    rt.block_on(async {
        let server = node::sync::start_server(&county.hub(), "127.0.0.1:0").await.unwrap();
        let addr = server.addr.to_string();
        let first = node::sync::sync_with(&a, &addr, false).await.unwrap();
        assert!(first.link.datagrams_sent > 2 && first.link.datagrams_received > 2, "{:?}", first.link);
        assert!(first.link.udp_bytes_sent > first.bytes_sent, "{:?}", first.link);
        let again = node::sync::sync_with(&a, &addr, false).await.unwrap();
        assert_eq!(again.stats.sent_events + again.stats.received_events, 0, "{:?}", again.stats);
        let link = &again.link;
        assert_eq!((link.mtu_probes, link.path_mtu), (0, 1200), "{link:?}");
        assert!(link.udp_bytes_sent + link.udp_bytes_received < 8_000, "{link:?}");
    });
}

/// `serve` runs under a bounded allocator (issue 9): two glibc arenas and
/// a fixed mmap threshold, so that freed session buffers do not stay
/// resident in per-thread arenas (a hub receiving files crept 42 → 58 MiB
/// over six rounds without).
#[test]
fn a_server_runs_under_a_bounded_allocator() {
    let county = County::new();
    let hub = Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let environ = std::fs::read(format!("/proc/{}/environ", hub.child.id())).unwrap();
    let vars: Vec<String> = environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    for (k, v) in node::cli::ALLOCATOR_ENV {
        assert!(vars.contains(&format!("{k}={v}")), "{k} not set for the server");
    }
}
