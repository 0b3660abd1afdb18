//! The file phase of a session: `proto::transfer` over a QUIC stream of
//! its own, after the events, on the node's data directory (`crate::blobs`
//! for the bytes, `file_refs` and `files_held` for what is wanted and
//! held). Both directions stream at once: a message is written while the
//! peer's keep being read and handled, so neither side waits on the other.

use super::*;
use crate::blobs;
use crate::protect::{DataKey, DataKeys};
use proto::files::{FileHash, GroupHash};
use proto::transfer::{FileMessage, FileStats, FileStore, Transfer, Wanted, WANT_MAX};
use rusqlite::OptionalExtension;

/// Largest file message accepted: a group and its framing, or a Want list.
const MAX_FILE_FRAME: usize = 4 * 1024 * 1024;
/// Most refusals of one session written to quarantine one by one (the
/// rest are counted in one more row): a peer sending bad groups for every
/// file it is asked for cannot fill the quarantine.
const REFUSALS_KEPT: usize = 64;

/// A node's files as the transfer reads and writes them.
pub struct NodeFiles<'a> {
    conn: &'a Connection,
    dir: &'a Path,
    keys: &'a DataKeys,
    topology: &'a proto::Topology,
    me: &'a NodeId,
    ledger: &'a Ledger,
    /// Whether [`FileStore::wanted`] reads what is lacking (false: it asks
    /// for nothing, decided before).
    ask: bool,
}

impl NodeFiles<'_> {
    fn keep_receipt_here(&self, peer: &NodeId, r: proto::files::SignedReceipt) -> Result<bool> {
        Ok(crate::receipts::keep(self.conn, self.topology, self.me, peer, r)?)
    }
}

/// Whether any file referenced in a lane is lacking for it: a seek of the
/// partial index of lacking references.
pub(crate) const ANY_LACKING: &str = "SELECT 1 FROM file_refs WHERE home = ?1 AND lane_held = 0 AND pruned = 0 LIMIT 1";

/// The files referenced in the lanes `?1` (a JSON array) not held for
/// their lane and not pruned, the lanes in turn, at most `?2`: read from
/// the partial index of lacking references (`file_refs_lacking`), never a
/// walk over every reference of a lane. The tables the flags summarise are
/// asked too: a flag can then only err towards asking.
pub(crate) const WANTED: &str = "WITH lacking AS (
                     SELECT r.hash AS hash, MAX(r.size) AS size, r.home AS home FROM file_refs r
                     WHERE r.home IN (SELECT value FROM json_each(?1))
                       AND r.lane_held = 0 AND r.pruned = 0
                       AND NOT EXISTS (SELECT 1 FROM file_lanes l WHERE l.hash = r.hash AND l.home = r.home)
                       AND NOT EXISTS (SELECT 1 FROM files_pruned p WHERE p.hash = r.hash)
                     GROUP BY r.hash, r.home)
                 SELECT hash, size, home FROM (
                     SELECT hash, size, home, ROW_NUMBER() OVER (PARTITION BY home ORDER BY hash) AS turn FROM lacking)
                 ORDER BY turn, hash LIMIT ?2";

