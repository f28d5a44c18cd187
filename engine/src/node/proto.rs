//! The node's protocol for one network as a sans-I/O state machine: events in, effects out,
//! time as an input. No tokio, no iroh, no redb, no clock, no operating-system randomness:
//! the async node ([`super`]) and the whole-node simulator (`sim`, tests only) drive it.
//!
//! # State
//!
//! * **Links**: the open sync connections of the network, each with its peer, its direction
//!   and its [`SyncSession`], whether this node refused it (`closing`: nothing more is sent
//!   but the refusal) and the frames waiting while a batch of changes is being stored.
//! * **Peers**: per device, the heads it last told us it has, the last error of a connection
//!   with it, its address book entry, whether this node's user paused it, and its redial
//!   state (attempt number, when the next dial is due, whether a dial is under way).
//! * **The store in flight**: at most one batch of received changes is being verified,
//!   admitted and stored at a time (the replica is one); frames that arrive meanwhile wait on
//!   their link, in order.
//!
//! # Events ([`Event`])
//!
//! An inbound connection asks to open (admission: a member, a device redeeming an invite, or
//! refused), an invite's redemption was stored or refused, a link opened
//! (either way), frames arrived on a link, a batch was stored (its [`Receipt`]) or its store
//! failed, a link closed (and how), a local write was committed, a timer fired (a redial is
//! due), a dial failed, the user paused or resumed a peer, an address was learnt, the node
//! started (redial every peer of the address book at once).
//!
//! # Effects ([`Effect`])
//!
//! Send a frame on a link; refuse a link (a Refuse frame, then close); close a link with a
//! code; redeem an invite (the driver checks and stores it by its clock and feeds the outcome
//! back as [`Event::Redeemed`]); verify, admit and store a batch of changes (the driver does it off its event loop
//! and feeds the [`Receipt`] back as [`Event::Stored`]); tell subscribers of new changes;
//! tell the application of something that happened ([`Notice`]); dial a peer; set a timer;
//! save the address book; save a peer's sync state.
//!
//! # Decisions it owns
//!
//! Who may connect (members, and a device that is not one only with a Redeem as its first
//! frame, no larger than [`NetworkProto::first_frame_limit`]; [`Event::Incoming`]), what an
//! invite's redemption does (a new member whose link opens at once, the records pushed to
//! every other link; else the refusal with the invite's code), what a peer's frames do (the session),
//! where stored changes go (every other link: the A-B-C hop; a removed member first learns of
//! its removal, then is refused), when a peer is refused (protocol violation, flooding, not a
//! member), and when and how soon a peer is redialed (exponential backoff with jitter from a
//! seeded generator, [`Backoff`]): after a link ends other than by a deliberate close, a
//! refusal or a protocol failure (after this node's own failure to store a batch too: the
//! disk may heal); not while paused or frozen, not once it is no member.
//!
//! The replica is read through `&Replica` (sessions need the document to compute what to
//! send) but never written here: writes are effects.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use automerge::ChangeHash;

use crate::identity::{DeviceId, NetworkId, SignedChange};
use crate::membership::RECORD_PREFIX;
use crate::membership::{BearerSecret, Invite, Role};
use crate::replica::{Receipt, Replica};
use crate::sync::{Frame, ReceivedPart, RefuseCode, SyncSession, MAX_FRAME_LEN, MAX_REDEEM_LEN};
use crate::vf::Agent;

/// Most frames a session is asked for in one go (a bound against a runaway session).
pub const MAX_FRAMES_PER_POLL: usize = 64;

/// A link's id, unique within the node (the driver allocates them).
pub type LinkId = u64;

/// Time as the core sees it: a duration since an origin the driver chooses (monotonic).
pub type Time = Duration;

/// Exponential backoff of automatic reconnection ([`super::NodeConfig::reconnect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 500 ms, doubling up to one minute.
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0 for the first), given `unit`, a random
    /// number in [0, 1): `min(max, initial × 2^attempt) × (0.5 + unit / 2)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self
            .initial
            .checked_mul(1u32 << attempt.min(20))
            .unwrap_or(self.max)
            .min(self.max);
        base.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
    }
}

/// A small seeded random generator (SplitMix64) for jitter. The async node seeds it from the
/// operating system; the simulator from its seed.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed)
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How a link ended, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEnd {
    /// The peer finished its stream, or closed the connection normally: redialed.
    Finished,
    /// The connection broke. `retry`: the failure is worth a redial (a timeout, a lost
    /// connection), as opposed to one that is final (a refusal, not a member).
    Lost {
        /// What happened, readable.
        error: String,
        /// Whether to redial.
        retry: bool,
    },
    /// A deliberate close, by this node's user or the peer's ([`super::Node::disconnect`]):
    /// not redialed.
    Deliberate,
    /// The peer refused this node (a Refuse frame or a refusal close): not redialed, unless
    /// the peer was only busy.
    Refused {
        /// Why.
        code: RefuseCode,
        /// Why, readable.
        reason: String,
    },
    /// This node is shutting down.
    Shutdown,
}

