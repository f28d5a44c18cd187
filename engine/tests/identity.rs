//! Attacks on the identity layer (issue requirement 7).
//!
//! Every attack is delivered mixed into a batch of honest changes, to several replicas, each in
//! a different order. Checked for each: the honest changes are applied everywhere, the bad ones
//! are refused with the exact [`Rejection`], and afterwards every replica has the same heads,
//! the same quarantine (hash and reason), the same members and the same snapshot; no replica
//! ever hands a refused change on ([`Replica::signed_changes_since`]); receiving the batch
//! again changes nothing.
//!
//! Attacks: forged signatures (garbage, another key's, another network's, another change's),
//! a change claiming another member's actor, changes from a stranger (events, self-admission,
//! another network's genesis), membership records by non-admins, an observer writing, a
//! removed member writing after its removal (its earlier changes stay, and changes it makes
//! concurrently with the removal are accepted: acceptance depends on causal past only),
//! replayed and duplicated changes, and invites that are for another device, have the wrong
//! secret, are expired, reused, tampered with, for another network, or from a former admin.
//! Also: `DeviceKey`'s `Debug` hides the secret, provenance names the signing device and its
//! agent, and a `DurableReplica` survives a reopen with the same members, quarantine and heads.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::{CommitOptions, Transactable};
use reflow::*;

/// The redeeming admin's clock in these tests (unix seconds).
const NOW: u64 = 1_700_000_000;
/// An expiry comfortably after [`NOW`].
const LATER: u64 = NOW + 3600;

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

fn hashes(changes: &[SignedChange]) -> BTreeSet<ChangeHash> {
    changes.iter().map(SignedChange::hash).collect()
}

fn not_allowed<T: std::fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(Error::NotAllowed { .. }))
}

/// A replica of `from`'s network for `key`, built from `from`'s signed history through the
/// public API ([`Replica::join`]); everything must be accepted.
fn join(from: &Replica, key: DeviceKey) -> Replica {
    let history = from.signed_changes_since(&[]);
    let n = history.len();
    let (r, receipt) = Replica::join(from.network(), key, history).expect("join");
    assert_eq!(
        receipt.applied.len(),
        n,
        "every change of the history applied"
    );
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(receipt.waiting, 0);
    assert_eq!(receipt.duplicates, 0);
    assert_eq!(heads(&r), heads(from));
    r
}

/// Everything `from` has that `to` may lack; must be accepted.
fn sync(to: &mut Replica, from: &Replica) {
    let receipt = to.receive(from.signed_changes_since(&[])).expect("receive");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(receipt.waiting, 0);
}

/// An attacker's workshop: a copy of a ledger written with any actor, whose changes are signed
/// by any key (for any network).
struct Forger {
    ledger: Ledger,
    signer: DeviceKey,
    network: NetworkId,
}

impl Forger {
    fn new(base: &Ledger, actor: ActorId, signer: &DeviceKey, network: NetworkId) -> Forger {
        Forger {
            ledger: Ledger::load(&base.save(), actor).expect("load"),
            signer: signer.clone(),
            network,
        }
    }

    fn sign(&self, change: Change) -> SignedChange {
        let signature = self.signer.sign_change(&self.network, &change.hash());
        SignedChange { change, signature }
    }

    /// Record an event; returns its id and the one signed change.
    fn record(&mut self, event: NewEvent) -> (Id, SignedChange) {
        let before = self.ledger.heads();
        let id = self.ledger.record_event(event).expect("a valid event");
        let mut changes = self.ledger.changes_since(&before);
        assert_eq!(changes.len(), 1);
        let change = changes.pop().expect("one change");
        (id, self.sign(change))
    }

    /// A change carrying a membership record (as [`Replica`] writes them) on top of this
    /// forger's ledger. The forger's ledger is not changed.
    fn record_membership(&self, record: &MembershipRecord) -> SignedChange {
        let mut doc = automerge::Automerge::load(&self.ledger.save())
            .expect("load")
            .with_actor(self.ledger.actor().clone());
        // Schema v2: a membership record is a change with no operations.
        doc.empty_commit(CommitOptions::default().with_message(record.to_message()));
        let change = doc.get_last_local_change().expect("the change");
        self.sign(change)
    }
}

/// Four replicas of one network: `ana`'s admin device, and three member devices (`bo`, `cy`,
/// `dee`). `eve` and `fay` are agents without devices.
struct Net {
    admin: Replica,
    member: Replica,
    peers: [Replica; 2],
}

impl Net {
    fn new() -> Net {
        let (mut admin, _) =
            Replica::create_network("market", key(), Agent::person("ana", "Ana")).expect("create");
        admin
            .write(|l| {
                l.create(Unit::new("kg", "kilogram", "kg"))?;
                for (id, name) in [("bo", "Bo"), ("cy", "Cy"), ("dee", "Dee"), ("eve", "Eve")] {
                    l.create(Agent::person(id, name))?;
                }
                l.create(Agent::organization("fay", "Fay's Café"))
            })
            .expect("setup");
        let (kb, kc, kd) = (key(), key(), key());
        for (k, agent) in [(&kb, "bo"), (&kc, "cy"), (&kd, "dee")] {
            admin
                .add_member(k.id(), Role::Member, agent.into())
                .expect("add member");
        }
        let member = join(&admin, kb);
        let peers = [join(&admin, kc), join(&admin, kd)];
        assert_eq!(member.role(), Some(Role::Member));
        assert_eq!(admin.role(), Some(Role::Admin));
        Net {
            admin,
            member,
            peers,
        }
    }

    /// Honest changes made concurrently by the admin and the member (two by the admin, one
    /// by the member).
    fn honest_traffic(&mut self, tag: &str) -> Vec<SignedChange> {
        let mut out = Vec::new();
        out.extend(
            self.admin
                .write(|l| l.record_event(produce(&format!("{tag}-a1"), "ana")))
                .expect("admin writes")
                .1,
        );
        out.extend(
            self.member
                .write(|l| l.record_event(produce(&format!("{tag}-b1"), "bo")))
                .expect("member writes")
                .1,
        );
        out.extend(
            self.admin
                .write(|l| l.record_event(produce(&format!("{tag}-a2"), "ana")))
                .expect("admin writes")
                .1,
        );
        out
    }

    fn all(&mut self) -> Vec<&mut Replica> {
        let [p0, p1] = &mut self.peers;
        vec![&mut self.admin, &mut self.member, p0, p1]
    }
}

/// The same replica state, compared on everything that must be identical.
fn assert_converged(rs: &[&Replica]) {
    let first = rs[0];
    for (i, r) in rs.iter().enumerate().skip(1) {
        assert_eq!(heads(r), heads(first), "heads of replica {i} and 0");
        assert_eq!(
            quarantine(r),
            quarantine(first),
            "quarantine of replica {i}"
        );
        assert_eq!(r.members(), first.members(), "members of replica {i}");
        assert_eq!(
            r.ledger().snapshot(),
            first.ledger().snapshot(),
            "snapshot {i}"
        );
        assert_eq!(
            serde_json::to_string(&r.ledger().snapshot()).expect("json"),
            serde_json::to_string(&first.ledger().snapshot()).expect("json"),
        );
    }
}

/// Batch `i` of a delivery: honest and bad changes mixed, in an order that differs per `i`.
fn ordering(
    i: usize,
    honest: &[SignedChange],
    bad: &[(SignedChange, Rejection)],
) -> Vec<SignedChange> {
    let bad: Vec<SignedChange> = bad.iter().map(|(c, _)| c.clone()).collect();
    let mut batch: Vec<SignedChange> = match i % 4 {
        0 => honest.iter().cloned().chain(bad).collect(),
        1 => bad
            .into_iter()
            .chain(honest.iter().cloned())
            .rev()
            .collect(),
        2 => bad
            .into_iter()
            .chain(honest.iter().rev().cloned())
            .collect(),
        _ => {
            // Interleaved: honest, bad, honest, bad, ...
            let mut out = Vec::new();
            let mut h = honest.iter().cloned();
            let mut b = bad.into_iter();
            loop {
                match (h.next(), b.next()) {
                    (None, None) => break,
                    (x, y) => out.extend(x.into_iter().chain(y)),
                }
            }
            out
        }
    };
    if i >= 4 {
        let n = batch.len().max(1);
        batch.rotate_left(i % n);
    }
    batch
}

