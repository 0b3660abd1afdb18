//! 待办: this node's cases, the ones waiting for this desk first, with
//! filters, search and paging.

use super::{case_table, page};
use crate::session::Staff;
use crate::{text, App, DeskError, Html};
use axum::extract::{Query, State};
use maud::html;
use node::query::{CaseQuery, Cursor, Page};
use proto::workflow::{State as CaseState, ALL_STATES};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize, Default, Clone)]
pub struct Filters {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub flagged: Option<String>,
    /// `red` (overdue) or `yellow`.
    #[serde(default)]
    pub card: String,
    #[serde(default)]
    pub after: String,
    #[serde(default)]
    pub saved: Option<String>,
}

/// States in which a case still needs someone.
pub const OPEN: [CaseState; 6] = [
    CaseState::Received,
    CaseState::PreReviewed,
    CaseState::SupplementRequested,
    CaseState::Forwarded,
    CaseState::Accepted,
    CaseState::Suspended,
];

/// An 18-character ID number is searched by its keyed hash; anything else
/// as a case id or a name.
pub fn looks_like_id_number(q: &str) -> bool {
    let q = q.trim();
    q.len() == 18 && q.chars().enumerate().all(|(i, c)| c.is_ascii_digit() || (i == 17 && (c == 'X' || c == 'x')))
}

/// The card filter of a list: `red` (overdue) or `yellow`, today.
pub fn card(value: &str) -> Option<(proto::calendar::Warning, proto::calendar::Day)> {
    let today = node::cli::today();
    match value {
        "red" => Some((proto::calendar::Warning::Red, today)),
        "yellow" => Some((proto::calendar::Warning::Yellow, today)),
        _ => None,
    }
}

pub fn card_select(current: &str) -> maud::Markup {
    html! {
        select name="card" {
            option value="" { "全部时限" }
            option value="red" selected[current == "red"] { "红牌（已超期）" }
            option value="yellow" selected[current == "yellow"] { "黄牌（时限将到）" }
        }
    }
}

/// Fills the search part of a query from the search box. A search by full
/// ID number that finds cases is written to the access log under `login`.
pub fn search(ledger: &node::Ledger, login: &str, q: &str, query: &mut CaseQuery) -> anyhow::Result<()> {
    let q = q.trim();
    if q.is_empty() {
        return Ok(());
    }
    if looks_like_id_number(q) {
        // A number with a wrong check digit finds nothing.
        let found = ledger.find_by_id_number(q).unwrap_or_default();
        for case in &found {
            node::staff::log_access(ledger.store().conn(), login, &case.0, "id_number_search", node::wall_clock_ms())?;
        }
        query.ids = Some(found);
    } else {
        query.text = Some(q.to_string());
    }
    Ok(())
}

/// Refuses a search by full ID number beyond the member's allowance.
pub fn id_search_allowed(app: &App, staff: &Staff, q: &str) -> Result<(), DeskError> {
    if looks_like_id_number(q) && !app.may_search_id_number(&staff.member.login, node::wall_clock_ms()) {
        return Err(DeskError::TooMany(format!(
            "按身份证号查询过于频繁（每 {} 分钟最多 {} 次），请稍后再试。",
            crate::ID_SEARCH_WINDOW_MS / 60_000,
            crate::ID_SEARCHES
        )));
    }
    Ok(())
}

pub async fn list(State(app): State<Arc<App>>, staff: Staff, Query(f): Query<Filters>) -> Result<Html, DeskError> {
    id_search_allowed(&app, &staff, &f.q)?;
    let me = app.me().clone();
    let login = staff.member.login.clone();
    let filters = f.clone();
    let (mine, list): (Option<Page>, Page) = app
        .read(move |l| {
            let mut q = CaseQuery { limit: 50, ..Default::default() };
            if let Some(s) = CaseState::parse(&filters.state) {
                q.states = vec![s];
            }
            q.flagged = filters.flagged.is_some();
            q.card = card(&filters.card);
            search(l, &login, &filters.q, &mut q)?;
            q.after = Cursor::decode(&filters.after);
            let filtered = !filters.q.trim().is_empty()
                || !q.states.is_empty()
                || q.flagged
                || q.card.is_some()
                || q.after.is_some();
            let mine = if filtered {
                None
            } else {
                let q = CaseQuery { handler: Some(me), states: OPEN.to_vec(), limit: 100, ..Default::default() };
                Some(q.run(l.store().conn())?)
            };
            Ok((mine, q.run(l.store().conn())?))
        })
        .await?;
    let (topology, clock) = app.read(|l| Ok((l.topology().clone(), super::Clock::of(l)?))).await?;
    let next = list.next.as_ref().map(|c| {
        let mut params = vec![("after", c.encode())];
        if !f.q.is_empty() {
            params.push(("q", f.q.clone()));
        }
        if !f.state.is_empty() {
            params.push(("state", f.state.clone()));
        }
        if f.flagged.is_some() {
            params.push(("flagged", "1".into()));
        }
        if !f.card.is_empty() {
            params.push(("card", f.card.clone()));
        }
        format!("/queue?{}", serde_urlencoded::to_string(params).unwrap_or_default())
    });
    let body = html! {
        @if f.saved.is_some() { p.banner.ok { (text::WRITTEN) } }
        form.filters method="get" action="/queue" {
            input type="search" name="q" value=(f.q) placeholder=(text::SEARCH_HINT);
            select name="state" {
                option value="" { (text::ALL) }
                @for s in ALL_STATES { option value=(s.name()) selected[s.name() == f.state] { (text::state(s)) } }
            }
            (card_select(&f.card))
            label.check { input type="checkbox" name="flagged" value="1" checked[f.flagged.is_some()]; (text::FLAGGED) }
            button type="submit" { (text::SEARCH) }
        }
        @if let Some(mine) = &mine {
            section {
                h2 { (text::NEEDS_ME) " " span.count { (mine.total) } }
                (case_table(&topology, &clock, &mine.cases))
            }
            h2 { "全部办件 " span.count { (list.total) @if list.total >= node::query::COUNT_CAP { "+" } } }
        } @else {
            h2 { "查询结果 " span.count { (list.total) @if list.total >= node::query::COUNT_CAP { "+" } } }
        }
        (case_table(&topology, &clock, &list.cases))
        nav.pager {
            @if !f.after.is_empty() { a href="/queue" { (text::FIRST_PAGE) } }
            @if let Some(n) = next { a.next href=(n) { (text::NEXT_PAGE) } }
        }
    };
    Ok(page(&app, &staff, text::NAV_QUEUE, text::NAV_QUEUE, body))
}
