//! The network's shape: every node, its tier and its parent, plus each
//! node's public signing key once the county has issued one.

use crate::ids::{NodeId, Tier};
use serde::{Deserialize, Serialize};

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
    /// Townships a village was moved away from (oldest first): they keep
    /// what they held of its lane, and may still hand it up to the county.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_parents: Vec<NodeId>,
    /// Retired by the county: it takes no new work and no villages; it may
    /// still sync with the county, to hand up what it holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
    /// When the county retired it (the stamp of its publication, ms):
    /// receivers refuse the node's events stamped after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<u64>,
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
    /// A node names as a former parent something that is not a township of
    /// the map (only villages move, and only between townships).
    #[error("node {0}: its former parent {1} must be a township node that exists in the file")]
    BadFormerParent(NodeId, NodeId),
    /// A node id holds characters that cannot appear in a certificate name.
    #[error("node id {0:?} may hold only ASCII letters, digits and '_'")]
    BadId(NodeId),
    /// A change names a node the topology does not hold.
    #[error("node {0} is not in the topology")]
    UnknownNode(NodeId),
    /// A change the county's map cannot take, with the reason.
    #[error("{0}")]
    Change(String),
    /// Versions go 1, 2, 3… with none skipped or repeated.
    #[error(
        "topology v{got} does not follow v{held}, the newest held (versions go 1, 2, 3… with none skipped or repeated)"
    )]
    OutOfOrder { got: u32, held: u32 },
}

/// A change of the county's map, published by the county (see
/// `crate::publication`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A new village (under a township) or township (under the county).
    AddNode { id: NodeId, tier: Tier, parent: NodeId, name: String },
    /// A village moves to another township.
    Move { node: NodeId, to: NodeId },
    /// Every village of township `from` moves to township `into`; `from`
    /// is retired.
    Merge { from: NodeId, into: NodeId },
    /// A node is retired (a township only once it has no villages).
    Retire { node: NodeId },
}

/// Topology version `version`, as one change from the version before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyChange {
    pub version: u32,
    pub change: Change,
}

/// The whole topology, indexed by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TopologyFile", into = "TopologyFile")]
pub struct Topology {
    note: String,
    /// 1 for the topology a county starts with; each change the county
    /// publishes makes the next.
    version: u32,
    nodes: Vec<NodeInfo>,
    /// Looked up for every lane of every session: a fast hash of the short
    /// node ids rather than the default keyed one (ids come from the
    /// county's signed map, not from peers).
    index: rustc_hash::FxHashMap<NodeId, usize>,
}

/// The serialised form of a [`Topology`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopologyFile {
    #[serde(default)]
    pub note: String,
    #[serde(default = "first_version")]
    pub version: u32,
    pub nodes: Vec<NodeInfo>,
}

fn first_version() -> u32 {
    1
}

impl TryFrom<TopologyFile> for Topology {
    type Error = TopologyError;
    fn try_from(f: TopologyFile) -> Result<Self, TopologyError> {
        let mut t = Topology::new(f.note, f.nodes)?;
        t.version = f.version;
        Ok(t)
    }
}

impl From<Topology> for TopologyFile {
    fn from(t: Topology) -> TopologyFile {
        TopologyFile { note: t.note, version: t.version, nodes: t.nodes }
    }
}

