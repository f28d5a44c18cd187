//! The ValueFlows objects Reflow stores, named as in the VF 1.0 vocabulary.
//!
//! Field names serialise in the vocabulary's camelCase (`resourceInventoriedAs`,
//! `hasNumericalValue`), so the stored JSON reads like the spec's own examples.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::vf::{Action, Measure};

/// Unmodelled properties of an imported node: property IRI to its values in expanded JSON-LD
/// form (an array of `{"@id": ...}` or `{"@value": ...}` objects).
pub type OtherProperties = std::collections::BTreeMap<String, serde_json::Value>;

/// The id of any object in a ledger.
///
/// Ids are opaque strings. Economic events get Automerge's own id for the list element that
/// holds them (`<counter>@<actor>`), which is unique and orders events causally (see
/// docs/data-model.md). Other objects take a caller-chosen id (e.g. `kg`) or a generated one.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Id(pub String);

impl Id {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id(s.to_owned())
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id(s)
    }
}

impl From<&Id> for Id {
    fn from(s: &Id) -> Self {
        s.clone()
    }
}

/// The kinds of object a ledger holds; each lives under its own root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectKind {
    /// [`Agent`].
    Agent,
    /// [`Unit`].
    Unit,
    /// [`SpatialThing`].
    SpatialThing,
    /// [`ResourceSpecification`].
    ResourceSpecification,
    /// [`ProcessSpecification`].
    ProcessSpecification,
    /// [`Process`].
    Process,
    /// [`EconomicResource`] (its descriptive part; quantities are derived from events).
    EconomicResource,
    /// [`EconomicEvent`].
    EconomicEvent,
    /// [`Commitment`].
    Commitment,
    /// [`Intent`].
    Intent,
    /// [`Plan`].
    Plan,
    /// [`Proposal`].
    Proposal,
    /// [`Agreement`].
    Agreement,
    /// A network's rule set ([`crate::rules::RuleSet`]; Reflow's own kind, not ValueFlows).
    RuleSet,
    /// [`Claim`].
    Claim,
    /// [`Recipe`].
    Recipe,
    /// [`RecipeProcess`].
    RecipeProcess,
    /// [`RecipeFlow`].
    RecipeFlow,
    /// [`RecipeExchange`].
    RecipeExchange,
    /// [`AgentRelationship`].
    AgentRelationship,
    /// [`AgentRelationshipRole`].
    AgentRelationshipRole,
    /// [`AgreementBundle`].
    AgreementBundle,
    /// [`ProposalList`].
    ProposalList,
}

impl ObjectKind {
    /// The root key of the Automerge document under which objects of this kind are stored.
    pub fn root_key(self) -> &'static str {
        match self {
            ObjectKind::Agent => "agents",
            ObjectKind::Unit => "units",
            ObjectKind::SpatialThing => "locations",
            ObjectKind::ResourceSpecification => "resourceSpecifications",
            ObjectKind::ProcessSpecification => "processSpecifications",
            ObjectKind::Process => "processes",
            ObjectKind::EconomicResource => "resources",
            ObjectKind::EconomicEvent => "events",
            ObjectKind::Commitment => "commitments",
            ObjectKind::Intent => "intents",
            ObjectKind::Plan => "plans",
            ObjectKind::Proposal => "proposals",
            ObjectKind::Agreement => "agreements",
            ObjectKind::RuleSet => "ruleSets",
            ObjectKind::Claim => "claims",
            ObjectKind::Recipe => "recipes",
            ObjectKind::RecipeProcess => "recipeProcesses",
            ObjectKind::RecipeFlow => "recipeFlows",
            ObjectKind::RecipeExchange => "recipeExchanges",
            ObjectKind::AgentRelationship => "agentRelationships",
            ObjectKind::AgentRelationshipRole => "agentRelationshipRoles",
            ObjectKind::AgreementBundle => "agreementBundles",
            ObjectKind::ProposalList => "proposalLists",
        }
    }

    /// Every kind whose objects are mutable maps (all but events).
    pub const MAPS: [ObjectKind; 22] = [
        ObjectKind::Agent,
        ObjectKind::Unit,
        ObjectKind::SpatialThing,
        ObjectKind::ResourceSpecification,
        ObjectKind::ProcessSpecification,
        ObjectKind::Process,
        ObjectKind::EconomicResource,
        ObjectKind::Commitment,
        ObjectKind::Intent,
        ObjectKind::Plan,
        ObjectKind::Proposal,
        ObjectKind::Agreement,
        ObjectKind::RuleSet,
        ObjectKind::Claim,
        ObjectKind::Recipe,
        ObjectKind::RecipeProcess,
        ObjectKind::RecipeFlow,
        ObjectKind::RecipeExchange,
        ObjectKind::AgentRelationship,
        ObjectKind::AgentRelationshipRole,
        ObjectKind::AgreementBundle,
        ObjectKind::ProposalList,
    ];
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ObjectKind::Agent => "agent",
            ObjectKind::Unit => "unit",
            ObjectKind::SpatialThing => "location",
            ObjectKind::ResourceSpecification => "resource specification",
            ObjectKind::ProcessSpecification => "process specification",
            ObjectKind::Process => "process",
            ObjectKind::EconomicResource => "economic resource",
            ObjectKind::EconomicEvent => "economic event",
            ObjectKind::Commitment => "commitment",
            ObjectKind::Intent => "intent",
            ObjectKind::Plan => "plan",
            ObjectKind::Proposal => "proposal",
            ObjectKind::Agreement => "agreement",
            ObjectKind::RuleSet => "rule set",
            ObjectKind::Claim => "claim",
            ObjectKind::Recipe => "recipe",
            ObjectKind::RecipeProcess => "recipe process",
            ObjectKind::RecipeFlow => "recipe flow",
            ObjectKind::RecipeExchange => "recipe exchange",
            ObjectKind::AgentRelationship => "agent relationship",
            ObjectKind::AgentRelationshipRole => "agent relationship role",
            ObjectKind::AgreementBundle => "agreement bundle",
            ObjectKind::ProposalList => "proposal list",
        };
        f.write_str(s)
    }
}

