//! Keeping a damaged store from taking work it can never send.
//!
//! A store is checked ([`check`]: SQLite's `quick_check`, every event
//! decoded and matched against the id and hash stored beside it, every
//! derived case row decoded)
//! - when it is opened for writing and the previous session did not end
//!   cleanly, or the file changed since it did (a killed process, a power
//!   cut, a disk or a person that altered it);
//! - at the start of a `sync` when no whole check has passed in the last
//!   24 hours (`node.checked`; a scheduler's sync every few minutes pays
//!   it once a day, not every time, and the store grows for years), and
//!   at the start of `serve` below the county (whose store, holding
//!   everything, is checked only after an unclean end).
//!
//! A store found damaged is marked so (`node.damaged`): every write is
//! refused with what to do, until `verify --repair` has rebuilt it (derived
//! rows and indexes), or the node is initialised afresh and pulls its data
//! back from its peers.
//!
//! Sessions: every process that opens the store for writing holds a shared
//! `flock` on `node.lock` while it does. The first one in (the only one to
//! get it exclusively) reads `node.state`: `clean <size> <mtime>`, written by
//! the last one out once SQLite had checkpointed and removed its WAL, vouches
//! for the file if it is still that size and age and has no WAL; `open`
//! (a session that never ended: a crash) or `checking` (a check that never
//! finished) do not. Later openers wait for the first one's check.
//! `open` is written before the session's first commit
//! ([`Session::watch_commits`]), not when it starts: a session that writes
//! nothing (a no-op sync, a desk only read) leaves the state file as it
//! found it, and the file system is spared two replacing renames, each of
//! which ext4 writes out at once.

use crate::store::{self, DB_FILE};
use anyhow::{Context, Result};
use proto::{codec, CaseId, Event};
use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Held (shared) by every process writing to the store.
pub const LOCK_FILE: &str = "node.lock";
/// How the last session ended.
pub const STATE_FILE: &str = "node.state";
/// Why the store was found damaged; writes are refused while it exists.
pub const DAMAGED_FILE: &str = "node.damaged";
const WAL_FILE: &str = "node.db-wal";
/// Problems listed per kind in a report.
const MAX_LISTED: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    mtime_ns: u128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Clean(Fingerprint),
    Open,
    Checking,
}

fn fingerprint(dir: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(dir.join(DB_FILE)).ok()?;
    let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(Fingerprint { len: meta.len(), mtime_ns: mtime.as_nanos() })
}

fn wal_is_empty(dir: &Path) -> bool {
    std::fs::metadata(dir.join(WAL_FILE)).map(|m| m.len() == 0).unwrap_or(true)
}

fn read_state(dir: &Path) -> Option<State> {
    let text = std::fs::read_to_string(dir.join(STATE_FILE)).ok()?;
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["open"] => Some(State::Open),
        ["checking"] => Some(State::Checking),
        ["clean", len, mtime] => {
            Some(State::Clean(Fingerprint { len: len.parse().ok()?, mtime_ns: mtime.parse().ok()? }))
        }
        _ => None,
    }
}

/// Replaces `name` in `dir` with `text` (written, then renamed over it, so
/// a reader never sees half of it). What cannot be written only costs a
/// check later.
fn replace_file(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!("{name}.{}", std::process::id()));
    if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, dir.join(name)).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Replaces the state file.
fn write_state(dir: &Path, state: &State) {
    let text = match state {
        State::Clean(f) => format!("clean {} {}\n", f.len, f.mtime_ns),
        State::Open => "open\n".into(),
        State::Checking => "checking\n".into(),
    };
    replace_file(dir, STATE_FILE, &text);
}

/// One process's part in a writing session on a store.
#[derive(Debug)]
pub struct Session {
    dir: PathBuf,
    lock: File,
    first: bool,
    checked: bool,
    /// Whether the store was not vouched for as this session began: it is
    /// checked, and its state file says so (`checking`, or a stale state)
    /// until `open` replaces it.
    due: bool,
    /// Whether this process has written `open` (or found it, left by
    /// another process of the session): set before its first commit.
    opened: Arc<AtomicBool>,
}

