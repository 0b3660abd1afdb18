//! The sync protocol as a state machine with no I/O.
//!
//! Two nodes that have authenticated each other (the driver learns the
//! peer's id from its certificate) each run a [`Session`]:
//!
//! 1. Both send [`Message::Hello`]: wall time and, for every (lane, origin)
//!    chain held in the peer's scope, the last position held. One round trip
//!    of metadata; nothing new means two tiny messages.
//! 2. Each side then streams what the other lacks as [`Message::Batch`]es of
//!    [`Segment`]s. A segment is one (origin, lane) run that ends exactly at
//!    one of the origin's [`Seal`]s, so one signature vouches for the whole
//!    run, whoever relays it. Origins keep a seal at every
//!    [`CHECKPOINT_INTERVAL`]th position of a chain and every node keeps the
//!    checkpoint seals it receives, so a long run is sent as segments of at
//!    most that many events, and batches stay within [`Session::batch_events`]
//!    and [`Session::batch_bytes`]. Only lanes in the receiver's scope are
//!    ever sent.
//! 3. The receiver checks each segment ([`check_batch`]) and the driver
//!    stores the accepted events durably before calling
//!    [`Session::batch_stored`], which queues the [`Message::Ack`]. A dropped
//!    connection loses at most unacknowledged batches; the next session's
//!    Hello starts from what was stored.
//! 4. [`Message::Done`] says how many batches were sent; a session is
//!    finished when both sides have sent Done and every batch is stored and
//!    acknowledged.
//!
//! Storage is reached through the [`Replica`] trait; the node implements it
//! on SQLite, the simulation in memory.

use crate::auth::{self, lane_in_scope};
use crate::catalogue::{CatalogueCheck, Catalogues};
use crate::event::{verify_chain, ChainError, ChainTip, Create, KeyId, Lane, Seal};
use crate::hlc::{Hlc, DEFAULT_MAX_DRIFT_MS};
use crate::ids::{CaseId, NodeId, Tier};
use crate::{codec, Body, Event, Hash, Topology};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Last position held per (lane, origin) chain.
pub type Positions = Vec<(Lane, NodeId, u64)>;

/// Every chain keeps the seal at each multiple of this position (a
/// checkpoint), so that a long run can be sent, and verified, in segments of
/// at most this many events.
pub const CHECKPOINT_INTERVAL: u64 = 1024;

/// Whether the seal at `pos` is a checkpoint, kept by every node that holds it.
pub fn is_checkpoint(pos: u64) -> bool {
    pos > 0 && pos.is_multiple_of(CHECKPOINT_INTERVAL)
}

/// Default target of events per batch.
pub const BATCH_EVENTS: usize = 2000;
/// Default target of encoded bytes per batch (before compression). A batch
/// stops taking segments once past either target, and a segment holds at
/// most [`CHECKPOINT_INTERVAL`] events, so an honest batch stays far below
/// the frame limits of the transport.
pub const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// One (origin, lane) run of events ending at the origin's seal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub events: Vec<Event>,
    pub seal: Seal,
}

impl Segment {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_tagged(codec::SEGMENT, self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Segment, codec::DecodeError> {
        codec::decode_tagged(codec::SEGMENT, bytes)
    }
}

/// What travels between two sessions. Its layouts on the wire, one per
/// format version, live in [`crate::wire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello {
        wall_ms: u64,
        positions: Positions,
        /// For every chain in `positions` (outside the global lane) whose
        /// origin is an incarnation of either party: the latest seal held. Two copies of one node (a
        /// restored backup, a copied data directory) are told apart by
        /// these; being signed by the node's own enrolled key, a seal is
        /// proof, where a bare hash from the peer would only be a claim.
        heads: Vec<Seal>,
    },
    Batch {
        n: u32,
        segments: Vec<Segment>,
        /// Segments received whose content this release cannot read (a
        /// newer release wrote it): held for after an upgrade. Only
        /// decoding fills this; it never travels.
        unreadable: Vec<Unreadable>,
    },
    /// Batch `n` is stored; `refused` of its events went to quarantine and
    /// `held` wait (for their case, catalogue version, voucher, what
    /// their context names, or an upgrade of the receiver), so the sender's
    /// staff are told either way.
    Ack {
        n: u32,
        quarantined: u32,
        held: u32,
    },
    Done {
        batches: u32,
    },
}

/// A received segment whose events' content is of a format version newer
/// than this release reads: neither stored nor quarantined, but held (the
/// sender sends it again) until this node is upgraded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub origin: NodeId,
    pub lane: Lane,
    pub first_pos: u64,
    pub events: u32,
    /// The content format version met.
    pub content_version: u8,
}

impl Message {
    /// Encodes in the newest format version.
    pub fn encode(&self) -> Vec<u8> {
        crate::wire::encode(self, crate::wire::NEWEST)
    }
    /// Encodes in format `version`, one of [`crate::wire::VERSIONS`].
    pub fn encode_as(&self, version: u8) -> Vec<u8> {
        crate::wire::encode(self, version)
    }
    /// Decodes a message of any format version this release speaks.
    pub fn decode(bytes: &[u8]) -> Result<Message, codec::DecodeError> {
        crate::wire::decode(bytes)
    }
}

/// Whether `node` may relay `lane`: in its scope now, or a village's lane
/// it held before the village moved away (it hands it up to the county).
pub fn lane_entitled(topology: &Topology, node: &NodeId, lane: &Lane) -> bool {
    match lane {
        Lane::Global => true,
        Lane::Home(home) => topology.was_within(home, node),
    }
}

/// The event content format version of the county's publications
/// (`Body::Publish`): a peer speaking an older one cannot learn of a move.
const PUBLICATIONS_CONTENT_VERSION: u8 = 2;

/// Whether `lane` is in `peer`'s scope under the map before any village
/// moved (a village's lane under its first township): the map of a release
/// that cannot read the county's topology publications.
fn in_scope_before_moves(topology: &Topology, peer: &NodeId, lane: &Lane) -> bool {
    let Lane::Home(home) = lane else { return true };
    match topology.get(home).and_then(|n| n.former_parents.first()) {
        None => lane_in_scope(topology, peer, lane),
        Some(first) => {
            home.base() == peer.base() || first.base() == peer.base() || topology.tier_of(peer) == Some(Tier::County)
        }
    }
}

/// The lanes two nodes share. Scopes nest (a village's lies within its
/// township's, which lies within the county's), so this is the scope of
/// the lower of the two: the global lane and the home lane of every node
/// in its subtree. `None` means every lane.
pub fn shared_lanes(topology: &Topology, a: &NodeId, b: &NodeId) -> Option<Vec<Lane>> {
    let tier = |n: &NodeId| topology.tier_of(n).unwrap_or(Tier::Village);
    let lower = if tier(a) <= tier(b) { a } else { b };
    if tier(lower) == Tier::County {
        return None;
    }
    let mut lanes = vec![Lane::Global];
    // With a lane a village took away from the lower node when it moved:
    // the positions travel, so that the lower node hands up what it still
    // holds; nothing of it is sent down (`plan_sending`).
    lanes.extend(topology.ever_within(lower).into_iter().map(|n| Lane::Home(n.id.clone())));
    Some(lanes)
}

