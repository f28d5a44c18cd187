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
//! Every change is durable before anything is sent or forwarded. The transport (one QUIC
//! connection per peer and network, one stream of length-prefixed frames on it, membership
//! checked when a peer connects) is described in [`crate::net`].
//!
//! Joining: an admin makes a [`Ticket`] ([`Node::invite`]); the newcomer's
//! [`Node::join_with_ticket`] dials the admin's node, which redeems the invite by its own
//! clock (the one frame a device that is not a member may send, [`Frame::Redeem`]), and the
//! same connection then carries the history and the sync ([`SyncSession::bootstrap`]). A
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
//! no lock is ever held across an `.await`.

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
use crate::membership::{Role, RECORD_PREFIX};
use crate::net::{
    alpn, close_code, connect_error, connection_error, is_normal_close, network_of_alpn,
    read_frame, read_frame_limited, write_frame, NetError, NetResult, PeerAddr, ReadFrameError,
};
use crate::replica::Replica;
use crate::store::{DurableReplica, Store};
use crate::sync::{Frame, RefuseCode, SyncError, SyncSession, MAX_FRAME_LEN, MAX_REDEEM_LEN};
use crate::vf::{Agent, Id, NewEvent};

pub mod discovery;
pub mod reconnect;
pub mod status;
pub mod ticket;

pub use reconnect::Backoff;
pub use status::{NetworkProblem, NetworkStatus, UnavailableKind};
pub use ticket::{Invitee, Ticket, TicketError};

/// File name of the node's store inside its data directory.
pub const STORE_FILE: &str = "reflow.redb";

/// Most frames a session is asked for in one go (a bound against a runaway session).
const MAX_FRAMES_PER_POLL: usize = 64;

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
    /// Relay servers.
    pub relay: RelayConfig,
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
}

impl NodeConfig {
    /// Defaults: every interface, public relays, port mapping on, local-network discovery on,
    /// automatic reconnection ([`Backoff::default`]), 10 s connect timeout.
    ///
    /// With a bind port of 0, a node reopened from the same data directory first tries the
    /// port it had last time, so that peers that know its address reach it again.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            bind_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            relay: RelayConfig::Default,
            portmapper: true,
            connect_timeout: Duration::from_secs(10),
            mdns: true,
            reconnect: Some(Backoff::default()),
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
    jitter: Mutex<reconnect::Jitter>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("device", &self.device)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// One network's replica and its live connections.
struct Net {
    id: NetworkId,
    replica: Mutex<DurableReplica>,
    links: Mutex<HashMap<u64, Arc<Link>>>,
    peers: Mutex<BTreeMap<DeviceId, PeerRecord>>,
    /// Held while the address book is written (writes in order).
    book_write: Mutex<()>,
    updates: broadcast::Sender<LedgerUpdate>,
    events: broadcast::Sender<NodeEvent>,
}

#[derive(Default)]
struct PeerRecord {
    their_heads: Option<Vec<ChangeHash>>,
    last_error: Option<String>,
    /// The address book entry.
    addr: Option<PeerAddr>,
    /// This node's user disconnected it: not redialed until `connect` or a new connection.
    paused: bool,
    /// A reconnection task is running.
    retrying: bool,
    /// Attempts so far and when the next is due.
    retry: Option<(u32, SystemTime)>,
}

/// One sync connection. Lock order: replica, then links, then a session.
struct Link {
    id: u64,
    peer: DeviceId,
    conn: Connection,
    session: Mutex<SyncSession>,
    out: mpsc::UnboundedSender<Out>,
    /// Refused: nothing more is sent but the refusal.
    closing: AtomicBool,
}

/// What the writer of a connection sends.
enum Out {
    /// An encoded frame.
    Frame(Vec<u8>),
    /// A refusal: send it, end the stream, and close the connection.
    Refuse(RefuseCode, String),
}

impl Link {
    fn send(&self, frame: &Frame) {
        if self.closing.load(Ordering::Relaxed) {
            return;
        }
        // If the writer is gone the connection is closing; the reader notices.
        let _ = self.out.send(Out::Frame(frame.encode()));
    }

    /// Refuse the peer: a Refuse frame, then the connection is closed.
    fn refuse(&self, code: RefuseCode, reason: &str) {
        if !self.closing.swap(true, Ordering::Relaxed) {
            let _ = self.out.send(Out::Refuse(code, reason.to_string()));
        }
    }

    /// Send what the session has to send.
    fn transmit(&self, replica: &Replica) {
        let mut session = lock(&self.session);
        for _ in 0..MAX_FRAMES_PER_POLL {
            match session.poll_transmit(replica) {
                Some(frame) => self.send(&frame),
                None => break,
            }
        }
    }

    fn close(&self, code: u32, reason: &str) {
        close(&self.conn, code, reason);
    }
}

/// Close a connection with a QUIC application code (see [`close_code`]; a refusal uses its
/// [`RefuseCode`]'s number) and a reason.
fn close(conn: &Connection, code: u32, reason: &str) {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    conn.close(VarInt::from_u32(code), &reason.as_bytes()[..end]);
}

/// Send a refusal on an open stream, give the peer a moment to read it, and close.
async fn refuse_on(conn: &Connection, send: &mut SendStream, code: RefuseCode, reason: &str) {
    let frame = Frame::refuse(code, reason);
    if write_frame(send, &frame.encode()).await.is_ok() {
        let _ = send.finish();
        let _ = tokio::time::timeout(REFUSE_LINGER, conn.closed()).await;
    }
    close(conn, u32::from(code.to_u16()), reason);
}

/// The error a Refuse frame from `peer` means.
fn refused(peer: DeviceId, frame: &Frame) -> Option<NetError> {
    if let Frame::Refuse { code, reason } = frame {
        return Some(NetError::Refused {
            peer,
            code: *code,
            reason: reason.clone(),
        });
    }
    None
}

/// How a connection ended.
enum LinkEnd {
    /// This node is closing.
    Shutdown,
    /// The peer finished its stream.
    Finished,
    /// The connection broke or the peer closed it.
    Lost(NetError),
    /// The peer broke the protocol.
    Protocol(String),
    /// This node could not store what it received.
    Storage(crate::Error),
}

impl Net {
    fn new(replica: DurableReplica, events: broadcast::Sender<NodeEvent>) -> Net {
        Net {
            id: replica.replica().network(),
            replica: Mutex::new(replica),
            links: Mutex::new(HashMap::new()),
            peers: Mutex::new(BTreeMap::new()),
            book_write: Mutex::new(()),
            updates: broadcast::channel(CHANNEL_CAPACITY).0,
            events,
        }
    }

