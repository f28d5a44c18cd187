//! The ledger: one Automerge document per network holding the whole ValueFlows ledger, with
//! validation on the way in and cached, deterministic views on the way out.
//!
//! Pure: no I/O, no clock, no randomness. Storage and networking hand it bytes and changes and
//! take bytes and changes from it. The document schema is in docs/data-model.md.

mod doc;
mod flows;
mod planning;
#[cfg(test)]
mod stored_views_tests;

use std::collections::{HashMap, HashSet};

use automerge::transaction::Transactable;
use automerge::{
    ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, PatchAction, ReadDoc, ScalarValue,
    Value,
};
use serde::Serialize;
use tracing::warn;

use crate::error::{Error, PlanningError, Result};
use crate::vf::action::CreateResource;
use crate::vf::{
    Agent, AgentRelationship, AgentRelationshipRole, Agreement, Claim, Commitment, EconomicEvent,
    EconomicResource, Id, Intent, Measure, NewEvent, ObjectKind, Plan, Process,
    ProcessSpecification, Proposal, Recipe, RecipeExchange, RecipeFlow, RecipeProcess,
    ResourceDescription, ResourceSpecification, SpatialThing, Unit, VfObject,
};
use crate::views::{Causality, Conflict, Entry, OrderKey, Trace, Views};
use crate::{schema, validate};

pub use schema::SCHEMA_VERSION;
use schema::{KEY_EVENT_BUCKETS, KEY_NETWORK, KEY_OBJECT_BUCKETS, KEY_SCHEMA, KEY_V1_EVENTS};

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
    Claim(Claim),
    Recipe(Recipe),
    RecipeProcess(RecipeProcess),
    RecipeFlow(RecipeFlow),
    RecipeExchange(RecipeExchange),
    AgentRelationship(AgentRelationship),
    AgentRelationshipRole(AgentRelationshipRole),
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
    /// Every commitment with its fulfilment (no clock: `overdue` is never set here).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commitments: Vec<crate::planning::CommitmentStatus>,
    /// Every intent with what satisfies it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub intents: Vec<crate::planning::IntentStatus>,
    /// Every claim with its settlement.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<crate::planning::ClaimStatus>,
}

/// How an opened ledger got its views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewsOrigin {
    /// No views were stored: folded from the events.
    Folded,
    /// The stored views, folded at the document's heads.
    Stored,
    /// The stored views, plus the changes stored after them folded in.
    StoredAndTail,
    /// Stored views that do not decode or verify: folded again.
    Refused(crate::views::StoredViewsError),
    /// Stored views folded at heads the document does not hold: folded again.
    Stale,
}

/// A replica of one network's ledger.
pub struct Ledger {
    doc: Automerge,
    layout: Layout,
    views: Views,
    /// Length of the `events` list, kept here because asking Automerge walks the whole list.
    events_len: usize,
    /// Objects known to exist (objects are never deleted by Reflow; cleared whenever changes
    /// from elsewhere arrive, in case a peer deleted one).
    known: std::cell::RefCell<HashSet<(ObjectKind, Id)>>,
    /// Answers of "had the recorder of `.0` seen `.1`?" for the planning folds (an event or
    /// commitment and the object it names). A fact of the change graph, which only grows:
    /// kept until the document is rewound.
    seen: std::cell::RefCell<HashMap<(OrderKey, OrderKey), bool>>,
    id_prefix: String,
    next_id: u64,
    /// The heads right after this replica's last `record_events` commit and the first op
    /// counter of the next change made on top of them: while the heads are unchanged, a new
    /// event's op id (its order key) is computed instead of read back from the document.
    next_op: Option<(Vec<ChangeHash>, u64)>,
    /// Stored views taken on open, not yet judged against the opener's rules
    /// ([`Ledger::set_rule_inputs`] settles them).
    restore: Option<PendingRestore>,
    /// How the views were obtained when this ledger was opened.
    views_origin: ViewsOrigin,
}

/// Stored views in place, waiting for the rules events are judged by (see
/// `crate::views::stored`, "Rules"): the digest of the rule inputs they were judged by, and
/// the heads they were folded at when the document holds changes after them (folded in once
/// the rules are known, so that those changes are judged by them as they fold).
#[derive(Debug, Clone)]
struct PendingRestore {
    rules: [u8; 32],
    tail_from: Option<Vec<ChangeHash>>,
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
        let seen = ancestors_down_to(self.0, vec![start], floor);
        wanted
            .into_iter()
            .map(|w| w.is_some_and(|h| seen.contains(&h)))
            .collect()
    }
}

