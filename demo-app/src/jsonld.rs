//! `reflow export` / `reflow import`: a network's ledger as ValueFlows JSON-LD.
//!
//! The document is `{"@context": ..., "@graph": [...]}`. The context's `@vocab` is the
//! ValueFlows 1.0 namespace (`https://w3id.org/valueflows/ont/vf#`), so every field name is the
//! vocabulary's own term (`resourceInventoriedAs`, `hasNumericalValue`) and every `@type` a VF
//! class (`EconomicEvent`, `Person`, `Unit`, ...); reference-valued terms are declared
//! `"@type": "@id"` and ids resolve against a `urn:reflow:` base, so a JSON-LD processor reads
//! the links as IRIs. Reflow's own additions (`agentKind`, `createdResource`, `symbol`, ...)
//! are terms in the same vocabulary; other tools ignore what they do not know.
//!
//! Events are written in the ledger's order, corrected ones included; resources carry their
//! descriptive fields and, for information, their derived quantities. Import replays the
//! events in that order in one atomic write (quantities are derived again, never copied), maps
//! `corrects` to the new event ids, and refuses the whole file, listing every problem, if any
//! node is of an unsupported type, has unknown fields, nested nodes, missing references, or
//! a resource that no event creates.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use anyhow::{anyhow, bail, Result};
use reflow::vf::action::CreateResource;
use reflow::{
    Agent, Agreement, Commitment, EconomicEvent, EventFilter, Id, Intent, Ledger, NetworkId, Node,
    Plan, Process, ProcessSpecification, Proposal, ResourceDescription, ResourceFilter,
    ResourceSpecification, SpatialThing, Unit, VfObject,
};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::progress;

/// The ValueFlows namespace (of the ontology, `vf-1.0.ttl`).
pub const VF: &str = "https://w3id.org/valueflows/ont/vf#";
/// The namespace the spec's examples use (accepted on import).
const VF_HTTP: &str = "http://w3id.org/valueflows/ont/vf#";

/// Terms whose values are references to other nodes.
const REFS: [&str; 31] = [
    "provider",
    "receiver",
    "resourceInventoriedAs",
    "toResourceInventoriedAs",
    "resourceConformsTo",
    "conformsTo",
    "inputOf",
    "outputOf",
    "atLocation",
    "toLocation",
    "corrects",
    "realizationOf",
    "hasUnit",
    "basedOn",
    "plannedWithin",
    "primaryLocation",
    "publishes",
    "eligibleLocation",
    "createdResource",
    "currentLocation",
    "primaryAccountable",
    "custodian",
    "containedIn",
    "stage",
    "unitOfEffort",
    "defaultUnitOfResource",
    "defaultUnitOfEffort",
    "clauseOf",
    "removedBy",
    "independentDemandOf",
    "reciprocalClauseOf",
];

/// The JSON-LD context written by `export`.
pub fn context() -> Value {
    let mut c = Map::new();
    c.insert("@vocab".into(), json!(VF));
    c.insert("@base".into(), json!("urn:reflow:"));
    c.insert("vf".into(), json!(VF));
    c.insert("xsd".into(), json!("http://www.w3.org/2001/XMLSchema#"));
    for r in REFS {
        c.insert(r.into(), json!({"@type": "@id"}));
    }
    c.insert("hasNumericalValue".into(), json!({"@type": "xsd:decimal"}));
    Value::Object(c)
}

fn ld_node<T: Serialize>(x: &T, id: &Id, ty: &str) -> Value {
    let mut v = serde_json::to_value(x).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("id");
        let mut out = Map::new();
        out.insert("@id".into(), json!(id));
        out.insert("@type".into(), json!(ty));
        out.extend(std::mem::take(m));
        return Value::Object(out);
    }
    v
}

fn agent_type(a: &Agent) -> &'static str {
    match a.agent_kind {
        reflow::AgentKind::Organization => "Organization",
        _ => "Person",
    }
}

