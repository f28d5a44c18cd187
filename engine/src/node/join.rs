//! The joining side's bootstrap as a sans-I/O state machine: events in, effects out, time as
//! an input. No tokio, no iroh, no redb, no clock: the async node (`node/dial.rs`) and the
//! whole-node simulator (`sim`, tests only) drive the same machine.
//!
//! A device with no replica of a network joins it through a peer (an admin, or any member
//! that holds the network): it sends a Redeem frame first if it holds an invite (a ticket),
//! then the sync request of an empty replica ([`SyncSession::bootstrap`]); the peer answers
//! with the history (its saved document in parts, [`Frame::Document`], and changes pushed
//! meanwhile) up to its Sync frame. Then:
//!
//! 1. **Verify** ([`JoinEffect::Verify`]): the driver runs [`History::verify`] (pure, but
//!    heavy: every signature and every change is judged) off its event loop and reports
//!    [`JoinEvent::Verified`].
//! 2. The machine checks that the peer is a member in the history it sent (a device that is
//!    none is refused, [`RefuseCode::NotAMember`]).
//! 3. **Store** ([`JoinEffect::Store`]): the driver stores the new replica durably and
//!    reports [`JoinEvent::Stored`].
//! 4. **Done** ([`JoinEffect::Done`]): the same session goes on as the connection's outbound
//!    link in the network's core, with the frames that arrived after the peer's Sync frame.
//!
//! Any failure ends the machine with [`JoinEffect::Failed`] (a [`JoinError`]), after a
//! [`JoinEffect::Close`] when the connection is to be closed with a reason. Waiting for the
//! peer is bounded: each frame received moves the deadline ([`Join::deadline`]) on by the
//! timeout; a [`JoinEvent::Tick`] at or past it fails the join. Transport errors other than
//! the stream's end (a connection lost, a close by the peer) are the driver's: it drops the
//! machine.

use std::time::Duration;

use tracing::warn;

use crate::identity::{DeviceId, DeviceKey, NetworkId, SignedChange};
use crate::replica::Replica;
use crate::sync::{Frame, ReceivedDocument, RefuseCode, SyncError, SyncSession};

/// Time as the machine sees it: a duration since an origin the driver chooses (monotonic).
pub type Time = Duration;

/// Something the driver reports to the machine.
#[derive(Debug)]
pub enum JoinEvent {
    /// Frames arrived from the peer, in order.
    Frames(Vec<Frame>),
    /// Bytes that do not decode as a frame arrived: the peer broke the protocol.
    Malformed(String),
    /// The peer ended its stream.
    Ended,
    /// [`History::verify`] of [`JoinEffect::Verify`] ended.
    Verified(crate::Result<Box<Joined>>),
    /// The storing of [`JoinEffect::Store`] ended.
    Stored(crate::Result<()>),
    /// Time passed (the machine's deadline may be due).
    Tick,
}

/// Something the driver does for the machine.
#[derive(Debug)]
pub enum JoinEffect {
    /// Verify the history ([`History::verify`], off the event loop) and report
    /// [`JoinEvent::Verified`].
    Verify(Box<History>),
    /// Store the joined replica durably and report [`JoinEvent::Stored`].
    Store(Box<Joined>),
    /// Close the connection.
    Close {
        /// Why.
        code: JoinClose,
        /// Why, readable.
        reason: String,
    },
    /// The replica is stored: the connection becomes the network's outbound link with this
    /// session (its next message tells the peer what this replica has now), and `rest`, the
    /// frames that arrived after the peer's Sync frame, are its first frames.
    Done {
        /// The session, to go on with.
        session: Box<SyncSession>,
        /// Frames after the peer's answer, in order.
        rest: Vec<Frame>,
    },
    /// The join failed; the machine does nothing more.
    Failed(JoinError),
}

