//! Object ownership (docs/security.md, "Who may edit an object"): an object of a planning,
//! exchange or descriptive kind is edited only by devices of the agents that created it, or
//! by an admin. Checked on real replicas with real signatures: the local write is refused
//! before it is signed; crafted changes are refused identically in several delivery orders;
//! a replica reopened from its saved document (owners rebuilt from the markers) judges the
//! next change as a replica that saw every change arrive; concurrent creations of one id by
//! two agents make both owners, listed as contested everywhere.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use reflow::*;

fn key() -> DeviceKey {
    DeviceKey::generate().expect("OS randomness")
}

/// ana (admin), bo and cy (members, one device each), and bo's second device `bo2`.
struct Net {
    ana: Replica,
    bo: Replica,
    bo2: Replica,
    cy: Replica,
    history: Vec<SignedChange>,
}

fn net() -> Net {
    let (bo_key, bo2_key, cy_key) = (key(), key(), key());
    let (mut ana, mut history) =
        Replica::create_network("market", key(), Agent::person("ana", "Ana")).expect("create");
    let (_, c) = ana
        .write(|l| {
            l.create(Unit::new("kg", "kilogram", "kg"))?;
            l.create(Agent::person("bo", "Bo"))?;
            l.create(Agent::person("cy", "Cy"))
        })
        .expect("setup");
    history.extend(c);
    for (k, agent) in [(&bo_key, "bo"), (&bo2_key, "bo"), (&cy_key, "cy")] {
        history.extend(
            ana.add_member(k.id(), Role::Member, agent.into())
                .expect("add"),
        );
    }
    let join = |k: DeviceKey| {
        Replica::join(ana.network(), k, history.clone())
            .expect("join")
            .0
    };
    let (bo, bo2, cy) = (join(bo_key), join(bo2_key), join(cy_key));
    Net {
        ana,
        bo,
        bo2,
        cy,
        history,
    }
}

fn offer(id: &str, provider: &str) -> Intent {
    Intent {
        id: Id::from(id),
        resource_quantity: Some(Measure::new(10, "kg")),
        ..Intent::offer(Action::Transfer, provider)
    }
}

fn refused_as_not_yours(r: Result<((), Vec<SignedChange>)>) -> Vec<Id> {
    match r {
        Err(Error::Refused {
            reason: Rejection::NotYourObject { owners, .. },
        }) => owners,
        other => panic!("expected NotYourObject, got {other:?}"),
    }
}

/// A change by `r`'s device, built with Automerge directly (as modified software would),
/// writing `field` of `kind` `id` with the JSON `value`, signed with `key`.
fn crafted(
    r: &Replica,
    key: &DeviceKey,
    suffix: u8,
    kind: ObjectKind,
    id: &str,
    field: &str,
    value: &str,
) -> SignedChange {
    let mut doc = Automerge::load(&r.ledger().save())
        .expect("load")
        .with_actor(key.id().actor([suffix; 8]));
    let (_, buckets) = doc.get(ROOT, "objectBuckets").expect("get").expect("set");
    let marker = serde_json::to_string(&[kind.root_key(), id]).expect("json");
    let bucket = (0..256)
        .map(|i| {
            doc.get(&buckets, format!("{i:02x}"))
                .expect("get")
                .expect("bucket")
                .1
        })
        .find(|b| doc.get(b, marker.as_str()).ok().flatten().is_some())
        .expect("the object's bucket");
    let k = serde_json::to_string(&[kind.root_key(), id, field]).expect("json");
    let mut tx = doc.transaction();
    tx.put(&bucket, k.as_str(), value).expect("put");
    tx.commit();
    let change = doc.get_last_local_change().expect("change");
    let signature = key.sign_change(&r.network(), &change.hash());
    SignedChange { change, signature }
}

fn reason(r: &Replica, c: &SignedChange) -> Option<Rejection> {
    r.quarantine()
        .find(|q| q.change.hash() == c.hash())
        .map(|q| q.reason.clone())
}

