//! The case page: fields (masked, with concurrent values side by side),
//! materials, the history timeline, and only the steps this node and this
//! member may take now, as buttons.

use super::{load_case, node_name, page, saved};
use crate::session::{Checked, Staff};
use crate::{csrf, text, App, DeskError, Html};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use node::staff::Role;
use proto::files::FileHash;
use proto::fold::{CaseState, Conflict};
use proto::personal::PersonalKind;
use proto::{CaseId, NodeId, Step, Topology};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Steps a clerk may take; the rest need a reviewer.
fn clerk_may(step: &Step) -> bool {
    matches!(
        step,
        Step::PrereviewPass
            | Step::PrereviewReturn
            | Step::Forward { .. }
            | Step::RequestSupplement
            | Step::Resubmit
            | Step::Withdraw
    )
}

fn may(role: Role, step: &Step) -> bool {
    role.decides() || clerk_may(step)
}

/// `accept`, `forward:<node>`… as the buttons send them.
fn step_value(step: &Step) -> String {
    match step {
        Step::Forward { to } => format!("forward:{to}"),
        s => s.name().to_string(),
    }
}

fn parse_step(value: &str) -> Option<Step> {
    if let Some(to) = value.strip_prefix("forward:") {
        return Some(Step::Forward { to: NodeId::new(to) });
    }
    Some(match value {
        "prereview_pass" => Step::PrereviewPass,
        "prereview_return" => Step::PrereviewReturn,
        "accept" => Step::Accept,
        "refuse" => Step::Refuse,
        "request_supplement" => Step::RequestSupplement,
        "resubmit" => Step::Resubmit,
        "approve" => Step::Approve,
        "deny" => Step::Deny,
        "issue" => Step::Issue,
        "close" => Step::Close,
        "withdraw" => Step::Withdraw,
        "suspend" => Step::Suspend,
        "resume" => Step::Resume,
        "terminate" => Step::Terminate,
        _ => return None,
    })
}

/// What the case page shows besides the case.
struct Extra {
    steps: Vec<Step>,
    topology: Topology,
    item: Option<proto::catalogue::Item>,
    /// Clear values shown once, on an explicit (logged) request.
    revealed: BTreeMap<String, Vec<String>>,
    error: Option<String>,
    saved: bool,
    timing: Option<proto::calendar::Timing>,
    calendar: std::sync::Arc<proto::calendar::Calendar>,
    /// The case's files whose bytes this node holds.
    held: BTreeSet<FileHash>,
    /// 县级已接收: the case's events and files the county has receipted.
    county_received: bool,
    /// Materials satisfied by a licence: (material, its terms, the check
    /// made here now).
    licences: Vec<(String, proto::licence::Terms, Result<(), String>)>,
    county_files: BTreeSet<FileHash>,
    /// A refused file: (material, reason), shown beside its field.
    file_error: Option<(String, String)>,
    /// The township the case's village moved to, when this township held
    /// it before the move (the case is kept as it was and gets no news).
    moved_to: Option<proto::NodeId>,
}

fn conflict_words(c: &Conflict) -> String {
    match c {
        Conflict::ConcurrentValues { field, values } => {
            format!("“{}”同时录入了 {values} 个不同的值，请核对后采用其一。", text::field(field))
        }
        Conflict::SupersededTransition { event, step, state } => format!(
            "{event} 的“{}”与其他窗口的并发操作冲突，未生效（当时办件已是“{}”）。",
            text::step(step),
            text::state(*state)
        ),
        Conflict::Equivocation { event } => format!("同一编号 {event} 出现了两条不同的记录，已留存备查。"),
        Conflict::StrayCreate { event } => format!("{event} 试图重复创建本办件，未生效。"),
        Conflict::ClockSkew { event } => format!("{event} 的时间戳晚于其后发生的操作（录入电脑的时钟不准）。"),
    }
}

