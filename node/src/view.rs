//! Wording: how typed case data reads to people and scripts. The fold keeps
//! history and conflicts as data (`proto::fold::Happened`, `Conflict`); the
//! command line (and, next, the desks) turn them into words here, in one
//! place, so a relabel changes no digest and no stored row.

use proto::event::FieldValue;
use proto::fold::{CaseState, Conflict, Happened, HistoryEntry};
use proto::{CaseId, NodeId, Tier};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A case as a list shows it (`case list --json`, the desks' lists).
/// Personal data masked.
#[derive(Debug, Clone, Serialize)]
pub struct CaseSummary {
    pub case_id: CaseId,
    pub item: String,
    pub item_name: String,
    pub state: &'static str,
    pub home: NodeId,
    pub handler: NodeId,
    pub applicant: String,
    pub flagged: bool,
    pub updated_ms: u64,
}

/// One line of a case's history, in words.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryLine {
    pub event: String,
    pub hlc: String,
    pub actor: String,
    pub kind: &'static str,
    pub detail: String,
    pub from: Option<&'static str>,
    pub to: Option<&'static str>,
    pub superseded: bool,
}

/// A rating, as shown.
#[derive(Debug, Clone, Serialize)]
pub struct RatingLine {
    pub event: String,
    pub level: u8,
    pub note: String,
}

/// A case in full (`case show --json`, the desks' case page). Personal
/// data masked.
#[derive(Debug, Clone, Serialize)]
pub struct CaseDetail {
    pub case_id: CaseId,
    pub item: String,
    pub item_name: String,
    pub catalogue_version: Option<u32>,
    pub decided_by: Option<Tier>,
    pub state: &'static str,
    pub home: NodeId,
    pub handler: NodeId,
    pub fields: BTreeMap<String, Vec<String>>,
    pub materials: Vec<String>,
    /// 容缺: materials accepted as missing and still not received.
    pub missing_materials: Vec<String>,
    /// 容缺: the day the applicant promised them by.
    pub missing_promised: Option<String>,
    pub ratings: Vec<RatingLine>,
    pub flagged: bool,
    pub conflicts: Vec<Value>,
    pub history: Vec<HistoryLine>,
    /// Material files, every one ever attached (`current` false once
    /// replaced or taken off).
    pub files: Vec<FileLine>,
    pub version_vector: BTreeMap<NodeId, u64>,
    pub digest: String,
}

/// One of a case's material files (`case files --json`, the case page).
#[derive(Debug, Clone, Serialize)]
pub struct FileLine {
    pub material: String,
    pub hash: String,
    pub size: u64,
    pub media_type: &'static str,
    pub name: String,
    pub pages: Option<u32>,
    /// Who attached it, where (the event's origin) and when.
    pub actor: String,
    pub event: String,
    pub attached: String,
    pub current: bool,
    /// The file that replaced it (补正).
    pub replaced_by: Option<String>,
    /// Taken off the material (by this event).
    pub removed_by: Option<String>,
}

impl From<&proto::fold::CaseFile> for FileLine {
    fn from(f: &proto::fold::CaseFile) -> FileLine {
        FileLine {
            material: f.material.clone(),
            hash: f.file.hash.to_hex(),
            size: f.file.size,
            media_type: f.file.media_type.mime(),
            name: f.file.name.clone(),
            pages: f.file.pages,
            actor: f.actor.clone(),
            event: f.event.to_string(),
            attached: f.at.to_string(),
            current: f.is_current(),
            replaced_by: f.replaced_by.map(|h| h.to_hex()),
            removed_by: f.removed.as_ref().map(|e| e.to_string()),
        }
    }
}

fn shown(values: &[FieldValue]) -> Vec<String> {
    values.iter().map(|v| v.display().to_string()).collect()
}

