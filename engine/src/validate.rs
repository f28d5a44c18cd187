//! Validation of events before anything is written.
//!
//! Two layers: [`check_structure`] needs nothing but the event and the action table, so it is
//! also applied to events that arrive from peers; the state checks in
//! [`Ledger::check_event`](crate::Ledger) also look up every referenced id and the resource's
//! unit, and apply only to local recordings (a peer's event was checked against the peer's
//! state; references to objects created concurrently are legitimate after a merge).

use crate::error::{Error, Result};
use crate::vf::action::{CreateResource, EventQuantity, InputOutput};
use crate::vf::{Action, EconomicEvent, Measure, MAX_QUANTITY, MAX_SCALE};

fn missing(action: Action, field: &'static str, hint: &'static str) -> Error {
    Error::MissingField {
        action,
        field,
        hint,
    }
}

fn not_allowed(action: Action, field: &'static str, hint: &'static str) -> Error {
    Error::FieldNotAllowed {
        action,
        field,
        hint,
    }
}

/// Check a measure: finite (always, for a decimal), not negative, within range and precision.
pub(crate) fn check_measure(field: &'static str, m: &Measure) -> Result<()> {
    let v = m.has_numerical_value.value();
    if m.has_numerical_value.is_negative() {
        return Err(Error::NegativeQuantity {
            field,
            value: m.has_numerical_value.to_string(),
        });
    }
    if v > MAX_QUANTITY {
        return Err(Error::InvalidNumber {
            field,
            value: v.to_string(),
            hint: "a single quantity can be at most 10^15",
        });
    }
    if v.normalize().scale() > MAX_SCALE {
        return Err(Error::InvalidNumber {
            field,
            value: v.to_string(),
            hint: "a quantity can have at most 9 decimal places",
        });
    }
    if m.has_unit.as_str().is_empty() {
        return Err(Error::InvalidNumber {
            field,
            value: v.to_string(),
            hint: "a quantity needs a unit (hasUnit)",
        });
    }
    Ok(())
}

/// Check a coordinate is a finite number within `limit` degrees.
pub(crate) fn check_coordinate(field: &'static str, v: Option<f64>, limit: f64) -> Result<()> {
    match v {
        Some(x) if !x.is_finite() || x.abs() > limit => Err(Error::InvalidNumber {
            field,
            value: x.to_string(),
            hint: "coordinates are finite degrees: latitude within ±90, longitude within ±180",
        }),
        _ => Ok(()),
    }
}

