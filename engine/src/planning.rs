//! The planning and exchange layers, derived: how far commitments are fulfilled, intents
//! satisfied and claims settled, what an agreement stipulates and a plan includes.
//!
//! Nothing here is stored. Each status is a fold, in the ledger's total order, of the events
//! that name the object (`fulfills`, `satisfies`, `settles`), against the object's quantity as
//! it is now on this replica (a mutable field: Automerge's last writer wins, the same on every
//! replica with the same changes). Two replicas with the same changes give byte-identical
//! statuses and the same conflicts. The viewer's clock is only used for `overdue`, which is
//! display and never part of a fold or a snapshot.
//!
//! Pure: the types and the tally; `Ledger` supplies the events and objects
//! (`engine/src/ledger/planning.rs`).

use rust_decimal::Decimal;
use serde::Serialize;

use crate::vf::{
    Agreement, AgreementBundle, Claim, Commitment, EconomicEvent, Id, Intent, Measure, Plan,
    Process, ProposalList, Quantity,
};
use crate::views::{Causality, OrderKey};

/// How far a commitment, intent or claim has been met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Progress {
    /// Nothing counted toward it yet.
    Open,
    /// Some, less than asked.
    Partly,
    /// At least what was asked (more is an over-fulfilment conflict).
    Fulfilled,
}

/// An event (or commitment) that names an object but does not count toward it, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotCounted {
    /// The event or commitment.
    pub id: Id,
    /// Why it is not counted (different action, no quantity in the unit asked).
    pub reason: String,
}

/// A commitment with its fulfilment, derived from the events that fulfil it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitmentStatus {
    /// The commitment's id (the stored body keeps ids out).
    pub id: Id,
    /// The commitment as stored.
    pub commitment: Commitment,
    /// What is committed: its `resourceQuantity`, else its `effortQuantity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed: Option<Measure>,
    /// What the counted fulfilling events add up to, in the committed unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fulfilled: Option<Measure>,
    /// `fulfilled / committed` in percent, two decimals, when a quantity was committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<Decimal>,
    /// Open, partly fulfilled or fulfilled.
    pub progress: Progress,
    /// The counted fulfilling events (`fulfilledBy`), in the total order.
    pub fulfilled_by: Vec<Id>,
    /// Events that name the commitment but do not count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_counted: Vec<NotCounted>,
    /// Past its due time by the viewer's clock, not fulfilled and not finished. Display only:
    /// set by [`crate::Ledger::commitment_statuses`] when given a clock, never in a snapshot.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overdue: bool,
}

impl CommitmentStatus {
    /// Whether nothing more is expected: fulfilled, or explicitly finished.
    pub fn is_done(&self) -> bool {
        self.progress == Progress::Fulfilled || self.commitment.finished
    }
}

/// An intent with what satisfies it: commitments and events that name it in `satisfies`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IntentStatus {
    /// The intent's id (the stored body keeps ids out).
    pub id: Id,
    /// The intent as stored.
    pub intent: Intent,
    /// What it offers or asks: `resourceQuantity`, else `effortQuantity`, else
    /// `availableQuantity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wanted: Option<Measure>,
    /// What its satisfiers add up to (a commitment counts with what it commits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub satisfied: Option<Measure>,
    /// Open, partly or fully satisfied.
    pub progress: Progress,
    /// The commitments that satisfy it, in the order of their creation.
    pub satisfied_by_commitments: Vec<Id>,
    /// The events that satisfy it directly, in the total order.
    pub satisfied_by_events: Vec<Id>,
    /// Satisfiers that do not count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_counted: Vec<NotCounted>,
}

/// A claim with its settlement, derived from the events that settle it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimStatus {
    /// The claim's id (the stored body keeps ids out).
    pub id: Id,
    /// The claim as stored.
    pub claim: Claim,
    /// What is claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed: Option<Measure>,
    /// What the settling events add up to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled: Option<Measure>,
    /// Open, partly or fully settled.
    pub progress: Progress,
    /// The settling events (`settledBy`), in the total order.
    pub settled_by: Vec<Id>,
    /// Events that name the claim but do not count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_counted: Vec<NotCounted>,
}

