//! Case state as a pure function of the case's event set.
//!
//! Events are deduplicated, ordered causally (ties by hlc, origin, seq) and
//! applied in that order. History and conflicts are typed data; wording
//! belongs to the views (`node::view`). Fields are `MVReg`s keyed by the event's causal context, so
//! concurrent edits of a field keep every value and flag the case; materials
//! are an `Orswot`; the case's version vector is a `VClock`. A transition
//! that is not allowed at its place in the order is kept in the history,
//! marked superseded, and flags the case. Two different events with one id
//! (equivocation) are both kept in the history and flagged; only the one
//! with the smaller hash is applied, so every replica chooses the same.

use crate::codec;
use crate::event::{Body, Create, Event, FieldValue, Hash, Step};
use crate::hlc::Hlc;
use crate::ids::{CaseId, EventId, NodeId, Tier};
use crate::workflow::{self, State};
use crdts::{mvreg, orswot, CmRDT, Dot, MVReg, Orswot, VClock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One line of a case's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub event: EventId,
    pub hash: Hash,
    pub hlc: Hlc,
    pub actor: String,
    /// What the event did, as data: wording is the views' business, so a
    /// relabel changes no digest.
    pub happened: Happened,
    /// For transitions: the state before and after (after = before when
    /// superseded).
    pub from: Option<State>,
    pub to: Option<State>,
    /// Not applied: not valid at its place in the order, or an equivocating
    /// duplicate of another event's id.
    pub superseded: bool,
}

/// What an event did to a case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Happened {
    /// 收件: the case was taken.
    Created {
        item: String,
    },
    FieldSet {
        field: String,
        value: FieldValue,
    },
    MaterialAdded {
        name: String,
    },
    MaterialRemoved {
        name: String,
    },
    /// A workflow step, with its note.
    Step {
        step: Step,
        note: String,
    },
    /// 好差评.
    Rated {
        level: u8,
        note: String,
        /// The stage rated (none for ratings written before stages).
        stage: Option<crate::event::Stage>,
        channel: String,
    },
    /// 整改回访 of a poor rating.
    FollowedUp {
        rating: EventId,
        response: String,
        callback: String,
    },
    /// A file attached to a material (replacing an earlier one: 补正).
    FileAttached {
        material: String,
        name: String,
        hash: crate::files::FileHash,
        replaces: Option<crate::files::FileHash>,
    },
    /// A file taken off a material (it stays in the history).
    FileDetached {
        material: String,
        hash: crate::files::FileHash,
        note: String,
    },
    /// A material satisfied by a licence of this county, by reference.
    LicenceCited {
        material: String,
        case: CaseId,
        issuer: NodeId,
    },
    /// A county event of the global lane (not part of any case).
    Global,
}

impl HistoryEntry {
    /// The stable name of what happened (`create`, `accept`, `set_field`…),
    /// as the JSON views and scripts use it.
    pub fn kind(&self) -> &'static str {
        match &self.happened {
            Happened::Created { .. } => "create",
            Happened::FieldSet { .. } => "set_field",
            Happened::MaterialAdded { .. } => "add_material",
            Happened::MaterialRemoved { .. } => "remove_material",
            Happened::Step { step, .. } => step.name(),
            Happened::Rated { .. } => "rate",
            Happened::FollowedUp { .. } => "follow_up",
            Happened::FileAttached { .. } => "attach_file",
            Happened::FileDetached { .. } => "detach_file",
            Happened::LicenceCited { .. } => "cite_licence",
            Happened::Global => "global",
        }
    }
}

/// Something a person should look at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Conflict {
    /// A field holds several concurrent values.
    ConcurrentValues { field: String, values: usize },
    /// A transition was not valid where it fell in the order.
    SupersededTransition { event: EventId, step: Step, state: State },
    /// Two different events were seen with one id.
    Equivocation { event: EventId },
    /// An event claims to create the case but is not the minting event.
    StrayCreate { event: EventId },
    /// An event is stamped later than events that were written after it
    /// (they had seen it): its author's clock ran ahead, or theirs behind.
    /// The case is folded in causal order all the same.
    ClockSkew { event: EventId },
}

