// Read a Reflow ledger (a saved Automerge document, schema version 2) with the stock
// JavaScript Automerge package, as any Automerge reader would, and print what it holds as
// JSON: { schemaVersion, name, events: { id: event }, objects: { rootKey: { id: fields } } }.
// The layout is docs/data-model.md, "The Automerge document (schema version 2)".
// Usage: node read-ledger.mjs LEDGER_FILE
import { readFileSync } from "node:fs";
import * as Automerge from "@automerge/automerge";

// A scalar string as the Rust side writes it (ScalarValue::Str): a plain string, or an
// ImmutableString, depending on the package's version.
const text = (v) => (typeof v === "string" ? v : v && typeof v.val === "string" ? v.val : String(v));

const doc = Automerge.load(new Uint8Array(readFileSync(process.argv[2])));
const out = {
  schemaVersion: Number(doc.schemaVersion),
  name: text(doc.network.name),
  events: {},
  objects: {},
};
// Events: each bucket maps an event's id (its own op id, "<counter>@<actor hex>") to the
// event's JSON text.
for (const bucket of Object.values(doc.eventBuckets)) {
  for (const [id, json] of Object.entries(bucket)) {
    out.events[id] = JSON.parse(text(json));
  }
}
// Objects: keys are JSON arrays ["<rootKey>","<id>"] (the marker, its value the root key)
// and ["<rootKey>","<id>","<field>"] (the field's JSON text).
for (const bucket of Object.values(doc.objectBuckets)) {
  for (const [key, value] of Object.entries(bucket)) {
    const parts = JSON.parse(key);
    const [kind, id, field] = parts;
    out.objects[kind] ??= {};
    out.objects[kind][id] ??= {};
    if (parts.length === 3) {
      out.objects[kind][id][field] = JSON.parse(text(value));
    } else if (text(value) !== kind) {
      throw new Error(`marker ${key} holds ${text(value)}`);
    }
  }
}
process.stdout.write(JSON.stringify(out));
