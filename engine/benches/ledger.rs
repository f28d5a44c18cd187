//! Ledger core benchmarks (in memory, no storage).
//!
//! 1. Record 100,000 events into one new ledger, one change per event and in batches of 1,000
//!    events per change, next to raw Automerge doing the same puts without Reflow's model,
//!    validation and views: starting from the same genesis document, the same event JSON
//!    appended to the events list and, for the events that create resources, the same
//!    resource maps, one commit per event / per 1,000. One criterion iteration records all
//!    100,000 events.
//! 2. Read the inventory of ledgers that have folded 1,000, 10,000 and 100,000 events (the
//!    same 100 resources): the read must not grow with the number of events.
//! 3. At 100,000 events: record one more event and read the inventory (the incremental view
//!    update), next to folding the views again from scratch (what the cost would be without
//!    the cache).
//!
//! `cargo bench -p reflow --bench ledger`. Criterion measures time; the ratios between figures
//! of this run are printed to stderr at the end. In criterion's test mode (`cargo test
//! --benches`) the ledgers are 100 times smaller.

#[allow(dead_code)] // each benchmark uses part of it
mod common;

use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, ROOT};
use common::{actor, test_mode, Samples, Workload};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use reflow::{Ledger, NewEvent, ResourceFilter};

/// Events recorded per iteration of the record benchmarks (benchmark mode).
const BIG: usize = 100_000;
/// Events per batch.
const BATCH: usize = 1_000;

/// What the raw Automerge baseline writes for one event: the event's JSON text (the bytes
/// Reflow stores) and, for an event that creates a resource, the resource's id and fields
/// (Reflow stores those as a map of scalars).
struct RawPuts {
    event: String,
    resource: Option<(String, Vec<(String, String)>)>,
}

fn raw_puts(events: &[NewEvent]) -> Vec<RawPuts> {
    events
        .iter()
        .map(|e| RawPuts {
            event: serde_json::to_string(&e.event).expect("event json"),
            resource: e.new_inventoried_resource.as_ref().map(|r| {
                let fields = serde_json::to_value(r)
                    .expect("resource json")
                    .as_object()
                    .expect("an object")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect();
                (r.id.as_str().to_string(), fields)
            }),
        })
        .collect()
}

/// The baseline document: the same genesis document Reflow's benchmark ledgers start from
/// (same maps, agents, units, locations), so both write into the same shape of document.
fn raw_doc() -> (Automerge, automerge::ObjId, automerge::ObjId) {
    let saved = Workload::genesis().save();
    let doc = Automerge::load(&saved).expect("load").with_actor(actor(1));
    let obj = |key: &str| match doc.get(ROOT, key).expect("get") {
        Some((_, id)) => id,
        None => panic!("no {key}"),
    };
    let (events, resources) = (obj("events"), obj("resources"));
    (doc, events, resources)
}

/// One raw Automerge transaction doing the puts of `puts`, the events appended at `start`.
fn raw_write(
    tx: &mut automerge::transaction::Transaction<'_>,
    events: &automerge::ObjId,
    resources: &automerge::ObjId,
    start: usize,
    puts: &[RawPuts],
) {
    for (i, p) in puts.iter().enumerate() {
        if let Some((id, fields)) = &p.resource {
            let r = tx
                .put_object(resources, id.as_str(), ObjType::Map)
                .expect("resource");
            for (k, v) in fields {
                tx.put(&r, k.as_str(), v.as_str()).expect("field");
            }
        }
        tx.insert(events, start + i, p.event.as_str())
            .expect("insert");
    }
}

fn ledger_of(events: &[NewEvent], batch: usize) -> Ledger {
    let mut l = Workload::genesis();
    for chunk in events.chunks(batch) {
        l.record_events(chunk.to_vec()).expect("record");
    }
    l
}