/// Something the driver reports to the core.
#[derive(Debug)]
pub enum Event<A> {
    /// The node started: redial every peer of the address book at once (if redialing is on).
    Started,
    /// A device connected to this node for this network and sent its first frame: admit it
    /// (a member: the link opens, [`Event::LinkOpened`] need not follow) or refuse it.
    Incoming {
        /// The new link.
        link: LinkId,
        /// The authenticated device.
        peer: DeviceId,
        /// The session to use (resumed from saved state, or new).
        session: SyncSession,
        /// Where it came from (remembered in the address book).
        addr: Option<A>,
        /// Its first frame, handled as the link's first.
        first: Option<Frame>,
    },
    /// A link opened: an outbound connection the peer accepted, or an inbound one the driver
    /// admitted itself (a redeemed invite). Its first frames are sent at once.
    LinkOpened {
        /// The link.
        link: LinkId,
        /// The peer.
        peer: DeviceId,
        /// Whether the peer dialed us.
        inbound: bool,
        /// The session (for an outbound link, perhaps one that already sent its opening).
        session: SyncSession,
        /// Where the peer was reached (remembered in the address book).
        addr: Option<A>,
        /// A first frame already read (the peer's answer to the opening exchange).
        first: Option<Frame>,
    },
    /// Frames arrived on a link, in order.
    Frames {
        /// The link.
        link: LinkId,
        /// The frames.
        frames: Vec<Frame>,
    },
    /// Bytes that do not decode as a frame arrived on a link: the peer broke the protocol
    /// (it is refused, and not redialed).
    Malformed {
        /// The link.
        link: LinkId,
        /// What is wrong.
        detail: String,
    },
    /// The redemption of [`Effect::Redeem`] for `link` ended: the records it stored, or why
    /// the invite was not redeemed (nothing was written).
    Redeemed {
        /// The link of the redeeming device.
        link: LinkId,
        /// The new member's records, or the refusal's code and reason.
        result: Result<Vec<SignedChange>, (RefuseCode, String)>,
    },
    /// The batch of [`Effect::Store`] for `link` is stored.
    Stored {
        /// The link the changes came from.
        link: LinkId,
        /// What the replica did with them.
        receipt: Receipt,
    },
    /// The batch of [`Effect::Store`] for `link` could not be stored.
    StoreFailed {
        /// The link the changes came from.
        link: LinkId,
        /// Why.
        error: String,
    },
    /// A link ended.
    LinkClosed {
        /// The link.
        link: LinkId,
        /// How.
        end: LinkEnd,
    },
    /// Changes were made on this node and stored (a write, a membership change, a redeemed
    /// invite): tell subscribers and push them to every peer.
    Committed {
        /// The changes.
        changes: Vec<SignedChange>,
    },
    /// The replica may hold in memory what its store lacks (a commit failed and it could
    /// not be put back to its stored state: `DurableReplica::is_stale`). Nothing read from
    /// it may be sent: a change of a write reported as failed would reach peers, and the
    /// write after the reload, which does not know it, would make this device look like an
    /// equivocator. Every link is closed and new ones are closed at once, until
    /// [`Event::Reloaded`].
    Frozen,
    /// The replica was put back to its stored state after a failed commit (a write or a
    /// membership change that returned an error): it may have lost changes it held in
    /// memory, or hold the failed commit's changes after all (an fsync that failed after its
    /// data reached the disk). Every link starts a sync round, so that both travel; after
    /// [`Event::Frozen`], links resume and the peers are redialed.
    Reloaded,
    /// A timer of [`Effect::SetTimer`] fired.
    Timer(Timer),
    /// A dial of [`Effect::Dial`] ended: `failed` is `None` if it succeeded (a link opened,
    /// or one was open already), else whether the failure is worth another try.
    DialDone {
        /// The peer.
        peer: DeviceId,
        /// `Some(retry)` if it failed.
        failed: Option<bool>,
    },
    /// A connection with `peer` failed before a link opened (dialing or accepting).
    ConnectFailed {
        /// The peer.
        peer: DeviceId,
        /// What happened.
        error: String,
    },
    /// The user paused a peer: its links close, it is not redialed.
    Pause {
        /// The peer.
        peer: DeviceId,
    },
    /// The user asked to connect to a peer: the pause ends.
    Resume {
        /// The peer.
        peer: DeviceId,
    },
    /// `peer` was reached at `addr` (an address to remember).
    Reached {
        /// The peer.
        peer: DeviceId,
        /// Where.
        addr: A,
    },
}

/// A timer the core asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Redial `peer` (attempt number `attempt`, 1 for the first).
    Redial {
        /// The peer.
        peer: DeviceId,
        /// The attempt; a stale timer (the redial state moved on) is ignored.
        attempt: u32,
    },
}

/// Something the application is told (the node turns these into its `NodeEvent`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A link opened.
    Connected {
        /// The peer.
        peer: DeviceId,
        /// Whether the peer dialed us.
        inbound: bool,
    },
    /// A link closed.
    Disconnected {
        /// The peer.
        peer: DeviceId,
        /// Why, if not a normal close.
        error: Option<String>,
    },
    /// A link was refused, by this node or by the peer.
    Refused {
        /// The peer.
        peer: DeviceId,
        /// Whether this node refused.
        by_us: bool,
        /// Why.
        code: RefuseCode,
        /// Why, readable.
        reason: String,
    },
    /// Changes from a peer were refused and quarantined.
    ChangesRefused {
        /// The peer.
        peer: DeviceId,
        /// How many.
        count: usize,
        /// The first reason.
        reason: String,
    },
    /// A device redeemed an invite: it is a member, and its link is open.
    InviteRedeemed {
        /// The new member.
        peer: DeviceId,
        /// Its role.
        role: Role,
        /// The invite's nonce.
        nonce: String,
    },
    /// The peer will be redialed after `after`.
    RetryScheduled {
        /// The peer.
        peer: DeviceId,
        /// Which attempt (1, 2, …).
        attempt: u32,
        /// In how long.
        after: Duration,
    },
}

/// Something the driver does for the core.
// Effects live for one call; boxing the frame would cost an allocation per frame sent.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Effect<A> {
    /// Send a frame on a link.
    Send {
        /// The link.
        link: LinkId,
        /// The frame.
        frame: Frame,
    },
    /// Refuse the peer of a link: send a Refuse frame, then close the connection. The driver
    /// reports [`Event::LinkClosed`] when it is closed.
    Refuse {
        /// The link.
        link: LinkId,
        /// Why.
        code: RefuseCode,
        /// Why, readable.
        reason: String,
    },
    /// Close a link with a reason.
    Close {
        /// The link.
        link: LinkId,
        /// Why.
        code: CloseKind,
        /// The reason.
        reason: String,
    },
    /// Redeem `invite` for `peer` (a device that is not a member) by the driver's clock,
    /// durably (`DurableReplica::redeem_invite`), then report [`Event::Redeemed`]; on
    /// failure the replica is put back to its stored state ([`Event::Reloaded`] first).
    Redeem {
        /// The link of the redeeming device (open in the driver, not yet in the core).
        link: LinkId,
        /// The device.
        peer: DeviceId,
        /// The invite.
        invite: Invite,
        /// Its bearer secret, if any.
        secret: Option<BearerSecret>,
        /// The Agent to create for it, if the invite names none.
        agent: Option<Agent>,
    },
    /// Verify, admit and store these changes (durably), then report [`Event::Stored`] or
    /// [`Event::StoreFailed`]. No other `Store` is asked for until then.
    Store {
        /// The link they came from.
        link: LinkId,
        /// Missing parts of the history (changes covered by attestations), stored first.
        parts: Vec<ReceivedPart>,
        /// The changes.
        changes: Vec<SignedChange>,
    },
    /// New changes are in the replica: tell subscribers (the heads are the replica's).
    Updated {
        /// The changes, in the order applied.
        changes: Vec<ChangeHash>,
        /// The peer they came from; `None` if made here.
        from: Option<DeviceId>,
    },
    /// Tell the application.
    Notify(Notice),
    /// Dial a peer; report [`Event::DialDone`] (and [`Event::LinkOpened`] if a link opens).
    Dial {
        /// The peer.
        peer: DeviceId,
        /// Where.
        addr: A,
    },
    /// Report [`Event::Timer`] at `at`.
    SetTimer {
        /// When.
        at: Time,
        /// Which.
        timer: Timer,
    },
    /// Save the address book (every entry).
    SaveBook(Vec<A>),
    /// Save the sync state of `peer` for the next connection.
    SaveSyncState {
        /// The peer.
        peer: DeviceId,
        /// [`SyncSession::saved_state`].
        state: Vec<u8>,
    },
}

