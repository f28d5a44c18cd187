"""ValueFlows JSON-LD import and export through the Python binding (docs/interop.md): a spec
example imports (with its missing agents created on request and a report), re-importing it
changes nothing, the export reads back into another node's network identically, one
resource's trace exports, and a bad file is refused whole with a typed error naming the node
and the field.

The example is the ValueFlows specification's own (tests/fixtures/valueflows, CC BY-SA 4.0,
see its README). Every node binds 127.0.0.1 only (`loopback=True`).
"""
import asyncio
import json
from pathlib import Path

import pytest

import reflow
from reflow import (
    AgentInput,
    ImportFailed,
    ImportOptionsInput,
    OpenConfig,
    ReflowError,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "valueflows"
EXAMPLE = "ex-production--00-simple-manufacturing-process.jsonld"
VF = "https://w3id.org/valueflows/ont/vf#"
PLYWOOD = "https://manufacturing.example/3129ca8b-fcda-45be-bbda-294dc924d3b9"


def open_node(path):
    return asyncio.run(reflow.open_node(OpenConfig(data_dir=str(path), loopback=True)))


def close(*nodes):
    for node in nodes:
        asyncio.run(node.shutdown())


def events_by_id(doc):
    return {n["@id"]: n for n in doc["@graph"] if n["@type"] == "EconomicEvent"}


def test_a_spec_example_imports_reimports_and_exports(tmp_path):
    text = (EXAMPLES / EXAMPLE).read_text()
    a = open_node(tmp_path / "a")
    b = open_node(tmp_path / "b")
    try:
        net = a.create_network("workshop", AgentInput(id="ana", name="Ana"))
        before = a.heads(net)

        # Without create_missing: refused whole, naming the agent the file does not define.
        with pytest.raises(ImportFailed.Refused) as err:
            a.import_jsonld(net, text, ImportOptionsInput(create_missing=False, source=EXAMPLE))
        problems = err.value.problems
        assert problems, "at least one problem"
        assert any("https://manufacturing.example" in p.detail for p in problems), problems
        assert all(p.node and p.field for p in problems), problems
        assert a.heads(net) == before, "nothing written"

        report = a.import_jsonld(net, text, ImportOptionsInput(create_missing=True, source=EXAMPLE))
        assert report.events >= 4, report.summary
        assert report.created.get("Process") == 1, report.summary
        assert any(m.startswith("Person https://manufacturing.example") for m in report.created_missing)
        assert report.standard_units, report.summary
        assert all(u.startswith("http://www.ontology-of-units-of-measure.org/") for u in report.standard_units)
        assert report.summary.startswith(f"imported {report.events} events")
        # The file's own "after" snapshot: 130 sheets of plywood, 3 consumed.
        plywood = a.resource(net, PLYWOOD)
        assert plywood is not None and plywood.accounting_quantity.value == "127"
        events = a.events(net, reflow.EventFilterInput())
        assert all(e.id for e in events)

        # Importing the same file again changes nothing.
        heads = a.heads(net)
        again = a.import_jsonld(net, text, ImportOptionsInput(create_missing=True, source=EXAMPLE))
        assert again.events == 0 and not again.created and again.unchanged > 0, again.summary
        assert a.heads(net) == heads

        # The export: ValueFlows terms, the file's IRIs as ids, the derived quantity.
        exported = json.loads(a.export_jsonld(net))
        assert exported["@context"]["@vocab"] == VF
        file_events = {
            n["@id"].replace("mfg:", "https://manufacturing.example/")
            for n in json.loads(text)["@graph"]
            for n in [n, *n.get("hasInput", []), *n.get("hasOutput", [])]
            if n["@type"] == "EconomicEvent"
        }
        assert file_events <= set(events_by_id(exported)), "every event of the file, by its IRI"
        resources = {n["@id"]: n for n in exported["@graph"] if n["@type"] == "EconomicResource"}
        assert resources[PLYWOOD]["accountingQuantity"]["hasNumericalValue"] == "127"

        # Read back into another node's network: the same events, the same quantities, and
        # its export imports back into it unchanged.
        net_b = b.create_network("copy", AgentInput(id="bo", name="Bo"))
        copied = b.import_jsonld(net_b, json.dumps(exported), ImportOptionsInput(source="export.jsonld"))
        assert copied.events == len(events_by_id(exported)), copied.summary
        assert not copied.created_missing and not copied.opening_balances, copied.summary
        second = json.loads(b.export_jsonld(net_b))
        first_events, second_events = events_by_id(exported), events_by_id(second)
        assert set(first_events) == set(second_events)
        for iri, node in first_events.items():
            assert node == second_events[iri], iri
        assert b.resource(net_b, PLYWOOD).accounting_quantity.value == "127"
        heads_b = b.heads(net_b)
        b.import_jsonld(net_b, json.dumps(second), ImportOptionsInput(source="again"))
        assert b.heads(net_b) == heads_b

        # One resource's trace, as JSON-LD; an unknown resource is named.
        trace = json.loads(a.export_trace_jsonld(net, PLYWOOD))
        trace_events = events_by_id(trace)
        assert trace_events and set(trace_events) <= set(events_by_id(exported))
        with pytest.raises(ReflowError.NotFound):
            a.export_trace_jsonld(net, "no-such-resource")
    finally:
        close(a, b)


def test_a_bad_file_is_refused_naming_node_and_field(tmp_path):
    a = open_node(tmp_path / "a")
    try:
        net = a.create_network("market", AgentInput(id="ana", name="Ana"))
        before = a.heads(net)
        bad = json.dumps(
            {
                "@context": {"@vocab": VF},
                "@graph": [
                    {"@id": "urn:x:e1", "@type": "EconomicEvent", "action": "fly",
                     "provider": "ana", "receiver": "ana"},
                    {"@id": "urn:x:e2", "@type": "EconomicEvent", "action": "work",
                     "provider": "ana", "receiver": "ana",
                     "effortQuantity": {"hasUnit": "hour", "hasNumericalValue": "lots"}},
                ],
            }
        )
        with pytest.raises(ImportFailed.Refused) as err:
            a.import_jsonld(net, bad, ImportOptionsInput(create_missing=True))
        found = {(p.node, p.field) for p in err.value.problems}
        assert ("urn:x:e1", "action") in found, err.value.problems
        assert ("urn:x:e2", "effortQuantity") in found, err.value.problems
        fly = next(p for p in err.value.problems if p.node == "urn:x:e1")
        assert "fly" in fly.detail
        assert a.heads(net) == before, "nothing written"

        with pytest.raises(ImportFailed.NotJson):
            a.import_jsonld(net, "{ not json", ImportOptionsInput())
        with pytest.raises(ImportFailed.Failed) as err:
            a.import_jsonld("00" * 32, "{}", ImportOptionsInput())
        assert "unknown network" in err.value.reason
        assert a.heads(net) == before
    finally:
        close(a)
