//! Network membership, decided from the ledger's own causal history.
//!
//! Membership records (genesis, add, remove) travel as the *message* of a signed Automerge
//! change: the record is covered by the change hash and so by the author's signature, and it
//! can be read from the change header before the change is applied. Whether any change is
//! accepted depends only on the membership records in its causal past (its dependencies and
//! their ancestors), so every honest replica accepts exactly the same changes, whatever order
//! they arrive in. The rules are in docs/security.md.
//!
//! Pure: no I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{DeviceId, DeviceKey, IdentityError, NetworkId, SignatureProblem};
use crate::vf::Id;

/// The change-message prefix of a membership record; the JSON record follows it.
pub const RECORD_PREFIX: &str = "reflow/membership/v1 ";

/// What a member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Reads only.
    Observer,
    /// Reads and writes the ledger.
    Member,
    /// Reads, writes, and admits and removes members.
    Admin,
}

impl Role {
    /// Whether this role may write to the ledger.
    pub fn can_write(self) -> bool {
        self >= Role::Member
    }
}

impl Role {
    /// The role's name (`observer`, `member`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Observer => "observer",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A membership record, carried as a change message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum MembershipRecord {
    /// The network's first change: its creator is its first admin, acting for `agent`.
    #[serde(rename_all = "camelCase")]
    Genesis {
        /// The network's name.
        network_name: String,
        /// The creator's device.
        creator: DeviceId,
        /// The ValueFlows Agent the creator acts for.
        agent: Id,
        /// The document schema version the genesis lays out (absent: 1).
        #[serde(default = "schema_one", skip_serializing_if = "is_schema_one")]
        schema: u64,
    },
    /// Migrate the ledger's document to schema `schema` (admins only; see
    /// docs/data-model.md, "Migration from version 1").
    Migrate {
        /// The new schema version.
        schema: u64,
    },
    /// Admit a device (or change its role or agent).
    #[serde(rename_all = "camelCase")]
    Add {
        /// The device admitted.
        device: DeviceId,
        /// Its role.
        role: Role,
        /// The ValueFlows Agent it acts for.
        agent: Id,
        /// The nonce of the invite it redeemed, if it came in by one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite: Option<String>,
    },
    /// Remove a device. Its earlier changes stay; later ones are refused.
    #[serde(rename_all = "camelCase")]
    Remove {
        /// The device removed.
        device: DeviceId,
    },
}

fn schema_one() -> u64 {
    1
}

fn is_schema_one(v: &u64) -> bool {
    *v == 1
}

impl MembershipRecord {
    /// The change message carrying this record.
    pub fn to_message(&self) -> String {
        // A record of plain strings and enums always serializes.
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{RECORD_PREFIX}{json}")
    }

    /// The record a change message carries: `None` if it carries none, `Some(Err)` if it
    /// starts like a record but is not one.
    pub fn from_message(message: Option<&str>) -> Option<Result<MembershipRecord, String>> {
        let body = message?.strip_prefix(RECORD_PREFIX)?;
        Some(serde_json::from_str(body).map_err(|e| e.to_string()))
    }
}

