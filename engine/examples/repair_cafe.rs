//! A Saturday at a repair café and the market next door, recorded with Reflow.
//!
//! Ana's bicycle is repaired (accept, work, consume spare parts, modify), a farmer sells apple
//! jam from two devices, one of them offline, and both sell the last two jars. After the devices
//! sync, the ledger shows the double sale as a conflict; a correcting event resolves it.
//!
//! Run with `cargo run --release -p reflow --example repair_cafe`.
#![allow(clippy::print_stdout)]

use reflow::Action as A;
use reflow::*;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

/// A readable name for any id: agents, places, processes, resources, specifications.
fn name(l: &Ledger, id: &Id) -> String {
    match l.object(id) {
        Some(Object::Agent(a)) => a.name,
        Some(Object::SpatialThing(s)) => s.name,
        Some(Object::Process(p)) => p.name,
        Some(Object::EconomicResource(r)) if !r.name.is_empty() => r.name,
        Some(Object::ResourceSpecification(s)) => s.name,
        _ => id.to_string(),
    }
}

fn opt_name(l: &Ledger, id: &Option<Id>) -> String {
    id.as_ref().map_or("-".into(), |i| name(l, i))
}

/// A measure with its unit's symbol (`2 jar`, `1.5 h`; no symbol for plain counts).
fn amount(l: &Ledger, m: &Measure) -> String {
    match l.get::<Unit>(&m.has_unit) {
        Some(u) if u.symbol.is_empty() => m.has_numerical_value.to_string(),
        Some(u) => format!("{} {}", m.has_numerical_value, u.symbol),
        None => m.to_string(),
    }
}

/// One line about an event: what, how much, who to whom.
fn describe(l: &Ledger, id: &Id) -> String {
    let Some(e) = l.event(id) else {
        return id.to_string();
    };
    let qty = e.resource_quantity.as_ref().or(e.effort_quantity.as_ref());
    let qty = qty.map_or(String::new(), |m| amount(l, m));
    let what = e.resource_inventoried_as.or(e.resource_conforms_to);
    let (p, r) = (opt_name(l, &e.provider), opt_name(l, &e.receiver));
    let who = if p == r { p } else { format!("{p} -> {r}") };
    let fixes = e
        .corrects
        .map_or(String::new(), |c| format!(", correcting {c}"));
    format!("{} {qty} {}, {who}{fixes}", e.action, opt_name(l, &what))
}

/// An event on a resource: `action`, `provider` -> `receiver`, `n` `unit` of `resource`.
fn flow(action: A, p: &str, r: &str, resource: &str, n: i64, unit: &str) -> EconomicEvent {
    EconomicEvent::new(action, p, r)
        .resource(resource)
        .quantity(n, unit)
}

/// One device's replica of the ledger.
struct Device {
    name: &'static str,
    ledger: Ledger,
}

impl Device {
    fn new(name: &'static str, ledger: Ledger) -> Self {
        Device { name, ledger }
    }

    /// Record an event and say what happened.
    fn rec(&mut self, event: impl Into<NewEvent>) -> Res<Id> {
        let id = self.ledger.record_event(event)?;
        println!("  [{}] {}", self.name, describe(&self.ledger, &id));
        Ok(id)
    }

    /// Exchange changes with another device, both ways.
    fn sync(&mut self, other: &mut Device) -> Res<()> {
        self.ledger.merge(&mut other.ledger)?;
        other.ledger.merge(&mut self.ledger)?;
        Ok(())
    }
}

fn print_inventory(l: &Ledger) {
    println!(
        "  {:<20} {:>9}  {:<20} location",
        "resource", "quantity", "custodian"
    );
    for r in l.inventory(&ResourceFilter::default()) {
        let q = amount(l, &r.accounting_quantity);
        let (c, at) = (opt_name(l, &r.custodian), opt_name(l, &r.current_location));
        println!("  {:<20} {q:>9}  {c:<20} {at}", r.name);
    }
}

