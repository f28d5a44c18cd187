//! The ValueFlows actions and their effects, as data.
//!
//! The table below is taken from the ValueFlows vocabulary **VF 1.0** (`vf-1.0.ttl`, the
//! `vf:Action` individuals and their `vf:*Effect` properties, valueflows/valueflows at commit
//! 4a28edf, 2026-05-06; CC BY-SA 4.0). One row per action, one column per effect the spec
//! defines. `tests/action_table.rs` checks every row against the spec's own `actions.csv`, and
//! every action's effect on a resource against a hand-written expectation.
//!
//! The fold in [`crate::views`] reads this table; it has no per-action `match` of its own, so a
//! wrong cell here shows up as a wrong quantity in the tests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An economic action: what an [`EconomicEvent`](crate::EconomicEvent),
/// [`Commitment`](crate::Commitment) or [`Intent`](crate::Intent) does to resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Accept a resource into a process to be modified (paired with `modify`).
    Accept,
    /// Reference a resource (a design, a document) as input to a process without using it up.
    Cite,
    /// Put a resource into another one (containment), e.g. items into a package.
    Combine,
    /// Use a resource up as input to a process.
    Consume,
    /// Make a copy of a (usually digital) resource.
    Copy,
    /// A service is delivered: output of one process, input of another or to a receiver.
    DeliverService,
    /// Drop off a resource after transporting it (paired with `pickup`).
    Dropoff,
    /// Decrease a resource's quantities outside a process (e.g. an inventory adjustment).
    Lower,
    /// Give back a resource modified by a process, e.g. repaired (paired with `accept`).
    Modify,
    /// Move a resource from one place or resource to another, same agent accountable.
    Move,
    /// Pick up a resource to transport it (paired with `dropoff`).
    Pickup,
    /// A process produces a new resource or adds to an existing one.
    Produce,
    /// Increase a resource's quantities outside a process (e.g. an inventory adjustment).
    Raise,
    /// Take a resource out of another one (containment).
    Separate,
    /// Give full rights and responsibilities plus physical custody.
    Transfer,
    /// Give full rights and responsibilities without transferring physical custody.
    TransferAllRights,
    /// Give physical custody and control without the accounting rights.
    TransferCustody,
    /// Use a resource in a process without using it up (a tool, a machine).
    Use,
    /// Work done by an agent as input to a process (effort, no resource).
    Work,
}

/// How an action changes a resource's accounting or onhand quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum QuantityEffect {
    /// No effect.
    NotApplicable,
    /// Add the event quantity to the resource.
    Increment,
    /// Subtract the event quantity from the resource.
    Decrement,
    /// Subtract from the resource, add to the to-resource.
    DecrementIncrement,
    /// Add to the to-resource only (copy).
    IncrementTo,
}

/// How an action changes a resource's current location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LocationEffect {
    /// No effect.
    NotApplicable,
    /// A new resource takes the event's `atLocation`.
    New,
    /// The resource takes the event's `atLocation`, when given.
    Update,
    /// The to-resource takes the event's `toLocation`, when given.
    UpdateTo,
}

/// How an action changes a resource's `containedIn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContainedEffect {
    /// No effect.
    NotApplicable,
    /// The resource becomes contained in the event's to-resource.
    Update,
    /// The resource is no longer contained in anything.
    Remove,
}

/// How an action changes a resource's primary accountable agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AccountableEffect {
    /// No effect.
    NotApplicable,
    /// A new (or first-touched) resource gets the receiver as primary accountable.
    New,
    /// The to-resource gets the receiver as primary accountable.
    UpdateTo,
}

/// How an action changes a resource's stage (the process specification it last came out of).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StageEffect {
    /// No effect.
    NotApplicable,
    /// The resource's stage becomes the `basedOn` of the process the event is output of.
    Update,
}

/// How an action changes a resource's state (e.g. pass/fail after a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StateEffect {
    /// No effect.
    NotApplicable,
    /// The resource takes the event's `state`, when given.
    Update,
    /// The to-resource takes the event's `state`, when given.
    UpdateTo,
}

/// Whether an action can create an economic resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CreateResource {
    /// The action never creates a resource.
    NotApplicable,
    /// The action may create the resource it affects (`resourceInventoriedAs`).
    Optional,
    /// The action may create the resource it delivers to (`toResourceInventoriedAs`).
    OptionalTo,
}

/// Which quantity an event of this action carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventQuantity {
    /// `resourceQuantity`.
    Resource,
    /// `effortQuantity`.
    Effort,
    /// Either or both of them.
    Both,
}

