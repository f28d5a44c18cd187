//! The records that cross the FFI boundary, and their conversions from and to engine types.
//! Ids, hashes and quantities cross as strings (quantities are exact decimals: "2.5").

use std::net::SocketAddr;
use std::str::FromStr;

use reflow::{
    Action, Conflict, EconomicEvent, EconomicResource, EventFilter, Id, LedgerUpdate, Measure,
    Member, NewEvent, NodeEvent, PeerAddr, PeerStatus, Quantity, ResourceDescription,
    ResourceFilter, Role, Trace, TraceNode,
};

use crate::{invalid_arg, parse_device, ReflowError, Result};

fn id(text: Option<String>) -> Option<Id> {
    text.map(Id::from)
}

fn text(id: Option<Id>) -> Option<String> {
    id.map(|i| i.to_string())
}

fn texts(ids: Vec<Id>) -> Vec<String> {
    ids.into_iter().map(|i| i.to_string()).collect()
}

/// A quantity with its unit.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MeasureRecord {
    /// The number, an exact decimal ("5", "2.5").
    pub value: String,
    /// The unit's id ("kg", "one", "hour").
    pub unit: String,
}

impl TryFrom<MeasureRecord> for Measure {
    type Error = ReflowError;
    fn try_from(m: MeasureRecord) -> Result<Measure> {
        let value = Quantity::from_str(&m.value)
            .map_err(|e| invalid_arg(format!("quantity `{}`: {e}", m.value)))?;
        Ok(Measure::new(value, m.unit))
    }
}

impl From<Measure> for MeasureRecord {
    fn from(m: Measure) -> Self {
        MeasureRecord {
            value: m.has_numerical_value.to_string(),
            unit: m.has_unit.to_string(),
        }
    }
}

/// The agent a device acts for when it creates a network.
#[derive(Debug, Clone, uniffi::Record)]
pub struct AgentInput {
    /// Agent id.
    pub id: String,
    /// Name.
    pub name: String,
    /// An organization (else a person).
    #[uniffi(default = false)]
    pub organization: bool,
}

/// The resource an event creates (`produce`, `raise`; `transfer`, `move`, ... to a new
/// resource).
#[derive(Debug, Clone, uniffi::Record)]
pub struct ResourceDescriptionInput {
    /// Resource id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Serial or lot number.
    #[uniffi(default = None)]
    pub tracking_identifier: Option<String>,
    /// Resource specification.
    #[uniffi(default = None)]
    pub conforms_to: Option<String>,
    /// Unit of effort.
    #[uniffi(default = None)]
    pub unit_of_effort: Option<String>,
    /// Free text.
    #[uniffi(default = None)]
    pub note: Option<String>,
}

/// An economic event to record. `action` is a ValueFlows action name (`produce`,
/// `transfer`, `consume`, ...). Field meanings are the engine's `EconomicEvent`.
#[derive(Debug, Clone, uniffi::Record)]
pub struct EventInput {
    /// ValueFlows action name.
    pub action: String,
    /// Provider agent id.
    pub provider: String,
    /// Receiver agent id.
    pub receiver: String,
    /// The resource affected.
    #[uniffi(default = None)]
    pub resource_inventoried_as: Option<String>,
    /// The resource received (transfer, move, ...).
    #[uniffi(default = None)]
    pub to_resource_inventoried_as: Option<String>,
    /// Resource specification.
    #[uniffi(default = None)]
    pub resource_conforms_to: Option<String>,
    /// Resource quantity.
    #[uniffi(default = None)]
    pub resource_quantity: Option<MeasureRecord>,
    /// Effort quantity.
    #[uniffi(default = None)]
    pub effort_quantity: Option<MeasureRecord>,
    /// When (ISO 8601).
    #[uniffi(default = None)]
    pub has_point_in_time: Option<String>,
    /// Process it is an input of.
    #[uniffi(default = None)]
    pub input_of: Option<String>,
    /// Process it is an output of.
    #[uniffi(default = None)]
    pub output_of: Option<String>,
    /// Location.
    #[uniffi(default = None)]
    pub at_location: Option<String>,
    /// Destination.
    #[uniffi(default = None)]
    pub to_location: Option<String>,
    /// The event this one corrects.
    #[uniffi(default = None)]
    pub corrects: Option<String>,
    /// Agreement it realizes.
    #[uniffi(default = None)]
    pub realization_of: Option<String>,
    /// Commitment it fulfils.
    #[uniffi(default = None)]
    pub fulfills: Option<String>,
    /// Intent it satisfies directly.
    #[uniffi(default = None)]
    pub satisfies: Option<String>,
    /// Claim it settles.
    #[uniffi(default = None)]
    pub settles: Option<String>,
    /// State after a test or review.
    #[uniffi(default = None)]
    pub state: Option<String>,
    /// Free text.
    #[uniffi(default = None)]
    pub note: Option<String>,
    /// The resource this event creates.
    #[uniffi(default = None)]
    pub creates: Option<ResourceDescriptionInput>,
}

