//! The action table against the spec, and every action's effect on a resource.
//!
//! 1. `table_matches_spec_csv`: the compiled-in [`ACTION_TABLE`] is compared cell by cell with
//!    the VF 1.0 `actions.csv` fixture (19 actions, 12 columns).
//! 2. `every_action_has_its_effect`: for each action (and the to-resource, whole-resource and
//!    creating variants), one event is recorded on a small ledger and the resulting resources
//!    are compared with values worked out by hand from the spec's table (written below as
//!    literals, never computed from the engine's table). A wrong cell in `ACTION_TABLE` that
//!    the fold reads (accounting, onhand, location, containedIn, accountable, stage, state) or a
//!    wrong fold makes it fail; e.g. consume's accounting effect turned to `notApplicable`
//!    leaves `r` at 10 instead of the expected 7.
//! 3. `creation_and_process_placement_follow_the_spec`: the table's `createResource` and
//!    `inputOutput` columns, as the validation applies them, against hand-written sets.

use std::collections::{BTreeMap, BTreeSet};

use reflow::vf::{ActionEffects, ACTION_TABLE};
use reflow::*;

const CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/valueflows/actions.csv"
);

// ---------------------------------------------------------------------------------------------
// 1. The table against the spec's CSV
// ---------------------------------------------------------------------------------------------

/// A minimal RFC 4180 reader: comma-separated, fields optionally in double quotes with `""`
/// for a quote inside, LF or CRLF line ends. Blank lines are skipped.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                if !(row.len() == 1 && row[0].is_empty()) {
                    rows.push(std::mem::take(&mut row));
                }
                row.clear();
            }
            _ => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quoted field in the CSV");
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[test]
fn csv_reader_handles_quotes_and_crlf() {
    let rows = parse_csv("a,\"b,c\",\"say \"\"hi\"\"\"\r\n\r\nx,,z");
    assert_eq!(
        rows,
        vec![
            vec!["a".to_owned(), "b,c".to_owned(), "say \"hi\"".to_owned()],
            vec!["x".to_owned(), String::new(), "z".to_owned()],
        ]
    );
}

/// The spec's label of an effect: the engine's effect enums serialise in the spec's spelling.
fn label<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v).expect("an effect serializes") {
        serde_json::Value::String(s) => s,
        other => panic!("an effect serializes as a string, got {other}"),
    }
}

/// Reads one cell of a row of the engine's table, in the spec's spelling.
type Cell = fn(&ActionEffects) -> String;

/// The columns of `actions.csv`, and how to read each from a row of the engine's table.
fn columns() -> Vec<(&'static str, Cell)> {
    vec![
        ("action", |r| r.action.as_str().to_owned()),
        ("inputOutput", |r| label(&r.input_output)),
        ("pairsWith", |r| {
            r.pairs_with
                .map_or_else(|| "notApplicable".to_owned(), |a| a.as_str().to_owned())
        }),
        ("createResource", |r| label(&r.create_resource)),
        ("eventQuantity", |r| label(&r.event_quantity)),
        ("accountingEffect", |r| label(&r.accounting)),
        ("onhandEffect", |r| label(&r.onhand)),
        ("locationEffect", |r| label(&r.location)),
        ("containedEffect", |r| label(&r.contained)),
        ("accountableEffect", |r| label(&r.accountable)),
        ("stageEffect", |r| label(&r.stage)),
        ("stateEffect", |r| label(&r.state)),
    ]
}

