//! A [`Replica`] whose every accepted change, signature and refusal is durable before the
//! call that made it returns. Networks are stored under their id (hex).

use std::collections::{HashMap, HashSet};

use automerge::{Change, ChangeHash};
use redb::Durability;
use tracing::{debug, error, info_span, warn};

use super::{guarded, Ctx, Store, CHANGES, NETWORKS, QUARANTINE, SIGNATURES};
use crate::error::{Error, Result};
use crate::identity::{ChangeSignature, DeviceId, DeviceKey, NetworkId, SignedChange};
use crate::ledger::Ledger;
use crate::membership::{BearerSecret, Invite, Rejection, Role};
use crate::replica::{Quarantined, Receipt, Replica};
use crate::vf::{Agent, Id};

/// Node metadata key of the device's secret key.
const META_DEVICE_KEY: &str = "device_key";

/// A replica stored in a [`Store`]: see the module documentation. The durability contract is
/// [`super::DurableLedger`]'s: every call that changes the replica returns after an fsync'd
/// commit of what it changed.
///
/// One write path, all or nothing: if the commit fails, it is tried once more on a reopened
/// database; if that fails too, the replica is reloaded from the store, so that memory never
/// holds (nor sync hands out) a change that is not stored. The call returns the first error.
/// If even the reload fails, the replica refuses every change until a later call manages to
/// reload it ([`DurableReplica::is_stale`]).
///
/// The replica compacts its store on its own ([`CompactionPolicy`]), so the store stays
/// within a small factor of the saved document and opening reads few rows.
pub struct DurableReplica {
    store: Store,
    key: String,
    replica: Replica,
    tail: usize,
    /// Bytes of the changes stored after the snapshot.
    tail_bytes: usize,
    /// Bytes of the stored snapshot's document.
    snapshot_bytes: usize,
    policy: CompactionPolicy,
    /// Memory may differ from the store (a failed commit whose reload failed too).
    stale: bool,
    /// The devices whose cut-off is in the store's `reflow_cut_off` table.
    saved_cut_offs: HashSet<DeviceId>,
}

/// When a [`DurableReplica`] folds its stored changes into a new snapshot by itself: after a
/// write that leaves more than `min_tail_bytes` and more than `factor` times the snapshot's
/// size in changes after the snapshot, or more than `max_tail_changes` of them. The stored
/// data then stays below `(1 + factor)` times the snapshot plus `min_tail_bytes`, and each
/// compaction (which saves the whole document) is paid for by as many bytes of new changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Tail bytes below which no compaction runs.
    pub min_tail_bytes: usize,
    /// Compact when the tail exceeds this many times the snapshot's bytes.
    pub factor: usize,
    /// Compact when this many changes are stored after the snapshot, whatever their size.
    pub max_tail_changes: usize,
    /// Whether the replica compacts by itself at all.
    pub enabled: bool,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_tail_bytes: 256 << 10,
            factor: 1,
            max_tail_changes: 4096,
            enabled: true,
        }
    }
}

impl CompactionPolicy {
    /// Never compact by itself (for tests of the store's contents).
    pub fn never() -> CompactionPolicy {
        CompactionPolicy {
            enabled: false,
            ..CompactionPolicy::default()
        }
    }

    fn due(&self, tail: usize, tail_bytes: usize, snapshot_bytes: usize) -> bool {
        self.enabled
            && ((tail_bytes > self.min_tail_bytes
                && tail_bytes > snapshot_bytes.saturating_mul(self.factor))
                || tail > self.max_tail_changes)
    }
}

/// A batch of at least this many accepted changes whose rows would make the compaction due is
/// stored as a snapshot at once ([`DurableReplica::persist`]): a catch-up, not a live write.
const SNAPSHOT_BATCH_MIN: usize = 1024;

impl std::fmt::Debug for DurableReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableReplica")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// Quarantine row value: signature (64 bytes), reason JSON length (u32 LE), reason JSON,
/// change bytes.
fn encode_quarantined(q: &Quarantined) -> Vec<u8> {
    let reason = serde_json::to_vec(&q.reason).unwrap_or_default();
    let mut v = Vec::with_capacity(68 + reason.len() + q.change.change.raw_bytes().len());
    v.extend_from_slice(&q.change.signature.0);
    v.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    v.extend_from_slice(&reason);
    v.extend_from_slice(q.change.change.raw_bytes());
    v
}

