//! Sans-I/O sync session: what to send a peer next, given the local replica and what the peer
//! sent. Built on Automerge's sync protocol (`automerge::sync`) with a signature sidecar:
//! changes never enter the document through Automerge's sync, they are handed to the caller
//! (who passes them through [`crate::Replica::receive`], which checks signatures and
//! membership). No tokio, no sockets, no clocks: the iroh transport (`net`) and the
//! deterministic simulator in this module's tests drive it.
//!
//! # How a session uses Automerge's sync
//!
//! * **Sending.** [`SyncSession::poll_transmit`] calls Automerge's `generate_sync_message` on
//!   the replica's document (read-only), takes the changes out of the message, looks up each
//!   change's signature in the replica and sends the message and the signed changes in one
//!   [`Frame::Sync`]. Automerge is never told the peer supports its v2 messages, so it only
//!   ever puts one change per chunk (never a whole-document chunk, never concatenated
//!   changes); should it ever put a document chunk, the session expands it into the replica's
//!   changes, each signed. The `need` list is computed by the session (see below).
//! * **Receiving.** [`SyncSession::handle_frame`] decodes the message, refuses one that carries
//!   changes inside it (they would have no signature), and returns the signed changes for the
//!   caller to pass to `Replica::receive`. The document is never modified by the session: the
//!   State bookkeeping Automerge's `receive_sync_message` would do is done by the session
//!   itself, in two halves: what does not depend on the received changes at once, the rest
//!   (shared heads, trimming the sent set) at the next call, after the caller applied them.
//! * **Bootstrapping.** A peer that announces no heads (a device with no replica) gets the
//!   replica's saved document in [`Frame::Document`] parts and one attestation per actor
//!   instead of the changes (protocol version 4; [`SyncSession::take_document`] on the
//!   joining side, then [`Replica::join_document`], which judges every change of it). A peer
//!   far behind gets the same document in place of its many missing changes (version 5),
//!   and takes from it what it lacks as a missing part ([`SyncSession::take_parts`]).
//! * **Pushing.** [`SyncSession::push`] sends changes outside a round (a local write, or changes
//!   just accepted from another peer). Their hashes join Automerge's `sent_hashes`, exactly as
//!   if a sync message had carried them, so the next sync message does not repeat them.
//!
//! # Bounded behaviour with changes that are never accepted
//!
//! A peer may hold changes this replica refuses (quarantined) and keep advertising heads that
//! descend from them. The session never asks for a quarantined change, a change is sent at
//! most once per session (Automerge's `sent_hashes`), and a sync message that would repeat the
//! previous one (same heads, need and have, no changes) is not sent: it would tell the peer
//! nothing. Two replicas whose heads can never be equal therefore exchange a bounded number of
//! messages after each change of either side, then fall silent. After a reconnection the peer
//! sends a refused change once more (its new session does not know it was sent), and the
//! replica counts it as a duplicate.
//!
//! Frame layout and the rest of the protocol: docs/protocol.md.

pub mod frame;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use frame::{
    Frame, FrameError, RefuseCode, LEN_PREFIX, MAX_FRAME_LEN, MAX_REASON_LEN, MAX_REDEEM_LEN,
    PROTOCOL_VERSION,
};

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use automerge::sync::{Have, Message, State, SyncDoc};
use automerge::{Automerge, ChangeHash, ReadDoc};
use tracing::{debug, warn};

use crate::identity::{Attestation, DeviceId, NetworkId, SignedChange};
use crate::membership::Role;
use crate::replica::Replica;

/// The ALPN of the Reflow sync protocol for one network: `reflow/5/<network id hex>`. A
/// connection is for one network; a node that does not replicate the network never
/// completes the handshake.
pub fn alpn(network: &NetworkId) -> Vec<u8> {
    format!("reflow/{PROTOCOL_VERSION}/{network}").into_bytes()
}

/// Changes are batched into frames of about this many bytes; a sync reply larger than this
/// travels as push frames followed by the sync frame.
pub const FRAME_TARGET: usize = 1024 * 1024;

/// How many hashes of changes received from the peer a session remembers, so as not to push
/// them back. Only an optimisation: a change pushed back is a duplicate the peer ignores.
const RECENT_MAX: usize = 4096;

/// How many received-but-unapplied changes a session tracks (a peer flooding changes whose
/// dependencies never come cannot grow it further; past it, `need` names the peer's heads
/// instead of the exact missing dependencies).
const UNAPPLIED_MAX: usize = 65_536;

/// Automerge's set of sent hashes is trimmed of what the peer has once it is this large.
const SENT_TRIM: usize = 256;

/// Largest number of Bloom filter probes accepted from a peer (Automerge uses 7).
const MAX_BLOOM_PROBES: u64 = 64;

/// Why a sync session cannot go on with a peer. The connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A frame could not be decoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer broke the protocol (e.g. a sync message that does not decode).
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
    /// The peer refused the connection.
    #[error("the peer refused the connection ({code}): {reason}")]
    Refused {
        /// Why, as a code.
        code: RefuseCode,
        /// Why, for people.
        reason: String,
    },
    /// A saved sync state could not be read.
    #[error("the saved sync state cannot be read: {0}")]
    BadState(String),
    /// A missing part of the history ([`Frame::Document`] to a device that has a replica)
    /// does not split into whole Automerge changes (truncated or corrupt): nothing of it
    /// is applied.
    #[error("a part of the history cannot be read: {0}")]
    BadPart(String),
}

/// A sync message carrying at least this many changes to a peer that has a replica may be
/// replaced by the whole saved document ([`SyncSession::catch_up_document`]): below it,
/// the changes go signed, whatever the document's size.
pub const CATCH_UP_DOCUMENT_MIN: usize = 1024;

