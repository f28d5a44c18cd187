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
mod trace;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use automerge::ActorId;
use serde::{Serialize, Serializer};

use fold::{FoldIssue, FoldState, Side};
pub use fold::{QuantityKind, TransferOf};

pub use trace::{Trace, TraceNode, TraceStep};

use crate::vf::{EconomicEvent, Id, Measure, Quantity};

/// The position of an event in the ledger's total order: the Lamport counter of the
/// Automerge operation that recorded it, then the actor that recorded it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    /// Automerge operation counter (a Lamport clock).
    pub counter: u64,
    /// Automerge actor id.
    pub actor: ActorId,
}

impl OrderKey {
    /// The event id this key stands for: `<counter>@<actor hex>`, Automerge's own spelling.
    pub fn to_id(&self) -> Id {
        Id(format!("{}@{}", self.counter, self.actor))
    }

    /// Parse an event id back into its key.
    pub fn parse(id: &Id) -> Option<OrderKey> {
        let (ctr, actor) = id.as_str().split_once('@')?;
        let counter = ctr.parse().ok()?;
        let actor = ActorId::from(hex::decode(actor).ok()?);
        Some(OrderKey { counter, actor })
    }
}

impl fmt::Debug for OrderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.counter, self.actor)
    }
}

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
            | Conflict::OverFulfilment { event, .. }
            | Conflict::OverSettlement { event, .. }
            | Conflict::OverSatisfaction { by: event, .. }
            | Conflict::InvalidEvent { event, .. } => event,
            Conflict::ConcurrentCorrections { applied, .. } => applied,
        }
    }
}

/// An event as held by the views, with its place in the order.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: OrderKey,
    pub event: EconomicEvent,
}

#[derive(Debug, Default, Clone)]
struct ResourceFold {
    /// Every event touching the resource, in order, with the side it touches on.
    events: Vec<(OrderKey, Side)>,
    state: FoldState,
    removed_by: Option<Id>,
    conflicts: Vec<Conflict>,
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
    /// For each planning object an event points to (`fulfills`, `satisfies`, `settles`,
    /// `realizationOf`, `reciprocalRealizationOf`), the events that point to it, in order.
    planning_refs: HashMap<(PlanningRef, Id), BTreeSet<OrderKey>>,
    /// For each container, the events that combined something into it, in order.
    by_container: HashMap<Id, BTreeSet<OrderKey>>,
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
            .filter_map(|k| self.entries.get(k))
    }

    pub(crate) fn resource_events(&self, resource: &Id) -> impl Iterator<Item = &Entry> + '_ {
        self.resources
            .get(resource)
            .into_iter()
            .flat_map(|f| f.events.iter())
            .filter_map(|(k, _)| self.entries.get(k))
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
            .filter_map(|k| self.entries.get(k))
    }

    /// The combine events that put something into `container`, in order.
    pub(crate) fn combined_into(&self, container: &Id) -> impl Iterator<Item = &Entry> + '_ {
        self.by_container
            .get(container)
            .into_iter()
            .flatten()
            .filter_map(|k| self.entries.get(k))
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
    pub(crate) fn add_events(&mut self, new: Vec<Entry>, causality: &dyn Causality) {
        if new.is_empty() {
            return;
        }
        let mut refold: BTreeSet<Id> = BTreeSet::new();
        let mut appended: Vec<(OrderKey, Id, Side)> = Vec::new();
        let mut corrections_changed: BTreeSet<OrderKey> = BTreeSet::new();

        for entry in new {
            let key = entry.key.clone();
            if self.entries.contains_key(&key) {
                continue;
            }
            let e = &entry.event;
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
                refold.insert(created.clone());
            }
            if let Some(target) = e.corrects.as_ref().and_then(OrderKey::parse) {
                self.corrections
                    .entry(target.clone())
                    .or_default()
                    .insert(key.clone());
                corrections_changed.insert(target);
            }
            for (rid, side) in fold::sides(e) {
                let f = self.resources.entry(rid.clone()).or_default();
                if f.events.last().is_some_and(|(k, _)| *k > key) {
                    // Arrived late for this resource: fold it again from the start.
                    let pos = f.events.partition_point(|(k, _)| *k < key);
                    f.events.insert(pos, (key.clone(), side));
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
        sort_conflicts(&mut all);
        all.into_iter().map(|(_, c)| c).collect()
    }
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
