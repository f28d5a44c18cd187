//! Smoke test.
use reflow::*;

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

#[test]
fn smoke() {
    let mut a = Ledger::new_network("market", actor(1)).unwrap();
    a.create(Unit::new("kg", "kilogram", "kg")).unwrap();
    a.create(Agent::person("ana", "Ana")).unwrap();
    a.create(Agent::person("bo", "Bo")).unwrap();
    let _produced = a
        .record_event(
            EconomicEvent::new(Action::Produce, "ana", "ana")
                .quantity(5, "kg")
                .creating(ResourceDescription::new("apples", "Apples")),
        )
        .unwrap();
    let mut b = a.fork(actor(2));
    let s1 = a
        .record_event(
            EconomicEvent::new(Action::Transfer, "ana", "bo")
                .resource("apples")
                .quantity(4, "kg")
                .creating(ResourceDescription::new("bo-apples", "Apples")),
        )
        .unwrap();
    let s2 = b
        .record_event(
            EconomicEvent::new(Action::Consume, "ana", "ana")
                .resource("apples")
                .quantity(3, "kg"),
        )
        .unwrap();
    a.merge(&mut b).unwrap();
    b.merge(&mut a).unwrap();
    assert!(a.event(&s2).is_some(), "merged event readable by id");
    assert!(b.event(&s1).is_some());
    let sa = serde_json::to_string_pretty(&a.snapshot()).unwrap();
    let sb = serde_json::to_string_pretty(&b.snapshot()).unwrap();
    assert_eq!(sa, sb);
    assert_eq!(
        sa,
        serde_json::to_string_pretty(&a.snapshot_from_scratch()).unwrap()
    );
}
