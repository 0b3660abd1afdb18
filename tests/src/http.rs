//! A tiny blocking HTTP/1.1 client for loopback test servers (plain HTTP).
//!
//! One request per connection: every request carries `Connection: close`.
//! The response is read until its `Content-Length` or its last chunked
//! (`Transfer-Encoding: chunked`) piece has arrived, or else to end of file
//! (chromedriver says `Connection: close` yet keeps the socket open, so a
//! framed response cannot wait for the close). Redirects are never
//! followed: a 303 comes back as a 303, `Location` and all.
//!
//! [`Client`] is stateless apart from its extra headers; [`Session`] wraps
//! one with a cookie jar, as a browser tab would.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code (200, 303, 404, …).
    pub status: u16,
    /// Header fields in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, with any chunked transfer encoding removed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced, so a failing test can still print it).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("HTTP {} body is not JSON ({e}): {}", self.status, self.text()))
    }

    /// The `(name, value)` of every `Set-Cookie` header, attributes dropped.
    pub fn set_cookies(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| parse_set_cookie(v).map(|c| (c.name, c.value)))
            .collect()
    }
}

/// One `Set-Cookie` header, as much of it as a loopback jar needs.
struct SetCookie {
    name: String,
    value: String,
    /// `Max-Age<=0` or an `Expires` in 1970: the server is deleting it.
    deletes: bool,
}

fn parse_set_cookie(header: &str) -> Option<SetCookie> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let deletes = parts.filter_map(|a| a.split_once('=')).any(|(k, v)| {
        let (k, v) = (k.trim(), v.trim());
        (k.eq_ignore_ascii_case("max-age") && v.parse::<i64>().is_ok_and(|n| n <= 0))
            || (k.eq_ignore_ascii_case("expires") && v.contains("1970"))
    });
    Some(SetCookie { name: name.to_string(), value: value.trim().trim_matches('"').to_string(), deletes })
}

/// A client for one server address, such as `127.0.0.1:8080`.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
}

impl Client {
    /// A client for `addr` (`host:port`; a leading `http://` and trailing
    /// `/` are tolerated). Reads and writes time out after 60 seconds.
    pub fn new(addr: &str) -> Client {
        let addr = addr.trim_start_matches("http://").trim_end_matches('/').to_string();
        Client { addr, headers: Vec::new(), timeout: Duration::from_secs(60) }
    }

    /// The `host:port` this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://host:port` followed by `path`, for handing to a browser.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sets a header sent with every request, replacing any of the same name.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.remove_header(name);
        self.headers.push((name.to_string(), value.to_string()));
    }

    /// Stops sending a header set by [`Client::set_header`].
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// [`Client::set_header`], builder style.
    pub fn with_header(mut self, name: &str, value: &str) -> Client {
        self.set_header(name, value);
        self
    }

    /// Changes the read/write timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// `GET path`; panics if the server cannot be reached or answers garbage.
    pub fn get(&self, path: &str) -> Response {
        self.expect("GET", path, self.request("GET", path, &[], &[]))
    }

    /// `POST path` of an `application/x-www-form-urlencoded` form; panics
    /// like [`Client::get`].
    pub fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.post_raw(path, "application/x-www-form-urlencoded", form_encode(fields).as_bytes())
    }

    /// `POST path` of `body` as `content_type`; panics like [`Client::get`].
    pub fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
        self.expect("POST", path, self.request("POST", path, &[("Content-Type", content_type)], body))
    }

    fn expect(&self, method: &str, path: &str, r: io::Result<Response>) -> Response {
        r.unwrap_or_else(|e| panic!("{method} http://{}{path} failed: {e}", self.addr))
    }

    /// Sends any request: `headers` go after the client's own and `body`
    /// (possibly empty) with its `Content-Length`. Errors are I/O errors or
    /// a malformed response, never an HTTP status.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Response> {
        let mut stream = TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr);
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        let own = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        for (name, value) in own.chain(headers.iter().copied()) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request)?;
        let (mut raw, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
        loop {
            let n = stream.read(&mut buf)?;
            raw.extend_from_slice(&buf[..n]);
            if let Some(response) = parse_response(&raw, n == 0, method == "HEAD")? {
                return Ok(response);
            }
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parses a response from the bytes read so far: `Ok(None)` while it is
/// incomplete and more may come (`eof` false), an error if it is malformed
/// or the connection closed early. `no_body` is for answers to `HEAD`.
fn parse_response(raw: &[u8], eof: bool, no_body: bool) -> io::Result<Option<Response>> {
    // Incomplete while more may come; an error once the connection closed.
    let short = |what: String| if eof { Err(bad(what)) } else { Ok(None) };
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return short(format!("no end of headers in {} bytes", raw.len()));
    };
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string())))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("malformed header line"))?;
    let mut response = Response { status, headers, body: Vec::new() };
    let rest = &raw[end + 4..];
    if no_body || matches!(status, 100..=199 | 204 | 304) {
        // No body, whatever the headers say.
    } else if response.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        match dechunk(rest) {
            Ok(body) => response.body = body,
            Err(e) => return short(e.to_string()),
        }
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        match rest.get(..len) {
            Some(body) => response.body = body.to_vec(),
            None => return short(format!("body cut short: {} of {len} bytes", rest.len())),
        }
    } else if eof {
        response.body = rest.to_vec();
    } else {
        return Ok(None);
    }
    Ok(Some(response))
}

