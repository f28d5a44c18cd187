//! Admission: what a change *does* is judged before any replica applies it.
//!
//! A change that passed the signature and membership checks is decoded op by op and each op
//! is checked against the schema (docs/data-model.md, "Admission"): after the genesis (or the
//! v1 → v2 migration) no object is ever created; every op puts or deletes a string in one of
//! the 256 event buckets or 256 object buckets made by a change in the judged change's causal
//! past; an event is put once under its own op id and never overwritten or deleted; an object
//! field has the type its kind gives it; the author speaks only for the agent its device acts
//! for unless it is an admin; sizes are bounded. The verdict depends only on the change and
//! on facts of its causal past (its author's membership there, which bucket sets exist
//! there), so every replica reaches the same verdict whatever order changes arrive in.
//!
//! Pure: no I/O.

use std::collections::HashMap;

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{ActorId, ExpandedChange, ScalarValue};
use serde_json::Value as Json;

use crate::membership::{Member, Rejection, Role};
use crate::schema::{self, ObjectKey};
use crate::validate;
use crate::vf::{
    Agent, AgentRelationship, AgentRelationshipRole, Agreement, AgreementBundle, Claim, Commitment,
    EconomicEvent, Id, Intent, Measure, ObjectKind, Plan, Process, ProcessSpecification, Proposal,
    ProposalList, Recipe, RecipeExchange, RecipeFlow, RecipeProcess, ResourceDescription,
    ResourceSpecification, SpatialThing, Unit,
};

/// Largest change, in bytes (raw Automerge encoding). Also refused at write time.
pub const MAX_CHANGE_BYTES: usize = 1 << 20;
/// Most operations in one change. Also refused at write time.
pub const MAX_CHANGE_OPS: usize = 20_000;
/// Most dependencies of one change.
pub const MAX_DEPS: usize = 256;
/// Longest change message (membership records), in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Longest stored value (an event's JSON, one field's JSON), in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// An object the schema knows, by the op id that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Event bucket `index` of bucket set `set`.
    EventBucket { set: usize, index: usize },
    /// Object bucket `index` of bucket set `set`.
    ObjectBucket { set: usize, index: usize },
    /// The v1 events list.
    V1Events,
    /// The v1 map of one kind's objects (made by a v1 genesis).
    V1Kind(ObjectKind),
    /// The network map.
    Network,
}

/// A bucket set and the membership record (genesis or migration) whose change made it.
#[derive(Debug, Clone)]
struct BucketSet {
    record: usize,
}

/// The schema facts admission needs: which objects exist and which change made them.
/// Built from the genesis change and the migration changes as they are accepted.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    targets: HashMap<(u64, ActorId), Target>,
    sets: Vec<BucketSet>,
    /// Whether the genesis was a version-1 genesis.
    v1_genesis: bool,
    /// Version-1 objects (the maps made under a v1 kind map), by the op id that made them.
    v1_objects: HashMap<(u64, ActorId), (ObjectKind, String)>,
    /// Every op that made an object of an owned kind ([`owned`]): each put of its marker and
    /// its version-1 map, with the agent of the device that made it. Markers are never
    /// overwritten or deleted, so a stored document shows every one
    /// (`crate::Ledger::object_creations`).
    creations: HashMap<(ObjectKind, String), Vec<Creation>>,
}

/// One op that made an object, and the agent whose device made it: an owner of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Creation {
    /// The op's counter.
    pub counter: u64,
    /// The op's actor.
    pub actor: ActorId,
    /// The agent its device acted for.
    pub agent: Id,
}

/// Whether objects of `kind` belong to the agents whose devices created them: an object of
/// such a kind is edited only by its owners' devices or an admin (`NotYourObject`). Agents,
/// agent relationships, relationship roles and rule sets have rules of their own
/// ([`authority_check`]); events are immutable.
pub(crate) fn owned(kind: ObjectKind) -> bool {
    !matches!(
        kind,
        ObjectKind::Agent
            | ObjectKind::AgentRelationship
            | ObjectKind::AgentRelationshipRole
            | ObjectKind::RuleSet
            | ObjectKind::EconomicEvent
    )
}

/// What admission needs to know of a change's causal past (from the membership index).
pub(crate) struct Past<'a> {
    /// The author's membership there (None: the genesis).
    pub author: Option<&'a Member>,
    /// Whether membership record `index` is in the causal past.
    pub has_record: &'a dyn Fn(usize) -> bool,
    /// Whether the op with this (counter, actor) is in the causal past (asked only of
    /// version-1-era changes that edit a version-1 object).
    pub has_op: &'a dyn Fn(u64, &ActorId) -> bool,
    /// The network's rule set in force in the causal past (None: none), for its
    /// `recordForOthers` grant ([`records_for_others`]).
    pub rules: Option<&'a crate::rules::RuleSet>,
}

/// An owned object one change writes, as its ownership and party checks need it.
struct Touched {
    kind: ObjectKind,
    id: String,
    /// The change puts its marker.
    marker: bool,
    /// The parties (`provider`, `receiver`) it puts (`Some`) or deletes (`None`).
    parties: Vec<Option<String>>,
}

/// Parties of a commitment, intent or claim, for a member (admins record for anyone): one
/// made by the change must name the author's agent as its provider or its receiver if it
/// names any (`SpeaksForOthers`, as for events: a member cannot commit another agent); the
/// parties of one made earlier are fixed (a new promise between other parties is a new
/// object, not an edit of an old one).
fn check_parties(t: &Touched, author: &Member, for_others: bool) -> Result<(), Rejection> {
    if !has_parties(t.kind) || t.parties.is_empty() {
        return Ok(());
    }
    if !t.marker {
        return Err(refuse(format!(
            "changes the provider or receiver of {} {}: the parties are fixed when it is made",
            t.kind, t.id
        )));
    }
    let own = |p: &Option<String>| p.as_deref() == Some(author.agent.as_str());
    if for_others || t.parties.iter().any(own) {
        return Ok(());
    }
    let named: Vec<&str> = t.parties.iter().flatten().map(String::as_str).collect();
    Err(Rejection::SpeaksForOthers {
        device: author.device,
        agent: author.agent.clone(),
        provider: named.first().map(|p| Id::from(*p)),
        receiver: named.get(1).map(|r| Id::from(*r)),
    })
}

/// What kind of membership record the change carries, as admission needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// No record: an ordinary change.
    None,
    /// The genesis (with the schema version it declares).
    Genesis(u64),
    /// The v1 → v2 migration.
    Migrate,
    /// Add or remove: no ops allowed in v2 (v1 wrote a readable copy at the root).
    Membership,
}

fn refuse(detail: impl Into<String>) -> Rejection {
    Rejection::Schema {
        detail: detail.into(),
    }
}

