//! 电子证照: the electronic licence a deciding node issues with a result.
//! A small document, signed with the issuing node's enrolled key, that any
//! window can check offline against what the county enrolled and revoked
//! (the same rule as a seal: a revoked key is good only for the chain
//! positions the county vouched for when it revoked it).

use crate::calendar::Day;
use crate::codec;
use crate::event::{KeyId, Lane};
use crate::sync::KeyStatus;
use crate::{CaseId, EventId, NodeId};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The format a licence file names.
pub const FORMAT: &str = "licence/1";

/// What a licence says (everything the signature covers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub case: CaseId,
    pub item: String,
    pub item_name: String,
    /// The holder's name and ID number, masked.
    pub holder: String,
    pub holder_id: String,
    /// 办理结果: what was issued.
    pub result: String,
    pub issuer: NodeId,
    pub issued: Day,
    /// Valid until this day, if the result expires.
    pub valid_until: Option<Day>,
    /// The 出证 event it was issued with, its hash, and where it sits in
    /// its chain.
    pub event: EventId,
    pub event_hash: crate::Hash,
    pub lane: Lane,
    pub pos: u64,
}

/// A signed licence, as written to a file or a QR code (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Licence {
    pub format: String,
    #[serde(flatten)]
    pub terms: Terms,
    /// The issuing key and its signature over the terms (hex).
    pub key: String,
    pub signature: String,
}

/// A licence as an event carries it (the JSON form flattens its terms,
/// which the binary codec cannot): the same terms, key and signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    pub terms: Terms,
    pub key: String,
    pub signature: String,
}

impl From<Licence> for Carried {
    fn from(l: Licence) -> Carried {
        Carried { terms: l.terms, key: l.key, signature: l.signature }
    }
}

impl From<Carried> for Licence {
    fn from(c: Carried) -> Licence {
        Licence { format: FORMAT.into(), terms: c.terms, key: c.key, signature: c.signature }
    }
}

/// Why a licence does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenceError {
    #[error("not a licence of this county's format ({0})")]
    Format(String),
    #[error("the signature does not match the licence: it was altered, or not issued by {0}")]
    BadSignature(NodeId),
    #[error("the key that signed it was never enrolled by the county for {0}")]
    KeyNotEnrolled(NodeId),
    #[error("the county revoked {0}'s key before this licence was issued")]
    Revoked(NodeId),
    #[error(
        "the county revoked {0}'s key; this window does not hold the 出证 event the licence names, so it cannot \
         confirm offline that the licence was issued before the revocation: check it at the county or the issuing \
         township"
    )]
    Unconfirmable(NodeId),
    #[error("the 出证 event the licence names is not an issue of case {0} as this window holds it")]
    NotIssued(CaseId),
    #[error("{issuer} may not issue results of case {case} (its home, the item's deciding tier)")]
    NotItsCase { issuer: NodeId, case: CaseId },
    #[error("it expired on {0}")]
    Expired(Day),
}

/// The holder a licence names, as shown: the applicant's name masked to
/// its first character and ID number masked, as the case's creation
/// recorded them (what [`Terms`] carry and citations are checked against).
pub fn holder_of(create: &crate::event::Create) -> Option<(String, String)> {
    let field = |name: &str| create.fields.iter().find(|(f, _)| f == name).map(|(_, v)| v.display().to_string());
    Some((crate::personal::mask(&field("applicant")?, 1, 0), field("id_number")?))
}

impl Terms {
    /// Whether the licence is the applicant's of the case `create` made:
    /// the same masked name and ID number (a licence of another citizen
    /// does not stand for this applicant's material).
    pub fn is_holder_of(&self, create: &crate::event::Create) -> bool {
        holder_of(create).is_some_and(|(name, id)| name == self.holder && id == self.holder_id)
    }

    fn signed_bytes(&self) -> Vec<u8> {
        codec::encode_tagged(codec::LICENCE, self)
    }

    /// Signs the terms with the issuing node's key.
    pub fn sign(self, key: &SigningKey) -> Licence {
        let signature = key.sign(&self.signed_bytes());
        Licence {
            format: FORMAT.into(),
            key: KeyId::of(&key.verifying_key()).to_hex(),
            signature: hex::encode(signature.to_bytes()),
            terms: self,
        }
    }
}

impl Licence {
    /// The key that signed it.
    pub fn key(&self) -> Option<KeyId> {
        KeyId::from_hex(&self.key)
    }

