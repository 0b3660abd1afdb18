//! Carrying the common commands out: opening the store, writing through the
//! ledger and printing the outcome. Case commands are in `case` and staff
//! accounts in `staff`; the helpers the binaries and the desk share (who is
//! writing, today, the follow-ups, the `serve` command) are here.

use crate::cli::args::{
    BundleCmd, CalendarCmd, CaseCmd, CatalogueCmd, Common, FilesCmd, FollowupCmd, QuarantineCmd, Staff, StaffCmd,
};
use crate::cli::print::{clean, json_pretty, print_json};
use crate::identity::Bundle;
use crate::integrity;
use crate::ledger::Ledger;
use crate::store;
use anyhow::{bail, Context, Result};
use proto::{CaseId, NodeId, Tier};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

mod case;
mod staff;

use case::run_case;
use staff::staff_command;

/// Initialises a village or township data directory from a bundle.
pub fn init_from_bundle(data: &Path, enrollment: &Path, tier: Tier, program: &str) -> Result<()> {
    let bundle = Bundle::read(enrollment)?;
    if bundle.identity.node.tier != tier {
        bail!(
            "{} enrols {} ({}), a {} node; use the {}-node program for it",
            enrollment.display(),
            bundle.identity.node.id,
            bundle.identity.node.name,
            bundle.identity.node.tier,
            bundle.identity.node.tier
        );
    }
    let passphrase = crate::keystore::passphrase(&format!("the new node {}", bundle.identity.node.id))?;
    crate::keystore::check_new_passphrase(&passphrase)?;
    let ledger = Ledger::init(data, &bundle, &passphrase, crate::keystore::Kdf::STANDARD)?;
    say!(
        "{program}: initialised {} as {} ({}), hub {}",
        data.display(),
        ledger.me(),
        bundle.identity.node.name,
        bundle.identity.hub_address
    );
    eprintln!(
        "{program}: this node's keys are now sealed under its passphrase; delete the bundle {} \
         (it holds them in the clear)",
        enrollment.display()
    );
    Ok(())
}

/// Who is writing, for a command about to write: `--as`, or the
/// configured operator. Staff are warned here, before the write, when the
/// last sync found this computer's clock wrong.
pub fn actor(ledger: &Ledger, staff: &Staff) -> Result<String> {
    if let Some(w) = ledger.clock_warning()? {
        eprintln!("WARNING: {w}");
    }
    if let Some(a) = &staff.actor {
        proto::limits::check_actor(a).map_err(crate::Declined::from)?;
        return Ok(a.clone());
    }
    ledger
        .configured_operator()?
        .context("say who is at the desk: pass --as NAME or set one with `config --operator NAME`")
}

/// `serve` command: checks the store, then serves sync sessions (see
/// [`crate::sync::serve`]) while holding it open, so sessions need no
/// check of their own and a crash is seen at the next open. The county's
/// store, which holds everything, is checked whole only after a session
/// that did not end cleanly (by [`Ledger::open`]), not at every start.
pub fn serve(data: &Path, listen: &str, upstream: Option<(String, std::time::Duration)>) -> Result<()> {
    let ledger = Ledger::open(data)?;
    if ledger.identity().tier() != Tier::County {
        integrity::ensure_sound(ledger.store().conn(), data)?;
    }
    crate::sync::serve(data, listen, upstream)?;
    drop(ledger);
    Ok(())
}

/// Items added, changed and cancelled from catalogue version `from` to `to`.
fn catalogue_diff(catalogues: &proto::Catalogues, from: u32, to: u32) -> Result<serde_json::Value> {
    let held = |v: u32| {
        catalogues.get(v).with_context(|| {
            format!("catalogue v{v} is not held here (v{} is the newest held)", catalogues.latest_version())
        })
    };
    let (a, b) = (held(from)?, held(to)?);
    let change = proto::publication::CatalogueChange::between(a, b);
    let (added, changed): (Vec<_>, Vec<_>) = change.put.iter().partition(|i| a.item(&i.code).is_none());
    Ok(serde_json::json!({
        "from": from,
        "to": to,
        "added": added.iter().map(|i| &i.code).collect::<Vec<_>>(),
        "changed": changed.iter().map(|i| &i.code).collect::<Vec<_>>(),
        "cancelled": change.cancel,
        "bundles_changed": change.bundles.is_some(),
    }))
}

