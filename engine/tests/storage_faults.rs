//! Storage faults (issue 13, item 4): a [`DurableReplica`] over a disk that fails chosen or
//! random writes and fsyncs, fills up and loses power ([`reflow::store::fault::FaultyDisk`]).
//!
//! The model-based test runs seeded random operations — record, receive a member's changes,
//! compact, reopen, lose power (clean or torn), arm faults — against a plain model: the set of
//! events acknowledged. After every operation it checks, on a copy of the disk as it is:
//! the store opens (never `CorruptStore`), it holds exactly what the replica holds in memory
//! (a failed commit leaves nothing in memory that is not stored), and every acknowledged event
//! is there; after a power loss, every acknowledged event survived.
//!
//! Seed: `REFLOW_FAULT_SEED` (default fixed, printed); cases: `REFLOW_FAULT_CASES` (default
//! 24; e.g. `REFLOW_FAULT_CASES=500 cargo test -p reflow --release --test storage_faults`).
#![allow(clippy::print_stdout)] // the seed and the figures are printed for the report

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use reflow::store::fault::FaultyDisk;
use reflow::*;

const DEFAULT_SEED: u64 = 0x5EED_F417_2026;

fn produce(n: u32, agent: &str, payload: usize) -> NewEvent {
    EconomicEvent::new(Action::Produce, agent, agent)
        .quantity(1, "kg")
        .creating(ResourceDescription::new(
            format!("r{n}"),
            format!("lot {n} {}", "x".repeat(payload)),
        ))
}

fn open_store(disk: &FaultyDisk) -> Result<Store> {
    let d = disk.clone();
    Store::open_backend(format!("faulty-disk-{:p}", disk), move || d.backend())
}

/// Which of the events `0..next` a ledger holds.
fn present(ledger: &Ledger, next: u32) -> BTreeSet<u32> {
    (0..next)
        .filter(|n| ledger.resource(&Id::from(format!("r{n}"))).is_some())
        .collect()
}

fn sorted_heads(l: &Ledger) -> Vec<ChangeHash> {
    let mut h = l.heads();
    h.sort();
    h
}

/// One step of a run.
#[derive(Debug, Clone)]
enum Op {
    /// Record an event locally (with a payload of this many bytes).
    Record(usize),
    /// The member records an event; the replica receives every change not yet acknowledged.
    PeerRecord,
    /// Receive again what the member made and the replica has not acknowledged.
    Receive,
    /// Fold the store into a snapshot.
    Compact,
    /// Close and reopen the store.
    Reopen,
    /// Lose power (torn: a random subset of the unsynced writes survives), then reopen.
    PowerLoss { torn: bool },
    /// Fail the write after this many.
    FailWrite(u64),
    /// Fail the fsync after this many.
    FailSync(u64),
    /// Fail writes and fsyncs at random (per mille) during the next operation.
    Random(u32, u32),
    /// The disk is full beyond its current size plus this many bytes.
    DiskFull(u64),
    /// Lift every fault.
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..2000).prop_map(Op::Record),
        3 => Just(Op::PeerRecord),
        1 => Just(Op::Receive),
        2 => Just(Op::Compact),
        2 => Just(Op::Reopen),
        2 => any::<bool>().prop_map(|torn| Op::PowerLoss { torn }),
        2 => (0u64..12).prop_map(Op::FailWrite),
        2 => (0u64..4).prop_map(Op::FailSync),
        1 => (0u32..300, 0u32..300).prop_map(|(w, s)| Op::Random(w, s)),
        1 => (0u64..40_000).prop_map(Op::DiskFull),
        2 => Just(Op::Clear),
    ]
}

/// Figures of a run, summed over cases.
#[derive(Debug, Default)]
struct Figures {
    ops: u64,
    acknowledged: u64,
    failed_ops: u64,
    full_errors: u64,
    power_losses: u64,
    torn: u64,
    injected_write_faults: u64,
    injected_sync_faults: u64,
    reopen_errors: u64,
    lost: u64,
}

