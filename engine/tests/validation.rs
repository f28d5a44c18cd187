//! Every typed validation error: the exact variant, a message that names the offending field or
//! id, and nothing written (heads, saved bytes, views, event count and objects unchanged).
//!
//! Covered: unknown action (text and JSON), missing provider/receiver/resource/quantity,
//! unknown references of every kind, negative, out-of-range, too precise and unparsable
//! quantities, non-finite coordinates, unit mismatches, corrections of non-events and of
//! already-corrected events, duplicate ids, fields an action does not allow, resources created
//! without an event, lookups of missing objects, bytes that are not a ledger, a newer schema,
//! and a batch whose last event is bad.

use std::fmt::Debug;
use std::str::FromStr;

use reflow::*;

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

fn id(s: &str) -> Id {
    Id::from(s)
}

/// A small ledger: agents alice and bob; units kg, hour, one; places here and there; a
/// resource specification `apples`, a process specification `repair` and a process `proc`;
/// resources `r` (10 kg, alice's, at here), `dest` (1 one, bob's) and `tool` (1 one, effort in
/// hours); and one event `e1` (alice consumes 1 kg of r).
struct Fixture {
    l: Ledger,
    e1: Id,
}

fn fixture() -> Fixture {
    let mut l = Ledger::new_network("validation", actor(1)).expect("genesis");
    for (u, label) in [("kg", "kilogram"), ("hour", "hour"), ("one", "one")] {
        l.create(Unit::new(u, label, u)).expect("unit");
    }
    l.create(Agent::person("alice", "Alice")).expect("agent");
    l.create(Agent::person("bob", "Bob")).expect("agent");
    l.create(SpatialThing::new("here", "Here", Some((52.37, 4.89))))
        .expect("place");
    l.create(SpatialThing::new("there", "There", None))
        .expect("place");
    l.create(ResourceSpecification::new("apples", "Apples"))
        .expect("rspec");
    l.create(ProcessSpecification::new("repair", "Repair"))
        .expect("pspec");
    l.create(Process::new("proc", "A repair", Some(id("repair"))))
        .expect("process");
    l.record_event(
        EconomicEvent::new(Action::Produce, "alice", "alice")
            .quantity(10, "kg")
            .at("here")
            .creating(ResourceDescription::new("r", "Apples").conforming_to("apples")),
    )
    .expect("r");
    l.record_event(
        EconomicEvent::new(Action::Raise, "bob", "bob")
            .quantity(1, "one")
            .creating(ResourceDescription::new("dest", "Crate")),
    )
    .expect("dest");
    let mut tool = ResourceDescription::new("tool", "Sewing machine");
    tool.unit_of_effort = Some(id("hour"));
    l.record_event(
        EconomicEvent::new(Action::Raise, "alice", "alice")
            .quantity(1, "one")
            .creating(tool),
    )
    .expect("tool");
    let e1 = l
        .record_event(
            EconomicEvent::new(Action::Consume, "alice", "alice")
                .resource("r")
                .quantity(1, "kg"),
        )
        .expect("e1");
    Fixture { l, e1 }
}

/// Everything observable about a ledger that a write could change.
#[derive(Debug, PartialEq)]
struct Frozen {
    heads: Vec<ChangeHash>,
    bytes: Vec<u8>,
    changes: usize,
    snapshot: ViewSnapshot,
    event_count: usize,
    events: Vec<EconomicEvent>,
    objects: String,
}

fn freeze(l: &Ledger) -> Frozen {
    let all = EventFilter {
        include_corrected: true,
        ..Default::default()
    };
    let objects = serde_json::json!({
        "agents": l.list::<Agent>().iter().map(|a| (a.id.as_str().to_owned(), a.name.clone())).collect::<Vec<_>>(),
        "units": l.list::<Unit>().iter().map(|u| u.id.as_str().to_owned()).collect::<Vec<_>>(),
        "places": l.list::<SpatialThing>().iter().map(|p| (p.id.as_str().to_owned(), p.lat, p.long)).collect::<Vec<_>>(),
        "processes": l.list::<Process>().iter().map(|p| p.id.as_str().to_owned()).collect::<Vec<_>>(),
        "resources": l.list::<ResourceDescription>().iter().map(|r| r.id.as_str().to_owned()).collect::<Vec<_>>(),
        "commitments": l.list::<Commitment>().iter().map(|c| c.id.as_str().to_owned()).collect::<Vec<_>>(),
    });
    let bytes = l.save();
    assert_eq!(bytes, l.save(), "save() is deterministic");
    Frozen {
        heads: l.heads(),
        bytes,
        changes: l.changes_since(&[]).len(),
        snapshot: l.snapshot(),
        event_count: l.event_count(),
        events: l.events(&all),
        objects: objects.to_string(),
    }
}

/// Run `f`, which must fail, and check that nothing was written. Returns the error.
#[track_caller]
fn rejects<T: Debug>(
    l: &mut Ledger,
    what: &str,
    f: impl FnOnce(&mut Ledger) -> reflow::Result<T>,
) -> Error {
    let before = freeze(l);
    let err = match f(l) {
        Ok(v) => panic!("{what}: accepted (returned {v:?}) but must be refused"),
        Err(e) => e,
    };
    let after = freeze(l);
    assert_eq!(before.heads, after.heads, "{what}: heads changed");
    assert_eq!(
        before.bytes.len(),
        after.bytes.len(),
        "{what}: saved length changed"
    );
    assert!(before.bytes == after.bytes, "{what}: saved bytes changed");
    assert_eq!(before.changes, after.changes, "{what}: changes written");
    assert_eq!(before.snapshot, after.snapshot, "{what}: views changed");
    assert_eq!(
        before.event_count, after.event_count,
        "{what}: event count changed"
    );
    assert_eq!(before.events, after.events, "{what}: events changed");
    assert_eq!(before.objects, after.objects, "{what}: objects changed");
    assert_eq!(
        l.snapshot(),
        l.snapshot_from_scratch(),
        "{what}: views differ from a fresh fold"
    );
    err
}

