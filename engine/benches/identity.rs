//! Signing and verification overhead.
//!
//! 1. Per event: `Replica::write(record_event)` (the change is signed and checked against
//!    membership) next to `Ledger::record_event` (unsigned), on ledgers of up to 10,000 events.
//! 2. Initial load of 100,000 changes (one event each) received from a peer:
//!    `Replica::join` (every signature verified, batched over both cores, membership checked,
//!    then applied) next to `Ledger::apply_changes` of the same changes, unsigned.
//! 3. Verifying the 100,000 signatures alone: `verify_changes` (ZIP-215 batches, all cores)
//!    next to one-by-one verification on one core.
//!
//! `cargo bench -p reflow --bench identity`. Ratios of this run are printed at the end. In
//! criterion's test mode the load has 1,000 changes.

#[allow(dead_code)] // each benchmark uses part of it
mod common;

use std::time::{Duration, Instant};

use common::{actor, seeded_replica, test_mode, Samples, Workload};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use reflow::identity::verify_changes;
use reflow::{DeviceKey, Ledger, Replica};

const BIG: usize = 100_000;
const WRITE_CAP: usize = 10_000;

fn overhead(c: &mut Criterion) {
    let [signed_write, unsigned_write, join, apply, batch, single] =
        std::array::from_fn(|_| Samples::default());
    let big = if test_mode() { 1_000 } else { BIG };

    let mut g = c.benchmark_group("identity/write");
    g.throughput(Throughput::Elements(1));
    let mut w = Workload::new(7);
    let mut replica: Option<Replica> = None;
    g.bench_function("Replica::write(record_event), signed", |b| {
        b.iter_custom(|iters| {
            let r = match &mut replica {
                Some(r) if r.ledger().event_count() < WRITE_CAP => r,
                slot => {
                    w = Workload::new(7);
                    let (mut r, _) = seeded_replica();
                    for e in w.take(common::RESOURCES) {
                        r.write(|l| l.record_event(e)).expect("produce");
                    }
                    slot.insert(r)
                }
            };
            let events = w.take(iters as usize);
            let t = Instant::now();
            for e in events {
                r.write(|l| l.record_event(e)).expect("record");
            }
            signed_write.record(iters, t.elapsed())
        })
    });
    let mut w = Workload::new(7);
    let mut ledger: Option<Ledger> = None;
    g.bench_function("Ledger::record_event, unsigned", |b| {
        b.iter_custom(|iters| {
            let l = match &mut ledger {
                Some(l) if l.event_count() < WRITE_CAP => l,
                slot => {
                    w = Workload::new(7);
                    let mut l = Workload::genesis();
                    for e in w.take(common::RESOURCES) {
                        l.record_event(e).expect("produce");
                    }
                    slot.insert(l)
                }
            };
            let events = w.take(iters as usize);
            let t = Instant::now();
            for e in events {
                l.record_event(e).expect("record");
            }
            unsigned_write.record(iters, t.elapsed())
        })
    });
    g.finish();
    drop(replica);
    drop(ledger);

    // The history a new device receives: `big` signed changes, one event each.
    let t = Instant::now();
    let (mut source, _) = seeded_replica();
    let mut w = Workload::new(11);
    for e in w.take(big) {
        source.write(|l| l.record_event(e)).expect("record");
    }
    let history = source.signed_changes_since(&[]);
    let network = source.network();
    eprintln!(
        "setup: {} signed changes in {:.1?}",
        history.len(),
        t.elapsed()
    );

    let mut g = c.benchmark_group(format!("identity/initial_load_{}k", big / 1000));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(history.len() as u64));
    g.bench_function("Replica::join (verify + membership + apply)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let input = history.clone();
                let key = DeviceKey::generate().expect("key");
                let t = Instant::now();
                let (r, receipt) = Replica::join(network, key, input).expect("join");
                total += t.elapsed();
                assert!(receipt.refused.is_empty());
                assert_eq!(r.ledger().heads(), source.ledger().heads());
            }
            join.record(iters, total)
        })
    });
    let genesis = history[0].change.raw_bytes().to_vec();
    g.bench_function("Ledger::apply_changes, unsigned", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let changes: Vec<_> = history[1..].iter().map(|c| c.change.clone()).collect();
                let mut l = Ledger::load(&genesis, actor(9)).expect("genesis");
                let t = Instant::now();
                l.apply_changes(changes).expect("apply");
                total += t.elapsed();
                assert_eq!(l.heads(), source.ledger().heads());
            }
            apply.record(iters, total)
        })
    });
    g.bench_function("verify_changes (batched, all cores)", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let v = verify_changes(&network, &history);
                assert!(v.iter().all(Result::is_ok));
            }
            batch.record(iters, t.elapsed())
        })
    });
    g.bench_function("verify one by one (one core)", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                for c in &history {
                    let v = verify_changes(&network, std::slice::from_ref(c));
                    assert!(v[0].is_ok());
                }
            }
            single.record(iters, t.elapsed())
        })
    });
    g.finish();

    eprintln!("\n=== identity summary (medians of this run) ===");
    if let (Some(s), Some(u)) = (signed_write.median(), unsigned_write.median()) {
        eprintln!(
            "  write one event: signed {:.1} µs, unsigned {:.1} µs: {:.2}x",
            s * 1e6,
            u * 1e6,
            s / u
        );
    }
    if let (Some(j), Some(a)) = (join.median(), apply.median()) {
        eprintln!(
            "  initial load of {} changes: signed+checked {:.2} s, unsigned {:.2} s: {:.2}x",
            history.len(),
            j,
            a,
            j / a
        );
    }
    if let (Some(b), Some(s)) = (batch.median(), single.median()) {
        eprintln!(
            "  verify {} signatures: batched {:.2} s, one by one {:.2} s: {:.1}x faster",
            history.len(),
            b,
            s,
            s / b
        );
    }
}

criterion_group!(benches, overhead);
criterion_main!(benches);
