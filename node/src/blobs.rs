//! Material files at rest: stored once per content hash (BLAKE3) under
//! `files/` in the data directory, encrypted in chunks under a key derived
//! from the data key of the case's lane (the rule of ID numbers: a stolen
//! laptop opens at most its own village's files), and checked against
//! their hash whenever they are read, so a file altered on disk is refused
//! with the reason, never served.
//!
//! Layout of a stored file: the magic `CLF1`, then the plaintext in chunks
//! of [`CHUNK`] bytes, each sealed with ChaCha20-Poly1305 under the file's
//! key; the nonce is the chunk's index with a flag on the last chunk, and
//! the associated data the file's hash, so chunks can be neither reordered,
//! truncated nor moved to another file.

use crate::protect::DataKey;
use anyhow::{bail, Context, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use proto::files::FileHash;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Plaintext bytes per sealed chunk.
pub const CHUNK: usize = proto::files::GROUP;
const MAGIC: &[u8; 4] = b"CLF1";
const TAG: usize = 16;

/// The BLAKE3 hash of some bytes.
pub fn hash_of(bytes: &[u8]) -> FileHash {
    FileHash(*blake3::hash(bytes).as_bytes())
}

/// Where a file is kept in a data directory.
pub fn path_of(dir: &Path, hash: &FileHash) -> PathBuf {
    let hex = hash.to_hex();
    dir.join("files").join(&hex[..2]).join(hex)
}

/// Whether this node holds a file's bytes.
pub fn holds(dir: &Path, hash: &FileHash) -> bool {
    path_of(dir, hash).exists()
}

fn cipher(key: &DataKey, hash: &FileHash) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new((&key.file_key(&hash.0)).into())
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_le_bytes());
    n[11] = u8::from(last);
    n.into()
}

