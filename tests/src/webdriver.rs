//! A minimal W3C WebDriver client driving Debian's headless Chromium
//! (`/usr/bin/chromium` through `/usr/bin/chromedriver`), for tests of the
//! web desk in a real browser.
//!
//! [`Browser::start`] runs a private chromedriver on a free loopback port
//! with a fresh profile; dropping the [`Browser`] ends the session, stops
//! chromedriver and deletes the profile. Every call is one blocking
//! WebDriver command over [`crate::http::Client`].

use crate::http::Client;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's chromedriver (package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's Chromium (package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long [`Browser::find`] waits for an element to appear.
pub const FIND_TIMEOUT: Duration = Duration::from_secs(5);

/// The key W3C WebDriver uses for an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session, ended when dropped.
pub struct Browser {
    /// The chromedriver process, stopped on drop.
    driver: Child,
    /// Talks to chromedriver.
    http: Client,
    /// The WebDriver session id.
    session: String,
    /// The Chromium profile (`--user-data-dir`) and chromedriver's log.
    /// Declared last so it is deleted after the processes are gone.
    profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("driver", &self.http.addr()).field("session", &self.session).finish()
    }
}

impl Browser {
    /// Whether both Debian binaries are installed.
    pub fn available() -> bool {
        Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists()
    }

    /// Starts chromedriver and a headless Chromium session (1280×900, fresh
    /// profile). Fails, saying what to install, if the binaries are missing.
    pub fn start() -> Result<Browser> {
        if !Browser::available() {
            bail!(
                "{CHROMIUM} or {CHROMEDRIVER} is missing: install Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver fonts-noto-cjk; .ci/run does this in CI)"
            );
        }
        let profile = tempfile::tempdir().context("temp dir for the Chromium profile")?;
        // A free port: bind port 0, note the port, let it go for chromedriver.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = profile.path().join("chromedriver.log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {CHROMEDRIVER}"))?;
        let http = Client::new(&format!("127.0.0.1:{port}")).with_timeout(Duration::from_secs(60));
        // From here on, Drop cleans up whatever happens.
        let mut browser = Browser { driver, http, session: String::new(), profile };
        browser.wait_ready().with_context(|| browser.driver_log())?;
        let data_dir = browser.profile.path().join("chromium");
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", data_dir.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created = browser.command("POST", "/session", Some(caps)).with_context(|| browser.driver_log())?;
        browser.session =
            created["sessionId"].as_str().ok_or_else(|| anyhow!("new session answered {created}"))?.to_string();
        Ok(browser)
    }

    /// Polls chromedriver's `/status` until it says it is ready (up to 20 s).
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.driver.try_wait()? {
                bail!("{CHROMEDRIVER} exited at start ({status})");
            }
            if let Ok(r) = self.http.request("GET", "/status", &[], &[]) {
                let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
                if v["value"]["ready"] == json!(true) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{CHROMEDRIVER} not ready after 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of chromedriver's log, for error context.
    fn driver_log(&self) -> String {
        let log = std::fs::read_to_string(self.profile.path().join("chromedriver.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        format!("chromedriver log (last lines):\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }

    /// Sends one WebDriver command (`path` relative to the server root) and
    /// returns its `value`. An error status becomes an error naming the
    /// command and carrying the WebDriver error JSON (less its stack trace).
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] =
            if method == "POST" { &[("Content-Type", "application/json; charset=utf-8")] } else { &[] };
        let r = self
            .http
            .request(method, path, headers, body.as_bytes())
            .with_context(|| format!("WebDriver {method} {path}: no answer from chromedriver"))?;
        let mut v: Value = serde_json::from_slice(&r.body).with_context(|| {
            format!("WebDriver {method} {path}: HTTP {} with non-JSON body {:?}", r.status, r.text())
        })?;
        let mut value = v["value"].take();
        if !(200..300).contains(&r.status) {
            if let Some(o) = value.as_object_mut() {
                o.remove("stacktrace");
            }
            bail!("WebDriver {method} {path} failed (HTTP {}): {value}", r.status);
        }
        Ok(value)
    }

    /// [`Browser::command`] on a path under this session.
    fn session_cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    fn string(&self, method: &str, path: &str) -> Result<String> {
        let v = self.session_cmd(method, path, None)?;
        v.as_str().map(String::from).ok_or_else(|| anyhow!("WebDriver {path} answered {v}, not a string"))
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.session_cmd("POST", "/url", Some(json!({ "url": url }))).map(drop)
    }

    /// The current page's URL.
    pub fn url(&self) -> Result<String> {
        self.string("GET", "/url")
    }

    /// The current page's title.
    pub fn title(&self) -> Result<String> {
        self.string("GET", "/title")
    }

    /// The current DOM serialised as HTML.
    pub fn page_source(&self) -> Result<String> {
        self.string("GET", "/source")
    }

    /// The first element matching the CSS selector, retrying for up to
    /// [`FIND_TIMEOUT`] while the page has none.
    pub fn find(&self, css: &str) -> Result<Element<'_>> {
        let deadline = Instant::now() + FIND_TIMEOUT;
        loop {
            match self.session_cmd("POST", "/element", Some(json!({"using": "css selector", "value": css}))) {
                Ok(v) => return self.element(&v),
                Err(e) if Instant::now() < deadline && e.to_string().contains("no such element") => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(e.context(format!("no element matches {css:?}"))),
            }
        }
    }

