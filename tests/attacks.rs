//! Admission between real nodes: a member running modified software sends validly signed
//! changes that break the schema, and the honest nodes quarantine them. Real nodes over iroh
//! on loopback (relays and address lookup disabled), real redb stores.
//!
//! - `a_member_with_modified_software_is_quarantined`: admin node A, member node B, honest
//!   member node C. B's owner stops B and runs modified software with B's own device key (a
//!   raw iroh endpoint: same endpoint id, so A authenticates it as B). It builds three attacks
//!   with raw Automerge on a copy of B's ledger, each signed with B's key exactly as
//!   engine/tests/admission.rs does, and pushes them to A over a real connection: a root
//!   `schemaVersion` rewrite to 99 (`Rejection::Schema`), the deletion of a recorded event
//!   (`Schema`), and an event between `ana` and `ana` by a device acting for `bo`
//!   (`SpeaksForOthers`). A quarantines each with its kind and applies none; C never receives
//!   them (neither applied nor quarantined: A does not forward what it refused). Honest
//!   events B recorded before, and records after it is restarted with honest software, reach
//!   A and C. A closed and reopened has the same heads, views and quarantine, and keeps
//!   syncing with B and C.
//!
//! - `a_change_planted_in_a_members_store_poisons_only_that_member`: the other route. The
//!   speak-for-others change is written into B's redb store as if B had accepted it (rows of
//!   `reflow_changes` and `reflow_signatures`, docs/storage.md); B's node trusts its own rows,
//!   opens with it in its ledger and sends it to A when they sync. A quarantines it
//!   (`SpeaksForOthers`), and also every change B writes afterwards, since each has the
//!   planted change in its causal past (`DependsOnRefused`); C receives none of them, and A
//!   and C keep syncing.
//!
//! That is why the first test uses a raw endpoint and not rows in B's store: a change in B's
//! own ledger is in the causal past of everything B writes next, and a `schemaVersion` of 99
//! in B's store makes B's own node keep the network unavailable (it never serves it,
//! tests/unavailable.rs). Modified software that wants its later changes accepted keeps its
//! attacks out of its own document; so does the first test.

mod support;

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjId, ReadDoc, ROOT};
use iroh::endpoint::{presets, PortmapperConfig};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, SecretKey, TransportAddr};
use redb::{Database, TableDefinition};
use reflow::node::{NodeEvent, STORE_FILE};
use reflow::sync::Frame;
use reflow::*;
use support::*;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

type Keyed = TableDefinition<'static, (&'static str, &'static [u8; 32]), &'static [u8]>;
const CHANGES: Keyed = TableDefinition::new("reflow_changes");
const SIGNATURES: Keyed = TableDefinition::new("reflow_signatures");

/// A raw iroh endpoint with `key` (a member's key), on loopback only.
async fn raw_endpoint(key: &DeviceKey) -> Endpoint {
    Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&key.secret_bytes()))
        .relay_mode(RelayMode::Disabled)
        .portmapper_config(PortmapperConfig::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .expect("loopback address")
        .bind()
        .await
        .expect("bind a raw endpoint")
}

fn endpoint_addr(addr: &PeerAddr) -> EndpointAddr {
    let id = EndpointId::from_bytes(addr.device.as_bytes()).expect("endpoint id");
    EndpointAddr::from_parts(id, addr.direct.iter().copied().map(TransportAddr::Ip))
}

