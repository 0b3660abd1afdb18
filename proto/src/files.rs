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

    #[test]
    fn a_hash_reads_back_from_hex() {
        let h = FileHash([7; 32]);
        assert_eq!(FileHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(FileHash::from_hex("zz"), None);
    }
}
