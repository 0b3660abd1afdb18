//! The sync driver: runs `proto::sync::Session` over QUIC with mutual TLS
//! against the county CA, reading and writing the node's SQLite ledger.
//!
//! Each side learns the other's node id and tier from its certificate name
//! (`<id>.<tier>.node`), never from a message. One bidirectional stream per
//! connection carries length-prefixed, zstd-compressed messages. A received
//! batch is acknowledged only after the transaction that stores it commits.
//!
//! A server spends little on a connection before it has earned more: the
//! peer is authenticated (certificate, topology, edges, revocations) and
//! counted against [`Limits`] before anything else; it must open its stream
//! and send its Hello within [`OPEN_DEADLINE`]; only then is the ledger (a
//! SQLite connection) opened. Frame buffers grow with the bytes received,
//! never with the length a peer declares, and frames and their decompressed
//! size are bounded ([`MAX_FRAME`], [`MAX_RAW_FRAME`]).

use crate::error::{PeerError, PeerErrorKind};
use crate::identity::parse_certificate_name;
use crate::ledger::Ledger;
use crate::store;
use anyhow::{anyhow, bail, Context, Result};
use proto::event::Lane;
use proto::sync::{Divergence, Message, Positions, Replica, Session, Stats, Verdict};
use proto::{CaseId, Event, Hlc, NodeId, Seal, Tier};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rusqlite::Connection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The ALPN names of the sync message format versions this node speaks,
/// newest first (`proto::wire`): the server picks the newest both offer.
fn alpn_names(versions: &[u8]) -> Vec<Vec<u8>> {
    versions.iter().map(|v| proto::wire::alpn(*v)).collect()
}

/// The sync message format version a connection agreed on in its TLS
/// handshake. A peer that agreed on none is not one of ours.
fn wire_version(conn: &quinn::Connection) -> Result<u8> {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .and_then(|p| proto::wire::version_of_alpn(&p))
        .context("the peer agreed on no sync protocol version this node speaks")
}
/// Longest a served session may last.
const SESSION_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Largest frame accepted, compressed. Honest batches are a few hundred
/// KiB compressed (see `proto::sync::BATCH_BYTES`).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Largest frame accepted once decompressed; also the decoder's limit.
pub const MAX_RAW_FRAME: usize = proto::codec::DECODE_LIMIT;
use crate::at_rest::ZSTD_WINDOW_LOG_MAX;
/// A server gives a connection this long to finish its handshake, then to
/// open its stream, then to send its Hello.
pub const OPEN_DEADLINE: Duration = Duration::from_secs(10);
/// Longest either side waits for the peer's next message once a session
/// runs (a frame in transit included).
pub const MESSAGE_DEADLINE: Duration = Duration::from_secs(120);
/// A connection on which nothing at all arrives for this long is dead: the
/// peer stopped or the network went down. Keep-alives are sent far more
/// often, so a live but quiet peer is never mistaken for a dead one.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(8);
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Connections a server holds at once, by default.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one peer may hold with a server at once.
pub const MAX_CONNECTIONS_PER_PEER: usize = 2;

/// QUIC application close codes.
mod close {
    pub const DONE: u32 = 0;
    pub const NOT_ADMITTED: u32 = 1;
    pub const BUSY: u32 = 2;
    pub const TOO_SLOW: u32 = 3;
    pub const FAILED: u32 = 4;
}

/// The ledger as the sync protocol reads it.
pub struct SqliteReplica<'a>(pub &'a Connection);

impl Replica for SqliteReplica<'_> {
    type Error = anyhow::Error;
    fn positions(&self, lanes: Option<&[Lane]>) -> Result<Positions> {
        store::lane_positions(self.0, lanes)
    }
    fn chain_events(&self, lane: &Lane, origin: &NodeId, after: u64, upto: u64) -> Result<Vec<Event>> {
        store::lane_events(self.0, lane, origin, after, upto)
    }
    fn seal(&self, origin: &NodeId, lane: &Lane) -> Result<Option<Seal>> {
        store::seal_of(self.0, origin, lane)
    }
    fn checkpoint_after(&self, origin: &NodeId, lane: &Lane, after: u64) -> Result<Option<Seal>> {
        store::checkpoint_after(self.0, origin, lane, after)
    }
    fn tip(&self, origin: &NodeId, lane: &Lane) -> Result<proto::event::ChainTip> {
        store::lane_tip(self.0, origin, lane)
    }
    fn create_of(&self, case: &CaseId) -> Result<Option<proto::event::Create>> {
        store::stored_create(self.0, case)
    }
    fn key_status(&self, node: &NodeId, key: &proto::event::KeyId) -> Result<proto::sync::KeyStatus> {
        store::key_status(self.0, node, key)
    }
    fn hash_at(&self, origin: &NodeId, lane: &Lane, pos: u64) -> Result<Option<proto::Hash>> {
        store::hash_at(self.0, origin, lane, pos)
    }
    fn voucher(&self, origin: &NodeId) -> Result<Option<Hlc>> {
        store::voucher(self.0, origin)
    }
    fn is_quarantined_here(&self, origin: &NodeId, seq: u64) -> Result<bool> {
        store::is_quarantined(self.0, origin, seq)
    }
}