impl TryFrom<EventInput> for NewEvent {
    type Error = ReflowError;
    fn try_from(e: EventInput) -> Result<NewEvent> {
        let action = Action::from_str(&e.action).map_err(|err| ReflowError::Invalid {
            message: reflow::Error::from(err).to_string(),
        })?;
        let mut event = EconomicEvent::new(action, e.provider, e.receiver);
        event.resource_inventoried_as = id(e.resource_inventoried_as);
        event.to_resource_inventoried_as = id(e.to_resource_inventoried_as);
        event.resource_conforms_to = id(e.resource_conforms_to);
        event.resource_quantity = e.resource_quantity.map(Measure::try_from).transpose()?;
        event.effort_quantity = e.effort_quantity.map(Measure::try_from).transpose()?;
        event.has_point_in_time = e.has_point_in_time;
        event.input_of = id(e.input_of);
        event.output_of = id(e.output_of);
        event.at_location = id(e.at_location);
        event.to_location = id(e.to_location);
        event.corrects = id(e.corrects);
        event.realization_of = id(e.realization_of);
        event.fulfills = id(e.fulfills);
        event.satisfies = id(e.satisfies);
        event.settles = id(e.settles);
        event.state = e.state;
        event.note = e.note;
        Ok(match e.creates {
            Some(r) => {
                let mut description = ResourceDescription::new(r.id, r.name);
                description.tracking_identifier = r.tracking_identifier;
                description.conforms_to = id(r.conforms_to);
                description.unit_of_effort = id(r.unit_of_effort);
                description.note = r.note;
                event.creating(description)
            }
            None => event.into(),
        })
    }
}

/// A recorded economic event.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EventRecord {
    /// Event id.
    pub id: String,
    /// ValueFlows action name.
    pub action: String,
    /// Provider agent id.
    pub provider: Option<String>,
    /// Receiver agent id.
    pub receiver: Option<String>,
    /// The resource affected.
    pub resource_inventoried_as: Option<String>,
    /// The resource received.
    pub to_resource_inventoried_as: Option<String>,
    /// Resource specification.
    pub resource_conforms_to: Option<String>,
    /// Resource quantity.
    pub resource_quantity: Option<MeasureRecord>,
    /// Effort quantity.
    pub effort_quantity: Option<MeasureRecord>,
    /// When.
    pub has_point_in_time: Option<String>,
    /// Process it is an input of.
    pub input_of: Option<String>,
    /// Process it is an output of.
    pub output_of: Option<String>,
    /// Location.
    pub at_location: Option<String>,
    /// Destination.
    pub to_location: Option<String>,
    /// The event it corrects.
    pub corrects: Option<String>,
    /// Agreement it realizes.
    pub realization_of: Option<String>,
    /// Commitment it fulfils.
    pub fulfills: Option<String>,
    /// Intent it satisfies.
    pub satisfies: Option<String>,
    /// Claim it settles.
    pub settles: Option<String>,
    /// State.
    pub state: Option<String>,
    /// Free text.
    pub note: Option<String>,
    /// The resource it created.
    pub created_resource: Option<String>,
}

