//! ValueFlows JSON-LD in and out of a ledger.
//!
//! [`export`] writes the ledger as `{"@context": ..., "@graph": [...]}` with the ValueFlows
//! namespace as `@vocab`, every reference-valued term declared `"@type": "@id"` and ids
//! relative to a `urn:reflow:` base. [`plan`] reads any ValueFlows JSON-LD (the spec's
//! examples as they are: compact IRIs, nested nodes, standard OM units by name, properties
//! Reflow does not model), checks it whole against the ledger and returns an [`ImportPlan`];
//! [`ImportPlan::apply`] writes it. Re-importing a file changes nothing: objects take the
//! node's IRI as their id, events remember the IRI they came from
//! ([`EconomicEvent::imported_from`]), and what exists identically is skipped.
//! docs/interop.md is the user's guide.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::expand::{
    self, local_name, Node, Props, Val, GEO, OM2, RDFS, REFLOW_TERMS, REFLOW_VOCAB, VF,
};
use super::units;
use crate::vf::action::CreateResource;
use crate::vf::{
    Action, Agent, AgentRelationship, AgentRelationshipRole, Agreement, Claim, Commitment,
    EconomicEvent, Id, Intent, Measure, ObjectKind, OtherProperties, Plan, Process,
    ProcessSpecification, Proposal, Recipe, RecipeExchange, RecipeFlow, RecipeProcess,
    ResourceDescription, ResourceSpecification, SpatialThing, Unit, VfObject,
};
use crate::{AgreementBundle, EventFilter, Ledger, ProposalList, Replica, ResourceFilter};

/// The base IRI of Reflow's own ids in an export (`kg` is `urn:reflow:kg`).
pub const BASE: &str = "urn:reflow:";

pub use super::problem::Problem;

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The text is not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The file has problems; every one found is listed.
    #[error("nothing imported: {} in the file: {}", plural(.0.len(), "problem"), list(.0))]
    Refused(Vec<Problem>),
    /// This device may not record an event of the file or create one of its agents (it is not
    /// an admin and its agent takes no part).
    #[error("nothing imported: node {node}: {source}")]
    NotAllowed {
        /// The event's or agent's `@id`.
        node: String,
        /// The refusal.
        #[source]
        source: Box<crate::Error>,
    },
    /// The ledger refused a write (the ledger changed between the check and the write).
    #[error("nothing imported: {0}")]
    Ledger(#[source] Box<crate::Error>),
}

