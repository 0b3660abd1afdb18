//! `county-hub bench-ingest`: how fast the hub takes in a year of village
//! work through its real receive path (checks, chains, seals,
//! authorisation, SQLite with synchronous=FULL, case folding), against the
//! raw SQLite append rate of the same machine measured in the same run.

use anyhow::{Context, Result};
use county_hub::hub::{self, SIMULATION_PASSPHRASE};
use crdts::{CmRDT, Dot, VClock};
use ed25519_dalek::SigningKey;
use node::keystore::{self, Kdf};
use node::ledger::Ledger;
use proto::event::{Create, FieldValue, Lane, Seal};
use proto::sync::Segment;
use proto::{Body, CaseId, Event, EventId, Hash, Hlc, NodeId, Step, Tier};
use std::path::Path;
use std::time::{Duration, Instant};

/// Builds one village's year: `cases` cases of `per_case` events each, as
/// sealed segments of about 2000 events.
#[allow(clippy::too_many_arguments)]
fn village_year(
    village: &NodeId,
    township: &NodeId,
    key: &SigningKey,
    item: &proto::Item,
    catalogue_version: u32,
    cases: u64,
    per_case: u64,
    t0: u64,
) -> Vec<Segment> {
    let lane = Lane::Home(village.clone());
    let (mut seq, mut prev, mut segments, mut current) = (0u64, Hash::ZERO, Vec::new(), Vec::new());
    for c in 0..cases {
        let case = CaseId::mint(village, seq + 1);
        let mut context = VClock::new();
        for k in 0..per_case {
            seq += 1;
            let body = match k {
                0 => Body::Create(Create {
                    item: item.code.clone(),
                    item_name: item.name.clone(),
                    catalogue_version,
                    accepted_at: item.accepted_at.clone(),
                    decided_by: item.decided_by,
                    promised_days: item.promised_limit_days,
                    fields: vec![("applicant".into(), FieldValue::Text(format!("申请人{c}")))],
                    materials: vec!["居民身份证".into()],
                }),
                1 => Body::Step { step: Step::PrereviewPass, note: String::new() },
                2 => Body::Step { step: Step::Forward { to: township.clone() }, note: String::new() },
                k if k % 2 == 1 => Body::AddMaterial { name: format!("材料{k}") },
                k => Body::SetField { field: "address".into(), value: FieldValue::Text(format!("第{k}组")) },
            };
            let e = Event {
                id: EventId { origin: village.clone(), seq },
                lane: lane.clone(),
                pos: seq,
                prev,
                hlc: Hlc { wall_ms: t0 + seq, logical: 0 },
                actor: "村代办员".into(),
                case: case.clone(),
                context: context.clone(),
                body,
            };
            context.apply(Dot::new(village.clone(), seq));
            prev = e.hash();
            current.push(e);
        }
        if current.len() >= 2000 || c + 1 == cases {
            let seal = Seal::sign(key, current.last().expect("non-empty"));
            segments.push(Segment { events: std::mem::take(&mut current), seal });
        }
    }
    segments
}

/// Appends the same encoded events to a plain table with the same
/// durability settings, 2000 rows per transaction: the machine's limit.
fn raw_append(conn: &rusqlite::Connection, segments: &[Segment]) -> Result<Duration> {
    let started = Instant::now();
    for seg in segments {
        let tx = conn.unchecked_transaction()?;
        {
            let mut stmt = tx.prepare_cached("INSERT INTO raw (origin, seq, body) VALUES (?1, ?2, ?3)")?;
            for e in &seg.events {
                stmt.execute(rusqlite::params![e.id.origin.0, e.id.seq, e.encode()])?;
            }
        }
        tx.commit()?;
    }
    Ok(started.elapsed())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn run(dir: &Path, cases: u64, per_case: u64) -> Result<()> {
    keystore::set_passphrase(SIMULATION_PASSPHRASE);
    anyhow::ensure!(per_case >= 3, "--events-per-case must be at least 3 (create, pre-review, forward)");
    std::fs::create_dir_all(dir)?;
    let hub_dir = dir.join("hub");
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
    let topology = ledger.topology().clone();
    let catalogue = ledger.catalogue().clone();
    let item = catalogue.item("V001").context("the shipped catalogue lists V001")?.clone();
    let villages: Vec<(NodeId, NodeId)> = topology
        .nodes()
        .iter()
        .filter(|n| n.tier == Tier::Village)
        .map(|n| (n.id.clone(), n.parent.clone().expect("villages have a township")))
        .collect();
    let raw = rusqlite::Connection::open(dir.join("raw.db"))?;
    raw.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE raw (origin TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (origin, seq)) WITHOUT ROWID;",
    )?;
    let per_village = cases.div_ceil(villages.len() as u64);
    let (mut ingest, mut raw_time, mut events, mut total_cases) = (Duration::ZERO, Duration::ZERO, 0u64, 0u64);
    let now = node::wall_clock_ms();
    let t0 = now.saturating_sub(365 * 24 * 3600 * 1000);
    for (i, (village, township)) in villages.iter().enumerate() {
        let n = per_village.min(cases - total_cases);
        if n == 0 {
            break;
        }
        let key = keys.get(village).context("no key")?;
        let segments = village_year(village, township, key, &item, catalogue.version, n, per_case, t0);
        let received = segments.clone();
        let started = Instant::now();
        for seg in received {
            let verdict = ledger.receive(village, vec![seg], now)?;
            anyhow::ensure!(
                verdict.quarantined.is_empty(),
                "generated events were refused: {:?}",
                verdict.quarantined.first()
            );
        }
        ingest += started.elapsed();
        raw_time += raw_append(&raw, &segments)?;
        events += segments.iter().map(|s| s.events.len() as u64).sum::<u64>();
        total_cases += n;
        if (i + 1) % 20 == 0 {
            eprintln!(
                "bench-ingest: {total_cases} cases, {events} events; hub {:.0} events/s, raw append {:.0} events/s",
                events as f64 / ingest.as_secs_f64(),
                events as f64 / raw_time.as_secs_f64()
            );
        }
    }
    let ours = events as f64 / ingest.as_secs_f64();
    let limit = events as f64 / raw_time.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "cases": total_cases,
            "events": events,
            "ingest_seconds": ingest.as_secs_f64(),
            "ingest_events_per_second": ours,
            "raw_append_seconds": raw_time.as_secs_f64(),
            "raw_append_events_per_second": limit,
            "ratio_to_raw": ours / limit,
            "hub_db_bytes": std::fs::metadata(hub_dir.join(node::store::DB_FILE)).map(|m| m.len()).unwrap_or(0),
            "peak_rss_kib": peak_rss_kib(),
        })
    );
    Ok(())
}