impl From<EconomicEvent> for EventRecord {
    fn from(e: EconomicEvent) -> Self {
        EventRecord {
            id: e.id.to_string(),
            action: e.action.as_str().to_string(),
            provider: text(e.provider),
            receiver: text(e.receiver),
            resource_inventoried_as: text(e.resource_inventoried_as),
            to_resource_inventoried_as: text(e.to_resource_inventoried_as),
            resource_conforms_to: text(e.resource_conforms_to),
            resource_quantity: e.resource_quantity.map(Into::into),
            effort_quantity: e.effort_quantity.map(Into::into),
            has_point_in_time: e.has_point_in_time,
            input_of: text(e.input_of),
            output_of: text(e.output_of),
            at_location: text(e.at_location),
            to_location: text(e.to_location),
            corrects: text(e.corrects),
            realization_of: text(e.realization_of),
            fulfills: text(e.fulfills),
            satisfies: text(e.satisfies),
            settles: text(e.settles),
            state: e.state,
            note: e.note,
            created_resource: text(e.created_resource),
        }
    }
}

/// Which events to list (all fields optional).
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct EventFilterInput {
    /// Only this action.
    #[uniffi(default = None)]
    pub action: Option<String>,
    /// Only events with this agent as provider or receiver.
    #[uniffi(default = None)]
    pub agent: Option<String>,
    /// Only events on this resource.
    #[uniffi(default = None)]
    pub resource: Option<String>,
    /// Only events of this process.
    #[uniffi(default = None)]
    pub process: Option<String>,
    /// Also corrected events.
    #[uniffi(default = false)]
    pub include_corrected: bool,
}

impl TryFrom<EventFilterInput> for EventFilter {
    type Error = ReflowError;
    fn try_from(f: EventFilterInput) -> Result<EventFilter> {
        let action = f
            .action
            .map(|a| Action::from_str(&a))
            .transpose()
            .map_err(|err| ReflowError::Invalid {
                message: reflow::Error::from(err).to_string(),
            })?;
        Ok(EventFilter {
            action,
            agent: id(f.agent),
            resource: id(f.resource),
            process: id(f.process),
            include_corrected: f.include_corrected,
        })
    }
}

/// Which resources to list (all fields optional).
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct ResourceFilterInput {
    /// Only resources of this specification.
    #[uniffi(default = None)]
    pub conforms_to: Option<String>,
    /// Only resources this agent is primary accountable for.
    #[uniffi(default = None)]
    pub primary_accountable: Option<String>,
    /// Only resources this agent holds.
    #[uniffi(default = None)]
    pub custodian: Option<String>,
    /// Only resources at this location.
    #[uniffi(default = None)]
    pub location: Option<String>,
    /// Also empty resources.
    #[uniffi(default = false)]
    pub include_empty: bool,
    /// Also resources removed by corrections.
    #[uniffi(default = false)]
    pub include_removed: bool,
}

impl From<ResourceFilterInput> for ResourceFilter {
    fn from(f: ResourceFilterInput) -> Self {
        ResourceFilter {
            conforms_to: id(f.conforms_to),
            primary_accountable: id(f.primary_accountable),
            custodian: id(f.custodian),
            location: id(f.location),
            include_empty: f.include_empty,
            include_removed: f.include_removed,
        }
    }
}