fn fields(staff: &Staff, c: &CaseState, revealed: &BTreeMap<String, Vec<String>>) -> Markup {
    let order = ["applicant", "id_number", "phone", "address"];
    let mut names: Vec<&String> = c.fields.keys().collect();
    names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(order.len()));
    html! {
        table.fields { tbody {
            @for name in names {
                @let values = &c.fields[name];
                @let personal = PersonalKind::of_field(name).is_some();
                tr class=[(values.len() > 1).then_some("concurrent")] {
                    th { (text::field(name)) }
                    td {
                        @if values.len() > 1 {
                            p.muted { (text::CONCURRENT) }
                            div.side-by-side { @for (i, v) in values.iter().enumerate() {
                                div.value {
                                    // Shown in full once revealed (logged), so
                                    // the values can be told apart.
                                    span { (revealed.get(name.as_str()).and_then(|c| c.get(i)).map_or(v.display(), |c| c.as_str())) }
                                    form method="post" action=(format!("/case/{}/field", c.case_id)) class="inline" {
                                        (csrf(staff))
                                        input type="hidden" name="field" value=(name);
                                        input type="hidden" name="index" value=(i);
                                        button type="submit" { (text::ADOPT) }
                                    }
                                }
                            } }
                        } @else {
                            @for v in values { span { (v.display()) } }
                        }
                        @if let Some(clear) = revealed.get(name.as_str()) {
                            div.revealed { @for v in clear { span.clear { (v) } } span.muted { "（本次查看已记录）" } }
                        } @else if personal {
                            form method="post" action=(format!("/case/{}/reveal", c.case_id)) class="inline" {
                                (csrf(staff))
                                input type="hidden" name="field" value=(name);
                                button.link type="submit" { (text::SHOW_FULL) }
                            }
                        }
                    }
                }
            }
        } }
    }
}

/// Each material: the item's, in the catalogue's order, then any other
/// the case holds. A material is received when ticked (paper seen) or when
/// it has a current file; each lists its files, and takes a file.
fn materials(staff: &Staff, c: &CaseState, x: &Extra, open: bool) -> Markup {
    let listed: Vec<&proto::catalogue::Material> =
        x.item.as_ref().map(|i| i.materials.iter().collect()).unwrap_or_default();
    let mut names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
    for name in c.materials.iter().map(String::as_str).chain(c.files.iter().map(|f| f.material.as_str())) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let error_of = |name: &str| x.file_error.as_ref().filter(|(m, _)| m == name).map(|(_, e)| e.as_str());
    html! {
        @if open { p.muted.small { (text::FILE_HINT) } }
        ul.materials {
            @for name in &names {
                @let spec = listed.iter().find(|m| m.name == *name);
                @let ticked = c.materials.iter().any(|m| m == name);
                @let received = ticked || c.files.iter().any(|f| f.material == *name && f.is_current());
                li.material class=[(!received).then_some("missing")] {
                    div.material-head {
                        @if received { span.badge.ok { (text::RECEIVED) } }
                        @else if spec.is_some_and(|m| m.required) { span.badge.req { (text::NOT_RECEIVED) } }
                        @else { span.badge { (text::NOT_RECEIVED) } }
                        " " strong { (name) }
                        @if !received && spec.is_some_and(|m| m.required && m.may_be_missing) {
                            " " span.badge.maybe { (text::MAY_BE_MISSING) }
                        }
                        @if open && ticked {
                            form method="post" action=(format!("/case/{}/material", c.case_id)) class="inline" {
                                (csrf(staff)) input type="hidden" name="name" value=(name); input type="hidden" name="action" value="remove";
                                button.link type="submit" { (text::REMOVE_MATERIAL) }
                            }
                        }
                    }
                    @for (m, l, check) in &x.licences {
                        @if m == name {
                            div.small {
                                span class=(if check.is_ok() { "badge ok" } else { "badge maybe" }) {
                                    (if check.is_ok() { text::LICENCE_VALID } else { text::LICENCE_INVALID })
                                }
                                " " (text::LICENCE_CITED) "：" (l.result) " · " (node_name(&x.topology, &l.issuer))
                                " · " (l.case)
                                @if let Err(e) = check { span.muted { "（" (e) "）" } }
                            }
                        }
                    }
                    (super::files::listed(staff, c, name, &x.held, &x.county_files, &x.topology, open))
                    @if open { (super::files::upload_form(staff, c, name, error_of(name))) }
                }
            }
        }
        @if open && listed.iter().any(|m| !c.materials.contains(&m.name)) {
            form method="post" action=(format!("/case/{}/material", c.case_id)) class="row" {
                (csrf(staff))
                input type="hidden" name="action" value="add";
                select name="name" { @for m in listed.iter().filter(|m| !c.materials.contains(&m.name)) {
                    option value=(m.name) { (m.name) }
                } }
                button type="submit" { (text::ADD_MATERIAL) }
            }
        }
        @if !c.files.is_empty() { p.muted.small { (text::FILE_OPENED_NOTE) } }
    }
}

