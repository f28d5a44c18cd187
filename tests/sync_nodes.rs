//! Nodes syncing over real iroh endpoints on loopback (relays and address lookup disabled),
//! with real redb stores in temporary directories.
//!
//! - `join_then_converge`: an admin with a few hundred events admits a device by id; the
//!   device joins through the admin's address and ends with identical heads, views (snapshot
//!   JSON), events and members, the history having come as the admin's document (its changes
//!   covered by attestation); then writes flow both ways.
//! - `line_of_three_relays_changes`: A-B-C in a line (C joined through B, never dialed A): a
//!   change made on A reaches C through B, concurrent edits on all three converge, conflicts
//!   included.
//! - `partition_and_heal`: C is cut off (its connection closed), both sides make conflicting
//!   edits (an overdraw), C reconnects, and everyone has the same views and conflicts.
//! - `restart_mid_sync`: a node closed while changes stream to it reopens from its data
//!   directory with what it had stored, the same device id and network, reconnects, converges.
//! - `a_member_behind_catches_up_from_a_device_that_joined_by_document`: member C goes
//!   offline, admin A writes, B joins through A (by A's document: A's changes covered by
//!   attestation, no signature of their own on B), A is gone; C, reopened, syncs only with B
//!   and gets those changes as a missing part with attestations: identical heads and views.
//! - `a_held_replica_blocks_neither_the_runtime_nor_other_networks`: on a node whose runtime
//!   has one thread, one network's replica is held by a long write while a peer dials into
//!   that network; the node's other network goes on syncing meanwhile.

mod support;

use std::time::Instant;