fn decode_quarantined(v: &[u8]) -> Option<Quarantined> {
    let signature: [u8; 64] = v.get(..64)?.try_into().ok()?;
    let len = u32::from_le_bytes(v.get(64..68)?.try_into().ok()?) as usize;
    let reason: Rejection = serde_json::from_slice(v.get(68..68 + len)?).ok()?;
    let change = Change::from_bytes(v.get(68 + len..)?.to_vec()).ok()?;
    Some(Quarantined {
        change: SignedChange {
            change,
            signature: ChangeSignature(signature),
        },
        reason,
    })
}

impl Store {
    /// This node's device key: read from the store, or generated and stored on first use.
    pub fn device_key(&self) -> Result<DeviceKey> {
        if let Some(bytes) = self.node_meta(META_DEVICE_KEY)? {
            let secret: [u8; 32] = bytes.try_into().map_err(|_| Error::CorruptStore {
                path: self.path().to_owned(),
                detail: "the device key is not 32 bytes".into(),
            })?;
            return Ok(DeviceKey::from_secret_bytes(&secret));
        }
        let key = DeviceKey::generate()?;
        self.put_node_meta(META_DEVICE_KEY, key.secret_bytes().as_slice())?;
        Ok(key)
    }

    /// Store a newly created or joined replica with the given signed changes (its whole
    /// history so far), durably.
    pub fn create_replica(
        &self,
        replica: Replica,
        changes: &[SignedChange],
    ) -> Result<DurableReplica> {
        let key = replica.network().to_string();
        let _span = info_span!("store_create_replica", network = %key).entered();
        if self.networks()?.contains(&key) {
            return Err(Error::NetworkExists { network: key });
        }
        let tx = self.write_tx(Durability::Immediate)?;
        {
            let mut nets = tx.open_table(NETWORKS).ctx(&self.path, "open networks")?;
            nets.insert(key.as_str(), replica.ledger().network_name().as_bytes())
                .ctx(&self.path, "write network")?;
        }
        write_changes_of(self, &tx, &key, changes, &replica)?;
        super::cut_off::write_cut_offs(self, &tx, &key, replica.cut_offs())?;
        tx.commit().ctx(&self.path, "commit")?;
        let tail_bytes = changes.iter().map(|c| c.change.raw_bytes().len()).sum();
        Ok(self.created(key, replica, (changes.len(), tail_bytes), 0))
    }

    /// A replica just created in this store: `tail` its change rows (count, bytes) past a
    /// snapshot of `snapshot_bytes`.
    fn created(
        &self,
        key: String,
        replica: Replica,
        tail: (usize, usize),
        snapshot_bytes: usize,
    ) -> DurableReplica {
        let saved_cut_offs = replica.cut_offs().map(|c| c.device).collect();
        DurableReplica {
            store: self.clone(),
            key,
            replica,
            tail: tail.0,
            tail_bytes: tail.1,
            snapshot_bytes,
            policy: CompactionPolicy::default(),
            stale: false,
            saved_cut_offs,
        }
    }

    /// [`Store::create_replica`] of a replica joined from a peer's document
    /// ([`Replica::join_document`]): the ledger is stored as a snapshot with its views (as a
    /// compaction writes them) instead of one row per change, so the join writes the
    /// compressed document once; every change keeps its signature row (64 bytes, or the
    /// 32-byte hash of the attested change that covers it). `document`: a saved document of
    /// exactly this ledger, if the caller holds one (the received document, when every change
    /// of it was accepted and nothing else was applied); otherwise the ledger is saved here.
    #[cfg_attr(not(feature = "net"), allow(dead_code))]
    pub(crate) fn create_replica_from_document(
        &self,
        replica: Replica,
        changes: &[SignedChange],
        document: Option<Vec<u8>>,
    ) -> Result<DurableReplica> {
        let key = replica.network().to_string();
        let _span = info_span!("store_create_replica_from_document", network = %key).entered();
        if self.networks()?.contains(&key) {
            return Err(Error::NetworkExists { network: key });
        }
        let ledger = replica.ledger();
        let job = super::CompactionJob {
            network: key.clone(),
            heads: ledger.heads(),
            document: document.unwrap_or_else(|| ledger.save()),
            views: ledger.encode_views(),
            covered: ledger.change_hashes().into_iter().collect(),
            replaces_history: false,
        };
        let tx = self.write_tx(Durability::Immediate)?;
        {
            let mut nets = tx.open_table(NETWORKS).ctx(&self.path, "open networks")?;
            nets.insert(key.as_str(), ledger.network_name().as_bytes())
                .ctx(&self.path, "write network")?;
        }
        write_signatures(self, &tx, &key, changes, |h| replica.attested_by(h))?;
        job.write_in(self, &tx)?;
        super::cut_off::write_cut_offs(self, &tx, &key, replica.cut_offs())?;
        tx.commit().ctx(&self.path, "commit")?;
        Ok(self.created(key, replica, (0, 0), job.document.len()))
    }