/// The opening frame of a session: an Automerge sync message with no heads.
fn opening() -> Vec<u8> {
    let message = automerge::sync::Message {
        heads: Vec::new(),
        need: Vec::new(),
        have: vec![automerge::sync::Have::default()],
        changes: automerge::sync::ChunkList::empty(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    Frame::Sync {
        seq: 1,
        message: message.encode(),
        changes: Vec::new(),
    }
    .encode()
}

/// Which refusal an attack must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Schema,
    SpeaksForOthers,
    DependsOnRefused,
    Other,
}

fn kind(r: &Rejection) -> Kind {
    match r {
        Rejection::Schema { .. } => Kind::Schema,
        Rejection::SpeaksForOthers { .. } => Kind::SpeaksForOthers,
        Rejection::DependsOnRefused { .. } => Kind::DependsOnRefused,
        _ => Kind::Other,
    }
}

fn bucket(doc: &Automerge, set: &str, i: usize) -> ObjId {
    let (_, buckets) = doc.get(ROOT, set).expect("get").expect("bucket set");
    let (_, b) = doc
        .get(&buckets, format!("{i:02x}"))
        .expect("get")
        .expect("bucket");
    b
}

/// The (bucket, key) of the first event stored in `doc`.
fn some_event(doc: &Automerge) -> (ObjId, String) {
    for i in 0..256 {
        let b = bucket(doc, "eventBuckets", i);
        if let Some(item) = doc.map_range(&b, ..).next() {
            return (b, item.key.to_string());
        }
    }
    panic!("no event");
}

fn sign(network: NetworkId, key: &DeviceKey, doc: &Automerge) -> SignedChange {
    let change = doc.get_last_local_change().expect("a change");
    let signature = key.sign_change(&network, &change.hash());
    SignedChange { change, signature }
}

/// The three attacks, each built on `saved` (B's document) as B's device with its own
/// session, signed with B's key.
fn attacks(
    network: NetworkId,
    key: &DeviceKey,
    saved: &[u8],
) -> Vec<(&'static str, SignedChange, Kind)> {
    let doc = |suffix: u8| {
        Automerge::load(saved)
            .expect("load")
            .with_actor(key.id().actor([suffix; 8]))
    };
    let mut out = Vec::new();

    let mut d = doc(31);
    let mut tx = d.transaction();
    tx.put(ROOT, "schemaVersion", 99u64).expect("put");
    tx.commit();
    out.push(("schema-rewrite", sign(network, key, &d), Kind::Schema));

    let mut d = doc(32);
    let (b, event) = some_event(&d);
    let mut tx = d.transaction();
    tx.delete(&b, event.as_str()).expect("delete");
    tx.commit();
    out.push(("event-delete", sign(network, key, &d), Kind::Schema));

    // As the ledger would store an event (under its own op id, in its bucket), but between
    // `ana` and `ana` while B acts for `bo`.
    let mut d = doc(33);
    let start = d
        .get_heads()
        .iter()
        .filter_map(|h| d.get_change_meta_by_hash(h))
        .map(|m| m.max_op)
        .max()
        .unwrap_or(0)
        + 1;
    let id = format!("{start}@{}", d.get_actor());
    let b = bucket(&d, "eventBuckets", (start & 0xff) as usize);
    let event = EconomicEvent::new(Action::Produce, "ana", "ana")
        .resource("apples")
        .quantity(2, "kg");
    let mut tx = d.transaction();
    tx.put(
        &b,
        id.as_str(),
        serde_json::to_string(&event).expect("json"),
    )
    .expect("put");
    tx.commit();
    out.push((
        "speak-for-others",
        sign(network, key, &d),
        Kind::SpeaksForOthers,
    ));
    out
}

fn quarantine(node: &Node, network: NetworkId) -> BTreeMap<ChangeHash, Kind> {
    node.read(network, |r| {
        r.quarantine()
            .map(|q| (q.change.hash(), kind(&q.reason)))
            .collect()
    })
    .expect("read")
}

/// Wait until `node` has quarantined every change in `hashes`, re-checking on every node
/// event (a refusal emits `ChangesRefused` after the quarantine is stored).
async fn wait_quarantined(
    node: &Node,
    network: NetworkId,
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    hashes: &[ChangeHash],
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let q = quarantine(node, network);
        if hashes.iter().all(|h| q.contains_key(h)) {
            return;
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => panic!("timed out after {WAIT:?}: quarantine {q:?}, waiting for {hashes:?}"),
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("the node closed"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_with_modified_software_is_quarantined() {
    let started = std::time::Instant::now();
    let (da, db, dc) = (tempdir(), tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let c = open(dc.path()).await;
    let network = create_network(&a);
    admit(&a, network, b.device(), "bo");
    admit(&a, network, c.device(), "cy");
    within("B joins", b.join(network, &a.addr()))
        .await
        .expect("B joins");
    within("C joins", c.join(network, &a.addr()))
        .await
        .expect("C joins");
    a.record_event(network, produce("ana", "apples", 5))
        .expect("A records");
    // An honest event of B before the attack.
    let before = b
        .record_event(network, produce("bo", "bo-apples", 3))
        .expect("B records");
    let heads = converge(&[&a, &b, &c], network).await;

    // B's owner stops B and runs modified software with B's key.
    let saved = b.read(network, |r| r.ledger().save()).expect("read");
    let b_device = b.device();
    b.close().await.expect("close B");
    let key = Store::open(db.path().join(STORE_FILE))
        .expect("B's store")
        .device_key()
        .expect("B's key");
    assert_eq!(key.id(), b_device);
    let attacks = attacks(network, &key, &saved);
    let hashes: Vec<ChangeHash> = attacks.iter().map(|(_, c, _)| c.hash()).collect();

    let mut a_events = a.events();
    let ep = raw_endpoint(&key).await;
    let conn = within(
        "the attacker dials A",
        ep.connect(endpoint_addr(&a.addr()), &reflow::net::alpn(&network)),
    )
    .await
    .expect("B's key is a member's: the handshake succeeds");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    // Whatever A answers is read and dropped, so that A is never blocked on flow control.
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Some(_)) = recv.read(&mut buf).await {}
    });
    send.write_all(&opening()).await.expect("opening");
    let push = Frame::Push {
        changes: attacks.iter().map(|(_, c, _)| c.clone()).collect(),
    };
    send.write_all(&push.encode())
        .await
        .expect("push the attacks");
    wait_quarantined(&a, network, &mut a_events, &hashes).await;
    conn.close(0u32.into(), b"done");
    ep.close().await;
    drain.abort();

    // On A: each refused with its kind, none applied, nothing changed.
    let q = quarantine(&a, network);
    assert_eq!(q.len(), attacks.len(), "{q:?}");
    for (name, change, expect) in &attacks {
        let h = change.hash();
        assert_eq!(q.get(&h), Some(expect), "{name}: quarantined as {expect:?}");
        assert!(
            !a.read(network, |r| r.ledger().has_change(&h))
                .expect("read"),
            "{name} was applied"
        );
    }
    let mut now = a.heads(network).expect("heads");
    now.sort();
    assert_eq!(now, heads, "A's ledger is unchanged by the attacks");
    assert_eq!(
        a.read(network, |r| r.ledger().schema_version())
            .expect("read"),
        SCHEMA_VERSION
    );
    let status = a
        .peers(network)
        .expect("peers")
        .into_iter()
        .find(|p| p.device == b_device)
        .expect("B is listed");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused")),
        "{status:?}"
    );

    // A keeps syncing with C, and never forwards what it refused.
    let barrier = a
        .record_event(network, produce("ana", "after-attack", 1))
        .expect("A records");
    wait_until(&c, network, "A's event on C", |r| has_event(r, &barrier)).await;
    c.read(network, |r| {
        for (name, change, _) in &attacks {
            assert!(!r.ledger().has_change(&change.hash()), "{name} on C");
            assert!(!r.is_quarantined(&change.hash()), "{name} reached C");
        }
        assert_eq!(r.quarantine().count(), 0, "C was sent nothing to refuse");
        assert!(has_event(r, &before), "B's honest event before the attack");
    })
    .expect("read");

    // B runs honest software again: its events after the attack reach A and C.
    let b = open(db.path()).await;
    within("B reconnects", b.connect(network, &a.addr()))
        .await
        .expect("B connects");
    let after = b
        .record_event(network, produce("bo", "bo-pears", 2))
        .expect("B records");
    wait_until(&a, network, "B's event on A", |r| has_event(r, &after)).await;
    wait_until(&c, network, "B's event on C", |r| has_event(r, &after)).await;
    converge(&[&a, &b, &c], network).await;

    // A reopens with the same heads, views and quarantine.
    let print = fingerprint(&a, network);
    let q = quarantine(&a, network);
    a.close().await.expect("close A");
    let a = open(da.path()).await;
    assert_eq!(fingerprint(&a, network), print, "A reopens as it was");
    assert_eq!(quarantine(&a, network), q, "with the same quarantine");

    // ...and keeps syncing with both.
    for peer in [&b, &c] {
        within("A reconnects", a.connect(network, &peer.addr()))
            .await
            .expect("A connects");
    }
    let from_a = a
        .record_event(network, produce("ana", "after-reopen", 1))
        .expect("A records");
    let from_b = b
        .record_event(network, produce("bo", "bo-plums", 1))
        .expect("B records");
    wait_until(&b, network, "A's event on B", |r| has_event(r, &from_a)).await;
    wait_until(&c, network, "A's event on C", |r| has_event(r, &from_a)).await;
    wait_until(&c, network, "B's event on C", |r| has_event(r, &from_b)).await;
    converge(&[&a, &b, &c], network).await;
    for (name, change, _) in &attacks {
        for (who, n) in [("A", &a), ("B", &b), ("C", &c)] {
            assert!(
                !n.read(network, |r| r.ledger().has_change(&change.hash()))
                    .expect("read"),
                "{name} applied on {who}"
            );
        }
    }
    for n in [a, b, c] {
        n.close().await.expect("close");
    }
    eprintln!(
        "a_member_with_modified_software_is_quarantined: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_planted_in_a_members_store_poisons_only_that_member() {
    let (da, db, dc) = (tempdir(), tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let c = open(dc.path()).await;
    let network = create_network(&a);
    admit(&a, network, b.device(), "bo");
    admit(&a, network, c.device(), "cy");
    within("B joins", b.join(network, &a.addr()))
        .await
        .expect("B joins");
    within("C joins", c.join(network, &a.addr()))
        .await
        .expect("C joins");
    let before = b
        .record_event(network, produce("bo", "bo-apples", 3))
        .expect("B records");
    converge(&[&a, &b, &c], network).await;

    // B stopped; the crafted change is written into its store as if it had been accepted.
    let saved = b.read(network, |r| r.ledger().save()).expect("read");
    b.close().await.expect("close B");
    let path = db.path().join(STORE_FILE);
    let key = Store::open(&path)
        .expect("B's store")
        .device_key()
        .expect("B's key");
    let (_, planted, _) = attacks(network, &key, &saved)
        .into_iter()
        .find(|(name, _, _)| *name == "speak-for-others")
        .expect("the attack");
    let h = planted.hash();
    {
        let db = Database::open(&path).expect("redb");
        let tx = db.begin_write().expect("write");
        {
            let net = network.to_string();
            let mut t = tx.open_table(CHANGES).expect("changes");
            t.insert((net.as_str(), &h.0), planted.change.raw_bytes())
                .expect("insert");
            let mut s = tx.open_table(SIGNATURES).expect("signatures");
            s.insert((net.as_str(), &h.0), planted.signature.0.as_slice())
                .expect("insert");
        }
        tx.commit().expect("commit");
    }

    // B trusts its own rows; A does not.
    let b = open(db.path()).await;
    assert!(b
        .read(network, |r| r.ledger().has_change(&h))
        .expect("B's network opens"));
    let mut a_events = a.events();
    within("B reconnects", b.connect(network, &a.addr()))
        .await
        .expect("B connects");
    wait_quarantined(&a, network, &mut a_events, &[h]).await;
    assert_eq!(
        quarantine(&a, network).get(&h),
        Some(&Kind::SpeaksForOthers)
    );
    // What B writes next descends from the planted change: refused too.
    let after = b
        .record_event(network, produce("bo", "bo-pears", 2))
        .expect("B records");
    let after_hash = b.heads(network).expect("heads");
    assert_eq!(after_hash.len(), 1);
    wait_quarantined(&a, network, &mut a_events, &after_hash).await;
    assert_eq!(
        quarantine(&a, network).get(&after_hash[0]),
        Some(&Kind::DependsOnRefused)
    );

    // A and C: neither change, nothing forwarded, still syncing.
    let barrier = a
        .record_event(network, produce("ana", "after-plant", 1))
        .expect("A records");
    wait_until(&c, network, "A's event on C", |r| has_event(r, &barrier)).await;
    wait_until(&b, network, "A's event on B", |r| has_event(r, &barrier)).await;
    for (who, n) in [("A", &a), ("C", &c)] {
        n.read(network, |r| {
            assert!(
                !r.ledger().has_change(&h),
                "planted change applied on {who}"
            );
            assert!(!has_event(r, &after), "B's later event applied on {who}");
            assert!(has_event(r, &before), "B's earlier event kept on {who}");
        })
        .expect("read");
    }
    assert_eq!(
        c.read(network, |r| r.quarantine().count()).expect("read"),
        0,
        "C was sent nothing to refuse"
    );
    for n in [a, b, c] {
        n.close().await.expect("close");
    }
}

/// An event by `key`'s device (acting for `agent`) on `saved`, stored as the ledger stores
/// one, with session `suffix`: two calls with one suffix make two changes with one (actor,
/// seq), i.e. an equivocation.
fn own_event(
    network: NetworkId,
    key: &DeviceKey,
    saved: &[u8],
    suffix: u8,
    agent: &str,
    resource: &str,
) -> SignedChange {
    let mut d = Automerge::load(saved)
        .expect("load")
        .with_actor(key.id().actor([suffix; 8]));
    let start = d
        .get_heads()
        .iter()
        .filter_map(|h| d.get_change_meta_by_hash(h))
        .map(|m| m.max_op)
        .max()
        .unwrap_or(0)
        + 1;
    let id = format!("{start}@{}", d.get_actor());
    let b = bucket(&d, "eventBuckets", (start & 0xff) as usize);
    let event = EconomicEvent::new(Action::Produce, agent, agent)
        .resource(resource)
        .quantity(1, "kg");
    let mut tx = d.transaction();
    tx.put(
        &b,
        id.as_str(),
        serde_json::to_string(&event).expect("json"),
    )
    .expect("put");
    tx.commit();
    sign(network, key, &d)
}

/// Push `changes` to `to` over a raw connection with `ep` (a member's key), and wait until
/// `until` holds on `to`.
async fn push_raw(
    ep: &Endpoint,
    to: &Node,
    network: NetworkId,
    changes: Vec<SignedChange>,
    until: impl AsyncFnOnce(),
) {
    let conn = within(
        "the attacker dials",
        ep.connect(endpoint_addr(&to.addr()), &reflow::net::alpn(&network)),
    )
    .await
    .expect("a member's key: the handshake succeeds");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Some(_)) = recv.read(&mut buf).await {}
    });
    send.write_all(&opening()).await.expect("opening");
    send.write_all(&Frame::Push { changes }.encode())
        .await
        .expect("push");
    until().await;
    conn.close(0u32.into(), b"done");
    drain.abort();
}

