//! The desk's security rules over plain HTTP: no session, no CSRF token,
//! another village's case, escaping, lockout, roles, oversized bodies.
//! Each refusal is checked to have written nothing.

use system_tests::desks::{self, field_value, log_in, DeskProc, PASSWORD, VILLAGE};
use system_tests::{id_number, ok_json, s, take_case, County};

/// Cases the village's store holds, read by the CLI beside the desk.
fn case_count(data: &std::path::Path) -> usize {
    ok_json("village-node", &["case", "list", "--data", s(data), "--json"]).as_array().map_or(0, |a| a.len())
}

fn village_desk() -> (County, std::path::PathBuf, DeskProc) {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    desks::add_staff("village-node", &data, "wangfang", "王芳", "clerk");
    desks::add_staff("village-node", &data, "zhaolei", "赵磊", "admin");
    let desk = DeskProc::start("village-node", &["desk", "--data", s(&data), "--listen", "127.0.0.1:0"]);
    (county, data, desk)
}

fn intake_form<'a>(csrf: &'a str, applicant: &'a str, id: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("item", "V001"),
        ("applicant", applicant),
        ("id_number", id),
        ("phone", ""),
        ("address", ""),
        ("material", "居民身份证"),
    ]
}

#[test]
fn the_desk_guards_every_page_and_every_write() {
    let (_county, data, desk) = village_desk();

    // Without a session every page sends the browser to the login.
    let mut anon = system_tests::http::Session::new(desk.addr());
    for path in ["/queue", "/intake", "/sync", "/case/511421101001-1"] {
        let r = anon.get(path);
        assert_eq!(r.status, 303, "{path}");
        assert!(r.header("location").unwrap().starts_with("/login"), "{path}");
    }
    let r = anon.post_form("/intake", &[("item", "V001")]);
    assert_eq!(r.status, 303, "a POST without a session goes to the login");

    // A login form not from this desk (no nonce cookie) is refused.
    let r = anon.post_form("/login", &[("nonce", "x"), ("login", "wangfang"), ("password", PASSWORD)]);
    assert_eq!(r.status, 403);
    assert!(r.set_cookies().iter().all(|(k, _)| k != &format!("desk_{VILLAGE}")));

    let (mut clerk, res) = log_in(desk.addr(), "wangfang", PASSWORD);
    assert_eq!(res.status, 303, "{}", res.text());
    let cookie = res.header("set-cookie").unwrap_or_default().to_string();
    let session_cookie = res
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .find(|v| v.starts_with(&format!("desk_{VILLAGE}=")));
    let session_cookie = session_cookie.unwrap_or_else(|| panic!("no session cookie: {cookie}"));
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Strict"), "{session_cookie}");

    let page = clerk.get("/intake?item=V001");
    assert_eq!(page.status, 200);
    let csrf = field_value(&page.text(), "csrf").expect("every form carries a CSRF token");
    let good = id_number(7);

    // No token, a wrong token: 403 and nothing written.
    let mut no_token = intake_form("", "张三", &good);
    no_token.remove(0);
    assert_eq!(clerk.post_form("/intake", &no_token).status, 403);
    assert_eq!(clerk.post_form("/intake", &intake_form("0000", "张三", &good)).status, 403);
    assert_eq!(case_count(&data), 0, "a refused POST wrote nothing");

    // A wrong check digit: the form comes back with the reason, nothing written.
    let mut bad = good.clone();
    let last = if bad.ends_with('0') { '1' } else { '0' };
    bad.pop();
    bad.push(last);
    let r = clerk.post_form("/intake", &intake_form(&csrf, "张三", &bad));
    assert_eq!(r.status, 422);
    assert!(r.text().contains("校验位不正确"), "the reason is shown beside the field");
    assert!(r.text().contains("value=\"张三\""), "what was typed is kept");
    assert_eq!(case_count(&data), 0);

    // Applicant text is shown escaped.
    let r = clerk.post_form("/intake", &intake_form(&csrf, "<script>alert(1)</script>", &good));
    assert_eq!(r.status, 303, "{}", r.text());
    let case_url = r.header("location").unwrap().replace("/receipt?new=1", "");
    assert_eq!(case_count(&data), 1);
    let shown = clerk.get(&case_url).text();
    assert!(shown.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!shown.contains("<script>alert(1)"));
    let listed = clerk.get("/queue").text();
    assert!(listed.contains("&lt;script&gt;") && !listed.contains("<script>alert(1)"));

    // Personal data is masked; the full number only on request, logged.
    assert!(!shown.contains(&good), "the ID number is masked on the case page");
    let r = clerk.post_form(&format!("{case_url}/reveal"), &[("csrf", &csrf), ("field", "id_number")]);
    assert!(r.text().contains(&good), "shown in full when asked");

    // A clerk may not decide, nor manage staff.
    let r = clerk.post_form(&format!("{case_url}/step"), &[("csrf", &csrf), ("step", "accept"), ("note", "")]);
    assert_eq!(r.status, 403);
    assert_eq!(clerk.get("/staff").status, 403);
    assert_eq!(clerk.get("/access").status, 403);

    // Another village's case is not found here (the laptop does not hold it).
    let other = take_case(s(&_county.enrol(desks::OTHER_VILLAGE, "village-node")), "李四", 9);
    assert_eq!(clerk.get(&format!("/case/{other}")).status, 404);
    assert_eq!(clerk.get("/case/not-a-case").status, 404);

    // An oversized body is refused before it is read, and writes nothing.
    let big = "x".repeat(200 * 1024);
    let r = clerk.post_form("/intake", &[("csrf", &csrf), ("item", "V001"), ("applicant", &big)]);
    assert_eq!(r.status, 413);
    assert_eq!(case_count(&data), 1);

    // The administrator sees who opened the ID number.
    let (mut admin, _) = log_in(desk.addr(), "zhaolei", PASSWORD);
    let log = admin.get("/access").text();
    assert!(log.contains("wangfang") && log.contains(ID_LABEL), "{log}");

    // Logging out ends the session: its cookie no longer opens pages.
    let stolen = clerk.cookie(&format!("desk_{VILLAGE}")).unwrap().to_string();
    assert_eq!(clerk.post_form("/logout", &[("csrf", &csrf)]).status, 303);
    let mut replay = system_tests::http::Session::new(desk.addr());
    replay.set_cookie(&format!("desk_{VILLAGE}"), &stolen);
    assert_eq!(replay.get("/queue").status, 303);
}

