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
}

impl Body {
    /// A short name for listings.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Create(_) => "create",
            Body::SetField { .. } => "set_field",
            Body::AddMaterial { .. } => "add_material",
            Body::RemoveMaterial { .. } => "remove_material",
            Body::Step { step, .. } => step.name(),
            Body::Rate { .. } => "rate",
        }
    }
}

/// An immutable ledger entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    /// Hash of the previous event of the same origin; zero for seq 1.
    pub prev: Hash,
    pub hlc: Hlc,
    /// Staff member at the origin.
    pub actor: String,
    pub case: CaseId,
    /// The case's version vector as the author saw it (causal dependencies).
    pub context: VClock<NodeId>,
    pub body: Body,
}

/// The part of an event that the hash chain covers directly. The content
/// (actor, case, context, body) enters through its hash, so a node can check
/// an origin's chain across events it may not see (another village's cases)
/// from their headers alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub id: EventId,
    pub prev: Hash,
    pub hlc: Hlc,
    pub content: Hash,
}

impl Header {
    /// The event's hash, which the next event of the same origin commits to.
    pub fn hash(&self) -> Hash {
        Hash::of(&codec::encode(self))
    }
}

impl Event {
    /// Hash of what the header does not carry.
    pub fn content_hash(&self) -> Hash {
        Hash::of(&codec::encode(&(
            &self.actor,
            &self.case,
            &self.context,
            &self.body,
        )))
    }

    pub fn header(&self) -> Header {
        Header {
            id: self.id.clone(),
            prev: self.prev,
            hlc: self.hlc,
            content: self.content_hash(),
        }
    }

    /// The event's hash (its header's hash).
    pub fn hash(&self) -> Hash {
        self.header().hash()
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Event, codec::DecodeError> {
        codec::decode("event", bytes)
    }

    /// The fold order: hlc, then origin, then seq.
    pub fn order_key(&self) -> (Hlc, &NodeId, u64) {
        (self.hlc, &self.id.origin, self.id.seq)
    }
}

/// An origin's signature over its chain head: "my events 1..=seq end in
/// `head`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub origin: NodeId,
    pub seq: u64,
    pub head: Hash,
    pub signature: Vec<u8>,
}

fn seal_message(origin: &NodeId, seq: u64, head: &Hash) -> Vec<u8> {
    let mut m = b"case-ledger seal v1\0".to_vec();
    m.extend(codec::encode(&(origin, seq, head)));
    m
}

impl Seal {
    pub fn sign(key: &SigningKey, origin: NodeId, seq: u64, head: Hash) -> Seal {
        let signature = key
            .sign(&seal_message(&origin, seq, &head))
            .to_bytes()
            .to_vec();
        Seal {
            origin,
            seq,
            head,
            signature,
        }
    }

    /// Checks the signature against the origin's public key.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), ChainError> {
        let sig = Signature::from_slice(&self.signature).map_err(|_| ChainError::BadSignature {
            origin: self.origin.clone(),
            seq: self.seq,
        })?;
        key.verify(&seal_message(&self.origin, self.seq, &self.head), &sig)
            .map_err(|_| ChainError::BadSignature {
                origin: self.origin.clone(),
                seq: self.seq,
            })
    }
}

/// An origin's chain does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An event's `prev` is not the hash of the origin's previous event:
    /// something before it was changed or removed.
    #[error("event {origin}/{seq} does not follow the previous event of its origin (changed or missing event)")]
    Broken { origin: NodeId, seq: u64 },
    /// Sequence numbers skip or repeat.
    #[error("event {origin}/{seq} is out of sequence: expected seq {expected}")]
    Gap {
        origin: NodeId,
        seq: u64,
        expected: u64,
    },
    /// An event's origin differs from the chain being checked.
    #[error("event {origin}/{seq} belongs to another origin than the chain being checked")]
    ForeignOrigin { origin: NodeId, seq: u64 },
    /// An origin's timestamps go backward along its chain.
    #[error("event {origin}/{seq} has a timestamp not after its predecessor")]
    ClockBackward { origin: NodeId, seq: u64 },
    /// The seal's head is not the hash of the event it names.
    #[error("the seal of {origin} at seq {seq} does not match the events")]
    SealMismatch { origin: NodeId, seq: u64 },
    /// The seal's signature is not the origin's.
    #[error("the seal of {origin} at seq {seq} is not signed by {origin}")]
    BadSignature { origin: NodeId, seq: u64 },
}

/// Where a chain check starts: the origin's last verified event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainTip {
    pub seq: u64,
    pub hash: Hash,
    pub hlc: Hlc,
}

impl ChainTip {
    pub const GENESIS: ChainTip = ChainTip {
        seq: 0,
        hash: Hash::ZERO,
        hlc: Hlc {
            wall_ms: 0,
            logical: 0,
        },
    };
}

/// Checks that `headers` (one origin, ascending seq) continue the chain from
/// `tip` with no gap and no alteration. Returns the new tip.
pub fn verify_chain<'a>(
    origin: &NodeId,
    tip: &ChainTip,
    headers: impl IntoIterator<Item = &'a Header>,
) -> Result<ChainTip, ChainError> {
    let mut tip = tip.clone();
    for e in headers {
        let seq = e.id.seq;
        if &e.id.origin != origin {
            return Err(ChainError::ForeignOrigin {
                origin: e.id.origin.clone(),
                seq,
            });
        }
        if seq != tip.seq + 1 {
            return Err(ChainError::Gap {
                origin: origin.clone(),
                seq,
                expected: tip.seq + 1,
            });
        }
        if e.prev != tip.hash {
            return Err(ChainError::Broken {
                origin: origin.clone(),
                seq,
            });
        }
        if tip.seq > 0 && e.hlc <= tip.hlc {
            return Err(ChainError::ClockBackward {
                origin: origin.clone(),
                seq,
            });
        }
        tip = ChainTip {
            seq,
            hash: e.hash(),
            hlc: e.hlc,
        };
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
                    id: EventId {
                        origin: origin.clone(),
                        seq,
                    },
                    prev,
                    hlc: Hlc {
                        wall_ms: 1000 + seq,
                        logical: 0,
                    },
                    actor: "a".into(),
                    case: CaseId::mint(&origin, 1),
                    context: VClock::new(),
                    body: Body::AddMaterial {
                        name: format!("m{seq}"),
                    },
                };
                prev = e.hash();
                e
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies_and_seal_signs_head() {
        let events = chain(5);
        let origin = events[0].id.origin.clone();
        let headers: Vec<Header> = events.iter().map(Event::header).collect();
        let tip = verify_chain(&origin, &ChainTip::GENESIS, &headers).unwrap();
        assert_eq!(tip.hash, events[4].hash());
        let key = SigningKey::from_bytes(&[7; 32]);
        let seal = Seal::sign(&key, origin.clone(), 5, tip.hash);
        seal.verify(&key.verifying_key()).unwrap();
        let other = SigningKey::from_bytes(&[8; 32]);
        assert!(seal.verify(&other.verifying_key()).is_err());
        let mut forged = seal.clone();
        forged.head = Hash::ZERO;
        assert!(forged.verify(&key.verifying_key()).is_err());
    }
}