    /// Fill the peer records from the stored address book (members only, not `me`).
    fn load_book(&self, me: DeviceId) {
        let store = lock(&self.replica).store().clone();
        let book = reconnect::load_book(&store, &self.id);
        let replica = lock(&self.replica);
        let mut peers = lock(&self.peers);
        for (device, addr) in book {
            if device != me && replica.replica().member(&device).is_some() {
                peers.entry(device).or_default().addr = Some(addr);
            }
        }
    }

    /// The members in the address book.
    fn known_peers(&self) -> Vec<DeviceId> {
        lock(&self.peers)
            .iter()
            .filter(|(_, r)| r.addr.is_some())
            .map(|(d, _)| *d)
            .collect()
    }

    /// Remember where `addr.device` was reached, and save the address book if that changed.
    fn remember(&self, addr: PeerAddr) {
        if addr.direct.is_empty() && addr.relays.is_empty() {
            return;
        }
        let _writing = lock(&self.book_write);
        let book: Vec<PeerAddr> = {
            let mut peers = lock(&self.peers);
            let record = peers.entry(addr.device).or_default();
            if record.addr.as_ref() == Some(&addr) {
                return;
            }
            record.addr = Some(addr);
            peers.values().filter_map(|r| r.addr.clone()).collect()
        };
        let store = lock(&self.replica).store().clone();
        reconnect::save_book(&store, &self.id, &book);
    }

    /// Whether a connection to `peer` is open and not closing.
    fn connected(&self, peer: DeviceId) -> bool {
        self.links().into_iter().any(|l| {
            l.peer == peer && !l.closing.load(Ordering::Relaxed) && l.conn.close_reason().is_none()
        })
    }

    fn links(&self) -> Vec<Arc<Link>> {
        lock(&self.links).values().cloned().collect()
    }

    /// Tell subscribers about new changes and push them to every connected peer but the one
    /// they came from. Called with the replica locked, right after the changes were stored.
    fn after_change(
        &self,
        replica: &DurableReplica,
        changes: &[SignedChange],
        from: Option<(u64, DeviceId)>,
    ) {
        let _ = self.updates.send(LedgerUpdate {
            network: self.id,
            changes: changes.iter().map(SignedChange::hash).collect(),
            heads: replica.ledger().heads(),
            from: from.map(|(_, peer)| peer),
        });
        let membership_changed = changes.iter().any(|c| {
            c.change
                .message()
                .is_some_and(|m| m.starts_with(RECORD_PREFIX))
        });
        for link in self.links() {
            if membership_changed && replica.replica().member(&link.peer).is_none() {
                let reason = format!(
                    "device {} is no longer a member of network {}",
                    link.peer, self.id
                );
                warn!(peer = %link.peer, "refusing a removed member");
                // It learns of its removal first.
                if let Some(frame) = lock(&link.session).push(changes) {
                    link.send(&frame);
                }
                link.refuse(RefuseCode::NotAMember, &reason);
                continue;
            }
            if from.is_some_and(|(id, _)| id == link.id) {
                continue;
            }
            // The push carries the changes; the peer's answer starts a sync round if one is
            // needed. Only the push's overflow is drained here.
            let mut session = lock(&link.session);
            if let Some(frame) = session.push(changes) {
                link.send(&frame);
            }
            while session.has_queued_frames() {
                match session.poll_transmit(replica.replica()) {
                    Some(frame) => link.send(&frame),
                    None => break,
                }
            }
        }
    }

    /// Handle frames from a peer (a run of pushes, perhaps ending with a sync frame): take
    /// their changes, store the accepted ones in one durable commit, answer, and forward.
    fn handle_frames(&self, link: &Link, frames: Vec<Frame>) -> Result<(), LinkEnd> {
        if let Some(e) = frames.iter().find_map(|f| refused(link.peer, f)) {
            return Err(LinkEnd::Lost(e));
        }
        if link.closing.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut replica = lock(&self.replica);
        let mut changes = Vec::new();
        {
            let mut session = lock(&link.session);
            for frame in frames {
                let more = session
                    .handle_frame(replica.replica(), frame)
                    .map_err(|e| LinkEnd::Protocol(e.to_string()))?;
                changes.extend(more);
            }
        }
        let mut applied = Vec::new();
        let mut revoked = false;
        if !changes.is_empty() {
            let receipt = replica.receive(changes).map_err(LinkEnd::Storage)?;
            revoked = !receipt.revoked.is_empty();
            if receipt.overflow > 0 {
                // What was judged is stored below; the link ends (the peer floods).
                warn!(
                    dropped = receipt.overflow,
                    "the peer floods: disconnecting it"
                );
                self.record_error(
                    link.peer,
                    format!(
                        "{} change(s) over the waiting or quarantine limit",
                        receipt.overflow
                    ),
                );
                return Err(LinkEnd::Protocol(format!(
                    "{} change(s) over the waiting or quarantine limits",
                    receipt.overflow
                )));
            }
            // Proof of equivocation travels on to every peer (it applies nothing).
            let evidence = receipt.evidence.clone();
            debug!(
                applied = receipt.applied.len(),
                waiting = receipt.waiting,
                duplicates = receipt.duplicates,
                "received changes"
            );
            applied = receipt.applied;
            applied.extend(evidence);
            if let Some((hash, reason)) = receipt.refused.first() {
                warn!(
                    refused = receipt.refused.len(),
                    first = %hash,
                    %reason,
                    "changes from the peer were refused and quarantined"
                );
                let reason = reason.to_string();
                self.record_error(
                    link.peer,
                    format!("{} change(s) refused: {reason}", receipt.refused.len()),
                );
                let _ = self.events.send(NodeEvent::ChangesRefused {
                    network: self.id,
                    peer: link.peer,
                    count: receipt.refused.len(),
                    reason,
                });
            }
        }
        link.transmit(replica.replica());
        if !applied.is_empty() || revoked {
            self.after_change(&replica, &applied, Some((link.id, link.peer)));
        }
        Ok(())
    }

