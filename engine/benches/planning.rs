//! Planning folds: what the derived statuses cost as commitments grow, and what the memo of
//! causal answers (`Ledger`'s "had the recorder seen the commitment?") saves.
//!
//! A ledger with C commitments of 4 hours of work (C = 100 and 1,000), made by one replica,
//! which then records 2,000 market events, one change each; a second replica, forked after
//! them, records two 2-hour events fulfilling every commitment (batches of 100). So every
//! fulfilment's causal check walks back over the 2,000 changes between it and its commitment
//! (another actor's: Lamport order alone does not answer it).
//!
//! Measured on that ledger: `commitment_statuses` on a fresh copy (the memo empty: the walks
//! are made), the same call again (the memo full), and `snapshot` (every status and conflict,
//! what the convergence tests compare), next to the inventory read. Statuses are folded on
//! every call; only the causal answers are kept.
//!
//! `cargo bench -p reflow --no-default-features --bench planning`. Ratios between figures of this run are printed to
//! stderr at the end. In criterion's test mode (`cargo test --benches`) C is 10 and 50 and
//! the market events 200.

#[allow(dead_code)] // each benchmark uses part of it
mod common;

use std::time::Instant;

use common::{actor, test_mode, Samples, Workload};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use reflow::{Action, Commitment, EconomicEvent, Id, Ledger, Measure, ResourceFilter, Unit};

/// The agents of the workload who make and fulfil commitments.
const WORKERS: [&str; 2] = ["ana", "ben"];

fn ledger(commitments: usize, market: usize) -> Ledger {
    let mut a = Workload::genesis();
    a.create(Unit::new("hour", "hour", "hour")).expect("unit");
    for i in 0..commitments {
        let mut c = Commitment::new(Action::Work, WORKERS[i % 2], WORKERS[(i + 1) % 2]);
        c.id = Id::from(format!("c{i}"));
        c.effort_quantity = Some(Measure::new(4, "hour"));
        a.create(c).expect("commitment");
    }
    let mut w = Workload::new(0x9_1A4);
    for _ in 0..market {
        a.record_event(w.next()).expect("market event");
    }
    let mut b = a.fork(actor(2));
    let events: Vec<_> = (0..commitments)
        .flat_map(|i| {
            (0..2).map(move |_| {
                EconomicEvent::new(Action::Work, WORKERS[i % 2], WORKERS[(i + 1) % 2])
                    .effort(2, "hour")
                    .fulfilling(format!("c{i}"))
                    .into()
            })
        })
        .collect();
    for batch in events.chunks(100) {
        b.record_events(batch.to_vec()).expect("fulfilments");
    }
    b
}

fn planning(c: &mut Criterion) {
    let (sizes, market) = if test_mode() {
        (vec![10, 50], 200)
    } else {
        (vec![100, 1_000], 2_000)
    };
    let mut rows = Vec::new();
    for n in &sizes {
        let l = ledger(*n, market);
        let statuses = l.commitment_statuses(None).expect("statuses");
        assert_eq!(statuses.len(), *n);
        assert!(statuses.iter().all(|s| s.fulfilled_by.len() == 2));
        let [cold, warm, snapshot, inventory] = std::array::from_fn(|_| Samples::default());
        let mut g = c.benchmark_group(format!("planning/{n}_commitments"));
        g.sampling_mode(SamplingMode::Flat);
        g.sample_size(10);
        g.warm_up_time(std::time::Duration::from_secs(1));
        g.measurement_time(std::time::Duration::from_secs(3));
        g.bench_function(BenchmarkId::new("commitment_statuses", "fresh copy"), |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let copy = l.fork(actor(3));
                    let t = Instant::now();
                    let s = copy.commitment_statuses(None).expect("statuses");
                    total += t.elapsed();
                    assert_eq!(s.len(), *n);
                }
                cold.record(iters, total)
            })
        });
        g.bench_function(BenchmarkId::new("commitment_statuses", "again"), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    assert_eq!(l.commitment_statuses(None).expect("statuses").len(), *n);
                }
                warm.record(iters, t.elapsed())
            })
        });
        g.bench_function("snapshot", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    assert_eq!(l.snapshot().commitments.len(), *n);
                }
                snapshot.record(iters, t.elapsed())
            })
        });
        g.bench_function("inventory", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    assert!(!l.inventory(&ResourceFilter::default()).is_empty());
                }
                inventory.record(iters, t.elapsed())
            })
        });
        g.finish();
        rows.push((*n, cold, warm, snapshot, inventory));
    }
    eprintln!("\n=== planning summary (medians of this run; {market} market changes between each commitment and its fulfilments) ===");
    let mut first = None;
    for (n, cold, warm, snapshot, inventory) in &rows {
        let (Some(c), Some(w), Some(s), Some(i)) = (
            cold.median(),
            warm.median(),
            snapshot.median(),
            inventory.median(),
        ) else {
            continue;
        };
        let per = w / *n as f64;
        let growth = first.map_or(1.0, |f| per / f);
        first.get_or_insert(per);
        eprintln!(
            "  {n:>5} commitments: statuses {:.2} ms fresh, {:.2} ms again ({:.0}x), {:.1} µs per commitment ({growth:.2}x the smallest); snapshot {:.2} ms; inventory {:.2} ms",
            c * 1e3,
            w * 1e3,
            c / w,
            per * 1e6,
            s * 1e3,
            i * 1e3
        );
    }
}

criterion_group!(benches, planning);
criterion_main!(benches);
