//! The Reflow side: histories built straight into redb stores, then real nodes (iroh endpoints
//! bound to 127.0.0.1, relays and address lookup off) syncing them.

use std::path::Path;
use std::time::{Duration, Instant};

use automerge::{Automerge, ReadDoc};
use reflow::node::STORE_FILE;
use reflow::*;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::common::{self, Workload};
use crate::measure::{child, cpu_seconds, lo_overhead, proc_status, Wire};
use crate::spans::SpanTimes;

/// Seed of the workload.
pub const SEED: u64 = 0x5eed;
/// Longest wait for one sync or one live event.
const WAIT: Duration = Duration::from_secs(900);

fn sorted(mut h: Vec<ChangeHash>) -> Vec<ChangeHash> {
    h.sort();
    h
}

/// Copy a store directory.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy store");
    }
}

/// What a build makes besides the admin's store.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Members {
    /// `m1`: an empty store (joins); `m2`: a member holding the network's first changes
    /// (catches up).
    Sync,
    /// `m1`..`m{count}`: empty stores of devices added with `role` (they join before the
    /// measure).
    Live {
        /// How many.
        count: usize,
        /// Their role: members (live), or admins (many: any node may write the workload's
        /// events; a member records only events its own agent is a party to).
        role: Role,
    },
    /// `m1`..`m3`: admins holding the whole history (they write conflicting events offline).
    Conflict,
}

fn seed_objects(replica: &mut Replica) -> Vec<SignedChange> {
    let genesis = Workload::genesis();
    replica
        .write(|l| {
            for u in genesis.list::<Unit>() {
                l.create(u)?;
            }
            for ag in genesis.list::<Agent>() {
                if ag.id.as_str() != "ana" {
                    l.create(ag)?;
                }
            }
            for s in genesis.list::<ResourceSpecification>() {
                l.create(s)?;
            }
            for s in genesis.list::<SpatialThing>() {
                l.create(s)?;
            }
            Ok(())
        })
        .expect("objects")
        .1
}

/// Build in `dir`: `a`, the admin's store with a network of the workload's objects and `events`
/// events (one signed change each), the member stores of `members`, and for the other
/// contestants `doc.bin` (the saved document), `prefix.bin` (the document of the network's
/// first changes: genesis, objects, members) and `events.tsv` (every event's bucket, key and
/// JSON text, in order, as Reflow stored it).
pub fn build(dir: &Path, events: usize, members: Members) -> Value {
    let started = Instant::now();
    let (count, role) = match members {
        Members::Sync => (2, Role::Member),
        Members::Live { count, role } => (count, role),
        Members::Conflict => (3, Role::Admin),
    };
    let mut keys = Vec::new();
    for i in 1..=count {
        let d = dir.join(format!("m{i}"));
        std::fs::create_dir_all(&d).expect("member directory");
        let store = Store::open(d.join(STORE_FILE)).expect("member store");
        keys.push(store.device_key().expect("member key"));
    }
    let a = dir.join("a");
    std::fs::create_dir_all(&a).expect("admin directory");
    let store = Store::open(a.join(STORE_FILE)).expect("admin store");
    let key = store.device_key().expect("admin key");
    let (mut replica, mut signed) =
        Replica::create_network(common::NETWORK, key, Agent::person("ana", "ana"))
            .expect("create network");
    signed.extend(seed_objects(&mut replica));
    for k in &keys {
        signed.extend(
            replica
                .add_member(k.id(), role, Id::from("ben"))
                .expect("add member"),
        );
    }
    let first = signed.clone();
    std::fs::write(dir.join("prefix.bin"), replica.ledger().save()).expect("write prefix");
    let mut w = Workload::new(SEED);
    let t0 = Instant::now();
    for _ in 0..events {
        let e = w.next();
        signed.extend(replica.write(|l| l.record_event(e)).expect("event").1);
    }
    let record_s = t0.elapsed().as_secs_f64();
    let network = replica.network();
    let saved = replica.ledger().save();
    std::fs::write(dir.join("doc.bin"), &saved).expect("write doc");
    write_events(&saved, &dir.join("events.tsv"));
    let t1 = Instant::now();
    let stored = store
        .create_replica(replica, &signed)
        .expect("store the history");
    let store_s = t1.elapsed().as_secs_f64();
    drop(stored);
    drop(store);
    match members {
        Members::Sync => {
            let d = dir.join("m2");
            let store = Store::open(d.join(STORE_FILE)).expect("member store");
            let (r, receipt) =
                Replica::join(network, keys[1].clone(), first).expect("prefix replica");
            store
                .create_replica(r, &receipt.applied)
                .expect("store the prefix");
        }
        Members::Live { .. } => {}
        Members::Conflict => {
            for (i, k) in keys.iter().enumerate() {
                let d = dir.join(format!("m{}", i + 1));
                let store = Store::open(d.join(STORE_FILE)).expect("member store");
                let (r, receipt) =
                    Replica::join(network, k.clone(), signed.clone()).expect("full replica");
                store
                    .create_replica(r, &receipt.applied)
                    .expect("store the replica");
            }
        }
    }
    json!({
        "network": network.to_string(),
        "changes": signed.len(),
        "doc_bytes": saved.len(),
        "record_s": record_s,
        "store_s": store_s,
        "build_s": started.elapsed().as_secs_f64(),
    })
}

