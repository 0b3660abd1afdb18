//! The SQLite store: one file per node (`node.db`), WAL, synchronous=FULL.
//!
//! Events, seals and quarantined input are the source of truth; the `cases`
//! and `person_index` tables are derived from events and can be rebuilt at
//! any time ([`Store::rebuild`]). Nothing is reported written before the
//! transaction that holds it has committed to disk.
//!
//! A store is opened for writing ([`Store::open`]: a session, see
//! [`crate::integrity`], and refused when damaged) or for reading
//! ([`Store::open_read`]: read-only, without migrations, when the directory
//! or file cannot be written, e.g. on read-only media).
//!
//! Each connection keeps a page cache sized by the tier of the node that
//! owns the store ([`page_cache_kib`]); a process that holds many nodes'
//! stores at once caps it ([`cap_page_cache`]).

use crate::integrity;
use anyhow::{bail, Context, Result};
use proto::event::{ChainTip, KeyId, Seal};
use proto::fold::CaseState;
use proto::sync::KeyStatus;
use proto::{codec, CaseId, Event, Hash, Hlc, Lane, NodeId, Tier};
use rusqlite::OpenFlags;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The columns an event is read from (`event_rows` as `e`, the names of
/// its origin and lane as `o` and `l`, see [`event_rows`]): its header
/// fields, its content, and the stored hash of the previous event of its
/// chain (its `prev`; found through the lane index). [`event_row`] reads
/// them.
macro_rules! event_columns {
    () => {
        "o.name, e.seq, l.name, e.pos, e.hlc_wall, e.hlc_logical, e.content,
         (SELECT p.hash FROM event_rows p WHERE p.lane = e.lane AND p.origin = e.origin AND p.pos = e.pos - 1),
         c.name"
    };
}
pub(crate) use event_columns;

/// `event_rows` as `e` with the names of its origin (`o`), lane (`l`) and
/// case (`c`).
macro_rules! event_rows {
    () => {
        "event_rows e JOIN names o ON o.id = e.origin JOIN names l ON l.id = e.lane JOIN names c ON c.id = e.case_no"
    };
}
pub(crate) use event_rows;

/// The database file inside a data directory.
pub const DB_FILE: &str = "node.db";

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many have run. Append only: never edit a released step.
const MIGRATIONS: &[&str] = &[
    // 1: the ledger and its derived views.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE events (
        origin TEXT NOT NULL, seq INTEGER NOT NULL, lane TEXT NOT NULL, pos INTEGER NOT NULL,
        hash BLOB NOT NULL, case_id TEXT NOT NULL, hlc_wall INTEGER NOT NULL, hlc_logical INTEGER NOT NULL,
        body BLOB NOT NULL, PRIMARY KEY (origin, seq)) WITHOUT ROWID;
     CREATE INDEX events_case ON events(case_id);
     CREATE UNIQUE INDEX events_lane ON events(lane, origin, pos);
     CREATE TABLE seals (
        origin TEXT NOT NULL, lane TEXT NOT NULL, pos INTEGER NOT NULL, seq INTEGER NOT NULL,
        head BLOB NOT NULL, signature BLOB NOT NULL, PRIMARY KEY (origin, lane)) WITHOUT ROWID;
     CREATE TABLE revoked (node TEXT PRIMARY KEY, event_origin TEXT NOT NULL, event_seq INTEGER NOT NULL);
     CREATE TABLE equivocations (
        origin TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL, case_id TEXT NOT NULL,
        body BLOB NOT NULL, PRIMARY KEY (origin, seq, hash)) WITHOUT ROWID;
     CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, from_node TEXT NOT NULL,
        origin TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT NOT NULL, event BLOB NOT NULL);
     CREATE UNIQUE INDEX quarantine_once ON quarantine(origin, seq, reason);
     CREATE TABLE cases (
        case_id TEXT PRIMARY KEY, item TEXT NOT NULL, state TEXT NOT NULL, home TEXT NOT NULL,
        handler TEXT NOT NULL, flagged INTEGER NOT NULL, updated_wall INTEGER NOT NULL,
        folded BLOB NOT NULL);
     CREATE INDEX cases_state ON cases(state);
     CREATE INDEX cases_home ON cases(home);
     CREATE TABLE person_index (lookup TEXT NOT NULL, case_id TEXT NOT NULL,
        PRIMARY KEY (lookup, case_id)) WITHOUT ROWID;",
    // 2: events of this node's own chains set aside when another copy of
    // the node (a restored backup, a copied directory) wrote a different
    // history. Never deleted: re-entered under a new incarnation, and the
    // row says as what.
    "CREATE TABLE set_aside (
        origin TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL, at_ms INTEGER NOT NULL,
        event BLOB NOT NULL, outcome TEXT, PRIMARY KEY (origin, seq, hash)) WITHOUT ROWID;",
    // 3: the keys and certificates the county enrolled and revoked, kept
    // beside the global-lane events that say so (in the same transaction).
    "CREATE TABLE node_keys (
        node TEXT NOT NULL, key BLOB NOT NULL, certificate BLOB NOT NULL, revoked INTEGER NOT NULL,
        status BLOB NOT NULL, PRIMARY KEY (node, key)) WITHOUT ROWID;
     CREATE INDEX node_keys_certificate ON node_keys(certificate);
     ALTER TABLE seals ADD COLUMN key BLOB NOT NULL DEFAULT x'';",
    // 4: the seal at every checkpoint position of a chain (source of truth,
    // like `seals`), so long runs travel in segments that end at a seal.
    "CREATE TABLE checkpoints (
        origin TEXT NOT NULL, lane TEXT NOT NULL, pos INTEGER NOT NULL, seq INTEGER NOT NULL,
        head BLOB NOT NULL, signature BLOB NOT NULL, key BLOB NOT NULL, PRIMARY KEY (origin, lane, pos)) WITHOUT ROWID;",
    // 5: vouchers for incarnations (derived from `incarnate` events, kept
    // beside them in the same transaction).
    "CREATE TABLE vouchers (
        origin TEXT PRIMARY KEY, after_wall INTEGER NOT NULL, after_logical INTEGER NOT NULL) WITHOUT ROWID;",
    // 6: the kind of every quarantine entry beside its text.
    "ALTER TABLE quarantine ADD COLUMN kind TEXT NOT NULL DEFAULT 'other';",
    // 7: the desks. Staff accounts and the access log are this node's own
    // (never synced); the case rows gain what lists filter and sort on, and
    // an index for each filter of the lists (node::query), measured on
    // 1.5 M cases by `county-sim bench-desk`: home and state together (a
    // township's cases in one state; the dashboard's counts), the work
    // queue's holder in date order with its state, the item with the date
    // taken, the rating. `cases_home` is a prefix of `cases_home_state`.
    "CREATE TABLE staff (
        login TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, password TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
        locked_until INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE access_log (
        id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, login TEXT NOT NULL, case_id TEXT NOT NULL,
        what TEXT NOT NULL);
     ALTER TABLE cases ADD COLUMN applicant TEXT NOT NULL DEFAULT '';
     ALTER TABLE cases ADD COLUMN created_wall INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE cases ADD COLUMN rating INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX cases_updated ON cases(updated_wall, case_id);
     CREATE INDEX cases_home_updated ON cases(home, updated_wall);
     DROP INDEX cases_home;
     CREATE INDEX cases_home_state ON cases(home, state);
     CREATE INDEX cases_handler ON cases(handler, updated_wall, state);
     CREATE INDEX cases_item ON cases(item, created_wall);
     CREATE INDEX cases_rating ON cases(rating);
     CREATE TABLE contacts (node TEXT PRIMARY KEY, last_ms INTEGER NOT NULL) WITHOUT ROWID;",
    // 8: time limits (限时办结): each case's deadlines under the node's
    // working-day calendar, as days in China since 1970 (derived).
    "ALTER TABLE cases ADD COLUMN due_day INTEGER;
     ALTER TABLE cases ADD COLUMN yellow_day INTEGER;
     ALTER TABLE cases ADD COLUMN finished_day INTEGER;
     ALTER TABLE cases ADD COLUMN on_time INTEGER;
     CREATE INDEX cases_due ON cases(due_day) WHERE finished_day IS NULL AND due_day IS NOT NULL;",
    // 9: open follow-ups of poor ratings per case (derived).
    "ALTER TABLE cases ADD COLUMN open_followups INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX cases_followups ON cases(open_followups) WHERE open_followups > 0;",
    // 10: the 一件事 bundle a case was taken in (derived from its field).
    "ALTER TABLE cases ADD COLUMN bundle TEXT;
     CREATE INDEX cases_bundle ON cases(bundle) WHERE bundle IS NOT NULL;",
    // 11: 帮代办 agents and what the statistics count (derived).
    "ALTER TABLE cases ADD COLUMN agent TEXT;
     ALTER TABLE cases ADD COLUMN accepted_wall INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE cases ADD COLUMN days_used INTEGER;
     ALTER TABLE cases ADD COLUMN tolerated INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX cases_agent ON cases(agent) WHERE agent IS NOT NULL;
     CREATE INDEX cases_created ON cases(created_wall);",
    // 12: the earliest due day of a case's open follow-ups (derived), and
    // the applicant's name for searches by its start.
    "ALTER TABLE cases ADD COLUMN followup_due_day INTEGER;
     CREATE INDEX cases_applicant ON cases(applicant);",
    // 13: material files. `file_refs` (derived) names the files each
    // case's events attach; `files_held` (not derived: it follows the
    // files/ folder) what this node holds, under whose lane key it is
    // sealed, and its outline once computed.
    "CREATE TABLE file_refs (hash BLOB NOT NULL, case_id TEXT NOT NULL, home TEXT NOT NULL, size INTEGER NOT NULL,
                             PRIMARY KEY (hash, case_id)) WITHOUT ROWID;
     CREATE INDEX file_refs_home ON file_refs(home);
     CREATE TABLE files_held (hash BLOB PRIMARY KEY, size INTEGER NOT NULL, home TEXT NOT NULL,
                              outline BLOB) WITHOUT ROWID;",
    // 14: 县级已接收: the latest county receipt per home lane (signed; kept
    // as received), and when an upstream node acknowledged this node's
    // own events.
    "CREATE TABLE county_receipts (home TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, signed BLOB NOT NULL) WITHOUT ROWID;
     CREATE TABLE upstream_held (origin TEXT NOT NULL, seq INTEGER NOT NULL, peer TEXT NOT NULL,
                                 at_ms INTEGER NOT NULL, PRIMARY KEY (origin, seq)) WITHOUT ROWID;",
    // 15: the lanes each held file is held for (attached there, or
    // received for it): a file is sent for a lane only if held for it.
    "CREATE TABLE file_lanes (hash BLOB NOT NULL, home TEXT NOT NULL, PRIMARY KEY (hash, home)) WITHOUT ROWID;
     INSERT OR IGNORE INTO file_lanes (hash, home) SELECT hash, home FROM files_held;",
    // 16: files pruned from a laptop after the county received them (not
    // asked for again until fetched back on demand).
    "CREATE TABLE files_pruned (hash BLOB PRIMARY KEY, at_ms INTEGER NOT NULL) WITHOUT ROWID;",
    // 17: the county's publications held (derived from the global lane's
    // events, in version order per kind).
    "CREATE TABLE publications (kind TEXT NOT NULL, version INTEGER NOT NULL, origin TEXT NOT NULL,
        seq INTEGER NOT NULL, PRIMARY KEY (kind, version)) WITHOUT ROWID;",
    // 18: this node's own files an upstream node other than the county was
    // sent whole, and when first (compared with the county's receipts).
    "CREATE TABLE upstream_files (hash BLOB PRIMARY KEY, peer TEXT NOT NULL, at_ms INTEGER NOT NULL) WITHOUT ROWID;",
    // 19: each file reference says whether its file is held for its lane
    // (`file_lanes`), held at all (`files_held`) and pruned, kept so by
    // triggers, so that the files a session wants and the county's
    // receipt lists are found in partial indexes of what is lacking, not
    // by walking every reference of a lane at every session. The triggers
    // follow inserts and deletes: no code updates the keys of file_lanes,
    // files_held or files_pruned, or a reference's hash or case (a
    // reference's home may change; its trigger follows that).
    "ALTER TABLE file_refs ADD COLUMN lane_held INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE file_refs ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE file_refs ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;
     UPDATE file_refs SET
        lane_held = EXISTS (SELECT 1 FROM file_lanes l WHERE l.hash = file_refs.hash AND l.home = file_refs.home),
        held = EXISTS (SELECT 1 FROM files_held h WHERE h.hash = file_refs.hash),
        pruned = EXISTS (SELECT 1 FROM files_pruned p WHERE p.hash = file_refs.hash);
     CREATE INDEX file_refs_lacking ON file_refs(home, hash) WHERE lane_held = 0 AND pruned = 0;
     CREATE INDEX file_refs_missing ON file_refs(home, hash) WHERE held = 0;
     CREATE TRIGGER file_refs_flags AFTER INSERT ON file_refs BEGIN
        UPDATE file_refs SET
            lane_held = EXISTS (SELECT 1 FROM file_lanes l WHERE l.hash = NEW.hash AND l.home = NEW.home),
            held = EXISTS (SELECT 1 FROM files_held h WHERE h.hash = NEW.hash),
            pruned = EXISTS (SELECT 1 FROM files_pruned p WHERE p.hash = NEW.hash)
        WHERE hash = NEW.hash AND case_id = NEW.case_id;
     END;
     CREATE TRIGGER file_refs_rehomed AFTER UPDATE OF home ON file_refs BEGIN
        UPDATE file_refs SET
            lane_held = EXISTS (SELECT 1 FROM file_lanes l WHERE l.hash = NEW.hash AND l.home = NEW.home)
        WHERE hash = NEW.hash AND case_id = NEW.case_id;
     END;
     CREATE TRIGGER file_lanes_added AFTER INSERT ON file_lanes BEGIN
        UPDATE file_refs SET lane_held = 1 WHERE hash = NEW.hash AND home = NEW.home;
     END;
     CREATE TRIGGER file_lanes_removed AFTER DELETE ON file_lanes BEGIN
        UPDATE file_refs SET lane_held = 0 WHERE hash = OLD.hash AND home = OLD.home;
     END;
     CREATE TRIGGER files_held_added AFTER INSERT ON files_held BEGIN
        UPDATE file_refs SET held = 1 WHERE hash = NEW.hash;
     END;
     CREATE TRIGGER files_held_removed AFTER DELETE ON files_held BEGIN
        UPDATE file_refs SET held = 0 WHERE hash = OLD.hash;
     END;
     CREATE TRIGGER files_pruned_added AFTER INSERT ON files_pruned BEGIN
        UPDATE file_refs SET pruned = 1 WHERE hash = NEW.hash;
     END;
     CREATE TRIGGER files_pruned_removed AFTER DELETE ON files_pruned BEGIN
        UPDATE file_refs SET pruned = 0 WHERE hash = OLD.hash;
     END;",
    // 20: the compact event table. A row (`event_rows`) keeps the
    // event's content (actor, case, context, body: the bytes its content
    // hash covers, as the wire carries them), not the whole encoded event:
    // the header's fields are the row's columns, `prev` is the stored hash
    // of the chain's previous event, and origins, lanes and cases are
    // integers into `names` (never deleted, never renumbered). `events`
    // becomes a view with the text columns, for reading. The rows are
    // rewritten in code ([`migrate_in_code`]), which also packs the long
    // settings (`meta_set`).
    "CREATE TABLE names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
     CREATE TABLE event_rows (
        origin INTEGER NOT NULL, seq INTEGER NOT NULL, lane INTEGER NOT NULL, pos INTEGER NOT NULL,
        hash BLOB NOT NULL, case_no INTEGER NOT NULL, hlc_wall INTEGER NOT NULL, hlc_logical INTEGER NOT NULL,
        content BLOB NOT NULL, PRIMARY KEY (origin, seq)) WITHOUT ROWID;",
    // 21: the personal-data index keeps a look-up hash as its 32 bytes
    // instead of 64 hex characters ([`lookup_key`]); a value that is not
    // such a hash (a forged event's) stays text.
    "UPDATE person_index SET lookup = unhex(lookup)
     WHERE typeof(lookup) = 'text' AND length(lookup) = 64 AND lookup NOT GLOB '*[^0-9a-f]*';",
    // 22: equivocating twins found by their case (a case's events and the
    // hashes its row leaves out read them), not by a scan of them all.
    "CREATE INDEX equivocations_case ON equivocations(case_id);",
    // 23: event content and case rows written packed with frozen zstd
    // dictionaries (`at_rest::Dictionary`). No table changes; the step is
    // there so that a release which cannot read them refuses the store
    // ("written by a newer version") instead of taking its rows for
    // damage.
    "-- event content and case rows packed with dictionaries",
];

