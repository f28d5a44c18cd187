//! Bootstrap by document, authorship by attestation (docs/security.md, "Authorship by
//! attestation"): a joiner receives a peer's saved document and one attestation per device,
//! and must refuse what an attacker holding a member's key could put in that document.
//!
//! Every test builds the document an attacker would send (Automerge's `save` of the honest
//! history plus whatever the attacker adds), hands it to [`Replica::join_document`], and
//! checks what is applied and refused. Where the same changes can also be sent one by one
//! with their own signatures, the verdicts are compared with [`Replica::join`]'s: admission
//! judges a change in a document exactly as it judges it on its own.
//!
//! Attacks: an attestation left out (the device's changes are not covered), a forged
//! attestation (bad signature, wrong seq, wrong actor), an attestation signed by another
//! member for someone else's change, a change smuggled in with another member's actor, a
//! member speaking for others inside a document, a truncated or corrupt document, and a
//! removed member's changes after its removal, and a document whose rule set flags an event.

use std::collections::BTreeMap;

use reflow::*;

fn key() -> DeviceKey {
    DeviceKey::generate().expect("OS randomness")
}

fn produce(resource: &str, agent: &str) -> NewEvent {
    EconomicEvent::new(Action::Produce, agent, agent)
        .quantity(1, "kg")
        .creating(ResourceDescription::new(resource, resource))
}

fn heads(r: &Replica) -> Vec<ChangeHash> {
    let mut h = r.ledger().heads();
    h.sort();
    h
}

fn quarantine(r: &Replica) -> BTreeMap<ChangeHash, Rejection> {
    r.quarantine()
        .map(|q| (q.change.hash(), q.reason.clone()))
        .collect()
}

fn not_covered() -> Rejection {
    Rejection::Signature {
        problem: SignatureProblem::NotCovered,
    }
}

/// An admin (`ana`) and two members (`bo`, `cy`) who have all written, and whose replicas
/// hold everything.
struct Net {
    admin: Replica,
    bo: Replica,
    cy: Replica,
}

impl Net {
    fn new() -> Net {
        let (mut admin, _) =
            Replica::create_network("market", key(), Agent::person("ana", "Ana")).expect("create");
        admin
            .write(|l| {
                l.create(Unit::new("kg", "kilogram", "kg"))?;
                l.create(Agent::person("bo", "Bo"))?;
                l.create(Agent::person("cy", "Cy"))
            })
            .expect("setup");
        let (kb, kc) = (key(), key());
        admin
            .add_member(kb.id(), Role::Member, "bo".into())
            .expect("add bo");
        admin
            .add_member(kc.id(), Role::Member, "cy".into())
            .expect("add cy");
        let history = admin.signed_changes_since(&[]);
        let (mut bo, _) = Replica::join(admin.network(), kb, history.clone()).expect("bo");
        let (mut cy, _) = Replica::join(admin.network(), kc, history).expect("cy");
        for i in 0..3 {
            let (_, b) = bo
                .write(|l| l.record_event(produce(&format!("bo-{i}"), "bo")))
                .expect("bo writes");
            let (_, c) = cy
                .write(|l| l.record_event(produce(&format!("cy-{i}"), "cy")))
                .expect("cy writes");
            for r in [&mut admin, &mut bo, &mut cy] {
                r.receive(b.clone()).expect("receive");
                r.receive(c.clone()).expect("receive");
            }
            admin
                .write(|l| l.record_event(produce(&format!("ana-{i}"), "ana")))
                .expect("admin writes");
        }
        let all = admin.signed_changes_since(&[]);
        bo.receive(all.clone()).expect("receive");
        cy.receive(all).expect("receive");
        assert_eq!(heads(&bo), heads(&admin));
        assert_eq!(heads(&cy), heads(&admin));
        Net { admin, bo, cy }
    }
}