impl From<crate::Error> for ImportError {
    fn from(e: crate::Error) -> Self {
        ImportError::Ledger(Box::new(e))
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn list(p: &[Problem]) -> String {
    let shown: Vec<String> = p.iter().take(20).map(Problem::to_string).collect();
    let more = if p.len() > 20 {
        format!("; and {} more", p.len() - 20)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join("; "))
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Create agents, units, specifications, locations and resources that the file refers to
    /// but does not define (`--create-missing`); otherwise they are refused, named.
    pub create_missing: bool,
    /// What the events are imported from (a file name): their `importSource`.
    pub source: String,
}

/// What an import wrote (or, from [`ImportPlan::report`], would write).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    /// Objects created, by ValueFlows class (events not included).
    pub created: BTreeMap<String, usize>,
    /// Events recorded.
    pub events: usize,
    /// Objects and events already in the ledger with the same content (skipped).
    pub unchanged: usize,
    /// What the file referred to without defining it, created because of
    /// [`ImportOptions::create_missing`]: `Class id`.
    pub created_missing: Vec<String>,
    /// Standard OM units the file used by name, created from Reflow's table.
    pub standard_units: Vec<String>,
    /// Resources the file describes but no event of it creates: each gets a `raise` of the
    /// quantity the file gives (Reflow derives quantities from events).
    pub opening_balances: Vec<String>,
    /// Properties Reflow does not model, kept with their objects: IRI and how many nodes.
    pub kept_properties: BTreeMap<String, usize>,
    /// Nodes of classes Reflow does not model, not imported: `Class id`.
    pub skipped: Vec<String>,
    /// How the file was read (e.g. a context without `@vocab`).
    pub notes: Vec<String>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "imported {} events", self.events)?;
        for (k, n) in &self.created {
            write!(f, ", {n} {k}")?;
        }
        if self.unchanged > 0 {
            write!(f, " ({} already present, unchanged)", self.unchanged)?;
        }
        let lines: [(&str, &Vec<String>); 5] = [
            ("created missing", &self.created_missing),
            ("standard units", &self.standard_units),
            ("opening balances", &self.opening_balances),
            ("skipped (class not modelled)", &self.skipped),
            ("notes", &self.notes),
        ];
        for (what, xs) in lines {
            if !xs.is_empty() {
                write!(f, "\n{what}: {}", xs.join(", "))?;
            }
        }
        if !self.kept_properties.is_empty() {
            let kept: Vec<String> = self
                .kept_properties
                .iter()
                .map(|(k, n)| format!("{k} ({n})"))
                .collect();
            write!(f, "\nkept unmodelled properties: {}", kept.join(", "))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Export

/// Terms whose values are references (written `"@type": "@id"`), besides ValueFlows' own
/// object properties.
const REFLOW_REFS: [&str; 3] = ["createdResource", "removedBy", "proposedTo"];

/// The JSON-LD context [`export`] writes.
pub fn context() -> Value {
    let mut c = Map::new();
    c.insert("@vocab".into(), json!(VF));
    c.insert("xsd".into(), json!(expand::XSD));
    for r in expand::VF_OBJECT_PROPERTIES.iter().chain(&REFLOW_REFS) {
        c.insert((*r).into(), json!({"@type": "@id"}));
    }
    // Reflow's own terms (and the ones `vf-1.0.ttl` does not define) in Reflow's namespace:
    // an export uses no undefined ValueFlows term.
    for t in REFLOW_TERMS {
        let mut d = Map::new();
        d.insert("@id".into(), json!(format!("{REFLOW_VOCAB}{t}")));
        if is_ref_term(t) {
            d.insert("@type".into(), json!("@id"));
        }
        c.insert(t.into(), Value::Object(d));
    }
    c.insert("action".into(), json!({"@type": "@vocab"}));
    c.insert("hasNumericalValue".into(), json!({"@type": "xsd:decimal"}));
    Value::Object(c)
}

/// What a Reflow id that is not an absolute IRI escapes when an export writes it relative
/// to [`BASE`] (RFC 3986 percent-encoding, UTF-8; non-ASCII is always escaped): every ASCII
/// character an IRI path segment may not hold (RFC 3987 `ipchar`: controls, space, `"`, `<`,
/// `>`, `[`, `\`, `]`, `^`, `` ` ``, `{`, `|`, `}`), `%` itself (so that decoding gives the
/// id back), `:` (a first segment with a colon reads as a scheme) and `/`, `?`, `#` (they
/// would start a segment, the query or the fragment). A relationship's id
/// `["ana","member","coop"]` is written `%5B%22ana%22,%22member%22,%22coop%22%5D`.
const ESCAPED: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Whether `id` is an absolute IRI as it stands (a scheme, then no character an IRI may not
/// hold, `%` only before two hex digits): the ids an import took from a file's IRIs.
fn is_absolute_iri(id: &str) -> bool {
    let Some((scheme, rest)) = id.split_once(':') else {
        return false;
    };
    let mut s = scheme.chars();
    if !s.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !s.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return false;
    }
    let b = rest.as_bytes();
    b.iter().enumerate().all(|(i, c)| match c {
        b'%' => {
            b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        }
        b' ' | b'"' | b'<' | b'>' | b'[' | b']' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' => false,
        c => !c.is_ascii_control(),
    })
}

/// An id as an export writes it: an absolute IRI as it is, any other Reflow id
/// percent-encoded ([`ESCAPED`]) to a relative IRI that resolves against [`BASE`].
pub(crate) fn export_id(id: &str) -> String {
    if is_absolute_iri(id) {
        id.to_string()
    } else {
        utf8_percent_encode(id, ESCAPED).to_string()
    }
}

/// The IRI of a Reflow id: the id itself if it is an IRI, else [`BASE`] followed by the id,
/// percent-encoded ([`export_id`]). What an export and a trace bundle write: absolute IRIs,
/// which every JSON-LD processor reads alike (a relative reference against the
/// non-hierarchical `urn:reflow:` does not resolve by RFC 3986 as it was meant).
pub(crate) fn full_iri(id: &str) -> String {
    if is_absolute_iri(id) {
        id.to_string()
    } else {
        format!("{BASE}{}", export_id(id))
    }
}

/// The Reflow id of a node's IRI: the IRI itself, or the part after [`BASE`],
/// percent-decoded (the inverse of [`export_id`]).
fn reflow_id(iri: &str) -> String {
    match iri.strip_prefix(BASE) {
        Some(rest) => percent_decode_str(rest)
            .decode_utf8()
            .map(|c| c.into_owned())
            .unwrap_or_else(|_| rest.to_string()),
        None => iri.to_string(),
    }
}

/// Reference-valued terms of an export: their string values are ids, written by
/// [`export_id`].
fn is_ref_term(k: &str) -> bool {
    expand::VF_OBJECT_PROPERTIES.contains(&k) || REFLOW_REFS.contains(&k)
}

/// Write the ids in `m`'s reference-valued fields (and in its measures' `hasUnit`) as
/// [`export_id`] does.
fn encode_refs(m: &mut Map<String, Value>) {
    encode_refs_by(m, &is_ref_term);
}

/// Write the ids in `m`'s fields that `is_ref` names (at any depth, single or in a list) as
/// absolute IRIs ([`full_iri`]); the export's terms and a trace bundle's share it.
pub(crate) fn encode_refs_by(m: &mut Map<String, Value>, is_ref: &dyn Fn(&str) -> bool) {
    for (k, v) in m.iter_mut() {
        match v {
            Value::String(s) if is_ref(k) => *s = full_iri(s),
            Value::Array(a) if is_ref(k) => {
                for x in a {
                    if let Value::String(s) = x {
                        *s = full_iri(s);
                    }
                }
            }
            Value::Object(inner) => encode_refs_by(inner, is_ref),
            _ => {}
        }
    }
}

/// A JSON-LD node for `x`: `@id`, `@type`, its fields, its kept properties.
fn ld_node<T: Serialize>(x: &T, id: &str, ty: &str) -> Value {
    let mut out = Map::new();
    out.insert("@id".into(), json!(full_iri(id)));
    out.insert("@type".into(), json!(ty));
    let Ok(Value::Object(mut m)) = serde_json::to_value(x) else {
        return Value::Object(out);
    };
    m.remove("id");
    // An empty name is no name (an import fills required names a file leaves out with "").
    if m.get("name") == Some(&json!("")) {
        m.remove("name");
    }
    let other = m.remove("otherProperties");
    encode_refs(&mut m);
    out.extend(m);
    if let Some(Value::Object(other)) = other {
        for (k, v) in other {
            // Only absolute IRIs: a key from a peer can never stand for a keyword or a term.
            if !k.starts_with('@') && k.contains(':') && !out.contains_key(&k) {
                out.insert(k, v);
            }
        }
    }
    Value::Object(out)
}

fn class_of_agent(a: &Agent) -> &'static str {
    match a.agent_kind {
        crate::AgentKind::Organization => "Organization",
        crate::AgentKind::Person => "Person",
    }
}

fn all<T: VfObject>(l: &Ledger, ty: impl Fn(&T) -> &'static str, g: &mut Vec<Value>) {
    for x in l.list::<T>() {
        g.push(ld_node(&x, x.id().as_str(), ty(&x)));
    }
}

/// The IRI an export writes for each event: where it was imported from, else its id.
fn event_iris(events: &[EconomicEvent]) -> HashMap<Id, String> {
    events
        .iter()
        .map(|e| {
            let iri = e
                .imported_from
                .clone()
                .unwrap_or_else(|| full_iri(e.id.as_str()));
            (e.id.clone(), iri)
        })
        .collect()
}

fn event_node(e: &EconomicEvent, iris: &HashMap<Id, String>) -> Value {
    let iri = iris.get(&e.id).cloned().unwrap_or_else(|| e.id.to_string());
    let mut v = ld_node(e, &iri, "EconomicEvent");
    if let Value::Object(m) = &mut v {
        m.remove("importedFrom");
        m.remove("importSource");
        if let Some(c) = &e.corrects {
            if let Some(i) = iris.get(c) {
                m.insert("corrects".into(), json!(i));
            }
        }
    }
    v
}

/// The whole ledger as a JSON-LD document: every object of every kind, every event in the
/// ledger's order (corrected ones included), resources with their derived state.
pub fn export(l: &Ledger) -> Value {
    let mut g: Vec<Value> = Vec::new();
    all::<Unit>(l, |_| "Unit", &mut g);
    all::<SpatialThing>(l, |_| "SpatialThing", &mut g);
    all::<Agent>(l, class_of_agent, &mut g);
    all::<AgentRelationshipRole>(l, |_| "AgentRelationshipRole", &mut g);
    all::<AgentRelationship>(l, |_| "AgentRelationship", &mut g);
    all::<ResourceSpecification>(l, |_| "ResourceSpecification", &mut g);
    all::<ProcessSpecification>(l, |_| "ProcessSpecification", &mut g);
    all::<RecipeExchange>(l, |_| "RecipeExchange", &mut g);
    all::<RecipeProcess>(l, |_| "RecipeProcess", &mut g);
    all::<Recipe>(l, |_| "Recipe", &mut g);
    all::<RecipeFlow>(l, |_| "RecipeFlow", &mut g);
    all::<Plan>(l, |_| "Plan", &mut g);
    all::<Process>(l, |_| "Process", &mut g);
    all::<AgreementBundle>(l, |_| "AgreementBundle", &mut g);
    all::<Agreement>(l, |_| "Agreement", &mut g);
    all::<Intent>(l, |_| "Intent", &mut g);
    all::<ProposalList>(l, |_| "ProposalList", &mut g);
    all::<Proposal>(l, |_| "Proposal", &mut g);
    all::<Commitment>(l, |_| "Commitment", &mut g);
    let events = l.events(&EventFilter {
        include_corrected: true,
        ..EventFilter::default()
    });
    let iris = event_iris(&events);
    let everything = ResourceFilter {
        include_empty: true,
        ..ResourceFilter::default()
    };
    for r in l.inventory(&everything) {
        let mut v = ld_node(&r, r.id.as_str(), "EconomicResource");
        if let (Value::Object(m), Some(by)) = (&mut v, &r.removed_by) {
            if let Some(i) = iris.get(by) {
                m.insert("removedBy".into(), json!(i));
            }
        }
        g.push(v);
    }
    g.extend(events.iter().map(|e| event_node(e, &iris)));
    for c in l.list::<Claim>() {
        let mut v = ld_node(&c, c.id.as_str(), "Claim");
        if let (Value::Object(m), Some(t)) = (&mut v, &c.triggered_by) {
            if let Some(i) = iris.get(t) {
                m.insert("triggeredBy".into(), json!(i));
            }
        }
        g.push(v);
    }
    json!({
        "@context": context(),
        "name": l.network_name(),
        "@graph": g,
    })
}

/// One resource's trace (its provenance, [`Ledger::trace`]) as a JSON-LD document: the
/// events of the trace, the resources and processes it reached with their descriptions (no
/// derived quantities: a subset's quantities are what its own events give), and the agents,
/// units, locations and specifications those refer to. It imports into an empty ledger.
pub fn export_trace(l: &Ledger, resource: &Id) -> crate::Result<Value> {
    let trace = l.trace(resource)?;
    let mut events: Vec<EconomicEvent> = trace
        .events()
        .into_iter()
        .filter_map(|id| l.event(id))
        .collect();
    // The ledger's order, so that an event is recorded after what it depends on.
    let order: HashMap<Id, usize> = l
        .events(&EventFilter {
            include_corrected: true,
            ..EventFilter::default()
        })
        .into_iter()
        .enumerate()
        .map(|(i, e)| (e.id, i))
        .collect();
    events.sort_by_key(|e| order.get(&e.id).copied().unwrap_or(usize::MAX));
    let in_trace: HashSet<Id> = events.iter().map(|e| e.id.clone()).collect();
    // A correction whose target is outside the trace would not import: leave it out.
    events.retain(|e| e.corrects.as_ref().is_none_or(|c| in_trace.contains(c)));
    let iris = event_iris(&events);
    let mut refs: BTreeSet<(ObjectKind, Id)> = BTreeSet::new();
    let mut resources: BTreeSet<Id> = trace.resources().into_iter().cloned().collect();
    for e in &events {
        for (kind, id) in event_refs(e) {
            match kind {
                ObjectKind::EconomicResource => {
                    resources.insert(id.clone());
                }
                ObjectKind::EconomicEvent | ObjectKind::Claim => {}
                _ => {
                    refs.insert((kind, id.clone()));
                }
            }
        }
    }
    let mut g: Vec<Value> = Vec::new();
    let mut descriptions = Vec::new();
    for r in &resources {
        if let Some(d) = l.get::<ResourceDescription>(r) {
            for (k, i) in d.references() {
                refs.insert((k, i.clone()));
            }
            descriptions.push(ld_node(&d, d.id.as_str(), "EconomicResource"));
        }
    }
    // Follow the objects' own references (a process's plan, a specification's units).
    let mut seen: BTreeSet<(ObjectKind, Id)> = BTreeSet::new();
    let mut queue: Vec<(ObjectKind, Id)> = refs.into_iter().collect();
    let mut nodes: BTreeMap<(usize, Id), Value> = BTreeMap::new();
    while let Some((kind, id)) = queue.pop() {
        if !seen.insert((kind, id.clone())) {
            continue;
        }
        let Some((rank, node, more)) = object_node(l, kind, &id) else {
            continue;
        };
        queue.extend(more);
        nodes.insert((rank, id), node);
    }
    g.extend(nodes.into_values());
    g.extend(descriptions);
    g.extend(events.iter().map(|e| event_node(e, &iris)));
    Ok(json!({
        "@context": context(),
        "name": l.network_name(),
        "@graph": g,
    }))
}

type Found = (usize, Value, Vec<(ObjectKind, Id)>);

fn object_node(l: &Ledger, kind: ObjectKind, id: &Id) -> Option<Found> {
    fn one<T: VfObject>(
        l: &Ledger,
        id: &Id,
        rank: usize,
        ty: impl Fn(&T) -> &'static str,
    ) -> Option<Found> {
        let x = l.get::<T>(id)?;
        let more = x
            .references()
            .into_iter()
            .map(|(k, i)| (k, i.clone()))
            .collect();
        Some((rank, ld_node(&x, id.as_str(), ty(&x)), more))
    }
    match kind {
        ObjectKind::Unit => one::<Unit>(l, id, 0, |_| "Unit"),
        ObjectKind::SpatialThing => one::<SpatialThing>(l, id, 1, |_| "SpatialThing"),
        ObjectKind::Agent => one::<Agent>(l, id, 2, class_of_agent),
        ObjectKind::ResourceSpecification => {
            one::<ResourceSpecification>(l, id, 3, |_| "ResourceSpecification")
        }
        ObjectKind::ProcessSpecification => {
            one::<ProcessSpecification>(l, id, 4, |_| "ProcessSpecification")
        }
        ObjectKind::Plan => one::<Plan>(l, id, 5, |_| "Plan"),
        ObjectKind::Process => one::<Process>(l, id, 6, |_| "Process"),
        ObjectKind::Agreement => one::<Agreement>(l, id, 7, |_| "Agreement"),
        ObjectKind::Intent => one::<Intent>(l, id, 8, |_| "Intent"),
        ObjectKind::Commitment => one::<Commitment>(l, id, 9, |_| "Commitment"),
        _ => None,
    }
}

/// The references of an event, with the kind each must have.
fn event_refs(e: &EconomicEvent) -> Vec<(ObjectKind, &Id)> {
    use ObjectKind as K;
    let singles = [
        (K::Agent, &e.provider),
        (K::Agent, &e.receiver),
        (K::EconomicResource, &e.resource_inventoried_as),
        (K::EconomicResource, &e.to_resource_inventoried_as),
        (K::ResourceSpecification, &e.resource_conforms_to),
        (K::Process, &e.input_of),
        (K::Process, &e.output_of),
        (K::SpatialThing, &e.at_location),
        (K::SpatialThing, &e.to_location),
        (K::EconomicEvent, &e.corrects),
        (K::Agreement, &e.realization_of),
        (K::Agreement, &e.reciprocal_realization_of),
        (K::Commitment, &e.fulfills),
        (K::Intent, &e.satisfies),
        (K::Claim, &e.settles),
    ];
    singles
        .into_iter()
        .filter_map(|(k, i)| i.as_ref().map(|i| (k, i)))
        .chain(
            [&e.resource_quantity, &e.effort_quantity]
                .into_iter()
                .flatten()
                .map(|m| (K::Unit, &m.has_unit)),
        )
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Import: from nodes to objects

/// How a ValueFlows property's values become a field's JSON.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Ref,
    Refs,
    Text,
    Texts,
    Measure,
    Bool,
    Number,
    Action,
}

/// The model's fields by ValueFlows local name (the JSON name is the same).
const FIELDS: &[(&str, Shape)] = {
    use Shape::*;
    &[
        ("provider", Ref),
        ("receiver", Ref),
        ("resourceInventoriedAs", Ref),
        ("toResourceInventoriedAs", Ref),
        ("resourceConformsTo", Ref),
        ("conformsTo", Ref),
        ("inputOf", Ref),
        ("outputOf", Ref),
        ("atLocation", Ref),
        ("toLocation", Ref),
        ("corrects", Ref),
        ("realizationOf", Ref),
        ("reciprocalRealizationOf", Ref),
        ("fulfills", Ref),
        ("satisfies", Ref),
        ("settles", Ref),
        ("basedOn", Ref),
        ("plannedWithin", Ref),
        ("primaryLocation", Ref),
        ("eligibleLocation", Ref),
        ("currentLocation", Ref),
        ("primaryAccountable", Ref),
        ("custodian", Ref),
        ("containedIn", Ref),
        ("stage", Ref),
        ("unitOfEffort", Ref),
        ("defaultUnitOfResource", Ref),
        ("defaultUnitOfEffort", Ref),
        ("clauseOf", Ref),
        ("reciprocalClauseOf", Ref),
        ("independentDemandOf", Ref),
        ("triggeredBy", Ref),
        ("primaryOutput", Ref),
        ("processConformsTo", Ref),
        ("recipeInputOf", Ref),
        ("recipeOutputOf", Ref),
        ("recipeClauseOf", Ref),
        ("recipeReciprocalClauseOf", Ref),
        ("subject", Ref),
        ("object", Ref),
        ("relationship", Ref),
        ("inScopeOf", Ref),
        ("bundledIn", Ref),
        ("listedIn", Refs),
        ("purpose", Text),
        ("createdResource", Ref),
        ("removedBy", Ref),
        ("publishes", Refs),
        ("reciprocal", Refs),
        ("proposedTo", Refs),
        ("recipeIncludes", Refs),
        ("name", Text),
        ("note", Text),
        ("label", Text),
        ("symbol", Text),
        ("trackingIdentifier", Text),
        ("hasPointInTime", Text),
        ("hasBeginning", Text),
        ("hasEnd", Text),
        ("due", Text),
        ("created", Text),
        ("state", Text),
        ("mappableAddress", Text),
        ("roleLabel", Text),
        ("inverseRoleLabel", Text),
        ("agentKind", Text),
        ("status", Text),
        ("classifiedAs", Texts),
        ("resourceClassifiedAs", Texts),
        ("processClassifiedAs", Texts),
        ("resourceQuantity", Measure),
        ("effortQuantity", Measure),
        ("availableQuantity", Measure),
        ("minimumQuantity", Measure),
        ("hasDuration", Measure),
        ("accountingQuantity", Measure),
        ("onhandQuantity", Measure),
        ("finished", Bool),
        ("unitBased", Bool),
        ("lat", Number),
        ("long", Number),
        ("alt", Number),
        ("action", Action),
    ]
};

/// The model field a property IRI stands for, and its shape.
/// The term of one of Reflow's own IRIs ([`REFLOW_TERMS`] under [`REFLOW_VOCAB`]).
fn own_term(iri: &str) -> Option<&str> {
    iri.strip_prefix(REFLOW_VOCAB)
        .filter(|t| REFLOW_TERMS.contains(t))
}

fn field_of(iri: &str) -> Option<(&'static str, Shape)> {
    let local = match iri {
        _ if iri == format!("{RDFS}label") => "label",
        _ if iri == format!("{OM2}symbol") => "symbol",
        _ if iri == format!("{GEO}lat") => "lat",
        _ if iri == format!("{GEO}long") => "long",
        _ => iri
            .strip_prefix(VF)
            .or_else(|| own_term(iri).filter(|t| !t.starts_with(char::is_uppercase)))?,
    };
    FIELDS
        .iter()
        .find(|(n, _)| *n == local)
        .map(|(n, s)| (*n, *s))
}

/// Fields of a resource node that Reflow derives from events: read for an opening balance,
/// never stored.
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

/// A value in expanded JSON-LD form (what [`OtherProperties`] keeps).
fn expanded_json(v: &Val) -> Value {
    match v {
        Val::Iri(i) => json!({"@id": i}),
        Val::Literal {
            value,
            datatype,
            language,
        } => {
            let mut m = Map::new();
            m.insert("@value".into(), value.clone());
            if let Some(d) = datatype {
                m.insert("@type".into(), json!(d));
            }
            if let Some(l) = language {
                m.insert("@language".into(), json!(l));
            }
            Value::Object(m)
        }
        Val::Embedded(props) => Value::Object(
            props
                .iter()
                .map(|(k, vs)| {
                    (
                        k.clone(),
                        Value::Array(vs.iter().map(expanded_json).collect()),
                    )
                })
                .collect(),
        ),
    }
}

/// The ValueFlows classes Reflow models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Class {
    Person,
    Organization,
    Unit,
    SpatialThing,
    AgentRelationshipRole,
    AgentRelationship,
    ResourceSpecification,
    ProcessSpecification,
    RecipeExchange,
    RecipeProcess,
    Recipe,
    RecipeFlow,
    Plan,
    Process,
    Agreement,
    AgreementBundle,
    Intent,
    Proposal,
    ProposalList,
    Commitment,
    EconomicResource,
    EconomicEvent,
    Claim,
}

