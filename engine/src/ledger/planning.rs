//! The ledger's planning and exchange operations: derived statuses (fulfilment, satisfaction,
//! settlement), their conflicts, accepting a proposal, and planning a process from a recipe.
//! The rules are in [`crate::planning`]; this reads the events and objects they need.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::ReadDoc;

use super::{json_err, put_object_fields, schema, DocCausality, Ledger};
use crate::error::{Error, PlanningError, Result};
use crate::planning::{
    percent_of, progress_of, tally, wanted_of, Accepted, AgreementBundleStatus, AgreementStatus,
    Candidate, ClaimStatus, CommitmentStatus, IntentStatus, NotCounted, PlanStatus, Planned,
    ProposalListStatus, RecipePlanning,
};
use crate::vf::{
    Agreement, AgreementBundle, Claim, Commitment, EconomicEvent, Id, Intent, Measure, ObjectKind,
    Plan, Process, Proposal, ProposalList, ProposalStatus, RecipeExchange, RecipeFlow,
    RecipeProcess, VfObject,
};
use crate::views::Causality;
use crate::views::{Conflict, OrderKey, PlanningRef};

/// Objects validated for one change, written together by [`Ledger::commit_staged`].
#[derive(Default)]
struct Staged {
    objects: Vec<(ObjectKind, Id, serde_json::Value, Option<serde_json::Value>)>,
}

impl Staged {
    fn has(&self, kind: ObjectKind, id: &Id) -> bool {
        self.objects
            .iter()
            .any(|(k, i, _, _)| *k == kind && i == id)
    }
}

fn measure_of(q: Option<crate::Quantity>, unit: &Id) -> Option<Measure> {
    q.map(|v| Measure {
        has_numerical_value: v,
        has_unit: unit.clone(),
    })
}

fn mismatch(field: &'static str, kind: ObjectKind, target: &Id, detail: String) -> Error {
    Error::Planning(PlanningError::DoesNotMatch {
        field,
        kind,
        target: target.clone(),
        detail,
    })
}

impl Ledger {
    /// The order key of an object: the op id of its marker (or of its v1 map), which orders
    /// objects causally like events. `None` if it does not exist.
    fn object_key(&self, kind: ObjectKind, id: &Id) -> Option<OrderKey> {
        self.object_keys(kind, id).into_iter().min()
    }

    /// Every op that made the object: its v1 map, and each put of its marker (a v1 object
    /// updated after the migration is copied into its bucket, marker included; two replicas
    /// may create one id concurrently). Whoever saw any of them had seen the object.
    fn object_keys(&self, kind: ObjectKind, id: &Id) -> Vec<OrderKey> {
        let bucket = schema::object_bucket(kind, id.as_str());
        let marker = schema::marker_key(kind, id.as_str());
        let mut keys = Vec::new();
        if let Some(automerge::ObjId::Id(counter, actor, _)) = self.legacy_object(kind, id) {
            keys.push(OrderKey { counter, actor });
        }
        for set in &self.layout.object_sets {
            for (_, op) in self
                .doc
                .get_all(&set[bucket], marker.as_str())
                .unwrap_or_default()
            {
                if let automerge::ObjId::Id(counter, actor, _) = op {
                    keys.push(OrderKey { counter, actor });
                }
            }
        }
        keys.sort();
        keys
    }

    /// Whether the event or object at `later` was made with one of the ops that `made` the
    /// object in its causal past (its recorder had seen it). An object with no such op
    /// (impossible in a judged ledger) counts as seen.
    fn has_seen_any(&self, later: &OrderKey, made: &[OrderKey]) -> bool {
        made.is_empty() || made.iter().any(|k| self.has_seen(later, k))
    }

    /// Whether the op `earlier` is in the causal past of the op `later`. Lamport order
    /// answers most cases without a walk: a smaller counter cannot have seen a larger one,
    /// and an actor's own changes form a chain.
    fn has_seen(&self, later: &OrderKey, earlier: &OrderKey) -> bool {
        if later.counter <= earlier.counter {
            return false;
        }
        if later.actor == earlier.actor {
            return true;
        }
        let pair = (later.clone(), earlier.clone());
        if let Some(known) = self.seen.borrow().get(&pair) {
            return *known;
        }
        let seen = DocCausality(&self.doc)
            .in_causal_past(later, std::slice::from_ref(earlier))
            .first()
            .copied()
            .unwrap_or(false);
        // Final either way: a change is applied only with all of its dependencies, so the
        // causal past of an event this replica holds is complete and never changes.
        self.seen.borrow_mut().insert(pair, seen);
        seen
    }

