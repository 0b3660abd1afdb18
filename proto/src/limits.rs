//! Input limits: how long and of what characters the text staff type may
//! be, and how large a case may grow. Pure data and checks, no I/O.
//!
//! The local write path refuses input beyond them before anything is
//! written ([`crate::author::Draft::check`]), and every receiver applies the
//! same checks while authorising ([`crate::auth::authorize`]), so an
//! oversized event from a forged client is quarantined instead of
//! travelling to every node in scope.

use crate::event::{Body, FieldValue};
use crate::fold::CaseState;

/// A person's name: the applicant, the staff member at the desk, the operator.
pub const NAME_MAX: usize = 64;
/// A field name.
pub const FIELD_NAME_MAX: usize = 32;
/// A field value (other than the applicant's name and personal numbers).
pub const FIELD_VALUE_MAX: usize = 1000;
/// A phone number.
pub const PHONE_MAX: usize = 20;
/// An ID number (身份证号), in characters.
pub const ID_NUMBER_CHARS: usize = 18;
/// A note on a step or rating, or the reason of a revocation.
pub const NOTE_MAX: usize = 2000;
/// A material's name.
pub const MATERIAL_NAME_MAX: usize = 100;
/// Materials on one case.
pub const MATERIALS_MAX: usize = 50;
/// Distinct fields on one case.
pub const FIELDS_MAX: usize = 200;
/// Cases one `case generate` run may take.
pub const GENERATE_MAX: u64 = 10_000;
/// The keyed hash of a protected value (hex).
pub const LOOKUP_MAX: usize = 128;
/// The sealed bytes of a protected value: the clear text (at most four
/// bytes per character) plus nonce and tag.
pub const SEALED_MAX: usize = 4 * FIELD_VALUE_MAX + 64;

/// Field names the case view shows itself; a field of that name would print
/// beside the real one and could pass for it.
pub const RESERVED_FIELDS: &[&str] = &[
    "case",
    "case_id",
    "item",
    "item_name",
    "catalogue_version",
    "decided_by",
    "state",
    "home",
    "handler",
    "material",
    "materials",
    "rating",
    "ratings",
    "history",
    "conflicts",
    "flagged",
    "digest",
    "version_vector",
];

/// Input beyond a limit, or of a shape that is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Longer than allowed.
    #[error("{what} has {got} characters; at most {max} are allowed")]
    TooLong { what: String, got: usize, max: usize },
    /// Empty where something is needed.
    #[error("{what} may not be empty")]
    Empty { what: String },
    /// A control character, terminal escape or invisible formatting character.
    #[error("{what} holds a control or invisible formatting character ({found}); type it again without")]
    Control { what: String, found: String },
    /// A case would hold more than allowed.
    #[error("a case holds at most {max} {what} ({got} would be too many)")]
    TooMany { what: &'static str, got: usize, max: usize },
    /// A field name of other characters than allowed.
    #[error("field name {0:?} must be lower-case letters, digits and '_' (e.g. applicant, phone, address)")]
    FieldName(String),
    /// A field name that the case view uses itself.
    #[error("field name {0:?} is reserved (the case view shows it itself); choose another name")]
    ReservedField(String),
    /// A protected value that cannot have been made by a node.
    #[error("the protected value of field {0} is malformed")]
    Protected(String),
    /// A file over the limit per file.
    #[error("the file is {} bytes, over the limit of {} MB per file", size, max / 1_048_576)]
    FileTooLarge { size: u64, max: u64 },
    /// A case's files would be over the limit per case.
    #[error("the case's files would total {} bytes, over the limit of {} MB per case", size, max / 1_048_576)]
    CaseFilesTooLarge { size: u64, max: u64 },
}

