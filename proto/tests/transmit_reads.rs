//! Issue 9: a driver runs the file phase's store work off its event loop
//! and the rest in place, on the word of `Transfer::transmit_reads` and on
//! which messages it handles: `transmit_reads` is true exactly when the
//! next `poll_transmit` calls the store, and Finished, NotHere and an empty
//! Want are handled without it.
use proto::files::{FileHash, GroupHash, SignedReceipt, GROUP};
use proto::transfer::{FileMessage, FileStore, Transfer, Wanted};
use proto::NodeId;
use std::cell::Cell;

/// A store that counts every call, with files of one and of several
/// groups, files not held, missing outlines and damaged groups, by the
/// first bytes of their hashes.
struct Counting {
    touched: Cell<u32>,
    damaged_from: Cell<u64>,
}
impl FileStore for Counting {
    type Error = String;
    fn wanted(&self, _: &NodeId) -> Result<Vec<Wanted>, String> {
        self.touched.set(self.touched.get() + 1);
        Ok(vec![])
    }
    fn sendable(&self, _: &NodeId, h: &FileHash, _: &NodeId) -> Result<Option<u64>, String> {
        self.touched.set(self.touched.get() + 1);
        Ok(match h.0[0] % 4 {
            0 => None,
            1 => Some(10),
            2 => Some(3 * GROUP as u64 + 5),
            _ => Some(GROUP as u64),
        })
    }
    fn size_claimed(&self, _: &FileHash, _: &NodeId, _: u64) -> Result<bool, String> {
        self.touched.set(self.touched.get() + 1);
        Ok(true)
    }
    fn outline(&self, h: &FileHash) -> Result<Option<Vec<GroupHash>>, String> {
        self.touched.set(self.touched.get() + 1);
        Ok(if h.0[1] == 1 { None } else { Some(vec![]) })
    }
    fn read_group(&self, h: &FileHash, i: u64) -> Result<Option<Vec<u8>>, String> {
        self.touched.set(self.touched.get() + 1);
        if h.0[1] == 2 && i >= self.damaged_from.get() {
            return Ok(None);
        }
        let size = match h.0[0] % 4 {
            1 => 10,
            2 => 3 * GROUP as u64 + 5,
            _ => GROUP as u64,
        };
        let n = proto::files::groups(size);
        let len = if i + 1 == n { size - i * GROUP as u64 } else { GROUP as u64 };
        Ok(Some(vec![0; len as usize]))
    }
    fn write_group(&mut self, _: &FileHash, _: &NodeId, _: u64, _: u64, _: &[u8]) -> Result<(), String> {
        self.touched.set(self.touched.get() + 1);
        Ok(())
    }
    fn keep_receipt(&mut self, _: &NodeId, _: SignedReceipt) -> Result<bool, String> {
        self.touched.set(self.touched.get() + 1);
        Ok(false)
    }
    fn receipts_for(&self, _: &NodeId) -> Result<Vec<SignedReceipt>, String> {
        self.touched.set(self.touched.get() + 1);
        Ok(vec![])
    }
}

#[test]
fn transmit_reads_is_exact_and_small_messages_touch_no_store() {
    let mut seed = 3u64;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..300 {
        let mut store = Counting { touched: Cell::new(0), damaged_from: Cell::new(next(3)) };
        let peer = NodeId::new("p");
        let mut t = Transfer::start(&store, &peer).unwrap();
        let files: Vec<Wanted> = (0..next(6))
            .map(|_| Wanted {
                hash: FileHash([
                    next(8) as u8,
                    next(3) as u8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ]),
                home: NodeId::new("v"),
                from: next(3),
            })
            .collect();
        // The small messages touch no store.
        for m in [FileMessage::NotHere { hash: FileHash([9; 32]) }, FileMessage::Finished] {
            let before = store.touched.get();
            t.handle(m, &mut store).unwrap();
            assert_eq!(store.touched.get(), before);
        }
        let empty_first = next(2) == 0;
        if empty_first {
            let before = store.touched.get();
            t.handle(FileMessage::Want { files: vec![] }, &mut store).unwrap();
            assert_eq!(store.touched.get(), before);
        } else {
            t.handle(FileMessage::Want { files }, &mut store).unwrap();
        }
        for _ in 0..100 {
            let says = t.transmit_reads();
            let before = store.touched.get();
            let m = t.poll_transmit(&store).unwrap();
            assert_eq!(says, store.touched.get() != before, "transmit_reads {says} for {m:?}");
            if m.is_none() {
                break;
            }
        }
    }
}
