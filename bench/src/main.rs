//! `reflow-bench`: Reflow's performance in one harness, side by side in the same run with
//! (a) raw Automerge in memory on the same document and (b) automerge-repo from npm (NodeFS
//! storage, websocket network adapter on 127.0.0.1), issue 14.
//!
//! ```text
//! cargo run --release -p reflow-bench -- <scenario> [--events 1000,10000] [--runs 3] [--json FILE]
//! ```
//!
//! Scenarios: `record`, `open`, `join`, `catch-up`, `live`, `conflict-merge`, `memory`,
//! `many` (16/64/128 nodes in a seeded sparse topology, Reflow alone), `all`, and `quick` (the
//! CI tier: every scenario but `many` at 1,000 events, bounded). Every figure is min /
//! median / max over `--runs` runs (live: p50 / p99 / max over every measured event of the
//! run); every ratio divides medians of the same run. See docs/performance.md.
//!
//! Each measurement runs in its own child process (this binary with `__phase`), so memory
//! figures are that case's alone; network cases run in a private network namespace
//! (`unshare -rn`, only loopback, up) when the machine allows it, so the loopback counters
//! count only the nodes' traffic. Nothing is sent beyond 127.0.0.1.

#![allow(clippy::print_stdout)] // a command-line tool: its table goes to stdout

#[allow(dead_code)] // the harness uses part of the benchmarks' workload module
#[path = "../../engine/benches/common/mod.rs"]
mod common;
mod measure;
mod nodes;
mod raw;
mod repo;
mod spans;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use reflow::Role;
use serde_json::{json, Value};

use measure::{child, percentile, spread};
use nodes::{Members, Topology};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "Reflow, raw Automerge and automerge-repo side by side"
)]
struct Cli {
    /// record, open, join, catch-up, live, conflict-merge, memory, many, all, or quick (the CI
    /// tier); several separated by commas (e.g. open,join) share the ledgers they build.
    scenario: String,
    /// Ledger sizes in events, comma-separated (default 1000,10000,100000; quick: 1000).
    #[arg(long, value_delimiter = ',')]
    events: Vec<usize>,
    /// Runs per figure (default 3; quick: 2).
    #[arg(long)]
    runs: Option<usize>,
    /// Write every figure and sample as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Live and many: node counts (default live 2,4,8; many 16,64,128).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<usize>,
    /// Many: seed of the sparse topology (default 0x5eed).
    #[arg(long)]
    seed: Option<u64>,
    /// Live: events measured per run (default 100; quick: 20).
    #[arg(long)]
    live_events: Option<usize>,
    /// Conflict merge: conflicting transfers each of the 4 nodes writes offline (default 50).
    #[arg(long)]
    conflicts: Option<usize>,
    /// Leave out automerge-repo (no Node.js needed).
    #[arg(long)]
    no_repo: bool,
}

/// Live events written before the measured ones.
const WARMUP: usize = 5;

/// Many: links each node makes beyond its join (a mean degree of about 4).
const MANY_EXTRA: usize = 1;

/// Many: the rounds of one case, by how many nodes write in turn.
const MANY_WRITERS: [usize; 2] = [1, 8];

/// One figure of one contestant: its samples and what else was measured.
#[derive(Debug, Clone)]
struct Row {
    scenario: String,
    case: String,
    events: usize,
    contestant: &'static str,
    /// Seconds: one per run (or, for live, one per event).
    samples: Vec<f64>,
    /// Whether samples are per-event latencies (shown as p50 / p99 / max).
    latency: bool,
    /// Bytes on the wire (median over runs; per event for live).
    bytes: Option<f64>,
    /// Memory: resident set per node, bytes.
    rss: Option<f64>,
}

