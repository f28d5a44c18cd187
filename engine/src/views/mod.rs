//! Derived views: resource state, conflicts, and track and trace.
//!
//! Everything here is a pure function of the ledger's economic events. Events are folded in
//! one total order, the **causal order** Automerge itself uses for operations: by the Lamport
//! counter of the operation that recorded the event, ties broken by actor id ([`OrderKey`]).
//! If a replica saw event A before recording event B, B's counter is higher, so cause comes
//! before effect; concurrent events (two stalls offline) are ordered by counter and actor,
//! which every replica computes the same way. Wall clocks (`hasPointInTime`) play no part:
//! phone clocks at a market are wrong often enough to make a view depend on them.
//!
//! The views are cached: each resource keeps its fold state, and a new event that sorts after
//! everything already folded into its resources is applied in O(1). Only an event that sorts
//! before already-folded ones (it arrived late from a peer), or a correction, makes the
//! resources it touches fold again from their first event; other resources are untouched.

mod fold;
pub(crate) mod stored;
mod trace;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Serialize, Serializer};

use fold::{FoldIssue, FoldState, Side};
pub use fold::{QuantityKind, TransferOf};
pub use stored::StoredViewsError;
pub use trace::{Trace, TraceNode, TraceStep};

use std::sync::Arc;

pub use crate::order::OrderKey;
use crate::rules::{EventRules, ResourceSeen, Which};
use crate::vf::{EconomicEvent, Id, Measure, Quantity};

/// Answers "had the recorder of one event seen another?" from the ledger's change history.
pub trait Causality {
    /// For each of `candidates`, whether it is in the causal past of `event` (recorded in a
    /// change that `event`'s change depends on, directly or not, or in the same change).
    fn in_causal_past(&self, event: &OrderKey, candidates: &[OrderKey]) -> Vec<bool>;
}

/// How many earlier events an overdraw conflict names at most.
pub const MAX_COMPETING: usize = 64;

/// Two or more events that are valid one by one and wrong together. Every replica with the
/// same changes lists the same conflicts in the same order. Each names the events involved so
/// a person can resolve it with a correcting event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Conflict {
    /// A resource's quantity went below zero: more was consumed, sold or moved out than was
    /// there. `competing` are the earlier decrements of the same quantity that the recorder of
    /// `event` had not seen (concurrent with it): typically the other half of an offline
    /// double sale. Empty when the recorder simply took out more than the ledger knew of.
    #[serde(rename_all = "camelCase")]
    Overdraw {
        /// The resource.
        resource: Id,
        /// The event that took it below zero.
        event: Id,
        /// Accounting or onhand.
        quantity: QuantityKind,
        /// The balance after the event (negative).
        balance: Measure,
        /// Concurrent earlier decrements, oldest first (at most [`MAX_COMPETING`]).
        competing: Vec<Id>,
    },
    /// The same provider handed the same resource on twice: custody (or rights) had already
    /// moved away from them in `earlier` when `event` moved it again.
    #[serde(rename_all = "camelCase")]
    DoubleTransfer {
        /// The resource.
        resource: Id,
        /// The second handover.
        event: Id,
        /// The first handover.
        earlier: Id,
        /// Custody or rights.
        of: TransferOf,
    },
    /// An event affects a resource that no longer exists: every event that created it was
    /// corrected away (by `removed_by`).
    #[serde(rename_all = "camelCase")]
    EventOnRemovedResource {
        /// The resource.
        resource: Id,
        /// The event that still refers to it.
        event: Id,
        /// The correction that removed the resource.
        removed_by: Id,
    },
    /// Several events correct the same event, made concurrently. The first in the ledger's
    /// order counts; the others (`superseded`) are not applied until someone resolves it.
    #[serde(rename_all = "camelCase")]
    ConcurrentCorrections {
        /// The corrected event.
        corrected: Id,
        /// The correction that counts.
        applied: Id,
        /// The ones that do not.
        superseded: Vec<Id>,
    },
    /// A sum overflowed the decimal range; the event's quantity was not applied.
    #[serde(rename_all = "camelCase")]
    QuantityOverflow {
        /// The resource.
        resource: Id,
        /// The event.
        event: Id,
    },
    /// An event breaks a *flag* rule of the network's rule set in force in its causal past, or
    /// a rule could not be evaluated for it (then `error` says why: a rule that fails is
    /// never a silent pass). The event stands (docs/rules.md).
    #[serde(rename_all = "camelCase")]
    RuleViolation {
        /// The event.
        event: Id,
        /// The rule's name.
        rule: String,
        /// The rule's outcome (`flag`, or `refuse` for a refuse rule that failed to evaluate).
        outcome: crate::rules::Outcome,
        /// The rule's message, or what went wrong evaluating it.
        message: String,
        /// The rule set version that judged it.
        version: u64,
        /// The evaluation error, if the rule could not be evaluated.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Events fulfilling a commitment add up to more than it committed: typically two stalls
    /// that both delivered what one commitment asked, offline. `event` is the one that took
    /// the total over; `competing` the earlier fulfilments its recorder had not seen
    /// (concurrent with it; empty when someone knowingly delivered more).
    #[serde(rename_all = "camelCase")]
    OverFulfilment {
        /// The commitment.
        commitment: Id,
        /// The fulfilling event that took the total over the committed quantity.
        event: Id,
        /// What was committed.
        committed: Measure,
        /// What all counted fulfilling events add up to.
        fulfilled: Measure,
        /// Earlier fulfilling events concurrent with `event`, in order.
        competing: Vec<Id>,
    },
    /// Commitments and events satisfying an intent add up to more than it offered or asked
    /// for: two buyers who both accepted the same offer, offline. `by` (a commitment or an
    /// event) took the total over; `competing` are the earlier satisfiers concurrent with it.
    #[serde(rename_all = "camelCase")]
    OverSatisfaction {
        /// The intent.
        intent: Id,
        /// The commitment or event that took the total over.
        by: Id,
        /// What the intent offered or asked for.
        wanted: Measure,
        /// What all satisfiers add up to.
        satisfied: Measure,
        /// Earlier satisfiers concurrent with `by`, in order.
        competing: Vec<Id>,
    },
    /// Events settling a claim add up to more than was claimed.
    #[serde(rename_all = "camelCase")]
    OverSettlement {
        /// The claim.
        claim: Id,
        /// The settling event that took the total over.
        event: Id,
        /// What was claimed.
        claimed: Measure,
        /// What all settling events add up to.
        settled: Measure,
        /// Earlier settling events concurrent with `event`, in order.
        competing: Vec<Id>,
    },
    /// An event from a peer could not be read or breaks the ledger's rules; it is not applied.
    #[serde(rename_all = "camelCase")]
    InvalidEvent {
        /// The event's id.
        event: Id,
        /// Why it was rejected.
        reason: String,
    },
}

