//! Service rules at the receiver, attacked by a hostile node holding its own
//! genuine key: events built and sealed without the local checks (as a
//! forged client would) and fed to the county's `check_batch`. Whatever the
//! receiver takes, every replica folds the same way, so a rule only the
//! writing node checks is no rule between nodes.

use ed25519_dalek::SigningKey;
use proto::author::Draft;
use proto::catalogue::Material;
use proto::event::{ChainTip, Create, KeyId, Lane, Seal, Stage};
use proto::sync::{check_batch, KeyStatus, Positions, Replica, Segment};
use proto::{
    auth, fold_case, Body, CaseId, CaseState, Catalogue, Catalogues, Event, Hash, Hlc, Item, NodeId, NodeInfo, Step,
    Tier, Topology,
};
use std::collections::BTreeMap;

const COUNTY: &str = "c";
const TOWNSHIP: &str = "t";
const VILLAGE: &str = "v";
/// A second township (issue 10's moves): nothing is homed there at first.
const TOWNSHIP2: &str = "t2";
/// 2026-03-02 00:00 China time and on: every event a minute after the last.
const START_MS: u64 = 1_772_380_800_000;

fn item() -> Item {
    let material = |name: &str, may_be_missing| Material { name: name.into(), required: true, may_be_missing };
    Item {
        code: "V001".into(),
        name: "item".into(),
        item_type: "20".into(),
        accepted_at: vec![Tier::Village],
        decided_by: Tier::Township,
        case_kind: 2,
        materials: vec![material("居民身份证", false), material("户口簿", true)],
        legal_limit_days: 20,
        promised_limit_days: 5,
        result: String::new(),
    }
}

/// What the county holds: every chain, as it received them.
struct County {
    topology: Topology,
    catalogues: Catalogues,
    keys: BTreeMap<NodeId, SigningKey>,
    chains: BTreeMap<(Lane, NodeId), Vec<Event>>,
    wall_ms: u64,
}

impl Replica for County {
    type Error = String;
    fn positions(&self, _: Option<&[Lane]>) -> Result<Positions, String> {
        Ok(self.chains.iter().map(|((l, o), c)| (l.clone(), o.clone(), c.len() as u64)).collect())
    }
    fn chain_events(&self, lane: &Lane, origin: &NodeId, after: u64, upto: u64) -> Result<Vec<Event>, String> {
        let chain = self.chains.get(&(lane.clone(), origin.clone())).map(Vec::as_slice).unwrap_or(&[]);
        Ok(chain.iter().filter(|e| e.pos > after && e.pos <= upto).cloned().collect())
    }
    fn seal(&self, _: &NodeId, _: &Lane) -> Result<Option<Seal>, String> {
        Ok(None)
    }
    fn checkpoint_after(&self, _: &NodeId, _: &Lane, _: u64) -> Result<Option<Seal>, String> {
        Ok(None)
    }
    fn tip(&self, origin: &NodeId, lane: &Lane) -> Result<ChainTip, String> {
        Ok(self
            .chains
            .get(&(lane.clone(), origin.clone()))
            .and_then(|c| c.last())
            .map_or(ChainTip::GENESIS, |e| ChainTip { pos: e.pos, seq: e.id.seq, hash: e.hash(), hlc: e.hlc }))
    }
    fn create_of(&self, case: &CaseId) -> Result<Option<Create>, String> {
        Ok(self.chains.values().flatten().find_map(|e| match &e.body {
            Body::Create(c) if &e.case == case => Some(c.clone()),
            _ => None,
        }))
    }
    fn key_status(&self, _: &NodeId, _: &KeyId) -> Result<KeyStatus, String> {
        Ok(KeyStatus::Unknown)
    }
    fn is_quarantined_here(&self, _: &NodeId, _: u64) -> Result<bool, String> {
        Ok(false)
    }
    fn voucher(&self, _: &NodeId) -> Result<Option<Hlc>, String> {
        Ok(None)
    }
    fn hash_at(&self, origin: &NodeId, lane: &Lane, pos: u64) -> Result<Option<Hash>, String> {
        let chain = self.chains.get(&(lane.clone(), origin.clone())).map(Vec::as_slice).unwrap_or(&[]);
        Ok(chain.iter().find(|e| e.pos == pos).map(Event::hash))
    }
}

