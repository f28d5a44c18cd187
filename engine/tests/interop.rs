//! ValueFlows JSON-LD import and export (`reflow::interop`, docs/interop.md): every example
//! the spec publishes imports, re-imports change nothing, exports round-trip as RDF graphs
//! (the whole ledger and one resource's trace), bad files are refused whole with the node and
//! field named, and imported events are recorded only as admission allows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use reflow::interop::rdf::Graph;
use reflow::interop::{self, ImportError, ImportOptions, ImportReport, OM2};
use reflow::{
    Action, ActorId, Agent, DeviceKey, EconomicEvent, EventFilter, Id, Ledger, Replica,
    ResourceDescription, ResourceFilter, Role, Unit,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/valueflows")
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonld"))
        .collect();
    files.sort();
    files
}

fn ledger() -> Ledger {
    Ledger::new_network("interop", ActorId::from([7u8; 16])).expect("ledger")
}

fn opts(create_missing: bool) -> ImportOptions {
    ImportOptions {
        create_missing,
        source: "test.jsonld".into(),
    }
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).expect(name)
}

fn graph(doc: &serde_json::Value) -> Graph {
    Graph::from_document(doc).expect("a JSON-LD graph")
}

/// Export `l`, import that into an empty ledger, export again: the same graph.
fn round_trip(l: &Ledger, what: &str) -> Result<(), String> {
    let first = interop::export(l);
    let mut b = ledger();
    interop::import(&mut b, &first.to_string(), &opts(false))
        .map_err(|e| format!("{what}: the export does not import: {e}"))?;
    let second = interop::export(&b);
    let (g1, g2) = (graph(&first), graph(&second));
    let (only1, only2) = g1.difference(&g2);
    if only1.is_empty() && only2.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what}: graphs differ\nonly in the first export: {only1:#?}\nonly in the second: {only2:#?}"
        ))
    }
}

fn assert_round_trip(l: &Ledger, what: &str) {
    if let Err(e) = round_trip(l, what) {
        panic!("{e}");
    }
}

