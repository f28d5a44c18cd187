//! What admission costs (issue: "Admission", item 10).
//!
//! 1. Receiving one change on a ledger of 100,000 events (one change each): `Replica::receive`
//!    (signature, membership, admission, apply) next to `Ledger::apply_changes` of the same
//!    change (unsigned, unjudged), same run. Target: median ≤ 1 ms.
//! 2. Judging a 100,000-change history (membership and admission, the way a replica judges a
//!    set from scratch; no signatures, nothing applied) next to loading the same changes
//!    unjudged (`Ledger::apply_changes`) and to `Replica::join` (everything).
//!
//! `cargo bench -p reflow --bench admission`. In criterion's test mode the ledger has 1,000
//! events.

#[allow(dead_code)] // each benchmark uses part of it
mod common;

use std::time::{Duration, Instant};

use common::{actor, seeded_replica, test_mode, Report, Samples, Workload};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use reflow::{DeviceKey, Ledger, Replica, SignedChange};

const BIG: usize = 100_000;

fn admission(c: &mut Criterion) {
    let report = Report::default();
    let [receive, apply, judge, load, join] = std::array::from_fn(|_| Samples::default());
    let big = if test_mode() { 1_000 } else { BIG };

    let (mut source, _) = seeded_replica();
    let mut w = Workload::new(11);
    for e in w.take(big) {
        source.write(|l| l.record_event(e)).expect("record");
    }
    let history = source.signed_changes_since(&[]);
    let network = source.network();
    // The changes received one at a time, made on top of the big ledger.
    let more: Vec<SignedChange> = (0..4000)
        .flat_map(|_| {
            let e = w.next();
            source.write(|l| l.record_event(e)).expect("record").1
        })
        .collect();
    let (mut target, _) = Replica::join(
        network,
        DeviceKey::generate().expect("key"),
        history.clone(),
    )
    .expect("join");
    let bytes: Vec<u8> = history
        .iter()
        .flat_map(|c| c.change.raw_bytes().to_vec())
        .collect();
    let mut plain = Ledger::load(&bytes, actor(9)).expect("load");

    let mut g = c.benchmark_group("admission/receive one change");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let mut next = 0;
    g.bench_function(format!("Replica::receive on {big} events"), |b| {
        b.iter_custom(|iters| {
            let batch: Vec<SignedChange> = more
                .iter()
                .skip(next)
                .take(iters as usize)
                .cloned()
                .collect();
            next += batch.len();
            let t = Instant::now();
            for c in batch.iter() {
                target.receive(vec![c.clone()]).expect("receive");
            }
            let d = t.elapsed();
            receive.record(batch.len().max(1) as u64, d)
        })
    });
    let mut next = 0;
    g.bench_function(
        format!("Ledger::apply_changes on {big} events, unjudged"),
        |b| {
            b.iter_custom(|iters| {
                let batch: Vec<SignedChange> = more
                    .iter()
                    .skip(next)
                    .take(iters as usize)
                    .cloned()
                    .collect();
                next += batch.len();
                let t = Instant::now();
                for c in batch.iter() {
                    plain.apply_changes(vec![c.change.clone()]).expect("apply");
                }
                let d = t.elapsed();
                apply.record(batch.len().max(1) as u64, d)
            })
        },
    );
    g.finish();

    let mut g = c.benchmark_group("admission/initial load");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(if test_mode() { 1 } else { 60 }));
    g.bench_function(
        format!("judge {big} changes (membership + admission)"),
        |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    assert_eq!(
                        reflow::admission::judge_history(network, &history),
                        history.len()
                    );
                }
                judge.record(iters, t.elapsed())
            })
        },
    );
    g.bench_function(
        format!("Ledger::apply_changes {big} changes, unjudged"),
        |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    let mut doc =
                        Ledger::load(history[0].change.raw_bytes(), actor(3)).expect("genesis");
                    doc.apply_changes(history[1..].iter().map(|c| c.change.clone()).collect())
                        .expect("apply");
                }
                load.record(iters, t.elapsed())
            })
        },
    );
    g.bench_function(
        format!("Replica::join {big} changes (signatures, judge, apply)"),
        |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    Replica::join(
                        network,
                        DeviceKey::generate().expect("key"),
                        history.clone(),
                    )
                    .expect("join");
                }
                join.record(iters, t.elapsed())
            })
        },
    );
    g.finish();

    let ms = |s: &Samples| s.median().map_or(f64::NAN, |v| v * 1e3);
    report.line(format!(
        "receive one change at {big} events: Replica::receive {:.3} ms, Ledger::apply_changes {:.3} ms (ratio {:.2})",
        ms(&receive),
        ms(&apply),
        ms(&receive) / ms(&apply)
    ));
    report.line(format!(
        "initial load of {big} changes: judge alone {:.0} ms ({:.2} us/change), unjudged apply {:.0} ms, Replica::join {:.0} ms; (apply + judge) / apply = {:.2}",
        ms(&judge),
        ms(&judge) * 1e3 / big as f64,
        ms(&load),
        ms(&join),
        (ms(&load) + ms(&judge)) / ms(&load)
    ));
}

criterion_group!(benches, admission);
criterion_main!(benches);