    /// Every element matching the CSS selector now (possibly none; no waiting).
    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>> {
        let v = self.session_cmd("POST", "/elements", Some(json!({"using": "css selector", "value": css})))?;
        v.as_array().ok_or_else(|| anyhow!("find_all answered {v}"))?.iter().map(|e| self.element(e)).collect()
    }

    fn element(&self, v: &Value) -> Result<Element<'_>> {
        let id = v[ELEMENT_KEY].as_str().ok_or_else(|| anyhow!("not an element reference: {v}"))?;
        Ok(Element { browser: self, id: id.to_string() })
    }

    /// Runs `js` as a function body in the page (`arguments[0]`, … are
    /// `args`; pass [`Element::as_arg`] for elements) and returns what it returns.
    pub fn execute(&self, js: &str, args: &[Value]) -> Result<Value> {
        self.session_cmd("POST", "/execute/sync", Some(json!({ "script": js, "args": args })))
    }

    /// Saves a PNG screenshot of the viewport to `path`, creating its directory.
    pub fn screenshot(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let b64 = self.string("GET", "/screenshot")?;
        let png = base64_decode(&b64).context("screenshot is not base64")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Resizes the window (outer size, in CSS pixels).
    pub fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.session_cmd("POST", "/window/rect", Some(json!({"width": width, "height": height}))).map(drop)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Ends the session, which quits Chromium.
            let _ = self.session_cmd("DELETE", "", None);
        }
        // chromedriver's own shutdown quits any browser it still runs; kill
        // it if it has not gone within a couple of seconds.
        let _ = self.http.request("GET", "/shutdown", &[], &[]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(self.driver.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// An element of the current page. Stale once the page navigates away.
#[derive(Debug, Clone)]
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.browser.session_cmd(method, &format!("/element/{}{path}", self.id), body)
    }

    /// Clicks it (scrolling it into view); waits for any navigation it starts.
    pub fn click(&self) -> Result<()> {
        self.cmd("POST", "/click", Some(json!({}))).map(drop)
    }

    /// Types `text` into it, as key presses (any Unicode, Chinese included).
    pub fn send_keys(&self, text: &str) -> Result<()> {
        self.cmd("POST", "/value", Some(json!({ "text": text }))).map(drop)
    }

    /// Empties an input or text area.
    pub fn clear(&self) -> Result<()> {
        self.cmd("POST", "/clear", Some(json!({}))).map(drop)
    }

    /// Its rendered text.
    pub fn text(&self) -> Result<String> {
        let v = self.cmd("GET", "/text", None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The attribute `name` as written in the HTML, if present.
    pub fn attr(&self, name: &str) -> Result<Option<String>> {
        Ok(self.cmd("GET", &format!("/attribute/{name}"), None)?.as_str().map(String::from))
    }

    /// The current `value` property of an input (what the user typed).
    pub fn value(&self) -> Result<String> {
        let v = self.cmd("GET", "/property/value", None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// This element as an argument for [`Browser::execute`].
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }
}

/// Decodes standard base64 (`A-Z a-z 0-9 + /`, `=` padding optional,
/// whitespace ignored).
pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => bail!("invalid base64 byte {:?}", c as char),
        };
        // Six bits in; whenever eight are waiting, one byte out.
        acc = ((acc << 6) | u32::from(v)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zm9v\nYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("5pS25Lu2").unwrap(), "收件".as_bytes());
        assert_eq!(base64_decode("iVBORw0KGgo=").unwrap(), b"\x89PNG\r\n\x1a\n");
        assert!(base64_decode("Zm9v!").is_err());
    }
}
