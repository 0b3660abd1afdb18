//! Property tests of the case fold and the hash chain: order and duplication
//! do not matter, concurrent edits survive, invalid transitions are kept and
//! flagged, tampering and equivocation are detected.

use crdts::VClock;
use proptest::prelude::*;
use proto::event::{verify_chain, ChainTip, Create, FieldValue};
use proto::fold::Conflict;
use proto::workflow::State;
use proto::{fold_case, Body, CaseId, Event, EventId, Hash, Hlc, Lane, NodeId, Step, Tier};
use std::collections::BTreeMap;

/// A tiny world: three origins that author events on one case from their
/// own partial view of it, and exchange events now and then.
struct World {
    case: CaseId,
    origins: Vec<NodeId>,
    heads: BTreeMap<NodeId, (u64, Hash)>,
    known: Vec<Vec<Event>>,
    wall: u64,
}

impl World {
    fn new() -> World {
        let origins = vec![NodeId::new("511421101001"), NodeId::new("511421101"), NodeId::new("511421")];
        let case = CaseId::mint(&origins[0], 1);
        let mut w =
            World { case, origins: origins.clone(), heads: BTreeMap::new(), known: vec![vec![]; 3], wall: 1_000 };
        let create = Body::Create(Create {
            item: "V001".into(),
            item_name: "临时救助申请".into(),
            catalogue_version: 1,
            accepted_at: vec![Tier::Village, Tier::Township],
            decided_by: Tier::County,
            promised_days: 5,
            fields: vec![("applicant".into(), FieldValue::Text("张三".into()))],
            materials: vec!["身份证".into()],
        });
        w.author(0, create);
        w
    }

    fn author(&mut self, who: usize, body: Body) -> Event {
        let origin = self.origins[who].clone();
        let (seq, prev) = self.heads.get(&origin).cloned().unwrap_or((0, Hash::ZERO));
        let ctx = fold_case(&self.case, &self.known[who]).map(|s| s.context()).unwrap_or_else(VClock::new);
        let max_known = self.known[who].iter().map(|e| e.hlc).max().unwrap_or_default();
        self.wall += 1;
        let hlc = Hlc { wall_ms: self.wall.max(max_known.wall_ms + 1), logical: 0 };
        let e = Event {
            id: EventId { origin: origin.clone(), seq: seq + 1 },
            // One case, so one lane: positions follow seqs.
            lane: Lane::Home(self.origins[0].clone()),
            pos: seq + 1,
            prev,
            hlc,
            actor: format!("staff{who}"),
            case: self.case.clone(),
            context: ctx,
            body,
        };
        self.heads.insert(origin, (seq + 1, e.hash()));
        self.known[who].push(e.clone());
        e
    }

    fn exchange(&mut self, a: usize, b: usize) {
        let mut all: Vec<Event> = self.known[a].iter().chain(&self.known[b]).cloned().collect();
        all.sort_by(|x, y| x.id.cmp(&y.id));
        all.dedup_by(|x, y| x.id == y.id);
        self.known[a] = all.clone();
        self.known[b] = all;
    }

    fn all_events(&self) -> Vec<Event> {
        let mut all: Vec<Event> = self.known.iter().flatten().cloned().collect();
        all.sort_by(|x, y| x.id.cmp(&y.id));
        all.dedup_by(|x, y| x.id == y.id);
        all
    }
}

#[derive(Debug, Clone)]
enum Action {
    Edit(usize, u8),
    AddMaterial(usize, u8),
    RemoveMaterial(usize, u8),
    Step(usize, u8),
    Rate(usize, u8),
    Exchange(usize, usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0..3usize, 0..4u8).prop_map(|(w, v)| Action::Edit(w, v)),
        (0..3usize, 0..3u8).prop_map(|(w, v)| Action::AddMaterial(w, v)),
        (0..3usize, 0..3u8).prop_map(|(w, v)| Action::RemoveMaterial(w, v)),
        (0..3usize, 0..14u8).prop_map(|(w, v)| Action::Step(w, v)),
        (0..3usize, 1..6u8).prop_map(|(w, v)| Action::Rate(w, v)),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Action::Exchange(a, b)),
    ]
}