/// Equivocation between real nodes, where the proof must travel: member B (modified software
/// with its own key) gives C one twin while A is offline, then gives A both while C is
/// offline. A cuts B off. When C connects to A later, A sends the proof as the connection
/// opens (`Replica::equivocation_evidence`), and C revokes the twin it had accepted: both
/// replicas end with the same heads and neither twin. Without the proof C would keep its
/// twin for good: A's ledger holds neither twin, so no sync round would ever carry one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proof_of_equivocation_reaches_a_peer_that_connects_later() {
    let (da, db, dc) = (tempdir(), tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let c = open(dc.path()).await;
    let network = create_network(&a);
    admit(&a, network, b.device(), "bo");
    admit(&a, network, c.device(), "cy");
    within("B joins", b.join(network, &a.addr()))
        .await
        .expect("B joins");
    within("C joins", c.join(network, &a.addr()))
        .await
        .expect("C joins");
    converge(&[&a, &b, &c], network).await;

    let saved = b.read(network, |r| r.ledger().save()).expect("read");
    b.close().await.expect("close B");
    let key = Store::open(db.path().join(STORE_FILE))
        .expect("B's store")
        .device_key()
        .expect("B's key");
    let one = own_event(network, &key, &saved, 41, "bo", "bo-apples");
    let two = own_event(network, &key, &saved, 41, "bo", "bo-pears");
    assert_eq!(
        (one.change.actor_id(), one.change.seq()),
        (two.change.actor_id(), two.change.seq()),
        "twins"
    );
    let ep = raw_endpoint(&key).await;

    // A offline: C accepts the first twin.
    a.close().await.expect("close A");
    let h1 = one.hash();
    push_raw(&ep, &c, network, vec![one.clone()], async || {
        wait_until(&c, network, "the first twin on C", |r| {
            r.ledger().has_change(&h1)
        })
        .await;
    })
    .await;
    c.close().await.expect("close C");

    // C offline: A gets both and cuts B off.
    let a = open(da.path()).await;
    let mut a_events = a.events();
    let twins = [one.hash(), two.hash()];
    push_raw(
        &ep,
        &a,
        network,
        vec![one.clone(), two.clone()],
        async || {
            wait_quarantined(&a, network, &mut a_events, &twins).await;
        },
    )
    .await;
    ep.close().await;
    for h in &twins {
        assert!(
            a.read(network, |r| matches!(
                r.quarantine()
                    .find(|q| q.change.hash() == *h)
                    .map(|q| &q.reason),
                Some(Rejection::Equivocation { .. })
            ))
            .expect("read"),
            "A refuses twin {h} as an equivocation"
        );
    }

    // C comes back and connects to A: the proof reaches it, the twin it held is revoked.
    let c = open(dc.path()).await;
    assert!(
        c.read(network, |r| r.ledger().has_change(&h1))
            .expect("read"),
        "C reopened with its twin"
    );
    let mut c_events = c.events();
    within("C connects to A", c.connect(network, &a.addr()))
        .await
        .expect("C connects");
    wait_quarantined(&c, network, &mut c_events, &twins).await;
    let heads = converge(&[&a, &c], network).await;
    for (who, n) in [("A", &a), ("C", &c)] {
        n.read(network, |r| {
            for h in &twins {
                assert!(!r.ledger().has_change(h), "a twin stands on {who}");
            }
        })
        .expect("read");
    }
    // And it stays so across a reopen of C.
    c.close().await.expect("close C");
    let c = open(dc.path()).await;
    let mut now = c.heads(network).expect("heads");
    now.sort();
    assert_eq!(now, heads, "C reopens without the twin");
    for n in [a, c] {
        n.close().await.expect("close");
    }
}