/// The data directory a command works on.
fn data_dir(cmd: &Common) -> Option<PathBuf> {
    let d = match cmd {
        Common::Catalogue(
            CatalogueCmd::List { data, .. }
            | CatalogueCmd::Bundles { data, .. }
            | CatalogueCmd::Versions { data, .. }
            | CatalogueCmd::Publish { data, .. }
            | CatalogueCmd::Diff { data, .. },
        )
        | Common::Calendar(CalendarCmd::Show { data, .. } | CalendarCmd::Publish { data, .. })
        | Common::Bundle(BundleCmd::Show { data, .. })
        | Common::VerifyLicence { data, .. }
        | Common::Stats { data, .. }
        | Common::Digest { data, .. }
        | Common::PurgeMoved { data, .. }
        | Common::Verify { data, .. }
        | Common::Sync { data, .. }
        | Common::Unlock { data, .. }
        | Common::Lock { data }
        | Common::Agent { data }
        | Common::Quarantine(QuarantineCmd::List { data, .. })
        | Common::Files(FilesCmd::Prune { data, .. } | FilesCmd::Fetch { data, .. })
        | Common::Followup(FollowupCmd::List { data, .. } | FollowupCmd::Close { data, .. })
        | Common::Staff(
            StaffCmd::Add { data, .. }
            | StaffCmd::List { data, .. }
            | StaffCmd::Disable { data, .. }
            | StaffCmd::Enable { data, .. }
            | StaffCmd::Password { data, .. },
        )
        | Common::Config { data, .. } => data,
        Common::Case(c) => match c {
            CaseCmd::New { data, .. }
            | CaseCmd::Edit { data, .. }
            | CaseCmd::Material { data, .. }
            | CaseCmd::Attach { data, .. }
            | CaseCmd::Detach { data, .. }
            | CaseCmd::Cite { data, .. }
            | CaseCmd::Files { data, .. }
            | CaseCmd::File { data, .. }
            | CaseCmd::Prereview { data, .. }
            | CaseCmd::Rate { data, .. }
            | CaseCmd::Show { data, .. }
            | CaseCmd::Licence { data, .. }
            | CaseCmd::List { data, .. }
            | CaseCmd::Find { data, .. } => data,
            CaseCmd::Forward(a)
            | CaseCmd::Accept { step: a, .. }
            | CaseCmd::Terminate(a)
            | CaseCmd::Refuse(a)
            | CaseCmd::Supplement(a)
            | CaseCmd::Resubmit(a)
            | CaseCmd::Approve(a)
            | CaseCmd::Deny(a)
            | CaseCmd::Issue(a)
            | CaseCmd::Close(a)
            | CaseCmd::Withdraw(a)
            | CaseCmd::Suspend(a)
            | CaseCmd::Resume(a) => &a.data,
        },
    };
    Some(d.data.clone())
}

/// Runs a common command. When SQLite (or decoding) finds the store
/// damaged on the way, the message says what to do about it.
pub fn run(cmd: Common) -> Result<()> {
    let dir = data_dir(&cmd);
    run_common(cmd).map_err(|e| match dir {
        Some(dir) if integrity::is_corruption(&e) => anyhow::anyhow!(
            "{e:#}: the store in {} is damaged; `verify --data {} --repair` rebuilds what can be rebuilt; \
             if it cannot, {}",
            dir.display(),
            dir.display(),
            integrity::recovery(&dir)
        ),
        _ => e,
    })
}

