//! The store on disk: round trips, compaction, durability bookkeeping, and bad files (each
//! gives a typed error, no panic, and leaves the file exactly as it was).
#![allow(clippy::print_stdout)] // the lock-holder child process signals readiness on stdout

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reflow::{
    Action, ActorId, Agent, EconomicEvent, Error, Id, Ledger, Quantity, ResourceDescription, Store,
    Unit,
};

fn actor(n: u8) -> ActorId {
    ActorId::from([n; 16])
}

fn genesis() -> Ledger {
    let mut l = Ledger::new_network("store test", actor(1)).expect("genesis");
    l.create(Unit::new("kg", "kilogram", "kg")).expect("unit");
    l.create(Agent::person("ana", "Ana")).expect("agent");
    l.record_event(
        EconomicEvent::new(Action::Produce, "ana", "ana")
            .quantity(10, "kg")
            .creating(ResourceDescription::new("flour", "Flour")),
    )
    .expect("produce");
    l
}

fn consume(q: &str) -> EconomicEvent {
    EconomicEvent::new(Action::Consume, "ana", "ana")
        .resource("flour")
        .quantity(q.parse::<Quantity>().expect("decimal"), "kg")
}

/// A store with one network and `n` extra events, closed.
fn populated(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("node.redb");
    let store = Store::open(&path).expect("create");
    let mut ledger = store
        .create_ledger("net", genesis())
        .expect("create ledger");
    for _ in 0..n {
        ledger.record_event(consume("0.01")).expect("record");
    }
    path
}

fn flour(store: &Store, reader: u8) -> String {
    let l = store
        .open_ledger("net", actor(reader))
        .expect("open ledger");
    l.ledger()
        .resource(&Id::from("flour"))
        .expect("flour")
        .onhand_quantity
        .to_string()
}

#[test]
fn round_trip_snapshot_and_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = populated(tmp.path(), 20);
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.networks().expect("networks"), vec!["net".to_owned()]);
    assert_eq!(flour(&store, 2), "9.8 kg");

    let mut l = store.open_ledger("net", actor(3)).expect("open");
    let before = store.stats("net").expect("stats");
    assert!(
        before.tail_changes >= 23,
        "all changes in the tail: {before:?}"
    );
    l.compact().expect("compact");
    let after = store.stats("net").expect("stats");
    assert_eq!(after.tail_changes, 0, "{after:?}");
    assert!(after.snapshot_bytes > 0);
    l.record_event(consume("0.3"))
        .expect("record after compaction");
    assert_eq!(store.stats("net").expect("stats").tail_changes, 1);
    drop(l);
    // Snapshot + tail reopen to the same state.
    assert_eq!(flour(&store, 4), "9.5 kg");
}

#[test]
fn compaction_keeps_a_write_made_while_it_ran() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = populated(tmp.path(), 5);
    let store = Store::open(&path).expect("reopen");
    let mut l = store.open_ledger("net", actor(2)).expect("open");
    // Prepare the compaction, then write, then run it (as a background thread would).
    let job = l.compaction_job();
    let late = l
        .record_event(consume("1"))
        .expect("write during compaction");
    let worker = {
        let store = store.clone();
        std::thread::spawn(move || job.run(&store))
    };
    worker.join().expect("thread").expect("compaction");
    assert_eq!(store.stats("net").expect("stats").tail_changes, 1);
    drop(l);
    let reopened = store.open_ledger("net", actor(3)).expect("reopen");
    assert!(
        reopened.ledger().event(&late).is_some(),
        "the late write survived compaction"
    );
    assert_eq!(
        reopened
            .ledger()
            .resource(&Id::from("flour"))
            .expect("flour")
            .onhand_quantity
            .to_string(),
        "8.95 kg"
    );
}

#[test]
fn a_stale_compaction_never_replaces_a_newer_snapshot() {
    // A job prepared, then overtaken by a newer compaction that deleted the rows it folded:
    // run late, the old job would put back an older snapshot and lose those changes.
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = populated(tmp.path(), 2);
    let store = Store::open(&path).expect("reopen");
    let mut l = store.open_ledger("net", actor(2)).expect("open");
    let stale = l.compaction_job();
    let folded = l.record_event(consume("1")).expect("write");
    l.compact().expect("newer compaction");
    let after = l.record_event(consume("2")).expect("write");
    let snapshot_before = store.stats("net").expect("stats");
    let err = stale.run(&store).expect_err("a stale job is refused");
    assert!(matches!(err, Error::StaleCompaction { .. }), "got {err}");
    assert_eq!(
        store.stats("net").expect("stats"),
        snapshot_before,
        "the refused job changed nothing"
    );
    drop(l);
    let reopened = store.open_ledger("net", actor(3)).expect("reopen");
    assert!(
        reopened.ledger().event(&folded).is_some(),
        "compacted change kept"
    );
    assert!(
        reopened.ledger().event(&after).is_some(),
        "later change kept"
    );
    assert_eq!(flour(&store, 4), "6.98 kg");
}