fn record(c: &mut Criterion) {
    let big = if test_mode() { BIG / 100 } else { BIG };
    let events = Workload::new(0x5EED).take(big);
    let puts = raw_puts(&events);
    let [reflow_one, raw_one, reflow_batch, raw_batch] =
        std::array::from_fn(|_| Samples::default());

    let mut g = c.benchmark_group(format!("ledger/record_{}k", big / 1000));
    g.throughput(Throughput::Elements(big as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    g.bench_function("reflow record_event (1 change each)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut l = Workload::genesis();
                let events = events.clone();
                let t = Instant::now();
                for e in events {
                    l.record_event(e).expect("record");
                }
                total += t.elapsed();
                assert_eq!(l.event_count(), big);
            }
            reflow_one.record(iters, total)
        })
    });
    g.bench_function("raw automerge insert (1 commit each)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (mut doc, list, resources) = raw_doc();
                let t = Instant::now();
                for (i, p) in puts.iter().enumerate() {
                    let mut tx = doc.transaction();
                    raw_write(&mut tx, &list, &resources, i, std::slice::from_ref(p));
                    tx.commit();
                }
                total += t.elapsed();
                assert_eq!(doc.length(&list), big);
            }
            raw_one.record(iters, total)
        })
    });
    g.bench_function("reflow record_events (1000 per change)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut l = Workload::genesis();
                let batches: Vec<Vec<NewEvent>> =
                    events.chunks(BATCH).map(<[NewEvent]>::to_vec).collect();
                let t = Instant::now();
                for batch in batches {
                    l.record_events(batch).expect("record");
                }
                total += t.elapsed();
                assert_eq!(l.event_count(), big);
            }
            reflow_batch.record(iters, total)
        })
    });
    g.bench_function("raw automerge insert (1000 per commit)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (mut doc, list, resources) = raw_doc();
                let t = Instant::now();
                for (n, chunk) in puts.chunks(BATCH).enumerate() {
                    let mut tx = doc.transaction();
                    raw_write(&mut tx, &list, &resources, n * BATCH, chunk);
                    tx.commit();
                }
                total += t.elapsed();
                assert_eq!(doc.length(&list), big);
            }
            raw_batch.record(iters, total)
        })
    });
    g.finish();

    eprintln!("\n=== ledger record summary (medians of this run, {big} events) ===");
    let rate = |s: f64| big as f64 / s;
    for (what, r, a) in [
        ("1 change per event", &reflow_one, &raw_one),
        ("1000 events per change", &reflow_batch, &raw_batch),
    ] {
        if let (Some(r), Some(a)) = (r.median(), a.median()) {
            eprintln!(
                "  {what:<24} reflow {:>9.0} events/s   raw automerge {:>9.0} events/s   ratio {:.2}x",
                rate(r),
                rate(a),
                a / r
            );
        }
    }
}

fn views(c: &mut Criterion) {
    let sizes: Vec<usize> = if test_mode() {
        vec![100, 1_000]
    } else {
        vec![1_000, 10_000, 100_000]
    };
    let largest = *sizes.last().expect("sizes");
    let events = Workload::new(0xF01D).take(largest + 1_000);
    let inventory_times: Vec<Samples> = sizes.iter().map(|_| Samples::default()).collect();
    let [incremental, refold] = std::array::from_fn(|_| Samples::default());

    let mut g = c.benchmark_group("ledger/inventory");
    for (n, s) in sizes.iter().zip(&inventory_times) {
        let l = ledger_of(&events[..*n], BATCH);
        g.bench_with_input(BenchmarkId::from_parameter(n), n, |b, _| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    let inv = l.inventory(&ResourceFilter::default());
                    assert!(!inv.is_empty());
                }
                s.record(iters, t.elapsed())
            })
        });
    }
    g.finish();

    let mut l = ledger_of(&events[..largest], BATCH);
    let mut more = events[largest..].iter().cloned().cycle();
    let mut g = c.benchmark_group(format!("ledger/one_more_event_at_{}k", largest / 1000));
    g.bench_function("record_event + inventory (incremental)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let e = more.next().expect("cycle");
                let t = Instant::now();
                l.record_event(e).expect("record");
                let inv = l.inventory(&ResourceFilter::default());
                total += t.elapsed();
                assert!(!inv.is_empty());
            }
            incremental.record(iters, total)
        })
    });
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.bench_function("snapshot_from_scratch (full refold)", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let s = l.snapshot_from_scratch();
                assert!(!s.resources.is_empty());
            }
            refold.record(iters, t.elapsed())
        })
    });
    g.finish();

    eprintln!("\n=== ledger views summary (medians of this run) ===");
    let first = inventory_times[0].median();
    for (n, s) in sizes.iter().zip(&inventory_times) {
        if let (Some(m), Some(f)) = (s.median(), first) {
            eprintln!(
                "  inventory after {n:>7} events  {:>9.1} µs  {:.2}x the smallest",
                m * 1e6,
                m / f
            );
        }
    }
    if let (Some(i), Some(r)) = (incremental.median(), refold.median()) {
        eprintln!(
            "  at {largest} events: one event + inventory {:.2} ms, full refold {:.0} ms ({:.0}x)",
            i * 1e3,
            r * 1e3,
            r / i
        );
    }
}

criterion_group!(benches, record, views);
criterion_main!(benches);