#[test]
fn every_spec_example_imports_reimports_and_round_trips() {
    let files = examples();
    assert_eq!(files.len(), 30, "the 30 published examples");
    let mut failures = Vec::new();
    for f in &files {
        let name = f.file_name().expect("name").to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).expect("read");
        let mut l = ledger();
        let report = match interop::import(&mut l, &text, &opts(true)) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        assert!(
            !report.created.is_empty() || report.events > 0,
            "{name}: nothing imported: {report}"
        );
        // Re-importing changes nothing.
        let heads = l.heads();
        let again = interop::import(&mut l, &text, &opts(true))
            .unwrap_or_else(|e| panic!("{name}: re-import refused: {e}"));
        assert_eq!(l.heads(), heads, "{name}: a re-import changed the ledger");
        assert_eq!(again.events, 0, "{name}: {again}");
        assert!(again.created.is_empty(), "{name}: {again}");
        assert!(again.unchanged > 0, "{name}: {again}");
        if let Err(e) = round_trip(&l, &name) {
            failures.push(e);
        }
    }
    // Known not to import or round-trip yet (docs/interop.md, "Not yet"): each is listed
    // with why, and must still fail, so that a fix updates this list.
    let known: [(&str, &str); 0] = [];
    let mut unexpected = Vec::new();
    for (prefix, why) in known {
        match failures.iter().position(|f| f.starts_with(prefix)) {
            Some(i) => {
                failures.remove(i);
            }
            None => unexpected.push(format!("{prefix} now passes ({why}): update the list")),
        }
    }
    failures.extend(unexpected);
    assert!(
        failures.is_empty(),
        "{} examples fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn counts(r: &ImportReport) -> BTreeMap<&str, usize> {
    r.created.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

#[test]
fn agents_and_relationships_example() {
    let mut l = ledger();
    let r = interop::import(
        &mut l,
        &read("ex-agent--00-agents-and-agent-relationships.jsonld"),
        &opts(true),
    )
    .expect("imports");
    let c = counts(&r);
    assert_eq!(c.get("Person"), Some(&2), "{r}");
    assert_eq!(
        c.get("SpatialThing"),
        Some(&1),
        "the primary location, created: {r}"
    );
    assert_eq!(c.get("Organization"), Some(&2), "{r}");
    assert_eq!(c.get("AgentRelationshipRole"), Some(&3), "{r}");
    assert_eq!(c.get("AgentRelationship"), Some(&3), "{r}");
    let alice = l
        .get::<Agent>(&Id::from("https://alice.example/"))
        .expect("alice");
    assert_eq!(alice.name, "Alice");
    // `image` is not modelled: kept with the agent, and exported again.
    let image = alice
        .other_properties
        .get("https://w3id.org/valueflows/ont/vf#image")
        .expect("image kept");
    assert_eq!(
        image,
        &serde_json::json!([{"@value": "https://alice.example/avatar.png"}])
    );
    assert!(
        r.kept_properties
            .contains_key("https://w3id.org/valueflows/ont/vf#image"),
        "{r}"
    );
    let doc = interop::export(&l);
    assert!(doc.to_string().contains("avatar.png"));
}

#[test]
fn exchange_with_snapshots_gets_opening_balances() {
    // Alice's and Bob's wallets are described before (540, 480) and after (440, 580) a
    // transfer of 100: no event creates them, so each gets an opening balance, and the
    // quantities Reflow derives equal the file's "after" snapshot.
    let mut l = ledger();
    let r =
        interop::import(&mut l, &read("ex-exchange--02-2.jsonld"), &opts(true)).expect("imports");
    assert_eq!(r.opening_balances.len(), 2, "{r}");
    assert_eq!(r.events, 3, "two opening balances and the transfer: {r}");
    let q = |id: &str| {
        l.resource(&Id::from(id))
            .expect(id)
            .accounting_quantity
            .has_numerical_value
            .to_string()
    };
    assert_eq!(
        q("https://faircoin.example/b75d8f6a-e2df-4e52-b36d-1a22a66f4ead"),
        "440"
    );
    assert_eq!(
        q("https://faircoin.example/3be5259d-10f0-431c-9fec-9c0c15a461d3"),
        "580"
    );
    // The agents the transfer names are not in the file: created on request only.
    let mut m = ledger();
    let e = interop::import(&mut m, &read("ex-exchange--02-2.jsonld"), &opts(false))
        .expect_err("refused without --create-missing");
    let text = e.to_string();
    assert!(text.contains("https://alice.example"), "{text}");
    assert!(text.contains("--create-missing"), "{text}");
    assert_eq!(m.event_count(), 0);
    // With it, the created agents are listed.
    assert!(
        r.created_missing
            .iter()
            .any(|x| x == "Person https://alice.example"),
        "{r}"
    );
}

#[test]
fn a_payment_out_of_an_undescribed_account_tracks_only_the_payer() {
    // ex-exchange--01: Carol pays 5 out of her bank account, which the file names but does
    // not describe, to the store, with no to-resource. Refused without --create-missing;
    // with it, the account is tracked from zero (an opening balance of 0, then -5: its
    // balance before the file is unknown), and the store's side is a resource the payment
    // creates holding the 5 received; the account stays Carol's (no whole handover).
    let file = read("ex-exchange--01-simple-retail-exchange-without-commitments.jsonld");
    let mut m = ledger();
    let e = interop::import(&mut m, &file, &opts(false)).expect_err("refused");
    assert!(
        e.to_string()
            .contains("https://carol.example/e56fd654-7b94-4d96-8e60-de39e08329a7"),
        "{e}"
    );
    assert_eq!(m.event_count(), 0);

    let mut l = ledger();
    let r = interop::import(&mut l, &file, &opts(true)).expect("imports");
    let account = Id::from("https://carol.example/e56fd654-7b94-4d96-8e60-de39e08329a7");
    let received =
        Id::from("https://store.example/2342d456-5d6f-46d5-a7ed-3ac7bfd5a86c#toResource");
    let a = l.resource(&account).expect("the account");
    assert_eq!(a.accounting_quantity.has_numerical_value.to_string(), "-5");
    assert_eq!(a.onhand_quantity.has_numerical_value.to_string(), "-5");
    assert_eq!(
        a.primary_accountable.as_ref().map(Id::as_str),
        Some("https://carol.example/"),
        "the account did not change hands"
    );
    assert_eq!(
        a.custodian.as_ref().map(Id::as_str),
        Some("https://carol.example/")
    );
    let s = l.resource(&received).expect("the store's side");
    assert_eq!(s.accounting_quantity.has_numerical_value.to_string(), "5");
    assert_eq!(
        s.primary_accountable.as_ref().map(Id::as_str),
        Some("https://store.example/")
    );
    assert_eq!(
        s.conforms_to.as_ref().map(Id::as_str),
        Some("http://www.wikidata.org/entity/Q4917")
    );
    let payment = l
        .events(&EventFilter::default())
        .into_iter()
        .find(|e| {
            e.imported_from.as_deref()
                == Some("https://store.example/2342d456-5d6f-46d5-a7ed-3ac7bfd5a86c")
        })
        .expect("the payment");
    assert_eq!(payment.to_resource_inventoried_as.as_ref(), Some(&received));
    assert_eq!(payment.created_resource.as_ref(), Some(&received));
    for listed in [account.as_str(), received.as_str()] {
        assert!(
            r.created_missing.iter().any(|c| c.contains(listed)),
            "{listed} not listed: {r}"
        );
    }
    assert!(
        r.opening_balances
            .iter()
            .any(|o| o.starts_with(account.as_str())),
        "{r}"
    );
    assert!(r.notes.iter().any(|n| n.contains("#toResource")), "{r}");
    // The unknown opening balance shows as what it is: the account went below zero.
    assert!(
        l.conflicts().iter().any(|c| matches!(
            c,
            reflow::Conflict::Overdraw { resource, .. } if resource == &account
        )),
        "{:?}",
        l.conflicts()
    );
    assert_round_trip(&l, "ex-exchange--01");
}

#[test]
fn standard_units_and_nested_nodes() {
    let mut l = ledger();
    let r = interop::import(
        &mut l,
        &read("ex-production--00-simple-manufacturing-process.jsonld"),
        &opts(true),
    )
    .expect("imports");
    assert!(!r.standard_units.is_empty(), "{r}");
    for u in &r.standard_units {
        let unit = l.get::<Unit>(&Id::from(u.as_str())).expect("unit");
        assert!(u.starts_with(OM2), "{u}");
        assert!(!unit.symbol.is_empty());
    }
    // Hand-checked: 130 sheets of plywood before, 3 consumed, 127 after (the file's own
    // "after" snapshot).
    let plywood = l
        .resource(&Id::from(
            "https://manufacturing.example/3129ca8b-fcda-45be-bbda-294dc924d3b9",
        ))
        .expect("plywood");
    assert_eq!(
        plywood.accounting_quantity.has_numerical_value.to_string(),
        "127"
    );
    let events = l.events(&EventFilter::default());
    assert!(events.iter().any(|e| e.input_of.is_some()), "{events:#?}");
    // The nested node under the consume event's `hasInput` (not a VF property of events)
    // became its own event, and the link is kept.
    assert!(events.iter().any(|e| e
        .other_properties
        .contains_key("https://w3id.org/valueflows/ont/vf#hasInput")));
    for e in &events {
        assert_eq!(e.import_source.as_deref(), Some("test.jsonld"));
        assert!(e.imported_from.is_some());
    }
}

#[test]
fn a_claim_and_its_triggering_event() {
    let mut l = ledger();
    let r = interop::import(
        &mut l,
        &read("ex-exchange--05-claim-simple.jsonld"),
        &opts(true),
    )
    .expect("imports");
    assert_eq!(counts(&r).get("Claim"), Some(&1), "{r}");
    let claim = &l.list::<reflow::Claim>()[0];
    let trigger = claim.triggered_by.as_ref().expect("triggeredBy");
    assert!(
        l.event(trigger).is_some(),
        "triggeredBy names the recorded event"
    );
}

#[test]
fn compact_iris_and_om_units_by_iri() {
    let text = r#"{"@context": {"vf": "https://w3id.org/valueflows/ont/vf#",
        "om2": "http://www.ontology-of-units-of-measure.org/resource/om-2/",
        "ex": "https://example.org/"},
      "@graph": [
        {"@id": "ex:ana", "@type": "vf:Person", "vf:name": "Ana"},
        {"@id": "ex:e1", "@type": "vf:EconomicEvent", "vf:action": {"@id": "vf:raise"},
         "vf:provider": {"@id": "ex:ana"}, "vf:receiver": {"@id": "ex:ana"},
         "vf:resourceInventoriedAs": {"@id": "ex:flour"},
         "vf:resourceQuantity": {"om2:hasUnit": {"@id": "om2:kilogram"}, "om2:hasNumericalValue": 12.5}},
        {"@id": "ex:flour", "@type": "vf:EconomicResource", "vf:name": "Flour",
         "ex:organic": true}
      ]}"#;
    let mut l = ledger();
    let r = interop::import(&mut l, text, &opts(false)).expect("imports");
    assert_eq!(r.standard_units, vec![format!("{OM2}kilogram")]);
    let flour = l
        .resource(&Id::from("https://example.org/flour"))
        .expect("flour");
    assert_eq!(
        flour.onhand_quantity.has_numerical_value.to_string(),
        "12.5"
    );
    assert_eq!(
        flour.onhand_quantity.has_unit.as_str(),
        format!("{OM2}kilogram")
    );
    let d = l
        .get::<ResourceDescription>(&Id::from("https://example.org/flour"))
        .expect("description");
    assert_eq!(
        d.other_properties.get("https://example.org/organic"),
        Some(&serde_json::json!([{"@value": true}]))
    );
    assert_round_trip(&l, "compact IRIs");
}