/// The network's ledger as a JSON-LD document.
pub fn export(node: &Node, net: NetworkId) -> Result<Value> {
    let graph = node.read(net, |r| {
        let l = r.ledger();
        let mut g: Vec<Value> = Vec::new();
        g.extend(nodes::<Unit>(l, |_| "Unit"));
        g.extend(nodes::<SpatialThing>(l, |_| "SpatialThing"));
        g.extend(nodes::<Agent>(l, agent_type));
        g.extend(nodes::<ResourceSpecification>(l, |_| {
            "ResourceSpecification"
        }));
        g.extend(nodes::<ProcessSpecification>(l, |_| "ProcessSpecification"));
        g.extend(nodes::<Plan>(l, |_| "Plan"));
        g.extend(nodes::<Process>(l, |_| "Process"));
        g.extend(nodes::<Agreement>(l, |_| "Agreement"));
        g.extend(nodes::<Commitment>(l, |_| "Commitment"));
        let all = ResourceFilter {
            include_empty: true,
            ..ResourceFilter::default()
        };
        g.extend(
            l.inventory(&all)
                .iter()
                .map(|x| ld_node(x, &x.id, "EconomicResource")),
        );
        let events = l.events(&EventFilter {
            include_corrected: true,
            ..EventFilter::default()
        });
        g.extend(events.iter().map(|e| ld_node(e, &e.id, "EconomicEvent")));
        g.extend(nodes::<Intent>(l, |_| "Intent"));
        g.extend(nodes::<Proposal>(l, |_| "Proposal"));
        (l.network_name(), g)
    })?;
    Ok(json!({
        "@context": context(),
        "name": graph.0,
        "@graph": graph.1,
    }))
}

/// Every object of one kind as JSON-LD nodes, typed by `ty` (the ValueFlows class).
fn nodes<T: VfObject>(l: &Ledger, ty: impl Fn(&T) -> &'static str) -> Vec<Value> {
    l.list::<T>()
        .iter()
        .map(|x| ld_node(x, x.id(), ty(x)))
        .collect()
}

/// What an import wrote.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Objects created, by type.
    pub created: std::collections::BTreeMap<String, usize>,
    /// Objects already present with the same content (skipped).
    pub unchanged: usize,
    /// Events recorded.
    pub events: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "imported {} events", self.events)?;
        for (k, n) in &self.created {
            write!(f, ", {n} {k}")?;
        }
        if self.unchanged > 0 {
            write!(f, " ({} objects already present)", self.unchanged)?;
        }
        Ok(())
    }
}

/// A node of the file, normalised: short type, id, fields without `@` keys or `vf:` prefixes.
struct Item {
    ty: String,
    id: String,
    fields: Map<String, Value>,
}

/// Fields of a resource node that Reflow derives from events (ignored on import when an
/// event in the file creates the resource).
const DERIVED: [&str; 10] = [
    "accountingQuantity",
    "onhandQuantity",
    "currentLocation",
    "primaryAccountable",
    "custodian",
    "containedIn",
    "stage",
    "state",
    "removedBy",
    "unitOfEffort",
];

fn strip_prefix(s: &str) -> &str {
    s.strip_prefix("vf:")
        .or_else(|| s.strip_prefix(VF))
        .or_else(|| s.strip_prefix(VF_HTTP))
        .unwrap_or(s)
}

/// Normalise a value: `{"@id": x}` references become `x`.
fn norm(v: Value) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("@id") => {
            m.get("@id").cloned().unwrap_or(Value::Null)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(norm).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (strip_prefix(&k).to_string(), norm(v)))
                .collect(),
        ),
        other => other,
    }
}

