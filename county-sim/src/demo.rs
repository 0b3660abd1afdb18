//! `county-hub demo`: a whole county on one machine. The hub and every
//! township serve sync over real QUIC with mutual TLS on loopback, every
//! node has its own SQLite file, and the village clients are the same code
//! as `village-node sync`. A working day runs in phases, then every replica
//! is checked against the county for its scope.

use crate::linkemu::{LinkEmulator, LinkParams};
use anyhow::{bail, Context, Result};
use county_hub::hub::{self, SIMULATION_PASSPHRASE};
use node::keystore::{self, Kdf};
use node::ledger::Ledger;
use node::staff::Role;
use node::sync::{start_server, sync_with, Server, Summary};
use proto::workflow::State;
use proto::{NodeId, Step, Tier};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Options of one demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub data: PathBuf,
    pub cases_per_village: u64,
    pub rural: bool,
    pub exit: bool,
    pub json: bool,
    /// Use only the first N townships (and their villages); 0 for all.
    pub townships: usize,
    /// Use only the first N villages of each township; 0 for all.
    pub villages_per_township: usize,
    pub seed: u64,
}

struct Plan {
    hub: PathBuf,
    townships: Vec<NodeId>,
    villages: Vec<(NodeId, NodeId)>,
    root: PathBuf,
}

impl Plan {
    fn dir(&self, id: &NodeId) -> PathBuf {
        self.root.join(id.as_str())
    }
}

#[derive(Default)]
struct Totals {
    sessions: u64,
    bytes_sent: u64,
    bytes_received: u64,
    events_moved: u64,
    sync_seconds: f64,
    failed_attempts: u64,
}

impl Totals {
    fn add(&mut self, s: &Summary) {
        self.sessions += 1;
        self.bytes_sent += s.bytes_sent;
        self.bytes_received += s.bytes_received;
        self.events_moved += s.stats.sent_events + s.stats.received_events;
    }
}

struct Clock(Instant);

