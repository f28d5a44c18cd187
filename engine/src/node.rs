//! A Reflow node: a device's store, key and iroh endpoint, and its replicas of every network
//! it belongs to, kept in sync with the peers it is connected to.
//!
//! ```text
//!   Node::write ──► DurableReplica::write (signed, fsync'd) ──► LedgerUpdate to subscribers
//!                                                          └──► pushed to every connected peer
//!   peer frame ──► SyncSession::handle_frame ──► DurableReplica::receive (checked, fsync'd)
//!                     ──► LedgerUpdate ──► pushed on to the network's other peers (A-B-C hop)
//! ```
//!
//! Every change is durable before anything is sent or forwarded. What each network does
//! with its connections (the sync sessions, what arrives, what is forwarded, refusals, the
//! redial policy, the address book) is decided by its sans-I/O protocol core,
//! [`proto::NetworkProto`], and a device's bootstrap of a network it joins by a second
//! machine, [`join::Join`]; this module and its files carry out their effects (frames,
//! verifying and storing, dials, timers) and feed them what happens, and the whole-node
//! simulator (tests) runs the same machines over simulated links and faulty disks. The transport (one QUIC
//! connection per peer and network, one stream of length-prefixed frames on it, membership
//! checked when a peer connects) is described in [`crate::net`].
//!
//! Joining: an admin makes a [`Ticket`] ([`Node::invite`]); the newcomer's
//! [`Node::join_with_ticket`] dials the admin's node, which redeems the invite by its own
//! clock (the one frame a device that is not a member may send, [`Frame::Redeem`]), and the
//! same connection then carries the history (the admin's saved document and one attestation
//! per actor, [`Frame::Document`], judged by [`Replica::join_document`]) and the sync
//! ([`SyncSession::bootstrap`]). A
//! device an admin added by id joins with [`Node::join`]. Peers are remembered and redialed
//! with backoff ([`reconnect`]).
//!
//! A network whose stored replica cannot be opened is kept unavailable, not fatal: the node
//! opens its other networks as usual ([`status`]).
//!
//! A ledger of schema version 1 is migrated to version 2 when an admin's node opens it (one
//! signed, durable change, synced like a local write); a member's node keeps it read-only
//! until that change arrives (docs/data-model.md, "Migration from version 1").
//!
//! Threading: the node runs on the caller's tokio runtime. Ledger reads and writes take a
//! short lock on the network's replica and are synchronous (a write returns after its fsync);
//! no lock is ever held across an `.await`. What a connection receives is judged and stored
//! on tokio's blocking pool ([`off_runtime`]): signature checks, admission and the fsync of a
//! batch, a whole history when joining, and an invite's redemption never hold up a runtime
//! thread.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use automerge::ChangeHash;
use iroh::endpoint::{
    presets, BindOpts, Connection, Incoming, PortmapperConfig, ReadError, RecvStream, SendStream,
    VarInt, WriteError,
};
use iroh::{Endpoint, NetReportConfig, RelayMode, RelayUrl, SecretKey, TransportAddr};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::identity::{DeviceId, DeviceKey, NetworkId, SignedChange};
use crate::ledger::Ledger;
use crate::membership::Role;
use crate::net::{
    alpn, close_code, connect_error, connection_error, is_normal_close, network_of_alpn,
    read_frame, read_frame_limited, write_frame, NetError, NetResult, PeerAddr, ReadFrameError,
};
use crate::replica::Replica;
use crate::store::{CompactionPolicy, DurableReplica, Store};
use crate::sync::{Frame, RefuseCode, SyncSession, MAX_FRAME_LEN};
use crate::vf::{Agent, Id, NewEvent};

mod accept;
mod dial;
pub mod discovery;
mod endpoint;
mod gate;
pub mod join;
mod link;
mod network;
pub mod proto;
pub mod reconnect;
#[cfg(test)]
mod sim;
pub mod status;
pub mod ticket;

use dial::gives_up;
use endpoint::bind;
use link::{close, read_error, refuse_on, refused, write_error, Link, Opening};
use network::Net;

pub use reconnect::Backoff;
pub use status::{NetworkProblem, NetworkStatus, UnavailableKind};
pub use ticket::{Invitee, Ticket, TicketError};

/// File name of the node's store inside its data directory.
pub const STORE_FILE: &str = "reflow.redb";

/// Frames read ahead of processing, per connection.
const FRAME_QUEUE: usize = 64;

