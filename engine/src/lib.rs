#![doc = include_str!("../../README.md")]
//!
//! # Modules
//!
//! - [`vf`]: the ValueFlows model and the action table (pure data).
//! - [`Ledger`]: the network's ledger on one Automerge document, with validation.
//! - [`views`]: derived, cached, deterministic views: resources, conflicts, track and trace.
//!
//! See docs/architecture.md for how storage, identity and sync wrap this core.

pub mod admission;
pub mod error;
pub mod flows;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod interop;
mod judge;
mod ledger;
pub mod membership;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "net")]
pub mod node;
mod order;
pub mod planning;
mod rejudge;
pub mod replica;
pub mod rules;
mod schema;
pub mod store;
pub mod sync;
mod validate;
pub mod vf;
pub mod views;

pub use automerge::{ActorId, Change, ChangeHash};
pub use error::{Error, PlanningError, Result};
pub use flows::{FlowDimension, FlowQuery, FlowReport, FlowRow, Period};
pub use identity::{
    Attestation, ChangeSignature, DeviceId, DeviceKey, IdentityError, NetworkId, SignatureProblem,
    SignedChange,
};
pub use ledger::{
    EventFilter, Ledger, Object, ResourceFilter, ViewSnapshot, ViewsOrigin, SCHEMA_VERSION,
};
pub use membership::{
    BearerSecret, Invite, InviteAudience, InviteError, Member, Membership, MembershipRecord,
    Rejection, Role,
};
#[cfg(feature = "net")]
pub use net::{NetError, NetResult, PeerAddr};
#[cfg(feature = "net")]
pub use node::{
    LedgerUpdate, NetworkProblem, NetworkStatus, Node, NodeConfig, NodeEvent, PeerStatus,
    RelayConfig, UnavailableKind,
};
pub use planning::{
    Accepted, AgreementBundleStatus, AgreementStatus, ClaimStatus, CommitmentStatus, IntentStatus,
    NotCounted, PlanStatus, Planned, Progress, ProposalListStatus, RecipePlanning,
};
#[doc(hidden)]
pub use rejudge::judge_history;
pub use replica::{CutOff, Limits, Provenance, Quarantined, Receipt, Replica};
pub use rules::{CompiledRules, Finding, Outcome, Recorder, Rule, RuleError, RuleSet};
pub use store::{
    CompactionJob, CompactionPolicy, DurableLedger, DurableReplica, Store, StoreStats,
};
pub use sync::{Frame, FrameError, SyncError, SyncSession};
pub use vf::{
    Action, Agent, AgentKind, AgentRelationship, AgentRelationshipRole, Agreement, AgreementBundle,
    Claim, Commitment, EconomicEvent, EconomicResource, Id, Intent, Measure, NewEvent, ObjectKind,
    Plan, Process, ProcessSpecification, Proposal, ProposalList, ProposalPurpose, ProposalStatus,
    Quantity, Recipe, RecipeExchange, RecipeFlow, RecipeProcess, ResourceDescription,
    ResourceSpecification, SpatialThing, Unit, VfObject,
};
pub use views::{Conflict, QuantityKind, Trace, TraceNode, TraceStep, TransferOf};
