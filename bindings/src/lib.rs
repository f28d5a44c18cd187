//! UniFFI bindings over the Reflow engine (Python, Kotlin, Swift).
//!
//! A thin layer: every function wraps one call of the engine's public API ([`reflow::Node`]
//! and the ledger it reads), converting between the engine's types and flat records that
//! foreign languages can use. No ledger logic lives here.
//!
//! - [`open_node`] opens a [`ReflowNode`] on a data directory (`loopback: true` for tests).
//! - Writes (`record_event`, `add_member`, ...) are synchronous (they return after the fsync);
//!   what waits on the network (`connect`, `join`, `close`) is async.
//! - [`ReflowNode::subscribe`] calls a foreign [`LedgerListener`] on every change of a network.
//! - [`set_log_level`] and [`set_log_sink`] route the engine's `tracing` output to the host.
//! - Every error crosses as [`ReflowError`]: a kind (the variant) and a message.
//!
//! Node tasks run on a runtime owned by this library (see [`runtime`]), so the host's async
//! executor (Python's asyncio, Kotlin coroutines, Swift concurrency) only awaits results.

mod bundle;
mod interop;
mod logging;
mod planning;
mod records;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use reflow::node::{Invitee, Ticket};
use reflow::{
    Agent, DeviceId, EconomicEvent, EventFilter, Id, NetError, NetworkId, NewEvent, Node,
    NodeConfig, PeerAddr, ResourceSpecification, Unit,
};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

pub use bundle::{verify_trace_bundle, VerifiedEventRecord, VerifiedTraceRecord};
pub use interop::{ImportFailed, ImportOptionsInput, ImportProblemRecord, ImportReportRecord};
pub use logging::{set_log_level, set_log_sink, LogLevel, LogRecord, LogSink};
pub use planning::*;
pub use records::*;

uniffi::setup_scaffolding!();

/// What went wrong, by kind; `message` is the engine's readable explanation. A flat error in
/// the foreign languages: each kind is an exception class whose message is this one's
/// `Display` (a field named `message` would clash with Kotlin's `Throwable.message`).
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum ReflowError {
    /// The event or object is invalid (missing or forbidden field, unknown reference,
    /// negative quantity, unit mismatch, already corrected, unknown action, ...).
    #[error("invalid: {message}")]
    Invalid {
        /// Why.
        message: String,
    },
    /// An argument could not be parsed (device id, network id, quantity, address).
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// Why.
        message: String,
    },
    /// Something named does not exist (object, event, resource).
    #[error("not found: {message}")]
    NotFound {
        /// Why.
        message: String,
    },
    /// This device may not do this (not a member, read-only, not an admin).
    #[error("not allowed: {message}")]
    NotAllowed {
        /// Why.
        message: String,
    },
    /// This node holds no replica of the network (create or join it first).
    #[error("unknown network: {message}")]
    UnknownNetwork {
        /// Why.
        message: String,
    },
    /// The node holds the network but could not open its replica (see
    /// `ReflowNode::network_status`): nothing of it is read, written or served, and its
    /// stored data is kept as it is.
    #[error("network unavailable: {message}")]
    NetworkUnavailable {
        /// Why.
        message: String,
    },
    /// This node already holds the network.
    #[error("already joined: {message}")]
    AlreadyJoined {
        /// Why.
        message: String,
    },
    /// The peer refused the connection (e.g. this device is not a member there), or the
    /// peer is not a member in this replica.
    #[error("refused: {message}")]
    Refused {
        /// Why.
        message: String,
    },
    /// A text is not a ticket (mistyped, cut, altered, another version): nothing was sent.
    #[error("invalid ticket: {message}")]
    InvalidTicket {
        /// Why.
        message: String,
    },
    /// The ticket's inviter refused the invite (expired, already redeemed, wrong secret, for
    /// another device): nothing was written on either side.
    #[error("invite refused: {message}")]
    InviteRefused {
        /// Why.
        message: String,
    },
    /// The peer could not be reached, timed out, or the connection was lost or broke the
    /// protocol.
    #[error("network: {message}")]
    Network {
        /// Why.
        message: String,
    },
    /// The store or the data directory failed (I/O, corrupt store, locked by another node).
    #[error("storage: {message}")]
    Storage {
        /// Why.
        message: String,
    },
    /// The node is closed.
    #[error("closed: {message}")]
    Closed {
        /// Why.
        message: String,
    },
    /// A trace bundle was refused by `verify_trace_bundle`: a signature, a change, the
    /// membership or an event field does not check (the message names which).
    #[error("bundle refused: {message}")]
    BundleRefused {
        /// Why.
        message: String,
    },
    /// Anything else.
    #[error("{message}")]
    Other {
        /// Why.
        message: String,
    },
}