#[test]
fn bad_files_are_refused_whole_naming_node_and_field() {
    let mut l = ledger();
    l.create(Agent::person("ana", "Ana")).expect("ana");
    let before = l.heads();
    let cases: [(&str, &[&str]); 6] = [
        ("{ not json", &["not JSON"]),
        (
            r#"{"@graph": [{"@id": "x", "@type": "Unit"}]}"#,
            &["@context"],
        ),
        (
            r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
                {"@id": "e1", "@type": "EconomicEvent", "action": "fly", "provider": "ana", "receiver": "ana"}]}"#,
            &["node e1, field action", "fly"],
        ),
        (
            r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
                {"@id": "e1", "@type": "EconomicEvent", "action": "work", "provider": "ana", "receiver": "ana",
                 "effortQuantity": {"hasUnit": "hour", "hasNumericalValue": "lots"}}]}"#,
            &["node e1, field effortQuantity", "lots"],
        ),
        (
            r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
                {"@id": "p", "@type": "Person", "name": "P"},
                {"@id": "e2", "@type": "EconomicEvent", "action": "work", "provider": "p", "receiver": "ana",
                 "effortQuantity": {"hasUnit": "hour", "hasNumericalValue": -1}}]}"#,
            &["negative"],
        ),
        (
            r#"{"@context": "https://example.org/context.jsonld", "@graph": []}"#,
            &["remote context"],
        ),
    ];
    for (text, needles) in cases {
        let e = interop::import(&mut l, text, &opts(true)).expect_err(text);
        let msg = e.to_string();
        for n in needles {
            assert!(msg.contains(n), "{n:?} not in {msg}");
        }
        assert_eq!(l.heads(), before, "nothing written for {text}");
    }
    // A reference to an undefined agent, without --create-missing: the event and field named.
    let text = r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
        {"@id": "e2", "@type": "EconomicEvent", "action": "work", "provider": "ghost", "receiver": "ana",
         "effortQuantity": {"hasUnit": "hour", "hasNumericalValue": 1}}]}"#;
    let e = interop::import(&mut l, text, &opts(false)).expect_err("ghost");
    let ImportError::Refused(problems) = &e else {
        panic!("{e}");
    };
    assert_eq!(problems.len(), 1, "{e}");
    assert_eq!(problems[0].node, "e2");
    assert_eq!(problems[0].field.as_deref(), Some("agent"));
    assert!(problems[0].message.contains("Person ghost"), "{e}");
    assert_eq!(l.heads(), before);
    // With it: imported, the agent listed.
    let r = interop::import(&mut l, text, &opts(true)).expect("with --create-missing");
    assert_eq!(r.created_missing, vec!["Person ghost".to_string()]);
    assert_eq!(r.standard_units, vec![format!("{OM2}hour")]);
}