/// A ValueFlows object stored as a mutable Automerge map (every kind but events).
///
/// Implemented by the structs in this module; the ledger's generic create/get/list/update
/// work through it.
pub trait VfObject: Serialize + serde::de::DeserializeOwned + Clone {
    /// Which kind this is.
    const KIND: ObjectKind;
    /// The object's id.
    fn id(&self) -> &Id;
    /// Set the object's id (used when the ledger generates one).
    fn set_id(&mut self, id: Id);
    /// Every id this object refers to, with the kind it must have.
    fn references(&self) -> Vec<(ObjectKind, &Id)> {
        Vec::new()
    }
}

macro_rules! vf_object {
    ($ty:ident, $kind:ident, |$s:ident| $refs:expr) => {
        impl VfObject for $ty {
            const KIND: ObjectKind = ObjectKind::$kind;
            fn id(&self) -> &Id {
                &self.id
            }
            fn set_id(&mut self, id: Id) {
                self.id = id;
            }
            fn references(&self) -> Vec<(ObjectKind, &Id)> {
                let $s = self;
                $refs
            }
        }
    };
}

fn opt(kind: ObjectKind, id: &Option<Id>) -> Option<(ObjectKind, &Id)> {
    id.as_ref().map(|i| (kind, i))
}

/// Whether an agent is a person or an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum AgentKind {
    /// A natural person.
    #[default]
    Person,
    /// An organization: a café, a cooperative, a market, a city department.
    Organization,
}

/// A person or organization that takes part in economic activity (`vf:Agent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Person or organization.
    pub agent_kind: AgentKind,
    /// Display name.
    pub name: String,
    /// Where the agent is usually found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_location: Option<Id>,
    /// Classifications (`classifiedAs`: tags or taxonomy IRIs, "repair café", "market
    /// stall"). VF 1.0 gives `classifiedAs` to organizations (and ecological agents), not to
    /// persons: a local write refuses it on a person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classified_as: Vec<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(Agent, Agent, |s| opt(
    ObjectKind::SpatialThing,
    &s.primary_location
)
.into_iter()
.collect());

impl Agent {
    /// A person called `name`, with the given id.
    pub fn person(id: impl Into<Id>, name: impl Into<String>) -> Self {
        Agent {
            id: id.into(),
            agent_kind: AgentKind::Person,
            name: name.into(),
            primary_location: None,
            classified_as: Vec::new(),
            note: None,
            other_properties: Default::default(),
        }
    }

    /// An organization called `name`, with the given id.
    pub fn organization(id: impl Into<Id>, name: impl Into<String>) -> Self {
        Agent {
            agent_kind: AgentKind::Organization,
            ..Agent::person(id, name)
        }
    }
}

/// A unit of measure (`om2:Unit`), identified by its symbol-like id (`kg`, `one`, `hour`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unit {
    /// Id, conventionally the OM name or symbol (`kg`, `one`, `hour`).
    #[serde(skip)]
    pub id: Id,
    /// Human label ("kilogram").
    pub label: String,
    /// Symbol ("kg").
    pub symbol: String,
    /// Classifications (`classifiedAs`), e.g. the quantity kind ("mass", "time").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classified_as: Vec<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(Unit, Unit, |_s| Vec::new());

impl Unit {
    /// A unit with id `id`, `label` and `symbol`.
    pub fn new(id: impl Into<Id>, label: impl Into<String>, symbol: impl Into<String>) -> Self {
        Unit {
            id: id.into(),
            label: label.into(),
            symbol: symbol.into(),
            classified_as: Vec::new(),
            other_properties: Default::default(),
        }
    }
}

/// A place (`geo:SpatialThing`): a stall, a workshop, a depot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpatialThing {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    pub name: String,
    /// Latitude in degrees (WGS84).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Longitude in degrees (WGS84).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long: Option<f64>,
    /// Postal address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mappable_address: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(SpatialThing, SpatialThing, |_s| Vec::new());

impl SpatialThing {
    /// A place with a name and optional coordinates.
    pub fn new(id: impl Into<Id>, name: impl Into<String>, lat_long: Option<(f64, f64)>) -> Self {
        SpatialThing {
            id: id.into(),
            name: name.into(),
            lat: lat_long.map(|l| l.0),
            long: lat_long.map(|l| l.1),
            mappable_address: None,
            note: None,
            other_properties: Default::default(),
        }
    }
}

/// A kind of resource (`vf:ResourceSpecification`): "bicycle", "cotton fabric".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpecification {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    pub name: String,
    /// The unit resources of this kind are usually counted in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_unit_of_resource: Option<Id>,
    /// The unit effort with this kind is usually measured in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_unit_of_effort: Option<Id>,
    /// Classifications every resource of this kind has (`resourceClassifiedAs`), e.g. a
    /// textile category.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_classified_as: Vec<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(ResourceSpecification, ResourceSpecification, |s| {
    opt(ObjectKind::Unit, &s.default_unit_of_resource)
        .into_iter()
        .chain(opt(ObjectKind::Unit, &s.default_unit_of_effort))
        .collect()
});

impl ResourceSpecification {
    /// A resource specification with a name.
    pub fn new(id: impl Into<Id>, name: impl Into<String>) -> Self {
        ResourceSpecification {
            id: id.into(),
            name: name.into(),
            default_unit_of_resource: None,
            default_unit_of_effort: None,
            resource_classified_as: Vec::new(),
            note: None,
            other_properties: Default::default(),
        }
    }
}