/// Every event of a saved schema-v2 document as `bucket<TAB>key<TAB>json` lines, in the order
/// of their op counters.
fn write_events(saved: &[u8], path: &Path) {
    let doc = Automerge::load(saved).expect("load");
    let Ok(Some((_, set))) = doc.get(automerge::ROOT, "eventBuckets") else {
        panic!("not a schema-v2 document");
    };
    let mut rows: Vec<(u64, String)> = Vec::new();
    for b in doc.map_range(&set, ..) {
        let bucket = b.key.to_string();
        let obj = b.id();
        for item in doc.map_range(&obj, ..) {
            let automerge::ObjId::Id(counter, _, _) = item.id() else {
                continue;
            };
            let value = match item.value.clone().into_value() {
                automerge::Value::Scalar(s) => match s.as_ref() {
                    automerge::ScalarValue::Str(t) => t.to_string(),
                    _ => continue,
                },
                automerge::Value::Object(_) => continue,
            };
            rows.push((counter, format!("{bucket}\t{}\t{value}", item.key)));
        }
    }
    rows.sort();
    let text: Vec<String> = rows.into_iter().map(|(_, l)| l).collect();
    std::fs::write(path, text.join("\n") + "\n").expect("write events");
}

/// A loopback node.
async fn open_node(dir: &Path) -> Node {
    let config = NodeConfig {
        connect_timeout: Duration::from_secs(300),
        ..NodeConfig::loopback(dir)
    };
    let node = Node::open(config).await.expect("open a loopback node");
    let addr = node.addr();
    assert!(
        !addr.direct.is_empty()
            && addr.direct.iter().all(|a| a.ip().is_loopback())
            && addr.relays.is_empty(),
        "loopback only: {addr}"
    );
    node
}

async fn wait_heads(node: &Node, network: NetworkId, target: &[ChangeHash], what: &str) {
    let mut rx = node.subscribe(network).expect("subscribe");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if sorted(node.heads(network).expect("heads")) == target {
            return;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("timed out waiting for {what}"),
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("node closed waiting for {what}"),
        }
    }
}

/// Record: `events` events written one change each by a signed replica in memory (signing,
/// admission, views), then the whole history stored durably in one commit. Measured by the
/// build itself.
pub fn record(dir: &Path, events: usize) -> Value {
    let r = build(dir, events, Members::Sync);
    json!({
        "s": r["record_s"].as_f64().unwrap_or(f64::NAN) + r["store_s"].as_f64().unwrap_or(f64::NAN),
        "in_memory_s": r["record_s"], "store_s": r["store_s"],
    })
}

/// Open: `Store::open` + `Store::open_replica` of a copy of the admin's store (`compact`:
/// after a compaction, else as built: every change a row).
pub fn open(dir: &Path, compact: bool) -> Value {
    let tmp = tempfile::tempdir().expect("temporary directory");
    copy_dir(&dir.join("a"), tmp.path());
    let path = tmp.path().join(STORE_FILE);
    if compact {
        // In a process of its own, so that this one's resident memory after the open is the
        // open's alone (not the compaction's heap, which the allocator keeps).
        child(
            false,
            "reflow-open-in-place",
            json!({ "dir": tmp.path(), "compact": true }),
        )
        .expect("compact the store in a process of its own");
    }
    open_store(&path, compact)
}

