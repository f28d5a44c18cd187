//! Realistic scenarios: a repair café, textile recycling, a food market with an offline double
//! sale, corrections, and a double handover of a shared tool.
//!
//! Every expected quantity is worked out by hand from the VF 1.0 action table
//! (`vf/action.rs`) and written as a literal, with the arithmetic in a comment next to it.
//! Events follow the spec's examples: `accept`/`modify` as in ex-production--04 (the owner
//! provides the item to the repairer, who gives it back modified), `transfer` between two
//! resources as in ex-exchange--02-2, corrections as in ex-production--12 (but Reflow's
//! correction *replaces* the corrected event instead of adding a negative one).

use std::collections::BTreeSet;

use reflow::views::OrderKey;
use reflow::*;

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

/// An exact decimal from a literal.
fn q(s: &str) -> Quantity {
    s.parse().expect("a decimal literal")
}

fn id(s: &str) -> Id {
    Id::from(s)
}

fn res(l: &Ledger, rid: &str) -> EconomicResource {
    l.resource(&id(rid))
        .unwrap_or_else(|| panic!("resource {rid} exists"))
}

/// `accounting / onhand` of a resource, as text with the unit, e.g. `"1 one / 0 one"`.
fn qty(l: &Ledger, rid: &str) -> String {
    let r = res(l, rid);
    format!("{} / {}", r.accounting_quantity, r.onhand_quantity)
}

fn snapshot_json(l: &Ledger) -> String {
    serde_json::to_string(&l.snapshot()).expect("snapshot serializes")
}

/// Both replicas show the same views, byte for byte, and the cache equals a fresh fold.
fn assert_converged(a: &Ledger, b: &Ledger) {
    assert_eq!(a.heads(), b.heads(), "same changes");
    let sa = snapshot_json(a);
    assert_eq!(sa, snapshot_json(b), "identical snapshots");
    let scratch = serde_json::to_string(&a.snapshot_from_scratch()).expect("serializes");
    assert_eq!(sa, scratch, "incremental views equal a fold from scratch");
    let scratch_b = serde_json::to_string(&b.snapshot_from_scratch()).expect("serializes");
    assert_eq!(sa, scratch_b, "incremental views equal a fold from scratch");
}

/// Of two concurrent events, the one later in the ledger's total order.
fn later_of<'a>(x: &'a Id, y: &'a Id) -> (&'a Id, &'a Id) {
    let kx = OrderKey::parse(x).expect("event id");
    let ky = OrderKey::parse(y).expect("event id");
    if kx > ky {
        (x, y)
    } else {
        (y, x)
    }
}

fn ids<'a>(v: impl IntoIterator<Item = &'a Id>) -> BTreeSet<String> {
    v.into_iter().map(|i| i.to_string()).collect()
}

fn base_ledger() -> Ledger {
    let mut l = Ledger::new_network("saturday", actor(1)).expect("genesis");
    l.create(Unit::new("one", "one", "")).expect("unit");
    l.create(Unit::new("kg", "kilogram", "kg")).expect("unit");
    l.create(Unit::new("hour", "hour", "h")).expect("unit");
    l
}

// ---------------------------------------------------------------------------------------------
// a. Repair café
// ---------------------------------------------------------------------------------------------

