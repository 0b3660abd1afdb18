//! 看板: cases by township and state, the share finished, ratings, and the
//! villages whose work has not reached here for a while.

use super::page;
use crate::chart;
use crate::session::Staff;
use crate::{text, App, DeskError, Html};
use axum::extract::{Query, State};
use maud::html;
use proto::workflow::State as CaseState;
use proto::{NodeId, Tier};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The three groups of states the chart stacks.
const GROUPS: [(&str, &str); 3] = [("办理中", "#2f6fb0"), ("已办结", "#3a9a5b"), ("未予办理", "#c0392b")];

/// A township's name without the suffix every one of them shares.
fn short(name: &str) -> String {
    name.trim_end_matches("便民服务中心").trim_end_matches("便民服务室").to_string()
}

fn group(state: &str) -> usize {
    match CaseState::parse(state) {
        Some(CaseState::Approved | CaseState::Issued | CaseState::Closed) => 1,
        Some(CaseState::Denied | CaseState::NotAccepted | CaseState::Withdrawn | CaseState::Terminated) => 2,
        _ => 0,
    }
}

#[derive(Deserialize, Default)]
pub struct Params {
    /// Villages silent for this many days are listed (default 7).
    days: Option<u64>,
}

pub async fn show(State(app): State<Arc<App>>, staff: Staff, Query(p): Query<Params>) -> Result<Html, DeskError> {
    if app.tier() == Tier::Village {
        return Err(DeskError::NotFound);
    }
    let days = p.days.unwrap_or(7).clamp(1, 365);
    let key = (days, node::cli::today());
    let cached = {
        let held = app.dashboard.lock().unwrap_or_else(|p| p.into_inner());
        held.as_ref().filter(|(at, k, _)| at.elapsed() < DASHBOARD_TTL && *k == key).map(|(at, _, d)| (*at, d.clone()))
    };
    let (computed_at, data) = match cached {
        Some(hit) => hit,
        None => {
            let data = compute(&app, days).await?;
            let at = std::time::Instant::now();
            *app.dashboard.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, key, data.clone()));
            (at, data)
        }
    };
    let age = computed_at.elapsed().as_secs();
    let Data { by_township, ratings, silent, cards, on_time, late, stats } = data;
    let body = render(days, age, &by_township, &ratings, &silent, &cards, on_time, late, &stats);
    Ok(page(&app, &staff, text::NAV_DASHBOARD, text::NAV_DASHBOARD, body))
}

/// The dashboard's figures are counted over every case of the county (a
/// few seconds at 1.5 M cases): computed at most once a minute and shared.
pub const DASHBOARD_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The figures, when they were counted, and for which (days, today).
pub type Cached = (std::time::Instant, (u64, proto::calendar::Day), Data);

/// What the dashboard shows, as counted.
#[derive(Clone)]
pub struct Data {
    by_township: Vec<(String, Vec<u64>)>,
    ratings: Vec<(u8, u64)>,
    silent: Vec<(String, String, Option<u64>)>,
    cards: BTreeMap<String, [u64; 2]>,
    on_time: u64,
    late: u64,
    stats: BTreeMap<String, node::query::Counts>,
}

async fn compute(app: &Arc<App>, days: u64) -> Result<Data, DeskError> {
    let me = app.me().clone();
    let (by_township, ratings, silent, cards, (on_time, late), stats) = app
        .read(move |l| {
            let topo = l.topology();
            let conn = l.store().conn();
            let mut by: BTreeMap<NodeId, [u64; 3]> = BTreeMap::new();
            for (home, state, n) in node::query::counts_by_home_and_state(conn)? {
                let township = topo.ancestor_at(&home, Tier::Township).map(|t| t.id.clone()).unwrap_or(home);
                by.entry(township).or_default()[group(&state)] += n;
            }
            let rows: Vec<(String, Vec<u64>)> =
                by.into_iter().map(|(t, g)| (short(&super::node_name(topo, &t)), g.to_vec())).collect();
            let ratings: Vec<(u8, u64)> =
                node::query::counts_by_rating(conn)?.into_iter().filter(|(l, _)| *l > 0).collect();
            let contacts = node::query::contacts(conn)?;
            let cutoff = node::wall_clock_ms().saturating_sub(days * 86_400_000);
            let mut silent = Vec::new();
            for v in topo.nodes().iter().filter(|n| n.tier == Tier::Village && topo.is_within(&n.id, &me)) {
                let work = node::query::latest_work_of(conn, &v.id)?;
                let seen = contacts.get(&v.id).copied().max(work);
                if seen.is_none_or(|s| s < cutoff) {
                    let township = v.parent.as_ref().map(|p| super::node_name(topo, p)).unwrap_or_default();
                    silent.push((township, v.name.clone(), seen));
                }
            }
            silent.sort_by_key(|s| s.2);
            let mut cards: BTreeMap<String, [u64; 2]> = BTreeMap::new();
            for (home, card, n) in node::query::cards_by_home(conn, node::cli::today())? {
                let township = topo.ancestor_at(&home, Tier::Township).map(|t| t.id.clone()).unwrap_or(home);
                let slot = if card == proto::calendar::Warning::Red { 0 } else { 1 };
                cards.entry(super::node_name(topo, &township)).or_default()[slot] += n;
            }
            let stats_rows = node::query::stats(conn, None, None, node::cli::today())?;
            let stats = node::query::group_stats(&stats_rows, |home, _| {
                let t = topo.ancestor_at(home, Tier::Township).map(|t| t.id.clone()).unwrap_or_else(|| home.clone());
                short(&super::node_name(topo, &t))
            });
            Ok((rows, ratings, silent, cards, node::query::on_time_counts(conn)?, stats))
        })
        .await?;
    Ok(Data { by_township, ratings, silent, cards, on_time, late, stats })
}

