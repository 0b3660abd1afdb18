//! The desks: each tier's web interface, in Chinese, served by the node
//! itself with no network needed (every asset is in the binary).
//!
//! One [`App`] per node process holds the node's ledger behind a mutex; a
//! handler reads or writes it on a blocking thread ([`App::with`]), through
//! the same `node::Ledger` methods the command line uses, so a desk checks
//! and refuses exactly what the CLI does and writes nothing on a refusal.
//! Pages are HTML built with `maud` (every value escaped); forms work
//! without JavaScript; the little script there is only adds conveniences.

pub mod chart;
pub mod export;
mod pages;
pub mod session;
pub mod sync;
pub mod text;
mod tls;

use anyhow::{Context, Result};
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use node::Ledger;
use proto::{NodeId, Tier};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Searches by full ID number one member may make per window.
pub const ID_SEARCHES: usize = 30;
/// The window of [`ID_SEARCHES`]: ten minutes.
pub const ID_SEARCH_WINDOW_MS: u64 = 10 * 60 * 1000;

/// How a desk is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's data directory.
    pub dir: PathBuf,
    /// Where to listen (HTTP or HTTPS, TCP).
    pub listen: SocketAddr,
    /// Serve plain HTTP on an address other than loopback (otherwise such
    /// an address is served over HTTPS with the node's own certificate).
    pub insecure_http: bool,
    /// The peer to sync with (the township or the county), for the sync
    /// page's button and the background sync.
    pub upstream: Option<String>,
    /// Sync with the upstream in the background this often.
    pub sync_every: Option<Duration>,
}

/// A desk's shared state.
pub struct App {
    dir: PathBuf,
    ledger: Mutex<Ledger>,
    me: NodeId,
    tier: Tier,
    /// The node's name in the topology (e.g. 城厢镇).
    name: String,
    sessions: session::Sessions,
    /// Cookies carry `Secure` (served over HTTPS).
    secure: bool,
    sync: sync::SyncState,
    /// What this node's windows take, from the newest catalogue version
    /// held (replaced when a sync brings a newer one).
    offer: std::sync::RwLock<Arc<Offer>>,
    /// Passwords being hashed (see `pages::login::HASHING`).
    hashing: Arc<tokio::sync::Semaphore>,
    unknown_logins: pages::login::UnknownLogins,
    /// Recent searches by full ID number, per member (see
    /// [`App::may_search_id_number`]).
    id_searches: Mutex<std::collections::HashMap<String, Vec<u64>>>,
    /// The dashboard's figures, as last counted (see
    /// `pages::dashboard::DASHBOARD_TTL`).
    dashboard: Mutex<Option<pages::dashboard::Cached>>,
    /// The Host names this desk answers to (`None`: any, for a desk served
    /// over HTTPS beyond loopback).
    hosts: std::sync::OnceLock<Option<Vec<String>>>,
}

/// Why a request was not served. Shown as a page in Chinese.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error("not found")]
    NotFound,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("body too large")]
    TooLarge,
    #[error("too many requests: {0}")]
    TooMany(String),
    /// Not here, with the reason (a material file not synced here yet).
    #[error("not here: {0}")]
    Missing(String),
    /// A material file whose stored bytes do not match its hash.
    #[error("a damaged file")]
    Damaged,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for DeskError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            DeskError::NotFound => (StatusCode::NOT_FOUND, text::NOT_FOUND.to_string()),
            DeskError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            DeskError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            DeskError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "提交的内容过大，未做任何修改。".to_string()),
            DeskError::TooMany(m) => (StatusCode::TOO_MANY_REQUESTS, m.clone()),
            DeskError::Missing(m) => (StatusCode::NOT_FOUND, m.clone()),
            DeskError::Damaged => (StatusCode::INTERNAL_SERVER_ERROR, text::FILE_DAMAGED.to_string()),
            DeskError::Internal(e) => {
                tracing::error!("desk: {e:#}");
                (StatusCode::INTERNAL_SERVER_ERROR, text::INTERNAL.to_string())
            }
        };
        let body = html! {
            (DOCTYPE)
            html lang="zh-CN" {
                head { meta charset="utf-8"; title { (text::APP) } link rel="stylesheet" href="/static/desk.css"; }
                body.error-page { main.narrow { h1 { (status.as_u16()) } p.error { (message) } p { a href="/" { "返回首页" } } } }
            }
        };
        (status, Html(body)).into_response()
    }
}

