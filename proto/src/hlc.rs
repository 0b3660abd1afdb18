//! Hybrid logical clock. The caller supplies wall time; nothing here reads a
//! clock.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A hybrid logical timestamp: wall milliseconds, then a logical counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    pub wall_ms: u64,
    pub logical: u32,
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

/// How far ahead of our own wall clock a remote timestamp may pull us.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 5 * 60 * 1000;

/// A remote timestamp was too far ahead of our wall clock to be adopted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("remote timestamp {remote} is {ahead_ms} ms ahead of local wall clock (limit {limit_ms} ms)")]
pub struct ClockDriftError {
    /// The offending timestamp.
    pub remote: Hlc,
    /// How far ahead of local wall time it is.
    pub ahead_ms: u64,
    /// The configured limit.
    pub limit_ms: u64,
}

/// A node's clock state. It never moves backward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A clock that resumes after `last` (e.g. the highest timestamp stored).
    pub fn new(last: Hlc) -> Self {
        HlcClock { last }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new timestamp for a local event at wall time `now_ms`, strictly
    /// greater than every timestamp this clock has issued or observed.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        self.last = if now_ms > self.last.wall_ms {
            Hlc { wall_ms: now_ms, logical: 0 }
        } else if self.last.logical == u32::MAX {
            // The counter is exhausted: move to the next millisecond.
            Hlc { wall_ms: self.last.wall_ms.saturating_add(1), logical: 0 }
        } else {
            Hlc { wall_ms: self.last.wall_ms, logical: self.last.logical + 1 }
        };
        self.last
    }

    /// Takes a remote timestamp into account so that later local events are
    /// ordered after it. A timestamp more than the drift limit ahead of our
    /// wall clock is refused and leaves the clock unchanged.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), ClockDriftError> {
        let limit = now_ms.saturating_add(DEFAULT_MAX_DRIFT_MS);
        if remote.wall_ms > limit {
            return Err(ClockDriftError { remote, ahead_ms: remote.wall_ms - now_ms, limit_ms: DEFAULT_MAX_DRIFT_MS });
        }
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_strictly_monotonic_even_when_wall_clock_goes_back() {
        let mut c = HlcClock::new(Hlc::default());
        let a = c.tick(1000);
        let b = c.tick(900);
        let d = c.tick(1000);
        assert!(a < b && b < d);
        assert_eq!(b, Hlc { wall_ms: 1000, logical: 1 });
    }

    #[test]
    fn observe_orders_later_events_after_remote() {
        let mut c = HlcClock::new(Hlc::default());
        c.observe(Hlc { wall_ms: 2000, logical: 7 }, 1000).unwrap();
        let t = c.tick(1000);
        assert_eq!(t, Hlc { wall_ms: 2000, logical: 8 });
    }

    #[test]
    fn an_exhausted_logical_counter_moves_to_the_next_millisecond() {
        let mut c = HlcClock::new(Hlc { wall_ms: 5, logical: u32::MAX });
        assert_eq!(c.tick(1), Hlc { wall_ms: 6, logical: 0 });
    }

    #[test]
    fn far_future_remote_is_refused() {
        let mut c = HlcClock::new(Hlc::default());
        let far = Hlc { wall_ms: 1000 + DEFAULT_MAX_DRIFT_MS + 1, logical: 0 };
        assert!(c.observe(far, 1000).is_err());
        assert_eq!(c.tick(1000), Hlc { wall_ms: 1000, logical: 0 });
    }
}