/// The oldest schema a read-only open reads as it is: the steps after it
/// change no table (23 only marks that rows may be packed with
/// dictionaries, which this release reads either way).
const READ_ONLY_FROM: usize = 22;

/// A look-up hash as the personal-data index keys it: a hash's 64
/// lowercase hex characters as its 32 bytes; anything else (only a forged
/// event carries it) as the text it is, so that it is found as written.
fn lookup_key(lookup: &str) -> rusqlite::types::Value {
    let is_hash = lookup.len() == 64 && lookup.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match is_hash.then(|| hex::decode(lookup)) {
        Some(Ok(bytes)) => rusqlite::types::Value::Blob(bytes),
        _ => rusqlite::types::Value::Text(lookup.to_owned()),
    }
}

/// A personal-data index key read back as the look-up hash it keys.
pub(crate) fn lookup_of(key: rusqlite::types::Value) -> String {
    match key {
        rusqlite::types::Value::Blob(bytes) => hex::encode(bytes),
        rusqlite::types::Value::Text(text) => text,
        other => format!("{other:?}"),
    }
}

/// An event row's columns, its origin, lane and case by name.
struct Row<'a> {
    origin: &'a str,
    seq: u64,
    lane: &'a str,
    pos: u64,
    hash: &'a [u8],
    case: &'a str,
    hlc: Hlc,
    content: &'a [u8],
}

impl Row<'_> {
    /// Inserts the row (its names given ids as needed), its content at rest
    /// without the case id the row names (`Event::content_at_rest`),
    /// packed with the event dictionary where that is shorter
    /// (`at_rest::pack_event_content`). Changes nothing, and returns 0,
    /// when its id or its chain position is taken.
    fn insert(&self, conn: &Connection, names: &mut Names) -> Result<usize> {
        let at_rest = Event::content_at_rest(self.content, self.case);
        let stored = crate::at_rest::pack_event_content(at_rest.as_deref().unwrap_or(self.content));
        Ok(conn
            .prepare_cached(
                "INSERT INTO event_rows (origin, seq, lane, pos, hash, case_no, hlc_wall, hlc_logical, content)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                names.id(conn, self.origin, Named::Node)?,
                self.seq,
                names.id(conn, self.lane, Named::Node)?,
                self.pos,
                self.hash,
                names.id(conn, self.case, Named::Case)?,
                self.hlc.wall_ms,
                self.hlc.logical,
                stored
            ])?)
    }
}

/// Work a migration's SQL cannot do, run right after it in the same
/// transaction.
fn migrate_in_code(step: usize, tx: &Transaction<'_>) -> Result<()> {
    if step != 20 {
        return Ok(());
    }
    // Long settings (the catalogue, the map) packed, as `meta_set` now
    // stores them.
    let long: Vec<(String, String)> = tx
        .prepare("SELECT key, value FROM meta WHERE typeof(value) = 'text' AND length(CAST(value AS BLOB)) >= ?1")?
        .query_map([crate::at_rest::META_PACKED_FROM as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (key, json) in long {
        tx.execute("UPDATE meta SET value = ?2 WHERE key = ?1", params![key, crate::at_rest::pack_meta(&json)])?;
    }
    // The body is the event; the old columns were only its index, never
    // checked against it, so each row is written again from its body.
    // Where the body disagrees with its row or its chain (a column, an id
    // taken twice, a `prev` that is not the stored hash of the event
    // before it), the whole body is also kept in quarantine, so nothing is
    // lost, and the store's check then reports the row.
    {
        let mut read = tx.prepare(
            "SELECT origin, seq, lane, pos, hash, case_id, hlc_wall, hlc_logical, body FROM events ORDER BY origin, seq",
        )?;
        let mut names = Names::default();
        // What this store found, for the quarantine's "from".
        let me = meta_get::<crate::Identity>(tx, "identity")
            .ok()
            .flatten()
            .map_or_else(|| NodeId::new("this-node"), |i| i.node.id);
        // The last row written of each (origin, lane) chain: rows come in
        // seq order, so in position order within a chain.
        let mut last: std::collections::HashMap<(String, String), (u64, Vec<u8>)> = Default::default();
        let mut rows = read.query([])?;
        while let Some(r) = rows.next()? {
            let (origin, seq, lane, pos, hash, case): (String, u64, String, u64, Vec<u8>, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
            let hlc = Hlc { wall_ms: r.get(6)?, logical: r.get(7)? };
            let body: Vec<u8> = r.get(8)?;
            let stored = Row { origin: &origin, seq, lane: &lane, pos, hash: &hash, case: &case, hlc, content: &body };
            let Ok(e) = Event::decode(&body) else {
                // Kept as it is, by its row: it fails to decode as content
                // too, and the store's check reports it (not the events
                // after it: they follow its stored hash).
                stored.insert(tx, &mut names)?;
                last.insert((origin, lane), (pos, hash));
                continue;
            };
            let content = e.content_bytes();
            let row = Row {
                origin: e.id.origin.as_str(),
                seq: e.id.seq,
                lane: e.lane.key(),
                pos: e.pos,
                hash: &hash,
                case: e.case.as_str(),
                hlc: e.hlc,
                content: &content,
            };
            let written = row.insert(tx, &mut names)?;
            let chain = (row.origin.to_string(), row.lane.to_string());
            let follows = match last.get(&chain) {
                Some((pos, h)) => *pos + 1 == e.pos && h.as_slice() == e.prev.0.as_slice(),
                None => e.pos == 1 && e.prev == Hash::ZERO,
            };
            let as_row = (row.origin, row.seq, row.lane, row.pos, row.case, row.hlc)
                == (stored.origin, stored.seq, stored.lane, stored.pos, stored.case, stored.hlc);
            if written == 1 {
                last.insert(chain, (e.pos, hash.clone()));
            }
            if written != 1 || !follows || !as_row || e.hash().0.as_slice() != hash.as_slice() {
                // Named by its own hash: two bodies claiming one id are
                // both kept.
                let reason = format!(
                    "the stored event {}/{} (hash {}) disagreed with its row or its chain when this \
                     store was upgraded to schema 20; kept here whole",
                    e.id.origin,
                    e.id.seq,
                    &e.hash().to_hex()[..16]
                );
                quarantine(tx, crate::wall_clock_ms(), &me, &e.id.origin, e.id.seq, "broken_chain", &reason, &body)?;
            }
        }
    }
    tx.execute_batch(
        "DROP TABLE events;
         CREATE INDEX event_rows_case ON event_rows(case_no);
         CREATE UNIQUE INDEX event_rows_lane ON event_rows(lane, origin, pos);
         CREATE VIEW events AS
            SELECT o.name AS origin, e.seq AS seq, l.name AS lane, e.pos AS pos, e.hash AS hash,
                   c.name AS case_id, e.hlc_wall AS hlc_wall, e.hlc_logical AS hlc_logical, e.content AS content
            FROM event_rows e JOIN names o ON o.id = e.origin JOIN names l ON l.id = e.lane
                 JOIN names c ON c.id = e.case_no;",
    )?;
    Ok(())
}

/// The layout of the derived case rows; a change rebuilds them once.
/// 8: the files each case attaches (`file_refs`).
/// 9: the folded state stored compressed (`crate::at_rest`).
pub const CASE_ROWS_VERSION: u32 = 9;

/// The working-day calendar shipped with the program, used until the
/// county's own (from the enrolment bundle) is stored.
pub const DEFAULT_CALENDAR: &str = include_str!("../../deploy/calendar.json");

/// Calendars read, by database file, with the event of the newest
/// calendar publication they were read at.
type CalendarCache =
    std::collections::BTreeMap<String, (Option<(String, u64)>, std::sync::Arc<proto::calendar::Calendar>)>;
static CALENDARS: std::sync::Mutex<CalendarCache> = std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The node's working-day calendar (the newest the county published, meta
/// `calendar`, or the one shipped), read once per database file and
/// process and publication: a lookup compares the newest calendar
/// publication this connection sees with the one the cached calendar was
/// read at, so
/// neither a publication another connection was committing while it was
/// read, nor one read inside a transaction that was rolled back, stays.
pub fn calendar(conn: &Connection) -> Result<std::sync::Arc<proto::calendar::Calendar>> {
    let key = conn.path().unwrap_or_default().to_string();
    // The newest publication by the event that made it (not its version
    // number alone: a recovery can set that event aside).
    let version: Option<(String, u64)> = conn
        .prepare_cached(
            "SELECT p.origin, p.seq FROM publications p JOIN events e ON e.origin = p.origin AND e.seq = p.seq
             WHERE p.kind = 'calendar' ORDER BY p.version DESC LIMIT 1",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((read_at, c)) = CALENDARS.lock().expect("calendars").get(&key) {
        if *read_at == version {
            return Ok(c.clone());
        }
    }
    let newest: Option<Event> = conn
        .prepare_cached(concat!(
            "SELECT ",
            event_columns!(),
            " FROM publications p JOIN names o ON o.name = p.origin JOIN event_rows e ON e.origin = o.id AND e.seq = p.seq
               JOIN names l ON l.id = e.lane JOIN names c ON c.id = e.case_no WHERE p.kind = 'calendar' ORDER BY p.version DESC LIMIT 1"
        ))?
        .query_row([], |r| event_row(r, 0))
        .optional()?;
    let published = match newest.map(|e| e.body) {
        Some(proto::Body::Publish(p)) => match *p {
            proto::publication::Publication::Calendar(file) => Some(file),
            _ => None,
        },
        _ => None,
    };
    let file: proto::calendar::CalendarFile = match (published, meta_get(conn, "calendar")?) {
        (Some(f), _) | (None, Some(f)) => f,
        (None, None) => serde_json::from_str(DEFAULT_CALENDAR).context("the shipped calendar is damaged")?,
    };
    let cal = std::sync::Arc::new(proto::calendar::Calendar::new(&file).context("the stored calendar")?);
    if !key.is_empty() {
        CALENDARS.lock().expect("calendars").insert(key, (version, cal.clone()));
    }
    Ok(cal)
}

/// Stores the county's calendar (in the caller's transaction).
pub fn set_calendar(conn: &Connection, file: &proto::calendar::CalendarFile) -> Result<()> {
    proto::calendar::Calendar::new(file).context("the calendar does not hold together")?;
    meta_set(conn, "calendar", file)?;
    CALENDARS.lock().expect("calendars").remove(conn.path().unwrap_or_default());
    Ok(())
}

/// What inserting an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new event.
    New,
    /// The same event was already stored.
    Duplicate,
    /// Another event with the same id was stored: kept aside as evidence.
    Equivocation,
}

/// One quarantined input.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct QuarantineEntry {
    pub id: i64,
    pub at_ms: u64,
    pub from_node: String,
    pub origin: String,
    pub seq: u64,
    /// The stable kind (`proto::sync::QuarantineKind::name`, or `second_copy`,
    /// `new_incarnation`).
    pub kind: String,
    pub reason: String,
}

/// A node's store.
pub struct Store {
    conn: Connection,
    /// This process's part in the writing session; dropped after the
    /// connection has closed. None when opened for reading.
    session: Option<integrity::Session>,
}

/// The SQLite page cache one connection keeps, in KiB, by the tier of
/// the node that owns the store. A village laptop's store is a few MB read
/// by one person: 2 MiB holds most of it. A township serves its villages'
/// sessions and a desk from a store of its whole subtree; the county
/// serves every township and holds the county's history. A store that
/// names no tier yet (being created) takes the village's.
pub fn page_cache_kib(tier: Option<Tier>) -> u32 {
    match tier {
        None | Some(Tier::Village) => 2 * 1024,
        Some(Tier::Township) => 4 * 1024,
        Some(Tier::County) => 8 * 1024,
    }
}

/// The cap on every page cache of this process, in KiB (0: none).
static PAGE_CACHE_CAP_KIB: AtomicU32 = AtomicU32::new(0);

/// Caps the page cache of every store this process opens from now on at
/// `kib` KiB (0: no cap). For a process that holds hundreds of nodes'
/// stores at once, such as the simulated county: each node's files are
/// still read through the operating system's cache.
pub fn cap_page_cache(kib: u32) {
    PAGE_CACHE_CAP_KIB.store(kib, Ordering::Relaxed);
}

/// The tier of the node whose store this is, if its identity is stored.
fn stored_tier(conn: &Connection) -> Result<Option<Tier>> {
    Ok(meta_get::<crate::identity::Identity>(conn, "identity")?.map(|i| i.tier()))
}

/// Pages the county's write-ahead log grows to before a commit copies it
/// into the store (SQLite's default, which a village keeps, is 1,000). A
/// page written by many commits between two checkpoints (an index's last
/// leaf, a case index's hot pages) is copied once: at a year's ingest the
/// hub took 16 % more events a second (48 k against 56 k, bench-ingest at
/// 300 k cases, two alternating pairs), for a log of up to 40 MB and
/// fewer, longer checkpoints.
pub const COUNTY_WAL_PAGES: u32 = 10_000;

/// Sets the connection up for the store's tier: its page cache (within
/// the process's cap) and, at the county, how long its write-ahead log
/// grows.
fn tune_for_tier(conn: &Connection) -> Result<()> {
    let tier = stored_tier(conn)?;
    let mut kib = page_cache_kib(tier);
    let cap = PAGE_CACHE_CAP_KIB.load(Ordering::Relaxed);
    if cap > 0 {
        kib = kib.min(cap);
    }
    // A negative size is in KiB, whatever the page size.
    conn.pragma_update(None, "cache_size", -i64::from(kib))?;
    if tier == Some(Tier::County) {
        conn.pragma_update(None, "wal_autocheckpoint", COUNTY_WAL_PAGES)?;
    }
    Ok(())
}

/// What a store is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Writes: refused on a store found damaged.
    Write,
    /// `verify --repair`: opened whatever its state.
    Repair,
}

/// Statements each connection keeps prepared.
const STATEMENT_CACHE: usize = 128;

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(30))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("SQLite refused WAL mode (got {mode}); is the data directory on a network file system?");
    }
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    // Room for every statement a sync session and the receive path run,
    // so that none is parsed again per session (the default holds 16).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Plans that do not depend on the values bound: otherwise SQLite marks
    // a statement whose plan might (a bound value compared with an index)
    // to be parsed again whenever it is rebound, and every cached statement
    // is rebound when it is used again. None of our queries has a plan
    // worth choosing per value (no LIKE on a parameter, no statistics).
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    // Up to date (every open but the first after an upgrade): no write
    // lock taken, so an open does not wait for another connection's
    // commit (a server's sessions open ledgers while its writer commits).
    let done: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if done == MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let done: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if done > MIGRATIONS.len() {
        bail!("this data directory was written by a newer version (schema {done}); upgrade this program");
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.execute_batch(step).with_context(|| format!("schema migration {} failed", i + 1))?;
        migrate_in_code(i + 1, &tx).with_context(|| format!("schema migration {} failed", i + 1))?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
    }
    tx.commit()?;
    Ok(())
}

impl Store {
    /// Creates a new store in `dir` (created if missing). Refuses a
    /// directory that already holds one.
    pub fn create(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create data directory {}", dir.display()))?;
        let path = dir.join(DB_FILE);
        if path.exists() {
            bail!("{} already holds a node; use another --data directory", dir.display());
        }
        let (mut session, _) = integrity::Session::begin(dir)?;
        let mut conn = Connection::open(&path).with_context(|| format!("cannot create {}", path.display()))?;
        session.watch_commits(&mut conn)?;
        configure(&conn)?;
        migrate(&mut conn)?;
        tune_for_tier(&conn)?;
        session.checked()?;
        Ok(Store { conn, session: Some(session) })
    }

