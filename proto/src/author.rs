//! Preparing a local event: the checks every local command passes and the
//! construction of the event itself. Shared by the SQLite ledger in `node`
//! and the in-memory replica of the simulation, so both refuse the same
//! things for the same reasons.

use crate::auth::{self, AuthError};
use crate::catalogue::Catalogues;
use crate::event::{ChainTip, Lane};
use crate::fold::CaseState;
use crate::limits;
use crate::workflow::{self, State};
use crate::{Body, CaseId, Event, EventId, Hlc, NodeId, Topology};

/// A local command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthoringError {
    /// No case with this id is held here.
    #[error("case {0} is not held by this node (case list shows the cases here)")]
    NoSuchCase(CaseId),
    /// The step is not allowed in the case's current state.
    #[error("case {case} is {state}; {step} is not allowed now (allowed: {allowed})")]
    Transition { case: CaseId, state: State, step: &'static str, allowed: String },
    /// This node may not author this event on this case.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Everything needed to author one event.
#[derive(Debug)]
pub struct Draft<'a> {
    pub topology: &'a Topology,
    pub catalogues: &'a Catalogues,
    pub me: &'a NodeId,
    /// This origin's next seq.
    pub seq: u64,
    pub case: CaseId,
    /// The case as held now (none for a creation or a global event).
    pub current: Option<&'a CaseState>,
    pub actor: &'a str,
    pub body: Body,
}

impl Draft<'_> {
    /// The lane the event will be in.
    pub fn lane(&self) -> Lane {
        auth::lane_of(&self.case, &self.body)
    }

    /// Checks the draft and builds the event on top of `tip` (the chain tip
    /// of this origin in [`Draft::lane`]) at time `hlc`.
    pub fn check(&self) -> Result<(), AuthoringError> {
        self.check_authority()?;
        if let (Body::Step { step: crate::Step::Terminate, .. }, Some(st)) = (&self.body, self.current) {
            if st.tolerated.is_none() {
                return Err(AuthoringError::Auth(AuthError::BadValue(
                    "终止 ends only a case accepted with materials missing (容缺受理)".into(),
                )));
            }
        }
        if let (Body::Step { step, .. }, Some(st)) = (&self.body, self.current) {
            if workflow::next(st.state, step).is_none() {
                let allowed = st.state.allowed_steps();
                return Err(AuthoringError::Transition {
                    case: self.case.clone(),
                    state: st.state,
                    step: step.name(),
                    allowed: if allowed.is_empty() {
                        "nothing, the case is finished".into()
                    } else {
                        allowed.join(", ")
                    },
                });
            }
        }
        Ok(())
    }

    /// The authorisation part of [`Draft::check`] alone: the case is held
    /// and this node may author the event. Re-entering work a stale copy
    /// did uses only this: a step no longer valid in the case's state is
    /// kept, folded as superseded and flagged for a person, never lost.
    pub fn check_authority(&self) -> Result<(), AuthoringError> {
        let creating = self.body.is_global() || matches!(self.body, Body::Create(_));
        let create = self.current.and_then(|c| c.create.as_ref());
        if !creating && create.is_none() {
            return Err(AuthoringError::NoSuchCase(self.case.clone()));
        }
        limits::check_actor(self.actor).map_err(AuthError::from)?;
        if let Some(st) = self.current {
            limits::check_growth(st, &self.body).map_err(AuthError::from)?;
        }
        auth::authorize(
            self.topology,
            self.catalogues,
            self.me,
            self.seq,
            &self.lane(),
            &self.case,
            create,
            &self.body,
        )?;
        Ok(())
    }

    /// Builds the event. Call [`Draft::check`] first.
    pub fn build(self, tip: &ChainTip, hlc: Hlc) -> Event {
        let lane = self.lane();
        Event {
            id: EventId { origin: self.me.clone(), seq: self.seq },
            lane,
            pos: tip.pos + 1,
            prev: tip.hash,
            hlc,
            actor: self.actor.trim().to_string(),
            context: self.current.map(|c| c.context()).unwrap_or_default(),
            case: self.case,
            body: self.body,
        }
    }
}
