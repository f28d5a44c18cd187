//! One network's replica on this node, its protocol core ([`proto::NetworkProto`]) and its
//! live connections: the driver that hands the core its events and carries out its effects.
//!
//! Every event of the network (its links' frames and ends, timers, dials, pauses) is handled
//! by one worker thread per network, in the order posted ([`Net::post`], [`Net::call`]): the
//! replica's lock, signature checks and fsyncs are never taken on the async runtime's
//! threads, and the tasks of the network's connections only carry bytes. The driver's own
//! reads of the replica (a member check, a session's opening frame, a saved sync state) run
//! on the worker too, in turn ([`Net::with`]). The application's writes
//! ([`crate::Node::write`], blocking calls made off the runtime) lock the replica on the
//! caller's thread and tell the core at once, so that its changes go out in the order made.
//!
//! Effects that need the replica or a connection (sending and refusing, storing a batch,
//! telling subscribers) are carried out at once, with the replica locked, by
//! [`Net::feed`]; the rest (notices, dials, timers, saving the address book and sync
//! states) once it is unlocked, by [`Net::finish`].

use std::collections::VecDeque;
use std::sync::mpsc as std_mpsc;
use std::sync::Weak;
use std::time::Instant;

use tokio::sync::oneshot;

use super::proto::{CloseKind, Effect, Event, Jitter, NetworkProto, Notice};
use super::*;

/// A replica job for the worker: runs with the replica locked, in turn with the events.
type ReplicaJob = Box<dyn FnOnce(&mut DurableReplica) + Send>;

/// What a network's worker thread does next.
enum Job {
    /// Hand the core an event and carry out its effects; `done` is told once they are.
    Event {
        event: Box<Event<PeerAddr>>,
        done: Option<oneshot::Sender<()>>,
    },
    /// Run a job with the replica locked.
    With(ReplicaJob),
    /// Stop, after the jobs posted before this one.
    Stop,
}

