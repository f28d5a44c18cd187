//! Dialing a peer: connect, the opening exchange, and bootstrap from an admin. When to redial
//! is the protocol core's decision ([`proto`]); its dials come here.

use super::join::{Form, Join, JoinClose, JoinEffect, JoinError, JoinEvent, Joined};
use super::*;

/// Whether a failed reconnection is final: the peer is no member (here or there), does not
/// serve the network, or this node is closing. Other failures (unreachable, timeouts, lost
/// connections, a busy peer) are retried.
pub(super) fn gives_up(e: &NetError) -> bool {
    match e {
        NetError::Refused { code, .. } => !matches!(code, RefuseCode::Busy),
        NetError::Unreachable { .. }
        | NetError::Timeout { .. }
        | NetError::ConnectionLost { .. } => false,
        _ => true,
    }
}

impl Inner {
    /// [`Node::connect`] (also used by local-network discovery).
    pub(super) async fn connect(
        self: &Arc<Self>,
        network: NetworkId,
        peer: &PeerAddr,
    ) -> NetResult<()> {
        let inner = self;
        inner.live()?;
        let net = inner.net(network)?;
        if peer.device == inner.device {
            return Err(NetError::SelfConnect);
        }
        let device = peer.device;
        let member = net
            .with(move |r| r.replica().member(&device).is_some())
            .await
            .ok_or(NetError::Closed)?;
        if !member {
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
            let mut session = net.session(peer.device).await.ok_or(NetError::Closed)?;
            let (session, opening) = net
                .with(move |replica| {
                    let opening = session.poll_transmit(replica.replica());
                    (session, opening)
                })
                .await
                .ok_or(NetError::Closed)?;
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
                Opening::Outbound,
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
    pub(super) async fn dial(&self, network: NetworkId, peer: &PeerAddr) -> NetResult<Connection> {
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
    pub(super) async fn open_exchange(
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

    /// Before a join: a network the store holds that this node does not hold in memory (an
    /// earlier join's commit reported an error after its data reached the disk, and the store
    /// could not be reopened then) is opened and installed; the join becomes a connection
    /// as a member (joining again would be refused by the store, which holds the network).
    /// Whether it was.
    async fn adopt_stored(self: &Arc<Self>, network: NetworkId) -> NetResult<bool> {
        let (store, key) = (self.store.clone(), self.key.clone());
        let opened = off_runtime(move || match store.networks() {
            Ok(held) if held.contains(&network.to_string()) => {
                Some(super::open_replica(&store, network, &key))
            }
            _ => None,
        })
        .await
        .ok_or(NetError::Closed)?;
        match opened {
            None => Ok(false),
            Some(Ok(replica)) => {
                warn!("the store holds this network from an earlier join: opened");
                if self.net(network).is_err() {
                    // Installing reads the address book from the store: off the runtime.
                    let inner = self.clone();
                    off_runtime(move || inner.install(replica))
                        .await
                        .ok_or(NetError::Closed)?;
                }
                Ok(true)
            }
            Some(Err(problem)) => Err(NetError::NetworkUnavailable {
                network,
                kind: problem.kind,
                reason: problem.reason,
            }),
        }
    }

    /// Join `network` through `peer`: dial it and carry out the joining side's bootstrap,
    /// [`Join`] (the pure machine the simulator runs too): send `redeem` first if given (a
    /// ticket's invite), then the sync request of a device with no replica; read the peer's
    /// answer (the history, up to its Sync frame), verify it off the runtime's threads, store
    /// the replica, and go on syncing with the same session on the same connection.
    pub(super) async fn bootstrap(
        self: &Arc<Self>,
        network: NetworkId,
        peer: &PeerAddr,
        redeem: Option<Frame>,
    ) -> NetResult<()> {
        if self.adopt_stored(network).await? {
            return self.connect(network, peer).await;
        }
        let conn = self.dial(network, peer).await?;
        let origin = tokio::time::Instant::now();
        let (mut join, opening) = Join::new(
            origin.elapsed(),
            network,
            peer.device,
            redeem,
            self.config.connect_timeout,
        );
        let (send, mut recv, first) = self
            .open_exchange(&conn, network, peer.device, &opening)
            .await?;
        let mut effects = join.handle(origin.elapsed(), JoinEvent::Frames(vec![first]));
        let mut durable = None;
        loop {
            if effects.is_empty() {
                // Waiting for the peer: its next frame, or the machine's deadline.
                let Some(deadline) = join.deadline() else {
                    return Err(NetError::Protocol {
                        peer: peer.device,
                        detail: "the join stopped with nothing to do".into(),
                    });
                };
                let event =
                    match tokio::time::timeout_at(origin + deadline, read_frame(&mut recv)).await {
                        Err(_) => JoinEvent::Tick,
                        Ok(Ok(Some(frame))) => JoinEvent::Frames(vec![frame]),
                        Ok(Ok(None)) => JoinEvent::Ended,
                        Ok(Err(ReadFrameError::Frame(e))) => JoinEvent::Malformed(e.to_string()),
                        Ok(Err(e)) => return Err(read_error(peer.device, network, e)),
                    };
                effects = join.handle(origin.elapsed(), event);
                continue;
            }
            let mut next = Vec::new();
            for effect in effects {
                match effect {
                    JoinEffect::Verify(history) => {
                        let n = history.changes();
                        let key = self.key.clone();
                        let verified = off_runtime(move || history.verify(key))
                            .await
                            .ok_or(NetError::Closed)?;
                        debug!(changes = n, "history verified");
                        next.extend(join.handle(origin.elapsed(), JoinEvent::Verified(verified)));
                    }
                    JoinEffect::Store(joined) => {
                        if self.cancel.is_cancelled() {
                            close(
                                &conn,
                                close_code::SHUTTING_DOWN,
                                "the node is shutting down",
                            );
                            return Err(NetError::Closed);
                        }
                        let store = self.store.clone();
                        let stored = joined.applied.len();
                        let result = off_runtime(move || store_joined(&store, *joined))
                            .await
                            .ok_or(NetError::Closed)?;
                        let event = match result {
                            Ok(replica) => {
                                info!(stored, "joined the network");
                                durable = Some(replica);
                                JoinEvent::Stored(Ok(()))
                            }
                            Err(e) => JoinEvent::Stored(Err(e)),
                        };
                        next.extend(join.handle(origin.elapsed(), event));
                    }
                    JoinEffect::Close { code, reason } => close(&conn, join_close(code), &reason),
                    JoinEffect::Failed(e) => return Err(join_error(network, peer.device, e)),
                    JoinEffect::Done { session, rest } => {
                        // Frames are fed one at a time and reading stops at the peer's Sync
                        // frame: none can have arrived after it.
                        debug_assert!(rest.is_empty(), "frames after the peer's answer");
                        let Some(replica) = durable.take() else {
                            return Err(NetError::Protocol {
                                peer: peer.device,
                                detail: "the join ended before its replica was stored".into(),
                            });
                        };
                        // Installing reads the address book from the store: off the
                        // runtime.
                        let inner = self.clone();
                        let net = off_runtime(move || inner.install(replica))
                            .await
                            .ok_or(NetError::Closed)?;
                        net.remember(peer.clone());
                        // The same session goes on: its next message (sequence number 2)
                        // tells the peer what this replica has now (the core sends it as
                        // the outbound link opens).
                        self.start_link(
                            &net,
                            conn,
                            peer.device,
                            Opening::Outbound,
                            *session,
                            send,
                            recv,
                            rest.into_iter().next(),
                        );
                        return Ok(());
                    }
                }
            }
            effects = next;
        }
    }
}

/// What the driver does for [`JoinEffect::Store`] (the node and the simulator): store a
/// joined replica durably, as a snapshot if it was joined by the peer's document, else one
/// row per change.
///
/// A commit can fail after its data reached the disk (the fsync reported an error, the
/// pages were written anyway). redb refuses every later operation of the handle that saw
/// the error, so the store is reopened here; if the network is there after the reopen, the
/// transaction did commit (it is all or nothing), its content is exactly `joined`, and
/// that stored replica is the join's result. Without this, every retry of the join would
/// be refused by [`Store::create_replica`] (the store holds the network) while the node
/// does not hold it in memory (found by the simulator, seeds 41, 149 and 247).
pub(super) fn store_joined(store: &Store, joined: Joined) -> crate::Result<DurableReplica> {
    let network = joined.replica.network();
    let key = joined.replica.key().clone();
    let created = match joined.form {
        Form::Document { exact } => {
            store.create_replica_from_document(joined.replica, &joined.applied, exact)
        }
        Form::Changes => store.create_replica(joined.replica, &joined.applied),
    };
    let Err(e) = created else {
        return created;
    };
    if let Err(again) = store.reopen() {
        warn!(error = %again, "the store cannot be reopened after a failed join");
        return Err(e);
    }
    match store.networks() {
        Ok(held) if held.contains(&network.to_string()) => {
            warn!(error = %e, "the join's commit reported an error but reached the disk; \
                  the stored replica is opened");
            store.open_replica(&network, key)
        }
        _ => Err(e),
    }
}

/// The close code of a [`JoinClose`].
fn join_close(code: JoinClose) -> u32 {
    match code {
        JoinClose::Done => close_code::DONE,
        JoinClose::Timeout => close_code::TIMEOUT,
        JoinClose::StorageFailure => close_code::STORAGE_FAILURE,
        JoinClose::Refuse(code) => u32::from(code.to_u16()),
    }
}

/// The node's error of a failed join through `peer`.
fn join_error(network: NetworkId, peer: DeviceId, e: JoinError) -> NetError {
    match e {
        JoinError::Refused { code, reason } => NetError::Refused { peer, code, reason },
        JoinError::Protocol(detail) => NetError::Protocol { peer, detail },
        JoinError::Ended => NetError::JoinFailed {
            network,
            peer,
            detail: JoinError::Ended.to_string(),
        },
        JoinError::Timeout { after, waiting_for } => NetError::Timeout { after, waiting_for },
        JoinError::NotVerified(e) => NetError::JoinFailed {
            network,
            peer,
            detail: e.to_string(),
        },
        JoinError::PeerNotAMember => NetError::PeerNotAMember { peer, network },
        JoinError::Store(e) => NetError::Core(e),
    }
}
