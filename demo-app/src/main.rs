//! `reflow`: the command line, local web UI and demo of the Reflow ledger.
//!
//! A thin layer over the engine's public API (`reflow::Node`). Exit codes: 0 success,
//! 1 error (a rejected event, an unknown id, a network failure), 2 wrong arguments,
//! 3 the data directory or its store cannot be opened. See docs/cli.md.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod app;
mod demo;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use reflow::{
    Agent, EconomicEvent, EventFilter, Id, Node, ResourceFilter, ResourceSpecification,
    SpatialThing, Unit,
};
use serde::Serialize;

use crate::app::{EventInput, StoreError};

/// Reflow: a local-first ValueFlows ledger for repair cafés, markets and circular economies.
#[derive(Debug, Parser)]
#[command(name = "reflow", version, about, propagate_version = true)]
struct Cli {
    /// Data directory of this device (store, key, networks).
    /// Default: $XDG_DATA_HOME/reflow or ~/.local/share/reflow.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// The network to use (its id); default: the only network, or the one created first.
    #[arg(long, global = true)]
    network: Option<String>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest subcommand's arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Create the data directory and this device's key; print the device id.
    Init,
    /// Networks this device belongs to.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// People and organisations.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Places (with optional coordinates, for the map).
    #[command(subcommand)]
    Location(LocationCmd),
    /// Resource specifications (kinds of resources).
    #[command(subcommand)]
    Spec(SpecCmd),
    /// Units of measure.
    #[command(subcommand)]
    Unit(UnitCmd),
    /// Economic events: record, list, correct.
    #[command(subcommand)]
    Event(EventCmd),
    /// Resources and their quantities.
    Inventory(ReadOpts),
    /// Resources.
    #[command(subcommand)]
    Resource(ResourceCmd),
    /// Where a resource came from (events, processes, resources), newest first.
    Trace(IdArg),
    /// Where a resource went.
    Track(IdArg),
    /// Conflicts between replicas (double sales, overdraws) to resolve with corrections.
    Conflicts(ReadOpts),
    /// Peers of the network known to this device.
    Peers(ReadOpts),
    /// Run the node and the web UI on 127.0.0.1:<port>.
    Serve(ServeArgs),
    /// Start three local nodes (repair café, market stall, volunteer laptop), seed and serve them.
    Demo(demo::DemoArgs),
}

