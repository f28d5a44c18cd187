//! A small JSON-LD 1.1 expansion: a document's `@context` (inline only), compact IRIs,
//! `@vocab` and `@base`, type coercion, `@graph`, nested nodes and value objects, into a
//! node map (subject → types and properties by IRI), as JSON-LD's flattening algorithm
//! builds it. What it leaves out (remote contexts, `@list` order, `@reverse`, `@index` and
//! language maps, scoped contexts) is refused with the node and field named, never guessed.
//! docs/interop.md explains why Reflow expands by itself instead of using a JSON-LD crate.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::problem::Problem;

/// The ValueFlows namespace (of the ontology, `vf-1.0.ttl`).
pub const VF: &str = "https://w3id.org/valueflows/ont/vf#";
/// Reflow's own vocabulary: the terms and classes an export writes that the ValueFlows
/// ontology (`vf-1.0.ttl`) does not define ([`REFLOW_TERMS`], docs/interop.md).
pub const REFLOW_VOCAB: &str = "urn:reflow:vocab#";
/// The terms and classes Reflow writes under [`REFLOW_VOCAB`]: its own fields (`agentKind`,
/// `createdResource`, `removedBy`, `custodian`, `status`) and the ones the ValueFlows
/// documentation and examples use that `vf-1.0.ttl` does not define (agent relationships,
/// `atLocation`). An import reads each under either namespace (older exports wrote them
/// under ValueFlows').
pub const REFLOW_TERMS: [&str; 13] = [
    "AgentRelationship",
    "AgentRelationshipRole",
    "agentKind",
    "atLocation",
    "createdResource",
    "custodian",
    "inverseRoleLabel",
    "object",
    "relationship",
    "removedBy",
    "roleLabel",
    "status",
    "subject",
];
/// The namespace the spec's examples write (read as [`VF`]).
pub const VF_HTTP: &str = "http://w3id.org/valueflows/ont/vf#";
/// The Ontology of units of Measure 2.0.
pub const OM2: &str = "http://www.ontology-of-units-of-measure.org/resource/om-2/";
/// XML Schema datatypes.
pub const XSD: &str = "http://www.w3.org/2001/XMLSchema#";
/// RDF Schema.
pub const RDFS: &str = "http://www.w3.org/2000/01/rdf-schema#";
/// The W3C WGS84 vocabulary (`geo:SpatialThing`, `geo:lat`).
pub const GEO: &str = "http://www.w3.org/2003/01/geo/wgs84_pos#";
/// RDF's own namespace (`rdf:type`).
pub const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";

/// Prefixes the ValueFlows examples use without always declaring them: a file's own
/// definitions win.
pub const WELL_KNOWN_PREFIXES: [(&str, &str); 13] = [
    ("vf", VF),
    ("om2", OM2),
    ("rdf", "http://www.w3.org/1999/02/22-rdf-syntax-ns#"),
    ("rdfs", RDFS),
    ("xsd", XSD),
    ("owl", "http://www.w3.org/2002/07/owl#"),
    ("skos", "http://www.w3.org/2004/02/skos/core#"),
    ("geo", GEO),
    ("time", "http://www.w3.org/2006/time#"),
    ("dcterms", "http://purl.org/dc/terms/"),
    ("foaf", "http://xmlns.com/foaf/0.1/"),
    ("schema", "https://schema.org/"),
    ("wd", "http://www.wikidata.org/entity/"),
];

/// How a term's string values are read.
#[derive(Debug, Clone, PartialEq)]
enum Coerce {
    /// `"@type": "@id"`: an IRI, relative to `@base`.
    Id,
    /// `"@type": "@vocab"`: an IRI, relative to `@vocab`.
    Vocab,
    /// A datatype IRI.
    Datatype(String),
}

#[derive(Debug, Clone)]
struct Term {
    iri: String,
    coerce: Option<Coerce>,
}

