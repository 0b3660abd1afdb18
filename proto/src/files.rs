//! Material files (scans of an ID card, a 户口簿, a signed 申请表): what a
//! case's event says about a file, and which files are allowed, decided by
//! their content, never by their name.
//!
//! A file is addressed by the BLAKE3 hash of its bytes ([`FileHash`]); the
//! event that attaches it carries the hash, size and type ([`FileRef`]), so
//! the ledger's chains and seals cover every file. The bytes themselves
//! live beside the ledger (`node::blobs`), stored once per hash.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Default largest file, in bytes (the county may set another).
pub const FILE_LIMIT_DEFAULT: u64 = 20 * 1024 * 1024;
/// Default largest total of one case's files, in bytes.
pub const CASE_LIMIT_DEFAULT: u64 = 100 * 1024 * 1024;
/// Longest original file name kept, in characters.
pub const NAME_MAX: usize = 255;

/// The BLAKE3 hash of a file's bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileHash(pub [u8; 32]);

impl FileHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<FileHash> {
        Some(FileHash(hex::decode(s).ok()?.try_into().ok()?))
    }
}

impl fmt::Debug for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file {}", &self.to_hex()[..12])
    }
}

impl fmt::Display for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The kinds of file a material may be. Stable tags: appended only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MediaType {
    Pdf,
    Jpeg,
    Png,
    /// OFD (GB/T 33190), the national format of e-documents and e-licences:
    /// a ZIP package with `OFD.xml` at its root.
    Ofd,
}

