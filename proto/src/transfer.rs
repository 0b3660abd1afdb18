//! Material files between two nodes, as a state machine with no I/O: the
//! file phase of a sync session, run after the events (a village with 30
//! seconds of connectivity gets every case state through first) on a
//! stream of its own.
//!
//! 1. Each side sends [`FileMessage::Want`]: every file of the cases it
//!    holds whose bytes it lacks, from the first group it lacks (a cut
//!    transfer resumes there: at most the group in flight is sent again).
//! 2. Each side answers the other's Want with, per file it holds and may
//!    send (the file belongs to a case in the lanes the two share: a node
//!    never sends a file outside the receiver's scope, whatever it asks
//!    for), the file's outline and its groups in order, or
//!    [`FileMessage::NotHere`]; then [`FileMessage::Sent`].
//! 3. The receiver checks the outline against the file's hash (from the
//!    case's signed event, never from the sender) and every group against
//!    the outline as it arrives ([`crate::files::group_matches`]); a
//!    verified group is handed to the store at once, a bad one is refused
//!    and asked for again in the next round (at most [`MAX_ROUNDS`]).
//! 4. A side that wants nothing more sends [`FileMessage::Finished`]; the
//!    phase ends when both have.
//!
//! Storage is reached through [`FileStore`]; the node implements it on its
//! data directory, the simulation in memory.

use crate::codec;
use crate::files::{group_matches, groups, outline_matches, FileHash, GroupHash, GROUP};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Most rounds of asking again for groups refused in one session.
pub const MAX_ROUNDS: u32 = 3;

/// Most files one Want names (a node asks for the rest at its next
/// session). A longer Want is a protocol violation: each entry costs the
/// sender a look-up and a message.
pub const WANT_MAX: usize = 20_000;

/// Most county receipts one session may carry: one per lane the two
/// nodes share (a township and its villages are a few dozen).
pub const RECEIPTS_MAX: usize = 400;

/// A file a node lacks, for one lane: its hash (from a case's signed
/// event in that lane), the lane's home, and the first group it lacks.
/// A node sends a file for a lane only if it holds it for that lane (it
/// was attached there, or received for it): naming another village's
/// file in a forged event of one's own lane gets nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wanted {
    pub hash: FileHash,
    pub home: crate::NodeId,
    pub from: u64,
}

/// What travels on the file stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileMessage {
    /// The files I lack that you may hold.
    Want { files: Vec<Wanted> },
    /// A file's size and outline (the chaining values of its groups; none
    /// for a file of one group), before its groups.
    Outline { hash: FileHash, size: u64, groups: Vec<GroupHash> },
    /// One group of a file.
    Group { hash: FileHash, index: u64, bytes: Vec<u8> },
    /// A file you asked for that I do not hold, or may not send you.
    NotHere { hash: FileHash },
    /// Everything of your last Want was sent.
    Sent,
    /// I want nothing more from you.
    Finished,
    /// The county's latest receipts of lanes in your scope (a higher tier
    /// to a lower; see [`crate::files::Receipt`]).
    Receipts(Vec<crate::files::SignedReceipt>),
    /// The data keys of lanes in my scope I do not hold (a village moved
    /// here after my enrolment): to the county, once a session.
    WantKeys { homes: Vec<crate::NodeId> },
    /// The county's answer: the keys of those of them in your scope. Only
    /// over this authenticated, encrypted connection; never stored in clear.
    Keys { keys: Vec<(crate::NodeId, LaneKey)> },
}

/// A lane's data key on the wire: never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LaneKey(pub [u8; 32]);

impl std::fmt::Debug for LaneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LaneKey(..)")
    }
}

impl FileMessage {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_tagged(codec::FILE_MESSAGE, self)
    }
    pub fn decode(bytes: &[u8]) -> Result<FileMessage, codec::DecodeError> {
        codec::decode_tagged(codec::FILE_MESSAGE, bytes)
    }
}

