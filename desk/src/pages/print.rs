//! Print views on A4: 受理回执 (receipt) and 一次性告知书 (everything still
//! needed, listed once: the materials with neither a tick nor a file).
//! Personal data masked.

use super::{load_case, node_name};
use crate::session::Staff;
use crate::{chart, text, App, DeskError, Html};
use axum::extract::{Path, Query, State};
use maud::{html, Markup, DOCTYPE};
use proto::fold::CaseState;
use serde::Deserialize;
use std::sync::Arc;

fn sheet(title: &str, back: &str, body: Markup) -> Html {
    Html(html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                title { (title) }
                link rel="stylesheet" href="/static/desk.css";
                script src="/static/desk.js" defer {}
            }
            body.print {
                div.no-print.print-bar {
                    a href=(back) { "返回办件" }
                    button type="button" data-print="1" { (text::PRINT) }
                    span.muted { "（也可用浏览器的“打印”，纸张 A4）" }
                }
                article.a4 { (body) }
            }
        }
    })
}

struct Facts {
    window: String,
    item: Option<proto::catalogue::Item>,
}

async fn facts(app: &Arc<App>, c: &CaseState) -> Result<Facts, DeskError> {
    let (item, version, home) = (c.item().to_string(), c.create.as_ref().map(|c| c.catalogue_version), c.home.clone());
    app.read(move |l| {
        let cat = l.catalogue();
        Ok(Facts {
            window: node_name(l.topology(), &home),
            item: if version == Some(cat.version) { cat.item(&item).cloned() } else { None },
        })
    })
    .await
}

/// Whether a material is in hand: ticked (the paper seen at the window)
/// or with a current file.
fn received(c: &CaseState, material: &str) -> bool {
    c.materials.iter().any(|m| m == material) || c.files.iter().any(|f| f.material == material && f.is_current())
}

fn applicant(c: &CaseState) -> String {
    node::view::CaseSummary::from(c).applicant
}

fn promised(c: &CaseState, item: Option<&proto::catalogue::Item>) -> String {
    match (item, c.create.as_ref()) {
        (Some(i), _) if i.case_kind == 1 => text::SAME_DAY.into(),
        (_, Some(cr)) => format!("自受理之日起 {} 个工作日内办结", cr.promised_days),
        _ => "—".into(),
    }
}

#[derive(Deserialize, Default)]
pub struct Fresh {
    new: Option<String>,
}

pub async fn receipt(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    Query(q): Query<Fresh>,
) -> Result<Html, DeskError> {
    let c = load_case(&app, &id).await?;
    let f = facts(&app, &c).await?;
    let first = c.history.first();
    let taker = first.map(|h| h.actor.clone()).unwrap_or_default();
    let missing: Vec<String> = f
        .item
        .as_ref()
        .map(|i| i.materials.iter().filter(|m| m.required && !received(&c, &m.name)).map(|m| m.name.clone()).collect())
        .unwrap_or_default();
    let back = format!("/case/{}", c.case_id);
    let body = html! {
        @if q.new.is_some() { p.no-print.banner.ok { "收件成功，办件已保存。请打印回执交申请人。" } }
        header.sheet-head { h1 { (text::RECEIPT) } p { (f.window) } }
        div.receipt {
            table.sheet { tbody {
                tr { th { (text::CASE_ID) } td { strong { (c.case_id) } } }
                tr { th { (text::ITEM) } td { (c.create.as_ref().map(|c| c.item_name.clone()).unwrap_or_default()) "（" (c.item()) "）" } }
                tr { th { (text::APPLICANT) } td { (applicant(&c)) } }
                @if let Some(v) = c.fields.get("id_number").and_then(|v| v.first()) { tr { th { (text::ID_NUMBER) } td { (v.display()) } } }
                tr { th { "已收材料" } td { @if c.materials.is_empty() { "无" } @else { (c.materials.join("、")) } } }
                @if !missing.is_empty() { tr { th { "尚缺材料" } td { (missing.join("、")) "（详见一次性告知书）" } } }
                tr { th { "办理时限" } td { (promised(&c, f.item.as_ref())) } }
                tr { th { (text::CREATED) } td { (crate::when(c.created.map(|h| h.wall_ms).unwrap_or(0))) } }
                tr { th { "收件窗口" } td { (f.window) } }
                tr { th { "经办人" } td { (taker) } }
            } }
            figure.qr { (chart::qr(&c.case_id.0)) figcaption { "凭办件编号查询办理进度" } }
        }
        p.small { "请妥善保管本回执。办理结果将按约定方式告知；如需补正材料，工作人员将一次性告知。" }
        footer.sign { span { "窗口（盖章）" } span { "日期：" (crate::day(node::wall_clock_ms())) } span { "打印：" (staff.member.name) } }
    };
    Ok(sheet(text::RECEIPT, &back, body))
}