impl<'a> NodeFiles<'a> {
    pub fn of(ledger: &'a Ledger, dir: &'a Path) -> Result<NodeFiles<'a>> {
        Ok(NodeFiles {
            conn: ledger.store().conn(),
            dir,
            keys: &ledger.secrets()?.data_keys,
            topology: ledger.topology(),
            me: ledger.me(),
            ledger,
            ask: true,
        })
    }

    /// The lanes whose files this node asks `peer` for: only what the peer
    /// may send (files of cases in lanes it holds: nothing else is worth a
    /// line of a Want on a rural link).
    ///
    /// The lanes the two share (those of nodes that are or were within the
    /// lower of them), then those in this node's scope now, from a peer
    /// entitled to them (an old township hands up files of a moved
    /// village's cases).
    fn lanes_to_ask(&self, peer: &NodeId) -> Vec<NodeId> {
        let shared = proto::sync::shared_lanes(self.topology, self.me, peer)
            .unwrap_or_else(|| self.topology.nodes().iter().map(|n| Lane::Home(n.id.clone())).collect());
        shared
            .into_iter()
            .filter(|lane| proto::sync::lane_entitled(self.topology, peer, lane))
            .filter(|lane| proto::auth::lane_in_scope(self.topology, self.me, lane))
            .filter_map(|lane| match lane {
                Lane::Home(home) => Some(home),
                Lane::Global => None,
            })
            // A lane whose data key this node does not hold (a village that
            // moved here after its enrolment) could not be sealed at rest:
            // its files wait for the key.
            .filter(|home| self.keys.for_lane(home).is_some())
            .collect()
    }

    /// Whether any file referenced in these lanes is lacking. Most sessions
    /// find every file held: one seek of the index of what is lacking says
    /// so for each lane, and the query of what (its temporary tables) is not
    /// run.
    fn lacks_any(&self, homes: &[NodeId]) -> Result<bool> {
        let mut refers = self.conn.prepare_cached(ANY_LACKING)?;
        for home in homes {
            if refers.exists([home.as_str()])? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether this node will ask `peer` for any file (a few seeks).
    pub(super) fn wants_any_of(&self, peer: &NodeId) -> Result<bool> {
        self.lacks_any(&self.lanes_to_ask(peer))
    }

    /// Whether a session of this village with the county may leave its
    /// file phase out, nothing in it to move either way: the event phase
    /// was quiet (nothing sent, received, refused or held either way, no
    /// divergence: a county restored from a backup shows here, as events
    /// it takes again), the county's receipt held here is genuine and
    /// says the county holds every event of the village's lane and every
    /// file of them ([`crate::receipts::lets_files_wait`], by the county's
    /// clock), and the village lacks no file and no key. Most of a
    /// village's syncs bring nothing new; the phase (its own stream, a
    /// Want each way, a receipt signed and kept) was about a fifth of what
    /// such a session cost the hub. Only a village, and only with the
    /// county: a township's Want reaches lanes no receipt of its own covers
    /// (a moved village's files it hands up), and what a township lacks no
    /// receipt tells.
    pub(super) fn can_wait(&self, peer: &NodeId, session: &Summary, now_ms: u64) -> Result<bool> {
        let s = &session.stats;
        let quiet = s.sent_events == 0
            && s.received_events == 0
            && s.quarantined_events == 0
            && s.deferred_events == 0
            && s.newer_format_events == 0
            && s.withheld_events == 0
            && s.quarantined_by_peer == 0
            && s.held_by_peer == 0
            && s.own_received.is_empty()
            && session.own_diverged.is_empty()
            && session.peer_diverged.is_empty();
        let Some(offset) = s.peer_clock_offset_ms else { return Ok(false) };
        if !quiet
            || self.topology.tier_of(self.me) != Some(proto::Tier::Village)
            || self.topology.tier_of(peer) != Some(proto::Tier::County)
        {
            return Ok(false);
        }
        let Some(receipt) = crate::receipts::held(self.conn, self.me)? else { return Ok(false) };
        let tips = store::lane_tips(self.conn, &Lane::Home(self.me.clone()))?;
        let county_now = now_ms.saturating_add_signed(offset);
        Ok(crate::receipts::lets_files_wait(&receipt, &tips, county_now)
            && crate::receipts::genuine(self.conn, self.topology, &receipt)?
            && !self.wants_any_of(peer)?
            && self.keys_lacking(peer)?.is_empty())
    }

    fn key(&self, home: &str) -> Result<DataKey> {
        self.keys.for_lane(&NodeId::new(home)).with_context(|| format!("this node holds no key for {home}'s files"))
    }

    /// The size and sealing lane of a file held whole.
    fn held(&self, hash: &FileHash) -> Result<Option<(u64, String)>> {
        let row = self
            .conn
            .prepare_cached("SELECT size, home FROM files_held WHERE hash = ?1")?
            .query_row([&hash.0[..]], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)));
        match row {
            Ok(v) => Ok(Some(v)),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn set_aside(&self, hash: &FileHash, why: &str) -> Result<()> {
        store::file_damaged(self.conn, self.dir, self.me, hash, why)
    }

    /// The lane a file of a case held here is sealed under (its case's home).
    fn home_of(&self, hash: &FileHash) -> Result<String> {
        Ok(self
            .conn
            .prepare_cached("SELECT home FROM file_refs WHERE hash = ?1 ORDER BY case_id LIMIT 1")?
            .query_row([&hash.0[..]], |r| r.get(0))?)
    }
}

impl FileStore for NodeFiles<'_> {
    type Error = anyhow::Error;

    fn wanted(&self, peer: &NodeId) -> Result<Vec<Wanted>> {
        // The lanes in turn: references in one lane, to files that never
        // existed, cannot take every place in the Want.
        let homes = self.lanes_to_ask(peer);
        if !self.ask || !self.lacks_any(&homes)? {
            return Ok(Vec::new());
        }
        let rows: Vec<(Vec<u8>, i64, String)> = {
            let mut stmt = self.conn.prepare_cached(WANTED)?;
            let rows = stmt.query_map(rusqlite::params![serde_json::to_string(&homes)?, WANT_MAX as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (hash, size, home) in rows {
            let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()).map(FileHash) else { continue };
            if self.held(&hash)?.is_none() && blobs::holds(self.dir, &hash) {
                // Stored, but not noted (a crash between the two): under
                // the lane its groups were sealed under.
                let sealed = match blobs::partial_lane(self.dir, &hash)? {
                    Some(h) => h,
                    None => self.home_of(&hash)?,
                };
                store::note_file_held(self.conn, &hash, size as u64, &NodeId::new(sealed.clone()))?;
                store::note_file_lane(self.conn, &hash, &NodeId::new(sealed.clone()))?;
                blobs::forget_partial_lane(self.dir, &hash);
                if sealed == home {
                    continue;
                }
            }
            // A partial file holding every group (a crash before it was
            // moved to its place) asks for its last group again. A file held
            // for another lane is asked for whole: the transfer is the proof
            // that a node holds it for this lane.
            let from = if self.held(&hash)?.is_some() {
                0
            } else {
                blobs::partial_groups(self.dir, &hash)?.min(proto::files::groups(size as u64) - 1)
            };
            out.push(Wanted { hash, home: NodeId::new(home), from });
        }
        Ok(out)
    }

    fn sendable(&self, peer: &NodeId, hash: &FileHash, home: &NodeId) -> Result<Option<u64>> {
        if !proto::auth::lane_in_scope(self.topology, peer, &Lane::Home(home.clone())) {
            return Ok(None);
        }
        let for_lane = self
            .conn
            .prepare_cached("SELECT 1 FROM file_lanes WHERE hash = ?1 AND home = ?2")?
            .query_row(rusqlite::params![&hash.0[..], home.as_str()], |_| Ok(()))
            .optional()?
            .is_some();
        if !for_lane {
            return Ok(None);
        }
        Ok(self.held(hash)?.map(|(size, _)| size))
    }

    fn size_claimed(&self, hash: &FileHash, home: &NodeId, size: u64) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM file_refs WHERE hash = ?1 AND home = ?2 AND size = ?3 LIMIT 1")?
            .query_row(rusqlite::params![&hash.0[..], home.as_str(), size as i64], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn outline(&self, hash: &FileHash) -> Result<Option<Vec<GroupHash>>> {
        let stored: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT outline FROM files_held WHERE hash = ?1")?
            .query_row([&hash.0[..]], |r| r.get(0))?;
        if let Some(bytes) = stored {
            return Ok(Some(bytes.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect()));
        }
        let Some((size, _)) = self.held(hash)? else { return Ok(None) };
        let n = proto::files::groups(size);
        let mut outline = Vec::new();
        if n > 1 {
            for i in 0..n {
                let Some(group) = self.read_group(hash, i)? else { return Ok(None) };
                outline.push(proto::files::group_hash(i, &group));
            }
        }
        self.conn
            .prepare_cached("UPDATE files_held SET outline = ?2 WHERE hash = ?1")?
            .execute(rusqlite::params![&hash.0[..], outline.concat()])?;
        Ok(Some(outline))
    }

    fn read_group(&self, hash: &FileHash, index: u64) -> Result<Option<Vec<u8>>> {
        let Some((size, home)) = self.held(hash)? else { return Ok(None) };
        crate::remote::ensure_local(self.conn, self.dir, hash)?;
        match blobs::read_group(self.dir, &self.key(&home)?, hash, size, index) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e @ (blobs::ReadError::Damaged { .. } | blobs::ReadError::Missing(_))) => {
                self.set_aside(hash, &e.to_string())?;
                Ok(None)
            }
            Err(blobs::ReadError::Io(e)) => Err(e.into()),
        }
    }

    fn keep_receipt(&mut self, peer: &NodeId, r: proto::files::SignedReceipt) -> Result<bool> {
        self.keep_receipt_here(peer, r)
    }

    fn receipts_for(&self, peer: &NodeId) -> Result<Vec<proto::files::SignedReceipt>> {
        Ok(self.ledger.receipts_for(peer, crate::wall_clock_ms())?)
    }

    fn keys_lacking(&self, peer: &NodeId) -> Result<Vec<NodeId>> {
        if self.topology.tier_of(peer) != Some(proto::Tier::County) || self.keys.master.is_some() {
            return Ok(Vec::new());
        }
        Ok(self
            .topology
            .nodes()
            .iter()
            .filter(|n| self.topology.is_within(&n.id, self.me) && self.keys.for_lane(&n.id).is_none())
            .map(|n| n.id.clone())
            // The rest at the next session.
            .take(proto::transfer::RECEIPTS_MAX)
            .collect())
    }

    fn keys_for(&self, peer: &NodeId, homes: &[NodeId]) -> Result<Vec<(NodeId, proto::transfer::LaneKey)>> {
        // Only the county derives lane keys, and only for lanes in the
        // peer's scope under the newest map it holds.
        if self.keys.master.is_none() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        // Lanes by their node's own id (not an incarnation's), each once.
        for home in homes.iter().filter(|h| self.topology.get(h).is_some_and(|n| &n.id == *h) && seen.insert(*h)) {
            if !proto::auth::lane_in_scope(self.topology, peer, &Lane::Home(home.clone())) {
                continue;
            }
            if let Some(key) = self.keys.for_lane(home) {
                let bytes: [u8; 32] = hex::decode(key.to_hex())?.try_into().map_err(|_| anyhow!("a lane key"))?;
                out.push((home.clone(), proto::transfer::LaneKey(bytes)));
            }
        }
        Ok(out)
    }

    fn keep_keys(&mut self, peer: &NodeId, keys: Vec<(NodeId, proto::transfer::LaneKey)>) -> Result<u64> {
        if self.topology.tier_of(peer) != Some(proto::Tier::County) {
            return Ok(0);
        }
        let new: Vec<(NodeId, [u8; 32])> = keys
            .into_iter()
            .map(|(home, key)| (home, key.0))
            .filter(|(home, _)| self.topology.get(home).is_some_and(|n| &n.id == home))
            .filter(|(home, _)| proto::auth::lane_in_scope(self.topology, self.me, &Lane::Home(home.clone())))
            .filter(|(home, _)| self.keys.for_lane(home).is_none())
            .collect();
        if new.is_empty() {
            return Ok(0);
        }
        Ok(Ledger::reseal_lane_keys(self.conn, self.me, &new, None)?)
    }

    fn write_group(&mut self, hash: &FileHash, lane: &NodeId, size: u64, index: u64, bytes: &[u8]) -> Result<()> {
        let last = index + 1 == proto::files::groups(size);
        if self.held(hash)?.is_some() {
            // Held already, for another lane: the verified transfer proves
            // it for this one; the bytes stay as stored.
            if last {
                store::note_file_lane(self.conn, hash, lane)?;
            }
            return Ok(());
        }
        // Every group under the key the first one was sealed under (also
        // when another session is receiving the same file).
        let home = match blobs::partial_lane(self.dir, hash)? {
            Some(home) if index > 0 || blobs::partial_groups(self.dir, hash)? > 0 => home,
            _ => {
                let home = self.home_of(hash)?;
                blobs::note_partial_lane(self.dir, hash, &home)?;
                home
            }
        };
        if blobs::write_group(self.dir, &self.key(&home)?, hash, size, index, bytes)? {
            store::note_file_held(self.conn, hash, size, &NodeId::new(home))?;
            store::note_file_lane(self.conn, hash, lane)?;
            blobs::forget_partial_lane(self.dir, hash);
            crate::remote::offload(self.conn, self.dir, hash)?;
        }
        Ok(())
    }
}

/// About the bytes a file message encodes to: the work of encoding or
/// decoding it, to judge whether that runs in place (`sized`).
fn rough_size(msg: &FileMessage) -> usize {
    match msg {
        FileMessage::Want { files } => files.len() * 64,
        FileMessage::Outline { groups, .. } => groups.len() * 32,
        FileMessage::Group { bytes, .. } => bytes.len(),
        FileMessage::Receipts(receipts) => receipts.iter().map(|r| 256 + r.receipt.missing.len() * 32).sum(),
        FileMessage::WantKeys { homes } => homes.len() * 16,
        FileMessage::Keys { keys } => keys.len() * 48,
        FileMessage::NotHere { .. } | FileMessage::Sent | FileMessage::Finished => 0,
    }
}

async fn write_file_frame(send: &mut quinn::SendStream, msg: &FileMessage) -> Result<u64> {
    let raw = sized(rough_size(msg), || msg.encode());
    send.write_all(&(raw.len() as u32).to_be_bytes()).await.map_err(write_error)?;
    send.write_all(&raw).await.map_err(write_error)?;
    Ok(4 + raw.len() as u64)
}

/// The length prefix of the peer's next file frame, or None where its
/// stream ends cleanly instead.
pub(super) async fn file_frame_length(recv: &mut quinn::RecvStream) -> Result<Option<[u8; 4]>> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => Ok(Some(len)),
        Err(quinn::ReadExactError::FinishedEarly(0)) => Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => {
            Err(peer(PeerErrorKind::Protocol, "the peer ended the file stream inside a frame"))
        }
        Err(quinn::ReadExactError::ReadError(e)) => Err(read_error(e)),
    }
}