fn history(c: &CaseState, topology: &Topology) -> Markup {
    html! {
        ol.timeline {
            @for h in &c.history {
                @let line = node::view::HistoryLine::from(h);
                li class=[h.superseded.then_some("superseded")] {
                    span.when { (crate::when(h.hlc.wall_ms)) }
                    span.what { (text::history_kind(line.kind)) }
                    @if let Some(to) = h.to { @if !h.superseded { " → " (text::state(to)) } }
                    span.who { (h.actor) " · " (node_name(topology, &h.event.origin)) }
                    @if let proto::fold::Happened::Step { step: Step::Forward { to }, note } = &h.happened {
                        div.detail { "转至 " (node_name(topology, to)) @if !note.is_empty() { "：" (note) } }
                    } @else if let proto::fold::Happened::FileAttached { material, name, replaces, .. } = &h.happened {
                        div.detail { (material) "：" (name) @if replaces.is_some() { (text::FILE_REPLACES_EARLIER) } }
                    } @else if let proto::fold::Happened::FileDetached { material, hash, note } = &h.happened {
                        div.detail { (material) "："
                            (c.files.iter().find(|f| f.file.hash == *hash).map_or(String::new(), |f| f.file.name.clone()))
                            @if !note.is_empty() { "（" (note) "）" } }
                    } @else if !line.detail.is_empty() && line.kind != "create" { div.detail { (line.detail) } }
                    @if h.superseded { div.superseded-note { (text::SUPERSEDED) } }
                }
            }
        }
    }
}

fn actions(staff: &Staff, c: &CaseState, steps: &[Step], topology: &Topology) -> Markup {
    // 终止 is offered only when a 容缺 case's promised day has passed.
    let due = c.termination_due(node::cli::today());
    let mine: Vec<&Step> =
        steps.iter().filter(|s| may(staff.role(), s) && (due || !matches!(s, Step::Terminate))).collect();
    let hidden = steps.len() - mine.len();
    html! {
        @if mine.is_empty() {
            p.muted { "本窗口当前没有可办的操作。" @if hidden > 0 { "（有 " (hidden) " 项操作需审核人员办理）" } }
        } @else {
            form.actions method="post" action=(format!("/case/{}/step", c.case_id)) {
                (csrf(staff))
                label { (text::NOTE) textarea name="note" rows="2" maxlength="500" {} }
                div.buttons { @for s in mine {
                    button type="submit" name="step" value=(step_value(s))
                        class=(if matches!(s, Step::Refuse | Step::Deny | Step::Withdraw) { "danger" } else { "primary" }) {
                        (text::step(s))
                        @if let Step::Forward { to } = s { "至" (node_name(topology, to)) }
                    }
                } }
                @if hidden > 0 { p.muted { "另有 " (hidden) " 项操作需审核人员办理。" } }
            }
        }
    }
}

fn timing_line(t: &proto::calendar::Timing) -> Markup {
    use proto::calendar::Warning;
    html! {
        div.timing {
            "受理于 " (t.accepted) " · 承诺 "
            @if t.limit_days == 0 { "即办" } @else { (t.limit_days) " 个工作日" }
            " · 已用 " (t.used) " 个工作日"
            @if let Some(f) = t.finished {
                " · " (f) " 办结，" @if t.on_time == Some(false) { span.badge.late { "超期" } } @else { "按期" }
            } @else if t.stopped {
                " · " span.badge { "暂停计时（挂起或补正中）" }
            } @else if let Some(due) = t.due {
                " · 剩 " (t.left) " 个 · 到期 " strong { (due) }
                @if t.provisional { span.muted { "（该年工作日历未发布，暂按双休计）" } }
                @match t.warning {
                    Warning::Red => { " " span.badge.red { "红牌：已超期" } },
                    Warning::Yellow => { " " span.badge.yellow { "黄牌：时限将到" } },
                    Warning::None => {},
                }
            }
        }
    }
}