/// A kind of process (`vf:ProcessSpecification`); also a resource's `stage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSpecification {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name ("repair", "sorting").
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(ProcessSpecification, ProcessSpecification, |_s| Vec::new());

impl ProcessSpecification {
    /// A process specification with a name.
    pub fn new(id: impl Into<Id>, name: impl Into<String>) -> Self {
        ProcessSpecification {
            id: id.into(),
            name: name.into(),
            note: None,
            other_properties: Default::default(),
        }
    }
}

/// An activity that changes resources (`vf:Process`): a repair, a sorting run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    pub name: String,
    /// The process specification this process follows (sets the `stage` of its outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub based_on: Option<Id>,
    /// The plan this process is part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_within: Option<Id>,
    /// Planned or actual start (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_beginning: Option<String>,
    /// Planned or actual end (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_end: Option<String>,
    /// Whether the process is done.
    #[serde(default)]
    pub finished: bool,
    /// Free-text or IRI classifications (`classifiedAs`), e.g. a repair category.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classified_as: Vec<String>,
    /// The agent in whose context the process is executed (`inScopeOf`): the repair café
    /// a repair is done at, the city department a sorting run is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_scope_of: Option<Id>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(Process, Process, |s| {
    opt(ObjectKind::ProcessSpecification, &s.based_on)
        .into_iter()
        .chain(opt(ObjectKind::Plan, &s.planned_within))
        .chain(opt(ObjectKind::Agent, &s.in_scope_of))
        .collect()
});

impl Process {
    /// A process with a name, optionally based on a process specification.
    pub fn new(id: impl Into<Id>, name: impl Into<String>, based_on: Option<Id>) -> Self {
        Process {
            id: id.into(),
            name: name.into(),
            based_on,
            planned_within: None,
            has_beginning: None,
            has_end: None,
            finished: false,
            classified_as: Vec::new(),
            in_scope_of: None,
            note: None,
            other_properties: Default::default(),
        }
    }
}

/// The descriptive, mutable part of an economic resource, as stored.
///
/// Quantities, location, custody and the rest of a resource's state are not stored: they are
/// derived from the events (see [`EconomicResource`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescription {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Serial number, lot number or other identifier of this physical thing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_identifier: Option<String>,
    /// The resource specification this resource is an instance of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conforms_to: Option<Id>,
    /// The unit used for effort when the resource is used (`use`), e.g. `hour`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_of_effort: Option<Id>,
    /// Free-text or IRI classifications (`classifiedAs`), e.g. `textile:cotton`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classified_as: Vec<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(ResourceDescription, EconomicResource, |s| {
    opt(ObjectKind::ResourceSpecification, &s.conforms_to)
        .into_iter()
        .chain(opt(ObjectKind::Unit, &s.unit_of_effort))
        .collect()
});

impl ResourceDescription {
    /// A resource description with an id and a name.
    pub fn new(id: impl Into<Id>, name: impl Into<String>) -> Self {
        ResourceDescription {
            id: id.into(),
            name: name.into(),
            tracking_identifier: None,
            conforms_to: None,
            unit_of_effort: None,
            classified_as: Vec::new(),
            note: None,
            other_properties: Default::default(),
        }
    }

    /// Set `conformsTo`.
    pub fn conforming_to(mut self, spec: impl Into<Id>) -> Self {
        self.conforms_to = Some(spec.into());
        self
    }
}

/// A resource as the ledger sees it now (`vf:EconomicResource`): its description plus the
/// state derived from every event that affected it, folded in the ledger's total order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EconomicResource {
    /// Id.
    pub id: Id,
    /// Name.
    pub name: String,
    /// Serial or lot number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_identifier: Option<String>,
    /// Resource specification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conforms_to: Option<Id>,
    /// Quantity for which the primary accountable agent has rights and responsibilities.
    pub accounting_quantity: Measure,
    /// Quantity physically in the custodian's hands.
    pub onhand_quantity: Measure,
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_location: Option<Id>,
    /// The agent with primary rights and responsibilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_accountable: Option<Id>,
    /// The agent who physically holds it (changed by custody-moving actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custodian: Option<Id>,
    /// The resource it is packed into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contained_in: Option<Id>,
    /// The process specification of the last process it came out of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Id>,
    /// State after a test or review (e.g. `pass`, `fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Unit for effort when it is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_of_effort: Option<Id>,
    /// Classifications (`classifiedAs`), from the description.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classified_as: Vec<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The correcting event that removed this resource, if every event that created it was
    /// corrected away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_by: Option<Id>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}

