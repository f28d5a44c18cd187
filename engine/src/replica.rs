//! A device's signed, membership-checked replica of one network's ledger.
//!
//! [`Replica`] wraps the pure [`Ledger`] with the device key, the network id, the membership
//! index, the signature of every change, and the quarantine of refused changes. Local writes
//! are signed as they are made; changes from peers go through [`Replica::receive`], which
//! verifies signatures (in batches, on every core), checks membership in each change's causal
//! past, applies what is accepted and quarantines the rest. Pure: no I/O (storage and the
//! network wrap it).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use automerge::{ActorId, Change, ChangeHash};
use serde::Serialize;
use tracing::{debug, warn};

use crate::admission::{Admission, Creation, Past, RecordKind};
use crate::error::{Error, Result};
use crate::identity::{
    verify_changes, Attestation, ChangeSignature, DeviceId, DeviceKey, IdentityError, NetworkId,
    SignedChange,
};
use crate::judge::{header, record_kind, ChangeMeta, Judge, Tip};
use crate::ledger::Ledger;
use crate::membership::{
    BearerSecret, Header, Invite, InviteAudience, InviteError, Member, Membership,
    MembershipRecord, Rejection, Role,
};
use crate::rules::{Finding, RuleIndex, RuleSet, Which};
use crate::vf::{Agent, EconomicEvent, Id};

/// Bounds on what a replica keeps for changes it cannot apply (defaults in [`Limits::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most changes kept waiting for their dependencies; more are dropped (not stored, not
    /// acknowledged: they come again with a later sync) and counted in [`Receipt::overflow`].
    pub waiting: usize,
    /// Most bytes of changes kept waiting for their dependencies.
    pub waiting_bytes: usize,
    /// Most refused changes kept in the quarantine; a refusal past it is reported (with the
    /// same verdict) but the change is not kept, and counts in [`Receipt::overflow`].
    pub quarantine: usize,
    /// Batches larger than this are checked in runs of this many changes: the signatures of
    /// the next run on other threads while this one is judged and applied in order. Verdicts
    /// do not depend on it.
    pub pipeline_chunk: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            waiting: 100_000,
            waiting_bytes: 256 * 1024 * 1024,
            quarantine: 50_000,
            pipeline_chunk: 8192,
        }
    }
}

/// A refused change, kept apart.
#[derive(Debug, Clone)]
pub struct Quarantined {
    /// The change and its signature as received.
    pub change: SignedChange,
    /// Why it was refused.
    pub reason: Rejection,
}

/// The proof that a device is cut off (equivocation or a fork, docs/security.md): kept on its
/// own, never bounded by [`Limits::quarantine`] nor lost with a quarantine row, so that no
/// replica forgets a cut-off that a judgment from scratch would make (a store keeps it in its
/// own table, docs/storage.md).
#[derive(Debug, Clone)]
pub struct CutOff {
    /// The device.
    pub device: DeviceId,
    /// The reason every change of it that is not a strict ancestor of a twin is refused
    /// ([`Rejection::Equivocation`] or [`Rejection::Forked`]).
    pub reason: Rejection,
    /// The two changes that prove it (same (actor, seq), or neither in the other's past),
    /// the smaller hash first.
    pub twins: [ChangeHash; 2],
    /// The twins themselves, signed as received, as far as this replica holds them: judged
    /// again with every later judgment from scratch and passed on to peers as evidence.
    pub changes: Vec<SignedChange>,
}

/// What [`Replica::receive`] did with a batch of changes.
#[derive(Debug, Clone, Default)]
pub struct Receipt {
    /// Accepted and applied, in the order applied (store and forward these).
    pub applied: Vec<SignedChange>,
    /// Refused, with the reason.
    pub refused: Vec<(ChangeHash, Rejection)>,
    /// Waiting for changes they depend on.
    pub waiting: usize,
    /// Already known (duplicates and replays), ignored.
    pub duplicates: usize,
    /// Accepted earlier, refused now (strong removal, equivocation): the ledger was rebuilt
    /// without them; a store deletes them and keeps them in its quarantine (their reasons
    /// are in `refused`).
    pub revoked: Vec<ChangeHash>,
    /// Proof of equivocation to pass on to peers (both twins), though neither is applied.
    pub evidence: Vec<SignedChange>,
    /// Changes neither kept waiting nor quarantined because those queues are full
    /// ([`Limits`]): the peer that sent them floods; a node
    /// disconnects it.
    pub overflow: usize,
    /// Devices cut off by this batch (their proofs: [`Replica::cut_offs`]); a store writes
    /// them with the batch.
    pub cut_off: Vec<DeviceId>,
}

impl Receipt {
    /// Add what a later receive of the same batch decided (a missing part's changes, then
    /// the signed ones): its lists after this one's, its counts added, its waiting count
    /// (the replica's, after it) kept.
    pub(crate) fn absorb(&mut self, later: Receipt) {
        self.applied.extend(later.applied);
        self.refused.extend(later.refused);
        self.waiting = later.waiting;
        self.duplicates += later.duplicates;
        self.revoked.extend(later.revoked);
        self.evidence.extend(later.evidence);
        self.overflow += later.overflow;
        self.cut_off.extend(later.cut_off);
    }
}

/// Who recorded an event: the signing device and the Agent it acted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// The event.
    pub event: Id,
    /// The change that recorded it (hex).
    pub change: String,
    /// The device that signed it.
    pub device: DeviceId,
    /// The member record of that device when it recorded the event.
    pub member: Option<Member>,
}

/// A missing part of the history received from a peer (what the sync session's `take_parts`
/// returns), for [`Replica::receive_received_part`].
#[derive(Debug)]
pub struct ReceivedPart {
    /// The changes, in the order sent (causal); for a catch-up by document, those of the
    /// document the receiving replica lacked.
    pub changes: Vec<automerge::Change>,
    /// The attestations that came with them.
    pub attestations: Vec<Attestation>,
    /// For a catch-up by document: the document itself, loaded apart (never trusted as a
    /// whole). If every change of it stands once judged, the replica adopts it as its
    /// document rather than applying the changes one by one.
    pub document: Option<Box<automerge::Automerge>>,
}

/// A device's replica of one network. See the module documentation.
pub struct Replica {
    ledger: Ledger,
    key: DeviceKey,
    network: NetworkId,
    membership: Membership,
    signatures: HashMap<ChangeHash, ChangeSignature>,
    /// Accepted changes that have no signature of their own: they came in a document
    /// ([`Replica::join_document`]) and are covered by the attestation of a later change of
    /// their device (the value), whose own signature is in `signatures`.
    attested: HashMap<ChangeHash, ChangeHash>,
    /// While a document is judged ([`Replica::join_document`]): the accepted changes, not
    /// applied (the judged document becomes the ledger if every change of it is accepted).
    deferred: Option<Vec<Change>>,
    quarantine: BTreeMap<ChangeHash, Quarantined>,
    waiting: HashMap<ChangeHash, SignedChange>,
    admission: Admission,
    /// The accepted change of every (actor, seq), to catch equivocation.
    seqs: HashMap<(automerge::ActorId, u64), ChangeHash>,
    /// The latest accepted change of every device, to catch forks ([`Tip`]).
    tips: HashMap<DeviceId, Tip>,
    /// Devices cut off for equivocation or a fork: every new change of theirs is refused
    /// with this reason (and judges nothing again: the proof is in).
    cut_off: HashMap<DeviceId, Rejection>,
    /// The proofs of the cut-offs ([`CutOff`]): never bounded, never dropped.
    cut_offs: BTreeMap<DeviceId, CutOff>,
    /// Devices whose proof of this batch was kept in a full quarantine (one each, so that the
    /// judgment from scratch sees it; cleared by that judgment).
    proof_kept: HashSet<DeviceId>,
    /// Removals in force (see [`Judge::removals`]), from the last full judgment.
    removals: Vec<(DeviceId, usize, ChangeHash)>,
    /// The network's rule sets, by causal past (`crate::rules`).
    rules: RuleIndex,
    limits: Limits,
}

/// Which changes of a history are covered by attested changes (docs/security.md,
/// "Authorship by attestation"): a change is covered by an attested change of the same
/// device (the first 32 bytes of the actor ids equal) that has it in its causal past, itself
/// included. `graph` is every change (hash, actor bytes, dependencies); `attested` the hashes
/// of changes whose attestation is valid. Returns each covered change with the attested
/// change that covers it (the first found). One walk of the causal past per device, each
/// change visited at most once per device.
pub(crate) fn coverage(
    graph: &[(ChangeHash, &[u8], &[ChangeHash])],
    attested: impl Iterator<Item = ChangeHash>,
) -> HashMap<ChangeHash, ChangeHash> {
    let index: HashMap<ChangeHash, usize> = graph
        .iter()
        .enumerate()
        .map(|(i, (h, _, _))| (*h, i))
        .collect();
    let device = |i: usize| graph[i].1.get(..32);
    let mut visited: HashMap<&[u8], HashSet<usize>> = HashMap::new();
    let mut covered = HashMap::new();
    for a in attested {
        let Some(&start) = index.get(&a) else {
            continue;
        };
        let Some(d) = device(start) else { continue };
        let seen = visited.entry(d).or_default();
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            if device(i) == Some(d) {
                covered.entry(graph[i].0).or_insert(a);
            }
            stack.extend(graph[i].2.iter().filter_map(|dep| index.get(dep)));
        }
    }
    covered
}

