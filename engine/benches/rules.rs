//! What network rules cost (issue 15, item 7), with the food-market template.
//!
//! 1. Rule evaluation per event: `CompiledRules::evaluate` (every rule of the template, with
//!    the event's resource as seen) for the events of the 100,000-event workload.
//!    Target: median ≤ 20 µs.
//! 2. Initial load of 100,000 changes: `Replica::join` of a history whose rule set is the
//!    food-market template (published right after the genesis objects, so every event is
//!    judged: refuse rules at admission, flag rules in the views, resource state as seen)
//!    next to the same workload without rules, same run. Target: ≤ 1.2x. Criterion measures
//!    each side; the ratio reported is the median over alternating pairs of joins (with,
//!    without; without, with; ...), which a drift in the machine's load does not bias
//!    (`REFLOW_RULES_PAIRS`, default 8; 0 skips them).
//!
//! `cargo bench -p reflow --bench rules`. In criterion's test mode the ledger has 1,000
//! events.

#[allow(dead_code)] // each benchmark uses part of it
mod common;

use std::time::{Duration, Instant};

use common::{seeded_replica, test_mode, Report, Samples, Workload};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use reflow::rules::{template, Recorder, ResourceSeen, Which};
use reflow::{DeviceKey, EventFilter, Id, Quantity, Replica, Role, SignedChange};

const BIG: usize = 100_000;

fn history(n: usize, rules: bool) -> (reflow::NetworkId, Vec<SignedChange>, Replica) {
    let (mut source, _) = seeded_replica();
    if rules {
        source
            .set_rules(template("food-market").expect("template"))
            .expect("rules");
    }
    let mut w = Workload::new(11);
    for e in w.take(n) {
        source.write(|l| l.record_event(e)).expect("record");
    }
    (source.network(), source.signed_changes_since(&[]), source)
}