/// Whether the action is an input or output of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InputOutput {
    /// Not related to a process (exchanges, adjustments).
    NotApplicable,
    /// An input of a process (`inputOf`).
    Input,
    /// An output of a process (`outputOf`).
    Output,
    /// Output of one process and/or input of another (`deliverService`).
    OutputInput,
}

/// One row of the action table: every effect the spec defines for an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionEffects {
    /// The action this row describes.
    pub action: Action,
    /// Input or output of a process.
    pub input_output: InputOutput,
    /// The action that usually complements this one on the same resource.
    pub pairs_with: Option<Action>,
    /// Whether the event may create a resource.
    pub create_resource: CreateResource,
    /// Which quantity the event carries.
    pub event_quantity: EventQuantity,
    /// Effect on `accountingQuantity`.
    pub accounting: QuantityEffect,
    /// Effect on `onhandQuantity`.
    pub onhand: QuantityEffect,
    /// Effect on `currentLocation`.
    pub location: LocationEffect,
    /// Effect on `containedIn`.
    pub contained: ContainedEffect,
    /// Effect on `primaryAccountable`.
    pub accountable: AccountableEffect,
    /// Effect on `stage`.
    pub stage: StageEffect,
    /// Effect on `state`.
    pub state: StateEffect,
}

use AccountableEffect as Acc;
use ContainedEffect as Con;
use CreateResource as Cr;
use EventQuantity as Eq_;
use InputOutput as Io;
use LocationEffect as Loc;
use QuantityEffect as Q;
use StageEffect as Stg;
use StateEffect as Sta;

#[allow(clippy::too_many_arguments)] // one argument per column of the spec's table
const fn row(
    action: Action,
    input_output: InputOutput,
    pairs_with: Option<Action>,
    create_resource: CreateResource,
    event_quantity: EventQuantity,
    quantities: (QuantityEffect, QuantityEffect),
    location: LocationEffect,
    contained: ContainedEffect,
    accountable: AccountableEffect,
    stage: StageEffect,
    state: StateEffect,
) -> ActionEffects {
    ActionEffects {
        action,
        input_output,
        pairs_with,
        create_resource,
        event_quantity,
        accounting: quantities.0,
        onhand: quantities.1,
        location,
        contained,
        accountable,
        stage,
        state,
    }
}