/// A document holding `changes` (Automerge's `save`; changes whose dependencies are missing
/// are left out by Automerge).
fn document_of(changes: &[SignedChange]) -> Vec<u8> {
    let mut doc = automerge::Automerge::new();
    doc.apply_changes(changes.iter().map(|c| c.change.clone()))
        .expect("apply");
    doc.save()
}

/// The attestation of a change by its own signature.
fn attest(c: &SignedChange) -> Attestation {
    Attestation {
        actor: c.change.actor_id().clone(),
        seq: c.change.seq(),
        hash: c.hash(),
        signature: c.signature,
    }
}

/// The attestations of the latest change of each actor among `changes`.
fn latest_per_actor(changes: &[SignedChange]) -> Vec<Attestation> {
    let mut latest: BTreeMap<Vec<u8>, &SignedChange> = BTreeMap::new();
    for c in changes {
        let actor = c.change.actor_id().to_bytes().to_vec();
        if latest
            .get(&actor)
            .is_none_or(|l| l.change.seq() < c.change.seq())
        {
            latest.insert(actor, c);
        }
    }
    latest.values().map(|c| attest(c)).collect()
}

/// Join from a document and, for comparison, from the same changes one by one; returns the
/// document's replica and receipt.
fn join_both(
    network: NetworkId,
    changes: &[SignedChange],
    attestations: &[Attestation],
) -> (Replica, Receipt, Replica) {
    let doc = document_of(changes);
    let (r, receipt) =
        Replica::join_document(network, key(), &doc, attestations).expect("join by document");
    let (signed, _) = Replica::join(network, key(), changes.to_vec()).expect("join by changes");
    (r, receipt, signed)
}

#[test]
fn a_document_bootstrap_is_the_same_replica_as_a_change_by_change_join() {
    let net = Net::new();
    let network = net.admin.network();
    let (doc, attestations) = net.admin.bootstrap_document().expect("a document");
    // One attestation per device: the admin's, bo's and cy's latest changes.
    assert_eq!(attestations.len(), 3, "{attestations:?}");
    let n = net.admin.signed_changes_since(&[]).len();
    let (joined, receipt) =
        Replica::join_document(network, key(), &doc, &attestations).expect("join");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(receipt.applied.len(), n);
    assert_eq!(receipt.waiting, 0);
    assert_eq!(heads(&joined), heads(&net.admin));
    assert_eq!(joined.members(), net.admin.members());
    assert_eq!(joined.ledger().snapshot(), net.admin.ledger().snapshot());
    // Only the attested changes keep a signature of their own; the others are covered.
    let covered = receipt
        .applied
        .iter()
        .filter(|c| joined.attested_by(&c.hash()).is_some())
        .count();
    assert_eq!(covered, n - attestations.len());
    for a in &attestations {
        assert_eq!(joined.signature(&a.hash), Some(a.signature));
        assert_eq!(joined.attested_by(&a.hash), None);
    }

    // Stored, reopened: the same replica, and it can serve a document bootstrap in turn.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("joined.redb");
    let store = Store::open(&path).expect("open");
    let device = store.device_key().expect("key");
    let (joined, receipt) =
        Replica::join_document(network, device.clone(), &doc, &attestations).expect("join");
    let durable = store
        .create_replica(joined, &receipt.applied)
        .expect("store");
    drop(durable);
    drop(store);
    let store = Store::open(&path).expect("reopen");
    let reopened = store.open_replica(&network, device).expect("open replica");
    let reopened = reopened.replica();
    assert_eq!(heads(reopened), heads(&net.admin));
    assert_eq!(reopened.ledger().snapshot(), net.admin.ledger().snapshot());
    let (doc2, attestations2) = reopened.bootstrap_document().expect("serves a document");
    assert_eq!(attestations2, attestations);
    let (third, receipt) =
        Replica::join_document(network, key(), &doc2, &attestations2).expect("join");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(heads(&third), heads(&net.admin));
}

