//! The command line shared by the three binaries: catalogue, case, digest,
//! verify and config commands. Each binary adds its own (`init`, and for the
//! hub `nodes`, `enroll`…) and flattens [`Common`] into its command enum.

use crate::identity::Bundle;
use crate::integrity;
use crate::ledger::{Ledger, NewCase};
use crate::store;
use crate::view::{case_json, case_summary};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use proto::fold::CaseState;
use proto::workflow::State;
use proto::{CaseId, NodeId, Step, Tier};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Prints a line to standard output. Unlike `println!` it does not panic
/// when the output is gone (`| head`): the write error ends the command,
/// and [`exit_with`] ends the program quietly.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// The data directory of a node.
#[derive(Args, Debug, Clone)]
pub struct DataDir {
    /// The node's data directory (holds node.db).
    #[arg(long, env = "CASE_NODE_DATA", value_name = "DIR")]
    pub data: PathBuf,
}

/// How the node's keys are unlocked. Its private keys are sealed under a
/// passphrase: typed at the terminal when asked, piped with
/// `--passphrase-stdin`, or, for services, given in `CASE_NODE_PASSPHRASE`.
#[derive(Args, Debug, Clone)]
pub struct Unlock {
    /// Read the node's passphrase from the first line of standard input.
    #[arg(long, global = true)]
    pub passphrase_stdin: bool,
}

impl Unlock {
    /// Reads the passphrase now when asked to.
    pub fn apply(&self) -> Result<()> {
        if self.passphrase_stdin {
            crate::keystore::read_passphrase_stdin()?;
        }
        Ok(())
    }
}

/// Who is at the desk.
#[derive(Args, Debug, Clone)]
pub struct Staff {
    /// Staff member recorded on the event (default: the operator set with
    /// `config --operator`).
    #[arg(long = "as", value_name = "NAME", env = "CASE_NODE_OPERATOR")]
    pub actor: Option<String>,
}

/// Arguments of a plain workflow step.
#[derive(Args, Debug, Clone)]
pub struct StepArgs {
    #[command(flatten)]
    pub data: DataDir,
    /// The case id (case list shows them).
    pub case: String,
    /// A note recorded with the step.
    #[arg(long, default_value = "")]
    pub note: String,
    #[command(flatten)]
    pub staff: Staff,
}