/// The checks that need only the event itself. `creates` says whether the event comes with a
/// new resource to create.
pub(crate) fn check_structure(e: &EconomicEvent, creates: bool) -> Result<()> {
    let a = e.action;
    let fx = a.effects();
    if e.provider.is_none() {
        return Err(missing(
            a,
            "provider",
            "every economic event has a provider agent (for produce, the producer)",
        ));
    }
    if e.receiver.is_none() {
        return Err(missing(
            a,
            "receiver",
            "every economic event has a receiver agent (for produce, the producer)",
        ));
    }

    match fx.event_quantity {
        EventQuantity::Resource if e.resource_quantity.is_none() => {
            return Err(missing(
                a,
                "resourceQuantity",
                "how much of the resource, e.g. 2.5 kg",
            ));
        }
        EventQuantity::Effort if e.effort_quantity.is_none() => {
            return Err(missing(a, "effortQuantity", "how much effort, e.g. 2 hour"));
        }
        EventQuantity::Both if e.resource_quantity.is_none() && e.effort_quantity.is_none() => {
            return Err(missing(
                a,
                "resourceQuantity or effortQuantity",
                "how much of the resource or how long it was used",
            ));
        }
        _ => {}
    }
    if let Some(m) = &e.resource_quantity {
        check_measure("resourceQuantity", m)?;
    }
    if let Some(m) = &e.effort_quantity {
        check_measure("effortQuantity", m)?;
    }

    match fx.input_output {
        InputOutput::Input if e.output_of.is_some() => {
            return Err(not_allowed(
                a,
                "outputOf",
                "this action is a process input: use inputOf",
            ));
        }
        InputOutput::Output if e.input_of.is_some() => {
            return Err(not_allowed(
                a,
                "inputOf",
                "this action is a process output: use outputOf",
            ));
        }
        InputOutput::NotApplicable if e.input_of.is_some() || e.output_of.is_some() => {
            return Err(not_allowed(
                a,
                "inputOf/outputOf",
                "this action happens between agents, outside a process",
            ));
        }
        _ => {}
    }

    let no_resource = matches!(a, Action::Work | Action::DeliverService);
    if no_resource {
        if e.resource_inventoried_as.is_some() {
            return Err(not_allowed(
                a,
                "resourceInventoriedAs",
                "work and services do not affect an inventoried resource: use resourceConformsTo",
            ));
        }
        if e.to_resource_inventoried_as.is_some() {
            return Err(not_allowed(
                a,
                "toResourceInventoriedAs",
                "work and services do not affect an inventoried resource",
            ));
        }
        if creates {
            return Err(not_allowed(
                a,
                "newInventoriedResource",
                "this action never creates a resource",
            ));
        }
        return Ok(());
    }

    if a == Action::Use && e.resource_inventoried_as.is_none() && e.resource_conforms_to.is_none() {
        return Err(missing(
            a,
            "resourceInventoriedAs",
            "the resource (tool, machine) that was used, or resourceConformsTo",
        ));
    }

    match fx.create_resource {
        CreateResource::NotApplicable if creates => {
            return Err(not_allowed(
                a,
                "newInventoriedResource",
                "this action never creates a resource",
            ));
        }
        CreateResource::Optional if creates && e.resource_inventoried_as.is_some() => {
            return Err(not_allowed(
                a,
                "resourceInventoriedAs",
                "give either an existing resource or a new one, not both",
            ));
        }
        CreateResource::OptionalTo if creates && e.to_resource_inventoried_as.is_some() => {
            return Err(not_allowed(
                a,
                "toResourceInventoriedAs",
                "give either an existing to-resource or a new one, not both",
            ));
        }
        _ => {}
    }
    let creates_from = creates && fx.create_resource == CreateResource::Optional;
    if e.resource_inventoried_as.is_none() && !creates_from && a != Action::Use {
        return Err(missing(
            a,
            "resourceInventoriedAs",
            "the resource this event affects (or a new resource, for produce and raise)",
        ));
    }
    if creates && e.resource_quantity.is_none() {
        return Err(missing(
            a,
            "resourceQuantity",
            "a new resource takes its unit from the event's resourceQuantity",
        ));
    }
    if a.has_to_resource() {
        let creates_to = creates && fx.create_resource == CreateResource::OptionalTo;
        if a == Action::Copy && e.to_resource_inventoried_as.is_none() && !creates_to {
            return Err(missing(
                a,
                "toResourceInventoriedAs",
                "a copy goes into another resource: name it or create a new one",
            ));
        }
    } else if e.to_resource_inventoried_as.is_some() && a != Action::Combine {
        return Err(not_allowed(
            a,
            "toResourceInventoriedAs",
            "only transfers, moves, copies and combine (the container) have a to-resource",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_structure;
    use crate::vf::{Action, EconomicEvent, Measure};

    /// An event of `action` with exactly `fields` set; whether it creates a resource.
    fn event(action: Action, fields: &[&str]) -> (EconomicEvent, bool) {
        let mut e = EconomicEvent::new(action, "p", "r");
        e.provider = None;
        e.receiver = None;
        let mut creates = false;
        for f in fields {
            match *f {
                "provider" => e.provider = Some("p".into()),
                "receiver" => e.receiver = Some("r".into()),
                "resourceQuantity" => e.resource_quantity = Some(Measure::new(1, "kg")),
                "effortQuantity" => e.effort_quantity = Some(Measure::new(1, "hour")),
                "resourceInventoriedAs" => e.resource_inventoried_as = Some("res".into()),
                "toResourceInventoriedAs" => e.to_resource_inventoried_as = Some("to".into()),
                "resourceConformsTo" => e.resource_conforms_to = Some("spec".into()),
                "inputOf" => e.input_of = Some("proc".into()),
                "outputOf" => e.output_of = Some("proc".into()),
                "atLocation" => e.at_location = Some("here".into()),
                "toLocation" => e.to_location = Some("there".into()),
                "state" => e.state = Some("pass".into()),
                "newInventoriedResource" => creates = true,
                other => panic!("unknown field {other}"),
            }
        }
        (e, creates)
    }

    fn ok(action: Action, fields: &[&str]) -> bool {
        let (e, creates) = event(action, fields);
        check_structure(&e, creates).is_ok()
    }

    #[test]
    fn event_fields_agree_with_structural_validation() {
        for a in Action::ALL {
            let f = a.event_fields();
            let mut min = f.required.clone();
            min.extend(f.one_of.iter().map(|g| g[0]));
            assert!(ok(a, &min), "{a}: the minimal fields {min:?} are refused");
            for (i, group) in f.one_of.iter().enumerate() {
                for alt in group {
                    let mut m = min.clone();
                    m[f.required.len() + i] = *alt;
                    if group.contains(&"newInventoriedResource") && !m.contains(&"resourceQuantity")
                    {
                        m.push("resourceQuantity");
                    }
                    assert!(ok(a, &m), "{a}: {m:?} (alternative {alt}) is refused");
                }
                let without: Vec<&str> =
                    min.iter().copied().filter(|x| !group.contains(x)).collect();
                assert!(!ok(a, &without), "{a}: accepted without any of {group:?}");
            }
            for r in &f.required {
                let without: Vec<&str> = min.iter().copied().filter(|x| x != r).collect();
                assert!(!ok(a, &without), "{a}: accepted without required {r}");
            }
            for o in &f.optional {
                let mut m = min.clone();
                m.push(*o);
                if *o == "newInventoriedResource" && !m.contains(&"resourceQuantity") {
                    m.push("resourceQuantity");
                }
                assert!(ok(a, &m), "{a}: refused with optional {o}");
            }
            let listed = |x: &&str| {
                f.required.contains(x)
                    || f.optional.contains(x)
                    || f.one_of.iter().any(|g| g.contains(x))
            };
            for x in [
                "inputOf",
                "outputOf",
                "resourceInventoriedAs",
                "toResourceInventoriedAs",
                "newInventoriedResource",
            ] {
                if !listed(&x) {
                    let mut m = min.clone();
                    m.push(x);
                    assert!(!ok(a, &m), "{a}: accepted unlisted {x}");
                }
            }
        }
    }

    #[test]
    fn event_fields_examples() {
        let produce = Action::Produce.event_fields();
        assert_eq!(
            produce.required,
            ["provider", "receiver", "resourceQuantity"]
        );
        assert_eq!(
            produce.one_of,
            [["resourceInventoriedAs", "newInventoriedResource"]]
        );
        assert!(produce.optional.contains(&"outputOf"));
        let work = Action::Work.event_fields();
        assert_eq!(work.required, ["provider", "receiver", "effortQuantity"]);
        assert!(!work.optional.contains(&"resourceInventoriedAs"));
        assert!(Action::Transfer
            .event_fields()
            .optional
            .contains(&"toLocation"));
    }
}