/// True for characters never accepted in text and escaped when printed:
/// control characters (which include terminal escapes), and invisible
/// formatting characters that reorder or hide text (bidirectional
/// overrides, zero-width characters, line and paragraph separators).
pub fn is_odd(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Checks a text's length (in characters) and characters.
pub fn check_text(what: &str, text: &str, max: usize) -> Result<(), LimitError> {
    let got = text.chars().count();
    if got > max {
        return Err(LimitError::TooLong { what: what.to_string(), got, max });
    }
    if let Some(c) = text.chars().find(|&c| is_odd(c)) {
        return Err(LimitError::Control { what: what.to_string(), found: format!("U+{:04X}", c as u32) });
    }
    Ok(())
}

/// Checks a person's name: not blank, at most [`NAME_MAX`] characters.
pub fn check_name(what: &str, name: &str) -> Result<(), LimitError> {
    if name.trim().is_empty() {
        return Err(LimitError::Empty { what: what.to_string() });
    }
    check_text(what, name, NAME_MAX)
}

/// Checks the staff name recorded on an event.
pub fn check_actor(actor: &str) -> Result<(), LimitError> {
    check_name("the staff name (--as)", actor)
}

/// Checks a field name: lower-case ASCII letters, digits and '_', at most
/// [`FIELD_NAME_MAX`] characters, not reserved.
pub fn check_field_name(name: &str) -> Result<(), LimitError> {
    if name.is_empty() {
        return Err(LimitError::Empty { what: "a field name".into() });
    }
    let got = name.chars().count();
    if got > FIELD_NAME_MAX {
        return Err(LimitError::TooLong { what: "a field name".into(), got, max: FIELD_NAME_MAX });
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(LimitError::FieldName(name.to_string()));
    }
    if RESERVED_FIELDS.contains(&name) {
        return Err(LimitError::ReservedField(name.to_string()));
    }
    Ok(())
}

/// The longest value (in characters) a field may hold.
pub fn value_limit(field: &str) -> usize {
    match field {
        "applicant" => NAME_MAX,
        "id_number" => ID_NUMBER_CHARS,
        "phone" => PHONE_MAX,
        _ => FIELD_VALUE_MAX,
    }
}

fn value_label(field: &str) -> String {
    match field {
        "applicant" => "the applicant's name".into(),
        _ => format!("the value of field {field}"),
    }
}

/// Checks a field's value as typed (before personal data is protected).
pub fn check_value_text(field: &str, value: &str) -> Result<(), LimitError> {
    check_text(&value_label(field), value, value_limit(field))
}

/// Checks a field's value as stored and sent: text, or the masked text,
/// look-up hash and sealed bytes of a protected value.
pub fn check_field_value(field: &str, value: &FieldValue) -> Result<(), LimitError> {
    match value {
        FieldValue::Text(t) => check_value_text(field, t),
        FieldValue::Protected(p) => {
            check_value_text(field, &p.masked)?;
            if p.lookup.len() > LOOKUP_MAX
                || !p.lookup.bytes().all(|b| b.is_ascii_hexdigit())
                || p.sealed.len() > SEALED_MAX
            {
                return Err(LimitError::Protected(field.to_string()));
            }
            Ok(())
        }
    }
}

/// Checks a material's name.
pub fn check_material(name: &str) -> Result<(), LimitError> {
    if name.trim().is_empty() {
        return Err(LimitError::Empty { what: "a material name".into() });
    }
    check_text("a material name", name, MATERIAL_NAME_MAX)
}

/// Checks a note (steps, ratings) or a revocation's reason.
pub fn check_note(note: &str) -> Result<(), LimitError> {
    check_text("a note", note, NOTE_MAX)
}

/// Most chains one revocation may vouch for (a node's chains: one per lane
/// it wrote in, per incarnation).
pub const REVOKED_CHAINS_MAX: usize = 10_000;

/// Checks everything typed into one event's body. Every receiver runs this
/// (through [`crate::auth::authorize`]), so it depends only on the body.
pub fn check_body(body: &Body) -> Result<(), LimitError> {
    match body {
        Body::Create(c) => {
            if c.fields.len() > FIELDS_MAX {
                return Err(LimitError::TooMany { what: "fields", got: c.fields.len(), max: FIELDS_MAX });
            }
            if c.materials.len() > MATERIALS_MAX {
                return Err(LimitError::TooMany { what: "materials", got: c.materials.len(), max: MATERIALS_MAX });
            }
            for (field, value) in &c.fields {
                check_field_name(field)?;
                check_field_value(field, value)?;
            }
            c.materials.iter().try_for_each(|m| check_material(m))
        }
        Body::SetField { field, value } => {
            check_field_name(field)?;
            check_field_value(field, value)
        }
        Body::AddMaterial { name } | Body::RemoveMaterial { name } => check_material(name),
        Body::Step { note, .. } | Body::Rate { note, .. } => check_note(note),
        Body::Rating { channel, note, .. } => {
            check_text("channel", channel, NAME_MAX)?;
            check_note(note)
        }
        Body::FollowUp { response, callback, .. } => {
            check_note(response)?;
            check_note(callback)
        }
        Body::Revoke { reason, upto, .. } => {
            if upto.len() > REVOKED_CHAINS_MAX {
                return Err(LimitError::TooMany {
                    what: "chains in a revocation",
                    got: upto.len(),
                    max: REVOKED_CHAINS_MAX,
                });
            }
            check_note(reason)
        }
        Body::Enrol { .. } | Body::Incarnate { .. } => Ok(()),
        // Only the county may publish (checked beside this); a catalogue
        // is bounded like everything that decodes (32 MiB a frame).
        Body::Publish(_) => Ok(()),
        Body::AttachFile { material, file, .. } => {
            check_material(material)?;
            check_text("a file name", &file.name, crate::files::NAME_MAX)?;
            if file.size > crate::files::FILE_LIMIT_DEFAULT {
                return Err(LimitError::FileTooLarge { size: file.size, max: crate::files::FILE_LIMIT_DEFAULT });
            }
            Ok(())
        }
        Body::DetachFile { material, note, .. } => {
            check_material(material)?;
            check_note(note)
        }
        Body::CiteLicence { material, licence } => {
            check_material(material)?;
            let t = &licence.terms;
            for (what, text) in [
                ("an item", &t.item),
                ("an item name", &t.item_name),
                ("a holder", &t.holder),
                ("a holder's ID", &t.holder_id),
                ("a result", &t.result),
                ("a key", &licence.key),
                ("a signature", &licence.signature),
            ] {
                check_text(what, text, NOTE_MAX)?;
            }
            Ok(())
        }
    }
}

/// Checks that `body` does not take a case past [`FIELDS_MAX`] fields or
/// [`MATERIALS_MAX`] materials. A local check: concurrent additions at two
/// nodes may together pass a limit, which receivers accept.
pub fn check_growth(case: &CaseState, body: &Body) -> Result<(), LimitError> {
    match body {
        Body::SetField { field, .. } if !case.fields.contains_key(field) && case.fields.len() >= FIELDS_MAX => {
            Err(LimitError::TooMany { what: "fields", got: case.fields.len() + 1, max: FIELDS_MAX })
        }
        Body::AddMaterial { name }
        | Body::AttachFile { material: name, .. }
        | Body::CiteLicence { material: name, .. }
            if !case.materials.contains(name) && case.materials.len() >= MATERIALS_MAX =>
        {
            Err(LimitError::TooMany { what: "materials", got: case.materials.len() + 1, max: MATERIALS_MAX })
        }
        Body::AttachFile { file, .. } => {
            // Each distinct file counts once, whether current or replaced:
            // every file ever attached stays with the case.
            let mut seen = std::collections::BTreeSet::new();
            let held: u64 = case.files.iter().filter(|f| seen.insert(f.file.hash)).map(|f| f.file.size).sum();
            let added = if seen.contains(&file.hash) { 0 } else { file.size };
            if held + added > crate::files::CASE_LIMIT_DEFAULT {
                return Err(LimitError::CaseFilesTooLarge {
                    size: held + added,
                    max: crate::files::CASE_LIMIT_DEFAULT,
                });
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl From<LimitError> for crate::auth::AuthError {
    fn from(e: LimitError) -> Self {
        crate::auth::AuthError::BadValue(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Create;
    use crate::personal::{PersonalKind, Protected};
    use crate::Tier;

    fn create(fields: Vec<(String, FieldValue)>, materials: Vec<String>) -> Body {
        Body::Create(Create {
            item: "V001".into(),
            item_name: "x".into(),
            catalogue_version: 1,
            accepted_at: vec![Tier::Village],
            decided_by: Tier::Township,
            promised_days: 5,
            fields,
            materials,
        })
    }

    fn text(s: &str) -> FieldValue {
        FieldValue::Text(s.into())
    }

    #[test]
    fn names_up_to_the_limit_pass_and_beyond_it_are_refused() {
        assert_eq!(check_name("n", &"张".repeat(NAME_MAX)), Ok(()));
        assert_eq!(
            check_name("the applicant's name", &"张".repeat(NAME_MAX + 1)),
            Err(LimitError::TooLong { what: "the applicant's name".into(), got: 65, max: 64 })
        );
        assert!(matches!(check_name("n", "  "), Err(LimitError::Empty { .. })));
        assert!(check_actor(&"a".repeat(NAME_MAX + 1)).unwrap_err().to_string().contains("at most 64"));
    }

    #[test]
    fn control_and_invisible_characters_are_refused() {
        for bad in
            ["a\u{1b}[31mred", "line\nbreak", "tab\there", "del\u{7f}", "csi\u{9b}", "bidi\u{202E}txt", "zw\u{200B}"]
        {
            assert!(matches!(check_text("t", bad, 100), Err(LimitError::Control { .. })), "{bad:?}");
            assert!(bad.chars().any(is_odd));
        }
        assert_eq!(check_text("t", "张三 O'Brien-Smith（代办）", 100), Ok(()));
        assert!(check_text("t", "\u{1b}", 10).unwrap_err().to_string().contains("U+001B"));
    }

    #[test]
    fn field_names_are_short_plain_and_not_reserved() {
        assert_eq!(check_field_name("address"), Ok(()));
        assert_eq!(check_field_name(&"a".repeat(FIELD_NAME_MAX)), Ok(()));
        assert!(matches!(check_field_name(&"a".repeat(100_000)), Err(LimitError::TooLong { got: 100_000, .. })));
        assert!(matches!(check_field_name("Bad Name"), Err(LimitError::FieldName(_))));
        assert!(matches!(check_field_name(""), Err(LimitError::Empty { .. })));
        for r in ["state", "home", "handler"] {
            assert_eq!(check_field_name(r), Err(LimitError::ReservedField(r.into())));
        }
    }

    #[test]
    fn values_are_bounded_per_field() {
        assert_eq!(check_field_value("note", &text(&"x".repeat(FIELD_VALUE_MAX))), Ok(()));
        assert!(check_field_value("note", &text(&"x".repeat(FIELD_VALUE_MAX + 1))).is_err());
        assert!(check_field_value("applicant", &text(&"x".repeat(131_071))).is_err());
        assert!(check_field_value("phone", &text(&"1".repeat(PHONE_MAX + 1))).is_err());
        let protected = |masked: &str, lookup: &str, sealed: usize| {
            FieldValue::Protected(Protected {
                kind: PersonalKind::Address,
                masked: masked.into(),
                lookup: lookup.into(),
                sealed: vec![0; sealed],
            })
        };
        assert_eq!(check_field_value("address", &protected("文林镇**", "ab01", 40)), Ok(()));
        assert!(check_field_value("address", &protected("文\u{1b}", "ab01", 40)).is_err());
        assert!(check_field_value("address", &protected("x", "not hex", 40)).is_err());
        assert!(check_field_value("address", &protected("x", "ab", SEALED_MAX + 1)).is_err());
    }

    #[test]
    fn bodies_are_checked_whole() {
        let ok = create(vec![("applicant".into(), text("张三"))], vec!["居民身份证".into()]);
        assert_eq!(check_body(&ok), Ok(()));
        let many = create(vec![], (0..=MATERIALS_MAX).map(|i| format!("m{i}")).collect());
        assert!(matches!(check_body(&many), Err(LimitError::TooMany { what: "materials", .. })));
        let fields = (0..=FIELDS_MAX).map(|i| (format!("f{i}"), text("v"))).collect();
        assert!(matches!(check_body(&create(fields, vec![])), Err(LimitError::TooMany { what: "fields", .. })));
        let long = create(vec![("applicant".into(), text(&"x".repeat(NAME_MAX + 1)))], vec![]);
        assert!(check_body(&long).is_err());
        let reserved = create(vec![("state".into(), text("办结"))], vec![]);
        assert!(check_body(&reserved).is_err());
        let material = create(vec![], vec!["m".repeat(MATERIAL_NAME_MAX + 1)]);
        assert!(check_body(&material).is_err());
        assert!(check_body(&Body::AddMaterial { name: String::new() }).is_err());
        assert!(check_body(&Body::RemoveMaterial { name: "\u{1b}]0;x\u{7}".into() }).is_err());
        assert!(check_body(&Body::SetField { field: "handler".into(), value: text("x") }).is_err());
        assert!(check_body(&Body::Step { step: crate::Step::Accept, note: "n".repeat(NOTE_MAX + 1) }).is_err());
        assert_eq!(check_body(&Body::Step { step: crate::Step::Accept, note: "n".repeat(NOTE_MAX) }), Ok(()));
        assert!(check_body(&Body::Rate { level: 1, note: "\u{1b}[2J".into() }).is_err());
        let revoke = Body::Revoke {
            node: crate::NodeId::new("v"),
            reason: "r".repeat(NOTE_MAX + 1),
            key: crate::event::KeyId::default(),
            certificate: crate::Hash::ZERO,
            upto: vec![],
        };
        assert!(check_body(&revoke).is_err());
    }

    #[test]
    fn a_case_may_not_grow_past_its_limits() {
        let mut st = empty_case();
        st.materials = (0..MATERIALS_MAX).map(|i| format!("m{i}")).collect();
        let add = |n: &str| Body::AddMaterial { name: n.into() };
        assert!(matches!(check_growth(&st, &add("new")), Err(LimitError::TooMany { what: "materials", .. })));
        assert_eq!(check_growth(&st, &add("m3")), Ok(()), "adding one already held adds nothing");
        st.fields = (0..FIELDS_MAX).map(|i| (format!("f{i}"), vec![text("v")])).collect();
        let set = |f: &str| Body::SetField { field: f.into(), value: text("v") };
        assert!(matches!(check_growth(&st, &set("other")), Err(LimitError::TooMany { what: "fields", .. })));
        assert_eq!(check_growth(&st, &set("f1")), Ok(()));
    }

    fn empty_case() -> CaseState {
        CaseState {
            files: Vec::new(),
            licences: Vec::new(),
            case_id: crate::CaseId("v-1".into()),
            home: crate::NodeId::new("v"),
            handler: crate::NodeId::new("v"),
            state: crate::workflow::State::Received,
            create: None,
            fields: Default::default(),
            materials: vec![],
            ratings: vec![],
            history: vec![],
            conflicts: vec![],
            clock: Default::default(),
            created: None,
            accepted: None,
            updated: crate::Hlc::default(),
            tolerated: None,
            staged: vec![],
            followups: vec![],
        }
    }
}