impl From<reflow::Error> for ReflowError {
    fn from(e: reflow::Error) -> Self {
        use reflow::Error as E;
        let message = e.to_string();
        match e {
            E::UnknownAction(_)
            | E::MissingField { .. }
            | E::FieldNotAllowed { .. }
            | E::UnknownReference { .. }
            | E::DuplicateId { .. }
            | E::NegativeQuantity { .. }
            | E::InvalidNumber { .. }
            | E::UnitMismatch { .. }
            | E::ResourceNeedsEvent
            | E::CorrectsNonEvent { .. }
            | E::AlreadyCorrected { .. }
            | E::InvalidJson { .. }
            | E::InvalidRules(_) => ReflowError::Invalid { message },
            E::Planning(_) => ReflowError::Invalid { message },
            E::NotFound { .. } => ReflowError::NotFound { message },
            E::Identity(
                reflow::IdentityError::InvalidKey(_) | reflow::IdentityError::InvalidNetworkId(_),
            ) => ReflowError::InvalidArgument { message },
            E::Storage { .. }
            | E::StoreFull { .. }
            | E::CorruptStore { .. }
            | E::NotAStore { .. }
            | E::UnsupportedStoreVersion { .. }
            | E::StoreLocked { .. } => ReflowError::Storage { message },
            E::UnknownNetwork { .. } => ReflowError::UnknownNetwork { message },
            E::NetworkExists { .. } => ReflowError::AlreadyJoined { message },
            E::NotAllowed { .. } | E::Refused { .. } => ReflowError::NotAllowed { message },
            _ => ReflowError::Other { message },
        }
    }
}

impl From<NetError> for ReflowError {
    fn from(e: NetError) -> Self {
        let message = e.to_string();
        match e {
            NetError::Core(core) => core.into(),
            NetError::Io { .. } => ReflowError::Storage { message },
            NetError::InvalidRelayUrl(_) | NetError::SelfConnect => {
                ReflowError::InvalidArgument { message }
            }
            NetError::Closed => ReflowError::Closed { message },
            NetError::UnknownNetwork { .. } => ReflowError::UnknownNetwork { message },
            NetError::NetworkUnavailable { .. } => ReflowError::NetworkUnavailable { message },
            NetError::AlreadyJoined { .. } => ReflowError::AlreadyJoined { message },
            NetError::Refused { .. }
            | NetError::PeerNotAMember { .. }
            | NetError::NetworkNotServed { .. } => ReflowError::Refused { message },
            NetError::Bind { .. }
            | NetError::Unreachable { .. }
            | NetError::Timeout { .. }
            | NetError::ConnectionLost { .. }
            | NetError::Protocol { .. }
            | NetError::JoinFailed { .. } => ReflowError::Network { message },
            NetError::InviteRefused { .. } => ReflowError::InviteRefused { message },
            _ => ReflowError::Other { message },
        }
    }
}

/// Result of the bindings.
pub type Result<T, E = ReflowError> = std::result::Result<T, E>;

/// A rule set from its JSON or a template name.
fn rule_set(text: &str) -> Result<reflow::RuleSet> {
    if let Some(t) = reflow::rules::template(text) {
        return Ok(t);
    }
    reflow::RuleSet::from_json(text).map_err(|e| ReflowError::Invalid {
        message: e.to_string(),
    })
}