/// Why a change was refused. Refused changes are quarantined: kept apart, visible to admins,
/// never applied and never forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum Rejection {
    /// The signature or the authorship is wrong.
    Signature {
        /// What is wrong.
        problem: SignatureProblem,
    },
    /// The change does not descend from this network's genesis (another network's change,
    /// or a second genesis).
    NotOfThisNetwork,
    /// The author was never a member in the change's causal past.
    #[serde(rename_all = "camelCase")]
    NotAMember {
        /// The author.
        device: DeviceId,
    },
    /// The author had been removed in the change's causal past.
    #[serde(rename_all = "camelCase")]
    Removed {
        /// The author.
        device: DeviceId,
    },
    /// The author is an observer and may not write.
    #[serde(rename_all = "camelCase")]
    ReadOnly {
        /// The author.
        device: DeviceId,
    },
    /// A membership record by someone who was not an admin in its causal past.
    #[serde(rename_all = "camelCase")]
    NotAnAdmin {
        /// The author.
        device: DeviceId,
    },
    /// The change message looks like a membership record but is not a valid one.
    MalformedRecord {
        /// What is wrong.
        detail: String,
    },
    /// An op breaks the ledger schema (root keys, immutable events, buckets, field types,
    /// sizes). The detail names the op and what it does.
    Schema {
        /// What is wrong.
        detail: String,
    },
    /// Larger than any change may be.
    TooLarge {
        /// Its size in bytes.
        bytes: usize,
        /// Its operations.
        ops: usize,
    },
    /// An event names neither the author's agent as provider nor as receiver, and the author
    /// is not an admin (who may record for others).
    #[serde(rename_all = "camelCase")]
    SpeaksForOthers {
        /// The author.
        device: DeviceId,
        /// The agent the author acts for.
        agent: Id,
        /// The event's provider.
        provider: Option<Id>,
        /// The event's receiver.
        receiver: Option<Id>,
    },
    /// An agent's description edited by a device that does not act for it and is not an
    /// admin.
    #[serde(rename_all = "camelCase")]
    NotYourAgent {
        /// The author.
        device: DeviceId,
        /// The agent the author acts for.
        agent: Id,
        /// The agent whose description it edits.
        edited: Id,
    },
    /// The author signed another change with the same actor and sequence number: proof of
    /// misbehaviour. Both changes are named.
    #[serde(rename_all = "camelCase")]
    Equivocation {
        /// The author.
        device: DeviceId,
        /// The other change with the same (actor, seq), hex.
        other: String,
    },
    /// The author signed two changes neither of which has the other in its causal past (a
    /// fork of its history, as a device that backdates a change to escape a removal or a
    /// rule it had seen makes): proof of misbehaviour, like [`Rejection::Equivocation`]. An
    /// honest device never forks: each change it makes builds on every earlier one it made.
    #[serde(rename_all = "camelCase")]
    Forked {
        /// The author.
        device: DeviceId,
        /// A change of the author concurrent with this one, hex.
        other: String,
    },
    /// The author was removed by a change concurrent with this one (neither in the other's
    /// causal past): strong removal refuses it (docs/security.md).
    #[serde(rename_all = "camelCase")]
    RemovedConcurrently {
        /// The author.
        device: DeviceId,
        /// The removing change (hex).
        removal: String,
    },
    /// A change it depends on was refused.
    #[serde(rename_all = "camelCase")]
    DependsOnRefused {
        /// The refused dependency (hex).
        dependency: String,
    },
    /// An event breaks a *refuse* rule of the network's rule set in force in the change's
    /// causal past (docs/rules.md).
    #[serde(rename_all = "camelCase")]
    RuleRefused {
        /// The rule's name.
        rule: String,
        /// The rule's message.
        message: String,
        /// The event (`<counter>@<actor>`).
        event: String,
        /// The version of the rule set that refused it.
        version: u64,
    },
    /// The rule set written by a device that was not an admin in the change's causal past.
    #[serde(rename_all = "camelCase")]
    RulesNotByAdmin {
        /// The author.
        device: DeviceId,
    },
    /// A rule-set write that does not compile, or does not raise the version in force in its
    /// causal past.
    InvalidRules {
        /// What is wrong.
        detail: String,
    },
    /// An agent relationship written by a device that acts for neither its subject nor its
    /// object and is not an admin (a member asserting who volunteers where for others).
    #[serde(rename_all = "camelCase")]
    NotYourRelationship {
        /// The author.
        device: DeviceId,
        /// The agent the author acts for.
        agent: Id,
        /// The relationship's subject.
        subject: Id,
        /// The relationship's object.
        object: Id,
    },
    /// An object of a kind only admins write (agent relationship roles) written by a device
    /// that was not an admin in the change's causal past.
    #[serde(rename_all = "camelCase")]
    AdminsOnly {
        /// The author.
        device: DeviceId,
        /// The kind written.
        kind: crate::vf::ObjectKind,
    },
    /// An object edited by a device whose agent did not create it and that is not an admin
    /// (a member rewriting another's commitment, offer, claim or agreement). Owners are the
    /// agents whose devices created the object, as the change's causal past shows them
    /// (docs/security.md, "Who may edit an object").
    #[serde(rename_all = "camelCase")]
    NotYourObject {
        /// The author.
        device: DeviceId,
        /// The agent the author acts for.
        agent: Id,
        /// The kind edited.
        kind: crate::vf::ObjectKind,
        /// The object's id.
        id: Id,
        /// The agents that own it in the change's causal past, sorted.
        owners: Vec<Id>,
    },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Signature { problem } => write!(f, "bad signature: {problem:?}"),
            Rejection::NotOfThisNetwork => f.write_str("not descended from this network's genesis"),
            Rejection::NotAMember { device } => write!(f, "{device} is not a member"),
            Rejection::Removed { device } => write!(f, "{device} was removed"),
            Rejection::ReadOnly { device } => write!(f, "{device} is an observer"),
            Rejection::NotAnAdmin { device } => write!(f, "{device} is not an admin"),
            Rejection::MalformedRecord { detail } => {
                write!(f, "malformed membership record: {detail}")
            }
            Rejection::Schema { detail } => write!(f, "breaks the ledger schema: {detail}"),
            Rejection::TooLarge { bytes, ops } => {
                write!(f, "too large: {bytes} bytes, {ops} operations")
            }
            Rejection::SpeaksForOthers {
                device,
                agent,
                provider,
                receiver,
            } => write!(
                f,
                "{device} acts for {agent} but recorded an event between {} and {}",
                provider.as_ref().map_or("nobody", |p| p.as_str()),
                receiver.as_ref().map_or("nobody", |p| p.as_str())
            ),
            Rejection::NotYourAgent {
                device,
                agent,
                edited,
            } => write!(f, "{device} acts for {agent} but edited agent {edited}"),
            Rejection::RemovedConcurrently { device, removal } => write!(
                f,
                "{device} was removed by {removal}, which this change does not know of"
            ),
            Rejection::Equivocation { device, other } => write!(
                f,
                "{device} signed two different changes with one actor and sequence number (the other is {other})"
            ),
            Rejection::Forked { device, other } => write!(
                f,
                "{device} signed two changes neither of which knows the other, a fork of its history (the other is {other})"
            ),
            Rejection::DependsOnRefused { dependency } => {
                write!(f, "depends on refused change {dependency}")
            }
            Rejection::RuleRefused {
                rule,
                message,
                event,
                version,
            } => write!(
                f,
                "event {event} breaks rule {rule:?} (rule set version {version}): {message}"
            ),
            Rejection::RulesNotByAdmin { device } => {
                write!(f, "{device} wrote the network's rules but is not an admin")
            }
            Rejection::InvalidRules { detail } => write!(f, "invalid rule set: {detail}"),
            Rejection::NotYourRelationship {
                device,
                agent,
                subject,
                object,
            } => write!(
                f,
                "{device} acts for {agent} but wrote a relationship between {subject} and {object}"
            ),
            Rejection::AdminsOnly { device, kind } => {
                write!(f, "{device} wrote a {kind} but is not an admin")
            }
            Rejection::NotYourObject {
                device,
                agent,
                kind,
                id,
                owners,
            } => {
                let owners: Vec<&str> = owners.iter().map(Id::as_str).collect();
                write!(
                    f,
                    "{device} acts for {agent} but edited {kind} {id}, which belongs to {}",
                    owners.join(", ")
                )
            }
        }
    }
}