impl MediaType {
    /// The MIME type a browser is told.
    pub fn mime(self) -> &'static str {
        match self {
            MediaType::Pdf => "application/pdf",
            MediaType::Jpeg => "image/jpeg",
            MediaType::Png => "image/png",
            MediaType::Ofd => "application/ofd",
        }
    }
    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            MediaType::Pdf => "pdf",
            MediaType::Jpeg => "jpg",
            MediaType::Png => "png",
            MediaType::Ofd => "ofd",
        }
    }
    pub fn is_image(self) -> bool {
        matches!(self, MediaType::Jpeg | MediaType::Png)
    }
    /// Parses a MIME type as [`MediaType::mime`] writes it.
    pub fn from_mime(s: &str) -> Option<MediaType> {
        [MediaType::Pdf, MediaType::Jpeg, MediaType::Png, MediaType::Ofd].into_iter().find(|m| m.mime() == s)
    }

    /// What a file is, from its bytes; `None` for anything not allowed
    /// (executables, HTML, SVG, archives other than OFD, text…).
    pub fn sniff(bytes: &[u8]) -> Option<MediaType> {
        if bytes.starts_with(b"%PDF-") {
            Some(MediaType::Pdf)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(MediaType::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(MediaType::Png)
        } else if bytes.starts_with(b"PK\x03\x04") && zip_has_root_entry(bytes, "OFD.xml") {
            Some(MediaType::Ofd)
        } else {
            None
        }
    }

    /// Pages, where cheap to tell: a PDF's page objects (`/Type /Page`,
    /// not `/Pages`), an image's one page.
    pub fn pages(self, bytes: &[u8]) -> Option<u32> {
        match self {
            MediaType::Jpeg | MediaType::Png => Some(1),
            MediaType::Pdf => {
                let mut n = 0u32;
                let mut rest = bytes;
                while let Some(at) = find(rest, b"/Type") {
                    rest = &rest[at + 5..];
                    let trimmed = rest.iter().position(|b| !b.is_ascii_whitespace()).map_or(rest, |i| &rest[i..]);
                    if trimmed.starts_with(b"/Page") && !trimmed.starts_with(b"/Pages") {
                        n += 1;
                    }
                }
                (n > 0).then_some(n)
            }
            MediaType::Ofd => None,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether a ZIP archive's central directory names `name` (at its root).
fn zip_has_root_entry(bytes: &[u8], name: &str) -> bool {
    // The end-of-central-directory record is in the last 64 KiB + 22 bytes.
    let tail_from = bytes.len().saturating_sub(65_557);
    let Some(eocd) = bytes[tail_from..].windows(4).rposition(|w| w == b"PK\x05\x06").map(|i| tail_from + i) else {
        return false;
    };
    let u16_at = |i: usize| bytes.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |i: usize| bytes.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let (Some(entries), Some(mut at)) = (u16_at(eocd + 10), u32_at(eocd + 16)) else { return false };
    for _ in 0..entries {
        if bytes.get(at..at + 4) != Some(b"PK\x01\x02") {
            return false;
        }
        let (Some(len), Some(extra), Some(comment)) = (u16_at(at + 28), u16_at(at + 30), u16_at(at + 32)) else {
            return false;
        };
        if bytes.get(at + 46..at + 46 + len) == Some(name.as_bytes()) {
            return true;
        }
        at += 46 + len + extra + comment;
    }
    false
}

/// Bytes per group: files travel and are stored in groups of this many
/// bytes, each a whole subtree of the file's BLAKE3 tree (64 chunks of
/// 1 KiB), so each is verified on arrival against the file's hash.
pub const GROUP: usize = 64 * 1024;

/// A BLAKE3 chaining value: the hash of one group as a subtree.
pub type GroupHash = [u8; 32];

/// The number of groups of a file of `size` bytes (an empty file is one).
pub fn groups(size: u64) -> u64 {
    size.div_ceil(GROUP as u64).max(1)
}

/// The chaining value of group `index` of a file of more than one group.
pub fn group_hash(index: u64, bytes: &[u8]) -> GroupHash {
    use blake3::hazmat::HasherExt;
    blake3::Hasher::new().set_input_offset(index * GROUP as u64).update(bytes).finalize_non_root()
}

/// The outline of a file: the chaining values of its groups, which a
/// receiver checks against the file's hash before trusting any of them
/// ([`outline_matches`]). Empty for a file of one group (the group is then
/// checked against the hash itself).
pub fn outline(bytes: &[u8]) -> Vec<GroupHash> {
    if bytes.len() <= GROUP {
        return Vec::new();
    }
    bytes.chunks(GROUP).enumerate().map(|(i, g)| group_hash(i as u64, g)).collect()
}

/// Whether `outline` is the outline of a file of `size` bytes whose hash
/// is `hash`: its chaining values are merged up BLAKE3's tree to the root.
pub fn outline_matches(hash: &FileHash, size: u64, outline: &[GroupHash]) -> bool {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, Mode};
    fn merge(cvs: &[GroupHash], len: u64) -> GroupHash {
        if cvs.len() == 1 {
            return cvs[0];
        }
        let left = left_subtree_len(len);
        let split = (left / GROUP as u64) as usize;
        merge_subtrees_non_root(&merge(&cvs[..split], left), &merge(&cvs[split..], len - left), Mode::Hash)
    }
    if size <= GROUP as u64 || outline.len() as u64 != groups(size) {
        return outline.is_empty() && size <= GROUP as u64;
    }
    let left = left_subtree_len(size);
    let split = (left / GROUP as u64) as usize;
    let root = merge_subtrees_root(&merge(&outline[..split], left), &merge(&outline[split..], size - left), Mode::Hash);
    root.as_bytes() == &hash.0
}

/// Whether `bytes` are group `index` of the file: against the (checked)
/// outline, or, for a file of one group, against the hash itself.
pub fn group_matches(hash: &FileHash, size: u64, outline: &[GroupHash], index: u64, bytes: &[u8]) -> bool {
    let n = groups(size);
    let expected_len = if index + 1 == n { size - index * GROUP as u64 } else { GROUP as u64 };
    if index >= n || bytes.len() as u64 != expected_len {
        return false;
    }
    if n == 1 {
        return blake3::hash(bytes).as_bytes() == &hash.0;
    }
    outline.get(index as usize) == Some(&group_hash(index, bytes))
}

/// 县级已接收: what the county signs of one home lane it holds, as of
/// `at_ms`: every event of each origin up to its seq in `upto`, and every
/// file those events attach except `missing` (the county fetches every
/// file eagerly, so the exceptions are few). Not an event: the latest one
/// per lane travels in the file phase of a session, from a higher tier to
/// a lower (county → township → village), so it never holds a chain back
/// at a node of an earlier release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub home: crate::NodeId,
    pub upto: Vec<(crate::NodeId, u64)>,
    pub missing: Vec<FileHash>,
    pub at_ms: u64,
}

/// A receipt with the county's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    /// The county key that signed (enrolled for the county node).
    pub key: crate::event::KeyId,
    pub signature: Vec<u8>,
}