#[test]
fn table_matches_spec_csv() {
    let text = std::fs::read_to_string(CSV).expect("the actions.csv fixture is readable");
    let rows = parse_csv(&text);
    let (header, body) = rows.split_first().expect("the CSV has a header");
    let cols = columns();
    let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
    assert_eq!(header, &names, "actions.csv has the expected columns");

    // The spec's table, by action name.
    let mut spec: BTreeMap<&str, &Vec<String>> = BTreeMap::new();
    for row in body {
        assert_eq!(row.len(), names.len(), "row {row:?} has every column");
        assert!(
            spec.insert(row[0].as_str(), row).is_none(),
            "action {} appears twice in actions.csv",
            row[0]
        );
    }
    assert_eq!(spec.len(), 19, "the spec has 19 actions");

    // The engine's table, by action name.
    let mut engine: BTreeMap<&str, &ActionEffects> = BTreeMap::new();
    for (i, row) in ACTION_TABLE.iter().enumerate() {
        assert!(
            engine.insert(row.action.as_str(), row).is_none(),
            "action {} appears twice in ACTION_TABLE",
            row.action
        );
        assert_eq!(Action::ALL[i], row.action, "Action::ALL follows the table");
        assert_eq!(
            row.action.effects(),
            row,
            "{}.effects() is its row",
            row.action
        );
    }
    assert_eq!(engine.len(), 19, "ACTION_TABLE has 19 actions");

    let mut mismatches = Vec::new();
    for name in spec.keys() {
        if !engine.contains_key(name) {
            mismatches.push(format!(
                "action {name}: in actions.csv, missing from ACTION_TABLE"
            ));
        }
        match name.parse::<Action>() {
            Ok(a) => assert_eq!(a.as_str(), *name, "{name} round-trips"),
            Err(e) => mismatches.push(format!("action {name}: Action::from_str fails: {e}")),
        }
    }
    for (name, row) in &engine {
        let Some(spec_row) = spec.get(name) else {
            mismatches.push(format!(
                "action {name}: in ACTION_TABLE, missing from actions.csv"
            ));
            continue;
        };
        for (i, (col, read)) in cols.iter().enumerate() {
            let ours = read(row);
            if ours != spec_row[i] {
                mismatches.push(format!(
                    "action {name}, column {col}: spec says `{}`, ACTION_TABLE has `{ours}`",
                    spec_row[i]
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "ACTION_TABLE differs from actions.csv:\n{}",
        mismatches.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Every action's effect on a resource
// ---------------------------------------------------------------------------------------------

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

fn id(s: &str) -> Id {
    Id::from(s)
}

/// A ledger with three agents, units, four places, a process based on `repair`, and three
/// resources (all in kg):
///
/// | resource | acc | onhand | location | custodian | accountable | containedIn | stage | state  |
/// |----------|-----|--------|----------|-----------|-------------|-------------|-------|--------|
/// | `r`      | 10  | 10     | here     | alice     | alice       | -           | -     | fresh  |
/// | `dest`   | 2   | 2      | depot    | carol     | carol       | -           | -     | stored |
/// | `box`    | 1   | 1      | depot    | carol     | carol       | -           | -     | -      |
fn base() -> Ledger {
    let mut l = Ledger::new_network("effects", actor(1)).expect("genesis");
    l.create(Unit::new("kg", "kilogram", "kg")).expect("unit");
    l.create(Unit::new("hour", "hour", "h")).expect("unit");
    l.create(Unit::new("one", "one", "1")).expect("unit");
    for a in ["alice", "bob", "carol"] {
        l.create(Agent::person(a, a)).expect("agent");
    }
    for p in ["here", "there", "elsewhere", "depot"] {
        l.create(SpatialThing::new(p, p, None)).expect("place");
    }
    l.create(ProcessSpecification::new("repair", "Repair"))
        .expect("pspec");
    l.create(ResourceSpecification::new("svc", "A service"))
        .expect("rspec");
    l.create(Process::new("proc", "A repair", Some(id("repair"))))
        .expect("process");
    let produce = |by: &str, qty: i64, at: &str| {
        EconomicEvent::new(Action::Produce, by, by)
            .quantity(qty, "kg")
            .at(at)
    };
    l.record_event(
        produce("alice", 10, "here")
            .with_state("fresh")
            .creating(ResourceDescription::new("r", "R")),
    )
    .expect("r");
    l.record_event(
        produce("carol", 2, "depot")
            .with_state("stored")
            .creating(ResourceDescription::new("dest", "Dest")),
    )
    .expect("dest");
    l.record_event(produce("carol", 1, "depot").creating(ResourceDescription::new("box", "Box")))
        .expect("box");
    l
}

/// The event every case starts from: alice to bob, 3 kg, at `there`, to `elsewhere`, state
/// `checked`; so every location, custody, accountability and state effect is visible.
fn ev(action: Action) -> EconomicEvent {
    EconomicEvent::new(action, "alice", "bob")
        .quantity(3, "kg")
        .at("there")
        .to_location("elsewhere")
        .with_state("checked")
}

/// A resource's expected state (quantities in kg).
#[derive(Debug, Clone, PartialEq)]
struct Res {
    accounting: &'static str,
    onhand: &'static str,
    location: Option<&'static str>,
    custodian: Option<&'static str>,
    accountable: Option<&'static str>,
    contained_in: Option<&'static str>,
    stage: Option<&'static str>,
    state: Option<&'static str>,
}

/// Shorthand for a table row: `res(acc, onhand, location, custodian, accountable, containedIn,
/// stage, state)`.
#[allow(clippy::too_many_arguments)]
fn res(
    accounting: &'static str,
    onhand: &'static str,
    location: Option<&'static str>,
    custodian: Option<&'static str>,
    accountable: Option<&'static str>,
    contained_in: Option<&'static str>,
    stage: Option<&'static str>,
    state: Option<&'static str>,
) -> Res {
    Res {
        accounting,
        onhand,
        location,
        custodian,
        accountable,
        contained_in,
        stage,
        state,
    }
}

type Record = fn(&mut Ledger) -> reflow::Result<Vec<Id>>;

struct Case {
    name: &'static str,
    action: Action,
    /// Events recorded before the baseline is taken (e.g. packing `r` before `separate`).
    prep: Option<Record>,
    /// The one event under test.
    record: Record,
    /// The resource the event creates, if any.
    created: Option<&'static str>,
    /// Every resource whose state changes (or is created), with its expected state. Every
    /// other resource must be exactly as before.
    expect: Vec<(&'static str, Res)>,
}

fn one(l: &mut Ledger, e: impl Into<NewEvent>) -> reflow::Result<Vec<Id>> {
    l.record_events(vec![e.into()])
}

const H: Option<&str> = Some("here");
const THERE: Option<&str> = Some("there");
const ELSE: Option<&str> = Some("elsewhere");
const DEPOT: Option<&str> = Some("depot");
const ALICE: Option<&str> = Some("alice");
const BOB: Option<&str> = Some("bob");
const CAROL: Option<&str> = Some("carol");
const REPAIR: Option<&str> = Some("repair");
const CHECKED: Option<&str> = Some("checked");
const FRESH: Option<&str> = Some("fresh");
const N: Option<&str> = None;

/// One row per action and variant. The expected values are worked out by hand from the VF 1.0
/// table: the arithmetic is in the comment above each row.
fn cases() -> Vec<Case> {
    vec![
        // accept: onhand decrement 10-3, location update -> there, state update.
        Case {
            name: "accept",
            action: Action::Accept,
            prep: None,
            record: |l| one(l, ev(Action::Accept).resource("r").input_of("proc")),
            created: None,
            expect: vec![("r", res("10", "7", THERE, ALICE, ALICE, N, N, CHECKED))],
        },
        // cite: no quantity effect, state update only.
        Case {
            name: "cite",
            action: Action::Cite,
            prep: None,
            record: |l| one(l, ev(Action::Cite).resource("r").input_of("proc")),
            created: None,
            expect: vec![("r", res("10", "10", H, ALICE, ALICE, N, N, CHECKED))],
        },
        // combine: onhand 10-3, containedIn -> box (the to-resource), state update; the
        // container itself is unchanged.
        Case {
            name: "combine into box",
            action: Action::Combine,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::Combine)
                        .resource("r")
                        .to_resource("box")
                        .input_of("proc"),
                )
            },
            created: None,
            expect: vec![(
                "r",
                res("10", "7", H, ALICE, ALICE, Some("box"), N, CHECKED),
            )],
        },
        // consume: accounting 10-3, onhand 10-3, state update, location unchanged.
        Case {
            name: "consume",
            action: Action::Consume,
            prep: None,
            record: |l| one(l, ev(Action::Consume).resource("r").input_of("proc")),
            created: None,
            expect: vec![("r", res("7", "7", H, ALICE, ALICE, N, N, CHECKED))],
        },
        // copy creating: r untouched; the new copy gets 0+3 / 0+3, location new -> atLocation,
        // custodian and accountable (new) -> receiver, state updateTo.
        Case {
            name: "copy creating a new resource",
            action: Action::Copy,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::Copy)
                        .resource("r")
                        .creating(ResourceDescription::new("copy", "Copy")),
                )
            },
            created: Some("copy"),
            expect: vec![("copy", res("3", "3", THERE, BOB, BOB, N, N, CHECKED))],
        },
        // copy into an existing resource: dest 2+3 / 2+3, location (new) and accountable
        // (new, already set) unchanged, custody unchanged (onhand is incrementTo, not a
        // handover), state updateTo.
        Case {
            name: "copy into existing dest",
            action: Action::Copy,
            prep: None,
            record: |l| one(l, ev(Action::Copy).resource("r").to_resource("dest")),
            created: None,
            expect: vec![("dest", res("5", "5", DEPOT, CAROL, CAROL, N, N, CHECKED))],
        },
        // deliverService: no resource at all.
        Case {
            name: "deliverService",
            action: Action::DeliverService,
            prep: None,
            record: |l| {
                one(
                    l,
                    EconomicEvent::new(Action::DeliverService, "alice", "bob")
                        .quantity(1, "hour")
                        .conforms_to("svc")
                        .output_of("proc"),
                )
            },
            created: None,
            expect: vec![],
        },
        // dropoff: onhand 10+3, location update, stage -> repair (basedOn of proc), state.
        Case {
            name: "dropoff",
            action: Action::Dropoff,
            prep: None,
            record: |l| one(l, ev(Action::Dropoff).resource("r").output_of("proc")),
            created: None,
            expect: vec![(
                "r",
                res("10", "13", THERE, ALICE, ALICE, N, REPAIR, CHECKED),
            )],
        },
        // lower: 10-3 / 10-3; accountable "new" does not replace an existing one.
        Case {
            name: "lower",
            action: Action::Lower,
            prep: None,
            record: |l| one(l, ev(Action::Lower).resource("r")),
            created: None,
            expect: vec![("r", res("7", "7", H, ALICE, ALICE, N, N, CHECKED))],
        },
        // lower on a resource nobody is accountable for yet (`moved`, made by a move: 3 / 3 at
        // elsewhere, held by bob, no accountable): 3-3 / 3-3, and accountable "new" gives it
        // the receiver (a first-touched resource), state update.
        Case {
            name: "lower on a resource without accountable",
            action: Action::Lower,
            prep: Some(|l| {
                one(
                    l,
                    ev(Action::Move)
                        .resource("r")
                        .creating(ResourceDescription::new("moved", "Moved")),
                )
            }),
            record: |l| {
                one(
                    l,
                    EconomicEvent::new(Action::Lower, "bob", "carol")
                        .resource("moved")
                        .quantity(3, "kg")
                        .with_state("checked"),
                )
            },
            created: None,
            expect: vec![("moved", res("0", "0", ELSE, BOB, CAROL, N, N, CHECKED))],
        },
        // modify: onhand 10+3, location update, stage -> repair, state update.
        Case {
            name: "modify",
            action: Action::Modify,
            prep: None,
            record: |l| one(l, ev(Action::Modify).resource("r").output_of("proc")),
            created: None,
            expect: vec![(
                "r",
                res("10", "13", THERE, ALICE, ALICE, N, REPAIR, CHECKED),
            )],
        },
        // move into dest: r 10-3 / 10-3 (nothing else on the from side); dest 2+3 / 2+3,
        // location updateTo -> toLocation, custodian -> receiver (onhand decrementIncrement),
        // accountable unchanged (notApplicable), state updateTo.
        Case {
            name: "move into existing dest",
            action: Action::Move,
            prep: None,
            record: |l| one(l, ev(Action::Move).resource("r").to_resource("dest")),
            created: None,
            expect: vec![
                ("r", res("7", "7", H, ALICE, ALICE, N, N, FRESH)),
                ("dest", res("5", "5", ELSE, BOB, CAROL, N, N, CHECKED)),
            ],
        },
        // move creating: r 7 / 7; the new resource 0+3 / 0+3 at toLocation, custodian
        // receiver, no accountable (accountableEffect notApplicable), state updateTo.
        Case {
            name: "move creating a new resource",
            action: Action::Move,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::Move)
                        .resource("r")
                        .creating(ResourceDescription::new("moved", "Moved")),
                )
            },
            created: Some("moved"),
            expect: vec![
                ("r", res("7", "7", H, ALICE, ALICE, N, N, FRESH)),
                ("moved", res("3", "3", ELSE, BOB, N, N, N, CHECKED)),
            ],
        },
        // move of the whole resource (no to-resource): 10-10+10, location -> toLocation,
        // custodian -> bob, accountable stays alice.
        Case {
            name: "move whole resource",
            action: Action::Move,
            prep: None,
            record: |l| one(l, ev(Action::Move).resource("r").quantity(10, "kg")),
            created: None,
            expect: vec![("r", res("10", "10", ELSE, BOB, ALICE, N, N, CHECKED))],
        },
        // pickup: onhand 10-3, location update, state update.
        Case {
            name: "pickup",
            action: Action::Pickup,
            prep: None,
            record: |l| one(l, ev(Action::Pickup).resource("r").input_of("proc")),
            created: None,
            expect: vec![("r", res("10", "7", THERE, ALICE, ALICE, N, N, CHECKED))],
        },
        // produce into r: 10+3 / 10+3, location "new" does not move an existing resource,
        // accountable already set, stage -> repair, state update.
        Case {
            name: "produce into existing r",
            action: Action::Produce,
            prep: None,
            record: |l| one(l, ev(Action::Produce).resource("r").output_of("proc")),
            created: None,
            expect: vec![("r", res("13", "13", H, ALICE, ALICE, N, REPAIR, CHECKED))],
        },
        // produce creating: 0+3 / 0+3 at atLocation, custodian and accountable receiver,
        // stage repair, state checked.
        Case {
            name: "produce creating a new resource",
            action: Action::Produce,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::Produce)
                        .output_of("proc")
                        .creating(ResourceDescription::new("made", "Made")),
                )
            },
            created: Some("made"),
            expect: vec![("made", res("3", "3", THERE, BOB, BOB, N, REPAIR, CHECKED))],
        },
        // raise r: 10+3 / 10+3, no location effect, state update.
        Case {
            name: "raise existing r",
            action: Action::Raise,
            prep: None,
            record: |l| one(l, ev(Action::Raise).resource("r")),
            created: None,
            expect: vec![("r", res("13", "13", H, ALICE, ALICE, N, N, CHECKED))],
        },
        // raise creating: 3 / 3, no location (locationEffect notApplicable even on
        // creation), custodian and accountable receiver, state checked.
        Case {
            name: "raise creating a new resource",
            action: Action::Raise,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::Raise).creating(ResourceDescription::new("raised", "Raised")),
                )
            },
            created: Some("raised"),
            expect: vec![("raised", res("3", "3", N, BOB, BOB, N, N, CHECKED))],
        },
        // separate, after r was packed into box (combine 3: onhand 7, containedIn box, state
        // packed): onhand 7+3, containedIn removed, stage repair, state update.
        Case {
            name: "separate from box",
            action: Action::Separate,
            prep: Some(|l| {
                one(
                    l,
                    EconomicEvent::new(Action::Combine, "alice", "alice")
                        .resource("r")
                        .to_resource("box")
                        .quantity(3, "kg")
                        .with_state("packed"),
                )
            }),
            record: |l| one(l, ev(Action::Separate).resource("r").output_of("proc")),
            created: None,
            expect: vec![("r", res("10", "10", H, ALICE, ALICE, N, REPAIR, CHECKED))],
        },
        // transfer into dest: r 10-3 / 10-3, nothing else on the from side; dest 2+3 / 2+3,
        // location -> toLocation, custodian and accountable -> bob, state updateTo.
        Case {
            name: "transfer into existing dest",
            action: Action::Transfer,
            prep: None,
            record: |l| one(l, ev(Action::Transfer).resource("r").to_resource("dest")),
            created: None,
            expect: vec![
                ("r", res("7", "7", H, ALICE, ALICE, N, N, FRESH)),
                ("dest", res("5", "5", ELSE, BOB, BOB, N, N, CHECKED)),
            ],
        },
        // transfer creating the to-resource: r 7 / 7; new 3 / 3 at toLocation, bob holds and
        // owns it, state checked.
        Case {
            name: "transfer creating a new to-resource",
            action: Action::Transfer,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::Transfer)
                        .resource("r")
                        .creating(ResourceDescription::new("bobs", "Bob's")),
                )
            },
            created: Some("bobs"),
            expect: vec![
                ("r", res("7", "7", H, ALICE, ALICE, N, N, FRESH)),
                ("bobs", res("3", "3", ELSE, BOB, BOB, N, N, CHECKED)),
            ],
        },
        // transfer of the whole resource: 10-10+10 both, location -> toLocation, custody and
        // rights -> bob.
        Case {
            name: "transfer whole resource",
            action: Action::Transfer,
            prep: None,
            record: |l| one(l, ev(Action::Transfer).resource("r").quantity(10, "kg")),
            created: None,
            expect: vec![("r", res("10", "10", ELSE, BOB, BOB, N, N, CHECKED))],
        },
        // transferAllRights into dest: accounting only: r 10-3 / 10, dest 2+3 / 2; dest's
        // accountable -> bob, custody and location unchanged, state updateTo.
        Case {
            name: "transferAllRights into existing dest",
            action: Action::TransferAllRights,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::TransferAllRights)
                        .resource("r")
                        .to_resource("dest"),
                )
            },
            created: None,
            expect: vec![
                ("r", res("7", "10", H, ALICE, ALICE, N, N, FRESH)),
                ("dest", res("5", "2", DEPOT, CAROL, BOB, N, N, CHECKED)),
            ],
        },
        // transferAllRights of the whole resource: 10 / 10, accountable -> bob, alice keeps
        // custody, location unchanged.
        Case {
            name: "transferAllRights whole resource",
            action: Action::TransferAllRights,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::TransferAllRights)
                        .resource("r")
                        .quantity(10, "kg"),
                )
            },
            created: None,
            expect: vec![("r", res("10", "10", H, ALICE, BOB, N, N, CHECKED))],
        },
        // transferCustody into dest: onhand only: r 10 / 10-3, dest 2 / 2+3, dest at
        // toLocation, held by bob, still accountable carol, state updateTo.
        Case {
            name: "transferCustody into existing dest",
            action: Action::TransferCustody,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::TransferCustody)
                        .resource("r")
                        .to_resource("dest"),
                )
            },
            created: None,
            expect: vec![
                ("r", res("10", "7", H, ALICE, ALICE, N, N, FRESH)),
                ("dest", res("2", "5", ELSE, BOB, CAROL, N, N, CHECKED)),
            ],
        },
        // transferCustody of the whole resource (the bike left for repair): 10 / 10-10+10,
        // location -> toLocation, custodian bob, accountable stays alice.
        Case {
            name: "transferCustody whole resource",
            action: Action::TransferCustody,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::TransferCustody).resource("r").quantity(10, "kg"),
                )
            },
            created: None,
            expect: vec![("r", res("10", "10", ELSE, BOB, ALICE, N, N, CHECKED))],
        },
        // transferCustody creating: r 10 / 7; new 0 / 3 at toLocation, held by bob, nobody
        // accountable (accountableEffect notApplicable), state checked.
        Case {
            name: "transferCustody creating a new to-resource",
            action: Action::TransferCustody,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::TransferCustody)
                        .resource("r")
                        .creating(ResourceDescription::new("held", "Held")),
                )
            },
            created: Some("held"),
            expect: vec![
                ("r", res("10", "7", H, ALICE, ALICE, N, N, FRESH)),
                ("held", res("0", "3", ELSE, BOB, N, N, N, CHECKED)),
            ],
        },
        // use: no quantity or location effect, state update.
        Case {
            name: "use",
            action: Action::Use,
            prep: None,
            record: |l| {
                one(
                    l,
                    ev(Action::Use)
                        .resource("r")
                        .effort(2, "hour")
                        .input_of("proc"),
                )
            },
            created: None,
            expect: vec![("r", res("10", "10", H, ALICE, ALICE, N, N, CHECKED))],
        },
        // work: effort only, no resource.
        Case {
            name: "work",
            action: Action::Work,
            prep: None,
            record: |l| {
                one(
                    l,
                    EconomicEvent::new(Action::Work, "alice", "bob")
                        .effort(2, "hour")
                        .input_of("proc")
                        .with_state("checked"),
                )
            },
            created: None,
            expect: vec![],
        },
    ]
}