#[test]
fn buffered_writes_are_durable_after_flush() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = populated(tmp.path(), 0);
    let store = Store::open(&path).expect("reopen");
    let mut l = store.open_ledger("net", actor(2)).expect("open");
    for _ in 0..100 {
        l.write_buffered(|ledger| ledger.record_event(consume("0.05")))
            .expect("buffered");
    }
    assert!(!l.is_flushed());
    l.flush().expect("flush");
    assert!(l.is_flushed());
    drop(l);
    assert_eq!(flour(&store, 3), "5 kg");
}

#[test]
fn unknown_network_and_duplicate_network() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = populated(tmp.path(), 0);
    let store = Store::open(&path).expect("reopen");
    assert!(matches!(
        store.open_ledger("nope", actor(2)),
        Err(Error::UnknownNetwork { network }) if network == "nope"
    ));
    assert!(matches!(
        store.create_ledger("net", genesis()),
        Err(Error::NetworkExists { .. })
    ));
    assert_eq!(
        flour(&store, 3),
        "10 kg",
        "the failed create changed nothing"
    );
}

#[test]
fn signatures_sync_state_and_node_meta_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = populated(tmp.path(), 1);
    let store = Store::open(&path).expect("reopen");
    let l = store.open_ledger("net", actor(2)).expect("open");
    let head = l.ledger().heads()[0];
    store
        .put_signature("net", &head, &[7; 64])
        .expect("signature");
    store
        .put_sync_state("net", b"peer-1", b"state")
        .expect("sync state");
    store.put_node_meta("name", b"stall 4").expect("meta");
    drop(l);
    drop(store);
    let store = Store::open(&path).expect("reopen");
    assert_eq!(
        store.signature("net", &head).expect("read"),
        Some(vec![7; 64])
    );
    assert_eq!(
        store.sync_state("net", b"peer-1").expect("read"),
        Some(b"state".to_vec())
    );
    assert_eq!(store.sync_state("net", b"peer-2").expect("read"), None);
    assert_eq!(
        store.node_meta("name").expect("read"),
        Some(b"stall 4".to_vec())
    );
}

fn assert_untouched(path: &Path, before: &[u8], what: &str) {
    let after = fs::read(path).expect("read back");
    assert!(
        after == before,
        "{what}: the file was modified by the failed open"
    );
}

#[test]
fn truncated_store_is_reported_and_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = populated(tmp.path(), 50);
    let full = fs::read(&path).expect("read");
    for keep in [full.len() / 2, 4096, 600, 9] {
        let bytes = full[..keep].to_vec();
        fs::write(&path, &bytes).expect("truncate");
        let result = Store::open(&path).and_then(|s| s.open_ledger("net", actor(2)).map(|_| ()));
        match result {
            Err(Error::CorruptStore { .. }) | Err(Error::NotAStore { .. }) => {}
            other => {
                panic!("truncated to {keep} bytes: expected a corrupt-store error, got {other:?}")
            }
        }
        assert_untouched(&path, &bytes, &format!("truncated to {keep}"));
    }
}

#[test]
fn corrupted_store_is_reported_and_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = populated(tmp.path(), 50);
    let good = fs::read(&path).expect("read");
    // Overwrite a run of bytes in several places: header, first pages, middle.
    for (offset, len) in [
        (0usize, 64usize),
        (16, 8),
        (4096, 512),
        (good.len() / 2, 4096),
    ] {
        let mut bad = good.clone();
        let end = (offset + len).min(bad.len());
        for (i, b) in bad[offset..end].iter_mut().enumerate() {
            *b ^= 0xA5 ^ (i as u8);
        }
        fs::write(&path, &bad).expect("write corrupt");
        let result = Store::open(&path).and_then(|s| {
            let l = s.open_ledger("net", actor(2))?;
            // A corruption that redb cannot see at open must still not pass as good data.
            let q = l
                .ledger()
                .resource(&Id::from("flour"))
                .map(|r| r.onhand_quantity.to_string());
            Ok(q)
        });
        match result {
            Err(Error::CorruptStore { .. }) | Err(Error::NotAStore { .. }) => {
                assert_untouched(&path, &bad, &format!("corrupted at {offset}"));
            }
            Err(other) => panic!("corrupted at {offset}: unexpected error kind {other:?}"),
            Ok(q) => {
                // Bytes that no page in use covered: the data must be intact.
                assert_eq!(
                    q.as_deref(),
                    Some("9.5 kg"),
                    "corrupted at {offset}: wrong data read"
                );
            }
        }
    }
}