fn print_trace(l: &Ledger, t: &Trace) {
    for step in &t.steps {
        let text = match &step.node {
            TraceNode::EconomicResource { id } => format!("resource {}", name(l, id)),
            TraceNode::EconomicEvent { id, .. } => format!("event    {}", describe(l, id)),
            TraceNode::Process { id } => format!("process  {}", name(l, id)),
        };
        println!("  {}{text}", "  ".repeat(step.depth));
    }
}

fn print_conflicts(l: &Ledger) {
    let conflicts = l.conflicts();
    if conflicts.is_empty() {
        println!("  none: the devices agree and every quantity adds up.");
    }
    let mut last = None;
    for c in &conflicts {
        let Conflict::Overdraw {
            resource: r,
            event: e,
            balance,
            competing,
            ..
        } = c
        else {
            println!("  * {c:?}\n    To do: record a correcting event for it.");
            continue;
        };
        // Accounting and onhand overdraws by the same event are one story.
        if last.replace((r, e)) == Some((r, e)) {
            continue;
        }
        let (what, bal) = (name(l, r), amount(l, balance));
        println!("  * {what} went below zero: {bal}.");
        println!("    This event took it there: {} [{e}]", describe(l, e));
        for other in competing {
            let text = describe(l, other);
            println!("    recorded without knowing of: {text} [{other}]");
        }
        println!("    To do: find out which really happened and record a correcting event");
        println!("    (corrects = {e}) with the quantity really handed over.");
    }
}