/// The VF 1.0 action table, in the spec's (alphabetical) order.
///
/// Columns: action, inputOutput, pairsWith, createResource, eventQuantity,
/// (accountingEffect, onhandEffect), locationEffect, containedEffect, accountableEffect,
/// stageEffect, stateEffect.
#[rustfmt::skip]
pub const ACTION_TABLE: [ActionEffects; 19] = [
    row(Action::Accept, Io::Input, Some(Action::Modify), Cr::NotApplicable, Eq_::Resource, (Q::NotApplicable, Q::Decrement), Loc::Update, Con::NotApplicable, Acc::NotApplicable, Stg::NotApplicable, Sta::Update),
    row(Action::Cite, Io::Input, None, Cr::NotApplicable, Eq_::Resource, (Q::NotApplicable, Q::NotApplicable), Loc::NotApplicable, Con::NotApplicable, Acc::NotApplicable, Stg::NotApplicable, Sta::Update),
    row(Action::Combine, Io::Input, None, Cr::NotApplicable, Eq_::Resource, (Q::NotApplicable, Q::Decrement), Loc::NotApplicable, Con::Update, Acc::NotApplicable, Stg::NotApplicable, Sta::Update),
    row(Action::Consume, Io::Input, None, Cr::NotApplicable, Eq_::Resource, (Q::Decrement, Q::Decrement), Loc::NotApplicable, Con::NotApplicable, Acc::NotApplicable, Stg::NotApplicable, Sta::Update),
    row(Action::Copy, Io::NotApplicable, None, Cr::OptionalTo, Eq_::Resource, (Q::IncrementTo, Q::IncrementTo), Loc::New, Con::NotApplicable, Acc::New, Stg::NotApplicable, Sta::UpdateTo),
    row(Action::DeliverService, Io::OutputInput, None, Cr::NotApplicable, Eq_::Resource, (Q::NotApplicable, Q::NotApplicable), Loc::NotApplicable, Con::NotApplicable, Acc::NotApplicable, Stg::NotApplicable, Sta::NotApplicable),
    row(Action::Dropoff, Io::Output, Some(Action::Pickup), Cr::NotApplicable, Eq_::Resource, (Q::NotApplicable, Q::Increment), Loc::Update, Con::NotApplicable, Acc::NotApplicable, Stg::Update, Sta::Update),
    row(Action::Lower, Io::NotApplicable, None, Cr::Optional, Eq_::Resource, (Q::Decrement, Q::Decrement), Loc::NotApplicable, Con::NotApplicable, Acc::New, Stg::NotApplicable, Sta::Update),
    row(Action::Modify, Io::Output, Some(Action::Accept), Cr::NotApplicable, Eq_::Resource, (Q::NotApplicable, Q::Increment), Loc::Update, Con::NotApplicable, Acc::NotApplicable, Stg::Update, Sta::Update),
    row(Action::Move, Io::NotApplicable, None, Cr::OptionalTo, Eq_::Resource, (Q::DecrementIncrement, Q::DecrementIncrement), Loc::UpdateTo, Con::NotApplicable, Acc::NotApplicable, Stg::NotApplicable, Sta::UpdateTo),
    row(Action::Pickup, Io::Input, Some(Action::Dropoff), Cr::NotApplicable, Eq_::Resource, (Q::NotApplicable, Q::Decrement), Loc::Update, Con::NotApplicable, Acc::NotApplicable, Stg::NotApplicable, Sta::Update),
    row(Action::Produce, Io::Output, None, Cr::Optional, Eq_::Resource, (Q::Increment, Q::Increment), Loc::New, Con::NotApplicable, Acc::New, Stg::Update, Sta::Update),
    row(Action::Raise, Io::NotApplicable, None, Cr::Optional, Eq_::Resource, (Q::Increment, Q::Increment), Loc::NotApplicable, Con::NotApplicable, Acc::New, Stg::NotApplicable, Sta::Update),
    row(Action::Separate, Io::Output, None, Cr::NotApplicable, Eq_::Resource, (Q::NotApplicable, Q::Increment), Loc::NotApplicable, Con::Remove, Acc::NotApplicable, Stg::Update, Sta::Update),
    row(Action::Transfer, Io::NotApplicable, None, Cr::OptionalTo, Eq_::Resource, (Q::DecrementIncrement, Q::DecrementIncrement), Loc::UpdateTo, Con::NotApplicable, Acc::UpdateTo, Stg::NotApplicable, Sta::UpdateTo),
    row(Action::TransferAllRights, Io::NotApplicable, None, Cr::OptionalTo, Eq_::Resource, (Q::DecrementIncrement, Q::NotApplicable), Loc::NotApplicable, Con::NotApplicable, Acc::UpdateTo, Stg::NotApplicable, Sta::UpdateTo),
    row(Action::TransferCustody, Io::NotApplicable, None, Cr::OptionalTo, Eq_::Resource, (Q::NotApplicable, Q::DecrementIncrement), Loc::UpdateTo, Con::NotApplicable, Acc::NotApplicable, Stg::NotApplicable, Sta::UpdateTo),
    row(Action::Use, Io::Input, None, Cr::NotApplicable, Eq_::Both, (Q::NotApplicable, Q::NotApplicable), Loc::NotApplicable, Con::NotApplicable, Acc::NotApplicable, Stg::NotApplicable, Sta::Update),
    row(Action::Work, Io::Input, None, Cr::NotApplicable, Eq_::Effort, (Q::NotApplicable, Q::NotApplicable), Loc::NotApplicable, Con::NotApplicable, Acc::NotApplicable, Stg::NotApplicable, Sta::NotApplicable),
];

impl Action {
    /// Every action, in the table's order.
    pub const ALL: [Action; 19] = {
        let mut all = [Action::Accept; 19];
        let mut i = 0;
        while i < 19 {
            all[i] = ACTION_TABLE[i].action;
            i += 1;
        }
        all
    };