/// An active context.
#[derive(Debug, Clone, Default)]
pub struct Context {
    vocab: Option<String>,
    base: Option<String>,
    terms: HashMap<String, Term>,
    /// Whether undeclared well-known prefixes (`vf:`, `om2:`, ...) expand.
    pub well_known: bool,
    /// Notes on how the context was read (for the import report).
    pub notes: Vec<String>,
}

/// One value of a property, expanded.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A reference to a node (an IRI or a blank node id `_:...`).
    Iri(String),
    /// A literal: a JSON string, number or boolean, with an optional datatype or language.
    Literal {
        /// The value.
        value: Value,
        /// Datatype IRI.
        datatype: Option<String>,
        /// Language tag.
        language: Option<String>,
    },
    /// An embedded node without `@id` or `@type` (a measure), kept in place.
    Embedded(Props),
}

/// Properties by IRI, values in document order.
pub type Props = BTreeMap<String, Vec<Val>>;

/// A node of the node map.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Its IRI, or a generated id for a typed nested node without one.
    pub id: String,
    /// Its `@type`s, expanded.
    pub types: Vec<String>,
    /// Its properties.
    pub props: Props,
    /// The compact key each property IRI was spelled with first (to name fields in errors).
    pub spelled: BTreeMap<String, String>,
    /// For each of its `@type`s, the position (in document order of node objects) of the
    /// node object that gave it first: where a node with one `@id` but several node objects
    /// (which JSON-LD merges into one) stands as a node of that class.
    pub type_at: BTreeMap<String, usize>,
}

/// Normalise the examples' `http:` ValueFlows namespace to the ontology's `https:`.
pub fn normalise(iri: String) -> String {
    match iri.strip_prefix(VF_HTTP) {
        Some(rest) => format!("{VF}{rest}"),
        None => iri,
    }
}

