//! Events, the per-origin hash chain and seals.
//!
//! Each event commits to the previous event of the same origin (`prev`), so
//! an origin's events form a chain. The origin signs the chain head (a
//! [`Seal`]); one signature then vouches for every event up to it, whoever
//! relayed them.

use crate::codec;
use crate::hlc::Hlc;
use crate::ids::{CaseId, EventId, NodeId, Tier};
use crate::personal::Protected;
use crdts::VClock;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// A SHA-256 hash.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);

    pub fn of(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The chain an event belongs to. Each origin keeps one hash chain per lane:
/// per home node for case events, and one global lane (revocations) that
/// every node receives. A node's scope is a set of whole lanes, so it can
/// verify every chain it holds without seeing events outside its scope.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lane {
    /// Data every node holds (revocations).
    Global,
    /// Cases homed at this node.
    Home(NodeId),
}

impl Lane {
    /// The lane's key in storage: `*` for global, else the home node id.
    pub fn key(&self) -> &str {
        match self {
            Lane::Global => "*",
            Lane::Home(h) => h.as_str(),
        }
    }
    pub fn from_key(key: &str) -> Lane {
        if key == "*" {
            Lane::Global
        } else {
            Lane::Home(NodeId::new(key))
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// The case id that global events carry.
pub const GLOBAL_CASE: &str = "*";
/// The case id of a network event filed in a home lane (a village's
/// incarnation voucher). Case ids starting with `*` name no case.
pub const LANE_CASE: &str = "*lane";

/// A field's value. Personal data is always [`Protected`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FieldValue {
    Text(String),
    Protected(Protected),
}

impl FieldValue {
    /// What may be shown on screen: text as is, personal data masked.
    pub fn display(&self) -> &str {
        match self {
            FieldValue::Text(t) => t,
            FieldValue::Protected(p) => &p.masked,
        }
    }
}

/// The first event of a case. It records what the case was taken under, so
/// that every receiver can authorise later events without consulting its own
/// (possibly newer) catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub item: String,
    pub item_name: String,
    pub catalogue_version: u32,
    pub accepted_at: Vec<Tier>,
    pub decided_by: Tier,
    pub promised_days: u32,
    pub fields: Vec<(String, FieldValue)>,
    pub materials: Vec<String>,
}

/// A workflow transition (see [`crate::workflow`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Step {
    /// 初审通过
    PrereviewPass,
    /// 初审退回补正
    PrereviewReturn,
    /// 转报 to the deciding node.
    Forward { to: NodeId },
    /// 受理
    Accept,
    /// 不予受理
    Refuse,
    /// 一次性告知补正
    RequestSupplement,
    /// 补正后重新收件
    Resubmit,
    /// 准予
    Approve,
    /// 不予许可
    Deny,
    /// 出证/送达
    Issue,
    /// 办结
    Close,
    /// 撤回
    Withdraw,
    /// 挂起 (特别程序; stops the clock)
    Suspend,
    /// 恢复
    Resume,
    /// 容缺受理: accepted with materials the catalogue allows to be
    /// missing, which the applicant promises to bring by `promised`.
    AcceptMissing { missing: Vec<String>, promised: crate::calendar::Day },
    /// 终止: a 容缺 case whose promised materials never came is ended
    /// (退件).
    Terminate,
}