/// Stores `bytes` (whose hash is `hash`) sealed under `key`, unless a file
/// of that hash is already held: written to a temporary name, flushed to
/// disk, then renamed, so a crash leaves either the whole file or none.
/// Returns false when the file was already held (stored once).
pub fn store(dir: &Path, key: &DataKey, hash: &FileHash, bytes: &[u8]) -> Result<bool> {
    let path = path_of(dir, hash);
    if path.exists() {
        return Ok(false);
    }
    let parent = path.parent().expect("a file has a folder");
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(".{}.part", hash.to_hex()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    out.write_all(MAGIC)?;
    let cipher = cipher(key, hash);
    let chunks = bytes.len().div_ceil(CHUNK).max(1);
    for i in 0..chunks {
        let part = &bytes[(i * CHUNK).min(bytes.len())..((i + 1) * CHUNK).min(bytes.len())];
        let sealed = cipher
            .encrypt(&nonce(i as u64, i + 1 == chunks), Payload { msg: part, aad: &hash.0 })
            .map_err(|_| anyhow::anyhow!("sealing a file failed"))?;
        out.write_all(&sealed)?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(true)
}

fn partial_path(dir: &Path, hash: &FileHash) -> PathBuf {
    dir.join("files").join(".partial").join(hash.to_hex())
}

fn partial_lane_path(dir: &Path, hash: &FileHash) -> PathBuf {
    dir.join("files").join(".partial").join(format!("{}.lane", hash.to_hex()))
}

/// The lane whose key a file on its way is sealed under, as noted when its
/// first group was kept ([`note_partial_lane`]): every group of a file is
/// sealed under one key, even when a case of another lane naming the file
/// arrives before the transfer resumes.
pub fn partial_lane(dir: &Path, hash: &FileHash) -> Result<Option<String>> {
    match std::fs::read_to_string(partial_lane_path(dir, hash)) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Forgets the lane of a file no longer on its way (once it is noted as
/// held).
pub fn forget_partial_lane(dir: &Path, hash: &FileHash) {
    let _ = std::fs::remove_file(partial_lane_path(dir, hash));
}

/// Notes the lane a file on its way is sealed under, before its first
/// group is kept.
pub fn note_partial_lane(dir: &Path, hash: &FileHash, home: &str) -> Result<()> {
    let path = partial_lane_path(dir, hash);
    std::fs::create_dir_all(path.parent().expect("a folder"))?;
    std::fs::write(&path, home)?;
    Ok(())
}

const SEALED: usize = CHUNK + TAG;

/// The whole groups of a file on its way that are held (verified and
/// sealed); a group a crash left half written is not counted (it is
/// written again, in place). Nothing is cut: another session may be
/// writing the same file.
pub fn partial_groups(dir: &Path, hash: &FileHash) -> Result<u64> {
    let len = match std::fs::metadata(partial_path(dir, hash)) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    Ok(len.saturating_sub(MAGIC.len() as u64) / SEALED as u64)
}

/// Keeps group `index` of a file on its way (verified by the caller),
/// sealed as the file will be stored, at its place in the file; the last
/// group completes the file (flushed to disk and moved to its place).
/// Groups come in order, but two sessions may receive one file at once:
/// a group already kept (the same sealed bytes: the key and nonce depend
/// only on the file and the group) is kept again in place, a file already
/// whole is left as it is, and only a group past the first one missing is
/// out of order.
pub fn write_group(dir: &Path, key: &DataKey, hash: &FileHash, size: u64, index: u64, bytes: &[u8]) -> Result<bool> {
    use std::io::Seek;
    let path = partial_path(dir, hash);
    let n = proto::files::groups(size);
    let last = index + 1 == n;
    if holds(dir, hash) {
        return Ok(last);
    }
    std::fs::create_dir_all(path.parent().expect("a folder"))?;
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
    let at = MAGIC.len() as u64 + index * SEALED as u64;
    if index > 0 && file.metadata()?.len() < at {
        bail!("group {index} of file {hash} arrived out of order");
    }
    let sealed = cipher(key, hash)
        .encrypt(&nonce(index, last), Payload { msg: bytes, aad: &hash.0 })
        .map_err(|_| anyhow::anyhow!("sealing a file failed"))?;
    if index == 0 {
        file.write_all(MAGIC)?;
    }
    file.seek(std::io::SeekFrom::Start(at))?;
    file.write_all(&sealed)?;
    if last || index % 16 == 15 {
        file.sync_data()?;
    }
    if last {
        // Nothing past the last group (a longer partial is not this file).
        file.set_len(at + sealed.len() as u64)?;
        file.sync_data()?;
        drop(file);
        let to = path_of(dir, hash);
        let parent = to.parent().expect("a folder");
        std::fs::create_dir_all(parent)?;
        match std::fs::rename(&path, &to) {
            Ok(()) => {}
            // Another session moved it there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => {}
            Err(e) => return Err(e.into()),
        }
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(last)
}

/// Group `index` of a held file, opened and checked against its seal (the
/// receiver checks it against the file's hash too).
pub fn read_group(dir: &Path, key: &DataKey, hash: &FileHash, size: u64, index: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Seek;
    let n = proto::files::groups(size);
    if index >= n {
        return Err(ReadError::Damaged { hash: *hash, why: format!("it has no group {index}") });
    }
    let mut file = match std::fs::File::open(path_of(dir, hash)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing(*hash)),
        Err(e) => return Err(e.into()),
    };
    let len = if index + 1 == n { (size - index * CHUNK as u64) as usize + TAG } else { SEALED };
    file.seek(std::io::SeekFrom::Start(MAGIC.len() as u64 + index * SEALED as u64))?;
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf).map_err(|_| ReadError::Damaged { hash: *hash, why: "cut short".into() })?;
    cipher(key, hash)
        .decrypt(&nonce(index, index + 1 == n), Payload { msg: &buf, aad: &hash.0 })
        .map_err(|_| ReadError::Damaged { hash: *hash, why: format!("chunk {index} does not open") })
}

/// Moves a damaged file out of the way (to `files/.damaged/`), kept as
/// evidence; the node fetches a good copy again.
pub fn set_aside(dir: &Path, hash: &FileHash) -> Result<()> {
    let from = path_of(dir, hash);
    if !from.exists() {
        return Ok(());
    }
    let aside = dir.join("files").join(".damaged");
    std::fs::create_dir_all(&aside)?;
    std::fs::rename(&from, aside.join(format!("{}-{}", hash.to_hex(), crate::wall_clock_ms())))?;
    Ok(())
}

/// Why a stored file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not held here.
    #[error("this node does not hold file {0}")]
    Missing(FileHash),
    /// The stored bytes were altered, cut short or are not this file's.
    #[error("the stored file {hash} is damaged: {why}; it is not served (fetch it again from a peer)")]
    Damaged { hash: FileHash, why: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes a held file's bytes to `out`, chunk by chunk, and checks them
/// against the hash before reporting success. On an error part of the
/// file may have been written: write to a temporary place first.
pub fn read_into(dir: &Path, key: &DataKey, hash: &FileHash, out: &mut dyn Write) -> Result<u64, ReadError> {
    let path = path_of(dir, hash);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => std::io::BufReader::new(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing(*hash)),
        Err(e) => return Err(e.into()),
    };
    let damaged = |why: &str| ReadError::Damaged { hash: *hash, why: why.into() };
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(|_| damaged("too short"))?;
    if &magic != MAGIC {
        return Err(damaged("not a stored file"));
    }
    let cipher = cipher(key, hash);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK + TAG];
    let mut total = 0u64;
    let mut index = 0u64;
    loop {
        let n = read_full(&mut file, &mut buf)?;
        // A chunk shorter than a full one is the last; a full one is the
        // last when nothing follows.
        let last = n < buf.len() || file.fill_buf_empty()?;
        let part = cipher
            .decrypt(&nonce(index, last), Payload { msg: &buf[..n], aad: &hash.0 })
            .map_err(|_| damaged(&format!("chunk {index} does not open")))?;
        hasher.update(&part);
        out.write_all(&part)?;
        total += part.len() as u64;
        index += 1;
        if last {
            break;
        }
    }
    if FileHash(*hasher.finalize().as_bytes()) != *hash {
        return Err(damaged("its bytes do not match its hash"));
    }
    Ok(total)
}

/// Reads a held file whole (for small files and tests).
pub fn read(dir: &Path, key: &DataKey, hash: &FileHash) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    read_into(dir, key, hash, &mut out)?;
    Ok(out)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

trait FillBufEmpty {
    fn fill_buf_empty(&mut self) -> std::io::Result<bool>;
}

impl<R: Read> FillBufEmpty for std::io::BufReader<R> {
    fn fill_buf_empty(&mut self) -> std::io::Result<bool> {
        use std::io::BufRead;
        Ok(self.fill_buf()?.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DataKey {
        DataKey::from_hex(&"11".repeat(32)).unwrap()
    }

    #[test]
    fn a_file_reads_back_and_is_not_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = b"%PDF-1.7 MARKER-IN-THE-FILE ".to_vec();
        bytes.extend(std::iter::repeat_n(7u8, 3 * CHUNK + 5));
        let h = hash_of(&bytes);
        assert!(store(dir.path(), &key(), &h, &bytes).unwrap());
        assert!(!store(dir.path(), &key(), &h, &bytes).unwrap(), "stored once");
        assert_eq!(read(dir.path(), &key(), &h).unwrap(), bytes);
        let raw = std::fs::read(path_of(dir.path(), &h)).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"MARKER"), "the clear bytes reached the disk");
    }

    #[test]
    fn an_altered_truncated_or_extended_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..2 * CHUNK as u32).map(|i| i as u8).collect();
        let h = hash_of(&bytes);
        store(dir.path(), &key(), &h, &bytes).unwrap();
        let path = path_of(dir.path(), &h);
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        flipped[100] ^= 1;
        let cut = good[..4 + CHUNK + TAG].to_vec();
        let mut longer = good.clone();
        longer.extend_from_slice(&good[4..4 + CHUNK + TAG]);
        for bad in [flipped, cut, longer] {
            std::fs::write(&path, &bad).unwrap();
            assert!(matches!(read(dir.path(), &key(), &h), Err(ReadError::Damaged { .. })));
        }
        std::fs::write(&path, &good).unwrap();
        let other = DataKey::from_hex(&"22".repeat(32)).unwrap();
        assert!(matches!(read(dir.path(), &other, &h), Err(ReadError::Damaged { .. })), "another lane's key");
    }

    /// A file received group by group is stored as an attached one is, and
    /// a half-written group left by a crash is cut off on resume.
    #[test]
    fn a_file_received_in_groups_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(3 * CHUNK + 10) as u32).map(|i| (i * 7) as u8).collect();
        let h = hash_of(&bytes);
        let size = bytes.len() as u64;
        let groups: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        assert!(!write_group(dir.path(), &key(), &h, size, 0, groups[0]).unwrap());
        assert!(!write_group(dir.path(), &key(), &h, size, 1, groups[1]).unwrap());
        assert!(write_group(dir.path(), &key(), &h, size, 3, groups[3]).is_err(), "out of order");
        // A crash in the middle of group 2.
        let partial = partial_path(dir.path(), &h);
        let mut f = std::fs::OpenOptions::new().append(true).open(&partial).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        assert_eq!(partial_groups(dir.path(), &h).unwrap(), 2);
        assert!(!write_group(dir.path(), &key(), &h, size, 2, groups[2]).unwrap());
        assert!(write_group(dir.path(), &key(), &h, size, 3, groups[3]).unwrap());
        assert_eq!(read(dir.path(), &key(), &h).unwrap(), bytes);
        for (i, g) in groups.iter().enumerate() {
            assert_eq!(&read_group(dir.path(), &key(), &h, size, i as u64).unwrap(), g);
        }
        assert!(!partial.exists());
    }

    /// Two sessions receiving one file at once (the county from the
    /// township and from the village, a township from two villages holding
    /// the same e-licence, or a hostile peer restarting the file at group 0
    /// in a loop) must not undo each other: the second one's group 0 used
    /// to cut the file back to one group, and the first session then broke
    /// off at its next group ("arrived out of order").
    #[test]
    fn two_sessions_receiving_one_file_do_not_undo_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(3 * CHUNK + 10) as u32).map(|i| (i * 13 + i / 7) as u8).collect();
        let h = hash_of(&bytes);
        let size = bytes.len() as u64;
        let g: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        // The first session keeps groups 0 and 1.
        write_group(dir.path(), &key(), &h, size, 0, g[0]).unwrap();
        write_group(dir.path(), &key(), &h, size, 1, g[1]).unwrap();
        // A second session, started when nothing was held, keeps group 0.
        write_group(dir.path(), &key(), &h, size, 0, g[0]).unwrap();
        // Both go on with what their peers send.
        let first = write_group(dir.path(), &key(), &h, size, 2, g[2]);
        assert!(first.is_ok(), "the first session broke off: {first:?}");
        write_group(dir.path(), &key(), &h, size, 1, g[1]).unwrap();
        write_group(dir.path(), &key(), &h, size, 2, g[2]).unwrap();
        assert!(write_group(dir.path(), &key(), &h, size, 3, g[3]).unwrap());
        assert!(write_group(dir.path(), &key(), &h, size, 3, g[3]).unwrap(), "the second session finds it whole");
        assert_eq!(read(dir.path(), &key(), &h).unwrap(), bytes);
    }

    /// A crash after the last group of a file of whole groups (a size that
    /// is a multiple of 64 KiB) was kept, before the file was moved to its
    /// place: the partial file holds every group, so the next session asks
    /// for the last group again, and keeping it completes the file.
    #[test]
    fn a_file_whose_every_group_was_kept_is_completed_by_its_last_group() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(2 * CHUNK) as u32).map(|i| (i * 29 + i / 11) as u8).collect();
        let h = hash_of(&bytes);
        let size = bytes.len() as u64;
        let g: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        write_group(dir.path(), &key(), &h, size, 0, g[0]).unwrap();
        assert!(write_group(dir.path(), &key(), &h, size, 1, g[1]).unwrap());
        // As if the rename had not happened.
        std::fs::rename(path_of(dir.path(), &h), partial_path(dir.path(), &h)).unwrap();
        assert_eq!(partial_groups(dir.path(), &h).unwrap(), 2);
        let again = write_group(dir.path(), &key(), &h, size, 1, g[1]);
        assert!(matches!(again, Ok(true)), "the last group kept again: {again:?}");
        assert_eq!(read(dir.path(), &key(), &h).unwrap(), bytes);
    }

    #[test]
    fn an_empty_file_is_one_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let h = hash_of(b"");
        store(dir.path(), &key(), &h, b"").unwrap();
        assert_eq!(read(dir.path(), &key(), &h).unwrap(), b"");
    }
}