impl Conflict {
    /// The event whose position orders this conflict in the list.
    pub fn event(&self) -> &Id {
        match self {
            Conflict::Overdraw { event, .. }
            | Conflict::DoubleTransfer { event, .. }
            | Conflict::EventOnRemovedResource { event, .. }
            | Conflict::QuantityOverflow { event, .. }
            | Conflict::RuleViolation { event, .. }
            | Conflict::OverFulfilment { event, .. }
            | Conflict::OverSettlement { event, .. }
            | Conflict::OverSatisfaction { by: event, .. }
            | Conflict::InvalidEvent { event, .. } => event,
            Conflict::ConcurrentCorrections { applied, .. } => applied,
        }
    }
}

/// An event as held by the views, with its place in the order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: OrderKey,
    /// Boxed: an event is about 750 bytes inline, most of it fields that are `None`. Unboxed,
    /// the hash table of the views (whose slots are sized for its capacity, up to twice its
    /// length) held 104 MB for 100,000 events and copied them all on every growth; boxed, a
    /// slot is two keys and a pointer, and an event is allocated once, where it is read.
    pub event: Box<EconomicEvent>,
}

/// Which of a resource's events (by position in its order) were recorded by a device that had
/// seen every earlier event on it. The answer is true up to some position and false from
/// there on (an event sees all before it only if the event before it did too), so two
/// numbers hold it.
#[derive(Debug, Default, Clone, Copy)]
struct SeesAll {
    /// The positions below this one are answered.
    checked: usize,
    /// The first answered position whose recorder had not seen everything before it.
    first_blind: Option<usize>,
}

#[derive(Debug, Default, Clone)]
struct ResourceFold {
    /// Every event touching the resource, in order, with the side it touches on.
    events: Vec<(OrderKey, Side)>,
    state: FoldState,
    removed_by: Option<Id>,
    conflicts: Vec<Conflict>,
    /// For rules: whether the recorder of an event had seen every earlier event on this
    /// resource (memo, filled as rules need it; cleared when the resource folds again).
    sees_all: SeesAll,
    /// The last event folded and the state just before it, while rules are in use: rules
    /// that arrive for that event (a local write's) are judged without folding again.
    before_last: Option<(OrderKey, FoldState)>,
}

/// Equal folds: the same events, state, removal and conflicts (as a set: the order a fold
/// found them in differs between a local write, judged by its rules after it folded, and a
/// fold from scratch, and is no answer: [`Views::conflicts`] sorts). `sees_all` (a memo, filled
/// as rules ask) and `before_last` (a shortcut for rules that arrive after their event
/// folded: without it the resource folds again, to the same result) change no answer, and
/// stored views leave them empty.
impl PartialEq for ResourceFold {
    fn eq(&self, other: &Self) -> bool {
        let ResourceFold {
            events,
            state,
            removed_by,
            conflicts,
            sees_all: _,
            before_last: _,
        } = self;
        *events == other.events && *state == other.state && *removed_by == other.removed_by && {
            let (mut a, mut b) = (conflicts.clone(), other.conflicts.clone());
            a.sort();
            b.sort();
            a == b
        }
    }
}

