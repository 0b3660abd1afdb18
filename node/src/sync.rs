//! sync driver
use proto::{NodeId, Topology};

/// A node's seal-verifying key from the topology.
pub fn verifying_key(topology: &Topology, node: &NodeId) -> Option<ed25519_dalek::VerifyingKey> {
    let hex_key = topology.get(node)?.verifying_key.as_deref()?;
    let bytes: [u8; 32] = hex::decode(hex_key).ok()?.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
}
