//! The case lifecycle: states and which transition is allowed in which
//! state. Pure data; the fold and the local command path both use it.

use crate::event::Step;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a case stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// 收件
    Received,
    /// 初审通过
    PreReviewed,
    /// 补齐补正: waiting for the applicant.
    SupplementRequested,
    /// 转报: with the deciding node.
    Forwarded,
    /// 受理 / 审查中: the clock runs.
    Accepted,
    /// 挂起 (特别程序): the clock stops.
    Suspended,
    /// 准予
    Approved,
    /// 不予许可
    Denied,
    /// 出证/送达
    Issued,
    /// 办结
    Closed,
    /// 撤回 (terminal)
    Withdrawn,
    /// 不予受理 / 退件 (terminal)
    NotAccepted,
    /// 终止: a 容缺 case whose materials never came (terminal).
    Terminated,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Received => "received",
            State::PreReviewed => "pre_reviewed",
            State::SupplementRequested => "supplement_requested",
            State::Forwarded => "forwarded",
            State::Accepted => "accepted",
            State::Suspended => "suspended",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Issued => "issued",
            State::Closed => "closed",
            State::Withdrawn => "withdrawn",
            State::NotAccepted => "not_accepted",
            State::Terminated => "terminated",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        ALL_STATES.iter().copied().find(|st| st.name() == s)
    }

    /// Decided, or ended without a decision: the case's clock has stopped
    /// for good and its 办结 stage is reached.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            State::Approved
                | State::Denied
                | State::Issued
                | State::Closed
                | State::Withdrawn
                | State::NotAccepted
                | State::Terminated
        )
    }

    /// No transition leaves this state.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Closed | State::Withdrawn | State::NotAccepted | State::Terminated)
    }

    /// The transitions allowed here, by name, for error messages.
    pub fn allowed_steps(self) -> Vec<&'static str> {
        ALL_STEPS.iter().filter(|s| next(self, s).is_some()).map(|s| s.name()).collect()
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub const ALL_STATES: [State; 13] = [
    State::Received,
    State::PreReviewed,
    State::SupplementRequested,
    State::Forwarded,
    State::Accepted,
    State::Suspended,
    State::Approved,
    State::Denied,
    State::Issued,
    State::Closed,
    State::Withdrawn,
    State::NotAccepted,
    State::Terminated,
];

/// Every step (with placeholder data for those that carry some).
pub const ALL_STEPS: [Step; 16] = [
    Step::PrereviewPass,
    Step::PrereviewReturn,
    Step::Forward { to: crate::ids::NodeId(String::new()) },
    Step::Accept,
    Step::Refuse,
    Step::RequestSupplement,
    Step::Resubmit,
    Step::Approve,
    Step::Deny,
    Step::Issue,
    Step::Close,
    Step::Withdraw,
    Step::Suspend,
    Step::Resume,
    Step::AcceptMissing { missing: Vec::new(), promised: crate::calendar::Day(0) },
    Step::Terminate,
];

/// The state after `step`, or `None` when the step is not allowed in `state`.
pub fn next(state: State, step: &Step) -> Option<State> {
    use State::*;
    let to = match (state, step) {
        (Received, Step::PrereviewPass) => PreReviewed,
        (Received | PreReviewed, Step::PrereviewReturn | Step::RequestSupplement) => SupplementRequested,
        // 补正 during review too: the clock stops until the applicant
        // resubmits and the case is accepted again.
        (Forwarded | Accepted, Step::RequestSupplement) => SupplementRequested,
        (PreReviewed, Step::Forward { .. }) => Forwarded,
        (Received | PreReviewed | Forwarded, Step::Accept | Step::AcceptMissing { .. }) => Accepted,
        (Accepted | Suspended, Step::Terminate) => Terminated,
        (Received | PreReviewed | Forwarded | SupplementRequested, Step::Refuse) => NotAccepted,
        (SupplementRequested, Step::Resubmit) => Received,
        (Accepted, Step::Approve) => Approved,
        (Accepted, Step::Deny) => Denied,
        (Accepted, Step::Suspend) => Suspended,
        (Suspended, Step::Resume) => Accepted,
        (Approved | Denied, Step::Issue) => Issued,
        (Issued, Step::Close) => Closed,
        (s, Step::Withdraw) if !s.is_terminal() && !matches!(s, Approved | Denied | Issued) => Withdrawn,
        _ => return None,
    };
    Some(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path_reaches_closed() {
        let mut s = State::Received;
        for step in [
            Step::PrereviewPass,
            Step::Forward { to: crate::ids::NodeId::new("x") },
            Step::Accept,
            Step::Suspend,
            Step::Resume,
            Step::Approve,
            Step::Issue,
            Step::Close,
        ] {
            s = next(s, &step).unwrap_or_else(|| panic!("{step:?} refused in {s}"));
        }
        assert_eq!(s, State::Closed);
    }

    #[test]
    fn done_is_decided_or_ended() {
        let done: Vec<State> = ALL_STATES.iter().copied().filter(|s| s.is_done()).collect();
        assert!(done.iter().all(|s| !matches!(s, State::Accepted | State::Suspended | State::Received)));
        assert!(ALL_STATES.iter().filter(|s| s.is_terminal()).all(|s| s.is_done()), "every end is done");
        assert!(State::Approved.is_done() && State::Terminated.is_done() && !State::Forwarded.is_done());
    }

    #[test]
    fn terminal_states_allow_nothing() {
        for s in ALL_STATES.iter().filter(|s| s.is_terminal()) {
            assert!(s.allowed_steps().is_empty(), "{s} allows {:?}", s.allowed_steps());
        }
        assert_eq!(next(State::Withdrawn, &Step::Approve), None);
    }
}