/// Something that happened (`vf:EconomicEvent`). Immutable once recorded: a mistake is fixed
/// by a new event that [`corrects`](EconomicEvent::corrects) it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EconomicEvent {
    /// Id, assigned by the ledger (`<counter>@<actor>`). Empty before recording.
    #[serde(skip)]
    pub id: Id,
    /// What happened.
    pub action: Action,
    /// Who gave, or did the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Id>,
    /// Who received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<Id>,
    /// The resource affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_inventoried_as: Option<Id>,
    /// The resource quantity moves to (transfers, moves, copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_resource_inventoried_as: Option<Id>,
    /// The kind of resource, when no inventoried resource is involved (work, services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_conforms_to: Option<Id>,
    /// How much of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quantity: Option<Measure>,
    /// How much effort (time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort_quantity: Option<Measure>,
    /// When it happened (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_point_in_time: Option<String>,
    /// When it began (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_beginning: Option<String>,
    /// When it ended (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_end: Option<String>,
    /// The process this is an input of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_of: Option<Id>,
    /// The process this is an output of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_of: Option<Id>,
    /// Where it happened (and where the resource is afterwards, for location effects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_location: Option<Id>,
    /// The new location of the to-resource (move, transfer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_location: Option<Id>,
    /// The event this one corrects; the corrected event no longer counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrects: Option<Id>,
    /// The agreement this event realizes (`realizationOf`, VF 1.0: range `vf:Agreement`).
    ///
    /// Events recorded before Reflow knew `fulfills` used this field for the commitment they
    /// fulfil; such an event still counts toward that commitment when the id names a
    /// commitment and no agreement (see docs/data-model.md, "Fulfilment").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realization_of: Option<Id>,
    /// The agreement whose reciprocal side this event realizes (`reciprocalRealizationOf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reciprocal_realization_of: Option<Id>,
    /// The commitment this event fulfils, fully or partly (`fulfills`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfills: Option<Id>,
    /// The intent this event satisfies directly, fully or partly (`satisfies`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satisfies: Option<Id>,
    /// The claim this event settles, fully or partly (`settles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settles: Option<Id>,
    /// Classifications of the resource flow (`resourceClassifiedAs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_classified_as: Vec<String>,
    /// The resource's state after this event (e.g. `pass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Reflow's record that this event created the resource with this id (VF's
    /// `newInventoriedResource` of `createEconomicEvent`). Set by the ledger; ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_resource: Option<Id>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
    /// For an imported event: the IRI of the node it was read from (its `@id`), which an
    /// export writes as the event's `@id` again and a re-import recognises. Set by
    /// [`crate::interop`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
    /// For an imported event: what it was imported from (the file's name or another label the
    /// importer gave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_source: Option<String>,
}

impl EconomicEvent {
    /// A new event with an action, a provider and a receiver; set the rest with the builder
    /// methods.
    pub fn new(action: Action, provider: impl Into<Id>, receiver: impl Into<Id>) -> Self {
        EconomicEvent {
            id: Id(String::new()),
            action,
            provider: Some(provider.into()),
            receiver: Some(receiver.into()),
            resource_inventoried_as: None,
            to_resource_inventoried_as: None,
            resource_conforms_to: None,
            resource_quantity: None,
            effort_quantity: None,
            has_point_in_time: None,
            has_beginning: None,
            has_end: None,
            input_of: None,
            output_of: None,
            at_location: None,
            to_location: None,
            corrects: None,
            realization_of: None,
            reciprocal_realization_of: None,
            fulfills: None,
            satisfies: None,
            settles: None,
            resource_classified_as: Vec::new(),
            state: None,
            note: None,
            created_resource: None,
            import_source: Default::default(),
            imported_from: Default::default(),
            other_properties: Default::default(),
        }
    }

    /// Set `resourceInventoriedAs`.
    pub fn resource(mut self, id: impl Into<Id>) -> Self {
        self.resource_inventoried_as = Some(id.into());
        self
    }

    /// Set `toResourceInventoriedAs`.
    pub fn to_resource(mut self, id: impl Into<Id>) -> Self {
        self.to_resource_inventoried_as = Some(id.into());
        self
    }

    /// Set `resourceQuantity`.
    pub fn quantity(mut self, value: impl Into<crate::Quantity>, unit: impl Into<Id>) -> Self {
        self.resource_quantity = Some(Measure::new(value, unit));
        self
    }

    /// Set `effortQuantity`.
    pub fn effort(mut self, value: impl Into<crate::Quantity>, unit: impl Into<Id>) -> Self {
        self.effort_quantity = Some(Measure::new(value, unit));
        self
    }

    /// Set `resourceConformsTo`.
    pub fn conforms_to(mut self, spec: impl Into<Id>) -> Self {
        self.resource_conforms_to = Some(spec.into());
        self
    }

    /// Set `inputOf`.
    pub fn input_of(mut self, process: impl Into<Id>) -> Self {
        self.input_of = Some(process.into());
        self
    }

    /// Set `outputOf`.
    pub fn output_of(mut self, process: impl Into<Id>) -> Self {
        self.output_of = Some(process.into());
        self
    }

    /// Set `atLocation`.
    pub fn at(mut self, location: impl Into<Id>) -> Self {
        self.at_location = Some(location.into());
        self
    }

    /// Set `toLocation`.
    pub fn to_location(mut self, location: impl Into<Id>) -> Self {
        self.to_location = Some(location.into());
        self
    }

    /// Set `corrects`.
    pub fn correcting(mut self, event: impl Into<Id>) -> Self {
        self.corrects = Some(event.into());
        self
    }

    /// Set `hasPointInTime`.
    pub fn at_time(mut self, time: impl Into<String>) -> Self {
        self.has_point_in_time = Some(time.into());
        self
    }

    /// Set `state`.
    pub fn with_state(mut self, state: impl Into<String>) -> Self {
        self.state = Some(state.into());
        self
    }

    /// Set `note`.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// Set `realizationOf` (an agreement).
    pub fn realizing(mut self, agreement: impl Into<Id>) -> Self {
        self.realization_of = Some(agreement.into());
        self
    }

    /// Set `fulfills` (a commitment).
    pub fn fulfilling(mut self, commitment: impl Into<Id>) -> Self {
        self.fulfills = Some(commitment.into());
        self
    }

    /// Set `satisfies` (an intent).
    pub fn satisfying(mut self, intent: impl Into<Id>) -> Self {
        self.satisfies = Some(intent.into());
        self
    }

    /// Set `settles` (a claim).
    pub fn settling(mut self, claim: impl Into<Id>) -> Self {
        self.settles = Some(claim.into());
        self
    }

    /// Set `resourceClassifiedAs`.
    pub fn classified_as(mut self, classes: Vec<String>) -> Self {
        self.resource_classified_as = classes;
        self
    }
}