/// A member of a network as seen at some point of its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The device.
    pub device: DeviceId,
    /// Its role.
    pub role: Role,
    /// The ValueFlows Agent it acts for.
    pub agent: Id,
    /// Who admitted it (the creator admitted itself).
    pub added_by: DeviceId,
    /// The invite it redeemed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
}

/// A set of membership-record indices (small: networks have few membership records).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Bits(Vec<u64>);

impl Bits {
    fn set(&mut self, i: usize) {
        let w = i / 64;
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (i % 64);
    }
    fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn union(&mut self, other: &Bits) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, word)| {
            (0..64)
                .filter(move |b| word & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }
}

#[derive(Debug, Clone)]
struct RecordEntry {
    change: ChangeHash,
    author: DeviceId,
    record: MembershipRecord,
    /// The records in this record's causal past (not itself).
    past: Arc<Bits>,
}

/// The membership index of one network: every accepted membership record, and for every
/// accepted change the set of records in its causal past (shared between changes that have
/// the same set, so 100,000 changes cost little).
#[derive(Debug, Clone)]
pub struct Membership {
    network: NetworkId,
    records: Vec<RecordEntry>,
    past: HashMap<ChangeHash, Arc<Bits>>,
}

/// A change header, as membership needs it.
pub(crate) struct Header<'a> {
    pub hash: ChangeHash,
    pub deps: &'a [ChangeHash],
    pub author: DeviceId,
    pub message: Option<&'a str>,
}