/// Compact the store's network, then open the file once more, untimed: that open gives the
/// freed pages back to the file system (redb's own compaction, once after a compaction).
fn compact_store(path: &Path) {
    {
        let store = Store::open(path).expect("store");
        let key = store.device_key().expect("key");
        let network: NetworkId = store.networks().expect("networks")[0]
            .parse()
            .expect("network id");
        let mut r = store.open_replica(&network, key).expect("replica");
        r.compact().expect("compact");
    }
    drop(Store::open(path).expect("store"));
}

/// For profiling (`reflow-bench __phase reflow-open-in-place '{"dir": …}'` under `perf
/// record`): open the store at `dir` as it is, or only compact it (`compact`).
pub fn open_in_place(dir: &Path, compact: bool) -> Value {
    let path = dir.join(STORE_FILE);
    if compact {
        compact_store(&path);
        return json!({ "compacted": true });
    }
    open_store(&path, false)
}

fn open_store(path: &Path, compact: bool) -> Value {
    let rss0 = proc_status("VmRSS");
    let t0 = Instant::now();
    let store = Store::open(path).expect("store");
    let t_store = t0.elapsed().as_secs_f64();
    let key = store.device_key().expect("key");
    let network: NetworkId = store.networks().expect("networks")[0]
        .parse()
        .expect("network id");
    let r = store.open_replica(&network, key).expect("replica");
    let s = t0.elapsed().as_secs_f64();
    let events = r.ledger().event_count();
    assert!(events > 0);
    json!({ "s": s, "store_open_s": t_store, "events": events,
            "rss_delta": proc_status("VmRSS").saturating_sub(rss0), "compacted": compact })
}

/// Join (`catch_up` false: an empty store, `Node::join`) or catch-up (a member holding the
/// first changes, `Node::connect`) of copies of the built stores; time until equal heads.
pub async fn sync(dir: &Path, catch_up: bool) -> Value {
    let overhead = lo_overhead();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    copy_dir(&dir.join("a"), &da);
    copy_dir(&dir.join(if catch_up { "m2" } else { "m1" }), &db);
    let a = open_node(&da).await;
    let b = open_node(&db).await;
    let network = a.networks()[0];
    let target = sorted(a.heads(network).expect("heads"));
    let wire = Wire::start(overhead);
    let t0 = Instant::now();
    if catch_up {
        b.connect(network, &a.addr()).await.expect("connect");
    } else {
        b.join(network, &a.addr()).await.expect("join");
    }
    wait_heads(&b, network, &target, "the new node's heads").await;
    let s = t0.elapsed().as_secs_f64();
    let (rss, hwm) = (proc_status("VmRSS"), proc_status("VmHWM"));
    let (bytes, _) = wire.quiet().await;
    a.close().await.expect("close");
    b.close().await.expect("close");
    json!({ "s": s, "bytes": bytes, "rss": rss, "hwm": hwm })
}

/// How the nodes of a live case are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Each node joined through the previous one; latency to the farthest (the last).
    Line,
    /// A line, then every node connected to every earlier one.
    Mesh,
    /// Seeded and sparse: each node joins through a random earlier node, then connects to
    /// `extra` more distinct random earlier nodes (so `(1 + extra)(n - 1)` links, less the few
    /// the first nodes cannot make: a mean degree of about `2 + 2 × extra`).
    Sparse {
        /// Seed of the choices.
        seed: u64,
        /// Links each node makes beyond its join.
        extra: usize,
    },
}

