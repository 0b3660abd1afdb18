//! Data keys of lanes a township gained after its enrolment (a village
//! moved to it, or merged into it): the county hands them over the
//! authenticated, encrypted sync connection (`proto::transfer`, `WantKeys`
//! and `Keys`), and the township keeps them sealed under a key derived from
//! its own signing key, which is itself sealed under the node's passphrase:
//! a stolen laptop opens them no more than its bundle's keys.

use anyhow::{Context, Result};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use proto::NodeId;
use rand::RngCore;
use rusqlite::Connection;
use std::collections::BTreeMap;

const META_KEY: &str = "received_lane_keys";

#[derive(serde::Serialize, serde::Deserialize)]
struct Sealed {
    nonce: String,
    sealed: String,
}

fn cipher(signing_key: &ed25519_dalek::SigningKey) -> ChaCha20Poly1305 {
    let key = blake3::derive_key("case-ledger received lane keys v1", &signing_key.to_bytes());
    ChaCha20Poly1305::new(&key.into())
}

/// The lane keys received from the county (hex, by home).
pub fn load(conn: &Connection, signing_key: &ed25519_dalek::SigningKey) -> Result<BTreeMap<NodeId, String>> {
    let Some(s) = crate::store::meta_get::<Sealed>(conn, META_KEY)? else { return Ok(BTreeMap::new()) };
    let nonce: [u8; 12] = hex::decode(&s.nonce).ok().and_then(|n| n.try_into().ok()).context("damaged lane keys")?;
    let sealed = hex::decode(&s.sealed).context("damaged lane keys")?;
    let clear = cipher(signing_key)
        .decrypt(Nonce::from_slice(&nonce), sealed.as_slice())
        .map_err(|_| anyhow::anyhow!("the lane keys received from the county do not open under this node's key"))?;
    serde_json::from_slice(&clear).context("damaged lane keys")
}

/// Adds `keys` to those held (sealed again as a whole).
pub fn add(conn: &Connection, signing_key: &ed25519_dalek::SigningKey, keys: &[(NodeId, [u8; 32])]) -> Result<()> {
    let mut held = load(conn, signing_key)?;
    for (home, key) in keys {
        held.insert(home.clone(), hex::encode(key));
    }
    let clear = serde_json::to_vec(&held)?;
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let sealed = cipher(signing_key)
        .encrypt(Nonce::from_slice(&nonce), clear.as_slice())
        .map_err(|_| anyhow::anyhow!("sealing the lane keys failed"))?;
    crate::store::meta_set(conn, META_KEY, &Sealed { nonce: hex::encode(nonce), sealed: hex::encode(sealed) })
}
