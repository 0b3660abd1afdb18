//! `village-node`: Village service room (村便民服务室): takes and pre-reviews cases offline.

use clap::{Parser, Subcommand};
use node::cli::{exit_with, Common, DataDir};
use proto::Tier;
use std::path::PathBuf;
use std::process::ExitCode;

/// Village service room (村便民服务室): takes and pre-reviews cases offline.
#[derive(Parser, Debug)]
#[command(name = "village-node", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    unlock: node::cli::Unlock,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Set up this laptop's data directory from an enrolment bundle.
    Init {
        #[command(flatten)]
        data: DataDir,
        /// The bundle written by `county-hub enroll`.
        #[arg(long, value_name = "FILE")]
        enrollment: PathBuf,
    },
    /// Serve this laptop's desk (the web interface) in the browser.
    /// Binds to loopback: only this laptop can open it.
    Desk {
        #[command(flatten)]
        data: DataDir,
        /// Where the desk listens. An address other than loopback is
        /// served over HTTPS with the node's certificate, unless
        /// --insecure-http.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Sync with the peer in the background every this many seconds
        /// (whenever it is reachable); the desk shows the outcome.
        #[arg(long, value_name = "SECS")]
        sync_every: Option<u64>,
        /// The peer to sync with: the township (host:port), or by default
        /// the county hub named in the enrolment bundle.
        #[arg(long, value_name = "ADDR")]
        peer: Option<String>,
        /// Serve plain HTTP on a non-loopback address (not recommended).
        #[arg(long)]
        insecure_http: bool,
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
    node::cli::init_logging(if matches!(cli.cmd, Cmd::Desk { .. }) { "info" } else { "warn" });
    exit_with(match cli.cmd {
        Cmd::Init { data, enrollment } => {
            node::cli::init_from_bundle(&data.data, &enrollment, Tier::Village, "village-node")
        }
        Cmd::Desk { data, listen, sync_every, peer, insecure_http } => node::cli::peer_address(&data.data, peer)
            .and_then(|peer| {
                desk::serve_blocking(desk::Options {
                    dir: data.data,
                    listen,
                    insecure_http,
                    upstream: Some(peer),
                    sync_every: sync_every.map(|s| std::time::Duration::from_secs(s.max(1))),
                })
            }),
        Cmd::Common(c) => node::cli::run(c),
    })
}