    /// A sync session with `peer`, resumed from the state saved at the end of the last
    /// connection with it, if any (a shorter first round; a stale state costs bandwidth only).
    fn session(&self, peer: DeviceId) -> SyncSession {
        let store = lock(&self.replica).store().clone();
        match store.sync_state(&self.id.to_string(), peer.as_bytes()) {
            Ok(Some(saved)) => SyncSession::with_state(self.id, peer, &saved).unwrap_or_else(|e| {
                warn!(error = %e, "the saved sync state is unreadable; starting afresh");
                SyncSession::new(self.id, peer)
            }),
            Ok(None) => SyncSession::new(self.id, peer),
            Err(e) => {
                warn!(error = %e, "could not read the saved sync state; starting afresh");
                SyncSession::new(self.id, peer)
            }
        }
    }

    fn remove_link(&self, link: &Link, error: Option<String>) {
        let (heads, saved) = {
            let session = lock(&link.session);
            (
                session.peer_heads().map(<[ChangeHash]>::to_vec),
                session.saved_state(),
            )
        };
        let store = lock(&self.replica).store().clone();
        if let Err(e) = store.put_sync_state(&self.id.to_string(), link.peer.as_bytes(), &saved) {
            warn!(error = %e, "could not save the sync state");
        }
        lock(&self.links).remove(&link.id);
        let mut peers = lock(&self.peers);
        let record = peers.entry(link.peer).or_default();
        if heads.is_some() {
            record.their_heads = heads;
        }
        if error.is_some() {
            record.last_error = error;
        }
    }