/// Removes chunked transfer encoding (chunk extensions and trailers ignored).
fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = find(data, b"\r\n").ok_or_else(|| bad("chunk size line not terminated"))?;
        let line = std::str::from_utf8(&data[..eol]).map_err(|_| bad("chunk size line is not UTF-8"))?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| bad(format!("bad chunk size {line:?}")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = data.get(..size).ok_or_else(|| bad("chunk cut short"))?;
        body.extend_from_slice(chunk);
        data =
            data.get(size..).and_then(|d| d.strip_prefix(b"\r\n")).ok_or_else(|| bad("chunk not followed by CRLF"))?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Encodes fields as `application/x-www-form-urlencoded`, the way browsers
/// do: UTF-8, space as `+`, everything but `A-Z a-z 0-9 * - . _` as `%XX`.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        enc(k, &mut out);
        out.push('=');
        enc(v, &mut out);
    }
    out
}

/// Decodes an `application/x-www-form-urlencoded` body (or a query string)
/// into its fields; invalid escapes are kept literally, invalid UTF-8 replaced.
pub fn form_decode(body: &str) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
                (b'%', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                (b'+', _) => out.push(b' '),
                (c, _) => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

/// One part of a `multipart/form-data` body, as a browser sends a form
/// with files.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// A text field: name, value.
    Text(&'a str, &'a str),
    /// A file field: field name, file name, content type, bytes.
    File(&'a str, &'a str, &'a str, &'a [u8]),
}

/// The boundary [`multipart`] uses (not found in any test's file).
pub const BOUNDARY: &str = "----DeskTestBoundary7d2f1c9a04e3";

/// Encodes parts as `multipart/form-data` the way browsers do (names and
/// file names in UTF-8, `"` as `%22`, line breaks as `%0D%0A`); returns
/// the content type, with its boundary, and the body.
pub fn multipart(parts: &[Part]) -> (String, Vec<u8>) {
    let quote = |s: &str| s.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A");
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{}\"\r\n\r\n", quote(name)).as_bytes(),
                );
                body.extend_from_slice(value.as_bytes());
            }
            Part::File(name, file_name, content_type, bytes) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {content_type}\r\n\r\n",
                        quote(name),
                        quote(file_name)
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(bytes);
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// A [`Client`] with a cookie jar: cookies set by responses are sent back
/// with later requests, and dropped when the server expires them. One
/// loopback server is assumed, so cookie domains and paths are ignored.
#[derive(Debug, Clone)]
pub struct Session {
    /// The underlying client; its extra headers are sent as usual.
    pub client: Client,
    jar: Vec<(String, String)>,
}

impl Session {
    /// A session with an empty jar talking to `addr` (see [`Client::new`]).
    pub fn new(addr: &str) -> Session {
        Session { client: Client::new(addr), jar: Vec::new() }
    }

    /// The jar's value for cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.jar.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// All cookies in the jar, in the order first set.
    pub fn cookies(&self) -> &[(String, String)] {
        &self.jar
    }