/// Most frames stored in one commit.
const MAX_BATCH: usize = 64;

/// Longest close reason sent (QUIC carries it in one packet).
const MAX_REASON_LEN: usize = 400;

/// How long a refusing node waits for the refused peer to read the refusal and close the
/// connection before closing it itself.
const REFUSE_LINGER: Duration = Duration::from_secs(2);

/// Capacity of the ledger-update and node-event channels (a slow subscriber loses the oldest
/// and is told how many it missed).
const CHANNEL_CAPACITY: usize = 1024;

/// Which relay servers the endpoint uses to reach peers it has no direct path to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayConfig {
    /// No relays: peers are reached on their direct addresses only (LAN, loopback, tests).
    Disabled,
    /// The public relays of the iroh project (number 0).
    Default,
    /// These relay servers (URLs).
    Custom(Vec<String>),
}

/// How to open a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Directory of the node's store ([`STORE_FILE`]); created if missing.
    pub data_dir: PathBuf,
    /// UDP address the endpoint binds. `0.0.0.0:0` (the default) listens on every interface,
    /// on a free port, and on IPv6 as well if the system has it; a specific address binds
    /// that address only (tests bind `127.0.0.1:0`).
    pub bind_addr: SocketAddr,
    /// Relay servers. A network can run its own: an iroh relay server (the `iroh-relay`
    /// crate's) named here as [`RelayConfig::Custom`] on every device, and put by the node in
    /// the tickets it issues ([`Node::addr`]), so that devices that cannot reach each other
    /// directly meet through it (docs/architecture.md, "Relays").
    pub relay: RelayConfig,
    /// Use direct UDP paths (`bind_addr`). `false`: no IP socket at all, peers are reached
    /// and reach this node only through the relays (for a device behind a network that
    /// blocks peer-to-peer traffic, and for tests of the relay path).
    pub direct_paths: bool,
    /// Ask the home router for a port mapping (UPnP, PCP, NAT-PMP).
    pub portmapper: bool,
    /// Longest wait for a dial, a handshake, or a join's first answer.
    pub connect_timeout: Duration,
    /// Find the devices of this node's networks on the local network (mDNS) and connect to
    /// them, with no ticket and no internet; see [`discovery`]. Advertises this device's id
    /// and addresses on the link.
    pub mdns: bool,
    /// Redial the members this node was connected to when it opens and after a connection
    /// is lost, with this backoff ([`reconnect`]); `None`: only connect when asked.
    pub reconnect: Option<Backoff>,
    /// When each replica folds its stored changes into a snapshot by itself (by size or
    /// change count; [`CompactionPolicy::default`] keeps the store within twice the saved
    /// document plus 256 KiB). Tests use a small policy to compact often.
    pub compaction: CompactionPolicy,
}

impl NodeConfig {
    /// Defaults: every interface, public relays, port mapping on, local-network discovery on,
    /// automatic reconnection ([`Backoff::default`]), 10 s connect timeout, automatic
    /// compaction ([`CompactionPolicy::default`]).
    ///
    /// With a bind port of 0, a node reopened from the same data directory first tries the
    /// port it had last time, so that peers that know its address reach it again.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            bind_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            relay: RelayConfig::Default,
            direct_paths: true,
            portmapper: true,
            connect_timeout: Duration::from_secs(10),
            mdns: true,
            reconnect: Some(Backoff::default()),
            compaction: CompactionPolicy::default(),
        }
    }

    /// A node that talks on loopback only: bound to `127.0.0.1`, no relays, no port mapping,
    /// no probes, no local-network discovery, no automatic reconnection (set
    /// [`NodeConfig::reconnect`] to have it). For tests and for several nodes on one machine.
    pub fn loopback(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            relay: RelayConfig::Disabled,
            portmapper: false,
            mdns: false,
            reconnect: None,
            ..NodeConfig::new(data_dir)
        }
    }
}

/// New changes in a network's replica (made here or received), for applications to update
/// their views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerUpdate {
    /// The network.
    pub network: NetworkId,
    /// The changes, in the order applied.
    pub changes: Vec<ChangeHash>,
    /// The replica's heads after them.
    pub heads: Vec<ChangeHash>,
    /// The peer they came from; `None` if made on this node.
    pub from: Option<DeviceId>,
}

