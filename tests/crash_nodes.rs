//! Crashes of real node processes (issue 13, item 5): a child process runs a real [`Node`]
//! (its redb store, its iroh endpoint on 127.0.0.1, no relays, no address lookup) that syncs
//! with a peer node running in this (parent) process; the parent SIGKILLs the child at seeded
//! moments, at least 20 times in each of four phases:
//!
//! - `sigkill_mid_write`: the child records events in a loop, printing `ACK <id>` once each
//!   `record_event` has returned (acknowledged: durable); killed after a seeded number of
//!   acknowledgements, i.e. inside the next write. The peer writes a burst meanwhile.
//! - `sigkill_mid_receive`: the peer records events as fast as it can, each pushed to the
//!   child, which prints `GOT <hash>` once a received change is stored (its ledger update);
//!   killed after a seeded number of them while more are in flight.
//! - `sigkill_mid_compaction`: the child records with a small compaction policy, so that it
//!   compacts every few writes by itself; its tracing layer prints `COMPACTING` when the
//!   store's compaction starts and `COMPACTED` when it ends; killed on a `COMPACTING`. Only
//!   kills with no `COMPACTED` after them count.
//! - `sigkill_mid_open_repair`: a child recording is killed, then a second child reopens the
//!   store (redb repairs the file: `REPAIRING`; the replica loads: `LOADING`) and is killed
//!   on one of those signals. Only kills before the second child printed `OPENED` count.
//!
//! - `sigkill_mid_join`: a fresh device, admitted by the peer, joins through it (by the
//!   peer's document, a history of a few thousand events); its tracing layer prints
//!   `STORING` when the joined replica's store starts and `STORED` when it ends; killed on
//!   `STORING`. Only kills before `STORED` count. The reopened store holds the network whole
//!   or not at all; if not, the device joins again, which nothing left behind may stop.
//!
//! After each kill the parent reopens the child's data directory as a node (a real reopen,
//! repairing the file) and checks: every acknowledged event and every change the child said
//! it stored is there; the views equal a fresh fold of the ledger; the node reconnects to the
//! peer, neither side refuses the other or cuts it off, no change is refused, and both end with
//! identical heads, views, events and members (the peer never crashed: a fresh replica).
//!
//! Seeded: `REFLOW_CRASH_NODES_SEED` replays a run (the seed is printed, and named in every
//! failure); `REFLOW_CRASH_NODES_KILLS` sets the kills per phase (default 20). No sleeps:
//! the parent waits on the child's output lines and on node events, with timeouts.
//!
//! The child is this test binary, re-run with `--exact crash_node_child --ignored`.
#![allow(clippy::print_stdout)] // the child process reports to the parent on stdout

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reflow::node::NodeEvent;
use reflow::*;
use support::*;
use tokio::sync::{broadcast, mpsc};

const ENV_DIR: &str = "REFLOW_CRASH_NODES_DIR";
const ENV_MODE: &str = "REFLOW_CRASH_NODES_MODE";
const ENV_PEER: &str = "REFLOW_CRASH_NODES_PEER";
const ENV_NETWORK: &str = "REFLOW_CRASH_NODES_NETWORK";

/// Prefix of every line the child reports (the test harness prints its own lines too).
const SIGNAL: &str = "@@ ";

/// Longest wait for a line of the child (a debug build on a busy 2-core machine).
const CHILD_WAIT: Duration = Duration::from_secs(60);

/// The compaction policy of the child's node in each mode: small in the compaction and
/// open phases (a compaction every few writes), moderate elsewhere (compactions happen, but
/// most kills land in plain writes and receives).
fn policy(mode: &str) -> CompactionPolicy {
    let max_tail_changes = match mode {
        "compact" | "open" => 6,
        _ => 64,
    };
    CompactionPolicy {
        min_tail_bytes: 0,
        factor: 4,
        max_tail_changes,
        enabled: true,
    }
}

fn child_config(dir: &Path, mode: &str) -> NodeConfig {
    NodeConfig {
        compaction: policy(mode),
        ..NodeConfig::loopback(dir)
    }
}

/// The event the child records: 1 kg more of bob's stock.
fn child_event() -> EconomicEvent {
    EconomicEvent::new(Action::Raise, "bob", "bob")
        .resource("bob-stock")
        .quantity(1, "kg")
}

/// The event the peer records: 1 kg more of ana's compost.
fn peer_event() -> EconomicEvent {
    EconomicEvent::new(Action::Raise, "ana", "ana")
        .resource("compost")
        .quantity(1, "kg")
}

