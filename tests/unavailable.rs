//! A node is never bricked by one of its networks: a network whose stored replica cannot be
//! opened is kept unavailable, with its reason, while the node opens and its other networks
//! read, write and sync as usual; the broken network's stored rows are left untouched.
//!
//! - `a_newer_schema_makes_one_network_unavailable_and_the_other_syncs`: a change raising
//!   `schemaVersion` to 99 (what a newer Reflow, or a peer pretending to be one, could leave
//!   in the store) is written straight into one network's rows with redb; the node reopens,
//!   reports that network unavailable (unsupported version), refuses reads, writes and joins
//!   of it with the typed error and refuses peers dialing it with a reason, and syncs the
//!   other network with a peer over loopback.
//! - `a_garbage_row_makes_only_its_network_unavailable`: garbage in one network's changes
//!   table: that network is unavailable (damaged) across reopenings, the others work, a new
//!   network can be created.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use automerge::transaction::Transactable;
use automerge::AutoCommit;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use reflow::node::{Invitee, NetworkStatus, NodeEvent, UnavailableKind, STORE_FILE};
use reflow::sync::RefuseCode;
use reflow::*;
use support::*;

// The store's tables (docs/storage.md, "Layout"), read and written directly by these tests.
type Keyed = TableDefinition<'static, (&'static str, &'static [u8; 32]), &'static [u8]>;
const CHANGES: Keyed = TableDefinition::new("reflow_changes");
const SIGNATURES: Keyed = TableDefinition::new("reflow_signatures");
const QUARANTINE: Keyed = TableDefinition::new("reflow_quarantine");
const NETWORKS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("reflow_networks");
const SNAPSHOTS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("reflow_snapshots");
const SYNC_STATES: TableDefinition<'static, (&'static str, &'static [u8]), &'static [u8]> =
    TableDefinition::new("reflow_sync_states");

/// Every row of `network` in the store, by table: what must stay exactly as it is.
type Rows = BTreeMap<&'static str, Vec<(Vec<u8>, Vec<u8>)>>;

fn store_file(dir: &Path) -> PathBuf {
    dir.join(STORE_FILE)
}

fn rows(path: &Path, network: NetworkId) -> Rows {
    let key = network.to_string();
    let db = Database::open(path).expect("open the store with redb");
    let tx = db.begin_read().expect("read");
    let mut out = Rows::new();
    for (name, table) in [
        ("changes", CHANGES),
        ("signatures", SIGNATURES),
        ("quarantine", QUARANTINE),
    ] {
        let t = tx.open_table(table).expect("table");
        let range = t
            .range((key.as_str(), &[0u8; 32])..=(key.as_str(), &[0xffu8; 32]))
            .expect("range");
        let list = range
            .map(|row| {
                let (k, v) = row.expect("row");
                (k.value().1.to_vec(), v.value().to_vec())
            })
            .collect();
        out.insert(name, list);
    }
    for (name, table) in [("networks", NETWORKS), ("snapshots", SNAPSHOTS)] {
        let t = tx.open_table(table).expect("table");
        let list = t
            .get(key.as_str())
            .expect("get")
            .map(|v| (Vec::new(), v.value().to_vec()))
            .into_iter()
            .collect();
        out.insert(name, list);
    }
    let t = tx.open_table(SYNC_STATES).expect("table");
    let list = t
        .iter()
        .expect("iter")
        .map(|row| row.expect("row"))
        .filter(|(k, _)| k.value().0 == key)
        .map(|(k, v)| (k.value().1.to_vec(), v.value().to_vec()))
        .collect();
    out.insert("sync states", list);
    assert!(!out["networks"].is_empty(), "the store lists {network}");
    out
}