/// splitmix64: the next number of a seeded stream.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Topology {
    /// The links `(earlier, later)` of `nodes` nodes in the order they are made: a node's
    /// first link is its join through the earlier node, its others are connects.
    pub fn links(self, nodes: usize) -> Vec<(usize, usize)> {
        let line = (1..nodes).map(|j| (j - 1, j));
        match self {
            Topology::Line => line.collect(),
            Topology::Mesh => line
                .chain((2..nodes).flat_map(|j| (0..j - 1).map(move |i| (i, j))))
                .collect(),
            Topology::Sparse { seed, extra } => {
                let mut state = seed;
                let mut links = Vec::new();
                for j in 1..nodes {
                    let mut picked: Vec<usize> = Vec::new();
                    while picked.len() < (1 + extra).min(j) {
                        let i = (splitmix(&mut state) % j as u64) as usize;
                        if !picked.contains(&i) {
                            picked.push(i);
                        }
                    }
                    links.extend(picked.into_iter().map(|i| (i, j)));
                }
                links
            }
        }
    }
}

/// The shape of a topology: links, degrees (min, mean, max), hops from node 1 to the
/// farthest node, and the diameter.
pub fn shape(nodes: usize, links: &[(usize, usize)]) -> Value {
    let mut adjacent = vec![Vec::new(); nodes];
    for &(i, j) in links {
        adjacent[i].push(j);
        adjacent[j].push(i);
    }
    let farthest = |from: usize| {
        let mut hops = vec![usize::MAX; nodes];
        hops[from] = 0;
        let mut queue = std::collections::VecDeque::from([from]);
        while let Some(i) = queue.pop_front() {
            for &j in &adjacent[i] {
                if hops[j] == usize::MAX {
                    hops[j] = hops[i] + 1;
                    queue.push_back(j);
                }
            }
        }
        hops.into_iter().max().unwrap_or(0)
    };
    let degrees: Vec<usize> = adjacent.iter().map(Vec::len).collect();
    json!({
        "links": links.len(),
        "degree_min": degrees.iter().min(),
        "degree_mean": 2.0 * links.len() as f64 / nodes.max(1) as f64,
        "degree_max": degrees.iter().max(),
        "hops_from_first": farthest(0),
        "diameter": (0..nodes).map(farthest).max().unwrap_or(0),
    })
}

/// Idle traffic is read over this window after the nodes converge (a measure, not a wait
/// for anything).
const IDLE_WINDOW: Duration = Duration::from_secs(1);