struct World {
    disk: FaultyDisk,
    durable: Option<DurableReplica>,
    key: DeviceKey,
    network: NetworkId,
    peer: Replica,
    /// The member's changes the replica has not acknowledged yet.
    unsent: Vec<SignedChange>,
    /// Events acknowledged (the call returned Ok), hence durable.
    acked: BTreeSet<u32>,
    /// Events whose call failed: they may or may not be stored.
    maybe: BTreeSet<u32>,
    next: u32,
    /// Random faults last only for one operation.
    random_armed: bool,
}

impl World {
    fn new(seed: u64) -> World {
        let disk = FaultyDisk::new(seed);
        let store = open_store(&disk).expect("create the store");
        let key = store.device_key().expect("device key");
        let (replica, signed) =
            Replica::create_network("market", key.clone(), Agent::person("ana", "Ana"))
                .expect("create");
        let network = replica.network();
        let mut durable = store.create_replica(replica, &signed).expect("store");
        durable
            .write(|l| {
                l.create(Unit::new("kg", "kilogram", "kg"))?;
                l.create(Agent::person("bo", "Bo"))
            })
            .expect("setup");
        let peer_key = DeviceKey::generate().expect("key");
        durable
            .add_member(peer_key.id(), Role::Member, "bo".into())
            .expect("add member");
        let (peer, _) = Replica::join(
            network,
            peer_key,
            durable.replica().signed_changes_since(&[]),
        )
        .expect("join");
        World {
            disk,
            durable: Some(durable),
            key,
            network,
            peer,
            unsent: Vec::new(),
            acked: BTreeSet::new(),
            maybe: BTreeSet::new(),
            next: 0,
            random_armed: false,
        }
    }

    fn reopen(&mut self, f: &mut Figures) -> std::result::Result<(), TestCaseError> {
        self.durable = None;
        let opened =
            open_store(&self.disk).and_then(|s| s.open_replica(&self.network, self.key.clone()));
        let durable = match opened {
            Ok(d) => d,
            Err(e) => {
                prop_assert!(
                    !matches!(e, Error::CorruptStore { .. } | Error::NotAStore { .. }),
                    "reopening under faults found a damaged store: {e}"
                );
                f.reopen_errors += 1;
                // A clean error while faults are armed; without them it must open.
                self.disk.clear_faults();
                match open_store(&self.disk)
                    .and_then(|s| s.open_replica(&self.network, self.key.clone()))
                {
                    Ok(d) => d,
                    Err(e) => return Err(TestCaseError::fail(format!("store does not open: {e}"))),
                }
            }
        };
        self.durable = Some(durable);
        Ok(())
    }

    fn durable(&mut self) -> &mut DurableReplica {
        self.durable.as_mut().expect("open")
    }

    fn step(&mut self, op: &Op, f: &mut Figures) -> std::result::Result<(), TestCaseError> {
        f.ops += 1;
        match op {
            Op::Record(payload) => {
                let n = self.next;
                self.next += 1;
                match self.durable().record_event(produce(n, "ana", *payload)) {
                    Ok(_) => {
                        self.acked.insert(n);
                        f.acknowledged += 1;
                    }
                    Err(e) => {
                        self.failed(&e, f)?;
                        self.maybe.insert(n);
                    }
                }
            }
            Op::PeerRecord | Op::Receive => {
                if matches!(op, Op::PeerRecord) {
                    let n = self.next;
                    self.next += 1;
                    let (_, signed) = self
                        .peer
                        .write(|l| l.record_event(produce(n, "bo", 64)))
                        .expect("peer write");
                    self.unsent.extend(signed);
                    self.maybe.insert(n);
                }
                if self.unsent.is_empty() {
                    return Ok(());
                }
                let batch = self.unsent.clone();
                match self.durable().receive(batch) {
                    Ok(receipt) => {
                        prop_assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
                        self.unsent.clear();
                        let next = self.next;
                        let held = present(self.durable().ledger(), next);
                        let peer_events: Vec<u32> = self
                            .maybe
                            .iter()
                            .copied()
                            .filter(|n| held.contains(n))
                            .collect();
                        f.acknowledged += peer_events.len() as u64;
                        for n in peer_events {
                            self.maybe.remove(&n);
                            self.acked.insert(n);
                        }
                    }
                    Err(e) => self.failed(&e, f)?,
                }
            }
            Op::Compact => {
                if let Err(e) = self.durable().compact() {
                    self.failed(&e, f)?;
                }
            }
            Op::Reopen => self.reopen(f)?,
            Op::PowerLoss { torn } => {
                self.durable = None;
                self.disk.power_loss(*torn);
                f.power_losses += 1;
                f.torn += u64::from(*torn);
                self.reopen(f)?;
            }
            Op::FailWrite(n) => self.disk.fail_write_after(*n),
            Op::FailSync(n) => self.disk.fail_sync_after(*n),
            Op::Random(w, s) => {
                self.disk.set_random_faults(*w, *s);
                self.random_armed = true;
                return Ok(());
            }
            Op::DiskFull(extra) => self.disk.set_capacity(Some(self.disk.len() + extra)),
            Op::Clear => self.disk.clear_faults(),
        }
        if self.random_armed {
            self.disk.set_random_faults(0, 0);
            self.random_armed = false;
        }
        self.check()
    }

