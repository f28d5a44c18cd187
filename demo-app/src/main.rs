//! `reflow`: the command line, local web UI and demo of the Reflow ledger.
//!
//! A thin layer over the engine's public API (`reflow::Node`). Exit codes: 0 success,
//! 1 error (a rejected event, an unknown id, a network failure), 2 wrong arguments,
//! 3 the data directory or its store cannot be opened. See docs/cli.md.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod app;
mod demo;
mod planning_cli;
mod sync;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use reflow::node::{Invitee, Ticket};
use reflow::{
    Action, Agent, DeviceId, EconomicEvent, EventFilter, Id, Intent, Measure, NetworkId, Node,
    Process, ProcessSpecification, Proposal, ProposalStatus, ResourceFilter, ResourceSpecification,
    Role, SpatialThing, Unit,
};
use reflow::{NetError, NetworkStatus};
use serde::Serialize;

use crate::app::{EventInput, StoreError};
use reflow_app::{jsonld, progress};

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
    Init(ReadOpts),
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
    /// Where a resource came from (events, processes, resources), newest first; with
    /// `--export FILE`, write a verifiable trace bundle (docs/interop.md).
    Trace(TraceArgs),
    /// Where a resource went.
    Track(IdArg),
    /// Conflicts between replicas (double sales, overdraws) to resolve with corrections.
    Conflicts(ReadOpts),
    /// The network's rules (docs/rules.md): show them with what they refused and flagged,
    /// publish a rule set (admins), or test a draft against an event.
    #[command(subcommand)]
    Rules(RulesCmd),
    /// Processes (a repair, a sorting run) with their inputs and outputs.
    #[command(subcommand)]
    Process(ProcessCmd),
    /// Intents: offers (with a provider) and requests (with a receiver) at a market.
    #[command(subcommand)]
    Intent(IntentCmd),
    /// Proposals: published offers or requests made of intents; accept one.
    #[command(subcommand)]
    Proposal(ProposalCmd),
    /// Commitments and their fulfilment (open, partly fulfilled, fulfilled, overdue).
    #[command(subcommand)]
    Commitment(planning_cli::CommitmentCmd),
    /// Agreements: what each side committed and how far it is fulfilled.
    #[command(subcommand)]
    Agreement(planning_cli::AgreementCmd),
    /// Claims and their settlement.
    #[command(subcommand)]
    Claim(planning_cli::ClaimCmd),
    /// Recipes, and planning a process (a repair) from one.
    #[command(subcommand)]
    Recipe(planning_cli::RecipeCmd),
    /// Agent relationships and their roles (a volunteer of a café, a stall of a market).
    #[command(subcommand)]
    Relationship(planning_cli::RelationshipCmd),
    /// Totals of events by action, specification, agent, place and period (--json, --csv).
    Flows(planning_cli::FlowsArgs),
    /// Peers of the network known to this device.
    Peers(ReadOpts),
    /// Run the node in the foreground, syncing with peers, with live status lines; Ctrl-C or
    /// SIGTERM stops it.
    Sync(SyncArgs),
    /// Run the node and the web UI on 127.0.0.1:<port>; prints the UI's URL, which carries a
    /// key made at each launch (the UI refuses requests without it).
    Serve(ServeArgs),
    /// Write the network's ledger as ValueFlows JSON-LD (to stdout or --output).
    Export(ExportArgs),
    /// Read ValueFlows JSON-LD (an export, or any ValueFlows file) into the network's ledger,
    /// all or nothing; re-importing a file changes nothing.
    Import(ImportArgs),
    /// Start three local nodes (repair café, market stall, volunteer laptop), seed and serve them.
    Demo(demo::DemoArgs),
    /// Check a trace bundle offline, as anyone (no network, no data directory): signatures,
    /// membership from the network's genesis, and that the events are what the signed changes
    /// wrote. Exits 1 naming what is wrong.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct TraceArgs {
    #[command(flatten)]
    id: IdArg,
    /// Write the trace as a verifiable bundle to this file (docs/interop.md).
    #[arg(long, value_name = "FILE")]
    export: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The trace bundle (written by `reflow trace RESOURCE --export FILE`).
    file: PathBuf,
    /// Print what was verified as JSON.
    #[arg(long)]
    json: bool,
}