/// Write a change raising the ledger's `schemaVersion` to `version` into `network`'s rows.
fn raise_schema_version(path: &Path, network: NetworkId, version: u64) {
    let key = network.to_string();
    let db = Database::open(path).expect("open the store with redb");
    let mut bytes = Vec::new();
    {
        let tx = db.begin_read().expect("read");
        let snaps = tx.open_table(SNAPSHOTS).expect("snapshots");
        if let Some(v) = snaps.get(key.as_str()).expect("snapshot") {
            // Version tag, head count (u32 LE), the heads, then the document.
            let v = v.value();
            let heads = u32::from_le_bytes(v[1..5].try_into().expect("4 bytes")) as usize;
            bytes.extend_from_slice(&v[5 + 32 * heads..]);
        }
        let t = tx.open_table(CHANGES).expect("changes");
        for row in t
            .range((key.as_str(), &[0u8; 32])..=(key.as_str(), &[0xffu8; 32]))
            .expect("range")
        {
            bytes.extend_from_slice(row.expect("row").1.value());
        }
    }
    let mut doc = AutoCommit::load(&bytes).expect("the stored ledger loads");
    doc.set_actor(ActorId::from([9u8; 16]));
    doc.put(automerge::ROOT, "schemaVersion", version)
        .expect("put");
    let change = doc.get_last_local_change().expect("a change");
    let tx = db.begin_write().expect("write");
    {
        let mut t = tx.open_table(CHANGES).expect("changes");
        t.insert((key.as_str(), &change.hash().0), change.raw_bytes())
            .expect("insert");
    }
    tx.commit().expect("commit");
}