#[test]
fn reimport_of_a_changed_file_is_refused() {
    let text = r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
        {"@id": "urn:x:ana", "@type": "Person", "name": "Ana"},
        {"@id": "urn:x:e1", "@type": "EconomicEvent", "action": "work", "provider": "urn:x:ana",
         "receiver": "urn:x:ana", "effortQuantity": {"hasUnit": "hour", "hasNumericalValue": 2}}]}"#;
    let mut l = ledger();
    interop::import(&mut l, text, &opts(false)).expect("imports");
    let before = l.heads();
    let changed = text.replace("\"hasNumericalValue\": 2", "\"hasNumericalValue\": 3");
    let e = interop::import(&mut l, &changed, &opts(false)).expect_err("changed event");
    assert!(e.to_string().contains("node urn:x:e1"), "{e}");
    assert!(e.to_string().contains("other content"), "{e}");
    let renamed = text.replace("\"Ana\"", "\"Anna\"");
    let e = interop::import(&mut l, &renamed, &opts(false)).expect_err("changed agent");
    assert!(e.to_string().contains("node urn:x:ana"), "{e}");
    assert_eq!(l.heads(), before);
}

/// A ledger with a small repair story: flour raised, bread baked from it, sold.
fn bakery() -> Ledger {
    let mut l = ledger();
    l.create(Unit::new("kg", "kilogram", "kg")).expect("kg");
    l.create(Agent::person("ana", "Ana")).expect("ana");
    l.create(Agent::organization("bakery", "Bakery"))
        .expect("bakery");
    l.create(reflow::Process::new("bake", "Baking", None))
        .expect("process");
    l.record_event(
        EconomicEvent::new(Action::Raise, "ana", "ana")
            .quantity(10, "kg")
            .creating(ResourceDescription::new("flour", "Flour")),
    )
    .expect("raise");
    l.record_event(
        EconomicEvent::new(Action::Consume, "ana", "ana")
            .resource("flour")
            .quantity(4, "kg")
            .input_of("bake"),
    )
    .expect("consume");
    l.record_event(
        EconomicEvent::new(Action::Produce, "ana", "ana")
            .quantity(5, "kg")
            .output_of("bake")
            .creating(ResourceDescription::new("bread", "Bread")),
    )
    .expect("produce");
    l.record_event(
        EconomicEvent::new(Action::Transfer, "ana", "bakery")
            .resource("bread")
            .quantity(2, "kg")
            .creating(ResourceDescription::new("sold-bread", "Bread, sold")),
    )
    .expect("transfer");
    let wrong = l
        .record_event(
            EconomicEvent::new(Action::Consume, "ana", "ana")
                .resource("bread")
                .quantity(3, "kg"),
        )
        .expect("consume");
    l.record_event(
        EconomicEvent::new(Action::Consume, "ana", "ana")
            .resource("bread")
            .quantity(1, "kg")
            .correcting(wrong),
    )
    .expect("correction");
    l
}

#[test]
fn the_whole_ledger_round_trips() {
    let l = bakery();
    assert_round_trip(&l, "bakery");
    // Reflow's own export is read exactly: nothing kept as unmodelled, no notes.
    let mut copy = ledger();
    let r = interop::import(&mut copy, &interop::export(&l).to_string(), &opts(false))
        .expect("imports");
    assert!(r.kept_properties.is_empty() && r.notes.is_empty(), "{r}");
    assert!(
        r.opening_balances.is_empty() && r.created_missing.is_empty(),
        "{r}"
    );
    for e in copy.events(&EventFilter {
        include_corrected: true,
        ..EventFilter::default()
    }) {
        assert!(e.other_properties.is_empty(), "{e:?}");
    }
    // And re-importing its own export into it changes nothing.
    let mut l = l;
    let heads = l.heads();
    let own = interop::export(&l).to_string();
    let r = interop::import(&mut l, &own, &opts(false)).expect("own export");
    assert_eq!(l.heads(), heads, "{r}");
    // The graph comparison sees a changed quantity.
    let a = interop::export(&l);
    let mut text = a.to_string();
    text = text.replacen(
        "\"hasNumericalValue\":\"4\"",
        "\"hasNumericalValue\":\"4.5\"",
        1,
    );
    let b: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_ne!(
        graph(&a),
        graph(&b),
        "a changed quantity is a different graph"
    );
}

