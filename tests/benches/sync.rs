//! Sync benchmarks of real nodes (iroh endpoints on loopback only, relays and address lookup
//! disabled, redb stores in temporary directories), issue 6 item 8.
//!
//! 1. **Initial sync** of 1k, 10k and 100k events between two nodes, the events being the
//!    realistic market workload of `engine/benches/common` (one change per event; 10k and
//!    100k also in batches of 1,000 events per change). Two paths:
//!    - *join*: a new device (empty store) calls `Node::join` through the admin, which has the
//!      whole history; timed from the call until the joiner's heads equal the admin's;
//!    - *catch-up*: a member that holds only the network's first changes calls
//!      `Node::connect`; timed the same way (this is the sync-session path).
//!
//!    Bytes on the wire: the node API exposes neither its sessions' counters nor iroh's
//!    connection stats, and a counting UDP relay between the nodes is bypassed (iroh
//!    learns the peer's own address through QUIC NAT traversal and moves to the direct
//!    path), so each case runs in a private network namespace (`unshare -rn`, loopback up,
//!    nothing else in it) and reads the loopback counters: UDP payload bytes (QUIC packets,
//!    both directions; the 42 bytes of headers per packet are taken off) from the call until
//!    the traffic has been quiet for a moment after the first round. Without `unshare` the
//!    shared namespace's counters are read (and may include other traffic).
//!
//!    Ratios are to a raw in-memory Automerge sync of the same document (the admin's
//!    ledger; `generate_sync_message` / `receive_sync_message` between a loaded copy and an
//!    empty document, messages encoded and decoded) in the same run: Automerge's default (it
//!    sends the whole compressed document in one v2 message to an empty peer) and v1
//!    messages (one change per chunk, like Reflow).
//! 2. **Live propagation** of one event written on node 1 (`Node::record_event` returns) to
//!    the `subscribe()` notification of the farthest node, over a 10k-event ledger: a line of
//!    2, 4 and 8 nodes (each joined through the previous one: 1, 3 and 7 hops) and a full
//!    mesh of 4 and 8 nodes (time until the last node is notified); 200 events after 10
//!    warm-up ones, written one after the other, p50 / p99 / max.
//! 3. **Memory per node**: the process's VmRSS divided by the node count, with 8 nodes on a
//!    10k ledger and after the 100k syncs (2 nodes); VmHWM (peak) too.
//! 4. **One change from a peer** by ledger size (1k, 10k, 100k events, in memory): where the
//!    time of a live hop goes (`Replica::receive`, `Ledger::apply_changes`, Automerge's
//!    `apply_changes` and `diff`).
//!
//! Every case runs in its own child process (this binary with `--phase`), so that memory
//! figures are not those of earlier cases, and the histories are built beforehand by another
//! child, directly into the admin's store (signed changes, one commit). The summary table is
//! printed to stderr at the end.
//!
//! `cargo bench -p reflow-integration-tests --bench sync`. Environment:
//! `REFLOW_SYNC_MAX_EVENTS=n` caps the ledgers at `n` events (quick runs);
//! `REFLOW_SYNC_LIVE_EVENTS=n` sets the live events measured (default 200);
//! `REFLOW_SYNC_REPEATS=n` the timed runs per initial-sync case (default 3 up to 10k events,
//! 1 above). Without `--bench` (`cargo test --benches`) everything is tiny.

#[allow(dead_code)] // the sync benchmarks use part of it
#[path = "../../engine/benches/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use automerge::sync::{Message, State, SyncDoc};
use automerge::Automerge;
use common::{test_mode, Workload};
use reflow::node::STORE_FILE;
use reflow::*;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

/// Seed of the workload.
const SEED: u64 = 0x5eed;
/// Longest wait for one sync or one live event.
const WAIT: Duration = Duration::from_secs(600);
/// Live events written before the measured ones.
const WARMUP: usize = 10;
/// Traffic is counted until no packet has passed for this long.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Small helpers

/// A figure of /proc/self/status in bytes (VmRSS, VmHWM).
fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes and packets received on the loopback interface since the namespace was made: every
/// packet sent on loopback is received once. In the private network namespace each child
/// runs in, that is exactly the nodes' traffic.
fn lo_counters() -> (u64, u64) {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    dev.lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .map(|rest| {
            let mut f = rest
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0));
            (f.next().unwrap_or(0), f.next().unwrap_or(0))
        })
        .unwrap_or((0, 0))
}