impl Membership {
    /// An empty index for `network` (nothing accepted yet, not even the genesis).
    pub fn new(network: NetworkId) -> Membership {
        Membership {
            network,
            records: Vec::new(),
            past: HashMap::new(),
        }
    }

    /// The network.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// Whether a change has been accepted into this index.
    pub fn knows(&self, hash: &ChangeHash) -> bool {
        self.past.contains_key(hash)
    }

    /// Number of changes indexed.
    pub fn len(&self) -> usize {
        self.past.len()
    }

    /// Whether nothing is indexed yet.
    pub fn is_empty(&self) -> bool {
        self.past.is_empty()
    }

    fn past_of(&self, deps: &[ChangeHash]) -> Option<Arc<Bits>> {
        match deps {
            [] => Some(Arc::new(Bits::default())),
            [one] => self.past.get(one).cloned(),
            many => {
                let mut bits = Bits::default();
                for d in many {
                    bits.union(self.past.get(d)?);
                }
                Some(Arc::new(bits))
            }
        }
    }

    /// Decide whether a change is accepted. Every dependency must already be accepted.
    pub(crate) fn judge(&self, h: &Header<'_>) -> Result<Option<MembershipRecord>, Rejection> {
        let record = match MembershipRecord::from_message(h.message) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(detail)) => return Err(Rejection::MalformedRecord { detail }),
        };
        if h.deps.is_empty() {
            return match record {
                Some(MembershipRecord::Genesis { creator, .. })
                    if h.hash == self.network.genesis() && creator == h.author =>
                {
                    Ok(record)
                }
                _ => Err(Rejection::NotOfThisNetwork),
            };
        }
        let past = self.past_of(h.deps).ok_or(Rejection::NotOfThisNetwork)?;
        if !past.get(0) {
            return Err(Rejection::NotOfThisNetwork);
        }
        let state = self.state(&past);
        let role = state.get(&h.author).map(|m| m.role);
        let was_member = self.was_ever_added(&past, &h.author);
        let refuse = || match role {
            Some(Role::Observer) => Rejection::ReadOnly { device: h.author },
            _ if was_member => Rejection::Removed { device: h.author },
            _ => Rejection::NotAMember { device: h.author },
        };
        match &record {
            Some(MembershipRecord::Genesis { .. }) => Err(Rejection::MalformedRecord {
                detail: "a genesis record in a change that has dependencies".into(),
            }),
            Some(_) if role == Some(Role::Admin) => Ok(record),
            Some(_) if role.is_some_and(Role::can_write) => {
                Err(Rejection::NotAnAdmin { device: h.author })
            }
            Some(_) => Err(refuse()),
            None if role.is_some_and(Role::can_write) => Ok(None),
            None => Err(refuse()),
        }
    }

    /// The author's membership in the causal past of a change whose dependencies are all
    /// indexed.
    pub(crate) fn author_in_past(&self, h: &Header<'_>) -> Option<Member> {
        let past = self.past_of(h.deps)?;
        self.state(&past).remove(&h.author)
    }

    /// Whether membership record `index` is in the causal past of `deps` (all indexed).
    pub(crate) fn past_has_record(&self, deps: &[ChangeHash], index: usize) -> bool {
        self.past_of(deps).is_some_and(|p| p.get(index))
    }

    /// The index the next indexed record gets.
    pub(crate) fn next_record_index(&self) -> usize {
        self.records.len()
    }

    /// Every indexed record with the change that carries it, in index order.
    pub(crate) fn records(&self) -> impl Iterator<Item = (usize, &ChangeHash, &MembershipRecord)> {
        self.records
            .iter()
            .enumerate()
            .map(|(i, e)| (i, &e.change, &e.record))
    }

    /// Index an accepted change (after [`Membership::judge`] accepted it, or when loading
    /// changes that were accepted earlier). Returns false if a dependency is not indexed.
    pub(crate) fn admit(&mut self, h: &Header<'_>, record: Option<MembershipRecord>) -> bool {
        let Some(past) = self.past_of(h.deps) else {
            return false;
        };
        let own = match record {
            Some(record) => {
                let i = self.records.len();
                self.records.push(RecordEntry {
                    change: h.hash,
                    author: h.author,
                    record,
                    past: past.clone(),
                });
                let mut bits = (*past).clone();
                bits.set(i);
                Arc::new(bits)
            }
            None => past,
        };
        self.past.insert(h.hash, own);
        true
    }

    fn was_ever_added(&self, past: &Bits, device: &DeviceId) -> bool {
        past.iter().any(|i| match &self.records[i].record {
            MembershipRecord::Genesis { creator, .. } => creator == device,
            MembershipRecord::Add { device: d, .. } => d == device,
            MembershipRecord::Remove { .. } | MembershipRecord::Migrate { .. } => false,
        })
    }

    /// The members given the records in `past`. A device is a member if some record adding
    /// it has every record removing it in its own causal past (an add after a removal
    /// re-admits; a removal concurrent with an add wins). Of several such adds, those that no
    /// other one follows count; if they disagree, the least powerful role wins, then the
    /// smallest change hash.
    fn state(&self, past: &Bits) -> BTreeMap<DeviceId, Member> {
        self.state_indexed(past)
            .into_iter()
            .map(|(d, (m, _))| (d, m))
            .collect()
    }

    /// [`Membership::state`] with the index of the record each member holds by.
    fn state_indexed(&self, past: &Bits) -> BTreeMap<DeviceId, (Member, usize)> {
        let mut adds: BTreeMap<DeviceId, Vec<usize>> = BTreeMap::new();
        let mut removes: BTreeMap<DeviceId, Vec<usize>> = BTreeMap::new();
        for i in past.iter() {
            let e = &self.records[i];
            match &e.record {
                MembershipRecord::Genesis { creator, .. } => {
                    adds.entry(*creator).or_default().push(i)
                }
                MembershipRecord::Add { device, .. } => adds.entry(*device).or_default().push(i),
                MembershipRecord::Remove { device } => removes.entry(*device).or_default().push(i),
                MembershipRecord::Migrate { .. } => {}
            }
        }
        let mut out = BTreeMap::new();
        for (device, list) in adds {
            let rm = removes.get(&device).map(Vec::as_slice).unwrap_or(&[]);
            let live: Vec<usize> = list
                .into_iter()
                .filter(|&a| rm.iter().all(|&r| self.records[a].past.get(r)))
                .collect();
            let maximal = live
                .iter()
                .copied()
                .filter(|&a| !live.iter().any(|&b| b != a && self.records[b].past.get(a)));
            let chosen = maximal.min_by(|&a, &b| {
                let key = |i: usize| (self.role_of_record(i), self.records[i].change);
                key(a).cmp(&key(b))
            });
            if let Some(i) = chosen {
                let e = &self.records[i];
                let (role, agent, invite) = match &e.record {
                    MembershipRecord::Genesis { agent, .. } => (Role::Admin, agent.clone(), None),
                    MembershipRecord::Add {
                        role,
                        agent,
                        invite,
                        ..
                    } => (*role, agent.clone(), invite.clone()),
                    MembershipRecord::Remove { .. } | MembershipRecord::Migrate { .. } => continue,
                };
                out.insert(
                    device,
                    (
                        Member {
                            device,
                            role,
                            agent,
                            added_by: e.author,
                            invite,
                        },
                        i,
                    ),
                );
            }
        }
        out
    }

    /// The change carrying the record by which `device` is a member in the causal past of
    /// change `at` (inclusive): its grant, for seniority.
    pub(crate) fn grant_at(&self, at: &ChangeHash, device: &DeviceId) -> Option<ChangeHash> {
        let past = self.past.get(at)?;
        self.state_indexed(past)
            .remove(device)
            .map(|(_, i)| self.records[i].change)
    }

    fn role_of_record(&self, i: usize) -> Role {
        match &self.records[i].record {
            MembershipRecord::Genesis { .. } => Role::Admin,
            MembershipRecord::Add { role, .. } => *role,
            MembershipRecord::Remove { .. } | MembershipRecord::Migrate { .. } => Role::Observer,
        }
    }

    /// The members at the given heads (all accepted changes' records in their past).
    pub fn members_at(&self, heads: &[ChangeHash]) -> Vec<Member> {
        let Some(past) = self.past_of(heads) else {
            return Vec::new();
        };
        self.state(&past).into_values().collect()
    }

    /// The member `device` as of the causal past of change `at` (inclusive).
    pub fn member_at(&self, at: &ChangeHash, device: &DeviceId) -> Option<Member> {
        let past = self.past.get(at)?;
        self.state(past).remove(device)
    }

    /// Invite nonces redeemed in the past of `heads`, with how many times each was redeemed
    /// (more than once only if two admins redeemed the same bearer invite concurrently).
    pub fn redeemed_invites(&self, heads: &[ChangeHash]) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        if let Some(past) = self.past_of(heads) {
            for i in past.iter() {
                if let MembershipRecord::Add {
                    invite: Some(n), ..
                } = &self.records[i].record
                {
                    *out.entry(n.clone()).or_insert(0) += 1;
                }
            }
        }
        out
    }

    /// The network name from the genesis record.
    pub fn network_name(&self) -> Option<&str> {
        self.records.first().and_then(|e| match &e.record {
            MembershipRecord::Genesis { network_name, .. } => Some(network_name.as_str()),
            _ => None,
        })
    }
}

