//! Durable store benchmarks on real redb files in a temp dir.
//!
//! 1. Durable single-event writes (`DurableLedger::record_event`: one Automerge change and one
//!    fsync'd redb commit each).
//! 2. Batched writes, 1,000 events per batch: `record_events` (one change, one commit) and
//!    group commit (1,000 `write_buffered` then one `flush`).
//! 3. Open time of a 100,000-event ledger: from snapshot + 1,000-change tail, from 100,000
//!    changes never compacted, and for comparison `automerge::Automerge::load` and
//!    `reflow::Ledger::load` of the document's `save()` bytes read from a file.
//! 4. Bytes on disk per event before and after compaction, next to `save()`.
//!
//! The write benchmarks of 1 and 2 run on ledgers of 100 to about 10,000 events (a fresh store
//! is seeded when a ledger passes [`WRITE_CAP`] events, outside the timing); the same writes on
//! the 100,000-event ledger are measured separately. Criterion measures time only: the sizes,
//! and the ratios between figures of this run, are printed to stderr and summed up at the end.
//!
//! `cargo bench -p reflow --bench store`. Under `cargo test` (criterion's test mode: each
//! benchmark runs once) the large ledgers have 1,000 events instead of 100,000.

use std::cell::OnceCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[allow(dead_code)] // each benchmark uses part of it
mod common;

use common::{actor, test_mode, Report, Samples, Workload, NETWORK, RESOURCES};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use reflow::{DurableLedger, Ledger, NewEvent, Store};

/// Events in the large ledgers (benchmark mode).
const BIG: usize = 100_000;
/// Events in the large ledgers in criterion's test mode.
const BIG_QUICK: usize = 1_000;
/// Events per batch in the batched-write benchmarks, and in the tail after the snapshot.
const BATCH: usize = 1_000;
/// A write benchmark moves to a freshly seeded store once its ledger has this many events.
const WRITE_CAP: usize = 10_000;
fn file_size(path: &Path) -> u64 {
    fs::metadata(path).expect("file size").len()
}

/// A store whose ledger holds the genesis objects and the [`RESOURCES`] `produce` events
/// (one change), ready for more events of its workload.
struct WriteTarget {
    dir: PathBuf,
    name: &'static str,
    seed: u64,
    stores: usize,
    w: Workload,
    dl: Option<DurableLedger>,
}

impl WriteTarget {
    fn new(dir: &Path, name: &'static str, seed: u64) -> WriteTarget {
        WriteTarget {
            dir: dir.to_owned(),
            name,
            seed,
            stores: 0,
            w: Workload::new(seed),
            dl: None,
        }
    }

    /// The ledger to write to, and the events to write; a fresh store once the ledger has
    /// [`WRITE_CAP`] events. Call outside the timed section.
    fn get(&mut self, events: usize) -> (&mut DurableLedger, Vec<NewEvent>) {
        let full = self
            .dl
            .as_ref()
            .is_none_or(|dl| dl.ledger().event_count() >= WRITE_CAP);
        if full {
            if let Some(old) = self.dl.take() {
                let path = old.store().path().to_owned();
                drop(old);
                fs::remove_file(path).expect("remove full store");
            }
            self.stores += 1;
            self.w = Workload::new(self.seed + self.stores as u64);
            let path = self.dir.join(format!("{}-{}.redb", self.name, self.stores));
            let store = Store::open(path).expect("create store");
            let mut l = Workload::genesis();
            l.record_events(self.w.take(RESOURCES)).expect("produce");
            self.dl = Some(store.create_ledger(NETWORK, l).expect("create ledger"));
        }
        let events = self.w.take(events);
        (self.dl.as_mut().expect("ledger"), events)
    }
}

/// The large ledgers, built once.
struct Fixtures {
    _dir: tempfile::TempDir,
    events: usize,
    /// `events` events, each in its own change, all in the store's tail (never compacted).
    changes: PathBuf,
    /// The same events compacted into a snapshot, then [`BATCH`] more single-event changes.
    snapshot: PathBuf,
    /// `Ledger::save()` of the ledger.
    saved: PathBuf,
    /// Lines for the size table.
    sizes: Vec<String>,
}