/// The largest op counter of a change (its start op minus one if it has no ops).
fn max_op_of(change: &Change) -> u64 {
    (change.start_op().get() + change.len() as u64).saturating_sub(1)
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("network", &self.network)
            .field("device", &self.key.id())
            .field("ledger", &self.ledger)
            .field("quarantined", &self.quarantine.len())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Create a network: its genesis change makes `key`'s device the first admin, acting for
    /// `agent` (created in the ledger right after). Returns the replica and the signed changes
    /// to store.
    pub fn create_network(
        name: &str,
        key: DeviceKey,
        agent: Agent,
    ) -> Result<(Replica, Vec<SignedChange>)> {
        let record = MembershipRecord::Genesis {
            network_name: name.to_string(),
            creator: key.id(),
            agent: agent.id.clone(),
            schema: crate::SCHEMA_VERSION,
        };
        let ledger =
            Ledger::new_network_with(name, key.session_actor()?, Some(record.to_message()))?;
        let genesis = ledger
            .last_local_change()
            .ok_or_else(|| Error::NotALedger("the genesis change is missing".into()))?;
        let network = NetworkId(genesis.hash().0);
        let mut replica = Replica {
            ledger,
            key,
            network,
            membership: Membership::new(network),
            signatures: HashMap::new(),
            attested: HashMap::new(),
            deferred: None,
            quarantine: BTreeMap::new(),
            waiting: HashMap::new(),
            admission: Admission::default(),
            seqs: HashMap::new(),
            tips: HashMap::new(),
            cut_off: HashMap::new(),
            cut_offs: BTreeMap::new(),
            proof_kept: HashSet::new(),
            removals: Vec::new(),
            rules: RuleIndex::default(),
            limits: Limits::default(),
        };
        let mut signed = replica.adopt_local(&[], &mut false)?;
        let (_, more) = replica.write(|l| l.create(agent))?;
        signed.extend(more);
        Ok((replica, signed))
    }

    /// Start a replica of an existing network from changes received from a peer (at least
    /// its genesis change), as the device `key`. Everything goes through the same checks as
    /// [`Replica::receive`]; the returned receipt says what was accepted (to store) and what
    /// was refused.
    pub fn join(
        network: NetworkId,
        key: DeviceKey,
        changes: Vec<SignedChange>,
    ) -> Result<(Replica, Receipt)> {
        Replica::join_judged(network, key, changes, None, HashMap::new())
    }

    /// Start a replica of an existing network from a peer's saved document (Automerge's
    /// compressed `save`, received in a bootstrap) and the attestations that cover its
    /// changes (docs/security.md, "Authorship by attestation"). The document is loaded apart,
    /// never trusted as a whole: each of its changes must be covered by a valid attestation
    /// of its own author's device (an attested change of that device that has it in its
    /// causal past), and is then judged exactly as [`Replica::receive`] judges a signed
    /// change (membership in its causal past, admission, equivocation, strong removal), in
    /// causal order. A change that no attestation covers is refused
    /// ([`SignatureProblem::NotCovered`](crate::identity::SignatureProblem::NotCovered)) and
    /// quarantined, and what depends on it with it. Bytes that are not a whole Automerge
    /// document are [`Error::BadDocument`]. Returns the replica and what was accepted (to
    /// store) and refused. A change of `Receipt::applied` that an attestation covers
    /// ([`Replica::attested_by`]) carries the attested change's signature, not one of its
    /// own: store it ([`crate::Store::create_replica`] writes its 32-byte row), never send it
    /// on its own.
    pub fn join_document(
        network: NetworkId,
        key: DeviceKey,
        document: &[u8],
        attestations: &[Attestation],
    ) -> Result<(Replica, Receipt)> {
        let _span = tracing::debug_span!("join_document", bytes = document.len()).entered();
        if document.is_empty() {
            return Err(Error::BadDocument("no bytes".into()));
        }
        let doc =
            automerge::Automerge::load(document).map_err(|e| Error::BadDocument(e.to_string()))?;
        let changes = doc.get_changes(&[]);
        let index: HashMap<ChangeHash, usize> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.hash(), i))
            .collect();
        // The attestations that are valid statements of a change of this document.
        let mut valid: Vec<(ChangeHash, ChangeSignature)> = Vec::new();
        for a in attestations {
            let Some(&i) = index.get(&a.hash) else {
                debug!(change = %a.hash, "an attestation of a change the document lacks");
                continue;
            };
            match a.check(&network, &changes[i]) {
                Ok(_) => valid.push((a.hash, a.signature)),
                Err(problem) => warn!(change = %a.hash, ?problem, "an attestation is refused"),
            }
        }
        let graph: Vec<(ChangeHash, &[u8], &[ChangeHash])> = changes
            .iter()
            .map(|c| (c.hash(), c.actor_id().to_bytes(), c.deps()))
            .collect();
        let covered = coverage(&graph, valid.iter().map(|(h, _)| *h));
        let own: HashMap<ChangeHash, ChangeSignature> = valid.into_iter().collect();
        let mut attested = HashMap::new();
        let mut verdicts = Vec::with_capacity(changes.len());
        let mut signed = Vec::with_capacity(changes.len());
        for change in changes {
            let h = change.hash();
            let device = DeviceId::of_actor(change.actor_id());
            let (signature, verdict) = match (covered.get(&h), device) {
                (_, None) => (
                    ChangeSignature([0; 64]),
                    Err(crate::identity::SignatureProblem::ActorNotADevice),
                ),
                (Some(by), Some(d)) => {
                    if *by != h {
                        attested.insert(h, *by);
                    }
                    (own[by], Ok(d))
                }
                (None, Some(_)) => (
                    ChangeSignature([0; 64]),
                    Err(crate::identity::SignatureProblem::NotCovered),
                ),
            };
            verdicts.push(verdict);
            signed.push(SignedChange { change, signature });
        }
        let total = signed.len();
        let (mut replica, receipt) =
            Replica::join_judged(network, key, signed, Some(verdicts), attested)?;
        let deferred = replica.deferred.take().unwrap_or_default();
        if deferred.len() + 1 == total && receipt.waiting == 0 && receipt.revoked.is_empty() {
            // Every change of the document stands: the judged document is the ledger (no
            // second application of its changes one by one).
            let mut ledger = Ledger::of_loaded(doc, replica.key.session_actor()?)?;
            ledger.adopt_rule_inputs(&mut replica.ledger);
            ledger.fold_views();
            replica.ledger = ledger;
        } else if !deferred.is_empty() {
            replica.ledger.apply_changes(deferred)?;
        }
        Ok((replica, receipt))
    }

    /// Take a missing part of the history from a peer: changes that this replica lacks, sent
    /// without a signature each, and attestations that cover them (docs/security.md,
    /// "Authorship by attestation", parts). Checked exactly as [`Replica::join_document`]
    /// checks a document: each attestation must name a change of the part with the same
    /// actor and seq and verify for this network; each change of the part must be covered by
    /// a valid attestation of its own device (an attested change of the part that has it in
    /// its causal past, walking dependencies within the part; the replica's own changes are
    /// never in the part's past of a change it lacks, so they cover nothing). A change that
    /// no attestation covers is refused as
    /// [`SignatureProblem::NotCovered`](crate::identity::SignatureProblem::NotCovered) and
    /// quarantined, never applied. Every covered change is then judged as a signed change on
    /// arrival ([`Replica::receive`]'s path). A change of `Receipt::applied` covered by
    /// another's attestation ([`Replica::attested_by`]) carries the attested change's
    /// signature: store it with its 32-byte row, never send it on its own.
    pub fn receive_part(
        &mut self,
        changes: Vec<Change>,
        attestations: &[Attestation],
    ) -> Result<Receipt> {
        self.receive_part_of(changes, attestations, None)
    }

    /// Take a missing part as a sync session received it (its `take_parts`):
    /// [`Replica::receive_part`] of its changes. For a catch-up by document, if every change
    /// the replica lacked stands once judged, the replica adopts the document it came in
    /// (with this replica's own changes the document lacks added to it) and folds its views
    /// once, instead of applying the changes one by one: the same ledger, at a fraction of
    /// the cost (docs/performance.md, "Catch-up by document").
    pub fn receive_received_part(&mut self, part: ReceivedPart) -> Result<Receipt> {
        self.receive_part_of(part.changes, &part.attestations, part.document)
    }

    fn receive_part_of(
        &mut self,
        changes: Vec<Change>,
        attestations: &[Attestation],
        document: Option<Box<automerge::Automerge>>,
    ) -> Result<Receipt> {
        let _span = tracing::debug_span!("receive_part", n = changes.len()).entered();
        let index: HashMap<ChangeHash, usize> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.hash(), i))
            .collect();
        let mut valid: HashMap<ChangeHash, ChangeSignature> = HashMap::new();
        for a in attestations {
            let Some(&i) = index.get(&a.hash) else {
                debug!(change = %a.hash, "an attestation of a change the part lacks");
                continue;
            };
            match a.check(&self.network, &changes[i]) {
                Ok(_) => {
                    valid.insert(a.hash, a.signature);
                }
                Err(problem) => warn!(change = %a.hash, ?problem, "an attestation is refused"),
            }
        }
        let graph: Vec<(ChangeHash, &[u8], &[ChangeHash])> = changes
            .iter()
            .map(|c| (c.hash(), c.actor_id().to_bytes(), c.deps()))
            .collect();
        let mut attested_changes: Vec<ChangeHash> = valid.keys().copied().collect();
        attested_changes.sort();
        let covered = coverage(&graph, attested_changes.into_iter());
        let mut verdicts = Vec::with_capacity(changes.len());
        let mut signed = Vec::with_capacity(changes.len());
        let mut attested = Vec::new();
        for change in changes {
            let h = change.hash();
            let (signature, verdict) =
                match (covered.get(&h), DeviceId::of_actor(change.actor_id())) {
                    (_, None) => (
                        ChangeSignature([0; 64]),
                        Err(crate::identity::SignatureProblem::ActorNotADevice),
                    ),
                    (Some(by), Some(d)) => {
                        if *by != h {
                            attested.push((h, *by));
                        }
                        (valid[by], Ok(d))
                    }
                    (None, Some(_)) => (
                        ChangeSignature([0; 64]),
                        Err(crate::identity::SignatureProblem::NotCovered),
                    ),
                };
            verdicts.push(verdict);
            signed.push(SignedChange { change, signature });
        }
        for (h, by) in &attested {
            self.attested.entry(*h).or_insert(*by);
        }
        let total = signed.len();
        let adopt = document.is_some() && self.deferred.is_none();
        if adopt {
            self.deferred = Some(Vec::new());
        }
        let receipt = self.receive_verified(signed, verdicts);
        let deferred = if adopt { self.deferred.take() } else { None };
        let receipt = match receipt {
            Ok(receipt) => receipt,
            Err(e) => {
                if let Some(d) = deferred.filter(|d| !d.is_empty()) {
                    // Keep memory whole: what was accepted is applied (a durable replica
                    // puts itself back to its stored state after an error).
                    if let Err(apply) = self.ledger.apply_changes(d) {
                        warn!(error = %apply, "accepted changes could not be applied");
                    }
                }
                return Err(e);
            }
        };
        if let Some(d) = deferred {
            let whole = d.len() == total
                && receipt.waiting == 0
                && receipt.refused.is_empty()
                && receipt.revoked.is_empty();
            match document {
                Some(doc) if whole => self.adopt_document(*doc, d)?,
                _ if !d.is_empty() => self.ledger.apply_changes(d)?,
                _ => {}
            }
        }
        // Keep the coverage only of what stands (accepted or waiting).
        for (h, _) in attested {
            if !self.membership.knows(&h) && !self.waiting.contains_key(&h) {
                self.attested.remove(&h);
            }
        }
        Ok(receipt)
    }

    /// Make `doc` (a catch-up document whose every change this replica lacked was just
    /// accepted: `accepted`, not yet applied) the ledger's document: this replica's own
    /// changes the document lacks are applied to it, the rule inputs are taken over and the
    /// views folded once. If the result is not exactly this replica plus `accepted` (it
    /// cannot be, but the document came from a peer), `accepted` is applied one by one
    /// instead.
    fn adopt_document(
        &mut self,
        mut doc: automerge::Automerge,
        accepted: Vec<Change>,
    ) -> Result<()> {
        use automerge::ReadDoc;
        let _span = tracing::debug_span!("adopt_document", accepted = accepted.len()).entered();
        let local = self.ledger.doc();
        let mut stack: Vec<ChangeHash> = local
            .get_heads()
            .into_iter()
            .filter(|h| doc.get_change_meta_by_hash(h).is_none())
            .collect();
        let mut seen = HashSet::new();
        let mut extra = Vec::new();
        while let Some(h) = stack.pop() {
            if !seen.insert(h) {
                continue;
            }
            if let Some(c) = local.get_change_by_hash(&h) {
                stack.extend(
                    c.deps()
                        .iter()
                        .filter(|d| doc.get_change_meta_by_hash(d).is_none())
                        .copied(),
                );
                extra.push(c);
            }
        }
        let mut expected: HashSet<ChangeHash> = local.get_heads().into_iter().collect();
        expected.extend(accepted.iter().map(|c| c.hash()));
        let failed = !extra.is_empty() && doc.apply_changes(extra).is_err();
        // Every change of the document that this replica lacked is in `accepted` (that is
        // how the session took them from it): then its heads are among this replica's heads
        // and `accepted`, and it holds this replica's heads.
        let consistent = !failed
            && doc.get_heads().iter().all(|h| expected.contains(h))
            && local
                .get_heads()
                .iter()
                .all(|h| doc.get_change_meta_by_hash(h).is_some());
        if !consistent {
            warn!("a catch-up document does not match what was accepted; applied change by change");
            return self.ledger.apply_changes(accepted);
        }
        let mut ledger = Ledger::of_loaded(doc, self.key.session_actor()?)?;
        ledger.adopt_rule_inputs(&mut self.ledger);
        ledger.fold_views();
        self.ledger = ledger;
        Ok(())
    }

    /// [`Replica::join`], with the signature verdicts already made (`verdicts`, one per
    /// change, from [`Replica::join_document`]'s coverage) or to make (`None`). `attested`:
    /// the changes covered by another change's attestation.
    fn join_judged(
        network: NetworkId,
        key: DeviceKey,
        changes: Vec<SignedChange>,
        verdicts: Option<Vec<std::result::Result<DeviceId, crate::identity::SignatureProblem>>>,
        attested: HashMap<ChangeHash, ChangeHash>,
    ) -> Result<(Replica, Receipt)> {
        let genesis_hash = network.genesis();
        let at = changes
            .iter()
            .position(|c| c.hash() == genesis_hash)
            .ok_or_else(|| Error::WrongNetwork {
                network: network.to_string(),
            })?;
        let genesis = changes[at].clone();
        let verdict = match &verdicts {
            Some(v) => vec![v[at]],
            None => verify_changes(&network, std::slice::from_ref(&genesis)),
        };
        let mut membership = Membership::new(network);
        let head = header(&genesis.change).ok_or_else(|| Error::WrongNetwork {
            network: network.to_string(),
        })?;
        let mut admission = Admission::default();
        match (verdict.first(), membership.judge(&head)) {
            (Some(Ok(_)), Ok(record)) => {
                let kind = record_kind(&record);
                let decoded = genesis.change.decode();
                let past = Past {
                    author: None,
                    has_record: &|_| false,
                    has_op: &|_, _| false,
                    rules: None,
                };
                if let Err(reason) =
                    admission.judge(&decoded, genesis.change.raw_bytes().len(), 0, kind, &past)
                {
                    return Err(Error::NotALedger(format!(
                        "the network's genesis is refused: {reason}"
                    )));
                }
                membership.admit(&head, record);
                let m = &membership;
                let agent = || m.member_at(&head.hash, &head.author).map(|m| m.agent);
                admission.admit(&decoded, kind, 0, &agent);
            }
            _ => {
                return Err(Error::WrongNetwork {
                    network: network.to_string(),
                })
            }
        }
        let ledger = Ledger::load(genesis.change.raw_bytes(), key.session_actor()?)?;
        let mut replica = Replica {
            ledger,
            key,
            network,
            membership,
            signatures: HashMap::new(),
            attested: HashMap::new(),
            deferred: None,
            quarantine: BTreeMap::new(),
            waiting: HashMap::new(),
            admission,
            seqs: HashMap::from([(
                (genesis.change.actor_id().clone(), genesis.change.seq()),
                genesis_hash,
            )]),
            tips: DeviceId::of_actor(genesis.change.actor_id())
                .map(|d| (d, Tip::of(&genesis.change)))
                .into_iter()
                .collect(),
            cut_off: HashMap::new(),
            cut_offs: BTreeMap::new(),
            proof_kept: HashSet::new(),
            removals: Vec::new(),
            rules: RuleIndex::default(),
            limits: Limits::default(),
        };
        if !attested.contains_key(&genesis_hash) {
            replica.signatures.insert(genesis_hash, genesis.signature);
        }
        replica.attested = attested;
        let mut receipt = match verdicts {
            None => replica.receive(changes)?,
            Some(verdicts) => {
                replica.deferred = Some(Vec::new());
                replica.receive_verified(changes, verdicts)?
            }
        };
        replica.attested.retain(|h, _| replica.membership.knows(h));
        receipt.applied.insert(0, genesis);
        receipt.duplicates = receipt.duplicates.saturating_sub(1);
        Ok((replica, receipt))
    }

    /// Open a replica from stored, previously accepted state: the ledger, the signatures of
    /// its changes, and the quarantine. Rebuilds the membership index from the changes'
    /// headers (no signature is verified again: the store only holds accepted changes).
    pub fn open(
        ledger: Ledger,
        key: DeviceKey,
        network: NetworkId,
        signatures: HashMap<ChangeHash, ChangeSignature>,
        quarantine: Vec<Quarantined>,
    ) -> Result<Replica> {
        Replica::open_with(ledger, key, network, signatures, quarantine, false)
    }

    /// [`Replica::open`] of a saved ledger (`Ledger::save`'s bytes): the document is loaded
    /// and its views folded once, with the network's rules (cheaper than
    /// `Replica::open(Ledger::load(..)?, ..)`, which folds the views before the replica knows
    /// its rules and again after, for a ledger that has a rule set).
    pub fn open_saved(
        saved: &[u8],
        key: DeviceKey,
        network: NetworkId,
        signatures: HashMap<ChangeHash, ChangeSignature>,
        quarantine: Vec<Quarantined>,
    ) -> Result<Replica> {
        let (ledger, _, fold) =
            Ledger::load_with_views_deferred(saved, key.session_actor()?, None)?;
        Replica::open_with(ledger, key, network, signatures, quarantine, fold)
    }

    /// [`Replica::open`] of a ledger whose views are folded (`fold` false) or not folded yet
    /// (`Ledger::load_with_views_deferred`): then they are folded once, after the rule index
    /// is rebuilt, so that every event is folded with the rules it is judged by (folding
    /// first and again with the rules cost a second fold of every resource).
    pub(crate) fn open_with(
        ledger: Ledger,
        key: DeviceKey,
        network: NetworkId,
        signatures: HashMap<ChangeHash, ChangeSignature>,
        quarantine: Vec<Quarantined>,
        fold: bool,
    ) -> Result<Replica> {
        let mut membership = Membership::new(network);
        let metas = ledger.doc().get_changes_meta(&[]);
        let mut queue: VecDeque<usize> = (0..metas.len()).collect();
        let mut stalled = 0;
        while let Some(i) = queue.pop_front() {
            let m = &metas[i];
            let Some(author) = DeviceId::of_actor(&m.actor) else {
                return Err(Error::WrongNetwork {
                    network: network.to_string(),
                });
            };
            let record = match MembershipRecord::from_message(m.message.as_deref()) {
                Some(Ok(r)) => Some(r),
                _ => None,
            };
            let h = Header {
                hash: m.hash,
                deps: &m.deps,
                author,
                message: m.message.as_deref(),
            };
            if membership.admit(&h, record) {
                stalled = 0;
            } else {
                queue.push_back(i);
                stalled += 1;
                if stalled > queue.len() {
                    return Err(Error::NotALedger(
                        "the stored changes do not form a causal history".into(),
                    ));
                }
            }
        }
        if !membership.knows(&network.genesis()) {
            return Err(Error::WrongNetwork {
                network: network.to_string(),
            });
        }
        let mut admission = Admission::default();
        for (index, hash, record) in membership.records() {
            let kind = record_kind(&Some(record.clone()));
            if matches!(kind, RecordKind::Genesis(_) | RecordKind::Migrate) {
                if let Some(change) = automerge::ReadDoc::get_change_by_hash(ledger.doc(), hash) {
                    admission.admit(&change.decode(), kind, index, &|| None);
                }
            }
        }
        // The version-1 objects, for judging changes made on a version-1 past.
        admission.index_v1_objects(ledger.v1_objects());
        // Who owns each object: the agent of the device that made each of its creating ops
        // at the change that holds it (as `Judge::admit` indexes them on arrival).
        let mut by_actor: HashMap<&ActorId, Vec<(u64, ChangeHash)>> = HashMap::new();
        for m in &metas {
            by_actor
                .entry(m.actor.as_ref())
                .or_default()
                .push((m.max_op, m.hash));
        }
        for list in by_actor.values_mut() {
            list.sort_unstable();
        }
        let creations = ledger
            .object_creations()
            .into_iter()
            .filter_map(|(kind, id, (counter, actor))| {
                let list = by_actor.get(&actor)?;
                let at = list.partition_point(|(max, _)| *max < counter);
                let (_, hash) = list.get(at)?;
                let agent = membership
                    .member_at(hash, &DeviceId::of_actor(&actor)?)?
                    .agent;
                Some((
                    kind,
                    id,
                    Creation {
                        counter,
                        actor,
                        agent,
                    },
                ))
            })
            .collect::<Vec<_>>();
        admission.index_creations_found(creations);
        let removals = membership
            .records()
            .filter_map(|(i, h, r)| match r {
                MembershipRecord::Remove { device } => Some((*device, i, *h)),
                _ => None,
            })
            .collect();
        let seqs = metas
            .iter()
            .map(|m| ((m.actor.clone().into_owned(), m.seq), m.hash))
            .collect();
        let mut tips: HashMap<DeviceId, Tip> = HashMap::new();
        for m in &metas {
            let Some(device) = DeviceId::of_actor(&m.actor) else {
                continue;
            };
            if tips.get(&device).is_none_or(|t| t.max_op < m.max_op) {
                let tip = Tip {
                    hash: m.hash,
                    actor: m.actor.clone().into_owned(),
                    max_op: m.max_op,
                };
                tips.insert(device, tip);
            }
        }
        // Devices cut off: their changes quarantined for equivocation or a fork say so.
        let cut_off: HashMap<DeviceId, Rejection> = quarantine
            .iter()
            .filter_map(|q| match &q.reason {
                Rejection::Equivocation { device, .. } | Rejection::Forked { device, .. } => {
                    Some((*device, q.reason.clone()))
                }
                _ => None,
            })
            .collect();
        // A forged copy quarantined before its genuine change was accepted is no refusal.
        let quarantine = quarantine
            .into_iter()
            .filter(|q| !membership.knows(&q.change.hash()))
            .map(|q| (q.change.hash(), q))
            .collect();
        let mut replica = Replica {
            ledger,
            key,
            network,
            membership,
            signatures,
            attested: HashMap::new(),
            deferred: None,
            quarantine,
            waiting: HashMap::new(),
            admission,
            seqs,
            tips,
            cut_off,
            cut_offs: BTreeMap::new(),
            proof_kept: HashSet::new(),
            removals,
            rules: RuleIndex::default(),
            limits: Limits::default(),
        };
        replica.cut_offs_from_quarantine();
        replica.reindex_rules();
        if fold {
            replica.ledger.fold_views();
        }
        Ok(replica)
    }

    /// The proofs of the cut-offs that the quarantine's `Equivocation` and `Forked` rows
    /// name (a store of version 3 kept no others; a store of version 4 adds its own with
    /// [`Replica::restore_cut_offs`]). The quarantine's order decides which pair is named.
    fn cut_offs_from_quarantine(&mut self) {
        let mut found = BTreeMap::new();
        for q in self.quarantine.values() {
            let (Rejection::Equivocation { device, other } | Rejection::Forked { device, other }) =
                &q.reason
            else {
                continue;
            };
            if found.contains_key(device) {
                continue;
            }
            let Ok(other) = other.parse::<ChangeHash>() else {
                continue;
            };
            let this = q.change.hash();
            let mut twins = [this, other];
            twins.sort();
            let mut changes = vec![q.change.clone()];
            changes.extend(
                self.quarantine
                    .get(&other)
                    .map(|t| t.change.clone())
                    .or_else(|| self.signed(&other)),
            );
            found.insert(
                *device,
                CutOff {
                    device: *device,
                    reason: q.reason.clone(),
                    twins,
                    changes,
                },
            );
        }
        for (device, c) in found {
            self.cut_off
                .entry(device)
                .or_insert_with(|| c.reason.clone());
            self.cut_offs.entry(device).or_insert(c);
        }
    }

    /// Add proofs of cut-offs kept apart from the quarantine (a store's own table): each
    /// device is cut off with the stored reason, whatever the quarantine still holds.
    pub(crate) fn restore_cut_offs(&mut self, stored: Vec<CutOff>) {
        for c in stored {
            self.cut_off.insert(c.device, c.reason.clone());
            self.cut_offs.insert(c.device, c);
        }
    }

    /// This replica as it was at `heads` (which its ledger holds), rebuilt from memory alone:
    /// the document forked at `heads`, the signatures and coverage of the changes dropped by
    /// the fork forgotten, the quarantine without `unstored` (refusals made since), the
    /// cut-offs for which `stored_cut_off` holds, nothing waiting; the membership, admission
    /// and rule indexes and the views rebuilt as [`Replica::open`] rebuilds them. For a
    /// durable replica whose commit failed and whose store cannot be read back
    /// (`DurableReplica`): memory returns to the last stored state without the disk. Costs
    /// about what opening the network from its store costs (the fork reads the document's
    /// history, the views are folded once).
    pub(crate) fn rolled_back(
        &self,
        heads: &[ChangeHash],
        unstored: &HashSet<ChangeHash>,
        stored_cut_off: impl Fn(&DeviceId) -> bool,
    ) -> Result<Replica> {
        let doc = match self.ledger.doc().fork_at(heads) {
            Ok(doc) => doc,
            // The heads name changes revoked since (a judgment from scratch rebuilt the
            // ledger without them): they are in the quarantine, among `unstored`.
            Err(_) => {
                let mut doc = self.ledger.doc().clone();
                doc.apply_changes(
                    self.quarantine
                        .values()
                        .filter(|q| unstored.contains(&q.change.hash()))
                        .map(|q| q.change.change.clone())
                        .collect::<Vec<_>>(),
                )?;
                doc.fork_at(heads)?
            }
        };
        let ledger = Ledger::of_loaded(doc, self.key.session_actor()?)?;
        let kept: HashSet<ChangeHash> = ledger.change_hashes().into_iter().collect();
        let dropped: HashSet<ChangeHash> = self
            .ledger
            .change_hashes()
            .into_iter()
            .filter(|h| !kept.contains(h))
            .collect();
        let mut signatures = self.signatures.clone();
        signatures.retain(|h, _| !dropped.contains(h));
        let quarantine = self
            .quarantine
            .values()
            .filter(|q| !unstored.contains(&q.change.hash()))
            .cloned()
            .collect();
        let mut replica = Replica::open_with(
            ledger,
            self.key.clone(),
            self.network,
            signatures,
            quarantine,
            true,
        )?;
        let mut attested = self.attested.clone();
        attested.retain(|h, _| !dropped.contains(h));
        replica.restore_attested(attested);
        replica.restore_cut_offs(
            self.cut_offs
                .values()
                .filter(|c| stored_cut_off(&c.device))
                .cloned()
                .collect(),
        );
        replica.set_limits(self.limits);
        Ok(replica)
    }

    /// Every device cut off for equivocation or a fork, with its proof, by device id.
    pub fn cut_offs(&self) -> impl Iterator<Item = &CutOff> {
        self.cut_offs.values()
    }

    /// Rebuild the rule index from the stored (accepted) changes, if the ledger has a rule
    /// set: each change is read, in causal order, for the rule set it publishes and the
    /// events it records; the views then judge those events.
    fn reindex_rules(&mut self) {
        let id = Id::from(crate::rules::RULE_SET_ID);
        if !self.ledger.exists(crate::vf::ObjectKind::RuleSet, &id) {
            // No rules: stored views taken on open are judged against none.
            self.ledger.set_rule_inputs(Vec::new());
            return;
        }
        let mut rules = RuleIndex::default();
        for change in self.ledger.doc().get_changes(&[]) {
            let Some(h) = header(&change) else { continue };
            let author = self.membership.author_in_past(&h);
            rules.admit(&change.decode(), h.hash, h.deps, author.as_ref());
        }
        let pending = rules.take_pending();
        self.rules = rules;
        self.ledger.set_rule_inputs(pending);
    }

    /// Objects that more than one agent owns: devices of different agents created the same
    /// id concurrently (offline with a chosen id, or a member backdating a creation to claim
    /// a share of another's object; docs/security.md, "Who may edit an object"). Each is
    /// (kind, id, owning agents), sorted; the same on every replica with the same changes.
    pub fn contested_objects(&self) -> Vec<(crate::vf::ObjectKind, Id, Vec<Id>)> {
        self.admission.contested()
    }

    /// The ledger (read API).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Set the bounds on waiting and quarantined changes.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The bounds in force (see [`Replica::set_limits`]).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The network id.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// This device's id.
    pub fn device(&self) -> DeviceId {
        self.key.id()
    }

    /// This device's key (for the transport's endpoint identity).
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    /// The members now.
    pub fn members(&self) -> Vec<Member> {
        self.membership.members_at(&self.ledger.heads())
    }

    /// A device's membership now, if it is a member.
    pub fn member(&self, device: &DeviceId) -> Option<Member> {
        self.members().into_iter().find(|m| &m.device == device)
    }

    /// The role of this device now.
    pub fn role(&self) -> Option<Role> {
        self.member(&self.key.id()).map(|m| m.role)
    }

    /// The agent this device acts for now, if it is a member.
    pub fn agent(&self) -> Option<Id> {
        self.member(&self.key.id()).map(|m| m.agent)
    }

    /// Whether this device may record events between other agents now (as a change it
    /// writes now is judged: its membership and the rule set in force at this replica's
    /// heads): admins may (a paper receipt, an import), and members the network's rule set
    /// grants it to (`recordForOthers`, docs/rules.md); other members record only events
    /// their own agent takes part in.
    pub fn records_for_others(&self) -> bool {
        let rules = self.rules.in_force_at(&self.ledger.heads());
        self.member(&self.key.id())
            .is_some_and(|m| crate::admission::records_for_others(&m, rules.map(|r| r.rule_set())))
    }

    /// Whether this device may record `event` as far as agent binding goes (the rule
    /// admission applies to every event, docs/security.md): `Error::Refused` with
    /// `Rejection::SpeaksForOthers` if its agent is neither the provider nor the receiver
    /// and it does not record for others ([`Replica::records_for_others`]: an admin, or a
    /// holder of the rule set's grant); `Error::NotAllowed` if it may not write at all (an observer,
    /// not a member). Lets a user interface say so before anything is written; a write
    /// checks it again.
    pub fn may_record(&self, event: &EconomicEvent) -> Result<()> {
        self.require(Role::Member, "recording an event", "member")?;
        let member = self
            .member(&self.key.id())
            .ok_or_else(|| Error::NotAllowed {
                device: self.key.id().to_string(),
                role: "not a member".into(),
                action: "recording an event",
                needed: "member",
            })?;
        crate::admission::speaks_for(event, &member, self.records_for_others())
            .map_err(|reason| Error::Refused { reason })
    }

    /// The refused changes (for admins to inspect).
    pub fn quarantine(&self) -> impl Iterator<Item = &Quarantined> {
        self.quarantine.values()
    }

    /// The proofs of equivocation this replica holds: for each quarantined change refused as
    /// an [`Rejection::Equivocation`], that change and its twin (the other change with the
    /// same actor and sequence number), in a deterministic order. A node sends them to every
    /// peer when a connection opens, so that a peer that accepted one twin before it could
    /// see the other cuts the device off too, however late it connects (docs/security.md,
    /// "Equivocation").
    pub fn equivocation_evidence(&self) -> Vec<SignedChange> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for q in self.quarantine.values() {
            let (Rejection::Equivocation { other, .. } | Rejection::Forked { other, .. }) =
                &q.reason
            else {
                continue;
            };
            let twin = other.parse::<ChangeHash>().ok().and_then(|o| {
                self.quarantine
                    .get(&o)
                    .map(|t| t.change.clone())
                    .or_else(|| self.signed(&o))
            });
            for c in std::iter::once(q.change.clone()).chain(twin) {
                if seen.insert(c.hash()) {
                    out.push(c);
                }
            }
        }
        // The proofs kept apart from the quarantine (whose rows may be gone).
        for c in self.cut_offs.values().flat_map(|c| &c.changes) {
            if seen.insert(c.hash()) {
                out.push(c.clone());
            }
        }
        out
    }

    /// Whether a change was refused and is quarantined.
    pub fn is_quarantined(&self, hash: &ChangeHash) -> bool {
        self.quarantine.contains_key(hash)
    }

    /// The signature of a stored change.
    pub fn signature(&self, hash: &ChangeHash) -> Option<ChangeSignature> {
        self.signatures.get(hash).copied()
    }

    /// Every accepted change not in the past of `heads`, with its signature, in causal order:
    /// what a peer at `heads` is missing. Quarantined changes are never among them.
    pub fn signed_changes_since(&self, heads: &[ChangeHash]) -> Vec<SignedChange> {
        self.ledger
            .changes_since(heads)
            .into_iter()
            .filter_map(|change| {
                let signature = self.signatures.get(&change.hash()).copied();
                if signature.is_none() {
                    warn!(change = %change.hash(), "a stored change has no signature; not sent");
                }
                Some(SignedChange {
                    change,
                    signature: signature?,
                })
            })
            .collect()
    }

    /// Every accepted change, in causal order, each with its own signature or, for a change
    /// covered by an attestation ([`Replica::attested_by`]), the attesting change's signature
    /// (not a signature of this change: for the judgment from scratch, which verifies none).
    fn accepted_changes(&self) -> Vec<SignedChange> {
        self.ledger
            .changes_since(&[])
            .into_iter()
            .filter_map(|change| {
                let h = change.hash();
                let by = self.attested.get(&h).unwrap_or(&h);
                let signature = self.signatures.get(by).copied();
                if signature.is_none() {
                    warn!(change = %h, "a stored change has no signature nor attestation");
                }
                Some(SignedChange {
                    change,
                    signature: signature?,
                })
            })
            .collect()
    }

    /// The attested change whose attestation covers `hash`, if `hash` came in a document and
    /// has no signature of its own (docs/security.md, "Authorship by attestation").
    pub fn attested_by(&self, hash: &ChangeHash) -> Option<ChangeHash> {
        self.attested.get(hash).copied()
    }

    /// Restore the coverage of changes stored without a signature of their own (a store's
    /// 32-byte signature rows, docs/storage.md).
    pub(crate) fn restore_attested(&mut self, attested: HashMap<ChangeHash, ChangeHash>) {
        self.attested = attested;
    }

    /// What a peer with no replica needs to start one from this replica's document: the
    /// saved document and, for every actor (a device's session) with accepted changes, the
    /// attestation of its latest change, which has every earlier change of the actor in its
    /// causal past (or, for a change covered itself, the attestation covering it). `None` if
    /// some accepted change would not be covered (then the peer gets the changes one by one,
    /// as before).
    pub fn bootstrap_document(&self) -> Option<(Vec<u8>, Vec<Attestation>)> {
        let doc = self.ledger.doc();
        let metas = doc.get_changes_meta(&[]);
        // The latest change of every actor (a device writes with one actor per session).
        let mut latest: HashMap<&[u8], (u64, ChangeHash)> = HashMap::new();
        for m in &metas {
            let e = latest.entry(m.actor.to_bytes()).or_insert((m.seq, m.hash));
            if e.0 < m.seq {
                *e = (m.seq, m.hash);
            }
        }
        let mut attestations: Vec<Attestation> = Vec::new();
        let mut seen = HashSet::new();
        for (_, tip) in latest.into_values() {
            let by = self.attested.get(&tip).copied().unwrap_or(tip);
            if !seen.insert(by) {
                continue;
            }
            let signature = self.signatures.get(&by).copied()?;
            let meta = doc.get_change_meta_by_hash(&by)?;
            attestations.push(Attestation {
                actor: meta.actor.into_owned(),
                seq: meta.seq,
                hash: by,
                signature,
            });
        }
        attestations.sort_by_key(|a| a.hash);
        let graph: Vec<(ChangeHash, &[u8], &[ChangeHash])> = metas
            .iter()
            .map(|m| (m.hash, m.actor.to_bytes(), m.deps.as_slice()))
            .collect();
        let covered = coverage(&graph, attestations.iter().map(|a| a.hash));
        if covered.len() != metas.len() {
            warn!(
                uncovered = metas.len() - covered.len(),
                "the attestations do not cover every change; the history goes change by change"
            );
            return None;
        }
        Some((self.ledger.save(), attestations))
    }

    /// Who recorded an event, and for which Agent.
    pub fn provenance(&self, event: &Id) -> Option<Provenance> {
        let change = self.ledger.event_change(event)?;
        let actor = self
            .ledger
            .doc()
            .get_change_meta_by_hash(&change)
            .map(|m| m.actor.into_owned())?;
        let device = DeviceId::of_actor(&actor)?;
        Some(Provenance {
            event: event.clone(),
            change: change.to_string(),
            device,
            member: self.membership.member_at(&change, &device),
        })
    }

    /// The network's rule set in force now (at this replica's heads): what a change made now
    /// is judged by. `None`: the network has no rules.
    pub fn rules(&self) -> Option<RuleSet> {
        self.rules
            .in_force_at(&self.ledger.heads())
            .map(|r| r.rule_set().clone())
    }

    /// Every published version of the rule set, in the order this replica accepted them,
    /// with the change that published it (hex).
    pub fn rule_versions(&self) -> Vec<(String, RuleSet)> {
        self.rules
            .versions()
            .map(|v| (v.change.to_string(), v.rules.rule_set().clone()))
            .collect()
    }

    /// Publish `rules` as the network's rule set (admins only): compiled first (a malformed
    /// set is refused with [`Error::InvalidRules`], nothing written), then written as the
    /// next version (one above the version in force, whatever `rules.version` says). Returns
    /// the changes to store and send.
    pub fn set_rules(&mut self, rules: RuleSet) -> Result<Vec<SignedChange>> {
        self.require(Role::Admin, "changing the network's rules", "admin")?;
        let mut rules = rules;
        rules.id = Id::from(crate::rules::RULE_SET_ID);
        rules.version = self.rules().map_or(1, |r| r.version + 1);
        // Always the current format (a set read from an older ledger is format 1).
        rules.format = crate::rules::RULE_SET_FORMAT;
        rules.compile()?;
        let id = rules.id.clone();
        let exists = self.ledger.get::<RuleSet>(&id).is_some();
        let (_, signed) = self.write(move |l| {
            if exists {
                l.update::<RuleSet>(&id, move |r| *r = rules)
            } else {
                l.create(rules).map(|_| ())
            }
        })?;
        Ok(signed)
    }

    /// Try a draft rule set against an event before publishing it: the findings of every
    /// rule (refuse and flag) for `event` as if this device recorded it now, with the event's
    /// resource as this replica holds it. Nothing is written.
    pub fn test_rules(
        &self,
        draft: &RuleSet,
        event: &crate::vf::EconomicEvent,
    ) -> Result<Vec<Finding>> {
        let compiled = draft.compile()?;
        let me = self.member(&self.key.id());
        let recorder = crate::rules::Recorder {
            device: self.key.id().to_string(),
            agent: me.as_ref().map(|m| m.agent.clone()).unwrap_or_default(),
            role: me.map_or(Role::Observer, |m| m.role),
        };
        let seen = event
            .resource_inventoried_as
            .as_ref()
            .or(event.to_resource_inventoried_as.as_ref())
            .and_then(|r| self.ledger.resource_seen(r));
        // As admission (refuse rules, no resource) and the views (flag rules) judge it.
        let mut found = compiled.evaluate(event, &recorder, None, Which::Refuse);
        found.extend(compiled.evaluate(event, &recorder, seen.as_ref(), Which::Flag));
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// The changes quarantined by a refuse rule, with the rejection.
    pub fn rule_refusals(&self) -> Vec<&Quarantined> {
        self.quarantine
            .values()
            .filter(|q| matches!(q.reason, Rejection::RuleRefused { .. }))
            .collect()
    }

    /// Run a mutation of the ledger as this device and sign the changes it makes. Refused
    /// with [`Error::NotAllowed`] before anything is written if this device may not write.
    /// Returns the mutation's result and the new signed changes (to store and to send).
    pub fn write<R>(
        &mut self,
        mutation: impl FnOnce(&mut Ledger) -> Result<R>,
    ) -> Result<(R, Vec<SignedChange>)> {
        self.require(Role::Member, "writing to the ledger", "member or admin")?;
        let before = self.ledger.heads();
        let result = mutation(&mut self.ledger);
        // All or nothing: a mutation that fails part-way, or makes a change admission
        // refuses, leaves the replica as it was (nothing signed, kept or sent).
        match result {
            Ok(r) => self.adopt_or_undo(&before).map(|signed| (r, signed)),
            Err(e) => {
                if self.ledger.heads() != before {
                    self.ledger.rewind(&before, self.key.session_actor()?)?;
                }
                Err(e)
            }
        }
    }

    /// Sign and index the changes made locally since `before`, all or nothing: if admission
    /// refuses one of them, the replica is put back as it was at `before` (nothing signed,
    /// kept or sent).
    fn adopt_or_undo(&mut self, before: &[ChangeHash]) -> Result<Vec<SignedChange>> {
        let mut indexed = false;
        let outcome = self.adopt_local(before, &mut indexed);
        if outcome.is_err() && indexed {
            // Admission took the write's first changes before it refused a later one: its
            // indexes (tips, seqs, ownership, membership), the signatures and the rule inputs
            // know them. Rebuilt from the document as it was (a rare path: it costs about an
            // open), so the next change is judged as if the refused write never happened.
            warn!("a write refused part-way: the replica is rebuilt without it");
            *self = self.rolled_back(before, &HashSet::new(), |_| true)?;
        } else if outcome.is_err() && self.ledger.heads() != before {
            self.ledger.rewind(before, self.key.session_actor()?)?;
        }
        outcome
    }

    fn require(&self, needed: Role, action: &'static str, needed_name: &'static str) -> Result<()> {
        let role = self.role();
        if role.is_some_and(|r| r >= needed) {
            Ok(())
        } else {
            Err(Error::NotAllowed {
                device: self.key.id().to_string(),
                role: role.map_or("not a member".to_string(), |r| r.to_string()),
                action,
                needed: needed_name,
            })
        }
    }

    /// Sign and index the changes made locally since `before`; `indexed` is set once
    /// admission has taken one of them (so a later refusal must undo more than the document).
    fn adopt_local(
        &mut self,
        before: &[ChangeHash],
        indexed: &mut bool,
    ) -> Result<Vec<SignedChange>> {
        let after = self.ledger.heads();
        if after == before {
            return Ok(Vec::new());
        }
        let changes = match self.ledger.last_local_change() {
            Some(last) if after == [last.hash()] && last.deps() == before => vec![last],
            _ => self.ledger.changes_since(before),
        };
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            let hash = change.hash();
            let h =
                header(&change).ok_or_else(|| IdentityError::InvalidKey("session actor".into()))?;
            let record = self.membership.judge(&h).map_err(|r| Error::NotAllowed {
                device: self.key.id().to_string(),
                role: r.to_string(),
                action: "writing this change",
                needed: "a role that allows it",
            })?;
            // No honest replica makes a change that its peers would refuse.
            if let Err(reason) = self.admit_judged(&change, &h, record, &HashMap::new()) {
                // The write is undone: so are the rule inputs of its events.
                drop(self.rules.take_pending());
                warn!(change = %hash, %reason, "this device made a change admission refuses");
                return Err(Error::Refused { reason });
            }
            *indexed = true;
            let signature = self.key.sign_change(&self.network, &hash);
            self.signatures.insert(hash, signature);
            out.push(SignedChange { change, signature });
        }
        let pending = self.rules.take_pending();
        self.ledger.set_rule_inputs(pending);
        Ok(out)
    }

    /// Judge a change whose membership verdict is `record` (already accepted by membership)
    /// by what it does, and index it if admitted. `batch` holds the changes accepted in the
    /// current batch but not applied yet.
    fn admit_judged(
        &mut self,
        change: &Change,
        head: &Header<'_>,
        record: Option<MembershipRecord>,
        batch: &HashMap<ChangeHash, ChangeMeta>,
    ) -> std::result::Result<(), Rejection> {
        let doc = self.ledger.doc();
        let metas = |d: &ChangeHash| -> Option<ChangeMeta> {
            match batch.get(d) {
                Some(m) => Some(m.clone()),
                None => doc.get_change_meta_by_hash(d).map(|m| ChangeMeta {
                    actor: m.actor.into_owned(),
                    max_op: m.max_op,
                    deps: m.deps,
                }),
            }
        };
        let dep_max = head
            .deps
            .iter()
            .map(|d| {
                batch
                    .get(d)
                    .map(|m| m.max_op)
                    .unwrap_or_else(|| doc.get_change_meta_by_hash(d).map_or(0, |m| m.max_op))
            })
            .max()
            .unwrap_or(0);
        let mut judge = Judge {
            membership: &mut self.membership,
            admission: &mut self.admission,
            seqs: &mut self.seqs,
            tips: &mut self.tips,
            cut_off: Some(&self.cut_off),
            removals: Some(&mut self.removals),
            check_seqs: true,
            metas: &metas,
            rules: &mut self.rules,
        };
        judge.admit(change, head, record, dep_max)
    }

    /// Migrate a schema-version-1 ledger to version 2 (admins only): one signed change, the
    /// migration `v1-to-v2-buckets` (docs/data-model.md). Nothing happens on a version-2
    /// ledger. Returns the changes to store and send.
    pub fn migrate(&mut self) -> Result<Vec<SignedChange>> {
        if !self.ledger.needs_migration() {
            return Ok(Vec::new());
        }
        self.require(Role::Admin, "migrating the ledger", "admin")?;
        let before = self.ledger.heads();
        let record = MembershipRecord::Migrate {
            schema: crate::SCHEMA_VERSION,
        };
        self.ledger.migrate_to_v2(Some(record.to_message()))?;
        self.adopt_or_undo(&before)
    }

    fn commit_record(&mut self, record: MembershipRecord) -> Result<Vec<SignedChange>> {
        self.require(Role::Admin, "changing membership", "admin")?;
        let before = self.ledger.heads();
        self.ledger.commit_record(record.to_message())?;
        self.adopt_or_undo(&before)
    }

    /// Admit `device` with `role`, acting for `agent` (which must exist). Admins only.
    pub fn add_member(
        &mut self,
        device: DeviceId,
        role: Role,
        agent: Id,
    ) -> Result<Vec<SignedChange>> {
        self.require_agent(&agent)?;
        self.commit_record(MembershipRecord::Add {
            device,
            role,
            agent,
            invite: None,
        })
    }

    /// Remove `device`: its later changes are refused everywhere. Admins only.
    pub fn remove_member(&mut self, device: DeviceId) -> Result<Vec<SignedChange>> {
        self.commit_record(MembershipRecord::Remove { device })
    }

    fn require_agent(&self, agent: &Id) -> Result<()> {
        if self.ledger.get::<Agent>(agent).is_some() {
            Ok(())
        } else {
            Err(Error::NotFound {
                kind: crate::vf::ObjectKind::Agent,
                id: agent.clone(),
            })
        }
    }

    /// Issue an invite for one device. Admins only. `expires_at` is unix time in seconds.
    pub fn invite_device(
        &self,
        device: DeviceId,
        role: Role,
        agent: Option<Id>,
        expires_at: u64,
    ) -> Result<Invite> {
        self.require(Role::Admin, "inviting", "admin")?;
        Invite::issue(
            &self.key,
            self.network,
            role,
            agent,
            InviteAudience::Device { device },
            expires_at,
        )
        .map_err(Error::from)
    }

    /// Issue a one-time bearer invite: whoever presents the returned secret (shown once) with
    /// it may join. Admins only.
    pub fn invite_bearer(
        &self,
        role: Role,
        agent: Option<Id>,
        expires_at: u64,
    ) -> Result<(Invite, BearerSecret)> {
        self.require(Role::Admin, "inviting", "admin")?;
        let (audience, secret) = Invite::bearer_audience()?;
        let invite = Invite::issue(&self.key, self.network, role, agent, audience, expires_at)?;
        Ok((invite, secret))
    }

    /// Redeem an invite for `redeemer` on this (admin's) replica: checks the invite (signature,
    /// network, expiry by this device's clock `now`, audience and secret, one use, issuer still
    /// an admin) and records the new member. The newcomer acts for the invite's agent, or else
    /// for `new_agent`, which is created in the ledger.
    pub fn redeem_invite(
        &mut self,
        invite: &Invite,
        redeemer: DeviceId,
        secret: Option<&BearerSecret>,
        new_agent: Option<Agent>,
        now: u64,
    ) -> Result<Vec<SignedChange>> {
        self.require(Role::Admin, "redeeming invites", "admin")?;
        invite.check(&self.network, &redeemer, secret, now)?;
        let heads = self.ledger.heads();
        if self
            .membership
            .redeemed_invites(&heads)
            .contains_key(&invite.nonce)
        {
            return Err(InviteError::AlreadyRedeemed {
                nonce: invite.nonce.clone(),
            }
            .into());
        }
        if self.member(&invite.issuer).map(|m| m.role) != Some(Role::Admin) {
            return Err(InviteError::IssuerNotAdmin.into());
        }
        let mut signed = Vec::new();
        let agent = match (&invite.agent, new_agent) {
            (Some(a), _) => {
                self.require_agent(a)?;
                a.clone()
            }
            (None, Some(agent)) => {
                let (id, more) = self.write(|l| l.create(agent))?;
                signed.extend(more);
                id
            }
            (None, None) => {
                return Err(InviteError::Malformed(
                    "the invite names no agent, so the newcomer must describe one".into(),
                )
                .into())
            }
        };
        signed.extend(self.commit_record(MembershipRecord::Add {
            device: redeemer,
            role: invite.role,
            agent,
            invite: Some(invite.nonce.clone()),
        })?);
        Ok(signed)
    }

    /// Take changes from a peer: verify signatures and authorship (batched, on every core),
    /// check membership in each change's causal past, apply the accepted ones in one go, and
    /// quarantine the refused. Changes whose dependencies have not arrived wait for them.
    /// Duplicates and replays of known changes are ignored.
    pub fn receive(&mut self, changes: Vec<SignedChange>) -> Result<Receipt> {
        self.receive_in_chunks(changes, self.limits.pipeline_chunk.max(1))
    }

    /// [`Replica::receive`] of changes whose authorship was established already (`verdicts`,
    /// one per change: coverage by attestation, [`Replica::join_document`]).
    fn receive_verified(
        &mut self,
        changes: Vec<SignedChange>,
        verdicts: Vec<std::result::Result<DeviceId, crate::identity::SignatureProblem>>,
    ) -> Result<Receipt> {
        let mut receipt = Receipt::default();
        let mut fresh = Vec::with_capacity(changes.len());
        let mut kept = Vec::with_capacity(changes.len());
        let mut seen = HashSet::new();
        for (c, v) in changes.into_iter().zip(verdicts) {
            let h = c.hash();
            if self.membership.knows(&h) || self.waiting.contains_key(&h) || !seen.insert(h) {
                receipt.duplicates += 1;
            } else {
                fresh.push(c);
                kept.push(v);
            }
        }
        self.process_verified(fresh, kept, &mut receipt)?;
        Ok(receipt)
    }

    /// [`Replica::receive`] with batches over `chunk` changes pipelined in chunks of `chunk`.
    fn receive_in_chunks(&mut self, changes: Vec<SignedChange>, chunk: usize) -> Result<Receipt> {
        let _span =
            tracing::debug_span!("receive", network = %self.network, n = changes.len()).entered();
        let mut receipt = Receipt::default();
        let mut fresh = Vec::with_capacity(changes.len());
        let mut seen = HashSet::new();
        for c in changes {
            let h = c.hash();
            // A change refused for its signature may still arrive with a valid one; the same
            // (change, signature) again is a replay.
            let already_judged = self.quarantine.get(&h).is_some_and(|q| {
                !matches!(q.reason, Rejection::Signature { .. })
                    || q.change.signature == c.signature
            });
            if self.membership.knows(&h)
                || already_judged
                || self.waiting.contains_key(&h)
                || !seen.insert((h, c.signature.0))
            {
                receipt.duplicates += 1;
            } else {
                fresh.push(c);
            }
        }
        if fresh.len() <= chunk {
            let verdicts = verify_changes(&self.network, &fresh);
            self.process_verified(fresh, verdicts, &mut receipt)?;
            return Ok(receipt);
        }
        // A large batch (an initial sync): verify the next chunk on other threads while this
        // one is judged and applied, so that signature checks overlap with Automerge's work.
        let network = self.network;
        let mut chunks = Vec::new();
        let mut rest = fresh;
        while rest.len() > chunk {
            let tail = rest.split_off(chunk);
            chunks.push(rest);
            rest = tail;
        }
        chunks.push(rest);
        let verify = move |c: Vec<SignedChange>| {
            let v = verify_changes(&network, &c);
            (c, v)
        };
        std::thread::scope(|s| -> Result<()> {
            let mut pending = chunks.into_iter();
            let mut next = pending.next().map(|c| s.spawn(move || verify(c)));
            while let Some(handle) = next.take() {
                let joined = handle.join();
                next = pending.next().map(|c| s.spawn(move || verify(c)));
                match joined {
                    Ok((c, v)) => self.process_verified(c, v, &mut receipt)?,
                    // A panic while verifying is a bug; those changes are dropped (not
                    // stored, not acknowledged) and will come again with the next sync.
                    Err(_) => warn!("signature verification failed internally; chunk dropped"),
                }
            }
            Ok(())
        })?;
        Ok(receipt)
    }

    /// Judge and apply changes whose signatures were checked (`verdicts`, one per change),
    /// with the changes waiting from earlier calls. Adds to `receipt`.
    fn process_verified(
        &mut self,
        fresh: Vec<SignedChange>,
        verdicts: Vec<std::result::Result<DeviceId, crate::identity::SignatureProblem>>,
        receipt: &mut Receipt,
    ) -> Result<()> {
        let mut pool: Vec<SignedChange> = self.waiting.drain().map(|(_, c)| c).collect();
        for (c, v) in fresh.into_iter().zip(verdicts) {
            match v {
                Ok(_) => pool.push(c),
                Err(problem) => self.refuse(c, Rejection::Signature { problem }, receipt),
            }
        }

        // Judge in causal order: a change is judged once every dependency is decided
        // (accepted, or refused for good).
        let mut by_hash: HashMap<ChangeHash, SignedChange> =
            pool.into_iter().map(|c| (c.hash(), c)).collect();
        let mut blocked_on: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
        let mut missing: HashMap<ChangeHash, usize> = HashMap::new();
        let mut ready: VecDeque<ChangeHash> = VecDeque::new();
        let mut hashes: Vec<ChangeHash> = by_hash.keys().copied().collect();
        hashes.sort();
        for h in hashes {
            let pending: Vec<ChangeHash> = by_hash[&h]
                .change
                .deps()
                .iter()
                .filter(|d| !self.membership.knows(d) && !self.refused_for_good(d))
                .copied()
                .collect();
            let n = pending.len();
            for d in pending {
                blocked_on.entry(d).or_default().push(h);
            }
            if n == 0 {
                ready.push_back(h);
            } else {
                missing.insert(h, n);
            }
        }
        let mut accepted: Vec<SignedChange> = Vec::new();
        let mut batch_max: HashMap<ChangeHash, ChangeMeta> = HashMap::new();
        let mut rejudge = false;
        let mut removed_now: Vec<(ChangeHash, DeviceId)> = Vec::new();
        while let Some(h) = ready.pop_front() {
            let Some(c) = by_hash.remove(&h) else {
                continue;
            };
            // Whatever depends on a refused change can never be accepted; the least refused
            // dependency is named, so that every replica gives the same reason.
            let refused_dep = c
                .change
                .deps()
                .iter()
                .filter(|d| self.refused_for_good(d))
                .min()
                .copied();
            let verdict = match (refused_dep, header(&c.change)) {
                (Some(d), _) => Err(Rejection::DependsOnRefused {
                    dependency: d.to_string(),
                }),
                (None, Some(head)) => self.membership.judge(&head).map(|r| (head, r)),
                (None, None) => Err(Rejection::Signature {
                    problem: crate::identity::SignatureProblem::ActorNotADevice,
                }),
            };
            // Only a removal can refuse changes accepted earlier (an add cannot).
            let removes =
                match MembershipRecord::from_message(header(&c.change).and_then(|h| h.message)) {
                    Some(Ok(MembershipRecord::Remove { device })) => Some(device),
                    _ => None,
                };
            let verdict = match verdict {
                Ok((head, record)) => self.admit_judged(&c.change, &head, record, &batch_max),
                Err(reason) => Err(reason),
            };
            // Facts that can refuse changes accepted earlier: judge everything again (a
            // removal that stands and has the removed device's changes concurrent with it, a
            // removal refused for a concurrent removal of its author, which seniority may
            // still let win, an equivocation).
            // A new proof of equivocation or a fork (a device already cut off has its new
            // changes refused with the proof it gave: nothing to judge again, nothing new to
            // pass on).
            let proof = match &verdict {
                Err(
                    Rejection::Equivocation { device, other } | Rejection::Forked { device, other },
                ) if !self.cut_off.contains_key(device) => Some(other.clone()),
                _ => None,
            };
            match (&verdict, removes) {
                (Ok(()), Some(device)) => removed_now.push((h, device)),
                (Err(Rejection::RemovedConcurrently { .. }), Some(_)) => rejudge = true,
                _ if proof.is_some() => rejudge = true,
                _ => {}
            }
            if let Some(other) = proof {
                let twin = other.parse::<ChangeHash>().ok().and_then(|o| {
                    self.signed(&o)
                        .or_else(|| self.quarantine.get(&o).map(|q| q.change.clone()))
                });
                receipt.evidence.extend(twin);
                receipt.evidence.push(c.clone());
            }
            match verdict {
                Ok(()) => {
                    // A forged copy of this change may have been quarantined earlier.
                    self.quarantine.remove(&h);
                    batch_max.insert(
                        h,
                        ChangeMeta {
                            actor: c.change.actor_id().clone(),
                            max_op: max_op_of(&c.change),
                            deps: c.change.deps().to_vec(),
                        },
                    );
                    accepted.push(c);
                }
                Err(reason) => self.refuse(c, reason, receipt),
            }
            for w in blocked_on.remove(&h).unwrap_or_default() {
                if let Some(n) = missing.get_mut(&w) {
                    *n -= 1;
                    if *n == 0 {
                        missing.remove(&w);
                        ready.push_back(w);
                    }
                }
            }
        }
        // Bounded: a peer cannot make this replica hold unboundedly many changes it cannot
        // judge yet. The excess (largest hashes first: the same whatever the arrival order
        // within the batch) is dropped, unacknowledged.
        let limits = self.limits;
        if by_hash.len() > limits.waiting
            || by_hash
                .values()
                .map(|c| c.change.raw_bytes().len())
                .sum::<usize>()
                > limits.waiting_bytes
        {
            let mut keys: Vec<ChangeHash> = by_hash.keys().copied().collect();
            keys.sort();
            let mut bytes = 0;
            for (i, h) in keys.iter().enumerate() {
                bytes += by_hash[h].change.raw_bytes().len();
                if i >= limits.waiting || bytes > limits.waiting_bytes {
                    by_hash.remove(h);
                    receipt.overflow += 1;
                }
            }
            warn!(
                dropped = receipt.overflow,
                "too many changes waiting for dependencies"
            );
        }
        receipt.waiting = by_hash.len();
        self.waiting = by_hash;

        // The rules the accepted events are judged by, before the views fold them.
        let pending = self.rules.take_pending();
        self.ledger.set_rule_inputs(pending);
        if !accepted.is_empty() {
            for c in &accepted {
                let h = c.hash();
                // A change covered by another's attestation has no signature of its own.
                if !self.attested.contains_key(&h) {
                    self.signatures.insert(h, c.signature);
                }
            }
            match self.deferred.as_mut() {
                Some(d) => d.extend(accepted.iter().map(|c| c.change.clone())),
                None => self
                    .ledger
                    .apply_changes(accepted.iter().map(|c| c.change.clone()).collect())?,
            }
            debug!(applied = accepted.len(), "changes accepted");
        }
        receipt.applied.extend(accepted);
        if rejudge || !removed_now.is_empty() {
            // What follows reads the ledger: the document's changes are applied first.
            if let Some(d) = self.deferred.take() {
                if !d.is_empty() {
                    self.ledger.apply_changes(d)?;
                }
            }
        }
        if rejudge
            || removed_now
                .iter()
                .any(|(removal, device)| self.has_concurrent_changes(removal, device))
        {
            self.rejudge(receipt)?;
        }
        Ok(())
    }

    /// Whether `device` has accepted changes concurrent with the accepted removal `removal`:
    /// neither in its causal past nor having it in theirs.
    fn has_concurrent_changes(&self, removal: &ChangeHash, device: &DeviceId) -> bool {
        let doc = self.ledger.doc();
        let theirs: Vec<ChangeHash> = self
            .seqs
            .iter()
            .filter(|((actor, _), _)| DeviceId::of_actor(actor).as_ref() == Some(device))
            .map(|(_, h)| *h)
            .collect();
        if theirs.is_empty() {
            return false;
        }
        let Some(index) = self
            .membership
            .records()
            .find(|(_, h, _)| *h == removal)
            .map(|(i, _, _)| i)
        else {
            return true;
        };
        let Some(removal_meta) = doc.get_change_meta_by_hash(removal) else {
            return true;
        };
        let in_past = self.ledger.in_past_of(&removal_meta.deps, &theirs);
        theirs.iter().zip(in_past).any(|(h, in_past)| {
            !in_past
                && doc
                    .get_change_meta_by_hash(h)
                    .is_some_and(|m| !self.membership.past_has_record(&m.deps, index))
        })
    }

    /// A stored change with its signature.
    fn signed(&self, hash: &ChangeHash) -> Option<SignedChange> {
        let change = automerge::ReadDoc::get_change_by_hash(self.ledger.doc(), hash)?.clone();
        let signature = *self.signatures.get(hash)?;
        Some(SignedChange { change, signature })
    }

    /// Judge every known change again from scratch (`crate::rejudge`): accepted ones, the
    /// quarantined ones whose signature is valid, and the waiting ones. If the accepted set
    /// changes, the ledger is rebuilt from the new set; `receipt` says what was revoked and
    /// what is newly applied.
    fn rejudge(&mut self, receipt: &mut Receipt) -> Result<()> {
        let _span = tracing::info_span!("rejudge", network = %self.network).entered();
        let before: Vec<ChangeHash> = self.ledger.change_hashes();
        let mut pool: HashMap<ChangeHash, SignedChange> = self
            .accepted_changes()
            .into_iter()
            .map(|c| (c.hash(), c))
            .collect();
        for q in self.quarantine.values() {
            if !matches!(q.reason, Rejection::Signature { .. }) {
                pool.entry(q.change.hash())
                    .or_insert_with(|| q.change.clone());
            }
        }
        for (h, c) in &self.waiting {
            pool.entry(*h).or_insert_with(|| c.clone());
        }
        // The proofs of earlier cut-offs, whether or not their quarantine rows remain.
        for c in self.cut_offs.values().flat_map(|c| &c.changes) {
            pool.entry(c.hash()).or_insert_with(|| c.clone());
        }
        self.proof_kept.clear();
        let judgment = crate::rejudge::judge_all(self.network, &pool);
        let after: HashSet<ChangeHash> = judgment.accepted.iter().copied().collect();
        let before_set: HashSet<ChangeHash> = before.iter().copied().collect();
        self.removals = judgment.removals.clone();
        for (device, (a, b)) in &judgment.equivocations {
            warn!(%device, a = %a, b = %b, "equivocation: the device is cut off");
        }
        // The verdicts of this batch as the full judgment gives them (a change refused on
        // arrival for a removal may be refused for a dependency in the judgment of the set).
        let mut seen = HashSet::new();
        receipt.refused = std::mem::take(&mut receipt.refused)
            .into_iter()
            .filter_map(|(h, old)| match judgment.refused.get(&h) {
                Some(r) => Some((h, r.clone())),
                None if matches!(old, Rejection::Signature { .. }) => Some((h, old)),
                None => None,
            })
            .filter(|(h, _)| seen.insert(*h))
            .collect();
        for (h, reason) in &judgment.refused {
            if let Some(q) = self.quarantine.get_mut(h) {
                q.reason = reason.clone();
            }
        }
        self.cut_off = judgment.cut_off.clone();
        for (device, (a, b)) in &judgment.equivocations {
            if self.cut_offs.contains_key(device) {
                continue;
            }
            let Some(reason) = judgment.cut_off.get(device) else {
                continue;
            };
            self.cut_offs.insert(
                *device,
                CutOff {
                    device: *device,
                    reason: reason.clone(),
                    twins: [*a, *b],
                    changes: [a, b].iter().filter_map(|h| pool.get(h).cloned()).collect(),
                },
            );
            receipt.cut_off.push(*device);
        }
        // A cut-off is never forgotten (its proof may stand no more in this set: the device
        // stays cut off, as on every replica that judged it).
        for (device, c) in &self.cut_offs {
            self.cut_off
                .entry(*device)
                .or_insert_with(|| c.reason.clone());
        }
        if after == before_set {
            return Ok(());
        }
        let changes = judgment
            .accepted
            .iter()
            .map(|h| pool[h].change.clone())
            .collect();
        self.ledger = Ledger::from_changes(changes, self.key.session_actor()?)?;
        self.membership = judgment.membership;
        self.admission = judgment.admission;
        self.seqs = judgment.seqs;
        self.tips = judgment.tips;
        self.rules = judgment.rules;
        let pending = self.rules.take_pending();
        self.ledger.set_rule_inputs(pending);
        for (h, reason) in &judgment.refused {
            if before_set.contains(h) {
                receipt.revoked.push(*h);
                if seen.insert(*h) {
                    receipt.refused.push((*h, reason.clone()));
                }
                warn!(change = %h, %reason, "an accepted change is revoked");
            }
            self.quarantine.insert(
                *h,
                Quarantined {
                    change: pool[h].clone(),
                    reason: reason.clone(),
                },
            );
        }
        receipt.applied.retain(|c| after.contains(&c.hash()));
        for h in &judgment.accepted {
            if !before_set.contains(h) && !receipt.applied.iter().any(|c| c.hash() == *h) {
                receipt.applied.push(pool[h].clone());
            }
            self.quarantine.remove(h);
        }
        self.waiting = judgment
            .waiting
            .iter()
            .map(|h| (*h, pool[h].clone()))
            .collect();
        receipt.waiting = self.waiting.len();
        Ok(())
    }

    fn refused_for_good(&self, hash: &ChangeHash) -> bool {
        self.quarantine
            .get(hash)
            .is_some_and(|q| !matches!(q.reason, Rejection::Signature { .. }))
            // The twins of a cut-off are refused whatever the quarantine still holds.
            || self.cut_offs.values().any(|c| c.twins.contains(hash))
    }

    fn refuse(&mut self, change: SignedChange, reason: Rejection, receipt: &mut Receipt) {
        let hash = change.hash();
        warn!(change = %hash, %reason, "change refused and quarantined");
        receipt.refused.push((hash, reason.clone()));
        // A new proof of equivocation or a fork is kept whatever the bound (one per device
        // and judgment: the judgment from scratch that follows must see it, or this replica
        // would not cut off a device that every other one cuts off).
        let proof = match &reason {
            Rejection::Equivocation { device, .. } | Rejection::Forked { device, .. } => {
                !self.cut_off.contains_key(device) && self.proof_kept.insert(*device)
            }
            _ => false,
        };
        if self.quarantine.len() >= self.limits.quarantine && !proof {
            receipt.overflow += 1;
            return;
        }
        self.quarantine.insert(hash, Quarantined { change, reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vf::{Action, EconomicEvent, ResourceDescription, Unit};

    /// A replica, with its compiled rules, moves to another thread (the node judges and
    /// stores on a blocking pool).
    #[test]
    fn a_replica_crosses_threads() {
        fn send<T: Send>() {}
        send::<Replica>();
    }

    #[test]
    fn a_member_joins_writes_and_an_admin_accepts() {
        let admin_key = DeviceKey::generate().expect("key");
        let (mut admin, genesis) =
            Replica::create_network("market", admin_key, Agent::person("ana", "Ana"))
                .expect("create");
        assert_eq!(admin.role(), Some(Role::Admin));
        let bob_key = DeviceKey::generate().expect("key");
        let bob_agent = Agent::person("bob", "Bob");
        let (_, mut changes) = admin.write(|l| l.create(bob_agent)).expect("agent");
        changes.extend(
            admin
                .add_member(bob_key.id(), Role::Member, Id::from("bob"))
                .expect("add"),
        );
        let mut all = genesis.clone();
        all.extend(changes);
        let (mut bob, receipt) =
            Replica::join(admin.network(), bob_key, all.clone()).expect("join");
        assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
        assert_eq!(bob.ledger().heads(), admin.ledger().heads());
        assert_eq!(bob.role(), Some(Role::Member));

        let (_, signed) = bob
            .write(|l| {
                l.create(Unit::new("kg", "kilogram", "kg"))?;
                l.record_event(
                    EconomicEvent::new(Action::Produce, "bob", "bob")
                        .quantity(5, "kg")
                        .creating(ResourceDescription::new("apples", "Apples")),
                )
            })
            .expect("write");
        let receipt = admin.receive(signed).expect("receive");
        assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
        assert_eq!(bob.ledger().heads(), admin.ledger().heads());
        let event = admin.ledger().events(&Default::default())[0].id.clone();
        let p = admin.provenance(&event).expect("provenance");
        assert_eq!(p.device, bob.device());
        assert_eq!(p.member.map(|m| m.agent), Some(Id::from("bob")));

        // A stranger's change is refused and not forwarded.
        let eve_key = DeviceKey::generate().expect("key");
        let (mut eve, _) =
            Replica::join(admin.network(), eve_key, all).expect("eve joins read-only");
        assert!(matches!(
            eve.write(|l| l.create(Unit::new("g", "gram", "g"))),
            Err(Error::NotAllowed { .. })
        ));
    }

    #[test]
    fn waiting_and_quarantine_are_bounded() {
        let (mut admin, _) = Replica::create_network(
            "market",
            DeviceKey::generate().expect("key"),
            Agent::person("ana", "Ana"),
        )
        .expect("create");
        admin
            .write(|l| l.create(Unit::new("kg", "kilogram", "kg")))
            .expect("unit");
        let base = admin.signed_changes_since(&[]);
        let mut chain = Vec::new();
        for i in 0..6 {
            let (_, c) = admin
                .write(|l| {
                    l.record_event(
                        EconomicEvent::new(Action::Produce, "ana", "ana")
                            .quantity(1, "kg")
                            .creating(ResourceDescription::new(format!("r{i}"), "Apples")),
                    )
                })
                .expect("write");
            chain.extend(c);
        }
        let (mut r, _) = Replica::join(admin.network(), DeviceKey::generate().expect("key"), base)
            .expect("join");
        r.set_limits(Limits {
            waiting: 3,
            ..Limits::default()
        });
        // Everything but the first change: five wait for it, two of them are dropped.
        let receipt = r.receive(chain[1..].to_vec()).expect("receive");
        assert_eq!((receipt.waiting, receipt.overflow), (3, 2));
        assert!(receipt.applied.is_empty());
        // The missing change arrives: what waited applies; the dropped ones come again.
        let receipt = r.receive(vec![chain[0].clone()]).expect("receive");
        assert_eq!(receipt.overflow, 0);
        assert!(receipt.applied.len() < chain.len());
        let receipt = r.receive(chain.clone()).expect("again");
        assert_eq!(receipt.overflow, 0);
        assert_eq!(r.ledger().heads(), admin.ledger().heads());

        // The quarantine keeps at most its limit; the verdicts are reported all the same (two
        // forged signatures of one new change: the second does not fit).
        r.set_limits(Limits {
            quarantine: r.quarantine().count() + 1,
            ..Limits::default()
        });
        let before = admin.ledger().event_count();
        let (_, more) = admin
            .write(|l| l.create(Unit::new("g", "gram", "g")))
            .expect("unit");
        let mut bad: Vec<SignedChange> = more.clone();
        let mut other = more[0].clone();
        other.signature.0[1] ^= 1;
        bad[0] = other.clone();
        let mut again = other;
        again.signature.0[2] ^= 1;
        bad.push(again);
        let receipt = r.receive(bad).expect("receive");
        assert_eq!(receipt.refused.len(), 2);
        assert_eq!(receipt.overflow, 1);
        assert_eq!(admin.ledger().event_count(), before);
    }

    #[test]
    fn pipelined_receive_decides_like_one_batch() {
        let admin_key = DeviceKey::generate().expect("key");
        let (mut admin, _) =
            Replica::create_network("market", admin_key, Agent::person("ana", "Ana"))
                .expect("create");
        admin
            .write(|l| l.create(Unit::new("kg", "kilogram", "kg")))
            .expect("unit");
        for i in 0..150 {
            admin
                .write(|l| {
                    l.record_event(
                        EconomicEvent::new(Action::Produce, "ana", "ana")
                            .quantity(1, "kg")
                            .creating(ResourceDescription::new(format!("r{i}"), "Apples")),
                    )
                })
                .expect("write");
        }
        let mut history = admin.signed_changes_since(&[]);
        // A forged change in the middle, and the history in reverse order after the genesis.
        let mut forged = history[40].clone();
        forged.signature.0[0] ^= 1;
        history.insert(77, forged);
        history[1..].reverse();
        let network = admin.network();
        let key = || DeviceKey::generate().expect("key");
        let (mut one, _) = Replica::join(network, key(), history[..1].to_vec()).expect("join");
        let (mut piped, _) = Replica::join(network, key(), history[..1].to_vec()).expect("join");
        let a = one
            .receive_in_chunks(history.clone(), usize::MAX)
            .expect("one batch");
        let b = piped.receive_in_chunks(history, 16).expect("pipelined");
        assert_eq!(one.ledger().heads(), admin.ledger().heads());
        assert_eq!(piped.ledger().heads(), admin.ledger().heads());
        assert_eq!(a.applied.len(), b.applied.len());
        assert_eq!(a.refused.len(), 1);
        assert_eq!(b.refused.len(), 1);
        assert_eq!(
            one.quarantine()
                .map(|q| q.change.hash())
                .collect::<Vec<_>>(),
            piped
                .quarantine()
                .map(|q| q.change.hash())
                .collect::<Vec<_>>()
        );
        assert_eq!(one.ledger().snapshot(), piped.ledger().snapshot());
    }
}
