//! Authorisation: which node may author which event on which case.
//!
//! Every receiver applies these rules, not only the hub; the local command
//! path applies them before writing. A case's scope is its home and the
//! home's ancestors (the deciding node is always one of them), so a node may
//! touch a case only when the case's home lies within its subtree.

use crate::catalogue::{CatalogueCheck, Catalogues};
use crate::event::{Body, Create, Lane, Step, GLOBAL_CASE};
use crate::ids::{CaseId, NodeId, Tier};
use crate::topology::Topology;

/// Why an event may not be authored by its origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The origin is not in the topology.
    #[error("node {0} is not in the county's topology")]
    UnknownNode(NodeId),
    /// The case id is not of the form `<origin>-<seq>` naming a known home.
    #[error("case id {0} is malformed or names an unknown home node")]
    BadCaseId(CaseId),
    /// A node other than the minting origin tried to create the case.
    #[error("case {case} can only be created by its home node {home}, not {author}")]
    CreateNotByHome { case: CaseId, home: NodeId, author: NodeId },
    /// A creation that is not the event whose id mints the case.
    #[error("event {origin}/{seq} claims to create case {case}, which it did not mint")]
    NotMintingEvent { case: CaseId, origin: NodeId, seq: u64 },
    /// The case's home lies outside the author's subtree.
    #[error("case {case} (home {home}) is outside the scope of node {author}")]
    OutOfScope { case: CaseId, home: NodeId, author: NodeId },
    /// The event refers to a case whose creation is not known.
    #[error("case {0} is not known here")]
    UnknownCase(CaseId),
    /// The item may not be taken at this tier.
    #[error("item {item} is not accepted at {tier} windows (accepted at: {accepted_at})")]
    NotAcceptedHere { item: String, tier: Tier, accepted_at: String },
    /// The author's tier may not perform this step on this case.
    #[error("a {tier} node may not {step} this case; {who} does")]
    WrongTier { step: &'static str, tier: Tier, who: String },
    /// A forward names a node other than the item's deciding node.
    #[error("forward must go to the deciding node {expected}, not {to}")]
    ForwardTarget { to: NodeId, expected: NodeId },
    /// The event's lane is not the one its case or body belongs to.
    #[error("event is in lane {lane} but belongs in {expected}")]
    WrongLane { lane: String, expected: String },
    /// Only the county may publish global events (revocations).
    #[error("only the county may publish {0} events")]
    CountyOnly(&'static str),
    /// A value is out of range (a rating level, an empty field name).
    #[error("{0}")]
    BadValue(String),
    /// 容缺 asked for a material the catalogue requires at acceptance.
    #[error("{material} may not be missing at acceptance of item {item}: the catalogue does not allow 容缺 for it")]
    NotMayBeMissing { item: String, material: String },
    /// A creation does not stand against the county's catalogue. Authority
    /// over a case comes only from the catalogue version it names, never
    /// from what the creation claims.
    #[error(transparent)]
    Catalogue(#[from] CatalogueCheck),
}

fn tiers(list: &[Tier]) -> String {
    list.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

/// The node that decides a case: the home's ancestor (or itself) at the
/// deciding tier.
pub fn deciding_node<'a>(topology: &'a Topology, home: &NodeId, decided_by: Tier) -> Option<&'a NodeId> {
    topology.ancestor_at(home, decided_by).map(|n| &n.id)
}

/// True when `node` may hold and see `case` (homed at `home`).
pub fn in_scope(topology: &Topology, node: &NodeId, home: &NodeId) -> bool {
    topology.is_within(home, node)
}

/// True when `node` may hold and see events of `lane`.
pub fn lane_in_scope(topology: &Topology, node: &NodeId, lane: &Lane) -> bool {
    match lane {
        Lane::Global => true,
        Lane::Home(home) => in_scope(topology, node, home),
    }
}

/// The lane an event about `case` with `body` belongs in.
pub fn lane_of(case: &CaseId, body: &Body) -> Lane {
    match body {
        Body::Revoke { .. } | Body::Enrol { .. } | Body::Publish(_) => Lane::Global,
        // A village's voucher lives in its own lane (the case id names it),
        // a township's in the global lane.
        Body::Incarnate { origin, .. } if case.as_str() != GLOBAL_CASE => Lane::Home(origin.node()),
        Body::Incarnate { .. } => Lane::Global,
        _ => Lane::Home(case.home().unwrap_or_else(|| NodeId::new(case.as_str()))),
    }
}

/// Checks that `author` may author `body` on `case` in `lane`. `create` is
/// the case's creation (required for every body but a creation itself); it
/// must itself have passed this check, which compares a creation with the
/// catalogue version it names in `catalogues`, so that every later decision
/// rests on what the county published.
#[allow(clippy::too_many_arguments)]
pub fn authorize(
    topology: &Topology,
    catalogues: &Catalogues,
    author: &NodeId,
    seq: u64,
    lane: &Lane,
    case: &CaseId,
    create: Option<&Create>,
    body: &Body,
) -> Result<(), AuthError> {
    authorize_as(topology, catalogues, author, seq, lane, case, create, body, false)
}

/// [`authorize`] for a received event, which may have been authored before
/// a move its receiver already knows of: a township a village moved away
/// from had authority over the village's cases, and what it did then (or
/// before it heard of the move) stands, as does a forward to it. Authoring
/// here uses [`authorize`]: a township that knows of the move no longer
/// acts on the village's cases.
#[allow(clippy::too_many_arguments)]
pub fn authorize_received(
    topology: &Topology,
    catalogues: &Catalogues,
    author: &NodeId,
    seq: u64,
    lane: &Lane,
    case: &CaseId,
    create: Option<&Create>,
    body: &Body,
) -> Result<(), AuthError> {
    authorize_as(topology, catalogues, author, seq, lane, case, create, body, true)
}

#[allow(clippy::too_many_arguments)]
fn authorize_as(
    topology: &Topology,
    catalogues: &Catalogues,
    author: &NodeId,
    seq: u64,
    lane: &Lane,
    case: &CaseId,
    create: Option<&Create>,
    body: &Body,
    received: bool,
) -> Result<(), AuthError> {
    // Within `node`'s subtree: now, or (received) before a move.
    let within = |home: &NodeId, node: &NodeId| {
        if received {
            topology.was_within(home, node)
        } else {
            topology.is_within(home, node)
        }
    };
    crate::limits::check_body(body)?;
    let author_info = topology.get(author).ok_or_else(|| AuthError::UnknownNode(author.clone()))?;
    let tier = author_info.tier;
    let expected = lane_of(case, body);
    if lane != &expected {
        return Err(AuthError::WrongLane { lane: lane.to_string(), expected: expected.to_string() });
    }
    if let Body::Incarnate { origin, .. } = body {
        let node = origin.node();
        let info = topology.get(&node).ok_or_else(|| AuthError::UnknownNode(node.clone()))?;
        if origin.as_str() == node.as_str() || !origin.is_well_formed_origin() {
            return Err(AuthError::BadValue(format!("{origin} is not an incarnation of a node")));
        }
        let (want_lane, by_parent) = match info.tier {
            Tier::Village => (
                Lane::Home(node.clone()),
                info.parent.as_ref().is_some_and(|p| author.base() == p.as_str())
                    || received && info.former_parents.iter().any(|p| author.base() == p.as_str()),
            ),
            _ => (Lane::Global, false),
        };
        if lane != &want_lane {
            return Err(AuthError::WrongLane { lane: lane.to_string(), expected: want_lane.to_string() });
        }
        if !(tier == Tier::County || by_parent) {
            return Err(AuthError::CountyOnly("incarnate (or the village's own township)"));
        }
        return Ok(());
    }
    if let Body::Publish(_) = body {
        // Authored by the county alone, in the global lane; the version
        // order is the receiver's to check against what it holds.
        if tier != Tier::County {
            return Err(AuthError::CountyOnly(body.name()));
        }
        if case.as_str() != GLOBAL_CASE {
            return Err(AuthError::BadValue(format!("a publication belongs to {GLOBAL_CASE}, not {case}")));
        }
        return Ok(());
    }
    if let Body::Revoke { node, .. } | Body::Enrol { node, .. } = body {
        if tier != Tier::County {
            return Err(AuthError::CountyOnly(body.name()));
        }
        if case.as_str() != GLOBAL_CASE || topology.get(node).is_none() || node.as_str() != node.base() {
            return Err(AuthError::BadValue(format!("{} of unknown node {node}", body.name())));
        }
        return Ok(());
    }
    let home = case.home().filter(|h| topology.get(h).is_some()).ok_or_else(|| AuthError::BadCaseId(case.clone()))?;
    if !within(&home, author) {
        return Err(AuthError::OutOfScope { case: case.clone(), home, author: author.clone() });
    }
    let create = match body {
        Body::Create(c) => {
            if !author.is_incarnation_of(&home) {
                return Err(AuthError::CreateNotByHome { case: case.clone(), home, author: author.clone() });
            }
            if CaseId::mint(author, seq) != *case {
                return Err(AuthError::NotMintingEvent { case: case.clone(), origin: author.clone(), seq });
            }
            let item = catalogues.check_creation(c)?;
            if !item.accepted_at.contains(&tier) {
                return Err(AuthError::NotAcceptedHere {
                    item: c.item.clone(),
                    tier,
                    accepted_at: tiers(&item.accepted_at),
                });
            }
            return Ok(());
        }
        _ => create.ok_or_else(|| AuthError::UnknownCase(case.clone()))?,
    };
    let decider_tier = create.decided_by;
    let prereviewer = create.accepted_at.contains(&tier);
    let decider = tier == decider_tier;
    let wrong = |step: &'static str, who: String| Err(AuthError::WrongTier { step, tier, who });
    match body {
        Body::Create(_) | Body::Revoke { .. } | Body::Enrol { .. } | Body::Incarnate { .. } | Body::Publish(_) => {
            unreachable!("handled above")
        }
        Body::SetField { field, .. } if field.trim().is_empty() => {
            Err(AuthError::BadValue("a field name may not be empty".into()))
        }
        Body::Rate { level, .. } | Body::Rating { level, .. } if !(1..=5).contains(level) => {
            Err(AuthError::BadValue(format!("a rating level is 1 (非常满意) to 5 (非常不满意), not {level}")))
        }
        Body::SetField { .. }
        | Body::AddMaterial { .. }
        | Body::RemoveMaterial { .. }
        | Body::AttachFile { .. }
        | Body::DetachFile { .. }
        | Body::CiteLicence { .. }
        | Body::Rate { .. }
        | Body::Rating { .. }
        | Body::FollowUp { .. } => Ok(()),
        Body::Step { step, .. } => match step {
            Step::PrereviewPass | Step::PrereviewReturn if !prereviewer => {
                wrong(step.name(), format!("a window at {}", tiers(&create.accepted_at)))
            }
            Step::Forward { to } => {
                if tier >= decider_tier {
                    return wrong("forward", format!("a tier below the deciding tier ({decider_tier})"));
                }
                let expected =
                    deciding_node(topology, &home, decider_tier).ok_or_else(|| AuthError::BadCaseId(case.clone()))?;
                // Or, received, the township that decided before a move.
                let former = within(&home, to) && topology.tier_of(to) == Some(decider_tier);
                if to != expected && !former {
                    return Err(AuthError::ForwardTarget { to: to.clone(), expected: expected.clone() });
                }
                Ok(())
            }
            Step::Accept
            | Step::AcceptMissing { .. }
            | Step::Terminate
            | Step::Refuse
            | Step::Approve
            | Step::Deny
            | Step::Suspend
            | Step::Resume
                if !decider =>
            {
                wrong(step.name(), format!("the deciding tier ({decider_tier})"))
            }
            Step::AcceptMissing { missing, .. } => {
                // Only what the catalogue allows to be missing (容缺), as
                // the version the case was taken under says.
                let item = catalogues.check_creation(create)?;
                if missing.is_empty() {
                    return Err(AuthError::BadValue("容缺受理 names at least one missing material".into()));
                }
                for m in missing {
                    match item.materials.iter().find(|x| &x.name == m) {
                        Some(x) if x.may_be_missing => {}
                        Some(_) => {
                            return Err(AuthError::NotMayBeMissing { item: item.code.clone(), material: m.clone() })
                        }
                        None => {
                            return Err(AuthError::BadValue(format!("{m} is not a material of item {}", item.code)))
                        }
                    }
                }
                Ok(())
            }
            Step::RequestSupplement | Step::Resubmit if !(decider || prereviewer) => wrong(
                step.name(),
                format!("a window at {} or the deciding tier ({decider_tier})", tiers(&create.accepted_at)),
            ),
            Step::Issue | Step::Close if !(decider || author.is_incarnation_of(&home)) => {
                wrong(step.name(), format!("the deciding tier ({decider_tier}) or the home window {home}"))
            }
            _ => Ok(()),
        },
    }
}
