//! Accepting a peer's connection: the handshake and the first frame. What happens to it
//! (admission, an invite's redemption, refusals) is decided by pure code: [`gate`] before
//! a network is chosen, the protocol core ([`proto::NetworkProto`]) after.

use super::*;

impl Inner {
    pub(super) async fn accept_loop(self: Arc<Self>) {
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
    pub(super) async fn accept(self: Arc<Self>, incoming: Incoming) {
        let handshake_failed = |e: &dyn std::fmt::Display| {
            warn!(error = %e, "incoming handshake failed (no common ALPN: a node of another network or protocol version?)");
            self.emit(NodeEvent::HandshakeFailed {
                detail: e.to_string(),
            });
        };
        let mut accepting = match incoming.accept() {
            Ok(a) => a,
            Err(e) => return handshake_failed(&e),
        };
        let alpn = match accepting.alpn().await {
            Ok(a) => a,
            Err(e) => return handshake_failed(&e),
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
        let peer = DeviceId::from_bytes(conn.remote_id().as_bytes()).ok();
        let contact = {
            let networks = self.read_networks();
            let unavailable = self.read_unavailable();
            gate::first_contact(
                peer,
                network_of_alpn(&alpn),
                |n| match (networks.contains_key(n), unavailable.get(n)) {
                    (true, _) => gate::Holding::Open,
                    (false, Some(problem)) => gate::Holding::Unavailable(problem),
                    (false, None) => gate::Holding::Absent,
                },
                self.cancel.is_cancelled(),
            )
        };
        let (peer, network) = match contact {
            gate::Contact::Proceed { peer, network } => (peer, network),
            gate::Contact::Close { code, reason } => return close(&conn, code, reason),
            gate::Contact::Refuse {
                peer,
                network,
                code,
                reason,
            } => {
                let span = conn_span(network, peer, "in");
                return self
                    .refuse_before_link(&conn, network, peer, code, reason)
                    .instrument(span)
                    .await;
            }
        };
        let span = conn_span(network, peer, "in");
        async {
            let Ok(net) = self.net(network) else {
                // Gone since (closed, or left): as if never held.
                let code = RefuseCode::WrongNetwork.to_u16();
                close(
                    &conn,
                    u32::from(code),
                    "this node does not hold that network",
                );
                return;
            };
            let after = self.config.connect_timeout;
            // A device that is not a member may send one small frame: a Redeem.
            let (mut send, mut recv) = match tokio::time::timeout(after, conn.accept_bi()).await {
                Ok(Ok(streams)) => streams,
                Ok(Err(e)) => {
                    let e = connection_error(peer, network, &e);
                    warn!(error = %e, "incoming connection failed before its first frame");
                    net.record_error(peer, e.to_string());
                    return;
                }
                Err(_) => {
                    close(
                        &conn,
                        close_code::TIMEOUT,
                        "timed out waiting for the first frame",
                    );
                    return;
                }
            };
            let limit = net
                .with(move |replica| {
                    proto::NetworkProto::<PeerAddr>::first_frame_limit(replica.replica(), &peer)
                })
                .await;
            let Some(limit) = limit else {
                close(
                    &conn,
                    close_code::SHUTTING_DOWN,
                    "the node is shutting down",
                );
                return;
            };
            let first = tokio::time::timeout(after, read_frame_limited(&mut recv, limit)).await;
            let member = limit == MAX_FRAME_LEN;
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
                    close(
                        &conn,
                        close_code::TIMEOUT,
                        "timed out waiting for the first frame",
                    );
                    return;
                }
            };
            // The core decides: a member's link opens, a Redeem is redeemed, anything else
            // from a device that is not a member is refused.
            let first = Some(first);
            if let Some(e) = first.as_ref().and_then(|f| refused(peer, f)) {
                info!(error = %e, "the dialer refused");
                close(&conn, close_code::DONE, "refused");
                return;
            }
            let Some(session) = net.session(peer).await else {
                close(
                    &conn,
                    close_code::SHUTTING_DOWN,
                    "the node is shutting down",
                );
                return;
            };
            self.start_link(
                &net,
                conn,
                peer,
                Opening::Inbound,
                session,
                send,
                recv,
                first,
            );
        }
        .instrument(span)
        .await;
    }
}

impl Inner {
    /// Refuse a peer before any link exists ([`gate::Contact::Refuse`]: a network this node
    /// holds but could not open): a Refuse frame on its stream, then close. Nothing of the
    /// network is read.
    pub(super) async fn refuse_before_link(
        &self,
        conn: &Connection,
        network: NetworkId,
        peer: DeviceId,
        code: RefuseCode,
        reason: String,
    ) {
        warn!(%code, "refusing a peer before any link: {reason}");
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
    pub(super) async fn refuse_not_member(
        self: &Arc<Self>,
        net: &Arc<Net>,
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
}