/// `reflow verify`: no node is opened.
fn verify_bundle(args: &VerifyArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let t = reflow::interop::bundle::verify(&bytes).context("trace bundle refused")?;
    if args.json {
        return print_json(&t);
    }
    let devices: std::collections::BTreeSet<_> = t.events.iter().map(|e| e.device).collect();
    println!(
        "verified: trace of {} in network {} ({}): {} events signed by {} devices, {} signed changes from the genesis of {}",
        t.resource,
        t.network_name,
        t.network,
        t.events.len(),
        devices.len(),
        t.changes,
        t.creator
    );
    for e in &t.events {
        println!(
            "  {:<14} {}  by {} ({} for {})",
            e.event.action.as_str(),
            e.id,
            e.device,
            e.member.role,
            e.member.agent
        );
    }
    Ok(())
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
enum RulesCmd {
    /// The rule set in force, and the events its rules refused and flagged.
    Show(ReadOpts),
    /// Publish FILE (a rule set's JSON) as the network's next rule-set version (admins only).
    /// FILE may also be a template name: food-market, repair-cafe, collection, time-bank.
    Set {
        /// The rule set file, or a template name.
        file: String,
    },
    /// Try the draft FILE against one event (JSON, as `event list --json` prints it) as if
    /// this device recorded it now; nothing is written.
    Test {
        /// The draft rule set file, or a template name.
        file: String,
        /// The event, as JSON.
        #[arg(long)]
        event: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// A rule set from a file or a template name.
fn rule_set_arg(file: &str) -> Result<reflow::RuleSet> {
    if let Some(t) = reflow::rules::template(file) {
        return Ok(t);
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    Ok(reflow::RuleSet::from_json(&text)?)
}

#[derive(Debug, Subcommand)]
enum NetworkCmd {
    /// Create a network; this device is its admin, acting for a new agent.
    Create {
        /// The network's name.
        name: String,
        #[command(flatten)]
        agent: ActingAgent,
    },
    /// List the networks of this device.
    List(ReadOpts),
    /// List the members (devices) of the network.
    Members(ReadOpts),
    /// Make a ticket to join the network (admins only) and print it.
    Invite(InviteArgs),
    /// Join a network with a ticket: dial the inviter's node (it must be running `reflow sync`
    /// or `reflow serve`), fetch the ledger and store it here.
    Join(JoinArgs),
    /// Remove a device from the network (admins only).
    Remove {
        /// The device id (see `reflow network members`).
        device: String,
    },
}

/// Roles a ticket can grant.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    /// Reads only.
    Observer,
    /// Reads and writes the ledger.
    Member,
    /// Reads, writes, admits and removes members.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Observer => Role::Observer,
            RoleArg::Member => Role::Member,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Debug, Args)]
struct InviteArgs {
    /// The role the newcomer gets.
    #[arg(long, value_enum, default_value = "member")]
    role: RoleArg,
    /// The agent (id) the newcomer acts for; default: an agent the newcomer describes when
    /// joining (`--as`).
    #[arg(long)]
    agent: Option<String>,
    /// How long the ticket is valid: seconds, or a number with s, m, h or d ("30m", "7d").
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    expires: std::time::Duration,
    /// Only this device may use the ticket (a key invite); default: whoever holds the ticket,
    /// once (a one-time bearer invite).
    #[arg(long)]
    device: Option<String>,
    /// Put only loopback addresses in the ticket (for nodes on this machine; no relays).
    #[arg(long)]
    local_only: bool,
    /// Print JSON (the ticket and what it grants).
    #[arg(long)]
    json: bool,
}

/// The ValueFlows agent a device acts for (`network create`, `network join`).
#[derive(Debug, Args)]
struct ActingAgent {
    /// Id of the agent this device acts for.
    #[arg(long, default_value = "me")]
    agent_id: String,
    /// That agent's name.
    #[arg(long = "as", default_value = "Me")]
    agent_name: String,
    /// The agent is an organisation (default: a person).
    #[arg(long)]
    org: bool,
}

impl ActingAgent {
    fn agent(&self) -> Agent {
        if self.org {
            Agent::organization(self.agent_id.as_str(), self.agent_name.as_str())
        } else {
            Agent::person(self.agent_id.as_str(), self.agent_name.as_str())
        }
    }
}

#[derive(Debug, Args)]
struct JoinArgs {
    /// The ticket text (starts with `reflow1`), or `-` to read it from stdin.
    ticket: String,
    /// The agent this device acts for, if the ticket does not name one.
    #[command(flatten)]
    agent: ActingAgent,
    /// Talk on loopback only (no relays, no port mapping).
    #[arg(long)]
    local_only: bool,
}

#[derive(Debug, Subcommand)]
enum ProcessCmd {
    /// Create a process.
    Create {
        /// Id.
        id: String,
        /// Name ("Fix Ana's brakes").
        name: String,
        /// The process specification it follows (see `reflow process spec-add`).
        #[arg(long)]
        based_on: Option<String>,
        /// Free text.
        #[arg(long)]
        note: Option<String>,
    },
    /// Add a process specification (a kind of process: "repair").
    SpecAdd {
        /// Id.
        id: String,
        /// Name.
        name: String,
    },
    /// List processes.
    List(ReadOpts),
    /// Show a process with its input and output events.
    Show(IdArg),
    /// Mark a process finished.
    Finish {
        /// The process id.
        id: String,
    },
}

// Parsed once per run, like `Command`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum IntentCmd {
    /// Publish an offer (--provider) or a request (--receiver).
    Add(IntentInput),
    /// List intents.
    List {
        /// Only offers (intents with a provider).
        #[arg(long, conflicts_with = "requests")]
        offers: bool,
        /// Only requests (intents with a receiver and no provider).
        #[arg(long)]
        requests: bool,
        /// Also finished ones.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mark an intent finished (taken or withdrawn).
    Finish {
        /// The intent id.
        id: String,
    },
}

#[derive(Debug, Args)]
struct IntentInput {
    /// Id.
    id: String,
    /// The action offered or requested (transfer, service, work, ...).
    #[arg(long)]
    action: String,
    /// The agent offering (makes it an offer).
    #[arg(long, required_unless_present = "receiver")]
    provider: Option<String>,
    /// The agent requesting (makes it a request).
    #[arg(long)]
    receiver: Option<String>,
    /// The kind of resource.
    #[arg(long)]
    conforms_to: Option<String>,
    /// A specific resource.
    #[arg(long)]
    resource: Option<String>,
    /// Quantity with its unit id: "5 kg".
    #[arg(long)]
    quantity: Option<String>,
    /// Effort with its unit id: "2 hour".
    #[arg(long)]
    effort: Option<String>,
    /// Where.
    #[arg(long)]
    at_location: Option<String>,
    /// Due date (ISO 8601).
    #[arg(long)]
    due: Option<String>,
    /// Free text.
    #[arg(long)]
    note: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ProposalCmd {
    /// Publish a proposal made of intents.
    Create {
        /// Id.
        id: String,
        /// Name ("Apple jam for repairs").
        name: String,
        /// An intent it publishes (repeat for several).
        #[arg(long = "intent", required = true)]
        intents: Vec<String>,
        /// An intent it asks in return (the price; repeat for several).
        #[arg(long = "reciprocal")]
        reciprocal: Vec<String>,
        /// All intents must be taken together.
        #[arg(long)]
        unit_based: bool,
        /// VF's purpose: offer or request (checked against the intents' provider/receiver).
        #[arg(long, value_enum)]
        purpose: Option<PurposeArg>,
        /// Where it is valid.
        #[arg(long)]
        location: Option<String>,
        /// Free text.
        #[arg(long)]
        note: Option<String>,
    },
    /// List proposals with their intents.
    List(ReadOpts),
    /// Show one proposal with its intents.
    Show(IdArg),
    /// Accept a proposal: an agreement with commitments both ways, in one change.
    Accept {
        /// The proposal id.
        id: String,
        /// The agent accepting (default: the agent this device acts for).
        #[arg(long)]
        agent: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a proposal's status.
    Status {
        /// The proposal id.
        id: String,
        /// The new status.
        #[arg(value_enum)]
        status: StatusArg,
    },
}

/// Proposal purposes (VF's `offer`, `request`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PurposeArg {
    /// Something is offered.
    Offer,
    /// Something is asked for.
    Request,
}

/// Proposal statuses.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StatusArg {
    /// Open for responses.
    Open,
    /// Accepted.
    Accepted,
    /// Withdrawn.
    Withdrawn,
}

#[derive(Debug, Args)]
struct SyncArgs {
    /// Talk to peers on loopback only (no relays, no port mapping, no local discovery).
    #[arg(long)]
    local_only: bool,
    /// Print status lines as JSON objects, one a line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The JSON-LD file (`-`: stdin).
    file: PathBuf,
    /// Create the agents, units, specifications, places and resources the file refers to
    /// but does not define (otherwise they are refused, named).
    #[arg(long)]
    create_missing: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
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
    if let Command::Verify(args) = &cli.command {
        return verify_bundle(args);
    }
    let dir = data_dir(&cli)?;
    if let Command::Demo(args) = &cli.command {
        return demo::run(args).await;
    }
    let config = match &cli.command {
        Command::Serve(ServeArgs { local_only, .. })
        | Command::Sync(SyncArgs { local_only, .. }) => {
            let mut c = app::node_config(&dir, !local_only);
            c.reconnect = Some(Default::default());
            c
        }
        Command::Network(NetworkCmd::Invite(InviteArgs { local_only, .. }))
        | Command::Network(NetworkCmd::Join(JoinArgs { local_only, .. })) => {
            app::node_config(&dir, !local_only)
        }
        _ => app::node_config(&dir, false),
    };
    let node = Arc::new(app::open_node_with(&dir, config).await?);
    let result = command(&cli, &dir, &node).await;
    if let Ok(node) = Arc::try_unwrap(node) {
        node.close().await.context("closing the node")?;
    }
    result
}

async fn command(cli: &Cli, dir: &std::path::Path, node: &Arc<Node>) -> Result<()> {
    let net = || app::pick_network(node, dir, cli.network.as_deref());
    match &cli.command {
        Command::Init(o) => {
            if o.json {
                print_json(&serde_json::json!({
                    "dataDir": dir,
                    "device": node.device().to_string(),
                    "networks": node.networks().iter().map(ToString::to_string).collect::<Vec<_>>(),
                }))?;
            } else {
                println!("data directory: {}", dir.display());
                println!("device: {}", node.device());
                if node.networks().is_empty() {
                    println!("next: reflow network create <name> --as <your name>");
                }
            }
        }
        Command::Network(NetworkCmd::Create { name, agent }) => {
            let id = node.create_network(name, agent.agent())?;
            app::remember_network(dir, id)?;
            println!("{id}");
        }
        Command::Network(NetworkCmd::List(o)) => {
            let mut rows = Vec::new();
            for id in node.networks() {
                // A network whose replica cannot be opened is listed with its reason.
                rows.push(match node.network_status(id)? {
                    NetworkStatus::Available => {
                        let name = node.read(id, |r| r.ledger().network_name())?;
                        serde_json::json!({"id": id, "name": name, "status": "available"})
                    }
                    NetworkStatus::Unavailable { kind, reason } => serde_json::json!({
                        "id": id,
                        "name": null,
                        "status": "unavailable",
                        "kind": kind.to_string(),
                        "reason": reason,
                    }),
                });
            }
            if o.json {
                print_json(&rows)?;
            } else {
                for r in rows {
                    let id = r["id"].as_str().unwrap_or("");
                    match r["reason"].as_str() {
                        None => println!("{id}  {}", r["name"].as_str().unwrap_or("")),
                        Some(reason) => println!(
                            "{id}  UNAVAILABLE ({}): {reason}",
                            r["kind"].as_str().unwrap_or("")
                        ),
                    }
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
        Command::Network(NetworkCmd::Invite(a)) => {
            let net = net()?;
            let invitee = match &a.device {
                Some(d) => Invitee::Device(
                    DeviceId::from_str(d).map_err(|e| anyhow!("bad --device {d}: {e}"))?,
                ),
                None => Invitee::Anyone,
            };
            let agent = a.agent.as_deref().map(Id::from);
            let ticket = node.invite(net, a.role.into(), agent.clone(), a.expires, invitee)?;
            if a.json {
                print_json(&serde_json::json!({
                    "ticket": ticket.to_string(),
                    "network": ticket.network,
                    "networkName": ticket.network_name,
                    "role": Role::from(a.role).to_string(),
                    "agent": agent,
                    "expiresInSeconds": a.expires.as_secs(),
                    "device": a.device,
                    "inviter": ticket.inviter.to_string(),
                }))?;
            } else {
                println!("{ticket}");
                eprintln!(
                    "valid {}, once; the newcomer runs `reflow network join <ticket>` while \
                     this node runs `reflow sync` or `reflow serve`",
                    human_duration(a.expires)
                );
            }
        }
        Command::Network(NetworkCmd::Join(a)) => {
            let text = if a.ticket == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
                t
            } else {
                a.ticket.clone()
            };
            let ticket = Ticket::from_str(text.trim())?;
            let agent = a.agent.agent();
            let spinner = progress::spinner(format!(
                "joining {} through {}",
                ticket.network_name, ticket.inviter.device
            ));
            let joined = node.join_with_ticket(&ticket, agent).await;
            spinner.finish_and_clear();
            let id = match joined {
                Err(e @ (NetError::Timeout { .. } | NetError::Unreachable { .. })) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "cannot reach the inviter's node {} (it must be running `reflow sync` \
                         or `reflow serve`, reachable from here)",
                        ticket.inviter.device
                    )));
                }
                other => other?,
            };
            app::remember_network(dir, id)?;
            let events = node.read(id, |r| r.ledger().event_count())?;
            println!("{id}");
            eprintln!("joined {} ({events} events so far)", ticket.network_name);
        }
        Command::Network(NetworkCmd::Remove { device }) => {
            let d = DeviceId::from_str(device).map_err(|e| anyhow!("bad device {device}: {e}"))?;
            node.remove_member(net()?, d)?;
            println!("removed {d}");
        }
        Command::Process(p) => process_cmd(node, net()?, p)?,
        Command::Intent(i) => intent_cmd(node, net()?, i)?,
        Command::Proposal(p) => proposal_cmd(node, net()?, p)?,
        Command::Commitment(c) => planning_cli::commitment_cmd(node, net()?, c)?,
        Command::Agreement(c) => planning_cli::agreement_cmd(node, net()?, c)?,
        Command::Claim(c) => planning_cli::claim_cmd(node, net()?, c)?,
        Command::Recipe(c) => planning_cli::recipe_cmd(node, net()?, c)?,
        Command::Relationship(c) => planning_cli::relationship_cmd(node, net()?, c)?,
        Command::Flows(a) => planning_cli::flows_cmd(node, net()?, a)?,
        Command::Sync(a) => sync::run(node, net()?, a.json).await?,
        Command::Export(a) => {
            let doc = jsonld::export(node, net()?)?;
            let text = serde_json::to_string_pretty(&doc)? + "\n";
            match &a.output {
                Some(f) => {
                    std::fs::write(f, text).with_context(|| format!("writing {}", f.display()))?
                }
                None => print!("{text}"),
            }
        }
        Command::Import(a) => {
            let text = if a.file.as_os_str() == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
                t
            } else {
                std::fs::read_to_string(&a.file)
                    .with_context(|| format!("reading {}", a.file.display()))?
            };
            let source = match a.file.file_name() {
                Some(n) if a.file.as_os_str() != "-" => n.to_string_lossy().to_string(),
                _ => "stdin".to_string(),
            };
            let options = reflow::interop::ImportOptions {
                create_missing: a.create_missing,
                source,
            };
            let summary = jsonld::import(node, net()?, &text, &options)
                .with_context(|| format!("importing {}", a.file.display()))?;
            if a.json {
                print_json(&summary)?;
            } else {
                println!("{summary}");
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
            list_out(
                o.json,
                &list,
                |a| &a.id,
                |a| format!("{}  {}", a.id, a.name),
            )?;
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
            list_out(
                o.json,
                &list,
                |s| &s.id,
                |s| match (s.lat, s.long) {
                    (Some(a), Some(b)) => format!("{}  {}  ({a}, {b})", s.id, s.name),
                    _ => format!("{}  {}", s.id, s.name),
                },
            )?;
        }
        Command::Spec(SpecCmd::Add { id, name }) => {
            let s = ResourceSpecification::new(id.as_str(), name.as_str());
            println!("{}", node.write(net()?, |l| l.create(s))?);
        }
        Command::Spec(SpecCmd::List(o)) => {
            let list = node.read(net()?, |r| r.ledger().list::<ResourceSpecification>())?;
            list_out(
                o.json,
                &list,
                |s| &s.id,
                |s| format!("{}  {}", s.id, s.name),
            )?;
        }
        Command::Unit(UnitCmd::Add { id, label, symbol }) => {
            let u = Unit::new(id.as_str(), label.as_str(), symbol.as_deref().unwrap_or(id));
            println!("{}", node.write(net()?, |l| l.create(u))?);
        }
        Command::Unit(UnitCmd::List(o)) => {
            let list = node.read(net()?, |r| r.ledger().list::<Unit>())?;
            list_out(
                o.json,
                &list,
                |u| &u.id,
                |u| format!("{}  {}  {}", u.id, u.label, u.symbol),
            )?;
        }
        Command::Event(EventCmd::Record(input)) => {
            let net = net()?;
            let agent = node.read(net, |r| r.agent())?;
            let event = input.clone().acting_for(agent.as_ref()).build(None)?;
            // What this device may not record is said before anything is written.
            node.read(net, |r| r.may_record(&event.event))??;
            println!("{}", node.record_event(net, event)?);
        }
        Command::Event(EventCmd::Correct { event, input }) => {
            let net = net()?;
            let id = Id::from(event.as_str());
            let original = node
                .read(net, |r| r.ledger().event(&id))?
                .ok_or_else(|| anyhow!("no event {event}"))?;
            let new = input.build(Some(original))?;
            node.read(net, |r| r.may_record(&new.event))??;
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
            list_out(
                o.json,
                &list,
                |r| &r.id,
                |r| {
                    format!(
                        "{:<16} {:<24} {:>10}  custodian {}  at {}",
                        r.id,
                        r.name,
                        r.onhand_quantity.to_string(),
                        opt(&r.custodian),
                        opt(&r.current_location)
                    )
                },
            )?;
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
        Command::Trace(TraceArgs {
            export: Some(file),
            id: a,
        }) => {
            let id = Id::from(a.id.as_str());
            let bytes = node.read(net()?, |r| reflow::interop::bundle::export(r, &id))??;
            std::fs::write(file, &bytes).with_context(|| format!("writing {}", file.display()))?;
            let t = reflow::interop::bundle::verify(&bytes)?;
            println!(
                "wrote the trace bundle of {} to {}: {} events, {} signed changes",
                a.id,
                file.display(),
                t.events.len(),
                t.changes
            );
        }
        Command::Trace(TraceArgs { id: a, .. }) | Command::Track(a) => {
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
        Command::Rules(RulesCmd::Show(o)) => {
            let (rules, refused, flagged) = node.read(net()?, |r| {
                let refused: Vec<_> = r
                    .rule_refusals()
                    .iter()
                    .map(|q| {
                        serde_json::json!({"change": q.change.hash().to_string(), "reason": q.reason})
                    })
                    .collect();
                let flagged: Vec<_> = r
                    .ledger()
                    .conflicts()
                    .into_iter()
                    .filter(|c| matches!(c, reflow::Conflict::RuleViolation { .. }))
                    .collect();
                (r.rules(), refused, flagged)
            })?;
            if o.json {
                print_json(&serde_json::json!({
                    "ruleSet": rules,
                    "refused": refused,
                    "flagged": flagged,
                }))?;
            } else {
                match &rules {
                    None => println!("no rules: this network has not published a rule set"),
                    Some(set) => {
                        println!("{} (version {})", set.name, set.version);
                        for rule in &set.rules {
                            println!("  {}  [{}]  {}", rule.name, rule.outcome, rule.check);
                        }
                        let g = &set.record_for_others;
                        if g.is_empty() {
                            println!("records for others: admins only");
                        } else {
                            let roles: Vec<&str> = g.roles.iter().map(|r| r.as_str()).collect();
                            let agents: Vec<&str> = g.agents.iter().map(|a| a.as_str()).collect();
                            println!(
                                "records for others: admins; roles [{}]; agents [{}]; devices [{}]",
                                roles.join(", "),
                                agents.join(", "),
                                g.devices.join(", ")
                            );
                        }
                    }
                }
                println!("refused: {}", refused.len());
                for q in &refused {
                    println!("  {}", serde_json::to_string(q)?);
                }
                println!("flagged: {}", flagged.len());
                for c in &flagged {
                    println!("  {}", serde_json::to_string(c)?);
                }
            }
        }
        Command::Rules(RulesCmd::Set { file }) => {
            let set = rule_set_arg(file)?;
            let version = node.set_rules(net()?, set)?;
            println!("rules published: version {version}");
        }
        Command::Rules(RulesCmd::Test { file, event, json }) => {
            let draft = rule_set_arg(file)?;
            let event: EconomicEvent =
                serde_json::from_str(event).context("--event is not an event's JSON")?;
            let found = node.read(net()?, |r| r.test_rules(&draft, &event))??;
            let rows: Vec<_> = found
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "rule": f.rule, "outcome": f.outcome, "message": f.message, "error": f.error
                    })
                })
                .collect();
            if *json {
                print_json(&rows)?;
            } else if found.is_empty() {
                println!("the event keeps every rule");
            } else {
                for f in &found {
                    let what = if f.error.is_some() { "error" } else { "breaks" };
                    println!("{what} {} [{}]: {}", f.rule, f.outcome, f.message);
                }
            }
        }
        Command::Peers(o) => {
            let peers = node.peers(net()?)?;
            let rows: Vec<_> = peers.iter().map(app::peer_json).collect();
            if o.json {
                print_json(&rows)?;
            } else if rows.is_empty() {
                println!(
                    "no peers known (peers are seen while `reflow sync` or `reflow serve` runs)"
                );
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
            // The node serves and syncs every other network; these are not served.
            for p in node.network_problems() {
                let ui = if p.network == net {
                    " (the web UI's network)"
                } else {
                    ""
                };
                eprintln!(
                    "warning: network {}{ui} is unavailable ({}): {}; it is not served, and \
                     its stored data is kept as it is",
                    p.network, p.kind, p.reason
                );
            }
            let server = web::start(node.clone(), net, args.port).await?;
            // The URL carries this launch's key: it goes to the terminal only.
            println!("serving {}  (Ctrl-C to stop)", server.url());
            tokio::select! {
                r = server.task => r??,
                () = sync::shutdown_signal() => {},
            }
        }
        Command::Demo(_) | Command::Verify(_) => unreachable!("handled before opening a node"),
    }
    Ok(())
}