impl County {
    fn new() -> County {
        let keys: BTreeMap<NodeId, SigningKey> = [COUNTY, TOWNSHIP, VILLAGE, TOWNSHIP2]
            .iter()
            .enumerate()
            .map(|(i, n)| (NodeId::new(*n), SigningKey::from_bytes(&[i as u8 + 1; 32])))
            .collect();
        let node = |id: &str, tier, parent: Option<&str>| NodeInfo {
            id: NodeId::new(id),
            tier,
            parent: parent.map(NodeId::new),
            name: id.into(),
            verifying_key: Some(hex::encode(keys[&NodeId::new(id)].verifying_key().to_bytes())),
            former_parents: vec![],
            retired: false,
            retired_at: None,
        };
        let topology = Topology::new(
            String::new(),
            vec![
                node(COUNTY, Tier::County, None),
                node(TOWNSHIP, Tier::Township, Some(COUNTY)),
                node(VILLAGE, Tier::Village, Some(TOWNSHIP)),
                node(TOWNSHIP2, Tier::Township, Some(COUNTY)),
            ],
        )
        .unwrap();
        let catalogue = Catalogue { version: 1, note: String::new(), items: vec![item()], bundles: vec![] };
        County {
            topology,
            catalogues: Catalogues::single(catalogue, true),
            keys,
            chains: BTreeMap::new(),
            wall_ms: START_MS,
        }
    }

    fn case(&self, case: &CaseId) -> CaseState {
        fold_case(case, self.chains.values().flatten()).expect("the case is held")
    }

    /// `origin` signs `body` on `case` (a creation when `case` is None)
    /// without any local check, at `wall_ms` (the next minute when None);
    /// the county receives it. Err: the reasons it was not taken.
    fn send(
        &mut self,
        origin: &str,
        case: Option<&CaseId>,
        body: Body,
        wall_ms: Option<u64>,
    ) -> Result<CaseId, String> {
        let (case, segment) = self.signed(origin, case, body, wall_ms);
        self.receive(COUNTY, TOWNSHIP, vec![segment])?;
        Ok(case)
    }

    /// `origin` signs `body` without any local check; nothing is received.
    fn signed(&mut self, origin: &str, case: Option<&CaseId>, body: Body, wall_ms: Option<u64>) -> (CaseId, Segment) {
        let me = NodeId::new(origin);
        let seq = self.chains.values().flatten().filter(|e| e.id.origin == me).map(|e| e.id.seq).max().unwrap_or(0) + 1;
        let case = case.cloned().unwrap_or_else(|| CaseId::mint(&me, seq));
        let lane = auth::lane_of(&case, &body);
        let tip = self.tip(&me, &lane).unwrap();
        let current = fold_case(&case, self.chains.values().flatten());
        self.wall_ms += 60_000;
        let hlc = Hlc { wall_ms: wall_ms.unwrap_or(self.wall_ms), logical: 0 };
        let draft = Draft {
            topology: &self.topology,
            catalogues: &self.catalogues,
            me: &me,
            seq,
            case: case.clone(),
            current: current.as_ref(),
            actor: "王芳",
            body,
        };
        let event = draft.build(&tip, hlc);
        let seal = Seal::sign(&self.keys[&me], &event);
        (case, Segment { events: vec![event], seal })
    }

    /// `me` receives `segments` from `peer` (this one store stands for the
    /// receiver); what it accepts is stored, publications applied.
    fn receive(&mut self, me: &str, peer: &str, segments: Vec<Segment>) -> Result<(), String> {
        let v = check_batch(
            &*self,
            &self.topology,
            &self.catalogues,
            &NodeId::new(me),
            &NodeId::new(peer),
            segments,
            self.wall_ms + 1_000,
        )
        .map_err(|e| e.to_string())?;
        for (e, _) in v.accept.iter().filter(|(e, _)| matches!(e.body, Body::Publish(_))) {
            let Body::Publish(p) = &e.body else { unreachable!() };
            match &**p {
                proto::publication::Publication::Topology(change) => {
                    self.topology.apply_at(change, e.hlc.wall_ms).expect("check_batch applied it")
                }
                _ => self.catalogues.apply_at(p, e.hlc.wall_ms).expect("check_batch applied it"),
            }
        }
        for (e, _) in &v.accept {
            self.chains.entry((e.lane.clone(), e.id.origin.clone())).or_default().push(e.clone());
        }
        if !v.quarantined.is_empty() {
            return Err(v.quarantined.iter().map(|q| q.reason.clone()).collect::<Vec<_>>().join("; "));
        }
        if v.accept.is_empty() {
            return Err("held back".into());
        }
        Ok(())
    }