/// Bytes the loopback device counts per UDP packet beyond its payload (Ethernet, IPv4 and UDP
/// headers: 42), measured with ten datagrams of 100 bytes.
fn lo_overhead() -> u64 {
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").expect("bind"),
        UdpSocket::bind("127.0.0.1:0").expect("bind"),
    );
    let to = b.local_addr().expect("address");
    let (bytes0, packets0) = lo_counters();
    let mut buf = [0u8; 200];
    for _ in 0..10 {
        a.send_to(&[7u8; 100], to).expect("send");
        b.recv(&mut buf).expect("receive");
    }
    let (bytes1, packets1) = lo_counters();
    if packets1 - packets0 == 10 && bytes1 - bytes0 >= 1000 {
        (bytes1 - bytes0 - 1000) / 10
    } else {
        42
    }
}

/// Loopback traffic from a starting point: UDP payload bytes (QUIC packets, both directions)
/// and packets.
struct Wire {
    start: (u64, u64),
    overhead: u64,
}

impl Wire {
    fn start(overhead: u64) -> Wire {
        Wire {
            start: lo_counters(),
            overhead,
        }
    }

    fn read(&self) -> (u64, u64) {
        let (bytes, packets) = lo_counters();
        let packets = packets - self.start.1;
        (bytes - self.start.0 - packets * self.overhead, packets)
    }

    /// Wait until no packet has passed for [`QUIET`] (at most 10 s), then read.
    async fn quiet(&self) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = (lo_counters().1, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = lo_counters().1;
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= QUIET || Instant::now() > deadline {
                return self.read();
            }
        }
    }
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted_heads(mut h: Vec<ChangeHash>) -> Vec<ChangeHash> {
    h.sort();
    h
}

fn mb(bytes: f64) -> String {
    format!("{:.2} MB", bytes / 1e6)
}

fn ms(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy store");
    }
}