#[test]
fn repair_cafe_bicycle() {
    let mut l = base_ledger();
    l.create(Agent::person("ana", "Ana")).expect("agent");
    l.create(Agent::person("sam", "Sam (volunteer)"))
        .expect("agent");
    l.create(Agent::organization("cafe", "Repair Café"))
        .expect("agent");
    l.create(SpatialThing::new(
        "workshop",
        "Café workshop",
        Some((52.3547, 4.8911)),
    ))
    .expect("place");
    l.create(ResourceSpecification::new("bicycle", "Bicycle"))
        .expect("spec");
    l.create(ResourceSpecification::new("brake-pad", "Brake pad"))
        .expect("spec");
    l.create(ResourceSpecification::new("mechanics", "Bicycle mechanics"))
        .expect("spec");
    l.create(ProcessSpecification::new("repair", "Repair"))
        .expect("pspec");
    l.create(Process::new("fix1", "Fix Ana's brakes", Some(id("repair"))))
        .expect("process");

    // Ana's bicycle enters the ledger: raise, 1 one, Ana accountable and custodian.
    let mut bike = ResourceDescription::new("bike", "Ana's bicycle").conforming_to("bicycle");
    bike.tracking_identifier = Some("FR-2291-AX".into());
    l.record_event(
        EconomicEvent::new(Action::Raise, "ana", "ana")
            .quantity(1, "one")
            .creating(bike),
    )
    .expect("raise bike");
    // Café stock of brake pads: raise 10.
    l.record_event(
        EconomicEvent::new(Action::Raise, "cafe", "cafe")
            .quantity(10, "one")
            .at("workshop")
            .creating(
                ResourceDescription::new("pads", "Brake pads (café stock)")
                    .conforming_to("brake-pad"),
            ),
    )
    .expect("raise pads");
    // raise: accounting +1, onhand +1 = 1 / 1.
    assert_eq!(qty(&l, "bike"), "1 one / 1 one");
    assert_eq!(res(&l, "bike").custodian, Some(id("ana")));
    assert_eq!(res(&l, "bike").primary_accountable, Some(id("ana")));

    // Ana leaves the bike at the café: whole-resource transferCustody (no to-resource).
    l.record_event(
        EconomicEvent::new(Action::TransferCustody, "ana", "cafe")
            .resource("bike")
            .quantity(1, "one")
            .to_location("workshop"),
    )
    .expect("hand over bike");
    // transferCustody: accounting n/a = 1; onhand decrementIncrement on the same resource
    // 1 - 1 + 1 = 1.
    assert_eq!(qty(&l, "bike"), "1 one / 1 one");
    let r = res(&l, "bike");
    assert_eq!(r.custodian, Some(id("cafe")), "the café holds it now");
    assert_eq!(r.primary_accountable, Some(id("ana")), "still Ana's");
    assert_eq!(r.current_location, Some(id("workshop")));

    // The repair process: accept, work, consume, modify.
    l.record_event(
        EconomicEvent::new(Action::Accept, "ana", "cafe")
            .resource("bike")
            .quantity(1, "one")
            .input_of("fix1")
            .at("workshop"),
    )
    .expect("accept");
    // accept: onhand decrement 1 - 1 = 0; accounting n/a = 1.
    assert_eq!(qty(&l, "bike"), "1 one / 0 one");
    let work = l
        .record_event(
            EconomicEvent::new(Action::Work, "sam", "cafe")
                .conforms_to("mechanics")
                .effort(q("1.5"), "hour")
                .input_of("fix1"),
        )
        .expect("work");
    l.record_event(
        EconomicEvent::new(Action::Consume, "cafe", "cafe")
            .resource("pads")
            .quantity(2, "one")
            .input_of("fix1"),
    )
    .expect("consume pads");
    // consume: 10 - 2 = 8 on both quantities.
    assert_eq!(qty(&l, "pads"), "8 one / 8 one");
    l.record_event(
        EconomicEvent::new(Action::Modify, "cafe", "ana")
            .resource("bike")
            .quantity(1, "one")
            .output_of("fix1")
            .at("workshop")
            .with_state("pass"),
    )
    .expect("modify");
    // modify: onhand increment 0 + 1 = 1; accounting n/a = 1.
    assert_eq!(qty(&l, "bike"), "1 one / 1 one");
    let r = res(&l, "bike");
    assert_eq!(r.stage, Some(id("repair")), "stage = basedOn of fix1");
    assert_eq!(r.state.as_deref(), Some("pass"));
    assert_eq!(r.custodian, Some(id("cafe")));
    assert_eq!(r.primary_accountable, Some(id("ana")));

    // Ana picks it up: transferCustody back, whole resource.
    l.record_event(
        EconomicEvent::new(Action::TransferCustody, "cafe", "ana")
            .resource("bike")
            .quantity(1, "one")
            .at("workshop"),
    )
    .expect("return bike");
    // 1 - 1 + 1 = 1 onhand; accounting stays 1.
    assert_eq!(qty(&l, "bike"), "1 one / 1 one");
    let r = res(&l, "bike");
    assert_eq!(r.custodian, Some(id("ana")), "back with Ana");
    assert_eq!(r.primary_accountable, Some(id("ana")));
    assert_eq!(r.stage, Some(id("repair")));
    assert_eq!(r.state.as_deref(), Some("pass"));
    assert_eq!(r.tracking_identifier.as_deref(), Some("FR-2291-AX"));
    assert_eq!(r.current_location, Some(id("workshop")));
    // Spare parts: 10 - 2 = 8, still the café's.
    assert_eq!(qty(&l, "pads"), "8 one / 8 one");
    assert_eq!(res(&l, "pads").custodian, Some(id("cafe")));
    assert_eq!(l.conflicts(), vec![]);

    // A partial handover of a unique item is refused (only the whole goes without a to-resource).
    let heads = l.heads();
    let half = l.record_event(
        EconomicEvent::new(Action::TransferCustody, "ana", "sam")
            .resource("pads")
            .quantity(3, "one"),
    );
    assert!(
        matches!(half, Err(Error::MissingField { field, .. }) if field == "toResourceInventoriedAs"),
        "{half:?}"
    );
    assert_eq!(l.heads(), heads, "nothing written");

    // The process has its 4 flows: accept, work, consume (inputs) and modify (output).
    let flows = l.events(&EventFilter {
        process: Some(id("fix1")),
        ..Default::default()
    });
    let actions: Vec<Action> = flows.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        vec![
            Action::Accept,
            Action::Work,
            Action::Consume,
            Action::Modify
        ]
    );

    // Trace the bike back: the repair process, its work and its spare parts.
    let t = l.trace(&id("bike")).expect("trace");
    assert_eq!(t.start, id("bike"));
    assert!(t.processes().contains(&&id("fix1")), "{t:?}");
    assert!(t.resources().contains(&&id("pads")), "{t:?}");
    assert!(t.events().contains(&&work), "{t:?}");
    // Track the brake pads forward: they went into the bike.
    let k = l.track(&id("pads")).expect("track");
    assert!(k.processes().contains(&&id("fix1")), "{k:?}");
    assert!(k.resources().contains(&&id("bike")), "{k:?}");
    assert_eq!(l.snapshot(), l.snapshot_from_scratch());
}