/// The cached views over a ledger's events.
#[derive(Debug, Default, Clone)]
pub struct Views {
    entries: HashMap<OrderKey, Entry>,
    /// All valid events, in order.
    order: BTreeSet<OrderKey>,
    resources: HashMap<Id, ResourceFold>,
    /// Events that are input or output of each process.
    by_process: HashMap<Id, BTreeSet<OrderKey>>,
    /// For each corrected event, the events that correct it, in order.
    corrections: HashMap<OrderKey, BTreeSet<OrderKey>>,
    /// Events that do not count: corrected ones and superseded corrections.
    excluded: HashSet<OrderKey>,
    /// For each resource, the events recorded as creating it.
    creators: HashMap<Id, BTreeSet<OrderKey>>,
    correction_conflicts: BTreeMap<OrderKey, Conflict>,
    invalid: BTreeMap<OrderKey, Conflict>,
    /// The rules each event is judged by (set by the replica, `crate::rules`).
    rule_inputs: HashMap<OrderKey, Arc<EventRules>>,
    /// Rule findings of events that touch no resource (the others' are in their resource's
    /// fold: they are found again whenever it folds again).
    rule_flags: BTreeMap<OrderKey, Vec<Conflict>>,
    /// For each planning object an event points to (`fulfills`, `satisfies`, `settles`,
    /// `realizationOf`, `reciprocalRealizationOf`), the events that point to it, in order.
    planning_refs: HashMap<(PlanningRef, Id), BTreeSet<OrderKey>>,
    /// For each container, the events that combined something into it, in order.
    by_container: HashMap<Id, BTreeSet<OrderKey>>,
}

/// Equal views: every field equal (the resources' memos aside, see [`ResourceFold`]), the
/// rule inputs compared by what judges an event (rule set, recorder, admission's findings).
/// What tests compare stored views with a fold from scratch by.
impl PartialEq for Views {
    fn eq(&self, other: &Self) -> bool {
        // Every field named: a field added later must be added here too.
        let Views {
            entries,
            order,
            resources,
            by_process,
            corrections,
            excluded,
            creators,
            correction_conflicts,
            invalid,
            rule_inputs,
            rule_flags,
            planning_refs,
            by_container,
        } = self;
        let same_rules = rule_inputs.len() == other.rule_inputs.len()
            && rule_inputs.iter().all(|(k, r)| {
                other.rule_inputs.get(k).is_some_and(|o| {
                    (Arc::ptr_eq(&r.rules, &o.rules) || r.rules.rule_set() == o.rules.rule_set())
                        && r.recorder == o.recorder
                        && r.refuse_errors == o.refuse_errors
                })
            });
        *entries == other.entries
            && *order == other.order
            && *resources == other.resources
            && *by_process == other.by_process
            && *corrections == other.corrections
            && *excluded == other.excluded
            && *creators == other.creators
            && *correction_conflicts == other.correction_conflicts
            && *invalid == other.invalid
            && same_rules
            && *rule_flags == other.rule_flags
            && *planning_refs == other.planning_refs
            && *by_container == other.by_container
    }
}

/// Which planning field of an event refers to an object (see [`Views::referring`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlanningRef {
    /// `fulfills` (a commitment).
    Fulfills,
    /// `satisfies` (an intent).
    Satisfies,
    /// `settles` (a claim).
    Settles,
    /// `realizationOf` (an agreement; a commitment in events written before `fulfills`).
    RealizationOf,
    /// `reciprocalRealizationOf` (an agreement).
    ReciprocalRealizationOf,
}

impl PlanningRef {
    /// Every planning reference field.
    pub const ALL: [PlanningRef; 5] = [
        PlanningRef::Fulfills,
        PlanningRef::Satisfies,
        PlanningRef::Settles,
        PlanningRef::RealizationOf,
        PlanningRef::ReciprocalRealizationOf,
    ];

    /// The id this field of `event` names, if set.
    pub fn of(self, event: &EconomicEvent) -> Option<&Id> {
        match self {
            PlanningRef::Fulfills => event.fulfills.as_ref(),
            PlanningRef::Satisfies => event.satisfies.as_ref(),
            PlanningRef::Settles => event.settles.as_ref(),
            PlanningRef::RealizationOf => event.realization_of.as_ref(),
            PlanningRef::ReciprocalRealizationOf => event.reciprocal_realization_of.as_ref(),
        }
    }
}

/// A serializer helper: conflicts sorted in the one order every replica uses.
fn sort_conflicts(conflicts: &mut [(OrderKey, Conflict)]) {
    conflicts.sort();
}