pub async fn notice(State(app): State<Arc<App>>, staff: Staff, Path(id): Path<String>) -> Result<Html, DeskError> {
    let c = load_case(&app, &id).await?;
    let f = facts(&app, &c).await?;
    let needed: Vec<&proto::catalogue::Material> =
        f.item.as_ref().map(|i| i.materials.iter().filter(|m| !received(&c, &m.name)).collect()).unwrap_or_default();
    let back = format!("/case/{}", c.case_id);
    let body = html! {
        header.sheet-head { h1 { (text::NOTICE) } p { (f.window) } }
        p { (applicant(&c)) "：" }
        p.indent { "您申请办理的“" (c.create.as_ref().map(|c| c.item_name.clone()).unwrap_or_default()) "”（办件编号 "
            (c.case_id) "），经审查，尚需提交以下材料。现一次性告知如下：" }
        @if needed.is_empty() { p.indent { "申请材料已齐全，无需补充。" } } @else {
            ol.needed { @for m in &needed {
                li { (m.name)
                    @if m.required && m.may_be_missing { "（必交，可容缺后补）" }
                    @else if m.required { "（必交）" } @else { "（如有请提供）" } }
            } }
        }
        p.indent { "请备齐上述材料后到" (f.window) "办理。材料齐全后，我们将依法及时办理。" }
        footer.sign { span { "窗口（盖章）" } span { "经办人：" (staff.member.name) } span { "日期：" (crate::day(node::wall_clock_ms())) } }
    };
    Ok(sheet(text::NOTICE, &back, body))
}

/// A bundle this desk may show (its cases in this node's scope: see
/// [`load_case`]), the taking window's name and its first case.
async fn load_bundle(app: &Arc<App>, id: String) -> Result<(node::view::BundleView, String, CaseState), DeskError> {
    let me = app.me().clone();
    let (view, window) = app.read(move |l| Ok((node::view::bundle(l, &id)?, node_name(l.topology(), &me)))).await?;
    let v = view.ok_or(DeskError::NotFound)?;
    let first = load_case(app, &v.cases[0].case_id.0).await?;
    Ok((v, window, first))
}

/// A 一件事 bundle: its cases and state, printable as one receipt.
pub async fn bundle(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    Query(q): Query<Fresh>,
) -> Result<Html, DeskError> {
    let (v, window, first) = load_bundle(&app, id).await?;
    let body = html! {
        @if q.new.is_some() { p.no-print.banner.ok { "一件事收件成功：已为每个事项各建一件，并联办理。请打印回执交申请人。" } }
        header.sheet-head { h1 { (text::RECEIPT) } p { (window) } }
        div.receipt {
            table.sheet { tbody {
                tr { th { "一件事" } td { strong { (v.name) } "（" (v.code) "）" } }
                tr { th { "受理编号" } td { strong { (v.bundle_id) } } }
                tr { th { (text::APPLICANT) } td { (applicant(&first)) } }
                @if let Some(idn) = first.fields.get("id_number").and_then(|x| x.first()) { tr { th { (text::ID_NUMBER) } td { (idn.display()) } } }
                tr { th { "办理进度" } td { @if v.state == "done" { "已全部办结" } @else { "办理中" } } }
                tr { th { "已收材料" } td { (first.materials.join("、")) } }
            } }
            figure.qr { (chart::qr(&v.bundle_id)) figcaption { "凭受理编号查询办理进度" } }
        }
        table.cases { thead { tr { th { (text::CASE_ID) } th { (text::ITEM) } th { (text::STATE) } th { (text::HANDLER) } } }
            tbody { @for c in &v.cases { tr {
                td { a.no-print-link href=(format!("/case/{}", c.case_id)) { (c.case_id) } }
                td { (c.item_name) } td { (text::state(proto::workflow::State::parse(c.state).unwrap_or(proto::workflow::State::Received))) }
                td { (c.handler) }
            } } } }
        @if v.state == "done" { p.no-print { a href=(format!("/bundle/{}/result", v.bundle_id)) { "打印一件事办理结果告知书" } } }
        footer.sign { span { "窗口（盖章）" } span { "日期：" (crate::day(node::wall_clock_ms())) } span { "打印：" (staff.member.name) } }
    };
    Ok(sheet("一件事受理回执", "/queue", body))
}

