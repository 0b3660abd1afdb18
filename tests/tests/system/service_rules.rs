//! Service rules of the reform through the real binaries: time limits
//! counted in working days from acceptance, overdue lists.

use system_tests::{cmd, id_number, s, County};

const TOWNSHIP: &str = "511421101";

/// Runs a township command with its clock shifted by `skew_days` (debug
/// builds read `CASE_NODE_CLOCK_SKEW_MS`), as if it happened then.
fn township_at(skew_days: i64, args: &[&str]) -> serde_json::Value {
    let out = cmd("township-node")
        .env("CASE_NODE_CLOCK_SKEW_MS", (skew_days * 86_400_000).to_string())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or(serde_json::Value::Null)
}

#[test]
fn an_accepted_case_has_a_due_date_and_becomes_overdue() {
    let county = County::new();
    let t = county.enrol(TOWNSHIP, "township-node");
    let data = s(&t);
    let new_case = |serial: u32| -> String {
        let id = id_number(serial);
        let args = ["case", "new", "--data", data, "--item", "V001", "--applicant", "张三", "--id-number", &id];
        let v = township_at(
            0,
            &[
                &args[..],
                &["--material", "居民身份证", "--material", "申请表", "--material", "户口簿", "--as", "李娜", "--json"],
            ]
            .concat(),
        );
        v["case_id"].as_str().unwrap().to_string()
    };
    // Accepted today, with a limit of 3 working days.
    let case = new_case(1);
    township_at(0, &["case", "accept", "--data", data, &case, "--as", "李娜"]);
    // Never accepted: never timed.
    let untimed = new_case(2);

    let show = |skew: i64, case: &str| township_at(skew, &["case", "show", "--data", data, case, "--json"]);
    let ids = |v: serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|c| c["case_id"].as_str().unwrap().to_string()).collect()
    };
    let now = show(0, &case);
    assert!(now["due"].as_str().is_some_and(|d| d.len() == 10), "{now}");
    assert_eq!((now["limit_days"].as_u64(), now["working_days_used"].as_u64()), (Some(3), Some(0)));
    assert_eq!(now["warning"], serde_json::Value::Null);
    assert_eq!(show(0, &untimed)["due"], serde_json::Value::Null);
    assert!(ids(township_at(0, &["case", "list", "--data", data, "--overdue", "--json"])).is_empty());
    let soon = ids(township_at(0, &["case", "list", "--data", data, "--due-within", "5", "--json"]));
    assert_eq!(soon, vec![case.clone()], "due within 5 working days; the untimed case is not listed");

    // A month later it is overdue: a red card, listed as overdue.
    let later = show(30, &case);
    assert_eq!(later["warning"], "red", "{later}");
    assert_eq!(later["working_days_left"], 0);
    assert_eq!(later["due"], now["due"], "the due date does not move with the day it is looked at");
    let overdue = ids(township_at(30, &["case", "list", "--data", data, "--overdue", "--json"]));
    assert_eq!(overdue, vec![case.clone()]);

    // Deciding stops the clock; decided late, it is recorded as late.
    township_at(30, &["case", "approve", "--data", data, &case, "--as", "李娜"]);
    assert!(ids(township_at(31, &["case", "list", "--data", data, "--overdue", "--json"])).is_empty());
    let decided = show(31, &case);
    assert_eq!((decided["on_time"].as_bool(), decided["warning"].as_str()), (Some(false), None), "{decided}");
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn township_fails(args: &[&str]) -> String {
    let out = cmd("township-node").args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should have been refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// 容缺受理: only what the catalogue allows may be missing, the promised
/// day is not in the past; past it the case is due to be ended unless the
/// material came; 终止 ends it.
#[test]
fn a_case_accepted_with_materials_missing_is_flagged_when_the_promise_passes() {
    let county = County::new();
    let t = county.enrol(TOWNSHIP, "township-node");
    let data = s(&t);
    let today = proto::calendar::Day::of_ms(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
    );
    let in_3 = proto::calendar::Day(today.0 + 3).to_string();
    let yesterday = proto::calendar::Day(today.0 - 1).to_string();
    let new_case = |serial: u32| -> String {
        let id = id_number(serial);
        let args = ["case", "new", "--data", data, "--item", "V001", "--applicant", "张三", "--id-number", &id];
        let v = township_at(0, &[&args[..], &["--material", "居民身份证", "--as", "李娜", "--json"]].concat());
        v["case_id"].as_str().unwrap().to_string()
    };
    let show = |skew: i64, case: &str| township_at(skew, &["case", "show", "--data", data, case, "--json"]);
    let accept = |case: &str, missing: &str, date: &str| -> Vec<String> {
        vec![
            "case".into(),
            "accept".into(),
            "--data".into(),
            data.into(),
            case.into(),
            "--missing".into(),
            missing.into(),
            "--promise-date".into(),
            date.into(),
            "--as".into(),
            "李娜".into(),
        ]
    };

    let case = new_case(1);
    // V001 requires the 申请表 at acceptance; only the 户口簿 may be missing.
    let err = township_fails(&refs(&accept(&case, "申请表", &in_3)));
    assert!(err.contains("may not be missing at acceptance"), "{err}");
    let err = township_fails(&refs(&accept(&case, "户口簿", &in_3)));
    assert!(err.contains("申请表 is required and has not been received"), "{err}");
    let err = township_fails(&refs(&accept(&case, "居民身份证", &in_3)));
    assert!(err.contains("already received"), "{err}");
    township_at(0, &["case", "material", "--data", data, &case, "--add", "申请表", "--as", "李娜"]);
    let err = township_fails(&refs(&accept(&case, "户口簿", &yesterday)));
    assert!(err.contains("in the past"), "{err}");
    assert_eq!(show(0, &case)["state"], "received", "nothing was written");

    township_at(0, &refs(&accept(&case, "户口簿", &in_3)));
    let v = show(0, &case);
    assert_eq!((v["state"].as_str(), v["missing_promised"].as_str()), (Some("accepted"), Some(in_3.as_str())));
    assert_eq!(v["missing_materials"], serde_json::json!(["户口簿"]));
    assert_eq!(v["termination_due"], false);
    assert!(v["due"].is_string(), "容缺受理 starts the clock like 受理");
    assert_eq!(show(10, &case)["termination_due"], true, "the promise passed without the material");

    // The material arrives: the flag clears.
    township_at(0, &["case", "material", "--data", data, &case, "--add", "户口簿", "--as", "李娜"]);
    let v = show(10, &case);
    assert_eq!((v["termination_due"].as_bool(), v["missing_materials"].clone()), (Some(false), serde_json::json!([])));

    // It never arrives: 终止 ends the case, recorded.
    let other = new_case(2);
    township_at(0, &["case", "material", "--data", data, &other, "--add", "申请表", "--as", "李娜"]);
    township_at(0, &refs(&accept(&other, "户口簿", &in_3)));
    township_at(10, &["case", "terminate", "--data", data, &other, "--as", "李娜"]);
    let v = show(10, &other);
    assert_eq!(v["state"], "terminated");
    assert!(v["history"].as_array().unwrap().iter().any(|h| h["kind"] == "terminate"));
}

/// 好差评 "一事一评": one rating per stage, only once reached; a 非常不满意
/// rating opens a follow-up owned by the node that handled the case, seen
/// at the township and the county, and closed with a response.
#[test]
fn a_very_poor_rating_opens_a_follow_up_seen_up_the_tiers() {
    let county = County::new();
    let v = county.enrol("511421101001", "village-node");
    let t = county.enrol(TOWNSHIP, "township-node");
    let hub =
        system_tests::Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let (v, t, h) = (s(&v).to_string(), s(&t).to_string(), s(&county.hub()).to_string());
    let sync = |program: &str, data: &str| {
        system_tests::ok(program, &["sync", "--data", data, "--peer", &hub.addr]);
    };
    let run = |program: &str, args: &[&str]| system_tests::ok(program, args);
    let case = system_tests::take_case(&v, "张三", 21);
    run("village-node", &["case", "prereview", "--data", &v, &case, "--pass", "--as", "王芳"]);
    // Not accepted yet: no stage can be rated.
    let err =
        system_tests::fails("village-node", &["case", "rate", "--data", &v, &case, "--level", "5", "--as", "王芳"]);
    assert!(err.contains("has not reached"), "{err}");
    run("village-node", &["case", "forward", "--data", &v, &case, "--as", "王芳"]);
    sync("village-node", &v);
    sync("township-node", &t);
    run("township-node", &["case", "material", "--data", &t, &case, "--add", "申请表", "--as", "李娜"]);
    run("township-node", &["case", "accept", "--data", &t, &case, "--as", "李娜"]);
    let err = system_tests::fails(
        "township-node",
        &["case", "rate", "--data", &t, &case, "--level", "2", "--stage", "done", "--as", "李娜"],
    );
    assert!(err.contains("has not reached the done stage"), "{err}");
    run(
        "township-node",
        &[
            "case",
            "rate",
            "--data",
            &t,
            &case,
            "--level",
            "2",
            "--stage",
            "accept",
            "--channel",
            "扫码",
            "--as",
            "李娜",
        ],
    );
    let err = system_tests::fails(
        "township-node",
        &["case", "rate", "--data", &t, &case, "--level", "1", "--stage", "accept", "--as", "李娜"],
    );
    assert!(err.contains("one rating per stage"), "{err}");
    let err = system_tests::fails(
        "township-node",
        &["case", "rate", "--data", &t, &case, "--level", "1", "--channel", "传真", "--as", "李娜"],
    );
    assert!(err.contains("unknown rating channel"), "{err}");
    for step in ["approve", "issue"] {
        run("township-node", &["case", step, "--data", &t, &case, "--as", "李娜"]);
    }
    run(
        "township-node",
        &["case", "rate", "--data", &t, &case, "--level", "5", "--stage", "done", "--note", "跑了两趟", "--as", "李娜"],
    );
    sync("township-node", &t);

    let open = |program: &str, data: &str| -> Vec<serde_json::Value> {
        system_tests::ok_json(program, &["followup", "list", "--data", data, "--json"]).as_array().unwrap().clone()
    };
    for (program, data) in [("township-node", &t), ("county-hub", &h)] {
        let rows = open(program, data);
        assert_eq!(rows.len(), 1, "{program}: {rows:?}");
        assert_eq!((rows[0]["case_id"].as_str(), rows[0]["level"].as_u64()), (Some(case.as_str()), Some(5)));
        assert_eq!(rows[0]["state"], "open");
        assert_eq!(rows[0]["owner"], TOWNSHIP, "owned by the node that handled the case");
        assert!(rows[0]["due"].as_str().is_some_and(|d| d > rows[0]["rated"].as_str().unwrap()));
    }
    let err = system_tests::fails(
        "township-node",
        &["followup", "close", "--data", &t, &case, "--response", " ", "--as", "李娜"],
    );
    assert!(err.contains("response"), "{err}");
    run(
        "township-node",
        &[
            "followup",
            "close",
            "--data",
            &t,
            &case,
            "--response",
            "已改为一次办结",
            "--callback",
            "满意",
            "--as",
            "李娜",
        ],
    );
    sync("township-node", &t);
    assert!(open("county-hub", &h).is_empty(), "closed everywhere once synced");
    let all = system_tests::ok_json("county-hub", &["followup", "list", "--data", &h, "--all", "--json"]);
    assert_eq!(all[0]["state"], "closed");
    assert_eq!(all[0]["response"], "已改为一次办结");
}

/// 一件事一次办: one form at the village makes one case per item, each
/// decided at its own tier in parallel; the bundle is done once, when the
/// last of them is.
#[test]
fn a_bundle_decided_at_two_tiers_in_parallel_is_done_once() {
    let county = County::new();
    let v = county.enrol("511421101001", "village-node");
    let t = county.enrol(TOWNSHIP, "township-node");
    let hub =
        system_tests::Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let (v, t, h) = (s(&v).to_string(), s(&t).to_string(), s(&county.hub()).to_string());
    let sync = |program: &str, data: &str| {
        system_tests::ok(program, &["sync", "--data", data, "--peer", &hub.addr]);
    };
    let run = |program: &str, args: &[&str]| system_tests::ok(program, args);
    let bundles = system_tests::ok_json("village-node", &["catalogue", "bundles", "--data", &v, "--json"]);
    assert!(bundles.as_array().unwrap().len() >= 5, "{bundles}");
    let id = id_number(31);
    let base = ["case", "new", "--data", &v, "--applicant", "刘洋", "--id-number", &id, "--as", "王芳", "--json"];
    let err = system_tests::fails("village-node", &[&base[..], &["--bundle", "B99"]].concat());
    assert!(err.contains("B99 is not in the catalogue"), "{err}");
    let err =
        system_tests::fails("village-node", &[&base[..], &["--bundle", "B01", "--material", "营业执照"]].concat());
    assert!(err.contains("not a material of bundle B01"), "{err}");
    assert_eq!(system_tests::ok_json("village-node", &["case", "list", "--data", &v, "--json"]), serde_json::json!([]));

    let made = system_tests::ok_json(
        "village-node",
        &[
            &base[..],
            &[
                "--bundle",
                "B01",
                "--material",
                "居民身份证",
                "--material",
                "申请表",
                "--material",
                "户口簿",
                "--material",
                "住院分娩记录",
                "--material",
                "出生医学证明",
            ],
        ]
        .concat(),
    );
    let bundle = made["bundle_id"].as_str().unwrap().to_string();
    let cases: Vec<String> = made["case_ids"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().into()).collect();
    assert_eq!(cases.len(), 4, "one case per item of 新生儿出生一件事");
    for c in &cases {
        run("village-node", &["case", "prereview", "--data", &v, c, "--pass", "--as", "王芳"]);
        run("village-node", &["case", "forward", "--data", &v, c, "--as", "王芳"]);
    }
    sync("village-node", &v);
    sync("township-node", &t);
    let decide = |program: &str, data: &str, who: &str| {
        let held = system_tests::ok_json(program, &["case", "list", "--data", data, "--state", "forwarded", "--json"]);
        let mine: Vec<String> = held
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["handler"] == who)
            .map(|c| c["case_id"].as_str().unwrap().to_string())
            .collect();
        for c in &mine {
            for step in ["accept", "approve"] {
                run(program, &["case", step, "--data", data, c, "--as", "审核员"]);
            }
        }
        mine.len()
    };
    assert_eq!(decide("township-node", &t, TOWNSHIP), 3, "three of the four are the township's");
    sync("township-node", &t);
    sync("village-node", &v);
    let show = |program: &str, data: &str| {
        system_tests::ok_json(program, &["bundle", "show", "--data", data, &bundle, "--json"])
    };
    assert_eq!(show("village-node", &v)["state"], "open", "the county's item is still open");
    assert_eq!(decide("county-hub", &h, "511421"), 1, "and one the county's, decided in parallel");
    sync("village-node", &v);
    let done = show("village-node", &v);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["cases"].as_array().unwrap().len(), 4);
    assert_eq!(show("county-hub", &h)["state"], "done", "the county sees the same bundle");
}