const ID_LABEL: &str = "身份证号";

#[test]
fn repeated_wrong_passwords_lock_the_account() {
    let (_county, _data, desk) = village_desk();
    for _ in 0..4 {
        let (_, r) = log_in(desk.addr(), "wangfang", "wrong password");
        assert_eq!(r.status, 401);
        assert!(r.text().contains("账号或密码不正确"));
    }
    let (_, r) = log_in(desk.addr(), "wangfang", "wrong password");
    assert!(r.text().contains("已锁定"), "the fifth wrong password locks the account");
    let (_, r) = log_in(desk.addr(), "wangfang", PASSWORD);
    assert_eq!(r.status, 401, "even the right password waits for the lock to end");
    assert!(r.text().contains("已锁定"));
    // Another member is not affected.
    let (_, r) = log_in(desk.addr(), "zhaolei", PASSWORD);
    assert_eq!(r.status, 303);
}

#[test]
fn a_disabled_account_loses_its_session_at_once() {
    let (_county, data, desk) = village_desk();
    let (mut clerk, r) = log_in(desk.addr(), "wangfang", PASSWORD);
    assert_eq!(r.status, 303);
    assert_eq!(clerk.get("/queue").status, 200);
    system_tests::ok("village-node", &["staff", "disable", "--data", s(&data), "--login", "wangfang"]);
    assert_eq!(clerk.get("/queue").status, 303);
    let (_, r) = log_in(desk.addr(), "wangfang", PASSWORD);
    assert!(r.text().contains("已停用"));
}