    /// Split `candidates` into those made with `target` (of `kind`) in their causal past,
    /// and the rest, not counted: a peer cannot fulfil, satisfy or settle what it had not
    /// seen (an event that names an id before the object exists, guessing the next id).
    fn seen_only<'a>(
        &self,
        kind: ObjectKind,
        target: &Id,
        candidates: Vec<Candidate<'a>>,
    ) -> (Vec<Candidate<'a>>, Vec<NotCounted>) {
        let made = self.object_keys(kind, target);
        let mut seen = Vec::with_capacity(candidates.len());
        let mut unseen = Vec::new();
        for c in candidates {
            if self.has_seen_any(&c.key, &made) {
                seen.push(c);
            } else {
                unseen.push(NotCounted {
                    id: c.id,
                    reason: format!(
                        "it was recorded without {kind} {target} in its causal past (before or concurrently with it)"
                    ),
                });
            }
        }
        (seen, unseen)
    }

    /// Local checks of an event's planning references: a fulfilling event has the
    /// commitment's action and a quantity in the committed unit; likewise for a claim it
    /// settles and an intent it satisfies. (Events from peers are not refused for this: the
    /// fold leaves a mismatched one uncounted.)
    pub(super) fn check_planning_refs(&self, e: &EconomicEvent) -> Result<()> {
        let check = |field: &'static str,
                     kind: ObjectKind,
                     id: &Id,
                     action: crate::Action,
                     r: Option<&Measure>,
                     f: Option<&Measure>|
         -> Result<()> {
            if crate::planning::parts_of(action, e.action).is_none() {
                return Err(mismatch(
                    field,
                    kind,
                    id,
                    format!("it is a `{action}` and this event a `{}`", e.action),
                ));
            }
            if let Some((w, is_resource)) = wanted_of(r, f) {
                let (given, name) = if is_resource {
                    (e.resource_quantity.as_ref(), "resourceQuantity")
                } else {
                    (e.effort_quantity.as_ref(), "effortQuantity")
                };
                if given.map(|g| &g.has_unit) != Some(&w.has_unit) {
                    return Err(mismatch(
                        field,
                        kind,
                        id,
                        format!(
                            "it counts in {name} of `{}`: give the event's {name} in `{}`",
                            w.has_unit, w.has_unit
                        ),
                    ));
                }
            }
            Ok(())
        };
        if let Some(id) = &e.fulfills {
            if let Some(c) = self.get::<Commitment>(id) {
                check(
                    "fulfills",
                    ObjectKind::Commitment,
                    id,
                    c.action,
                    c.resource_quantity.as_ref(),
                    c.effort_quantity.as_ref(),
                )?;
            }
        }
        if let Some(id) = &e.settles {
            if let Some(c) = self.get::<Claim>(id) {
                check(
                    "settles",
                    ObjectKind::Claim,
                    id,
                    c.action,
                    c.resource_quantity.as_ref(),
                    c.effort_quantity.as_ref(),
                )?;
            }
        }
        if let Some(id) = &e.satisfies {
            if let Some(i) = self.get::<Intent>(id) {
                check(
                    "satisfies",
                    ObjectKind::Intent,
                    id,
                    i.action,
                    i.resource_quantity.as_ref(),
                    i.effort_quantity.as_ref(),
                )?;
            }
        }
        Ok(())
    }

    /// The events that fulfil commitment `id`, in the total order: those whose `fulfills`
    /// names it, and (events written before `fulfills` existed) those whose `realizationOf`
    /// names it when `id` is a commitment and no agreement, and that name no `fulfills`.
    fn fulfilling_events(&self, id: &Id) -> Vec<Candidate<'_>> {
        let mut all: BTreeMap<OrderKey, Candidate<'_>> = BTreeMap::new();
        for e in self.views.referring(PlanningRef::Fulfills, id) {
            all.insert(e.key.clone(), Candidate::event(e.key.clone(), &e.event));
        }
        if !self.exists(ObjectKind::Agreement, id) {
            for e in self.views.referring(PlanningRef::RealizationOf, id) {
                if e.event.fulfills.is_none() {
                    all.insert(e.key.clone(), Candidate::event(e.key.clone(), &e.event));
                }
            }
        }
        all.into_values().collect()
    }

    fn commitment_fold(&self, c: Commitment) -> (CommitmentStatus, Option<Conflict>) {
        let wanted = wanted_of(c.resource_quantity.as_ref(), c.effort_quantity.as_ref());
        let (candidates, unseen) =
            self.seen_only(ObjectKind::Commitment, &c.id, self.fulfilling_events(&c.id));
        let mut t = tally(c.action, wanted, candidates, &DocCausality(&self.doc));
        t.not_counted.extend(unseen);
        let committed = wanted.map(|(m, _)| m.clone());
        let fulfilled = committed
            .as_ref()
            .and_then(|m| measure_of(t.total, &m.has_unit));
        let conflict = t
            .over
            .take()
            .map(|(event, competing)| Conflict::OverFulfilment {
                commitment: c.id.clone(),
                event,
                committed: committed.clone().unwrap_or_else(|| Measure::new(0, "one")),
                fulfilled: fulfilled.clone().unwrap_or_else(|| Measure::new(0, "one")),
                competing,
            });
        let status = CommitmentStatus {
            id: c.id.clone(),
            progress: progress_of(committed.as_ref(), &t),
            percent: percent_of(committed.as_ref(), t.total),
            committed,
            fulfilled,
            fulfilled_by: t.counted,
            not_counted: t.not_counted,
            overdue: false,
            commitment: c,
        };
        (status, conflict)
    }

    /// A commitment and its fulfilment, derived from the events that fulfil it.
    pub fn commitment_status(&self, id: &Id) -> Result<CommitmentStatus> {
        let c = self.get::<Commitment>(id).ok_or_else(|| Error::NotFound {
            kind: ObjectKind::Commitment,
            id: id.clone(),
        })?;
        Ok(self.commitment_fold(c).0)
    }

    /// Every commitment with its fulfilment, by id. With `now` (the viewer's clock, ISO
    /// 8601), commitments past their `due` that are neither fulfilled nor finished are marked
    /// `overdue`; that is display only and never part of a fold or a snapshot.
    pub fn commitment_statuses(&self, now: Option<&str>) -> Result<Vec<CommitmentStatus>> {
        if let Some(n) = now {
            if crate::flows::parse_time(n).is_none() {
                return Err(PlanningError::InvalidTime {
                    field: "now",
                    value: n.into(),
                }
                .into());
            }
        }
        Ok(self
            .list::<Commitment>()
            .into_iter()
            .map(|c| {
                let mut s = self.commitment_fold(c).0;
                if let (Some(now), Some(due)) = (now, s.commitment.due.as_deref()) {
                    s.overdue = !s.is_done() && crate::planning::is_past(due, now);
                }
                s
            })
            .collect())
    }

    /// The commitments that satisfy each intent, with the op that created them: read once
    /// for all intents (listing every commitment per intent made the statuses quadratic).
    fn satisfying_commitments(&self) -> BTreeMap<Id, Vec<(OrderKey, Commitment)>> {
        let mut by_intent: BTreeMap<Id, Vec<(OrderKey, Commitment)>> = BTreeMap::new();
        for c in self.list::<Commitment>() {
            let Some(i) = c.satisfies.clone() else {
                continue;
            };
            if let Some(k) = self.object_key(ObjectKind::Commitment, &c.id) {
                by_intent.entry(i).or_default().push((k, c));
            }
        }
        by_intent
    }

    fn intent_fold(
        &self,
        i: Intent,
        satisfying: &BTreeMap<Id, Vec<(OrderKey, Commitment)>>,
    ) -> (IntentStatus, Option<Conflict>) {
        let wanted = wanted_of(i.resource_quantity.as_ref(), i.effort_quantity.as_ref())
            .or(i.available_quantity.as_ref().map(|m| (m, true)));
        // Commitments (by the op that created them) and events, in one causal order.
        let commitments: &[(OrderKey, Commitment)] =
            satisfying.get(&i.id).map_or(&[], Vec::as_slice);
        let mut all: BTreeMap<OrderKey, Candidate<'_>> = BTreeMap::new();
        for (k, c) in commitments {
            all.insert(
                k.clone(),
                Candidate {
                    key: k.clone(),
                    id: c.id.clone(),
                    action: c.action,
                    resource_quantity: c.resource_quantity.as_ref(),
                    effort_quantity: c.effort_quantity.as_ref(),
                },
            );
        }
        for e in self.views.referring(PlanningRef::Satisfies, &i.id) {
            all.insert(e.key.clone(), Candidate::event(e.key.clone(), &e.event));
        }
        let (candidates, unseen) =
            self.seen_only(ObjectKind::Intent, &i.id, all.into_values().collect());
        let mut t = tally(i.action, wanted, candidates, &DocCausality(&self.doc));
        t.not_counted.extend(unseen);
        let wanted_m = wanted.map(|(m, _)| m.clone());
        let satisfied = wanted_m
            .as_ref()
            .and_then(|m| measure_of(t.total, &m.has_unit));
        let conflict = t
            .over
            .take()
            .map(|(by, competing)| Conflict::OverSatisfaction {
                intent: i.id.clone(),
                by,
                wanted: wanted_m.clone().unwrap_or_else(|| Measure::new(0, "one")),
                satisfied: satisfied.clone().unwrap_or_else(|| Measure::new(0, "one")),
                competing,
            });
        let progress = progress_of(wanted_m.as_ref(), &t);
        let is_commitment = |id: &Id| commitments.iter().any(|(_, c)| &c.id == id);
        let (by_c, by_e): (Vec<Id>, Vec<Id>) =
            t.counted.into_iter().partition(|id| is_commitment(id));
        let status = IntentStatus {
            id: i.id.clone(),
            progress,
            wanted: wanted_m,
            satisfied,
            satisfied_by_commitments: by_c,
            satisfied_by_events: by_e,
            not_counted: t.not_counted,
            intent: i,
        };
        (status, conflict)
    }

    /// An intent and what satisfies it (commitments and events naming it in `satisfies`).
    pub fn intent_status(&self, id: &Id) -> Result<IntentStatus> {
        let i = self.get::<Intent>(id).ok_or_else(|| Error::NotFound {
            kind: ObjectKind::Intent,
            id: id.clone(),
        })?;
        Ok(self.intent_fold(i, &self.satisfying_commitments()).0)
    }

    /// Every intent with what satisfies it, by id.
    pub fn intent_statuses(&self) -> Vec<IntentStatus> {
        let satisfying = self.satisfying_commitments();
        self.list::<Intent>()
            .into_iter()
            .map(|i| self.intent_fold(i, &satisfying).0)
            .collect()
    }

    fn claim_fold(&self, c: Claim) -> (ClaimStatus, Option<Conflict>) {
        let wanted = wanted_of(c.resource_quantity.as_ref(), c.effort_quantity.as_ref());
        let candidates = self
            .views
            .referring(PlanningRef::Settles, &c.id)
            .map(|e| Candidate::event(e.key.clone(), &e.event))
            .collect();
        let (candidates, unseen) = self.seen_only(ObjectKind::Claim, &c.id, candidates);
        let mut t = tally(c.action, wanted, candidates, &DocCausality(&self.doc));
        t.not_counted.extend(unseen);
        let claimed = wanted.map(|(m, _)| m.clone());
        let settled = claimed
            .as_ref()
            .and_then(|m| measure_of(t.total, &m.has_unit));
        let conflict = t
            .over
            .take()
            .map(|(event, competing)| Conflict::OverSettlement {
                claim: c.id.clone(),
                event,
                claimed: claimed.clone().unwrap_or_else(|| Measure::new(0, "one")),
                settled: settled.clone().unwrap_or_else(|| Measure::new(0, "one")),
                competing,
            });
        let status = ClaimStatus {
            id: c.id.clone(),
            progress: progress_of(claimed.as_ref(), &t),
            claimed,
            settled,
            settled_by: t.counted,
            not_counted: t.not_counted,
            claim: c,
        };
        (status, conflict)
    }

    /// A claim and its settlement (events naming it in `settles`).
    pub fn claim_status(&self, id: &Id) -> Result<ClaimStatus> {
        let c = self.get::<Claim>(id).ok_or_else(|| Error::NotFound {
            kind: ObjectKind::Claim,
            id: id.clone(),
        })?;
        Ok(self.claim_fold(c).0)
    }

    /// Every claim with its settlement, by id.
    pub fn claim_statuses(&self) -> Vec<ClaimStatus> {
        self.list::<Claim>()
            .into_iter()
            .map(|c| self.claim_fold(c).0)
            .collect()
    }

    /// An agreement with its clauses and the events that realize it.
    pub fn agreement_status(&self, id: &Id) -> Result<AgreementStatus> {
        let agreement = self.get::<Agreement>(id).ok_or_else(|| Error::NotFound {
            kind: ObjectKind::Agreement,
            id: id.clone(),
        })?;
        let mut stipulates = Vec::new();
        let mut reciprocal = Vec::new();
        for c in self.list::<Commitment>() {
            let primary = c.clause_of.as_ref() == Some(id);
            let recip = c.reciprocal_clause_of.as_ref() == Some(id);
            if primary || recip {
                let s = self.commitment_fold(c).0;
                if primary {
                    stipulates.push(s);
                } else {
                    reciprocal.push(s);
                }
            }
        }
        let events = |r| {
            self.views
                .referring(r, id)
                .map(|e| e.event.id.clone())
                .collect::<Vec<_>>()
        };
        let complete = !(stipulates.is_empty() && reciprocal.is_empty())
            && stipulates.iter().chain(&reciprocal).all(|s| s.is_done());
        Ok(AgreementStatus {
            id: id.clone(),
            agreement,
            stipulates,
            stipulates_reciprocal: reciprocal,
            realizes: events(PlanningRef::RealizationOf),
            realizes_reciprocal: events(PlanningRef::ReciprocalRealizationOf),
            complete,
        })
    }

    /// An agreement bundle with the agreements it bundles (`bundles`, the inverse of their
    /// `bundledIn`) and whether all of them are complete.
    pub fn agreement_bundle_status(&self, id: &Id) -> Result<AgreementBundleStatus> {
        let bundle = self
            .get::<AgreementBundle>(id)
            .ok_or_else(|| Error::NotFound {
                kind: ObjectKind::AgreementBundle,
                id: id.clone(),
            })?;
        let bundles = self
            .list::<Agreement>()
            .into_iter()
            .filter(|a| a.bundled_in.as_ref() == Some(id))
            .map(|a| self.agreement_status(&a.id))
            .collect::<Result<Vec<_>>>()?;
        let complete = !bundles.is_empty() && bundles.iter().all(|a| a.complete);
        Ok(AgreementBundleStatus {
            id: id.clone(),
            bundle,
            bundles,
            complete,
        })
    }

    /// A proposal list with the proposals it lists (`lists`, the inverse of their
    /// `listedIn`).
    pub fn proposal_list_status(&self, id: &Id) -> Result<ProposalListStatus> {
        let list = self
            .get::<ProposalList>(id)
            .ok_or_else(|| Error::NotFound {
                kind: ObjectKind::ProposalList,
                id: id.clone(),
            })?;
        let lists = self
            .list::<Proposal>()
            .into_iter()
            .filter(|p| p.listed_in.contains(id))
            .map(|p| p.id)
            .collect();
        Ok(ProposalListStatus {
            id: id.clone(),
            list,
            lists,
        })
    }

    /// A plan with its processes, commitments, intents and independent demands.
    pub fn plan_status(&self, id: &Id) -> Result<PlanStatus> {
        let plan = self.get::<Plan>(id).ok_or_else(|| Error::NotFound {
            kind: ObjectKind::Plan,
            id: id.clone(),
        })?;
        let processes: Vec<Process> = self
            .list::<Process>()
            .into_iter()
            .filter(|p| p.planned_within.as_ref() == Some(id))
            .collect();
        let in_process = |p: &Option<Id>| {
            p.as_ref()
                .is_some_and(|p| processes.iter().any(|x| &x.id == p))
        };
        let mut commitments = Vec::new();
        let mut demands = Vec::new();
        for c in self.list::<Commitment>() {
            if c.independent_demand_of.as_ref() == Some(id) {
                demands.push(c.id.clone());
            }
            if c.planned_within.as_ref() == Some(id)
                || c.independent_demand_of.as_ref() == Some(id)
                || in_process(&c.input_of)
                || in_process(&c.output_of)
            {
                commitments.push(self.commitment_fold(c).0);
            }
        }
        let intents = self
            .list::<Intent>()
            .into_iter()
            .filter(|i| i.planned_within.as_ref() == Some(id))
            .map(|i| i.id)
            .collect();
        Ok(PlanStatus {
            id: id.clone(),
            plan,
            processes,
            commitments,
            intents,
            independent_demands: demands,
        })
    }

    /// The conflicts of the planning layer (over-fulfilment, over-satisfaction,
    /// over-settlement), ordered by the key of the event or commitment that revealed them.
    pub(super) fn planning_conflicts(&self) -> Vec<Conflict> {
        let mut all: Vec<(Option<OrderKey>, Conflict)> = Vec::new();
        let key_of = |c: &Conflict| {
            OrderKey::parse(c.event())
                .filter(|k| self.views.entry(k).is_some())
                .or_else(|| self.object_key(ObjectKind::Commitment, c.event()))
        };
        for c in self.list::<Commitment>() {
            if let (_, Some(x)) = self.commitment_fold(c) {
                all.push((key_of(&x), x));
            }
        }
        let satisfying = self.satisfying_commitments();
        for i in self.list::<Intent>() {
            if let (_, Some(x)) = self.intent_fold(i, &satisfying) {
                all.push((key_of(&x), x));
            }
        }
        for c in self.list::<Claim>() {
            if let (_, Some(x)) = self.claim_fold(c) {
                all.push((key_of(&x), x));
            }
        }
        all.sort();
        all.into_iter().map(|(_, c)| c).collect()
    }

    /// Validate `obj` for a change of several objects: its id (generated if empty, new), its
    /// values, and its references (to existing objects or ones staged before it).
    fn stage<T: VfObject>(&mut self, mut obj: T, staged: &mut Staged) -> Result<Id> {
        if obj.id().as_str().is_empty() && super::fixed_id(&obj)?.is_none() {
            let mut id = self.new_id(T::KIND);
            while staged.has(T::KIND, &id) {
                id = self.new_id(T::KIND);
            }
            obj.set_id(id);
        }
        self.assign_id(&mut obj)?;
        if self.exists(T::KIND, obj.id()) || staged.has(T::KIND, obj.id()) {
            return Err(Error::DuplicateId {
                kind: T::KIND,
                id: obj.id().clone(),
            });
        }
        super::check_id(obj.id())?;
        for (kind, id) in obj.references() {
            if !self.exists(kind, id) && !staged.has(kind, id) {
                return Err(Error::UnknownReference {
                    field: "reference",
                    kind,
                    id: id.clone(),
                });
            }
        }
        self.check_object_values(&obj)?;
        let json = serde_json::to_value(&obj).map_err(json_err("object"))?;
        let id = obj.id().clone();
        staged.objects.push((T::KIND, id.clone(), json, None));
        Ok(id)
    }

    /// Write every staged object in one change.
    fn commit_staged(&mut self, staged: Staged) -> Result<()> {
        let mut buckets = Vec::with_capacity(staged.objects.len());
        for (kind, id, _, _) in &staged.objects {
            buckets.push(self.write_bucket(*kind, id)?);
        }
        let mut bytes = 0;
        let mut tx = self.doc.transaction();
        for ((kind, id, json, previous), bucket) in staged.objects.iter().zip(&buckets) {
            bytes += json.to_string().len();
            put_object_fields(&mut tx, bucket, *kind, id, json, previous.as_ref())?;
        }
        super::check_change_size(tx.pending_ops(), bytes)?;
        tx.commit();
        Ok(())
    }

    /// Accept a proposal as `agent` (the market flow: another device accepts an offer). In one
    /// change: a new agreement, one commitment per intent the proposal `publishes`
    /// (`clauseOf` the agreement) and one per `reciprocal` intent (`reciprocalClauseOf`),
    /// each `satisfies` its intent, with the intent's open side (provider or receiver) taken
    /// by `agent`; the proposal's status becomes accepted. Two devices that accept the same
    /// proposal offline both get their agreement; the intents are then over-satisfied, a
    /// conflict every replica lists.
    pub fn accept_proposal(
        &mut self,
        proposal: &Id,
        agent: &Id,
        created: Option<String>,
    ) -> Result<Accepted> {
        let p = self
            .get::<Proposal>(proposal)
            .ok_or_else(|| Error::NotFound {
                kind: ObjectKind::Proposal,
                id: proposal.clone(),
            })?;
        let status = self.proposal_status(proposal)?;
        if status != ProposalStatus::Open {
            return Err(PlanningError::ProposalNotOpen {
                proposal: proposal.clone(),
                status: format!("{status:?}").to_lowercase(),
            }
            .into());
        }
        if !p.proposed_to.is_empty() && !p.proposed_to.contains(agent) {
            return Err(PlanningError::NotProposedTo {
                proposal: proposal.clone(),
                agent: agent.clone(),
            }
            .into());
        }
        if p.publishes.is_empty() {
            return Err(PlanningError::EmptyProposal {
                proposal: proposal.clone(),
            }
            .into());
        }
        self.check_refs(vec![(ObjectKind::Agent, agent)], "agent")?;
        let mut staged = Staged::default();
        let agreement = self.stage(
            Agreement {
                created: created.clone(),
                note: Some(format!("accepts proposal {proposal}")),
                ..Agreement::new(Id::default(), p.name.clone())
            },
            &mut staged,
        )?;
        let mut out = Accepted {
            agreement: agreement.clone(),
            commitments: Vec::new(),
            reciprocal_commitments: Vec::new(),
        };
        for (reciprocal, intents) in [(false, &p.publishes), (true, &p.reciprocal)] {
            for iid in intents {
                let i = self
                    .get::<Intent>(iid)
                    .ok_or_else(|| Error::UnknownReference {
                        field: "publishes",
                        kind: ObjectKind::Intent,
                        id: iid.clone(),
                    })?;
                let mut c = Commitment::new(
                    i.action,
                    i.provider.clone().unwrap_or_else(|| agent.clone()),
                    i.receiver.clone().unwrap_or_else(|| agent.clone()),
                );
                c.resource_conforms_to = i.resource_conforms_to.clone();
                c.resource_classified_as = i.resource_classified_as.clone();
                c.resource_inventoried_as = i.resource_inventoried_as.clone();
                c.resource_quantity = i.resource_quantity.clone();
                c.effort_quantity = i.effort_quantity.clone();
                c.at_location = i.at_location.clone();
                c.due = i.due.clone();
                c.created = created.clone();
                c.satisfies = Some(iid.clone());
                c.note = i.name.clone();
                if reciprocal {
                    c.reciprocal_clause_of = Some(agreement.clone());
                } else {
                    c.clause_of = Some(agreement.clone());
                }
                let id = self.stage(c, &mut staged)?;
                if reciprocal {
                    out.reciprocal_commitments.push(id);
                } else {
                    out.commitments.push(id);
                }
            }
        }
        self.commit_staged(staged)?;
        Ok(out)
    }

    /// A proposal's status: as its owner last set it (open, accepted, withdrawn), except
    /// that an open proposal is accepted once an agreement holds a commitment that
    /// satisfies one of the intents it publishes ([`Ledger::accept_proposal`] makes one).
    /// Derived, not written by the accepting device: the proposal belongs to whoever
    /// published it, and only its owner (or an admin) edits it (docs/security.md).
    pub fn proposal_status(&self, id: &Id) -> Result<ProposalStatus> {
        let p = self.get::<Proposal>(id).ok_or_else(|| Error::NotFound {
            kind: ObjectKind::Proposal,
            id: id.clone(),
        })?;
        if p.status != ProposalStatus::Open {
            return Ok(p.status);
        }
        let taken = self.list::<Commitment>().into_iter().any(|c| {
            (c.clause_of.is_some() || c.reciprocal_clause_of.is_some())
                && c.satisfies
                    .as_ref()
                    .is_some_and(|i| p.publishes.contains(i))
        });
        Ok(if taken {
            ProposalStatus::Accepted
        } else {
            ProposalStatus::Open
        })
    }

    /// Plan a process from a recipe process, in one change: a process based on the recipe
    /// process's specification, planned within `plan`, with one commitment per recipe flow
    /// into it (`inputOf`: the work and the parts) or out of it (`outputOf`: the repaired
    /// thing), with the recipe flow's action, resource specification and quantities. If
    /// those flows are clauses of recipe exchanges (`recipeClauseOf`,
    /// `recipeReciprocalClauseOf`: "the parts are sold for 12 EUR"), each exchange becomes
    /// an agreement: its flows become commitments `clauseOf` / `reciprocalClauseOf` it (a
    /// flow of both the process and the exchange is one commitment), the reciprocal ones
    /// from the receiver to the provider.
    pub fn plan_from_recipe(&mut self, req: &RecipePlanning) -> Result<Planned> {
        let rp = self
            .get::<RecipeProcess>(&req.recipe_process)
            .ok_or_else(|| Error::NotFound {
                kind: ObjectKind::RecipeProcess,
                id: req.recipe_process.clone(),
            })?;
        let all_flows = self.list::<RecipeFlow>();
        let of_process = |f: &RecipeFlow| {
            f.recipe_input_of.as_ref() == Some(&rp.id)
                || f.recipe_output_of.as_ref() == Some(&rp.id)
        };
        if !all_flows.iter().any(of_process) {
            return Err(PlanningError::EmptyRecipe {
                recipe_process: rp.id.clone(),
            }
            .into());
        }
        // The recipe exchanges the process's flows are clauses of, in id order.
        let exchanges: std::collections::BTreeSet<Id> = all_flows
            .iter()
            .filter(|f| of_process(f))
            .flat_map(|f| [&f.recipe_clause_of, &f.recipe_reciprocal_clause_of])
            .flatten()
            .cloned()
            .collect();
        let in_exchange = |f: &RecipeFlow| {
            [&f.recipe_clause_of, &f.recipe_reciprocal_clause_of]
                .into_iter()
                .flatten()
                .any(|x| exchanges.contains(x))
        };
        let flows: Vec<RecipeFlow> = all_flows
            .iter()
            .filter(|f| of_process(f) || in_exchange(f))
            .cloned()
            .collect();
        let mut staged = Staged::default();
        let mut process = Process::new(
            Id::default(),
            req.name.clone().unwrap_or_else(|| rp.name.clone()),
            rp.process_conforms_to.clone(),
        );
        process.planned_within = req.plan.clone();
        process.classified_as = rp.process_classified_as.clone();
        process.note = Some(format!("planned from recipe process {}", rp.id));
        let pid = self.stage(process, &mut staged)?;
        let mut out = Planned {
            process: pid.clone(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            agreements: Vec::new(),
            exchange: Vec::new(),
        };
        let mut agreement_of: BTreeMap<Id, Id> = BTreeMap::new();
        for x in &exchanges {
            let ex = self
                .get::<RecipeExchange>(x)
                .ok_or_else(|| Error::UnknownReference {
                    field: "recipeClauseOf",
                    kind: ObjectKind::RecipeExchange,
                    id: x.clone(),
                })?;
            let mut a = Agreement::new(Id::default(), ex.name.clone());
            a.note = Some(format!("planned from recipe exchange {x}"));
            let aid = self.stage(a, &mut staged)?;
            out.agreements.push(aid.clone());
            agreement_of.insert(x.clone(), aid);
        }
        for f in flows {
            let input = f.recipe_input_of.as_ref() == Some(&rp.id);
            let output = f.recipe_output_of.as_ref() == Some(&rp.id);
            let reciprocal = f
                .recipe_reciprocal_clause_of
                .as_ref()
                .and_then(|x| agreement_of.get(x));
            let clause = f
                .recipe_clause_of
                .as_ref()
                .and_then(|x| agreement_of.get(x));
            let (provider, receiver) = if reciprocal.is_some() && clause.is_none() {
                (req.receiver.clone(), req.provider.clone())
            } else {
                (req.provider.clone(), req.receiver.clone())
            };
            let mut c = Commitment::new(f.action, provider, receiver);
            c.resource_conforms_to = f.resource_conforms_to.clone();
            c.resource_classified_as = f.resource_classified_as.clone();
            c.resource_quantity = f.resource_quantity.clone();
            c.effort_quantity = f.effort_quantity.clone();
            c.stage = f.stage.clone();
            c.state = f.state.clone();
            c.due = req.due.clone();
            c.planned_within = req.plan.clone();
            c.note = f.note.clone();
            c.clause_of = clause.cloned();
            c.reciprocal_clause_of = reciprocal.cloned();
            if input {
                c.input_of = Some(pid.clone());
            } else if output {
                c.output_of = Some(pid.clone());
                if req.output_is_independent_demand {
                    c.independent_demand_of = req.plan.clone();
                }
            }
            let id = self.stage(c, &mut staged)?;
            if input {
                out.inputs.push(id);
            } else if output {
                out.outputs.push(id);
            } else {
                out.exchange.push(id);
            }
        }
        self.commit_staged(staged)?;
        Ok(out)
    }
}