impl Context {
    /// The context of `doc` (its `@context`), on top of `self`.
    pub fn read(&self, ctx: &Value) -> Result<Context, Problem> {
        let mut out = self.clone();
        let parts: Vec<&Value> = match ctx {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for part in parts {
            match part {
                Value::Null => {
                    let well_known = out.well_known;
                    out = Context {
                        well_known,
                        ..Context::default()
                    }
                }
                Value::String(s) => {
                    return Err(Problem::doc(
                        "@context",
                        format!(
                        "remote context {s:?}: only inline contexts are read (nothing is fetched)"
                    ),
                    ))
                }
                Value::Object(m) => out.read_object(m)?,
                _ => return Err(Problem::doc("@context", "not an object, array or null")),
            }
        }
        Ok(out)
    }

    fn read_object(&mut self, m: &Map<String, Value>) -> Result<(), Problem> {
        for key in ["@vocab", "@base"] {
            match m.get(key) {
                None => {}
                Some(Value::Null) => {
                    if key == "@vocab" {
                        self.vocab = None
                    } else {
                        self.base = None
                    }
                }
                Some(Value::String(s)) => {
                    let iri = normalise(self.expand(s, true));
                    if key == "@vocab" {
                        self.vocab = Some(iri)
                    } else {
                        self.base = Some(s.clone())
                    }
                }
                Some(_) => return Err(Problem::doc("@context", format!("{key} is not a string"))),
            }
        }
        // Prefix definitions first, then terms that use them (order within an object does
        // not matter in JSON-LD).
        let mut pending: Vec<(&String, &Value)> =
            m.iter().filter(|(k, _)| !k.starts_with('@')).collect();
        for _ in 0..4 {
            let mut rest = Vec::new();
            for (k, v) in pending {
                match self.define(k, v)? {
                    true => {}
                    false => rest.push((k, v)),
                }
            }
            pending = rest;
            if pending.is_empty() {
                break;
            }
        }
        for (k, v) in pending {
            self.define_now(k, v)?;
        }
        Ok(())
    }

    /// Define `k`; false if it depends on a prefix not yet defined in this context object
    /// (in its IRI or in its datatype: `{"@type": "xsd:decimal"}` needs `xsd`).
    fn define(&mut self, k: &str, v: &Value) -> Result<bool, Problem> {
        let targets: Vec<&str> = match v {
            Value::String(s) => vec![s.as_str()],
            Value::Object(o) => ["@id", "@type"]
                .iter()
                .filter_map(|key| o.get(*key).and_then(Value::as_str))
                .collect(),
            _ => Vec::new(),
        };
        for t in targets {
            if let Some((p, _)) = t.split_once(':') {
                let well_known =
                    self.well_known && WELL_KNOWN_PREFIXES.iter().any(|(w, _)| *w == p);
                if !t.contains("://")
                    && p != k
                    && !self.terms.contains_key(p)
                    && !p.starts_with('_')
                    && !well_known
                {
                    return Ok(false);
                }
            }
        }
        self.define_now(k, v)?;
        Ok(true)
    }

    fn define_now(&mut self, k: &str, v: &Value) -> Result<(), Problem> {
        let field = format!("@context/{k}");
        match v {
            Value::Null => {
                self.terms.remove(k);
            }
            Value::String(s) => {
                let iri = normalise(self.expand(s, true));
                self.terms.insert(k.to_string(), Term { iri, coerce: None });
            }
            Value::Object(o) => {
                for key in o.keys() {
                    if !matches!(key.as_str(), "@id" | "@type" | "@container") {
                        return Err(Problem::doc(
                            field,
                            format!("{key} in a term definition is not supported"),
                        ));
                    }
                }
                if let Some(c) = o.get("@container") {
                    if c != "@set" {
                        return Err(Problem::doc(
                            field,
                            format!("container {c} is not supported"),
                        ));
                    }
                }
                let iri = match o.get("@id") {
                    Some(Value::String(s)) => normalise(self.expand(s, true)),
                    None => normalise(self.expand(k, true)),
                    Some(_) => return Err(Problem::doc(field, "@id is not a string")),
                };
                let coerce = match o.get("@type") {
                    None => None,
                    Some(Value::String(t)) if t == "@id" => Some(Coerce::Id),
                    Some(Value::String(t)) if t == "@vocab" => Some(Coerce::Vocab),
                    Some(Value::String(t)) => Some(Coerce::Datatype(self.expand(t, true))),
                    Some(_) => return Err(Problem::doc(field, "@type is not a string")),
                };
                self.terms.insert(k.to_string(), Term { iri, coerce });
            }
            _ => return Err(Problem::doc(field, "not a string, object or null")),
        }
        Ok(())
    }

    /// Whether the context has a vocabulary mapping.
    pub fn has_vocab(&self) -> bool {
        self.vocab.is_some()
    }

    /// Use `vocab` as `@vocab`.
    pub fn set_vocab(&mut self, vocab: &str) {
        self.vocab = Some(vocab.to_string());
    }

    /// Expand `s` to an IRI: a term, a compact IRI, an absolute IRI, else relative to
    /// `@vocab` (`vocab`) or `@base`.
    pub fn expand(&self, s: &str, vocab: bool) -> String {
        if vocab {
            if let Some(t) = self.terms.get(s) {
                return t.iri.clone();
            }
        }
        if let Some((prefix, suffix)) = s.split_once(':') {
            if prefix == "_" || suffix.starts_with("//") {
                return s.to_string();
            }
            if let Some(t) = self.terms.get(prefix) {
                return normalise(format!("{}{suffix}", t.iri));
            }
            if self.well_known {
                if let Some((_, ns)) = WELL_KNOWN_PREFIXES.iter().find(|(p, _)| *p == prefix) {
                    return format!("{ns}{suffix}");
                }
            }
            return normalise(s.to_string());
        }
        if vocab {
            if let Some(v) = &self.vocab {
                return format!("{v}{s}");
            }
        }
        match &self.base {
            Some(b) => format!("{b}{s}"),
            None => s.to_string(),
        }
    }

    fn coerce(&self, key: &str) -> Option<&Coerce> {
        self.terms.get(key).and_then(|t| t.coerce.as_ref())
    }
}

/// Properties that ValueFlows defines as object properties (their values are nodes), read
/// as IRIs when a file writes them as plain strings without declaring `"@type": "@id"` (the
/// spec's examples do). Local names in the VF namespace.
pub const VF_OBJECT_PROPERTIES: [&str; 54] = [
    "bundledIn",
    "listedIn",
    "provider",
    "receiver",
    "resourceInventoriedAs",
    "toResourceInventoriedAs",
    "resourceConformsTo",
    "conformsTo",
    "inputOf",
    "outputOf",
    "hasInput",
    "hasOutput",
    "atLocation",
    "toLocation",
    "corrects",
    "realizationOf",
    "reciprocalRealizationOf",
    "realizes",
    "fulfills",
    "satisfies",
    "settles",
    "basedOn",
    "plannedWithin",
    "primaryLocation",
    "publishes",
    "reciprocal",
    "proposedTo",
    "eligibleLocation",
    "currentLocation",
    "primaryAccountable",
    "custodian",
    "containedIn",
    "stage",
    "unitOfEffort",
    "defaultUnitOfResource",
    "defaultUnitOfEffort",
    "clauseOf",
    "reciprocalClauseOf",
    "stipulates",
    "stipulatesReciprocal",
    "independentDemandOf",
    "triggeredBy",
    "primaryOutput",
    "recipeIncludes",
    "processConformsTo",
    "recipeInputOf",
    "recipeOutputOf",
    "recipeClauseOf",
    "recipeReciprocalClauseOf",
    "subject",
    "object",
    "relationship",
    "inScopeOf",
    "hasUnit",
];

/// The expanded document: its nodes in order of first appearance.
#[derive(Debug, Default)]
pub struct Expanded {
    /// The nodes.
    pub nodes: Vec<Node>,
    index: HashMap<String, usize>,
    blank: usize,
    /// Node objects read so far.
    seq: usize,
}

impl Expanded {
    fn node_mut(&mut self, id: &str) -> &mut Node {
        let i = match self.index.get(id) {
            Some(&i) => i,
            None => {
                self.nodes.push(Node {
                    id: id.to_string(),
                    ..Node::default()
                });
                self.index.insert(id.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }
}

/// Expand `doc`. `vocabulary`: read plain strings of ValueFlows object properties as IRIs
/// and undeclared well-known prefixes as theirs (the importer's reading of real files); off,
/// only the document's context decides (plain JSON-LD, for comparing graphs).
pub fn expand(doc: &Value, vocabulary: bool) -> Result<(Expanded, Context), Problem> {
    let Value::Object(top) = doc else {
        return Err(Problem::doc("document", "not a JSON object"));
    };
    let base = Context {
        well_known: vocabulary,
        ..Context::default()
    };
    let ctx = match top.get("@context") {
        Some(c) => base.read(c)?,
        None => base,
    };
    let mut ctx = ctx;
    if vocabulary && !ctx.has_vocab() {
        ctx.set_vocab(VF);
        ctx.notes.push(format!(
            "the @context declares no @vocab: terms are read as ValueFlows terms ({VF})"
        ));
    }
    let mut out = Expanded::default();
    let depth = 0;
    match top.get("@graph") {
        Some(g) => {
            let items: Vec<&Value> = match g {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for (i, item) in items.into_iter().enumerate() {
                let Value::Object(m) = item else {
                    return Err(Problem::doc(
                        format!("@graph item {}", i + 1),
                        "not an object",
                    ));
                };
                node(m, &ctx, &mut out, vocabulary, None, depth)?;
            }
        }
        None => {
            node(top, &ctx, &mut out, vocabulary, None, depth)?;
        }
    }
    Ok((out, ctx))
}

const MAX_DEPTH: usize = 32;

/// Add the node object `m` to `out`; returns its id.
fn node(
    m: &Map<String, Value>,
    outer: &Context,
    out: &mut Expanded,
    vocabulary: bool,
    generated: Option<String>,
    depth: usize,
) -> Result<String, Problem> {
    let ctx_owned;
    let ctx = match m.get("@context") {
        Some(c) => {
            ctx_owned = outer.read(c)?;
            &ctx_owned
        }
        None => outer,
    };
    let id = match m.get("@id") {
        Some(Value::String(s)) => normalise(ctx.expand(s, false)),
        Some(_) => return Err(Problem::doc("@id", "not a string")),
        None => match generated {
            Some(g) => g,
            None => {
                out.blank += 1;
                format!("_:b{}", out.blank)
            }
        },
    };
    if id.is_empty() {
        return Err(Problem::doc("@id", "empty"));
    }
    let mut types = Vec::new();
    match m.get("@type") {
        None => {}
        Some(Value::String(t)) => types.push(normalise(ctx.expand(t, true))),
        Some(Value::Array(a)) => {
            for t in a {
                let Some(t) = t.as_str() else {
                    return Err(Problem::field(&id, "@type", "not a string"));
                };
                types.push(normalise(ctx.expand(t, true)));
            }
        }
        Some(_) => return Err(Problem::field(&id, "@type", "not a string")),
    }
    let mut props: Vec<(String, String, Vec<Val>)> = Vec::new();
    for (k, v) in m {
        if k.starts_with('@') {
            match k.as_str() {
                "@id" | "@type" | "@context" => continue,
                "@graph" if depth == 0 => continue,
                other => {
                    return Err(Problem::field(
                        &id,
                        other,
                        "this JSON-LD keyword is not supported here",
                    ))
                }
            }
        }
        let iri = normalise(ctx.expand(k, true));
        if !iri.contains(':') {
            // Not an IRI (no @vocab): JSON-LD drops such keys; the importer never does so
            // silently.
            return Err(Problem::field(
                &id,
                k,
                "the key does not expand to an IRI (no @vocab in the @context)",
            ));
        }
        let mut vals = Vec::new();
        values(&id, k, &iri, v, ctx, out, vocabulary, depth, &mut vals)?;
        props.push((iri, k.clone(), vals));
    }
    // JSON-LD gives a property's values no order; the importer takes the first of several
    // for a single-valued field. Values under a term come before those under a compact or
    // absolute IRI (then document order), so that a Reflow export, which writes the value it
    // models under the term and the others kept under the property's IRI, reads back alike.
    props.sort_by_key(|(_, key, _)| key.contains(':'));
    let seq = out.seq;
    out.seq += 1;
    let n = out.node_mut(&id);
    for t in types {
        n.type_at.entry(t.clone()).or_insert(seq);
        if !n.types.contains(&t) {
            n.types.push(t);
        }
    }
    for (iri, key, vals) in props {
        n.spelled.entry(iri.clone()).or_insert(key);
        let slot = n.props.entry(iri).or_default();
        for v in vals {
            if !slot.contains(&v) {
                slot.push(v);
            }
        }
    }
    Ok(id)
}

#[allow(clippy::too_many_arguments)]
fn values(
    id: &str,
    key: &str,
    iri: &str,
    v: &Value,
    ctx: &Context,
    out: &mut Expanded,
    vocabulary: bool,
    depth: usize,
    vals: &mut Vec<Val>,
) -> Result<(), Problem> {
    if depth > MAX_DEPTH {
        return Err(Problem::field(id, key, "nested too deeply"));
    }
    let coerce = ctx.coerce(key).cloned().or_else(|| {
        if !vocabulary {
            return None;
        }
        if iri == format!("{OM2}hasUnit") {
            return Some(Coerce::Id);
        }
        let local = iri.strip_prefix(VF)?;
        VF_OBJECT_PROPERTIES.contains(&local).then_some(Coerce::Id)
    });
    match v {
        Value::Null => {}
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                if x.is_array() {
                    return Err(Problem::field(
                        id,
                        key,
                        "an array inside an array (a list) is not supported",
                    ));
                }
                let _ = i;
                values(id, key, iri, x, ctx, out, vocabulary, depth, vals)?;
            }
        }
        Value::String(s) => vals.push(match coerce {
            Some(Coerce::Id) => Val::Iri(normalise(ctx.expand(s, false))),
            Some(Coerce::Vocab) => Val::Iri(normalise(ctx.expand(s, true))),
            Some(Coerce::Datatype(d)) => Val::Literal {
                value: v.clone(),
                datatype: Some(d),
                language: None,
            },
            None => Val::Literal {
                value: v.clone(),
                datatype: None,
                language: None,
            },
        }),
        Value::Number(_) | Value::Bool(_) => vals.push(Val::Literal {
            value: v.clone(),
            datatype: match coerce {
                Some(Coerce::Datatype(d)) => Some(d),
                _ => None,
            },
            language: None,
        }),
        Value::Object(o) => {
            if o.contains_key("@value") {
                for k in o.keys() {
                    if !matches!(k.as_str(), "@value" | "@type" | "@language") {
                        return Err(Problem::field(id, key, format!("{k} in a value object")));
                    }
                }
                let value = o.get("@value").cloned().unwrap_or(Value::Null);
                if value.is_object() || value.is_array() {
                    return Err(Problem::field(
                        id,
                        key,
                        "@value is not a string, number or boolean",
                    ));
                }
                let datatype = match o.get("@type") {
                    Some(Value::String(t)) => Some(ctx.expand(t, true)),
                    None => None,
                    Some(_) => return Err(Problem::field(id, key, "@type is not a string")),
                };
                let language = o
                    .get("@language")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if !value.is_null() {
                    vals.push(Val::Literal {
                        value,
                        datatype,
                        language,
                    });
                }
            } else if o.contains_key("@list") || o.contains_key("@set") {
                return Err(Problem::field(
                    id,
                    key,
                    "@list and @set objects are not supported",
                ));
            } else if o.len() == 1 && o.contains_key("@id") {
                let Some(s) = o.get("@id").and_then(Value::as_str) else {
                    return Err(Problem::field(id, key, "@id is not a string"));
                };
                vals.push(Val::Iri(normalise(ctx.expand(s, false))));
            } else if o.contains_key("@id") || o.contains_key("@type") {
                // A nested node: flattened into the node map, referenced from here.
                let n = out.nodes.len();
                let generated = format!("{id}#{}-{n}", local_name(iri));
                let child = node(o, ctx, out, vocabulary, Some(generated), depth + 1)?;
                vals.push(Val::Iri(child));
            } else {
                // An embedded node without id or type (a measure): kept in place.
                let mut props = Props::new();
                for (k, x) in o {
                    if k.starts_with('@') {
                        if k == "@context" {
                            return Err(Problem::field(
                                id,
                                key,
                                "an embedded @context is not supported",
                            ));
                        }
                        continue;
                    }
                    let piri = normalise(ctx.expand(k, true));
                    let mut inner = Vec::new();
                    values(id, k, &piri, x, ctx, out, vocabulary, depth + 1, &mut inner)?;
                    props.entry(piri).or_default().extend(inner);
                }
                vals.push(Val::Embedded(props));
            }
        }
    }
    Ok(())
}

/// The part of an IRI after its last `#`, `/` or `:`.
pub fn local_name(iri: &str) -> &str {
    iri.rsplit(['#', '/', ':']).next().unwrap_or(iri)
}
