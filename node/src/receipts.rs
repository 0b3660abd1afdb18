//! 县级已接收: the county's signed receipts of what it holds, per home lane
//! (`proto::files::Receipt`), and what a village makes of them.
//!
//! At the start of every file phase the county signs, for each lane it
//! shares with the peer, the highest seq of every origin it holds there and
//! the files of those events it still lacks; a township keeps the latest
//! receipt per lane and passes those of a village's lane on to the village.
//! Receipts are not events: a node of an earlier release simply gets none,
//! and no chain is held back for them.
//!
//! A village remembers when its township acknowledged its events
//! (`upstream_held`). Events the township held before a county receipt was
//! signed (plus a grace for the township's next session,
//! `receipt_grace_min`) that the receipt does not cover were not passed on:
//! the township withheld or lost them, and the village's staff are told.

use crate::error::Result;
use crate::ledger::Ledger;
use crate::store;
use proto::event::Lane;
use proto::files::{FileHash, Receipt, SignedReceipt};
use proto::{NodeId, Tier};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// The files referenced in lane `?1` that the county holds nowhere: read
/// from the partial index of references not held (`file_refs_missing`).
pub(crate) const MISSING: &str = "SELECT DISTINCT r.hash FROM file_refs r
     WHERE r.home = ?1 AND r.held = 0 AND NOT EXISTS (SELECT 1 FROM files_held h WHERE h.hash = r.hash)";

/// Whether any file referenced in a lane is held nowhere here (a seek of
/// the partial index [`MISSING`] reads).
const ANY_MISSING: &str = "SELECT 1 FROM file_refs WHERE home = ?1 AND held = 0 LIMIT 1";

/// Meta key: minutes a township has, after acknowledging events, to pass
/// them on before a county receipt that lacks them counts as withholding.
pub const GRACE_KEY: &str = "receipt_grace_min";
/// Default of [`GRACE_KEY`].
pub const GRACE_DEFAULT: u64 = 60;
/// A day: with no county receipt this long after the township
/// acknowledged events, staff are told too.
const SILENCE_MS: u64 = 24 * 3600 * 1000;

/// Longest a village leaves the file phase out of its sessions with the
/// county after the county signed the receipt it holds
/// ([`lets_files_wait`]): a county that lost a file since (a disk
/// restored from a backup) asks the village for it within this long.
pub const FILES_AT_LEAST_EVERY_MS: u64 = 3600 * 1000;

/// Whether the county's receipt `r` for a village's lane says that a file
/// phase with the county would move nothing the county lacks: signed at
/// most [`FILES_AT_LEAST_EVERY_MS`] from `county_now_ms` (the county's
/// time, as its Hello gave it) either way, listing no file of the lane as
/// missing, and covering the lane's `tips` (every origin's last seq held
/// here), so no event since brought a file it has not seen.
pub fn lets_files_wait(r: &SignedReceipt, tips: &[(NodeId, u64)], county_now_ms: u64) -> bool {
    county_now_ms.abs_diff(r.receipt.at_ms) <= FILES_AT_LEAST_EVERY_MS
        && r.receipt.missing.is_empty()
        && tips.iter().all(|(origin, seq)| r.covers(origin, *seq))
}

/// The county receipt held for `home`'s lane, if any.
pub fn held(conn: &Connection, home: &NodeId) -> Result<Option<SignedReceipt>> {
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT signed FROM county_receipts WHERE home = ?1")?
        .query_row([home.as_str()], |r| r.get(0))
        .optional()?;
    Ok(bytes.and_then(|b| proto::codec::decode("county receipt", &b).ok()))
}