fn step(n: u8) -> Step {
    match n {
        0 => Step::PrereviewPass,
        1 => Step::PrereviewReturn,
        2 => Step::Forward { to: NodeId::new("511421") },
        3 => Step::Accept,
        4 => Step::Refuse,
        5 => Step::RequestSupplement,
        6 => Step::Resubmit,
        7 => Step::Approve,
        8 => Step::Deny,
        9 => Step::Issue,
        10 => Step::Close,
        11 => Step::Withdraw,
        12 => Step::Suspend,
        _ => Step::Resume,
    }
}

fn play(actions: &[Action]) -> World {
    let mut w = World::new();
    for a in actions {
        match a {
            Action::Edit(who, v) => {
                w.author(*who, Body::SetField { field: "address".into(), value: FieldValue::Text(format!("v{v}")) });
            }
            Action::AddMaterial(who, v) => {
                w.author(*who, Body::AddMaterial { name: format!("m{v}") });
            }
            Action::RemoveMaterial(who, v) => {
                w.author(*who, Body::RemoveMaterial { name: format!("m{v}") });
            }
            Action::Step(who, v) => {
                w.author(*who, Body::Step { step: step(*v), note: String::new() });
            }
            Action::Rate(who, v) => {
                w.author(*who, Body::Rate { level: *v, note: String::new() });
            }
            Action::Exchange(a, b) => w.exchange(*a, *b),
        }
    }
    w
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any permutation and duplication of a case's events gives the same
    /// folded state and digest.
    #[test]
    fn fold_ignores_order_and_duplicates(
        actions in proptest::collection::vec(action(), 0..40),
        seed in any::<u64>(),
        dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let w = play(&actions);
        let events = w.all_events();
        let reference = fold_case(&w.case, &events).unwrap();
        let mut shuffled = events.clone();
        for d in &dups {
            shuffled.push(d.get(&events).clone());
        }
        // Deterministic Fisher-Yates from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let folded = fold_case(&w.case, &shuffled).unwrap();
        prop_assert_eq!(&folded, &reference);
        prop_assert_eq!(folded.digest(), reference.digest());
        // Every event is in the history exactly once: nothing is dropped.
        prop_assert_eq!(folded.history.len(), events.len());
    }

    /// Two replicas that end with the same events show the same case.
    #[test]
    fn replicas_converge_after_exchange(actions in proptest::collection::vec(action(), 0..40)) {
        let mut w = play(&actions);
        w.exchange(0, 1);
        w.exchange(1, 2);
        w.exchange(0, 1);
        let a = fold_case(&w.case, &w.known[0]).unwrap();
        let c = fold_case(&w.case, &w.known[2]).unwrap();
        prop_assert_eq!(a.digest(), c.digest());
    }

    /// Changing or removing any event of a chain is detected.
    #[test]
    fn tampering_breaks_the_chain(n in 2usize..20, victim in any::<prop::sample::Index>(), remove in any::<bool>()) {
        let mut w = World::new();
        for i in 0..n { w.author(0, Body::AddMaterial { name: format!("m{i}") }); }
        let origin = w.origins[0].clone();
        let mut chain: Vec<Event> = w.known[0].clone();
        prop_assert!(verify_chain(&origin, &Lane::Home(origin.clone()), &ChainTip::GENESIS, &chain.iter().map(Event::header).collect::<Vec<_>>()).is_ok());
        let i = victim.index(chain.len());
        if remove {
            chain.remove(i);
            // Removing the last event leaves a shorter valid chain whose head no
            // longer matches the sealed head; every other removal is a gap.
            if i == chain.len() {
                let tip = verify_chain(&origin, &Lane::Home(origin.clone()), &ChainTip::GENESIS, &chain.iter().map(Event::header).collect::<Vec<_>>()).unwrap();
                prop_assert_ne!(tip.hash, w.heads[&origin].1);
                return Ok(());
            }
        } else {
            chain[i].actor.push('x');
        }
        match verify_chain(&origin, &Lane::Home(origin.clone()), &ChainTip::GENESIS, &chain.iter().map(Event::header).collect::<Vec<_>>()) {
            Err(_) => {}
            Ok(tip) => {
                // The changed event was the last one: its hash differs from the sealed head.
                prop_assert!(!remove && i == chain.len() - 1);
                prop_assert_ne!(tip.hash, w.heads[&origin].1);
            }
        }
    }
}