/// An HTML page.
pub struct Html(pub Markup);

impl IntoResponse for Html {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], self.0.into_string()).into_response()
    }
}

/// The catalogue items and 一件事 bundles a node's windows take.
pub struct Offer {
    /// The catalogue version they come from.
    pub version: u32,
    pub items: Vec<proto::catalogue::Item>,
    pub bundles: Vec<proto::catalogue::Bundle>,
    /// Items cancelled, with the version that cancelled them.
    pub cancelled: std::collections::BTreeMap<String, u32>,
}

impl Offer {
    fn of(ledger: &Ledger, tier: Tier) -> Offer {
        let catalogue = ledger.catalogue();
        Offer {
            version: catalogue.version,
            items: catalogue.items.iter().filter(|i| i.accepted_at.contains(&tier)).cloned().collect(),
            bundles: catalogue.bundles.iter().filter(|b| catalogue.bundle_tiers(b).contains(&tier)).cloned().collect(),
            cancelled: ledger.catalogues().cancelled().map(|(c, v)| (c.clone(), v)).collect(),
        }
    }
}

impl App {
    /// What this node's windows take now: the store is read again first
    /// (as every [`App::with`] does), since a sync in another handle (the
    /// node's server, `sync`) may have brought a newer catalogue version.
    pub async fn offer(self: &Arc<Self>) -> Result<Arc<Offer>, DeskError> {
        self.with(|_| Ok(())).await?;
        Ok(self.offer.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Re-reads the store after a sync (another handle wrote it): the
    /// catalogue version new cases are taken under, among others.
    fn refresh(&self, ledger: &mut Ledger) -> Result<()> {
        ledger.reload()?;
        // A catalogue that cannot be read is an error of the request, not
        // a panic of the desk.
        let version = ledger.try_catalogues()?.latest().context("the store holds no catalogue; run verify")?.version;
        if self.offer.read().unwrap_or_else(|p| p.into_inner()).version != version {
            *self.offer.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Offer::of(ledger, self.tier));
        }
        Ok(())
    }

    /// Opens the node's ledger for a desk. Writing asks for the passphrase
    /// now (from `CASE_NODE_PASSPHRASE`, `--passphrase-stdin` or the
    /// terminal), not at the first click.
    pub fn open(dir: &Path, secure: bool, upstream: Option<String>) -> Result<App> {
        let ledger = Ledger::open(dir)?;
        ledger.secrets().context("the desk writes cases, so it needs the node's passphrase")?;
        let me = ledger.me().clone();
        let tier = ledger.identity().node.tier;
        let name = ledger.identity().node.name.clone();
        let offer = std::sync::RwLock::new(Arc::new(Offer::of(&ledger, tier)));
        let sync = sync::SyncState::new(upstream);
        sync.load(&ledger)?;
        Ok(App {
            dir: dir.to_path_buf(),
            ledger: Mutex::new(ledger),
            me,
            tier,
            name,
            sessions: Default::default(),
            secure,
            sync,
            offer,
            hashing: Arc::new(tokio::sync::Semaphore::new(pages::login::HASHING)),
            unknown_logins: Default::default(),
            id_searches: Default::default(),
            hosts: std::sync::OnceLock::new(),
            dashboard: Mutex::new(None),
        })
    }

    /// Runs `f` on the ledger on a blocking thread.
    pub async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Ledger) -> Result<T> + Send + 'static,
    ) -> Result<T, DeskError> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut ledger = app.ledger.lock().unwrap_or_else(|p| p.into_inner());
            // What another handle wrote since (a sync in the node's server
            // or in another process): the county's publications and map (a
            // village moved here), the keys sealed again with a moved
            // village's lane key. A few small reads when nothing changed.
            app.refresh(&mut ledger)?;
            f(&mut ledger)
        })
        .await
        .map_err(|e| DeskError::Internal(anyhow::anyhow!("a desk task failed: {e}")))?
        .map_err(DeskError::Internal)
    }

    /// [`App::with`] for reads; the same lock (one SQLite connection).
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Ledger) -> Result<T> + Send + 'static,
    ) -> Result<T, DeskError> {
        self.with(move |l| f(l)).await
    }

    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// A member may search by full ID number at most [`ID_SEARCHES`] times
    /// in [`ID_SEARCH_WINDOW_MS`]: a masked number shows all but the birth
    /// date, so unlimited searches would recover the whole number. Every
    /// search that finds a case is also written to the access log.
    pub fn may_search_id_number(&self, login: &str, now: u64) -> bool {
        let mut held = self.id_searches.lock().unwrap_or_else(|p| p.into_inner());
        let recent = held.entry(login.to_string()).or_default();
        recent.retain(|t| *t + ID_SEARCH_WINDOW_MS > now);
        if recent.len() >= ID_SEARCHES {
            return false;
        }
        recent.push(now);
        true
    }
    pub fn me(&self) -> &NodeId {
        &self.me
    }
    /// The node's name in the topology.
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Every route of a desk.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login::form).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route("/password", get(pages::login::password_form).post(pages::login::password_change))
        .route("/queue", get(pages::queue::list))
        .route(
            "/intake",
            get(pages::intake::pick).post(pages::intake::submit).layer(DefaultBodyLimit::max(session::MAX_UPLOAD_READ)),
        )
        .route("/case/{id}", get(pages::case::show))
        .route("/case/{id}/step", post(pages::case::step))
        .route("/case/{id}/accept-missing", post(pages::case::accept_missing))
        .route("/case/{id}/field", post(pages::case::field))
        .route("/case/{id}/material", post(pages::case::material))
        .route("/case/{id}/rate", post(pages::case::rate))
        .route("/case/{id}/followup", post(pages::case::followup))
        .route("/case/{id}/reveal", post(pages::case::reveal))
        .route("/case/{id}/files", post(pages::files::upload).layer(DefaultBodyLimit::max(session::MAX_UPLOAD_READ)))
        .route("/case/{id}/files/{hash}", get(pages::files::open))
        .route("/case/{id}/files/{hash}/remove", post(pages::files::remove))
        .route("/case/{id}/receipt", get(pages::print::receipt))
        .route("/bundle/{id}", get(pages::print::bundle))
        .route("/bundle/{id}/result", get(pages::print::bundle_result))
        .route("/case/{id}/notice", get(pages::print::notice))
        .route("/case/{id}/licence", get(pages::print::licence))
        .route("/sync", get(pages::sync::show).post(pages::sync::now))
        .route("/sync/status", get(pages::sync::status))
        .route("/ledger", get(pages::ledger::show))
        .route("/ledger.csv", get(pages::ledger::csv))
        .route("/ledger.xlsx", get(pages::ledger::xlsx))
        .route("/dashboard", get(pages::dashboard::show))
        .route("/followups", get(pages::followups::show))
        .route("/quarantine", get(pages::admin::quarantine))
        .route("/nodes", get(pages::admin::nodes))
        .route("/staff", get(pages::admin::staff).post(pages::admin::staff_change))
        .route("/access", get(pages::admin::access))
        .route("/static/{file}", get(pages::asset))
        .layer(DefaultBodyLimit::max(session::MAX_FORM))
        .layer(axum::middleware::from_fn_with_state(app.clone(), own_host))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// A desk on loopback answers only to loopback names with its port: a web