/// Read access to a node's ledger.
pub trait Replica {
    type Error: std::fmt::Display;
    /// Last position per (lane, origin) held, for `lanes` (all when `None`).
    fn positions(&self, lanes: Option<&[Lane]>) -> Result<Positions, Self::Error>;
    /// Events of a chain with `after < pos <= upto`, ascending.
    fn chain_events(&self, lane: &Lane, origin: &NodeId, after: u64, upto: u64) -> Result<Vec<Event>, Self::Error>;
    /// The latest seal held for a chain.
    fn seal(&self, origin: &NodeId, lane: &Lane) -> Result<Option<Seal>, Self::Error>;
    /// The held checkpoint seal (see [`is_checkpoint`]) of a chain with the
    /// lowest position above `after`, if any.
    fn checkpoint_after(&self, origin: &NodeId, lane: &Lane, after: u64) -> Result<Option<Seal>, Self::Error>;
    /// The last event held of a chain.
    fn tip(&self, origin: &NodeId, lane: &Lane) -> Result<ChainTip, Self::Error>;
    /// A case's creation, if held.
    fn create_of(&self, case: &CaseId) -> Result<Option<Create>, Self::Error>;
    /// True when this node quarantined the event `(origin, seq)`: an event
    /// whose context names it waits for it no longer (it will never be
    /// held here).
    fn is_quarantined_here(&self, origin: &NodeId, seq: u64) -> Result<bool, Self::Error>;
    /// The `after` stamp of a voucher held for this incarnation, if any.
    fn voucher(&self, origin: &NodeId) -> Result<Option<Hlc>, Self::Error>;
    /// What the county said about `key` as a key of `node` (its
    /// enrolments and revocations in the global lane).
    fn key_status(&self, node: &NodeId, key: &KeyId) -> Result<KeyStatus, Self::Error>;
    /// The hash of the event at `pos` of a chain, if held.
    fn hash_at(&self, origin: &NodeId, lane: &Lane, pos: u64) -> Result<Option<Hash>, Self::Error>;
}

/// What a receiver knows of a signing key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    /// Not (yet) enrolled by the county: seals under it are held.
    Unknown,
    /// Enrolled and not revoked.
    Enrolled,
    /// Revoked; valid only for the chain heads the county held then.
    Revoked { upto: Vec<(Lane, NodeId, u64, Hash)> },
}

impl KeyStatus {
    /// The status after a global event about this key.
    pub fn after(self, body: &Body) -> KeyStatus {
        match body {
            Body::Revoke { upto, .. } => KeyStatus::Revoked { upto: upto.clone() },
            Body::Enrol { .. } if self == KeyStatus::Unknown => KeyStatus::Enrolled,
            _ => self,
        }
    }
}

/// The protocol was broken or storage failed; the session is over.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The peer sent something out of turn.
    #[error("protocol violation by {peer}: {what}")]
    Protocol { peer: NodeId, what: String },
    /// Reading the local ledger failed.
    #[error("reading the local ledger failed: {0}")]
    Storage(String),
}

/// Which peers a node talks to: a village its own township or the county;
/// a township its villages and the county; the county everyone.
pub fn allowed_peer(topology: &Topology, me: &NodeId, peer: &NodeId) -> bool {
    let (Some(a), Some(b)) = (topology.get(me), topology.get(peer)) else { return false };
    match (a.tier, b.tier) {
        (Tier::County, Tier::Township | Tier::Village) => true,
        (Tier::Township | Tier::Village, Tier::County) => true,
        // A village and its township, or the township it moved away from
        // (which tells it of the move; only the global lane is shared).
        (Tier::Township, Tier::Village) => {
            !a.retired && !b.retired && (b.parent.as_ref() == Some(me) || b.former_parents.contains(me))
        }
        (Tier::Village, Tier::Township) => {
            !a.retired && !b.retired && (a.parent.as_ref() == Some(peer) || a.former_parents.contains(peer))
        }
        _ => false,
    }
}

/// Why input was refused, as a kind a program (and the QUIC close, and an
/// administrator's filter) can act on; the reason's text says the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QuarantineKind {
    /// Ids out of range, a malformed origin, a segment mixing chains.
    Malformed,
    /// A lane outside this node's scope, or one the sender may not relay.
    OutOfScope,
    /// The seal's key was never enrolled by the county for its node.
    KeyNotEnrolled,
    /// The seal's key was revoked, past what the revocation vouches for.
    KeyRevoked,
    /// The seal's signature does not verify.
    BadSeal,
    /// The events do not form the chain the seal names (altered, forged,
    /// forked, or a gap).
    BrokenChain,
    /// Well formed and authentic, but its origin may not author it.
    NotAuthorised,
}

impl QuarantineKind {
    /// The stable name (JSON, the store, filters).
    pub fn name(self) -> &'static str {
        match self {
            QuarantineKind::Malformed => "malformed",
            QuarantineKind::OutOfScope => "out_of_scope",
            QuarantineKind::KeyNotEnrolled => "key_not_enrolled",
            QuarantineKind::KeyRevoked => "key_revoked",
            QuarantineKind::BadSeal => "bad_seal",
            QuarantineKind::BrokenChain => "broken_chain",
            QuarantineKind::NotAuthorised => "not_authorised",
        }
    }
}

/// Quarantined input: never applied, kept with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    pub origin: NodeId,
    pub seq: u64,
    pub kind: QuarantineKind,
    pub reason: String,
    /// The event, when it is in the receiver's scope; otherwise only its id
    /// is kept (data outside a node's scope is never stored).
    pub event: Option<Event>,
}

/// What to do with a received batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Events to store, in order, each verified and authorised, with the
    /// hash the chain check computed.
    pub accept: Vec<(Event, Hash)>,
    /// Seals of fully accepted segments.
    pub seals: Vec<Seal>,
    pub quarantined: Vec<Quarantined>,
    /// Events set aside for now (their case is not known yet); the next
    /// session sends them again.
    pub deferred: usize,
    /// Highest timestamp accepted, for the receiver's clock (stamps too
    /// far ahead of it are left out).
    pub max_hlc: Hlc,
    /// Accepted events stamped too far ahead of this node's clock.
    pub ahead: usize,
    /// Accepted events whose origin is an incarnation of the receiver
    /// itself, by origin. A node receiving events of its own current
    /// origin learns that its store is older than its own history: it was
    /// restored from a backup, copied, or re-initialised.
    pub own_received: BTreeMap<NodeId, u64>,
    /// Chains of the receiver's own origins, signed with its own key, that
    /// do not continue its stored chain: another copy of this node wrote a
    /// different history. Not stored, not quarantined: the node recovers.
    pub own_diverged: Vec<(Lane, NodeId)>,
    /// The keys (node, key) segments of this batch were judged under while
    /// not revoked. The receiver stores the batch only if none of them has
    /// been revoked since (the check runs outside its write transaction).
    pub keys_relied: BTreeSet<(NodeId, KeyId)>,
}

