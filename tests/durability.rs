//! The node's durable write path (issue 13, item 2), on a real node and its redb file.
//!
//! - `the_node_compacts_its_store_by_itself`: a node records a long history one fsync'd write
//!   at a time and never calls compaction; its store must stay within a small factor of the
//!   saved document (the stored changes after the snapshot are folded in by the node's own
//!   policy, `CompactionPolicy::default()`), and everything reopens.
#![allow(clippy::print_stdout)] // figures for the report

mod support;

use reflow::node::STORE_FILE;
use reflow::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_compacts_its_store_by_itself() {
    let dir = tempdir();
    let node = open(dir.path()).await;
    let network = create_network(&node);
    const N: u32 = 1500;
    node.record_event(network, produce("ana", "compost", N + 10))
        .expect("produce");
    for _ in 0..N {
        let mut event = consume("ana", "compost", 1);
        event.note =
            Some("a note long enough to look like what people write at a market stall".into());
        node.record_event(network, event).expect("consume");
    }
    let (saved, events, fingerprint_before) = node
        .read(network, |r| {
            (
                r.ledger().save().len() as u64,
                r.ledger().event_count(),
                r.ledger().heads().len(),
            )
        })
        .expect("read");
    let before = fingerprint(&node, network);
    node.close().await.expect("close");

    let store = Store::open(dir.path().join(STORE_FILE)).expect("store");
    let stats = store.stats(&network.to_string()).expect("stats");
    let stored = stats.tail_bytes + stats.snapshot_bytes;
    let file = std::fs::metadata(dir.path().join(STORE_FILE))
        .expect("file")
        .len();
    println!(
        "node compaction: {events} events, saved document {saved} B, snapshot {} B, tail {} changes / {} B, stored {stored} B ({:.2}x), redb file {file} B",
        stats.snapshot_bytes,
        stats.tail_changes,
        stats.tail_bytes,
        stored as f64 / saved as f64
    );
    assert!(stats.snapshot_bytes > 0, "the node compacted: {stats:?}");
    assert!(
        stats.tail_changes < u64::from(N),
        "the tail was folded: {stats:?}"
    );
    // The policy bounds the tail by the snapshot's size plus its floor.
    let floor = CompactionPolicy::default().min_tail_bytes as u64;
    assert!(
        stored <= 2 * saved + floor,
        "stored {stored} B for a saved document of {saved} B"
    );
    assert!(fingerprint_before > 0);
    drop(store);

    let node = open(dir.path()).await;
    assert_eq!(
        fingerprint(&node, network),
        before,
        "reopens to the same state"
    );
    node.close().await.expect("close");
}
