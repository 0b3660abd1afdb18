//! County creation and enrolment.

use anyhow::{bail, Context, Result};
use node::identity::{generate_signing_key, Bundle, CertificateAuthority, Identity, BUNDLE_FORMAT};
use node::protect::DataKey;
use node::store;
use node::Ledger;
use proto::topology::TopologyFile;
use proto::{Catalogue, NodeId, Tier, Topology};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

const DEFAULT_TOPOLOGY: &str = include_str!("../../deploy/topology.json");
const DEFAULT_CATALOGUE: &str = include_str!("../../deploy/catalogue.json");

/// Secrets only the hub holds.
#[derive(Serialize, Deserialize)]
struct HubSecrets {
    ca_cert_pem: String,
    ca_key_pem: String,
    data_key: String,
    hub_address: String,
    /// Hex ed25519 signing keys of every node, issued at init.
    signing_keys: BTreeMap<NodeId, String>,
}

fn read_or_default(path: Option<&Path>, default: &str, what: &str) -> Result<String> {
    match path {
        None => Ok(default.to_string()),
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("cannot read {what} file {}", p.display())),
    }
}

pub fn init(dir: &Path, topology: Option<&Path>, catalogue: Option<&Path>, hub_address: &str) -> Result<()> {
    init_quiet(dir, topology, catalogue, hub_address, false)
}

pub fn init_quiet(
    dir: &Path,
    topology: Option<&Path>,
    catalogue: Option<&Path>,
    hub_address: &str,
    quiet: bool,
) -> Result<()> {
    if dir.join(store::DB_FILE).exists() {
        bail!("{} already holds a county; use another --data directory", dir.display());
    }
    let topology_text = read_or_default(topology, DEFAULT_TOPOLOGY, "topology")?;
    let file: TopologyFile =
        serde_json::from_str(&topology_text).context("the topology file is not valid JSON of the expected shape")?;
    let mut topology = Topology::new(file.note, file.nodes).context("the topology file does not hold together")?;
    let catalogue: Catalogue = serde_json::from_str(&read_or_default(catalogue, DEFAULT_CATALOGUE, "catalogue")?)
        .context("the catalogue file is not valid JSON of the expected shape")?;
    catalogue.validate().context("the catalogue file does not hold together")?;

    let mut signing_keys = BTreeMap::new();
    let ids: Vec<NodeId> = topology.nodes().iter().map(|n| n.id.clone()).collect();
    for id in ids {
        let (secret, public) = generate_signing_key();
        topology.get_mut(&id).expect("listed").verifying_key = Some(public);
        signing_keys.insert(id, secret);
    }
    let county = topology.county().clone();
    let ca = CertificateAuthority::generate(&county)?;
    let secrets = HubSecrets {
        ca_cert_pem: ca.cert_pem.clone(),
        ca_key_pem: ca.key_pem.clone(),
        data_key: DataKey::generate().to_hex(),
        hub_address: hub_address.to_string(),
        signing_keys,
    };
    let bundle = make_bundle(&secrets, &topology, &catalogue, &county.id)?;
    let ledger = Ledger::init(dir, &bundle)?;
    store::meta_set(ledger.store().conn(), "hub_secrets", &secrets)?;
    let count = |t| topology.nodes().iter().filter(|n| n.tier == t).count();
    if quiet {
        return Ok(());
    }
    node::say!(
        "county-hub: created county {} ({}) in {}: {} townships, {} villages, catalogue v{} with {} items \
         ({} at villages, {} at townships, {} at the county)",
        county.id,
        county.name,
        dir.display(),
        count(Tier::Township),
        count(Tier::Village),
        catalogue.version,
        catalogue.items.len(),
        catalogue.count_accepted_at(Tier::Village),
        catalogue.count_accepted_at(Tier::Township),
        catalogue.count_accepted_at(Tier::County),
    );
    node::say!("next: county-hub enroll --data {} --all --out-dir BUNDLES", dir.display());
    Ok(())
}