/// Deliver `honest` and `bad` mixed to every replica, each in its own order, and check the
/// receipts, the convergence, that nothing bad is forwarded, and that a replay changes
/// nothing.
fn deliver_everywhere(
    replicas: &mut [&mut Replica],
    honest: &[SignedChange],
    bad: &[(SignedChange, Rejection)],
) {
    let honest_hashes = hashes(honest);
    let expected_refused: BTreeMap<ChangeHash, Rejection> =
        bad.iter().map(|(c, r)| (c.hash(), r.clone())).collect();
    assert_eq!(
        expected_refused.len(),
        bad.len(),
        "bad changes are distinct"
    );
    assert!(
        hashes(honest).is_disjoint(&expected_refused.keys().copied().collect()),
        "test sanity: no bad change is also an honest one"
    );
    let mut batches = Vec::new();
    for (i, r) in replicas.iter_mut().enumerate() {
        let known: BTreeSet<ChangeHash> = honest_hashes
            .iter()
            .filter(|h| r.ledger().has_change(h))
            .copied()
            .collect();
        // A change this replica already refused with the same reason (its own write, revoked
        // when it learned of a concurrent removal) is a duplicate now.
        let judged: BTreeSet<ChangeHash> = r
            .quarantine()
            .filter(|q| expected_refused.get(&q.change.hash()) == Some(&q.reason))
            .map(|q| q.change.hash())
            .collect();
        let batch = ordering(i, honest, bad);
        let receipt = r.receive(batch.clone()).expect("receive");
        let applied = hashes(&receipt.applied);
        let expected_applied: BTreeSet<ChangeHash> =
            honest_hashes.difference(&known).copied().collect();
        assert_eq!(
            applied, expected_applied,
            "replica {i}: the honest changes are applied"
        );
        let refused: BTreeMap<ChangeHash, Rejection> = receipt.refused.iter().cloned().collect();
        assert_eq!(
            refused.len(),
            receipt.refused.len(),
            "replica {i}: refused once each"
        );
        let expected_now: BTreeMap<ChangeHash, Rejection> = expected_refused
            .iter()
            .filter(|(h, _)| !judged.contains(h))
            .map(|(h, r)| (*h, r.clone()))
            .collect();
        assert_eq!(
            refused, expected_now,
            "replica {i}: the bad changes are refused"
        );
        assert_eq!(receipt.waiting, 0, "replica {i}: nothing waits");
        assert_eq!(
            receipt.duplicates,
            known.len() + judged.len(),
            "replica {i}: duplicates"
        );
        for h in honest_hashes.iter() {
            assert!(
                r.ledger().has_change(h),
                "replica {i} has every honest change"
            );
        }
        for h in expected_refused.keys() {
            assert!(
                !r.ledger().has_change(h),
                "replica {i} never applies a bad change"
            );
        }
        batches.push(batch);
    }
    let views: Vec<&Replica> = replicas.iter().map(|r| &**r).collect();
    assert_converged(&views);
    for (i, r) in replicas.iter().enumerate() {
        let sent = hashes(&r.signed_changes_since(&[]));
        for h in expected_refused.keys() {
            assert!(!sent.contains(h), "replica {i} forwards a refused change");
        }
        for h in &honest_hashes {
            assert!(sent.contains(h), "replica {i} forwards the honest changes");
        }
        let q = quarantine(r);
        for (h, reason) in &expected_refused {
            assert_eq!(
                q.get(h),
                Some(reason),
                "replica {i}: quarantined with its reason"
            );
        }
    }
    // A replay of the same batch changes nothing.
    for (i, (r, batch)) in replicas.iter_mut().zip(batches).enumerate() {
        let (h, q, s) = (heads(r), quarantine(r), r.ledger().snapshot());
        let n = batch.len();
        let receipt = r.receive(batch).expect("replay");
        assert!(
            receipt.applied.is_empty(),
            "replica {i}: a replay applies nothing"
        );
        assert_eq!(receipt.waiting, 0);
        // A change refused for its signature may be judged again (the same hash may still
        // arrive with a valid signature); everything else is a duplicate.
        for (hash, reason) in &receipt.refused {
            assert!(
                matches!(reason, Rejection::Signature { .. }),
                "replica {i}: {reason}"
            );
            assert_eq!(expected_refused.get(hash), Some(reason));
        }
        assert_eq!(receipt.duplicates + receipt.refused.len(), n);
        assert_eq!(heads(r), h, "replica {i}: heads unchanged by a replay");
        assert_eq!(
            quarantine(r),
            q,
            "replica {i}: quarantine unchanged by a replay"
        );
        assert_eq!(r.ledger().snapshot(), s);
    }
}

/// A fresh replica built from `from`'s forwarded history accepts all of it.
fn assert_history_verifies(from: &Replica) {
    let history = from.signed_changes_since(&[]);
    let fresh = join(from, key());
    assert_eq!(fresh.ledger().snapshot(), from.ledger().snapshot());
    assert_eq!(fresh.members(), from.members());
    assert_eq!(hashes(&fresh.signed_changes_since(&[])), hashes(&history));
}

// ---------------------------------------------------------------------------------------------
// Forged signatures
// ---------------------------------------------------------------------------------------------

#[test]
fn forged_signatures_are_refused_everywhere() {
    let mut net = Net::new();
    let network = net.admin.network();
    let bad_sig = Rejection::Signature {
        problem: SignatureProblem::BadSignature,
    };
    let honest = net.honest_traffic("h");

    // The member's own actor and key, but the signature replaced by garbage.
    let member_key = net.member.key().clone();
    let mut f = Forger::new(
        net.member.ledger(),
        member_key.session_actor().expect("actor"),
        &member_key,
        network,
    );
    let (_, mut garbage) = f.record(produce("x-garbage", "bo"));
    garbage.signature = ChangeSignature([0x5a; 64]);

    // The admin's actor, signed by the right key, then the signature swapped for a peer's
    // valid signature of the same change.
    let admin_key = net.admin.key().clone();
    let mut f = Forger::new(
        net.admin.ledger(),
        admin_key.session_actor().expect("actor"),
        &admin_key,
        network,
    );
    let (_, mut other_key) = f.record(produce("x-other-key", "ana"));
    other_key.signature = net.peers[0].key().sign_change(&network, &other_key.hash());

    // The right key and actor, but signed for another network.
    let mut f = Forger::new(
        net.member.ledger(),
        member_key.session_actor().expect("actor"),
        &member_key,
        NetworkId([7; 32]),
    );
    let (_, other_network) = f.record(produce("x-other-net", "bo"));

    // A valid signature of another change by the same device.
    let mut f = Forger::new(
        net.member.ledger(),
        member_key.session_actor().expect("actor"),
        &member_key,
        network,
    );
    let (_, first) = f.record(produce("x-first", "bo"));
    let (_, mut second) = f.record(produce("x-second", "bo"));
    second.signature = first.signature;

    // A signature with a flipped bit.
    let mut f = Forger::new(
        net.admin.ledger(),
        admin_key.session_actor().expect("actor"),
        &admin_key,
        network,
    );
    let (_, mut flipped) = f.record(produce("x-flipped", "ana"));
    flipped.signature.0[17] ^= 0x01;

    let bad: Vec<(SignedChange, Rejection)> = [garbage, other_key, other_network, second, flipped]
        .into_iter()
        .map(|c| (c, bad_sig.clone()))
        .collect();
    deliver_everywhere(&mut net.all(), &honest, &bad);
    assert_history_verifies(&net.peers[1]);
}

