//! For administrators: 隔离区 (quarantined input), 节点 (the county's
//! nodes: last contact, keys), 人员 (staff accounts) and 查阅记录 (who
//! opened whose personal data).

use super::{node_name, page, saved};
use crate::session::{Checked, Staff};
use crate::{csrf, text, App, DeskError, Html};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use node::staff::Role;
use proto::Tier;
use serde::Deserialize;
use std::sync::Arc;

pub async fn quarantine(State(app): State<Arc<App>>, staff: Staff) -> Result<Html, DeskError> {
    staff.require(Role::Admin)?;
    let (rows, topology) =
        app.read(|l| Ok((node::store::quarantine_list(l.store().conn())?, l.topology().clone()))).await?;
    let body = html! {
        p.muted { "隔离的记录没有生效，原样保留，供核查来源（例如被盗设备、伪造的记录或从备份恢复的电脑）。" }
        @if rows.is_empty() { p.empty { "隔离区是空的。" } } @else {
            table.cases {
                thead { tr { th { "时间" } th { "来自" } th { "记录" } th { "类别" } th { "原因（原文）" } } }
                tbody { @for r in rows.iter().rev().take(500) {
                    tr { td { (crate::when(r.at_ms)) } td { (node_name(&topology, &proto::NodeId::new(r.from_node.as_str()))) }
                         td.code { (r.origin) "/" (r.seq) } td { (text::quarantine_kind(&r.kind)) } td.small { (r.reason) } }
                } }
            }
        }
    };
    Ok(page(&app, &staff, text::NAV_QUARANTINE, text::NAV_QUARANTINE, body))
}

pub async fn nodes(State(app): State<Arc<App>>, staff: Staff) -> Result<Html, DeskError> {
    staff.require(Role::Admin)?;
    if app.tier() != Tier::County {
        return Err(DeskError::NotFound);
    }
    let rows = app
        .read(|l| {
            let conn = l.store().conn();
            let contacts = node::query::contacts(conn)?;
            let topo = l.topology();
            let mut rows = Vec::new();
            for n in topo.nodes() {
                let keys = node::store::live_keys(conn, &n.id)?.len();
                let seen = contacts.get(&n.id).copied().max(node::query::latest_work_of(conn, &n.id)?);
                let parent = n.parent.as_ref().map(|p| node_name(topo, p)).unwrap_or_default();
                rows.push((n.id.0.clone(), n.name.clone(), n.tier, parent, keys, seen));
            }
            Ok(rows)
        })
        .await?;
    let body = html! {
        table.cases {
            thead { tr { th { "编码" } th { "名称" } th { "层级" } th { "上级" } th { "有效密钥" } th { "最近联系或记录" } } }
            tbody { @for (id, name, tier, parent, keys, seen) in &rows {
                tr class=[(*keys == 0 && *tier != Tier::County).then_some("flagged")] {
                    td.code { (id) } td { (name) } td { (text::tier(*tier)) } td { (parent) }
                    td { @if *keys == 0 && *tier != Tier::County { "无（未登记或已吊销）" } @else { (keys) } }
                    td { @match seen { Some(s) => (crate::when(*s)), None => "从未" } }
                }
            } }
        }
    };
    Ok(page(&app, &staff, text::NAV_NODES, text::NAV_NODES, body))
}

#[derive(Deserialize, Default)]
pub struct Flash {
    saved: Option<String>,
}