impl Class {
    /// The modelled classes among `types` (one per kind of object).
    fn all(types: &[String]) -> Vec<Class> {
        let mut out: Vec<Class> = Vec::new();
        for t in types {
            if let Some(c) = Class::of(std::slice::from_ref(t)) {
                if out.iter().all(|o| o.kind() != c.kind()) {
                    out.push(c);
                }
            }
        }
        out
    }

    fn of(types: &[String]) -> Option<Class> {
        types.iter().find_map(|t| {
            let c = match t.as_str() {
                x if x == format!("{OM2}Unit") => Class::Unit,
                x if x == format!("{GEO}SpatialThing") => Class::SpatialThing,
                "http://xmlns.com/foaf/0.1/Person" | "https://schema.org/Person" => Class::Person,
                "http://xmlns.com/foaf/0.1/Organization" | "https://schema.org/Organization" => {
                    Class::Organization
                }
                x => match x.strip_prefix(VF).or_else(|| own_term(x))? {
                    "Person" | "Agent" => Class::Person,
                    "Organization" => Class::Organization,
                    "Unit" => Class::Unit,
                    "SpatialThing" => Class::SpatialThing,
                    "AgentRelationshipRole" => Class::AgentRelationshipRole,
                    "AgentRelationship" => Class::AgentRelationship,
                    "ResourceSpecification" => Class::ResourceSpecification,
                    "ProcessSpecification" => Class::ProcessSpecification,
                    "RecipeExchange" => Class::RecipeExchange,
                    "RecipeProcess" => Class::RecipeProcess,
                    "Recipe" => Class::Recipe,
                    "RecipeFlow" => Class::RecipeFlow,
                    "Plan" => Class::Plan,
                    "Process" => Class::Process,
                    "Agreement" => Class::Agreement,
                    "AgreementBundle" => Class::AgreementBundle,
                    "Intent" => Class::Intent,
                    "Proposal" => Class::Proposal,
                    "ProposalList" => Class::ProposalList,
                    "Commitment" => Class::Commitment,
                    "EconomicResource" => Class::EconomicResource,
                    "EconomicEvent" => Class::EconomicEvent,
                    "Claim" => Class::Claim,
                    _ => return None,
                },
            };
            Some(c)
        })
    }

    fn kind(self) -> ObjectKind {
        match self {
            Class::Person | Class::Organization => ObjectKind::Agent,
            Class::Unit => ObjectKind::Unit,
            Class::SpatialThing => ObjectKind::SpatialThing,
            Class::AgentRelationshipRole => ObjectKind::AgentRelationshipRole,
            Class::AgentRelationship => ObjectKind::AgentRelationship,
            Class::ResourceSpecification => ObjectKind::ResourceSpecification,
            Class::ProcessSpecification => ObjectKind::ProcessSpecification,
            Class::RecipeExchange => ObjectKind::RecipeExchange,
            Class::RecipeProcess => ObjectKind::RecipeProcess,
            Class::Recipe => ObjectKind::Recipe,
            Class::RecipeFlow => ObjectKind::RecipeFlow,
            Class::Plan => ObjectKind::Plan,
            Class::Process => ObjectKind::Process,
            Class::Agreement => ObjectKind::Agreement,
            Class::AgreementBundle => ObjectKind::AgreementBundle,
            Class::Intent => ObjectKind::Intent,
            Class::Proposal => ObjectKind::Proposal,
            Class::ProposalList => ObjectKind::ProposalList,
            Class::Commitment => ObjectKind::Commitment,
            Class::EconomicResource => ObjectKind::EconomicResource,
            Class::EconomicEvent => ObjectKind::EconomicEvent,
            Class::Claim => ObjectKind::Claim,
        }
    }
}

fn kind_class(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Agent => "Person",
        ObjectKind::Unit => "Unit",
        ObjectKind::SpatialThing => "SpatialThing",
        ObjectKind::ResourceSpecification => "ResourceSpecification",
        ObjectKind::ProcessSpecification => "ProcessSpecification",
        ObjectKind::EconomicResource => "EconomicResource",
        ObjectKind::RecipeProcess => "RecipeProcess",
        _ => "node",
    }
}

/// Inverse properties: a node of the class with the property sets the inverse on the target.
const INVERSES: [(Class, &str, &str); 5] = [
    (Class::Process, "hasInput", "inputOf"),
    (Class::Process, "hasOutput", "outputOf"),
    (Class::Agreement, "stipulates", "clauseOf"),
    (
        Class::Agreement,
        "stipulatesReciprocal",
        "reciprocalClauseOf",
    ),
    (Class::Agreement, "realizes", "realizationOf"),
];

/// `owl:sameAs`: the IRI an imported agent relationship had in its file.
const OWL_SAME_AS: &str = "http://www.w3.org/2002/07/owl#sameAs";

/// An object to create.
#[derive(Debug, Clone)]
enum Obj {
    Agent(Agent),
    Unit(Unit),
    SpatialThing(SpatialThing),
    AgentRelationshipRole(AgentRelationshipRole),
    AgentRelationship(AgentRelationship),
    ResourceSpecification(ResourceSpecification),
    ProcessSpecification(ProcessSpecification),
    RecipeExchange(RecipeExchange),
    RecipeProcess(RecipeProcess),
    Recipe(Recipe),
    RecipeFlow(RecipeFlow),
    Plan(Plan),
    Process(Process),
    Agreement(Agreement),
    AgreementBundle(AgreementBundle),
    Intent(Intent),
    Proposal(Proposal),
    ProposalList(ProposalList),
    Commitment(Commitment),
    Claim(Claim),
}

macro_rules! each_obj {
    ($o:expr, $x:ident => $body:expr) => {
        match $o {
            Obj::Agent($x) => $body,
            Obj::Unit($x) => $body,
            Obj::SpatialThing($x) => $body,
            Obj::AgentRelationshipRole($x) => $body,
            Obj::AgentRelationship($x) => $body,
            Obj::ResourceSpecification($x) => $body,
            Obj::ProcessSpecification($x) => $body,
            Obj::RecipeExchange($x) => $body,
            Obj::RecipeProcess($x) => $body,
            Obj::Recipe($x) => $body,
            Obj::RecipeFlow($x) => $body,
            Obj::Plan($x) => $body,
            Obj::Process($x) => $body,
            Obj::Agreement($x) => $body,
            Obj::AgreementBundle($x) => $body,
            Obj::ProposalList($x) => $body,
            Obj::Intent($x) => $body,
            Obj::Proposal($x) => $body,
            Obj::Commitment($x) => $body,
            Obj::Claim($x) => $body,
        }
    };
}

fn same<T: VfObject + PartialEq>(l: &Ledger, x: &T) -> Option<bool> {
    l.exists(T::KIND, x.id())
        .then(|| l.get::<T>(x.id()).as_ref() == Some(x))
}