impl Step {
    /// The command-line / JSON name of the step.
    pub fn name(&self) -> &'static str {
        match self {
            Step::PrereviewPass => "prereview_pass",
            Step::PrereviewReturn => "prereview_return",
            Step::Forward { .. } => "forward",
            Step::Accept => "accept",
            Step::Refuse => "refuse",
            Step::RequestSupplement => "request_supplement",
            Step::Resubmit => "resubmit",
            Step::Approve => "approve",
            Step::Deny => "deny",
            Step::Issue => "issue",
            Step::Close => "close",
            Step::Withdraw => "withdraw",
            Step::Suspend => "suspend",
            Step::Resume => "resume",
            Step::AcceptMissing { .. } => "accept_missing",
            Step::Terminate => "terminate",
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// 收件: a case is taken.
    Create(Create),
    /// A field is set (concurrent sets are all kept).
    SetField { field: String, value: FieldValue },
    /// A material is received.
    AddMaterial { name: String },
    /// A material is taken off the list.
    RemoveMaterial { name: String },
    /// A workflow transition.
    Step { step: Step, note: String },
    /// 好差评: level 1 (非常满意) to 5 (非常不满意).
    Rate { level: u8, note: String },
    /// The county certifies a node's signing key and TLS certificate
    /// (global lane). A node's seals verify only under keys the county
    /// enrolled (or the topology it published names).
    Enrol {
        node: NodeId,
        /// The ed25519 verifying key.
        key: KeyId,
        /// SHA-256 of the TLS certificate (DER).
        certificate: Hash,
    },
    /// A node's new incarnation is vouched for by the node it recovered
    /// against (a village's township, or the county): its events are
    /// accepted only once this is held, and none stamped before `after`
    /// (the latest stamp of the node's own events the voucher held), so a
    /// holder of a node's key cannot open a fresh chain to backdate steps.
    /// In the village's own lane for a village; in the global lane (by the
    /// county) for a township, whose events reach its villages' lanes.
    Incarnate { origin: NodeId, after: Hlc },
    /// The county revokes one key and certificate of a node (global lane):
    /// a lost laptop. A seal under the key stays valid only where it seals
    /// exactly a chain head in `upto` (what the county held when it
    /// revoked: lane, origin, position, head), so the history before the
    /// loss still travels and nothing the thief signs does. The node itself
    /// may be enrolled again with fresh keys.
    Revoke { node: NodeId, reason: String, key: KeyId, certificate: Hash, upto: Vec<(Lane, NodeId, u64, Hash)> },
    /// 好差评 ("一事一评"): level 1 (非常满意) to 5 (非常不满意) for one
    /// stage of the case, through a channel (窗口评价器, 扫码, 短信, 电话…).
    Rating { level: u8, stage: Stage, channel: String, note: String },
    /// 整改回访: a poor rating (不满意, 非常不满意) followed up: what was
    /// done and what the applicant said when called back.
    FollowUp { rating: EventId, response: String, callback: String },
    /// A file of a material (a scan, a PDF, an OFD e-document) is attached;
    /// with `replaces`, it supersedes an earlier file of the material (补正),
    /// which stays in the history. Content format version 2.
    AttachFile { material: String, file: crate::files::FileRef, replaces: Option<crate::files::FileHash> },
    /// A file is taken off a material: an event, not a deletion (the file
    /// stays in the history as evidence). Content format version 2.
    DetachFile { material: String, hash: crate::files::FileHash, note: String },
    /// A material satisfied by an electronic licence (电子证照) this county
    /// issued, by reference and without any file: the signed licence
    /// travels in the event, so every node checks its signature and
    /// issuer itself. Content format version 2.
    CiteLicence { material: String, licence: Box<crate::licence::Carried> },
    /// A publication of the county (global lane): a catalogue or calendar
    /// version, applied by every node in version order. Content format
    /// version 2.
    Publish(Box<crate::publication::Publication>),
}

/// The stage of a case a rating is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// 受理: the acceptance.
    Accept,
    /// 办结: the outcome.
    Done,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Accept => "accept",
            Stage::Done => "done",
        }
    }
    pub fn parse(s: &str) -> Option<Stage> {
        match s {
            "accept" => Some(Stage::Accept),
            "done" => Some(Stage::Done),
            _ => None,
        }
    }
}

/// An ed25519 verifying key, as it names itself in seals and enrolments.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> KeyId {
        KeyId(key.to_bytes())
    }
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<KeyId> {
        Some(KeyId(hex::decode(s).ok()?.try_into().ok()?))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {}", &self.to_hex()[..12])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex()[..16])
    }
}