/// The error's message names every one of `words`.
fn assert_mentions(e: &Error, words: &[&str]) {
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "message {msg:?} does not mention `{w}`");
    }
}

/// The ledger still takes a valid event after a refusal.
fn still_writable(l: &mut Ledger) {
    let before = l.event_count();
    l.record_event(
        EconomicEvent::new(Action::Raise, "alice", "alice")
            .resource("r")
            .quantity(1, "kg"),
    )
    .expect("a valid event after a refusal");
    assert_eq!(l.event_count(), before + 1);
}

/// A valid event of `action` on the fixture, outside any process.
fn valid(action: Action) -> EconomicEvent {
    let e = EconomicEvent::new(action, "alice", "bob").quantity(1, "kg");
    match action {
        Action::Work => EconomicEvent::new(action, "alice", "bob").effort(2, "hour"),
        Action::DeliverService => EconomicEvent::new(action, "alice", "bob")
            .quantity(1, "hour")
            .conforms_to("apples"),
        Action::Copy
        | Action::Move
        | Action::Transfer
        | Action::TransferAllRights
        | Action::TransferCustody => e.resource("r").to_resource("r2"),
        _ => e.resource("r"),
    }
}

/// The fixture plus `r2`, a second kg resource to move things into.
fn fixture_with_r2() -> Fixture {
    let mut f = fixture();
    f.l.record_event(
        EconomicEvent::new(Action::Raise, "bob", "bob")
            .quantity(1, "kg")
            .creating(ResourceDescription::new("r2", "Bob's apples")),
    )
    .expect("r2");
    f
}

