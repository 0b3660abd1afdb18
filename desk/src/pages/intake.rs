//! 收件: pick the item, enter the applicant, tick the materials received
//! and attach their files (scans, photos). On save the case exists with
//! its files and the receipt opens; a refusal (a file too, checked before
//! the case is made) shows its reason beside the field, keeps what was
//! typed, and writes nothing.

use super::page;
use crate::session::{Staff, Upload};
use crate::{csrf, text, App, DeskError};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use node::ledger::NewCase;
use proto::catalogue::Item;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Deserialize, Default)]
pub struct Pick {
    #[serde(default)]
    q: String,
    #[serde(default)]
    item: String,
    #[serde(default)]
    bundle: String,
}

/// Items this desk's windows take, matching `q` (name or code).
fn matching<'a>(items: &'a [Item], q: &str) -> Vec<&'a Item> {
    let q = q.trim();
    items.iter().filter(|i| q.is_empty() || i.name.contains(q) || i.code.contains(q)).collect()
}

fn picker(items: &[Item], bundles: &[proto::catalogue::Bundle], q: &str) -> Markup {
    let shown = matching(items, q);
    html! {
        @if !bundles.is_empty() && q.trim().is_empty() {
            h2 { "一件事一次办" }
            ul.items.bundles { @for b in bundles {
                li { a href=(format!("/intake?bundle={}", b.code)) { span.code { (b.code) } " " (b.name) }
                     span.muted { " · " (b.items.len()) " 个事项，一次填表、一套材料" } }
            } }
            h2 { "单个事项" }
        }
        form.filters method="get" action="/intake" {
            input #item-search type="search" name="q" value=(q) placeholder=(text::PICK_ITEM_HINT) autofocus;
            button type="submit" { (text::SEARCH) }
        }
        p.muted { "共 " span #item-count { (shown.len()) } " 项，点击事项名称开始收件。" }
        ul.items #item-list {
            @for i in shown {
                li data-search=(format!("{} {}", i.code, i.name)) {
                    a href=(format!("/intake?item={}", i.code)) { span.code { (i.code) } " " (i.name) }
                    span.muted { " · " (text::tier(i.decided_by)) "决定 · "
                        @if i.case_kind == 1 { (text::SAME_DAY) } @else { "承诺 " (i.promised_limit_days) " 个工作日" } }
                }
            }
        }
    }
}

/// What was typed, kept when the form comes back with an error.
#[derive(Deserialize, Default, Clone)]
pub struct Intake {
    #[serde(default)]
    item: String,
    #[serde(default)]
    applicant: String,
    #[serde(default)]
    id_number: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    address: String,
    /// The 一件事 bundle taken, if the form is a bundle's.
    #[serde(default)]
    bundle: String,
    /// 帮代办: the agent filing for the applicant, and the authorisation.
    #[serde(default)]
    agent: String,
    #[serde(default)]
    authorisation: String,
    /// Ticked materials (the form sends `material` once per tick, which
    /// is read from the pairs, see [`Checked::pairs`]).
    #[serde(skip)]
    material: Vec<String>,
}

/// What the form is for: one item, or a bundle of several.
enum Taking<'a> {
    Item(&'a Item),
    Bundle(&'a proto::catalogue::Bundle, Vec<&'a Item>),
}

impl Taking<'_> {
    /// The materials to tick: the item's, or every item's once.
    fn materials(&self) -> Vec<proto::catalogue::Material> {
        match self {
            Taking::Item(i) => i.materials.clone(),
            Taking::Bundle(_, items) => {
                let mut out: Vec<proto::catalogue::Material> = Vec::new();
                for m in items.iter().flat_map(|i| i.materials.iter()) {
                    match out.iter_mut().find(|x| x.name == m.name) {
                        Some(x) => {
                            x.required |= m.required;
                            x.may_be_missing &= m.may_be_missing;
                        }
                        None => out.push(m.clone()),
                    }
                }
                out
            }
        }
    }
}

