//! The county's catalogue of service items (事项目录), published by the
//! county and versioned. A case records the version it was taken under.

use crate::ids::Tier;
use serde::{Deserialize, Serialize};

/// One required or optional material of an item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Material {
    pub name: String,
    /// Must be present for the case to be decided.
    pub required: bool,
    /// 容缺: may be missing at acceptance and supplied later.
    #[serde(default)]
    pub may_be_missing: bool,
}

/// One service item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Implementation code (实施编码).
    pub code: String,
    pub name: String,
    /// 事项类型 code from GB/T 39046: 01 许可 … 20 公共服务.
    pub item_type: String,
    /// Tiers whose windows may take (收件) and pre-review the item.
    pub accepted_at: Vec<Tier>,
    /// Tier that accepts (受理) and decides the item; `village` for 村直审.
    pub decided_by: Tier,
    /// 办件类型: 1 即办件, 2 承诺件.
    pub case_kind: u8,
    pub materials: Vec<Material>,
    /// 法定办结时限, working days.
    pub legal_limit_days: u32,
    /// 承诺办结时限, working days.
    pub promised_limit_days: u32,
    /// 办理结果 name.
    #[serde(default)]
    pub result: String,
}

/// 一件事一次办: items an applicant files once, at one window, with one
/// set of materials; each becomes its own case, decided in parallel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub code: String,
    pub name: String,
    /// Item codes.
    pub items: Vec<String>,
}

/// The whole catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    pub version: u32,
    /// Free text saying where the catalogue comes from.
    #[serde(default)]
    pub note: String,
    pub items: Vec<Item>,
    #[serde(default)]
    pub bundles: Vec<Bundle>,
}

/// A catalogue file does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    /// Two items share a code.
    #[error("item code {0} appears more than once")]
    DuplicateCode(String),
    /// An item names no tier that may accept it.
    #[error("item {0} has an empty accepted_at list")]
    NoAcceptingTier(String),
    /// An item is decided at a tier below one that takes it.
    #[error("item {0} is decided at {1}, below a tier that accepts it; cases only move up")]
    DecidedBelowAcceptance(String, Tier),
    /// A bundle names an item the catalogue does not hold, or none.
    #[error("bundle {0} names item {1}, which is not in the catalogue")]
    BundleItem(String, String),
    /// No tier's windows take every item of a bundle.
    #[error("bundle {0} has no tier whose windows take all its items")]
    BundleNowhere(String),
}

impl Catalogue {
    pub fn item(&self, code: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.code == code)
    }

    /// Checks the invariants the workflow relies on.
    pub fn validate(&self) -> Result<(), CatalogueError> {
        let mut codes = std::collections::HashSet::new();
        for item in &self.items {
            if !codes.insert(item.code.as_str()) {
                return Err(CatalogueError::DuplicateCode(item.code.clone()));
            }
            if item.accepted_at.is_empty() {
                return Err(CatalogueError::NoAcceptingTier(item.code.clone()));
            }
            if item.accepted_at.iter().any(|t| *t > item.decided_by) {
                return Err(CatalogueError::DecidedBelowAcceptance(item.code.clone(), item.decided_by));
            }
        }
        for b in &self.bundles {
            if let Some(code) = b.items.iter().find(|c| self.item(c).is_none()) {
                return Err(CatalogueError::BundleItem(b.code.clone(), code.clone()));
            }
            if b.items.is_empty() || self.bundle_tiers(b).is_empty() {
                return Err(CatalogueError::BundleNowhere(b.code.clone()));
            }
        }
        Ok(())
    }

    pub fn bundle(&self, code: &str) -> Option<&Bundle> {
        self.bundles.iter().find(|b| b.code == code)
    }

    /// The tiers whose windows take every item of a bundle.
    pub fn bundle_tiers(&self, bundle: &Bundle) -> Vec<Tier> {
        [Tier::Village, Tier::Township, Tier::County]
            .into_iter()
            .filter(|t| bundle.items.iter().all(|c| self.item(c).is_some_and(|i| i.accepted_at.contains(t))))
            .collect()
    }

    /// How many items each tier may take.
    pub fn count_accepted_at(&self, tier: Tier) -> usize {
        self.items.iter().filter(|i| i.accepted_at.contains(&tier)).count()
    }
}