/// `doc` as exports wrote it before Reflow's own terms had their namespace: those terms
/// under the ValueFlows `@vocab` (the reference-valued ones still `"@type": "@id"`).
fn old_context(doc: &serde_json::Value) -> serde_json::Value {
    let mut doc = doc.clone();
    let ctx = doc["@context"].as_object_mut().expect("a context");
    for t in interop::REFLOW_TERMS {
        let d = ctx.remove(t).expect("the term is defined");
        assert_eq!(
            d["@id"],
            serde_json::json!(format!("{}{t}", interop::REFLOW_VOCAB))
        );
        if d.get("@type").is_some() {
            ctx.insert(t.into(), serde_json::json!({"@type": "@id"}));
        }
    }
    doc
}

/// The ValueFlows terms and classes `vf-1.0.ttl` defines (its `vf:` subjects).
fn vf_terms() -> BTreeSet<String> {
    read("vf-1.0.ttl")
        .lines()
        .filter_map(|l| l.strip_prefix("vf:"))
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .next()
        })
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every IRI in the ValueFlows namespace that a graph uses (as a predicate, a class or an
/// object: actions are `vf:` individuals), by its term.
fn vf_iris(g: &Graph) -> BTreeSet<String> {
    let vf = format!("<{}", interop::VF);
    g.triples
        .iter()
        .flat_map(|(_, p, o)| [p, o])
        .filter_map(|t| t.strip_prefix(vf.as_str()))
        .map(|t| t.trim_end_matches('>').to_string())
        .collect()
}

#[test]
fn exports_use_only_terms_the_ontology_defines() {
    let defined = vf_terms();
    assert!(
        defined.len() > 150,
        "read vf-1.0.ttl: {} terms",
        defined.len()
    );
    for t in ["EconomicEvent", "provider", "hasNumericalValue", "produce"] {
        assert!(defined.contains(t), "{t}");
    }
    // Reflow's own terms are ones the ontology does not define.
    for t in interop::REFLOW_TERMS {
        assert!(!defined.contains(t), "{t} is a ValueFlows term now");
    }
    // Each ledger, with the properties its file gave that the model does not have: kept and
    // exported under the file's own IRI (`ex-exchange--03` misspells `resourceconformsTo`),
    // which is what the file said, not a term of Reflow's.
    let mut ledgers = vec![("bakery".to_string(), bakery(), BTreeSet::new())];
    for f in examples() {
        let mut l = ledger();
        let text = std::fs::read_to_string(&f).expect("read");
        let r = interop::import(&mut l, &text, &opts(true)).expect("imports");
        let kept: BTreeSet<String> = r.kept_properties.keys().cloned().collect();
        ledgers.push((f.display().to_string(), l, kept));
    }
    let mut own_used = BTreeSet::new();
    for (name, l, kept) in &ledgers {
        let g = graph(&interop::export(l));
        let undefined: Vec<String> = vf_iris(&g)
            .into_iter()
            .filter(|t| !defined.contains(t) && !kept.contains(&format!("{}{t}", interop::VF)))
            .collect();
        assert!(
            undefined.is_empty(),
            "{name}: the export uses vf: terms vf-1.0.ttl does not define: {undefined:?}"
        );
        let own = format!("<{}", interop::REFLOW_VOCAB);
        for (_, p, o) in &g.triples {
            for t in [p, o] {
                if let Some(t) = t.strip_prefix(own.as_str()) {
                    own_used.insert(t.trim_end_matches('>').to_string());
                }
            }
        }
    }
    // What the exports write in Reflow's namespace is among its declared terms, and the
    // terms are used (the examples have agent relationships, the bakery makes resources).
    for t in &own_used {
        assert!(interop::REFLOW_TERMS.contains(&t.as_str()), "{t}");
    }
    for t in [
        "agentKind",
        "createdResource",
        "AgentRelationship",
        "subject",
    ] {
        assert!(own_used.contains(t), "{t} never exported: {own_used:?}");
    }
}

#[test]
fn an_export_with_reflow_terms_under_vf_still_imports_alike() {
    // Exports before Reflow's namespace wrote its terms under ValueFlows': they import into
    // the same ledger, which exports the same graph as today.
    let mut l = ledger();
    interop::import(
        &mut l,
        &read("ex-agent--00-agents-and-agent-relationships.jsonld"),
        &opts(true),
    )
    .expect("imports");
    for (what, l) in [("agents", l), ("bakery", bakery())] {
        let doc = interop::export(&l);
        let old = old_context(&doc);
        assert_ne!(
            graph(&old),
            graph(&doc),
            "{what}: the old form is another graph"
        );
        // Read as today's form is: the same fields, nothing more kept as unmodelled.
        let mut a = ledger();
        let today = interop::import(&mut a, &doc.to_string(), &opts(false)).expect("imports");
        let mut b = ledger();
        let r = interop::import(&mut b, &old.to_string(), &opts(false))
            .unwrap_or_else(|e| panic!("{what}: the old form imports: {e}"));
        assert_eq!(r.kept_properties, today.kept_properties, "{what}: {r}");
        assert_eq!(r.created, today.created, "{what}: {r}");
        let (g1, g2) = (graph(&doc), graph(&interop::export(&b)));
        let (only1, only2) = g1.difference(&g2);
        assert!(
            only1.is_empty() && only2.is_empty(),
            "{what}: {only1:#?}\n{only2:#?}"
        );
    }
}

#[test]
fn an_export_of_the_old_form_with_a_base_reads_alike() {
    // Exports before absolute IRIs wrote `"@base": "urn:reflow:"` and relative ids; the
    // importer still reads them as they meant: the same ledger, the same graph again.
    let l = bakery();
    let doc = interop::export(&l);
    let old = old_context(&doc).to_string().replace("\"urn:reflow:", "\"");
    assert!(!old.contains("urn:reflow:"), "{old}");
    let mut old: serde_json::Value = serde_json::from_str(&old).expect("json");
    old["@context"]["@base"] = serde_json::json!("urn:reflow:");
    let mut b = ledger();
    interop::import(&mut b, &old.to_string(), &opts(false)).expect("the old form imports");
    let (g1, g2) = (graph(&doc), graph(&interop::export(&b)));
    let (only1, only2) = g1.difference(&g2);
    assert!(
        only1.is_empty() && only2.is_empty(),
        "{only1:#?}\n{only2:#?}"
    );
}

#[test]
fn one_resources_trace_round_trips() {
    let l = bakery();
    let first = interop::export_trace(&l, &Id::from("bread")).expect("trace");
    let g = first["@graph"].as_array().expect("graph");
    let events = g.iter().filter(|n| n["@type"] == "EconomicEvent").count();
    assert!(events >= 3, "raise, consume, produce: {first:#}");
    let mut b = ledger();
    interop::import(&mut b, &first.to_string(), &opts(false)).expect("the subset imports");
    let second = interop::export_trace(&b, &Id::from("bread")).expect("trace again");
    let (g1, g2) = (graph(&first), graph(&second));
    let (only1, only2) = g1.difference(&g2);
    assert!(
        only1.is_empty() && only2.is_empty(),
        "only in the first: {only1:#?}\nonly in the second: {only2:#?}"
    );
    // The bread's quantity in the copy comes from the subset's own events: produced 5,
    // 2 sold (the consumption is not part of the bread's provenance).
    let bread = b.resource(&Id::from("bread")).expect("bread");
    assert_eq!(
        bread.accounting_quantity.has_numerical_value.to_string(),
        "3"
    );
    let everything = ResourceFilter {
        include_empty: true,
        ..ResourceFilter::default()
    };
    assert!(b.inventory(&everything).len() >= 2);
}

#[test]
fn imported_events_naming_others_need_an_admin() {
    // A network with an admin (acting for `ana`) and a member (acting for `bo`).
    let admin_key = DeviceKey::generate().expect("key");
    let member_key = DeviceKey::generate().expect("key");
    let (mut admin, mut history) =
        Replica::create_network("coop", admin_key, Agent::person("ana", "Ana")).expect("network");
    let (_, c) = admin
        .write(|l| l.create(Agent::person("bo", "Bo")))
        .expect("bo");
    history.extend(c);
    history.extend(
        admin
            .add_member(member_key.id(), Role::Member, Id::from("bo"))
            .expect("member"),
    );
    let (mut member, _) = Replica::join(admin.network(), member_key, history).expect("join");
    let text = r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
        {"@id": "urn:x:e1", "@type": "EconomicEvent", "action": "work", "provider": "ana", "receiver": "ana",
         "effortQuantity": {"hasUnit": "hour", "hasNumericalValue": 2}}]}"#;
    let before = member.ledger().heads();
    let e = interop::import_into(&mut member, text, &opts(false)).expect_err("not bo's event");
    assert!(
        matches!(e, ImportError::NotAllowed { ref node, .. } if node == "urn:x:e1"),
        "{e}"
    );
    assert_eq!(member.ledger().heads(), before, "nothing written");
    // The member's own events import; the admin imports anyone's.
    let own = text.replace("\"ana\"", "\"bo\"");
    interop::import_into(&mut member, &own, &opts(false)).expect("bo's own event");
    let r = interop::import_into(&mut admin, text, &opts(false)).expect("the admin imports");
    assert_eq!(r.events, 1);
    // A member creating another agent (--create-missing) is refused too.
    let ghost = text
        .replace(
            "\"provider\": \"ana\", \"receiver\": \"ana\"",
            "\"provider\": \"bo\", \"receiver\": \"ghost\"",
        )
        .replace("urn:x:e1", "urn:x:e9");
    let e = interop::import_into(&mut member, &ghost, &opts(true)).expect_err("ghost agent");
    assert!(e.to_string().contains("ghost"), "{e}");
}

