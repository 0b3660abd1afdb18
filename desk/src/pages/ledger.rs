//! 总账: every case this node holds (the county: the whole county; a
//! township: its subtree), filtered, searched, paged by position (fast at
//! 1.5 M cases), and exported as CSV or Excel.

use super::{case_table, node_name, page};
use crate::export::{self, Row};
use crate::session::Staff;
use crate::{text, App, DeskError, Html};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::html;
use node::query::{CaseQuery, Cursor};
use proto::workflow::{State as CaseState, ALL_STATES};
use proto::{NodeId, Tier, Topology};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize, Default, Clone)]
pub struct Filters {
    #[serde(default)]
    township: String,
    #[serde(default)]
    village: String,
    #[serde(default)]
    item: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    flagged: Option<String>,
    /// `red` (overdue) or `yellow`.
    #[serde(default)]
    card: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    q: String,
    /// 帮代办: cases filed by this agent.
    #[serde(default)]
    agent: String,
    #[serde(default)]
    after: String,
}

impl Filters {
    /// The filters as link parameters (without the page position).
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        for (k, v) in [
            ("township", &self.township),
            ("village", &self.village),
            ("item", &self.item),
            ("state", &self.state),
            ("card", &self.card),
            ("from", &self.from),
            ("to", &self.to),
            ("q", &self.q),
            ("agent", &self.agent),
        ] {
            if !v.trim().is_empty() {
                p.push((k, v.trim().to_string()));
            }
        }
        if self.flagged.is_some() {
            p.push(("flagged", "1".into()));
        }
        p
    }

    fn query(&self, ledger: &node::Ledger, me: &NodeId, login: &str) -> anyhow::Result<CaseQuery> {
        let topo = ledger.topology();
        let mut q = CaseQuery { limit: 50, ..Default::default() };
        let within = |id: &str| {
            let id = NodeId::new(id.trim());
            (topo.get(&id).is_some() && topo.is_within(&id, me)).then_some(id)
        };
        if let Some(v) = within(&self.village) {
            q.homes = Some(vec![v]);
        } else if let Some(t) = within(&self.township) {
            let mut homes: Vec<NodeId> = topo.children(&t).map(|n| n.id.clone()).collect();
            homes.push(t);
            q.homes = Some(homes);
        }
        if !self.item.trim().is_empty() {
            q.item = Some(self.item.trim().to_string());
        }
        if let Some(s) = CaseState::parse(&self.state) {
            q.states = vec![s];
        }
        q.flagged = self.flagged.is_some();
        q.card = super::queue::card(&self.card);
        if !self.agent.trim().is_empty() {
            q.agent = Some(self.agent.trim().to_string());
        }
        q.created_from = crate::parse_day(&self.from);
        q.created_to = crate::parse_day(&self.to).map(|d| d + 86_400_000);
        super::queue::search(ledger, login, &self.q, &mut q)?;
        q.after = Cursor::decode(&self.after);
        Ok(q)
    }
}

fn options(topology: &Topology, me: &NodeId, tier: Tier) -> Vec<(String, String)> {
    topology
        .nodes()
        .iter()
        .filter(|n| n.tier == tier && topology.is_within(&n.id, me))
        .map(|n| (n.id.0.clone(), n.name.clone()))
        .collect()
}