/// One network's replica, its protocol core and its live connections. Lock order: replica,
/// then core, then links.
pub(super) struct Net {
    pub(super) id: NetworkId,
    pub(super) replica: Mutex<DurableReplica>,
    pub(super) core: Mutex<NetworkProto<PeerAddr>>,
    pub(super) links: Mutex<HashMap<u64, Arc<Link>>>,
    /// Held while the address book is written (writes in order).
    book_write: Mutex<()>,
    /// The core's time origin.
    origin: Instant,
    pub(super) updates: broadcast::Sender<LedgerUpdate>,
    /// The worker's queue.
    jobs: std_mpsc::Sender<Job>,
    /// The queue's other end, until [`Net::start`] hands it to the worker.
    pending: Mutex<Option<std_mpsc::Receiver<Job>>>,
    /// The worker thread, once started.
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Net {
    /// The network of `replica` on device `me`, its address book read from the store
    /// (members only, not `me`).
    pub(super) fn new(
        replica: DurableReplica,
        me: DeviceId,
        backoff: Option<Backoff>,
        jitter: Jitter,
    ) -> Net {
        let id = replica.replica().network();
        let book: Vec<(DeviceId, PeerAddr)> = reconnect::load_book(replica.store(), &id)
            .into_iter()
            .filter(|(d, _)| replica.replica().member(d).is_some())
            .collect();
        let (jobs, pending) = std_mpsc::channel();
        Net {
            id,
            core: Mutex::new(NetworkProto::new(id, me, backoff, jitter, book)),
            replica: Mutex::new(replica),
            links: Mutex::new(HashMap::new()),
            book_write: Mutex::new(()),
            origin: Instant::now(),
            updates: broadcast::channel(CHANNEL_CAPACITY).0,
            jobs,
            pending: Mutex::new(Some(pending)),
            worker: Mutex::new(None),
        }
    }

    /// Start the network's worker thread (once): it handles the jobs posted, in order, until
    /// [`Net::stop`], or until the network or the node is gone. It holds neither (a job
    /// finding either gone ends it), so dropping the node ends it too.
    pub(super) fn start(self: &Arc<Self>, inner: &Arc<Inner>) {
        let Some(jobs) = lock(&self.pending).take() else {
            return;
        };
        let (net, inner) = (Arc::downgrade(self), Arc::downgrade(inner));
        let span = tracing::Span::current();
        let spawned = std::thread::Builder::new()
            .name(format!("reflow-net-{}", short(&self.id)))
            .spawn(move || span.in_scope(|| work(&jobs, &net, &inner)));
        match spawned {
            Ok(handle) => *lock(&self.worker) = Some(handle),
            Err(e) => error!(error = %e, "could not start the network's worker thread"),
        }
    }

    /// Stop the worker once the jobs posted so far are done; the thread to wait for.
    pub(super) fn stop(&self) -> Option<std::thread::JoinHandle<()>> {
        let _ = self.jobs.send(Job::Stop);
        lock(&self.worker).take()
    }

    /// Hand the core `event` on the worker, without waiting.
    pub(super) fn post(&self, event: Event<PeerAddr>) {
        let _ = self.jobs.send(Job::Event {
            event: Box::new(event),
            done: None,
        });
    }

    /// Hand the core `event` on the worker and wait until its effects are carried out;
    /// `None` if the worker stopped first.
    pub(super) async fn call(&self, event: Event<PeerAddr>) -> Option<()> {
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(Job::Event {
                event: Box::new(event),
                done: Some(done),
            })
            .ok()?;
        wait.await.ok()
    }

    /// Run `job` with the replica locked, on the worker, in turn with the events; `None` if
    /// the worker stopped first.
    pub(super) async fn with<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut DurableReplica) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::With(Box::new(move |replica| {
                let _ = tx.send(job(replica));
            })))
            .ok()?;
        rx.await.ok()
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

    /// The core's time now.
    pub(super) fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn link(&self, id: u64) -> Option<Arc<Link>> {
        lock(&self.links).get(&id).cloned()
    }

    /// Hand the core an event and carry out what it says: what needs the replica (locked by
    /// the caller) or a connection at once, the rest returned for [`Net::finish`].
    pub(super) fn feed(
        &self,
        replica: &mut DurableReplica,
        event: Event<PeerAddr>,
    ) -> Vec<Effect<PeerAddr>> {
        let mut later = Vec::new();
        let mut events = VecDeque::new();
        // A replica that may hold what its store lacks sends nothing (proto::Event::Frozen);
        // each event is a chance to put it back to its stored state (a no-op receive does).
        if replica.is_stale() {
            let _ = replica.receive(Vec::new());
        }
        match (replica.is_stale(), lock(&self.core).frozen()) {
            (true, false) => {
                error!("the replica could not be put back to its stored state; its links are closed until it is");
                events.push_back(Event::Frozen);
            }
            (false, true) => {
                info!("the replica is back to its stored state; resuming");
                events.push_back(Event::Reloaded);
            }
            _ => {}
        }
        events.push_back(event);
        while let Some(event) = events.pop_front() {
            let now = self.origin.elapsed();
            let effects = lock(&self.core).handle(now, replica.replica(), event);
            for effect in effects {
                match effect {
                    Effect::Send { link, frame } => {
                        if let Some(l) = self.link(link) {
                            l.send(&frame);
                        }
                    }
                    Effect::Refuse { link, code, reason } => {
                        if let Some(l) = self.link(link) {
                            warn!(peer = %short(&l.peer), %code, %reason, "refusing the peer");
                            l.refuse(code, &reason);
                        }
                    }
                    Effect::Close { link, code, reason } => {
                        if let Some(l) = self.link(link) {
                            l.closing.store(true, Ordering::Relaxed);
                            let code = match code {
                                CloseKind::Done => close_code::DONE,
                                CloseKind::Disconnected => close_code::DISCONNECTED,
                                CloseKind::StorageFailure => close_code::STORAGE_FAILURE,
                            };
                            l.close(code, &reason);
                        }
                    }
                    Effect::Store {
                        link,
                        parts,
                        changes,
                    } => {
                        events.push_back(match replica.receive_with_parts(parts, changes) {
                            Ok(receipt) => {
                                debug!(
                                    applied = receipt.applied.len(),
                                    waiting = receipt.waiting,
                                    duplicates = receipt.duplicates,
                                    refused = receipt.refused.len(),
                                    "received changes"
                                );
                                Event::Stored { link, receipt }
                            }
                            Err(e) => {
                                error!(error = %e, "could not store changes from the peer; closing its connection");
                                Event::StoreFailed {
                                    link,
                                    error: e.to_string(),
                                }
                            }
                        });
                    }
                    Effect::Redeem {
                        link,
                        peer,
                        invite,
                        secret,
                        agent,
                    } => {
                        let result = replica
                            .redeem_invite(&invite, peer, secret.as_ref(), agent, unix_now())
                            .map_err(|e| {
                                let (code, reason) = proto::redeem_refusal(&e);
                                warn!(%code, %reason, nonce = %invite.nonce, "invite refused");
                                // Back to the stored state (see proto::Event::Reloaded).
                                events.push_back(Event::Reloaded);
                                (code, reason)
                            });
                        if result.is_ok() {
                            info!(nonce = %invite.nonce, role = %invite.role, "invite redeemed: a new member");
                        }
                        events.push_back(Event::Redeemed { link, result });
                    }
                    Effect::Updated { changes, from } => {
                        let _ = self.updates.send(LedgerUpdate {
                            network: self.id,
                            changes,
                            heads: replica.ledger().heads(),
                            from,
                        });
                    }
                    other => later.push(other),
                }
            }
        }
        later
    }

    /// Carry out the effects [`Net::feed`] left: with the replica unlocked.
    pub(super) fn finish(self: &Arc<Self>, inner: &Arc<Inner>, effects: Vec<Effect<PeerAddr>>) {
        for effect in effects {
            match effect {
                Effect::Notify(notice) => inner.emit(self.node_event(notice)),
                Effect::Dial { peer, addr } => {
                    let (inner2, net) = (inner.clone(), self.clone());
                    inner.spawn(
                        async move {
                            debug!("reconnecting");
                            let failed = match inner2.connect(net.id, &addr).await {
                                Ok(()) => {
                                    info!("reconnected");
                                    None
                                }
                                Err(e) if gives_up(&e) => {
                                    info!(error = %e, "not reconnecting");
                                    Some(false)
                                }
                                Err(e) => {
                                    debug!(error = %e, "reconnection failed; retrying later");
                                    Some(true)
                                }
                            };
                            net.post(Event::DialDone { peer, failed });
                        }
                        .instrument(conn_span(self.id, peer, "retry")),
                    );
                }
                Effect::SetTimer { at, timer } => {
                    let (inner2, net) = (inner.clone(), self.clone());
                    let wait = at.saturating_sub(self.origin.elapsed());
                    inner.spawn(
                        async move {
                            tokio::select! {
                                _ = inner2.cancel.cancelled() => {}
                                () = tokio::time::sleep(wait) => net.post(Event::Timer(timer)),
                            }
                        }
                        .instrument(tracing::Span::current()),
                    );
                }
                Effect::SaveBook(_) => {
                    // The latest book, written in order.
                    let _writing = lock(&self.book_write);
                    let book: Vec<PeerAddr> = lock(&self.core)
                        .peers()
                        .values()
                        .filter_map(|r| r.addr.clone())
                        .collect();
                    let store = lock(&self.replica).store().clone();
                    reconnect::save_book(&store, &self.id, &book);
                }
                Effect::SaveSyncState { peer, state } => {
                    let store = lock(&self.replica).store().clone();
                    if let Err(e) =
                        store.put_sync_state(&self.id.to_string(), peer.as_bytes(), &state)
                    {
                        warn!(error = %e, "could not save the sync state");
                    }
                }
                // Carried out by `feed`.
                Effect::Send { .. }
                | Effect::Refuse { .. }
                | Effect::Close { .. }
                | Effect::Store { .. }
                | Effect::Redeem { .. }
                | Effect::Updated { .. } => {}
            }
        }
    }

    /// [`Net::feed`] with the replica locked here, then [`Net::finish`]: the worker's step.
    fn run(self: &Arc<Self>, inner: &Arc<Inner>, event: Event<PeerAddr>) {
        let later = {
            let mut replica = lock(&self.replica);
            self.feed(&mut replica, event)
        };
        self.finish(inner, later);
    }

    fn node_event(&self, notice: Notice) -> NodeEvent {
        let network = self.id;
        match notice {
            Notice::Connected { peer, inbound } => NodeEvent::Connected {
                network,
                peer,
                inbound,
            },
            Notice::Disconnected { peer, error } => NodeEvent::Disconnected {
                network,
                peer,
                error,
            },
            Notice::Refused {
                peer,
                by_us,
                code,
                reason,
            } => NodeEvent::Refused {
                network,
                peer,
                by_us,
                code,
                reason,
            },
            Notice::ChangesRefused {
                peer,
                count,
                reason,
            } => NodeEvent::ChangesRefused {
                network,
                peer,
                count,
                reason,
            },
            Notice::InviteRedeemed { peer, role, nonce } => NodeEvent::InviteRedeemed {
                network,
                device: peer,
                role,
                nonce,
            },
            Notice::RetryScheduled {
                peer,
                attempt,
                after,
            } => NodeEvent::RetryScheduled {
                network,
                peer,
                attempt,
                after,
            },
        }
    }

    /// A sync session with `peer`, resumed from the state saved at the end of the last
    /// connection with it, if any (a shorter first round; a stale state costs bandwidth only).
    /// Read on the worker; `None` if it stopped.
    pub(super) async fn session(&self, peer: DeviceId) -> Option<SyncSession> {
        let id = self.id;
        self.with(move |replica| resumed_session(replica.store(), id, peer))
            .await
    }

    /// A connection with `peer` failed before a link opened.
    pub(super) fn record_error(&self, peer: DeviceId, error: String) {
        self.post(Event::ConnectFailed { peer, error });
    }

    /// Remember where `addr.device` was reached.
    pub(super) fn remember(&self, addr: PeerAddr) {
        if addr.direct.is_empty() && addr.relays.is_empty() {
            return;
        }
        self.post(Event::Reached {
            peer: addr.device,
            addr,
        });
    }
}