/// Why the core closes a link (the driver maps it to its transport's close code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// A normal end (e.g. after the peer refused this node).
    Done,
    /// Deliberately disconnected by this node's user: the peer does not redial.
    Disconnected,
    /// This node could not store what it received.
    StorageFailure,
}

/// The refusal of an invite that was not redeemed: the invite's code (docs/protocol.md), or
/// [`RefuseCode::InviteNotRedeemed`] for any other failure (this node could not store it),
/// and the reason.
pub fn redeem_refusal(e: &crate::Error) -> (RefuseCode, String) {
    let code = match e {
        crate::Error::Invite(ie) => RefuseCode::of_invite_error(ie),
        _ => RefuseCode::InviteNotRedeemed,
    };
    (code, e.to_string())
}

/// One open link.
#[derive(Debug)]
struct LinkState {
    peer: DeviceId,
    inbound: bool,
    session: SyncSession,
    /// Refused or being closed by this node: nothing more is sent or handled.
    closing: bool,
    /// Frames that arrived while a batch was being stored.
    waiting: VecDeque<Frame>,
    /// Why this node is closing it, if it is.
    error: Option<String>,
    /// Closed by this node for a reason that passes (a batch it could not store, the
    /// replica back at its stored state): redial once it has ended, as after a lost link.
    redial_after_close: bool,
}

/// What the core knows of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord<A> {
    /// The heads it last told us it has.
    pub their_heads: Option<Vec<ChangeHash>>,
    /// The last error of a connection with it.
    pub last_error: Option<String>,
    /// The address book entry.
    pub addr: Option<A>,
    /// Paused by this node's user: not redialed.
    pub paused: bool,
    /// Redial state: the attempt number and when it is due, if a redial is scheduled.
    pub retry: Option<(u32, Time)>,
    /// A dial of a redial is under way.
    dialing: bool,
    /// The current run of redials started with an immediate attempt (the backoff's first
    /// delay then comes with attempt 2).
    immediate: bool,
}

impl<A> Default for PeerRecord<A> {
    fn default() -> Self {
        PeerRecord {
            their_heads: None,
            last_error: None,
            addr: None,
            paused: false,
            retry: None,
            dialing: false,
            immediate: false,
        }
    }
}

/// One network's protocol state on one node. See the module documentation.
#[derive(Debug)]
pub struct NetworkProto<A> {
    network: NetworkId,
    me: DeviceId,
    backoff: Option<Backoff>,
    jitter: Jitter,
    links: BTreeMap<LinkId, LinkState>,
    peers: BTreeMap<DeviceId, PeerRecord<A>>,
    /// The link whose batch is being stored, and its peer, if any.
    storing: Option<(LinkId, DeviceId)>,
    /// Links with frames waiting for the store, in the order they arrived.
    queue: VecDeque<LinkId>,
    /// The replica is stale ([`Event::Frozen`]).
    frozen: bool,
    /// Links of devices redeeming an invite ([`Effect::Redeem`] under way).
    redeeming: BTreeMap<LinkId, Redeeming<A>>,
}

/// A device whose invite is being redeemed: its link opens once it is a member.
#[derive(Debug)]
struct Redeeming<A> {
    peer: DeviceId,
    session: SyncSession,
    addr: Option<A>,
    role: Role,
    nonce: String,
    /// Frames that arrived meanwhile (the joiner's sync request follows its Redeem).
    waiting: Vec<Frame>,
}

impl<A: Clone + PartialEq + std::fmt::Debug> NetworkProto<A> {
    /// The protocol of `network` on device `me`, redialing with `backoff` (`None`: never),
    /// its jitter drawn from `jitter`; `book` is the stored address book.
    pub fn new(
        network: NetworkId,
        me: DeviceId,
        backoff: Option<Backoff>,
        jitter: Jitter,
        book: impl IntoIterator<Item = (DeviceId, A)>,
    ) -> NetworkProto<A> {
        let peers = book
            .into_iter()
            .filter(|(d, _)| *d != me)
            .map(|(d, a)| {
                (
                    d,
                    PeerRecord {
                        addr: Some(a),
                        ..PeerRecord::default()
                    },
                )
            })
            .collect();
        NetworkProto {
            network,
            me,
            backoff,
            jitter,
            links: BTreeMap::new(),
            peers,
            storing: None,
            queue: VecDeque::new(),
            frozen: false,
            redeeming: BTreeMap::new(),
        }
    }

    /// Whether the core holds the replica frozen ([`Event::Frozen`]).
    pub fn frozen(&self) -> bool {
        self.frozen
    }

    /// The network.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// The peers known (address book, errors, redials).
    pub fn peers(&self) -> &BTreeMap<DeviceId, PeerRecord<A>> {
        &self.peers
    }

    /// The open links: id, peer, and the heads the peer last told us it has.
    pub fn links(&self) -> impl Iterator<Item = (LinkId, DeviceId, Option<&[ChangeHash]>)> {
        self.links
            .iter()
            .map(|(id, l)| (*id, l.peer, l.session.peer_heads()))
    }

    /// Whether a link to `peer` is open and not closing.
    pub fn connected(&self, peer: DeviceId) -> bool {
        self.links.values().any(|l| l.peer == peer && !l.closing)
    }

    /// The largest first frame to read from `peer` on an inbound connection: a member's may
    /// be any frame; a device that is not one may send only a Redeem
    /// ([`MAX_REDEEM_LEN`]), so that a stranger cannot make this node read a large frame.
    pub fn first_frame_limit(replica: &Replica, peer: &DeviceId) -> usize {
        if replica.member(peer).is_some() {
            MAX_FRAME_LEN
        } else {
            MAX_REDEEM_LEN
        }
    }

    /// Whether any batch is being stored or any frame waits (for a simulator's quiescence).
    pub fn busy(&self) -> bool {
        self.storing.is_some() || !self.queue.is_empty()
    }