/// A node's files, as the transfer reads and writes them.
pub trait FileStore {
    type Error: std::fmt::Display;
    /// Files of the cases held here whose bytes are not all here, that
    /// `peer` may send (of cases in lanes it holds): at most [`WANT_MAX`],
    /// taken fairly across lanes, so that no lane's references (to files
    /// that never existed, say) crowd out the others'.
    fn wanted(&self, peer: &crate::NodeId) -> Result<Vec<Wanted>, Self::Error>;
    /// The size of a file this node holds whole, for lane `home`, that it
    /// may send to `peer` (whose scope covers the lane); `None` otherwise.
    fn sendable(&self, peer: &crate::NodeId, hash: &FileHash, home: &crate::NodeId)
        -> Result<Option<u64>, Self::Error>;
    /// Whether a case's event in lane `home` names the file with this size
    /// (several events may name one file with different sizes: only one
    /// can be true, and a wrong one must not keep the file away).
    fn size_claimed(&self, hash: &FileHash, home: &crate::NodeId, size: u64) -> Result<bool, Self::Error>;
    /// A held file's outline ([`crate::files::outline`]); `None` when the
    /// file turns out damaged or gone here (the store then wants it again).
    fn outline(&self, hash: &FileHash) -> Result<Option<Vec<GroupHash>>, Self::Error>;
    /// Group `index` of a held file; `None` when damaged or gone here.
    fn read_group(&self, hash: &FileHash, index: u64) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Keeps a verified group (`index` is the next the store lacks) of the
    /// file wanted for lane `home`; the file is whole, and held for that
    /// lane, once its last group is kept.
    fn write_group(
        &mut self,
        hash: &FileHash,
        home: &crate::NodeId,
        size: u64,
        index: u64,
        bytes: &[u8],
    ) -> Result<(), Self::Error>;
    /// Keeps a county receipt from `peer` when it is genuine (signed by a
    /// county key), of a lane in this node's scope, and newer than the one
    /// held; returns whether it was kept.
    fn keep_receipt(&mut self, peer: &crate::NodeId, receipt: crate::files::SignedReceipt)
        -> Result<bool, Self::Error>;
    /// The county receipts to hand `peer` once this node has received what
    /// it will this session (see [`crate::files::Receipt`]).
    fn receipts_for(&self, peer: &crate::NodeId) -> Result<Vec<crate::files::SignedReceipt>, Self::Error>;
    /// Lanes in this node's scope whose data key it lacks, to ask `peer`
    /// for (only the county answers).
    fn keys_lacking(&self, _peer: &crate::NodeId) -> Result<Vec<crate::NodeId>, Self::Error> {
        Ok(Vec::new())
    }
    /// The keys of `homes` this node may hand `peer`: at the county, those
    /// of lanes in the peer's current scope; elsewhere none.
    fn keys_for(
        &self,
        _peer: &crate::NodeId,
        _homes: &[crate::NodeId],
    ) -> Result<Vec<(crate::NodeId, LaneKey)>, Self::Error> {
        Ok(Vec::new())
    }
    /// Keeps keys from `peer` (only the county's, only of lanes in this
    /// node's scope it lacks); returns how many were kept.
    fn keep_keys(&mut self, _peer: &crate::NodeId, _keys: Vec<(crate::NodeId, LaneKey)>) -> Result<u64, Self::Error> {
        Ok(0)
    }
}

/// Counters of one file phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FileStats {
    pub files_sent: u64,
    pub file_bytes_sent: u64,
    pub files_received: u64,
    pub file_bytes_received: u64,
    /// Groups (or outlines) that failed their check: refused, asked again.
    pub groups_refused: u64,
    /// Files the peer asked for that this node did not send (not held, or
    /// outside the peer's scope).
    pub not_sent: u64,
    /// Files wanted that the peer did not have.
    pub not_at_peer: u64,
    /// Files still incomplete when the phase ended.
    pub incomplete: u64,
    /// County receipts kept (genuine, in scope, newer than those held).
    pub receipts_kept: u64,
    /// Data keys of lanes in this node's scope received from the county.
    pub keys_kept: u64,
    /// What was refused: the file and the group (`None`: its outline).
    #[serde(skip)]
    pub refused: Vec<(FileHash, Option<u64>)>,
    /// Files whose last group was sent this session.
    #[serde(skip)]
    pub sent_whole: Vec<FileHash>,
}