    /// Opens the store in `dir` for writing, applying pending migrations.
    /// Refuses a store found damaged, checking it first when the previous
    /// session did not end cleanly (see [`crate::integrity`]).
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_for(dir, Purpose::Write)
    }

    /// Opens the store in `dir` for `verify --repair`, damaged or not.
    pub fn open_for_repair(dir: &Path) -> Result<Store> {
        Store::open_for(dir, Purpose::Repair)
    }

    fn open_for(dir: &Path, purpose: Purpose) -> Result<Store> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            bail!("{} holds no node; run `init --data {}` first", dir.display(), dir.display());
        }
        let (mut session, due) = integrity::Session::begin(dir)?;
        if purpose == Purpose::Write {
            if let Some(advice) = integrity::recorded_damage(dir) {
                bail!("{}", advice.trim());
            }
        }
        let mut conn = Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        session.watch_commits(&mut conn)?;
        if due && purpose == Purpose::Write {
            conn.busy_timeout(Duration::from_secs(30))?;
            integrity::ensure_sound(&conn, dir)?;
        }
        configure(&conn)?;
        migrate(&mut conn)?;
        tune_for_tier(&conn)?;
        session.checked()?;
        Ok(Store { conn, session: Some(session) })
    }

    /// Opens the store in `dir` for reading. Where the directory and file
    /// can be written this is [`Store::open`] without the damage check (a
    /// damaged store can still be read); elsewhere (read-only media) the
    /// file is opened read-only, with no migration and no journal change.
    pub fn open_read(dir: &Path) -> Result<Store> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            bail!("{} holds no node; run `init --data {}` first", dir.display(), dir.display());
        }
        let dir_writable = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(integrity::LOCK_FILE))
            .is_ok();
        if dir_writable {
            let mut conn = Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            if !conn.is_readonly("main")? {
                configure(&conn)?;
                migrate(&mut conn)?;
                tune_for_tier(&conn)?;
                return Ok(Store { conn, session: None });
            }
        }
        Store::open_read_only(dir)
    }

    pub(crate) fn open_read_only(dir: &Path) -> Result<Store> {
        let path = dir.join(DB_FILE);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // Without a WAL left behind the file is all there is, and nothing
        // can change it: `immutable` needs no lock or shared-memory file
        // (which could not be created here). With one, SQLite must read it.
        let has_wal = dir.join(format!("{DB_FILE}-wal")).exists();
        let mut attempts = Vec::new();
        if has_wal {
            attempts.push((file_uri(&path, "mode=ro"), None));
        }
        let caveat = has_wal.then_some("the changes left in its write-ahead log cannot be read here");
        attempts.push((file_uri(&path, "immutable=1"), caveat));
        let mut last = None;
        for (uri, caveat) in attempts {
            let conn = match Connection::open_with_flags(&uri, flags) {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            conn.busy_timeout(Duration::from_secs(30))?;
            match conn.query_row("PRAGMA user_version", [], |r| r.get::<_, usize>(0)) {
                Ok(v) if (READ_ONLY_FROM..=MIGRATIONS.len()).contains(&v) => {
                    if let Some(caveat) = caveat {
                        tracing::warn!("{} is read-only: {caveat}", dir.display());
                    }
                    tune_for_tier(&conn)?;
                    return Ok(Store { conn, session: None });
                }
                Ok(v) if v > MIGRATIONS.len() => {
                    bail!("this data directory was written by a newer version (schema {v}); upgrade this program")
                }
                Ok(v) => bail!(
                    "{} is read-only and holds an older schema ({v}); open it once where it can be written to upgrade it",
                    dir.display()
                ),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("no way to open it")))
            .with_context(|| format!("cannot open {} read-only", path.display()))
    }

    /// Starts a write transaction that holds the database's write lock
    /// from the start, so read-check-write sequences cannot interleave with
    /// another process.
    pub fn write(&mut self) -> Result<Transaction<'_>> {
        Ok(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// True when opened for reading only.
    pub fn is_read_only(&self) -> bool {
        self.session.is_none()
    }

    /// The page cache this store's connection keeps, in KiB.
    pub fn page_cache(&self) -> Result<u32> {
        let size: i64 = self.conn.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
        if size < 0 {
            return Ok(u32::try_from(-size)?);
        }
        let page: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(u32::try_from(size * page / 1024)?)
    }
}

/// A `file:` URI for `path` with `query`, for SQLite.
fn file_uri(path: &Path, query: &str) -> String {
    let mut uri = String::from("file:");
    for b in path.to_string_lossy().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'_' | b'-' | b'~' => uri.push(b as char),
            _ => uri.push_str(&format!("%{b:02X}")),
        }
    }
    uri.push('?');
    uri.push_str(query);
    uri
}

// ---- reads and writes usable both inside and outside a transaction ----

pub fn meta_get<T: DeserializeOwned>(conn: &Connection, key: &str) -> Result<Option<T>> {
    match meta_json(conn, key)? {
        None => Ok(None),
        Some(t) => Ok(Some(serde_json::from_str(&t).with_context(|| format!("stored {key} is damaged"))?)),
    }
}

/// A setting's JSON: stored as text, or packed when long
/// ([`crate::at_rest::pack_meta`]).
fn meta_json(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(match meta_raw(conn, key)? {
        None => None,
        Some((bytes, false)) => Some(String::from_utf8(bytes).with_context(|| format!("stored {key} is damaged"))?),
        Some((bytes, true)) => {
            Some(crate::at_rest::unpack_meta(&bytes).with_context(|| format!("stored {key} is damaged"))?)
        }
    })
}

/// The bytes a setting is stored as, and whether they are packed (text
/// otherwise): they tell versions apart without unpacking.
fn meta_raw(conn: &Connection, key: &str) -> Result<Option<(Vec<u8>, bool)>> {
    use rusqlite::types::ValueRef;
    let mut stmt = conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
    let mut rows = stmt.query([key])?;
    let Some(row) = rows.next()? else { return Ok(None) };
    Ok(Some(match row.get_ref(0)? {
        ValueRef::Blob(b) => (b.to_vec(), true),
        ValueRef::Text(t) => (t.to_vec(), false),
        _ => (Vec::new(), false),
    }))
}

/// Stores a setting as JSON, packed when long.
pub fn meta_set<T: Serialize>(conn: &Connection, key: &str, value: &T) -> Result<()> {
    let json = serde_json::to_string(value)?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?;
    if json.len() >= crate::at_rest::META_PACKED_FROM {
        stmt.execute(params![key, crate::at_rest::pack_meta(&json)])?;
    } else {
        stmt.execute(params![key, json])?;
    }
    Ok(())
}

/// Decodes an event kept whole (equivocations, set aside). A failure
/// means the store is damaged; the command line adds what to do about it.
fn decode_event(bytes: Vec<u8>) -> rusqlite::Result<Event> {
    Event::decode(&bytes).map_err(damaged)
}

fn damaged(e: proto::codec::DecodeError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, e.into())
}

/// An event from [`event_columns`] starting at column `at`. A chain's
/// first event links to zero; an event whose predecessor is not held
/// (damage) gets a zero `prev` too, so its chain no longer verifies.
pub(crate) fn event_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Event> {
    let prev: Option<Vec<u8>> = r.get(at + 7)?;
    event_with_prev(r, at, prev.and_then(|h| h.try_into().ok()).map_or(Hash::ZERO, Hash))
}

/// [`event_columns`] starting at `at` but its eighth (`prev`), with `prev`.
fn event_with_prev(r: &rusqlite::Row<'_>, at: usize, prev: Hash) -> rusqlite::Result<Event> {
    let id = proto::EventId { origin: NodeId::new(r.get::<_, String>(at)?), seq: r.get(at + 1)? };
    let lane = Lane::from_key(&r.get::<_, String>(at + 2)?);
    let hlc = Hlc { wall_ms: r.get(at + 4)?, logical: r.get(at + 5)? };
    let content = crate::at_rest::event_content(r.get_ref(at + 6)?.as_blob()?).map_err(damaged)?;
    let case = r.get_ref(at + 8)?.as_str()?;
    Event::from_stored(id, lane, r.get(at + 3)?, prev, hlc, case, &content).map_err(damaged)
}

/// Inserts an event, detecting duplicates and equivocation.
pub fn insert_event(conn: &Connection, e: &Event) -> Result<Inserted> {
    let (hash, content) = e.hash_and_content();
    insert_with_content(conn, &mut Names::default(), e, hash, &content)
}

/// The ids of the names a batch's events use (origins, lanes, cases),
/// found or given once per batch. Valid only inside the transaction (or
/// savepoint) that used it: an id given by an insert that is rolled back
/// is given again to another name.
///
/// Nodes and lanes (a county has a few hundred) take ids below
/// [`CASE_IDS_FROM`], cases ids from it: an event's row and its two
/// indexes name its origin and lane five times, and SQLite stores an
/// integer below 128 in one byte and below 32,768 in two, where a
/// county's year of cases pushes ids given in order of arrival to three.
/// Where the lower range is full (an old store's cases took it), a node
/// takes the next id above every other: ids only name, never order.
#[derive(Default)]
pub struct Names(std::collections::HashMap<String, i64>);

/// The first id a case's name may take (see [`Names`]).
pub const CASE_IDS_FROM: i64 = 1024;

/// What a name names, for the range of ids it takes.
#[derive(Clone, Copy)]
enum Named {
    /// An origin or a lane.
    Node,
    Case,
}

impl Names {
    fn id(&mut self, conn: &Connection, name: &str, named: Named) -> Result<i64> {
        if let Some(id) = self.0.get(name) {
            return Ok(*id);
        }
        let id = match conn.prepare_cached(ID_OF)?.query_row([name], |r| r.get(0)).optional()? {
            Some(id) => id,
            None => {
                let sql = match named {
                    // A NULL id is given the next above every other.
                    Named::Node => {
                        "INSERT INTO names (id, name)
                         SELECT CASE WHEN next < ?2 THEN next END, ?1
                         FROM (SELECT COALESCE(MAX(id), 0) + 1 AS next FROM names WHERE id < ?2)"
                    }
                    Named::Case => {
                        "INSERT INTO names (id, name) SELECT MAX(COALESCE(MAX(id), 0) + 1, ?2), ?1 FROM names"
                    }
                };
                conn.prepare_cached(sql)?.execute(params![name, CASE_IDS_FROM])?;
                conn.last_insert_rowid()
            }
        };
        self.0.insert(name.to_owned(), id);
        Ok(id)
    }
}

/// [`insert_event`] for one of a received batch's events, whose hash is
/// already known, with the batch's [`Names`].
pub fn insert_named(conn: &Connection, names: &mut Names, e: &Event, hash: Hash) -> Result<Inserted> {
    insert_with_content(conn, names, e, hash, &e.content_bytes())
}

fn insert_with_content(
    conn: &Connection,
    names: &mut Names,
    e: &Event,
    hash: Hash,
    content: &[u8],
) -> Result<Inserted> {
    let inserted = Row {
        origin: e.id.origin.as_str(),
        seq: e.id.seq,
        lane: e.lane.key(),
        pos: e.pos,
        hash: &hash.0,
        case: e.case.as_str(),
        hlc: e.hlc,
        content,
    }
    .insert(conn, names)?;
    if inserted == 1 {
        note_network_event(conn, e)?;
        return Ok(Inserted::New);
    }
    let existing: Option<Vec<u8>> = conn
        .prepare_cached("SELECT hash FROM events WHERE origin = ?1 AND seq = ?2")?
        .query_row(params![e.id.origin.0, e.id.seq], |r| r.get(0))
        .optional()?;
    if existing.as_deref() == Some(hash.0.as_slice()) {
        return Ok(Inserted::Duplicate);
    }
    // Another event holds this id, or this chain position: the origin forked.
    conn.execute(
        "INSERT OR IGNORE INTO equivocations (origin, seq, hash, case_id, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![e.id.origin.0, e.id.seq, hash.0, e.case.0, e.encode()],
    )?;
    Ok(Inserted::Equivocation)
}

/// Keeps the tables derived from network events (the county's enrolments
/// and revocations: `node_keys`; vouchers for incarnations: `vouchers`)
/// beside the event, in the caller's transaction. `verify --repair` replays
/// every such event through here.
pub fn note_network_event(conn: &Connection, e: &Event) -> Result<()> {
    if let proto::Body::Publish(p) = &e.body {
        // Checked in version order before it was stored (`check_batch`, or
        // the county's own publish).
        conn.execute(
            "INSERT OR IGNORE INTO publications (kind, version, origin, seq) VALUES (?1, ?2, ?3, ?4)",
            params![p.kind(), p.version(), e.id.origin.0, e.id.seq],
        )?;
        if let proto::publication::Publication::Calendar(file) = p.as_ref() {
            proto::calendar::Calendar::new(file).context("the calendar does not hold together")?;
        }
    }
    if let proto::Body::Incarnate { origin, after } = &e.body {
        conn.execute(
            "INSERT OR IGNORE INTO vouchers (origin, after_wall, after_logical) VALUES (?1, ?2, ?3)",
            params![origin.0, after.wall_ms, after.logical],
        )?;
    }
    if let proto::Body::Enrol { node, key, certificate } | proto::Body::Revoke { node, key, certificate, .. } = &e.body
    {
        let status = key_status(conn, node, key)?.after(&e.body);
        conn.execute(
            "INSERT INTO node_keys (node, key, certificate, revoked, status) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(node, key) DO UPDATE SET revoked = MAX(revoked, excluded.revoked), status = excluded.status",
            params![node.0, key.0, certificate.0, matches!(status, KeyStatus::Revoked { .. }), codec::encode(&status)],
        )?;
    }
    Ok(())
}

/// Every publication of the county held, by kind and version.
/// With each, the stamp of its event (ms): when it took effect.
fn publications(conn: &Connection) -> Result<Vec<(proto::publication::Publication, u64)>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        event_columns!(),
        " FROM publications p JOIN names o ON o.name = p.origin JOIN event_rows e ON e.origin = o.id AND e.seq = p.seq
           JOIN names l ON l.id = e.lane JOIN names c ON c.id = e.case_no ORDER BY p.kind, p.version"
    ))?;
    let mut out = Vec::new();
    for e in stmt.query_map([], |r| event_row(r, 0))? {
        let e = e?;
        if let proto::Body::Publish(p) = e.body {
            out.push((*p, e.hlc.wall_ms));
        }
    }
    Ok(out)
}