/// The peer (authenticated by its certificate) writes as a new incarnation
/// of itself: where this node vouches for the peer (the county for anyone,
/// a township for its villages), it does so before judging the batch, with
/// `after` the latest stamp of the peer's other origins it holds, so that
/// the new incarnation cannot write anything dated before them.
pub(crate) fn vouch_for_peer(ledger: &mut Ledger, peer: &NodeId, segments: &[proto::sync::Segment]) -> Result<()> {
    let topology = ledger.topology();
    let (Some(mine), Some(theirs)) = (topology.get(ledger.me()), topology.get(peer)) else { return Ok(()) };
    let may = mine.tier == Tier::County || (theirs.tier == Tier::Village && theirs.parent.as_ref() == Some(&mine.id));
    let village = theirs.tier == Tier::Village;
    if !may {
        return Ok(());
    }
    // Only a segment with events, sealed under a key the county enrolled
    // for the peer (or its topology key), earns a voucher: no vouchers for
    // empty segments or foreign keys, and at most `MAX_INCARNATIONS` per node.
    let enrolled = |seal: &Seal| -> Result<bool> {
        let status = store::key_status(ledger.store().conn(), peer, &seal.key)?;
        let published = ledger.topology().verifying_key(peer).map(|k| proto::event::KeyId::of(&k));
        let trusted = status == proto::sync::KeyStatus::Enrolled
            || (status == proto::sync::KeyStatus::Unknown && published == Some(seal.key));
        Ok(trusted && seal.key.verifying_key().is_some_and(|k| seal.verify(&k).is_ok()))
    };
    let mut origins: BTreeSet<&NodeId> = BTreeSet::new();
    for s in segments {
        let o = &s.seal.origin;
        if !s.events.is_empty()
            && o.is_incarnation_of(peer)
            && o.as_str() != o.base()
            && o.is_well_formed_origin()
            && enrolled(&s.seal)?
        {
            origins.insert(o);
        }
    }
    for origin in origins {
        if store::voucher(ledger.store().conn(), origin)?.is_some() {
            continue;
        }
        if store::vouchers_of(ledger.store().conn(), peer)? >= MAX_INCARNATIONS {
            tracing::warn!(peer = %peer, origin = %origin, "not vouching: the node has had {MAX_INCARNATIONS} incarnations");
            continue;
        }
        let after = store::latest_stamp_of(ledger.store().conn(), peer, origin)?;
        let e = ledger.vouch(origin, after, village)?;
        tracing::info!(peer = %peer, origin = %origin, event = %e.id, "vouched for a new incarnation");
    }
    Ok(())
}

/// Most incarnations a node is vouched for (a restored or copied laptop
/// needs one each time; more is an administrator's business).
pub const MAX_INCARNATIONS: usize = 16;

/// Stores a checked batch in one transaction: accepted events, their
/// cases refolded, seals, quarantined input, and the clock.
pub fn apply_verdict(ledger: &mut Ledger, from: &NodeId, verdict: &Verdict) -> Result<()> {
    let now = crate::wall_clock_ms();
    let origin = ledger.origin().clone();
    let tx = ledger.store_mut().write()?;
    apply_verdict_in(&tx, &origin, from, verdict, now)?;
    tx.commit()?;
    if publishes(verdict) {
        // New cases are taken under the newest version from now on; a
        // changed map changes scopes from the next session.
        ledger.reload_catalogues()?;
    }
    Ok(())
}

/// Whether a verdict stores a county publication (catalogue, calendar,
/// map): a ledger holding it reads its catalogues again.
pub(crate) fn publishes(verdict: &Verdict) -> bool {
    verdict.accept.iter().any(|(e, _)| matches!(e.body, proto::Body::Publish(_)))
}

