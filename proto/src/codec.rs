//! The wire and storage encoding. This is the only module that knows about
//! bincode, so the codec can be swapped in one place.

use serde::{de::DeserializeOwned, Serialize};

/// A value could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("could not decode {what}: {message}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// Why, as a kind a program can act on.
    pub kind: DecodeErrorKind,
    /// The decoder's explanation.
    pub message: String,
}

/// Why a value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The bytes are not a well-formed value of the type.
    Malformed,
    /// The bytes are another kind of value (their type byte differs).
    WrongType,
    /// A format version this program does not read (a newer release).
    UnsupportedVersion(u8),
}

/// The first two bytes of every tagged encoding: what it is and which
/// version of its format. Each kind keeps its own version; a change of
/// format bumps it, and golden-bytes tests pin every current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub kind: u8,
    pub version: u8,
    pub what: &'static str,
}

/// A sync message on the wire, in its newest format version (`crate::wire`
/// speaks the older ones too).
pub const SYNC_MESSAGE: Tag = Tag { kind: 0x53, version: 2, what: "sync message" };
/// A message of a sync session's file phase (`crate::transfer`).
pub const FILE_MESSAGE: Tag = Tag { kind: 0x46, version: 1, what: "file message" };
/// The signed part of a county receipt (`crate::files::Receipt`).
pub const RECEIPT: Tag = Tag { kind: 0x52, version: 1, what: "county receipt" };
/// An event kept whole (an equivocating twin, a set-aside or quarantined
/// event, format 1 of the sync message); the ledger's rows keep its
/// content at rest ([`EVENT_CONTENT_AT_REST`], packed as
/// [`EVENT_CONTENT_PACKED`]) beside its header's fields.
pub const EVENT: Tag = Tag { kind: 0x45, version: 1, what: "event" };
/// The bytes an event's hash covers (its header).
pub const EVENT_HEADER: Tag = Tag { kind: 0x48, version: 1, what: "event header" };
/// The bytes an event's content hash covers, in its first format version;
/// each body kind is written in the lowest version that has it
/// (`Body::content_version`), up to [`EVENT_CONTENT_NEWEST`].
pub const EVENT_CONTENT: Tag = Tag { kind: 0x43, version: 1, what: "event content" };
/// The newest event content format version this release reads.
pub const EVENT_CONTENT_NEWEST: u8 = 2;
/// An event's content as a node stores it beside the name of its case:
/// the content without the case id (`Event::content_at_rest`), in the
/// content's own format version.
pub const EVENT_CONTENT_AT_REST: Tag = Tag { kind: 0x65, version: 1, what: "stored event content" };
/// An event's content at rest ([`EVENT_CONTENT_AT_REST`], or the content
/// itself) as a node stores it when that is shorter: zstd-compressed with
/// a frozen dictionary the version names (`node::at_rest`).
pub const EVENT_CONTENT_PACKED: Tag = Tag { kind: 0x7a, version: 1, what: "stored event content, packed" };
/// A case's folded state as a node stores it: its encoding,
/// zstd-compressed (`node::at_rest`). 3: with a frozen dictionary; 2: the
/// history's event hashes left out where the events table holds them,
/// without a dictionary; 1: with them (1 and 2 still read).
pub const CASE_AT_REST: Tag = Tag { kind: 0x63, version: 3, what: "stored case" };
/// A long setting of a node's store (its JSON), zstd-compressed
/// (`node::at_rest`).
pub const META_AT_REST: Tag = Tag { kind: 0x6d, version: 1, what: "stored setting" };
/// What a case digest covers (`CaseState::digest`).
pub const CASE_DIGEST: Tag = Tag { kind: 0x44, version: 1, what: "case digest" };
/// A segment carried in an enrolment bundle.
pub const SEGMENT: Tag = Tag { kind: 0x47, version: 1, what: "segment" };
/// The signed part of an electronic licence (电子证照).
pub const LICENCE: Tag = Tag { kind: 0x4c, version: 1, what: "licence" };

/// Encodes a value behind its tag.
pub fn encode_tagged<T: Serialize>(tag: Tag, value: &T) -> Vec<u8> {
    let mut out = vec![tag.kind, tag.version];
    bincode::serde::encode_into_std_write(value, &mut out, config()).expect("encoding an in-memory value cannot fail");
    out
}

/// Decodes a value behind its tag: another type or a version this program
/// does not read is a typed error, never a misread value.
pub fn decode_tagged<T: DeserializeOwned>(tag: Tag, bytes: &[u8]) -> Result<T, DecodeError> {
    let err = |kind, message: String| DecodeError { what: tag.what, kind, message };
    match bytes {
        [kind, ..] if *kind != tag.kind => {
            Err(err(DecodeErrorKind::WrongType, format!("type byte 0x{kind:02x}, expected 0x{:02x}", tag.kind)))
        }
        [_, version, ..] if *version != tag.version => Err(err(
            DecodeErrorKind::UnsupportedVersion(*version),
            format!("format version {version}; this program reads version {} (upgrade it)", tag.version),
        )),
        [_, _, rest @ ..] => decode(tag.what, rest),
        _ => Err(err(DecodeErrorKind::Malformed, "too short".into())),
    }
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
    let (value, used) = bincode::serde::decode_from_slice(bytes, limited()).map_err(|e| DecodeError {
        what,
        kind: DecodeErrorKind::Malformed,
        message: e.to_string(),
    })?;
    if used != bytes.len() {
        let message = format!("{} trailing bytes", bytes.len() - used);
        return Err(DecodeError { what, kind: DecodeErrorKind::Malformed, message });
    }
    Ok(value)
}

/// Where a string encoded at `at` in `bytes` ends (after its length and
/// its UTF-8 bytes), if a well-formed one is there.
pub fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let (len, used): (u64, usize) = bincode::decode_from_slice(bytes.get(at..)?, config()).ok()?;
    let start = at.checked_add(used)?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    std::str::from_utf8(bytes.get(start..end)?).ok()?;
    Some(end)
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
    fn a_tag_of_another_type_or_version_is_a_typed_error() {
        let bytes = encode_tagged(SYNC_MESSAGE, &7u32);
        assert_eq!(decode_tagged::<u32>(SYNC_MESSAGE, &bytes).unwrap(), 7);
        assert_eq!(decode_tagged::<u32>(EVENT, &bytes).unwrap_err().kind, DecodeErrorKind::WrongType);
        let mut newer = bytes.clone();
        newer[1] = 9;
        assert_eq!(
            decode_tagged::<u32>(SYNC_MESSAGE, &newer).unwrap_err().kind,
            DecodeErrorKind::UnsupportedVersion(9)
        );
        assert_eq!(decode_tagged::<u32>(SYNC_MESSAGE, &[]).unwrap_err().kind, DecodeErrorKind::Malformed);
    }

    #[test]
    fn a_strings_end_is_found_after_its_length_and_bytes() {
        for text in ["", "村代办员", &"长".repeat(300)] {
            let bytes = encode(&(7u8, text, 9u8));
            assert_eq!(string_end(&bytes, 1), Some(bytes.len() - 1), "{text}");
        }
        let bytes = encode(&"村代办员");
        assert_eq!(string_end(&bytes[..bytes.len() - 1], 0), None, "cut short");
        assert_eq!(string_end(&encode(&vec![0xffu8, 0xfe]), 0), None, "not UTF-8");
        assert_eq!(string_end(&bytes, bytes.len()), None);
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        let value = (String::from("a case"), vec![1u64, 300, 70_000], [7u8; 32]);
        assert_eq!(encoded_len(&value), encode(&value).len());
    }
}