// ---------------------------------------------------------------------------------------------
// b. Textile recycling
// ---------------------------------------------------------------------------------------------

#[test]
fn textile_recycling_exact_decimals_and_provenance() {
    let mut l = base_ledger();
    for (a, n) in [("d1", "Dana"), ("d2", "Emil"), ("d3", "Fatima")] {
        l.create(Agent::person(a, n)).expect("donor");
    }
    l.create(Agent::organization("hub", "Textile sorting hub"))
        .expect("agent");
    l.create(Agent::person("wim", "Wim (sorter)"))
        .expect("agent");
    l.create(SpatialThing::new(
        "hub-site",
        "Sorting hub, Noord",
        Some((52.401, 4.918)),
    ))
    .expect("place");
    l.create(ProcessSpecification::new("sorting", "Sorting"))
        .expect("pspec");
    l.create(ProcessSpecification::new("spinning", "Spinning"))
        .expect("pspec");
    l.create(Process::new("sort1", "Sorting run 14", Some(id("sorting"))))
        .expect("process");
    l.create(Process::new(
        "spin1",
        "Spinning batch 3",
        Some(id("spinning")),
    ))
    .expect("process");
    l.create(ResourceSpecification::new("sorting-work", "Sorting work"))
        .expect("spec");

    // Each donor brings a bag; the bags are weighed at the door.
    let mut raises = Vec::new();
    for (donor, kg) in [("d1", "12.4"), ("d2", "7.35"), ("d3", "4")] {
        raises.push(
            l.record_event(
                EconomicEvent::new(Action::Raise, donor, donor)
                    .quantity(q(kg), "kg")
                    .creating(ResourceDescription::new(
                        format!("bag-{donor}"),
                        format!("Clothes bag of {donor}"),
                    )),
            )
            .expect("raise bag"),
        );
    }
    // Transfers into the hub's mixed-textiles resource; the first one creates it.
    let t1 = l
        .record_event(
            EconomicEvent::new(Action::Transfer, "d1", "hub")
                .resource("bag-d1")
                .quantity(q("12.4"), "kg")
                .at("hub-site")
                .creating(ResourceDescription::new("mixed", "Mixed textiles")),
        )
        .expect("transfer d1");
    let t2 = l
        .record_event(
            EconomicEvent::new(Action::Transfer, "d2", "hub")
                .resource("bag-d2")
                .to_resource("mixed")
                .quantity(q("7.35"), "kg")
                .at("hub-site"),
        )
        .expect("transfer d2");
    // Fatima keeps a jacket back: she gives 3.125 of her 4 kg.
    let t3 = l
        .record_event(
            EconomicEvent::new(Action::Transfer, "d3", "hub")
                .resource("bag-d3")
                .to_resource("mixed")
                .quantity(q("3.125"), "kg")
                .at("hub-site"),
        )
        .expect("transfer d3");

    // mixed: 12.4 + 7.35 + 3.125 = 22.875 kg (accounting and onhand: decrementIncrement).
    assert_eq!(qty(&l, "mixed"), "22.875 kg / 22.875 kg");
    // bags: 12.4 - 12.4 = 0; 7.35 - 7.35 = 0; 4 - 3.125 = 0.875.
    assert_eq!(qty(&l, "bag-d1"), "0 kg / 0 kg");
    assert_eq!(qty(&l, "bag-d2"), "0 kg / 0 kg");
    assert_eq!(qty(&l, "bag-d3"), "0.875 kg / 0.875 kg");
    let m = res(&l, "mixed");
    assert_eq!(m.custodian, Some(id("hub")));
    assert_eq!(m.primary_accountable, Some(id("hub")));
    assert_eq!(m.current_location, Some(id("hub-site")));

    // Sorting run: 20.5 kg in, three fractions out (11.2 + 4.05 + 5.25 = 20.5 kg).
    l.record_event(
        EconomicEvent::new(Action::Consume, "hub", "hub")
            .resource("mixed")
            .quantity(q("20.5"), "kg")
            .input_of("sort1"),
    )
    .expect("consume mixed");
    l.record_event(
        EconomicEvent::new(Action::Work, "wim", "hub")
            .conforms_to("sorting-work")
            .effort(q("2.75"), "hour")
            .input_of("sort1"),
    )
    .expect("work");
    for (rid, name, kg) in [
        ("cotton", "Cotton fraction", "11.2"),
        ("wool", "Wool fraction", "4.05"),
        ("rejects", "Rejects", "5.25"),
    ] {
        l.record_event(
            EconomicEvent::new(Action::Produce, "hub", "hub")
                .quantity(q(kg), "kg")
                .output_of("sort1")
                .at("hub-site")
                .creating(ResourceDescription::new(rid, name)),
        )
        .expect("produce fraction");
    }
    // mixed: 22.875 - 20.5 = 2.375 kg waits for the next run.
    assert_eq!(qty(&l, "mixed"), "2.375 kg / 2.375 kg");
    assert_eq!(qty(&l, "cotton"), "11.2 kg / 11.2 kg");
    assert_eq!(qty(&l, "wool"), "4.05 kg / 4.05 kg");
    assert_eq!(qty(&l, "rejects"), "5.25 kg / 5.25 kg");
    assert_eq!(res(&l, "wool").stage, Some(id("sorting")));
    // Mass balance of the run, exactly: 11.2 + 4.05 + 5.25 = 20.5.
    let out = ["cotton", "wool", "rejects"]
        .iter()
        .map(|r| res(&l, r).onhand_quantity.has_numerical_value)
        .try_fold(Quantity::ZERO, |s, x| s.checked_add(x))
        .expect("no overflow");
    assert_eq!(out.to_string(), "20.5");

    // Spinning: 10 kg cotton in, 9.4 kg yarn out.
    l.record_event(
        EconomicEvent::new(Action::Consume, "hub", "hub")
            .resource("cotton")
            .quantity(10, "kg")
            .input_of("spin1"),
    )
    .expect("consume cotton");
    l.record_event(
        EconomicEvent::new(Action::Produce, "hub", "hub")
            .quantity(q("9.4"), "kg")
            .output_of("spin1")
            .at("hub-site")
            .creating(ResourceDescription::new("yarn", "Recycled cotton yarn")),
    )
    .expect("produce yarn");
    // cotton: 11.2 - 10 = 1.2 kg.
    assert_eq!(qty(&l, "cotton"), "1.2 kg / 1.2 kg");
    assert_eq!(qty(&l, "yarn"), "9.4 kg / 9.4 kg");
    let y = res(&l, "yarn");
    assert_eq!(y.stage, Some(id("spinning")));
    assert_eq!(y.custodian, Some(id("hub")));
    assert_eq!(l.conflicts(), vec![]);

    // Inventory hides the two empty bags: 11 resources were touched, 9 are non-empty.
    let inv = l.inventory(&ResourceFilter::default());
    let names: Vec<&str> = inv.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        names,
        vec!["bag-d3", "cotton", "mixed", "rejects", "wool", "yarn"]
    );

    // Trace the yarn back to the donors. The walk (newest first): yarn, its produce, spin1,
    // spin1's inputs (work, consume cotton), cotton, its produce, sort1, consume mixed, mixed,
    // the three transfers into it (t3, t2, t1), each to its donor's bag and the bag's raise.
    let t = l.trace(&id("yarn")).expect("trace");
    let rs: Vec<&str> = t.resources().iter().map(|r| r.as_str()).collect();
    assert_eq!(
        rs,
        vec!["yarn", "cotton", "mixed", "bag-d3", "bag-d2", "bag-d1"]
    );
    assert_eq!(t.processes(), vec![&id("spin1"), &id("sort1")]);
    let traced = ids(t.events());
    for e in [&t1, &t2, &t3].into_iter().chain(raises.iter()) {
        assert!(traced.contains(e.as_str()), "{e} in trace {t:?}");
    }
    // Depths: yarn 0, produce 1, spin1 2, consume cotton 3, cotton 4, produce 5, sort1 6,
    // consume mixed 7, mixed 8, transfer 9, bag 10.
    let depth_of = |rid: &str| {
        t.steps
            .iter()
            .find(|s| s.node == TraceNode::EconomicResource { id: id(rid) })
            .map(|s| s.depth)
    };
    assert_eq!(depth_of("bag-d1"), Some(10));
    assert_eq!(depth_of("mixed"), Some(8));

    // Track mixed textiles forward: sort1 makes cotton (which becomes yarn), wool, rejects.
    let k = l.track(&id("mixed")).expect("track");
    let rs: Vec<&str> = k.resources().iter().map(|r| r.as_str()).collect();
    assert_eq!(rs, vec!["mixed", "cotton", "yarn", "wool", "rejects"]);
    // And a donor can follow her own bag: bag-d1 -> mixed -> ... -> yarn.
    let k = l.track(&id("bag-d1")).expect("track");
    assert!(k.resources().contains(&&id("yarn")), "{k:?}");
    assert!(k.events().contains(&&t1));
    assert_eq!(l.snapshot(), l.snapshot_from_scratch());
}