impl SignedReceipt {
    pub fn sign(key: &ed25519_dalek::SigningKey, receipt: Receipt) -> SignedReceipt {
        use ed25519_dalek::Signer;
        let signature = key.sign(&crate::codec::encode_tagged(crate::codec::RECEIPT, &receipt)).to_bytes().to_vec();
        SignedReceipt { receipt, key: crate::event::KeyId::of(&key.verifying_key()), signature }
    }

    /// Whether the signature is the named key's.
    pub fn signature_holds(&self) -> bool {
        use ed25519_dalek::Verifier;
        let Some(key) = self.key.verifying_key() else { return false };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&self.signature) else { return false };
        key.verify(&crate::codec::encode_tagged(crate::codec::RECEIPT, &self.receipt), &signature).is_ok()
    }

    /// Whether the county held an event (by its origin and seq) of this lane.
    pub fn covers(&self, origin: &crate::NodeId, seq: u64) -> bool {
        self.receipt.upto.iter().any(|(o, s)| o == origin && seq <= *s)
    }

    /// Whether the county held a file attached by event `(origin, seq)`.
    pub fn covers_file(&self, origin: &crate::NodeId, seq: u64, hash: &FileHash) -> bool {
        self.covers(origin, seq) && !self.receipt.missing.contains(hash)
    }
}

