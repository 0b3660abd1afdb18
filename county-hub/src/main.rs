//! `county-hub`: the county centre. Creates the county (CA, topology,
//! catalogue, node keys), enrols nodes, and works cases like any node.

use county_hub::hub;

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
        /// Also serve the county's desk (web interface) here, e.g.
        /// 127.0.0.1:8082. A non-loopback address is served over HTTPS with
        /// the hub's certificate, unless --insecure-http.
        #[arg(long, value_name = "ADDR")]
        desk: Option<std::net::SocketAddr>,
        /// Serve the desk as plain HTTP on a non-loopback address.
        #[arg(long, requires = "desk")]
        insecure_http: bool,
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
    /// Change the county's map: add, move, merge and retire nodes. Each
    /// change is the next topology version, signed by the hub, and reaches
    /// every node with the next syncs: a moved village's new township
    /// receives its whole history at its next session with the county.
    #[command(subcommand)]
    Topology(TopologyCmd),
    #[command(flatten)]
    Common(Common),
}

#[derive(Subcommand, Debug)]
enum TopologyCmd {
    /// Add a village (under a township) or a township (under the county).
    AddNode {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_name = "ID")]
        id: String,
        /// village or township.
        #[arg(long, value_name = "TIER")]
        tier: String,
        #[arg(long, value_name = "NODE")]
        parent: String,
        #[arg(long)]
        name: String,
    },
    /// Move a village to another township.
    Move {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_name = "VILLAGE")]
        node: String,
        #[arg(long, value_name = "TOWNSHIP")]
        to: String,
    },
    /// Move every village of one township to another and retire the first.
    Merge {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_name = "TOWNSHIP")]
        from: String,
        #[arg(long, value_name = "TOWNSHIP")]
        into: String,
    },
    /// Retire a node (a township only once it has no villages).
    Retire {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_name = "ID")]
        node: String,
    },
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
        Cmd::Serve { data, listen, desk: None, .. } => node::cli::serve(&data.data, &listen, None),
        Cmd::Serve { data, listen, desk: Some(addr), insecure_http } => {
            desk::serve_with_desk(&data.data, &listen, None, addr, insecure_http)
        }
        Cmd::Revoke { data, node, reason, staff } => hub::revoke(&data.data, &node, &reason, &staff),
        Cmd::Ledger { data, json } => hub::ledger(&data.data, json),
        Cmd::Init { data, topology, catalogue, hub_address } => {
            hub::init(&data.data, topology.as_deref(), catalogue.as_deref(), &hub_address)
        }
        Cmd::Nodes { data, tier, json } => hub::nodes(&data.data, tier.as_deref(), json),
        Cmd::Enroll { data, node, out, all, out_dir } => match (node, out, all, out_dir) {
            (Some(node), Some(out), false, _) => hub::enroll_one(&data.data, &node, &out),
            (None, _, true, Some(dir)) => hub::enroll_all(&data.data, &dir),
            _ => Err(anyhow::anyhow!("say --node ID --out FILE, or --all --out-dir DIR")),
        },
        Cmd::Topology(cmd) => hub::topology(match cmd {
            TopologyCmd::AddNode { data, id, tier, parent, name } => {
                let tier = match tier.as_str() {
                    "village" => Ok(proto::Tier::Village),
                    "township" => Ok(proto::Tier::Township),
                    t => Err(anyhow::anyhow!("a node added is a village or a township, not {t:?}")),
                };
                tier.map(|tier| {
                    let change = proto::topology::Change::AddNode {
                        id: proto::NodeId::new(id),
                        tier,
                        parent: proto::NodeId::new(parent),
                        name,
                    };
                    (data.data, change)
                })
            }
            TopologyCmd::Move { data, node, to } => Ok((
                data.data,
                proto::topology::Change::Move { node: proto::NodeId::new(node), to: proto::NodeId::new(to) },
            )),
            TopologyCmd::Merge { data, from, into } => Ok((
                data.data,
                proto::topology::Change::Merge { from: proto::NodeId::new(from), into: proto::NodeId::new(into) },
            )),
            TopologyCmd::Retire { data, node } => {
                Ok((data.data, proto::topology::Change::Retire { node: proto::NodeId::new(node) }))
            }
        }),
        Cmd::Common(c) => node::cli::run(c),
    })
}