/// Parse "90", "90s", "30m", "24h", "7d".
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (n, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration like 90, 30m, 24h or 7d"))?;
    let secs = n
        .checked_mul(mult)
        .filter(|x| *x > 0)
        .ok_or_else(|| format!("\"{s}\" must be positive and below 500 billion years"))?;
    Ok(std::time::Duration::from_secs(secs))
}

fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s % 86400 == 0 => format!("{} d", s / 86400),
        _ if s % 3600 == 0 => format!("{} h", s / 3600),
        _ if s % 60 == 0 => format!("{} min", s / 60),
        _ => format!("{s} s"),
    }
}

fn process_cmd(node: &Node, net: NetworkId, cmd: &ProcessCmd) -> Result<()> {
    match cmd {
        ProcessCmd::Create {
            id,
            name,
            based_on,
            note,
        } => {
            let mut p = Process::new(
                id.as_str(),
                name.as_str(),
                based_on.as_deref().map(Id::from),
            );
            p.note.clone_from(note);
            println!("{}", node.write(net, |l| l.create(p))?);
        }
        ProcessCmd::SpecAdd { id, name } => {
            let s = ProcessSpecification::new(id.as_str(), name.as_str());
            println!("{}", node.write(net, |l| l.create(s))?);
        }
        ProcessCmd::List(o) => {
            let list = node.read(net, |r| r.ledger().list::<Process>())?;
            list_out(
                o.json,
                &list,
                |p| &p.id,
                |p| {
                    format!(
                        "{}  {}{}{}",
                        p.id,
                        p.name,
                        p.based_on
                            .as_ref()
                            .map_or(String::new(), |b| format!("  ({b})")),
                        if p.finished { "  finished" } else { "" }
                    )
                },
            )?;
        }
        ProcessCmd::Show(a) => {
            let id = Id::from(a.id.as_str());
            let (p, events) = node.read(net, |r| {
                let l = r.ledger();
                let events = l.events(&EventFilter {
                    process: Some(id.clone()),
                    ..EventFilter::default()
                });
                (l.get::<Process>(&id), events)
            })?;
            let p = p.ok_or_else(|| anyhow!("no process {}", a.id))?;
            let is = |e: &&EconomicEvent, f: fn(&EconomicEvent) -> &Option<Id>| {
                f(e).as_ref() == Some(&id)
            };
            let inputs: Vec<_> = events.iter().filter(|e| is(e, |e| &e.input_of)).collect();
            let outputs: Vec<_> = events.iter().filter(|e| is(e, |e| &e.output_of)).collect();
            if a.json {
                let mut v = app::with_id(&p, &p.id);
                v["inputs"] = inputs.iter().map(|e| app::event_json(e)).collect();
                v["outputs"] = outputs.iter().map(|e| app::event_json(e)).collect();
                print_json(&v)?;
            } else {
                println!("{}  {}", p.id, p.name);
                if let Some(b) = &p.based_on {
                    println!("  based on  {b}");
                }
                println!("  finished  {}", if p.finished { "yes" } else { "no" });
                println!("  inputs:");
                for e in inputs {
                    println!("    {}", describe(e));
                }
                println!("  outputs:");
                for e in outputs {
                    println!("    {}", describe(e));
                }
            }
        }
        ProcessCmd::Finish { id } => {
            node.write(net, |l| {
                l.update::<Process>(&Id::from(id.as_str()), |p| p.finished = true)
            })?;
            println!("{id} finished");
        }
    }
    Ok(())
}