#[test]
fn a_member_the_rules_grant_imports_events_naming_others() {
    // An admin (acting for `ana`), a member `bo` and a member `clerk`.
    let admin_key = DeviceKey::generate().expect("key");
    let clerk_key = DeviceKey::generate().expect("key");
    let (mut admin, mut history) =
        Replica::create_network("coop", admin_key, Agent::person("ana", "Ana")).expect("network");
    let (_, c) = admin
        .write(|l| {
            l.create(Agent::person("bo", "Bo"))?;
            l.create(Agent::person("clerk", "Clerk"))
        })
        .expect("agents");
    history.extend(c);
    history.extend(
        admin
            .add_member(clerk_key.id(), Role::Member, Id::from("clerk"))
            .expect("member"),
    );
    let (mut clerk, _) = Replica::join(admin.network(), clerk_key, history).expect("join");
    let text = r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
        {"@id": "urn:x:e1", "@type": "EconomicEvent", "action": "work", "provider": "ana", "receiver": "bo",
         "effortQuantity": {"hasUnit": "hour", "hasNumericalValue": 2}}]}"#;
    // Without a grant: refused, nothing written.
    let before = clerk.ledger().heads();
    let e = interop::import_into(&mut clerk, text, &opts(false)).expect_err("not the clerk's");
    assert!(
        matches!(e, ImportError::NotAllowed { ref node, .. } if node == "urn:x:e1"),
        "{e}"
    );
    assert_eq!(clerk.ledger().heads(), before, "nothing written");
    // The admins grant the clerk's agent recording for others.
    let mut rules = reflow::rules::RuleSet::new("Coop", 1, Vec::new());
    rules.record_for_others.agents = vec![Id::from("clerk")];
    let c = admin.set_rules(rules).expect("publish");
    clerk.receive(c).expect("the clerk gets the rules");
    let report = interop::import_into(&mut clerk, text, &opts(false)).expect("granted");
    assert_eq!(report.events, 1);
    // The admin admits what the clerk wrote (as every replica judges it).
    let missing = clerk.signed_changes_since(&admin.ledger().heads());
    assert!(!missing.is_empty());
    let receipt = admin.receive(missing).expect("receive");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    let events = admin.ledger().events(&EventFilter::default());
    assert!(
        events
            .iter()
            .any(|e| e.provider == Some(Id::from("ana")) && e.receiver == Some(Id::from("bo"))),
        "the imported event on the admin's replica"
    );
    // Describing another agent stays an admin's, grant or not.
    let ghost = text
        .replace("\"receiver\": \"bo\"", "\"receiver\": \"ghost\"")
        .replace("urn:x:e1", "urn:x:e9");
    let e = interop::import_into(&mut clerk, &ghost, &opts(true)).expect_err("ghost agent");
    assert!(e.to_string().contains("ghost"), "{e}");
}

