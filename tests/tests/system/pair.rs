//! Two real ledgers (SQLite files) joined by an in-memory session, in one
//! process: the node's own sync path (`Session` and `Ledger::receive`)
//! without QUIC, like quinn's `Pair`. Fast enough to try
//! many orders of work; the whole-system tests cover the transport.

use county_hub::hub::{self, SIMULATION_PASSPHRASE};
use node::keystore::{self, Kdf};
use node::ledger::{Ledger, NewCase};
use node::sync::SqliteReplica;
use proto::sync::{Message, Session};
use proto::{NodeId, Step};
use std::path::Path;

const VILLAGE: &str = "511421101001";
const TOWNSHIP: &str = "511421101";

fn county(root: &Path) -> (Ledger, Ledger, Ledger) {
    keystore::set_passphrase(SIMULATION_PASSPHRASE);
    let hub_dir = root.join("hub");
    hub::init_quiet(&hub_dir, None, None, "127.0.0.1:0", true, SIMULATION_PASSPHRASE, Kdf::SIMULATION).unwrap();
    let nodes = [NodeId::new(TOWNSHIP), NodeId::new(VILLAGE)];
    hub::enrol_into(&hub_dir, &nodes, root, SIMULATION_PASSPHRASE, Kdf::SIMULATION).unwrap();
    (
        Ledger::open(&hub_dir).unwrap(),
        Ledger::open(&root.join(TOWNSHIP)).unwrap(),
        Ledger::open(&root.join(VILLAGE)).unwrap(),
    )
}

/// One session between `a` (client) and `b`, messages passed in memory,
/// every received batch checked and stored as the node does.
fn pair(a: &mut Ledger, b: &mut Ledger) {
    let now = node::wall_clock_ms();
    let (ta, tb) = (a.topology().clone(), b.topology().clone());
    let (ma, mb) = (a.me().clone(), b.me().clone());
    let mut sa = Session::start(&SqliteReplica(a.store().conn()), &ta, &ma, &mb, now).unwrap();
    let mut sb = Session::start(&SqliteReplica(b.store().conn()), &tb, &mb, &ma, now).unwrap();
    for _ in 0..1000 {
        let moved = pump(a, b, &mut sa, &mut sb, now) | pump(b, a, &mut sb, &mut sa, now);
        if sa.is_finished() && sb.is_finished() {
            return;
        }
        assert!(moved, "the session stalled");
    }
    panic!("the session did not end");
}

/// Moves every message `from` has for `to`, storing what `to` receives.
fn pump(from: &Ledger, to: &mut Ledger, sfrom: &mut Session, sto: &mut Session, now: u64) -> bool {
    let (topo, me, peer) = (to.topology().clone(), to.me().clone(), from.me().clone());
    let mut moved = false;
    while let Some(msg) = sfrom.poll_transmit(&SqliteReplica(from.store().conn())).unwrap() {
        moved = true;
        let msg = Message::decode(&msg.encode()).unwrap();
        let batch = sto.handle(msg, &SqliteReplica(to.store().conn()), &topo, now).unwrap();
        if let Some((n, segments)) = batch {
            let verdict = to.receive(&peer, segments, now).unwrap();
            assert!(verdict.quarantined.is_empty(), "{me} refused honest input: {:?}", verdict.quarantined);
            sto.batch_stored(n, &verdict);
        }
    }
    moved
}

fn new_case(l: &mut Ledger, applicant: &str, serial: u32) -> proto::CaseId {
    let input = NewCase {
        item: "V001".into(),
        applicant: applicant.into(),
        id_number: system_tests::id_number(serial),
        phone: None,
        address: None,
        bundle: None,
        agent: None,
        materials: vec!["居民身份证".into(), "申请表".into(), "户口簿".into()],
    };
    l.new_case("王芳", input).unwrap()
}

/// A village's case goes up through its township to the county and the
/// township's decision comes back; every ledger ends with the same case.
#[test]
fn two_ledgers_in_one_process_agree_through_the_tiers() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut township, mut village) = county(root.path());
    let case = new_case(&mut village, "张三", 1);
    village.step("王芳", &case, Step::PrereviewPass, "").unwrap();
    village.step("王芳", &case, Step::Forward { to: NodeId::new("") }, "").unwrap();
    pair(&mut village, &mut township);
    for step in [Step::Accept, Step::Approve, Step::Issue] {
        township.step("镇窗口", &case, step, "").unwrap();
    }
    pair(&mut township, &mut hub);
    pair(&mut village, &mut hub);
    for l in [&hub, &township, &village] {
        assert_eq!(l.case(&case).unwrap().state.name(), "issued", "at {}", l.me());
    }
    let digest = |l: &Ledger| l.digest(Some(&NodeId::new(VILLAGE))).unwrap();
    assert_eq!(digest(&hub), digest(&village));
    assert_eq!(digest(&township), digest(&village));
    // Nothing new: a second session moves nothing.
    pair(&mut village, &mut township);
    assert_eq!(digest(&township), digest(&village));
}

/// The county revokes a village's key while a served session stores the
/// village's newer events (checked while the key was live, stored after
/// the administrator's cut was read): past the cut, they end in
/// quarantine, not in the county's ledger.
#[test]
fn events_stored_after_the_cut_was_read_do_not_outlive_the_revocation() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, _township, mut village) = county(root.path());
    let v = NodeId::new(VILLAGE);
    new_case(&mut village, "张三", 1);
    pair(&mut village, &mut hub);
    // The administrator asks: the cut is what the hub holds now.
    let live = node::store::live_keys(hub.store().conn(), &v).unwrap();
    let upto = node::store::heads_of(hub.store().conn(), &v).unwrap();
    let (lane, _, cut, _) = upto.iter().find(|(_, o, _, _)| o == &v).cloned().unwrap();
    // Meanwhile a session stores the village's next case.
    new_case(&mut village, "李四", 2);
    pair(&mut village, &mut hub);
    assert!(node::store::hash_at(hub.store().conn(), &v, &lane, cut + 1).unwrap().is_some());
    hub.revoke_at("县管理员", &v, "笔记本遗失", live, upto).unwrap();
    assert_eq!(node::store::hash_at(hub.store().conn(), &v, &lane, cut + 1).unwrap(), None, "kept past the cut");
    assert_eq!(hub.cases(None, Some(&v)).unwrap().len(), 1, "only the case the county held when it revoked");
}
