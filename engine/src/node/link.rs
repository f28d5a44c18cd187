//! One sync connection: its frames in and out, and how it ends.

use super::*;

/// One sync connection. Lock order: replica, then links, then a session.
pub(super) struct Link {
    pub(super) id: u64,
    pub(super) peer: DeviceId,
    pub(super) conn: Connection,
    pub(super) session: Mutex<SyncSession>,
    pub(super) out: mpsc::UnboundedSender<Out>,
    /// Refused: nothing more is sent but the refusal.
    pub(super) closing: AtomicBool,
}

/// What the writer of a connection sends.
pub(super) enum Out {
    /// An encoded frame.
    Frame(Vec<u8>),
    /// A refusal: send it, end the stream, and close the connection.
    Refuse(RefuseCode, String),
}

impl Link {
    pub(super) fn send(&self, frame: &Frame) {
        if self.closing.load(Ordering::Relaxed) {
            return;
        }
        // If the writer is gone the connection is closing; the reader notices.
        let _ = self.out.send(Out::Frame(frame.encode()));
    }

    /// Refuse the peer: a Refuse frame, then the connection is closed.
    pub(super) fn refuse(&self, code: RefuseCode, reason: &str) {
        if !self.closing.swap(true, Ordering::Relaxed) {
            let _ = self.out.send(Out::Refuse(code, reason.to_string()));
        }
    }

    /// Send what the session has to send.
    pub(super) fn transmit(&self, replica: &Replica) {
        let mut session = lock(&self.session);
        for _ in 0..MAX_FRAMES_PER_POLL {
            match session.poll_transmit(replica) {
                Some(frame) => self.send(&frame),
                None => break,
            }
        }
    }

    pub(super) fn close(&self, code: u32, reason: &str) {
        close(&self.conn, code, reason);
    }
}

/// Close a connection with a QUIC application code (see [`close_code`]; a refusal uses its
/// [`RefuseCode`]'s number) and a reason.
pub(super) fn close(conn: &Connection, code: u32, reason: &str) {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    conn.close(VarInt::from_u32(code), &reason.as_bytes()[..end]);
}

/// Send a refusal on an open stream, give the peer a moment to read it, and close.
pub(super) async fn refuse_on(
    conn: &Connection,
    send: &mut SendStream,
    code: RefuseCode,
    reason: &str,
) {
    let frame = Frame::refuse(code, reason);
    if write_frame(send, &frame.encode()).await.is_ok() {
        let _ = send.finish();
        let _ = tokio::time::timeout(REFUSE_LINGER, conn.closed()).await;
    }
    close(conn, u32::from(code.to_u16()), reason);
}

/// The error a Refuse frame from `peer` means.
pub(super) fn refused(peer: DeviceId, frame: &Frame) -> Option<NetError> {
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
pub(super) enum LinkEnd {
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

pub(super) fn write_error(peer: DeviceId, network: NetworkId, e: WriteError) -> NetError {
    match e {
        WriteError::ConnectionLost(c) => connection_error(peer, network, &c),
        other => NetError::ConnectionLost {
            peer,
            detail: other.to_string(),
        },
    }
}

pub(super) fn read_error(peer: DeviceId, network: NetworkId, e: ReadFrameError) -> NetError {
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
    /// Register a connection and start its reader and writer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_link(
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

    pub(super) async fn run_link(
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
        // Judged and stored off the runtime's threads.
        let handle = |frames: Vec<Frame>| {
            let (net, link) = (net.clone(), link.clone());
            async move {
                off_runtime(move || net.handle_frames(&link, frames))
                    .await
                    .unwrap_or(Err(LinkEnd::Shutdown))
            }
        };
        let end = async {
            if let Some(frame) = first {
                handle(vec![frame]).await?;
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
                handle(batch).await?;
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
}

/// Read frames into `tx` until the stream ends, fails, or the node closes.
pub(super) async fn read_frames(
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

pub(super) async fn run_writer(
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
