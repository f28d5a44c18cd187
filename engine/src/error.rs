//! The one error type of the `reflow` crate.

use std::fmt;

use crate::vf::{Action, Id, ObjectKind, UnknownAction};

/// Everything that can go wrong in Reflow. Each variant says what is wrong and, where it is
/// the caller's to fix, what to do. A validation error means nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The action name is not one of the ValueFlows actions.
    #[error(transparent)]
    UnknownAction(#[from] UnknownAction),

    /// A field the action requires is missing.
    #[error("a `{action}` event needs `{field}`: {hint}")]
    MissingField {
        /// The event's action.
        action: Action,
        /// The missing field, in ValueFlows spelling.
        field: &'static str,
        /// What to give.
        hint: &'static str,
    },

    /// A field is set that this action does not allow.
    #[error("a `{action}` event cannot have `{field}`: {hint}")]
    FieldNotAllowed {
        /// The event's action.
        action: Action,
        /// The field, in ValueFlows spelling.
        field: &'static str,
        /// Why not.
        hint: &'static str,
    },

    /// A field that VF 1.0 does not give to this kind of object.
    #[error("`{field}` does not apply to {to}: {hint}")]
    NotApplicable {
        /// The field.
        field: &'static str,
        /// What it was given to.
        to: &'static str,
        /// What to do.
        hint: &'static str,
    },

    /// A field refers to an object the ledger does not have.
    #[error("`{field}` refers to {kind} `{id}`, which this ledger does not have: create it first or check the id")]
    UnknownReference {
        /// The referring field.
        field: &'static str,
        /// The kind the id must have.
        kind: ObjectKind,
        /// The id.
        id: Id,
    },

    /// No object of that kind has that id.
    #[error("there is no {kind} `{id}` in this ledger")]
    NotFound {
        /// The kind looked for.
        kind: ObjectKind,
        /// The id.
        id: Id,
    },

    /// An object with that id already exists.
    #[error("a {kind} with id `{id}` already exists: pick another id, or update the existing one")]
    DuplicateId {
        /// The kind.
        kind: ObjectKind,
        /// The id.
        id: Id,
    },

    /// A quantity is below zero.
    #[error("`{field}` is {value}: quantities cannot be negative (use the action that decrements, e.g. consume or lower)")]
    NegativeQuantity {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
    },

    /// A number is NaN or infinite, or a quantity is too large or too precise.
    #[error("`{field}` is {value}: {hint}")]
    InvalidNumber {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        hint: &'static str,
    },

    /// The quantity's unit is not the resource's unit.
    #[error("`{field}` is in `{given}` but resource `{resource}` is counted in `{expected}`: convert the quantity to `{expected}`")]
    UnitMismatch {
        /// The field.
        field: &'static str,
        /// The resource.
        resource: Id,
        /// The resource's unit.
        expected: Id,
        /// The unit given.
        given: Id,
    },

    /// Economic resources are not created directly.
    #[error("an economic resource comes into being through an event: record a produce or raise event with `newInventoriedResource` (EconomicEvent::creating)")]
    ResourceNeedsEvent,

    /// `corrects` names something that is not an economic event.
    #[error("`corrects` must name an economic event, but `{id}` is a {kind}")]
    CorrectsNonEvent {
        /// The id given.
        id: Id,
        /// What it is.
        kind: ObjectKind,
    },

    /// `corrects` names an event that was already corrected.
    #[error("event `{event}` was already corrected by `{by}`: correct `{by}` instead")]
    AlreadyCorrected {
        /// The event named.
        event: Id,
        /// Its correction.
        by: Id,
    },

    /// An input is not valid JSON for the object it should describe.
    #[error("invalid {what}: {source}")]
    InvalidJson {
        /// What was being read.
        what: &'static str,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },

    /// The bytes received as a peer's saved document (a bootstrap) do not load as an
    /// Automerge document: truncated, corrupt, or not a document. Nothing was applied.
    #[error("the document received cannot be loaded: {0}")]
    BadDocument(String),

    /// The bytes are not a Reflow ledger (an Automerge document without Reflow's schema).
    #[error("not a Reflow ledger: {0}")]
    NotALedger(String),

    /// The ledger was written by a newer Reflow.
    #[error("this ledger has schema version {found}, this Reflow reads up to {supported}: upgrade Reflow")]
    UnsupportedSchemaVersion {
        /// The ledger's version.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },

    /// A schema-version-1 ledger is read-only until an admin migrates it to version 2
    /// (`Replica::migrate`; an admin's node does it when it opens the ledger).
    #[error("this ledger uses schema version 1 and is read-only until an admin's device migrates it to version 2 (open it with an admin's node, then sync)")]
    MigrationRequired,

    /// An object id is empty, too long or holds control characters.
    #[error("invalid id {id:?}: an id is 1 to 512 bytes without control characters")]
    InvalidId {
        /// The id given.
        id: crate::vf::Id,
    },

    /// The change this write would make is larger than any peer accepts.
    #[error("this write would make a change of {size} bytes ({ops} operations); the limit is {limit} bytes and {ops_limit} operations: record it in smaller batches")]
    ChangeTooLarge {
        /// Its size in bytes.
        size: usize,
        /// Its operations.
        ops: usize,
        /// The byte limit.
        limit: usize,
        /// The operation limit.
        ops_limit: usize,
    },

    /// Automerge refused an operation or could not load a document.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),

    /// The store file could not be read or written (disk full, permissions, I/O error).
    #[error("store {path}: {op} failed: {source}")]
    Storage {
        /// The store file.
        path: std::path::PathBuf,
        /// What was being done.
        op: &'static str,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },

    /// The disk holding the store is full: nothing of this operation was stored (the
    /// replica is still at its last stored state and serves reads). Free some space; the
    /// next write tries again.
    #[error("store {path}: {op} failed: the disk is full; nothing was stored, free some space and try again")]
    StoreFull {
        /// The store file.
        path: std::path::PathBuf,
        /// What was being done.
        op: &'static str,
    },

    /// A compaction prepared earlier would replace a newer snapshot (one holding changes the
    /// compaction's document lacks): it was not run, so that the store never goes back in
    /// time. Prepare a new one.
    #[error("compaction of `{network}` is older than the stored snapshot; it was not run: prepare a new one")]
    StaleCompaction {
        /// The network key.
        network: String,
    },

    /// The store file is damaged (truncated or corrupted). It was not modified.
    #[error("store {path} is damaged ({detail}); it was left untouched: restore it from a backup or another device, or move it away to start afresh")]
    CorruptStore {
        /// The store file.
        path: std::path::PathBuf,
        /// What redb found.
        detail: String,
    },

    /// The file exists but is not a Reflow store.
    #[error("{path} is not a Reflow store ({detail}); it was left untouched: check the path")]
    NotAStore {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        detail: String,
    },

    /// The store was written by a newer Reflow.
    #[error("store {path} has format version {found}, this Reflow reads up to {supported}: upgrade Reflow")]
    UnsupportedStoreVersion {
        /// The store file.
        path: std::path::PathBuf,
        /// The store's version.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },

    /// Another process has the store open.
    #[error("store {path} is already open in another process: close the other Reflow first")]
    StoreLocked {
        /// The store file.
        path: std::path::PathBuf,
    },

    /// The store already holds a ledger under this network key.
    #[error("the store already holds network `{network}`: open it instead of creating it")]
    NetworkExists {
        /// The network key.
        network: String,
    },

    /// The store holds no ledger for this network.
    #[error("the store has no ledger for network `{network}`: create or join it first")]
    UnknownNetwork {
        /// The network key.
        network: String,
    },

    /// A key, device id or network id that is not valid, or no randomness for a new key.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),

    /// The ledger's genesis change does not match the network id it is opened as.
    #[error("this ledger is not network {network}: its genesis change is missing or differs")]
    WrongNetwork {
        /// The expected network.
        network: String,
    },

    /// This device's own write would make a change that admission refuses (and so would
    /// every peer): e.g. an event between two other agents by a member, or an edit of
    /// another agent. Nothing was written.
    #[error("this write is refused by the network's rules: {reason}")]
    Refused {
        /// Why.
        reason: crate::membership::Rejection,
    },

    /// A rule set that does not compile (docs/rules.md). Nothing was written.
    #[error("the rule set is not valid: {0}")]
    InvalidRules(#[from] crate::rules::RuleError),

    /// The action needs a role this device does not have in the network.
    #[error("device {device} is {role} in this network; {action} needs {needed}")]
    NotAllowed {
        /// The device.
        device: String,
        /// Its current role ("not a member" if none).
        role: String,
        /// What it tried.
        action: &'static str,
        /// The role needed.
        needed: &'static str,
    },

    /// An invite could not be read or redeemed.
    #[error("invite refused: {0}")]
    Invite(#[from] crate::membership::InviteError),

    /// A planning or exchange operation was refused (nothing was written).
    #[error(transparent)]
    Planning(#[from] PlanningError),
}

/// Why a planning or exchange operation (fulfil, satisfy, settle, accept a proposal, plan
/// from a recipe) was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanningError {
    /// An event's `fulfills`, `satisfies` or `settles` names an object it cannot count for.
    #[error("`{field}` names {kind} `{target}`, but {detail}")]
    DoesNotMatch {
        /// The event's field.
        field: &'static str,
        /// The kind named.
        kind: ObjectKind,
        /// The object named.
        target: Id,
        /// What differs, and what to do.
        detail: String,
    },
    /// The proposal is not open any more.
    #[error("proposal `{proposal}` is {status}, not open: it cannot be accepted")]
    ProposalNotOpen {
        /// The proposal.
        proposal: Id,
        /// Its status.
        status: String,
    },
    /// The proposal is proposed to other agents only.
    #[error("proposal `{proposal}` is proposed to other agents, not to `{agent}`")]
    NotProposedTo {
        /// The proposal.
        proposal: Id,
        /// Who tried to accept.
        agent: Id,
    },
    /// The proposal publishes no intent.
    #[error("proposal `{proposal}` publishes no intent: there is nothing to accept")]
    EmptyProposal {
        /// The proposal.
        proposal: Id,
    },
    /// The recipe process has no recipe flows.
    #[error("recipe process `{recipe_process}` has no recipe flows (recipeInputOf/recipeOutputOf): add them first")]
    EmptyRecipe {
        /// The recipe process.
        recipe_process: Id,
    },
    /// An agent relationship's id is not the one its subject, relationship and object fix.
    #[error("agent relationship id `{given}` must be `{expected}` (its [subject, relationship, object]): leave the id empty to get it")]
    RelationshipId {
        /// The id given.
        given: Id,
        /// The id its parts fix.
        expected: Id,
    },
    /// A proposal's `purpose` contradicts an intent it publishes.
    #[error("proposal `{proposal}` has purpose {purpose}, but the intent `{intent}` it publishes {detail}")]
    PurposeContradicts {
        /// The proposal.
        proposal: Id,
        /// Its purpose (offer, request).
        purpose: &'static str,
        /// The intent.
        intent: Id,
        /// What contradicts.
        detail: &'static str,
    },
    /// A time filter or clock value is not an ISO 8601 date or date-time.
    #[error("`{field}` is {value:?}: give an ISO 8601 date (2026-03-01) or date-time (2026-03-01T10:00:00Z)")]
    InvalidTime {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a network's replica could not be opened, by kind (the node keeps such a network
/// unavailable, `crate::node::status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnavailableKind {
    /// The ledger (or its store) was written by a newer Reflow: upgrade Reflow.
    UnsupportedVersion,
    /// The network's stored data is damaged, or is not a Reflow ledger of this network.
    Damaged,
    /// The store could not be read (I/O error, permissions).
    Storage,
    /// Anything else (opening it stopped on a bug of this build).
    Other,
}

impl UnavailableKind {
    /// The kind of an error of opening a replica.
    pub fn of_error(e: &Error) -> UnavailableKind {
        match e {
            Error::UnsupportedSchemaVersion { .. } | Error::UnsupportedStoreVersion { .. } => {
                UnavailableKind::UnsupportedVersion
            }
            Error::CorruptStore { .. }
            | Error::NotALedger(_)
            | Error::NotAStore { .. }
            | Error::Automerge(_)
            | Error::WrongNetwork { .. }
            | Error::UnknownNetwork { .. }
            | Error::InvalidJson { .. } => UnavailableKind::Damaged,
            Error::Storage { .. } | Error::StoreFull { .. } | Error::StoreLocked { .. } => {
                UnavailableKind::Storage
            }
            _ => UnavailableKind::Other,
        }
    }

    /// A short description, for people (and for the peers refused).
    pub fn describe(self) -> &'static str {
        match self {
            UnavailableKind::UnsupportedVersion => "written by a newer Reflow",
            UnavailableKind::Damaged => "its stored data is damaged",
            UnavailableKind::Storage => "its store could not be read",
            UnavailableKind::Other => "it could not be opened",
        }
    }
}

impl fmt::Display for UnavailableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnavailableKind::UnsupportedVersion => "unsupported-version",
            UnavailableKind::Damaged => "damaged",
            UnavailableKind::Storage => "storage",
            UnavailableKind::Other => "other",
        })
    }
}
