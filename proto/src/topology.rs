//! The network's shape: every node, its tier and its parent, plus each
//! node's public signing key once the county has issued one.

use crate::ids::{NodeId, Tier};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One node of the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub tier: Tier,
    /// The township of a village, the county of a township; none for the county.
    pub parent: Option<NodeId>,
    pub name: String,
    /// Hex ed25519 public key that verifies this node's seals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifying_key: Option<String>,
}

/// A topology file does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// There must be exactly one county node.
    #[error("a topology has exactly one county node, found {0}")]
    CountyCount(usize),
    /// Two nodes share an id.
    #[error("node id {0} appears more than once")]
    DuplicateId(NodeId),
    /// A node's parent is missing or of the wrong tier.
    #[error("node {0}: its parent must be a {1} node that exists in the file")]
    BadParent(NodeId, Tier),
    /// A node id holds characters that cannot appear in a certificate name.
    #[error("node id {0:?} may hold only ASCII letters, digits and '_'")]
    BadId(NodeId),
}

/// The whole topology, indexed by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TopologyFile", into = "TopologyFile")]
pub struct Topology {
    note: String,
    nodes: Vec<NodeInfo>,
    index: HashMap<NodeId, usize>,
}

/// The serialised form of a [`Topology`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopologyFile {
    #[serde(default)]
    pub note: String,
    pub nodes: Vec<NodeInfo>,
}

impl TryFrom<TopologyFile> for Topology {
    type Error = TopologyError;
    fn try_from(f: TopologyFile) -> Result<Self, TopologyError> {
        Topology::new(f.note, f.nodes)
    }
}

impl From<Topology> for TopologyFile {
    fn from(t: Topology) -> TopologyFile {
        TopologyFile { note: t.note, nodes: t.nodes }
    }
}

impl Topology {
    pub fn new(note: String, nodes: Vec<NodeInfo>) -> Result<Topology, TopologyError> {
        let mut index = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if n.id.0.is_empty() || !n.id.0.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(TopologyError::BadId(n.id.clone()));
            }
            if index.insert(n.id.clone(), i).is_some() {
                return Err(TopologyError::DuplicateId(n.id.clone()));
            }
        }
        let counties = nodes.iter().filter(|n| n.tier == Tier::County).count();
        if counties != 1 {
            return Err(TopologyError::CountyCount(counties));
        }
        for n in &nodes {
            let want = match n.tier {
                Tier::County => None,
                Tier::Township => Some(Tier::County),
                Tier::Village => Some(Tier::Township),
            };
            let got = n.parent.as_ref().and_then(|p| index.get(p)).map(|&i| nodes[i].tier);
            if want != got || (want.is_none() && n.parent.is_some()) {
                return Err(TopologyError::BadParent(n.id.clone(), want.unwrap_or(Tier::County)));
            }
        }
        Ok(Topology { note, nodes, index })
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }
    /// A node by id; an event origin (a node's incarnation) finds its node.
    pub fn get(&self, id: &NodeId) -> Option<&NodeInfo> {
        match self.index.get(id) {
            Some(&i) => Some(&self.nodes[i]),
            None if id.base().len() != id.as_str().len() => self.get(&id.node()),
            None => None,
        }
    }
    pub fn get_mut(&mut self, id: &NodeId) -> Option<&mut NodeInfo> {
        self.index.get(id).map(|&i| &mut self.nodes[i])
    }
    pub fn county(&self) -> &NodeInfo {
        self.nodes.iter().find(|n| n.tier == Tier::County).expect("validated: one county")
    }
    pub fn tier_of(&self, id: &NodeId) -> Option<Tier> {
        self.get(id).map(|n| n.tier)
    }
    pub fn children<'a>(&'a self, id: &'a NodeId) -> impl Iterator<Item = &'a NodeInfo> + 'a {
        self.nodes.iter().filter(move |n| n.parent.as_ref() == Some(id))
    }

    /// The key that verifies `node`'s seals.
    pub fn verifying_key(&self, node: &NodeId) -> Option<ed25519_dalek::VerifyingKey> {
        let hex_key = self.get(node)?.verifying_key.as_deref()?;
        let bytes: [u8; 32] = hex::decode(hex_key).ok()?.try_into().ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
    }

    /// True when `node` is `root` or lies below it (incarnations count as
    /// their node).
    pub fn is_within(&self, node: &NodeId, root: &NodeId) -> bool {
        let mut cur = Some(node);
        while let Some(id) = cur {
            if id.base() == root.base() {
                return true;
            }
            cur = self.get(id).and_then(|n| n.parent.as_ref());
        }
        false
    }

    /// The node of `tier` that is `node` itself or its ancestor.
    pub fn ancestor_at(&self, node: &NodeId, tier: Tier) -> Option<&NodeInfo> {
        let mut cur = self.get(node);
        while let Some(n) = cur {
            if n.tier == tier {
                return Some(n);
            }
            cur = n.parent.as_ref().and_then(|p| self.get(p));
        }
        None
    }
}