/// The peer's next file message (its length prefix read already, when
/// `len` is given), or None where its stream ends cleanly.
async fn read_file_frame(recv: &mut quinn::RecvStream, len: Option<[u8; 4]>) -> Result<Option<FileMessage>> {
    let len = match len {
        Some(len) => len,
        None => match file_frame_length(recv).await? {
            Some(len) => len,
            None => return Ok(None),
        },
    };
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FILE_FRAME {
        return Err(peer(PeerErrorKind::Protocol, format!("a file frame of {len} bytes is over the limit")));
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await.map_err(|e| match e {
        quinn::ReadExactError::ReadError(e) => read_error(e),
        _ => peer(PeerErrorKind::Protocol, "the peer ended the file stream inside a frame"),
    })?;
    // Up to 4 MiB a frame, and a list's entries decode into far more than
    // their bytes: in place only when small.
    sized(len, || FileMessage::decode(&buf)).map(Some).map_err(|e| peer(PeerErrorKind::Protocol, format!("{e}")))
}

/// Most files still to receive for the end of the peer's part to be
/// handled in place (it asks again for each).
const SENT_IN_PLACE: usize = 16;

/// Runs the file phase with `peer` on one bidirectional stream (the
/// length prefix of the peer's first message read already, when given).
pub(super) async fn run_files(
    ledger: &mut Ledger,
    dir: &Path,
    peer_id: &NodeId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    first_length: Option<[u8; 4]>,
    progress: &Progress,
) -> Result<FileStats> {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<FileMessage>>(4);
    let reader = spawn_in_session(async move {
        let mut length = first_length;
        loop {
            let item = match read_file_frame(&mut recv, length.take()).await {
                Ok(Some(m)) => Ok(m),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                break;
            }
        }
    });
    let _stop_reader = AbortOnDrop(reader);
    // The store is opened for each step, never held across an await (a
    // SQLite connection may not be shared between threads).
    // What this node wants is read at the start: in place when a seek per
    // lane shows that nothing is lacking (the usual session). Decided once:
    // a reference another session stores meanwhile is asked for at the
    // next session, never read (nor a file's arrival noted, a write) here.
    let mut transfer = {
        let files = NodeFiles::of(ledger, dir)?;
        if quick(|| files.wants_any_of(peer_id))? {
            block(|| Transfer::start(&files, peer_id))
        } else {
            let files = NodeFiles { ask: false, ..files };
            quick(|| Transfer::start(&files, peer_id))
        }
    }?;
    let report = |t: &Transfer| progress.files(peer_id, &t.stats, t.files_to_receive(), started);
    let incoming = |msg: Option<Result<FileMessage>>, t: &mut Transfer, ledger: &mut Ledger| -> Result<()> {
        let msg = msg.unwrap_or_else(|| Err(peer(PeerErrorKind::Lost, "the peer ended the file stream")))?;
        // The end of the peer's part, a file it does not hold and an empty
        // Want touch no store: in place; so does the end of what the peer
        // sent when the receipts it brings are a few seeks (a village's one
        // lane with nothing missing). The rest reads or writes.
        let small = matches!(&msg, FileMessage::Finished | FileMessage::NotHere { .. })
            || matches!(&msg, FileMessage::Want { files } if files.is_empty())
            || (matches!(&msg, FileMessage::Sent)
                && t.files_to_receive() <= SENT_IN_PLACE
                && quick(|| ledger.receipts_are_quick(peer_id))?);
        let handle = || -> Result<()> { Ok(t.handle(msg, &mut NodeFiles::of(ledger, dir)?)?) };
        if small {
            quick(handle)
        } else {
            block(handle)
        }
    };
    loop {
        let reads = transfer.transmit_reads();
        let transmit = || -> Result<Option<FileMessage>> { Ok(transfer.poll_transmit(&NodeFiles::of(ledger, dir)?)?) };
        let next = if reads { block(transmit) } else { quick(transmit) }?;
        match next {
            Some(m) => {
                let write = write_file_frame(&mut send, &m);
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        r = &mut write => { r?; break; }
                        msg = rx.recv() => incoming(msg, &mut transfer, ledger)?,
                    }
                }
                report(&transfer);
            }
            None if transfer.is_finished() => break,
            None => {
                let msg = tokio::time::timeout(MESSAGE_DEADLINE, rx.recv()).await.map_err(|_| {
                    peer(
                        PeerErrorKind::TooSlow,
                        format!("no file message from {peer_id} within {} s", MESSAGE_DEADLINE.as_secs()),
                    )
                })?;
                incoming(msg, &mut transfer, ledger)?;
                report(&transfer);
            }
        }
    }
    let refused = std::mem::take(&mut transfer.stats.refused);
    if !refused.is_empty() {
        block(|| -> Result<()> {
            let conn = ledger.store().conn();
            for (hash, group) in refused.iter().take(REFUSALS_KEPT) {
                let what = group.map_or("the outline".to_string(), |g| format!("group {g}"));
                let reason = format!(
                    "{what} of file {hash} sent by {peer_id} does not match the file's hash (from its case's signed \
                     event): refused, and asked for again"
                );
                tracing::warn!("{reason}");
                store::quarantine(conn, crate::wall_clock_ms(), peer_id, peer_id, 0, "bad_file", &reason, &hash.0)?;
            }
            if refused.len() > REFUSALS_KEPT {
                let reason = format!(
                    "{} more groups or outlines sent by {peer_id} in the same session did not match their files' \
                     hashes: refused (not listed one by one)",
                    refused.len() - REFUSALS_KEPT
                );
                tracing::warn!("{reason}");
                store::quarantine(conn, crate::wall_clock_ms(), peer_id, peer_id, 0, "bad_file", &reason, &[])?;
            }
            Ok(())
        })?;
    }
    send.finish()?;
    // The peer ends its stream once it holds everything of ours it wants:
    // until then, our last frames may still be on their way.
    let _ = tokio::time::timeout(Duration::from_secs(10), async { while rx.recv().await.is_some() {} }).await;
    if transfer.stats.keys_kept > 0 {
        // Read again with the keys of the lanes the county handed over.
        ledger.forget_secrets();
    }
    Ok(transfer.stats.clone())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
