//! An admin's node migrates a schema-version-1 ledger when it opens it; a member's node keeps
//! it read-only until the migration arrives. Real nodes over iroh on loopback, real redb
//! stores built from the golden v1 network (engine/tests/golden/v1-network.json: signed
//! changes written by the last schema-v1 build; admin secret = 32 bytes of 0x07, member `bo`
//! = 32 bytes of 0x08).
//!
//! - `an_admin_node_migrates_a_v1_ledger_on_open`: the admin's node opens at schema version
//!   2 with one new, durable, signed change; events, their ids and the views are unchanged;
//!   a reopen does not migrate again. `bo`'s node opened on its own v1 store is read-only
//!   (`MigrationRequired`) until it syncs with the admin, then writes v2. A member admitted
//!   afterwards joins a version-2 ledger.

mod support;

use std::path::Path;

use reflow::node::STORE_FILE;
use reflow::*;
use support::*;

/// The golden v1 network: its id, its signed changes, its views as JSON.
fn golden() -> (NetworkId, Vec<SignedChange>, serde_json::Value) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/tests/golden/v1-network.json"
    );
    let text = std::fs::read_to_string(path).expect("golden file");
    let golden: serde_json::Value = serde_json::from_str(&text).expect("json");
    let network: NetworkId = golden["network"]
        .as_str()
        .expect("id")
        .parse()
        .expect("network id");
    let changes = golden["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let bytes = hex::decode(c["change"].as_str().expect("hex")).expect("hex");
            let sig = hex::decode(c["signature"].as_str().expect("hex")).expect("hex");
            SignedChange {
                change: Change::from_bytes(bytes).expect("change"),
                signature: ChangeSignature(sig.try_into().expect("64 bytes")),
            }
        })
        .collect();
    (network, changes, golden["snapshot"].clone())
}

/// A node store in `dir` whose device key is `secret` and which holds the v1 network, as a
/// node of the last schema-v1 build left it (the node metadata row `device_key` is the
/// documented place of the key, docs/security.md).
fn v1_store(dir: &Path, secret: [u8; 32], network: NetworkId, changes: &[SignedChange]) {
    let store = Store::open(dir.join(STORE_FILE)).expect("store");
    store
        .put_node_meta("device_key", &secret)
        .expect("device key");
    let key = store.device_key().expect("key");
    assert_eq!(key.id(), DeviceKey::from_secret_bytes(&secret).id());
    let (replica, receipt) = Replica::join(network, key, changes.to_vec()).expect("join v1");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(replica.ledger().schema_version(), 1);
    store.create_replica(replica, changes).expect("store v1");
}

fn event_ids(node: &Node, network: NetworkId) -> Vec<Id> {
    node.read(network, |r| {
        r.ledger()
            .events(&EventFilter::default())
            .into_iter()
            .map(|e| e.id)
            .collect()
    })
    .expect("read")
}

fn schema(node: &Node, network: NetworkId) -> u64 {
    node.read(network, |r| r.ledger().schema_version())
        .expect("read")
}

fn views(node: &Node, network: NetworkId) -> serde_json::Value {
    node.read(network, |r| {
        serde_json::to_value(r.ledger().snapshot()).expect("json")
    })
    .expect("read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_node_migrates_a_v1_ledger_on_open() {
    let (network, changes, expected) = golden();
    let (da, db, dc) = (tempdir(), tempdir(), tempdir());
    v1_store(da.path(), [7; 32], network, &changes);
    v1_store(db.path(), [8; 32], network, &changes);

    // bo's node: a member's, so the ledger stays at version 1 and read-only.
    let bo = open(db.path()).await;
    assert_eq!(schema(&bo, network), 1);
    let ids_v1 = event_ids(&bo, network);
    assert_eq!(ids_v1.len(), 3);
    assert_eq!(views(&bo, network), expected);
    let r = bo.record_event(network, produce("bo", "too-early", 1));
    assert!(
        matches!(r, Err(NetError::Core(Error::MigrationRequired))),
        "{r:?}"
    );
    let v1_heads = bo.heads(network).expect("heads");

    // The admin's node migrates on open: one change on top of the v1 heads.
    let a = open(da.path()).await;
    assert_eq!(schema(&a, network), 2);
    assert_eq!(event_ids(&a, network), ids_v1, "event ids are stable");
    assert_eq!(views(&a, network), expected, "views are unchanged");
    let migrated = a.heads(network).expect("heads");
    assert_eq!(migrated.len(), 1);
    assert!(!v1_heads.contains(&migrated[0]));
    let new = a
        .read(network, |r| {
            assert!(r.signature(&migrated[0]).is_some(), "signed");
            r.ledger().changes_since(&v1_heads)
        })
        .expect("read");
    assert_eq!(new.len(), 1, "the migration is one change");
    let mut deps = new[0].deps().to_vec();
    deps.sort();
    let mut v1_sorted = v1_heads.clone();
    v1_sorted.sort();
    assert_eq!(deps, v1_sorted, "on the v1 heads");

    // Durable: a reopened admin node has it and does not migrate again.
    a.close().await.expect("close");
    let a = open(da.path()).await;
    assert_eq!(a.heads(network).expect("heads"), migrated);
    assert_eq!(schema(&a, network), 2);

    // bo syncs with the admin and receives the migration: it may write now, in v2.
    within("bo connects", bo.connect(network, &a.addr()))
        .await
        .expect("connect");
    wait_until(&bo, network, "the migration on bo", |r| {
        r.ledger().schema_version() == 2
    })
    .await;
    assert_eq!(event_ids(&bo, network), ids_v1);
    let e = bo
        .record_event(network, produce("bo", "after-migration", 2))
        .expect("bo writes after the migration");
    wait_until(&a, network, "bo's v2 event on the admin", |r| {
        has_event(r, &e)
    })
    .await;

    // A member admitted after the migration joins a version-2 ledger.
    let c = open(dc.path()).await;
    admit(&a, network, c.device(), "cy");
    within("C joins", c.join(network, &a.addr()))
        .await
        .expect("C joins");
    wait_until(&c, network, "bo's event on C", |r| has_event(r, &e)).await;
    assert_eq!(schema(&c, network), 2);
    let mut all = ids_v1.clone();
    all.push(e.clone());
    assert_eq!(event_ids(&c, network), all);
    let from_c = c
        .record_event(network, produce("cy", "cy-apples", 1))
        .expect("C writes");
    wait_until(&a, network, "C's event on the admin", |r| {
        has_event(r, &from_c)
    })
    .await;
    converge(&[&a, &bo, &c], network).await;
    for n in [a, bo, c] {
        n.close().await.expect("close");
    }
}
