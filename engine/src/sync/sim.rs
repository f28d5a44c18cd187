//! A deterministic network simulator for sync sessions (tests only).
//!
//! N replicas of one network, every pair connected by a simulated link that carries encoded
//! frames (always bytes: every frame goes through [`Frame::encode`] and [`Frame::split`]), with
//! seeded loss, duplication, reordering and partitions. A lost frame breaks the connection: the
//! link is reset after a delay (both sessions dropped and started again, half of the time from
//! their saved state), as a real transport does after a timeout. Peers write between steps
//! and push their writes (and the changes they accept from others) to every connected peer.
//!
//! The seed fixes the schedule (who writes what, which frame is lost, delayed or duplicated).
//! Change hashes also depend on the wall clock (Automerge change timestamps) and on random
//! session actor ids, so hash-dependent details (Bloom filter false positives, head order)
//! vary between runs of one seed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use automerge::ChangeHash;

use crate::identity::{ChangeSignature, NetworkId};
use crate::ledger::Ledger;

use crate::identity::DeviceKey;
use crate::membership::Role;
use crate::replica::Replica;
use crate::sync::{Frame, SyncSession};
use crate::vf::{Action, Agent, EconomicEvent, Id, ResourceDescription, Unit};

/// splitmix64: small, seedable, good enough for schedules.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5eed_5eed_5eed_5eed)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `per_mille`/1000.
    pub(super) fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// A deterministic device key.