#[allow(clippy::too_many_arguments)]
fn render(
    days: u64,
    age: u64,
    by_township: &[(String, Vec<u64>)],
    ratings: &[(u8, u64)],
    silent: &[(String, String, Option<u64>)],
    cards: &BTreeMap<String, [u64; 2]>,
    on_time: u64,
    late: u64,
    stats: &BTreeMap<String, node::query::Counts>,
) -> maud::Markup {
    let totals: [u64; 3] = by_township.iter().fold([0; 3], |mut acc, (_, g)| {
        for (a, v) in acc.iter_mut().zip(g) {
            *a += v;
        }
        acc
    });
    let all: u64 = totals.iter().sum();
    let finished = if all == 0 { 0.0 } else { 100.0 * totals[1] as f64 / all as f64 };
    let rated: u64 = ratings.iter().map(|r| r.1).sum();
    // 不满意 and 非常不满意 are followed up with the applicant.
    let poor: u64 = ratings.iter().filter(|(l, _)| *l >= 4).map(|r| r.1).sum();
    html! {
        p.muted { "数据每分钟统计一次（" (age) " 秒前）。" }
        div.tiles {
            div.tile { span.big { (all) } span { "办件总数" } }
            div.tile { span.big { (totals[0]) } span { "办理中" } }
            div.tile { span.big { (format!("{finished:.1}%")) } span { "办结率（准予、出证、办结）" } }
            div.tile { span.big { @if on_time + late == 0 { "—" } @else { (format!("{:.1}%", 100.0 * on_time as f64 / (on_time + late) as f64)) } }
                span { "按期办结率（" (on_time + late) " 件已决定）" } }
            div.tile { span.big { (rated) } span { "已评价（差评 " (poor) " 件待回访）" } }
        }
        h2 { "电子监察：红黄牌" }
        @if cards.is_empty() { p.muted { "没有超期或时限将到的办件。" } } @else {
            table.cases { thead { tr { th { "乡镇" } th { "红牌（已超期）" } th { "黄牌（已用80%）" } } }
                tbody { @for (t, [red, yellow]) in cards { tr { td { (t) }
                    td { @if *red > 0 { span.badge.red { (red) } } @else { "0" } }
                    td { @if *yellow > 0 { span.badge.yellow { (yellow) } } @else { "0" } } } } } }
            p { a href="/ledger?card=red" { "查看全部红牌办件" } " · " a href="/ledger?card=yellow" { "黄牌办件" } }
        }
        h2 { "各乡镇考核指标" }
        table.cases {
            thead { tr { th { "乡镇" } th { "收件" } th { "受理" } th { "办结" } th { "按期办结率" } th { "平均用时（工作日）" }
                th { "容缺受理（终止）" } th { "满意率" } th { "待回访" } } }
            tbody { @for (t, c) in stats { tr {
                td { (t) } td { (c.received) } td { (c.accepted) } td { (c.done) }
                td { @match c.on_time_rate { Some(r) => (format!("{r:.1}%")), None => "—" } }
                td { @match c.avg_working_days { Some(d) => (format!("{d:.1}")), None => "—" } }
                td { (c.tolerated) "（" (c.tolerated_terminated) "）" }
                td { @match c.satisfaction_rate { Some(r) => (format!("{r:.1}%")), None => "—" } }
                td { (c.open_followups) @if c.overdue_followups > 0 { " " span.badge.red { "超期 " (c.overdue_followups) } } }
            } } }
        }
        h2 { "各乡镇办件" }
        (chart::stacked(by_township, &GROUPS))
        h2 { "好差评分布" }
        @if ratings.is_empty() { p.muted { "还没有评价。" } } @else {
            (chart::bars(&ratings.iter().map(|(l, n)| (text::rating(*l).to_string(), *n)).collect::<Vec<_>>()))
        }
        h2 { (days) " 天以上没有记录到达本节点的村（社区）" span.count { (silent.len()) } }
        form.filters method="get" action="/dashboard" {
            label { "天数" input type="number" name="days" min="1" max="365" value=(days); }
            button type="submit" { "刷新" }
        }
        @if silent.is_empty() { p.muted { "没有。" } } @else {
            table.cases { thead { tr { th { "乡镇" } th { "村（社区）" } th { "最近一次" } } }
                tbody { @for (t, v, seen) in silent { tr { td { (t) } td { (v) } td { @match seen { Some(s) => (crate::when(*s)), None => "从未" } } } } } }
        }
    }
}
