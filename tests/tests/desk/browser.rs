//! The day's work in a real headless Chromium, across the three tiers:
//! a village clerk takes a case (a wrong ID check digit first) with a photo
//! of the ID card, prints the receipt, uploads the signed form on the case
//! page, pre-reviews and forwards it, syncs; the township reviewer
//! accepts and approves it; the county ledger shows it, filtered, and
//! exports it. A screenshot of every main page goes to
//! `target/desk-screens/` for people to look at.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use system_tests::desks::{Desks, PASSWORD, TOWNSHIP};
use system_tests::webdriver::Browser;
use system_tests::{id_number, ok_json, s};

fn screens() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("desk-screens")
}

fn shot(b: &Browser, name: &str) -> Result<()> {
    b.screenshot(screens().join(format!("{name}.png")))
}

fn log_in(b: &Browser, base: &str, login: &str) -> Result<()> {
    b.goto(&format!("{base}/login"))?;
    b.find("input[name=login]")?.send_keys(login)?;
    b.find("input[name=password]")?.send_keys(PASSWORD)?;
    b.find("button[type=submit]")?.click()?;
    wait_for(b, "the page after login", |b| Ok(!b.url()?.contains("/login")))
}

/// Waits up to 30 s for `cond`, reloading nothing (the caller does).
fn wait_for(b: &Browser, what: &str, mut cond: impl FnMut(&Browser) -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if cond(b)? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("timed out waiting for {what} at {}", b.url()?)
}

/// The page's text, read in one script call (no element to go stale while
/// a page loads).
fn body_text(b: &Browser) -> Result<String> {
    Ok(b.execute("return document.body ? document.body.innerText : '';", &[])?.as_str().unwrap_or_default().to_string())
}

/// Clicks a form's button and waits for the page that follows; it must
/// say 已保存.
fn submit_and_wait(b: &Browser, button: &str) -> Result<()> {
    b.execute("window.__before_step = true;", &[])?;
    b.find(button)?.click()?;
    wait_for(b, "the page after the form", |b| {
        Ok(b.execute("return window.__before_step === undefined && document.readyState === 'complete';", &[])?
            == serde_json::Value::Bool(true))
    })?;
    let text = body_text(b)?;
    anyhow::ensure!(text.contains("已保存"), "the form was not saved: {text}");
    Ok(())
}

/// Clicks a step's button and waits for the page that follows.
fn click_step(b: &Browser, value: &str) -> Result<()> {
    submit_and_wait(b, &format!("button[name=step][value^='{value}']"))
}

/// Chooses a file for a material on the case page, as a clerk does in the
/// file dialog (WebDriver sends the path to the file input), and uploads it.
fn upload(b: &Browser, material: &str, file: &std::path::Path) -> Result<()> {
    let form = format!("form.upload[data-material='{material}']");
    b.find(&format!("{form} input[type=file]"))?.send_keys(file.to_str().context("a UTF-8 path")?)?;
    submit_and_wait(b, &format!("{form} button[type=submit]"))
}

/// Scrolls the case page to its materials, for a screenshot of them.
fn show_materials(b: &Browser) -> Result<()> {
    b.execute("document.querySelector('ul.materials').closest('section').querySelector('h2:nth-of-type(2)').scrollIntoView();", &[])?;
    Ok(())
}