/// Write a row of garbage into `network`'s changes.
fn write_garbage(path: &Path, network: NetworkId) {
    let key = network.to_string();
    let db = Database::open(path).expect("open the store with redb");
    let tx = db.begin_write().expect("write");
    {
        let mut t = tx.open_table(CHANGES).expect("changes");
        t.insert(
            (key.as_str(), &[0x5a; 32]),
            b"not an automerge change".as_slice(),
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

/// Whether `r` is the typed error of `network` being unavailable for `kind`.
fn is_unavailable<T>(r: &NetResult<T>, network: NetworkId, kind: UnavailableKind) -> bool {
    matches!(r, Err(NetError::NetworkUnavailable { network: n, kind: k, .. }) if *n == network && *k == kind)
}

/// Every call on `network` of `node` is refused with the typed error.
async fn assert_refused(node: &Node, network: NetworkId, kind: UnavailableKind, peer: &PeerAddr) {
    let read = node.read(network, |r| r.ledger().event_count());
    assert!(is_unavailable(&read, network, kind), "read: {read:?}");
    let message = read.expect_err("refused").to_string();
    assert!(message.contains("unavailable"), "{message}");
    let write = node.record_event(network, produce("ana", "figs", 1));
    assert!(is_unavailable(&write, network, kind), "write: {write:?}");
    let write = node.write(network, |l| l.create(Unit::new("l", "litre", "l")));
    assert!(is_unavailable(&write, network, kind), "write: {write:?}");
    let heads = node.heads(network);
    assert!(is_unavailable(&heads, network, kind), "heads: {heads:?}");
    let sub = node.subscribe(network);
    assert!(is_unavailable(&sub, network, kind), "subscribe");
    let peers = node.peers(network);
    assert!(is_unavailable(&peers, network, kind), "peers: {peers:?}");
    let member = node.add_member(network, peer.device, Role::Member, Id::from("bob"));
    assert!(
        is_unavailable(&member, network, kind),
        "add member: {member:?}"
    );
    let invite = node.invite(
        network,
        Role::Member,
        None,
        std::time::Duration::from_secs(60),
        Invitee::Anyone,
    );
    assert!(is_unavailable(&invite, network, kind), "invite: {invite:?}");
    let connect = within("connect", node.connect(network, peer)).await;
    assert!(
        is_unavailable(&connect, network, kind),
        "connect: {connect:?}"
    );
    // Never joined over (that would replace what is stored).
    let join = within("join", node.join(network, peer)).await;
    assert!(is_unavailable(&join, network, kind), "join: {join:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_schema_makes_one_network_unavailable_and_the_other_syncs() {
    let (da, db) = (tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let good = create_network(&a);
    let bad = a
        .create_network("broken", Agent::person("ana", "Ana"))
        .expect("second network");
    a.write(bad, |l| l.create(Unit::new("kg", "kilogram", "kg")))
        .expect("unit");
    for network in [good, bad] {
        record_history(&a, network, "ana", "apples", 12);
        admit(&a, network, b.device(), "bob");
        within("join", b.join(network, &a.addr()))
            .await
            .expect("join");
        converge(&[&a, &b], network).await;
    }
    let good_before = fingerprint(&a, good);
    a.close().await.expect("close A");
    b.close().await.expect("close B");

    let path = store_file(da.path());
    raise_schema_version(&path, bad, 99);
    let kept = rows(&path, bad);

    // The node opens, and lists both networks.
    let a = open(da.path()).await;
    let mut both = vec![good, bad];
    both.sort();
    assert_eq!(a.networks(), both);
    assert_eq!(
        a.network_status(good).expect("status"),
        NetworkStatus::Available
    );
    let NetworkStatus::Unavailable { kind, reason } = a.network_status(bad).expect("status") else {
        panic!("the network with schema version 99 is unavailable");
    };
    eprintln!("unavailable: {reason}");
    assert_eq!(kind, UnavailableKind::UnsupportedVersion);
    assert!(
        reason.contains("schema version 99") && reason.contains("upgrade"),
        "the reason names the problem: {reason}"
    );
    let problems = a.network_problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].network, bad);
    assert_eq!(problems[0].kind, UnavailableKind::UnsupportedVersion);
    assert!(matches!(
        a.network_status(NetworkId([3; 32])),
        Err(NetError::UnknownNetwork { .. })
    ));

    // The good network is as it was, and reads, writes and syncs.
    assert_eq!(fingerprint(&a, good), good_before);
    let b = open(db.path()).await;
    assert_refused(&a, bad, UnavailableKind::UnsupportedVersion, &b.addr()).await;
    within("connect", b.connect(good, &a.addr()))
        .await
        .expect("B syncs the good network with A");
    let from_a = a
        .record_event(good, produce("ana", "plums", 4))
        .expect("A writes");
    wait_until(&b, good, "A's event on B", |r| has_event(r, &from_a)).await;
    let from_b = b
        .record_event(good, produce("bob", "nuts", 2))
        .expect("B writes");
    wait_until(&a, good, "B's event on A", |r| has_event(r, &from_b)).await;
    converge(&[&a, &b], good).await;

    // A peer dialing A for the unavailable network is refused with a reason.
    let mut events = a.events();
    let refused = within("connect", b.connect(bad, &a.addr())).await;
    match &refused {
        Err(NetError::Refused { code, reason, .. }) => {
            assert_eq!(*code, RefuseCode::WrongNetwork);
            assert!(
                reason.contains("unavailable") && reason.contains("newer Reflow"),
                "{reason}"
            );
        }
        other => panic!("B is refused for the unavailable network: {other:?}"),
    }
    if let Err(e) = &refused {
        eprintln!("refused: {e}");
    }
    wait_event(&mut events, "A's refusal", |e| {
        matches!(e, NodeEvent::Refused { network, by_us: true, code: RefuseCode::WrongNetwork, .. } if *network == bad)
    })
    .await;
    // B's own replica of it is fine.
    assert!(b.network_status(bad).expect("status").is_available());
    a.close().await.expect("close A");
    b.close().await.expect("close B");

    assert_eq!(
        rows(&path, bad),
        kept,
        "the broken network's rows are untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_row_makes_only_its_network_unavailable() {
    let dir = tempdir();
    let a = open(dir.path()).await;
    let good = create_network(&a);
    let bad = a
        .create_network("broken", Agent::person("ana", "Ana"))
        .expect("second network");
    a.write(bad, |l| l.create(Unit::new("kg", "kilogram", "kg")))
        .expect("unit");
    record_history(&a, bad, "ana", "apples", 6);
    a.close().await.expect("close");

    let path = store_file(dir.path());
    write_garbage(&path, bad);
    let kept = rows(&path, bad);

    for round in 0..2 {
        let a = open(dir.path()).await;
        let NetworkStatus::Unavailable { kind, reason } = a.network_status(bad).expect("status")
        else {
            panic!("round {round}: the network with a garbage row is unavailable");
        };
        eprintln!("unavailable: {reason}");
        assert_eq!(kind, UnavailableKind::Damaged, "{reason}");
        assert!(reason.contains("damaged"), "{reason}");
        assert!(
            reason.contains(&bad.to_string()),
            "names the network: {reason}"
        );
        let read = a.read(bad, |r| r.ledger().event_count());
        assert!(is_unavailable(&read, bad, UnavailableKind::Damaged));
        let write = a.record_event(bad, produce("ana", "figs", 1));
        assert!(is_unavailable(&write, bad, UnavailableKind::Damaged));

        // The rest of the node works: the good network, and a new one.
        let id = a
            .record_event(good, produce("ana", &format!("pears{round}"), 3))
            .expect("write the good network");
        assert!(a.read(good, |r| has_event(r, &id)).expect("read"));
        let third = a
            .create_network(&format!("new {round}"), Agent::person("ana", "Ana"))
            .expect("a new network");
        assert!(a.network_status(third).expect("status").is_available());
        assert!(a.networks().contains(&bad));
        a.close().await.expect("close");
        assert_eq!(rows(&path, bad), kept, "round {round}: rows untouched");
    }
}
