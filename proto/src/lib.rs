//! Events, clocks, the CRDT case fold, the catalogue, authorisation rules and
//! (later) the sync state machine.
//!
//! **Architecture invariant:** this crate does no I/O and reads no clock.
//! Every function that needs the time takes it as an argument, and nothing
//! here opens a file or a socket. The node binaries are thin drivers.

pub mod auth;
pub mod author;
pub mod calendar;
pub mod catalogue;
pub mod codec;
pub mod event;
pub mod files;
pub mod fold;
pub mod hlc;
pub mod ids;
pub mod licence;
pub mod limits;
pub mod personal;
pub mod publication;
pub mod sync;
pub mod topology;
pub mod transfer;
pub mod wire;
pub mod workflow;

pub use catalogue::{Catalogue, Catalogues, Item};
pub use event::{Body, Event, Hash, Lane, Seal, Step};
pub use fold::{fold_case, CaseState};
pub use hlc::{Hlc, HlcClock};
pub use ids::{CaseId, EventId, NodeId, Tier};
pub use topology::{NodeInfo, Topology};