impl Admission {
    /// Judge a decoded change. `record` is the membership record it carries (already judged
    /// by membership), `record_index` the index that record will get if the change is
    /// accepted. `raw_len` is the change's encoded size, `dep_max_op` the largest op
    /// counter among its dependencies. Returns the events the change records in event
    /// buckets, read (each once, here), by op index: the rules judge them without reading
    /// them again.
    pub(crate) fn judge(
        &self,
        change: &ExpandedChange,
        raw_len: usize,
        dep_max_op: u64,
        record: RecordKind,
        past: &Past<'_>,
    ) -> Result<Vec<(usize, EconomicEvent)>, Rejection> {
        if raw_len > MAX_CHANGE_BYTES || change.operations.len() > MAX_CHANGE_OPS {
            return Err(Rejection::TooLarge {
                bytes: raw_len,
                ops: change.operations.len(),
            });
        }
        if change.deps.len() > MAX_DEPS {
            return Err(refuse(format!("{} dependencies", change.deps.len())));
        }
        if change
            .message
            .as_ref()
            .is_some_and(|m| m.len() > MAX_MESSAGE_BYTES)
        {
            return Err(refuse("a change message over 16 KiB"));
        }
        let start = change.start_op.get();
        if !change.deps.is_empty() && start <= dep_max_op {
            return Err(refuse(format!(
                "its first op counter {start} is not above its dependencies' ({dep_max_op})"
            )));
        }
        match record {
            RecordKind::Genesis(version) => {
                return check_genesis(change, version).map(|()| Vec::new())
            }
            RecordKind::Migrate => {
                if self.v2_in_past(past) {
                    return Err(refuse("a migration of a ledger already at version 2"));
                }
                return check_bucket_creation(change, &[(schema::KEY_SCHEMA, 2)])
                    .map(|_| Vec::new());
            }
            RecordKind::Membership | RecordKind::None => {}
        }
        let v2 = self.v2_in_past(past);
        if !v2 && !self.v1_genesis {
            return Err(refuse("no bucket set in its causal past"));
        }
        if record == RecordKind::Membership && v2 && !change.operations.is_empty() {
            return Err(refuse("a membership record carries operations"));
        }
        let author = past.author.ok_or_else(|| refuse("no author"))?;
        let for_others = records_for_others(author, past.rules);
        let mut v1 = V1Writes::default();
        // The owned objects this change writes: whether it writes each one's marker, and
        // the parties it writes.
        let mut touched: Vec<Touched> = Vec::new();
        let mut events = Vec::new();
        for (i, op) in change.operations.iter().enumerate() {
            let counter = start + i as u64;
            let at = |d: String| refuse(format!("op {i}: {d}"));
            let ObjectId::Id(obj) = &op.obj else {
                // v1 era: a membership change wrote a readable copy of its record.
                let v1_record = !v2
                    && matches!(&op.key, Key::Map(k) if k.as_str() == schema::KEY_V1_RECORD)
                    && matches!(&op.action, OpType::Put(ScalarValue::Str(_)))
                    && !op.insert;
                if v1_record {
                    continue;
                }
                return Err(at(format!(
                    "writes the root key {:?}: root keys are immutable",
                    key_text(&op.key)
                )));
            };
            let target = self.targets.get(&(obj.0, obj.1.clone())).copied();
            match target {
                Some(Target::EventBucket { set, index }) => {
                    self.require_set(set, past).map_err(at)?;
                    let event =
                        check_event_op(op, counter, &change.actor_id, index, author, for_others)
                            .map_err(|e| e.at_op(i))?;
                    events.push((i, event));
                }
                Some(Target::ObjectBucket { set, index }) => {
                    self.require_set(set, past).map_err(at)?;
                    let w = check_object_op(op, index, author).map_err(|e| e.at_op(i))?;
                    if owned(w.kind) {
                        let at = match touched
                            .iter()
                            .position(|t| t.kind == w.kind && t.id == w.id)
                        {
                            Some(at) => at,
                            None => {
                                touched.push(Touched {
                                    kind: w.kind,
                                    id: w.id,
                                    marker: false,
                                    parties: Vec::new(),
                                });
                                touched.len() - 1
                            }
                        };
                        touched[at].marker |= w.marker;
                        touched[at].parties.extend(w.party);
                    }
                }
                Some(Target::V1Events) => {
                    if v2 {
                        return Err(at(
                            "writes the version-1 events list of a version-2 ledger".into()
                        ));
                    }
                    if !op.insert || !op.pred.is_empty() {
                        return Err(at("overwrites or deletes a recorded event".into()));
                    }
                    let OpType::Put(ScalarValue::Str(text)) = &op.action else {
                        return Err(at("an event is a JSON string".into()));
                    };
                    check_event_text(text, author, for_others).map_err(|e| e.at_op(i))?;
                }
                Some(Target::Network) => return Err(at("the network map is immutable".into())),
                Some(Target::V1Kind(_)) | None if v2 => {
                    return Err(at(format!(
                        "targets object {}@{}, which is not a bucket",
                        obj.0, obj.1
                    )))
                }
                // v1 era: the version-1 rules (docs/data-model.md): objects are made whole
                // under their kind's map, fields written whole, typed as in version 2.
                Some(Target::V1Kind(kind)) => v1
                    .create(kind, op, (counter, &change.actor_id), author)
                    .map_err(|e| e.at_op(i))?,
                None => {
                    let key = (obj.0, obj.1.clone());
                    if v1.made(&key) {
                        v1.nested(&key, op, (counter, &change.actor_id))
                            .map_err(|e| e.at_op(i))?;
                    } else if let Some((kind, id)) = self.v1_objects.get(&key) {
                        if !(past.has_op)(obj.0, &obj.1) {
                            return Err(at(format!(
                                "edits {kind} {id}, made by a change outside its causal past"
                            )));
                        }
                        v1.field(*kind, id, op, (counter, &change.actor_id), author)
                            .map_err(|e| e.at_op(i))?;
                    } else {
                        return Err(at(format!(
                            "targets object {}@{}, which is not part of the schema",
                            obj.0, obj.1
                        )));
                    }
                }
            }
        }
        v1.check().map_err(Checked::at_change)?;
        if author.role != Role::Admin {
            for t in &touched {
                self.check_owner(t.kind, &t.id, t.marker, author, &change.actor_id, past)?;
                check_parties(t, author, for_others)?;
            }
        }
        Ok(events)
    }