#[test]
fn a_planned_flow_names_a_resource_a_later_event_makes_or_none_has() {
    // c1 names the flour a later event of the file raises: linked, created after it. c2
    // names a resource nothing has (a future one): the link is kept as written, reported,
    // and exported again; the file still round-trips.
    let text = r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
        {"@id": "urn:x:ana", "@type": "Person", "name": "Ana"},
        {"@id": "urn:x:c1", "@type": "Commitment", "action": "consume", "provider": "urn:x:ana",
         "receiver": "urn:x:ana", "resourceInventoriedAs": "urn:x:flour",
         "resourceQuantity": {"hasUnit": "kilogram", "hasNumericalValue": 2}},
        {"@id": "urn:x:c2", "@type": "Commitment", "action": "produce", "provider": "urn:x:ana",
         "receiver": "urn:x:ana", "resourceInventoriedAs": "urn:x:bread",
         "resourceQuantity": {"hasUnit": "kilogram", "hasNumericalValue": 1}},
        {"@id": "urn:x:e1", "@type": "EconomicEvent", "action": "raise", "provider": "urn:x:ana",
         "receiver": "urn:x:ana", "resourceInventoriedAs": "urn:x:flour",
         "resourceQuantity": {"hasUnit": "kilogram", "hasNumericalValue": 5}},
        {"@id": "urn:x:flour", "@type": "EconomicResource", "name": "Flour"}]}"#;
    let mut l = ledger();
    let r = interop::import(&mut l, text, &opts(false)).expect("imports");
    let c1 = l
        .get::<reflow::Commitment>(&Id::from("urn:x:c1"))
        .expect("c1");
    assert_eq!(c1.resource_inventoried_as, Some(Id::from("urn:x:flour")));
    let c2 = l
        .get::<reflow::Commitment>(&Id::from("urn:x:c2"))
        .expect("c2");
    assert_eq!(c2.resource_inventoried_as, None);
    assert_eq!(
        c2.other_properties
            .get("https://w3id.org/valueflows/ont/vf#resourceInventoriedAs"),
        Some(&serde_json::json!([{"@id": "urn:x:bread"}]))
    );
    assert!(
        r.notes.iter().any(|n| n.contains("urn:x:bread")),
        "reported: {r}"
    );
    assert!(
        l.resource(&Id::from("urn:x:bread")).is_none(),
        "not invented"
    );
    assert_round_trip(&l, "planned flows");
}