// ---------------------------------------------------------------------------------------------
// c. Food market with an offline double sale
// ---------------------------------------------------------------------------------------------

fn sale(customer: &str, kg: &str) -> NewEvent {
    EconomicEvent::new(Action::Transfer, "farmer", customer)
        .resource("apples")
        .quantity(q(kg), "kg")
        .at("stall")
        .creating(ResourceDescription::new(
            format!("apples-{customer}"),
            "Apples",
        ))
}

#[test]
fn food_market_offline_double_sale() {
    let mut s1 = base_ledger();
    s1.create(Agent::person("farmer", "Joris (farmer)"))
        .expect("agent");
    for c in ["c1", "c2", "c3", "c4", "c5"] {
        s1.create(Agent::person(c, format!("Customer {c}")))
            .expect("agent");
    }
    s1.create(SpatialThing::new(
        "stall",
        "Stall 4, Noordermarkt",
        Some((52.3791, 4.8863)),
    ))
    .expect("place");
    s1.create(ProcessSpecification::new("harvesting", "Harvesting"))
        .expect("pspec");
    s1.create(Process::new(
        "harvest",
        "Apple picking, orchard B",
        Some(id("harvesting")),
    ))
    .expect("process");
    s1.record_event(
        EconomicEvent::new(Action::Produce, "farmer", "farmer")
            .quantity(20, "kg")
            .output_of("harvest")
            .at("stall")
            .creating(ResourceDescription::new("apples", "Apples (Elstar)")),
    )
    .expect("produce");
    s1.record_event(sale("c1", "3")).expect("sale 1");
    s1.record_event(sale("c2", "4.5")).expect("sale 2");
    s1.record_event(
        EconomicEvent::new(Action::Consume, "farmer", "farmer")
            .resource("apples")
            .quantity(q("2.5"), "kg")
            .with_note("bruised and spoiled, to the compost"),
    )
    .expect("spoiled");
    s1.record_event(sale("c3", "5")).expect("sale 3");
    // 20 - 3 - 4.5 - 2.5 - 5 = 5 kg.
    assert_eq!(qty(&s1, "apples"), "5 kg / 5 kg");
    assert_eq!(qty(&s1, "apples-c2"), "4.5 kg / 4.5 kg");
    let c2 = res(&s1, "apples-c2");
    assert_eq!(c2.custodian, Some(id("c2")));
    assert_eq!(c2.primary_accountable, Some(id("c2")));
    assert_eq!(c2.current_location, Some(id("stall")));
    assert_eq!(res(&s1, "apples").custodian, Some(id("farmer")));
    assert_eq!(res(&s1, "apples").stage, Some(id("harvesting")));
    assert_eq!(s1.conflicts(), vec![]);

    // Two stall devices go offline from this state and each sells the last 5 kg.
    let base_bytes = s1.save();
    let base_heads = s1.heads();
    let mut s2 = s1.fork(actor(2));
    let sale_a = s1.record_event(sale("c4", "5")).expect("offline sale a");
    let sale_b = s2.record_event(sale("c5", "5")).expect("offline sale b");
    // Each device alone: 5 - 5 = 0, no conflict.
    assert_eq!(qty(&s1, "apples"), "0 kg / 0 kg");
    assert_eq!(qty(&s2, "apples"), "0 kg / 0 kg");
    assert!(s1.conflicts().is_empty() && s2.conflicts().is_empty());
    let changes_a = s1.changes_since(&base_heads);
    let changes_b = s2.changes_since(&base_heads);

    s1.merge(&mut s2).expect("merge");
    s2.merge(&mut s1).expect("merge");
    assert_converged(&s1, &s2);
    // Both sales recorded the same number of operations from the same state, so they share a
    // counter and the actor breaks the tie: device 2's sale (actor 0x02..) comes later.
    let (later, earlier) = later_of(&sale_a, &sale_b);
    assert_eq!(later, &sale_b);
    // Together: 5 - 5 - 5 = -5 kg, on both quantities.
    assert_eq!(qty(&s1, "apples"), "-5 kg / -5 kg");
    let overdraw = |quantity| Conflict::Overdraw {
        resource: id("apples"),
        event: later.clone(),
        quantity,
        balance: Measure::new(-5, "kg"),
        competing: vec![earlier.clone()],
    };
    let expected = vec![
        overdraw(QuantityKind::Accounting),
        overdraw(QuantityKind::Onhand),
    ];
    assert_eq!(s1.conflicts(), expected);
    assert_eq!(s2.conflicts(), expected);
    assert_eq!(qty(&s1, "apples-c4"), "5 kg / 5 kg");
    assert_eq!(qty(&s1, "apples-c5"), "5 kg / 5 kg");

    // A third device receiving the changes in the other order sees the same.
    let mut s3 = Ledger::load(&base_bytes, actor(3)).expect("load");
    s3.apply_changes(changes_b).expect("apply b");
    s3.apply_changes(changes_a).expect("apply a");
    assert_converged(&s1, &s3);

    // Resolution: customer c5 gets her money back; the later sale is corrected to 0 kg, into
    // the same customer resource (so that resource stays, empty).
    let fix = s1
        .record_event(
            EconomicEvent::new(Action::Transfer, "farmer", "c5")
                .resource("apples")
                .to_resource("apples-c5")
                .quantity(0, "kg")
                .at("stall")
                .correcting(later)
                .with_note("sold out on the other device: refunded"),
        )
        .expect("correction");
    s2.merge(&mut s1).expect("merge");
    s3.merge(&mut s1).expect("merge");
    assert_converged(&s1, &s2);
    assert_converged(&s1, &s3);
    assert_eq!(s1.conflicts(), vec![]);
    // Without the corrected sale: 5 - 5 (earlier) - 0 (correction) = 0 kg.
    assert_eq!(qty(&s1, "apples"), "0 kg / 0 kg");
    // c5's resource: its creating sale no longer counts; the correction adds 0.
    assert_eq!(qty(&s1, "apples-c5"), "0 kg / 0 kg");
    assert_eq!(res(&s1, "apples-c5").removed_by, None);
    assert_eq!(qty(&s1, "apples-c4"), "5 kg / 5 kg");
    // The corrected sale is kept but no longer listed by default.
    let on_apples = |include_corrected| {
        s1.events(&EventFilter {
            resource: Some(id("apples")),
            include_corrected,
            ..Default::default()
        })
        .into_iter()
        .map(|e| e.id)
        .collect::<Vec<_>>()
    };
    assert!(!on_apples(false).contains(later));
    assert!(on_apples(false).contains(&fix));
    assert!(on_apples(true).contains(later));
}