impl Topology {
    pub fn new(note: String, nodes: Vec<NodeInfo>) -> Result<Topology, TopologyError> {
        let mut index = rustc_hash::FxHashMap::default();
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
            // Scope follows former parents (`was_within`), and a village
            // heads no subtree (`ever_within`): a former parent is a
            // township, as every move the county can publish leaves it.
            if let Some(p) =
                n.former_parents.iter().find(|p| index.get(*p).map(|&i| nodes[i].tier) != Some(Tier::Township))
            {
                return Err(TopologyError::BadFormerParent(n.id.clone(), p.clone()));
            }
        }
        Ok(Topology { note, version: 1, nodes, index })
    }

    /// The version: 1, then one more per change the county published.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Applies the county's next change: the next version, or it is
    /// refused and nothing changes.
    pub fn apply(&mut self, change: &TopologyChange) -> Result<(), TopologyError> {
        self.apply_at(change, u64::MAX)
    }

    /// [`Topology::apply`] for a change published at `at_ms` (the stamp of
    /// its event): a node it retires is retired from then on.
    pub fn apply_at(&mut self, change: &TopologyChange, at_ms: u64) -> Result<(), TopologyError> {
        if change.version != self.version + 1 {
            return Err(TopologyError::OutOfOrder { got: change.version, held: self.version });
        }
        let live = |t: &Topology, id: &NodeId, tier: Tier| -> Result<(), TopologyError> {
            let n = t.index.get(id).map(|&i| &t.nodes[i]).ok_or_else(|| TopologyError::UnknownNode(id.clone()))?;
            if n.tier != tier {
                return Err(TopologyError::Change(format!("{id} is a {} node, not a {tier} node", n.tier)));
            }
            if n.retired {
                return Err(TopologyError::Change(format!("{id} is retired")));
            }
            Ok(())
        };
        let mut next = self.clone();
        match &change.change {
            Change::AddNode { id, tier, parent, name } => {
                let want = match tier {
                    Tier::Village => Tier::Township,
                    Tier::Township => Tier::County,
                    Tier::County => return Err(TopologyError::Change("a county has one county node".into())),
                };
                live(self, parent, want)?;
                if name.trim().is_empty() {
                    return Err(TopologyError::Change(format!("node {id} needs a name")));
                }
                let mut nodes = next.nodes.clone();
                nodes.push(NodeInfo {
                    id: id.clone(),
                    tier: *tier,
                    parent: Some(parent.clone()),
                    name: name.clone(),
                    verifying_key: None,
                    former_parents: vec![],
                    retired: false,
                    retired_at: None,
                });
                next = Topology::new(next.note.clone(), nodes)?;
            }
            Change::Move { node, to } => {
                live(self, node, Tier::Village)?;
                live(self, to, Tier::Township)?;
                next.move_village(node, to)?;
            }
            Change::Merge { from, into } => {
                live(self, from, Tier::Township)?;
                live(self, into, Tier::Township)?;
                if from == into {
                    return Err(TopologyError::Change(format!("{from} cannot be merged into itself")));
                }
                let villages: Vec<NodeId> = self.children(from).map(|n| n.id.clone()).collect();
                for v in &villages {
                    next.move_village(v, into)?;
                }
                let n = next.get_mut(from).expect("checked");
                (n.retired, n.retired_at) = (true, Some(at_ms));
            }
            Change::Retire { node } => {
                let n = self
                    .index
                    .get(node)
                    .map(|&i| &self.nodes[i])
                    .ok_or_else(|| TopologyError::UnknownNode(node.clone()))?;
                if n.tier == Tier::County || n.retired {
                    return Err(TopologyError::Change(format!("{node} cannot be retired")));
                }
                if self.children(node).any(|c| !c.retired) {
                    return Err(TopologyError::Change(format!(
                        "township {node} still has villages: move them or merge it into another township first"
                    )));
                }
                let n = next.get_mut(node).expect("checked");
                (n.retired, n.retired_at) = (true, Some(at_ms));
            }
        }
        next.version = change.version;
        *self = next;
        Ok(())
    }

    fn move_village(&mut self, node: &NodeId, to: &NodeId) -> Result<(), TopologyError> {
        let n = self.get_mut(node).ok_or_else(|| TopologyError::UnknownNode(node.clone()))?;
        if n.parent.as_ref() == Some(to) {
            return Err(TopologyError::Change(format!("{node} already belongs to {to}")));
        }
        if let Some(old) = n.parent.replace(to.clone()) {
            n.former_parents.push(old);
        }
        Ok(())
    }

    /// Whether `node` was retired more than [`crate::catalogue::STALE_GRACE_MS`]
    /// before `at_ms`: its events stamped then are refused (a township
    /// merged while offline finishes what it was doing; one that goes on
    /// writing weeks later is not offline).
    pub fn retired_before(&self, node: &NodeId, at_ms: u64) -> bool {
        self.get(node).is_some_and(|n| {
            n.retired && n.retired_at.is_none_or(|t| at_ms > t.saturating_add(crate::catalogue::STALE_GRACE_MS))
        })
    }

    /// [`Topology::is_within`] now or before a move: `root` is `node`'s
    /// ancestor, or a township `node` was moved away from.
    pub fn was_within(&self, node: &NodeId, root: &NodeId) -> bool {
        self.is_within(node, root)
            || self.get(node).is_some_and(|n| n.former_parents.iter().any(|p| p.base() == root.base()))
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Every node that is or ever was within `root`'s subtree (`root`
    /// itself included), in map order: the nodes `n` with
    /// `was_within(n, root)`. A village heads no subtree (a parent, now or
    /// former, is always a county or a township), so for a village this is
    /// the village alone, found without walking the map: asked for every
    /// village's session.
    pub fn ever_within(&self, root: &NodeId) -> Vec<&NodeInfo> {
        match self.get(root) {
            Some(n) if n.tier == Tier::Village => vec![n],
            _ => self.nodes.iter().filter(|n| self.was_within(&n.id, root)).collect(),
        }
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

/// A node of a map made in a test: named by its id, live, no key.
#[cfg(test)]
pub(crate) fn test_node(id: &str, tier: Tier, parent: Option<&str>) -> NodeInfo {
    NodeInfo {
        id: NodeId::new(id),
        tier,
        parent: parent.map(NodeId::new),
        name: id.into(),
        verifying_key: None,
        former_parents: vec![],
        retired: false,
        retired_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::test_node as node;
    use super::*;

    /// A county `c` with townships `t1` and `t2`, and `villages`.
    fn county(villages: Vec<NodeInfo>) -> Result<Topology, TopologyError> {
        let mut nodes = vec![
            node("c", Tier::County, None),
            node("t1", Tier::Township, Some("c")),
            node("t2", Tier::Township, Some("c")),
        ];
        nodes.extend(villages);
        Topology::new(String::new(), nodes)
    }

    /// The village shortcut of `ever_within` gives what the walk over the
    /// whole map gives, for every node and for incarnation ids, before and
    /// after a village moved.
    #[test]
    fn ever_within_is_the_walk_over_the_map() {
        let mut t = county(vec![
            node("v1", Tier::Village, Some("t1")),
            node("v2", Tier::Village, Some("t1")),
            node("v3", Tier::Village, Some("t2")),
        ])
        .unwrap();
        let check = |t: &Topology| {
            let mut roots: Vec<NodeId> = t.nodes().iter().map(|n| n.id.clone()).collect();
            roots.extend([NodeId::new("v1~2"), NodeId::new("t1~3"), NodeId::new("nowhere")]);
            for root in &roots {
                let walked: Vec<&NodeId> =
                    t.nodes().iter().filter(|n| t.was_within(&n.id, root)).map(|n| &n.id).collect();
                let found: Vec<&NodeId> = t.ever_within(root).into_iter().map(|n| &n.id).collect();
                assert_eq!(found, walked, "root {root}");
            }
        };
        check(&t);
        let change =
            TopologyChange { version: 2, change: Change::Move { node: NodeId::new("v2"), to: NodeId::new("t2") } };
        t.apply(&change).unwrap();
        assert_eq!(t.ever_within(&NodeId::new("t1")).len(), 3, "t1, v1 and v2, which left it");
        check(&t);
    }

    /// A map naming a village (or a node it does not hold) as a node's
    /// former parent is refused: scope would follow it.
    #[test]
    fn a_former_parent_must_be_a_township_of_the_map() {
        let map = |former: &str| {
            let mut v2 = node("v2", Tier::Village, Some("t2"));
            v2.former_parents = vec![NodeId::new(former)];
            county(vec![node("v1", Tier::Village, Some("t1")), v2])
        };
        assert!(map("t1").is_ok());
        for bad in ["v1", "c", "t9"] {
            assert_eq!(map(bad).unwrap_err(), TopologyError::BadFormerParent(NodeId::new("v2"), NodeId::new(bad)));
        }
    }
}