    fn step(&mut self, origin: &str, case: &CaseId, step: Step) -> Result<CaseId, String> {
        self.send(origin, Some(case), Body::Step { step, note: String::new() }, None)
    }

    /// A V001 case taken at the village with both materials, forwarded to
    /// and accepted by the township.
    fn accepted_case(&mut self) -> CaseId {
        let i = item();
        let create = Body::Create(Create {
            item: i.code.clone(),
            item_name: i.name.clone(),
            catalogue_version: 1,
            accepted_at: i.accepted_at.clone(),
            decided_by: i.decided_by,
            promised_days: i.promised_limit_days,
            fields: vec![],
            materials: vec!["居民身份证".into(), "户口簿".into()],
        });
        let case = self.send(VILLAGE, None, create, None).unwrap();
        self.step(VILLAGE, &case, Step::PrereviewPass).unwrap();
        self.step(VILLAGE, &case, Step::Forward { to: NodeId::new(TOWNSHIP) }).unwrap();
        self.step(TOWNSHIP, &case, Step::Accept).unwrap();
        case
    }
}

fn rating(level: u8, stage: Stage, channel: &str) -> Body {
    Body::Rating { level, stage, channel: channel.into(), note: String::new() }
}

/// 整改: a poor rating's follow-up is owned by the node that held the case
/// when it was rated. Another node in scope (here the home village, for a
/// case the township holds) must not close it for the owner: the receiver
/// takes any `FollowUp` from any node in scope, and the fold closes the
/// follow-up whoever wrote it (`close_followup` does not check the owner
/// either).
#[test]
fn a_followup_is_closed_only_by_the_node_that_owns_it() {
    let mut county = County::new();
    let case = county.accepted_case();
    county.step(TOWNSHIP, &case, Step::Approve).unwrap();
    county.send(TOWNSHIP, Some(&case), rating(5, Stage::Done, "电话"), None).unwrap();
    let st = county.case(&case);
    assert_eq!(st.followups.len(), 1);
    assert_eq!(st.followups[0].owner, NodeId::new(TOWNSHIP), "the township held the case when it was rated");
    let rated = st.followups[0].rating.clone();

    let body = Body::FollowUp { rating: rated, response: "已整改".into(), callback: "满意".into() };
    let taken = county.send(VILLAGE, Some(&case), body, None);
    let st = county.case(&case);
    assert!(
        taken.is_err() || st.followups[0].closed.is_none(),
        "the village closed the township's follow-up: {:?}",
        st.followups[0].closed
    );
}

/// 一事一评: one rating per stage. Once a stage is rated (here the township
/// records a poor 办结 rating taken by phone), another node must not rate
/// it again so that the case's rating (the statistics' `rating` column, the
/// last one folded) turns satisfied. The rule is checked only by the
/// writing node (`Ledger::rate`); receivers take the second rating and the
/// fold counts it.
#[test]
fn a_stage_once_rated_is_not_rated_over() {
    let mut county = County::new();
    let case = county.accepted_case();
    county.step(TOWNSHIP, &case, Step::Approve).unwrap();
    county.send(TOWNSHIP, Some(&case), rating(5, Stage::Done, "电话"), None).unwrap();
    let taken = county.send(VILLAGE, Some(&case), rating(1, Stage::Done, "窗口评价器"), None);
    let st = county.case(&case);
    let done: Vec<u8> = st.staged.iter().filter(|r| r.stage == Some(Stage::Done)).map(|r| r.level).collect();
    assert!(
        taken.is_err() || (done == vec![5] && st.ratings.last().map(|r| r.level) == Some(5)),
        "a second 办结 rating was counted: stage ratings {done:?}, the case's rating {:?}",
        st.ratings.last().map(|r| r.level)
    );
}