/// 容缺受理: offered where accepting is, for the item's materials the
/// catalogue allows to be missing and that were not received.
fn accept_missing_form(staff: &Staff, c: &CaseState, x: &Extra) -> Markup {
    let may_accept = staff.role().decides() && x.steps.iter().any(|s| matches!(s, Step::Accept));
    let absent: Vec<&proto::catalogue::Material> = x
        .item
        .as_ref()
        .map(|i| i.materials.iter().filter(|m| m.may_be_missing && !c.materials.contains(&m.name)).collect())
        .unwrap_or_default();
    html! {
        @if may_accept && !absent.is_empty() {
            form.actions method="post" action=(format!("/case/{}/accept-missing", c.case_id)) {
                (csrf(staff))
                strong { "容缺受理" } span.muted { "（勾选允许容缺、尚未收取的材料，并约定补交日期）" }
                div.buttons { @for m in &absent {
                    label.check { input type="checkbox" name="missing" value=(m.name); (m.name) }
                } }
                label { "承诺补交日期" input type="date" name="promised" required; }
                label { (text::NOTE) input name="note" maxlength="500"; }
                div.buttons { button.primary type="submit" { "容缺受理" } }
            }
        }
    }
}

/// 好差评 ("一事一评": one per stage) and the follow-ups of poor ones.
fn ratings(staff: &Staff, c: &CaseState, calendar: &proto::calendar::Calendar) -> Markup {
    let rated = |stage| c.staged.iter().any(|r| r.stage == Some(stage));
    let reached = |stage| c.stage_reached(stage);
    let may_rate = |stage| reached(stage) && !rated(stage);
    let today = node::cli::today();
    html! {
        @if !c.ratings.is_empty() || may_rate(proto::event::Stage::Accept) || may_rate(proto::event::Stage::Done) {
            h2 { (text::RATE) }
        }
        @for (r, staged) in c.ratings.iter().map(|r| (r, c.staged.iter().find(|s| s.event == r.event))) {
            p { (text::rating(r.level))
                @if let Some(s) = staged {
                    span.muted { "（" (s.stage.map(|s| if s == proto::event::Stage::Accept { "受理" } else { "办结" }).unwrap_or("")) "环节 · " (s.channel) "）" }
                }
                @if !r.note.is_empty() { "：" (r.note) } }
        }
        @for f in &c.followups {
            @let due = calendar.add_working_days(proto::calendar::Day::of_ms(f.opened.wall_ms), node::ledger::FOLLOW_UP_DAYS);
            div class=(if f.closed.is_none() { "banner warn" } else { "banner ok" }) {
                strong { "整改回访 " } (text::rating(f.level)) "，" (crate::when(f.opened.wall_ms)) " 评价"
                @match &f.closed {
                    Some((_, response, callback)) => { "。已回访：" (response) @if !callback.is_empty() { "；回访结果：" (callback) } },
                    None => {
                        "，须在 " (due) " 前整改回访。"
                        @if today > due { " " span.badge.red { "回访已超期" } }
                        form.row method="post" action=(format!("/case/{}/followup", c.case_id)) {
                            (csrf(staff))
                            input name="response" placeholder="整改情况" required maxlength="500";
                            input name="callback" placeholder="回访结果" maxlength="500";
                            button type="submit" { "完成回访" }
                        }
                    }
                }
            }
        }
        @if may_rate(proto::event::Stage::Accept) || may_rate(proto::event::Stage::Done) {
            form.row method="post" action=(format!("/case/{}/rate", c.case_id)) {
                (csrf(staff))
                select name="stage" {
                    @if may_rate(proto::event::Stage::Accept) { option value="accept" { "受理环节" } }
                    @if may_rate(proto::event::Stage::Done) { option value="done" selected { "办结环节" } }
                }
                select name="level" { @for l in 1..=5 { option value=(l) { (text::rating(l)) } } }
                select name="channel" { @for ch in node::ledger::RATING_CHANNELS { option value=(ch) { (ch) } } }
                input name="note" placeholder="评价内容（可不填）" maxlength="200";
                button type="submit" { (text::RATE) }
            }
        }
    }
}