    fn record_error(&self, peer: DeviceId, error: String) {
        lock(&self.peers).entry(peer).or_default().last_error = Some(error);
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
            span.in_scope(|| migrate_if_admin(&mut replica));
            let net = Net::new(replica, events.clone());
            span.in_scope(|| net.load_book(device));
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
            jitter: Mutex::new(reconnect::Jitter::from_os()),
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
                for peer in net.known_peers() {
                    inner.schedule_reconnect(&net, peer, true);
                }
            }
        });
        Ok(Node { inner })
    }

    /// This node's device id (also its endpoint id).
    pub fn device(&self) -> DeviceId {
        self.inner.device
    }

    /// Where peers can dial this node: its id and its direct (and relay) addresses.
    pub fn addr(&self) -> PeerAddr {
        let addr = self.inner.endpoint.addr();
        PeerAddr::from_endpoint_addr(&addr).unwrap_or_else(|| PeerAddr::new(self.inner.device))
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
        let (result, signed) = replica.write(mutation)?;
        if !signed.is_empty() {
            net.after_change(&replica, &signed, None);
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
        let signed = replica.add_member(device, role, agent)?;
        net.after_change(&replica, &signed, None);
        Ok(())
    }

    /// Remove `device` (admins only). Its connections to this node are closed; every other
    /// node closes them when the record reaches it.
    pub fn remove_member(&self, network: NetworkId, device: DeviceId) -> NetResult<()> {
        let net = self.inner.net(network)?;
        let mut replica = lock(&net.replica);
        let signed = replica.remove_member(device)?;
        net.after_change(&replica, &signed, None);
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
            if let Some(r) = lock(&net.peers).get_mut(&peer.device) {
                r.paused = false;
            }
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
        lock(&net.peers).entry(peer).or_default().paused = true;
        for link in net.links() {
            if link.peer == peer {
                link.close(close_code::DISCONNECTED, "disconnected");
            }
        }
        Ok(())
    }

    /// The peers of `network` this node knows (connected, in its address book, or refused),
    /// and their state.
    pub fn peers(&self, network: NetworkId) -> NetResult<Vec<PeerStatus>> {
        let net = self.inner.net(network)?;
        let mut out: BTreeMap<DeviceId, PeerStatus> = BTreeMap::new();
        for (device, record) in lock(&net.peers).iter() {
            out.insert(
                *device,
                PeerStatus {
                    device: *device,
                    connected: false,
                    their_heads: record.their_heads.clone(),
                    last_error: record.last_error.clone(),
                    addr: record.addr.clone(),
                    next_retry: record.retry.map(|(_, at)| at),
                    retries: record.retry.map_or(0, |(n, _)| n.saturating_sub(1)),
                },
            );
        }
        for link in net.links() {
            let heads = lock(&link.session).peer_heads().map(<[ChangeHash]>::to_vec);
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

/// Whether a failed reconnection is final: the peer is no member (here or there), does not
/// serve the network, or this node is closing. Other failures (unreachable, timeouts, lost
/// connections, a busy peer) are retried.
fn gives_up(e: &NetError) -> bool {
    match e {
        NetError::Refused { code, .. } => !matches!(code, RefuseCode::Busy),
        NetError::Unreachable { .. }
        | NetError::Timeout { .. }
        | NetError::ConnectionLost { .. } => false,
        _ => true,
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

/// Node metadata key of the UDP port the endpoint was last bound to (u16, big-endian).
const META_LAST_PORT: &str = "last_port";

/// Bind the endpoint. With a bind port of 0, the port of the last run is tried first (peers
/// that know this node's address reach it again), then any free port; the port bound is
/// remembered.
async fn bind(
    config: &NodeConfig,
    key: &DeviceKey,
    alpns: Vec<Vec<u8>>,
    store: &Store,
) -> NetResult<Endpoint> {
    if config.bind_addr.port() != 0 {
        return bind_endpoint(config, config.bind_addr, key, alpns).await;
    }
    let last = match store.node_meta(META_LAST_PORT) {
        Ok(Some(b)) => <[u8; 2]>::try_from(b.as_slice())
            .ok()
            .map(u16::from_be_bytes),
        _ => None,
    };
    if let Some(port) = last.filter(|p| *p != 0) {
        let mut addr = config.bind_addr;
        addr.set_port(port);
        match bind_endpoint(config, addr, key, alpns.clone()).await {
            Ok(endpoint) => return Ok(endpoint),
            Err(e) => debug!(port, error = %e, "the last port is taken; binding a free one"),
        }
    }
    let endpoint = bind_endpoint(config, config.bind_addr, key, alpns).await?;
    let port = endpoint
        .bound_sockets()
        .iter()
        .find(|a| a.is_ipv4() == config.bind_addr.is_ipv4())
        .map(SocketAddr::port);
    if let Some(port) = port.filter(|p| Some(*p) != last) {
        if let Err(e) = store.put_node_meta(META_LAST_PORT, &port.to_be_bytes()) {
            warn!(error = %e, "could not remember the port");
        }
    }
    Ok(endpoint)
}

async fn bind_endpoint(
    config: &NodeConfig,
    bind_addr: SocketAddr,
    key: &DeviceKey,
    alpns: Vec<Vec<u8>>,
) -> NetResult<Endpoint> {
    let bind_error = |detail: String| NetError::Bind {
        addr: bind_addr,
        detail,
    };
    let relay_mode = match &config.relay {
        RelayConfig::Disabled => RelayMode::Disabled,
        RelayConfig::Default => RelayMode::Default,
        RelayConfig::Custom(urls) => {
            let mut parsed: Vec<RelayUrl> = Vec::with_capacity(urls.len());
            for u in urls {
                parsed.push(
                    u.parse()
                        .map_err(|_| NetError::InvalidRelayUrl(u.clone()))?,
                );
            }
            RelayMode::custom(parsed)
        }
    };
    let mut builder = Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&key.secret_bytes()))
        .alpns(alpns)
        .relay_mode(relay_mode)
        .clear_ip_transports()
        .bind_addr(bind_addr)
        .map_err(|e| bind_error(e.to_string()))?;
    if bind_addr.ip().is_unspecified() && bind_addr.is_ipv4() {
        builder = builder
            .bind_addr_with_opts(
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
                BindOpts::default().set_is_required(false),
            )
            .map_err(|e| bind_error(e.to_string()))?;
    }
    if !config.portmapper {
        builder = builder.portmapper_config(PortmapperConfig::Disabled);
    }
    if config.relay == RelayConfig::Disabled {
        builder = builder.net_report_config(NetReportConfig::minimal());
    }
    builder.bind().await.map_err(|e| bind_error(e.to_string()))
}

fn write_error(peer: DeviceId, network: NetworkId, e: WriteError) -> NetError {
    match e {
        WriteError::ConnectionLost(c) => connection_error(peer, network, &c),
        other => NetError::ConnectionLost {
            peer,
            detail: other.to_string(),
        },
    }
}

fn read_error(peer: DeviceId, network: NetworkId, e: ReadFrameError) -> NetError {
    match e {
        ReadFrameError::Read(ReadError::ConnectionLost(c)) => connection_error(peer, network, &c),
        ReadFrameError::Frame(f) => NetError::Protocol {
            peer,
            detail: f.to_string(),
        },
        other => NetError::ConnectionLost {
            peer,
            detail: other.to_string(),
        },
    }
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
    fn install(&self, replica: DurableReplica) -> Arc<Net> {
        let net = Arc::new(Net::new(replica, self.events.clone()));
        net.load_book(self.device);
        let mut nets = self
            .networks
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        nets.insert(net.id, net.clone());
        self.endpoint.set_alpns(self.alpns(&nets));
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

    fn note_failure(&self, net: &Net, peer: DeviceId, e: &NetError) {
        net.record_error(peer, e.to_string());
        self.emit_failure(net.id, peer, e);
    }

    /// [`Node::connect`] (also used by local-network discovery).
    async fn connect(self: &Arc<Self>, network: NetworkId, peer: &PeerAddr) -> NetResult<()> {
        let inner = self;
        inner.live()?;
        let net = inner.net(network)?;
        if peer.device == inner.device {
            return Err(NetError::SelfConnect);
        }
        if lock(&net.replica).replica().member(&peer.device).is_none() {
            return Err(NetError::PeerNotAMember {
                peer: peer.device,
                network,
            });
        }
        if net.connected(peer.device) {
            debug!(peer = %peer.device, "already connected");
            return Ok(());
        }
        let span = conn_span(network, peer.device, "out");
        let result = async {
            let conn = inner.dial(network, peer).await?;
            let mut session = net.session(peer.device);
            let opening = {
                let replica = lock(&net.replica);
                session.poll_transmit(replica.replica())
            };
            let Some(opening) = opening else {
                close(&conn, close_code::DONE, "no opening frame");
                return Err(NetError::Protocol {
                    peer: peer.device,
                    detail: "the sync session produced no opening frame".into(),
                });
            };
            let (send, recv, reply) = inner
                .open_exchange(&conn, network, peer.device, std::slice::from_ref(&opening))
                .await?;
            net.remember(peer.clone());
            inner.start_link(
                &net,
                conn,
                peer.device,
                false,
                session,
                send,
                recv,
                Some(reply),
            );
            Ok(())
        }
        .instrument(span.clone())
        .await;
        if let Err(e) = &result {
            span.in_scope(|| warn!(error = %e, "connect failed"));
            inner.note_failure(&net, peer.device, e);
        }
        result
    }

    /// Dial `peer` for `network`.
    async fn dial(&self, network: NetworkId, peer: &PeerAddr) -> NetResult<Connection> {
        let addr = peer.to_endpoint_addr()?;
        let after = self.config.connect_timeout;
        let conn = tokio::time::timeout(after, self.endpoint.connect(addr, &alpn(&network)))
            .await
            .map_err(|_| NetError::Timeout {
                after,
                waiting_for: "the connection handshake",
            })?
            .map_err(|e| connect_error(peer.device, network, e))?;
        debug!("connected");
        Ok(conn)
    }

    /// Open the stream, send the opening frames and read the peer's first frame: the peer has
    /// accepted the connection once it answers.
    async fn open_exchange(
        &self,
        conn: &Connection,
        network: NetworkId,
        peer: DeviceId,
        opening: &[Frame],
    ) -> NetResult<(SendStream, RecvStream, Frame)> {
        let after = self.config.connect_timeout;
        let exchange = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| connection_error(peer, network, &e))?;
            let bytes: Vec<u8> = opening.iter().flat_map(Frame::encode).collect();
            if let Err(e) = write_frame(&mut send, &bytes).await {
                // A refusal arrives as the connection's close; prefer it to the write error.
                return Err(match conn.close_reason() {
                    Some(c) => connection_error(peer, network, &c),
                    None => write_error(peer, network, e),
                });
            }
            match read_frame(&mut recv).await {
                Ok(Some(frame)) => match refused(peer, &frame) {
                    Some(e) => {
                        close(conn, close_code::DONE, "refused");
                        Err(e)
                    }
                    None => Ok((send, recv, frame)),
                },
                Ok(None) => Err(NetError::ConnectionLost {
                    peer,
                    detail: "the peer ended the stream before answering".into(),
                }),
                Err(e) => {
                    let e = read_error(peer, network, e);
                    if let NetError::Protocol { detail, .. } = &e {
                        let code = RefuseCode::ProtocolViolation.to_u16();
                        close(conn, u32::from(code), detail);
                    }
                    Err(e)
                }
            }
        };
        match tokio::time::timeout(after, exchange).await {
            Ok(r) => r,
            Err(_) => {
                close(conn, close_code::TIMEOUT, "timed out");
                Err(NetError::Timeout {
                    after,
                    waiting_for: "the peer's first frame",
                })
            }
        }
    }

    /// Join `network` through `peer`: dial it, send `redeem` first if given (a ticket's
    /// invite), then the sync request of a device with no replica
    /// ([`SyncSession::bootstrap`]); read the peer's answer (the history, up to its Sync
    /// frame), check it, store the replica, and go on syncing with the same session on the
    /// same connection.
    async fn bootstrap(
        self: &Arc<Self>,
        network: NetworkId,
        peer: &PeerAddr,
        redeem: Option<Frame>,
    ) -> NetResult<()> {
        let conn = self.dial(network, peer).await?;
        let (mut session, request) = SyncSession::bootstrap(network, peer.device);
        let opening: Vec<Frame> = redeem.into_iter().chain([request]).collect();
        let (send, mut recv, first) = self
            .open_exchange(&conn, network, peer.device, &opening)
            .await?;
        let protocol = |detail: String| {
            let code = RefuseCode::ProtocolViolation.to_u16();
            close(&conn, u32::from(code), &detail);
            NetError::Protocol {
                peer: peer.device,
                detail,
            }
        };
        let mut history = Vec::new();
        let mut next = Some(first);
        let after = self.config.connect_timeout;
        while let Some(frame) = next.take() {
            let last = matches!(frame, Frame::Sync { .. });
            match session.handle_bootstrap_frame(frame) {
                Ok(changes) => history.extend(changes),
                Err(SyncError::Refused { code, reason }) => {
                    close(&conn, close_code::DONE, "refused");
                    return Err(NetError::Refused {
                        peer: peer.device,
                        code,
                        reason,
                    });
                }
                Err(e) => return Err(protocol(e.to_string())),
            }
            if last {
                break;
            }
            next = match tokio::time::timeout(after, read_frame(&mut recv)).await {
                Err(_) => {
                    close(&conn, close_code::TIMEOUT, "timed out");
                    return Err(NetError::Timeout {
                        after,
                        waiting_for: "the network's history",
                    });
                }
                Ok(Ok(Some(frame))) => Some(frame),
                Ok(Ok(None)) => {
                    return Err(NetError::JoinFailed {
                        network,
                        peer: peer.device,
                        detail: "the peer ended the stream without sending the history".into(),
                    })
                }
                Ok(Err(e)) => {
                    let e = read_error(peer.device, network, e);
                    if let NetError::Protocol { detail, .. } = &e {
                        let code = RefuseCode::ProtocolViolation.to_u16();
                        close(&conn, u32::from(code), detail);
                    }
                    return Err(e);
                }
            };
        }
        let n = history.len();
        let (replica, receipt) = match Replica::join(network, self.key.clone(), history) {
            Ok(r) => r,
            Err(e) => {
                let code = RefuseCode::ProtocolViolation.to_u16();
                close(&conn, u32::from(code), "the history does not verify");
                return Err(NetError::JoinFailed {
                    network,
                    peer: peer.device,
                    detail: e.to_string(),
                });
            }
        };
        if !receipt.refused.is_empty() {
            warn!(
                refused = receipt.refused.len(),
                "some changes of the history were refused"
            );
        }
        if replica.member(&peer.device).is_none() {
            let code = RefuseCode::NotAMember.to_u16();
            close(
                &conn,
                u32::from(code),
                "you are not a member of this network",
            );
            return Err(NetError::PeerNotAMember {
                peer: peer.device,
                network,
            });
        }
        if replica.role().is_none() {
            warn!("joined, but this device is not (yet) a member in the history received");
        }
        if self.cancel.is_cancelled() {
            close(
                &conn,
                close_code::SHUTTING_DOWN,
                "the node is shutting down",
            );
            return Err(NetError::Closed);
        }
        let durable = self.store.create_replica(replica, &receipt.applied)?;
        info!(
            changes = n,
            stored = receipt.applied.len(),
            "joined the network"
        );
        let net = self.install(durable);
        net.remember(peer.clone());
        // The same session goes on: its next message (sequence number 2) tells the peer what
        // this replica has now.
        let link = self.start_link(&net, conn, peer.device, false, session, send, recv, None);
        let replica = lock(&net.replica);
        link.transmit(replica.replica());
        Ok(())
    }

    /// Reconnect to `peer` in the background, with backoff ([`reconnect`]), unless automatic
    /// reconnection is off, the peer was paused or has no known address, or a reconnection
    /// task for it is running already. `immediate`: the first attempt is made at once.
    fn schedule_reconnect(self: &Arc<Self>, net: &Arc<Net>, peer: DeviceId, immediate: bool) {
        let Some(backoff) = self.config.reconnect else {
            return;
        };
        if self.cancel.is_cancelled() || peer == self.device {
            return;
        }
        {
            let mut peers = lock(&net.peers);
            let record = peers.entry(peer).or_default();
            if record.paused || record.retrying || record.addr.is_none() {
                return;
            }
            record.retrying = true;
        }
        let inner = self.clone();
        let task_net = net.clone();
        self.tracker.spawn(
            async move {
                inner
                    .reconnect_loop(task_net, peer, backoff, immediate)
                    .await;
            }
            .instrument(conn_span(net.id, peer, "retry")),
        );
    }

    async fn reconnect_loop(
        self: Arc<Self>,
        net: Arc<Net>,
        peer: DeviceId,
        backoff: Backoff,
        immediate: bool,
    ) {
        let mut attempt: u32 = 0;
        loop {
            let delay = if attempt == 0 && immediate {
                Duration::ZERO
            } else {
                let unit = lock(&self.jitter).unit();
                backoff.delay(attempt.saturating_sub(u32::from(immediate)), unit)
            };
            attempt += 1;
            let addr = {
                let mut peers = lock(&net.peers);
                let record = peers.entry(peer).or_default();
                if record.paused || net.connected(peer) {
                    record.retrying = false;
                    record.retry = None;
                    return;
                }
                record.retry = Some((attempt, SystemTime::now() + delay));
                record.addr.clone()
            };
            let Some(addr) = addr else { break };
            debug!(attempt, ?delay, "reconnecting after a delay");
            self.emit(NodeEvent::RetryScheduled {
                network: net.id,
                peer,
                attempt,
                after: delay,
            });
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
            if lock(&net.peers).get(&peer).is_some_and(|r| r.paused) {
                break;
            }
            match self.connect(net.id, &addr).await {
                Ok(()) => {
                    info!(attempt, "reconnected");
                    // Checked again at the top: if the new connection was lost already, the
                    // retries go on (its end could not start another task while this one ran).
                    attempt = 1;
                    continue;
                }
                Err(e) if gives_up(&e) => {
                    info!(error = %e, "not reconnecting");
                    break;
                }
                Err(e) => debug!(attempt, error = %e, "reconnection failed; retrying later"),
            }
        }
        let mut peers = lock(&net.peers);
        if let Some(record) = peers.get_mut(&peer) {
            record.retrying = false;
            record.retry = None;
        }
    }

    /// Register a connection and start its reader and writer.
    #[allow(clippy::too_many_arguments)]
    fn start_link(
        self: &Arc<Self>,
        net: &Arc<Net>,
        conn: Connection,
        peer: DeviceId,
        inbound: bool,
        session: SyncSession,
        send: SendStream,
        recv: RecvStream,
        first: Option<Frame>,
    ) -> Arc<Link> {
        let (out, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            id: self.next_link.fetch_add(1, Ordering::Relaxed),
            peer,
            conn,
            session: Mutex::new(session),
            out,
            closing: AtomicBool::new(false),
        });
        lock(&net.links).insert(link.id, link.clone());
        // Proofs of equivocation go to every peer as the connection opens: one that accepted
        // a twin before this node saw both cuts the device off too (they apply nothing).
        {
            let replica = lock(&net.replica);
            let evidence = replica.replica().equivocation_evidence();
            if !evidence.is_empty() {
                debug!(
                    changes = evidence.len(),
                    "sending the proofs of equivocation"
                );
                let mut session = lock(&link.session);
                if let Some(frame) = session.push(&evidence) {
                    link.send(&frame);
                }
                while session.has_queued_frames() {
                    match session.poll_transmit(replica.replica()) {
                        Some(frame) => link.send(&frame),
                        None => break,
                    }
                }
            }
        }
        // A new connection ends a pause (Node::disconnect) either way.
        if let Some(r) = lock(&net.peers).get_mut(&peer) {
            r.paused = false;
        }
        if inbound {
            // Where it came from is where it listens (one socket per endpoint).
            let mut addr = PeerAddr::new(peer);
            for path in &link.conn.paths() {
                match path.remote_addr() {
                    TransportAddr::Ip(a) => addr.direct.push(*a),
                    TransportAddr::Relay(url) => addr.relays.push(url.to_string()),
                    _ => {}
                }
            }
            net.remember(addr);
        }
        info!(inbound, "sync connection open");
        self.emit(NodeEvent::Connected {
            network: net.id,
            peer,
            inbound,
        });
        let span = tracing::Span::current();
        let cancel = self.cancel.clone();
        let conn = link.conn.clone();
        self.tracker
            .spawn(run_writer(conn, send, rx, cancel).instrument(span.clone()));
        let inner = self.clone();
        let net = net.clone();
        let task_link = link.clone();
        self.tracker.spawn(
            async move { inner.run_link(net, task_link, recv, first).await }.instrument(span),
        );
        link
    }

    async fn run_link(
        self: Arc<Self>,
        net: Arc<Net>,
        link: Arc<Link>,
        recv: RecvStream,
        first: Option<Frame>,
    ) {
        // Frames are read by their own task, so that reading goes on while a batch is being
        // stored, and a run of frames that arrived meanwhile is stored in one commit.
        let (tx, mut rx) = mpsc::channel(FRAME_QUEUE);
        let reader = self.tracker.spawn(
            read_frames(recv, tx, self.cancel.clone(), link.peer, net.id)
                .instrument(tracing::Span::current()),
        );
        let end = async {
            if let Some(frame) = first {
                net.handle_frames(&link, vec![frame])?;
            }
            loop {
                let next = tokio::select! {
                    _ = self.cancel.cancelled() => return Err(LinkEnd::Shutdown),
                    next = rx.recv() => next,
                };
                let mut batch = match next {
                    Some(Ok(frame)) => vec![frame],
                    Some(Err(end)) => return Err(end),
                    None => return Err(LinkEnd::Finished),
                };
                let mut after = None;
                while batch.len() < MAX_BATCH && matches!(batch.last(), Some(Frame::Push { .. })) {
                    match rx.try_recv() {
                        Ok(Ok(frame)) => batch.push(frame),
                        Ok(Err(end)) => {
                            after = Some(end);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                net.handle_frames(&link, batch)?;
                if let Some(end) = after {
                    return Err(end);
                }
            }
        }
        .await;
        reader.abort();
        // Whether to redial: not after a deliberate close (by this node's user, who paused the
        // peer, or by the peer's: DISCONNECTED), a refusal, a protocol or storage failure, or
        // this node's shutdown.
        let deliberate = matches!(
            link.conn.close_reason(),
            Some(iroh::endpoint::ConnectionError::ApplicationClosed(c))
                if c.error_code.into_inner() == u64::from(close_code::DISCONNECTED)
        );
        let redial = !deliberate
            && !link.closing.load(Ordering::Relaxed)
            && match &end {
                Ok(()) | Err(LinkEnd::Finished) => true,
                Err(LinkEnd::Lost(e)) => !gives_up(e),
                _ => false,
            };
        let error = match end {
            Ok(()) | Err(LinkEnd::Finished) => {
                if !link.closing.load(Ordering::Relaxed) {
                    link.close(close_code::DONE, "done");
                }
                None
            }
            Err(LinkEnd::Shutdown) => {
                link.close(close_code::SHUTTING_DOWN, "the node is shutting down");
                None
            }
            Err(LinkEnd::Lost(e)) => {
                info!(error = %e, "sync connection ended");
                if let NetError::Refused { code, reason, .. } = &e {
                    close(&link.conn, close_code::DONE, "refused");
                    self.emit(NodeEvent::Refused {
                        network: net.id,
                        peer: link.peer,
                        by_us: false,
                        code: *code,
                        reason: reason.clone(),
                    });
                }
                Some(e.to_string())
            }
            Err(LinkEnd::Protocol(detail)) => {
                warn!(%detail, "protocol violation by the peer; refusing it");
                link.refuse(RefuseCode::ProtocolViolation, &detail);
                self.emit(NodeEvent::Refused {
                    network: net.id,
                    peer: link.peer,
                    by_us: true,
                    code: RefuseCode::ProtocolViolation,
                    reason: detail.clone(),
                });
                Some(format!("protocol violation: {detail}"))
            }
            Err(LinkEnd::Storage(e)) => {
                error!(error = %e, "could not store changes from the peer; closing its connection");
                link.close(
                    close_code::STORAGE_FAILURE,
                    "the receiving node could not store the changes",
                );
                Some(format!("storage failure: {e}"))
            }
        };
        net.remove_link(&link, error.clone());
        self.emit(NodeEvent::Disconnected {
            network: net.id,
            peer: link.peer,
            error,
        });
        if redial && !net.connected(link.peer) {
            self.schedule_reconnect(&net, link.peer, false);
        }
    }

    async fn accept_loop(self: Arc<Self>) {
        loop {
            let incoming = tokio::select! {
                _ = self.cancel.cancelled() => break,
                incoming = self.endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { break };
            let inner = self.clone();
            self.tracker.spawn(
                async move { inner.accept(incoming).await }.instrument(tracing::Span::current()),
            );
        }
        debug!("accept loop stopped");
    }

    /// Handle an incoming connection: the handshake (iroh refuses unknown ALPNs), the
    /// membership check, the first frame.
    async fn accept(self: Arc<Self>, incoming: Incoming) {
        let mut accepting = match incoming.accept() {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "incoming handshake failed (no common ALPN: a node of another network or protocol version?)");
                self.emit(NodeEvent::HandshakeFailed {
                    detail: e.to_string(),
                });
                return;
            }
        };
        let alpn = match accepting.alpn().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "incoming handshake failed (no common ALPN: a node of another network or protocol version?)");
                self.emit(NodeEvent::HandshakeFailed {
                    detail: e.to_string(),
                });
                return;
            }
        };
        let conn = match accepting.await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "incoming handshake failed");
                self.emit(NodeEvent::HandshakeFailed {
                    detail: e.to_string(),
                });
                return;
            }
        };
        let Ok(peer) = DeviceId::from_bytes(conn.remote_id().as_bytes()) else {
            close(
                &conn,
                u32::from(RefuseCode::NotAMember.to_u16()),
                "not a device key",
            );
            return;
        };
        let Some(network) = network_of_alpn(&alpn) else {
            let code = RefuseCode::UnsupportedVersion.to_u16();
            close(&conn, u32::from(code), "unknown protocol");
            return;
        };
        let span = conn_span(network, peer, "in");
        async {
            let net = match self.net(network) {
                Ok(net) => net,
                Err(NetError::NetworkUnavailable { .. }) => {
                    self.refuse_unavailable(&conn, network, peer).await;
                    return;
                }
                Err(_) => {
                    let code = RefuseCode::WrongNetwork.to_u16();
                    close(&conn, u32::from(code), "this node does not hold that network");
                    return;
                }
            };
            if self.cancel.is_cancelled() {
                close(&conn, close_code::SHUTTING_DOWN, "the node is shutting down");
                return;
            }
            let after = self.config.connect_timeout;
            // A device that is not a member may send one small frame: a Redeem.
            let member = lock(&net.replica).replica().member(&peer).is_some();
            let (mut send, mut recv) = match tokio::time::timeout(after, conn.accept_bi()).await {
                Ok(Ok(streams)) => streams,
                Ok(Err(e)) => {
                    let e = connection_error(peer, network, &e);
                    warn!(error = %e, "incoming connection failed before its first frame");
                    net.record_error(peer, e.to_string());
                    return;
                }
                Err(_) => {
                    close(&conn, close_code::TIMEOUT, "timed out waiting for the first frame");
                    return;
                }
            };
            let limit = if member { MAX_FRAME_LEN } else { MAX_REDEEM_LEN };
            let first = tokio::time::timeout(after, read_frame_limited(&mut recv, limit)).await;
            let first = match first {
                Ok(Ok(Some(frame))) => frame,
                _ if !member => {
                    self.refuse_not_member(&net, &conn, &mut send, peer).await;
                    return;
                }
                Ok(Ok(None)) => {
                    let detail = "the peer ended the stream before its first frame";
                    warn!(detail, "incoming connection failed before its first frame");
                    net.record_error(peer, detail.to_string());
                    return;
                }
                Ok(Err(e)) => {
                    let e = read_error(peer, network, e);
                    warn!(error = %e, "incoming connection failed before its first frame");
                    if let NetError::Protocol { detail, .. } = &e {
                        let code = RefuseCode::ProtocolViolation.to_u16();
                        close(&conn, u32::from(code), detail);
                        self.emit(NodeEvent::Refused {
                            network,
                            peer,
                            by_us: true,
                            code: RefuseCode::ProtocolViolation,
                            reason: detail.clone(),
                        });
                    }
                    net.record_error(peer, e.to_string());
                    return;
                }
                Err(_) => {
                    close(&conn, close_code::TIMEOUT, "timed out waiting for the first frame");
                    return;
                }
            };
            let first = match first {
                Frame::Redeem {
                    invite,
                    secret,
                    agent,
                } if !member => {
                    self.redeem(&net, conn, peer, (send, recv), &invite, secret, agent)
                        .await;
                    return;
                }
                Frame::Redeem { invite, .. } => {
                    // A retry after a lost connection, say: it syncs as the member it is.
                    info!(nonce = %invite.nonce, "already a member; the invite is not redeemed again");
                    None
                }
                _ if !member => {
                    self.refuse_not_member(&net, &conn, &mut send, peer).await;
                    return;
                }
                frame => Some(frame),
            };
            if let Some(e) = first.as_ref().and_then(|f| refused(peer, f)) {
                info!(error = %e, "the dialer refused");
                close(&conn, close_code::DONE, "refused");
                return;
            }
            let session = net.session(peer);
            self.start_link(&net, conn, peer, true, session, send, recv, first);
        }
        .instrument(span)
        .await;
    }
}