use reflow::node::NodeEvent;
use reflow::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_then_converge() {
    let started = Instant::now();
    let (da, db) = (tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let network = create_network(&a);
    record_history(&a, network, "ana", "apples", 300);
    admit(&a, network, b.device(), "bob");
    assert_eq!(b.networks(), Vec::<NetworkId>::new());

    within("join", b.join(network, &a.addr()))
        .await
        .expect("join");
    assert_eq!(b.networks(), vec![network]);
    let heads = converge(&[&a, &b], network).await;
    assert!(!heads.is_empty());
    let events = b
        .read(network, |r| {
            r.ledger().events(&EventFilter::default()).len()
        })
        .expect("read");
    assert_eq!(events, 300, "every event of the history arrived");
    // The history came as the admin's document (protocol version 4): only the admin's latest
    // change before the join keeps a signature of its own, every earlier change is covered
    // by its attestation; none is without one or the other.
    let (covered, signed, neither) = b
        .read(network, |r| {
            let all = a
                .read(network, |ra| ra.signed_changes_since(&[]))
                .expect("read A");
            let covered = all
                .iter()
                .filter(|c| r.attested_by(&c.hash()).is_some())
                .count();
            let signed = all
                .iter()
                .filter(|c| r.signature(&c.hash()).is_some())
                .count();
            (covered, signed, all.len() - covered - signed)
        })
        .expect("read");
    // A wrote with one session actor: one attestation.
    assert_eq!(signed, 1, "{covered} changes covered, {signed} signed");
    assert!(covered > 0);
    assert_eq!(neither, 0);
    assert_eq!(
        b.read(network, |r| r.role()).expect("read"),
        Some(Role::Member)
    );

    // Writes flow both ways on the connection the join left open.
    let from_b = b
        .record_event(network, consume("bob", "apples", 2))
        .expect("bob writes");
    wait_until(&a, network, "B's event on A", |r| has_event(r, &from_b)).await;
    let from_a = a
        .record_event(network, produce("ana", "pears", 3))
        .expect("ana writes");
    wait_until(&b, network, "A's event on B", |r| has_event(r, &from_a)).await;
    converge(&[&a, &b], network).await;

    let peers = a.peers(network).expect("peers");
    let status = peers
        .iter()
        .find(|p| p.device == b.device())
        .expect("B is a peer of A");
    assert!(status.connected, "{status:?}");
    assert_eq!(status.last_error, None);
    a.close().await.expect("close A");
    b.close().await.expect("close B");
    eprintln!("join_then_converge: {:?}", started.elapsed());
}

/// A, B, C with B and C admitted by A; B joined through A and C through B: a line.
async fn line(
    da: &std::path::Path,
    db: &std::path::Path,
    dc: &std::path::Path,
) -> (Node, Node, Node, NetworkId) {
    let a = open(da).await;
    let b = open(db).await;
    let c = open(dc).await;
    let network = create_network(&a);
    a.record_event(network, produce("ana", "apples", 5))
        .expect("apples");
    admit(&a, network, b.device(), "bob");
    admit(&a, network, c.device(), "cy");
    within("B joins", b.join(network, &a.addr()))
        .await
        .expect("B joins through A");
    within("C joins", c.join(network, &b.addr()))
        .await
        .expect("C joins through B");
    converge(&[&a, &b, &c], network).await;
    for (n, connected) in [(&a, vec![b.device()]), (&c, vec![b.device()])] {
        let peers: Vec<DeviceId> = n
            .peers(network)
            .expect("peers")
            .into_iter()
            .filter(|p| p.connected)
            .map(|p| p.device)
            .collect();
        assert_eq!(peers, connected, "a line: the ends only see B");
    }
    (a, b, c, network)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn line_of_three_relays_changes() {
    let started = Instant::now();
    let (da, db, dc) = (tempdir(), tempdir(), tempdir());
    let (a, b, c, network) = line(da.path(), db.path(), dc.path()).await;

    // A change made on A reaches C through B.
    let on_a = a
        .record_event(network, produce("ana", "plums", 7))
        .expect("A writes");
    wait_until(&c, network, "A's event on C", |r| has_event(r, &on_a)).await;
    let resource = c
        .read(network, |r| r.ledger().resource(&Id::from("plums")))
        .expect("read");
    assert!(resource.is_some(), "the resource A made is on C");

    // And back: a change made on C reaches A.
    let on_c = c
        .record_event(network, produce("cy", "figs", 1))
        .expect("C writes");
    wait_until(&a, network, "C's event on A", |r| has_event(r, &on_c)).await;

    // Concurrent edits on all three, two of them overdrawing the same 5 kg of apples.
    let mut updates = c.subscribe(network).expect("subscribe");
    let e1 = a
        .record_event(network, consume("ana", "apples", 4))
        .expect("A consumes");
    let e2 = c
        .record_event(network, consume("cy", "apples", 4))
        .expect("C consumes");
    let e3 = b
        .record_event(network, produce("bob", "nuts", 2))
        .expect("B produces");
    let heads = converge(&[&a, &b, &c], network).await;
    for id in [&e1, &e2, &e3] {
        for n in [&a, &b, &c] {
            assert!(n.read(network, |r| has_event(r, id)).expect("read"));
        }
    }
    // Either the edits were concurrent (an overdraw conflict everywhere) or one saw the
    // other (the second is an overdraw too, since 4 + 4 > 5): the same conflict everywhere.
    let conflicts = a.read(network, |r| r.ledger().conflicts()).expect("read");
    assert!(
        conflicts
            .iter()
            .any(|c| matches!(c, Conflict::Overdraw { .. })),
        "{conflicts:?}"
    );
    assert!(!heads.is_empty());
    // C was told about the changes as they arrived.
    let mut seen_from_b = false;
    while let Ok(u) = updates.try_recv() {
        assert_eq!(u.network, network);
        seen_from_b |= u.from == Some(b.device());
    }
    assert!(seen_from_b, "C's updates name B as the peer they came from");

    for n in [a, b, c] {
        n.close().await.expect("close");
    }
    eprintln!("line_of_three_relays_changes: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_and_heal() {
    let started = Instant::now();
    let (da, db, dc) = (tempdir(), tempdir(), tempdir());
    let (a, b, c, network) = line(da.path(), db.path(), dc.path()).await;

    // Cut C off: B closes the connection.
    let mut events = c.events();
    b.disconnect(network, c.device()).expect("disconnect");
    wait_event(
        &mut events,
        "C's disconnection",
        |e| matches!(e, NodeEvent::Disconnected { peer, .. } if *peer == b.device()),
    )
    .await;
    assert!(
        c.peers(network)
            .expect("peers")
            .iter()
            .all(|p| !p.connected),
        "C is offline"
    );

    // Both sides edit: 4 kg of apples each out of 5 (an overdraw once merged), and more.
    let offline: Vec<Id> = (0..5)
        .map(|i| {
            c.record_event(network, produce("cy", &format!("offline-{i}"), 1))
                .expect("C writes offline")
        })
        .collect();
    let c_consumes = c
        .record_event(network, consume("cy", "apples", 4))
        .expect("C consumes offline");
    let a_consumes = a
        .record_event(network, consume("ana", "apples", 4))
        .expect("A consumes");
    wait_until(&b, network, "A's consumption on B", |r| {
        has_event(r, &a_consumes)
    })
    .await;
    assert!(
        !c.read(network, |r| has_event(r, &a_consumes))
            .expect("read"),
        "C is partitioned"
    );
    assert!(
        !a.read(network, |r| has_event(r, &c_consumes))
            .expect("read"),
        "A never saw C's offline edits"
    );
    assert!(
        c.read(network, |r| r.ledger().conflicts().is_empty())
            .expect("read"),
        "no conflict on C before the heal"
    );

    // Heal.
    within("C reconnects", c.connect(network, &b.addr()))
        .await
        .expect("C reconnects to B");
    converge(&[&a, &b, &c], network).await;
    for id in offline.iter().chain([&c_consumes, &a_consumes]) {
        assert!(a.read(network, |r| has_event(r, id)).expect("read"));
    }
    let conflicts: Vec<Vec<Conflict>> = [&a, &b, &c]
        .iter()
        .map(|n| n.read(network, |r| r.ledger().conflicts()).expect("read"))
        .collect();
    assert!(conflicts.windows(2).all(|w| w[0] == w[1]));
    let overdraw = conflicts[0].iter().find_map(|c| match c {
        Conflict::Overdraw { competing, .. } => Some(competing.clone()),
        _ => None,
    });
    let competing = overdraw.expect("the concurrent consumptions overdraw the apples");
    assert!(
        !competing.is_empty(),
        "the overdraw names the concurrent consumption: {conflicts:?}"
    );

    for n in [a, b, c] {
        n.close().await.expect("close");
    }
    eprintln!("partition_and_heal: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_mid_sync() {
    let started = Instant::now();
    let (da, db) = (tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let network = create_network(&a);
    admit(&a, network, b.device(), "bob");
    within("join", b.join(network, &a.addr()))
        .await
        .expect("join");
    converge(&[&a, &b], network).await;
    let device = b.device();

    // A streams changes from another thread; B is closed while they arrive.
    let a = std::sync::Arc::new(a);
    let mut updates = b.subscribe(network).expect("subscribe");
    let writer = {
        let a = a.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..150u32 {
                a.record_event(network, produce("ana", &format!("crate-{i}"), 1))
                    .expect("A writes");
            }
        })
    };
    let mut announced = Vec::new();
    while announced.len() < 30 {
        let update = within("updates on B", updates.recv())
            .await
            .expect("B is receiving");
        announced.extend(update.changes);
    }
    b.close().await.expect("close B mid-sync");
    within("A's writes", writer).await.expect("writer");
    let a = std::sync::Arc::into_inner(a).expect("the writer is done");
    // Everything B announced as stored before it closed.
    while let Ok(u) = updates.try_recv() {
        announced.extend(u.changes);
    }
    assert!(!announced.is_empty());

    // A goes on writing while B is down.
    let while_down = a
        .record_event(network, produce("ana", "while-down", 1))
        .expect("A writes");

    // B comes back with what it had stored, under the same identity.
    let b = open(db.path()).await;
    assert_eq!(b.device(), device, "the device key is kept");
    assert_eq!(b.networks(), vec![network]);
    let missing = b
        .read(network, |r| {
            announced
                .iter()
                .filter(|h| !r.ledger().has_change(h))
                .count()
        })
        .expect("read");
    assert_eq!(missing, 0, "every change B announced was durable");
    let (on_b, on_a) = (fingerprint(&b, network).2, fingerprint(&a, network).2);
    eprintln!("restart_mid_sync: B had {on_b} of A's {on_a} events when it restarted");
    assert!(!b
        .read(network, |r| has_event(r, &while_down))
        .expect("read"));
    within("B reconnects", b.connect(network, &a.addr()))
        .await
        .expect("B reconnects");
    converge(&[&a, &b], network).await;
    assert!(b
        .read(network, |r| has_event(r, &while_down))
        .expect("read"));

    // A restarts too, and they resume.
    a.close().await.expect("close A");
    let a = open(da.path()).await;
    let after = a
        .record_event(network, produce("ana", "after-restart", 1))
        .expect("A writes after its restart");
    within("A reconnects", a.connect(network, &b.addr()))
        .await
        .expect("A reconnects");
    wait_until(&b, network, "A's post-restart event on B", |r| {
        has_event(r, &after)
    })
    .await;
    converge(&[&a, &b], network).await;
    a.close().await.expect("close A");
    b.close().await.expect("close B");
    eprintln!("restart_mid_sync: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_behind_catches_up_from_a_device_that_joined_by_document() {
    let started = Instant::now();
    let (da, db, dc) = (tempdir(), tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let c = open(dc.path()).await;
    let network = create_network(&a);
    admit(&a, network, b.device(), "bob");
    admit(&a, network, c.device(), "cy");
    within("C joins", c.join(network, &a.addr()))
        .await
        .expect("C joins");
    converge(&[&a, &c], network).await;
    let c_device = c.device();
    c.close().await.expect("C goes offline");

    record_history(&a, network, "ana", "apples", 200);
    within("B joins", b.join(network, &a.addr()))
        .await
        .expect("B joins");
    converge(&[&a, &b], network).await;
    let a_fingerprint = fingerprint(&a, network);
    a.close().await.expect("A is gone");
    // B holds A's history mostly without signatures of its own (covered by attestation).
    let covered = b
        .read(network, |r| {
            r.ledger()
                .changes_since(&[])
                .iter()
                .filter(|ch| r.attested_by(&ch.hash()).is_some())
                .count()
        })
        .expect("read");
    assert!(covered >= 50, "B must hold covered changes ({covered})");

    let c = open(dc.path()).await;
    assert_eq!(c.device(), c_device);
    let offline = c
        .record_event(network, produce("cy", "pears", 1))
        .expect("C writes");
    within("C connects to B", c.connect(network, &b.addr()))
        .await
        .expect("C connects");
    converge(&[&b, &c], network).await;
    assert_eq!(fingerprint(&b, network), fingerprint(&c, network));
    let events = c
        .read(network, |r| {
            r.ledger().events(&EventFilter::default()).len()
        })
        .expect("read");
    assert_eq!(events, 201, "A's 200 events and C's own");
    assert!(b.read(network, |r| has_event(r, &offline)).expect("read"));
    let (refused, heads_of_a) = c
        .read(network, |r| {
            (r.quarantine().count(), {
                let held: std::collections::HashSet<ChangeHash> = r
                    .ledger()
                    .changes_since(&[])
                    .iter()
                    .map(|ch| ch.hash())
                    .collect();
                a_fingerprint.0.iter().all(|h| held.contains(h))
            })
        })
        .expect("read");
    assert_eq!(refused, 0, "nothing refused on C");
    assert!(heads_of_a, "C has everything A had");
    // Durable: C reopened holds the same.
    let before = fingerprint(&c, network);
    c.close().await.expect("close C");
    let c = open(dc.path()).await;
    assert_eq!(fingerprint(&c, network), before);
    for n in [b, c] {
        n.close().await.expect("close");
    }
    eprintln!(
        "a_member_behind_catches_up_from_a_device_that_joined_by_document: {:?}",
        started.elapsed()
    );
}

/// One network's replica held by a long write (the application's thread) blocks neither the
/// node's runtime nor its other networks. Node A runs on a runtime of one thread, so a task
/// of A waiting for the held lock on that thread would stall all of A (the accept path's
/// member check, a saved sync state's read and a link's end did, before each network had its
/// own worker). While A's replica of N1 is held, B dials A in N1 (A's answer waits for the
/// replica, off the runtime), and C's write in N2 reaches A. Once released, B's connection
/// completes and N1 converges, the held write included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_replica_blocks_neither_the_runtime_nor_other_networks() {
    use std::sync::{mpsc, Arc};
    let one_thread = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime of one thread");
    let (da, db, dc) = (tempdir(), tempdir(), tempdir());
    let path = da.path().to_owned();
    let a = one_thread
        .spawn(async move { open(&path).await })
        .await
        .expect("open A on its runtime");
    let a = Arc::new(a);
    let (b, c) = (open(db.path()).await, open(dc.path()).await);
    let n1 = create_network(&a);
    admit(&a, n1, b.device(), "bob");
    let n2 = a
        .create_network("repair cafe", Agent::person("ana", "Ana"))
        .expect("second network");
    a.write(n2, |l| l.create(Unit::new("kg", "kilogram", "kg")))
        .expect("unit");
    admit(&a, n2, c.device(), "cleo");
    within("B joins N1", b.join(n1, &a.addr()))
        .await
        .expect("B joins");
    within("C joins N2", c.join(n2, &a.addr()))
        .await
        .expect("C joins");

    // B leaves N1's connection; A sees it end.
    let mut events = a.events();
    b.disconnect(n1, a.device()).expect("disconnect");
    wait_event(&mut events, "A sees B leave N1", |e| {
        matches!(e, NodeEvent::Disconnected { network, peer, .. } if *network == n1 && *peer == b.device())
    })
    .await;

    // A's replica of N1 is held by a write that waits to be released (the mutation runs
    // with the replica locked).
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let writer = {
        let a = a.clone();
        std::thread::spawn(move || {
            a.write(n1, |l| {
                held_tx.send(()).expect("tell the test");
                release_rx.recv().expect("released");
                l.record_event(produce("ana", "held", 1))
            })
        })
    };
    held_rx.recv().expect("the replica is held");

    // B dials A in N1: A's accept path needs N1's replica.
    let dial = {
        let addr = a.addr();
        tokio::spawn(async move {
            let r = b.connect(n1, &addr).await;
            (b, r)
        })
    };
    // Meanwhile C's write in N2 reaches A.
    let from_c = c
        .record_event(n2, produce("cleo", "chairs", 2))
        .expect("C writes");
    wait_until(&a, n2, "C's event on A while N1 is held", |r| {
        has_event(r, &from_c)
    })
    .await;
    assert!(
        !dial.is_finished(),
        "B's dial into N1 waits for A's replica of N1 (else this test proves nothing)"
    );

    release_tx.send(()).expect("release");
    let held = writer.join().expect("writer").expect("the held write");
    let (b, dialed) = within("B's connection to A in N1", dial)
        .await
        .expect("the dial task");
    dialed.expect("B connects to A in N1");
    wait_until(&b, n1, "the held write on B", |r| has_event(r, &held)).await;
    converge(&[&a, &b], n1).await;
    converge(&[&a, &c], n2).await;
    let a = Arc::try_unwrap(a).expect("the only handle of A");
    b.close().await.expect("close B");
    c.close().await.expect("close C");
    one_thread
        .spawn(async move { a.close().await })
        .await
        .expect("close A's task")
        .expect("close A");
    one_thread.shutdown_background();
}