#[test]
fn replayed_forged_signature_is_a_duplicate() {
    // Receiving exactly the same (change, signature) twice is a replay: the second time it
    // must count as a duplicate, like every other replayed change.
    let mut net = Net::new();
    let network = net.admin.network();
    let member_key = net.member.key().clone();
    let mut f = Forger::new(
        net.member.ledger(),
        member_key.session_actor().expect("actor"),
        &member_key,
        network,
    );
    let (_, mut forged) = f.record(produce("x", "bo"));
    forged.signature = ChangeSignature([3; 64]);
    let peer = &mut net.peers[0];
    let first = peer.receive(vec![forged.clone()]).expect("receive");
    assert_eq!(first.refused.len(), 1);
    let q = quarantine(peer);
    let again = peer.receive(vec![forged]).expect("replay");
    assert_eq!(quarantine(peer), q, "nothing changes");
    assert!(again.applied.is_empty());
    assert_eq!(
        (again.duplicates, again.refused.len()),
        (1, 0),
        "a replayed forged change is counted as a duplicate: {again:?}"
    );
}

/// An honest change by the member, a copy of it with a forged signature, and a later honest
/// change that depends on it.
fn forged_copy(net: &mut Net) -> (SignedChange, SignedChange, Vec<SignedChange>) {
    let (_, genuine) = net
        .member
        .write(|l| l.record_event(produce("honest", "bo")))
        .expect("write");
    let genuine = genuine[0].clone();
    let mut forged = genuine.clone();
    forged.signature = ChangeSignature([9; 64]);
    let later = net
        .member
        .write(|l| l.record_event(produce("later", "bo")))
        .expect("write")
        .1;
    (genuine, forged, later)
}

fn assert_accepted_genuine(
    name: &str,
    r: &Replica,
    genuine: &SignedChange,
    later: &[SignedChange],
) {
    assert!(
        r.ledger().has_change(&genuine.hash()),
        "{name} accepted the genuine change"
    );
    for c in later {
        assert!(
            r.ledger().has_change(&c.hash()),
            "{name} accepted the later change"
        );
    }
    for h in quarantine(r).keys() {
        assert!(
            !r.ledger().has_change(h),
            "{name}: an accepted change stays in quarantine"
        );
    }
}

#[test]
fn forged_copy_in_the_same_batch_does_not_block_the_genuine_change() {
    // An attacker on the path sends a copy of an honest change with a forged signature, next
    // to the genuine one. Whichever comes first in the batch, the genuine copy must be
    // accepted, and both replicas must end alike.
    let mut net = Net::new();
    let (genuine, forged, later) = forged_copy(&mut net);
    let [p0, p1] = &mut net.peers;
    let batch = [vec![forged.clone(), genuine.clone()], later.clone()].concat();
    let r0 = p0.receive(batch).expect("receive");
    let batch = [vec![genuine.clone(), forged.clone()], later.clone()].concat();
    let r1 = p1.receive(batch).expect("receive");
    assert_eq!(r1.applied.len(), 1 + later.len());
    assert_accepted_genuine("peer 1 (genuine first)", p1, &genuine, &later);
    assert_accepted_genuine("peer 0 (forged first)", p0, &genuine, &later);
    assert_eq!(r0.waiting, 0, "{r0:?}");
    assert_converged(&[&net.peers[0], &net.peers[1], &net.member]);
}

#[test]
fn forged_copy_received_earlier_leaves_no_trace_once_the_genuine_change_arrives() {
    // The forged copy arrives alone first at the admin and is quarantined; the genuine one
    // arrives later. A peer gets the genuine change first and the forged copy after. Both
    // must end with the same heads and the same quarantine.
    let mut net = Net::new();
    let (genuine, forged, later) = forged_copy(&mut net);
    let first = net.admin.receive(vec![forged.clone()]).expect("receive");
    assert_eq!(
        first.refused,
        vec![(
            forged.hash(),
            Rejection::Signature {
                problem: SignatureProblem::BadSignature
            }
        )]
    );
    net.admin
        .receive([vec![genuine.clone()], later.clone()].concat())
        .expect("receive");
    let p0 = &mut net.peers[0];
    p0.receive([vec![genuine.clone()], later.clone()].concat())
        .expect("receive");
    p0.receive(vec![forged.clone()]).expect("receive");
    sync(&mut net.peers[0], &net.admin);
    assert_accepted_genuine("peer 0 (genuine first)", &net.peers[0], &genuine, &later);
    assert_accepted_genuine("admin (forged first)", &net.admin, &genuine, &later);
    assert_converged(&[&net.admin, &net.peers[0]]);
}

// ---------------------------------------------------------------------------------------------
// Authorship
// ---------------------------------------------------------------------------------------------

#[test]
fn change_claiming_another_members_actor_is_refused() {
    let mut net = Net::new();
    let network = net.admin.network();
    let bad_sig = Rejection::Signature {
        problem: SignatureProblem::BadSignature,
    };
    let honest = net.honest_traffic("h");
    let member_key = net.member.key().clone();
    let stranger = key();

    // The member writes as the admin's device (the admin's key, a new session suffix).
    let mut f = Forger::new(
        net.admin.ledger(),
        net.admin.device().actor([1; 8]),
        &member_key,
        network,
    );
    let (_, as_admin) = f.record(produce("x-as-admin", "ana"));
    // The member reuses the admin's *current* session actor (a valid seq would collide).
    let mut f = Forger::new(
        net.peers[0].ledger(),
        net.admin.ledger().actor().clone(),
        &member_key,
        network,
    );
    let (_, as_admin_session) = f.record(produce("x-as-admin-session", "ana"));
    // A stranger writes as a peer.
    let mut f = Forger::new(
        net.peers[1].ledger(),
        net.peers[0].device().actor([2; 8]),
        &stranger,
        network,
    );
    let (_, as_peer) = f.record(produce("x-as-peer", "cy"));
    // A stranger admits itself as admin, in the admin's name.
    let f = Forger::new(
        net.admin.ledger(),
        net.admin.device().actor([3; 8]),
        &stranger,
        network,
    );
    let self_admission = f.record_membership(&MembershipRecord::Add {
        device: stranger.id(),
        role: Role::Admin,
        agent: "eve".into(),
        invite: None,
    });
    // An actor that is no device at all (16 bytes), signed by a member.
    let mut f = Forger::new(
        net.peers[0].ledger(),
        ActorId::from(vec![4u8; 16]),
        &member_key,
        network,
    );
    let (_, not_a_device) = f.record(produce("x-not-a-device", "bo"));
    // 40 bytes, but the session part is fine and the key part is someone else's: the same as
    // the first case with the member's key as key part and the admin's key signing.
    let mut f = Forger::new(
        net.member.ledger(),
        net.member.device().actor([5; 8]),
        net.admin.key(),
        network,
    );
    let (_, admin_as_member) = f.record(produce("x-admin-as-member", "bo"));

    let bad = vec![
        (as_admin, bad_sig.clone()),
        (as_admin_session, bad_sig.clone()),
        (as_peer, bad_sig.clone()),
        (self_admission, bad_sig.clone()),
        (
            not_a_device,
            Rejection::Signature {
                problem: SignatureProblem::ActorNotADevice,
            },
        ),
        (admin_as_member, bad_sig),
    ];
    deliver_everywhere(&mut net.all(), &honest, &bad);
    assert!(net.admin.member(&stranger.id()).is_none());
    assert_history_verifies(&net.admin);
}