/// Who may redeem an invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum InviteAudience {
    /// Only this device.
    Device {
        /// The device.
        device: DeviceId,
    },
    /// Whoever holds the secret whose SHA-256 is `secretHash` (hex), once.
    #[serde(rename_all = "camelCase")]
    Bearer {
        /// SHA-256 of the secret, hex.
        secret_hash: String,
    },
}

/// A one-time bearer secret, shown once to the admin who issues the invite. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerSecret(pub [u8; 32]);

impl std::fmt::Debug for BearerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerSecret(<redacted>)")
    }
}

impl BearerSecret {
    pub(crate) fn hash_hex(&self) -> String {
        hex::encode(Sha256::digest(self.0))
    }
}

/// A signed, expiring capability to join a network, issued by an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invite {
    /// Format version (1).
    pub version: u32,
    /// The network.
    pub network: NetworkId,
    /// The admin who issued it.
    pub issuer: DeviceId,
    /// The role it grants.
    pub role: Role,
    /// The Agent the newcomer will act for, if the issuer chose one (e.g. the organisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Id>,
    /// Unix time (seconds) after which it cannot be redeemed.
    pub expires_at: u64,
    /// Random, names the invite in the ledger once redeemed (hex).
    pub nonce: String,
    /// Who may redeem it.
    pub audience: InviteAudience,
    /// The issuer's signature over all of the above (hex).
    pub signature: String,
}

