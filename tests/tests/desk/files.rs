//! Material files at the desk (issue 14) over plain HTTP: uploaded with
//! the multipart form at intake and on the case page as a clerk, refused
//! by content and size with the reason beside the field and nothing
//! written, served back byte for byte with headers that let nothing run,
//! only to staff of a desk whose scope holds the case, every opening in
//! the access log; replaced (补正) and taken off (移除) as events.

use std::path::{Path, PathBuf};
use system_tests::desks::{self, field_value, log_in, DeskProc, OTHER_VILLAGE, PASSWORD, VILLAGE};
use system_tests::http::{Part, Response, Session};
use system_tests::samples::{id_card_png, one_page_pdf, pdf_of_size, ELF};
use system_tests::{id_number, ok, ok_json, s, County};

/// The material files of a case, as the CLI beside the desk lists them.
fn files(data: &Path, case: &str) -> Vec<serde_json::Value> {
    ok_json("village-node", &["case", "files", "--data", s(data), case, "--json"]).as_array().unwrap().clone()
}

fn case_count(data: &Path) -> usize {
    ok_json("village-node", &["case", "list", "--data", s(data), "--json"]).as_array().map_or(0, |a| a.len())
}

/// Every file stored under a data directory's `files/`.
fn stored(data: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    let mut out = Vec::new();
    walk(&data.join("files"), &mut out);
    out
}

/// The `name` of the `<input>` whose aria-label starts with `label`.
fn input_named_by_label(html: &str, label: &str) -> String {
    let at = html.find(&format!("aria-label=\"{label}")).unwrap_or_else(|| panic!("no input labelled {label}"));
    let tag = &html[html[..at].rfind('<').unwrap()..at + html[at..].find('>').unwrap()];
    let v = tag.find("name=\"").unwrap() + 6;
    tag[v..v + tag[v..].find('"').unwrap()].to_string()
}

/// The first reason shown beside a field (`class="field-error"`, not empty).
fn field_error(r: &Response) -> String {
    let text = r.text();
    text.match_indices("class=\"field-error\"")
        .map(|(at, _)| {
            let start = at + text[at..].find('>').unwrap() + 1;
            text[start..start + text[start..].find('<').unwrap()].to_string()
        })
        .find(|t| !t.is_empty())
        .unwrap_or_else(|| panic!("no reason beside a field: {text}"))
}

fn upload(
    clerk: &mut Session,
    case: &str,
    csrf: &str,
    material: &str,
    name: &str,
    bytes: &[u8],
    replaces: &str,
) -> Response {
    clerk.post_multipart(
        &format!("/case/{case}/files"),
        &[
            Part::Text("csrf", csrf),
            Part::Text("material", material),
            Part::File("file", name, "application/octet-stream", bytes),
            Part::Text("replaces", replaces),
        ],
    )
}

