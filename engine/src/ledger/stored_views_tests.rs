//! Stored views (docs/storage.md, "A views value") against a fold from scratch, on seeded
//! random ledgers of two replicas that merge: transfers that overdraw, work fulfilling
//! commitments (over-fulfilled when both replicas deliver), satisfying an intent, transfers
//! settling a claim, corrections (concurrent ones too), events the ledger must reject.

use super::*;
use crate::vf::{
    Action, Agent, Claim, Commitment, EconomicEvent, Intent, Measure, ResourceDescription,
    ResourceSpecification, Unit,
};
use crate::views::stored;
use crate::Quantity;
use std::collections::BTreeSet;

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

/// xorshift64*: the same ledgers on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn work(hours: u64) -> EconomicEvent {
    EconomicEvent::new(Action::Work, "bo", "ana")
        .conforms_to("machining")
        .effort(Quantity::from_i64(hours as i64), "hour")
}

fn transfer(from: u64, to: u64, kg: u64) -> EconomicEvent {
    EconomicEvent::new(Action::Transfer, "ana", "bo")
        .resource(format!("r{from}"))
        .to_resource(format!("r{to}"))
        .quantity(Quantity::from_i64(kg as i64), "kg")
}

/// Units, agents, four resources of 20 kg, three commitments of 8 hours (one satisfying the
/// intent), an intent of 8 hours, a claim of 10 kg.
fn base() -> (Ledger, Vec<(Id, EconomicEvent)>) {
    let mut l = Ledger::new_network("stored views", actor(1)).expect("genesis");
    l.create(Unit::new("kg", "kilogram", "kg")).expect("unit");
    l.create(Unit::new("hour", "hour", "h")).expect("unit");
    for a in ["ana", "bo"] {
        l.create(Agent::person(a, a)).expect("agent");
    }
    l.create(ResourceSpecification::new("machining", "Machining"))
        .expect("spec");
    l.create(ResourceSpecification::new("flour", "Flour"))
        .expect("spec");
    for i in 0..4 {
        l.record_event(
            EconomicEvent::new(Action::Produce, "ana", "ana")
                .quantity(20, "kg")
                .creating(
                    ResourceDescription::new(format!("r{i}"), "Flour").conforming_to("flour"),
                ),
        )
        .expect("produce");
    }
    let mut intent = Intent::request(Action::Work, Some("ana"));
    intent.id = Id::from("wanted");
    intent.resource_conforms_to = Some(Id::from("machining"));
    intent.effort_quantity = Some(Measure::new(Quantity::from_i64(8), "hour"));
    l.create(intent).expect("intent");
    for i in 0..3 {
        let mut c = Commitment::new(Action::Work, "bo", "ana");
        c.id = Id::from(format!("c{i}"));
        c.resource_conforms_to = Some(Id::from("machining"));
        c.effort_quantity = Some(Measure::new(Quantity::from_i64(8), "hour"));
        if i == 0 {
            c.satisfies = Some(Id::from("wanted"));
        }
        l.create(c).expect("commitment");
    }
    let worked = l.record_event(work(3)).expect("work");
    let shared = vec![(worked.clone(), work(3))];
    let mut claim = Claim::new(Action::Transfer, "ana", "bo");
    claim.id = Id::from("claim");
    claim.resource_conforms_to = Some(Id::from("flour"));
    claim.resource_quantity = Some(Measure::new(Quantity::from_i64(10), "kg"));
    claim.triggered_by = Some(worked);
    l.create(claim).expect("claim");
    (l, shared)
}

/// Put an event the ledger must reject (an unknown action) in an event bucket, as a peer's
/// change would, and fold it in.
fn put_invalid(l: &mut Ledger) {
    let before = l.doc.get_heads();
    let counter = l.max_op() + 1;
    let key = OrderKey {
        counter,
        actor: l.doc.get_actor().clone(),
    }
    .to_id();
    let buckets = l.layout.event_sets.first().cloned().expect("schema 2");
    let mut tx = l.doc.transaction();
    tx.put(
        &buckets[schema::event_bucket(counter)],
        key.as_str(),
        r#"{"action":"noSuchAction"}"#,
    )
    .expect("put");
    tx.commit();
    l.next_op = None;
    l.ingest_since(&before);
}

