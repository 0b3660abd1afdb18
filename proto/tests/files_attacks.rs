//! Attacks on the file phase of a session (`proto::transfer`) by a hostile
//! peer holding a genuine certificate: every message it may send, however
//! many times, in whatever order. Each test fails if its attack succeeds.
//! Found by an outside review of issue 14 (material files).

use proto::files::{self, FileHash, GroupHash, GROUP};
use proto::transfer::{FileMessage, FileStore, Transfer, TransferError, Wanted};
use proto::NodeId;
use std::collections::BTreeMap;

/// A node's files in memory: whole files (sendable to any peer: scope is
/// the node's business, tested elsewhere), files wanted, groups kept.
#[derive(Default)]
struct Mem {
    held: BTreeMap<FileHash, Vec<u8>>,
    wants: Vec<Wanted>,
    partial: BTreeMap<FileHash, Vec<u8>>,
    /// The size the receiver's events claim for each file.
    claims: BTreeMap<FileHash, u64>,
    /// Receipts handed to the store to judge (each judged one costs a
    /// signature check and, when bad, a quarantine row at the node:
    /// `node::receipts::keep`).
    receipts_judged: usize,
}

impl FileStore for Mem {
    type Error = String;
    fn wanted(&self, _: &NodeId) -> Result<Vec<Wanted>, String> {
        Ok(self.wants.clone())
    }
    fn sendable(&self, _: &NodeId, hash: &FileHash, _: &NodeId) -> Result<Option<u64>, String> {
        Ok(self.held.get(hash).map(|b| b.len() as u64))
    }
    fn size_claimed(&self, hash: &FileHash, _: &NodeId, size: u64) -> Result<bool, String> {
        Ok(self.claims.get(hash) == Some(&size))
    }
    fn outline(&self, hash: &FileHash) -> Result<Option<Vec<GroupHash>>, String> {
        Ok(self.held.get(hash).map(|b| files::outline(b)))
    }
    fn read_group(&self, hash: &FileHash, index: u64) -> Result<Option<Vec<u8>>, String> {
        Ok(self.held.get(hash).and_then(|b| b.chunks(GROUP).nth(index as usize)).map(<[u8]>::to_vec))
    }
    fn keep_receipt(&mut self, _: &NodeId, _: files::SignedReceipt) -> Result<bool, String> {
        self.receipts_judged += 1;
        Ok(false)
    }
    fn receipts_for(&self, _: &NodeId) -> Result<Vec<files::SignedReceipt>, String> {
        Ok(Vec::new())
    }
    fn write_group(&mut self, hash: &FileHash, _: &NodeId, size: u64, index: u64, bytes: &[u8]) -> Result<(), String> {
        let p = self.partial.entry(*hash).or_default();
        assert_eq!(p.len() as u64, index * GROUP as u64, "groups are written in order");
        p.extend_from_slice(bytes);
        if index + 1 == files::groups(size) {
            let whole = self.partial.remove(hash).unwrap();
            self.held.insert(*hash, whole);
        }
        Ok(())
    }
}

fn file(groups: usize, seed: u8) -> (FileHash, Vec<u8>) {
    let mut x = u64::from(seed) | 1;
    let bytes: Vec<u8> = (0..groups * GROUP - 100)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    (FileHash(*blake3::hash(&bytes).as_bytes()), bytes)
}

fn peer() -> NodeId {
    NodeId::new("511421101001")
}

/// Everything `t` sends until it has nothing more: (messages, group bytes).
fn drain(t: &mut Transfer, store: &Mem, cap: usize) -> (usize, u64) {
    let (mut messages, mut bytes) = (0, 0u64);
    while let Some(m) = t.poll_transmit(store).unwrap() {
        messages += 1;
        if let FileMessage::Group { bytes: b, .. } = &m {
            bytes += b.len() as u64;
        }
        if messages >= cap {
            break;
        }
    }
    (messages, bytes)
}