/// Why an invite was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// Not an invite (bad encoding or fields).
    #[error("not a Reflow invite: {0}")]
    Malformed(String),
    /// The signature does not verify: the invite was altered or forged.
    #[error("the invite's signature does not verify: it was altered or forged")]
    BadSignature,
    /// For another network.
    #[error("the invite is for network {0}, not this one")]
    WrongNetwork(String),
    /// Past its expiry.
    #[error("the invite expired at {expired_at} (unix time), it is now {now}: ask for a new one")]
    Expired {
        /// Its expiry.
        expired_at: u64,
        /// The redeeming admin's clock.
        now: u64,
    },
    /// Already redeemed.
    #[error("the invite {nonce} was already redeemed: invites work once")]
    AlreadyRedeemed {
        /// The invite's nonce.
        nonce: String,
    },
    /// Issued for another device.
    #[error("the invite is for another device")]
    WrongDevice,
    /// The bearer secret is missing or wrong.
    #[error("the invite's secret is missing or wrong")]
    WrongSecret,
    /// The issuer is not (or no longer) an admin.
    #[error("the invite's issuer is not an admin of the network (any more)")]
    IssuerNotAdmin,
}

const INVITE_CONTEXT: &[u8] = b"reflow/invite/v1\0";
/// Text form prefix.
const INVITE_TEXT_PREFIX: &str = "reflow-invite-v1:";