impl Clock {
    fn say(&self, quiet: bool, msg: impl std::fmt::Display) {
        if !quiet {
            eprintln!("[{:>7.1}s] {msg}", self.0.elapsed().as_secs_f64());
        }
    }
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The page cache of each SQLite connection in the demo, in KiB. The
/// process holds 321 nodes' stores, and every server keeps a few
/// connections open between sessions: at the field's sizes (2 MiB for a
/// village, 8 MiB for the county) they would add up to hundreds of MB. The
/// files are still read through the operating system's cache.
pub const DEMO_PAGE_CACHE_KIB: u32 = 256;

pub fn run(opts: DemoOptions) -> Result<()> {
    keystore::set_passphrase(SIMULATION_PASSPHRASE);
    node::store::cap_page_cache(DEMO_PAGE_CACHE_KIB);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: DemoOptions) -> Result<()> {
    let clock = Clock(Instant::now());
    let quiet = opts.json;
    let root = opts.data.clone();
    if root.join("hub").join(node::store::DB_FILE).exists() {
        bail!("{} already holds a demo county; remove it or pick another --data", root.display());
    }
    std::fs::create_dir_all(&root)?;
    let hub_dir = root.join("hub");
    block(|| hub::init_quiet(&hub_dir, None, None, "127.0.0.1:0", true, SIMULATION_PASSPHRASE, Kdf::SIMULATION))?;
    let plan = block(|| select(&hub_dir, &root, &opts))?;
    clock.say(
        quiet,
        format!(
            "county created in {}; enrolling {} townships and {} villages",
            root.display(),
            plan.townships.len(),
            plan.villages.len()
        ),
    );
    let all: Vec<NodeId> = plan.townships.iter().cloned().chain(plan.villages.iter().map(|(v, _)| v.clone())).collect();
    block(|| hub::enrol_into(&hub_dir, &all, &root, SIMULATION_PASSPHRASE, Kdf::SIMULATION))?;
    clock.say(quiet, format!("{} nodes enrolled, each with its own SQLite file", all.len() + 1));

    // Servers: the hub and every township, on loopback.
    let hub_server = start_server(&plan.hub, "127.0.0.1:0").await?;
    let mut township_servers: BTreeMap<NodeId, Server> = BTreeMap::new();
    for t in &plan.townships {
        township_servers.insert(t.clone(), start_server(&plan.dir(t), "127.0.0.1:0").await?);
    }
    clock.say(quiet, format!("hub serving on {}, {} township servers up", hub_server.addr, township_servers.len()));

    // Who goes where: most villages sync through their township, some
    // straight to the county; a fifth are offline for most of the day.
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut route: BTreeMap<NodeId, String> = BTreeMap::new();
    let mut offline: Vec<NodeId> = Vec::new();
    let mut links: Vec<LinkEmulator> = Vec::new();
    for (v, t) in &plan.villages {
        let target = if rng.gen_bool(0.1) { hub_server.addr } else { township_servers[t].addr };
        let addr = if opts.rural {
            let link = LinkEmulator::start("127.0.0.1:0".parse()?, target, LinkParams::rural(), rng.gen()).await?;
            let a = link.local_addr;
            links.push(link);
            a
        } else {
            target
        };
        route.insert(v.clone(), addr.to_string());
        if rng.gen_bool(0.2) {
            offline.push(v.clone());
        }
    }
    let hub_addr = hub_server.addr.to_string();

    // Morning: intake at every window.
    let generated = intake(&plan, &opts, &clock, quiet).await?;
    let mut totals = Totals::default();
    let sync_started = Instant::now();

    // Late morning: online villages sync up; townships pass up to the county.
    let online: Vec<NodeId> = plan.villages.iter().map(|(v, _)| v.clone()).filter(|v| !offline.contains(v)).collect();
    sync_many(&plan, &online, &route, &mut totals, &links, &mut rng).await?;
    sync_townships(&plan, &hub_addr, &mut totals).await?;
    clock.say(
        quiet,
        format!(
            "{} online villages and {} townships synced up ({} sessions so far)",
            online.len(),
            plan.townships.len(),
            totals.sessions
        ),
    );

    // Afternoon: township and county desks decide what reached them.
    let mut decided = 0;
    for t in &plan.townships {
        decided += block(|| desk(&plan.dir(t), "镇审批窗口", opts.seed))?;
    }
    decided += block(|| desk(&plan.hub, "县审批科", opts.seed))?;
    clock.say(quiet, format!("township and county desks decided {decided} cases"));

    // Evening: decisions flow down; offline villages come back online.
    sync_townships(&plan, &hub_addr, &mut totals).await?;
    let villages: Vec<NodeId> = plan.villages.iter().map(|(v, _)| v.clone()).collect();
    sync_many(&plan, &villages, &route, &mut totals, &links, &mut rng).await?;
    let mut closed = 0;
    for v in villages.iter().chain(&plan.townships) {
        closed += block(|| wrap_up(&plan.dir(v), "村代办员", opts.seed))?;
    }
    clock.say(quiet, format!("villages told citizens their results: {closed} cases issued and closed"));

    // Until nothing moves: every replica converges.
    let mut rounds = 0;
    loop {
        rounds += 1;
        let before = totals.events_moved;
        sync_many(&plan, &villages, &route, &mut totals, &links, &mut rng).await?;
        sync_townships(&plan, &hub_addr, &mut totals).await?;
        sync_many(&plan, &villages, &route, &mut totals, &links, &mut rng).await?;
        if totals.events_moved == before || rounds >= 6 {
            break;
        }
    }
    totals.sync_seconds = sync_started.elapsed().as_secs_f64();
    clock.say(quiet, format!("converged after {rounds} final rounds; checking every replica against the county"));

    let (converged, disagreements) = block(|| check(&plan))?;
    let hub_ledger = block(|| Ledger::open(&plan.hub))?;
    let digest = block(|| hub_ledger.digest(None))?;
    let states = block(|| state_counts(&hub_ledger))?;
    if !quiet {
        print_report(&hub_ledger, &states, &totals, &generated, rounds)?;
        if !disagreements.is_empty() {
            eprintln!("replicas that disagree with the county: {disagreements:?}");
        }
    }
    let summary = serde_json::json!({
        "converged": converged,
        "nodes": 1 + plan.townships.len() + plan.villages.len(),
        "cases": digest.cases,
        "events": digest.events,
        "sync_seconds": totals.sync_seconds,
        "seconds": clock.0.elapsed().as_secs_f64(),
        "bytes_sent": totals.bytes_sent,
        "bytes_received": totals.bytes_received,
        "sessions": totals.sessions,
        "failed_attempts": totals.failed_attempts,
        "link": if opts.rural { "rural" } else { "none" },
        "states": states,
        "digest": digest.digest,
        "process": process_report(&hub_ledger)?,
    });
    if quiet {
        println!("{summary}");
    } else {
        println!(
            "{} nodes, {} cases, {} events; every replica {} the county for its scope",
            1 + plan.townships.len() + plan.villages.len(),
            digest.cases,
            digest.events,
            if converged { "agrees with" } else { "does NOT agree with" }
        );
    }
    if !converged {
        bail!("{} replicas disagree with the county", disagreements.len());
    }
    if !opts.exit {
        let desks = serve_desks(&plan, &township_servers).await?;
        println!();
        println!("== the desks (open them in a browser on this machine) ==");
        for (who, url, login) in desks.iter().map(|(w, d, l)| (w, d.url(), l)) {
            println!("  {who:<28} {url}/   login {login}   password {DEMO_PASSWORD}");
        }
        println!("servers stay up (hub {}); press Ctrl-C to stop. Data in {}", hub_server.addr, root.display());
        tokio::signal::ctrl_c().await?;
    }
    drop(township_servers);
    drop(hub_server);
    Ok(())
}

/// How the process ran: its peak resident memory (the whole county in one
/// process), the page cache of the county's store as opened, and the
/// allocator settings it ran under (see `node::cli::bounded_allocator`).
fn process_report(hub: &Ledger) -> Result<serde_json::Value> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib: Option<u64> = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    let allocator: BTreeMap<&str, Option<String>> =
        node::cli::ALLOCATOR_ENV.iter().map(|(k, _)| (*k, std::env::var(k).ok())).collect();
    Ok(serde_json::json!({
        "peak_rss_mib": peak_kib.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
        "page_cache_kib": hub.store().page_cache()?,
        "allocator": allocator,
    }))
}