impl Views {
    /// Number of events held (valid ones, including corrected ones).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no events are held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub(crate) fn entry(&self, key: &OrderKey) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub(crate) fn entries_in_order(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.order.iter().filter_map(|k| self.entries.get(k))
    }

    pub(crate) fn is_excluded(&self, key: &OrderKey) -> bool {
        self.excluded.contains(key)
    }

    /// The correction that counts for `key`, if it was corrected.
    pub(crate) fn corrected_by(&self, key: &OrderKey) -> Option<&OrderKey> {
        self.corrections.get(key).and_then(|c| c.iter().next())
    }

    pub(crate) fn process_events(&self, process: &Id) -> impl Iterator<Item = &Entry> + '_ {
        self.by_process
            .get(process)
            .into_iter()
            .flatten()
            .filter_map(|k| self.entry(k))
    }

    pub(crate) fn resource_events(&self, resource: &Id) -> impl Iterator<Item = &Entry> + '_ {
        self.resources
            .get(resource)
            .into_iter()
            .flat_map(|f| f.events.iter())
            .filter_map(|(k, _)| self.entry(k))
    }

    /// The events whose `field` names `target`, in the total order, corrected ones left out.
    pub(crate) fn referring(
        &self,
        field: PlanningRef,
        target: &Id,
    ) -> impl Iterator<Item = &Entry> + '_ {
        self.planning_refs
            .get(&(field, target.clone()))
            .into_iter()
            .flatten()
            .filter(|k| !self.excluded.contains(*k))
            .filter_map(|k| self.entry(k))
    }

    /// The combine events that put something into `container`, in order.
    pub(crate) fn combined_into(&self, container: &Id) -> impl Iterator<Item = &Entry> + '_ {
        self.by_container
            .get(container)
            .into_iter()
            .flatten()
            .filter_map(|k| self.entry(k))
    }

    /// Whether the views know this resource (some event touches it).
    pub fn has_resource(&self, id: &Id) -> bool {
        self.resources.contains_key(id)
    }

    /// Ids of every resource some event touches, sorted.
    pub fn resource_ids(&self) -> Vec<&Id> {
        let mut ids: Vec<&Id> = self.resources.keys().collect();
        ids.sort();
        ids
    }

    /// The unit a resource is counted in, if known.
    pub fn resource_unit(&self, id: &Id) -> Option<&Id> {
        self.resources.get(id).and_then(|f| f.state.unit.as_ref())
    }

    /// Derived state of a resource.
    pub(crate) fn resource_state(&self, id: &Id) -> Option<(&FoldState, Option<&Id>)> {
        self.resources
            .get(id)
            .map(|f| (&f.state, f.removed_by.as_ref()))
    }

    /// Record that a stored event could not be accepted.
    pub(crate) fn add_invalid(&mut self, key: OrderKey, reason: String) {
        let event = key.to_id();
        self.invalid
            .insert(key, Conflict::InvalidEvent { event, reason });
    }

    /// Add new events (from a local recording or a merge) and update the views.
    pub(crate) fn add_events(&mut self, mut new: Vec<Entry>, causality: &dyn Causality) {
        if new.is_empty() {
            return;
        }
        // In the views' order: a batch read from the document comes bucket by bucket, and a
        // resource given its events out of order would fold again from the start (with every
        // rule judged again) once per batch, a cost that grows with the resource's history.
        // (An entry's event is boxed: sorting moves keys and pointers, not events.)
        new.sort_by(|a, b| a.key.cmp(&b.key));
        let mut refold: BTreeSet<Id> = BTreeSet::new();
        let mut appended: Vec<(OrderKey, Id, Side)> = Vec::new();
        let mut corrections_changed: BTreeSet<OrderKey> = BTreeSet::new();

        for entry in new {
            let key = entry.key.clone();
            if self.entries.contains_key(&key) {
                continue;
            }
            let e = &entry.event;
            self.index_event(&key, e);
            if let Some(created) = &e.created_resource {
                refold.insert(created.clone());
            }
            if let Some(target) = e.corrects.as_ref().and_then(OrderKey::parse) {
                corrections_changed.insert(target);
            }
            if !self.rule_inputs.is_empty() && fold::sides(e).is_empty() {
                if let Some(r) = self.rule_inputs.get(&key) {
                    let found = judge_rules(r, e, None);
                    if !found.is_empty() {
                        self.rule_flags.insert(key.clone(), found);
                    }
                }
            }
            for (rid, side) in fold::sides(e) {
                let f = self.resources.entry(rid.clone()).or_default();
                if f.events.last().is_some_and(|(k, _)| *k > key) {
                    // Arrived late for this resource: fold it again from the start.
                    let pos = f.events.partition_point(|(k, _)| *k < key);
                    f.events.insert(pos, (key.clone(), side));
                    // Positions moved: the memo is rebuilt as the resource folds again.
                    f.sees_all = SeesAll::default();
                    refold.insert(rid.clone());
                } else {
                    f.events.push((key.clone(), side));
                    appended.push((key.clone(), rid.clone(), side));
                }
            }
            self.order.insert(key.clone());
            self.entries.insert(key, entry);
        }

        if !corrections_changed.is_empty() {
            for target in &corrections_changed {
                // Everything the corrected event and all its corrections touch folds again,
                // and so does everything down the chain of events it corrects in turn: a
                // correction of a correction decides whether the resources those created are
                // removed, and by which correction (see `removal`).
                let mut involved = vec![target.clone()];
                involved.extend(self.corrections[target].iter().cloned());
                let mut current = target.clone();
                while let Some(next) = self
                    .entries
                    .get(&current)
                    .and_then(|e| e.event.corrects.as_ref())
                    .and_then(OrderKey::parse)
                {
                    // A correction names an earlier event; stop on anything else (no cycles).
                    if next >= current {
                        break;
                    }
                    involved.push(next.clone());
                    current = next;
                }
                for k in &involved {
                    if let Some(entry) = self.entries.get(k) {
                        for (rid, _) in fold::sides(&entry.event) {
                            refold.insert(rid.clone());
                        }
                        if let Some(c) = &entry.event.created_resource {
                            refold.insert(c.clone());
                        }
                    }
                }
            }
            self.recompute_exclusions();
        }

        // Events that came in order: fold incrementally into resources not refolded anyway.
        // Per resource they were appended in increasing order, so folding in that order is
        // exactly what a full fold would do.
        for (key, rid, side) in appended {
            if !refold.contains(&rid) {
                self.fold_step(&rid, &key, side, causality);
            }
        }
        for rid in refold {
            self.refold(&rid, causality);
        }
    }

    /// Enter the event at `key` in the indexes by process, planning object, container,
    /// created resource and corrected event (what [`Views::add_events`] and stored views
    /// rebuild alike).
    fn index_event(&mut self, key: &OrderKey, e: &EconomicEvent) {
        for p in [&e.input_of, &e.output_of].into_iter().flatten() {
            self.by_process
                .entry(p.clone())
                .or_default()
                .insert(key.clone());
        }
        for r in PlanningRef::ALL {
            if let Some(target) = r.of(e) {
                self.planning_refs
                    .entry((r, target.clone()))
                    .or_default()
                    .insert(key.clone());
            }
        }
        if e.action == crate::vf::Action::Combine {
            if let Some(container) = &e.to_resource_inventoried_as {
                self.by_container
                    .entry(container.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        if let Some(created) = &e.created_resource {
            self.creators
                .entry(created.clone())
                .or_default()
                .insert(key.clone());
        }
        if let Some(target) = e.corrects.as_ref().and_then(OrderKey::parse) {
            self.corrections
                .entry(target)
                .or_default()
                .insert(key.clone());
        }
    }

    fn recompute_exclusions(&mut self) {
        self.excluded.clear();
        self.correction_conflicts.clear();
        for (target, correctors) in &self.corrections {
            self.excluded.insert(target.clone());
            let mut it = correctors.iter();
            let Some(applied) = it.next() else { continue };
            let superseded: Vec<OrderKey> = it.cloned().collect();
            if !superseded.is_empty() {
                self.excluded.extend(superseded.iter().cloned());
                self.correction_conflicts.insert(
                    applied.clone(),
                    Conflict::ConcurrentCorrections {
                        corrected: target.to_id(),
                        applied: applied.to_id(),
                        superseded: superseded.iter().map(OrderKey::to_id).collect(),
                    },
                );
            }
        }
    }

    /// Whether `resource` was removed by corrections, and by which correction.
    fn removal(&self, resource: &Id) -> Option<Id> {
        let creators = self.creators.get(resource)?;
        let mut last_correction = None;
        for c in creators {
            if !self.excluded.contains(c) {
                return None;
            }
            // A correction that itself refers to the resource keeps it alive. If that
            // correction was corrected in turn, the correction of the correction decides.
            let mut by = self.corrected_by(c)?;
            while self.excluded.contains(by) {
                match self.corrected_by(by) {
                    Some(next) if next > by => by = next,
                    _ => break,
                }
            }
            let keeps = self.entries.get(by).is_some_and(|e| {
                !self.excluded.contains(by)
                    && fold::sides(&e.event).iter().any(|(r, _)| *r == resource)
            });
            if keeps {
                return None;
            }
            last_correction = Some(by.to_id());
        }
        last_correction
    }

    fn refold(&mut self, rid: &Id, causality: &dyn Causality) {
        let Some(f) = self.resources.get_mut(rid) else {
            return;
        };
        f.state = FoldState::default();
        f.conflicts.clear();
        f.removed_by = None;
        f.sees_all = SeesAll::default();
        f.before_last = None;
        let events: Vec<(OrderKey, Side)> = f.events.clone();
        let removed = self.removal(rid);
        if let Some(f) = self.resources.get_mut(rid) {
            f.removed_by = removed;
        }
        for (key, side) in events {
            self.fold_step(rid, &key, side, causality);
        }
    }

    fn fold_step(&mut self, rid: &Id, key: &OrderKey, side: Side, causality: &dyn Causality) {
        self.rule_step(rid, key, side, causality);
        // The state before the event, for rules that come after it folded (a local write,
        // `set_rule_inputs`); an event whose rules are known was judged just now.
        if !self.rule_inputs.is_empty() && !self.rule_inputs.contains_key(key) {
            if let Some(f) = self.resources.get_mut(rid) {
                f.before_last = Some((key.clone(), f.state.clone()));
            }
        }
        if self.excluded.contains(key) {
            return;
        }
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        let event = &entry.event;
        let Some(f) = self.resources.get(rid) else {
            return;
        };
        if let Some(removed_by) = &f.removed_by {
            let conflict = Conflict::EventOnRemovedResource {
                resource: rid.clone(),
                event: event.id.clone(),
                removed_by: removed_by.clone(),
            };
            if let Some(f) = self.resources.get_mut(rid) {
                f.conflicts.push(conflict);
            }
            return;
        }
        let creates =
            event.created_resource.as_ref() == Some(rid) || self.stands_in_for_creator(key, rid);
        let mut state = f.state.clone();
        let issues = state.apply(event, side, creates);
        let mut conflicts = Vec::new();
        for issue in issues {
            conflicts.push(match issue {
                FoldIssue::Overdraw { quantity, balance } => Conflict::Overdraw {
                    resource: rid.clone(),
                    event: event.id.clone(),
                    quantity,
                    balance: Measure {
                        has_numerical_value: balance,
                        has_unit: state.unit.clone().unwrap_or_else(|| Id::from("one")),
                    },
                    competing: self.competing(rid, key, quantity, causality),
                },
                FoldIssue::DoubleTransfer { of, earlier } => Conflict::DoubleTransfer {
                    resource: rid.clone(),
                    event: event.id.clone(),
                    earlier,
                    of,
                },
                FoldIssue::Overflow => Conflict::QuantityOverflow {
                    resource: rid.clone(),
                    event: event.id.clone(),
                },
            });
        }
        if let Some(f) = self.resources.get_mut(rid) {
            f.state = state;
            f.conflicts.extend(conflicts);
        }
    }

    /// Judge the event at `key` by its rules with its first resource's state as its recorder
    /// saw it (before the event): only on that resource's fold, so once per fold.
    fn rule_step(&mut self, rid: &Id, key: &OrderKey, side: Side, causality: &dyn Causality) {
        if self.rule_inputs.is_empty() {
            return;
        }
        let Some(r) = self.rule_inputs.get(key).cloned() else {
            return;
        };
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        if !needs_judging(&r, &entry.event) {
            return;
        }
        let first = fold::sides(&entry.event).first().copied();
        if first.is_none_or(|(r, s)| (r, s) != (rid, side)) {
            return;
        }
        // The resource's state now is the state just before this event.
        self.judge_on_resource(rid, key, &r, None, causality);
    }

    /// Judge the event at `key` by `r`, its resource `rid` being in state `before` just
    /// before it in the order (`None`: the resource's fold state now, while it folds just
    /// before that event); the findings go with the resource's conflicts.
    fn judge_on_resource(
        &mut self,
        rid: &Id,
        key: &OrderKey,
        r: &EventRules,
        before: Option<FoldState>,
        causality: &dyn Causality,
    ) {
        let seen = if r.rules.reads_resource() {
            if self.sees_all_before(rid, key, causality) {
                let none = FoldState::default();
                let state = before
                    .as_ref()
                    .or_else(|| self.resources.get(rid).map(|f| &f.state))
                    .unwrap_or(&none);
                Some(seen_of(rid, state))
            } else {
                Some(seen_of(rid, &self.fold_seen(rid, key, causality)))
            }
        } else {
            None
        };
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        let found = judge_rules(r, &entry.event, seen.as_ref());
        if let Some(f) = self.resources.get_mut(rid) {
            f.conflicts.extend(found);
        }
    }

    /// The state of `rid` as the recorder of the event at `key` saw it, when it had not seen
    /// every earlier event on `rid` (`sees_all_before` said so): the events on `rid` in that
    /// event's causal past, folded apart.
    fn fold_seen(&self, rid: &Id, key: &OrderKey, causality: &dyn Causality) -> FoldState {
        let Some(f) = self.resources.get(rid) else {
            return FoldState::default();
        };
        let pos = f.events.partition_point(|(k, _)| k < key);
        let earlier = &f.events[..pos];
        let keys: Vec<OrderKey> = earlier.iter().map(|(k, _)| k.clone()).collect();
        let seen = causality.in_causal_past(key, &keys);
        let mut state = FoldState::default();
        for ((k, side), seen) in earlier.iter().zip(seen) {
            if !seen || self.excluded.contains(k) {
                continue;
            }
            let Some(e) = self.entries.get(k) else {
                continue;
            };
            let creates = e.event.created_resource.as_ref() == Some(rid)
                || self.stands_in_for_creator(k, rid);
            let _ = state.apply(&e.event, *side, creates);
        }
        state
    }

    /// Whether the recorder of the event at `key` had seen every earlier event on `rid`
    /// (the usual case: then the fold state just before the event is the state it saw):
    /// event i saw all before it if it saw event i-1 and event i-1 saw all before it.
    /// Memoised per resource ([`SeesAll`]).
    fn sees_all_before(&mut self, rid: &Id, key: &OrderKey, causality: &dyn Causality) -> bool {
        let Some(f) = self.resources.get(rid) else {
            return true;
        };
        let pos = f.events.partition_point(|(k, _)| k < key);
        if pos >= f.events.len() {
            return true;
        }
        let memo = f.sees_all;
        let answer = |m: SeesAll| m.first_blind.is_none_or(|b| pos < b);
        if pos < memo.checked || memo.first_blind.is_some() {
            // Answered, or past a blind position (every later one is blind too).
            return answer(memo);
        }
        // Position 0 has nothing earlier; each next one is checked against the one before.
        let mut memo = SeesAll {
            checked: memo.checked.max(1),
            first_blind: None,
        };
        while memo.checked <= pos {
            let (prev, k) = (&f.events[memo.checked - 1].0, &f.events[memo.checked].0);
            // One actor's changes are causally ordered (Automerge's own clocks count on it:
            // a clock covers an actor's changes up to a sequence number), so an earlier op of
            // the same actor is in the causal past without walking the change graph, which
            // in Automerge 0.12 costs building every change it visits.
            let seen = (prev.actor == k.actor && prev.counter < k.counter)
                || causality.in_causal_past(k, std::slice::from_ref(prev))[0];
            if !seen {
                memo.first_blind = Some(memo.checked);
                memo.checked += 1;
                break;
            }
            memo.checked += 1;
        }
        if let Some(f) = self.resources.get_mut(rid) {
            f.sees_all = memo;
        }
        answer(memo)
    }

    /// Set the rules events are judged by without judging anything again: for stored views
    /// judged by these same rules ([`stored::rules_digest`] says so), or views about to be
    /// folded from scratch.
    pub(crate) fn install_rule_inputs(&mut self, inputs: Vec<(OrderKey, Arc<EventRules>)>) {
        self.rule_inputs.extend(inputs);
    }

    /// Empty views with the rule inputs of `other` (to fold the same document again).
    #[cfg(test)]
    pub(crate) fn with_rule_inputs_of(other: &Views) -> Views {
        Views {
            rule_inputs: other.rule_inputs.clone(),
            ..Views::default()
        }
    }

    /// The fields in which `self` and `other` differ (for a test's message).
    #[cfg(test)]
    pub(crate) fn differences(&self, other: &Views) -> Vec<String> {
        let mut out = Vec::new();
        macro_rules! cmp {
            ($($f:ident),*) => {$(
                if self.$f != other.$f {
                    out.push(format!("{}: {:?}\n  vs {:?}", stringify!($f), self.$f, other.$f));
                }
            )*};
        }
        cmp!(
            order,
            by_process,
            corrections,
            excluded,
            creators,
            correction_conflicts,
            invalid,
            rule_flags,
            planning_refs,
            by_container
        );
        if self.entries != other.entries {
            out.push("entries".into());
        }
        for (k, f) in &self.resources {
            if other.resources.get(k) != Some(f) {
                out.push(format!(
                    "resource {k:?}: {f:?}\n  vs {:?}",
                    other.resources.get(k)
                ));
            }
        }
        let a: BTreeSet<_> = self.rule_inputs.keys().collect();
        let b: BTreeSet<_> = other.rule_inputs.keys().collect();
        if a != b {
            out.push(format!("rule input keys: {a:?}\n  vs {b:?}"));
        }
        out
    }

    /// The rules each event is judged by, as set by the replica.
    pub(crate) fn rule_inputs(&self) -> impl Iterator<Item = (&OrderKey, &EventRules)> + '_ {
        self.rule_inputs.iter().map(|(k, r)| (k, &**r))
    }

    /// Take the rule inputs of `old` (views about to be rebuilt from the same document).
    pub(crate) fn keep_rule_inputs(&mut self, old: &mut Views) {
        self.rule_inputs = std::mem::take(&mut old.rule_inputs);
    }

    /// Set the rules events are judged by (`crate::rules`): an event already held is judged
    /// again (its resource folds again).
    pub(crate) fn set_rule_inputs(
        &mut self,
        inputs: Vec<(OrderKey, Arc<EventRules>)>,
        causality: &dyn Causality,
    ) {
        let mut refold: BTreeSet<Id> = BTreeSet::new();
        let mut direct: Vec<(Id, OrderKey, Arc<EventRules>)> = Vec::new();
        for (key, r) in inputs {
            if let Some(entry) = self.entries.get(&key) {
                match fold::sides(&entry.event).first() {
                    Some((rid, _)) => {
                        let rid = (*rid).clone();
                        // The last event folded into its resource (a local write): judged with
                        // the state kept from just before it; anything else folds again.
                        let last = self.resources.get(&rid).is_some_and(|f| {
                            f.events.last().map(|(k, _)| k) == Some(&key)
                                && f.before_last.as_ref().map(|(k, _)| k) == Some(&key)
                        });
                        if last {
                            direct.push((rid, key.clone(), r.clone()));
                        } else {
                            refold.insert(rid);
                        }
                    }
                    None => {
                        let found = judge_rules(&r, &entry.event, None);
                        self.rule_flags.remove(&key);
                        if !found.is_empty() {
                            self.rule_flags.insert(key.clone(), found);
                        }
                    }
                }
            }
            self.rule_inputs.insert(key, r);
        }
        for (rid, key, r) in direct {
            if refold.contains(&rid) {
                continue;
            }
            let Some(before) = self
                .resources
                .get(&rid)
                .and_then(|f| f.before_last.as_ref())
                .filter(|(k, _)| *k == key)
                .map(|(_, s)| s.clone())
            else {
                refold.insert(rid);
                continue;
            };
            self.judge_on_resource(&rid, &key, &r, Some(before), causality);
        }
        for rid in refold {
            self.refold(&rid, causality);
        }
    }

    /// Whether the event at `key` corrects (directly, or by correcting a correction) an event
    /// that created `rid`: it then stands in for the creation, so custodian, location and
    /// accountable agent are set as the creating event would have set them.
    fn stands_in_for_creator(&self, key: &OrderKey, rid: &Id) -> bool {
        let mut current = key.clone();
        loop {
            let Some(entry) = self.entries.get(&current) else {
                return false;
            };
            // A correction names an earlier event; stop on anything else (no cycles).
            let Some(target) = entry.event.corrects.as_ref().and_then(OrderKey::parse) else {
                return false;
            };
            if target >= current {
                return false;
            }
            match self.entries.get(&target) {
                Some(t) if t.event.created_resource.as_ref() == Some(rid) => return true,
                Some(_) => current = target,
                None => return false,
            }
        }
    }

    /// The earlier decrements of `quantity` on `rid` that `key`'s recorder had not seen.
    fn competing(
        &self,
        rid: &Id,
        key: &OrderKey,
        quantity: QuantityKind,
        causality: &dyn Causality,
    ) -> Vec<Id> {
        let Some(f) = self.resources.get(rid) else {
            return Vec::new();
        };
        let mut candidates: Vec<OrderKey> = Vec::new();
        for (k, side) in f.events.iter().rev() {
            if k >= key || self.excluded.contains(k) || *side == Side::To {
                continue;
            }
            let Some(e) = self.entries.get(k) else {
                continue;
            };
            let fx = e.event.action.effects();
            let effect = match quantity {
                QuantityKind::Accounting => fx.accounting,
                QuantityKind::Onhand => fx.onhand,
            };
            use crate::vf::action::QuantityEffect as Q;
            if matches!(effect, Q::Decrement | Q::DecrementIncrement) && *side != Side::Both {
                candidates.push(k.clone());
                if candidates.len() == MAX_COMPETING {
                    break;
                }
            }
        }
        if candidates.is_empty() {
            return Vec::new();
        }
        let seen = causality.in_causal_past(key, &candidates);
        let mut out: Vec<OrderKey> = candidates
            .into_iter()
            .zip(seen)
            .filter(|(_, s)| !s)
            .map(|(k, _)| k)
            .collect();
        out.sort();
        out.iter().map(OrderKey::to_id).collect()
    }

    /// Every conflict, in the one order all replicas share: by the position of the event that
    /// revealed it, then by content.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut all: Vec<(OrderKey, Conflict)> = Vec::new();
        for f in self.resources.values() {
            for c in &f.conflicts {
                if let Some(k) = OrderKey::parse(c.event()) {
                    all.push((k, c.clone()));
                }
            }
        }
        all.extend(
            self.correction_conflicts
                .iter()
                .chain(self.invalid.iter())
                .map(|(k, c)| (k.clone(), c.clone())),
        );
        for (k, found) in &self.rule_flags {
            all.extend(found.iter().map(|c| (k.clone(), c.clone())));
        }
        sort_conflicts(&mut all);
        all.into_iter().map(|(_, c)| c).collect()
    }
}

