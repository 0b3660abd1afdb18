//! Case lists for the desks: filters, search and keyset paging over the
//! derived `cases` rows, fast on a county's 1.5 M cases (every filter has
//! an index, pages are found by position, never by offset).

use anyhow::Result;
use proto::fold::CaseState;
use proto::workflow::State;
use proto::{CaseId, NodeId};
use rusqlite::types::ToSql;
use rusqlite::Connection;

/// Where a page starts: the row after (updated, case id), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub updated_ms: u64,
    pub case_id: String,
}

impl Cursor {
    /// `<ms>.<case id>`, as it travels in a link.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.updated_ms, self.case_id)
    }
    pub fn decode(s: &str) -> Option<Cursor> {
        let (ms, id) = s.split_once('.')?;
        Some(Cursor { updated_ms: ms.parse().ok()?, case_id: id.to_string() })
    }
}

/// A filtered list of cases. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct CaseQuery {
    /// Cases homed at one of these nodes (a township's subtree, a village).
    pub homes: Option<Vec<NodeId>>,
    /// Cases held by this node now.
    pub handler: Option<NodeId>,
    /// 帮代办: cases filed by this agent.
    pub agent: Option<String>,
    pub item: Option<String>,
    /// Any of these states.
    pub states: Vec<State>,
    /// Only cases with a conflict for a person to look at.
    pub flagged: bool,
    /// Taken at or after (ms since the epoch).
    pub created_from: Option<u64>,
    /// Taken before.
    pub created_to: Option<u64>,
    /// A case id, or part of the applicant's name.
    pub text: Option<String>,
    /// Only these cases (found by an ID number's lookup hash, see
    /// [`crate::Ledger::find_by_id_number`]; the clear number is never
    /// stored or searched).
    pub ids: Option<Vec<CaseId>>,
    /// Only open cases whose due date falls before this day (overdue when
    /// it is today).
    pub due_before: Option<proto::calendar::Day>,
    /// Only open cases due on or before this day (and still running).
    pub due_by: Option<proto::calendar::Day>,
    /// Only open cases holding this card on the given day.
    pub card: Option<(proto::calendar::Warning, proto::calendar::Day)>,
    pub after: Option<Cursor>,
    /// Rows per page (at most 500).
    pub limit: usize,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    pub cases: Vec<CaseState>,
    /// Every case the filters match, counted up to [`COUNT_CAP`].
    pub total: u64,
    /// Where the next page starts, if there is one.
    pub next: Option<Cursor>,
}

/// Counting stops here: a filter matching more says "more than".
pub const COUNT_CAP: u64 = 100_000;

