//! Shared by the benchmarks: a deterministic, realistic workload of market events and a few
//! helpers to compute ratios between figures of the same run.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use reflow::{
    Action, ActorId, Agent, DeviceKey, EconomicEvent, Ledger, NewEvent, Quantity, Replica,
    ResourceDescription, ResourceSpecification, SignedChange, SpatialThing, Unit,
};

/// A signed replica of a new network seeded with the workload's genesis objects (agents,
/// unit, specifications, locations), and its signed changes.
pub fn seeded_replica() -> (Replica, Vec<SignedChange>) {
    let key = DeviceKey::generate().expect("key");
    let (mut r, mut signed) =
        Replica::create_network(NETWORK, key, Agent::person("admin", "Admin")).expect("network");
    let template = Workload::genesis();
    let (_, more) = r
        .write(|l| {
            for a in template.list::<Agent>() {
                l.create(a)?;
            }
            for u in template.list::<Unit>() {
                l.create(u)?;
            }
            for s in template.list::<ResourceSpecification>() {
                l.create(s)?;
            }
            for p in template.list::<SpatialThing>() {
                l.create(p)?;
            }
            Ok(())
        })
        .expect("seed");
    signed.extend(more);
    (r, signed)
}

/// The network name of every benchmark ledger.
pub const NETWORK: &str = "market";
/// Resources created by the first `produce` events.
pub const RESOURCES: usize = 100;
const AGENTS: [&str; 10] = [
    "ana", "ben", "cleo", "dev", "eli", "fay", "gus", "hana", "ivo", "jon",
];
const SPECS: [&str; 5] = ["flour", "apples", "wool", "timber", "compost"];
const STALLS: [&str; 4] = ["stall-1", "stall-2", "stall-3", "stall-4"];
/// Small decimal quantities, as people type them at a stall.
const AMOUNTS: [&str; 8] = ["0.25", "0.5", "1.2", "0.75", "2.05", "0.1", "3.5", "1"];

/// A fixed actor id.
pub fn actor(n: u8) -> ActorId {
    ActorId::from([n; 16])
}

/// Whether criterion runs in test mode (`cargo test --benches`, or `cargo bench -- --test`):
/// the same rule as criterion's own.
pub fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

/// A deterministic stream of realistic events: `produce` creating [`RESOURCES`] resources,
/// then transfers between existing resources (70%) and consumes (30%) of small decimal
/// quantities, each with a point in time and a location. Providers are the current custodians
/// and stocks are large, so the stream is free of conflicts.
pub struct Workload {
    rng: u64,
    /// Events handed out so far.
    pub n: u64,
    custodian: Vec<usize>,
}

impl Workload {
    /// A workload whose randomness starts from `seed`.
    pub fn new(seed: u64) -> Workload {
        Workload {
            rng: seed | 1,
            n: 0,
            custodian: (0..RESOURCES).map(|r| r % AGENTS.len()).collect(),
        }
    }

    /// xorshift64*.
    fn rand(&mut self) -> usize {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize
    }

    /// A new ledger with the objects every event refers to (one change per object).
    pub fn genesis() -> Ledger {
        let mut l = Ledger::new_network(NETWORK, actor(1)).expect("genesis");
        l.create(Unit::new("kg", "kilogram", "kg")).expect("unit");
        for a in AGENTS {
            l.create(Agent::person(a, a)).expect("agent");
        }
        for s in SPECS {
            l.create(ResourceSpecification::new(s, s)).expect("spec");
        }
        for (i, s) in STALLS.iter().enumerate() {
            let lat_long = Some((52.37 + i as f64 * 0.01, 4.89));
            l.create(SpatialThing::new(*s, *s, lat_long))
                .expect("location");
        }
        l
    }

    /// The next event.
    pub fn next(&mut self) -> NewEvent {
        let i = self.n;
        self.n += 1;
        // One event every 7 seconds from 2025-03-01.
        let secs = i * 7;
        let (day, rest) = (secs / 86_400, secs % 86_400);
        let time = format!(
            "2025-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            3 + day / 28,
            1 + day % 28,
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        );
        let stall = STALLS[self.rand() % STALLS.len()];
        let amount: Quantity = AMOUNTS[self.rand() % AMOUNTS.len()]
            .parse()
            .expect("decimal");
        if (i as usize) < RESOURCES {
            let r = i as usize;
            let who = AGENTS[self.custodian[r]];
            let spec = SPECS[r % SPECS.len()];
            return EconomicEvent::new(Action::Produce, who, who)
                .quantity(10_000, "kg")
                .at(stall)
                .at_time(time)
                .creating(
                    ResourceDescription::new(format!("r{r}"), format!("{spec} lot {r}"))
                        .conforming_to(spec),
                );
        }
        let from = self.rand() % RESOURCES;
        let provider = AGENTS[self.custodian[from]];
        if self.rand() % 10 < 7 {
            let to = (from + 1 + self.rand() % (RESOURCES - 1)) % RESOURCES;
            let receiver = AGENTS[self.custodian[to]];
            EconomicEvent::new(Action::Transfer, provider, receiver)
                .resource(format!("r{from}"))
                .to_resource(format!("r{to}"))
                .quantity(amount, "kg")
                .at(stall)
                .at_time(time)
                .into()
        } else {
            EconomicEvent::new(Action::Consume, provider, provider)
                .resource(format!("r{from}"))
                .quantity(amount, "kg")
                .at(stall)
                .at_time(time)
                .into()
        }
    }

    /// The next `n` events.
    pub fn take(&mut self, n: usize) -> Vec<NewEvent> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// Lines printed as they come and again, all together, at the end of the run.
#[derive(Default)]
pub struct Report(pub RefCell<Vec<String>>);

impl Report {
    /// Print a line now and keep it for the summary.
    pub fn line(&self, s: String) {
        eprintln!("{s}");
        self.0.borrow_mut().push(s);
    }
}

/// Per-iteration times of one benchmark's calls to `iter_custom`, so that ratios can be
/// computed within the run.
#[derive(Default, Clone)]
pub struct Samples(Rc<RefCell<Vec<(u64, Duration)>>>);

impl Samples {
    /// Keep the time of one `iter_custom` call and return it.
    pub fn record(&self, iters: u64, d: Duration) -> Duration {
        self.0.borrow_mut().push((iters, d));
        d
    }

    /// The median time per iteration (seconds) over criterion's 10 measured samples: the
    /// last 10 calls (the ones before are the warm-up).
    pub fn median(&self) -> Option<f64> {
        let mut per: Vec<f64> = self
            .0
            .borrow()
            .iter()
            .rev()
            .take(10)
            .map(|(i, d)| d.as_secs_f64() / *i as f64)
            .collect();
        per.sort_by(f64::total_cmp);
        per.get(per.len() / 2).copied()
    }
}