fn select(hub_dir: &Path, root: &Path, opts: &DemoOptions) -> Result<Plan> {
    let ledger = Ledger::open(hub_dir)?;
    let topo = ledger.topology();
    let county = topo.county().id.clone();
    let mut townships: Vec<NodeId> = topo.children(&county).map(|n| n.id.clone()).collect();
    if opts.townships > 0 {
        townships.truncate(opts.townships);
    }
    let mut villages = Vec::new();
    for t in &townships {
        let mut vs: Vec<NodeId> = topo.children(t).filter(|n| n.tier == Tier::Village).map(|n| n.id.clone()).collect();
        if opts.villages_per_township > 0 {
            vs.truncate(opts.villages_per_township);
        }
        villages.extend(vs.into_iter().map(|v| (v, t.clone())));
    }
    Ok(Plan { hub: hub_dir.to_path_buf(), townships, villages, root: root.to_path_buf() })
}

#[derive(Default, serde::Serialize)]
struct Generated {
    cases: u64,
    events: u64,
}

async fn intake(plan: &Plan, opts: &DemoOptions, clock: &Clock, quiet: bool) -> Result<Generated> {
    let mut set = JoinSet::new();
    let nodes: Vec<(PathBuf, u64, u64)> = plan
        .villages
        .iter()
        .enumerate()
        .map(|(i, (v, _))| (plan.dir(v), opts.cases_per_village, opts.seed.wrapping_mul(1000) + i as u64))
        .chain(
            plan.townships
                .iter()
                .enumerate()
                .map(|(i, t)| (plan.dir(t), opts.cases_per_village / 2, opts.seed.wrapping_mul(7777) + i as u64)),
        )
        .collect();
    let total = nodes.len();
    for chunk in nodes.chunks(total.div_ceil(2).max(1)) {
        let chunk = chunk.to_vec();
        set.spawn_blocking(move || -> Result<Generated> {
            let mut g = Generated::default();
            for (dir, count, seed) in chunk {
                let mut ledger = Ledger::open(&dir)?;
                let out = crate::workload::generate(&mut ledger, count, seed, "窗口人员")?;
                g.cases += out.cases;
                g.events += out.events;
            }
            Ok(g)
        });
    }
    let mut g = Generated::default();
    while let Some(r) = set.join_next().await {
        let part = r??;
        g.cases += part.cases;
        g.events += part.events;
    }
    clock.say(
        quiet,
        format!("intake: {} cases, {} events at {total} windows (offline, local SQLite)", g.cases, g.events),
    );
    Ok(g)
}