/// Counters of one session, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Sync frames produced.
    pub sync_frames_sent: u64,
    /// Push frames produced (including the overflow of large sync replies).
    pub push_frames_sent: u64,
    /// Changes sent.
    pub changes_sent: u64,
    /// Sync frames handled.
    pub sync_frames_received: u64,
    /// Push frames handled.
    pub push_frames_received: u64,
    /// Changes received.
    pub changes_received: u64,
    /// Sync frames that were duplicates or arrived after a newer one (their changes were
    /// still returned; their bookkeeping was skipped).
    pub stale_frames: u64,
    /// Sync messages not sent because they would have repeated the previous one.
    pub repeats_suppressed: u64,
    /// Reset messages received: the peer lacked changes our shared heads named (stale saved
    /// state, or a peer that lost data).
    pub resets_received: u64,
    /// Whole saved documents sent to a peer that has a replica but is far behind (a
    /// catch-up by document, protocol version 5), instead of its missing changes.
    pub catch_up_documents_sent: u64,
}

/// The bookkeeping of a received sync message that needs the document after the caller has
/// applied the message's changes.
#[derive(Debug)]
struct Received {
    heads: Vec<ChangeHash>,
    /// The peer answered with Automerge's reset message: our shared heads were wrong.
    reset: bool,
}

/// The local side a session reads: the replica, or nothing yet (a device bootstrapping its
/// replica from the peer, see [`SyncSession::bootstrap`]).
#[derive(Clone, Copy)]
enum Local<'a> {
    Replica(&'a Replica),
    /// No replica yet: an empty document, nothing quarantined, nothing signed.
    Empty(&'a Automerge),
}

impl<'a> Local<'a> {
    fn doc(self) -> &'a Automerge {
        match self {
            Local::Replica(r) => r.ledger().doc(),
            Local::Empty(doc) => doc,
        }
    }

    fn heads(self) -> Vec<ChangeHash> {
        self.doc().get_heads()
    }

    fn quarantined(self) -> HashSet<ChangeHash> {
        match self {
            Local::Replica(r) => r.quarantine().map(|q| q.change.hash()).collect(),
            Local::Empty(_) => HashSet::new(),
        }
    }
}

/// The sync state of one peer connection for one network. See the module documentation.
#[derive(Debug)]
pub struct SyncSession {
    network: NetworkId,
    peer: DeviceId,
    state: State,
    /// Frames made but not yet handed out by `poll_transmit`.
    outbox: VecDeque<Frame>,
    /// Sequence number of the last sync frame made.
    sent_seq: u64,
    /// Highest sequence number of a sync frame handled.
    received_seq: u64,
    /// The last handled sync message, its second half of bookkeeping still to do.
    received: Option<Received>,
    /// Changes the peer sent that are not in our document yet: their dependencies, to find
    /// what to ask for when they wait for changes we do not have.
    unapplied: HashMap<ChangeHash, Vec<ChangeHash>>,
    /// Changes received from the peer lately (not pushed back).
    recent: HashSet<ChangeHash>,
    /// The last sync message sent (changes taken out), to avoid repeating it.
    last_sent: Option<Vec<u8>>,
    /// Changes are batched into frames of about this many bytes ([`FRAME_TARGET`]).
    frame_target: usize,
    /// Whether this session sent its replica's document to a peer that had nothing.
    document_sent: bool,
    /// A catch-up by document was considered in this session ([`SyncSession::catch_up_document`]).
    catch_up_tried: bool,
    /// [`CATCH_UP_DOCUMENT_MIN`], lower in tests.
    catch_up_min: usize,
    /// The document a bootstrapping session is receiving (its parts so far).
    document: Option<Incoming>,
    /// A missing part of the history being received by a session with a replica.
    part: Option<Incoming>,
    /// Missing parts received whole, for the caller ([`SyncSession::take_parts`]).
    parts: Vec<ReceivedPart>,
    stats: SessionStats,
}

/// A peer's saved document received in a bootstrap and the attestations covering its changes
/// ([`SyncSession::take_document`], for [`Replica::join_document`]).
pub type ReceivedDocument = (Vec<u8>, Vec<Attestation>);

pub use crate::replica::ReceivedPart;

/// A document arriving in parts ([`Frame::Document`]).
#[derive(Debug)]
struct Incoming {
    total: u64,
    bytes: Vec<u8>,
    attestations: Vec<Attestation>,
}

impl SyncSession {
    /// A session with a peer we have no saved state for.
    pub fn new(network: NetworkId, peer: DeviceId) -> SyncSession {
        SyncSession::with_automerge_state(network, peer, State::new())
    }

    /// A session with a peer whose state was saved with [`SyncSession::saved_state`] at the
    /// end of an earlier connection: the first round is then shorter (only the changes since
    /// the last sync are summarised). Wrong or stale saved state costs bandwidth, never
    /// correctness.
    pub fn with_state(
        network: NetworkId,
        peer: DeviceId,
        saved: &[u8],
    ) -> Result<SyncSession, SyncError> {
        let state = State::decode(saved).map_err(|e| SyncError::BadState(e.to_string()))?;
        Ok(SyncSession::with_automerge_state(network, peer, state))
    }

    /// A session for a device that has no replica of the network yet and is joining it
    /// through `peer`, and the session's first frame (sequence number 1): the sync message of
    /// an empty replica (no heads, one empty summary), to which the peer answers with its
    /// whole history. Pass the peer's frames to [`SyncSession::handle_bootstrap_frame`] until
    /// the history arrived (a [`Frame::Sync`] ends the peer's answer), start the replica from
    /// the changes ([`Replica::join`]), then go on with this same session as usual
    /// ([`SyncSession::poll_transmit`], [`SyncSession::handle_frame`]) on the same
    /// connection: its sequence numbers and Automerge state carry over.
    pub fn bootstrap(network: NetworkId, peer: DeviceId) -> (SyncSession, Frame) {
        let mut session = SyncSession::new(network, peer);
        let empty = Automerge::new();
        let first = session.transmit(Local::Empty(&empty));
        // An empty document always has a first message to send (the peer's heads are unknown).
        let first = first.unwrap_or_else(|| Frame::Sync {
            seq: session.sent_seq,
            message: Vec::new(),
            changes: Vec::new(),
        });
        (session, first)
    }