#[test]
fn a_device_whose_attestation_is_left_out_is_not_covered() {
    let net = Net::new();
    let network = net.admin.network();
    let history = net.admin.signed_changes_since(&[]);
    let bo_device = net.bo.device();
    let (doc, attestations) = net.admin.bootstrap_document().expect("a document");
    let without_bo: Vec<Attestation> = attestations
        .iter()
        .filter(|a| DeviceId::of_actor(&a.actor) != Some(bo_device))
        .cloned()
        .collect();
    assert_eq!(without_bo.len(), 2);
    let (r, receipt) = Replica::join_document(network, key(), &doc, &without_bo).expect("join");
    let bo_changes: Vec<ChangeHash> = history
        .iter()
        .filter(|c| DeviceId::of_actor(c.change.actor_id()) == Some(bo_device))
        .map(SignedChange::hash)
        .collect();
    assert_eq!(bo_changes.len(), 3);
    let q = quarantine(&r);
    for h in &bo_changes {
        assert_eq!(q.get(h), Some(&not_covered()), "bo's change {h}");
    }
    // Whatever was built on bo's changes is refused with them; nothing refused is applied.
    for (h, reason) in &receipt.refused {
        assert!(
            *reason == not_covered() || matches!(reason, Rejection::DependsOnRefused { .. }),
            "{h}: {reason}"
        );
        assert!(r.signature(h).is_none() && r.attested_by(h).is_none());
    }
    assert_ne!(heads(&r), heads(&net.admin));
    // The changes before bo's first are all there (bo is a member).
    assert!(r.member(&bo_device).is_some());
}

#[test]
fn forged_attestations_cover_nothing() {
    let net = Net::new();
    let network = net.admin.network();
    let bo_device = net.bo.device();
    let (doc, attestations) = net.admin.bootstrap_document().expect("a document");
    let bo_at = attestations
        .iter()
        .position(|a| DeviceId::of_actor(&a.actor) == Some(bo_device))
        .expect("bo's attestation");
    let bo_tip = attestations[bo_at].clone();
    let cy_tip = attestations
        .iter()
        .find(|a| DeviceId::of_actor(&a.actor) == Some(net.cy.device()))
        .expect("cy's attestation")
        .clone();
    let mut flipped = bo_tip.clone();
    flipped.signature.0[10] ^= 1;
    let mut wrong_seq = bo_tip.clone();
    wrong_seq.seq += 1;
    // Another network's signature of the same change.
    let mut other_network = bo_tip.clone();
    other_network.signature = net.bo.key().sign_change(&NetworkId([9; 32]), &bo_tip.hash);
    // cy signs a statement of bo's change with its own key (bo's actor, cy's signature).
    let mut by_cy = bo_tip.clone();
    by_cy.signature = net.cy.key().sign_change(&network, &bo_tip.hash);
    // cy names its own actor for bo's change, signed by cy.
    let mut cy_actor = by_cy.clone();
    cy_actor.actor = cy_tip.actor.clone();
    for forged in [flipped, wrong_seq, other_network, by_cy, cy_actor] {
        let mut set = attestations.clone();
        set[bo_at] = forged.clone();
        let (r, _) = Replica::join_document(network, key(), &doc, &set).expect("join");
        assert_eq!(
            quarantine(&r).get(&bo_tip.hash),
            Some(&not_covered()),
            "{forged:?}"
        );
        assert!(r.signature(&bo_tip.hash).is_none());
        assert_ne!(heads(&r), heads(&net.admin));
    }
    // cy's valid attestation covers cy's changes only, never bo's in its past.
    let only_cy = vec![attestations[0].clone(), cy_tip.clone()];
    let only_cy: Vec<Attestation> = only_cy
        .into_iter()
        .chain(attestations.iter().cloned())
        .filter(|a| DeviceId::of_actor(&a.actor) != Some(bo_device))
        .collect();
    let (r, _) = Replica::join_document(network, key(), &doc, &only_cy).expect("join");
    assert_eq!(quarantine(&r).get(&bo_tip.hash), Some(&not_covered()));
}