impl Obj {
    fn id(&self) -> &Id {
        each_obj!(self, x => x.id())
    }
    fn kind(&self) -> ObjectKind {
        each_obj!(self, x => kind_of(x))
    }
    fn refs(&self) -> Vec<(ObjectKind, Id)> {
        each_obj!(self, x => x.references().into_iter().map(|(k, i)| (k, i.clone())).collect())
    }
    /// `Some(true)`: in the ledger identically; `Some(false)`: in the ledger otherwise.
    fn existing(&self, l: &Ledger) -> Option<bool> {
        each_obj!(self, x => same(l, x))
    }
    fn create(&self, l: &mut Ledger) -> crate::Result<Id> {
        each_obj!(self, x => l.create(x.clone()))
    }
    fn class(&self) -> &'static str {
        match self {
            Obj::Agent(a) => class_of_agent(a),
            other => kind_class_full(other.kind()),
        }
    }
}

fn kind_of<T: VfObject>(_: &T) -> ObjectKind {
    T::KIND
}

fn kind_class_full(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Unit => "Unit",
        ObjectKind::SpatialThing => "SpatialThing",
        ObjectKind::AgentRelationshipRole => "AgentRelationshipRole",
        ObjectKind::AgentRelationship => "AgentRelationship",
        ObjectKind::ResourceSpecification => "ResourceSpecification",
        ObjectKind::ProcessSpecification => "ProcessSpecification",
        ObjectKind::RecipeExchange => "RecipeExchange",
        ObjectKind::RecipeProcess => "RecipeProcess",
        ObjectKind::Recipe => "Recipe",
        ObjectKind::RecipeFlow => "RecipeFlow",
        ObjectKind::Plan => "Plan",
        ObjectKind::Process => "Process",
        ObjectKind::Agreement => "Agreement",
        ObjectKind::AgreementBundle => "AgreementBundle",
        ObjectKind::Intent => "Intent",
        ObjectKind::Proposal => "Proposal",
        ObjectKind::ProposalList => "ProposalList",
        ObjectKind::Commitment => "Commitment",
        ObjectKind::Claim => "Claim",
        ObjectKind::Agent => "Person",
        ObjectKind::EconomicResource => "EconomicResource",
        ObjectKind::EconomicEvent => "EconomicEvent",
        ObjectKind::RuleSet => "RuleSet",
    }
}

/// A step of the import, in order.
#[derive(Debug, Clone)]
enum Step {
    /// Create an object.
    Object(Box<Obj>),
    /// Record an event (`iri`: the node it came from), with the resource it creates.
    Event {
        iri: String,
        event: Box<EconomicEvent>,
        creates: Option<Box<ResourceDescription>>,
    },
}

/// A checked import, ready to write: what [`plan`] found in a file.
#[derive(Debug, Clone)]
pub struct ImportPlan {
    steps: Vec<Step>,
    report: ImportReport,
    /// Agents the import creates (for [`ImportPlan::check_recorder`]).
    agents: Vec<Id>,
}

/// Parse, expand and check `text` against `ledger`, all at once: every problem of the file is
/// listed in [`ImportError::Refused`]. Nothing is written.
pub fn plan(
    ledger: &Ledger,
    text: &str,
    options: &ImportOptions,
) -> Result<ImportPlan, ImportError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| ImportError::NotJson(e.to_string()))?;
    let Value::Object(top) = &doc else {
        return Err(ImportError::Refused(vec![Problem::doc(
            "document",
            "not a JSON-LD document (a JSON object with @context and @graph)",
        )]));
    };
    if !top.contains_key("@context") {
        return Err(ImportError::Refused(vec![Problem::doc(
            "@context",
            format!("missing: expected the ValueFlows vocabulary ({VF}) as @vocab"),
        )]));
    }
    let (expanded, ctx) = expand::expand(&doc, true).map_err(|p| ImportError::Refused(vec![p]))?;
    Planner::new(ledger, options, ctx.notes).run(expanded)
}

/// [`plan`] then [`ImportPlan::apply`], atomically: into a fork of `ledger`, which replaces it
/// only if every write succeeded. No recorder check (a plain ledger has no members); a
/// replica's import goes through [`import_into`].
pub fn import(
    ledger: &mut Ledger,
    text: &str,
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let plan = plan(ledger, text, options)?;
    let mut work = ledger.fork(ledger.actor().clone());
    let report = plan.apply(&mut work, &mut |_| {})?;
    *ledger = work;
    Ok(report)
}

/// [`plan`], then [`ImportPlan::check_recorder`] for `replica`'s device: the plan to write
/// with the replica's write path (a node's `write`).
pub fn plan_for(
    replica: &Replica,
    text: &str,
    options: &ImportOptions,
) -> Result<ImportPlan, ImportError> {
    let p = plan(replica.ledger(), text, options)?;
    p.check_recorder(replica)?;
    Ok(p)
}

/// [`plan_for`] a bare replica (no node), written with [`Replica::write`].
pub fn import_into(
    replica: &mut Replica,
    text: &str,
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let p = plan_for(replica, text, options)?;
    let (report, _signed) = replica.write(|l| p.apply(l, &mut |_| {}))?;
    Ok(report)
}

impl ImportPlan {
    /// What [`ImportPlan::apply`] will write.
    pub fn report(&self) -> &ImportReport {
        &self.report
    }

    /// How many steps (objects and events) [`ImportPlan::apply`] takes (for a progress bar).
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The events the import records.
    pub fn events(&self) -> impl Iterator<Item = &EconomicEvent> {
        self.steps.iter().filter_map(|s| match s {
            Step::Event { event, .. } => Some(event.as_ref()),
            Step::Object(_) => None,
        })
    }

    /// Whether `replica`'s device may write all of it, as admission will judge it: every event
    /// by [`Replica::may_record`] (a member records only events its own agent takes part in;
    /// an admin, or a member the network's rule set grants it to, records for anyone), and
    /// every agent it creates (only an admin describes other agents). The first refusal,
    /// with the node it concerns.
    pub fn check_recorder(&self, replica: &Replica) -> Result<(), ImportError> {
        for s in &self.steps {
            if let Step::Event { iri, event, .. } = s {
                replica
                    .may_record(event)
                    .map_err(|source| ImportError::NotAllowed {
                        node: iri.clone(),
                        source: Box::new(source),
                    })?;
            }
        }
        // Describing another agent is an admin's (admission: `NotYourAgent`), grant or not.
        if replica.role() != Some(crate::Role::Admin) {
            let own = replica.agent();
            for a in &self.agents {
                if own.as_ref() != Some(a) {
                    return Err(ImportError::NotAllowed {
                        node: a.to_string(),
                        source: Box::new(crate::Error::NotAllowed {
                            device: replica.device().to_string(),
                            role: "member".into(),
                            action: "describing another agent",
                            needed: "admin",
                        }),
                    });
                }
            }
        }
        Ok(())
    }

    /// Write the plan into `l` (objects, then events in the file's order, each after what it
    /// refers to). `progress` is called after each step with the number done.
    pub fn apply(
        &self,
        l: &mut Ledger,
        progress: &mut dyn FnMut(usize),
    ) -> crate::Result<ImportReport> {
        // Events are referred to (corrects, triggeredBy) by the IRI they were imported from.
        let mut events: HashMap<String, Id> = HashMap::new();
        for (iri, e) in ledger_events(l).0 {
            events.insert(reflow_id(&iri), e.id);
        }
        for (i, s) in self.steps.iter().enumerate() {
            match s {
                Step::Object(o) => {
                    let mut o = (**o).clone();
                    if let Obj::Claim(c) = &mut o {
                        if let Some(t) = &c.triggered_by {
                            if let Some(id) = events.get(t.as_str()) {
                                c.triggered_by = Some(id.clone());
                            }
                        }
                    }
                    if o.existing(l).is_none() {
                        o.create(l)?;
                    }
                }
                Step::Event {
                    iri,
                    event,
                    creates,
                } => {
                    let mut e = (**event).clone();
                    if let Some(c) = &e.corrects {
                        if let Some(id) = events.get(c.as_str()) {
                            e.corrects = Some(id.clone());
                        }
                    }
                    let id = match creates {
                        Some(d) => l.record_event(e.creating((**d).clone()))?,
                        None => l.record_event(e)?,
                    };
                    events.insert(reflow_id(iri), id);
                }
            }
            progress(i + 1);
        }
        Ok(self.report.clone())
    }
}

/// The events of the ledger by the IRI they were imported from, and by id.
fn ledger_events(l: &Ledger) -> (HashMap<String, EconomicEvent>, HashMap<Id, EconomicEvent>) {
    let all = l.events(&EventFilter {
        include_corrected: true,
        ..EventFilter::default()
    });
    let mut by_iri = HashMap::new();
    let mut by_id = HashMap::new();
    for e in all {
        if let Some(i) = &e.imported_from {
            by_iri.insert(i.clone(), e.clone());
        }
        by_id.insert(e.id.clone(), e);
    }
    (by_iri, by_id)
}

/// An event as compared for "already imported": without what the ledger sets.
fn comparable(e: &EconomicEvent) -> EconomicEvent {
    let mut e = e.clone();
    if let Some(c) = e.created_resource.take() {
        match e.action.effects().create_resource {
            CreateResource::OptionalTo => e.to_resource_inventoried_as = Some(c),
            _ => e.resource_inventoried_as = Some(c),
        }
    }
    e.id = Id::default();
    e.created_resource = None;
    e.import_source = None;
    e.imported_from = None;
    e.corrects = None;
    e
}

struct Planner<'a> {
    l: &'a Ledger,
    options: &'a ImportOptions,
    problems: Vec<Problem>,
    report: ImportReport,
    /// The units the file defines, by Reflow id.
    unit_ids: HashSet<String>,
    /// The position in the file of the node being built.
    at: usize,
    /// Resources described with a quantity, by position (a snapshot before an event says the
    /// resource existed before it).
    described_at: HashMap<String, usize>,
    /// Events by position.
    event_at: HashMap<String, usize>,
}

/// A node converted to a model object's JSON.
struct Converted {
    fields: Map<String, Value>,
    other: OtherProperties,
    /// The derived fields of a resource (first values), for its opening balance.
    derived: Map<String, Value>,
}

impl<'a> Planner<'a> {
    fn new(l: &'a Ledger, options: &'a ImportOptions, notes: Vec<String>) -> Self {
        Planner {
            l,
            options,
            problems: Vec::new(),
            report: ImportReport {
                notes,
                ..ImportReport::default()
            },
            unit_ids: HashSet::new(),
            at: 0,
            described_at: HashMap::new(),
            event_at: HashMap::new(),
        }
    }

