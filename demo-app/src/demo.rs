//! `reflow demo`: three nodes on this machine (repair café, market stall, volunteer laptop),
//! connected over iroh on loopback, seeded with a Saturday of repairs and jam sales, each
//! serving its UI on its own port.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reflow::node::{Invitee, Ticket};
use reflow::{
    Action as A, Agent, EconomicEvent, Id, NetworkId, Node, Process, ProcessSpecification,
    Quantity, ResourceDescription, ResourceSpecification, Role, SpatialThing, Unit,
};

use crate::app::open_node;
use crate::web;

/// Options of `reflow demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Directory for the three nodes' data (default: a new directory under the system's temp
    /// directory, removed on exit). Must not hold an earlier demo.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Port of the first node's UI; the others use the next two (0: any free ports).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Seed, wait until the three nodes agree, print a summary and exit (for scripts and CI).
    #[arg(long)]
    exit_after_seed: bool,
    /// Longest wait for the nodes to agree, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

const NAMES: [&str; 3] = ["repair-cafe", "market-stall", "volunteer-laptop"];

pub async fn run(args: &DemoArgs) -> Result<()> {
    let (dir, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("reflow-demo-{}", std::process::id())),
            true,
        ),
    };
    if NAMES.iter().any(|n| dir.join(n).exists()) {
        bail!("{} already holds a demo: pass a fresh --dir", dir.display());
    }
    let result = run_in(args, &dir).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(args: &DemoArgs, dir: &std::path::Path) -> Result<()> {
    let mut nodes = Vec::new();
    for n in NAMES {
        nodes.push(Arc::new(open_node(&dir.join(n), false).await?));
    }
    let (cafe, stall, laptop) = (&nodes[0], &nodes[1], &nodes[2]);
    let net = cafe.create_network(
        "Saturday at the repair café and market",
        Agent::organization("cafe", "Repair Café De Pijp"),
    )?;
    cafe.write(net, |l| {
        l.create(Agent::organization("stall", "Market stall 4 (Joris' jam)"))?;
        for (id, n) in [("ana", "Ana"), ("bea", "Bea"), ("chris", "Chris")] {
            l.create(Agent::person(id, n))?;
        }
        Ok(())
    })?;
    // The stall gets a key invite (for its device only, acting for the stall's agent); the
    // volunteer's laptop a one-time bearer ticket, and describes its agent when joining.
    let day = Duration::from_secs(24 * 3600);
    let stall_ticket = cafe.invite(
        net,
        Role::Member,
        Some(Id::from("stall")),
        day,
        Invitee::Device(stall.device()),
    )?;
    let laptop_ticket = cafe.invite(net, Role::Member, None, day, Invitee::Anyone)?;
    // Through the tickets' text, as a person would hand them over.
    let stall_ticket: Ticket = stall_ticket.to_string().parse()?;
    let laptop_ticket: Ticket = laptop_ticket.to_string().parse()?;
    stall
        .join_with_ticket(
            &stall_ticket,
            Agent::organization("stall", "Market stall 4"),
        )
        .await
        .context("market stall joining with its ticket")?;
    laptop
        .join_with_ticket(&laptop_ticket, Agent::person("sam", "Sam (volunteer)"))
        .await
        .context("volunteer laptop joining with its ticket")?;
    let timeout = Duration::from_secs(args.timeout);
    // The stall and the laptop record events that refer to the café's units, places and
    // process: they must have received them first (sync is asynchronous), else their ledgers
    // rightly refuse the references.
    seed_catalogue(cafe, net)?;
    converge(&nodes, net, timeout)
        .await
        .context("sharing the catalogue")?;
    seed_events(cafe, stall, laptop, net)?;
    let heads = converge(&nodes, net, timeout).await?;
    let events = cafe.read(net, |r| r.ledger().event_count())?;
    let conflicts = cafe.read(net, |r| r.ledger().conflicts().len())?;
    println!(
        "converged: 3 nodes agree on {events} events ({} heads), {conflicts} conflicts",
        heads.len()
    );
    if args.exit_after_seed {
        return close_all(nodes).await;
    }
    let mut servers = Vec::new();
    for (i, (node, name)) in nodes.iter().zip(NAMES).enumerate() {
        let port = if args.port == 0 {
            0
        } else {
            args.port + i as u16
        };
        let server = web::start(node.clone(), net, port).await?;
        // The URL carries this launch's key: it goes to the terminal only.
        println!("{name:<17} {}", server.url());
        servers.push(server.task);
    }
    println!(
        "record an event in one tab and watch it appear in the others; Ctrl-C (or SIGTERM) stops"
    );
    crate::sync::shutdown_signal().await;
    println!("stopping");
    for s in servers {
        s.abort();
    }
    close_all(nodes).await
}

