//! 同步: the last sessions with the upstream, what waits to go up, a button
//! to sync now (the page follows its progress, with or without script).

use super::page;
use crate::session::{Checked, Staff};
use crate::sync::Outcome;
use crate::{csrf, text, App, DeskError, Html};
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use maud::{html, Markup};
use std::sync::Arc;

fn outcome(o: &Outcome) -> Markup {
    html! {
        table.sheet { tbody {
            tr { th { "对方" } td { (o.peer) } }
            tr { th { "时间" } td { (crate::when(o.started_ms)) " – " (crate::when(o.finished_ms)) } }
            tr { th { "结果" } td class=(if o.ok { "ok" } else { "error" }) { (o.message) } }
            @if o.refused_by_peer > 0 {
                tr.error { th { "上级拒收" } td { (o.refused_by_peer) " 条（上级已隔离，原因请其管理员在隔离区查看）" } }
            }
        } }
    }
}

/// The figures of the running session; the page's script refreshes them
/// from `/sync/status` (ids below), a page without script every 2 s.
fn running(live: &node::sync::Live) -> Markup {
    let phase = text::sync_phase(live.phase);
    html! {
        table.sheet #sync-live { tbody {
            tr { th { "阶段" } td #live-phase { (phase) } }
            tr { th { "案件记录" } td { "已发送 " span #live-events-sent { (live.events_sent) } " 条，已接收 " span #live-events-received { (live.events_received) } " 条" } }
            tr { th { "材料文件" } td {
                "已收到 " span #live-files-received { (live.files_received) } " 个（" span #live-mb-received { (mb(live.file_bytes_received)) } " MB），"
                "待收 " span #live-files-to-receive { (live.files_to_receive) } " 个；"
                "已发出 " span #live-files-sent { (live.files_sent) } " 个（" span #live-mb-sent { (mb(live.file_bytes_sent)) } " MB）"
            } }
            tr { th { "速率" } td { span #live-rate { (mb(live.file_bytes_per_second)) } " MB/秒" } }
        } }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

pub async fn show(State(app): State<Arc<App>>, staff: Staff) -> Result<Html, DeskError> {
    let status = app.sync.status();
    let me = app.me().clone();
    let since = status.last_ok.as_ref().map(|o| o.started_ms).unwrap_or(0);
    let (waiting, quarantined) = app
        .read(move |l| {
            let waiting = node::query::own_events_since(l.store().conn(), &me, since)?;
            let q = node::store::quarantine_list(l.store().conn())?;
            let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
            for e in &q {
                *kinds.entry(e.kind.clone()).or_default() += 1;
            }
            Ok((waiting, kinds))
        })
        .await?;
    let body = html! {
        @if status.running_since.is_some() {
            // Without script the page refreshes itself while a sync runs.
            noscript { meta http-equiv="refresh" content="2"; }
        }
        div #sync-status data-running=(status.running_since.is_some()) {
            @match &status.upstream {
                None => p.muted { "本节点未设置上级节点（启动时用 --upstream 指定），不能从这里同步。" },
                Some(up) => {
                    p { "上级节点：" (up) }
                    @if let Some(since) = status.running_since {
                        p.banner.info { "正在同步（" (crate::when(since)) " 开始）……" }
                        @if let Some(live) = &status.live { (running(live)) }
                    } @else {
                        form method="post" action="/sync" { (csrf(&staff)) button.primary type="submit" { (text::SYNC_NOW) } }
                    }
                }
            }
        }
        h2 { "待上传" }
        p { @if since == 0 { "尚未成功同步过；本机录入的 " (waiting) " 条记录都在等待上传。" }
            @else { "上次成功同步以来，本机新录入 " (waiting) " 条记录，将在下次同步时上传。" } }
        h2 { "上次成功同步" }
        @match &status.last_ok { Some(o) => (outcome(o)), None => p.muted { "还没有成功的同步。" } }
        @if let Some(last) = &status.last { @if !last.ok {
            h2 { "最近一次同步（未完成）" }
            (outcome(last))
        } }
        h2 { "本机隔离的记录" }
        @if quarantined.is_empty() { p.muted { "没有。" } } @else {
            ul { @for (k, n) in &quarantined { li { (text::quarantine_kind(k)) "：" (n) " 条" } } }
            p.muted { "隔离的记录不会生效，原样保留供管理员核查。" }
        }
    };
    Ok(page(&app, &staff, text::NAV_SYNC, text::NAV_SYNC, body))
}

#[derive(serde::Deserialize)]
pub struct Empty {}

/// 立即同步: starts a session in the background and returns to the page,
/// which shows its progress.
pub async fn now(State(app): State<Arc<App>>, _c: Checked<Empty>) -> Response {
    if app.sync.upstream().is_some() {
        let app2 = app.clone();
        tokio::spawn(async move { crate::sync::run_once(&app2).await });
        // Let the session mark itself running before the page is drawn.
        for _ in 0..20 {
            if app.sync.status().running_since.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    Redirect::to("/sync").into_response()
}

/// The sync state as JSON, for the page's progress poll.
pub async fn status(State(app): State<Arc<App>>, _staff: Staff) -> Json<crate::sync::Status> {
    Json(app.sync.status())
}