/// Why the machine closes the connection (the driver maps it to its transport's close code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinClose {
    /// A normal end (after the peer refused this device).
    Done,
    /// The peer took too long.
    Timeout,
    /// This device could not store what it received.
    StorageFailure,
    /// This device refuses the peer, with this code.
    Refuse(RefuseCode),
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The peer refused this device and said why.
    #[error("the peer refused the connection ({code}): {reason}")]
    Refused {
        /// Why, as a code.
        code: RefuseCode,
        /// The peer's reason.
        reason: String,
    },
    /// The peer sent something that breaks the protocol (bytes that are no frame, a frame
    /// out of place, a document cut short).
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
    /// The peer ended its stream before its answer was over.
    #[error("the peer ended the stream without sending the history")]
    Ended,
    /// The peer sent nothing for too long.
    #[error("timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// The limit.
        after: Duration,
        /// The step.
        waiting_for: &'static str,
    },
    /// The history does not verify (a change refused as a whole, a document that does not
    /// load).
    #[error("the history does not verify: {0}")]
    NotVerified(#[source] crate::Error),
    /// The peer is no member of the network in the history it sent.
    #[error("the peer is not a member of the network in the history it sent")]
    PeerNotAMember,
    /// The joined replica could not be stored.
    #[error("the joined replica could not be stored: {0}")]
    Store(#[source] crate::Error),
}

/// The peer's answer, to verify: its saved document (if it sent one) and the changes.
#[derive(Debug)]
pub struct History {
    network: NetworkId,
    document: Option<ReceivedDocument>,
    changes: Vec<SignedChange>,
}

/// How a joined replica is to be stored.
#[derive(Debug)]
pub enum Form {
    /// Joined change by change: stored as one row per change.
    Changes,
    /// Joined by the peer's document: stored as a snapshot; `exact` is the received document
    /// if it is exactly the ledger (every change of it accepted and nothing else applied).
    Document {
        /// The received bytes, if they are the ledger.
        exact: Option<Vec<u8>>,
    },
}

/// A replica started from the peer's history, to store.
#[derive(Debug)]
pub struct Joined {
    /// The replica.
    pub replica: Replica,
    /// The changes accepted, in the order applied (their signatures are stored).
    pub applied: Vec<SignedChange>,
    /// How many changes were refused (quarantined).
    pub refused: usize,
    /// How to store it.
    pub form: Form,
}

impl History {
    /// How many changes came outside the document.
    pub fn changes(&self) -> usize {
        self.changes.len()
    }

    /// Start the replica of `key` from the history: by the document ([`Replica::join_document`],
    /// then the changes pushed meanwhile) or change by change ([`Replica::join`]). Pure, but
    /// it checks every signature: run it off an event loop.
    pub fn verify(self, key: DeviceKey) -> crate::Result<Box<Joined>> {
        let History {
            network,
            document,
            changes,
        } = self;
        match document {
            Some((bytes, attestations)) => {
                let (mut replica, mut receipt) =
                    Replica::join_document(network, key, &bytes, &attestations)?;
                // The received bytes are the ledger if all of it stood alone.
                let exact = receipt.refused.is_empty()
                    && receipt.waiting == 0
                    && receipt.revoked.is_empty()
                    && changes.is_empty();
                if !changes.is_empty() {
                    let more = replica.receive(changes)?;
                    receipt.applied.extend(more.applied);
                    receipt.refused.extend(more.refused);
                }
                Ok(Box::new(Joined {
                    replica,
                    applied: receipt.applied,
                    refused: receipt.refused.len(),
                    form: Form::Document {
                        exact: exact.then_some(bytes),
                    },
                }))
            }
            None => {
                let (replica, receipt) = Replica::join(network, key, changes)?;
                Ok(Box::new(Joined {
                    replica,
                    applied: receipt.applied,
                    refused: receipt.refused.len(),
                    form: Form::Changes,
                }))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the peer's answer.
    Receiving,
    /// [`JoinEffect::Verify`] under way.
    Verifying,
    /// [`JoinEffect::Store`] under way.
    Storing,
    /// [`JoinEffect::Done`] given.
    Done,
    /// [`JoinEffect::Failed`] given.
    Failed,
}

/// One bootstrap of a network through a peer, on one connection. See the module
/// documentation.
#[derive(Debug)]
pub struct Join {
    network: NetworkId,
    peer: DeviceId,
    session: Option<SyncSession>,
    history: Vec<SignedChange>,
    rest: Vec<Frame>,
    phase: Phase,
    timeout: Duration,
    deadline: Time,
    /// Frames handled so far.
    received: u64,
}

impl Join {
    /// A join of `network` through `peer` starting at `now`, and the frames to send first (in
    /// this order, in one write): `redeem` if given (a ticket's invite), then the sync
    /// request of a device with no replica. The peer must answer within `timeout`, and each
    /// frame of its answer within `timeout` of the one before.
    pub fn new(
        now: Time,
        network: NetworkId,
        peer: DeviceId,
        redeem: Option<Frame>,
        timeout: Duration,
    ) -> (Join, Vec<Frame>) {
        let (session, request) = SyncSession::bootstrap(network, peer);
        let opening = redeem.into_iter().chain([request]).collect();
        let join = Join {
            network,
            peer,
            session: Some(session),
            history: Vec::new(),
            rest: Vec::new(),
            phase: Phase::Receiving,
            timeout,
            deadline: now + timeout,
            received: 0,
        };
        (join, opening)
    }

    /// The peer the join goes through.
    pub fn peer(&self) -> DeviceId {
        self.peer
    }

    /// When a [`JoinEvent::Tick`] fails the join if nothing arrives before: `None` unless it
    /// is waiting for the peer.
    pub fn deadline(&self) -> Option<Time> {
        (self.phase == Phase::Receiving).then_some(self.deadline)
    }

    /// Whether the machine is over (done or failed): it ignores every event from then on.
    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }

    /// Handle an event at `now`.
    pub fn handle(&mut self, now: Time, event: JoinEvent) -> Vec<JoinEffect> {
        let mut out = Vec::new();
        match event {
            JoinEvent::Frames(frames) => {
                for frame in frames {
                    if self.phase != Phase::Receiving {
                        if !self.is_over() {
                            self.rest.push(frame);
                        }
                        continue;
                    }
                    self.frame(now, frame, &mut out);
                }
            }
            JoinEvent::Malformed(detail) => {
                if !self.is_over() {
                    self.fail_protocol(detail, &mut out);
                }
            }
            JoinEvent::Ended => {
                // Once the history is in, the link that follows sees the end.
                if self.phase == Phase::Receiving {
                    self.fail(None, JoinError::Ended, &mut out);
                }
            }
            JoinEvent::Verified(result) => {
                if self.phase != Phase::Verifying {
                    warn!("a verification the join did not ask for; ignored");
                    return out;
                }
                self.verified(result, &mut out);
            }
            JoinEvent::Stored(result) => {
                if self.phase != Phase::Storing {
                    warn!("a store the join did not ask for; ignored");
                    return out;
                }
                match result {
                    Ok(()) => {
                        self.phase = Phase::Done;
                        let session = self.session.take().expect("the session until done");
                        out.push(JoinEffect::Done {
                            session: Box::new(session),
                            rest: std::mem::take(&mut self.rest),
                        });
                    }
                    Err(e) => self.fail(
                        Some((
                            JoinClose::StorageFailure,
                            "the joining device could not store the history".into(),
                        )),
                        JoinError::Store(e),
                        &mut out,
                    ),
                }
            }
            JoinEvent::Tick => {
                if self.phase == Phase::Receiving && now >= self.deadline {
                    let waiting_for = if self.received == 0 {
                        "the peer's first frame"
                    } else {
                        "the network's history"
                    };
                    self.fail(
                        Some((JoinClose::Timeout, "timed out".into())),
                        JoinError::Timeout {
                            after: self.timeout,
                            waiting_for,
                        },
                        &mut out,
                    );
                }
            }
        }
        out
    }

    /// A frame of the peer's answer.
    fn frame(&mut self, now: Time, frame: Frame, out: &mut Vec<JoinEffect>) {
        let last = matches!(frame, Frame::Sync { .. });
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let handled = session.handle_bootstrap_frame(frame);
        match handled {
            Ok(changes) => self.history.extend(changes),
            Err(SyncError::Refused { code, reason }) => {
                return self.fail(
                    Some((JoinClose::Done, "refused".into())),
                    JoinError::Refused { code, reason },
                    out,
                );
            }
            Err(e) => return self.fail_protocol(e.to_string(), out),
        }
        self.received += 1;
        self.deadline = now + self.timeout;
        if !last {
            return;
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        match session.take_document() {
            Ok(document) => {
                self.phase = Phase::Verifying;
                out.push(JoinEffect::Verify(Box::new(History {
                    network: self.network,
                    document,
                    changes: std::mem::take(&mut self.history),
                })));
            }
            Err(e) => self.fail_protocol(e.to_string(), out),
        }
    }

    fn verified(&mut self, result: crate::Result<Box<Joined>>, out: &mut Vec<JoinEffect>) {
        let joined = match result {
            Ok(j) => j,
            Err(e) => {
                return self.fail(
                    Some((
                        JoinClose::Refuse(RefuseCode::ProtocolViolation),
                        "the history does not verify".into(),
                    )),
                    JoinError::NotVerified(e),
                    out,
                );
            }
        };
        if joined.refused > 0 {
            warn!(
                refused = joined.refused,
                "some changes of the history were refused"
            );
        }
        if joined.replica.member(&self.peer).is_none() {
            return self.fail(
                Some((
                    JoinClose::Refuse(RefuseCode::NotAMember),
                    "you are not a member of this network".into(),
                )),
                JoinError::PeerNotAMember,
                out,
            );
        }
        if joined.replica.role().is_none() {
            warn!("joined, but this device is not (yet) a member in the history received");
        }
        self.phase = Phase::Storing;
        out.push(JoinEffect::Store(joined));
    }

    fn fail_protocol(&mut self, detail: String, out: &mut Vec<JoinEffect>) {
        self.fail(
            Some((
                JoinClose::Refuse(RefuseCode::ProtocolViolation),
                detail.clone(),
            )),
            JoinError::Protocol(detail),
            out,
        );
    }

    fn fail(
        &mut self,
        close: Option<(JoinClose, String)>,
        error: JoinError,
        out: &mut Vec<JoinEffect>,
    ) {
        self.phase = Phase::Failed;
        self.session = None;
        self.history.clear();
        self.rest.clear();
        if let Some((code, reason)) = close {
            out.push(JoinEffect::Close { code, reason });
        }
        out.push(JoinEffect::Failed(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Role;
    use crate::vf::{Agent, Id, Unit};

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn key(i: u8) -> DeviceKey {
        DeviceKey::from_secret_bytes(&[i; 32])
    }

    fn secs(s: u64) -> Time {
        Duration::from_secs(s)
    }

    /// An admin's replica (device `key(1)`) with `joiner` added as a member.
    fn admin(joiner: DeviceId) -> Replica {
        let (mut a, _) =
            Replica::create_network("t", key(1), Agent::person("a", "A")).expect("create");
        a.write(|l| l.create(Unit::new("kg", "kilogram", "kg")))
            .expect("unit");
        a.write(|l| l.create(Agent::person("b", "B")))
            .expect("agent");
        a.add_member(joiner, Role::Member, Id::from("b"))
            .expect("add");
        a
    }

    /// The admin's answer to the last frame of `opening` (the sync request), frame by frame,
    /// each encoded and decoded as on the wire.
    fn answer(admin: &Replica, joiner: DeviceId, opening: &[Frame]) -> Vec<Frame> {
        let wire = |f: &Frame| Frame::split(&f.encode()).expect("decode").expect("whole").0;
        let mut serving = SyncSession::new(admin.network(), joiner);
        let request = wire(opening.last().expect("a request"));
        assert!(serving
            .handle_frame(admin, request)
            .expect("handle")
            .is_empty());
        let mut frames = Vec::new();
        while let Some(f) = serving.poll_transmit(admin) {
            frames.push(wire(&f));
        }
        assert!(
            matches!(frames.last(), Some(Frame::Sync { .. })),
            "{frames:?}"
        );
        frames
    }

    /// A join of the admin's network by `key(2)` through the admin, and the admin's answer.
    fn setup() -> (Replica, Join, Vec<Frame>) {
        let joiner = key(2).id();
        let admin = admin(joiner);
        let (join, opening) = Join::new(secs(0), admin.network(), admin.device(), None, TIMEOUT);
        assert_eq!(opening.len(), 1, "the sync request alone: {opening:?}");
        assert!(matches!(opening[0], Frame::Sync { seq: 1, .. }));
        let frames = answer(&admin, joiner, &opening);
        (admin, join, frames)
    }

    /// Carry out Verify (with `key(2)`) and Store (succeeding if `store_ok`) as a driver
    /// does; returns the heads of the replica given to store, if any, and the other effects.
    fn drive(
        join: &mut Join,
        now: Time,
        store_ok: bool,
        effects: Vec<JoinEffect>,
    ) -> (Option<Vec<automerge::ChangeHash>>, Vec<JoinEffect>) {
        let mut queue: std::collections::VecDeque<_> = effects.into();
        let (mut stored, mut rest) = (None, Vec::new());
        while let Some(effect) = queue.pop_front() {
            match effect {
                JoinEffect::Verify(history) => {
                    let verified = history.verify(key(2));
                    queue.extend(join.handle(now, JoinEvent::Verified(verified)));
                }
                JoinEffect::Store(joined) => {
                    stored = Some(joined.replica.ledger().heads());
                    let result = if store_ok {
                        Ok(())
                    } else {
                        Err(crate::Error::NotALedger("the disk is full".into()))
                    };
                    queue.extend(join.handle(now, JoinEvent::Stored(result)));
                }
                other => rest.push(other),
            }
        }
        (stored, rest)
    }

    fn protocol_violation(effects: &[JoinEffect]) -> bool {
        matches!(
            effects,
            [
                JoinEffect::Close {
                    code: JoinClose::Refuse(RefuseCode::ProtocolViolation),
                    ..
                },
                JoinEffect::Failed(JoinError::Protocol(_)),
            ]
        )
    }

    #[test]
    fn joins_frame_by_frame_and_hands_the_session_on() {
        let (admin, mut join, frames) = setup();
        let n = frames.len();
        let mut effects = Vec::new();
        for (i, frame) in frames.into_iter().enumerate() {
            effects = join.handle(secs(1 + i as u64), JoinEvent::Frames(vec![frame]));
            if i + 1 < n {
                assert!(effects.is_empty(), "before the Sync frame: {effects:?}");
            }
        }
        assert!(
            matches!(effects[..], [JoinEffect::Verify(_)]),
            "{effects:?}"
        );
        assert_eq!(join.deadline(), None, "no deadline while verifying");
        let (stored, mut rest) = drive(&mut join, secs(9), true, effects);
        assert_eq!(stored, Some(admin.ledger().heads()));
        let [JoinEffect::Done { session, rest }] = &mut rest[..] else {
            panic!("{rest:?}");
        };
        assert!(rest.is_empty());
        assert!(join.is_over());
        // The same session goes on, with its next sequence number.
        let (joined, _) = Replica::join_document(
            admin.network(),
            key(2),
            &admin.bootstrap_document().expect("a document").0,
            &admin.bootstrap_document().expect("a document").1,
        )
        .expect("join");
        assert!(matches!(
            session.poll_transmit(&joined),
            Some(Frame::Sync { seq: 2, .. })
        ));
        // Over: nothing more happens.
        assert!(join
            .handle(
                secs(10),
                JoinEvent::Frames(vec![Frame::Push { changes: vec![] }])
            )
            .is_empty());
        assert!(join.handle(secs(100), JoinEvent::Tick).is_empty());
    }

    #[test]
    fn frames_after_the_answer_are_kept_for_the_link_in_order() {
        let (_admin, mut join, mut frames) = setup();
        let push = |i: usize| Frame::Push {
            changes: Vec::with_capacity(i),
        };
        frames.push(Frame::refuse(RefuseCode::Busy, "first after"));
        let effects = join.handle(secs(1), JoinEvent::Frames(frames));
        assert!(
            matches!(effects[..], [JoinEffect::Verify(_)]),
            "{effects:?}"
        );
        // While the history is verified, more arrives.
        assert!(join
            .handle(secs(2), JoinEvent::Frames(vec![push(0)]))
            .is_empty());
        assert!(join.handle(secs(2), JoinEvent::Ended).is_empty());
        let (_, rest) = drive(&mut join, secs(3), true, effects);
        let [JoinEffect::Done { rest, .. }] = &rest[..] else {
            panic!("{rest:?}");
        };
        assert!(
            matches!(
                &rest[..],
                [
                    Frame::Refuse {
                        code: RefuseCode::Busy,
                        ..
                    },
                    Frame::Push { .. }
                ]
            ),
            "{rest:?}"
        );
    }

    #[test]
    fn a_refusal_ends_the_join() {
        let (_admin, mut join, _) = setup();
        let effects = join.handle(
            secs(1),
            JoinEvent::Frames(vec![Frame::refuse(RefuseCode::InviteExpired, "too late")]),
        );
        assert!(
            matches!(
                &effects[..],
                [
                    JoinEffect::Close {
                        code: JoinClose::Done,
                        ..
                    },
                    JoinEffect::Failed(JoinError::Refused {
                        code: RefuseCode::InviteExpired,
                        reason,
                    }),
                ] if reason == "too late"
            ),
            "{effects:?}"
        );
        assert!(join.is_over());
        assert_eq!(join.deadline(), None);
    }

    #[test]
    fn bytes_that_are_no_frame_are_a_protocol_violation() {
        let (_admin, mut join, frames) = setup();
        let first = frames.into_iter().next().expect("a frame");
        assert!(join
            .handle(secs(1), JoinEvent::Frames(vec![first]))
            .is_empty());
        let effects = join.handle(secs(1), JoinEvent::Malformed("garbage".into()));
        assert!(protocol_violation(&effects), "{effects:?}");
        assert!(join.is_over());
    }

    #[test]
    fn out_of_place_frames_and_a_document_cut_short_are_protocol_violations() {
        let (admin, _, frames) = setup();
        let network = admin.network();
        let fresh = || Join::new(secs(0), network, admin.device(), None, TIMEOUT).0;
        let (doc, attestations) = admin.bootstrap_document().expect("a document");
        let half = doc.len() / 2;
        // A Redeem frame inside the answer.
        let redeem = Frame::Redeem {
            invite: crate::membership::Invite::issue_with_nonce(
                &key(1),
                network,
                Role::Member,
                None,
                crate::membership::InviteAudience::Device {
                    device: key(2).id(),
                },
                1,
                [0; 16],
            ),
            secret: None,
            agent: None,
        };
        let mut join = fresh();
        let effects = join.handle(secs(1), JoinEvent::Frames(vec![redeem]));
        assert!(protocol_violation(&effects), "{effects:?}");
        // The second half of the document first.
        let mut join = fresh();
        let effects = join.handle(
            secs(1),
            JoinEvent::Frames(vec![Frame::Document {
                total: doc.len() as u64,
                offset: half as u64,
                bytes: doc[half..].to_vec(),
                attestations: attestations.clone(),
            }]),
        );
        assert!(protocol_violation(&effects), "{effects:?}");
        // Half of the document, then the Sync frame that ends the answer.
        let mut join = fresh();
        let sync = frames.last().expect("the Sync frame").clone();
        let effects = join.handle(
            secs(1),
            JoinEvent::Frames(vec![
                Frame::Document {
                    total: doc.len() as u64,
                    offset: 0,
                    bytes: doc[..half].to_vec(),
                    attestations: Vec::new(),
                },
                sync,
            ]),
        );
        assert!(protocol_violation(&effects), "{effects:?}");
    }

    #[test]
    fn events_the_machine_did_not_ask_for_are_ignored() {
        let (admin, mut join, frames) = setup();
        assert!(join.handle(secs(1), JoinEvent::Stored(Ok(()))).is_empty());
        assert!(join
            .handle(
                secs(1),
                JoinEvent::Verified(Err(crate::Error::NotALedger("x".into())))
            )
            .is_empty());
        assert_eq!(join.deadline(), Some(TIMEOUT), "still waiting for the peer");
        let effects = join.handle(secs(2), JoinEvent::Frames(frames));
        // A store before the verification ended is ignored too.
        assert!(join.handle(secs(2), JoinEvent::Stored(Ok(()))).is_empty());
        let (stored, rest) = drive(&mut join, secs(3), true, effects);
        assert_eq!(stored, Some(admin.ledger().heads()));
        assert!(matches!(rest[..], [JoinEffect::Done { .. }]), "{rest:?}");
    }

    #[test]
    fn a_peer_that_stops_halfway_times_out() {
        let (_admin, mut join, mut frames) = setup();
        assert!(
            frames.len() >= 2,
            "a document part, then the Sync: {frames:?}"
        );
        frames.pop();
        // Nothing yet: the deadline counts from the start.
        assert_eq!(join.deadline(), Some(TIMEOUT));
        assert!(join.handle(TIMEOUT - secs(1), JoinEvent::Tick).is_empty());
        // Each frame moves the deadline on.
        assert!(join.handle(secs(4), JoinEvent::Frames(frames)).is_empty());
        assert_eq!(join.deadline(), Some(secs(4) + TIMEOUT));
        assert!(join.handle(TIMEOUT, JoinEvent::Tick).is_empty());
        let effects = join.handle(secs(4) + TIMEOUT, JoinEvent::Tick);
        assert!(
            matches!(
                &effects[..],
                [
                    JoinEffect::Close {
                        code: JoinClose::Timeout,
                        ..
                    },
                    JoinEffect::Failed(JoinError::Timeout {
                        after: TIMEOUT,
                        waiting_for: "the network's history",
                    }),
                ]
            ),
            "{effects:?}"
        );
        assert!(join.is_over());
        // A peer that never answers.
        let (_admin, mut join, _) = setup();
        let effects = join.handle(TIMEOUT, JoinEvent::Tick);
        assert!(
            matches!(
                &effects[..],
                [
                    JoinEffect::Close { .. },
                    JoinEffect::Failed(JoinError::Timeout {
                        waiting_for: "the peer's first frame",
                        ..
                    }),
                ]
            ),
            "{effects:?}"
        );
        // A peer that ends its stream halfway.
        let (_admin, mut join, mut frames) = setup();
        frames.pop();
        assert!(join.handle(secs(1), JoinEvent::Frames(frames)).is_empty());
        let effects = join.handle(secs(2), JoinEvent::Ended);
        assert!(
            matches!(&effects[..], [JoinEffect::Failed(JoinError::Ended)]),
            "{effects:?}"
        );
    }

    #[test]
    fn a_history_in_which_the_peer_is_no_member_is_refused() {
        let joiner = key(2).id();
        let admin = admin(joiner);
        // The device dialed is not the admin and no member of the history it is sent.
        let (mut join, opening) = Join::new(secs(0), admin.network(), key(9).id(), None, TIMEOUT);
        let frames = answer(&admin, joiner, &opening);
        let effects = join.handle(secs(1), JoinEvent::Frames(frames));
        let (stored, rest) = drive(&mut join, secs(1), true, effects);
        assert_eq!(stored, None, "nothing stored");
        assert!(
            matches!(
                &rest[..],
                [
                    JoinEffect::Close {
                        code: JoinClose::Refuse(RefuseCode::NotAMember),
                        ..
                    },
                    JoinEffect::Failed(JoinError::PeerNotAMember),
                ]
            ),
            "{rest:?}"
        );
    }

    #[test]
    fn a_history_that_does_not_verify_is_refused_and_nothing_is_stored() {
        let (_admin, mut join, frames) = setup();
        let effects = join.handle(secs(1), JoinEvent::Frames(frames));
        assert!(matches!(effects[..], [JoinEffect::Verify(_)]));
        let effects = join.handle(
            secs(1),
            JoinEvent::Verified(Err(crate::Error::NotALedger("bad".into()))),
        );
        assert!(
            matches!(
                &effects[..],
                [
                    JoinEffect::Close {
                        code: JoinClose::Refuse(RefuseCode::ProtocolViolation),
                        ..
                    },
                    JoinEffect::Failed(JoinError::NotVerified(_)),
                ]
            ),
            "{effects:?}"
        );
    }

    #[test]
    fn a_history_of_another_network_does_not_verify() {
        let (admin, _, frames) = setup();
        let (other, _) =
            Replica::create_network("u", key(3), Agent::person("c", "C")).expect("create");
        let (mut join, _) = Join::new(secs(0), other.network(), admin.device(), None, TIMEOUT);
        let effects = join.handle(secs(1), JoinEvent::Frames(frames));
        let (stored, rest) = drive(&mut join, secs(1), true, effects);
        assert_eq!(stored, None);
        assert!(
            matches!(
                &rest[..],
                [
                    JoinEffect::Close { .. },
                    JoinEffect::Failed(JoinError::NotVerified(_) | JoinError::PeerNotAMember),
                ]
            ),
            "{rest:?}"
        );
    }

    #[test]
    fn a_store_that_fails_ends_the_join() {
        let (_admin, mut join, frames) = setup();
        let effects = join.handle(secs(1), JoinEvent::Frames(frames));
        let (stored, rest) = drive(&mut join, secs(1), false, effects);
        assert!(stored.is_some());
        assert!(
            matches!(
                &rest[..],
                [
                    JoinEffect::Close {
                        code: JoinClose::StorageFailure,
                        ..
                    },
                    JoinEffect::Failed(JoinError::Store(_)),
                ]
            ),
            "{rest:?}"
        );
        assert!(join.is_over());
    }
}
