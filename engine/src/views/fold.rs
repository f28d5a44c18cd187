//! The fold of one resource: its state as a pure function of the events that touch it, taken
//! in the ledger's total order, driven by the action table.

use serde::{Deserialize, Serialize};

use crate::vf::action::{
    AccountableEffect, ContainedEffect, LocationEffect, QuantityEffect, StageEffect, StateEffect,
};
use crate::vf::{EconomicEvent, Id, Quantity};

/// Which side of an event a resource is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `resourceInventoriedAs`.
    From,
    /// `toResourceInventoriedAs`.
    To,
    /// Both (a whole-resource handover: the to-resource is the resource itself).
    Both,
}

/// Which quantity of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum QuantityKind {
    /// `accountingQuantity`.
    Accounting,
    /// `onhandQuantity`.
    Onhand,
}

/// Which right a transfer moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TransferOf {
    /// Physical custody (transfer, transferCustody, move).
    Custody,
    /// Accounting rights (transferAllRights).
    Rights,
}

/// The resource the event was folded into, when the resource's unit is known.
pub fn to_side_resource(event: &EconomicEvent) -> Option<&Id> {
    if event.action.has_to_resource() {
        event
            .to_resource_inventoried_as
            .as_ref()
            .or(event.resource_inventoried_as.as_ref())
    } else {
        None
    }
}

/// The sides an event touches a resource on, by resource id.
pub fn sides(event: &EconomicEvent) -> Vec<(&Id, Side)> {
    let from = event.resource_inventoried_as.as_ref();
    let to = to_side_resource(event);
    match (from, to) {
        (Some(f), Some(t)) if f == t => vec![(f, Side::Both)],
        (Some(f), Some(t)) => vec![(f, Side::From), (t, Side::To)],
        (Some(f), None) => vec![(f, Side::From)],
        (None, Some(t)) => vec![(t, Side::To)],
        (None, None) => Vec::new(),
    }
}

/// What folding one event into a resource found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoldIssue {
    /// The quantity went below zero.
    Overdraw {
        /// Which quantity.
        quantity: QuantityKind,
        /// The balance after the event.
        balance: Quantity,
    },
    /// The provider had already handed the resource away, in `earlier`.
    DoubleTransfer {
        /// Custody or rights.
        of: TransferOf,
        /// The event that moved it away first.
        earlier: Id,
    },
    /// A sum overflowed (cannot happen within validated limits; kept for totality).
    Overflow,
}

/// The derived state of one resource. Stored as it is in a views value
/// (`super::stored`): its quantities as the 16 bytes of their decimal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FoldState {
    /// The resource's unit, from the first event that gave it a quantity.
    pub unit: Option<Id>,
    /// Accounting quantity.
    #[serde(with = "super::stored::quantity_bytes")]
    pub accounting: Quantity,
    /// Onhand quantity.
    #[serde(with = "super::stored::quantity_bytes")]
    pub onhand: Quantity,
    /// Current location.
    pub location: Option<Id>,
    /// Primary accountable agent.
    pub primary_accountable: Option<Id>,
    /// Custodian.
    pub custodian: Option<Id>,
    /// Containing resource.
    pub contained_in: Option<Id>,
    /// The process the resource last came out of (its `basedOn` is the stage).
    pub stage_process: Option<Id>,
    /// State (pass/fail...).
    pub state: Option<String>,
    /// The last event that changed custody, and its provider.
    pub custody_moved: Option<(Id, Option<Id>)>,
    /// The last event that changed accounting rights, and its provider.
    pub rights_moved: Option<(Id, Option<Id>)>,
}

fn add(q: Quantity, d: Quantity) -> Option<Quantity> {
    q.checked_add(d)
}

fn sub(q: Quantity, d: Quantity) -> Option<Quantity> {
    q.checked_sub(d)
}