/// A session with `peer` resumed from the state saved in `store`, or a new one.
fn resumed_session(store: &Store, id: NetworkId, peer: DeviceId) -> SyncSession {
    match store.sync_state(&id.to_string(), peer.as_bytes()) {
        Ok(Some(saved)) => SyncSession::with_state(id, peer, &saved).unwrap_or_else(|e| {
            warn!(error = %e, "the saved sync state is unreadable; starting afresh");
            SyncSession::new(id, peer)
        }),
        Ok(None) => SyncSession::new(id, peer),
        Err(e) => {
            warn!(error = %e, "could not read the saved sync state; starting afresh");
            SyncSession::new(id, peer)
        }
    }
}

/// The worker thread of a network: its jobs, in order, until told to stop or the network or
/// the node is gone. A job that panics is logged and the worker goes on (the node keeps
/// serving; the replica's lock ignores poisoning).
fn work(jobs: &std_mpsc::Receiver<Job>, net: &Weak<Net>, inner: &Weak<Inner>) {
    while let Ok(job) = jobs.recv() {
        let (Some(net), Some(inner)) = (net.upgrade(), inner.upgrade()) else {
            break;
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
            Job::Event { event, done } => {
                net.run(&inner, *event);
                if let Some(done) = done {
                    let _ = done.send(());
                }
                true
            }
            Job::With(job) => {
                job(&mut lock(&net.replica));
                true
            }
            Job::Stop => false,
        }));
        match ran {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => error!("a job of the network's worker panicked; the worker goes on"),
        }
    }
    debug!("the network's worker stopped");
}