/// An event to record, with the description of the resource it creates, if any.
///
/// For actions whose `createResource` is `optional` (produce, raise, lower) the new resource
/// becomes the event's `resourceInventoriedAs`; for `optionalTo` (transfer, move, copy, ...)
/// it becomes `toResourceInventoriedAs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewEvent {
    /// The event.
    pub event: EconomicEvent,
    /// The resource the event creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_inventoried_resource: Option<ResourceDescription>,
}

impl From<EconomicEvent> for NewEvent {
    fn from(event: EconomicEvent) -> Self {
        NewEvent {
            event,
            new_inventoried_resource: None,
        }
    }
}

impl EconomicEvent {
    /// Record this event together with a new resource it creates.
    pub fn creating(self, resource: ResourceDescription) -> NewEvent {
        NewEvent {
            event: self,
            new_inventoried_resource: Some(resource),
        }
    }
}

/// A promised future flow (`vf:Commitment`).
///
/// How much of it has been fulfilled is never stored: it is derived from the events that
/// [`fulfil`](EconomicEvent::fulfills) it ([`crate::planning::CommitmentStatus`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Commitment {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// The promised action.
    pub action: Action,
    /// Who will provide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Id>,
    /// Who will receive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<Id>,
    /// The resource, if a specific one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_inventoried_as: Option<Id>,
    /// The kind of resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_conforms_to: Option<Id>,
    /// Classifications of the resource (`resourceClassifiedAs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_classified_as: Vec<String>,
    /// How much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quantity: Option<Measure>,
    /// How much effort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort_quantity: Option<Measure>,
    /// Planned start (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_beginning: Option<String>,
    /// Planned end (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_end: Option<String>,
    /// Planned instant, when the flow has no duration (`hasPointInTime`, ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_point_in_time: Option<String>,
    /// Due date (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// When it was made (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Process input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_of: Option<Id>,
    /// Process output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_of: Option<Id>,
    /// The agreement this commitment is a (primary) clause of (`clauseOf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clause_of: Option<Id>,
    /// The agreement this commitment is the reciprocal clause of (`reciprocalClauseOf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reciprocal_clause_of: Option<Id>,
    /// The plan it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_within: Option<Id>,
    /// The plan whose deliverable this is (`independentDemandOf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub independent_demand_of: Option<Id>,
    /// The intent this commitment satisfies, fully or partly (`satisfies`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satisfies: Option<Id>,
    /// Where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_location: Option<Id>,
    /// The stage the resource should be at (`stage`, a process specification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Id>,
    /// The state the resource should be in (`state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// VF's `finished`: set by a person when no more will be done, whether or not the
    /// quantity was reached. Explicit, as VF defines it; fulfilment is derived separately.
    #[serde(default)]
    pub finished: bool,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(Commitment, Commitment, |s| {
    [
        opt(ObjectKind::Agent, &s.provider),
        opt(ObjectKind::Agent, &s.receiver),
        opt(ObjectKind::EconomicResource, &s.resource_inventoried_as),
        opt(ObjectKind::ResourceSpecification, &s.resource_conforms_to),
        opt(ObjectKind::Process, &s.input_of),
        opt(ObjectKind::Process, &s.output_of),
        opt(ObjectKind::Agreement, &s.clause_of),
        opt(ObjectKind::Agreement, &s.reciprocal_clause_of),
        opt(ObjectKind::Plan, &s.planned_within),
        opt(ObjectKind::Plan, &s.independent_demand_of),
        opt(ObjectKind::Intent, &s.satisfies),
        opt(ObjectKind::SpatialThing, &s.at_location),
        opt(ObjectKind::ProcessSpecification, &s.stage),
    ]
    .into_iter()
    .flatten()
    .chain(
        s.resource_quantity
            .iter()
            .map(|m| (ObjectKind::Unit, &m.has_unit)),
    )
    .chain(
        s.effort_quantity
            .iter()
            .map(|m| (ObjectKind::Unit, &m.has_unit)),
    )
    .collect()
});

impl Commitment {
    /// A commitment of `action` from `provider` to `receiver`; set the rest directly.
    pub fn new(action: Action, provider: impl Into<Id>, receiver: impl Into<Id>) -> Self {
        Commitment {
            id: Id::default(),
            action,
            provider: Some(provider.into()),
            receiver: Some(receiver.into()),
            resource_inventoried_as: None,
            resource_conforms_to: None,
            resource_classified_as: Vec::new(),
            resource_quantity: None,
            effort_quantity: None,
            has_beginning: None,
            has_end: None,
            has_point_in_time: None,
            due: None,
            created: None,
            input_of: None,
            output_of: None,
            clause_of: None,
            reciprocal_clause_of: None,
            planned_within: None,
            independent_demand_of: None,
            satisfies: None,
            at_location: None,
            stage: None,
            state: None,
            finished: false,
            note: None,
            other_properties: Default::default(),
        }
    }
}

