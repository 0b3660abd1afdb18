//! The wire and storage encoding. This is the only module that knows about
//! bincode, so the codec can be swapped in one place.

use serde::{de::DeserializeOwned, Serialize};

/// A value could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("could not decode {what}: {message}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// The decoder's explanation.
    pub message: String,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value. Encoding of our own types cannot fail (no maps with
/// non-serialisable keys, no unbounded lengths), so this returns bytes.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("encoding an in-memory value cannot fail")
}

/// Decodes a value, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| DecodeError { what, message: e.to_string() })?;
    if used != bytes.len() {
        return Err(DecodeError { what, message: format!("{} trailing bytes", bytes.len() - used) });
    }
    Ok(value)
}