/// Keeps a receipt from `peer` when it is genuine (signed by a key the
/// county enrolled for itself, or the topology names), of a lane in this
/// node's scope, and newer than the one held. A receipt that is not
/// genuine or not in scope goes to quarantine with the reason.
pub fn keep(
    conn: &Connection,
    topology: &proto::Topology,
    me: &NodeId,
    peer: &NodeId,
    r: SignedReceipt,
) -> Result<bool> {
    let county = topology.county().id.clone();
    let home = r.receipt.home.clone();
    let why = if !genuine(conn, topology, &r)? {
        Some(format!("a receipt for {home}'s lane from {peer} is not signed by the county"))
    } else if !proto::sync::lane_entitled(topology, me, &Lane::Home(home.clone())) {
        Some(format!("a receipt for {home}'s lane from {peer} is outside this node's scope"))
    } else {
        None
    };
    if let Some(why) = why {
        tracing::warn!("{why}");
        let at = r.receipt.at_ms;
        store::quarantine(conn, crate::wall_clock_ms(), peer, &county, at, "bad_receipt", &why, &[])?;
        return Ok(false);
    }
    let held = held(conn, &home)?;
    let newer = held.as_ref().is_none_or(|h| h.receipt.at_ms < r.receipt.at_ms);
    // At a village, a receipt its township relays that says what the held
    // one says is only a later time: kept only when the time can matter
    // (an acknowledgement it does not cover is pending, see
    // `Ledger::unconfirmed`). Otherwise nothing is written, and a sync
    // through the township that brings nothing new writes nothing. Only
    // from the township: its receipts come in the order the county signed
    // them (it keeps only newer ones), and one the county hands over
    // directly is signed then, so no receipt older than one passed over
    // here can arrive later and be taken for the latest (which a receipt
    // straight from the county, passed over, would allow). A township
    // keeps every newer one: it hands them down, and its villages judge by
    // their times.
    let only_later = held.as_ref().is_some_and(|h| {
        (&h.receipt.home, &h.receipt.upto, &h.receipt.missing, h.key)
            == (&r.receipt.home, &r.receipt.upto, &r.receipt.missing, r.key)
    });
    let relayed = topology.tier_of(peer) == Some(Tier::Township);
    if newer && only_later && relayed && topology.tier_of(me) == Some(Tier::Village) && !awaits_receipt(conn, &r)? {
        return Ok(false);
    }
    if newer {
        conn.prepare_cached(
            "INSERT INTO county_receipts (home, at_ms, signed) VALUES (?1, ?2, ?3)
             ON CONFLICT(home) DO UPDATE SET at_ms = excluded.at_ms, signed = excluded.signed",
        )?
        .execute(params![home.as_str(), r.receipt.at_ms as i64, proto::codec::encode(&r)])?;
    }
    Ok(newer)
}

/// Drops the county receipts the county's own Hello contradicts: it holds
/// less of a lane's chain than this node (`lacks`: lane, origin and the
/// position it holds), and the first event it lacks is one its receipt
/// says it holds (a county restored from a backup). Until a file phase
/// brings a new receipt, nothing here counts on the dropped one: the file
/// phase is not left out, no file is pruned for it, and no case shows as
/// received by the county. Returns the lanes whose receipts were dropped.
pub fn drop_contradicted(conn: &Connection, lacks: &[(Lane, NodeId, u64)]) -> Result<Vec<NodeId>> {
    let mut dropped: Vec<NodeId> = Vec::new();
    for (lane, origin, there) in lacks {
        let Lane::Home(home) = lane else { continue };
        if dropped.contains(home) {
            continue;
        }
        let Some(r) = held(conn, home)? else { continue };
        let Some(first) = store::lane_events(conn, lane, origin, *there, there + 1)?.into_iter().next() else {
            continue;
        };
        if r.covers(&first.id.origin, first.id.seq) {
            conn.prepare_cached("DELETE FROM county_receipts WHERE home = ?1")?.execute([home.as_str()])?;
            tracing::warn!(
                lane = %home, origin = %origin, position = there,
                "the county lacks events its receipt says it holds (restored from a backup?): the receipt is dropped"
            );
            dropped.push(home.clone());
        }
    }
    Ok(dropped)
}

