//! Soak (issue 13, item 7): 8 real nodes on loopback (iroh endpoints on 127.0.0.1, no relays,
//! no address lookup, real redb stores) record events for a bounded time while, at seeded
//! moments, nodes restart (closed and reopened from their redb store), links drop, and
//! partitions come and go (the nodes split into two groups: every link between the groups is
//! disconnected and none is dialed until the partition heals; each group keeps a ring of
//! links inside). At the end the partition heals, every node is linked again, and the test
//! waits (with a timeout) until all 8 have identical heads, views, events and members. Then:
//! every event acknowledged by any node is on every node (events lost: must be 0), every
//! node's views equal a fresh fold, and no node refused another or a change. One summary
//! line reports what was exercised.
//!
//! The nodes run without automatic reconnection (`NodeConfig::loopback`): the test makes
//! every connection (`Node::connect`), so a partition is the absence of links between the
//! groups, kept across restarts, with no test seam in the node.
//!
//! `REFLOW_SOAK_SECS` (default 30) sets the recording time, `REFLOW_SOAK_SEED` replays a run
//! (the seed is printed at the start and in every failure).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reflow::node::NodeEvent;
use reflow::*;
use support::*;
use tokio::sync::broadcast::error::RecvError;

const NODES: usize = 8;

fn agent(i: usize) -> String {
    if i == 0 {
        "ana".to_string()
    } else {
        format!("agent-{i}")
    }
}

/// The event node `i` records: 1 kg more of its own stock.
fn event(i: usize) -> EconomicEvent {
    EconomicEvent::new(Action::Raise, agent(i), agent(i))
        .resource(format!("stock-{i}"))
        .quantity(1, "kg")
}

struct Soak {
    seed: u64,
    rng: Rng,
    network: NetworkId,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Node>,
    /// The partition group of each node (all 0 when healed).
    group: [u8; NODES],
    /// Every event acknowledged, and the node that recorded it.
    acked: Vec<(usize, Id)>,
    /// Refusals seen by any node (there must be none).
    refusals: Arc<Mutex<Vec<String>>>,
    /// Events recorded during the current partition, with the group of their node.
    during_partition: Vec<(u8, Id)>,
    /// Events checked absent from the other group when a partition healed.
    isolated: usize,
    restarts: usize,
    partitions: usize,
    link_drops: usize,
}

/// The links the test keeps: a ring and four chords across it (every node has 3 links).
fn desired_links() -> Vec<(usize, usize)> {
    let mut links: Vec<(usize, usize)> = (0..NODES).map(|i| (i, (i + 1) % NODES)).collect();
    links.extend((0..NODES / 2).map(|i| (i, i + NODES / 2)));
    links
}

