//! Logins, cookie sessions and CSRF tokens.
//!
//! A session is a random token in an HttpOnly, SameSite=Strict cookie; the
//! server keeps only its SHA-256, with the staff member, a CSRF token and an
//! expiry. Every form carries the session's CSRF token and every POST is
//! checked against it before anything else ([`Checked`]). The login form,
//! before any session, is tied to a short-lived cookie the same way.

use crate::{App, DeskError};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use node::staff::{Member, Role};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The session cookie's name: `desk_<node>`, so desks of several nodes on
/// one machine (the demo) keep their own sessions in one browser.
pub fn cookie_name(node: &proto::NodeId) -> String {
    format!("desk_{}", node.base())
}
/// The login form's cookie.
pub fn login_cookie_name(node: &proto::NodeId) -> String {
    format!("desk_login_{}", node.base())
}
/// How long a session lasts without a new login: a working day.
pub const SESSION_MS: u64 = 10 * 60 * 60 * 1000;
/// Most sessions held at once (the oldest go first).
const MAX_SESSIONS: usize = 4096;

/// A logged-in staff member, as the handlers see them.
#[derive(Debug, Clone)]
pub struct Staff {
    pub member: Member,
    pub csrf: String,
    token_hash: [u8; 32],
}

impl Staff {
    pub fn actor(&self) -> String {
        self.member.actor()
    }
    pub fn role(&self) -> Role {
        self.member.role
    }
    /// Refuses with 403 unless the member's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), DeskError> {
        if self.member.role >= role {
            Ok(())
        } else {
            Err(DeskError::Forbidden(crate::text::FORBIDDEN_ROLE.into()))
        }
    }
}

struct Held {
    login: String,
    csrf: String,
    expires_ms: u64,
}

/// The sessions of one desk, in memory: a restart asks everyone to log in
/// again, which also ends every session of a disabled account.
#[derive(Default)]
pub struct Sessions {
    held: Mutex<HashMap<[u8; 32], Held>>,
}

fn token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal strings, compared in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// Opens a session; returns the cookie token.
    pub fn open(&self, login: &str, now_ms: u64) -> String {
        let t = token();
        let mut held = self.held.lock().expect("sessions");
        held.retain(|_, h| h.expires_ms > now_ms);
        if held.len() >= MAX_SESSIONS {
            if let Some(oldest) = held.iter().min_by_key(|(_, h)| h.expires_ms).map(|(k, _)| *k) {
                held.remove(&oldest);
            }
        }
        held.insert(hash(&t), Held { login: login.into(), csrf: token(), expires_ms: now_ms + SESSION_MS });
        t
    }

    pub fn close(&self, token_hash: &[u8; 32]) {
        self.held.lock().expect("sessions").remove(token_hash);
    }

    fn find(&self, token: &str, now_ms: u64) -> Option<([u8; 32], String, String)> {
        let h = hash(token);
        let held = self.held.lock().expect("sessions");
        held.get(&h).filter(|s| s.expires_ms > now_ms).map(|s| (h, s.login.clone(), s.csrf.clone()))
    }
}

/// A cookie's value from the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A Set-Cookie header value with the attributes every desk cookie has.
pub fn set_cookie(name: &str, value: &str, max_age_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

fn to_login(parts: &Parts) -> Response {
    let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let next = if parts.method == axum::http::Method::GET { next } else { "/" };
    let q = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    Redirect::to(&format!("/login?{q}")).into_response()
}

impl FromRequestParts<Arc<App>> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Staff, Response> {
        let now = node::wall_clock_ms();
        let Some((token_hash, login, csrf)) =
            cookie(&parts.headers, &cookie_name(app.me())).and_then(|t| app.sessions.find(t, now))
        else {
            return Err(to_login(parts));
        };
        // The account is read again on every request: a disabled account
        // or a changed role takes effect at once.
        let member =
            app.read(move |l| node::staff::get(l.store().conn(), &login)).await.map_err(IntoResponse::into_response)?;
        match member {
            Some(member) if !member.disabled => Ok(Staff { member, csrf, token_hash }),
            _ => {
                app.sessions.close(&token_hash);
                Err(to_login(parts))
            }
        }
    }
}

impl Staff {
    pub fn token_hash(&self) -> &[u8; 32] {
        &self.token_hash
    }
}

/// A POST form from a logged-in member whose CSRF token was checked before
/// the form itself was read: a request without the right token is refused
/// with 403 whatever else it holds, and nothing is written.
pub struct Checked<T> {
    pub staff: Staff,
    pub form: T,
    /// Every (name, value) of the form, in order (for repeated names).
    pub pairs: Vec<(String, String)>,
}

/// Largest form a desk accepts.
pub const MAX_FORM: usize = 64 * 1024;

impl<T: DeserializeOwned + Send> FromRequest<Arc<App>> for Checked<T> {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Checked<T>, Response> {
        let (mut parts, body) = req.into_parts();
        let staff = Staff::from_request_parts(&mut parts, app).await?;
        urlencoded(staff, body).await
    }
}

/// Reads an `application/x-www-form-urlencoded` form, its token checked
/// before anything in it is used.
async fn urlencoded<T: DeserializeOwned>(staff: Staff, body: axum::body::Body) -> Result<Checked<T>, Response> {
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| DeskError::TooLarge.into_response())?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| DeskError::BadRequest(crate::text::BAD_FORM.into()).into_response())?;
    let given = pairs.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or("");
    if !same(given, &staff.csrf) {
        return Err(forbidden_csrf());
    }
    let form = serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| DeskError::BadRequest(format!("表单内容不完整：{e}")).into_response())?;
    Ok(Checked { staff, form, pairs })
}