/// 终止 ends a 容缺 case whose materials never came. A deciding node can
/// end any accepted case with it, one accepted with every material (no
/// 容缺) included, and every receiver (and the writing node) takes it: the
/// case is counted ended, its clock stopped, without a decision.
#[test]
fn only_a_case_accepted_with_materials_missing_is_terminated() {
    let mut county = County::new();
    let case = county.accepted_case();
    assert!(county.case(&case).tolerated.is_none(), "accepted with every material");
    let taken = county.step(TOWNSHIP, &case, Step::Terminate);
    let st = county.case(&case);
    assert!(
        taken.is_err() || st.state != proto::workflow::State::Terminated,
        "a case accepted with every material was terminated (state {})",
        st.state
    );
}

/// Resisted: what the catalogue requires at acceptance cannot be named as
/// missing, nor anything that is not a material of the item, nor by a node
/// that does not decide the item; every receiver refuses, not only the
/// writing node.
#[test]
fn a_forged_acceptance_with_materials_missing_is_refused_by_the_receiver() {
    let mut county = County::new();
    let create = creation("V001", 1, item().promised_limit_days);
    let case = county.send(VILLAGE, None, create, None).unwrap();
    county.step(VILLAGE, &case, Step::PrereviewPass).unwrap();
    county.step(VILLAGE, &case, Step::Forward { to: NodeId::new(TOWNSHIP) }).unwrap();
    let promised = proto::calendar::Day::of_ms(START_MS).next();
    let missing =
        |names: &[&str]| Step::AcceptMissing { missing: names.iter().map(|n| n.to_string()).collect(), promised };
    let err = county.step(TOWNSHIP, &case, missing(&["居民身份证"])).unwrap_err();
    assert!(err.contains("may not be missing"), "{err}");
    let err = county.step(TOWNSHIP, &case, missing(&["户口簿", "居民身份证"])).unwrap_err();
    assert!(err.contains("may not be missing"), "{err}");
    let err = county.step(TOWNSHIP, &case, missing(&["营业执照"])).unwrap_err();
    assert!(err.contains("not a material"), "{err}");
    let err = county.step(TOWNSHIP, &case, missing(&[])).unwrap_err();
    assert!(err.contains("at least one"), "{err}");
    let err = county.step(VILLAGE, &case, missing(&["户口簿"])).unwrap_err();
    assert!(err.contains("may not"), "{err}");
    // What the catalogue allows is taken; only the deciding tier ends it.
    county.step(TOWNSHIP, &case, missing(&["户口簿"])).unwrap();
    let err = county.step(VILLAGE, &case, Step::Terminate).unwrap_err();
    assert!(err.contains("may not"), "{err}");
    county.step(TOWNSHIP, &case, Step::Terminate).unwrap();
    assert_eq!(county.case(&case).state, proto::workflow::State::Terminated);
}

/// Resisted: a rating's level is 1 to 5 at every receiver.
#[test]
fn a_forged_rating_level_out_of_range_is_refused_by_the_receiver() {
    let mut county = County::new();
    let case = county.accepted_case();
    for level in [0, 6, 255] {
        let err = county.send(VILLAGE, Some(&case), rating(level, Stage::Accept, "扫码"), None).unwrap_err();
        assert!(err.contains("rating level"), "{level}: {err}");
    }
    assert!(county.case(&case).staged.is_empty());
}