    fn run(mut self, mut ex: expand::Expanded) -> Result<ImportPlan, ImportError> {
        // Classes, and inverse properties turned around.
        // Each class of a node at the position of the node object that gave it (a node with
        // one @id for several node objects is merged, as JSON-LD does, but its event stands
        // where the file writes the event), in document order.
        let mut typed: Vec<(Class, usize)> = Vec::new();
        let mut position: HashMap<(Class, usize), usize> = HashMap::new();
        for (i, n) in ex.nodes.iter().enumerate() {
            let classes = Class::all(&n.types);
            if !classes.is_empty() {
                for c in classes {
                    let at = n
                        .type_at
                        .iter()
                        .filter(|(t, _)| {
                            Class::of(std::slice::from_ref(*t)).map(Class::kind) == Some(c.kind())
                        })
                        .map(|(_, at)| *at)
                        .min()
                        .unwrap_or(usize::MAX);
                    position.insert((c, i), at);
                    typed.push((c, i));
                }
                continue;
            }
            match n.types.is_empty() {
                true => self.problems.push(Problem::field(
                    &n.id,
                    "@type",
                    "missing: every node needs a ValueFlows class",
                )),
                false => self.report.skipped.push(format!(
                    "{} {}",
                    n.types
                        .iter()
                        .map(|t| local_name(t))
                        .collect::<Vec<_>>()
                        .join("/"),
                    n.id
                )),
            }
        }
        typed.sort_by_key(|k| position.get(k).copied().unwrap_or(usize::MAX));
        for (c, i) in &typed {
            if *c == Class::Unit {
                self.unit_ids.insert(reflow_id(&ex.nodes[*i].id));
            }
        }
        for (c, i) in typed.clone() {
            for (class, prop, inverse) in INVERSES {
                if class != c {
                    continue;
                }
                let key = format!("{VF}{prop}");
                let Some(vals) = ex.nodes[i].props.get(&key).cloned() else {
                    continue;
                };
                let subject = ex.nodes[i].id.clone();
                let mut kept = Vec::new();
                for v in vals {
                    let target = match &v {
                        Val::Iri(t) => ex.nodes.iter().position(|n| &n.id == t),
                        _ => None,
                    };
                    match target {
                        Some(t) => {
                            let slot = ex.nodes[t]
                                .props
                                .entry(format!("{VF}{inverse}"))
                                .or_default();
                            if slot.is_empty() {
                                slot.push(Val::Iri(subject.clone()));
                            } else if slot[0] != Val::Iri(subject.clone()) {
                                // The target says otherwise: its own value wins, this one is
                                // kept as written.
                                kept.push(v);
                            }
                        }
                        None => kept.push(v),
                    }
                }
                if kept.is_empty() {
                    ex.nodes[i].props.remove(&key);
                } else {
                    ex.nodes[i].props.insert(key, kept);
                }
            }
        }
        let mut objects: Vec<(Class, Obj)> = Vec::new();
        let mut events: Vec<(String, EconomicEvent, Option<String>)> = Vec::new();
        let mut resources: BTreeMap<String, (ResourceDescription, Map<String, Value>)> =
            BTreeMap::new();
        let mut resource_order: Vec<String> = Vec::new();
        let mut event_props: HashMap<String, Props> = HashMap::new();
        for (c, i) in &typed {
            let n = &ex.nodes[*i];
            let id = reflow_id(&n.id);
            if !crate::schema::valid_id(&id) {
                self.problems.push(Problem::field(
                    &n.id,
                    "@id",
                    "not a valid Reflow id (1 to 512 bytes, no control characters)",
                ));
                continue;
            }
            self.at = position.get(&(*c, *i)).copied().unwrap_or(*i);
            let Some(conv) = self.convert(n, *c) else {
                continue;
            };
            self.build(
                n,
                *c,
                id,
                conv,
                &mut objects,
                &mut events,
                &mut event_props,
                &mut resources,
                &mut resource_order,
            );
        }
        if !self.problems.is_empty() {
            return Err(ImportError::Refused(self.problems));
        }
        self.schedule(objects, events, event_props, resources, resource_order)
    }

    /// A node's properties as the model's JSON fields, its unmodelled properties kept.
    fn convert(&mut self, n: &Node, class: Class) -> Option<Converted> {
        let mut out = Converted {
            fields: Map::new(),
            other: OtherProperties::new(),
            derived: Map::new(),
        };
        let before = self.problems.len();
        for (iri, vals) in &n.props {
            let spelled = n.spelled.get(iri).cloned().unwrap_or_else(|| iri.clone());
            let Some((field, shape)) = field_of(iri) else {
                out.other.insert(iri.clone(), self.kept(vals));
                continue;
            };
            let derived = class == Class::EconomicResource && DERIVED.contains(&field);
            let single = !matches!(shape, Shape::Refs | Shape::Texts);
            let vals: &[Val] = if single && vals.len() > 1 {
                if !derived {
                    self.value(&n.id, &spelled, shape, vals);
                    out.other.insert(iri.clone(), self.kept(&vals[1..]));
                }
                &vals[..1]
            } else {
                vals
            };
            if let Some(mut v) = self.value(&n.id, &spelled, shape, vals) {
                if matches!(
                    field,
                    "defaultUnitOfResource" | "defaultUnitOfEffort" | "unitOfEffort"
                ) {
                    if let Some(u) = v.as_str() {
                        v = json!(reflow_id(&self.unit_iri(u)));
                    }
                }
                if derived {
                    out.derived.insert(field.into(), v);
                } else {
                    out.fields.insert(field.into(), v);
                }
            }
        }
        (self.problems.len() == before).then_some(out)
    }

    /// Values kept as unmodelled, in expanded form; a measure's unit named as the spec's
    /// examples do (`kilogram`) is its OM IRI, as in a modelled measure.
    fn kept(&self, vals: &[Val]) -> Value {
        fn fix(p: &Planner<'_>, v: &Val) -> Val {
            match v {
                Val::Embedded(props) => Val::Embedded(
                    props
                        .iter()
                        .map(|(k, vs)| {
                            let unit = local_name(k) == "hasUnit";
                            let vs = vs
                                .iter()
                                .map(|x| match x {
                                    Val::Iri(i) if unit => Val::Iri(p.unit_iri(i)),
                                    other => fix(p, other),
                                })
                                .collect();
                            (k.clone(), vs)
                        })
                        .collect(),
                ),
                other => other.clone(),
            }
        }
        Value::Array(vals.iter().map(|v| expanded_json(&fix(self, v))).collect())
    }