fn render(app: &App, staff: &Staff, c: &CaseState, x: &Extra) -> Html {
    let s = node::view::CaseSummary::from(c);
    let open = !c.state.is_terminal();
    let title = format!("{} {}", text::CASE_ID, c.case_id);
    let body = html! {
        @if x.saved { p.banner.ok { (text::WRITTEN) } }
        @if let Some(e) = &x.error { p.banner.error role="alert" { (e) } }
        @if let Some((m, _)) = &x.file_error { p.banner.error { "“" (m) "”" (text::FILE_NOT_SAVED) } }
        @if let Some(to) = &x.moved_to {
            p.banner.warn { "该村已由县里划归 " (x.topology.get(to).map_or(to.as_str(), |n| n.name.as_str())) "（" (to) "）管辖：本机保留划转前的记录，不再接收此后的新记录。" }
        }
        div.case-head {
            span class=(format!("state big s-{}", s.state)) { (text::state(c.state)) }
            strong { (s.item_name) } span.code { " " (s.item) }
            div.muted { (text::HOME) "：" (node_name(&x.topology, &c.home)) " · " (text::HANDLER) "："
                (node_name(&x.topology, &c.handler)) " · " (text::CREATED) "：" (crate::when(c.created.map(|h| h.wall_ms).unwrap_or(0))) }
            @if let Some(t) = &x.timing { (timing_line(t)) }
            div.small {
                @if x.county_received {
                    span.badge.ok title=(text::COUNTY_RECEIVED_HINT) { (text::COUNTY_RECEIVED) }
                } @else {
                    span.badge.maybe title=(text::COUNTY_NOT_YET_HINT) { (text::COUNTY_NOT_YET) }
                }
            }
            div.links {
                a href=(format!("/case/{}/receipt", c.case_id)) { (text::RECEIPT) }
                " · " a href=(format!("/case/{}/notice", c.case_id)) { (text::NOTICE) }
                @if c.history.iter().any(|h| !h.superseded && h.event.origin.node() == *app.me()
                    && matches!(&h.happened, proto::fold::Happened::Step { step: Step::Issue, .. })) {
                    " · " a href=(format!("/case/{}/licence", c.case_id)) { "电子证照" }
                }
                @if let Some(proto::event::FieldValue::Text(b)) = c.fields.get("bundle").and_then(|v| v.first()) {
                    " · " a href=(format!("/bundle/{b}")) { "一件事 " (b) }
                }
            }
        }
        @if !c.outstanding().is_empty() {
            @let promised = c.tolerated.as_ref().map(|t| t.promised.to_string()).unwrap_or_default();
            @if c.termination_due(node::cli::today()) {
                div.banner.error { "容缺受理的材料（" (c.outstanding().join("、")) "）未在承诺日期 " (promised) " 前补交，应予终止（或收取材料后继续办理）。" }
            } @else {
                div.banner.warn { "容缺受理：尚缺 " (c.outstanding().join("、")) "，申请人承诺 " (promised) " 前补交。" }
            }
        }
        @if !c.conflicts.is_empty() {
            div.banner.warn { strong { (text::FLAGGED) } ul { @for k in &c.conflicts { li { (conflict_words(k)) } } } }
        }
        div.columns {
            section {
                h2 { "申请信息" }
                (fields(staff, c, &x.revealed))
                h2 { (text::MATERIALS) }
                (materials(staff, c, x, open))
                h2 { (text::ACTIONS) }
                (actions(staff, c, &x.steps, &x.topology))
                (accept_missing_form(staff, c, x))
                (ratings(staff, c, &x.calendar))
            }
            section {
                h2 { (text::HISTORY) }
                (history(c, &x.topology))
            }
        }
    };
    page(app, staff, &title, "", body)
}

async fn extra(app: &Arc<App>, c: &CaseState) -> Result<Extra, DeskError> {
    let case = c.case_id.clone();
    let st = c.clone();
    app.with(move |l| {
        // Another handle (the node's server, `sync`) may have stored the
        // county's changes since.
        l.reload()?;
        let steps = l.allowed_steps(&case)?;
        let item = l.item_of(&st).cloned();
        Ok(Extra {
            moved_to: l.moved_to(&st.home),
            steps,
            topology: l.topology().clone(),
            item,
            revealed: BTreeMap::new(),
            error: None,
            saved: false,
            timing: l.timing(&st, node::cli::today())?,
            calendar: l.calendar()?,
            held: st.files.iter().map(|f| f.file.hash).filter(|h| l.holds_file(h)).collect(),
            county_received: l.county_received(&st)?,
            licences: {
                let mut out = Vec::new();
                for c in &st.licences {
                    let lic = proto::licence::Licence::from(c.licence.clone());
                    let check = l.verify_licence(&lic)?.map_err(|e| e.to_string());
                    out.push((c.material.clone(), lic.terms, check));
                }
                out
            },
            county_files: {
                let mut set = BTreeSet::new();
                for f in &st.files {
                    if l.county_has_file(&st, f)? {
                        set.insert(f.file.hash);
                    }
                }
                set
            },
            file_error: None,
        })
    })
    .await
}

