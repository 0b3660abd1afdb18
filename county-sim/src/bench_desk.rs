//! `county-sim bench-desk`: server time of the desk pages, on a village
//! with 10 000 cases and on the county hub with 1.5 M cases (issue 7's
//! speed clause: under 50 ms at the village, under 100 ms for the county
//! ledger, filtered).
//!
//! Setup (kept in `--data` and reused by later runs):
//! - `village/`: a county with one enrolled village whose cases are taken
//!   through the real `Ledger::new_case` and moved along as
//!   `county-sim generate` does (SQLite `synchronous=OFF` while generating:
//!   the benchmark measures reads, not the setup's fsyncs);
//! - `county/`: a county hub fed generated, sealed village chains through
//!   its real receive path, as `bench-ingest` does, with cases spread over
//!   the year, the items, the villages, names and end states.
//!
//! Each desk is then served in-process on loopback ([`desk::start`]); a
//! small HTTP/1.1 client logs in like a browser and requests each page
//! `--requests` times after `--warmup` untimed requests, one at a time on
//! one keep-alive connection. Server time is from the request written to
//! the last byte of the response read.

use crate::workload;
use anyhow::{bail, ensure, Context, Result};
use county_hub::hub::{self, SIMULATION_PASSPHRASE};
use crdts::{CmRDT, Dot, VClock};
use ed25519_dalek::SigningKey;
use node::keystore::{self, Kdf};
use node::ledger::{Ledger, NewCase};
use node::staff::Role;
use proto::event::{Create, FieldValue, Lane, Seal};
use proto::sync::Segment;
use proto::{Body, CaseId, Event, EventId, Hash, Hlc, NodeId, Step, Tier, Topology};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The staff member the benchmark logs in as, at every desk.
const LOGIN: &str = "bench";
const STAFF_NAME: &str = "基准测试";
const PASSWORD: &str = "bench desk password";
/// What a setup records, so a later run reuses it.
const SETUP_FILE: &str = "setup.json";
const YEAR_MS: u64 = 365 * 86_400_000;
/// A name no generated applicant has (generated names are one of 225
/// pairs, see `workload::name`): a search for one person, who has few
/// cases or none, so a list in date order finds nothing to stop at.
const RARE_NAME: &str = "欧阳修";
/// Issue 7's targets.
const VILLAGE_TARGET_MS: f64 = 50.0;
const COUNTY_TARGET_MS: f64 = 100.0;

/// Options of one run.
#[derive(Debug, Clone)]
pub struct Options {
    pub data: PathBuf,
    pub village_cases: u64,
    /// 0: no county part.
    pub county_cases: u64,
    pub requests: usize,
    pub warmup: usize,
    /// Stop timing a page after this long (a slow page then reports fewer
    /// requests).
    pub page_budget: Duration,
    /// Only the pages whose label contains this.
    pub only: Option<String>,
    /// Where the Markdown table is written (none: printed only).
    pub out: Option<PathBuf>,
    pub seed: u64,
}

/// The village's setup, as recorded in `village/setup.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VillageSetup {
    village: String,
    cases: u64,
    events: u64,
    seconds: f64,
    /// A case moved along (several events): its page, its ID number and its
    /// applicant's name are searched.
    sample_case: String,
    sample_id_number: String,
    sample_name: String,
}

/// The county's setup, as recorded in `county/setup.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CountySetup {
    cases: u64,
    events: u64,
    /// Whole setup: county, enrolment, generation and ingest.
    seconds: f64,
    /// The hub's receive path alone.
    ingest_seconds: f64,
    /// Cases were created between these (ms since the epoch).
    from_ms: u64,
    to_ms: u64,
}

