//! Progress of a running sync session: printed once a second for the CLI
//! (`--progress`), and kept in a shared [`Live`] that a desk's sync page
//! polls. Counting never blocks the session: a report is a mutex held for
//! a copy of a few integers.

use proto::sync::Stats;
use proto::transfer::FileStats;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a session stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Connecting and authenticating.
    #[default]
    Connecting,
    /// Exchanging case events.
    Events,
    /// Exchanging material files (every case state is through by now).
    Files,
}

/// The figures of a running session.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Live {
    pub phase: Phase,
    pub events_sent: u64,
    pub events_received: u64,
    pub files_sent: u64,
    pub file_bytes_sent: u64,
    pub files_received: u64,
    pub file_bytes_received: u64,
    /// Files still to come from the peer in this file phase.
    pub files_to_receive: u64,
    /// File bytes both ways per second since the file phase began.
    pub file_bytes_per_second: u64,
}

/// Where a session reports its progress: stderr, a shared [`Live`], both
/// or neither.
#[derive(Clone, Default)]
pub struct Progress {
    print: bool,
    live: Option<Arc<Mutex<Live>>>,
    last_print: Arc<Mutex<Option<Instant>>>,
}

const PRINT_EVERY: Duration = Duration::from_secs(1);

impl Progress {
    /// Reports to stderr once a second when `print`, else nowhere.
    pub fn printing(print: bool) -> Progress {
        Progress { print, ..Default::default() }
    }

    /// Reports into `live` (reset to a new session first).
    pub fn watched(live: Arc<Mutex<Live>>) -> Progress {
        *live.lock().expect("sync progress") = Live::default();
        Progress { live: Some(live), ..Default::default() }
    }

    fn update(&self, f: impl FnOnce(&mut Live)) {
        if let Some(live) = &self.live {
            f(&mut live.lock().expect("sync progress"));
        }
    }

    /// True at most once per [`PRINT_EVERY`], when printing.
    fn due(&self) -> bool {
        if !self.print {
            return false;
        }
        let mut last = self.last_print.lock().expect("sync progress");
        if last.is_some_and(|t| t.elapsed() < PRINT_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    pub(super) fn events(&self, me: &proto::NodeId, peer: &proto::NodeId, stats: &Stats, bytes_received: u64) {
        self.update(|l| {
            l.phase = Phase::Events;
            l.events_sent = stats.sent_events;
            l.events_received = stats.received_events;
        });
        if self.due() {
            eprintln!(
                "sync {me} <-> {peer}: sent {} events, received {} events ({bytes_received} bytes in)",
                stats.sent_events, stats.received_events
            );
        }
    }

    pub(super) fn files(&self, peer: &proto::NodeId, stats: &FileStats, to_receive: usize, since: Instant) {
        let secs = since.elapsed().as_secs_f64().max(0.001);
        let rate = ((stats.file_bytes_received + stats.file_bytes_sent) as f64 / secs) as u64;
        self.update(|l| {
            l.phase = Phase::Files;
            l.files_sent = stats.files_sent;
            l.file_bytes_sent = stats.file_bytes_sent;
            l.files_received = stats.files_received;
            l.file_bytes_received = stats.file_bytes_received;
            l.files_to_receive = to_receive as u64;
            l.file_bytes_per_second = rate;
        });
        if self.due() {
            eprintln!(
                "files with {peer}: received {} ({:.1} MB, {to_receive} to come), sent {} ({:.1} MB), {:.2} MB/s",
                stats.files_received,
                stats.file_bytes_received as f64 / 1e6,
                stats.files_sent,
                stats.file_bytes_sent as f64 / 1e6,
                rate as f64 / 1e6
            );
        }
    }
}