    /// [`SyncSession::handle_frame`] for a session made by [`SyncSession::bootstrap`] while
    /// the device has no replica yet: returns the changes the frame carries (the history, to
    /// pass to [`Replica::join`]).
    pub fn handle_bootstrap_frame(&mut self, frame: Frame) -> Result<Vec<SignedChange>, SyncError> {
        let empty = Automerge::new();
        self.handle(Local::Empty(&empty), frame)
    }

    /// The document a bootstrapping session received ([`Frame::Document`]), once the peer's
    /// answer is over (its Sync frame handled): the saved document and the attestations, to
    /// pass to [`Replica::join_document`]. `Ok(None)` if the peer sent no document (it sent
    /// the history change by change); an error if the document's parts stopped before its
    /// announced length.
    pub fn take_document(&mut self) -> Result<Option<ReceivedDocument>, SyncError> {
        match self.document.take() {
            None => Ok(None),
            Some(d) if d.bytes.len() as u64 == d.total => Ok(Some((d.bytes, d.attestations))),
            Some(d) => Err(SyncError::Protocol(format!(
                "the document stopped after {} of its {} bytes",
                d.bytes.len(),
                d.total
            ))),
        }
    }

    /// The missing parts of the history received whole since the last call (a session with a
    /// replica: [`Frame::Document`] frames that a peer sends instead of changes it holds
    /// without a signature of their own). Pass each to [`Replica::receive_part`] (or
    /// `DurableReplica::receive_part`), before the changes [`SyncSession::handle_frame`]
    /// returned and before the next [`SyncSession::poll_transmit`].
    pub fn take_parts(&mut self) -> Vec<ReceivedPart> {
        std::mem::take(&mut self.parts)
    }

    /// Take a frame of a missing part of the history (a session with a replica); when the
    /// part is whole, split it into changes and keep it for [`SyncSession::take_parts`].
    fn receive_history_part(
        &mut self,
        local: Local<'_>,
        total: u64,
        offset: u64,
        bytes: Vec<u8>,
        attestations: Vec<Attestation>,
    ) -> Result<(), SyncError> {
        receive_part_into(&mut self.part, total, offset, bytes, attestations)?;
        let whole = self
            .part
            .as_ref()
            .is_some_and(|p| p.bytes.len() as u64 == p.total);
        if !whole {
            return Ok(());
        }
        let Some(Incoming {
            bytes,
            attestations,
            ..
        }) = self.part.take()
        else {
            return Ok(());
        };
        let (changes, document) = if bytes.get(8) == Some(&0) {
            // A whole document (a catch-up by document, version 5): the changes this replica
            // lacks, judged like any part's. Only an admin sends one.
            if let Local::Replica(replica) = local {
                if replica.member(&self.peer).map(|m| m.role) != Some(Role::Admin) {
                    return Err(SyncError::BadPart(
                        "a whole document from a device that is not an admin".into(),
                    ));
                }
            }
            let (changes, doc) = changes_of_document(local.doc(), &bytes)?;
            (changes, Some(Box::new(doc)))
        } else {
            (split_part(&bytes)?, None)
        };
        self.stats.push_frames_received += 1;
        if changes.is_empty() {
            return Ok(());
        }
        self.note_received_changes(local, changes.iter());
        self.parts.push(ReceivedPart {
            changes,
            attestations,
            document,
        });
        Ok(())
    }

    /// Take a part of a document (a bootstrapping session only).
    fn receive_document_part(
        &mut self,
        total: u64,
        offset: u64,
        bytes: Vec<u8>,
        attestations: Vec<Attestation>,
    ) -> Result<(), SyncError> {
        receive_part_into(&mut self.document, total, offset, bytes, attestations)
    }

    /// The frames of a missing part of the history for the peer ([`Frame::Document`] to a
    /// device that has a replica): `changes` (what a sync message would carry, some of them
    /// without a signature of their own in this replica) as Automerge change chunks back to
    /// back, in parts of about [`FRAME_TARGET`] bytes, and in the last the attestations that
    /// cover them: for each actor, the attestation covering its latest change of the part;
    /// then, for a change still uncovered, its own signature. A change that can be covered
    /// by neither (its attesting change is not in the part) is left out, with a warning: the
    /// peer asks for it again by name.
    fn part_frames(&mut self, replica: &Replica, changes: Vec<automerge::Change>) -> Vec<Frame> {
        let in_part: HashMap<ChangeHash, usize> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.hash(), i))
            .collect();
        let by_of = |h: &ChangeHash| replica.attested_by(h).unwrap_or(*h);
        let mut latest: HashMap<&[u8], (u64, ChangeHash)> = HashMap::new();
        for c in &changes {
            let e = latest
                .entry(c.actor_id().to_bytes())
                .or_insert((c.seq(), c.hash()));
            if e.0 < c.seq() {
                *e = (c.seq(), c.hash());
            }
        }
        let mut chosen: BTreeSet<ChangeHash> = latest
            .values()
            .map(|(_, tip)| by_of(tip))
            .filter(|by| in_part.contains_key(by) && replica.signature(by).is_some())
            .collect();
        let graph: Vec<(ChangeHash, &[u8], &[ChangeHash])> = changes
            .iter()
            .map(|c| (c.hash(), c.actor_id().to_bytes(), c.deps()))
            .collect();
        let covered = crate::replica::coverage(&graph, chosen.iter().copied());
        let mut left_out = HashSet::new();
        for c in &changes {
            let h = c.hash();
            if covered.contains_key(&h) {
                continue;
            }
            let by = by_of(&h);
            if in_part.contains_key(&by) && replica.signature(&by).is_some() {
                chosen.insert(by);
            } else {
                warn!(change = %h, "a change whose attestation is not in the part; not sent");
                left_out.insert(h);
            }
        }
        let attestations: Vec<Attestation> = chosen
            .iter()
            .filter_map(|h| {
                let c = &changes[in_part[h]];
                Some(Attestation {
                    actor: c.actor_id().clone(),
                    seq: c.seq(),
                    hash: *h,
                    signature: replica.signature(h)?,
                })
            })
            .collect();
        let mut bytes = Vec::new();
        let mut sent = 0u64;
        for c in &changes {
            if !left_out.contains(&c.hash()) {
                bytes.extend_from_slice(c.raw_bytes());
                sent += 1;
            }
        }
        self.stats.changes_sent += sent;
        let total = bytes.len() as u64;
        let part = self.frame_target.max(1);
        let mut frames: Vec<Frame> = bytes
            .chunks(part)
            .enumerate()
            .map(|(i, b)| Frame::Document {
                total,
                offset: (i * part) as u64,
                bytes: b.to_vec(),
                attestations: Vec::new(),
            })
            .collect();
        if let Some(Frame::Document {
            attestations: last, ..
        }) = frames.last_mut()
        {
            *last = attestations;
        }
        self.stats.push_frames_sent += frames.len() as u64;
        frames
    }
}