impl Session {
    /// Joins (or starts) the session on the store in `dir`. Returns it and
    /// whether the store must be checked before it is written to.
    pub fn begin(dir: &Path) -> Result<(Session, bool)> {
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .with_context(|| {
                format!(
                    "{} cannot be written (read-only media?): commands that change the store need a writable \
                     data directory; reading commands (case show/list/find, digest, verify) work here",
                    dir.display()
                )
            })?;
        let first = lock.try_lock().is_ok();
        if !first {
            // Waits while the first one in checks the store.
            lock.lock_shared().context("cannot lock the store")?;
        }
        let found = read_state(dir);
        let found_open = found == Some(State::Open);
        // A later opener joins a session whose first one in vouched for the
        // store or checked it: `open`, or `clean` while nothing was
        // committed yet. The file is then still as `clean` says (a large
        // first transaction may have spilled into the WAL, but only a
        // commit reaches the file), unless it was altered meanwhile, or the
        // first one in died before it could vouch.
        let vouched = match found {
            Some(State::Open) => !first,
            Some(State::Clean(f)) => fingerprint(dir) == Some(f) && (!first || wal_is_empty(dir)),
            _ => false,
        };
        if first && !vouched {
            write_state(dir, &State::Checking);
        }
        let session = Session {
            dir: dir.to_path_buf(),
            lock,
            first,
            checked: false,
            due: !vouched,
            opened: Arc::new(AtomicBool::new(found_open)),
        };
        Ok((session, !vouched))
    }

    /// The store passed its check (or needed none): later openers may
    /// trust it, and this process now shares the session.
    pub fn checked(&mut self) -> Result<()> {
        // A replacing rename costs the file system a flush of the file (ext4
        // writes a file renamed over another out at once): written only
        // when it says something new. A store found clean keeps saying so
        // until the first commit (`watch_commits`); one that was checked
        // (`checking`), or left `open` by a session that never ended, is
        // now this session's.
        if self.due {
            write_state(&self.dir, &State::Open);
            self.opened.store(true, Ordering::SeqCst);
        }
        self.checked = true;
        if self.first {
            self.lock.lock_shared().context("cannot lock the store")?;
        }
        Ok(())
    }

    /// Writes `open` before the first commit on `conn`, so that a process
    /// ending without closing the store (a crash, a kill) leaves it to be
    /// checked, and a later opener trusts the session it joins. Before
    /// any commit the store is as the state file's fingerprint says.
    /// SQLite calls the hook for every write transaction, one that changed
    /// no row included; not for `VACUUM` or the backup API, which no store
    /// runs (a crash after one would still leave a WAL to be checked).
    pub fn watch_commits(&self, conn: &mut Connection) -> Result<()> {
        let (dir, opened) = (self.dir.clone(), self.opened.clone());
        conn.commit_hook(Some(move || {
            if !opened.swap(true, Ordering::SeqCst) {
                write_state(&dir, &State::Open);
            }
            false
        }))
        .context("cannot watch the store's commits")
    }
}

impl Drop for Session {
    /// Runs once the connection has closed. The last process out records
    /// the file as it leaves it, if SQLite has emptied its WAL into it,
    /// unless the state file already says just that (a session that wrote
    /// nothing), or still says `clean` of another file: nothing was
    /// committed in the session, so the file was altered outside it, and
    /// the next one in checks it.
    fn drop(&mut self) {
        if self.checked && self.lock.try_lock().is_ok() && wal_is_empty(&self.dir) {
            if let Some(f) = fingerprint(&self.dir) {
                if !matches!(read_state(&self.dir), Some(State::Clean(_))) {
                    write_state(&self.dir, &State::Clean(f));
                }
            }
        }
    }
}

/// What a check found; empty when the store is sound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// SQLite's own check of the file (pages, b-trees, indexes), or reads
    /// that failed.
    pub structure: Vec<String>,
    /// Events (or equivocation evidence) that cannot be decoded or do not
    /// match the id and hash stored beside them.
    pub events: Vec<String>,
    /// Derived case rows that cannot be decoded.
    pub derived: Vec<String>,
}

impl Health {
    pub fn is_ok(&self) -> bool {
        self.structure.is_empty() && self.events.is_empty() && self.derived.is_empty()
    }

    /// Only derived rows are damaged: `verify --repair` rebuilds them.
    pub fn repairable(&self) -> bool {
        self.structure.is_empty() && self.events.is_empty()
    }

    /// Every problem, most serious first.
    pub fn problems(&self) -> Vec<String> {
        self.structure.iter().chain(&self.events).chain(&self.derived).cloned().collect()
    }
}

fn push(list: &mut Vec<String>, problem: String) {
    if list.len() < MAX_LISTED {
        list.push(problem);
    } else if list.len() == MAX_LISTED {
        list.push("… and more".into());
    }
}

