//! `county-sim`: development tooling, never installed on a field laptop.
//! Runs the simulated county (1 + 27 + 293 real nodes on this machine),
//! the hub's ingest benchmark, the user-space link emulator, and generates
//! work into a node's data directory for tests and benchmarks.

mod bench_desk;
mod demo;
mod dictionaries;
mod ingest;
mod linkemu;
mod workload;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use node::cli::{exit_with, DataDir, Staff};
use node::ledger::Ledger;
use std::path::PathBuf;
use std::process::ExitCode;

/// Development tooling for the county case ledger: the simulated county,
/// benchmarks, the link emulator and generated work. Not for field laptops.
#[derive(Parser, Debug)]
#[command(name = "county-sim", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    unlock: node::cli::Unlock,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a whole simulated county on this machine: 1 hub, 27 townships and
    /// 293 villages as real nodes (own SQLite files, QUIC + mutual TLS on
    /// loopback), a working day of cases, sync through the tiers, and a check
    /// that every replica agrees with the county for its scope.
    Demo {
        /// Directory for every node's data (must not hold a demo already;
        /// default: a new directory under the system's temp directory).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Cases taken at each village window (townships take half as many).
        #[arg(long, value_name = "N", default_value_t = 20)]
        cases_per_village: u64,
        /// none, or rural: villages behind an emulated 300 ms RTT, 1 Mbit/s,
        /// 3 % loss link with cut-offs.
        #[arg(long, value_name = "KIND", default_value = "none", value_parser = ["none", "rural"])]
        link: String,
        /// Stop after convergence instead of keeping the servers up.
        #[arg(long)]
        exit: bool,
        /// Print only a JSON summary (last line).
        #[arg(long)]
        json: bool,
        /// Use only the first N townships (0: all 27).
        #[arg(long, value_name = "N", default_value_t = 0)]
        townships: usize,
        /// Use only the first N villages of each township (0: all).
        #[arg(long, value_name = "N", default_value_t = 0)]
        villages_per_township: usize,
        /// Seed for the generated work, routes and offline villages.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Benchmark: hub ingest of generated village work through the real
    /// receive path, against the raw SQLite append rate (see bench/).
    BenchIngest {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        cases: u64,
        #[arg(long, default_value_t = 6)]
        events_per_case: u64,
    },
    /// Benchmark: server time of the desk pages on a village with 10 000
    /// cases and on the county hub with 1.5 M cases (see bench/README.md).
    /// The generated data directories are kept in --data and reused.
    BenchDesk {
        /// Directory for the village and the county (reused when it holds
        /// them already).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        village_cases: u64,
        /// Cases at the county hub, spread over the 293 villages (0: no
        /// county part).
        #[arg(long, value_name = "N", default_value_t = 1_500_000)]
        county_cases: u64,
        /// Timed requests per page.
        #[arg(long, value_name = "N", default_value_t = 200)]
        requests: usize,
        /// Untimed requests per page before them.
        #[arg(long, value_name = "N", default_value_t = 20)]
        warmup: usize,
        /// Stop timing a page after this many seconds (at least 10 timed
        /// requests are made).
        #[arg(long, value_name = "S", default_value_t = 60)]
        page_seconds: u64,
        /// Only the pages whose label contains this (e.g. "ledger").
        #[arg(long, value_name = "TEXT")]
        only: Option<String>,
        /// Directory the Markdown table is written to (desk-<date>.md).
        #[arg(long, value_name = "DIR", default_value = "bench/results")]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run a user-space link emulator (UDP relay) in front of a node: delay,
    /// jitter, loss, bandwidth cap and cut-offs, e.g. a rural village link.
    Link {
        /// Address to listen on; point the village's --peer here.
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// The real node's address.
        #[arg(long, value_name = "ADDR")]
        target: String,
        /// Round-trip time added, in milliseconds.
        #[arg(long, default_value_t = 300)]
        rtt_ms: u64,
        #[arg(long, default_value_t = 20)]
        jitter_ms: u64,
        /// Packet loss, 0.0 to 1.0.
        #[arg(long, default_value_t = 0.03)]
        loss: f64,
        /// Bandwidth cap in kbit/s (0: none).
        #[arg(long, default_value_t = 1000)]
        kbps: u64,
        /// Cut the link every N seconds (0: never) for --cut-for seconds.
        #[arg(long, default_value_t = 0)]
        cut_every: u64,
        #[arg(long, default_value_t = 5)]
        cut_for: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train the zstd dictionaries a store packs its case rows and event
    /// content with, from the rows of a node's store (read-only), e.g. the
    /// hub of `demo --townships 8 --villages-per-township 12 --seed 7`.
    /// Generated data directories only: a dictionary keeps fragments of
    /// its rows (masked ID numbers, names) and is built into every
    /// release. A dictionary in use is frozen: a new one needs a new
    /// stored-format version (node::at_rest).
    TrainDictionaries {
        /// The node's data directory (a hub's holds every case).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Where to write case-1.zdict and event-1.zdict.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 16 * 1024)]
        case_size: usize,
        #[arg(long, default_value_t = 8 * 1024)]
        event_size: usize,
    },
    /// Take COUNT generated cases at a node (at most 10000 a run) and move
    /// each as far as that node may: real, signed events that sync like any
    /// other, for tests and benchmarks on test data directories only.
    Generate {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_name = "N")]
        count: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        staff: Staff,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Demo { .. }) {
        // Before anything is read from standard input or started.
        node::cli::bounded_allocator("the demo");
    }
    node::cli::init_logging("warn");
    if let Err(e) = cli.unlock.apply() {
        return exit_with(Err(e));
    }
    exit_with(run(cli.cmd))
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Demo { data, cases_per_village, link, exit, json, townships, villages_per_township, seed } => {
            demo::run(demo::DemoOptions {
                data: data.unwrap_or_else(|| {
                    let stamp = node::wall_clock_ms() / 1000;
                    std::env::temp_dir().join(format!("county-demo-{stamp}"))
                }),
                cases_per_village,
                rural: link == "rural",
                exit,
                json,
                townships,
                villages_per_township,
                seed,
            })
        }
        Cmd::BenchIngest { data, cases, events_per_case } => ingest::run(&data, cases, events_per_case),
        Cmd::TrainDictionaries { data, out, case_size, event_size } => {
            let trained = dictionaries::train(&data, &out, case_size, event_size)?;
            println!("{}", serde_json::to_string(&trained)?);
            Ok(())
        }
        Cmd::BenchDesk { data, village_cases, county_cases, requests, warmup, page_seconds, only, out, seed } => {
            bench_desk::run(bench_desk::Options {
                data,
                village_cases,
                county_cases,
                requests,
                warmup,
                page_budget: std::time::Duration::from_secs(page_seconds),
                only,
                out: Some(out),
                seed,
            })
        }
        Cmd::Link { listen, target, rtt_ms, jitter_ms, loss, kbps, cut_every, cut_for, seed } => {
            let params = linkemu::LinkParams {
                delay: std::time::Duration::from_millis(rtt_ms / 2),
                jitter: std::time::Duration::from_millis(jitter_ms),
                loss,
                bandwidth_bps: kbps * 1000,
            };
            link(&listen, &target, params, cut_every, cut_for, seed)
        }
        Cmd::Generate { data, count, seed, staff, json } => {
            if count > proto::limits::GENERATE_MAX {
                bail!(
                    "generate takes at most {} cases a run (asked for {count}); run it again for more",
                    proto::limits::GENERATE_MAX
                );
            }
            let mut ledger = Ledger::open(&data.data)?;
            let who = node::cli::actor(&ledger, &staff)?;
            let started = std::time::Instant::now();
            let g = workload::generate(&mut ledger, count, seed, &who)?;
            let secs = started.elapsed().as_secs_f64();
            if json {
                node::say!("{}", serde_json::json!({"cases": g.cases, "events": g.events, "seconds": secs}));
            } else {
                node::say!("generated {} cases, {} events in {secs:.2} s", g.cases, g.events);
            }
            Ok(())
        }
    }
}

/// Runs the link emulator until interrupted.
pub fn link(
    listen: &str,
    target: &str,
    params: crate::linkemu::LinkParams,
    cut_every: u64,
    cut_for: u64,
    seed: u64,
) -> Result<()> {
    anyhow::ensure!((0.0..=1.0).contains(&params.loss), "--loss is a fraction between 0.0 and 1.0");
    let listen: std::net::SocketAddr = listen.parse().context("--listen takes host:port with an IP address")?;
    let target: std::net::SocketAddr = target.parse().context("--target takes host:port with an IP address")?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let link = crate::linkemu::LinkEmulator::start(listen, target, params, seed).await?;
        node::say!("link emulator {} -> {target}: {params:?}", link.local_addr);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut seconds = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    seconds += 1;
                    if cut_every > 0 {
                        link.set_cut(seconds % cut_every < cut_for);
                    }
                }
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        let c = &link.counters;
        node::say!(
            "link emulator stopped: {} packets ({} bytes) relayed, {} dropped",
            c.packets.load(std::sync::atomic::Ordering::Relaxed),
            c.bytes.load(std::sync::atomic::Ordering::Relaxed),
            c.dropped.load(std::sync::atomic::Ordering::Relaxed)
        );
        anyhow::Ok(())
    })
}