fn main() -> Res<()> {
    println!("Reflow: a Saturday at Repair Café De Pijp and the Noordermarkt\n");
    let mut l = Ledger::new_network("de-pijp-saturday", actor(1))?;
    for (id, symbol) in [("one", ""), ("jar", "jar"), ("hour", "h")] {
        l.create(Unit::new(id, id, symbol))?;
    }
    l.create(Agent::organization("cafe", "Repair Café"))?;
    for (id, n) in [("sam", "Sam (volunteer)"), ("joris", "Joris (farmer)")] {
        l.create(Agent::person(id, n))?;
    }
    for (id, n) in [("ana", "Ana"), ("bea", "Bea"), ("chris", "Chris")] {
        l.create(Agent::person(id, n))?;
    }
    let places = [
        ("workshop", "Café workshop", (52.3547, 4.8911)),
        ("stall", "Market stall 4", (52.3791, 4.8863)),
    ];
    for (id, n, lat_long) in places {
        l.create(SpatialThing::new(id, n, Some(lat_long)))?;
    }
    l.create(ResourceSpecification::new("mechanics", "bicycle mechanics"))?;
    l.create(ProcessSpecification::new("repair", "Repair"))?;
    let fix = Process::new("fix", "Fix Ana's brakes", Some("repair".into()));
    l.create(fix)?;
    let mut tablet = Device::new("café tablet", l);
    let new = |id: &str, n: &str| ResourceDescription::new(id, n);
    let raise = |who: &str, n, unit: &str| EconomicEvent::new(A::Raise, who, who).quantity(n, unit);

    println!("Morning: what is there");
    tablet.rec(raise("ana", 1, "one").creating(new("bike", "Ana's bicycle")))?;
    tablet.rec(raise("cafe", 10, "one").creating(new("pads", "Brake pads")))?;
    let jam = EconomicEvent::new(A::Produce, "joris", "joris").at("stall");
    tablet.rec(jam.quantity(12, "jar").creating(new("jam", "Apple jam")))?;

    println!("\nThe repair");
    let bike = |a, p, r| flow(a, p, r, "bike", 1, "one");
    let hand_in = bike(A::TransferCustody, "ana", "cafe");
    tablet.rec(hand_in.to_location("workshop"))?;
    tablet.rec(bike(A::Accept, "ana", "cafe").input_of("fix"))?;
    let work = EconomicEvent::new(A::Work, "sam", "cafe").conforms_to("mechanics");
    let hours: Quantity = "1.5".parse()?;
    tablet.rec(work.effort(hours, "hour").input_of("fix"))?;
    let pads = flow(A::Consume, "cafe", "cafe", "pads", 2, "one");
    tablet.rec(pads.input_of("fix"))?;
    let repaired = bike(A::Modify, "cafe", "ana").output_of("fix");
    tablet.rec(repaired.with_state("pass"))?;
    tablet.rec(bike(A::TransferCustody, "cafe", "ana"))?;
    let b = tablet.ledger.resource(&"bike".into()).ok_or("no bike")?;
    let ana = Some(Id::from("ana"));
    assert!(b.custodian == ana && b.primary_accountable == ana);
    assert!(b.stage == Some("repair".into()) && b.state.as_deref() == Some("pass"));
    let pads = tablet.ledger.resource(&"pads".into()).ok_or("no pads")?;
    assert_eq!(pads.onhand_quantity.to_string(), "8 one", "10 - 2");

    println!("\nThe jam stall");
    let sell = |to: &str, n| {
        let mine = new(&format!("jam-{to}"), &format!("Apple jam ({to})"));
        let sale = flow(A::Transfer, "joris", to, "jam", n, "jar");
        sale.at("stall").creating(mine)
    };
    tablet.rec(sell("ana", 4))?;
    tablet.rec(sell("sam", 6))?;
    // 12 - 4 - 6 = 2 jars left when the farmer's phone loses the network.
    let mut phone = Device::new("stall phone", tablet.ledger.fork(actor(2)));
    println!("\nOffline: the stall phone has no network; both devices sell the last 2 jars");
    let sale_bea = tablet.rec(sell("bea", 2))?;
    let sale_chris = phone.rec(sell("chris", 2))?;

    println!("\nBack online: the devices sync");
    tablet.sync(&mut phone)?;
    let (l, p) = (&tablet.ledger, &phone.ledger);
    let json = |l: &Ledger| serde_json::to_string(&l.snapshot());
    assert_eq!(json(l)?, json(p)?, "both devices compute the same views");
    println!("  both show the same ledger: {} events", l.event_count());

    println!("\nInventory");
    print_inventory(l);
    println!("\nWhere Ana's bicycle has been (trace, newest first)");
    print_trace(l, &l.trace(&"bike".into())?);
    println!("\nConflicts");
    print_conflicts(l);
    let conflicts = l.conflicts();
    assert_eq!(conflicts.len(), 2, "accounting and onhand overdraw");
    let late = conflicts.first().ok_or("no conflict")?.event().clone();
    // Same starting state, same number of operations: the actor breaks the tie, and the stall
    // phone (actor 02..) sorts after the tablet (actor 01..).
    assert_eq!(late, sale_chris);
    let competing = vec![sale_bea];
    assert!(matches!(&conflicts[0], Conflict::Overdraw { competing: c, .. } if *c == competing));

    println!("\nResolution: the jam was sold out before Chris paid; Joris refunds him");
    let none = flow(A::Transfer, "joris", "chris", "jam", 0, "jar");
    let fix = none.to_resource("jam-chris").correcting(&late).at("stall");
    phone.rec(fix.with_note("sold out: refunded"))?;
    tablet.sync(&mut phone)?;
    let (l, p) = (&tablet.ledger, &phone.ledger);
    assert_eq!(l.snapshot(), p.snapshot());
    assert_eq!(l.snapshot(), l.snapshot_from_scratch());
    println!("\nConflicts after the correction");
    print_conflicts(l);
    assert!(l.conflicts().is_empty());
    let jam = l.resource(&"jam".into()).ok_or("no jam")?;
    // 12 - 4 - 6 - 2 - 0 = 0 jars.
    assert_eq!(jam.onhand_quantity.to_string(), "0 jar");
    println!("\nInventory at closing time");
    print_inventory(l);
    Ok(())
}
