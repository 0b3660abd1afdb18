//! 登录 and 退出.

use crate::session::{self, Checked, Staff};
use crate::{text, App, Html};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, DOCTYPE};
use node::staff::LoginRefused;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize, Default)]
pub struct Next {
    #[serde(default)]
    next: String,
}

/// Only a path of this desk is a place to go after login: one leading
/// `/`, no backslash, no control or space characters (browsers drop tabs
/// and newlines from a URL, which would turn `/\t/evil` into `//evil`).
fn safe_next(next: &str) -> &str {
    let plain = next.chars().all(|c| !c.is_control() && !c.is_whitespace() && c != '\\');
    if plain && next.starts_with('/') && !next.starts_with("//") {
        next
    } else {
        "/"
    }
}

fn login_page(app: &App, next: &str, nonce: &str, error: Option<&str>, login: &str) -> Html {
    Html(html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (text::LOGIN) " · " (app.name) }
                link rel="stylesheet" href="/static/desk.css";
            }
            body.login-page {
                main.narrow.card {
                    h1 { (text::APP) }
                    p.node { (app.name) " · " (text::tier(app.tier)) }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    form method="post" action="/login" {
                        input type="hidden" name="nonce" value=(nonce);
                        input type="hidden" name="next" value=(safe_next(next));
                        label { (text::LOGIN_NAME) input name="login" value=(login) autocomplete="username" required autofocus; }
                        label { (text::PASSWORD) input type="password" name="password" autocomplete="current-password" required; }
                        button.primary type="submit" { (text::LOGIN) }
                    }
                }
            }
        }
    })
}

fn with_nonce(app: &App, page: Html, nonce: &str, status: StatusCode) -> Response {
    let cookie = session::set_cookie(&session::login_cookie_name(app.me()), nonce, 3600, app.secure);
    (status, [(header::SET_COOKIE, cookie)], page).into_response()
}