    /// Handle one event at time `now`, reading the replica, and return what to do.
    pub fn handle(&mut self, now: Time, replica: &Replica, event: Event<A>) -> Vec<Effect<A>> {
        let mut out = Vec::new();
        match event {
            Event::Started => {
                let peers: Vec<DeviceId> = self
                    .peers
                    .iter()
                    .filter(|(d, r)| r.addr.is_some() && replica.member(d).is_some())
                    .map(|(d, _)| *d)
                    .collect();
                for peer in peers {
                    self.schedule_redial(now, replica, peer, true, &mut out);
                }
            }
            Event::Incoming {
                link,
                peer,
                session,
                addr,
                first,
            } => {
                let member = replica.member(&peer).is_some();
                match first {
                    Some(Frame::Redeem {
                        invite,
                        secret,
                        agent,
                    }) if !member => {
                        // The one frame a device that is not a member may send.
                        self.redeeming.insert(
                            link,
                            Redeeming {
                                peer,
                                session,
                                addr,
                                role: invite.role,
                                nonce: invite.nonce.clone(),
                                waiting: Vec::new(),
                            },
                        );
                        out.push(Effect::Redeem {
                            link,
                            peer,
                            invite,
                            secret,
                            agent,
                        });
                        return out;
                    }
                    // A member's Redeem (a retry after a lost connection, say): it syncs as
                    // the member it is; the invite is not redeemed again.
                    Some(Frame::Redeem { .. }) => {
                        self.open(
                            now, replica, link, peer, true, session, addr, None, &mut out,
                        );
                        return out;
                    }
                    _ => {}
                }
                if !member {
                    let reason = format!(
                        "device {peer} is not a member of network {} (never admitted, or removed): ask an admin of the network to add this device",
                        self.network
                    );
                    self.peer(peer).last_error = Some(format!("refused: {reason}"));
                    out.push(Effect::Notify(Notice::Refused {
                        peer,
                        by_us: true,
                        code: RefuseCode::NotAMember,
                        reason: reason.clone(),
                    }));
                    out.push(Effect::Refuse {
                        link,
                        code: RefuseCode::NotAMember,
                        reason,
                    });
                } else {
                    self.open(
                        now, replica, link, peer, true, session, addr, first, &mut out,
                    );
                }
            }
            Event::LinkOpened {
                link,
                peer,
                inbound,
                session,
                addr,
                first,
            } => self.open(
                now, replica, link, peer, inbound, session, addr, first, &mut out,
            ),
            Event::Frames { link, frames } => {
                if let Some(r) = self.redeeming.get_mut(&link) {
                    // Handled once the device is a member (or dropped with its refusal).
                    r.waiting.extend(frames);
                    return out;
                }
                let Some(l) = self.links.get_mut(&link) else {
                    return out;
                };
                if l.closing {
                    return out;
                }
                l.waiting.extend(frames);
                if !self.queue.contains(&link) {
                    self.queue.push_back(link);
                }
                self.drain(replica, &mut out);
            }
            Event::Redeemed { link, result } => {
                let Some(r) = self.redeeming.remove(&link) else {
                    return out;
                };
                match result {
                    Ok(changes) => {
                        out.push(Effect::Notify(Notice::InviteRedeemed {
                            peer: r.peer,
                            role: r.role,
                            nonce: r.nonce,
                        }));
                        // The new member's records go to every other link (and the new link
                        // syncs them as it opens).
                        if !changes.is_empty() {
                            self.after_change(replica, &changes, None, &mut out);
                        }
                        let mut waiting = r.waiting.into_iter();
                        let first = waiting.next();
                        self.open(
                            now, replica, link, r.peer, true, r.session, r.addr, first, &mut out,
                        );
                        let rest: Vec<Frame> = waiting.collect();
                        if let Some(l) = self.links.get_mut(&link).filter(|_| !rest.is_empty()) {
                            if !l.closing {
                                l.waiting.extend(rest);
                                if !self.queue.contains(&link) {
                                    self.queue.push_back(link);
                                }
                                self.drain(replica, &mut out);
                            }
                        }
                    }
                    Err((code, reason)) => {
                        let reason = format!("invite {} not redeemed: {reason}", r.nonce);
                        self.peer(r.peer).last_error = Some(format!("refused: {reason}"));
                        out.push(Effect::Notify(Notice::Refused {
                            peer: r.peer,
                            by_us: true,
                            code,
                            reason: reason.clone(),
                        }));
                        out.push(Effect::Refuse { link, code, reason });
                    }
                }
            }
            Event::Malformed { link, detail } => self.violation(link, detail, &mut out),
            Event::Stored { link, receipt } => {
                let peer = self.storing.take().map(|(_, p)| p);
                self.stored(replica, link, peer, receipt, &mut out);
                self.drain(replica, &mut out);
            }
            Event::StoreFailed { link, error } => {
                self.storing = None;
                if let Some(l) = self.links.get_mut(&link) {
                    l.closing = true;
                    // The disk may heal (a full disk cleared, a passing I/O error): this
                    // node redials with backoff, else its own acknowledged changes could
                    // stay on it alone when the peer does not dial it.
                    l.redial_after_close = true;
                    l.waiting.clear();
                    let peer = l.peer;
                    let error = format!("storage failure: {error}");
                    l.error = Some(error.clone());
                    self.peer(peer).last_error = Some(error);
                    out.push(Effect::Close {
                        link,
                        code: CloseKind::StorageFailure,
                        reason: "the receiving node could not store the changes".into(),
                    });
                }
                // The replica is back to its stored state, which may hold the batch after
                // all: the other links sync.
                if !self.frozen {
                    for (id, l) in &mut self.links {
                        if !l.closing {
                            transmit(*id, l, replica, &mut out);
                        }
                    }
                }
                self.drain(replica, &mut out);
            }
            Event::LinkClosed { link, end } => {
                self.redeeming.remove(&link);
                self.closed(now, replica, link, end, &mut out)
            }
            Event::Committed { changes } => {
                if !changes.is_empty() {
                    self.after_change(replica, &changes, None, &mut out);
                }
            }
            Event::Frozen => {
                self.frozen = true;
                let ids: Vec<LinkId> = self.links.keys().copied().collect();
                for link in ids {
                    self.freeze_link(link, &mut out);
                }
            }
            Event::Reloaded => {
                let was_frozen = std::mem::replace(&mut self.frozen, false);
                for (id, l) in &mut self.links {
                    if !l.closing {
                        transmit(*id, l, replica, &mut out);
                    }
                }
                if !was_frozen {
                    return out;
                }
                let peers: Vec<DeviceId> = self
                    .peers
                    .iter()
                    .filter(|(d, r)| {
                        r.addr.is_some() && !self.links.values().any(|l| l.peer == **d)
                    })
                    .map(|(d, _)| *d)
                    .collect();
                for peer in peers {
                    self.schedule_redial(now, replica, peer, true, &mut out);
                }
            }
            Event::Timer(Timer::Redial { peer, attempt }) => {
                let me = self.me;
                let connected = self.connected(peer);
                let member = replica.member(&peer).is_some();
                let record = self.peer(peer);
                if record.retry.map(|(a, _)| a) != Some(attempt) || record.dialing {
                    return out; // stale
                }
                if record.paused || connected || !member || peer == me {
                    record.retry = None;
                    return out;
                }
                match record.addr.clone() {
                    Some(addr) => {
                        record.dialing = true;
                        out.push(Effect::Dial { peer, addr });
                    }
                    None => record.retry = None,
                }
            }
            Event::ConnectFailed { peer, error } => self.peer(peer).last_error = Some(error),
            Event::DialDone { peer, failed } => {
                let connected = self.connected(peer);
                let record = self.peer(peer);
                if !std::mem::take(&mut record.dialing) {
                    return out;
                }
                let retry = match failed {
                    // Connected: done. Not connected (the new link was lost already): the
                    // redials go on.
                    None if connected => {
                        record.retry = None;
                        return out;
                    }
                    None => true,
                    Some(retry) => retry,
                };
                if retry {
                    let attempt = record.retry.map_or(1, |(a, _)| a);
                    let done = attempt - u32::from(record.immediate);
                    self.redial_after(now, peer, done, attempt, &mut out);
                } else {
                    record.retry = None;
                }
            }
            Event::Pause { peer } => {
                let record = self.peer(peer);
                record.paused = true;
                record.retry = None;
                for (id, l) in &mut self.links {
                    if l.peer == peer && !l.closing {
                        l.closing = true;
                        out.push(Effect::Close {
                            link: *id,
                            code: CloseKind::Disconnected,
                            reason: "disconnected".into(),
                        });
                    }
                }
            }
            Event::Resume { peer } => self.peer(peer).paused = false,
            Event::Reached { peer, addr } => self.remember(peer, addr, &mut out),
        }
        out
    }