/// Two nodes set one field concurrently: the case page shows both values
/// side by side, and "采用此值" writes the one chosen, which supersedes both.
#[test]
fn concurrent_values_are_shown_side_by_side_and_one_is_adopted() {
    let d = desks::Desks::start();
    let village = d.county.data(VILLAGE);
    let township = d.county.data(desks::TOWNSHIP);
    let case = take_case(s(&village), "王五", 11);
    let town_addr = d.township.sync_addr.clone().unwrap();
    let sync = |data: &std::path::Path| {
        system_tests::ok("village-node", &["sync", "--data", s(data), "--peer", &town_addr]);
    };
    sync(&village);
    let edit = |program: &str, data: &std::path::Path, value: &str| {
        let args = ["case", "edit", "--data", s(data), &case, "--field", "address", "--value", value, "--as", "王芳"];
        system_tests::ok(program, &args);
    };
    edit("township-node", &township, "文林街道一组");
    edit("village-node", &village, "文林街道二组");
    sync(&village);

    let (mut clerk, _) = log_in(d.village.addr(), "wangfang", PASSWORD);
    let page = clerk.get(&format!("/case/{case}"));
    let text = page.text();
    assert!(text.contains("同时录入了不同的值"), "{text}");
    assert_eq!(text.matches("采用此值").count(), 2, "one button per value");
    let csrf = field_value(&text, "csrf").unwrap();
    let r = clerk.post_form(&format!("/case/{case}/field"), &[("csrf", &csrf), ("field", "address"), ("index", "1")]);
    assert_eq!(r.status, 303, "{}", r.text());
    let after = clerk.get(&format!("/case/{case}")).text();
    assert!(!after.contains("同时录入了不同的值"), "one value remains");
    let shown = ok_json("village-node", &["case", "show", "--data", s(&village), &case, "--json"]);
    assert_eq!(shown["fields"]["address"].as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!(shown["flagged"], false);
}

/// Accepts any server certificate: this test checks that the desk speaks
/// TLS and what it sends, not the county CA (which the sync tests cover).
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

fn https_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate))
            .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), "desk.node".try_into().unwrap()).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    write!(tls, "GET {path} HTTP/1.1\r\nHost: desk\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A desk on an address beyond loopback speaks only HTTPS, with cookies
/// marked Secure; plain HTTP there needs --insecure-http.
#[test]
fn a_desk_beyond_loopback_is_served_over_https() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    let desk = DeskProc::start("village-node", &["desk", "--data", s(&data), "--listen", "0.0.0.0:0"]);
    assert!(desk.url.starts_with("https://"), "{}", desk.url);
    let port: u16 = desk.url.rsplit(':').next().unwrap().parse().unwrap();
    let page = https_get(port, "/login");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("; Secure"), "cookies are Secure over HTTPS: {page}");
    let plain = system_tests::http::Client::new(&format!("127.0.0.1:{port}")).request("GET", "/login", &[], b"");
    assert!(plain.map_or(true, |r| r.status != 200), "no plain HTTP answer on the HTTPS port");
    drop(desk);
    let plain =
        DeskProc::start("village-node", &["desk", "--data", s(&data), "--listen", "0.0.0.0:0", "--insecure-http"]);
    assert!(plain.url.starts_with("http://"), "{}", plain.url);
}