/// Detected, not prevented (the residual risk ARCHITECTURE names): a
/// deciding node can stamp its steps at any time since its chain's last
/// event in the lane, so a township that last wrote in the village's lane a
/// month ago can accept and decide a case "a month ago", on time. The case
/// is flagged, since the creation it saw is stamped later.
#[test]
fn a_decision_stamped_before_the_case_existed_is_flagged() {
    let mut county = County::new();
    let month = 30 * 86_400_000;
    // The township's last event in the village's lane: an old case.
    let old = county.accepted_case();
    county.wall_ms += month + 86_400_000;
    let i = item();
    let create = Body::Create(Create {
        item: i.code.clone(),
        item_name: i.name.clone(),
        catalogue_version: 1,
        accepted_at: i.accepted_at.clone(),
        decided_by: i.decided_by,
        promised_days: i.promised_limit_days,
        fields: vec![],
        materials: vec!["居民身份证".into(), "户口簿".into()],
    });
    let case = county.send(VILLAGE, None, create, None).unwrap();
    county.step(VILLAGE, &case, Step::PrereviewPass).unwrap();
    county.step(VILLAGE, &case, Step::Forward { to: NodeId::new(TOWNSHIP) }).unwrap();
    let back = county.wall_ms - month;
    county.send(TOWNSHIP, Some(&case), Body::Step { step: Step::Accept, note: String::new() }, Some(back)).unwrap();
    county
        .send(TOWNSHIP, Some(&case), Body::Step { step: Step::Approve, note: String::new() }, Some(back + 1))
        .unwrap();
    let st = county.case(&case);
    assert_eq!(st.state, proto::workflow::State::Approved);
    assert!(county.case(&old).conflicts.is_empty());
    assert!(
        st.conflicts.iter().any(|c| matches!(c, proto::fold::Conflict::ClockSkew { .. })),
        "a decision stamped a month before the case was taken goes unflagged: {:?}",
        st.conflicts
    );
}

/// Catalogue v2 of the test county: one item added (V002), one changed (the
/// promised limit of V001); with `version` other than 2, out of order.
fn catalogue_v2(version: u32) -> Body {
    let mut changed = item();
    changed.promised_limit_days = 3;
    let mut added = item();
    added.code = "V002".into();
    added.name = "new item".into();
    Body::Publish(Box::new(proto::publication::Publication::Catalogue(proto::publication::CatalogueChange {
        version,
        note: "v2".into(),
        put: vec![changed, added],
        cancel: vec![],
        bundles: None,
    })))
}

fn creation(code: &str, version: u32, promised_days: u32) -> Body {
    let i = item();
    Body::Create(Create {
        item: code.into(),
        item_name: if code == "V001" { i.name } else { "new item".into() },
        catalogue_version: version,
        accepted_at: i.accepted_at,
        decided_by: i.decided_by,
        promised_days,
        fields: vec![],
        materials: vec![],
    })
}

const GLOBAL: &str = proto::event::GLOBAL_CASE;

/// Issue 10: only the county publishes; a township's own genuine key
/// signing a catalogue version gets it quarantined, nothing applied.
#[test]
fn a_catalogue_version_signed_by_anyone_but_the_county_is_refused() {
    let mut county = County::new();
    let (_, segment) = county.signed(TOWNSHIP, Some(&CaseId(GLOBAL.into())), catalogue_v2(2), None);
    let refused = county.receive(COUNTY, TOWNSHIP, vec![segment]).unwrap_err();
    assert!(refused.contains("only the county"), "{refused}");
    assert_eq!(county.catalogues.latest_version(), 1, "nothing applied");
}

/// Issue 10: versions apply in order at every receiver: a county
/// publication that repeats or skips a number is quarantined with the
/// reason and changes nothing.
#[test]
fn a_catalogue_version_that_skips_or_repeats_a_number_is_refused() {
    for (version, held) in [(3, 1), (1, 1)] {
        let mut township = County::new();
        let (_, segment) = township.signed(COUNTY, Some(&CaseId(GLOBAL.into())), catalogue_v2(version), None);
        let refused = township.receive(TOWNSHIP, COUNTY, vec![segment]).unwrap_err();
        assert!(refused.contains(&format!("catalogue v{version} does not follow v{held}")), "{refused}");
        assert_eq!(township.catalogues.latest_version(), 1, "nothing applied");
    }
    let mut township = County::new();
    let (_, segment) = township.signed(COUNTY, Some(&CaseId(GLOBAL.into())), catalogue_v2(2), None);
    township.receive(TOWNSHIP, COUNTY, vec![segment]).unwrap();
    assert_eq!(township.catalogues.latest_version(), 2);
}