pub fn run(opts: Options) -> Result<()> {
    keystore::set_passphrase(SIMULATION_PASSPHRASE);
    ensure!(opts.requests > 0, "--requests must be at least 1");
    ensure!(opts.village_cases > 0, "--village-cases must be at least 1");
    std::fs::create_dir_all(&opts.data).with_context(|| format!("cannot create {}", opts.data.display()))?;
    let (village, village_reused) = village_setup(&opts.data.join("village"), opts.village_cases, opts.seed)?;
    let county = if opts.county_cases > 0 {
        Some(county_setup(&opts.data.join("county"), opts.county_cases, opts.seed)?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let village_dir = opts.data.join("village").join(&village.village);
    let village_pages = village_pages(&village);
    let village_results = measure(&rt, &village_dir, &village_pages, &opts, VILLAGE_TARGET_MS)?;
    let county_results = match &county {
        Some((setup, _)) => {
            let dir = opts.data.join("county").join("hub");
            let pages = county_pages(&dir, setup)?;
            Some(measure(&rt, &dir, &pages, &opts, COUNTY_TARGET_MS)?)
        }
        None => None,
    };
    let md = report(&opts, (&village, village_reused), &village_results, county.as_ref(), county_results.as_deref());
    println!("{md}");
    if let Some(out) = &opts.out {
        std::fs::create_dir_all(out)?;
        let path = out.join(format!("desk-{}.md", stamp()));
        std::fs::write(&path, &md).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("bench-desk: wrote {}", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------- setup

/// Reads a finished setup, or `None` when there is none yet; refuses a
/// half-made one or one of another size.
fn reuse<T: for<'de> Deserialize<'de>>(
    root: &Path,
    size: impl Fn(&T) -> u64,
    want: u64,
    flag: &str,
) -> Result<Option<T>> {
    let file = root.join(SETUP_FILE);
    if file.exists() {
        let setup: T = serde_json::from_slice(&std::fs::read(&file)?)
            .with_context(|| format!("{} is damaged; remove {}", file.display(), root.display()))?;
        let have = size(&setup);
        ensure!(
            have == want,
            "{} holds {have} cases, not {want}: pass {flag} {have}, another --data, or remove {}",
            root.display(),
            root.display()
        );
        return Ok(Some(setup));
    }
    if root.exists() {
        bail!("{} holds an unfinished setup (no {SETUP_FILE}); remove it and run again", root.display());
    }
    Ok(None)
}

fn add_staff(ledger: &Ledger) -> Result<()> {
    node::staff::add(ledger.store().conn(), LOGIN, STAFF_NAME, Role::Reviewer, PASSWORD, node::wall_clock_ms())?;
    Ok(())
}

fn village_setup(root: &Path, cases: u64, seed: u64) -> Result<(VillageSetup, bool)> {
    if let Some(s) = reuse::<VillageSetup>(root, |s| s.cases, cases, "--village-cases")? {
        eprintln!("bench-desk: reusing the village of {} cases in {}", s.cases, root.display());
        return Ok((s, true));
    }
    let started = Instant::now();
    std::fs::create_dir_all(root)?;
    let hub_dir = root.join("hub");
    hub::init_quiet(&hub_dir, None, None, "127.0.0.1:0", true, SIMULATION_PASSPHRASE, Kdf::SIMULATION)?;
    let village = first_village(Ledger::open(&hub_dir)?.topology())?;
    hub::enrol_into(&hub_dir, std::slice::from_ref(&village), root, SIMULATION_PASSPHRASE, Kdf::SIMULATION)?;
    let mut ledger = Ledger::open(&root.join(village.as_str()))?;
    // Setup only: the benchmark measures reads, not these fsyncs.
    ledger.store().conn().execute_batch("PRAGMA synchronous=OFF")?;
    add_staff(&ledger)?;
    let actor = format!("{STAFF_NAME}({LOGIN})");
    let items: Vec<(String, bool, Vec<String>)> = ledger
        .catalogue()
        .items
        .iter()
        .filter(|i| i.accepted_at.contains(&Tier::Village))
        .map(|i| {
            let required = i.materials.iter().filter(|m| m.required).map(|m| m.name.clone()).collect();
            (i.code.clone(), i.decided_by == Tier::Village, required)
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut events, mut sample) = (0u64, None);
    for i in 0..cases {
        let (item, decide_here, materials) = items[rng.gen_range(0..items.len())].clone();
        let (applicant, id_number) = (workload::name(&mut rng), workload::id_number(&mut rng));
        let case = ledger.new_case(
            &actor,
            NewCase {
                item,
                applicant: applicant.clone(),
                id_number: id_number.clone(),
                phone: Some(format!("1{}{:09}", rng.gen_range(3..10), rng.gen_range(0..1_000_000_000u64))),
                address: None,
                materials,
                bundle: None,
                agent: None,
            },
        )?;
        events += 1;
        // Most cases move on; the rest wait at the window (收件).
        if rng.gen_bool(0.85) {
            let n = workload::advance(&mut ledger, &case, decide_here, &mut rng, &actor)?;
            events += n;
            if sample.is_none() && i >= cases / 2 && n >= 3 {
                sample = Some((case.0.clone(), id_number, applicant));
            }
        }
        if (i + 1) % 1000 == 0 {
            eprintln!("bench-desk: village {}: {} cases, {events} events, {:.0} s", village, i + 1, secs(started));
        }
    }
    let (sample_case, sample_id_number, sample_name) = match sample {
        Some(s) => s,
        None => bail!("no case was moved along; take more cases (--village-cases)"),
    };
    drop(ledger);
    let setup = VillageSetup {
        village: village.0.clone(),
        cases,
        events,
        seconds: secs(started),
        sample_case,
        sample_id_number,
        sample_name,
    };
    std::fs::write(root.join(SETUP_FILE), serde_json::to_vec_pretty(&setup)?)?;
    eprintln!("bench-desk: village {village}: {cases} cases, {events} events taken in {:.1} s", setup.seconds);
    Ok((setup, false))
}

fn first_village(topology: &Topology) -> Result<NodeId> {
    topology.nodes().iter().find(|n| n.tier == Tier::Village).map(|n| n.id.clone()).context("no village")
}

/// One village's chain being built: sealed segments of about 2000 events.
struct Chain<'a> {
    origin: &'a NodeId,
    lane: Lane,
    key: &'a SigningKey,
    seq: u64,
    prev: Hash,
    current: Vec<Event>,
    segments: Vec<Segment>,
}

impl Chain<'_> {
    fn push(&mut self, case: &CaseId, context: &mut VClock<NodeId>, wall_ms: u64, body: Body) {
        self.seq += 1;
        let e = Event {
            id: EventId { origin: self.origin.clone(), seq: self.seq },
            lane: self.lane.clone(),
            pos: self.seq,
            prev: self.prev,
            hlc: Hlc { wall_ms, logical: 0 },
            actor: "村代办员".into(),
            case: case.clone(),
            context: context.clone(),
            body,
        };
        context.apply(Dot::new(self.origin.clone(), self.seq));
        self.prev = e.hash();
        self.current.push(e);
    }

    fn seal(&mut self) {
        if let Some(last) = self.current.last() {
            let seal = Seal::sign(self.key, last);
            self.segments.push(Segment { events: std::mem::take(&mut self.current), seal });
        }
    }
}

/// A village's year: `cases` cases spread over [t0, t0 + YEAR_MS), items
/// and names drawn at random, each taken to one of several ends: waiting
/// at the window, withdrawn, sent back for more papers, decided and closed
/// here (items the village decides), or forwarded to the deciding node.
#[allow(clippy::too_many_arguments)]
fn village_year(
    village: &NodeId,
    topology: &Topology,
    key: &SigningKey,
    items: &[proto::Item],
    catalogue_version: u32,
    cases: u64,
    t0: u64,
    rng: &mut StdRng,
) -> Result<Vec<Segment>> {
    let mut chain = Chain {
        origin: village,
        lane: Lane::Home(village.clone()),
        key,
        seq: 0,
        prev: Hash::ZERO,
        current: Vec::new(),
        segments: Vec::new(),
    };
    let spacing = YEAR_MS / cases.max(1);
    let step = |s: Step| Body::Step { step: s, note: String::new() };
    for c in 0..cases {
        let item = &items[rng.gen_range(0..items.len())];
        let case = CaseId::mint(village, chain.seq + 1);
        let mut bodies = vec![Body::Create(Create {
            item: item.code.clone(),
            item_name: item.name.clone(),
            catalogue_version,
            accepted_at: item.accepted_at.clone(),
            decided_by: item.decided_by,
            promised_days: item.promised_limit_days,
            fields: vec![("applicant".into(), FieldValue::Text(workload::name(rng)))],
            materials: vec!["居民身份证".into()],
        })];
        let roll: f64 = rng.gen();
        if roll < 0.10 {
            // 收件: waits at the window.
        } else if roll < 0.15 {
            bodies.push(step(Step::Withdraw));
        } else if roll < 0.22 {
            bodies.push(step(Step::PrereviewReturn));
        } else if item.decided_by == Tier::Village {
            bodies.push(step(Step::PrereviewPass));
            bodies.push(step(Step::Accept));
            bodies.push(step(if rng.gen_bool(0.9) { Step::Approve } else { Step::Deny }));
            bodies.push(step(Step::Issue));
            bodies.push(step(Step::Close));
        } else {
            let to = proto::auth::deciding_node(topology, village, item.decided_by)
                .with_context(|| format!("no deciding node for {} at {village}", item.code))?;
            bodies.push(step(Step::PrereviewPass));
            bodies.push(step(Step::Forward { to: to.clone() }));
        }
        // A minute between a case's steps, cases hours apart.
        let start = t0 + c * spacing + rng.gen_range(0..spacing / 2 + 1);
        let mut context = VClock::new();
        for (k, body) in bodies.into_iter().enumerate() {
            chain.push(&case, &mut context, start + k as u64 * 60_000, body);
        }
        if chain.current.len() >= 2000 {
            chain.seal();
        }
    }
    chain.seal();
    Ok(chain.segments)
}

fn county_setup(root: &Path, cases: u64, seed: u64) -> Result<(CountySetup, bool)> {
    if let Some(s) = reuse::<CountySetup>(root, |s| s.cases, cases, "--county-cases")? {
        eprintln!("bench-desk: reusing the county of {} cases in {}", s.cases, root.display());
        return Ok((s, true));
    }
    let started = Instant::now();
    std::fs::create_dir_all(root)?;
    let hub_dir = root.join("hub");
    hub::init_quiet(&hub_dir, None, None, "127.0.0.1:0", true, SIMULATION_PASSPHRASE, Kdf::SIMULATION)?;
    let village_ids: Vec<NodeId> = Ledger::open(&hub_dir)?
        .topology()
        .nodes()
        .iter()
        .filter(|n| n.tier == Tier::Village)
        .map(|n| n.id.clone())
        .collect();
    let keys = hub::enrol_for_benchmark(&hub_dir, &village_ids)?;
    let mut ledger = Ledger::open(&hub_dir)?;
    add_staff(&ledger)?;
    let topology = ledger.topology().clone();
    let catalogue = ledger.catalogue().clone();
    let items: Vec<proto::Item> =
        catalogue.items.iter().filter(|i| i.accepted_at.contains(&Tier::Village)).cloned().collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let now = node::wall_clock_ms();
    let t0 = now.saturating_sub(YEAR_MS);
    let per_village = cases.div_ceil(village_ids.len() as u64);
    let (mut ingest, mut events, mut done) = (Duration::ZERO, 0u64, 0u64);
    for (i, village) in village_ids.iter().enumerate() {
        let n = per_village.min(cases - done);
        if n == 0 {
            break;
        }
        let key = keys.get(village).context("no key")?;
        let segments = village_year(village, &topology, key, &items, catalogue.version, n, t0, &mut rng)?;
        events += segments.iter().map(|s| s.events.len() as u64).sum::<u64>();
        let at = Instant::now();
        for seg in segments {
            let verdict = ledger.receive(village, vec![seg], now)?;
            ensure!(verdict.quarantined.is_empty(), "generated events were refused: {:?}", verdict.quarantined.first());
        }
        ingest += at.elapsed();
        done += n;
        if (i + 1) % 20 == 0 {
            eprintln!(
                "bench-desk: county: {done} cases, {events} events; {:.0} s ({:.0} events/s through receive)",
                secs(started),
                events as f64 / ingest.as_secs_f64()
            );
        }
    }
    drop(ledger);
    let setup = CountySetup {
        cases: done,
        events,
        seconds: secs(started),
        ingest_seconds: ingest.as_secs_f64(),
        from_ms: t0,
        to_ms: now,
    };
    std::fs::write(root.join(SETUP_FILE), serde_json::to_vec_pretty(&setup)?)?;
    eprintln!("bench-desk: county: {done} cases, {events} events in {:.1} s", setup.seconds);
    Ok((setup, false))
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------- pages

/// A page to time: what the table calls it and its path (query unencoded).
struct PageSpec {
    label: &'static str,
    path: String,
    /// At most this many requests in all (a search by full ID number is
    /// limited per member: `desk::ID_SEARCHES` in ten minutes).
    max: Option<usize>,
}

fn page(label: &'static str, path: impl Into<String>) -> PageSpec {
    PageSpec { label, path: path.into(), max: None }
}

fn limited(label: &'static str, path: impl Into<String>, max: usize) -> PageSpec {
    PageSpec { label, path: path.into(), max: Some(max) }
}

fn village_pages(v: &VillageSetup) -> Vec<PageSpec> {
    vec![
        page("queue", "/queue"),
        page("queue, state", "/queue?state=received"),
        page("queue, name search", format!("/queue?q={}", v.sample_name)),
        page("queue, name no case has", format!("/queue?q={RARE_NAME}")),
        limited("queue, ID number search", format!("/queue?q={}", v.sample_id_number), desk::ID_SEARCHES),
        page("case", format!("/case/{}", v.sample_case)),
        page("intake, pick the item", "/intake"),
        page("intake, form", "/intake?item=V001"),
    ]
}

fn county_pages(hub_dir: &Path, setup: &CountySetup) -> Result<Vec<PageSpec>> {
    // Filter values and a cursor halfway down the ledger, read beforehand.
    let conn = rusqlite::Connection::open_with_flags(
        hub_dir.join(node::store::DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let topology = Ledger::open(hub_dir)?.topology().clone();
    let village = first_village(&topology)?;
    let township = topology.get(&village).and_then(|v| v.parent.clone()).context("a village has a township")?;
    let deep = |filter: &str, args: &[&dyn rusqlite::ToSql], offset: i64| -> Result<String> {
        let sql = format!(
            "SELECT updated_wall, case_id FROM cases {filter} ORDER BY updated_wall DESC, case_id DESC LIMIT 1 OFFSET {offset}"
        );
        let (ms, id): (i64, String) = conn.query_row(&sql, args, |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(node::query::Cursor { updated_ms: ms as u64, case_id: id }.encode())
    };
    let middle = deep("", &[], (setup.cases / 2) as i64)?;
    let homes: Vec<String> =
        std::iter::once(township.0.clone()).chain(topology.children(&township).map(|n| n.id.0.clone())).collect();
    let marks = vec!["?"; homes.len()].join(",");
    let args: Vec<&dyn rusqlite::ToSql> = homes.iter().map(|h| h as &dyn rusqlite::ToSql).collect();
    let in_township: i64 =
        conn.query_row(&format!("SELECT COUNT(*) FROM cases WHERE home IN ({marks})"), args.as_slice(), |r| r.get(0))?;
    let township_deep = deep(&format!("WHERE home IN ({marks})"), args.as_slice(), in_township / 3)?;
    // A month, three months back.
    let to_ms = setup.to_ms.saturating_sub(90 * 86_400_000);
    let (from, to) = (desk::day(to_ms.saturating_sub(30 * 86_400_000)), desk::day(to_ms));
    Ok(vec![
        page("ledger", "/ledger"),
        page("ledger, township and state", format!("/ledger?township={township}&state=received")),
        page("ledger, village", format!("/ledger?village={village}")),
        page("ledger, item and a month", format!("/ledger?item=V005&from={from}&to={to}")),
        page("ledger, deep page (after)", format!("/ledger?after={middle}")),
        page("ledger, township, deep page", format!("/ledger?township={township}&after={township_deep}")),
        page("ledger, name search", "/ledger?q=张伟"),
        page("ledger, name no case has", format!("/ledger?q={RARE_NAME}")),
        page("ledger, surname alone", "/ledger?q=张"),
        page("dashboard", "/dashboard"),
        // Not in issue 7's list: the county's own work queue.
        page("queue (county)", "/queue"),
    ])
}

/// What one page took.
struct Timed {
    label: &'static str,
    path: String,
    /// Cases listed on a list page (links to a case).
    rows: Option<usize>,
    /// The count the page shows, as shown ("100000+" when capped).
    total: Option<String>,
    bytes: usize,
    /// Timed requests.
    n: usize,
    median_ms: f64,
    p95_ms: f64,
    target_ms: f64,
}

fn measure(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    pages: &[PageSpec],
    opts: &Options,
    target_ms: f64,
) -> Result<Vec<Timed>> {
    let started = Instant::now();
    let desk = rt.block_on(desk::start(desk::Options {
        dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        insecure_http: false,
        upstream: None,
        sync_every: None,
    }))?;
    let node = desk.app.me().clone();
    eprintln!("bench-desk: desk of {node} at {} (opened in {:.1} s)", desk.url(), secs(started));
    let mut client = Client::new(desk.addr);
    client.log_in(&node)?;
    let mut out = Vec::new();
    for p in pages.iter().filter(|p| opts.only.as_deref().is_none_or(|o| p.label.contains(o))) {
        let path = encode_path(&p.path);
        let first = client.get(&path)?;
        ensure!(first.status == 200, "GET {} answered {}: {}", p.path, first.status, first.text());
        let body = first.text();
        let budget = Instant::now();
        let (warmup, requests) = match p.max {
            Some(max) => (1, opts.requests.min(max.saturating_sub(1))),
            None => (opts.warmup, opts.requests),
        };
        for _ in 1..warmup {
            client.get(&path)?;
        }
        let mut times = Vec::with_capacity(requests);
        for _ in 0..requests {
            if budget.elapsed() > opts.page_budget && times.len() >= 10 {
                break;
            }
            let at = Instant::now();
            let r = client.get(&path)?;
            times.push(at.elapsed());
            ensure!(r.status == 200, "GET {} answered {}", p.path, r.status);
        }
        times.sort();
        let list = p.path.starts_with("/queue") || p.path.starts_with("/ledger");
        let t = Timed {
            label: p.label,
            path: p.path.clone(),
            n: times.len(),
            rows: list.then(|| body.matches("<a href=\"/case/").count()),
            total: if list { shown_total(&body) } else { None },
            bytes: first.body.len(),
            median_ms: ms(percentile(&times, 0.50)),
            p95_ms: ms(percentile(&times, 0.95)),
            target_ms,
        };
        eprintln!(
            "bench-desk: {:<32} median {:>7.1} ms  p95 {:>7.1} ms  ({} rows, total {}, n {})",
            t.label,
            t.median_ms,
            t.p95_ms,
            t.rows.map_or("-".into(), |r| r.to_string()),
            t.total.as_deref().unwrap_or("-"),
            t.n
        );
        out.push(t);
    }
    drop(desk);
    Ok(out)
}

/// Nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The count a list page shows: the ledger's `共 <strong>N</strong>`, or
/// the queue's last `<span class="count">N</span>`.
fn shown_total(html: &str) -> Option<String> {
    let after = if let Some(i) = html.find("共 <strong>") {
        &html[i + "共 <strong>".len()..]
    } else {
        let i = html.rfind("class=\"count\">")?;
        &html[i + "class=\"count\">".len()..]
    };
    after.split('<').next().map(str::to_string)
}

/// Percent-encodes the query of a path (names are Chinese).
fn encode_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b'?' | b'&' | b'=' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---------------------------------------------------------------- client

/// A response, read whole.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A blocking HTTP/1.1 client on one keep-alive connection, with a cookie
/// jar, as a browser tab would be.
struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    jar: Vec<(String, String)>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None, jar: Vec::new() }
    }

    /// Logs in as the benchmark's staff member, as the login form does.
    fn log_in(&mut self, node: &NodeId) -> Result<()> {
        let page = self.get("/login")?;
        ensure!(page.status == 200, "the login page answered {}", page.status);
        let html = page.text();
        let nonce = html
            .split("name=\"nonce\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .context("the login page has no nonce")?
            .to_string();
        let form = format!("nonce={nonce}&next=%2F&login={LOGIN}&password={}", encode_path(PASSWORD));
        let r = self.request("POST", "/login", Some(&form))?;
        ensure!(r.status == 303, "login answered {}: {}", r.status, r.text());
        let cookie = format!("desk_{}", node.base());
        ensure!(self.jar.iter().any(|(n, _)| *n == cookie), "login set no {cookie} cookie");
        Ok(())
    }

    fn get(&mut self, path: &str) -> Result<Reply> {
        self.request("GET", path, None)
    }

    fn request(&mut self, method: &str, path: &str, form: Option<&str>) -> Result<Reply> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if !self.jar.is_empty() {
            let cookies: Vec<String> = self.jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
            req.push_str(&format!("Cookie: {}\r\n", cookies.join("; ")));
        }
        if let Some(f) = form {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            req.push_str(&format!("Content-Length: {}\r\n\r\n{f}", f.len()));
        } else {
            req.push_str("\r\n");
        }
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(120)))?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected");
        conn.get_mut().write_all(req.as_bytes())?;
        let reply = read_reply(conn).with_context(|| format!("{method} {path}"))?;
        if reply.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
            self.conn = None;
        }
        for (_, v) in reply.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie")) {
            let Some((name, value)) = v.split(';').next().and_then(|kv| kv.split_once('=')) else { continue };
            let (name, value) = (name.trim().to_string(), value.trim().to_string());
            self.jar.retain(|(n, _)| *n != name);
            if !value.is_empty() && !v.contains("Max-Age=0") {
                self.jar.push((name, value));
            }
        }
        Ok(reply)
    }
}

fn read_reply(conn: &mut BufReader<TcpStream>) -> Result<Reply> {
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 =
        line.split(' ').nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        ensure!(conn.read_line(&mut line)? > 0, "the connection closed in the headers");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').context("malformed header")?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let mut reply = Reply { status, headers, body: Vec::new() };
    if let Some(len) = reply.header("content-length") {
        let len: usize = len.parse()?;
        reply.body.resize(len, 0);
        conn.read_exact(&mut reply.body)?;
    } else if reply.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)?;
            let mut chunk = vec![0; size + 2];
            conn.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            reply.body.extend_from_slice(&chunk[..size]);
        }
    } else {
        bail!("a response with neither Content-Length nor chunked encoding");
    }
    Ok(reply)
}