/// A violation of the file protocol by the peer.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
}

#[derive(Debug)]
struct Receiving {
    home: crate::NodeId,
    /// Known once the sender's outline is checked.
    size: Option<u64>,
    /// The checked outline (files of more than one group).
    outline: Option<Vec<GroupHash>>,
    next: u64,
    /// Something of this file was refused in this round: the rest of the
    /// round's messages about it are ignored (an honest sender's later
    /// groups are not the one expected anyway), so a peer repeating bad
    /// groups costs one refusal per round, not one per message.
    refused: bool,
}

/// One side of a file phase.
#[derive(Debug)]
pub struct Transfer {
    peer: crate::NodeId,
    outbox: VecDeque<FileMessage>,
    /// Files to send: (hash, size, from), and the one being sent with its
    /// next group; a size of `u64::MAX` answers NotHere.
    to_send: VecDeque<(FileHash, u64, u64)>,
    sending: Option<(FileHash, u64, u64)>,
    /// A Sent is owed once `to_send` and `sending` are done.
    owe_sent: u32,
    receiving: BTreeMap<FileHash, Receiving>,
    rounds: u32,
    /// Wants received from the peer (an honest peer sends one per round).
    wants_received: u32,
    sent_finished: bool,
    peer_finished: bool,
    /// Receipts messages received (one a session).
    receipts_received: u32,
    /// Whether this node asked for keys, and whether the peer did.
    asked_keys: bool,
    keys_asked_of_us: bool,
    pub stats: FileStats,
}

impl Transfer {
    /// Starts the file phase with `peer`, queueing our Want.
    pub fn start<S: FileStore>(store: &S, peer: &crate::NodeId) -> Result<Transfer, TransferError> {
        let mut t = Transfer {
            peer: peer.clone(),
            outbox: VecDeque::new(),
            to_send: VecDeque::new(),
            sending: None,
            owe_sent: 0,
            receiving: BTreeMap::new(),
            rounds: 0,
            wants_received: 0,
            sent_finished: false,
            peer_finished: false,
            receipts_received: 0,
            asked_keys: false,
            keys_asked_of_us: false,
            stats: FileStats::default(),
        };
        let wanted = store.wanted(peer).map_err(|e| TransferError::Storage(e.to_string()))?;
        let mut wanted = wanted;
        // One lane per file in a Want (another lane's claim is proven in a
        // later session).
        let mut seen = BTreeSet::new();
        wanted.retain(|w| seen.insert(w.hash));
        for w in &wanted {
            t.receiving.insert(
                w.hash,
                Receiving { home: w.home.clone(), size: None, outline: None, next: w.from, refused: false },
            );
        }
        t.rounds = 1;
        let lacking = store.keys_lacking(peer).map_err(|e| TransferError::Storage(e.to_string()))?;
        if !lacking.is_empty() {
            t.asked_keys = true;
            t.outbox.push_back(FileMessage::WantKeys { homes: lacking });
        }
        t.outbox.push_back(FileMessage::Want { files: wanted });
        Ok(t)
    }