fn intent_cmd(node: &Node, net: NetworkId, cmd: &IntentCmd) -> Result<()> {
    match cmd {
        IntentCmd::Add(i) => {
            let measure = i
                .quantity
                .as_deref()
                .map(|q| app::measure(q, "quantity"))
                .transpose()?
                .map(|(n, u)| Measure::new(n, u));
            let id = |s: &Option<String>| s.as_deref().map(Id::from);
            let mut intent = Intent::request(Action::from_str(&i.action)?, id(&i.receiver));
            intent.id = Id::from(i.id.as_str());
            intent.provider = id(&i.provider);
            intent.resource_conforms_to = id(&i.conforms_to);
            intent.resource_inventoried_as = id(&i.resource);
            intent.resource_quantity = measure;
            intent.effort_quantity = i
                .effort
                .as_deref()
                .map(|q| app::measure(q, "effort"))
                .transpose()?
                .map(|(n, u)| Measure::new(n, u));
            intent.at_location = id(&i.at_location);
            intent.due = i.due.clone();
            intent.note = i.note.clone();
            println!("{}", node.write(net, |l| l.create(intent))?);
        }
        IntentCmd::List {
            offers,
            requests,
            all,
            json,
        } => {
            let list: Vec<Intent> = node
                .read(net, |r| r.ledger().list::<Intent>())?
                .into_iter()
                .filter(|i| *all || !i.finished)
                .filter(|i| !offers || i.provider.is_some())
                .filter(|i| !requests || i.provider.is_none())
                .collect();
            list_out(*json, &list, |i| &i.id, intent_line)?;
        }
        IntentCmd::Finish { id } => {
            node.write(net, |l| {
                l.update::<Intent>(&Id::from(id.as_str()), |i| i.finished = true)
            })?;
            println!("{id} finished");
        }
    }
    Ok(())
}

