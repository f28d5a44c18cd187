//! The planning and exchange commands: commitments and their fulfilment, accepting a
//! proposal, agreements, claims, recipes and planning from them, and the flows report. Thin:
//! every rule (what fulfils what, how a recipe becomes commitments, how flows are totalled)
//! is the engine's (`reflow::planning`, `reflow::flows`).

use std::str::FromStr;

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use reflow::{
    Action, AgentRelationship, AgentRelationshipRole, Claim, Commitment, FlowDimension, FlowQuery,
    Id, Measure, NetworkId, Node, Period, Plan, Progress, RecipeFlow, RecipePlanning,
    RecipeProcess,
};

use crate::app;

/// Print JSON, pretty.
fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn measure(text: &Option<String>, what: &str) -> Result<Option<Measure>> {
    text.as_deref()
        .map(|t| app::measure(t, what).map(|(n, u)| Measure::new(n, u)))
        .transpose()
}

fn id(s: &Option<String>) -> Option<Id> {
    s.as_deref().map(Id::from)
}

/// The agent this device acts for in `net`.
pub fn my_agent(node: &Node, net: NetworkId) -> Result<Id> {
    node.read(net, |r| r.member(&r.device()).map(|m| m.agent))?
        .ok_or_else(|| anyhow!("this device is not a member of the network"))
}

/// `reflow commitment ...` (parsed once per run, like `Command`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum CommitmentCmd {
    /// Promise a flow (a commitment).
    Add(CommitmentInput),
    /// List commitments with their fulfilment (open, partly fulfilled, fulfilled; overdue by
    /// this computer's clock).
    List {
        /// Also fulfilled and finished ones.
        #[arg(long)]
        all: bool,
        /// The clock to judge `overdue` by (ISO 8601); default: now.
        #[arg(long)]
        now: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one commitment with the events that fulfil it.
    Show {
        /// The commitment id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mark a commitment finished: nothing more will be done (VF's explicit `finished`).
    Finish {
        /// The commitment id.
        id: String,
    },
}

/// The fields of a commitment.
#[derive(Debug, Args)]
pub struct CommitmentInput {
    /// Id (empty: generated).
    #[arg(default_value = "")]
    id: String,
    /// The promised action.
    #[arg(long)]
    action: String,
    /// Who will provide.
    #[arg(long)]
    provider: String,
    /// Who will receive.
    #[arg(long)]
    receiver: String,
    /// Quantity with its unit id: "5 kg".
    #[arg(long)]
    quantity: Option<String>,
    /// Effort with its unit id: "2 hour".
    #[arg(long)]
    effort: Option<String>,
    /// The kind of resource.
    #[arg(long)]
    conforms_to: Option<String>,
    /// Due (ISO 8601).
    #[arg(long)]
    due: Option<String>,
    /// The agreement it is a clause of.
    #[arg(long)]
    clause_of: Option<String>,
    /// The plan it belongs to.
    #[arg(long)]
    plan: Option<String>,
    /// The intent it satisfies.
    #[arg(long)]
    satisfies: Option<String>,
    /// Free text.
    #[arg(long)]
    note: Option<String>,
}

fn progress_name(p: Progress) -> &'static str {
    match p {
        Progress::Open => "open",
        Progress::Partly => "partly fulfilled",
        Progress::Fulfilled => "fulfilled",
    }
}

fn status_line(s: &reflow::CommitmentStatus) -> String {
    let c = &s.commitment;
    let amount = match (&s.fulfilled, &s.committed) {
        (Some(f), Some(w)) => format!(" {} of {}", f.has_numerical_value, w),
        _ => String::new(),
    };
    let mut flags = String::new();
    if c.finished {
        flags.push_str("  finished");
    }
    if s.overdue {
        flags.push_str("  OVERDUE");
    }
    format!(
        "{}  {} {} -> {}{amount}  {}{flags}",
        c.id,
        c.action,
        c.provider.as_ref().map_or("-", Id::as_str),
        c.receiver.as_ref().map_or("-", Id::as_str),
        progress_name(s.progress),
    )
}