#[test]
fn a_member_edits_only_what_its_agent_made() {
    let Net {
        mut ana,
        mut bo,
        mut bo2,
        mut cy,
        ..
    } = net();
    let (_, made) = bo
        .write(|l| l.create(offer("bo-apples", "bo")))
        .expect("bo's offer");
    for r in [&mut ana, &mut bo2, &mut cy] {
        r.receive(made.clone()).expect("receive");
    }
    // cy may not touch it; the write is undone before anything is signed.
    let heads = cy.ledger().heads();
    let owners = refused_as_not_yours(cy.write(|l| {
        l.update::<Intent>(&Id::from("bo-apples"), |i| {
            i.resource_quantity = Some(Measure::new(1, "kg"))
        })
    }));
    assert_eq!(owners, vec![Id::from("bo")]);
    assert_eq!(cy.ledger().heads(), heads, "nothing kept");
    // Nor may cy edit ana's unit.
    let owners = refused_as_not_yours(
        cy.write(|l| l.update::<Unit>(&Id::from("kg"), |u| u.label = "kilo".into())),
    );
    assert_eq!(owners, vec![Id::from("ana")]);
    // bo's other device acts for bo: it may; so may bo himself and the admin.
    let (_, c1) = bo2
        .write(|l| l.update::<Intent>(&Id::from("bo-apples"), |i| i.note = Some("ripe".into())))
        .expect("bo's second device");
    let (_, c2) = ana
        .write(|l| l.update::<Intent>(&Id::from("bo-apples"), |i| i.finished = true))
        .expect("an admin");
    bo.receive(c1.iter().chain(&c2).cloned().collect())
        .expect("bo receives");
    let i: Intent = bo.ledger().get(&Id::from("bo-apples")).expect("offer");
    assert_eq!(i.note.as_deref(), Some("ripe"));
    assert!(i.finished);
    // cy's own object is cy's.
    cy.write(|l| l.create(offer("cy-pears", "cy")).map(|_| ()))
        .expect("cy's own");
    cy.write(|l| l.update::<Intent>(&Id::from("cy-pears"), |i| i.finished = true))
        .expect("cy edits its own");
}

/// Crafted edits (modified software with a member's own key) are refused identically in
/// several orders, and by a replica reopened from its saved document, whose owners are
/// rebuilt from the markers; the owner's honest edit after it stands everywhere.
#[test]
fn crafted_edits_are_refused_in_any_order_and_after_a_reopen() {
    let Net {
        mut ana,
        mut bo,
        cy,
        history,
        ..
    } = net();
    let net_id = ana.network();
    let (_, made) = bo
        .write(|l| l.create(offer("bo-apples", "bo")))
        .expect("bo's offer");
    let mut cy = cy;
    cy.receive(made.clone()).expect("cy");
    ana.receive(made.clone()).expect("ana");
    let cy_key = cy.key().clone();
    let attack = crafted(
        &cy,
        &cy_key,
        9,
        ObjectKind::Intent,
        "bo-apples",
        "resourceQuantity",
        r#"{"hasNumericalValue":"1","hasUnit":"kg"}"#,
    );
    let on_unit = crafted(
        &cy,
        &cy_key,
        10,
        ObjectKind::Unit,
        "kg",
        "label",
        "\"kilo\"",
    );
    let (_, honest) = bo
        .write(|l| l.update::<Intent>(&Id::from("bo-apples"), |i| i.note = Some("ripe".into())))
        .expect("bo edits");
    let mut all: Vec<SignedChange> = made.clone();
    all.push(attack.clone());
    all.push(on_unit.clone());
    all.extend(honest.clone());
    let orders: Vec<Vec<Vec<SignedChange>>> = vec![
        vec![all.clone()],
        all.iter().map(|c| vec![c.clone()]).collect(),
        {
            let mut r = all.clone();
            r.reverse();
            vec![r]
        },
    ];
    let mut seen = Vec::new();
    for batches in orders {
        let (mut r, _) = Replica::join(net_id, key(), history.clone()).expect("join");
        for b in batches {
            r.receive(b).expect("receive");
        }
        for c in [&attack, &on_unit] {
            assert!(!r.ledger().has_change(&c.hash()));
            assert!(
                matches!(reason(&r, c), Some(Rejection::NotYourObject { .. })),
                "{:?}",
                reason(&r, c)
            );
        }
        for c in &honest {
            assert!(r.ledger().has_change(&c.hash()), "the owner's edit stands");
        }
        let q: BTreeMap<ChangeHash, String> = r
            .quarantine()
            .map(|q| (q.change.hash(), q.reason.to_string()))
            .collect();
        seen.push((q, r.ledger().snapshot()));
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "replicas differ");

    // A replica reopened from a saved document that holds bo's offer (its owners rebuilt
    // from the markers) refuses the same attack and takes the owner's edit.
    let signatures = made
        .iter()
        .chain(&history)
        .map(|c| (c.hash(), c.signature))
        .collect();
    let mut reopened =
        Replica::open_saved(&ana.ledger().save(), key(), net_id, signatures, Vec::new())
            .expect("reopen");
    let receipt = reopened
        .receive(vec![attack.clone(), on_unit.clone()])
        .expect("receive");
    assert_eq!(receipt.refused.len(), 2, "{receipt:?}");
    for c in [&attack, &on_unit] {
        assert!(
            matches!(reason(&reopened, c), Some(Rejection::NotYourObject { .. })),
            "{:?}",
            reason(&reopened, c)
        );
    }
    reopened.receive(honest.clone()).expect("honest");
    for c in &honest {
        assert!(reopened.ledger().has_change(&c.hash()));
    }
}