fn forbidden_csrf() -> Response {
    DeskError::Forbidden(crate::text::FORBIDDEN_CSRF.into()).into_response()
}

/// Bytes of a form with files kept in memory at most: one file at the
/// limit per file ([`proto::files::FILE_LIMIT_DEFAULT`], 20 MB) and room
/// for the form's other fields.
pub const MAX_UPLOAD: usize = proto::files::FILE_LIMIT_DEFAULT as usize + 1024 * 1024;

/// Bytes of a form with files read at most: the body limit of the routes
/// that take files (the others take [`MAX_FORM`]). Bytes past
/// [`MAX_UPLOAD`] are read and dropped as they come, so that a browser
/// still sending a file that is too large gets the page saying so (a
/// connection closed mid-upload shows the clerk only a network error);
/// past this, the request is cut off (413).
pub const MAX_UPLOAD_READ: usize = 64 * 1024 * 1024;

/// A file sent with a form.
#[derive(Debug)]
pub struct Sent {
    /// The form field it came in.
    pub field: String,
    /// Its name on the sender's computer, as the browser gives it.
    pub name: String,
    /// Its size in bytes, counted whether or not they were kept.
    pub size: u64,
    /// Its bytes; `None` when they were not kept: a file over the limit
    /// per file, or one past [`MAX_UPLOAD`] for the whole form.
    pub bytes: Option<Vec<u8>>,
}

/// A POST form that may carry files (`multipart/form-data`, or a plain
/// form without them), from a logged-in member, with the CSRF token
/// checked first: in a form with files the token must be the first field
/// (every desk form puts it first, and browsers send fields in order), so
/// nothing else of a request without the right token is read (403).
pub struct Upload<T> {
    pub staff: Staff,
    pub form: T,
    /// Every (name, value) of the form's other fields, in order.
    pub pairs: Vec<(String, String)>,
    /// The files sent, in order; file fields left empty are not listed.
    pub files: Vec<Sent>,
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<App>> for Upload<T> {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Upload<T>, Response> {
        let (mut parts, body) = req.into_parts();
        let staff = Staff::from_request_parts(&mut parts, app).await?;
        let multipart = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
        if !multipart {
            let Checked { staff, form, pairs } = urlencoded(staff, body).await?;
            return Ok(Upload { staff, form, pairs, files: Vec::new() });
        }
        let bad = || DeskError::BadRequest(crate::text::BAD_FORM.into()).into_response();
        let mut parts_of =
            axum::extract::Multipart::from_request(Request::from_parts(parts, body), app).await.map_err(|_| bad())?;
        let failed = |e: axum::extract::multipart::MultipartError| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                DeskError::TooLarge.into_response()
            } else {
                bad()
            }
        };
        // The token first, read with a small limit; nothing else before it.
        let token = match parts_of.next_field().await.map_err(failed)? {
            Some(mut f) if f.name() == Some("csrf") && f.file_name().is_none() => {
                let mut token = Vec::new();
                while let Some(chunk) = f.chunk().await.map_err(failed)? {
                    token.extend_from_slice(&chunk);
                    if token.len() > 256 {
                        return Err(forbidden_csrf());
                    }
                }
                String::from_utf8(token).unwrap_or_default()
            }
            _ => return Err(forbidden_csrf()),
        };
        if !same(&token, &staff.csrf) {
            return Err(forbidden_csrf());
        }
        let mut pairs = vec![("csrf".to_string(), token)];
        let (mut files, mut kept, mut text) = (Vec::new(), 0usize, 0usize);
        while let Some(mut field) = parts_of.next_field().await.map_err(failed)? {
            let name = field.name().unwrap_or_default().to_string();
            let Some(file_name) = field.file_name().map(str::to_string) else {
                let mut value = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(failed)? {
                    text += chunk.len();
                    if text > MAX_FORM {
                        return Err(DeskError::TooLarge.into_response());
                    }
                    value.extend_from_slice(&chunk);
                }
                pairs.push((name, String::from_utf8(value).map_err(|_| bad())?));
                continue;
            };
            let (mut size, mut bytes) = (0u64, Some(Vec::new()));
            while let Some(chunk) = field.chunk().await.map_err(failed)? {
                size += chunk.len() as u64;
                if let Some(held) = &mut bytes {
                    if size > proto::files::FILE_LIMIT_DEFAULT || kept + chunk.len() > MAX_UPLOAD {
                        // Counted from here on, not kept.
                        kept -= held.len();
                        bytes = None;
                    } else {
                        kept += chunk.len();
                        held.extend_from_slice(&chunk);
                    }
                }
            }
            if file_name.is_empty() && size == 0 {
                // A file field left empty.
                continue;
            }
            files.push(Sent { field: name, name: file_name, size, bytes });
        }
        let encoded = serde_urlencoded::to_string(&pairs).map_err(|_| bad())?;
        let form = serde_urlencoded::from_str(&encoded)
            .map_err(|e| DeskError::BadRequest(format!("表单内容不完整：{e}")).into_response())?;
        Ok(Upload { staff, form, pairs, files })
    }
}