/// The highest seq held per origin in a lane.
///
/// Read from each chain's last event through the lane index (the chains
/// named by the seals held), not by scanning the lane's events: a county
/// receipt costs the same however long a village's history grows.
pub fn lane_tips(conn: &Connection, lane: &Lane) -> Result<Vec<(NodeId, u64)>> {
    let key = lane.key();
    let origins: Vec<String> = conn
        .prepare_cached("SELECT origin FROM seals WHERE lane = ?1")?
        .query_map([&key], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut last =
        conn.prepare_cached("SELECT seq FROM events WHERE lane = ?1 AND origin = ?2 ORDER BY pos DESC LIMIT 1")?;
    let mut out = Vec::with_capacity(origins.len());
    for origin in origins {
        if let Some(seq) = last.query_row(params![key, origin], |r| r.get::<_, i64>(0)).optional()? {
            out.push((NodeId::new(origin), seq as u64));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes a lane's events, seals, checkpoints, equivocating twins and
/// derived rows (in the caller's transaction), and the records of the
/// material files held for it alone. Returns the events removed and the
/// files whose bytes the caller removes from disk.
pub fn purge_lane(conn: &Connection, lane: &Lane) -> Result<(u64, Vec<proto::files::FileHash>)> {
    let key = lane.key();
    let mut files = Vec::new();
    if let Lane::Home(home) = lane {
        // Files held for this lane and named by no other lane held here.
        let only_here: Vec<Vec<u8>> = conn
            .prepare(
                "SELECT l.hash FROM file_lanes l WHERE l.home = ?1
                 AND NOT EXISTS (SELECT 1 FROM file_lanes o WHERE o.hash = l.hash AND o.home != ?1)
                 AND NOT EXISTS (SELECT 1 FROM file_refs r WHERE r.hash = l.hash AND r.home != ?1)",
            )?
            .query_map([home.as_str()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for hash in only_here {
            conn.execute("DELETE FROM files_held WHERE hash = ?1", [&hash])?;
            if let Ok(h) = <[u8; 32]>::try_from(hash) {
                files.push(proto::files::FileHash(h));
            }
        }
        conn.execute("DELETE FROM file_lanes WHERE home = ?1", [home.as_str()])?;
        conn.execute(
            "DELETE FROM equivocations WHERE case_id IN (SELECT case_id FROM cases WHERE home = ?1)",
            [home.as_str()],
        )?;
        conn.execute(
            "DELETE FROM person_index WHERE case_id IN (SELECT case_id FROM cases WHERE home = ?1)",
            [home.as_str()],
        )?;
        conn.execute("DELETE FROM cases WHERE home = ?1", [home.as_str()])?;
        conn.execute("DELETE FROM file_refs WHERE home = ?1", [home.as_str()])?;
    }
    let removed = conn.execute("DELETE FROM event_rows WHERE lane = (SELECT id FROM names WHERE name = ?1)", [&key])?;
    conn.execute("DELETE FROM seals WHERE lane = ?1", [&key])?;
    conn.execute("DELETE FROM checkpoints WHERE lane = ?1", [&key])?;
    Ok((removed as u64, files))
}

/// How many publications of the county are held.
pub fn publications_held(conn: &Connection) -> Result<u64> {
    Ok(conn.prepare_cached("SELECT COUNT(*) FROM publications")?.query_row([], |r| r.get(0))?)
}

/// The county's map as this node holds it: the enrolment bundle's
/// (meta `topology`) and every change the county published since.
pub fn topology(conn: &Connection) -> Result<proto::Topology> {
    let mut topology: proto::Topology = meta_get(conn, "topology")?.context("the stored topology is missing")?;
    for (p, at) in publications(conn)? {
        if let proto::publication::Publication::Topology(change) = p {
            topology
                .apply_at(&change, at)
                .with_context(|| format!("the stored topology v{} no longer applies", change.version))?;
        }
    }
    Ok(topology)
}

/// The catalogue versions and calendar versions this node holds: the
/// catalogue of its enrolment bundle (meta `catalogue`) and every
/// publication of the county since, applied in version order.
///
/// Parsed once per process for each distinct content: every node holds
/// the same versions, and the demo's 321 nodes in one process (and a
/// server's pooled ledgers) share one copy.
pub fn catalogues(conn: &Connection, publisher: bool) -> Result<std::sync::Arc<proto::Catalogues>> {
    type Cache = std::collections::HashMap<[u8; 32], std::sync::Arc<proto::Catalogues>>;
    static PARSED: std::sync::Mutex<Option<Cache>> = std::sync::Mutex::new(None);
    let mut key = blake3::Hasher::new();
    key.update(&[u8::from(publisher)]);
    // The stored bytes (text, or packed) tell versions apart.
    for setting in ["catalogue", "calendar"] {
        key.update(&meta_raw(conn, setting)?.unwrap_or_default().0);
    }
    {
        let mut stmt = conn.prepare_cached(
            "SELECT e.hash FROM publications p JOIN events e ON e.origin = p.origin AND e.seq = p.seq
             ORDER BY p.kind, p.version",
        )?;
        for hash in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
            key.update(&hash?);
        }
    }
    let key: [u8; 32] = key.finalize().into();
    if let Some(c) = PARSED.lock().expect("catalogues").get_or_insert_with(Default::default).get(&key) {
        return Ok(c.clone());
    }
    let parsed = std::sync::Arc::new(parse_catalogues(conn, publisher)?);
    let mut cache = PARSED.lock().expect("catalogues");
    let cache = cache.get_or_insert_with(Default::default);
    if cache.len() > 64 {
        cache.clear();
    }
    cache.insert(key, parsed.clone());
    Ok(parsed)
}

fn parse_catalogues(conn: &Connection, publisher: bool) -> Result<proto::Catalogues> {
    let base: proto::Catalogue = meta_get(conn, "catalogue")?.context("the stored catalogue is missing")?;
    let mut catalogues = proto::Catalogues::single(base, publisher);
    let publications = publications(conn)?;
    // Meta `calendar` is the first version (the bundle's); publications follow it.
    let first_calendar = meta_get::<proto::calendar::CalendarFile>(conn, "calendar")?.map(|c| c.version).unwrap_or(1);
    catalogues.set_first_calendar(first_calendar);
    for (p, at) in &publications {
        catalogues
            .apply_at(p, *at)
            .with_context(|| format!("the stored {} v{} no longer applies", p.kind(), p.version()))?;
    }
    Ok(catalogues)
}

/// Every stored event of a case, including equivocating twins, with the
/// hashes stored beside them.
pub fn case_events(conn: &Connection, case: &CaseId) -> Result<Vec<(Event, Hash)>> {
    let hash_at = |r: &rusqlite::Row<'_>, i: usize| -> rusqlite::Result<Hash> {
        Ok(Hash(r.get::<_, Vec<u8>>(i)?.try_into().unwrap_or([0; 32])))
    };
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT e.hash, ",
        event_columns!(),
        " FROM ",
        event_rows!(),
        " WHERE e.case_no = (SELECT id FROM names WHERE name = ?1) ORDER BY e.origin, e.seq"
    ))?;
    let mut out: Vec<(Event, Hash)> =
        stmt.query_map([&case.0], |r| Ok((event_row(r, 1)?, hash_at(r, 0)?)))?.collect::<rusqlite::Result<_>>()?;
    let mut twins =
        conn.prepare_cached("SELECT body, hash FROM equivocations WHERE case_id = ?1 ORDER BY origin, seq")?;
    for row in twins.query_map([&case.0], |r| Ok((decode_event(r.get(0)?)?, hash_at(r, 1)?)))? {
        out.push(row?);
    }
    Ok(out)
}

/// Folds a case from its stored events.
pub fn fold_stored(conn: &Connection, case: &CaseId) -> Result<Option<CaseState>> {
    let events = case_events(conn, case)?;
    Ok(proto::fold::fold_case_hashed(case, events.iter().map(|(e, h)| (e, *h))))
}

/// The highest seq stored for an origin (0 when none).
pub fn origin_seq(conn: &Connection, origin: &NodeId) -> Result<u64> {
    Ok(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events WHERE origin = ?1", [&origin.0], |r| r.get(0))?)
}

/// The last stored event of an (origin, lane) chain.
pub fn lane_tip(conn: &Connection, origin: &NodeId, lane: &Lane) -> Result<ChainTip> {
    let row = conn
        .prepare_cached(
            "SELECT pos, seq, hash, hlc_wall, hlc_logical FROM events WHERE lane = ?1 AND origin = ?2
             ORDER BY pos DESC LIMIT 1",
        )?
        .query_row(params![lane.key(), origin.0], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, u64>(3)?,
                r.get::<_, u32>(4)?,
            ))
        })
        .optional()?;
    Ok(match row {
        None => ChainTip::GENESIS,
        Some((pos, seq, hash, wall_ms, logical)) => ChainTip {
            pos,
            seq,
            hash: Hash(hash.try_into().map_err(|_| anyhow::anyhow!("stored hash of {origin}/{seq} is damaged"))?),
            hlc: Hlc { wall_ms, logical },
        },
    })
}

/// The id of a name (an origin, a lane or a case), if any event names it.
const ID_OF: &str = "SELECT id FROM names WHERE name = ?1";
/// The name of an id.
const NAME_OF: &str = "SELECT name FROM names WHERE id = ?1";
/// The last position of one (lane, origin) chain, by ids: one seek of the
/// lane index.
const CHAIN_LAST: &str = "SELECT pos FROM event_rows WHERE lane = ?1 AND origin = ?2 ORDER BY pos DESC LIMIT 1";
/// The lane after a given one (by id) with events in it: one seek.
const NEXT_LANE: &str = "SELECT lane FROM event_rows WHERE lane > ?1 ORDER BY lane LIMIT 1";
/// The origin after a given one (by id) with a chain in a lane: one seek.
const NEXT_CHAIN_IN_LANE: &str =
    "SELECT origin FROM event_rows WHERE lane = ?1 AND origin > ?2 ORDER BY origin LIMIT 1";

/// Every (lane, origin, last position) held, for `lanes` (all when
/// `None`), in order of lane and origin. A skip scan of the (lane, origin,
/// pos) index: two seeks per chain, never a walk over a lane's events, so
/// a no-op session costs the hub the same however many events its lanes
/// hold.
pub fn lane_positions(conn: &Connection, lanes: Option<&[Lane]>) -> Result<Vec<(Lane, NodeId, u64)>> {
    let mut id_of = conn.prepare_cached(ID_OF)?;
    let lanes: Vec<(Lane, i64)> = match lanes {
        Some(lanes) => {
            let mut ids = Vec::with_capacity(lanes.len());
            for lane in lanes {
                if let Some(id) = id_of.query_row([lane.key()], |r| r.get(0)).optional()? {
                    ids.push((lane.clone(), id));
                }
            }
            ids
        }
        None => lanes_held(conn)?,
    };
    let mut next = conn.prepare_cached(NEXT_CHAIN_IN_LANE)?;
    let mut last = conn.prepare_cached(CHAIN_LAST)?;
    let mut name_of = conn.prepare_cached(NAME_OF)?;
    let mut out = Vec::new();
    for (lane, lane_id) in lanes {
        // Ids start at 1; a scan from the least integer misses no row even
        // so (one renumbered by hand is still found).
        let mut origin = i64::MIN;
        while let Some(o) = next.query_row(params![lane_id, origin], |r| r.get::<_, i64>(0)).optional()? {
            // Each seek reads the store as it is then: a chain removed
            // between the two (a revocation's purge, a chain set aside) is
            // skipped, as a read a moment later would.
            if let Some(pos) = last.query_row(params![lane_id, o], |r| r.get::<_, u64>(0)).optional()? {
                let name: String = name_of.query_row([o], |r| r.get(0))?;
                out.push((lane.clone(), NodeId::new(name), pos));
            }
            origin = o;
        }
    }
    out.sort();
    Ok(out)
}

/// Every lane with events in it, with its id: one seek each.
fn lanes_held(conn: &Connection) -> Result<Vec<(Lane, i64)>> {
    let mut next = conn.prepare_cached(NEXT_LANE)?;
    let mut name_of = conn.prepare_cached(NAME_OF)?;
    let mut lanes = Vec::new();
    let mut lane = i64::MIN;
    while let Some(l) = next.query_row([lane], |r| r.get::<_, i64>(0)).optional()? {
        let name: String = name_of.query_row([l], |r| r.get(0))?;
        lanes.push((Lane::from_key(&name), l));
        lane = l;
    }
    Ok(lanes)
}

/// Events of an (origin, lane) chain with `after < pos <= upto`, in order.
pub fn lane_events(conn: &Connection, lane: &Lane, origin: &NodeId, after: u64, upto: u64) -> Result<Vec<Event>> {
    Ok(chain_events(conn, lane, origin, after, upto)?.into_iter().map(|(e, _)| e).collect())
}

/// [`lane_events`] with the hash stored beside each.
fn chain_events(conn: &Connection, lane: &Lane, origin: &NodeId, after: u64, upto: u64) -> Result<Vec<(Event, Hash)>> {
    // One chain in order: each event's `prev` is the hash of the row
    // before it, the first one's the stored hash at `after`.
    let mut prev = match after {
        0 => Hash::ZERO,
        _ => hash_at(conn, origin, lane, after)?.unwrap_or(Hash::ZERO),
    };
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT o.name, e.seq, l.name, e.pos, e.hlc_wall, e.hlc_logical, e.content, e.hash, c.name FROM ",
        event_rows!(),
        " WHERE e.lane = (SELECT id FROM names WHERE name = ?1) AND e.origin = (SELECT id FROM names WHERE name = ?2)
               AND e.pos > ?3 AND e.pos <= ?4 ORDER BY e.pos"
    ))?;
    let mut rows = stmt.query(params![lane.key(), origin.0, after, upto])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let e = event_with_prev(r, 0, prev)?;
        prev = Hash(r.get::<_, Vec<u8>>(7)?.try_into().unwrap_or([0; 32]));
        out.push((e, prev));
    }
    Ok(out)
}

/// What the county said about `key` as a key of `node`.
pub fn key_status(conn: &Connection, node: &NodeId, key: &KeyId) -> Result<KeyStatus> {
    let status: Option<Vec<u8>> = conn
        .prepare_cached("SELECT status FROM node_keys WHERE node = ?1 AND key = ?2")?
        .query_row(params![node.0, key.0], |r| r.get(0))
        .optional()?;
    match status {
        None => Ok(KeyStatus::Unknown),
        Some(b) => Ok(codec::decode("key status", &b)?),
    }
}

/// The keys of `node` the county enrolled and has not revoked, with their
/// certificates.
pub fn live_keys(conn: &Connection, node: &NodeId) -> Result<Vec<(KeyId, Hash)>> {
    let mut stmt = conn.prepare("SELECT key, certificate FROM node_keys WHERE node = ?1 AND revoked = 0")?;
    let rows = stmt.query_map([&node.0], |r| {
        let (k, c): (Vec<u8>, Vec<u8>) = (r.get(0)?, r.get(1)?);
        Ok((KeyId(k.try_into().unwrap_or([0; 32])), Hash(c.try_into().unwrap_or([0; 32]))))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The `after` stamp of the voucher held for an incarnation, if any.
pub fn voucher(conn: &Connection, origin: &NodeId) -> Result<Option<Hlc>> {
    Ok(conn
        .prepare_cached("SELECT after_wall, after_logical FROM vouchers WHERE origin = ?1")?
        .query_row([&origin.0], |r| Ok(Hlc { wall_ms: r.get(0)?, logical: r.get(1)? }))
        .optional()?)
}

/// True when the event `(origin, seq)` is in quarantine here.
pub fn is_quarantined(conn: &Connection, origin: &NodeId, seq: u64) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM quarantine WHERE origin = ?1 AND seq = ?2")?
        .exists(params![origin.0, seq])?)
}

/// How many incarnations of `node` hold a voucher here.
pub fn vouchers_of(conn: &Connection, node: &NodeId) -> Result<usize> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM vouchers WHERE substr(origin, 1, length(?1) + 1) = ?1 || '~'",
        [node.base()],
        |r| r.get::<_, i64>(0),
    )? as usize)
}