/// The names of the pilot rule-set templates.
#[uniffi::export]
pub fn rule_templates() -> Vec<String> {
    reflow::rules::TEMPLATES
        .iter()
        .map(|t| t.name.to_string())
        .collect()
}

fn invalid_arg(message: impl std::fmt::Display) -> ReflowError {
    ReflowError::InvalidArgument {
        message: message.to_string(),
    }
}

pub(crate) fn parse_network(text: &str) -> Result<NetworkId> {
    NetworkId::from_str(text).map_err(|e| invalid_arg(format!("network id `{text}`: {e}")))
}

fn agent_of(agent: AgentInput) -> Agent {
    if agent.organization {
        Agent::organization(agent.id, agent.name)
    } else {
        Agent::person(agent.id, agent.name)
    }
}

pub(crate) fn parse_device(text: &str) -> Result<DeviceId> {
    DeviceId::from_str(text).map_err(|e| invalid_arg(format!("device id `{text}`: {e}")))
}

/// The runtime the nodes' tasks run on (multi-threaded, created on first use, lives as long
/// as the process).
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("reflow")
            .build()
            .unwrap_or_else(|e| panic!("cannot start the reflow runtime: {e}"))
    })
}

/// Run `fut` on [`runtime`] and wait for it from whatever executor awaits the result.
async fn on_runtime<T, F>(fut: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    runtime().spawn(fut).await.map_err(|e| ReflowError::Other {
        message: format!("task failed: {e}"),
    })?
}

/// How to open a node.
#[derive(Debug, Clone, uniffi::Record)]
pub struct OpenConfig {
    /// Directory of the node's store; created if missing.
    pub data_dir: String,
    /// Talk on loopback only (127.0.0.1, no relays, no port mapping, no address lookup):
    /// for tests and several nodes on one machine. `false`: every interface, public relays.
    #[uniffi(default = false)]
    pub loopback: bool,
}

/// Open (or create) a node on `config.data_dir`. It accepts connections at once.
#[uniffi::export(async_runtime = "tokio")]
pub async fn open_node(config: OpenConfig) -> Result<Arc<ReflowNode>> {
    let node_config = if config.loopback {
        NodeConfig::loopback(PathBuf::from(&config.data_dir))
    } else {
        NodeConfig::new(PathBuf::from(&config.data_dir))
    };
    let node = on_runtime(async move { Ok(Node::open(node_config).await?) }).await?;
    Ok(Arc::new(ReflowNode {
        node: Mutex::new(Some(Arc::new(node))),
    }))
}

/// An open node: a device's store, key, endpoint and replicas.
#[derive(Debug, uniffi::Object)]
pub struct ReflowNode {
    node: Mutex<Option<Arc<Node>>>,
}