/// What the node knows of a peer of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub device: DeviceId,
    /// Whether a connection to it is open now.
    pub connected: bool,
    /// The heads it last told us it has, if it has.
    pub their_heads: Option<Vec<ChangeHash>>,
    /// The last error of a connection with it (refusal, protocol violation, lost connection).
    pub last_error: Option<String>,
    /// Where it was last reached (the address book), if known.
    pub addr: Option<PeerAddr>,
    /// When the node will next try to reconnect to it, if it is trying.
    pub next_retry: Option<SystemTime>,
    /// Reconnection attempts so far (since the connection was lost).
    pub retries: u32,
}

/// Something that happened on the node's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A sync connection opened.
    Connected {
        /// The network.
        network: NetworkId,
        /// The peer.
        peer: DeviceId,
        /// Whether the peer dialed us.
        inbound: bool,
    },
    /// A sync connection closed.
    Disconnected {
        /// The network.
        network: NetworkId,
        /// The peer.
        peer: DeviceId,
        /// Why, if not a normal close.
        error: Option<String>,
    },
    /// A connection was refused: by this node (`by_us`) or by the peer.
    Refused {
        /// The network.
        network: NetworkId,
        /// The peer.
        peer: DeviceId,
        /// Whether this node refused the peer (else the peer refused this node).
        by_us: bool,
        /// Why.
        code: RefuseCode,
        /// The reason, readable.
        reason: String,
    },
    /// An incoming connection failed its handshake (e.g. a node of another network, or of
    /// another protocol version: no ALPN in common).
    HandshakeFailed {
        /// What failed.
        detail: String,
    },
    /// A Reflow device was found on the local network (see [`discovery`]). The node connects
    /// to it for each of `networks` (the events [`NodeEvent::Connected`] follow).
    Discovered {
        /// Where it can be dialed.
        peer: PeerAddr,
        /// The networks of this node in whose replica it is a member (may be empty).
        networks: Vec<NetworkId>,
    },
    /// This (admin's) node redeemed an invite: `device` is a member now, and syncs on the
    /// connection it presented the invite on.
    InviteRedeemed {
        /// The network.
        network: NetworkId,
        /// The new member.
        device: DeviceId,
        /// Its role.
        role: Role,
        /// The invite's nonce (recorded in the ledger).
        nonce: String,
    },
    /// The node will try to reconnect to a member after `after` ([`reconnect`]).
    RetryScheduled {
        /// The network.
        network: NetworkId,
        /// The peer.
        peer: DeviceId,
        /// Which attempt this will be (1, 2, …).
        attempt: u32,
        /// In how long.
        after: Duration,
    },
    /// A peer sent changes that were refused and quarantined.
    ChangesRefused {
        /// The network.
        network: NetworkId,
        /// The peer that sent them.
        peer: DeviceId,
        /// How many.
        count: usize,
        /// The first reason.
        reason: String,
    },
}