/// Checks the store behind `conn`: the file's structure, every event, every
/// derived row. Reads only; costs one pass over the database.
pub fn check(conn: &Connection) -> Health {
    let mut h = Health::default();
    match quick_check(conn) {
        Ok(problems) => problems.into_iter().for_each(|p| push(&mut h.structure, p)),
        Err(e) => push(&mut h.structure, format!("SQLite cannot check the file: {e}")),
    }
    if let Err(e) = check_event_rows(conn, &mut h.events) {
        push(&mut h.structure, format!("reading the events failed: {e}"));
    }
    if let Err(e) = check_equivocations(conn, &mut h.events) {
        push(&mut h.structure, format!("reading the equivocations failed: {e}"));
    }
    if let Err(e) = check_case_rows(conn, &mut h.derived) {
        push(&mut h.structure, format!("reading the case rows failed: {e}"));
    }
    h
}

fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(10)")?;
    let rows: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    // One row may hold several lines.
    Ok(rows
        .iter()
        .flat_map(|r| r.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "ok" && !l.starts_with("***"))
        .map(String::from)
        .collect())
}

/// Every event row: its origin, lane and case have names, its content
/// decodes and names the case its row is filed under, and its header (the
/// row's columns, `prev` the stored hash of the chain's previous event)
/// hashes to the hash stored beside it, so an altered row, an altered name,
/// or an altered hash of the row before it, shows here.
fn check_event_rows(conn: &Connection, problems: &mut Vec<String>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(concat!(
        "SELECT e.hash, c.name, ",
        store::event_columns!(),
        ", e.origin, e.lane, e.case_no FROM event_rows e LEFT JOIN names o ON o.id = e.origin
         LEFT JOIN names l ON l.id = e.lane LEFT JOIN names c ON c.id = e.case_no"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(3)?;
        let names: [Option<String>; 3] = [r.get(2)?, r.get(4)?, r.get(1)?];
        let [Some(origin), Some(_), Some(case)] = names else {
            let ids: [i64; 3] = [r.get(11)?, r.get(12)?, r.get(13)?];
            push(problems, format!("event {}/{seq} names an origin, lane or case that is not held ({ids:?})", ids[0]));
            continue;
        };
        let hash: Vec<u8> = r.get(0)?;
        match store::event_row(r, 2) {
            Err(e) => push(problems, format!("event {origin}/{seq} cannot be decoded ({e})")),
            Ok(e) if e.case.as_str() != case => {
                push(problems, format!("the event stored as {origin}/{seq} under case {case} is of case {}", e.case))
            }
            Ok(e) if e.hash().0.as_slice() != hash.as_slice() => {
                push(problems, format!("event {origin}/{seq} does not match its stored hash"))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Equivocating twins, kept whole: each decodes, is the event its row
/// names and hashes to the hash stored beside it.
fn check_equivocations(conn: &Connection, problems: &mut Vec<String>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT origin, seq, hash, body FROM equivocations")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (origin, seq): (String, i64) = (r.get(0)?, r.get(1)?);
        let hash: Vec<u8> = r.get(2)?;
        let body: Vec<u8> = r.get(3)?;
        match Event::decode(&body) {
            Err(e) => push(problems, format!("event {origin}/{seq} cannot be decoded ({e})")),
            Ok(e) if e.id.origin.as_str() != origin || i64::try_from(e.id.seq) != Ok(seq) => {
                push(problems, format!("the event stored as {origin}/{seq} is {}", e.id))
            }
            Ok(e) if e.hash().0.as_slice() != hash.as_slice() => {
                push(problems, format!("event {origin}/{seq} does not match its stored hash"))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

fn check_case_rows(conn: &Connection, problems: &mut Vec<String>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT case_id, folded FROM cases")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let case: String = r.get(0)?;
        let folded: Vec<u8> = r.get(1)?;
        if crate::at_rest::unpack_case(&folded).is_err() {
            push(problems, format!("the derived row of case {case} cannot be decoded"));
        }
    }
    Ok(())
}

/// The damage recorded for the store in `dir`, if any.
pub fn recorded_damage(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(DAMAGED_FILE)).ok()
}

/// Records that the store in `dir` is damaged, so that every later write
/// is refused without checking again.
pub fn record_damage(dir: &Path, health: &Health) {
    let _ = std::fs::write(dir.join(DAMAGED_FILE), advice(dir, health));
}

/// The store has been repaired: writes may resume.
pub fn clear_damage(dir: &Path) -> Result<()> {
    match std::fs::remove_file(dir.join(DAMAGED_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", dir.join(DAMAGED_FILE).display()))
        }
        _ => Ok(()),
    }
}

fn program() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| ["county-hub", "township-node", "village-node"].contains(&n.as_str()))
        .unwrap_or_else(|| "village-node".into())
}

/// How to get a node with a damaged store working again.
pub fn recovery(dir: &Path) -> String {
    let p = program();
    let d = dir.display();
    format!(
        "keep {d} aside (it may hold work not yet synced), initialise a new directory from this node's \
         enrolment bundle (`{p} init --data NEW_DIR --enrollment BUNDLE`; if it is lost, the county issues \
         another with `county-hub enroll`) and run `{p} sync --data NEW_DIR` with the county hub and with \
         every other node this one syncs with (`--peer ADDR`): that pulls back everything they hold of this \
         node's cases. Work never synced from {d} is lost. (The county hub restores from its backup instead.)"
    )
}

/// What the refusal of a write to a damaged store says.
pub fn advice(dir: &Path, health: &Health) -> String {
    let problems = health.problems();
    let shown = problems.first().cloned().unwrap_or_default();
    let more = if problems.len() > 1 { format!(" (and {} more)", problems.len() - 1) } else { String::new() };
    let p = program();
    let d = dir.display();
    if health.repairable() {
        format!(
            "the derived case rows in {d} are damaged: {shown}{more}. Nothing was written. \
             Run `{p} verify --data {d} --repair`: it rebuilds them from the events."
        )
    } else if health.events.is_empty() {
        format!(
            "the store in {d} is damaged: {shown}{more}. Nothing was written. \
             First try `{p} verify --data {d} --repair`; if the store is still damaged after it, {}",
            recovery(dir)
        )
    } else {
        format!(
            "the store in {d} is damaged: {shown}{more}. Nothing was written, and its events cannot be \
             repaired here: {}",
            recovery(dir)
        )
    }
}

/// When the last whole check that passed ended (ms since the epoch).
pub const CHECKED_FILE: &str = "node.checked";
/// How often `sync` checks the whole store. Opening it checks it anyway
/// after an unclean end or a change made outside a session.
pub const SYNC_CHECK_EVERY_MS: u64 = 24 * 3600 * 1000;

/// [`ensure_sound`] unless a whole check passed within `every_ms` before
/// `now_ms` (and no damage is recorded). Returns whether it checked.
pub fn ensure_sound_every(conn: &Connection, dir: &Path, every_ms: u64, now_ms: u64) -> Result<bool> {
    let last = std::fs::read_to_string(dir.join(CHECKED_FILE)).ok().and_then(|t| t.trim().parse::<u64>().ok());
    let recent = last.is_some_and(|t| t <= now_ms && now_ms - t < every_ms);
    if recent && recorded_damage(dir).is_none() {
        return Ok(false);
    }
    ensure_sound(conn, dir)?;
    replace_file(dir, CHECKED_FILE, &format!("{now_ms}\n"));
    Ok(true)
}

/// Checks the store and, when damaged, records it and returns the refusal.
pub fn ensure_sound(conn: &Connection, dir: &Path) -> Result<()> {
    let health = check(conn);
    if health.is_ok() {
        return Ok(());
    }
    record_damage(dir, &health);
    Err(anyhow::anyhow!(advice(dir, &health)))
}

/// Compares every derived row (case rows, the personal-data index, the
/// revocation list) with what the events say, without trusting the stored
/// rows to decode. Returns the differences.
pub fn compare_derived(conn: &Connection) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut expected_lookups: BTreeSet<(String, String)> = BTreeSet::new();
    let ids: Vec<CaseId> = {
        let mut stmt =
            conn.prepare("SELECT DISTINCT case_id FROM events WHERE substr(case_id, 1, 1) != '*' ORDER BY case_id")?;
        let rows = stmt.query_map([], |r| Ok(CaseId(r.get(0)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut row_stmt =
        conn.prepare("SELECT item, state, home, handler, flagged, updated_wall, folded FROM cases WHERE case_id = ?1")?;
    for id in &ids {
        // Undecodable events are reported by `check`; their cases cannot be folded.
        let Ok(Some(st)) = store::fold_stored(conn, id) else { continue };
        for values in st.fields.values() {
            for v in values {
                if let proto::event::FieldValue::Protected(p) = v {
                    expected_lookups.insert((p.lookup.clone(), id.0.clone()));
                }
            }
        }
        type Row = (String, String, String, String, bool, u64, Vec<u8>);
        let row: Option<Row> = rusqlite::OptionalExtension::optional(row_stmt.query_row([&id.0], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
        }))?;
        let Some((item, state, home, handler, flagged, updated, folded)) = row else {
            push(&mut problems, format!("case {id} has no derived row"));
            continue;
        };
        let columns = (item.as_str(), state.as_str(), home.as_str(), handler.as_str(), flagged, updated)
            == (st.item(), st.state.name(), st.home.as_str(), st.handler.as_str(), st.flagged(), st.updated.wall_ms);
        // The hashes a row leaves out come from the events; a row naming an
        // event not held differs. The whole state is compared, not its
        // digest: the digest leaves out what a case means on no other
        // replica's terms (its clock, follow-ups, files, licences, 容缺),
        // which the desks still show from the row.
        let stored = crate::at_rest::unpack_case(&folded).map(|mut c| {
            let held = crate::store::hashes_read_back(conn, &mut c);
            held.ok().filter(|h| *h).map(|_| c)
        });
        match stored {
            Err(_) => push(&mut problems, format!("the derived row of case {id} cannot be decoded")),
            Ok(c) if c.as_ref() != Some(&st) || !columns => {
                push(&mut problems, format!("the derived row of case {id} differs from a fresh fold of its events"))
            }
            Ok(_) => {}
        }
    }
    let held: BTreeSet<String> = ids.iter().map(|c| c.0.clone()).collect();
    let mut stmt = conn.prepare("SELECT case_id FROM cases")?;
    for c in stmt.query_map([], |r| r.get::<_, String>(0))? {
        let c = c?;
        if !held.contains(&c) {
            push(&mut problems, format!("a derived row names case {c}, which has no events"));
        }
    }
    let mut stmt = conn.prepare("SELECT lookup, case_id FROM person_index")?;
    let stored: BTreeSet<(String, String)> =
        stmt.query_map([], |r| Ok((store::lookup_of(r.get(0)?), r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    // Entries of values replaced since are kept by design (a look-up finds
    // a case by any value it held); only missing entries and entries for
    // cases that do not exist are damage.
    let missing = expected_lookups.difference(&stored).count();
    if missing > 0 {
        push(&mut problems, format!("{missing} personal-data index entries are missing"));
    }
    let stray = stored.iter().filter(|(_, c)| !held.contains(c)).count();
    if stray > 0 {
        push(&mut problems, format!("{stray} personal-data index entries name cases that have no events"));
    }
    Ok(problems)
}

/// Every network event held (enrolments, revocations, vouchers), in
/// (origin, seq) order, which is each origin's own order.
fn network_events(conn: &Connection) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare(concat!(
        "SELECT ",
        store::event_columns!(),
        " FROM ",
        store::event_rows!(),
        " WHERE e.case_no IN (SELECT id FROM names WHERE name >= '*' AND name < '+') ORDER BY e.origin, e.seq"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Ok(e) = store::event_row(r, 0) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Rebuilds every index and derived table from the source of truth,
/// without reading (let alone decoding) the old derived rows: a table that
/// cannot even be emptied is dropped and created again. Returns the
/// number of cases folded.
pub fn repair(store: &mut store::Store) -> Result<usize> {
    let tx = store.write()?;
    tx.execute_batch("REINDEX").context("rebuilding the indexes failed")?;
    for table in ["cases", "person_index", "file_refs", "revoked", "node_keys", "vouchers", "publications"] {
        reset_table(&tx, table)?;
    }
    for e in network_events(&tx)? {
        store::note_network_event(&tx, &e)?;
    }
    let ids: Vec<CaseId> = {
        let mut stmt =
            tx.prepare("SELECT DISTINCT case_id FROM events WHERE substr(case_id, 1, 1) != '*' ORDER BY case_id")?;
        let rows = stmt.query_map([], |r| Ok(CaseId(r.get(0)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for id in &ids {
        // A case with an event that cannot be decoded stays without a row;
        // `check` reports the event.
        if let Err(e) = store::refold_case(&tx, id) {
            tracing::warn!("case {id} cannot be folded: {e:#}");
        }
    }
    tx.commit()?;
    Ok(ids.len())
}

fn reset_table(conn: &Connection, table: &str) -> Result<()> {
    if conn.execute(&format!("DELETE FROM {table}"), []).is_ok() {
        return Ok(());
    }
    let schema: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT sql FROM sqlite_master WHERE tbl_name = ?1 AND sql IS NOT NULL ORDER BY type = 'index'")?;
        let rows = stmt.query_map([table], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    conn.execute_batch(&format!("DROP TABLE {table}"))
        .with_context(|| format!("the {table} table can be neither emptied nor dropped"))?;
    for sql in schema {
        conn.execute_batch(&sql)?;
    }
    Ok(())
}

/// True when `e` comes from SQLite finding the file damaged.
pub fn is_corruption(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        ) || c.downcast_ref::<codec::DecodeError>().is_some()
            || matches!(c.downcast_ref::<crate::Error>(), Some(crate::Error::Corrupt(_)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store_with_rows(dir: &Path) {
        let store = Store::create(dir).unwrap();
        store.conn().execute_batch("INSERT INTO meta (key, value) VALUES ('k', '\"v\"')").unwrap();
    }

    /// A case row `v-1` whose folded state cannot be decoded.
    fn undecodable_case(conn: &Connection) {
        conn.execute(
            "INSERT INTO cases (case_id, item, state, home, handler, flagged, updated_wall, folded)
             VALUES ('v-1', 'V001', 'received', 'v', 'v', 0, 1, x'ff')",
            [],
        )
        .unwrap();
    }

    fn due(dir: &Path) -> bool {
        let (mut s, due) = Session::begin(dir).unwrap();
        s.checked().unwrap();
        due
    }

    #[test]
    fn a_cleanly_closed_store_is_trusted_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        store_with_rows(dir.path());
        assert!(matches!(read_state(dir.path()), Some(State::Clean(_))));
        assert!(!due(dir.path()), "closed cleanly and unchanged: no check");
        // Something writes the file behind the store's back.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut bytes = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        let n = bytes.len();
        bytes[n - 100] ^= 0xff;
        std::fs::write(dir.path().join(DB_FILE), bytes).unwrap();
        assert!(due(dir.path()));
    }

    /// A session that writes nothing leaves the state file as it found it
    /// (no replacing rename: same file, same words); its first commit
    /// writes `open` before it lands, so a crash after it leaves the store
    /// to be checked; the last one out records the store clean again.
    #[test]
    fn a_session_that_writes_nothing_leaves_the_state_file_alone() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        store_with_rows(dir.path());
        let state = || (std::fs::metadata(dir.path().join(STATE_FILE)).unwrap().ino(), read_state(dir.path()));
        let before = state();
        assert!(matches!(before.1, Some(State::Clean(_))));
        {
            let store = Store::open(dir.path()).unwrap();
            let n: i64 = store.conn().query_row("SELECT COUNT(*) FROM meta", [], |r| r.get(0)).unwrap();
            assert!(n > 0);
            assert_eq!(state(), before, "open, nothing written yet");
        }
        assert_eq!(state(), before, "closed without a write");
        let store = Store::open(dir.path()).unwrap();
        store.conn().execute_batch("INSERT INTO meta (key, value) VALUES ('k2', '\"w\"')").unwrap();
        assert_eq!(read_state(dir.path()), Some(State::Open), "a crash now would leave the store to be checked");
        // A second process joining now trusts the session it joins.
        let (mut joined, due_joined) = Session::begin(dir.path()).unwrap();
        assert!(!due_joined);
        joined.checked().unwrap();
        drop(joined);
        assert_eq!(read_state(dir.path()), Some(State::Open), "not the last one out");
        drop(store);
        let after = read_state(dir.path());
        assert!(matches!(after, Some(State::Clean(_))) && after != before.1, "{after:?}");
        assert!(!due(dir.path()));
    }

    /// A later opener trusts the session it joins while its first one in
    /// has not committed yet, though a large first transaction has spilled
    /// into the WAL (a hub's first group commit after a restart, with its
    /// sessions opening ledgers meanwhile: each would check the county's
    /// whole store).
    #[test]
    fn a_later_opener_trusts_a_session_whose_first_transaction_spilled() {
        let dir = tempfile::tempdir().unwrap();
        store_with_rows(dir.path());
        let first = Store::open(dir.path()).unwrap();
        first.conn().execute_batch("PRAGMA cache_size = 10; BEGIN").unwrap();
        for i in 0..2000 {
            first
                .conn()
                .execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                    rusqlite::params![format!("k{i}"), "x".repeat(500)],
                )
                .unwrap();
        }
        assert!(matches!(read_state(dir.path()), Some(State::Clean(_))), "nothing committed");
        assert!(!wal_is_empty(dir.path()), "the transaction spilled into the WAL");
        let (_joined, due) = Session::begin(dir.path()).unwrap();
        assert!(!due, "the first one in vouched for the store");
        first.conn().execute_batch("ROLLBACK").unwrap();
    }

    /// The first one in vouches for a clean store without writing, and is
    /// killed before it joins the session; the file is altered meanwhile:
    /// the opener that waited for it checks the file.
    #[test]
    fn an_opener_waiting_for_a_first_one_that_died_checks_a_file_altered_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        store_with_rows(dir.path());
        let (first, due_first) = Session::begin(dir.path()).unwrap();
        assert!(!due_first && first.first);
        let d = dir.path().to_path_buf();
        let waiting = std::thread::spawn(move || {
            let (s, due) = Session::begin(&d).unwrap();
            (s.first, due)
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut bytes = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        let n = bytes.len();
        bytes[n - 100] ^= 0xff;
        std::fs::write(dir.path().join(DB_FILE), bytes).unwrap();
        drop(first);
        assert_eq!(waiting.join().unwrap(), (false, true), "the altered file is checked");
    }

    /// A change made to the file outside any session while one that
    /// commits nothing holds the store (a desk left open): the last one out
    /// does not record the altered file as clean, so the next one in
    /// checks it and finds the damage.
    #[test]
    fn the_last_one_out_leaves_a_file_altered_outside_the_session_to_be_checked() {
        let dir = tempfile::tempdir().unwrap();
        store_with_rows(dir.path());
        let desk = Store::open(dir.path()).unwrap();
        let outside = Connection::open(dir.path().join(DB_FILE)).unwrap();
        undecodable_case(&outside);
        drop(outside);
        drop(Store::open(dir.path()).unwrap());
        drop(desk);
        assert!(Store::open(dir.path()).is_err(), "the damage is found");
        assert!(recorded_damage(dir.path()).is_some());
    }

    #[test]
    fn a_session_that_never_ended_is_checked_and_later_openers_wait_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        store_with_rows(dir.path());
        write_state(dir.path(), &State::Open);
        let (mut first, due_first) = Session::begin(dir.path()).unwrap();
        assert!(due_first, "a crashed session leaves `open` behind");
        first.checked().unwrap();
        let (mut second, due_second) = Session::begin(dir.path()).unwrap();
        assert!(!due_second, "the first one in has checked");
        second.checked().unwrap();
        drop(first);
        assert_eq!(read_state(dir.path()), Some(State::Open), "only the last one out records the store");
        drop(second);
        assert!(matches!(read_state(dir.path()), Some(State::Clean(_))));
        // A check that never finished is done again by whoever comes next.
        write_state(dir.path(), &State::Checking);
        let (_held, due) = Session::begin(dir.path()).unwrap();
        assert!(due);
    }

    /// `sync` checks the whole store once a day: not again within the
    /// day, again after it or when the clock went back, and always while
    /// damage found earlier is recorded.
    #[test]
    fn a_sync_checks_the_whole_store_once_a_day() {
        let dir = tempfile::tempdir().unwrap();
        store_with_rows(dir.path());
        let store = Store::open(dir.path()).unwrap();
        let (day, t) = (SYNC_CHECK_EVERY_MS, 1_800_000_000_000);
        assert!(ensure_sound_every(store.conn(), dir.path(), day, t).unwrap(), "never checked");
        assert!(!ensure_sound_every(store.conn(), dir.path(), day, t + 3_600_000).unwrap(), "an hour later");
        assert!(ensure_sound_every(store.conn(), dir.path(), day, t + day).unwrap(), "a day later");
        assert!(ensure_sound_every(store.conn(), dir.path(), day, t - 3_600_000).unwrap(), "the clock went back");
        undecodable_case(store.conn());
        let now = t + 2 * day;
        assert!(ensure_sound_every(store.conn(), dir.path(), day, now).is_err(), "due: the damage is found");
        // Passed a moment before the damage was recorded (by a write that
        // found it): refused all the same.
        std::fs::write(dir.path().join(CHECKED_FILE), format!("{now}\n")).unwrap();
        assert!(recorded_damage(dir.path()).is_some());
        assert!(ensure_sound_every(store.conn(), dir.path(), day, now + 1).is_err(), "skipped while damaged");
    }

    #[test]
    fn damage_found_is_recorded_and_refuses_writes_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        store_with_rows(dir.path());
        {
            let store = Store::open(dir.path()).unwrap();
            undecodable_case(store.conn());
            let err = ensure_sound(store.conn(), dir.path()).unwrap_err().to_string();
            assert!(err.contains("verify --data") && err.contains("--repair"), "{err}");
        }
        let err = Store::open(dir.path()).err().expect("refused").to_string();
        assert!(err.contains("v-1 cannot be decoded"), "{err}");
        assert!(Store::open_read(dir.path()).is_ok(), "a damaged store can still be read");
        let mut store = Store::open_for_repair(dir.path()).unwrap();
        repair(&mut store).unwrap();
        assert!(check(store.conn()).is_ok());
        clear_damage(dir.path()).unwrap();
        drop(store);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn events_that_do_not_match_their_hash_are_damage() {
        let dir = tempfile::tempdir().unwrap();
        store_with_rows(dir.path());
        let store = Store::open(dir.path()).unwrap();
        store
            .conn()
            .execute_batch(
                "INSERT INTO names (name) VALUES ('v'), ('v-1');
                 INSERT INTO event_rows VALUES ((SELECT id FROM names WHERE name = 'v'), 1,
                    (SELECT id FROM names WHERE name = 'v'), 1, x'00', (SELECT id FROM names WHERE name = 'v-1'), 1, 0, x'0102')",
            )
            .unwrap();
        let h = check(store.conn());
        assert!(!h.repairable() && h.events[0].contains("v/1 cannot be decoded"), "{h:?}");
        let advice = advice(dir.path(), &h);
        assert!(advice.contains("init --data NEW_DIR") && advice.contains("sync --data NEW_DIR"), "{advice}");
    }

    /// A row altered on disk shows whichever part was changed: its
    /// content (the stored hash no longer matches), its stored hash (the
    /// next event's `prev` is read from it, so that event no longer matches
    /// either), or the case it is filed under (the content at rest takes
    /// its case from the row, and the hash covers it).
    #[test]
    fn an_altered_event_row_is_damage() {
        let chain = crate::store::tests::test_chain("v", 3);
        for (alter, expected) in [
            (
                "UPDATE event_rows SET content = (SELECT content FROM event_rows WHERE seq = 3) WHERE seq = 2",
                vec!["v/2"],
            ),
            ("UPDATE event_rows SET hash = zeroblob(32) WHERE seq = 1", vec!["v/1", "v/2"]),
            (
                "INSERT INTO names (name) VALUES ('v-9');
                 UPDATE event_rows SET case_no = (SELECT id FROM names WHERE name = 'v-9') WHERE seq = 3",
                // The row's case is the content's at rest: the hash covers it.
                vec!["v/3 does not match its stored hash"],
            ),
            // The origin's name renamed: every header changes.
            ("UPDATE names SET name = 'w' WHERE name = 'v'", vec!["w/1", "w/2", "w/3"]),
            ("DELETE FROM names WHERE name = 'v-1'", vec!["not held", "not held", "not held"]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::create(dir.path()).unwrap();
            for e in &chain {
                store::insert_event(store.conn(), e).unwrap();
            }
            assert!(check(store.conn()).is_ok(), "an intact chain");
            store.conn().execute_batch(alter).unwrap();
            let h = check(store.conn());
            assert_eq!(h.events.len(), expected.len(), "{alter}: {h:?}");
            for (problem, names) in h.events.iter().zip(&expected) {
                assert!(problem.contains(names), "{alter}: {h:?}");
            }
        }
    }

    #[test]
    fn the_read_only_open_reads_a_store_under_any_path() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a dir #1 ?x=%20&y");
        store_with_rows(&dir);
        let store = Store::open_read_only(&dir).unwrap();
        let v: String = store.conn().query_row("SELECT value FROM meta WHERE key = 'k'", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "\"v\"");
        assert!(store.is_read_only());
        assert!(store.conn().execute("DELETE FROM meta", []).is_err(), "read-only");
        drop(store);
        assert!(!dir.join("node.db-wal").exists() && !dir.join("node.db-shm").exists(), "nothing created beside it");
    }
}
