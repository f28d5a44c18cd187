//! Strong removal and equivocation: verdicts that depend on changes concurrent with the
//! judged one, the same on every replica whatever order the changes arrive in.
//!
//! - A removed admin's hidden branch (it admits a new admin, who writes) concurrent with its
//!   removal is refused everywhere, and so is everything built on it.
//! - Two admins removing each other concurrently: the more senior one's removal stands (the
//!   genesis creator's first), so the network keeps an admin.
//! - A member that signs two different changes with one (actor, seq) is cut off: neither twin
//!   nor anything it signed after stands, on every replica.
//! - So is a member that forks its history (a change on a past without its own earlier one);
//!   an honest device's sessions continue its chain.
//!
//! Each case is delivered to four replicas in four orders and batchings; checked: identical
//! heads, quarantine (hash and reason), members and views; honest changes applied.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use reflow::*;

fn key() -> DeviceKey {
    DeviceKey::generate().expect("OS randomness")
}

fn produce(resource: &str, agent: &str) -> NewEvent {
    EconomicEvent::new(Action::Produce, agent, agent)
        .quantity(1, "kg")
        .creating(ResourceDescription::new(resource, resource))
}

/// ana (genesis admin), dee (admin), bo (member), with their replicas and the shared history.
struct Net {
    ana: Replica,
    dee: Replica,
    bo: Replica,
    history: Vec<SignedChange>,
}

fn net() -> Net {
    let dee_key = key();
    let bo_key = key();
    let (mut ana, mut history) =
        Replica::create_network("market", key(), Agent::person("ana", "Ana")).expect("create");
    let (_, c) = ana
        .write(|l| {
            l.create(Unit::new("kg", "kilogram", "kg"))?;
            l.create(Agent::person("dee", "Dee"))?;
            l.create(Agent::person("bo", "Bo"))?;
            l.create(Agent::person("eve", "Eve"))
        })
        .expect("setup");
    history.extend(c);
    history.extend(
        ana.add_member(dee_key.id(), Role::Admin, "dee".into())
            .expect("dee"),
    );
    history.extend(
        ana.add_member(bo_key.id(), Role::Member, "bo".into())
            .expect("bo"),
    );
    let (mut dee, _) = Replica::join(ana.network(), dee_key, history.clone()).expect("join");
    let (mut bo, _) = Replica::join(ana.network(), bo_key, history.clone()).expect("join");
    // bo's own unit, which the attacks below relabel (a member edits only what it made).
    let (_, c) = bo
        .write(|l| l.create(Unit::new("crate", "crate", "cr")))
        .expect("bo's unit");
    ana.receive(c.clone()).expect("ana");
    dee.receive(c.clone()).expect("dee");
    history.extend(c);
    Net {
        ana,
        dee,
        bo,
        history,
    }
}

fn sorted_heads(r: &Replica) -> Vec<ChangeHash> {
    let mut h = r.ledger().heads();
    h.sort();
    h
}

fn quarantine(r: &Replica) -> BTreeMap<ChangeHash, String> {
    r.quarantine()
        .map(|q| {
            (
                q.change.hash(),
                format!("{:?}", std::mem::discriminant(&q.reason)),
            )
        })
        .collect()
}

