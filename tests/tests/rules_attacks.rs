//! 电子证照 attacked by a forger holding a genuine node key (a stolen
//! laptop's bundle, or a hostile window): licences signed by hand and
//! checked with `verify-licence` at a window, as a citizen would present
//! them.

use proto::licence::Terms;
use system_tests::{fails, id_number, ok, ok_json, s, County, Server};

const TOWNSHIP: &str = "511421101";
const VILLAGE: &str = "511421101001";
const OTHER_VILLAGE: &str = "511421101002";

/// The signing key in a node's enrolment bundle (what a stolen laptop or a
/// hostile window holds).
fn key_of(county: &County, node: &str) -> ed25519_dalek::SigningKey {
    let bundle = county.root.path().join(format!("{node}.bundle.json"));
    node::identity::Bundle::read(&bundle).unwrap().secrets.signing_key().unwrap()
}

fn write(dir: &tempfile::TempDir, name: &str, terms: Terms, key: &ed25519_dalek::SigningKey) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, serde_json::to_vec(&terms.sign(key)).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

/// A township case taken, accepted, approved and issued, with its licence.
fn issued_case(t: &str, serial: u32, out: &str) -> (String, Terms) {
    let id = id_number(serial);
    let args = ["case", "new", "--data", t, "--item", "T001", "--applicant", "周杰", "--id-number", &id];
    let case = ok_json(
        "township-node",
        &[&args[..], &["--material", "居民身份证", "--material", "申请表", "--as", "李娜", "--json"]].concat(),
    )["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    for step in ["accept", "approve", "issue"] {
        ok("township-node", &["case", step, "--data", t, &case, "--as", "李娜"]);
    }
    ok("township-node", &["case", "licence", "--data", t, &case, "--out", out]);
    let licence: proto::licence::Licence = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    (case, licence.terms)
}

/// After the county revokes a key, a licence under it holds only for a 出证
/// event the county vouched for. But the licence's chain position is only
/// claimed: the thief signs a licence for a case issued after the
/// revocation (or never issued), names a position at or before the
/// revocation's heads, and every window takes it as valid.
#[test]
fn a_revoked_key_cannot_sign_a_licence_by_claiming_an_old_position() {
    let county = County::new();
    let t = county.enrol(TOWNSHIP, "township-node");
    let v = county.enrol(VILLAGE, "village-node");
    let hub = Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let (t, v, h) = (s(&t).to_string(), s(&v).to_string(), s(&county.hub()).to_string());
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    let (_, good) = issued_case(&t, 1, &file("good.json"));
    ok("township-node", &["sync", "--data", &t, "--peer", &hub.addr]);
    ok("county-hub", &["revoke", "--data", &h, "--node", TOWNSHIP, "--reason", "笔记本丢失", "--as", "陈静"]);
    ok("village-node", &["sync", "--data", &v, "--peer", &hub.addr]);

    // On the stolen laptop: a case issued after the revocation. Its own
    // licence is refused…
    let (later, terms) = issued_case(&t, 2, &file("after.json"));
    let err = fails("village-node", &["verify-licence", "--data", &v, &file("after.json")]);
    assert!(err.contains("revoked"), "{err}");
    // …so the thief signs it again, claiming the first licence's place in
    // the chain, and a fabricated one for a case that was never taken.
    let key = key_of(&county, TOWNSHIP);
    let moved = Terms { event: good.event.clone(), lane: good.lane.clone(), pos: good.pos, ..terms.clone() };
    let never = Terms {
        case: proto::CaseId(format!("{TOWNSHIP}-999")),
        holder: "王*".into(),
        event: good.event.clone(),
        lane: good.lane.clone(),
        pos: 1,
        ..terms
    };
    for (name, forged) in [("moved.json", moved), ("never.json", never)] {
        let path = write(&dir, name, forged, &key);
        // Neither the village (which does not hold the township's case) nor
        // the county (which does) takes it.
        for (program, data) in [("village-node", &v), ("county-hub", &h)] {
            let out = system_tests::run(program, &["verify-licence", "--data", data, &path]);
            assert!(
                !out.status.success(),
                "{name}: a licence signed after the revocation (case {later}) verifies at {program}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// A node may act only on cases homed within its subtree; a licence is
/// checked only for a key the county enrolled for its issuer. So a hostile
/// village, with its own genuine key, signs a licence for another
/// village's case (and item) in its own name, and it verifies: nothing
/// checks, offline, that the issuer could ever have issued that case.
#[test]
fn a_licence_names_a_case_its_issuer_may_act_on() {
    let county = County::new();
    // The other village is enrolled first, so the window knows its key.
    county.enrol(OTHER_VILLAGE, "village-node");
    let v = county.enrol(VILLAGE, "village-node");
    let v = s(&v).to_string();
    let dir = tempfile::tempdir().unwrap();
    let other = proto::NodeId::new(OTHER_VILLAGE);
    let forged = Terms {
        case: proto::CaseId(format!("{VILLAGE}-7")),
        item: "T001".into(),
        item_name: "营业执照".into(),
        holder: "周*".into(),
        holder_id: "511421********0027".into(),
        result: "营业执照".into(),
        issuer: other.clone(),
        issued: proto::calendar::Day::of_ms(1_772_380_800_000),
        valid_until: None,
        event: proto::EventId { origin: other.clone(), seq: 3 },
        event_hash: proto::Hash::ZERO,
        lane: proto::Lane::Home(proto::NodeId::new(VILLAGE)),
        pos: 1,
    };
    let path = write(&dir, "forged.json", forged, &key_of(&county, OTHER_VILLAGE));
    let out = system_tests::run("village-node", &["verify-licence", "--data", &v, &path]);
    assert!(
        !out.status.success(),
        "{OTHER_VILLAGE} signed a licence for {VILLAGE}'s case and it verifies: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