impl Body {
    /// True for events about the network, not about a case: the county's
    /// enrolments and revocations, and vouchers for incarnations.
    pub fn is_global(&self) -> bool {
        matches!(self, Body::Revoke { .. } | Body::Enrol { .. } | Body::Incarnate { .. } | Body::Publish(_))
    }

    /// A short name for listings.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Create(_) => "create",
            Body::SetField { .. } => "set_field",
            Body::AddMaterial { .. } => "add_material",
            Body::RemoveMaterial { .. } => "remove_material",
            Body::Step { step, .. } => step.name(),
            Body::Rate { .. } | Body::Rating { .. } => "rate",
            Body::FollowUp { .. } => "follow_up",
            Body::Enrol { .. } => "enrol",
            Body::Incarnate { .. } => "incarnate",
            Body::Revoke { .. } => "revoke",
            Body::AttachFile { .. } => "attach_file",
            Body::DetachFile { .. } => "detach_file",
            Body::CiteLicence { .. } => "cite_licence",
            Body::Publish(_) => "publish",
        }
    }

    /// The content format version this body is written in: the lowest
    /// that can express it, so releases that predate a kind still read
    /// every event of the kinds they know (`crate::wire`).
    pub fn content_version(&self) -> u8 {
        match self {
            Body::AttachFile { .. } | Body::DetachFile { .. } | Body::CiteLicence { .. } | Body::Publish(_) => 2,
            _ => 1,
        }
    }
}

/// An immutable ledger entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub lane: Lane,
    /// Position in the (origin, lane) chain: 1, 2, 3… with no gaps.
    pub pos: u64,
    /// Hash of the previous event of the same origin and lane; zero at pos 1.
    pub prev: Hash,
    pub hlc: Hlc,
    /// Staff member at the origin.
    pub actor: String,
    pub case: CaseId,
    /// The case's version vector as the author saw it (causal dependencies).
    pub context: VClock<NodeId>,
    pub body: Body,
}

/// What an event's content bytes hold: actor, case, context, body.
pub type Content = (String, CaseId, VClock<NodeId>, Body);

/// The content format version content bytes state (the first version when
/// they state none this release reads, which decoding then refuses).
fn stated_version(bytes: &[u8]) -> u8 {
    match bytes.get(1) {
        Some(v) if (1..=codec::EVENT_CONTENT_NEWEST).contains(v) => *v,
        _ => codec::EVENT_CONTENT.version,
    }
}

/// A body must be written in its own content version, so that one event
/// has one encoding.
fn own_version(body: &Body, version: u8) -> Result<(), codec::DecodeError> {
    if body.content_version() == version {
        return Ok(());
    }
    Err(codec::DecodeError {
        what: codec::EVENT_CONTENT.what,
        kind: codec::DecodeErrorKind::Malformed,
        message: format!("a {} event in content format version {version}", body.name()),
    })
}

/// The part of an event that the hash chain covers directly. The content
/// (actor, case, context, body) enters through its hash, so a node can check
/// an origin's chain across events it may not see (another village's cases)
/// from their headers alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub id: EventId,
    pub lane: Lane,
    pub pos: u64,
    pub prev: Hash,
    pub hlc: Hlc,
    pub content: Hash,
}

impl Header {
    /// The event's hash, which the next event of the same origin commits to.
    pub fn hash(&self) -> Hash {
        Hash::of(&codec::encode_tagged(codec::EVENT_HEADER, self))
    }
}

impl Event {
    /// Hash of what the header does not carry.
    pub fn content_hash(&self) -> Hash {
        Hash::of(&self.content_bytes())
    }

    /// The bytes the content hash covers, as version 2 of the sync message
    /// carries them (`crate::wire`).
    pub fn content_bytes(&self) -> Vec<u8> {
        let tag = codec::Tag { version: self.body.content_version(), ..codec::EVENT_CONTENT };
        codec::encode_tagged(tag, &(&self.actor, &self.case, &self.context, &self.body))
    }