/// A resource as its events made it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ResourceRecord {
    /// Resource id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Serial or lot number.
    pub tracking_identifier: Option<String>,
    /// Resource specification.
    pub conforms_to: Option<String>,
    /// Accounting quantity.
    pub accounting_quantity: MeasureRecord,
    /// Onhand quantity.
    pub onhand_quantity: MeasureRecord,
    /// Where it is.
    pub current_location: Option<String>,
    /// Primary accountable agent.
    pub primary_accountable: Option<String>,
    /// Custodian agent.
    pub custodian: Option<String>,
    /// Container resource.
    pub contained_in: Option<String>,
    /// Stage (process specification).
    pub stage: Option<String>,
    /// State.
    pub state: Option<String>,
    /// Unit of effort.
    pub unit_of_effort: Option<String>,
    /// Free text.
    pub note: Option<String>,
    /// The correction that removed it, if it was removed.
    pub removed_by: Option<String>,
}

impl From<EconomicResource> for ResourceRecord {
    fn from(r: EconomicResource) -> Self {
        ResourceRecord {
            id: r.id.to_string(),
            name: r.name,
            tracking_identifier: r.tracking_identifier,
            conforms_to: text(r.conforms_to),
            accounting_quantity: r.accounting_quantity.into(),
            onhand_quantity: r.onhand_quantity.into(),
            current_location: text(r.current_location),
            primary_accountable: text(r.primary_accountable),
            custodian: text(r.custodian),
            contained_in: text(r.contained_in),
            stage: text(r.stage),
            state: r.state,
            unit_of_effort: text(r.unit_of_effort),
            note: r.note,
            removed_by: text(r.removed_by),
        }
    }
}

/// A conflict in the ledger (see the engine's `Conflict`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ConflictRecord {
    /// A resource's quantity went below zero.
    Overdraw {
        /// The resource.
        resource: String,
        /// The event that overdrew it.
        event: String,
        /// "accounting" or "onhand".
        quantity: String,
        /// The balance after the event.
        balance: MeasureRecord,
        /// Earlier concurrent decrements.
        competing: Vec<String>,
    },
    /// The same provider handed the same resource on twice.
    DoubleTransfer {
        /// The resource.
        resource: String,
        /// The later event.
        event: String,
        /// The earlier event.
        earlier: String,
        /// "custody" or "rights".
        of: String,
    },
    /// An event on a resource removed by a correction.
    EventOnRemovedResource {
        /// The resource.
        resource: String,
        /// The event.
        event: String,
        /// The correction that removed it.
        removed_by: String,
    },
    /// One event corrected concurrently more than once.
    ConcurrentCorrections {
        /// The corrected event.
        corrected: String,
        /// The correction that counts.
        applied: String,
        /// The ones that do not.
        superseded: Vec<String>,
    },
    /// A quantity overflowed.
    QuantityOverflow {
        /// The resource.
        resource: String,
        /// The event.
        event: String,
    },
    /// An event that is invalid in the merged ledger.
    InvalidEvent {
        /// The event.
        event: String,
        /// Why.
        reason: String,
    },
    /// An event breaks a flag rule of the network's rules, or a rule failed to evaluate for
    /// it (docs/rules.md); the event stands.
    RuleViolation {
        /// The event.
        event: String,
        /// The rule's name.
        rule: String,
        /// "flag", or "refuse" for a refuse rule that failed to evaluate.
        outcome: String,
        /// The rule's message, or what went wrong.
        message: String,
        /// The rule set version that judged it.
        version: u64,
        /// The evaluation error, if the rule could not be evaluated.
        error: Option<String>,
    },
    /// Flows naming a commitment, intent or claim add up to more than it asked for.
    Overfilled {
        /// "commitment", "intent" or "claim".
        kind: String,
        /// Its id.
        target: String,
        /// The event (or commitment) that took the total over.
        by: String,
        /// What was asked.
        wanted: MeasureRecord,
        /// What the flows add up to.
        total: MeasureRecord,
        /// Earlier concurrent ones.
        competing: Vec<String>,
    },
    /// A conflict kind these bindings do not know yet.
    Other {
        /// The event.
        event: String,
        /// Its description.
        detail: String,
    },
}

fn lower_debug(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}").to_lowercase()
}