    /// Object ownership: a member edits an object of an owned kind only if a device of its
    /// agent made the object (put its marker, or made its version-1 map) in the change's
    /// causal past. A change that puts the marker of an object no change in its past made
    /// creates it (two members may create one id concurrently: both own it). A member's
    /// change that writes an object its causal past does not have, without creating it, is
    /// refused as a schema error: an honest device never does that.
    fn check_owner(
        &self,
        kind: ObjectKind,
        id: &str,
        writes_marker: bool,
        author: &Member,
        actor: &ActorId,
        past: &Past<'_>,
    ) -> Result<(), Rejection> {
        let made = self
            .creations
            .get(&(kind, id.to_string()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        // An actor's earlier ops are in the past of each of its later changes.
        let seen = |c: &Creation| c.actor == *actor || (past.has_op)(c.counter, &c.actor);
        if made.iter().any(|c| c.agent == author.agent && seen(c)) {
            return Ok(());
        }
        let mut owners: Vec<Id> = made
            .iter()
            .filter(|c| seen(c))
            .map(|c| c.agent.clone())
            .collect();
        owners.sort();
        owners.dedup();
        if !owners.is_empty() {
            return Err(Rejection::NotYourObject {
                device: author.device,
                agent: author.agent.clone(),
                kind,
                id: Id::from(id),
                owners,
            });
        }
        if writes_marker {
            Ok(())
        } else {
            Err(refuse(format!(
                "writes {kind} {id}, which no change in its causal past creates"
            )))
        }
    }

    fn v2_in_past(&self, past: &Past<'_>) -> bool {
        self.sets.iter().any(|s| (past.has_record)(s.record))
    }

    fn require_set(&self, set: usize, past: &Past<'_>) -> Result<(), String> {
        let record = self.sets.get(set).map(|s| s.record);
        if record.is_some_and(|r| (past.has_record)(r)) {
            Ok(())
        } else {
            Err("writes buckets made by a change outside its causal past".into())
        }
    }

    /// Index an accepted change: the bucket sets a genesis or migration made, the
    /// version-1 objects a version-1-era change made, and the objects of owned kinds any
    /// change made, with the agent its author acted for (`agent`, asked only if the change
    /// made an object).
    pub(crate) fn admit(
        &mut self,
        change: &ExpandedChange,
        record: RecordKind,
        record_index: usize,
        agent: &dyn Fn() -> Option<Id>,
    ) {
        self.index_structure(change, record, record_index);
        self.index_creations(change, agent);
    }

    /// The objects of owned kinds this change made: each marker it puts in an object bucket,
    /// each version-1 map it makes.
    fn index_creations(&mut self, change: &ExpandedChange, agent: &dyn Fn() -> Option<Id>) {
        let start = change.start_op.get();
        let mut made = Vec::new();
        for (i, op) in change.operations.iter().enumerate() {
            let ObjectId::Id(o) = &op.obj else { continue };
            let Key::Map(key) = &op.key else { continue };
            let counter = start + i as u64;
            let found = match (self.targets.get(&(o.0, o.1.clone())), &op.action) {
                (Some(Target::ObjectBucket { .. }), OpType::Put(ScalarValue::Str(_))) => {
                    match ObjectKey::parse(key) {
                        Some(ObjectKey::Marker(kind, id)) => Some((kind, id)),
                        _ => None,
                    }
                }
                (Some(Target::V1Kind(kind)), OpType::Make(automerge::ObjType::Map)) => {
                    Some((*kind, key.to_string()))
                }
                _ => None,
            };
            if let Some((kind, id)) = found.filter(|(k, _)| owned(*k)) {
                made.push((kind, id, counter));
            }
        }
        if made.is_empty() {
            return;
        }
        let Some(agent) = agent() else { return };
        for (kind, id, counter) in made {
            self.add_creation(
                kind,
                id,
                Creation {
                    counter,
                    actor: change.actor_id.clone(),
                    agent: agent.clone(),
                },
            );
        }
    }

    /// Objects of owned kinds with more than one owning agent (created concurrently by
    /// devices of different agents), sorted by kind and id, each with its owners sorted.
    pub(crate) fn contested(&self) -> Vec<(ObjectKind, Id, Vec<Id>)> {
        let mut out: Vec<(ObjectKind, Id, Vec<Id>)> = self
            .creations
            .iter()
            .filter_map(|((kind, id), list)| {
                let mut owners: Vec<Id> = list.iter().map(|c| c.agent.clone()).collect();
                owners.sort();
                owners.dedup();
                (owners.len() > 1).then(|| (*kind, Id::from(id.as_str()), owners))
            })
            .collect();
        out.sort();
        out
    }

    fn add_creation(&mut self, kind: ObjectKind, id: String, c: Creation) {
        let list = self.creations.entry((kind, id)).or_default();
        if !list.contains(&c) {
            list.push(c);
        }
    }

    /// Index the creations found in a stored document (a replica opened from its store
    /// judges new changes against them): (kind, id, creation).
    pub(crate) fn index_creations_found(
        &mut self,
        found: impl IntoIterator<Item = (ObjectKind, String, Creation)>,
    ) {
        for (kind, id, c) in found {
            if owned(kind) {
                self.add_creation(kind, id, c);
            }
        }
    }

    fn index_structure(
        &mut self,
        change: &ExpandedChange,
        record: RecordKind,
        record_index: usize,
    ) {
        match record {
            RecordKind::Genesis(version) => {
                self.v1_genesis = version < 2;
                let start = change.start_op.get();
                for (i, op) in change.operations.iter().enumerate() {
                    let id = (start + i as u64, change.actor_id.clone());
                    match (&op.obj, &op.key, &op.action) {
                        (ObjectId::Root, Key::Map(k), OpType::Make(_))
                            if k.as_str() == schema::KEY_NETWORK =>
                        {
                            self.targets.insert(id, Target::Network);
                        }
                        (ObjectId::Root, Key::Map(k), OpType::Make(_))
                            if k.as_str() == schema::KEY_V1_EVENTS =>
                        {
                            self.targets.insert(id, Target::V1Events);
                        }
                        (ObjectId::Root, Key::Map(k), OpType::Make(automerge::ObjType::Map))
                            if version < 2 =>
                        {
                            if let Some(kind) = schema::kind_of_root_key(k) {
                                self.targets.insert(id, Target::V1Kind(kind));
                            }
                        }
                        _ => {}
                    }
                }
                if version >= 2 {
                    self.index_buckets(change, record_index);
                } else {
                    // The version-1 objects the genesis made (its agent), as a reopened
                    // replica finds them in the document.
                    self.index_v1_made(change);
                }
            }
            RecordKind::Migrate => self.index_buckets(change, record_index),
            // The version-1 objects it made (only a v1-era change can make one).
            RecordKind::Membership | RecordKind::None if self.v1_genesis => {
                self.index_v1_made(change)
            }
            RecordKind::Membership | RecordKind::None => {}
        }
    }

    fn index_v1_made(&mut self, change: &ExpandedChange) {
        let start = change.start_op.get();
        for (i, op) in change.operations.iter().enumerate() {
            let (ObjectId::Id(o), Key::Map(id), OpType::Make(automerge::ObjType::Map)) =
                (&op.obj, &op.key, &op.action)
            else {
                continue;
            };
            if let Some(Target::V1Kind(kind)) = self.targets.get(&(o.0, o.1.clone())) {
                self.v1_objects.insert(
                    (start + i as u64, change.actor_id.clone()),
                    (*kind, id.to_string()),
                );
            }
        }
    }

    /// Index version-1 objects found in a stored document (a replica opened from its store
    /// judges new changes against them): (op id that made the object, kind, id).
    pub(crate) fn index_v1_objects(
        &mut self,
        objects: impl IntoIterator<Item = ((u64, ActorId), ObjectKind, String)>,
    ) {
        for (op, kind, id) in objects {
            self.v1_objects.insert(op, (kind, id));
        }
    }

    fn index_buckets(&mut self, change: &ExpandedChange, record_index: usize) {
        let Ok(found) = check_bucket_creation(change, &[(schema::KEY_SCHEMA, 2)]) else {
            return;
        };
        let set = self.sets.len();
        self.sets.push(BucketSet {
            record: record_index,
        });
        for (id, events, index) in found {
            let t = if events {
                Target::EventBucket { set, index }
            } else {
                Target::ObjectBucket { set, index }
            };
            self.targets.insert(id, t);
        }
    }
}

/// Why an op is refused: a reason of its own, or a schema detail to name with the op.
enum Checked {
    Refused(Rejection),
    Detail(String),
}

impl Checked {
    /// The rejection, the detail as it is (a fact of the whole change).
    fn at_change(self) -> Rejection {
        match self {
            Checked::Refused(r) => r,
            Checked::Detail(d) => refuse(d),
        }
    }

    /// The rejection, the detail prefixed with the op's index.
    fn at_op(self, i: usize) -> Rejection {
        match self {
            Checked::Refused(r) => r,
            Checked::Detail(d) => refuse(format!("op {i}: {d}")),
        }
    }
}

impl From<String> for Checked {
    fn from(d: String) -> Self {
        Checked::Detail(d)
    }
}

fn key_text(k: &Key) -> String {
    match k {
        Key::Map(s) => s.to_string(),
        Key::Seq(_) => "a list position".into(),
    }
}

fn check_event_op(
    op: &automerge::legacy::Op,
    counter: u64,
    actor: &ActorId,
    bucket: usize,
    author: &Member,
    for_others: bool,
) -> Result<EconomicEvent, Checked> {
    let Key::Map(key) = &op.key else {
        return Err("an event bucket is a map".to_string().into());
    };
    if op.insert || !op.pred.is_empty() {
        return Err(
            "overwrites or deletes a recorded event: events are immutable"
                .to_string()
                .into(),
        );
    }
    let OpType::Put(ScalarValue::Str(text)) = &op.action else {
        return Err("deletes or edits a recorded event: events are immutable"
            .to_string()
            .into());
    };
    let own = format!("{counter}@{actor}");
    if key.as_str() != own {
        return Err(format!("an event is put under its own op id {own}, not {key}").into());
    }
    if schema::event_bucket(counter) != bucket {
        return Err(format!(
            "event {own} belongs in bucket {}",
            schema::bucket_key(schema::event_bucket(counter))
        )
        .into());
    }
    check_event_text(text, author, for_others)
}

/// Check an event's JSON text and who records it: the event, read.
fn check_event_text(
    text: &str,
    author: &Member,
    for_others: bool,
) -> Result<EconomicEvent, Checked> {
    if text.len() > MAX_VALUE_BYTES {
        return Err(format!("an event of {} bytes", text.len()).into());
    }
    let event: EconomicEvent = serde_json::from_str(text)
        .map_err(|e| Checked::Detail(format!("unreadable event: {e}")))?;
    validate::check_structure(&event, false)
        .map_err(|e| Checked::Detail(format!("invalid event: {e}")))?;
    for id in [&event.provider, &event.receiver, &event.created_resource]
        .into_iter()
        .flatten()
    {
        if !schema::valid_id(id.as_str()) {
            return Err(format!("invalid id {:?}", id.as_str()).into());
        }
    }
    speaks_for(&event, author, for_others).map_err(Checked::Refused)?;
    Ok(event)
}

/// Agent binding: a member records an event only if its own agent is the provider or the
/// receiver; a device that records for others ([`records_for_others`]: an admin, or a holder
/// of the rule set's grant) records for anyone (a paper receipt, an import). The one place
/// this rule is written: admission applies it to every event, [`crate::Replica::may_record`]
/// before a write (and so the importer).
pub(crate) fn speaks_for(
    event: &EconomicEvent,
    author: &Member,
    for_others: bool,
) -> Result<(), Rejection> {
    let speaks_for_itself = event.provider.as_ref() == Some(&author.agent)
        || event.receiver.as_ref() == Some(&author.agent);
    if speaks_for_itself || for_others {
        Ok(())
    } else {
        Err(Rejection::SpeaksForOthers {
            device: author.device,
            agent: author.agent.clone(),
            provider: event.provider.clone(),
            receiver: event.receiver.clone(),
        })
    }
}

/// Whether `author` (its membership in a change's causal past) may record events, and make
/// commitments, intents and claims, between other agents, with `rules` the rule set in force
/// in that causal past: an admin always; a member if the rule set's `recordForOthers` grant
/// names its role, its agent or its device (docs/rules.md, "Recording for others"); an
/// observer never (it writes nothing). The one place this is decided: admission, the
/// replica before a write ([`crate::Replica::records_for_others`]) and the importer ask it.
pub(crate) fn records_for_others(author: &Member, rules: Option<&crate::rules::RuleSet>) -> bool {
    match author.role {
        Role::Admin => true,
        Role::Member => rules.is_some_and(|r| r.record_for_others.grants(author)),
        Role::Observer => false,
    }
}

/// What one op on an object bucket writes.
struct ObjectWrite {
    kind: ObjectKind,
    id: String,
    /// It puts the object's marker (creates it).
    marker: bool,
    /// It writes a party (`provider` or `receiver`) of a kind that has parties: the agent
    /// put, or `None` for a delete.
    party: Option<Option<String>>,
}

/// Kinds whose `provider` and `receiver` say who promises or wants what: a member makes one
/// only as one of its parties, as it records events (`SpeaksForOthers`).
fn has_parties(kind: ObjectKind) -> bool {
    matches!(
        kind,
        ObjectKind::Commitment | ObjectKind::Intent | ObjectKind::Claim
    )
}

/// Check one op on an object bucket; returns what it writes.
fn check_object_op(
    op: &automerge::legacy::Op,
    bucket: usize,
    author: &Member,
) -> Result<ObjectWrite, Checked> {
    let Key::Map(key) = &op.key else {
        return Err("an object bucket is a map".to_string().into());
    };
    if op.insert {
        return Err("an object bucket is a map".to_string().into());
    }
    let Some(parsed) = ObjectKey::parse(key) else {
        return Err(format!("{key:?} is not an object key").into());
    };
    let (kind, id) = match &parsed {
        ObjectKey::Marker(k, id) | ObjectKey::Field(k, id, _) => (*k, id.as_str()),
    };
    if !schema::valid_id(id) {
        return Err(format!("invalid id {id:?}").into());
    }
    if schema::object_bucket(kind, id) != bucket {
        return Err(format!(
            "{kind} {id} belongs in bucket {}",
            schema::bucket_key(schema::object_bucket(kind, id))
        )
        .into());
    }
    if kind == ObjectKind::RuleSet && author.role != Role::Admin {
        return Err(Checked::Refused(Rejection::RulesNotByAdmin {
            device: author.device,
        }));
    }
    authority_check(kind, id, author)?;
    let wrote = |marker: bool| ObjectWrite {
        kind,
        id: id.to_string(),
        marker,
        party: None,
    };
    let is_party = |field: &str| has_parties(kind) && matches!(field, "provider" | "receiver");
    match (&parsed, &op.action) {
        // A marker is put once and never overwritten: every creation of an object stays in
        // the document, so a stored ledger shows all of its owners.
        (ObjectKey::Marker(..), OpType::Put(ScalarValue::Str(v)))
            if v.as_str() == kind.root_key() && op.pred.is_empty() =>
        {
            Ok(wrote(true))
        }
        (ObjectKey::Marker(..), OpType::Put(ScalarValue::Str(v)))
            if v.as_str() == kind.root_key() =>
        {
            Err(format!("the marker of {kind} {id} is put again over an earlier one").into())
        }
        (ObjectKey::Marker(..), _) => {
            Err(format!("the marker of {kind} {id} is changed or deleted").into())
        }
        (ObjectKey::Field(_, _, field), OpType::Put(ScalarValue::Str(text))) => {
            if text.len() > MAX_VALUE_BYTES {
                return Err(format!("a field of {} bytes", text.len()).into());
            }
            let value: Json = serde_json::from_str(text)
                .map_err(|e| Checked::Detail(format!("field {field} is not JSON: {e}")))?;
            check_field(kind, field, &value).map_err(Checked::Detail)?;
            check_field_of_id(kind, id, field, &value).map_err(Checked::Detail)?;
            let party = is_party(field).then(|| value.as_str().map(str::to_string));
            Ok(ObjectWrite {
                party,
                ..wrote(false)
            })
        }
        (ObjectKey::Field(_, _, field), OpType::Delete) => {
            if minimal(kind).get(field.as_str()).is_some() {
                Err(format!("deletes the required field {field} of {kind} {id}").into())
            } else {
                Ok(ObjectWrite {
                    party: is_party(field).then_some(None),
                    ..wrote(false)
                })
            }
        }
        (ObjectKey::Field(_, _, field), _) => {
            Err(format!("field {field} is not a JSON string").into())
        }
    }
}

/// An op id: (counter, actor).
type OpId<'a> = (u64, &'a ActorId);

/// A value made by a version-1-era change (a nested map or list, or a new object).
#[derive(Debug)]
enum V1Node {
    /// A new object of `kind` with `id`, and the fields this change gives it.
    Object {
        kind: ObjectKind,
        id: String,
        fields: HashMap<String, V1Value>,
    },
    /// A nested map (a measure, say).
    Map(HashMap<String, V1Value>),
    /// A nested list, in list order, each element with the op id that inserted it.
    List(Vec<((u64, ActorId), V1Value)>),
}

/// A field's or element's value as a version-1-era change writes it.
#[derive(Debug, Clone)]
enum V1Value {
    Scalar(Json),
    Node((u64, ActorId)),
}

/// What a version-1-era change writes to version-1 objects, gathered op by op and checked
/// whole at the end: every value must be a valid field of its kind (as in version 2), a new
/// object must have its required fields, a value is written whole (nested maps and lists
/// only inside values this change makes), and an agent's description is written only by its
/// own devices or admins. This is how the version-1 code wrote objects (`put_json`: an
/// object made with all its fields in one change, a changed field written whole).
#[derive(Debug, Default)]
struct V1Writes {
    nodes: HashMap<(u64, ActorId), V1Node>,
    /// Fields of objects made by earlier changes, written whole by this one.
    fields: Vec<(ObjectKind, String, String, V1Value)>,
}

/// Deepest nesting of a version-1 value (a measure is 1).
const MAX_V1_DEPTH: usize = 8;

fn v1_scalar(v: &ScalarValue) -> Result<Json, Checked> {
    Ok(match v {
        ScalarValue::Str(s) => Json::String(s.to_string()),
        ScalarValue::Int(i) => Json::from(*i),
        ScalarValue::Uint(u) => Json::from(*u),
        ScalarValue::F64(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| Checked::Detail("a number that is not finite".into()))?,
        ScalarValue::Boolean(b) => Json::Bool(*b),
        ScalarValue::Null => Json::Null,
        other => return Err(format!("a value of type {other:?} is not JSON").into()),
    })
}

/// Who may write a key of object `kind` `id`, judged from the id alone (so the verdict needs
/// nothing but the change and its author's membership): an agent's keys by its own devices
/// or an admin (`NotYourAgent`); an agent relationship's keys by a device acting for its
/// subject or its object, or an admin (`NotYourRelationship`); a relationship role's keys by
/// an admin (`AdminsOnly`). An agent relationship's id must be its canonical
/// `[subject, relationship, object]`.
fn authority_check(kind: ObjectKind, id: &str, author: &Member) -> Result<(), Checked> {
    let admin = author.role == Role::Admin;
    match kind {
        ObjectKind::Agent if !admin && author.agent.as_str() != id => {
            Err(Checked::Refused(Rejection::NotYourAgent {
                device: author.device,
                agent: author.agent.clone(),
                edited: id.into(),
            }))
        }
        ObjectKind::AgentRelationshipRole if !admin => {
            Err(Checked::Refused(Rejection::AdminsOnly {
                device: author.device,
                kind,
            }))
        }
        ObjectKind::AgentRelationship => {
            let Some((subject, _, object)) = AgentRelationship::parts_of(id) else {
                return Err(format!(
                    "agent relationship id {id:?} is not the JSON array [subject, relationship, object]"
                )
                .into());
            };
            if admin || author.agent == subject || author.agent == object {
                Ok(())
            } else {
                Err(Checked::Refused(Rejection::NotYourRelationship {
                    device: author.device,
                    agent: author.agent.clone(),
                    subject,
                    object,
                }))
            }
        }
        _ => Ok(()),
    }
}

/// The fields an object's id fixes: an agent relationship's `subject`, `relationship` and
/// `object` are the parts of its id.
fn check_field_of_id(kind: ObjectKind, id: &str, field: &str, value: &Json) -> Result<(), String> {
    if kind != ObjectKind::AgentRelationship {
        return Ok(());
    }
    let Some((subject, relationship, object)) = AgentRelationship::parts_of(id) else {
        return Err(format!(
            "agent relationship id {id:?} is not [subject, relationship, object]"
        ));
    };
    let fixed = match field {
        "subject" => subject,
        "relationship" => relationship,
        "object" => object,
        _ => return Ok(()),
    };
    if value.as_str() == Some(fixed.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "agent relationship {id}: {field} is {value}, but its id says {fixed:?}"
        ))
    }
}