/// Deliver `changes` to four fresh replicas of `history` in four orders and batchings and
/// check they agree; returns one of them.
fn deliver_everywhere(
    network: NetworkId,
    history: &[SignedChange],
    changes: &[SignedChange],
) -> Replica {
    let mut reversed = changes.to_vec();
    reversed.reverse();
    let orders: Vec<(&str, Vec<Vec<SignedChange>>)> = vec![
        ("one batch", vec![changes.to_vec()]),
        (
            "one by one",
            changes.iter().map(|c| vec![c.clone()]).collect(),
        ),
        (
            "reversed, one by one",
            reversed.iter().map(|c| vec![c.clone()]).collect(),
        ),
        (
            "reversed, pairs",
            reversed.chunks(2).map(<[SignedChange]>::to_vec).collect(),
        ),
    ];
    let mut out: Vec<(&str, Replica)> = Vec::new();
    for (name, batches) in orders {
        let (mut r, _) = Replica::join(network, key(), history.to_vec()).expect("join");
        for b in batches {
            r.receive(b).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        out.push((name, r));
    }
    let (_, first) = &out[0];
    for (name, r) in &out[1..] {
        assert_eq!(sorted_heads(r), sorted_heads(first), "{name}: heads");
        assert_eq!(quarantine(r), quarantine(first), "{name}: quarantine");
        assert_eq!(r.members(), first.members(), "{name}: members");
        assert_eq!(
            r.ledger().snapshot(),
            first.ledger().snapshot(),
            "{name}: views"
        );
        assert_eq!(
            r.ledger().snapshot(),
            r.ledger().snapshot_from_scratch(),
            "{name}"
        );
    }
    out.swap_remove(0).1
}

fn reason_of(r: &Replica, h: &ChangeHash) -> Option<Rejection> {
    r.quarantine()
        .find(|q| q.change.hash() == *h)
        .map(|q| q.reason.clone())
}

#[test]
fn a_removed_admins_hidden_branch_is_refused_everywhere() {
    let Net {
        mut ana,
        mut dee,
        mut bo,
        history,
    } = net();
    let network = ana.network();
    // dee, offline and about to be removed, admits a device of its own as admin, which
    // records an event; concurrently ana removes dee.
    let eve_key = key();
    let hidden_add = dee
        .add_member(eve_key.id(), Role::Admin, "eve".into())
        .expect("hidden add");
    let mut eve_history = history.clone();
    eve_history.extend(hidden_add.clone());
    let (mut eve, _) = Replica::join(network, eve_key.clone(), eve_history).expect("eve");
    let (_, eve_event) = eve
        .write(|l| l.record_event(produce("eve-goods", "eve")))
        .expect("eve writes");
    let removal = ana.remove_member(dee.device()).expect("remove dee");
    let (_, honest) = bo
        .write(|l| l.record_event(produce("pears", "bo")))
        .expect("bo writes");

    let mut all = Vec::new();
    all.extend(hidden_add.clone());
    all.extend(eve_event.clone());
    all.extend(removal.clone());
    all.extend(honest.clone());
    let r = deliver_everywhere(network, &history, &all);

    for c in &removal {
        assert!(r.ledger().has_change(&c.hash()), "the removal stands");
    }
    for c in &honest {
        assert!(r.ledger().has_change(&c.hash()), "bo's event stands");
    }
    for c in &hidden_add {
        assert!(!r.ledger().has_change(&c.hash()));
        assert!(
            matches!(reason_of(&r, &c.hash()), Some(Rejection::RemovedConcurrently { device, .. }) if device == dee.device()),
            "{:?}",
            reason_of(&r, &c.hash())
        );
    }
    for c in &eve_event {
        assert!(!r.ledger().has_change(&c.hash()), "eve's event is refused");
    }
    assert!(r.member(&dee.device()).is_none());
    assert!(r.member(&eve_key.id()).is_none());
    assert!(r.ledger().resource(&"eve-goods".into()).is_none());

    // ana's own replica, which accepted the hidden branch before it learned of... nothing:
    // it made the removal itself; receiving the branch afterwards refuses it.
    let receipt = ana
        .receive(all.clone())
        .expect("ana receives the hidden branch");
    assert!(receipt
        .applied
        .iter()
        .all(|c| !hidden_add.iter().any(|h| h.hash() == c.hash())));
    assert_eq!(sorted_heads(&ana), sorted_heads(&r));

    // dee's replica had the branch applied; learning of its removal revokes it there too.
    let receipt = dee.receive(all).expect("dee learns of its removal");
    assert!(
        !receipt.revoked.is_empty(),
        "the hidden add is revoked on dee's replica"
    );
    assert_eq!(sorted_heads(&dee), sorted_heads(&r));
    assert_eq!(dee.ledger().snapshot(), r.ledger().snapshot());
}

#[test]
fn two_admins_removing_each_other_leave_the_senior_one() {
    let Net {
        mut ana,
        mut dee,
        history,
        ..
    } = net();
    let network = ana.network();
    let ana_removes_dee = ana.remove_member(dee.device()).expect("ana removes dee");
    let dee_removes_ana = dee.remove_member(ana.device()).expect("dee removes ana");
    let mut all = dee_removes_ana.clone();
    all.extend(ana_removes_dee.clone());
    let r = deliver_everywhere(network, &history, &all);
    // ana is the genesis creator: the most senior admin; its removal of dee stands.
    assert!(r.ledger().has_change(&ana_removes_dee[0].hash()));
    assert!(!r.ledger().has_change(&dee_removes_ana[0].hash()));
    assert_eq!(r.member(&ana.device()).map(|m| m.role), Some(Role::Admin));
    assert!(r.member(&dee.device()).is_none());
    // Both sides converge on the same outcome once they see each other's removal.
    ana.receive(all.clone()).expect("ana");
    dee.receive(all).expect("dee");
    assert_eq!(sorted_heads(&ana), sorted_heads(&r));
    assert_eq!(sorted_heads(&dee), sorted_heads(&r));
    assert_eq!(dee.members(), r.members());
}

/// A change by `key` on `r`'s document with session `suffix`, setting bo's unit crate's label.
fn label_change(r: &Replica, key: &DeviceKey, suffix: u8, label: &str) -> SignedChange {
    let mut doc = Automerge::load(&r.ledger().save())
        .expect("load")
        .with_actor(key.id().actor([suffix; 8]));
    let (_, buckets) = doc.get(ROOT, "objectBuckets").expect("get").expect("set");
    let bucket = (0..256)
        .map(|i| {
            doc.get(&buckets, format!("{i:02x}"))
                .expect("get")
                .expect("bucket")
                .1
        })
        .find(|b| doc.get(b, "[\"units\",\"crate\"]").ok().flatten().is_some())
        .expect("crate's bucket");
    let mut tx = doc.transaction();
    tx.put(
        &bucket,
        "[\"units\",\"crate\",\"label\"]",
        serde_json::to_string(label).expect("json"),
    )
    .expect("put");
    tx.commit();
    let change = doc.get_last_local_change().expect("change");
    let signature = key.sign_change(&r.network(), &change.hash());
    SignedChange { change, signature }
}

#[test]
fn an_equivocating_member_is_cut_off_identically() {
    let Net {
        mut ana,
        bo,
        history,
        ..
    } = net();
    let network = ana.network();
    let bo_key_secret = bo.key().clone();
    // Two different changes with one (actor, seq), and one more by bo on top of the first.
    let a = label_change(&bo, &bo_key_secret, 7, "Kilo");
    let b = label_change(&bo, &bo_key_secret, 7, "Kilogramme");
    assert_eq!(
        (a.change.actor_id(), a.change.seq()),
        (b.change.actor_id(), b.change.seq())
    );
    let mut on_a = Replica::join(network, bo_key_secret.clone(), history.clone())
        .expect("join")
        .0;
    on_a.receive(vec![a.clone()]).expect("a");
    let after_a = label_change(&on_a, &bo_key_secret, 8, "kg!");
    let (_, honest) = ana
        .write(|l| l.record_event(produce("plums", "ana")))
        .expect("ana writes");
    let mut all = vec![a.clone(), after_a.clone(), b.clone()];
    all.extend(honest.clone());
    let r = deliver_everywhere(network, &history, &all);
    for c in [&a, &b] {
        assert!(!r.ledger().has_change(&c.hash()), "neither twin stands");
        assert!(
            matches!(
                reason_of(&r, &c.hash()),
                Some(Rejection::Equivocation { .. })
            ),
            "{:?}",
            reason_of(&r, &c.hash())
        );
    }
    // What it built on a twin goes with it.
    assert!(!r.ledger().has_change(&after_a.hash()));
    assert_eq!(
        reason_of(&r, &after_a.hash()),
        Some(Rejection::DependsOnRefused {
            dependency: a.hash().to_string()
        })
    );
    for c in &honest {
        assert!(r.ledger().has_change(&c.hash()));
    }
    assert_eq!(
        r.ledger().get::<Unit>(&"crate".into()).map(|u| u.label),
        Some("crate".into())
    );
    // A replica that applied one twin revokes it when the other arrives, and passes the
    // proof on.
    let receipt = on_a.receive(vec![b.clone()]).expect("b arrives");
    assert!(receipt.revoked.contains(&a.hash()));
    assert_eq!(receipt.evidence.len(), 2);
    on_a.receive(honest).expect("honest");
    assert_eq!(sorted_heads(&on_a), sorted_heads(&r));
}

/// A member that signs a change on a past that leaves out its own earlier change (a new
/// actor, as a new session has, written on an older past: how a device would pretend not to
/// have seen a rule set or a removal) forks its history: both branches' tips are refused as
/// `Forked` on every replica, in every order, and a replica that accepted one branch revokes
/// it when the other arrives and passes the proof on.
#[test]
fn a_fork_cuts_the_device_off_in_any_order() {
    let Net {
        mut ana,
        bo,
        history,
        ..
    } = net();
    let network = ana.network();
    let bo_key = bo.key().clone();
    // Branch one: a, then after_a on top of it (a second session: another actor).
    let a = label_change(&bo, &bo_key, 7, "Kilo");
    let mut on_a = Replica::join(network, bo_key.clone(), history.clone())
        .expect("join")
        .0;
    on_a.receive(vec![a.clone()]).expect("a");
    let after_a = label_change(&on_a, &bo_key, 8, "kg!");
    assert!(after_a.change.deps().contains(&a.hash()));
    // Branch two: b, by a third actor, on the history without a.
    let b = label_change(&bo, &bo_key, 9, "Kilogramme");
    assert_ne!(a.change.actor_id(), b.change.actor_id());
    assert!(!b.change.deps().contains(&a.hash()));
    let (_, honest) = ana
        .write(|l| l.record_event(produce("plums", "ana")))
        .expect("ana writes");
    let mut all = vec![a.clone(), after_a.clone(), b.clone()];
    all.extend(honest.clone());
    let r = deliver_everywhere(network, &history, &all);
    for c in [&a, &b] {
        assert!(!r.ledger().has_change(&c.hash()), "neither branch stands");
        assert!(
            matches!(reason_of(&r, &c.hash()), Some(Rejection::Forked { .. })),
            "{:?}",
            reason_of(&r, &c.hash())
        );
    }
    assert!(!r.ledger().has_change(&after_a.hash()));
    for c in &honest {
        assert!(r.ledger().has_change(&c.hash()));
    }
    assert_eq!(
        r.ledger().get::<Unit>(&"crate".into()).map(|u| u.label),
        Some("crate".into())
    );
    // A replica that accepted the first branch revokes it when the second arrives, and
    // passes the proof on (both tips).
    on_a.receive(vec![after_a.clone()]).expect("after_a");
    let receipt = on_a.receive(vec![b.clone()]).expect("b arrives");
    assert!(receipt.revoked.contains(&a.hash()), "{receipt:?}");
    assert!(receipt.revoked.contains(&after_a.hash()));
    assert_eq!(receipt.evidence.len(), 2);
    on_a.receive(honest).expect("honest");
    assert_eq!(sorted_heads(&on_a), sorted_heads(&r));
    assert_eq!(quarantine(&on_a), quarantine(&r));
}

/// An honest device never forks: a device that writes, reopens (a new session, a new actor)
/// and writes again continues its own chain, and nothing of it is refused.
#[test]
fn sessions_of_an_honest_device_continue_its_chain() {
    let Net {
        ana, bo, history, ..
    } = net();
    let network = ana.network();
    let bo_key = bo.key().clone();
    let mut bo = bo;
    let (_, first) = bo
        .write(|l| l.record_event(produce("pears", "bo")))
        .expect("first session");
    // A new session: the same device, its stored state, a new actor.
    let saved = bo.ledger().save();
    let signatures = history
        .iter()
        .chain(&first)
        .map(|c| (c.hash(), c.signature))
        .collect();
    let ledger = Ledger::load(&saved, bo_key.session_actor().expect("actor")).expect("load");
    let mut bo = Replica::open(ledger, bo_key, network, signatures, Vec::new()).expect("open");
    let (_, second) = bo
        .write(|l| l.record_event(produce("quinces", "bo")))
        .expect("second session");
    assert_ne!(first[0].change.actor_id(), second[0].change.actor_id());
    let mut all = first.clone();
    all.extend(second.clone());
    let r = deliver_everywhere(network, &history, &all);
    assert_eq!(r.quarantine().count(), 0, "{:?}", quarantine(&r));
    for c in all {
        assert!(r.ledger().has_change(&c.hash()));
    }
}

/// dee's hidden branch: it admits a new admin, then records an event on top.
fn hidden_branch(dee: &mut Replica) -> (Vec<SignedChange>, Vec<SignedChange>) {
    let hidden_add = dee
        .add_member(key().id(), Role::Admin, "eve".into())
        .expect("hidden add");
    let (_, hidden_event) = dee
        .write(|l| l.record_event(produce("dee-goods", "dee")))
        .expect("dee writes");
    (hidden_add, hidden_event)
}

#[test]
fn a_revocation_is_durable_and_survives_a_reopen() {
    let Net {
        mut ana,
        mut dee,
        history,
        ..
    } = net();
    let network = ana.network();
    let dee_key = dee.key().clone();
    // dee's hidden branch, stored durably on dee's device as accepted.
    let (hidden_add, hidden_event) = hidden_branch(&mut dee);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store.redb")).expect("store");
    let mut stored: Vec<SignedChange> = history.clone();
    stored.extend(hidden_add.clone());
    stored.extend(hidden_event.clone());
    let mut durable = store.create_replica(dee, &stored).expect("create");
    durable
        .compact()
        .expect("snapshot holding the hidden branch");

    // The removal arrives: the branch is revoked, durably.
    let removal = ana.remove_member(dee_key.id()).expect("remove dee");
    let receipt = durable.receive(removal.clone()).expect("receive");
    let mut revoked = receipt.revoked.clone();
    revoked.sort();
    let mut expected: Vec<ChangeHash> = hidden_add
        .iter()
        .chain(&hidden_event)
        .map(SignedChange::hash)
        .collect();
    expected.sort();
    assert_eq!(revoked, expected);
    let heads = sorted_heads(durable.replica());
    let snapshot = durable.ledger().snapshot();
    drop(durable);
    drop(store);

    // Reopened, nothing revoked comes back, and the quarantine still says why.
    let store = Store::open(dir.path().join("store.redb")).expect("reopen");
    let reopened = store.open_replica(&network, dee_key).expect("open");
    assert_eq!(sorted_heads(reopened.replica()), heads);
    assert_eq!(reopened.ledger().snapshot(), snapshot);
    for h in &expected {
        assert!(!reopened.ledger().has_change(h), "{h} came back");
    }
    assert!(matches!(
        reason_of(reopened.replica(), &hidden_add[0].hash()),
        Some(Rejection::RemovedConcurrently { .. })
    ));
    // dee's event was written on top of the hidden add.
    assert_eq!(
        reason_of(reopened.replica(), &hidden_event[0].hash()),
        Some(Rejection::DependsOnRefused {
            dependency: hidden_add[0].hash().to_string()
        })
    );
    assert!(reopened.ledger().resource(&"dee-goods".into()).is_none());
    for c in &removal {
        assert!(reopened.ledger().has_change(&c.hash()));
    }
}

/// A cut-off is kept apart from the bounded quarantine: a fork that arrives when the
/// quarantine is full still cuts the device off, durably, and a reopen whose quarantine rows
/// of the fork are gone (damaged: skipped) still refuses the device's next change, as a
/// judgment from scratch of the same changes does.
#[test]
fn a_cut_off_survives_a_full_quarantine_and_a_reopen() {
    let Net { bo, history, .. } = net();
    let network = bo.network();
    let bo_key = bo.key().clone();
    let stranger = key();
    // Changes every replica refuses (a stranger's), to fill the quarantine.
    let strangers: Vec<SignedChange> = (0..6)
        .map(|i| label_change(&bo, &stranger, 20 + i, &format!("s{i}")))
        .collect();
    // bo's fork: a, then after_a on top of it; b on the history without a.
    let a = label_change(&bo, &bo_key, 7, "Kilo");
    let mut on_a = Replica::join(network, bo_key.clone(), history.clone())
        .expect("join")
        .0;
    on_a.receive(vec![a.clone()]).expect("a");
    let after_a = label_change(&on_a, &bo_key, 8, "kg!");
    let b = label_change(&bo, &bo_key, 9, "Kilogramme");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let me = key();
    let limits = Limits {
        quarantine: 2,
        ..Limits::default()
    };
    let store = Store::open(&path).expect("store");
    let (joined, _) = Replica::join(network, me.clone(), history.clone()).expect("join");
    let mut durable = store.create_replica(joined, &history).expect("create");
    durable.set_limits(limits);
    durable.receive(strangers[..3].to_vec()).expect("strangers");
    assert_eq!(
        durable.replica().quarantine().count(),
        2,
        "the quarantine is full"
    );
    durable.receive(vec![a.clone()]).expect("a");
    assert!(durable.ledger().has_change(&a.hash()));
    // The fork arrives into a full quarantine: bo is cut off all the same.
    let receipt = durable.receive(vec![b.clone()]).expect("b");
    assert_eq!(receipt.cut_off, vec![bo_key.id()], "{receipt:?}");
    assert!(receipt.revoked.contains(&a.hash()), "{receipt:?}");
    let proof = durable
        .replica()
        .cut_offs()
        .find(|c| c.device == bo_key.id())
        .expect("proof")
        .clone();
    let mut twins = vec![a.hash(), b.hash()];
    twins.sort();
    assert_eq!(proof.twins.to_vec(), twins);
    assert_eq!(proof.changes.len(), 2, "both twins are kept with the proof");
    assert!(matches!(proof.reason, Rejection::Forked { .. }));
    // More refusals, past the bound.
    durable.receive(strangers[3..].to_vec()).expect("strangers");
    drop(durable);
    drop(store);
    // The same file as a store of version 3 wrote it: no cut-off table.
    let v3_path = dir.path().join("v3.redb");
    std::fs::copy(&path, &v3_path).expect("copy");
    {
        let db = redb::Database::open(&v3_path).expect("redb");
        let tx = db.begin_write().expect("tx");
        assert!(tx.delete_table(CUT_OFF_TABLE).expect("delete"));
        {
            let mut meta = tx.open_table(META_TABLE).expect("meta");
            meta.insert("version", 3u64.to_le_bytes().as_slice())
                .expect("version");
        }
        tx.commit().expect("commit");
    }

    // The store loses every quarantine row of bo's changes (damaged rows are skipped).
    let store = Store::open(&path).expect("reopen");
    for c in [&a, &b] {
        store
            .put_raw_row(
                reflow::store::RawRow::Quarantine,
                &network.to_string(),
                &c.hash().0,
                b"damaged",
            )
            .expect("damage");
    }
    let mut reopened = store.open_replica(&network, me.clone()).expect("open");
    reopened.set_limits(limits);
    assert!(
        reopened
            .replica()
            .quarantine()
            .all(|q| DeviceId::of_actor(q.change.change.actor_id()) != Some(bo_key.id())),
        "no quarantine row of bo is left"
    );
    assert!(reopened
        .replica()
        .cut_offs()
        .any(|c| c.device == bo_key.id()));
    // bo's next change, continuing its first branch: still refused.
    let receipt = reopened.receive(vec![after_a.clone()]).expect("after_a");
    assert!(!reopened.ledger().has_change(&after_a.hash()));
    let reason = receipt
        .refused
        .iter()
        .find(|(h, _)| *h == after_a.hash())
        .map(|(_, r)| r.clone());
    assert!(
        matches!(
            reason,
            Some(Rejection::Forked { .. } | Rejection::DependsOnRefused { .. })
        ),
        "{reason:?}"
    );
    // The proof still travels to peers.
    let evidence: Vec<ChangeHash> = reopened
        .replica()
        .equivocation_evidence()
        .iter()
        .map(SignedChange::hash)
        .collect();
    assert!(evidence.contains(&a.hash()) && evidence.contains(&b.hash()));

    // A judgment from scratch of the same changes, with no bound in the way, agrees.
    let mut all = strangers.clone();
    all.extend([a.clone(), b.clone(), after_a.clone()]);
    let scratch = deliver_everywhere(network, &history, &all);
    assert_eq!(sorted_heads(reopened.replica()), sorted_heads(&scratch));
    assert_eq!(reopened.ledger().snapshot(), scratch.ledger().snapshot());
    for c in [&a, &b, &after_a] {
        assert!(!scratch.ledger().has_change(&c.hash()));
    }
    assert_eq!(
        reason_of(&scratch, &after_a.hash()).map(|r| std::mem::discriminant(&r)),
        reason.map(|r| std::mem::discriminant(&r))
    );
    // And a reopen after that keeps the cut-off (written once, never dropped).
    drop(reopened);
    let again = store
        .open_replica(&network, me.clone())
        .expect("open again");
    assert!(again.replica().cut_offs().any(|c| c.device == bo_key.id()));
    drop(again);
    drop(store);

    // A version-3 store is migrated: its cut-offs come from its quarantine rows, as before,
    // and its next write stores them in the new table, so that losing those rows later
    // forgets nothing.
    let store = Store::open(&v3_path).expect("migrated");
    let mut migrated = store.open_replica(&network, me.clone()).expect("open v3");
    assert!(migrated
        .replica()
        .cut_offs()
        .any(|c| c.device == bo_key.id()));
    migrated.receive(vec![after_a.clone()]).expect("after_a");
    assert!(!migrated.ledger().has_change(&after_a.hash()));
    drop(migrated);
    for c in [&a, &b] {
        store
            .put_raw_row(
                reflow::store::RawRow::Quarantine,
                &network.to_string(),
                &c.hash().0,
                b"damaged",
            )
            .expect("damage");
    }
    let reopened = store.open_replica(&network, me).expect("reopen v3");
    let proof = reopened
        .replica()
        .cut_offs()
        .find(|c| c.device == bo_key.id())
        .expect("the cut-off was written by the first write after the migration");
    assert_eq!(proof.twins.to_vec(), twins);
}

/// The tables a version-3 store lacks, as redb names them (docs/storage.md).
const CUT_OFF_TABLE: redb::TableDefinition<
    'static,
    (&'static str, &'static [u8; 32]),
    &'static [u8],
> = redb::TableDefinition::new("reflow_cut_off");
const META_TABLE: redb::TableDefinition<'static, &'static str, &'static [u8]> =
    redb::TableDefinition::new("reflow_meta");

/// A revoking receive whose commit fails (a write, or the fsync after the data reached the
/// disk) leaves the replica exactly at what the store holds: the revoked branch still in
/// memory if the store kept it, nothing half-revoked; once the disk heals the same removal
/// revokes it durably. (The revoking branch of the durable receive: the snapshot that
/// replaces the history and the deleted rows are one commit.)
#[test]
fn a_revoking_receive_whose_commit_fails_leaves_the_stored_state() {
    use reflow::store::fault::FaultyDisk;
    for (case, fail_sync) in [("write", false), ("fsync", true)] {
        let Net {
            mut ana,
            mut dee,
            history,
            ..
        } = net();
        let network = ana.network();
        let dee_key = dee.key().clone();
        let (hidden_add, hidden_event) = hidden_branch(&mut dee);
        let disk = FaultyDisk::new(11);
        let open = |disk: &FaultyDisk| {
            let d = disk.clone();
            Store::open_backend(format!("revoking-{case}"), move || d.backend()).expect("store")
        };
        let store = open(&disk);
        let mut stored: Vec<SignedChange> = history.clone();
        stored.extend(hidden_add.clone());
        stored.extend(hidden_event.clone());
        let mut durable = store.create_replica(dee, &stored).expect("create");
        let removal = ana.remove_member(dee_key.id()).expect("remove dee");
        let hidden: Vec<ChangeHash> = hidden_add
            .iter()
            .chain(&hidden_event)
            .map(SignedChange::hash)
            .collect();

        // Every write (or fsync) fails until cleared: the durable receive's retry after
        // reopening the store fails too.
        if fail_sync {
            disk.set_random_faults(0, 1000);
        } else {
            disk.set_random_faults(1000, 0);
        }
        let before = sorted_heads(durable.replica());
        let quarantined_before = quarantine(durable.replica());
        let failed = durable.receive(removal.clone());
        assert!(failed.is_err(), "{case}: the revoking commit fails");
        // The store cannot be reopened while the disk fails: the replica is stale, and its
        // memory is put back without the disk to the last stored state: the branch still
        // there, the removal and the refusals it caused gone.
        assert!(
            durable.is_stale(),
            "{case}: the store is unreadable for now"
        );
        assert_eq!(sorted_heads(durable.replica()), before, "{case}: heads");
        assert_eq!(
            quarantine(durable.replica()),
            quarantined_before,
            "{case}: the revocation's refusals are not kept"
        );
        for h in &hidden {
            assert!(
                durable.ledger().has_change(h),
                "{case}: {h} revoked in memory only"
            );
        }
        for c in &removal {
            assert!(
                !durable.ledger().has_change(&c.hash()),
                "{case}: unstored removal"
            );
        }
        disk.clear_faults();
        // Memory is what the store holds, whichever way the failed commit ended.
        let on_disk = open(&disk)
            .open_replica(&network, dee_key.clone())
            .expect("the store opens after the failed commit");
        let revoked_on_disk = !on_disk.ledger().has_change(&hidden[0]);
        // Any later call puts a stale replica back first.
        let again = durable.receive(Vec::new()).expect("the replica is usable");
        assert!(again.applied.is_empty());
        assert_eq!(
            sorted_heads(durable.replica()),
            sorted_heads(on_disk.replica()),
            "{case}: memory and store agree after the failed revoking commit"
        );
        assert_eq!(
            durable.ledger().snapshot(),
            on_disk.ledger().snapshot(),
            "{case}: views agree"
        );
        for h in &hidden {
            assert_eq!(
                durable.ledger().has_change(h),
                !revoked_on_disk,
                "{case}: {h} half-revoked"
            );
        }
        if !fail_sync {
            assert!(!revoked_on_disk, "a failed write stores nothing");
        }
        drop(on_disk);

        // The disk healed: the removal revokes the branch, durably.
        let receipt = durable.receive(removal.clone()).expect("receive again");
        if !revoked_on_disk {
            let mut revoked = receipt.revoked.clone();
            revoked.sort();
            let mut expected = hidden.clone();
            expected.sort();
            assert_eq!(revoked, expected, "{case}");
        }
        let heads = sorted_heads(durable.replica());
        drop(durable);
        drop(store);
        let reopened = open(&disk).open_replica(&network, dee_key).expect("reopen");
        assert_eq!(sorted_heads(reopened.replica()), heads, "{case}");
        for h in &hidden {
            assert!(!reopened.ledger().has_change(h), "{case}: {h} came back");
        }
        for c in &removal {
            assert!(reopened.ledger().has_change(&c.hash()), "{case}");
        }
    }
}