#[test]
fn changes_from_a_stranger_are_refused() {
    let mut net = Net::new();
    let network = net.admin.network();
    let honest = net.honest_traffic("h");
    let stranger_key = key();
    let stranger = stranger_key.id();

    // The stranger can build a read-only replica from the public history, but not write.
    let mut own = join(&net.admin, stranger_key.clone());
    assert_eq!(own.role(), None);
    let before = heads(&own);
    assert!(not_allowed(
        own.write(|l| l.record_event(produce("s", "eve")))
    ));
    assert!(not_allowed(own.add_member(
        stranger,
        Role::Admin,
        "eve".into()
    )));
    assert!(not_allowed(own.invite_device(
        stranger,
        Role::Admin,
        None,
        LATER
    )));
    assert_eq!(heads(&own), before, "a refused write writes nothing");

    let mut f = Forger::new(
        net.admin.ledger(),
        stranger_key.session_actor().expect("actor"),
        &stranger_key,
        network,
    );
    let (_, s1) = f.record(produce("s1", "eve"));
    let (_, s2) = f.record(produce("s2", "eve"));
    let self_admission = Forger::new(
        net.peers[0].ledger(),
        stranger_key.session_actor().expect("actor"),
        &stranger_key,
        network,
    )
    .record_membership(&MembershipRecord::Add {
        device: stranger,
        role: Role::Admin,
        agent: "eve".into(),
        invite: None,
    });

    // The stranger's own network: its genesis and a change on it, both signed for *this*
    // network so that they pass the signature check.
    let (other, _) =
        Replica::create_network("other", stranger_key.clone(), Agent::person("zed", "Zed"))
            .expect("create");
    let other_history = other.signed_changes_since(&[]);
    let resign = |c: &SignedChange| SignedChange {
        change: c.change.clone(),
        signature: stranger_key.sign_change(&network, &c.hash()),
    };
    let foreign_genesis = resign(&other_history[0]);
    let foreign_child = resign(&other_history[1]);
    // Another network's change signed for that network.
    let foreign_signed_for_its_network = other
        .signed_changes_since(&[])
        .into_iter()
        .nth(1)
        .expect("a second change");
    // It has the same hash as foreign_child, so it goes to a replica that has not seen it.

    let not_a_member = Rejection::NotAMember { device: stranger };
    let bad = vec![
        (s1.clone(), not_a_member.clone()),
        (
            s2.clone(),
            Rejection::DependsOnRefused {
                dependency: s1.hash().to_string(),
            },
        ),
        (self_admission, not_a_member.clone()),
        (foreign_genesis.clone(), Rejection::NotOfThisNetwork),
        (
            foreign_child,
            Rejection::DependsOnRefused {
                dependency: foreign_genesis.hash().to_string(),
            },
        ),
    ];
    let [p0, p1] = &mut net.peers;
    deliver_everywhere(
        &mut [&mut net.admin, &mut net.member, p0, p1, &mut own],
        &honest,
        &bad,
    );
    assert!(net.admin.member(&stranger).is_none());

    // A fresh replica sees another network's change, signed for that network, as a bad
    // signature (the network id is part of what is signed).
    let mut fresh = join(&net.peers[0], key());
    let receipt = fresh
        .receive(vec![foreign_signed_for_its_network.clone()])
        .expect("receive");
    assert_eq!(
        receipt.refused,
        vec![(
            foreign_signed_for_its_network.hash(),
            Rejection::Signature {
                problem: SignatureProblem::BadSignature
            }
        )]
    );
    assert_history_verifies(&net.peers[1]);
}

#[test]
fn membership_records_need_an_admin() {
    let mut net = Net::new();
    let network = net.admin.network();
    let honest = net.honest_traffic("h");
    let member_key = net.member.key().clone();
    let member = member_key.id();
    assert!(not_allowed(net.member.add_member(
        member,
        Role::Admin,
        "bo".into()
    )));
    assert!(not_allowed(net.member.remove_member(net.admin.device())));
    assert!(not_allowed(net.member.invite_device(
        member,
        Role::Admin,
        None,
        LATER
    )));
    assert!(not_allowed(net.member.invite_bearer(
        Role::Admin,
        None,
        LATER
    )));

    let f = Forger::new(
        net.member.ledger(),
        member_key.session_actor().expect("actor"),
        &member_key,
        network,
    );
    let promote = f.record_membership(&MembershipRecord::Add {
        device: member,
        role: Role::Admin,
        agent: "bo".into(),
        invite: None,
    });
    let remove_admin = f.record_membership(&MembershipRecord::Remove {
        device: net.admin.device(),
    });
    let second_genesis = f.record_membership(&MembershipRecord::Genesis {
        network_name: "mine".into(),
        creator: member,
        agent: "bo".into(),
        schema: 2,
    });
    // A message that starts like a record but is not one.
    let malformed = {
        let mut doc = automerge::Automerge::load(&net.member.ledger().save())
            .expect("load")
            .with_actor(member_key.session_actor().expect("actor"));
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "x", 1).expect("put");
        tx.commit_with(
            CommitOptions::default()
                .with_message(format!("{}{{not json", membership::RECORD_PREFIX)),
        );
        let change = doc.get_last_local_change().expect("change");
        let signature = member_key.sign_change(&network, &change.hash());
        SignedChange { change, signature }
    };
    let detail = match MembershipRecord::from_message(malformed.change.message()) {
        Some(Err(d)) => d,
        other => panic!("expected a malformed record, got {other:?}"),
    };

    let not_admin = Rejection::NotAnAdmin { device: member };
    let bad = vec![
        (promote, not_admin.clone()),
        (remove_admin, not_admin),
        (
            second_genesis,
            Rejection::MalformedRecord {
                detail: "a genesis record in a change that has dependencies".into(),
            },
        ),
        (malformed, Rejection::MalformedRecord { detail }),
    ];
    deliver_everywhere(&mut net.all(), &honest, &bad);
    for r in net.all() {
        assert_eq!(r.member(&member).map(|m| m.role), Some(Role::Member));
        assert_eq!(r.role().map(|r| r >= Role::Member), Some(true));
    }
}

// ---------------------------------------------------------------------------------------------
// Observers and removed members
// ---------------------------------------------------------------------------------------------

#[test]
fn observer_cannot_write() {
    let mut net = Net::new();
    let network = net.admin.network();
    let observer_key = key();
    let observer = observer_key.id();
    let added = net
        .admin
        .add_member(observer, Role::Observer, "eve".into())
        .expect("add observer");
    let [p0, p1] = &mut net.peers;
    for r in [&mut net.member, p0, p1] {
        let receipt = r.receive(added.clone()).expect("receive");
        assert_eq!(receipt.applied.len(), 1);
    }
    let mut obs = join(&net.admin, observer_key.clone());
    assert_eq!(obs.role(), Some(Role::Observer));
    assert!(!Role::Observer.can_write());

    let before = heads(&obs);
    let refused = obs.write(|l| l.record_event(produce("o", "eve")));
    assert!(
        not_allowed(refused),
        "an observer's own replica refuses its writes"
    );
    assert!(not_allowed(
        obs.write(|l| l.create(Agent::person("zz", "Zz")))
    ));
    assert!(not_allowed(obs.add_member(
        observer,
        Role::Admin,
        "eve".into()
    )));
    assert!(not_allowed(obs.invite_bearer(Role::Member, None, LATER)));
    assert_eq!(heads(&obs), before, "nothing written");

    let honest = net.honest_traffic("h");
    let mut f = Forger::new(
        obs.ledger(),
        observer_key.session_actor().expect("actor"),
        &observer_key,
        network,
    );
    let promote = f.record_membership(&MembershipRecord::Add {
        device: observer,
        role: Role::Member,
        agent: "eve".into(),
        invite: None,
    });
    let (_, write) = f.record(produce("o1", "eve"));
    let (_, write2) = f.record(produce("o2", "eve"));
    let read_only = Rejection::ReadOnly { device: observer };
    let bad = vec![
        (write.clone(), read_only.clone()),
        (promote, read_only),
        (
            write2,
            Rejection::DependsOnRefused {
                dependency: write.hash().to_string(),
            },
        ),
    ];
    let [p0, p1] = &mut net.peers;
    deliver_everywhere(
        &mut [&mut net.admin, &mut net.member, p0, p1, &mut obs],
        &honest,
        &bad,
    );
    assert_eq!(obs.role(), Some(Role::Observer));
    assert_eq!(
        net.peers[0].member(&observer).map(|m| m.role),
        Some(Role::Observer)
    );
    assert_history_verifies(&obs);
}

