//! The planning and exchange operations, thin-delegated to the engine: commitments and their
//! fulfilment, intents and proposals, accepting a proposal, and the flows report. Every rule
//! (what fulfils what, what an acceptance creates, how flows are totalled) is the engine's.

use std::str::FromStr;

use reflow::{
    Action, Commitment, CommitmentStatus, FlowDimension, FlowQuery, FlowReport, Id, Intent,
    Measure, Period, Proposal, ProposalStatus,
};

use crate::{invalid_arg, parse_network, MeasureRecord, ReflowNode, Result};

fn id(text: Option<String>) -> Option<Id> {
    text.map(Id::from)
}

fn measure(m: Option<MeasureRecord>) -> Result<Option<Measure>> {
    m.map(Measure::try_from).transpose()
}

fn action(a: &str) -> Result<Action> {
    Action::from_str(a).map_err(|e| invalid_arg(reflow::Error::from(e)))
}

/// A commitment to create.
#[derive(Debug, Clone, uniffi::Record)]
pub struct CommitmentInput {
    /// Id (empty: generated).
    #[uniffi(default = "")]
    pub id: String,
    /// The promised action.
    pub action: String,
    /// Who will provide.
    pub provider: String,
    /// Who will receive.
    pub receiver: String,
    /// Resource specification.
    #[uniffi(default = None)]
    pub resource_conforms_to: Option<String>,
    /// How much.
    #[uniffi(default = None)]
    pub resource_quantity: Option<MeasureRecord>,
    /// How much effort.
    #[uniffi(default = None)]
    pub effort_quantity: Option<MeasureRecord>,
    /// Due (ISO 8601).
    #[uniffi(default = None)]
    pub due: Option<String>,
    /// The agreement it is a clause of.
    #[uniffi(default = None)]
    pub clause_of: Option<String>,
    /// The intent it satisfies.
    #[uniffi(default = None)]
    pub satisfies: Option<String>,
}

/// An intent (offer: a provider; request: a receiver) to create.
#[derive(Debug, Clone, uniffi::Record)]
pub struct IntentInput {
    /// Id (empty: generated).
    #[uniffi(default = "")]
    pub id: String,
    /// The action offered or requested.
    pub action: String,
    /// Set for an offer.
    #[uniffi(default = None)]
    pub provider: Option<String>,
    /// Set for a request.
    #[uniffi(default = None)]
    pub receiver: Option<String>,
    /// Resource specification.
    #[uniffi(default = None)]
    pub resource_conforms_to: Option<String>,
    /// How much.
    #[uniffi(default = None)]
    pub resource_quantity: Option<MeasureRecord>,
    /// How much effort.
    #[uniffi(default = None)]
    pub effort_quantity: Option<MeasureRecord>,
}

/// A commitment with its fulfilment, derived by the engine.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CommitmentStatusRecord {
    /// Commitment id.
    pub id: String,
    /// Action.
    pub action: String,
    /// Provider.
    pub provider: Option<String>,
    /// Receiver.
    pub receiver: Option<String>,
    /// The agreement it is a clause (or reciprocal clause) of.
    pub agreement: Option<String>,
    /// What is committed.
    pub committed: Option<MeasureRecord>,
    /// What the fulfilling events add up to.
    pub fulfilled: Option<MeasureRecord>,
    /// "open", "partly" or "fulfilled".
    pub progress: String,
    /// Fulfilled in percent (a decimal), if a quantity was committed.
    pub percent: Option<String>,
    /// The fulfilling events, in the ledger's order.
    pub fulfilled_by: Vec<String>,
    /// VF's explicit `finished`.
    pub finished: bool,
    /// Past due by the clock given, neither fulfilled nor finished.
    pub overdue: bool,
}

impl From<CommitmentStatus> for CommitmentStatusRecord {
    fn from(s: CommitmentStatus) -> Self {
        let c = s.commitment;
        CommitmentStatusRecord {
            id: c.id.to_string(),
            action: c.action.as_str().to_string(),
            provider: c.provider.map(|x| x.to_string()),
            receiver: c.receiver.map(|x| x.to_string()),
            agreement: c
                .clause_of
                .or(c.reciprocal_clause_of)
                .map(|x| x.to_string()),
            committed: s.committed.map(Into::into),
            fulfilled: s.fulfilled.map(Into::into),
            progress: format!("{:?}", s.progress).to_lowercase(),
            percent: s.percent.map(|p| p.to_string()),
            fulfilled_by: s.fulfilled_by.into_iter().map(|x| x.to_string()).collect(),
            finished: c.finished,
            overdue: s.overdue,
        }
    }
}

/// What accepting a proposal created.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AcceptedRecord {
    /// The agreement.
    pub agreement: String,
    /// Commitments from the published intents.
    pub commitments: Vec<String>,
    /// Commitments from the reciprocal intents.
    pub reciprocal_commitments: Vec<String>,
}

/// Which events the flows report totals, and how it groups them.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct FlowQueryInput {
    /// Dimensions: "action", "spec", "provider", "receiver", "place".
    #[uniffi(default = [])]
    pub group_by: Vec<String>,
    /// "day", "week" or "month".
    #[uniffi(default = None)]
    pub period: Option<String>,
    /// From (ISO 8601, inclusive).
    #[uniffi(default = None)]
    pub from: Option<String>,
    /// To (ISO 8601, exclusive).
    #[uniffi(default = None)]
    pub to: Option<String>,
    /// Only this action.
    #[uniffi(default = None)]
    pub action: Option<String>,
}

