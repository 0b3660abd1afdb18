//! The county hub as a library: county creation, enrolment, revocation and
//! the merged ledger, shared by the `county-hub` binary and the simulated
//! county (`county-sim`).

pub mod hub;