/// An agreement with its clauses (inverses of the commitments' `clauseOf` and
/// `reciprocalClauseOf`) and the events that realize it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementStatus {
    /// The agreement's id (the stored body keeps ids out).
    pub id: Id,
    /// The agreement as stored.
    pub agreement: Agreement,
    /// `stipulates`: the primary clauses, by id.
    pub stipulates: Vec<CommitmentStatus>,
    /// `stipulatesReciprocal`: what is given in return, by id.
    pub stipulates_reciprocal: Vec<CommitmentStatus>,
    /// `realizes`: events whose `realizationOf` names it, in the total order.
    pub realizes: Vec<Id>,
    /// `realizesReciprocal`: events whose `reciprocalRealizationOf` names it.
    pub realizes_reciprocal: Vec<Id>,
    /// Every clause is done (fulfilled or finished).
    pub complete: bool,
}

/// An agreement bundle with the agreements it bundles (inverse of their `bundledIn`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementBundleStatus {
    /// The bundle's id.
    pub id: Id,
    /// The bundle as stored.
    pub bundle: AgreementBundle,
    /// `bundles`: the agreements whose `bundledIn` names it, by id.
    pub bundles: Vec<AgreementStatus>,
    /// Every bundled agreement is complete (and there is at least one).
    pub complete: bool,
}

/// A proposal list with the proposals it lists (inverse of their `listedIn`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProposalListStatus {
    /// The list's id.
    pub id: Id,
    /// The list as stored.
    pub list: ProposalList,
    /// `lists`: the proposals whose `listedIn` names it, by id.
    pub lists: Vec<Id>,
}

/// A plan with what it includes (inverses of `plannedWithin` and `independentDemandOf`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    /// The plan's id (the stored body keeps ids out).
    pub id: Id,
    /// The plan as stored.
    pub plan: Plan,
    /// `planIncludes`: processes planned within it.
    pub processes: Vec<Process>,
    /// `planIncludes`: commitments planned within it (or inputs and outputs of its processes).
    pub commitments: Vec<CommitmentStatus>,
    /// `planIncludes`: intents planned within it.
    pub intents: Vec<Id>,
    /// `hasIndependentDemand`: the commitments that are its deliverables.
    pub independent_demands: Vec<Id>,
}

/// What [`crate::Ledger::accept_proposal`] made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// The new agreement.
    pub agreement: Id,
    /// Commitments made from the proposal's `publishes` intents (`clauseOf`).
    pub commitments: Vec<Id>,
    /// Commitments made from its `reciprocal` intents (`reciprocalClauseOf`).
    pub reciprocal_commitments: Vec<Id>,
}

/// What to plan from a recipe process ([`crate::Ledger::plan_from_recipe`]). The primary
/// flows (process flows, and recipe exchange clauses) go from `provider` to `receiver`; the
/// reciprocal clauses of a recipe exchange (the payment) go back, from `receiver` to
/// `provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipePlanning {
    /// The recipe process to plan.
    pub recipe_process: Id,
    /// The plan the new process and commitments go into (`plannedWithin`).
    pub plan: Option<Id>,
    /// Name of the new process (the recipe process's name if `None`).
    pub name: Option<String>,
    /// Who provides the work and the parts (`provider` of every commitment).
    pub provider: Id,
    /// Who receives them (`receiver` of every commitment).
    pub receiver: Id,
    /// Due time of every commitment (ISO 8601).
    pub due: Option<String>,
    /// Make the output commitments independent demands of the plan.
    pub output_is_independent_demand: bool,
}

/// What [`crate::Ledger::plan_from_recipe`] made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Planned {
    /// The new process.
    pub process: Id,
    /// Its input commitments, in the order of the recipe flows' ids.
    pub inputs: Vec<Id>,
    /// Its output commitments.
    pub outputs: Vec<Id>,
    /// The agreements planned from the recipe exchanges its flows are clauses of, one per
    /// exchange in the order of the exchanges' ids (empty: the recipe has no exchange).
    pub agreements: Vec<Id>,
    /// Commitments of those agreements that are not flows of the process (the payment).
    pub exchange: Vec<Id>,
}