/// Live: `nodes` nodes connected as `topology`; then one round per entry of `writers`: `warmup`
/// events and `events` measured ones, written in turn by that many nodes spread evenly over
/// the indices (1: node 1 writes them all). Latency from `record_event` returning to the
/// farthest node's notification (line) or the last one's (else); wire bytes per measured
/// event, and the engine's span timings of the measured events ([`SpanTimes`]), per round.
pub async fn live(
    dir: &Path,
    nodes: usize,
    topology: Topology,
    ledger_events: usize,
    warmup: usize,
    events: usize,
    writers: &[usize],
) -> Value {
    // Before any node starts: the engine's spans are timed while a round is measured.
    let spans = SpanTimes::install();
    let rss0 = proc_status("VmRSS");
    let t_setup = Instant::now();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mut all = Vec::new();
    for i in 0..nodes {
        let from = if i == 0 {
            "a".to_string()
        } else {
            format!("m{i}")
        };
        let d = tmp.path().join(&from);
        copy_dir(&dir.join(&from), &d);
        all.push(open_node(&d).await);
    }
    let network = all[0].networks()[0];
    let links = topology.links(nodes);
    let mut joined = vec![false; nodes];
    joined[0] = true;
    for &(i, j) in &links {
        if joined[j] {
            all[j]
                .connect(network, &all[i].addr())
                .await
                .expect("connect");
        } else {
            all[j]
                .join(network, &all[i].addr())
                .await
                .expect("join through an earlier node");
            joined[j] = true;
        }
    }
    let target = sorted(all[0].heads(network).expect("heads"));
    for n in &all[1..] {
        wait_heads(n, network, &target, "convergence").await;
    }
    let setup_s = t_setup.elapsed().as_secs_f64();
    let rss_setup = proc_status("VmRSS");
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Instant, Vec<ChangeHash>)>();
    let mut tasks = Vec::new();
    for (i, n) in all.iter().enumerate() {
        let mut sub = n.subscribe(network).expect("subscribe");
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(u) => {
                        if tx.send((i, Instant::now(), sorted(u.heads))).is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        }));
    }
    let overhead = lo_overhead();
    let idle = Wire::start(overhead);
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_bytes_per_s = idle.read().0 as f64 / IDLE_WINDOW.as_secs_f64();
    let mut w = Workload::new(SEED);
    for _ in 0..ledger_events {
        w.next();
    }
    let mut rounds = Vec::new();
    for &count in writers {
        let count = count.clamp(1, nodes);
        let mut wire = Wire::start(overhead);
        let (mut lat, mut first) = (Vec::new(), Vec::new());
        let (mut t_round, mut cpu0) = (Instant::now(), cpu_seconds());
        for k in 0..warmup + events {
            if k == warmup {
                wire = Wire::start(overhead);
                (t_round, cpu0) = (Instant::now(), cpu_seconds());
                spans.arm();
            }
            let writer = k % count * nodes / count;
            all[writer].record_event(network, w.next()).expect("write");
            let t = Instant::now();
            let target = sorted(all[writer].heads(network).expect("heads"));
            let mut got: Vec<Option<f64>> = vec![None; nodes];
            got[writer] = Some(0.0);
            while got.iter().any(Option::is_none) {
                let (i, at, heads) = tokio::time::timeout(WAIT, rx.recv())
                    .await
                    .expect("a live event propagates")
                    .expect("subscribers alive");
                if heads == target && got[i].is_none() {
                    got[i] = Some(at.saturating_duration_since(t).as_secs_f64());
                }
            }
            if k >= warmup {
                let others: Vec<f64> = (0..nodes)
                    .filter(|i| *i != writer)
                    .map(|i| got[i].unwrap_or(f64::NAN))
                    .collect();
                lat.push(if topology == Topology::Line {
                    got[nodes - 1].unwrap_or(f64::NAN)
                } else {
                    others.iter().copied().fold(0.0, f64::max)
                });
                first.push(others.iter().copied().fold(f64::INFINITY, f64::min));
            }
        }
        let s = t_round.elapsed().as_secs_f64();
        let cpu_s = cpu_seconds() - cpu0;
        let t_quiet = Instant::now();
        let (bytes, _) = wire.quiet().await;
        let span_times = spans.disarm();
        // Every measured event was stored by its writer at least: if no persist was timed,
        // the layer is not seeing the engine's spans and the figures would be empty.
        let persisted = span_times["store_persist"]["count"].as_u64().unwrap_or(0);
        assert!(
            persisted >= events as u64,
            "the engine's spans were not timed ({persisted} persists for {events} events): {span_times}"
        );
        rounds.push(json!({
            "writers": count, "lat": lat, "first": first, "s": s,
            "quiet_s": t_quiet.elapsed().as_secs_f64(),
            "cpu_per_event_s": cpu_s / events.max(1) as f64,
            "bytes_per_event": bytes as f64 / events.max(1) as f64,
            "spans": span_times,
        }));
    }
    for t in tasks {
        t.abort();
    }
    for n in all {
        n.close().await.expect("close");
    }
    json!({
        "rounds": rounds, "shape": shape(nodes, &links), "setup_s": setup_s,
        "idle_bytes_per_s": idle_bytes_per_s,
        "rss_per_node": rss_setup.saturating_sub(rss0) as f64 / nodes as f64,
        "hwm": proc_status("VmHWM"),
    })
}

/// The `k`-th conflicting transfer of node `node`: 3,000 kg out of a lot that holds about
/// 10,000, so that the four nodes' concurrent transfers overdraw it (and one node's own
/// repeated transfers of one lot do too), and each hands on a custody the others hand on too.
fn conflicting_transfer(node: usize, k: usize) -> NewEvent {
    const AGENTS: [&str; 10] = [
        "ana", "ben", "cleo", "dev", "eli", "fay", "gus", "hana", "ivo", "jon",
    ];
    // Lots 0..49 only give, lots 50..99 only receive: every transfer of a lot is
    // concurrent with the other nodes' transfers of it.
    let from = k % (common::RESOURCES / 2);
    let to = from + common::RESOURCES / 2;
    EconomicEvent::new(Action::Transfer, AGENTS[from % 10], AGENTS[to % 10])
        .resource(format!("r{from}"))
        .to_resource(format!("r{to}"))
        .quantity(3000, "kg")
        .at("stall-1")
        .at_time(format!("2026-01-01T00:{:02}:{:02}Z", node, k % 60))
        .into()
}

