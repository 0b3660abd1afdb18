//! The serving side: limits on connections and handshakes, the accept
//! loop, one served session, and what a server records and vouches for.

use super::*;

/// A served session reports no progress.
static SILENT: std::sync::LazyLock<Progress> = std::sync::LazyLock::new(Progress::default);

/// How many connections a server holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// In total ([`MAX_CONNECTIONS`]).
    pub connections: usize,
    /// From one peer ([`MAX_CONNECTIONS_PER_PEER`]).
    pub per_peer: usize,
    /// How often the peers' last contacts are written ([`CONTACTS_EVERY`]).
    pub contacts_every: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { connections: MAX_CONNECTIONS, per_peer: MAX_CONNECTIONS_PER_PEER, contacts_every: CONTACTS_EVERY }
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
pub(super) struct Gate {
    dir: PathBuf,
    me: NodeId,
    /// The county's map, with the count of publications it was read at
    /// (read again when a session or a `sync` stored a change).
    topology: Mutex<(u64, Arc<proto::Topology>)>,
    revocations: Mutex<store::Store>,
    limits: Limits,
    total: AtomicUsize,
    per_peer: Mutex<BTreeMap<NodeId, usize>>,
    /// Handshakes in progress per remote address.
    handshakes: Mutex<BTreeMap<std::net::IpAddr, usize>>,
    /// Ledgers of finished sessions, ready for the next: the node is opened
    /// (SQLite, topology and catalogue parsed) once per process and per
    /// concurrent session, not once per session.
    idle: Mutex<Vec<Ledger>>,
    /// Ledgers opened since the server started.
    opened: AtomicUsize,
    /// Stores the batches of all sessions, several to a durable commit.
    committer: commit::Committer,
    /// When each peer last finished a session, not yet written: written
    /// together every [`Limits::contacts_every`] and when the server stops,
    /// so that a session that stored nothing writes nothing.
    contacts: Mutex<BTreeMap<NodeId, u64>>,
    /// Sessions' work handed off the worker to another thread since the
    /// server started (`block`).
    handed_off: Arc<AtomicUsize>,
}

/// How often the peers' last contacts are written (the county's desk shows
/// them; they are at most this much late there).
pub const CONTACTS_EVERY: Duration = Duration::from_secs(5);

/// Most idle ledgers a server keeps for the next sessions.
const IDLE_LEDGERS: usize = 8;

impl Gate {
    /// A ledger for one session: an idle one, brought up to date with what
    /// other sessions may have changed, or a newly opened one. The reload
    /// reads a few rows in place (it parses the catalogues again only after
    /// a publication); opening a store runs off the worker.
    fn take_ledger(&self) -> Result<Ledger> {
        let idle = self.idle.lock().expect("idle ledgers").pop();
        match idle {
            Some(mut ledger) => {
                quick(|| ledger.reload())?;
                Ok(ledger)
            }
            None => {
                self.opened.fetch_add(1, Ordering::SeqCst);
                Ok(block(|| Ledger::open(&self.dir))?)
            }
        }
    }

    /// Writes the contacts noted since the last time, in one transaction.
    fn write_contacts(&self) {
        let noted = std::mem::take(&mut *self.contacts.lock().unwrap_or_else(|p| p.into_inner()));
        if noted.is_empty() {
            return;
        }
        let written = store::Store::open(&self.dir).and_then(|mut store| {
            let tx = store.write()?;
            for (peer, at_ms) in &noted {
                crate::query::note_contact(&tx, peer, *at_ms)?;
            }
            Ok(tx.commit()?)
        });
        if let Err(e) = written {
            tracing::warn!("the last contacts of {} peers were not written, tried again later: {e:#}", noted.len());
            let mut contacts = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
            for (peer, at_ms) in noted {
                contacts.entry(peer).or_insert(at_ms);
            }
        }
    }

    /// Keeps the ledger of a session that ended cleanly for the next one.
    fn give_back(&self, ledger: Ledger) {
        let mut idle = self.idle.lock().expect("idle ledgers");
        if idle.len() < IDLE_LEDGERS {
            idle.push(ledger);
        }
    }
}

