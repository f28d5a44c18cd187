//! Crash test, real: a child process records events in a loop and reports each one once
//! `record_event` has returned (acknowledged, hence durable). The parent kills it with SIGKILL
//! at seeded random moments — some of them while it is compacting — reopens the store each
//! time, and checks that every acknowledged event is there and the views are valid.
//!
//! The child is this same test binary, re-run with `--exact crash_child --ignored`.
#![allow(clippy::print_stdout)] // the child process reports acknowledgements to the parent on stdout

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reflow::{Action, ActorId, Agent, EconomicEvent, Id, Ledger, ResourceDescription, Store, Unit};

const NETWORK: &str = "crash-net";
const ENV_DIR: &str = "REFLOW_CRASH_DIR";
const ENV_RUN: &str = "REFLOW_CRASH_RUN";
const ENV_COMPACT_EVERY: &str = "REFLOW_CRASH_COMPACT_EVERY";

fn actor_for_run(run: u32) -> ActorId {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(b"crsh");
    bytes[12..].copy_from_slice(&run.to_be_bytes());
    ActorId::from(bytes)
}

/// Create the store and the network with a resource the child keeps adding to.
fn setup(dir: &Path) -> Store {
    let store = Store::open(dir.join("node.redb")).expect("create store");
    let mut ledger = Ledger::new_network("crash test", actor_for_run(0)).expect("genesis");
    ledger
        .create(Unit::new("kg", "kilogram", "kg"))
        .expect("unit");
    ledger.create(Agent::person("ana", "Ana")).expect("agent");
    ledger
        .record_event(
            EconomicEvent::new(Action::Produce, "ana", "ana")
                .quantity(1, "kg")
                .creating(ResourceDescription::new("compost", "Compost")),
        )
        .expect("first event");
    store.create_ledger(NETWORK, ledger).expect("store ledger");
    store
}

/// The child: append events forever, printing `ACK <id>` after each durable record and
/// `COMPACTING` just before each compaction. Ignored unless run by the parent.
#[test]
#[ignore = "run as a child process by crash_kill_loop"]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let run: u32 = std::env::var(ENV_RUN)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let compact_every: u64 = std::env::var(ENV_COMPACT_EVERY)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(40);
    let store = Store::open(Path::new(&dir).join("node.redb")).expect("child opens store");
    let mut ledger = store
        .open_ledger(NETWORK, actor_for_run(run))
        .expect("child opens ledger");
    let mut n: u64 = 0;
    loop {
        n += 1;
        let id = ledger
            .record_event(
                EconomicEvent::new(Action::Raise, "ana", "ana")
                    .resource("compost")
                    .quantity("0.5".parse::<reflow::Quantity>().expect("decimal"), "kg"),
            )
            .expect("record");
        println!("ACK {id}");
        if n % compact_every == 0 {
            println!("COMPACTING");
            ledger.compact().expect("compact");
            println!("COMPACTED");
        }
    }
}

/// splitmix64: a tiny seeded generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn spawn_child(dir: &Path, run: u32, compact_every: u64) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_RUN, run.to_string())
        .env(ENV_COMPACT_EVERY, compact_every.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

#[test]
fn crash_kill_loop() {
    let seed: u64 = std::env::var("REFLOW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026);
    eprintln!("crash_kill_loop seed = {seed} (set REFLOW_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    drop(setup(dir));

    let mut acked: Vec<Id> = Vec::new();
    let kills = 24;
    let mut kills_during_compaction = 0;
    for run in 1..=kills {
        let compact_every = 10 + rng.below(30);
        let mut child = spawn_child(dir, run, compact_every);
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a random number of acknowledgements, or as soon as a compaction starts.
        let kill_after = 1 + rng.below(120);
        let kill_in_compaction = rng.below(3) == 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = 0;
        let mut in_compaction = false;
        for line in lines.by_ref() {
            let line = line.expect("read child output");
            if let Some(id) = line.strip_prefix("ACK ") {
                acked.push(Id::from(id.trim()));
                seen += 1;
                if !kill_in_compaction && seen >= kill_after {
                    break;
                }
            } else if line == "COMPACTING" && kill_in_compaction && seen >= 1 {
                in_compaction = true;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "seed {seed}: child made no progress"
            );
        }
        child.kill().expect("SIGKILL child");
        let status = child.wait().expect("reap child");
        assert!(
            !status.success(),
            "seed {seed}: child should have been killed"
        );
        if in_compaction {
            kills_during_compaction += 1;
        }

        // Reopen and check every acknowledged event survived and the views are sound.
        let store = Store::open(dir.join("node.redb")).unwrap_or_else(|e| {
            panic!("seed {seed} run {run}: store does not reopen after SIGKILL: {e}")
        });
        let ledger = store
            .open_ledger(NETWORK, actor_for_run(10_000 + run))
            .unwrap_or_else(|e| panic!("seed {seed} run {run}: ledger does not reopen: {e}"));
        for id in &acked {
            assert!(
                ledger.ledger().event(id).is_some(),
                "seed {seed} run {run}: acknowledged event {id} lost"
            );
        }
        let view = ledger.ledger().snapshot();
        assert_eq!(
            view,
            ledger.ledger().snapshot_from_scratch(),
            "seed {seed} run {run}: views differ from a full fold"
        );
        let compost = ledger
            .ledger()
            .resource(&Id::from("compost"))
            .expect("compost exists");
        // 1 kg produced, then 0.5 kg per raise event that survived (at least the acked ones).
        let events = ledger.ledger().event_count();
        assert!(
            events > acked.len(),
            "seed {seed}: fewer events than acknowledged"
        );
        let expected = reflow::Quantity::from(1)
            .checked_add(
                "0.5"
                    .parse::<reflow::Quantity>()
                    .expect("decimal")
                    .value()
                    .checked_mul(rust_decimal_count(events - 1))
                    .expect("no overflow")
                    .into(),
            )
            .expect("no overflow");
        assert_eq!(
            compost.accounting_quantity.has_numerical_value, expected,
            "seed {seed} run {run}: quantity does not match the events"
        );
    }
    eprintln!(
        "crash_kill_loop: {kills} kills ({kills_during_compaction} during compaction), {} acknowledged events, all present",
        acked.len()
    );
    assert!(
        kills_during_compaction >= 3,
        "seed {seed}: too few kills during compaction to test it ({kills_during_compaction})"
    );
}

fn rust_decimal_count(n: usize) -> rust_decimal::Decimal {
    rust_decimal::Decimal::from(n as u64)
}