/// An accepted case shows its due date; a month later (the desk's clock
/// shifted, as debug builds allow) it carries a red card and the 红牌
/// filter finds it, at the township and on the county dashboard's count.
#[test]
fn overdue_cases_carry_a_red_card_and_are_found_by_it() {
    let county = County::new();
    let t = county.enrol(desks::TOWNSHIP, "township-node");
    desks::add_staff("township-node", &t, "lina", "李娜", "reviewer");
    let id = id_number(5);
    let case = ok_json(
        "township-node",
        &[
            "case",
            "new",
            "--data",
            s(&t),
            "--item",
            "V001",
            "--applicant",
            "张三",
            "--id-number",
            &id,
            "--material",
            "居民身份证",
            "--material",
            "申请表",
            "--material",
            "户口簿",
            "--as",
            "李娜",
            "--json",
        ],
    )["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    system_tests::ok("township-node", &["case", "accept", "--data", s(&t), &case, "--as", "李娜"]);

    let serve = ["serve", "--data", s(&t), "--listen", "127.0.0.1:0", "--desk", "127.0.0.1:0"];
    let today = DeskProc::start("township-node", &serve);
    let (mut lina, _) = log_in(today.addr(), "lina", PASSWORD);
    let page = lina.get(&format!("/case/{case}")).text();
    assert!(page.contains("到期") && !page.contains("红牌"), "due, not yet overdue");
    assert!(!lina.get("/queue?card=red").text().contains(&case));
    drop(today);

    let month = (30 * 86_400_000i64).to_string();
    let later = DeskProc::start_with_env("township-node", &serve, &[("CASE_NODE_CLOCK_SKEW_MS", &month)]);
    let (mut lina, _) = log_in(later.addr(), "lina", PASSWORD);
    let page = lina.get(&format!("/case/{case}")).text();
    assert!(page.contains("红牌"), "{page}");
    let red = lina.get("/queue?card=red").text();
    assert!(red.contains(&case), "the red-card filter finds it");
    assert!(!lina.get("/queue?card=yellow").text().contains(&case), "red, not yellow");
}

/// 一件事一次办 at the desk: one form makes a case per item, and the
/// bundle's receipt lists them all.
#[test]
fn a_bundle_is_taken_with_one_form() {
    let (_county, data, desk) = village_desk();
    let (mut clerk, _) = log_in(desk.addr(), "wangfang", PASSWORD);
    let picker = clerk.get("/intake").text();
    assert!(picker.contains("新生儿出生一件事"), "the picker offers the bundles");
    let form = clerk.get("/intake?bundle=B01").text();
    let csrf = field_value(&form, "csrf").unwrap();
    let id = id_number(44);
    let r = clerk.post_form(
        "/intake",
        &[
            ("csrf", &csrf),
            ("bundle", "B01"),
            ("applicant", "刘洋"),
            ("id_number", &id),
            ("material", "居民身份证"),
            ("material", "申请表"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let to = r.header("location").unwrap().to_string();
    assert!(to.starts_with("/bundle/B01-"), "{to}");
    let receipt = clerk.get(&to).text();
    assert_eq!(case_count(&data), 4, "one case per item");
    assert_eq!(receipt.matches("href=\"/case/").count(), 4, "the receipt lists the four cases");
    assert!(receipt.contains("新生儿出生一件事") && !receipt.contains(&id));
    let notice = clerk.get(&format!("{}/result", to.split('?').next().unwrap()));
    assert_eq!(notice.status, 400, "no result notice before every case is done");
}

/// A member changes their own password (the current one checked, the new
/// one twice); an administrator resets another's, which lifts a lock.
#[test]
fn passwords_are_changed_by_their_owner_and_reset_by_an_admin() {
    let (_county, data, desk) = village_desk();
    let (mut clerk, _) = log_in(desk.addr(), "wangfang", PASSWORD);
    let csrf = field_value(&clerk.get("/password").text(), "csrf").unwrap();
    let change = |s: &mut system_tests::http::Session, current: &str, new: &str, again: &str| {
        s.post_form("/password", &[("csrf", &csrf), ("current", current), ("new", new), ("again", again)])
    };
    assert_eq!(change(&mut clerk, "not my password", "brand new words", "brand new words").status, 422);
    assert_eq!(change(&mut clerk, PASSWORD, "brand new words", "other words here").status, 422);
    assert_eq!(change(&mut clerk, PASSWORD, "short", "short").status, 422);
    assert_eq!(log_in(desk.addr(), "wangfang", PASSWORD).1.status, 303, "nothing changed by a refusal");
    assert_eq!(change(&mut clerk, PASSWORD, "brand new words", "brand new words").status, 303);
    assert_eq!(log_in(desk.addr(), "wangfang", PASSWORD).1.status, 401, "the old password no longer works");
    assert_eq!(log_in(desk.addr(), "wangfang", "brand new words").1.status, 303);

    // Locked out, then reset by the administrator.
    for _ in 0..5 {
        log_in(desk.addr(), "wangfang", "wrong password");
    }
    assert!(log_in(desk.addr(), "wangfang", "brand new words").1.text().contains("已锁定"));
    let (mut admin, _) = log_in(desk.addr(), "zhaolei", PASSWORD);
    let token = field_value(&admin.get("/staff").text(), "csrf").unwrap();
    let r = admin.post_form(
        "/staff",
        &[("csrf", &token), ("action", "reset"), ("login", "wangfang"), ("password", "reset by admin")],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(log_in(desk.addr(), "wangfang", "reset by admin").1.status, 303, "reset lifts the lock");
    let _ = data;
}

/// Issue 10: a catalogue version brought by a sync outside the desk (the
/// `sync` command) changes what the open desk offers: the new item is
/// offered, and a form for an item cancelled since is refused with the
/// reason, nothing written.
#[test]
fn the_desk_offers_the_newest_catalogue_and_says_why_an_item_is_gone() {
    let (county, data, desk) = village_desk();
    let (mut clerk, _) = log_in(desk.addr(), "wangfang", PASSWORD);
    let picker = clerk.get("/intake").text();
    assert!(picker.contains("V006") && !picker.contains("V900"), "v1 offered");
    let form = clerk.get("/intake?item=V006").text();
    let csrf = field_value(&form, "csrf").unwrap();

    let work = tempfile::tempdir().unwrap();
    let v2 = system_tests::samples::next_catalogue(work.path(), 2);
    ok_json("county-hub", &["catalogue", "publish", "--data", s(&county.hub()), "--file", s(&v2)]);
    let hub =
        system_tests::Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    ok_json("village-node", &["sync", "--data", s(&data), "--peer", &hub.addr, "--json"]);

    let picker = clerk.get("/intake").text();
    assert!(picker.contains("V900") && !picker.contains("V006"), "v2 offered without a restart");
    let id = id_number(3);
    let r = clerk.post_multipart(
        "/intake",
        &[
            system_tests::http::Part::Text("csrf", &csrf),
            system_tests::http::Part::Text("item", "V006"),
            system_tests::http::Part::Text("applicant", "张三"),
            system_tests::http::Part::Text("id_number", &id),
        ],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("事项 V006 已在县里发布的第 2 版事项目录中取消"), "{}", r.text());
    assert_eq!(case_count(&data), 0, "nothing written");
}
