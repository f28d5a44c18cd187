//! One sync connection: its frames in and out, and how it ends.

use super::*;

/// One sync connection's transport: where its frames go. Its session lives in the
/// network's protocol core ([`proto::NetworkProto`]).
pub(super) struct Link {
    pub(super) id: u64,
    pub(super) peer: DeviceId,
    pub(super) conn: Connection,
    pub(super) out: mpsc::UnboundedSender<Out>,
    /// Refused or closed by this node: nothing more is sent but the refusal, and its reader
    /// stops.
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
    /// The peer broke the protocol (bytes that are no frame).
    Protocol(String),
    /// This node closed or refused the link (the core decided).
    Closing,
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

/// How a link opens in the protocol core.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Opening {
    /// This node dialed (the peer accepted).
    Outbound,
    /// The peer dialed; the core admits it (a member, or a device redeeming an invite) or
    /// refuses it.
    Inbound,
}

impl Inner {
    /// Register a connection and start its reader and writer; the task of its frames hands
    /// the link to the protocol core ([`proto::Event::LinkOpened`] or
    /// [`proto::Event::Incoming`]) with `first`, a first frame already read, then its frames.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_link(
        self: &Arc<Self>,
        net: &Arc<Net>,
        conn: Connection,
        peer: DeviceId,
        opening: Opening,
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
            out,
            closing: AtomicBool::new(false),
        });
        lock(&net.links).insert(link.id, link.clone());
        let addr = (opening != Opening::Outbound).then(|| {
            // Where it came from is where it listens (one socket per endpoint).
            let mut addr = PeerAddr::new(peer);
            for path in &link.conn.paths() {
                match path.remote_addr() {
                    TransportAddr::Ip(a) => addr.direct.push(*a),
                    TransportAddr::Relay(url) => addr.relays.push(url.to_string()),
                    _ => {}
                }
            }
            addr
        });
        let addr = addr.filter(|a| !a.direct.is_empty() || !a.relays.is_empty());
        let open = match opening {
            Opening::Inbound => proto::Event::Incoming {
                link: link.id,
                peer,
                session,
                addr,
                first,
            },
            Opening::Outbound => proto::Event::LinkOpened {
                link: link.id,
                peer,
                inbound: false,
                session,
                addr,
                first,
            },
        };
        info!(
            inbound = opening != Opening::Outbound,
            "sync connection open"
        );
        let span = tracing::Span::current();
        let cancel = self.cancel.clone();
        let conn = link.conn.clone();
        self.tracker
            .spawn(run_writer(conn, send, rx, cancel).instrument(span.clone()));
        let inner = self.clone();
        let net = net.clone();
        let task_link = link.clone();
        self.tracker.spawn(
            async move { inner.run_link(net, task_link, recv, open).await }.instrument(span),
        );
        link
    }

    pub(super) async fn run_link(
        self: Arc<Self>,
        net: Arc<Net>,
        link: Arc<Link>,
        recv: RecvStream,
        open: proto::Event<PeerAddr>,
    ) {
        // Frames are read by their own task, so that reading goes on while a batch is being
        // stored, and a run of frames that arrived meanwhile is stored in one commit.
        let (tx, mut rx) = mpsc::channel(FRAME_QUEUE);
        let reader = self.tracker.spawn(
            read_frames(recv, tx, self.cancel.clone(), link.peer, net.id)
                .instrument(tracing::Span::current()),
        );
        // Judged and stored by the network's worker, off the runtime's threads; the next
        // batch is read meanwhile and handed over once this one is done.
        let handle = |event: proto::Event<PeerAddr>| {
            let (net, link) = (net.clone(), link.clone());
            async move {
                net.call(event).await.ok_or(LinkEnd::Shutdown)?;
                if link.closing.load(Ordering::Relaxed) {
                    return Err(LinkEnd::Closing);
                }
                Ok(())
            }
        };
        let end = async {
            handle(open).await?;
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
                handle(proto::Event::Frames {
                    link: link.id,
                    frames: batch,
                })
                .await?;
                if let Some(end) = after {
                    return Err(end);
                }
            }
        }
        .await;
        reader.abort();
        if let Err(LinkEnd::Protocol(detail)) = &end {
            warn!(%detail, "protocol violation by the peer; refusing it");
            // Awaited: the core's refusal (a Refuse frame, the violation's close code) goes
            // out before this task closes the connection as done.
            let _ = net
                .call(proto::Event::Malformed {
                    link: link.id,
                    detail: detail.clone(),
                })
                .await;
        }
        // A deliberate close (by this node's user, who paused the peer, or by the peer's:
        // DISCONNECTED) is not redialed.
        let deliberate = matches!(
            link.conn.close_reason(),
            Some(iroh::endpoint::ConnectionError::ApplicationClosed(c))
                if c.error_code.into_inner() == u64::from(close_code::DISCONNECTED)
        );
        let end = match end {
            _ if deliberate => proto::LinkEnd::Deliberate,
            Ok(()) | Err(LinkEnd::Finished) | Err(LinkEnd::Closing) | Err(LinkEnd::Protocol(_)) => {
                if !link.closing.load(Ordering::Relaxed) {
                    link.close(close_code::DONE, "done");
                }
                proto::LinkEnd::Finished
            }
            Err(LinkEnd::Shutdown) => {
                link.close(close_code::SHUTTING_DOWN, "the node is shutting down");
                proto::LinkEnd::Shutdown
            }
            Err(LinkEnd::Lost(e)) => {
                info!(error = %e, "sync connection ended");
                match e {
                    NetError::Refused { code, reason, .. } => {
                        close(&link.conn, close_code::DONE, "refused");
                        proto::LinkEnd::Refused { code, reason }
                    }
                    e => proto::LinkEnd::Lost {
                        retry: !gives_up(&e),
                        error: e.to_string(),
                    },
                }
            }
        };
        net.post(proto::Event::LinkClosed { link: link.id, end });
        lock(&net.links).remove(&link.id);
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