    /// Open a stored replica of `network` as the device `key` (a new session actor).
    ///
    /// Reads only; an error concerns this network alone (its rows: a snapshot or change that
    /// does not decode, a ledger of a newer schema, a history that does not verify), and the
    /// store and its other networks stay usable. [`crate::Node::open`] keeps such a network
    /// unavailable instead of failing.
    pub fn open_replica(&self, network: &NetworkId, key: DeviceKey) -> Result<DurableReplica> {
        let name = network.to_string();
        let _span = info_span!("store_open_replica", network = %name).entered();
        let (bytes, tail, snapshot_bytes) =
            guarded(&self.path, "read ledger", || self.read_ledger_parts(&name))?;
        let stored = self.stored_views(&name)?;
        // Folded (if not stored) only once the replica knows its rules (Replica::open_with).
        let (ledger, views, fold) =
            Ledger::load_with_views_deferred(&bytes, key.session_actor()?, stored.as_deref())
                .map_err(|e| match e {
                    Error::NotALedger(detail) => Error::CorruptStore {
                        path: self.path.to_path_buf(),
                        detail: format!("the ledger of `{name}` cannot be loaded: {detail}"),
                    },
                    other => other,
                })?;
        debug!(tail, ?views, "replica's ledger loaded");
        let (signatures, attested, quarantine) = guarded(&self.path, "read signatures", || {
            let tx = self.read_tx()?;
            let mut signatures = HashMap::new();
            let mut attested = HashMap::new();
            {
                let t = tx
                    .open_table(SIGNATURES)
                    .ctx(&self.path, "open signatures")?;
                for row in t
                    .range((name.as_str(), &[0u8; 32])..=(name.as_str(), &[0xffu8; 32]))
                    .ctx(&self.path, "read signatures")?
                {
                    let (k, v) = row.ctx(&self.path, "read signatures")?;
                    let hash = ChangeHash(*k.value().1);
                    let v = v.value();
                    if let Ok(by) = <[u8; 32]>::try_from(v) {
                        // Version 5: covered by the attestation of the change `by`.
                        attested.insert(hash, ChangeHash(by));
                        continue;
                    }
                    let sig: [u8; 64] = v.try_into().map_err(|_| Error::CorruptStore {
                        path: self.path.to_path_buf(),
                        detail: format!(
                            "a stored signature of `{name}` is neither 64 nor 32 bytes"
                        ),
                    })?;
                    signatures.insert(hash, ChangeSignature(sig));
                }
            }
            let mut quarantine = Vec::new();
            {
                let t = tx
                    .open_table(QUARANTINE)
                    .ctx(&self.path, "open quarantine")?;
                for row in t
                    .range((name.as_str(), &[0u8; 32])..=(name.as_str(), &[0xffu8; 32]))
                    .ctx(&self.path, "read quarantine")?
                {
                    let (_, v) = row.ctx(&self.path, "read quarantine")?;
                    match decode_quarantined(v.value()) {
                        Some(q) => quarantine.push(q),
                        None => warn!("an unreadable quarantine row was skipped"),
                    }
                }
            }
            Ok((signatures, attested, quarantine))
        })?;
        let stored_cut_offs = guarded(&self.path, "read cut-offs", || self.stored_cut_offs(&name))?;
        let saved_cut_offs = stored_cut_offs.iter().map(|c| c.device).collect();
        let mut replica = Replica::open_with(ledger, key, *network, signatures, quarantine, fold)?;
        debug!(views = ?replica.ledger().views_origin(), "replica's views");
        replica.restore_attested(attested);
        // The cut-offs kept apart from the quarantine (a store of version 3 had only its
        // quarantine rows: those found there are written at the next write).
        replica.restore_cut_offs(stored_cut_offs);
        Ok(DurableReplica {
            store: self.clone(),
            key: name,
            replica,
            tail,
            tail_bytes: bytes.len() - snapshot_bytes,
            snapshot_bytes,
            policy: CompactionPolicy::default(),
            stale: false,
            saved_cut_offs,
        })
    }
}

