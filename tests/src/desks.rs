//! A county with its desks running as real processes: the hub serving sync
//! and the county desk, one township serving sync and its desk, one village
//! laptop's desk syncing with the township; and staff at each.

use crate::{cmd, s, County};
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Stdio};

/// The hub, the township and the village of the desk tests.
pub const HUB: &str = "511421";
pub const TOWNSHIP: &str = "511421101";
pub const VILLAGE: &str = "511421101001";
/// A village of another township.
pub const OTHER_VILLAGE: &str = "511421102001";

/// Every test member's password.
pub const PASSWORD: &str = "desk test password";

/// A process serving a desk (and maybe sync), killed when dropped.
pub struct DeskProc {
    child: Child,
    /// The desk's base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The sync address, when the process also serves sync.
    pub sync_addr: Option<String>,
}

impl DeskProc {
    /// Starts `program args…` and reads its output until the desk's URL.
    pub fn start(program: &str, args: &[&str]) -> DeskProc {
        DeskProc::start_with_env(program, args, &[])
    }

    /// [`DeskProc::start`] with extra environment variables.
    pub fn start_with_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> DeskProc {
        let mut child = cmd(program)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", "error")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let (mut url, mut sync_addr) = (None, None);
        while url.is_none() {
            let mut line = String::new();
            if out.read_line(&mut line).expect("output") == 0 {
                panic!("{program} {args:?} ended before serving its desk");
            }
            if line.contains("serving sync on ") {
                sync_addr = line.split_whitespace().last().map(str::to_string);
            }
            if let Some(at) = line.split_whitespace().find(|w| w.starts_with("http")) {
                url = Some(at.trim_end_matches('/').to_string());
            }
        }
        // Keep reading (and dropping) its output so it never blocks.
        std::thread::spawn(move || for _ in out.lines() {});
        DeskProc { child, url: url.expect("url"), sync_addr }
    }

    /// `host:port` of the desk.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for DeskProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds a staff member with `staff add --password-stdin`.
pub fn add_staff(program: &str, data: &Path, login: &str, name: &str, role: &str) {
    let mut child = cmd(program)
        .args(["staff", "add", "--data", s(data), "--login", login, "--name", name, "--role", role, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("staff add");
    writeln!(child.stdin.take().expect("stdin"), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "staff add failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A county with three desks running.
pub struct Desks {
    pub county: County,
    pub hub: DeskProc,
    pub township: DeskProc,
    pub village: DeskProc,
}

impl Desks {
    /// Staff: at the village `wangfang` (clerk) and `zhaolei` (admin); at
    /// the township `lina` (reviewer); at the county `admin` (admin).
    pub fn start() -> Desks {
        let county = County::new();
        let township = county.enrol(TOWNSHIP, "township-node");
        let village = county.enrol(VILLAGE, "village-node");
        county.enrol(OTHER_VILLAGE, "village-node");
        add_staff("village-node", &village, "wangfang", "王芳", "clerk");
        add_staff("village-node", &village, "zhaolei", "赵磊", "admin");
        add_staff("township-node", &township, "lina", "李娜", "reviewer");
        add_staff("county-hub", &county.hub(), "admin", "陈静", "admin");
        let hub = DeskProc::start(
            "county-hub",
            &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0", "--desk", "127.0.0.1:0"],
        );
        let hub_addr = hub.sync_addr.clone().expect("hub sync address");
        let town = DeskProc::start(
            "township-node",
            &[
                "serve",
                "--data",
                s(&township),
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                &hub_addr,
                "--every",
                "1",
                "--desk",
                "127.0.0.1:0",
            ],
        );
        let town_addr = town.sync_addr.clone().expect("township sync address");
        let village_desk = DeskProc::start(
            "village-node",
            &["desk", "--data", s(&village), "--listen", "127.0.0.1:0", "--peer", &town_addr],
        );
        Desks { county, hub, township: town, village: village_desk }
    }
}

/// Logs in over HTTP as `login`; returns the session and the CSRF token
/// of its forms (read from a page).
pub fn log_in(addr: &str, login: &str, password: &str) -> (crate::http::Session, crate::http::Response) {
    let mut session = crate::http::Session::new(addr);
    let page = session.get("/login");
    assert_eq!(page.status, 200, "{}", page.text());
    let nonce = field_value(&page.text(), "nonce").expect("the login form has a nonce");
    let res =
        session.post_form("/login", &[("nonce", &nonce), ("next", "/"), ("login", login), ("password", password)]);
    (session, res)
}

/// The value of the first `<input name=NAME value=...>` on a page.
pub fn field_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.find("value=\"")? + 7;
    let end = tag[v..].find('"')?;
    Some(tag[v..v + end].replace("&amp;", "&").replace("&quot;", "\""))
}