    /// Decodes an event's content (actor, case, context, body) of any
    /// content format version this release reads. A body must be written
    /// in its own version (`Body::content_version`), so that one event has
    /// one encoding.
    pub fn decode_content(bytes: &[u8]) -> Result<Content, codec::DecodeError> {
        let version = stated_version(bytes);
        let content: Content = codec::decode_tagged(codec::Tag { version, ..codec::EVENT_CONTENT }, bytes)?;
        own_version(&content.3, version)?;
        Ok(content)
    }

    /// An event's content as a store keeps it beside the name of its case:
    /// the content bytes ([`Event::content_bytes`]) without the case id
    /// (about 17 bytes an event), behind the kind of
    /// `codec::EVENT_CONTENT_AT_REST` and the content's version. `None`
    /// when `content` is not an event content of `case` (a store then
    /// keeps it as it is).
    pub fn content_at_rest(content: &[u8], case: &str) -> Option<Vec<u8>> {
        if content.first() != Some(&codec::EVENT_CONTENT.kind) {
            return None;
        }
        let actor_end = codec::string_end(content, 2)?;
        let case_end = codec::string_end(content, actor_end)?;
        if content[actor_end..case_end] != codec::encode(&case)[..] {
            return None;
        }
        let mut out = Vec::with_capacity(content.len() - (case_end - actor_end));
        out.push(codec::EVENT_CONTENT_AT_REST.kind);
        out.extend_from_slice(&content[1..actor_end]);
        out.extend_from_slice(&content[case_end..]);
        Some(out)
    }

    /// [`Event::from_content`] from what a store keeps: the content as it
    /// is, or its form at rest ([`Event::content_at_rest`]) with the name
    /// of its case.
    pub fn from_stored(
        id: EventId,
        lane: Lane,
        pos: u64,
        prev: Hash,
        hlc: Hlc,
        case: &str,
        stored: &[u8],
    ) -> Result<Event, codec::DecodeError> {
        if stored.first() != Some(&codec::EVENT_CONTENT_AT_REST.kind) {
            return Event::from_content(id, lane, pos, prev, hlc, stored);
        }
        let version = stated_version(stored);
        let (actor, context, body): (String, VClock<NodeId>, Body) =
            codec::decode_tagged(codec::Tag { version, ..codec::EVENT_CONTENT_AT_REST }, stored)?;
        own_version(&body, version)?;
        Ok(Event { id, lane, pos, prev, hlc, actor, case: CaseId(case.to_owned()), context, body })
    }

    /// An event from its header fields and its content bytes
    /// ([`Event::content_bytes`]), as the store keeps it: `prev` is the
    /// stored hash of the chain's previous event (zero at position 1).
    pub fn from_content(
        id: EventId,
        lane: Lane,
        pos: u64,
        prev: Hash,
        hlc: Hlc,
        content: &[u8],
    ) -> Result<Event, codec::DecodeError> {
        let (actor, case, context, body) = Event::decode_content(content)?;
        Ok(Event { id, lane, pos, prev, hlc, actor, case, context, body })
    }

    /// The event's hash and its content bytes, encoding the content once.
    pub fn hash_and_content(&self) -> (Hash, Vec<u8>) {
        let content = self.content_bytes();
        (self.header_over(Hash::of(&content)).hash(), content)
    }

    pub fn header(&self) -> Header {
        self.header_over(self.content_hash())
    }

    fn header_over(&self, content: Hash) -> Header {
        Header { id: self.id.clone(), lane: self.lane.clone(), pos: self.pos, prev: self.prev, hlc: self.hlc, content }
    }