/// page elsewhere that points a name of its own at 127.0.0.1 (DNS
/// rebinding) gets 421, not the desk.
async fn own_host(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(Some(hosts)) = app.hosts.get() {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return (StatusCode::MISDIRECTED_REQUEST, "this desk answers only to its own address").into_response();
        }
    }
    next.run(req).await
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    // Pages hold personal data: never kept by a shared browser's cache.
    set(h, header::CACHE_CONTROL, "no-store");
    res
}

/// A running desk.
pub struct Desk {
    pub addr: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub app: Arc<App>,
    task: tokio::task::JoinHandle<()>,
}

impl Desk {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }
}

impl Drop for Desk {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a desk on the current tokio runtime.
pub async fn start(opts: Options) -> Result<Desk> {
    let https = !opts.listen.ip().is_loopback() && !opts.insecure_http;
    let dir = opts.dir.clone();
    let upstream = opts.upstream.clone();
    let app = Arc::new(tokio::task::block_in_place(|| App::open(&dir, https, upstream))?);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the desk", opts.listen))?;
    let addr = listener.local_addr()?;
    let port = addr.port();
    let _ = app.hosts.set(if https || !addr.ip().is_loopback() {
        None
    } else {
        Some(vec![format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")])
    });
    let routes = router(app.clone());
    let task = if https {
        let config = tokio::task::block_in_place(|| app.read_tls_config())?;
        let listener = tls::TlsListener::new(listener, config)?;
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, routes).await {
                tracing::error!("desk stopped: {e}");
            }
        })
    } else {
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, routes).await {
                tracing::error!("desk stopped: {e}");
            }
        })
    };
    if let (Some(every), Some(_)) = (opts.sync_every, &opts.upstream) {
        sync::spawn_background(app.clone(), every);
    }
    Ok(Desk { addr, scheme: if https { "https" } else { "http" }, app, task })
}