fn staff_page(app: &App, staff: &Staff, list: &[node::staff::Member], error: Option<&str>, saved: bool) -> Html {
    let body = html! {
        @if saved { p.banner.ok { (text::WRITTEN) } }
        @if let Some(e) = error { p.banner.error role="alert" { (e) } }
        table.cases {
            thead { tr { th { "账号" } th { "姓名" } th { "角色" } th { "状态" } th {} } }
            tbody { @for m in list {
                tr { td.code { (m.login) } td { (m.name) } td { (text::role(m.role)) }
                     td { @if m.disabled { "已停用" } @else if m.locked_until > node::wall_clock_ms() { "已锁定至 " (crate::when(m.locked_until)) } @else { "正常" } }
                     td { @if m.login != staff.member.login {
                        form method="post" action="/staff" class="inline" {
                            (csrf(staff)) input type="hidden" name="login" value=(m.login);
                            @if m.disabled { button type="submit" name="action" value="enable" { "启用" } }
                            @else { button.danger type="submit" name="action" value="disable" { "停用" } }
                        }
                     } }
                }
            } }
        }
        h2 { "重置密码" }
        form.row method="post" action="/staff" {
            (csrf(staff))
            input type="hidden" name="action" value="reset";
            select name="login" { @for m in list { option value=(m.login) { (m.name) "（" (m.login) "）" } } }
            input type="password" name="password" required autocomplete="new-password" placeholder="新密码";
            button type="submit" { "重置并解除锁定" }
        }
        h2 { "新增人员" }
        form.stack method="post" action="/staff" {
            (csrf(staff))
            input type="hidden" name="action" value="add";
            label { "账号" input name="login" required maxlength="32" pattern="[A-Za-z0-9._-]{2,32}"; }
            label { "姓名" input name="name" required maxlength="64"; }
            label { "角色" select name="role" {
                option value="clerk" { (text::role(Role::Clerk)) }
                option value="reviewer" { (text::role(Role::Reviewer)) }
                option value="admin" { (text::role(Role::Admin)) }
            } }
            label { "初始密码（至少 " (node::staff::MIN_PASSWORD) " 位）" input type="password" name="password" required autocomplete="new-password"; }
            button.primary type="submit" { "新增" }
        }
    };
    page(app, staff, text::NAV_STAFF, text::NAV_STAFF, body)
}

pub async fn staff(State(app): State<Arc<App>>, staff: Staff, Query(f): Query<Flash>) -> Result<Html, DeskError> {
    staff.require(Role::Admin)?;
    let list = app.read(|l| node::staff::list(l.store().conn())).await?;
    Ok(staff_page(&app, &staff, &list, None, f.saved.is_some()))
}

#[derive(Deserialize)]
pub struct StaffChange {
    action: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

pub async fn staff_change(State(app): State<Arc<App>>, c: Checked<StaffChange>) -> Result<Response, DeskError> {
    c.staff.require(Role::Admin)?;
    let f = c.form;
    if f.login == c.staff.member.login && !matches!(f.action.as_str(), "add" | "reset") {
        return Err(DeskError::BadRequest("不能停用自己的账号。".into()));
    }
    let result = app
        .with(move |l| {
            let conn = l.store().conn();
            Ok(match f.action.as_str() {
                "add" => {
                    let role = Role::parse(&f.role).unwrap_or(Role::Clerk);
                    node::staff::add(conn, f.login.trim(), &f.name, role, &f.password, node::wall_clock_ms()).map(drop)
                }
                "disable" => node::staff::set_disabled(conn, &f.login, true),
                "enable" => node::staff::set_disabled(conn, &f.login, false),
                "reset" => node::staff::set_password(conn, &f.login, &f.password),
                _ => Err(anyhow::anyhow!("unknown action")),
            })
        })
        .await?;
    match result {
        Ok(()) => Ok(saved("/staff")),
        Err(e) => {
            let message = match e.downcast_ref::<node::staff::StaffError>() {
                Some(node::staff::StaffError::BadLogin(_)) => "账号只能由2–32位字母、数字、“.”“_”“-”组成。".to_string(),
                Some(node::staff::StaffError::BadName) => "姓名不能为空，且不超过64个字。".into(),
                Some(node::staff::StaffError::ShortPassword) => format!("密码至少 {} 位。", node::staff::MIN_PASSWORD),
                Some(node::staff::StaffError::Exists(l)) => format!("账号 {l} 已存在。"),
                Some(node::staff::StaffError::Unknown(l)) => format!("没有账号 {l}。"),
                None => return Err(DeskError::Internal(e)),
            };
            let list = app.read(|l| node::staff::list(l.store().conn())).await?;
            let mut res = staff_page(&app, &c.staff, &list, Some(&message), false).into_response();
            *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(res)
        }
    }
}

pub async fn access(State(app): State<Arc<App>>, staff: Staff) -> Result<Html, DeskError> {
    staff.require(Role::Admin)?;
    let rows = app.read(|l| node::staff::access_log(l.store().conn(), 1000)).await?;
    let body = html! {
        p.muted { (text::ACCESS_LOG_NOTE) }
        @if rows.is_empty() { p.empty { "没有记录。" } } @else {
            table.cases { thead { tr { th { "时间" } th { "账号" } th { (text::CASE_ID) } th { "查看内容" } } }
                tbody { @for r in &rows { tr { td { (crate::when(r.at_ms)) } td.code { (r.login) }
                    td { a href=(format!("/case/{}", r.case_id)) { (r.case_id) } } td { (text::access_what(&r.what)) } } } } }
        }
    };
    Ok(page(&app, &staff, text::NAV_ACCESS, text::NAV_ACCESS, body))
}