impl CaseQuery {
    fn where_clause(&self) -> (String, Vec<Box<dyn ToSql>>) {
        let mut clauses: Vec<String> = Vec::new();
        let mut args: Vec<Box<dyn ToSql>> = Vec::new();
        if let Some(homes) = &self.homes {
            let marks = vec!["?"; homes.len()].join(",");
            clauses.push(format!("home IN ({marks})"));
            args.extend(homes.iter().map(|h| Box::new(h.0.clone()) as Box<dyn ToSql>));
        }
        if let Some(h) = &self.handler {
            clauses.push("handler = ?".into());
            args.push(Box::new(h.0.clone()));
        }
        if let Some(agent) = &self.agent {
            clauses.push("agent = ?".into());
            args.push(Box::new(agent.clone()));
        }
        if let Some(item) = &self.item {
            clauses.push("item = ?".into());
            args.push(Box::new(item.clone()));
        }
        if !self.states.is_empty() {
            let marks = vec!["?"; self.states.len()].join(",");
            clauses.push(format!("state IN ({marks})"));
            args.extend(self.states.iter().map(|s| Box::new(s.name()) as Box<dyn ToSql>));
        }
        if self.flagged {
            clauses.push("flagged = 1".into());
        }
        if let Some(from) = self.created_from {
            clauses.push("created_wall >= ?".into());
            args.push(Box::new(from as i64));
        }
        if let Some(to) = self.created_to {
            clauses.push("created_wall < ?".into());
            args.push(Box::new(to as i64));
        }
        if let Some(text) = self.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            // A case id matches exactly; anything else is the start of the
            // applicant's name (a full name or a surname), found through
            // the `cases_applicant` index as a range, fast at 1.5 M cases.
            clauses.push("(case_id = ? OR (applicant >= ? AND applicant < ?))".into());
            args.push(Box::new(text.to_string()));
            args.push(Box::new(text.to_string()));
            args.push(Box::new(format!("{text}\u{10FFFF}")));
        }
        if let Some(d) = self.due_before {
            clauses.push("(finished_day IS NULL AND due_day IS NOT NULL AND due_day < ?)".into());
            args.push(Box::new(d.0));
        }
        if let Some(d) = self.due_by {
            clauses.push("(finished_day IS NULL AND due_day IS NOT NULL AND due_day <= ?)".into());
            args.push(Box::new(d.0));
        }
        match self.card {
            Some((proto::calendar::Warning::Red, today)) => {
                clauses.push("(finished_day IS NULL AND due_day IS NOT NULL AND due_day < ?)".into());
                args.push(Box::new(today.0));
            }
            Some((proto::calendar::Warning::Yellow, today)) => {
                clauses.push("(finished_day IS NULL AND due_day >= ? AND yellow_day <= ?)".into());
                args.push(Box::new(today.0));
                args.push(Box::new(today.0));
            }
            Some((proto::calendar::Warning::None, _)) | None => {}
        }
        if let Some(ids) = &self.ids {
            let marks = vec!["?"; ids.len()].join(",");
            clauses.push(if ids.is_empty() { "0".into() } else { format!("case_id IN ({marks})") });
            args.extend(ids.iter().map(|c| Box::new(c.0.clone()) as Box<dyn ToSql>));
        }
        let sql = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        (sql, args)
    }

    /// Runs the query: one page, newest change first, and the count.
    pub fn run(&self, conn: &Connection) -> Result<Page> {
        let limit = self.limit.clamp(1, 500);
        let (filter, mut args) = self.where_clause();
        let total: u64 = {
            let sql = format!("SELECT COUNT(*) FROM (SELECT 1 FROM cases {filter} LIMIT {COUNT_CAP})");
            let refs: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
            conn.prepare_cached(&sql)?.query_row(refs.as_slice(), |r| r.get(0))?
        };
        let mut page_filter = filter;
        if let Some(after) = &self.after {
            page_filter.push_str(if page_filter.is_empty() { "WHERE " } else { " AND " });
            // A row value, not `a < ? OR (a = ? AND b < ?)`: with bound
            // parameters SQLite seeks `cases_updated` to the cursor only for
            // the row value; for the OR form it walks the index from the
            // newest row (40 ms halfway down 1.5 M cases, more further on).
            page_filter.push_str("(updated_wall, case_id) < (?, ?)");
            args.push(Box::new(after.updated_ms as i64));
            args.push(Box::new(after.case_id.clone()));
        }
        let sql = format!(
            "SELECT folded FROM cases {page_filter} ORDER BY updated_wall DESC, case_id DESC LIMIT {}",
            limit + 1
        );
        let refs: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
        let mut cases = crate::store::cases_read(conn, &sql, refs.as_slice())?;
        let next = if cases.len() > limit {
            cases.truncate(limit);
            cases.last().map(|c| Cursor { updated_ms: c.updated.wall_ms, case_id: c.case_id.0.clone() })
        } else {
            None
        };
        Ok(Page { cases, total, next })
    }

    /// Every matching case, in pages, for exports: calls `each` per case.
    pub fn for_each(&self, conn: &Connection, mut each: impl FnMut(&CaseState) -> Result<()>) -> Result<()> {
        let mut q = self.clone();
        q.limit = 500;
        loop {
            let page = q.run(conn)?;
            for c in &page.cases {
                each(c)?;
            }
            match page.next {
                Some(next) => q.after = Some(next),
                None => return Ok(()),
            }
        }
    }
}

