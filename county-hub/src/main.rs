//! `county-hub`: the county centre. Creates the county (CA, topology,
//! catalogue, node keys), enrols nodes, and works cases like any node.

mod demo;
mod hub;
mod ingest;

use clap::{Parser, Subcommand};
use node::cli::{exit_with, Common, DataDir};
use std::path::PathBuf;
use std::process::ExitCode;

/// County hub of the 1+27+293 case network: certificate authority, catalogue
/// publisher, and the county's own desk.
#[derive(Parser, Debug)]
#[command(name = "county-hub", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    unlock: node::cli::Unlock,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a county: CA, hub identity, topology, catalogue and node keys.
    Init {
        #[command(flatten)]
        data: DataDir,
        /// Topology JSON (default: the shipped example, deploy/topology.json).
        #[arg(long, value_name = "FILE")]
        topology: Option<PathBuf>,
        /// Catalogue JSON (default: the shipped example, deploy/catalogue.json).
        #[arg(long, value_name = "FILE")]
        catalogue: Option<PathBuf>,
        /// The address nodes will reach the hub at (written into bundles).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7443")]
        hub_address: String,
    },
    /// List the nodes of the county.
    Nodes {
        #[command(flatten)]
        data: DataDir,
        /// Only nodes of this tier.
        #[arg(long, value_name = "TIER")]
        tier: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write enrolment bundles (certificate, keys, CA, topology, catalogue).
    /// A bundle holds private keys: carry it to the laptop and delete it.
    Enroll {
        #[command(flatten)]
        data: DataDir,
        /// The node to enrol.
        #[arg(long, value_name = "ID", requires = "out", conflicts_with = "all")]
        node: Option<String>,
        /// Bundle file to write.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Enrol every township and village node.
        #[arg(long, requires = "out_dir")]
        all: bool,
        /// Directory for one bundle per node (<id>.json).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Serve sync sessions for townships and villages (mutual TLS over QUIC).
    Serve {
        #[command(flatten)]
        data: DataDir,
        /// Address to listen on (UDP), e.g. 0.0.0.0:7443.
        #[arg(long, value_name = "ADDR")]
        listen: String,
    },
    /// Revoke a node's certificate (a lost laptop). The revocation travels
    /// to every node, which then refuses that certificate.
    Revoke {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_name = "ID")]
        node: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        staff: node::cli::Staff,
    },
    /// The merged ledger: every event held, one JSON object per line.
    Ledger {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
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
    #[command(hide = true)]
    BenchIngest {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        cases: u64,
        #[arg(long, default_value_t = 6)]
        events_per_case: u64,
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
    #[command(flatten)]
    Common(Common),
}

fn main() -> ExitCode {
    node::cli::quiet_on_closed_output();
    let cli = Cli::parse();
    if let Err(e) = cli.unlock.apply() {
        return exit_with(Err(e));
    }
    node::cli::init_logging(if matches!(cli.cmd, Cmd::Serve { .. }) { "info" } else { "warn" });
    exit_with(match cli.cmd {
        Cmd::Serve { data, listen } => node::cli::serve(&data.data, &listen, None),
        Cmd::Revoke { data, node, reason, staff } => hub::revoke(&data.data, &node, &reason, &staff),
        Cmd::Ledger { data, json } => hub::ledger(&data.data, json),
        Cmd::BenchIngest { data, cases, events_per_case } => ingest::run(&data, cases, events_per_case),
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
        Cmd::Link { listen, target, rtt_ms, jitter_ms, loss, kbps, cut_every, cut_for, seed } => {
            let params = node::linkemu::LinkParams {
                delay: std::time::Duration::from_millis(rtt_ms / 2),
                jitter: std::time::Duration::from_millis(jitter_ms),
                loss,
                bandwidth_bps: kbps * 1000,
            };
            hub::link(&listen, &target, params, cut_every, cut_for, seed)
        }
        Cmd::Init { data, topology, catalogue, hub_address } => {
            hub::init(&data.data, topology.as_deref(), catalogue.as_deref(), &hub_address)
        }
        Cmd::Nodes { data, tier, json } => hub::nodes(&data.data, tier.as_deref(), json),
        Cmd::Enroll { data, node, out, all, out_dir } => match (node, out, all, out_dir) {
            (Some(node), Some(out), false, _) => hub::enroll_one(&data.data, &node, &out),
            (None, _, true, Some(dir)) => hub::enroll_all(&data.data, &dir),
            _ => Err(anyhow::anyhow!("say --node ID --out FILE, or --all --out-dir DIR")),
        },
        Cmd::Common(c) => node::cli::run(c),
    })
}