pub async fn show(State(app): State<Arc<App>>, staff: Staff, Query(f): Query<Filters>) -> Result<Html, DeskError> {
    if app.tier() == Tier::Village {
        return Err(DeskError::NotFound);
    }
    super::queue::id_search_allowed(&app, &staff, &f.q)?;
    let (me, filters, login) = (app.me().clone(), f.clone(), staff.member.login.clone());
    let (page_rows, topology, clock) = app
        .read(move |l| {
            let q = filters.query(l, &me, &login)?;
            Ok((q.run(l.store().conn())?, l.topology().clone(), super::Clock::of(l)?))
        })
        .await?;
    let me = app.me().clone();
    let townships = options(&topology, &me, Tier::Township);
    let villages: Vec<(String, String)> = options(&topology, &me, Tier::Village)
        .into_iter()
        .filter(|(id, _)| {
            f.township.is_empty() || topology.is_within(&NodeId::new(id.as_str()), &NodeId::new(f.township.as_str()))
        })
        .collect();
    let params = f.params();
    let qs = serde_urlencoded::to_string(&params).unwrap_or_default();
    let next = page_rows.next.as_ref().map(|c| {
        let mut p = params.clone();
        p.push(("after", c.encode()));
        format!("/ledger?{}", serde_urlencoded::to_string(&p).unwrap_or_default())
    });
    let body = html! {
        form.filters.wide method="get" action="/ledger" {
            @if app.tier() == Tier::County {
                select name="township" { option value="" { "全部乡镇" }
                    @for (id, name) in &townships { option value=(id) selected[*id == f.township] { (name) } } }
            }
            select name="village" { option value="" { "全部村（社区）" }
                @for (id, name) in &villages { option value=(id) selected[*id == f.village] { (name) } } }
            input name="item" value=(f.item) placeholder=(text::ITEM_CODE) size="8";
            select name="state" { option value="" { "全部状态" }
                @for s in ALL_STATES { option value=(s.name()) selected[s.name() == f.state] { (text::state(s)) } } }
            (super::queue::card_select(&f.card))
            label { "收件自" input type="date" name="from" value=(f.from); }
            label { "至" input type="date" name="to" value=(f.to); }
            input type="search" name="q" value=(f.q) placeholder=(text::SEARCH_HINT);
            input name="agent" value=(f.agent) placeholder="代办员" size="8";
            label.check { input type="checkbox" name="flagged" value="1" checked[f.flagged.is_some()]; (text::FLAGGED) }
            button type="submit" { (text::SEARCH) }
        }
        p.summary {
            "共 " strong { (page_rows.total) @if page_rows.total >= node::query::COUNT_CAP { "+" } } " 件"
            " · " a href=(format!("/ledger.csv?{qs}")) { (text::EXPORT_CSV) }
            " · " a href=(format!("/ledger.xlsx?{qs}")) { (text::EXPORT_XLSX) }
        }
        (case_table(&topology, &clock, &page_rows.cases))
        nav.pager {
            @if !f.after.is_empty() { a href=(format!("/ledger?{qs}")) { (text::FIRST_PAGE) } }
            @if let Some(n) = next { a.next href=(n) { (text::NEXT_PAGE) } }
        }
    };
    Ok(page(&app, &staff, text::NAV_LEDGER, text::NAV_LEDGER, body))
}

/// Most rows one export holds; a larger set is narrowed with the filters.
pub const EXPORT_MAX: usize = 200_000;

async fn rows(app: &Arc<App>, staff: &Staff, f: Filters) -> Result<Vec<Row>, DeskError> {
    if app.tier() == Tier::Village {
        return Err(DeskError::NotFound);
    }
    super::queue::id_search_allowed(app, staff, &f.q)?;
    let (me, login) = (app.me().clone(), staff.member.login.clone());
    app.read(move |l| {
        let mut q = f.query(l, &me, &login)?;
        q.after = None;
        let topo = l.topology();
        let mut out = Vec::new();
        q.for_each(l.store().conn(), |c| {
            anyhow::ensure!(out.len() < EXPORT_MAX, "more than {EXPORT_MAX} cases: narrow the filters");
            let s = node::view::CaseSummary::from(c);
            out.push([
                s.case_id.0.clone(),
                s.item.clone(),
                s.item_name.clone(),
                s.applicant.clone(),
                text::state(c.state).to_string(),
                node_name(topo, &c.home),
                node_name(topo, &c.handler),
                crate::when(c.created.map(|h| h.wall_ms).unwrap_or(0)),
                crate::when(s.updated_ms),
                if c.flagged() { "是".into() } else { String::new() },
            ]);
            Ok(())
        })?;
        Ok(out)
    })
    .await
}

fn download(body: Vec<u8>, kind: &'static str, name: &str) -> Response {
    let disposition = format!("attachment; filename=\"{name}\"");
    ([(header::CONTENT_TYPE, kind.to_string()), (header::CONTENT_DISPOSITION, disposition)], body).into_response()
}

fn file_name(ext: &str) -> String {
    format!("cases-{}.{ext}", crate::day(node::wall_clock_ms()))
}

pub async fn csv(State(app): State<Arc<App>>, staff: Staff, Query(f): Query<Filters>) -> Result<Response, DeskError> {
    let rows = rows(&app, &staff, f).await?;
    tracing::info!(login = ?staff.member.login, rows = rows.len(), "ledger exported as CSV");
    Ok(download(export::csv(&rows), "text/csv; charset=utf-8", &file_name("csv")))
}

pub async fn xlsx(State(app): State<Arc<App>>, staff: Staff, Query(f): Query<Filters>) -> Result<Response, DeskError> {
    let rows = rows(&app, &staff, f).await?;
    tracing::info!(login = ?staff.member.login, rows = rows.len(), "ledger exported as Excel");
    let book = export::xlsx(&rows)?;
    Ok(download(book, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", &file_name("xlsx")))
}