/// Write changes of `replica` and their signature rows: a change covered by another's
/// attestation ([`Replica::attested_by`]) gets a 32-byte row naming that change (store
/// version 5), every other change its 64-byte signature.
fn write_changes_of(
    store: &Store,
    tx: &redb::WriteTransaction,
    network: &str,
    changes: &[SignedChange],
    replica: &Replica,
) -> Result<()> {
    write_rows(store, tx, network, changes, |h| replica.attested_by(h))
}

fn write_rows(
    store: &Store,
    tx: &redb::WriteTransaction,
    network: &str,
    changes: &[SignedChange],
    attested_by: impl Fn(&ChangeHash) -> Option<ChangeHash>,
) -> Result<()> {
    let mut t = tx.open_table(CHANGES).ctx(&store.path, "open changes")?;
    for c in changes {
        t.insert((network, &c.hash().0), c.change.raw_bytes())
            .ctx(&store.path, "write change")?;
    }
    write_signatures(store, tx, network, changes, attested_by)
}

/// The signature rows of `changes`: 32 bytes naming the attested change that covers one
/// (`attested_by`, store version 5), else its own 64-byte signature.
fn write_signatures(
    store: &Store,
    tx: &redb::WriteTransaction,
    network: &str,
    changes: &[SignedChange],
    attested_by: impl Fn(&ChangeHash) -> Option<ChangeHash>,
) -> Result<()> {
    let mut s = tx
        .open_table(SIGNATURES)
        .ctx(&store.path, "open signatures")?;
    for c in changes {
        let h = c.hash();
        match attested_by(&h) {
            Some(by) => s.insert((network, &h.0), by.0.as_slice()),
            None => s.insert((network, &h.0), c.signature.0.as_slice()),
        }
        .ctx(&store.path, "write signature")?;
    }
    Ok(())
}