async fn sync_retry(dir: PathBuf, addr: String, attempts: u32) -> (Result<Summary>, u64) {
    let mut failures = 0;
    loop {
        match sync_with(&dir, &addr, false).await {
            Ok(s) => return (Ok(s), failures),
            Err(e) => {
                failures += 1;
                if failures >= u64::from(attempts) {
                    return (Err(e.into()), failures);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn sync_many(
    plan: &Plan,
    villages: &[NodeId],
    route: &BTreeMap<NodeId, String>,
    totals: &mut Totals,
    links: &[LinkEmulator],
    rng: &mut StdRng,
) -> Result<()> {
    // With emulated links, a few villages lose their link for a moment.
    if !links.is_empty() {
        for link in links.iter().filter(|_| rng.gen_bool(0.05)) {
            link.set_cut(true);
        }
    }
    let permits = Arc::new(Semaphore::new(24));
    let mut set = JoinSet::new();
    for v in villages {
        let (dir, addr, permits) = (plan.dir(v), route[v].clone(), permits.clone());
        set.spawn(async move {
            let _p = permits.acquire_owned().await.expect("semaphore open");
            sync_retry(dir, addr, 6).await
        });
    }
    if !links.is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for link in links {
            link.set_cut(false);
        }
    }
    while let Some(r) = set.join_next().await {
        let (summary, failures) = r?;
        totals.failed_attempts += failures;
        totals.add(&summary.context("a village could not sync after several attempts")?);
    }
    Ok(())
}

async fn sync_townships(plan: &Plan, hub: &str, totals: &mut Totals) -> Result<()> {
    let mut set = JoinSet::new();
    for t in &plan.townships {
        set.spawn(sync_retry(plan.dir(t), hub.to_string(), 4));
    }
    while let Some(r) = set.join_next().await {
        let (summary, failures) = r?;
        totals.failed_attempts += failures;
        totals.add(&summary.context("a township could not sync with the county")?);
    }
    Ok(())
}

/// A deciding desk: accepts and decides every case forwarded to it, and the
/// cases its own window took and pre-reviewed.
fn desk(dir: &Path, actor: &str, seed: u64) -> Result<u64> {
    let mut ledger = Ledger::open(dir)?;
    let me = ledger.me().clone();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xd35c);
    let mut n = 0;
    for c in ledger.cases(None, None)? {
        let mine = c.handler == me && c.decided_by() == Some(ledger.identity().tier());
        if !mine || !matches!(c.state, State::Forwarded | State::PreReviewed) {
            continue;
        }
        ledger.step(actor, &c.case_id, Step::Accept, "")?;
        if rng.gen_bool(0.05) {
            ledger.step(actor, &c.case_id, Step::Suspend, "现场核查")?;
        } else {
            let step = if rng.gen_bool(0.92) { Step::Approve } else { Step::Deny };
            ledger.step(actor, &c.case_id, step, "")?;
        }
        n += 1;
    }
    Ok(n)
}

/// A window tells citizens the results of the cases it took: issues and
/// closes decided cases and records ratings.
fn wrap_up(dir: &Path, actor: &str, seed: u64) -> Result<u64> {
    let mut ledger = Ledger::open(dir)?;
    let me = ledger.me().clone();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x3a7e);
    let mut n = 0;
    for c in ledger.cases(None, None)? {
        if c.home != me || !matches!(c.state, State::Approved | State::Denied) {
            continue;
        }
        ledger.step(actor, &c.case_id, Step::Issue, "")?;
        ledger.step(actor, &c.case_id, Step::Close, "")?;
        if rng.gen_bool(0.7) {
            ledger.rate(actor, &c.case_id, rng.gen_range(1..=5), None, "", "")?;
        }
        n += 1;
    }
    Ok(n)
}

/// Every node's cases, for its scope, against the county's.
fn check(plan: &Plan) -> Result<(bool, Vec<String>)> {
    let hub = Ledger::open(&plan.hub)?;
    let mut bad = Vec::new();
    let nodes = plan.townships.iter().chain(plan.villages.iter().map(|(v, _)| v));
    for n in nodes {
        let ledger = Ledger::open(&plan.dir(n))?;
        let mine = ledger.digest_within(n)?;
        let county = hub.digest_within(n)?;
        let held = ledger.digest(None)?;
        if mine != county || held.cases != mine.cases {
            bad.push(n.to_string());
        }
    }
    Ok((bad.is_empty(), bad))
}

fn state_counts(ledger: &Ledger) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for c in ledger.cases(None, None)? {
        *counts.entry(c.state.name().to_string()).or_insert(0) += 1;
    }
    Ok(counts)
}

fn print_report(
    hub: &Ledger,
    states: &BTreeMap<String, u64>,
    totals: &Totals,
    generated: &Generated,
    rounds: u32,
) -> Result<()> {
    println!();
    println!("== merged ledger at the county hub ({}) ==", hub.me());
    let d = hub.digest(None)?;
    println!("cases {}   events {}   digest {}", d.cases, d.events, &d.digest[..16]);
    println!("cases by state:");
    for (s, n) in states {
        println!("  {s:<22} {n:>6}");
    }
    let cases = hub.cases(None, None)?;
    let flagged = cases.iter().filter(|c| c.flagged()).count();
    let ratings: Vec<u8> = cases.iter().flat_map(|c| c.ratings.iter().map(|r| r.level)).collect();
    let poor = ratings.iter().filter(|&&l| l >= 4).count();
    println!("needing attention (conflicts, superseded steps): {flagged}");
    println!("ratings: {} recorded, {} 不满意/非常不满意 to follow up within 15 working days", ratings.len(), poor);
    let mut by_township: BTreeMap<String, u64> = BTreeMap::new();
    for c in &cases {
        let t = hub
            .topology()
            .ancestor_at(&c.home, Tier::Township)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| "县中心".into());
        *by_township.entry(t).or_insert(0) += 1;
    }
    println!("busiest centres:");
    let mut busiest: Vec<_> = by_township.into_iter().collect();
    busiest.sort_by_key(|b| std::cmp::Reverse(b.1));
    for (t, n) in busiest.iter().take(5) {
        println!("  {t:<24} {n:>5} cases");
    }
    println!(
        "sync: {} sessions, {} events moved, {} bytes sent by clients, {} received, {} retried attempts, {} final rounds, {:.1} s",
        totals.sessions, totals.events_moved, totals.bytes_sent, totals.bytes_received, totals.failed_attempts, rounds,
        totals.sync_seconds
    );
    println!("intake: {} cases and {} events taken offline", generated.cases, generated.events);
    println!("(`county-hub ledger --data <dir>/hub --json` prints every event)");
    Ok(())
}