/// The child's tracing layer: prints the store's compactions, repairs and replica loads as
/// they start (and compactions as they end), for the parent to kill on.
struct Signals;

fn watched(m: &tracing::Metadata<'_>) -> bool {
    (m.is_span()
        && matches!(
            m.name(),
            "store_compact"
                | "store_open_replica"
                | "store_create_replica"
                | "store_create_replica_from_document"
        ))
        || (m.is_event() && *m.level() == tracing::Level::WARN && m.target().starts_with("reflow"))
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for Signals
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn register_callsite(
        &self,
        m: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if watched(m) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(
        &self,
        m: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        watched(m)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        match attrs.metadata().name() {
            "store_compact" => println!("{SIGNAL}COMPACTING"),
            "store_open_replica" => println!("{SIGNAL}LOADING"),
            "store_create_replica" | "store_create_replica_from_document" => {
                println!("{SIGNAL}STORING");
            }
            _ => {}
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        match ctx.span(&id).map(|s| s.name()) {
            Some("store_compact") => println!("{SIGNAL}COMPACTED"),
            Some("store_create_replica" | "store_create_replica_from_document") => {
                println!("{SIGNAL}STORED");
            }
            _ => {}
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.contains("not closed cleanly") {
            println!("{SIGNAL}REPAIRING");
        }
    }
}

/// The child: open the node, connect to the peer, report every change received from it
/// once stored, and (except in the receive mode) record events forever, reporting each once
/// acknowledged. Ignored unless run by the parent.
#[test]
#[ignore = "run as a child process by the sigkill_* tests"]
fn crash_node_child() {
    use tracing_subscriber::layer::SubscriberExt;
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let mode = std::env::var(ENV_MODE).expect("mode");
    let peer: PeerAddr =
        serde_json::from_str(&std::env::var(ENV_PEER).expect("peer")).expect("peer address");
    let network: NetworkId = std::env::var(ENV_NETWORK)
        .expect("network")
        .parse()
        .expect("network id");
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Signals))
        .expect("tracing layer");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Timers and the writes below run on this thread, inside the runtime's context.
    let _runtime = rt.enter();
    println!("{SIGNAL}OPENING");
    let node = rt
        .block_on(Node::open(child_config(Path::new(&dir), &mode)))
        .expect("the child opens its node");
    println!("{SIGNAL}OPENED");
    if mode == "join" {
        println!("{SIGNAL}JOINING");
        let joined = rt.block_on(tokio::time::timeout(CHILD_WAIT, node.join(network, &peer)));
        report_or_exit("JOINED", "JOIN_FAILED", joined);
        rt.block_on(std::future::pending::<()>());
    }
    let mut updates = node.subscribe(network).expect("subscribe");
    rt.spawn(async move {
        loop {
            match updates.recv().await {
                Ok(update) if update.from.is_some() => {
                    for hash in update.changes {
                        println!("{SIGNAL}GOT {hash}");
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let connected = rt.block_on(tokio::time::timeout(
        CHILD_WAIT,
        node.connect(network, &peer),
    ));
    report_or_exit("CONNECTED", "CONNECT_FAILED", connected);
    if mode == "receive" {
        rt.block_on(std::future::pending::<()>());
    }
    loop {
        let id = node
            .record_event(network, child_event())
            .expect("the child records");
        println!("{SIGNAL}ACK {id}");
    }
}

/// The child reports `done`, or `failed` with why and exits with status 3.
fn report_or_exit(
    done: &str,
    failed: &str,
    outcome: Result<Result<(), NetError>, tokio::time::error::Elapsed>,
) {
    match outcome {
        Ok(Ok(())) => println!("{SIGNAL}{done}"),
        Ok(Err(e)) => {
            println!("{SIGNAL}{failed} {e}");
            std::process::exit(3);
        }
        Err(_) => {
            println!("{SIGNAL}{failed} timed out");
            std::process::exit(3);
        }
    }
}

/// A running child process and its reported lines.
struct Child {
    process: std::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Child {
    /// The next signal line, `None` once the child's output has ended.
    async fn next(&mut self, what: &str) -> Option<String> {
        match tokio::time::timeout(CHILD_WAIT, self.lines.recv()).await {
            Ok(line) => line,
            Err(_) => panic!("the child printed nothing for {CHILD_WAIT:?} waiting for {what}"),
        }
    }

    /// SIGKILL, reap, and return every line it printed that was not read yet.
    async fn kill(mut self) -> Vec<String> {
        self.process.kill().expect("SIGKILL the child");
        let status = self.process.wait().expect("reap the child");
        assert!(!status.success(), "the child was killed: {status:?}");
        let mut rest = Vec::new();
        while let Some(line) = self.next("the end of the killed child's output").await {
            rest.push(line);
        }
        rest
    }
}

/// The peer recording on a thread of its own while a child runs.
struct PeerWriter {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<()>,
}

impl PeerWriter {
    /// How many events the peer has recorded so far.
    fn written(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Stop the peer's writes; how many it recorded.
    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("the peer's writer");
        self.count.load(Ordering::Relaxed)
    }
}

/// One phase: the peer (in this process), the child's data directory, and what the child
/// acknowledged.
struct Phase {
    name: &'static str,
    seed: u64,
    rng: Rng,
    peer: Arc<Node>,
    network: NetworkId,
    child_device: DeviceId,
    child_dir: tempfile::TempDir,
    _peer_dir: tempfile::TempDir,
    /// Events the child acknowledged.
    acked: Vec<Id>,
    /// Changes the child said it stored (received from the peer).
    got: Vec<ChangeHash>,
    /// Events the peer recorded.
    peer_events: usize,
    started: Instant,
}

impl Phase {
    async fn new(name: &'static str, salt: u64) -> Phase {
        let base = env_u64("REFLOW_CRASH_NODES_SEED").unwrap_or(0x5EED_C4A5_2026);
        let seed = base ^ salt;
        eprintln!("crash_nodes {name}: seed {base:#x} (phase seed {seed:#x}; set REFLOW_CRASH_NODES_SEED to replay)");
        let peer_dir = tempdir();
        let child_dir = tempdir();
        let peer = open(peer_dir.path()).await;
        let network = create_network(&peer);
        peer.record_event(network, produce("ana", "compost", 1))
            .expect("compost");
        // The child's node is created, admitted and joined here, then closed.
        let child = Node::open(child_config(child_dir.path(), "write"))
            .await
            .expect("the child's node");
        let child_device = child.device();
        admit(&peer, network, child_device, "bob");
        within("the child joins", child.join(network, &peer.addr()))
            .await
            .expect("the child joins");
        child
            .record_event(network, produce("bob", "bob-stock", 1))
            .expect("bob's stock");
        converge(&[&peer, &child], network).await;
        child.close().await.expect("close the child's node");
        Phase {
            name,
            seed,
            rng: Rng(seed),
            peer: Arc::new(peer),
            network,
            child_device,
            child_dir,
            _peer_dir: peer_dir,
            acked: Vec::new(),
            got: Vec::new(),
            peer_events: 0,
            started: Instant::now(),
        }
    }

    fn spawn(&self, mode: &str) -> Child {
        let mut process = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "crash_node_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_DIR, self.child_dir.path())
            .env(ENV_MODE, mode)
            .env(
                ENV_PEER,
                serde_json::to_string(&self.peer.addr()).expect("address JSON"),
            )
            .env(ENV_NETWORK, self.network.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let stdout = process.stdout.take().expect("the child's stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(at) = line.find(SIGNAL) {
                    if tx.send(line[at + SIGNAL.len()..].to_string()).is_err() {
                        return;
                    }
                }
            }
        });
        Child { process, lines }
    }

    /// Take in an acknowledgement line (`ACK`, `GOT`); other lines are left to the caller.
    fn note(&mut self, line: &str) {
        if let Some(id) = line.strip_prefix("ACK ") {
            self.acked.push(Id::from(id.trim()));
        } else if let Some(hash) = line.strip_prefix("GOT ") {
            let hash: ChangeHash = hash.trim().parse().expect("a change hash");
            self.got.push(hash);
        } else if let Some(e) = line.strip_prefix("JOIN_FAILED") {
            panic!(
                "seed {:#x} {}: the child could not join through the peer:{e}",
                self.seed, self.name
            );
        } else if let Some(e) = line.strip_prefix("CONNECT_FAILED") {
            panic!(
                "seed {:#x} {}: the restarted child could not connect to the peer:{e}",
                self.seed, self.name
            );
        }
    }

    /// Wait until the child has connected to the peer.
    async fn connected(&mut self, child: &mut Child) {
        loop {
            let line = self.line(child, "the child to connect").await;
            if line == "CONNECTED" {
                return;
            }
        }
    }

    /// The peer records `n` events (or until stopped) on a thread of its own, counting them.
    fn peer_writes(&self, n: Option<usize>) -> PeerWriter {
        let (peer, network) = (self.peer.clone(), self.network);
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let handle = {
            let (stop, count) = (stop.clone(), count.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed)
                    && n.is_none_or(|n| count.load(Ordering::Relaxed) < n)
                {
                    peer.record_event(network, peer_event())
                        .expect("the peer records");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        PeerWriter {
            stop,
            count,
            handle,
        }
    }

    /// The child's next line, noted; a child that ended early fails the test.
    async fn line(&mut self, child: &mut Child, what: &str) -> String {
        let line = child
            .next(what)
            .await
            .unwrap_or_else(|| panic!("seed {:#x}: the child ended early", self.seed));
        self.note(&line);
        line
    }

    /// Reopen the child's store as a node and check it: every acknowledged event and stored
    /// change is there, the views equal a fresh fold, it reconnects to the peer without a
    /// refusal on either side, and both converge.
    async fn check(&mut self, kill: usize) {
        let (seed, name, network) = (self.seed, self.name, self.network);
        let node = tokio::time::timeout(
            CHILD_WAIT,
            Node::open(child_config(self.child_dir.path(), "write")),
        )
        .await
        .unwrap_or_else(|_| panic!("seed {seed:#x} {name} kill {kill}: reopening timed out"))
        .unwrap_or_else(|e| {
            panic!(
                "seed {seed:#x} {name} kill {kill}: the store does not reopen after SIGKILL: {e}"
            )
        });
        assert_eq!(
            node.network_status(network).expect("status"),
            NetworkStatus::Available,
            "seed {seed:#x} {name} kill {kill}: the network is available after the kill"
        );
        let (lost_events, lost_changes, fresh) = node
            .read(network, |r| {
                let lost_events: Vec<&Id> = self
                    .acked
                    .iter()
                    .filter(|id| r.ledger().event(id).is_none())
                    .collect();
                let lost_changes: Vec<&ChangeHash> = self
                    .got
                    .iter()
                    .filter(|h| !r.ledger().has_change(h))
                    .collect();
                let fresh = r.ledger().snapshot() == r.ledger().snapshot_from_scratch();
                (
                    format!("{lost_events:?}"),
                    format!("{lost_changes:?}"),
                    fresh,
                )
            })
            .expect("read");
        assert_eq!(
            lost_events, "[]",
            "seed {seed:#x} {name} kill {kill}: acknowledged events lost"
        );
        assert_eq!(
            lost_changes, "[]",
            "seed {seed:#x} {name} kill {kill}: changes the child stored are lost"
        );
        assert!(
            fresh,
            "seed {seed:#x} {name} kill {kill}: the views differ from a fresh fold"
        );

        let mut peer_events = self.peer.events();
        let mut node_events = node.events();
        within(
            "the restarted child reconnects",
            node.connect(network, &self.peer.addr()),
        )
        .await
        .unwrap_or_else(|e| {
            panic!("seed {seed:#x} {name} kill {kill}: the restarted child is refused: {e}")
        });
        converge(&[&self.peer, &node], network).await;
        for (who, events) in [("peer", &mut peer_events), ("child", &mut node_events)] {
            while let Ok(e) = events.try_recv() {
                assert!(
                    !matches!(
                        e,
                        NodeEvent::Refused { .. } | NodeEvent::ChangesRefused { .. }
                    ),
                    "seed {seed:#x} {name} kill {kill}: the {who} refused or was refused: {e:?}"
                );
            }
        }
        for (who, n) in [("peer", &*self.peer), ("child", &node)] {
            let (member, cut_off) = n
                .read(network, |r| {
                    (r.member(&self.child_device).is_some(), r.cut_offs().count())
                })
                .expect("read");
            assert!(
                member && cut_off == 0,
                "seed {seed:#x} {name} kill {kill}: on the {who} the child is a member ({member}) and nobody is cut off ({cut_off})"
            );
        }
        node.close().await.expect("close the reopened child");
    }

    fn report(&self, kills: usize, attempts: usize, extra: &str) {
        eprintln!(
            "crash_nodes {}: seed {:#x}: {kills} kills counted of {attempts}{extra}; {} events acknowledged by the child, {} received changes reported stored, {} events by the peer, all present after every kill, views = fresh fold, converged every time; {:.1} s",
            self.name,
            self.seed,
            self.acked.len(),
            self.got.len(),
            self.peer_events,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Kills per phase: `REFLOW_CRASH_NODES_KILLS`, default 20.
fn kills_wanted() -> usize {
    env_u64("REFLOW_CRASH_NODES_KILLS").map_or(20, |n| n.max(1) as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write() {
    let mut phase = Phase::new("mid-write", 0x01).await;
    let wanted = kills_wanted();
    let mut in_compaction = 0;
    for kill in 1..=wanted {
        let mut child = phase.spawn("write");
        phase.connected(&mut child).await;
        let burst = phase.rng.below(20) as usize;
        let writer = phase.peer_writes(Some(burst));
        let after = 1 + phase.rng.below(40) as usize;
        let mut acks = 0;
        let mut compacting = false;
        while acks < after {
            let line = phase.line(&mut child, "acknowledgements").await;
            match line.as_str() {
                l if l.starts_with("ACK ") => {
                    acks += 1;
                    compacting = false;
                }
                "COMPACTING" => compacting = true,
                "COMPACTED" => compacting = false,
                _ => {}
            }
        }
        let rest = child.kill().await;
        for line in &rest {
            phase.note(line);
            match line.as_str() {
                "COMPACTING" => compacting = true,
                "COMPACTED" => compacting = false,
                l if l.starts_with("ACK ") => compacting = false,
                _ => {}
            }
        }
        in_compaction += usize::from(compacting);
        phase.peer_events += writer.finish();
        phase.check(kill).await;
    }
    phase.report(
        wanted,
        wanted,
        &format!(" ({in_compaction} of them inside a compaction the write had started)"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_receive() {
    let mut phase = Phase::new("mid-receive", 0x02).await;
    let wanted = kills_wanted();
    let (mut kills, mut attempts) = (0, 0);
    let mut in_flight_total = 0;
    while kills < wanted {
        attempts += 1;
        assert!(
            attempts <= 3 * wanted,
            "seed {:#x}: only {kills} of {attempts} kills landed while changes were in flight",
            phase.seed
        );
        let mut child = phase.spawn("receive");
        phase.connected(&mut child).await;
        let writer = phase.peer_writes(None);
        let after = 1 + phase.rng.below(50) as usize;
        let mut got = 0;
        while got < after {
            let line = phase.line(&mut child, "received changes").await;
            got += usize::from(line.starts_with("GOT "));
        }
        // The peer has written more than the child reported: changes are in flight.
        let written_at_kill = writer.written();
        let rest = child.kill().await;
        phase.peer_events += writer.finish();
        for line in &rest {
            phase.note(line);
            got += usize::from(line.starts_with("GOT "));
        }
        if written_at_kill > got {
            kills += 1;
            in_flight_total += written_at_kill - got;
        }
        phase.check(attempts).await;
    }
    phase.report(
        kills,
        attempts,
        &format!(" (each with changes the peer had written in flight: {in_flight_total} in all)"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_compaction() {
    let mut phase = Phase::new("mid-compaction", 0x03).await;
    let wanted = kills_wanted();
    let (mut kills, mut attempts) = (0, 0);
    while kills < wanted {
        attempts += 1;
        assert!(
            attempts <= 3 * wanted,
            "seed {:#x}: only {kills} of {attempts} kills landed inside a compaction",
            phase.seed
        );
        let mut child = phase.spawn("compact");
        phase.connected(&mut child).await;
        let burst = phase.rng.below(10) as usize;
        let writer = phase.peer_writes(Some(burst));
        let nth = 1 + phase.rng.below(3);
        let mut seen = 0;
        while seen < nth {
            let line = phase.line(&mut child, "a compaction").await;
            seen += u64::from(line == "COMPACTING");
        }
        let rest = child.kill().await;
        let mut finished = false;
        for line in &rest {
            phase.note(line);
            finished |= line == "COMPACTED";
        }
        phase.peer_events += writer.finish();
        kills += usize::from(!finished);
        phase.check(attempts).await;
    }
    phase.report(
        kills,
        attempts,
        " (killed after COMPACTING, before COMPACTED)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_open_repair() {
    let mut phase = Phase::new("mid-open-repair", 0x04).await;
    let wanted = kills_wanted();
    let (mut kills, mut attempts, mut write_kills) = (0, 0, 0);
    let (mut in_repair, mut in_load) = (0, 0);
    while kills < wanted {
        attempts += 1;
        assert!(
            attempts <= 3 * wanted,
            "seed {:#x}: only {kills} of {attempts} kills landed inside an open",
            phase.seed
        );
        // First a child that writes (while the peer writes too) is killed: its store was not
        // closed cleanly.
        let mut child = phase.spawn("open");
        phase.connected(&mut child).await;
        let burst = phase.rng.below(10) as usize;
        let writer = phase.peer_writes(Some(burst));
        let after = 1 + phase.rng.below(20) as usize;
        let mut acks = 0;
        while acks < after {
            let line = phase.line(&mut child, "acknowledgements").await;
            acks += usize::from(line.starts_with("ACK "));
        }
        for line in child.kill().await {
            phase.note(&line);
        }
        phase.peer_events += writer.finish();
        write_kills += 1;
        // Then a child reopening (and repairing) that store is killed during the open: on
        // REPAIRING (redb repairs the file) or on LOADING (the replica loads, after it).
        let on_repair = phase.rng.below(2) == 0;
        let mut child = phase.spawn("open");
        let mut opened = false;
        let killed_on = loop {
            let line = phase.line(&mut child, "the open").await;
            opened |= line == "OPENED";
            if opened || line == "LOADING" || (on_repair && line == "REPAIRING") {
                break line;
            }
        };
        let rest = child.kill().await;
        for line in &rest {
            phase.note(line);
            opened |= line == "OPENED";
        }
        if !opened {
            kills += 1;
            // Killed on REPAIRING, and the replica had not started loading: inside the repair.
            if killed_on == "REPAIRING" && !rest.iter().any(|l| l == "LOADING") {
                in_repair += 1;
            } else {
                in_load += 1;
            }
        }
        phase.check(attempts).await;
    }
    phase.report(
        kills,
        attempts,
        &format!(
            " (killed before OPENED: {in_repair} inside the repair of the file, {in_load} while the replica loaded after it; each after a kill mid-write: {write_kills} more kills)"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_join() {
    let mut phase = Phase::new("mid-join", 0x05).await;
    let network = phase.network;
    // Long enough a history that storing the joined replica takes a while.
    record_history(&phase.peer, network, "ana", "apples", 3000);
    let wanted = kills_wanted();
    let (mut kills, mut attempts, mut rejoined) = (0, 0, 0);
    while kills < wanted {
        attempts += 1;
        assert!(
            attempts <= 3 * wanted,
            "seed {:#x}: only {kills} of {attempts} kills landed inside the store of a join",
            phase.seed
        );
        // A fresh device each time, admitted by the peer.
        let dir = tempdir();
        let fresh = Node::open(child_config(dir.path(), "join"))
            .await
            .expect("a fresh device");
        let device = fresh.device();
        fresh.close().await.expect("close the fresh device");
        admit(&phase.peer, network, device, &format!("joiner-{attempts}"));
        phase.child_dir = dir;
        phase.child_device = device;
        let mut child = phase.spawn("join");
        let mut joined = false;
        loop {
            let line = phase.line(&mut child, "the join's store").await;
            joined |= line == "JOINED";
            if joined || line == "STORING" {
                break;
            }
        }
        let rest = child.kill().await;
        let stored = rest.iter().any(|l| l == "STORED");
        joined |= rest.iter().any(|l| l == "JOINED");
        kills += usize::from(!stored && !joined);
        // The store holds the network whole or not at all: if not, joining again works.
        let (seed, name) = (phase.seed, phase.name);
        let node = Node::open(child_config(phase.child_dir.path(), "join"))
            .await
            .unwrap_or_else(|e| {
                panic!("seed {seed:#x} {name} attempt {attempts}: the store does not reopen: {e}")
            });
        if !node.networks().contains(&network) {
            assert!(
                !joined,
                "seed {seed:#x} {name} attempt {attempts}: the join was acknowledged, then lost"
            );
            rejoined += 1;
            within(
                "the killed joiner joins again",
                node.join(network, &phase.peer.addr()),
            )
            .await
            .unwrap_or_else(|e| {
                panic!("seed {seed:#x} {name} attempt {attempts}: joining again fails: {e}")
            });
        }
        node.close().await.expect("close the reopened joiner");
        phase.check(attempts).await;
    }
    phase.report(
        kills,
        attempts,
        &format!(
            " (killed after STORING, before STORED and JOINED; {rejoined} stores held no network after the kill and joined again, the others held it whole)"
        ),
    );
}