fn check_context(doc: &Value, problems: &mut Vec<String>) {
    let Some(ctx) = doc.get("@context") else {
        problems.push("no @context: expected the ValueFlows vocabulary as @vocab".into());
        return;
    };
    let parts: Vec<&Value> = match ctx {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let ok = parts.iter().any(|p| {
        let vocab = p.get("@vocab").and_then(Value::as_str);
        let vf = p.get("vf").and_then(Value::as_str);
        [vocab, vf]
            .into_iter()
            .flatten()
            .any(|v| v == VF || v == VF_HTTP)
    });
    if !ok {
        problems.push(format!(
            "the @context does not declare the ValueFlows vocabulary ({VF}) as @vocab"
        ));
    }
}

/// Parse the document into items, collecting problems.
fn items(text: &str, problems: &mut Vec<String>) -> Result<Vec<Item>> {
    let doc: Value = serde_json::from_str(text).map_err(|e| anyhow!("not JSON: {e}"))?;
    let graph = match &doc {
        Value::Object(m) if m.contains_key("@graph") => {
            check_context(&doc, problems);
            match m.get("@graph") {
                Some(Value::Array(a)) => a.clone(),
                Some(other) => vec![other.clone()],
                None => Vec::new(),
            }
        }
        Value::Object(m) if m.contains_key("@type") => {
            check_context(&doc, problems);
            let mut m = m.clone();
            m.remove("@context");
            vec![Value::Object(m)]
        }
        _ => bail!("not a JSON-LD document with an @graph of ValueFlows nodes"),
    };
    let mut out = Vec::new();
    let mut queue: std::collections::VecDeque<Value> = graph.into();
    let mut i = 0;
    while let Some(n) = queue.pop_front() {
        i += 1;
        let Value::Object(m) = n else {
            problems.push(format!("@graph item {i} is not an object"));
            continue;
        };
        let id = m.get("@id").and_then(Value::as_str).map(str::to_string);
        let ty = match m.get("@type") {
            Some(Value::String(s)) => Some(strip_prefix(s).to_string()),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(|s| strip_prefix(s).to_string())
                .next(),
            _ => None,
        };
        let (Some(id), Some(ty)) = (id, ty) else {
            problems.push(format!("@graph item {i} lacks a string @id or @type"));
            continue;
        };
        let mut fields = Map::new();
        for (k, v) in m {
            if k.starts_with('@') {
                continue;
            }
            let k = strip_prefix(&k).to_string();
            let nested = match &v {
                Value::Object(o) => o.contains_key("@type"),
                Value::Array(a) => a
                    .iter()
                    .any(|x| x.as_object().is_some_and(|o| o.contains_key("@type"))),
                _ => false,
            };
            if !nested {
                fields.insert(k, norm(v));
                continue;
            }
            // Nested nodes the spec's examples use: a process's inputs and outputs and a
            // proposal's intents are flattened into the graph, linked to their parent.
            let link = match (ty.as_str(), k.as_str()) {
                ("Process", "hasInput") => Some("inputOf"),
                ("Process", "hasOutput") => Some("outputOf"),
                ("Proposal", "publishes") => None,
                _ => {
                    problems.push(format!(
                        "{ty} {id}: nested nodes under `{k}` are not supported (put them in @graph and link by id)"
                    ));
                    continue;
                }
            };
            let children = match v {
                Value::Array(a) => a,
                other => vec![other],
            };
            let mut ids = Vec::new();
            for child in children {
                match child {
                    Value::Object(mut c) if c.contains_key("@type") => {
                        if let Some(l) = link {
                            c.entry(l.to_string()).or_insert_with(|| json!(id));
                        }
                        ids.extend(c.get("@id").cloned());
                        queue.push_back(Value::Object(c));
                    }
                    other => ids.push(norm(other)),
                }
            }
            if link.is_none() {
                fields.insert(k, Value::Array(ids));
            }
        }
        out.push(Item { ty, id, fields });
    }
    Ok(out)
}

/// Parse an item as `T`, reporting fields `T` does not have.
fn parse<T: VfObject>(it: &Item, ignore: &[&str], problems: &mut Vec<String>) -> Option<T> {
    let mut fields = it.fields.clone();
    for k in ignore {
        fields.remove(*k);
    }
    let mut x: T = match serde_json::from_value(Value::Object(fields.clone())) {
        Ok(x) => x,
        Err(e) => {
            problems.push(format!("{} {}: {e}", it.ty, it.id));
            return None;
        }
    };
    x.set_id(Id::from(it.id.as_str()));
    unknown_fields(it, &fields, &x, problems);
    Some(x)
}

fn unknown_fields(
    it: &Item,
    given: &Map<String, Value>,
    x: &impl Serialize,
    problems: &mut Vec<String>,
) {
    let back = serde_json::to_value(x).unwrap_or(Value::Null);
    let unknown: Vec<&str> = given
        .iter()
        .filter(|(k, v)| !v.is_null() && back.get(k.as_str()).is_none())
        .map(|(k, _)| k.as_str())
        .collect();
    if !unknown.is_empty() {
        problems.push(format!(
            "{} {}: unsupported fields {}",
            it.ty,
            it.id,
            unknown.join(", ")
        ));
    }
}

/// Objects to create, in dependency order, and events to record.
#[derive(Default)]
struct Plan_ {
    units: Vec<Unit>,
    places: Vec<SpatialThing>,
    agents: Vec<Agent>,
    specs: Vec<ResourceSpecification>,
    pspecs: Vec<ProcessSpecification>,
    plans: Vec<Plan>,
    processes: Vec<Process>,
    agreements: Vec<Agreement>,
    commitments: Vec<Commitment>,
    resources: HashMap<String, ResourceDescription>,
    events: Vec<EconomicEvent>,
    intents: Vec<Intent>,
    proposals: Vec<Proposal>,
}

fn plan(items: &[Item], problems: &mut Vec<String>) -> Plan_ {
    let mut p = Plan_::default();
    let mut resource_nodes: HashMap<String, &Item> = HashMap::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for it in items {
        if !seen.insert((it.ty.clone(), it.id.clone())) && it.ty != "EconomicResource" {
            problems.push(format!("{} {} appears twice", it.ty, it.id));
            continue;
        }
        match it.ty.as_str() {
            "Unit" | "om2:Unit" => p.units.extend(parse::<Unit>(it, &[], problems)),
            "SpatialThing" | "geo:SpatialThing" => {
                p.places.extend(parse::<SpatialThing>(it, &[], problems));
            }
            "Person" | "Organization" | "Agent" | "foaf:Person" => {
                let mut fields = it.fields.clone();
                let kind = if it.ty == "Organization" {
                    "organization"
                } else {
                    "person"
                };
                fields
                    .entry("agentKind".to_string())
                    .or_insert_with(|| json!(kind));
                let it2 = Item {
                    ty: it.ty.clone(),
                    id: it.id.clone(),
                    fields,
                };
                p.agents.extend(parse::<Agent>(&it2, &[], problems));
            }
            "ResourceSpecification" => {
                p.specs
                    .extend(parse::<ResourceSpecification>(it, &[], problems));
            }
            "ProcessSpecification" => {
                p.pspecs
                    .extend(parse::<ProcessSpecification>(it, &[], problems));
            }
            "Plan" => p.plans.extend(parse::<Plan>(it, &[], problems)),
            "Process" => p.processes.extend(parse::<Process>(it, &[], problems)),
            "Agreement" => p.agreements.extend(parse::<Agreement>(it, &[], problems)),
            "Commitment" => p.commitments.extend(parse::<Commitment>(it, &[], problems)),
            "Intent" => p.intents.extend(parse::<Intent>(it, &[], problems)),
            "Proposal" => p.proposals.extend(parse::<Proposal>(it, &[], problems)),
            "EconomicResource" => {
                if let Some(prev) = resource_nodes.get(&it.id) {
                    if prev.fields != it.fields {
                        problems.push(format!(
                            "EconomicResource {} is described twice, differently (a before/after snapshot? Reflow derives quantities from events)",
                            it.id
                        ));
                    }
                    continue;
                }
                resource_nodes.insert(it.id.clone(), it);
                // Some spec examples write a resource's `conformsTo` as `resourceConformsTo`.
                let mut fields = it.fields.clone();
                if let Some(v) = fields.remove("resourceConformsTo") {
                    fields.entry("conformsTo".to_string()).or_insert(v);
                }
                let it = &Item {
                    ty: it.ty.clone(),
                    id: it.id.clone(),
                    fields,
                };
                if let Some(d) = parse::<ResourceDescription>(it, &DERIVED, problems) {
                    p.resources.insert(it.id.clone(), d);
                }
            }
            "EconomicEvent" => {
                let mut fields = it.fields.clone();
                fields.remove("id");
                match serde_json::from_value::<EconomicEvent>(Value::Object(fields.clone())) {
                    Ok(mut e) => {
                        e.id = Id::from(it.id.as_str());
                        unknown_fields(it, &fields, &e, problems);
                        p.events.push(e);
                    }
                    Err(e) => problems.push(format!("EconomicEvent {}: {e}", it.id)),
                }
            }
            other => problems.push(format!("{other} {}: type not supported", it.id)),
        }
    }
    p
}

/// Import `text` into `net`, all or nothing.
pub fn import(node: &Node, net: NetworkId, text: &str) -> Result<Summary> {
    let mut problems = Vec::new();
    let items = items(text, &mut problems)?;
    let plan = plan(&items, &mut problems);
    if problems.is_empty() {
        node.read(net, |r| precheck(r.ledger(), &plan, &mut problems))?;
    }
    refuse_problems(&problems)?;
    let bar = progress::bar(plan.total() as u64, "importing");
    let summary = node.write(net, |l| apply(l, &plan, &bar));
    bar.finish_and_clear();
    Ok(summary?)
}

/// [`import`] into a plain ledger (no node, no progress bar), all or nothing: the same
/// checks and writes. What the JSON-LD fuzz target and tests drive.
pub fn import_ledger(l: &mut Ledger, text: &str) -> Result<Summary> {
    let mut problems = Vec::new();
    let items = items(text, &mut problems)?;
    let plan = plan(&items, &mut problems);
    if problems.is_empty() {
        precheck(l, &plan, &mut problems);
    }
    refuse_problems(&problems)?;
    // All or nothing: the plan is written into a fork, which replaces the ledger only if
    // every write succeeded (a node gets the same from its write path's rewind).
    let mut work = l.fork(l.actor().clone());
    let summary = apply(&mut work, &plan, &indicatif::ProgressBar::hidden())?;
    *l = work;
    Ok(summary)
}

fn refuse_problems(problems: &[String]) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    let shown: Vec<String> = problems.iter().take(20).cloned().collect();
    let more = if n > 20 {
        format!("; and {} more", n - 20)
    } else {
        String::new()
    };
    bail!(
        "nothing imported: {n} problem{} in the file: {}{more}",
        if n == 1 { "" } else { "s" },
        shown.join("; ")
    );
}