/// Record `big` events, one change each, in memory; store them (changes only; and compacted
/// plus a tail), save them, and store them again in changes of [`BATCH`] events; print sizes.
fn fixtures(report: &Report, big: usize) -> Fixtures {
    let dir = tempfile::tempdir().expect("tempdir");
    report.line(format!("setup: temp dir {}", dir.path().display()));
    let per_event = |bytes: u64| bytes as f64 / big as f64;
    let mut sizes = Vec::new();
    let mut size = |what: &str, bytes: u64| {
        let line = format!("{what:<62} {bytes:>11} B {:>8.1} B/event", per_event(bytes));
        report.line(format!("size: {line}"));
        sizes.push(line);
    };

    let t = Instant::now();
    let mut w = Workload::new(0x5EED);
    let mut ledger = Workload::genesis();
    for _ in 0..big {
        ledger.record_event(w.next()).expect("record");
    }
    report.line(format!(
        "setup: {big} events recorded in memory, one change each, in {:.1?}",
        t.elapsed()
    ));
    assert!(
        ledger.conflicts().is_empty(),
        "the workload is conflict-free"
    );

    let saved = dir.path().join("ledger.automerge");
    fs::write(&saved, ledger.save()).expect("write save()");

    let t = Instant::now();
    let changes = dir.path().join("changes.redb");
    {
        let store = Store::open(&changes).expect("store");
        drop(
            store
                .create_ledger(NETWORK, ledger.fork(actor(2)))
                .expect("create ledger"),
        );
        let stats = store.stats(NETWORK).expect("stats");
        drop(store);
        size(
            &format!(
                "store, 1 change/event, before compaction (file; {} changes)",
                stats.tail_changes
            ),
            file_size(&changes),
        );
        size(
            "  of which change bytes (Store::stats tail_bytes)",
            stats.tail_bytes,
        );
    }

    let snapshot = dir.path().join("snapshot.redb");
    let reclaimed = dir.path().join("snapshot-redb-compacted.redb");
    {
        let store = Store::open(&snapshot).expect("store");
        let mut dl = store.create_ledger(NETWORK, ledger).expect("create ledger");
        let t_compact = Instant::now();
        dl.compact().expect("compact");
        report.line(format!(
            "setup: DurableLedger::compact() of {big} changes in {:.1?}",
            t_compact.elapsed()
        ));
        let stats = store.stats(NETWORK).expect("stats");
        drop(dl);
        drop(store);
        size(
            "store after DurableLedger::compact() (file)",
            file_size(&snapshot),
        );
        size(
            "  of which snapshot value (Store::stats snapshot_bytes)",
            stats.snapshot_bytes,
        );
        fs::copy(&snapshot, &reclaimed).expect("copy");
        let mut db = redb::Database::open(&reclaimed).expect("redb open");
        let t_reclaim = Instant::now();
        db.compact().expect("redb compact");
        report.line(format!(
            "setup: redb Database::compact() after it in {:.1?}",
            t_reclaim.elapsed()
        ));
        drop(db);
        size(
            "store after compact() + redb Database::compact() (file)",
            file_size(&reclaimed),
        );
        fs::remove_file(&reclaimed).expect("remove");

        let store = Store::open(&snapshot).expect("reopen");
        let mut dl = store.open_ledger(NETWORK, actor(3)).expect("open");
        for e in w.take(BATCH) {
            dl.write_buffered(|l| l.record_event(e)).expect("tail");
        }
        dl.flush().expect("flush");
    }
    size("Automerge save() (file)", file_size(&saved));
    report.line(format!("setup: stores in {:.1?}", t.elapsed()));

    let t = Instant::now();
    {
        let path = dir.path().join("batched.redb");
        let store = Store::open(&path).expect("store");
        let mut dl = store
            .create_ledger(NETWORK, Workload::genesis())
            .expect("create ledger");
        let mut w = Workload::new(0x5EED);
        for _ in 0..big / BATCH {
            dl.record_events(w.take(BATCH)).expect("record batch");
        }
        let stats = store.stats(NETWORK).expect("stats");
        drop(dl);
        drop(store);
        size(
            &format!("store, {BATCH} events/change, never compacted (file)"),
            file_size(&path),
        );
        size(
            "  of which change bytes (Store::stats tail_bytes)",
            stats.tail_bytes,
        );
        fs::remove_file(path).expect("remove");
    }
    report.line(format!(
        "setup: batched store ({} record_events of {BATCH}) in {:.1?}",
        big / BATCH,
        t.elapsed()
    ));
    Fixtures {
        _dir: dir,
        events: big,
        changes,
        snapshot,
        saved,
        sizes,
    }
}