    /// The event's hash (its header's hash).
    pub fn hash(&self) -> Hash {
        self.header().hash()
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode_tagged(codec::EVENT, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Event, codec::DecodeError> {
        codec::decode_tagged(codec::EVENT, bytes)
    }

    /// The fold order: hlc, then origin, then seq.
    pub fn order_key(&self) -> (Hlc, &NodeId, u64) {
        (self.hlc, &self.id.origin, self.id.seq)
    }
}

/// An origin's signature over one of its lane chains: "my events in `lane`
/// up to position `pos` (my seq `seq`) end in `head`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub origin: NodeId,
    pub lane: Lane,
    pub pos: u64,
    pub seq: u64,
    pub head: Hash,
    /// The key that signed: a receiver verifies only under a key the
    /// county enrolled for the origin's node, and holds a seal whose key it
    /// does not know yet until the enrolment arrives.
    pub key: KeyId,
    pub signature: Vec<u8>,
}

fn seal_message(origin: &NodeId, lane: &Lane, pos: u64, seq: u64, head: &Hash) -> Vec<u8> {
    let mut m = b"case-ledger seal v1\0".to_vec();
    m.extend(codec::encode(&(origin, lane, pos, seq, head)));
    m
}

impl Seal {
    /// Seals the head of `origin`'s chain in the lane of `head_event`.
    pub fn sign(key: &SigningKey, head_event: &Event) -> Seal {
        let (origin, lane, pos, seq, head) = (
            head_event.id.origin.clone(),
            head_event.lane.clone(),
            head_event.pos,
            head_event.id.seq,
            head_event.hash(),
        );
        let signature = key.sign(&seal_message(&origin, &lane, pos, seq, &head)).to_bytes().to_vec();
        Seal { origin, lane, pos, seq, head, key: KeyId::of(&key.verifying_key()), signature }
    }

    /// Checks the signature against the origin's public key.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), ChainError> {
        let bad = || ChainError::BadSignature { origin: self.origin.clone(), seq: self.seq };
        let sig = Signature::from_slice(&self.signature).map_err(|_| bad())?;
        key.verify(&seal_message(&self.origin, &self.lane, self.pos, self.seq, &self.head), &sig).map_err(|_| bad())
    }
}

/// An origin's chain does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An event's `prev` is not the hash of the previous event of its chain:
    /// something before it was changed or removed.
    #[error("event {origin}/{seq} does not follow the previous event of its chain (changed or missing event)")]
    Broken { origin: NodeId, seq: u64 },
    /// Positions skip or repeat.
    #[error("event {origin}/{seq} is out of place in its chain: position {pos}, expected {expected}")]
    Gap { origin: NodeId, seq: u64, pos: u64, expected: u64 },
    /// An event belongs to another chain than the one being checked.
    #[error("event {origin}/{seq} belongs to another chain than the one being checked")]
    ForeignChain { origin: NodeId, seq: u64 },
    /// An origin's seq or timestamps go backward along its chain.
    #[error("event {origin}/{seq} has a seq or timestamp not after its predecessor")]
    Backward { origin: NodeId, seq: u64 },
    /// The seal's head is not the hash of the event it names.
    #[error("the seal of {origin} at seq {seq} does not match the events")]
    SealMismatch { origin: NodeId, seq: u64 },
    /// The seal's signature is not the origin's.
    #[error("the seal of {origin} at seq {seq} is not signed by {origin}")]
    BadSignature { origin: NodeId, seq: u64 },
}

/// Where a chain check starts: the last verified event of an (origin,
/// lane) chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainTip {
    pub pos: u64,
    pub seq: u64,
    pub hash: Hash,
    pub hlc: Hlc,
}

impl ChainTip {
    pub const GENESIS: ChainTip = ChainTip { pos: 0, seq: 0, hash: Hash::ZERO, hlc: Hlc { wall_ms: 0, logical: 0 } };
}