impl From<&CaseState> for CaseSummary {
    fn from(c: &CaseState) -> CaseSummary {
        CaseSummary {
            case_id: c.case_id.clone(),
            item: c.item().to_string(),
            item_name: c.create.as_ref().map(|c| c.item_name.clone()).unwrap_or_default(),
            state: c.state.name(),
            home: c.home.clone(),
            handler: c.handler.clone(),
            applicant: c
                .fields
                .get("applicant")
                .map(|v| shown(v))
                .and_then(|v| v.into_iter().next())
                .unwrap_or_default(),
            flagged: c.flagged(),
            updated_ms: c.updated.wall_ms,
        }
    }
}

impl From<&HistoryEntry> for HistoryLine {
    fn from(h: &HistoryEntry) -> HistoryLine {
        HistoryLine {
            event: h.event.to_string(),
            hlc: h.hlc.to_string(),
            actor: h.actor.clone(),
            kind: h.kind(),
            detail: history_detail(h),
            from: h.from.map(|s| s.name()),
            to: h.to.map(|s| s.name()),
            superseded: h.superseded,
        }
    }
}

impl From<&CaseState> for CaseDetail {
    fn from(c: &CaseState) -> CaseDetail {
        CaseDetail {
            case_id: c.case_id.clone(),
            item: c.item().to_string(),
            item_name: c.create.as_ref().map(|c| c.item_name.clone()).unwrap_or_default(),
            catalogue_version: c.create.as_ref().map(|c| c.catalogue_version),
            decided_by: c.decided_by(),
            state: c.state.name(),
            home: c.home.clone(),
            handler: c.handler.clone(),
            fields: c.fields.iter().map(|(k, v)| (k.clone(), shown(v))).collect(),
            materials: c.materials.clone(),
            missing_materials: c.outstanding(),
            missing_promised: c.tolerated.as_ref().map(|t| t.promised.to_string()),
            ratings: c
                .ratings
                .iter()
                .map(|r| RatingLine { event: r.event.to_string(), level: r.level, note: r.note.clone() })
                .collect(),
            flagged: c.flagged(),
            conflicts: c.conflicts.iter().map(conflict_json).collect(),
            history: c.history.iter().map(HistoryLine::from).collect(),
            files: c.files.iter().map(FileLine::from).collect(),
            version_vector: c.clock.clone(),
            digest: c.digest().to_hex(),
        }
    }
}

/// A case's time against its limit, as JSON keys (`case show --json`,
/// `case list --json`): all null before acceptance.
pub fn timing_json(t: Option<&proto::calendar::Timing>) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("due".into(), json!(t.and_then(|t| t.due).map(|d| d.to_string())));
    m.insert("limit_days".into(), json!(t.map(|t| t.limit_days)));
    m.insert("working_days_used".into(), json!(t.map(|t| t.used)));
    m.insert("working_days_left".into(), json!(t.map(|t| t.left)));
    m.insert(
        "warning".into(),
        json!(t.and_then(|t| match t.warning {
            proto::calendar::Warning::None => None,
            proto::calendar::Warning::Yellow => Some("yellow"),
            proto::calendar::Warning::Red => Some("red"),
        })),
    );
    m.insert("clock_stopped".into(), json!(t.map(|t| t.stopped)));
    m.insert("on_time".into(), json!(t.and_then(|t| t.on_time)));
    m.insert("due_provisional".into(), json!(t.map(|t| t.provisional)));
    m
}

/// Adds [`timing_json`] keys to a case's JSON object, and whether a 容缺
/// case is due to be ended (`termination_due`) on `today`.
pub fn with_timing(
    mut v: Value,
    c: &CaseState,
    t: Option<&proto::calendar::Timing>,
    today: proto::calendar::Day,
) -> Value {
    if let Value::Object(o) = &mut v {
        o.extend(timing_json(t));
        o.insert("termination_due".into(), json!(c.termination_due(today)));
    }
    v
}

/// The list-row JSON of a case.
pub fn case_summary(c: &CaseState) -> Value {
    serde_json::to_value(CaseSummary::from(c)).expect("a view serialises")
}

/// The `case show --json` form: personal data masked.
pub fn case_json(c: &CaseState) -> Value {
    serde_json::to_value(CaseDetail::from(c)).expect("a view serialises")
}

