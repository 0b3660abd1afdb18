//! Keys at rest: a node's private keys (ed25519 signing key, TLS key, data
//! keys) and the hub's CA key are stored only sealed under a key derived
//! from the node's passphrase (Argon2id, then ChaCha20-Poly1305). A thief
//! holding the laptop's disk holds ciphertext; the passphrase is typed by
//! staff, read from standard input (`--passphrase-stdin`), or given to a
//! service in `CASE_NODE_PASSPHRASE`.
//!
//! A process learns the passphrase once; derived keys are cached per salt,
//! so a process that opens its ledger many times derives once.

use anyhow::{bail, Context, Result};
use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The environment variable a service reads its passphrase from.
pub const PASSPHRASE_ENV: &str = "CASE_NODE_PASSPHRASE";
/// Shortest passphrase accepted when one is set.
pub const MIN_PASSPHRASE_CHARS: usize = 8;
const AAD: &[u8] = b"case-ledger sealed secrets v1";

/// Argon2id cost parameters, stored beside what they sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    pub memory_kib: u32,
    pub passes: u32,
}

impl Kdf {
    /// For laptops and servers: about a tenth of a second per unlock.
    pub const STANDARD: Kdf = Kdf { memory_kib: 19 * 1024, passes: 2 };
    /// For the simulated county, whose 321 nodes share one process and a
    /// passphrase printed on screen: cheap on purpose.
    pub const SIMULATION: Kdf = Kdf { memory_kib: 64, passes: 1 };
}

/// Secrets sealed under a passphrase.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sealed {
    pub kdf: Kdf,
    pub salt: String,
    pub nonce: String,
    pub ciphertext: String,
}

/// Derived keys by (salt, passphrase, cost).
type KeyCache = Mutex<HashMap<(Vec<u8>, String, u32, u32), [u8; 32]>>;

fn derive(passphrase: &str, salt: &[u8], kdf: Kdf) -> Result<[u8; 32]> {
    static CACHE: OnceLock<KeyCache> = OnceLock::new();
    let cache_key = (salt.to_vec(), passphrase.to_string(), kdf.memory_kib, kdf.passes);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(k) = cache.lock().expect("cache lock").get(&cache_key) {
        return Ok(*k);
    }
    let params = Params::new(kdf.memory_kib, kdf.passes, 1, Some(32)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut key = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| anyhow::anyhow!("deriving the key from the passphrase failed: {e}"))?;
    cache.lock().expect("cache lock").insert(cache_key, key);
    Ok(key)
}

/// Seals `clear` under `passphrase`.
pub fn seal(clear: &[u8], passphrase: &str, kdf: Kdf) -> Result<Sealed> {
    let (mut salt, mut nonce) = ([0u8; 16], [0u8; 12]);
    rand::thread_rng().fill_bytes(&mut salt);
    rand::thread_rng().fill_bytes(&mut nonce);
    let key = derive(passphrase, &salt, kdf)?;
    let ciphertext = ChaCha20Poly1305::new(&key.into())
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: clear, aad: AAD })
        .map_err(|_| anyhow::anyhow!("sealing the node's keys failed"))?;
    Ok(Sealed { kdf, salt: hex::encode(salt), nonce: hex::encode(nonce), ciphertext: hex::encode(ciphertext) })
}

/// Opens sealed secrets with `passphrase`.
pub fn open(sealed: &Sealed, passphrase: &str) -> Result<Vec<u8>> {
    open_with_key(sealed, &derive_for(sealed, passphrase)?)
}

/// The key `passphrase` derives for `sealed` (its salt and cost).
pub fn derive_for(sealed: &Sealed, passphrase: &str) -> Result<[u8; 32]> {
    let salt = hex::decode(&sealed.salt).context(DAMAGED)?;
    derive(passphrase, &salt, sealed.kdf)
}

const DAMAGED: &str = "the node's sealed keys are damaged; re-enrol this node";

/// Opens sealed secrets with the key derived for them.
pub fn open_with_key(sealed: &Sealed, key: &[u8; 32]) -> Result<Vec<u8>> {
    let nonce = hex::decode(&sealed.nonce).context(DAMAGED)?;
    let ciphertext = hex::decode(&sealed.ciphertext).context(DAMAGED)?;
    if nonce.len() != 12 {
        bail!(DAMAGED);
    }
    ChaCha20Poly1305::new(key.into())
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: AAD })
        .map_err(|_| anyhow::anyhow!("wrong passphrase for this node's keys"))
}

