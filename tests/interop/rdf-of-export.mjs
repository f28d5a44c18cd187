// Read Reflow's JSON-LD exports with the official JSON-LD processor for JavaScript
// (`jsonld`, jsonld.js), as any JSON-LD consumer would, and print for each what it reads:
// the number of expanded nodes, the kinds of graph its quads fall in, the node that names
// the graph (an export's top-level "name", see below), and the rest of its RDF as
// canonical N-Quads (RDFC-1.0, `rdf-canonize`) with the graph names dropped; next to
// Reflow's own RDF reading of the same export (N-Triples written by the Rust test),
// canonicalized the same way, so that two graphs are equal exactly when the two texts are
// (blank nodes named by the canonical algorithm on both sides).
// Nothing is fetched: the document loader refuses every URL (an export's context is inline).
// Usage: node rdf-of-export.mjs EXPORT.jsonld REFLOW.nt [EXPORT.jsonld REFLOW.nt ...]
// Prints a JSON array, one object per pair.
import { readFileSync } from "node:fs";
import jsonld from "jsonld";
import canonize from "rdf-canonize";

const documentLoader = async (url) => {
  throw new Error(`refused to load ${url}: the test reaches no network`);
};

const canonical = async (dataset) =>
  canonize.canonize(dataset, { algorithm: "RDFC-1.0" });

const args = process.argv.slice(2);
if (args.length === 0 || args.length % 2 !== 0) {
  console.error("usage: node rdf-of-export.mjs EXPORT.jsonld REFLOW.nt [...]");
  process.exit(2);
}
const out = [];
for (let i = 0; i < args.length; i += 2) {
  const doc = JSON.parse(readFileSync(args[i], "utf8"));
  // safe mode: anything the processor would drop (a term that does not expand to an IRI,
  // an invalid IRI) is an error, not a silent loss.
  const expanded = await jsonld.expand(doc, { documentLoader, safe: true });
  const quads = await jsonld.toRDF(doc, { documentLoader, safe: true });
  // An export's top-level "name" beside "@graph" makes, in JSON-LD, a node (a blank node)
  // with that name in the default graph, and "@graph" that node's named graph: listed apart
  // (`graphNode`: its properties as "predicate object" strings), the rest merged.
  const names = new Set(
    quads.filter((q) => q.graph.termType !== "DefaultGraph").map((q) => q.graph.value),
  );
  const isGraphNode = (q) =>
    q.graph.termType === "DefaultGraph" && q.subject.termType === "BlankNode" && names.has(q.subject.value);
  const graphNode = quads
    .filter(isGraphNode)
    .map((q) => `<${q.predicate.value}> ${JSON.stringify(q.object.value)}`)
    .sort();
  const graphs = [...new Set(quads.filter((q) => !isGraphNode(q)).map((q) => q.graph.termType))].sort();
  const merged = quads
    .filter((q) => !isGraphNode(q))
    .map((q) => ({
      ...q,
      graph: { termType: "DefaultGraph", value: "" },
    }));
  const reflow = canonize.NQuads.parse(readFileSync(args[i + 1], "utf8"));
  out.push({
    file: args[i],
    expandedNodes: expanded.length,
    graphs,
    graphNode,
    jsonld: await canonical(merged),
    reflow: await canonical(reflow),
  });
}
console.log(JSON.stringify(out));
