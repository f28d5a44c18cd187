//! One network's replica on this node, its live connections and its peers' records: what
//! arrives is judged and stored here, and what is stored is pushed on to the other peers.

use super::*;

/// One network's replica and its live connections.
pub(super) struct Net {
    pub(super) id: NetworkId,
    pub(super) replica: Mutex<DurableReplica>,
    pub(super) links: Mutex<HashMap<u64, Arc<Link>>>,
    pub(super) peers: Mutex<BTreeMap<DeviceId, PeerRecord>>,
    /// Held while the address book is written (writes in order).
    pub(super) book_write: Mutex<()>,
    pub(super) updates: broadcast::Sender<LedgerUpdate>,
    pub(super) events: broadcast::Sender<NodeEvent>,
}

#[derive(Default)]
pub(super) struct PeerRecord {
    pub(super) their_heads: Option<Vec<ChangeHash>>,
    pub(super) last_error: Option<String>,
    /// The address book entry.
    pub(super) addr: Option<PeerAddr>,
    /// This node's user disconnected it: not redialed until `connect` or a new connection.
    pub(super) paused: bool,
    /// A reconnection task is running.
    pub(super) retrying: bool,
    /// Attempts so far and when the next is due.
    pub(super) retry: Option<(u32, SystemTime)>,
}

impl Net {
    pub(super) fn new(replica: DurableReplica, events: broadcast::Sender<NodeEvent>) -> Net {
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
    pub(super) fn load_book(&self, me: DeviceId) {
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
    pub(super) fn known_peers(&self) -> Vec<DeviceId> {
        lock(&self.peers)
            .iter()
            .filter(|(_, r)| r.addr.is_some())
            .map(|(d, _)| *d)
            .collect()
    }

    /// Remember where `addr.device` was reached, and save the address book if that changed.
    pub(super) fn remember(&self, addr: PeerAddr) {
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
    pub(super) fn connected(&self, peer: DeviceId) -> bool {
        self.links().into_iter().any(|l| {
            l.peer == peer && !l.closing.load(Ordering::Relaxed) && l.conn.close_reason().is_none()
        })
    }

    pub(super) fn links(&self) -> Vec<Arc<Link>> {
        lock(&self.links).values().cloned().collect()
    }

    /// Tell subscribers about new changes and push them to every connected peer but the one
    /// they came from. Called with the replica locked, right after the changes were stored.
    pub(super) fn after_change(
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
        // A change covered by another's attestation has no signature of its own: it is not
        // pushed (a peer's next sync round gets it in a missing part, with attestations).
        let signed: Vec<SignedChange>;
        let changes = if changes
            .iter()
            .any(|c| replica.replica().attested_by(&c.hash()).is_some())
        {
            signed = changes
                .iter()
                .filter(|c| replica.replica().attested_by(&c.hash()).is_none())
                .cloned()
                .collect();
            &signed[..]
        } else {
            changes
        };
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
    pub(super) fn handle_frames(&self, link: &Link, frames: Vec<Frame>) -> Result<(), LinkEnd> {
        if let Some(e) = frames.iter().find_map(|f| refused(link.peer, f)) {
            return Err(LinkEnd::Lost(e));
        }
        if link.closing.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut replica = lock(&self.replica);
        let mut changes = Vec::new();
        let parts;
        {
            let mut session = lock(&link.session);
            for frame in frames {
                let more = session
                    .handle_frame(replica.replica(), frame)
                    .map_err(|e| LinkEnd::Protocol(e.to_string()))?;
                changes.extend(more);
            }
            parts = session.take_parts();
        }
        let mut applied = Vec::new();
        let mut revoked = false;
        // Missing parts of the history first (changes covered by attestations), then the
        // signed changes.
        let mut receipts = Vec::new();
        for (part, attestations) in parts {
            receipts.push(
                replica
                    .receive_part(part, &attestations)
                    .map_err(LinkEnd::Storage)?,
            );
        }
        if !changes.is_empty() {
            receipts.push(replica.receive(changes).map_err(LinkEnd::Storage)?);
        }
        for receipt in receipts {
            revoked |= !receipt.revoked.is_empty();
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
            applied.extend(receipt.applied);
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
    pub(super) fn session(&self, peer: DeviceId) -> SyncSession {
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

    pub(super) fn remove_link(&self, link: &Link, error: Option<String>) {
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

    pub(super) fn record_error(&self, peer: DeviceId, error: String) {
        lock(&self.peers).entry(peer).or_default().last_error = Some(error);
    }
}