impl V1Writes {
    fn made(&self, obj: &(u64, ActorId)) -> bool {
        self.nodes.contains_key(obj)
    }

    /// A value for a map key: a scalar, or a nested object this op makes.
    fn value(&mut self, op: &automerge::legacy::Op, at: OpId<'_>) -> Result<V1Value, Checked> {
        match &op.action {
            OpType::Put(v) => Ok(V1Value::Scalar(v1_scalar(v)?)),
            OpType::Make(automerge::ObjType::Map) => {
                let id = (at.0, at.1.clone());
                self.nodes.insert(id.clone(), V1Node::Map(HashMap::new()));
                Ok(V1Value::Node(id))
            }
            OpType::Make(automerge::ObjType::List) => {
                let id = (at.0, at.1.clone());
                self.nodes.insert(id.clone(), V1Node::List(Vec::new()));
                Ok(V1Value::Node(id))
            }
            _ => Err("only puts of JSON values".to_string().into()),
        }
    }

    /// An op on a v1 kind map: it makes a new object (a map under its id, nothing replaced).
    fn create(
        &mut self,
        kind: ObjectKind,
        op: &automerge::legacy::Op,
        at: OpId<'_>,
        author: &Member,
    ) -> Result<(), Checked> {
        let Key::Map(id) = &op.key else {
            return Err("a kind map is a map".to_string().into());
        };
        if op.insert
            || !op.pred.is_empty()
            || !matches!(op.action, OpType::Make(automerge::ObjType::Map))
        {
            return Err(format!("replaces or deletes {kind} {id}: objects are made once").into());
        }
        if !schema::valid_id(id) {
            return Err(format!("invalid id {:?}", id.as_str()).into());
        }
        authority_check(kind, id, author)?;
        self.nodes.insert(
            (at.0, at.1.clone()),
            V1Node::Object {
                kind,
                id: id.to_string(),
                fields: HashMap::new(),
            },
        );
        Ok(())
    }