impl App {
    fn read_tls_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        tls::server_config(ledger.identity(), ledger.secrets()?)
    }
}

/// `desk` command of a village laptop: serves until Ctrl-C.
pub fn serve_blocking(opts: Options) -> Result<()> {
    runtime()?.block_on(async {
        let desk = start(opts).await?;
        announce(&desk);
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn announce(desk: &Desk) {
    println!("desk of {} ({}) at {}/", desk.app.name, desk.app.me, desk.url());
}

/// `serve --desk`: the sync server and the desk in one process, sharing
/// the data directory. With an upstream, the desk runs the periodic
/// upstream sync, so its sync page shows every outcome.
pub fn serve_with_desk(
    dir: &Path,
    listen: &str,
    upstream: Option<(String, Duration)>,
    desk: SocketAddr,
    insecure_http: bool,
) -> Result<()> {
    runtime()?.block_on(async {
        let server = node::sync::start_server(dir, listen).await?;
        println!("{} serving sync on {}", Ledger::open(dir)?.me(), server.addr);
        let desk = start(Options {
            dir: dir.to_path_buf(),
            listen: desk,
            insecure_http,
            upstream: upstream.as_ref().map(|u| u.0.clone()),
            sync_every: upstream.as_ref().map(|u| u.1),
        })
        .await?;
        announce(&desk);
        node::sync::stop_requested().await?;
        drop(server);
        Ok(())
    })
}

/// The page chrome around every page: the node, the staff member, the
/// navigation their tier and role have, and a clock warning when there is
/// one.
pub(crate) fn layout(app: &App, staff: &session::Staff, title: &str, active: &str, body: Markup) -> Markup {
    let nav = pages::nav(app.tier, staff.role());
    let warning = app.sync.clock_warning();
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (app.name) }
                link rel="stylesheet" href="/static/desk.css";
                script src="/static/desk.js" defer {}
            }
            body {
                header.top {
                    div.brand { span.app { (text::APP) } span.node { (app.name) " · " (text::tier(app.tier)) } }
                    nav { @for (href, label) in nav {
                        a href=(href) class=[(label == active).then_some("active")] { (label) }
                    } }
                    div.who {
                        a.who-name href="/password" title="修改密码" { (staff.member.name) "（" (text::role(staff.role())) "）" }
                        form method="post" action="/logout" class="inline" {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            button.link type="submit" { (text::LOGOUT) }
                        }
                    }
                }
                @if let Some(w) = warning { div.banner.warn { "本机时钟与上级节点相差较大：" (w) "。请校准时间后再办理。" } }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The CSRF field every form carries.
pub(crate) fn csrf(staff: &session::Staff) -> Markup {
    html! { input type="hidden" name="csrf" value=(staff.csrf); }
}

/// Milliseconds since the epoch as local time of China (UTC+8), which
/// every desk of the county shows.
pub fn when(ms: u64) -> String {
    if ms == 0 {
        return "—".into();
    }
    let secs = (ms / 1000) as i64 + 8 * 3600;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rem / 3600, (rem % 3600) / 60)
}

/// The date part of [`when`].
pub fn day(ms: u64) -> String {
    when(ms).split(' ').next().unwrap_or_default().to_string()
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` (a date in China) to the ms of its midnight there.
pub fn parse_day(s: &str) -> Option<u64> {
    let mut it = s.trim().splitn(3, '-');
    let (y, m, d): (i64, i64, i64) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return None;
    }
    // days_from_civil
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = (days * 86_400 - 8 * 3600) * 1000;
    (ms >= 0).then_some(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_shown_in_china_time_and_parsed_back() {
        // 2026-11-25 16:30 UTC is 2026-11-26 00:30 in China.
        assert_eq!(when(1_795_624_200_000), "2026-11-26 00:30");
        let midnight = parse_day("2026-11-26").unwrap();
        assert_eq!(when(midnight), "2026-11-26 00:00");
        assert_eq!(day(midnight + 86_399_000), "2026-11-26");
        assert!(parse_day("2026-13-01").is_none() && parse_day("x").is_none());
    }
}