    /// Puts a cookie in the jar by hand (replacing one of the same name).
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        match self.jar.iter_mut().find(|(n, _)| n == name) {
            Some(c) => c.1 = value.to_string(),
            None => self.jar.push((name.to_string(), value.to_string())),
        }
    }

    /// Empties the jar.
    pub fn clear_cookies(&mut self) {
        self.jar.clear();
    }

    /// [`Client::get`] with the jar.
    pub fn get(&mut self, path: &str) -> Response {
        let r = self.request("GET", path, &[], &[]);
        self.client.expect("GET", path, r)
    }

    /// [`Client::post_form`] with the jar.
    pub fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.post_raw(path, "application/x-www-form-urlencoded", form_encode(fields).as_bytes())
    }

    /// [`Client::post_raw`] with the jar.
    pub fn post_raw(&mut self, path: &str, content_type: &str, body: &[u8]) -> Response {
        let r = self.request("POST", path, &[("Content-Type", content_type)], body);
        self.client.expect("POST", path, r)
    }

    /// `POST path` of a form with files (see [`multipart`]), with the jar.
    pub fn post_multipart(&mut self, path: &str, parts: &[Part]) -> Response {
        let (content_type, body) = multipart(parts);
        self.post_raw(path, &content_type, &body)
    }

    /// [`Client::request`] with the jar: sends its cookies, then stores the
    /// response's `Set-Cookie`s.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Response> {
        let cookie = self.jar.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
        let mut all = headers.to_vec();
        if !cookie.is_empty() {
            all.push(("Cookie", &cookie));
        }
        let response = self.client.request(method, path, &all, body)?;
        for header in response.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie")) {
            let Some(c) = parse_set_cookie(&header.1) else { continue };
            if c.deletes {
                self.jar.retain(|(n, _)| *n != c.name);
            } else {
                self.set_cookie(&c.name, &c.value);
            }
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_round_trips_chinese() {
        let enc = form_encode(&[("name", "张 三"), ("note", "a+b&c=d/é*-._~")]);
        assert_eq!(enc, "name=%E5%BC%A0+%E4%B8%89&note=a%2Bb%26c%3Dd%2F%C3%A9*-._%7E");
        assert_eq!(
            form_decode(&enc),
            [("name".to_string(), "张 三".to_string()), ("note".to_string(), "a+b&c=d/é*-._~".to_string())]
        );
        assert_eq!(
            form_decode("a=%zz%4&b"),
            [("a".to_string(), "%zz%4".to_string()), ("b".to_string(), String::new())]
        );
    }

    /// Parses a response read to end of file.
    fn parse(raw: &[u8]) -> io::Result<Response> {
        parse_response(raw, true, false).map(|r| r.expect("complete at end of file"))
    }

    #[test]
    fn parses_chunked_sized_and_unframed_bodies() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n";
        let r = parse(chunked).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc0123456789"[..]));
        let r = parse(b"HTTP/1.1 303 See Other\r\nLocation: /x\r\nContent-Length: 2\r\n\r\nhiXX").unwrap();
        assert_eq!((r.status, r.header("location"), r.text().as_str()), (303, Some("/x"), "hi"));
        assert_eq!(parse(b"HTTP/1.0 200 OK\r\n\r\nto the end").unwrap().text(), "to the end");
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse(&chunked[..chunked.len() - 15]).is_err());
        assert!(parse(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn knows_when_a_response_is_complete_before_the_close() {
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..sized.len() {
            assert!(parse_response(&sized[..cut], false, false).unwrap().is_none(), "complete at {cut}?");
        }
        assert_eq!(parse_response(sized, false, false).unwrap().unwrap().text(), "hello");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert!(parse_response(&chunked[..chunked.len() - 5], false, false).unwrap().is_none());
        assert_eq!(parse_response(chunked, false, false).unwrap().unwrap().text(), "hello");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nmore?", false, false).unwrap().is_none());
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(empty, false, false).unwrap().unwrap().status, 204);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert!(parse_response(head, false, true).unwrap().unwrap().body.is_empty());
    }

    #[test]
    fn set_cookie_attributes() {
        let c = parse_set_cookie("sid=abc; Path=/; HttpOnly; SameSite=Strict").unwrap();
        assert_eq!((c.name.as_str(), c.value.as_str(), c.deletes), ("sid", "abc", false));
        assert!(parse_set_cookie("sid=; Max-Age=0").unwrap().deletes);
        assert!(parse_set_cookie("sid=; Expires=Thu, 01 Jan 1970 00:00:00 GMT").unwrap().deletes);
        assert!(parse_set_cookie("novalue").is_none());
    }
}