/// Run a `commitment` command.
pub fn commitment_cmd(node: &Node, net: NetworkId, cmd: &CommitmentCmd) -> Result<()> {
    match cmd {
        CommitmentCmd::Add(i) => {
            let mut c = Commitment::new(
                Action::from_str(&i.action)?,
                i.provider.as_str(),
                i.receiver.as_str(),
            );
            c.id = Id::from(i.id.as_str());
            c.resource_quantity = measure(&i.quantity, "quantity")?;
            c.effort_quantity = measure(&i.effort, "effort")?;
            c.resource_conforms_to = id(&i.conforms_to);
            c.due = i.due.clone();
            c.clause_of = id(&i.clause_of);
            c.planned_within = id(&i.plan);
            c.satisfies = id(&i.satisfies);
            c.note = i.note.clone();
            println!("{}", node.write(net, |l| l.create(c))?);
        }
        CommitmentCmd::List { all, now, json } => {
            let now = now.clone().unwrap_or_else(crate::app::now_utc);
            let list: Vec<_> = node
                .read(net, |r| r.ledger().commitment_statuses(Some(&now)))??
                .into_iter()
                .filter(|s| *all || !s.is_done())
                .collect();
            if *json {
                print_json(&list)?;
            } else {
                for s in &list {
                    println!("{}", status_line(s));
                }
            }
        }
        CommitmentCmd::Show { id, json } => {
            let s = node.read(net, |r| {
                r.ledger().commitment_status(&Id::from(id.as_str()))
            })??;
            if *json {
                print_json(&s)?;
            } else {
                println!("{}", status_line(&s));
                for e in &s.fulfilled_by {
                    println!("  fulfilled by {e}");
                }
                for n in &s.not_counted {
                    println!("  not counted: {} ({})", n.id, n.reason);
                }
            }
        }
        CommitmentCmd::Finish { id } => {
            node.write(net, |l| {
                l.update::<Commitment>(&Id::from(id.as_str()), |c| c.finished = true)
            })?;
            println!("{id} finished");
        }
    }
    Ok(())
}