// ---------------------------------------------------------------------------------------------
// d. Corrections
// ---------------------------------------------------------------------------------------------

fn kitchen() -> Ledger {
    let mut l = base_ledger();
    l.create(Agent::person("farmer", "Joris")).expect("agent");
    l.create(Agent::person("bea", "Bea")).expect("agent");
    l.create(SpatialThing::new("kitchen", "Farm kitchen", None))
        .expect("place");
    l
}

#[test]
fn correcting_a_wrong_quantity() {
    let mut l = kitchen();
    // 120 jars typed instead of 12.
    let wrong = l
        .record_event(
            EconomicEvent::new(Action::Produce, "farmer", "farmer")
                .quantity(120, "one")
                .at("kitchen")
                .creating(ResourceDescription::new("jam", "Apple jam")),
        )
        .expect("produce");
    assert_eq!(qty(&l, "jam"), "120 one / 120 one");
    let fix = l
        .record_event(
            EconomicEvent::new(Action::Produce, "farmer", "farmer")
                .resource("jam")
                .quantity(12, "one")
                .at("kitchen")
                .correcting(&wrong),
        )
        .expect("correction");
    // The wrong produce no longer counts: 0 + 12 = 12.
    assert_eq!(qty(&l, "jam"), "12 one / 12 one");
    let jam = res(&l, "jam");
    assert_eq!(
        jam.removed_by, None,
        "the correction refers to the resource"
    );
    assert_eq!(jam.primary_accountable, Some(id("farmer")));
    // The correction stands in for the event that created the jam: the farmer still holds it,
    // in the kitchen.
    assert_eq!(jam.custodian, Some(id("farmer")));
    assert_eq!(jam.current_location, Some(id("kitchen")));
    // Sell 2: 12 - 2 = 10, no overdraw (with 120 counted it would be 118).
    l.record_event(
        EconomicEvent::new(Action::Transfer, "farmer", "bea")
            .resource("jam")
            .quantity(2, "one")
            .creating(ResourceDescription::new("bea-jam", "Apple jam")),
    )
    .expect("sale");
    assert_eq!(qty(&l, "jam"), "10 one / 10 one");
    assert_eq!(l.conflicts(), vec![]);

    let listed: Vec<Id> = l
        .events(&EventFilter {
            resource: Some(id("jam")),
            ..Default::default()
        })
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert!(!listed.contains(&wrong) && listed.contains(&fix));

    // Correcting the wrong event again is refused: correct the correction instead.
    let heads = l.heads();
    let again = l.record_event(
        EconomicEvent::new(Action::Produce, "farmer", "farmer")
            .resource("jam")
            .quantity(13, "one")
            .correcting(&wrong),
    );
    assert!(
        matches!(&again, Err(Error::AlreadyCorrected { event, by }) if *event == wrong && *by == fix),
        "{again:?}"
    );
    assert_eq!(l.heads(), heads, "nothing written");
    assert_eq!(l.snapshot(), l.snapshot_from_scratch());
}