    /// Close a link because the replica is frozen.
    fn freeze_link(&mut self, link: LinkId, out: &mut Vec<Effect<A>>) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if l.closing {
            return;
        }
        l.closing = true;
        l.waiting.clear();
        let error = "storage failure: the replica could not be put back to its stored state";
        l.error = Some(error.to_string());
        out.push(Effect::Close {
            link,
            code: CloseKind::StorageFailure,
            reason: "the node cannot store changes now".into(),
        });
    }

    fn peer(&mut self, peer: DeviceId) -> &mut PeerRecord<A> {
        self.peers.entry(peer).or_default()
    }

    fn remember(&mut self, peer: DeviceId, addr: A, out: &mut Vec<Effect<A>>) {
        let record = self.peer(peer);
        if record.addr.as_ref() == Some(&addr) {
            return;
        }
        record.addr = Some(addr);
        let book = self.peers.values().filter_map(|r| r.addr.clone()).collect();
        out.push(Effect::SaveBook(book));
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        _now: Time,
        replica: &Replica,
        link: LinkId,
        peer: DeviceId,
        inbound: bool,
        session: SyncSession,
        addr: Option<A>,
        first: Option<Frame>,
        out: &mut Vec<Effect<A>>,
    ) {
        self.links.insert(
            link,
            LinkState {
                peer,
                inbound,
                session,
                closing: false,
                waiting: VecDeque::new(),
                error: None,
                redial_after_close: false,
            },
        );
        {
            // A new connection ends a pause either way, and any redial.
            let record = self.peer(peer);
            record.paused = false;
            record.retry = None;
            record.dialing = false;
        }
        if let Some(addr) = addr {
            self.remember(peer, addr, out);
        }
        out.push(Effect::Notify(Notice::Connected { peer, inbound }));
        if self.frozen {
            self.freeze_link(link, out);
            return;
        }
        // Proofs of equivocation go to every peer as the link opens: one that accepted a
        // twin before this node saw both cuts the device off too (they apply nothing).
        let evidence = replica.equivocation_evidence();
        let l = self.links.get_mut(&link).expect("just inserted");
        if !evidence.is_empty() {
            if let Some(frame) = l.session.push(&evidence) {
                out.push(Effect::Send { link, frame });
            }
            drain_queued(link, l, replica, out);
        }
        match first {
            Some(frame) => {
                l.waiting.push_back(frame);
                self.queue.push_back(link);
                self.drain(replica, out);
            }
            // An outbound link with no answer yet opens the round (a bootstrap's session
            // after the history); an inbound one waits for the peer's frames (a joiner's
            // request follows its Redeem).
            None if !inbound => transmit(link, l, replica, out),
            None => {}
        }
    }

    /// Handle waiting frames, link by link, until a batch must be stored or none is left.
    fn drain(&mut self, replica: &Replica, out: &mut Vec<Effect<A>>) {
        while self.storing.is_none() {
            let Some(link) = self.queue.pop_front() else {
                return;
            };
            let Some(l) = self.links.get_mut(&link) else {
                continue;
            };
            if l.closing {
                l.waiting.clear();
                continue;
            }
            // A run of pushes (perhaps ending with a sync frame) is stored in one commit.
            let mut changes = Vec::new();
            let mut failure = None;
            let mut refused = None;
            while let Some(frame) = l.waiting.pop_front() {
                let last = !matches!(frame, Frame::Push { .. });
                if let Frame::Refuse { code, reason } = frame {
                    refused = Some((code, reason));
                    break;
                }
                match l.session.handle_frame(replica, frame) {
                    Ok(more) => changes.extend(more),
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
                if last && !changes.is_empty() {
                    break;
                }
            }
            if let Some((code, reason)) = refused {
                {
                    // The peer refused us: its close follows; nothing more is sent. Redialed
                    // later only if it was busy.
                    let peer = l.peer;
                    let error = format!("{peer} refused the connection ({code}): {reason}");
                    l.closing = code != RefuseCode::Busy;
                    l.waiting.clear();
                    l.error = Some(error.clone());
                    self.peer(peer).last_error = Some(error);
                    out.push(Effect::Notify(Notice::Refused {
                        peer,
                        by_us: false,
                        code,
                        reason,
                    }));
                    out.push(Effect::Close {
                        link,
                        code: CloseKind::Done,
                        reason: "refused".into(),
                    });
                    continue;
                }
            }
            if let Some(detail) = failure {
                self.violation(link, detail, out);
                continue;
            }
            if !l.waiting.is_empty() {
                self.queue.push_front(link);
            }
            let parts = l.session.take_parts();
            if changes.is_empty() && parts.is_empty() {
                transmit(link, l, replica, out);
            } else {
                self.storing = Some((link, l.peer));
                out.push(Effect::Store {
                    link,
                    parts,
                    changes,
                });
            }
        }
    }

    /// Refuse a link's peer for breaking the protocol.
    fn violation(&mut self, link: LinkId, detail: String, out: &mut Vec<Effect<A>>) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if l.closing {
            return;
        }
        l.closing = true;
        l.waiting.clear();
        let peer = l.peer;
        let error = format!("protocol violation: {detail}");
        l.error = Some(error.clone());
        self.peer(peer).last_error = Some(error);
        out.push(Effect::Notify(Notice::Refused {
            peer,
            by_us: true,
            code: RefuseCode::ProtocolViolation,
            reason: detail.clone(),
        }));
        out.push(Effect::Refuse {
            link,
            code: RefuseCode::ProtocolViolation,
            reason: detail,
        });
    }

    fn stored(
        &mut self,
        replica: &Replica,
        link: LinkId,
        peer: Option<DeviceId>,
        receipt: Receipt,
        out: &mut Vec<Effect<A>>,
    ) {
        if receipt.overflow > 0 {
            // What was judged is stored; the link ends (the peer floods).
            let detail = format!(
                "{} change(s) over the waiting or quarantine limits",
                receipt.overflow
            );
            self.violation(link, detail, out);
        } else if let (Some((_, reason)), Some(peer)) = (receipt.refused.first(), peer) {
            let reason = reason.to_string();
            self.peer(peer).last_error = Some(format!(
                "{} change(s) refused: {reason}",
                receipt.refused.len()
            ));
            out.push(Effect::Notify(Notice::ChangesRefused {
                peer,
                count: receipt.refused.len(),
                reason,
            }));
        }
        if let Some(l) = self.links.get_mut(&link) {
            if !l.closing {
                transmit(link, l, replica, out);
            }
        }
        let revoked = !receipt.revoked.is_empty();
        let mut applied = receipt.applied;
        // Proof of equivocation travels on to every peer (it applies nothing).
        applied.extend(receipt.evidence);
        if !applied.is_empty() || revoked {
            self.after_change(replica, &applied, peer.map(|p| (link, p)), out);
        }
    }

    /// Tell subscribers about new changes and push them to every link but the one they came
    /// from; a peer that is no longer a member learns of its removal, then is refused.
    fn after_change(
        &mut self,
        replica: &Replica,
        changes: &[SignedChange],
        from: Option<(LinkId, DeviceId)>,
        out: &mut Vec<Effect<A>>,
    ) {
        out.push(Effect::Updated {
            changes: changes.iter().map(SignedChange::hash).collect(),
            from: from.map(|(_, p)| p),
        });
        let membership_changed = changes.iter().any(|c| {
            c.change
                .message()
                .is_some_and(|m| m.starts_with(RECORD_PREFIX))
        });
        let network = self.network;
        let mut removed = Vec::new();
        let pushable: Vec<SignedChange> = changes
            .iter()
            .filter(|c| replica.attested_by(&c.hash()).is_none())
            .cloned()
            .collect();
        for (id, l) in &mut self.links {
            if l.closing || self.frozen {
                continue;
            }
            if membership_changed && replica.member(&l.peer).is_none() {
                // It learns of its removal first.
                if let Some(frame) = l.session.push(&pushable) {
                    out.push(Effect::Send { link: *id, frame });
                }
                l.closing = true;
                l.waiting.clear();
                let reason = format!(
                    "device {} is no longer a member of network {network}",
                    l.peer
                );
                l.error = Some(format!("refused: {reason}"));
                out.push(Effect::Refuse {
                    link: *id,
                    code: RefuseCode::NotAMember,
                    reason,
                });
                removed.push(l.peer);
                continue;
            }
            if from.is_some_and(|(f, _)| f == *id) {
                continue;
            }
            // The push carries the changes; the peer's answer starts a sync round if one is
            // needed. Only the push's overflow is drained here. A change covered by another's
            // attestation has no signature of its own: not pushed (the peer's next sync round
            // gets it in a missing part, with attestations).
            if let Some(frame) = l.session.push(&pushable) {
                out.push(Effect::Send { link: *id, frame });
            }
            drain_queued(*id, l, replica, out);
        }
        if membership_changed {
            // A removed member is not redialed.
            let gone: Vec<DeviceId> = self
                .peers
                .keys()
                .filter(|d| replica.member(d).is_none())
                .copied()
                .collect();
            for d in gone.into_iter().chain(removed) {
                if let Some(r) = self.peers.get_mut(&d) {
                    r.retry = None;
                }
            }
        }
    }

    fn closed(
        &mut self,
        now: Time,
        replica: &Replica,
        link: LinkId,
        end: LinkEnd,
        out: &mut Vec<Effect<A>>,
    ) {
        let Some(l) = self.links.remove(&link) else {
            return;
        };
        self.queue.retain(|q| *q != link);
        let peer = l.peer;
        out.push(Effect::SaveSyncState {
            peer,
            state: l.session.saved_state(),
        });
        let heads = l.session.peer_heads().map(<[ChangeHash]>::to_vec);
        let redial = (l.closing
            && l.redial_after_close
            && !self.frozen
            && !matches!(end, LinkEnd::Shutdown))
            || !l.closing
                && match &end {
                    LinkEnd::Finished => true,
                    LinkEnd::Lost { retry, .. } => *retry,
                    LinkEnd::Refused { code, .. } => *code == RefuseCode::Busy,
                    LinkEnd::Deliberate | LinkEnd::Shutdown => false,
                };
        let error = match end {
            _ if l.closing => l.error.clone(),
            LinkEnd::Finished | LinkEnd::Deliberate | LinkEnd::Shutdown => l.error.clone(),
            LinkEnd::Lost { error, .. } => Some(error),
            LinkEnd::Refused { code, reason } => {
                if !l.closing {
                    out.push(Effect::Notify(Notice::Refused {
                        peer,
                        by_us: false,
                        code,
                        reason: reason.clone(),
                    }));
                }
                Some(format!(
                    "the peer refused the connection ({code}): {reason}"
                ))
            }
        };
        let record = self.peer(peer);
        if heads.is_some() {
            record.their_heads = heads;
        }
        if error.is_some() && !l.closing {
            record.last_error = error.clone();
        }
        out.push(Effect::Notify(Notice::Disconnected { peer, error }));
        let _ = l.inbound;
        if redial && !self.connected(peer) {
            self.schedule_redial(now, replica, peer, false, out);
        }
    }

    /// Start redialing `peer` (unless redialing is off, it is paused, has no address, is no
    /// member, or a redial is scheduled or under way). `immediate`: the first attempt now.
    fn schedule_redial(
        &mut self,
        now: Time,
        replica: &Replica,
        peer: DeviceId,
        immediate: bool,
        out: &mut Vec<Effect<A>>,
    ) {
        if self.backoff.is_none() || peer == self.me || replica.member(&peer).is_none() {
            return;
        }
        let record = self.peer(peer);
        if record.paused || record.retry.is_some() || record.dialing || record.addr.is_none() {
            return;
        }
        record.immediate = immediate;
        if immediate {
            record.retry = Some((1, now));
            out.push(Effect::Notify(Notice::RetryScheduled {
                peer,
                attempt: 1,
                after: Duration::ZERO,
            }));
            out.push(Effect::SetTimer {
                at: now,
                timer: Timer::Redial { peer, attempt: 1 },
            });
        } else {
            self.redial_after(now, peer, 0, 0, out);
        }
    }

    /// Schedule attempt `attempts + 1`, after the backoff's delay number `step`.
    fn redial_after(
        &mut self,
        now: Time,
        peer: DeviceId,
        step: u32,
        attempts: u32,
        out: &mut Vec<Effect<A>>,
    ) {
        let Some(backoff) = self.backoff else { return };
        let unit = self.jitter.unit();
        let delay = backoff.delay(step, unit);
        let attempt = attempts + 1;
        let at = now + delay;
        self.peer(peer).retry = Some((attempt, at));
        out.push(Effect::Notify(Notice::RetryScheduled {
            peer,
            attempt,
            after: delay,
        }));
        out.push(Effect::SetTimer {
            at,
            timer: Timer::Redial { peer, attempt },
        });
    }
}