/// The latest stamp of any event held from `node`'s origins (every
/// incarnation but `except`).
pub fn latest_stamp_of(conn: &Connection, node: &NodeId, except: &NodeId) -> Result<Hlc> {
    let row: Option<(u64, u32)> = conn
        .query_row(
            "SELECT hlc_wall, hlc_logical FROM events
             WHERE (origin = ?1 OR substr(origin, 1, length(?1) + 1) = ?1 || '~') AND origin != ?2
             ORDER BY hlc_wall DESC, hlc_logical DESC LIMIT 1",
            params![node.base(), except.0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map_or(Hlc::default(), |(wall_ms, logical)| Hlc { wall_ms, logical }))
}

/// True when the county revoked a certificate with any of these SHA-256s
/// (a certificate's forms: `sync::tls::revocation_names`).
pub fn certificate_revoked(conn: &Connection, names: &[Hash]) -> Result<bool> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM node_keys WHERE certificate = ?1 AND revoked = 1")?;
    for name in names {
        if stmt.exists([name.0.as_slice()])? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every chain head held of `node`'s origins (all its incarnations):
/// (lane, origin, position, head hash).
pub fn heads_of(conn: &Connection, node: &NodeId) -> Result<Vec<(Lane, NodeId, u64, Hash)>> {
    let mut stmt = conn.prepare(
        "SELECT e.lane, e.origin, e.pos, e.hash FROM events e
         JOIN (SELECT lane, origin, MAX(pos) AS pos FROM events WHERE origin = ?1 OR substr(origin, 1, length(?1) + 1) = ?1 || '~'
               GROUP BY lane, origin) m ON e.lane = m.lane AND e.origin = m.origin AND e.pos = m.pos",
    )?;
    let rows = stmt.query_map([&node.0], |r| {
        let hash: Vec<u8> = r.get(3)?;
        Ok((
            Lane::from_key(&r.get::<_, String>(0)?),
            NodeId::new(r.get::<_, String>(1)?),
            r.get::<_, u64>(2)?,
            Hash(hash.try_into().unwrap_or([0; 32])),
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// After a revocation arrives: the chains of `node` sealed with the revoked
/// `key` lose every event past the revocation's cut (what the county held
/// when it revoked). Those events, signed by a lost laptop's key and never
/// vouched for by the county, move to quarantine with the reason (kept for
/// administrators, never applied). Returns how many moved.
pub fn purge_after_revocation(
    conn: &Connection,
    at_ms: u64,
    from: &NodeId,
    node: &NodeId,
    key: &KeyId,
    upto: &[(Lane, NodeId, u64, Hash)],
) -> Result<usize> {
    let mut moved = 0;
    for (lane, origin, pos) in lane_positions(conn, None)? {
        if origin.is_incarnation_of(node) {
            moved += purge_chain_past_cut(conn, at_ms, from, &lane, &origin, pos, node, key, upto)?;
        }
    }
    Ok(moved + purge_twins_past_cut(conn, at_ms, from, node, key, upto)?)
}

/// The equivocating twins `node` signed past the revocation's cut of
/// their chain go to quarantine too: kept beside the case, a twin would
/// be folded back in (a thief's creation, twinned, would outlive the
/// revocation). Returns how many moved.
fn purge_twins_past_cut(
    conn: &Connection,
    at_ms: u64,
    from: &NodeId,
    node: &NodeId,
    key: &KeyId,
    upto: &[(Lane, NodeId, u64, Hash)],
) -> Result<usize> {
    let reason = format!("an equivocating twin signed with key {key} of {node} after the point the county vouched for when it revoked that key");
    let (moved, cases) = move_twins(
        conn,
        |e| {
            if !e.id.origin.is_incarnation_of(node) {
                return Ok(false);
            }
            let cut = upto.iter().find(|(l, o, _, _)| *l == e.lane && *o == e.id.origin).map_or(0, |(_, _, p, _)| *p);
            Ok(e.pos > cut && seal_of(conn, &e.id.origin, &e.lane)?.is_none_or(|s| s.key == *key))
        },
        |e, hash, body| {
            // Each twin its own entry: the quarantine keeps one per id
            // and reason, and an id can have more than one twin.
            let reason = format!("{reason} (twin {})", hex::encode(hash));
            quarantine(conn, at_ms, from, &e.id.origin, e.id.seq, "key_revoked", &reason, body)?;
            Ok(1)
        },
    )?;
    refold_after_purge(conn, &cases)?;
    Ok(moved)
}

/// Moves the equivocating twins `take` picks by what their bodies say
/// (not by the row's columns, which only an altered store makes differ)
/// out of `equivocations`, each by `put` (given the twin, its stored hash
/// and its encoded bytes); a twin that does not decode stays. Returns
/// what `put` counted and the cases the twins were filed under.
fn move_twins(
    conn: &Connection,
    take: impl Fn(&Event) -> Result<bool>,
    mut put: impl FnMut(&Event, &[u8], &[u8]) -> Result<usize>,
) -> Result<(usize, std::collections::BTreeSet<CaseId>)> {
    let twins: Vec<(String, u64, Vec<u8>, Vec<u8>)> = conn
        .prepare("SELECT origin, seq, hash, body FROM equivocations")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let (mut moved, mut cases) = (0, std::collections::BTreeSet::new());
    for (row_origin, seq, hash, body) in twins {
        let Ok(e) = Event::decode(&body) else { continue };
        if !take(&e)? {
            continue;
        }
        moved += put(&e, &hash, &body)?;
        // By the row's own key: the row goes even if its body names
        // another id (a store altered on disk).
        conn.execute(
            "DELETE FROM equivocations WHERE origin = ?1 AND seq = ?2 AND hash = ?3",
            params![row_origin, seq, hash],
        )?;
        cases.insert(e.case);
    }
    Ok((moved, cases))
}

/// Case rows made again after a purge took some of their events.
fn refold_after_purge(conn: &Connection, cases: &std::collections::BTreeSet<CaseId>) -> Result<()> {
    for case in cases.iter().filter(|c| !c.as_str().starts_with('*')) {
        conn.execute("DELETE FROM cases WHERE case_id = ?1", [&case.0])?;
        conn.execute("DELETE FROM person_index WHERE case_id = ?1", [&case.0])?;
        if refold_case(conn, case)?.is_some_and(|st| st.create.is_none()) {
            // Its creation went: other nodes' events on it stay stored (as
            // a receiver that never had the creation defers them), but no
            // case row is made of them.
            conn.execute("DELETE FROM cases WHERE case_id = ?1", [&case.0])?;
            conn.execute("DELETE FROM person_index WHERE case_id = ?1", [&case.0])?;
        }
    }
    Ok(())
}

/// One chain (last stored at `pos`) of `node`: if sealed with the revoked
/// `key`, its events past the cut move to quarantine.
#[allow(clippy::too_many_arguments)]
fn purge_chain_past_cut(
    conn: &Connection,
    at_ms: u64,
    from: &NodeId,
    lane: &Lane,
    origin: &NodeId,
    pos: u64,
    node: &NodeId,
    key: &KeyId,
    upto: &[(Lane, NodeId, u64, Hash)],
) -> Result<usize> {
    // A chain sealed with another key (the node enrolled again) is not this
    // key's. One stored without a seal (segments accepted in part: the rest
    // waited for an event of another chain) is held to the cut too: which
    // key signed it is not kept, and what an honest key signed past the
    // cut is accepted again when it is sent again.
    if seal_of(conn, origin, lane)?.is_some_and(|s| s.key != *key) {
        return Ok(0);
    }
    let cut = upto.iter().find(|(l, o, _, _)| l == lane && o == origin).map_or(0, |(_, _, p, _)| *p);
    if pos <= cut {
        return Ok(0);
    }
    let events = lane_events(conn, lane, origin, cut, pos)?;
    let reason = format!(
        "signed with key {key} of {node} after the point the county vouched for when it revoked that key \
         (a lost laptop's work, or a thief's)"
    );
    let mut cases = std::collections::BTreeSet::new();
    for e in &events {
        quarantine(conn, at_ms, from, &e.id.origin, e.id.seq, "key_revoked", &reason, &e.encode())?;
        cases.insert(e.case.clone());
    }
    conn.execute(
        "DELETE FROM event_rows WHERE lane = (SELECT id FROM names WHERE name = ?1)
           AND origin = (SELECT id FROM names WHERE name = ?2) AND pos > ?3",
        params![lane.key(), origin.0, cut],
    )?;
    conn.execute("DELETE FROM seals WHERE lane = ?1 AND origin = ?2", params![lane.key(), origin.0])?;
    conn.execute(
        "DELETE FROM checkpoints WHERE lane = ?1 AND origin = ?2 AND pos > ?3",
        params![lane.key(), origin.0, cut],
    )?;
    refold_after_purge(conn, &cases)?;
    Ok(events.len())
}

/// True when a revocation the county published vouches for this chain
/// head (a chain whose seal was dropped with the events after the cut).
pub fn vouched_by_revocation(conn: &Connection, lane: &Lane, origin: &NodeId, pos: u64, head: &Hash) -> Result<bool> {
    let mut stmt = conn.prepare_cached("SELECT status FROM node_keys WHERE node = ?1 AND revoked = 1")?;
    let rows = stmt.query_map([origin.base()], |r| r.get::<_, Vec<u8>>(0))?;
    for row in rows {
        if let KeyStatus::Revoked { upto } = codec::decode("key status", &row?)? {
            if upto.iter().any(|(l, o, p, h)| l == lane && o == origin && *p == pos && h == head) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Stores a verified seal: it becomes the chain's latest when it is ahead
/// of the one held, and a seal at a checkpoint position is kept for good.
pub fn put_seal(conn: &Connection, seal: &Seal) -> Result<()> {
    let lane = seal.lane.key();
    let values = params![seal.origin.0, lane, seal.pos, seal.seq, seal.head.0, seal.signature, seal.key.0];
    if proto::sync::is_checkpoint(seal.pos) {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO checkpoints (origin, lane, pos, seq, head, signature, key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(values)?;
    }
    conn.prepare_cached(
        "INSERT INTO seals (origin, lane, pos, seq, head, signature, key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(origin, lane) DO UPDATE SET pos = excluded.pos, seq = excluded.seq, head = excluded.head,
            signature = excluded.signature, key = excluded.key
         WHERE excluded.pos > seals.pos",
    )?
    .execute(values)?;
    Ok(())
}

fn seal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Seal> {
    let head: Vec<u8> = r.get(4)?;
    Ok(Seal {
        origin: NodeId::new(r.get::<_, String>(0)?),
        lane: Lane::from_key(&r.get::<_, String>(1)?),
        pos: r.get(2)?,
        seq: r.get(3)?,
        head: Hash(head.try_into().unwrap_or([0; 32])),
        signature: r.get(5)?,
        key: KeyId(r.get::<_, Vec<u8>>(6)?.try_into().unwrap_or([0; 32])),
    })
}

/// The latest seal held for an (origin, lane) chain.
pub fn seal_of(conn: &Connection, origin: &NodeId, lane: &Lane) -> Result<Option<Seal>> {
    Ok(conn
        .prepare_cached(
            "SELECT origin, lane, pos, seq, head, signature, key FROM seals WHERE origin = ?1 AND lane = ?2",
        )?
        .query_row(params![origin.0, lane.key()], seal_row)
        .optional()?)
}

/// The checkpoint seal of an (origin, lane) chain with the lowest position
/// above `after`.
pub fn checkpoint_after(conn: &Connection, origin: &NodeId, lane: &Lane, after: u64) -> Result<Option<Seal>> {
    Ok(conn
        .prepare_cached(
            "SELECT origin, lane, pos, seq, head, signature, key FROM checkpoints
             WHERE origin = ?1 AND lane = ?2 AND pos > ?3 ORDER BY pos LIMIT 1",
        )?
        .query_row(params![origin.0, lane.key(), after], seal_row)
        .optional()?)
}

pub fn seals(conn: &Connection) -> Result<Vec<Seal>> {
    let mut stmt =
        conn.prepare("SELECT origin, lane, pos, seq, head, signature, key FROM seals ORDER BY origin, lane")?;
    let rows = stmt.query_map([], seal_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Writes a case's derived row and its personal-data index entries.
pub fn put_case(conn: &Connection, st: &CaseState) -> Result<()> {
    let folded = crate::at_rest::pack_case(st);
    let cal = calendar(conn)?;
    let deadlines = proto::calendar::deadlines(st, &cal);
    // Working days a finished case took (its runs are all closed, so the
    // day given does not count).
    let days_used =
        deadlines.and_then(|d| d.finished).and_then(|f| proto::calendar::timing(st, &cal, f)).map(|t| t.used);
    // Follow-ups are due 15 working days after the poor rating.
    let followup_due = st
        .followups
        .iter()
        .filter(|f| f.closed.is_none())
        .map(|f| cal.add_working_days(proto::calendar::Day::of_ms(f.opened.wall_ms), crate::ledger::FOLLOW_UP_DAYS).0)
        .min();
    conn.prepare_cached(
        "INSERT INTO cases (case_id, item, state, home, handler, flagged, updated_wall, folded, applicant, created_wall, rating,
                            due_day, yellow_day, finished_day, on_time, open_followups, bundle,
                            agent, accepted_wall, days_used, tolerated, followup_due_day)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)
         ON CONFLICT(case_id) DO UPDATE SET item = excluded.item, state = excluded.state, home = excluded.home,
            handler = excluded.handler, flagged = excluded.flagged, updated_wall = excluded.updated_wall,
            folded = excluded.folded, applicant = excluded.applicant, created_wall = excluded.created_wall,
            rating = excluded.rating, due_day = excluded.due_day, yellow_day = excluded.yellow_day,
            finished_day = excluded.finished_day, on_time = excluded.on_time,
            open_followups = excluded.open_followups, bundle = excluded.bundle, agent = excluded.agent,
            accepted_wall = excluded.accepted_wall, days_used = excluded.days_used, tolerated = excluded.tolerated,
            followup_due_day = excluded.followup_due_day",
    )?
    .execute(params![
        st.case_id.0,
        st.item(),
        st.state.name(),
        st.home.0,
        st.handler.0,
        st.flagged(),
        st.updated.wall_ms,
        folded,
        applicant_of(st),
        st.created.map(|h| h.wall_ms).unwrap_or(0),
        st.ratings.last().map(|r| r.level).unwrap_or(0),
        deadlines.and_then(|d| d.due).map(|d| d.0),
        deadlines.and_then(|d| d.yellow_from).map(|d| d.0),
        deadlines.and_then(|d| d.finished).map(|d| d.0),
        deadlines.and_then(|d| d.on_time),
        st.followups.iter().filter(|f| f.closed.is_none()).count() as i64,
        text_field(st, "bundle"),
        text_field(st, "agent"),
        st.accepted.map(|h| h.wall_ms).unwrap_or(0),
        days_used,
        st.tolerated.is_some(),
        followup_due
    ])?;
    for f in &st.files {
        conn.prepare_cached("INSERT OR IGNORE INTO file_refs (hash, case_id, home, size) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![&f.file.hash.0[..], st.case_id.0, st.home.0, f.file.size as i64])?;
    }
    for values in st.fields.values() {
        for v in values {
            if let proto::event::FieldValue::Protected(p) = v {
                // Cached: every protected field of every case a batch
                // touches comes through here (parsing it each time was
                // about 2 % of the hub's CPU in W2).
                conn.prepare_cached("INSERT OR IGNORE INTO person_index (lookup, case_id) VALUES (?1, ?2)")?
                    .execute(params![lookup_key(&p.lookup), st.case_id.0])?;
            }
        }
    }
    Ok(())
}

/// Records that this node holds a file whole, sealed under `home`'s key.
pub fn note_file_held(conn: &Connection, hash: &proto::files::FileHash, size: u64, home: &NodeId) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO files_held (hash, size, home) VALUES (?1, ?2, ?3)")?
        .execute(params![&hash.0[..], size as i64, home.as_str()])?;
    Ok(())
}

/// The lane whose key a held file is sealed under (the case that brought
/// it here first), if it is held.
pub fn file_sealed_under(conn: &Connection, hash: &proto::files::FileHash) -> Result<Option<NodeId>> {
    let home: Option<String> = conn
        .prepare_cached("SELECT home FROM files_held WHERE hash = ?1")?
        .query_row([&hash.0[..]], |r| r.get(0))
        .optional()?;
    Ok(home.map(NodeId::new))
}

/// Records that this node holds a file for `home`'s lane.
pub fn note_file_lane(conn: &Connection, hash: &proto::files::FileHash, home: &NodeId) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO file_lanes (hash, home) VALUES (?1, ?2)")?
        .execute(params![&hash.0[..], home.as_str()])?;
    Ok(())
}

/// A held file found damaged or gone: recorded in quarantine with the
/// reason, its bytes moved aside (kept as evidence), and no longer held,
/// so the node asks its peers for a good copy at its next sync.
pub fn file_damaged(
    conn: &Connection,
    dir: &Path,
    me: &NodeId,
    hash: &proto::files::FileHash,
    why: &str,
) -> Result<()> {
    tracing::warn!("{why}");
    quarantine(conn, crate::wall_clock_ms(), me, me, 0, "damaged_file", why, &hash.0)?;
    conn.prepare_cached("DELETE FROM files_held WHERE hash = ?1")?.execute([&hash.0[..]])?;
    conn.prepare_cached("DELETE FROM file_lanes WHERE hash = ?1")?.execute([&hash.0[..]])?;
    crate::blobs::set_aside(dir, hash)?;
    Ok(())
}

/// A plain-text field's first value.
fn text_field<'a>(st: &'a CaseState, name: &str) -> Option<&'a str> {
    match st.fields.get(name).and_then(|v| v.first()) {
        Some(proto::event::FieldValue::Text(t)) => Some(t.as_str()),
        _ => None,
    }
}

/// The applicant's name as lists search it (the first value when several
/// were written concurrently).
fn applicant_of(st: &CaseState) -> String {
    match st.fields.get("applicant").and_then(|v| v.first()) {
        Some(proto::event::FieldValue::Text(t)) => t.clone(),
        _ => String::new(),
    }
}

/// Folds a case whose every event is `events` (it is new in this
/// transaction) and stores the derived row, without reading it back.
pub fn fold_new_case(conn: &Connection, case: &CaseId, events: &[(&Event, Hash)]) -> Result<()> {
    if let Some(st) = proto::fold::fold_case_hashed(case, events.iter().copied()) {
        put_case(conn, &st)?;
    }
    Ok(())
}

/// Refolds one case from its events and stores the derived row.
pub fn refold_case(conn: &Connection, case: &CaseId) -> Result<Option<CaseState>> {
    let st = fold_stored(conn, case)?;
    if let Some(st) = &st {
        put_case(conn, st)?;
    }
    Ok(st)
}

/// A case's stored row (`cases.folded`) as its folded state: the history's
/// event hashes the row leaves out ([`crate::at_rest::pack_case`]) are read
/// back from the case's events. A row naming an event of its case that the
/// store no longer holds under that id (a stale row: the store's check
/// reports it) is read as a fresh fold of the case's events instead, or,
/// when the case has no events left, as it is stored.
pub fn case_from_row(conn: &Connection, bytes: &[u8]) -> Result<CaseState> {
    let mut st = crate::at_rest::unpack_case(bytes)?;
    if hashes_read_back(conn, &mut st)? {
        return Ok(st);
    }
    tracing::warn!(case = %st.case_id, "a case row names an event not held: read as a fresh fold");
    Ok(fold_stored(conn, &st.case_id)?.unwrap_or(st))
}

/// Puts back the history's event hashes a stored row leaves out, from the
/// case's events: its rows first (an id the history holds once is the
/// row's when the case has a row of it), then, for ids it has no row of,
/// its equivocating twins. False when one of them is not held, or held by
/// two twins.
pub(crate) fn hashes_read_back(conn: &Connection, st: &mut CaseState) -> Result<bool> {
    if !st.history.iter().any(|h| h.hash == Hash::ZERO) {
        return Ok(true);
    }
    type Held = std::collections::HashMap<(String, u64), Option<Vec<u8>>>;
    let read = |sql: &str| -> Result<Held> {
        let mut held = Held::new();
        let mut stmt = conn.prepare_cached(sql)?;
        let mut found = stmt.query([&st.case_id.0])?;
        while let Some(r) = found.next()? {
            held.entry((r.get(0)?, r.get(1)?)).and_modify(|h| *h = None).or_insert(Some(r.get(2)?));
        }
        Ok(held)
    };
    let rows = read(
        "SELECT o.name, e.seq, e.hash FROM event_rows e JOIN names o ON o.id = e.origin
         WHERE e.case_no = (SELECT id FROM names WHERE name = ?1)",
    )?;
    let mut twins: Option<Held> = None;
    for h in st.history.iter_mut().filter(|h| h.hash == Hash::ZERO) {
        let id = (h.event.origin.0.clone(), h.event.seq);
        let hash = match rows.get(&id) {
            Some(hash) => hash.clone(),
            None => {
                if twins.is_none() {
                    twins = Some(read("SELECT origin, seq, hash FROM equivocations WHERE case_id = ?1")?);
                }
                twins.as_ref().and_then(|t| t.get(&id).cloned()).flatten()
            }
        };
        match hash.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(hash) => h.hash = Hash(hash),
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// The creation a case's stored row holds, read without its history's
/// hashes (which it does not need).
pub fn stored_create(conn: &Connection, case: &CaseId) -> Result<Option<proto::event::Create>> {
    let row: Option<Vec<u8>> = conn
        .prepare_cached("SELECT folded FROM cases WHERE case_id = ?1")?
        .query_row([&case.0], |r| r.get(0))
        .optional()?;
    Ok(match row {
        Some(bytes) => crate::at_rest::unpack_case(&bytes)?.create,
        None => None,
    })
}

/// The states of case rows read by `sql` (its one column `folded`), in one
/// snapshot, so that a purge committed meanwhile cannot come between a row
/// and its events: the transaction's, or a savepoint's outside one.
pub(crate) fn cases_read(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<CaseState>> {
    let read = || -> Result<Vec<CaseState>> {
        let rows: Vec<Vec<u8>> =
            conn.prepare_cached(sql)?.query_map(args, |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        rows.iter().map(|b| case_from_row(conn, b)).collect()
    };
    if !conn.is_autocommit() {
        return read();
    }
    /// Ends the savepoint however the read ends (an error, a panic).
    struct Release<'a>(&'a Connection);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            if let Err(e) = self.0.execute_batch("RELEASE cases_read") {
                tracing::warn!("ending a read's savepoint failed: {e}");
            }
        }
    }
    conn.execute_batch("SAVEPOINT cases_read")?;
    let _release = Release(conn);
    read()
}

/// True when the case has a derived row.
pub fn case_exists(conn: &Connection, case: &CaseId) -> Result<bool> {
    Ok(conn.prepare_cached("SELECT 1 FROM cases WHERE case_id = ?1")?.exists([&case.0])?)
}

pub fn get_case(conn: &Connection, case: &CaseId) -> Result<Option<CaseState>> {
    Ok(cases_read(conn, "SELECT folded FROM cases WHERE case_id = ?1", [&case.0])?.pop())
}

/// Derived case rows, optionally filtered by state and home node.
pub fn list_cases(conn: &Connection, state: Option<&str>, home: Option<&NodeId>) -> Result<Vec<CaseState>> {
    cases_read(
        conn,
        "SELECT folded FROM cases WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR home = ?2) ORDER BY case_id",
        params![state, home.map(|h| &h.0)],
    )
}

pub fn cases_by_lookup(conn: &Connection, lookup: &str) -> Result<Vec<CaseId>> {
    let mut stmt = conn.prepare("SELECT case_id FROM person_index WHERE lookup = ?1 ORDER BY case_id")?;
    let rows = stmt.query_map([lookup_key(lookup)], |r| Ok(CaseId(r.get(0)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn count_events(conn: &Connection, home: Option<&NodeId>) -> Result<u64> {
    Ok(match home {
        // Every event but the network's (case ids starting with `*`).
        None => conn.query_row(
            "SELECT (SELECT COUNT(*) FROM event_rows) - (SELECT COUNT(*) FROM event_rows
                WHERE case_no IN (SELECT id FROM names WHERE name >= '*' AND name < '+'))",
            [],
            |r| r.get(0),
        )?,
        Some(h) => conn.query_row(
            "SELECT COUNT(*) FROM events WHERE case_id IN (SELECT case_id FROM cases WHERE home = ?1)",
            [&h.0],
            |r| r.get(0),
        )?,
    })
}

/// The hash of the event at `pos` of an (origin, lane) chain, if held.
pub fn hash_at(conn: &Connection, origin: &NodeId, lane: &Lane, pos: u64) -> Result<Option<Hash>> {
    let hash: Option<Vec<u8>> = conn
        .prepare_cached("SELECT hash FROM events WHERE lane = ?1 AND origin = ?2 AND pos = ?3")?
        .query_row(params![lane.key(), origin.0, pos], |r| r.get(0))
        .optional()?;
    Ok(hash.and_then(|h| h.try_into().ok()).map(Hash))
}

/// The hash of the event with id `(origin, seq)`, if held.
pub fn hash_of(conn: &Connection, origin: &NodeId, seq: u64) -> Result<Option<Hash>> {
    let hash: Option<Vec<u8>> = conn
        .prepare_cached("SELECT hash FROM events WHERE origin = ?1 AND seq = ?2")?
        .query_row(params![origin.0, seq], |r| r.get(0))
        .optional()?;
    Ok(hash.and_then(|h| h.try_into().ok()).map(Hash))
}

/// Moves every event of an (origin, lane) chain, and the chain's
/// equivocating twins, into `set_aside`, drops the chain's seal and refolds
/// the cases it touched. Returns how many events were set aside.
pub fn set_aside_chain(conn: &Connection, origin: &NodeId, lane: &Lane, at_ms: u64) -> Result<usize> {
    let cases: Vec<CaseId> = {
        let mut stmt = conn.prepare("SELECT DISTINCT case_id FROM events WHERE lane = ?1 AND origin = ?2")?;
        let rows = stmt.query_map(params![lane.key(), origin.0], |r| Ok(CaseId(r.get(0)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    // Kept whole, as an event that is not in the ledger is kept.
    let put_aside = |e: &Event, hash: &[u8], body: &[u8]| -> Result<usize> {
        Ok(conn.execute(
            "INSERT OR IGNORE INTO set_aside (origin, seq, hash, at_ms, event, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
            params![e.id.origin.0, e.id.seq, hash, at_ms, body],
        )?)
    };
    let mut moved = 0;
    for (e, hash) in chain_events(conn, lane, origin, 0, u64::MAX >> 1)? {
        moved += put_aside(&e, &hash.0, &e.encode())?;
    }
    conn.execute(
        "DELETE FROM event_rows WHERE lane = (SELECT id FROM names WHERE name = ?1)
           AND origin = (SELECT id FROM names WHERE name = ?2)",
        params![lane.key(), origin.0],
    )?;
    conn.execute("DELETE FROM seals WHERE lane = ?1 AND origin = ?2", params![lane.key(), origin.0])?;
    conn.execute("DELETE FROM checkpoints WHERE lane = ?1 AND origin = ?2", params![lane.key(), origin.0])?;
    // The chain's equivocating twins go aside with it: kept beside the
    // case, a twin would be folded back in while the chain is taken back,
    // and never judged against the peer's history when the work is entered
    // again.
    let (twins, twin_cases) = move_twins(conn, |e| Ok(e.id.origin == *origin && e.lane == *lane), put_aside)?;
    moved += twins;
    let mut cases: std::collections::BTreeSet<CaseId> = cases.into_iter().collect();
    cases.extend(twin_cases);
    for case in &cases {
        conn.execute("DELETE FROM cases WHERE case_id = ?1", [&case.0])?;
        conn.execute("DELETE FROM person_index WHERE case_id = ?1", [&case.0])?;
        refold_case(conn, case)?;
    }
    Ok(moved)
}

/// Set-aside events not yet dealt with, in (origin, seq) order.
pub fn set_aside_pending(conn: &Connection) -> Result<Vec<(Event, Hash)>> {
    let mut stmt =
        conn.prepare_cached("SELECT event, hash FROM set_aside WHERE outcome IS NULL ORDER BY origin, seq, hash")?;
    let rows = stmt.query_map([], |r| {
        let hash: Vec<u8> = r.get(1)?;
        Ok((decode_event(r.get(0)?)?, Hash(hash.try_into().unwrap_or([0; 32]))))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records what became of a set-aside event.
pub fn set_aside_done(conn: &Connection, id: &proto::EventId, hash: &Hash, outcome: &str) -> Result<()> {
    conn.execute(
        "UPDATE set_aside SET outcome = ?4 WHERE origin = ?1 AND seq = ?2 AND hash = ?3",
        params![id.origin.0, id.seq, hash.0, outcome],
    )?;
    Ok(())
}

/// Every origin with events, in the order of its name: the names in
/// their index order, each with one seek of the events' key (no sort of
/// the events).
fn origins_by_name(conn: &Connection) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare(
        "SELECT o.id FROM names o WHERE EXISTS (SELECT 1 FROM event_rows e WHERE e.origin = o.id) ORDER BY o.name",
    )?;
    let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// The events of one origin (by id), in seq order.
const ORIGIN_EVENTS: &str =
    concat!("SELECT ", event_columns!(), " FROM ", event_rows!(), " WHERE e.origin = ?1 ORDER BY e.seq");

/// Every stored event in (origin, seq) order, streamed to `f`.
pub fn for_each_event(conn: &Connection, mut f: impl FnMut(Event) -> Result<()>) -> Result<()> {
    let mut stmt = conn.prepare(ORIGIN_EVENTS)?;
    for origin in origins_by_name(conn)? {
        let mut rows = stmt.query([origin])?;
        while let Some(r) = rows.next()? {
            f(event_row(r, 0)?)?;
        }
    }
    Ok(())
}

/// [`for_each_event`] for `verify`, which reports damage itself: events
/// that cannot be decoded are skipped, and a read that fails ends the walk.
pub fn for_each_decodable_event(conn: &Connection, mut f: impl FnMut(Event) -> Result<()>) -> Result<()> {
    let mut stmt = conn.prepare(ORIGIN_EVENTS)?;
    for origin in origins_by_name(conn)? {
        let mut rows = stmt.query([origin])?;
        while let Ok(Some(r)) = rows.next() {
            if let Ok(e) = event_row(r, 0) {
                f(e)?;
            }
        }
    }
    Ok(())
}

/// Records refused input. `event` is the encoded event when it was in this
/// node's scope, or only its header otherwise: data outside a node's scope
/// is never stored, not even in quarantine.
#[allow(clippy::too_many_arguments)]
pub fn quarantine(
    conn: &Connection,
    at_ms: u64,
    from: &NodeId,
    origin: &NodeId,
    seq: u64,
    kind: &str,
    reason: &str,
    event: &[u8],
) -> Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO quarantine (at_ms, from_node, origin, seq, reason, event, kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![at_ms, from.0, origin.0, seq, reason, event, kind],
    )?;
    Ok(())
}

pub fn quarantine_list(conn: &Connection) -> Result<Vec<QuarantineEntry>> {
    let mut stmt =
        conn.prepare("SELECT id, at_ms, from_node, origin, seq, reason, kind FROM quarantine ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(QuarantineEntry {
            id: r.get(0)?,
            at_ms: r.get(1)?,
            from_node: r.get(2)?,
            origin: r.get(3)?,
            seq: r.get(4)?,
            reason: r.get(5)?,
            kind: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

impl Store {
    /// Drops and recomputes every index and derived row from the events
    /// (see [`integrity::repair`]). Returns the number of cases.
    pub fn rebuild(&mut self) -> Result<usize> {
        integrity::repair(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::Identity;
    use proto::topology::NodeInfo;

    /// Column `index` of every row `sql` returns.
    fn column<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str, index: usize) -> Vec<T> {
        conn.prepare(sql).unwrap().query_map([], |r| r.get(index)).unwrap().map(|r| r.unwrap()).collect()
    }

    /// A cached statement used again with another value is not parsed
    /// again (a served sync session runs the same few statements for every
    /// peer; parsing them again was a tenth of a session's CPU).
    #[test]
    fn cached_statements_are_not_parsed_again_when_rebound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let conn = store.conn();
        let lanes = ["*", "511421101001", "511421101002", "511421101003"];
        for lane in lanes {
            placeholder_row(conn, if lane == "*" { "511421" } else { lane }, 1, lane);
        }
        for lane in lanes {
            let _ = lane_positions(conn, Some(&[Lane::from_key(lane)])).unwrap();
        }
        for sql in [ID_OF, NEXT_CHAIN_IN_LANE, CHAIN_LAST] {
            let stmt = conn.prepare_cached(sql).unwrap();
            assert!(stmt.get_status(rusqlite::StatementStatus::Run) >= 4, "{sql}");
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
        }
    }

    /// Issue 9: every session asks for the chain heads of the peer's
    /// lanes; finding them seeks the (lane, origin, pos) index and does not
    /// walk the lanes' events, so the work is the same for a lane of three
    /// events and one of three thousand (a GROUP BY walked them all: a
    /// fifth of a no-op session's CPU at the hub).
    #[test]
    fn chain_heads_are_found_without_walking_a_lanes_events() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::create(dir.path()).unwrap());
        let mut conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let steps = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = steps.clone();
        conn.progress_handler(
            1,
            Some(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }),
        )
        .unwrap();
        let add = |lane: &str, origin: &str, upto: u64| {
            let tx = conn.unchecked_transaction().unwrap();
            for pos in 1..=upto {
                placeholder_row(&tx, origin, pos, lane);
            }
            tx.commit().unwrap();
        };
        let heads = |rows: &[(Lane, NodeId, u64)]| {
            rows.iter().map(|(l, o, p)| format!("{}/{}:{p}", l.key(), o.0)).collect::<Vec<_>>()
        };
        let lane = Lane::from_key("511421101001");
        let mut work = Vec::new();
        for upto in [3, 3000] {
            add("511421101001", "511421101001", upto);
            add("511421101001", "511421101", upto / 3);
            add("*", "511421", upto);
            let before = steps.load(std::sync::atomic::Ordering::Relaxed);
            let one = lane_positions(&conn, Some(std::slice::from_ref(&lane))).unwrap();
            let all = lane_positions(&conn, None).unwrap();
            work.push(steps.load(std::sync::atomic::Ordering::Relaxed) - before);
            assert_eq!(
                heads(&one),
                [format!("511421101001/511421101:{}", upto / 3), format!("511421101001/511421101001:{upto}")]
            );
            let grouped: Vec<String> = conn
                .prepare("SELECT lane, origin, MAX(pos) FROM events GROUP BY lane, origin")
                .unwrap()
                .query_map([], |r| {
                    Ok(format!("{}/{}:{}", r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u64>(2)?))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(heads(&all), grouped);
        }
        assert!(work[0] > 0, "the hook counts steps");
        // A walk would take thousands of steps more; seeks take the same
        // few (give or take the hook's granularity).
        assert!(work[1] < work[0] * 2, "steps for 3 events a chain: {}; for 3,000: {}", work[0], work[1]);
    }

    /// A chain removed by another connection while its heads are read (a
    /// revocation's purge between the two seeks) is skipped, not an error
    /// that ends the session: the removal lands at every step of the scan.
    #[test]
    fn a_chain_removed_during_the_scan_is_skipped() {
        for step in 1..80u64 {
            let dir = tempfile::tempdir().unwrap();
            drop(Store::create(dir.path()).unwrap());
            let path = dir.path().join(DB_FILE);
            let mut conn = Connection::open(&path).unwrap();
            for (origin, upto) in [("511421101001", 5u64), ("511421101001~0000000a", 3)] {
                for pos in 1..=upto {
                    placeholder_row(&conn, origin, pos, "511421101001");
                }
            }
            let other = Connection::open(&path).unwrap();
            let mut n = 0u64;
            conn.progress_handler(
                1,
                Some(move || {
                    n += 1;
                    if n == step {
                        other
                            .execute(
                                "DELETE FROM event_rows WHERE origin =
                                    (SELECT id FROM names WHERE name = '511421101001~0000000a')",
                                [],
                            )
                            .unwrap();
                    }
                    false
                }),
            )
            .unwrap();
            let heads = lane_positions(&conn, Some(&[Lane::from_key("511421101001")]))
                .unwrap_or_else(|e| panic!("removed at step {step}: {e:#}"));
            assert!(heads.iter().any(|(_, o, p)| o.as_str() == "511421101001" && *p == 5), "step {step}");
        }
    }

    /// Issue 9: the files a session wants and those a county receipt lists
    /// as missing are read from partial indexes of what is lacking (a
    /// walk over every file reference of a lane cost a village's no-op
    /// session 2.3 ms more at the hub with 3,000 files held), and the flags
    /// those indexes rest on follow every change of what is held, in any
    /// order, as the full comparison would say.
    #[test]
    fn lacking_files_are_read_from_flags_that_follow_what_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let conn = store.conn();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let values: [&dyn rusqlite::ToSql; 2] = [&"[\"v\"]", &10];
            let n = stmt.parameter_count();
            stmt.query_map(&values[..n], |r| r.get::<_, String>(3))
                .unwrap()
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
                .join("; ")
        };
        for (sql, index) in [
            (crate::sync::files::WANTED, "file_refs_lacking"),
            (crate::sync::files::ANY_LACKING, "file_refs_lacking"),
            (crate::receipts::MISSING, "file_refs_missing"),
        ] {
            assert!(plan(sql).contains(index), "{}", plan(sql));
        }

        // Random changes of what is held; after each, the flags agree with
        // the tables they summarise.
        let h = |i: u8| vec![i; 32];
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..400 {
            let (hash, case, home) = (h(next(4) as u8), format!("c{}", next(3)), ["v", "w"][next(2) as usize]);
            let (hash, case): (&dyn rusqlite::ToSql, &dyn rusqlite::ToSql) = (&hash, &case);
            let (sql, values): (&str, Vec<&dyn rusqlite::ToSql>) = match next(9) {
                0 => (
                    "INSERT OR IGNORE INTO file_refs (hash, case_id, home, size) VALUES (?1, ?2, ?3, 1)",
                    vec![hash, case, &home],
                ),
                1 => ("DELETE FROM file_refs WHERE hash = ?1 AND case_id = ?2", vec![hash, case]),
                2 => ("INSERT OR IGNORE INTO file_lanes (hash, home) VALUES (?1, ?2)", vec![hash, &home]),
                3 => ("DELETE FROM file_lanes WHERE hash = ?1", vec![hash]),
                4 => ("INSERT OR IGNORE INTO files_held (hash, size, home) VALUES (?1, 1, ?2)", vec![hash, &home]),
                5 => ("DELETE FROM files_held WHERE hash = ?1", vec![hash]),
                6 => ("INSERT OR REPLACE INTO files_pruned (hash, at_ms) VALUES (?1, 1)", vec![hash]),
                7 => ("DELETE FROM files_pruned WHERE hash = ?1", vec![hash]),
                _ => ("UPDATE file_refs SET home = ?3 WHERE hash = ?1 AND case_id = ?2", vec![hash, case, &home]),
            };
            conn.execute(sql, &values[..]).unwrap();
            let wrong: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM file_refs r WHERE
                        lane_held != EXISTS (SELECT 1 FROM file_lanes l WHERE l.hash = r.hash AND l.home = r.home)
                        OR held != EXISTS (SELECT 1 FROM files_held f WHERE f.hash = r.hash)
                        OR pruned != EXISTS (SELECT 1 FROM files_pruned p WHERE p.hash = r.hash)",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(wrong, 0, "after {sql}");
        }
    }

    /// A store of schema 18 holding file references, files held, held
    /// for a lane and pruned: migration 19 sets each reference's flags
    /// from those tables.
    #[test]
    fn migration_19_flags_the_references_a_store_holds() {
        let (_dir, mut conn) = store_at_schema(18);
        let h = |i: u8| vec![i; 32];
        for (i, home) in [(1u8, "v"), (2, "v"), (3, "w"), (4, "v"), (4, "w")] {
            conn.execute(
                "INSERT INTO file_refs (hash, case_id, home, size) VALUES (?1, ?2, ?3, 1)",
                params![h(i), format!("c{i}{home}"), home],
            )
            .unwrap();
        }
        for i in [1u8, 4] {
            conn.execute("INSERT INTO files_held (hash, size, home) VALUES (?1, 1, 'v')", [h(i)]).unwrap();
            conn.execute("INSERT INTO file_lanes (hash, home) VALUES (?1, 'v')", [h(i)]).unwrap();
        }
        conn.execute("INSERT INTO files_pruned (hash, at_ms) VALUES (?1, 1)", [h(2)]).unwrap();
        migrate(&mut conn).unwrap();
        let flags: Vec<(i64, i64, i64)> = conn
            .prepare("SELECT lane_held, held, pruned FROM file_refs ORDER BY hash, home")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        // 1 held for v; 2 pruned; 3 lacking; 4 held for v, not for w.
        assert_eq!(flags, vec![(1, 1, 0), (0, 0, 1), (0, 0, 0), (1, 1, 0), (0, 1, 0)]);
    }

    /// Migration 20 writes each row from its body, the event itself: the
    /// schema-19 columns were an index never checked against it. A body
    /// that disagrees with its row (here a stamp's logical part) reads back
    /// as the body says; one that does not follow its chain (its `prev` is
    /// not the hash before it) is also kept whole in quarantine and the
    /// check reports it.
    #[test]
    fn migration_20_keeps_the_event_its_body_holds() {
        for broken_prev in [false, true] {
            let (_dir, mut conn) = store_at_schema(19);
            let mut chain = test_chain("511421101001", 3);
            if broken_prev {
                chain[2].prev = Hash([9; 32]);
            }
            for e in &chain {
                old_event_row(&conn, e, e.id.seq, u32::from(e.id.seq == 2));
            }
            migrate(&mut conn).unwrap();
            let kept: Vec<(u64, Vec<u8>)> = conn
                .prepare("SELECT seq, event FROM quarantine ORDER BY seq")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            let health = integrity::check(&conn);
            if broken_prev {
                assert_eq!(kept.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2, 3], "the disagreeing bodies, whole");
                assert_eq!(Event::decode(&kept[1].1).unwrap(), chain[2]);
                assert!(health.events.iter().any(|p| p.contains("/3 does not match")), "{health:?}");
            } else {
                assert_eq!(kept.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2], "the row that disagreed");
                assert!(health.is_ok(), "{health:?}");
                assert_eq!(lane_events(&conn, &chain[0].lane, &chain[0].id.origin, 0, 10).unwrap(), chain);
            }
        }
    }

    /// Two bodies claiming one id in a damaged schema-19 store: the one
    /// written as the event and the other, whole, in quarantine; neither
    /// is lost.
    #[test]
    fn migration_20_keeps_both_bodies_claiming_one_id() {
        let (_dir, mut conn) = store_at_schema(19);
        let chain = test_chain("511421101001", 3);
        let mut a = chain[1].clone();
        a.prev = Hash([9; 32]);
        let mut b = chain[1].clone();
        b.body = proto::Body::AddMaterial { name: "另一个".into() };
        for (row, e) in [(1u64, &chain[0]), (2, &a), (3, &b)] {
            old_event_row(&conn, e, row, 0);
        }
        migrate(&mut conn).unwrap();
        let kept: Vec<Vec<u8>> = column(&conn, "SELECT event FROM quarantine", 0);
        assert!(kept.contains(&a.encode()) && kept.contains(&b.encode()), "{} kept", kept.len());
        assert_eq!(case_events(&conn, &a.case).unwrap().len(), 2, "the first body is the stored event");
    }

    /// The chain-head scan finds a chain whatever its ids (one renumbered
    /// by hand to a negative id reads the same everywhere else).
    #[test]
    fn a_chain_renumbered_to_a_non_positive_id_is_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let chain = test_chain("511421101001", 3);
        for e in &chain {
            insert_event(store.conn(), e).unwrap();
        }
        let before = lane_positions(store.conn(), None).unwrap();
        assert_eq!(before.len(), 1);
        store
            .conn()
            .execute_batch(
                "UPDATE event_rows SET origin = -origin, lane = -lane;
                 UPDATE names SET id = -id WHERE name = '511421101001';",
            )
            .unwrap();
        assert!(integrity::check(store.conn()).is_ok());
        assert_eq!(lane_positions(store.conn(), None).unwrap(), before);
        assert_eq!(lane_positions(store.conn(), Some(&[chain[0].lane.clone()])).unwrap(), before);
    }

    /// A long setting (the catalogue: about 500 KB of JSON) is stored
    /// packed and reads back the same; a short one stays text, and text
    /// stored by an earlier release still reads.
    #[test]
    fn long_settings_are_stored_packed_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let conn = store.conn();
        let catalogue: proto::Catalogue = serde_json::from_str(include_str!("../../deploy/catalogue.json")).unwrap();
        meta_set(conn, "catalogue", &catalogue).unwrap();
        meta_set(conn, "operator", &"王芳").unwrap();
        conn.execute("INSERT INTO meta (key, value) VALUES ('old', '[1,2,3]')", []).unwrap();
        let stored = |key: &str| -> (String, i64) {
            conn.query_row("SELECT typeof(value), length(value) FROM meta WHERE key = ?1", [key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        let json = serde_json::to_string(&catalogue).unwrap();
        let (kind, size) = stored("catalogue");
        assert_eq!(kind, "blob");
        assert!((size as usize) < json.len() / 10, "{} B of JSON stored in {size} B", json.len());
        assert_eq!(
            serde_json::to_string(&meta_get::<proto::Catalogue>(conn, "catalogue").unwrap().unwrap()).unwrap(),
            json
        );
        assert_eq!(stored("operator").0, "text");
        assert_eq!(meta_get::<String>(conn, "operator").unwrap().unwrap(), "王芳");
        assert_eq!(meta_get::<Vec<u8>>(conn, "old").unwrap().unwrap(), [1, 2, 3]);
        conn.execute("UPDATE meta SET value = x'6d01ffff' WHERE key = 'catalogue'", []).unwrap();
        let err = meta_get::<proto::Catalogue>(conn, "catalogue").unwrap_err();
        assert!(format!("{err:#}").contains("stored catalogue is damaged"), "{err:#}");
    }

    /// A row at `pos` (= seq) of `origin`'s chain in `lane` whose hash and
    /// content are placeholders (for the chain scans, which read neither).
    fn placeholder_row(conn: &Connection, origin: &str, pos: u64, lane: &str) {
        let hlc = Hlc::default();
        let row = Row { origin, seq: pos, lane, pos, hash: &[0], case: "c", hlc, content: &[0] };
        row.insert(conn, &mut Names::default()).unwrap();
    }

    /// Issue 9: nodes and lanes keep small ids however many cases came
    /// before them (an event's row and its indexes name its origin and
    /// lane five times: at a year's 300 k cases, ids given in order of
    /// arrival took three bytes each instead of one or two); where an old
    /// store's cases took the lower range, a node still gets an id, and
    /// its rows read back.
    #[test]
    fn nodes_and_lanes_take_small_ids_however_many_cases_came_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let conn = store.conn();
        let id = |name: &str| -> i64 { conn.query_row(ID_OF, [name], |r| r.get(0)).unwrap() };
        let row = |origin: &str, seq: u64, case: &str| {
            let hlc = Hlc::default();
            let lane = origin;
            Row { origin, seq, lane, pos: seq, hash: &[0], case, hlc, content: &[0] }
                .insert(conn, &mut Names::default())
                .unwrap();
        };
        for seq in 1..=3 * CASE_IDS_FROM as u64 {
            row("511421101001", seq, &format!("511421101001-{seq}"));
        }
        row("511421101002", 1, "511421101002-1");
        assert!(id("511421101001") < 128 && id("511421101002") < 128, "nodes in one byte");
        assert!(id("511421101001-1") >= CASE_IDS_FROM && id("511421101002-1") > 3 * CASE_IDS_FROM);
        // An old store whose cases took every id of the lower range.
        conn.execute("UPDATE names SET id = ?1 - 1 WHERE name = '511421101001-2'", [CASE_IDS_FROM]).unwrap();
        row("511421101003", 1, "511421101003-1");
        let late = id("511421101003");
        assert!(late > id("511421101002-1"), "the next id above every other: {late}");
        let held: Vec<String> = column(conn, "SELECT origin FROM events WHERE seq = 1 ORDER BY origin", 0);
        assert_eq!(held, ["511421101001", "511421101002", "511421101003"]);
    }

    /// A store file with the first `schema` migrations applied (to test
    /// the next one on it).
    fn store_at_schema(schema: usize) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        for (i, step) in MIGRATIONS.iter().enumerate().take(schema) {
            conn.execute_batch(step).unwrap();
            conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1)).unwrap();
        }
        (dir, conn)
    }

    /// `e` as a schema-19 store kept it (the whole event in `body`), in
    /// the row of seq and position `row`, its stamp's logical part
    /// off by `skew` in the row.
    fn old_event_row(conn: &Connection, e: &Event, row: u64, skew: u32) {
        conn.execute(
            "INSERT INTO events (origin, seq, lane, pos, hash, case_id, hlc_wall, hlc_logical, body)
             VALUES (?1, ?2, ?3, ?2, ?4, ?5, ?6, ?7, ?8)",
            params![
                e.id.origin.0,
                row,
                e.lane.key(),
                e.hash().0,
                e.case.0,
                e.hlc.wall_ms,
                e.hlc.logical + skew,
                e.encode()
            ],
        )
        .unwrap();
    }

    /// A chain of `n` events of one case by `origin` in its own lane.
    pub(crate) fn test_chain(origin: &str, n: u64) -> Vec<Event> {
        let origin = NodeId::new(origin);
        let mut prev = Hash::ZERO;
        (1..=n)
            .map(|seq| {
                let e = Event {
                    id: proto::EventId { origin: origin.clone(), seq },
                    lane: Lane::Home(origin.clone()),
                    pos: seq,
                    prev,
                    hlc: proto::Hlc { wall_ms: 1_760_000_000_000 + seq, logical: 0 },
                    actor: "村代办员".into(),
                    case: CaseId::mint(&origin, 1),
                    context: Default::default(),
                    body: proto::Body::AddMaterial { name: format!("材料{seq}") },
                };
                prev = e.hash();
                e
            })
            .collect()
    }

    /// The personal-data index keys a look-up hash by its 32 bytes (about
    /// 32 bytes an entry less than its hex); a forged, non-hash value is
    /// kept as the text it is. Both are found, and migration 21 rewrites
    /// the hex keys an earlier schema stored.
    #[test]
    fn the_personal_data_index_keys_a_hash_by_its_bytes_and_anything_else_as_text() {
        let (_dir, mut conn) = store_at_schema(20);
        let hash = "ab".repeat(32);
        let odd = ["AB".repeat(32), "zz".repeat(32), "12ab".into()];
        for (i, lookup) in std::iter::once(&hash).chain(&odd).enumerate() {
            conn.execute(
                "INSERT INTO person_index (lookup, case_id) VALUES (?1, ?2)",
                params![lookup, format!("v-{i}")],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        let kinds: Vec<String> = column(&conn, "SELECT typeof(lookup) FROM person_index ORDER BY case_id", 0);
        assert_eq!(kinds, ["blob", "text", "text", "text"]);
        let after_migration: Vec<Vec<CaseId>> =
            std::iter::once(&hash).chain(&odd).map(|l| cases_by_lookup(&conn, l).unwrap()).collect();
        let expected: Vec<Vec<CaseId>> = (0..4).map(|i| vec![CaseId(format!("v-{i}"))]).collect();
        assert_eq!(after_migration, expected);
        // Written from now on: the same keys.
        conn.execute("DELETE FROM person_index", []).unwrap();
        for (i, lookup) in std::iter::once(&hash).chain(&odd).enumerate() {
            conn.execute(
                "INSERT INTO person_index (lookup, case_id) VALUES (?1, ?2)",
                params![lookup_key(lookup), format!("v-{i}")],
            )
            .unwrap();
            assert_eq!(lookup_of(lookup_key(lookup)), *lookup);
        }
        assert_eq!(column::<String>(&conn, "SELECT typeof(lookup) FROM person_index ORDER BY case_id", 0), kinds);
        let bytes: i64 =
            conn.query_row("SELECT length(lookup) FROM person_index WHERE case_id = 'v-0'", [], |r| r.get(0)).unwrap();
        assert_eq!(bytes, 32);
    }

    /// An event row keeps its content without the case id the row names
    /// (about 17 bytes an event at the hub); the events read back the same,
    /// and the store checks clean. A row of an earlier release, content
    /// whole, still reads.
    #[test]
    fn an_event_row_keeps_its_content_without_its_case_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let chain = test_chain("511421101001", 3);
        for e in &chain {
            insert_event(store.conn(), e).unwrap();
        }
        let conn = store.conn();
        let case = chain[0].case.as_str();
        let stored: Vec<Vec<u8>> = column(conn, "SELECT content FROM event_rows ORDER BY seq", 0);
        for (e, packed) in chain.iter().zip(&stored) {
            let content = crate::at_rest::event_content(packed).unwrap();
            assert_eq!(content.len(), e.content_bytes().len() - case.len() - 1);
            assert!(!content.windows(case.len()).any(|w| w == case.as_bytes()), "the case id at rest");
        }
        let lane = chain[0].lane.clone();
        assert_eq!(lane_events(conn, &lane, &chain[0].id.origin, 0, 10).unwrap(), chain);
        let folded: Vec<Event> = case_events(conn, &chain[0].case).unwrap().into_iter().map(|(e, _)| e).collect();
        assert_eq!(folded, chain);
        assert!(integrity::check(conn).is_ok());
        conn.execute("UPDATE event_rows SET content = ?1 WHERE seq = 2", [chain[1].content_bytes()]).unwrap();
        assert_eq!(lane_events(conn, &lane, &chain[0].id.origin, 0, 10).unwrap(), chain);
        assert!(integrity::check(conn).is_ok());
    }

    /// A chain of three events and a twin of its third (another actor),
    /// stored, and their case folded.
    fn chain_with_twin(conn: &Connection, actor: &str) -> (Vec<Event>, Event) {
        let chain = test_chain("511421101001", 3);
        for e in &chain {
            insert_event(conn, e).unwrap();
        }
        let mut twin = chain[2].clone();
        twin.actor = actor.into();
        assert_eq!(insert_event(conn, &twin).unwrap(), Inserted::Equivocation);
        refold_case(conn, &chain[0].case).unwrap();
        (chain, twin)
    }

    /// A revocation's purge takes the revoked key's equivocating twins past
    /// the cut to quarantine too: kept, a twin was folded back into its
    /// case, so a thief's twinned creation outlived the revocation (found
    /// by review).
    #[test]
    fn a_revocations_purge_takes_the_twins_past_the_cut_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let conn = store.conn();
        let (chain, twin) = chain_with_twin(conn, "窃贼");
        // A second twin of the same event: each is kept in quarantine
        // (found by review: one entry per id and reason kept only one).
        let mut third = twin.clone();
        third.actor = "窃贼二".into();
        assert_eq!(insert_event(conn, &third).unwrap(), Inserted::Equivocation);
        let (lane, origin) = (chain[0].lane.clone(), chain[0].id.origin.clone());
        let upto = [(lane, origin.clone(), 2, chain[1].hash())];
        let moved = purge_after_revocation(conn, 1, &origin, &origin, &KeyId([0; 32]), &upto).unwrap();
        assert_eq!(moved, 3, "the event past the cut and its two twins");
        let twins: i64 = conn.query_row("SELECT COUNT(*) FROM equivocations", [], |r| r.get(0)).unwrap();
        assert_eq!(twins, 0);
        let st = fold_stored(conn, &chain[0].case).unwrap().unwrap();
        assert_eq!(st.history.len(), 2, "the twin is folded no more: {:?}", st.history);
        let kept: i64 =
            conn.query_row("SELECT COUNT(*) FROM quarantine WHERE kind = 'key_revoked'", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 3, "every one kept for administrators");
    }

    /// A read-only open reads a store one marker step behind (schema 22:
    /// step 23 changes no table) as it is, and refuses one whose tables
    /// differ (found by review: a backup on read-only media was refused).
    #[test]
    fn a_read_only_open_reads_a_store_a_marker_step_behind() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::create(dir.path()).unwrap());
        let at = |v: usize| {
            Connection::open(dir.path().join(DB_FILE))
                .unwrap()
                .execute_batch(&format!("PRAGMA user_version = {v}"))
                .unwrap();
            Store::open_read_only(dir.path())
        };
        assert!(at(MIGRATIONS.len()).is_ok());
        assert!(at(READ_ONLY_FROM).is_ok(), "schema {READ_ONLY_FROM} reads as it is");
        let older = at(READ_ONLY_FROM - 1).err().unwrap().to_string();
        assert!(older.contains("older schema"), "{older}");
    }

    /// A stale copy's chain set aside takes its equivocating twins with
    /// it: none is folded into the case while the peer's history is taken
    /// back, and each is judged with the rest when the work is entered
    /// again.
    #[test]
    fn a_chain_set_aside_takes_its_twins_aside_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let conn = store.conn();
        let (chain, twin) = chain_with_twin(conn, "另一副本");
        // A twin of the chain filed under another origin (a store altered
        // on disk) goes aside too: it is the chain's by what it says
        // (found by review).
        let mut filed_elsewhere = twin.clone();
        filed_elsewhere.actor = "又一副本".into();
        conn.execute(
            "INSERT INTO equivocations (origin, seq, hash, case_id, body) VALUES ('511421101009', ?1, ?2, ?3, ?4)",
            params![filed_elsewhere.id.seq, filed_elsewhere.hash().0, filed_elsewhere.case.0, filed_elsewhere.encode()],
        )
        .unwrap();
        let (lane, origin) = (chain[0].lane.clone(), chain[0].id.origin.clone());
        assert_eq!(set_aside_chain(conn, &origin, &lane, 1).unwrap(), 5, "three events and the two twins");
        let twins: i64 = conn.query_row("SELECT COUNT(*) FROM equivocations", [], |r| r.get(0)).unwrap();
        assert_eq!(twins, 0);
        assert_eq!(fold_stored(conn, &chain[0].case).unwrap(), None, "nothing of the chain is folded");
        let pending: Vec<Hash> = set_aside_pending(conn).unwrap().into_iter().map(|(_, h)| h).collect();
        assert!(pending.contains(&twin.hash()), "the twin waits to be judged with the rest");
    }

    /// Migration 20 rewrites each event row from the whole encoded event
    /// to its content: every event reads back the same (its `prev` from
    /// the row before it), and a row that did not decode before still
    /// shows as damage, not as a lost row.
    #[test]
    fn migration_20_keeps_each_events_content_and_reads_back_the_same_events() {
        let (_dir, mut conn) = store_at_schema(19);
        let chain = test_chain("511421101001", 4);
        for e in &chain {
            old_event_row(&conn, e, e.id.seq, 0);
        }
        conn.execute("INSERT INTO events VALUES ('w', 1, 'w', 1, x'00', 'w-1', 1, 0, x'0102')", []).unwrap();
        let long = format!("[{}]", vec!["\"行政区划\""; 2000].join(","));
        conn.execute("INSERT INTO meta (key, value) VALUES ('topology', ?1), ('hlc', '[1,2]')", [&long]).unwrap();
        let whole: i64 =
            conn.query_row("SELECT SUM(length(body)) FROM events WHERE origin != 'w'", [], |r| r.get(0)).unwrap();
        migrate(&mut conn).unwrap();
        let lane = Lane::Home(NodeId::new("511421101001"));
        assert_eq!(lane_events(&conn, &lane, &chain[0].id.origin, 0, 10).unwrap(), chain);
        assert_eq!(lane_events(&conn, &lane, &chain[0].id.origin, 2, 3).unwrap(), chain[2..3]);
        let folded: Vec<Event> = case_events(&conn, &chain[0].case).unwrap().into_iter().map(|(e, _)| e).collect();
        assert_eq!(folded, chain);
        let kept: i64 =
            conn.query_row("SELECT SUM(length(content)) FROM events WHERE origin != 'w'", [], |r| r.get(0)).unwrap();
        assert!(kept < whole - 4 * 32, "the content drops at least each prev: {whole} -> {kept}");
        let plans: String = column::<String>(
            &conn,
            "EXPLAIN QUERY PLAN SELECT pos FROM event_rows WHERE lane = 1 AND origin = 2 ORDER BY pos DESC",
            3,
        )
        .concat();
        assert!(plans.contains("event_rows_lane"), "the lane index: {plans}");
        let kinds: Vec<String> = column(&conn, "SELECT typeof(value) FROM meta ORDER BY key", 0);
        assert_eq!(kinds, ["text", "blob"], "the long setting is packed, the short one not");
        assert_eq!(meta_get::<Vec<String>>(&conn, "topology").unwrap().unwrap().len(), 2000);
        let health = integrity::check(&conn);
        assert_eq!(health.events.len(), 1, "{health:?}");
        assert!(health.events[0].contains("w/1 cannot be decoded"), "{health:?}");
    }

    /// A calendar read inside a transaction that stored a newer one is not
    /// kept once that transaction is rolled back (a group commit's batch
    /// refused after its publication was stored in a savepoint), and one
    /// read before a publication was committed is not kept after it.
    #[test]
    fn the_calendar_read_follows_what_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(dir.path()).unwrap();
        assert_eq!(calendar(store.conn()).unwrap().version, 1, "the shipped calendar");
        let mut file: proto::calendar::CalendarFile = serde_json::from_str(DEFAULT_CALENDAR).unwrap();
        file.version = 2;
        let publish = Event {
            id: proto::EventId { origin: NodeId::new("511421"), seq: 1 },
            lane: Lane::Global,
            pos: 1,
            prev: Hash::ZERO,
            hlc: proto::Hlc { wall_ms: 1_760_000_000_000, logical: 0 },
            actor: "县管理员".into(),
            case: proto::CaseId(proto::event::GLOBAL_CASE.into()),
            context: Default::default(),
            body: proto::Body::Publish(Box::new(proto::publication::Publication::Calendar(file))),
        };
        {
            let tx = store.write().unwrap();
            insert_event(&tx, &publish).unwrap();
            assert_eq!(calendar(&tx).unwrap().version, 2, "the transaction sees its own publication");
            drop(tx); // rolled back
        }
        assert_eq!(calendar(store.conn()).unwrap().version, 1, "a rolled-back publication stayed");
        let tx = store.write().unwrap();
        insert_event(&tx, &publish).unwrap();
        tx.commit().unwrap();
        assert_eq!(calendar(store.conn()).unwrap().version, 2, "a committed publication was not seen");
    }

    /// Opening an up-to-date store takes no write lock: it does not wait
    /// for another connection's transaction (a server's writer committing
    /// while a session opens a ledger).
    #[test]
    fn opening_a_store_does_not_wait_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::create(dir.path()).unwrap());
        let writer = Connection::open(dir.path().join(DB_FILE)).unwrap();
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        std::thread::spawn(move || tx.send(Store::open(&path).map(|_| ())).unwrap());
        let opened = rx.recv_timeout(Duration::from_secs(5)).expect("the open waited for the writer");
        opened.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        writer.execute_batch("COMMIT").unwrap();
    }

    /// A store holding the identity of a node of `tier`, as `init` leaves it.
    fn store_of(tier: Tier) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let node = NodeInfo {
            id: NodeId::new("511421101001"),
            tier,
            parent: None,
            name: "村".into(),
            verifying_key: None,
            former_parents: Vec::new(),
            retired: false,
            retired_at: None,
        };
        let identity =
            Identity { node, tls_cert_pem: String::new(), ca_cert_pem: String::new(), hub_address: String::new() };
        meta_set(store.conn(), "identity", &identity).unwrap();
        dir
    }

    #[test]
    fn a_store_opens_with_the_page_cache_of_its_tier() {
        for (tier, kib) in [(Tier::Village, 2048), (Tier::Township, 4096), (Tier::County, 8192)] {
            let dir = store_of(tier);
            assert_eq!(Store::open(dir.path()).unwrap().page_cache().unwrap(), kib, "{tier:?}, for writing");
            assert_eq!(Store::open_read(dir.path()).unwrap().page_cache().unwrap(), kib, "{tier:?}, for reading");
            assert_eq!(Store::open_read_only(dir.path()).unwrap().page_cache().unwrap(), kib, "{tier:?}, read-only");
        }
    }

    /// Issue 9: the county's write-ahead log grows to
    /// [`COUNTY_WAL_PAGES`] before a checkpoint; a laptop keeps SQLite's
    /// 1,000.
    #[test]
    fn the_countys_log_is_checkpointed_less_often() {
        for (tier, pages) in [(Tier::Village, 1000), (Tier::Township, 1000), (Tier::County, COUNTY_WAL_PAGES)] {
            let dir = store_of(tier);
            let store = Store::open(dir.path()).unwrap();
            let got: u32 = store.conn().query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).unwrap();
            assert_eq!(got, pages, "{tier:?}");
        }
    }

    #[test]
    fn a_new_store_has_a_village_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Store::create(dir.path()).unwrap().page_cache().unwrap(), page_cache_kib(None));
        assert_eq!(page_cache_kib(None), page_cache_kib(Some(Tier::Village)));
    }
}
