//! Smoke tests of the test infrastructure for the web desk: the HTTP client
//! (`system_tests::http`) and the headless browser
//! (`system_tests::webdriver`), both against a tiny std-only HTTP server.
//!
//! The browser test needs Debian's `chromium` and `chromium-driver` (and
//! `fonts-noto-cjk` for readable screenshots); it fails, saying so, if they
//! are missing.

use anyhow::Result;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use system_tests::http::{form_decode, Client, Session};
use system_tests::webdriver::Browser;

/// Starts the test server on a free loopback port; returns its address.
/// Each connection gets a thread (browsers open spare connections that may
/// never send a request).
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = handle(stream);
            });
        }
    });
    addr
}

/// A request as the test server sees it.
struct Request {
    method: String,
    path: String,
    /// The request line and headers, as sent.
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        let found =
            self.head.lines().skip(1).filter_map(|l| l.split_once(':')).find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.trim()).unwrap_or("")
    }
}

/// Reads one request (head, then `Content-Length` bytes of body).
fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    // The head keeps the CRLF ending its last header line.
    let head = String::from_utf8_lossy(&buf[..end + 2]).into_owned();
    let mut words = head.split(' ');
    let (method, path) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
    let mut req = Request { method, path, head, body: buf[end + 4..].to_vec() };
    let len: usize = req.header("content-length").parse().unwrap_or(0);
    while req.body.len() < len {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        req.body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(req))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// An HTML page (UTF-8) with the 收件 heading and `body`.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font:20px sans-serif;margin:2em}} input,button{{font:inherit}}</style></head>\
         <body><h1>收件</h1>{body}</body></html>"
    )
}

/// Answers one connection. Routes:
/// `GET /` the form; `POST /submit` echoes field `applicant`, escaped;
/// `GET /chunked` a chunked body; `GET /close` a body ended by closing;
/// `POST /echo` the raw body (its type in `X-Got-Type`); `GET /headers` the
/// request head; `GET /login` sets cookies and redirects; `GET /logout`
/// expires one.
fn handle(mut stream: TcpStream) -> std::io::Result<()> {
    let Some(req) = read_request(&mut stream)? else { return Ok(()) };
    let html = "text/html; charset=utf-8";
    let text = "text/plain; charset=utf-8";
    let (status, ctype, extra, body): (&str, &str, Vec<String>, Vec<u8>) =
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/") => {
                let form = "<form method=\"post\" action=\"/submit\">\
                        <label>申请人 <input name=\"applicant\" autofocus></label> \
                        <button type=\"submit\">提交</button></form>";
                ("200 OK", html, vec![], page("收件 smoke", form).into_bytes())
            }
            ("POST", "/submit") => {
                let fields = form_decode(&String::from_utf8_lossy(&req.body));
                let value = fields.iter().find(|(k, _)| k == "applicant").map(|(_, v)| v.as_str()).unwrap_or("");
                let body = format!("<p>已收到：</p><p id=\"echo\">{}</p>", escape(value));
                ("200 OK", html, vec![], page("已收件", &body).into_bytes())
            }
            ("GET", "/chunked") => {
                // Written by hand below: three chunks (one with an extension), a trailer.
                let chunked = "Content-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n\
                           6\r\n收件\r\n4;note=x\r\n-ok-\r\n3\r\n办\r\n0\r\nX-Trailer: 1\r\n\r\n";
                return stream.write_all(format!("HTTP/1.1 200 OK\r\nConnection: close\r\n{chunked}").as_bytes());
            }
            ("GET", "/close") => {
                return stream.write_all("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n读到关闭为止".as_bytes());
            }
            ("POST", "/echo") => {
                ("200 OK", text, vec![format!("X-Got-Type: {}", req.header("content-type"))], req.body)
            }
            ("GET", "/headers") => ("200 OK", text, vec![], req.head.into_bytes()),
            ("GET", "/login") => (
                "303 See Other",
                text,
                vec![
                    "Set-Cookie: sid=abc123; Path=/; HttpOnly; SameSite=Strict".into(),
                    "Set-Cookie: lang=zh-CN; Path=/".into(),
                    "Location: /".into(),
                ],
                b"see /".to_vec(),
            ),
            ("GET", "/logout") => ("200 OK", text, vec!["Set-Cookie: sid=; Path=/; Max-Age=0".into()], b"bye".to_vec()),
            _ => ("404 Not Found", text, vec![], b"not found".to_vec()),
        };
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n", body.len());
    for h in extra {
        head.push_str(&h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)
}