#[test]
fn removed_member_is_refused_after_removal_only() {
    let mut net = Net::new();
    let network = net.admin.network();
    let member_key = net.member.key().clone();
    let member = member_key.id();

    // m1: before the removal, and in its causal past.
    let (e1, m1) = net
        .member
        .write(|l| l.record_event(produce("m-1", "bo")))
        .expect("write");
    net.admin.receive(m1.clone()).expect("receive");
    let rm = net.admin.remove_member(member).expect("remove");
    assert!(net.admin.member(&member).is_none());
    // m2: concurrent with the removal (the member has not seen it yet).
    let (e2, m2) = net
        .member
        .write(|l| l.record_event(produce("m-2", "bo")))
        .expect("write");
    let unaware = net.member.ledger().save();
    // The member learns of its removal: its own replica then refuses to write.
    let receipt = net.member.receive(rm.clone()).expect("receive");
    assert_eq!(receipt.applied.len(), 1);
    assert_eq!(net.member.role(), None);
    assert!(not_allowed(
        net.member.write(|l| l.record_event(produce("m-x", "bo")))
    ));

    // m3: written after seeing the removal (depends on it), by a patched client.
    let mut f = Forger::new(
        net.member.ledger(),
        member_key.session_actor().expect("actor"),
        &member_key,
        network,
    );
    let (e3, m3) = f.record(produce("m-3", "bo"));
    assert!(m3.change.deps().contains(&rm[0].hash()));
    // m5: builds on m3.
    let (_, m5) = f.record(produce("m-5", "bo"));
    // m4: written after the removal by wall clock, but on a branch that ignores it: nothing
    // in its causal past removes the member, but the removal is concurrent with it.
    let unaware = Ledger::load(&unaware, member_key.session_actor().expect("actor")).expect("load");
    let mut f = Forger::new(
        &unaware,
        member_key.session_actor().expect("actor"),
        &member_key,
        network,
    );
    let (e4, m4) = f.record(produce("m-4", "bo"));
    assert!(!m4.change.deps().contains(&rm[0].hash()));

    let honest: Vec<SignedChange> = [m1, rm.clone()].concat();
    // Strong removal (docs/security.md): the member's changes concurrent with its removal
    // (m2, made before it learned of it; m4, on a branch that ignores it) are refused on
    // every replica, however they arrive.
    let concurrent = Rejection::RemovedConcurrently {
        device: member,
        removal: rm[0].hash().to_string(),
    };
    let mut bad = vec![
        (m3.clone(), Rejection::Removed { device: member }),
        (
            m5,
            Rejection::DependsOnRefused {
                dependency: m3.hash().to_string(),
            },
        ),
    ];
    // m4 was written on top of m2, so it is refused for depending on it.
    let m2_hash = m2[0].hash();
    bad.extend(m2.into_iter().map(|c| (c, concurrent.clone())));
    bad.push((
        m4,
        Rejection::DependsOnRefused {
            dependency: m2_hash.to_string(),
        },
    ));
    deliver_everywhere(&mut net.all(), &honest, &bad);

    for r in net.all() {
        assert!(r.member(&member).is_none(), "removed everywhere");
        for e in [&e2, &e4] {
            assert!(
                r.ledger().event(e).is_none(),
                "{e}: concurrent with the removal"
            );
        }
        let e = &e1;
        assert!(
            r.ledger().event(e).is_some(),
            "{e}: an accepted change of the member"
        );
        let p = r.provenance(e).expect("provenance");
        assert_eq!(p.device, member);
        let m = p.member.expect("a member when it recorded the event");
        assert_eq!((m.role, m.agent.as_str()), (Role::Member, "bo"));
        assert!(
            r.ledger().event(&e3).is_none(),
            "the refused event is not there"
        );
        assert!(r.ledger().resource(&Id::from("m-3")).is_none());
        assert!(r.ledger().resource(&Id::from("m-4")).is_none());
    }
    assert_history_verifies(&net.peers[0]);

    // Re-admission: an add after the removal makes the member a member again.
    let readd = net
        .admin
        .add_member(member, Role::Member, "bo".into())
        .expect("re-add");
    net.member.receive(readd).expect("receive");
    assert_eq!(net.member.role(), Some(Role::Member));
    let (_, back) = net
        .member
        .write(|l| l.record_event(produce("m-6", "bo")))
        .expect("write again");
    sync(&mut net.peers[1], &net.admin);
    let receipt = net.peers[1].receive(back).expect("receive");
    assert_eq!((receipt.applied.len(), receipt.refused.len()), (1, 0));
}

// ---------------------------------------------------------------------------------------------
// Batching, replays and duplicates
// ---------------------------------------------------------------------------------------------

#[test]
fn refusals_of_a_chain_do_not_depend_on_batching() {
    // s1 <- s2, by a stranger. One replica gets both in one batch, one gets s1 then s2, one
    // gets s2 then s1: all must end with the same quarantine and nothing waiting.
    let mut net = Net::new();
    let network = net.admin.network();
    let stranger_key = key();
    let mut f = Forger::new(
        net.admin.ledger(),
        stranger_key.session_actor().expect("actor"),
        &stranger_key,
        network,
    );
    let (_, s1) = f.record(produce("s1", "eve"));
    let (_, s2) = f.record(produce("s2", "eve"));
    let expected: BTreeMap<ChangeHash, Rejection> = [
        (
            s1.hash(),
            Rejection::NotAMember {
                device: stranger_key.id(),
            },
        ),
        (
            s2.hash(),
            Rejection::DependsOnRefused {
                dependency: s1.hash().to_string(),
            },
        ),
    ]
    .into_iter()
    .collect();

    let together = net
        .admin
        .receive(vec![s2.clone(), s1.clone()])
        .expect("receive");
    assert_eq!(together.waiting, 0);

    let [p0, p1] = &mut net.peers;
    p0.receive(vec![s2.clone()]).expect("receive");
    let last = p0.receive(vec![s1.clone()]).expect("receive");
    assert_eq!(last.waiting, 0, "s2 then s1: nothing left waiting");

    p1.receive(vec![s1.clone()]).expect("receive");
    let last = p1.receive(vec![s2.clone()]).expect("receive");
    assert_eq!(
        last.waiting, 0,
        "s1 then s2: a change built on a refused change must be refused, not wait forever: {last:?}"
    );

    for (name, r) in [
        ("admin", &net.admin),
        ("peer 0", &net.peers[0]),
        ("peer 1", &net.peers[1]),
    ] {
        assert_eq!(quarantine(r), expected, "{name}");
    }
    assert_converged(&[&net.admin, &net.peers[0], &net.peers[1]]);
}