#[test]
fn a_recipe_process_named_but_not_described_is_created_on_request() {
    let text = r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
        {"@id": "urn:x:r", "@type": "Recipe", "name": "Bread",
         "recipeIncludes": [{"@id": "urn:x:knead"}, {"@id": "urn:x:bake"}]},
        {"@id": "urn:x:knead", "@type": "RecipeProcess", "name": "Knead"}]}"#;
    let mut l = ledger();
    let e = interop::import(&mut l, text, &opts(false)).expect_err("urn:x:bake is missing");
    let msg = e.to_string();
    assert!(
        msg.contains("node urn:x:r") && msg.contains("RecipeProcess urn:x:bake"),
        "{msg}"
    );
    assert!(msg.contains("--create-missing"), "{msg}");
    let r = interop::import(&mut l, text, &opts(true)).expect("with --create-missing");
    assert_eq!(
        r.created_missing,
        vec!["RecipeProcess urn:x:bake".to_string()]
    );
    let bake = l
        .get::<reflow::RecipeProcess>(&Id::from("urn:x:bake"))
        .expect("created");
    assert_eq!(bake.name, "bake");
    assert_round_trip(&l, "recipe");
}

/// Whether `iri` is an absolute URI by RFC 3986's characters: a scheme, then only
/// unreserved and reserved characters and `%` followed by two hex digits (an IRI may add
/// non-ASCII letters; the export escapes them, so a URI check is the stricter one).
fn is_uri(iri: &str) -> bool {
    let Some((scheme, rest)) = iri.split_once(':') else {
        return false;
    };
    let mut s = scheme.chars();
    if !s.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !s.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return false;
    }
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
            continue;
        }
        let ok = c.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&c);
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

#[test]
fn exported_ids_are_iris_and_read_back() {
    // A relationship's id is its JSON array [subject, relationship, object]; an agent's id
    // may hold a space or a letter outside ASCII. Written as urn:reflow: and the id, each is
    // percent-encoded (RFC 3986) and decoded again on import.
    let mut l = ledger();
    l.create(Agent::person("Ana María", "Ana")).expect("ana");
    l.create(Agent::organization("https://coop.example/", "Coop"))
        .expect("coop");
    l.create(reflow::AgentRelationshipRole {
        id: Id::from("member"),
        role_label: "is member of".into(),
        inverse_role_label: None,
        note: None,
        other_properties: Default::default(),
    })
    .expect("role");
    let rid = l
        .create(reflow::AgentRelationship::new(
            "Ana María",
            "member",
            "https://coop.example/",
        ))
        .expect("relationship");
    assert!(rid.as_str().starts_with('['), "{rid}");
    l.create(Unit::new("kg", "kilogram", "kg")).expect("kg");
    l.record_event(
        EconomicEvent::new(Action::Raise, "Ana María", "Ana María")
            .quantity(3, "kg")
            .creating(ResourceDescription::new("50% wool", "Wool")),
    )
    .expect("raise");
    let doc = interop::export(&l);
    let g = graph(&doc);
    assert!(!g.triples.is_empty());
    for (s, _, o) in &g.triples {
        for t in [s, o] {
            if let Some(iri) = t.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
                assert!(is_uri(iri), "not an IRI: {iri}");
            }
        }
    }
    let rel = doc["@graph"]
        .as_array()
        .expect("graph")
        .iter()
        .find(|n| n["@type"] == "AgentRelationship")
        .expect("the relationship");
    let written = rel["@id"].as_str().expect("@id");
    assert_eq!(
        written,
        "urn:reflow:%5B%22Ana%20Mar%C3%ADa%22,%22member%22,%22https%3A%2F%2Fcoop.example%2F%22%5D"
    );
    // Absolute IRIs, no @base: a stock JSON-LD processor reads the ids as Reflow does.
    assert!(doc["@context"].get("@base").is_none());
    // Read back: the same ids (no owl:sameAs for the relationship), the same graph.
    let mut b = ledger();
    let r = interop::import(&mut b, &doc.to_string(), &opts(false)).expect("imports");
    assert!(r.created_missing.is_empty(), "{r}");
    let back = b
        .get::<reflow::AgentRelationship>(&rid)
        .expect("the relationship, by its own id");
    assert!(back.other_properties.is_empty(), "{back:?}");
    assert_eq!(back.subject, Id::from("Ana María"));
    assert!(b.get::<Agent>(&Id::from("Ana María")).is_some());
    let wool = b.resource(&Id::from("50% wool")).expect("wool");
    assert_eq!(
        wool.accounting_quantity.has_numerical_value.to_string(),
        "3"
    );
    assert_round_trip(&l, "percent-encoded ids");
}