#[test]
fn a_change_smuggled_with_another_members_actor_is_refused() {
    let net = Net::new();
    let network = net.admin.network();
    let mut history = net.admin.signed_changes_since(&[]);
    // cy (a member with its own valid key) writes a change as bo's device (bo's key, a new
    // session suffix), signs it with its own key and puts it in the document it sends.
    let mut ledger =
        Ledger::load(&net.admin.ledger().save(), net.bo.device().actor([7; 8])).expect("load");
    let before = ledger.heads();
    ledger
        .record_event(produce("smuggled", "bo"))
        .expect("event");
    let change = ledger.changes_since(&before).pop().expect("one change");
    let forged = SignedChange {
        signature: net.cy.key().sign_change(&network, &change.hash()),
        change,
    };
    history.push(forged.clone());
    let mut attestations = latest_per_actor(&net.admin.signed_changes_since(&[]));
    attestations.push(attest(&forged));
    let (r, receipt, signed) = join_both(network, &history, &attestations);
    assert_eq!(
        quarantine(&r).get(&forged.hash()),
        Some(&not_covered()),
        "{:?}",
        receipt.refused
    );
    assert_eq!(receipt.refused.len(), 1);
    // Change by change, the same change is refused for its signature; everything else is
    // the same replica.
    assert!(signed.is_quarantined(&forged.hash()));
    assert_eq!(heads(&r), heads(&signed));
    assert_eq!(heads(&r), heads(&net.admin));
}

#[test]
fn admission_judges_every_change_of_a_document() {
    let net = Net::new();
    let network = net.admin.network();
    let mut history = net.admin.signed_changes_since(&[]);
    // cy, with its own key and a patched client, records an event between bo and ana.
    let mut ledger = Ledger::load(
        &net.admin.ledger().save(),
        net.cy.key().session_actor().expect("a"),
    )
    .expect("load");
    let before = ledger.heads();
    ledger
        .record_event(
            EconomicEvent::new(Action::Transfer, "bo", "ana")
                .quantity(1, "kg")
                .resource("bo-0"),
        )
        .expect("event");
    let change = ledger.changes_since(&before).pop().expect("one change");
    let speaks = SignedChange {
        signature: net.cy.key().sign_change(&network, &change.hash()),
        change,
    };
    history.push(speaks.clone());
    let attestations = latest_per_actor(&history);
    let (r, receipt, signed) = join_both(network, &history, &attestations);
    let reason = quarantine(&r).get(&speaks.hash()).cloned();
    assert!(
        matches!(reason, Some(Rejection::SpeaksForOthers { .. })),
        "{reason:?} {:?}",
        receipt.refused
    );
    // The same verdict, change by change.
    assert_eq!(quarantine(&r), quarantine(&signed));
    assert_eq!(heads(&r), heads(&net.admin));
}

#[test]
fn a_truncated_or_corrupt_document_is_a_typed_error() {
    let net = Net::new();
    let network = net.admin.network();
    let (doc, attestations) = net.admin.bootstrap_document().expect("a document");
    let mut corrupt = doc.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x55;
    let mut longer = doc.clone();
    longer.extend_from_slice(b"trailing bytes");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", doc[..doc.len() / 2].to_vec()),
        ("one byte short", doc[..doc.len() - 1].to_vec()),
        ("a flipped byte", corrupt),
        ("trailing bytes", longer),
        ("not a document", vec![0x42; 200]),
    ];
    for (what, bytes) in cases {
        match Replica::join_document(network, key(), &bytes, &attestations) {
            Err(Error::BadDocument(_)) => {}
            Err(e) => panic!("{what}: {e}"),
            Ok((r, receipt)) => panic!(
                "{what}: joined with heads {:?}, {} refused",
                r.ledger().heads(),
                receipt.refused.len()
            ),
        }
    }
    // Another network's document.
    let (other, _) =
        Replica::create_network("other", key(), Agent::person("zed", "Zed")).expect("create");
    let (doc, attestations) = other.bootstrap_document().expect("a document");
    assert!(matches!(
        Replica::join_document(network, key(), &doc, &attestations),
        Err(Error::WrongNetwork { .. })
    ));
}