#[test]
fn material_files_are_uploaded_refused_served_and_logged() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    desks::add_staff("village-node", &data, "wangfang", "王芳", "clerk");
    desks::add_staff("village-node", &data, "zhaolei", "赵磊", "admin");
    let desk = DeskProc::start("village-node", &["desk", "--data", s(&data), "--listen", "127.0.0.1:0"]);
    let (mut clerk, r) = log_in(desk.addr(), "wangfang", PASSWORD);
    assert_eq!(r.status, 303);

    // 收件 with a file: the form takes one per material.
    let form = clerk.get("/intake?item=V001").text();
    assert!(form.contains("enctype=\"multipart/form-data\""), "the intake form sends files");
    assert!(
        form.contains("accept=\"application/pdf,image/jpeg,image/png,.ofd\"")
            && form.contains("capture=\"environment\"")
    );
    let csrf = field_value(&form, "csrf").unwrap();
    let id_field = input_named_by_label(&form, "居民身份证");
    let id = id_number(61);
    let scan = one_page_pdf("ID card scan");
    let intake = |clerk: &mut Session, token: &str, file: &[u8]| {
        clerk.post_multipart(
            "/intake",
            &[
                Part::Text("csrf", token),
                Part::Text("item", "V001"),
                Part::Text("applicant", "张三"),
                Part::Text("id_number", &id),
                Part::Text("material", "申请表"),
                Part::File(&id_field, "身份证 正面.pdf", "application/pdf", file),
            ],
        )
    };

    // Refused at intake: an executable named .pdf, a file of 21 MB. The
    // reason is beside the field; no case is made.
    let r = intake(&mut clerk, &csrf, ELF);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(field_error(&r).contains("只能上传 PDF、JPEG、PNG 或 OFD"), "{}", field_error(&r));
    assert!(r.text().contains("value=\"张三\""), "what was typed is kept");
    let big = pdf_of_size(21 * 1024 * 1024, 7);
    let r = intake(&mut clerk, &csrf, &big);
    assert_eq!(r.status, 422);
    assert!(field_error(&r).contains("21.0 MB") && field_error(&r).contains("20 MB"), "{}", field_error(&r));
    assert_eq!(case_count(&data), 0, "a refused file made no case");
    assert!(stored(&data).is_empty(), "nor stored anything");

    // Without the token first, or with a wrong one: 403, nothing read.
    assert_eq!(intake(&mut clerk, "0000", &scan).status, 403);
    let r = clerk.post_multipart(
        "/intake",
        &[
            Part::Text("item", "V001"),
            Part::Text("csrf", &csrf),
            Part::File(&id_field, "a.pdf", "application/pdf", &scan),
        ],
    );
    assert_eq!(r.status, 403, "the token must come first");
    assert_eq!(case_count(&data), 0);

    // The PDF taken at intake.
    let r = intake(&mut clerk, &csrf, &scan);
    assert_eq!(r.status, 303, "{}", r.text());
    let case = r.header("location").unwrap().trim_start_matches("/case/").split('/').next().unwrap().to_string();
    let held = files(&data, &case);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (held[0]["material"].as_str(), held[0]["media_type"].as_str()),
        (Some("居民身份证"), Some("application/pdf"))
    );
    assert_eq!(held[0]["name"], "身份证 正面.pdf");
    let pdf_hash = held[0]["hash"].as_str().unwrap().to_string();

    // The notice lists what has neither a tick nor a file: only 户口簿.
    let notice = clerk.get(&format!("/case/{case}/notice")).text();
    assert!(notice.contains("户口簿") && !notice.contains("居民身份证（") && !notice.contains("申请表（"), "{notice}");

    // A PNG on the case page, for 户口簿 (the applicant brought it later).
    let page = clerk.get(&format!("/case/{case}")).text();
    assert!(page.contains("data-material=\"户口簿\""), "each material takes a file");
    let png = id_card_png();
    let r = upload(&mut clerk, &case, &csrf, "户口簿", "户口簿.png", &png, "");
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(files(&data, &case).len(), 2);
    let notice = clerk.get(&format!("/case/{case}/notice")).text();
    assert!(notice.contains("申请材料已齐全"), "a file is the material received: {notice}");

    // Refused on the case page: the reason beside the field, nothing written.
    let history =
        |d: &Path| ok_json("village-node", &["case", "show", "--data", s(d), &case, "--json"])["history"].clone();
    let before = (files(&data, &case), history(&data), stored(&data));
    let r = upload(&mut clerk, &case, &csrf, "申请表", "申请表.pdf", ELF, "");
    assert_eq!(r.status, 409);
    assert!(field_error(&r).contains("只能上传 PDF、JPEG、PNG 或 OFD"), "{}", field_error(&r));
    assert!(r.text().contains("“申请表”的文件未保存"));
    let r = upload(&mut clerk, &case, &csrf, "申请表", "申请表.pdf", &big, "");
    assert_eq!(r.status, 413);
    assert!(field_error(&r).contains("文件大小 21.0 MB，超过每个文件 20 MB 的上限"), "{}", field_error(&r));
    let r = clerk.post_multipart(
        &format!("/case/{case}/files"),
        &[
            Part::Text("csrf", &csrf),
            Part::Text("material", "申请表"),
            Part::File("file", "", "application/octet-stream", b""),
        ],
    );
    assert!(field_error(&r).contains("请先选择要上传的文件"), "no file chosen");
    // No session, no token, a wrong token, the token not first.
    let mut anon = Session::new(desk.addr());
    let r = upload(&mut anon, &case, &csrf, "申请表", "申请表.pdf", &scan, "");
    assert!(r.status == 303 && r.header("location").unwrap().starts_with("/login"));
    let r = clerk.post_multipart(
        &format!("/case/{case}/files"),
        &[Part::Text("material", "申请表"), Part::File("file", "申请表.pdf", "application/pdf", &scan)],
    );
    assert_eq!(r.status, 403);
    assert_eq!(upload(&mut clerk, &case, "0000", "申请表", "申请表.pdf", &scan, "").status, 403);
    assert_eq!(
        clerk
            .post_multipart(
                &format!("/case/{case}/files"),
                &[Part::Text("material", "申请表"), Part::Text("csrf", &csrf), Part::File("file", "a.pdf", "", &scan)],
            )
            .status,
        403
    );
    assert_eq!((files(&data, &case), history(&data), stored(&data)), before, "a refusal wrote nothing");

    // Served back byte for byte, typed by what was stored, nothing to run.
    let pdf_url = format!("/case/{case}/files/{pdf_hash}");
    let r = clerk.get(&pdf_url);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, scan, "byte-identical");
    assert_eq!(r.header("content-type"), Some("application/pdf"));
    assert_eq!(
        r.header("content-disposition"),
        Some("inline; filename*=UTF-8''%E8%BA%AB%E4%BB%BD%E8%AF%81%20%E6%AD%A3%E9%9D%A2.pdf")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("cache-control"), Some("private, no-store"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'none'"), "{csp}");
    let png_hash = files(&data, &case)[1]["hash"].as_str().unwrap().to_string();
    let r = clerk.get(&format!("/case/{case}/files/{png_hash}?thumbnail=1"));
    assert_eq!((r.status, r.header("content-type")), (200, Some("image/png")));
    assert_eq!(r.body, png);

    // Not to a browser without a session; not a file of another case or none.
    let r = anon.get(&pdf_url);
    assert!(r.status == 303 && r.body.is_empty(), "no bytes without a session");
    assert_eq!(clerk.get(&format!("/case/{case}/files/{}", "0".repeat(64))).status, 404);
    assert_eq!(clerk.get(&format!("/case/{case}/files/not-a-hash")).status, 404);

    // Staff of another village's desk: the case is not in its scope (and
    // not held there), so neither is the file.
    let other = county.enrol(OTHER_VILLAGE, "village-node");
    desks::add_staff("village-node", &other, "liuyang", "刘洋", "clerk");
    let other_desk = DeskProc::start("village-node", &["desk", "--data", s(&other), "--listen", "127.0.0.1:0"]);
    let (mut stranger, _) = log_in(other_desk.addr(), "liuyang", PASSWORD);
    let r = stranger.get(&pdf_url);
    assert_eq!(r.status, 404);
    assert!(!r.body.windows(scan.len()).any(|w| w == scan.as_slice()));

    // The case page lists each file: name, size, type, who and when, a
    // thumbnail of the image, links that open them.
    let page = clerk.get(&format!("/case/{case}")).text();
    for shown in ["身份证 正面.pdf", "户口簿.png", "PDF 文件", "PNG 图片", "王芳(wangfang)", "1 页"] {
        assert!(page.contains(shown), "{shown} on the case page");
    }
    assert!(page.contains(&format!("<img src=\"/case/{case}/files/{png_hash}?thumbnail=1\"")), "a thumbnail");
    assert!(page.contains(&format!("href=\"{pdf_url}\" target=\"_blank\"")), "the PDF opens in the browser");

    // 补正: a clearer PNG replaces the PDF; the PDF stays, marked. Then the
    // replacement is taken off (移除, with a note): marked, still listed.
    let mut clearer = png.clone();
    clearer.extend_from_slice(b"retaken");
    let r = upload(&mut clerk, &case, &csrf, "居民身份证", "重拍.png", &clearer, &pdf_hash);
    assert_eq!(r.status, 303, "{}", r.text());
    let held = files(&data, &case);
    let retaken = held.iter().find(|f| f["name"] == "重拍.png").unwrap()["hash"].as_str().unwrap().to_string();
    assert_eq!(held.iter().find(|f| f["hash"] == pdf_hash.as_str()).unwrap()["replaced_by"], retaken.as_str());
    let page = clerk.get(&format!("/case/{case}")).text();
    assert!(page.contains("已替换") && page.contains("身份证 正面.pdf"), "the old file stays, marked");
    let remove = format!("/case/{case}/files/{retaken}/remove");
    let r = clerk.post_form(&remove, &[("material", "居民身份证"), ("note", "拍糊了")]);
    assert_eq!(r.status, 403, "移除 needs the token");
    let r = clerk.post_form(&remove, &[("csrf", &csrf), ("material", "居民身份证"), ("note", "拍糊了")]);
    assert_eq!(r.status, 303, "{}", r.text());
    let page = clerk.get(&format!("/case/{case}")).text();
    assert!(page.contains("已移除") && page.contains("拍糊了") && page.contains("重拍.png"), "{page}");

    // Bytes altered on disk: an error page that says so, not the bytes.
    let at = stored(&data).into_iter().find(|p| p.ends_with(&pdf_hash)).unwrap();
    let mut bytes = std::fs::read(&at).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&at, &bytes).unwrap();
    let r = clerk.get(&pdf_url);
    assert_eq!(r.status, 500);
    assert!(r.text().contains("已损坏"), "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));

    // Every opening is in the access log: the PDF once (the other
    // village's 404 and the damaged file were not openings), the PNG once,
    // as a thumbnail.
    let (mut admin, _) = log_in(desk.addr(), "zhaolei", PASSWORD);
    let log = admin.get("/access").text();
    assert_eq!(log.matches("文件 身份证 正面.pdf").count(), 1, "{log}");
    assert_eq!(log.matches("文件 户口簿.png（缩略图）").count(), 1, "{log}");
    assert!(log.contains("wangfang"));
    let lines = ok("village-node", &["case", "files", "--data", s(&data), &case]);
    assert!(lines.contains("重拍.png"), "{lines}");
}

/// 同步 while files travel: the page (and the JSON its script polls)
/// shows the phase, the files and bytes so far and the rate as the
/// transfer runs, not only at the end.
#[test]
fn the_sync_page_follows_a_file_transfer_as_it_runs() {
    let county = County::new();
    let data = county.enrol(VILLAGE, "village-node");
    desks::add_staff("village-node", &data, "wangfang", "王芳", "clerk");
    let hub_dir = county.hub();
    let hub = system_tests::Server::start("county-hub", &["serve", "--data", s(&hub_dir), "--listen", "127.0.0.1:0"]);
    // A slow link, so that the transfer lasts a few seconds.
    let link = system_tests::Server::start(
        "county-sim",
        &["link", "--listen", "127.0.0.1:0", "--target", &hub.addr, "--rtt-ms", "60", "--kbps", "2000"],
    );
    let work = tempfile::tempdir().unwrap();
    let case = system_tests::take_case(s(&data), "张三", 1);
    let scan = pdf_of_size(2 * 1024 * 1024, 3);
    let path = system_tests::samples::write_file(work.path(), "申请表.pdf", &scan);
    ok(
        "village-node",
        &["case", "attach", "--data", s(&data), &case, "--material", "申请表", "--file", s(&path), "--as", "王芳"],
    );

    let desk =
        DeskProc::start("village-node", &["desk", "--data", s(&data), "--listen", "127.0.0.1:0", "--peer", &link.addr]);
    let (mut clerk, _) = log_in(desk.addr(), "wangfang", PASSWORD);
    let page = clerk.get("/sync").text();
    let csrf = field_value(&page, "csrf").unwrap();
    assert_eq!(clerk.post_form("/sync", &[("csrf", &csrf)]).status, 303);

    // A browser follows the page as staff would (its script polls).
    let browser = system_tests::webdriver::Browser::start().unwrap();
    let base = format!("http://{}", desk.addr());
    browser.goto(&format!("{base}/login")).unwrap();
    browser.find("input[name=login]").unwrap().send_keys("wangfang").unwrap();
    browser.find("input[name=password]").unwrap().send_keys(PASSWORD).unwrap();
    browser.find("button[type=submit]").unwrap().click().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let text_of = |b: &system_tests::webdriver::Browser, id: &str| {
        b.execute(&format!("var e = document.getElementById('{id}'); return e ? e.textContent : '';"), &[])
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut followed = None;
    let total = scan.len() as u64;
    let mut seen_midway = None;
    let mut page_midway = None;
    let started = std::time::Instant::now();
    loop {
        let status: serde_json::Value = serde_json::from_slice(&clerk.get("/sync/status").body).unwrap();
        if status["running_since"].is_null() {
            break;
        }
        let live = &status["live"];
        let sent = live["file_bytes_sent"].as_u64().unwrap_or(0);
        if live["phase"] == "files" && sent > 0 && sent < total && seen_midway.is_none() {
            seen_midway = Some(status.clone());
            page_midway = Some(clerk.get("/sync").text());
            // The open page's figures move without a reload.
            browser.goto(&format!("{base}/sync")).unwrap();
            let first = text_of(&browser, "live-mb-sent");
            let mut later = first.clone();
            let watching = std::time::Instant::now();
            // Until the figure moves, or the page reloads at the end.
            while later == first && watching.elapsed() < std::time::Duration::from_secs(20) {
                std::thread::sleep(std::time::Duration::from_millis(300));
                later = text_of(&browser, "live-mb-sent");
            }
            let screens = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/desk-screens");
            std::fs::create_dir_all(&screens).unwrap();
            browser.screenshot(screens.join("08b-village-sync-files-running.png")).unwrap();
            followed = Some((first, later, text_of(&browser, "live-phase")));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "the sync never ended");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let midway = seen_midway.expect("the status showed the file transfer while it ran");
    assert_eq!(midway["live_phase"], "案件记录已全部同步，正在传输材料文件", "{midway}");
    assert_eq!(midway["live"]["events_sent"].as_u64().map(|n| n > 0), Some(true), "the events went first: {midway}");
    assert_eq!(midway["live"]["files_sent"], 0, "the file was still in flight: {midway}");
    assert!(midway["live"]["file_bytes_per_second"].as_u64().unwrap() > 0, "{midway}");
    let (first, later, phase) = followed.unwrap();
    assert_eq!(phase, "案件记录已全部同步，正在传输材料文件");
    let mb = |t: &str| t.parse::<f64>().unwrap_or(0.0);
    assert!(mb(&later) > mb(&first) || later.is_empty(), "the page's figures follow the transfer: {first} → {later}");
    let page = page_midway.unwrap();
    assert!(page.contains("正在传输材料文件") && page.contains("id=\"live-mb-sent\""), "{page}");

    // At the end, the outcome names the file sent; the county holds it.
    let end = clerk.get("/sync").text();
    assert!(end.contains("发出 1 个（2.1 MB）"), "{end}");
    let out = work.path().join("back.pdf");
    let hash = files(&data, &case)[0]["hash"].as_str().unwrap().to_string();
    ok("county-hub", &["case", "file", "--data", s(&hub_dir), &case, &hash, "--out", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), scan);
}