impl Conflict {
    /// The conflict's kind, for display and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Conflict::ConcurrentValues { .. } => "concurrent_values",
            Conflict::SupersededTransition { .. } => "superseded_transition",
            Conflict::Equivocation { .. } => "equivocation",
            Conflict::StrayCreate { .. } => "stray_create",
            Conflict::ClockSkew { .. } => "clock_skew",
        }
    }
}

/// A rating (好差评).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    pub event: EventId,
    pub level: u8,
    pub note: String,
}

/// A rating's stage, channel and time (好差评 "一事一评").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedRating {
    pub event: EventId,
    pub level: u8,
    pub stage: Option<crate::event::Stage>,
    pub channel: String,
    pub at: Hlc,
}

/// Levels from which a rating is followed up (不满意, 非常不满意).
pub const POOR_RATING: u8 = 4;

/// 整改: a poor rating, owned by the node that held the case when it was
/// rated, open until a follow-up event closes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    pub rating: EventId,
    pub level: u8,
    pub opened: Hlc,
    pub owner: NodeId,
    /// The closing event, the response and the call-back result.
    pub closed: Option<(EventId, String, String)>,
}

/// A file attached to one of a case's materials, as the fold keeps it:
/// every file ever attached stays, marked when replaced or taken off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseFile {
    pub material: String,
    pub file: crate::files::FileRef,
    /// The attaching event, its stamp and who attached it.
    pub event: EventId,
    pub at: Hlc,
    pub actor: String,
    /// The file that replaced this one (补正), if any.
    pub replaced_by: Option<crate::files::FileHash>,
    /// Taken off the material (the event that did it).
    pub removed: Option<EventId>,
}

impl CaseFile {
    /// Neither replaced nor taken off.
    pub fn is_current(&self) -> bool {
        self.replaced_by.is_none() && self.removed.is_none()
    }
}

/// The folded state of one case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseState {
    pub case_id: CaseId,
    pub home: NodeId,
    /// The node that currently holds the case (home until forwarded).
    pub handler: NodeId,
    pub state: State,
    /// The creation, when it is known (events may arrive before it).
    pub create: Option<Create>,
    /// Every current value of every field (several when concurrent).
    pub fields: BTreeMap<String, Vec<FieldValue>>,
    pub materials: Vec<String>,
    pub ratings: Vec<Rating>,
    pub history: Vec<HistoryEntry>,
    pub conflicts: Vec<Conflict>,
    /// The case's version vector: highest seq per origin among its events.
    pub clock: BTreeMap<NodeId, u64>,
    pub created: Option<Hlc>,
    pub accepted: Option<Hlc>,
    pub updated: Hlc,
    /// 容缺受理: what was missing at acceptance and the day promised.
    pub tolerated: Option<Tolerated>,
    /// Every rating's stage and channel (beside `ratings`).
    pub staged: Vec<StagedRating>,
    /// Follow-ups of poor ratings.
    pub followups: Vec<FollowUp>,
    /// Material files, in the order they were attached.
    pub files: Vec<CaseFile>,
    /// Materials satisfied by a licence of this county, by reference.
    pub licences: Vec<CitedLicence>,
}

/// A material satisfied by an electronic licence (see `Body::CiteLicence`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitedLicence {
    pub material: String,
    /// The signed licence (`Licence::from` gives its file form).
    pub licence: crate::licence::Carried,
    pub event: EventId,
    pub actor: String,
}

/// A 容缺 acceptance: materials missing at acceptance, promised by a day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tolerated {
    pub missing: Vec<String>,
    pub promised: crate::calendar::Day,
}

impl CaseState {
    /// Materials accepted as missing (容缺) and not received since.
    pub fn outstanding(&self) -> Vec<String> {
        self.tolerated
            .as_ref()
            .map(|t| t.missing.iter().filter(|m| !self.materials.contains(m)).cloned().collect())
            .unwrap_or_default()
    }

    /// The case has reached the stage a rating is about: 受理 once accepted
    /// (or done), 办结 once done.
    pub fn stage_reached(&self, stage: crate::event::Stage) -> bool {
        match stage {
            crate::event::Stage::Accept => self.accepted.is_some() || self.state.is_done(),
            crate::event::Stage::Done => self.state.is_done(),
        }
    }