/// One random step on `l`; `ids` are the events recorded so far (for corrections).
fn step(rng: &mut Rng, l: &mut Ledger, ids: &mut Vec<(Id, EconomicEvent)>) {
    let event = match rng.below(12) {
        0..=2 => transfer(rng.below(4), rng.below(4), 1 + rng.below(15)),
        3 => EconomicEvent::new(Action::Consume, "ana", "ana")
            .resource(format!("r{}", rng.below(4)))
            .quantity(Quantity::from_i64(1 + rng.below(12) as i64), "kg"),
        4..=5 => work(1 + rng.below(6)).fulfilling(format!("c{}", rng.below(3))),
        6 => work(1 + rng.below(6)).satisfying("wanted"),
        7 => transfer(0, 1, 1 + rng.below(6)).settling("claim"),
        8..=9 if !ids.is_empty() => {
            // Half of them of the event both replicas hold from the start.
            let pick = match rng.below(2) {
                0 => 0,
                _ => rng.below(ids.len() as u64) as usize,
            };
            let (id, e) = ids[pick].clone();
            let mut fix = e.clone();
            fix.resource_quantity = fix.resource_quantity.map(|mut m| {
                m.has_numerical_value = Quantity::from_i64(rng.below(3) as i64);
                m
            });
            fix.effort_quantity = fix.effort_quantity.map(|mut m| {
                m.has_numerical_value = Quantity::from_i64(rng.below(3) as i64);
                m
            });
            fix.correcting(id.as_str())
        }
        10 => {
            put_invalid(l);
            return;
        }
        _ => work(1 + rng.below(4)),
    };
    // Refused, some: a correction of an event corrected already (seen after a merge).
    if let Ok(id) = l.record_event(event.clone()) {
        ids.push((id, event));
    }
}

/// Encode, decode: the views of `l` back, every field.
fn round_trips(l: &Ledger, ctx: &str) {
    let bytes = l.encode_views();
    let s = stored::decode(&bytes).unwrap_or_else(|e| panic!("{ctx}: decode: {e}"));
    assert!(s.views == l.views, "{ctx}: decoded views differ");
    assert_eq!(s.events_len, l.events_len, "{ctx}");
    assert_eq!(s.heads, l.doc.get_heads(), "{ctx}");
}

#[test]
fn stored_views_of_seeded_ledgers_equal_a_fold() {
    let mut kinds: BTreeSet<&'static str> = BTreeSet::new();
    for seed in 1..=24u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let (mut a, shared) = base();
        let mut b = a.fork(actor(2));
        let (mut ida, mut idb) = (shared.clone(), shared);
        let mut halfway = None;
        let steps = 40 + rng.below(40);
        for i in 0..steps {
            match rng.below(10) {
                0 => a.merge(&mut b).expect("merge"),
                1 => b.merge(&mut a).expect("merge"),
                2..=5 => step(&mut rng, &mut a, &mut ida),
                _ => step(&mut rng, &mut b, &mut idb),
            }
            if i == steps / 2 {
                halfway = Some(a.encode_views());
            }
        }
        a.merge(&mut b).expect("merge");
        b.merge(&mut a).expect("merge");
        for (name, l) in [("a", &a), ("b", &b)] {
            let ctx = format!("seed {seed}, replica {name}");
            for c in l.conflicts() {
                kinds.insert(match c {
                    Conflict::Overdraw { .. } => "overdraw",
                    Conflict::DoubleTransfer { .. } => "doubleTransfer",
                    Conflict::EventOnRemovedResource { .. } => "removed",
                    Conflict::ConcurrentCorrections { .. } => "concurrentCorrections",
                    Conflict::QuantityOverflow { .. } => "overflow",
                    Conflict::RuleViolation { .. } => "rule",
                    Conflict::OverFulfilment { .. } => "overFulfilment",
                    Conflict::OverSatisfaction { .. } => "overSatisfaction",
                    Conflict::OverSettlement { .. } => "overSettlement",
                    Conflict::InvalidEvent { .. } => "invalid",
                });
            }
            assert!(l.views_match_a_fold(), "{ctx}: incremental views");
            round_trips(l, &ctx);
            // Opened with its own views: used as they are, equal to a fold.
            let saved = l.save();
            let (opened, origin) =
                Ledger::load_with_views(&saved, actor(9), Some(&l.encode_views())).expect("load");
            assert_eq!(origin, ViewsOrigin::Stored, "{ctx}");
            assert!(
                opened.views_match_a_fold(),
                "{ctx}: opened with stored views"
            );
            assert!(opened.views == l.views, "{ctx}: opened views");
            assert_eq!(opened.snapshot(), l.snapshot(), "{ctx}");
            // With the views of halfway: the changes after them folded on top.
            let halfway = halfway.as_deref().expect("halfway");
            let (opened, origin) =
                Ledger::load_with_views(&saved, actor(9), Some(halfway)).expect("load");
            assert!(
                matches!(origin, ViewsOrigin::StoredAndTail | ViewsOrigin::Stored),
                "{ctx}: {origin:?}"
            );
            assert!(opened.views_match_a_fold(), "{ctx}: halfway views and tail");
            assert_eq!(opened.snapshot(), l.snapshot(), "{ctx}");
        }
    }
    for kind in [
        "overdraw",
        "concurrentCorrections",
        "overFulfilment",
        "invalid",
    ] {
        assert!(
            kinds.contains(kind),
            "no seed made a {kind} conflict: {kinds:?}"
        );
    }
}