fn observed(r: &EconomicResource) -> Vec<(&'static str, Option<String>)> {
    let s = |o: &Option<Id>| o.as_ref().map(|i| i.as_str().to_owned());
    vec![
        (
            "accountingQuantity",
            Some(r.accounting_quantity.has_numerical_value.to_string()),
        ),
        (
            "onhandQuantity",
            Some(r.onhand_quantity.has_numerical_value.to_string()),
        ),
        ("currentLocation", s(&r.current_location)),
        ("custodian", s(&r.custodian)),
        ("primaryAccountable", s(&r.primary_accountable)),
        ("containedIn", s(&r.contained_in)),
        ("stage", s(&r.stage)),
        ("state", r.state.clone()),
    ]
}

fn expected(e: &Res) -> Vec<(&'static str, Option<String>)> {
    let s = |o: Option<&str>| o.map(str::to_owned);
    vec![
        ("accountingQuantity", Some(e.accounting.to_owned())),
        ("onhandQuantity", Some(e.onhand.to_owned())),
        ("currentLocation", s(e.location)),
        ("custodian", s(e.custodian)),
        ("primaryAccountable", s(e.accountable)),
        ("containedIn", s(e.contained_in)),
        ("stage", s(e.stage)),
        ("state", s(e.state)),
    ]
}