/// Two agents create one id concurrently (offline): both creations stand, both own the
/// object, a third member still may not edit it, and every replica lists it as contested,
/// a reopened one too.
#[test]
fn concurrent_creations_of_one_id_make_both_owners() {
    let Net {
        mut ana,
        mut bo,
        mut cy,
        history,
        ..
    } = net();
    let net_id = ana.network();
    let (_, by_bo) = bo
        .write(|l| {
            l.create(ResourceSpecification::new("pears", "Pears"))
                .map(|_| ())
        })
        .expect("bo");
    let (_, by_cy) = cy
        .write(|l| {
            l.create(ResourceSpecification::new("pears", "Poires"))
                .map(|_| ())
        })
        .expect("cy");
    bo.receive(by_cy.clone()).expect("bo learns cy's");
    cy.receive(by_bo.clone()).expect("cy learns bo's");
    ana.receive(by_bo.iter().chain(&by_cy).cloned().collect())
        .expect("ana");
    let expected = vec![(
        ObjectKind::ResourceSpecification,
        Id::from("pears"),
        vec![Id::from("bo"), Id::from("cy")],
    )];
    for r in [&ana, &bo, &cy] {
        assert_eq!(r.contested_objects(), expected);
    }
    // Both owners may edit it now.
    let (_, e1) = bo
        .write(|l| {
            l.update::<ResourceSpecification>(&Id::from("pears"), |s| s.note = Some("bo".into()))
        })
        .expect("bo edits");
    let (_, e2) = cy
        .write(|l| {
            l.update::<ResourceSpecification>(&Id::from("pears"), |s| s.note = Some("cy".into()))
        })
        .expect("cy edits");
    // A third member (a fresh member device acting for a new agent) may not.
    let dee_key = key();
    let (_, c) = ana
        .write(|l| l.create(Agent::person("dee", "Dee")).map(|_| ()))
        .expect("dee");
    let mut more = c;
    more.extend(
        ana.add_member(dee_key.id(), Role::Member, "dee".into())
            .expect("add dee"),
    );
    let mut everything: Vec<SignedChange> = history.clone();
    everything.extend(by_bo.iter().chain(&by_cy).cloned());
    everything.extend(more);
    let (mut dee, _) = Replica::join(net_id, dee_key, everything.clone()).expect("join");
    let owners = refused_as_not_yours(dee.write(|l| {
        l.update::<ResourceSpecification>(&Id::from("pears"), |s| s.note = Some("dee".into()))
    }));
    assert_eq!(owners, vec![Id::from("bo"), Id::from("cy")]);
    // The same in another order, and after a reopen.
    everything.extend(e1.iter().chain(&e2).cloned());
    let mut reversed = everything.clone();
    reversed[1..].reverse();
    let (fresh, receipt) = Replica::join(net_id, key(), reversed).expect("join");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(fresh.contested_objects(), expected);
    let signatures = everything.iter().map(|c| (c.hash(), c.signature)).collect();
    let reopened = Replica::open_saved(
        &fresh.ledger().save(),
        key(),
        net_id,
        signatures,
        Vec::new(),
    )
    .expect("reopen");
    assert_eq!(reopened.contested_objects(), expected);
}

/// Accepting a proposal leaves the proposer's proposal as its owner wrote it; the proposal
/// reads as accepted because an agreement takes up its intent, on both replicas.
#[test]
fn accepting_a_proposal_does_not_edit_it() {
    let Net {
        mut ana,
        mut bo,
        mut cy,
        ..
    } = net();
    let (_, c) = bo
        .write(|l| {
            l.create(offer("bo-apples", "bo"))?;
            l.create(Proposal::new(
                "p",
                "10 kg apples",
                vec![Id::from("bo-apples")],
            ))
            .map(|_| ())
        })
        .expect("bo publishes");
    cy.receive(c.clone()).expect("cy");
    ana.receive(c).expect("ana");
    assert_eq!(
        cy.ledger().proposal_status(&Id::from("p")).expect("status"),
        ProposalStatus::Open
    );
    let (accepted, c) = cy
        .write(|l| l.accept_proposal(&Id::from("p"), &Id::from("cy"), None))
        .expect("cy accepts");
    bo.receive(c).expect("bo learns");
    for r in [&bo, &cy] {
        let p: Proposal = r.ledger().get(&Id::from("p")).expect("proposal");
        assert_eq!(p.status, ProposalStatus::Open, "as bo wrote it");
        assert_eq!(
            r.ledger().proposal_status(&Id::from("p")).expect("status"),
            ProposalStatus::Accepted
        );
    }
    // The acceptor owns what it created; the proposer does not edit it.
    let owners = refused_as_not_yours(
        bo.write(|l| l.update::<Commitment>(&accepted.commitments[0], |c| c.finished = true)),
    );
    assert_eq!(owners, vec![Id::from("cy")]);
    // A second acceptance is refused locally: the proposal is taken.
    let again = cy.write(|l| l.accept_proposal(&Id::from("p"), &Id::from("cy"), None));
    assert!(
        matches!(
            again,
            Err(Error::Planning(PlanningError::ProposalNotOpen { .. }))
        ),
        "{again:?}"
    );
}