#[test]
fn replays_and_duplicates_are_ignored() {
    let mut net = Net::new();
    let network = net.admin.network();
    let honest = net.honest_traffic("h");
    let peer = &mut net.peers[0];

    // Duplicates inside one batch.
    let doubled: Vec<SignedChange> = honest.iter().flat_map(|c| [c.clone(), c.clone()]).collect();
    let receipt = peer.receive(doubled.clone()).expect("receive");
    assert_eq!(hashes(&receipt.applied), hashes(&honest));
    assert_eq!(receipt.applied.len(), honest.len(), "each applied once");
    assert_eq!(receipt.duplicates, honest.len());
    let (h, s) = (heads(peer), peer.ledger().snapshot());
    let events = peer.ledger().event_count();

    // The same batch again, and the whole history again.
    let receipt = peer.receive(doubled.clone()).expect("replay");
    assert!(receipt.applied.is_empty() && receipt.refused.is_empty());
    assert_eq!(receipt.duplicates, doubled.len());
    let history = peer.signed_changes_since(&[]);
    let receipt = peer.receive(history.clone()).expect("replay");
    assert_eq!(receipt.duplicates, history.len());
    assert!(receipt.applied.is_empty() && receipt.refused.is_empty());
    assert_eq!((heads(peer), peer.ledger().snapshot()), (h.clone(), s));
    assert_eq!(peer.ledger().event_count(), events);

    // A replayed refused change stays refused once (it is a duplicate).
    let stranger_key = key();
    let mut f = Forger::new(
        peer.ledger(),
        stranger_key.session_actor().expect("actor"),
        &stranger_key,
        network,
    );
    let (_, s1) = f.record(produce("s1", "eve"));
    let first = peer.receive(vec![s1.clone(), s1.clone()]).expect("receive");
    assert_eq!((first.refused.len(), first.duplicates), (1, 1));
    let q = quarantine(peer);
    let again = peer.receive(vec![s1]).expect("replay");
    assert_eq!((again.refused.len(), again.duplicates), (0, 1));
    assert_eq!(quarantine(peer), q);
    assert_eq!(heads(peer), h);

    // A change whose dependency has not arrived waits; a replay of it while it waits is a
    // duplicate; when the dependency arrives both are applied.
    let c1 = net
        .member
        .write(|l| l.record_event(produce("w1", "bo")))
        .expect("write")
        .1;
    let c2 = net
        .member
        .write(|l| l.record_event(produce("w2", "bo")))
        .expect("write")
        .1;
    let peer = &mut net.peers[0];
    let receipt = peer.receive(c2.clone()).expect("receive");
    assert_eq!((receipt.waiting, receipt.applied.len()), (1, 0));
    let receipt = peer.receive(c2.clone()).expect("replay while waiting");
    assert_eq!((receipt.waiting, receipt.duplicates), (1, 1));
    let receipt = peer.receive(c1.clone()).expect("receive");
    assert_eq!(receipt.waiting, 0);
    assert_eq!(hashes(&receipt.applied), hashes(&[c1, c2].concat()));
    sync(&mut net.member, &net.peers[0]);
    assert_eq!(heads(&net.member), heads(&net.peers[0]));
    assert_eq!(
        net.member.ledger().snapshot(),
        net.peers[0].ledger().snapshot()
    );
}

// ---------------------------------------------------------------------------------------------
// Invites
// ---------------------------------------------------------------------------------------------

fn invite_err<T: std::fmt::Debug>(r: Result<T>) -> InviteError {
    match r {
        Err(Error::Invite(e)) => e,
        other => panic!("expected an invite error, got {other:?}"),
    }
}

#[test]
fn device_invites_work_once_and_only_for_their_device() {
    let mut net = Net::new();
    let newcomer = key();
    let invite = net
        .admin
        .invite_device(newcomer.id(), Role::Member, None, LATER)
        .expect("invite");
    assert_eq!(Invite::from_text(&invite.to_text()).expect("parse"), invite);
    let before = heads(&net.admin);

    let someone_else = key();
    let e = invite_err(net.admin.redeem_invite(
        &invite,
        someone_else.id(),
        None,
        Some(Agent::person("gus", "Gus")),
        NOW,
    ));
    assert_eq!(e, InviteError::WrongDevice);
    // The invite names no agent: the newcomer must describe one.
    let e = invite_err(
        net.admin
            .redeem_invite(&invite, newcomer.id(), None, None, NOW),
    );
    assert!(matches!(e, InviteError::Malformed(_)), "{e:?}");
    assert_eq!(
        heads(&net.admin),
        before,
        "a refused redemption writes nothing"
    );

    let signed = net
        .admin
        .redeem_invite(
            &invite,
            newcomer.id(),
            None,
            Some(Agent::person("gus", "Gus")),
            NOW,
        )
        .expect("redeem");
    assert_eq!(signed.len(), 2, "the new agent, then the membership record");
    let joined = join(&net.admin, newcomer.clone());
    let me = joined.member(&newcomer.id()).expect("a member");
    assert_eq!(me.role, Role::Member);
    assert_eq!(me.agent.as_str(), "gus");
    assert_eq!(me.added_by, net.admin.device());
    assert_eq!(me.invite.as_deref(), Some(invite.nonce.as_str()));

    // Reuse, on the redeeming admin and on another admin that has the redemption.
    let after = heads(&net.admin);
    let e = invite_err(net.admin.redeem_invite(
        &invite,
        newcomer.id(),
        None,
        Some(Agent::person("gus2", "Gus")),
        NOW,
    ));
    assert_eq!(
        e,
        InviteError::AlreadyRedeemed {
            nonce: invite.nonce.clone()
        }
    );
    assert_eq!(heads(&net.admin), after);
    let second_admin_key = net.peers[0].key().clone();
    net.admin
        .add_member(second_admin_key.id(), Role::Admin, "cy".into())
        .expect("promote");
    sync(&mut net.peers[0], &net.admin);
    assert_eq!(net.peers[0].role(), Some(Role::Admin));
    let e = invite_err(net.peers[0].redeem_invite(
        &invite,
        newcomer.id(),
        None,
        Some(Agent::person("gus3", "Gus")),
        NOW,
    ));
    assert!(matches!(e, InviteError::AlreadyRedeemed { .. }), "{e:?}");

    // Every replica sees the newcomer alike, and accepts its writes.
    let mut joined = joined;
    sync(&mut joined, &net.admin);
    let (_, w) = joined
        .write(|l| l.record_event(produce("g", "gus")))
        .expect("the newcomer writes");
    for r in net.all() {
        sync(r, &joined);
        assert!(r.ledger().has_change(&w[0].hash()));
        assert_eq!(r.member(&newcomer.id()), Some(me.clone()));
    }
}

#[test]
fn bearer_invites_need_their_secret_and_work_once() {
    let mut net = Net::new();
    let (invite, secret) = net
        .admin
        .invite_bearer(Role::Observer, Some("fay".into()), LATER)
        .expect("invite");
    assert_eq!(format!("{secret:?}"), "BearerSecret(<redacted>)");
    let (alice, bob) = (key(), key());
    let before = heads(&net.admin);
    let e = invite_err(
        net.admin
            .redeem_invite(&invite, alice.id(), None, None, NOW),
    );
    assert_eq!(e, InviteError::WrongSecret);
    let mut wrong = secret.clone();
    wrong.0[0] ^= 1;
    let e = invite_err(
        net.admin
            .redeem_invite(&invite, alice.id(), Some(&wrong), None, NOW),
    );
    assert_eq!(e, InviteError::WrongSecret);
    assert_eq!(heads(&net.admin), before);

    net.admin
        .redeem_invite(&invite, alice.id(), Some(&secret), None, NOW)
        .expect("redeem");
    let m = net.admin.member(&alice.id()).expect("member");
    assert_eq!((m.role, m.agent.as_str()), (Role::Observer, "fay"));
    let e = invite_err(
        net.admin
            .redeem_invite(&invite, bob.id(), Some(&secret), None, NOW),
    );
    assert_eq!(
        e,
        InviteError::AlreadyRedeemed {
            nonce: invite.nonce.clone()
        }
    );
    assert!(net.admin.member(&bob.id()).is_none());
}

