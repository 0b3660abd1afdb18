//! What the commands show: text made safe for a terminal, JSON with odd
//! characters escaped, and the text view of one case.

use anyhow::Result;
use proto::fold::CaseState;
use serde_json::Value;
use std::borrow::Cow;

/// Text as it may be shown on a terminal: control characters (terminal
/// escapes among them) and invisible formatting characters are shown as
/// `\u{..}` escapes. Input is refused with them (`proto::limits`); this is
/// for whatever arrives from elsewhere.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(proto::limits::is_odd) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| if proto::limits::is_odd(c) { c.escape_unicode().to_string() } else { c.to_string() })
            .collect(),
    )
}

/// A JSON value as one line, with every odd character (see [`clean`])
/// written as a `\uXXXX` escape, which JSON readers decode back.
pub fn json_line(v: &Value) -> String {
    escape_json(serde_json::to_string(v).expect("JSON values serialise"))
}

/// [`json_line`] laid out over several lines.
pub fn json_pretty(v: &Value) -> String {
    escape_json(serde_json::to_string_pretty(v).expect("JSON values serialise"))
}

fn escape_json(text: String) -> String {
    // serde_json has escaped everything below U+0020 inside strings; a
    // newline left is layout. The other odd characters are all in the BMP.
    let odd = |c: char| c != '\n' && proto::limits::is_odd(c);
    if !text.chars().any(odd) {
        return text;
    }
    text.chars().map(|c| if odd(c) { format!("\\u{:04x}", c as u32) } else { c.to_string() }).collect()
}

pub(super) fn print_json(v: &Value) -> Result<()> {
    say!("{}", json_line(v));
    Ok(())
}

pub(super) fn print_case(c: &CaseState) -> Result<()> {
    say!("case      {}", clean(c.case_id.as_str()));
    if let Some(cr) = &c.create {
        say!(
            "item      {} {} (catalogue v{}, decided by {})",
            clean(&cr.item),
            clean(&cr.item_name),
            cr.catalogue_version,
            cr.decided_by
        );
    }
    say!("state     {}", c.state);
    say!("home      {}   handler {}", clean(c.home.as_str()), clean(c.handler.as_str()));
    for (k, v) in &c.fields {
        let shown: Vec<_> = v.iter().map(|x| clean(x.display())).collect();
        let mark = if v.len() > 1 { "   <- concurrent values, resolve with case edit" } else { "" };
        // A name refused as input (reserved, like `state`, or odd) that
        // arrived from elsewhere is shown quoted, never as a line of the
        // case view itself.
        let name = match proto::limits::check_field_name(k) {
            Ok(()) => Cow::Borrowed(k.as_str()),
            Err(_) => Cow::Owned(format!("field \"{}\"", clean(k))),
        };
        say!("{name:<9} {}{mark}", shown.join(" | "));
    }
    let materials: Vec<_> = c.materials.iter().map(|m| clean(m)).collect();
    say!("materials {}", materials.join(", "));
    for r in &c.ratings {
        say!("rating    {} {}", r.level, clean(&r.note));
    }
    if !c.conflicts.is_empty() {
        say!("needs attention:");
        for conflict in &c.conflicts {
            say!("  {}", json_line(&crate::view::conflict_json(conflict)));
        }
    }
    say!("history:");
    for h in &c.history {
        let arrow = match (h.from, h.to) {
            (Some(f), Some(t)) => format!("{f} -> {t}"),
            _ => String::new(),
        };
        say!(
            "  {:<20} {:<14} {:<18} {:<30} {}{}",
            clean(&h.event.to_string()),
            clean(&h.actor),
            h.kind(),
            arrow,
            clean(&crate::view::history_detail(h)),
            if h.superseded { "  [superseded]" } else { "" }
        );
    }
    Ok(())
}