impl From<Conflict> for ConflictRecord {
    fn from(c: Conflict) -> Self {
        #[allow(unreachable_patterns)]
        match c {
            Conflict::Overdraw {
                resource,
                event,
                quantity,
                balance,
                competing,
            } => ConflictRecord::Overdraw {
                resource: resource.to_string(),
                event: event.to_string(),
                quantity: lower_debug(&quantity),
                balance: balance.into(),
                competing: texts(competing),
            },
            Conflict::DoubleTransfer {
                resource,
                event,
                earlier,
                of,
            } => ConflictRecord::DoubleTransfer {
                resource: resource.to_string(),
                event: event.to_string(),
                earlier: earlier.to_string(),
                of: lower_debug(&of),
            },
            Conflict::EventOnRemovedResource {
                resource,
                event,
                removed_by,
            } => ConflictRecord::EventOnRemovedResource {
                resource: resource.to_string(),
                event: event.to_string(),
                removed_by: removed_by.to_string(),
            },
            Conflict::ConcurrentCorrections {
                corrected,
                applied,
                superseded,
            } => ConflictRecord::ConcurrentCorrections {
                corrected: corrected.to_string(),
                applied: applied.to_string(),
                superseded: texts(superseded),
            },
            Conflict::QuantityOverflow { resource, event } => ConflictRecord::QuantityOverflow {
                resource: resource.to_string(),
                event: event.to_string(),
            },
            Conflict::InvalidEvent { event, reason } => ConflictRecord::InvalidEvent {
                event: event.to_string(),
                reason,
            },
            Conflict::RuleViolation {
                event,
                rule,
                outcome,
                message,
                version,
                error,
            } => ConflictRecord::RuleViolation {
                event: event.to_string(),
                rule,
                outcome: outcome.to_string(),
                message,
                version,
                error,
            },
            Conflict::OverFulfilment {
                commitment,
                event,
                committed,
                fulfilled,
                competing,
            } => ConflictRecord::Overfilled {
                kind: "commitment".into(),
                target: commitment.to_string(),
                by: event.to_string(),
                wanted: committed.into(),
                total: fulfilled.into(),
                competing: texts(competing),
            },
            Conflict::OverSatisfaction {
                intent,
                by,
                wanted,
                satisfied,
                competing,
            } => ConflictRecord::Overfilled {
                kind: "intent".into(),
                target: intent.to_string(),
                by: by.to_string(),
                wanted: wanted.into(),
                total: satisfied.into(),
                competing: texts(competing),
            },
            Conflict::OverSettlement {
                claim,
                event,
                claimed,
                settled,
                competing,
            } => ConflictRecord::Overfilled {
                kind: "claim".into(),
                target: claim.to_string(),
                by: event.to_string(),
                wanted: claimed.into(),
                total: settled.into(),
                competing: texts(competing),
            },
            other => ConflictRecord::Other {
                event: other.event().to_string(),
                detail: format!("{other:?}"),
            },
        }
    }
}

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RoleKind {
    /// Reads only.
    Observer,
    /// Reads and writes the ledger.
    Member,
    /// Reads, writes, admits and removes members.
    Admin,
}

impl From<RoleKind> for Role {
    fn from(r: RoleKind) -> Self {
        match r {
            RoleKind::Observer => Role::Observer,
            RoleKind::Member => Role::Member,
            RoleKind::Admin => Role::Admin,
        }
    }
}

impl From<Role> for RoleKind {
    fn from(r: Role) -> Self {
        match r {
            Role::Observer => RoleKind::Observer,
            Role::Member => RoleKind::Member,
            Role::Admin => RoleKind::Admin,
        }
    }
}

/// A member of a network.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MemberRecord {
    /// Device id.
    pub device: String,
    /// Role.
    pub role: RoleKind,
    /// The agent it acts for.
    pub agent: String,
    /// The device that admitted it.
    pub added_by: String,
    /// The invite it redeemed, if any.
    pub invite: Option<String>,
}

