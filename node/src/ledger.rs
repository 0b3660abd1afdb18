//! A node's ledger: its store, identity, topology and catalogue, and the
//! local write path. Every local change is checked (catalogue, ID number,
//! authorisation, workflow) inside the same write transaction that stores
//! it, so a refusal writes nothing and two processes writing to one data
//! directory cannot interleave a check with another's write.

use crate::identity::{Bundle, Identity};
use crate::protect::DataKey;
use crate::store::{self, Store};
use anyhow::{Context, Result};
use proto::auth;
use proto::author::{AuthoringError, Draft};
use proto::event::{Create, FieldValue, Seal};
use proto::fold::{digest_of, CaseState};
use proto::limits::{self, LimitError};
use proto::personal::{validate_id_number, IdNumberError, PersonalKind};
use proto::workflow::State;
use proto::{Body, CaseId, Catalogue, Catalogues, Event, Hlc, HlcClock, NodeId, Step, Topology};
use std::path::Path;

/// A local command was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The item code is not in the catalogue.
    #[error("item {0} is not in the catalogue (catalogue list shows the codes)")]
    UnknownItem(String),
    /// The ID number is not valid.
    #[error(transparent)]
    IdNumber(#[from] IdNumberError),
    /// Not held, not allowed now, or not allowed for this node.
    #[error(transparent)]
    Authoring(#[from] AuthoringError),
    /// An argument is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Input beyond the limits (see [`proto::limits`]).
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// A newly taken case's input.
#[derive(Debug, Clone)]
pub struct NewCase {
    pub item: String,
    pub applicant: String,
    pub id_number: String,
    pub phone: Option<String>,
    pub materials: Vec<String>,
}

/// A node's ledger, opened on a data directory.
pub struct Ledger {
    store: Store,
    identity: Identity,
    topology: Topology,
    catalogues: Catalogues,
    data_key: DataKey,
}

enum Target {
    New,
    Case(CaseId),
}

const HLC_KEY: &str = "hlc";

impl Ledger {
    /// Initialises a data directory from an enrolment bundle.
    pub fn init(dir: &Path, bundle: &Bundle) -> Result<Ledger> {
        let mut store = Store::create(dir)?;
        let tx = store.write()?;
        store::meta_set(&tx, "identity", &bundle.identity)?;
        store::meta_set(&tx, "topology", &bundle.topology)?;
        store::meta_set(&tx, "catalogue", &bundle.catalogue)?;
        tx.commit()?;
        restrict_permissions(dir);
        drop(store);
        Ledger::open(dir)
    }

    /// Opens a ledger for writing (see [`Store::open`]).
    pub fn open(dir: &Path) -> Result<Ledger> {
        Ledger::on(Store::open(dir)?, dir)
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
        let topology = store::meta_get(store.conn(), "topology")?.context("the stored topology is missing")?;
        let catalogue: Catalogue =
            store::meta_get(store.conn(), "catalogue")?.context("the stored catalogue is missing")?;
        let data_key = identity.data_key()?;
        // The county holds every version it published; below it a version
        // not held may still arrive.
        let catalogues = Catalogues::single(catalogue, identity.tier() == proto::Tier::County);
        Ok(Ledger { store, identity, topology, catalogues, data_key })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    pub fn me(&self) -> &NodeId {
        &self.identity.node.id
    }
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
    /// The newest catalogue version held: what new cases are taken under.
    pub fn catalogue(&self) -> &Catalogue {
        self.catalogues.latest().expect("a ledger always holds a catalogue")
    }
    /// Every catalogue version held, to judge creations against.
    pub fn catalogues(&self) -> &Catalogues {
        &self.catalogues
    }
    pub fn data_key(&self) -> &DataKey {
        &self.data_key
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The operator recorded when `--as` is not given.
    pub fn configured_operator(&self) -> Result<Option<String>> {
        store::meta_get(self.store.conn(), "operator")
    }

    pub fn set_operator(&mut self, name: &str) -> Result<()> {
        store::meta_set(self.store.conn(), "operator", &name)
    }

    /// 收件: takes a new case.
    pub fn new_case(&mut self, actor: &str, input: NewCase) -> Result<CaseId> {
        let catalogue = self.catalogue();
        let item = catalogue.item(&input.item).ok_or_else(|| Refusal::UnknownItem(input.item.clone()))?;
        if input.applicant.trim().is_empty() {
            return Err(Refusal::Invalid("the applicant's name may not be empty".into()).into());
        }
        limits::check_value_text("applicant", input.applicant.trim()).map_err(Refusal::from)?;
        let id_number = validate_id_number(&input.id_number).map_err(Refusal::from)?;
        let mut fields = vec![
            ("applicant".to_string(), FieldValue::Text(input.applicant.trim().to_string())),
            ("id_number".to_string(), FieldValue::Protected(self.data_key.protect(PersonalKind::IdNumber, &id_number))),
        ];
        if let Some(phone) = &input.phone {
            fields.push(("phone".into(), self.protected_value("phone", phone)?));
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
        let event = self.append(actor, Target::New, Body::Create(create))?;
        Ok(event.case)
    }

    fn protected_value(&self, field: &str, value: &str) -> Result<FieldValue> {
        let value = value.trim();
        if PersonalKind::of_field(field) != Some(PersonalKind::IdNumber) {
            // An ID number is checked whole below.
            limits::check_value_text(field, value).map_err(Refusal::from)?;
        }
        Ok(match PersonalKind::of_field(field) {
            None => FieldValue::Text(value.to_string()),
            Some(PersonalKind::IdNumber) => {
                let id = validate_id_number(value).map_err(Refusal::from)?;
                FieldValue::Protected(self.data_key.protect(PersonalKind::IdNumber, &id))
            }
            Some(PersonalKind::Phone) => {
                if value.len() < 7 || !value.chars().all(|c| c.is_ascii_digit() || c == '-' || c == '+') {
                    return Err(
                        Refusal::Invalid(format!("{value:?} is not a phone number (digits, '-' or '+')")).into()
                    );
                }
                FieldValue::Protected(self.data_key.protect(PersonalKind::Phone, value))
            }
            Some(kind) => FieldValue::Protected(self.data_key.protect(kind, value)),
        })
    }

    /// Sets a field. Personal fields (id_number, phone, address) are
    /// protected before they are stored.
    pub fn edit(&mut self, actor: &str, case: &CaseId, field: &str, value: &str) -> Result<Event> {
        limits::check_field_name(field).map_err(Refusal::from)?;
        let value = self.protected_value(field, value)?;
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
        let step = match step {
            Step::Forward { .. } => {
                let st = self.case(case)?;
                let decided_by =
                    st.decided_by().ok_or_else(|| Refusal::Authoring(AuthoringError::NoSuchCase(case.clone())))?;
                let to = auth::deciding_node(&self.topology, &st.home, decided_by)
                    .ok_or_else(|| Refusal::Invalid(format!("no {decided_by} node above {}", st.home)))?;
                Step::Forward { to: to.clone() }
            }
            s => s,
        };
        self.append(actor, Target::Case(case.clone()), Body::Step { step, note: note.into() })
    }

    pub fn rate(&mut self, actor: &str, case: &CaseId, level: u8, note: &str) -> Result<Event> {
        self.append(actor, Target::Case(case.clone()), Body::Rate { level, note: note.into() })
    }

    /// The one local write path.
    fn append(&mut self, actor: &str, target: Target, body: Body) -> Result<Event> {
        if actor.trim().is_empty() {
            return Err(Refusal::Invalid("staff name (--as) may not be empty".into()).into());
        }
        let me = self.identity.node.id.clone();
        let key = self.identity.signing_key()?;
        let tx = self.store.write()?;
        let seq = store::origin_seq(&tx, &me)? + 1;
        let case = match target {
            Target::New => CaseId::mint(&me, seq),
            Target::Case(c) => c,
        };
        let global = matches!(body, Body::Revoke { .. });
        let current = if global { None } else { store::fold_stored(&tx, &case)? };
        let draft = Draft {
            topology: &self.topology,
            catalogues: &self.catalogues,
            me: &me,
            seq,
            case: case.clone(),
            current: current.as_ref(),
            actor,
            body,
        };
        draft.check().map_err(Refusal::from)?;
        let tip = store::lane_tip(&tx, &me, &draft.lane())?;
        let last: Hlc = store::meta_get(&tx, HLC_KEY)?.unwrap_or_default();
        let mut clock = HlcClock::new(last.max(tip.hlc));
        let hlc = clock.tick(crate::wall_clock_ms());
        let event = draft.build(&tip, hlc);
        store::insert_event(&tx, &event)?;
        if !global {
            store::refold_case(&tx, &case)?;
        }
        store::put_seal(&tx, &Seal::sign(&key, &event))?;
        store::meta_set(&tx, HLC_KEY, &hlc)?;
        tx.commit()?;
        Ok(event)
    }

    /// The county revokes a node's certificate; the revocation travels to
    /// every node in the global lane.
    pub fn revoke(&mut self, actor: &str, node: &NodeId, reason: &str) -> Result<Event> {
        if self.topology.get(node).is_none() {
            return Err(
                Refusal::Invalid(format!("node {node} is not in the topology (county-hub nodes lists them)")).into()
            );
        }
        if node == self.me() {
            return Err(Refusal::Invalid("the hub cannot revoke itself".into()).into());
        }
        self.append(
            actor,
            Target::Case(CaseId(proto::event::GLOBAL_CASE.into())),
            Body::Revoke { node: node.clone(), reason: reason.into() },
        )
    }

    /// A case's folded state.
    pub fn case(&self, case: &CaseId) -> Result<CaseState> {
        Ok(store::get_case(self.store.conn(), case)?
            .ok_or_else(|| Refusal::Authoring(AuthoringError::NoSuchCase(case.clone())))?)
    }

    pub fn cases(&self, state: Option<State>, home: Option<&NodeId>) -> Result<Vec<CaseState>> {
        store::list_cases(self.store.conn(), state.map(|s| s.name()), home)
    }

    /// Cases whose applicant has this ID number (found by its keyed hash).
    pub fn find_by_id_number(&self, id_number: &str) -> Result<Vec<CaseId>> {
        let id = validate_id_number(id_number).map_err(Refusal::from)?;
        store::cases_by_lookup(self.store.conn(), &self.data_key.lookup(PersonalKind::IdNumber, &id))
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