    /// One field's JSON from its values.
    fn value(&mut self, node: &str, field: &str, shape: Shape, vals: &[Val]) -> Option<Value> {
        let single = matches!(
            shape,
            Shape::Ref | Shape::Text | Shape::Measure | Shape::Bool | Shape::Number | Shape::Action
        );
        if single && vals.len() > 1 {
            self.report.notes.push(format!(
                "node {node}, field {field}: {} values (one node @id used for several nodes?): the first is used, the others kept as unmodelled values",
                vals.len()
            ));
        }
        let text = |v: &Val| match v {
            Val::Iri(i) => Some(i.clone()),
            Val::Literal {
                value: Value::String(s),
                ..
            } => Some(s.clone()),
            Val::Literal { value, .. } => Some(value.to_string()),
            Val::Embedded(_) => None,
        };
        let r = match shape {
            Shape::Ref => match vals.first() {
                Some(Val::Iri(i)) => Ok(json!(reflow_id(i))),
                Some(Val::Literal {
                    value: Value::String(s),
                    ..
                }) => Ok(json!(reflow_id(s))),
                _ => Err("not a reference".to_string()),
            },
            Shape::Refs => vals
                .iter()
                .map(|v| match v {
                    Val::Iri(i) => Ok(json!(reflow_id(i))),
                    Val::Literal {
                        value: Value::String(s),
                        ..
                    } => Ok(json!(reflow_id(s))),
                    _ => Err("not a reference".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Shape::Text => vals
                .first()
                .and_then(text)
                .map(Value::String)
                .ok_or_else(|| "not text".to_string()),
            Shape::Texts => vals
                .iter()
                .map(|v| {
                    text(v)
                        .map(Value::String)
                        .ok_or_else(|| "not text".to_string())
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Shape::Bool => match vals.first() {
                Some(Val::Literal {
                    value: Value::Bool(b),
                    ..
                }) => Ok(json!(b)),
                Some(Val::Literal {
                    value: Value::String(s),
                    ..
                }) if s == "true" || s == "false" => Ok(json!(s == "true")),
                _ => Err("not a boolean".to_string()),
            },
            Shape::Number => match vals.first() {
                Some(Val::Literal {
                    value: Value::Number(x),
                    ..
                }) => Ok(Value::Number(x.clone())),
                Some(Val::Literal {
                    value: Value::String(s),
                    ..
                }) => s
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| "not a number".to_string()),
                _ => Err("not a number".to_string()),
            },
            Shape::Action => {
                let name = match vals.first() {
                    Some(Val::Iri(i)) => i.strip_prefix(VF).unwrap_or(local_name(i)).to_string(),
                    Some(v) => text(v).unwrap_or_default(),
                    None => String::new(),
                };
                name.parse::<Action>()
                    .map(|a| json!(a))
                    .map_err(|e| e.to_string())
            }
            Shape::Measure => match vals.first() {
                Some(Val::Embedded(p)) => self.measure(p),
                _ => {
                    Err("not a measure (an object with hasNumericalValue and hasUnit)".to_string())
                }
            },
        };
        match r {
            Ok(v) => Some(v),
            Err(m) => {
                self.problems.push(Problem::field(node, field, m));
                None
            }
        }
    }

    fn measure(&mut self, p: &Props) -> Result<Value, String> {
        let get = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| {
                    p.get(&format!("{VF}{n}"))
                        .or_else(|| p.get(&format!("{OM2}{n}")))
                })
                .and_then(|v| v.first())
        };
        for k in p.keys() {
            let local = local_name(k);
            if !matches!(local, "hasNumericalValue" | "hasUnit") {
                return Err(format!("{k} in a measure"));
            }
        }
        let value = match get(["hasNumericalValue", "hasNumericalValue"]) {
            Some(Val::Literal {
                value: Value::Number(x),
                ..
            }) => x.to_string(),
            Some(Val::Literal {
                value: Value::String(s),
                ..
            }) => s.clone(),
            _ => return Err("hasNumericalValue missing or not a number".into()),
        };
        let q: crate::Quantity = serde_json::from_value(json!(value))
            .map_err(|e| format!("hasNumericalValue {value}: {e}"))?;
        let unit = match get(["hasUnit", "hasUnit"]) {
            Some(Val::Iri(i)) => i.clone(),
            Some(Val::Literal {
                value: Value::String(s),
                ..
            }) => s.clone(),
            _ => return Err("hasUnit missing".into()),
        };
        let unit = self.unit_iri(&unit);
        Ok(serde_json::to_value(Measure::new(q, reflow_id(&unit).as_str())).unwrap_or(Value::Null))
    }

    /// A unit as the file names it: a bare OM name (`kilogram`) is the OM unit's IRI, unless
    /// the file or the ledger has a unit of that id.
    fn unit_iri(&self, u: &str) -> String {
        let id = reflow_id(u);
        if self.unit_ids.contains(&id) || self.l.exists(ObjectKind::Unit, &Id::from(id.as_str())) {
            return u.to_string();
        }
        let bare = u.strip_prefix(VF).unwrap_or(u);
        if !bare.contains(':') {
            if let Some(iri) = units::om_iri(bare) {
                return iri;
            }
        }
        u.to_string()
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &mut self,
        n: &Node,
        class: Class,
        id: String,
        mut conv: Converted,
        objects: &mut Vec<(Class, Obj)>,
        events: &mut Vec<(String, EconomicEvent, Option<String>)>,
        event_props: &mut HashMap<String, Props>,
        resources: &mut BTreeMap<String, (ResourceDescription, Map<String, Value>)>,
        resource_order: &mut Vec<String>,
    ) {
        // Required names the spec's examples leave out (an agreement with a note only).
        let named = matches!(
            class,
            Class::Person
                | Class::Organization
                | Class::SpatialThing
                | Class::ResourceSpecification
                | Class::ProcessSpecification
                | Class::RecipeExchange
                | Class::RecipeProcess
                | Class::Recipe
                | Class::Plan
                | Class::Process
                | Class::Agreement
                | Class::AgreementBundle
                | Class::Proposal
                | Class::ProposalList
        );
        if named && !conv.fields.contains_key("name") {
            conv.fields.insert("name".into(), json!(""));
        }
        match class {
            Class::Person | Class::Organization => {
                let kind = if class == Class::Organization {
                    "organization"
                } else {
                    "person"
                };
                conv.fields
                    .entry("agentKind")
                    .or_insert_with(|| json!(kind));
            }
            Class::Unit => {
                if let Some(std) = units::om_unit(&n.id) {
                    conv.fields
                        .entry("label")
                        .or_insert_with(|| json!(std.label));
                    conv.fields
                        .entry("symbol")
                        .or_insert_with(|| json!(std.symbol));
                }
                if !conv.fields.contains_key("symbol") {
                    if let Some(l) = conv.fields.get("label").cloned() {
                        conv.fields.insert("symbol".into(), l);
                    }
                }
            }
            _ => {}
        }
        macro_rules! obj {
            ($ty:ident) => {{
                match self.parse::<$ty>(n, &id, &mut conv) {
                    Some(x) => objects.push((class, Obj::$ty(x))),
                    None => {}
                }
            }};
        }
        match class {
            Class::Person | Class::Organization => obj!(Agent),
            Class::Unit => obj!(Unit),
            Class::SpatialThing => obj!(SpatialThing),
            Class::AgentRelationshipRole => obj!(AgentRelationshipRole),
            Class::AgentRelationship => {
                // A relationship's id in a ledger is its [subject, relationship, object]
                // (admission judges who may write it from the id alone, docs/security.md):
                // the file's own IRI is kept as `owl:sameAs` and exported again.
                if let Some(mut r) = self.parse::<AgentRelationship>(n, &id, &mut conv) {
                    let derived = AgentRelationship::id_for(&r.subject, &r.relationship, &r.object);
                    if r.id != derived {
                        r.other_properties
                            .insert(OWL_SAME_AS.to_string(), json!([{ "@id": n.id }]));
                        r.id = derived;
                    }
                    objects.push((class, Obj::AgentRelationship(r)));
                }
            }
            Class::ResourceSpecification => obj!(ResourceSpecification),
            Class::ProcessSpecification => obj!(ProcessSpecification),
            Class::RecipeExchange => obj!(RecipeExchange),
            Class::RecipeProcess => obj!(RecipeProcess),
            Class::Recipe => obj!(Recipe),
            Class::RecipeFlow => obj!(RecipeFlow),
            Class::Plan => obj!(Plan),
            Class::Process => obj!(Process),
            Class::Agreement => obj!(Agreement),
            Class::AgreementBundle => obj!(AgreementBundle),
            Class::ProposalList => obj!(ProposalList),
            Class::Intent => obj!(Intent),
            Class::Proposal => obj!(Proposal),
            Class::Commitment => obj!(Commitment),
            Class::Claim => obj!(Claim),
            Class::EconomicResource => {
                // Some spec examples write a resource's `conformsTo` as `resourceConformsTo`.
                if let Some(v) = conv.fields.remove("resourceConformsTo") {
                    conv.fields.entry("conformsTo").or_insert(v);
                }
                if let Some(d) = self.parse::<ResourceDescription>(n, &id, &mut conv) {
                    let has_quantity = conv.derived.contains_key("accountingQuantity")
                        || conv.derived.contains_key("onhandQuantity");
                    if has_quantity {
                        self.described_at.insert(id.clone(), self.at);
                    }
                    resource_order.push(id.clone());
                    resources.insert(id, (d, conv.derived));
                }
            }
            Class::EconomicEvent => {
                let created = conv
                    .fields
                    .remove("createdResource")
                    .and_then(|v| v.as_str().map(str::to_string));
                if let Some(mut e) = self.parse::<EconomicEvent>(n, &id, &mut conv) {
                    e.imported_from = Some(n.id.clone());
                    e.import_source = Some(self.options.source.clone());
                    e.created_resource = None;
                    e.id = Id::default();
                    event_props.insert(n.id.clone(), n.props.clone());
                    self.event_at.insert(n.id.clone(), self.at);
                    events.push((n.id.clone(), e, created));
                }
            }
        }
    }

    /// Deserialize `T` from the converted fields; fields `T` does not have are kept as
    /// unmodelled properties.
    fn parse<T: Serialize + serde::de::DeserializeOwned + Clone + HasOther>(
        &mut self,
        n: &Node,
        id: &str,
        conv: &mut Converted,
    ) -> Option<T> {
        let mut x: T = match serde_json::from_value(Value::Object(conv.fields.clone())) {
            Ok(x) => x,
            Err(e) => {
                let msg = e.to_string();
                let field = msg
                    .split('`')
                    .nth(1)
                    .map(str::to_string)
                    .unwrap_or_else(|| "@type".to_string());
                self.problems.push(Problem::field(&n.id, field, msg));
                return None;
            }
        };
        let back = serde_json::to_value(&x).unwrap_or(Value::Null);
        for (k, _) in conv.fields.iter() {
            if back.get(k).is_none() {
                let iri = format!("{VF}{k}");
                let iri = if n.props.contains_key(&iri) {
                    iri
                } else {
                    n.props
                        .keys()
                        .find(|p| field_of(p).map(|f| f.0) == Some(k.as_str()))
                        .cloned()
                        .unwrap_or(iri)
                };
                if let Some(vals) = n.props.get(&iri) {
                    conv.other.insert(iri, self.kept(vals));
                }
            }
        }
        for k in conv.other.keys() {
            *self.report.kept_properties.entry(k.clone()).or_default() += 1;
        }
        x.set_other(std::mem::take(&mut conv.other));
        x.set_reflow_id(id);
        Some(x)
    }

    fn schedule(
        mut self,
        objects: Vec<(Class, Obj)>,
        events: Vec<(String, EconomicEvent, Option<String>)>,
        event_props: HashMap<String, Props>,
        mut resources: BTreeMap<String, (ResourceDescription, Map<String, Value>)>,
        mut resource_order: Vec<String>,
    ) -> Result<ImportPlan, ImportError> {
        let l = self.l;
        let mut steps: Vec<Step> = Vec::new();
        let mut agents: Vec<Id> = Vec::new();
        // What the file defines, by kind.
        let mut defined: HashSet<(ObjectKind, String)> = HashSet::new();
        for (_, o) in &objects {
            defined.insert((o.kind(), o.id().to_string()));
        }
        for r in resources.keys() {
            defined.insert((ObjectKind::EconomicResource, r.clone()));
        }
        let file_events: HashSet<String> = events.iter().map(|(i, _, _)| reflow_id(i)).collect();
        let (by_iri, by_id) = ledger_events(l);

        // A planned flow (commitment, intent) may name the resource a future event will
        // create or use: VF allows it, but a Reflow object refers only to what exists. If
        // neither the ledger, the file's resources nor any event of the file has it, the link
        // is kept as written (an unmodelled property, exported again), not refused or
        // invented.
        let event_resources: HashSet<String> = events
            .iter()
            .flat_map(|(_, e, created)| {
                [&e.resource_inventoried_as, &e.to_resource_inventoried_as]
                    .into_iter()
                    .flatten()
                    .map(|i| i.to_string())
                    .chain(created.clone())
            })
            .collect();
        let future = |r: &Id| {
            !resources.contains_key(r.as_str())
                && !event_resources.contains(r.as_str())
                && !l.exists(ObjectKind::EconomicResource, r)
        };
        let mut objects = objects;
        for (_, o) in objects.iter_mut() {
            let (slot, other) = match o {
                Obj::Commitment(c) => (&mut c.resource_inventoried_as, &mut c.other_properties),
                Obj::Intent(i) => (&mut i.resource_inventoried_as, &mut i.other_properties),
                _ => continue,
            };
            let Some(r) = slot.take_if(|r| future(r)) else {
                continue;
            };
            let key = format!("{VF}resourceInventoriedAs");
            other.insert(key.clone(), json!([{ "@id": full_iri(r.as_str()) }]));
            *self.report.kept_properties.entry(key).or_default() += 1;
            self.report.notes.push(format!(
                "node {}: resourceInventoriedAs names {r}, which neither the file nor the ledger has (a resource a future event will make): kept as written, not linked",
                o.id()
            ));
        }

        // Objects already present identically are skipped; present otherwise: refused.
        let mut to_create: Vec<(Class, Obj)> = Vec::new();
        for (c, mut o) in objects {
            if let Obj::Claim(claim) = &mut o {
                if let Some(t) = &claim.triggered_by {
                    let found = by_iri
                        .get(t.as_str())
                        .or_else(|| by_iri.get(&format!("{BASE}{t}")));
                    if let Some(e) = found {
                        claim.triggered_by = Some(e.id.clone());
                    }
                }
            }
            match o.existing(l) {
                Some(true) => self.report.unchanged += 1,
                Some(false) => self.problems.push(Problem::node(
                    o.id().as_str(),
                    format!(
                        "a {} of this id is in the ledger with other content",
                        o.class()
                    ),
                )),
                None => to_create.push((c, o)),
            }
        }

        let mut new_events = events;

        // A transfer or move out of a resource the file names but does not describe, with no
        // to-resource (ex-exchange--01: Carol pays 5 from her bank account; the store's side
        // is not in the file). Reflow's ledger reads a missing to-resource as the resource
        // itself changing hands, whole; an undescribed resource's balance is unknown (it is
        // tracked from zero), so that reading cannot hold. On request, the receiving side is
        // what VF calls a resource not inventoried by the file: a resource the event itself
        // creates (`optionalTo`), of the event's kind, held by the receiver, holding what it
        // received. Listed in the report.
        if self.options.create_missing {
            for (iri, e, created) in new_events.iter_mut() {
                let a = e.action;
                let Some(from) = e.resource_inventoried_as.clone() else {
                    continue;
                };
                let rid = reflow_id(&format!("{iri}#toResource"));
                // A re-import finds the receiving side it made (and the account) in the ledger.
                let made_before = l.exists(ObjectKind::EconomicResource, &Id::from(rid.as_str()));
                if !a.has_to_resource()
                    || a == Action::Copy
                    || e.to_resource_inventoried_as.is_some()
                    || created.is_some()
                    || e.resource_quantity.is_none()
                    || resources.contains_key(from.as_str())
                    || (l.exists(ObjectKind::EconomicResource, &from) && !made_before)
                {
                    continue;
                }
                let mut d = ResourceDescription::new(rid.as_str(), "");
                d.conforms_to = e.resource_conforms_to.clone();
                let mut derived = Map::new();
                if let Some(r) = &e.receiver {
                    derived.insert("primaryAccountable".into(), json!(r));
                }
                if !made_before {
                    self.report.created_missing.push(format!(
                        "EconomicResource {rid} (what event {iri} gives its receiver: the file does not track the receiving side)"
                    ));
                }
                self.report.notes.push(format!(
                    "event {iri}: `{a}` out of {from}, which the file does not describe, names no to-resource: the receiving side is {rid}, created by the event"
                ));
                e.to_resource_inventoried_as = Some(Id::from(rid.as_str()));
                resources.insert(rid.clone(), (d, derived));
                resource_order.push(rid);
            }
        }

        // Which event creates which resource: the one naming it in createdResource, else the
        // first that may create it. The rest get an opening balance.
        let mut creator: HashMap<String, String> = HashMap::new();
        for (iri, e, created) in new_events.iter() {
            let side = match e.action.effects().create_resource {
                CreateResource::Optional => e.resource_inventoried_as.as_ref(),
                CreateResource::OptionalTo => e.to_resource_inventoried_as.as_ref(),
                CreateResource::NotApplicable => None,
            };
            let target = created.clone().or_else(|| side.map(|s| s.to_string()));
            if let Some(t) = target {
                // An explicit createdResource wins; otherwise a snapshot with a quantity
                // before the event says the resource existed before it.
                let before = created.is_none()
                    && match (self.described_at.get(&t), self.event_at.get(iri)) {
                        (Some(r), Some(e)) => r < e,
                        _ => false,
                    };
                if resources.contains_key(&t)
                    && !before
                    && !l.exists(ObjectKind::EconomicResource, &Id::from(t.as_str()))
                {
                    creator.entry(t).or_insert(iri.clone());
                }
            }
        }
        // The ValueFlows action table, as the ledger applies it: a field the action does not
        // allow is kept as an unmodelled property; a VF backout (a negative quantity that
        // corrects an event) is Reflow's correction with quantity 0; a transfer of a kind of
        // thing (no resource named) moves a resource made for it (on request).
        let creators: HashSet<String> = creator.values().cloned().collect();
        for (iri, e, _) in new_events.iter_mut() {
            if e.corrects.is_some() {
                for m in [&mut e.resource_quantity, &mut e.effort_quantity]
                    .into_iter()
                    .flatten()
                {
                    if m.has_numerical_value.is_negative() {
                        m.has_numerical_value = crate::Quantity::ZERO;
                        self.report.notes.push(format!(
                            "event {iri}: a negative quantity that corrects an event (a VF backout) is recorded as a correction of quantity 0: the corrected event no longer counts"
                        ));
                    }
                }
            }
            for _ in 0..8 {
                // A creating event does not name the resource it creates: the ledger does.
                let creates = creators.contains(iri.as_str());
                let mut probe = e.clone();
                if creates {
                    let made = creator
                        .iter()
                        .find(|(_, at)| *at == iri)
                        .map(|(r, _)| r.as_str());
                    if probe.to_resource_inventoried_as.as_deref_str() == made {
                        probe.to_resource_inventoried_as = None;
                    } else if probe.resource_inventoried_as.as_deref_str() == made {
                        probe.resource_inventoried_as = None;
                    }
                }
                match crate::validate::check_structure(&probe, creates) {
                    Ok(()) => break,
                    Err(crate::Error::FieldNotAllowed { field, action, .. }) => {
                        let mut v = serde_json::to_value(&*e).unwrap_or(Value::Null);
                        if let Some(m) = v.as_object_mut() {
                            m.remove(field);
                        }
                        let Ok(mut back) = serde_json::from_value::<EconomicEvent>(v) else {
                            break;
                        };
                        back.id = Id::default();
                        // Its IRI as the file wrote it (under VF, or Reflow's own namespace).
                        let key = event_props
                            .get(iri.as_str())
                            .and_then(|p| {
                                p.keys()
                                    .find(|k| field_of(k).map(|f| f.0) == Some(field))
                                    .cloned()
                            })
                            .unwrap_or_else(|| format!("{VF}{field}"));
                        if let Some(vals) = event_props.get(iri.as_str()).and_then(|p| p.get(&key))
                        {
                            back.other_properties.insert(key.clone(), self.kept(vals));
                            *self.report.kept_properties.entry(key).or_default() += 1;
                        }
                        self.report.notes.push(format!(
                            "event {iri}: `{action}` does not take {field} (the VF action table): kept as an unmodelled property"
                        ));
                        *e = back;
                    }
                    Err(crate::Error::MissingField {
                        field: "resourceInventoriedAs",
                        ..
                    }) if self.options.create_missing && e.resource_quantity.is_some() => {
                        let r = format!("{iri}#resource");
                        let rid = reflow_id(&r);
                        let mut d = ResourceDescription::new(rid.as_str(), "");
                        d.conforms_to = e.resource_conforms_to.clone();
                        let mut derived = Map::new();
                        if let Some(p) = &e.provider {
                            derived.insert("primaryAccountable".into(), json!(p));
                        }
                        if let Some(q) = &e.resource_quantity {
                            derived.insert(
                                "accountingQuantity".into(),
                                serde_json::to_value(q).unwrap_or(Value::Null),
                            );
                        }
                        if !l.exists(ObjectKind::EconomicResource, &Id::from(rid.as_str())) {
                            self.report.created_missing.push(format!(
                                "EconomicResource {rid} (what event {iri} moves: the file names only its kind)"
                            ));
                        }
                        e.resource_inventoried_as = Some(Id::from(rid.as_str()));
                        resources.insert(rid.clone(), (d, derived));
                        resource_order.push(rid);
                    }
                    Err(other) => {
                        self.problems
                            .push(Problem::node(iri.as_str(), other.to_string()));
                        break;
                    }
                }
            }
        }
        // Events already imported (by their IRI) or present (a Reflow export's own ids).
        let mut fresh = Vec::new();
        for (iri, e, created) in new_events {
            let existing = by_iri
                .get(&iri)
                .or_else(|| by_id.get(&Id::from(reflow_id(&iri))));
            match existing {
                Some(x) if comparable(x) == comparable(&e) => self.report.unchanged += 1,
                Some(_) => self.problems.push(Problem::node(
                    &iri,
                    "an event imported from this IRI is in the ledger with other content",
                )),
                None => fresh.push((iri, e, created)),
            }
        }
        let new_events = fresh;
        // Who holds each resource no event creates (for its opening balance).
        let holder = |r: &str,
                      derived: &Map<String, Value>,
                      evs: &[(String, EconomicEvent, Option<String>)]| {
            let rid = Id::from(r);
            derived
                .get("primaryAccountable")
                .and_then(Value::as_str)
                .map(Id::from)
                .or_else(|| {
                    evs.iter().find_map(|(_, e, _)| {
                        if e.resource_inventoried_as.as_ref() == Some(&rid) {
                            e.provider.clone()
                        } else if e.to_resource_inventoried_as.as_ref() == Some(&rid) {
                            e.receiver.clone()
                        } else {
                            None
                        }
                    })
                })
        };
        let mut opening_agents: Vec<(Id, String)> = Vec::new();
        for (r, (_, derived)) in &resources {
            if creator.contains_key(r)
                || l.exists(ObjectKind::EconomicResource, &Id::from(r.as_str()))
            {
                continue;
            }
            if let Some(a) = holder(r, derived, &new_events) {
                opening_agents.push((a, r.clone()));
            }
        }

        // Missing references: created on request (agents, units, specifications, places,
        // resources), standard OM units always; everything else refused.
        let mut missing: BTreeMap<(ObjectKind, String), Vec<(String, String)>> = BTreeMap::new();
        let mut need = |kind: ObjectKind, id: &Id, node: &str, field: &str| {
            let key = (kind, id.to_string());
            let known = defined.contains(&key)
                || l.exists(kind, id)
                || (kind == ObjectKind::EconomicEvent && file_events.contains(id.as_str()))
                || (kind == ObjectKind::Agreement
                    && defined.contains(&(ObjectKind::Commitment, id.to_string())));
            if !known {
                missing
                    .entry(key)
                    .or_default()
                    .push((node.to_string(), field.to_string()));
            }
        };
        for (_, o) in &to_create {
            for (k, i) in o.refs() {
                if k == ObjectKind::EconomicEvent
                    && (file_events.contains(i.as_str()) || by_iri.contains_key(i.as_str()))
                {
                    continue;
                }
                need(k, &i, o.id().as_str(), ref_field(k));
            }
        }
        for (d, _) in resources.values() {
            for (k, i) in d.references() {
                need(k, i, d.id.as_str(), ref_field(k));
            }
        }
        for (a, r) in &opening_agents {
            need(ObjectKind::Agent, a, r, "primaryAccountable");
        }
        for (iri, e, _) in &new_events {
            for (k, i) in event_refs(e) {
                if k == ObjectKind::EconomicEvent
                    && (file_events.contains(i.as_str())
                        || by_iri.contains_key(&format!("{BASE}{i}"))
                        || by_iri.contains_key(i.as_str()))
                {
                    continue;
                }
                need(k, i, iri, ref_field(k));
            }
        }
        let mut created_missing: Vec<Obj> = Vec::new();
        let mut missing_resources: Vec<String> = Vec::new();
        for ((kind, id), users) in missing {
            if kind == ObjectKind::Unit {
                if let Some(u) = units::om_unit(&id) {
                    self.report.standard_units.push(id.clone());
                    created_missing.push(Obj::Unit(u));
                    continue;
                }
            }
            let creatable = matches!(
                kind,
                ObjectKind::Agent
                    | ObjectKind::Agreement
                    | ObjectKind::Plan
                    | ObjectKind::Unit
                    | ObjectKind::ResourceSpecification
                    | ObjectKind::ProcessSpecification
                    | ObjectKind::SpatialThing
                    | ObjectKind::EconomicResource
                    | ObjectKind::RecipeProcess
            );
            if creatable && self.options.create_missing {
                let name = local_name(&id).to_string();
                let name = if name.is_empty() { id.clone() } else { name };
                self.report
                    .created_missing
                    .push(format!("{} {id}", kind_class(kind)));
                match kind {
                    ObjectKind::Agent => {
                        created_missing.push(Obj::Agent(Agent::person(id.as_str(), name)))
                    }
                    ObjectKind::Unit => {
                        created_missing.push(Obj::Unit(Unit::new(id.as_str(), name.clone(), name)))
                    }
                    ObjectKind::ResourceSpecification => created_missing.push(
                        Obj::ResourceSpecification(ResourceSpecification::new(id.as_str(), name)),
                    ),
                    ObjectKind::ProcessSpecification => created_missing.push(
                        Obj::ProcessSpecification(ProcessSpecification::new(id.as_str(), name)),
                    ),
                    ObjectKind::SpatialThing => created_missing.push(Obj::SpatialThing(
                        SpatialThing::new(id.as_str(), name, None),
                    )),
                    ObjectKind::Agreement => created_missing.push(Obj::Agreement(Agreement {
                        id: Id::from(id.as_str()),
                        name: String::new(),
                        created: None,
                        bundled_in: None,
                        note: None,
                        other_properties: OtherProperties::new(),
                    })),
                    ObjectKind::Plan => created_missing.push(Obj::Plan(Plan::new(id.as_str(), ""))),
                    // A recipe names a recipe process (`recipeIncludes`) it does not describe:
                    // the process is known by its IRI only (no flows, no specification).
                    ObjectKind::RecipeProcess => {
                        created_missing.push(Obj::RecipeProcess(RecipeProcess {
                            id: Id::from(id.as_str()),
                            name,
                            process_conforms_to: None,
                            process_classified_as: Vec::new(),
                            has_duration: None,
                            image: None,
                            note: None,
                            other_properties: OtherProperties::new(),
                        }))
                    }
                    _ => missing_resources.push(id.clone()),
                }
                continue;
            }
            let (node, field) = users.first().cloned().unwrap_or_default();
            let hint = if creatable {
                " (import with --create-missing to create it)"
            } else {
                ""
            };
            let more = if users.len() > 1 {
                format!(" (and {} more)", users.len() - 1)
            } else {
                String::new()
            };
            self.problems.push(Problem::field(
                node,
                field,
                format!(
                    "refers to {} {id}, neither in the file nor in the ledger{hint}{more}",
                    kind_class_full(kind)
                ),
            ));
        }
        if !self.problems.is_empty() {
            return Err(ImportError::Refused(self.problems));
        }

        let mut opening: Vec<(usize, String, EconomicEvent, ResourceDescription)> = Vec::new();
        let mut extra_units: Vec<Obj> = Vec::new();
        let mut unchanged_resources = 0;
        let mut wanted: Vec<String> = resource_order.clone();
        wanted.extend(missing_resources.iter().cloned());
        let mut seen_r = HashSet::new();
        for r in wanted {
            if !seen_r.insert(r.clone()) || creator.contains_key(&r) {
                continue;
            }
            let rid = Id::from(r.as_str());
            let described = resources.contains_key(&r);
            let (desc, derived) = resources
                .get(&r)
                .cloned()
                .unwrap_or_else(|| (ResourceDescription::new(r.as_str(), ""), Map::new()));
            if l.exists(ObjectKind::EconomicResource, &rid) {
                if l.get::<ResourceDescription>(&rid).is_none_or(|d| d == desc) {
                    unchanged_resources += 1;
                } else {
                    self.problems.push(Problem::node(
                        &r,
                        "an EconomicResource of this id is in the ledger with other content",
                    ));
                }
                continue;
            }
            // The first event of the file that uses it says who holds it and in what unit.
            let first = new_events.iter().position(|(_, e, _)| {
                e.resource_inventoried_as.as_ref() == Some(&rid)
                    || e.to_resource_inventoried_as.as_ref() == Some(&rid)
            });
            let Some(agent) = holder(&r, &derived, &new_events) else {
                self.report.skipped.push(format!(
                    "EconomicResource {r} (no event of the file creates or uses it, no primaryAccountable: Reflow records resources through events)"
                ));
                continue;
            };
            let quantity: Option<Measure> = ["accountingQuantity", "onhandQuantity"]
                .iter()
                .find_map(|f| {
                    derived
                        .get(*f)
                        .and_then(|v| serde_json::from_value(v.clone()).ok())
                })
                .or_else(|| {
                    let (_, e, _) = &new_events[first?];
                    e.resource_quantity
                        .as_ref()
                        .map(|m| Measure::new(crate::Quantity::ZERO, m.has_unit.as_str()))
                });
            let quantity = quantity.unwrap_or_else(|| {
                Measure::new(crate::Quantity::ZERO, format!("{OM2}one").as_str())
            });
            if quantity.has_unit.as_str() == format!("{OM2}one")
                && !l.exists(ObjectKind::Unit, &quantity.has_unit)
                && !self
                    .report
                    .standard_units
                    .contains(&quantity.has_unit.to_string())
                && !defined.contains(&(ObjectKind::Unit, quantity.has_unit.to_string()))
            {
                if let Some(u) = units::om_unit(quantity.has_unit.as_str()) {
                    self.report.standard_units.push(u.id.to_string());
                    extra_units.push(Obj::Unit(u));
                }
            }
            let mut raise = EconomicEvent::new(Action::Raise, agent.clone(), agent);
            raise.resource_quantity = Some(quantity.clone());
            raise.note = Some(if described {
                format!(
                    "opening balance of {r}: the imported file describes it but records no event that creates it"
                )
            } else {
                format!(
                    "opening balance of {r}: the imported file names it without describing it; its balance before the file's events is unknown, tracked from zero"
                )
            });
            let hash = Sha256::digest(r.as_bytes());
            raise.imported_from = Some(format!("{BASE}opening:{}", hex::encode(&hash[..16])));
            raise.import_source = Some(self.options.source.clone());
            self.report.opening_balances.push(format!(
                "{r} ({} {})",
                quantity.has_numerical_value, quantity.has_unit
            ));
            opening.push((first.unwrap_or(new_events.len()), r.clone(), raise, desc));
        }
        self.report.unchanged += unchanged_resources;
        if !self.problems.is_empty() {
            return Err(ImportError::Refused(self.problems));
        }
        // Opening balances that exist already (a re-import) are skipped.
        opening.retain(|(_, _, e, _)| {
            let there = e
                .imported_from
                .as_ref()
                .is_some_and(|i| by_iri.contains_key(i));
            if there {
                self.report.unchanged += 1;
            }
            !there
        });

        // Objects first (each after what it refers to), then events in the file's order with
        // their opening balances just before; claims after the events they were triggered by.
        let mut pending: Vec<Obj> = created_missing;
        pending.extend(extra_units);
        pending.extend(to_create.into_iter().map(|(_, o)| o));
        for o in &pending {
            if let Obj::Agent(a) = o {
                agents.push(a.id.clone());
            }
            *self
                .report
                .created
                .entry(o.class().to_string())
                .or_default() += 1;
        }
        let mut ready: HashSet<(ObjectKind, String)> = HashSet::new();
        let mut made_events: HashSet<String> = HashSet::new();
        let exists = |ready: &HashSet<(ObjectKind, String)>,
                      made: &HashSet<String>,
                      k: ObjectKind,
                      i: &Id| {
            ready.contains(&(k, i.to_string()))
                || l.exists(k, i)
                || (k == ObjectKind::EconomicEvent && made.contains(i.as_str()))
                || (k == ObjectKind::Agreement
                    && ready.contains(&(ObjectKind::Commitment, i.to_string())))
        };
        let flush = |pending: &mut Vec<Obj>,
                     steps: &mut Vec<Step>,
                     ready: &mut HashSet<(ObjectKind, String)>,
                     made: &HashSet<String>| loop {
            let before = pending.len();
            let mut rest = Vec::new();
            for o in pending.drain(..) {
                if o.refs().iter().all(|(k, i)| exists(ready, made, *k, i)) {
                    ready.insert((o.kind(), o.id().to_string()));
                    steps.push(Step::Object(Box::new(o)));
                } else {
                    rest.push(o);
                }
            }
            *pending = rest;
            if pending.len() == before || pending.is_empty() {
                break;
            }
        };
        flush(&mut pending, &mut steps, &mut ready, &made_events);
        let mut opening_at: BTreeMap<usize, Vec<(String, EconomicEvent, ResourceDescription)>> =
            BTreeMap::new();
        for (at, r, e, d) in opening {
            opening_at.entry(at).or_default().push((r, e, d));
        }
        for (i, (iri, e, _)) in new_events.into_iter().enumerate() {
            for (r, raise, d) in opening_at.remove(&i).unwrap_or_default() {
                let from = raise.imported_from.clone().unwrap_or_default();
                steps.push(Step::Event {
                    iri: from,
                    event: Box::new(raise),
                    creates: Some(Box::new(d)),
                });
                ready.insert((ObjectKind::EconomicResource, r));
                self.report.events += 1;
            }
            let creates = creator
                .iter()
                .find(|(_, at)| **at == iri)
                .and_then(|(r, _)| resources.get(r).map(|(d, _)| (r.clone(), d.clone())));
            let mut e = e;
            if let Some((r, _)) = &creates {
                // The new resource becomes the event's (to-)resource.
                match e.action.effects().create_resource {
                    CreateResource::OptionalTo
                        if e.to_resource_inventoried_as.as_deref_str() == Some(r.as_str()) =>
                    {
                        e.to_resource_inventoried_as = None
                    }
                    _ if e.resource_inventoried_as.as_deref_str() == Some(r.as_str()) => {
                        e.resource_inventoried_as = None
                    }
                    CreateResource::OptionalTo => e.to_resource_inventoried_as = None,
                    _ => e.resource_inventoried_as = None,
                }
                ready.insert((ObjectKind::EconomicResource, r.clone()));
            }
            made_events.insert(reflow_id(&iri));
            steps.push(Step::Event {
                iri,
                event: Box::new(e),
                creates: creates.map(|(_, d)| Box::new(d)),
            });
            self.report.events += 1;
            flush(&mut pending, &mut steps, &mut ready, &made_events);
        }
        for (_, list) in opening_at {
            for (r, raise, d) in list {
                let from = raise.imported_from.clone().unwrap_or_default();
                steps.push(Step::Event {
                    iri: from,
                    event: Box::new(raise),
                    creates: Some(Box::new(d)),
                });
                ready.insert((ObjectKind::EconomicResource, r));
                self.report.events += 1;
            }
        }
        flush(&mut pending, &mut steps, &mut ready, &made_events);
        for o in pending {
            let (k, i) = o
                .refs()
                .into_iter()
                .find(|(k, i)| !exists(&ready, &made_events, *k, i))
                .unwrap_or((o.kind(), o.id().clone()));
            self.problems.push(Problem::field(
                o.id().as_str(),
                ref_field(k),
                format!(
                    "refers to {} {i}, which this import cannot create before it (a cycle)",
                    kind_class_full(k)
                ),
            ));
        }
        if !self.problems.is_empty() {
            return Err(ImportError::Refused(self.problems));
        }
        self.report.created_missing.sort();
        self.report.standard_units.sort();
        Ok(ImportPlan {
            steps,
            report: self.report,
            agents,
        })
    }
}

trait OptIdStr {
    fn as_deref_str(&self) -> Option<&str>;
}

impl OptIdStr for Option<Id> {
    fn as_deref_str(&self) -> Option<&str> {
        self.as_ref().map(Id::as_str)
    }
}

fn ref_field(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Agent => "agent",
        ObjectKind::Unit => "hasUnit",
        ObjectKind::ResourceSpecification => "resourceConformsTo",
        ObjectKind::ProcessSpecification => "basedOn",
        ObjectKind::SpatialThing => "location",
        ObjectKind::EconomicResource => "resourceInventoriedAs",
        ObjectKind::Process => "process",
        ObjectKind::EconomicEvent => "event",
        ObjectKind::Commitment => "fulfills",
        ObjectKind::Intent => "satisfies",
        ObjectKind::Claim => "settles",
        ObjectKind::Agreement => "agreement",
        ObjectKind::Plan => "plannedWithin",
        _ => "reference",
    }
}

/// The model types an import fills: their kept properties and id.
trait HasOther {
    fn set_other(&mut self, other: OtherProperties);
    fn set_reflow_id(&mut self, id: &str);
}

macro_rules! has_other {
    ($($ty:ty),*) => {$(
        impl HasOther for $ty {
            fn set_other(&mut self, other: OtherProperties) {
                self.other_properties = other;
            }
            fn set_reflow_id(&mut self, id: &str) {
                self.id = Id::from(id);
            }
        }
    )*};
}

has_other!(
    Agent,
    Unit,
    SpatialThing,
    AgentRelationshipRole,
    AgentRelationship,
    ResourceSpecification,
    ProcessSpecification,
    RecipeExchange,
    RecipeProcess,
    Recipe,
    RecipeFlow,
    Plan,
    Process,
    Agreement,
    AgreementBundle,
    Intent,
    Proposal,
    ProposalList,
    Commitment,
    Claim,
    ResourceDescription,
    EconomicEvent
);
