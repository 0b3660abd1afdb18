//! Input limits at the receiver: an event beyond them, signed by a forged
//! client with a genuine key, is quarantined by whoever receives it, never
//! stored or passed on.

use ed25519_dalek::SigningKey;
use proto::author::Draft;
use proto::event::{ChainTip, Create, FieldValue, KeyId, Lane, Seal};
use proto::limits;
use proto::sync::{check_batch, KeyStatus, Positions, Replica, Segment};
use proto::{Body, CaseId, Catalogue, Catalogues, Event, Hlc, Item, NodeId, NodeInfo, Tier, Topology};

/// A receiver that holds nothing yet.
struct Empty;

impl Replica for Empty {
    type Error = String;
    fn positions(&self, _: Option<&[Lane]>) -> Result<Positions, String> {
        Ok(vec![])
    }
    fn chain_events(&self, _: &Lane, _: &NodeId, _: u64, _: u64) -> Result<Vec<Event>, String> {
        Ok(vec![])
    }
    fn seal(&self, _: &NodeId, _: &Lane) -> Result<Option<Seal>, String> {
        Ok(None)
    }
    fn tip(&self, _: &NodeId, _: &Lane) -> Result<ChainTip, String> {
        Ok(ChainTip::GENESIS)
    }
    fn create_of(&self, _: &CaseId) -> Result<Option<Create>, String> {
        Ok(None)
    }
    fn key_status(&self, _: &NodeId, _: &KeyId) -> Result<KeyStatus, String> {
        Ok(KeyStatus::Unknown)
    }
    fn hash_at(&self, _: &NodeId, _: &Lane, _: u64) -> Result<Option<proto::Hash>, String> {
        Ok(None)
    }
    fn checkpoint_after(&self, _: &NodeId, _: &Lane, _: u64) -> Result<Option<Seal>, String> {
        Ok(None)
    }
    fn voucher(&self, _: &NodeId) -> Result<Option<Hlc>, String> {
        Ok(None)
    }
    fn is_quarantined_here(&self, _: &NodeId, _: u64) -> Result<bool, String> {
        Ok(false)
    }
}

fn item() -> Item {
    Item {
        code: "V001".into(),
        name: "item".into(),
        item_type: "20".into(),
        accepted_at: vec![Tier::Village],
        decided_by: Tier::Township,
        case_kind: 2,
        materials: vec![],
        legal_limit_days: 20,
        promised_limit_days: 5,
        result: String::new(),
    }
}

fn world() -> (Topology, Catalogues, SigningKey) {
    let key = SigningKey::from_bytes(&[9; 32]);
    let node = |id: &str, tier, parent: Option<&str>, key: Option<&SigningKey>| NodeInfo {
        id: NodeId::new(id),
        tier,
        parent: parent.map(NodeId::new),
        name: id.into(),
        verifying_key: key.map(|k| hex::encode(k.verifying_key().to_bytes())),
        former_parents: vec![],
        retired: false,
        retired_at: None,
    };
    let topology = Topology::new(
        String::new(),
        vec![
            node("c", Tier::County, None, None),
            node("t", Tier::Township, Some("c"), None),
            node("v", Tier::Village, Some("t"), Some(&key)),
        ],
    )
    .unwrap();
    let catalogue = Catalogue { version: 1, note: String::new(), items: vec![item()], bundles: vec![] };
    (topology, Catalogues::single(catalogue, true), key)
}

/// A creation by village `v`, built and sealed without the local checks,
/// as a forged client holding v's key would.
fn forged(actor: &str, fields: Vec<(String, FieldValue)>, materials: Vec<String>) -> Segment {
    let (topology, catalogues, key) = world();
    let i = item();
    let body = Body::Create(Create {
        item: i.code.clone(),
        item_name: i.name.clone(),
        catalogue_version: 1,
        accepted_at: i.accepted_at.clone(),
        decided_by: i.decided_by,
        promised_days: i.promised_limit_days,
        fields,
        materials,
    });
    let me = NodeId::new("v");
    let draft = Draft {
        topology: &topology,
        catalogues: &catalogues,
        me: &me,
        seq: 1,
        case: CaseId::mint(&me, 1),
        current: None,
        actor,
        body,
    };
    let e = draft.build(&ChainTip::GENESIS, Hlc { wall_ms: 1_000, logical: 0 });
    let seal = Seal::sign(&key, &e);
    Segment { events: vec![e], seal }
}

fn receive(segment: Segment) -> Vec<String> {
    let (topology, catalogues, _) = world();
    let v = check_batch(&Empty, &topology, &catalogues, &NodeId::new("c"), &NodeId::new("v"), vec![segment], 2_000)
        .unwrap();
    assert!(v.accept.is_empty() || v.quarantined.is_empty());
    if v.quarantined.is_empty() {
        assert_eq!(v.accept.len(), 1);
    }
    v.quarantined.into_iter().map(|r| r.reason).collect()
}

fn text(s: &str) -> FieldValue {
    FieldValue::Text(s.into())
}

#[test]
fn an_event_within_the_limits_is_accepted() {
    let applicant = "张".repeat(limits::NAME_MAX);
    let refused = receive(forged("王芳", vec![("applicant".into(), text(&applicant))], vec!["居民身份证".into()]));
    assert!(refused.is_empty(), "{refused:?}");
}

#[test]
fn oversized_or_odd_events_from_a_forged_client_are_quarantined() {
    let cases: Vec<(Segment, &str)> = vec![
        (forged("a", vec![("applicant".into(), text(&"x".repeat(131_071)))], vec![]), "at most 64"),
        (forged("a", vec![], (0..40_000).map(|i| format!("m{i}")).collect()), "at most 50 materials"),
        (forged("a", vec![("f".repeat(100_000), text("v"))], vec![]), "at most 32"),
        (forged("a", vec![("state".into(), text("办结"))], vec![]), "reserved"),
        (forged("a", vec![("applicant".into(), text("\u{1b}[2J张三"))], vec![]), "control"),
        (forged(&"a".repeat(limits::NAME_MAX + 1), vec![], vec![]), "staff name"),
        (forged("a\u{1b}[31m", vec![], vec![]), "staff name"),
    ];
    for (segment, reason) in cases {
        let refused = receive(segment);
        assert_eq!(refused.len(), 1, "{reason}: {refused:?}");
        assert!(refused[0].contains("not authorised") && refused[0].contains(reason), "{reason}: {refused:?}");
    }
}