/// Take a frame of a document or of a part into `slot` (in order, attestations only in the
/// last).
fn receive_part_into(
    slot: &mut Option<Incoming>,
    total: u64,
    offset: u64,
    bytes: Vec<u8>,
    attestations: Vec<Attestation>,
) -> Result<(), SyncError> {
    let incoming = slot.get_or_insert_with(|| Incoming {
        total,
        bytes: Vec::new(),
        attestations: Vec::new(),
    });
    let have = incoming.bytes.len() as u64;
    if incoming.total != total || offset != have || have == total {
        return Err(SyncError::Protocol(format!(
            "a document part out of order (at {offset} of {total}, expected at {have} of {})",
            incoming.total
        )));
    }
    let end = offset + bytes.len() as u64;
    if !attestations.is_empty() && end != total {
        return Err(SyncError::Protocol(
            "attestations in a document part that is not the last".into(),
        ));
    }
    if bytes.is_empty() && end != total {
        return Err(SyncError::Protocol("an empty document part".into()));
    }
    incoming.bytes.extend_from_slice(&bytes);
    incoming.attestations = attestations;
    Ok(())
}

/// The changes of a document sent as a catch-up (a whole saved document, chunk type 0) that
/// `local` lacks, in causal order, and the document. The document is loaded apart and never merged as it is:
/// the caller judges each change it yields ([`crate::Replica::receive_part`]). Bytes that do
/// not load as one whole document are [`SyncError::BadPart`].
fn changes_of_document(
    local: &Automerge,
    bytes: &[u8],
) -> Result<(Vec<automerge::Change>, Automerge), SyncError> {
    let _span = tracing::debug_span!("changes_of_document", bytes = bytes.len()).entered();
    let doc = Automerge::load(bytes)
        .map_err(|e| SyncError::BadPart(format!("a document that does not load: {e}")))?;
    let mut changes = doc.get_changes(&[]);
    changes.retain(|c| local.get_change_by_hash(&c.hash()).is_none());
    Ok((changes, doc))
}

/// The changes of a missing part of the history: Automerge change chunks back to back (what
/// Automerge's incremental save writes). Anything else, or a chunk cut short, is
/// [`SyncError::BadPart`].
fn split_part(bytes: &[u8]) -> Result<Vec<automerge::Change>, SyncError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = chunk_len(rest).ok_or_else(|| {
            SyncError::BadPart(format!(
                "{} bytes at offset {} are not a whole Automerge chunk",
                rest.len(),
                bytes.len() - rest.len()
            ))
        })?;
        let change = frame::decode_change(&rest[..len])
            .map_err(|e| SyncError::BadPart(format!("not a change: {e}")))?;
        out.push(change);
        rest = &rest[len..];
    }
    if out.is_empty() {
        return Err(SyncError::BadPart("an empty part".into()));
    }
    Ok(out)
}

impl SyncSession {
    /// The frames of a document bootstrap for a peer that has nothing ([`Frame::Document`]),
    /// if the replica can cover its every change with attestations: the document in parts of
    /// about [`FRAME_TARGET`] bytes, the attestations in the last. Marks every change sent.
    fn document_frames(&mut self, replica: &Replica) -> Option<Vec<Frame>> {
        let (saved, attestations) = replica.bootstrap_document()?;
        let frames = self.frames_of_document(saved, attestations)?;
        self.state
            .sent_hashes
            .extend(replica.ledger().change_hashes());
        self.document_sent = true;
        Some(frames)
    }

    /// The saved document `saved` in [`Frame::Document`] parts of about [`FRAME_TARGET`]
    /// bytes, the attestations in the last; `None` for an empty document.
    fn frames_of_document(
        &mut self,
        saved: Vec<u8>,
        attestations: Vec<Attestation>,
    ) -> Option<Vec<Frame>> {
        let total = saved.len() as u64;
        let part = self.frame_target.max(1);
        let mut frames: Vec<Frame> = saved
            .chunks(part)
            .enumerate()
            .map(|(i, bytes)| Frame::Document {
                total,
                offset: (i * part) as u64,
                bytes: bytes.to_vec(),
                attestations: Vec::new(),
            })
            .collect();
        if frames.is_empty() {
            return None;
        }
        if let Some(Frame::Document {
            attestations: last, ..
        }) = frames.last_mut()
        {
            *last = attestations;
        }
        Some(frames)
    }

