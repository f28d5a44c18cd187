//! Helpers shared by the integration tests: loopback nodes in temporary directories, ledger
//! fixtures, and waiting on node events and ledger updates with a deadline (never sleeping).

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use reflow::node::{LedgerUpdate, NodeEvent};
use reflow::*;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Longest wait for anything in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Open a node that talks on loopback only (127.0.0.1, no relays, no address lookup, no port
/// mapping) with its store in `dir`.
pub async fn open(dir: &Path) -> Node {
    let node = Node::open(NodeConfig::loopback(dir))
        .await
        .expect("open a loopback node");
    let addr = node.addr();
    assert!(
        !addr.direct.is_empty() && addr.direct.iter().all(|a| a.ip().is_loopback()),
        "a loopback node is dialed on loopback only: {addr}"
    );
    assert!(addr.relays.is_empty(), "no relays: {addr}");
    node
}

/// A temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// Run `fut` with the test deadline.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// The network `admin` creates, acting for the agent `ana`, with the unit `kg`.
pub fn create_network(admin: &Node) -> NetworkId {
    let network = admin
        .create_network("market", Agent::person("ana", "Ana"))
        .expect("create network");
    admin
        .write(network, |l| l.create(Unit::new("kg", "kilogram", "kg")))
        .expect("unit");
    network
}

/// Create the agent `agent` on `admin` and admit `device` as a member acting for it.
pub fn admit(admin: &Node, network: NetworkId, device: DeviceId, agent: &str) {
    admin
        .write(network, |l| l.create(Agent::person(agent, agent)))
        .expect("agent");
    admin
        .add_member(network, device, Role::Member, Id::from(agent))
        .expect("add member");
}

/// A produce event by `agent` creating `resource` with `kg` kilograms.
pub fn produce(agent: &str, resource: &str, kg: u32) -> NewEvent {
    EconomicEvent::new(Action::Produce, agent, agent)
        .quantity(i64::from(kg), "kg")
        .creating(ResourceDescription::new(resource, resource))
}

/// A consume event by `agent` of `kg` kilograms of `resource`.
pub fn consume(agent: &str, resource: &str, kg: u32) -> EconomicEvent {
    EconomicEvent::new(Action::Consume, agent, agent)
        .resource(resource)
        .quantity(i64::from(kg), "kg")
}

/// Record `n` events on `node` as `agent`: a resource of `n + 10` kg, then consumptions of
/// 1 kg, one change each for the first sixth and in batches of 10 for the rest (each write
/// is an fsync'd commit).
pub fn record_history(node: &Node, network: NetworkId, agent: &str, resource: &str, n: u32) {
    node.record_event(network, produce(agent, resource, n + 10))
        .expect("produce");
    let singles = n / 6;
    for _ in 1..singles {
        node.record_event(network, consume(agent, resource, 1))
            .expect("consume");
    }
    let mut left = n - singles;
    while left > 0 {
        let k = left.min(10);
        let batch: Vec<NewEvent> = (0..k).map(|_| consume(agent, resource, 1).into()).collect();
        node.write(network, |l| l.record_events(batch))
            .expect("batch");
        left -= k;
    }
}

/// What must be identical on converged replicas: heads, views (resources and conflicts) as
/// JSON, events, members.
pub fn fingerprint(node: &Node, network: NetworkId) -> (Vec<ChangeHash>, String, usize, String) {
    node.read(network, |r| {
        let mut heads = r.ledger().heads();
        heads.sort();
        let snapshot = serde_json::to_string(&r.ledger().snapshot()).expect("snapshot JSON");
        let events = r.ledger().events(&EventFilter::default()).len();
        let members = serde_json::to_string(&r.members()).expect("members JSON");
        (heads, snapshot, events, members)
    })
    .expect("read")
}

/// Wait until `cond` holds on `node`'s replica of `network`, re-checking on every ledger
/// update.
pub async fn wait_until(
    node: &Node,
    network: NetworkId,
    what: &str,
    cond: impl Fn(&Replica) -> bool,
) {
    let mut rx = node.subscribe(network).expect("subscribe");
    let deadline = Instant::now() + WAIT;
    loop {
        if node.read(network, &cond).expect("read") {
            return;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("the node closed while waiting for {what}"),
        }
    }
}

/// Wait until every node has the same heads, views, events and members; returns the common
/// fingerprint's heads.
pub async fn converge(nodes: &[&Node], network: NetworkId) -> Vec<ChangeHash> {
    converge_within(nodes, network, WAIT, "").await
}

/// [`converge`] with its own timeout; a timeout panics naming `context` (a seed to replay)
/// and, for each node, what differs from node 0.
pub async fn converge_within(
    nodes: &[&Node],
    network: NetworkId,
    timeout: Duration,
    context: &str,
) -> Vec<ChangeHash> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let forwarders: Vec<_> = nodes
        .iter()
        .map(|n| {
            let mut sub: broadcast::Receiver<LedgerUpdate> =
                n.subscribe(network).expect("subscribe");
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    match sub.recv().await {
                        Ok(_) | Err(RecvError::Lagged(_)) => {
                            if tx.send(()).is_err() {
                                return;
                            }
                        }
                        Err(RecvError::Closed) => return,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + timeout;
    let result = loop {
        // Updates that arrive from here on wake the wait below: none is missed.
        while rx.try_recv().is_ok() {}
        // Heads first (cheap); the whole fingerprint only once they agree.
        let heads: Vec<Vec<ChangeHash>> = nodes
            .iter()
            .map(|n| {
                let mut h = n.heads(network).expect("heads");
                h.sort();
                h
            })
            .collect();
        if heads.windows(2).all(|w| w[0] == w[1]) {
            let prints: Vec<_> = nodes.iter().map(|n| fingerprint(n, network)).collect();
            if prints.windows(2).all(|w| w[0] == w[1]) {
                break heads[0].clone();
            }
        }
        if tokio::time::timeout_at(deadline, rx.recv()).await.is_err() {
            let prints: Vec<_> = nodes.iter().map(|n| fingerprint(n, network)).collect();
            let differ: Vec<String> = prints
                .iter()
                .enumerate()
                .map(|(n, p)| {
                    let same = |b: bool| if b { "same" } else { "differ" };
                    format!(
                        "node {n}: {} heads ({}), {} events ({}), views {}, members {}",
                        p.0.len(),
                        same(p.0 == prints[0].0),
                        p.2,
                        same(p.2 == prints[0].2),
                        same(p.1 == prints[0].1),
                        same(p.3 == prints[0].3),
                    )
                })
                .collect();
            panic!("{context}no convergence after {timeout:?} (compared with node 0): {differ:#?}");
        }
    };
    for f in forwarders {
        f.abort();
    }
    result
}

/// splitmix64: a tiny seeded generator, so a failing run can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An environment variable as a number, decimal or `0x` hexadecimal (seeds, counts).
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Wait for a node event that `pred` accepts; returns it.
pub async fn wait_event(
    rx: &mut broadcast::Receiver<NodeEvent>,
    what: &str,
    pred: impl Fn(&NodeEvent) -> bool,
) -> NodeEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
            Ok(Ok(e)) if pred(&e) => return e,
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(n))) => panic!("lost {n} events waiting for {what}"),
            Ok(Err(RecvError::Closed)) => panic!("the node closed while waiting for {what}"),
        }
    }
}

/// Whether the replica has the event.
pub fn has_event(r: &Replica, id: &Id) -> bool {
    r.ledger().event(id).is_some()
}