    /// Handles a message from the peer.
    pub fn handle<S: FileStore>(&mut self, msg: FileMessage, store: &mut S) -> Result<(), TransferError> {
        let storage = |e: S::Error| TransferError::Storage(e.to_string());
        match msg {
            FileMessage::Want { files } => {
                // An honest peer asks once per round, after our Sent, at
                // most MAX_ROUNDS times, for at most WANT_MAX distinct
                // files: anything else would make us read and send a file
                // once per mention.
                self.wants_received += 1;
                if self.owe_sent > 0 || self.wants_received > MAX_ROUNDS || files.len() > WANT_MAX {
                    return Err(TransferError::Protocol(format!(
                        "a Want of {} files, Want {} of the session, {} still being answered",
                        files.len(),
                        self.wants_received,
                        self.owe_sent
                    )));
                }
                let mut named = BTreeSet::new();
                for w in files {
                    if !named.insert(w.hash) {
                        continue;
                    }
                    match store.sendable(&self.peer, &w.hash, &w.home).map_err(storage)? {
                        Some(size) if w.from < groups(size) => self.to_send.push_back((w.hash, size, w.from)),
                        _ => {
                            self.stats.not_sent += 1;
                            self.to_send.push_back((w.hash, u64::MAX, 0));
                        }
                    }
                }
                self.owe_sent += 1;
            }
            FileMessage::Outline { hash, size, groups: outline } => {
                if let Some(r) = self.receiving.get_mut(&hash).filter(|r| !r.refused) {
                    let claimed = store.size_claimed(&hash, &r.home, size).map_err(storage)?;
                    if claimed && r.next < groups(size) && outline_matches(&hash, size, &outline) {
                        r.size = Some(size);
                        r.outline = Some(outline);
                    } else {
                        r.outline = None;
                        r.refused = true;
                        self.stats.groups_refused += 1;
                        self.stats.refused.push((hash, None));
                    }
                }
            }
            FileMessage::Group { hash, index, bytes } => {
                let Some(r) = self.receiving.get_mut(&hash) else { return Ok(()) };
                if index != r.next {
                    // A duplicate, or a group after one refused: asked
                    // again in order.
                    return Ok(());
                }
                if r.refused {
                    // Refused already this round: counted, not kept again.
                    self.stats.groups_refused += 1;
                    return Ok(());
                }
                let (Some(size), Some(outline)) = (r.size, r.outline.as_deref()) else {
                    // No checked outline: nothing to check the group by.
                    r.refused = true;
                    self.stats.groups_refused += 1;
                    self.stats.refused.push((hash, Some(index)));
                    return Ok(());
                };
                if !group_matches(&hash, size, outline, index, &bytes) {
                    r.refused = true;
                    self.stats.groups_refused += 1;
                    self.stats.refused.push((hash, Some(index)));
                    return Ok(());
                }
                store.write_group(&hash, &r.home, size, index, &bytes).map_err(storage)?;
                r.next += 1;
                self.stats.file_bytes_received += bytes.len() as u64;
                if r.next == groups(size) {
                    self.receiving.remove(&hash);
                    self.stats.files_received += 1;
                }
            }
            FileMessage::NotHere { hash } => {
                if self.receiving.remove(&hash).is_some() {
                    self.stats.not_at_peer += 1;
                }
            }
            FileMessage::Sent => {
                if self.sent_finished {
                    return Err(TransferError::Protocol("files sent after we finished asking".into()));
                }
                // Ask again for what failed its check, a few rounds at most.
                let again: Vec<Wanted> = self
                    .receiving
                    .iter()
                    .map(|(h, r)| Wanted { hash: *h, home: r.home.clone(), from: r.next })
                    .collect();
                if again.is_empty() || self.rounds >= MAX_ROUNDS {
                    self.stats.incomplete = again.len() as u64;
                    self.sent_finished = true;
                    // Everything this node will receive this session is in:
                    // the county's receipts now cover it.
                    let receipts = store.receipts_for(&self.peer).map_err(storage)?;
                    if !receipts.is_empty() {
                        self.outbox.push_back(FileMessage::Receipts(receipts));
                    }
                    self.outbox.push_back(FileMessage::Finished);
                } else {
                    self.rounds += 1;
                    for r in self.receiving.values_mut() {
                        r.refused = false;
                    }
                    self.outbox.push_back(FileMessage::Want { files: again });
                }
            }
            FileMessage::Finished => self.peer_finished = true,
            FileMessage::WantKeys { homes } => {
                if self.keys_asked_of_us || homes.len() > RECEIPTS_MAX {
                    return Err(TransferError::Protocol(format!(
                        "keys asked for {} lanes, or twice in a session",
                        homes.len()
                    )));
                }
                self.keys_asked_of_us = true;
                let keys = store.keys_for(&self.peer, &homes).map_err(storage)?;
                self.outbox.push_front(FileMessage::Keys { keys });
            }
            FileMessage::Keys { keys } => {
                if !self.asked_keys || keys.len() > RECEIPTS_MAX {
                    return Err(TransferError::Protocol("keys sent unasked, twice, or too many".into()));
                }
                self.asked_keys = false;
                self.stats.keys_kept += store.keep_keys(&self.peer, keys).map_err(storage)?;
            }
            FileMessage::Receipts(list) => {
                // An honest county sends one receipt per lane it shares with
                // the peer (a township: itself and its villages), once a
                // session: each one costs a signature check and, when bad,
                // a quarantine row.
                self.receipts_received += 1;
                if self.receipts_received > 1 || list.len() > RECEIPTS_MAX {
                    return Err(TransferError::Protocol(format!(
                        "receipts message {} of the session, of {} receipts (at most one message of {RECEIPTS_MAX})",
                        self.receipts_received,
                        list.len()
                    )));
                }
                for r in list {
                    if store.keep_receipt(&self.peer, r).map_err(storage)? {
                        self.stats.receipts_kept += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the next [`Transfer::poll_transmit`] reads the store (a
    /// group of a file being sent, or the outline of the next one);
    /// otherwise it hands out a message already made, or nothing. A driver
    /// runs file reads off its event loop and the rest in place.
    pub fn transmit_reads(&self) -> bool {
        if !self.outbox.is_empty() {
            return false;
        }
        match self.sending {
            Some((_, size, next)) if next < groups(size) => true,
            _ => matches!(self.to_send.front(), Some(&(_, size, _)) if size != u64::MAX && groups(size) > 1),
        }
    }

    /// The next message to send, if any: our own messages first, then the
    /// groups the peer wants, one at a time (nothing is read ahead).
    pub fn poll_transmit<S: FileStore>(&mut self, store: &S) -> Result<Option<FileMessage>, TransferError> {
        let storage = |e: S::Error| TransferError::Storage(e.to_string());
        if let Some(m) = self.outbox.pop_front() {
            return Ok(Some(m));
        }
        if let Some((hash, size, next)) = self.sending {
            if next < groups(size) {
                let Some(bytes) = store.read_group(&hash, next).map_err(storage)? else {
                    // Damaged here: the peer gets it elsewhere.
                    self.sending = None;
                    self.stats.not_sent += 1;
                    return Ok(Some(FileMessage::NotHere { hash }));
                };
                let expected = if next + 1 == groups(size) { size - next * GROUP as u64 } else { GROUP as u64 };
                if bytes.len() as u64 != expected {
                    return Err(TransferError::Storage(format!("file {hash} group {next} has the wrong length")));
                }
                self.sending = Some((hash, size, next + 1));
                self.stats.file_bytes_sent += bytes.len() as u64;
                if next + 1 == groups(size) {
                    self.stats.files_sent += 1;
                    self.stats.sent_whole.push(hash);
                }
                return Ok(Some(FileMessage::Group { hash, index: next, bytes }));
            }
            self.sending = None;
        }
        match self.to_send.pop_front() {
            Some((hash, u64::MAX, _)) => Ok(Some(FileMessage::NotHere { hash })),
            Some((hash, size, from)) => {
                self.sending = Some((hash, size, from));
                let outline = if groups(size) > 1 { store.outline(&hash).map_err(storage)? } else { Some(Vec::new()) };
                let Some(outline) = outline else {
                    self.sending = None;
                    self.stats.not_sent += 1;
                    return Ok(Some(FileMessage::NotHere { hash }));
                };
                Ok(Some(FileMessage::Outline { hash, size, groups: outline }))
            }
            None if self.owe_sent > 0 => {
                self.owe_sent -= 1;
                Ok(Some(FileMessage::Sent))
            }
            None => Ok(None),
        }
    }

    /// Both sides want nothing more and everything owed was sent.
    /// Files still to come from the peer in this phase (for progress).
    pub fn files_to_receive(&self) -> usize {
        self.receiving.len()
    }

    pub fn is_finished(&self) -> bool {
        self.sent_finished
            && self.peer_finished
            && self.outbox.is_empty()
            && self.to_send.is_empty()
            && self.sending.is_none()
            && self.owe_sent == 0
    }
}