impl From<Member> for MemberRecord {
    fn from(m: Member) -> Self {
        MemberRecord {
            device: m.device.to_string(),
            role: m.role.into(),
            agent: m.agent.to_string(),
            added_by: m.added_by.to_string(),
            invite: m.invite,
        }
    }
}

/// Where a device can be dialed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PeerAddrRecord {
    /// Device id (hex).
    pub device: String,
    /// Direct UDP addresses ("127.0.0.1:4433").
    #[uniffi(default = [])]
    pub direct: Vec<String>,
    /// Relay URLs.
    #[uniffi(default = [])]
    pub relays: Vec<String>,
}

impl From<PeerAddr> for PeerAddrRecord {
    fn from(a: PeerAddr) -> Self {
        PeerAddrRecord {
            device: a.device.to_string(),
            direct: a.direct.iter().map(ToString::to_string).collect(),
            relays: a.relays,
        }
    }
}

impl TryFrom<PeerAddrRecord> for PeerAddr {
    type Error = ReflowError;
    fn try_from(a: PeerAddrRecord) -> Result<PeerAddr> {
        let mut addr = PeerAddr::new(parse_device(&a.device)?);
        addr.direct = a
            .direct
            .iter()
            .map(|d| {
                SocketAddr::from_str(d).map_err(|e| invalid_arg(format!("address `{d}`: {e}")))
            })
            .collect::<Result<_>>()?;
        addr.relays = a.relays;
        Ok(addr)
    }
}

/// What this node knows of a peer.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PeerStatusRecord {
    /// Device id.
    pub device: String,
    /// Whether a connection is open now.
    pub connected: bool,
    /// The heads it last told us it has.
    pub their_heads: Option<Vec<String>>,
    /// The last error of a connection with it.
    pub last_error: Option<String>,
}

impl From<PeerStatus> for PeerStatusRecord {
    fn from(p: PeerStatus) -> Self {
        PeerStatusRecord {
            device: p.device.to_string(),
            connected: p.connected,
            their_heads: p
                .their_heads
                .map(|h| h.iter().map(ToString::to_string).collect()),
            last_error: p.last_error,
        }
    }
}

/// New changes in a network's replica.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LedgerUpdateRecord {
    /// Network id.
    pub network: String,
    /// The changes, in the order applied (hashes, hex).
    pub changes: Vec<String>,
    /// The replica's heads after them.
    pub heads: Vec<String>,
    /// The peer they came from; none if made on this node.
    pub from_device: Option<String>,
}

impl From<LedgerUpdate> for LedgerUpdateRecord {
    fn from(u: LedgerUpdate) -> Self {
        LedgerUpdateRecord {
            network: u.network.to_string(),
            changes: u.changes.iter().map(ToString::to_string).collect(),
            heads: u.heads.iter().map(ToString::to_string).collect(),
            from_device: u.from.map(|d| d.to_string()),
        }
    }
}