#[test]
fn concurrent_redemptions_of_one_bearer_invite_are_seen_alike() {
    // Two admins that have not synced can both redeem one bearer invite (the ledger cannot
    // stop that offline); every replica then sees both newcomers, identically.
    let mut net = Net::new();
    let second = net.peers[0].key().id();
    net.admin
        .add_member(second, Role::Admin, "cy".into())
        .expect("promote");
    sync(&mut net.peers[0], &net.admin);
    let (invite, secret) = net
        .admin
        .invite_bearer(Role::Member, Some("fay".into()), LATER)
        .expect("invite");
    let (x, y) = (key(), key());
    let a = net
        .admin
        .redeem_invite(&invite, x.id(), Some(&secret), None, NOW)
        .expect("redeem at admin");
    let b = net.peers[0]
        .redeem_invite(&invite, y.id(), Some(&secret), None, NOW)
        .expect("redeem at second admin");
    assert_eq!((a.len(), b.len()), (1, 1));
    let mut all = net.admin.signed_changes_since(&[]);
    all.extend(net.peers[0].signed_changes_since(&[]));
    for r in net.all() {
        r.receive(all.clone()).expect("receive");
    }
    let views: Vec<&Replica> = vec![&net.admin, &net.member, &net.peers[0], &net.peers[1]];
    assert_converged(&views);
    for r in views {
        assert!(r.member(&x.id()).is_some() && r.member(&y.id()).is_some());
    }
    let e = invite_err(
        net.admin
            .redeem_invite(&invite, key().id(), Some(&secret), None, NOW),
    );
    assert!(matches!(e, InviteError::AlreadyRedeemed { .. }));
}

#[test]
fn expired_invites_are_refused() {
    let mut net = Net::new();
    let newcomer = key();
    let invite = net
        .admin
        .invite_device(newcomer.id(), Role::Member, Some("eve".into()), NOW)
        .expect("invite");
    let before = heads(&net.admin);
    for now in [NOW, NOW + 1, u64::MAX] {
        let e = invite_err(
            net.admin
                .redeem_invite(&invite, newcomer.id(), None, None, now),
        );
        assert_eq!(
            e,
            InviteError::Expired {
                expired_at: NOW,
                now
            }
        );
    }
    assert_eq!(heads(&net.admin), before);
    // One second before expiry it still works.
    net.admin
        .redeem_invite(&invite, newcomer.id(), None, None, NOW - 1)
        .expect("redeem in time");
    assert_eq!(
        net.admin.member(&newcomer.id()).map(|m| m.role),
        Some(Role::Member)
    );
}

#[test]
fn tampered_invites_are_refused() {
    let mut net = Net::new();
    let newcomer = key();
    let invite = net
        .admin
        .invite_device(newcomer.id(), Role::Member, Some("eve".into()), LATER)
        .expect("invite");
    invite
        .verify_signature()
        .expect("a genuine invite verifies");
    let before = heads(&net.admin);

    // Role raised to admin in the text form.
    let text = invite.to_text();
    let (prefix, body) = text.split_at(text.find(':').expect("prefix") + 1);
    let mut json: serde_json::Value =
        serde_json::from_slice(&hex::decode(body).expect("hex")).expect("json");
    assert_eq!(json["role"], "member");
    json["role"] = "admin".into();
    let raised = Invite::from_text(&format!(
        "{prefix}{}",
        hex::encode(serde_json::to_vec(&json).expect("json"))
    ))
    .expect("still parses");
    assert_eq!(raised.role, Role::Admin);

    let mut flipped = invite.clone();
    let mut sig = hex::decode(&flipped.signature).expect("hex");
    sig[5] ^= 0x80;
    flipped.signature = hex::encode(sig);
    let mut later = invite.clone();
    later.expires_at = u64::MAX;
    let mut other_agent = invite.clone();
    other_agent.agent = Some("fay".into());
    let mut for_someone_else = invite.clone();
    let thief = key();
    for_someone_else.audience = InviteAudience::Device { device: thief.id() };
    let mut other_issuer = invite.clone();
    other_issuer.issuer = net.peers[0].device();
    let mut no_signature = invite.clone();
    no_signature.signature = "zz".into();

    for (what, t, redeemer) in [
        ("role raised", &raised, newcomer.id()),
        ("signature flipped", &flipped, newcomer.id()),
        ("expiry moved", &later, newcomer.id()),
        ("agent changed", &other_agent, newcomer.id()),
        ("audience changed", &for_someone_else, thief.id()),
        ("issuer changed", &other_issuer, newcomer.id()),
        ("signature not hex", &no_signature, newcomer.id()),
    ] {
        assert_eq!(
            t.verify_signature(),
            Err(InviteError::BadSignature),
            "{what}"
        );
        let e = invite_err(net.admin.redeem_invite(t, redeemer, None, None, NOW));
        assert_eq!(e, InviteError::BadSignature, "{what}");
    }
    let mut v2 = invite.clone();
    v2.version = 2;
    assert!(matches!(
        invite_err(net.admin.redeem_invite(&v2, newcomer.id(), None, None, NOW)),
        InviteError::Malformed(_)
    ));
    for text in ["", "reflow-invite-v1:zz", "hello", "reflow-invite-v1:7b7d"] {
        assert!(
            matches!(Invite::from_text(text), Err(InviteError::Malformed(_))),
            "{text}"
        );
    }
    assert_eq!(heads(&net.admin), before, "nothing written");
    assert!(net.admin.member(&thief.id()).is_none());
    assert!(net.admin.member(&newcomer.id()).is_none());
    // The genuine invite still works (the failed attempts did not use it up).
    net.admin
        .redeem_invite(&invite, newcomer.id(), None, None, NOW)
        .expect("redeem");
}

#[test]
fn invites_for_another_network_are_refused() {
    let mut net = Net::new();
    let (other, _) =
        Replica::create_network("other", key(), Agent::person("zed", "Zed")).expect("create");
    let newcomer = key();
    let invite = other
        .invite_device(newcomer.id(), Role::Member, None, LATER)
        .expect("invite");
    let e = invite_err(net.admin.redeem_invite(
        &invite,
        newcomer.id(),
        None,
        Some(Agent::person("gus", "Gus")),
        NOW,
    ));
    assert_eq!(e, InviteError::WrongNetwork(other.network().to_string()));
    // The invite changed to name this network no longer verifies.
    let mut moved = invite.clone();
    moved.network = net.admin.network();
    let e = invite_err(net.admin.redeem_invite(
        &moved,
        newcomer.id(),
        None,
        Some(Agent::person("gus", "Gus")),
        NOW,
    ));
    assert_eq!(e, InviteError::BadSignature);
    assert!(net.admin.member(&newcomer.id()).is_none());
}

#[test]
fn invites_of_a_former_admin_are_refused() {
    let mut net = Net::new();
    let second = net.peers[0].device();
    net.admin
        .add_member(second, Role::Admin, "cy".into())
        .expect("promote");
    sync(&mut net.peers[0], &net.admin);
    let newcomer = key();
    let invite = net.peers[0]
        .invite_device(newcomer.id(), Role::Member, Some("eve".into()), LATER)
        .expect("invite");
    let rm = net.admin.remove_member(second).expect("remove");
    let e = invite_err(
        net.admin
            .redeem_invite(&invite, newcomer.id(), None, None, NOW),
    );
    assert_eq!(e, InviteError::IssuerNotAdmin);
    net.peers[0].receive(rm).expect("receive");
    assert!(not_allowed(net.peers[0].invite_device(
        newcomer.id(),
        Role::Member,
        None,
        LATER
    )));
}

// ---------------------------------------------------------------------------------------------
// Keys, provenance, durability
// ---------------------------------------------------------------------------------------------

#[test]
fn device_key_debug_hides_the_secret() {
    let k = key();
    let secret = hex::encode(*k.secret_bytes());
    let debug = format!("{k:?} {k:#?}");
    assert!(!debug.contains(&secret), "{debug}");
    assert!(!debug.contains(&secret[..16]), "{debug}");
    assert!(debug.contains("redacted"));
    let restored = DeviceKey::from_secret_bytes(&k.secret_bytes());
    assert_eq!(restored.id(), k.id());
    let (r, _) = Replica::create_network("n", k, Agent::person("a", "A")).expect("create");
    let debug = format!("{r:?}");
    assert!(!debug.contains(&secret[..16]), "{debug}");
    // A device actor names its device.
    let actor = r.device().actor([0xab; 8]);
    assert_eq!(DeviceId::of_actor(&actor), Some(r.device()));
    assert_eq!(DeviceId::of_actor(&ActorId::from(vec![1u8; 16])), None);
    assert_eq!(
        r.device().to_string().parse::<DeviceId>().expect("parse"),
        r.device()
    );
}

