//! A node's ledger: its store, identity, topology and catalogue, and the
//! local write path. Every local change is checked (catalogue, ID number,
//! authorisation, workflow) inside the same write transaction that stores
//! it, so a refusal writes nothing and two processes writing to one data
//! directory cannot interleave a check with another's write.

use crate::blobs;
use crate::error::Result;
use crate::identity::{Bundle, Identity, Secrets};
use crate::keystore::{self, Kdf};
use crate::protect::DataKey;
use crate::store::{self, Store};
use anyhow::Context;
use proto::auth;
use proto::author::{AuthoringError, Draft};
use proto::event::{Create, FieldValue, KeyId, Seal};
use proto::files::{FileHash, FileRef};
use proto::fold::{digest_of, CaseState};
use proto::limits::{self, LimitError};
use proto::personal::{validate_id_number, IdNumberError, PersonalKind};
use proto::workflow::State;
use proto::{Body, CaseId, Catalogue, Catalogues, Event, Hash, Hlc, HlcClock, NodeId, Step, Topology};
use std::path::Path;

/// A local command was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum Declined {
    /// The item code is not in the catalogue.
    #[error("item {0} is not in the catalogue (catalogue list shows the codes)")]
    UnknownItem(String),
    /// The item was cancelled in a catalogue version the county published.
    #[error("item {item} was cancelled in catalogue v{version} and can no longer be taken (catalogue list shows the items of the newest version)")]
    ItemCancelled { item: String, version: u32 },
    /// The ID number is not valid.
    #[error(transparent)]
    IdNumber(#[from] IdNumberError),
    /// Not held, not allowed now, or not allowed for this node.
    #[error(transparent)]
    Authoring(#[from] AuthoringError),
    /// An argument is malformed.
    #[error("{0}")]
    Invalid(String),
    /// This copy of the node found at its last sync that another copy wrote
    /// a different history; its own work waits to be re-entered.
    #[error(
        "this laptop's records were older than the network's copy of its own work (restored from a backup, \
         or a copy of another laptop); its work is set aside, nothing is lost: run sync to finish recovery \
         before taking new work"
    )]
    Recovering,
    /// Input beyond the limits (see [`proto::limits`]).
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A file of a type not allowed (decided by its content).
    #[error(
        "only PDF, JPEG, PNG and OFD files may be attached (decided by the file's content, not its name); \
         this file is none of them"
    )]
    FileType,
    /// A file over the limit per file.
    #[error("the file is {:.1} MB, over the limit of {} MB per file; scan it at a lower resolution or split it", *size as f64 / 1_048_576.0, limit / 1_048_576)]
    FileTooLarge { size: u64, limit: u64 },
    /// The licence cited does not verify here.
    #[error("the licence does not verify: {0}")]
    Licence(proto::licence::LicenceError),
    /// The file is one of the case's, but its bytes are not on this node
    /// (yet): they come with the next sync from the node that has them.
    #[error("this node does not hold file {0} yet; it comes with a sync from the node where it was attached")]
    FileNotHere(FileHash),
}

/// How an applicant can rate a case (好差评 channels).
pub const RATING_CHANNELS: [&str; 6] = ["窗口评价器", "扫码", "短信", "电话", "网站", "APP"];

/// Working days within which a poor rating is followed up (Sichuan: 15).
pub const FOLLOW_UP_DAYS: u32 = 15;

/// A newly taken case's input.
#[derive(Debug, Clone)]
pub struct NewCase {
    pub item: String,
    pub applicant: String,
    pub id_number: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub materials: Vec<String>,
    /// The 一件事 bundle this case was taken in, if any.
    pub bundle: Option<String>,
    /// 帮代办: the agent (代办员) filing for the applicant, and the
    /// applicant's authorisation (委托), both recorded on the case.
    pub agent: Option<(String, String)>,
}

/// A node's ledger, opened on a data directory.
pub struct Ledger {
    store: Store,
    identity: Identity,
    /// The origin this node mints events under: its id, or an incarnation
    /// of it after it learned its store was stale.
    origin: NodeId,
    topology: std::sync::Arc<Topology>,
    /// Read at first use: a session with nothing new, and most commands,
    /// never need the 1,613-item catalogue.
    catalogues: std::cell::OnceCell<std::sync::Arc<Catalogues>>,
    /// How many publications `catalogues` holds (see [`Ledger::reload`]).
    publications_held: u64,
    /// The private keys, unsealed with the passphrase on first use, so
    /// that reading cases needs no passphrase and writing does.
    secrets: std::cell::OnceCell<Secrets>,
    /// The signing key of `secrets`, expanded once: expanding it derives
    /// its public half (a scalar multiplication), as much again as a
    /// signature costs, and the hub signs a receipt every session.
    signing_key: std::cell::OnceCell<ed25519_dalek::SigningKey>,
    /// [`KEYS_RESEALED_KEY`] as read before `secrets` were unsealed.
    keys_resealed: std::cell::Cell<u64>,
    /// The data directory (material files live beside the store).
    dir: std::path::PathBuf,
}

/// The checks of a file to attach that need no case: its size, its type
/// told by its content, the limits every receiver applies to the event.
/// Returns what the event will say of it (its hash computed). Nothing is
/// written.
pub fn check_file(material: &str, name: &str, bytes: &[u8]) -> std::result::Result<FileRef, Declined> {
    let limit = proto::files::FILE_LIMIT_DEFAULT;
    if bytes.len() as u64 > limit {
        return Err(Declined::FileTooLarge { size: bytes.len() as u64, limit });
    }
    let media_type = proto::files::MediaType::sniff(bytes).ok_or(Declined::FileType)?;
    // The name travels in the signed event, in the clear: an ID number or
    // a phone in it (scans are named after them) is masked.
    let name = proto::personal::mask_personal_in(name.rsplit(['/', '\\']).next().unwrap_or(name));
    let file = FileRef {
        hash: blobs::hash_of(bytes),
        size: bytes.len() as u64,
        media_type,
        name,
        pages: media_type.pages(bytes),
    };
    let body = Body::AttachFile { material: material.into(), file: file.clone(), replaces: None };
    limits::check_body(&body)?;
    Ok(file)
}

/// A file attached to a case's material.
#[derive(Debug, Clone)]
pub struct Attached {
    pub file: FileRef,
    /// False when this node already held the same bytes (stored once).
    pub newly_stored: bool,
    pub event: Event,
}

enum Target {
    New,
    Case(CaseId),
}

#[derive(PartialEq, Eq)]
enum Check {
    /// Every check of a local command.
    Full,
    /// Authority only (re-entering a stale copy's work; see
    /// `Draft::check_authority`).
    AuthorityOnly,
}

const HLC_KEY: &str = "hlc";
const SECRETS_KEY: &str = "secrets";
/// Meta key: how many times the sealed keys were sealed again with other
/// lanes' data keys ([`Ledger::reseal_lane_keys`]), so that a long-lived
/// handle holding them unsealed reads them again ([`Ledger::reload`]).
const KEYS_RESEALED_KEY: &str = "keys_resealed";
const CLOCK_KEY: &str = "clock_offset";
const FOLD_VERSION_KEY: &str = "fold_version";
const ROWS_VERSION_KEY: &str = "case_rows_version";

/// "3 days", "5 hours", "12 minutes".
/// Whether a clock offset measured now differs from the one held by
/// anything staff would be told: the peer, a second or more, or which
/// side of the warning limit it is on.
fn clock_offset_news(held: Option<(&NodeId, i64)>, peer: &NodeId, offset_ms: i64) -> bool {
    let warns = |o: i64| o.abs() > proto::sync::CLOCK_WARNING_MS;
    match held {
        None => true,
        Some((p, o)) => p != peer || (o - offset_ms).abs() >= 1_000 || warns(o) != warns(offset_ms),
    }
}

fn human_duration(ms: u64) -> String {
    let minutes = ms / 60_000;
    match minutes {
        m if m >= 2 * 24 * 60 => format!("{} days", m / (24 * 60)),
        m if m >= 2 * 60 => format!("{} hours", m / 60),
        m => format!("{m} minutes"),
    }
}
const ORIGIN_KEY: &str = "origin";
/// Set while this node's own chains are set aside and not yet re-entered.
const RECOVERING_KEY: &str = "recovering";

/// Records, inside the caller's transaction, that this store is stale: new
/// local writes wait until [`Ledger::finish_recovery`] has moved the node
/// to a fresh incarnation.
pub(crate) fn mark_recovering(tx: &rusqlite::Connection) -> Result<()> {
    Ok(store::meta_set(tx, RECOVERING_KEY, &true)?)
}