/// Something that happened on the node's connections.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum NodeEventRecord {
    /// A sync connection opened.
    Connected {
        /// Network id.
        network: String,
        /// Peer device id.
        peer: String,
        /// Whether the peer dialed us.
        inbound: bool,
    },
    /// A sync connection closed.
    Disconnected {
        /// Network id.
        network: String,
        /// Peer device id.
        peer: String,
        /// Why, if not a normal close.
        error: Option<String>,
    },
    /// A connection was refused, by this node (`by_us`) or by the peer.
    Refused {
        /// Network id.
        network: String,
        /// Peer device id.
        peer: String,
        /// Whether this node refused.
        by_us: bool,
        /// The refusal code.
        code: String,
        /// Why.
        reason: String,
    },
    /// An incoming connection failed its handshake.
    HandshakeFailed {
        /// What failed.
        detail: String,
    },
    /// A peer sent changes that were refused and quarantined.
    ChangesRefused {
        /// Network id.
        network: String,
        /// Peer device id.
        peer: String,
        /// How many.
        count: u64,
        /// The first reason.
        reason: String,
    },
    /// A Reflow device was found on the local network (mDNS); the node connects to it for
    /// `networks`.
    Discovered {
        /// Where it can be dialed.
        peer: PeerAddrRecord,
        /// The networks of this node in which it is a member.
        networks: Vec<String>,
    },
    /// This (admin's) node redeemed a ticket: `device` is a member now.
    InviteRedeemed {
        /// Network id.
        network: String,
        /// The new member's device id.
        device: String,
        /// Its role.
        role: RoleKind,
        /// The invite's nonce (recorded in the ledger).
        nonce: String,
    },
    /// The node will try to reconnect to a member after `after_ms` milliseconds.
    RetryScheduled {
        /// Network id.
        network: String,
        /// Peer device id.
        peer: String,
        /// Which attempt this will be (1, 2, ...).
        attempt: u32,
        /// In how long, in milliseconds.
        after_ms: u64,
    },
    /// An event these bindings do not know yet.
    Other {
        /// Its description.
        detail: String,
    },
}

impl From<NodeEvent> for NodeEventRecord {
    fn from(e: NodeEvent) -> Self {
        match e {
            NodeEvent::Connected {
                network,
                peer,
                inbound,
            } => NodeEventRecord::Connected {
                network: network.to_string(),
                peer: peer.to_string(),
                inbound,
            },
            NodeEvent::Disconnected {
                network,
                peer,
                error,
            } => NodeEventRecord::Disconnected {
                network: network.to_string(),
                peer: peer.to_string(),
                error,
            },
            NodeEvent::Refused {
                network,
                peer,
                by_us,
                code,
                reason,
            } => NodeEventRecord::Refused {
                network: network.to_string(),
                peer: peer.to_string(),
                by_us,
                code: code.to_string(),
                reason,
            },
            NodeEvent::HandshakeFailed { detail } => NodeEventRecord::HandshakeFailed { detail },
            NodeEvent::ChangesRefused {
                network,
                peer,
                count,
                reason,
            } => NodeEventRecord::ChangesRefused {
                network: network.to_string(),
                peer: peer.to_string(),
                count: u64::try_from(count).unwrap_or(u64::MAX),
                reason,
            },
            NodeEvent::Discovered { peer, networks } => NodeEventRecord::Discovered {
                peer: peer.into(),
                networks: networks.iter().map(ToString::to_string).collect(),
            },
            NodeEvent::InviteRedeemed {
                network,
                device,
                role,
                nonce,
            } => NodeEventRecord::InviteRedeemed {
                network: network.to_string(),
                device: device.to_string(),
                role: role.into(),
                nonce,
            },
            NodeEvent::RetryScheduled {
                network,
                peer,
                attempt,
                after,
            } => NodeEventRecord::RetryScheduled {
                network: network.to_string(),
                peer: peer.to_string(),
                attempt,
                after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            },
            other => NodeEventRecord::Other {
                detail: format!("{other:?}"),
            },
        }
    }
}

/// What a step of a trace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TraceNodeKind {
    /// An economic resource.
    Resource,
    /// An economic event.
    Event,
    /// A process.
    Process,
}

/// One step of a trace or a track.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TraceStepRecord {
    /// Distance from the start, in flows (0 for the starting resource).
    pub depth: u32,
    /// What the step is.
    pub kind: TraceNodeKind,
    /// Its id.
    pub id: String,
    /// The event's action, for an event.
    pub action: Option<String>,
}

/// The result of a trace (backwards) or a track (forwards), in the order the walk reached
/// the steps (depth-first).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TraceRecord {
    /// The resource the walk started from.
    pub start: String,
    /// The steps.
    pub steps: Vec<TraceStepRecord>,
}