    /// An op on a field of an object made by an earlier change: written whole, or deleted
    /// if optional.
    fn field(
        &mut self,
        kind: ObjectKind,
        id: &str,
        op: &automerge::legacy::Op,
        at: OpId<'_>,
        author: &Member,
    ) -> Result<(), Checked> {
        authority_check(kind, id, author)?;
        let Key::Map(field) = &op.key else {
            return Err(format!("{kind} {id} is a map").into());
        };
        if op.insert {
            return Err(format!("{kind} {id} is a map").into());
        }
        if matches!(op.action, OpType::Delete) {
            if minimal(kind).get(field.as_str()).is_some() {
                return Err(format!("deletes the required field {field} of {kind} {id}").into());
            }
            self.fields
                .retain(|(k, i, f, _)| !(*k == kind && i == id && f == field.as_str()));
            return Ok(());
        }
        let value = self.value(op, at)?;
        self.fields
            .push((kind, id.to_string(), field.to_string(), value));
        Ok(())
    }

    /// An op on a map or list this change made (a new object's field, a nested value).
    fn nested(
        &mut self,
        obj: &(u64, ActorId),
        op: &automerge::legacy::Op,
        at: OpId<'_>,
    ) -> Result<(), Checked> {
        if !op.pred.is_empty() || matches!(op.action, OpType::Delete) {
            return Err("overwrites a value it made itself".to_string().into());
        }
        let is_list = matches!(self.nodes.get(obj), Some(V1Node::List(_)));
        if is_list != op.insert {
            return Err("a list op on a map, or a map op on a list"
                .to_string()
                .into());
        }
        let value = self.value(op, at)?;
        match (self.nodes.get_mut(obj), &op.key) {
            (Some(V1Node::Object { fields, .. } | V1Node::Map(fields)), Key::Map(k)) => {
                fields.insert(k.to_string(), value);
            }
            (Some(V1Node::List(items)), Key::Seq(elem)) => {
                let index = match elem {
                    automerge::legacy::ElementId::Head => 0,
                    automerge::legacy::ElementId::Id(after) => {
                        let after = (after.0, after.1.clone());
                        items
                            .iter()
                            .position(|(id, _)| *id == after)
                            .map(|p| p + 1)
                            .ok_or_else(|| {
                                Checked::Detail("inserts after an unknown element".into())
                            })?
                    }
                };
                items.insert(index, ((at.0, at.1.clone()), value));
            }
            _ => {
                return Err("an op that does not fit the value it edits"
                    .to_string()
                    .into())
            }
        }
        Ok(())
    }