    /// A catch-up by document (protocol version 5): when a sync message would carry at least
    /// [`CATCH_UP_DOCUMENT_MIN`] changes to a peer that has a replica, and the replica's whole
    /// saved document is no larger than the signatures alone of those changes
    /// (64 bytes each), the peer gets the document and one attestation per actor instead,
    /// as a joiner does, and takes from it the changes it lacks (docs/protocol.md §2.7).
    /// `None` (send the changes) otherwise, if this device is not an admin (a peer loads a
    /// whole document only from an admin: docs/security.md, "Cost bound"), or if
    /// attestations cannot cover every change.
    /// Tried once per session: a peer this far behind after a catch-up is refusing changes.
    fn catch_up_document(&mut self, replica: &Replica, message: &Message) -> Option<Vec<Frame>> {
        let count = message.changes.len();
        if count < self.catch_up_min || self.catch_up_tried || replica.role() != Some(Role::Admin) {
            return None;
        }
        self.catch_up_tried = true;
        let (saved, attestations) = replica.bootstrap_document()?;
        if saved.len() > count.saturating_mul(64) {
            debug!(
                changes = count,
                document = saved.len(),
                "the missing changes are smaller than the document; sent as changes"
            );
            return None;
        }
        let frames = self.frames_of_document(saved, attestations)?;
        // The peer now holds every change of the document (or refuses some): as after a
        // bootstrap, none is sent again in this session.
        self.state
            .sent_hashes
            .extend(replica.ledger().change_hashes());
        self.stats.changes_sent += count as u64;
        self.stats.push_frames_sent += frames.len() as u64;
        self.stats.catch_up_documents_sent += 1;
        Some(frames)
    }

    fn with_automerge_state(network: NetworkId, peer: DeviceId, state: State) -> SyncSession {
        SyncSession {
            network,
            peer,
            state,
            outbox: VecDeque::new(),
            sent_seq: 0,
            received_seq: 0,
            received: None,
            unapplied: HashMap::new(),
            recent: HashSet::new(),
            last_sent: None,
            frame_target: FRAME_TARGET,
            document_sent: false,
            catch_up_tried: false,
            catch_up_min: CATCH_UP_DOCUMENT_MIN,
            document: None,
            part: None,
            parts: Vec::new(),
            stats: SessionStats::default(),
        }
    }

    /// The state to keep for the next connection with this peer (Automerge's persistent sync
    /// state: the heads both sides are known to share). Small: 1 byte + 32 per shared head.
    pub fn saved_state(&self) -> Vec<u8> {
        self.state.encode()
    }

    /// The network.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// The peer.
    pub fn peer(&self) -> DeviceId {
        self.peer
    }

    /// The heads the peer last told us it has, if it has told us.
    pub fn peer_heads(&self) -> Option<&[ChangeHash]> {
        self.state.their_heads.as_deref()
    }

    /// The heads both sides are known to have.
    pub fn shared_heads(&self) -> &[ChangeHash] {
        &self.state.shared_heads
    }

    /// Batch changes into frames of about `bytes` bytes instead of [`FRAME_TARGET`] (tests).
    #[cfg(test)]
    pub(crate) fn set_frame_target(&mut self, bytes: usize) {
        self.frame_target = bytes;
    }

    /// Consider a catch-up by document from `changes` changes instead of
    /// [`CATCH_UP_DOCUMENT_MIN`] (tests).
    #[cfg(test)]
    pub(crate) fn set_catch_up_min(&mut self, changes: usize) {
        self.catch_up_min = changes;
    }

