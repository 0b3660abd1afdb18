//! Syncing from the desk: the "立即同步" button, the background loop of
//! `--sync-every`, and what the sync page shows of the last sessions.
//! A sync runs the same `node::sync::sync_with` as the `sync` command, in
//! this process, on its own connections to the store.

use crate::App;
use node::store;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One sync session's outcome, as the sync page shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub peer: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub ok: bool,
    /// In words, for staff.
    pub message: String,
    pub sent: u64,
    pub received: u64,
    /// Of ours, quarantined by the peer.
    pub refused_by_peer: u64,
    /// Of ours, held back by the peer for now (waiting for something).
    pub held_by_peer: u64,
    /// Of theirs, quarantined here.
    pub quarantined_here: u64,
}

/// Where the last session stands, in memory and in the store's meta.
pub struct SyncState {
    upstream: Option<String>,
    inner: Mutex<Inner>,
    /// The running session's figures (reset when one starts).
    live: Arc<Mutex<node::sync::Live>>,
}

#[derive(Default)]
struct Inner {
    running_since: Option<u64>,
    last: Option<Outcome>,
    last_ok: Option<Outcome>,
    clock: Option<String>,
}

const LAST_KEY: &str = "desk_last_sync";
const LAST_OK_KEY: &str = "desk_last_good_sync";

/// What the sync page and its progress poll show.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub upstream: Option<String>,
    pub running_since: Option<u64>,
    pub last: Option<Outcome>,
    pub last_ok: Option<Outcome>,
    /// The running session's figures; none when no session runs.
    pub live: Option<node::sync::Live>,
    /// The running session's phase in words.
    pub live_phase: Option<&'static str>,
}

fn clock_words(peer: &proto::NodeId, offset_ms: i64) -> String {
    let minutes = offset_ms.unsigned_abs() / 60_000;
    let by = if minutes >= 48 * 60 {
        format!("{} 天", minutes / (24 * 60))
    } else if minutes >= 120 {
        format!("{} 小时", minutes / 60)
    } else {
        format!("{minutes} 分钟")
    };
    let how = if offset_ms < 0 { "快" } else { "慢" };
    format!("上次同步时，本机时钟比 {peer} {how}了约 {by}（新录入的内容会保留，但时间不准并会被标记）")
}

impl SyncState {
    pub fn new(upstream: Option<String>) -> SyncState {
        SyncState { upstream, inner: Default::default(), live: Default::default() }
    }

    pub fn upstream(&self) -> Option<&str> {
        self.upstream.as_deref()
    }

    /// Reads what the store remembers (after a restart).
    pub fn load(&self, ledger: &node::Ledger) -> anyhow::Result<()> {
        let conn = ledger.store().conn();
        let mut inner = self.inner.lock().expect("sync state");
        inner.last = store::meta_get(conn, LAST_KEY)?;
        inner.last_ok = store::meta_get(conn, LAST_OK_KEY)?;
        inner.clock = ledger.clock_offset()?.map(|(p, o)| clock_words(&p, o));
        Ok(())
    }

    pub fn clock_warning(&self) -> Option<String> {
        self.inner.lock().expect("sync state").clock.clone()
    }

    pub fn status(&self) -> Status {
        let inner = self.inner.lock().expect("sync state");
        let live = inner.running_since.map(|_| self.live.lock().expect("sync progress").clone());
        Status {
            upstream: self.upstream.clone(),
            running_since: inner.running_since,
            last: inner.last.clone(),
            last_ok: inner.last_ok.clone(),
            live: live.clone(),
            live_phase: live.map(|l| crate::text::sync_phase(l.phase)),
        }
    }

    /// Marks a session as running; false when one already is.
    fn begin(&self, now: u64) -> bool {
        let mut inner = self.inner.lock().expect("sync state");
        if inner.running_since.is_some() {
            return false;
        }
        inner.running_since = Some(now);
        true
    }
}

