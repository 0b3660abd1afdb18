//! County creation and enrolment.

use anyhow::{bail, Context, Result};
use node::identity::{
    certificate_fingerprint, generate_signing_key, Bundle, CertificateAuthority, Identity, Secrets, BUNDLE_FORMAT,
};
use node::keystore::{self, Kdf};
use node::protect::{DataKey, DataKeys};
use node::store;
use node::Ledger;
use proto::event::KeyId;
use proto::topology::TopologyFile;
use proto::{Catalogue, NodeId, Tier, Topology};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The passphrase of every node of a simulated county (demo, benchmarks):
/// printed on screen, so its keys are sealed with cheap parameters.
pub const SIMULATION_PASSPHRASE: &str = "simulated county";

const DEFAULT_TOPOLOGY: &str = include_str!("../../deploy/topology.json");
const DEFAULT_CATALOGUE: &str = include_str!("../../deploy/catalogue.json");

/// Secrets only the hub holds, stored sealed under the hub's passphrase.
#[derive(Serialize, Deserialize)]
struct HubSecrets {
    ca_cert_pem: String,
    ca_key_pem: String,
    /// The county's master data key (hex), from which every lane's derives.
    data_key: String,
    hub_address: String,
}

fn read_or_default(path: Option<&Path>, default: &str, what: &str) -> Result<String> {
    match path {
        None => Ok(default.to_string()),
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("cannot read {what} file {}", p.display())),
    }
}

pub fn init(dir: &Path, topology: Option<&Path>, catalogue: Option<&Path>, hub_address: &str) -> Result<()> {
    let passphrase = keystore::passphrase("the new county hub")?;
    keystore::check_new_passphrase(&passphrase)?;
    init_quiet(dir, topology, catalogue, hub_address, false, &passphrase, Kdf::STANDARD)
}