/// Most handshakes one address may have in progress at once: a flood of
/// half-open handshakes from one place cannot take the places of villages
/// connecting from elsewhere.
pub const HANDSHAKES_PER_ADDRESS: usize = 32;

/// Most handshakes in progress at once, whatever their addresses.
pub const MAX_HANDSHAKES: usize = 512;

/// Handshakes in progress from one network above which a first packet is
/// answered with a Retry (its sender must show it receives at its address).
pub const UNVALIDATED_PER_NETWORK: usize = 4;

/// Handshakes in progress in all above which every first packet is
/// answered with a Retry.
pub const UNVALIDATED_TOTAL: usize = 64;

/// Longest a QUIC + TLS handshake may take.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// The network an address is counted under: its IPv4 /24 or IPv6 /64, so
/// one host with many addresses counts once.
fn network_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(o[0], o[1], o[2], 0))
        }
        std::net::IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].iter_mut().for_each(|x| *x = 0);
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(s))
        }
    }
}

/// A handshake in progress, counted against its network until dropped.
pub(super) struct Handshake {
    gate: Arc<Gate>,
    ip: std::net::IpAddr,
}

impl Gate {
    /// A place for a handshake from `ip`, if its network (an IPv4 /24, an
    /// IPv6 /64) and the server as a whole have one free. Handshakes have
    /// their own budget: they never take the places of authenticated
    /// sessions.
    fn claim_handshake(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Handshake> {
        let ip = network_of(ip);
        let mut open = self.handshakes.lock().unwrap_or_else(|p| p.into_inner());
        if open.values().sum::<usize>() >= MAX_HANDSHAKES {
            return None;
        }
        let n = open.entry(ip).or_insert(0);
        if *n >= HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Handshake { gate: self.clone(), ip })
    }
}

impl Gate {
    /// Whether a first packet from `ip` must prove its address (QUIC
    /// Retry) before it may take a handshake's place: when its network
    /// already has [`UNVALIDATED_PER_NETWORK`] handshakes in progress, or
    /// the server [`UNVALIDATED_TOTAL`].
    fn wants_validation(&self, ip: std::net::IpAddr) -> bool {
        needs_validation(&self.handshakes.lock().unwrap_or_else(|p| p.into_inner()), ip)
    }
}