/// A resource's state, as rules see it.
pub(crate) fn seen_of(rid: &Id, state: &FoldState) -> ResourceSeen {
    ResourceSeen {
        id: rid.clone(),
        unit: state.unit.clone(),
        onhand: state.onhand,
        accounting: state.accounting,
        custodian: state.custodian.clone(),
        accountable: state.primary_accountable.clone(),
        location: state.location.clone(),
        state: state.state.clone(),
    }
}

/// Whether judging `event` by `r` could find anything: a flag rule that applies to its
/// action, or a refuse rule that failed at admission (or, not judged there, applies to it).
/// Skipping the others (their inputs, the resource's state as seen) changes no verdict.
fn needs_judging(r: &EventRules, event: &EconomicEvent) -> bool {
    r.rules.applies(Which::Flag, event.action)
        || match &r.refuse_errors {
            Some(found) => !found.is_empty(),
            None => r.rules.applies(Which::Refuse, event.action),
        }
}

/// The rule findings on one event, as conflicts.
fn judge_rules(
    r: &EventRules,
    event: &EconomicEvent,
    seen: Option<&ResourceSeen>,
) -> Vec<Conflict> {
    let version = r.rules.rule_set().version;
    // The refuse rules that failed at admission; for a stored change read again on open,
    // evaluated here (the same inputs as at admission: no resource), errors only.
    let refuse_errors = match &r.refuse_errors {
        Some(found) => found.clone(),
        None if r.rules.has_refusals() => r
            .rules
            .evaluate(event, &r.recorder, None, Which::Refuse)
            .into_iter()
            .filter(|f| f.error.is_some())
            .collect(),
        None => Vec::new(),
    };
    r.rules
        .evaluate(event, &r.recorder, seen, Which::Flag)
        .into_iter()
        .chain(refuse_errors)
        .map(|f| Conflict::RuleViolation {
            event: event.id.clone(),
            rule: f.rule,
            outcome: f.outcome,
            message: f.message,
            version,
            error: f.error,
        })
        .collect()
}

/// Serialize an [`OrderKey`] as its id string.
impl Serialize for OrderKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.to_id())
    }
}

/// The quantity zero in a unit.
pub(crate) fn zero_in(unit: Option<&Id>) -> Measure {
    Measure {
        has_numerical_value: Quantity::ZERO,
        has_unit: unit.cloned().unwrap_or_else(|| Id::from("one")),
    }
}