    /// Counters of this session.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Whether frames are queued (a large reply split over several frames): call
    /// [`SyncSession::poll_transmit`] until it returns `None`.
    pub fn has_queued_frames(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// The next frame to send, if any: call after connecting, after every frame handled,
    /// and after the local replica changed, until it returns `None`. `None` when the peer is
    /// up to date, a message is in flight, or the next message would repeat the last one.
    pub fn poll_transmit(&mut self, replica: &Replica) -> Option<Frame> {
        self.transmit(Local::Replica(replica))
    }

    fn transmit(&mut self, local: Local<'_>) -> Option<Frame> {
        if let Some(frame) = self.outbox.pop_front() {
            return Some(frame);
        }
        self.settle(local);
        let doc = local.doc();
        // Only v1 messages: one change per chunk, never a whole document. Flags from the
        // peer (read-only, reset) are not honoured: every member receives every change.
        self.state.their_capabilities = None;
        self.state.read_only = false;
        self.state.peer_read_only = false;
        self.state.needs_reset = false;
        // Saved state may name heads this replica lost; never advertise them.
        let lost = missing(doc, &self.state.shared_heads);
        self.state.shared_heads.retain(|h| !lost.contains(h));

        // A peer with nothing (a bootstrap) gets the document and its attestations, not the
        // history change by change.
        let document = match local {
            Local::Replica(replica)
                if !self.document_sent && self.state.their_heads.as_deref() == Some(&[]) =>
            {
                self.document_frames(replica)
            }
            _ => None,
        };
        let (mut message, need) = match doc.generate_sync_message(&mut self.state) {
            Some(message) => (message, self.need(local)),
            // Automerge sees both sides at the same heads, but changes the peer pushed wait
            // for dependencies it never sent (a push carries no heads, and the peer's last
            // heads predate them): ask for those. The repeat check below sends this once.
            None => {
                let start = self.unapplied.keys().copied().collect();
                let need = self.need_from(local, start);
                if need.is_empty() {
                    self.outbox.extend(document.into_iter().flatten());
                    return self.outbox.pop_front();
                }
                let message = Message {
                    heads: doc.get_heads(),
                    need: Vec::new(),
                    have: Vec::new(),
                    changes: automerge::sync::ChunkList::empty(),
                    flags: None,
                    version: automerge::sync::MessageVersion::V1,
                };
                (message, need)
            }
        };
        self.outbox.extend(document.into_iter().flatten());
        let their_heads: HashSet<&ChangeHash> = self.state.their_heads.iter().flatten().collect();
        if !need.iter().all(|h| their_heads.contains(h)) {
            // As Automerge does: while we need specific changes, ask only for them.
            message.have = Vec::new();
        }
        message.need = need;
        let queued = self.outbox.len();
        let changes = match local {
            Local::Replica(replica) => {
                if let Some(frames) = self.catch_up_document(replica, &message) {
                    self.outbox.extend(frames);
                    Vec::new()
                } else {
                    self.changes_to_send(replica, &message)
                }
            }
            // An empty document has no changes to send.
            Local::Empty(_) => Vec::new(),
        };
        message.changes = automerge::sync::ChunkList::empty();
        let encoded = message.encode();
        let part_sent = self.outbox.len() > queued;
        if changes.is_empty() && !part_sent && self.last_sent.as_deref() == Some(encoded.as_slice())
        {
            self.stats.repeats_suppressed += 1;
            return None;
        }
        self.last_sent = Some(encoded.clone());
        self.sent_seq += 1;
        self.stats.sync_frames_sent += 1;
        self.stats.changes_sent += changes.len() as u64;
        let mut batches = batch(changes, self.frame_target);
        let last = batches.pop().unwrap_or_default();
        let sync = Frame::Sync {
            seq: self.sent_seq,
            message: encoded,
            changes: last,
        };
        for changes in batches {
            self.stats.push_frames_sent += 1;
            self.outbox.push_back(Frame::Push { changes });
        }
        if sync.body_len() > MAX_FRAME_LEN {
            // Only if the message itself is huge: send its changes ahead.
            if let Frame::Sync {
                seq,
                message,
                changes,
            } = sync
            {
                self.stats.push_frames_sent += 1;
                self.outbox.push_back(Frame::Push { changes });
                self.outbox.push_back(Frame::Sync {
                    seq,
                    message,
                    changes: Vec::new(),
                });
            }
        } else {
            self.outbox.push_back(sync);
        }
        self.outbox.pop_front()
    }

    /// The signed changes of `message` to send in frames, or, if some have no signature of
    /// their own here, none: the whole lot is queued as a missing part, ahead of the message.
    fn changes_to_send(&mut self, replica: &Replica, message: &Message) -> Vec<SignedChange> {
        let (signed, unsigned) = self.signed_changes_of(replica, message);
        if unsigned {
            // Some changes have no signature of their own here (covered by an
            // attestation): the whole lot goes as a missing part, with attestations,
            // ahead of the sync message.
            //
            // Automerge chose the message's changes by the peer's Bloom filter, whose false
            // positives leave out a change the peer lacks (the peer then asks for it by
            // name). A change of a part is covered only by a walk within the part from its
            // attesting change, so a part missing one change of that path leaves the rest
            // uncovered, refused, and asked for again the same way forever: a part carries
            // every change the peer's heads do not descend from, in causal order, and then
            // whatever else the message had.
            // (Heads not yet told: only the message's changes.)
            let doc = replica.ledger().doc();
            let mut all = match &self.state.their_heads {
                Some(heads) => {
                    let known: Vec<ChangeHash> = heads
                        .iter()
                        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
                        .copied()
                        .collect();
                    doc.get_changes(&known)
                }
                None => Vec::new(),
            };
            let have: HashSet<ChangeHash> = all.iter().map(|c| c.hash()).collect();
            for chunk in message.changes.iter() {
                for c in expand_chunk(replica, chunk) {
                    if !have.contains(&c.hash()) {
                        all.push(c);
                    }
                }
            }
            let frames = self.part_frames(replica, all);
            self.outbox.extend(frames);
            Vec::new()
        } else {
            signed
        }
    }

    /// The changes Automerge put in a message, with their signatures, and whether some have
    /// no signature of their own (covered by an attestation: they travel in a part).
    fn signed_changes_of(&self, replica: &Replica, message: &Message) -> (Vec<SignedChange>, bool) {
        let mut out = Vec::with_capacity(message.changes.len());
        let mut unsigned = false;
        for chunk in message.changes.iter() {
            for change in expand_chunk(replica, chunk) {
                let hash = change.hash();
                match replica.signature(&hash) {
                    Some(signature) => out.push(SignedChange { change, signature }),
                    None if replica.attested_by(&hash).is_some() => unsigned = true,
                    None => warn!(change = %hash, "a change has no signature; not sent"),
                }
            }
        }
        (out, unsigned)
    }

    /// What to ask the peer for: the changes its heads descend from that we neither have,
    /// nor hold waiting for their dependencies, nor refused. Walks through the changes this
    /// peer sent that wait, so that a missing dependency is asked for by name (Automerge asks
    /// through its own queue, which a replica never uses).
    fn need(&self, local: Local<'_>) -> Vec<ChangeHash> {
        let doc = local.doc();
        let Some(their_heads) = &self.state.their_heads else {
            return Vec::new();
        };
        let start = missing(doc, their_heads).into_iter().collect();
        self.need_from(local, start)
    }

    /// The changes missing under `start` (hashes we lack): walked through the unapplied
    /// changes down to the ones we know nothing of, quarantined ones left out.
    fn need_from(&self, local: Local<'_>, mut stack: Vec<ChangeHash>) -> Vec<ChangeHash> {
        let doc = local.doc();
        let mut refused: Option<HashSet<ChangeHash>> = None;
        let mut out = BTreeSet::new();
        let mut seen = HashSet::new();
        while let Some(h) = stack.pop() {
            if !seen.insert(h) || has(doc, &h) {
                continue;
            }
            let refused = refused.get_or_insert_with(|| local.quarantined());
            if refused.contains(&h) {
                continue;
            }
            match self.unapplied.get(&h) {
                Some(deps) => stack.extend(deps.iter().copied()),
                None => {
                    out.insert(h);
                }
            }
        }
        out.into_iter().collect()
    }

    /// The second half of the bookkeeping of what the peer sent, once the caller applied it:
    /// what Automerge's `receive_sync_message` does after loading the changes.
    fn settle(&mut self, local: Local<'_>) {
        let doc = local.doc();
        let heads_now = doc.get_heads();
        if let Some(Received { heads, reset }) = self.received.take() {
            let unknown = missing(doc, &heads);
            let known: Vec<ChangeHash> = heads
                .iter()
                .filter(|h| !unknown.contains(h))
                .copied()
                .collect();
            // Automerge's filter_changes: forget having sent what the peer now provably has.
            // Only saves memory (the peer has those changes, so they would not be sent
            // again anyway), hence only done once the set has grown.
            if self.state.sent_hashes.len() > SENT_TRIM && !known.is_empty() {
                let since: HashSet<ChangeHash> = doc
                    .get_changes_meta(&known)
                    .into_iter()
                    .map(|m| m.hash)
                    .collect();
                self.state.sent_hashes.retain(|h| since.contains(h));
            }
            if known.len() == heads.len() {
                self.state.shared_heads = heads.clone();
                if heads.is_empty() {
                    // The peer lost all its data: start over.
                    self.state.last_sent_heads = Vec::new();
                    self.state.sent_hashes.clear();
                }
            } else if reset {
                // Our shared heads named changes the peer does not have.
                self.state.shared_heads = known;
                self.state.sent_hashes.clear();
            } else {
                let mut shared: BTreeSet<ChangeHash> =
                    self.state.shared_heads.iter().copied().collect();
                shared.extend(known);
                self.state.shared_heads = shared.into_iter().collect();
            }
        }
        // Automerge's advance_heads: received changes that are now our heads are shared.
        if !self.unapplied.is_empty() {
            let keys: Vec<ChangeHash> = self.unapplied.keys().copied().collect();
            let unknown = missing(doc, &keys);
            let applied: HashSet<ChangeHash> =
                keys.into_iter().filter(|h| !unknown.contains(h)).collect();
            self.unapplied.retain(|h, _| !applied.contains(h));
            let fresh: Vec<ChangeHash> = heads_now
                .iter()
                .filter(|h| applied.contains(h))
                .copied()
                .collect();
            if !fresh.is_empty() {
                let mut shared: BTreeSet<ChangeHash> = self
                    .state
                    .shared_heads
                    .iter()
                    .filter(|h| heads_now.contains(h))
                    .copied()
                    .collect();
                shared.extend(fresh);
                self.state.shared_heads = shared.into_iter().collect();
            }
            if !self.unapplied.is_empty() {
                let refused = local.quarantined();
                self.unapplied.retain(|h, _| !refused.contains(h));
            }
        }
    }

    /// Remember changes received from the peer.
    fn note_received(&mut self, local: Local<'_>, changes: &[SignedChange]) {
        self.note_received_changes(local, changes.iter().map(|c| &c.change));
    }

    fn note_received_changes<'c>(
        &mut self,
        local: Local<'_>,
        changes: impl ExactSizeIterator<Item = &'c automerge::Change>,
    ) {
        let changes: Vec<&automerge::Change> = changes.collect();
        self.stats.changes_received += changes.len() as u64;
        if self.recent.len() + changes.len() > RECENT_MAX {
            self.recent.clear();
        }
        let hashes: Vec<ChangeHash> = changes.iter().map(|c| c.hash()).collect();
        let unknown = missing(local.doc(), &hashes);
        for (c, hash) in changes.iter().zip(hashes) {
            if changes.len() <= RECENT_MAX {
                self.recent.insert(hash);
            }
            if unknown.contains(&hash) && self.unapplied.len() < UNAPPLIED_MAX {
                self.unapplied.insert(hash, c.deps().to_vec());
            }
        }
    }