impl ReflowNode {
    fn node(&self) -> Result<Arc<Node>> {
        self.node
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| ReflowError::Closed {
                message: "the node is closed".into(),
            })
    }

    /// Run a synchronous engine call inside the runtime's context (the engine may spawn).
    fn with_node<T>(&self, f: impl FnOnce(&Node) -> Result<T>) -> Result<T> {
        let node = self.node()?;
        let _guard = runtime().enter();
        f(&node)
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl ReflowNode {
    /// This node's device id (hex); an admin adds it with `add_member`.
    pub fn device_id(&self) -> Result<String> {
        self.with_node(|n| Ok(n.device().to_string()))
    }

    /// Where peers can dial this node.
    pub fn addr(&self) -> Result<PeerAddrRecord> {
        self.with_node(|n| Ok(n.addr().into()))
    }

    /// The networks this node holds (ids, hex), unavailable ones included.
    pub fn networks(&self) -> Result<Vec<String>> {
        self.with_node(|n| Ok(n.networks().iter().map(ToString::to_string).collect()))
    }

    /// Whether `network` can be used, or why not (its replica could not be opened).
    pub fn network_status(&self, network: String) -> Result<NetworkStatusRecord> {
        let network = parse_network(&network)?;
        self.with_node(|n| Ok(n.network_status(network)?.into()))
    }

    /// The networks this node holds but could not open, and why (empty when all is well).
    pub fn network_problems(&self) -> Result<Vec<NetworkProblemRecord>> {
        self.with_node(|n| {
            Ok(n.network_problems()
                .into_iter()
                .map(NetworkProblemRecord::from)
                .collect())
        })
    }

    /// Create a network with this device as its first admin, acting for `agent`. Returns
    /// the network id.
    pub fn create_network(&self, name: String, agent: AgentInput) -> Result<String> {
        let agent = agent_of(agent);
        self.with_node(|n| Ok(n.create_network(&name, agent)?.to_string()))
    }

    /// Add an agent (person or organization) to the ledger.
    pub fn create_agent(&self, network: String, agent: AgentInput) -> Result<String> {
        let network = parse_network(&network)?;
        let agent = agent_of(agent);
        self.with_node(|n| Ok(n.write(network, |l| l.create(agent))?.to_string()))
    }

    /// Add a unit of measure (`id` as used in quantities, e.g. "kg").
    pub fn create_unit(
        &self,
        network: String,
        id: String,
        label: String,
        symbol: String,
    ) -> Result<String> {
        let network = parse_network(&network)?;
        let unit = Unit::new(id, label, symbol);
        self.with_node(|n| Ok(n.write(network, |l| l.create(unit))?.to_string()))
    }

    /// Add a resource specification (a kind of resource, e.g. "bike").
    pub fn create_resource_specification(
        &self,
        network: String,
        id: String,
        name: String,
    ) -> Result<String> {
        let network = parse_network(&network)?;
        let spec = ResourceSpecification::new(id, name);
        self.with_node(|n| Ok(n.write(network, |l| l.create(spec))?.to_string()))
    }

    /// Record one economic event; returns its id.
    pub fn record_event(&self, network: String, event: EventInput) -> Result<String> {
        let network = parse_network(&network)?;
        let event = NewEvent::try_from(event)?;
        self.with_node(|n| Ok(n.record_event(network, event)?.to_string()))
    }

    /// Record several events in one change, all or nothing; returns their ids.
    pub fn record_events(&self, network: String, events: Vec<EventInput>) -> Result<Vec<String>> {
        let network = parse_network(&network)?;
        let events = events
            .into_iter()
            .map(NewEvent::try_from)
            .collect::<Result<Vec<_>>>()?;
        self.with_node(|n| {
            let ids = n.write(network, |l| l.record_events(events))?;
            Ok(ids.iter().map(ToString::to_string).collect())
        })
    }

    /// Correct event `corrected` with `event` (whose `corrects` is set to it); returns the
    /// correcting event's id.
    pub fn correct_event(
        &self,
        network: String,
        corrected: String,
        event: EventInput,
    ) -> Result<String> {
        let network = parse_network(&network)?;
        let mut event = NewEvent::try_from(event)?;
        event.event.corrects = Some(Id::from(corrected));
        self.with_node(|n| Ok(n.record_event(network, event)?.to_string()))
    }

    /// One event, if the ledger has it.
    pub fn event(&self, network: String, id: String) -> Result<Option<EventRecord>> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            Ok(n.read(network, |r| r.ledger().event(&Id::from(id)))?
                .map(EventRecord::from))
        })
    }

    /// The events matching `filter`, in causal order.
    pub fn events(&self, network: String, filter: EventFilterInput) -> Result<Vec<EventRecord>> {
        let network = parse_network(&network)?;
        let filter = EventFilter::try_from(filter)?;
        self.with_node(|n| {
            Ok(n.read(network, |r| r.ledger().events(&filter))?
                .into_iter()
                .map(EconomicEvent::into)
                .collect())
        })
    }

    /// One resource as the events made it, if it exists.
    pub fn resource(&self, network: String, id: String) -> Result<Option<ResourceRecord>> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            Ok(n.read(network, |r| r.ledger().resource(&Id::from(id)))?
                .map(ResourceRecord::from))
        })
    }

    /// The resources matching `filter`.
    pub fn inventory(
        &self,
        network: String,
        filter: ResourceFilterInput,
    ) -> Result<Vec<ResourceRecord>> {
        let network = parse_network(&network)?;
        let filter = filter.into();
        self.with_node(|n| {
            Ok(n.read(network, |r| r.ledger().inventory(&filter))?
                .into_iter()
                .map(ResourceRecord::from)
                .collect())
        })
    }

    /// Trace `resource` backwards: the events, processes and resources it came from.
    pub fn trace(&self, network: String, resource: String) -> Result<TraceRecord> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            Ok(n.read(network, |r| r.ledger().trace(&Id::from(resource)))??
                .into())
        })
    }

    /// Track `resource` forwards: the events, processes and resources it went into.
    pub fn track(&self, network: String, resource: String) -> Result<TraceRecord> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            Ok(n.read(network, |r| r.ledger().track(&Id::from(resource)))??
                .into())
        })
    }

    /// The ledger's conflicts, in causal order.
    pub fn conflicts(&self, network: String) -> Result<Vec<ConflictRecord>> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            Ok(n.read(network, |r| r.ledger().conflicts())?
                .into_iter()
                .map(ConflictRecord::from)
                .collect())
        })
    }

    /// The network's rule set in force, as JSON (docs/rules.md), or `None` if it has none.
    pub fn rules(&self, network: String) -> Result<Option<String>> {
        let network = parse_network(&network)?;
        self.with_node(|n| Ok(n.read(network, |r| r.rules())?.map(|s| s.to_json())))
    }

    /// Publish `rules_json` (a rule set's JSON, or a template name: food-market, repair-cafe,
    /// collection, time-bank) as the network's next rule-set version (admins only). Returns
    /// the version.
    pub fn set_rules(&self, network: String, rules_json: String) -> Result<u64> {
        let network = parse_network(&network)?;
        let set = rule_set(&rules_json)?;
        self.with_node(|n| Ok(n.set_rules(network, set)?))
    }

    /// Try a draft rule set (JSON or template name) against `event` as if this device
    /// recorded it now; nothing is written.
    pub fn test_rules(
        &self,
        network: String,
        rules_json: String,
        event: EventInput,
    ) -> Result<Vec<RuleFindingRecord>> {
        let network = parse_network(&network)?;
        let set = rule_set(&rules_json)?;
        let event = NewEvent::try_from(event)?.event;
        self.with_node(|n| {
            Ok(n.read(network, |r| r.test_rules(&set, &event))??
                .into_iter()
                .map(RuleFindingRecord::from)
                .collect())
        })
    }

    /// The changes the network's refuse rules quarantined.
    pub fn rule_refusals(&self, network: String) -> Result<Vec<RuleRefusalRecord>> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            Ok(n.read(network, |r| {
                r.rule_refusals()
                    .iter()
                    .map(|q| RuleRefusalRecord {
                        change: q.change.hash().to_string(),
                        reason: q.reason.to_string(),
                        rule: match &q.reason {
                            reflow::Rejection::RuleRefused { rule, .. } => rule.clone(),
                            _ => String::new(),
                        },
                    })
                    .collect()
            })?)
        })
    }

    /// The replica's heads (change hashes, hex).
    pub fn heads(&self, network: String) -> Result<Vec<String>> {
        let network = parse_network(&network)?;
        self.with_node(|n| Ok(n.heads(network)?.iter().map(ToString::to_string).collect()))
    }

    /// The network's members.
    pub fn members(&self, network: String) -> Result<Vec<MemberRecord>> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            Ok(n.read(network, |r| r.members())?
                .into_iter()
                .map(MemberRecord::from)
                .collect())
        })
    }

    /// Admit `device` with `role`, acting for agent `agent` (admins only).
    pub fn add_member(
        &self,
        network: String,
        device: String,
        role: RoleKind,
        agent: String,
    ) -> Result<()> {
        let network = parse_network(&network)?;
        let device = parse_device(&device)?;
        self.with_node(|n| Ok(n.add_member(network, device, role.into(), Id::from(agent))?))
    }

    /// Remove `device` (admins only).
    pub fn remove_member(&self, network: String, device: String) -> Result<()> {
        let network = parse_network(&network)?;
        let device = parse_device(&device)?;
        self.with_node(|n| Ok(n.remove_member(network, device)?))
    }

    /// Make a ticket to join `network` (admins only), as text to hand over (copy, QR code).
    /// It grants `role`, acting for agent `agent` (or, if none, for the agent the newcomer
    /// describes in `join_with_ticket`), is valid for `ttl_seconds`, and is for `device` only
    /// (a device id) or, if none, for whoever holds it (once).
    pub fn invite(
        &self,
        network: String,
        role: RoleKind,
        agent: Option<String>,
        ttl_seconds: u64,
        device: Option<String>,
    ) -> Result<String> {
        let network = parse_network(&network)?;
        let invitee = match device {
            Some(d) => Invitee::Device(parse_device(&d)?),
            None => Invitee::Anyone,
        };
        let ttl = std::time::Duration::from_secs(ttl_seconds);
        self.with_node(|n| {
            Ok(
                n.invite(network, role.into(), agent.map(Id::from), ttl, invitee)?
                    .to_string(),
            )
        })
    }

    /// Join a network with a ticket's text: the ticket's inviter admits this device (acting
    /// for the ticket's agent or, if it names none, for `agent`), then this node fetches the
    /// history and keeps syncing. Returns the network id. A text that is not a ticket fails
    /// with `InvalidTicket` (before any network traffic), a refused invite with
    /// `InviteRefused`.
    pub async fn join_with_ticket(&self, ticket: String, agent: AgentInput) -> Result<String> {
        let ticket = Ticket::from_str(ticket.trim()).map_err(|e| ReflowError::InvalidTicket {
            message: e.to_string(),
        })?;
        let agent = agent_of(agent);
        let node = self.node()?;
        on_runtime(async move { Ok(node.join_with_ticket(&ticket, agent).await?.to_string()) })
            .await
    }

    /// Join a network this device was admitted to, through `peer` (usually the admin who
    /// added it), then keep syncing with it.
    pub async fn join(&self, network: String, peer: PeerAddrRecord) -> Result<()> {
        let network = parse_network(&network)?;
        let peer = PeerAddr::try_from(peer)?;
        let node = self.node()?;
        on_runtime(async move { Ok(node.join(network, &peer).await?) }).await
    }

    /// Connect to a member `peer` of `network` and keep syncing with it.
    pub async fn connect(&self, network: String, peer: PeerAddrRecord) -> Result<()> {
        let network = parse_network(&network)?;
        let peer = PeerAddr::try_from(peer)?;
        let node = self.node()?;
        on_runtime(async move { Ok(node.connect(network, &peer).await?) }).await
    }

    /// Close the connections to `peer` in `network` (connect again to resume).
    pub fn disconnect(&self, network: String, peer: String) -> Result<()> {
        let network = parse_network(&network)?;
        let peer = parse_device(&peer)?;
        self.with_node(|n| Ok(n.disconnect(network, peer)?))
    }

    /// The peers of `network` this node has been connected to or refused.
    pub fn peers(&self, network: String) -> Result<Vec<PeerStatusRecord>> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            Ok(n.peers(network)?
                .into_iter()
                .map(PeerStatusRecord::from)
                .collect())
        })
    }

    /// Call `listener` on every new change of `network` (made here or received), from a
    /// background thread, until the subscription is cancelled or the node closes.
    pub fn subscribe(
        &self,
        network: String,
        listener: Arc<dyn LedgerListener>,
    ) -> Result<Arc<Subscription>> {
        let network = parse_network(&network)?;
        let mut updates = self.with_node(|n| Ok(n.subscribe(network)?))?;
        let task = runtime().spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match updates.recv().await {
                    Ok(update) => {
                        let listener = listener.clone();
                        let record = LedgerUpdateRecord::from(update);
                        // The foreign callback may block: keep it off the async workers.
                        let done =
                            tokio::task::spawn_blocking(move || listener.on_update(record)).await;
                        if done.is_err() {
                            break;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a ledger listener missed updates");
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        Ok(Arc::new(Subscription::new(task)))
    }

    /// Call `listener` on the node's connection events (connected, disconnected, refused).
    pub fn subscribe_node_events(
        &self,
        listener: Arc<dyn NodeListener>,
    ) -> Result<Arc<Subscription>> {
        let mut events = self.with_node(|n| Ok(n.events()))?;
        let task = runtime().spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(event) => {
                        let listener = listener.clone();
                        let record = NodeEventRecord::from(event);
                        let done =
                            tokio::task::spawn_blocking(move || listener.on_event(record)).await;
                        if done.is_err() {
                            break;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a node listener missed events");
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        Ok(Arc::new(Subscription::new(task)))
    }

    /// Shut the node down (every change is already durable). Afterwards every call fails with
    /// `Closed`; the data directory can be opened again. Fails with `Other` if a network call
    /// is still running on this node.
    pub async fn shutdown(&self) -> Result<()> {
        let node = self
            .node
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(node) = node else {
            return Ok(());
        };
        let node = match Arc::try_unwrap(node) {
            Ok(node) => node,
            Err(node) => {
                *self.node.lock().unwrap_or_else(PoisonError::into_inner) = Some(node);
                return Err(ReflowError::Other {
                    message: "a call on this node is still running: close it after it returns"
                        .into(),
                });
            }
        };
        on_runtime(async move { Ok(node.close().await?) }).await
    }
}

/// Receives a network's ledger updates (implemented by the host).
#[uniffi::export(with_foreign)]
pub trait LedgerListener: Send + Sync {
    /// New changes were stored.
    fn on_update(&self, update: LedgerUpdateRecord);
}

/// Receives a node's connection events (implemented by the host).
#[uniffi::export(with_foreign)]
pub trait NodeListener: Send + Sync {
    /// Something happened on a connection.
    fn on_event(&self, event: NodeEventRecord);
}

/// A running subscription; `cancel` stops it (it also ends when the node closes).
#[derive(Debug, uniffi::Object)]
pub struct Subscription {
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Subscription {
    fn new(task: JoinHandle<()>) -> Subscription {
        Subscription {
            task: Mutex::new(Some(task)),
        }
    }
}

#[uniffi::export]
impl Subscription {
    /// Stop calling the listener.
    pub fn cancel(&self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_keep_their_kind() {
        let not_found = reflow::Error::NotFound {
            kind: reflow::ObjectKind::EconomicResource,
            id: Id::from("apples"),
        };
        assert!(
            matches!(ReflowError::from(not_found), ReflowError::NotFound { message } if message.contains("apples"))
        );
        assert!(matches!(
            ReflowError::from(NetError::Closed),
            ReflowError::Closed { .. }
        ));
        assert!(matches!(
            ReflowError::from(NetError::Core(reflow::Error::ResourceNeedsEvent)),
            ReflowError::Invalid { .. }
        ));
    }

    #[test]
    fn bad_arguments_are_typed() {
        assert!(matches!(
            parse_network("nope"),
            Err(ReflowError::InvalidArgument { .. })
        ));
        assert!(matches!(
            parse_device("12"),
            Err(ReflowError::InvalidArgument { .. })
        ));
        let bad = MeasureRecord {
            value: "two".into(),
            unit: "kg".into(),
        };
        assert!(matches!(
            reflow::Measure::try_from(bad),
            Err(ReflowError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn bad_ticket_text_is_invalid_ticket_before_any_traffic() {
        let err = runtime()
            .block_on(async {
                let dir = std::env::temp_dir()
                    .join(format!("reflow-bindings-ticket-{}", std::process::id()));
                let node = open_node(OpenConfig {
                    data_dir: dir.to_string_lossy().into_owned(),
                    loopback: true,
                })
                .await?;
                let agent = AgentInput {
                    id: "bo".into(),
                    name: "Bo".into(),
                    organization: false,
                };
                let result = node.join_with_ticket("reflow1abc".into(), agent).await;
                node.shutdown().await?;
                let _ = std::fs::remove_dir_all(&dir);
                result
            })
            .expect_err("not a ticket");
        assert!(matches!(err, ReflowError::InvalidTicket { .. }), "{err:?}");
    }
}
