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
    #[command(flatten)]
    Common(Common),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_with(match cli.cmd {
        Cmd::Init { data, enrollment } => {
            node::cli::init_from_bundle(&data.data, &enrollment, Tier::Township, "township-node")
        }
        Cmd::Common(c) => node::cli::run(c),
    })
}