// ---------------------------------------------------------------- report

/// `YYYY-MM-DD-HHMM` in UTC, like bench/run.py's result names.
fn stamp() -> String {
    // desk::when shows China time (UTC+8).
    desk::when(node::wall_clock_ms().saturating_sub(8 * 3_600_000)).replace(' ', "-").replace(':', "")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB")
}

fn table(md: &mut String, rows: &[Timed]) {
    md.push_str("| page | path | rows | total | page size (kB) | n | median (ms) | p95 (ms) | target | met (p95) |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for t in rows {
        md.push_str(&format!(
            "| {} | `{}` | {} | {} | {:.0} | {} | {:.1} | {:.1} | < {:.0} ms | {} |\n",
            t.label,
            t.path,
            t.rows.map_or("-".into(), |r| r.to_string()),
            t.total.as_deref().unwrap_or("-"),
            t.bytes as f64 / 1000.0,
            t.n,
            t.median_ms,
            t.p95_ms,
            t.target_ms,
            if t.p95_ms < t.target_ms { "yes" } else { "no" }
        ));
    }
}

fn report(
    opts: &Options,
    village: (&VillageSetup, bool),
    village_rows: &[Timed],
    county: Option<&(CountySetup, bool)>,
    county_rows: Option<&[Timed]>,
) -> String {
    let reused = |r: bool| if r { " (reused from an earlier run)" } else { "" };
    let mut md = format!("# Desk pages, {}\n\n", stamp());
    md.push_str(&format!("Machine: {}. Release build.\n\n", machine()));
    md.push_str(&format!(
        "`county-sim bench-desk --data DIR --village-cases {} --county-cases {} --requests {} --warmup {} \
         --page-seconds {}`\n\n",
        opts.village_cases,
        opts.county_cases,
        opts.requests,
        opts.warmup,
        opts.page_budget.as_secs()
    ));
    md.push_str(
        "Server time: from the request written to the last byte of the response read, on loopback, one \
         HTTP/1.1 keep-alive connection, one request at a time, logged in as a reviewer; each desk served \
         in-process (`desk::start`, 2 tokio workers). Median and p95 (nearest rank) of the timed requests \
         after the warm-up (*n*: fewer than asked when a page used up its time budget). *rows*: cases listed on the page; *total*: the count the page shows (`+`: \
         counting stopped at the cap).\n\n",
    );
    let (v, r) = village;
    md.push_str(&format!(
        "## Village {} ({} cases, {} events; setup {:.1} s{})\n\n",
        v.village,
        v.cases,
        v.events,
        v.seconds,
        reused(r)
    ));
    table(&mut md, village_rows);
    if let (Some((c, r)), Some(rows)) = (county, county_rows) {
        md.push_str(&format!(
            "\n## County hub ({} cases, {} events over 293 villages; setup {:.1} s, of which {:.1} s in the hub's \
             receive path{})\n\n",
            c.cases,
            c.events,
            c.seconds,
            c.ingest_seconds,
            reused(*r)
        ));
        table(&mut md, rows);
    }
    md
}