    /// The JSON of a value.
    fn json(&self, v: &V1Value, depth: usize) -> Result<Json, Checked> {
        if depth > MAX_V1_DEPTH {
            return Err(format!("a value nested over {MAX_V1_DEPTH} levels").into());
        }
        match v {
            V1Value::Scalar(j) => Ok(j.clone()),
            V1Value::Node(id) => match self.nodes.get(id) {
                Some(V1Node::Map(fields)) => {
                    let mut m = serde_json::Map::new();
                    for (k, v) in fields {
                        m.insert(k.clone(), self.json(v, depth + 1)?);
                    }
                    Ok(Json::Object(m))
                }
                Some(V1Node::List(items)) => Ok(Json::Array(
                    items
                        .iter()
                        .map(|(_, v)| self.json(v, depth + 1))
                        .collect::<Result<_, _>>()?,
                )),
                _ => Err("an object nested in a value".to_string().into()),
            },
        }
    }

    fn check_value(
        &self,
        kind: ObjectKind,
        id: &str,
        field: &str,
        v: &V1Value,
    ) -> Result<(), Checked> {
        let value = self.json(v, 0)?;
        let len = value.to_string().len();
        if len > MAX_VALUE_BYTES {
            return Err(format!("a field of {len} bytes").into());
        }
        check_field_v1(kind, field, &value)
            .and_then(|()| check_field_of_id(kind, id, field, &value))
            .map_err(|e| Checked::Detail(format!("{kind} {id}: {e}")))
    }

    /// Check everything written, whole.
    fn check(&self) -> Result<(), Checked> {
        for (kind, id, field, v) in &self.fields {
            self.check_value(*kind, id, field, v)?;
        }
        for node in self.nodes.values() {
            let V1Node::Object { kind, id, fields } = node else {
                continue;
            };
            for (field, v) in fields {
                self.check_value(*kind, id, field, v)?;
            }
            if let Some(required) = minimal(*kind).as_object() {
                if let Some(missing) = required.keys().find(|f| !fields.contains_key(*f)) {
                    return Err(format!("{kind} {id} is made without its field {missing}").into());
                }
            }
        }
        Ok(())
    }
}

/// [`check_field`] for a value as the version-1 code wrote it: a number's spelling (an
/// integer for a float field) is not part of its value there.
fn check_field_v1(kind: ObjectKind, field: &str, value: &Json) -> Result<(), String> {
    match check_field(kind, field, value) {
        Err(_) if value.is_number() => {
            let as_float = value
                .as_f64()
                .and_then(serde_json::Number::from_f64)
                .map(Json::Number)
                .ok_or_else(|| format!("field {field}: not a number"))?;
            check_field(kind, field, &as_float)
        }
        other => other,
    }
}