/// Run blocking work (signature checks, admission, folding, fsync) on tokio's blocking pool,
/// not on a runtime thread that other connections' tasks need, in the caller's tracing span.
/// A panic inside is passed on; `None` if the runtime is shutting down and dropped the task.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(work)).await {
        Ok(v) => Some(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A Reflow node. See the module documentation.
#[derive(Debug)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    key: DeviceKey,
    device: DeviceId,
    endpoint: Endpoint,
    config: NodeConfig,
    networks: RwLock<HashMap<NetworkId, Arc<Net>>>,
    /// The networks whose replica could not be opened ([`status`]): listed, refused, kept.
    unavailable: RwLock<BTreeMap<NetworkId, NetworkProblem>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    events: broadcast::Sender<NodeEvent>,
    next_link: AtomicU64,
    /// The runtime the node was opened on (its tasks run there).
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("device", &self.device)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Open (or create) the node in `config.data_dir`: its store, its device key, its
    /// replicas, and its endpoint, which starts accepting connections at once.
    ///
    /// A network whose replica cannot be opened does not fail the node: it is kept
    /// unavailable, with the reason ([`Node::network_problems`], an `error!` in the log), and
    /// every other network opens, serves and syncs as usual ([`status`]). The node fails to
    /// open only when the store itself cannot be (a typed [`crate::Error`]: damaged, locked,
    /// of a newer version, not a store) or the endpoint cannot be bound.
    pub async fn open(config: NodeConfig) -> NetResult<Node> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NetError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let store = Store::open(config.data_dir.join(STORE_FILE))?;
        let key = store.device_key()?;
        let device = key.id();
        let span = info_span!("node", device = %short(&device));
        let events = broadcast::channel(CHANNEL_CAPACITY).0;
        let mut networks = HashMap::new();
        let mut unavailable = BTreeMap::new();
        for name in store.networks()? {
            let Ok(id) = name.parse::<NetworkId>() else {
                debug!(%name, "not a network replica; skipped");
                continue;
            };
            // One network that cannot be opened does not stop the others (see [`status`]).
            let replica = match span.in_scope(|| open_replica(&store, id, &key)) {
                Ok(replica) => replica,
                Err(problem) => {
                    span.in_scope(|| {
                        error!(
                            network = %id,
                            kind = %problem.kind,
                            reason = %problem.reason,
                            "this network's replica cannot be opened; it is unavailable \
                             (its stored data is kept as it is), the other networks open as usual"
                        )
                    });
                    unavailable.insert(id, problem);
                    continue;
                }
            };
            let mut replica = replica;
            replica.set_compaction_policy(config.compaction);
            span.in_scope(|| migrate_if_admin(&mut replica));
            let net = Net::new(replica, device, config.reconnect, reconnect::os_jitter());
            networks.insert(id, Arc::new(net));
        }
        let alpns = networks
            .keys()
            .chain(unavailable.keys())
            .map(alpn)
            .collect();
        let endpoint = bind(&config, &key, alpns, &store)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| {
            info!(
                addr = ?endpoint.bound_sockets(),
                networks = networks.len(),
                unavailable = unavailable.len(),
                "node open"
            )
        });
        let inner = Arc::new(Inner {
            store,
            key,
            device,
            endpoint,
            config,
            networks: RwLock::new(networks),
            unavailable: RwLock::new(unavailable),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            events,
            next_link: AtomicU64::new(1),
            runtime: tokio::runtime::Handle::current(),
        });
        let accept = inner.clone();
        inner
            .tracker
            .spawn(async move { accept.accept_loop().await }.instrument(span.clone()));
        if inner.config.mdns {
            span.in_scope(|| discovery::start(&inner));
        }
        span.in_scope(|| {
            let nets: Vec<Arc<Net>> = inner.read_networks().values().cloned().collect();
            for net in nets {
                net.start(&inner);
                // Redial the address book at once (if reconnection is on).
                net.post(proto::Event::Started);
            }
        });
        Ok(Node { inner })
    }

    /// This node's device id (also its endpoint id).
    pub fn device(&self) -> DeviceId {
        self.inner.device
    }

    /// Where peers can dial this node: its id and its direct (and relay) addresses. The
    /// relays of [`RelayConfig::Custom`] are named even before the endpoint has reached them,
    /// so that a ticket issued right after opening carries the network's relay.
    pub fn addr(&self) -> PeerAddr {
        let addr = self.inner.endpoint.addr();
        let mut addr =
            PeerAddr::from_endpoint_addr(&addr).unwrap_or_else(|| PeerAddr::new(self.inner.device));
        if let RelayConfig::Custom(urls) = &self.inner.config.relay {
            if addr.relays.is_empty() {
                addr.relays = urls.clone();
            }
        }
        addr
    }

    /// The networks this node holds a replica of, unavailable ones included (see
    /// [`Node::network_status`]).
    pub fn networks(&self) -> Vec<NetworkId> {
        let mut ids: Vec<NetworkId> = self.inner.read_networks().keys().copied().collect();
        ids.extend(self.inner.read_unavailable().keys().copied());
        ids.sort();
        ids.dedup();
        ids
    }

    /// Whether `network` can be used: [`NetworkStatus::Unavailable`] says why not (its
    /// replica could not be opened; see [`status`]). [`NetError::UnknownNetwork`] if this
    /// node does not hold it.
    pub fn network_status(&self, network: NetworkId) -> NetResult<NetworkStatus> {
        match self.inner.net(network) {
            Ok(_) => Ok(NetworkStatus::Available),
            Err(NetError::NetworkUnavailable { kind, reason, .. }) => {
                Ok(NetworkStatus::Unavailable { kind, reason })
            }
            Err(e) => Err(e),
        }
    }

    /// The networks this node holds but could not open, and why (empty when all is well).
    pub fn network_problems(&self) -> Vec<NetworkProblem> {
        self.inner.read_unavailable().values().cloned().collect()
    }

    /// Create a network with this device as its first admin, acting for `agent`.
    pub fn create_network(&self, name: &str, agent: Agent) -> NetResult<NetworkId> {
        self.inner.live()?;
        let (replica, signed) = Replica::create_network(name, self.inner.key.clone(), agent)?;
        let id = replica.network();
        let durable = self.inner.store.create_replica(replica, &signed)?;
        self.inner.install(durable);
        info!(network = %id, name, "network created");
        Ok(id)
    }

    /// Run a ledger mutation as this device: signed, stored durably, then pushed to the
    /// connected peers at once. Nothing is written if the mutation fails or this device may
    /// not write.
    pub fn write<R>(
        &self,
        network: NetworkId,
        mutation: impl FnOnce(&mut Ledger) -> crate::Result<R>,
    ) -> NetResult<R> {
        let net = self.inner.net(network)?;
        let mut replica = lock(&net.replica);
        let (result, signed) = match replica.write(mutation) {
            Ok(v) => v,
            Err(e) => return Err(self.inner.failed(&net, replica, e)),
        };
        if !signed.is_empty() {
            self.inner.committed(&net, replica, signed);
        }
        Ok(result)
    }

    /// Record one economic event (see [`Node::write`]).
    pub fn record_event(&self, network: NetworkId, event: impl Into<NewEvent>) -> NetResult<Id> {
        let event = event.into();
        self.write(network, |l| l.record_event(event))
    }

    /// Read the network's replica.
    pub fn read<R>(&self, network: NetworkId, read: impl FnOnce(&Replica) -> R) -> NetResult<R> {
        let net = self.inner.net(network)?;
        let replica = lock(&net.replica);
        Ok(read(replica.replica()))
    }

    /// The replica's heads.
    pub fn heads(&self, network: NetworkId) -> NetResult<Vec<ChangeHash>> {
        self.read(network, |r| r.ledger().heads())
    }

    /// Admit `device` with `role`, acting for `agent` (admins only). The record is pushed to
    /// the connected peers at once; the device can then `join` through any of them.
    pub fn add_member(
        &self,
        network: NetworkId,
        device: DeviceId,
        role: Role,
        agent: Id,
    ) -> NetResult<()> {
        let net = self.inner.net(network)?;
        let mut replica = lock(&net.replica);
        let signed = match replica.add_member(device, role, agent) {
            Ok(v) => v,
            Err(e) => return Err(self.inner.failed(&net, replica, e)),
        };
        self.inner.committed(&net, replica, signed);
        Ok(())
    }

    /// Publish the network's rule set (admins only; docs/rules.md): compiled first, written as
    /// the next version, stored durably and pushed to the connected peers.
    pub fn set_rules(&self, network: NetworkId, rules: crate::rules::RuleSet) -> NetResult<u64> {
        let net = self.inner.net(network)?;
        let mut replica = lock(&net.replica);
        let signed = match replica.set_rules(rules) {
            Ok(v) => v,
            Err(e) => return Err(self.inner.failed(&net, replica, e)),
        };
        let version = replica.replica().rules().map_or(0, |r| r.version);
        self.inner.committed(&net, replica, signed);
        Ok(version)
    }

    /// Remove `device` (admins only). Its connections to this node are closed; every other
    /// node closes them when the record reaches it.
    pub fn remove_member(&self, network: NetworkId, device: DeviceId) -> NetResult<()> {
        let net = self.inner.net(network)?;
        let mut replica = lock(&net.replica);
        let signed = match replica.remove_member(device) {
            Ok(v) => v,
            Err(e) => return Err(self.inner.failed(&net, replica, e)),
        };
        self.inner.committed(&net, replica, signed);
        Ok(())
    }

    /// Make a ticket to join `network` (admins only): an invite signed by this device,
    /// granting `role` and acting for `agent` (or, if `None`, for an Agent the newcomer
    /// describes when it joins), valid for `ttl` by the clock of the admin who redeems it,
    /// for `invitee` (anyone holding the ticket once, or one device), with this node's address
    /// to redeem it at. Hand over its text ([`Ticket`]'s `Display`); the newcomer calls
    /// [`Node::join_with_ticket`] while this node is reachable.
    pub fn invite(
        &self,
        network: NetworkId,
        role: Role,
        agent: Option<Id>,
        ttl: Duration,
        invitee: Invitee,
    ) -> NetResult<Ticket> {
        let net = self.inner.net(network)?;
        let expires_at = unix_now()
            .saturating_add(ttl.as_secs())
            .saturating_add(u64::from(ttl.subsec_nanos() > 0));
        let replica = lock(&net.replica);
        let replica = replica.replica();
        let (invite, secret) = match invitee {
            Invitee::Anyone => {
                let (invite, secret) = replica.invite_bearer(role, agent, expires_at)?;
                (invite, Some(secret))
            }
            Invitee::Device(device) => (
                replica.invite_device(device, role, agent, expires_at)?,
                None,
            ),
        };
        info!(network = %short(&network), %role, expires_at, nonce = %invite.nonce, "ticket made");
        Ok(Ticket {
            network,
            network_name: replica.ledger().network_name().to_string(),
            invite,
            secret,
            inviter: self.addr(),
        })
    }

    /// Join a network with a ticket: dial the ticket's inviter, which redeems the invite (by
    /// its own clock) and admits this device acting for the invite's Agent or, if it names
    /// none, for `agent` (created in the ledger); then fetch and check the history, store the
    /// replica and keep syncing on the same connection. A refused invite (expired, already
    /// redeemed, wrong secret, altered, for another device or network) is
    /// [`NetError::InviteRefused`] with the reason, and nothing is written on either side.
    pub async fn join_with_ticket(&self, ticket: &Ticket, agent: Agent) -> NetResult<NetworkId> {
        let inner = &self.inner;
        inner.live()?;
        let network = ticket.network;
        inner.check_not_held(network)?;
        let inviter = &ticket.inviter;
        if inviter.device == inner.device {
            return Err(NetError::SelfConnect);
        }
        let redeem = Frame::Redeem {
            invite: ticket.invite.clone(),
            secret: ticket.secret.clone(),
            agent: Some(agent),
        };
        let span = conn_span(network, inviter.device, "ticket");
        let result = match inner
            .bootstrap(network, inviter, Some(redeem))
            .instrument(span.clone())
            .await
        {
            Err(NetError::Refused { peer, code, reason }) if code.is_invite_refusal() => {
                Err(NetError::InviteRefused {
                    inviter: peer,
                    code,
                    reason,
                })
            }
            other => other,
        };
        if let Err(e) = &result {
            span.in_scope(|| warn!(error = %e, "joining with a ticket failed"));
            inner.emit_failure(network, inviter.device, e);
        }
        result.map(|()| network)
    }

    /// Connect to a peer of `network` and keep syncing with it until one side closes. Returns
    /// once the peer has accepted (answered the first frame); the first sync round goes on in
    /// the background. The peer must be a member in this node's replica, and this device in
    /// the peer's ([`NetError::Refused`] says why not). Does nothing if a connection to the
    /// peer for this network is open already. Undoes [`Node::disconnect`]'s pause.
    pub async fn connect(&self, network: NetworkId, peer: &PeerAddr) -> NetResult<()> {
        if let Ok(net) = self.inner.net(network) {
            net.post(proto::Event::Resume { peer: peer.device });
        }
        self.inner.connect(network, peer).await
    }

    /// Join a network this device was admitted to (an admin added its device id) through a
    /// peer that has the network, usually that admin: fetch the history from it, check it
    /// like any received changes, store it as a new replica, and keep syncing with the peer
    /// on the same connection.
    pub async fn join(&self, network: NetworkId, peer: &PeerAddr) -> NetResult<()> {
        let inner = &self.inner;
        inner.live()?;
        inner.check_not_held(network)?;
        if peer.device == inner.device {
            return Err(NetError::SelfConnect);
        }
        let span = conn_span(network, peer.device, "join");
        let result = inner
            .bootstrap(network, peer, None)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            span.in_scope(|| warn!(error = %e, "join failed"));
            inner.emit_failure(network, peer.device, e);
        }
        result
    }

    /// Close the connections to `peer` in `network`. It stays a member; neither side redials
    /// on its own until [`Node::connect`] is called or a new connection between them opens.
    pub fn disconnect(&self, network: NetworkId, peer: DeviceId) -> NetResult<()> {
        let net = self.inner.net(network)?;
        net.post(proto::Event::Pause { peer });
        Ok(())
    }

    /// The peers of `network` this node knows (connected, in its address book, or refused),
    /// and their state.
    pub fn peers(&self, network: NetworkId) -> NetResult<Vec<PeerStatus>> {
        let net = self.inner.net(network)?;
        let mut out: BTreeMap<DeviceId, PeerStatus> = BTreeMap::new();
        let (now, wall) = (net.now(), SystemTime::now());
        let mut heads: BTreeMap<DeviceId, Vec<ChangeHash>> = BTreeMap::new();
        {
            let core = lock(&net.core);
            for (device, record) in core.peers() {
                out.insert(
                    *device,
                    PeerStatus {
                        device: *device,
                        connected: false,
                        their_heads: record.their_heads.clone(),
                        last_error: record.last_error.clone(),
                        addr: record.addr.clone(),
                        next_retry: record.retry.map(|(_, at)| wall + at.saturating_sub(now)),
                        retries: record.retry.map_or(0, |(n, _)| n.saturating_sub(1)),
                    },
                );
            }
            for (_, peer, h) in core.links() {
                if let Some(h) = h {
                    heads.insert(peer, h.to_vec());
                }
            }
        }
        for link in net.links() {
            if link.closing.load(Ordering::Relaxed) || link.conn.close_reason().is_some() {
                continue;
            }
            let heads = heads.get(&link.peer).cloned();
            let status = out.entry(link.peer).or_insert(PeerStatus {
                device: link.peer,
                connected: true,
                their_heads: None,
                last_error: None,
                addr: None,
                next_retry: None,
                retries: 0,
            });
            status.connected = true;
            if heads.is_some() {
                status.their_heads = heads;
            }
        }
        Ok(out.into_values().collect())
    }

    /// New changes of `network`, as they are stored (made here or received).
    pub fn subscribe(&self, network: NetworkId) -> NetResult<broadcast::Receiver<LedgerUpdate>> {
        Ok(self.inner.net(network)?.updates.subscribe())
    }

    /// Connection events of every network.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// Shut down: refuse new connections, close every connection, stop and join every task,
    /// close the endpoint and the store (every change was already durable).
    pub async fn close(self) -> NetResult<()> {
        let inner = &self.inner;
        info!(device = %short(&inner.device), "closing the node");
        inner.cancel.cancel();
        let nets: Vec<Arc<Net>> = inner.read_networks().values().cloned().collect();
        for net in &nets {
            for link in net.links() {
                link.close(close_code::SHUTTING_DOWN, "the node is shutting down");
            }
        }
        inner.tracker.close();
        inner.endpoint.close().await;
        inner.tracker.wait().await;
        // The workers finish what the tasks posted (a link's end, its saved sync state)
        // before the store is let go.
        let workers: Vec<_> = nets.iter().filter_map(|net| net.stop()).collect();
        drop(nets);
        off_runtime(move || {
            for worker in workers {
                let _ = worker.join();
            }
        })
        .await;
        // What those last jobs spawned (a timer, a redial: each ends at once, the node being
        // cancelled) holds the node's state too: wait for it, so that the store is closed
        // when this returns.
        inner.tracker.wait().await;
        inner
            .networks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        debug!("node closed");
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Stops the tasks (they hold the node's state) if `close` was not called.
        self.inner.cancel.cancel();
    }
}