/// Whether `r` is signed by the county: under a key the topology names
/// for it, or one the county enrolled for itself and has not revoked.
pub(crate) fn genuine(conn: &Connection, topology: &proto::Topology, r: &SignedReceipt) -> Result<bool> {
    let county = &topology.county().id;
    let key_is_county = topology.verifying_key(county).map(|k| proto::event::KeyId::of(&k)) == Some(r.key)
        || store::key_status(conn, county, &r.key)? == proto::sync::KeyStatus::Enrolled;
    Ok(key_is_county && r.signature_holds())
}

/// Whether something an upstream node acknowledged of this node's own is
/// not covered by `r`: an event past its `upto`, or a file sent whole that
/// it lists as missing. Only then does a receipt's time matter here.
fn awaits_receipt(conn: &Connection, r: &SignedReceipt) -> Result<bool> {
    let mut stmt = conn.prepare_cached("SELECT origin, MAX(seq) FROM upstream_held GROUP BY origin")?;
    let acked: Vec<(String, i64)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    if acked.into_iter().any(|(origin, seq)| !r.covers(&NodeId::new(origin), seq as u64)) {
        return Ok(true);
    }
    let mut sent = conn.prepare_cached("SELECT 1 FROM upstream_files WHERE hash = ?1")?;
    for m in &r.receipt.missing {
        if sent.exists([m.0.as_slice()])? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What this village's township acknowledged and the county has not
/// receipted, when that means the township withheld or lost it.
#[derive(Debug, Clone, Serialize)]
pub struct Unconfirmed {
    /// The upstream node that acknowledged the events.
    pub peer: String,
    /// When it first held them (ms).
    pub since_ms: u64,
    /// Events acknowledged and not receipted (counted by seq).
    pub events: u64,
    /// This node's files the upstream node was sent whole that the
    /// county's receipt lists as missing (or no receipt came at all).
    pub files: u64,
    /// The latest county receipt for this lane (ms), if any.
    pub latest_receipt_ms: Option<u64>,
}

impl Ledger {
    /// The home lanes whose receipts this node hands `peer`: those the two
    /// share, when this node is above it (none upward).
    fn receipt_homes(&self, peer: &NodeId) -> Option<Vec<NodeId>> {
        let topology = self.topology();
        if self.identity().tier() <= topology.tier_of(peer).unwrap_or(Tier::Village) {
            return None;
        }
        let shared = proto::sync::shared_lanes(topology, self.me(), peer).unwrap_or_default();
        Some(
            shared
                .into_iter()
                .filter_map(|l| match l {
                    Lane::Home(h) => Some(h),
                    Lane::Global => None,
                })
                .collect(),
        )
    }

    /// Whether [`Ledger::receipts_for`] `peer` is a few seeks and at most
    /// one signature: the two share at most one lane, and (at the county)
    /// no file of it is missing here. A township's many lanes, or a long
    /// missing list (a peer can name files it never sends), are not.
    pub fn receipts_are_quick(&self, peer: &NodeId) -> Result<bool> {
        let Some(homes) = self.receipt_homes(peer) else { return Ok(true) };
        match homes.as_slice() {
            [] => Ok(true),
            [home] if self.identity().tier() == Tier::County => {
                Ok(!self.store().conn().prepare_cached(ANY_MISSING)?.exists([home.as_str()])?)
            }
            [_] => Ok(true),
            _ => Ok(false),
        }
    }

    /// The receipts to hand `peer` at the start of a file phase: from the
    /// county, fresh ones for every lane the two share; from a township,
    /// those it holds of the peer's lanes; nothing upward.
    pub fn receipts_for(&self, peer: &NodeId, now_ms: u64) -> Result<Vec<SignedReceipt>> {
        let Some(homes) = self.receipt_homes(peer) else { return Ok(Vec::new()) };
        let conn = self.store().conn();
        if self.identity().tier() != Tier::County {
            let mut out = Vec::new();
            for home in homes {
                out.extend(held(conn, &home)?);
            }
            return Ok(out);
        }
        let key = self.signing_key()?;
        let mut out = Vec::new();
        for home in homes {
            let upto = store::lane_tips(conn, &Lane::Home(home.clone()))?;
            if upto.is_empty() {
                continue;
            }
            let missing: Vec<FileHash> = {
                let mut stmt = conn.prepare_cached(MISSING)?;
                let rows = stmt.query_map([home.as_str()], |r| r.get::<_, Vec<u8>>(0))?;
                rows.filter_map(|h| h.ok()?.try_into().ok().map(FileHash)).collect()
            };
            out.push(SignedReceipt::sign(&key, Receipt { home, upto, missing, at_ms: now_ms }));
        }
        Ok(out)
    }

    /// Whether the county's receipt covers every event of a case.
    pub fn county_received(&self, case: &proto::CaseState) -> Result<bool> {
        if self.identity().tier() == Tier::County {
            return Ok(true);
        }
        let Some(r) = held(self.store().conn(), &case.home)? else { return Ok(false) };
        let county = self.topology().county().id.clone();
        Ok(case.clock.iter().all(|(origin, seq)| origin.node() == county || r.covers(origin, *seq)))
    }

    /// Whether the county's receipt covers a file of a case.
    pub fn county_has_file(&self, case: &proto::CaseState, file: &proto::fold::CaseFile) -> Result<bool> {
        if self.identity().tier() == Tier::County {
            return Ok(self.holds_file(&file.file.hash));
        }
        let Some(r) = held(self.store().conn(), &case.home)? else { return Ok(false) };
        Ok(r.covers_file(&file.event.origin, file.event.seq, &file.file.hash))
    }

    /// Notes, after a session with an upstream node other than the county,
    /// how far it now holds this node's own chains in its home lane.
    pub fn note_upstream_held(&mut self, peer: &NodeId, now_ms: u64, files_sent: &[FileHash]) -> Result<()> {
        let conn = self.store().conn();
        let me = self.me().clone();
        for hash in files_sent {
            // Only files of this node's own lane: the village answers for those.
            conn.prepare_cached(
                "INSERT OR IGNORE INTO upstream_files (hash, peer, at_ms)
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM file_lanes WHERE hash = ?1 AND home = ?4)",
            )?
            .execute(params![hash.0.to_vec(), peer.as_str(), now_ms as i64, me.as_str()])?;
        }
        let tips = store::lane_tips(conn, &Lane::Home(me.clone()))?;
        for (origin, seq) in tips.into_iter().filter(|(o, _)| o.node() == me) {
            let (origin, seq) = (origin.0, seq as i64);
            // Read first: a write that adds nothing is still a commit, and
            // the store's session marks itself open before its first one
            // (`integrity::Session::watch_commits`).
            let noted = conn
                .prepare_cached("SELECT 1 FROM upstream_held WHERE origin = ?1 AND seq >= ?2")?
                .exists(params![origin, seq])?;
            if noted {
                continue;
            }
            conn.prepare_cached(
                "INSERT INTO upstream_held (origin, seq, peer, at_ms) SELECT ?1, ?2, ?3, ?4
                 WHERE NOT EXISTS (SELECT 1 FROM upstream_held WHERE origin = ?1 AND seq >= ?2)",
            )?
            .execute(params![origin, seq, peer.as_str(), now_ms as i64])?;
        }
        Ok(())
    }

    /// What an upstream node acknowledged of this node's own events and
    /// the county has not receipted, when a county receipt signed after
    /// the grace, or a day of silence, shows it was not passed on.
    pub fn unconfirmed(&self, now_ms: u64) -> Result<Option<Unconfirmed>> {
        let conn = self.store().conn();
        let me = self.me().clone();
        let grace: u64 = store::meta_get(conn, GRACE_KEY)?.unwrap_or(GRACE_DEFAULT) * 60_000;
        let receipt = held(conn, &me)?;
        let latest = receipt.as_ref().map(|r| r.receipt.at_ms);
        let mut stmt = conn.prepare_cached("SELECT origin, seq, peer, at_ms FROM upstream_held ORDER BY at_ms")?;
        let rows: Vec<(String, i64, String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out: Option<Unconfirmed> = None;
        for (origin, seq, peer, at) in rows {
            let (origin, seq, at) = (NodeId::new(origin), seq as u64, at as u64);
            if receipt.as_ref().is_some_and(|r| r.covers(&origin, seq)) {
                continue;
            }
            let receipted = receipt
                .as_ref()
                .and_then(|r| r.receipt.upto.iter().find(|(o, _)| *o == origin).map(|(_, s)| *s))
                .unwrap_or(0);
            let overdue = latest.is_some_and(|r| r > at + grace) || now_ms > at + SILENCE_MS;
            if !overdue {
                continue;
            }
            let o =
                out.get_or_insert(Unconfirmed { peer, since_ms: at, events: 0, files: 0, latest_receipt_ms: latest });
            o.events = o.events.max(seq - receipted);
        }
        // Files sent whole to the upstream node that the county's receipt,
        // signed after the grace, still lists as missing (or no receipt in
        // a day): relayed events without their files.
        let mut stmt = conn.prepare_cached("SELECT hash, peer, at_ms FROM upstream_files ORDER BY at_ms")?;
        let rows: Vec<(Vec<u8>, String, i64)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?;
        for (hash, peer, at) in rows {
            let Ok(hash) = <[u8; 32]>::try_from(hash).map(FileHash) else { continue };
            let at = at as u64;
            let withheld = receipt.as_ref().is_none_or(|r| r.receipt.missing.contains(&hash));
            let overdue = latest.is_some_and(|r| r > at + grace) || now_ms > at + SILENCE_MS;
            if withheld && overdue {
                let o = out.get_or_insert(Unconfirmed {
                    peer,
                    since_ms: at,
                    events: 0,
                    files: 0,
                    latest_receipt_ms: latest,
                });
                o.files += 1;
            }
        }
        Ok(out)
    }
}

/// A file pruned from this node (see [`Ledger::prune_files`]).
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub hash: String,
    pub size: u64,
}

impl Ledger {
    /// Bounds a laptop's disk: removes the bytes of files whose every case
    /// is finished and was last changed more than `days` ago, and that the
    /// county's receipt covers (so a good copy is safe there). They are not
    /// asked for again until fetched back ([`Ledger::fetch_file_back`]).
    /// The county keeps every file; it prunes nothing.
    pub fn prune_files(&mut self, days: u64, now_ms: u64) -> Result<Vec<Pruned>> {
        if self.identity().tier() == Tier::County {
            return Err(crate::Declined::Invalid("the county keeps every file; it prunes none".into()).into());
        }
        let cutoff = now_ms.saturating_sub(days * 24 * 3600 * 1000);
        let conn = self.store().conn();
        let held: Vec<(Vec<u8>, i64)> = {
            let mut stmt = conn.prepare("SELECT hash, size FROM files_held")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::new();
        for (hash, size) in held {
            let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()).map(FileHash) else { continue };
            let cases: Vec<String> = {
                let mut stmt = conn.prepare_cached("SELECT case_id FROM file_refs WHERE hash = ?1")?;
                let rows = stmt.query_map([&hash.0[..]], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut prunable = !cases.is_empty();
            for id in &cases {
                let Some(st) = store::get_case(conn, &proto::CaseId(id.clone()))? else {
                    prunable = false;
                    break;
                };
                let covered = st
                    .files
                    .iter()
                    .filter(|f| f.file.hash == hash)
                    .all(|f| self.county_has_file(&st, f).unwrap_or(false));
                if !(st.state.is_done() && st.updated.wall_ms < cutoff && covered) {
                    prunable = false;
                    break;
                }
            }
            if !prunable {
                continue;
            }
            conn.prepare_cached("INSERT OR REPLACE INTO files_pruned (hash, at_ms) VALUES (?1, ?2)")?
                .execute(params![&hash.0[..], now_ms as i64])?;
            conn.prepare_cached("DELETE FROM files_held WHERE hash = ?1")?.execute([&hash.0[..]])?;
            conn.prepare_cached("DELETE FROM file_lanes WHERE hash = ?1")?.execute([&hash.0[..]])?;
            let _ = std::fs::remove_file(crate::blobs::path_of(self.dir(), &hash));
            out.push(Pruned { hash: hash.to_hex(), size: size as u64 });
        }
        Ok(out)
    }

    /// Asks for a pruned file again: it comes back with the next sync.
    pub fn fetch_file_back(&mut self, hash: &FileHash) -> Result<bool> {
        let n =
            self.store().conn().prepare_cached("DELETE FROM files_pruned WHERE hash = ?1")?.execute([&hash.0[..]])?;
        Ok(n > 0)
    }

    /// Whether a file was pruned here (see [`Ledger::prune_files`]).
    pub fn file_pruned(&self, hash: &FileHash) -> Result<bool> {
        Ok(self
            .store()
            .conn()
            .prepare_cached("SELECT 1 FROM files_pruned WHERE hash = ?1")?
            .query_row([&hash.0[..]], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::topology::NodeInfo;

    fn info(id: &str, tier: Tier, parent: Option<&str>, key: Option<String>) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(id),
            tier,
            parent: parent.map(NodeId::new),
            name: id.into(),
            verifying_key: key,
            former_parents: vec![],
            retired: false,
            retired_at: None,
        }
    }

    /// A village passes over a receipt its township relays that only says
    /// a later time (nothing written), unless an acknowledgement waits on
    /// it; one straight from the county is kept, so that a receipt signed
    /// before it, relayed later by the township, is not taken for the
    /// latest (the county may have lost a file in between: the older
    /// receipt would say it holds it).
    #[test]
    fn a_village_passes_over_only_a_relayed_receipt_that_says_nothing_new() {
        let dir = tempfile::tempdir().unwrap();
        let county_key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let topology = proto::Topology::new(
            String::new(),
            vec![
                info("511421", Tier::County, None, Some(hex::encode(county_key.verifying_key().to_bytes()))),
                info("511421101", Tier::Township, Some("511421"), None),
                info("511421101001", Tier::Village, Some("511421101"), None),
            ],
        )
        .unwrap();
        let store = crate::store::Store::create(dir.path()).unwrap();
        let conn = store.conn();
        let (v, t, c) = (NodeId::new("511421101001"), NodeId::new("511421101"), NodeId::new("511421"));
        let file = FileHash([3; 32]);
        let sign = |upto: u64, missing: Vec<FileHash>, at_ms| {
            let receipt = Receipt { home: v.clone(), upto: vec![(v.clone(), upto)], missing, at_ms };
            SignedReceipt::sign(&county_key, receipt)
        };
        let held_at = || held(conn, &v).unwrap().unwrap().receipt.at_ms;
        conn.execute(
            "INSERT INTO upstream_files (hash, peer, at_ms) VALUES (?1, ?2, 0)",
            params![file.0.to_vec(), t.as_str()],
        )
        .unwrap();
        assert!(keep(conn, &topology, &v, &t, sign(5, vec![file], 100)).unwrap());
        // Relayed, same content, later: an acknowledged file is listed
        // missing, so the time matters and it is kept.
        assert!(keep(conn, &topology, &v, &t, sign(5, vec![file], 110)).unwrap());
        // Nothing waits on it any more: passed over.
        assert!(keep(conn, &topology, &v, &t, sign(5, vec![], 120)).unwrap());
        assert!(!keep(conn, &topology, &v, &t, sign(5, vec![], 130)).unwrap());
        assert_eq!(held_at(), 120, "nothing written");
        // An event acknowledged upstream and not covered: kept.
        conn.execute("INSERT INTO upstream_held (origin, seq, peer, at_ms) VALUES (?1, 6, ?2, 0)", params![v.0, t.0])
            .unwrap();
        assert!(keep(conn, &topology, &v, &t, sign(5, vec![], 140)).unwrap());
        // Straight from the county, same content, nothing waiting: kept
        // all the same, and a receipt signed before it (when the county
        // lacked the file), relayed later, is refused as older.
        assert!(keep(conn, &topology, &v, &c, sign(6, vec![], 200)).unwrap());
        assert!(keep(conn, &topology, &v, &c, sign(6, vec![], 300)).unwrap());
        assert!(!keep(conn, &topology, &v, &t, sign(6, vec![file], 250)).unwrap());
        assert_eq!(held_at(), 300);
        assert_eq!(held(conn, &v).unwrap().unwrap().receipt.missing, vec![]);
    }

    /// Issue 9: the county's receipt lets a village leave the file phase
    /// out only while it is recent, lists nothing missing and covers every
    /// chain of the lane as held here.
    #[test]
    fn a_receipt_lets_the_files_wait_only_while_it_says_nothing_would_move() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let (v, t) = (NodeId::new("511421101001"), NodeId::new("511421101"));
        let receipt = |upto: Vec<(NodeId, u64)>, missing: Vec<FileHash>| {
            SignedReceipt::sign(&key, Receipt { home: v.clone(), upto, missing, at_ms: 10_000_000 })
        };
        let whole = receipt(vec![(v.clone(), 5), (t.clone(), 2)], vec![]);
        let tips = [(v.clone(), 5), (t.clone(), 2)];
        let now = 10_000_000;
        assert!(lets_files_wait(&whole, &tips, now));
        assert!(lets_files_wait(&whole, &tips, now + FILES_AT_LEAST_EVERY_MS));
        assert!(!lets_files_wait(&whole, &tips, now + FILES_AT_LEAST_EVERY_MS + 1), "an hour on, the files go");
        assert!(!lets_files_wait(&whole, &tips, now - FILES_AT_LEAST_EVERY_MS - 1), "a clock an hour behind");
        assert!(!lets_files_wait(&whole, &[(v.clone(), 6), (t.clone(), 2)], now), "an event since");
        assert!(!lets_files_wait(&whole, &[(v.clone(), 5), (t.clone(), 2), (NodeId::new("511421"), 1)], now));
        assert!(!lets_files_wait(&receipt(vec![(v.clone(), 5), (t.clone(), 2)], vec![FileHash([3; 32])]), &tips, now));
        assert!(lets_files_wait(&whole, &[], now), "a lane with nothing in it");
    }

    /// Issue 9 (found by review): a county restored from a backup shows
    /// in its Hello that it lacks events its receipt covers; the receipt
    /// is then dropped, so a later quiet session does not leave the file
    /// phase out on its word (nor a prune delete a file for it).
    #[test]
    fn a_receipt_the_countys_hello_contradicts_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::create(dir.path()).unwrap();
        let conn = store.conn();
        let chain = crate::store::tests::test_chain("511421101001", 3);
        for e in &chain {
            crate::store::insert_event(conn, e).unwrap();
        }
        let v = chain[0].id.origin.clone();
        let lane = chain[0].lane.clone();
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let keep_receipt = |upto: u64| {
            let r = SignedReceipt::sign(
                &key,
                Receipt { home: v.clone(), upto: vec![(v.clone(), upto)], missing: vec![], at_ms: 1 },
            );
            conn.execute(
                "INSERT OR REPLACE INTO county_receipts (home, at_ms, signed) VALUES (?1, 1, ?2)",
                params![v.as_str(), proto::codec::encode(&r)],
            )
            .unwrap();
        };
        keep_receipt(1);
        // The county holds one event, its receipt says one: no contradiction.
        assert!(drop_contradicted(conn, &[(lane.clone(), v.clone(), 1)]).unwrap().is_empty());
        assert!(held(conn, &v).unwrap().is_some());
        // Its receipt says three, it holds one: dropped.
        keep_receipt(3);
        assert_eq!(drop_contradicted(conn, &[(lane.clone(), v.clone(), 1)]).unwrap(), vec![v.clone()]);
        assert!(held(conn, &v).unwrap().is_none());
        // A chain of another lane, or none held beyond, changes nothing.
        keep_receipt(3);
        assert!(drop_contradicted(conn, &[(Lane::Global, v.clone(), 0), (lane, v.clone(), 3)]).unwrap().is_empty());
        assert!(held(conn, &v).unwrap().is_some());
    }
}