/// Creates a county in `dir`; its keys are sealed under `passphrase`.
pub fn init_quiet(
    dir: &Path,
    topology: Option<&Path>,
    catalogue: Option<&Path>,
    hub_address: &str,
    quiet: bool,
    passphrase: &str,
    kdf: Kdf,
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

    // Only the hub's own key goes into the topology; every other node's key
    // is generated when it is enrolled, given only to its bundle, and
    // certified by an enrolment event in the global lane.
    let county = topology.county().clone();
    let (hub_key, hub_public) = generate_signing_key();
    topology.get_mut(&county.id).expect("listed").verifying_key = Some(hub_public);
    let ca = CertificateAuthority::generate(&county)?;
    let secrets = HubSecrets {
        ca_cert_pem: ca.cert_pem.clone(),
        ca_key_pem: ca.key_pem.clone(),
        data_key: DataKey::generate().to_hex(),
        hub_address: hub_address.to_string(),
    };
    let (tls_cert_pem, tls_key_pem) = ca.issue(&county, &county)?;
    let bundle = Bundle {
        format: BUNDLE_FORMAT.to_string(),
        identity: Identity {
            node: topology.county().clone(),
            tls_cert_pem,
            ca_cert_pem: secrets.ca_cert_pem.clone(),
            hub_address: secrets.hub_address.clone(),
        },
        secrets: Secrets {
            signing_key: hub_key,
            tls_key_pem,
            data_keys: DataKeys::county(&DataKey::from_hex(&secrets.data_key).expect("fresh key")),
        },
        topology: topology.clone(),
        catalogue: catalogue.clone(),
        global: None,
        calendar: Some(
            serde_json::from_str(store::DEFAULT_CALENDAR).context("the shipped calendar (deploy/calendar.json)")?,
        ),
    };
    let ledger = Ledger::init(dir, &bundle, passphrase, kdf)?;
    let sealed = keystore::seal(&serde_json::to_vec(&secrets)?, passphrase, kdf)?;
    store::meta_set(ledger.store().conn(), "hub_secrets", &sealed)?;
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

/// Enrols `id`: a fresh signing key and TLS certificate, certified by an
/// enrolment event in the hub's ledger (which reaches every node), and a
/// bundle that alone holds the private keys. The hub keeps no node's
/// private key. A node that holds a live key must be revoked first.
fn enrol(secrets: &HubSecrets, ledger: &mut Ledger, id: &NodeId) -> Result<(Bundle, ed25519_dalek::SigningKey)> {
    let topology = ledger.topology().clone();
    let node =
        topology.get(id).with_context(|| format!("node {id} is not in the topology (county-hub nodes lists them)"))?;
    if node.tier == Tier::County || id.as_str() != id.base() {
        bail!("{id} is the county hub itself; it was enrolled by init");
    }
    if node.retired {
        bail!("{id} is retired from the county's map; it takes no new laptop");
    }
    if !store::live_keys(ledger.store().conn(), id)?.is_empty() {
        bail!(
            "node {id} is enrolled and its key is live; if its laptop is lost or replaced, revoke it first \
             (county-hub revoke --node {id} --reason …), then enrol it again"
        );
    }
    let ca = CertificateAuthority { cert_pem: secrets.ca_cert_pem.clone(), key_pem: secrets.ca_key_pem.clone() };
    let (tls_cert_pem, tls_key_pem) = ca.issue(topology.county(), node)?;
    let (signing_key, _) = generate_signing_key();
    let key = Secrets { signing_key: signing_key.clone(), tls_key_pem: String::new(), data_keys: DataKeys::default() }
        .signing_key()?;
    ledger.enrol("county-hub enroll", id, KeyId::of(&key.verifying_key()), certificate_fingerprint(&tls_cert_pem)?)?;
    let global = global_segment(ledger)?;
    let master = DataKey::from_hex(&secrets.data_key).context("the county's data key is damaged")?;
    let bundle = Bundle {
        format: BUNDLE_FORMAT.to_string(),
        identity: Identity {
            node: node.clone(),
            tls_cert_pem,
            ca_cert_pem: secrets.ca_cert_pem.clone(),
            hub_address: secrets.hub_address.clone(),
        },
        secrets: Secrets { signing_key, tls_key_pem, data_keys: DataKeys::issue(&master, &topology, id) },
        // The first versions, whole: the county's publications since travel
        // in `global` and are applied in order by the node.
        topology: store::meta_get(ledger.store().conn(), "topology")?.context("the hub's topology is missing")?,
        catalogue: store::meta_get(ledger.store().conn(), "catalogue")?.context("the hub's catalogue is missing")?,
        global: Some(hex::encode(global.encode())),
        calendar: store::meta_get(ledger.store().conn(), "calendar")?,
    };
    Ok((bundle, key))
}

/// The hub's whole global-lane chain, ending at its seal.
fn global_segment(ledger: &Ledger) -> Result<proto::sync::Segment> {
    let conn = ledger.store().conn();
    let me = ledger.me();
    let seal = store::seal_of(conn, me, &proto::Lane::Global)?.context("the hub has no sealed global lane")?;
    let events = store::lane_events(conn, &proto::Lane::Global, me, 0, seal.pos)?;
    Ok(proto::sync::Segment { events, seal })
}

fn open_hub(dir: &Path) -> Result<(Ledger, HubSecrets)> {
    let ledger = Ledger::open(dir)?;
    let sealed: keystore::Sealed = store::meta_get(ledger.store().conn(), "hub_secrets")?
        .with_context(|| format!("{} is a node, not the county hub", dir.display()))?;
    let clear = keystore::open_in(dir, &sealed, "the county hub")?;
    let secrets: HubSecrets = serde_json::from_slice(&clear).context("the hub's sealed keys are damaged")?;
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
    let (mut ledger, secrets) = open_hub(dir)?;
    let id = NodeId::new(node);
    let (bundle, _) = enrol(&secrets, &mut ledger, &id)?;
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
    let (mut ledger, secrets) = open_hub(dir)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut nodes = Vec::new();
    for n in ledger.topology().nodes().iter().filter(|n| n.tier != Tier::County) {
        if store::live_keys(ledger.store().conn(), &n.id)?.is_empty() {
            nodes.push(n.clone());
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let (bundle, _) = enrol(&secrets, &mut ledger, &n.id)?;
        write_private(&out_dir.join(format!("{}.json", n.id)), &bundle)?;
        if (i + 1) % 50 == 0 || i + 1 == nodes.len() {
            eprintln!("county-hub: enrolled {}/{}", i + 1, nodes.len());
        }
    }
    node::say!(
        "county-hub: wrote {} bundles to {} (nodes enrolled before, with live keys, were skipped); they hold \
         private keys: carry each to its laptop and delete them here",
        nodes.len(),
        out_dir.display()
    );
    Ok(())
}

/// Enrols `nodes` straight into data directories under `root` (no bundle
/// files), as the demo does for a whole county; their keys are sealed
/// under `passphrase`.
pub fn enrol_into(hub_dir: &Path, nodes: &[NodeId], root: &Path, passphrase: &str, kdf: Kdf) -> Result<()> {
    let (mut ledger, secrets) = open_hub(hub_dir)?;
    for id in nodes {
        let (bundle, _) = enrol(&secrets, &mut ledger, id)?;
        Ledger::init(&root.join(id.as_str()), &bundle, passphrase, kdf)?;
    }
    Ok(())
}

/// Enrols `nodes` and hands their signing keys to the caller only (for
/// benchmarks that stand in for the nodes); nothing is written but the
/// enrolment events.
pub fn enrol_for_benchmark(hub_dir: &Path, nodes: &[NodeId]) -> Result<BTreeMap<NodeId, ed25519_dalek::SigningKey>> {
    let (mut ledger, secrets) = open_hub(hub_dir)?;
    let mut keys = BTreeMap::new();
    for id in nodes {
        keys.insert(id.clone(), enrol(&secrets, &mut ledger, id)?.1);
    }
    Ok(keys)
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
            .map(|n| {
                serde_json::json!({"id": n.id, "tier": n.tier, "parent": n.parent, "name": n.name,
                    "former_parents": n.former_parents, "retired": n.retired})
            })
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
    let events = ledger.revoke(&actor, &NodeId::new(node), reason)?;
    for e in &events {
        if let proto::Body::Revoke { key, .. } = &e.body {
            node::say!(
                "county-hub: revoked key {key} of {node} (event {}); it reaches every node with the next syncs",
                e.id
            );
        }
    }
    node::say!("next, for a replacement laptop: county-hub enroll --data {} --node {node} --out BUNDLE", dir.display());
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
                proto::Body::Rating { level, stage, channel, note } => {
                    serde_json::json!({"level": level, "stage": stage.name(), "channel": channel, "note": note})
                }
                proto::Body::FollowUp { rating, response, callback } => {
                    serde_json::json!({"rating": rating.to_string(), "response": response, "callback": callback})
                }
                proto::Body::Revoke { node, reason, key, .. } => {
                    serde_json::json!({"node": node, "reason": reason, "key": key.to_hex()})
                }
                proto::Body::Enrol { node, key, .. } => serde_json::json!({"node": node, "key": key.to_hex()}),
                proto::Body::Publish(p) => serde_json::json!({"kind": p.kind(), "version": p.version()}),
                proto::Body::Incarnate { origin, after } => {
                    serde_json::json!({"origin": origin, "after": after.to_string()})
                }
                proto::Body::AttachFile { material, file, replaces } => serde_json::json!({
                    "material": material, "hash": file.hash.to_hex(), "size": file.size,
                    "media_type": file.media_type.mime(), "name": file.name,
                    "replaces": replaces.map(|r| r.to_hex()),
                }),
                proto::Body::DetachFile { material, hash, note } => {
                    serde_json::json!({"material": material, "hash": hash.to_hex(), "note": note})
                }
                proto::Body::CiteLicence { material, licence } => serde_json::json!({
                    "material": material, "licence_case": licence.terms.case, "issuer": licence.terms.issuer,
                }),
            };
            let line = serde_json::json!({
                "origin": e.id.origin, "seq": e.id.seq, "lane": e.lane.key(), "pos": e.pos,
                "hlc": e.hlc.to_string(), "actor": e.actor, "case": e.case, "kind": e.body.name(),
                "detail": detail, "hash": e.hash().to_hex(),
            });
            writeln!(out, "{}", node::cli::json_line(&line))?;
        } else {
            let (case, actor) = (node::cli::clean(e.case.as_str()), node::cli::clean(&e.actor));
            let id = e.id.to_string();
            let id = node::cli::clean(&id);
            writeln!(out, "{id:<22} {case:<20} {:<16} {actor}", e.body.name())?;
        }
        Ok(())
    })?;
    out.flush()?;
    if !json {
        eprintln!("{count} events");
    }
    Ok(())
}

/// `topology add-node|move|merge|retire`: publishes the next topology
/// version; prints `{"version": N}`.
pub fn topology(what: Result<(std::path::PathBuf, proto::topology::Change)>) -> Result<()> {
    let (dir, change) = what?;
    let mut ledger = Ledger::open(&dir)?;
    let version = ledger.publish_topology("county administrator", change.clone())?;
    eprintln!("county-hub: topology v{version} published ({change:?}); it reaches every node with the next syncs");
    node::say!("{}", node::cli::json_line(&serde_json::json!({"version": version})));
    Ok(())
}