fn chain_reason(e: &ChainError) -> String {
    format!("hash chain: {e}")
}

/// Checks a received batch against the local ledger. Pure apart from reads
/// through `replica`. Takes the segments by value: accepted events move
/// into the verdict without copying.
pub fn check_batch<R: Replica>(
    replica: &R,
    topology: &Topology,
    catalogues: &Catalogues,
    me: &NodeId,
    peer: &NodeId,
    segments: Vec<Segment>,
    now_ms: u64,
) -> Result<Verdict, SyncError> {
    let storage = |e: R::Error| SyncError::Storage(e.to_string());
    let mut v = Verdict::default();
    // Creations accepted earlier in this batch, for authorising later events.
    let mut creates: BTreeMap<CaseId, Create> = BTreeMap::new();
    let peer_is_county = topology.tier_of(peer) == Some(Tier::County);
    // Quarantined events are kept for administrators only when their own lane
    // is in this node's scope; otherwise only their ids are.
    let quarantine_all =
        |v: &mut Verdict, events: &mut dyn Iterator<Item = Event>, kind: QuarantineKind, reason: String| {
            for e in events {
                let keep = lane_in_scope(topology, me, &e.lane) && auth::lane_of(&e.case, &e.body) == e.lane;
                v.quarantined.push(Quarantined {
                    origin: e.id.origin.clone(),
                    seq: e.id.seq,
                    kind,
                    reason: reason.clone(),
                    event: keep.then_some(e),
                });
            }
        };
    // Chain tips as this batch advances them, so that two segments of one
    // chain (a fork) are checked against each other, not both against the
    // stored tip.
    let mut tips: BTreeMap<(NodeId, Lane), ChainTip> = BTreeMap::new();
    // Key statuses as enrolments and revocations earlier in this batch
    // change them.
    let mut keys: BTreeMap<(NodeId, KeyId), KeyStatus> = BTreeMap::new();
    // Causal delivery: an event is applied only once every event its
    // context covers is held. The rest of a segment waiting for one is
    // tried again after the batch's other segments (which may hold what it
    // waits for), and otherwise held back for the next session; a context
    // naming events that never arrive keeps it waiting, never applied.
    // Vouchers for incarnations accepted earlier in this batch.
    let mut vouched: BTreeMap<NodeId, Hlc> = BTreeMap::new();
    // Publications of the county earlier in this batch: later segments
    // (a creation under the catalogue version just received) are judged by
    // them already.
    let mut catalogues = std::borrow::Cow::Borrowed(catalogues);
    let mut map = std::borrow::Cow::Borrowed(topology);
    let mut queue: VecDeque<Segment> = segments.into();
    let mut waiting: Vec<Segment> = Vec::new();
    let mut accepted_before_round = 0;
    loop {
        let Some(Segment { events, seal }) = queue.pop_front() else {
            if waiting.is_empty() || v.accept.len() == accepted_before_round {
                v.deferred += waiting.iter().map(|s| s.events.len()).sum::<usize>();
                break;
            }
            accepted_before_round = v.accept.len();
            queue = std::mem::take(&mut waiting).into();
            continue;
        };
        let (origin, lane) = (&seal.origin, &seal.lane);
        // SQLite stores integers as i64; larger ids cannot be genuine.
        if events.iter().any(|e| e.id.seq > i64::MAX as u64 || e.pos > i64::MAX as u64) {
            quarantine_all(
                &mut v,
                &mut events.into_iter(),
                QuarantineKind::Malformed,
                "seq or position out of range".into(),
            );
            continue;
        }
        if !lane_in_scope(&map, me, lane) && lane_entitled(&map, me, lane) {
            // A lane moved away from this township: a peer that has not
            // heard of the move yet sends it; held, not taken.
            v.deferred += events.len();
            continue;
        }
        if !lane_in_scope(&map, me, lane) {
            quarantine_all(
                &mut v,
                &mut events.into_iter(),
                QuarantineKind::OutOfScope,
                format!("lane {lane} is outside this node's scope"),
            );
            continue;
        }
        if !peer_is_county && !lane_entitled(&map, peer, lane) {
            quarantine_all(
                &mut v,
                &mut events.into_iter(),
                QuarantineKind::OutOfScope,
                format!("sender {peer} has no authority over lane {lane}"),
            );
            continue;
        }
        if !origin.is_well_formed_origin() {
            quarantine_all(
                &mut v,
                &mut events.into_iter(),
                QuarantineKind::Malformed,
                "malformed origin (incarnation tag)".into(),
            );
            continue;
        }
        if events.iter().any(|e| &e.id.origin != origin || &e.lane != lane) {
            quarantine_all(&mut v, &mut events.into_iter(), QuarantineKind::Malformed, "segment mixes chains".into());
            continue;
        }
        let node = origin.node();
        let mut status = match keys.get(&(node.clone(), seal.key)) {
            Some(s) => s.clone(),
            None => replica.key_status(&node, &seal.key).map_err(storage)?,
        };
        if status == KeyStatus::Unknown && map.verifying_key(&node).map(|k| KeyId::of(&k)) == Some(seal.key) {
            // The topology the county published names this key.
            status = KeyStatus::Enrolled;
        }
        match &status {
            KeyStatus::Unknown if map.tier_of(me) == Some(Tier::County) => {
                // The county enrols every key: one it does not know was
                // never enrolled.
                let reason = format!("signed with key {}, which the county never enrolled for {node}", seal.key);
                quarantine_all(&mut v, &mut events.into_iter(), QuarantineKind::KeyNotEnrolled, reason);
                continue;
            }
            KeyStatus::Unknown => {
                // Perhaps enrolled by the county after our last contact
                // with it: held until the enrolment arrives.
                v.deferred += events.len();
                continue;
            }
            KeyStatus::Revoked { upto } => {
                // Exactly a head the county held when it revoked; or, from
                // the county itself, a checkpoint before such a head (the
                // county relays only what it accepted).
                let vouched = upto.iter().any(|(l, o, p, h)| {
                    l == lane && o == origin && (*p == seal.pos && *h == seal.head || peer_is_county && seal.pos < *p)
                });
                if !vouched {
                    let reason = format!("signed with key {} of {node}, which the county has revoked", seal.key);
                    quarantine_all(&mut v, &mut events.into_iter(), QuarantineKind::KeyRevoked, reason);
                    continue;
                }
            }
            KeyStatus::Enrolled => {
                v.keys_relied.insert((node.clone(), seal.key));
            }
        }
        let Some(key) = seal.key.verifying_key() else {
            quarantine_all(
                &mut v,
                &mut events.into_iter(),
                QuarantineKind::Malformed,
                format!("malformed key in the seal of {origin}"),
            );
            continue;
        };
        if let Err(e) = seal.verify(&key) {
            quarantine_all(&mut v, &mut events.into_iter(), QuarantineKind::BadSeal, format!("seal: {e}"));
            continue;
        }
        let tip = match tips.get(&(origin.clone(), lane.clone())) {
            Some(t) => t.clone(),
            None => replica.tip(origin, lane).map_err(storage)?,
        };
        // Events already held are skipped (a resent batch). They are not
        // passed on unverified: a relay must not be able to plant a "twin"
        // of a held event.
        // Our own chain as another copy wrote it keeps its overlap with
        // ours: it is the proof of a divergence (see below).
        let overlap = origin.is_incarnation_of(me) && events.first().is_some_and(|e| e.pos <= tip.pos);
        let all = if overlap { Some(events.clone()) } else { None };
        let mut new: Vec<Event> = events.into_iter().filter(|e| e.pos > tip.pos).collect();
        if new.is_empty() && all.is_none() {
            continue;
        }
        if let Some(mut all) = all {
            // A segment of our own origin that starts within what we hold:
            // rebuilt from our own event before it, it must end at the seal
            // (so it is genuine history our key signed), and differ from our
            // events where they overlap. Only that is proof that another
            // copy of this node wrote a different history.
            if proves_divergence(replica, &mut all, &seal, &tip).map_err(storage)? {
                v.deferred += all.iter().filter(|e| e.pos > tip.pos).count();
                v.own_diverged.push((lane.clone(), origin.clone()));
                continue;
            }
            if new.is_empty() {
                continue;
            }
        }
        // `prev` does not travel (see `Session::poll_transmit`): rebuild it
        // from our tip and each previous event. The seal then decides: the
        // rebuilt chain must end in the hash the origin signed, so an
        // altered, forged, missing or forked event anywhere fails here.
        let mut headers = Vec::with_capacity(new.len());
        let mut hashes = Vec::with_capacity(new.len());
        let mut prev = tip.hash;
        for e in &mut new {
            e.prev = prev;
            let h = e.header();
            prev = h.hash();
            hashes.push(prev);
            headers.push(h);
        }
        let last = new.last().expect("non-empty");
        let continues = last.pos == seal.pos && last.id.seq == seal.seq && prev == seal.head;
        let mine = origin.is_incarnation_of(me);
        if !continues {
            let reason = "the events do not end at the origin's seal (altered, forged or forked)".to_string();
            quarantine_all(&mut v, &mut new.into_iter(), QuarantineKind::BrokenChain, reason);
            continue;
        }
        if let Err(e) = verify_chain(origin, lane, &tip, &headers) {
            quarantine_all(&mut v, &mut new.into_iter(), QuarantineKind::BrokenChain, chain_reason(&e));
            continue;
        }
        let mut complete = true;
        let mut rest = new.into_iter().zip(hashes).peekable();
        while let Some((e, hash)) = rest.next() {
            let quarantine_rest = |v: &mut Verdict, e: Event, reason: String, rest: &mut dyn Iterator<Item = Event>| {
                quarantine_all(v, &mut std::iter::once(e).chain(rest), QuarantineKind::NotAuthorised, reason);
            };
            let stored;
            let create = match &e.body {
                Body::Create(_) | Body::Revoke { .. } | Body::Enrol { .. } | Body::Incarnate { .. } => None,
                _ => match creates.get(&e.case) {
                    Some(c) => Some(c),
                    None => {
                        stored = replica.create_of(&e.case).map_err(storage)?;
                        stored.as_ref()
                    }
                },
            };
            let needs_create = !(e.body.is_global() || matches!(e.body, Body::Create(_)));
            if needs_create && create.is_none() {
                // The case's creation has not arrived yet: try again next time.
                v.deferred += 1 + rest.count();
                complete = false;
                break;
            }
            // Acting on a case means having seen it: the context must cover
            // the event that created it (local authoring always does).
            let saw_creation = e.case.minted_by().zip(e.case.minted_seq()).is_some_and(|(o, s)| e.context.get(&o) >= s);
            if needs_create && !saw_creation {
                let reason = "not authorised: the event's context does not include its case's creation".to_string();
                quarantine_rest(&mut v, e, reason, &mut rest.by_ref().map(|(e, _)| e));
                complete = false;
                break;
            }
            // An incarnation writes only once vouched for, and never stamped
            // before the voucher's `after` (no fresh chain to backdate with).
            let incarnation = origin.as_str() != origin.base() && map.tier_of(origin) != Some(Tier::County);
            if incarnation {
                let after = match vouched.get(origin) {
                    Some(h) => Some(*h),
                    None => replica.voucher(origin).map_err(storage)?,
                };
                match after {
                    None => {
                        let mut remainder = vec![e];
                        remainder.extend(rest.by_ref().map(|(e, _)| e));
                        waiting.push(Segment { events: remainder, seal: seal.clone() });
                        complete = false;
                        break;
                    }
                    Some(after) if e.hlc < after => {
                        let reason = format!(
                            "not authorised: stamped {} before its incarnation {origin} was vouched for (after {after})",
                            e.hlc
                        );
                        quarantine_rest(&mut v, e, reason, &mut rest.by_ref().map(|(e, _)| e));
                        complete = false;
                        break;
                    }
                    Some(_) => {}
                }
            }
            let mut missing = false;
            for dot in e.context.iter() {
                let held = if dot.actor == origin {
                    dot.counter < e.id.seq
                } else {
                    let key = (dot.actor.clone(), lane.clone());
                    let tip_seq = match tips.get(&key) {
                        Some(t) => t.seq,
                        None => replica.tip(dot.actor, lane).map_err(storage)?.seq,
                    };
                    tip_seq >= dot.counter
                        || v.quarantined.iter().any(|r| &r.origin == dot.actor && r.seq == dot.counter)
                        || replica.is_quarantined_here(dot.actor, dot.counter).map_err(storage)?
                };
                missing |= !held;
            }
            if missing && e.context.get(origin) >= e.id.seq {
                let reason =
                    "not authorised: the event's context claims events of its own origin not before it".to_string();
                quarantine_rest(&mut v, e, reason, &mut rest.by_ref().map(|(e, _)| e));
                complete = false;
                break;
            }
            if missing {
                let mut remainder = vec![e];
                remainder.extend(rest.by_ref().map(|(e, _)| e));
                waiting.push(Segment { events: remainder, seal: seal.clone() });
                complete = false;
                break;
            }
            if let Err(err) = crate::limits::check_actor(&e.actor) {
                quarantine_rest(&mut v, e, format!("not authorised: {err}"), &mut rest.by_ref().map(|(e, _)| e));
                complete = false;
                break;
            }
            // A node the county retired writes nothing after its retirement.
            let late = if map.retired_before(origin, e.hlc.wall_ms) {
                Some(format!("{} was retired by the county before this event was stamped", origin.node()))
            } else if let Body::Create(c) = &e.body {
                catalogues.stale_creation(&c.item, c.catalogue_version, e.hlc.wall_ms).map(|v| {
                    format!(
                        "item {} taken under catalogue v{} more than two weeks after v{v} withdrew it",
                        c.item, c.catalogue_version
                    )
                })
            } else {
                None
            };
            if let Some(reason) = late {
                quarantine_rest(&mut v, e, format!("not authorised: {reason}"), &mut rest.by_ref().map(|(e, _)| e));
                complete = false;
                break;
            }
            match auth::authorize_received(&map, &catalogues, origin, e.id.seq, lane, &e.case, create, &e.body) {
                Ok(()) => {}
                Err(auth::AuthError::Catalogue(CatalogueCheck::VersionNotHeld(_))) => {
                    // Not judged yet: held back (not stored, not relayed)
                    // until the catalogue version arrives.
                    v.deferred += 1 + rest.count();
                    complete = false;
                    break;
                }
                Err(err) => {
                    quarantine_rest(&mut v, e, format!("not authorised: {err}"), &mut rest.by_ref().map(|(e, _)| e));
                    complete = false;
                    break;
                }
            }
            if let Body::CiteLicence { licence, .. } = &e.body {
                // The licence must verify here too, not only where it was
                // cited: its signature, under a key the county enrolled for
                // its issuer, valid on the day it was cited.
                let licence = crate::licence::Licence::from((**licence).clone());
                let status = match licence.key() {
                    Some(key) => match keys.get(&(licence.terms.issuer.clone(), key)) {
                        Some(s) => s.clone(),
                        None => replica.key_status(&licence.terms.issuer, &key).map_err(storage)?,
                    },
                    None => KeyStatus::Unknown,
                };
                let county_key = map.verifying_key(&map.county().id);
                let day = crate::calendar::Day::of_ms(e.hlc.wall_ms);
                let verified = match create {
                    Some(c) if !licence.terms.is_holder_of(c) => Err(format!(
                        "the licence is {}'s ({}), not this case's applicant's",
                        licence.terms.holder, licence.terms.holder_id
                    )),
                    _ => Ok(()),
                };
                if let Err(reason) = verified {
                    let reason = format!("not authorised: {reason}");
                    quarantine_rest(&mut v, e, reason, &mut rest.by_ref().map(|(e, _)| e));
                    complete = false;
                    break;
                }
                match licence.verify(&status, county_key.as_ref(), None, day) {
                    Ok(()) => {}
                    Err(crate::licence::LicenceError::KeyNotEnrolled(_)) if map.tier_of(me) != Some(Tier::County) => {
                        // Perhaps enrolled after our last contact with the county.
                        v.deferred += 1 + rest.count();
                        complete = false;
                        break;
                    }
                    Err(err) => {
                        let reason = format!("not authorised: the licence cited does not verify: {err}");
                        quarantine_rest(&mut v, e, reason, &mut rest.by_ref().map(|(e, _)| e));
                        complete = false;
                        break;
                    }
                }
            }
            if let Body::Publish(p) = &e.body {
                let applied = match &**p {
                    crate::publication::Publication::Topology(change) => {
                        map.to_mut().apply_at(change, e.hlc.wall_ms).map_err(|e| e.to_string())
                    }
                    _ => catalogues.to_mut().apply_at(p, e.hlc.wall_ms).map_err(|e| e.to_string()),
                };
                if let Err(err) = applied {
                    quarantine_rest(&mut v, e, format!("not authorised: {err}"), &mut rest.by_ref().map(|(e, _)| e));
                    complete = false;
                    break;
                }
            }
            if let Body::Create(c) = &e.body {
                creates.entry(e.case.clone()).or_insert_with(|| c.clone());
            }
            if let Body::Incarnate { origin, after } = &e.body {
                vouched.entry(origin.clone()).or_insert(*after);
            }
            if let Body::Enrol { node, key, .. } | Body::Revoke { node, key, .. } = &e.body {
                // Later segments of this batch are judged by it already.
                let before = match keys.get(&(node.clone(), *key)) {
                    Some(s) => s.clone(),
                    None => replica.key_status(node, key).map_err(storage)?,
                };
                keys.insert((node.clone(), *key), before.after(&e.body));
            }
            // A stamp far ahead of this node's clock (its author's clock was
            // wrong) is accepted, the fold orders it causally and flags it,
            // but it never drags this node's clock forward.
            if e.hlc.wall_ms > now_ms.saturating_add(DEFAULT_MAX_DRIFT_MS) {
                v.ahead += 1;
            } else {
                v.max_hlc = v.max_hlc.max(e.hlc);
            }
            if mine {
                *v.own_received.entry(e.id.origin.clone()).or_default() += 1;
            }
            v.accept.push((e, hash));
        }
        if let Some(t) = v.accept.last().filter(|(e, _)| &e.id.origin == origin && &e.lane == lane) {
            let (e, hash) = t;
            tips.insert(
                (origin.clone(), lane.clone()),
                ChainTip { pos: e.pos, seq: e.id.seq, hash: *hash, hlc: e.hlc },
            );
        }
        if complete {
            v.seals.push(seal);
        }
    }
    Ok(v)
}