#[test]
fn http_client_reads_sized_chunked_and_close_delimited_bodies() {
    let client = Client::new(&serve());
    let r = client.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("CONTENT-TYPE"), Some("text/html; charset=utf-8"));
    assert!(r.text().contains("<h1>收件</h1>"), "{}", r.text());
    let r = client.get("/chunked");
    assert_eq!((r.status, r.text().as_str()), (200, "收件-ok-办"));
    assert_eq!(client.get("/close").text(), "读到关闭为止");
    assert_eq!(client.get("/nowhere").status, 404);
}

#[test]
fn http_client_encodes_forms_and_sends_headers() {
    let client = Client::new(&format!("http://{}/", serve())).with_header("X-Desk", "窗口 1");
    let r = client.post_form("/echo", &[("applicant", "王芳 & 张三"), ("item", "V001"), ("note", "a+b=c%")]);
    assert_eq!(r.header("x-got-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(
        r.text(),
        "applicant=%E7%8E%8B%E8%8A%B3+%26+%E5%BC%A0%E4%B8%89&item=V001&note=a%2Bb%3Dc%25",
        "form encoding as a browser would send it"
    );
    let back = form_decode(&r.text());
    assert_eq!(back[0], ("applicant".to_string(), "王芳 & 张三".to_string()));
    let r = client.post_raw("/echo", "application/json", br#"{"a":1}"#);
    assert_eq!((r.header("X-Got-Type"), r.json()), (Some("application/json"), json!({"a": 1})));
    let head = client.get("/headers").text();
    assert!(head.contains("\r\nX-Desk: 窗口 1\r\n") && head.contains("\r\nConnection: close"), "{head}");
}

#[test]
fn http_session_keeps_cookies_and_never_follows_redirects() {
    let mut session = Session::new(&serve());
    let r = session.get("/login");
    assert_eq!((r.status, r.header("location")), (303, Some("/")), "the redirect is returned, not followed");
    assert_eq!(r.set_cookies(), [("sid".to_string(), "abc123".to_string()), ("lang".to_string(), "zh-CN".to_string())]);
    assert_eq!(session.cookie("sid"), Some("abc123"));
    let head = session.get("/headers").text();
    assert!(head.contains("\r\nCookie: sid=abc123; lang=zh-CN"), "{head}");
    session.get("/logout");
    assert_eq!(session.cookie("sid"), None, "Max-Age=0 deletes the cookie");
    let head = session.get("/headers").text();
    assert!(head.contains("\r\nCookie: lang=zh-CN\r\n"), "{head}");
    // A plain client sends no cookies.
    assert!(!session.client.get("/headers").text().contains("Cookie:"));
}

/// `target/desk-screens/NAME` in the workspace, where desk screenshots go.
fn screen_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("desk-screens").join(name)
}

#[test]
fn browser_fills_in_a_chinese_form() -> Result<()> {
    let addr = serve();
    // Fails (never skips) without chromium: the error says what to install.
    let browser = Browser::start()?;
    browser.goto(&format!("http://{addr}/"))?;
    assert_eq!(browser.title()?, "收件 smoke");
    assert_eq!(browser.find("h1")?.text()?, "收件");

    let input = browser.find("input[name=applicant]")?;
    input.send_keys("要清掉的")?;
    input.clear()?;
    let typed = "王芳 <b>张三</b> & \"李四\"";
    input.send_keys(typed)?;
    assert_eq!(input.value()?, typed);
    assert_eq!(input.attr("name")?.as_deref(), Some("applicant"));
    assert_eq!(input.attr("placeholder")?, None);

    browser.find("button[type=submit]")?.click()?;
    let echo = browser.find("#echo")?;
    assert_eq!(echo.text()?, typed, "the server saw the typed text and the page shows it escaped");
    assert!(browser.url()?.ends_with("/submit"));
    assert_eq!(browser.title()?, "已收件");
    assert!(browser.find_all("#echo b")?.is_empty(), "escaped, not markup");
    assert!(browser.page_source()?.contains("&lt;b&gt;张三&lt;/b&gt;"));
    assert_eq!(browser.find_all("p")?.len(), 2);
    let v = browser.execute("return [arguments[0].id, arguments[1] + document.title]", &[echo.as_arg(), json!("→")])?;
    assert_eq!(v, json!(["echo", "→已收件"]));

    browser.set_window_size(800, 600)?;
    let shot = screen_path("smoke.png");
    browser.screenshot(&shot)?;
    let png = std::fs::read(&shot)?;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", shot.display());
    Ok(())
}

#[test]
fn browser_errors_carry_the_webdriver_error() -> Result<()> {
    let addr = serve();
    let browser = Browser::start()?;
    browser.goto(&format!("http://{addr}/"))?;
    let err = browser.find_all("!!not css").expect_err("a bad selector fails").to_string();
    assert!(err.contains("invalid selector"), "{err}");
    Ok(())
}
