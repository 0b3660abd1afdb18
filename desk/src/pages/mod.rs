//! The pages. Each module is one page (or a family of them) and its forms.

pub mod admin;
pub mod case;
pub mod dashboard;
pub mod files;
pub mod followups;
pub mod intake;
pub mod ledger;
pub mod login;
pub mod print;
pub mod queue;
pub mod sync;

use crate::session::Staff;
use crate::{text, App, DeskError, Html};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use node::staff::Role;
use proto::fold::CaseState;
use proto::{CaseId, NodeId, Tier, Topology};
use std::sync::Arc;

/// The navigation of a tier and role: (href, label).
pub fn nav(tier: Tier, role: Role) -> Vec<(&'static str, &'static str)> {
    let mut nav = Vec::new();
    if tier == Tier::County {
        nav.push(("/ledger", text::NAV_LEDGER));
        nav.push(("/dashboard", text::NAV_DASHBOARD));
    }
    nav.push(("/queue", text::NAV_QUEUE));
    nav.push(("/intake", text::NAV_INTAKE));
    if tier == Tier::Township {
        nav.push(("/ledger", text::NAV_LEDGER));
    }
    nav.push(("/followups", "回访"));
    if tier != Tier::County {
        nav.push(("/sync", text::NAV_SYNC));
    }
    if role == Role::Admin {
        nav.push(("/quarantine", text::NAV_QUARANTINE));
        if tier == Tier::County {
            nav.push(("/nodes", text::NAV_NODES));
        }
        nav.push(("/staff", text::NAV_STAFF));
        nav.push(("/access", text::NAV_ACCESS));
    }
    nav
}

pub async fn home(State(app): State<Arc<App>>, _staff: Staff) -> Redirect {
    Redirect::to(if app.tier() == Tier::County { "/ledger" } else { "/queue" })
}

/// The embedded assets.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static str, &str) = match file.as_str() {
        "desk.css" => (include_str!("../../assets/desk.css"), "text/css; charset=utf-8"),
        "desk.js" => (include_str!("../../assets/desk.js"), "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

/// A node's name from the topology, or its id.
pub fn node_name(topology: &Topology, id: &NodeId) -> String {
    topology.get(&id.node()).map(|n| n.name.clone()).unwrap_or_else(|| id.to_string())
}

/// Loads a case this desk may show: held here and homed within this
/// node's subtree; anything else is "not found", whether or not it exists.
pub async fn load_case(app: &Arc<App>, id: &str) -> Result<CaseState, DeskError> {
    let id = CaseId(id.to_string());
    if id.home().is_none() {
        return Err(DeskError::NotFound);
    }
    let me = app.me().clone();
    let found = app
        .read(move |l| {
            let Some(st) = node::store::get_case(l.store().conn(), &id)? else { return Ok(None) };
            Ok(l.topology().is_within(&st.home, &me).then_some(st))
        })
        .await?;
    found.ok_or(DeskError::NotFound)
}

/// What a list needs to show time limits: the node's calendar and today.
#[derive(Clone)]
pub struct Clock {
    pub calendar: std::sync::Arc<proto::calendar::Calendar>,
    pub today: proto::calendar::Day,
}

impl Clock {
    pub fn of(ledger: &node::Ledger) -> anyhow::Result<Clock> {
        Ok(Clock { calendar: ledger.calendar()?, today: node::cli::today() })
    }
}

/// A case's due date and card, as a cell.
pub fn due_cell(c: &CaseState, clock: &Clock) -> Markup {
    use proto::calendar::Warning;
    let t = proto::calendar::timing(c, &clock.calendar, clock.today);
    html! {
        @match &t {
            None => span.muted { "—" },
            Some(t) if t.finished.is_some() => {
                @if t.on_time == Some(false) { span.badge.late { "超期办结" } } @else { span.muted { "按期" } }
            }
            Some(t) if t.stopped => span.badge { "暂停计时" },
            Some(t) => {
                (t.due.map(|d| d.to_string()).unwrap_or_default())
                @if t.provisional { span.muted { "（暂定）" } }
                @match t.warning {
                    Warning::Red => { " " span.badge.red { "红牌" } },
                    Warning::Yellow => { " " span.badge.yellow { "黄牌" } },
                    Warning::None => {},
                }
            }
        }
    }
}

/// A list of cases as a table, linking to each case.
pub fn case_table(topology: &Topology, clock: &Clock, cases: &[CaseState]) -> Markup {
    html! {
        @if cases.is_empty() { p.empty { (text::NONE_FOUND) } } @else {
            table.cases {
                thead { tr {
                    th { (text::CASE_ID) } th { (text::ITEM) } th { (text::APPLICANT) } th { (text::STATE) }
                    th { (text::HOME) } th { (text::HANDLER) } th { "办结时限" } th { (text::UPDATED) }
                } }
                tbody { @for c in cases {
                    @let s = node::view::CaseSummary::from(c);
                    tr class=[c.flagged().then_some("flagged")] {
                        td { a href=(format!("/case/{}", s.case_id)) { (s.case_id) } }
                        td { (s.item_name) span.code { " " (s.item) } }
                        td { (s.applicant) }
                        td { span class=(format!("state s-{}", s.state)) { (text::state(c.state)) }
                            @if c.flagged() { " " span.badge.flag { (text::FLAGGED) } } }
                        td { (node_name(topology, &c.home)) }
                        td { (node_name(topology, &c.handler)) }
                        td { (due_cell(c, clock)) }
                        td { (crate::when(s.updated_ms)) }
                    }
                } }
            }
        }
    }
}

/// Redirect after a successful POST (the page shows "已保存").
pub fn saved(to: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}saved=1")).into_response()
}

/// A page of the desk's chrome.
pub fn page(app: &App, staff: &Staff, title: &str, active: &str, body: Markup) -> Html {
    Html(crate::layout(app, staff, title, active, body))
}
