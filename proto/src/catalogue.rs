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

/// The whole catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    pub version: u32,
    /// Free text saying where the catalogue comes from.
    #[serde(default)]
    pub note: String,
    pub items: Vec<Item>,
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
        Ok(())
    }

    /// How many items each tier may take.
    pub fn count_accepted_at(&self, tier: Tier) -> usize {
        self.items.iter().filter(|i| i.accepted_at.contains(&tier)).count()
    }
}