/// Issue 10: a creation under a version that arrives in the same batch is
/// judged by it (not held back for another session); under v2 a changed
/// item's old terms are refused, and a case of v1 keeps v1's.
#[test]
fn a_creation_under_a_version_in_the_same_batch_is_judged_by_it() {
    let mut township = County::new();
    let (_, publication) = township.signed(COUNTY, Some(&CaseId(GLOBAL.into())), catalogue_v2(2), None);
    let (_, new_item) = township.signed(VILLAGE, None, creation("V002", 2, 5), None);
    township.receive(TOWNSHIP, VILLAGE, vec![publication, new_item]).unwrap();
    assert_eq!(township.catalogues.latest_version(), 2);
    // V001 under v2 with v1's promised limit contradicts v2.
    let (_, stale) = township.signed(VILLAGE, None, creation("V001", 2, 5), None);
    let refused = township.receive(TOWNSHIP, VILLAGE, vec![stale]).unwrap_err();
    assert!(refused.contains("promised limit differs"), "{refused}");
}

/// 电子证照 cited for a material (`Body::CiteLicence`): the licence is
/// checked only by the node that writes the citation (`Ledger::cite_licence`
/// → `verify_licence`). Every receiver takes the event whatever the licence
/// says (`proto/src/auth.rs` authorises `CiteLicence` like a tick,
/// `proto/src/limits.rs` checks only text lengths), relays it, and the
/// fold counts the material received (`proto/src/fold.rs`, the
/// `CiteLicence` arm adds it to `materials` unconditionally), which is what
/// the deciding node's 受理 check reads (`node/src/ledger.rs`
/// `check_materials_for_acceptance`). A hostile village (its key, no local
/// check) cites a licence nobody signed, of another county's key, for a
/// case of nobody: the material counts as satisfied everywhere.
#[test]
fn a_forged_licence_does_not_satisfy_a_material_at_the_receiver() {
    use proto::licence::{Carried, Terms};
    let mut county = County::new();
    let create = creation("V001", 1, item().promised_limit_days);
    let case = county.send(VILLAGE, None, create, None).unwrap();
    assert!(!county.case(&case).materials.contains(&"居民身份证".to_string()));
    let stranger = SigningKey::from_bytes(&[42; 32]);
    let terms = Terms {
        case: CaseId("nowhere-1".into()),
        item: "X999".into(),
        item_name: "伪造".into(),
        holder: "李*".into(),
        holder_id: "000000********0000".into(),
        result: "居民身份证".into(),
        issuer: NodeId::new(COUNTY),
        issued: proto::calendar::Day::of_ms(START_MS),
        valid_until: None,
        event: proto::EventId { origin: NodeId::new(COUNTY), seq: 999_999 },
        event_hash: Hash::ZERO,
        lane: Lane::Home(NodeId::new("nowhere")),
        pos: 1,
    };
    let signed = terms.sign(&stranger);
    let forged = Carried { terms: signed.terms, key: signed.key, signature: "00".repeat(64) };
    let taken = county.send(
        VILLAGE,
        Some(&case),
        Body::CiteLicence { material: "居民身份证".into(), licence: Box::new(forged) },
        None,
    );
    let st = county.case(&case);
    assert!(
        taken.is_err() || !st.materials.contains(&"居民身份证".to_string()),
        "a licence with no valid signature, of a key the county never enrolled, for no case, was taken and \
         satisfies 居民身份证: materials {:?}",
        st.materials
    );
}

fn topology_change(version: u32, change: proto::topology::Change) -> Body {
    Body::Publish(Box::new(proto::publication::Publication::Topology(proto::topology::TopologyChange {
        version,
        change,
    })))
}