    /// A 容缺 case whose promised day has passed with materials still
    /// missing: staff should end it (终止), or record the materials.
    pub fn termination_due(&self, today: crate::calendar::Day) -> bool {
        self.state == State::Accepted
            && self.tolerated.as_ref().is_some_and(|t| today > t.promised)
            && !self.outstanding().is_empty()
    }
}

impl CaseState {
    pub fn item(&self) -> &str {
        self.create.as_ref().map(|c| c.item.as_str()).unwrap_or("")
    }
    pub fn decided_by(&self) -> Option<Tier> {
        self.create.as_ref().map(|c| c.decided_by)
    }
    /// The case needs a person: concurrent values, superseded transitions or
    /// equivocation.
    pub fn flagged(&self) -> bool {
        !self.conflicts.is_empty()
    }
    /// A hash of what the case means (state, holder, fields, materials,
    /// ratings, conflicts, and the events it was folded from), never of
    /// wording: equal on every replica holding the same events, whatever
    /// release each runs, as long as the fold means the same.
    pub fn digest(&self) -> Hash {
        #[derive(Serialize)]
        struct Meaning<'a> {
            case: &'a CaseId,
            home: &'a NodeId,
            handler: &'a NodeId,
            state: State,
            create: &'a Option<Create>,
            fields: &'a BTreeMap<String, Vec<FieldValue>>,
            materials: &'a [String],
            ratings: &'a [Rating],
            conflicts: &'a [Conflict],
            events: Vec<(&'a EventId, &'a Hash, bool)>,
        }
        let mut events: Vec<_> = self.history.iter().map(|h| (&h.event, &h.hash, h.superseded)).collect();
        events.sort();
        Hash::of(&codec::encode_tagged(
            codec::CASE_DIGEST,
            &Meaning {
                case: &self.case_id,
                home: &self.home,
                handler: &self.handler,
                state: self.state,
                create: &self.create,
                fields: &self.fields,
                materials: &self.materials,
                ratings: &self.ratings,
                conflicts: &self.conflicts,
                events,
            },
        ))
    }
    /// The causal context for a new event on this case.
    pub fn context(&self) -> VClock<NodeId> {
        let mut c = VClock::new();
        for (origin, &seq) in &self.clock {
            c.apply(Dot::new(origin.clone(), seq));
        }
        c
    }
}

/// A digest over many cases (sorted by id), as `digest --json` reports it.
pub fn digest_of<'a>(cases: impl IntoIterator<Item = &'a CaseState>) -> Hash {
    let mut per_case: Vec<(&CaseId, Hash)> = cases.into_iter().map(|c| (&c.case_id, c.digest())).collect();
    per_case.sort();
    Hash::of(&codec::encode(&per_case))
}

/// The version of the fold: what a stored case row holds and how events
/// are ordered and applied. A node that finds rows of another version
/// rebuilds them from the events (bump it with every change of the fold).
/// 2: causal order, clock-skew flags. 3: typed history. 4: 补正 during review
/// (accepted → supplement requested). 5: 容缺受理 and 终止. 6: rating stages,
/// channels and follow-ups. 7: one rating per reached stage, follow-ups
/// closed by their owner, 终止 only of 容缺 cases. 8: a withdrawn case's
/// 办结 stage is reached (one definition of done, `State::is_done`).
/// 9: material files. 10: materials satisfied by a licence.
pub const FOLD_VERSION: u32 = 10;

/// How far a stamp may run ahead of an event that saw it before the case
/// is flagged for a clock that was wrong.
const SKEW_FLAG_MS: u64 = 5 * 60 * 1000;