impl FoldState {
    /// Apply one event on `side` to this resource. `creates` says whether this event created
    /// this resource. Returns what went wrong, if anything (the event is applied regardless:
    /// conflicts are surfaced, not hidden).
    pub fn apply(&mut self, event: &EconomicEvent, side: Side, creates: bool) -> Vec<FoldIssue> {
        let fx = event.action.effects();
        let mut issues = Vec::new();
        let from = matches!(side, Side::From | Side::Both);
        let to = matches!(side, Side::To | Side::Both);
        let q = event
            .resource_quantity
            .as_ref()
            .map(|m| m.has_numerical_value)
            .unwrap_or(Quantity::ZERO);
        if self.unit.is_none() {
            self.unit = event.resource_quantity.as_ref().map(|m| m.has_unit.clone());
        }

        // Double transfer: the provider hands on something it already handed away.
        if from {
            self.check_double_transfer(event, &mut issues);
        }

        for (kind, effect) in [
            (QuantityKind::Accounting, fx.accounting),
            (QuantityKind::Onhand, fx.onhand),
        ] {
            let target = match kind {
                QuantityKind::Accounting => &mut self.accounting,
                QuantityKind::Onhand => &mut self.onhand,
            };
            let mut result = Some(*target);
            let mut decremented = false;
            match effect {
                QuantityEffect::NotApplicable => {}
                QuantityEffect::Increment if from => result = add(*target, q),
                QuantityEffect::Decrement if from => {
                    result = sub(*target, q);
                    decremented = true;
                }
                QuantityEffect::DecrementIncrement => {
                    if from {
                        result = result.and_then(|t| sub(t, q));
                        decremented = true;
                    }
                    if to {
                        result = result.and_then(|t| add(t, q));
                    }
                }
                QuantityEffect::IncrementTo if to => result = add(*target, q),
                _ => {}
            }
            match result {
                Some(v) => {
                    *target = v;
                    if decremented && v.is_negative() {
                        issues.push(FoldIssue::Overdraw {
                            quantity: kind,
                            balance: v,
                        });
                    }
                }
                None => issues.push(FoldIssue::Overflow),
            }
        }

        // Custody follows the onhand quantity: whoever receives it holds it.
        if creates {
            self.custodian = event.receiver.clone();
        }
        if to && fx.onhand == QuantityEffect::DecrementIncrement {
            self.custodian = event.receiver.clone();
            self.custody_moved = Some((event.id.clone(), event.provider.clone()));
        }

        match fx.location {
            LocationEffect::New if creates && event.at_location.is_some() => {
                self.location = event.at_location.clone();
            }
            LocationEffect::Update if from && event.at_location.is_some() => {
                self.location = event.at_location.clone();
            }
            LocationEffect::UpdateTo if to => {
                if let Some(l) = event.to_location.as_ref().or(event.at_location.as_ref()) {
                    self.location = Some(l.clone());
                }
            }
            _ => {}
        }

        match fx.contained {
            ContainedEffect::Update if from => {
                if let Some(container) = &event.to_resource_inventoried_as {
                    self.contained_in = Some(container.clone());
                }
            }
            ContainedEffect::Remove if from => self.contained_in = None,
            _ => {}
        }

        match fx.accountable {
            AccountableEffect::New if creates || self.primary_accountable.is_none() => {
                self.primary_accountable = event.receiver.clone();
            }
            AccountableEffect::UpdateTo if to => {
                self.primary_accountable = event.receiver.clone();
                self.rights_moved = Some((event.id.clone(), event.provider.clone()));
            }
            _ => {}
        }

        if fx.stage == StageEffect::Update && from {
            if let Some(p) = &event.output_of {
                self.stage_process = Some(p.clone());
            }
        }

        let state_applies = match fx.state {
            StateEffect::Update => from,
            StateEffect::UpdateTo => to,
            StateEffect::NotApplicable => false,
        };
        if state_applies {
            if let Some(s) = &event.state {
                self.state = Some(s.clone());
            }
        }
        issues
    }

    fn check_double_transfer(&self, event: &EconomicEvent, issues: &mut Vec<FoldIssue>) {
        let fx = event.action.effects();
        let provider = event.provider.as_ref();
        let checks = [
            (
                fx.onhand == QuantityEffect::DecrementIncrement,
                TransferOf::Custody,
                &self.custodian,
                &self.custody_moved,
            ),
            (
                fx.accounting == QuantityEffect::DecrementIncrement
                    && fx.onhand != QuantityEffect::DecrementIncrement,
                TransferOf::Rights,
                &self.primary_accountable,
                &self.rights_moved,
            ),
        ];
        for (applies, of, holder, moved) in checks {
            if !applies {
                continue;
            }
            if let Some((earlier, earlier_provider)) = moved {
                if holder.as_ref() != provider && earlier_provider.as_ref() == provider {
                    issues.push(FoldIssue::DoubleTransfer {
                        of,
                        earlier: earlier.clone(),
                    });
                }
            }
        }
    }
}