impl Soak {
    /// Watch a node's events for refusals.
    fn watch(&self, i: usize) {
        let mut events = self.nodes[i].events();
        let refusals = self.refusals.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e @ (NodeEvent::Refused { .. } | NodeEvent::ChangesRefused { .. })) => {
                        refusals
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(format!("node {i}: {e:?}"));
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    fn connected(&self, i: usize, j: usize) -> bool {
        let peer = self.nodes[j].device();
        self.nodes[i]
            .peers(self.network)
            .expect("peers")
            .iter()
            .any(|p| p.device == peer && p.connected)
    }

    async fn link(&self, i: usize, j: usize) {
        if self.connected(i, j) {
            return;
        }
        let addr = self.nodes[j].addr();
        within("a link", self.nodes[i].connect(self.network, &addr))
            .await
            .unwrap_or_else(|e| {
                panic!("seed {:#x}: node {i} cannot connect to {j}: {e}", self.seed)
            });
    }

    /// Make the links the current partition allows: the desired links inside a group, and a
    /// ring inside each group (so that no group is split further).
    async fn mend(&self) {
        for (i, j) in desired_links() {
            if self.group[i] == self.group[j] {
                self.link(i, j).await;
            }
        }
        for g in [0u8, 1] {
            let members: Vec<usize> = (0..NODES).filter(|&i| self.group[i] == g).collect();
            if members.len() > 1 {
                for w in 0..members.len() {
                    let (i, j) = (members[w], members[(w + 1) % members.len()]);
                    if i != j {
                        self.link(i, j).await;
                    }
                }
            }
        }
    }

    /// Before a partition heals: no event recorded in one group during it reached the other
    /// (the partition was real).
    fn check_isolation(&mut self) {
        for (g, id) in std::mem::take(&mut self.during_partition) {
            for n in (0..NODES).filter(|&n| self.group[n] != g) {
                let crossed = self.nodes[n]
                    .read(self.network, |r| r.ledger().event(&id).is_some())
                    .expect("read");
                assert!(
                    !crossed,
                    "seed {:#x}: event {id} of group {g} reached node {n} across the partition",
                    self.seed
                );
                self.isolated += 1;
            }
        }
    }

    /// Cut every link between the groups.
    fn cut(&self) {
        for i in 0..NODES {
            for j in 0..NODES {
                if self.group[i] != self.group[j] && self.connected(i, j) {
                    self.nodes[i]
                        .disconnect(self.network, self.nodes[j].device())
                        .expect("disconnect");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_nodes_soak_with_restarts_and_partitions() {
    let seed = env_u64("REFLOW_SOAK_SEED").unwrap_or(0x50A4_2026);
    let secs = env_u64("REFLOW_SOAK_SECS").unwrap_or(30);
    eprintln!("soak: seed {seed:#x}, {secs} s (set REFLOW_SOAK_SEED to replay, REFLOW_SOAK_SECS for longer)");
    let started = Instant::now();
    let dirs: Vec<tempfile::TempDir> = (0..NODES).map(|_| tempdir()).collect();
    let mut nodes = Vec::new();
    for d in &dirs {
        nodes.push(open(d.path()).await);
    }
    let network = create_network(&nodes[0]);
    nodes[0]
        .record_event(network, produce("ana", "stock-0", 1))
        .expect("stock");
    for i in 1..NODES {
        admit(&nodes[0], network, nodes[i].device(), &agent(i));
        within("a join", nodes[i].join(network, &nodes[0].addr()))
            .await
            .expect("join");
        nodes[i]
            .record_event(network, produce(&agent(i), &format!("stock-{i}"), 1))
            .expect("stock");
    }
    let mut soak = Soak {
        seed,
        rng: Rng(seed),
        network,
        dirs,
        nodes,
        group: [0; NODES],
        acked: Vec::new(),
        refusals: Arc::new(Mutex::new(Vec::new())),
        during_partition: Vec::new(),
        isolated: 0,
        restarts: 0,
        partitions: 0,
        link_drops: 0,
    };
    for i in 0..NODES {
        soak.watch(i);
    }
    soak.mend().await;
    let setup = started.elapsed();

    let recording_started = Instant::now();
    let deadline = recording_started + Duration::from_secs(secs);
    let mut steps = 0u64;
    while Instant::now() < deadline {
        steps += 1;
        let roll = soak.rng.below(1000);
        if roll < 940 {
            let i = soak.rng.below(NODES as u64) as usize;
            let id = soak.nodes[i]
                .record_event(network, event(i))
                .unwrap_or_else(|e| panic!("seed {seed:#x}: node {i} cannot record: {e}"));
            if soak.group.iter().any(|&g| g != 0) {
                soak.during_partition.push((soak.group[i], id.clone()));
            }
            soak.acked.push((i, id));
        } else if roll < 965 {
            let i = soak.rng.below(NODES as u64) as usize;
            // Close it, reopen it from its store: everything it acknowledged is there.
            let dir = soak.dirs[i].path().to_path_buf();
            let old = soak.nodes.remove(i);
            let device = old.device();
            old.close().await.expect("close");
            let node = open(&dir).await;
            assert_eq!(
                node.device(),
                device,
                "seed {seed:#x}: the device key is kept"
            );
            soak.nodes.insert(i, node);
            let missing = soak.nodes[i]
                .read(network, |r| {
                    soak.acked
                        .iter()
                        .filter(|(by, id)| *by == i && r.ledger().event(id).is_none())
                        .count()
                })
                .expect("read");
            assert_eq!(
                missing, 0,
                "seed {seed:#x}: node {i} lost acknowledged events across a restart"
            );
            soak.watch(i);
            soak.restarts += 1;
            soak.mend().await;
        } else if roll < 985 {
            if soak.group.iter().all(|&g| g == 0) {
                // Split into two groups of 1 to 7 nodes.
                let mut group = [0u8; NODES];
                while group.iter().all(|&g| g == group[0]) {
                    for g in group.iter_mut() {
                        *g = soak.rng.below(2) as u8;
                    }
                }
                soak.group = group;
                soak.partitions += 1;
                soak.cut();
            } else {
                soak.check_isolation();
                soak.group = [0; NODES];
            }
            soak.mend().await;
        } else {
            let (i, j) = desired_links()[soak.rng.below(desired_links().len() as u64) as usize];
            if soak.connected(i, j) {
                soak.nodes[i]
                    .disconnect(network, soak.nodes[j].device())
                    .expect("disconnect");
                soak.link_drops += 1;
            }
            // Mended at the next fault, or at the end.
        }
        tokio::task::yield_now().await;
    }
    let recording = recording_started.elapsed();

    // Heal: one group, every desired link, then wait for all 8 to converge.
    soak.check_isolation();
    soak.group = [0; NODES];
    soak.mend().await;
    let healed = Instant::now();
    let timeout = Duration::from_secs(env_u64("REFLOW_SOAK_CONVERGE_SECS").unwrap_or(120));
    let nodes: Vec<&Node> = soak.nodes.iter().collect();
    let heads = converge_within(&nodes, network, timeout, &format!("seed {seed:#x}: ")).await;
    let converged_in = healed.elapsed();

    let mut lost = 0;
    let mut events_everywhere = usize::MAX;
    for (n, node) in soak.nodes.iter().enumerate() {
        let (missing, events, fresh) = node
            .read(network, |r| {
                let missing = soak
                    .acked
                    .iter()
                    .filter(|(_, id)| r.ledger().event(id).is_none())
                    .count();
                (
                    missing,
                    r.ledger().event_count(),
                    r.ledger().snapshot() == r.ledger().snapshot_from_scratch(),
                )
            })
            .expect("read");
        lost += missing;
        events_everywhere = events_everywhere.min(events);
        assert!(
            fresh,
            "seed {seed:#x}: node {n}'s views differ from a fresh fold"
        );
    }
    let refusals = soak
        .refusals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let faults = soak.restarts + soak.partitions + soak.link_drops;
    eprintln!(
        "soak: seed {seed:#x}, {NODES} nodes, {:.1} s recording (setup {:.1} s), {steps} steps: {} events recorded (acknowledged), {faults} faults injected ({} restarts, {} partitions, {} link drops; {} event copies checked absent across a partition), events lost {lost}, refusals {}, converged in {} ms after the heal to {} heads, {events_everywhere} events on every node",
        recording.as_secs_f64(),
        setup.as_secs_f64(),
        soak.acked.len(),
        soak.restarts,
        soak.partitions,
        soak.link_drops,
        soak.isolated,
        refusals.len(),
        converged_in.as_millis(),
        heads.len(),
    );
    assert_eq!(lost, 0, "seed {seed:#x}: acknowledged events lost");
    assert!(
        refusals.is_empty(),
        "seed {seed:#x}: nodes refused: {refusals:#?}"
    );
    assert!(
        soak.restarts > 0 && soak.partitions > 0,
        "seed {seed:#x}: the run injected restarts and partitions"
    );
    for node in soak.nodes {
        node.close().await.expect("close");
    }
}
