//! The sync driver: runs `proto::sync::Session` over QUIC with mutual TLS
//! against the county CA, reading and writing the node's SQLite ledger.
//!
//! Each side learns the other's node id and tier from its certificate name
//! (`<id>.<tier>.node`), never from a message. One bidirectional stream per
//! connection carries length-prefixed, zstd-compressed messages. A received
//! batch is acknowledged only after the transaction that stores it commits.

use crate::identity::parse_certificate_name;
use crate::ledger::Ledger;
use crate::store;
use anyhow::{anyhow, bail, Context, Result};
use proto::event::Lane;
use proto::sync::{check_batch, Message, Positions, Replica, Session, Stats, Verdict};
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
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// ALPN of the case-ledger sync protocol.
const ALPN: &[u8] = b"case-ledger-sync/1";
/// Longest a served session may last.
const SESSION_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Largest frame accepted (compressed), to bound memory.
const MAX_FRAME: usize = 256 * 1024 * 1024;

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
    fn is_revoked(&self, node: &NodeId) -> Result<bool> {
        Ok(store::revoked(self.0)?.contains(node))
    }
}

/// Stores a checked batch in one transaction: accepted events, their
/// cases refolded, seals, quarantined input, and the clock.
pub fn apply_verdict(ledger: &mut Ledger, from: &NodeId, verdict: &Verdict) -> Result<()> {
    let now = crate::wall_clock_ms();
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
        if e.lane != Lane::Global {
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
    for r in &verdict.refused {
        let blob = r.event.as_ref().map(Event::encode).unwrap_or_default();
        store::quarantine(&tx, now, from, &r.origin, r.seq, &r.reason, &blob)?;
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

fn tls_material(ledger: &Ledger) -> Result<TlsMaterial> {
    let id = ledger.identity();
    let certs = CertificateDer::pem_slice_iter(id.tls_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the node certificate is damaged; re-enrol")?;
    let key = PrivateKeyDer::from_pem_slice(id.tls_key_pem.as_bytes()).context("the node TLS key is damaged")?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(id.ca_cert_pem.as_bytes()) {
        roots.add(ca.context("the county CA certificate is damaged")?)?;
    }
    Ok(TlsMaterial { certs, key, roots })
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(Duration::from_secs(60).try_into().expect("valid idle timeout")));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    Arc::new(t)
}

/// Server side: clients must present a certificate issued by the county CA.
fn server_config(ledger: &Ledger) -> Result<quinn::ServerConfig> {
    let m = tls_material(ledger)?;
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

fn client_config(ledger: &Ledger) -> Result<quinn::ClientConfig> {
    let m = tls_material(ledger)?;
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

/// The peer's node id, from its certificate, checked against the topology,
/// the allowed edges and the revocation list.
fn authenticate(conn: &quinn::Connection, ledger: &Ledger) -> Result<NodeId> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| anyhow!("the peer presented no certificate"))?;
    let (id, tier) = identity_of(certs.first().ok_or_else(|| anyhow!("empty certificate chain"))?)?;
    let topology = ledger.topology();
    if topology.tier_of(&id) != Some(tier) {
        bail!("the peer's certificate names {id} as a {tier} node, which the topology does not know");
    }
    if store::revoked(ledger.store().conn())?.contains(&id) {
        bail!("node {id} has been revoked by the county; its certificate is refused");
    }
    if !proto::sync::allowed_peer(topology, ledger.me(), &id) {
        bail!("{} does not sync with {id} (a village syncs with its township or the county)", ledger.me());
    }
    Ok(id)
}

async fn write_frame(send: &mut quinn::SendStream, msg: &Message) -> Result<u64> {
    let raw = msg.encode();
    let packed = zstd::bulk::compress(&raw, 3)?;
    send.write_all(&(packed.len() as u32).to_be_bytes()).await?;
    send.write_all(&packed).await?;
    Ok(4 + packed.len() as u64)
}

async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<(Message, u64)>> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        bail!("peer sent a frame of {len} bytes, over the {MAX_FRAME} limit");
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await?;
    let raw = zstd::bulk::decompress(&buf, MAX_FRAME)?;
    Ok(Some((Message::decode(&raw)?, 4 + len as u64)))
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
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Runs one session over an established, authenticated connection.
async fn run_session(
    ledger: &mut Ledger,
    peer: NodeId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    progress: bool,
) -> Result<Summary> {
    let started = Instant::now();
    let topology = ledger.topology().clone();
    let me = ledger.me().clone();
    let mut session =
        block(|| Session::start(&SqliteReplica(ledger.store().conn()), &topology, &me, &peer, crate::wall_clock_ms()))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(Message, u64)>>(16);
    let reader = tokio::spawn(async move {
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
    let (mut bytes_sent, mut bytes_received) = (0u64, 0u64);
    let mut last_report = Instant::now();
    loop {
        loop {
            let msg = block(|| session.poll_transmit(&SqliteReplica(ledger.store().conn())))?;
            match msg {
                Some(m) => bytes_sent += write_frame(&mut send, &m).await?,
                None => break,
            }
        }
        if session.is_finished() {
            break;
        }
        let (msg, n) = match rx.recv().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(e.context(format!("sync with {peer} broke off; run sync again to resume"))),
            None => bail!("sync with {peer} broke off; run sync again to resume"),
        };
        bytes_received += n;
        let now = crate::wall_clock_ms();
        let batch = block(|| session.handle(msg, &SqliteReplica(ledger.store().conn()), &topology, now))?;
        if let Some((n, segments)) = batch {
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
    let _ = tokio::time::timeout(Duration::from_secs(10), async { while rx.recv().await.is_some() {} }).await;
    reader.abort();
    let Stats {
        sent_events,
        received_events,
        refused_events,
        deferred_events,
        refused_by_peer,
        sent_batches,
        received_batches,
        peer_clock_offset_ms,
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

/// One client session with the node at `peer` (both directions).
pub async fn sync_with(dir: &Path, peer_addr: &str, progress: bool) -> Result<Summary> {
    let mut ledger = Ledger::open(dir)?;
    let addr = resolve(peer_addr).await?;
    let bind: SocketAddr = if addr.is_ipv6() { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(client_config(&ledger)?);
    let conn = tokio::time::timeout(Duration::from_secs(20), endpoint.connect(addr, "peer.node")?)
        .await
        .with_context(|| format!("no answer from {peer_addr} within 20 s; is the peer serving and reachable?"))?
        .with_context(|| format!("cannot connect to {peer_addr}"))?;
    let peer = authenticate(&conn, &ledger)?;
    let (send, recv) = conn.open_bi().await?;
    let summary = run_session(&mut ledger, peer, send, recv, progress).await?;
    // The server closes the connection once its side is done; waiting for
    // that (half a round trip) means both sides have everything, and no
    // drain period is needed here.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    conn.close(0u32.into(), b"done");
    Ok(summary)
}

/// `sync` command: one session, blocking.
pub fn sync_once(dir: &Path, peer_addr: &str, progress: bool) -> Result<Summary> {
    runtime()?.block_on(sync_with(dir, peer_addr, progress))
}

async fn serve_connection(dir: PathBuf, incoming: quinn::Incoming) -> Result<()> {
    let conn = incoming.await?;
    let mut ledger = Ledger::open(&dir)?;
    let peer = match authenticate(&conn, &ledger) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(remote = %conn.remote_address(), "refused: {e:#}");
            conn.close(1u32.into(), format!("{e:#}").as_bytes());
            return Ok(());
        }
    };
    let (send, recv) = conn.accept_bi().await?;
    // A peer that stops talking must not hold a session (and its SQLite
    // connection) for ever; keep-alives stop the idle timeout from firing.
    let s = tokio::time::timeout(SESSION_DEADLINE, run_session(&mut ledger, peer.clone(), send, recv, false))
        .await
        .map_err(|_| anyhow!("session with {peer} exceeded {} s", SESSION_DEADLINE.as_secs()))??;
    tracing::info!(
        peer = %peer, sent = s.sent_events, received = s.received_events, refused = s.refused_events,
        bytes_in = s.bytes_received, bytes_out = s.bytes_sent, "sync done"
    );
    if let Some(w) = &s.clock_warning {
        eprintln!("warning: {w}");
    }
    // Our side is complete (every batch stored and acknowledged both ways):
    // closing tells the client it may exit.
    conn.close(0u32.into(), b"done");
    Ok(())
}

/// A sync server running inside the caller's tokio runtime.
pub struct Server {
    pub endpoint: quinn::Endpoint,
    pub addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        self.endpoint.close(0u32.into(), b"shutting down");
    }
}

/// Starts serving sync sessions for the node in `dir` on `listen`.
pub async fn start_server(dir: &Path, listen: &str) -> Result<Server> {
    let ledger = Ledger::open(dir)?;
    let addr = resolve(listen).await?;
    let endpoint =
        quinn::Endpoint::server(server_config(&ledger)?, addr).with_context(|| format!("cannot listen on {listen}"))?;
    let addr = endpoint.local_addr()?;
    let (ep, dir) = (endpoint.clone(), dir.to_path_buf());
    let accept = tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let dir = dir.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_connection(dir, incoming).await {
                    tracing::warn!("sync session failed: {e:#}");
                }
            });
        }
    });
    Ok(Server { endpoint, addr, accept })
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