#[test]
fn correcting_a_correction_keeps_the_resource() {
    let mut l = kitchen();
    let wrong = l
        .record_event(
            EconomicEvent::new(Action::Produce, "farmer", "farmer")
                .quantity(120, "one")
                .at("kitchen")
                .creating(ResourceDescription::new("jam", "Apple jam")),
        )
        .expect("produce");
    let fix = l
        .record_event(
            EconomicEvent::new(Action::Produce, "farmer", "farmer")
                .resource("jam")
                .quantity(12, "one")
                .at("kitchen")
                .correcting(&wrong),
        )
        .expect("correction");
    let sale = l
        .record_event(
            EconomicEvent::new(Action::Transfer, "farmer", "bea")
                .resource("jam")
                .quantity(2, "one")
                .creating(ResourceDescription::new("bea-jam", "Apple jam")),
        )
        .expect("sale");
    // 12 - 2 = 10.
    assert_eq!(qty(&l, "jam"), "10 one / 10 one");
    // Recounted: 13 jars after all. The correction of the correction refers to the jam too,
    // so the jam is not removed: 13 - 2 = 11.
    let fix2 = l
        .record_event(
            EconomicEvent::new(Action::Produce, "farmer", "farmer")
                .resource("jam")
                .quantity(13, "one")
                .at("kitchen")
                .correcting(&fix),
        )
        .expect("correct the correction");
    assert_eq!(res(&l, "jam").removed_by, None);
    assert_eq!(qty(&l, "jam"), "11 one / 11 one");
    // A correction counts at its own position (BRIEF: "B counts at its own position"), which
    // is after the sale: folded in order the sale sees 0 (the 120 and the 12 no longer count)
    // and 0 - 2 = -2, then the correction adds 13. So the sale shows as an overdraw with no
    // competing event.
    let overdraw = |quantity| Conflict::Overdraw {
        resource: id("jam"),
        event: sale.clone(),
        quantity,
        balance: Measure::new(-2, "one"),
        competing: vec![],
    };
    assert_eq!(
        l.conflicts(),
        vec![
            overdraw(QuantityKind::Accounting),
            overdraw(QuantityKind::Onhand)
        ]
    );
    let listed: Vec<Id> = l
        .events(&EventFilter {
            resource: Some(id("jam")),
            ..Default::default()
        })
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert!(!listed.contains(&wrong) && !listed.contains(&fix) && listed.contains(&fix2));
    assert_eq!(l.snapshot(), l.snapshot_from_scratch());
}

