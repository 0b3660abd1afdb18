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
    #[command(flatten)]
    Common(Common),
}

fn main() -> ExitCode {
    node::cli::quiet_on_closed_output();
    let cli = Cli::parse();
    if let Err(e) = cli.unlock.apply() {
        return exit_with(Err(e));
    }
    node::cli::init_logging("warn");
    exit_with(match cli.cmd {
        Cmd::Init { data, enrollment } => {
            node::cli::init_from_bundle(&data.data, &enrollment, Tier::Village, "village-node")
        }
        Cmd::Common(c) => node::cli::run(c),
    })
}
