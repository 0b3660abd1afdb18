//! What every node shares: the SQLite store, enrolment and identity,
//! protection of personal data, the local write path, and the command line
//! common to the three binaries.

pub mod agent;
pub mod at_rest;
pub mod blobs;
pub mod cli;
pub mod error;
pub mod identity;
pub mod integrity;
pub mod keystore;
pub mod ledger;
pub mod protect;
pub mod query;
pub mod receipts;
pub mod remote;
pub mod staff;
pub mod store;
pub mod sync;
pub mod verify;
pub mod view;

pub use error::Error;
pub use identity::{Bundle, Identity};
pub use ledger::{Declined, Ledger};
pub use store::Store;

/// Milliseconds since the Unix epoch from the system clock. The only place
/// a node reads wall time; `proto` is always given it.
///
/// In debug builds (the test suite's), `CASE_NODE_CLOCK_SKEW_MS` (signed)
/// shifts the reading, to rehearse a laptop whose clock is wrong; release
/// builds, which go to the field, do not read it.
pub fn wall_clock_ms() -> u64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let skew = *SKEW.get_or_init(|| {
        if cfg!(debug_assertions) {
            std::env::var("CASE_NODE_CLOCK_SKEW_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
        } else {
            0
        }
    });
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    now.saturating_add(skew).max(0) as u64
}
