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

use crate::identity::parse_certificate_name;
use crate::ledger::Ledger;
use crate::store;
use anyhow::{anyhow, bail, Context, Result};
use proto::event::Lane;
use proto::sync::{check_batch, Divergence, Message, Positions, Replica, Session, Stats, Verdict};
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

/// ALPN of the case-ledger sync protocol.
const ALPN: &[u8] = b"case-ledger-sync/1";
/// Longest a served session may last.
const SESSION_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Largest frame accepted, compressed. Honest batches are a few hundred
/// KiB compressed (see `proto::sync::BATCH_BYTES`).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Largest frame accepted once decompressed; also the decoder's limit.
pub const MAX_RAW_FRAME: usize = proto::codec::DECODE_LIMIT;
/// Largest zstd window accepted (2^23 = 8 MiB); our frames use at most 2 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
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
/// Connections over the limit still get a handshake and a close reason, up
/// to this many more; past that they are refused without a handshake.
const REFUSAL_HANDSHAKES: usize = 64;

/// QUIC application close codes.
mod close {
    pub const DONE: u32 = 0;
    pub const REFUSED: u32 = 1;
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
        Ok(store::get_case(self.0, case)?.and_then(|c| c.create))
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
}

/// The peer (authenticated by its certificate) writes as a new incarnation
/// of itself: where this node vouches for the peer (the county for anyone,
/// a township for its villages), it does so before judging the batch, with
/// `after` the latest stamp of the peer's other origins it holds, so that
/// the new incarnation cannot write anything dated before them.
fn vouch_for_peer(ledger: &mut Ledger, peer: &NodeId, segments: &[proto::sync::Segment]) -> Result<()> {
    let topology = ledger.topology();
    let (Some(mine), Some(theirs)) = (topology.get(ledger.me()), topology.get(peer)) else { return Ok(()) };
    let may = mine.tier == Tier::County || (theirs.tier == Tier::Village && theirs.parent.as_ref() == Some(&mine.id));
    let village = theirs.tier == Tier::Village;
    if !may {
        return Ok(());
    }
    let origins: BTreeSet<&NodeId> = segments
        .iter()
        .map(|s| &s.seal.origin)
        .filter(|o| o.is_incarnation_of(peer) && o.as_str() != o.base() && o.is_well_formed_origin())
        .collect();
    for origin in origins {
        if store::voucher(ledger.store().conn(), origin)?.is_some() {
            continue;
        }
        let after = store::latest_stamp_of(ledger.store().conn(), peer, origin)?;
        let e = ledger.vouch(origin, after, village)?;
        tracing::info!(peer = %peer, origin = %origin, event = %e.id, "vouched for a new incarnation");
    }
    Ok(())
}