#[test]
fn provenance_names_the_signing_device_and_its_agent() {
    let mut net = Net::new();
    let (e_admin, a) = net
        .admin
        .write(|l| l.record_event(produce("pa", "ana")))
        .expect("write");
    let (e_member, b) = net
        .member
        .write(|l| l.record_event(produce("pb", "bo")))
        .expect("write");
    let all = [a, b].concat();
    for r in net.all() {
        r.receive(all.clone()).expect("receive");
    }
    let admin = net.admin.device();
    let member = net.member.device();
    let expected_admin = net.peers[1].provenance(&e_admin).expect("provenance");
    for r in net.all() {
        let p = r.provenance(&e_admin).expect("provenance");
        assert_eq!(p, expected_admin, "the same provenance on every replica");
        assert_eq!(p.device, admin);
        let m = p.member.expect("member");
        assert_eq!(
            (m.role, m.agent.as_str(), m.added_by),
            (Role::Admin, "ana", admin)
        );
        let p = r.provenance(&e_member).expect("provenance");
        assert_eq!(p.event, e_member);
        assert_eq!(p.device, member);
        let m = p.member.expect("member");
        assert_eq!(
            (m.role, m.agent.as_str(), m.added_by),
            (Role::Member, "bo", admin)
        );
        assert_eq!(
            p.change,
            r.ledger()
                .event_change(&e_member)
                .expect("change")
                .to_string()
        );
        assert!(r.provenance(&Id::from("1@nope")).is_none());
    }
}

#[test]
fn durable_replica_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.redb");
    let store = Store::open(&path).expect("open");
    let device = store.device_key().expect("key");
    assert_eq!(
        store.device_key().expect("key").id(),
        device.id(),
        "the key is stored"
    );
    let (replica, signed) =
        Replica::create_network("market", device.clone(), Agent::person("ana", "Ana"))
            .expect("create");
    let network = replica.network();
    let mut durable = store.create_replica(replica, &signed).expect("store");
    durable
        .write(|l| {
            l.create(Unit::new("kg", "kilogram", "kg"))?;
            l.create(Agent::person("bo", "Bo"))?;
            l.create(Agent::person("eve", "Eve"))
        })
        .expect("setup");
    let member_key = key();
    durable
        .add_member(member_key.id(), Role::Member, "bo".into())
        .expect("add");
    let e1 = durable
        .record_event(produce("apples", "ana"))
        .expect("event");

    let mut member = join(durable.replica(), member_key);
    let (e2, honest) = member
        .write(|l| l.record_event(produce("pears", "bo")))
        .expect("write");
    let stranger = key();
    let mut f = Forger::new(
        durable.ledger(),
        stranger.session_actor().expect("actor"),
        &stranger,
        network,
    );
    let (_, bad) = f.record(produce("stolen", "eve"));
    let receipt = durable
        .receive([vec![bad.clone()], honest.clone()].concat())
        .expect("receive");
    assert_eq!(hashes(&receipt.applied), hashes(&honest));
    assert_eq!(
        receipt.refused,
        vec![(
            bad.hash(),
            Rejection::NotAMember {
                device: stranger.id()
            }
        )]
    );

    let before_heads = heads(durable.replica());
    let before_members = durable.replica().members();
    let before_quarantine = quarantine(durable.replica());
    let before_snapshot = durable.ledger().snapshot();
    let before_provenance = durable.replica().provenance(&e2).expect("provenance");
    drop(durable);
    drop(store);

    let store = Store::open(&path).expect("reopen");
    let device_again = store.device_key().expect("key");
    assert_eq!(device_again.id(), device.id());
    let mut reopened = store
        .open_replica(&network, device_again)
        .expect("open replica");
    let r = reopened.replica();
    assert_eq!(heads(r), before_heads);
    assert_eq!(r.members(), before_members);
    assert_eq!(quarantine(r), before_quarantine);
    assert_eq!(r.ledger().snapshot(), before_snapshot);
    assert_eq!(r.provenance(&e2), Some(before_provenance));
    assert_eq!(r.provenance(&e1).map(|p| p.device), Some(device.id()));
    assert_eq!(r.role(), Some(Role::Admin));

    // The refused change stays refused after the reopen.
    let receipt = reopened.receive(vec![bad.clone()]).expect("receive");
    assert_eq!((receipt.duplicates, receipt.refused.len()), (1, 0));

    // The reopened replica's history verifies everywhere: a fresh replica accepts all of it.
    let history = reopened.replica().signed_changes_since(&[]);
    assert!(!hashes(&history).contains(&bad.hash()));
    let n = history.len();
    let (fresh, receipt) = Replica::join(network, key(), history).expect("join");
    assert_eq!(receipt.applied.len(), n);
    assert!(receipt.refused.is_empty());
    assert_eq!(receipt.waiting, 0);
    assert_eq!(heads(&fresh), before_heads);
    assert_eq!(fresh.members(), before_members);

    // It keeps working: a write after the reopen is signed and stored.
    let e3 = reopened
        .record_event(produce("plums", "ana"))
        .expect("write");
    let after = heads(reopened.replica());
    drop(reopened);
    drop(store);
    let store = Store::open(&path).expect("reopen");
    let again = store
        .open_replica(&network, store.device_key().expect("key"))
        .expect("open");
    assert_eq!(heads(again.replica()), after);
    assert!(again.ledger().event(&e3).is_some());
    assert_history_verifies(again.replica());
}

#[test]
fn durable_forged_copy_is_forgotten_once_the_genuine_change_arrives() {
    // A forged copy is quarantined durably; when the genuine change arrives later it is
    // accepted, and neither the live replica nor a reopened one keeps the forged copy as a
    // refusal of a change the ledger holds.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.redb");
    let store = Store::open(&path).expect("open");
    let device = store.device_key().expect("key");
    let (replica, signed) =
        Replica::create_network("market", device, Agent::person("ana", "Ana")).expect("create");
    let network = replica.network();
    let mut durable = store.create_replica(replica, &signed).expect("store");
    durable
        .write(|l| {
            l.create(Unit::new("kg", "kilogram", "kg"))?;
            l.create(Agent::person("bo", "Bo"))
        })
        .expect("setup");
    let member_key = key();
    durable
        .add_member(member_key.id(), Role::Member, "bo".into())
        .expect("add");
    let mut member = join(durable.replica(), member_key);
    let (_, genuine) = member
        .write(|l| l.record_event(produce("pears", "bo")))
        .expect("write");
    let mut forged = genuine[0].clone();
    forged.signature = ChangeSignature([1; 64]);
    let receipt = durable.receive(vec![forged]).expect("receive");
    assert_eq!(receipt.refused.len(), 1);
    let receipt = durable.receive(genuine.clone()).expect("receive");
    assert_eq!(hashes(&receipt.applied), hashes(&genuine));
    let h = genuine[0].hash();
    assert!(
        !quarantine(durable.replica()).contains_key(&h),
        "the live replica still lists the accepted change as refused"
    );
    let before = heads(durable.replica());
    drop(durable);
    drop(store);
    let store = Store::open(&path).expect("reopen");
    let reopened = store
        .open_replica(&network, store.device_key().expect("key"))
        .expect("open");
    assert_eq!(heads(reopened.replica()), before);
    assert!(
        !quarantine(reopened.replica()).contains_key(&h),
        "the reopened replica lists the accepted change as refused"
    );
}