#[test]
fn concurrent_edits_of_one_field_keep_both_values() {
    let mut w = World::new();
    w.exchange(0, 2);
    w.author(0, Body::SetField { field: "address".into(), value: FieldValue::Text("一组".into()) });
    w.author(2, Body::SetField { field: "address".into(), value: FieldValue::Text("二组".into()) });
    let st = fold_case(&w.case, &w.all_events()).unwrap();
    let values: Vec<&str> = st.fields["address"].iter().map(|v| v.display()).collect();
    assert_eq!(values, vec!["一组", "二组"]);
    assert!(st.conflicts.contains(&Conflict::ConcurrentValues { field: "address".into(), values: 2 }));
    assert!(st.flagged());

    // A later edit that has seen both resolves the conflict.
    w.exchange(0, 2);
    w.author(0, Body::SetField { field: "address".into(), value: FieldValue::Text("三组".into()) });
    let st = fold_case(&w.case, &w.all_events()).unwrap();
    assert_eq!(st.fields["address"].len(), 1);
    assert!(!st.flagged());
}

#[test]
fn sequential_edit_replaces_value() {
    let mut w = World::new();
    w.author(0, Body::SetField { field: "applicant".into(), value: FieldValue::Text("李四".into()) });
    let st = fold_case(&w.case, &w.all_events()).unwrap();
    assert_eq!(st.fields["applicant"], vec![FieldValue::Text("李四".into())]);
    assert!(!st.flagged());
}

#[test]
fn invalid_transition_is_kept_and_flagged() {
    let mut w = World::new();
    w.author(0, Body::Step { step: Step::PrereviewPass, note: String::new() });
    w.author(0, Body::Step { step: Step::Forward { to: NodeId::new("511421") }, note: String::new() });
    w.exchange(0, 2);
    w.author(2, Body::Step { step: Step::Accept, note: String::new() });
    w.exchange(0, 2);
    // The applicant withdraws at the village while, concurrently, the county approves.
    w.author(0, Body::Step { step: Step::Withdraw, note: "申请人撤回".into() });
    w.author(2, Body::Step { step: Step::Approve, note: String::new() });
    let events = w.all_events();
    let st = fold_case(&w.case, &events).unwrap();
    assert_eq!(st.state, State::Withdrawn, "withdraw has the earlier hlc here");
    let approve = st.history.iter().find(|h| h.kind() == "approve").expect("approve is kept in the history");
    assert!(approve.superseded);
    assert!(st
        .conflicts
        .iter()
        .any(|c| matches!(c, Conflict::SupersededTransition { step, .. } if step.name() == "approve")));
    assert_eq!(st.history.len(), events.len());
}

#[test]
fn two_events_with_one_id_are_detected() {
    let mut w = World::new();
    let e = w.author(0, Body::AddMaterial { name: "户口簿".into() });
    let mut twin = e.clone();
    twin.body = Body::AddMaterial { name: "结婚证".into() };
    let mut events = w.all_events();
    events.push(twin.clone());
    let st = fold_case(&w.case, &events).unwrap();
    assert!(st.conflicts.contains(&Conflict::Equivocation { event: e.id.clone() }));
    assert_eq!(st.history.iter().filter(|h| h.event == e.id).count(), 2, "both versions are kept");
    assert_eq!(st.history.iter().filter(|h| h.event == e.id && h.superseded).count(), 1);
    // Order of arrival does not decide which version applies.
    events.reverse();
    assert_eq!(fold_case(&w.case, &events).unwrap(), st);
}
