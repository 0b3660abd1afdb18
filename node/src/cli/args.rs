//! The arguments of the common commands, as clap derives them. The doc
//! comments here are the `--help` text, so a change to one is a change to
//! what staff read at the terminal.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

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
    /// The working-day calendar this node holds (the county publishes it).
    #[command(subcommand)]
    Calendar(CalendarCmd),
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
    /// A township's records of a village that moved to another township
    /// (the county's topology change): kept as they were, and marked, until
    /// purged here. Purging is refused until the county's receipt covers
    /// every event of that village held here, and is recorded for
    /// administrators (quarantine list, kind purged_lane).
    PurgeMoved {
        #[command(flatten)]
        data: DataDir,
        /// The village that moved away.
        #[arg(long, value_name = "VILLAGE")]
        home: String,
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
    /// Unlock this node's keys for a working day (see `lock`).
    ///
    /// Asks the passphrase once and leaves the derived keys with a small
    /// background agent, so that later commands (a `sync` run by a scheduler) need neither the
    /// passphrase nor the time it costs to derive their keys. Only this
    /// account can reach the agent; it keeps the keys in memory only,
    /// never the passphrase, and ends at the time given (however long
    /// the laptop slept, whatever its clock is set to), or at `lock`.
    Unlock {
        #[command(flatten)]
        data: DataDir,
        /// How long: 8h, 90m, 600s (at most 16h).
        #[arg(long = "for", value_name = "TIME", default_value = "10h")]
        time: String,
    },
    /// End this node's key agent now (see `unlock`).
    Lock {
        #[command(flatten)]
        data: DataDir,
    },
    /// The key agent itself, started by `unlock`.
    #[command(hide = true)]
    Agent {
        #[command(flatten)]
        data: DataDir,
    },
    /// Input refused by checks (bad signature, broken chain, not authorised…).
    #[command(subcommand)]
    Quarantine(QuarantineCmd),
    /// Material files held here: prune those the county has, fetch one back.
    #[command(subcommand)]
    Files(FilesCmd),
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
        /// Village: minutes the township has to pass acknowledged records on
        /// before a county receipt without them raises a warning (default 60).
        #[arg(long, value_name = "MIN")]
        receipt_grace_minutes: Option<u64>,
        /// County: keep material files in an S3-compatible object store,
        /// s3://BUCKET (credentials from AWS_ACCESS_KEY_ID and
        /// AWS_SECRET_ACCESS_KEY); checked with a probe before it is saved.
        #[arg(long, value_name = "s3://BUCKET", requires = "s3_endpoint")]
        blobs: Option<String>,
        /// The object store's address, e.g. http://127.0.0.1:8333.
        #[arg(long, value_name = "URL", requires = "blobs")]
        s3_endpoint: Option<String>,
        /// The object store's region (default us-east-1).
        #[arg(long, value_name = "REGION", requires = "blobs")]
        s3_region: Option<String>,
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
pub enum FilesCmd {
    /// Remove the bytes of files whose cases are all finished and older
    /// than --days, and that the county's receipt covers (a good copy is
    /// safe there); they are fetched back with `files fetch`.
    Prune {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, default_value_t = 180)]
        days: u64,
        #[arg(long)]
        json: bool,
    },
    /// Ask for a pruned file again: it comes back with the next sync.
    Fetch {
        #[command(flatten)]
        data: DataDir,
        /// The file's hash (case files lists it).
        hash: String,
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
    /// List service items (of the newest version held, unless --version).
    List {
        #[command(flatten)]
        data: DataDir,
        /// Only items that windows of this tier may take (village, township, county).
        #[arg(long, value_name = "TIER")]
        accepted_at: Option<String>,
        /// A version held here (catalogue versions lists them).
        #[arg(long, value_name = "N")]
        version: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// The catalogue versions held here, newest last.
    Versions {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// County only: publish the next catalogue version from a whole
    /// catalogue file (its "version" must be the next number). It reaches
    /// every node through sync as the change from the version before;
    /// cases already taken keep the version they were taken under.
    /// Prints {"version": N, ...}.
    Publish {
        #[command(flatten)]
        data: DataDir,
        /// The catalogue JSON (the shape of deploy/catalogue.json).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Who publishes (recorded on the event).
        #[arg(long = "as", value_name = "NAME", default_value = "county administrator")]
        actor: String,
    },
    /// What changed between two versions held: items added, changed and
    /// cancelled.
    Diff {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_name = "N")]
        from: u32,
        #[arg(long, value_name = "M")]
        to: u32,
        #[arg(long)]
        json: bool,
    },
}

/// The working-day calendar (法定节假日 and 调休) the county publishes.
#[derive(Subcommand, Debug)]
pub enum CalendarCmd {
    /// The calendar this node times cases with: its version and years.
    Show {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// County only: publish the next calendar version (the shape of
    /// deploy/calendar.json; its "version" must be the next number). Due
    /// dates everywhere follow it once it has arrived by sync.
    Publish {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Who publishes (recorded on the event).
        #[arg(long = "as", value_name = "NAME", default_value = "county administrator")]
        actor: String,
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
    /// Attach a file (PDF, JPEG, PNG or OFD; told by its content) to a
    /// material: stored once, sealed under the case's lane key; prints its
    /// hash, size and type. With --replaces, it supersedes an earlier file
    /// of the material (补正), which stays in the history.
    Attach {
        #[command(flatten)]
        data: DataDir,
        case: String,
        /// The material the file is of (e.g. 居民身份证).
        #[arg(long, value_name = "NAME")]
        material: String,
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
        /// The hash of the file this one replaces (case files lists them).
        #[arg(long, value_name = "HASH")]
        replaces: Option<String>,
        #[command(flatten)]
        staff: Staff,
        #[arg(long)]
        json: bool,
    },
    /// Satisfy a material with an electronic licence (电子证照) of this
    /// county, by reference (the licence file `case licence` wrote, or read
    /// from its QR code): checked offline first, no file needed.
    Cite {
        #[command(flatten)]
        data: DataDir,
        case: String,
        #[arg(long, value_name = "NAME")]
        material: String,
        #[arg(long, value_name = "FILE")]
        licence: PathBuf,
        #[command(flatten)]
        staff: Staff,
    },
    /// Take a file off a material (an event: the file stays in the history).
    Detach {
        #[command(flatten)]
        data: DataDir,
        case: String,
        #[arg(long, value_name = "NAME")]
        material: String,
        #[arg(long, value_name = "HASH")]
        hash: String,
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        staff: Staff,
    },
    /// List a case's files: material, hash, size, type, name, whether this
    /// node holds the bytes (`here`).
    Files {
        #[command(flatten)]
        data: DataDir,
        case: String,
        #[arg(long)]
        json: bool,
    },
    /// Write one of a case's files to --out, checked against its hash (a
    /// file altered on disk is refused), or say where it is when this node
    /// does not hold it.
    File {
        #[command(flatten)]
        data: DataDir,
        case: String,
        hash: String,
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
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