    /// Checks the licence: its format, its signature under the key it names,
    /// and that the county enrolled that key for the issuer (`status`, or
    /// `county_key` when the county itself issued it) and had not revoked
    /// it before the 出证 event's place in its chain. `held` says whether
    /// this verifier holds the 出证 event the licence names (`Some(true)`:
    /// held, with that hash, an issue of that case at that place;
    /// `Some(false)`: it holds another event under that id; `None`: not
    /// held). Under a revoked key only a held event confirms the licence: a
    /// position alone is the thief's word. `today` checks expiry.
    pub fn verify(
        &self,
        status: &KeyStatus,
        county_key: Option<&VerifyingKey>,
        held: Option<bool>,
        today: Day,
    ) -> Result<(), LicenceError> {
        let issuer = self.terms.issuer.clone();
        if self.format != FORMAT {
            return Err(LicenceError::Format(self.format.clone()));
        }
        let key = self.key().ok_or_else(|| LicenceError::BadSignature(issuer.clone()))?;
        let verifying = key.verifying_key().ok_or_else(|| LicenceError::BadSignature(issuer.clone()))?;
        let signature = hex::decode(&self.signature)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or_else(|| LicenceError::BadSignature(issuer.clone()))?;
        verifying
            .verify(&self.terms.signed_bytes(), &signature)
            .map_err(|_| LicenceError::BadSignature(issuer.clone()))?;
        if self.terms.event.origin.node() != issuer {
            return Err(LicenceError::BadSignature(issuer));
        }
        if held == Some(false) {
            return Err(LicenceError::NotIssued(self.terms.case.clone()));
        }
        let is_county_key = county_key.is_some_and(|k| KeyId::of(k) == key);
        match status {
            _ if is_county_key => {}
            KeyStatus::Enrolled => {}
            KeyStatus::Unknown => return Err(LicenceError::KeyNotEnrolled(issuer)),
            KeyStatus::Revoked { upto } => {
                let vouched = upto.iter().any(|(lane, origin, pos, _)| {
                    lane == &self.terms.lane && origin == &self.terms.event.origin && self.terms.pos <= *pos
                });
                if !vouched {
                    return Err(LicenceError::Revoked(issuer));
                }
                if held != Some(true) {
                    return Err(LicenceError::Unconfirmable(issuer));
                }
            }
        }
        if let Some(until) = self.terms.valid_until {
            if today > until {
                return Err(LicenceError::Expired(until));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms() -> Terms {
        let origin = NodeId::new("511421101");
        Terms {
            case: CaseId("511421101001-3".into()),
            item: "V001".into(),
            item_name: "城乡居民基本医疗保险参保登记".into(),
            holder: "张*".into(),
            holder_id: "511421********0027".into(),
            result: "办理结果通知书".into(),
            issuer: origin.clone(),
            issued: Day(20_000),
            valid_until: None,
            event: EventId { origin: origin.clone(), seq: 7 },
            event_hash: crate::Hash::ZERO,
            lane: Lane::Home(NodeId::new("511421101001")),
            pos: 4,
        }
    }

    #[test]
    fn a_licence_verifies_and_a_tampered_one_does_not() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let licence = terms().sign(&key);
        assert_eq!(licence.verify(&KeyStatus::Enrolled, None, None, Day(20_001)), Ok(()));
        let mut forged = licence.clone();
        forged.terms.holder = "李*".into();
        assert!(matches!(
            forged.verify(&KeyStatus::Enrolled, None, None, Day(20_001)),
            Err(LicenceError::BadSignature(_))
        ));
        assert!(matches!(
            licence.verify(&KeyStatus::Unknown, None, None, Day(20_001)),
            Err(LicenceError::KeyNotEnrolled(_))
        ));
        assert!(matches!(
            licence.verify(&KeyStatus::Enrolled, None, Some(false), Day(20_001)),
            Err(LicenceError::NotIssued(_))
        ));
    }

    #[test]
    fn a_revoked_key_is_good_only_up_to_what_the_county_vouched_for() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let licence = terms().sign(&key);
        let t = terms();
        let before = KeyStatus::Revoked { upto: vec![(t.lane.clone(), t.event.origin.clone(), 4, crate::Hash::ZERO)] };
        assert_eq!(licence.verify(&before, None, Some(true), Day(20_001)), Ok(()));
        assert!(
            matches!(licence.verify(&before, None, None, Day(20_001)), Err(LicenceError::Unconfirmable(_))),
            "a claimed position alone does not confirm a licence under a revoked key"
        );
        let after = KeyStatus::Revoked { upto: vec![(t.lane.clone(), t.event.origin.clone(), 3, crate::Hash::ZERO)] };
        assert!(matches!(licence.verify(&after, None, Some(true), Day(20_001)), Err(LicenceError::Revoked(_))));
    }
}