/// What a case's event says about a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub hash: FileHash,
    pub size: u64,
    pub media_type: MediaType,
    /// The original file name, as the clerk's computer called it.
    pub name: String,
    /// Pages, where cheap to tell.
    pub pages: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ZIP with one stored entry named `name`.
    pub(crate) fn zip_with(name: &str) -> Vec<u8> {
        let mut z = Vec::new();
        let data = b"<ofd/>";
        z.extend(b"PK\x03\x04");
        z.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend([0; 4]);
        z.extend((data.len() as u32).to_le_bytes());
        z.extend((data.len() as u32).to_le_bytes());
        z.extend((name.len() as u16).to_le_bytes());
        z.extend([0, 0]);
        z.extend(name.as_bytes());
        z.extend(data);
        let cd = z.len();
        z.extend(b"PK\x01\x02");
        z.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend([0; 4]);
        z.extend((data.len() as u32).to_le_bytes());
        z.extend((data.len() as u32).to_le_bytes());
        z.extend((name.len() as u16).to_le_bytes());
        z.extend([0; 12]);
        z.extend(0u32.to_le_bytes());
        z.extend(name.as_bytes());
        let cd_len = z.len() - cd;
        z.extend(b"PK\x05\x06");
        z.extend([0; 4]);
        z.extend(1u16.to_le_bytes());
        z.extend(1u16.to_le_bytes());
        z.extend((cd_len as u32).to_le_bytes());
        z.extend((cd as u32).to_le_bytes());
        z.extend([0, 0]);
        z
    }

    #[test]
    fn types_are_told_by_content_not_by_name() {
        assert_eq!(MediaType::sniff(b"%PDF-1.7\n..."), Some(MediaType::Pdf));
        assert_eq!(MediaType::sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 16]), Some(MediaType::Jpeg));
        assert_eq!(MediaType::sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some(MediaType::Png));
        assert_eq!(MediaType::sniff(&zip_with("OFD.xml")), Some(MediaType::Ofd));
        // An ordinary archive, an executable, markup and text are refused.
        assert_eq!(MediaType::sniff(&zip_with("Doc_0/Document.xml")), None);
        assert_eq!(MediaType::sniff(b"\x7fELF\x02\x01\x01\0"), None);
        assert_eq!(MediaType::sniff(b"MZ\x90\0"), None);
        assert_eq!(MediaType::sniff(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"), None);
        assert_eq!(MediaType::sniff(b"<!DOCTYPE html><html>"), None);
        assert_eq!(MediaType::sniff(b""), None);
    }

    #[test]
    fn pdf_pages_are_counted_without_the_page_tree() {
        let pdf = b"%PDF-1.4\n1 0 obj <</Type /Pages /Count 2>>\n2 0 obj <</Type /Page>>\n3 0 obj <</Type/Page>>";
        assert_eq!(MediaType::Pdf.pages(pdf), Some(2));
        assert_eq!(MediaType::Png.pages(b""), Some(1));
    }

    /// The outline reproduces BLAKE3's own root for sizes around every
    /// boundary, and a changed group or outline is caught.
    #[test]
    fn an_outline_verifies_against_blake3() {
        for size in
            [0, 1, GROUP - 1, GROUP, GROUP + 1, 2 * GROUP, 3 * GROUP - 7, 4 * GROUP, 5 * GROUP + 1024, 9 * GROUP]
        {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let hash = FileHash(*blake3::hash(&bytes).as_bytes());
            let out = outline(&bytes);
            assert!(outline_matches(&hash, size as u64, &out), "size {size}");
            for (i, g) in bytes.chunks(GROUP).enumerate() {
                assert!(group_matches(&hash, size as u64, &out, i as u64, g), "size {size} group {i}");
                let mut bad = g.to_vec();
                bad[0] ^= 1;
                assert!(!group_matches(&hash, size as u64, &out, i as u64, &bad), "size {size} group {i}");
            }
            if out.len() > 1 {
                let mut forged = out.clone();
                forged.swap(0, 1);
                assert!(!outline_matches(&hash, size as u64, &forged), "size {size}");
            }
        }
        assert!(group_matches(&FileHash(*blake3::hash(b"").as_bytes()), 0, &[], 0, b""));
    }

    /// A receipt verifies under the county's key only as signed, and
    /// covers what it says and nothing else.
    #[test]
    fn a_receipt_verifies_and_covers_what_it_says() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let (v, t) = (crate::NodeId::new("v"), crate::NodeId::new("t"));
        let r = SignedReceipt::sign(
            &key,
            Receipt {
                home: v.clone(),
                upto: vec![(v.clone(), 7), (t.clone(), 2)],
                missing: vec![FileHash([1; 32])],
                at_ms: 9,
            },
        );
        assert!(r.signature_holds());
        assert!(r.covers(&v, 7) && !r.covers(&v, 8) && r.covers(&t, 1) && !r.covers(&crate::NodeId::new("c"), 1));
        assert!(r.covers_file(&v, 3, &FileHash([2; 32])));
        assert!(!r.covers_file(&v, 3, &FileHash([1; 32])), "a missing file is not covered");
        assert!(!r.covers_file(&v, 9, &FileHash([2; 32])), "nor one of an event past the receipt");
        let mut forged = r.clone();
        forged.receipt.upto[0].1 = 100;
        assert!(!forged.signature_holds());
        let mut other = r.clone();
        other.key = crate::event::KeyId::of(&ed25519_dalek::SigningKey::from_bytes(&[6; 32]).verifying_key());
        assert!(!other.signature_holds());
    }

    #[test]
    fn a_hash_reads_back_from_hex() {
        let h = FileHash([7; 32]);
        assert_eq!(FileHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(FileHash::from_hex("zz"), None);
    }
}