/// Seals `clear` again under the key of `sealed` (same salt and cost, a
/// fresh nonce): what changing the keys held needs, without the passphrase.
pub fn reseal_with_key(sealed: &Sealed, key: &[u8; 32], clear: &[u8]) -> Result<Sealed> {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ciphertext = ChaCha20Poly1305::new(key.into())
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: clear, aad: AAD })
        .map_err(|_| anyhow::anyhow!("sealing the node's keys failed"))?;
    Ok(Sealed {
        kdf: sealed.kdf,
        salt: sealed.salt.clone(),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    })
}

/// A sealed blob's salt and cost, by which a key had from the agent is kept.
type AgentKeyId = (String, u32, u32);

/// The key that opens `sealed`, a blob of the node in `dir`: from the
/// passphrase this process was given, else from the node's key agent
/// (`unlock`), else from the passphrase in the environment or typed at
/// the terminal. Checked to open the blob.
///
/// A key once had from the agent is kept for the rest of the process (as
/// one derived from the passphrase is): a desk or server started while
/// the node was unlocked goes on signing after `lock` or the agent's
/// time, as it would had the passphrase been typed at its start.
pub fn key_in(dir: &Path, sealed: &Sealed, what: &str) -> Result<[u8; 32]> {
    static FROM_AGENT: OnceLock<Mutex<HashMap<AgentKeyId, [u8; 32]>>> = OnceLock::new();
    let kept = FROM_AGENT.get_or_init(Default::default);
    let id = (sealed.salt.clone(), sealed.kdf.memory_kib, sealed.kdf.passes);
    if given().lock().expect("passphrase lock").is_none() {
        if let Some(key) = kept.lock().expect("key lock").get(&id) {
            return Ok(*key);
        }
        if let Some(key) = crate::agent::ask(dir, sealed) {
            if open_with_key(sealed, &key).is_ok() {
                kept.lock().expect("key lock").insert(id, key);
                return Ok(key);
            }
            tracing::warn!("the key agent of {} holds another key; unlocking with the passphrase", dir.display());
        }
    }
    let key = derive_for(sealed, &passphrase(what)?)?;
    open_with_key(sealed, &key)?;
    Ok(key)
}

/// Opens `sealed`, a blob of the node in `dir` (see [`key_in`]).
pub fn open_in(dir: &Path, sealed: &Sealed, what: &str) -> Result<Vec<u8>> {
    open_with_key(sealed, &key_in(dir, sealed, what)?)
}

fn given() -> &'static Mutex<Option<String>> {
    static GIVEN: OnceLock<Mutex<Option<String>>> = OnceLock::new();
    GIVEN.get_or_init(|| Mutex::new(None))
}

/// Gives this process the passphrase (read by the command line, or set by
/// the simulated county).
pub fn set_passphrase(passphrase: &str) {
    *given().lock().expect("passphrase lock") = Some(passphrase.to_string());
}

/// Reads the passphrase from the first line of standard input.
pub fn read_passphrase_stdin() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read the passphrase from standard input")?;
    let pass = line.trim_end_matches(['\r', '\n']);
    if pass.is_empty() {
        bail!("--passphrase-stdin was given but standard input held no passphrase");
    }
    set_passphrase(pass);
    Ok(())
}

/// The passphrase of this process's node: given, from the environment, or
/// asked for at the terminal. `what` says what it unlocks.
pub fn passphrase(what: &str) -> Result<String> {
    if let Some(p) = given().lock().expect("passphrase lock").clone() {
        return Ok(p);
    }
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        if !p.is_empty() {
            return Ok(p);
        }
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password(format!("passphrase for {what}: "))
            .context("cannot read the passphrase from the terminal")?;
        set_passphrase(&p);
        return Ok(p);
    }
    bail!(
        "{what} is locked under its passphrase: type it at a terminal, pipe it with --passphrase-stdin, \
         or set {PASSPHRASE_ENV} for a service"
    )
}

/// Checks a new passphrase.
pub fn check_new_passphrase(p: &str) -> Result<()> {
    if p.chars().count() < MIN_PASSPHRASE_CHARS {
        bail!("the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_passphrase() {
        let sealed = seal(b"secret key bytes", "correct horse", Kdf::SIMULATION).unwrap();
        assert!(!sealed.ciphertext.contains(&hex::encode(b"secret key bytes")));
        assert_eq!(open(&sealed, "correct horse").unwrap(), b"secret key bytes");
        let err = open(&sealed, "wrong horse").unwrap_err();
        assert!(format!("{err:#}").contains("wrong passphrase"));
        let mut altered = sealed.clone();
        altered.ciphertext.replace_range(0..2, "00");
        assert!(open(&altered, "correct horse").is_err());
    }
}
