//! The ledger's planning and exchange operations: derived statuses (fulfilment, satisfaction,
//! settlement), their conflicts, accepting a proposal, and planning a process from a recipe.
//! The rules are in [`crate::planning`]; this reads the events and objects they need.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::ReadDoc;

use super::{json_err, put_object_fields, schema, DocCausality, Ledger};
use crate::error::{Error, PlanningError, Result};
use crate::planning::{
    percent_of, progress_of, tally, wanted_of, Accepted, AgreementStatus, Candidate, ClaimStatus,
    CommitmentStatus, IntentStatus, PlanStatus, Planned, RecipePlanning,
};
use crate::vf::{
    Agreement, Claim, Commitment, EconomicEvent, Id, Intent, Measure, ObjectKind, Plan, Process,
    Proposal, ProposalStatus, RecipeFlow, RecipeProcess, VfObject,
};
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
        let bucket = schema::object_bucket(kind, id.as_str());
        let marker = schema::marker_key(kind, id.as_str());
        for set in &self.layout.object_sets {
            if let Ok(Some((_, automerge::ObjId::Id(counter, actor, _)))) =
                self.doc.get(&set[bucket], marker.as_str())
            {
                return Some(OrderKey { counter, actor });
            }
        }
        match self.legacy_object(kind, id) {
            Some(automerge::ObjId::Id(counter, actor, _)) => Some(OrderKey { counter, actor }),
            _ => None,
        }
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
            if action != e.action {
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
        let t = tally(
            c.action,
            wanted,
            self.fulfilling_events(&c.id),
            &DocCausality(&self.doc),
        );
        let committed = wanted.map(|(m, _)| m.clone());
        let fulfilled = committed
            .as_ref()
            .and_then(|m| measure_of(t.total, &m.has_unit));
        let conflict = t.over.map(|(event, competing)| Conflict::OverFulfilment {
            commitment: c.id.clone(),
            event,
            committed: committed.clone().unwrap_or_else(|| Measure::new(0, "one")),
            fulfilled: fulfilled.clone().unwrap_or_else(|| Measure::new(0, "one")),
            competing,
        });
        let status = CommitmentStatus {
            id: c.id.clone(),
            progress: progress_of(committed.as_ref(), t.total, !t.counted.is_empty()),
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

    fn intent_fold(&self, i: Intent) -> (IntentStatus, Option<Conflict>) {
        let wanted = wanted_of(i.resource_quantity.as_ref(), i.effort_quantity.as_ref())
            .or(i.available_quantity.as_ref().map(|m| (m, true)));
        // Commitments (by the op that created them) and events, in one causal order.
        let commitments: Vec<(OrderKey, Commitment)> = self
            .list::<Commitment>()
            .into_iter()
            .filter(|c| c.satisfies.as_ref() == Some(&i.id))
            .filter_map(|c| {
                self.object_key(ObjectKind::Commitment, &c.id)
                    .map(|k| (k, c))
            })
            .collect();
        let mut all: BTreeMap<OrderKey, Candidate<'_>> = BTreeMap::new();
        for (k, c) in &commitments {
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
        let t = tally(
            i.action,
            wanted,
            all.into_values().collect(),
            &DocCausality(&self.doc),
        );
        let wanted_m = wanted.map(|(m, _)| m.clone());
        let satisfied = wanted_m
            .as_ref()
            .and_then(|m| measure_of(t.total, &m.has_unit));
        let conflict = t.over.map(|(by, competing)| Conflict::OverSatisfaction {
            intent: i.id.clone(),
            by,
            wanted: wanted_m.clone().unwrap_or_else(|| Measure::new(0, "one")),
            satisfied: satisfied.clone().unwrap_or_else(|| Measure::new(0, "one")),
            competing,
        });
        let is_commitment = |id: &Id| commitments.iter().any(|(_, c)| &c.id == id);
        let (by_c, by_e): (Vec<Id>, Vec<Id>) =
            t.counted.into_iter().partition(|id| is_commitment(id));
        let status = IntentStatus {
            id: i.id.clone(),
            progress: progress_of(
                wanted_m.as_ref(),
                t.total,
                !(by_c.is_empty() && by_e.is_empty()),
            ),
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
        Ok(self.intent_fold(i).0)
    }

    /// Every intent with what satisfies it, by id.
    pub fn intent_statuses(&self) -> Vec<IntentStatus> {
        self.list::<Intent>()
            .into_iter()
            .map(|i| self.intent_fold(i).0)
            .collect()
    }

    fn claim_fold(&self, c: Claim) -> (ClaimStatus, Option<Conflict>) {
        let wanted = wanted_of(c.resource_quantity.as_ref(), c.effort_quantity.as_ref());
        let candidates = self
            .views
            .referring(PlanningRef::Settles, &c.id)
            .map(|e| Candidate::event(e.key.clone(), &e.event))
            .collect();
        let t = tally(c.action, wanted, candidates, &DocCausality(&self.doc));
        let claimed = wanted.map(|(m, _)| m.clone());
        let settled = claimed
            .as_ref()
            .and_then(|m| measure_of(t.total, &m.has_unit));
        let conflict = t.over.map(|(event, competing)| Conflict::OverSettlement {
            claim: c.id.clone(),
            event,
            claimed: claimed.clone().unwrap_or_else(|| Measure::new(0, "one")),
            settled: settled.clone().unwrap_or_else(|| Measure::new(0, "one")),
            competing,
        });
        let status = ClaimStatus {
            id: c.id.clone(),
            progress: progress_of(claimed.as_ref(), t.total, !t.counted.is_empty()),
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
        for i in self.list::<Intent>() {
            if let (_, Some(x)) = self.intent_fold(i) {
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
        if obj.id().as_str().is_empty() {
            let mut id = self.new_id(T::KIND);
            while staged.has(T::KIND, &id) {
                id = self.new_id(T::KIND);
            }
            obj.set_id(id);
        } else if self.exists(T::KIND, obj.id()) || staged.has(T::KIND, obj.id()) {
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

    /// Stage an update of an existing object.
    fn stage_update<T: VfObject>(
        &mut self,
        id: &Id,
        change: impl FnOnce(&mut T),
        staged: &mut Staged,
    ) -> Result<()> {
        let mut obj: T = self.get(id).ok_or_else(|| Error::NotFound {
            kind: T::KIND,
            id: id.clone(),
        })?;
        let before = serde_json::to_value(&obj).map_err(json_err("object"))?;
        change(&mut obj);
        obj.set_id(id.clone());
        self.check_object(&obj)?;
        let after = serde_json::to_value(&obj).map_err(json_err("object"))?;
        let previous = self.in_buckets(T::KIND, id).then_some(before);
        staged.objects.push((T::KIND, id.clone(), after, previous));
        Ok(())
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
        if p.status != ProposalStatus::Open {
            return Err(PlanningError::ProposalNotOpen {
                proposal: proposal.clone(),
                status: format!("{:?}", p.status).to_lowercase(),
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
                id: Id::default(),
                name: p.name.clone(),
                created: created.clone(),
                note: Some(format!("accepts proposal {proposal}")),
                other_properties: Default::default(),
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
        self.stage_update::<Proposal>(
            proposal,
            |p| p.status = ProposalStatus::Accepted,
            &mut staged,
        )?;
        self.commit_staged(staged)?;
        Ok(out)
    }

    /// Plan a process from a recipe process, in one change: a process based on the recipe
    /// process's specification, planned within `plan`, with one commitment per recipe flow
    /// into it (`inputOf`: the work and the parts) or out of it (`outputOf`: the repaired
    /// thing), with the recipe flow's action, resource specification and quantities.
    pub fn plan_from_recipe(&mut self, req: &RecipePlanning) -> Result<Planned> {
        let rp = self
            .get::<RecipeProcess>(&req.recipe_process)
            .ok_or_else(|| Error::NotFound {
                kind: ObjectKind::RecipeProcess,
                id: req.recipe_process.clone(),
            })?;
        let flows: Vec<RecipeFlow> = self
            .list::<RecipeFlow>()
            .into_iter()
            .filter(|f| {
                f.recipe_input_of.as_ref() == Some(&rp.id)
                    || f.recipe_output_of.as_ref() == Some(&rp.id)
            })
            .collect();
        if flows.is_empty() {
            return Err(PlanningError::EmptyRecipe {
                recipe_process: rp.id.clone(),
            }
            .into());
        }
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
        };
        for f in flows {
            let input = f.recipe_input_of.as_ref() == Some(&rp.id);
            let mut c = Commitment::new(f.action, req.provider.clone(), req.receiver.clone());
            c.resource_conforms_to = f.resource_conforms_to.clone();
            c.resource_classified_as = f.resource_classified_as.clone();
            c.resource_quantity = f.resource_quantity.clone();
            c.effort_quantity = f.effort_quantity.clone();
            c.stage = f.stage.clone();
            c.state = f.state.clone();
            c.due = req.due.clone();
            c.planned_within = req.plan.clone();
            c.note = f.note.clone();
            if input {
                c.input_of = Some(pid.clone());
            } else {
                c.output_of = Some(pid.clone());
                if req.output_is_independent_demand {
                    c.independent_demand_of = req.plan.clone();
                }
            }
            let id = self.stage(c, &mut staged)?;
            if input {
                out.inputs.push(id);
            } else {
                out.outputs.push(id);
            }
        }
        self.commit_staged(staged)?;
        Ok(out)
    }
}