/// Issue 10: topology changes, like every publication, are the county's
/// alone and apply in version order; a move to a node that does not exist
/// is refused with the reason. Nothing is applied in any of these cases.
#[test]
fn topology_changes_out_of_order_unknown_or_not_the_countys_are_refused() {
    use proto::topology::Change;
    let add = |id: &str| Change::AddNode {
        id: NodeId::new(id),
        tier: Tier::Village,
        parent: NodeId::new(TOWNSHIP),
        name: "新村".into(),
    };
    let cases: [(&str, Body, &str); 4] = [
        (TOWNSHIP, topology_change(2, add("v2")), "only the county"),
        (COUNTY, topology_change(3, add("v2")), "topology v3 does not follow v1"),
        (
            COUNTY,
            topology_change(2, Change::Move { node: NodeId::new(VILLAGE), to: NodeId::new("t9") }),
            "t9 is not in the topology",
        ),
        (COUNTY, topology_change(2, Change::Retire { node: NodeId::new(TOWNSHIP) }), "still has villages"),
    ];
    for (origin, body, why) in cases {
        let mut township = County::new();
        let (_, segment) = township.signed(origin, Some(&CaseId(GLOBAL.into())), body, None);
        let refused = township.receive(TOWNSHIP, COUNTY, vec![segment]).unwrap_err();
        assert!(refused.contains(why), "{refused}");
        assert_eq!(township.topology.version(), 1, "nothing applied");
    }
    // The same change in order is taken.
    let mut township = County::new();
    let (_, segment) = township.signed(COUNTY, Some(&CaseId(GLOBAL.into())), topology_change(2, add("v2")), None);
    township.receive(TOWNSHIP, COUNTY, vec![segment]).unwrap();
}

impl County {
    /// A lane's chains as this store holds them, each one segment sealed by
    /// its origin (what a sender hands on: a relay sends the origin's
    /// seal), the home's chain first.
    fn lane_segments(&self, lane: &Lane) -> Vec<Segment> {
        let mut out: Vec<Segment> = self
            .chains
            .iter()
            .filter(|((l, _), _)| l == lane)
            .map(|((_, o), chain)| Segment {
                events: chain.clone(),
                seal: Seal::sign(&self.keys[&o.node()], chain.last().expect("a chain holds events")),
            })
            .collect();
        let home = match lane {
            Lane::Home(h) => h.clone(),
            Lane::Global => NodeId::new(COUNTY),
        };
        out.sort_by_key(|s| s.seal.origin != home);
        out
    }
}

fn move_village(version: u32, to: &str) -> Body {
    topology_change(version, proto::topology::Change::Move { node: NodeId::new(VILLAGE), to: NodeId::new(to) })
}

/// Attack review (issue 10), backfill after a move: the new township
/// judges the moved lane's whole history against the map after the move
/// (`check_batch` → `auth::authorize` with the current `map`). The
/// village's `Forward { to: t }`, made while `t` was its township, now
/// fails `ForwardTarget` (expected `t2`), and `t`'s 受理 and approval fail
/// `OutOfScope`; `quarantine_rest` then takes the rest of each chain, and
/// since the tip never passes the forward, every later event of the
/// village's own chain is refused at `t2` for good: the village cannot
/// sync with its new township, and `t2`'s `digest --home v` never equals
/// the county's. Any village that ever forwarded a case is affected.
#[test]
fn a_moved_villages_lane_with_forwarded_cases_backfills_its_new_township() {
    let mut county = County::new();
    let case = county.accepted_case();
    county.step(TOWNSHIP, &case, Step::Approve).unwrap();
    let (_, moved) = county.signed(COUNTY, Some(&CaseId(GLOBAL.into())), move_village(2, TOWNSHIP2), None);
    county.receive(COUNTY, COUNTY, vec![moved.clone()]).unwrap();

    // The new township hears of the move, then takes the lane whole from
    // the county.
    let mut t2 = County::new();
    t2.receive(TOWNSHIP2, COUNTY, vec![moved]).unwrap();
    assert_eq!(t2.topology.get(&NodeId::new(VILLAGE)).unwrap().parent, Some(NodeId::new(TOWNSHIP2)));
    let backfill = county.lane_segments(&Lane::Home(NodeId::new(VILLAGE)));
    let taken = t2.receive(TOWNSHIP2, COUNTY, backfill);
    assert!(taken.is_ok(), "the moved village's genuine history is refused by its new township: {taken:?}");
    assert_eq!(t2.case(&case).state, county.case(&case).state);
}