/// The outcome of folding satisfiers against a wanted quantity.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// What the counted satisfiers add up to, in the wanted unit: for a `transfer`, the
    /// quantity of which both the rights and the custody have gone (see [`parts_of`]).
    pub total: Option<Quantity>,
    /// The larger of the two parts' totals (equal to `total` but for a `transfer` fulfilled
    /// by `transferAllRights` or `transferCustody`): whether anything has begun.
    pub most: Option<Quantity>,
    /// Whether counted satisfiers carry out every part of the action (for a `transfer`:
    /// the rights and the custody; for any other action: one counted satisfier).
    pub all_parts: bool,
    pub counted: Vec<Id>,
    pub not_counted: Vec<NotCounted>,
    /// The first satisfier that took the total over, and the earlier counted ones concurrent
    /// with it.
    pub over: Option<(Id, Vec<Id>)>,
}

/// Which parts of a target's `action` a satisfier of action `by` carries out: `(rights,
/// custody)`, or `None` if it carries out none. ValueFlows defines `transfer` as "full
/// rights and responsibilities plus physical custody", `transferAllRights` as the rights
/// without custody and `transferCustody` as custody without the rights (vf-1.0.ttl; their
/// effects in the action table add up to transfer's), so either one fulfils a transfer in
/// part: a `transfer` is done when both parts are; and a `transfer` carries out a
/// `transferAllRights` or a `transferCustody` whole (it gives both). Every other action is
/// carried out only by itself.
pub(crate) fn parts_of(action: crate::Action, by: crate::Action) -> Option<(bool, bool)> {
    use crate::Action as A;
    match (action, by) {
        (a, b) if a == b => Some((true, true)),
        (A::TransferAllRights | A::TransferCustody, A::Transfer) => Some((true, true)),
        (A::Transfer, A::TransferAllRights) => Some((true, false)),
        (A::Transfer, A::TransferCustody) => Some((false, true)),
        _ => None,
    }
}

/// One candidate of a tally: its order key (an event's, or a commitment's marker op), its id,
/// its action and its quantities.
pub(crate) struct Candidate<'a> {
    pub key: OrderKey,
    pub id: Id,
    pub action: crate::Action,
    pub resource_quantity: Option<&'a Measure>,
    pub effort_quantity: Option<&'a Measure>,
}

impl<'a> Candidate<'a> {
    /// An event as a candidate.
    pub fn event(key: OrderKey, e: &'a EconomicEvent) -> Self {
        Candidate {
            key,
            id: e.id.clone(),
            action: e.action,
            resource_quantity: e.resource_quantity.as_ref(),
            effort_quantity: e.effort_quantity.as_ref(),
        }
    }
}

/// Which quantity of a target is the wanted one: resource first, then effort.
pub(crate) fn wanted_of<'a>(
    resource: Option<&'a Measure>,
    effort: Option<&'a Measure>,
) -> Option<(&'a Measure, bool)> {
    resource.map(|m| (m, true)).or(effort.map(|m| (m, false)))
}