fn describe(s: &node::sync::Summary) -> String {
    let mut words = format!("发送 {} 条，接收 {} 条记录", s.stats.sent_events, s.stats.received_events);
    if s.stats.quarantined_by_peer > 0 {
        words.push_str(&format!(
            "；上级拒收（隔离）了本机的 {} 条记录，请联系管理员查看隔离区",
            s.stats.quarantined_by_peer
        ));
    }
    if s.stats.held_by_peer > 0 {
        words.push_str(&format!("；上级暂缓接收 {} 条（等待其所依赖的记录），下次同步时再发", s.stats.held_by_peer));
    }
    if s.stats.quarantined_events > 0 {
        words.push_str(&format!("；本机隔离了收到的 {} 条记录", s.stats.quarantined_events));
    }
    if s.files.files_received + s.files.files_sent > 0 {
        words.push_str(&format!(
            "；材料文件：收到 {} 个（{:.1} MB），发出 {} 个（{:.1} MB）",
            s.files.files_received,
            s.files.file_bytes_received as f64 / 1e6,
            s.files.files_sent,
            s.files.file_bytes_sent as f64 / 1e6
        ));
    }
    if s.files.incomplete > 0 {
        words.push_str(&format!("；{} 个文件尚未收全，下次同步时从断点继续", s.files.incomplete));
    }
    if let Some(u) = &s.unconfirmed_by_county {
        let what = match (u.events, u.files) {
            (e, 0) => format!("{e} 条记录"),
            (0, f) => format!("{f} 个材料文件"),
            (e, f) => format!("{e} 条记录和 {f} 个材料文件"),
        };
        words.push_str(&format!(
            "。注意：{} 已接收本村的 {what}，但县中心的签收回执中没有这些内容，可能未被转报。它们仍安全保存在本机；请联系县管理员，或直接与县中心同步",
            u.peer
        ));
    }
    if s.stats.newer_format_events > 0 {
        words.push_str(&format!(
            "；收到 {} 条由更新版本软件写入的记录，本机版本无法读取，暂不接收（升级后下次同步即可收到）：请联系管理员升级本机软件",
            s.stats.newer_format_events
        ));
    }
    if let Some(r) = &s.recovery {
        words.push_str(&format!(
            "。本机记录曾旧于网络副本（从备份恢复或复制而来），已取回 {} 条本机记录并以新副本 {} 继续工作，未丢失任何内容",
            r.taken_back, r.origin
        ));
    }
    words.push('。');
    words
}

/// Runs one sync session now and records its outcome. Returns false when
/// one was already running (this one is not started).
pub async fn run_once(app: &Arc<App>) -> bool {
    let Some(peer) = app.sync.upstream.clone() else { return false };
    let started = node::wall_clock_ms();
    if !app.sync.begin(started) {
        return false;
    }
    let result = node::sync::sync_watched(app.dir(), &peer, app.sync.live.clone()).await;
    let finished = node::wall_clock_ms();
    let outcome = match &result {
        Ok(s) => Outcome {
            peer: s.peer.clone(),
            started_ms: started,
            finished_ms: finished,
            ok: s.own_diverged.is_empty() && s.peer_diverged.is_empty() && s.unconfirmed_by_county.is_none(),
            message: describe(s),
            sent: s.stats.sent_events,
            received: s.stats.received_events,
            refused_by_peer: s.stats.quarantined_by_peer,
            held_by_peer: s.stats.held_by_peer,
            quarantined_here: s.stats.quarantined_events,
        },
        Err(e) => Outcome {
            peer: peer.clone(),
            started_ms: started,
            finished_ms: finished,
            ok: false,
            message: format!("同步未完成（已收到的内容均已保存，下次同步会继续）：{e:#}"),
            sent: 0,
            received: 0,
            refused_by_peer: 0,
            held_by_peer: 0,
            quarantined_here: 0,
        },
    };
    let saved = outcome.clone();
    let _ = app
        .with(move |l| {
            store::meta_set(l.store().conn(), LAST_KEY, &saved)?;
            if saved.ok {
                store::meta_set(l.store().conn(), LAST_OK_KEY, &saved)?;
            }
            Ok(())
        })
        .await;
    {
        let mut inner = app.sync.inner.lock().expect("sync state");
        inner.running_since = None;
        if outcome.ok {
            inner.last_ok = Some(outcome.clone());
        }
        inner.last = Some(outcome);
    }
    // `with` reads the store again (the sync wrote it in another handle).
    let app2 = app.clone();
    let _ = app.with(move |l| app2.sync.load(l)).await;
    true
}

/// Syncs every `every` in the background while the desk runs; an
/// unreachable upstream is only recorded, and tried again next time.
pub fn spawn_background(app: Arc<App>, every: Duration) {
    tokio::spawn(async move {
        loop {
            run_once(&app).await;
            tokio::time::sleep(every).await;
        }
    });
}