#[test]
fn a_case_goes_from_the_village_desk_to_the_county_ledger() -> Result<()> {
    let desks = Desks::start();
    let b = Browser::start().context("the desk browser tests need Debian's chromium and chromium-driver")?;
    // A village laptop's screen.
    b.set_window_size(1366, 768)?;
    let (village, township, county) = (&desks.village.url, &desks.township.url, &desks.hub.url);

    // The village clerk logs in.
    b.goto(&format!("{village}/queue"))?;
    assert!(b.url()?.contains("/login"), "no session: the login page");
    shot(&b, "01-login")?;
    log_in(&b, village, "wangfang")?;
    shot(&b, "02-village-queue")?;

    // 收件: the item list filters as she types, offline.
    b.goto(&format!("{village}/intake"))?;
    let all = b.find_all("#item-list li:not(.hidden)")?.len();
    b.find("#item-search")?.send_keys("医疗保险参保")?;
    let shown = b.find_all("#item-list li:not(.hidden)")?.len();
    assert!(shown >= 1 && shown < all, "typing narrows the list ({all} → {shown})");
    shot(&b, "03-intake-pick")?;
    b.find("a[href='/intake?item=V001']")?.click()?;

    // A wrong check digit: the browser says so, and so does the server.
    let good = id_number(42);
    let mut bad = good.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == '1' { '2' } else { '1' });
    b.find("input[name=applicant]")?.send_keys("张三")?;
    b.find("input[name=id_number]")?.send_keys(&bad)?;
    b.find("input[name=phone]")?.send_keys("13800001234")?;
    b.find("input[name=address]")?.send_keys("文林街道一社区 3 组 12 号")?;
    b.find("input[name=material][value='居民身份证']")?.click()?;
    b.find("input[name=material][value='申请表']")?.click()?;
    // A photo of the ID card, taken with the form (a file input per material).
    let work = tempfile::tempdir()?;
    let photo = work.path().join("身份证照片.png");
    std::fs::write(&photo, system_tests::samples::id_card_png())?;
    let form = work.path().join("申请表（已签字）.pdf");
    std::fs::write(&form, system_tests::samples::one_page_pdf("Application form, signed by Zhang San"))?;
    let id_card_file = "input[type=file][aria-label^='居民身份证']";
    b.find(id_card_file)?.send_keys(photo.to_str().context("a UTF-8 path")?)?;
    b.execute("document.querySelector('ul.intake-materials').scrollIntoView();", &[])?;
    shot(&b, "03b-intake-materials")?;
    let hint = b.find("#id_number-error")?.text()?;
    assert!(hint.contains("校验位"), "the browser checks the digit: {hint:?}");
    b.find("form.intake button[type=submit]")?.click()?;
    wait_for(&b, "the refusal", |b| Ok(body_text(b)?.contains("校验位不正确")))?;
    shot(&b, "04-intake-refused")?;
    let held = ok_json(
        "village-node",
        &["case", "list", "--data", s(&desks.county.data(system_tests::desks::VILLAGE)), "--json"],
    );
    assert_eq!(held.as_array().map(Vec::len), Some(0), "nothing was written");

    // The good number: the case exists and the receipt opens.
    let id = b.find("input[name=id_number]")?;
    id.clear()?;
    id.send_keys(&good)?;
    // The browser kept no file across the refusal (the page says so): chosen again.
    assert!(body_text(&b)?.contains("浏览器不会保留已选的文件"), "the clerk is told to choose the file again");
    b.find(id_card_file)?.send_keys(photo.to_str().context("a UTF-8 path")?)?;
    b.find("form.intake button[type=submit]")?.click()?;
    wait_for(&b, "the receipt", |b| Ok(b.url()?.contains("/receipt")))?;
    let url = b.url()?;
    let case = url.split("/case/").nth(1).and_then(|r| r.split('/').next()).context("case id in the URL")?.to_string();
    let receipt = body_text(&b)?;
    assert!(receipt.contains("受理回执") && receipt.contains(&case) && receipt.contains("张三"), "{receipt}");
    assert!(!receipt.contains(&good), "the receipt masks the ID number");
    assert!(b.find_all("figure.qr svg")?.len() == 1, "the receipt carries a QR code");
    shot(&b, "05-receipt")?;
    b.goto(&format!("{village}/case/{case}/notice"))?;
    assert!(body_text(&b)?.contains("户口簿"), "the notice lists what is still needed");
    shot(&b, "06-notice")?;

    // Material files: the signed 申请表 (a PDF) on the case page, beside
    // the photo of the ID card taken at intake, shown as a thumbnail.
    b.goto(&format!("{village}/case/{case}"))?;
    upload(&b, "申请表", &form)?;
    wait_for(&b, "the thumbnail", |b| {
        Ok(b.execute(
            "const i = document.querySelector('li.file img'); return !!i && i.complete && i.naturalWidth > 0;",
            &[],
        )? == serde_json::Value::Bool(true))
    })?;
    let page = body_text(&b)?;
    assert!(
        page.contains("身份证照片.png") && page.contains("申请表（已签字）.pdf") && page.contains("PNG 图片"),
        "{page}"
    );
    show_materials(&b)?;
    shot(&b, "06b-village-case-files")?;
    // The PDF opens in the browser's own viewer (headless Chromium draws
    // the viewer blank in a screenshot, so none is taken).
    let pdf = b.execute(
        "return [...document.querySelectorAll('li.file .file-name a')].find(a => a.textContent.includes('.pdf')).href;",
        &[],
    )?;
    b.goto(pdf.as_str().context("the PDF's link")?)?;
    let opened = b.execute("return document.contentType;", &[])?;
    assert_eq!(opened, "application/pdf", "the browser shows the PDF itself");
    b.goto(&format!("{village}/case/{case}/notice"))?;
    assert!(body_text(&b)?.contains("户口簿"), "the 户口簿 is still needed: neither ticked nor a file");

    // Pre-review and forward to the township.
    b.goto(&format!("{village}/case/{case}"))?;
    click_step(&b, "prereview_pass")?;
    click_step(&b, &format!("forward:{TOWNSHIP}"))?;
    assert!(body_text(&b)?.contains("已转报"));
    shot(&b, "07-village-case")?;

    // Sync now, and see it done.
    b.goto(&format!("{village}/sync"))?;
    b.find("#sync-status button[type=submit]")?.click()?;
    wait_for(&b, "the sync to finish", |b| {
        let t = body_text(b)?;
        if t.contains("正在同步") {
            return Ok(false);
        }
        if !t.contains("上次成功同步以来") {
            b.goto(&format!("{village}/sync"))?;
            return Ok(false);
        }
        Ok(true)
    })?;
    let sync = body_text(&b)?;
    assert!(sync.contains("发送"), "{sync}");
    shot(&b, "08-village-sync")?;

    // The township reviewer finds it waiting, accepts and approves it.
    log_in(&b, township, "lina")?;
    b.goto(&format!("{township}/queue"))?;
    assert!(body_text(&b)?.contains(&case), "the township's queue holds the case");
    shot(&b, "09-township-queue")?;
    b.goto(&format!("{township}/case/{case}"))?;
    // The village's files came up with the sync: the reviewer sees them.
    let page = body_text(&b)?;
    assert!(page.contains("身份证照片.png") && !page.contains("尚未同步到本机"), "{page}");
    show_materials(&b)?;
    shot(&b, "09b-township-case-files")?;
    // The applicant brings the 户口簿 the notice asked for; then 受理.
    b.execute("window.__before_step = true;", &[])?;
    b.find("form.row[action$='/material'] select[name=name] option[value='户口簿']")?.click()?;
    b.find("form.row[action$='/material'] button[type=submit]")?.click()?;
    wait_for(&b, "the material to be recorded", |b| {
        Ok(b.execute("return window.__before_step === undefined && document.readyState === 'complete';", &[])?
            == serde_json::Value::Bool(true))
    })?;
    click_step(&b, "accept")?;
    click_step(&b, "approve")?;
    let page = body_text(&b)?;
    assert!(page.contains("准予") && page.contains("王芳(wangfang)") && page.contains("李娜(lina)"), "{page}");
    shot(&b, "10-township-case")?;

    // The applicant rates the outcome 非常不满意 at the window: a follow-up
    // opens, listed on the township's 回访 page.
    b.find("form[action$='/rate'] select[name=level] option[value='5']")?.click()?;
    b.find("form[action$='/rate'] button[type=submit]")?.click()?;
    wait_for(&b, "the rating", |b| Ok(body_text(b)?.contains("整改回访")))?;
    b.goto(&format!("{township}/followups"))?;
    let followups = body_text(&b)?;
    assert!(followups.contains(&case) && followups.contains("待回访"), "{followups}");
    shot(&b, "10b-township-followups")?;

    // 出证: the township issues the result and its signed electronic licence.
    b.goto(&format!("{township}/case/{case}"))?;
    click_step(&b, "issue")?;
    b.goto(&format!("{township}/case/{case}/licence"))?;
    let licence = body_text(&b)?;
    assert!(licence.contains("电子证照") && licence.contains(&case) && !licence.contains(&good), "{licence}");
    assert_eq!(b.find_all("figure.qr svg")?.len(), 1, "a QR code of the signed licence");
    shot(&b, "10c-township-licence")?;

    // The county ledger shows it with the decision (the township syncs up
    // every second), filtered by township and state.
    log_in(&b, county, "admin")?;
    let filtered = format!("{county}/ledger?township={TOWNSHIP}&state=issued");
    wait_for(&b, "the case at the county", |b| {
        b.goto(&filtered)?;
        Ok(body_text(b)?.contains(&case))
    })?;
    let rows = b.find_all("table.cases tbody tr")?.len();
    assert_eq!(rows, 1, "the filter keeps the one approved case");
    shot(&b, "11-county-ledger")?;
    b.goto(&format!("{county}/ledger?state=withdrawn"))?;
    assert!(!body_text(&b)?.contains(&case), "a filter that does not match leaves it out");

    // CSV export of the filtered set, fetched with the page's own session.
    b.goto(&filtered)?;
    let fetch_csv = |b: &Browser| -> Result<String> {
        let csv = b.execute("return fetch('/ledger.csv?township=511421101&state=issued').then(r => r.text());", &[])?;
        Ok(csv.as_str().context("CSV text")?.to_string())
    };
    wait_for(&b, "the export to hold the case", |b| Ok(fetch_csv(b)?.contains(&case)))?;
    let csv = fetch_csv(&b)?;
    assert!(csv.contains(&case) && csv.contains("已出证") && csv.contains("张三"), "{csv}");
    assert_eq!(csv.lines().count(), 2, "a header and the one case");

    for (path, name) in
        [("/dashboard", "12-county-dashboard"), ("/nodes", "13-county-nodes"), ("/quarantine", "14-county-quarantine")]
    {
        b.goto(&format!("{county}{path}"))?;
        shot(&b, name)?;
    }
    b.goto(&format!("{county}/case/{case}"))?;
    shot(&b, "15-county-case")?;
    Ok(())
}