    fn failed(&mut self, e: &Error, f: &mut Figures) -> std::result::Result<(), TestCaseError> {
        f.failed_ops += 1;
        prop_assert!(
            matches!(e, Error::Storage { .. } | Error::StoreFull { .. }),
            "a storage fault gave an unexpected error: {e}"
        );
        if matches!(e, Error::StoreFull { .. }) {
            f.full_errors += 1;
        }
        Ok(())
    }

    /// The invariants, on the live replica and on a copy of the disk as it is now.
    fn check(&mut self) -> std::result::Result<(), TestCaseError> {
        let next = self.next;
        let durable = self.durable.as_ref().expect("open");
        let in_memory = present(durable.ledger(), next);
        // Every acknowledged event is in memory.
        let missing: Vec<_> = self.acked.difference(&in_memory).collect();
        prop_assert!(
            missing.is_empty(),
            "acknowledged events missing: {missing:?}"
        );
        let unknown: Vec<_> = in_memory
            .iter()
            .filter(|n| !self.acked.contains(n) && !self.maybe.contains(n))
            .collect();
        prop_assert!(unknown.is_empty(), "events never written: {unknown:?}");
        if durable.is_stale() {
            // The store cannot be read back, yet memory is at the last stored state: nothing
            // of the failed operation is held, offered to peers or shown. The replica refuses
            // changes until it can reload; nothing more to compare yet.
            prop_assert_eq!(
                &in_memory,
                &self.acked,
                "a stale replica holds unstored events"
            );
            return Ok(());
        }
        // The store, looked at as it is, holds exactly what memory holds.
        let copy = self.disk.copy();
        let stored = open_store(&copy)
            .and_then(|s| s.open_replica(&self.network, self.key.clone()))
            .map_err(|e| TestCaseError::fail(format!("a copy of the store does not open: {e}")))?;
        prop_assert_eq!(
            sorted_heads(stored.ledger()),
            sorted_heads(durable.ledger()),
            "memory and store differ"
        );
        // What memory holds is stored and fsync'd (the reopen after a failure settles it):
        // from now on it counts as acknowledged.
        let stored_events = present(stored.ledger(), next);
        prop_assert_eq!(&stored_events, &in_memory);
        for n in &in_memory {
            self.maybe.remove(n);
            self.acked.insert(*n);
        }
        Ok(())
    }

    /// End of a case: faults off, power lost once more, everything acknowledged is there and
    /// the views equal a fresh fold.
    fn finish(&mut self, f: &mut Figures) -> std::result::Result<(), TestCaseError> {
        self.disk.clear_faults();
        self.durable = None;
        self.disk.power_loss(false);
        self.reopen(f)?;
        let next = self.next;
        let durable = self.durable.as_ref().expect("open");
        let held = present(durable.ledger(), next);
        let lost: Vec<_> = self.acked.difference(&held).copied().collect();
        f.lost += lost.len() as u64;
        prop_assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
        prop_assert_eq!(
            durable.ledger().snapshot(),
            durable.ledger().snapshot_from_scratch(),
            "views differ from a fresh fold"
        );
        Ok(())
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| {
        let v = v.trim();
        v.strip_prefix("0x")
            .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
    })
}

