//! A JSON-LD document read as an RDF graph, for comparing two documents as graphs rather
//! than as text: the set of its triples in N-Triples spelling, with each blank node (an
//! embedded measure, a node without `@id`) named by a hash of what it contains, so that two
//! graphs are equal exactly when their sets are (blank nodes here are trees: a nested JSON
//! object cannot be shared, so content naming is an exact isomorphism test for them).
//!
//! The reading is plain JSON-LD (the document's own `@context` decides what is an IRI), not
//! the importer's more forgiving one.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::expand::{self, Props, Val, RDF_TYPE, XSD};
use super::jsonld::Problem;

/// A triple: subject, predicate, object, in N-Triples spelling.
pub type Triple = (String, String, String);

/// A graph: its triples, each `(subject, predicate, object)` in N-Triples spelling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// The triples, sorted.
    pub triples: BTreeSet<Triple>,
}

impl Graph {
    /// Read `doc` as a graph.
    pub fn from_document(doc: &Value) -> Result<Graph, Problem> {
        let (ex, _) = expand::expand(doc, false)?;
        let mut g = Graph::default();
        for n in &ex.nodes {
            let s = term(&n.id);
            for t in &n.types {
                g.triples.insert((s.clone(), term(RDF_TYPE), term(t)));
            }
            add_props(&mut g, &s, &n.props);
        }
        Ok(g)
    }

    /// The triples in `self` and not in `other`, and those in `other` and not in `self`.
    pub fn difference<'a>(&'a self, other: &'a Graph) -> (Vec<&'a Triple>, Vec<&'a Triple>) {
        (
            self.triples.difference(&other.triples).collect(),
            other.triples.difference(&self.triples).collect(),
        )
    }

    /// The graph in N-Triples, one triple a line, sorted.
    pub fn to_ntriples(&self) -> String {
        let mut out = String::new();
        for (s, p, o) in &self.triples {
            let _ = writeln!(out, "{s} {p} {o} .");
        }
        out
    }
}

fn term(iri: &str) -> String {
    if iri.starts_with("_:") {
        iri.to_string()
    } else {
        format!("<{iri}>")
    }
}

/// A JSON number that is not an integer as JSON-LD's RDF conversion writes it (JSON-LD 1.1
/// Processing Algorithms, "Object to RDF Conversion"): a whole number below 10^21 is an
/// `xsd:integer`, anything else an `xsd:double` in its canonical form (`1.8E0`, `1.0E21`),
/// so that Reflow's reading has the literals a stock processor has.
fn number(f: f64) -> (String, Option<String>) {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        return (format!("{f:.0}"), Some(format!("{XSD}integer")));
    }
    let e = format!("{f:.15e}");
    let (mantissa, exponent) = e.split_once('e').unwrap_or((&e, "0"));
    let mut mantissa = mantissa.trim_end_matches('0').to_string();
    if mantissa.ends_with('.') {
        mantissa.push('0');
    }
    (
        format!("{mantissa}E{exponent}"),
        Some(format!("{XSD}double")),
    )
}

fn add_props(g: &mut Graph, s: &str, props: &Props) {
    for (p, vals) in props {
        for v in vals {
            let o = object(g, v);
            g.triples.insert((s.to_string(), term(p), o));
        }
    }
}

/// The object term of `v`; an embedded node's triples are added, under its content name.
fn object(g: &mut Graph, v: &Val) -> String {
    match v {
        Val::Iri(i) => term(i),
        Val::Literal {
            value,
            datatype,
            language,
        } => {
            let (text, default) = match value {
                Value::String(s) => (s.clone(), None),
                Value::Bool(b) => (b.to_string(), Some(format!("{XSD}boolean"))),
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    (n.to_string(), Some(format!("{XSD}integer")))
                }
                Value::Number(n) => number(n.as_f64().unwrap_or(f64::NAN)),
                other => (other.to_string(), None),
            };
            let quoted = serde_json::to_string(&text).unwrap_or_default();
            match (language, datatype.clone().or(default)) {
                (Some(l), _) => format!("{quoted}@{l}"),
                (None, Some(d)) => format!("{quoted}^^<{d}>"),
                (None, None) => quoted,
            }
        }
        Val::Embedded(props) => {
            let mut inner = Graph::default();
            add_props(&mut inner, "_:self", props);
            let mut h = Sha256::new();
            for (s, p, o) in &inner.triples {
                h.update(format!("{s} {p} {o}\n"));
            }
            let name = format!("_:c{}", hex::encode(&h.finalize()[..12]));
            for (_, p, o) in inner.triples {
                g.triples.insert((name.clone(), p, o));
            }
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_written_as_json_ld_writes_them() {
        let d = |f: f64| number(f).0;
        assert_eq!(d(1.8), "1.8E0");
        assert_eq!(d(-0.25), "-2.5E-1");
        assert_eq!(d(123456.5), "1.234565E5");
        assert_eq!(d(2.0), "2");
        assert_eq!(number(2.0).1, Some(format!("{XSD}integer")));
        assert_eq!(d(1e21), "1.0E21");
        assert_eq!(number(1.8).1, Some(format!("{XSD}double")));
    }

    #[test]
    fn same_graph_however_written() {
        let a = json!({"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#",
            "provider": {"@type": "@id"}},
            "@graph": [{"@id": "urn:x:e", "@type": "EconomicEvent", "provider": "urn:x:a",
                "resourceQuantity": {"hasNumericalValue": 2, "hasUnit": "kg"}}]});
        let b = json!({"@context": {"vf": "https://w3id.org/valueflows/ont/vf#"},
            "@id": "urn:x:e", "@type": "vf:EconomicEvent",
            "vf:resourceQuantity": {"vf:hasUnit": "kg", "vf:hasNumericalValue": 2},
            "vf:provider": {"@id": "urn:x:a"}});
        let ga = Graph::from_document(&a).expect("a");
        let gb = Graph::from_document(&b).expect("b");
        assert_eq!(ga, gb, "{}\n{}", ga.to_ntriples(), gb.to_ntriples());
        assert_eq!(ga.triples.len(), 5);
        let c = json!({"@context": {"vf": "https://w3id.org/valueflows/ont/vf#"},
            "@id": "urn:x:e", "@type": "vf:EconomicEvent",
            "vf:resourceQuantity": {"vf:hasUnit": "kg", "vf:hasNumericalValue": 3},
            "vf:provider": {"@id": "urn:x:a"}});
        let gc = Graph::from_document(&c).expect("c");
        assert_ne!(ga, gc);
        let (only_a, only_c) = ga.difference(&gc);
        // The measure's content names it: its link and both its triples differ.
        assert_eq!((only_a.len(), only_c.len()), (3, 3));
    }

    #[test]
    fn a_datatype_named_by_a_prefix_defined_later_in_the_context() {
        // JSON-LD: term definitions do not depend on their order in the context object.
        let doc = json!({"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#",
            "hasNumericalValue": {"@type": "xsd:decimal"},
            "xsd": "http://www.w3.org/2001/XMLSchema#"},
            "@id": "urn:x:m", "hasNumericalValue": "1.8"});
        let g = Graph::from_document(&doc).expect("graph");
        assert!(
            g.to_ntriples()
                .contains("\"1.8\"^^<http://www.w3.org/2001/XMLSchema#decimal>"),
            "{}",
            g.to_ntriples()
        );
    }
}