/// `reflow agreement ...`
#[derive(Debug, Subcommand)]
pub enum AgreementCmd {
    /// List agreements with their clauses' fulfilment.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one agreement: what it stipulates (both ways) and the events that realize it.
    Show {
        /// The agreement id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn agreement_text(a: &reflow::AgreementStatus) {
    println!(
        "{}  {}{}",
        a.agreement.id,
        a.agreement.name,
        if a.complete { "  complete" } else { "" }
    );
    for s in &a.stipulates {
        println!("  gives    {}", status_line(s));
    }
    for s in &a.stipulates_reciprocal {
        println!("  receives {}", status_line(s));
    }
}

/// Run an `agreement` command.
pub fn agreement_cmd(node: &Node, net: NetworkId, cmd: &AgreementCmd) -> Result<()> {
    match cmd {
        AgreementCmd::List { json } => {
            let list = node.read(net, |r| {
                r.ledger()
                    .list::<reflow::Agreement>()
                    .into_iter()
                    .map(|a| r.ledger().agreement_status(&a.id))
                    .collect::<reflow::Result<Vec<_>>>()
            })??;
            if *json {
                print_json(&list)?;
            } else {
                list.iter().for_each(agreement_text);
            }
        }
        AgreementCmd::Show { id, json } => {
            let a = node.read(net, |r| r.ledger().agreement_status(&Id::from(id.as_str())))??;
            if *json {
                print_json(&a)?;
            } else {
                agreement_text(&a);
                for e in &a.realizes {
                    println!("  realized by {e}");
                }
            }
        }
    }
    Ok(())
}

/// `reflow claim ...`
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ClaimCmd {
    /// Claim a flow in return for an event that happened.
    Add {
        /// Id (empty: generated).
        #[arg(default_value = "")]
        id: String,
        /// The claimed action (usually transfer).
        #[arg(long, default_value = "transfer")]
        action: String,
        /// Who owes.
        #[arg(long)]
        provider: String,
        /// Who is owed.
        #[arg(long)]
        receiver: String,
        /// Quantity with its unit id: "140 one".
        #[arg(long)]
        quantity: Option<String>,
        /// The kind of resource.
        #[arg(long)]
        conforms_to: Option<String>,
        /// The event that gave rise to it.
        #[arg(long)]
        triggered_by: Option<String>,
        /// Due (ISO 8601).
        #[arg(long)]
        due: Option<String>,
    },
    /// List claims with their settlement.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run a `claim` command.
pub fn claim_cmd(node: &Node, net: NetworkId, cmd: &ClaimCmd) -> Result<()> {
    match cmd {
        ClaimCmd::Add {
            id: cid,
            action,
            provider,
            receiver,
            quantity,
            conforms_to,
            triggered_by,
            due,
        } => {
            let mut c = Claim::new(
                Action::from_str(action)?,
                provider.as_str(),
                receiver.as_str(),
            );
            c.id = Id::from(cid.as_str());
            c.resource_quantity = measure(quantity, "quantity")?;
            c.resource_conforms_to = id(conforms_to);
            c.triggered_by = id(triggered_by);
            c.due = due.clone();
            println!("{}", node.write(net, |l| l.create(c))?);
        }
        ClaimCmd::List { json } => {
            let list = node.read(net, |r| r.ledger().claim_statuses())?;
            if *json {
                print_json(&list)?;
            } else {
                for s in &list {
                    let amount = match (&s.settled, &s.claimed) {
                        (Some(f), Some(w)) => format!(" {} of {}", f.has_numerical_value, w),
                        _ => String::new(),
                    };
                    println!(
                        "{}  {} owes {}{amount}  {}",
                        s.claim.id,
                        s.claim.provider.as_ref().map_or("-", Id::as_str),
                        s.claim.receiver.as_ref().map_or("-", Id::as_str),
                        progress_name(s.progress)
                    );
                }
            }
        }
    }
    Ok(())
}

/// `reflow relationship ...`
#[derive(Debug, Subcommand)]
pub enum RelationshipCmd {
    /// Record that SUBJECT is ROLE of OBJECT ("ana volunteer cafe"). A member records only
    /// relationships its own agent is part of; an admin any.
    Add {
        /// The agent the role is about.
        subject: String,
        /// The role (an agent relationship role's id).
        role: String,
        /// The other agent.
        object: String,
        /// The agent in whose scope it holds.
        #[arg(long)]
        scope: Option<String>,
        /// Free text.
        #[arg(long)]
        note: Option<String>,
    },
    /// Define a role (admins only): its id, and its label read from subject to object.
    Role {
        /// Id ("volunteer").
        id: String,
        /// Label ("is volunteer of").
        label: String,
        /// Label read from object to subject ("has volunteer").
        #[arg(long)]
        inverse: Option<String>,
    },
    /// List relationships.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run a `relationship` command.
pub fn relationship_cmd(node: &Node, net: NetworkId, cmd: &RelationshipCmd) -> Result<()> {
    match cmd {
        RelationshipCmd::Add {
            subject,
            role,
            object,
            scope,
            note,
        } => {
            let mut r = AgentRelationship::new(subject.as_str(), role.as_str(), object.as_str());
            r.in_scope_of = id(scope);
            r.note = note.clone();
            println!("{}", node.write(net, |l| l.create(r))?);
        }
        RelationshipCmd::Role {
            id: rid,
            label,
            inverse,
        } => {
            let r = AgentRelationshipRole {
                id: Id::from(rid.as_str()),
                role_label: label.clone(),
                inverse_role_label: inverse.clone(),
                note: None,
                other_properties: Default::default(),
            };
            println!("{}", node.write(net, |l| l.create(r))?);
        }
        RelationshipCmd::List { json } => {
            let (list, roles) = node.read(net, |r| {
                (
                    r.ledger().list::<AgentRelationship>(),
                    r.ledger().list::<AgentRelationshipRole>(),
                )
            })?;
            if *json {
                let rows: Vec<serde_json::Value> = list
                    .iter()
                    .map(|r| {
                        let mut v = serde_json::to_value(r).unwrap_or_default();
                        v["id"] = serde_json::Value::String(r.id.to_string());
                        v
                    })
                    .collect();
                print_json(&rows)?;
            } else {
                for r in &list {
                    let label = roles
                        .iter()
                        .find(|x| x.id == r.relationship)
                        .map_or(r.relationship.as_str(), |x| x.role_label.as_str());
                    let scope = r
                        .in_scope_of
                        .as_ref()
                        .map(|s| format!(" (in scope of {s})"))
                        .unwrap_or_default();
                    println!("{} {label} {}{scope}", r.subject, r.object);
                }
            }
        }
    }
    Ok(())
}

/// `reflow recipe ...`
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum RecipeCmd {
    /// Add a recipe process (the template of a repair, a sorting run).
    Process {
        /// Id.
        id: String,
        /// Name.
        name: String,
        /// The process specification planned processes are based on.
        #[arg(long)]
        based_on: Option<String>,
    },
    /// Add a recipe exchange (the template of an agreement: "the pads are sold").
    Exchange {
        /// Id.
        id: String,
        /// Name.
        name: String,
    },
    /// Add a recipe flow into (default) or out of (--output) a recipe process, and/or a
    /// clause (--clause-of) or reciprocal clause (--reciprocal-clause-of) of a recipe exchange.
    Flow {
        /// Id (empty: generated).
        #[arg(default_value = "")]
        id: String,
        /// The recipe process.
        #[arg(long, required_unless_present_any = ["clause_of", "reciprocal_clause_of"])]
        process: Option<String>,
        /// The recipe exchange it is a clause of (the pads sold).
        #[arg(long)]
        clause_of: Option<String>,
        /// The recipe exchange it is the reciprocal clause of (the payment).
        #[arg(long)]
        reciprocal_clause_of: Option<String>,
        /// An output of the process (default: an input).
        #[arg(long)]
        output: bool,
        /// The action (work, consume, use, produce, modify, ...).
        #[arg(long)]
        action: String,
        /// Quantity with its unit id: "1 one".
        #[arg(long)]
        quantity: Option<String>,
        /// Effort with its unit id: "1 hour".
        #[arg(long)]
        effort: Option<String>,
        /// The kind of resource.
        #[arg(long)]
        conforms_to: Option<String>,
    },
    /// Plan a process from a recipe process: the process and one commitment per recipe flow,
    /// in one change.
    Plan {
        /// The recipe process.
        recipe_process: String,
        /// Who provides the work and the parts.
        #[arg(long)]
        provider: String,
        /// Who receives them.
        #[arg(long)]
        receiver: String,
        /// The plan (created if it does not exist, named after the recipe process).
        #[arg(long)]
        plan: Option<String>,
        /// Name of the planned process.
        #[arg(long)]
        name: Option<String>,
        /// Due (ISO 8601).
        #[arg(long)]
        due: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run a `recipe` command.
pub fn recipe_cmd(node: &Node, net: NetworkId, cmd: &RecipeCmd) -> Result<()> {
    match cmd {
        RecipeCmd::Process {
            id: rid,
            name,
            based_on,
        } => {
            let rp = RecipeProcess {
                id: Id::from(rid.as_str()),
                name: name.clone(),
                process_conforms_to: id(based_on),
                process_classified_as: Vec::new(),
                has_duration: None,
                image: None,
                note: None,
                other_properties: Default::default(),
            };
            println!("{}", node.write(net, |l| l.create(rp))?);
        }
        RecipeCmd::Exchange { id: xid, name } => {
            let x = reflow::RecipeExchange {
                id: Id::from(xid.as_str()),
                name: name.clone(),
                note: None,
                other_properties: Default::default(),
            };
            println!("{}", node.write(net, |l| l.create(x))?);
        }
        RecipeCmd::Flow {
            id: fid,
            process,
            clause_of,
            reciprocal_clause_of,
            output,
            action,
            quantity,
            effort,
            conforms_to,
        } => {
            let mut f = RecipeFlow::new(Action::from_str(action)?);
            f.id = Id::from(fid.as_str());
            if *output {
                f.recipe_output_of = id(process);
            } else {
                f.recipe_input_of = id(process);
            }
            f.recipe_clause_of = id(clause_of);
            f.recipe_reciprocal_clause_of = id(reciprocal_clause_of);
            f.resource_quantity = measure(quantity, "quantity")?;
            f.effort_quantity = measure(effort, "effort")?;
            f.resource_conforms_to = id(conforms_to);
            println!("{}", node.write(net, |l| l.create(f))?);
        }
        RecipeCmd::Plan {
            recipe_process,
            provider,
            receiver,
            plan,
            name,
            due,
            json,
        } => {
            let req = RecipePlanning {
                recipe_process: Id::from(recipe_process.as_str()),
                plan: id(plan),
                name: name.clone(),
                provider: Id::from(provider.as_str()),
                receiver: Id::from(receiver.as_str()),
                due: due.clone(),
                output_is_independent_demand: plan.is_some(),
            };
            let planned = node.write(net, |l| {
                if let Some(p) = &req.plan {
                    if l.get::<Plan>(p).is_none() {
                        let mut new = Plan::new(p.clone(), recipe_process.as_str());
                        new.due = req.due.clone();
                        l.create(new)?;
                    }
                }
                l.plan_from_recipe(&req)
            })?;
            if *json {
                print_json(&planned)?;
            } else {
                println!("process {}", planned.process);
                for c in planned.inputs.iter().chain(&planned.outputs) {
                    println!("  commitment {c}");
                }
                for a in &planned.agreements {
                    println!("agreement {a}");
                }
                for c in &planned.exchange {
                    println!("  commitment {c}");
                }
            }
        }
    }
    Ok(())
}

/// `reflow flows`: totals of events by action, specification, agent, place and period.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Group by these, comma-separated: action, spec, provider, receiver, place.
    #[arg(long, value_delimiter = ',')]
    by: Vec<String>,
    /// Group by period too: day, week (ISO) or month.
    #[arg(long)]
    period: Option<String>,
    /// Only events at or after this time (ISO 8601 date or date-time).
    #[arg(long)]
    from: Option<String>,
    /// Only events before this time (ISO 8601 date or date-time).
    #[arg(long)]
    to: Option<String>,
    /// Only this action.
    #[arg(long)]
    action: Option<String>,
    /// Only events this agent provided or received.
    #[arg(long)]
    agent: Option<String>,
    /// Only at this place.
    #[arg(long)]
    place: Option<String>,
    /// Only of this resource specification.
    #[arg(long)]
    spec: Option<String>,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV (RFC 4180).
    #[arg(long)]
    csv: bool,
}

impl FlowsArgs {
    /// The arguments as the web UI passes them (query string).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        by: Vec<String>,
        period: Option<String>,
        from: Option<String>,
        to: Option<String>,
        action: Option<String>,
        agent: Option<String>,
        place: Option<String>,
        spec: Option<String>,
    ) -> Self {
        FlowsArgs {
            by,
            period,
            from,
            to,
            action,
            agent,
            place,
            spec,
            json: true,
            csv: false,
        }
    }

    /// The engine query these arguments ask for.
    pub fn query(&self) -> Result<FlowQuery> {
        Ok(FlowQuery {
            group_by: self
                .by
                .iter()
                .map(|d| FlowDimension::from_str(d.trim()).map_err(|e| anyhow!(e)))
                .collect::<Result<_>>()?,
            period: self
                .period
                .as_deref()
                .map(|p| Period::from_str(p).map_err(|e| anyhow!(e)))
                .transpose()?,
            from: self.from.clone(),
            to: self.to.clone(),
            action: self.action.as_deref().map(Action::from_str).transpose()?,
            agent: id(&self.agent),
            place: id(&self.place),
            resource_specification: id(&self.spec),
        })
    }
}

/// Run `reflow flows`.
pub fn flows_cmd(node: &Node, net: NetworkId, a: &FlowsArgs) -> Result<()> {
    let query = a.query()?;
    let report = node.read(net, |r| r.ledger().flows(&query))??;
    if a.json {
        print_json(&report)?;
    } else if a.csv {
        print!("{}", report.to_csv());
    } else {
        for r in &report.rows {
            let key: Vec<String> = [
                r.period.clone(),
                r.action.map(|x| x.to_string()),
                r.resource_specification.as_ref().map(Id::to_string),
                r.provider.as_ref().map(|x| format!("from {x}")),
                r.receiver.as_ref().map(|x| format!("to {x}")),
                r.place.as_ref().map(|x| format!("at {x}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            println!(
                "{}  {} {}  ({} events)",
                if key.is_empty() {
                    "all".to_string()
                } else {
                    key.join("  ")
                },
                r.quantity,
                r.unit.as_ref().map_or("", Id::as_str),
                r.events
            );
        }
        if report.undated > 0 {
            println!(
                "({} events without a readable time left out)",
                report.undated
            );
        }
    }
    Ok(())
}
