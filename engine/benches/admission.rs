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
    let [receive, reopen, apply, bare, judge, load, join] =
        std::array::from_fn(|_| Samples::default());
    let big = if test_mode() { 1_000 } else { BIG };

    let (mut source, _) = seeded_replica();
    let mut w = Workload::new(11);
    for e in w.take(big) {
        source.write(|l| l.record_event(e)).expect("record");
    }
    let history = source.signed_changes_since(&[]);
    let network = source.network();
    let (mut target, _) = Replica::join(
        network,
        DeviceKey::generate().expect("key"),
        history.clone(),
    )
    .expect("join");
    // Both opened from the saved document, as a store opens a compacted ledger.
    let saved = target.ledger().save();
    let mut plain = Ledger::load(&saved, actor(9)).expect("load");
    let mut raw = automerge::Automerge::load(&saved).expect("load");
    // A replica opened from its saved document, as a node opens its store after a restart.
    let signatures = history.iter().map(|c| (c.hash(), c.signature)).collect();
    let mut reopened = Replica::open(
        Ledger::load(&saved, actor(8)).expect("load"),
        DeviceKey::generate().expect("key"),
        network,
        signatures,
        Vec::new(),
    )
    .expect("open");

    // Each iteration receives one change made on top of the big ledger (made untimed, by the
    // source replica, which keeps recording the workload).
    let mut g = c.benchmark_group("admission/receive one change");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let mut made: Vec<SignedChange> = Vec::new();
    let mut make = |n: usize, made: &mut Vec<SignedChange>| -> Vec<SignedChange> {
        let start = made.len();
        for _ in 0..n {
            let e = w.next();
            made.extend(source.write(|l| l.record_event(e)).expect("record").1);
        }
        made[start..].to_vec()
    };
    g.bench_function(format!("Replica::receive on {big} events"), |b| {
        b.iter_custom(|iters| {
            let batch = make(iters as usize, &mut made);
            let t = Instant::now();
            for c in batch {
                target.receive(vec![c]).expect("receive");
            }
            receive.record(iters, t.elapsed())
        })
    });
    // The same changes, in the same order, into the reopened replica, an unsigned ledger
    // and a bare document. A document made by Automerge's `load` applies its first change
    // into each of the 256 event buckets slowly (tens of ms, falling as more buckets have
    // been written; reads do not warm it); once every bucket has been written to, as fast as
    // a document built by applying changes. The first WARM changes (each event goes to the
    // next bucket) are timed one by one and reported apart, then criterion measures the
    // following ones.
    if made.len() < WARM {
        make(WARM - made.len(), &mut made);
    }
    let warm_reopened = timed_each(&made[..WARM], |c| {
        reopened.receive(vec![c.clone()]).expect("receive");
    });
    let warm_plain = timed_each(&made[..WARM], |c| {
        plain.apply_changes(vec![c.change.clone()]).expect("apply");
    });
    let warm_raw = timed_each(&made[..WARM], |c| {
        raw.apply_changes(vec![c.change.clone()]).expect("apply");
    });
    for (what, times) in [
        ("Replica::receive", &warm_reopened),
        ("Ledger::apply_changes", &warm_plain),
        ("Automerge::apply_changes", &warm_raw),
    ] {
        let slow = times.iter().filter(|t| **t > 1e-3).count();
        let range = |a: usize, b: usize| median(&times[a.min(WARM)..b.min(WARM)]) * 1e3;
        report.line(format!(
            "after a reopen, the first {WARM} changes into {what}: total {:.0} ms, {slow} over 1 ms; median of changes 1-10 {:.3} ms, 10-100 {:.3} ms, 100-256 {:.3} ms, 256-{WARM} {:.3} ms",
            times.iter().sum::<f64>() * 1e3,
            range(0, 10),
            range(10, 100),
            range(100, 256),
            range(256, WARM),
        ));
    }
    let mut next = WARM;
    g.bench_function(format!("Replica::receive on {big} events, reopened"), |b| {
        b.iter_custom(|iters| {
            let batch: Vec<SignedChange> = made
                .iter()
                .skip(next)
                .take(iters as usize)
                .cloned()
                .collect();
            next += batch.len();
            let t = Instant::now();
            for c in batch.iter() {
                reopened.receive(vec![c.clone()]).expect("receive");
            }
            reopen.record(batch.len().max(1) as u64, t.elapsed())
        })
    });
    let mut next = WARM;
    g.bench_function(
        format!("Ledger::apply_changes on {big} events, unjudged"),
        |b| {
            b.iter_custom(|iters| {
                let batch: Vec<SignedChange> = made
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
                apply.record(batch.len().max(1) as u64, t.elapsed())
            })
        },
    );
    let mut next = WARM;
    g.bench_function(format!("Automerge::apply_changes on {big} events"), |b| {
        b.iter_custom(|iters| {
            let batch: Vec<SignedChange> = made
                .iter()
                .skip(next)
                .take(iters as usize)
                .cloned()
                .collect();
            next += batch.len();
            let t = Instant::now();
            for c in batch.iter() {
                raw.apply_changes(vec![c.change.clone()]).expect("apply");
            }
            bare.record(batch.len().max(1) as u64, t.elapsed())
        })
    });
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
                    assert_eq!(reflow::judge_history(network, &history), history.len());
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
        "receive one change at {big} events: Replica::receive {:.3} ms (reopened from the saved document: {:.3} ms), Ledger::apply_changes {:.3} ms, Automerge::apply_changes {:.3} ms (receive / Automerge {:.2})",
        ms(&receive),
        ms(&reopen),
        ms(&apply),
        ms(&bare),
        ms(&receive) / ms(&bare)
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

/// Changes received one by one into a reopened document before criterion measures it.
const WARM: usize = 300;

/// The time of `f` on each of `items`, in seconds.
fn timed_each<T>(items: &[T], mut f: impl FnMut(&T)) -> Vec<f64> {
    items
        .iter()
        .map(|c| {
            let t = Instant::now();
            f(c);
            t.elapsed().as_secs_f64()
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

criterion_group!(benches, admission);
criterion_main!(benches);