fn form(staff: &Staff, taking: &Taking, input: &Intake, errors: &BTreeMap<String, String>, sent_files: bool) -> Markup {
    let err = |f: &str| errors.get(f).cloned();
    html! {
        @if let Some(e) = err("") { p.banner.error role="alert" { (e) } }
        form.intake method="post" action="/intake" enctype="multipart/form-data" novalidate {
            // The token first: it is checked before any file is read.
            (csrf(staff))
            @match taking {
                Taking::Item(item) => {
                    input type="hidden" name="item" value=(item.code);
                    div.item-head {
                        span.code { (item.code) } " " strong { (item.name) }
                        p.muted { (text::tier(item.decided_by)) "决定 · "
                            @if item.case_kind == 1 { (text::SAME_DAY) } @else { "承诺 " (item.promised_limit_days) " 个工作日办结" }
                            " · " a href="/intake" { "换一个事项" } }
                    }
                }
                Taking::Bundle(b, items) => {
                    input type="hidden" name="bundle" value=(b.code);
                    div.item-head {
                        span.code { (b.code) } " " strong { (b.name) }
                        p.muted { "一次受理以下 " (items.len()) " 个事项，各自由办理部门并联办理：" }
                        ul { @for i in items { li { (i.name) span.muted { " · " (text::tier(i.decided_by)) "决定" } } } }
                        p { a href="/intake" { "换一个事项" } }
                    }
                }
            }
            fieldset {
                legend { "申请人信息" }
                label class=[err("applicant").map(|_| "invalid")] { (text::APPLICANT) " *"
                    input name="applicant" value=(input.applicant) required maxlength="64";
                    @if let Some(e) = err("applicant") { span.field-error { (e) } } }
                label class=[err("id_number").map(|_| "invalid")] { (text::ID_NUMBER) " *"
                    input #id_number name="id_number" value=(input.id_number) required maxlength="18"
                        autocomplete="off" data-check="id-number" inputmode="text";
                    span.field-error #id_number-error { @if let Some(e) = err("id_number") { (e) } } }
                label class=[err("phone").map(|_| "invalid")] { (text::PHONE)
                    input name="phone" value=(input.phone) maxlength="20" inputmode="tel";
                    @if let Some(e) = err("phone") { span.field-error { (e) } } }
                label class=[err("address").map(|_| "invalid")] { (text::ADDRESS)
                    input name="address" value=(input.address) maxlength="200";
                    @if let Some(e) = err("address") { span.field-error { (e) } } }
            }
            fieldset {
                legend { "帮代办（由代办员代为申请时填写）" }
                label { "代办员" input name="agent" value=(input.agent) maxlength="64"; }
                label class=[err("agent").map(|_| "invalid")] { "申请人委托情况（如委托书编号）"
                    input name="authorisation" value=(input.authorisation) maxlength="200";
                    @if let Some(e) = err("agent") { span.field-error { (e) } } }
            }
            fieldset {
                legend { (text::MATERIALS) "（勾选已收取的，可同时上传扫描件或照片）" }
                p.muted.small { (text::FILE_HINT) }
                @if sent_files && !errors.is_empty() { p.muted.small { (text::CHOOSE_FILES_AGAIN) } }
                ul.materials.intake-materials { @for (i, m) in taking.materials().iter().enumerate() {
                    li { label.check {
                        input type="checkbox" name="material" value=(m.name) checked[input.material.contains(&m.name)];
                        (m.name) " "
                        @if m.required && m.may_be_missing { span.badge.maybe { (text::MAY_BE_MISSING) } }
                        @else if m.required { span.badge.req { (text::REQUIRED) } }
                        @else { span.badge { (text::OPTIONAL) } }
                    }
                    (super::files::intake_input(i, &m.name, err(&format!("file{i}")).as_deref())) }
                } }
            }
            button.primary type="submit" { (text::SAVE_CASE) }
        }
    }
}

pub async fn pick(State(app): State<Arc<App>>, staff: Staff, Query(p): Query<Pick>) -> Result<Response, DeskError> {
    let offer = app.offer().await?;
    let items = &offer.items;
    let taking = if !p.bundle.is_empty() {
        offer.bundles.iter().find(|b| b.code == p.bundle).map(|b| bundle_taking(&offer, b))
    } else {
        items.iter().find(|i| i.code == p.item).map(Taking::Item)
    };
    let Some(taking) = taking else {
        if p.item.is_empty() && p.bundle.is_empty() {
            let body = picker(items, &offer.bundles, &p.q);
            return Ok(page(&app, &staff, text::PICK_ITEM, text::NAV_INTAKE, body).into_response());
        }
        return Ok(Redirect::to("/intake").into_response());
    };
    let body = form(&staff, &taking, &Intake::default(), &BTreeMap::new(), false);
    Ok(page(&app, &staff, text::NAV_INTAKE, text::NAV_INTAKE, body).into_response())
}

fn bundle_taking<'a>(offer: &'a crate::Offer, b: &'a proto::catalogue::Bundle) -> Taking<'a> {
    Taking::Bundle(b, b.items.iter().filter_map(|c| offer.items.iter().find(|i| &i.code == c)).collect())
}

pub async fn submit(State(app): State<Arc<App>>, u: Upload<Intake>) -> Result<Response, DeskError> {
    let (staff, mut input) = (u.staff, u.form);
    input.material = u.pairs.iter().filter(|(k, _)| k == "material").map(|(_, v)| v.clone()).collect();
    let offer = app.offer().await?;
    let taking = if !input.bundle.is_empty() {
        offer.bundles.iter().find(|b| b.code == input.bundle).map(|b| bundle_taking(&offer, b))
    } else {
        offer.items.iter().find(|i| i.code == input.item).map(Taking::Item)
    };
    let Some(taking) = taking else {
        if let Some(&version) = offer.cancelled.get(&input.item) {
            // A form opened before the county's newer version arrived.
            let e = node::Error::from(node::Declined::ItemCancelled { item: input.item.clone(), version });
            return Err(DeskError::BadRequest(text::declined(&e).1));
        }
        return Err(DeskError::BadRequest(format!("事项编码 {}{} 不在本窗口可收的事项中。", input.item, input.bundle)));
    };
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    // Only the item's (or bundle's) own materials can be ticked.
    let listed = taking.materials();
    if let Some(m) = input.material.iter().find(|m| !listed.iter().any(|x| &x.name == *m)) {
        errors.insert(String::new(), format!("材料“{m}”不属于该事项。"));
    }
    // Each file is for the material of its field (`file<index>`), checked
    // before the case is made, so that a refused file writes nothing.
    let sent_files = !u.files.is_empty();
    let mut files: Vec<(String, String, Vec<u8>)> = Vec::new();
    for sent in u.files {
        let Some(m) = sent.field.strip_prefix("file").and_then(|i| i.parse::<usize>().ok()).and_then(|i| listed.get(i))
        else {
            errors.insert(String::new(), text::BAD_FORM.into());
            continue;
        };
        let field = sent.field.clone();
        match super::files::precheck(&m.name, sent) {
            Ok((name, bytes)) => files.push((m.name.clone(), name, bytes)),
            Err(why) => {
                errors.insert(field, why);
            }
        }
    }
    if errors.is_empty() {
        let actor = staff.actor();
        // A material with a file is a material received.
        let mut materials = input.material.clone();
        for (m, _, _) in &files {
            if !materials.contains(m) {
                materials.push(m.clone());
            }
        }
        let new = NewCase {
            item: input.item.clone(),
            applicant: input.applicant.clone(),
            id_number: input.id_number.trim().to_uppercase(),
            phone: Some(input.phone.trim().to_string()).filter(|p| !p.is_empty()),
            address: Some(input.address.trim().to_string()).filter(|a| !a.is_empty()),
            materials,
            bundle: None,
            agent: Some((input.agent.trim().to_string(), input.authorisation.trim().to_string()))
                .filter(|(a, _)| !a.is_empty()),
        };
        let bundle = input.bundle.clone();
        let made = app
            .with(move |l| {
                let made = if bundle.is_empty() {
                    l.new_case(&actor, new).map(|c| (format!("/case/{c}/receipt?new=1"), vec![c]))
                } else {
                    l.new_bundle(&actor, &bundle, new).map(|(id, cases)| (format!("/bundle/{id}?new=1"), cases))
                };
                let (to, cases) = match made {
                    Ok(made) => made,
                    Err(e) => return Ok(Err(e)),
                };
                // Each file goes to every case of the bundle whose item
                // takes its material (stored once all the same).
                let mut failed = Vec::new();
                for (material, name, bytes) in &files {
                    for case in &cases {
                        if cases.len() > 1 && !l.case(case)?.materials.contains(material) {
                            continue;
                        }
                        match l.attach_file(&actor, case, material, name, bytes, None) {
                            Ok(_) => {}
                            Err(e) if e.declined().is_some() => {
                                failed.push((case.clone(), format!("{material}：{name}（{}）", text::declined(&e).1)))
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Ok(Ok((to, failed)))
            })
            .await?;
        match made {
            Ok((to, failed)) => {
                let Some((case, _)) = failed.first() else { return Ok(Redirect::to(&to).into_response()) };
                // Refused after the case was made (checked before, so
                // rare): the case page says which files to upload again.
                let lines: Vec<String> = failed.iter().map(|(_, l)| l.clone()).collect();
                let message = format!("{}{}", text::FILE_SAVED_BUT, lines.join("；"));
                return super::case::refused(&app, &staff, &case.0, message, axum::http::StatusCode::CONFLICT).await;
            }
            Err(e) => {
                let (field, message) = text::declined(&e);
                if e.declined().is_none() {
                    return Err(DeskError::Internal(e.into()));
                }
                errors.insert(field.unwrap_or("").to_string(), message);
            }
        }
    }
    let body = form(&staff, &taking, &input, &errors, sent_files);
    let mut res = page(&app, &staff, text::NAV_INTAKE, text::NAV_INTAKE, body).into_response();
    *res.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    Ok(res)
}
