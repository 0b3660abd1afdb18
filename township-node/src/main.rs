//! `township-node`: Township centre (乡镇便民服务中心): accepts and decides township items, relays its villages.

use clap::{Parser, Subcommand};
use node::cli::{exit_with, Common, DataDir};
use proto::Tier;
use std::path::PathBuf;
use std::process::ExitCode;

/// Township centre (乡镇便民服务中心): accepts and decides township items, relays its villages.
#[derive(Parser, Debug)]
#[command(name = "township-node", version, about, long_about = None)]
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
    /// Serve sync sessions for this township's villages; with --upstream,
    /// also sync with the county every --every seconds.
    Serve {
        #[command(flatten)]
        data: DataDir,
        /// Address to listen on (UDP), e.g. 0.0.0.0:7444.
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// The county hub's address.
        #[arg(long, value_name = "ADDR")]
        upstream: Option<String>,
        /// Seconds between upstream syncs.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        every: u64,
        /// Also serve the township's desk (web interface) here, e.g.
        /// 127.0.0.1:8081. A non-loopback address is served over HTTPS with
        /// the node's certificate, unless --insecure-http.
        #[arg(long, value_name = "ADDR")]
        desk: Option<std::net::SocketAddr>,
        /// Serve the desk as plain HTTP on a non-loopback address.
        #[arg(long, requires = "desk")]
        insecure_http: bool,
    },
    #[command(flatten)]
    Common(Common),
}

fn main() -> ExitCode {
    node::cli::quiet_on_closed_output();
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Serve { .. }) {
        // A server holds many sessions at once: before anything is read
        // from standard input or started.
        node::cli::bounded_allocator("the server");
    }
    if let Err(e) = cli.unlock.apply() {
        return exit_with(Err(e));
    }
    node::cli::init_logging(if matches!(cli.cmd, Cmd::Serve { .. }) { "info" } else { "warn" });
    exit_with(match cli.cmd {
        Cmd::Serve { data, listen, upstream, every, desk, insecure_http } => {
            let upstream = upstream.map(|u| (u, std::time::Duration::from_secs(every.max(1))));
            match desk {
                Some(addr) => desk::serve_with_desk(&data.data, &listen, upstream, addr, insecure_http),
                None => node::cli::serve(&data.data, &listen, upstream),
            }
        }
        Cmd::Init { data, enrollment } => {
            node::cli::init_from_bundle(&data.data, &enrollment, Tier::Township, "township-node")
        }
        Cmd::Common(c) => node::cli::run(c),
    })
}