fn store(c: &mut Criterion) {
    let report = Report::default();
    let big = if test_mode() { BIG_QUICK } else { BIG };
    let dir = tempfile::tempdir().expect("tempdir");
    let [single, batched, group, single_big, batched_big, open_snap, open_changes, am_load, ledger_load] =
        std::array::from_fn(|_| Samples::default());

    // 1. Durable single-event writes.
    let mut g = c.benchmark_group("store/write");
    g.throughput(Throughput::Elements(1));
    let mut target = WriteTarget::new(dir.path(), "single", 1);
    g.bench_function("record_event (1 change, 1 fsync'd commit)", |b| {
        b.iter_custom(|iters| {
            let (dl, events) = target.get(iters as usize);
            let t = Instant::now();
            for e in events {
                dl.record_event(e).expect("record");
            }
            single.record(iters, t.elapsed())
        })
    });
    g.finish();

    // 2. Batches of 1,000 events.
    let mut g = c.benchmark_group("store/batch_1000");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sampling_mode(SamplingMode::Flat);
    let mut target = WriteTarget::new(dir.path(), "batched", 100);
    g.bench_function("record_events (1 change, 1 commit)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (dl, events) = target.get(BATCH);
                let t = Instant::now();
                dl.record_events(events).expect("record");
                total += t.elapsed();
            }
            batched.record(iters, total)
        })
    });
    let mut target = WriteTarget::new(dir.path(), "group", 200);
    g.bench_function("write_buffered x1000 + flush (group commit)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (dl, events) = target.get(BATCH);
                let t = Instant::now();
                for e in events {
                    dl.write_buffered(|l| l.record_event(e)).expect("record");
                }
                dl.flush().expect("flush");
                total += t.elapsed();
            }
            group.record(iters, total)
        })
    });
    g.finish();

    // 3. Open time of the large ledger (built on first use, with the sizes of 4).
    let built: OnceCell<Fixtures> = OnceCell::new();
    let fx = || built.get_or_init(|| fixtures(&report, big));
    let mut g = c.benchmark_group(format!("store/open_{}k", big / 1000));
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(1));
    for (name, snap, s) in [
        (
            "Store::open + open_ledger, snapshot + 1000-change tail",
            true,
            &open_snap,
        ),
        (
            "Store::open + open_ledger, changes only (never compacted)",
            false,
            &open_changes,
        ),
    ] {
        g.bench_function(name, |b| {
            let f = fx();
            let path = if snap { &f.snapshot } else { &f.changes };
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let store = Store::open(path).expect("open store");
                    let dl = store.open_ledger(NETWORK, actor(9)).expect("open ledger");
                    total += t.elapsed();
                    assert!(dl.ledger().event_count() >= f.events);
                }
                s.record(iters, total)
            })
        });
    }
    g.bench_function("automerge::Automerge::load(save() file)", |b| {
        let f = fx();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let doc =
                    automerge::Automerge::load(&fs::read(&f.saved).expect("read")).expect("load");
                total += t.elapsed();
                drop(doc);
            }
            am_load.record(iters, total)
        })
    });
    g.bench_function("reflow::Ledger::load(save() file)", |b| {
        let f = fx();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let l = Ledger::load(&fs::read(&f.saved).expect("read"), actor(9)).expect("load");
                total += t.elapsed();
                assert!(l.event_count() >= f.events);
            }
            ledger_load.record(iters, total)
        })
    });
    g.finish();

    // The writes of 1 and 2 on the large ledger (opened from the snapshot store).
    let mut large: Option<DurableLedger> = None;
    let open_large = || {
        let store = Store::open(&fx().snapshot).expect("open store");
        store.open_ledger(NETWORK, actor(10)).expect("open ledger")
    };
    let mut w = Workload::new(0xB16);
    w.n = RESOURCES as u64;
    let mut g = c.benchmark_group(format!("store/write_at_{}k", big / 1000));
    g.throughput(Throughput::Elements(1));
    g.bench_function("record_event (1 change, 1 fsync'd commit)", |b| {
        let dl = large.get_or_insert_with(open_large);
        b.iter_custom(|iters| {
            let events = w.take(iters as usize);
            let t = Instant::now();
            for e in events {
                dl.record_event(e).expect("record");
            }
            single_big.record(iters, t.elapsed())
        })
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function("record_events x1000 (1 change, 1 commit)", |b| {
        let dl = large.get_or_insert_with(open_large);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let events = w.take(BATCH);
                let t = Instant::now();
                dl.record_events(events).expect("record");
                total += t.elapsed();
            }
            batched_big.record(iters, total)
        })
    });
    g.finish();
    drop(large);

    // The summary: medians of this run's samples, and their ratios.
    eprintln!("\n=== store benchmark summary (medians of this run) ===");
    for l in report.0.borrow().iter() {
        eprintln!("{l}");
    }
    let rate = |s: f64, per: usize| per as f64 / s;
    if let (Some(one), Some(b), Some(gc)) = (single.median(), batched.median(), group.median()) {
        let (r1, rb, rg) = (rate(one, 1), rate(b, BATCH), rate(gc, BATCH));
        eprintln!("writes, ledger of {RESOURCES}..{WRITE_CAP} events:");
        eprintln!(
            "  record_event, 1 fsync'd commit each   {r1:>9.0} events/s  {:>8.3} ms/event",
            one * 1e3
        );
        eprintln!("  record_events x1000, 1 commit         {rb:>9.0} events/s  {:>8.1} ms/batch  {:>5.1}x single", b * 1e3, rb / r1);
        eprintln!("  write_buffered x1000 + flush          {rg:>9.0} events/s  {:>8.1} ms/batch  {:>5.1}x single", gc * 1e3, rg / r1);
        if let (Some(sb), Some(bb)) = (single_big.median(), batched_big.median()) {
            let (rsb, rbb) = (rate(sb, 1), rate(bb, BATCH));
            eprintln!("writes, ledger of {big}+ events:");
            eprintln!("  record_event, 1 fsync'd commit each   {rsb:>9.0} events/s  {:>8.3} ms/event  {:>5.2}x small ledger", sb * 1e3, rsb / r1);
            eprintln!("  record_events x1000, 1 commit         {rbb:>9.0} events/s  {:>8.1} ms/batch  {:>5.2}x small ledger", bb * 1e3, rbb / rb);
        }
    }
    if let (Some(s), Some(ch), Some(a), Some(l)) = (
        open_snap.median(),
        open_changes.median(),
        am_load.median(),
        ledger_load.median(),
    ) {
        eprintln!("open, {big} events:");
        eprintln!(
            "  Store::open + open_ledger, snapshot + {BATCH}-change tail  {:>7.0} ms  1.00x",
            s * 1e3
        );
        eprintln!(
            "  Store::open + open_ledger, changes only               {:>7.0} ms  {:>5.2}x",
            ch * 1e3,
            ch / s
        );
        eprintln!(
            "  automerge::Automerge::load(save() file)               {:>7.0} ms  {:>5.2}x",
            a * 1e3,
            a / s
        );
        eprintln!(
            "  reflow::Ledger::load(save() file)                     {:>7.0} ms  {:>5.2}x",
            l * 1e3,
            l / s
        );
        eprintln!(
            "  => views fold (Ledger::load - Automerge::load)        {:>7.0} ms",
            (l - a) * 1e3
        );
    }
    if let Some(f) = built.get() {
        eprintln!("size on disk, {} events:", f.events);
        for l in &f.sizes {
            eprintln!("  {l}");
        }
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = store
}
criterion_main!(benches);