/// [`apply_verdict`]'s writes, inside the caller's transaction (the
/// server's group commit puts several sessions' batches in one). `origin`
/// is the receiving store's current origin.
pub(crate) fn apply_verdict_in(
    tx: &rusqlite::Connection,
    origin: &NodeId,
    from: &NodeId,
    verdict: &Verdict,
    now: u64,
) -> Result<()> {
    let stale = verdict.own_received.contains_key(origin);
    // Checked outside this transaction: a key it was judged under may have
    // been revoked since (by another session's batch, earlier in this group
    // commit, or by the county's own `revoke`). Such a batch is refused
    // whole; its session syncs again and the check then applies the
    // revocation's cut. (A revocation stored after this batch purges what
    // it stored past the cut: `store::purge_after_revocation`.)
    for (node, key) in &verdict.keys_relied {
        if matches!(store::key_status(tx, node, key)?, proto::sync::KeyStatus::Revoked { .. }) {
            bail!("the county revoked key {key} of {node} while this batch was checked; sync again");
        }
    }
    // Cases created in this batch hold no other stored events (events of an
    // unknown case are deferred, never stored), so they are folded from
    // memory; the others are refolded from the store.
    let mut touched: BTreeMap<&CaseId, Vec<(&Event, proto::Hash)>> = BTreeMap::new();
    let mut created = BTreeSet::new();
    // The last event stored of each chain in this batch: the next one
    // must link to it, or to what the store holds before it.
    let mut last: BTreeMap<(&Lane, &NodeId), (u64, proto::Hash)> = BTreeMap::new();
    let mut names = store::Names::default();
    for (e, hash) in &verdict.accept {
        // Checked against the store as it was; on a server other sessions'
        // batches may have been stored since (the group commit): a batch
        // whose chain no longer continues what is stored is refused whole,
        // and its session syncs again against the store as it is now.
        let follows = match last.get(&(&e.lane, &e.id.origin)) {
            Some((pos, h)) if *pos + 1 == e.pos => *h == e.prev,
            _ if e.pos <= 1 => true,
            _ => store::hash_at(tx, &e.id.origin, &e.lane, e.pos - 1)? == Some(e.prev),
        };
        if !follows {
            bail!(
                "chain {} of lane {} changed while this batch was checked (another session stored position {}); \
                 sync again",
                e.id.origin,
                e.lane,
                e.pos - 1
            );
        }
        let inserted = store::insert_named(tx, &mut names, e, *hash)?;
        if inserted != store::Inserted::Equivocation {
            last.insert((&e.lane, &e.id.origin), (e.pos, *hash));
        }
        if inserted != store::Inserted::New {
            created.remove(&e.case);
        }
        if inserted == store::Inserted::Equivocation {
            // Kept aside as evidence, not stored as the event: it folds
            // into no case (a twin creation would make a case row of an
            // event the store does not hold).
            continue;
        }
        if !e.body.is_global() {
            touched.entry(&e.case).or_default().push((e, *hash));
            if matches!(e.body, proto::Body::Create(_)) && !store::case_exists(tx, &e.case)? {
                created.insert(e.case.clone());
            }
        }
    }
    for (case, events) in &touched {
        if created.contains(*case) {
            store::fold_new_case(tx, case, events)?;
        } else {
            store::refold_case(tx, case)?;
        }
    }
    for seal in &verdict.seals {
        store::put_seal(tx, seal)?;
    }
    for (e, _) in &verdict.accept {
        if let proto::Body::Revoke { node, key, upto, .. } = &e.body {
            let moved = store::purge_after_revocation(tx, now, from, node, key, upto)?;
            if moved > 0 {
                tracing::warn!(node = %node, moved, "events signed after a revoked key's cut moved to quarantine");
            }
        }
    }
    for (e, _) in verdict.accept.iter().filter(|(e, _)| e.id.seq == 1 && e.id.origin.as_str() != e.id.origin.base()) {
        // The first event of a new incarnation: a copy of that node found
        // its store stale (restored, copied or re-initialised). Recorded
        // for administrators; the events themselves are accepted.
        let reason = format!(
            "node {} continues as incarnation {}: one copy of it found its records stale (restored from a backup, \
             copied, or re-initialised); if two laptops run as {}, find the second one",
            e.id.origin.node(),
            e.id.origin,
            e.id.origin.node()
        );
        store::quarantine(tx, now, from, &e.id.origin, 0, "new_incarnation", &reason, &[])?;
    }
    if stale {
        // Our own current origin's events came back: this store is stale.
        crate::ledger::mark_recovering(tx)?;
    }
    for r in &verdict.quarantined {
        let blob = r.event.as_ref().map(Event::encode).unwrap_or_default();
        store::quarantine(tx, now, from, &r.origin, r.seq, r.kind.name(), &r.reason, &blob)?;
        tracing::warn!(from = %from, origin = %r.origin, seq = r.seq, reason = %r.reason, "quarantined");
    }
    if verdict.max_hlc > Hlc::default() {
        let last: Hlc = store::meta_get(tx, "hlc")?.unwrap_or_default();
        if verdict.max_hlc > last {
            store::meta_set(tx, "hlc", &verdict.max_hlc)?;
        }
    }
    Ok(())
}