/// Orders events (given in (hlc, origin, seq, hash) order) so that every
/// event comes after every event its author had seen: an event `a` is
/// before `b` when `b`'s context covers `a`'s dot, or both are of one origin
/// and `a`'s seq is lower. Among events free to go next, the earliest in
/// the given order goes first. So clocks decide only between concurrent
/// events: a laptop whose clock ran ahead cannot reorder what was done
/// after its events were seen. A stamp far ahead of a successor's is
/// flagged ([`Conflict::ClockSkew`]).
fn causal_order<'a>(
    ordered: Vec<(Hash, &'a Event, bool)>,
    conflicts: &mut Vec<Conflict>,
) -> Vec<(Hash, &'a Event, bool)> {
    let n = ordered.len();
    // Each origin's events of this case by seq, to find an event's direct
    // predecessors: the previous event of its own origin, and for every
    // origin its context covers, that origin's latest event it covers.
    // O(n · origins · log n), so a long case stays cheap to fold.
    let mut by_origin: BTreeMap<&NodeId, Vec<(u64, usize)>> = BTreeMap::new();
    for (i, (_, e, _)) in ordered.iter().enumerate() {
        by_origin.entry(&e.id.origin).or_default().push((e.id.seq, i));
    }
    for list in by_origin.values_mut() {
        list.sort_unstable();
    }
    let latest_at_most = |origin: &NodeId, seq: u64| -> Option<usize> {
        let list = by_origin.get(origin)?;
        let k = list.partition_point(|(s, _)| *s <= seq);
        (k > 0).then(|| list[k - 1].1)
    };
    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting = vec![0usize; n];
    let mut in_order = true;
    for (j, (_, e, _)) in ordered.iter().enumerate() {
        let mut preds: Vec<usize> = Vec::new();
        if e.id.seq > 0 {
            preds.extend(latest_at_most(&e.id.origin, e.id.seq - 1));
        }
        for dot in e.context.iter() {
            preds.extend(latest_at_most(dot.actor, dot.counter));
        }
        preds.sort_unstable();
        preds.dedup();
        for i in preds.into_iter().filter(|&i| i != j) {
            successors[i].push(j);
            waiting[j] += 1;
            in_order &= i < j;
        }
    }
    let mut skewed = std::collections::BTreeSet::new();
    for (i, succ) in successors.iter().enumerate() {
        let a = ordered[i].1;
        for &j in succ {
            if a.hlc.wall_ms > ordered[j].1.hlc.wall_ms.saturating_add(SKEW_FLAG_MS) {
                skewed.insert(a.id.clone());
            }
        }
    }
    conflicts.extend(skewed.into_iter().map(|event| Conflict::ClockSkew { event }));
    if in_order {
        return ordered;
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> =
        (0..n).filter(|&i| waiting[i] == 0).map(std::cmp::Reverse).collect();
    let mut slots: Vec<Option<(Hash, &Event, bool)>> = ordered.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        out.push(slots[i].take().expect("each event is placed once"));
        for &j in &successors[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(std::cmp::Reverse(j));
            }
        }
    }
    // A cycle (only possible with forged contexts) leaves events unplaced:
    // they follow in the given order.
    out.extend(slots.into_iter().flatten());
    out
}

/// Folds the events of one case. Events of other cases are ignored.
/// Returns `None` when no event of the case is given.
pub fn fold_case<'a>(case_id: &CaseId, events: impl IntoIterator<Item = &'a Event>) -> Option<CaseState> {
    fold_case_hashed(case_id, events.into_iter().map(|e| (e, e.hash())))
}