impl Inner {
    /// Refuse a peer that dialed this node for a network it holds but could not open: a
    /// Refuse frame ([`RefuseCode::WrongNetwork`], saying the network is unavailable here)
    /// on its stream, then close. Nothing of the network is read.
    async fn refuse_unavailable(&self, conn: &Connection, network: NetworkId, peer: DeviceId) {
        let Some(reason) = self.read_unavailable().get(&network).map(|p| p.refusal()) else {
            return;
        };
        let code = RefuseCode::WrongNetwork;
        warn!("refusing a peer: this network is unavailable on this node");
        self.emit(NodeEvent::Refused {
            network,
            peer,
            by_us: true,
            code,
            reason: reason.clone(),
        });
        let after = self.config.connect_timeout;
        match tokio::time::timeout(after, conn.accept_bi()).await {
            Ok(Ok((mut send, _recv))) => refuse_on(conn, &mut send, code, &reason).await,
            _ => close(conn, u32::from(code.to_u16()), &reason),
        }
    }

    /// Refuse a device that is not a member: a Refuse frame on its stream, then close.
    async fn refuse_not_member(
        &self,
        net: &Net,
        conn: &Connection,
        send: &mut SendStream,
        peer: DeviceId,
    ) {
        let network = net.id;
        let reason = format!(
            "device {peer} is not a member of network {network} (never admitted, or removed): ask an admin of the network to add this device"
        );
        warn!("refusing a device that is not a member");
        net.record_error(peer, format!("refused: {reason}"));
        self.emit(NodeEvent::Refused {
            network,
            peer,
            by_us: true,
            code: RefuseCode::NotAMember,
            reason: reason.clone(),
        });
        refuse_on(conn, send, RefuseCode::NotAMember, &reason).await;
    }

