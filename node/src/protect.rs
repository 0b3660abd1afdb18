//! Protection of personal data at rest and in transit: values are sealed
//! (ChaCha20-Poly1305) under the data key of their case's home lane, looked
//! up by a keyed hash under the same lane's key, and shown masked. The
//! clear value never reaches an event, a case row or any file of the data
//! directory.
//!
//! Lane keys are derived from the county's master key, which only the hub
//! holds; a node's bundle carries the keys of the lanes in its scope (a
//! village its own, a township its own and its villages'), so one laptop
//! opens at most its own subtree's personal data.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use proto::personal::{PersonalKind, Protected};
use rand::RngCore;
use sha2::Sha256;

/// A key for personal data: the county's master key, or one lane's key.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

/// The data keys a node holds.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DataKeys {
    /// The county's master key (hex), from which every lane key derives.
    /// Only the hub holds it.
    #[serde(default)]
    pub master: Option<String>,
    /// Lane keys (hex) by home node, for the lanes in this node's scope.
    #[serde(default)]
    pub lanes: std::collections::BTreeMap<proto::NodeId, String>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKeys(master: {}, {} lanes)", self.master.is_some(), self.lanes.len())
    }
}

impl DataKeys {
    /// The keys of the lanes within `node`'s subtree, for its bundle.
    pub fn issue(master: &DataKey, topology: &proto::Topology, node: &proto::NodeId) -> DataKeys {
        let lanes = topology
            .nodes()
            .iter()
            .filter(|n| topology.is_within(&n.id, node))
            .map(|n| (n.id.clone(), master.lane_key(&n.id).to_hex()))
            .collect();
        DataKeys { master: None, lanes }
    }

    /// The hub's keys: the master key itself.
    pub fn county(master: &DataKey) -> DataKeys {
        DataKeys { master: Some(master.to_hex()), lanes: Default::default() }
    }

    /// The key of the lane homed at `home`, if this node may hold it.
    pub fn for_lane(&self, home: &proto::NodeId) -> Option<DataKey> {
        if let Some(k) = self.lanes.get(home) {
            return DataKey::from_hex(k);
        }
        self.master.as_deref().and_then(DataKey::from_hex).map(|m| m.lane_key(home))
    }

    /// Every lane key this node can use, for `topology`'s lanes.
    pub fn all(&self, topology: &proto::Topology) -> Vec<DataKey> {
        topology.nodes().iter().filter_map(|n| self.for_lane(&n.id)).collect()
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A sealed value could not be opened (wrong key or altered bytes).
#[derive(Debug, thiserror::Error)]
#[error("personal data could not be decrypted: wrong data key or altered value")]
pub struct OpenError;

impl DataKey {
    pub fn generate() -> DataKey {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        DataKey(k)
    }

    pub fn from_hex(s: &str) -> Option<DataKey> {
        let v = hex::decode(s).ok()?;
        Some(DataKey(v.try_into().ok()?))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key of the lane homed at `home`, derived from this (master) key.
    pub fn lane_key(&self, home: &proto::NodeId) -> DataKey {
        let mut purpose = b"lane key v1\0".to_vec();
        purpose.extend(home.base().as_bytes());
        DataKey(self.sub_key(&purpose))
    }

    fn sub_key(&self, purpose: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    }

    /// The keyed hash used to find cases by a personal value.
    pub fn lookup(&self, kind: PersonalKind, clear: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.sub_key(b"lookup")).expect("any key length");
        mac.update(&[kind_tag(kind), 0]);
        mac.update(clear.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Seals a clear value.
    pub fn protect(&self, kind: PersonalKind, clear: &str) -> Protected {
        let cipher = ChaCha20Poly1305::new(&self.sub_key(b"seal").into());
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = [b"personal v1 ".as_slice(), &[kind_tag(kind)]].concat();
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: clear.as_bytes(), aad: &aad })
            .expect("encryption of a short value cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend(ct);
        Protected { kind, masked: kind.mask(clear), lookup: self.lookup(kind, clear), sealed }
    }

    /// Opens a sealed value (for staff entitled to see it in full).
    pub fn reveal(&self, p: &Protected) -> Result<String, OpenError> {
        if p.sealed.len() < 12 {
            return Err(OpenError);
        }
        let cipher = ChaCha20Poly1305::new(&self.sub_key(b"seal").into());
        let aad = [b"personal v1 ".as_slice(), &[kind_tag(p.kind)]].concat();
        let clear = cipher
            .decrypt(Nonce::from_slice(&p.sealed[..12]), Payload { msg: &p.sealed[12..], aad: &aad })
            .map_err(|_| OpenError)?;
        String::from_utf8(clear).map_err(|_| OpenError)
    }
}

/// The stable byte tag of a kind of personal data, bound into every sealed
/// value and lookup hash. Never renumber: stored values depend on it.
fn kind_tag(kind: PersonalKind) -> u8 {
    match kind {
        PersonalKind::IdNumber => 1,
        PersonalKind::Phone => 2,
        PersonalKind::Address => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lookup_is_stable() {
        let k = DataKey::generate();
        let p = k.protect(PersonalKind::IdNumber, "11010519491231002X");
        assert_eq!(p.masked, "110105********002X");
        assert_eq!(k.reveal(&p).unwrap(), "11010519491231002X");
        assert_eq!(p.lookup, k.lookup(PersonalKind::IdNumber, "11010519491231002X"));
        assert!(!p.sealed.windows(18).any(|w| w == b"11010519491231002X"));
        let other = DataKey::generate();
        assert!(other.reveal(&p).is_err());
        assert_ne!(other.lookup(PersonalKind::IdNumber, "11010519491231002X"), p.lookup);
    }

    /// One village's key opens its own lane's data and no other lane's;
    /// the master key opens every lane.
    #[test]
    fn a_lane_key_opens_only_its_lane() {
        let master = DataKey::generate();
        let (a, b) = (proto::NodeId::new("511421101001"), proto::NodeId::new("511421102001"));
        let in_a = master.lane_key(&a).protect(PersonalKind::IdNumber, "11010519491231002X");
        let village = DataKeys { master: None, lanes: [(a.clone(), master.lane_key(&a).to_hex())].into() };
        assert!(village.for_lane(&a).unwrap().reveal(&in_a).is_ok());
        assert!(village.for_lane(&b).is_none());
        assert!(master.lane_key(&b).reveal(&in_a).is_err());
        assert!(DataKeys::county(&master).for_lane(&a).unwrap().reveal(&in_a).is_ok());
    }
}