async fn close_all(nodes: Vec<Arc<Node>>) -> Result<()> {
    for n in nodes {
        if let Ok(n) = Arc::try_unwrap(n) {
            n.close().await?;
        }
    }
    Ok(())
}

/// Wait (on ledger updates, with a deadline) until the three nodes have the same heads.
async fn converge(
    nodes: &[Arc<Node>],
    net: NetworkId,
    timeout: Duration,
) -> Result<Vec<reflow::ChangeHash>> {
    let mut subs = Vec::new();
    for n in nodes {
        subs.push(n.subscribe(net)?);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut heads = Vec::new();
        for n in nodes {
            let mut h = n.heads(net)?;
            h.sort();
            heads.push(h);
        }
        if heads.windows(2).all(|w| w[0] == w[1]) {
            return Ok(heads.swap_remove(0));
        }
        let any = futures_any(&mut subs);
        if tokio::time::timeout_at(deadline, any).await.is_err() {
            bail!(
                "the demo nodes did not converge within {} s",
                timeout.as_secs()
            );
        }
    }
}

/// The next update on any of the subscriptions.
async fn futures_any(subs: &mut [tokio::sync::broadcast::Receiver<reflow::LedgerUpdate>]) {
    let (a, rest) = subs.split_at_mut(1);
    let (b, c) = rest.split_at_mut(1);
    tokio::select! {
        _ = a[0].recv() => {},
        _ = b[0].recv() => {},
        _ = c[0].recv() => {},
    }
}

/// Units, places, specifications and the repair process, created by the café.
fn seed_catalogue(cafe: &Node, net: NetworkId) -> Result<()> {
    cafe.write(net, |l| {
        for (id, label, symbol) in [
            ("one", "each", ""),
            ("jar", "jar", "jar"),
            ("hour", "hour", "h"),
            ("kg", "kilogram", "kg"),
        ] {
            l.create(Unit::new(id, label, symbol))?;
        }
        let places = [
            ("workshop", "Café workshop", (52.3547, 4.8911)),
            ("stall-4", "Market stall 4", (52.3791, 4.8863)),
            ("depot", "Parts depot", (52.3676, 4.9041)),
        ];
        for (id, n, ll) in places {
            l.create(SpatialThing::new(id, n, Some(ll)))?;
        }
        l.create(ResourceSpecification::new("mechanics", "Bicycle mechanics"))?;
        l.create(ResourceSpecification::new("bicycle", "Bicycle"))?;
        l.create(ProcessSpecification::new("repair", "Repair"))?;
        l.create(Process::new(
            "fix",
            "Fix Ana's brakes",
            Some(Id::from("repair")),
        ))?;
        // The café's recipe for a brake repair: an hour of mechanics and two pads in, the
        // bicycle modified out. "Plan from recipe" turns it into a process and commitments.
        l.create(reflow::RecipeProcess {
            id: Id::from("brake-repair"),
            name: "Brake repair".into(),
            process_conforms_to: Some(Id::from("repair")),
            process_classified_as: Vec::new(),
            has_duration: None,
            image: None,
            note: None,
            other_properties: Default::default(),
        })?;
        let flows = [
            (
                "brake-work",
                A::Work,
                false,
                None,
                Some((1, "hour")),
                Some("mechanics"),
            ),
            (
                "brake-pads",
                A::Consume,
                false,
                Some((2, "one")),
                None,
                None,
            ),
            (
                "brake-bike",
                A::Modify,
                true,
                Some((1, "one")),
                None,
                Some("bicycle"),
            ),
        ];
        for (id, action, output, q, effort, spec) in flows {
            let mut f = reflow::RecipeFlow::new(action);
            f.id = Id::from(id);
            if output {
                f.recipe_output_of = Some(Id::from("brake-repair"));
            } else {
                f.recipe_input_of = Some(Id::from("brake-repair"));
            }
            f.resource_quantity = q.map(|(n, u)| reflow::Measure::new(n, u));
            f.effort_quantity = effort.map(|(n, u)| reflow::Measure::new(n, u));
            f.resource_conforms_to = spec.map(Id::from);
            l.create(f)?;
        }
        Ok(())
    })?;
    // The network's own rules (docs/rules.md), the food-market template: a stall's sales are
    // recorded by its own devices, and a sale larger than the stock as seen is flagged.
    let mut rules = reflow::rules::template("food-market")
        .ok_or_else(|| anyhow::anyhow!("the food-market template"))?;
    rules.name = "Saturday market rules".into();
    cafe.set_rules(net, rules)?;
    Ok(())
}

