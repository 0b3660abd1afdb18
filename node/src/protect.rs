//! Protection of personal data at rest and in transit: values are sealed
//! with the county's data key (ChaCha20-Poly1305), looked up by a keyed
//! hash, and shown masked. The clear value never reaches an event, a case
//! row or any file of the data directory.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use proto::personal::{PersonalKind, Protected};
use rand::RngCore;
use sha2::Sha256;

/// The county-wide key for personal data, carried in enrolment bundles.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

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

    fn sub_key(&self, purpose: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    }

    /// The keyed hash used to find cases by a personal value.
    pub fn lookup(&self, kind: PersonalKind, clear: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.sub_key(b"lookup")).expect("any key length");
        mac.update(format!("{kind:?}\0{clear}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Seals a clear value.
    pub fn protect(&self, kind: PersonalKind, clear: &str) -> Protected {
        let cipher = ChaCha20Poly1305::new(&self.sub_key(b"seal").into());
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = format!("{kind:?}");
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: clear.as_bytes(), aad: aad.as_bytes() })
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
        let aad = format!("{:?}", p.kind);
        let clear = cipher
            .decrypt(Nonce::from_slice(&p.sealed[..12]), Payload { msg: &p.sealed[12..], aad: aad.as_bytes() })
            .map_err(|_| OpenError)?;
        String::from_utf8(clear).map_err(|_| OpenError)
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
}