/// How long after a catalogue version withdraws an item (cancels it, or
/// changes who takes or decides it) a case may still be taken under the
/// version before: two weeks, longer than a village room is offline.
pub const STALE_GRACE_MS: u64 = 14 * 24 * 3600 * 1000;

/// The catalogue versions a node holds: the only source of authority over
/// who takes, accepts and decides an item. A creation names the version it
/// was taken under; a receiver judges it against that version, never
/// against what the creation itself claims.
///
/// A node below the county may hold a tier's slice of a version (the items
/// windows at or below its tier take). Its scope only holds cases homed in
/// its subtree, whose windows are at or below its tier, so an item missing
/// from its slice was never published for the window that took the case.
#[derive(Clone, Debug, Default)]
pub struct Catalogues {
    versions: std::collections::BTreeMap<u32, (Catalogue, std::collections::HashMap<String, usize>)>,
    publisher: bool,
    /// Items cancelled, with the version that cancelled them.
    cancelled: std::collections::BTreeMap<String, u32>,
    /// Calendar versions the county published after the node's first.
    calendars: std::collections::BTreeMap<u32, crate::calendar::CalendarFile>,
    /// The version of the calendar the node started with.
    first_calendar: u32,
    /// When each catalogue version after the first was published (ms).
    published_at: std::collections::BTreeMap<u32, u64>,
}

/// How a creation stands against the catalogues a node holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueCheck {
    /// The version is not held here yet: hold the creation until it is.
    #[error("catalogue v{0} is not held here yet; the case waits until it arrives")]
    VersionNotHeld(u32),
    /// The county never published this version.
    #[error("catalogue v{0} was never published by the county")]
    VersionUnpublished(u32),
    /// The version holds no such item for windows in this node's scope.
    #[error("item {item} is not in catalogue v{version} as the county published it")]
    ItemUnpublished { item: String, version: u32 },
    /// The creation says something about the item that its version does not.
    #[error("item {item} is not taken, decided and timed as catalogue v{version} says ({what} differs)")]
    Contradicts { item: String, version: u32, what: &'static str },
}

impl Catalogues {
    /// An empty set. `publisher` is true at the county, which holds every
    /// version it ever published: a version it lacks was never published.
    pub fn new(publisher: bool) -> Catalogues {
        Catalogues {
            versions: Default::default(),
            publisher,
            cancelled: Default::default(),
            calendars: Default::default(),
            first_calendar: 1,
            published_at: Default::default(),
        }
    }

    /// A set holding one version.
    pub fn single(catalogue: Catalogue, publisher: bool) -> Catalogues {
        let mut c = Catalogues::new(publisher);
        c.insert(catalogue);
        c
    }

    /// Adds (or replaces) a version.
    pub fn insert(&mut self, catalogue: Catalogue) {
        let index = catalogue.items.iter().enumerate().map(|(i, item)| (item.code.clone(), i)).collect();
        self.versions.insert(catalogue.version, (catalogue, index));
    }

    /// A version, if held.
    pub fn get(&self, version: u32) -> Option<&Catalogue> {
        self.versions.get(&version).map(|(c, _)| c)
    }