fn make_bundle(secrets: &HubSecrets, topology: &Topology, catalogue: &Catalogue, id: &NodeId) -> Result<Bundle> {
    let node =
        topology.get(id).with_context(|| format!("node {id} is not in the topology (county-hub nodes lists them)"))?;
    let ca = CertificateAuthority { cert_pem: secrets.ca_cert_pem.clone(), key_pem: secrets.ca_key_pem.clone() };
    let (tls_cert_pem, tls_key_pem) = ca.issue(topology.county(), node)?;
    Ok(Bundle {
        format: BUNDLE_FORMAT.to_string(),
        identity: Identity {
            node: node.clone(),
            signing_key: secrets.signing_keys.get(id).context("no signing key issued for this node")?.clone(),
            tls_cert_pem,
            tls_key_pem,
            ca_cert_pem: secrets.ca_cert_pem.clone(),
            data_key: secrets.data_key.clone(),
            hub_address: secrets.hub_address.clone(),
        },
        topology: topology.clone(),
        catalogue: catalogue_for(catalogue, node.tier),
    })
}

/// The slice of the catalogue a node's windows work with: the items its
/// tier (or a tier below it, whose cases it reviews) may take. The county
/// holds everything. Cases carry what they were taken under, so a node never
/// needs an item it cannot take.
fn catalogue_for(catalogue: &Catalogue, tier: Tier) -> Catalogue {
    let mut c = catalogue.clone();
    c.items.retain(|i| i.accepted_at.iter().any(|t| *t <= tier));
    c
}

fn open_hub(dir: &Path) -> Result<(Ledger, HubSecrets)> {
    let ledger = Ledger::open(dir)?;
    let secrets: HubSecrets = store::meta_get(ledger.store().conn(), "hub_secrets")?
        .with_context(|| format!("{} is a node, not the county hub", dir.display()))?;
    Ok((ledger, secrets))
}

fn write_private(path: &Path, bundle: &Bundle) -> Result<()> {
    let text = serde_json::to_vec(bundle)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(&text)?;
    f.sync_all()?;
    Ok(())
}

pub fn enroll_one(dir: &Path, node: &str, out: &Path) -> Result<()> {
    let (ledger, secrets) = open_hub(dir)?;
    let id = NodeId::new(node);
    if &id == ledger.me() {
        bail!("{id} is the county hub itself; it was enrolled by init");
    }
    let bundle = make_bundle(&secrets, ledger.topology(), ledger.catalogue(), &id)?;
    write_private(out, &bundle)?;
    node::say!(
        "county-hub: wrote bundle for {} ({}, {}) to {}",
        id,
        bundle.identity.node.tier,
        bundle.identity.node.name,
        out.display()
    );
    Ok(())
}

pub fn enroll_all(dir: &Path, out_dir: &Path) -> Result<()> {
    let (ledger, secrets) = open_hub(dir)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let nodes: Vec<_> = ledger.topology().nodes().iter().filter(|n| n.tier != Tier::County).cloned().collect();
    for (i, n) in nodes.iter().enumerate() {
        let bundle = make_bundle(&secrets, ledger.topology(), ledger.catalogue(), &n.id)?;
        write_private(&out_dir.join(format!("{}.json", n.id)), &bundle)?;
        if (i + 1) % 50 == 0 || i + 1 == nodes.len() {
            eprintln!("county-hub: enrolled {}/{}", i + 1, nodes.len());
        }
    }
    node::say!("county-hub: wrote {} bundles to {}", nodes.len(), out_dir.display());
    Ok(())
}

/// Enrols `nodes` straight into data directories under `root` (no bundle
/// files), as the demo does for a whole county.
pub fn enrol_into(hub_dir: &Path, nodes: &[NodeId], root: &Path) -> Result<()> {
    let (ledger, secrets) = open_hub(hub_dir)?;
    for id in nodes {
        let bundle = make_bundle(&secrets, ledger.topology(), ledger.catalogue(), id)?;
        Ledger::init(&root.join(id.as_str()), &bundle)?;
    }
    Ok(())
}

/// Every node's signing key, as the hub issued them (for benchmarks that
/// stand in for the nodes).
pub fn signing_keys(hub_dir: &Path) -> Result<BTreeMap<NodeId, String>> {
    Ok(open_hub(hub_dir)?.1.signing_keys)
}

