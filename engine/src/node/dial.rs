//! Dialing a peer: connect, the opening exchange, and bootstrap from an admin. When to redial
//! is the protocol core's decision ([`proto`]); its dials come here.

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
            net.remember(inner, peer.clone());
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

    /// Join `network` through `peer`: dial it, send `redeem` first if given (a ticket's
    /// invite), then the sync request of a device with no replica
    /// ([`SyncSession::bootstrap`]); read the peer's answer (the history, up to its Sync
    /// frame), check it, store the replica, and go on syncing with the same session on the
    /// same connection.
    pub(super) async fn bootstrap(
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
        let document = match session.take_document() {
            Ok(d) => d,
            Err(e) => return Err(protocol(e.to_string())),
        };
        let n = history.len();
        let key = self.key.clone();
        let joined = off_runtime(move || match document {
            // A bootstrap by document (protocol version 4): the changes the peer pushed
            // meanwhile, if any, are received after it.
            Some((bytes, attestations)) => {
                Replica::join_document(network, key, &bytes, &attestations).and_then(
                    |(mut replica, mut receipt)| {
                        // The received bytes are the ledger if all of it stood alone.
                        let exact = receipt.refused.is_empty()
                            && receipt.waiting == 0
                            && receipt.revoked.is_empty()
                            && history.is_empty();
                        if !history.is_empty() {
                            let more = replica.receive(history)?;
                            receipt.applied.extend(more.applied);
                            receipt.refused.extend(more.refused);
                        }
                        Ok((replica, receipt, Some(exact.then_some(bytes))))
                    },
                )
            }
            None => Replica::join(network, key, history).map(|(r, receipt)| (r, receipt, None)),
        })
        .await
        .ok_or(NetError::Closed)?;
        let (replica, receipt, document) = match joined {
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
        let store = self.store.clone();
        let applied = receipt.applied;
        let stored = applied.len();
        let durable = off_runtime(move || match document {
            Some(bytes) => store.create_replica_from_document(replica, &applied, bytes),
            None => store.create_replica(replica, &applied),
        })
        .await
        .ok_or(NetError::Closed)??;
        info!(changes = n, stored, "joined the network");
        let net = self.install(durable);
        net.remember(self, peer.clone());
        // The same session goes on: its next message (sequence number 2) tells the peer what
        // this replica has now (the core sends it as the outbound link opens).
        self.start_link(
            &net,
            conn,
            peer.device,
            Opening::Outbound,
            session,
            send,
            recv,
            None,
        );
        Ok(())
    }
}