/// [`fold_case`] for events whose hashes are already known (as stored or
/// as checked on receipt), so they are not computed again.
pub fn fold_case_hashed<'a>(
    case_id: &CaseId,
    events: impl IntoIterator<Item = (&'a Event, Hash)>,
) -> Option<CaseState> {
    // Deduplicate by (id, hash), then find equivocations: ids with several hashes.
    let mut by_id: BTreeMap<&EventId, BTreeMap<Hash, &Event>> = BTreeMap::new();
    for (e, hash) in events.into_iter().filter(|(e, _)| &e.case == case_id) {
        by_id.entry(&e.id).or_default().insert(hash, e);
    }
    if by_id.is_empty() {
        return None;
    }
    let mut ordered: Vec<(Hash, &Event, bool)> = Vec::new();
    let mut conflicts = Vec::new();
    for (id, versions) in &by_id {
        if versions.len() > 1 {
            conflicts.push(Conflict::Equivocation { event: (*id).clone() });
        }
        for (i, (hash, e)) in versions.iter().enumerate() {
            ordered.push((*hash, e, i > 0));
        }
    }
    ordered.sort_by(|a, b| a.1.order_key().cmp(&b.1.order_key()).then(a.0.cmp(&b.0)));
    let ordered = causal_order(ordered, &mut conflicts);

    let home = case_id.home().unwrap_or_else(|| NodeId::new(""));
    let mut st = CaseState {
        case_id: case_id.clone(),
        home: home.clone(),
        handler: home,
        state: State::Received,
        create: None,
        fields: BTreeMap::new(),
        materials: Vec::new(),
        ratings: Vec::new(),
        history: Vec::new(),
        conflicts,
        clock: BTreeMap::new(),
        created: None,
        accepted: None,
        updated: Hlc::default(),
        tolerated: None,
        staged: Vec::new(),
        followups: Vec::new(),
        files: Vec::new(),
        licences: Vec::new(),
    };
    let mut regs: BTreeMap<String, MVReg<FieldValue, NodeId>> = BTreeMap::new();
    let mut materials: Orswot<String, NodeId> = Orswot::new();

    for (hash, e, equivocating) in ordered {
        let mut entry = HistoryEntry {
            event: e.id.clone(),
            hash,
            hlc: e.hlc,
            actor: e.actor.clone(),
            happened: Happened::Global,
            from: None,
            to: None,
            superseded: equivocating,
        };
        if equivocating {
            st.history.push(entry);
            continue;
        }
        let dot = Dot::new(e.id.origin.clone(), e.id.seq);
        let mut clock = e.context.clone();
        clock.apply(dot.clone());
        let seen = st.clock.entry(e.id.origin.clone()).or_insert(0);
        *seen = (*seen).max(e.id.seq);
        st.updated = st.updated.max(e.hlc);
        match &e.body {
            Body::Create(c) => {
                if CaseId::mint(&e.id.origin, e.id.seq) != *case_id || st.create.is_some() {
                    st.conflicts.push(Conflict::StrayCreate { event: e.id.clone() });
                    entry.superseded = true;
                } else {
                    for (field, value) in &c.fields {
                        regs.entry(field.clone())
                            .or_default()
                            .apply(mvreg::Op::Put { clock: clock.clone(), val: value.clone() });
                    }
                    if !c.materials.is_empty() {
                        materials.apply(orswot::Op::Add { dot: dot.clone(), members: c.materials.clone() });
                    }
                    entry.happened = Happened::Created { item: c.item.clone() };
                    entry.to = Some(State::Received);
                    st.create = Some(c.clone());
                    st.created = Some(e.hlc);
                }
            }
            Body::SetField { field, value } => {
                regs.entry(field.clone()).or_default().apply(mvreg::Op::Put { clock, val: value.clone() });
                entry.happened = Happened::FieldSet { field: field.clone(), value: value.clone() };
            }
            Body::AddMaterial { name } => {
                materials.apply(orswot::Op::Add { dot, members: vec![name.clone()] });
                entry.happened = Happened::MaterialAdded { name: name.clone() };
            }
            Body::RemoveMaterial { name } => {
                materials.apply(orswot::Op::Rm { clock: e.context.clone(), members: vec![name.clone()] });
                entry.happened = Happened::MaterialRemoved { name: name.clone() };
            }
            // Global events do not belong to a case; kept for the record.
            Body::Revoke { .. } | Body::Enrol { .. } | Body::Incarnate { .. } | Body::Publish(_) => {}
            Body::Rate { level, note } => {
                st.ratings.push(Rating { event: e.id.clone(), level: *level, note: note.clone() });
                entry.happened =
                    Happened::Rated { level: *level, note: note.clone(), stage: None, channel: String::new() };
            }
            Body::Rating { level, stage, channel, note } => {
                entry.happened = Happened::Rated {
                    level: *level,
                    note: note.clone(),
                    stage: Some(*stage),
                    channel: channel.clone(),
                };
                // "一事一评": the first rating of a stage the case had
                // reached counts; a later one, or one of a stage not yet
                // reached, is kept in the history as superseded.
                let reached = st.stage_reached(*stage);
                if !reached || st.staged.iter().any(|r| r.stage == Some(*stage)) {
                    entry.superseded = true;
                } else {
                    st.ratings.push(Rating { event: e.id.clone(), level: *level, note: note.clone() });
                    st.staged.push(StagedRating {
                        event: e.id.clone(),
                        level: *level,
                        stage: Some(*stage),
                        channel: channel.clone(),
                        at: e.hlc,
                    });
                    if *level >= POOR_RATING {
                        st.followups.push(FollowUp {
                            rating: e.id.clone(),
                            level: *level,
                            opened: e.hlc,
                            owner: st.handler.clone(),
                            closed: None,
                        });
                    }
                }
            }
            Body::AttachFile { material, file, replaces } => {
                entry.happened = Happened::FileAttached {
                    material: material.clone(),
                    name: file.name.clone(),
                    hash: file.hash,
                    replaces: *replaces,
                };
                // A file received is the material received.
                materials.apply(orswot::Op::Add { dot, members: vec![material.clone()] });
                if let Some(old) = replaces {
                    for f in st.files.iter_mut().filter(|f| &f.material == material && f.file.hash == *old) {
                        f.replaced_by.get_or_insert(file.hash);
                    }
                }
                st.files.push(CaseFile {
                    material: material.clone(),
                    file: file.clone(),
                    event: e.id.clone(),
                    at: e.hlc,
                    actor: e.actor.clone(),
                    replaced_by: None,
                    removed: None,
                });
            }
            Body::CiteLicence { material, licence } => {
                entry.happened = Happened::LicenceCited {
                    material: material.clone(),
                    case: licence.terms.case.clone(),
                    issuer: licence.terms.issuer.clone(),
                };
                materials.apply(orswot::Op::Add { dot, members: vec![material.clone()] });
                st.licences.push(CitedLicence {
                    material: material.clone(),
                    licence: (**licence).clone(),
                    event: e.id.clone(),
                    actor: e.actor.clone(),
                });
            }
            Body::DetachFile { material, hash, note } => {
                entry.happened = Happened::FileDetached { material: material.clone(), hash: *hash, note: note.clone() };
                let current = st.files.iter_mut().filter(|f| &f.material == material && f.file.hash == *hash);
                let mut any = false;
                for f in current.filter(|f| f.removed.is_none()) {
                    f.removed = Some(e.id.clone());
                    any = true;
                }
                entry.superseded = !any;
            }
            Body::FollowUp { rating, response, callback } => {
                entry.happened = Happened::FollowedUp {
                    rating: rating.clone(),
                    response: response.clone(),
                    callback: callback.clone(),
                };
                // Only the node that owns the follow-up closes it; the first
                // close counts.
                let author = e.id.origin.node();
                match st.followups.iter_mut().find(|f| &f.rating == rating && f.closed.is_none()) {
                    Some(f) if f.owner == author => {
                        f.closed = Some((e.id.clone(), response.clone(), callback.clone()));
                    }
                    _ => entry.superseded = true,
                }
            }
            Body::Step { step, note } => {
                entry.happened = Happened::Step { step: step.clone(), note: note.clone() };
                entry.from = Some(st.state);
                // 终止 ends only a case accepted with materials missing.
                let allowed = match step {
                    Step::Terminate => st.tolerated.is_some(),
                    _ => true,
                };
                match workflow::next(st.state, step).filter(|_| allowed) {
                    Some(to) => {
                        if let Step::Forward { to: target } = step {
                            st.handler = target.clone();
                        }
                        if to == State::Accepted && st.accepted.is_none() {
                            st.accepted = Some(e.hlc);
                        }
                        if let Step::AcceptMissing { missing, promised } = step {
                            st.tolerated = Some(Tolerated { missing: missing.clone(), promised: *promised });
                        }
                        st.state = to;
                        entry.to = Some(to);
                    }
                    None => {
                        entry.superseded = true;
                        entry.to = Some(st.state);
                        st.conflicts.push(Conflict::SupersededTransition {
                            event: e.id.clone(),
                            step: step.clone(),
                            state: st.state,
                        });
                    }
                }
            }
        }
        st.history.push(entry);
    }

    for (field, reg) in regs {
        let mut values = reg.read().val;
        values.sort();
        values.dedup();
        if values.len() > 1 {
            st.conflicts.push(Conflict::ConcurrentValues { field: field.clone(), values: values.len() });
        }
        st.fields.insert(field, values);
    }
    let mut names: Vec<String> = materials.read().val.into_iter().collect();
    names.sort();
    st.materials = names;
    st.conflicts.sort();
    Some(st)
}
