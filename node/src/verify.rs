//! `verify`: the store checked against its source of truth (events,
//! chains, seals) and its derived rows, with a typed report; with repair,
//! the derived rows rebuilt from the events.

use crate::integrity;
use crate::ledger::Ledger;
use crate::store;
use anyhow::Result;
use proto::NodeId;
use serde::Serialize;
use std::path::Path;

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Nothing is wrong.
    pub ok: bool,
    /// Everything wrong, in words.
    pub problems: Vec<String>,
    /// Everything wrong is of a kind `--repair` rebuilds.
    pub repairable: bool,
    /// What `--repair` mended.
    pub repaired: Vec<String>,
    pub chains: Vec<ChainReport>,
    /// Case rows held, when they can be counted.
    pub cases: Option<u64>,
}

/// One (origin, lane) chain as verified.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    pub origin: NodeId,
    pub lane: String,
    pub events: usize,
    pub head: String,
}

/// Checks the store: SQLite's check of the file, every event (decoded and
/// matched with its stored hash), hash chains, seals, and every derived row
/// against a fresh fold of the events. Reads only, unless `repair`: then
/// every index and derived table is rebuilt from the events and the store
/// checked again. Damage is reported, never a reason to stop. Returns a
/// JSON report with `ok`, and `repairable` when everything wrong is of a
/// kind `--repair` rebuilds.
impl Ledger {
    /// Checks the store: SQLite's check of the file, every event (decoded
    /// and matched with its stored hash), hash chains, seals, and every
    /// derived row against a fresh fold of the events. Reads only, unless
    /// `repair`: then every index and derived table is rebuilt from the
    /// events and the store checked again. Damage is reported, never a
    /// reason to stop.
    pub fn verify(&mut self, dir: &Path, repair: bool) -> Result<VerifyReport> {
        verify(self, dir, repair)
    }
}

fn verify(ledger: &mut Ledger, dir: &Path, repair: bool) -> Result<VerifyReport> {
    let health = integrity::check(ledger.store().conn());
    // The source of truth: events, chains, seals. Nothing here rebuilds it.
    let (chain_problems, chains) = check_chains(ledger);
    let lost: Vec<String> = health.events.iter().cloned().chain(chain_problems).collect();
    let derived_of = |ledger: &Ledger| {
        integrity::compare_derived(ledger.store().conn())
            .unwrap_or_else(|e| vec![format!("comparing the derived rows failed: {e:#}")])
    };
    let mut structure = health.structure.clone();
    let mut derived = derived_of(ledger);
    let mut repaired = Vec::new();
    if repair {
        let before: Vec<String> = structure.iter().chain(&derived).cloned().collect();
        let failure = integrity::repair(ledger.store_mut()).err().map(|e| format!("the repair failed: {e:#}"));
        structure = integrity::check(ledger.store().conn()).structure;
        structure.extend(failure);
        derived = derived_of(ledger);
        repaired = before.into_iter().filter(|p| !structure.contains(p) && !derived.contains(p)).collect();
        if lost.is_empty() && structure.is_empty() && derived.is_empty() {
            integrity::clear_damage(dir)?;
        } else {
            // What the repair could not mend refuses every later write, as
            // a check at opening would have (the repair's own session
            // leaves the store recorded as it found it: committed to).
            let left =
                integrity::Health { structure: structure.clone(), events: lost.clone(), derived: derived.clone() };
            integrity::record_damage(dir, &left);
        }
    }
    let cases = ledger.store().conn().query_row("SELECT COUNT(*) FROM cases", [], |r| r.get::<_, u64>(0)).ok();
    let problems: Vec<&String> = lost.iter().chain(&structure).chain(&derived).collect();
    Ok(VerifyReport {
        ok: problems.is_empty(),
        repairable: lost.is_empty() && !problems.is_empty(),
        problems: problems.into_iter().cloned().collect(),
        repaired,
        chains,
        cases,
    })
}

/// Hash chains and seals of every event that decodes (those that do not
/// are reported by the health check; their chains then show a gap).
fn check_chains(ledger: &Ledger) -> (Vec<String>, Vec<ChainReport>) {
    let conn = ledger.store().conn();
    let mut problems: Vec<String> = Vec::new();
    let mut chains = Vec::new();
    let mut by_chain: std::collections::BTreeMap<(NodeId, proto::Lane), Vec<proto::event::Header>> = Default::default();
    let walked = store::for_each_decodable_event(conn, |e| {
        by_chain.entry((e.id.origin.clone(), e.lane.clone())).or_default().push(e.header());
        Ok(())
    });
    if let Err(e) = walked {
        problems.push(format!("reading the events failed: {e:#}"));
    }
    let seals = store::seals(conn).unwrap_or_else(|e| {
        problems.push(format!("reading the seals failed: {e:#}"));
        Vec::new()
    });
    for ((origin, lane), mut headers) in by_chain {
        headers.sort_by_key(|h| h.pos);
        let tip = match proto::event::verify_chain(&origin, &lane, &proto::event::ChainTip::GENESIS, &headers) {
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
            Ok(tip) => tip,
        };
        match seals.iter().find(|s| s.origin == origin && s.lane == lane) {
            None if store::vouched_by_revocation(conn, &lane, &origin, tip.pos, &tip.hash).unwrap_or(false) => {}
            None => problems.push(format!("no seal held for the chain of {origin} in lane {lane}")),
            Some(seal) => {
                let node = origin.node();
                let status = store::key_status(conn, &node, &seal.key).unwrap_or(proto::sync::KeyStatus::Unknown);
                let published = ledger.topology().verifying_key(&node).map(|k| proto::event::KeyId::of(&k));
                let trusted = match &status {
                    proto::sync::KeyStatus::Enrolled => true,
                    proto::sync::KeyStatus::Revoked { upto } => {
                        upto.iter().any(|(l, o, p, h)| l == &lane && o == &origin && *p == seal.pos && *h == seal.head)
                    }
                    proto::sync::KeyStatus::Unknown => published == Some(seal.key),
                };
                match seal.key.verifying_key().filter(|_| trusted) {
                    None => problems
                        .push(format!("the seal of {origin} in lane {lane} is under a key the county did not enrol")),
                    Some(k) => {
                        if let Err(e) = seal.verify(&k) {
                            problems.push(e.to_string());
                        }
                    }
                }
                // Events past the last seal are normal (the rest of a segment
                // was deferred or refused); the seal must match the event it names.
                let sealed = headers.iter().find(|h| h.pos == seal.pos).map(|h| h.hash());
                if seal.pos > tip.pos || sealed != Some(seal.head) {
                    problems.push(format!("the seal of {origin} in lane {lane} does not match the stored events"));
                }
            }
        }
        chains.push(ChainReport {
            origin: origin.clone(),
            lane: lane.key().to_string(),
            events: headers.len(),
            head: tip.hash.to_hex(),
        });
    }
    (problems, chains)
}