pub async fn form(State(app): State<Arc<App>>, Query(q): Query<Next>) -> Response {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    with_nonce(&app, login_page(&app, &q.next, &nonce, None, ""), &nonce, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
}

pub async fn submit(State(app): State<Arc<App>>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let fresh = hex::encode(rand::random::<[u8; 16]>());
    // The form must come from this desk's own login page (the cookie set
    // with it): a page elsewhere cannot log a browser in as someone else.
    let expected = session::cookie(&headers, &session::login_cookie_name(app.me())).unwrap_or("");
    if expected.is_empty() || !session::same(expected, &f.nonce) {
        let page = login_page(&app, &f.next, &fresh, Some(text::LOGIN_FORM_EXPIRED), &f.login);
        return with_nonce(&app, page, &fresh, StatusCode::FORBIDDEN);
    }
    let (login, password) = (f.login.trim().to_string(), f.password.clone());
    let now = node::wall_clock_ms();
    let refused = match check(&app, &login, password, now).await {
        Ok(Ok(member)) => {
            let token = app.sessions.open(&member.login, now);
            let cookie =
                session::set_cookie(&session::cookie_name(app.me()), &token, session::SESSION_MS / 1000, app.secure);
            let clear = session::set_cookie(&session::login_cookie_name(app.me()), "", 0, app.secure);
            tracing::info!(login = ?member.login, "desk login");
            return (
                axum::response::AppendHeaders([(header::SET_COOKIE, cookie), (header::SET_COOKIE, clear)]),
                Redirect::to(safe_next(&f.next)),
            )
                .into_response();
        }
        Ok(Err(r)) => r,
        Err(e) => return e.into_response(),
    };
    // Debug formatting escapes line breaks: a login name cannot forge log lines.
    tracing::warn!(login = ?f.login, "desk login refused: {refused}");
    let message = match refused {
        LoginRefused::WrongPassword => text::LOGIN_WRONG.to_string(),
        LoginRefused::Disabled => text::LOGIN_DISABLED.to_string(),
        LoginRefused::Locked { until_ms } => {
            format!("密码连续输错次数过多，账号已锁定至 {}，请稍后再试或联系管理员。", crate::when(until_ms))
        }
    };
    let page = login_page(&app, &f.next, &fresh, Some(&message), &f.login);
    with_nonce(&app, page, &fresh, StatusCode::UNAUTHORIZED)
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn logout(State(app): State<Arc<App>>, checked: Checked<Empty>) -> Response {
    let staff: Staff = checked.staff;
    app.sessions.close(staff.token_hash());
    let clear = session::set_cookie(&session::cookie_name(app.me()), "", 0, app.secure);
    ([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}

/// Checks a login: the account is read and updated under the ledger's
/// lock, the password hashed outside it (at most [`HASHING`] at once), so
/// guessing does not hold up other pages. An unknown login is counted and
/// locked like a known one (in memory), so the answers do not tell which
/// logins exist.
async fn check(
    app: &Arc<App>,
    login: &str,
    password: String,
    now: u64,
) -> Result<Result<node::staff::Member, LoginRefused>, crate::DeskError> {
    if let Some(until_ms) = app.unknown_logins.locked(login, now) {
        return Ok(Err(LoginRefused::Locked { until_ms }));
    }
    let name = login.to_string();
    let attempt = app.read(move |l| node::staff::begin_login(l.store().conn(), &name)).await?;
    if let Some(until_ms) = attempt.locked_until(now) {
        return Ok(Err(LoginRefused::Locked { until_ms }));
    }
    let permit = app.hashing.clone().acquire_owned().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let probe = attempt.clone();
    let fits = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        node::staff::password_fits(&probe, &password)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))??;
    if !attempt.known() {
        return Ok(Err(match app.unknown_logins.fail(login, now) {
            Some(until_ms) => LoginRefused::Locked { until_ms },
            None => LoginRefused::WrongPassword,
        }));
    }
    app.with(move |l| node::staff::finish_login(l.store().conn(), &attempt, fits, now)).await
}

/// Most passwords hashed at once (each takes 19 MiB and tens of ms).
pub const HASHING: usize = 2;

/// Wrong passwords for logins that do not exist, counted like real ones.
#[derive(Default)]
pub struct UnknownLogins {
    held: std::sync::Mutex<std::collections::HashMap<String, (u32, u64)>>,
}

impl UnknownLogins {
    fn locked(&self, login: &str, now: u64) -> Option<u64> {
        let held = self.held.lock().expect("unknown logins");
        held.get(login).map(|e| e.1).filter(|until| *until > now)
    }

    /// Counts a failure; returns the lock's end when this one locks.
    fn fail(&self, login: &str, now: u64) -> Option<u64> {
        let mut held = self.held.lock().expect("unknown logins");
        if held.len() > 10_000 {
            held.retain(|_, e| e.1 > now);
            if held.len() > 10_000 {
                held.clear();
            }
        }
        let e = held.entry(login.to_string()).or_insert((0, 0));
        if e.1 != 0 && e.1 <= now {
            *e = (0, 0);
        }
        e.0 += 1;
        if e.0 >= node::staff::MAX_FAILURES {
            *e = (0, now + node::staff::LOCK_MS);
            return Some(e.1);
        }
        None
    }
}

fn password_page(app: &App, staff: &Staff, error: Option<&str>, done: bool) -> Html {
    let body = html! {
        @if done { p.banner.ok { "密码已修改。" } }
        @if let Some(e) = error { p.banner.error role="alert" { (e) } }
        form.stack method="post" action="/password" {
            (crate::csrf(staff))
            label { "当前密码" input type="password" name="current" required autocomplete="current-password"; }
            label { "新密码（至少 " (node::staff::MIN_PASSWORD) " 位）" input type="password" name="new" required autocomplete="new-password"; }
            label { "再输一次新密码" input type="password" name="again" required autocomplete="new-password"; }
            button.primary type="submit" { "修改密码" }
        }
    };
    super::page(app, staff, "修改密码", "", body)
}

#[derive(Deserialize, Default)]
pub struct Done {
    saved: Option<String>,
}

pub async fn password_form(State(app): State<Arc<App>>, staff: Staff, Query(d): Query<Done>) -> Html {
    password_page(&app, &staff, None, d.saved.is_some())
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    again: String,
}

/// A member changes their own password: the current one is checked like a
/// login (a wrong one counts towards the lock), the new one twice.
pub async fn password_change(State(app): State<Arc<App>>, c: Checked<PasswordForm>) -> Response {
    let (staff, f) = (c.staff, c.form);
    let refuse = |message: &str| {
        let mut res = password_page(&app, &staff, Some(message), false).into_response();
        *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        res
    };
    if f.new != f.again {
        return refuse("两次输入的新密码不一致，未做任何修改。");
    }
    if f.new.chars().count() < node::staff::MIN_PASSWORD {
        return refuse(&format!("新密码至少 {} 位，未做任何修改。", node::staff::MIN_PASSWORD));
    }
    let login = staff.member.login.clone();
    match check(&app, &login, f.current.clone(), node::wall_clock_ms()).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return refuse("当前密码不正确，未做任何修改。"),
        Err(e) => return e.into_response(),
    }
    let new = f.new.clone();
    match app.with(move |l| node::staff::set_password(l.store().conn(), &login, &new)).await {
        Ok(()) => super::saved("/password"),
        Err(e) => e.into_response(),
    }
}