impl Plan_ {
    fn total(&self) -> usize {
        self.units.len()
            + self.places.len()
            + self.agents.len()
            + self.specs.len()
            + self.pspecs.len()
            + self.plans.len()
            + self.processes.len()
            + self.agreements.len()
            + self.commitments.len()
            + self.events.len()
            + self.intents.len()
            + self.proposals.len()
    }
}

/// Write a checked plan into `l`.
fn apply(l: &mut Ledger, plan: &Plan_, bar: &indicatif::ProgressBar) -> reflow::Result<Summary> {
    let mut s = Summary::default();
    create_all(l, &plan.units, "units", &mut s, bar)?;
    create_all(l, &plan.places, "locations", &mut s, bar)?;
    create_all(l, &plan.agents, "agents", &mut s, bar)?;
    create_all(l, &plan.specs, "resource specifications", &mut s, bar)?;
    create_all(l, &plan.pspecs, "process specifications", &mut s, bar)?;
    create_all(l, &plan.plans, "plans", &mut s, bar)?;
    create_all(l, &plan.processes, "processes", &mut s, bar)?;
    create_all(l, &plan.agreements, "agreements", &mut s, bar)?;
    create_all(l, &plan.commitments, "commitments", &mut s, bar)?;
    let mut ids: HashMap<Id, Id> = HashMap::new();
    for e in &plan.events {
        let old = e.id.clone();
        let mut e = e.clone();
        e.id = Id::default();
        if let Some(c) = &e.corrects {
            e.corrects = Some(ids.get(c).cloned().unwrap_or_else(|| c.clone()));
        }
        let creates = creates(l, plan, &e);
        e.created_resource = None;
        let new = match creates {
            Some(d) => {
                // The new resource becomes the event's (to-)resource.
                match e.action.effects().create_resource {
                    CreateResource::OptionalTo => e.to_resource_inventoried_as = None,
                    _ => e.resource_inventoried_as = None,
                }
                l.record_event(e.creating(d))?
            }
            None => l.record_event(e)?,
        };
        ids.insert(old, new);
        s.events += 1;
        bar.inc(1);
    }
    create_all(l, &plan.intents, "intents", &mut s, bar)?;
    create_all(l, &plan.proposals, "proposals", &mut s, bar)?;
    Ok(s)
}