#[derive(Debug, Args)]
struct ReadOpts {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct IdArg {
    /// The resource id.
    id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum NetworkCmd {
    /// Create a network; this device is its admin, acting for a new agent.
    Create {
        /// The network's name.
        name: String,
        /// Id of the agent this device acts for.
        #[arg(long, default_value = "me")]
        agent_id: String,
        /// That agent's name.
        #[arg(long = "as", default_value = "Me")]
        agent_name: String,
        /// The agent is an organisation (default: a person).
        #[arg(long)]
        org: bool,
    },
    /// List the networks of this device.
    List(ReadOpts),
    /// List the members (devices) of the network.
    Members(ReadOpts),
}

#[derive(Debug, Subcommand)]
enum AgentCmd {
    /// Add a person or organisation.
    Add {
        /// Id (short, unique).
        id: String,
        /// Name.
        name: String,
        /// An organisation (default: a person).
        #[arg(long)]
        org: bool,
    },
    /// List agents.
    List(ReadOpts),
}

#[derive(Debug, Subcommand)]
enum LocationCmd {
    /// Add a place.
    Add {
        /// Id.
        id: String,
        /// Name.
        name: String,
        /// Latitude (WGS84 degrees).
        #[arg(long, requires = "long", allow_hyphen_values = true)]
        lat: Option<f64>,
        /// Longitude (WGS84 degrees).
        #[arg(long, requires = "lat", allow_hyphen_values = true)]
        long: Option<f64>,
    },
    /// List places.
    List(ReadOpts),
}

#[derive(Debug, Subcommand)]
enum SpecCmd {
    /// Add a resource specification.
    Add {
        /// Id.
        id: String,
        /// Name.
        name: String,
    },
    /// List resource specifications.
    List(ReadOpts),
}

#[derive(Debug, Subcommand)]
enum UnitCmd {
    /// Add a unit.
    Add {
        /// Id (used in quantities: "5 kg").
        id: String,
        /// Label.
        label: String,
        /// Symbol (default: the id).
        #[arg(long)]
        symbol: Option<String>,
    },
    /// List units.
    List(ReadOpts),
}

#[derive(Debug, Subcommand)]
enum EventCmd {
    /// Record an economic event (any ValueFlows action).
    Record(EventInput),
    /// List events, oldest first.
    List {
        /// Only events on this resource.
        #[arg(long)]
        resource: Option<String>,
        /// Also events that were corrected.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record an event correcting another: fields not given are copied from the original.
    Correct {
        /// The event to correct.
        event: String,
        #[command(flatten)]
        input: EventInput,
    },
}

#[derive(Debug, Subcommand)]
enum ResourceCmd {
    /// Show one resource.
    Show(IdArg),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TCP port of the web UI on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Talk to peers on loopback only (no relays, no port mapping).
    #[arg(long)]
    local_only: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reflow: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reflow: error: {}", one_line(&e));
            if e.downcast_ref::<StoreError>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn data_dir(cli: &Cli) -> Result<PathBuf> {
    if let Some(d) = &cli.data_dir {
        return Ok(d.clone());
    }
    if let Some(x) = std::env::var_os("REFLOW_DATA_DIR").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("reflow"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(h).join(".local/share/reflow"));
    }
    bail!("no data directory: pass --data-dir or set XDG_DATA_HOME")
}

/// Print `value` as JSON.
fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let dir = data_dir(&cli)?;
    if let Command::Demo(args) = &cli.command {
        return demo::run(args).await;
    }
    let public = matches!(&cli.command, Command::Serve(a) if !a.local_only);
    let node = Arc::new(app::open_node(&dir, public).await?);
    let result = command(&cli, &dir, &node).await;
    if let Ok(node) = Arc::try_unwrap(node) {
        node.close().await.context("closing the node")?;
    }
    result
}

async fn command(cli: &Cli, dir: &std::path::Path, node: &Arc<Node>) -> Result<()> {
    let net = || app::pick_network(node, dir, cli.network.as_deref());
    match &cli.command {
        Command::Init => {
            println!("data directory: {}", dir.display());
            println!("device: {}", node.device());
            if node.networks().is_empty() {
                println!("next: reflow network create <name> --as <your name>");
            }
        }
        Command::Network(NetworkCmd::Create {
            name,
            agent_id,
            agent_name,
            org,
        }) => {
            let agent = if *org {
                Agent::organization(agent_id.as_str(), agent_name.as_str())
            } else {
                Agent::person(agent_id.as_str(), agent_name.as_str())
            };
            let id = node.create_network(name, agent)?;
            app::remember_network(dir, id)?;
            println!("{id}");
        }
        Command::Network(NetworkCmd::List(o)) => {
            let mut rows = Vec::new();
            for id in node.networks() {
                let name = node.read(id, |r| r.ledger().network_name())?;
                rows.push(serde_json::json!({"id": id, "name": name}));
            }
            if o.json {
                print_json(&rows)?;
            } else {
                for r in rows {
                    println!(
                        "{}  {}",
                        r["id"].as_str().unwrap_or(""),
                        r["name"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Command::Network(NetworkCmd::Members(o)) => {
            let members = node.read(net()?, |r| r.members())?;
            if o.json {
                print_json(&members)?;
            } else {
                for m in members {
                    println!("{}  {:<8} {}", m.device, m.role.to_string(), m.agent);
                }
            }
        }
        Command::Agent(AgentCmd::Add { id, name, org }) => {
            let a = if *org {
                Agent::organization(id.as_str(), name.as_str())
            } else {
                Agent::person(id.as_str(), name.as_str())
            };
            println!("{}", node.write(net()?, |l| l.create(a))?);
        }
        Command::Agent(AgentCmd::List(o)) => {
            let list = node.read(net()?, |r| r.ledger().list::<Agent>())?;
            list_out(o.json, &list, |a| format!("{}  {}", a.id, a.name))?;
        }
        Command::Location(LocationCmd::Add {
            id,
            name,
            lat,
            long,
        }) => {
            let ll = lat.zip(*long);
            let s = SpatialThing::new(id.as_str(), name.as_str(), ll);
            println!("{}", node.write(net()?, |l| l.create(s))?);
        }
        Command::Location(LocationCmd::List(o)) => {
            let list = node.read(net()?, |r| r.ledger().list::<SpatialThing>())?;
            list_out(o.json, &list, |s| match (s.lat, s.long) {
                (Some(a), Some(b)) => format!("{}  {}  ({a}, {b})", s.id, s.name),
                _ => format!("{}  {}", s.id, s.name),
            })?;
        }
        Command::Spec(SpecCmd::Add { id, name }) => {
            let s = ResourceSpecification::new(id.as_str(), name.as_str());
            println!("{}", node.write(net()?, |l| l.create(s))?);
        }
        Command::Spec(SpecCmd::List(o)) => {
            let list = node.read(net()?, |r| r.ledger().list::<ResourceSpecification>())?;
            list_out(o.json, &list, |s| format!("{}  {}", s.id, s.name))?;
        }
        Command::Unit(UnitCmd::Add { id, label, symbol }) => {
            let u = Unit::new(id.as_str(), label.as_str(), symbol.as_deref().unwrap_or(id));
            println!("{}", node.write(net()?, |l| l.create(u))?);
        }
        Command::Unit(UnitCmd::List(o)) => {
            let list = node.read(net()?, |r| r.ledger().list::<Unit>())?;
            list_out(o.json, &list, |u| {
                format!("{}  {}  {}", u.id, u.label, u.symbol)
            })?;
        }
        Command::Event(EventCmd::Record(input)) => {
            let event = input.build(None)?;
            println!("{}", node.record_event(net()?, event)?);
        }
        Command::Event(EventCmd::Correct { event, input }) => {
            let net = net()?;
            let id = Id::from(event.as_str());
            let original = node
                .read(net, |r| r.ledger().event(&id))?
                .ok_or_else(|| anyhow!("no event {event}"))?;
            let new = input.build(Some(original))?;
            println!("{}", node.record_event(net, new)?);
        }
        Command::Event(EventCmd::List {
            resource,
            all,
            json,
        }) => {
            let filter = EventFilter {
                resource: resource.as_deref().map(Id::from),
                include_corrected: *all,
                ..EventFilter::default()
            };
            let events = node.read(net()?, |r| r.ledger().events(&filter))?;
            if *json {
                print_json(&events.iter().map(app::event_json).collect::<Vec<_>>())?;
            } else {
                for e in &events {
                    println!("{}", describe(e));
                }
            }
        }
        Command::Inventory(o) => {
            let list = node.read(net()?, |r| r.ledger().inventory(&ResourceFilter::default()))?;
            list_out(o.json, &list, |r| {
                format!(
                    "{:<16} {:<24} {:>10}  custodian {}  at {}",
                    r.id,
                    r.name,
                    r.onhand_quantity.to_string(),
                    opt(&r.custodian),
                    opt(&r.current_location)
                )
            })?;
        }
        Command::Resource(ResourceCmd::Show(a)) => {
            let id = Id::from(a.id.as_str());
            let r = node
                .read(net()?, |r| r.ledger().resource(&id))?
                .ok_or_else(|| anyhow!("no resource {}", a.id))?;
            if a.json {
                print_json(&r)?;
            } else {
                println!("{}  {}", r.id, r.name);
                println!("  accounting  {}", r.accounting_quantity);
                println!("  onhand      {}", r.onhand_quantity);
                println!("  custodian   {}", opt(&r.custodian));
                println!("  accountable {}", opt(&r.primary_accountable));
                println!("  location    {}", opt(&r.current_location));
                println!("  conforms to {}", opt(&r.conforms_to));
                if let Some(s) = &r.state {
                    println!("  state       {s}");
                }
            }
        }
        Command::Trace(a) | Command::Track(a) => {
            let id = Id::from(a.id.as_str());
            let trace = matches!(cli.command, Command::Trace(_));
            let t = node.read(net()?, |r| {
                if trace {
                    r.ledger().trace(&id)
                } else {
                    r.ledger().track(&id)
                }
            })??;
            if a.json {
                print_json(&t)?;
            } else {
                for step in &t.steps {
                    println!("{}{}", "  ".repeat(step.depth), app::trace_node(&step.node));
                }
            }
        }
        Command::Conflicts(o) => {
            let list = node.read(net()?, |r| r.ledger().conflicts())?;
            if o.json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!("no conflicts");
            } else {
                for c in list {
                    println!("{}", serde_json::to_string(&c)?);
                }
            }
        }
        Command::Peers(o) => {
            let peers = node.peers(net()?)?;
            let rows: Vec<_> = peers.iter().map(app::peer_json).collect();
            if o.json {
                print_json(&rows)?;
            } else if rows.is_empty() {
                println!("no peers known (peers are seen while `reflow serve` runs)");
            } else {
                for p in &peers {
                    let state = if p.connected { "connected" } else { "offline" };
                    println!("{}  {state}", p.device);
                }
            }
        }
        Command::Serve(args) => {
            let net = net()?;
            println!("device {}", node.device());
            let (addr, server) = web::start(node.clone(), net, args.port).await?;
            println!("serving http://{addr}/  (Ctrl-C to stop)");
            tokio::select! {
                r = server => r??,
                r = tokio::signal::ctrl_c() => r?,
            }
        }
        Command::Demo(_) => unreachable!("handled before opening a node"),
    }
    Ok(())
}

fn opt(id: &Option<Id>) -> String {
    id.as_ref().map_or("-".to_string(), Id::to_string)
}

fn describe(e: &EconomicEvent) -> String {
    let q = e
        .resource_quantity
        .as_ref()
        .or(e.effort_quantity.as_ref())
        .map_or(String::new(), |m| format!(" {m}"));
    let fixes = e
        .corrects
        .as_ref()
        .map_or(String::new(), |c| format!(" (corrects {c})"));
    format!(
        "{}  {}{q} {}  {} -> {}{fixes}",
        e.id,
        e.action,
        opt(&e
            .resource_inventoried_as
            .clone()
            .or(e.resource_conforms_to.clone())),
        opt(&e.provider),
        opt(&e.receiver)
    )
}

fn list_out<T: Serialize>(json: bool, list: &[T], line: impl Fn(&T) -> String) -> Result<()> {
    if json {
        print_json(&list)
    } else {
        for x in list {
            println!("{}", line(x));
        }
        Ok(())
    }
}