#[derive(Deserialize, Default)]
pub struct Shown {
    saved: Option<String>,
}

pub async fn show(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    Query(q): Query<Shown>,
) -> Result<Html, DeskError> {
    let c = load_case(&app, &id).await?;
    let mut x = extra(&app, &c).await?;
    x.saved = q.saved.is_some();
    Ok(render(&app, &staff, &c, &x))
}

/// Runs a write for a case this desk may show; a refusal comes back as the
/// case page with the reason, status 409, and nothing written.
async fn write(
    app: &Arc<App>,
    staff: &Staff,
    id: &str,
    f: impl FnOnce(&mut node::Ledger, &CaseId, &str) -> node::error::Result<()> + Send + 'static,
) -> Result<Response, DeskError> {
    write_at(app, staff, id, None, f).await
}

/// [`write`] of a material's file: a refusal is shown beside the upload
/// field of material `at`.
pub(super) async fn write_at(
    app: &Arc<App>,
    staff: &Staff,
    id: &str,
    at: Option<String>,
    f: impl FnOnce(&mut node::Ledger, &CaseId, &str) -> node::error::Result<()> + Send + 'static,
) -> Result<Response, DeskError> {
    let c = load_case(app, id).await?;
    let (case, actor) = (c.case_id.clone(), staff.actor());
    let result = app.with(move |l| Ok(f(l, &case, &actor))).await?;
    match result {
        Ok(()) => Ok(saved(&format!("/case/{}", c.case_id))),
        Err(e) if e.declined().is_some() => {
            let (_, message) = text::declined(&e);
            match at {
                Some(material) => refused_at(app, staff, id, &material, message, StatusCode::CONFLICT).await,
                None => refused(app, staff, id, message, StatusCode::CONFLICT).await,
            }
        }
        Err(e) => Err(DeskError::Internal(e.into())),
    }
}

/// The case page again with a refusal's reason at the top.
pub(super) async fn refused(
    app: &Arc<App>,
    staff: &Staff,
    id: &str,
    message: String,
    status: StatusCode,
) -> Result<Response, DeskError> {
    let c = load_case(app, id).await?;
    let mut x = extra(app, &c).await?;
    x.error = Some(message);
    let mut res = render(app, staff, &c, &x).into_response();
    *res.status_mut() = status;
    Ok(res)
}

/// The case page again with a refused file's reason beside the upload
/// field of its material (and at the top, for a material not listed).
pub(super) async fn refused_at(
    app: &Arc<App>,
    staff: &Staff,
    id: &str,
    material: &str,
    message: String,
    status: StatusCode,
) -> Result<Response, DeskError> {
    let c = load_case(app, id).await?;
    let mut x = extra(app, &c).await?;
    let listed = x.item.as_ref().is_some_and(|i| i.materials.iter().any(|m| m.name == material))
        || c.materials.iter().any(|m| m == material)
        || c.files.iter().any(|f| f.material == material);
    if listed {
        x.file_error = Some((material.to_string(), message));
    } else {
        x.error = Some(message);
    }
    let mut res = render(app, staff, &c, &x).into_response();
    *res.status_mut() = status;
    Ok(res)
}

#[derive(Deserialize)]
pub struct StepForm {
    #[serde(default)]
    step: String,
    #[serde(default)]
    note: String,
}

pub async fn step(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    c: Checked<StepForm>,
) -> Result<Response, DeskError> {
    let step = parse_step(&c.form.step).ok_or_else(|| DeskError::BadRequest("未知的操作".into()))?;
    if !may(c.staff.role(), &step) {
        return Err(DeskError::Forbidden(text::FORBIDDEN_ROLE.into()));
    }
    let note = c.form.note.trim().to_string();
    write(&app, &c.staff, &id, move |l, case, actor| l.step(actor, case, step, &note).map(drop)).await
}

#[derive(Deserialize)]
pub struct FieldForm {
    field: String,
    index: usize,
}