/// Run one case; returns what differs from the expectation.
fn run(case: &Case) -> Vec<String> {
    let mut errs = Vec::new();
    let mut l = base();
    if let Some(prep) = case.prep {
        prep(&mut l).expect("the preparation is valid");
    }
    let before: BTreeMap<Id, EconomicResource> = l
        .snapshot()
        .resources
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let events_before = l.event_count();

    let ids = match (case.record)(&mut l) {
        Ok(ids) => ids,
        Err(e) => return vec![format!("recording failed: {e}")],
    };
    if l.event_count() != events_before + 1 {
        errs.push(format!(
            "event count {} -> {}, expected +1",
            events_before,
            l.event_count()
        ));
    }
    let event = l.event(&ids[0]).expect("the recorded event is readable");
    if event.action != case.action {
        errs.push(format!(
            "recorded action {} not {}",
            event.action, case.action
        ));
    }
    let created = case.created.map(id);
    if event.created_resource != created {
        errs.push(format!(
            "event.created_resource is {:?}, expected {:?}",
            event.created_resource, created
        ));
    }
    if !l.conflicts().is_empty() {
        errs.push(format!("unexpected conflicts: {:?}", l.conflicts()));
    }

    let after: BTreeMap<Id, EconomicResource> = l
        .snapshot()
        .resources
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let before_ids: BTreeSet<&Id> = before.keys().collect();
    let mut expected_ids = before_ids.clone();
    if let Some(c) = &created {
        if before_ids.contains(c) {
            errs.push(format!("resource {c} existed before"));
        }
        expected_ids.insert(c);
    }
    let after_ids: BTreeSet<&Id> = after.keys().collect();
    if after_ids != expected_ids {
        errs.push(format!(
            "resources after are {after_ids:?}, expected {expected_ids:?} (a resource was {} created)",
            if created.is_some() { "not" } else { "wrongly" }
        ));
    }

    let expect: BTreeMap<Id, &Res> = case.expect.iter().map(|(r, e)| (id(r), e)).collect();
    for (rid, now) in &after {
        match expect.get(rid) {
            Some(want) => {
                for ((field, got), (_, want)) in observed(now).into_iter().zip(expected(want)) {
                    if got != want {
                        errs.push(format!(
                            "resource {rid}, {field}: got {got:?}, expected {want:?}"
                        ));
                    }
                }
                if now.accounting_quantity.has_unit != id("kg")
                    || now.onhand_quantity.has_unit != id("kg")
                {
                    errs.push(format!("resource {rid} is not counted in kg: {now:?}"));
                }
            }
            None => {
                if before.get(rid) != Some(now) {
                    errs.push(format!(
                        "resource {rid} should be untouched: before {:?}, after {now:?}",
                        before.get(rid)
                    ));
                }
            }
        }
    }
    for rid in expect.keys() {
        if !after.contains_key(rid) {
            errs.push(format!("resource {rid} does not exist"));
        }
    }
    if l.snapshot() != l.snapshot_from_scratch() {
        errs.push("the incremental views differ from a fold from scratch".into());
    }
    errs
}

