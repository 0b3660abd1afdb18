//! The `case` commands: taking a case, the workflow steps, ratings,
//! licences, and showing, listing and finding cases.

use super::{actor, today};
use crate::cli::args::{CaseCmd, StepArgs};
use crate::cli::print::{clean, print_case, print_json};
use crate::ledger::{Ledger, NewCase};
use crate::view::{case_json, case_summary};
use anyhow::{bail, Context, Result};
use proto::workflow::State;
use proto::{CaseId, NodeId, Step};
use serde_json::{json, Value};

pub(super) fn run_case(cmd: CaseCmd) -> Result<()> {
    let step_cmd = |args: StepArgs, step: Step| -> Result<()> {
        let mut ledger = Ledger::open(&args.data.data)?;
        let who = actor(&ledger, &args.staff)?;
        let case = CaseId(args.case);
        let e = ledger.step(&who, &case, step, &args.note)?;
        let st = ledger.case(&case)?;
        say!("{} {}: {} (event {})", clean(case.as_str()), e.body.name(), st.state, e.id);
        Ok(())
    };
    let forward = || Step::Forward { to: NodeId::new("") };
    match cmd {
        CaseCmd::New {
            data,
            item: None,
            bundle: Some(code),
            applicant,
            id_number,
            phone,
            material,
            agent,
            authorisation,
            staff,
            json,
        } => {
            let mut ledger = Ledger::open(&data.data)?;
            let who = actor(&ledger, &staff)?;
            let input = NewCase {
                item: String::new(),
                applicant,
                id_number,
                phone,
                address: None,
                materials: material,
                bundle: None,
                agent: agent.zip(authorisation),
            };
            let (bundle_id, cases) = ledger.new_bundle(&who, &code, input)?;
            if json {
                print_json(&json!({ "bundle_id": bundle_id, "case_ids": cases }))?;
            } else {
                say!("bundle {bundle_id}: {}", cases.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" "));
            }
        }
        CaseCmd::New {
            data, item, applicant, id_number, phone, material, agent, authorisation, staff, json, ..
        } => {
            let item = item.context("say --item CODE or --bundle CODE")?;
            let agent = agent.zip(authorisation);
            let mut ledger = Ledger::open(&data.data)?;
            let who = actor(&ledger, &staff)?;
            let case = ledger.new_case(
                &who,
                NewCase { item, applicant, id_number, phone, address: None, materials: material, bundle: None, agent },
            )?;
            if json {
                print_json(&json!({ "case_id": case }))?;
            } else {
                say!("{case}");
            }
        }
        CaseCmd::Edit { data, case, field, value, staff } => {
            let mut ledger = Ledger::open(&data.data)?;
            let who = actor(&ledger, &staff)?;
            let e = ledger.edit(&who, &CaseId(case.clone()), &field, &value)?;
            say!("{} {field} set (event {})", clean(&case), e.id);
        }
        CaseCmd::Material { data, case, add, remove, staff } => {
            let mut ledger = Ledger::open(&data.data)?;
            let who = actor(&ledger, &staff)?;
            let case = CaseId(case);
            let e = match (add, remove) {
                (Some(name), _) => ledger.add_material(&who, &case, &name)?,
                (None, Some(name)) => ledger.remove_material(&who, &case, &name)?,
                (None, None) => bail!("say --add NAME or --remove NAME"),
            };
            say!("{} {} (event {})", clean(case.as_str()), e.body.name(), e.id);
        }
        CaseCmd::Attach { data, case, material, file, replaces, staff, json } => {
            let mut ledger = Ledger::open(&data.data)?;
            let who = actor(&ledger, &staff)?;
            let meta = std::fs::metadata(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if meta.len() > proto::files::FILE_LIMIT_DEFAULT {
                // Refused before reading a byte of it.
                bail!(
                    "{} is {:.1} MB, over the limit of {} MB per file; scan it at a lower resolution or split it",
                    file.display(),
                    meta.len() as f64 / 1_048_576.0,
                    proto::files::FILE_LIMIT_DEFAULT / 1_048_576
                );
            }
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let replaces = match replaces.as_deref() {
                Some(h) => Some(file_hash(h)?),
                None => None,
            };
            let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let a = ledger.attach_file(&who, &CaseId(case.clone()), &material, &name, &bytes, replaces)?;
            if json {
                print_json(&json!({
                    "case_id": case, "material": material, "hash": a.file.hash.to_hex(), "size": a.file.size,
                    "media_type": a.file.media_type.mime(), "name": a.file.name, "pages": a.file.pages,
                    "event": a.event.id.to_string(), "stored": a.newly_stored,
                }))?;
            } else {
                say!(
                    "{} {}: {} ({} bytes, {}) {}{}",
                    clean(&case),
                    clean(&material),
                    a.file.hash,
                    a.file.size,
                    a.file.media_type.mime(),
                    clean(&a.file.name),
                    if a.newly_stored { "" } else { " (already held: stored once)" }
                );
            }
        }
        CaseCmd::Cite { data, case, material, licence, staff } => {
            let mut ledger = Ledger::open(&data.data)?;
            let who = actor(&ledger, &staff)?;
            let text =
                std::fs::read_to_string(&licence).with_context(|| format!("cannot read {}", licence.display()))?;
            let lic: proto::licence::Licence = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a licence of this county's format", licence.display()))?;
            let e = ledger.cite_licence(&who, &CaseId(case.clone()), &material, lic)?;
            say!("{} {}: licence cited (event {})", clean(&case), clean(&material), e.id);
        }
        CaseCmd::Detach { data, case, material, hash, note, staff } => {
            let mut ledger = Ledger::open(&data.data)?;
            let who = actor(&ledger, &staff)?;
            let e = ledger.detach_file(&who, &CaseId(case.clone()), &material, file_hash(&hash)?, &note)?;
            say!("{} {} (event {})", clean(&case), e.body.name(), e.id);
        }
        CaseCmd::Files { data, case, json } => {
            let ledger = Ledger::open_read(&data.data)?;
            let st = ledger.case(&CaseId(case))?;
            let lines: Vec<(crate::view::FileLine, bool)> =
                st.files.iter().map(|f| (crate::view::FileLine::from(f), ledger.holds_file(&f.file.hash))).collect();
            if json {
                let mut rows: Vec<Value> = Vec::new();
                for (f, (l, here)) in st.files.iter().zip(&lines) {
                    let mut v = serde_json::to_value(l).expect("a view serialises");
                    v["here"] = json!(here);
                    v["county_received"] = json!(ledger.county_has_file(&st, f)?);
                    rows.push(v);
                }
                print_json(&Value::Array(rows))?;
            } else {
                for (l, here) in &lines {
                    say!(
                        "{:<12} {} {:>9} {:<16} {}{}{}",
                        clean(&l.material),
                        &l.hash[..16],
                        l.size,
                        l.media_type,
                        clean(&l.name),
                        if l.current { "" } else { "  [replaced or taken off]" },
                        if *here { "" } else { "  [not held here yet]" }
                    );
                }
            }
        }
        CaseCmd::File { data, case, hash, out } => {
            let ledger = Ledger::open(&data.data)?;
            let hash = file_hash(&hash)?;
            let case = CaseId(case);
            let st = ledger.case(&case)?;
            let Some(f) = st.files.iter().find(|f| f.file.hash == hash) else {
                bail!("case {} has no file {hash} (case files lists them)", clean(case.as_str()));
            };
            if !ledger.holds_file(&hash) && ledger.file_pruned(&hash)? {
                bail!(
                    "{} was pruned from this laptop once the county had it; `files fetch --data {} {hash}` asks \
                     for it again, and it comes with the next sync",
                    clean(&f.file.name),
                    data.data.display()
                );
            }
            if !ledger.holds_file(&hash) {
                bail!(
                    "this node does not hold {} yet: it was attached at {} and comes with the next sync from there                      (or from a node that has it: the township, the county)",
                    clean(&f.file.name),
                    f.event.origin.node()
                );
            }
            // Written to a temporary name and renamed once checked: a
            // damaged file leaves nothing at --out.
            let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            let mut tmp =
                tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
            let n = ledger.read_file(&case, &hash, tmp.as_file_mut())?;
            tmp.persist(&out).with_context(|| format!("cannot write {}", out.display()))?;
            say!("{} bytes written to {}", n, out.display());
        }
        CaseCmd::Prereview { data, case, pass, return_: _, note, staff } => {
            let step = if pass { Step::PrereviewPass } else { Step::PrereviewReturn };
            step_cmd(StepArgs { data, case, note, staff }, step)?
        }
        CaseCmd::Forward(a) => step_cmd(a, forward())?,
        CaseCmd::Accept { step, missing, promise_date: None } if missing.is_empty() => step_cmd(step, Step::Accept)?,
        CaseCmd::Accept { step, missing, promise_date } => {
            let day = promise_date.as_deref().unwrap_or_default();
            let promised = proto::calendar::Day::parse(day)
                .with_context(|| format!("--promise-date {day:?} is not a date (YYYY-MM-DD)"))?;
            let mut ledger = Ledger::open(&step.data.data)?;
            let who = actor(&ledger, &step.staff)?;
            let case = CaseId(step.case.clone());
            ledger.accept_missing(&who, &case, missing, promised, &step.note)?;
            say!("case {case}: 容缺受理 (accepted with materials missing until {promised})");
        }
        CaseCmd::Terminate(a) => step_cmd(a, Step::Terminate)?,
        CaseCmd::Refuse(a) => step_cmd(a, Step::Refuse)?,
        CaseCmd::Supplement(a) => step_cmd(a, Step::RequestSupplement)?,
        CaseCmd::Resubmit(a) => step_cmd(a, Step::Resubmit)?,
        CaseCmd::Approve(a) => step_cmd(a, Step::Approve)?,
        CaseCmd::Deny(a) => step_cmd(a, Step::Deny)?,
        CaseCmd::Issue(a) => step_cmd(a, Step::Issue)?,
        CaseCmd::Close(a) => step_cmd(a, Step::Close)?,
        CaseCmd::Withdraw(a) => step_cmd(a, Step::Withdraw)?,
        CaseCmd::Suspend(a) => step_cmd(a, Step::Suspend)?,
        CaseCmd::Resume(a) => step_cmd(a, Step::Resume)?,
        CaseCmd::Rate { data, case, level, stage, channel, note, staff } => {
            let mut ledger = Ledger::open(&data.data)?;
            let who = actor(&ledger, &staff)?;
            let stage = stage.as_deref().and_then(proto::event::Stage::parse);
            let e = ledger.rate(&who, &CaseId(case.clone()), level, stage, &channel, &note)?;
            say!("{} rated {level} (event {})", clean(&case), e.id);
            if level >= proto::fold::POOR_RATING {
                say!("a follow-up (整改回访) is open for it: followup list shows it, followup close ends it");
            }
        }
        CaseCmd::Licence { data, case, out } => {
            let ledger = Ledger::open(&data.data)?;
            let licence = ledger.licence(&CaseId(case.clone()))?;
            std::fs::write(&out, serde_json::to_vec_pretty(&licence)?)
                .with_context(|| format!("cannot write {}", out.display()))?;
            say!("licence of {} written to {} (verify-licence checks it offline)", clean(&case), out.display());
        }
        CaseCmd::Show { data, case, json } => {
            let ledger = Ledger::open_read(&data.data)?;
            let st = ledger.case(&CaseId(case))?;
            let timing = ledger.timing(&st, today())?;
            if json {
                let mut v = crate::view::with_timing(case_json(&st), &st, timing.as_ref(), today());
                v["county_received"] = json!(ledger.county_received(&st)?);
                v["moved_to"] = json!(ledger.moved_to(&st.home));
                // Each cited licence, checked here and now.
                let mut licences = Vec::new();
                for l in &st.licences {
                    let check = ledger.verify_licence(&proto::licence::Licence::from(l.licence.clone()))?;
                    licences.push(json!({
                        "material": l.material, "case": l.licence.terms.case, "issuer": l.licence.terms.issuer,
                        "result": l.licence.terms.result, "valid": check.is_ok(),
                        "reason": check.err().map(|e| e.to_string()),
                    }));
                }
                v["licences"] = json!(licences);
                print_json(&v)?;
            } else {
                print_case(&st)?;
                if let Some(t) = &timing {
                    say!(
                        "time      {} of {} working days used; {}{}",
                        t.used,
                        t.limit_days,
                        match (t.due, t.stopped) {
                            (_, true) => "clock stopped".to_string(),
                            (Some(d), _) => format!("due {d}"),
                            (None, _) => String::new(),
                        },
                        match t.warning {
                            proto::calendar::Warning::Red => "  [OVERDUE]",
                            proto::calendar::Warning::Yellow => "  [yellow card: 80 % used]",
                            proto::calendar::Warning::None => "",
                        }
                    );
                }
            }
        }
        CaseCmd::List { data, state, overdue, due_within, agent, json } => {
            let ledger = Ledger::open_read(&data.data)?;
            let state = match state {
                None => None,
                Some(s) => Some(State::parse(&s).with_context(|| {
                    let all: Vec<_> = proto::workflow::ALL_STATES.iter().map(|s| s.name()).collect();
                    format!("unknown state {s:?}; one of: {}", all.join(", "))
                })?),
            };
            let today = today();
            let cases = if overdue || due_within.is_some() || agent.is_some() {
                let mut q =
                    crate::query::CaseQuery { states: state.into_iter().collect(), agent, ..Default::default() };
                if overdue {
                    q.due_before = Some(today);
                } else if let Some(n) = due_within {
                    q.due_by = Some(ledger.calendar()?.add_working_days(today, n));
                }
                let mut all = Vec::new();
                q.for_each(ledger.store().conn(), |c| {
                    all.push(c.clone());
                    Ok(())
                })?;
                all
            } else {
                ledger.cases(state, None)?
            };
            if json {
                let mut rows = Vec::new();
                for c in &cases {
                    rows.push(crate::view::with_timing(case_summary(c), c, ledger.timing(c, today)?.as_ref(), today));
                }
                print_json(&Value::Array(rows))?;
            } else {
                for c in cases.iter().map(crate::view::CaseSummary::from) {
                    say!(
                        "{:<22} {:<6} {:<20} {:<14} {}{}",
                        clean(c.case_id.as_str()),
                        clean(&c.item),
                        c.state,
                        clean(c.handler.as_str()),
                        clean(&c.applicant),
                        if c.flagged { "  [needs attention]" } else { "" }
                    );
                }
                say!("{} cases", cases.len());
            }
        }
        CaseCmd::Find { data, id_number, json } => {
            let ledger = Ledger::open_read(&data.data)?;
            let ids = ledger.find_by_id_number(&id_number)?;
            if json {
                print_json(&serde_json::to_value(&ids)?)?;
            } else {
                for id in &ids {
                    say!("{}", clean(id.as_str()));
                }
                say!("{} cases", ids.len());
            }
        }
    }
    Ok(())
}

fn file_hash(s: &str) -> Result<proto::files::FileHash> {
    proto::files::FileHash::from_hex(s.trim())
        .with_context(|| format!("{s:?} is not a file hash (64 hex digits; case files lists them)"))
}