/// The detail of a history line: the note, the field set, the material,
/// the rating. Personal data stays masked.
pub fn history_detail(h: &HistoryEntry) -> String {
    match &h.happened {
        Happened::Created { item } => item.clone(),
        Happened::FieldSet { field, value } => format!("{field} = {}", value.display()),
        Happened::MaterialAdded { name } | Happened::MaterialRemoved { name } => name.clone(),
        Happened::Step { step: proto::Step::Forward { to }, note } => format!("→ {to} {note}").trim_end().to_string(),
        Happened::Step { note, .. } => note.clone(),
        Happened::Rated { level, note, stage, channel } => {
            let stage = stage.map(|s| format!(" ({})", s.name())).unwrap_or_default();
            let channel = if channel.is_empty() { String::new() } else { format!(" via {channel}") };
            format!("level {level}{stage}{channel} {note}").trim_end().to_string()
        }
        Happened::FollowedUp { rating, response, callback } => {
            format!("follow-up of {rating}: {response} / {callback}").trim_end_matches([' ', '/']).to_string()
        }
        Happened::FileAttached { material, name, hash, replaces } => {
            let replaces = replaces.map(|r| format!(", replaces {}", &r.to_hex()[..12])).unwrap_or_default();
            format!("{material}: {name} ({}{replaces})", &hash.to_hex()[..12])
        }
        Happened::FileDetached { material, hash, note } => {
            format!("{material}: {} {note}", &hash.to_hex()[..12]).trim_end().to_string()
        }
        Happened::LicenceCited { material, case, issuer } => format!("{material}: licence of {case} by {issuer}"),
        Happened::Global => String::new(),
    }
}

/// A conflict as JSON for scripts: its stable kind and its data.
pub fn conflict_json(c: &Conflict) -> Value {
    match c {
        Conflict::ConcurrentValues { field, values } => {
            json!({"kind": c.kind(), "field": field, "values": values})
        }
        Conflict::SupersededTransition { event, step, state } => {
            json!({"kind": c.kind(), "event": event.to_string(), "step": step.name(), "state": state.name()})
        }
        Conflict::Equivocation { event } | Conflict::StrayCreate { event } | Conflict::ClockSkew { event } => {
            json!({"kind": c.kind(), "event": event.to_string()})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wording is derived from data: a forward names where the case went.
    #[test]
    fn a_forward_reads_as_where_the_case_went() {
        let h = HistoryEntry {
            event: proto::EventId { origin: proto::NodeId::new("v"), seq: 2 },
            hash: proto::Hash::ZERO,
            hlc: proto::Hlc::default(),
            actor: "a".into(),
            happened: Happened::Step { step: proto::Step::Forward { to: proto::NodeId::new("t") }, note: "急".into() },
            from: None,
            to: None,
            superseded: false,
        };
        assert_eq!(history_detail(&h), "→ t 急");
        assert_eq!(h.kind(), "forward");
    }
}

/// A 一件事 bundle: its cases and its state, derived (`done` when every
/// case is decided or ended).
#[derive(Debug, Clone, Serialize)]
pub struct BundleView {
    pub bundle_id: String,
    pub code: String,
    pub name: String,
    /// `open` or `done`.
    pub state: &'static str,
    pub cases: Vec<CaseSummary>,
}

/// The bundle `id` as held here, if any of its cases is.
pub fn bundle(ledger: &crate::Ledger, id: &str) -> anyhow::Result<Option<BundleView>> {
    let cases = crate::query::bundle_cases(ledger.store().conn(), id)?;
    if cases.is_empty() {
        return Ok(None);
    }
    let code = id.rsplit_once('-').map(|(c, _)| c).unwrap_or(id).to_string();
    let name = ledger.catalogue().bundle(&code).map(|b| b.name.clone()).unwrap_or_default();
    let done = cases.iter().all(|c| c.state.is_done());
    Ok(Some(BundleView {
        bundle_id: id.to_string(),
        code,
        name,
        state: if done { "done" } else { "open" },
        cases: cases.iter().map(CaseSummary::from).collect(),
    }))
}