    /// Handle a frame from the peer. Returns the signed changes it carried, for the caller to
    /// pass to [`crate::Replica::receive`] (or `DurableReplica::receive`) before the next
    /// [`SyncSession::poll_transmit`]. An error means the connection should be closed; so
    /// does a failure to receive the changes (e.g. a storage error): the session counts on
    /// them being applied or waiting in the replica, and would not ask for them again.
    pub fn handle_frame(
        &mut self,
        replica: &Replica,
        frame: Frame,
    ) -> Result<Vec<SignedChange>, SyncError> {
        self.handle(Local::Replica(replica), frame)
    }

    fn handle(&mut self, local: Local<'_>, frame: Frame) -> Result<Vec<SignedChange>, SyncError> {
        match frame {
            Frame::Refuse { code, reason } => Err(SyncError::Refused { code, reason }),
            Frame::Redeem { .. } => Err(SyncError::Protocol(
                "a Redeem frame inside a sync session (only valid as the first frame of a device that is not a member)".into(),
            )),
            Frame::Document {
                total,
                offset,
                bytes,
                attestations,
            } => match local {
                Local::Empty(_) => {
                    self.receive_document_part(total, offset, bytes, attestations)?;
                    Ok(Vec::new())
                }
                Local::Replica(_) => {
                    self.receive_history_part(local, total, offset, bytes, attestations)?;
                    Ok(Vec::new())
                }
            },
            Frame::Push { changes } => {
                self.stats.push_frames_received += 1;
                self.note_received(local, &changes);
                Ok(changes)
            }
            Frame::Sync {
                seq,
                message,
                changes,
            } => {
                let message = Message::decode(&message)
                    .map_err(|e| SyncError::Protocol(format!("bad sync message: {e}")))?;
                if !message.changes.is_empty() {
                    return Err(SyncError::Protocol(
                        "a sync message carries changes without signatures".into(),
                    ));
                }
                check_have(&message.have)?;
                self.stats.sync_frames_received += 1;
                self.note_received(local, &changes);
                if seq <= self.received_seq {
                    debug!(seq, last = self.received_seq, "stale sync frame");
                    self.stats.stale_frames += 1;
                    return Ok(changes);
                }
                self.received_seq = seq;
                // Finish the previous message's bookkeeping before starting this one.
                self.settle(local);
                let Message {
                    heads, need, have, ..
                } = message;
                self.state.in_flight = false;
                if changes.is_empty() && heads == local.heads() {
                    self.state.last_sent_heads.clone_from(&heads);
                }
                let reset = have.len() == 1 && have[0] == Have::default();
                self.stats.resets_received += u64::from(reset);
                self.state.their_have = Some(have);
                self.state.their_heads = Some(heads.clone());
                self.state.their_need = Some(need);
                self.received = Some(Received { heads, reset });
                Ok(changes)
            }
        }
    }