/// What one sync session did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub peer: String,
    /// The sync message format version the two nodes agreed on
    /// (`proto::wire`): older than this node's newest when the peer runs
    /// an earlier release.
    pub format_version: u8,
    /// The session's counters (events sent, received, quarantined and held
    /// either way, the peer's clock offset, our own events that came back).
    #[serde(flatten)]
    pub stats: Stats,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub seconds: f64,
    pub clock_warning: Option<String>,
    /// Chains of this node that the peer holds as another copy wrote them.
    pub own_diverged: Vec<Divergence>,
    /// Chains of the peer that we hold as another copy of it wrote them.
    pub peer_diverged: Vec<Divergence>,
    /// What recovering from a stale or copied store did, when it happened.
    pub recovery: Option<Recovery>,
    /// The file phase: material files received and sent, groups refused.
    #[serde(flatten)]
    pub files: proto::transfer::FileStats,
    /// The file phase was left out: a village with the county, whose
    /// receipt says nothing would move (`NodeFiles::can_wait`).
    pub files_left_out: bool,
    /// Own events an upstream node acknowledged that the county's receipts
    /// show it did not pass on (see `crate::receipts`).
    pub unconfirmed_by_county: Option<crate::receipts::Unconfirmed>,
    /// What the session took of the link (this side's QUIC counters).
    pub link: Link,
    /// Chains the peer's Hello showed it holds less of than this node
    /// (`proto::sync::Session::peer_lacks`).
    #[serde(skip)]
    pub peer_lacks: Vec<(Lane, NodeId, u64)>,
}

/// A session's use of the link, from this side's QUIC counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Link {
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    /// UDP payload bytes of those datagrams (QUIC's headers, handshake
    /// and acknowledgements included): what the session cost the link.
    pub udp_bytes_sent: u64,
    pub udp_bytes_received: u64,
    /// The largest UDP payload sent (no path-MTU search: 1,200).
    pub path_mtu: u16,
    /// Padded packets sent to find a larger one (none: see `tls::transport`).
    pub mtu_probes: u64,
}

impl Link {
    fn of(conn: &quinn::Connection) -> Link {
        let s = conn.stats();
        Link {
            datagrams_sent: s.udp_tx.datagrams,
            datagrams_received: s.udp_rx.datagrams,
            udp_bytes_sent: s.udp_tx.bytes,
            udp_bytes_received: s.udp_rx.bytes,
            path_mtu: s.path.current_mtu,
            mtu_probes: s.path.sent_plpmtud_probes,
        }
    }

    /// Adds another session's counters (recovery runs several).
    fn add(&mut self, more: &Link) {
        self.datagrams_sent += more.datagrams_sent;
        self.datagrams_received += more.datagrams_received;
        self.udp_bytes_sent += more.udp_bytes_sent;
        self.udp_bytes_received += more.udp_bytes_received;
        self.mtu_probes += more.mtu_probes;
        self.path_mtu = more.path_mtu;
    }
}

/// A stale or copied store recovered: it took back its own history from
/// the peer and continues under a new incarnation.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub previous_origin: NodeId,
    pub origin: NodeId,
    /// Own events set aside because another copy wrote those positions.
    pub set_aside: usize,
    /// Own events taken back from the peer.
    pub taken_back: u64,
    pub reentered: Vec<crate::ledger::Reentered>,
}

impl Recovery {
    /// The plain-words account for the staff at this node.
    pub fn explain(&self) -> String {
        let new_cases: Vec<String> = self
            .reentered
            .iter()
            .filter(|r| r.now.is_some() && r.case != r.now_case)
            .map(|r| format!("{} is now {}", r.case, r.now_case))
            .collect();
        let again = self.reentered.iter().filter(|r| r.now.is_some()).count();
        let kept = self.reentered.iter().filter(|r| r.kept_because.is_some()).count();
        let mut msg = if self.set_aside == 0 {
            format!(
                "this node took back {} of its own events from the peer (expected after re-initialising or \
                 replacing a laptop; after restoring a backup, nothing was lost) and now works as {}.",
                self.taken_back, self.origin
            )
        } else {
            format!(
                "this laptop's records were older than the network's copy of its own work (restored from a \
                 backup, or a copy of this node's data directory). It took back {} of its own events from the \
                 peer and now works as {}.",
                self.taken_back, self.origin
            )
        };
        if self.set_aside > 0 {
            msg.push_str(&format!(
                " {} events written here conflicted with another copy's; nothing is lost: {again} were entered \
                 again and sent on",
                self.set_aside
            ));
            if !new_cases.is_empty() {
                msg.push_str(&format!(", with new case numbers ({}): tell the applicants", new_cases.join(", ")));
            }
            msg.push('.');
        }
        if kept > 0 {
            msg.push_str(&format!(" {kept} could not be entered again and are kept for the administrator."));
        }
        msg
    }
}