/// Commands every node has.
#[derive(Subcommand, Debug)]
pub enum Common {
    /// The service-item catalogue this node holds.
    #[command(subcommand)]
    Catalogue(CatalogueCmd),
    /// Take, work on and look at cases.
    #[command(subcommand)]
    Case(CaseCmd),
    /// A digest of the folded state of the cases held, to compare replicas.
    Digest {
        #[command(flatten)]
        data: DataDir,
        /// Only cases homed at this node.
        #[arg(long, value_name = "NODE")]
        home: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check the store: the file, hash chains, seals, and derived rows
    /// against a fresh fold of the events. Changes nothing unless --repair.
    Verify {
        #[command(flatten)]
        data: DataDir,
        /// Rebuild every index and derived row from the events (the old
        /// rows are not read) and lift the refusal of writes when that
        /// makes the store sound.
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Sync with a peer once, both directions (default peer: the county hub).
    /// Exits 0 only when everything was exchanged; run it again to resume.
    Sync {
        #[command(flatten)]
        data: DataDir,
        /// The peer's address (host:port): your township, or the county hub.
        #[arg(long, value_name = "ADDR")]
        peer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Input refused by checks (bad signature, broken chain, not authorised…).
    #[command(subcommand)]
    Quarantine(QuarantineCmd),
    /// Statistics for the county's assessment of each window: received,
    /// accepted, done, on-time rate, average working days to decide, 容缺
    /// cases and their outcome, satisfaction and open follow-ups.
    Stats {
        #[command(flatten)]
        data: DataDir,
        /// Cases taken on or after this day (YYYY-MM-DD).
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Cases taken on or before this day.
        #[arg(long, value_name = "DATE")]
        to: Option<String>,
        /// Group by township, village (the window that took the case) or item.
        #[arg(long, value_name = "BY", default_value = "township", value_parser = ["township", "village", "item"])]
        by: String,
        #[arg(long)]
        json: bool,
    },
    /// Check an electronic licence (电子证照) offline: its signature, and the
    /// issuing node's key against what the county enrolled and revoked.
    /// Exits 0 when valid, non-zero with the reason otherwise.
    VerifyLicence {
        #[command(flatten)]
        data: DataDir,
        /// The licence file (JSON, as `case licence` writes it, or read from
        /// a result's QR code).
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Staff accounts of this node's desk (the web interface).
    #[command(subcommand)]
    Staff(StaffCmd),
    /// 一件事一次办 bundles taken here.
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// Follow-ups (整改回访) of poor ratings (不满意, 非常不满意), due within
    /// 15 working days.
    #[command(subcommand)]
    Followup(FollowupCmd),
    /// Show or set this node's settings.
    Config {
        #[command(flatten)]
        data: DataDir,
        /// The staff name recorded when --as is not given.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCmd {
    /// List quarantined input with the reason it was refused.
    List {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum FollowupCmd {
    /// Follow-ups of the cases held here, open ones first.
    List {
        #[command(flatten)]
        data: DataDir,
        /// Closed ones too.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Close a case's open follow-up with what was done and the call-back.
    Close {
        #[command(flatten)]
        data: DataDir,
        case: String,
        /// What was done about the rating (整改情况).
        #[arg(long)]
        response: String,
        /// What the applicant said when called back (回访结果).
        #[arg(long, default_value = "")]
        callback: String,
        #[command(flatten)]
        staff: Staff,
    },
}

#[derive(Subcommand, Debug)]
pub enum StaffCmd {
    /// Add a staff member who logs in at the desk. The password is asked
    /// for at the terminal, or read from standard input.
    Add {
        #[command(flatten)]
        data: DataDir,
        /// Login name: letters, digits, '.', '_' or '-' (2–32).
        #[arg(long)]
        login: String,
        /// The name events record, e.g. 王芳.
        #[arg(long)]
        name: String,
        /// clerk (takes and pre-reviews), reviewer (also accepts and
        /// decides) or admin (also staff, quarantine and nodes).
        #[arg(long, value_parser = ["clerk", "reviewer", "admin"])]
        role: String,
        /// Read the password from the next line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List staff accounts.
    List {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: it can no longer log in.
    Disable {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        login: String,
    },
    /// Enable a disabled account again.
    Enable {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        login: String,
    },
    /// Set a new password for an account (also lifts a lock); asked for at
    /// the terminal, or read from standard input.
    Password {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        login: String,
        /// Read the password from the next line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BundleCmd {
    /// One 一件事 bundle's cases and its state (done when every case is).
    Show {
        #[command(flatten)]
        data: DataDir,
        /// The bundle id `case new --bundle` printed.
        bundle: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CatalogueCmd {
    /// 一件事一次办 bundles: items filed once and decided in parallel.
    Bundles {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// List service items.
    List {
        #[command(flatten)]
        data: DataDir,
        /// Only items that windows of this tier may take (village, township, county).
        #[arg(long, value_name = "TIER")]
        accepted_at: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CaseCmd {
    /// 收件: take a new case.
    New {
        #[command(flatten)]
        data: DataDir,
        /// Item code from the catalogue.
        #[arg(long, value_name = "CODE", required_unless_present = "bundle", conflicts_with = "bundle")]
        item: Option<String>,
        /// 一件事一次办: take every item of this catalogue bundle at once
        /// (catalogue bundles lists them); prints the bundle id and cases.
        #[arg(long, value_name = "CODE")]
        bundle: Option<String>,
        /// The applicant's name.
        #[arg(long, value_name = "NAME")]
        applicant: String,
        /// The applicant's 18-character ID number (身份证号); stored encrypted.
        #[arg(long = "id-number", value_name = "ID")]
        id_number: String,
        /// The applicant's phone; stored encrypted.
        #[arg(long, value_name = "P")]
        phone: Option<String>,
        /// A material received (repeat for several).
        #[arg(long, value_name = "NAME")]
        material: Vec<String>,
        /// 帮代办: the village agent (代办员) filing for the applicant.
        #[arg(long, value_name = "NAME", requires = "authorisation")]
        agent: Option<String>,
        /// The applicant's authorisation of the agent (委托), e.g. 委托书编号.
        #[arg(long, value_name = "TEXT", requires = "agent")]
        authorisation: Option<String>,
        #[command(flatten)]
        staff: Staff,
        #[arg(long)]
        json: bool,
    },
    /// Set a field (personal fields id_number, phone, address are encrypted).
    Edit {
        #[command(flatten)]
        data: DataDir,
        case: String,
        #[arg(long, value_name = "NAME")]
        field: String,
        #[arg(long, value_name = "V")]
        value: String,
        #[command(flatten)]
        staff: Staff,
    },
    /// Record a material as received (--add) or take it off the list (--remove).
    Material {
        #[command(flatten)]
        data: DataDir,
        case: String,
        #[arg(long, value_name = "NAME", conflicts_with = "remove", required_unless_present = "remove")]
        add: Option<String>,
        #[arg(long, value_name = "NAME")]
        remove: Option<String>,
        #[command(flatten)]
        staff: Staff,
    },
    /// 初审: pass the pre-review or return the case for supplement.
    Prereview {
        #[command(flatten)]
        data: DataDir,
        case: String,
        #[arg(long, conflicts_with = "return_", required_unless_present = "return_")]
        pass: bool,
        #[arg(long = "return")]
        return_: bool,
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        staff: Staff,
    },
    /// 转报: forward to the node that decides the item.
    Forward(StepArgs),
    /// 受理: accept (deciding tier). With --missing and --promise-date:
    /// 容缺受理, accepted with materials the catalogue allows to be missing,
    /// which the applicant promises to bring by that day.
    Accept {
        #[command(flatten)]
        step: StepArgs,
        /// A material accepted as missing (repeat for several).
        #[arg(long, value_name = "MATERIAL", requires = "promise_date")]
        missing: Vec<String>,
        /// The day the applicant promises the missing materials by.
        #[arg(long, value_name = "YYYY-MM-DD", requires = "missing")]
        promise_date: Option<String>,
    },
    /// 终止: end a 容缺 case whose promised materials never came (deciding tier).
    Terminate(StepArgs),
    /// 不予受理: refuse to accept (deciding tier).
    Refuse(StepArgs),
    /// 一次性告知补正: ask the applicant for missing materials.
    Supplement(StepArgs),
    /// 补正后重新收件: the applicant supplied what was missing.
    Resubmit(StepArgs),
    /// 准予: approve (deciding tier).
    Approve(StepArgs),
    /// 不予许可: deny (deciding tier).
    Deny(StepArgs),
    /// 出证/送达: hand out the result.
    Issue(StepArgs),
    /// 办结: close.
    Close(StepArgs),
    /// 撤回: the applicant withdraws.
    Withdraw(StepArgs),
    /// 挂起: suspend (stops the clock).
    Suspend(StepArgs),
    /// 恢复: resume a suspended case.
    Resume(StepArgs),
    /// 好差评: record the applicant's rating, 1 (非常满意) to 5 (非常不满意).
    Rate {
        #[command(flatten)]
        data: DataDir,
        case: String,
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
        level: u8,
        /// The stage rated: accept (受理) or done (办结); default: the
        /// latest the case has reached. One rating per stage.
        #[arg(long, value_parser = ["accept", "done"])]
        stage: Option<String>,
        /// 窗口评价器 (default), 扫码, 短信, 电话, 网站 or APP.
        #[arg(long, default_value = "窗口评价器")]
        channel: String,
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        staff: Staff,
    },
    /// 电子证照: write the signed licence of a case whose result this node
    /// issued (出证).
    Licence {
        #[command(flatten)]
        data: DataDir,
        case: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Show one case: state, every concurrent field value, conflicts, history.
    Show {
        #[command(flatten)]
        data: DataDir,
        case: String,
        #[arg(long)]
        json: bool,
    },
    /// List the cases held here.
    List {
        #[command(flatten)]
        data: DataDir,
        /// Only cases in this state (received, pre_reviewed, forwarded, accepted, …).
        #[arg(long, value_name = "S")]
        state: Option<String>,
        /// Only open cases past their due date (红牌).
        #[arg(long, conflicts_with = "due_within")]
        overdue: bool,
        /// Only open cases due within N working days from today (overdue
        /// ones included).
        #[arg(long, value_name = "N")]
        due_within: Option<u32>,
        /// 帮代办: only cases filed by this agent.
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Find cases by the applicant's ID number (looked up by keyed hash).
    Find {
        #[command(flatten)]
        data: DataDir,
        #[arg(long = "id-number", value_name = "ID")]
        id_number: String,
        #[arg(long)]
        json: bool,
    },
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Runs a command and maps the outcome to an exit code: 0 done, 1 refused
/// or failed (the message says why and what to do). Output that could not
/// be written because its reader went away (`| head`) is not a failure:
/// the program ends quietly with 0.
pub fn exit_with(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "error: {}", clean(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn output_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Makes a `println!` that meets closed output (`| head`) end the program
/// quietly with 0 instead of a panic message. Commands print through
/// [`say!`]; this covers whatever else prints.
pub fn quiet_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}

/// Text as it may be shown on a terminal: control characters (terminal
/// escapes among them) and invisible formatting characters are shown as
/// `\u{..}` escapes. Input is refused with them (`proto::limits`); this is
/// for whatever arrives from elsewhere.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(proto::limits::is_odd) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| if proto::limits::is_odd(c) { c.escape_unicode().to_string() } else { c.to_string() })
            .collect(),
    )
}

/// A JSON value as one line, with every odd character (see [`clean`])
/// written as a `\uXXXX` escape, which JSON readers decode back.
pub fn json_line(v: &Value) -> String {
    escape_json(serde_json::to_string(v).expect("JSON values serialise"))
}

/// [`json_line`] laid out over several lines.
pub fn json_pretty(v: &Value) -> String {
    escape_json(serde_json::to_string_pretty(v).expect("JSON values serialise"))
}

fn escape_json(text: String) -> String {
    // serde_json has escaped everything below U+0020 inside strings; a
    // newline left is layout. The other odd characters are all in the BMP.
    let odd = |c: char| c != '\n' && proto::limits::is_odd(c);
    if !text.chars().any(odd) {
        return text;
    }
    text.chars().map(|c| if odd(c) { format!("\\u{:04x}", c as u32) } else { c.to_string() }).collect()
}

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

fn print_json(v: &Value) -> Result<()> {
    say!("{}", json_line(v));
    Ok(())
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

/// The data directory a command works on.
fn data_dir(cmd: &Common) -> Option<PathBuf> {
    let d = match cmd {
        Common::Catalogue(CatalogueCmd::List { data, .. } | CatalogueCmd::Bundles { data, .. })
        | Common::Bundle(BundleCmd::Show { data, .. })
        | Common::VerifyLicence { data, .. }
        | Common::Stats { data, .. }
        | Common::Digest { data, .. }
        | Common::Verify { data, .. }
        | Common::Sync { data, .. }
        | Common::Quarantine(QuarantineCmd::List { data, .. })
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
        Common::Catalogue(CatalogueCmd::List { data, accepted_at, json }) => {
            let ledger = Ledger::open_read(&data.data)?;
            let tier = match accepted_at.as_deref() {
                None => None,
                Some(t) => {
                    Some(Tier::parse(t).with_context(|| format!("unknown tier {t:?}: village, township or county"))?)
                }
            };
            let items: Vec<_> =
                ledger.catalogue().items.iter().filter(|i| tier.is_none_or(|t| i.accepted_at.contains(&t))).collect();
            if json {
                print_json(&serde_json::to_value(&items)?)?;
            } else {
                say!("catalogue version {} ({} items shown)", ledger.catalogue().version, items.len());
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
        Common::Sync { data, peer, json } => {
            // The store is checked whole before anything is sent: a damaged
            // event would otherwise stop every sync for good, and work taken
            // on a damaged store could never be sent.
            let ledger = Ledger::open(&data.data)?;
            integrity::ensure_sound(ledger.store().conn(), &data.data)?;
            let peer = peer.unwrap_or_else(|| ledger.identity().hub_address.clone());
            let summary = crate::sync::sync_once(&data.data, &peer, !json)?;
            drop(ledger);
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
        Common::Config { data, operator } => {
            let ledger = match operator {
                None => Ledger::open_read(&data.data)?,
                Some(op) => {
                    if op.trim().is_empty() {
                        bail!("--operator needs a name");
                    }
                    proto::limits::check_name("the operator's name", op.trim()).map_err(crate::Declined::from)?;
                    let mut ledger = Ledger::open(&data.data)?;
                    ledger.set_operator(op.trim())?;
                    ledger
                }
            };
            let id = ledger.identity();
            say!("node      {} ({}, {})", clean(id.node.id.as_str()), id.node.tier, clean(&id.node.name));
            say!("hub       {}", clean(&id.hub_address));
            let operator = ledger.configured_operator()?.unwrap_or_else(|| "(not set)".into());
            say!("operator  {}", clean(&operator));
        }
    }
    Ok(())
}

fn run_case(cmd: CaseCmd) -> Result<()> {
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
                print_json(&crate::view::with_timing(case_json(&st), &st, timing.as_ref(), today()))?;
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

fn print_case(c: &CaseState) -> Result<()> {
    say!("case      {}", clean(c.case_id.as_str()));
    if let Some(cr) = &c.create {
        say!(
            "item      {} {} (catalogue v{}, decided by {})",
            clean(&cr.item),
            clean(&cr.item_name),
            cr.catalogue_version,
            cr.decided_by
        );
    }
    say!("state     {}", c.state);
    say!("home      {}   handler {}", clean(c.home.as_str()), clean(c.handler.as_str()));
    for (k, v) in &c.fields {
        let shown: Vec<_> = v.iter().map(|x| clean(x.display())).collect();
        let mark = if v.len() > 1 { "   <- concurrent values, resolve with case edit" } else { "" };
        // A name refused as input (reserved, like `state`, or odd) that
        // arrived from elsewhere is shown quoted, never as a line of the
        // case view itself.
        let name = match proto::limits::check_field_name(k) {
            Ok(()) => Cow::Borrowed(k.as_str()),
            Err(_) => Cow::Owned(format!("field \"{}\"", clean(k))),
        };
        say!("{name:<9} {}{mark}", shown.join(" | "));
    }
    let materials: Vec<_> = c.materials.iter().map(|m| clean(m)).collect();
    say!("materials {}", materials.join(", "));
    for r in &c.ratings {
        say!("rating    {} {}", r.level, clean(&r.note));
    }
    if !c.conflicts.is_empty() {
        say!("needs attention:");
        for conflict in &c.conflicts {
            say!("  {}", json_line(&crate::view::conflict_json(conflict)));
        }
    }
    say!("history:");
    for h in &c.history {
        let arrow = match (h.from, h.to) {
            (Some(f), Some(t)) => format!("{f} -> {t}"),
            _ => String::new(),
        };
        say!(
            "  {:<20} {:<14} {:<18} {:<30} {}{}",
            clean(&h.event.to_string()),
            clean(&h.actor),
            h.kind(),
            arrow,
            clean(&crate::view::history_detail(h)),
            if h.superseded { "  [superseded]" } else { "" }
        );
    }
    Ok(())
}

fn read_password(stdin: bool) -> Result<String> {
    if stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password: give it on standard input with --password-stdin");
    }
    let first = rpassword::prompt_password("password: ").context("cannot read the password")?;
    let again = rpassword::prompt_password("password again: ").context("cannot read the password")?;
    if first != again {
        bail!("the two passwords differ; nothing was written");
    }
    Ok(first)
}

fn staff_command(cmd: StaffCmd) -> Result<()> {
    use crate::staff;
    match cmd {
        StaffCmd::Add { data, login, name, role, password_stdin } => {
            let role = staff::Role::parse(&role).context("role must be clerk, reviewer or admin")?;
            let password = read_password(password_stdin)?;
            let ledger = Ledger::open(&data.data)?;
            let m = staff::add(ledger.store().conn(), &login, &name, role, &password, crate::wall_clock_ms())?;
            say!("added {} ({}), {}", m.login, clean(&m.name), m.role.name());
        }
        StaffCmd::List { data, json } => {
            let ledger = Ledger::open_read(&data.data)?;
            let list = staff::list(ledger.store().conn())?;
            if json {
                print_json(&serde_json::to_value(&list)?)?;
            } else {
                for m in &list {
                    let state = if m.disabled { " (disabled)" } else { "" };
                    say!("{}\t{}\t{}{state}", m.login, clean(&m.name), m.role.name());
                }
            }
        }
        StaffCmd::Disable { data, login } => {
            staff::set_disabled(Ledger::open(&data.data)?.store().conn(), &login, true)?;
            say!("{login} disabled");
        }
        StaffCmd::Enable { data, login } => {
            staff::set_disabled(Ledger::open(&data.data)?.store().conn(), &login, false)?;
            say!("{login} enabled");
        }
        StaffCmd::Password { data, login, password_stdin } => {
            let password = read_password(password_stdin)?;
            staff::set_password(Ledger::open(&data.data)?.store().conn(), &login, &password)?;
            say!("{login}: password set");
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