/// A loopback node.
async fn open(dir: &Path) -> Node {
    let config = NodeConfig {
        // A join of 100k changes waits longer than 10 s for its first frame on 2 cores.
        connect_timeout: Duration::from_secs(120),
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

/// Wait until `node`'s heads are `target`.
async fn wait_heads(node: &Node, network: NetworkId, target: &[ChangeHash], what: &str) {
    let mut rx = node.subscribe(network).expect("subscribe");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if sorted_heads(node.heads(network).expect("heads")) == target {
            return;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("timed out waiting for {what}"),
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("node closed waiting for {what}"),
        }
    }
}

/// Wait until `node` knows that `peer` has `target` (its session heard the peer's heads).
async fn wait_peer_heads(node: &Node, network: NetworkId, peer: DeviceId, target: &[ChangeHash]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let known = node
            .peers(network)
            .expect("peers")
            .into_iter()
            .find(|p| p.device == peer)
            .and_then(|p| p.their_heads)
            .map(sorted_heads);
        if known.as_deref() == Some(target) {
            return;
        }
        assert!(Instant::now() < deadline, "the peer's heads never arrived");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Building histories directly into stores

/// Build in `dir`: `m1`..`m<members>` (stores with device keys), and `a`, the admin's store,
/// holding a network with the workload's objects, those devices as members, and `events`
/// events (one change each if `batch` is 1, else `batch` per change). If `prefix`, the last
/// member's store holds a replica of the network's first changes (up to the members).
fn build(dir: &Path, events: usize, batch: usize, members: usize, prefix: bool) -> Value {
    let started = Instant::now();
    let mut keys = Vec::new();
    for i in 1..=members {
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
    let genesis = Workload::genesis();
    let (_, more) = replica
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
        .expect("objects");
    signed.extend(more);
    for k in &keys {
        let more = replica
            .add_member(k.id(), Role::Member, Id::from("ben"))
            .expect("add member");
        signed.extend(more);
    }
    let first = signed.clone();
    let mut w = Workload::new(SEED);
    let mut left = events;
    while left > 0 {
        let more = if batch <= 1 {
            let e = w.next();
            left -= 1;
            replica.write(|l| l.record_event(e)).expect("event").1
        } else {
            let k = left.min(batch);
            left -= k;
            let batch = w.take(k);
            replica.write(|l| l.record_events(batch)).expect("batch").1
        };
        signed.extend(more);
    }
    let changes = signed.len();
    let change_bytes: usize = signed.iter().map(|c| c.change.raw_bytes().len()).sum();
    let network = replica.network();
    let doc_bytes = replica.ledger().save().len();
    store
        .create_replica(replica, &signed)
        .expect("store the history");
    drop(store);
    if prefix {
        let key = keys.last().expect("a member").clone();
        let d = dir.join(format!("m{members}"));
        let store = Store::open(d.join(STORE_FILE)).expect("member store");
        let (replica, receipt) = Replica::join(network, key, first).expect("prefix replica");
        store
            .create_replica(replica, &receipt.applied)
            .expect("store the prefix");
    }
    json!({
        "network": network.to_string(),
        "changes": changes,
        "change_bytes": change_bytes,
        "signed_bytes": change_bytes + 64 * changes,
        "doc_bytes": doc_bytes,
        "build_s": started.elapsed().as_secs_f64(),
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Initial sync

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SyncPath {
    Join,
    Catchup,
}

/// One sync between copies of the built stores: the admin (`a`) and `b` (`m1` to join, `m2`
/// to catch up).
async fn sync_once(dir: &Path, path: SyncPath, overhead: u64, memory: bool) -> Value {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    copy_dir(&dir.join("a"), &da);
    copy_dir(
        &dir.join(if path == SyncPath::Join { "m1" } else { "m2" }),
        &db,
    );
    let a = open(&da).await;
    let b = open(&db).await;
    let network = a.networks()[0];
    let target = sorted_heads(a.heads(network).expect("heads"));
    let wire = Wire::start(overhead);
    let t0 = Instant::now();
    match path {
        SyncPath::Join => b.join(network, &a.addr()).await.expect("join"),
        SyncPath::Catchup => b.connect(network, &a.addr()).await.expect("connect"),
    }
    let call_s = t0.elapsed().as_secs_f64();
    wait_heads(&b, network, &target, "the new node's heads").await;
    let heads_s = t0.elapsed().as_secs_f64();
    let at_heads = wire.read();
    let (rss, hwm) = (proc_status("VmRSS"), proc_status("VmHWM"));
    // The first round ends when each side has heard the other's heads.
    wait_peer_heads(&b, network, a.device(), &target).await;
    wait_peer_heads(&a, network, b.device(), &target).await;
    let round_s = t0.elapsed().as_secs_f64();
    let (bytes, packets) = wire.quiet().await;
    let mut out = json!({
        "call_s": call_s, "heads_s": heads_s, "round_s": round_s,
        "bytes": bytes, "packets": packets, "bytes_at_heads": at_heads.0,
    });
    if memory {
        out["rss"] = json!(rss);
        out["hwm"] = json!(hwm);
    }
    a.close().await.expect("close");
    b.close().await.expect("close");
    out
}

/// A raw in-memory Automerge sync of `saved` to an empty document: (seconds, bytes, messages).
fn raw_sync(saved: &[u8], v1: bool) -> (f64, usize, usize) {
    let mut a = Automerge::load(saved).expect("load");
    let mut b = Automerge::new();
    let (mut sa, mut sb) = (State::new(), State::new());
    let (mut bytes, mut messages) = (0, 0);
    let t0 = Instant::now();
    loop {
        let mut moved = false;
        if v1 {
            sa.their_capabilities = None;
            sb.their_capabilities = None;
        }
        if let Some(m) = a.generate_sync_message(&mut sa) {
            let wire = m.encode();
            bytes += wire.len();
            messages += 1;
            let m = Message::decode(&wire).expect("decode");
            b.receive_sync_message(&mut sb, m).expect("receive");
            moved = true;
        }
        if let Some(m) = b.generate_sync_message(&mut sb) {
            let wire = m.encode();
            bytes += wire.len();
            messages += 1;
            let m = Message::decode(&wire).expect("decode");
            a.receive_sync_message(&mut sa, m).expect("receive");
            moved = true;
        }
        if !moved {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(a.get_heads(), b.get_heads(), "the raw sync converged");
    (secs, bytes, messages)
}

async fn sync_phase(dir: &Path, repeats: usize) -> Value {
    let overhead = lo_overhead();
    let mut out = json!({ "lo_overhead": overhead });
    for (path, name) in [(SyncPath::Join, "join"), (SyncPath::Catchup, "catchup")] {
        let mut runs = Vec::new();
        for i in 0..repeats {
            let r = sync_once(dir, path, overhead, i == 0).await;
            eprintln!("  {name} run {i}: {r}");
            if i == 0 {
                for k in ["rss", "hwm"] {
                    out[format!("{name}_{k}")] = r[k].clone();
                }
            }
            runs.push(r);
        }
        let med = |k: &str| {
            median(
                &runs
                    .iter()
                    .map(|r| r[k].as_f64().unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
            )
        };
        out[name] = json!({
            "heads_s": med("heads_s"), "call_s": med("call_s"), "round_s": med("round_s"),
            "bytes": med("bytes"), "bytes_at_heads": med("bytes_at_heads"),
            "packets": med("packets"), "runs": runs.len(),
        });
    }
    // The raw Automerge baseline on the admin's document.
    let tmp = tempfile::tempdir().expect("temporary directory");
    copy_dir(&dir.join("a"), tmp.path());
    let saved = {
        let store = Store::open(tmp.path().join(STORE_FILE)).expect("store");
        let key = store.device_key().expect("key");
        let name = store.networks().expect("networks")[0].clone();
        let network: NetworkId = name.parse().expect("network id");
        let r = store.open_replica(&network, key).expect("replica");
        r.ledger().save()
    };
    for (v1, name) in [(false, "raw_v2"), (true, "raw_v1")] {
        let runs: Vec<(f64, usize, usize)> = (0..repeats).map(|_| raw_sync(&saved, v1)).collect();
        let secs: Vec<f64> = runs.iter().map(|r| r.0).collect();
        out[name] = json!({"s": median(&secs), "bytes": runs[0].1, "messages": runs[0].2});
        eprintln!("  {name}: {}", out[name]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. Live propagation, memory

async fn live_phase(
    dir: &Path,
    nodes: usize,
    mesh: bool,
    ledger_events: usize,
    events: usize,
) -> Value {
    let rss0 = proc_status("VmRSS");
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
        all.push(open(&d).await);
    }
    let network = all[0].networks()[0];
    let setup = Instant::now();
    for i in 1..nodes {
        all[i]
            .join(network, &all[i - 1].addr())
            .await
            .expect("join through the previous node");
    }
    if mesh {
        for j in 2..nodes {
            for i in 0..j - 1 {
                all[j]
                    .connect(network, &all[i].addr())
                    .await
                    .expect("connect");
            }
        }
    }
    let target = sorted_heads(all[0].heads(network).expect("heads"));
    for n in &all[1..] {
        wait_heads(n, network, &target, "convergence").await;
    }
    let setup_s = setup.elapsed().as_secs_f64();
    let links: usize = all
        .iter()
        .map(|n| {
            n.peers(network)
                .expect("peers")
                .iter()
                .filter(|p| p.connected)
                .count()
        })
        .sum::<usize>()
        / 2;
    let rss_setup = proc_status("VmRSS");

    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Instant, Vec<ChangeHash>)>();
    let mut tasks = Vec::new();
    for (i, n) in all.iter().enumerate().skip(1) {
        let mut sub = n.subscribe(network).expect("subscribe");
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(u) => {
                        if tx.send((i, Instant::now(), sorted_heads(u.heads))).is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        }));
    }
    let mut w = Workload::new(SEED);
    for _ in 0..ledger_events {
        w.next();
    }
    let overhead = lo_overhead();
    let mut wire = Wire::start(overhead);
    let mut last = Vec::new();
    let mut first = Vec::new();
    for k in 0..WARMUP + events {
        if k == WARMUP {
            wire = Wire::start(overhead);
        }
        let event = w.next();
        all[0].record_event(network, event).expect("write");
        let t = Instant::now();
        let target = sorted_heads(all[0].heads(network).expect("heads"));
        let mut got: Vec<Option<f64>> = vec![None; nodes];
        got[0] = Some(0.0);
        while got.iter().any(Option::is_none) {
            let (i, at, heads) = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("a live event propagates")
                .expect("subscribers alive");
            if heads == target && got[i].is_none() {
                got[i] = Some(at.saturating_duration_since(t).as_secs_f64());
            }
        }
        if k >= WARMUP {
            let times: Vec<f64> = got[1..].iter().map(|g| g.unwrap_or(f64::NAN)).collect();
            // The farthest node: the end of the line; in a mesh, the last one notified.
            last.push(if mesh {
                times.iter().copied().fold(0.0, f64::max)
            } else {
                times[nodes - 2]
            });
            first.push(times.iter().copied().fold(f64::INFINITY, f64::min));
        }
    }
    let (bytes, packets) = wire.quiet().await;
    let rss_after = proc_status("VmRSS");
    for t in tasks {
        t.abort();
    }
    for n in all {
        n.close().await.expect("close");
    }
    last.sort_by(f64::total_cmp);
    first.sort_by(f64::total_cmp);
    json!({
        "nodes": nodes, "mesh": mesh, "links": links, "ledger_events": ledger_events,
        "events": events, "setup_s": setup_s,
        "p50": percentile(&last, 50.0), "p99": percentile(&last, 99.0),
        "max": last.last().copied().unwrap_or(f64::NAN),
        "nearest_p50": percentile(&first, 50.0),
        "bytes_per_event": bytes as f64 / events as f64,
        "packets_per_event": packets as f64 / events as f64,
        "rss0": rss0, "rss_setup": rss_setup, "rss_after": rss_after, "hwm": proc_status("VmHWM"),
    })
}

// ---------------------------------------------------------------------------------------------
// 4. Where a live change's time goes: taking one change from a peer, by ledger size

/// A replica with the workload's objects and `n` events (one change each), in memory.
fn replica_with(n: usize, w: &mut Workload) -> Replica {
    let key = DeviceKey::generate().expect("key");
    let (mut r, _) =
        Replica::create_network(common::NETWORK, key, Agent::person("ana", "ana")).expect("net");
    let genesis = Workload::genesis();
    r.write(|l| {
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
    .expect("objects");
    for _ in 0..n {
        let e = w.next();
        r.write(|l| l.record_event(e)).expect("event");
    }
    r
}

/// With `n` events in the ledger, the median time of: one local write (`Replica::write`),
/// taking one change from a peer (`Replica::receive`: signature, membership, Automerge, views),
/// `Ledger::apply_changes` alone, and inside it Automerge's `apply_changes` and `diff` (the
/// view update's input), and `apply_changes_log_patches` + `make_patches` (the same patches
/// logged while applying).
fn receive_cost(n: usize) -> Value {
    let mut w = Workload::new(SEED);
    let mut a = replica_with(n, &mut w);
    let history = a.signed_changes_since(&[]);
    let mut b = Replica::join(a.network(), DeviceKey::generate().expect("key"), history)
        .expect("join")
        .0;
    let mut ledger = b.ledger().fork(common::actor(9));
    let mut doc = Automerge::load(&ledger.save()).expect("load");
    let events = match automerge::ReadDoc::get(&doc, automerge::ROOT, "events").expect("get") {
        Some((_, id)) => id,
        None => panic!("no events list"),
    };
    let mut t: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut time = |name: &'static str, since: Instant| {
        t.entry(name)
            .or_default()
            .push(since.elapsed().as_secs_f64());
    };
    for i in 0..40 {
        let e = w.next();
        let start = Instant::now();
        let (_, signed) = a.write(|l| l.record_event(e)).expect("write");
        time("write", start);
        let raw: Vec<Change> = signed.iter().map(|c| c.change.clone()).collect();
        let start = Instant::now();
        b.receive(signed).expect("receive");
        time("receive", start);
        let start = Instant::now();
        ledger.apply_changes(raw.clone()).expect("apply");
        time("ledger_apply", start);
        let before = doc.get_heads();
        let start = Instant::now();
        if i % 2 == 0 {
            doc.apply_changes(raw).expect("apply");
            time("am_apply", start);
            let after = doc.get_heads();
            let start = Instant::now();
            let patches = doc.diff(&before, &after);
            time("am_diff", start);
            assert!(patches.iter().any(|p| p.obj == events));
        } else {
            let mut log = automerge::PatchLog::active();
            doc.apply_changes_log_patches(raw, &mut log).expect("apply");
            let patches = doc.make_patches(&mut log);
            time("am_apply_logged", start);
            assert!(patches.iter().any(|p| p.obj == events));
        }
    }
    let mut out = json!({ "n": n });
    for (k, v) in &t {
        out[format!("{k}_ms")] = json!(median(v) * 1e3);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Driver

/// Whether children can run in a private network namespace (`unshare -rn`, then `ip link set
/// lo up`), where the loopback counters are theirs alone.
fn netns_available() -> bool {
    if std::env::var("REFLOW_SYNC_NETNS").is_ok_and(|v| v == "0") {
        return false;
    }
    Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run a phase in a child process (in a private network namespace if `netns`); its result is
/// the last `RESULT ` line of its stdout.
fn child(netns: bool, args: &[String]) -> Value {
    let exe = std::env::current_exe().expect("current exe");
    let mut command = if netns {
        let mut c = Command::new("unshare");
        c.args(["-rn", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let output = command
        .arg("--phase")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .expect("run a phase");
    assert!(output.status.success(), "phase {args:?} failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("phase {args:?} printed no result"));
    serde_json::from_str(line).expect("result JSON")
}

fn run_phase(args: &[String]) {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let num = |i: usize| arg(i).parse::<usize>().expect("a number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = match arg(0) {
        "build" => build(
            Path::new(arg(1)),
            num(2),
            num(3),
            num(4),
            arg(5) == "prefix",
        ),
        "sync" => runtime.block_on(sync_phase(Path::new(arg(1)), num(2))),
        "live" => runtime.block_on(live_phase(
            Path::new(arg(1)),
            num(2),
            arg(3) == "mesh",
            num(4),
            num(5),
        )),
        "receive" => receive_cost(num(1)),
        other => panic!("unknown phase {other}"),
    };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "RESULT {result}").expect("stdout");
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {rustc}, Linux, release build")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--phase") {
        run_phase(&args[pos + 1..]);
        return;
    }
    let tiny = test_mode();
    let cap = env_usize("REFLOW_SYNC_MAX_EVENTS").unwrap_or(usize::MAX);
    let live_events = if tiny {
        5
    } else {
        env_usize("REFLOW_SYNC_LIVE_EVENTS").unwrap_or(200)
    };
    // (events, events per change)
    let mut cases: Vec<(usize, usize)> = if tiny {
        vec![(60, 1), (60, 20)]
    } else {
        vec![
            (1_000, 1),
            (10_000, 1),
            (10_000, 1_000),
            (100_000, 1_000),
            (100_000, 1),
        ]
    };
    cases.retain(|(n, _)| *n <= cap);
    if cases.is_empty() {
        cases.push((cap, 1));
    }
    let live_ledger = if tiny { 60 } else { 10_000.min(cap) };
    let live_cases: Vec<(usize, bool)> = if tiny {
        vec![(2, false), (3, true)]
    } else {
        vec![(2, false), (4, false), (8, false), (4, true), (8, true)]
    };
    let receive_sizes: Vec<usize> = if tiny {
        vec![60]
    } else {
        [1_000, 10_000, 100_000]
            .into_iter()
            .filter(|n| *n <= cap)
            .collect()
    };
    let machine = machine();
    let netns = netns_available();
    eprintln!("sync benchmarks on {machine}");
    let counters = if netns {
        "loopback counters of a private network namespace per case (only the nodes' traffic)"
    } else {
        "loopback counters of the shared network namespace (unshare unavailable: may include other traffic)"
    };
    eprintln!("bytes on the wire: {counters}");
    let s = |v: &dyn std::fmt::Display| v.to_string();

    let mut sync_rows = BTreeMap::new();
    for &(n, batch) in &cases {
        let dir = tempfile::tempdir().expect("temporary directory");
        let d = dir.path().display().to_string();
        eprintln!("building {n} events, {batch} per change");
        let built = child(
            false,
            &[
                s(&"build"),
                d.clone(),
                s(&n),
                s(&batch),
                s(&2),
                s(&"prefix"),
            ],
        );
        eprintln!("  built: {built}");
        let repeats = env_usize("REFLOW_SYNC_REPEATS").unwrap_or(if n <= 10_000 { 3 } else { 1 });
        eprintln!("initial sync of {n} events, {batch} per change");
        let r = child(netns, &[s(&"sync"), d, s(&repeats.max(1))]);
        sync_rows.insert((n, batch), (built, r));
    }
    let live_dir = tempfile::tempdir().expect("temporary directory");
    let d = live_dir.path().display().to_string();
    let most = live_cases.iter().map(|c| c.0).max().unwrap_or(2);
    eprintln!("building the live ledger: {live_ledger} events, one per change");
    let built = child(
        false,
        &[
            s(&"build"),
            d.clone(),
            s(&live_ledger),
            s(&1),
            s(&(most - 1)),
            s(&"none"),
        ],
    );
    eprintln!("  built: {built}");
    let mut live_rows = Vec::new();
    for &(nodes, mesh) in &live_cases {
        eprintln!(
            "live events across {nodes} nodes ({})",
            if mesh { "full mesh" } else { "line" }
        );
        let r = child(
            netns,
            &[
                s(&"live"),
                d.clone(),
                s(&nodes),
                s(&if mesh { "mesh" } else { "line" }),
                s(&live_ledger),
                s(&live_events),
            ],
        );
        eprintln!("  {r}");
        live_rows.push(r);
    }
    let mut receive_rows = Vec::new();
    for &n in &receive_sizes {
        eprintln!("receiving one change, {n}-event ledger");
        let r = child(false, &[s(&"receive"), s(&n)]);
        eprintln!("  {r}");
        receive_rows.push(r);
    }

    // The summary.
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut lines: Vec<String> = Vec::new();
    lines.push(format!("Machine: {machine}."));
    lines.push(format!("Bytes on the wire: UDP payload (QUIC packets, both directions) from the {counters}, until the traffic has been quiet for {} ms after the first round.", QUIET.as_millis()));
    lines.push(String::new());
    lines.push("Initial sync between two nodes (time: from the call until the new node's heads equal the admin's, median of the runs; the first round ends when each side has heard the other's heads):".into());
    lines.push("| events | per change | path | changes | runs | time | call returned | first round done | wire bytes | wire bytes at equal heads | packets | signed changes (bytes) | doc saved (bytes) |".into());
    lines.push("|---|---|---|---|---|---|---|---|---|---|---|---|---|".into());
    let per = |batch: usize| {
        if batch == 1 {
            "1 event".to_string()
        } else {
            format!("{batch} events")
        }
    };
    for ((n, batch), (built, r)) in &sync_rows {
        for path in ["join", "catchup"] {
            let p = &r[path];
            lines.push(format!(
                "| {n} | {} | {path} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                per(*batch),
                built["changes"],
                p["runs"],
                ms(f(&p["heads_s"])),
                ms(f(&p["call_s"])),
                ms(f(&p["round_s"])),
                mb(f(&p["bytes"])),
                mb(f(&p["bytes_at_heads"])),
                f(&p["packets"]),
                mb(f(&built["signed_bytes"])),
                mb(f(&built["doc_bytes"])),
            ));
        }
    }
    lines.push(String::new());
    lines.push("Ratios to a raw in-memory Automerge sync of the same document to an empty one (same run; v2 = Automerge's default, the whole compressed document in one message; v1 = one change per chunk, as Reflow sends); memory = VmRSS of the process at equal heads / 2 nodes, and the process's peak (VmHWM):".into());
    lines.push("| events | per change | path | raw v2 time / bytes | raw v1 time / bytes | time ratio v2 / v1 | bytes ratio v2 / v1 | RSS / node | peak RSS (2 nodes) |".into());
    lines.push("|---|---|---|---|---|---|---|---|---|".into());
    for ((n, batch), (_, r)) in &sync_rows {
        let (v2, v1) = (&r["raw_v2"], &r["raw_v1"]);
        for path in ["join", "catchup"] {
            let p = &r[path];
            let (t, b) = (f(&p["heads_s"]), f(&p["bytes"]));
            lines.push(format!(
                "| {n} | {} | {path} | {} / {} | {} / {} | {:.1}x / {:.1}x | {:.1}x / {:.2}x | {} | {} |",
                per(*batch),
                ms(f(&v2["s"])),
                mb(f(&v2["bytes"])),
                ms(f(&v1["s"])),
                mb(f(&v1["bytes"])),
                t / f(&v2["s"]),
                t / f(&v1["s"]),
                b / f(&v2["bytes"]),
                b / f(&v1["bytes"]),
                mb(f(&r[format!("{path}_rss")]) / 2.0),
                mb(f(&r[format!("{path}_hwm")])),
            ));
        }
    }
    lines.push(String::new());
    lines.push(format!("Live propagation of one event written on node 1 ({live_events} events after {WARMUP} warm-up, one after the other, on a {live_ledger}-event ledger), from write() returning to the subscribe() notification of the farthest node (line: nodes joined one through the other) / of the last node notified (full mesh); memory after the nodes converged:"));
    lines.push("| nodes | topology | links | p50 | p99 | max | first node notified, p50 | wire bytes / event | RSS / node | (RSS - RSS before the nodes) / node | peak RSS |".into());
    lines.push("|---|---|---|---|---|---|---|---|---|---|---|".into());
    for r in &live_rows {
        let nodes = f(&r["nodes"]);
        let mesh = r["mesh"].as_bool().unwrap_or(false);
        lines.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
            r["nodes"],
            if mesh {
                "full mesh".to_string()
            } else {
                format!("line, {} hops", nodes - 1.0)
            },
            r["links"],
            ms(f(&r["p50"])),
            ms(f(&r["p99"])),
            ms(f(&r["max"])),
            ms(f(&r["nearest_p50"])),
            f(&r["bytes_per_event"]),
            mb(f(&r["rss_setup"]) / nodes),
            mb((f(&r["rss_setup"]) - f(&r["rss0"])) / nodes),
            mb(f(&r["hwm"])),
        ));
    }
    lines.push(String::new());
    lines.push("One change from a peer, by ledger size (in memory, no store; medians of 20-40): a local write, Replica::receive, Ledger::apply_changes, and inside it Automerge's apply_changes and diff(before, after), next to apply_changes_log_patches + make_patches:".into());
    lines.push("| events | local write | Replica::receive | Ledger::apply_changes | Automerge apply_changes | Automerge diff | apply_changes_log_patches + make_patches |".into());
    lines.push("|---|---|---|---|---|---|---|".into());
    for r in &receive_rows {
        let m = |k: &str| ms(f(&r[k]) / 1e3);
        lines.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r["n"],
            m("write_ms"),
            m("receive_ms"),
            m("ledger_apply_ms"),
            m("am_apply_ms"),
            m("am_diff_ms"),
            m("am_apply_logged_ms"),
        ));
    }
    if let Some(((n, _), (_, r))) = sync_rows.iter().rev().find(|((_, b), _)| *b == 1) {
        let t = f(&r["join"]["heads_s"]);
        let bytes = f(&r["join"]["bytes"]);
        let hwm = f(&r["join_hwm"]);
        let live = live_rows.iter().find(|r| f(&r["nodes"]) == 2.0);
        lines.push(String::new());
        lines.push(format!(
            "Against the automerge-repo figures of the guide (100k initial sync 12.7 s and 2.35 MB, one live event p50 300 ms / p99 2.1 s, 1.9 GB RSS): Reflow, join of {n} events one per change: {} ({:.2}x), {} ({:.2}x), peak RSS of both nodes {} ({:.3}x); one live event between 2 nodes: p50 {} ({:.3}x), p99 {} ({:.3}x).",
            ms(t),
            t / 12.7,
            mb(bytes),
            bytes / 2.35e6,
            mb(hwm),
            hwm / 1.9e9,
            live.map_or("-".into(), |r| ms(f(&r["p50"]))),
            live.map_or(f64::NAN, |r| f(&r["p50"]) / 0.3),
            live.map_or("-".into(), |r| ms(f(&r["p99"]))),
            live.map_or(f64::NAN, |r| f(&r["p99"]) / 2.1),
        ));
    }
    eprintln!();
    eprintln!("==== summary ====");
    for l in &lines {
        eprintln!("{l}");
    }
}