/// Attack review (issue 10), the old township hands up after the move: a
/// decision `t` made on a case of `v` while it was `v`'s township, handed
/// up to the county after the county published the move (the township had
/// not synced in between: a rural link), is judged against the new map and
/// quarantined (`OutOfScope`), with every later event of `t`'s chain in
/// that lane. `lane_entitled` lets `t` hand the lane up, but nothing it
/// decided there before the move is taken.
#[test]
fn a_decision_made_before_a_move_is_taken_when_handed_up_after_it() {
    let mut county = County::new();
    let case = county.accepted_case();
    // Approved at the township before the move; the county has not heard yet.
    let (_, approval) =
        county.signed(TOWNSHIP, Some(&case), Body::Step { step: Step::Approve, note: String::new() }, None);
    let (_, moved) = county.signed(COUNTY, Some(&CaseId(GLOBAL.into())), move_village(2, TOWNSHIP2), None);
    county.receive(COUNTY, COUNTY, vec![moved]).unwrap();
    let taken = county.receive(COUNTY, TOWNSHIP, vec![approval]);
    assert!(taken.is_ok(), "a decision made by the deciding node before the move is refused: {taken:?}");
}

/// Attack review (issue 10), a cancelled item taken under the version
/// before: "an item cancelled in a newer version can no longer be taken"
/// holds only at the writing node (`Declined::ItemCancelled`). Every
/// receiver judges a creation only against the version it names
/// (`Catalogues::check_creation`), so a village (its genuine key, no local
/// check) that holds v2, which cancels V001, takes V001 under v1 days
/// later; the county takes it, and the township may decide it. The same
/// holds for an item whose v2 moves the decision up a tier (a village keeps
/// deciding 村直审 items the county withdrew from it) or changes its
/// materials. Nothing bounds how long after a newer version an older one
/// may still be named.
#[test]
fn a_cancelled_item_is_not_taken_under_the_version_before_at_the_receiver() {
    let mut county = County::new();
    let cancel =
        Body::Publish(Box::new(proto::publication::Publication::Catalogue(proto::publication::CatalogueChange {
            version: 2,
            note: "V001 cancelled".into(),
            put: vec![],
            cancel: vec!["V001".into()],
            bundles: None,
        })));
    let (_, v2) = county.signed(COUNTY, Some(&CaseId(GLOBAL.into())), cancel, None);
    county.receive(COUNTY, COUNTY, vec![v2]).unwrap();
    assert_eq!(county.catalogues.cancelled_in("V001"), Some(2));
    // A month after the cancellation.
    let later = county.wall_ms + 30 * 24 * 3600 * 1000;
    let (_, stale) = county.signed(VILLAGE, None, creation("V001", 1, 5), Some(later));
    let taken = county.receive(COUNTY, TOWNSHIP, vec![stale]);
    assert!(taken.is_err(), "a case of an item cancelled a month before was taken under the version before it");
}

/// Attack review (issue 10), retired nodes: "a retired node takes no new
/// work" is enforced only by `enroll` (no new laptop). No receiver checks
/// `NodeInfo::retired` (`auth::authorize`, `check_batch`), and
/// `allowed_peer` lets a retired village still sync with its township: the
/// retired village's existing laptop (or a thief holding it with the
/// passphrase) goes on taking new cases, accepted everywhere.
#[test]
fn a_retired_village_takes_no_new_cases_at_the_receiver() {
    let mut county = County::new();
    let retire = topology_change(2, proto::topology::Change::Retire { node: NodeId::new(VILLAGE) });
    let (_, retired) = county.signed(COUNTY, Some(&CaseId(GLOBAL.into())), retire, None);
    county.receive(COUNTY, COUNTY, vec![retired]).unwrap();
    assert!(county.topology.get(&NodeId::new(VILLAGE)).unwrap().retired);
    let syncs = proto::sync::allowed_peer(&county.topology, &NodeId::new(TOWNSHIP), &NodeId::new(VILLAGE));
    // A month after its retirement.
    let later = county.wall_ms + 30 * 24 * 3600 * 1000;
    let (_, new_case) = county.signed(VILLAGE, None, creation("V001", 1, 5), Some(later));
    let taken = county.receive(COUNTY, TOWNSHIP, vec![new_case]);
    assert!(
        !syncs && taken.is_err(),
        "a retired village still syncs with its township ({syncs}) and its new case was taken ({})",
        taken.is_ok()
    );
}