/// Every demo login's password (printed with the desks' addresses).
pub const DEMO_PASSWORD: &str = "demo-desk-2026";

/// Serves the county desk, the first township's desk and the desk of one
/// of its villages (syncing with it), with a demo member at each:
/// `(who, desk, login)`.
async fn serve_desks(
    plan: &Plan,
    township_servers: &BTreeMap<NodeId, Server>,
) -> Result<Vec<(String, desk::Desk, &'static str)>> {
    let Some(township) = plan.townships.first() else { return Ok(Vec::new()) };
    let village = plan.villages.iter().find(|(_, t)| t == township).map(|(v, _)| v.clone());
    let mut wanted = vec![(plan.hub.clone(), "admin", "陈静", Role::Admin, None, 8080u16)];
    wanted.push((plan.dir(township), "lina", "李娜", Role::Reviewer, None, 8081));
    if let Some(v) = &village {
        wanted.push((
            plan.dir(v),
            "wangfang",
            "王芳",
            Role::Admin,
            Some(township_servers[township].addr.to_string()),
            8082,
        ));
    }
    let mut out = Vec::new();
    for (dir, login, name, role, upstream, port) in wanted {
        block(|| {
            let ledger = node::Ledger::open(&dir)?;
            if node::staff::get(ledger.store().conn(), login)?.is_none() {
                node::staff::add(ledger.store().conn(), login, name, role, DEMO_PASSWORD, node::wall_clock_ms())?;
            }
            anyhow::Ok(())
        })?;
        let mut options = desk::Options {
            dir: dir.clone(),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            insecure_http: false,
            sync_every: upstream.as_ref().map(|_| Duration::from_secs(60)),
            upstream,
        };
        // A port in use: any free one.
        let started = match desk::start(options.clone()).await {
            Ok(d) => d,
            Err(_) => {
                options.listen.set_port(0);
                desk::start(options).await?
            }
        };
        let who = format!("{} ({})", started.app.name(), started.app.me());
        out.push((who, started, login));
    }
    Ok(out)
}
