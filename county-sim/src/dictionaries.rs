//! Trains the zstd dictionaries a store packs its rows with
//! (`node::at_rest::Dictionary`) from the rows of a node's store: the case
//! rows' encodings (without the hashes a row leaves out) and the events'
//! content at rest. A trained dictionary is frozen once a release stores
//! rows with it: a new one is a new format version, never a replacement.

use anyhow::{ensure, Context, Result};
use std::path::Path;

/// What a training run produced.
#[derive(Debug, serde::Serialize)]
pub struct Trained {
    pub cases: usize,
    pub events: usize,
    pub case_dictionary_bytes: usize,
    pub event_dictionary_bytes: usize,
}

/// Reads the store in `data` (read-only) and writes `case-1.zdict` and
/// `event-1.zdict` to `out`.
pub fn train(data: &Path, out: &Path, case_size: usize, event_size: usize) -> Result<Trained> {
    let path = data.join(node::store::DB_FILE);
    let conn = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut cases = Vec::new();
    let mut stmt = conn.prepare("SELECT folded FROM cases")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let st = node::at_rest::unpack_case(r.get_ref(0)?.as_blob()?)?;
        cases.push(node::at_rest::case_raw(&st));
    }
    let mut events = Vec::new();
    let mut stmt = conn.prepare("SELECT content FROM event_rows")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        events.push(node::at_rest::event_content(r.get_ref(0)?.as_blob()?)?.into_owned());
    }
    ensure!(
        cases.len() >= 100 && events.len() >= 1000,
        "too few rows to train on: {} cases, {} events",
        cases.len(),
        events.len()
    );
    let case_dictionary = zstd::dict::from_samples(&cases, case_size).context("training the case dictionary")?;
    let event_dictionary = zstd::dict::from_samples(&events, event_size).context("training the event dictionary")?;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("case-1.zdict"), &case_dictionary)?;
    std::fs::write(out.join("event-1.zdict"), &event_dictionary)?;
    Ok(Trained {
        cases: cases.len(),
        events: events.len(),
        case_dictionary_bytes: case_dictionary.len(),
        event_dictionary_bytes: event_dictionary.len(),
    })
}