    /// Redeem an invite for `peer`, a device that is not a member, by this node's clock
    /// ([`DurableReplica::redeem_invite`]): on success the new records are stored and pushed
    /// to the connected peers, and the connection becomes the new member's sync connection;
    /// else it is refused with the invite's refusal code, and nothing is written.
    #[allow(clippy::too_many_arguments)]
    async fn redeem(
        self: &Arc<Self>,
        net: &Arc<Net>,
        conn: Connection,
        peer: DeviceId,
        (mut send, recv): (SendStream, RecvStream),
        invite: &crate::membership::Invite,
        secret: Option<crate::membership::BearerSecret>,
        agent: Option<Agent>,
    ) {
        let now = unix_now();
        let result = {
            let mut replica = lock(&net.replica);
            match replica.redeem_invite(invite, peer, secret.as_ref(), agent, now) {
                Ok(signed) => {
                    net.after_change(&replica, &signed, None);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        let network = net.id;
        if let Err(e) = result {
            let code = match &e {
                crate::Error::Invite(ie) => RefuseCode::of_invite_error(ie),
                _ => RefuseCode::InviteNotRedeemed,
            };
            let reason = format!("invite {} not redeemed: {e}", invite.nonce);
            warn!(%code, %reason, "invite refused");
            net.record_error(peer, format!("refused: {reason}"));
            self.emit(NodeEvent::Refused {
                network,
                peer,
                by_us: true,
                code,
                reason: reason.clone(),
            });
            refuse_on(&conn, &mut send, code, &reason).await;
            return;
        }
        info!(nonce = %invite.nonce, role = %invite.role, "invite redeemed: a new member");
        self.emit(NodeEvent::InviteRedeemed {
            network,
            device: peer,
            role: invite.role,
            nonce: invite.nonce.clone(),
        });
        let session = net.session(peer);
        self.start_link(net, conn, peer, true, session, send, recv, None);
    }
}

/// Read frames into `tx` until the stream ends, fails, or the node closes.
async fn read_frames(
    mut recv: RecvStream,
    tx: mpsc::Sender<Result<Frame, LinkEnd>>,
    cancel: CancellationToken,
    peer: DeviceId,
    network: NetworkId,
) {
    loop {
        let read = tokio::select! {
            _ = cancel.cancelled() => return,
            read = read_frame(&mut recv) => read,
        };
        let (item, last) = match read {
            Ok(Some(frame)) => (Ok(frame), false),
            Ok(None) => (Err(LinkEnd::Finished), true),
            Err(ReadFrameError::Read(ReadError::ConnectionLost(e))) if is_normal_close(&e) => {
                debug!(reason = %e, "the connection was closed");
                (Err(LinkEnd::Finished), true)
            }
            Err(ReadFrameError::Frame(e)) => (Err(LinkEnd::Protocol(e.to_string())), true),
            Err(e) => (Err(LinkEnd::Lost(read_error(peer, network, e))), true),
        };
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

async fn run_writer(
    conn: Connection,
    mut send: SendStream,
    mut rx: mpsc::UnboundedReceiver<Out>,
    cancel: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            next = rx.recv() => next,
        };
        match next {
            None => break,
            Some(Out::Frame(bytes)) => {
                if let Err(e) = write_frame(&mut send, &bytes).await {
                    debug!(error = %e, "write failed; the writer stops");
                    break;
                }
            }
            Some(Out::Refuse(code, reason)) => {
                tokio::select! {
                    _ = cancel.cancelled() => close(&conn, u32::from(code.to_u16()), &reason),
                    _ = refuse_on(&conn, &mut send, code, &reason) => {}
                }
                return;
            }
        }
    }
    let _ = send.finish();
}