/// [`Gate::wants_validation`] over the handshakes in progress per network.
fn needs_validation(open: &BTreeMap<std::net::IpAddr, usize>, ip: std::net::IpAddr) -> bool {
    open.get(&network_of(ip)).copied().unwrap_or(0) >= UNVALIDATED_PER_NETWORK
        || open.values().sum::<usize>() >= UNVALIDATED_TOTAL
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
pub(super) struct Slot {
    gate: Arc<Gate>,
    peer: Option<NodeId>,
}

impl Gate {
    fn is_revoked(&self, names: &[proto::Hash]) -> Result<bool> {
        let store = self.revocations.lock().unwrap_or_else(|p| p.into_inner());
        store::certificate_revoked(store.conn(), names)
    }

    /// The county's map as the store holds it now.
    fn topology(&self) -> Result<Arc<proto::Topology>> {
        let store = self.revocations.lock().unwrap_or_else(|p| p.into_inner());
        let held = store::publications_held(store.conn())?;
        let mut topology = self.topology.lock().unwrap_or_else(|p| p.into_inner());
        if topology.0 != held {
            *topology = (held, Arc::new(store::topology(store.conn())?));
        }
        Ok(topology.1.clone())
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
pub(super) fn close_with(conn: &quinn::Connection, code: u32, why: &str) {
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

pub(super) async fn serve_connection(gate: Arc<Gate>, incoming: quinn::Incoming, handshake: Handshake) -> Result<()> {
    let conn = match tokio::time::timeout(HANDSHAKE_DEADLINE, incoming).await {
        Err(_) => bail!("a handshake took over {} s", HANDSHAKE_DEADLINE.as_secs()),
        Ok(Err(e)) => bail!("handshake failed: {e}"),
        Ok(Ok(c)) => c,
    };
    drop(handshake);
    // Only a finished handshake counts against the connection limit.
    let held = gate.total.fetch_add(1, Ordering::SeqCst);
    let mut slot = Slot { gate: gate.clone(), peer: None };
    let over_limit = held >= gate.limits.connections;
    if over_limit {
        let why = format!(
            "{} is serving {} connections, its limit; sync again in a minute",
            gate.me, gate.limits.connections
        );
        close_with(&conn, close::BUSY, &why);
        return Ok(());
    }
    let peer = match peer_identity(&conn).and_then(|(id, tier, names)| {
        let revoked = quick(|| gate.is_revoked(&names))?;
        let topology = quick(|| gate.topology())?;
        check_peer(&topology, &gate.me, &id, tier, revoked)?;
        Ok(id)
    }) {
        Ok(p) => p,
        Err(e) => {
            close_with(&conn, close::NOT_ADMITTED, &format!("refused: {e:#}"));
            return Ok(());
        }
    };
    if !slot.claim_peer(&peer) {
        let why = format!(
            "{peer} already holds {} connections with {}, the most one node may; let them finish first",
            gate.limits.per_peer, gate.me
        );
        close_with(&conn, close::BUSY, &why);
        return Ok(());
    }
    let wire = match wire_version(&conn) {
        Ok(w) => w,
        Err(e) => {
            close_with(&conn, close::NOT_ADMITTED, &format!("refused: {e:#}"));
            return Ok(());
        }
    };
    let (send, recv) = match tokio::time::timeout(OPEN_DEADLINE, conn.accept_bi()).await {
        Err(_) => {
            close_with(
                &conn,
                close::TOO_SLOW,
                &format!("{peer} opened no stream within {} s", OPEN_DEADLINE.as_secs()),
            );
            return Ok(());
        }
        Ok(Err(e)) => bail!("connection from {peer} lost before its stream opened: {}", explain(&e)),
        Ok(Ok(s)) => s,
    };
    // Nothing is read from the ledger until the peer has said Hello.
    let mut frames = Frames::spawn(recv, wire);
    let first = match frames.next(OPEN_DEADLINE, "Hello").await {
        Ok(f) if matches!(f.0, Message::Hello { .. }) => f,
        Ok(_) => {
            close_with(
                &conn,
                close::FAILED,
                &format!("protocol violation by {peer}: the first message must be a Hello"),
            );
            return Ok(());
        }
        Err(e) => {
            close_with(&conn, close::TOO_SLOW, &format!("{peer}: {e:#}"));
            return Ok(());
        }
    };
    let mut ledger = gate.take_ledger()?;
    let session =
        run_session(&mut ledger, peer.clone(), wire, send, frames, Some(first), &SILENT, Some(&gate.committer));
    let s = match tokio::time::timeout(SESSION_DEADLINE, session).await {
        Err(_) => {
            close_with(
                &conn,
                close::TOO_SLOW,
                &format!("session with {peer} exceeded {} s", SESSION_DEADLINE.as_secs()),
            );
            return Ok(());
        }
        Ok(Err(e)) => {
            close_with(&conn, close::FAILED, &format!("{e:#}"));
            return Ok(());
        }
        Ok(Ok((s, frames))) => {
            peer_end(frames).await;
            s
        }
    };
    tracing::info!(
        peer = %peer, sent = s.stats.sent_events, received = s.stats.received_events, quarantined = s.stats.quarantined_events,
        bytes_in = s.bytes_received, bytes_out = s.bytes_sent, "sync done"
    );
    record_divergence(&mut ledger, &peer, &s)?;
    gate.contacts.lock().unwrap_or_else(|p| p.into_inner()).insert(peer.clone(), crate::wall_clock_ms());
    if wire >= 2 {
        // Files after the events, on the client's second stream.
        match tokio::time::timeout(OPEN_DEADLINE, conn.accept_bi()).await {
            Ok(Ok((send, recv))) => {
                if let Err(e) = serve_files(&mut ledger, &gate.dir, &peer, wire, send, recv).await {
                    tracing::warn!("files with {peer}: {e:#}");
                }
            }
            Ok(Err(e)) => tracing::info!("{peer} left before the file phase: {}", explain(&e)),
            Err(_) => tracing::info!("{peer} opened no file stream"),
        }
    }
    gate.give_back(ledger);
    if let Some(w) = &s.clock_warning {
        eprintln!("warning: {w}");
    }
    // Our side is complete (every batch stored and acknowledged both ways):
    // closing tells the client it may exit.
    conn.close(close::DONE.into(), b"done");
    Ok(())
}

/// The served side of a file phase on the client's stream. From format 3
/// a village whose county receipt says nothing would move ends the stream
/// before any message (`NodeFiles::can_wait`): the phase is over; an
/// honest client's first bytes open the stream, so they are awaited only
/// as long as the stream's opening.
async fn serve_files(
    ledger: &mut Ledger,
    dir: &Path,
    peer: &NodeId,
    wire: u8,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<()> {
    let mut first = None;
    if wire >= proto::wire::FILES_LEFT_OUT {
        let read = tokio::time::timeout(OPEN_DEADLINE, files::file_frame_length(&mut recv)).await;
        match read.map_err(|_| anyhow!("no file message within {} s", OPEN_DEADLINE.as_secs()))?? {
            None => {
                tracing::debug!("{peer} left the file phase out");
                return Ok(());
            }
            length => first = length,
        }
    }
    let files = files::run_files(ledger, dir, peer, send, recv, first, &SILENT);
    let f = tokio::time::timeout(SESSION_DEADLINE, files)
        .await
        .map_err(|_| anyhow!("the file phase exceeded {} s", SESSION_DEADLINE.as_secs()))??;
    tracing::info!(peer = %peer, received = f.files_received, sent = f.files_sent, refused = f.groups_refused, "files done");
    Ok(())
}

/// On the serving side: a peer that is a second or stale copy of a node is
/// recorded for administrators (in quarantine, with no event data); when
/// this node's own events came back, it continues under a new incarnation.
pub(super) fn record_divergence(ledger: &mut Ledger, peer: &NodeId, s: &Summary) -> Result<()> {
    // A write (it may wait for the group commit): off the worker.
    if !s.peer_diverged.is_empty() {
        block(|| record_second_copy(ledger, peer, s))?;
    }
    if !s.own_diverged.is_empty() {
        tracing::error!(peer = %peer, "another copy of this node wrote a different history; sync as a client to recover");
    }
    // Only the simple case here (our own events came back: stale, nothing
    // set aside). A chain set aside waits for its history to be pulled back,
    // which the client side of this node's next sync does.
    if quick(|| ledger.recovering())?
        && s.own_diverged.is_empty()
        && block(|| store::set_aside_pending(ledger.store().conn()))?.is_empty()
    {
        let (origin, _) = block(|| ledger.finish_recovery())?;
        tracing::warn!(origin = %origin, "this node's store was stale; it continues as a new incarnation");
    }
    Ok(())
}

/// Quarantines a record, without event data, of each chain a peer holds
/// another history of.
fn record_second_copy(ledger: &mut Ledger, peer: &NodeId, s: &Summary) -> Result<()> {
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
    Ok(())
}

/// A sync server running inside the caller's tokio runtime.
pub struct Server {
    pub endpoint: quinn::Endpoint,
    pub addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    contacts: tokio::task::JoinHandle<()>,
    gate: Arc<Gate>,
}

impl Server {
    /// Connections held right now (handshaking, waiting or in a session).
    pub fn connections(&self) -> usize {
        self.gate.total.load(Ordering::SeqCst)
    }
    /// Ledgers opened since the server started: one per session running at
    /// once, not one per session.
    pub fn ledgers_opened(&self) -> usize {
        self.gate.opened.load(Ordering::SeqCst)
    }
    /// Times a session's work was handed off the runtime's worker to
    /// another thread (a batch's check, a large message): each costs tens
    /// of microseconds of wake-ups, a no-op session none.
    pub fn handed_off(&self) -> usize {
        self.gate.handed_off.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        self.contacts.abort();
        self.endpoint.close(0u32.into(), b"shutting down");
        // A write (it may wait for the group commit): off a worker.
        block(|| self.gate.write_contacts());
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
        topology: Mutex::new((u64::MAX, Arc::new(ledger.topology().clone()))),
        revocations: Mutex::new(store::Store::open(dir)?),
        limits,
        total: AtomicUsize::new(0),
        per_peer: Mutex::new(BTreeMap::new()),
        handshakes: Mutex::new(BTreeMap::new()),
        idle: Mutex::new(Vec::new()),
        opened: AtomicUsize::new(1),
        committer: commit::Committer::spawn(Ledger::open(dir)?)?,
        contacts: Mutex::new(BTreeMap::new()),
        handed_off: Arc::default(),
    });
    gate.give_back(ledger);
    let ep = endpoint.clone();
    let g = gate.clone();
    let accept = tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            if !incoming.remote_address_validated()
                && incoming.may_retry()
                && g.wants_validation(incoming.remote_address().ip())
            {
                // Address validation (QUIC Retry) once handshakes pile up:
                // a first packet from a spoofed or silent source then costs
                // nothing until its sender answers. A returning village on a
                // quiet server saves the round trip.
                let _ = incoming.retry();
                continue;
            }
            let Some(handshake) = g.claim_handshake(incoming.remote_address().ip()) else {
                incoming.refuse();
                continue;
            };
            let g = g.clone();
            let handed_off = g.handed_off.clone();
            tokio::spawn(HANDED_OFF.scope(handed_off, async move {
                if let Err(e) = serve_connection(g, incoming, handshake).await {
                    tracing::warn!("sync session failed: {e:#}");
                }
            }));
        }
    });
    let g = gate.clone();
    let contacts = tokio::spawn(async move {
        loop {
            tokio::time::sleep(g.limits.contacts_every).await;
            let g = g.clone();
            let _ = tokio::task::spawn_blocking(move || g.write_contacts()).await;
        }
    });
    Ok(Server { endpoint, addr, accept, contacts, gate })
}

/// Waits for Ctrl-C or SIGTERM (a service manager stopping the server):
/// the caller then drops its server cleanly, its last contacts written.
pub async fn stop_requested() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
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
                            peer = %s.peer, sent = s.stats.sent_events, received = s.stats.received_events, "upstream sync done"
                        ),
                        Err(e) => tracing::warn!("upstream sync with {up} failed: {e:#}"),
                    }
                    tokio::time::sleep(every).await;
                }
            });
        }
        stop_requested().await?;
        drop(server);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// A first packet proves its address (Retry) only once handshakes pile
    /// up: from its own network (an IPv4 /24), or in all.
    #[test]
    fn a_retry_is_asked_only_once_handshakes_pile_up() {
        let ip = |c: u8, d: u8| IpAddr::V4(Ipv4Addr::new(10, 0, c, d));
        let mut open = BTreeMap::new();
        assert!(!needs_validation(&open, ip(1, 7)), "a quiet server saves the round trip");
        open.insert(network_of(ip(1, 0)), UNVALIDATED_PER_NETWORK - 1);
        assert!(!needs_validation(&open, ip(1, 7)));
        open.insert(network_of(ip(1, 0)), UNVALIDATED_PER_NETWORK);
        assert!(needs_validation(&open, ip(1, 200)), "its /24 has as many as it may");
        assert!(!needs_validation(&open, ip(2, 7)), "another network is not held to it");
        for c in 2..=((UNVALIDATED_TOTAL / (UNVALIDATED_PER_NETWORK - 1)) as u8 + 1) {
            open.insert(network_of(ip(c, 0)), UNVALIDATED_PER_NETWORK - 1);
        }
        assert!(needs_validation(&open, ip(250, 1)), "the server as a whole has as many as it may");
    }
}