/// 采用此值: writes one of a field's concurrent values again, which
/// supersedes them all.
pub async fn field(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    c: Checked<FieldForm>,
) -> Result<Response, DeskError> {
    let (field, index) = (c.form.field.clone(), c.form.index);
    write(&app, &c.staff, &id, move |l, case, actor| {
        let values = l.reveal(case, &field)?;
        let value = values
            .get(index)
            .cloned()
            .ok_or_else(|| node::Declined::Invalid("the value chosen is no longer one of the field's values".into()))?;
        l.edit(actor, case, &field, &value).map(drop)
    })
    .await
}

#[derive(Deserialize)]
pub struct MaterialForm {
    name: String,
    action: String,
}

pub async fn material(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    c: Checked<MaterialForm>,
) -> Result<Response, DeskError> {
    let (name, add) = (c.form.name.clone(), c.form.action == "add");
    write(&app, &c.staff, &id, move |l, case, actor| {
        if add {
            l.add_material(actor, case, &name).map(drop)
        } else {
            l.remove_material(actor, case, &name).map(drop)
        }
    })
    .await
}

#[derive(Deserialize)]
pub struct RateForm {
    level: u8,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    note: String,
}

pub async fn rate(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    c: Checked<RateForm>,
) -> Result<Response, DeskError> {
    let (level, note) = (c.form.level, c.form.note.trim().to_string());
    if !(1..=5).contains(&level) {
        return Err(DeskError::BadRequest("评价等级应为 1–5".into()));
    }
    let stage = proto::event::Stage::parse(&c.form.stage);
    let channel = c.form.channel.clone();
    write(&app, &c.staff, &id, move |l, case, actor| l.rate(actor, case, level, stage, &channel, &note).map(drop)).await
}

#[derive(Deserialize)]
pub struct FollowupForm {
    #[serde(default)]
    response: String,
    #[serde(default)]
    callback: String,
}

/// Closes a case's open follow-up (整改回访).
pub async fn followup(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    c: Checked<FollowupForm>,
) -> Result<Response, DeskError> {
    let (response, callback) = (c.form.response.clone(), c.form.callback.clone());
    write(&app, &c.staff, &id, move |l, case, actor| l.close_followup(actor, case, &response, &callback).map(drop))
        .await
}

#[derive(Deserialize)]
pub struct RevealForm {
    field: String,
}

/// Shows a personal field in clear, once, and logs who asked.
pub async fn reveal(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    c: Checked<RevealForm>,
) -> Result<Html, DeskError> {
    if PersonalKind::of_field(&c.form.field).is_none() {
        return Err(DeskError::BadRequest("该信息不需要单独查看".into()));
    }
    let case = load_case(&app, &id).await?;
    let (cid, field, login) = (case.case_id.clone(), c.form.field.clone(), c.staff.member.login.clone());
    let (home, me) = (case.home.clone(), app.me().clone());
    let clear = app
        .with(move |l| {
            // In scope still, under the map this step reloaded: a village
            // that moved away since `load_case` is not revealed.
            if !l.topology().is_within(&home, &me) {
                return Ok(None);
            }
            let clear = l.reveal(&cid, &field)?;
            node::staff::log_access(l.store().conn(), &login, &cid.0, &field, node::wall_clock_ms())?;
            Ok(Some(clear))
        })
        .await?
        .ok_or(DeskError::NotFound)?;
    let mut x = extra(&app, &case).await?;
    x.revealed.insert(c.form.field.clone(), clear);
    Ok(render(&app, &c.staff, &case, &x))
}

#[derive(Deserialize)]
pub struct AcceptMissingForm {
    #[serde(default)]
    promised: String,
    #[serde(default)]
    note: String,
}

/// 容缺受理 from the case page.
pub async fn accept_missing(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    c: Checked<AcceptMissingForm>,
) -> Result<Response, DeskError> {
    c.staff.require(Role::Reviewer)?;
    let missing: Vec<String> = c.pairs.iter().filter(|(k, _)| k == "missing").map(|(_, v)| v.clone()).collect();
    let promised = proto::calendar::Day::parse(&c.form.promised);
    let note = c.form.note.trim().to_string();
    write(&app, &c.staff, &id, move |l, case, actor| {
        let promised = promised.ok_or_else(|| node::Declined::Invalid("请填写承诺补交日期（年-月-日）".into()))?;
        l.accept_missing(actor, case, missing, promised, &note).map(drop)
    })
    .await
}
