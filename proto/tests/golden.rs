//! Golden bytes: the formats that travel between nodes and are hashed into
//! their chains, pinned. A network of laptops offline for weeks always runs
//! several releases at once; a change here must be a new format version
//! (see `proto::codec::Tag`), never a silent change of these bytes.

use crdts::{CmRDT, Dot, VClock};
use ed25519_dalek::SigningKey;
use proto::event::{Create, FieldValue, Lane, Seal};
use proto::sync::{Message, Segment};
use proto::{Body, CaseId, Event, EventId, Hash, Hlc, NodeId, Step, Tier};

fn event() -> Event {
    let origin = NodeId::new("511421101001");
    let mut context = VClock::new();
    context.apply(Dot::new(origin.clone(), 1));
    Event {
        id: EventId { origin: origin.clone(), seq: 2 },
        lane: Lane::Home(origin.clone()),
        pos: 2,
        prev: Hash([7; 32]),
        hlc: Hlc { wall_ms: 1_764_000_000_000, logical: 3 },
        actor: "王芳".into(),
        case: CaseId::mint(&origin, 1),
        context,
        body: Body::Step { step: Step::Forward { to: NodeId::new("511421101") }, note: "转报".into() },
    }
}

fn creation() -> Event {
    let origin = NodeId::new("511421101001");
    Event {
        id: EventId { origin: origin.clone(), seq: 1 },
        lane: Lane::Home(origin.clone()),
        pos: 1,
        prev: Hash::ZERO,
        hlc: Hlc { wall_ms: 1_764_000_000_000, logical: 0 },
        actor: "王芳".into(),
        case: CaseId::mint(&origin, 1),
        context: VClock::new(),
        body: Body::Create(Create {
            item: "V001".into(),
            item_name: "城乡居民基本医疗保险参保登记".into(),
            catalogue_version: 1,
            accepted_at: vec![Tier::Village, Tier::Township],
            decided_by: Tier::Township,
            promised_days: 3,
            fields: vec![("applicant".into(), FieldValue::Text("张三".into()))],
            materials: vec!["居民身份证".into()],
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_event_encodes_and_hashes_as_pinned() {
    let e = event();
    assert_eq!(
        hex(&e.encode()),
        "45010c35313134323131303130303102010c353131343231313031303031020707070707070707070707070707070707070707070707070707070707070707fd00e897b69a0100000306e78e8be88ab30e3531313432313130313030312d31010c3531313432313130313030310104020935313134323131303106e8bdace68aa5",
        "the stored event format changed: bump codec::EVENT's version and keep reading the old one"
    );
    assert_eq!(
        e.content_hash().to_hex(),
        "850a3b65e3d60a11f5b436fb09c63f0c3e2455f9b2f612391bb042c456d3d6ac",
        "the content hash changed: every chain would break"
    );
    assert_eq!(
        e.hash().to_hex(),
        "dc2a9016e882a3f65814719fcd7df490d2ea2694cf04be99d0706890a9ccf668",
        "the event hash changed: every chain would break"
    );
    assert_eq!(creation().hash().to_hex(), "0e9a674fa7d1febe6fcda1a02008f0822098c7e00efc9f19735eaf72369a3e94");
}

#[test]
fn a_seal_signs_as_pinned() {
    let key = SigningKey::from_bytes(&[42; 32]);
    let seal = Seal::sign(&key, &event());
    assert_eq!(hex(&seal.signature), "c65ea9d0e7a1120248e6cf3fb195dd95b526873b58abaf06f2997990c18568961a8fa7f94a399f6d4395de413b96b2fcbb7993a93fb1037756d79bbf8853060b", "the seal's signed message changed");
    seal.verify(&key.verifying_key()).unwrap();
}

#[test]
fn sync_messages_encode_as_pinned() {
    let hello = Message::Hello {
        wall_ms: 1_764_000_000_000,
        positions: vec![(Lane::Global, NodeId::new("511421"), 3)],
        heads: vec![Seal::sign(&SigningKey::from_bytes(&[42; 32]), &event())],
    };
    // Format version 1, as the previous release sends it: frozen.
    assert_eq!(hex(&hello.encode_as(1)), "530100fd00e897b69a01000001000635313134323103010c353131343231313031303031010c3531313432313130313030310202dc2a9016e882a3f65814719fcd7df490d2ea2694cf04be99d0706890a9ccf668197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d6140c65ea9d0e7a1120248e6cf3fb195dd95b526873b58abaf06f2997990c18568961a8fa7f94a399f6d4395de413b96b2fcbb7993a93fb1037756d79bbf8853060b", "the Hello changed: bump codec::SYNC_MESSAGE's version");
    assert_eq!(hex(&Message::Ack { n: 4, quarantined: 1, held: 2 }.encode_as(1)), "530102040102");
    assert_eq!(hex(&Message::Done { batches: 2 }.encode_as(1)), "53010302");
    // Version 2 keeps these three as they were, behind its own version byte.
    assert_eq!(hello.encode_as(2)[2..], hello.encode_as(1)[2..]);
    assert_eq!(hex(&Message::Ack { n: 4, quarantined: 1, held: 2 }.encode_as(2)), "530202040102");
    // Version 3 writes version 2's messages, version byte and all; the
    // newest is what `encode` writes.
    for msg in [&hello, &Message::Done { batches: 2 }] {
        assert_eq!(msg.encode_as(3), msg.encode_as(2));
        assert_eq!(msg.encode(), msg.encode_as(proto::wire::NEWEST));
    }
    for version in proto::wire::VERSIONS {
        assert_eq!(Message::decode(&hello.encode_as(version)).unwrap(), hello);
    }
    // A batch: version 1 carries the event inline (`prev` zeroed by the
    // sender), version 2 its header fields and content bytes (no `prev`).
    let mut e = event();
    e.prev = Hash::ZERO;
    let batch = Message::Batch {
        n: 1,
        segments: vec![Segment { events: vec![e], seal: Seal::sign(&SigningKey::from_bytes(&[42; 32]), &event()) }],
        unreadable: vec![],
    };
    assert_eq!(hex(&batch.encode_as(1)), "5301010101010c35313134323131303130303102010c353131343231313031303031020000000000000000000000000000000000000000000000000000000000000000fd00e897b69a0100000306e78e8be88ab30e3531313432313130313030312d31010c3531313432313130313030310104020935313134323131303106e8bdace68aa50c353131343231313031303031010c3531313432313130313030310202dc2a9016e882a3f65814719fcd7df490d2ea2694cf04be99d0706890a9ccf668197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d6140c65ea9d0e7a1120248e6cf3fb195dd95b526873b58abaf06f2997990c18568961a8fa7f94a399f6d4395de413b96b2fcbb7993a93fb1037756d79bbf8853060b", "the previous release's batch changed");
    assert_eq!(batch.encode_as(3), batch.encode_as(2));
    assert_eq!(hex(&batch.encode_as(2)), "5302010101010c35313134323131303130303102010c35313134323131303130303102fd00e897b69a010000033a430106e78e8be88ab30e3531313432313130313030312d31010c3531313432313130313030310104020935313134323131303106e8bdace68aa50c353131343231313031303031010c3531313432313130313030310202dc2a9016e882a3f65814719fcd7df490d2ea2694cf04be99d0706890a9ccf668197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d6140c65ea9d0e7a1120248e6cf3fb195dd95b526873b58abaf06f2997990c18568961a8fa7f94a399f6d4395de413b96b2fcbb7993a93fb1037756d79bbf8853060b", "the batch changed: bump codec::SYNC_MESSAGE's version");
    for version in proto::wire::VERSIONS {
        assert_eq!(Message::decode(&batch.encode_as(version)).unwrap(), batch);
    }
}

/// The case digest covers meaning (state, holder, fields, conflicts, the
/// events folded), not wording: pinned, so a change of what it covers is
/// deliberate (and bumps `fold::FOLD_VERSION`).
#[test]
fn a_case_digest_is_pinned() {
    let (c, e) = (creation(), event());
    let st = proto::fold_case(&c.case, [&c, &e]).unwrap();
    // A forward straight after intake skips pre-review: kept, superseded.
    assert_eq!(st.state.name(), "received");
    assert!(st.flagged());
    assert_eq!(st.digest().to_hex(), "bae3b2521120ed78917396d4e6e1844446476bcd715e08ddf2a419d3cc44a37d");
}