/// A Want is an honest peer's list of distinct files it lacks (at most
/// 20,000: `node::sync::files::WANT_MAX`), one Want per round, at most
/// `MAX_ROUNDS` rounds. A hostile peer that names one 20 MB file many
/// times in a Want, or sends Wants back to back without waiting for Sent,
/// must not make the sender read and send the file once per mention: one
/// Want frame of 4 MiB names a file ~87,000 times, i.e. 1.7 TB of upload
/// from a township or the county for 4 MiB of request, and the queue of
/// what to send grows with every Want the peer writes while it reads
/// nothing.
#[test]
fn a_want_naming_a_file_many_times_does_not_multiply_what_is_sent() {
    let (hash, bytes) = file(3, 1);
    let size = bytes.len() as u64;
    let mut sender = Mem::default();
    sender.held.insert(hash, bytes);
    let mut t = Transfer::start(&sender, &peer()).unwrap();
    let _own_want = t.poll_transmit(&sender).unwrap();

    let want = FileMessage::Want { files: vec![Wanted { hash, home: peer(), from: 0 }; 1000] };
    assert!(want.encode().len() < 64 * 1024, "the whole attack fits in one small frame");
    let refused = matches!(t.handle(want, &mut sender), Err(TransferError::Protocol(_)));
    let (_, sent) = drain(&mut t, &sender, 100_000);
    assert!(
        refused || sent <= size,
        "one Want naming a file 1000 times made the sender send {sent} bytes of a {size}-byte file"
    );

    // Wants back to back, never waiting for Sent: at most what MAX_ROUNDS
    // honest rounds could ask for.
    let mut t = Transfer::start(&sender, &peer()).unwrap();
    let _own_want = t.poll_transmit(&sender).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        let want = FileMessage::Want { files: vec![Wanted { hash, home: peer(), from: 0 }] };
        if matches!(t.handle(want, &mut sender), Err(TransferError::Protocol(_))) {
            refused = true;
            break;
        }
    }
    let (_, sent) = drain(&mut t, &sender, 100_000);
    assert!(
        refused || sent <= u64::from(proto::transfer::MAX_ROUNDS) * size,
        "100 Wants sent without waiting made the sender send {sent} bytes of a {size}-byte file"
    );
}

/// A Want longer than any honest peer writes (20,000 files) is refused, not
/// queued: each entry costs the sender a look-up in its store and a place
/// in memory, and a NotHere on the wire.
#[test]
fn a_want_longer_than_an_honest_one_is_refused() {
    let mut sender = Mem::default();
    let mut t = Transfer::start(&sender, &peer()).unwrap();
    let _own_want = t.poll_transmit(&sender).unwrap();
    let files: Vec<Wanted> = (0..80_000u32)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            Wanted { hash: FileHash(h), home: peer(), from: 0 }
        })
        .collect();
    let want = FileMessage::Want { files };
    assert!(want.encode().len() < 4 * 1024 * 1024, "fits in one file frame");
    let refused = matches!(t.handle(want, &mut sender), Err(TransferError::Protocol(_)));
    let (answers, _) = drain(&mut t, &sender, 200_000);
    assert!(refused || answers <= 20_001, "a Want of 80,000 files was answered with {answers} messages");
}