/// Send what a link's session has to send.
fn transmit<A>(link: LinkId, l: &mut LinkState, replica: &Replica, out: &mut Vec<Effect<A>>) {
    for _ in 0..MAX_FRAMES_PER_POLL {
        match l.session.poll_transmit(replica) {
            Some(frame) => out.push(Effect::Send { link, frame }),
            None => break,
        }
    }
}

/// Send the frames a push left queued in a link's session (not a new sync round).
fn drain_queued<A>(link: LinkId, l: &mut LinkState, replica: &Replica, out: &mut Vec<Effect<A>>) {
    while l.session.has_queued_frames() {
        match l.session.poll_transmit(replica) {
            Some(frame) => out.push(Effect::Send { link, frame }),
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKey;
    use crate::vf::{Action, Agent, EconomicEvent, Id, ResourceDescription, Unit};

    fn key(i: u8) -> DeviceKey {
        DeviceKey::from_secret_bytes(&[i; 32])
    }

    /// Two members, A (admin) and B, each with a core, linked (link 1 at A, 2 at B).
    fn pair() -> (Vec<Replica>, Vec<NetworkProto<()>>) {
        let (mut a, _) =
            Replica::create_network("t", key(1), Agent::person("a", "A")).expect("create");
        a.write(|l| l.create(Unit::new("kg", "kilogram", "kg")))
            .expect("unit");
        a.write(|l| l.create(Agent::person("b", "B")))
            .expect("agent");
        a.add_member(key(2).id(), Role::Member, Id::from("b"))
            .expect("add");
        let (b, _) = Replica::join(a.network(), key(2), a.signed_changes_since(&[])).expect("join");
        let network = a.network();
        let cores = [key(1), key(2)]
            .iter()
            .map(|k| NetworkProto::new(network, k.id(), None, Jitter::new(1), []))
            .collect();
        (vec![a, b], cores)
    }

    use crate::membership::Role;

    /// Carry out effects between the two cores until nothing is left; returns the frames
    /// sent.
    fn run(
        replicas: &mut [Replica],
        cores: &mut [NetworkProto<()>],
        first: Vec<(usize, Effect<()>)>,
    ) -> usize {
        let mut queue: VecDeque<(usize, Effect<()>)> = first.into();
        let mut frames = 0;
        while let Some((x, effect)) = queue.pop_front() {
            let (to, event) = match effect {
                Effect::Send { frame, .. } => {
                    frames += 1;
                    assert!(frames < 100, "the exchange does not end");
                    let frame = Frame::decode(&frame.encode()[LEN_PREFIX_TEST..]).expect("decode");
                    (
                        1 - x,
                        Event::Frames {
                            link: (1 - x) as u64 + 1,
                            frames: vec![frame],
                        },
                    )
                }
                Effect::Store {
                    link,
                    parts,
                    changes,
                } => {
                    assert!(parts.is_empty(), "no missing parts between these cores");
                    let receipt = replicas[x].receive(changes).expect("receive");
                    (x, Event::Stored { link, receipt })
                }
                _ => continue,
            };
            let effects = cores[to].handle(Duration::ZERO, &replicas[to], event);
            queue.extend(effects.into_iter().map(|e| (to, e)));
        }
        frames
    }

    const LEN_PREFIX_TEST: usize = crate::sync::LEN_PREFIX;

    fn produce(r: &mut Replica, agent: &str, lot: &str) -> Vec<SignedChange> {
        r.write(|l| {
            l.record_event(
                EconomicEvent::new(Action::Produce, agent, agent)
                    .quantity(1, "kg")
                    .creating(ResourceDescription::new(lot, lot)),
            )
        })
        .expect("write")
        .1
    }

    /// Regression (found by the node simulator, seed 19): a change pushed to a peer whose
    /// dependency was never pushed (it was made by a write reported as failed, then kept)
    /// waited forever, both sessions believing they were in sync. The waiting peer now asks
    /// for the missing dependency by name.
    #[test]
    fn a_pushed_change_waiting_for_an_unpushed_dependency_is_completed() {
        let (mut replicas, mut cores) = pair();
        let mut first = Vec::new();
        for (x, link) in [(0usize, 1u64), (1, 2)] {
            let peer = replicas[1 - x].device();
            let session = SyncSession::new(replicas[x].network(), peer);
            let effects = cores[x].handle(
                Duration::ZERO,
                &replicas[x],
                Event::LinkOpened {
                    link,
                    peer,
                    inbound: x == 1,
                    session,
                    addr: None,
                    first: None,
                },
            );
            first.extend(effects.into_iter().map(|e| (x, e)));
        }
        run(&mut replicas, &mut cores, first);
        assert_eq!(replicas[0].ledger().heads(), replicas[1].ledger().heads());
        // X is never pushed (its write was reported as failed); Y, made on top of it, is.
        let _x = produce(&mut replicas[0], "a", "x");
        let y = produce(&mut replicas[0], "a", "y");
        let effects = cores[0].handle(
            Duration::ZERO,
            &replicas[0],
            Event::Committed { changes: y },
        );
        let first = effects.into_iter().map(|e| (0, e)).collect();
        run(&mut replicas, &mut cores, first);
        assert_eq!(
            replicas[1].ledger().heads(),
            replicas[0].ledger().heads(),
            "B got Y and asked for X"
        );
    }

    #[test]
    fn redial_backs_off_gives_up_on_refusals_and_stops_when_connected() {
        let (replicas, _) = pair();
        let (a, b) = (&replicas[0], replicas[1].device());
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let mut core = NetworkProto::new(
            a.network(),
            a.device(),
            Some(backoff),
            Jitter::new(7),
            [(b, "addr-b")],
        );
        let timers = |effects: &[Effect<&'static str>]| -> Vec<(Time, Timer)> {
            effects
                .iter()
                .filter_map(|e| match e {
                    Effect::SetTimer { at, timer } => Some((*at, *timer)),
                    _ => None,
                })
                .collect()
        };
        // At start: at once.
        let t = timers(&core.handle(Duration::ZERO, a, Event::Started));
        assert_eq!(
            t,
            vec![(
                Duration::ZERO,
                Timer::Redial {
                    peer: b,
                    attempt: 1
                }
            )]
        );
        let dial = core.handle(Duration::ZERO, a, Event::Timer(t[0].1));
        assert!(
            matches!(dial.as_slice(), [Effect::Dial { addr: "addr-b", .. }]),
            "{dial:?}"
        );
        // Unreachable: attempt 2 after the first delay, attempt 3 after twice as long.
        let mut now = Duration::ZERO;
        for (attempt, base) in [(2, 100), (3, 200), (4, 400), (5, 800), (6, 1000)] {
            let t = timers(&core.handle(
                now,
                a,
                Event::DialDone {
                    peer: b,
                    failed: Some(true),
                },
            ));
            let [(at, Timer::Redial { attempt: n, .. })] = t.as_slice() else {
                panic!("{t:?}")
            };
            assert_eq!(*n, attempt);
            let delay = *at - now;
            let base = Duration::from_millis(base);
            assert!(
                base / 2 <= delay && delay <= base,
                "attempt {attempt}: {delay:?}"
            );
            assert_eq!(core.peers()[&b].retry, Some((attempt, *at)));
            now = *at;
            let dial = core.handle(now, a, Event::Timer(Timer::Redial { peer: b, attempt }));
            assert!(matches!(dial.as_slice(), [Effect::Dial { .. }]));
        }
        // A stale timer does nothing; a final failure ends the redials.
        assert!(core
            .handle(
                now,
                a,
                Event::Timer(Timer::Redial {
                    peer: b,
                    attempt: 2
                })
            )
            .is_empty());
        assert!(timers(&core.handle(
            now,
            a,
            Event::DialDone {
                peer: b,
                failed: Some(false)
            }
        ))
        .is_empty());
        assert_eq!(core.peers()[&b].retry, None);
        // A link that is lost is redialed; one closed deliberately or refused is not.
        for (end, redialed) in [
            (
                LinkEnd::Lost {
                    error: "gone".into(),
                    retry: true,
                },
                true,
            ),
            (LinkEnd::Deliberate, false),
            (
                LinkEnd::Refused {
                    code: RefuseCode::NotAMember,
                    reason: "no".into(),
                },
                false,
            ),
            (
                LinkEnd::Refused {
                    code: RefuseCode::Busy,
                    reason: "busy".into(),
                },
                true,
            ),
            (LinkEnd::Shutdown, false),
        ] {
            let session = SyncSession::new(a.network(), b);
            core.handle(
                now,
                a,
                Event::LinkOpened {
                    link: 9,
                    peer: b,
                    inbound: true,
                    session,
                    addr: None,
                    first: None,
                },
            );
            assert_eq!(core.peers()[&b].retry, None, "connected: no redial");
            let t = timers(&core.handle(
                now,
                a,
                Event::LinkClosed {
                    link: 9,
                    end: end.clone(),
                },
            ));
            assert_eq!(!t.is_empty(), redialed, "{end:?}: {t:?}");
            core.handle(now, a, Event::Pause { peer: b });
            core.handle(now, a, Event::Resume { peer: b });
        }
    }

    /// Regression (found by the node simulator, seed 232): a link this node closed because
    /// it could not store a batch was never redialed; a node whose peers do not dial it kept
    /// its own acknowledged changes to itself for good. It redials now, with backoff.
    #[test]
    fn a_link_closed_after_a_failed_store_is_redialed() {
        let (mut replicas, _) = pair();
        let b = replicas[1].device();
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let a = &replicas[0];
        let mut core = NetworkProto::new(
            a.network(),
            a.device(),
            Some(backoff),
            Jitter::new(3),
            [(b, "addr-b")],
        );
        let session = SyncSession::new(a.network(), b);
        core.handle(
            Duration::ZERO,
            a,
            Event::LinkOpened {
                link: 9,
                peer: b,
                inbound: false,
                session,
                addr: None,
                first: None,
            },
        );
        let changes = produce(&mut replicas[1], "b", "from-b");
        let a = &replicas[0];
        let effects = core.handle(
            Duration::ZERO,
            a,
            Event::Frames {
                link: 9,
                frames: vec![Frame::Push { changes }],
            },
        );
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Store { link: 9, .. })),
            "{effects:?}"
        );
        let effects = core.handle(
            Duration::ZERO,
            a,
            Event::StoreFailed {
                link: 9,
                error: "disk full".into(),
            },
        );
        assert!(
            effects.iter().any(|e| matches!(
                e,
                Effect::Close {
                    link: 9,
                    code: CloseKind::StorageFailure,
                    ..
                }
            )),
            "{effects:?}"
        );
        let effects = core.handle(
            Duration::ZERO,
            a,
            Event::LinkClosed {
                link: 9,
                end: LinkEnd::Deliberate,
            },
        );
        let redial = effects.iter().find_map(|e| match e {
            Effect::SetTimer {
                at,
                timer: Timer::Redial { peer, .. },
            } if *peer == b => Some(*at),
            _ => None,
        });
        let at = redial.unwrap_or_else(|| panic!("no redial after a failed store: {effects:?}"));
        assert!(at > Duration::ZERO, "with backoff, not at once");
    }

    #[test]
    fn a_device_that_is_not_a_member_is_refused() {
        let (replicas, mut cores) = pair();
        let stranger = key(9).id();
        let session = SyncSession::new(replicas[0].network(), stranger);
        let effects = cores[0].handle(
            Duration::ZERO,
            &replicas[0],
            Event::Incoming {
                link: 5,
                peer: stranger,
                session,
                addr: None,
                first: None,
            },
        );
        assert!(
            effects.iter().any(|e| matches!(
                e,
                Effect::Refuse {
                    link: 5,
                    code: RefuseCode::NotAMember,
                    ..
                }
            )),
            "{effects:?}"
        );
        assert!(!cores[0].connected(stranger));
    }
}
