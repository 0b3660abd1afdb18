//! Wording: how typed case data reads to people and scripts. The fold keeps
//! history and conflicts as data (`proto::fold::Happened`, `Conflict`); the
//! command line (and, next, the desks) turn them into words here, in one
//! place, so a relabel changes no digest and no stored row.

use proto::fold::{Conflict, Happened, HistoryEntry};
use serde_json::{json, Value};

/// The detail of a history line: the note, the field set, the material,
/// the rating. Personal data stays masked.
pub fn history_detail(h: &HistoryEntry) -> String {
    match &h.happened {
        Happened::Created { item } => item.clone(),
        Happened::FieldSet { field, value } => format!("{field} = {}", value.display()),
        Happened::MaterialAdded { name } | Happened::MaterialRemoved { name } => name.clone(),
        Happened::Step { step: proto::Step::Forward { to }, note } => format!("→ {to} {note}").trim_end().to_string(),
        Happened::Step { note, .. } => note.clone(),
        Happened::Rated { level, note } => format!("level {level} {note}").trim_end().to_string(),
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