fn run_common(cmd: Common) -> Result<()> {
    match cmd {
        Common::Catalogue(CatalogueCmd::List { data, accepted_at, version, json }) => {
            let ledger = Ledger::open_read(&data.data)?;
            let catalogue = match version {
                None => ledger.catalogue(),
                Some(v) => ledger.catalogues().get(v).with_context(|| {
                    format!(
                        "catalogue v{v} is not held here (v{} is the newest held; catalogue versions lists them)",
                        ledger.catalogue().version
                    )
                })?,
            };
            let tier = match accepted_at.as_deref() {
                None => None,
                Some(t) => {
                    Some(Tier::parse(t).with_context(|| format!("unknown tier {t:?}: village, township or county"))?)
                }
            };
            let items: Vec<_> =
                catalogue.items.iter().filter(|i| tier.is_none_or(|t| i.accepted_at.contains(&t))).collect();
            if json {
                print_json(&serde_json::to_value(&items)?)?;
            } else {
                say!("catalogue version {} ({} items shown)", catalogue.version, items.len());
                for i in items {
                    let at: Vec<_> = i.accepted_at.iter().map(|t| t.as_str()).collect();
                    say!(
                        "{:<6} {}  [taken at {}; decided by {}]",
                        clean(&i.code),
                        clean(&i.name),
                        at.join("/"),
                        i.decided_by
                    );
                }
            }
        }
        Common::Case(cmd) => run_case(cmd)?,
        Common::PurgeMoved { data, home, json } => {
            let mut ledger = Ledger::open(&data.data)?;
            let home = NodeId::new(home);
            let removed = ledger.purge_moved_lane(&home, crate::wall_clock_ms())?;
            if json {
                print_json(&json!({"home": home, "events_removed": removed}))?;
            } else {
                say!(
                    "removed {removed} events of {} (the county and its new township hold them)",
                    clean(home.as_str())
                );
            }
        }
        Common::Digest { data, home, json } => {
            let ledger = Ledger::open_read(&data.data)?;
            let d = ledger.digest(home.map(NodeId::new).as_ref())?;
            if json {
                print_json(&serde_json::to_value(&d)?)?;
            } else {
                say!("{} cases, {} events, digest {}", d.cases, d.events, d.digest);
            }
        }
        Common::Verify { data, repair, json } => {
            let mut ledger = if repair { Ledger::open_for_repair(&data.data)? } else { Ledger::open_read(&data.data)? };
            let report = ledger.verify(&data.data, repair)?;
            let shown = serde_json::to_value(&report)?;
            if json {
                print_json(&shown)?;
            } else {
                say!("{}", json_pretty(&shown));
            }
            if !report.ok {
                let hint = if repair {
                    format!("the store is still damaged after the repair; {}", integrity::recovery(&data.data))
                } else if report.repairable {
                    format!(
                        "`verify --data {} --repair` rebuilds the indexes and derived rows from the events",
                        data.data.display()
                    )
                } else {
                    format!("its events are damaged; {}", integrity::recovery(&data.data))
                };
                bail!("the store failed verification (see the report above): {hint}");
            }
        }
        Common::Unlock { data, time } => {
            let until_ms = crate::agent::unlock(&data.data, crate::agent::parse_for(&time)?)?;
            let left = until_ms.saturating_sub(crate::wall_clock_ms()).div_ceil(60_000);
            let (y, m, d) = proto::calendar::Day::of_ms(until_ms).ymd();
            let secs = (until_ms / 1000 + 8 * 3600) % 86_400;
            say!(
                "this node's keys are unlocked for {}h{:02}, until {y}-{m:02}-{d:02} {:02}:{:02} (China time): its \
                 commands need no passphrase until then, or until `lock`",
                left / 60,
                left % 60,
                secs / 3600,
                secs % 3600 / 60
            );
        }
        Common::Lock { data } => {
            if crate::agent::lock(&data.data)? {
                say!("this node's keys are locked: its commands ask the passphrase again");
            } else {
                say!("no key agent was running for {}", data.data.display());
            }
        }
        Common::Agent { data } => crate::agent::run(&data.data)?,
        Common::Sync { data, peer, json } => {
            // The store is checked whole before anything is sent, once a
            // day (and whenever opening it finds an unclean end or a change
            // made outside a session): a damaged event would otherwise stop
            // every sync for good, and work taken on a damaged store could
            // never be sent.
            let ledger = Ledger::open(&data.data)?;
            let (every, now) = (integrity::SYNC_CHECK_EVERY_MS, crate::wall_clock_ms());
            integrity::ensure_sound_every(ledger.store().conn(), &data.data, every, now)?;
            let peer = peer.unwrap_or_else(|| ledger.identity().hub_address.clone());
            let summary = crate::sync::sync_once_on(ledger, &peer, !json)?;
            if let Some(w) = &summary.clock_warning {
                eprintln!("WARNING: {w}");
            }
            if json {
                print_json(&serde_json::to_value(&summary)?)?;
            } else {
                say!(
                    "synced with {}: sent {} events ({} bytes), received {} events ({} bytes), refused {}, in {:.2} s",
                    summary.peer,
                    summary.stats.sent_events,
                    summary.bytes_sent,
                    summary.stats.received_events,
                    summary.bytes_received,
                    summary.stats.quarantined_events,
                    summary.seconds
                );
            }
            if summary.stats.quarantined_by_peer > 0 {
                eprintln!(
                    "WARNING: {} refused {} of the events sent and quarantined them; \
                     ask the county administrator (quarantine list) before working on",
                    summary.peer, summary.stats.quarantined_by_peer
                );
            }
            if summary.stats.deferred_events > 0 {
                eprintln!(
                    "{} events wait for their case or catalogue to arrive; sync again",
                    summary.stats.deferred_events
                );
            }
            if let Some(u) = &summary.unconfirmed_by_county {
                let what = match (u.events, u.files) {
                    (e, 0) => format!("{e} of this node's records"),
                    (0, f) => format!("{f} of this node's material files"),
                    (e, f) => format!("{e} of this node's records and {f} of its material files"),
                };
                eprintln!(
                    "WARNING: {} took {what} {} min ago, but the county's receipts do not include them: {} may be \
                     withholding or have lost them. They are safe here; tell the county administrator, or sync with \
                     the county directly (--peer the hub's address).",
                    u.peer,
                    crate::wall_clock_ms().saturating_sub(u.since_ms) / 60_000,
                    u.peer
                );
            }
            if summary.stats.newer_format_events > 0 {
                eprintln!(
                    "WARNING: {} sent {} events written by a newer release (content format version {}), which this \
                     program cannot read; they wait at {} until this node is upgraded (nothing is lost)",
                    summary.peer, summary.stats.newer_format_events, summary.stats.newer_format_version, summary.peer
                );
            }
            if let Some(r) = &summary.recovery {
                let level = if r.set_aside > 0 { "WARNING" } else { "note" };
                eprintln!("{level}: {}", r.explain());
            }
            for d in &summary.peer_diverged {
                eprintln!(
                    "WARNING: {} holds a different history of {}'s chain in lane {}: two copies of that node exist",
                    summary.peer, d.origin, d.lane
                );
            }
            if summary.stats.held_by_peer > 0 {
                eprintln!(
                    "{} holds back {} of the events sent until what they depend on reaches it; sync again later \
                     (if it lasts, ask the county administrator)",
                    summary.peer, summary.stats.held_by_peer
                );
            }
            if summary.stats.quarantined_events > 0 || summary.stats.quarantined_by_peer > 0 {
                bail!(
                    "sync finished, but {} received events were refused here and {} sent events were refused by {} \
                     (quarantine list shows why)",
                    summary.stats.quarantined_events,
                    summary.stats.quarantined_by_peer,
                    summary.peer
                );
            }
            if summary.recovery.as_ref().is_some_and(|r| r.set_aside > 0) || !summary.own_diverged.is_empty() {
                bail!("sync finished, but this node's own records had diverged (see the warning above)");
            }
        }
        Common::Staff(cmd) => staff_command(cmd)?,
        Common::Stats { data, from, to, by, json } => {
            let day = |s: &Option<String>, what: &str| -> Result<Option<proto::calendar::Day>> {
                s.as_deref()
                    .map(|d| {
                        proto::calendar::Day::parse(d)
                            .with_context(|| format!("--{what} {d:?} is not a date (YYYY-MM-DD)"))
                    })
                    .transpose()
            };
            let (from_day, to_day) = (day(&from, "from")?, day(&to, "to")?);
            if let (Some(a), Some(b)) = (from_day, to_day) {
                if b < a {
                    bail!("--to {b} is before --from {a}");
                }
            }
            let ledger = Ledger::open_read(&data.data)?;
            let rows = crate::query::stats(
                ledger.store().conn(),
                from_day.map(|d| d.start_ms().max(0) as u64),
                to_day.map(|d| d.next().start_ms().max(0) as u64),
                today(),
            )?;
            let topo = ledger.topology();
            let groups = crate::query::group_stats(&rows, |home, item| match by.as_str() {
                "item" => item.to_string(),
                "village" => home.0.clone(),
                _ => topo.ancestor_at(home, Tier::Township).map(|t| t.id.0.clone()).unwrap_or_else(|| home.0.clone()),
            });
            let total = crate::query::group_stats(&rows, |_, _| "total".into()).remove("total").unwrap_or_default();
            if json {
                let rows: Vec<Value> = groups
                    .iter()
                    .map(|(k, c)| {
                        let mut v = serde_json::to_value(c).unwrap_or_default();
                        v[by.as_str()] = json!(k);
                        v
                    })
                    .collect();
                print_json(&json!({"from": from, "to": to, "by": by, "total": total, "rows": rows}))?;
            } else {
                say!(
                    "{:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    by,
                    "received",
                    "accepted",
                    "done",
                    "on time",
                    "avg days",
                    "satisf."
                );
                for (k, c) in groups.iter().chain(std::iter::once((&"total".to_string(), &total))) {
                    let pct = |v: Option<f64>| v.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into());
                    say!(
                        "{:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                        clean(k),
                        c.received,
                        c.accepted,
                        c.done,
                        pct(c.on_time_rate),
                        c.avg_working_days.map(|d| format!("{d:.1}")).unwrap_or_else(|| "-".into()),
                        pct(c.satisfaction_rate)
                    );
                }
            }
        }
        Common::VerifyLicence { data, file, json } => {
            let ledger = Ledger::open_read(&data.data)?;
            let text = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let licence: proto::licence::Licence =
                serde_json::from_slice(&text).context("the file is not a licence of this county's format")?;
            match ledger.verify_licence(&licence)? {
                Ok(()) => {
                    if json {
                        print_json(
                            &json!({"valid": true, "case": licence.terms.case, "issuer": licence.terms.issuer}),
                        )?;
                    } else {
                        say!(
                            "valid: {} {} for {} ({}), issued by {} on {}",
                            clean(licence.terms.case.as_str()),
                            clean(&licence.terms.result),
                            clean(&licence.terms.holder),
                            clean(&licence.terms.holder_id),
                            licence.terms.issuer,
                            licence.terms.issued
                        );
                    }
                }
                Err(e) => bail!("NOT valid: {e}"),
            }
        }
        Common::Catalogue(CatalogueCmd::Versions { data, json }) => {
            let ledger = Ledger::open_read(&data.data)?;
            let versions: Vec<serde_json::Value> = ledger
                .catalogues()
                .versions()
                .map(|c| serde_json::json!({"version": c.version, "items": c.items.len(), "note": c.note}))
                .collect();
            if json {
                print_json(&serde_json::Value::Array(versions))?;
            } else {
                for v in versions {
                    say!("v{}: {} items  {}", v["version"], v["items"], clean(v["note"].as_str().unwrap_or("")));
                }
            }
        }
        Common::Catalogue(CatalogueCmd::Publish { data, file, actor }) => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let catalogue: proto::Catalogue = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a catalogue (the shape of deploy/catalogue.json)", file.display())
            })?;
            let mut ledger = Ledger::open(&data.data)?;
            let whole = proto::codec::encode(&catalogue).len();
            let change = ledger.publish_catalogue(&actor, &catalogue)?;
            let diff = catalogue_diff(ledger.catalogues(), change.version - 1, change.version)?;
            let sent = proto::codec::encode(&change).len();
            eprintln!(
                "published catalogue v{}: {} added, {} changed, {} cancelled; it reaches every node with the next syncs \
                 ({sent} bytes as a change, against {whole} bytes whole)",
                change.version,
                diff["added"].as_array().map_or(0, Vec::len),
                diff["changed"].as_array().map_or(0, Vec::len),
                diff["cancelled"].as_array().map_or(0, Vec::len),
            );
            let mut out = diff;
            out["version"] = change.version.into();
            out["bytes"] = sent.into();
            out["bytes_whole"] = whole.into();
            print_json(&out)?;
        }
        Common::Catalogue(CatalogueCmd::Diff { data, from, to, json }) => {
            let ledger = Ledger::open_read(&data.data)?;
            let diff = catalogue_diff(ledger.catalogues(), from, to)?;
            if json {
                print_json(&diff)?;
            } else {
                for (what, label) in [("added", "added"), ("changed", "changed"), ("cancelled", "cancelled")] {
                    for code in diff[what].as_array().into_iter().flatten() {
                        say!("{label:<10} {}", clean(code.as_str().unwrap_or("")));
                    }
                }
            }
        }
        Common::Calendar(CalendarCmd::Show { data, json }) => {
            let ledger = Ledger::open_read(&data.data)?;
            let calendar = ledger.calendar_file()?;
            if json {
                print_json(&serde_json::to_value(&calendar)?)?;
            } else {
                let years: Vec<String> = calendar.years.keys().map(|y| y.to_string()).collect();
                say!("calendar v{}: years {}  {}", calendar.version, years.join(", "), clean(&calendar.note));
            }
        }
        Common::Calendar(CalendarCmd::Publish { data, file, actor }) => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let calendar: proto::calendar::CalendarFile = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a calendar (the shape of deploy/calendar.json)", file.display()))?;
            let mut ledger = Ledger::open(&data.data)?;
            ledger.publish_calendar(&actor, &calendar)?;
            eprintln!("published calendar v{}; it reaches every node with the next syncs", calendar.version);
            print_json(&serde_json::json!({"version": calendar.version}))?;
        }
        Common::Catalogue(CatalogueCmd::Bundles { data, json }) => {
            let ledger = Ledger::open_read(&data.data)?;
            let bundles = &ledger.catalogue().bundles;
            if json {
                print_json(&serde_json::to_value(bundles)?)?;
            } else {
                for b in bundles {
                    say!("{} {} ({})", b.code, b.name, b.items.join(", "));
                }
            }
        }
        Common::Bundle(BundleCmd::Show { data, bundle, json }) => {
            let ledger = Ledger::open_read(&data.data)?;
            let v =
                crate::view::bundle(&ledger, &bundle)?.with_context(|| format!("no bundle {bundle} is held here"))?;
            if json {
                print_json(&serde_json::to_value(&v)?)?;
            } else {
                say!("{} {} ({}): {}", v.bundle_id, v.name, v.code, v.state);
                for c in &v.cases {
                    say!("  {:<24} {:<6} {}", clean(c.case_id.as_str()), clean(&c.item), c.state);
                }
            }
        }
        Common::Followup(FollowupCmd::List { data, all, json }) => {
            let ledger = Ledger::open_read(&data.data)?;
            let rows = followups(&ledger, all)?;
            if json {
                print_json(&serde_json::to_value(&rows)?)?;
            } else {
                for r in &rows {
                    say!("{:<24} level {} due {} {} ({})", clean(&r.case_id), r.level, r.due, r.state, clean(&r.owner));
                }
                say!("{} follow-ups", rows.len());
            }
        }
        Common::Followup(FollowupCmd::Close { data, case, response, callback, staff }) => {
            let mut ledger = Ledger::open(&data.data)?;
            let who = actor(&ledger, &staff)?;
            let e = ledger.close_followup(&who, &CaseId(case.clone()), &response, &callback)?;
            say!("follow-up of {} closed (event {})", clean(&case), e.id);
        }
        Common::Files(FilesCmd::Prune { data, days, json }) => {
            let mut ledger = Ledger::open(&data.data)?;
            let pruned = ledger.prune_files(days, crate::wall_clock_ms())?;
            if json {
                print_json(&serde_json::to_value(&pruned)?)?;
            } else {
                let bytes: u64 = pruned.iter().map(|p| p.size).sum();
                say!("{} files pruned ({:.1} MB); the county holds them", pruned.len(), bytes as f64 / 1e6);
            }
        }
        Common::Files(FilesCmd::Fetch { data, hash }) => {
            let mut ledger = Ledger::open(&data.data)?;
            let h = proto::files::FileHash::from_hex(hash.trim())
                .with_context(|| format!("{hash:?} is not a file hash (case files lists them)"))?;
            if ledger.fetch_file_back(&h)? {
                say!("file {h} will be fetched back at the next sync");
            } else {
                say!("file {h} was not pruned here");
            }
        }
        Common::Quarantine(QuarantineCmd::List { data, json }) => {
            let ledger = Ledger::open_read(&data.data)?;
            let rows = store::quarantine_list(ledger.store().conn())?;
            if json {
                print_json(&serde_json::to_value(&rows)?)?;
            } else {
                for r in &rows {
                    say!("{} from {}: {}/{}: {}", r.id, clean(&r.from_node), clean(&r.origin), r.seq, clean(&r.reason));
                }
                say!("{} quarantined", rows.len());
            }
        }
        Common::Config { data, operator, receipt_grace_minutes, blobs, s3_endpoint, s3_region } => {
            let writes = operator.is_some() || receipt_grace_minutes.is_some() || blobs.is_some();
            let mut ledger = if writes { Ledger::open(&data.data)? } else { Ledger::open_read(&data.data)? };
            if let Some(op) = operator {
                if op.trim().is_empty() {
                    bail!("--operator needs a name");
                }
                proto::limits::check_name("the operator's name", op.trim()).map_err(crate::Declined::from)?;
                ledger.set_operator(op.trim())?;
            }
            if let Some(v) = receipt_grace_minutes {
                crate::store::meta_set(ledger.store().conn(), crate::receipts::GRACE_KEY, &v)?;
            }
            if let (Some(url), Some(endpoint)) = (blobs.as_deref(), s3_endpoint.as_deref()) {
                if ledger.identity().tier() != Tier::County {
                    bail!("only the county keeps its files in an object store");
                }
                let cfg = crate::remote::RemoteConfig::parse(url, endpoint, s3_region.as_deref())?;
                crate::remote::check(&cfg)?;
                crate::store::meta_set(ledger.store().conn(), crate::remote::META_KEY, &cfg)?;
            }
            let id = ledger.identity();
            say!("node      {} ({}, {})", clean(id.node.id.as_str()), id.node.tier, clean(&id.node.name));
            say!("hub       {}", clean(&id.hub_address));
            let operator = ledger.configured_operator()?.unwrap_or_else(|| "(not set)".into());
            say!("operator  {}", clean(&operator));
            let conn = ledger.store().conn();
            let grace: u64 =
                crate::store::meta_get(conn, crate::receipts::GRACE_KEY)?.unwrap_or(crate::receipts::GRACE_DEFAULT);
            say!("receipts  the township has {grace} min to pass records on to the county");
            match crate::store::meta_get::<crate::remote::RemoteConfig>(conn, crate::remote::META_KEY)? {
                Some(r) => say!("files     s3://{} at {}", clean(&r.bucket), clean(&r.endpoint)),
                None => say!("files     in the data directory"),
            }
        }
    }
    Ok(())
}