#[test]
fn a_removed_members_changes_after_its_removal_are_judged_as_before() {
    let mut net = Net::new();
    let network = net.admin.network();
    let bo_key = net.bo.key().clone();
    let rm = net.admin.remove_member(bo_key.id()).expect("remove bo");
    net.bo.receive(rm.clone()).expect("bo learns of it");
    assert_eq!(net.bo.role(), None);
    // bo, with a patched client, keeps writing after its removal (depending on it).
    let mut ledger =
        Ledger::load(&net.bo.ledger().save(), bo_key.session_actor().expect("a")).expect("load");
    let before = ledger.heads();
    ledger
        .record_event(produce("after-removal", "bo"))
        .expect("event");
    let change = ledger.changes_since(&before).pop().expect("one change");
    assert!(change.deps().contains(&rm[0].hash()));
    let late = SignedChange {
        signature: bo_key.sign_change(&network, &change.hash()),
        change,
    };
    let mut history = net.admin.signed_changes_since(&[]);
    history.push(late.clone());
    // bo's attestation of its latest change is valid (bo still holds its key) and covers
    // all of bo's changes, those before the removal included.
    let attestations = latest_per_actor(&history);
    assert!(attestations.contains(&attest(&late)));
    let (r, receipt, signed) = join_both(network, &history, &attestations);
    let reason = quarantine(&r).get(&late.hash()).cloned();
    assert!(
        matches!(reason, Some(Rejection::Removed { .. })),
        "{reason:?} {:?}",
        receipt.refused
    );
    assert_eq!(receipt.refused.len(), 1, "{:?}", receipt.refused);
    assert_eq!(quarantine(&r), quarantine(&signed));
    assert_eq!(heads(&r), heads(&net.admin));
    assert_eq!(r.ledger().snapshot(), net.admin.ledger().snapshot());
    assert!(r.member(&bo_key.id()).is_none());
}

#[test]
fn a_document_with_rules_is_judged_and_folded_with_them() {
    use reflow::rules::{Outcome, Rule, RuleSet};
    let mut net = Net::new();
    let network = net.admin.network();
    // The admin publishes a rule set: events over 5 kg are flagged.
    net.admin
        .set_rules(RuleSet::new(
            "Market",
            1,
            vec![Rule {
                name: "big".into(),
                outcome: Outcome::Flag,
                actions: vec![],
                check: "event.quantity == null || event.quantity.milli <= 5000".into(),
                message: "over 5 kg".into(),
            }],
        ))
        .expect("rules");
    let (big, _) = net
        .admin
        .write(|l| {
            l.record_event(
                EconomicEvent::new(Action::Produce, "ana", "ana")
                    .quantity(9, "kg")
                    .creating(ResourceDescription::new("big", "Big")),
            )
        })
        .expect("a flagged event stands");
    let flagged = |r: &Replica| -> Vec<Id> {
        r.ledger()
            .conflicts()
            .into_iter()
            .filter_map(|c| match c {
                Conflict::RuleViolation { event, .. } => Some(event),
                _ => None,
            })
            .collect()
    };
    assert_eq!(flagged(&net.admin), vec![big.clone()]);
    let (doc, attestations) = net.admin.bootstrap_document().expect("a document");
    let (joined, receipt) =
        Replica::join_document(network, key(), &doc, &attestations).expect("join");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(flagged(&joined), vec![big]);
    assert_eq!(joined.rules(), net.admin.rules());
    assert_eq!(joined.ledger().snapshot(), net.admin.ledger().snapshot());
}