/// 电子证照: the issuing node signs a licence any window checks offline; an
/// altered one fails, and so does one signed after the county revoked the
/// issuing node's key (the one signed before still holds).
#[test]
fn a_licence_verifies_offline_and_a_tampered_or_revoked_one_does_not() {
    let county = County::new();
    let t = county.enrol(TOWNSHIP, "township-node");
    let v = county.enrol("511421101001", "village-node");
    let hub =
        system_tests::Server::start("county-hub", &["serve", "--data", s(&county.hub()), "--listen", "127.0.0.1:0"]);
    let (v, t, h) = (s(&v).to_string(), s(&t).to_string(), s(&county.hub()).to_string());
    let sync = |program: &str, data: &str| {
        system_tests::ok(program, &["sync", "--data", data, "--peer", &hub.addr]);
    };
    let run = |program: &str, args: &[&str]| system_tests::ok(program, args);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    let township_case = |serial: u32| system_tests::township_result(&t, "周杰", serial, "approve");
    let first = township_case(1);
    let err = system_tests::fails("village-node", &["case", "licence", "--data", &v, &first, "--out", &file("x.json")]);
    assert!(!err.is_empty());
    run("township-node", &["case", "licence", "--data", &t, &first, "--out", &file("good.json")]);
    sync("township-node", &t);
    sync("village-node", &v);
    let ok = system_tests::ok("village-node", &["verify-licence", "--data", &v, &file("good.json")]);
    assert!(ok.starts_with("valid") && ok.contains("周*"), "{ok}");

    // Altered: the holder changed.
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(file("good.json")).unwrap()).unwrap();
    doc["holder"] = serde_json::json!("李*");
    std::fs::write(file("forged.json"), serde_json::to_vec(&doc).unwrap()).unwrap();
    let err = system_tests::fails("village-node", &["verify-licence", "--data", &v, &file("forged.json")]);
    assert!(err.contains("NOT valid") && err.contains("signature"), "{err}");

    // The township's laptop is lost: the county revokes its key. What the
    // stolen laptop signs afterwards fails; the earlier licence still holds.
    run("county-hub", &["revoke", "--data", &h, "--node", TOWNSHIP, "--reason", "笔记本丢失", "--as", "陈静"]);
    sync("village-node", &v);
    let later = township_case(2);
    run("township-node", &["case", "licence", "--data", &t, &later, "--out", &file("after.json")]);
    let err = system_tests::fails("village-node", &["verify-licence", "--data", &v, &file("after.json")]);
    assert!(err.contains("revoked"), "{err}");
    // The licence issued before the revocation still holds where its 出证
    // event is held (the county); a window that does not hold it says it
    // cannot confirm it offline, rather than taking the thief's word.
    let still = system_tests::ok("county-hub", &["verify-licence", "--data", &h, &file("good.json")]);
    assert!(still.starts_with("valid"), "{still}");
    let unsure = system_tests::fails("village-node", &["verify-licence", "--data", &v, &file("good.json")]);
    assert!(unsure.contains("cannot confirm offline"), "{unsure}");
}