impl From<Trace> for TraceRecord {
    fn from(t: Trace) -> Self {
        TraceRecord {
            start: t.start.to_string(),
            steps: t
                .steps
                .into_iter()
                .map(|s| {
                    let depth = u32::try_from(s.depth).unwrap_or(u32::MAX);
                    let (kind, id, action) = match s.node {
                        TraceNode::EconomicResource { id } => (TraceNodeKind::Resource, id, None),
                        TraceNode::EconomicEvent { id, action } => {
                            (TraceNodeKind::Event, id, Some(action.as_str().to_string()))
                        }
                        TraceNode::Process { id } => (TraceNodeKind::Process, id, None),
                    };
                    TraceStepRecord {
                        depth,
                        kind,
                        id: id.to_string(),
                        action,
                    }
                })
                .collect(),
        }
    }
}

/// Why a network's replica could not be opened, by kind (the engine's
/// [`reflow::UnavailableKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum UnavailableKindRecord {
    /// Written by a newer Reflow: upgrade.
    UnsupportedVersion,
    /// The network's stored data is damaged, or is not a ledger of this network.
    Damaged,
    /// The store could not be read.
    Storage,
    /// Anything else.
    Other,
}

impl From<reflow::UnavailableKind> for UnavailableKindRecord {
    fn from(k: reflow::UnavailableKind) -> Self {
        use reflow::UnavailableKind as K;
        match k {
            K::UnsupportedVersion => UnavailableKindRecord::UnsupportedVersion,
            K::Damaged => UnavailableKindRecord::Damaged,
            K::Storage => UnavailableKindRecord::Storage,
            _ => UnavailableKindRecord::Other,
        }
    }
}

/// Whether a network of the node can be used (the engine's [`reflow::NetworkStatus`]).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum NetworkStatusRecord {
    /// Its replica is open: it is read, written and synced.
    Available,
    /// Its replica could not be opened: every call on it fails with
    /// `ReflowError::NetworkUnavailable`, it is not served to peers, and its stored data is
    /// kept as it is.
    Unavailable {
        /// Why, by kind.
        kind: UnavailableKindRecord,
        /// Why, for people.
        reason: String,
    },
}

impl From<reflow::NetworkStatus> for NetworkStatusRecord {
    fn from(s: reflow::NetworkStatus) -> Self {
        match s {
            reflow::NetworkStatus::Available => NetworkStatusRecord::Available,
            reflow::NetworkStatus::Unavailable { kind, reason } => {
                NetworkStatusRecord::Unavailable {
                    kind: kind.into(),
                    reason,
                }
            }
        }
    }
}

/// A network the node holds but could not open (the engine's [`reflow::NetworkProblem`]).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NetworkProblemRecord {
    /// The network id (hex).
    pub network: String,
    /// Why, by kind.
    pub kind: UnavailableKindRecord,
    /// Why, for people.
    pub reason: String,
}

impl From<reflow::NetworkProblem> for NetworkProblemRecord {
    fn from(p: reflow::NetworkProblem) -> Self {
        NetworkProblemRecord {
            network: p.network.to_string(),
            kind: p.kind.into(),
            reason: p.reason,
        }
    }
}

/// What a rule says of an event (`test_rules`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RuleFindingRecord {
    /// The rule's name.
    pub rule: String,
    /// "refuse" or "flag".
    pub outcome: String,
    /// The rule's message, or what went wrong evaluating it.
    pub message: String,
    /// The evaluation error, if the rule could not be evaluated.
    pub error: Option<String>,
}

impl From<reflow::Finding> for RuleFindingRecord {
    fn from(f: reflow::Finding) -> Self {
        RuleFindingRecord {
            rule: f.rule,
            outcome: f.outcome.to_string(),
            message: f.message,
            error: f.error,
        }
    }
}

/// A change refused by a rule.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RuleRefusalRecord {
    /// The refused change (hex).
    pub change: String,
    /// Why, in words.
    pub reason: String,
    /// The rule's name.
    pub rule: String,
}