/// Cases per (home, state), for dashboards.
pub fn counts_by_home_and_state(conn: &Connection) -> Result<Vec<(NodeId, String, u64)>> {
    let mut stmt = conn.prepare("SELECT home, state, COUNT(*) FROM cases GROUP BY home, state")?;
    let rows = stmt.query_map([], |r| Ok((NodeId(r.get(0)?), r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Cases per rating level (1–5; 0 = not rated).
pub fn counts_by_rating(conn: &Connection) -> Result<Vec<(u8, u64)>> {
    let mut stmt = conn.prepare("SELECT rating, COUNT(*) FROM cases GROUP BY rating ORDER BY rating")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Events of `node`'s own origins (it and its incarnations) stamped at or
/// after `since_ms`: what it wrote since then.
pub fn own_events_since(conn: &Connection, node: &NodeId, since_ms: u64) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM event_rows WHERE origin IN (SELECT id FROM names WHERE name = ?1 OR (name > ?2 AND name < ?3))
           AND hlc_wall >= ?4",
        rusqlite::params![node.0, format!("{}~", node.0), format!("{}~\u{7f}", node.0), since_ms as i64],
        |r| r.get(0),
    )?)
}

/// Records a finished sync session with `node` (at most once a minute per
/// node, so a busy hub does not pay a disk write for every no-op session).
pub fn note_contact(conn: &Connection, node: &NodeId, now_ms: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO contacts (node, last_ms) VALUES (?1, ?2)
         ON CONFLICT(node) DO UPDATE SET last_ms = excluded.last_ms WHERE excluded.last_ms > last_ms + 60000",
    )?
    .execute(rusqlite::params![node.base(), now_ms as i64])?;
    Ok(())
}

/// When this node last finished a sync session with each node it talked to.
pub fn contacts(conn: &Connection) -> Result<std::collections::BTreeMap<NodeId, u64>> {
    let mut stmt = conn.prepare("SELECT node, last_ms FROM contacts")?;
    let rows = stmt.query_map([], |r| Ok((NodeId(r.get(0)?), r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The newest stamp (ms) of an event written by `node` (any incarnation)
/// that this node holds: when its latest work reached here, at the latest.
pub fn latest_work_of(conn: &Connection, node: &NodeId) -> Result<Option<u64>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row(
            "SELECT MAX(hlc_wall) FROM events WHERE origin = ?1 OR (origin > ?2 AND origin < ?3)",
            rusqlite::params![node.0, format!("{}~", node.0), format!("{}~\u{7f}", node.0)],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten()
        .map(|v| v as u64))
}

/// Open cases with a red or yellow card on `today`, per (home, card):
/// e-supervision's list by window.
pub fn cards_by_home(
    conn: &Connection,
    today: proto::calendar::Day,
) -> Result<Vec<(NodeId, proto::calendar::Warning, u64)>> {
    let mut stmt = conn.prepare(
        "SELECT home, CASE WHEN due_day < ?1 THEN 2 ELSE 1 END AS card, COUNT(*) FROM cases
         WHERE finished_day IS NULL AND due_day IS NOT NULL AND (due_day < ?1 OR yellow_day <= ?1)
         GROUP BY home, card",
    )?;
    let rows = stmt.query_map([today.0], |r| {
        let card: i64 = r.get(1)?;
        Ok((
            NodeId(r.get(0)?),
            if card == 2 { proto::calendar::Warning::Red } else { proto::calendar::Warning::Yellow },
            r.get(2)?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Cases finished in time and late (for the on-time rate).
pub fn on_time_counts(conn: &Connection) -> Result<(u64, u64)> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(on_time = 1), 0), COALESCE(SUM(on_time = 0), 0) FROM cases WHERE on_time IS NOT NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// Cases with an open follow-up of a poor rating.
pub fn with_open_followups(conn: &Connection) -> Result<Vec<CaseState>> {
    crate::store::cases_read(conn, "SELECT folded FROM cases WHERE open_followups > 0 ORDER BY updated_wall DESC", [])
}

/// The cases of one 一件事 bundle.
pub fn bundle_cases(conn: &Connection, bundle: &str) -> Result<Vec<CaseState>> {
    crate::store::cases_read(conn, "SELECT folded FROM cases WHERE bundle = ?1 ORDER BY case_id", [bundle])
}

/// What the statistics count for one group of cases (县对窗口的考核).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counts {
    pub received: u64,
    pub accepted: u64,
    /// Decided or ended.
    pub done: u64,
    pub on_time: u64,
    pub late: u64,
    /// On time over finished cases with a limit, in per cent.
    pub on_time_rate: Option<f64>,
    /// Average working days from acceptance to decision.
    pub avg_working_days: Option<f64>,
    /// 容缺受理 cases, and how many of them were ended (终止).
    pub tolerated: u64,
    pub tolerated_terminated: u64,
    pub rated: u64,
    /// Rated 1–3 (满意 and better) over all rated, in per cent.
    pub satisfaction_rate: Option<f64>,
    pub open_followups: u64,
    /// Open follow-ups past their 15 working days (they count against the
    /// node like overdue cases).
    pub overdue_followups: u64,
    #[serde(skip)]
    days_sum: u64,
    #[serde(skip)]
    satisfied: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.received += o.received;
        self.accepted += o.accepted;
        self.done += o.done;
        self.on_time += o.on_time;
        self.late += o.late;
        self.tolerated += o.tolerated;
        self.tolerated_terminated += o.tolerated_terminated;
        self.rated += o.rated;
        self.open_followups += o.open_followups;
        self.overdue_followups += o.overdue_followups;
        self.days_sum += o.days_sum;
        self.satisfied += o.satisfied;
    }

    fn finish(&mut self) {
        let pct = |a: u64, b: u64| (b > 0).then(|| (1000.0 * a as f64 / b as f64).round() / 10.0);
        self.on_time_rate = pct(self.on_time, self.on_time + self.late);
        self.avg_working_days = (self.on_time + self.late > 0)
            .then(|| (10.0 * self.days_sum as f64 / (self.on_time + self.late) as f64).round() / 10.0);
        self.satisfaction_rate = pct(self.satisfied, self.rated);
    }
}

/// Statistics of the cases taken in `[from, to)` (ms; all when `None`),
/// per (home, item): each row a home node, an item and its counts.
pub fn stats(
    conn: &Connection,
    from: Option<u64>,
    to: Option<u64>,
    today: proto::calendar::Day,
) -> Result<Vec<(NodeId, String, Counts)>> {
    let mut stmt = conn.prepare(
        "SELECT home, item, COUNT(*), COALESCE(SUM(accepted_wall > 0 OR finished_day IS NOT NULL), 0), COALESCE(SUM(finished_day IS NOT NULL), 0),
                COALESCE(SUM(on_time = 1), 0), COALESCE(SUM(on_time = 0), 0), COALESCE(SUM(days_used), 0), COALESCE(SUM(tolerated), 0),
                COALESCE(SUM(tolerated = 1 AND state = 'terminated'), 0), COALESCE(SUM(rating > 0), 0), COALESCE(SUM(rating BETWEEN 1 AND 3), 0),
                COALESCE(SUM(open_followups), 0), COALESCE(SUM(open_followups > 0 AND followup_due_day < ?3), 0)
         FROM cases WHERE created_wall >= ?1 AND created_wall < ?2 GROUP BY home, item",
    )?;
    let rows =
        stmt.query_map(rusqlite::params![from.unwrap_or(0) as i64, to.map_or(i64::MAX, |t| t as i64), today.0], |r| {
            Ok((
                NodeId(r.get(0)?),
                r.get::<_, String>(1)?,
                Counts {
                    received: r.get(2)?,
                    accepted: r.get(3)?,
                    done: r.get(4)?,
                    on_time: r.get(5)?,
                    late: r.get(6)?,
                    days_sum: r.get(7)?,
                    tolerated: r.get(8)?,
                    tolerated_terminated: r.get(9)?,
                    rated: r.get(10)?,
                    satisfied: r.get(11)?,
                    open_followups: r.get(12)?,
                    overdue_followups: r.get(13)?,
                    ..Default::default()
                },
            ))
        })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Adds up statistics rows by a key (a village, its township, an item, or
/// one total), each group's rates computed.
pub fn group_stats(
    rows: &[(NodeId, String, Counts)],
    key: impl Fn(&NodeId, &str) -> String,
) -> std::collections::BTreeMap<String, Counts> {
    let mut out: std::collections::BTreeMap<String, Counts> = Default::default();
    for (home, item, c) in rows {
        out.entry(key(home, item)).or_default().add(c);
    }
    out.values_mut().for_each(Counts::finish);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{put_case, Store};
    use proto::event::FieldValue;
    use proto::Hlc;

    const NAMES: [&str; 5] = ["张伟", "王小伟", "欧阳修", "张", "李娜"];

    fn case(n: u64, applicant: &str, updated_ms: u64) -> CaseState {
        let home = NodeId::new("511421101001");
        CaseState {
            files: Vec::new(),
            licences: Vec::new(),
            case_id: CaseId::mint(&home, n),
            home: home.clone(),
            handler: home,
            state: State::Received,
            create: None,
            fields: [("applicant".to_string(), vec![FieldValue::Text(applicant.to_string())])].into(),
            materials: Vec::new(),
            ratings: Vec::new(),
            history: Vec::new(),
            conflicts: Vec::new(),
            clock: Default::default(),
            created: Some(Hlc { wall_ms: updated_ms, logical: 0 }),
            accepted: None,
            updated: Hlc { wall_ms: updated_ms, logical: 0 },
            tolerated: None,
            staged: Vec::new(),
            followups: Vec::new(),
        }
    }

    fn ids(cases: &[CaseState]) -> Vec<String> {
        cases.iter().map(|c| c.case_id.0.clone()).collect()
    }

    /// 40 cases, three at a time sharing a stamp (ties go by case id).
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        for n in 1..=40 {
            put_case(store.conn(), &case(n, NAMES[n as usize % NAMES.len()], 1_000 + n / 3)).unwrap();
        }
        (dir, store)
    }

    #[test]
    fn pages_follow_each_other_newest_first_without_gaps_or_repeats() {
        let (_dir, store) = store();
        let all = CaseQuery { limit: 500, ..Default::default() }.run(store.conn()).unwrap();
        assert_eq!((all.cases.len(), all.total, all.next.is_none()), (40, 40, true));
        let key = |c: &CaseState| (c.updated.wall_ms, c.case_id.0.clone());
        assert!(all.cases.windows(2).all(|w| key(&w[0]) > key(&w[1])), "newest first, then by case id");
        let mut q = CaseQuery { limit: 7, ..Default::default() };
        let mut paged = Vec::new();
        loop {
            let page = q.run(store.conn()).unwrap();
            assert_eq!(page.total, 40);
            paged.extend(ids(&page.cases));
            match page.next {
                Some(next) => q.after = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, ids(&all.cases));
    }

    #[test]
    fn a_search_finds_a_case_id_or_the_start_of_a_name() {
        let (_dir, store) = store();
        let all = CaseQuery { limit: 500, ..Default::default() }.run(store.conn()).unwrap();
        for text in ["张", "伟", "张伟", "小伟", "王小伟", "欧阳", "阳修", "娜", "赵", "伟张"] {
            let q = CaseQuery { text: Some(text.into()), limit: 500, ..Default::default() };
            let found = q.run(store.conn()).unwrap();
            let expected: Vec<String> = all
                .cases
                .iter()
                .filter(|c| matches!(c.fields["applicant"].first(), Some(FieldValue::Text(t)) if t.starts_with(text)))
                .map(|c| c.case_id.0.clone())
                .collect();
            assert_eq!(ids(&found.cases), expected, "{text}");
            assert_eq!(found.total, expected.len() as u64, "{text}");
        }
        let id = all.cases[5].case_id.0.clone();
        let q = CaseQuery { text: Some(id.clone()), ..Default::default() };
        assert_eq!(ids(&q.run(store.conn()).unwrap().cases), [id]);
    }

    /// Statistics over cases none of which was accepted, rated or timed
    /// count zeros (SQLite sums nothing to NULL).
    #[test]
    fn statistics_of_untimed_cases_are_zeros_not_an_error() {
        let (_dir, store) = store();
        let rows = stats(store.conn(), None, None, proto::calendar::Day(20_000)).unwrap();
        let total = group_stats(&rows, |_, _| "all".into()).remove("all").unwrap();
        assert_eq!((total.received, total.on_time, total.rated, total.on_time_rate), (40, 0, 0, None));
    }
}