/// A hostile sender asked for a file answers with bad groups, endlessly.
/// Each refusal is kept in `stats.refused` for the whole session and then
/// written as one quarantine row: without a bound, a peer writing a tiny
/// bad Group message in a loop for 30 minutes fills the receiver's memory
/// and then its quarantine table (disk, and the administrators' list). An
/// honest sender's bad group is refused once per round (the groups after
/// it are not the one expected, and ignored); the receiver should not keep
/// more than that.
#[test]
fn a_flood_of_bad_groups_is_refused_once_per_round() {
    let (hash, bytes) = file(3, 2);
    let size = bytes.len() as u64;
    let mut receiver = Mem {
        wants: vec![Wanted { hash, home: peer(), from: 0 }],
        claims: BTreeMap::from([(hash, size)]),
        ..Mem::default()
    };
    let mut t = Transfer::start(&receiver, &peer()).unwrap();
    let _want = t.poll_transmit(&receiver).unwrap();
    t.handle(FileMessage::Outline { hash, size, groups: files::outline(&bytes) }, &mut receiver).unwrap();
    let mut broke_off = false;
    for i in 0..10_000u32 {
        let bad = FileMessage::Group { hash, index: 0, bytes: i.to_le_bytes().to_vec() };
        if t.handle(bad, &mut receiver).is_err() {
            broke_off = true;
            break;
        }
    }
    // And bad outlines.
    for i in 0..10_000u32 {
        let bad = FileMessage::Outline { hash, size, groups: vec![[i as u8; 32]; 3] };
        if broke_off || t.handle(bad, &mut receiver).is_err() {
            broke_off = true;
            break;
        }
    }
    let kept = t.stats.refused.len();
    assert!(broke_off || kept <= 2, "one round kept {kept} refusals (each becomes a quarantine row)");
    assert!(receiver.held.is_empty() && receiver.partial.is_empty(), "nothing bad was stored");

    // The honest sender then sends the file: taken whole in the next round.
    if !broke_off {
        t.handle(FileMessage::Sent, &mut receiver).unwrap();
        t.handle(FileMessage::Outline { hash, size, groups: files::outline(&bytes) }, &mut receiver).unwrap();
        for (i, g) in bytes.chunks(GROUP).enumerate() {
            t.handle(FileMessage::Group { hash, index: i as u64, bytes: g.to_vec() }, &mut receiver).unwrap();
        }
        assert_eq!(receiver.held.get(&hash), Some(&bytes), "the good copy is taken in the next round");
    }
}

/// A peer's groups are checked against the file's hash from the receiver's
/// own signed event: groups of files not wanted, out of order, of another
/// file, or past the end, are never stored; nothing panics.
#[test]
fn groups_not_wanted_out_of_order_or_past_the_end_are_never_stored() {
    let (hash, bytes) = file(3, 3);
    let (other, other_bytes) = file(2, 4);
    let size = bytes.len() as u64;
    let mut receiver = Mem {
        wants: vec![Wanted { hash, home: peer(), from: 0 }],
        claims: BTreeMap::from([(hash, size)]),
        ..Mem::default()
    };
    let mut t = Transfer::start(&receiver, &peer()).unwrap();
    let groups: Vec<&[u8]> = bytes.chunks(GROUP).collect();
    for m in [
        FileMessage::Outline { hash: other, size: other_bytes.len() as u64, groups: files::outline(&other_bytes) },
        FileMessage::Group { hash: other, index: 0, bytes: other_bytes[..GROUP].to_vec() },
        FileMessage::Outline { hash, size, groups: files::outline(&other_bytes) },
        FileMessage::Outline { hash, size, groups: vec![[0; 32]; 200_000] },
        FileMessage::Outline { hash, size, groups: files::outline(&bytes) },
        FileMessage::Group { hash, index: 1, bytes: groups[1].to_vec() },
        FileMessage::Group { hash, index: u64::MAX, bytes: groups[2].to_vec() },
        FileMessage::Group { hash, index: 0, bytes: groups[1].to_vec() },
        FileMessage::Group { hash, index: 0, bytes: vec![0; 4 * 1024 * 1024] },
        FileMessage::NotHere { hash: other },
    ] {
        t.handle(m, &mut receiver).unwrap();
    }
    assert!(receiver.partial.is_empty() && receiver.held.is_empty());
    // The next round: the file's outline and groups, in order, are taken.
    t.handle(FileMessage::Sent, &mut receiver).unwrap();
    t.handle(FileMessage::Outline { hash, size, groups: files::outline(&bytes) }, &mut receiver).unwrap();
    for (i, g) in groups.iter().enumerate() {
        t.handle(FileMessage::Group { hash, index: i as u64, bytes: g.to_vec() }, &mut receiver).unwrap();
    }
    assert_eq!(receiver.held.get(&hash), Some(&bytes));
    assert!(!receiver.held.contains_key(&other));
}