/// What became of one event a stale copy of this node wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reentered {
    /// The event as the stale copy wrote it.
    pub original: String,
    /// Its case there.
    pub case: CaseId,
    /// The event written now under the new incarnation, or `None` when the
    /// ledger already held it (it reached upstream before the copy diverged).
    pub now: Option<String>,
    /// The case it now belongs to (a new id when the copy created it).
    pub now_case: CaseId,
    /// Why it could not be entered again, if it could not (it stays in the
    /// set-aside table for an administrator).
    pub kept_because: Option<String>,
}

impl Ledger {
    /// Initialises a data directory from an enrolment bundle, sealing the
    /// bundle's private keys under `passphrase`.
    pub fn init(dir: &Path, bundle: &Bundle, passphrase: &str, kdf: Kdf) -> Result<Ledger> {
        let sealed = keystore::seal(&serde_json::to_vec(&bundle.secrets)?, passphrase, kdf)?;
        let mut store = Store::create(dir)?;
        let tx = store.write()?;
        store::meta_set(&tx, "identity", &bundle.identity)?;
        store::meta_set(&tx, SECRETS_KEY, &sealed)?;
        store::meta_set(&tx, "topology", &bundle.topology)?;
        store::meta_set(&tx, "catalogue", &bundle.catalogue)?;
        if let Some(calendar) = &bundle.calendar {
            store::set_calendar(&tx, calendar)?;
        }
        tx.commit()?;
        restrict_permissions(dir);
        drop(store);
        let mut ledger = Ledger::open(dir)?;
        if let Some(global) = &bundle.global {
            ledger.take_county_segment(global)?;
        }
        Ok(ledger)
    }

    /// The one receive path, beside the local write path: vouches for the
    /// sender's new incarnation where this node vouches for it, checks the
    /// segments (`proto::sync::check_batch`) and stores the verdict in one
    /// transaction. Returns the verdict, for the session's Ack.
    pub fn receive(
        &mut self,
        from: &NodeId,
        segments: Vec<proto::sync::Segment>,
        now_ms: u64,
    ) -> Result<proto::sync::Verdict> {
        let verdict = self.check_received(from, segments, now_ms)?;
        crate::sync::apply_verdict(self, from, &verdict)?;
        Ok(verdict)
    }

    /// [`Ledger::receive`]'s checks, storing nothing but a voucher for a
    /// peer's new incarnation: the verdict to store (a server hands it to
    /// its group commit).
    pub fn check_received(
        &mut self,
        from: &NodeId,
        segments: Vec<proto::sync::Segment>,
        now_ms: u64,
    ) -> Result<proto::sync::Verdict> {
        crate::sync::vouch_for_peer(self, from, &segments)?;
        let me = self.identity.node.id.clone();
        Ok(proto::sync::check_batch(
            &crate::sync::SqliteReplica(self.store.conn()),
            &self.topology,
            self.try_catalogues()?,
            &me,
            from,
            segments,
            now_ms,
        )?)
    }

    /// Stores the county's global-lane events carried in a bundle, checked
    /// like any received batch (the county's seal, its key in the topology).
    fn take_county_segment(&mut self, hex_segment: &str) -> Result<()> {
        let bytes = hex::decode(hex_segment).context("the bundle's county events are damaged")?;
        let segment = proto::sync::Segment::decode(&bytes).context("the bundle's county events are damaged")?;
        let county = self.topology.county().id.clone();
        let verdict = proto::sync::check_batch(
            &crate::sync::SqliteReplica(self.store.conn()),
            &self.topology,
            self.try_catalogues()?,
            &self.identity.node.id.clone(),
            &county,
            vec![segment],
            crate::wall_clock_ms(),
        )?;
        // Checked before anything is stored: a bundle that does not verify
        // leaves no trace of its county events.
        if !verdict.quarantined.is_empty() || verdict.deferred > 0 {
            return Err(anyhow::anyhow!(
                "the bundle's county events do not verify against the county's key; ask the county for a new bundle"
            )
            .into());
        }
        Ok(crate::sync::apply_verdict(self, &county, &verdict)?)
    }

    /// Opens a ledger for writing (see [`Store::open`]).
    pub fn open(dir: &Path) -> Result<Ledger> {
        let mut ledger = Ledger::on(Store::open(dir)?, dir)?;
        ledger.refold_if_stale()?;
        Ok(ledger)
    }

    /// Case rows folded by another version of the fold are rebuilt from
    /// the events (which are the truth), once.
    fn refold_if_stale(&mut self) -> Result<()> {
        let stored: Option<u32> = store::meta_get(self.store.conn(), FOLD_VERSION_KEY)?;
        let rows: Option<u32> = store::meta_get(self.store.conn(), ROWS_VERSION_KEY)?;
        if stored != Some(proto::fold::FOLD_VERSION) || rows != Some(store::CASE_ROWS_VERSION) {
            if stored.is_some() {
                tracing::warn!(from = ?stored, to = proto::fold::FOLD_VERSION, "rebuilding case rows for a new fold");
            }
            self.store.rebuild()?;
            store::meta_set(self.store.conn(), FOLD_VERSION_KEY, &proto::fold::FOLD_VERSION)?;
            store::meta_set(self.store.conn(), ROWS_VERSION_KEY, &store::CASE_ROWS_VERSION)?;
        }
        Ok(())
    }

    /// Re-reads what another handle on the same store may have changed
    /// since this one was opened (the origin, after a recovery), so that a
    /// long-lived handle acts on the store as it is.
    pub fn reload(&mut self) -> Result<()> {
        self.origin = store::meta_get(self.store.conn(), ORIGIN_KEY)?.unwrap_or_else(|| self.identity.node.id.clone());
        // The county's publications another handle stored (read again only
        // when there are more: a served session's start stays cheap).
        if store::publications_held(self.store.conn())? != self.publications_held {
            self.reload_catalogues()?;
        }
        // The lanes' data keys another handle sealed again (the county
        // handed over a moved village's): a desk would not read its cases'
        // personal data until restarted.
        if self.secrets.get().is_some()
            && store::meta_get::<u64>(self.store.conn(), KEYS_RESEALED_KEY)?.unwrap_or(0) != self.keys_resealed.get()
        {
            self.forget_secrets();
        }
        Ok(())
    }

    /// Opens a ledger for reading; works on read-only media and on a
    /// damaged store (see [`Store::open_read`]).
    pub fn open_read(dir: &Path) -> Result<Ledger> {
        Ledger::on(Store::open_read(dir)?, dir)
    }

    /// Opens a ledger for `verify --repair`, damaged or not.
    pub fn open_for_repair(dir: &Path) -> Result<Ledger> {
        Ledger::on(Store::open_for_repair(dir)?, dir)
    }