/// Runs store work that may take a while (a batch checked or stored,
/// events read to send, files) off the runtime's worker: the worker's
/// other tasks are handed to another thread meanwhile.
fn block<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        // A one-thread runtime (a `sync` process) has no other tasks to
        // hand over: the work runs in place.
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => f(),
        _ => {
            let _ = HANDED_OFF.try_with(|n| n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            tokio::task::block_in_place(f)
        }
    }
}

tokio::task_local! {
    /// Where a server counts the hand-overs of its sessions' work
    /// ([`server::Server::handed_off`]).
    static HANDED_OFF: Arc<std::sync::atomic::AtomicUsize>;
}

/// Spawns a task of the current one's session: its hand-overs are counted
/// with the session's.
fn spawn_in_session<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match HANDED_OFF.try_with(Arc::clone) {
        Ok(n) => tokio::spawn(HANDED_OFF.scope(n, task)),
        Err(_) => tokio::spawn(task),
    }
}

/// Runs store work that takes microseconds and never writes (an indexed
/// read, a small message that reads nothing) where it is: handing the
/// worker's tasks to another thread and back costs more than the work.
/// Anything that may write (SQLite may then wait for the group commit's
/// lock), read files, or do work a peer's message sizes (a Hello listing
/// many chains or seals, a batch) goes through `block`, or through `sized`
/// where the bytes it works on are known. A session's start is a few seeks
/// per chain the two nodes share: in place.
fn quick<T>(f: impl FnOnce() -> T) -> T {
    f()
}

/// Work in proportion to a message of this many bytes (encoding,
/// compressing, decoding) up to which it runs in place: tens of
/// microseconds, about what a hand-over to another thread and back costs.
/// Measured on a 2-core hub (`bench/session_cost.sh`), a no-op session's
/// seven hand-overs were a quarter of its CPU.
const IN_PLACE_BYTES: usize = 16 * 1024;

/// Most chains a Hello may list to be handled in place: a village's own
/// and the county's few, not a township's villages'.
const HELLO_IN_PLACE: usize = 64;

/// Most seals a Hello may carry to be handled in place: each that differs
/// from what is held costs a signature check (an honest village sends one
/// to three).
const HELLO_HEADS_IN_PLACE: usize = 4;

/// Runs work in proportion to `bytes` in place when they are few
/// ([`IN_PLACE_BYTES`]), off the worker (`block`) otherwise.
fn sized<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    if bytes <= IN_PLACE_BYTES {
        quick(f)
    } else {
        block(f)
    }
}

/// Runs one session over an established, authenticated connection.
/// `first` is a message already read from `frames` (the server reads the
/// client's Hello before opening the ledger). Once this side is complete
/// it ends its stream and hands `frames` back: the peer's end of its own
/// stream is awaited by [`peer_end`], which a client defers past its file
/// phase.
#[allow(clippy::too_many_arguments)]
async fn run_session(
    ledger: &mut Ledger,
    peer: NodeId,
    wire: u8,
    mut send: quinn::SendStream,
    mut frames: Frames,
    first: Option<(Message, u64)>,
    progress: &Progress,
    committer: Option<&commit::Committer>,
) -> Result<(Summary, Frames)> {
    let started = Instant::now();
    let topology = ledger.shared_topology();
    let me = ledger.me().clone();
    // A few seeks of the lane index per chain shared with the peer.
    let mut session =
        quick(|| Session::start(&SqliteReplica(ledger.store().conn()), &topology, &me, &peer, crate::wall_clock_ms()))?;
    session.content_versions = proto::wire::content_versions(wire);
    let broke_off = |e: anyhow::Error| e.context(format!("sync with {peer} broke off; run sync again to resume"));
    let (mut bytes_sent, mut bytes_received) = (0u64, 0u64);
    let mut pending = first;
    loop {
        loop {
            let reads = session.transmit_reads();
            let transmit = || session.poll_transmit(&SqliteReplica(ledger.store().conn()));
            let msg = if reads { block(transmit) } else { quick(transmit) }?;
            match msg {
                Some(m) => bytes_sent += write_frame(&mut send, &m, wire).await.map_err(broke_off)?,
                None => break,
            }
        }
        if session.is_finished() {
            break;
        }
        let (msg, n) = match pending.take() {
            Some(f) => f,
            None => frames.next(MESSAGE_DEADLINE, "message").await.map_err(broke_off)?,
        };
        bytes_received += n;
        let now = crate::wall_clock_ms();
        let batch = {
            let mut handle = |msg| session.handle(msg, &SqliteReplica(ledger.store().conn()), &topology, now);
            match msg {
                Message::Batch { .. } => block(|| handle(msg)),
                // A Hello's comparison and plan take a few reads per chain
                // it lists (and a signature check per differing seal): in
                // place for a few chains only, whatever its bytes (repeated
                // entries compress to almost nothing).
                Message::Hello { ref positions, ref heads, .. }
                    if positions.len() <= HELLO_IN_PLACE && heads.len() <= HELLO_HEADS_IN_PLACE =>
                {
                    quick(|| handle(msg))
                }
                Message::Hello { .. } => block(|| handle(msg)),
                _ => quick(|| handle(msg)),
            }
        }?;
        if let Some((n, segments)) = batch {
            let verdict = match committer {
                // A server: checked here, stored by its group commit.
                Some(c) => {
                    let verdict = block(|| ledger.check_received(&peer, segments, now))?;
                    let verdict = c.store(&peer, verdict, now).await?;
                    if publishes(&verdict) {
                        // Later batches of this session are judged by it.
                        block(|| ledger.reload_catalogues())?;
                    }
                    verdict
                }
                None => block(|| ledger.receive(&peer, segments, now))?,
            };
            session.batch_stored(n, &verdict);
        }
        progress.events(&me, &peer, &session.stats, bytes_received);
    }
    progress.events(&me, &peer, &session.stats, bytes_received);
    send.finish()?;
    let clock_warning = session.clock_warning().map(|off| {
        let msg = format!(
            "this node's clock differs from {peer}'s by {:.0} s; correct the system time (work stamped with a wrong time is kept but flagged)",
            off as f64 / 1000.0
        );
        tracing::warn!("{msg}");
        msg
    });
    let summary = Summary {
        peer: peer.to_string(),
        format_version: wire,
        stats: session.stats.clone(),
        bytes_sent,
        bytes_received,
        seconds: started.elapsed().as_secs_f64(),
        clock_warning,
        own_diverged: session.own_diverged.iter().cloned().collect(),
        peer_diverged: session.peer_diverged.iter().cloned().collect(),
        recovery: None,
        files: Default::default(),
        files_left_out: false,
        unconfirmed_by_county: None,
        link: Link::default(),
        peer_lacks: std::mem::take(&mut session.peer_lacks),
    };
    Ok((summary, frames))
}