    /// This action's row of the action table.
    pub fn effects(self) -> &'static ActionEffects {
        // The table is in the enum's declaration order; a test checks it.
        &ACTION_TABLE[self as usize]
    }

    /// The spec's name for the action (`transferCustody`, `deliverService`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Cite => "cite",
            Action::Combine => "combine",
            Action::Consume => "consume",
            Action::Copy => "copy",
            Action::DeliverService => "deliverService",
            Action::Dropoff => "dropoff",
            Action::Lower => "lower",
            Action::Modify => "modify",
            Action::Move => "move",
            Action::Pickup => "pickup",
            Action::Produce => "produce",
            Action::Raise => "raise",
            Action::Separate => "separate",
            Action::Transfer => "transfer",
            Action::TransferAllRights => "transferAllRights",
            Action::TransferCustody => "transferCustody",
            Action::Use => "use",
            Action::Work => "work",
        }
    }

    /// Whether the event moves quantity from one resource to another (a to-resource is
    /// involved).
    pub fn has_to_resource(self) -> bool {
        let e = self.effects();
        matches!(e.create_resource, CreateResource::OptionalTo)
            || matches!(
                e.accounting,
                QuantityEffect::DecrementIncrement | QuantityEffect::IncrementTo
            )
            || matches!(
                e.onhand,
                QuantityEffect::DecrementIncrement | QuantityEffect::IncrementTo
            )
    }

    /// Whether the event changes a resource's quantities at all.
    pub fn affects_quantities(self) -> bool {
        let e = self.effects();
        e.accounting != QuantityEffect::NotApplicable || e.onhand != QuantityEffect::NotApplicable
    }
}

/// The fields of an economic event of one action, for forms: which must be given, which may,
/// and groups of which at least one must be given. Fields are named as in ValueFlows
/// (`resourceInventoriedAs`, `effortQuantity`, ...; `newInventoriedResource` is a resource the
/// event creates). Derived from the action table by the same rules as the ledger's structural
/// validation (a unit test checks that they agree). A form should not offer fields not
/// listed: they mean nothing for the action, and validation refuses some of them (`inputOf`
/// on a transfer, a resource on `work`).
/// `note`, `hasPointInTime` and `corrects` are allowed on every event and not listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFields {
    /// The action.
    pub action: Action,
    /// Fields that must be given.
    pub required: Vec<&'static str>,
    /// Groups of fields: at least one field of each group must be given.
    pub one_of: Vec<Vec<&'static str>>,
    /// Fields that may be given.
    pub optional: Vec<&'static str>,
}

impl Action {
    /// Which fields an event of this action takes (see [`EventFields`]).
    pub fn event_fields(self) -> EventFields {
        let fx = self.effects();
        let mut required = vec!["provider", "receiver"];
        let mut one_of = Vec::new();
        let mut optional = vec!["resourceConformsTo", "atLocation"];
        match fx.event_quantity {
            EventQuantity::Resource => required.push("resourceQuantity"),
            EventQuantity::Effort => required.push("effortQuantity"),
            EventQuantity::Both => one_of.push(vec!["resourceQuantity", "effortQuantity"]),
        }
        match fx.input_output {
            InputOutput::Input => optional.push("inputOf"),
            InputOutput::Output => optional.push("outputOf"),
            InputOutput::OutputInput => optional.extend(["outputOf", "inputOf"]),
            InputOutput::NotApplicable => {}
        }
        let no_resource = matches!(self, Action::Work | Action::DeliverService);
        if !no_resource {
            match (self, fx.create_resource) {
                (Action::Use, _) => {
                    one_of.push(vec!["resourceInventoriedAs", "resourceConformsTo"])
                }
                (_, CreateResource::Optional) => {
                    one_of.push(vec!["resourceInventoriedAs", "newInventoriedResource"]);
                }
                _ => required.push("resourceInventoriedAs"),
            }
            if self.has_to_resource() || self == Action::Combine {
                if self == Action::Copy {
                    one_of.push(vec!["toResourceInventoriedAs", "newInventoriedResource"]);
                } else {
                    optional.push("toResourceInventoriedAs");
                    if fx.create_resource == CreateResource::OptionalTo {
                        optional.push("newInventoriedResource");
                    }
                }
            }
            if self.has_to_resource() || fx.location == LocationEffect::UpdateTo {
                optional.push("toLocation");
            }
        }
        if fx.state != StateEffect::NotApplicable {
            optional.push("state");
        }
        if self == Action::Use {
            optional.retain(|f| *f != "resourceConformsTo");
        }
        EventFields {
            action: self,
            required,
            one_of,
            optional,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not the name of a ValueFlows action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a ValueFlows action (expected one of: accept, cite, combine, consume, copy, deliverService, dropoff, lower, modify, move, pickup, produce, raise, separate, transfer, transferAllRights, transferCustody, use, work)")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_enum_order_and_names_round_trip() {
        for (i, row) in ACTION_TABLE.iter().enumerate() {
            assert_eq!(row.action as usize, i, "{} out of order", row.action);
            assert_eq!(row.action.as_str().parse::<Action>(), Ok(row.action));
            let json = serde_json::to_string(&row.action).expect("serialize");
            assert_eq!(json, format!("\"{}\"", row.action.as_str()));
        }
        assert!("sell".parse::<Action>().is_err());
    }
}