#[test]
fn the_valid_events_used_below_are_valid() {
    let f = fixture_with_r2();
    for (n, a) in Action::ALL.into_iter().enumerate() {
        let mut l = f.l.fork(actor(100 + n as u8));
        l.record_event(valid(a))
            .unwrap_or_else(|e| panic!("valid {a} event refused: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown action
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_action() {
    for text in ["explode", "Transfer", "transfer ", "", "sell"] {
        let err = Action::from_str(text).expect_err("not an action");
        assert_eq!(err.0, text);
        assert!(err.to_string().contains(&format!("`{text}`")), "{err}");
        let e = Error::from(err);
        assert!(
            matches!(&e, Error::UnknownAction(u) if u.0 == text),
            "{e:?}"
        );
        assert_mentions(&e, &[&format!("`{text}`"), "transferCustody"]);
    }

    // The JSON route: an event as JSON (the stored form, and what a client sends) with an
    // unknown action does not parse, so it never reaches the ledger.
    let mut f = fixture();
    let before = freeze(&f.l);
    let json = r#"{"event": {"action": "explode", "provider": "alice", "receiver": "bob",
        "resourceInventoriedAs": "r", "resourceQuantity": {"hasNumericalValue": "1", "hasUnit": "kg"}}}"#;
    let err = serde_json::from_str::<NewEvent>(json).expect_err("unknown action");
    assert!(err.to_string().contains("explode"), "{err}");
    assert_eq!(before, freeze(&f.l));
    // The same JSON with a real action is recorded.
    let ok: NewEvent =
        serde_json::from_str(&json.replace("explode", "consume")).expect("valid JSON");
    f.l.record_event(ok).expect("recorded");
    assert_eq!(f.l.event_count(), before.event_count + 1);
}

// ---------------------------------------------------------------------------------------------
// Missing fields
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_provider_or_receiver() {
    let mut f = fixture_with_r2();
    for a in Action::ALL {
        for field in ["provider", "receiver"] {
            let mut ev = valid(a);
            if field == "provider" {
                ev.provider = None;
            } else {
                ev.receiver = None;
            }
            let e = rejects(&mut f.l, &format!("{a} without {field}"), |l| {
                l.record_event(ev)
            });
            assert!(
                matches!(&e, Error::MissingField { action, field: fl, .. } if *action == a && *fl == field),
                "{a} without {field}: {e:?}"
            );
            assert_mentions(&e, &[field, a.as_str()]);
        }
    }
    still_writable(&mut f.l);
}

#[test]
fn missing_resource() {
    let mut f = fixture_with_r2();
    for a in Action::ALL {
        if matches!(a, Action::Work | Action::DeliverService) {
            continue; // no resource involved
        }
        let mut ev = valid(a);
        ev.resource_inventoried_as = None;
        let e = rejects(&mut f.l, &format!("{a} without a resource"), |l| {
            l.record_event(ev)
        });
        assert!(
            matches!(&e, Error::MissingField { action, field, .. } if *action == a && *field == "resourceInventoriedAs"),
            "{a}: {e:?}"
        );
        assert_mentions(&e, &["resourceInventoriedAs", a.as_str()]);
    }
    // Use of a kind of tool rather than a specific one is fine.
    let mut l = f.l.fork(actor(9));
    l.record_event(
        EconomicEvent::new(Action::Use, "alice", "alice")
            .effort(1, "hour")
            .conforms_to("apples"),
    )
    .expect("use of a resource specification");
    still_writable(&mut f.l);
}

#[test]
fn missing_quantity_or_to_resource() {
    let mut f = fixture_with_r2();
    for a in Action::ALL {
        let mut ev = valid(a);
        ev.resource_quantity = None;
        ev.effort_quantity = None;
        let want = match a {
            Action::Work => "effortQuantity",
            Action::Use => "resourceQuantity or effortQuantity",
            _ => "resourceQuantity",
        };
        let e = rejects(&mut f.l, &format!("{a} without a quantity"), |l| {
            l.record_event(ev)
        });
        assert!(
            matches!(&e, Error::MissingField { action, field, .. } if *action == a && *field == want),
            "{a}: {e:?}"
        );
        assert_mentions(&e, &[want, a.as_str()]);
    }

    // A copy goes somewhere.
    let e = rejects(&mut f.l, "copy without a to-resource", |l| {
        l.record_event(valid(Action::Copy).to_resource_none())
    });
    assert!(
        matches!(&e, Error::MissingField { action: Action::Copy, field, .. } if *field == "toResourceInventoriedAs"),
        "{e:?}"
    );
    assert_mentions(&e, &["toResourceInventoriedAs", "copy"]);

    // Part of a resource cannot be handed over as the resource itself.
    for a in [
        Action::Move,
        Action::Transfer,
        Action::TransferAllRights,
        Action::TransferCustody,
    ] {
        let ev = valid(a).to_resource_none().quantity(3, "kg");
        let e = rejects(&mut f.l, &format!("partial {a} without to-resource"), |l| {
            l.record_event(ev)
        });
        assert!(
            matches!(&e, Error::MissingField { action, field, .. } if *action == a && *field == "toResourceInventoriedAs"),
            "{a}: {e:?}"
        );
        assert_mentions(&e, &["toResourceInventoriedAs", a.as_str()]);
    }
    still_writable(&mut f.l);
}

/// Naming the resource itself as the to-resource is the same whole-resource handover as
/// leaving the to-resource out (the fold treats both alike), so the same rule applies: only
/// the whole resource can go that way.
#[test]
fn handover_naming_the_resource_itself_is_whole_only() {
    let mut f = fixture();
    for a in [
        Action::Move,
        Action::Transfer,
        Action::TransferAllRights,
        Action::TransferCustody,
    ] {
        let ev = EconomicEvent::new(a, "alice", "bob")
            .resource("r")
            .to_resource("r")
            .quantity(3, "kg");
        let e = rejects(&mut f.l, &format!("partial {a} of r into r"), |l| {
            l.record_event(ev)
        });
        assert!(
            matches!(&e, Error::MissingField { action, field, .. } if *action == a && *field == "toResourceInventoriedAs"),
            "{a}: {e:?}"
        );
    }
}

trait NoTo {
    fn to_resource_none(self) -> Self;
}

impl NoTo for EconomicEvent {
    fn to_resource_none(mut self) -> Self {
        self.to_resource_inventoried_as = None;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown references
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_references() {
    let mut f = fixture();
    let missing_event = format!("999999@{}", actor(1));
    let base = || {
        EconomicEvent::new(Action::Consume, "alice", "alice")
            .resource("r")
            .quantity(1, "kg")
    };
    let cases: Vec<(&str, NewEvent, ObjectKind, String)> = vec![
        (
            "provider",
            EconomicEvent::new(Action::Consume, "nobody", "alice")
                .resource("r")
                .quantity(1, "kg")
                .into(),
            ObjectKind::Agent,
            "nobody".into(),
        ),
        (
            "receiver",
            EconomicEvent::new(Action::Consume, "alice", "nobody")
                .resource("r")
                .quantity(1, "kg")
                .into(),
            ObjectKind::Agent,
            "nobody".into(),
        ),
        (
            "provider",
            EconomicEvent::new(Action::Consume, "kg", "alice")
                .resource("r")
                .quantity(1, "kg")
                .into(),
            ObjectKind::Agent,
            "kg".into(),
        ),
        (
            "resourceInventoriedAs",
            EconomicEvent::new(Action::Consume, "alice", "alice")
                .resource("ghost")
                .quantity(1, "kg")
                .into(),
            ObjectKind::EconomicResource,
            "ghost".into(),
        ),
        (
            "toResourceInventoriedAs",
            EconomicEvent::new(Action::Transfer, "alice", "bob")
                .resource("r")
                .to_resource("ghost")
                .quantity(1, "kg")
                .into(),
            ObjectKind::EconomicResource,
            "ghost".into(),
        ),
        (
            "inputOf",
            base().input_of("ghost-proc").into(),
            ObjectKind::Process,
            "ghost-proc".into(),
        ),
        (
            "outputOf",
            EconomicEvent::new(Action::Produce, "alice", "alice")
                .resource("r")
                .quantity(1, "kg")
                .output_of("ghost-proc")
                .into(),
            ObjectKind::Process,
            "ghost-proc".into(),
        ),
        (
            "resourceConformsTo",
            base().conforms_to("ghost-spec").into(),
            ObjectKind::ResourceSpecification,
            "ghost-spec".into(),
        ),
        (
            "atLocation",
            base().at("atlantis").into(),
            ObjectKind::SpatialThing,
            "atlantis".into(),
        ),
        (
            "toLocation",
            base().to_location("atlantis").into(),
            ObjectKind::SpatialThing,
            "atlantis".into(),
        ),
        (
            "realizationOf",
            base().realizing("ghost-agreement").into(),
            ObjectKind::Agreement,
            "ghost-agreement".into(),
        ),
        (
            "resourceQuantity",
            base().quantity(1, "lb").into(),
            ObjectKind::Unit,
            "lb".into(),
        ),
        (
            "effortQuantity",
            EconomicEvent::new(Action::Work, "alice", "alice")
                .effort(1, "minute")
                .into(),
            ObjectKind::Unit,
            "minute".into(),
        ),
        (
            "corrects",
            base().correcting(missing_event.as_str()).into(),
            ObjectKind::EconomicEvent,
            missing_event.clone(),
        ),
        (
            "corrects",
            base().correcting("no-such-thing").into(),
            ObjectKind::EconomicEvent,
            "no-such-thing".into(),
        ),
        (
            "newInventoriedResource",
            EconomicEvent::new(Action::Produce, "alice", "alice")
                .quantity(1, "kg")
                .creating(ResourceDescription::new("pears", "Pears").conforming_to("ghost-spec")),
            ObjectKind::ResourceSpecification,
            "ghost-spec".into(),
        ),
    ];
    for (want_field, ev, want_kind, want_id) in cases {
        let what = format!("unknown {want_field} {want_id}");
        let e = rejects(&mut f.l, &what, |l| l.record_event(ev));
        assert!(
            matches!(&e, Error::UnknownReference { field, kind, id: got }
                if *field == want_field && *kind == want_kind && got.as_str() == want_id),
            "{what}: {e:?}"
        );
        assert_mentions(&e, &[want_field, &format!("`{want_id}`")]);
    }

    // Objects' own references.
    let e = rejects(&mut f.l, "process based on a missing spec", |l| {
        l.create(Process::new("p2", "P2", Some(id("ghost-pspec"))))
    });
    assert!(
        matches!(&e, Error::UnknownReference { kind: ObjectKind::ProcessSpecification, id: got, .. } if got.as_str() == "ghost-pspec"),
        "{e:?}"
    );
    assert_mentions(&e, &["ghost-pspec"]);
    let mut agent = Agent::person("carol", "Carol");
    agent.primary_location = Some(id("atlantis"));
    let e = rejects(&mut f.l, "agent at a missing place", |l| l.create(agent));
    assert!(
        matches!(&e, Error::UnknownReference { kind: ObjectKind::SpatialThing, id: got, .. } if got.as_str() == "atlantis"),
        "{e:?}"
    );
    assert_mentions(&e, &["atlantis"]);
    let e = rejects(&mut f.l, "update to a missing place", |l| {
        l.update::<Agent>(&id("alice"), |a| a.primary_location = Some(id("atlantis")))
    });
    assert!(
        matches!(&e, Error::UnknownReference { kind: ObjectKind::SpatialThing, id: got, .. } if got.as_str() == "atlantis"),
        "{e:?}"
    );
    still_writable(&mut f.l);
}

#[test]
fn lookups_of_missing_objects() {
    let mut f = fixture();
    let e = rejects(&mut f.l, "update a missing agent", |l| {
        l.update::<Agent>(&id("ghost"), |a| a.name = "X".into())
    });
    assert!(
        matches!(&e, Error::NotFound { kind: ObjectKind::Agent, id: got } if got.as_str() == "ghost"),
        "{e:?}"
    );
    assert_mentions(&e, &["`ghost`", "agent"]);
    let e = rejects(&mut f.l, "update a unit as an agent", |l| {
        l.update::<Agent>(&id("kg"), |a| a.name = "X".into())
    });
    assert!(matches!(&e, Error::NotFound { .. }), "{e:?}");
    for e in [
        f.l.trace(&id("ghost")).expect_err("no such resource"),
        f.l.track(&id("ghost")).expect_err("no such resource"),
    ] {
        assert!(
            matches!(&e, Error::NotFound { kind: ObjectKind::EconomicResource, id: got } if got.as_str() == "ghost"),
            "{e:?}"
        );
        assert_mentions(&e, &["`ghost`"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Quantities and numbers
// ---------------------------------------------------------------------------------------------

#[test]
fn negative_quantities() {
    let mut f = fixture();
    let cases: Vec<(&str, EconomicEvent, &str)> = vec![
        (
            "resourceQuantity",
            EconomicEvent::new(Action::Consume, "alice", "alice")
                .resource("r")
                .quantity(-3, "kg"),
            "-3",
        ),
        (
            "resourceQuantity",
            EconomicEvent::new(Action::Raise, "alice", "alice")
                .resource("r")
                .quantity("-0.5".parse::<Quantity>().expect("decimal"), "kg"),
            "-0.5",
        ),
        (
            "effortQuantity",
            EconomicEvent::new(Action::Work, "alice", "alice").effort(-1, "hour"),
            "-1",
        ),
        (
            "effortQuantity",
            EconomicEvent::new(Action::Use, "alice", "alice")
                .resource("tool")
                .quantity(1, "one")
                .effort(-2, "hour"),
            "-2",
        ),
    ];
    for (want_field, ev, want_value) in cases {
        let what = format!("{want_field} {want_value}");
        let e = rejects(&mut f.l, &what, |l| l.record_event(ev));
        assert!(
            matches!(&e, Error::NegativeQuantity { field, value } if *field == want_field && value == want_value),
            "{what}: {e:?}"
        );
        assert_mentions(&e, &[want_field, want_value]);
    }
    // A new resource cannot start negative either.
    let e = rejects(&mut f.l, "produce -1", |l| {
        l.record_event(
            EconomicEvent::new(Action::Produce, "alice", "alice")
                .quantity(-1, "kg")
                .creating(ResourceDescription::new("neg", "Neg")),
        )
    });
    assert!(matches!(&e, Error::NegativeQuantity { .. }), "{e:?}");
    assert!(f.l.resource(&id("neg")).is_none());
    // Zero is a quantity.
    f.l.record_event(
        EconomicEvent::new(Action::Raise, "alice", "alice")
            .resource("r")
            .quantity(0, "kg"),
    )
    .expect("zero is fine");
}

#[test]
fn unparsable_and_non_finite_quantities() {
    for text in [
        "NaN",
        "nan",
        "inf",
        "-inf",
        "Infinity",
        "1e400",
        "",
        " ",
        "abc",
        "1,5",
        "0x10",
        "1/2",
        "--1",
        "79228162514264337593543950336", // 2^96, beyond a decimal's mantissa
        "0.12345678901234567890123456789", // 29 significant digits: cannot be exact
    ] {
        assert!(
            text.parse::<Quantity>().is_err(),
            "{text:?} must not parse as a quantity"
        );
        assert_eq!(
            Measure::parse(&format!("{text} kg")),
            None,
            "{text:?} kg must not parse as a measure"
        );
    }
    // The JSON forms: strings that are not decimals, numbers beyond f64, non-numbers.
    for json in [
        r#"{"hasNumericalValue": "NaN", "hasUnit": "kg"}"#,
        r#"{"hasNumericalValue": "inf", "hasUnit": "kg"}"#,
        r#"{"hasNumericalValue": 1e400, "hasUnit": "kg"}"#,
        r#"{"hasNumericalValue": NaN, "hasUnit": "kg"}"#,
        r#"{"hasNumericalValue": true, "hasUnit": "kg"}"#,
        r#"{"hasNumericalValue": null, "hasUnit": "kg"}"#,
    ] {
        assert!(
            serde_json::from_str::<Measure>(json).is_err(),
            "{json} must not parse"
        );
    }
    let m: Measure =
        serde_json::from_str(r#"{"hasNumericalValue": 2.35, "hasUnit": "kg"}"#).expect("a number");
    assert_eq!(
        m,
        Measure::new("2.35".parse::<Quantity>().expect("decimal"), "kg")
    );
}

#[test]
fn quantities_out_of_range_or_too_precise() {
    let mut f = fixture();
    let q = |s: &str| s.parse::<Quantity>().expect("a decimal");
    for (text, hint) in [
        ("0.0000000001", "9 decimal places"),
        ("1.1234567891", "9 decimal places"),
        ("1000000000000001", "10^15"),
        ("1000000000000000.5", "10^15"),
        ("99999999999999999999", "10^15"),
    ] {
        let e = rejects(&mut f.l, text, |l| {
            l.record_event(
                EconomicEvent::new(Action::Raise, "alice", "alice")
                    .resource("r")
                    .quantity(q(text), "kg"),
            )
        });
        assert!(
            matches!(&e, Error::InvalidNumber { field, value, .. } if *field == "resourceQuantity" && value == text),
            "{text}: {e:?}"
        );
        assert_mentions(&e, &["resourceQuantity", text, hint]);
        let e = rejects(&mut f.l, text, |l| {
            l.record_event(
                EconomicEvent::new(Action::Work, "alice", "alice").effort(q(text), "hour"),
            )
        });
        assert!(
            matches!(&e, Error::InvalidNumber { field, .. } if *field == "effortQuantity"),
            "{text}: {e:?}"
        );
    }
    // A quantity without a unit.
    let e = rejects(&mut f.l, "no unit", |l| {
        l.record_event(
            EconomicEvent::new(Action::Raise, "alice", "alice")
                .resource("r")
                .quantity(1, ""),
        )
    });
    assert!(
        matches!(&e, Error::InvalidNumber { field, .. } if *field == "resourceQuantity"),
        "{e:?}"
    );
    assert_mentions(&e, &["resourceQuantity", "hasUnit"]);

    // The limits themselves are allowed; trailing zeros do not count as precision.
    for text in ["1000000000000000", "0.000000001", "1.0000000000"] {
        let mut l = f.l.fork(actor(7));
        l.record_event(
            EconomicEvent::new(Action::Raise, "alice", "alice")
                .resource("r")
                .quantity(q(text), "kg"),
        )
        .unwrap_or_else(|e| panic!("{text} is within the limits: {e}"));
    }
}

#[test]
fn non_finite_or_out_of_range_coordinates() {
    let mut f = fixture();
    for (field, lat, long) in [
        ("lat", f64::NAN, 0.0),
        ("lat", f64::INFINITY, 0.0),
        ("lat", 90.5, 0.0),
        ("long", 0.0, f64::NEG_INFINITY),
        ("long", 0.0, f64::NAN),
        ("long", 0.0, -180.5),
    ] {
        let what = format!("{field} at ({lat}, {long})");
        let e = rejects(&mut f.l, &what, |l| {
            l.create(SpatialThing::new("nowhere", "Nowhere", Some((lat, long))))
        });
        assert!(
            matches!(&e, Error::InvalidNumber { field: got, .. } if *got == field),
            "{what}: {e:?}"
        );
        assert_mentions(&e, &[&format!("`{field}`")]);
        let e = rejects(&mut f.l, &format!("update {what}"), |l| {
            l.update::<SpatialThing>(&id("here"), |p| {
                p.lat = Some(lat);
                p.long = Some(long);
            })
        });
        assert!(
            matches!(&e, Error::InvalidNumber { field: got, .. } if *got == field),
            "update {what}: {e:?}"
        );
    }
    assert!(f.l.get::<SpatialThing>(&id("nowhere")).is_none());
    still_writable(&mut f.l);
}

/// Commitments and intents carry quantities too; the same limits apply to them as to events.
#[test]
fn quantities_of_commitments_and_intents_are_checked() {
    let mut f = fixture();
    let commitment = |q: Quantity| Commitment {
        id: id("c1"),
        resource_conforms_to: Some(id("apples")),
        resource_quantity: Some(Measure::new(q, "kg")),
        ..Commitment::new(Action::Transfer, "alice", "bob")
    };
    let e = rejects(&mut f.l, "commitment of -5 kg", |l| {
        l.create(commitment(Quantity::from_i64(-5)))
    });
    assert!(matches!(&e, Error::NegativeQuantity { .. }), "{e:?}");
    assert_mentions(&e, &["-5"]);
    let big = "1000000000000001".parse::<Quantity>().expect("decimal");
    let e = rejects(&mut f.l, "commitment of 10^15+1 kg", |l| {
        l.create(commitment(big))
    });
    assert!(matches!(&e, Error::InvalidNumber { .. }), "{e:?}");
    let intent = Intent {
        id: id("i1"),
        resource_conforms_to: Some(id("apples")),
        resource_quantity: Some(Measure::new(-1, "kg")),
        ..Intent::offer(Action::Transfer, "alice")
    };
    let e = rejects(&mut f.l, "intent of -1 kg", |l| l.create(intent));
    assert!(matches!(&e, Error::NegativeQuantity { .. }), "{e:?}");
    f.l.create(commitment(Quantity::from_i64(5)))
        .expect("a valid commitment");
}

// ---------------------------------------------------------------------------------------------
// Units
// ---------------------------------------------------------------------------------------------

#[test]
fn unit_mismatch() {
    let mut f = fixture_with_r2();
    let cases: Vec<(&str, Vec<NewEvent>, &str, &str, &str)> = vec![
        (
            "resourceQuantity",
            vec![EconomicEvent::new(Action::Consume, "alice", "alice")
                .resource("r")
                .quantity(1, "hour")
                .into()],
            "r",
            "kg",
            "hour",
        ),
        (
            "resourceQuantity",
            vec![EconomicEvent::new(Action::Transfer, "alice", "bob")
                .resource("r")
                .to_resource("dest")
                .quantity(1, "kg")
                .into()],
            "dest",
            "one",
            "kg",
        ),
        (
            "effortQuantity",
            vec![EconomicEvent::new(Action::Use, "alice", "alice")
                .resource("tool")
                .effort(2, "kg")
                .into()],
            "tool",
            "hour",
            "kg",
        ),
        (
            // A resource created earlier in the same batch.
            "resourceQuantity",
            vec![
                EconomicEvent::new(Action::Produce, "alice", "alice")
                    .quantity(2, "kg")
                    .creating(ResourceDescription::new("jam", "Jam")),
                EconomicEvent::new(Action::Consume, "alice", "alice")
                    .resource("jam")
                    .quantity(1, "one")
                    .into(),
            ],
            "jam",
            "kg",
            "one",
        ),
    ];
    for (want_field, batch, want_res, want_expected, want_given) in cases {
        let what = format!("{want_field} in {want_given} on {want_res}");
        let e = rejects(&mut f.l, &what, |l| l.record_events(batch));
        assert!(
            matches!(&e, Error::UnitMismatch { field, resource, expected, given }
                if *field == want_field && resource.as_str() == want_res
                    && expected.as_str() == want_expected && given.as_str() == want_given),
            "{what}: {e:?}"
        );
        assert_mentions(
            &e,
            &[
                want_field,
                &format!("`{want_res}`"),
                &format!("`{want_expected}`"),
                &format!("`{want_given}`"),
            ],
        );
    }
    assert!(f.l.resource(&id("jam")).is_none());
    still_writable(&mut f.l);
}

// ---------------------------------------------------------------------------------------------
// Corrections
// ---------------------------------------------------------------------------------------------

#[test]
fn correcting_a_non_event() {
    let mut f = fixture();
    for (target, kind) in [
        ("alice", ObjectKind::Agent),
        ("kg", ObjectKind::Unit),
        ("proc", ObjectKind::Process),
        ("here", ObjectKind::SpatialThing),
        ("r", ObjectKind::EconomicResource),
    ] {
        let e = rejects(&mut f.l, &format!("correcting {target}"), |l| {
            l.record_event(
                EconomicEvent::new(Action::Consume, "alice", "alice")
                    .resource("r")
                    .quantity(2, "kg")
                    .correcting(target),
            )
        });
        assert!(
            matches!(&e, Error::CorrectsNonEvent { id: got, kind: k } if got.as_str() == target && *k == kind),
            "{target}: {e:?}"
        );
        assert_mentions(&e, &["corrects", &format!("`{target}`"), &kind.to_string()]);
    }
    still_writable(&mut f.l);
}

#[test]
fn correcting_an_already_corrected_event() {
    let mut f = fixture();
    let fix = |target: &Id, q: i64| {
        EconomicEvent::new(Action::Consume, "alice", "alice")
            .resource("r")
            .quantity(q, "kg")
            .correcting(target)
    };
    let e2 = f.l.record_event(fix(&f.e1, 2)).expect("first correction");
    let e1 = f.e1.clone();
    let e = rejects(&mut f.l, "second correction of e1", |l| {
        l.record_event(fix(&e1, 3))
    });
    assert!(
        matches!(&e, Error::AlreadyCorrected { event, by } if *event == e1 && *by == e2),
        "{e:?}"
    );
    assert_mentions(&e, &[e1.as_str(), e2.as_str()]);

    // Within one batch: the second correction of the same event is refused too. The first
    // correction has no id yet, so the refusal may be `AlreadyCorrected` naming e3 or
    // `FieldNotAllowed` on `corrects`; either way nothing is written.
    let e3 =
        f.l.record_event(fix(&e2, 4))
            .expect("correct the correction");
    let e = rejects(&mut f.l, "two corrections of e3 in one batch", |l| {
        l.record_events(vec![fix(&e3, 5).into(), fix(&e3, 6).into()])
    });
    assert!(
        matches!(&e, Error::AlreadyCorrected { event, .. } if *event == e3)
            || matches!(&e, Error::FieldNotAllowed { action: Action::Consume, field, .. } if *field == "corrects"),
        "{e:?}"
    );
    assert_mentions(&e, &["correct"]);
    assert_eq!(
        f.l.resource(&id("r")).expect("r").accounting_quantity,
        Measure::new(6, "kg"),
        "10 - 4: only the last correction counts"
    );
}

// ---------------------------------------------------------------------------------------------
// Duplicate ids, fields not allowed, resources without events
// ---------------------------------------------------------------------------------------------

#[test]
fn duplicate_ids() {
    let mut f = fixture();
    let e = rejects(&mut f.l, "agent alice again", |l| {
        l.create(Agent::organization("alice", "Alice Ltd"))
    });
    assert!(
        matches!(&e, Error::DuplicateId { kind: ObjectKind::Agent, id: got } if got.as_str() == "alice"),
        "{e:?}"
    );
    assert_mentions(&e, &["`alice`", "agent"]);
    assert_eq!(
        f.l.get::<Agent>(&id("alice")).expect("alice").name,
        "Alice",
        "the original is untouched"
    );
    let e = rejects(&mut f.l, "unit kg again", |l| {
        l.create(Unit::new("kg", "kilo", "kg"))
    });
    assert!(
        matches!(
            &e,
            Error::DuplicateId {
                kind: ObjectKind::Unit,
                ..
            }
        ),
        "{e:?}"
    );
    let e = rejects(&mut f.l, "process again", |l| {
        l.create(Process::new("proc", "Again", None))
    });
    assert!(
        matches!(
            &e,
            Error::DuplicateId {
                kind: ObjectKind::Process,
                ..
            }
        ),
        "{e:?}"
    );
    let e = rejects(&mut f.l, "resource r created again", |l| {
        l.record_event(
            EconomicEvent::new(Action::Produce, "alice", "alice")
                .quantity(1, "kg")
                .creating(ResourceDescription::new("r", "Again")),
        )
    });
    assert!(
        matches!(&e, Error::DuplicateId { kind: ObjectKind::EconomicResource, id: got } if got.as_str() == "r"),
        "{e:?}"
    );
    assert_mentions(&e, &["`r`", "economic resource"]);
    let e = rejects(&mut f.l, "one resource created twice in a batch", |l| {
        let make = || {
            EconomicEvent::new(Action::Produce, "alice", "alice")
                .quantity(1, "kg")
                .creating(ResourceDescription::new("twin", "Twin"))
        };
        l.record_events(vec![make(), make()])
    });
    assert!(
        matches!(&e, Error::DuplicateId { kind: ObjectKind::EconomicResource, id: got } if got.as_str() == "twin"),
        "{e:?}"
    );
    assert!(f.l.resource(&id("twin")).is_none());
    still_writable(&mut f.l);
}

#[test]
fn resources_come_from_events() {
    let mut f = fixture();
    let e = rejects(&mut f.l, "create a resource directly", |l| {
        l.create(ResourceDescription::new("direct", "Direct"))
    });
    assert!(matches!(&e, Error::ResourceNeedsEvent), "{e:?}");
    assert_mentions(&e, &["newInventoriedResource"]);
}

#[test]
fn fields_not_allowed() {
    let mut f = fixture_with_r2();
    let new = || ResourceDescription::new("new", "New");
    let cases: Vec<(Action, &str, NewEvent)> = vec![
        (
            Action::Consume,
            "outputOf",
            valid(Action::Consume).output_of("proc").into(),
        ),
        (
            Action::Produce,
            "inputOf",
            valid(Action::Produce).input_of("proc").into(),
        ),
        (
            Action::Transfer,
            "inputOf/outputOf",
            valid(Action::Transfer).input_of("proc").into(),
        ),
        (
            Action::Raise,
            "inputOf/outputOf",
            valid(Action::Raise).output_of("proc").into(),
        ),
        (
            Action::Work,
            "resourceInventoriedAs",
            valid(Action::Work).resource("r").into(),
        ),
        (
            Action::DeliverService,
            "toResourceInventoriedAs",
            valid(Action::DeliverService).to_resource("r").into(),
        ),
        (
            Action::Work,
            "newInventoriedResource",
            valid(Action::Work).quantity(1, "kg").creating(new()),
        ),
        (
            Action::Consume,
            "newInventoriedResource",
            valid(Action::Consume).creating(new()),
        ),
        (
            Action::Produce,
            "resourceInventoriedAs",
            valid(Action::Produce).creating(new()),
        ),
        (
            Action::Transfer,
            "toResourceInventoriedAs",
            valid(Action::Transfer).creating(new()),
        ),
        (
            Action::Consume,
            "toResourceInventoriedAs",
            valid(Action::Consume).to_resource("r2").into(),
        ),
    ];
    for (action, want_field, ev) in cases {
        let what = format!("{action} with {want_field}");
        let e = rejects(&mut f.l, &what, |l| l.record_event(ev));
        assert!(
            matches!(&e, Error::FieldNotAllowed { action: a, field, .. } if *a == action && *field == want_field),
            "{what}: {e:?}"
        );
        assert_mentions(&e, &[want_field, action.as_str()]);
    }
    assert!(f.l.resource(&id("new")).is_none());
    still_writable(&mut f.l);
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

#[test]
fn bytes_that_are_not_a_ledger() {
    let e = Ledger::load(b"certainly not automerge", actor(2)).expect_err("garbage");
    assert!(matches!(&e, Error::NotALedger(_)), "{e:?}");
    assert_mentions(&e, &["not a Reflow ledger"]);

    let mut doc = automerge::AutoCommit::new();
    automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "hello", "world")
        .expect("put");
    let e = Ledger::load(&doc.save(), actor(2)).expect_err("no schema");
    assert!(
        matches!(&e, Error::NotALedger(m) if m.contains("schemaVersion")),
        "{e:?}"
    );
    assert_mentions(&e, &["schemaVersion"]);

    let mut doc = automerge::AutoCommit::new();
    automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "schemaVersion", "1")
        .expect("put");
    let e = Ledger::load(&doc.save(), actor(2)).expect_err("schema as text");
    assert!(matches!(&e, Error::NotALedger(_)), "{e:?}");

    // A real ledger with a newer schema version.
    let l = Ledger::new_network("future", actor(1)).expect("genesis");
    let mut doc = automerge::AutoCommit::load(&l.save()).expect("automerge");
    automerge::transaction::Transactable::put(
        &mut doc,
        automerge::ROOT,
        "schemaVersion",
        SCHEMA_VERSION + 1,
    )
    .expect("put");
    let e = Ledger::load(&doc.save(), actor(2)).expect_err("newer schema");
    assert!(
        matches!(&e, Error::UnsupportedSchemaVersion { found, supported }
            if *found == SCHEMA_VERSION + 1 && *supported == SCHEMA_VERSION),
        "{e:?}"
    );
    assert_mentions(&e, &[&(SCHEMA_VERSION + 1).to_string()]);

    // And the unmodified ledger loads.
    Ledger::load(&l.save(), actor(2)).expect("a real ledger loads");
}

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

#[test]
fn a_batch_with_a_bad_last_event_writes_nothing() {
    let mut f = fixture();
    let good = || -> Vec<NewEvent> {
        vec![
            EconomicEvent::new(Action::Produce, "alice", "alice")
                .quantity(5, "kg")
                .output_of("proc")
                .creating(ResourceDescription::new("juice", "Juice")),
            EconomicEvent::new(Action::Consume, "alice", "alice")
                .resource("r")
                .quantity(2, "kg")
                .input_of("proc")
                .into(),
            EconomicEvent::new(Action::Transfer, "alice", "bob")
                .resource("juice")
                .quantity(1, "kg")
                .creating(ResourceDescription::new("", "Bob's juice")),
        ]
    };
    let bad_ones: Vec<(&str, NewEvent)> = vec![
        (
            "unknown resource",
            EconomicEvent::new(Action::Consume, "alice", "alice")
                .resource("ghost")
                .quantity(1, "kg")
                .into(),
        ),
        (
            "negative quantity",
            EconomicEvent::new(Action::Consume, "alice", "alice")
                .resource("juice")
                .quantity(-1, "kg")
                .into(),
        ),
        (
            "duplicate of a resource made earlier in the batch",
            EconomicEvent::new(Action::Produce, "alice", "alice")
                .quantity(1, "kg")
                .creating(ResourceDescription::new("juice", "Juice again")),
        ),
        (
            "unit mismatch with a resource made earlier in the batch",
            EconomicEvent::new(Action::Consume, "alice", "alice")
                .resource("juice")
                .quantity(1, "hour")
                .into(),
        ),
    ];
    for (what, bad) in bad_ones {
        let mut batch = good();
        batch.push(bad);
        let e = rejects(&mut f.l, what, |l| l.record_events(batch));
        let ok = match what {
            "unknown resource" => matches!(e, Error::UnknownReference { .. }),
            "negative quantity" => matches!(e, Error::NegativeQuantity { .. }),
            "duplicate of a resource made earlier in the batch" => {
                matches!(e, Error::DuplicateId { .. })
            }
            _ => matches!(e, Error::UnitMismatch { .. }),
        };
        assert!(ok, "{what}: {e:?}");
        assert!(f.l.resource(&id("juice")).is_none(), "{what}: no juice");
        // Nothing of the refused batch is visible to a later event.
        let e = rejects(&mut f.l, "use of juice after the refused batch", |l| {
            l.record_event(
                EconomicEvent::new(Action::Consume, "alice", "alice")
                    .resource("juice")
                    .quantity(1, "kg"),
            )
        });
        assert!(
            matches!(&e, Error::UnknownReference { id: got, .. } if got.as_str() == "juice"),
            "{e:?}"
        );
    }

    // The good part alone is one change with three events.
    let before = f.l.heads();
    let events_before = f.l.event_count();
    let ids = f.l.record_events(good()).expect("the good batch");
    assert_eq!(ids.len(), 3);
    assert_eq!(f.l.event_count(), events_before + 3);
    assert_eq!(f.l.changes_since(&before).len(), 1, "one change");
    assert_eq!(
        f.l.resource(&id("juice")).expect("juice").onhand_quantity,
        Measure::new(4, "kg")
    );
    assert_eq!(
        f.l.resource(&id("r")).expect("r").onhand_quantity,
        Measure::new(7, "kg"),
        "10 - 1 (e1) - 2"
    );
}