fn rules(c: &mut Criterion) {
    let report = Report::default();
    let [eval, with, without, open_with, open_without] =
        std::array::from_fn(|_| Samples::default());
    // REFLOW_RULES_EVENTS overrides the size (for profiling a smaller run).
    let big = std::env::var("REFLOW_RULES_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if test_mode() { 1_000 } else { BIG });

    let (network, plain, _) = history(big, false);
    let (_, ruled, source) = history(big, true);
    let flagged = source
        .ledger()
        .conflicts()
        .iter()
        .filter(|c| matches!(c, reflow::Conflict::RuleViolation { .. }))
        .count();
    assert_eq!(flagged, 0, "the workload keeps the market's rules");
    let compiled = template("food-market")
        .expect("template")
        .compile()
        .expect("compiles");
    let events = source.ledger().events(&EventFilter::default());
    let recorder = Recorder {
        device: source.device().to_string(),
        agent: Id::from("admin"),
        role: Role::Admin,
    };
    let seen = ResourceSeen {
        id: Id::from("r1"),
        unit: Some(Id::from("kg")),
        onhand: Quantity::from_i64(10_000),
        accounting: Quantity::from_i64(10_000),
        custodian: Some(Id::from("ana")),
        accountable: Some(Id::from("ana")),
        location: None,
        state: None,
    };

    let mut g = c.benchmark_group("rules/evaluate");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    let mut next = 0;
    g.bench_function(format!("food-market, per event of {big}"), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let e = &events[next % events.len()];
                next += 1;
                // As a replica judges it: the refuse rule at admission, the flag rule in
                // the views.
                let refused = compiled.evaluate(e, &recorder, None, Which::Refuse);
                let flagged = compiled.evaluate(e, &recorder, Some(&seen), Which::Flag);
                assert!(refused.is_empty() && flagged.is_empty());
            }
            eval.record(iters, t.elapsed())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("rules/initial load");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(if test_mode() { 1 } else { 60 }));
    g.bench_function(
        format!("Replica::join {big} changes, food-market rules"),
        |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    let (r, receipt) = Replica::join(
                        network_of(&ruled),
                        DeviceKey::generate().expect("key"),
                        ruled.clone(),
                    )
                    .expect("join");
                    assert!(receipt.refused.is_empty());
                    assert!(r.rules().is_some());
                }
                with.record(iters, t.elapsed())
            })
        },
    );
    g.bench_function(format!("Replica::join {big} changes, no rules"), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                Replica::join(network, DeviceKey::generate().expect("key"), plain.clone())
                    .expect("join");
            }
            without.record(iters, t.elapsed())
        })
    });
    g.finish();

    // The same two joins in pairs, alternating which goes first (with, without; without,
    // with; ...), so that a change in the machine's load during the run falls on both sides
    // of a pair: criterion measures all of one and then all of the other, and on this VM one
    // side's median moves by up to 15% between runs. The figure is the median of the pairs'
    // ratios, with the process's CPU time and minor page faults per join beside it.
    let pairs: usize = std::env::var("REFLOW_RULES_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if test_mode() { 2 } else { 8 });
    let mut paired = Vec::new();
    let mut cpu = [Vec::new(), Vec::new()];
    let mut faults = [Vec::new(), Vec::new()];
    let mut serial = [Vec::new(), Vec::new()];
    for i in 0..pairs {
        let mut wall = [0.0; 2];
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let history = if side == 0 { &ruled } else { &plain };
            let changes = history.clone();
            let (t, before) = (Instant::now(), proc_self());
            let (r, receipt) = Replica::join(
                network_of(history),
                DeviceKey::generate().expect("key"),
                changes,
            )
            .expect("join");
            wall[side] = t.elapsed().as_secs_f64();
            if let (Some(b), Some(a)) = (before, proc_self()) {
                cpu[side].push(a.cpu - b.cpu);
                faults[side].push((a.minor_faults - b.minor_faults) as f64);
                serial[side].push(a.serial_cpu - b.serial_cpu);
            }
            assert!(receipt.refused.is_empty());
            assert_eq!(r.rules().is_some(), side == 0);
        }
        paired.push(wall[0] / wall[1]);
    }

    // Reopening from the saved document (as a node opens its store): with rules the replica
    // reads every stored change again to rebuild its rule index.
    let (joined_with, _) = Replica::join(
        network_of(&ruled),
        DeviceKey::generate().expect("key"),
        ruled.clone(),
    )
    .expect("join");
    let (joined_without, _) =
        Replica::join(network, DeviceKey::generate().expect("key"), plain.clone()).expect("join");
    let mut g = c.benchmark_group("rules/reopen");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(if test_mode() { 1 } else { 30 }));
    for (name, replica, history, samples) in [
        ("food-market rules", &joined_with, &ruled, &open_with),
        ("no rules", &joined_without, &plain, &open_without),
    ] {
        let saved = replica.ledger().save();
        let net = network_of(history);
        g.bench_function(format!("Replica::open {big} changes, {name}"), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    let signatures = history.iter().map(|c| (c.hash(), c.signature)).collect();
                    let r = Replica::open_saved(
                        &saved,
                        DeviceKey::generate().expect("key"),
                        net,
                        signatures,
                        Vec::new(),
                    )
                    .expect("open");
                    assert_eq!(r.ledger().event_count(), big);
                }
                samples.record(iters, t.elapsed())
            })
        });
    }
    g.finish();

    let us = |s: &Samples| s.median().map_or(f64::NAN, |v| v * 1e6);
    let ms = |s: &Samples| s.median().map_or(f64::NAN, |v| v * 1e3);
    report.line(format!(
        "rule evaluation (food-market, both rules, resource as seen): median {:.2} us per event",
        us(&eval)
    ));
    report.line(format!(
        "initial load of {big} changes: Replica::join with the food-market rules {:.0} ms, without rules {:.0} ms; with / without = {:.2}",
        ms(&with),
        ms(&without),
        ms(&with) / ms(&without)
    ));
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    if !paired.is_empty() {
        let (lo, hi) = spread(&paired);
        report.line(format!(
            "initial load of {big} changes, {pairs} alternating pairs: with / without = {:.2} (median of the pairs' ratios; min {lo:.2}, max {hi:.2}); CPU time per join {:.0} ms with, {:.0} ms without ({:.2}); of it on the judging thread (the serial path) {:.0} ms with, {:.0} ms without ({:.2}); minor page faults per join {:.0} with, {:.0} without",
            median(&paired),
            median(&cpu[0]) * 1e3,
            median(&cpu[1]) * 1e3,
            median(&cpu[0]) / median(&cpu[1]),
            median(&serial[0]) * 1e3,
            median(&serial[1]) * 1e3,
            median(&serial[0]) / median(&serial[1]),
            median(&faults[0]),
            median(&faults[1]),
        ));
    }
    report.line(format!(
        "reopen from the saved document, {big} changes: with the food-market rules {:.0} ms, without rules {:.0} ms; with / without = {:.2}",
        ms(&open_with),
        ms(&open_without),
        ms(&open_with) / ms(&open_without)
    ));
}

/// This process's CPU time so far and its minor page faults, from /proc/self/stat (Linux;
/// `None` elsewhere).
struct ProcSelf {
    cpu: f64,
    minor_faults: u64,
    /// The CPU time of the calling thread, the one that judges and applies in order (the
    /// serial path of a join; signature checks run on other threads): what a loaded machine
    /// changes least, since waiting for a core is not counted.
    serial_cpu: f64,
}

fn proc_self() -> Option<ProcSelf> {
    // After the command name (in parentheses, which may hold spaces): state is field 3.
    // Fields 10 (minflt), 14 (utime) and 15 (stime), in clock ticks of 1/100 s (USER_HZ).
    let fields = |path: &str| -> Option<(f64, u64)> {
        let stat = std::fs::read_to_string(path).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let num = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
        Some(((num(14)? + num(15)?) as f64 / 100.0, num(10)?))
    };
    let (cpu, minor_faults) = fields("/proc/self/stat")?;
    let (serial_cpu, _) = fields("/proc/thread-self/stat")?;
    Some(ProcSelf {
        cpu,
        minor_faults,
        serial_cpu,
    })
}

/// The network of a history (its genesis change's hash).
fn network_of(history: &[SignedChange]) -> reflow::NetworkId {
    reflow::NetworkId(history[0].hash().0)
}

criterion_group!(benches, rules);
criterion_main!(benches);