#[test]
fn random_operations_under_storage_faults_match_the_model() {
    let seed = env_u64("REFLOW_FAULT_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("REFLOW_FAULT_CASES").unwrap_or(24) as u32;
    println!(
        "storage faults: seed {seed:#x}, {cases} cases (REFLOW_FAULT_SEED / REFLOW_FAULT_CASES)"
    );
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let figures = std::cell::RefCell::new(Figures::default());
    let result = runner.run(
        &(any::<u64>(), proptest::collection::vec(op(), 8..40)),
        |(disk_seed, ops)| {
            let mut f = Figures::default();
            let mut world = World::new(disk_seed);
            for op in &ops {
                world.step(op, &mut f)?;
            }
            world.finish(&mut f)?;
            let stats = world.disk.stats();
            f.injected_write_faults = stats.failed_writes;
            f.injected_sync_faults = stats.failed_syncs;
            let mut all = figures.borrow_mut();
            all.ops += f.ops;
            all.acknowledged += f.acknowledged;
            all.failed_ops += f.failed_ops;
            all.full_errors += f.full_errors;
            all.power_losses += f.power_losses;
            all.torn += f.torn;
            all.injected_write_faults += f.injected_write_faults;
            all.injected_sync_faults += f.injected_sync_faults;
            all.reopen_errors += f.reopen_errors;
            all.lost += f.lost;
            Ok(())
        },
    );
    println!("storage faults: {:?}", figures.borrow());
    if let Err(e) = result {
        panic!("seed {seed:#x}: {e}");
    }
}

/// A store over a disk that is nearly full, with room to spare for redb's own bookkeeping.
fn nearly_full() -> (FaultyDisk, DurableReplica, NetworkId, DeviceKey) {
    let world = World::new(7);
    let World {
        disk,
        durable,
        network,
        key,
        ..
    } = world;
    (disk, durable.expect("open"), network, key)
}

#[test]
fn disk_full_is_a_clear_error_and_memory_stays_at_the_stored_state() {
    let (disk, mut durable, network, key) = nearly_full();
    durable.set_compaction_policy(CompactionPolicy::never());
    durable.record_event(produce(0, "ana", 100)).expect("room");
    disk.set_capacity(Some(disk.len()));
    // Fill it: events with large payloads until the store says the disk is full.
    let mut n = 1;
    let err = loop {
        let before = sorted_heads(durable.ledger());
        let sent_before = durable.replica().signed_changes_since(&[]).len();
        match durable.record_event(produce(n, "ana", 20_000)) {
            Ok(_) => {
                n += 1;
                assert!(n < 500, "the disk never filled up");
            }
            Err(e) => {
                // Nothing of the failed write is in memory or offered to peers.
                assert_eq!(sorted_heads(durable.ledger()), before, "memory moved");
                assert_eq!(
                    durable.replica().signed_changes_since(&[]).len(),
                    sent_before,
                    "an unstored change would be synced"
                );
                assert!(durable
                    .ledger()
                    .resource(&Id::from(format!("r{n}")))
                    .is_none());
                break e;
            }
        }
    };
    assert!(
        matches!(err, Error::StoreFull { .. }),
        "disk full gives StoreFull, got {err}"
    );
    assert!(err.to_string().contains("disk is full"), "{err}");
    assert!(
        !durable.is_stale(),
        "the replica was put back to its stored state"
    );
    // Reads keep working: the ledger and the store.
    assert!(durable.ledger().resource(&Id::from("r0")).is_some());
    assert!(durable.store().networks().expect("store reads").len() == 1);
    // The store holds exactly what memory holds.
    let copy = disk.copy();
    let stored = open_store(&copy)
        .and_then(|s| s.open_replica(&network, key.clone()))
        .expect("copy opens");
    assert_eq!(
        sorted_heads(stored.ledger()),
        sorted_heads(durable.ledger())
    );
    // Space freed: the same write goes through.
    disk.set_capacity(None);
    durable
        .record_event(produce(n, "ana", 20_000))
        .expect("written once there is room");
    disk.power_loss(false);
    drop(durable);
    let again = open_store(&disk)
        .and_then(|s| s.open_replica(&network, key))
        .expect("reopen");
    assert!(again
        .ledger()
        .resource(&Id::from(format!("r{n}")))
        .is_some());
}

#[test]
fn a_failed_write_is_retried_once_on_a_reopened_store() {
    let (disk, mut durable, network, key) = nearly_full();
    disk.fail_sync_after(0);
    durable
        .record_event(produce(1, "ana", 10))
        .expect("the retry stores it");
    assert!(disk.stats().failed_syncs == 1);
    disk.power_loss(false);
    drop(durable);
    let again = open_store(&disk)
        .and_then(|s| s.open_replica(&network, key))
        .expect("reopen");
    assert!(
        again.ledger().resource(&Id::from("r1")).is_some(),
        "durable"
    );
}

#[test]
fn a_dead_disk_leaves_a_stale_replica_that_refuses_changes_until_it_reloads() {
    let (disk, mut durable, _network, _key) = nearly_full();
    let heads = sorted_heads(durable.ledger());
    let views = durable.ledger().snapshot();
    let offered: Vec<ChangeHash> = durable
        .replica()
        .signed_changes_since(&[])
        .iter()
        .map(|c| c.hash())
        .collect();
    disk.set_random_faults(1000, 1000);
    let err = durable
        .record_event(produce(1, "ana", 10))
        .expect_err("nothing can be written");
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    assert!(durable.is_stale());
    // The disk is still dead, yet memory is back at the last stored state: the failed write
    // is neither shown, nor offered to peers, nor signed.
    assert_eq!(sorted_heads(durable.ledger()), heads, "memory moved");
    assert_eq!(
        durable.ledger().snapshot(),
        views,
        "the views show an unstored event"
    );
    assert!(durable.ledger().resource(&Id::from("r1")).is_none());
    let offered_now: Vec<ChangeHash> = durable
        .replica()
        .signed_changes_since(&[])
        .iter()
        .map(|c| c.hash())
        .collect();
    assert_eq!(offered_now, offered, "an unstored change would be synced");
    assert!(durable.record_event(produce(2, "ana", 10)).is_err());
    disk.clear_faults();
    durable
        .record_event(produce(3, "ana", 10))
        .expect("reloaded, then written");
    assert!(!durable.is_stale());
    assert!(durable.ledger().resource(&Id::from("r3")).is_some());
    assert!(
        durable.ledger().resource(&Id::from("r1")).is_none(),
        "the failed write is not in the reloaded replica"
    );
}

#[test]
fn a_dead_disk_puts_a_received_batch_back_out_of_memory() {
    let world = World::new(11);
    let World {
        disk,
        durable,
        mut peer,
        ..
    } = world;
    let mut durable = durable.expect("open");
    let (_, signed) = peer
        .write(|l| l.record_event(produce(1, "bo", 64)))
        .expect("peer write");
    let heads = sorted_heads(durable.ledger());
    let views = durable.ledger().snapshot();
    let offered = durable.replica().signed_changes_since(&[]).len();
    disk.set_random_faults(1000, 1000);
    let err = durable
        .receive(signed.clone())
        .expect_err("nothing can be stored");
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    assert!(durable.is_stale());
    assert_eq!(sorted_heads(durable.ledger()), heads, "memory moved");
    assert_eq!(
        durable.ledger().snapshot(),
        views,
        "the views show an unstored event"
    );
    assert_eq!(
        durable.replica().signed_changes_since(&[]).len(),
        offered,
        "an unstored change would be forwarded"
    );
    assert!(durable.receive(signed.clone()).is_err(), "stale: refused");
    disk.clear_faults();
    let receipt = durable.receive(signed).expect("reloaded, then stored");
    assert_eq!(receipt.applied.len(), 1);
    assert!(durable.ledger().resource(&Id::from("r1")).is_some());
}

#[test]
fn a_dead_disk_puts_a_membership_change_back_out_of_memory() {
    let (disk, mut durable, _network, _key) = nearly_full();
    let members = durable.replica().members().len();
    let heads = sorted_heads(durable.ledger());
    let newcomer = DeviceKey::generate().expect("key");
    disk.set_random_faults(1000, 1000);
    durable
        .add_member(newcomer.id(), Role::Member, "bo".into())
        .expect_err("nothing can be stored");
    assert!(durable.is_stale());
    assert_eq!(sorted_heads(durable.ledger()), heads, "memory moved");
    assert_eq!(
        durable.replica().members().len(),
        members,
        "an unstored member"
    );
    assert!(durable.replica().member(&newcomer.id()).is_none());
    disk.clear_faults();
    durable
        .add_member(newcomer.id(), Role::Member, "bo".into())
        .expect("reloaded, then stored");
    assert!(durable.replica().member(&newcomer.id()).is_some());
}

/// A world of `seed` whose member has made a batch of 1,100 events the replica has not
/// received: the disk, the replica, the batch, the network and the replica's key.
fn world_with_batch(
    seed: u64,
) -> (
    FaultyDisk,
    DurableReplica,
    Vec<SignedChange>,
    NetworkId,
    DeviceKey,
) {
    let World {
        disk,
        durable,
        mut peer,
        network,
        key,
        ..
    } = World::new(seed);
    let mut batch = Vec::new();
    for i in 0..1100 {
        let (_, signed) = peer
            .write(|l| l.record_event(produce(1000 + i, "bo", 300)))
            .expect("peer write");
        batch.extend(signed);
    }
    (disk, durable.expect("open"), batch, network, key)
}

/// After a power loss, the store reopens with `durable`'s heads and every signature of
/// `batch`.
fn reopened_after_power_loss(
    disk: &FaultyDisk,
    durable: DurableReplica,
    batch: &[SignedChange],
    network: &NetworkId,
    key: DeviceKey,
) -> DurableReplica {
    disk.power_loss(false);
    let heads = sorted_heads(durable.ledger());
    drop(durable);
    let again = open_store(disk)
        .and_then(|s| s.open_replica(network, key))
        .expect("reopen");
    assert_eq!(sorted_heads(again.ledger()), heads);
    for c in batch {
        assert_eq!(again.replica().signature(&c.hash()), Some(c.signature));
    }
    again
}

#[test]
fn a_large_received_batch_is_stored_as_one_snapshot_in_one_commit() {
    // The same batch received by two replicas of the same seed: one stores it by itself (a
    // batch this large makes a compaction due), the other as rows, compacted after.
    let rows_then_compaction = {
        let (disk, mut durable, batch, _, _) = world_with_batch(21);
        durable.set_compaction_policy(CompactionPolicy::never());
        let before = disk.stats();
        durable.receive(batch).expect("stored");
        assert!(durable.tail_len() >= 1100, "stored as rows");
        durable.compact().expect("compacted");
        let after = disk.stats();
        (after.syncs - before.syncs, after.writes - before.writes)
    };
    let (disk, mut durable, batch, network, key) = world_with_batch(21);
    let before = disk.stats();
    let receipt = durable.receive(batch.clone()).expect("stored");
    let after = disk.stats();
    assert_eq!(receipt.applied.len(), batch.len());
    assert_eq!(durable.tail_len(), 0, "the snapshot holds every change");
    // One transaction (signatures and the snapshot that holds the changes), no change rows
    // written and then deleted by a second commit.
    let one_commit = (after.syncs - before.syncs, after.writes - before.writes);
    println!("rows then compaction: {rows_then_compaction:?} (fsyncs, writes); one snapshot: {one_commit:?}");
    assert!(
        one_commit.0 < rows_then_compaction.0 && one_commit.1 < rows_then_compaction.1,
        "one snapshot {one_commit:?} against rows then a compaction {rows_then_compaction:?}"
    );
    // Durable as acknowledged, with every signature, after a power loss.
    let again = reopened_after_power_loss(&disk, durable, &batch, &network, key);
    assert_eq!(again.tail_len(), 0);
    assert!(again.ledger().resource(&Id::from("r2099")).is_some());
}

#[test]
fn a_large_batch_whose_snapshot_fails_is_stored_as_rows() {
    let (disk, mut durable, batch, network, key) = world_with_batch(22);
    // The first commit (the snapshot's) fails its fsync: nothing of it counts, and the
    // batch is stored as rows instead (the compaction after them may run or wait).
    disk.fail_sync_after(0);
    let receipt = durable.receive(batch.clone()).expect("stored as rows");
    assert_eq!(receipt.applied.len(), batch.len());
    assert!(disk.stats().failed_syncs >= 1);
    assert!(!durable.is_stale());
    reopened_after_power_loss(&disk, durable, &batch, &network, key);
}
