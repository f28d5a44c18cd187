//! Stock Automerge reads the ledger: a Reflow ledger saved by the engine is opened by the
//! official JavaScript package `@automerge/automerge` (npm, pinned in tests/interop), through
//! `tests/interop/read-ledger.mjs`, which knows nothing of Reflow but the document layout in
//! docs/data-model.md. What it reads (events, object fields, including a field two replicas
//! edited concurrently) must equal what Reflow reads.
//!
//! Needs `node` and `npm ci --prefix tests/interop` (which `.ci/run` does); without them the
//! test fails when `CI=true` and skips with a message otherwise.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use reflow::*;

fn interop_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/interop"))
}

/// Whether node and the installed package are there (failing under CI when not).
fn node_ready() -> bool {
    let installed = interop_dir()
        .join("node_modules/@automerge/automerge/package.json")
        .exists();
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

fn key() -> DeviceKey {
    DeviceKey::generate().expect("key")
}

/// A ledger with objects of several kinds, events of several actions, a correction, and a
/// field that two replicas changed concurrently (an Automerge conflict): bo's note, written by
/// bo and by ana, an admin (only an object's owners and admins edit it).
fn ledger() -> Replica {
    let (mut ana, history) =
        Replica::create_network("market", key(), Agent::person("ana", "Ana")).expect("network");
    let bo_key = key();
    let mut history = history;
    let (_, more) = ana
        .write(|l| {
            l.create(Unit::new("kg", "kilogram", "kg"))?;
            l.create(Agent::person("bo", "Bo"))?;
            l.create(SpatialThing::new(
                "stall",
                "Stall 4",
                Some((50.8503, 4.3517)),
            ))?;
            l.create(ResourceSpecification::new("apple", "Apples"))
        })
        .expect("objects");
    history.extend(more);
    history.extend(
        ana.add_member(bo_key.id(), Role::Member, "bo".into())
            .expect("add bo"),
    );
    let (mut bo, _) = Replica::join(ana.network(), bo_key, history).expect("join");
    let (_, c) = ana
        .write(|l| {
            l.record_event(
                EconomicEvent::new(Action::Produce, "ana", "ana")
                    .quantity(10, "kg")
                    .at("stall")
                    .creating(ResourceDescription::new("apples", "Apples").conforming_to("apple")),
            )
        })
        .expect("produce");
    bo.receive(c).expect("bo receives");
    let (_, c) = ana
        .write(|l| {
            l.record_event(
                EconomicEvent::new(Action::Transfer, "ana", "bo")
                    .resource("apples")
                    .quantity(3, "kg")
                    .creating(ResourceDescription::new("bo-apples", "Bo's apples")),
            )
        })
        .expect("transfer");
    bo.receive(c).expect("bo receives");
    let first = ana
        .ledger()
        .events(&EventFilter::default())
        .last()
        .map(|e| e.id.clone())
        .expect("an event");
    let (_, c) = ana
        .write(|l| {
            l.record_event(
                EconomicEvent::new(Action::Transfer, "ana", "bo")
                    .resource("apples")
                    .to_resource("bo-apples")
                    .quantity(2, "kg")
                    .correcting(first.clone()),
            )
        })
        .expect("correction");
    bo.receive(c).expect("bo receives");
    // Concurrent edits of one field: each replica rewrites bo's note, then they merge.
    let (_, from_ana) = ana
        .write(|l| l.update::<Agent>(&"bo".into(), |a| a.note = Some("stall 4".into())))
        .expect("ana edits");
    let (_, from_bo) = bo
        .write(|l| {
            l.update::<Agent>(&"bo".into(), |a| {
                a.note = Some("apples on Saturdays".into())
            })?;
            l.record_event(
                EconomicEvent::new(Action::Consume, "bo", "bo")
                    .resource("bo-apples")
                    .quantity(1, "kg"),
            )
        })
        .expect("bo edits");
    ana.receive(from_bo).expect("ana receives");
    bo.receive(from_ana).expect("bo receives");
    assert_eq!(ana.ledger().heads().len(), 2, "concurrent heads");
    ana
}

#[test]
fn stock_javascript_automerge_reads_what_reflow_reads() {
    if !node_ready() {
        return;
    }
    let r = ledger();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ledger.automerge");
    std::fs::write(&file, r.ledger().save()).expect("write");
    let out = Command::new("node")
        .arg(interop_dir().join("read-ledger.mjs"))
        .arg(&file)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "read-ledger.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let l = r.ledger();
    assert_eq!(read["schemaVersion"], SCHEMA_VERSION);
    assert_eq!(read["name"], "market");

    // Every event, by its id, as Reflow reads it (corrected ones included).
    let all = l.events(&EventFilter {
        include_corrected: true,
        ..EventFilter::default()
    });
    assert_eq!(all.len(), 4);
    let js_events = read["events"].as_object().expect("events");
    assert_eq!(js_events.len(), all.len(), "{js_events:?}");
    for e in &all {
        let js = js_events
            .get(e.id.as_str())
            .unwrap_or_else(|| panic!("event {} not read by JS", e.id));
        let mut parsed: EconomicEvent = serde_json::from_value(js.clone()).expect("an event");
        parsed.id = e.id.clone();
        assert_eq!(&parsed, e, "event {}", e.id);
    }

    // Every object of these kinds, field by field, as Reflow reads it.
    fn same<T: VfObject + PartialEq + std::fmt::Debug>(
        l: &Ledger,
        read: &serde_json::Value,
        root_key: &str,
        expect: usize,
    ) {
        let theirs: BTreeMap<String, serde_json::Value> = read["objects"][root_key]
            .as_object()
            .map(|m| m.clone().into_iter().collect())
            .unwrap_or_default();
        let ours = l.list::<T>();
        assert_eq!(ours.len(), expect, "{root_key}");
        assert_eq!(theirs.len(), ours.len(), "{root_key}: {theirs:?}");
        for o in ours {
            let fields = theirs
                .get(o.id().as_str())
                .unwrap_or_else(|| panic!("{root_key} {} not read by JS", o.id()));
            let mut parsed: T = serde_json::from_value(fields.clone()).expect("fields");
            parsed.set_id(o.id().clone());
            assert_eq!(parsed, o, "{root_key} {}", o.id());
        }
    }
    same::<Agent>(l, &read, "agents", 2);
    same::<Unit>(l, &read, "units", 1);
    same::<SpatialThing>(l, &read, "locations", 1);
    same::<ResourceSpecification>(l, &read, "resourceSpecifications", 1);
    // The concurrent edit: JS's winner is Reflow's winner (Automerge's deterministic rule).
    let note = l.get::<Agent>(&"bo".into()).expect("bo").note;
    let note = note.as_deref().expect("a note");
    assert!(note == "stall 4" || note == "apples on Saturdays", "{note}");
    assert_eq!(read["objects"]["agents"]["bo"]["note"], note);
    assert!(read["objects"]["resources"]["bo-apples"].is_object());
}
