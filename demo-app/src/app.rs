//! Shared helpers: opening the node, choosing the network, building events from user input,
//! JSON shapes of the read views (used by the CLI's `--json` and the web UI).

use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use reflow::{
    Action, EconomicEvent, Id, NetworkId, NewEvent, Node, NodeConfig, PeerStatus, Quantity,
    ResourceDescription, TraceNode,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// File in the data dir naming the network used when `--network` is not given.
const DEFAULT_NETWORK_FILE: &str = "default-network";

/// The data directory or its store could not be opened (exit code 3).
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// The node's configuration on `dir`. `public`: listen on every interface with relays and
/// local discovery; else loopback only (commands that do not talk to peers send nothing to
/// the network). `REFLOW_RELAY` (comma-separated URLs) names the relay servers the network
/// runs, instead of iroh's public ones; the tickets this node issues carry them.
pub fn node_config(dir: &Path, public: bool) -> NodeConfig {
    if public {
        let mut config = NodeConfig::new(dir);
        if let Ok(urls) = std::env::var("REFLOW_RELAY") {
            let urls: Vec<String> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
            if !urls.is_empty() {
                config.relay = reflow::node::RelayConfig::Custom(urls);
            }
        }
        config
    } else {
        NodeConfig::loopback(dir)
    }
}

/// Open the node on `dir`. `public`: see [`node_config`].
pub async fn open_node(dir: &Path, public: bool) -> Result<Node> {
    open_node_with(dir, node_config(dir, public)).await
}

/// Open the node on `dir` with `config`; a store that cannot be opened is a [`StoreError`].
pub async fn open_node_with(dir: &Path, config: NodeConfig) -> Result<Node> {
    if dir.exists() && !dir.is_dir() {
        return Err(StoreError(format!(
            "data directory {} is not a directory",
            dir.display()
        ))
        .into());
    }
    Node::open(config).await.map_err(|e| {
        StoreError(format!(
            "cannot open the store in {}: {}",
            dir.display(),
            e.to_string().replace('\n', " ")
        ))
        .into()
    })
}

/// Remember `id` as the default network if there is none yet.
pub fn remember_network(dir: &Path, id: NetworkId) -> Result<()> {
    let file = dir.join(DEFAULT_NETWORK_FILE);
    if !file.exists() {
        std::fs::write(&file, id.to_string())
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// The network named by `--network`, else the remembered default, else the only one.
pub fn pick_network(node: &Node, dir: &Path, given: Option<&str>) -> Result<NetworkId> {
    let nets = node.networks();
    if let Some(g) = given {
        let id = NetworkId::from_str(g).map_err(|e| anyhow!("bad --network {g}: {e}"))?;
        if !nets.contains(&id) {
            bail!("this device is not in network {g}");
        }
        return Ok(id);
    }
    if let Ok(text) = std::fs::read_to_string(dir.join(DEFAULT_NETWORK_FILE)) {
        if let Ok(id) = NetworkId::from_str(text.trim()) {
            if nets.contains(&id) {
                return Ok(id);
            }
        }
    }
    match nets.as_slice() {
        [] => bail!("no network yet: run `reflow network create <name>` first"),
        [one] => Ok(*one),
        _ => bail!("this device is in several networks: pass --network <id>"),
    }
}

/// The fields of an economic event, from the command line or the web form.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventInput {
    /// The action (produce, consume, transfer, work, ...).
    #[arg(long)]
    pub action: Option<String>,
    /// Agent providing.
    #[arg(long)]
    pub provider: Option<String>,
    /// Agent receiving.
    #[arg(long)]
    pub receiver: Option<String>,
    /// Resource affected (its id).
    #[arg(long)]
    pub resource: Option<String>,
    /// Resource receiving (transfer, move, copy, combine).
    #[arg(long)]
    pub to_resource: Option<String>,
    /// Quantity with its unit id: "5 kg".
    #[arg(long)]
    pub quantity: Option<String>,
    /// Effort with its unit id: "1.5 hour" (work).
    #[arg(long)]
    pub effort: Option<String>,
    /// Resource specification.
    #[arg(long)]
    pub conforms_to: Option<String>,
    /// Process it is an input of.
    #[arg(long)]
    pub input_of: Option<String>,
    /// Process it is an output of.
    #[arg(long)]
    pub output_of: Option<String>,
    /// Location.
    #[arg(long)]
    pub at_location: Option<String>,
    /// Destination (transfer, move).
    #[arg(long)]
    pub to_location: Option<String>,
    /// State (e.g. "pass", "fail").
    #[arg(long)]
    pub state: Option<String>,
    /// Free text.
    #[arg(long)]
    pub note: Option<String>,
    /// Create a new resource with this id (produce, raise; transfer to a new resource).
    #[arg(long)]
    pub new_resource: Option<String>,
    /// The new resource's name.
    #[arg(long)]
    pub new_resource_name: Option<String>,
    /// When it happened (ISO 8601, e.g. 2026-03-07T10:00:00Z), or `now`.
    #[arg(long)]
    pub at_time: Option<String>,
    /// The commitment this event fulfils.
    #[arg(long)]
    pub fulfills: Option<String>,
    /// The intent this event satisfies directly.
    #[arg(long)]
    pub satisfies: Option<String>,
    /// The claim this event settles.
    #[arg(long)]
    pub settles: Option<String>,
    /// The agreement this event realizes.
    #[arg(long)]
    pub realization_of: Option<String>,
}

/// The trimmed text of an optional field, `None` when absent or blank.
pub fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Parse "5 kg" into a quantity and a unit id; `what` names the field in errors.
pub fn measure(text: &str, what: &str) -> Result<(Quantity, Id)> {
    let mut parts = text.split_whitespace();
    let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        bail!("{what} must be a number and a unit id, like \"5 kg\" (got \"{text}\")");
    };
    let q = Quantity::from_str(n).map_err(|e| anyhow!("{what} \"{text}\": {e}"))?;
    Ok((q, Id::from(unit)))
}

impl EventInput {
    /// A provider or receiver left out is `agent`, the agent this device acts for (a member
    /// records only events its agent takes part in: `Replica::may_record`).
    pub fn acting_for(mut self, agent: Option<&Id>) -> Self {
        if let Some(agent) = agent {
            for field in [&mut self.provider, &mut self.receiver] {
                if nonempty(field).is_none() {
                    *field = Some(agent.to_string());
                }
            }
        }
        self
    }

    /// The event: from these fields, or, for a correction, the `original`'s fields overridden
    /// by the given ones.
    pub fn build(&self, original: Option<EconomicEvent>) -> Result<NewEvent> {
        let correcting = original.as_ref().map(|o| o.id.clone());
        let mut e = match original {
            Some(mut o) => {
                o.id = Id::from("");
                if let Some(a) = nonempty(&self.action) {
                    o.action = Action::from_str(a)?;
                }
                o
            }
            None => {
                let action =
                    nonempty(&self.action).ok_or_else(|| anyhow!("--action is required"))?;
                let action = Action::from_str(action)?;
                let p =
                    nonempty(&self.provider).ok_or_else(|| anyhow!("--provider is required"))?;
                let r =
                    nonempty(&self.receiver).ok_or_else(|| anyhow!("--receiver is required"))?;
                EconomicEvent::new(action, p, r)
            }
        };
        let id = |s: &Option<String>| nonempty(s).map(Id::from);
        if let Some(p) = id(&self.provider) {
            e.provider = Some(p);
        }
        if let Some(r) = id(&self.receiver) {
            e.receiver = Some(r);
        }
        let set = |field: &mut Option<Id>, s: &Option<String>| {
            if let Some(v) = id(s) {
                *field = Some(v);
            }
        };
        set(&mut e.resource_inventoried_as, &self.resource);
        set(&mut e.to_resource_inventoried_as, &self.to_resource);
        set(&mut e.resource_conforms_to, &self.conforms_to);
        set(&mut e.input_of, &self.input_of);
        set(&mut e.output_of, &self.output_of);
        set(&mut e.at_location, &self.at_location);
        set(&mut e.to_location, &self.to_location);
        set(&mut e.fulfills, &self.fulfills);
        set(&mut e.satisfies, &self.satisfies);
        set(&mut e.settles, &self.settles);
        set(&mut e.realization_of, &self.realization_of);
        if let Some(t) = nonempty(&self.at_time) {
            e.has_point_in_time = Some(if t == "now" { now_utc() } else { t.to_string() });
        }
        if let Some(s) = nonempty(&self.state) {
            e.state = Some(s.to_string());
        }
        if let Some(s) = nonempty(&self.note) {
            e.note = Some(s.to_string());
        }
        if let Some(q) = nonempty(&self.quantity) {
            let (n, unit) = measure(q, "quantity")?;
            e = e.quantity(n, unit);
        }
        if let Some(q) = nonempty(&self.effort) {
            let (n, unit) = measure(q, "effort")?;
            e = e.effort(n, unit);
        }
        if let Some(c) = correcting {
            e = e.correcting(c);
        }
        Ok(match nonempty(&self.new_resource) {
            Some(rid) => {
                let name = nonempty(&self.new_resource_name).unwrap_or(rid);
                e.creating(ResourceDescription::new(rid, name))
            }
            None => e.into(),
        })
    }
}

/// An event as JSON, with its id.
pub fn event_json(e: &EconomicEvent) -> Value {
    with_id(e, &e.id)
}

/// Any record as a JSON object with its `id` added (the model keeps ids out of stored bodies).
pub fn with_id(x: &impl serde::Serialize, id: &Id) -> Value {
    let mut v = serde_json::to_value(x).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), json!(id));
    }
    v
}

/// A peer as JSON.
pub fn peer_json(p: &PeerStatus) -> Value {
    json!({
        "device": p.device,
        "connected": p.connected,
        "theirHeads": p.their_heads.as_ref().map(|h| h.iter().map(|c| c.to_string()).collect::<Vec<_>>()),
        "lastError": p.last_error,
    })
}

/// One line about a trace step.
pub fn trace_node(n: &TraceNode) -> String {
    match n {
        TraceNode::EconomicResource { id } => format!("resource {id}"),
        TraceNode::EconomicEvent { id, action } => format!("event    {id} {action}"),
        TraceNode::Process { id } => format!("process  {id}"),
    }
}

/// The current time, UTC, RFC 3339 (the viewer's clock for `overdue`).
pub fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