/// An offer or a request not yet agreed (`vf:Intent`): it has a provider or a receiver.
///
/// What satisfies it (commitments and events that name it in `satisfies`) is derived
/// ([`crate::planning::IntentStatus`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// The offered or requested action.
    pub action: Action,
    /// Short label (`name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Set for an offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Id>,
    /// Set for a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<Id>,
    /// The kind of resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_conforms_to: Option<Id>,
    /// Classifications of the resource (`resourceClassifiedAs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_classified_as: Vec<String>,
    /// A specific resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_inventoried_as: Option<Id>,
    /// How much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quantity: Option<Measure>,
    /// How much effort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort_quantity: Option<Measure>,
    /// How much is on offer in total (`availableQuantity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_quantity: Option<Measure>,
    /// The least that can be taken (`minimumQuantity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_quantity: Option<Measure>,
    /// Where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_location: Option<Id>,
    /// Process input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_of: Option<Id>,
    /// Process output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_of: Option<Id>,
    /// The plan it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_within: Option<Id>,
    /// Start (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_beginning: Option<String>,
    /// End (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_end: Option<String>,
    /// Instant, when the flow has no duration (`hasPointInTime`, ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_point_in_time: Option<String>,
    /// Due date (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// The stage the resource is or should be at (`stage`, a process specification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Id>,
    /// The state the resource is or should be in (`state`, e.g. "good as new").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// A picture of what is offered or asked for (`image`, a URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// More pictures (`imageList`, URIs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_list: Vec<String>,
    /// Whether it is done or withdrawn (VF's explicit `finished`).
    #[serde(default)]
    pub finished: bool,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(Intent, Intent, |s| {
    [
        opt(ObjectKind::Agent, &s.provider),
        opt(ObjectKind::Agent, &s.receiver),
        opt(ObjectKind::ResourceSpecification, &s.resource_conforms_to),
        opt(ObjectKind::EconomicResource, &s.resource_inventoried_as),
        opt(ObjectKind::SpatialThing, &s.at_location),
        opt(ObjectKind::Process, &s.input_of),
        opt(ObjectKind::Process, &s.output_of),
        opt(ObjectKind::Plan, &s.planned_within),
        opt(ObjectKind::ProcessSpecification, &s.stage),
    ]
    .into_iter()
    .flatten()
    .chain(
        [
            &s.resource_quantity,
            &s.effort_quantity,
            &s.available_quantity,
            &s.minimum_quantity,
        ]
        .into_iter()
        .flatten()
        .map(|m| (ObjectKind::Unit, &m.has_unit)),
    )
    .collect()
});

impl Intent {
    /// An offer: `provider` offers `action` (set the quantity and the rest directly).
    pub fn offer(action: Action, provider: impl Into<Id>) -> Self {
        Intent {
            provider: Some(provider.into()),
            ..Intent::request(action, None::<Id>)
        }
    }

    /// A request: `receiver` asks for `action`; `None` leaves both agents open.
    pub fn request(action: Action, receiver: Option<impl Into<Id>>) -> Self {
        Intent {
            id: Id::default(),
            action,
            name: None,
            provider: None,
            receiver: receiver.map(Into::into),
            resource_conforms_to: None,
            resource_classified_as: Vec::new(),
            resource_inventoried_as: None,
            resource_quantity: None,
            effort_quantity: None,
            available_quantity: None,
            minimum_quantity: None,
            at_location: None,
            input_of: None,
            output_of: None,
            planned_within: None,
            has_beginning: None,
            has_end: None,
            has_point_in_time: None,
            due: None,
            stage: None,
            state: None,
            image: None,
            image_list: Vec::new(),
            finished: false,
            note: None,
            other_properties: Default::default(),
        }
    }
}

/// A set of processes and commitments toward a goal (`vf:Plan`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    pub name: String,
    /// Due date (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// When it was made (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(Plan, Plan, |_s| Vec::new());

impl Plan {
    /// A plan with a name.
    pub fn new(id: impl Into<Id>, name: impl Into<String>) -> Self {
        Plan {
            id: id.into(),
            name: name.into(),
            due: None,
            created: None,
            note: None,
            other_properties: Default::default(),
        }
    }
}

/// Whether a proposal is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum ProposalStatus {
    /// Open for responses.
    #[default]
    Open,
    /// Accepted (an agreement was made).
    Accepted,
    /// Withdrawn.
    Withdrawn,
}

/// A published offer or request made of intents (`vf:Proposal`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    pub name: String,
    /// The intents that make up the proposal (`publishes`).
    #[serde(default)]
    pub publishes: Vec<Id>,
    /// What is asked in return (`reciprocal`): e.g. the payment for an offer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reciprocal: Vec<Id>,
    /// Who it is proposed to (`proposedTo`); empty: everyone in the network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proposed_to: Vec<Id>,
    /// When it was published (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// From when it is valid (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_beginning: Option<String>,
    /// Until when it is valid (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_end: Option<String>,
    /// Whether all intents must be taken together.
    #[serde(default)]
    pub unit_based: bool,
    /// Where it is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligible_location: Option<Id>,
    /// Whether it is an offer or a request (`purpose`). Optional: Reflow also tells them
    /// apart by the intents (a provider and no receiver: an offer), and a local write refuses
    /// a purpose the published intents contradict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<ProposalPurpose>,
    /// The proposal lists it is published in (`listedIn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listed_in: Vec<Id>,
    /// Open, accepted or withdrawn (a mutable field: last writer wins).
    #[serde(default)]
    pub status: ProposalStatus,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(Proposal, Proposal, |s| {
    s.publishes
        .iter()
        .chain(&s.reciprocal)
        .map(|i| (ObjectKind::Intent, i))
        .chain(s.proposed_to.iter().map(|a| (ObjectKind::Agent, a)))
        .chain(opt(ObjectKind::SpatialThing, &s.eligible_location))
        .chain(s.listed_in.iter().map(|l| (ObjectKind::ProposalList, l)))
        .collect()
});

impl Proposal {
    /// An open proposal called `name` publishing `publishes`; set the rest directly.
    pub fn new(id: impl Into<Id>, name: impl Into<String>, publishes: Vec<Id>) -> Self {
        Proposal {
            id: id.into(),
            name: name.into(),
            publishes,
            reciprocal: Vec::new(),
            proposed_to: Vec::new(),
            created: None,
            has_beginning: None,
            has_end: None,
            unit_based: false,
            eligible_location: None,
            purpose: None,
            listed_in: Vec::new(),
            status: ProposalStatus::Open,
            note: None,
            other_properties: Default::default(),
        }
    }
}

