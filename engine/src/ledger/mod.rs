//! The ledger: one Automerge document per network holding the whole ValueFlows ledger, with
//! validation on the way in and cached, deterministic views on the way out.
//!
//! Pure: no I/O, no clock, no randomness. Storage and networking hand it bytes and changes and
//! take bytes and changes from it. The document schema is in docs/data-model.md.

mod doc;
mod validate;

use std::collections::{HashMap, HashSet};

use automerge::transaction::Transactable;
use automerge::{
    ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, PatchAction, ReadDoc, ScalarValue,
    Value,
};
use serde::Serialize;
use tracing::warn;

use crate::error::{Error, Result};
use crate::vf::action::CreateResource;
use crate::vf::{
    Agent, Agreement, Commitment, EconomicEvent, EconomicResource, Id, Intent, Measure, NewEvent,
    ObjectKind, Plan, Process, ProcessSpecification, Proposal, ResourceDescription,
    ResourceSpecification, SpatialThing, Unit, VfObject,
};
use crate::views::{Causality, Conflict, Entry, OrderKey, Trace, Views};

/// The version of the document schema this build writes and reads (see docs/data-model.md).
pub const SCHEMA_VERSION: u64 = 1;

const KEY_SCHEMA: &str = "schemaVersion";
const KEY_NETWORK: &str = "network";

/// Any object of a ledger, as returned by [`Ledger::object`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
#[allow(missing_docs)]
pub enum Object {
    Agent(Agent),
    Unit(Unit),
    SpatialThing(SpatialThing),
    ResourceSpecification(ResourceSpecification),
    ProcessSpecification(ProcessSpecification),
    Process(Process),
    EconomicResource(EconomicResource),
    EconomicEvent(EconomicEvent),
    Commitment(Commitment),
    Intent(Intent),
    Plan(Plan),
    Proposal(Proposal),
    Agreement(Agreement),
}

/// Which events [`Ledger::events`] returns. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this action.
    pub action: Option<crate::Action>,
    /// Only events this agent provided or received.
    pub agent: Option<Id>,
    /// Only events on this resource (either side).
    pub resource: Option<Id>,
    /// Only inputs and outputs of this process.
    pub process: Option<Id>,
    /// Also events that were corrected (they no longer count).
    pub include_corrected: bool,
}

/// Which resources [`Ledger::inventory`] returns. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct ResourceFilter {
    /// Only resources of this specification.
    pub conforms_to: Option<Id>,
    /// Only resources this agent is primary accountable for.
    pub primary_accountable: Option<Id>,
    /// Only resources this agent holds.
    pub custodian: Option<Id>,
    /// Only resources at this location.
    pub location: Option<Id>,
    /// Also resources whose accounting and onhand quantities are both zero.
    pub include_empty: bool,
    /// Also resources removed by corrections.
    pub include_removed: bool,
}

/// The derived views of a ledger in one serializable value: every replica with the same
/// changes produces byte-identical JSON of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewSnapshot {
    /// Every resource, removed and empty ones included, by id.
    pub resources: Vec<EconomicResource>,
    /// Every conflict, in order.
    pub conflicts: Vec<Conflict>,
}

/// A replica of one network's ledger.
pub struct Ledger {
    doc: Automerge,
    events: ObjId,
    maps: HashMap<ObjectKind, ObjId>,
    views: Views,
    /// Length of the `events` list, kept here because asking Automerge walks the whole list.
    events_len: usize,
    /// Objects known to exist (objects are never deleted by Reflow; cleared whenever changes
    /// from elsewhere arrive, in case a peer deleted one).
    known: std::cell::RefCell<HashSet<(ObjectKind, Id)>>,
    id_prefix: String,
    next_id: u64,
    /// The heads right after this replica's last `record_events` commit and the first op
    /// counter of the next change made on top of them: while the heads are unchanged, a new
    /// event's op id (its order key) is computed instead of read back from the document.
    next_op: Option<(Vec<ChangeHash>, u64)>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("actor", self.doc.get_actor())
            .field("events", &self.views.len())
            .finish_non_exhaustive()
    }
}

/// Change history as the views need it, answered from the Automerge change graph.
struct DocCausality<'a>(&'a Automerge);

impl DocCausality<'_> {
    fn hash(&self, key: &OrderKey) -> Option<ChangeHash> {
        self.0.hash_for_opid(&automerge::ObjId::Id(
            key.counter,
            key.actor.clone(),
            usize::MAX,
        ))
    }
}

impl Causality for DocCausality<'_> {
    fn in_causal_past(&self, event: &OrderKey, candidates: &[OrderKey]) -> Vec<bool> {
        let Some(start) = self.hash(event) else {
            return vec![false; candidates.len()];
        };
        let wanted: Vec<Option<ChangeHash>> = candidates.iter().map(|c| self.hash(c)).collect();
        let floor = candidates.iter().map(|c| c.counter).min().unwrap_or(0);
        let mut seen: HashSet<ChangeHash> = HashSet::new();
        let mut stack = vec![start];
        while let Some(h) = stack.pop() {
            if !seen.insert(h) {
                continue;
            }
            let Some(meta) = self.0.get_change_meta_by_hash(&h) else {
                continue;
            };
            // Every ancestor of a change has smaller op counters than the change's first op:
            // below the oldest candidate there is nothing left to find.
            if meta.start_op > floor {
                stack.extend(meta.deps.iter().copied());
            }
        }
        wanted
            .into_iter()
            .map(|w| w.is_some_and(|h| seen.contains(&h)))
            .collect()
    }
}