impl Row {
    /// The figure ratios are taken of: the median (live: the p50).
    fn median(&self) -> f64 {
        if self.latency {
            percentile(&self.samples, 50.0)
        } else {
            spread(&self.samples).1
        }
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn samples(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().map(f).collect())
        .unwrap_or_default()
}

fn median_of(v: &[f64]) -> f64 {
    spread(v).1
}

/// Whether children can run in a private network namespace (`unshare -rn`, loopback up).
fn netns_available() -> bool {
    Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Inside a child: run one phase and print its result.
fn run_phase(phase: &str, args: &str) -> Result<()> {
    let a: Value = serde_json::from_str(args)?;
    let dir = PathBuf::from(a["dir"].as_str().unwrap_or_default());
    let num = |k: &str| a[k].as_u64().unwrap_or(0) as usize;
    let read = |name: &str| std::fs::read(dir.join(name)).context(name.to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = match phase {
        "build" => {
            let count = num("count").max(1);
            let members = match a["members"].as_str() {
                Some("live") => Members::Live {
                    count,
                    role: Role::Member,
                },
                Some("many") => Members::Live {
                    count,
                    role: Role::Admin,
                },
                Some("conflict") => Members::Conflict,
                _ => Members::Sync,
            };
            nodes::build(&dir, num("events"), members)
        }
        "reflow-record" => {
            let tmp = tempfile::tempdir()?;
            nodes::record(tmp.path(), num("events"))
        }
        "reflow-open" => nodes::open(&dir, a["compact"].as_bool().unwrap_or(true)),
        // Profiling aid: open the store file at `dir`/reflow.redb as it is (no copy).
        "reflow-open-in-place" => {
            nodes::open_in_place(&dir, a["compact"].as_bool().unwrap_or(false))
        }
        "reflow-join" => runtime.block_on(nodes::sync(&dir, false)),
        "reflow-catch-up" => runtime.block_on(nodes::sync(&dir, true)),
        "reflow-live" => {
            let topology = match a["topology"].as_str() {
                Some("mesh") => Topology::Mesh,
                Some("sparse") => Topology::Sparse {
                    seed: a["seed"].as_u64().unwrap_or(nodes::SEED),
                    extra: num("extra"),
                },
                _ => Topology::Line,
            };
            let writers: Vec<usize> = match a["writers"].as_array() {
                Some(w) => w.iter().map(|v| v.as_u64().unwrap_or(1) as usize).collect(),
                None => vec![1],
            };
            runtime.block_on(nodes::live(
                &dir,
                num("nodes"),
                topology,
                num("events"),
                WARMUP,
                num("count"),
                &writers,
            ))
        }
        "reflow-conflict-merge" => runtime.block_on(nodes::conflict_merge(&dir, num("k"))),
        "reflow-memory" => {
            runtime.block_on(nodes::memory(&dir, a["what"].as_str().unwrap_or_default()))
        }
        "raw-record" => {
            let events = raw::read_events(&dir.join("events.tsv"));
            raw::record(
                &read("prefix.bin")?,
                &events[..num("events").min(events.len())],
            )
        }
        "raw-open" => raw::open(&read("doc.bin")?),
        "raw-join" => raw::sync(&read("doc.bin")?, None),
        "raw-catch-up" => raw::sync(&read("doc.bin")?, Some(&read("prefix.bin")?)),
        "raw-live" => {
            let events = raw::read_events(&dir.join("events.tsv"));
            let n = (WARMUP + num("count")).min(events.len());
            raw::live(
                &read("doc.bin")?,
                &events[..n],
                num("nodes"),
                a["mesh"].as_bool().unwrap_or(false),
                WARMUP,
            )
        }
        "raw-conflict-merge" => {
            let events = raw::read_events(&dir.join("events.tsv"));
            raw::conflict_merge(&read("doc.bin")?, &events, num("k"))
        }
        other => bail!("unknown phase {other}"),
    };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "RESULT {result}")?;
    Ok(())
}

/// The machine, for the report.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({
        "cpu": cpu, "cores": cores, "memory": mem, "rustc": rustc,
        "load_at_start": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

fn load_now() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The harness's plan for one invocation.
struct Plan {
    scenarios: Vec<&'static str>,
    sizes: Vec<usize>,
    runs: usize,
    nodes: Vec<usize>,
    many_nodes: Vec<usize>,
    seed: u64,
    live_events: usize,
    conflicts: usize,
    repo: bool,
    quick: bool,
}

fn plan(cli: &Cli) -> Result<Plan> {
    const ALL: [&str; 8] = [
        "record",
        "open",
        "join",
        "catch-up",
        "live",
        "conflict-merge",
        "memory",
        "many",
    ];
    let quick = cli.scenario == "quick";
    let scenarios: Vec<&'static str> = match cli.scenario.as_str() {
        "all" => ALL.to_vec(),
        "quick" => ALL.iter().copied().filter(|s| *s != "many").collect(),
        // One scenario, or several separated by commas (sharing the ledgers they build).
        list => list
            .split(',')
            .map(|s| match ALL.iter().find(|a| **a == s) {
                Some(a) => Ok(*a),
                None => bail!("unknown scenario {s}: one of {ALL:?}, all, quick"),
            })
            .collect::<Result<_>>()?,
    };
    let sizes = if !cli.events.is_empty() {
        cli.events.clone()
    } else if quick || cli.scenario == "many" {
        vec![1_000]
    } else {
        vec![1_000, 10_000, 100_000]
    };
    Ok(Plan {
        scenarios,
        sizes,
        runs: cli.runs.unwrap_or(if quick { 2 } else { 3 }).max(1),
        nodes: if !cli.nodes.is_empty() {
            cli.nodes.clone()
        } else if quick {
            vec![2, 4]
        } else {
            vec![2, 4, 8]
        },
        many_nodes: if cli.nodes.is_empty() {
            vec![16, 64, 128]
        } else {
            cli.nodes.clone()
        },
        seed: cli.seed.unwrap_or(nodes::SEED),
        live_events: cli.live_events.unwrap_or(if quick { 20 } else { 100 }),
        conflicts: cli.conflicts.unwrap_or(if quick { 10 } else { 50 }),
        repo: !cli.no_repo,
        quick,
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__phase") {
        return run_phase(&args[2], &args[3]);
    }
    let cli = Cli::parse();
    let plan = plan(&cli)?;
    let machine = machine();
    let netns = netns_available();
    eprintln!("reflow-bench on {machine}; private network namespaces: {netns}");
    let repo = if plan.repo {
        Some(repo::Repo::install()?)
    } else {
        None
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut memory: Vec<(usize, Value)> = Vec::new();
    let mut many: Vec<Value> = Vec::new();
    type Builds = BTreeMap<(usize, &'static str, usize), (tempfile::TempDir, Value)>;
    let mut builds: Builds = BTreeMap::new();
    // `count`: member stores beside the admin's (live and many).
    let mut build = |n: usize, members: &'static str, count: usize| -> Result<PathBuf> {
        if let Some((dir, _)) = builds.get(&(n, members, count)) {
            return Ok(dir.path().to_path_buf());
        }
        let dir = tempfile::tempdir()?;
        eprintln!("building {n} events ({members}, {count})");
        let r = child(
            false,
            "build",
            json!({ "dir": dir.path(), "events": n, "members": members, "count": count }),
        )?;
        eprintln!("  {r}");
        let path = dir.path().to_path_buf();
        builds.insert((n, members, count), (dir, r));
        Ok(path)
    };
    let most = |nodes: &[usize]| nodes.iter().copied().max().unwrap_or(2).saturating_sub(1);
    for &n in &plan.sizes {
        for &scenario in &plan.scenarios {
            eprintln!("== {scenario}, {n} events (load {})", load_now());
            match scenario {
                "record" | "open" | "join" | "catch-up" => {
                    let dir = build(n, "sync", 0)?;
                    simple(&mut rows, scenario, n, &dir, &plan, netns, repo.as_ref())?;
                }
                "live" => {
                    let dir = build(n, "live", most(&plan.nodes).max(7))?;
                    for &nodes in &plan.nodes {
                        for mesh in [false, true] {
                            // The quick tier: a 2-node line and a 4-node mesh only.
                            let skip = if plan.quick {
                                mesh != (nodes > 2)
                            } else {
                                mesh && nodes < 3
                            };
                            if skip {
                                continue;
                            }
                            live(&mut rows, n, nodes, mesh, &dir, &plan, netns, repo.as_ref())?;
                        }
                    }
                }
                "conflict-merge" => {
                    let dir = build(n, "conflict", 0)?;
                    conflict(&mut rows, n, &dir, &plan, netns, repo.as_ref())?;
                }
                "memory" => {
                    let dir = build(n, "sync", 0)?;
                    if !dir.join("c").exists() {
                        nodes::copy_dir(&dir.join("a"), &dir.join("c"));
                        child(
                            false,
                            "reflow-open-in-place",
                            json!({"dir": dir.join("c"), "compact": true}),
                        )?;
                    }
                    for what in ["document", "ledger", "replica", "node"] {
                        let r = child(false, "reflow-memory", json!({"dir": dir, "what": what}))?;
                        eprintln!("  {r}");
                        memory.push((n, r));
                    }
                }
                // Once, at the first ledger size: 128 nodes of a 100k ledger do not fit.
                "many" if n != plan.sizes[0] => {
                    eprintln!("  (many runs at {} events only)", plan.sizes[0])
                }
                "many" => {
                    let dir = build(n, "many", most(&plan.many_nodes))?;
                    for &nodes in &plan.many_nodes {
                        many_case(&mut many, n, nodes, &dir, &plan, netns)?;
                    }
                }
                _ => unreachable!("planned scenarios are known"),
            }
        }
    }
    let mut table = table(&rows, &machine, netns);
    if !memory.is_empty() {
        table.push_str(&memory_table(&memory));
    }
    if !many.is_empty() {
        table.push_str(&many_table(&many, plan.seed));
    }
    println!("{table}");
    if let Some(path) = &cli.json {
        let out = json!({
            "machine": machine, "load_at_end": load_now(), "netns": netns,
            "runs": plan.runs,
            "builds": builds.iter().map(|((n, m, c), (_, v))| json!({"events": n, "members": m, "count": c, "build": v})).collect::<Vec<_>>(),
            "memory": memory.iter().map(|(n, v)| json!({"events": n, "figures": v})).collect::<Vec<_>>(),
            "many": many, "seed": plan.seed,
            "rows": rows.iter().map(|r| json!({
                "scenario": r.scenario, "case": r.case, "events": r.events,
                "contestant": r.contestant, "samples_s": r.samples, "latency": r.latency,
                "median_s": r.median(), "bytes": r.bytes, "rss": r.rss,
            })).collect::<Vec<_>>(),
            "table": table,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One line of a live round's span timings: per span, how many, p50 / p99 / max in ms.
fn span_summary(spans: &Value) -> String {
    let Some(spans) = spans.as_object() else {
        return "none".into();
    };
    spans
        .iter()
        .map(|(name, s)| {
            format!(
                "{name} x{} {:.3}/{:.3}/{:.3} ms",
                s["count"],
                f(&s["p50"]) * 1e3,
                f(&s["p99"]) * 1e3,
                f(&s["max"]) * 1e3
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// record, open, join, catch-up: `runs` runs of each contestant.
fn simple(
    rows: &mut Vec<Row>,
    scenario: &'static str,
    n: usize,
    dir: &Path,
    plan: &Plan,
    netns: bool,
    repo: Option<&repo::Repo>,
) -> Result<()> {
    let args = json!({ "dir": dir, "events": n });
    let networked = matches!(scenario, "join" | "catch-up");
    let mut cases: Vec<(String, &'static str, Value)> = Vec::new();
    if scenario == "open" {
        cases.push((
            "snapshot".into(),
            "reflow-open",
            json!({"dir": dir, "compact": true}),
        ));
        cases.push((
            "changes, never compacted".into(),
            "reflow-open",
            json!({"dir": dir, "compact": false}),
        ));
    } else {
        cases.push((String::new(), "", args.clone()));
    }
    for (case, phase, a) in cases {
        let phase = if phase.is_empty() {
            format!("reflow-{scenario}")
        } else {
            phase.into()
        };
        let mut out = Vec::new();
        for run in 0..plan.runs {
            let r = child(networked && netns, &phase, a.clone())?;
            eprintln!("  reflow {case} run {run}: {r}");
            out.push(r);
        }
        rows.push(Row {
            scenario: scenario.into(),
            case,
            events: n,
            contestant: "reflow",
            samples: out.iter().map(|r| f(&r["s"])).collect(),
            latency: false,
            bytes: networked
                .then(|| median_of(&out.iter().map(|r| f(&r["bytes"])).collect::<Vec<_>>())),
            rss: networked
                .then(|| median_of(&out.iter().map(|r| f(&r["rss"]) / 2.0).collect::<Vec<_>>())),
        });
    }
    let mut out = Vec::new();
    for _ in 0..plan.runs {
        out.push(child(false, &format!("raw-{scenario}"), args.clone())?);
    }
    eprintln!("  raw: {:?}", out);
    rows.push(Row {
        scenario: scenario.into(),
        case: String::new(),
        events: n,
        contestant: "raw automerge",
        samples: out.iter().map(|r| f(&r["s"])).collect(),
        latency: false,
        bytes: networked.then(|| f(&out[0]["bytes"])),
        rss: None,
    });
    if let Some(repo) = repo {
        let a = match scenario {
            "record" => {
                json!({"genesis": dir.join("prefix.bin"), "events": dir.join("events.tsv"), "n": n})
            }
            _ => {
                json!({"doc": dir.join("doc.bin"), "prefix": dir.join("prefix.bin"), "runs": plan.runs})
            }
        };
        let mut runs: Vec<Value> = Vec::new();
        if scenario == "record" {
            for _ in 0..plan.runs {
                runs.push(repo.run(scenario, &a)?);
            }
        } else {
            runs = repo.run(scenario, &a)?["runs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
        }
        eprintln!("  automerge-repo: {:?}", runs);
        rows.push(Row {
            scenario: scenario.into(),
            case: String::new(),
            events: n,
            contestant: "automerge-repo",
            samples: runs.iter().map(|r| f(&r["s"])).collect(),
            latency: false,
            bytes: networked
                .then(|| median_of(&runs.iter().map(|r| f(&r["bytes"])).collect::<Vec<_>>())),
            rss: Some(median_of(
                &runs
                    .iter()
                    .map(|r| {
                        let rss = samples(&r["rss"]);
                        if rss.is_empty() {
                            f(&r["rss"])
                        } else {
                            rss.iter().sum::<f64>() / rss.len() as f64
                        }
                    })
                    .collect::<Vec<_>>(),
            )),
        });
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn live(
    rows: &mut Vec<Row>,
    n: usize,
    nodes: usize,
    mesh: bool,
    dir: &Path,
    plan: &Plan,
    netns: bool,
    repo: Option<&repo::Repo>,
) -> Result<()> {
    let case = format!("{nodes} nodes, {}", if mesh { "mesh" } else { "line" });
    let topology = if mesh { "mesh" } else { "line" };
    let a = json!({ "dir": dir, "events": n, "nodes": nodes, "mesh": mesh, "topology": topology,
                    "count": plan.live_events });
    let mut lat = Vec::new();
    let (mut bytes, mut rss) = (Vec::new(), Vec::new());
    for run in 0..plan.runs {
        let r = child(netns, "reflow-live", a.clone())?;
        let round = &r["rounds"][0];
        eprintln!(
            "  reflow {case} run {run}: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&samples(&round["lat"]), 50.0) * 1e3,
            percentile(&samples(&round["lat"]), 99.0) * 1e3
        );
        eprintln!(
            "  reflow {case} run {run}, the engine's spans of the measured events (all nodes): {}",
            span_summary(&round["spans"])
        );
        lat.extend(samples(&round["lat"]));
        bytes.push(f(&round["bytes_per_event"]));
        rss.push(f(&r["rss_per_node"]));
    }
    rows.push(Row {
        scenario: "live".into(),
        case: case.clone(),
        events: n,
        contestant: "reflow",
        samples: lat,
        latency: true,
        bytes: Some(median_of(&bytes)),
        rss: Some(median_of(&rss)),
    });
    let r = child(false, "raw-live", a.clone())?;
    rows.push(Row {
        scenario: "live".into(),
        case: case.clone(),
        events: n,
        contestant: "raw automerge",
        samples: samples(&r["lat"]),
        latency: true,
        bytes: Some(f(&r["bytes_per_event"])),
        rss: None,
    });
    if let Some(repo) = repo {
        let mut lat = Vec::new();
        let (mut bytes, mut rss) = (Vec::new(), Vec::new());
        for _ in 0..plan.runs {
            let r = repo.run(
                "live",
                &json!({"doc": dir.join("doc.bin"), "events": dir.join("events.tsv"), "nodes": nodes, "mesh": mesh, "warmup": WARMUP, "count": plan.live_events}),
            )?;
            lat.extend(samples(&r["lat"]));
            bytes.push(f(&r["bytes"]) / plan.live_events.max(1) as f64);
            let per = samples(&r["rss"]);
            rss.push(per.iter().sum::<f64>() / per.len().max(1) as f64);
        }
        eprintln!(
            "  automerge-repo {case}: p50 {:.2} ms",
            percentile(&lat, 50.0) * 1e3
        );
        rows.push(Row {
            scenario: "live".into(),
            case,
            events: n,
            contestant: "automerge-repo",
            samples: lat,
            latency: true,
            bytes: Some(median_of(&bytes)),
            rss: Some(median_of(&rss)),
        });
    }
    Ok(())
}

/// Many: `runs` runs of `nodes` nodes in the seeded sparse topology, each with a round of
/// events written by node 1 and a round written in turn by several nodes (Reflow alone).
fn many_case(
    out: &mut Vec<Value>,
    n: usize,
    nodes: usize,
    dir: &Path,
    plan: &Plan,
    netns: bool,
) -> Result<()> {
    let writers: Vec<usize> = MANY_WRITERS.iter().map(|&w| w.min(nodes)).collect();
    let a = json!({
        "dir": dir, "events": n, "nodes": nodes, "topology": "sparse", "seed": plan.seed,
        "extra": MANY_EXTRA, "count": plan.live_events, "writers": writers,
    });
    let mut runs = Vec::new();
    for run in 0..plan.runs {
        let r = child(netns, "reflow-live", a.clone())?;
        eprintln!(
            "  reflow {nodes} nodes run {run}: {}, setup {:.1} s, peak RSS {}",
            r["shape"],
            f(&r["setup_s"]),
            fmt_bytes(Some(f(&r["hwm"])))
        );
        for round in r["rounds"].as_array().into_iter().flatten() {
            let lat = samples(&round["lat"]);
            eprintln!(
                "    {} writer(s): p50 {:.2} ms, p99 {:.2} ms, {} per event",
                round["writers"],
                percentile(&lat, 50.0) * 1e3,
                percentile(&lat, 99.0) * 1e3,
                fmt_bytes(Some(f(&round["bytes_per_event"])))
            );
        }
        runs.push(r);
    }
    out.push(json!({ "nodes": nodes, "events": n, "runs": runs }));
    Ok(())
}

/// The many table: one line per node count and round.
fn many_table(many: &[Value], seed: u64) -> String {
    let mut out = vec![
        String::new(),
        String::new(),
        format!(
            "Many devices (topology seed {seed:#x}: each node joins through a random earlier node and connects to {MANY_EXTRA} more): latency from the write to the last node notified, over every measured event of every run; wire bytes (UDP payload on loopback) per event, median over runs, in all, per node and per link; CPU time of the process per event and node (user + system, every node's work on the same cores); idle traffic per node after convergence; memory per node and the process's peak RSS; setup (open, join, connect, converge) median:"
        ),
        String::new(),
        "| nodes | links | degree min / mean / max | hops from node 1 / diameter | writers | p50 | p99 | max | wire / event | per node | per link | CPU / event / node | idle / node | memory / node | peak RSS | setup |".into(),
        "|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|".into(),
    ];
    for case in many {
        let runs = case["runs"].as_array().cloned().unwrap_or_default();
        let Some(first) = runs.first() else { continue };
        let shape = &first["shape"];
        let nodes = f(&case["nodes"]);
        let links = f(&shape["links"]);
        let per_run = |k: &str| median_of(&runs.iter().map(|r| f(&r[k])).collect::<Vec<_>>());
        let rounds = first["rounds"].as_array().map_or(0, Vec::len);
        for k in 0..rounds {
            let lat: Vec<f64> = runs
                .iter()
                .flat_map(|r| samples(&r["rounds"][k]["lat"]))
                .collect();
            let of_round = |key: &str| {
                median_of(
                    &runs
                        .iter()
                        .map(|r| f(&r["rounds"][k][key]))
                        .collect::<Vec<_>>(),
                )
            };
            let bytes = of_round("bytes_per_event");
            let writers = match first["rounds"][k]["writers"].as_u64() {
                Some(1) => "node 1".to_string(),
                Some(w) => format!("{w} in turn"),
                None => "-".into(),
            };
            out.push(format!(
                "| {nodes} | {links} | {} / {:.1} / {} | {} / {} | {writers} | {} | {} | {} | {} | {} | {} | {} | {}/s | {} | {} | {} |",
                shape["degree_min"],
                f(&shape["degree_mean"]),
                shape["degree_max"],
                shape["hops_from_first"],
                shape["diameter"],
                fmt_s(percentile(&lat, 50.0)),
                fmt_s(percentile(&lat, 99.0)),
                fmt_s(spread(&lat).2),
                fmt_bytes(Some(bytes)),
                fmt_bytes(Some(bytes / nodes)),
                fmt_bytes(Some(bytes / links)),
                fmt_s(of_round("cpu_per_event_s") / nodes),
                fmt_bytes(Some(per_run("idle_bytes_per_s") / nodes)),
                fmt_bytes(Some(per_run("rss_per_node"))),
                fmt_bytes(Some(
                    runs.iter().map(|r| f(&r["hwm"])).fold(0.0, f64::max)
                )),
                fmt_s(per_run("setup_s")),
            ));
        }
    }
    out.join("\n")
}

fn conflict(
    rows: &mut Vec<Row>,
    n: usize,
    dir: &Path,
    plan: &Plan,
    netns: bool,
    repo: Option<&repo::Repo>,
) -> Result<()> {
    let k = plan.conflicts;
    let case = format!("4 nodes x {k} offline transfers");
    let a = json!({ "dir": dir, "k": k });
    let mut out = Vec::new();
    for run in 0..plan.runs {
        let r = child(netns, "reflow-conflict-merge", a.clone())?;
        eprintln!("  reflow run {run}: {r}");
        out.push(r);
    }
    rows.push(Row {
        scenario: "conflict-merge".into(),
        case: case.clone(),
        events: n,
        contestant: "reflow",
        samples: out.iter().map(|r| f(&r["s"])).collect(),
        latency: false,
        bytes: Some(median_of(
            &out.iter().map(|r| f(&r["bytes"])).collect::<Vec<_>>(),
        )),
        rss: None,
    });
    let mut out = Vec::new();
    for _ in 0..plan.runs {
        out.push(child(false, "raw-conflict-merge", a.clone())?);
    }
    rows.push(Row {
        scenario: "conflict-merge".into(),
        case: case.clone(),
        events: n,
        contestant: "raw automerge",
        samples: out.iter().map(|r| f(&r["s"])).collect(),
        latency: false,
        bytes: Some(f(&out[0]["bytes"])),
        rss: None,
    });
    if let Some(repo) = repo {
        let mut out = Vec::new();
        for _ in 0..plan.runs {
            out.push(repo.run(
                "conflict-merge",
                &json!({"doc": dir.join("doc.bin"), "events": dir.join("events.tsv"), "k": k}),
            )?);
        }
        rows.push(Row {
            scenario: "conflict-merge".into(),
            case,
            events: n,
            contestant: "automerge-repo",
            samples: out.iter().map(|r| f(&r["s"])).collect(),
            latency: false,
            bytes: Some(median_of(
                &out.iter().map(|r| f(&r["bytes"])).collect::<Vec<_>>(),
            )),
            rss: None,
        });
    }
    Ok(())
}

fn fmt_s(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else if s < 0.01 {
        format!("{:.2} ms", s * 1e3)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn fmt_bytes(b: Option<f64>) -> String {
    match b {
        Some(b) if !b.is_nan() && b >= 1e6 => format!("{:.2} MB", b / 1e6),
        Some(b) if !b.is_nan() && b >= 1e4 => format!("{:.1} kB", b / 1e3),
        Some(b) if !b.is_nan() => format!("{b:.0} B"),
        _ => "-".into(),
    }
}

/// The table: one line per contestant and case, ratios on Reflow's lines.
fn table(rows: &[Row], machine: &Value, netns: bool) -> String {
    let mut out = Vec::new();
    out.push(format!(
        "Machine: {} cores ({}), {}, {} build; load average at start {}, at end {}. Wire bytes: {}.",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or_default(),
        machine["rustc"].as_str().unwrap_or_default(),
        machine["profile"].as_str().unwrap_or_default(),
        machine["load_at_start"].as_str().unwrap_or_default(),
        load_now(),
        if netns {
            "Reflow: UDP payload on the loopback of a private network namespace; automerge-repo: TCP payload of its websockets; raw: encoded sync messages"
        } else {
            "Reflow: UDP payload on the shared loopback (may include other traffic); automerge-repo: TCP payload of its websockets; raw: encoded sync messages"
        }
    ));
    if rows.is_empty() {
        return out.join("\n");
    }
    out.push(String::new());
    out.push("| scenario | events | case | contestant | min / p50 | median / p99 | max | wire | memory / node | reflow / raw | reflow / repo |".into());
    out.push("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|".into());
    for r in rows {
        let (a, b, c) = if r.latency {
            let (_, _, max) = spread(&r.samples);
            (
                percentile(&r.samples, 50.0),
                percentile(&r.samples, 99.0),
                max,
            )
        } else {
            spread(&r.samples)
        };
        let peer = |who: &str| {
            rows.iter()
                .find(|o| {
                    o.contestant == who
                        && o.scenario == r.scenario
                        && o.events == r.events
                        && (o.case == r.case || o.case.is_empty())
                })
                .map(Row::median)
        };
        let ratio = |who: &str| match (r.contestant, peer(who)) {
            ("reflow", Some(m)) if m > 0.0 => format!("{:.2}x", r.median() / m),
            _ => String::new(),
        };
        let what = if r.latency {
            ["p50 ", "p99 "]
        } else {
            ["", ""]
        };
        out.push(format!(
            "| {} | {} | {} | {} | {}{} | {}{} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.events,
            r.case,
            r.contestant,
            what[0],
            fmt_s(a),
            what[1],
            fmt_s(b),
            fmt_s(c),
            fmt_bytes(r.bytes),
            fmt_bytes(r.rss),
            ratio("raw automerge"),
            ratio("automerge-repo"),
        ));
    }
    out.join("\n")
}

/// Where a node's memory goes: one line per ledger size.
fn memory_table(memory: &[(usize, Value)]) -> String {
    let mut out = vec![
        String::new(),
        String::new(),
        "Memory of one opened ledger (RSS after minus before, one process each; the store compacted first): bare Automerge document / `Ledger` (document + views) / `DurableReplica` (+ membership, signatures, store) / `Node` (+ endpoint, tasks); saved document and stored views sizes:".into(),
        String::new(),
        "| events | document | ledger | replica | node | ledger / document | node / document | saved document | stored views |".into(),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|".into(),
    ];
    let mut sizes: Vec<usize> = memory.iter().map(|(n, _)| *n).collect();
    sizes.dedup();
    for n in sizes {
        let get = |what: &str| {
            memory
                .iter()
                .find(|(m, v)| *m == n && v["what"] == what)
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null)
        };
        let doc = f(&get("document")["rss"]);
        out.push(format!(
            "| {n} | {} | {} | {} | {} | {:.2}x | {:.2}x | {} | {} |",
            fmt_bytes(Some(doc)),
            fmt_bytes(Some(f(&get("ledger")["rss"]))),
            fmt_bytes(Some(f(&get("replica")["rss"]))),
            fmt_bytes(Some(f(&get("node")["rss"]))),
            f(&get("ledger")["rss"]) / doc,
            f(&get("node")["rss"]) / doc,
            fmt_bytes(Some(f(&get("document")["doc_bytes"]))),
            fmt_bytes(Some(f(&get("ledger")["views_bytes"]))),
        ));
    }
    out.join("\n")
}