/// The single result notice of a 一件事 bundle, once every case is done.
pub async fn bundle_result(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Html, DeskError> {
    let (v, window, first) = load_bundle(&app, id).await?;
    if v.state != "done" {
        return Err(DeskError::BadRequest("一件事尚未全部办结，办结后才能出具结果告知书。".into()));
    }
    let body = html! {
        header.sheet-head { h1 { "办理结果告知书" } p { (window) } }
        p { (applicant(&first)) "：" }
        p.indent { "您申请办理的“" (v.name) "”（受理编号 " (v.bundle_id) "）已全部办结，结果如下：" }
        table.cases { thead { tr { th { (text::ITEM) } th { (text::CASE_ID) } th { "办理结果" } } }
            tbody { @for c in &v.cases { tr {
                td { (c.item_name) } td { (c.case_id) }
                td { (text::state(proto::workflow::State::parse(c.state).unwrap_or(proto::workflow::State::Received))) }
            } } } }
        p.indent { "如对结果有异议，可依法申请行政复议或提起行政诉讼。欢迎对本次服务进行评价。" }
        footer.sign { span { "窗口（盖章）" } span { "经办人：" (staff.member.name) } span { "日期：" (crate::day(node::wall_clock_ms())) } }
    };
    Ok(sheet("一件事办理结果告知书", &format!("/bundle/{}", v.bundle_id), body))
}

/// 电子证照: the licence of a case this node issued, printable with a QR
/// code of the signed document (any window checks it offline).
pub async fn licence(State(app): State<Arc<App>>, _staff: Staff, Path(id): Path<String>) -> Result<Html, DeskError> {
    let c = load_case(&app, &id).await?;
    let case = c.case_id.clone();
    let (made, issuer) = app.read(move |l| Ok((l.licence(&case), node_name(l.topology(), l.me())))).await?;
    let licence = match made {
        Ok(l) => l,
        Err(e) => return Err(DeskError::BadRequest(text::declined(&e).1)),
    };
    let signed = serde_json::to_string(&licence).map_err(|e| DeskError::Internal(e.into()))?;
    let t = &licence.terms;
    let back = format!("/case/{}", c.case_id);
    let body = html! {
        header.sheet-head { h1 { "电子证照" } p { (t.result) } }
        div.receipt {
            table.sheet { tbody {
                tr { th { "证照名称" } td { strong { (t.result) } } }
                tr { th { (text::ITEM) } td { (t.item_name) "（" (t.item) "）" } }
                tr { th { "持证人" } td { (t.holder) } }
                tr { th { (text::ID_NUMBER) } td { (t.holder_id) } }
                tr { th { (text::CASE_ID) } td { (t.case) } }
                tr { th { "签发节点" } td { (issuer) " (" (t.issuer) ")" } }
                tr { th { "签发日期" } td { (t.issued) } }
                tr { th { "有效期" } td { @match t.valid_until { Some(d) => (d), None => "长期" } } }
            } }
            figure.qr { (chart::qr(&signed)) figcaption { "扫码离线核验（verify-licence）" } }
        }
        p.small { "本证照由签发节点以县政务服务中心登记的密钥签名；任何窗口可离线核验，被篡改或由已吊销密钥签发的证照核验不通过。" }
    };
    Ok(sheet("电子证照", &back, body))
}