impl DurableReplica {
    /// The replica (read API).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The ledger (read API).
    pub fn ledger(&self) -> &Ledger {
        self.replica.ledger()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Commit what the last call changed in memory, or put memory back.
    ///
    /// `write` fills a transaction; it is tried on the open database, then once more on a
    /// reopened one (redb refuses every operation of a handle that saw an I/O error). If both
    /// fail, the replica is reloaded from the store: memory goes back to the last stored
    /// state. Returns the first error.
    fn commit_or_restore(
        &mut self,
        write: impl Fn(&Self, &redb::WriteTransaction) -> Result<()>,
    ) -> Result<()> {
        let attempt = |this: &Self| -> Result<()> {
            let tx = this.store.write_tx(Durability::Immediate)?;
            write(this, &tx)?;
            // Its own span: the commit's write-out and fsync, apart from filling it.
            let _span = tracing::debug_span!("store_commit").entered();
            tx.commit().ctx(&this.store.path, "commit")
        };
        let first = match attempt(self) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        warn!(error = %first, "commit failed; retrying on a reopened store");
        if self.store.reopen().is_ok() && attempt(self).is_ok() {
            debug!("the retried commit succeeded");
            return Ok(());
        }
        self.restore();
        Err(first)
    }

    /// Reload the replica from the store (its last stored state), after a commit that failed.
    fn restore(&mut self) {
        let network = self.replica.network();
        let key = self.replica.key().clone();
        let limits = self.replica.limits();
        let reloaded = self
            .store
            .reopen()
            .and_then(|()| self.store.open_replica(&network, key));
        match reloaded {
            Ok(fresh) => {
                self.replica = fresh.replica;
                self.replica.set_limits(limits);
                self.tail = fresh.tail;
                self.tail_bytes = fresh.tail_bytes;
                self.snapshot_bytes = fresh.snapshot_bytes;
                self.saved_cut_offs = fresh.saved_cut_offs;
                self.stale = false;
                warn!("replica put back to its last stored state");
            }
            Err(e) => {
                error!(error = %e, "the replica could not be reloaded from its store; it refuses changes until it can");
                self.stale = true;
            }
        }
    }

    /// Refuse to change a replica whose memory may hold what the store lacks, unless it can
    /// be reloaded now.
    fn usable(&mut self) -> Result<()> {
        if self.stale {
            self.restore();
        }
        if self.stale {
            return Err(Error::Storage {
                path: self.store.path().to_owned(),
                op: "reload the replica after a failed commit",
                source: Box::new(redb::Error::PreviousIo),
            });
        }
        Ok(())
    }

    /// After a store call that failed: if the replica could not be reloaded from its store
    /// (stale), put memory back to the state at `heads` (the heads before the mutation, the
    /// last stored state) without the disk ([`Replica::rolled_back`]), dropping the refusals
    /// `unstored` made since. The replica stays stale (the store may hold the change after
    /// all, if only its fsync failed: a new change of the same actor and sequence number
    /// would equivocate), but reads and sync no longer see what was not stored.
    fn roll_back_if_stale(&mut self, heads: &[ChangeHash], unstored: &HashSet<ChangeHash>) {
        if !self.stale || self.replica.ledger().heads() == heads && unstored.is_empty() {
            return;
        }
        let saved = &self.saved_cut_offs;
        match self
            .replica
            .rolled_back(heads, unstored, |d| saved.contains(d))
        {
            Ok(back) => {
                self.replica = back;
                warn!("memory put back to the last stored state; the store is still unreadable");
            }
            Err(e) => {
                error!(error = %e, "memory could not be put back to the last stored state");
            }
        }
    }

    /// Store the signed changes of a local mutation made from `heads`, or put memory back.
    fn persist_local(&mut self, heads: &[ChangeHash], signed: &[SignedChange]) -> Result<()> {
        let stored = self.persist(signed, &[]);
        if stored.is_err() {
            self.roll_back_if_stale(heads, &HashSet::new());
        }
        stored
    }

    /// Whether the replica holds a cut-off the store's table lacks.
    fn unsaved_cut_offs(&self) -> bool {
        self.replica
            .cut_offs()
            .any(|c| !self.saved_cut_offs.contains(&c.device))
    }

    /// After a commit of [`DurableReplica::persist_in`]: every cut-off is stored.
    fn cut_offs_saved(&mut self) {
        self.saved_cut_offs = self.replica.cut_offs().map(|c| c.device).collect();
    }

    fn persist(&mut self, changes: &[SignedChange], refused: &[Quarantined]) -> Result<()> {
        if changes.is_empty() && refused.is_empty() && !self.unsaved_cut_offs() {
            return Ok(());
        }
        let _span = info_span!("store_persist", network = %self.key, changes = changes.len(), refused = refused.len()).entered();
        let bytes = changes
            .iter()
            .map(|c| c.change.raw_bytes().len())
            .sum::<usize>();
        if changes.len() >= SNAPSHOT_BATCH_MIN
            && self.policy.due(
                self.tail + changes.len(),
                self.tail_bytes + bytes,
                self.snapshot_bytes,
            )
        {
            match self.persist_as_snapshot(changes, refused) {
                Ok(()) => return Ok(()),
                // The rows path below stores the batch (with its own retry and restore), and
                // the compaction that is due runs after it. A commit whose fsync failed may
                // still have reached the disk: the rows then repeat what its snapshot holds,
                // which loses nothing (the compaction removes them again).
                Err(e) => {
                    warn!(error = %e, "storing a batch as a snapshot failed; storing its rows");
                    if let Err(again) = self.store.reopen() {
                        warn!(error = %again, "could not reopen the store");
                    }
                }
            }
        }
        self.commit_or_restore(|this, tx| this.persist_in(tx, changes, refused, true))?;
        self.cut_offs_saved();
        self.tail += changes.len();
        self.tail_bytes += bytes;
        self.compact_if_due();
        Ok(())
    }

    /// Store a large batch of accepted changes (a catch-up) whose rows would be folded into
    /// a snapshot by the compaction right after them: in one transaction, their signature
    /// rows, the refusals and cut-offs, and the snapshot of the ledger that holds them (with
    /// its views), instead of a row per change written and then deleted. The same state as
    /// [`DurableReplica::persist`] followed by [`DurableReplica::compact`], all or nothing.
    fn persist_as_snapshot(
        &mut self,
        changes: &[SignedChange],
        refused: &[Quarantined],
    ) -> Result<()> {
        let _span =
            info_span!("store_persist_as_snapshot", network = %self.key, changes = changes.len())
                .entered();
        let job = self.compaction_job();
        let tx = self.store.write_tx(Durability::Immediate)?;
        self.persist_in(&tx, changes, refused, false)?;
        let removed = job.write_in(&self.store, &tx)?;
        tx.commit().ctx(&self.store.path, "commit")?;
        self.cut_offs_saved();
        // The batch has no rows; the snapshot holds the rows it removed (as `compact`).
        self.tail = self.tail.saturating_sub(removed);
        self.tail_bytes = if self.tail == 0 { 0 } else { self.tail_bytes };
        self.snapshot_bytes = job.document.len();
        Ok(())
    }

    /// Run the compaction policy after an acknowledged write. A failed compaction changes
    /// nothing stored and is only logged: the write it follows is durable already.
    fn compact_if_due(&mut self) {
        if !self
            .policy
            .due(self.tail, self.tail_bytes, self.snapshot_bytes)
        {
            return;
        }
        if let Err(e) = self.compact() {
            warn!(error = %e, "automatic compaction failed; the store keeps its changes");
        }
    }

    /// Write accepted changes, refusals and new cut-offs inside `tx` (a cut-off with the
    /// refusals that revealed it: never one without the other).
    /// `rows`: whether the changes get their rows (else only their signature rows: a
    /// snapshot written in the same transaction holds them).
    fn persist_in(
        &self,
        tx: &redb::WriteTransaction,
        changes: &[SignedChange],
        refused: &[Quarantined],
        rows: bool,
    ) -> Result<()> {
        if rows {
            write_changes_of(&self.store, tx, &self.key, changes, &self.replica)?;
        } else {
            write_signatures(&self.store, tx, &self.key, changes, |h| {
                self.replica.attested_by(h)
            })?;
        }
        let mut q = tx
            .open_table(QUARANTINE)
            .ctx(&self.store.path, "open quarantine")?;
        // A change accepted now may have been quarantined earlier (under a forged signature,
        // or refused for a fact that a later judgment undid): its row goes.
        for c in changes {
            q.remove((self.key.as_str(), &c.hash().0))
                .ctx(&self.store.path, "delete quarantine row")?;
        }
        for r in refused {
            q.insert(
                (self.key.as_str(), &r.change.hash().0),
                encode_quarantined(r).as_slice(),
            )
            .ctx(&self.store.path, "write quarantine")?;
        }
        drop(q);
        super::cut_off::write_cut_offs(
            &self.store,
            tx,
            &self.key,
            self.replica
                .cut_offs()
                .filter(|c| !self.saved_cut_offs.contains(&c.device)),
        )
    }

    /// [`DurableReplica::persist`] for a receipt that revokes changes accepted earlier
    /// (strong removal, equivocation): in one transaction, the new changes and refusals,
    /// the revoked rows deleted, and a snapshot of the rebuilt ledger replacing any that held
    /// them. A crash leaves either the state before or the state after, never revoked changes
    /// on disk without their quarantine rows or the reverse.
    fn persist_revoking(
        &mut self,
        changes: &[SignedChange],
        refused: &[Quarantined],
        revoked: &[automerge::ChangeHash],
    ) -> Result<()> {
        let _span =
            info_span!("store_revoke", network = %self.key, revoked = revoked.len()).entered();
        let mut job = self.compaction_job();
        job.replaces_history = true;
        self.commit_or_restore(|this, tx| {
            this.persist_in(tx, changes, refused, true)?;
            {
                let mut t = tx
                    .open_table(CHANGES)
                    .ctx(&this.store.path, "open changes")?;
                for h in revoked {
                    t.remove((this.key.as_str(), &h.0))
                        .ctx(&this.store.path, "delete change")?;
                }
            }
            job.write_in(&this.store, tx).map(|_| ())
        })?;
        self.cut_offs_saved();
        // The snapshot holds every change that stands.
        self.tail = 0;
        self.tail_bytes = 0;
        self.snapshot_bytes = job.document.len();
        Ok(())
    }

    /// Run a ledger mutation as this device, sign it, and store it durably. Returns the
    /// mutation's result and the signed changes (to send to peers).
    pub fn write<R>(
        &mut self,
        mutation: impl FnOnce(&mut Ledger) -> Result<R>,
    ) -> Result<(R, Vec<SignedChange>)> {
        self.usable()?;
        let heads = self.replica.ledger().heads();
        let (r, signed) = self.replica.write(mutation)?;
        self.persist_local(&heads, &signed)?;
        Ok((r, signed))
    }

    /// Publish the network's rule set (admins only; see [`Replica::set_rules`]), durably.
    pub fn set_rules(&mut self, rules: crate::rules::RuleSet) -> Result<Vec<SignedChange>> {
        self.usable()?;
        let heads = self.replica.ledger().heads();
        let signed = self.replica.set_rules(rules)?;
        self.persist_local(&heads, &signed)?;
        Ok(signed)
    }

    /// Record one economic event, signed and durable.
    pub fn record_event(&mut self, event: impl Into<crate::NewEvent>) -> Result<Id> {
        let event = event.into();
        self.write(|l| l.record_event(event)).map(|(id, _)| id)
    }

    /// Take changes from a peer (see [`Replica::receive`]); accepted changes and refusals
    /// are durable when this returns.
    pub fn receive(&mut self, changes: Vec<SignedChange>) -> Result<Receipt> {
        self.usable()?;
        let heads = self.replica.ledger().heads();
        let receipt = match self.replica.receive(changes) {
            Ok(receipt) => receipt,
            Err(e) => return Err(self.undo_failed_receive(&heads, e)),
        };
        self.persist_receipt(&heads, receipt)
    }

    /// A receive that failed inside the replica (Automerge refusing to apply a batch it had
    /// judged, a re-judgement that could not finish) may have applied part of what it was
    /// given, none of it stored: put the replica back to its last stored state, as after a
    /// failed commit. No test reaches this (no input makes the replica fail part-way); it
    /// keeps the promise that memory never runs ahead of the store.
    fn undo_failed_receive(&mut self, heads: &[ChangeHash], e: Error) -> Error {
        if self.replica.ledger().heads() != heads {
            warn!(error = %e, "a receive failed part-way; the replica is put back");
            self.restore();
            self.roll_back_if_stale(heads, &HashSet::new());
        }
        e
    }

    /// Take a missing part of the history from a peer (see [`Replica::receive_part`]): its
    /// changes covered by attestations, each judged; accepted changes (a covered one with a
    /// 32-byte row naming the attested change, store version 5) and refusals are durable
    /// when this returns.
    pub fn receive_part(
        &mut self,
        changes: Vec<automerge::Change>,
        attestations: &[crate::identity::Attestation],
    ) -> Result<Receipt> {
        self.receive_received_part(crate::sync::ReceivedPart {
            changes,
            attestations: attestations.to_vec(),
            document: None,
        })
    }

    /// [`DurableReplica::receive_part`] of a part as a session received it (see
    /// [`Replica::receive_received_part`]: a catch-up document may become the ledger's).
    pub fn receive_received_part(&mut self, part: crate::sync::ReceivedPart) -> Result<Receipt> {
        self.usable()?;
        let heads = self.replica.ledger().heads();
        let receipt = match self.replica.receive_received_part(part) {
            Ok(receipt) => receipt,
            Err(e) => return Err(self.undo_failed_receive(&heads, e)),
        };
        self.persist_receipt(&heads, receipt)
    }

    /// What a peer's frames brought, durably: the missing parts of the history first (see
    /// [`DurableReplica::receive_part`]), then the signed changes; one receipt for all.
    pub fn receive_with_parts(
        &mut self,
        parts: Vec<crate::sync::ReceivedPart>,
        changes: Vec<SignedChange>,
    ) -> Result<Receipt> {
        let mut receipt = Receipt::default();
        for part in parts {
            receipt.absorb(self.receive_received_part(part)?);
        }
        if !changes.is_empty() {
            receipt.absorb(self.receive(changes)?);
        }
        Ok(receipt)
    }

    /// Store what a receipt accepted and refused (and delete what it revoked).
    fn persist_receipt(&mut self, heads: &[ChangeHash], receipt: Receipt) -> Result<Receipt> {
        let refused: Vec<Quarantined> = receipt
            .refused
            .iter()
            .filter_map(|(h, _)| {
                self.replica
                    .quarantine()
                    .find(|q| q.change.hash() == *h)
                    .cloned()
            })
            .collect();
        let stored = if receipt.revoked.is_empty() {
            self.persist(&receipt.applied, &refused)
        } else {
            self.persist_revoking(&receipt.applied, &refused, &receipt.revoked)
        };
        if stored.is_err() {
            // A revoking receipt's revoked changes are among its refusals: put back too.
            let unstored = refused.iter().map(|q| q.change.hash()).collect();
            self.roll_back_if_stale(heads, &unstored);
        }
        stored.map(|()| receipt)
    }

    /// Migrate a schema-version-1 ledger to version 2 (admins only), durably: see
    /// [`Replica::migrate`]. Returns the migration change (none if the ledger is at version 2
    /// already), stored before this returns, to send to peers.
    pub fn migrate(&mut self) -> Result<Vec<SignedChange>> {
        self.usable()?;
        let heads = self.replica.ledger().heads();
        let signed = self.replica.migrate()?;
        self.persist_local(&heads, &signed)?;
        Ok(signed)
    }

    /// Admit a device (admins only), durably.
    pub fn add_member(
        &mut self,
        device: DeviceId,
        role: Role,
        agent: Id,
    ) -> Result<Vec<SignedChange>> {
        self.usable()?;
        let heads = self.replica.ledger().heads();
        let signed = self.replica.add_member(device, role, agent)?;
        self.persist_local(&heads, &signed)?;
        Ok(signed)
    }

    /// Remove a device (admins only), durably.
    pub fn remove_member(&mut self, device: DeviceId) -> Result<Vec<SignedChange>> {
        self.usable()?;
        let heads = self.replica.ledger().heads();
        let signed = self.replica.remove_member(device)?;
        self.persist_local(&heads, &signed)?;
        Ok(signed)
    }

    /// Redeem an invite (admins only), durably. See [`Replica::redeem_invite`].
    pub fn redeem_invite(
        &mut self,
        invite: &Invite,
        redeemer: DeviceId,
        secret: Option<&BearerSecret>,
        new_agent: Option<Agent>,
        now: u64,
    ) -> Result<Vec<SignedChange>> {
        self.usable()?;
        let heads = self.replica.ledger().heads();
        let signed = self
            .replica
            .redeem_invite(invite, redeemer, secret, new_agent, now)?;
        self.persist_local(&heads, &signed)?;
        Ok(signed)
    }

    /// Fold the stored changes into a snapshot (signatures are kept). On failure nothing
    /// stored changes and the store is reopened for the next write.
    pub fn compact(&mut self) -> Result<()> {
        self.usable()?;
        let job = self.compaction_job();
        let bytes = job.document.len();
        match job.run(&self.store) {
            Ok(removed) => {
                self.tail = self.tail.saturating_sub(removed);
                self.tail_bytes = if self.tail == 0 { 0 } else { self.tail_bytes };
                self.snapshot_bytes = bytes;
                debug!(removed, bytes, "compacted");
                Ok(())
            }
            Err(e) => {
                if let Err(again) = self.store.reopen() {
                    warn!(error = %again, "could not reopen the store after a failed compaction");
                }
                Err(e)
            }
        }
    }

    /// Set the bounds on waiting and quarantined changes ([`Replica::set_limits`]).
    pub fn set_limits(&mut self, limits: crate::replica::Limits) {
        self.replica.set_limits(limits);
    }

    /// How this replica compacts its store by itself.
    pub fn set_compaction_policy(&mut self, policy: CompactionPolicy) {
        self.policy = policy;
    }

    /// Whether memory may hold changes the store lacks: a commit failed and the replica could
    /// not be reloaded from the store yet. Such a replica refuses every change.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// A compaction of the ledger as it is now.
    fn compaction_job(&self) -> super::CompactionJob {
        super::CompactionJob {
            network: self.key.clone(),
            heads: self.replica.ledger().heads(),
            document: self.replica.ledger().save(),
            views: self.replica.ledger().encode_views(),
            covered: self.replica.ledger().change_hashes().into_iter().collect(),
            replaces_history: false,
        }
    }

    /// Changes stored after the latest snapshot.
    pub fn tail_len(&self) -> usize {
        self.tail
    }
}