    /// A frame pushing changes the peer does not have yet (just made locally, or just
    /// accepted from another peer), so that they arrive without a sync round. Changes already
    /// sent to this peer, received from it, or among its heads are left out; `None` if none
    /// is left. If the changes are more than [`FRAME_TARGET`] bytes, the rest wait in the
    /// session: call [`SyncSession::poll_transmit`] afterwards.
    pub fn push(&mut self, changes: &[SignedChange]) -> Option<Frame> {
        let their_heads: HashSet<&ChangeHash> = self.state.their_heads.iter().flatten().collect();
        let fresh: Vec<SignedChange> = changes
            .iter()
            .filter(|c| {
                let h = c.hash();
                !self.state.sent_hashes.contains(&h)
                    && !self.recent.contains(&h)
                    && !their_heads.contains(&h)
            })
            .cloned()
            .collect();
        if fresh.is_empty() {
            return None;
        }
        self.state
            .sent_hashes
            .extend(fresh.iter().map(|c| c.hash()));
        self.stats.changes_sent += fresh.len() as u64;
        let batches = batch(fresh, self.frame_target);
        self.stats.push_frames_sent += batches.len() as u64;
        let mut frames = batches.into_iter().map(|changes| Frame::Push { changes });
        let first = frames.next();
        self.outbox.extend(frames);
        first
    }
}

/// Which of `hashes` the document does not have (a hash lookup each; the document's queue
/// of changes waiting for dependencies is always empty, as a replica applies only changes
/// whose dependencies it has).
fn missing(doc: &automerge::Automerge, hashes: &[ChangeHash]) -> HashSet<ChangeHash> {
    if hashes.is_empty() {
        return HashSet::new();
    }
    let wanted: HashSet<&ChangeHash> = hashes.iter().collect();
    doc.get_missing_deps(hashes)
        .into_iter()
        .filter(|h| wanted.contains(h))
        .collect()
}

/// Whether the document has a change.
fn has(doc: &automerge::Automerge, hash: &ChangeHash) -> bool {
    !doc.get_missing_deps(std::slice::from_ref(hash))
        .contains(hash)
}

/// The changes of one chunk of an Automerge sync message: a change chunk is one change; a
/// document chunk (never produced, since sessions only speak v1) is expanded into every change
/// of the replica; anything else is several change chunks back to back.
fn expand_chunk(replica: &Replica, chunk: &[u8]) -> Vec<automerge::Change> {
    if let Ok(change) = frame::decode_change(chunk) {
        return vec![change];
    }
    if chunk.get(8) == Some(&0) {
        warn!("Automerge produced a whole-document chunk; sending its changes one by one");
        return replica.ledger().changes_since(&[]);
    }
    let mut out = Vec::new();
    let mut rest = chunk;
    while !rest.is_empty() {
        let Some(len) = chunk_len(rest) else {
            warn!("an Automerge chunk that cannot be split into changes; not sent");
            break;
        };
        match frame::decode_change(&rest[..len]) {
            Ok(c) => out.push(c),
            Err(e) => warn!(error = %e, "an Automerge chunk that is not a change; not sent"),
        }
        rest = &rest[len..];
    }
    out
}

/// The length of the Automerge chunk at the start of `bytes`: magic (4), checksum (4),
/// type (1), LEB128 data length, data.
fn chunk_len(bytes: &[u8]) -> Option<usize> {
    let mut len: u64 = 0;
    let mut shift = 0;
    let mut pos = 9;
    loop {
        let b = *bytes.get(pos)?;
        pos += 1;
        len |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let total = pos.checked_add(usize::try_from(len).ok()?)?;
    (total <= bytes.len()).then_some(total)
}

/// Split changes into batches of about `target` bytes each (a change bigger than `target`
/// goes alone). A change that could never fit in a frame is left out, with a warning.
fn batch(changes: Vec<SignedChange>, target: usize) -> Vec<Vec<SignedChange>> {
    // Room for the frame header, a sync message's fixed fields and the change count.
    let max_entry = MAX_FRAME_LEN - 1024;
    let mut out: Vec<Vec<SignedChange>> = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for c in changes {
        let len = frame::change_entry_len(&c.change);
        if len > max_entry {
            warn!(change = %c.hash(), len, "a change too large for any frame; not sent");
            continue;
        }
        if !current.is_empty() && size + len > target {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(c);
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out
}

/// Refuse summaries Automerge could not handle: more than one `have`, or a Bloom filter whose
/// parameters would make Automerge divide by zero or allocate without bound.
fn check_have(have: &[Have]) -> Result<(), SyncError> {
    if have.len() > 1 {
        return Err(SyncError::Protocol(format!(
            "{} change summaries in one message (at most 1)",
            have.len()
        )));
    }
    for h in have {
        let bytes = h.bloom.to_bytes();
        if bytes.is_empty() {
            continue;
        }
        let mut pos = 0;
        let mut next = || -> Option<u64> {
            let mut v: u64 = 0;
            for shift in (0..64).step_by(7) {
                let b = *bytes.get(pos)?;
                pos += 1;
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        };
        let (entries, bits_per_entry, probes) = (next(), next(), next());
        let ok = matches!(
            (entries, bits_per_entry, probes),
            (Some(e), Some(b), Some(p)) if e > 0 && (1..=64).contains(&b) && (1..=MAX_BLOOM_PROBES).contains(&p)
        );
        if !ok || pos >= bytes.len() {
            return Err(SyncError::Protocol(
                "a Bloom filter with unusable parameters".into(),
            ));
        }
    }
    Ok(())
}
