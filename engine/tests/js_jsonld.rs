//! A stock JSON-LD processor agrees with Reflow's reading of its exports: the official
//! JavaScript processor `jsonld` (jsonld.js, npm, pinned in tests/interop) expands and
//! converts to RDF Reflow's export of every published ValueFlows example, through
//! `tests/interop/rdf-of-export.mjs`, in safe mode (anything it would drop is an error); the
//! graph it reads must be the graph Reflow's own comparison computes (`interop::rdf::Graph`,
//! what the round-trip tests compare), both canonicalized with RDFC-1.0 (`rdf-canonize`) so
//! that blank nodes are compared by structure. Nothing is fetched: the export's context is
//! inline and the script's document loader refuses every URL. One difference of reading is
//! checked apart: the export's top-level `"name"` beside `@graph` is, for JSON-LD, a blank
//! node with that `vf:name` whose named graph holds the rest; Reflow's reading has the
//! graph's triples only (docs/interop.md, "A stock processor agrees").
//!
//! Needs `node` and `npm ci --prefix tests/interop` (which `.ci/test` does); without them the
//! test fails when `CI=true` and skips with a message otherwise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use reflow::interop::rdf::Graph;
use reflow::interop::{self, ImportOptions};
use reflow::{ActorId, Ledger};

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/valueflows")
}

/// Whether node and the installed packages are there (failing under CI when not).
fn node_ready() -> bool {
    let installed = ["jsonld", "rdf-canonize"].iter().all(|p| {
        interop_dir()
            .join("node_modules")
            .join(p)
            .join("package.json")
            .exists()
    });
    let node = Command::new("node").arg("--version").output().is_ok();
    if installed && node {
        return true;
    }
    let why = "node or tests/interop/node_modules is missing: run `npm ci --prefix tests/interop`";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// The triples of canonical N-Quads `text` (one graph), each blank node named by its content
/// (its sorted "predicate object" lines), as Reflow's own reading names them: blank nodes here
/// are measures, trees of depth one, so equal content is equal meaning. (RDFC-1.0 labels alone
/// are not enough: Reflow's reading is a set, in which two equal measures are one node, while
/// jsonld.js keeps one blank node for each.) A blank node inside a blank node fails the test.
fn content_named(text: &str) -> BTreeSet<String> {
    let triples: Vec<(&str, &str, &str)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let l = l.trim_end().strip_suffix(" .").expect("an N-Quads line");
            let (s, rest) = l.split_once(' ').expect("subject");
            let (p, o) = rest.split_once(' ').expect("predicate");
            (s, p, o)
        })
        .collect();
    let mut content: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (s, p, o) in &triples {
        if s.starts_with("_:") {
            assert!(
                !o.starts_with("_:"),
                "a blank node inside a blank node: {s} {p} {o}"
            );
            content.entry(s).or_default().push(format!("{p} {o}"));
        }
    }
    let name = |t: &str| -> String {
        match content.get(t) {
            Some(c) => {
                let mut c = c.clone();
                c.sort();
                format!("[{}]", c.join("; "))
            }
            None => t.to_string(),
        }
    };
    triples
        .iter()
        .filter(|(s, _, _)| !s.starts_with("_:"))
        .map(|(s, p, o)| format!("{s} {p} {}", name(o)))
        .chain(content.keys().map(|b| format!("{} (a measure)", name(b))))
        .collect()
}

#[test]
fn jsonld_js_reads_the_graph_reflow_reads() {
    if !node_ready() {
        return;
    }
    let mut examples: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonld"))
        .collect();
    examples.sort();
    assert_eq!(examples.len(), 30, "the 30 published examples");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = Vec::new();
    let mut triples = Vec::new();
    for (i, f) in examples.iter().enumerate() {
        let mut l = Ledger::new_network("interop", ActorId::from([7u8; 16])).expect("ledger");
        let options = ImportOptions {
            create_missing: true,
            source: "example.jsonld".into(),
        };
        let text = std::fs::read_to_string(f).expect("read");
        interop::import(&mut l, &text, &options).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let export = interop::export(&l);
        let graph = Graph::from_document(&export).expect("Reflow reads its export");
        triples.push(graph.triples.len());
        let json = dir.path().join(format!("{i}.jsonld"));
        let nt = dir.path().join(format!("{i}.nt"));
        std::fs::write(&json, export.to_string()).expect("write");
        std::fs::write(&nt, graph.to_ntriples()).expect("write");
        args.push(json);
        args.push(nt);
    }
    let out = Command::new("node")
        .arg(interop_dir().join("rdf-of-export.mjs"))
        .args(&args)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "rdf-of-export.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let read = read.as_array().expect("an array");
    assert_eq!(read.len(), examples.len());
    let mut failures = Vec::new();
    for ((f, r), n) in examples.iter().zip(read).zip(&triples) {
        let name = f.file_name().expect("name").to_string_lossy();
        assert!(
            r["expandedNodes"].as_u64().is_some_and(|n| n > 0),
            "{name}: {r}"
        );
        // What JSON-LD says of the top-level "name" beside "@graph": a blank node with
        // that name whose named graph holds every other triple. Exactly that, nothing more.
        assert_eq!(
            r["graphNode"],
            serde_json::json!([format!("<{}name> \"interop\"", interop::VF)]),
            "{name}: {r}"
        );
        assert_eq!(r["graphs"], serde_json::json!(["BlankNode"]), "{name}: {r}");
        let (js, ours) = (
            r["jsonld"].as_str().expect("text"),
            r["reflow"].as_str().expect("text"),
        );
        assert_eq!(
            ours.lines().filter(|l| !l.trim().is_empty()).count(),
            *n,
            "{name}: the canonical form keeps every triple"
        );
        let (js, ours) = (content_named(js), content_named(ours));
        if js != ours {
            let only_js: Vec<_> = js.difference(&ours).collect();
            let only_ours: Vec<_> = ours.difference(&js).collect();
            failures.push(format!(
                "{name}: only jsonld.js reads {only_js:#?}\nonly Reflow reads {only_ours:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