impl Invite {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature = String::new();
        let mut m = INVITE_CONTEXT.to_vec();
        // Field order is fixed by the struct, so the JSON is canonical.
        m.extend_from_slice(
            serde_json::to_string(&unsigned)
                .unwrap_or_default()
                .as_bytes(),
        );
        m
    }

    /// Issue an invite signed by `issuer` (who must be an admin when it is redeemed).
    pub(crate) fn issue(
        issuer: &DeviceKey,
        network: NetworkId,
        role: Role,
        agent: Option<Id>,
        audience: InviteAudience,
        expires_at: u64,
    ) -> Result<Invite, IdentityError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| IdentityError::Randomness(e.to_string()))?;
        Ok(Invite::issue_with_nonce(
            issuer, network, role, agent, audience, expires_at, nonce,
        ))
    }

    /// [`Invite::issue`] with a given nonce (the node simulator draws it from its seed).
    pub(crate) fn issue_with_nonce(
        issuer: &DeviceKey,
        network: NetworkId,
        role: Role,
        agent: Option<Id>,
        audience: InviteAudience,
        expires_at: u64,
        nonce: [u8; 16],
    ) -> Invite {
        let mut invite = Invite {
            version: 1,
            network,
            issuer: issuer.id(),
            role,
            agent,
            expires_at,
            nonce: hex::encode(nonce),
            audience,
            signature: String::new(),
        };
        invite.signature = hex::encode(issuer.sign(&invite.signing_bytes()));
        invite
    }

    /// A new bearer secret and the audience it makes.
    pub(crate) fn bearer_audience() -> Result<(InviteAudience, BearerSecret), IdentityError> {
        let mut s = [0u8; 32];
        getrandom::fill(&mut s).map_err(|e| IdentityError::Randomness(e.to_string()))?;
        let secret = BearerSecret(s);
        let audience = InviteAudience::Bearer {
            secret_hash: secret.hash_hex(),
        };
        Ok((audience, secret))
    }

    /// Check the issuer's signature.
    pub fn verify_signature(&self) -> Result<(), InviteError> {
        let sig: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(InviteError::BadSignature)?;
        if self.version != 1 {
            return Err(InviteError::Malformed(format!(
                "version {} (this Reflow reads version 1)",
                self.version
            )));
        }
        if self.issuer.verify(&self.signing_bytes(), &sig) {
            Ok(())
        } else {
            Err(InviteError::BadSignature)
        }
    }

    /// Check everything that does not depend on the ledger: signature, network, expiry (by
    /// the redeeming admin's clock `now`), and that `redeemer` (with `secret`) may use it.
    pub fn check(
        &self,
        network: &NetworkId,
        redeemer: &DeviceId,
        secret: Option<&BearerSecret>,
        now: u64,
    ) -> Result<(), InviteError> {
        self.verify_signature()?;
        if &self.network != network {
            return Err(InviteError::WrongNetwork(self.network.to_string()));
        }
        if now >= self.expires_at {
            return Err(InviteError::Expired {
                expired_at: self.expires_at,
                now,
            });
        }
        match &self.audience {
            InviteAudience::Device { device } if device == redeemer => Ok(()),
            InviteAudience::Device { .. } => Err(InviteError::WrongDevice),
            InviteAudience::Bearer { secret_hash } => match secret {
                Some(s) if &s.hash_hex() == secret_hash => Ok(()),
                _ => Err(InviteError::WrongSecret),
            },
        }
    }

    /// The invite as one copyable line.
    pub fn to_text(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{INVITE_TEXT_PREFIX}{}", hex::encode(json))
    }

    /// Read an invite from [`Invite::to_text`].
    pub fn from_text(text: &str) -> Result<Invite, InviteError> {
        let body = text
            .trim()
            .strip_prefix(INVITE_TEXT_PREFIX)
            .ok_or_else(|| InviteError::Malformed("missing the reflow-invite-v1: prefix".into()))?;
        let bytes = hex::decode(body).map_err(|e| InviteError::Malformed(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| InviteError::Malformed(e.to_string()))
    }
}