/// The description of the resource `e` creates, if it creates one: the one named by
/// `createdResource`, else a resource of the file that does not exist yet and that the action
/// may create.
fn creates(l: &Ledger, plan: &Plan_, e: &EconomicEvent) -> Option<ResourceDescription> {
    let missing = |id: &Option<Id>| {
        id.as_ref()
            .filter(|id| l.resource(id).is_none())
            .and_then(|id| plan.resources.get(id.as_str()))
            .cloned()
    };
    match e.action.effects().create_resource {
        CreateResource::Optional => missing(&e.resource_inventoried_as),
        CreateResource::OptionalTo => missing(&e.to_resource_inventoried_as),
        CreateResource::NotApplicable => None,
    }
}

fn create_all<T: VfObject + PartialEq>(
    l: &mut Ledger,
    xs: &[T],
    what: &str,
    s: &mut Summary,
    bar: &indicatif::ProgressBar,
) -> reflow::Result<()> {
    for x in xs {
        match l.get::<T>(x.id()) {
            Some(existing) if &existing == x => s.unchanged += 1,
            _ => {
                l.create(x.clone())?;
                *s.created.entry(what.to_string()).or_default() += 1;
            }
        }
        bar.inc(1);
    }
    Ok(())
}

/// Problems the ledger would refuse, found before writing, all at once: references to
/// objects neither in the file nor in the ledger, resources no event creates, objects that
/// exist with other content.
fn precheck(l: &Ledger, p: &Plan_, problems: &mut Vec<String>) {
    let mut known: HashSet<String> = HashSet::new();
    let mut add = |ids: Vec<&Id>| {
        for i in ids {
            known.insert(i.to_string());
        }
    };
    add(p.units.iter().map(|x| &x.id).collect());
    add(p.places.iter().map(|x| &x.id).collect());
    add(p.agents.iter().map(|x| &x.id).collect());
    add(p.specs.iter().map(|x| &x.id).collect());
    add(p.pspecs.iter().map(|x| &x.id).collect());
    add(p.plans.iter().map(|x| &x.id).collect());
    add(p.processes.iter().map(|x| &x.id).collect());
    add(p.agreements.iter().map(|x| &x.id).collect());
    add(p.commitments.iter().map(|x| &x.id).collect());
    add(p.intents.iter().map(|x| &x.id).collect());
    let resources: HashSet<&str> = p.resources.keys().map(String::as_str).collect();
    let events: HashSet<&str> = p.events.iter().map(|e| e.id.as_str()).collect();
    let mut missing: BTreeSet<String> = BTreeSet::new();
    let is_known = |id: &Id| {
        known.contains(id.as_str())
            || resources.contains(id.as_str())
            || events.contains(id.as_str())
            || l.object(id).is_some()
            || l.resource(id).is_some()
    };
    for e in &p.events {
        let refs = [
            ("provider", &e.provider),
            ("receiver", &e.receiver),
            ("resourceInventoriedAs", &e.resource_inventoried_as),
            ("toResourceInventoriedAs", &e.to_resource_inventoried_as),
            ("resourceConformsTo", &e.resource_conforms_to),
            ("inputOf", &e.input_of),
            ("outputOf", &e.output_of),
            ("atLocation", &e.at_location),
            ("toLocation", &e.to_location),
            ("corrects", &e.corrects),
            ("realizationOf", &e.realization_of),
        ];
        for (field, id) in refs {
            if let Some(id) = id {
                if !is_known(id) {
                    missing.insert(format!("{field} {id} (of event {})", e.id));
                }
            }
        }
        for m in [&e.resource_quantity, &e.effort_quantity]
            .into_iter()
            .flatten()
        {
            if !is_known(&m.has_unit) {
                missing.insert(format!("unit {} (of event {})", m.has_unit, e.id));
            }
        }
    }
    let created: HashSet<&str> = p
        .events
        .iter()
        .filter_map(|e| match e.action.effects().create_resource {
            CreateResource::Optional => e.resource_inventoried_as.as_ref(),
            CreateResource::OptionalTo => e.to_resource_inventoried_as.as_ref(),
            CreateResource::NotApplicable => None,
        })
        .map(Id::as_str)
        .collect();
    let mut uncreated: Vec<&str> = p
        .resources
        .keys()
        .map(String::as_str)
        .filter(|r| !created.contains(r) && l.resource(&Id::from(*r)).is_none())
        .collect();
    uncreated.sort_unstable();
    for r in uncreated {
        problems.push(format!(
            "EconomicResource {r}: no event in the file creates it (Reflow derives resources and quantities from events: add a raise or produce event)"
        ));
    }
    if !missing.is_empty() {
        problems.push(format!(
            "references to nodes neither in the file nor in the ledger: {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let mut p = Vec::new();
        let items = items(text, &mut p).expect("parsed");
        plan(&items, &mut p);
        p
    }

    #[test]
    fn spec_style_is_normalised() {
        let text = r#"{"@context": {"@vocab": "http://w3id.org/valueflows/ont/vf#"}, "@graph": [
            {"@id": "e", "@type": "vf:EconomicEvent", "vf:action": "raise",
             "provider": {"@id": "a"}, "receiver": "a",
             "resourceQuantity": {"hasUnit": {"@id": "kg"}, "hasNumericalValue": 2.5}}]}"#;
        let mut p = Vec::new();
        let items = items(text, &mut p).expect("parsed");
        let plan = plan(&items, &mut p);
        assert!(p.is_empty(), "{p:?}");
        let e = &plan.events[0];
        assert_eq!(e.provider, Some(Id::from("a")));
        let q = e.resource_quantity.as_ref().expect("quantity");
        assert_eq!(q.has_unit, Id::from("kg"));
        assert_eq!(q.has_numerical_value.to_string(), "2.5");
    }

    #[test]
    fn problems_are_all_listed() {
        let p = problems(
            r#"{"@graph": [{"@id": "x", "@type": "Claim"}, {"@type": "Unit"},
                {"@id": "u", "@type": "Unit", "label": "u", "symbol": "u", "size": 3},
                {"@id": "u", "@type": "Unit", "label": "u", "symbol": "u"}]}"#,
        );
        let all = p.join("\n");
        assert!(!all.is_empty());
        for needle in [
            "@context",
            "Claim x: type not supported",
            "lacks a string @id",
            "unsupported fields size",
            "Unit u appears twice",
        ] {
            assert!(all.contains(needle), "{needle:?} not in {all}");
        }
    }

    #[test]
    fn nested_inputs_outputs_and_intents_are_flattened() {
        let text = r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
            {"@id": "proc", "@type": "Process", "name": "P",
             "hasInput": [{"@id": "in", "@type": "EconomicEvent", "action": "consume",
                           "provider": "a", "receiver": "a"}],
             "hasOutput": {"@id": "out", "@type": "EconomicEvent", "action": "produce",
                           "provider": "a", "receiver": "a"}},
            {"@id": "prop", "@type": "Proposal", "name": "Q",
             "publishes": [{"@id": "i1", "@type": "Intent", "action": "transfer", "provider": "a"}, "i2"]},
            {"@id": "ev", "@type": "EconomicEvent", "action": "raise",
             "hasInput": [{"@id": "x", "@type": "EconomicEvent", "action": "use"}]}]}"#;
        let mut p = Vec::new();
        let items = items(text, &mut p).expect("parsed");
        let plan = plan(&items, &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("EconomicEvent ev: nested nodes under `hasInput`"),
            "{p:?}"
        );
        let ev = |id: &str| plan.events.iter().find(|e| e.id.as_str() == id).expect(id);
        assert_eq!(ev("in").input_of, Some(Id::from("proc")));
        assert_eq!(ev("out").output_of, Some(Id::from("proc")));
        assert_eq!(plan.intents[0].id, Id::from("i1"));
        assert_eq!(
            plan.proposals[0].publishes,
            vec![Id::from("i1"), Id::from("i2")]
        );
    }

    #[test]
    fn resource_conforms_to_alias() {
        let text = r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
            {"@id": "r", "@type": "EconomicResource", "name": "R", "resourceConformsTo": "spec"}]}"#;
        let mut p = Vec::new();
        let items = items(text, &mut p).expect("parsed");
        let plan = plan(&items, &mut p);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(plan.resources["r"].conforms_to, Some(Id::from("spec")));
    }

    #[test]
    fn not_json_ld() {
        let mut p = Vec::new();
        assert!(items("[1, 2]", &mut p).is_err());
        assert!(items("{", &mut p).is_err());
    }
}