/// County receipts flow down only (county → township → village), one
/// message of at most one receipt per shared lane a session. `Transfer`
/// takes a `Receipts` message from any peer, in any direction (a village
/// may send them up to its township or to the county), at any time (also
/// after Finished), any number of times, and hands every receipt in it to
/// the store, which checks its signature and writes one quarantine row per
/// bad one (`node/src/receipts.rs` `keep`, "bad_receipt", with no per
/// session bound unlike the 64 of bad groups). One 4 MiB frame carries
/// ~30,000 junk receipts; a village certificate holder sending such frames
/// for the 30 minutes of a session fills the county's quarantine (disk,
/// and the administrators' list) and costs an ed25519 verification each.
#[test]
fn receipts_from_a_peer_are_bounded_per_session() {
    use proto::files::{Receipt, SignedReceipt};
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let junk = |i: u64| SignedReceipt {
        receipt: Receipt { home: peer(), upto: vec![], missing: vec![], at_ms: i },
        key: proto::event::KeyId::of(&key.verifying_key()),
        signature: vec![0; 64],
    };
    let frame = FileMessage::Receipts((0..30_000).map(junk).collect());
    assert!(frame.encode().len() < 4 * 1024 * 1024, "fits in one file frame");

    // A county (or township) node receiving from a village peer.
    let mut county = Mem::default();
    let mut t = Transfer::start(&county, &peer()).unwrap();
    let _own_want = t.poll_transmit(&county).unwrap();
    let mut refused = false;
    for _ in 0..10 {
        if t.handle(frame.clone(), &mut county).is_err() {
            refused = true;
            break;
        }
    }
    t.handle(FileMessage::Finished, &mut county).unwrap();
    if !refused {
        refused = t.handle(frame.clone(), &mut county).is_err();
    }
    // An honest county sends one receipt per lane it shares with the peer
    // (a township: its villages and itself), once a session.
    assert!(
        county.receipts_judged <= 400,
        "one session made the receiver judge {} receipts (refused: {refused}); each bad one is a quarantine row",
        county.receipts_judged
    );
}

/// Data keys of lanes (issue 10: a township gains a village): keys come
/// only when asked for, once; a peer asks once a session, for a bounded
/// number of lanes. Anything else is a protocol violation, nothing kept.
#[test]
fn lane_keys_are_sent_only_when_asked_and_asked_for_once() {
    use proto::transfer::LaneKey;
    let key = || vec![(NodeId::new("v"), LaneKey([7; 32]))];
    // Keys nobody asked for.
    let mut store = Mem::default();
    let mut t = Transfer::start(&store, &peer()).unwrap();
    let refused = t.handle(FileMessage::Keys { keys: key() }, &mut store);
    assert!(matches!(refused, Err(TransferError::Protocol(_))), "unasked keys: {refused:?}");
    // Asked twice, or for too many lanes.
    let mut store = Mem::default();
    let mut t = Transfer::start(&store, &peer()).unwrap();
    t.handle(FileMessage::WantKeys { homes: vec![NodeId::new("v")] }, &mut store).unwrap();
    let again = t.handle(FileMessage::WantKeys { homes: vec![NodeId::new("v")] }, &mut store);
    assert!(matches!(again, Err(TransferError::Protocol(_))), "asked twice: {again:?}");
    let mut t = Transfer::start(&store, &peer()).unwrap();
    let homes = (0..=proto::transfer::RECEIPTS_MAX).map(|i| NodeId::new(format!("v{i}"))).collect();
    let many = t.handle(FileMessage::WantKeys { homes }, &mut store);
    assert!(matches!(many, Err(TransferError::Protocol(_))), "too many: {many:?}");
    // A key never prints.
    assert!(!format!("{:?}", FileMessage::Keys { keys: key() }).contains("7, 7"), "a key printed");
}