/// Waits (at most 10 s) for the peer to end its event stream: it does once
/// it has everything of ours, so our last frames have arrived. The stream
/// is read to its end, never dropped before: a dropped stream asks the
/// peer to stop sending, which would fail its own end.
async fn peer_end(mut frames: Frames) {
    let _ = tokio::time::timeout(Duration::from_secs(10), async { while frames.rx.recv().await.is_some() {} }).await;
}

/// A server's runtime: one worker fewer than the machine's cores (at
/// least one). The sessions' store work (checks, reads of many events)
/// leaves the workers (`block`), and the group commit has its own thread:
/// they take the core left over. On a 2-core hub one worker instead of two
/// cost a no-op session 1.6 ms of CPU instead of 1.8 (fewer wake-ups and
/// steals between workers).
fn runtime() -> Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.saturating_sub(1).max(1))
        .enable_all()
        .build()?)
}

async fn resolve(addr: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}

/// Syncs with the node at `peer` (both directions). When the session shows
/// that this store is stale (its own events came back) or that another
/// copy of this node wrote a different history, it recovers: sets its own
/// diverged chains aside, takes the peer's history back, continues under a
/// new incarnation and re-enters what only it held, then sends that on.
pub async fn sync_with(dir: &Path, peer_addr: &str, progress: bool) -> crate::error::Result<Summary> {
    Ok(sync_and_recover(Ledger::open(dir)?, peer_addr, &Progress::printing(progress), &proto::wire::VERSIONS).await?)
}

/// [`sync_with`], reporting its progress into `live` as it goes (the
/// desk's sync page polls it).
pub async fn sync_watched(dir: &Path, peer_addr: &str, live: Arc<Mutex<Live>>) -> crate::error::Result<Summary> {
    Ok(sync_and_recover(Ledger::open(dir)?, peer_addr, &Progress::watched(live), &proto::wire::VERSIONS).await?)
}

/// [`sync_with`], offering only the sync message format `versions`
/// (newest first): what an earlier release offers, so that tests can show
/// that this release still serves one.
pub async fn sync_with_versions(
    dir: &Path,
    peer_addr: &str,
    progress: bool,
    versions: &[u8],
) -> crate::error::Result<Summary> {
    Ok(sync_and_recover(Ledger::open(dir)?, peer_addr, &Progress::printing(progress), versions).await?)
}