fn intent_line(i: &Intent) -> String {
    let (kind, who) = match (&i.provider, &i.receiver) {
        (Some(p), _) => ("offer  ", p),
        (None, Some(r)) => ("request", r),
        (None, None) => ("intent ", &i.id),
    };
    let what = opt(&i
        .resource_inventoried_as
        .clone()
        .or(i.resource_conforms_to.clone()));
    let q = i
        .resource_quantity
        .as_ref()
        .map_or(String::new(), |m| format!(" {m}"));
    let done = if i.finished { "  finished" } else { "" };
    format!("{}  {kind} {who}: {}{q} {what}{done}", i.id, i.action)
}

fn proposal_json(p: &Proposal, intents: &[Intent]) -> serde_json::Value {
    let mut v = app::with_id(p, &p.id);
    v["intents"] = p
        .publishes
        .iter()
        .filter_map(|id| intents.iter().find(|i| &i.id == id))
        .map(|i| app::with_id(i, &i.id))
        .collect();
    v
}

fn proposal_cmd(node: &Node, net: NetworkId, cmd: &ProposalCmd) -> Result<()> {
    match cmd {
        ProposalCmd::Create {
            id,
            name,
            intents,
            reciprocal,
            unit_based,
            purpose,
            location,
            note,
        } => {
            let p = Proposal {
                reciprocal: reciprocal.iter().map(|i| Id::from(i.as_str())).collect(),
                created: Some(app::now_utc()),
                unit_based: *unit_based,
                eligible_location: location.as_deref().map(Id::from),
                purpose: purpose.map(|p| match p {
                    PurposeArg::Offer => reflow::ProposalPurpose::Offer,
                    PurposeArg::Request => reflow::ProposalPurpose::Request,
                }),
                note: note.clone(),
                ..Proposal::new(
                    id.as_str(),
                    name.clone(),
                    intents.iter().map(|i| Id::from(i.as_str())).collect(),
                )
            };
            println!("{}", node.write(net, |l| l.create(p))?);
        }
        ProposalCmd::Accept { id, agent, json } => {
            let agent = match agent {
                Some(a) => Id::from(a.as_str()),
                None => planning_cli::my_agent(node, net)?,
            };
            let now = app::now_utc();
            let accepted = node.write(net, |l| {
                l.accept_proposal(&Id::from(id.as_str()), &agent, Some(now))
            })?;
            if *json {
                print_json(&accepted)?;
            } else {
                println!("agreement {}", accepted.agreement);
                for c in accepted
                    .commitments
                    .iter()
                    .chain(&accepted.reciprocal_commitments)
                {
                    println!("  commitment {c}");
                }
            }
        }
        ProposalCmd::List(o) => {
            let (list, intents) = node.read(net, |r| {
                let l = r.ledger();
                (with_status(l, l.list::<Proposal>()), l.list::<Intent>())
            })?;
            if o.json {
                print_json(
                    &list
                        .iter()
                        .map(|p| proposal_json(p, &intents))
                        .collect::<Vec<_>>(),
                )?;
            } else {
                for p in &list {
                    println!("{}  {}  ({})", p.id, p.name, status_name(p.status));
                    for i in p
                        .publishes
                        .iter()
                        .filter_map(|id| intents.iter().find(|i| &i.id == id))
                    {
                        println!("  {}", intent_line(i));
                    }
                }
            }
        }
        ProposalCmd::Show(a) => {
            let id = Id::from(a.id.as_str());
            let (p, intents) = node.read(net, |r| {
                let l = r.ledger();
                let p = l.get::<Proposal>(&id).map(|p| with_status(l, vec![p]));
                (p.and_then(|mut v| v.pop()), l.list::<Intent>())
            })?;
            let p = p.ok_or_else(|| anyhow!("no proposal {}", a.id))?;
            if a.json {
                print_json(&proposal_json(&p, &intents))?;
            } else {
                println!("{}  {}", p.id, p.name);
                println!("  status    {}", status_name(p.status));
                println!("  location  {}", opt(&p.eligible_location));
                println!("  unit based {}", if p.unit_based { "yes" } else { "no" });
                for i in p
                    .publishes
                    .iter()
                    .filter_map(|id| intents.iter().find(|i| &i.id == id))
                {
                    println!("  {}", intent_line(i));
                }
            }
        }
        ProposalCmd::Status { id, status } => {
            let s = match status {
                StatusArg::Open => ProposalStatus::Open,
                StatusArg::Accepted => ProposalStatus::Accepted,
                StatusArg::Withdrawn => ProposalStatus::Withdrawn,
            };
            node.write(net, |l| {
                l.update::<Proposal>(&Id::from(id.as_str()), |p| p.status = s)
            })?;
            println!("{id} {}", status_name(s));
        }
    }
    Ok(())
}