/// One row of the flows report.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FlowRowRecord {
    /// Period label.
    pub period: Option<String>,
    /// Action.
    pub action: Option<String>,
    /// Resource specification.
    pub resource_specification: Option<String>,
    /// Provider.
    pub provider: Option<String>,
    /// Receiver.
    pub receiver: Option<String>,
    /// Place.
    pub place: Option<String>,
    /// Unit of `quantity`.
    pub unit: Option<String>,
    /// The total (exact decimal).
    pub quantity: String,
    /// Number of events.
    pub events: u64,
}

/// The flows report.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FlowReportRecord {
    /// The rows.
    pub rows: Vec<FlowRowRecord>,
    /// Events left out for lack of a readable time.
    pub undated: u64,
    /// The same report as CSV.
    pub csv: String,
}

impl From<FlowReport> for FlowReportRecord {
    fn from(r: FlowReport) -> Self {
        let t = |x: Option<Id>| x.map(|i| i.to_string());
        FlowReportRecord {
            csv: r.to_csv(),
            undated: r.undated as u64,
            rows: r
                .rows
                .into_iter()
                .map(|x| FlowRowRecord {
                    period: x.period,
                    action: x.action.map(|a| a.as_str().to_string()),
                    resource_specification: t(x.resource_specification),
                    provider: t(x.provider),
                    receiver: t(x.receiver),
                    place: t(x.place),
                    unit: t(x.unit),
                    quantity: x.quantity.to_string(),
                    events: x.events as u64,
                })
                .collect(),
        }
    }
}

#[uniffi::export]
impl ReflowNode {
    /// Create a commitment; returns its id.
    pub fn create_commitment(&self, network: String, c: CommitmentInput) -> Result<String> {
        let network = parse_network(&network)?;
        let mut x = Commitment::new(action(&c.action)?, c.provider, c.receiver);
        x.id = Id::from(c.id);
        x.resource_conforms_to = id(c.resource_conforms_to);
        x.resource_quantity = measure(c.resource_quantity)?;
        x.effort_quantity = measure(c.effort_quantity)?;
        x.due = c.due;
        x.clause_of = id(c.clause_of);
        x.satisfies = id(c.satisfies);
        self.with_node(|n| Ok(n.write(network, |l| l.create(x))?.to_string()))
    }

    /// Every commitment with its fulfilment; `now` (ISO 8601) marks overdue ones.
    pub fn commitments(
        &self,
        network: String,
        now: Option<String>,
    ) -> Result<Vec<CommitmentStatusRecord>> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            let list = n.read(network, |r| r.ledger().commitment_statuses(now.as_deref()))??;
            Ok(list.into_iter().map(Into::into).collect())
        })
    }

    /// Create an intent; returns its id.
    pub fn create_intent(&self, network: String, i: IntentInput) -> Result<String> {
        let network = parse_network(&network)?;
        let mut x = Intent::request(action(&i.action)?, id(i.receiver));
        x.id = Id::from(i.id);
        x.provider = id(i.provider);
        x.resource_conforms_to = id(i.resource_conforms_to);
        x.resource_quantity = measure(i.resource_quantity)?;
        x.effort_quantity = measure(i.effort_quantity)?;
        self.with_node(|n| Ok(n.write(network, |l| l.create(x))?.to_string()))
    }

    /// Publish a proposal of `publishes` intents, asking `reciprocal` ones in return.
    pub fn create_proposal(
        &self,
        network: String,
        id: String,
        name: String,
        publishes: Vec<String>,
        reciprocal: Vec<String>,
    ) -> Result<String> {
        let network = parse_network(&network)?;
        let p = Proposal {
            id: Id::from(id),
            name,
            publishes: publishes.into_iter().map(Id::from).collect(),
            reciprocal: reciprocal.into_iter().map(Id::from).collect(),
            proposed_to: Vec::new(),
            created: None,
            has_beginning: None,
            has_end: None,
            unit_based: false,
            eligible_location: None,
            status: ProposalStatus::Open,
            note: None,
            other_properties: Default::default(),
        };
        self.with_node(|n| Ok(n.write(network, |l| l.create(p))?.to_string()))
    }

    /// Accept a proposal as `agent`: an agreement with commitments both ways.
    pub fn accept_proposal(
        &self,
        network: String,
        proposal: String,
        agent: String,
    ) -> Result<AcceptedRecord> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            let a = n.write(network, |l| {
                l.accept_proposal(&Id::from(proposal), &Id::from(agent), None)
            })?;
            let t = |v: Vec<Id>| v.into_iter().map(|x| x.to_string()).collect();
            Ok(AcceptedRecord {
                agreement: a.agreement.to_string(),
                commitments: t(a.commitments),
                reciprocal_commitments: t(a.reciprocal_commitments),
            })
        })
    }

    /// The flows report.
    pub fn flows(&self, network: String, q: FlowQueryInput) -> Result<FlowReportRecord> {
        let network = parse_network(&network)?;
        let query = FlowQuery {
            group_by: q
                .group_by
                .iter()
                .map(|d| FlowDimension::from_str(d).map_err(invalid_arg))
                .collect::<Result<_>>()?,
            period: q
                .period
                .as_deref()
                .map(|p| Period::from_str(p).map_err(invalid_arg))
                .transpose()?,
            from: q.from,
            to: q.to,
            action: q.action.as_deref().map(action).transpose()?,
            ..FlowQuery::default()
        };
        self.with_node(|n| Ok(n.read(network, |r| r.ledger().flows(&query))??.into()))
    }
}