    /// Every version held, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = &Catalogue> {
        self.versions.values().map(|(c, _)| c)
    }

    /// The newest version held: what new cases are taken under.
    pub fn latest(&self) -> Option<&Catalogue> {
        self.versions.values().next_back().map(|(c, _)| c)
    }

    /// The newest catalogue version held (0: none).
    pub fn latest_version(&self) -> u32 {
        self.versions.keys().next_back().copied().unwrap_or(0)
    }

    /// The version that cancelled `code`, when the newest held no longer
    /// lists it.
    pub fn cancelled_in(&self, code: &str) -> Option<u32> {
        self.cancelled.get(code).copied()
    }

    /// Whether a creation of `item` under `version`, stamped `at_ms`, comes
    /// too late: a later version held cancelled the item or changed who
    /// takes or decides it, and was published more than [`STALE_GRACE_MS`]
    /// before. Returns that version. (A window offline for days takes cases
    /// under the version it holds; one that names an old version weeks
    /// after the county withdrew the item is not offline, it is refused.)
    pub fn stale_creation(&self, item: &str, version: u32, at_ms: u64) -> Option<u32> {
        let (old, _) = self.versions.get(&version)?;
        let before = old.item(item)?;
        self.versions.range(version + 1..).find_map(|(v, (c, _))| {
            let published = *self.published_at.get(v)?;
            let withdrawn = match c.item(item) {
                None => true,
                Some(now) => now.decided_by != before.decided_by || now.accepted_at != before.accepted_at,
            };
            (withdrawn && at_ms > published.saturating_add(STALE_GRACE_MS)).then_some(*v)
        })
    }

    /// Every item cancelled, with the version that cancelled it.
    pub fn cancelled(&self) -> impl Iterator<Item = (&String, u32)> {
        self.cancelled.iter().map(|(c, v)| (c, *v))
    }

    /// Sets the version of the calendar the node started with (from its
    /// enrolment bundle); published versions follow it.
    pub fn set_first_calendar(&mut self, version: u32) {
        self.first_calendar = version;
    }

    /// The newest calendar version the county published that this node
    /// holds, if any after its first.
    pub fn published_calendar(&self) -> Option<&crate::calendar::CalendarFile> {
        self.calendars.values().next_back()
    }

    /// The newest calendar version held.
    pub fn calendar_version(&self) -> u32 {
        self.calendars.keys().next_back().copied().unwrap_or(self.first_calendar)
    }

    /// Applies a publication of the county, in version order: the next
    /// version after the newest held, or it is refused and nothing changes.
    pub fn apply(
        &mut self,
        publication: &crate::publication::Publication,
    ) -> Result<(), crate::publication::PublicationError> {
        self.apply_at(publication, u64::MAX)
    }

    /// [`Catalogues::apply`] for a publication stamped `at_ms`.
    pub fn apply_at(
        &mut self,
        publication: &crate::publication::Publication,
        at_ms: u64,
    ) -> Result<(), crate::publication::PublicationError> {
        use crate::publication::{Publication, PublicationError};
        let (held, kind) = match publication {
            Publication::Catalogue(_) => (self.latest_version(), "catalogue"),
            Publication::Calendar(_) => (self.calendar_version(), "calendar"),
            // The topology's own (`Topology::apply`).
            Publication::Topology(_) => return Ok(()),
        };
        let got = publication.version();
        if got != held + 1 {
            return Err(PublicationError::OutOfOrder { kind, got, held });
        }
        match publication {
            Publication::Catalogue(change) => {
                let base = self.latest().ok_or(PublicationError::OutOfOrder { kind, got, held })?;
                let next = change.apply(base)?;
                if change.is_empty() {
                    return Err(PublicationError::Empty(got));
                }
                for code in &change.cancel {
                    self.cancelled.insert(code.clone(), got);
                }
                for item in &change.put {
                    self.cancelled.remove(&item.code);
                }
                self.insert(next);
                self.published_at.insert(got, at_ms);
            }
            Publication::Calendar(file) => {
                Publication::check_calendar(file)?;
                self.calendars.insert(got, file.clone());
            }
            Publication::Topology(_) => {}
        }
        Ok(())
    }

    /// The item `code` of `version`, judged: `Ok` only when the county
    /// published that version and it lists the item.
    pub fn item(&self, version: u32, code: &str) -> Result<&Item, CatalogueCheck> {
        let Some((catalogue, index)) = self.versions.get(&version) else {
            return Err(if self.publisher || version == 0 {
                CatalogueCheck::VersionUnpublished(version)
            } else {
                CatalogueCheck::VersionNotHeld(version)
            });
        };
        index
            .get(code)
            .map(|&i| &catalogue.items[i])
            .ok_or_else(|| CatalogueCheck::ItemUnpublished { item: code.to_string(), version })
    }

    /// Checks a creation against the version it names: the item must be
    /// published there and every claim the creation copies from it (who
    /// takes it, who decides it, the promised limit, the name) must agree.
    pub fn check_creation(&self, create: &crate::event::Create) -> Result<&Item, CatalogueCheck> {
        let item = self.item(create.catalogue_version, &create.item)?;
        let differs = |what| {
            Err(CatalogueCheck::Contradicts { item: create.item.clone(), version: create.catalogue_version, what })
        };
        if item.accepted_at != create.accepted_at {
            return differs("accepted_at");
        }
        if item.decided_by != create.decided_by {
            return differs("decided_by");
        }
        if item.promised_limit_days != create.promised_days {
            return differs("promised limit");
        }
        if item.name != create.item_name {
            return differs("item name");
        }
        Ok(item)
    }
}