/// `starts` and their ancestors in `doc`, walked no further than changes whose first op
/// counter is at most `floor`: every ancestor of a change has smaller op counters than the
/// change's first op, so below the oldest change sought there is nothing left to find.
fn ancestors_down_to(doc: &Automerge, starts: Vec<ChangeHash>, floor: u64) -> HashSet<ChangeHash> {
    let mut seen: HashSet<ChangeHash> = HashSet::new();
    let mut stack = starts;
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        let Some(meta) = doc.get_change_meta_by_hash(&h) else {
            continue;
        };
        if meta.start_op > floor {
            stack.extend(meta.deps.iter().copied());
        }
    }
    seen
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
        create_bucket_sets(&mut tx)?;
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
        let mut ledger = Ledger::loaded(doc)?;
        ledger.rebuild_views();
        Ok(ledger)
    }

    /// A new replica of this ledger with the same history, for another device or session.
    pub fn fork(&self, actor: ActorId) -> Ledger {
        Ledger {
            doc: self.doc.fork().with_actor(actor.clone()),
            layout: self.layout.clone(),
            views: self.views.clone(),
            events_len: self.events_len,
            known: Default::default(),
            seen: Default::default(),
            id_prefix: prefix_for(&actor),
            next_id: 1,
            next_op: None,
            restore: self.restore.clone(),
            views_origin: self.views_origin.clone(),
        }
    }

    fn from_doc(doc: Automerge) -> Result<Ledger> {
        let mut ledger = Ledger::unfolded(doc)?;
        ledger.rebuild_views();
        Ok(ledger)
    }

    /// A ledger of a loaded document, as this session's `actor`, its views not folded yet
    /// (`Replica::join_document`, once every change of it is judged; then
    /// [`Ledger::fold_views`]).
    pub(crate) fn of_loaded(doc: Automerge, actor: ActorId) -> Result<Ledger> {
        Ledger::loaded(doc.with_actor(actor))
    }

    /// Take over the rules events are judged by from `other` (a ledger this one replaces),
    /// before [`Ledger::fold_views`].
    pub(crate) fn adopt_rule_inputs(&mut self, other: &mut Ledger) {
        self.views.keep_rule_inputs(&mut other.views);
    }

    /// [`Ledger::unfolded`] of a document loaded from bytes: its columns split first
    /// ([`split_loaded_columns`]; a document built change by change needs no split).
    fn loaded(doc: Automerge) -> Result<Ledger> {
        let mut ledger = Ledger::unfolded(doc)?;
        split_loaded_columns(&mut ledger.doc, &ledger.layout);
        Ok(ledger)
    }

    /// A ledger of `doc` whose views are still empty.
    fn unfolded(doc: Automerge) -> Result<Ledger> {
        let layout = Layout::resolve(&doc)?;
        let actor = doc.get_actor().clone();
        Ok(Ledger {
            doc,
            layout,
            views: Views::default(),
            events_len: 0,
            known: Default::default(),
            seen: Default::default(),
            id_prefix: prefix_for(&actor),
            next_id: 1,
            next_op: None,
            restore: None,
            views_origin: ViewsOrigin::Folded,
        })
    }

    /// [`Ledger::load`] with the views stored beside the snapshot (`views`, written by
    /// [`Ledger::encode_views`]): they are used if they decode, pass their checksum and fold
    /// version, were folded at heads this document holds (then only the changes after
    /// those heads are folded) and were judged by no rules (a ledger opened on its own
    /// knows none: views stored by a replica under a rule set are refused,
    /// [`StoredViewsError::Rules`](crate::views::StoredViewsError::Rules)); otherwise the
    /// views are folded from scratch, as by `load`. Returns how the views were obtained.
    pub fn load_with_views(
        bytes: &[u8],
        actor: ActorId,
        views: Option<&[u8]>,
    ) -> Result<(Ledger, ViewsOrigin)> {
        let (mut ledger, _, fold) = Ledger::load_with_views_deferred(bytes, actor, views)?;
        if fold {
            ledger.rebuild_views();
        } else {
            ledger.settle_restored(Vec::new());
        }
        let origin = ledger.views_origin.clone();
        Ok((ledger, origin))
    }

    /// [`Ledger::load_with_views`], except that nothing is folded yet: the third value says
    /// whether [`Ledger::fold_views`] must be called (by `Replica::open_with`, once the
    /// rules events are judged by are known); stored views taken (`Stored`,
    /// `StoredAndTail`) wait for those rules ([`Ledger::set_rule_inputs`]), which may still
    /// refuse them, and the changes after them are folded in then.
    pub(crate) fn load_with_views_deferred(
        bytes: &[u8],
        actor: ActorId,
        views: Option<&[u8]>,
    ) -> Result<(Ledger, ViewsOrigin, bool)> {
        let doc = Automerge::load(bytes)
            .map_err(|e| Error::NotALedger(format!("not an Automerge document: {e}")))?
            .with_actor(actor);
        let mut ledger = Ledger::loaded(doc)?;
        let origin = match views.map(crate::views::stored::decode) {
            None => ViewsOrigin::Folded,
            Some(Err(e)) => ViewsOrigin::Refused(e),
            Some(Ok(s)) => {
                let heads = ledger.doc.get_heads();
                if s.heads
                    .iter()
                    .all(|h| ledger.doc.get_change_meta_by_hash(h).is_some())
                {
                    ledger.views = s.views;
                    ledger.events_len = s.events_len;
                    let mut stored = s.heads.clone();
                    stored.sort();
                    let mut now = heads;
                    now.sort();
                    let tail = stored != now;
                    ledger.restore = Some(PendingRestore {
                        rules: s.rules,
                        tail_from: tail.then_some(s.heads),
                    });
                    if tail {
                        ViewsOrigin::StoredAndTail
                    } else {
                        ViewsOrigin::Stored
                    }
                } else {
                    ViewsOrigin::Stale
                }
            }
        };
        ledger.views_origin = origin.clone();
        let fold = match &origin {
            ViewsOrigin::Stored | ViewsOrigin::StoredAndTail => false,
            ViewsOrigin::Folded => true,
            ViewsOrigin::Refused(e) => {
                warn!(reason = %e, "stored views refused; folding the views again");
                true
            }
            ViewsOrigin::Stale => {
                warn!("stored views were folded at heads this document lacks; folding again");
                true
            }
        };
        Ok((ledger, origin, fold))
    }

    /// Judge stored views taken on open against the rules events are judged by (`inputs`:
    /// all of them, as the replica's rule index found them; none for a ledger on its own):
    /// if they were judged by the same ([`crate::views::stored::rules_digest`]), the inputs
    /// are installed as they are and the changes stored after the views folded in;
    /// otherwise the views are refused and folded from scratch with `inputs`. Returns
    /// whether the stored views stood (true too when none were waiting).
    fn settle_restored(
        &mut self,
        inputs: Vec<(OrderKey, std::sync::Arc<crate::rules::EventRules>)>,
    ) -> bool {
        let Some(pending) = self.restore.take() else {
            if !inputs.is_empty() {
                self.views.set_rule_inputs(inputs, &DocCausality(&self.doc));
            }
            return true;
        };
        let views = &self.views;
        let digest =
            crate::views::stored::rules_digest(inputs.iter().map(|(k, r)| (k, &**r)), |k| {
                views.entry(k).is_some()
            });
        self.views.install_rule_inputs(inputs);
        if digest == pending.rules {
            if let Some(from) = pending.tail_from {
                self.ingest_since(&from);
            }
            true
        } else {
            warn!(
                reason = %crate::views::StoredViewsError::Rules,
                "stored views refused; folding the views again"
            );
            self.views_origin = ViewsOrigin::Refused(crate::views::StoredViewsError::Rules);
            self.rebuild_views();
            false
        }
    }

    /// How the views were obtained when this ledger was opened ([`ViewsOrigin::Folded`] for
    /// a ledger made or loaded without stored views): stored views refused because the
    /// rules they were judged by are not the opener's show here once the replica has its
    /// rules.
    pub fn views_origin(&self) -> &ViewsOrigin {
        &self.views_origin
    }

    /// Whether the views equal a fold from scratch of the document with the same rule
    /// inputs (every field compared, `Views`' `PartialEq`), and the event count too.
    #[cfg(test)]
    pub(crate) fn views_match_a_fold(&self) -> bool {
        let mut copy = Ledger::unfolded(self.doc.clone()).expect("the same layout");
        copy.views = Views::with_rule_inputs_of(&self.views);
        copy.rebuild_views();
        if copy.views != self.views {
            tracing::error!(differences = ?self.views.differences(&copy.views), "views differ");
            eprintln!(
                "views differ from a fold: {:#?}",
                self.views.differences(&copy.views)
            );
            return false;
        }
        copy.events_len == self.events_len
    }

    /// Fold the views from the document (after [`Ledger::load_with_views_deferred`]).
    pub(crate) fn fold_views(&mut self) {
        self.rebuild_views();
    }

    /// The views as stored beside a snapshot of this ledger (docs/storage.md, "A views
    /// value"): folded at the current heads, with the digest of the rules they were judged
    /// by.
    pub fn encode_views(&self) -> Vec<u8> {
        if let Some(p) = &self.restore {
            // Stored views not settled yet: as they were stored.
            let heads = p.tail_from.clone().unwrap_or_else(|| self.doc.get_heads());
            return crate::views::stored::encode(&self.views, self.events_len, &heads, p.rules);
        }
        let rules = crate::views::stored::rules_digest(self.views.rule_inputs(), |k| {
            self.views.entry(k).is_some()
        });
        crate::views::stored::encode(&self.views, self.events_len, &self.doc.get_heads(), rules)
    }

    /// The schema version of the document now (1 until a v1 ledger is migrated).
    pub fn schema_version(&self) -> u64 {
        self.layout.version
    }

    /// Whether this is a version-1 ledger that must be migrated ([`Ledger::migrate_to_v2`])
    /// before anything can be written to it.
    pub fn needs_migration(&self) -> bool {
        self.layout.event_sets.is_empty()
    }

    /// The v1 → v2 migration (named `v1-to-v2-buckets`): one change that sets the schema
    /// version to 2 and creates the event and object buckets. Nothing is copied: the v1
    /// events list and object maps stay where they are, read-only, and are read alongside
    /// the buckets, so every event keeps its id. A v1 object updated after the migration is
    /// copied whole into its bucket by that update. `message` is the change's message (the
    /// identity layer's migration record).
    pub(crate) fn migrate_to_v2(&mut self, message: Option<String>) -> Result<()> {
        if !self.needs_migration() {
            return Ok(());
        }
        let mut tx = self.doc.transaction();
        tx.put(automerge::ROOT, KEY_SCHEMA, SCHEMA_VERSION)?;
        create_bucket_sets(&mut tx)?;
        match message {
            Some(m) => {
                tx.commit_with(automerge::transaction::CommitOptions::default().with_message(m))
            }
            None => tx.commit(),
        };
        self.layout = Layout::resolve(&self.doc)?;
        self.next_op = None;
        self.rebuild_views();
        Ok(())
    }

    /// A ledger made of exactly `changes` (a causal order), written to as `actor`.
    pub(crate) fn from_changes(changes: Vec<Change>, actor: ActorId) -> Result<Ledger> {
        let mut doc = Automerge::new().with_actor(actor);
        doc.apply_changes(changes)?;
        Ledger::from_doc(doc)
    }

    /// Go back to the state at `heads` (which this ledger holds), writing from now on as
    /// `actor`: what was written after them is dropped, the views folded again. For a
    /// write that must not stand (all or nothing).
    pub(crate) fn rewind(&mut self, heads: &[ChangeHash], actor: ActorId) -> Result<()> {
        let doc = self.doc.fork_at(heads)?.with_actor(actor.clone());
        self.layout = Layout::resolve(&doc)?;
        self.doc = doc;
        self.id_prefix = prefix_for(&actor);
        self.next_op = None;
        self.known.get_mut().clear();
        self.seen.get_mut().clear();
        self.rebuild_views();
        Ok(())
    }

    /// Read every event from the document and fold the views from scratch.
    fn rebuild_views(&mut self) {
        // Stored views waiting for their rules are replaced: nothing left to settle.
        self.restore = None;
        let mut views = Views::default();
        // The rules events are judged by come from the replica, not the document: kept.
        views.keep_rule_inputs(&mut self.views);
        let mut entries = Vec::new();
        let mut len = 0;
        if let Some(legacy) = &self.layout.legacy {
            for item in self.doc.list_range(&legacy.events, ..) {
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
        }
        for set in &self.layout.event_sets {
            for bucket in set {
                for item in self.doc.map_range(bucket, ..) {
                    len += 1;
                    match read_bucket_event(&item.key, &item.value.clone().into_value(), &item.id())
                    {
                        Ok(entry) => entries.push(entry),
                        Err((key, reason)) => {
                            if let Some(key) = key {
                                views.add_invalid(key, reason);
                            }
                        }
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

    /// Commit a change with no operations whose message is `message` (the identity layer's
    /// membership records). Schema v2 keeps no copy of a record in the document.
    pub(crate) fn commit_record(&mut self, message: String) -> Result<()> {
        self.doc
            .empty_commit(automerge::transaction::CommitOptions::default().with_message(message));
        self.next_op = None;
        Ok(())
    }

    /// The change that recorded an event.
    pub fn event_change(&self, id: &Id) -> Option<ChangeHash> {
        let key = OrderKey::parse(id)?;
        DocCausality(&self.doc).hash(&key)
    }

    /// Which of `candidates` are in the causal past of `deps` (the dependencies of some
    /// change): one walk of the change graph, pruned below the oldest candidate.
    pub(crate) fn in_past_of(&self, deps: &[ChangeHash], candidates: &[ChangeHash]) -> Vec<bool> {
        let floor = candidates
            .iter()
            .filter_map(|h| self.doc.get_change_meta_by_hash(h).map(|m| m.start_op))
            .min()
            .unwrap_or(0);
        let seen = ancestors_down_to(&self.doc, deps.to_vec(), floor);
        candidates.iter().map(|c| seen.contains(c)).collect()
    }

    /// A resource's state as a rule sees it, from the views (now).
    pub(crate) fn resource_seen(&self, id: &Id) -> Option<crate::rules::ResourceSeen> {
        let (state, _) = self.views.resource_state(id)?;
        Some(crate::views::seen_of(id, state))
    }

    /// Set the rules each event is judged by (the replica's rule index, `crate::rules`).
    pub(crate) fn set_rule_inputs(
        &mut self,
        inputs: Vec<(
            crate::views::OrderKey,
            std::sync::Arc<crate::rules::EventRules>,
        )>,
    ) {
        // Stored views taken on open are judged against these first (`settle_restored`).
        self.settle_restored(inputs);
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
        let legacy_list = self.layout.legacy.as_ref().and_then(|l| match &l.events {
            automerge::ObjId::Id(c, a, _) => Some((*c, a.clone())),
            automerge::ObjId::Root => None,
        });
        let mut new = Vec::new();
        for change in changes {
            for (i, op) in change.operations.iter().enumerate() {
                let automerge::legacy::ObjectId::Id(obj) = &op.obj else {
                    // An op on the root (a migration, or anything a judge let through on a
                    // plain ledger): read the layout and every event again.
                    self.relayout_and_rebuild();
                    return;
                };
                let counter = change.start_op.get() + i as u64;
                let target = (obj.0, obj.1.clone());
                let value = match &op.action {
                    automerge::legacy::OpType::Put(v) => {
                        Value::Scalar(std::borrow::Cow::Borrowed(v))
                    }
                    automerge::legacy::OpType::Make(t) => Value::Object(*t),
                    _ => Value::Scalar(std::borrow::Cow::Owned(ScalarValue::Null)),
                };
                let key = OrderKey {
                    counter,
                    actor: change.actor_id.clone(),
                };
                if self.layout.event_bucket_ids.contains(&target) {
                    let automerge::legacy::Key::Map(name) = &op.key else {
                        self.tampered();
                        return;
                    };
                    if op.insert
                        || !op.pred.is_empty()
                        || !matches!(op.action, automerge::legacy::OpType::Put(_))
                    {
                        self.tampered();
                        return;
                    }
                    self.events_len += 1;
                    if name.as_str() != key.to_id().as_str() {
                        self.views
                            .add_invalid(key, "an event's key is not its own op id".into());
                        continue;
                    }
                    let read = event_at(key, &value).map_err(|(k, r)| (Some(k), r));
                    self.take_event(read, &mut new);
                } else if legacy_list.as_ref() == Some(&target) {
                    if !op.insert || !matches!(op.action, automerge::legacy::OpType::Put(_)) {
                        self.tampered();
                        return;
                    }
                    self.events_len += 1;
                    let read = event_at(key, &value).map_err(|(k, r)| (Some(k), r));
                    self.take_event(read, &mut new);
                }
            }
        }
        self.views.add_events(new, &DocCausality(&self.doc));
    }

    /// Keep an event read from the document, or list it as invalid. `false` (after folding
    /// from scratch) if what was read is not an event entry at all.
    fn take_event(
        &mut self,
        read: std::result::Result<Entry, (Option<OrderKey>, String)>,
        new: &mut Vec<Entry>,
    ) -> bool {
        match read {
            Ok(entry) => new.push(entry),
            Err((Some(key), reason)) => {
                warn!(event = %key.to_id(), %reason, "rejected an event from a peer");
                self.views.add_invalid(key, reason);
            }
            Err((None, _)) => {
                self.tampered();
                return false;
            }
        }
        true
    }

    /// The events were edited in place (never done by an honest replica, and refused by
    /// admission): fold them as a fresh load would.
    fn tampered(&mut self) {
        warn!("the events were edited in place; rebuilding views");
        self.rebuild_views();
    }

    /// Resolve the document layout again (after a migration) and fold from scratch.
    fn relayout_and_rebuild(&mut self) {
        match Layout::resolve(&self.doc) {
            Ok(layout) => self.layout = layout,
            Err(e) => warn!(error = %e, "the ledger's layout is unreadable; keeping the last one"),
        }
        self.next_op = None;
        self.rebuild_views();
    }

    /// Fold the events that arrived since `before` into the views.
    fn ingest_since(&mut self, before: &[ChangeHash]) {
        self.known.get_mut().clear();
        let after = self.doc.get_heads();
        if after == before {
            return;
        }
        let patches = self.doc.diff(before, &after);
        let legacy_list = self.layout.legacy.as_ref().map(|l| l.events.clone());
        let mut new = Vec::new();
        for patch in patches {
            if patch.obj == automerge::ROOT {
                self.relayout_and_rebuild();
                return;
            }
            let in_bucket = match &patch.obj {
                automerge::ObjId::Id(c, a, _) => {
                    self.layout.event_bucket_ids.contains(&(*c, a.clone()))
                }
                automerge::ObjId::Root => false,
            };
            if in_bucket {
                match patch.action {
                    PatchAction::PutMap { key, value, .. } => {
                        self.events_len += 1;
                        if !self.take_event(read_bucket_event(&key, &value.0, &value.1), &mut new) {
                            return;
                        }
                    }
                    _ => {
                        self.tampered();
                        return;
                    }
                }
            } else if legacy_list.as_ref() == Some(&patch.obj) {
                match patch.action {
                    PatchAction::Insert { values, .. } => {
                        self.events_len += values.len();
                        for (value, id, _) in values.iter() {
                            if !self.take_event(read_event(value, id), &mut new) {
                                return;
                            }
                        }
                    }
                    _ => {
                        self.tampered();
                        return;
                    }
                }
            }
        }
        self.views.add_events(new, &DocCausality(&self.doc));
    }

    /// Every version-1 object (conflicting ones included): the (counter, actor) of the op
    /// that made it, its kind and id. Empty for a ledger created at version 2.
    pub(crate) fn v1_objects(&self) -> Vec<((u64, ActorId), ObjectKind, String)> {
        let mut out = Vec::new();
        let Some(legacy) = self.layout.legacy.as_ref() else {
            return out;
        };
        for (kind, map) in &legacy.maps {
            for key in self.doc.keys(map) {
                for (value, obj) in self.doc.get_all(map, key.as_str()).unwrap_or_default() {
                    if let (Value::Object(ObjType::Map), ObjId::Id(counter, actor, _)) =
                        (value, &obj)
                    {
                        out.push(((*counter, actor.clone()), *kind, key.clone()));
                    }
                }
            }
        }
        out
    }

    /// Every op that made an object: each put of a marker in an object bucket, and each
    /// version-1 object map, as (kind, id, (counter, actor)). Admission never lets a marker
    /// be overwritten or deleted, so this is every creation ever accepted (object ownership,
    /// `crate::admission`).
    pub(crate) fn object_creations(&self) -> Vec<(ObjectKind, String, (u64, ActorId))> {
        let mut out: Vec<_> = self
            .v1_objects()
            .into_iter()
            .map(|(op, kind, id)| (kind, id, op))
            .collect();
        for set in &self.layout.object_sets {
            for bucket in set {
                for item in self.doc.map_range(bucket, ..) {
                    let Some(schema::ObjectKey::Marker(kind, id)) =
                        schema::ObjectKey::parse(&item.key)
                    else {
                        continue;
                    };
                    for (_, op) in self
                        .doc
                        .get_all(bucket, item.key.as_ref())
                        .unwrap_or_default()
                    {
                        if let ObjId::Id(counter, actor, _) = op {
                            out.push((kind, id.clone(), (counter, actor)));
                        }
                    }
                }
            }
        }
        out
    }

    /// The v1 map object of `(kind, id)`, if the ledger has a v1 part and the object is there.
    fn legacy_object(&self, kind: ObjectKind, id: &Id) -> Option<ObjId> {
        let legacy = self.layout.legacy.as_ref()?;
        let map = legacy.maps.get(&kind)?;
        match self.doc.get(map, id.as_str()) {
            Ok(Some((Value::Object(ObjType::Map), obj))) => Some(obj),
            _ => None,
        }
    }

    /// Whether `(kind, id)` has a marker in a bucket.
    fn in_buckets(&self, kind: ObjectKind, id: &Id) -> bool {
        let bucket = schema::object_bucket(kind, id.as_str());
        let marker = schema::marker_key(kind, id.as_str());
        self.layout
            .object_sets
            .iter()
            .any(|set| matches!(self.doc.get(&set[bucket], marker.as_str()), Ok(Some(_))))
    }

    /// The stored fields of `(kind, id)` as a JSON object (buckets first, then v1).
    fn object_json(&self, kind: ObjectKind, id: &Id) -> Option<serde_json::Value> {
        let bucket = schema::object_bucket(kind, id.as_str());
        let prefix = schema::object_prefix(kind, id.as_str());
        for set in &self.layout.object_sets {
            let mut found = false;
            let mut fields = serde_json::Map::new();
            for item in self.doc.map_range(&set[bucket], prefix.clone()..) {
                if !item.key.starts_with(&prefix) {
                    break;
                }
                match schema::ObjectKey::parse(&item.key) {
                    Some(schema::ObjectKey::Marker(k, i)) if k == kind && i == id.as_str() => {
                        found = true
                    }
                    Some(schema::ObjectKey::Field(k, i, f)) if k == kind && i == id.as_str() => {
                        if let Value::Scalar(sv) = item.value.clone().into_value() {
                            if let ScalarValue::Str(text) = sv.as_ref() {
                                if let Ok(v) = serde_json::from_str(text) {
                                    fields.insert(f, v);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            if found {
                return Some(serde_json::Value::Object(fields));
            }
        }
        let obj = self.legacy_object(kind, id)?;
        Some(doc::read_json(&self.doc, &obj))
    }

    /// Whether an object of `kind` with `id` exists.
    pub fn exists(&self, kind: ObjectKind, id: &Id) -> bool {
        match kind {
            ObjectKind::EconomicEvent => {
                OrderKey::parse(id).is_some_and(|k| self.views.entry(&k).is_some())
            }
            ObjectKind::EconomicResource if self.views.has_resource(id) => true,
            _ => {
                let key = (kind, id.clone());
                if self.known.borrow().contains(&key) {
                    return true;
                }
                let found = self.in_buckets(kind, id) || self.legacy_object(kind, id).is_some();
                if found {
                    self.known.borrow_mut().insert(key);
                }
                found
            }
        }
    }

    /// The object bucket `(kind, id)` is written to (the winning bucket set).
    fn write_bucket(&self, kind: ObjectKind, id: &Id) -> Result<ObjId> {
        let set = self
            .layout
            .object_sets
            .first()
            .ok_or(Error::MigrationRequired)?;
        Ok(set[schema::object_bucket(kind, id.as_str())].clone())
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
            ObjectKind::RuleSet => "rules",
            ObjectKind::Claim => "claim",
            ObjectKind::Recipe => "recipe",
            ObjectKind::RecipeProcess => "rprocess",
            ObjectKind::RecipeFlow => "rflow",
            ObjectKind::RecipeExchange => "rexchange",
            ObjectKind::AgentRelationship => "relationship",
            ObjectKind::AgentRelationshipRole => "role",
            ObjectKind::AgreementBundle => "bundle",
            ObjectKind::ProposalList => "plist",
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
        self.check_object_values(obj)?;
        if T::KIND == ObjectKind::Proposal {
            let json = serde_json::to_value(obj).map_err(json_err("object"))?;
            let p: crate::vf::Proposal =
                serde_json::from_value(json).map_err(json_err("object"))?;
            self.check_purpose(&p, obj.id())?;
        }
        Ok(())
    }

    /// A proposal's `purpose` agrees with what it publishes: an offer's intents name who
    /// provides, a request's who receives.
    fn check_purpose(&self, p: &crate::vf::Proposal, id: &Id) -> Result<()> {
        let Some(purpose) = p.purpose else {
            return Ok(());
        };
        for iid in &p.publishes {
            let Some(i) = self.get::<crate::vf::Intent>(iid) else {
                continue;
            };
            let (name, detail, bad) = match purpose {
                crate::vf::ProposalPurpose::Offer => (
                    "offer",
                    "names no provider: an offer's intents say who provides",
                    i.provider.is_none(),
                ),
                crate::vf::ProposalPurpose::Request => (
                    "request",
                    "names no receiver: a request's intents say who receives",
                    i.receiver.is_none(),
                ),
            };
            if bad {
                return Err(PlanningError::PurposeContradicts {
                    proposal: id.clone(),
                    purpose: name,
                    intent: iid.clone(),
                    detail,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Give `obj` its id: a generated one if empty, or (an agent relationship) the one its
    /// subject, relationship and object fix; an id given for a relationship must be that one.
    fn assign_id<T: VfObject>(&mut self, obj: &mut T) -> Result<()> {
        if let Some(fixed) = fixed_id(obj)? {
            if obj.id().as_str().is_empty() {
                obj.set_id(fixed);
            } else if obj.id() != &fixed {
                return Err(PlanningError::RelationshipId {
                    given: obj.id().clone(),
                    expected: fixed,
                }
                .into());
            }
        }
        if obj.id().as_str().is_empty() {
            let id = self.new_id(T::KIND);
            obj.set_id(id);
        }
        Ok(())
    }

    /// An update may not change what an object's id fixes (a relationship's three parts).
    pub(super) fn check_fixed_id<T: VfObject>(&self, obj: &T) -> Result<()> {
        match fixed_id(obj)? {
            Some(fixed) if &fixed != obj.id() => Err(PlanningError::RelationshipId {
                given: obj.id().clone(),
                expected: fixed,
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// The checks of an object's values (coordinates, measures), not of its references.
    fn check_object_values<T: VfObject>(&self, obj: &T) -> Result<()> {
        let json = serde_json::to_value(obj).map_err(json_err("object"))?;
        let Some(fields) = json.as_object() else {
            return Ok(());
        };
        // VF 1.0 gives classifiedAs to organizations (and ecological agents), not persons.
        if T::KIND == ObjectKind::Agent
            && fields.get("agentKind").and_then(|k| k.as_str()) == Some("person")
            && fields.contains_key("classifiedAs")
        {
            return Err(Error::NotApplicable {
                field: "classifiedAs",
                to: "a person",
                hint: "VF 1.0 classifies organizations, not persons: make the agent an organization or leave classifiedAs out",
            });
        }
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
        for field in [
            "resourceQuantity",
            "effortQuantity",
            "availableQuantity",
            "minimumQuantity",
            "hasDuration",
        ] {
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
        let generated = obj.id().as_str().is_empty() && fixed_id(&obj)?.is_none();
        self.assign_id(&mut obj)?;
        if !generated && self.exists(T::KIND, obj.id()) {
            return Err(Error::DuplicateId {
                kind: T::KIND,
                id: obj.id().clone(),
            });
        }
        check_id(obj.id())?;
        self.check_object(&obj)?;
        let json = serde_json::to_value(&obj).map_err(json_err("object"))?;
        let id = obj.id().clone();
        let bucket = self.write_bucket(T::KIND, &id)?;
        let mut tx = self.doc.transaction();
        put_object_fields(&mut tx, &bucket, T::KIND, &id, &json, None)?;
        check_change_size(tx.pending_ops(), json.to_string().len())?;
        tx.commit();
        Ok(id)
    }

    /// Change an object's descriptive fields. Each changed field is written on its own, so
    /// concurrent edits of different fields on different replicas all survive, and the same
    /// field resolves by Automerge's deterministic last-writer-wins. An object still in a
    /// migrated v1 ledger's maps is copied whole into its bucket.
    pub fn update<T: VfObject>(&mut self, id: &Id, change: impl FnOnce(&mut T)) -> Result<()> {
        let mut obj: T = self.get(id).ok_or_else(|| Error::NotFound {
            kind: T::KIND,
            id: id.clone(),
        })?;
        let before = serde_json::to_value(&obj).map_err(json_err("object"))?;
        change(&mut obj);
        obj.set_id(id.clone());
        self.check_fixed_id(&obj)?;
        self.check_object(&obj)?;
        let after = serde_json::to_value(&obj).map_err(json_err("object"))?;
        let bucket = self.write_bucket(T::KIND, id)?;
        let previous = self.in_buckets(T::KIND, id).then_some(&before);
        let mut tx = self.doc.transaction();
        put_object_fields(&mut tx, &bucket, T::KIND, id, &after, previous)?;
        check_change_size(tx.pending_ops(), after.to_string().len())?;
        tx.commit();
        Ok(())
    }

    /// Get an object of type `T` by id.
    pub fn get<T: VfObject>(&self, id: &Id) -> Option<T> {
        let json = self.object_json(T::KIND, id)?;
        let mut value: T = serde_json::from_value(json).ok()?;
        value.set_id(id.clone());
        Some(value)
    }

    /// The ids of every object of `kind`, sorted.
    fn ids_of(&self, kind: ObjectKind) -> std::collections::BTreeSet<String> {
        let mut ids = std::collections::BTreeSet::new();
        let prefix = schema::kind_prefix(kind);
        for set in &self.layout.object_sets {
            for bucket in set {
                for item in self.doc.map_range(bucket, prefix.clone()..) {
                    if !item.key.starts_with(&prefix) {
                        break;
                    }
                    if let Some(schema::ObjectKey::Marker(k, id)) =
                        schema::ObjectKey::parse(&item.key)
                    {
                        if k == kind {
                            ids.insert(id);
                        }
                    }
                }
            }
        }
        if let Some(map) = self.layout.legacy.as_ref().and_then(|l| l.maps.get(&kind)) {
            for item in self.doc.map_range(map, ..) {
                ids.insert(item.key.to_string());
            }
        }
        ids
    }

    /// Every object of type `T`, sorted by id.
    pub fn list<T: VfObject>(&self) -> Vec<T> {
        self.ids_of(T::KIND)
            .into_iter()
            .filter_map(|id| self.get::<T>(&Id(id)))
            .collect()
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
            Agreement,
            Claim,
            Recipe,
            RecipeProcess,
            RecipeFlow,
            RecipeExchange,
            AgentRelationship,
            AgentRelationshipRole
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

        let buckets = self
            .layout
            .event_sets
            .first()
            .cloned()
            .ok_or(Error::MigrationRequired)?;
        let mut resource_buckets = Vec::with_capacity(prepared.len());
        for (_, resource) in &prepared {
            resource_buckets.push(match resource {
                Some(r) => Some(self.write_bucket(ObjectKind::EconomicResource, &r.id)?),
                None => None,
            });
        }
        // The first op counter of this change: where our last change ended while the heads
        // are unchanged, else one more than the largest op counter of the heads (Automerge
        // starts a change at the document's largest op + 1, and admission makes every change
        // start above all of its dependencies, so the largest op is in a head).
        let start_op = match self.next_op.take() {
            Some((heads, op)) if heads == self.doc.get_heads() => op,
            _ => self.max_op() + 1,
        };
        let actor = self.doc.get_actor().clone();
        let mut tx = self.doc.transaction();
        let mut entries = Vec::with_capacity(prepared.len());
        let mut bytes = 0;
        for ((mut event, resource), rbucket) in prepared.into_iter().zip(resource_buckets) {
            if let (Some(r), Some(bucket)) = (&resource, &rbucket) {
                let json = serde_json::to_value(r).map_err(json_err("resource"))?;
                put_object_fields(
                    &mut tx,
                    bucket,
                    ObjectKind::EconomicResource,
                    &r.id,
                    &json,
                    None,
                )?;
            }
            let text = serde_json::to_string(&event).map_err(json_err("event"))?;
            bytes += text.len() + resource.as_ref().map_or(0, |r| 64 + r.name.len());
            // An event's key is the id of the op that puts it: start op + ops so far.
            let counter = start_op + tx.pending_ops() as u64;
            let key = OrderKey {
                counter,
                actor: actor.clone(),
            };
            let id = key.to_id();
            let bucket = &buckets[schema::event_bucket(counter)];
            tx.put(bucket, id.as_str(), text.as_str())?;
            if entries.is_empty() || cfg!(debug_assertions) {
                // The key must be the op's own id, or every peer refuses the change.
                match tx.get(bucket, id.as_str()) {
                    Ok(Some((_, automerge::ObjId::Id(c, a, _)))) if c == counter && a == actor => {}
                    _ => {
                        return Err(Error::NotALedger(
                            "the op counter of a new event could not be predicted".into(),
                        ))
                    }
                }
            }
            event.id = id;
            entries.push(Entry {
                key,
                event: Box::new(event),
            });
        }
        let ops = tx.pending_ops() as u64;
        check_change_size(tx.pending_ops(), bytes)?;
        tx.commit();
        self.next_op = Some((self.doc.get_heads(), start_op + ops));
        self.events_len += entries.len();
        let ids = entries.iter().map(|e| e.event.id.clone()).collect();
        self.views.add_events(entries, &DocCausality(&self.doc));
        Ok(ids)
    }

    fn max_op(&self) -> u64 {
        max_op_of(&self.doc)
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
            check_id(&r.id)?;
            self.check_refs(r.references(), "newInventoriedResource")?;
            match a.effects().create_resource {
                CreateResource::Optional => event.resource_inventoried_as = Some(r.id.clone()),
                CreateResource::OptionalTo => event.to_resource_inventoried_as = Some(r.id.clone()),
                CreateResource::NotApplicable => {}
            }
            event.created_resource = Some(r.id.clone());
        }

        let refs: [(&'static str, ObjectKind, &Option<Id>); 12] = [
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
                ObjectKind::Agreement,
                &event.realization_of,
            ),
            (
                "reciprocalRealizationOf",
                ObjectKind::Agreement,
                &event.reciprocal_realization_of,
            ),
            ("fulfills", ObjectKind::Commitment, &event.fulfills),
            ("satisfies", ObjectKind::Intent, &event.satisfies),
            ("settles", ObjectKind::Claim, &event.settles),
        ];
        for (field, kind, id) in refs {
            if let Some(id) = id {
                self.check_refs(vec![(kind, id)], field)?;
            }
        }
        self.check_planning_refs(&event)?;
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
        self.views.entry(&key).map(|e| (*e.event).clone())
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
            .map(|e| (*e.event).clone())
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
            classified_as: desc.classified_as,
            note: desc.note,
            removed_by: removed_by.cloned(),
            other_properties: desc.other_properties,
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

    /// Every conflict, in the order every replica shares: the resource conflicts (by the
    /// event that revealed them), then the planning conflicts (over-fulfilment,
    /// over-satisfaction, over-settlement; by the event or commitment that revealed them).
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut all = self.views.conflicts();
        all.extend(self.planning_conflicts());
        all
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

    /// The VF "previous" of an event: the events it directly came from (see
    /// [`Views::previous`]); following it again and again walks the chain back.
    pub fn previous_events(&self, event: &Id) -> Result<Vec<Id>> {
        let key = self.require_event(event)?;
        Ok(self.views.previous(&key))
    }

    /// The VF "next" of an event: the events that directly followed from it.
    pub fn next_events(&self, event: &Id) -> Result<Vec<Id>> {
        let key = self.require_event(event)?;
        Ok(self.views.next(&key))
    }

    fn require_event(&self, id: &Id) -> Result<OrderKey> {
        OrderKey::parse(id)
            .filter(|k| self.views.entry(k).is_some())
            .ok_or_else(|| Error::NotFound {
                kind: ObjectKind::EconomicEvent,
                id: id.clone(),
            })
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
            commitments: self.commitment_statuses(None).unwrap_or_default(),
            intents: self.intent_statuses(),
            claims: self.claim_statuses(),
        }
    }

    /// The views folded again from scratch from the document (what a fresh load computes).
    /// Equal to [`Ledger::snapshot`] unless the incremental cache has a bug; tests use it.
    pub fn snapshot_from_scratch(&self) -> ViewSnapshot {
        let mut copy = Ledger {
            doc: self.doc.clone(),
            layout: self.layout.clone(),
            views: Views::default(),
            events_len: 0,
            known: Default::default(),
            seen: Default::default(),
            id_prefix: self.id_prefix.clone(),
            next_id: self.next_id,
            next_op: None,
            restore: None,
            views_origin: ViewsOrigin::Folded,
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
    let text: &str = match value {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(t) => t,
            _ => return Err((key, "an event is stored as a JSON string".into())),
        },
        Value::Object(_) => return Err((key, "an event is stored as a JSON string".into())),
    };
    let mut event: Box<EconomicEvent> = match serde_json::from_str(text) {
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

/// The largest op counter of any change in `doc`'s heads.
fn max_op_of(doc: &Automerge) -> u64 {
    doc.get_heads()
        .iter()
        .filter_map(|h| doc.get_change_meta_by_hash(h))
        .map(|m| m.max_op)
        .max()
        .unwrap_or(0)
}

/// Create the v2 bucket maps (256 for events, 256 for objects) at the root.
fn create_bucket_sets(tx: &mut automerge::transaction::Transaction<'_>) -> Result<()> {
    for key in [KEY_EVENT_BUCKETS, KEY_OBJECT_BUCKETS] {
        let set = tx.put_object(automerge::ROOT, key, ObjType::Map)?;
        for i in 0..schema::BUCKETS {
            tx.put_object(&set, schema::bucket_key(i), ObjType::Map)?;
        }
    }
    Ok(())
}

/// Write an object's fields into its bucket: the marker (if new) and every field of `json`
/// that differs from `previous` (all of them if there is none); fields in `previous` but not
/// in `json` are deleted. Each field's value is its JSON text.
fn put_object_fields(
    tx: &mut automerge::transaction::Transaction<'_>,
    bucket: &ObjId,
    kind: ObjectKind,
    id: &Id,
    json: &serde_json::Value,
    previous: Option<&serde_json::Value>,
) -> Result<()> {
    let empty = serde_json::Map::new();
    let fields = json.as_object().unwrap_or(&empty);
    let before = previous.and_then(|p| p.as_object());
    if before.is_none() {
        tx.put(
            bucket,
            schema::marker_key(kind, id.as_str()),
            kind.root_key(),
        )?;
    }
    for (field, value) in fields {
        if before.is_some_and(|b| b.get(field) == Some(value)) {
            continue;
        }
        let text = serde_json::to_string(value).map_err(json_err("object field"))?;
        tx.put(bucket, schema::field_key(kind, id.as_str(), field), text)?;
    }
    if let Some(before) = before {
        for field in before.keys() {
            if !fields.contains_key(field) {
                tx.delete(bucket, schema::field_key(kind, id.as_str(), field))?;
            }
        }
    }
    Ok(())
}

/// Refuse a change no peer would accept (admission's size limits), before it is made.
/// `bytes` is the size of the values written (the change's encoding is smaller or close).
fn check_change_size(ops: usize, bytes: usize) -> Result<()> {
    use crate::admission::{MAX_CHANGE_BYTES, MAX_CHANGE_OPS};
    if ops > MAX_CHANGE_OPS || bytes > MAX_CHANGE_BYTES {
        return Err(Error::ChangeTooLarge {
            size: bytes,
            ops,
            limit: MAX_CHANGE_BYTES,
            ops_limit: MAX_CHANGE_OPS,
        });
    }
    Ok(())
}

/// An object id must be 1 to 512 bytes without control characters (it is part of a key).
/// The id an object's fields fix, if its kind has one (an agent relationship's
/// `[subject, relationship, object]`).
fn fixed_id<T: VfObject>(obj: &T) -> Result<Option<Id>> {
    if T::KIND != ObjectKind::AgentRelationship {
        return Ok(None);
    }
    let json = serde_json::to_value(obj).map_err(json_err("object"))?;
    let part = |f: &str| Id::from(json.get(f).and_then(|v| v.as_str()).unwrap_or_default());
    Ok(Some(crate::vf::AgentRelationship::id_for(
        &part("subject"),
        &part("relationship"),
        &part("object"),
    )))
}

fn check_id(id: &Id) -> Result<()> {
    if schema::valid_id(id.as_str()) {
        Ok(())
    } else {
        Err(Error::InvalidId { id: id.clone() })
    }
}

/// Read one entry of an event bucket: its key must be its own op id.
fn read_bucket_event(
    key: &str,
    value: &Value<'_>,
    id: &ObjId,
) -> std::result::Result<Entry, (Option<OrderKey>, String)> {
    let automerge::ObjId::Id(counter, actor, _) = id else {
        return Err((None, "not a map entry".into()));
    };
    let op = OrderKey {
        counter: *counter,
        actor: actor.clone(),
    };
    if op.to_id().as_str() != key {
        return Err((Some(op), "an event's key is not its own op id".into()));
    }
    event_at(op, value).map_err(|(k, r)| (Some(k), r))
}

/// Where a ledger's values live in its document (see `schema`).
#[derive(Debug, Clone)]
struct Layout {
    /// The root `schemaVersion`.
    version: u64,
    /// The v1 events list and object maps (v1 ledgers, and v2 ledgers migrated from v1).
    legacy: Option<Legacy>,
    /// The 256 event buckets of each bucket set (one set, unless two admins migrated a v1
    /// ledger concurrently: then every set is read, and the root key's winner is written).
    event_sets: Vec<Vec<ObjId>>,
    /// The 256 object buckets of each set, the winner first.
    object_sets: Vec<Vec<ObjId>>,
    /// The (counter, actor) of every event bucket, to recognise event ops in a change.
    event_bucket_ids: HashSet<(u64, ActorId)>,
}

/// Give a freshly loaded document's columns the slab boundaries a running document has, so
/// that the first writes after an open do not pay for it.
///
/// Automerge 0.12 keeps each column of ops in slabs of about 4 KiB (hexane's `RawColumn`), but
/// a document loaded from saved bytes holds each column as one slab; the slab is split only at
/// the point an op is inserted, and each split copies the slab's part after that point into a
/// new allocation. So each of the first few hundred changes written or received after an open
/// copied megabytes of a 100k ledger's value column (the live hop was ~50 ms for the first
/// ~250 events, then ~1.5 ms; docs/performance.md, "The live hop after an open"). Here a
/// transaction that is rolled back, never committed, puts one value at the end of every
/// bucket, from the last bucket in the column's order to the first: each split then copies
/// only the part after it, one bucket's worth, so the whole column is copied once. Nothing
/// of it reaches the document's history, heads or ops (the rollback removes the ops; only
/// the slab boundaries stay).
fn split_loaded_columns(doc: &mut Automerge, layout: &Layout) {
    let mut buckets: Vec<&ObjId> = layout
        .event_sets
        .iter()
        .chain(layout.object_sets.iter())
        .flatten()
        .collect();
    // Ops are stored by object (the creating op's counter, then actor), then key.
    buckets.sort_by_key(|b| std::cmp::Reverse(bucket_order(b)));
    let mut tx = doc.transaction();
    for bucket in buckets {
        // A key after every event and object id (ids are ASCII), a value of one byte (an
        // empty one would not touch the value column).
        let _ = tx.put(bucket, "\u{10FFFF}", "x");
    }
    tx.rollback();
}

fn bucket_order(id: &ObjId) -> (u64, Option<ActorId>) {
    match id {
        ObjId::Id(counter, actor, _) => (*counter, Some(actor.clone())),
        ObjId::Root => (0, None),
    }
}

#[derive(Debug, Clone)]
struct Legacy {
    events: ObjId,
    maps: HashMap<ObjectKind, ObjId>,
}

impl Layout {
    fn resolve(doc: &Automerge) -> Result<Layout> {
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
        if version == 0 {
            return Err(Error::NotALedger("schemaVersion 0".into()));
        }
        let legacy = match doc.get(automerge::ROOT, KEY_V1_EVENTS)? {
            Some((Value::Object(ObjType::List), events)) => {
                let mut maps = HashMap::new();
                for kind in ObjectKind::MAPS {
                    if let Some((Value::Object(ObjType::Map), id)) =
                        doc.get(automerge::ROOT, kind.root_key())?
                    {
                        maps.insert(kind, id);
                    }
                }
                Some(Legacy { events, maps })
            }
            _ => None,
        };
        let sets = |key: &str| -> Result<Vec<Vec<ObjId>>> {
            let winner = match doc.get(automerge::ROOT, key)? {
                Some((Value::Object(ObjType::Map), id)) => Some(id),
                _ => None,
            };
            let mut all: Vec<ObjId> = doc
                .get_all(automerge::ROOT, key)?
                .into_iter()
                .filter(|(v, _)| matches!(v, Value::Object(ObjType::Map)))
                .map(|(_, id)| id)
                .collect();
            all.sort_by_key(|id| Some(id) != winner.as_ref());
            let mut out = Vec::new();
            for set in all {
                let mut buckets = Vec::with_capacity(schema::BUCKETS);
                for i in 0..schema::BUCKETS {
                    match doc.get(&set, schema::bucket_key(i))? {
                        Some((Value::Object(ObjType::Map), id)) => buckets.push(id),
                        _ => {
                            return Err(Error::NotALedger(format!(
                                "bucket {} of `{key}` is missing",
                                schema::bucket_key(i)
                            )))
                        }
                    }
                }
                out.push(buckets);
            }
            Ok(out)
        };
        let event_sets = sets(KEY_EVENT_BUCKETS)?;
        let object_sets = sets(KEY_OBJECT_BUCKETS)?;
        if version >= 2 && (event_sets.is_empty() || object_sets.is_empty()) {
            return Err(Error::NotALedger(
                "a version-2 ledger without buckets".into(),
            ));
        }
        if legacy.is_none() && event_sets.is_empty() {
            return Err(Error::NotALedger("no events at the root".into()));
        }
        let event_bucket_ids = event_sets
            .iter()
            .flatten()
            .filter_map(|id| match id {
                automerge::ObjId::Id(c, a, _) => Some((*c, a.clone())),
                automerge::ObjId::Root => None,
            })
            .collect();
        Ok(Layout {
            version,
            legacy,
            event_sets,
            object_sets,
            event_bucket_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vf::{Action, Agent, EconomicEvent, ResourceDescription, Unit};

    fn actor(n: u8) -> ActorId {
        ActorId::from(vec![n; 16])
    }

    /// The slab split of a loaded document leaves no trace in it: what it saves, its heads,
    /// and the next change written on it (byte for byte) are those of the same bytes loaded
    /// without the split.
    #[test]
    fn splitting_a_loaded_documents_columns_changes_nothing_in_it() {
        let mut l = Ledger::new_network("market", actor(1)).expect("genesis");
        l.create(Unit::new("kg", "kilogram", "kg")).expect("unit");
        l.create(Agent::person("ana", "Ana")).expect("agent");
        for i in 0..300 {
            l.record_event(
                EconomicEvent::new(Action::Produce, "ana", "ana")
                    .quantity(i + 1, "kg")
                    .creating(ResourceDescription::new(format!("lot-{i}"), "Apples")),
            )
            .expect("event");
        }
        let bytes = l.save();
        let load = || Automerge::load(&bytes).expect("load").with_actor(actor(2));
        let (mut split, mut plain) = (load(), load());
        let layout = Layout::resolve(&split).expect("layout");
        split_loaded_columns(&mut split, &layout);
        assert_eq!(split.save(), plain.save(), "the same document is saved");
        assert_eq!(split.get_heads(), plain.get_heads());
        let bucket = &layout.event_sets[0][7];
        let next = |doc: &mut Automerge| {
            let mut tx = doc.transaction();
            tx.put(bucket, "an-event", "{\"action\":\"produce\"}")
                .expect("put");
            tx.commit_with(automerge::transaction::CommitOptions::default().with_time(7));
            doc.get_last_local_change()
                .expect("change")
                .raw_bytes()
                .to_vec()
        };
        assert_eq!(
            next(&mut split),
            next(&mut plain),
            "the next change is the same"
        );
        assert_eq!(split.save(), plain.save());
        // And a ledger opened the usual way (split inside) reads every event.
        let reopened = Ledger::load(&bytes, actor(3)).expect("ledger");
        assert_eq!(reopened.event_count(), 300);
        assert_eq!(
            reopened.save(),
            Ledger::load(&bytes, actor(4)).expect("ledger").save()
        );
    }
}