/// Open the stored replica of `network`; what went wrong if it cannot be opened (an error,
/// or a panic on data this build does not expect, caught so that it stops this network only).
fn open_replica(
    store: &Store,
    network: NetworkId,
    key: &DeviceKey,
) -> Result<DurableReplica, NetworkProblem> {
    let open = std::panic::AssertUnwindSafe(|| store.open_replica(&network, key.clone()));
    match std::panic::catch_unwind(open) {
        Ok(Ok(replica)) => Ok(replica),
        Ok(Err(e)) => Err(NetworkProblem::of_error(network, &e)),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned());
            Err(NetworkProblem::of_panic(network, detail))
        }
    }
}

/// An admin's node migrates a schema-version-1 ledger to version 2 when it opens it
/// ([`crate::Replica::migrate`]): one signed change, stored durably like any local write (it
/// syncs with the first peer that connects, as every stored change does). A member's node
/// keeps the ledger read-only ([`crate::Error::MigrationRequired`]) until it receives an
/// admin's migration. A migration that fails (the store cannot write) is logged; the ledger
/// stays readable and the next open tries again.
fn migrate_if_admin(replica: &mut DurableReplica) {
    if !replica.ledger().needs_migration() {
        return;
    }
    let network = replica.replica().network();
    if replica.replica().role() != Some(Role::Admin) {
        info!(%network, "this ledger is at schema version 1: read-only until an admin's node migrates it");
        return;
    }
    match replica.migrate() {
        Ok(changes) => info!(
            %network,
            changes = changes.len(),
            "migrated the ledger from schema version 1 to 2"
        ),
        Err(e) => error!(
            %network,
            error = %e,
            "could not migrate the ledger from schema version 1; it stays read-only"
        ),
    }
}