pub(super) fn key(seed: u64, i: usize) -> DeviceKey {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    secret[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    secret[16] = 0xa5;
    DeviceKey::from_secret_bytes(&secret)
}

/// The stored form of a freshly made network, to open many copies of it without signing
/// and verifying its changes again.
struct Template {
    network: NetworkId,
    doc: Vec<u8>,
    signatures: HashMap<ChangeHash, ChangeSignature>,
}

/// Templates made so far, by (key seed, number of replicas).
type Templates = Mutex<HashMap<(u64, usize), Arc<Template>>>;

fn template(seed: u64, n: usize) -> Arc<Template> {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    let mut cache = TEMPLATES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache
        .entry((seed, n))
        .or_insert_with(|| {
            let replicas = make_network(seed, n);
            Arc::new(Template {
                network: replicas[0].network(),
                doc: replicas[0].ledger().save(),
                signatures: replicas[0]
                    .signed_changes_since(&[])
                    .into_iter()
                    .map(|c| (c.hash(), c.signature))
                    .collect(),
            })
        })
        .clone()
}

/// A network of `n` replicas, all members: replica 0 created it (admin) and admitted the
/// others. Made once per (seed, n) with real joins; later calls open stored copies.
pub(super) fn network(seed: u64, n: usize) -> Vec<Replica> {
    let t = template(seed, n);
    (0..n)
        .map(|i| {
            let key = key(seed, i);
            let ledger = Ledger::load(&t.doc, key.session_actor().expect("actor")).expect("load");
            Replica::open(ledger, key, t.network, t.signatures.clone(), vec![]).expect("open")
        })
        .collect()
}

/// A network of `n` replicas made the long way: replica 0 creates it and admits the others,
/// which join from its changes. Replicas 0 and 1 are admins (so that two devices edit the
/// admin's unit concurrently), the rest members.
fn make_network(seed: u64, n: usize) -> Vec<Replica> {
    let (mut admin, _) =
        Replica::create_network("sim", key(seed, 0), Agent::person("a0", "Agent 0"))
            .expect("create network");
    admin
        .write(|l| l.create(Unit::new("kg", "kilogram", "kg")))
        .expect("unit");
    for i in 1..n {
        let agent = format!("a{i}");
        admin
            .write(|l| l.create(Agent::person(agent.as_str(), format!("Agent {i}"))))
            .expect("agent");
        let role = if i == 1 { Role::Admin } else { Role::Member };
        admin
            .add_member(key(seed, i).id(), role, Id::from(agent))
            .expect("add member");
    }
    let all = admin.signed_changes_since(&[]);
    let mut out = vec![admin];
    for i in 1..n {
        let network = out[0].network();
        let (r, receipt) = Replica::join(network, key(seed, i), all.clone()).expect("join");
        assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
        assert_eq!(r.ledger().heads(), out[0].ledger().heads());
        out.push(r);
    }
    out
}

/// One random write by replica `i` (its agent is `a<i>`). Returns the signed changes.
pub(super) fn random_write(
    rng: &mut Rng,
    replica: &mut Replica,
    i: usize,
    k: u64,
) -> Vec<crate::identity::SignedChange> {
    let agent = format!("a{i}");
    let result = match rng.below(5) {
        0 => replica.write(|l| {
            // Members describe units and places; agents only their own (admission).
            l.create(Unit::new(
                format!("u-{i}-{k}"),
                format!("Unit {i}/{k}"),
                "u",
            ))
            .map(|_| ())
        }),
        1 => {
            // Concurrent edits of one shared object (Automerge resolves them alike everywhere):
            // the admins' unit (only admins edit an object another agent made), or this
            // device's own agent.
            let name = format!("renamed by {i} at {k}");
            if i < 2 && rng.below(2) == 0 {
                replica.write(|l| l.update::<Unit>(&Id::from("kg"), |u| u.label = name))
            } else {
                let own = Id::from(agent.as_str());
                replica.write(|l| l.update::<Agent>(&own, |a| a.name = name))
            }
        }
        2 => {
            // Consume from a resource this replica produced earlier, if any.
            let r = Id::from(format!("r-{i}-{}", rng.below(k.max(1))));
            replica.write(|l| {
                if l.resource(&r).is_none() {
                    return Ok(());
                }
                l.record_event(
                    EconomicEvent::new(Action::Consume, agent.as_str(), agent.as_str())
                        .resource(r)
                        .quantity(1, "kg"),
                )
                .map(|_| ())
            })
        }
        _ => replica.write(|l| {
            l.record_event(
                EconomicEvent::new(Action::Produce, agent.as_str(), agent.as_str())
                    .quantity(5, "kg")
                    .creating(ResourceDescription::new(
                        format!("r-{i}-{k}"),
                        format!("Lot {k} of {i}"),
                    )),
            )
            .map(|_| ())
        }),
    };
    result.expect("an honest write").1
}

/// Fault rates, per mille per frame (loss, duplication, reordering) or per step
/// (partition toggles, writes).
#[derive(Debug, Clone, Copy)]
pub(super) struct Faults {
    pub loss: u64,
    pub duplicate: u64,
    pub reorder: u64,
    pub partition: u64,
    pub write: u64,
}

/// A frame in flight.
#[derive(Debug)]
struct InFlight {
    deliver_at: u64,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Link {
    up: bool,
    /// When the connection, broken by a lost frame, is re-established.
    reset_at: Option<u64>,
    /// Frames in flight, per direction: [lower → higher, higher → lower].
    wires: [VecDeque<InFlight>; 2],
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Outcome {
    pub steps: u64,
    pub frames: u64,
    pub bytes: u64,
    pub lost: u64,
    pub resets: u64,
    pub writes: u64,
    pub stale: u64,
    pub suppressed: u64,
}

/// The simulation of one seed.
pub(super) struct Sim {
    pub seed: u64,
    pub rng: Rng,
    pub replicas: Vec<Replica>,
    sessions: Vec<Vec<Option<SyncSession>>>,
    links: Vec<Vec<Link>>,
    pub faults: Faults,
    pub now: u64,
    pub out: Outcome,
    writes: u64,
    log: Vec<String>,
}

impl Sim {
    pub(super) fn new(seed: u64, replicas: Vec<Replica>, faults: Faults) -> Sim {
        let n = replicas.len();
        let mut sim = Sim {
            seed,
            rng: Rng::new(seed),
            sessions: (0..n).map(|_| (0..n).map(|_| None).collect()).collect(),
            links: (0..n)
                .map(|_| (0..n).map(|_| Link::default()).collect())
                .collect(),
            replicas,
            faults,
            now: 0,
            out: Outcome::default(),
            writes: 0,
            log: Vec::new(),
        };
        for a in 0..n {
            for b in a + 1..n {
                sim.links[a][b].up = true;
                sim.connect(a, b, false);
            }
        }
        sim
    }

    fn note(&mut self, line: String) {
        if self.log.len() > 400 {
            self.log.drain(..200);
        }
        self.log.push(format!("t={} {line}", self.now));
    }

    /// A failure message with the seed and the end of the event log.
    pub(super) fn fail(&self, what: &str) -> String {
        format!(
            "seed {} failed: {what}\nlast events:\n{}",
            self.seed,
            self.log[self.log.len().saturating_sub(40)..].join("\n")
        )
    }

    fn pair(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    /// (Re)connect a and b: fresh sessions, half of the time from their saved state.
    fn connect(&mut self, a: usize, b: usize, from_saved: bool) {
        let network = self.replicas[a].network();
        for (x, y) in [(a, b), (b, a)] {
            let peer = self.replicas[y].device();
            let old = self.sessions[x][y].take();
            self.sessions[x][y] = Some(match old {
                Some(s) if from_saved => {
                    SyncSession::with_state(network, peer, &s.saved_state()).expect("saved state")
                }
                _ => SyncSession::new(network, peer),
            });
        }
        let (lo, hi) = Sim::pair(a, b);
        let link = &mut self.links[lo][hi];
        link.reset_at = None;
        link.wires[0].clear();
        link.wires[1].clear();
        self.note(format!("connect {a}-{b} saved={from_saved}"));
        self.pump(a, Some(b));
        self.pump(b, Some(a));
    }

    fn send(&mut self, from: usize, to: usize, frame: Frame) {
        let bytes = frame.encode();
        self.out.frames += 1;
        self.out.bytes += bytes.len() as u64;
        let (lo, hi) = Sim::pair(from, to);
        let dir = usize::from(from > to);
        let faults = self.faults;
        let now = self.now;
        let rng = &mut self.rng;
        let link = &mut self.links[lo][hi];
        if !link.up || link.reset_at.is_some() {
            // Nobody is listening: the connection is down or already broken.
            return;
        }
        if rng.chance(faults.loss) {
            self.out.lost += 1;
            link.reset_at = Some(now + 3 + rng.below(15));
            self.note(format!("lost {from}->{to}"));
            return;
        }
        let copies = if rng.chance(faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = now + 1;
            if rng.chance(faults.reorder) {
                at += 1 + rng.below(6);
            } else if let Some(last) = link.wires[dir].back() {
                at = at.max(last.deliver_at);
            }
            link.wires[dir].push_back(InFlight {
                deliver_at: at,
                bytes: bytes.clone(),
            });
        }
    }

    /// Send whatever replica `x`'s sessions have to send (all of them, or only the one with
    /// `only`).
    fn pump(&mut self, x: usize, only: Option<usize>) {
        let n = self.replicas.len();
        for y in 0..n {
            if y == x || only.is_some_and(|o| o != y) {
                continue;
            }
            let mut sent = 0;
            while let Some(frame) = self.sessions[x][y]
                .as_mut()
                .and_then(|s| s.poll_transmit(&self.replicas[x]))
            {
                sent += 1;
                assert!(sent < 10_000, "{}", self.fail("poll_transmit never stops"));
                self.send(x, y, frame);
            }
        }
    }

    /// Push changes replica `x` just wrote or accepted to every peer but `except`.
    fn push_all(&mut self, x: usize, changes: &[crate::identity::SignedChange], except: usize) {
        if changes.is_empty() {
            return;
        }
        for y in 0..self.replicas.len() {
            if y == x || y == except {
                continue;
            }
            let frame = self.sessions[x][y].as_mut().and_then(|s| s.push(changes));
            if let Some(frame) = frame {
                self.send(x, y, frame);
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: &[u8]) {
        let (frame, used) = match Frame::split(bytes) {
            Ok(Some(f)) => f,
            other => panic!("{}", self.fail(&format!("undecodable frame: {other:?}"))),
        };
        assert_eq!(used, bytes.len(), "{}", self.fail("frame length"));
        let Some(session) = self.sessions[to][from].as_mut() else {
            return;
        };
        let changes = match session.handle_frame(&self.replicas[to], frame) {
            Ok(c) => c,
            Err(e) => panic!("{}", self.fail(&format!("handle_frame {from}->{to}: {e}"))),
        };
        let n = changes.len();
        let receipt = self.replicas[to].receive(changes).expect("receive");
        assert!(
            receipt.refused.is_empty(),
            "{}",
            self.fail(&format!("honest changes refused: {:?}", receipt.refused))
        );
        self.note(format!(
            "deliver {from}->{to} changes={n} applied={} waiting={} dup={}",
            receipt.applied.len(),
            receipt.waiting,
            receipt.duplicates
        ));
        if receipt.applied.is_empty() {
            self.pump(to, Some(from));
        } else {
            self.push_all(to, &receipt.applied, from);
            self.pump(to, None);
        }
    }

    /// One step: maybe a write and a partition change (while `active`), connection resets
    /// that are due, and the delivery of the frames that are due.
    pub(super) fn step(&mut self, active: bool) {
        self.now += 1;
        self.out.steps += 1;
        let n = self.replicas.len();
        if active && self.rng.chance(self.faults.write) {
            let i = self.rng.below(n as u64) as usize;
            self.writes += 1;
            let k = self.writes;
            let changes = random_write(&mut self.rng, &mut self.replicas[i], i, k);
            self.out.writes += 1;
            self.note(format!("write at {i}: {} changes", changes.len()));
            self.push_all(i, &changes, usize::MAX);
            self.pump(i, None);
        }
        if active && self.rng.chance(self.faults.partition) {
            let a = self.rng.below(n as u64) as usize;
            let b = (a + 1 + self.rng.below(n as u64 - 1) as usize) % n;
            let (lo, hi) = Sim::pair(a, b);
            if self.links[lo][hi].up {
                self.links[lo][hi].up = false;
                self.links[lo][hi].wires[0].clear();
                self.links[lo][hi].wires[1].clear();
                self.note(format!("partition {lo}-{hi}"));
            } else {
                self.heal(lo, hi);
            }
        }
        if !active {
            for a in 0..n {
                for b in a + 1..n {
                    if !self.links[a][b].up {
                        self.heal(a, b);
                    }
                }
            }
        }
        for a in 0..n {
            for b in a + 1..n {
                if self.links[a][b].up && self.links[a][b].reset_at.is_some_and(|t| t <= self.now) {
                    self.out.resets += 1;
                    let saved = self.rng.chance(500);
                    self.connect(a, b, saved);
                }
            }
        }
        for a in 0..n {
            for b in a + 1..n {
                for dir in 0..2 {
                    let (from, to) = if dir == 0 { (a, b) } else { (b, a) };
                    loop {
                        let wire = &mut self.links[a][b].wires[dir];
                        let Some(pos) = wire.iter().position(|f| f.deliver_at <= self.now) else {
                            break;
                        };
                        let Some(f) = wire.remove(pos) else { break };
                        self.deliver(from, to, &f.bytes);
                    }
                }
            }
        }
    }

    fn heal(&mut self, a: usize, b: usize) {
        self.links[a][b].up = true;
        self.out.resets += 1;
        self.note(format!("heal {a}-{b}"));
        let saved = self.rng.chance(500);
        self.connect(a, b, saved);
    }

    /// Whether nothing is in flight, no reset is due and no session has anything to send.
    pub(super) fn quiescent(&mut self) -> bool {
        let n = self.replicas.len();
        for a in 0..n {
            for b in a + 1..n {
                let l = &self.links[a][b];
                if !l.up || l.reset_at.is_some() || l.wires.iter().any(|w| !w.is_empty()) {
                    return false;
                }
            }
        }
        let frames = self.out.frames;
        for x in 0..n {
            self.pump(x, None);
        }
        self.out.frames == frames
    }

    /// Run `active` steps with writes and faults, then heal everything, stop faults and run
    /// until quiescent (at most `settle` steps).
    pub(super) fn run(&mut self, active: u64, settle: u64) -> Outcome {
        for _ in 0..active {
            self.step(true);
        }
        self.faults.loss = 0;
        self.faults.duplicate = 0;
        self.faults.reorder = 0;
        let mut settled = false;
        for _ in 0..settle {
            self.step(false);
            if self.quiescent() {
                settled = true;
                break;
            }
        }
        assert!(settled, "{}", self.fail("not quiescent"));
        for row in &self.sessions {
            for s in row.iter().flatten() {
                self.out.stale += s.stats().stale_frames;
                self.out.suppressed += s.stats().repeats_suppressed;
            }
        }
        self.out
    }

    /// Assert every replica has the same heads and the same ledger views.
    pub(super) fn assert_converged(&self) {
        let heads = self.replicas[0].ledger().heads();
        let snapshot = self.replicas[0].ledger().snapshot();
        let json = serde_json::to_string(&snapshot).expect("snapshot json");
        for (i, r) in self.replicas.iter().enumerate() {
            assert_eq!(
                r.ledger().heads(),
                heads,
                "{}",
                self.fail(&format!("replica {i} has other heads"))
            );
            let other = serde_json::to_string(&r.ledger().snapshot()).expect("snapshot json");
            assert!(
                other == json,
                "{}",
                self.fail(&format!("replica {i} has another snapshot"))
            );
            assert_eq!(
                r.quarantine().count(),
                0,
                "{}",
                self.fail(&format!("replica {i} quarantined honest changes"))
            );
        }
    }
}
