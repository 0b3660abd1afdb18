//! What the county publishes for the whole network, through the global
//! lane: catalogue versions (as the change from the version before) and
//! calendar versions (whole: a year is a few dozen dates). Signed and
//! chained like every event, authored only by the county, and applied by
//! every node in version order: a version that skips or repeats a number
//! is refused wherever it arrives.

use crate::calendar::{Calendar, CalendarFile};
use crate::catalogue::{Bundle, Catalogue, CatalogueError, Item};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One publication of the county.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Publication {
    /// Catalogue version `change.version`, as the change from the one before.
    Catalogue(CatalogueChange),
    /// Calendar version `calendar.version`, whole.
    Calendar(CalendarFile),
    /// Topology version `change.version`: a node added, moved, merged or
    /// retired (applied by `Topology::apply`).
    Topology(crate::topology::TopologyChange),
}

/// A catalogue version as the change from the version before it: what a
/// node receives, rather than the whole 1,371-item catalogue each time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueChange {
    pub version: u32,
    /// Where the version comes from (the decision that made it).
    pub note: String,
    /// Items added or changed, whole.
    pub put: Vec<Item>,
    /// Codes of items cancelled: no longer taken from this version on.
    pub cancel: Vec<String>,
    /// The bundles (一件事), when they changed.
    pub bundles: Option<Vec<Bundle>>,
}

/// A publication that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicationError {
    /// Versions go 1, 2, 3… with none skipped or repeated.
    #[error(
        "{kind} v{got} does not follow v{held}, the newest held (versions go 1, 2, 3… with none skipped or repeated)"
    )]
    OutOfOrder { kind: &'static str, got: u32, held: u32 },
    /// The catalogue the change makes does not hold together.
    #[error("catalogue v{0} does not hold together: {1}")]
    Catalogue(u32, CatalogueError),
    /// A change names an item twice, or cancels one it does not hold.
    #[error("catalogue v{version}: {what}")]
    Change { version: u32, what: String },
    /// The calendar does not hold together.
    #[error("calendar v{0} does not hold together: {1}")]
    Calendar(u32, String),
    /// Nothing would change.
    #[error("catalogue v{0} would change nothing")]
    Empty(u32),
}

impl CatalogueChange {
    /// The change that turns `from` into `to` (published as `to.version`).
    pub fn between(from: &Catalogue, to: &Catalogue) -> CatalogueChange {
        let old: BTreeMap<&str, &Item> = from.items.iter().map(|i| (i.code.as_str(), i)).collect();
        let new: BTreeSet<&str> = to.items.iter().map(|i| i.code.as_str()).collect();
        CatalogueChange {
            version: to.version,
            note: to.note.clone(),
            put: to.items.iter().filter(|i| old.get(i.code.as_str()) != Some(i)).cloned().collect(),
            cancel: from.items.iter().filter(|i| !new.contains(i.code.as_str())).map(|i| i.code.clone()).collect(),
            bundles: (from.bundles != to.bundles).then(|| to.bundles.clone()),
        }
    }

    /// True when it changes no item and no bundle.
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.cancel.is_empty() && self.bundles.is_none()
    }

    /// The version this change makes of `base` (the version before it).
    /// A node below the county may hold a tier's slice of `base`: items
    /// put are added whole, cancelling one it never held changes nothing.
    pub fn apply(&self, base: &Catalogue) -> Result<Catalogue, PublicationError> {
        let bad = |what: String| PublicationError::Change { version: self.version, what };
        let mut seen = BTreeSet::new();
        for code in self.put.iter().map(|i| &i.code).chain(&self.cancel) {
            if !seen.insert(code.as_str()) {
                return Err(bad(format!("item {code} is named twice")));
            }
        }
        let cancel: BTreeSet<&str> = self.cancel.iter().map(String::as_str).collect();
        let mut put: BTreeMap<&str, &Item> = self.put.iter().map(|i| (i.code.as_str(), i)).collect();
        let mut items: Vec<Item> = Vec::with_capacity(base.items.len() + put.len());
        for item in &base.items {
            if cancel.contains(item.code.as_str()) {
                continue;
            }
            items.push(put.remove(item.code.as_str()).cloned().unwrap_or_else(|| item.clone()));
        }
        // New items keep the order of the change.
        items.extend(self.put.iter().filter(|i| put.contains_key(i.code.as_str())).cloned());
        let catalogue = Catalogue {
            version: self.version,
            note: self.note.clone(),
            items,
            bundles: self.bundles.clone().unwrap_or_else(|| base.bundles.clone()),
        };
        catalogue.validate().map_err(|e| PublicationError::Catalogue(self.version, e))?;
        Ok(catalogue)
    }
}

impl Publication {
    /// The version it publishes.
    pub fn version(&self) -> u32 {
        match self {
            Publication::Catalogue(c) => c.version,
            Publication::Calendar(c) => c.version,
            Publication::Topology(t) => t.version,
        }
    }

    /// `catalogue` or `calendar`.
    pub fn kind(&self) -> &'static str {
        match self {
            Publication::Catalogue(_) => "catalogue",
            Publication::Calendar(_) => "calendar",
            Publication::Topology(_) => "topology",
        }
    }

    /// Checks a calendar publication on its own (a catalogue change is
    /// checked by applying it).
    pub fn check_calendar(file: &CalendarFile) -> Result<Calendar, PublicationError> {
        Calendar::new(file).map_err(|e| PublicationError::Calendar(file.version, e.to_string()))
    }
}