/// Proposals with their status as the ledger derives it (an open proposal is accepted once
/// an agreement takes it up: `Ledger::proposal_status`).
fn with_status(l: &reflow::Ledger, mut list: Vec<Proposal>) -> Vec<Proposal> {
    for p in &mut list {
        if let Ok(s) = l.proposal_status(&p.id) {
            p.status = s;
        }
    }
    list
}

fn status_name(s: ProposalStatus) -> &'static str {
    match s {
        ProposalStatus::Open => "open",
        ProposalStatus::Accepted => "accepted",
        ProposalStatus::Withdrawn => "withdrawn",
    }
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

/// Print a list as lines, or as a JSON array whose objects carry their `id` (the model keeps ids
/// out of the stored body, so they are added here).
fn list_out<T: Serialize>(
    json: bool,
    list: &[T],
    id: impl Fn(&T) -> &Id,
    line: impl Fn(&T) -> String,
) -> Result<()> {
    if json {
        print_json(
            &list
                .iter()
                .map(|x| app::with_id(x, id(x)))
                .collect::<Vec<_>>(),
        )
    } else {
        for x in list {
            println!("{}", line(x));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("24h"), Ok(86400));
        assert_eq!(secs("7d"), Ok(7 * 86400));
        for bad in [
            "",
            "0",
            "0h",
            "-1h",
            "soon",
            "1.5h",
            "h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(human_duration(std::time::Duration::from_secs(86400)), "1 d");
        assert_eq!(human_duration(std::time::Duration::from_secs(90)), "90 s");
    }

    #[test]
    fn every_command_parses_its_help() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