/// The smallest valid JSON of each kind: its required fields.
fn minimal(kind: ObjectKind) -> Json {
    match kind {
        ObjectKind::Agent => serde_json::json!({"agentKind": "person", "name": ""}),
        ObjectKind::Unit => serde_json::json!({"label": "", "symbol": ""}),
        ObjectKind::Commitment
        | ObjectKind::Intent
        | ObjectKind::Claim
        | ObjectKind::RecipeFlow => serde_json::json!({"action": "produce"}),
        ObjectKind::AgentRelationship => {
            serde_json::json!({"subject": "", "object": "", "relationship": ""})
        }
        ObjectKind::AgentRelationshipRole => serde_json::json!({"roleLabel": ""}),
        ObjectKind::RuleSet => serde_json::json!({"name": "", "version": 0, "rules": []}),
        _ => serde_json::json!({"name": ""}),
    }
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(
    obj: Json,
    field: &str,
    value: &Json,
) -> Result<(), String> {
    let parsed: T = serde_json::from_value(obj).map_err(|e| format!("field {field}: {e}"))?;
    let back = serde_json::to_value(&parsed).map_err(|e| e.to_string())?;
    if back.get(field) == Some(value) {
        Ok(())
    } else {
        Err(format!(
            "{field} is not a field of this kind, or not in its canonical form"
        ))
    }
}

/// Whether `value` is a valid value of `field` for objects of `kind`.
pub(crate) fn check_field(kind: ObjectKind, field: &str, value: &Json) -> Result<(), String> {
    let mut obj = minimal(kind);
    if let Some(map) = obj.as_object_mut() {
        map.insert(field.to_string(), value.clone());
    }
    match kind {
        ObjectKind::Agent => round_trip::<Agent>(obj, field, value)?,
        ObjectKind::Unit => round_trip::<Unit>(obj, field, value)?,
        ObjectKind::SpatialThing => round_trip::<SpatialThing>(obj, field, value)?,
        ObjectKind::ResourceSpecification => {
            round_trip::<ResourceSpecification>(obj, field, value)?
        }
        ObjectKind::ProcessSpecification => round_trip::<ProcessSpecification>(obj, field, value)?,
        ObjectKind::Process => round_trip::<Process>(obj, field, value)?,
        ObjectKind::EconomicResource => round_trip::<ResourceDescription>(obj, field, value)?,
        ObjectKind::Commitment => round_trip::<Commitment>(obj, field, value)?,
        ObjectKind::Intent => round_trip::<Intent>(obj, field, value)?,
        ObjectKind::Plan => round_trip::<Plan>(obj, field, value)?,
        ObjectKind::Proposal => round_trip::<Proposal>(obj, field, value)?,
        ObjectKind::Agreement => round_trip::<Agreement>(obj, field, value)?,
        ObjectKind::RuleSet => round_trip::<crate::rules::RuleSet>(obj, field, value)?,
        ObjectKind::Claim => round_trip::<Claim>(obj, field, value)?,
        ObjectKind::Recipe => round_trip::<Recipe>(obj, field, value)?,
        ObjectKind::RecipeProcess => round_trip::<RecipeProcess>(obj, field, value)?,
        ObjectKind::RecipeFlow => round_trip::<RecipeFlow>(obj, field, value)?,
        ObjectKind::RecipeExchange => round_trip::<RecipeExchange>(obj, field, value)?,
        ObjectKind::AgentRelationship => round_trip::<AgentRelationship>(obj, field, value)?,
        ObjectKind::AgentRelationshipRole => {
            round_trip::<AgentRelationshipRole>(obj, field, value)?
        }
        ObjectKind::AgreementBundle => round_trip::<AgreementBundle>(obj, field, value)?,
        ObjectKind::ProposalList => round_trip::<ProposalList>(obj, field, value)?,
        ObjectKind::EconomicEvent => return Err("events are not objects".into()),
    }
    match field {
        "lat" => validate::check_coordinate("lat", value.as_f64(), 90.0).map_err(|e| e.to_string()),
        "long" => {
            validate::check_coordinate("long", value.as_f64(), 180.0).map_err(|e| e.to_string())
        }
        "resourceQuantity" | "effortQuantity" | "availableQuantity" | "minimumQuantity"
        | "hasDuration" => {
            let m: Measure = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
            validate::check_measure("quantity", &m).map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}

/// Check the genesis: its first ops set the schema version and the network, then (v2) the
/// bucket sets, and nothing else.
fn check_genesis(change: &ExpandedChange, version: u64) -> Result<(), Rejection> {
    if version < 2 {
        // Version-1 geneses were judged by the network id alone (the id is their hash).
        return Ok(());
    }
    let ops = &change.operations;
    let ok = ops.len() == 3 + 2 * (1 + schema::BUCKETS)
        && matches!((&ops[0].obj, &ops[0].key, &ops[0].action),
            (ObjectId::Root, Key::Map(k), OpType::Put(ScalarValue::Uint(2))) if k.as_str() == schema::KEY_SCHEMA)
        && matches!((&ops[1].obj, &ops[1].key, &ops[1].action),
            (ObjectId::Root, Key::Map(k), OpType::Make(automerge::ObjType::Map)) if k.as_str() == schema::KEY_NETWORK)
        && matches!((&ops[2].key, &ops[2].action),
            (Key::Map(k), OpType::Put(ScalarValue::Str(_))) if k.as_str() == "name");
    if !ok {
        return Err(refuse("the genesis is not a version-2 genesis"));
    }
    check_bucket_creation(change, &[(schema::KEY_SCHEMA, 2)]).map(|_| ())
}

/// Check that a change's ops are exactly: optional leading root puts of `leading` uint values
/// (and, in a genesis, the network map and its name), then the two bucket sets with their 256
/// buckets each. Returns each bucket's op id, whether it is an event bucket, and its index.
#[allow(clippy::type_complexity)]
fn check_bucket_creation(
    change: &ExpandedChange,
    leading: &[(&str, u64)],
) -> Result<Vec<((u64, ActorId), bool, usize)>, Rejection> {
    let start = change.start_op.get();
    let actor = &change.actor_id;
    let mut out = Vec::with_capacity(2 * schema::BUCKETS);
    let mut sets: HashMap<(u64, ActorId), bool> = HashMap::new();
    let mut network = None;
    for (i, op) in change.operations.iter().enumerate() {
        let id = (start + i as u64, actor.clone());
        let bad = || {
            refuse(format!(
                "op {i} of a bucket-making change is not part of the schema"
            ))
        };
        let Key::Map(key) = &op.key else {
            return Err(bad());
        };
        // Only the schema version may overwrite a value (a migration's).
        let overwrites_version = op.obj == ObjectId::Root && key.as_str() == schema::KEY_SCHEMA;
        if op.insert || (!op.pred.is_empty() && !overwrites_version) {
            return Err(bad());
        }
        match (&op.obj, &op.action) {
            (ObjectId::Root, OpType::Put(ScalarValue::Uint(v)))
                if leading.iter().any(|(k, x)| *k == key.as_str() && x == v) => {}
            (ObjectId::Root, OpType::Make(automerge::ObjType::Map))
                if key.as_str() == schema::KEY_NETWORK && network.is_none() =>
            {
                network = Some(id);
            }
            (ObjectId::Id(o), OpType::Put(ScalarValue::Str(_)))
                if Some((o.0, o.1.clone())) == network && key.as_str() == "name" => {}
            (ObjectId::Root, OpType::Make(automerge::ObjType::Map))
                if key.as_str() == schema::KEY_EVENT_BUCKETS
                    || key.as_str() == schema::KEY_OBJECT_BUCKETS =>
            {
                if sets
                    .values()
                    .any(|e| *e == (key.as_str() == schema::KEY_EVENT_BUCKETS))
                {
                    return Err(bad());
                }
                sets.insert(id, key.as_str() == schema::KEY_EVENT_BUCKETS);
            }
            (ObjectId::Id(o), OpType::Make(automerge::ObjType::Map)) => {
                let Some(events) = sets.get(&(o.0, o.1.clone())).copied() else {
                    return Err(bad());
                };
                let Some(index) = schema::bucket_index(key) else {
                    return Err(bad());
                };
                out.push((id, events, index));
            }
            _ => return Err(bad()),
        }
    }
    let mut seen = std::collections::HashSet::new();
    if sets.len() != 2
        || out.len() != 2 * schema::BUCKETS
        || !out.iter().all(|(_, e, i)| seen.insert((*e, *i)))
    {
        return Err(refuse(
            "a bucket-making change without exactly 2 x 256 buckets",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod planning_field_tests {
    use super::{check_field, check_field_of_id};

    /// An agent relationship's id fixes its subject, relationship and object.
    #[test]
    fn a_relationship_id_fixes_its_parts() {
        let rid = r#"["ana","volunteer","cafe"]"#;
        let k = ObjectKind::AgentRelationship;
        for (field, value) in [
            ("subject", "ana"),
            ("relationship", "volunteer"),
            ("object", "cafe"),
            ("note", "Tuesdays"),
        ] {
            assert!(
                check_field_of_id(k, rid, field, &json!(value)).is_ok(),
                "{field}"
            );
        }
        for (field, value) in [
            ("subject", "bo"),
            ("relationship", "boss"),
            ("object", "ana"),
        ] {
            assert!(
                check_field_of_id(k, rid, field, &json!(value)).is_err(),
                "{field}"
            );
        }
        assert!(check_field_of_id(k, "ana-volunteers", "note", &json!("x")).is_err());
        // Other kinds' ids fix nothing.
        assert!(check_field_of_id(ObjectKind::Agent, rid, "name", &json!("x")).is_ok());
    }
    use crate::vf::ObjectKind;
    use serde_json::json;

    /// The planning kinds are typed by the field table like every other kind: a peer's
    /// change that writes a wrong type, an unknown field or a negative quantity is refused.
    #[test]
    fn planning_kinds_are_typed_by_the_field_table() {
        let ok = [
            (ObjectKind::Claim, "triggeredBy", json!("5@0a")),
            (
                ObjectKind::Claim,
                "resourceQuantity",
                json!({"hasNumericalValue": "140", "hasUnit": "one"}),
            ),
            (ObjectKind::Commitment, "fulfilledBy", json!("x")),
            (ObjectKind::Commitment, "satisfies", json!("offer")),
            (ObjectKind::Commitment, "reciprocalClauseOf", json!("a")),
            (ObjectKind::Commitment, "independentDemandOf", json!("plan")),
            (
                ObjectKind::Intent,
                "availableQuantity",
                json!({"hasNumericalValue": "3", "hasUnit": "kg"}),
            ),
            (ObjectKind::Proposal, "reciprocal", json!(["price"])),
            (ObjectKind::RecipeFlow, "recipeInputOf", json!("rp")),
            (
                ObjectKind::RecipeProcess,
                "hasDuration",
                json!({"hasNumericalValue": "1", "hasUnit": "hour"}),
            ),
            (ObjectKind::Recipe, "recipeIncludes", json!(["rp"])),
            (ObjectKind::RecipeExchange, "name", json!("Sale")),
            (ObjectKind::AgentRelationship, "subject", json!("ana")),
            (
                ObjectKind::AgentRelationshipRole,
                "inverseRoleLabel",
                json!("has volunteer"),
            ),
            (
                ObjectKind::EconomicResource,
                "classifiedAs",
                json!(["textile:cotton"]),
            ),
            (ObjectKind::Process, "classifiedAs", json!(["repair"])),
            (ObjectKind::Process, "inScopeOf", json!("cafe")),
            (ObjectKind::Agent, "classifiedAs", json!(["repair café"])),
            (ObjectKind::Unit, "classifiedAs", json!(["mass"])),
            (
                ObjectKind::Commitment,
                "hasPointInTime",
                json!("2026-03-10"),
            ),
            (ObjectKind::Intent, "hasPointInTime", json!("2026-03-10")),
            (ObjectKind::Intent, "stage", json!("repair")),
            (ObjectKind::Intent, "state", json!("good as new")),
            (
                ObjectKind::Intent,
                "image",
                json!("https://example.org/a.jpg"),
            ),
            (
                ObjectKind::Intent,
                "imageList",
                json!(["https://example.org/b.jpg"]),
            ),
            (
                ObjectKind::RecipeProcess,
                "image",
                json!("https://example.org/c.jpg"),
            ),
            (ObjectKind::Proposal, "purpose", json!("offer")),
            (ObjectKind::Proposal, "purpose", json!("request")),
            (ObjectKind::Proposal, "listedIn", json!(["week-10"])),
            (ObjectKind::ProposalList, "proposedTo", json!(["ana"])),
            (ObjectKind::ProposalList, "created", json!("2026-03-02")),
            (ObjectKind::Agreement, "bundledIn", json!("order-7")),
            (ObjectKind::AgreementBundle, "name", json!("Order 7")),
        ];
        for (kind, field, value) in ok {
            let r = check_field(kind, field, &value);
            if field == "fulfilledBy" {
                // Fulfilment is derived from events, never stored.
                assert!(r.is_err(), "{kind} {field} must not be a stored field");
            } else {
                assert!(r.is_ok(), "{kind} {field} = {value}: {r:?}");
            }
        }
        let bad = [
            (
                ObjectKind::Claim,
                "resourceQuantity",
                json!({"hasNumericalValue": "-1", "hasUnit": "one"}),
            ),
            (ObjectKind::Claim, "finished", json!("yes")),
            (
                ObjectKind::RecipeProcess,
                "hasDuration",
                json!({"hasNumericalValue": "-2", "hasUnit": "hour"}),
            ),
            (
                ObjectKind::Intent,
                "minimumQuantity",
                json!({"hasNumericalValue": "1e400", "hasUnit": "kg"}),
            ),
            (ObjectKind::AgentRelationship, "subject", json!(7)),
            (ObjectKind::RecipeFlow, "action", json!("steal")),
            (ObjectKind::Recipe, "sideEffect", json!("x")),
            (ObjectKind::Proposal, "purpose", json!("swap")),
            (ObjectKind::Proposal, "listedIn", json!("week-10")),
            (ObjectKind::Agreement, "bundledIn", json!(["a", "b"])),
            (ObjectKind::AgreementBundle, "bundles", json!(["a"])),
            (ObjectKind::ProposalList, "lists", json!(["p"])),
            (
                ObjectKind::Intent,
                "imageList",
                json!("https://example.org/b.jpg"),
            ),
        ];
        for (kind, field, value) in bad {
            assert!(
                check_field(kind, field, &value).is_err(),
                "{kind} {field} = {value} was accepted"
            );
        }
    }
}