/// The peer a node syncs with: the address given, or the county hub named
/// in its enrolment bundle.
pub fn peer_address(dir: &Path, peer: Option<String>) -> Result<String> {
    match peer {
        Some(p) => Ok(p),
        None => Ok(Ledger::open_read(dir)?.identity().hub_address.clone()),
    }
}

/// Today, in China (where the county works).
pub fn today() -> proto::calendar::Day {
    proto::calendar::Day::of_ms(crate::wall_clock_ms())
}

/// One follow-up, as `followup list --json` and the desks show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FollowupRow {
    pub case_id: String,
    pub level: u8,
    pub rated: String,
    /// 15 working days after the rating.
    pub due: String,
    /// `open`, `overdue` or `closed`.
    pub state: &'static str,
    pub owner: String,
    pub response: Option<String>,
    pub callback: Option<String>,
}

/// Follow-ups of the cases held (open ones; with `all`, closed ones too).
pub fn followups(ledger: &Ledger, all: bool) -> Result<Vec<FollowupRow>> {
    let conn = ledger.store().conn();
    let cases = if all {
        ledger.cases(None, None)?.into_iter().filter(|c| !c.followups.is_empty()).collect()
    } else {
        crate::query::with_open_followups(conn)?
    };
    let calendar = ledger.calendar()?;
    let today = today();
    let mut rows = Vec::new();
    for c in &cases {
        for f in c.followups.iter().filter(|f| all || f.closed.is_none()) {
            let rated = proto::calendar::Day::of_ms(f.opened.wall_ms);
            let due = calendar.add_working_days(rated, crate::ledger::FOLLOW_UP_DAYS);
            rows.push(FollowupRow {
                case_id: c.case_id.0.clone(),
                level: f.level,
                rated: rated.to_string(),
                due: due.to_string(),
                state: match (&f.closed, today > due) {
                    (Some(_), _) => "closed",
                    (None, true) => "overdue",
                    (None, false) => "open",
                },
                owner: f.owner.0.clone(),
                response: f.closed.as_ref().map(|c| c.1.clone()),
                callback: f.closed.as_ref().map(|c| c.2.clone()),
            });
        }
    }
    rows.sort_by(|a, b| (a.state == "closed", &a.due).cmp(&(b.state == "closed", &b.due)));
    Ok(rows)
}