/// Stores a checked batch in one transaction: accepted events, their
/// cases refolded, seals, quarantined input, and the clock.
pub fn apply_verdict(ledger: &mut Ledger, from: &NodeId, verdict: &Verdict) -> Result<()> {
    let now = crate::wall_clock_ms();
    let stale = verdict.own_received.contains_key(ledger.origin());
    let tx = ledger.store_mut().write()?;
    // Cases created in this batch hold no other stored events (events of an
    // unknown case are deferred, never stored), so they are folded from
    // memory; the others are refolded from the store.
    let mut touched: BTreeMap<&CaseId, Vec<(&Event, proto::Hash)>> = BTreeMap::new();
    let mut created = BTreeSet::new();
    for (e, hash) in &verdict.accept {
        if store::insert_hashed(&tx, e, *hash)? != store::Inserted::New {
            created.remove(&e.case);
        }
        if !e.body.is_global() {
            touched.entry(&e.case).or_default().push((e, *hash));
            if matches!(e.body, proto::Body::Create(_)) && !store::case_exists(&tx, &e.case)? {
                created.insert(e.case.clone());
            }
        }
    }
    for (case, events) in &touched {
        if created.contains(*case) {
            store::fold_new_case(&tx, case, events)?;
        } else {
            store::refold_case(&tx, case)?;
        }
    }
    for seal in &verdict.seals {
        store::put_seal(&tx, seal)?;
    }
    for (e, _) in &verdict.accept {
        if let proto::Body::Revoke { node, key, upto, .. } = &e.body {
            let moved = store::purge_after_revocation(&tx, now, from, node, key, upto)?;
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
        store::quarantine(&tx, now, from, &e.id.origin, 0, "new_incarnation", &reason, &[])?;
    }
    if stale {
        // Our own current origin's events came back: this store is stale.
        crate::ledger::mark_recovering(&tx)?;
    }
    for r in &verdict.refused {
        let blob = r.event.as_ref().map(Event::encode).unwrap_or_default();
        store::quarantine(&tx, now, from, &r.origin, r.seq, r.kind.name(), &r.reason, &blob)?;
        tracing::warn!(from = %from, origin = %r.origin, seq = r.seq, reason = %r.reason, "quarantined");
    }
    if verdict.max_hlc > Hlc::default() {
        let last: Hlc = store::meta_get(&tx, "hlc")?.unwrap_or_default();
        if verdict.max_hlc > last {
            store::meta_set(&tx, "hlc", &verdict.max_hlc)?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct TlsMaterial {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: RootCertStore,
}

fn tls_material(id: &crate::Identity, secrets: &crate::identity::Secrets) -> Result<TlsMaterial> {
    let certs = CertificateDer::pem_slice_iter(id.tls_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the node certificate is damaged; re-enrol")?;
    let key = PrivateKeyDer::from_pem_slice(secrets.tls_key_pem.as_bytes()).context("the node TLS key is damaged")?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(id.ca_cert_pem.as_bytes()) {
        roots.add(ca.context("the county CA certificate is damaged")?)?;
    }
    Ok(TlsMaterial { certs, key, roots })
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("valid idle timeout")));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // One stream per connection is all the protocol uses.
    t.max_concurrent_bidi_streams(1u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    Arc::new(t)
}

/// Server side: clients must present a certificate issued by the county CA.
fn server_config(identity: &crate::Identity, secrets: &crate::identity::Secrets) -> Result<quinn::ServerConfig> {
    let m = tls_material(identity, secrets)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(m.roots), provider()).build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.certs, m.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// Accepts a server certificate that chains to the county CA and names a
/// node; which node it is, and whether we may talk to it, is decided after
/// the handshake from that name.
#[derive(Debug)]
struct CountyCaVerifier {
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CountyCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        identity_of(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Client side: presents the node's certificate and accepts a server whose
/// certificate chains to the county CA and names a node.
pub fn client_config(identity: &crate::Identity, secrets: &crate::identity::Secrets) -> Result<quinn::ClientConfig> {
    let m = tls_material(identity, secrets)?;
    let verifier = Arc::new(CountyCaVerifier { roots: m.roots, provider: provider() });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(m.certs, m.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// The node id and tier a certificate names.
fn identity_of(cert: &CertificateDer<'_>) -> Result<(NodeId, Tier)> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| anyhow!("unreadable certificate: {e:?}"))?;
    let names: Vec<&str> = ee.valid_dns_names().collect();
    names
        .iter()
        .find_map(|n| parse_certificate_name(n))
        .ok_or_else(|| anyhow!("the certificate names no node ({names:?})"))
}

/// The node id and tier the peer's certificate names, and the
/// certificate's SHA-256 (how revocations name it).
fn peer_identity(conn: &quinn::Connection) -> Result<(NodeId, Tier, proto::Hash)> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| anyhow!("the peer presented no certificate"))?;
    let cert = certs.first().ok_or_else(|| anyhow!("empty certificate chain"))?;
    let (id, tier) = identity_of(cert)?;
    Ok((id, tier, proto::Hash::of(cert.as_ref())))
}

/// Checks a peer against the topology, the allowed edges and the
/// revocation list.
fn check_peer(topology: &proto::Topology, me: &NodeId, id: &NodeId, tier: Tier, revoked: bool) -> Result<()> {
    if topology.tier_of(id) != Some(tier) {
        bail!("the peer's certificate names {id} as a {tier} node, which the topology does not know");
    }
    if revoked {
        bail!(
            "this certificate of node {id} has been revoked by the county; a replacement laptop needs a new enrolment"
        );
    }
    if !proto::sync::allowed_peer(topology, me, id) {
        bail!("{me} does not sync with {id} (a village syncs with its township or the county)");
    }
    Ok(())
}

/// The peer's node id, from its certificate, checked against the topology,
/// the allowed edges and the revocation list.
fn authenticate(conn: &quinn::Connection, ledger: &Ledger) -> Result<NodeId> {
    let (id, tier, certificate) = peer_identity(conn)?;
    let revoked = store::certificate_revoked(ledger.store().conn(), &certificate)?;
    check_peer(ledger.topology(), ledger.me(), &id, tier, revoked)?;
    Ok(id)
}

/// What a lost connection means, in words for the staff at the laptop.
fn explain(e: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    match e {
        E::TimedOut => format!(
            "the peer stopped answering (nothing heard for {} s): it may have stopped, or the network is down",
            IDLE_TIMEOUT.as_secs()
        ),
        E::ApplicationClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason);
            if reason.is_empty() {
                "the peer closed the connection".into()
            } else {
                format!("the peer closed the connection: {reason}")
            }
        }
        E::ConnectionClosed(c) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {
            "the peer refused the connection: it is serving as many connections as it can; try again shortly".into()
        }
        E::Reset => "the peer restarted and no longer knows this connection".into(),
        other => format!("the connection failed: {other}"),
    }
}

fn read_error(e: quinn::ReadError) -> anyhow::Error {
    match e {
        quinn::ReadError::ConnectionLost(c) => anyhow!(explain(&c)),
        other => anyhow!("reading from the peer failed: {other}"),
    }
}

fn write_error(e: quinn::WriteError) -> anyhow::Error {
    match e {
        quinn::WriteError::ConnectionLost(c) => anyhow!(explain(&c)),
        other => anyhow!("sending to the peer failed: {other}"),
    }
}

/// Compresses a message into a frame body, refusing one the peer would
/// refuse (an honest batch never comes near the limits).
fn pack(msg: &Message) -> Result<Vec<u8>> {
    let raw = msg.encode();
    if raw.len() > MAX_RAW_FRAME {
        bail!("a message of {} bytes is over the {MAX_RAW_FRAME}-byte frame limit", raw.len());
    }
    let packed = zstd::bulk::compress(&raw, 3)?;
    if packed.len() > MAX_FRAME {
        bail!("a message of {} compressed bytes is over the {MAX_FRAME}-byte frame limit", packed.len());
    }
    Ok(packed)
}

async fn write_frame(send: &mut quinn::SendStream, msg: &Message) -> Result<u64> {
    let packed = block(|| pack(msg))?;
    send.write_all(&(packed.len() as u32).to_be_bytes()).await.map_err(write_error)?;
    send.write_all(&packed).await.map_err(write_error)?;
    Ok(4 + packed.len() as u64)
}

/// Decompresses a frame body, never holding more than [`MAX_RAW_FRAME`]
/// bytes of output however much the frame claims or expands to.
pub fn unpack(packed: &[u8]) -> Result<Vec<u8>> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(packed)?;
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
    let mut raw = Vec::new();
    decoder
        .take(MAX_RAW_FRAME as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| anyhow!("the peer sent a frame that does not decompress: {e}"))?;
    if raw.len() > MAX_RAW_FRAME {
        bail!("the peer sent a frame that decompresses to over {MAX_RAW_FRAME} bytes");
    }
    Ok(raw)
}

/// Reads one frame. The buffer grows with the bytes that arrive, so a
/// peer that declares a large frame and sends little costs little.
async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<(Message, u64)>> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => bail!("the peer ended the stream inside a frame header"),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(read_error(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        bail!("the peer announced a frame of {len} bytes, over the {MAX_FRAME}-byte limit");
    }
    let mut buf = Vec::new();
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await.map_err(read_error)? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => bail!("the peer ended the stream inside a frame ({} of {len} bytes)", buf.len()),
        }
    }
    let msg = block(|| -> Result<Message> {
        let raw = unpack(&buf)?;
        drop(buf);
        Ok(Message::decode(&raw)?)
    })?;
    Ok(Some((msg, 4 + len as u64)))
}

/// The peer's messages, read by a task of their own (so that reading
/// overlaps checking and storing) and handed over one at a time: at most
/// one decoded message waits while another is read. The task ends with the
/// stream or when this is dropped.
struct Frames {
    rx: tokio::sync::mpsc::Receiver<Result<(Message, u64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Frames {
    fn spawn(mut recv: quinn::RecvStream) -> Frames {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(async move {
            loop {
                let frame = read_frame(&mut recv).await;
                let end = !matches!(frame, Ok(Some(_)));
                let item = match frame {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => Err(anyhow!("the peer ended the stream")),
                    Err(e) => Err(e),
                };
                if tx.send(item).await.is_err() || end {
                    break;
                }
            }
        });
        Frames { rx, task }
    }

    /// The next message, waiting at most `deadline`.
    async fn next(&mut self, deadline: Duration, what: &str) -> Result<(Message, u64)> {
        match tokio::time::timeout(deadline, self.rx.recv()).await {
            Err(_) => bail!("no {what} from the peer within {} s", deadline.as_secs()),
            Ok(None) => bail!("the peer ended the stream"),
            Ok(Some(r)) => r,
        }
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one sync session did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub peer: String,
    pub sent_events: u64,
    pub received_events: u64,
    pub refused_events: u64,
    pub deferred_events: u64,
    /// Of the events sent, how many the peer quarantined.
    pub refused_by_peer: u64,
    pub sent_batches: u32,
    pub received_batches: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub seconds: f64,
    pub peer_clock_offset_ms: Option<i64>,
    pub clock_warning: Option<String>,
    /// Events of this node's own origins that came back from the peer.
    pub own_received: BTreeMap<NodeId, u64>,
    /// Chains of this node that the peer holds as another copy wrote them.
    pub own_diverged: Vec<Divergence>,
    /// Chains of the peer that we hold as another copy of it wrote them.
    pub peer_diverged: Vec<Divergence>,
    /// What recovering from a stale or copied store did, when it happened.
    pub recovery: Option<Recovery>,
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

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Runs one session over an established, authenticated connection.
/// `first` is a message already read from `frames` (the server reads the
/// client's Hello before opening the ledger).
async fn run_session(
    ledger: &mut Ledger,
    peer: NodeId,
    mut send: quinn::SendStream,
    mut frames: Frames,
    first: Option<(Message, u64)>,
    progress: bool,
) -> Result<Summary> {
    let started = Instant::now();
    let topology = ledger.topology().clone();
    let me = ledger.me().clone();
    let mut session =
        block(|| Session::start(&SqliteReplica(ledger.store().conn()), &topology, &me, &peer, crate::wall_clock_ms()))?;
    let broke_off = |e: anyhow::Error| e.context(format!("sync with {peer} broke off; run sync again to resume"));
    let (mut bytes_sent, mut bytes_received) = (0u64, 0u64);
    let mut last_report = Instant::now();
    let mut pending = first;
    loop {
        loop {
            let msg = block(|| session.poll_transmit(&SqliteReplica(ledger.store().conn())))?;
            match msg {
                Some(m) => bytes_sent += write_frame(&mut send, &m).await.map_err(broke_off)?,
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
        let batch = block(|| session.handle(msg, &SqliteReplica(ledger.store().conn()), &topology, now))?;
        if let Some((n, segments)) = batch {
            block(|| vouch_for_peer(ledger, &peer, &segments))?;
            let verdict = block(|| {
                check_batch(
                    &SqliteReplica(ledger.store().conn()),
                    &topology,
                    ledger.catalogues(),
                    &me,
                    &peer,
                    segments,
                    now,
                )
            })?;
            block(|| apply_verdict(ledger, &peer, &verdict))?;
            session.batch_stored(n, &verdict);
            if progress && last_report.elapsed() > Duration::from_secs(1) {
                last_report = Instant::now();
                eprintln!(
                    "sync {me} <-> {peer}: sent {} events, received {} events ({} bytes in)",
                    session.stats.sent_events, session.stats.received_events, bytes_received
                );
            }
        }
    }
    send.finish()?;
    // Wait for the peer to finish its side, so that our last frames arrive.
    let _ = tokio::time::timeout(Duration::from_secs(10), async { while frames.rx.recv().await.is_some() {} }).await;
    drop(frames);
    let Stats {
        sent_events,
        received_events,
        refused_events,
        deferred_events,
        refused_by_peer,
        sent_batches,
        received_batches,
        peer_clock_offset_ms,
        own_received,
    } = session.stats.clone();
    let clock_warning = session.clock_warning().map(|off| {
        let msg = format!(
            "this node's clock differs from {peer}'s by {:.0} s; correct the system time (timestamps more than 5 minutes ahead are refused)",
            off as f64 / 1000.0
        );
        tracing::warn!("{msg}");
        msg
    });
    Ok(Summary {
        peer: peer.to_string(),
        sent_events,
        received_events,
        refused_events,
        deferred_events,
        refused_by_peer,
        sent_batches,
        received_batches,
        bytes_sent,
        bytes_received,
        seconds: started.elapsed().as_secs_f64(),
        peer_clock_offset_ms,
        clock_warning,
        own_received,
        own_diverged: session.own_diverged.iter().cloned().collect(),
        peer_diverged: session.peer_diverged.iter().cloned().collect(),
        recovery: None,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
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
pub async fn sync_with(dir: &Path, peer_addr: &str, progress: bool) -> Result<Summary> {
    let mut summary = session_with(dir, peer_addr, progress).await?;
    let mut ledger = Ledger::open(dir)?;
    let peer = NodeId::new(summary.peer.clone());
    if let (Some(offset), Some(mine), Some(theirs)) =
        (summary.peer_clock_offset_ms, ledger.topology().tier_of(ledger.me()), ledger.topology().tier_of(&peer))
    {
        if theirs > mine {
            // Upstream keeps the reference time for this node.
            block(|| ledger.record_clock_offset(&peer, offset))?;
        }
    }
    let previous_origin = ledger.origin().clone();
    let mut taken_back = summary.own_received.get(&previous_origin).copied().unwrap_or(0);
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
        let pull = session_with(dir, peer_addr, progress).await?;
        taken_back += pull.own_received.get(&previous_origin).copied().unwrap_or(0);
        merge_counts(&mut summary, &pull);
        ledger = Ledger::open(dir)?;
    }
    if block(|| ledger.recovering())? {
        let (origin, reentered) = block(|| ledger.finish_recovery())?;
        drop(ledger);
        if reentered.iter().any(|r| r.now.is_some()) {
            let push = session_with(dir, peer_addr, progress).await?;
            merge_counts(&mut summary, &push);
        }
        summary.recovery = Some(Recovery { previous_origin, origin, set_aside, taken_back, reentered });
    }
    Ok(summary)
}

fn merge_counts(into: &mut Summary, more: &Summary) {
    into.sent_events += more.sent_events;
    into.received_events += more.received_events;
    into.refused_events += more.refused_events;
    into.refused_by_peer += more.refused_by_peer;
    into.deferred_events = more.deferred_events;
    into.bytes_sent += more.bytes_sent;
    into.bytes_received += more.bytes_received;
    into.seconds += more.seconds;
}

/// One client session with the node at `peer` (both directions).
async fn session_with(dir: &Path, peer_addr: &str, progress: bool) -> Result<Summary> {
    let mut ledger = Ledger::open(dir)?;
    let addr = resolve(peer_addr).await?;
    let bind: SocketAddr = if addr.is_ipv6() { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(client_config(ledger.identity(), ledger.secrets()?)?);
    let conn = tokio::time::timeout(Duration::from_secs(20), endpoint.connect(addr, "peer.node")?)
        .await
        .with_context(|| format!("no answer from {peer_addr} within 20 s; is the peer serving and reachable?"))?
        .map_err(|e| anyhow!(explain(&e)))
        .with_context(|| format!("cannot connect to {peer_addr}"))?;
    let peer = authenticate(&conn, &ledger)?;
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| anyhow!(explain(&e)))
        .with_context(|| format!("cannot start a sync session with {peer}"))?;
    let summary = run_session(&mut ledger, peer, send, Frames::spawn(recv), None, progress).await?;
    // The server closes the connection once its side is done; waiting for
    // that (half a round trip) means both sides have everything, and no
    // drain period is needed here.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    conn.close(close::DONE.into(), b"done");
    Ok(summary)
}

/// `sync` command: one session, blocking.
pub fn sync_once(dir: &Path, peer_addr: &str, progress: bool) -> Result<Summary> {
    runtime()?.block_on(sync_with(dir, peer_addr, progress))
}

/// How many connections a server holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// In total ([`MAX_CONNECTIONS`]).
    pub connections: usize,
    /// From one peer ([`MAX_CONNECTIONS_PER_PEER`]).
    pub per_peer: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { connections: MAX_CONNECTIONS, per_peer: MAX_CONNECTIONS_PER_PEER }
    }
}

impl Limits {
    /// The defaults, with `CASE_NODE_MAX_CONNECTIONS` (a number) replacing
    /// the total when set.
    pub fn from_env() -> Result<Limits> {
        let mut limits = Limits::default();
        if let Ok(v) = std::env::var("CASE_NODE_MAX_CONNECTIONS") {
            limits.connections = v
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("CASE_NODE_MAX_CONNECTIONS must be a positive number, not {v:?}"))?;
        }
        Ok(limits)
    }
}

/// What a server knows before any session: who it is, the topology, one
/// SQLite connection for revocation checks, and the connections it holds.
struct Gate {
    dir: PathBuf,
    me: NodeId,
    topology: proto::Topology,
    revocations: Mutex<store::Store>,
    limits: Limits,
    total: AtomicUsize,
    per_peer: Mutex<BTreeMap<NodeId, usize>>,
    /// Handshakes in progress per remote address.
    handshakes: Mutex<BTreeMap<std::net::IpAddr, usize>>,
}

/// Most handshakes one address may have in progress at once: a flood of
/// half-open handshakes from one place cannot take the places of villages
/// connecting from elsewhere.
pub const HANDSHAKES_PER_ADDRESS: usize = 32;

/// A handshake in progress, counted against its address until dropped.
struct Handshake {
    gate: Arc<Gate>,
    ip: std::net::IpAddr,
}

impl Gate {
    fn claim_handshake(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Handshake> {
        let mut open = self.handshakes.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Handshake { gate: self.clone(), ip })
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut open = self.gate.handshakes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// One connection counted against the limits; released when dropped, so
/// every way a connection ends gives its place back.
struct Slot {
    gate: Arc<Gate>,
    peer: Option<NodeId>,
}

impl Gate {
    fn is_revoked(&self, certificate: &proto::Hash) -> Result<bool> {
        let store = self.revocations.lock().unwrap_or_else(|p| p.into_inner());
        store::certificate_revoked(store.conn(), certificate)
    }
}

impl Slot {
    /// Counts the connection against its peer's limit; false when the peer
    /// already holds as many as it may.
    fn claim_peer(&mut self, id: &NodeId) -> bool {
        let mut open = self.gate.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(id.clone()).or_insert(0);
        if *n >= self.gate.limits.per_peer {
            return false;
        }
        *n += 1;
        self.peer = Some(id.clone());
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.total.fetch_sub(1, Ordering::SeqCst);
        if let Some(id) = &self.peer {
            let mut open = self.gate.per_peer.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    open.remove(id);
                }
            }
        }
    }
}

/// Closes a connection, telling the peer why (and logging it).
fn refuse(conn: &quinn::Connection, code: u32, why: &str) {
    tracing::warn!(remote = %conn.remote_address(), "closing a sync connection: {why}");
    let mut reason = why.as_bytes();
    // A close reason must fit in one packet.
    let mut cut = reason.len().min(400);
    while !why.is_char_boundary(cut) {
        cut -= 1;
    }
    reason = &reason[..cut];
    conn.close(code.into(), reason);
}

async fn serve_connection(
    mut slot: Slot,
    incoming: quinn::Incoming,
    over_limit: bool,
    handshake: Handshake,
) -> Result<()> {
    let gate = slot.gate.clone();
    let conn = match tokio::time::timeout(OPEN_DEADLINE, incoming).await {
        Err(_) => bail!("a handshake took over {} s", OPEN_DEADLINE.as_secs()),
        Ok(Err(e)) => bail!("handshake failed: {e}"),
        Ok(Ok(c)) => c,
    };
    drop(handshake);
    if over_limit {
        let why = format!(
            "{} is serving {} connections, its limit; sync again in a minute",
            gate.me, gate.limits.connections
        );
        refuse(&conn, close::BUSY, &why);
        return Ok(());
    }
    let peer = match peer_identity(&conn).and_then(|(id, tier, certificate)| {
        let revoked = block(|| gate.is_revoked(&certificate))?;
        check_peer(&gate.topology, &gate.me, &id, tier, revoked)?;
        Ok(id)
    }) {
        Ok(p) => p,
        Err(e) => {
            refuse(&conn, close::REFUSED, &format!("refused: {e:#}"));
            return Ok(());
        }
    };
    if !slot.claim_peer(&peer) {
        let why = format!(
            "{peer} already holds {} connections with {}, the most one node may; let them finish first",
            gate.limits.per_peer, gate.me
        );
        refuse(&conn, close::BUSY, &why);
        return Ok(());
    }
    let (send, recv) = match tokio::time::timeout(OPEN_DEADLINE, conn.accept_bi()).await {
        Err(_) => {
            refuse(&conn, close::TOO_SLOW, &format!("{peer} opened no stream within {} s", OPEN_DEADLINE.as_secs()));
            return Ok(());
        }
        Ok(Err(e)) => bail!("connection from {peer} lost before its stream opened: {}", explain(&e)),
        Ok(Ok(s)) => s,
    };
    // Nothing is read from the ledger until the peer has said Hello.
    let mut frames = Frames::spawn(recv);
    let first = match frames.next(OPEN_DEADLINE, "Hello").await {
        Ok(f) if matches!(f.0, Message::Hello { .. }) => f,
        Ok(_) => {
            refuse(&conn, close::FAILED, &format!("protocol violation by {peer}: the first message must be a Hello"));
            return Ok(());
        }
        Err(e) => {
            refuse(&conn, close::TOO_SLOW, &format!("{peer}: {e:#}"));
            return Ok(());
        }
    };
    let mut ledger = block(|| Ledger::open(&gate.dir))?;
    let session = run_session(&mut ledger, peer.clone(), send, frames, Some(first), false);
    let s = match tokio::time::timeout(SESSION_DEADLINE, session).await {
        Err(_) => {
            refuse(&conn, close::TOO_SLOW, &format!("session with {peer} exceeded {} s", SESSION_DEADLINE.as_secs()));
            return Ok(());
        }
        Ok(Err(e)) => {
            refuse(&conn, close::FAILED, &format!("{e:#}"));
            return Ok(());
        }
        Ok(Ok(s)) => s,
    };
    tracing::info!(
        peer = %peer, sent = s.sent_events, received = s.received_events, refused = s.refused_events,
        bytes_in = s.bytes_received, bytes_out = s.bytes_sent, "sync done"
    );
    block(|| record_divergence(&mut ledger, &peer, &s))?;
    drop(ledger);
    if let Some(w) = &s.clock_warning {
        eprintln!("warning: {w}");
    }
    // Our side is complete (every batch stored and acknowledged both ways):
    // closing tells the client it may exit.
    conn.close(close::DONE.into(), b"done");
    Ok(())
}

/// On the serving side: a peer that is a second or stale copy of a node is
/// recorded for administrators (in quarantine, with no event data); when
/// this node's own events came back, it continues under a new incarnation.
fn record_divergence(ledger: &mut Ledger, peer: &NodeId, s: &Summary) -> Result<()> {
    if !s.peer_diverged.is_empty() {
        let now = crate::wall_clock_ms();
        let tx = ledger.store_mut().write()?;
        for d in &s.peer_diverged {
            let reason = format!(
                "two copies of node {}: the copy that connected holds a different history of chain {} in lane {} \
                 (position {} there, {} here); it recovers by itself, but find out where the other copy is",
                d.origin.node(),
                d.origin,
                d.lane,
                d.there,
                d.here
            );
            tracing::warn!("{reason}");
            store::quarantine(&tx, now, peer, &d.origin, d.there, "second_copy", &reason, &[])?;
        }
        tx.commit()?;
    }
    if !s.own_diverged.is_empty() {
        tracing::error!(peer = %peer, "another copy of this node wrote a different history; sync as a client to recover");
    }
    if block(|| ledger.recovering())? && s.own_diverged.is_empty() {
        let (origin, _) = block(|| ledger.finish_recovery())?;
        tracing::warn!(origin = %origin, "this node's store was stale; it continues as a new incarnation");
    }
    Ok(())
}

/// A sync server running inside the caller's tokio runtime.
pub struct Server {
    pub endpoint: quinn::Endpoint,
    pub addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    gate: Arc<Gate>,
}

impl Server {
    /// Connections held right now (handshaking, waiting or in a session).
    pub fn connections(&self) -> usize {
        self.gate.total.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        self.endpoint.close(0u32.into(), b"shutting down");
    }
}

/// Starts serving sync sessions for the node in `dir` on `listen`, with the
/// default [`Limits`] (and `CASE_NODE_MAX_CONNECTIONS`).
pub async fn start_server(dir: &Path, listen: &str) -> Result<Server> {
    start_server_with(dir, listen, Limits::from_env()?).await
}

/// [`start_server`] with explicit limits.
pub async fn start_server_with(dir: &Path, listen: &str, limits: Limits) -> Result<Server> {
    let ledger = Ledger::open(dir)?;
    let addr = resolve(listen).await?;
    let endpoint = quinn::Endpoint::server(server_config(ledger.identity(), ledger.secrets()?)?, addr)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = endpoint.local_addr()?;
    let gate = Arc::new(Gate {
        dir: dir.to_path_buf(),
        me: ledger.me().clone(),
        topology: ledger.topology().clone(),
        revocations: Mutex::new(store::Store::open(dir)?),
        limits,
        total: AtomicUsize::new(0),
        per_peer: Mutex::new(BTreeMap::new()),
        handshakes: Mutex::new(BTreeMap::new()),
    });
    drop(ledger);
    let ep = endpoint.clone();
    let g = gate.clone();
    let accept = tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            if !incoming.remote_address_validated() && incoming.may_retry() {
                // Address validation (QUIC Retry): a first packet from a
                // spoofed or silent source costs nothing until its sender
                // answers.
                let _ = incoming.retry();
                continue;
            }
            let Some(handshake) = g.claim_handshake(incoming.remote_address().ip()) else {
                incoming.refuse();
                continue;
            };
            let held = g.total.fetch_add(1, Ordering::SeqCst);
            let slot = Slot { gate: g.clone(), peer: None };
            if held >= g.limits.connections + REFUSAL_HANDSHAKES {
                // A flood: not even a handshake.
                incoming.refuse();
                drop(slot);
                continue;
            }
            let over_limit = held >= g.limits.connections;
            tokio::spawn(async move {
                if let Err(e) = serve_connection(slot, incoming, over_limit, handshake).await {
                    tracing::warn!("sync session failed: {e:#}");
                }
            });
        }
    });
    Ok(Server { endpoint, addr, accept, gate })
}

/// `serve` command: accept sync sessions; with `upstream`, also sync with
/// it every `every`.
pub fn serve(dir: &Path, listen: &str, upstream: Option<(String, Duration)>) -> Result<()> {
    runtime()?.block_on(async {
        let server = start_server(dir, listen).await?;
        println!("{} serving sync on {}", Ledger::open(dir)?.me(), server.addr);
        if let Some((up, every)) = upstream {
            let dir = dir.to_path_buf();
            tokio::spawn(async move {
                loop {
                    match sync_with(&dir, &up, false).await {
                        Ok(s) => tracing::info!(
                            peer = %s.peer, sent = s.sent_events, received = s.received_events, "upstream sync done"
                        ),
                        Err(e) => tracing::warn!("upstream sync with {up} failed: {e:#}"),
                    }
                    tokio::time::sleep(every).await;
                }
            });
        }
        tokio::signal::ctrl_c().await?;
        drop(server);
        Ok(())
    })
}