#[test]
fn baseline_is_as_documented() {
    let l = base();
    let want = [
        ("r", res("10", "10", H, ALICE, ALICE, N, N, FRESH)),
        (
            "dest",
            res("2", "2", DEPOT, CAROL, CAROL, N, N, Some("stored")),
        ),
        ("box", res("1", "1", DEPOT, CAROL, CAROL, N, N, N)),
    ];
    for (rid, e) in want {
        let r = l.resource(&id(rid)).expect("baseline resource");
        assert_eq!(observed(&r), expected(&e), "baseline {rid}");
    }
    assert_eq!(l.snapshot().resources.len(), 3);
}

#[test]
fn every_action_has_its_effect() {
    let cases = cases();
    let covered: BTreeSet<Action> = cases.iter().map(|c| c.action).collect();
    let all: BTreeSet<Action> = Action::ALL.into_iter().collect();
    assert_eq!(covered, all, "every action has at least one case");

    let mut failures = Vec::new();
    for case in &cases {
        for e in run(case) {
            failures.push(format!("{} ({}): {e}", case.name, case.action));
        }
    }
    assert!(
        failures.is_empty(),
        "{} effect mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Packing apples (kg) into a crate counted in `one`: combine does not change the container's
/// quantities (its to-resource has no quantity effect), so the container's unit is no reason
/// to refuse the event.
#[test]
fn combine_into_a_container_of_another_unit() {
    let mut l = base();
    l.record_event(
        EconomicEvent::new(Action::Produce, "carol", "carol")
            .quantity(1, "one")
            .creating(ResourceDescription::new("crate", "Crate")),
    )
    .expect("crate");
    let crate_before = l.resource(&id("crate")).expect("crate");
    l.record_event(
        EconomicEvent::new(Action::Combine, "alice", "alice")
            .resource("r")
            .to_resource("crate")
            .quantity(3, "kg"),
    )
    .expect("combine 3 kg into a crate counted in `one`");
    let r = l.resource(&id("r")).expect("r");
    assert_eq!(r.contained_in, Some(id("crate")));
    assert_eq!(r.onhand_quantity, Measure::new(7, "kg"));
    assert_eq!(l.resource(&id("crate")), Some(crate_before));
}

// ---------------------------------------------------------------------------------------------
// 3. createResource and inputOutput as validation applies them
// ---------------------------------------------------------------------------------------------

/// A valid event of `action` on the base ledger, outside any process.
fn valid(action: Action) -> EconomicEvent {
    let e = EconomicEvent::new(action, "alice", "bob").quantity(3, "kg");
    match action {
        Action::Work => EconomicEvent::new(action, "alice", "bob").effort(2, "hour"),
        Action::DeliverService => EconomicEvent::new(action, "alice", "bob")
            .quantity(1, "hour")
            .conforms_to("svc"),
        Action::Copy
        | Action::Move
        | Action::Transfer
        | Action::TransferAllRights
        | Action::TransferCustody => e.resource("r").to_resource("dest"),
        _ => e.resource("r"),
    }
}

#[test]
fn creation_and_process_placement_follow_the_spec() {
    use Action::*;
    // createResource: optional (the resource itself) and optionalTo (the to-resource).
    let creates_from = [Lower, Produce, Raise];
    let creates_to = [Copy, Move, Transfer, TransferAllRights, TransferCustody];
    // inputOutput.
    let inputs = [Accept, Cite, Combine, Consume, Pickup, Use, Work];
    let outputs = [Dropoff, Modify, Produce, Separate];
    let both = [DeliverService];

    let base = base();
    let mut failures = Vec::new();
    for (n, action) in Action::ALL.into_iter().enumerate() {
        let fresh = |k: u8| base.fork(actor(10 + 3 * n as u8 + k));

        // A plain valid event is accepted.
        if let Err(e) = fresh(0).record_event(valid(action)) {
            failures.push(format!("{action}: a valid event is refused: {e}"));
        }

        // Creating a resource.
        let mut ev = valid(action);
        if creates_from.contains(&action) {
            ev.resource_inventoried_as = None;
        } else if creates_to.contains(&action) {
            ev.to_resource_inventoried_as = None;
        }
        let mut l = fresh(1);
        let got = l.record_event(ev.creating(ResourceDescription::new("new", "New")));
        let may_create = creates_from.contains(&action) || creates_to.contains(&action);
        match (&got, may_create) {
            (Ok(eid), true) => {
                let e = l.event(eid).expect("event");
                let side = if creates_from.contains(&action) {
                    &e.resource_inventoried_as
                } else {
                    &e.to_resource_inventoried_as
                };
                if side.as_ref() != Some(&id("new")) || l.resource(&id("new")).is_none() {
                    failures.push(format!("{action}: the new resource is not on its side"));
                }
            }
            (Err(Error::FieldNotAllowed { field, .. }), false)
                if *field == "newInventoriedResource" => {}
            (got, _) => failures.push(format!(
                "{action}: creating a resource gave {got:?}, spec says it {} create one",
                if may_create { "may" } else { "may not" }
            )),
        }

        // inputOf / outputOf.
        for (field, allowed) in [
            (
                "inputOf",
                inputs.contains(&action) || both.contains(&action),
            ),
            (
                "outputOf",
                outputs.contains(&action) || both.contains(&action),
            ),
        ] {
            let ev = if field == "inputOf" {
                valid(action).input_of("proc")
            } else {
                valid(action).output_of("proc")
            };
            let got = fresh(2).record_event(ev);
            match (&got, allowed) {
                (Ok(_), true) => {}
                (Err(Error::FieldNotAllowed { field: f, .. }), false) if f.contains(field) => {}
                (got, _) => failures.push(format!(
                    "{action} with {field}: got {got:?}, spec says {}",
                    if allowed { "allowed" } else { "not allowed" }
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