/// Whether `events` (of our own origin, starting at or before our tip) are
/// a genuine history that differs from ours: rebuilt from our own event
/// before the first of them, they end exactly at the verified `seal`, and
/// one of them is not the event we hold at its position.
fn proves_divergence<R: Replica>(
    replica: &R,
    events: &mut [Event],
    seal: &Seal,
    tip: &ChainTip,
) -> Result<bool, R::Error> {
    let Some(first) = events.first() else { return Ok(false) };
    let (origin, lane) = (first.id.origin.clone(), first.lane.clone());
    let mut prev = match first.pos {
        0 => return Ok(false),
        1 => Hash::ZERO,
        p => match replica.hash_at(&origin, &lane, p - 1)? {
            Some(h) => h,
            None => return Ok(false),
        },
    };
    for e in events.iter_mut() {
        if e.id.origin != origin || e.lane != lane {
            return Ok(false);
        }
        e.prev = prev;
        prev = e.hash();
    }
    let last = events.last().expect("non-empty");
    if last.pos != seal.pos || last.id.seq != seal.seq || prev != seal.head {
        return Ok(false);
    }
    for e in events.iter().filter(|e| e.pos <= tip.pos) {
        if replica.hash_at(&origin, &lane, e.pos)? != Some(e.hash()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Counters of one session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub sent_events: u64,
    pub sent_batches: u32,
    pub received_events: u64,
    pub received_batches: u32,
    pub quarantined_events: u64,
    pub deferred_events: u64,
    /// Received events held because a newer release wrote their content
    /// (see [`Unreadable`]): this node needs an upgrade to take them.
    pub newer_format_events: u64,
    /// The newest content format version met among them (0: none).
    pub newer_format_version: u8,
    /// Events not sent because the peer's release cannot read them (it
    /// gets them once upgraded).
    pub withheld_events: u64,
    /// Of the events we sent, how many the peer quarantined.
    pub quarantined_by_peer: u64,
    /// Of the events we sent, how many the peer holds back for now.
    pub held_by_peer: u64,
    /// Peer's wall clock minus ours, from the Hello (ms).
    pub peer_clock_offset_ms: Option<i64>,
    /// Events of this node's own origins received, by origin (see
    /// [`Verdict::own_received`]).
    pub own_received: BTreeMap<NodeId, u64>,
}

/// A chain of one node's origin that two replicas hold differently: two
/// copies of that node wrote different histories.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Divergence {
    pub lane: Lane,
    pub origin: NodeId,
    /// Position held here and at the peer.
    pub here: u64,
    pub there: u64,
}

/// How far apart two wall clocks may be before staff are told.
pub const CLOCK_WARNING_MS: i64 = 2 * 60 * 1000;

/// One side of a sync session.
#[derive(Debug)]
pub struct Session {
    me: NodeId,
    peer: NodeId,
    outbox: VecDeque<Message>,
    /// Chains to send: (lane, origin, peer's position, seal to end at).
    plan: VecDeque<(Lane, NodeId, u64, Seal)>,
    /// The chains of the shared lanes held when the session started (the
    /// Hello's list): the plan reads each one's seal as it is then. A
    /// chain begun in between goes at the next session.
    chains: Vec<(Lane, NodeId)>,
    got_hello: bool,
    next_batch: u32,
    unacked: BTreeSet<u32>,
    sent_done: bool,
    peer_done: Option<u32>,
    stored: BTreeSet<u32>,
    /// Events of a received batch held as unreadable, until it is stored.
    held_unreadable: BTreeMap<u32, u64>,
    /// Maximum batches in flight without acknowledgement.
    pub window: usize,
    /// Target events per batch (a batch holds whole segments).
    pub batch_events: usize,
    /// Target encoded bytes per batch.
    pub batch_bytes: usize,
    /// The newest event content format version the peer reads: the driver
    /// lowers it for a peer of an earlier release (`crate::wire`).
    pub content_versions: u8,
    pub stats: Stats,
    /// Chains of this node's own origins that another copy of it wrote
    /// differently: never sent, the node recovers.
    pub own_diverged: BTreeSet<Divergence>,
    /// Chains of the peer's origins that the peer holds differently from
    /// us: the peer is a second copy of a node, or a stale one.
    pub peer_diverged: BTreeSet<Divergence>,
    /// Chains the peer's Hello showed it holds less of than we do, with
    /// the position it holds (a village reads here that the county lost
    /// what its receipt says it holds).
    pub peer_lacks: Vec<(Lane, NodeId, u64)>,
}

impl Session {
    /// Starts a session with `peer` and queues our Hello.
    pub fn start<R: Replica>(
        replica: &R,
        topology: &Topology,
        me: &NodeId,
        peer: &NodeId,
        now_ms: u64,
    ) -> Result<Session, SyncError> {
        let lanes = shared_lanes(topology, me, peer);
        let storage = |e: R::Error| SyncError::Storage(e.to_string());
        let positions = replica.positions(lanes.as_deref()).map_err(storage)?;
        // The peer's chains as we hold them (a second copy of the peer
        // learns of itself from these) and our own (so a peer holding more
        // of them can tell us, by sending our chain whole, that we are a
        // second copy). Outside the global lane.
        let mut heads = Vec::new();
        for (lane, origin, _) in &positions {
            if (origin.is_incarnation_of(peer) || origin.is_incarnation_of(me)) && *lane != Lane::Global {
                if let Some(seal) = replica.seal(origin, lane).map_err(storage)? {
                    heads.push(seal);
                }
            }
        }
        let mut s = Session {
            me: me.clone(),
            peer: peer.clone(),
            outbox: VecDeque::new(),
            plan: VecDeque::new(),
            chains: positions.iter().map(|(lane, origin, _)| (lane.clone(), origin.clone())).collect(),
            got_hello: false,
            next_batch: 0,
            unacked: BTreeSet::new(),
            sent_done: false,
            peer_done: None,
            stored: BTreeSet::new(),
            held_unreadable: BTreeMap::new(),
            window: 8,
            batch_events: BATCH_EVENTS,
            batch_bytes: BATCH_BYTES,
            content_versions: codec::EVENT_CONTENT_NEWEST,
            stats: Stats::default(),
            own_diverged: BTreeSet::new(),
            peer_diverged: BTreeSet::new(),
            peer_lacks: Vec::new(),
        };
        s.outbox.push_back(Message::Hello { wall_ms: now_ms, positions, heads });
        Ok(s)
    }

    fn violation(&self, what: impl Into<String>) -> SyncError {
        SyncError::Protocol { peer: self.peer.clone(), what: what.into() }
    }

    /// Handles a message from the peer. A batch is returned for the driver
    /// to check ([`check_batch`]), store, and report with
    /// [`Session::batch_stored`].
    pub fn handle<R: Replica>(
        &mut self,
        msg: Message,
        replica: &R,
        topology: &Topology,
        now_ms: u64,
    ) -> Result<Option<(u32, Vec<Segment>)>, SyncError> {
        match msg {
            Message::Hello { wall_ms, positions, heads } => {
                if self.got_hello {
                    // A repeated hello (a duplicated message) changes nothing.
                    return Ok(None);
                }
                self.got_hello = true;
                self.compare_heads(replica, topology, &heads)?;
                let offset = i128::from(wall_ms) - i128::from(now_ms);
                self.stats.peer_clock_offset_ms =
                    Some(offset.clamp(i128::from(i64::MIN + 1), i128::from(i64::MAX)) as i64);
                self.plan_sending(replica, topology, positions)?;
                Ok(None)
            }
            Message::Batch { n, segments, unreadable } => {
                if !self.got_hello {
                    return Err(self.violation("batch before hello"));
                }
                if self.stored.contains(&n) {
                    // A duplicate of a batch already stored: acknowledge again.
                    self.outbox.push_back(Message::Ack { n, quarantined: 0, held: 0 });
                    return Ok(None);
                }
                if unreadable.is_empty() {
                    return Ok(Some((n, segments)));
                }
                // A run this release cannot read is held, and so is the rest
                // of its chain in this batch (it could not continue a chain
                // with a gap in it); other chains go on.
                let mut held = 0u64;
                for u in &unreadable {
                    held += u64::from(u.events);
                    self.stats.newer_format_version = self.stats.newer_format_version.max(u.content_version);
                }
                let (later, readable): (Vec<Segment>, Vec<Segment>) = segments.into_iter().partition(|s| {
                    unreadable
                        .iter()
                        .any(|u| u.origin == s.seal.origin && u.lane == s.seal.lane && s.seal.pos > u.first_pos)
                });
                held += later.iter().map(|s| s.events.len() as u64).sum::<u64>();
                self.stats.newer_format_events += held;
                self.held_unreadable.insert(n, held);
                Ok(Some((n, readable)))
            }
            Message::Ack { n, quarantined, held } => {
                if self.unacked.remove(&n) {
                    self.stats.quarantined_by_peer += u64::from(quarantined);
                    self.stats.held_by_peer += u64::from(held);
                }
                Ok(None)
            }
            Message::Done { batches } => {
                self.peer_done = Some(batches);
                Ok(None)
            }
        }
    }

    /// The driver stored batch `n` durably (with `verdict`'s outcome).
    pub fn batch_stored(&mut self, n: u32, verdict: &Verdict) {
        if self.stored.insert(n) {
            self.stats.received_batches += 1;
            self.stats.received_events += verdict.accept.len() as u64;
            self.stats.quarantined_events += verdict.quarantined.len() as u64;
            self.stats.deferred_events += verdict.deferred as u64;
            for (origin, n) in &verdict.own_received {
                *self.stats.own_received.entry(origin.clone()).or_default() += n;
            }
            for (lane, origin) in &verdict.own_diverged {
                self.own_diverged.insert(Divergence { lane: lane.clone(), origin: origin.clone(), here: 0, there: 0 });
            }
        }
        let unreadable = self.held_unreadable.remove(&n).unwrap_or(0);
        let held = (verdict.deferred as u64 + unreadable).min(u64::from(u32::MAX)) as u32;
        self.outbox.push_back(Message::Ack { n, quarantined: verdict.quarantined.len() as u32, held });
    }

    /// Compares the peer's seals of chains of either party's origins with
    /// ours: where we hold the sealed position, our event there must be the
    /// one the seal names. Only a seal under a key the county enrolled for
    /// that node counts (a peer cannot fake a divergence, which would make
    /// us set our work aside); where the peer holds more, its events will
    /// not continue our chain, which `check_batch` reports.
    fn compare_heads<R: Replica>(&mut self, replica: &R, topology: &Topology, heads: &[Seal]) -> Result<(), SyncError> {
        let storage = |e: R::Error| SyncError::Storage(e.to_string());
        for seal in heads {
            let (lane, origin, there) = (&seal.lane, &seal.origin, seal.pos);
            let mine = origin.is_incarnation_of(&self.me);
            if !mine && !origin.is_incarnation_of(&self.peer) {
                continue;
            }
            let here = replica.tip(origin, lane).map_err(storage)?.pos;
            if here < there || there == 0 {
                continue;
            }
            if replica.hash_at(origin, lane, there).map_err(storage)?.as_ref() == Some(&seal.head) {
                continue;
            }
            let status = match replica.key_status(&origin.node(), &seal.key).map_err(storage)? {
                KeyStatus::Unknown
                    if topology.verifying_key(&origin.node()).map(|k| KeyId::of(&k)) == Some(seal.key) =>
                {
                    KeyStatus::Enrolled
                }
                s => s,
            };
            let trusted = match &status {
                KeyStatus::Enrolled => true,
                KeyStatus::Revoked { upto } => {
                    upto.iter().any(|(l, o, p, h)| l == lane && o == origin && *p == there && *h == seal.head)
                }
                KeyStatus::Unknown => false,
            };
            if !trusted || seal.key.verifying_key().is_none_or(|k| seal.verify(&k).is_err()) {
                continue;
            }
            let d = Divergence { lane: lane.clone(), origin: origin.clone(), here, there };
            if mine {
                self.own_diverged.insert(d);
            } else {
                self.peer_diverged.insert(d);
            }
        }
        Ok(())
    }

    fn plan_sending<R: Replica>(
        &mut self,
        replica: &R,
        topology: &Topology,
        peer_positions: Positions,
    ) -> Result<(), SyncError> {
        let storage = |e: R::Error| SyncError::Storage(e.to_string());
        let theirs: BTreeMap<(Lane, NodeId), u64> = peer_positions.into_iter().map(|(l, o, p)| ((l, o), p)).collect();
        let mut plan = Vec::new();
        for (lane, origin) in std::mem::take(&mut self.chains) {
            if !lane_in_scope(topology, &self.peer, &lane) {
                // A lane the peer held before a move: it hands it up, and
                // gets nothing more of it.
                continue;
            }
            if self.content_versions < PUBLICATIONS_CONTENT_VERSION
                && !in_scope_before_moves(topology, &self.peer, &lane)
            {
                // A release that cannot read the county's publications never
                // learns of the move that put this lane in its scope, and
                // would refuse it as outside its scope: it gets it once
                // upgraded.
                continue;
            }
            if self.own_diverged.iter().any(|d| d.lane == lane && d.origin == origin) {
                // The peer holds another copy's history of this chain.
                continue;
            }
            let held = theirs.get(&(lane.clone(), origin.clone())).copied().unwrap_or(0);
            let mut have = held;
            if self.peer_diverged.iter().any(|d| d.lane == lane && d.origin == origin) {
                // The peer is a second copy of itself: send the chain whole,
                // from which it can prove the divergence to itself.
                have = 0;
            }
            if let Some(seal) = replica.seal(&origin, &lane).map_err(storage)? {
                if seal.pos > held {
                    self.peer_lacks.push((lane.clone(), origin.clone(), held));
                }
                if seal.pos > have {
                    plan.push((lane, origin, have, seal));
                }
            }
        }
        // Global lane first; within a lane the home node's chain (which
        // holds the creations) before the others.
        plan.sort_by(|a, b| {
            let rank = |(lane, origin, _, _): &(Lane, NodeId, u64, Seal)| match lane {
                Lane::Global => (0, String::new(), 0),
                Lane::Home(h) => (1, h.0.clone(), u8::from(h != origin)),
            };
            rank(a).cmp(&rank(b)).then(a.1.cmp(&b.1))
        });
        self.plan = plan.into();
        Ok(())
    }

    /// Whether the next [`Session::poll_transmit`] reads the replica (it
    /// has events to send and room in its window); otherwise it only hands
    /// out a message already made, or nothing. A driver runs a read that
    /// may be long off its event loop, and a call that reads nothing in
    /// place.
    pub fn transmit_reads(&self) -> bool {
        self.outbox.is_empty()
            && self.got_hello
            && !self.sent_done
            && !self.plan.is_empty()
            && self.unacked.len() < self.window
    }

    /// The next message to send, if any. Batches are read from `replica` as
    /// the window allows.
    pub fn poll_transmit<R: Replica>(&mut self, replica: &R) -> Result<Option<Message>, SyncError> {
        if let Some(m) = self.outbox.pop_front() {
            return Ok(Some(m));
        }
        if !self.got_hello || self.sent_done {
            return Ok(None);
        }
        if !self.plan.is_empty() {
            if self.unacked.len() >= self.window {
                return Ok(None);
            }
            let storage = |e: R::Error| SyncError::Storage(e.to_string());
            let mut segments = Vec::new();
            let (mut count, mut bytes) = (0, 0);
            while let Some((lane, origin, after, seal)) = self.plan.pop_front() {
                // A run that passes a checkpoint ends there; the rest of it
                // goes back to the front of the plan.
                let end = match replica.checkpoint_after(&origin, &lane, after).map_err(storage)? {
                    Some(cp) if cp.pos > after && cp.pos < seal.pos => {
                        self.plan.push_front((lane.clone(), origin.clone(), cp.pos, seal));
                        cp
                    }
                    _ => seal,
                };
                let mut events = replica.chain_events(&lane, &origin, after, end.pos).map_err(storage)?;
                if events.iter().any(|e| e.body.content_version() > self.content_versions) {
                    // The peer's release cannot read this run: the chain
                    // stops here until it is upgraded (a run must end at a
                    // seal, so nothing of it is sent).
                    self.plan.retain(|(l, o, _, _)| !(l == &lane && o == &origin));
                    self.stats.withheld_events += events.len() as u64;
                    continue;
                }
                // Each event's `prev` is the hash of the one before it, which
                // the receiver computes anyway; 32 incompressible bytes per
                // event need not travel.
                for e in &mut events {
                    e.prev = Hash::ZERO;
                    bytes += codec::encoded_len(e);
                }
                count += events.len();
                segments.push(Segment { events, seal: end });
                if count >= self.batch_events || bytes >= self.batch_bytes {
                    break;
                }
            }
            let n = self.next_batch;
            self.next_batch += 1;
            self.unacked.insert(n);
            self.stats.sent_batches += 1;
            self.stats.sent_events += count as u64;
            return Ok(Some(Message::Batch { n, segments, unreadable: vec![] }));
        }
        self.sent_done = true;
        Ok(Some(Message::Done { batches: self.next_batch }))
    }

    /// Both sides have sent everything and every batch is stored and
    /// acknowledged.
    pub fn is_finished(&self) -> bool {
        self.sent_done
            && self.unacked.is_empty()
            && self.outbox.is_empty()
            && self.peer_done.is_some_and(|n| self.stored.len() as u32 >= n && (0..n).all(|i| self.stored.contains(&i)))
    }

    /// The peer's clock is off by more than [`CLOCK_WARNING_MS`].
    pub fn clock_warning(&self) -> Option<i64> {
        self.stats.peer_clock_offset_ms.filter(|o| o.abs() > CLOCK_WARNING_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica holding nothing, counting its reads of the chains.
    #[derive(Default)]
    struct Empty {
        positions_read: std::cell::Cell<u32>,
    }
    impl Replica for Empty {
        type Error = String;
        fn positions(&self, _: Option<&[Lane]>) -> Result<Positions, String> {
            self.positions_read.set(self.positions_read.get() + 1);
            Ok(vec![])
        }
        fn chain_events(&self, _: &Lane, _: &NodeId, _: u64, _: u64) -> Result<Vec<Event>, String> {
            Ok(vec![])
        }
        fn seal(&self, _: &NodeId, _: &Lane) -> Result<Option<Seal>, String> {
            Ok(None)
        }
        fn checkpoint_after(&self, _: &NodeId, _: &Lane, _: u64) -> Result<Option<Seal>, String> {
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
        fn hash_at(&self, _: &NodeId, _: &Lane, _: u64) -> Result<Option<Hash>, String> {
            Ok(None)
        }
        fn voucher(&self, _: &NodeId) -> Result<Option<Hlc>, String> {
            Ok(None)
        }
        fn is_quarantined_here(&self, _: &NodeId, _: u64) -> Result<bool, String> {
            Ok(false)
        }
    }

    fn topology() -> Topology {
        let node = crate::topology::test_node;
        Topology::new(
            String::new(),
            vec![
                node("c", Tier::County, None),
                node("t", Tier::Township, Some("c")),
                node("v", Tier::Village, Some("t")),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_peer_clock_minutes_off_raises_a_warning() {
        let topo = topology();
        let (v, c) = (NodeId::new("v"), NodeId::new("c"));
        for (offset, warn) in [(60_000i64, false), (-60_000, false), (10 * 60_000, true), (-3 * 60_000, true)] {
            let mut s = Session::start(&Empty::default(), &topo, &v, &c, 1_000_000_000).unwrap();
            let hello = Message::Hello { wall_ms: (1_000_000_000 + offset) as u64, positions: vec![], heads: vec![] };
            s.handle(hello, &Empty::default(), &topo, 1_000_000_000).unwrap();
            assert_eq!(s.clock_warning().is_some(), warn, "offset {offset}");
        }
    }

    /// The sender learns how many of its events the receiver holds back
    /// (beside how many it refused), so its staff are told.
    #[test]
    fn an_ack_tells_the_sender_what_was_held_back() {
        let topo = topology();
        let (v, c) = (NodeId::new("v"), NodeId::new("c"));
        let mut s = Session::start(&Empty::default(), &topo, &v, &c, 0).unwrap();
        s.handle(Message::Hello { wall_ms: 0, positions: vec![], heads: vec![] }, &Empty::default(), &topo, 0).unwrap();
        s.unacked.insert(0);
        s.handle(Message::Ack { n: 0, quarantined: 1, held: 3 }, &Empty::default(), &topo, 0).unwrap();
        assert_eq!((s.stats.quarantined_by_peer, s.stats.held_by_peer), (1, 3));
    }

    /// Issue 9: a session lists the shared lanes' chains once, for its
    /// Hello, and plans from that list on the peer's Hello (listing them
    /// again was a fiftieth of the hub's CPU in a no-op session).
    #[test]
    fn a_session_lists_the_chains_once() {
        let topo = topology();
        let (v, c) = (NodeId::new("v"), NodeId::new("c"));
        let replica = Empty::default();
        let mut s = Session::start(&replica, &topo, &c, &v, 0).unwrap();
        s.handle(Message::Hello { wall_ms: 0, positions: vec![], heads: vec![] }, &replica, &topo, 0).unwrap();
        assert!(s.poll_transmit(&replica).unwrap().is_some(), "the Hello");
        assert_eq!(replica.positions_read.get(), 1);
    }

    #[test]
    fn allowed_peers_follow_the_tiers() {
        let topo = topology();
        let id = NodeId::new;
        assert!(allowed_peer(&topo, &id("v"), &id("t")));
        assert!(allowed_peer(&topo, &id("v"), &id("c")));
        assert!(allowed_peer(&topo, &id("t"), &id("c")));
        assert!(!allowed_peer(&topo, &id("v"), &id("v")));
        assert!(!allowed_peer(&topo, &id("c"), &id("c")));
        assert!(!allowed_peer(&topo, &id("v"), &id("x")));
    }
}
