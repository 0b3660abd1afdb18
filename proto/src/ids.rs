//! Identifiers: nodes, tiers, events and cases.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's stable id. In the shipped topology it is the node's division
/// code: 6 digits for the county, 9 for a township, 12 for a village.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> Self {
        NodeId(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three tiers of the service network, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Village,
    Township,
    County,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Village => "village",
            Tier::Township => "township",
            Tier::County => "county",
        }
    }
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "village" => Some(Tier::Village),
            "township" => Some(Tier::Township),
            "county" => Some(Tier::County),
            _ => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event's id: its origin node and the origin's sequence number
/// (1, 2, 3… with no gaps).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId {
    pub origin: NodeId,
    pub seq: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.origin, self.seq)
    }
}

/// A case id, minted at the origin without coordination:
/// `<origin node id>-<origin seq of the creating event>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CaseId(pub String);

impl CaseId {
    /// The case id minted by the event `(origin, seq)` that creates it.
    pub fn mint(origin: &NodeId, seq: u64) -> CaseId {
        CaseId(format!("{}-{}", origin, seq))
    }
    /// The node that minted this case id (its home), if the id is well formed.
    pub fn minted_by(&self) -> Option<NodeId> {
        let (origin, seq) = self.0.rsplit_once('-')?;
        if origin.is_empty() || seq.parse::<u64>().is_err() {
            return None;
        }
        Some(NodeId::new(origin))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