/// 帮代办 and the statistics: an agent's cases are listed by agent; the
/// statistics count received, accepted, done, on time, 容缺 outcomes and
/// satisfaction, per township and in total, for a date range.
#[test]
fn agents_are_recorded_and_the_statistics_count_what_happened() {
    let county = County::new();
    let t = county.enrol(TOWNSHIP, "township-node");
    let data = s(&t);
    let run = |args: &[&str]| system_tests::ok("township-node", args);
    let new_case = |serial: u32, extra: &[&str]| -> String {
        let id = id_number(serial);
        let args = ["case", "new", "--data", data, "--item", "V001", "--applicant", "张三", "--id-number", &id];
        let v = township_at(
            0,
            &[
                &args[..],
                extra,
                &["--material", "居民身份证", "--material", "申请表", "--material", "户口簿", "--as", "李娜", "--json"],
            ]
            .concat(),
        );
        v["case_id"].as_str().unwrap().to_string()
    };
    let err = system_tests::fails(
        "township-node",
        &[
            "case",
            "new",
            "--data",
            data,
            "--item",
            "V001",
            "--applicant",
            "张三",
            "--id-number",
            &id_number(9),
            "--agent",
            "代办员老王",
            "--as",
            "李娜",
        ],
    );
    assert!(err.contains("authorisation"), "an agent files only with the applicant's authorisation: {err}");
    let by_agent = new_case(1, &["--agent", "代办员老王", "--authorisation", "委托书 2026-001"]);
    let plain = new_case(2, &[]);
    let tolerated = new_case(3, &[]);
    let never = new_case(4, &[]);
    let agents =
        system_tests::ok_json("township-node", &["case", "list", "--data", data, "--agent", "代办员老王", "--json"]);
    assert_eq!(agents.as_array().unwrap().len(), 1);
    assert_eq!(agents[0]["case_id"], by_agent.as_str());

    for c in [&by_agent, &plain] {
        run(&["case", "accept", "--data", data, c, "--as", "李娜"]);
        run(&["case", "approve", "--data", data, c, "--as", "李娜"]);
    }
    run(&["case", "rate", "--data", data, &by_agent, "--level", "1", "--stage", "done", "--as", "李娜"]);
    run(&["case", "rate", "--data", data, &plain, "--level", "5", "--stage", "done", "--as", "李娜"]);
    let in_3 = proto::calendar::Day(
        proto::calendar::Day::of_ms(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
        )
        .0 + 3,
    )
    .to_string();
    run(&["case", "material", "--data", data, &tolerated, "--remove", "户口簿", "--as", "李娜"]);
    run(&[
        "case",
        "accept",
        "--data",
        data,
        &tolerated,
        "--missing",
        "户口簿",
        "--promise-date",
        &in_3,
        "--as",
        "李娜",
    ]);
    township_at(10, &["case", "terminate", "--data", data, &tolerated, "--as", "李娜"]);
    let _ = never;

    let stats = township_at(10, &["stats", "--data", data, "--json"]);
    let total = &stats["total"];
    assert_eq!(total["received"], 4, "{stats}");
    assert_eq!(total["accepted"], 3);
    assert_eq!(total["done"], 3, "two decided and one ended");
    assert_eq!(total["on_time"], 2);
    assert_eq!((total["tolerated"].as_u64(), total["tolerated_terminated"].as_u64()), (Some(1), Some(1)));
    assert_eq!(total["rated"], 2);
    assert_eq!(total["satisfaction_rate"], 50.0);
    assert_eq!(total["open_followups"], 1);
    assert_eq!(total["overdue_followups"], 0, "rated today: due in 15 working days");
    let later = township_at(40, &["stats", "--data", data, "--json"]);
    assert_eq!(later["total"]["overdue_followups"], 1, "40 days on, the follow-up is overdue");
    assert_eq!(stats["rows"][0]["township"], TOWNSHIP);
    // A range before any case: nothing.
    let none = township_at(0, &["stats", "--data", data, "--from", "2020-01-01", "--to", "2020-12-31", "--json"]);
    assert_eq!(none["total"]["received"], 0);
    let err = system_tests::fails("township-node", &["stats", "--data", data, "--from", "2026-02-30"]);
    assert!(err.contains("not a date"), "{err}");
}