pub fn nodes(dir: &Path, tier: Option<&str>, json: bool) -> Result<()> {
    let ledger = Ledger::open(dir)?;
    let tier = match tier {
        None => None,
        Some(t) => Some(Tier::parse(t).with_context(|| format!("unknown tier {t:?}: village, township or county"))?),
    };
    let nodes: Vec<_> = ledger.topology().nodes().iter().filter(|n| tier.is_none_or(|t| n.tier == t)).collect();
    if json {
        let rows: Vec<_> = nodes
            .iter()
            .map(|n| serde_json::json!({"id": n.id, "tier": n.tier, "parent": n.parent, "name": n.name}))
            .collect();
        node::say!("{}", serde_json::Value::Array(rows));
    } else {
        for n in &nodes {
            node::say!(
                "{:<14} {:<9} {:<11} {}",
                n.id,
                n.tier,
                n.parent.as_ref().map(|p| p.as_str()).unwrap_or("-"),
                n.name
            );
        }
        node::say!("{} nodes", nodes.len());
    }
    Ok(())
}

pub fn revoke(dir: &Path, node: &str, reason: &str, staff: &node::cli::Staff) -> Result<()> {
    let (mut ledger, _) = open_hub(dir)?;
    let actor = node::cli::actor(&ledger, staff)?;
    let e = ledger.revoke(&actor, &NodeId::new(node), reason)?;
    node::say!("county-hub: revoked {node} (event {}); it reaches every node with the next syncs", e.id);
    Ok(())
}

/// Prints every event held, one JSON object per line, in (origin, seq)
/// order. Personal data stays masked.
pub fn ledger(dir: &Path, json: bool) -> Result<()> {
    use std::io::Write as _;
    let ledger = Ledger::open(dir)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut count = 0u64;
    store::for_each_event(ledger.store().conn(), |e| {
        count += 1;
        if json {
            let detail = match &e.body {
                proto::Body::Create(c) => {
                    serde_json::json!({"item": c.item, "item_name": c.item_name, "decided_by": c.decided_by})
                }
                proto::Body::SetField { field, value } => serde_json::json!({"field": field, "value": value.display()}),
                proto::Body::AddMaterial { name } | proto::Body::RemoveMaterial { name } => {
                    serde_json::json!({"material": name})
                }
                proto::Body::Step { step, note } => match step {
                    proto::Step::Forward { to } => serde_json::json!({"to": to, "note": note}),
                    _ => serde_json::json!({"note": note}),
                },
                proto::Body::Rate { level, note } => serde_json::json!({"level": level, "note": note}),
                proto::Body::Revoke { node, reason } => serde_json::json!({"node": node, "reason": reason}),
            };
            let line = serde_json::json!({
                "origin": e.id.origin, "seq": e.id.seq, "lane": e.lane.key(), "pos": e.pos,
                "hlc": e.hlc.to_string(), "actor": e.actor, "case": e.case, "kind": e.body.name(),
                "detail": detail, "hash": e.hash().to_hex(),
            });
            writeln!(out, "{}", node::cli::json_line(&line))?;
        } else {
            let (case, actor) = (node::cli::clean(e.case.as_str()), node::cli::clean(&e.actor));
            writeln!(out, "{:<22} {:<20} {:<16} {}", e.id.to_string(), case, e.body.name(), actor)?;
        }
        Ok(())
    })?;
    out.flush()?;
    if !json {
        eprintln!("{count} events");
    }
    Ok(())
}

/// Runs the link emulator until interrupted.
pub fn link(
    listen: &str,
    target: &str,
    params: node::linkemu::LinkParams,
    cut_every: u64,
    cut_for: u64,
    seed: u64,
) -> Result<()> {
    anyhow::ensure!((0.0..=1.0).contains(&params.loss), "--loss is a fraction between 0.0 and 1.0");
    let listen: std::net::SocketAddr = listen.parse().context("--listen takes host:port with an IP address")?;
    let target: std::net::SocketAddr = target.parse().context("--target takes host:port with an IP address")?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let link = node::linkemu::LinkEmulator::start(listen, target, params, seed).await?;
        println!("link emulator {} -> {target}: {params:?}", link.local_addr);
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
        anyhow::Ok(())
    })
}