/// What a proposal is for (`vf:ProposalPurpose`: the individuals `vf:offer`, `vf:request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProposalPurpose {
    /// Something is offered.
    Offer,
    /// Something is asked for (a need, a want).
    Request,
}

/// A grouping of proposals published as a list (`vf:ProposalList`): the week's market
/// offers, a repair café's services. Its `lists` is the inverse of the proposals'
/// `listedIn` ([`crate::Ledger::proposal_list_status`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProposalList {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    pub name: String,
    /// Who the list is proposed to (`proposedTo`); empty: everyone in the network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proposed_to: Vec<Id>,
    /// When it was published (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(ProposalList, ProposalList, |s| s
    .proposed_to
    .iter()
    .map(|a| (ObjectKind::Agent, a))
    .collect());

/// A set of reciprocal commitments agreed between agents (`vf:Agreement`).
///
/// Its clauses are not stored here: `stipulates` and `stipulatesReciprocal` are the inverses
/// of the commitments' `clauseOf` and `reciprocalClauseOf`, and `realizes` the inverse of the
/// events' `realizationOf` ([`crate::planning::AgreementStatus`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agreement {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    pub name: String,
    /// When it was agreed (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The bundle this agreement is part of (`bundledIn`): one order of several lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_in: Option<Id>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(Agreement, Agreement, |s| opt(
    ObjectKind::AgreementBundle,
    &s.bundled_in
)
.into_iter()
.collect());

impl Agreement {
    /// An agreement called `name`; set the rest directly.
    pub fn new(id: impl Into<Id>, name: impl Into<String>) -> Self {
        Agreement {
            id: id.into(),
            name: name.into(),
            created: None,
            bundled_in: None,
            note: None,
            other_properties: Default::default(),
        }
    }
}

/// A grouping of agreements (`vf:AgreementBundle`): the lines of one order, a market day's
/// deals between two stalls. Its `bundles` is the inverse of the agreements' `bundledIn`
/// ([`crate::Ledger::agreement_bundle_status`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementBundle {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    pub name: String,
    /// When it was agreed (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(AgreementBundle, AgreementBundle, |_s| Vec::new());

/// A claim for a future flow in return for a flow that happened (`vf:Claim`): Bob worked 7
/// hours, the group owes him 140 credits. What settles it is derived from the events that
/// name it in [`settles`](EconomicEvent::settles) ([`crate::planning::ClaimStatus`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// The claimed action (usually `transfer`).
    pub action: Action,
    /// Who owes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Id>,
    /// Who is owed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<Id>,
    /// The kind of resource claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_conforms_to: Option<Id>,
    /// Classifications of the resource (`resourceClassifiedAs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_classified_as: Vec<String>,
    /// How much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quantity: Option<Measure>,
    /// How much effort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort_quantity: Option<Measure>,
    /// The event that gave rise to the claim (`triggeredBy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<Id>,
    /// Due date (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// When it was made (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// VF's explicit `finished`.
    #[serde(default)]
    pub finished: bool,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(Claim, Claim, |s| {
    [
        opt(ObjectKind::Agent, &s.provider),
        opt(ObjectKind::Agent, &s.receiver),
        opt(ObjectKind::ResourceSpecification, &s.resource_conforms_to),
        opt(ObjectKind::EconomicEvent, &s.triggered_by),
    ]
    .into_iter()
    .flatten()
    .chain(
        [&s.resource_quantity, &s.effort_quantity]
            .into_iter()
            .flatten()
            .map(|m| (ObjectKind::Unit, &m.has_unit)),
    )
    .collect()
});

impl Claim {
    /// A claim that `provider` owes `receiver` a flow of `action`.
    pub fn new(action: Action, provider: impl Into<Id>, receiver: impl Into<Id>) -> Self {
        Claim {
            id: Id::default(),
            action,
            provider: Some(provider.into()),
            receiver: Some(receiver.into()),
            resource_conforms_to: None,
            resource_classified_as: Vec::new(),
            resource_quantity: None,
            effort_quantity: None,
            triggered_by: None,
            due: None,
            created: None,
            finished: false,
            note: None,
            other_properties: Default::default(),
        }
    }
}

/// A recipe (`vf:Recipe`): how to make (or repair) something, as a set of recipe processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recipe {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    pub name: String,
    /// What the recipe makes (`primaryOutput`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_output: Option<Id>,
    /// The recipe processes it includes (`recipeIncludes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipe_includes: Vec<Id>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(Recipe, Recipe, |s| {
    opt(ObjectKind::ResourceSpecification, &s.primary_output)
        .into_iter()
        .chain(
            s.recipe_includes
                .iter()
                .map(|p| (ObjectKind::RecipeProcess, p)),
        )
        .collect()
});

/// A process in a recipe (`vf:RecipeProcess`), the template a planned process is made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipeProcess {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    pub name: String,
    /// The process specification planned processes are based on (`processConformsTo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_conforms_to: Option<Id>,
    /// Classifications planned processes get (`processClassifiedAs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub process_classified_as: Vec<String>,
    /// How long it usually takes (`hasDuration`), e.g. 1 hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_duration: Option<Measure>,
    /// A picture of the work (`image`, a URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(RecipeProcess, RecipeProcess, |s| {
    opt(ObjectKind::ProcessSpecification, &s.process_conforms_to)
        .into_iter()
        .chain(
            s.has_duration
                .iter()
                .map(|m| (ObjectKind::Unit, &m.has_unit)),
        )
        .collect()
});