#[test]
fn files_that_are_not_stores() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"hello, this is not a database\n".to_vec()),
        (
            "random",
            (0..10_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ];
    for (name, bytes) in cases {
        let path = tmp.path().join(name);
        fs::write(&path, &bytes).expect("write");
        assert!(
            matches!(Store::open(&path), Err(Error::NotAStore { .. })),
            "{name}: expected NotAStore"
        );
        assert_untouched(&path, &bytes, name);
    }

    // A valid redb file that some other program wrote.
    let path = tmp.path().join("other.redb");
    {
        let db = redb::Database::create(&path).expect("redb");
        let tx = db.begin_write().expect("tx");
        {
            let table: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("things");
            let mut t = tx.open_table(table).expect("table");
            t.insert("a", &1).expect("insert");
        }
        tx.commit().expect("commit");
    }
    let before = fs::read(&path).expect("read");
    assert!(matches!(Store::open(&path), Err(Error::NotAStore { .. })));
    assert_untouched(&path, &before, "foreign redb file");
}

#[test]
fn newer_store_version_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = populated(tmp.path(), 1);
    {
        let db = redb::Database::open(&path).expect("redb open");
        let tx = db.begin_write().expect("tx");
        {
            let meta: redb::TableDefinition<'_, &str, &[u8]> =
                redb::TableDefinition::new("reflow_meta");
            let mut t = tx.open_table(meta).expect("meta");
            t.insert(
                "version",
                (reflow::store::STORE_VERSION + 1).to_le_bytes().as_slice(),
            )
            .expect("bump");
        }
        tx.commit().expect("commit");
    }
    let before = fs::read(&path).expect("read");
    match Store::open(&path) {
        Err(Error::UnsupportedStoreVersion {
            found, supported, ..
        }) => {
            assert_eq!(found, reflow::store::STORE_VERSION + 1);
            assert_eq!(supported, reflow::store::STORE_VERSION);
        }
        other => panic!("expected UnsupportedStoreVersion, got {other:?}"),
    }
    assert_untouched(&path, &before, "newer version");
}

#[test]
fn store_open_in_this_process_is_locked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = populated(tmp.path(), 1);
    let store = Store::open(&path).expect("first open");
    assert!(matches!(Store::open(&path), Err(Error::StoreLocked { .. })));
    drop(store);
    Store::open(&path).expect("open again after close");
}

/// Child for `store_open_in_another_process_is_locked`: holds the store open until stdin
/// closes.
#[test]
#[ignore = "run as a child process"]
fn lock_holder_child() {
    let Ok(path) = std::env::var("REFLOW_LOCK_PATH") else {
        return;
    };
    let _store = Store::open(&path).expect("child opens");
    println!("READY");
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn store_open_in_another_process_is_locked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = populated(tmp.path(), 1);
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "lock_holder_child", "--ignored", "--nocapture"])
        .env("REFLOW_LOCK_PATH", &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.trim() == "READY");
    assert!(ready, "the child did not open the store");
    let before = fs::read(&path).expect("read");
    match Store::open(&path) {
        Err(Error::StoreLocked { path: p }) => assert_eq!(p, path),
        other => panic!("expected StoreLocked, got {other:?}"),
    }
    assert_untouched(&path, &before, "locked store");
    drop(child.stdin.take());
    // Read the child's output to the end so it can exit cleanly.
    lines.map_while(Result::ok).for_each(drop);
    child.wait().expect("child exits");
    Store::open(&path).expect("open after the other process closed it");
}

#[test]
fn reopening_returns_space_freed_by_compaction() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("node.redb");
    {
        let store = Store::open(&path).expect("create");
        let mut l = store.create_ledger("net", genesis()).expect("ledger");
        for _ in 0..3000 {
            l.write_buffered(|l| l.record_event(consume("0.001")))
                .expect("record");
        }
        l.flush().expect("flush");
        l.compact().expect("compact");
        assert_eq!(store.stats("net").expect("stats").tail_changes, 0);
    }
    let before = fs::metadata(&path).expect("size").len();
    let store = Store::open(&path).expect("reopen");
    let after = fs::metadata(&path).expect("size").len();
    assert!(
        after * 2 < before,
        "the freed pages of the folded changes go back to the file system on open: {before} -> {after} bytes"
    );
    assert_eq!(
        flour(&store, 2),
        "7 kg",
        "nothing lost by the file compaction"
    );
    drop(store);
    // A second open (after a ledger was opened, which writes a little) stays small.
    let store = Store::open(&path).expect("reopen again");
    let again = fs::metadata(&path).expect("size").len();
    assert!(again * 2 < before, "{before} -> {after} -> {again} bytes");
    assert_eq!(flour(&store, 3), "7 kg");
}