/// One session on `ledger` (opened once for it and what follows), then
/// what a divergence or a stale store asks for.
async fn sync_and_recover(ledger: Ledger, peer_addr: &str, progress: &Progress, versions: &[u8]) -> Result<Summary> {
    let dir = ledger.dir().to_path_buf();
    let dir = dir.as_path();
    let (mut summary, mut ledger) = session_with(ledger, peer_addr, progress, versions).await?;
    let peer = NodeId::new(summary.peer.clone());
    if let (Some(offset), Some(mine), Some(theirs)) =
        (summary.stats.peer_clock_offset_ms, ledger.topology().tier_of(ledger.me()), ledger.topology().tier_of(&peer))
    {
        if theirs > mine {
            // Upstream keeps the reference time for this node.
            block(|| ledger.record_clock_offset(&peer, offset))?;
        }
    }
    let previous_origin = ledger.origin().clone();
    let mut taken_back = summary.stats.own_received.get(&previous_origin).copied().unwrap_or(0);
    let mut set_aside = 0;
    let diverged: Vec<(Lane, NodeId)> = summary
        .own_diverged
        .iter()
        .map(|d| (d.lane.clone(), d.origin.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !diverged.is_empty() {
        set_aside = block(|| ledger.begin_recovery(&diverged))?;
        drop(ledger);
        let (pull, reopened) = session_with(Ledger::open(dir)?, peer_addr, progress, versions).await?;
        taken_back += pull.stats.own_received.get(&previous_origin).copied().unwrap_or(0);
        merge_counts(&mut summary, &pull);
        ledger = reopened;
    }
    if block(|| ledger.recovering())? {
        let (origin, reentered) = block(|| ledger.finish_recovery())?;
        drop(ledger);
        if reentered.iter().any(|r| r.now.is_some()) {
            let (push, _) = session_with(Ledger::open(dir)?, peer_addr, progress, versions).await?;
            merge_counts(&mut summary, &push);
        }
        summary.recovery = Some(Recovery { previous_origin, origin, set_aside, taken_back, reentered });
    }
    Ok(summary)
}

fn merge_counts(into: &mut Summary, more: &Summary) {
    into.stats.sent_events += more.stats.sent_events;
    into.stats.received_events += more.stats.received_events;
    into.stats.quarantined_events += more.stats.quarantined_events;
    into.stats.quarantined_by_peer += more.stats.quarantined_by_peer;
    into.stats.held_by_peer = more.stats.held_by_peer;
    into.stats.deferred_events = more.stats.deferred_events;
    into.stats.newer_format_events = more.stats.newer_format_events;
    into.stats.newer_format_version = into.stats.newer_format_version.max(more.stats.newer_format_version);
    into.files.files_received += more.files.files_received;
    into.files.file_bytes_received += more.files.file_bytes_received;
    into.files.files_sent += more.files.files_sent;
    into.files.file_bytes_sent += more.files.file_bytes_sent;
    into.files.groups_refused += more.files.groups_refused;
    into.files.incomplete = more.files.incomplete;
    into.files_left_out = more.files_left_out;
    into.unconfirmed_by_county = more.unconfirmed_by_county.clone();
    into.bytes_sent += more.bytes_sent;
    into.bytes_received += more.bytes_received;
    into.seconds += more.seconds;
    into.link.add(&more.link);
}

/// One client session with the node at `peer` (both directions), on
/// `ledger`, handed back after it.
async fn session_with(
    mut ledger: Ledger,
    peer_addr: &str,
    progress: &Progress,
    versions: &[u8],
) -> Result<(Summary, Ledger)> {
    let dir = ledger.dir().to_path_buf();
    let dir = dir.as_path();
    let addr = resolve(peer_addr).await.map_err(|e| frames::peer(PeerErrorKind::Unreachable, format!("{e:#}")))?;
    let bind: SocketAddr = if addr.is_ipv6() { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(tls::client_config_offering(ledger.identity(), ledger.secrets()?, versions)?);
    let conn = match tokio::time::timeout(Duration::from_secs(20), endpoint.connect(addr, "peer.node")?).await {
        Err(_) => Err(frames::peer(
            PeerErrorKind::Unreachable,
            format!("no answer from {peer_addr} within 20 s; is the peer serving and reachable?"),
        )),
        Ok(Err(e)) => Err(anyhow::Error::new(match peer_error(&e) {
            PeerError { kind: PeerErrorKind::Lost, message } => PeerError { kind: PeerErrorKind::Unreachable, message },
            refused => refused,
        })
        .context(format!("cannot connect to {peer_addr}"))),
        Ok(Ok(c)) => Ok(c),
    }?;
    let peer = authenticate(&conn, &ledger).map_err(|e| frames::peer(PeerErrorKind::NotAdmitted, format!("{e:#}")))?;
    let wire = wire_version(&conn).map_err(|e| frames::peer(PeerErrorKind::Protocol, format!("{e:#}")))?;
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| anyhow::Error::new(peer_error(&e)))
        .with_context(|| format!("cannot start a sync session with {peer}"))?;
    let (mut summary, events) =
        run_session(&mut ledger, peer.clone(), wire, send, Frames::spawn(recv, wire), None, progress, None).await?;
    // The file phase starts at once: this side has every event it will get
    // (the peer's Done is through, and every batch of ours it
    // acknowledged), and the peer's end of the event stream, read
    // meanwhile, is awaited after it (a sync running its file phase waits
    // five round trips instead of six; one that leaves it out, three).
    if ledger.topology().tier_of(&peer) == Some(Tier::County) && !summary.peer_lacks.is_empty() {
        block(|| crate::receipts::drop_contradicted(ledger.store().conn(), &summary.peer_lacks))?;
    }
    let left_out = wire >= proto::wire::FILES_LEFT_OUT
        && block(|| NodeFiles::of(&ledger, dir)?.can_wait(&peer, &summary, crate::wall_clock_ms())).unwrap_or_else(
            |e| {
                tracing::warn!("cannot tell whether the files with {peer} can wait; they go now: {e:#}");
                false
            },
        );
    // Left out: the file stream ends before any message, which the server
    // takes for the end of the phase (and closes, as after one).
    let (files, ended) = if wire < 2 {
        (None, None)
    } else if left_out {
        (None, Some(leave_files_out(&conn, &peer).await?))
    } else {
        (Some(file_phase(&mut ledger, dir, &peer, &conn, progress).await), None)
    };
    // Awaited whatever the file phase did: dropping the event stream, or
    // the connection, before the peer's end would cut off its session (our
    // last acknowledgements may still be on their way).
    peer_end(events).await;
    if let Some(files) = files {
        summary.files = files?;
    }
    summary.files_left_out = left_out;
    if ledger.topology().tier_of(&peer) != Some(Tier::County) {
        // What this upstream node now holds of our own events, to compare
        // with the county's receipts (`crate::receipts`).
        block(|| ledger.note_upstream_held(&peer, crate::wall_clock_ms(), &summary.files.sent_whole))?;
    }
    summary.unconfirmed_by_county = block(|| ledger.unconfirmed(crate::wall_clock_ms()))?;
    // The server closes the connection once its side is done; waiting for
    // that (half a round trip) means both sides have everything, and no
    // drain period is needed here.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    drop(ended);
    conn.close(close::DONE.into(), b"done");
    summary.link = Link::of(&conn);
    Ok((summary, ledger))
}

/// Opens the file stream and ends it at once: the file phase left out
/// (sync format 3). The stream is handed back, to be kept until the server
/// closes the connection.
async fn leave_files_out(conn: &quinn::Connection, peer: &NodeId) -> Result<(quinn::SendStream, quinn::RecvStream)> {
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| anyhow::Error::new(peer_error(&e)))
        .with_context(|| format!("cannot end the file phase with {peer}"))?;
    send.finish()?;
    Ok((send, recv))
}

/// The file phase of a client session, on a stream of its own after the
/// events.
async fn file_phase(
    ledger: &mut Ledger,
    dir: &Path,
    peer: &NodeId,
    conn: &quinn::Connection,
    progress: &Progress,
) -> Result<proto::transfer::FileStats> {
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| anyhow::Error::new(peer_error(&e)))
        .with_context(|| format!("cannot start the file phase with {peer}"))?;
    // Bounded like a served session: a peer trickling messages cannot hold
    // a laptop's sync (or a desk's background sync) open forever.
    let phase = files::run_files(ledger, dir, peer, send, recv, None, progress);
    match tokio::time::timeout(SESSION_DEADLINE, phase).await {
        Ok(r) => r,
        Err(_) => Err(frames::peer(
            PeerErrorKind::TooSlow,
            format!("the file phase took over {} s", SESSION_DEADLINE.as_secs()),
        )),
    }
    .map_err(|e| {
        e.context(format!(
            "files with {peer} broke off; every case state is through, and the files resume at the next sync"
        ))
    })
}

/// `sync` command: one session, blocking, on a ledger the caller opened
/// (and checked): a process that syncs once opens its store once.
pub fn sync_once_on(ledger: Ledger, peer_addr: &str, progress: bool) -> crate::error::Result<Summary> {
    let progress = Progress::printing(progress);
    let run = sync_and_recover(ledger, peer_addr, &progress, &proto::wire::VERSIONS);
    // One session, one thread: no workers to start, no wake-ups between
    // them (a sync process is mostly the kernel starting it and switching
    // its threads).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(anyhow::Error::from)?;
    Ok(runtime.block_on(run)?)
}

pub mod commit;
pub(crate) mod files;
mod frames;
mod progress;
mod server;
mod tls;

pub use files::NodeFiles;

pub use frames::unpack;
#[allow(unused_imports)]
use frames::*;
pub use progress::{Live, Phase, Progress};
#[allow(unused_imports)]
use server::*;
pub use server::{serve, start_server, start_server_with, stop_requested, Limits, Server, HANDSHAKES_PER_ADDRESS};
pub use tls::client_config;
#[allow(unused_imports)]
use tls::*;