/// Checks that `headers` (one origin and lane, ascending position) continue
/// the chain from `tip` with no gap and no alteration. Returns the new tip.
pub fn verify_chain<'a>(
    origin: &NodeId,
    lane: &Lane,
    tip: &ChainTip,
    headers: impl IntoIterator<Item = &'a Header>,
) -> Result<ChainTip, ChainError> {
    let mut tip = tip.clone();
    for e in headers {
        let seq = e.id.seq;
        if &e.id.origin != origin || &e.lane != lane {
            return Err(ChainError::ForeignChain { origin: e.id.origin.clone(), seq });
        }
        if e.pos != tip.pos + 1 {
            return Err(ChainError::Gap { origin: origin.clone(), seq, pos: e.pos, expected: tip.pos + 1 });
        }
        if e.prev != tip.hash {
            return Err(ChainError::Broken { origin: origin.clone(), seq });
        }
        if tip.pos > 0 && (e.hlc <= tip.hlc || seq <= tip.seq) {
            return Err(ChainError::Backward { origin: origin.clone(), seq });
        }
        tip = ChainTip { pos: e.pos, seq, hash: e.hash(), hlc: e.hlc };
    }
    Ok(tip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Event> {
        let origin = NodeId::new("511421101001");
        let mut prev = Hash::ZERO;
        (1..=n)
            .map(|seq| {
                let e = Event {
                    id: EventId { origin: origin.clone(), seq },
                    lane: Lane::Home(origin.clone()),
                    pos: seq,
                    prev,
                    hlc: Hlc { wall_ms: 1000 + seq, logical: 0 },
                    actor: "a".into(),
                    case: CaseId::mint(&origin, 1),
                    context: VClock::new(),
                    body: Body::AddMaterial { name: format!("m{seq}") },
                };
                prev = e.hash();
                e
            })
            .collect()
    }

    /// A store keeps an event's content without its case id and reads back
    /// the same event, in either content version; content that does not
    /// hold the case named beside it is kept whole.
    #[test]
    fn content_at_rest_leaves_out_the_case_and_reads_back_the_same_event() {
        let mut events = chain(2);
        events[1].body =
            Body::DetachFile {
                material: "户口簿".into(), hash: crate::files::FileHash([7; 32]), note: "重拍".into()
            };
        crdts::CmRDT::apply(&mut events[1].context, crdts::Dot::new(NodeId::new("511421101"), 3));
        for e in &events {
            let content = e.content_bytes();
            let rest = Event::content_at_rest(&content, e.case.as_str()).unwrap();
            assert_eq!(rest.len(), content.len() - codec::encode(&e.case).len());
            assert_eq!(rest[..2], [codec::EVENT_CONTENT_AT_REST.kind, e.body.content_version()]);
            assert!(!rest.windows(e.case.as_str().len()).any(|w| w == e.case.as_str().as_bytes()));
            let read = Event::from_stored(e.id.clone(), e.lane.clone(), e.pos, e.prev, e.hlc, e.case.as_str(), &rest);
            assert_eq!(read.unwrap(), *e);
            let whole = Event::from_stored(e.id.clone(), e.lane.clone(), e.pos, e.prev, e.hlc, "ignored", &content);
            assert_eq!(whole.unwrap(), *e, "content kept whole reads as it is");
            assert_eq!(Event::content_at_rest(&content, "511421101001-2"), None, "another case");
            assert_eq!(Event::content_at_rest(&content[..6], e.case.as_str()), None, "cut short in the case id");
            let mut wrong = rest.clone();
            wrong[1] = 3 - wrong[1];
            assert!(Event::from_stored(e.id.clone(), e.lane.clone(), e.pos, e.prev, e.hlc, "c", &wrong).is_err());
        }
    }

    #[test]
    fn intact_chain_verifies_and_seal_signs_head() {
        let events = chain(5);
        let origin = events[0].id.origin.clone();
        let headers: Vec<Header> = events.iter().map(Event::header).collect();
        let tip = verify_chain(&origin, &events[0].lane, &ChainTip::GENESIS, &headers).unwrap();
        assert_eq!(tip.hash, events[4].hash());
        let key = SigningKey::from_bytes(&[7; 32]);
        let seal = Seal::sign(&key, &events[4]);
        assert_eq!(seal.head, tip.hash);
        seal.verify(&key.verifying_key()).unwrap();
        let other = SigningKey::from_bytes(&[8; 32]);
        assert!(seal.verify(&other.verifying_key()).is_err());
        let mut forged = seal.clone();
        forged.head = Hash::ZERO;
        assert!(forged.verify(&key.verifying_key()).is_err());
    }
}
