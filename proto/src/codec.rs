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

/// Largest value decoded, in bytes: no length field from the wire may make
/// the decoder allocate more than this. It equals the largest sync message
/// a node accepts before compression (`node::sync` refuses longer frames
/// before decoding them).
pub const DECODE_LIMIT: usize = 32 * 1024 * 1024;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn limited() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
> {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes a value. Encoding of our own types cannot fail (no maps with
/// non-serialisable keys, no unbounded lengths), so this returns bytes.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("encoding an in-memory value cannot fail")
}

/// The length of a value's encoding, without building it.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    bincode::serde::encode_into_std_write(value, &mut std::io::sink(), config())
        .expect("encoding an in-memory value cannot fail")
}

/// Decodes a value, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, limited())
        .map_err(|e| DecodeError { what, message: e.to_string() })?;
    if used != bytes.len() {
        return Err(DecodeError { what, message: format!("{} trailing bytes", bytes.len() - used) });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile length prefix must be an error, not an allocation that
    /// aborts the process.
    #[test]
    fn a_huge_length_prefix_is_an_error() {
        // Varint 0xFD + u64: a string claiming 2^40 bytes.
        let mut bytes = vec![0xFD];
        bytes.extend((1u64 << 40).to_le_bytes());
        assert!(decode::<String>("test", &bytes).is_err());
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        let value = (String::from("a case"), vec![1u64, 300, 70_000], [7u8; 32]);
        assert_eq!(encoded_len(&value), encode(&value).len());
    }
}