/// One input or output of a recipe process, or one clause of a recipe exchange
/// (`vf:RecipeFlow`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipeFlow {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// The action of the planned flow.
    pub action: Action,
    /// The kind of resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_conforms_to: Option<Id>,
    /// Classifications of the resource (`resourceClassifiedAs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_classified_as: Vec<String>,
    /// How much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quantity: Option<Measure>,
    /// How much effort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort_quantity: Option<Measure>,
    /// The recipe process this flow goes into (`recipeInputOf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_input_of: Option<Id>,
    /// The recipe process this flow comes out of (`recipeOutputOf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_output_of: Option<Id>,
    /// The recipe exchange this flow is a clause of (`recipeClauseOf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_clause_of: Option<Id>,
    /// The recipe exchange this flow is the reciprocal clause of (`recipeReciprocalClauseOf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_reciprocal_clause_of: Option<Id>,
    /// The stage the resource should be at (`stage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Id>,
    /// The state the resource should be in (`state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(RecipeFlow, RecipeFlow, |s| {
    [
        opt(ObjectKind::ResourceSpecification, &s.resource_conforms_to),
        opt(ObjectKind::RecipeProcess, &s.recipe_input_of),
        opt(ObjectKind::RecipeProcess, &s.recipe_output_of),
        opt(ObjectKind::RecipeExchange, &s.recipe_clause_of),
        opt(ObjectKind::RecipeExchange, &s.recipe_reciprocal_clause_of),
        opt(ObjectKind::ProcessSpecification, &s.stage),
    ]
    .into_iter()
    .flatten()
    .chain(
        [&s.resource_quantity, &s.effort_quantity]
            .into_iter()
            .flatten()
            .map(|m| (ObjectKind::Unit, &m.has_unit)),
    )
    .collect()
});

impl RecipeFlow {
    /// A recipe flow of `action`; set the rest directly.
    pub fn new(action: Action) -> Self {
        RecipeFlow {
            id: Id::default(),
            action,
            resource_conforms_to: None,
            resource_classified_as: Vec::new(),
            resource_quantity: None,
            effort_quantity: None,
            recipe_input_of: None,
            recipe_output_of: None,
            recipe_clause_of: None,
            recipe_reciprocal_clause_of: None,
            stage: None,
            state: None,
            note: None,
            other_properties: Default::default(),
        }
    }
}

/// An exchange in a recipe (`vf:RecipeExchange`): the template of an agreement; its clauses
/// are the recipe flows that name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipeExchange {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// Name.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(RecipeExchange, RecipeExchange, |_s| Vec::new());

/// A kind of relationship between agents (`AgentRelationshipRole` of the VF examples):
/// "is volunteer of" / "has volunteer", "is stall of" / "has stall".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRelationshipRole {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// The label read from subject to object ("is volunteer of").
    pub role_label: String,
    /// The label read from object to subject ("has volunteer").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inverse_role_label: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
vf_object!(AgentRelationshipRole, AgentRelationshipRole, |_s| Vec::new(
));

/// A relationship between two agents (`AgentRelationship` of the VF examples): the subject
/// is `relationship` of the object, optionally in the scope of a third agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRelationship {
    /// Id.
    #[serde(skip)]
    pub id: Id,
    /// The agent the role is about ("Ana").
    pub subject: Id,
    /// The other agent ("the repair café").
    pub object: Id,
    /// The role (an [`AgentRelationshipRole`]).
    pub relationship: Id,
    /// The agent in whose scope the relationship holds (`inScopeOf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_scope_of: Option<Id>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Properties of an imported JSON-LD node that Reflow does not model, kept as read and
    /// exported again: property IRI to its values in expanded JSON-LD form (see
    /// docs/interop.md). Empty for objects made in Reflow.
    #[serde(default, skip_serializing_if = "OtherProperties::is_empty")]
    pub other_properties: OtherProperties,
}
impl AgentRelationship {
    /// A relationship: `subject` is `relationship` of `object`. Its id is
    /// [`AgentRelationship::id_for`] the three.
    pub fn new(subject: impl Into<Id>, relationship: impl Into<Id>, object: impl Into<Id>) -> Self {
        let (subject, relationship, object) = (subject.into(), relationship.into(), object.into());
        AgentRelationship {
            id: Self::id_for(&subject, &relationship, &object),
            subject,
            object,
            relationship,
            in_scope_of: None,
            note: None,
            other_properties: Default::default(),
        }
    }

    /// The id of the relationship `subject` is `relationship` of `object`: the JSON array
    /// `[subject, relationship, object]` in serde_json's compact spelling
    /// (`["ana","volunteer","cafe"]`). Admission reads who may write it from the id alone
    /// (docs/data-model.md), so the id is fixed by the three and one triple is one object.
    pub fn id_for(subject: &Id, relationship: &Id, object: &Id) -> Id {
        Id(
            serde_json::to_string(&[subject.as_str(), relationship.as_str(), object.as_str()])
                .unwrap_or_default(),
        )
    }

    /// The (subject, relationship, object) an id names, if it is a relationship's id in its
    /// canonical spelling.
    pub fn parts_of(id: &str) -> Option<(Id, Id, Id)> {
        let parts: Vec<String> = serde_json::from_str(id).ok()?;
        let [s, r, o] = <[String; 3]>::try_from(parts).ok()?;
        let (s, r, o) = (Id(s), Id(r), Id(o));
        (Self::id_for(&s, &r, &o).as_str() == id).then_some((s, r, o))
    }
}
vf_object!(AgentRelationship, AgentRelationship, |s| {
    [
        Some((ObjectKind::Agent, &s.subject)),
        Some((ObjectKind::Agent, &s.object)),
        Some((ObjectKind::AgentRelationshipRole, &s.relationship)),
        opt(ObjectKind::Agent, &s.in_scope_of),
    ]
    .into_iter()
    .flatten()
    .collect()
});