/// This device's clock, in unix seconds.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn short(id: &impl std::fmt::Display) -> String {
    let s = id.to_string();
    s[..s.len().min(10)].to_string()
}

fn conn_span(network: NetworkId, peer: DeviceId, dir: &'static str) -> tracing::Span {
    info_span!("connection", network = %short(&network), peer = %short(&peer), dir)
}

impl Inner {
    fn read_networks(&self) -> std::sync::RwLockReadGuard<'_, HashMap<NetworkId, Arc<Net>>> {
        self.networks.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> NetResult<()> {
        if self.cancel.is_cancelled() {
            Err(NetError::Closed)
        } else {
            Ok(())
        }
    }

    fn read_unavailable(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<NetworkId, NetworkProblem>> {
        self.unavailable
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The network's replica; [`NetError::NetworkUnavailable`] if it could not be opened.
    fn net(&self, network: NetworkId) -> NetResult<Arc<Net>> {
        if let Some(net) = self.read_networks().get(&network) {
            return Ok(net.clone());
        }
        match self.read_unavailable().get(&network) {
            Some(problem) => Err(NetError::NetworkUnavailable {
                network,
                kind: problem.kind,
                reason: problem.reason.clone(),
            }),
            None => Err(NetError::UnknownNetwork { network }),
        }
    }

    /// Before a join: the node must not hold the network at all (an unavailable network is
    /// never joined over: its stored data is kept as it is).
    fn check_not_held(&self, network: NetworkId) -> NetResult<()> {
        match self.net(network) {
            Ok(_) => Err(NetError::AlreadyJoined { network }),
            Err(e @ NetError::NetworkUnavailable { .. }) => Err(e),
            Err(_) => Ok(()),
        }
    }

    /// The ALPNs to accept: every network held, unavailable ones too (their peers are
    /// refused with a reason rather than failing the handshake).
    fn alpns(&self, nets: &HashMap<NetworkId, Arc<Net>>) -> Vec<Vec<u8>> {
        nets.keys()
            .chain(self.read_unavailable().keys())
            .map(alpn)
            .collect()
    }

    /// Add a replica and serve its ALPN.
    fn install(self: &Arc<Self>, mut replica: DurableReplica) -> Arc<Net> {
        replica.set_compaction_policy(self.config.compaction);
        let net = Arc::new(Net::new(
            replica,
            self.device,
            self.config.reconnect,
            reconnect::os_jitter(),
        ));
        let mut nets = self
            .networks
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        nets.insert(net.id, net.clone());
        self.endpoint.set_alpns(self.alpns(&nets));
        net.start(self);
        net
    }

    fn emit(&self, event: NodeEvent) {
        let _ = self.events.send(event);
    }

    fn emit_failure(&self, network: NetworkId, peer: DeviceId, e: &NetError) {
        if let NetError::Refused { code, reason, .. }
        | NetError::InviteRefused { code, reason, .. } = e
        {
            self.emit(NodeEvent::Refused {
                network,
                peer,
                by_us: false,
                code: *code,
                reason: reason.clone(),
            });
        }
    }

    fn note_failure(self: &Arc<Self>, net: &Arc<Net>, peer: DeviceId, e: &NetError) {
        net.record_error(peer, e.to_string());
        self.emit_failure(net.id, peer, e);
    }

    /// Changes made here are stored: the core tells subscribers and pushes them to every
    /// peer (with the replica still locked, so that they go out in the order made).
    fn committed(
        self: &Arc<Self>,
        net: &Arc<Net>,
        mut replica: MutexGuard<'_, DurableReplica>,
        changes: Vec<SignedChange>,
    ) {
        let later = net.feed(&mut replica, proto::Event::Committed { changes });
        drop(replica);
        net.finish(self, later);
    }

    /// A local commit failed: the replica is back to its stored state (or stale), which the
    /// core is told ([`proto::Event::Reloaded`]: its links sync). Returns the error.
    fn failed(
        self: &Arc<Self>,
        net: &Arc<Net>,
        mut replica: MutexGuard<'_, DurableReplica>,
        e: crate::Error,
    ) -> NetError {
        let later = net.feed(&mut replica, proto::Event::Reloaded);
        drop(replica);
        net.finish(self, later);
        e.into()
    }

    /// Spawn a task of the node, on its runtime (also when called from a thread of none).
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tracker.spawn_on(task, &self.runtime);
    }
}