/// A Saturday's events, recorded on the node where they happen.
fn seed_events(cafe: &Node, stall: &Node, laptop: &Node, net: NetworkId) -> Result<()> {
    let new = |id: &str, n: &str| ResourceDescription::new(id, n);
    let flow = |a, p: &str, r: &str, res: &str, n: i64, unit: &str| {
        EconomicEvent::new(a, p, r).resource(res).quantity(n, unit)
    };
    // Morning at the café.
    let bike = EconomicEvent::new(A::Raise, "ana", "ana")
        .quantity(1, "one")
        .conforms_to("bicycle")
        .at("workshop");
    cafe.record_event(net, bike.creating(new("bike", "Ana's bicycle")))?;
    let pads = EconomicEvent::new(A::Raise, "cafe", "cafe")
        .quantity(10, "one")
        .at("depot");
    cafe.record_event(net, pads.creating(new("pads", "Brake pads")))?;
    // The market stall produces jam.
    let jam = EconomicEvent::new(A::Produce, "stall", "stall")
        .quantity(12, "jar")
        .at("stall-4");
    stall.record_event(net, jam.creating(new("jam", "Apple jam")))?;
    let apples = EconomicEvent::new(A::Raise, "stall", "stall")
        .quantity(8, "kg")
        .at("stall-4");
    stall.record_event(net, apples.creating(new("apples", "Windfall apples")))?;
    // The repair, recorded on the café and the volunteer's laptop.
    cafe.record_event(
        net,
        flow(A::TransferCustody, "ana", "cafe", "bike", 1, "one").to_location("workshop"),
    )?;
    cafe.record_event(
        net,
        flow(A::Accept, "ana", "cafe", "bike", 1, "one").input_of("fix"),
    )?;
    let hours: Quantity = "1.5".parse()?;
    let work = EconomicEvent::new(A::Work, "sam", "cafe")
        .conforms_to("mechanics")
        .effort(hours, "hour");
    laptop.record_event(net, work.input_of("fix"))?;
    cafe.record_event(
        net,
        flow(A::Consume, "cafe", "cafe", "pads", 2, "one").input_of("fix"),
    )?;
    cafe.record_event(
        net,
        flow(A::Modify, "cafe", "ana", "bike", 1, "one")
            .output_of("fix")
            .with_state("pass"),
    )?;
    cafe.record_event(
        net,
        flow(A::TransferCustody, "cafe", "ana", "bike", 1, "one"),
    )?;
    // Jam sales at the stall.
    for (to, n) in [("ana", 4), ("bea", 2)] {
        let sale = flow(A::Transfer, "stall", to, "jam", n, "jar").at("stall-4");
        stall.record_event(
            net,
            sale.creating(new(&format!("jam-{to}"), &format!("Apple jam ({to})"))),
        )?;
    }
    Ok(())
}