#[test]
fn correction_removes_a_resource_created_by_mistake() {
    let mut l = kitchen();
    l.record_event(
        EconomicEvent::new(Action::Produce, "farmer", "farmer")
            .quantity(8, "kg")
            .at("kitchen")
            .creating(ResourceDescription::new("cheese", "Farm cheese")),
    )
    .expect("stock");
    // Today's 3 kg were recorded as a new resource instead of added to the stock.
    let mistake = l
        .record_event(
            EconomicEvent::new(Action::Produce, "farmer", "farmer")
                .quantity(3, "kg")
                .at("kitchen")
                .creating(ResourceDescription::new("cheese-2", "Farm cheese")),
        )
        .expect("produce");
    assert_eq!(qty(&l, "cheese-2"), "3 kg / 3 kg");
    let fix = l
        .record_event(
            EconomicEvent::new(Action::Produce, "farmer", "farmer")
                .resource("cheese")
                .quantity(3, "kg")
                .at("kitchen")
                .correcting(&mistake),
        )
        .expect("correction");
    // cheese: 8 + 3 = 11 kg; cheese-2 lost its only creating event.
    assert_eq!(qty(&l, "cheese"), "11 kg / 11 kg");
    let gone = res(&l, "cheese-2");
    assert_eq!(gone.removed_by, Some(fix.clone()));
    assert!(l
        .inventory(&ResourceFilter::default())
        .iter()
        .all(|r| r.id != id("cheese-2")));
    assert!(l
        .inventory(&ResourceFilter {
            include_removed: true,
            include_empty: true,
            ..Default::default()
        })
        .iter()
        .any(|r| r.id == id("cheese-2")));
    // A removed resource holds nothing: its creating event does not count.
    assert_eq!(gone.onhand_quantity.has_numerical_value, Quantity::ZERO);
    assert_eq!(l.conflicts(), vec![]);

    // Someone still sells from the removed resource: it is surfaced, not hidden.
    let late = l
        .record_event(
            EconomicEvent::new(Action::Transfer, "farmer", "bea")
                .resource("cheese-2")
                .quantity(1, "kg")
                .creating(ResourceDescription::new("bea-cheese", "Farm cheese")),
        )
        .expect("event on a removed resource is recorded");
    assert_eq!(
        l.conflicts(),
        vec![Conflict::EventOnRemovedResource {
            resource: id("cheese-2"),
            event: late.clone(),
            removed_by: fix.clone(),
        }]
    );
    // Bea's resource does exist (its creating event counts): 0 + 1 = 1 kg.
    assert_eq!(qty(&l, "bea-cheese"), "1 kg / 1 kg");
    assert_eq!(l.snapshot(), l.snapshot_from_scratch());
}