    fn on(store: Store, dir: &Path) -> Result<Ledger> {
        let identity: Identity = store::meta_get(store.conn(), "identity")?
            .with_context(|| format!("{} was never initialised; run init again", dir.display()))?;
        let topology = std::sync::Arc::new(store::topology(store.conn())?);
        // The county holds every version it published; below it a version
        // not held may still arrive.
        let publications_held = store::publications_held(store.conn())?;
        let origin = store::meta_get(store.conn(), ORIGIN_KEY)?.unwrap_or_else(|| identity.node.id.clone());
        Ok(Ledger {
            store,
            identity,
            origin,
            topology,
            catalogues: Default::default(),
            publications_held,
            secrets: Default::default(),
            signing_key: Default::default(),
            keys_resealed: Default::default(),
            dir: dir.to_path_buf(),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    /// This node's id in the topology.
    pub fn me(&self) -> &NodeId {
        &self.identity.node.id
    }
    /// The origin new events are minted under (this node's id, or its
    /// current incarnation).
    pub fn origin(&self) -> &NodeId {
        &self.origin
    }
    /// True while set-aside work of a stale copy waits to be re-entered;
    /// local writes wait for the next sync.
    pub fn recovering(&self) -> Result<bool> {
        Ok(store::meta_get::<bool>(self.store.conn(), RECOVERING_KEY)?.unwrap_or(false))
    }

    /// Another copy of this node wrote a different history of these
    /// chains: moves this copy's events of them aside (kept, never deleted)
    /// so the peer's history can be taken back, and stops local writes
    /// until [`Ledger::finish_recovery`].
    pub fn begin_recovery(&mut self, chains: &[(proto::Lane, NodeId)]) -> Result<usize> {
        let now = crate::wall_clock_ms();
        let tx = self.store.write()?;
        let mut moved = 0;
        for (lane, origin) in chains {
            if !origin.is_incarnation_of(&self.identity.node.id) {
                return Err(anyhow::anyhow!("{origin} is not this node").into());
            }
            moved += store::set_aside_chain(&tx, origin, lane, now)?;
        }
        store::meta_set(&tx, RECOVERING_KEY, &true)?;
        tx.commit()?;
        Ok(moved)
    }

    /// The store was stale (its own events came back from a peer, or a
    /// copy diverged and its history was taken back): continues under a
    /// fresh incarnation, then enters again every set-aside event the
    /// ledger does not hold, creations under new case ids. Returns what
    /// was re-entered.
    pub fn finish_recovery(&mut self) -> Result<(NodeId, Vec<Reentered>)> {
        let fresh = self.identity.node.id.incarnation(rand::random());
        {
            let tx = self.store.write()?;
            store::meta_set(&tx, ORIGIN_KEY, &fresh)?;
            tx.commit()?;
        }
        self.origin = fresh.clone();
        let mut cases: std::collections::BTreeMap<CaseId, CaseId> = Default::default();
        let mut out = Vec::new();
        for (e, hash) in store::set_aside_pending(self.store.conn())? {
            let held = store::hash_of(self.store.conn(), &e.id.origin, e.id.seq)?;
            let now_case = cases.get(&e.case).cloned().unwrap_or_else(|| e.case.clone());
            let mut entry = Reentered {
                original: e.id.to_string(),
                case: e.case.clone(),
                now: None,
                now_case: now_case.clone(),
                kept_because: None,
            };
            if held != Some(hash) {
                let target = if matches!(e.body, Body::Create(_)) { Target::New } else { Target::Case(now_case) };
                match self.append_as(&e.actor, target, e.body.clone(), Check::AuthorityOnly) {
                    Ok(written) => {
                        if matches!(e.body, Body::Create(_)) {
                            cases.insert(e.case.clone(), written.case.clone());
                        }
                        entry.now = Some(written.id.to_string());
                        entry.now_case = written.case;
                    }
                    Err(err) if err.declined().is_some() => entry.kept_because = Some(format!("{err:#}")),
                    Err(err) => return Err(err),
                }
            }
            let tx = self.store.write()?;
            let outcome = match (&entry.now, &entry.kept_because) {
                (Some(id), _) => format!("re-entered as {id}"),
                (None, Some(why)) => format!("kept: {why}"),
                (None, None) => "held".to_string(),
            };
            store::set_aside_done(&tx, &e.id, &hash, &outcome)?;
            tx.commit()?;
            out.push(entry);
        }
        let tx = self.store.write()?;
        store::meta_set(&tx, RECOVERING_KEY, &false)?;
        tx.commit()?;
        Ok((fresh, out))
    }
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
    /// The county's map, shared: what a session holds while it runs (a
    /// copy per session cost the hub a thousand allocations).
    pub fn shared_topology(&self) -> std::sync::Arc<Topology> {
        self.topology.clone()
    }
    /// The newest catalogue version held: what new cases are taken under.
    pub fn catalogue(&self) -> &Catalogue {
        self.catalogues().latest().expect("a ledger always holds a catalogue")
    }
    /// Reads the catalogue and calendar versions held again (after a
    /// publication was stored).
    pub(crate) fn reload_catalogues(&mut self) -> Result<()> {
        self.catalogues = Default::default();
        self.topology = std::sync::Arc::new(store::topology(self.store.conn())?);
        self.publications_held = store::publications_held(self.store.conn())?;
        Ok(())
    }

    /// The calendar file this node times cases with: the newest the county
    /// published that is held here, or its enrolment bundle's.
    pub fn calendar_file(&self) -> Result<proto::calendar::CalendarFile> {
        if let Some(file) = self.try_catalogues()?.published_calendar() {
            return Ok(file.clone());
        }
        Ok(match store::meta_get(self.store.conn(), "calendar")? {
            Some(f) => f,
            None => serde_json::from_str(store::DEFAULT_CALENDAR).context("the shipped calendar is damaged")?,
        })
    }

    /// The working-day calendar this node times cases with.
    pub fn calendar(&self) -> Result<std::sync::Arc<proto::calendar::Calendar>> {
        Ok(store::calendar(self.store.conn())?)
    }

    /// A case's time against its limit on `today` (see
    /// [`proto::calendar::timing`]); `None` before acceptance.
    pub fn timing(&self, case: &CaseState, today: proto::calendar::Day) -> Result<Option<proto::calendar::Timing>> {
        Ok(proto::calendar::timing(case, &*self.calendar()?, today))
    }

    /// The township a village moved to, when this node held the village's
    /// lane before the move and no longer has it in its scope: what it
    /// holds of it is kept as it was (and shown marked), and it receives
    /// nothing new of it.
    pub fn moved_to(&self, home: &NodeId) -> Option<NodeId> {
        let moved = !self.topology.is_within(home, self.me()) && self.topology.was_within(home, self.me());
        moved.then(|| self.topology.get(home).and_then(|n| n.parent.clone())).flatten()
    }

    /// Removes what this node holds of a village's lane that moved away
    /// from it, once the county's receipt covers every event of it held
    /// here (nothing is lost: the county and the new township hold it).
    /// Recorded in the quarantine table (kind `purged_lane`) for
    /// administrators. Returns the events removed.
    pub fn purge_moved_lane(&mut self, home: &NodeId, now_ms: u64) -> Result<u64> {
        let Some(to) = self.moved_to(home) else {
            return Err(Declined::Invalid(format!(
                "{home} did not move away from {}: only a lane that moved away can be purged",
                self.me()
            ))
            .into());
        };
        let lane = proto::Lane::Home(home.clone());
        let receipt = crate::receipts::held(self.store.conn(), home)?;
        let tips = store::lane_tips(self.store.conn(), &lane)?;
        if let Some((origin, seq)) = tips.iter().find(|(o, s)| !receipt.as_ref().is_some_and(|r| r.covers(o, *s))) {
            return Err(Declined::Invalid(format!(
                "the county's receipt for {home} does not cover event {origin}:{seq} held here yet; sync with the \
                 county first (this node hands the lane up), then purge"
            ))
            .into());
        }
        let missing: Vec<FileHash> = receipt.as_ref().map(|r| r.receipt.missing.clone()).unwrap_or_default();
        let named: Vec<Vec<u8>> = self
            .store
            .conn()
            .prepare("SELECT DISTINCT hash FROM file_refs WHERE home = ?1")?
            .query_map([home.as_str()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if let Some(h) = named.iter().find(|h| missing.iter().any(|m| m.0.as_slice() == h.as_slice())) {
            return Err(Declined::Invalid(format!(
                "the county's receipt for {home} says it still lacks file {}; sync with the county first, then purge",
                hex::encode(h)
            ))
            .into());
        }
        let me = self.me().clone();
        let tx = self.store_mut().write()?;
        let (removed, files) = store::purge_lane(&tx, &lane)?;
        let reason = format!(
            "lane {home} purged here after it moved to {to}: {removed} events and {} material files, all held by \
             the county",
            files.len()
        );
        store::quarantine(&tx, now_ms, &me, &NodeId::new(home.as_str()), 0, "purged_lane", &reason, &[])?;
        tx.commit()?;
        for hash in &files {
            let _ = std::fs::remove_file(crate::blobs::path_of(&self.dir, hash));
        }
        // Its data key too: this node no longer holds that lane (the county
        // hands it over again should the village come back).
        if self.secrets()?.data_keys.lanes.contains_key(home) {
            Ledger::reseal_lane_keys(self.store.conn(), &me, &[], Some(home))?;
            self.forget_secrets();
        }
        tracing::warn!(home = %home, to = %to, removed, "moved lane purged");
        Ok(removed)
    }

    /// A case's item as the catalogue version it was taken under says: an
    /// item changed or cancelled since keeps, for cases already taken, the
    /// materials and result it had.
    pub fn item_of(&self, case: &CaseState) -> Option<&proto::Item> {
        let version = case.create.as_ref()?.catalogue_version;
        self.catalogues().get(version)?.item(case.item())
    }

    /// Every catalogue version held, to judge creations against.
    ///
    /// Panics when the stored catalogue cannot be read (a damaged store,
    /// which `verify` reports); [`Ledger::try_catalogues`] says so instead.
    pub fn catalogues(&self) -> &Catalogues {
        self.try_catalogues().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`Ledger::catalogues`], read from the store at the first use.
    pub fn try_catalogues(&self) -> Result<&Catalogues> {
        if let Some(c) = self.catalogues.get() {
            return Ok(c);
        }
        let read = store::catalogues(self.store.conn(), self.identity.tier() == proto::Tier::County)
            .context("the stored catalogue cannot be read; run verify")?;
        Ok(self.catalogues.get_or_init(|| read))
    }
    /// This node's private keys, unsealed with its passphrase.
    pub fn secrets(&self) -> Result<&Secrets> {
        if let Some(s) = self.secrets.get() {
            return Ok(s);
        }
        // Read first: keys sealed again after it are read again at the next
        // reload, never kept as if current.
        self.keys_resealed.set(store::meta_get(self.store.conn(), KEYS_RESEALED_KEY)?.unwrap_or(0));
        let sealed: keystore::Sealed = store::meta_get(self.store.conn(), SECRETS_KEY)?
            .context("this data directory holds no keys; initialise it again from its enrolment bundle")?;
        let what = format!("node {}", self.identity.node.id);
        let clear = keystore::open_in(self.dir(), &sealed, &what)?;
        let secrets: Secrets = serde_json::from_slice(&clear).context("the node's sealed keys are damaged")?;
        Ok(self.secrets.get_or_init(|| secrets))
    }

    /// Forgets the unsealed keys (read again at the next use): after the
    /// county handed over keys of lanes new to this node.
    pub(crate) fn forget_secrets(&mut self) {
        self.secrets = Default::default();
        self.signing_key = Default::default();
    }

    /// This node's signing key (from [`Ledger::secrets`]), expanded once.
    pub(crate) fn signing_key(&self) -> Result<ed25519_dalek::SigningKey> {
        if let Some(key) = self.signing_key.get() {
            return Ok(key.clone());
        }
        let key = self.secrets()?.signing_key()?;
        Ok(self.signing_key.get_or_init(|| key).clone())
    }

    /// Changes the data keys held, sealed again under the node's passphrase
    /// with the rest of its private keys (in one transaction): the keys of
    /// lanes the county handed over (`add`), or of a lane that moved away
    /// and was purged (`remove`). Returns how many were added.
    pub(crate) fn reseal_lane_keys(
        conn: &rusqlite::Connection,
        node: &NodeId,
        add: &[(NodeId, [u8; 32])],
        remove: Option<&NodeId>,
    ) -> Result<u64> {
        // The key first (from the agent, or derived: it may take a while),
        // then the store's write lock.
        let held: keystore::Sealed =
            store::meta_get(conn, SECRETS_KEY)?.context("this data directory holds no keys")?;
        let dir = conn.path().map(Path::new).and_then(Path::parent).context("the store has no directory")?;
        let key = keystore::key_in(dir, &held, &format!("node {node}"))?;
        let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        let sealed: keystore::Sealed =
            store::meta_get(&tx, SECRETS_KEY)?.context("this data directory holds no keys")?;
        // Sealed again since under the same key (same salt), or refused.
        let clear = keystore::open_with_key(&sealed, &key)?;
        let mut secrets: Secrets = serde_json::from_slice(&clear).context("the node's sealed keys are damaged")?;
        let mut added = 0;
        for (home, key) in add {
            if !secrets.data_keys.lanes.contains_key(home) {
                secrets.data_keys.lanes.insert(home.clone(), hex::encode(key));
                added += 1;
            }
        }
        let removed = remove.is_some_and(|home| secrets.data_keys.lanes.remove(home).is_some());
        if added > 0 || removed {
            let resealed = keystore::reseal_with_key(&sealed, &key, &serde_json::to_vec(&secrets)?)?;
            store::meta_set(&tx, SECRETS_KEY, &resealed)?;
            let times: u64 = store::meta_get(&tx, KEYS_RESEALED_KEY)?.unwrap_or(0);
            store::meta_set(&tx, KEYS_RESEALED_KEY, &(times + 1))?;
        }
        tx.commit()?;
        Ok(added)
    }

    /// The data key of the lane homed at `home`.
    fn lane_key(&self, home: &NodeId) -> Result<DataKey> {
        self.secrets()?.data_keys.for_lane(home).ok_or_else(|| {
            Declined::Invalid(format!("this node holds no key for the personal data of {home}'s cases")).into()
        })
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Records how far an upstream peer's clock was from ours at the last
    /// contact (peer minus ours), so staff are warned before they write.
    ///
    /// Written only when it tells something new (another peer, a second or
    /// more of change, or the warning limit crossed): a no-op sync then
    /// writes nothing, and costs the laptop no durable commit.
    pub fn record_clock_offset(&mut self, peer: &NodeId, offset_ms: i64) -> Result<()> {
        let held = store::meta_get::<(NodeId, i64, u64)>(self.store.conn(), CLOCK_KEY)?;
        if !clock_offset_news(held.as_ref().map(|(p, o, _)| (p, *o)), peer, offset_ms) {
            return Ok(());
        }
        let at_ms = crate::wall_clock_ms();
        Ok(store::meta_set(self.store.conn(), CLOCK_KEY, &(peer, offset_ms, at_ms))?)
    }

    /// A warning for staff when this node's clock was found wrong at its
    /// last contact upstream. Work is not refused: the fold orders events
    /// causally whatever their stamps, and flags stamps far ahead.
    /// The peer and this clock's offset to it (peer minus ours, ms) at the
    /// last sync with an upstream, when it is beyond the warning limit.
    pub fn clock_offset(&self) -> Result<Option<(NodeId, i64)>> {
        Ok(store::meta_get::<(NodeId, i64, u64)>(self.store.conn(), CLOCK_KEY)?
            .filter(|(_, offset, _)| offset.abs() > proto::sync::CLOCK_WARNING_MS)
            .map(|(peer, offset, _)| (peer, offset)))
    }

    pub fn clock_warning(&self) -> Result<Option<String>> {
        let Some((peer, offset_ms, _)) = store::meta_get::<(NodeId, i64, u64)>(self.store.conn(), CLOCK_KEY)? else {
            return Ok(None);
        };
        if offset_ms.abs() <= proto::sync::CLOCK_WARNING_MS {
            return Ok(None);
        }
        let (how, by) = if offset_ms < 0 { ("ahead of", -offset_ms) } else { ("behind", offset_ms) };
        Ok(Some(format!(
            "at the last sync this computer's clock was {} {how} {peer}'s; correct the system date and time \
             (what you enter now is kept, but stamped with the wrong time and flagged)",
            human_duration(by as u64)
        )))
    }

    /// The operator recorded when `--as` is not given.
    pub fn configured_operator(&self) -> Result<Option<String>> {
        Ok(store::meta_get(self.store.conn(), "operator")?)
    }

    pub fn set_operator(&mut self, name: &str) -> Result<()> {
        Ok(store::meta_set(self.store.conn(), "operator", &name)?)
    }

    /// 收件: takes a new case.
    pub fn new_case(&mut self, actor: &str, input: NewCase) -> Result<CaseId> {
        let create = self.creation(input)?;
        let event = self.append(actor, Target::New, Body::Create(create))?;
        Ok(event.case)
    }

    /// Checks a new case's input and builds its creation (personal data
    /// protected under this lane's key).
    fn creation(&self, input: NewCase) -> Result<Create> {
        let catalogue = self.catalogue();
        let item = catalogue.item(&input.item).ok_or_else(|| match self.catalogues().cancelled_in(&input.item) {
            Some(version) => Declined::ItemCancelled { item: input.item.clone(), version },
            None => Declined::UnknownItem(input.item.clone()),
        })?;
        if input.applicant.trim().is_empty() {
            return Err(Declined::Invalid("the applicant's name may not be empty".into()).into());
        }
        limits::check_value_text("applicant", input.applicant.trim()).map_err(Declined::from)?;
        let id_number = validate_id_number(&input.id_number).map_err(Declined::from)?;
        let lane_key = self.lane_key(self.me())?;
        let mut fields = vec![
            ("applicant".to_string(), FieldValue::Text(input.applicant.trim().to_string())),
            ("id_number".to_string(), FieldValue::Protected(lane_key.protect(PersonalKind::IdNumber, &id_number))),
        ];
        if let Some(phone) = &input.phone {
            fields.push(("phone".into(), self.protected_value(&lane_key, "phone", phone)?));
        }
        if let Some(address) = input.address.as_deref().filter(|a| !a.trim().is_empty()) {
            fields.push(("address".into(), self.protected_value(&lane_key, "address", address)?));
        }
        if let Some(bundle) = &input.bundle {
            fields.push(("bundle".into(), FieldValue::Text(bundle.clone())));
        }
        if let Some((agent, authorisation)) = &input.agent {
            if agent.trim().is_empty() || authorisation.trim().is_empty() {
                return Err(Declined::Invalid(
                    "an agent (--agent) files only with the applicant's authorisation noted (--authorisation)".into(),
                )
                .into());
            }
            limits::check_value_text("agent", agent.trim()).map_err(Declined::from)?;
            limits::check_value_text("agent_authorisation", authorisation.trim()).map_err(Declined::from)?;
            fields.push(("agent".into(), FieldValue::Text(agent.trim().to_string())));
            fields.push(("agent_authorisation".into(), FieldValue::Text(authorisation.trim().to_string())));
        }
        let create = Create {
            item: item.code.clone(),
            item_name: item.name.clone(),
            catalogue_version: catalogue.version,
            accepted_at: item.accepted_at.clone(),
            decided_by: item.decided_by,
            promised_days: item.promised_limit_days,
            fields,
            materials: input.materials,
        };
        Ok(create)
    }

    /// 一件事一次办: takes one case per item of a catalogue bundle, from one
    /// form and one set of materials (each case gets the materials that are
    /// its item's), linked by a bundle id. Every input check is made before
    /// the first case is written.
    pub fn new_bundle(&mut self, actor: &str, code: &str, input: NewCase) -> Result<(String, Vec<CaseId>)> {
        let catalogue = self.catalogue().clone();
        let bundle = catalogue
            .bundle(code)
            .ok_or_else(|| {
                Declined::Invalid(format!("bundle {code} is not in the catalogue (catalogue bundles lists them)"))
            })?
            .clone();
        let tier = self.identity.node.tier;
        if !catalogue.bundle_tiers(&bundle).contains(&tier) {
            return Err(Declined::Invalid(format!("bundle {code} is not taken at {tier} windows")).into());
        }
        let items: Vec<&proto::Item> = bundle.items.iter().filter_map(|c| catalogue.item(c)).collect();
        if let Some(m) =
            input.materials.iter().find(|m| !items.iter().any(|i| i.materials.iter().any(|x| &x.name == *m)))
        {
            return Err(Declined::Invalid(format!("{m} is not a material of bundle {code}")).into());
        }
        if input.applicant.trim().is_empty() {
            return Err(Declined::Invalid("the applicant's name may not be empty".into()).into());
        }
        validate_id_number(&input.id_number).map_err(Declined::from)?;
        let id = format!("{code}-{:08x}", rand::random::<u32>());
        let mut creations = Vec::new();
        for item in items {
            let mine: Vec<String> =
                input.materials.iter().filter(|m| item.materials.iter().any(|x| &x.name == *m)).cloned().collect();
            let create = self.creation(NewCase {
                item: item.code.clone(),
                materials: mine,
                bundle: Some(id.clone()),
                ..input.clone()
            })?;
            creations.push((Target::New, Body::Create(create)));
        }
        // One transaction: the bundle's cases are all written, or none.
        let cases = self.append_all(actor, creations, Check::Full)?.into_iter().map(|e| e.case).collect();
        Ok((id, cases))
    }

    fn protected_value(&self, key: &DataKey, field: &str, value: &str) -> Result<FieldValue> {
        let value = value.trim();
        if PersonalKind::of_field(field) != Some(PersonalKind::IdNumber) {
            // An ID number is checked whole below.
            limits::check_value_text(field, value).map_err(Declined::from)?;
        }
        Ok(match PersonalKind::of_field(field) {
            None => FieldValue::Text(value.to_string()),
            Some(PersonalKind::IdNumber) => {
                let id = validate_id_number(value).map_err(Declined::from)?;
                FieldValue::Protected(key.protect(PersonalKind::IdNumber, &id))
            }
            Some(PersonalKind::Phone) => {
                if value.len() < 7 || !value.chars().all(|c| c.is_ascii_digit() || c == '-' || c == '+') {
                    return Err(
                        Declined::Invalid(format!("{value:?} is not a phone number (digits, '-' or '+')")).into()
                    );
                }
                FieldValue::Protected(key.protect(PersonalKind::Phone, value))
            }
            Some(kind) => FieldValue::Protected(key.protect(kind, value)),
        })
    }

    /// Sets a field. Personal fields (id_number, phone, address) are
    /// protected before they are stored.
    pub fn edit(&mut self, actor: &str, case: &CaseId, field: &str, value: &str) -> Result<Event> {
        limits::check_field_name(field).map_err(Declined::from)?;
        let home = case.home().ok_or_else(|| Declined::Authoring(AuthoringError::NoSuchCase(case.clone())))?;
        let value = self.protected_value(&self.lane_key(&home)?, field, value)?;
        self.append(actor, Target::Case(case.clone()), Body::SetField { field: field.into(), value })
    }

    pub fn add_material(&mut self, actor: &str, case: &CaseId, name: &str) -> Result<Event> {
        self.append(actor, Target::Case(case.clone()), Body::AddMaterial { name: name.into() })
    }

    pub fn remove_material(&mut self, actor: &str, case: &CaseId, name: &str) -> Result<Event> {
        self.append(actor, Target::Case(case.clone()), Body::RemoveMaterial { name: name.into() })
    }

    /// A workflow step. For a forward, pass any target: the deciding node
    /// is filled in from the topology.
    pub fn step(&mut self, actor: &str, case: &CaseId, step: Step, note: &str) -> Result<Event> {
        if step == Step::Accept {
            self.check_materials_for_acceptance(case)?;
        }
        let step = match step {
            Step::Forward { .. } => {
                let st = self.case(case)?;
                let decided_by =
                    st.decided_by().ok_or_else(|| Declined::Authoring(AuthoringError::NoSuchCase(case.clone())))?;
                let to = auth::deciding_node(&self.topology, &st.home, decided_by)
                    .ok_or_else(|| Declined::Invalid(format!("no {decided_by} node above {}", st.home)))?;
                Step::Forward { to: to.clone() }
            }
            s => s,
        };
        self.append(actor, Target::Case(case.clone()), Body::Step { step, note: note.into() })
    }

    /// 受理 needs every required material: one the catalogue allows to be
    /// missing is accepted with [`Ledger::accept_missing`] (容缺受理), any
    /// other must be received first.
    fn check_materials_for_acceptance(&self, case: &CaseId) -> Result<()> {
        let st = self.case(case)?;
        let Some(item) = self.item_of(&st) else {
            return Ok(());
        };
        if item.decided_by != self.identity.node.tier {
            // Not this node's to accept: the authorisation check says so.
            return Ok(());
        }
        let missing: Vec<&proto::catalogue::Material> =
            item.materials.iter().filter(|m| m.required && !st.materials.contains(&m.name)).collect();
        if let Some(m) = missing.iter().find(|m| !m.may_be_missing) {
            return Err(Declined::Invalid(format!(
                "{} is required and has not been received; record it (case material --add) before 受理",
                m.name
            ))
            .into());
        }
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|m| m.name.as_str()).collect();
            return Err(Declined::Invalid(format!(
                "{} not received yet; the catalogue allows 容缺: accept with --missing {} --promise-date YYYY-MM-DD",
                names.join(", "),
                names.join(" --missing ")
            ))
            .into());
        }
        Ok(())
    }

    /// 容缺受理: accepts a case with materials missing, which the applicant
    /// promises by `promised` (today or later). Only materials of the item
    /// the catalogue allows to be missing, and not already received.
    pub fn accept_missing(
        &mut self,
        actor: &str,
        case: &CaseId,
        missing: Vec<String>,
        promised: proto::calendar::Day,
        note: &str,
    ) -> Result<Event> {
        let today = proto::calendar::Day::of_ms(crate::wall_clock_ms());
        if promised < today {
            return Err(Declined::Invalid(format!(
                "the promised date {promised} is in the past (today is {today}); nothing was written"
            ))
            .into());
        }
        let mut missing: Vec<String> = missing.into_iter().map(|m| m.trim().to_string()).collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Err(Declined::Invalid("name at least one missing material".into()).into());
        }
        let st = self.case(case)?;
        if let Some(m) = missing.iter().find(|m| st.materials.contains(m)) {
            return Err(Declined::Invalid(format!("{m} was already received; it is not missing")).into());
        }
        // Every required material is received or (where the catalogue
        // allows) accepted as missing; whether each missing one may be is
        // the catalogue's to say, checked with the event (and by receivers).
        if let Some(item) = self.item_of(&st) {
            if let Some(m) = item.materials.iter().find(|m| {
                m.required && !m.may_be_missing && !st.materials.contains(&m.name) && !missing.contains(&m.name)
            }) {
                return Err(Declined::Invalid(format!(
                    "{} is required and has not been received; only materials the catalogue allows (容缺) may be missing at acceptance",
                    m.name
                ))
                .into());
            }
        }
        let step = Step::AcceptMissing { missing, promised };
        self.append(actor, Target::Case(case.clone()), Body::Step { step, note: note.into() })
    }

    /// 好差评 ("一事一评"): one rating per stage of a case, only once the
    /// case has reached that stage (受理: accepted; 办结: decided or
    /// ended), through one of [`RATING_CHANNELS`]. `stage` None picks the
    /// latest stage the case has reached.
    pub fn rate(
        &mut self,
        actor: &str,
        case: &CaseId,
        level: u8,
        stage: Option<proto::event::Stage>,
        channel: &str,
        note: &str,
    ) -> Result<Event> {
        use proto::event::Stage;
        if !(1..=5).contains(&level) {
            return Err(Declined::Invalid(format!(
                "a rating level is 1 (非常满意) to 5 (非常不满意), not {level}; nothing was written"
            ))
            .into());
        }
        limits::check_note(note).map_err(Declined::from)?;
        let channel = if channel.trim().is_empty() { RATING_CHANNELS[0] } else { channel.trim() };
        if !RATING_CHANNELS.contains(&channel) {
            return Err(Declined::Invalid(format!(
                "unknown rating channel {channel:?}; one of {}",
                RATING_CHANNELS.join(", ")
            ))
            .into());
        }
        let st = self.case(case)?;
        let stage = match stage {
            Some(s) => s,
            None if st.state.is_done() => Stage::Done,
            None => Stage::Accept,
        };
        let reached = st.stage_reached(stage);
        if !reached {
            return Err(Declined::Invalid(format!(
                "case {case} is {}; it has not reached the {} stage, which cannot be rated yet",
                st.state,
                stage.name()
            ))
            .into());
        }
        if st.staged.iter().any(|r| r.stage == Some(stage)) {
            return Err(Declined::Invalid(format!(
                "case {case} already has a rating for the {} stage (one rating per stage)",
                stage.name()
            ))
            .into());
        }
        let body = Body::Rating { level, stage, channel: channel.to_string(), note: note.into() };
        self.append(actor, Target::Case(case.clone()), body)
    }

    /// 电子证照: the signed licence of an issued case, made by the node that
    /// issued it (only it holds the key that signs).
    pub fn licence(&self, case: &CaseId) -> Result<proto::licence::Licence> {
        use proto::fold::Happened;
        let st = self.case(case)?;
        let issued = st
            .history
            .iter()
            .find(|h| !h.superseded && matches!(&h.happened, Happened::Step { step: Step::Issue, .. }))
            .ok_or_else(|| Declined::Invalid(format!("case {case} has no result issued (出证) yet")))?;
        if !was_approved(&st) {
            // 出证 after 不予 issues a notice of refusal, never a licence.
            return Err(Declined::Invalid(format!(
                "case {case} was not approved (准予); a licence is issued only for an approval, and its notice of \
                 refusal is not a licence"
            ))
            .into());
        }
        if issued.event.origin.node() != *self.me() {
            return Err(Declined::Invalid(format!(
                "case {case}'s result was issued by {}; only that node can sign its licence",
                issued.event.origin.node()
            ))
            .into());
        }
        let (event, event_hash) = store::case_events(self.store.conn(), case)?
            .into_iter()
            .find(|(e, _)| e.id == issued.event)
            .context("the 出证 event is missing from the store")?;
        let result =
            self.item_of(&st).map(|i| i.result.clone()).filter(|r| !r.is_empty()).unwrap_or_else(|| "办理结果".into());
        let (holder, holder_id) = st.create.as_ref().and_then(proto::licence::holder_of).unwrap_or_default();
        let terms = proto::licence::Terms {
            case: case.clone(),
            item: st.item().to_string(),
            item_name: st.create.as_ref().map(|c| c.item_name.clone()).unwrap_or_default(),
            holder,
            holder_id,
            result,
            issuer: self.me().clone(),
            issued: proto::calendar::Day::of_ms(event.hlc.wall_ms),
            valid_until: None,
            event: event.id.clone(),
            event_hash,
            lane: event.lane.clone(),
            pos: event.pos,
        };
        Ok(terms.sign(&self.signing_key()?))
    }

    /// Checks a licence offline against the keys the county enrolled and
    /// revoked, as this node holds them.
    pub fn verify_licence(
        &self,
        licence: &proto::licence::Licence,
    ) -> Result<Result<(), proto::licence::LicenceError>> {
        use proto::licence::LicenceError;
        let t = &licence.terms;
        // Offline checks of who may issue what: the issuer is the case's home
        // window or a node above it, in the case's own lane, and (where this
        // node holds the item) the home window or the item's deciding tier.
        let home = t.case.home().filter(|h| self.topology.get(h).is_some());
        let may = home.as_ref().is_some_and(|home| {
            let above = self.topology.is_within(home, &t.issuer);
            let tier = self.topology.tier_of(&t.issuer);
            let item_ok = match self.catalogue().item(&t.item) {
                Some(item) => t.issuer == *home || tier == Some(item.decided_by),
                None => true,
            };
            above && item_ok && t.lane == proto::Lane::Home(home.clone())
        });
        if !may {
            return Ok(Err(LicenceError::NotItsCase { issuer: t.issuer.clone(), case: t.case.clone() }));
        }
        // Where this node holds the case, it must have been approved.
        if self.case(&t.case).ok().is_some_and(|st| !was_approved(&st)) {
            return Ok(Err(LicenceError::NotIssued(t.case.clone())));
        }
        // Whether this node holds the 出证 event the licence names.
        let held = match store::case_events(self.store.conn(), &t.case)?.into_iter().find(|(e, _)| e.id == t.event) {
            None => None,
            Some((e, hash)) => Some(
                hash == t.event_hash
                    && e.lane == t.lane
                    && e.pos == t.pos
                    && matches!(e.body, Body::Step { step: Step::Issue, .. }),
            ),
        };
        let status = match licence.key() {
            Some(key) => store::key_status(self.store.conn(), &t.issuer, &key)?,
            None => proto::sync::KeyStatus::Unknown,
        };
        let county = self.topology.verifying_key(&self.topology.county().id);
        Ok(licence.verify(&status, county.as_ref(), held, proto::calendar::Day::of_ms(crate::wall_clock_ms())))
    }

    /// Closes the open follow-up (整改回访) of a case's poor rating.
    pub fn close_followup(&mut self, actor: &str, case: &CaseId, response: &str, callback: &str) -> Result<Event> {
        let st = self.case(case)?;
        let Some(open) = st.followups.iter().find(|f| f.closed.is_none()) else {
            return Err(Declined::Invalid(format!("case {case} has no open follow-up")).into());
        };
        if open.owner != *self.me() {
            return Err(Declined::Invalid(format!(
                "the follow-up of case {case} belongs to {}, the node that handled it; only it closes it",
                open.owner
            ))
            .into());
        }
        if response.trim().is_empty() {
            return Err(Declined::Invalid("say what was done (--response); nothing was written".into()).into());
        }
        let body = Body::FollowUp {
            rating: open.rating.clone(),
            response: response.trim().into(),
            callback: callback.trim().into(),
        };
        self.append(actor, Target::Case(case.clone()), body)
    }

    /// The one local write path.
    fn append(&mut self, actor: &str, target: Target, body: Body) -> Result<Event> {
        self.append_as(actor, target, body, Check::Full)
    }

    fn append_as(&mut self, actor: &str, target: Target, body: Body, check: Check) -> Result<Event> {
        let mut events = self.append_all(actor, vec![(target, body)], check)?;
        Ok(events.pop().expect("one event appended"))
    }

    /// Appends several events in one transaction: all are checked and
    /// written, or none (a 一件事 bundle's cases).
    fn append_all(&mut self, actor: &str, items: Vec<(Target, Body)>, check: Check) -> Result<Vec<Event>> {
        if actor.trim().is_empty() {
            return Err(Declined::Invalid("staff name (--as) may not be empty".into()).into());
        }
        let key = self.signing_key()?;
        // Read before the transaction borrows the store.
        self.try_catalogues()?;
        let tx = self.store.write()?;
        // Read in the transaction: a long-lived handle (a desk) must follow
        // a move to a new incarnation made through another connection.
        let me: NodeId = store::meta_get(&tx, ORIGIN_KEY)?.unwrap_or_else(|| self.identity.node.id.clone());
        if check == Check::Full && store::meta_get::<bool>(&tx, RECOVERING_KEY)?.unwrap_or(false) {
            return Err(Declined::Recovering.into());
        }
        let mut events = Vec::with_capacity(items.len());
        let mut last: Hlc = store::meta_get(&tx, HLC_KEY)?.unwrap_or_default();
        for (target, body) in items {
            let seq = store::origin_seq(&tx, &me)? + 1;
            let case = match target {
                Target::New => CaseId::mint(&me, seq),
                Target::Case(c) => c,
            };
            let global = body.is_global();
            let current = if global { None } else { store::fold_stored(&tx, &case)? };
            let draft = Draft {
                topology: &self.topology,
                catalogues: self.catalogues.get().expect("read above"),
                me: &me,
                seq,
                case: case.clone(),
                current: current.as_ref(),
                actor,
                body,
            };
            match check {
                Check::Full => draft.check(),
                Check::AuthorityOnly => draft.check_authority(),
            }
            .map_err(Declined::from)?;
            let tip = store::lane_tip(&tx, &me, &draft.lane())?;
            let mut clock = HlcClock::new(last.max(tip.hlc));
            let hlc = clock.tick(crate::wall_clock_ms());
            let event = draft.build(&tip, hlc);
            store::insert_event(&tx, &event)?;
            if !global {
                store::refold_case(&tx, &case)?;
            }
            // Every local write seals the chain's head; at a checkpoint
            // position the store keeps that seal for good (long runs are sent
            // in segments ending at checkpoints).
            store::put_seal(&tx, &Seal::sign(&key, &event))?;
            last = hlc;
            events.push(event);
        }
        store::meta_set(&tx, HLC_KEY, &last)?;
        tx.commit()?;
        self.origin = me;
        Ok(events)
    }

    /// The workflow steps this node may take on a case now (its state,
    /// the catalogue's authority and this node's tier all allow them): what
    /// a desk offers as buttons. A forward names each node above this one
    /// that may receive it.
    pub fn allowed_steps(&self, case: &CaseId) -> Result<Vec<Step>> {
        let conn = self.store.conn();
        let Some(current) = store::fold_stored(conn, case)? else { return Ok(Vec::new()) };
        let me: NodeId = store::meta_get(conn, ORIGIN_KEY)?.unwrap_or_else(|| self.identity.node.id.clone());
        let seq = store::origin_seq(conn, &me)? + 1;
        // Every plain step; a forward is added per node above, and 容缺受理
        // has its own form (it needs the missing list and a date).
        let mut candidates: Vec<Step> = proto::workflow::ALL_STEPS
            .iter()
            .filter(|s| !matches!(s, Step::Forward { .. } | Step::AcceptMissing { .. }))
            .cloned()
            .collect();
        let mut up = self.topology.get(self.me()).and_then(|n| n.parent.clone());
        while let Some(node) = up {
            up = self.topology.get(&node).and_then(|n| n.parent.clone());
            candidates.push(Step::Forward { to: node });
        }
        let catalogues = self.try_catalogues()?;
        Ok(candidates
            .into_iter()
            .filter(|step| {
                Draft {
                    topology: &self.topology,
                    catalogues,
                    me: &me,
                    seq,
                    case: case.clone(),
                    current: Some(&current),
                    actor: "desk",
                    body: Body::Step { step: step.clone(), note: String::new() },
                }
                .check()
                .is_ok()
            })
            .collect())
    }

    /// The county revokes a node's live keys and certificates (a lost
    /// laptop); the revocation travels to every node in the global lane.
    /// What the county holds of the node's chains now stays valid; nothing
    /// signed with those keys afterwards is accepted anywhere. The node can
    /// be enrolled again with fresh keys.
    pub fn revoke(&mut self, actor: &str, node: &NodeId, reason: &str) -> Result<Vec<Event>> {
        if self.topology.get(node).is_none() || node.as_str() != node.base() {
            return Err(
                Declined::Invalid(format!("node {node} is not in the topology (county-hub nodes lists them)")).into()
            );
        }
        if node == self.me() {
            return Err(Declined::Invalid("the hub cannot revoke itself".into()).into());
        }
        let live = store::live_keys(self.store.conn(), node)?;
        if live.is_empty() {
            return Err(Declined::Invalid(format!("node {node} holds no live key; nothing to revoke")).into());
        }
        let upto = store::heads_of(self.store.conn(), node)?;
        self.revoke_at(actor, node, reason, live, upto)
    }

    /// [`Ledger::revoke`] with the cut read beforehand: what the hub held of
    /// the node's chains when the administrator asked. Public for tests
    /// that store events between the two (a served session's batch).
    #[doc(hidden)]
    pub fn revoke_at(
        &mut self,
        actor: &str,
        node: &NodeId,
        reason: &str,
        live: Vec<(KeyId, Hash)>,
        upto: Vec<(proto::Lane, NodeId, u64, Hash)>,
    ) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        for (key, certificate) in &live {
            let body = Body::Revoke {
                node: node.clone(),
                reason: reason.into(),
                key: *key,
                certificate: *certificate,
                upto: upto.clone(),
            };
            out.push(self.append(actor, Target::Case(CaseId(proto::event::GLOBAL_CASE.into())), body)?);
        }
        // A served session may have stored events of the node, checked while
        // its keys were live, after `upto` was read: past the cut, they go
        // to quarantine as a received revocation would send them. (From
        // here on, a batch judged under a revoked key is refused whole.)
        let me = self.me().clone();
        let tx = self.store.write()?;
        for (key, _) in &live {
            store::purge_after_revocation(&tx, crate::wall_clock_ms(), &me, node, key, &upto)?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Vouches for `origin`, a new incarnation of a peer this node serves
    /// (see `Body::Incarnate`): in the village's own lane, or for a
    /// township in the global lane.
    pub fn vouch(&mut self, origin: &NodeId, after: Hlc, village: bool) -> Result<Event> {
        let case = if village { proto::event::LANE_CASE } else { proto::event::GLOBAL_CASE };
        let body = Body::Incarnate { origin: origin.clone(), after };
        self.append_as("voucher", Target::Case(CaseId(case.into())), body, Check::AuthorityOnly)
    }

    /// The county publishes the next catalogue version: `catalogue` whole
    /// (a file), sent to the network as the change from the newest version
    /// held. Its version must be the next one; a catalogue that does not
    /// hold together, or changes nothing, is declined with nothing written.
    pub fn publish_catalogue(
        &mut self,
        actor: &str,
        catalogue: &Catalogue,
    ) -> Result<proto::publication::CatalogueChange> {
        let latest = self.catalogue();
        let next = latest.version + 1;
        if catalogue.version != next {
            return Err(Declined::Invalid(format!(
                "the file is catalogue version {}, but the next version is {next} (v{} is the newest published); \
                 versions go 1, 2, 3… with none skipped or repeated",
                catalogue.version, latest.version
            ))
            .into());
        }
        let change = proto::publication::CatalogueChange::between(latest, catalogue);
        self.publish(actor, proto::publication::Publication::Catalogue(change.clone()))?;
        Ok(change)
    }

    /// The county publishes the next working-day calendar version.
    pub fn publish_calendar(&mut self, actor: &str, calendar: &proto::calendar::CalendarFile) -> Result<()> {
        let held = self.try_catalogues()?.calendar_version();
        if calendar.version != held + 1 {
            return Err(Declined::Invalid(format!(
                "the file is calendar version {}, but the next version is {} (v{held} is the newest published); \
                 versions go 1, 2, 3… with none skipped or repeated",
                calendar.version,
                held + 1
            ))
            .into());
        }
        self.publish(actor, proto::publication::Publication::Calendar(calendar.clone()))
    }

    /// The county publishes the next change of its map (see
    /// [`proto::topology::Change`]); checked as every node will apply it,
    /// declined with nothing written when it does not apply.
    pub fn publish_topology(&mut self, actor: &str, change: proto::topology::Change) -> Result<u32> {
        let version = self.topology.version() + 1;
        let change = proto::topology::TopologyChange { version, change };
        Topology::clone(&self.topology).apply(&change).map_err(|e| Declined::Invalid(e.to_string()))?;
        self.publish(actor, proto::publication::Publication::Topology(change))?;
        Ok(version)
    }

    fn publish(&mut self, actor: &str, publication: proto::publication::Publication) -> Result<()> {
        if self.identity.tier() != proto::Tier::County {
            return Err(Declined::Invalid("only the county publishes catalogues and calendars".into()).into());
        }
        // Applied to a copy first: what every receiver will check.
        if !matches!(publication, proto::publication::Publication::Topology(_)) {
            Catalogues::clone(self.try_catalogues()?)
                .apply(&publication)
                .map_err(|e| Declined::Invalid(e.to_string()))?;
        }
        let body = Body::Publish(Box::new(publication));
        self.append(actor, Target::Case(CaseId(proto::event::GLOBAL_CASE.into())), body)?;
        self.reload_catalogues()
    }

    /// The county certifies a node's new signing key and TLS certificate.
    pub fn enrol(&mut self, actor: &str, node: &NodeId, key: KeyId, certificate: Hash) -> Result<Event> {
        let body = Body::Enrol { node: node.clone(), key, certificate };
        self.append(actor, Target::Case(CaseId(proto::event::GLOBAL_CASE.into())), body)
    }

    /// Attaches a file to a case's material: its type is told by its
    /// content (PDF, JPEG, PNG, OFD), it is checked against the limits per
    /// file and per case, stored once per content hash, sealed under the
    /// case's lane key, and the signed event carries its hash, size and
    /// type. With `replaces`, it supersedes an earlier file of the material
    /// (补正), which stays in the history. Declined: nothing written.
    pub fn attach_file(
        &mut self,
        actor: &str,
        case: &CaseId,
        material: &str,
        name: &str,
        bytes: &[u8],
        replaces: Option<FileHash>,
    ) -> Result<Attached> {
        let held = self.case(case)?;
        if let Some(old) = replaces {
            if !held.files.iter().any(|f| f.material == material && f.file.hash == old && f.is_current()) {
                return Err(Declined::Invalid(format!(
                    "{material} has no current file {old} to replace (case files lists them)"
                ))
                .into());
            }
        }
        let file = check_file(material, name, bytes)?;
        let hash = file.hash;
        let body = Body::AttachFile { material: material.into(), file: file.clone(), replaces };
        limits::check_growth(&held, &body).map_err(Declined::from)?;
        let key = self.lane_key(&held.home)?;
        let newly_stored = blobs::store(&self.dir, &key, &hash, bytes)?;
        match self.append(actor, Target::Case(case.clone()), body) {
            Ok(event) => {
                store::note_file_held(self.store.conn(), &hash, file.size, &held.home)?;
                store::note_file_lane(self.store.conn(), &hash, &held.home)?;
                crate::remote::offload(self.store.conn(), &self.dir, &hash)?;
                Ok(Attached { file, newly_stored, event })
            }
            Err(e) => {
                if newly_stored {
                    // Declined after all: no file is left behind.
                    let _ = std::fs::remove_file(blobs::path_of(&self.dir, &hash));
                }
                Err(e)
            }
        }
    }

    /// Satisfies a material with an electronic licence (电子证照) this county
    /// issued, by reference: checked offline first (signature, enrolled and
    /// unrevoked key, an issuer who may issue that case's results, not
    /// expired); declined with the reason, nothing written, when it fails.
    pub fn cite_licence(
        &mut self,
        actor: &str,
        case: &CaseId,
        material: &str,
        licence: proto::licence::Licence,
    ) -> Result<Event> {
        if let Err(e) = self.verify_licence(&licence)? {
            return Err(Declined::Licence(e).into());
        }
        let held = self.case(case)?;
        if !held.create.as_ref().is_some_and(|c| licence.terms.is_holder_of(c)) {
            return Err(Declined::Invalid(format!(
                "the licence is {}'s (ID {}), not the applicant's of case {case}; a licence stands only for its \
                 own holder's materials",
                licence.terms.holder, licence.terms.holder_id
            ))
            .into());
        }
        let body = Body::CiteLicence { material: material.into(), licence: Box::new(licence.into()) };
        self.append(actor, Target::Case(case.clone()), body)
    }

    /// Takes a file off a material: an event, not a deletion (the file
    /// stays in the case's history, and its bytes stay held).
    pub fn detach_file(
        &mut self,
        actor: &str,
        case: &CaseId,
        material: &str,
        hash: FileHash,
        note: &str,
    ) -> Result<Event> {
        let held = self.case(case)?;
        if !held.files.iter().any(|f| f.material == material && f.file.hash == hash && f.removed.is_none()) {
            return Err(Declined::Invalid(format!("{material} has no file {hash} to take off")).into());
        }
        self.append(
            actor,
            Target::Case(case.clone()),
            Body::DetachFile { material: material.into(), hash, note: note.into() },
        )
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this node holds a file's bytes.
    pub fn holds_file(&self, hash: &FileHash) -> bool {
        // Held whole here, on disk or in the county's object store.
        let noted = self
            .store
            .conn()
            .prepare_cached("SELECT 1 FROM files_held WHERE hash = ?1")
            .and_then(|mut s| s.exists([&hash.0[..]]))
            .unwrap_or(false);
        noted || blobs::holds(&self.dir, hash)
    }

    /// Writes one of a case's files to `out`, checked against its hash on
    /// the way (a file altered on disk is refused with the reason).
    pub fn read_file(&self, case: &CaseId, hash: &FileHash, out: &mut dyn std::io::Write) -> Result<u64> {
        let held = self.case(case)?;
        if !held.files.iter().any(|f| f.file.hash == *hash) {
            return Err(Declined::Invalid(format!("case {case} has no file {hash}")).into());
        }
        // Stored once per hash, under the key of the lane of the case that
        // brought it first, which need not be this case's.
        let sealed_under = store::file_sealed_under(self.store.conn(), hash)?.unwrap_or_else(|| held.home.clone());
        let key = self.lane_key(&sealed_under)?;
        crate::remote::ensure_local(self.store.conn(), &self.dir, hash)?;
        match blobs::read_into(&self.dir, &key, hash, out) {
            Ok(n) => Ok(n),
            Err(e @ blobs::ReadError::Damaged { .. }) => {
                // Set aside: the next sync fetches a good copy from a peer.
                let why = format!("{e}; set aside, and fetched again at the next sync");
                store::file_damaged(self.store.conn(), &self.dir, self.me(), hash, &why)?;
                Err(crate::Error::DamagedFile(why))
            }
            Err(blobs::ReadError::Missing(h)) => Err(Declined::FileNotHere(h).into()),
            Err(blobs::ReadError::Io(e)) => Err(e.into()),
        }
    }

    /// A case's folded state.
    pub fn case(&self, case: &CaseId) -> Result<CaseState> {
        Ok(store::get_case(self.store.conn(), case)?
            .ok_or_else(|| Declined::Authoring(AuthoringError::NoSuchCase(case.clone())))?)
    }

    pub fn cases(&self, state: Option<State>, home: Option<&NodeId>) -> Result<Vec<CaseState>> {
        Ok(store::list_cases(self.store.conn(), state.map(|s| s.name()), home)?)
    }

    /// The clear values of a case's personal field (ID number, phone,
    /// address), opened with the key of the case's home lane. The caller
    /// logs who asked.
    pub fn reveal(&self, case: &CaseId, field: &str) -> Result<Vec<String>> {
        let st = self.case(case)?;
        let key = self.lane_key(&st.home)?;
        let mut out = Vec::new();
        for v in st.fields.get(field).map(Vec::as_slice).unwrap_or_default() {
            out.push(match v {
                FieldValue::Protected(p) => key.reveal(p).map_err(|_| anyhow::anyhow!("the value cannot be opened"))?,
                other => other.display().to_string(),
            });
        }
        Ok(out)
    }

    /// Cases whose applicant has this ID number (found by its keyed hash).
    pub fn find_by_id_number(&self, id_number: &str) -> Result<Vec<CaseId>> {
        let id = validate_id_number(id_number).map_err(Declined::from)?;
        let mut found = Vec::new();
        for key in self.secrets()?.data_keys.all(&self.topology) {
            found.extend(store::cases_by_lookup(self.store.conn(), &key.lookup(PersonalKind::IdNumber, &id))?);
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// `{cases, events, digest}` over the cases held (only those homed at
    /// `home` when given).
    pub fn digest(&self, home: Option<&NodeId>) -> Result<Digest> {
        let cases = self.cases(None, home)?;
        Ok(Digest {
            cases: cases.len() as u64,
            events: store::count_events(self.store.conn(), home)?,
            digest: digest_of(&cases).to_hex(),
        })
    }
}

impl Ledger {
    /// Digest of the cases homed within `root`'s subtree (a node's scope
    /// when `root` is the node itself).
    pub fn digest_within(&self, root: &NodeId) -> Result<Digest> {
        let cases: Vec<CaseState> =
            self.cases(None, None)?.into_iter().filter(|c| self.topology.is_within(&c.home, root)).collect();
        let events = cases.iter().map(|c| c.history.len() as u64).sum();
        Ok(Digest { cases: cases.len() as u64, events, digest: digest_of(&cases).to_hex() })
    }
}

/// A summary of the folded state of a set of cases.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Digest {
    pub cases: u64,
    pub events: u64,
    pub digest: String,
}

#[cfg(unix)]
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(not(unix))]
fn restrict_permissions(_dir: &Path) {}

/// Whether a case's decision (the last one not superseded) was 准予.
fn was_approved(st: &CaseState) -> bool {
    use proto::fold::Happened;
    st.history
        .iter()
        .rev()
        .filter(|h| !h.superseded)
        .find_map(|h| match &h.happened {
            Happened::Step { step: Step::Approve, .. } => Some(true),
            Happened::Step { step: Step::Deny, .. } => Some(false),
            _ => None,
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A no-op sync measures the same offset again: nothing to write. A
    /// change staff would be told of is written.
    #[test]
    fn a_clock_offset_is_written_only_when_it_tells_something_new() {
        let (hub, township) = (NodeId::new("511421"), NodeId::new("511421101"));
        assert!(clock_offset_news(None, &hub, 0), "the first measurement");
        assert!(!clock_offset_news(Some((&hub, 0)), &hub, -1), "the same, within a millisecond");
        assert!(!clock_offset_news(Some((&hub, 300)), &hub, -600), "under a second apart");
        assert!(clock_offset_news(Some((&hub, 0)), &hub, 1_500), "a second and more");
        assert!(clock_offset_news(Some((&hub, 0)), &township, 0), "another peer");
        let limit = proto::sync::CLOCK_WARNING_MS;
        assert!(clock_offset_news(Some((&hub, limit - 100)), &hub, limit + 100), "the warning limit crossed");
        assert!(clock_offset_news(Some((&hub, -limit - 100)), &hub, -limit + 100), "and back");
    }
}