/// Conflict merge: the admin and three admins holding the whole history, offline (no
/// connection), each records `k` conflicting transfers; then they connect in a full mesh;
/// time until all four have the same heads, and the conflicts every node lists are checked
/// equal (and not empty).
pub async fn conflict_merge(dir: &Path, k: usize) -> Value {
    let overhead = lo_overhead();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mut all = Vec::new();
    for from in ["a", "m1", "m2", "m3"] {
        let d = tmp.path().join(from);
        copy_dir(&dir.join(from), &d);
        all.push(open_node(&d).await);
    }
    let network = all[0].networks()[0];
    for (i, n) in all.iter().enumerate() {
        for j in 0..k {
            n.record_event(network, conflicting_transfer(i, j))
                .expect("an offline transfer");
        }
    }
    let mut target: Vec<ChangeHash> = all
        .iter()
        .flat_map(|n| n.heads(network).expect("heads"))
        .collect();
    target.sort();
    target.dedup();
    let wire = Wire::start(overhead);
    let t0 = Instant::now();
    for j in 1..4 {
        for i in 0..j {
            all[j]
                .connect(network, &all[i].addr())
                .await
                .expect("connect");
        }
    }
    for n in &all {
        wait_heads(n, network, &target, "the merge").await;
    }
    let s = t0.elapsed().as_secs_f64();
    let (bytes, _) = wire.quiet().await;
    let conflicts: Vec<Vec<Conflict>> = all
        .iter()
        .map(|n| n.read(network, |r| r.ledger().conflicts()).expect("read"))
        .collect();
    assert!(!conflicts[0].is_empty(), "the offline transfers conflict");
    assert!(
        conflicts.iter().all(|c| *c == conflicts[0]),
        "every node lists the same conflicts"
    );
    let n_conflicts = conflicts[0].len();
    for n in all {
        n.close().await.expect("close");
    }
    json!({ "s": s, "bytes": bytes, "conflicts": n_conflicts, "hwm": proc_status("VmHWM") })
}

/// Memory: the resident set one opened ledger costs, as `what`: `document` (the saved
/// document loaded by bare Automerge), `ledger` (the document and its views, `Ledger::load`),
/// `replica` (`Store::open` + `open_replica` of the compacted store in `dir/c`: the ledger,
/// the stored views, membership, signatures, the store's handle) or `node` (`Node::open` of
/// it: the replica, the endpoint, the runtime's tasks). One measure per fresh process (the
/// compaction was done by another), the RSS after minus the RSS before.
pub async fn memory(dir: &Path, what: &str) -> Value {
    let saved = std::fs::read(dir.join("doc.bin")).expect("saved document");
    let tmp = tempfile::tempdir().expect("temporary directory");
    copy_dir(&dir.join("c"), tmp.path());
    let path = tmp.path().join(STORE_FILE);
    let rss0 = proc_status("VmRSS");
    let t0 = Instant::now();
    let keep: Box<dyn std::any::Any> = match what {
        "document" => Box::new(Automerge::load(&saved).expect("load")),
        "ledger" => Box::new(Ledger::load(&saved, ActorId::random()).expect("load")),
        "replica" => {
            let store = Store::open(&path).expect("store");
            let key = store.device_key().expect("key");
            let network: NetworkId = store.networks().expect("networks")[0]
                .parse()
                .expect("network id");
            Box::new(store.open_replica(&network, key).expect("replica"))
        }
        "node" => Box::new(open_node(tmp.path()).await),
        other => panic!("unknown memory case {other}"),
    };
    let s = t0.elapsed().as_secs_f64();
    let rss = proc_status("VmRSS").saturating_sub(rss0);
    let views_bytes = match keep.downcast_ref::<Ledger>() {
        Some(l) => l.encode_views().len(),
        None => 0,
    };
    drop(keep);
    json!({ "what": what, "rss": rss, "s": s, "doc_bytes": saved.len(), "views_bytes": views_bytes })
}