/// Fold `candidates` (in the total order) against `wanted` (`is_resource`: whether it is a
/// resource quantity) of a target of `action`. A candidate counts if it carries out a part
/// of the target's action ([`parts_of`]: its own action, or for a `transfer` a
/// `transferAllRights` or `transferCustody`) and it carries the same kind of quantity in
/// the same unit; with no wanted quantity every such candidate counts, with no total. Each
/// part is summed on its own; the total is what both parts reached, and a part going over
/// the wanted quantity is the over-fulfilment.
pub(crate) fn tally(
    action: crate::Action,
    wanted: Option<(&Measure, bool)>,
    candidates: Vec<Candidate<'_>>,
    causality: &dyn Causality,
) -> Tally {
    let mut t = Tally::default();
    let mut counted_keys: Vec<OrderKey> = Vec::new();
    // The rights part and the custody part (the same for every action but a transfer).
    let mut sums = [Quantity::ZERO, Quantity::ZERO];
    let mut seen = [false, false];
    for c in candidates {
        let Some((rights, custody)) = parts_of(action, c.action) else {
            t.not_counted.push(NotCounted {
                id: c.id,
                reason: format!("its action is {}, not {action}", c.action),
            });
            continue;
        };
        let parts = [rights, custody];
        if let Some((w, is_resource)) = wanted {
            let q = if is_resource {
                c.resource_quantity
            } else {
                c.effort_quantity
            };
            let Some(q) = q.filter(|q| q.has_unit == w.has_unit) else {
                t.not_counted.push(NotCounted {
                    id: c.id,
                    reason: format!(
                        "it has no {} in {}",
                        if is_resource {
                            "resourceQuantity"
                        } else {
                            "effortQuantity"
                        },
                        w.has_unit
                    ),
                });
                continue;
            };
            let mut next = sums;
            let mut overflow = false;
            for (i, part) in parts.iter().enumerate() {
                if *part {
                    match next[i].checked_add(q.has_numerical_value) {
                        Some(x) => next[i] = x,
                        None => overflow = true,
                    }
                }
            }
            if overflow {
                t.not_counted.push(NotCounted {
                    id: c.id,
                    reason: "the total would overflow".into(),
                });
                continue;
            }
            let over = parts
                .iter()
                .zip(next)
                .any(|(part, x)| *part && x > w.has_numerical_value);
            if t.over.is_none() && over {
                let concurrent = causality.in_causal_past(&c.key, &counted_keys);
                let competing = counted_keys
                    .iter()
                    .zip(concurrent)
                    .filter(|(_, seen)| !seen)
                    .map(|(k, _)| ids_of(&t.counted, &counted_keys, k))
                    .collect();
                t.over = Some((c.id.clone(), competing));
            }
            sums = next;
        }
        seen[0] |= rights;
        seen[1] |= custody;
        counted_keys.push(c.key);
        t.counted.push(c.id);
    }
    if wanted.is_some() {
        t.total = Some(sums[0].min(sums[1]));
        t.most = Some(sums[0].max(sums[1]));
    }
    t.all_parts = seen[0] && seen[1];
    t
}

fn ids_of(ids: &[Id], keys: &[OrderKey], k: &OrderKey) -> Id {
    keys.iter()
        .position(|x| x == k)
        .and_then(|i| ids.get(i).cloned())
        .unwrap_or_else(|| k.to_id())
}

/// The progress of a tally against `wanted`: fulfilled when the total reaches it (every
/// part, for a transfer), partly when anything counted toward a part, else open.
pub(crate) fn progress_of(wanted: Option<&Measure>, t: &Tally) -> Progress {
    let any = !t.counted.is_empty();
    match (wanted, t.total, t.most) {
        (Some(w), Some(total), _)
            if total.value() >= w.has_numerical_value.value() && t.all_parts =>
        {
            Progress::Fulfilled
        }
        (Some(_), _, Some(most)) if !most.value().is_zero() => Progress::Partly,
        (None, _, _) if t.all_parts => Progress::Fulfilled,
        (None, _, _) if any => Progress::Partly,
        _ => Progress::Open,
    }
}

/// `total / wanted` in percent, two decimals.
pub(crate) fn percent_of(wanted: Option<&Measure>, total: Option<Quantity>) -> Option<Decimal> {
    let w = wanted?.has_numerical_value.value();
    let t = total?.value();
    if w.is_zero() {
        return None;
    }
    t.checked_mul(Decimal::ONE_HUNDRED)
        .and_then(|x| x.checked_div(w))
        .map(|x| x.round_dp(2).normalize())
}

/// Whether `due` is before `now` (both ISO 8601; compared as instants when both parse,
/// else not overdue).
pub fn is_past(due: &str, now: &str) -> bool {
    match (crate::flows::parse_time(due), crate::flows::parse_time(now)) {
        (Some(d), Some(n)) => d < n,
        _ => false,
    }
}