#[test]
fn concurrent_corrections_of_one_event() {
    let mut a = kitchen();
    let wrong = a
        .record_event(
            EconomicEvent::new(Action::Produce, "farmer", "farmer")
                .quantity(120, "one")
                .at("kitchen")
                .creating(ResourceDescription::new("jam", "Apple jam")),
        )
        .expect("produce");
    let mut b = a.fork(actor(2));
    let fix = |n: i64| {
        EconomicEvent::new(Action::Produce, "farmer", "farmer")
            .resource("jam")
            .quantity(n, "one")
            .at("kitchen")
            .correcting(&wrong)
    };
    let ca = a.record_event(fix(12)).expect("correction on a");
    let cb = b.record_event(fix(21)).expect("correction on b");
    // Alone, each replica applies its own: 12 and 21.
    assert_eq!(qty(&a, "jam"), "12 one / 12 one");
    assert_eq!(qty(&b, "jam"), "21 one / 21 one");
    a.merge(&mut b).expect("merge");
    b.merge(&mut a).expect("merge");
    assert_converged(&a, &b);
    // Same counter, actor 1 < actor 2: a's correction is first and counts.
    let (later, first) = later_of(&ca, &cb);
    assert_eq!(first, &ca);
    let expected = vec![Conflict::ConcurrentCorrections {
        corrected: wrong.clone(),
        applied: first.clone(),
        superseded: vec![later.clone()],
    }];
    assert_eq!(a.conflicts(), expected);
    assert_eq!(b.conflicts(), expected);
    // Only the first correction counts: 0 + 12 = 12 (not 120, not 12 + 21).
    assert_eq!(qty(&a, "jam"), "12 one / 12 one");
    assert_eq!(qty(&b, "jam"), "12 one / 12 one");
}

// ---------------------------------------------------------------------------------------------
// e. Double transfer of custody
// ---------------------------------------------------------------------------------------------

#[test]
fn tool_library_drill_handed_out_twice() {
    let mut a = base_ledger();
    a.create(Agent::organization("library", "Tool library"))
        .expect("agent");
    a.create(Agent::person("ines", "Ines")).expect("agent");
    a.create(Agent::person("jan", "Jan")).expect("agent");
    a.record_event(
        EconomicEvent::new(Action::Raise, "library", "library")
            .quantity(1, "one")
            .creating(ResourceDescription::new("drill", "Cordless drill #7")),
    )
    .expect("raise");
    let lend = |to: &str| {
        EconomicEvent::new(Action::TransferCustody, "library", to)
            .resource("drill")
            .quantity(1, "one")
    };
    let base = a.save();
    let base_heads = a.heads();
    let mut b = a.fork(actor(2));
    let to_ines = a.record_event(lend("ines")).expect("lend to Ines");
    let to_jan = b.record_event(lend("jan")).expect("lend to Jan");
    assert_eq!(res(&a, "drill").custodian, Some(id("ines")));
    assert_eq!(res(&b, "drill").custodian, Some(id("jan")));
    let (ca, cb) = (a.changes_since(&base_heads), b.changes_since(&base_heads));

    // Merge in one order on a, in the other on a third replica, and both ways between a and b.
    let mut c = Ledger::load(&base, actor(3)).expect("load");
    c.apply_changes(cb).expect("b first");
    c.apply_changes(ca).expect("then a");
    a.merge(&mut b).expect("merge");
    b.merge(&mut a).expect("merge");
    assert_converged(&a, &b);
    assert_converged(&a, &c);
    let (later, earlier) = later_of(&to_ines, &to_jan);
    assert_eq!(later, &to_jan, "same counter, actor 2 sorts after actor 1");
    let expected = vec![Conflict::DoubleTransfer {
        resource: id("drill"),
        event: later.clone(),
        earlier: earlier.clone(),
        of: TransferOf::Custody,
    }];
    assert_eq!(a.conflicts(), expected);
    assert_eq!(b.conflicts(), expected);
    assert_eq!(c.conflicts(), expected);
    // Whole-resource handovers net to zero: 1 - 1 + 1 - 1 + 1 = 1 onhand; accounting n/a = 1.
    assert_eq!(qty(&a, "drill"), "1 one / 1 one");
    let d = res(&a, "drill");
    assert_eq!(d.primary_accountable, Some(id("library")));
    assert_eq!(
        d.custodian,
        Some(id("jan")),
        "the later handover is folded last"
    );
}

/// `include_removed` alone must list removed resources: a removed resource's quantities are
/// always zero, so if the empty filter applied to it, `include_removed` without
/// `include_empty` could never return one.
#[test]
fn include_removed_alone_lists_removed_resources() {
    let mut l = kitchen();
    let mistake = l
        .record_event(
            EconomicEvent::new(Action::Produce, "farmer", "farmer")
                .quantity(3, "kg")
                .creating(ResourceDescription::new("cheese-2", "Farm cheese")),
        )
        .expect("produce");
    l.record_event(
        EconomicEvent::new(Action::Produce, "farmer", "farmer")
            .quantity(3, "kg")
            .correcting(&mistake)
            .creating(ResourceDescription::new("cheese", "Farm cheese")),
    )
    .expect("correction");
    assert!(res(&l, "cheese-2").removed_by.is_some());
    let listed: Vec<Id> = l
        .inventory(&ResourceFilter {
            include_removed: true,
            ..Default::default()
        })
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, vec![id("cheese"), id("cheese-2")]);
}
