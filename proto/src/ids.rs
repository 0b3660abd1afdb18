//! Identifiers: nodes, tiers, events and cases.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's stable id. In the shipped topology it is the node's division
/// code: 6 digits for the county, 9 for a township, 12 for a village.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

/// Separates a node id from its incarnation tag in an event origin.
pub const INCARNATION_SEPARATOR: char = '~';

impl NodeId {
    pub fn new(id: impl Into<String>) -> Self {
        NodeId(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The node an event origin belongs to: the id without its incarnation
    /// tag. A node's first incarnation is its bare id.
    pub fn base(&self) -> &str {
        self.0.split_once(INCARNATION_SEPARATOR).map_or(self.0.as_str(), |(b, _)| b)
    }

    /// [`NodeId::base`] as a node id.
    pub fn node(&self) -> NodeId {
        NodeId::new(self.base())
    }

    /// True when this origin is an incarnation of `node`.
    pub fn is_incarnation_of(&self, node: &NodeId) -> bool {
        self.base() == node.base()
    }

    /// True for a node id, or a node id with a well-formed incarnation tag
    /// (`~` and 8 lower-case hex digits). Receivers refuse any other origin.
    pub fn is_well_formed_origin(&self) -> bool {
        match self.0.split_once(INCARNATION_SEPARATOR) {
            None => !self.0.is_empty(),
            Some((base, tag)) => {
                !base.is_empty()
                    && tag.len() == 8
                    && tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            }
        }
    }

    /// The origin of a new incarnation of this node, tagged `tag`. A
    /// restored or copied data directory that learns it is stale continues
    /// under a fresh incarnation, so it never mints an id another copy used.
    pub fn incarnation(&self, tag: u32) -> NodeId {
        NodeId(format!("{}{INCARNATION_SEPARATOR}{tag:08x}", self.base()))
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
    /// The node the case belongs to (the origin that minted it, without
    /// its incarnation), if the id is well formed.
    pub fn home(&self) -> Option<NodeId> {
        self.minted_by().map(|o| o.node())
    }
    /// The seq of the event that minted this case id, if well formed.
    pub fn minted_seq(&self) -> Option<u64> {
        self.0.rsplit_once('-')?.1.parse().ok()
    }
    /// The origin (node and incarnation) that minted this case id, if the
    /// id is well formed.
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