fn json_err(what: &'static str) -> impl FnOnce(serde_json::Error) -> Error {
    move |source| Error::InvalidJson { what, source }
}

impl Ledger {
    /// Create a new network ledger (its genesis change). Every other replica of this network
    /// must start from this document ([`Ledger::fork`] or [`Ledger::load`]), never from a
    /// second `new_network`: two independently created ledgers cannot be merged.
    pub fn new_network(network_name: &str, actor: ActorId) -> Result<Ledger> {
        Ledger::new_network_with(network_name, actor, None)
    }

    /// [`Ledger::new_network`] whose genesis change carries `message` (the identity layer's
    /// genesis record).
    pub(crate) fn new_network_with(
        network_name: &str,
        actor: ActorId,
        message: Option<String>,
    ) -> Result<Ledger> {
        let mut doc = Automerge::new().with_actor(actor);
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, KEY_SCHEMA, SCHEMA_VERSION)?;
        let net = tx.put_object(automerge::ROOT, KEY_NETWORK, ObjType::Map)?;
        tx.put(&net, "name", network_name)?;
        tx.put_object(
            automerge::ROOT,
            ObjectKind::EconomicEvent.root_key(),
            ObjType::List,
        )?;
        for kind in ObjectKind::MAPS {
            tx.put_object(automerge::ROOT, kind.root_key(), ObjType::Map)?;
        }
        match message {
            Some(m) => {
                tx.commit_with(automerge::transaction::CommitOptions::default().with_message(m))
            }
            None => tx.commit(),
        };
        Ledger::from_doc(doc)
    }

    /// Open a ledger from bytes written by [`Ledger::save`] (or a concatenation of saved
    /// changes). `actor` must be unique to this session of this device.
    pub fn load(bytes: &[u8], actor: ActorId) -> Result<Ledger> {
        let doc = Automerge::load(bytes)
            .map_err(|e| Error::NotALedger(format!("not an Automerge document: {e}")))?
            .with_actor(actor);
        Ledger::from_doc(doc)
    }

    /// A new replica of this ledger with the same history, for another device or session.
    pub fn fork(&self, actor: ActorId) -> Ledger {
        Ledger {
            doc: self.doc.fork().with_actor(actor.clone()),
            events: self.events.clone(),
            maps: self.maps.clone(),
            views: self.views.clone(),
            events_len: self.events_len,
            known: Default::default(),
            id_prefix: prefix_for(&actor),
            next_id: 1,
            next_op: None,
        }
    }

    fn from_doc(doc: Automerge) -> Result<Ledger> {
        let version = match doc.get(automerge::ROOT, KEY_SCHEMA)? {
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Uint(v) => *v,
                ScalarValue::Int(v) if *v >= 0 => *v as u64,
                _ => return Err(Error::NotALedger("schemaVersion is not a number".into())),
            },
            _ => return Err(Error::NotALedger("no schemaVersion at the root".into())),
        };
        if version > SCHEMA_VERSION {
            return Err(Error::UnsupportedSchemaVersion {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let obj = |key: &str, typ: ObjType| -> Result<ObjId> {
            match doc.get(automerge::ROOT, key)? {
                Some((Value::Object(t), id)) if t == typ => Ok(id),
                _ => Err(Error::NotALedger(format!("no `{key}` {typ:?} at the root"))),
            }
        };
        let events = obj(ObjectKind::EconomicEvent.root_key(), ObjType::List)?;
        let mut maps = HashMap::new();
        for kind in ObjectKind::MAPS {
            maps.insert(kind, obj(kind.root_key(), ObjType::Map)?);
        }
        let actor = doc.get_actor().clone();
        let mut ledger = Ledger {
            doc,
            events,
            maps,
            views: Views::default(),
            events_len: 0,
            known: Default::default(),
            id_prefix: prefix_for(&actor),
            next_id: 1,
            next_op: None,
        };
        ledger.rebuild_views();
        Ok(ledger)
    }

    /// Read every event from the document and fold the views from scratch.
    fn rebuild_views(&mut self) {
        let mut views = Views::default();
        let mut entries = Vec::new();
        let mut len = 0;
        for item in self.doc.list_range(&self.events, ..) {
            len += 1;
            match read_event(&item.value.clone().into_value(), &item.id()) {
                Ok(entry) => entries.push(entry),
                Err((key, reason)) => {
                    if let Some(key) = key {
                        views.add_invalid(key, reason);
                    }
                }
            }
        }
        views.add_events(entries, &DocCausality(&self.doc));
        self.views = views;
        self.events_len = len;
    }

    /// Serialize the whole ledger (compacted Automerge format).
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// The ledger's current heads (the hashes of the newest changes).
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// This replica's Automerge actor id.
    pub fn actor(&self) -> &ActorId {
        self.doc.get_actor()
    }

    /// The network's name.
    pub fn network_name(&self) -> String {
        self.doc
            .get(automerge::ROOT, KEY_NETWORK)
            .ok()
            .flatten()
            .and_then(|(_, net)| self.doc.get(&net, "name").ok().flatten())
            .and_then(|(v, _)| v.into_string().ok())
            .unwrap_or_default()
    }

    /// The changes this ledger has that are not in the history of `heads`.
    pub fn changes_since(&self, heads: &[ChangeHash]) -> Vec<Change> {
        self.doc.get_changes(heads)
    }

    /// The last change this replica made itself, if any.
    pub(crate) fn last_local_change(&self) -> Option<Change> {
        self.doc.get_last_local_change()
    }

    /// The underlying document (read-only), for the identity layer's change metadata.
    pub(crate) fn doc(&self) -> &Automerge {
        &self.doc
    }

    /// Commit a change whose message is `message` and whose one operation writes `record` at
    /// the root key `key` (a readable copy of the record the message carries).
    pub(crate) fn commit_record(&mut self, key: &str, record: &str, message: String) -> Result<()> {
        let mut tx = self.doc.transaction();
        tx.put(automerge::ROOT, key, record)?;
        tx.commit_with(automerge::transaction::CommitOptions::default().with_message(message));
        Ok(())
    }

    /// The change that recorded an event.
    pub fn event_change(&self, id: &Id) -> Option<ChangeHash> {
        let key = OrderKey::parse(id)?;
        DocCausality(&self.doc).hash(&key)
    }

    /// Whether the ledger holds this change.
    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        self.doc.get_change_meta_by_hash(hash).is_some()
    }

    /// The hashes of every change in the ledger.
    pub(crate) fn change_hashes(&self) -> Vec<ChangeHash> {
        self.doc
            .get_changes_meta(&[])
            .into_iter()
            .map(|m| m.hash)
            .collect()
    }

    /// Merge another replica's changes into this one; views update incrementally.
    pub fn merge(&mut self, other: &mut Ledger) -> Result<()> {
        let before = self.doc.get_heads();
        self.doc.merge(&mut other.doc)?;
        self.ingest_since(&before);
        Ok(())
    }

    /// Apply changes received from elsewhere; views update incrementally.
    ///
    /// The views learn what arrived either from the changes' own ops (when they are few next
    /// to the document: a live change from a peer costs its own size, not the document's) or
    /// from Automerge's diff between the heads before and after (an initial load, or when
    /// Automerge held some changes back waiting for their dependencies, or some were known
    /// already). Both give the same views; a test checks it.
    pub fn apply_changes(&mut self, changes: Vec<Change>) -> Result<()> {
        let before = self.doc.get_heads();
        let ops: usize = changes.iter().map(Change::len).sum();
        let decoded = (ops <= SMALL_DELTA_OPS.max(self.events_len / 4)).then(|| {
            let mut seen = HashSet::new();
            changes
                .iter()
                .filter(|c| seen.insert(c.hash()))
                .map(Change::decode)
                .collect::<Vec<_>>()
        });
        let known_before = self.doc.stats().num_changes;
        let queue_was_empty = self.doc.get_missing_deps(&[]).is_empty();
        self.doc.apply_changes(changes)?;
        if let Some(decoded) = decoded {
            let added = self.doc.stats().num_changes - known_before;
            // Exactly these changes were added (nothing was known already, nothing waits):
            // their ops are the whole delta.
            if queue_was_empty
                && added == decoded.len() as u64
                && self.doc.get_missing_deps(&[]).is_empty()
            {
                self.ingest_changes(&decoded);
                return Ok(());
            }
        }
        self.ingest_since(&before);
        Ok(())
    }

    /// Fold the events inserted by `changes` (all newly applied) into the views, reading
    /// the changes' ops instead of diffing the document.
    fn ingest_changes(&mut self, changes: &[automerge::ExpandedChange]) {
        self.known.get_mut().clear();
        let automerge::ObjId::Id(list_counter, list_actor, _) = &self.events else {
            self.rebuild_views();
            return;
        };
        let mut new = Vec::new();
        for change in changes {
            for (i, op) in change.operations.iter().enumerate() {
                let automerge::legacy::ObjectId::Id(obj) = &op.obj else {
                    continue;
                };
                if obj.0 != *list_counter || obj.1 != *list_actor {
                    continue;
                }
                if !op.insert {
                    // Honest replicas only ever append events; anything else (an event
                    // rewritten or deleted) is folded as a fresh load would fold it.
                    warn!("the events list was edited in place; rebuilding views");
                    self.rebuild_views();
                    return;
                }
                self.events_len += 1;
                let key = OrderKey {
                    counter: change.start_op.get() + i as u64,
                    actor: change.actor_id.clone(),
                };
                let value = match &op.action {
                    automerge::legacy::OpType::Put(v) => {
                        Value::Scalar(std::borrow::Cow::Borrowed(v))
                    }
                    automerge::legacy::OpType::Make(t) => Value::Object(*t),
                    _ => {
                        warn!("the events list was edited in place; rebuilding views");
                        self.rebuild_views();
                        return;
                    }
                };
                match event_at(key, &value) {
                    Ok(entry) => new.push(entry),
                    Err((key, reason)) => {
                        warn!(event = %key.to_id(), %reason, "rejected an event from a peer");
                        self.views.add_invalid(key, reason);
                    }
                }
            }
        }
        self.views.add_events(new, &DocCausality(&self.doc));
    }

    /// Fold the events that arrived since `before` into the views.
    fn ingest_since(&mut self, before: &[ChangeHash]) {
        self.known.get_mut().clear();
        let after = self.doc.get_heads();
        if after == before {
            return;
        }
        let patches = self.doc.diff(before, &after);
        let mut new = Vec::new();
        let mut tampered = false;
        for patch in patches {
            if patch.obj != self.events {
                continue;
            }
            match patch.action {
                PatchAction::Insert { values, .. } => {
                    self.events_len += values.len();
                    for (value, id, _) in values.iter() {
                        match read_event(value, id) {
                            Ok(entry) => new.push(entry),
                            Err((Some(key), reason)) => {
                                warn!(event = %key.to_id(), %reason, "rejected an event from a peer");
                                self.views.add_invalid(key, reason);
                            }
                            Err((None, _)) => tampered = true,
                        }
                    }
                }
                _ => tampered = true,
            }
        }
        if tampered {
            // Honest replicas only ever append events. Anything else (an event rewritten or
            // deleted) is folded exactly as a fresh load of the document would fold it.
            warn!("the events list was edited in place; rebuilding views");
            self.rebuild_views();
            return;
        }
        self.views.add_events(new, &DocCausality(&self.doc));
    }

    fn map(&self, kind: ObjectKind) -> &ObjId {
        // Every map kind is resolved when the ledger is opened.
        &self.maps[&kind]
    }

    fn object_id(&self, kind: ObjectKind, id: &Id) -> Option<ObjId> {
        if kind == ObjectKind::EconomicEvent {
            return None;
        }
        match self.doc.get(self.map(kind), id.as_str()) {
            Ok(Some((Value::Object(ObjType::Map), obj))) => Some(obj),
            _ => None,
        }
    }

    /// Whether an object of `kind` with `id` exists.
    pub fn exists(&self, kind: ObjectKind, id: &Id) -> bool {
        match kind {
            ObjectKind::EconomicEvent => {
                OrderKey::parse(id).is_some_and(|k| self.views.entry(&k).is_some())
            }
            ObjectKind::EconomicResource => {
                self.views.has_resource(id) || self.object_id(kind, id).is_some()
            }
            _ => {
                let key = (kind, id.clone());
                if self.known.borrow().contains(&key) {
                    return true;
                }
                let found = self.object_id(kind, id).is_some();
                if found {
                    self.known.borrow_mut().insert(key);
                }
                found
            }
        }
    }

    fn new_id(&mut self, kind: ObjectKind) -> Id {
        let prefix = match kind {
            ObjectKind::Agent => "agent",
            ObjectKind::Unit => "unit",
            ObjectKind::SpatialThing => "place",
            ObjectKind::ResourceSpecification => "rspec",
            ObjectKind::ProcessSpecification => "pspec",
            ObjectKind::Process => "process",
            ObjectKind::EconomicResource => "res",
            ObjectKind::EconomicEvent => "event",
            ObjectKind::Commitment => "commit",
            ObjectKind::Intent => "intent",
            ObjectKind::Plan => "plan",
            ObjectKind::Proposal => "proposal",
            ObjectKind::Agreement => "agreement",
        };
        loop {
            let id = Id(format!("{prefix}-{}-{}", self.id_prefix, self.next_id));
            self.next_id += 1;
            if !self.exists(kind, &id) {
                return id;
            }
        }
    }

    fn check_refs(&self, refs: Vec<(ObjectKind, &Id)>, field: &'static str) -> Result<()> {
        for (kind, id) in refs {
            if !self.exists(kind, id) {
                return Err(Error::UnknownReference {
                    field,
                    kind,
                    id: id.clone(),
                });
            }
        }
        Ok(())
    }

    fn check_object<T: VfObject>(&self, obj: &T) -> Result<()> {
        self.check_refs(obj.references(), "reference")?;
        let json = serde_json::to_value(obj).map_err(json_err("object"))?;
        let Some(fields) = json.as_object() else {
            return Ok(());
        };
        for (field, limit) in [("lat", 90.0), ("long", 180.0)] {
            match fields.get(field) {
                // serde_json writes NaN and infinities as null; a None is left out entirely.
                Some(serde_json::Value::Null) => return Err(Error::InvalidNumber {
                    field,
                    value: "NaN or infinite".into(),
                    hint:
                        "coordinates are finite degrees: latitude within ±90, longitude within ±180",
                }),
                v => validate::check_coordinate(field, v.and_then(|v| v.as_f64()), limit)?,
            }
        }
        // Commitments and intents carry measures: the same limits as an event's.
        for field in ["resourceQuantity", "effortQuantity"] {
            if let Some(v) = fields.get(field) {
                let m: Measure = serde_json::from_value(v.clone()).map_err(json_err("measure"))?;
                validate::check_measure(field, &m)?;
            }
        }
        Ok(())
    }

    /// Create an object (an [`Agent`], [`Unit`], [`SpatialThing`], [`ResourceSpecification`],
    /// [`ProcessSpecification`], [`Process`], [`Commitment`], [`Intent`], [`Plan`],
    /// [`Proposal`] or [`Agreement`]). An empty id gets a generated one. Returns the id.
    ///
    /// Every id the object refers to must exist; the id must be new.
    pub fn create<T: VfObject>(&mut self, mut obj: T) -> Result<Id> {
        if T::KIND == ObjectKind::EconomicResource {
            return Err(Error::ResourceNeedsEvent);
        }
        if obj.id().as_str().is_empty() {
            let id = self.new_id(T::KIND);
            obj.set_id(id);
        } else if self.exists(T::KIND, obj.id()) {
            return Err(Error::DuplicateId {
                kind: T::KIND,
                id: obj.id().clone(),
            });
        }
        self.check_object(&obj)?;
        let json = serde_json::to_value(&obj).map_err(json_err("object"))?;
        let id = obj.id().clone();
        let map = self.map(T::KIND).clone();
        let mut tx = self.doc.transaction();
        doc::put_json(&mut tx, &map, id.as_str(), &json)?;
        tx.commit();
        Ok(id)
    }

    /// Change an object's descriptive fields. Each changed field is written on its own, so
    /// concurrent edits of different fields on different replicas all survive, and the same
    /// field resolves by Automerge's deterministic last-writer-wins.
    pub fn update<T: VfObject>(&mut self, id: &Id, change: impl FnOnce(&mut T)) -> Result<()> {
        let mut obj: T = self.get(id).ok_or_else(|| Error::NotFound {
            kind: T::KIND,
            id: id.clone(),
        })?;
        let before = serde_json::to_value(&obj).map_err(json_err("object"))?;
        change(&mut obj);
        obj.set_id(id.clone());
        self.check_object(&obj)?;
        let after = serde_json::to_value(&obj).map_err(json_err("object"))?;
        let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else {
            return Ok(());
        };
        let Some(target) = self.object_id(T::KIND, id) else {
            return Err(Error::NotFound {
                kind: T::KIND,
                id: id.clone(),
            });
        };
        let mut tx = self.doc.transaction();
        for (k, v) in after {
            if before.get(k) != Some(v) {
                doc::put_json(&mut tx, &target, k, v)?;
            }
        }
        for k in before.keys() {
            if !after.contains_key(k) {
                tx.delete(&target, k.as_str())?;
            }
        }
        tx.commit();
        Ok(())
    }

    /// Get an object of type `T` by id.
    pub fn get<T: VfObject>(&self, id: &Id) -> Option<T> {
        let obj = self.object_id(T::KIND, id)?;
        let json = doc::read_json(&self.doc, &obj);
        let mut value: T = serde_json::from_value(json).ok()?;
        value.set_id(id.clone());
        Some(value)
    }

    /// Every object of type `T`, sorted by id.
    pub fn list<T: VfObject>(&self) -> Vec<T> {
        let mut out = Vec::new();
        for item in self.doc.map_range(self.map(T::KIND), ..) {
            if let Some(v) = self.get::<T>(&Id(item.key.to_string())) {
                out.push(v);
            }
        }
        out
    }

    /// Any object by id, whatever its kind.
    pub fn object(&self, id: &Id) -> Option<Object> {
        if let Some(e) = self.event(id) {
            return Some(Object::EconomicEvent(e));
        }
        if let Some(r) = self.resource(id) {
            return Some(Object::EconomicResource(r));
        }
        macro_rules! try_kind {
            ($($ty:ident),*) => {$(
                if let Some(v) = self.get::<$ty>(id) {
                    return Some(Object::$ty(v));
                }
            )*};
        }
        try_kind!(
            Agent,
            Unit,
            SpatialThing,
            ResourceSpecification,
            ProcessSpecification,
            Process,
            Commitment,
            Intent,
            Plan,
            Proposal,
            Agreement
        );
        None
    }

    /// Record one economic event in its own change. Returns the event's id.
    ///
    /// The event is validated first (see [`Error`] for what is checked); on error nothing is
    /// written.
    pub fn record_event(&mut self, event: impl Into<NewEvent>) -> Result<Id> {
        let mut ids = self.record_events(vec![event.into()])?;
        Ok(ids.remove(0))
    }

    /// Record several events in one change, atomically: all are validated (later ones may use
    /// resources created by earlier ones) before any is written.
    pub fn record_events(&mut self, events: Vec<NewEvent>) -> Result<Vec<Id>> {
        // Validate everything and settle the new resources' ids before writing anything.
        let mut batch_units: HashMap<Id, Id> = HashMap::new();
        let mut prepared: Vec<(EconomicEvent, Option<ResourceDescription>)> = Vec::new();
        let mut batch_corrects: HashSet<Id> = HashSet::new();
        for new in events {
            let (event, resource) = self.prepare(new, &mut batch_units)?;
            if let Some(target) = &event.corrects {
                if !batch_corrects.insert(target.clone()) {
                    return Err(Error::FieldNotAllowed {
                        action: event.action,
                        field: "corrects",
                        hint: "an earlier event of this batch already corrects that event: correct it once",
                    });
                }
            }
            prepared.push((event, resource));
        }

        let resources_map = self.map(ObjectKind::EconomicResource).clone();
        let events_obj = self.events.clone();
        // The first op counter of this change, if known without asking the document: the
        // change Automerge starts on unchanged heads starts where our last one ended.
        let mut start_op = match self.next_op.take() {
            Some((heads, op)) if heads == self.doc.get_heads() => Some(op),
            _ => None,
        };
        let actor = self.doc.get_actor().clone();
        let mut tx = self.doc.transaction();
        let mut entries = Vec::with_capacity(prepared.len());
        let start = self.events_len;
        for (index, (mut event, resource)) in (start..).zip(prepared) {
            if let Some(r) = &resource {
                let json = serde_json::to_value(r).map_err(json_err("resource"))?;
                doc::put_json(&mut tx, &resources_map, r.id.as_str(), &json)?;
            }
            let text = serde_json::to_string(&event).map_err(json_err("event"))?;
            // A list element's id is the id of the op that inserted it: start op + ops so far.
            let before = tx.pending_ops() as u64;
            tx.insert(&events_obj, index, text.as_str())?;
            let counter = match start_op {
                Some(op) => {
                    debug_assert_eq!(
                        read_back(&tx, &events_obj, index),
                        Some((op + before, actor.clone())),
                        "computed event op id differs from Automerge's"
                    );
                    op + before
                }
                None => {
                    let Some((counter, written_by)) = read_back(&tx, &events_obj, index) else {
                        return Err(Error::NotALedger(
                            "the event just written cannot be read back".into(),
                        ));
                    };
                    debug_assert_eq!(written_by, actor);
                    start_op = Some(counter - before);
                    counter
                }
            };
            let key = OrderKey {
                counter,
                actor: actor.clone(),
            };
            event.id = key.to_id();
            entries.push(Entry { key, event });
        }
        let ops = tx.pending_ops() as u64;
        tx.commit();
        if let Some(op) = start_op {
            self.next_op = Some((self.doc.get_heads(), op + ops));
        }
        self.events_len += entries.len();
        let ids = entries.iter().map(|e| e.event.id.clone()).collect();
        self.views.add_events(entries, &DocCausality(&self.doc));
        Ok(ids)
    }

    /// Validate one event of a batch and fill in what the ledger sets.
    fn prepare(
        &mut self,
        new: NewEvent,
        batch_units: &mut HashMap<Id, Id>,
    ) -> Result<(EconomicEvent, Option<ResourceDescription>)> {
        let NewEvent {
            mut event,
            new_inventoried_resource,
        } = new;
        event.created_resource = None;
        let creates = new_inventoried_resource.is_some();
        validate::check_structure(&event, creates)?;
        let a = event.action;

        let mut resource = new_inventoried_resource;
        if let Some(r) = resource.as_mut() {
            if r.id.as_str().is_empty() {
                r.id = self.new_id(ObjectKind::EconomicResource);
            } else if self.exists(ObjectKind::EconomicResource, &r.id)
                || batch_units.contains_key(&r.id)
            {
                return Err(Error::DuplicateId {
                    kind: ObjectKind::EconomicResource,
                    id: r.id.clone(),
                });
            }
            self.check_refs(r.references(), "newInventoriedResource")?;
            match a.effects().create_resource {
                CreateResource::Optional => event.resource_inventoried_as = Some(r.id.clone()),
                CreateResource::OptionalTo => event.to_resource_inventoried_as = Some(r.id.clone()),
                CreateResource::NotApplicable => {}
            }
            event.created_resource = Some(r.id.clone());
        }

        let refs: [(&'static str, ObjectKind, &Option<Id>); 8] = [
            ("provider", ObjectKind::Agent, &event.provider),
            ("receiver", ObjectKind::Agent, &event.receiver),
            (
                "resourceConformsTo",
                ObjectKind::ResourceSpecification,
                &event.resource_conforms_to,
            ),
            ("inputOf", ObjectKind::Process, &event.input_of),
            ("outputOf", ObjectKind::Process, &event.output_of),
            ("atLocation", ObjectKind::SpatialThing, &event.at_location),
            ("toLocation", ObjectKind::SpatialThing, &event.to_location),
            (
                "realizationOf",
                ObjectKind::Commitment,
                &event.realization_of,
            ),
        ];
        for (field, kind, id) in refs {
            if let Some(id) = id {
                self.check_refs(vec![(kind, id)], field)?;
            }
        }
        for (field, m) in [
            ("resourceQuantity", &event.resource_quantity),
            ("effortQuantity", &event.effort_quantity),
        ] {
            if let Some(m) = m {
                self.check_refs(vec![(ObjectKind::Unit, &m.has_unit)], field)?;
            }
        }

        // Resources must exist (or be created earlier in this batch) and be counted in the
        // event's unit.
        let created = event.created_resource.clone();
        for (field, rid) in [
            (
                "resourceInventoriedAs",
                event.resource_inventoried_as.clone(),
            ),
            (
                "toResourceInventoriedAs",
                event.to_resource_inventoried_as.clone(),
            ),
        ] {
            let Some(rid) = rid else { continue };
            if created.as_ref() == Some(&rid) {
                continue;
            }
            let unit = match batch_units.get(&rid) {
                Some(u) => Some(u.clone()),
                None if self.exists(ObjectKind::EconomicResource, &rid) => {
                    self.views.resource_unit(&rid).cloned()
                }
                None => {
                    return Err(Error::UnknownReference {
                        field,
                        kind: ObjectKind::EconomicResource,
                        id: rid,
                    })
                }
            };
            if let (Some(expected), Some(m)) = (unit, &event.resource_quantity) {
                if (field == "resourceInventoriedAs" || a.has_to_resource())
                    && m.has_unit != expected
                {
                    return Err(Error::UnitMismatch {
                        field: "resourceQuantity",
                        resource: rid,
                        expected,
                        given: m.has_unit.clone(),
                    });
                }
            }
        }
        self.check_whole_handover(&event, batch_units)?;
        if let (Some(rid), Some(effort)) = (&event.resource_inventoried_as, &event.effort_quantity)
        {
            if let Some(unit) = self
                .get::<ResourceDescription>(rid)
                .and_then(|r| r.unit_of_effort)
            {
                if unit != effort.has_unit {
                    return Err(Error::UnitMismatch {
                        field: "effortQuantity",
                        resource: rid.clone(),
                        expected: unit,
                        given: effort.has_unit.clone(),
                    });
                }
            }
        }

        if let Some(target) = &event.corrects {
            let key = OrderKey::parse(target).filter(|k| self.views.entry(k).is_some());
            let Some(key) = key else {
                for kind in ObjectKind::MAPS {
                    if self.exists(kind, target) {
                        return Err(Error::CorrectsNonEvent {
                            id: target.clone(),
                            kind,
                        });
                    }
                }
                return Err(Error::UnknownReference {
                    field: "corrects",
                    kind: ObjectKind::EconomicEvent,
                    id: target.clone(),
                });
            };
            if let Some(by) = self.views.corrected_by(&key) {
                return Err(Error::AlreadyCorrected {
                    event: target.clone(),
                    by: by.to_id(),
                });
            }
        }

        if let (Some(r), Some(m)) = (&created, &event.resource_quantity) {
            batch_units.insert(r.clone(), m.has_unit.clone());
        }
        Ok((event, resource))
    }

    /// A transfer, move or custody handover without a to-resource hands over the resource
    /// itself (a lent book, a bicycle left for repair): VF's pattern for unique items. Only
    /// the whole of it can go that way; part of a resource goes into another resource.
    fn check_whole_handover(&self, event: &EconomicEvent, batch: &HashMap<Id, Id>) -> Result<()> {
        let a = event.action;
        if !a.has_to_resource() || a == crate::Action::Copy {
            return Ok(());
        }
        // Naming the resource itself as the to-resource is the same whole-resource handover.
        if event.to_resource_inventoried_as.is_some()
            && event.to_resource_inventoried_as != event.resource_inventoried_as
        {
            return Ok(());
        }
        let (Some(rid), Some(q)) = (&event.resource_inventoried_as, &event.resource_quantity)
        else {
            return Ok(());
        };
        if batch.contains_key(rid) {
            return Ok(());
        }
        let Some(r) = self.resource(rid) else {
            return Ok(());
        };
        let fx = a.effects();
        let whole = if fx.onhand == crate::vf::action::QuantityEffect::DecrementIncrement {
            r.onhand_quantity.has_numerical_value
        } else {
            r.accounting_quantity.has_numerical_value
        };
        if q.has_numerical_value != whole {
            return Err(Error::MissingField {
                action: a,
                field: "toResourceInventoriedAs",
                hint: "only a whole resource can be handed over without a to-resource: name the receiving resource or create one (newInventoriedResource)",
            });
        }
        Ok(())
    }

    /// An economic event by id.
    pub fn event(&self, id: &Id) -> Option<EconomicEvent> {
        let key = OrderKey::parse(id)?;
        self.views.entry(&key).map(|e| e.event.clone())
    }

    /// Economic events matching `filter`, in the ledger's total order.
    pub fn events(&self, filter: &EventFilter) -> Vec<EconomicEvent> {
        let matches = |e: &EconomicEvent| {
            filter.action.is_none_or(|a| a == e.action)
                && filter.agent.as_ref().is_none_or(|a| {
                    e.provider.as_ref() == Some(a) || e.receiver.as_ref() == Some(a)
                })
                && filter.resource.as_ref().is_none_or(|r| {
                    e.resource_inventoried_as.as_ref() == Some(r)
                        || e.to_resource_inventoried_as.as_ref() == Some(r)
                })
                && filter.process.as_ref().is_none_or(|p| {
                    e.input_of.as_ref() == Some(p) || e.output_of.as_ref() == Some(p)
                })
        };
        let candidates: Box<dyn Iterator<Item = &Entry>> = match (&filter.resource, &filter.process)
        {
            (Some(r), _) => Box::new(self.views.resource_events(r)),
            (None, Some(p)) => Box::new(self.views.process_events(p)),
            (None, None) => Box::new(self.views.entries_in_order()),
        };
        candidates
            .filter(|e| filter.include_corrected || !self.views.is_excluded(&e.key))
            .filter(|e| matches(&e.event))
            .map(|e| e.event.clone())
            .collect()
    }

    /// Number of economic events in the ledger.
    pub fn event_count(&self) -> usize {
        self.views.len()
    }

    /// A resource's description and derived state.
    pub fn resource(&self, id: &Id) -> Option<EconomicResource> {
        let desc = self.get::<ResourceDescription>(id);
        let (state, removed_by) = self.views.resource_state(id)?;
        let desc = desc.unwrap_or_else(|| ResourceDescription::new(id.clone(), ""));
        let unit = state.unit.as_ref();
        let zero = crate::views::zero_in(unit);
        let measure = |q| Measure {
            has_numerical_value: q,
            has_unit: zero.has_unit.clone(),
        };
        let stage = state
            .stage_process
            .as_ref()
            .and_then(|p| self.get::<Process>(p))
            .and_then(|p| p.based_on);
        Some(EconomicResource {
            id: id.clone(),
            name: desc.name,
            tracking_identifier: desc.tracking_identifier,
            conforms_to: desc.conforms_to,
            accounting_quantity: measure(state.accounting),
            onhand_quantity: measure(state.onhand),
            current_location: state.location.clone(),
            primary_accountable: state.primary_accountable.clone(),
            custodian: state.custodian.clone(),
            contained_in: state.contained_in.clone(),
            stage,
            state: state.state.clone(),
            unit_of_effort: desc.unit_of_effort,
            note: desc.note,
            removed_by: removed_by.cloned(),
        })
    }

    /// The inventory: resources matching `filter`, sorted by id. Reads cached fold state; the
    /// cost grows with the number of resources, not of events.
    pub fn inventory(&self, filter: &ResourceFilter) -> Vec<EconomicResource> {
        self.views
            .resource_ids()
            .into_iter()
            .filter_map(|id| self.resource(id))
            .filter(|r| filter.include_removed || r.removed_by.is_none())
            .filter(|r| {
                filter.include_empty
                    || r.removed_by.is_some()
                    || !r.accounting_quantity.has_numerical_value.value().is_zero()
                    || !r.onhand_quantity.has_numerical_value.value().is_zero()
            })
            .filter(|r| {
                filter
                    .conforms_to
                    .as_ref()
                    .is_none_or(|c| r.conforms_to.as_ref() == Some(c))
            })
            .filter(|r| {
                filter
                    .primary_accountable
                    .as_ref()
                    .is_none_or(|a| r.primary_accountable.as_ref() == Some(a))
            })
            .filter(|r| {
                filter
                    .custodian
                    .as_ref()
                    .is_none_or(|a| r.custodian.as_ref() == Some(a))
            })
            .filter(|r| {
                filter
                    .location
                    .as_ref()
                    .is_none_or(|l| r.current_location.as_ref() == Some(l))
            })
            .collect()
    }

    /// Every conflict, in the order every replica shares.
    pub fn conflicts(&self) -> Vec<Conflict> {
        self.views.conflicts()
    }

    /// Trace a resource backwards: the events, processes and resources it came from.
    pub fn trace(&self, resource: &Id) -> Result<Trace> {
        self.require_resource(resource)?;
        Ok(self.views.trace(resource))
    }

    /// Track a resource forwards: the events, processes and resources it went into.
    pub fn track(&self, resource: &Id) -> Result<Trace> {
        self.require_resource(resource)?;
        Ok(self.views.track(resource))
    }

    fn require_resource(&self, id: &Id) -> Result<()> {
        if self.views.has_resource(id) {
            Ok(())
        } else {
            Err(Error::NotFound {
                kind: ObjectKind::EconomicResource,
                id: id.clone(),
            })
        }
    }

    /// All derived views in one value (resources and conflicts), for comparing replicas.
    pub fn snapshot(&self) -> ViewSnapshot {
        let all = ResourceFilter {
            include_empty: true,
            include_removed: true,
            ..Default::default()
        };
        ViewSnapshot {
            resources: self.inventory(&all),
            conflicts: self.conflicts(),
        }
    }

    /// The views folded again from scratch from the document (what a fresh load computes).
    /// Equal to [`Ledger::snapshot`] unless the incremental cache has a bug; tests use it.
    pub fn snapshot_from_scratch(&self) -> ViewSnapshot {
        let mut copy = Ledger {
            doc: self.doc.clone(),
            events: self.events.clone(),
            maps: self.maps.clone(),
            views: Views::default(),
            events_len: 0,
            known: Default::default(),
            id_prefix: self.id_prefix.clone(),
            next_id: self.next_id,
            next_op: None,
        };
        copy.rebuild_views();
        copy.snapshot()
    }
}

/// A short, readable prefix for generated ids, unique per actor.
fn prefix_for(actor: &ActorId) -> String {
    let hex = actor.to_hex_string();
    hex.chars().take(12).collect()
}

/// Read one element of the events list. On failure, returns the element's key (when it has
/// one) and why it was rejected.
fn read_event(
    value: &Value<'_>,
    id: &ObjId,
) -> std::result::Result<Entry, (Option<OrderKey>, String)> {
    let automerge::ObjId::Id(counter, actor, _) = id else {
        return Err((None, "not a list element".into()));
    };
    let key = OrderKey {
        counter: *counter,
        actor: actor.clone(),
    };
    event_at(key, value).map_err(|(k, r)| (Some(k), r))
}

/// The event stored as `value` in the events list element whose op id is `key`.
fn event_at(key: OrderKey, value: &Value<'_>) -> std::result::Result<Entry, (OrderKey, String)> {
    let text = match value {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(t) => t.to_string(),
            _ => return Err((key, "an event is stored as a JSON string".into())),
        },
        Value::Object(_) => return Err((key, "an event is stored as a JSON string".into())),
    };
    let mut event: EconomicEvent = match serde_json::from_str(&text) {
        Ok(e) => e,
        Err(e) => return Err((key, format!("unreadable event: {e}"))),
    };
    // A stored event names the resource it created on its side: check it as a reference.
    if let Err(e) = validate::check_structure(&event, false) {
        return Err((key, e.to_string()));
    }
    event.id = key.to_id();
    Ok(Entry { key, event })
}

/// Largest delta (in ops) read from the changes themselves even on a small document; above
/// it (and above a quarter of the events), Automerge's diff is used.
const SMALL_DELTA_OPS: usize = 4096;

/// The op counter and actor of the list element at `index`, as Automerge reports it.
fn read_back(
    tx: &automerge::transaction::Transaction<'_>,
    list: &ObjId,
    index: usize,
) -> Option<(u64, ActorId)> {
    match tx.get(list, index) {
        Ok(Some((_, automerge::ObjId::Id(counter, actor, _)))) => Some((counter, actor)),
        _ => None,
    }
}
