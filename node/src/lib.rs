//! What every node shares: the SQLite store, enrolment and identity,
//! protection of personal data, the local write path, and the command line
//! common to the three binaries.

pub mod cli;
pub mod identity;
pub mod ledger;
pub mod linkemu;
pub mod protect;
pub mod store;
pub mod sync;
pub mod workload;

pub use identity::{Bundle, Identity};
pub use ledger::{Ledger, Refusal};
pub use store::Store;

/// Milliseconds since the Unix epoch from the system clock. The only place
/// a node reads wall time; `proto` is always given it.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
