"""Reflow Python bindings: two loopback nodes in one process (tickets, sync, callbacks),
typed errors, close and reopen, logging.

Every node binds 127.0.0.1 only, with no relays and no address lookup (`loopback=True`).
Waits are on threading.Event with a timeout, never fixed sleeps.
"""
import asyncio
import threading

import pytest

import reflow
from reflow import (
    AgentInput,
    EventFilterInput,
    EventInput,
    MeasureRecord,
    OpenConfig,
    ResourceDescriptionInput,
    ResourceFilterInput,
    ReflowError,
    RoleKind,
    TraceNodeKind,
)

WAIT = 30  # seconds: upper bound on a wait for a signal, never a synchronisation sleep
TTL = 600  # seconds a ticket stays valid


def open_node(path):
    return asyncio.run(reflow.open_node(OpenConfig(data_dir=str(path), loopback=True)))


def close(*nodes):
    for node in nodes:
        asyncio.run(node.shutdown())


def produce(resource, value, provider="ana"):
    return EventInput(
        action="produce",
        provider=provider,
        receiver=provider,
        resource_quantity=MeasureRecord(value=value, unit="kg"),
        creates=ResourceDescriptionInput(id=resource, name=resource.capitalize()),
    )


def new_network(node):
    net = node.create_network("market", AgentInput(id="ana", name="Ana"))
    node.create_unit(net, "kg", "kilogram", "kg")
    return net


class Updates(reflow.LedgerListener):
    """Collects ledger updates; `wait_for` blocks until an update satisfies a predicate."""

    def __init__(self):
        self.lock = threading.Lock()
        self.updates = []
        self.waiting = []  # (predicate, threading.Event)

    def on_update(self, update):
        with self.lock:
            self.updates.append(update)
            for predicate, event in self.waiting:
                if predicate(update):
                    event.set()

    def wait_for(self, predicate):
        event = threading.Event()
        with self.lock:
            if any(predicate(u) for u in self.updates):
                return True
            self.waiting.append((predicate, event))
        return event.wait(WAIT)


class NodeEvents(reflow.NodeListener):
    """Sets `redeemed` when an invite is redeemed for `device`."""

    def __init__(self, device):
        self.device = device
        self.redeemed = threading.Event()
        self.events = []

    def on_event(self, event):
        self.events.append(event)
        if event.is_INVITE_REDEEMED() and event.device == self.device:
            self.redeemed.set()


def test_two_nodes_sync_an_event_via_a_ticket_and_the_callback_fires(tmp_path):
    a = open_node(tmp_path / "a")
    b = open_node(tmp_path / "b")
    try:
        net = new_network(a)
        on_a_node = NodeEvents(b.device_id())
        node_sub = a.subscribe_node_events(on_a_node)
        ticket = a.invite(net, RoleKind.MEMBER, None, TTL, None)
        assert ticket.startswith("reflow1")
        joined = asyncio.run(b.join_with_ticket(ticket, AgentInput(id="bo", name="Bo")))
        assert joined == net
        assert on_a_node.redeemed.wait(WAIT), "A never reported the redeemed invite"
        redeemed = [e for e in on_a_node.events if e.is_INVITE_REDEEMED()]
        assert redeemed[0].network == net and redeemed[0].role == RoleKind.MEMBER
        node_sub.cancel()
        assert b.networks() == [net]
        members = {m.device: m for m in b.members(net)}
        assert set(members) == {a.device_id(), b.device_id()}
        assert members[b.device_id()].agent == "bo"
        assert members[b.device_id()].role == RoleKind.MEMBER
        assert members[b.device_id()].invite is not None

        on_b = Updates()
        sub_b = b.subscribe(net, on_b)
        event_id = a.record_event(net, produce("apples", "5"))
        a_heads = sorted(a.heads(net))
        assert on_b.wait_for(
            lambda u: u.from_device == a.device_id() and sorted(u.heads) == a_heads
        ), "B's listener never saw A's event"
        assert all(u.network == net for u in on_b.updates)

        stock = b.inventory(net, ResourceFilterInput())
        assert [r.id for r in stock] == ["apples"]
        assert stock[0].onhand_quantity == MeasureRecord(value="5", unit="kg")
        assert stock[0].custodian == "ana"
        event = b.event(net, event_id)
        assert event is not None and event.action == "produce"
        assert event.created_resource == "apples"
        assert [e.id for e in b.events(net, EventFilterInput(agent="ana"))] == [event_id]
        assert any(p.device == a.device_id() and p.connected for p in b.peers(net))

        # B acts for bo: an event in ana's name is refused before anything is written...
        with pytest.raises(ReflowError.NotAllowed):
            b.record_event(
                net,
                EventInput(
                    action="consume",
                    provider="ana",
                    receiver="ana",
                    resource_inventoried_as="apples",
                    resource_quantity=MeasureRecord(value="2", unit="kg"),
                ),
            )
        # ...and back: B writes as bo, A's listener fires
        on_a = Updates()
        sub_a = a.subscribe(net, on_a)
        b.record_event(
            net,
            EventInput(
                action="consume",
                provider="bo",
                receiver="bo",
                resource_inventoried_as="apples",
                resource_quantity=MeasureRecord(value="2", unit="kg"),
            ),
        )
        b_heads = sorted(b.heads(net))
        assert on_a.wait_for(
            lambda u: u.from_device == b.device_id() and sorted(u.heads) == b_heads
        ), "A's listener never saw B's event"
        apples = a.resource(net, "apples")
        assert apples.onhand_quantity.value == "3"

        trace = a.trace(net, "apples")
        assert trace.start == "apples"
        assert trace.steps[0].kind == TraceNodeKind.RESOURCE and trace.steps[0].depth == 0
        assert {s.action for s in trace.steps if s.kind == TraceNodeKind.EVENT} == {"produce"}
        track = a.track(net, "apples")
        assert {s.action for s in track.steps if s.kind == TraceNodeKind.EVENT} == {"consume"}

        sub_b.cancel()
        sub_a.cancel()
    finally:
        close(b, a)


def test_join_by_device_id_after_add_member(tmp_path):
    a = open_node(tmp_path / "a")
    b = open_node(tmp_path / "b")
    try:
        net = new_network(a)
        a.record_event(net, produce("pears", "1"))
        a.add_member(net, b.device_id(), RoleKind.OBSERVER, "ana")
        asyncio.run(b.join(net, a.addr()))
        assert b.heads(net) == a.heads(net)
        assert [r.id for r in b.inventory(net, ResourceFilterInput())] == ["pears"]
    finally:
        close(b, a)


def test_errors_raise_typed_exceptions(tmp_path):
    a = open_node(tmp_path / "a")
    b = open_node(tmp_path / "b")
    c = open_node(tmp_path / "c")
    try:
        net = new_network(a)

        # invalid events: nothing is written, the node keeps running
        heads = a.heads(net)
        with pytest.raises(ReflowError.Invalid) as err:
            a.record_event(net, EventInput(action="consume", provider="ana", receiver="ana"))
        assert "resource" in str(err.value)
        with pytest.raises(ReflowError.Invalid):
            a.record_event(net, EventInput(action="frobnicate", provider="ana", receiver="ana"))
        with pytest.raises(ReflowError.Invalid):
            a.record_event(net, produce("x", "-1"))
        with pytest.raises(ReflowError.InvalidArgument):
            a.record_event(net, produce("x", "not a number"))
        with pytest.raises(ReflowError.InvalidArgument):
            a.inventory("not-a-network-id", ResourceFilterInput())
        with pytest.raises(ReflowError.NotFound):
            a.trace(net, "no-such-resource")
        assert a.heads(net) == heads
        assert a.inventory(net, ResourceFilterInput()) == []

        # bad tickets: typed error before any traffic
        with pytest.raises(ReflowError.InvalidTicket):
            asyncio.run(c.join_with_ticket("hello", AgentInput(id="cy", name="Cy")))
        ticket = a.invite(net, RoleKind.MEMBER, None, TTL, None)
        altered = ticket[:-1] + ("a" if ticket[-1] != "a" else "b")
        with pytest.raises(ReflowError.InvalidTicket):
            asyncio.run(c.join_with_ticket(altered, AgentInput(id="cy", name="Cy")))
        with pytest.raises(ReflowError.InvalidTicket):
            asyncio.run(c.join_with_ticket(ticket[: len(ticket) // 2], AgentInput(id="cy", name="Cy")))
        # a bearer ticket is redeemed once: the second device is refused
        asyncio.run(b.join_with_ticket(ticket, AgentInput(id="bo", name="Bo")))
        with pytest.raises(ReflowError.InviteRefused):
            asyncio.run(c.join_with_ticket(ticket, AgentInput(id="cy", name="Cy")))
        assert c.networks() == []

        # non-members: c holds no replica, and a refuses it
        with pytest.raises(ReflowError.UnknownNetwork):
            c.record_event(net, produce("apples", "1"))
        with pytest.raises(ReflowError.Refused):
            asyncio.run(c.join(net, a.addr()))
        assert net not in c.networks()
        # a member that is no admin may not admit anyone
        with pytest.raises(ReflowError.NotAllowed):
            b.add_member(net, c.device_id(), RoleKind.MEMBER, "bo")
        with pytest.raises(ReflowError.NotAllowed):
            b.invite(net, RoleKind.MEMBER, None, TTL, None)
        with pytest.raises(ReflowError.AlreadyJoined):
            asyncio.run(b.join(net, a.addr()))

        # every kind is a ReflowError, and the nodes still work
        assert issubclass(ReflowError.Refused, ReflowError)
        assert issubclass(ReflowError.InvalidTicket, ReflowError)
        a.record_event(net, produce("apples", "1"))
        assert [r.id for r in a.inventory(net, ResourceFilterInput())] == ["apples"]
    finally:
        close(c, b, a)


def test_observer_may_not_write(tmp_path):
    a = open_node(tmp_path / "a")
    b = open_node(tmp_path / "b")
    try:
        net = new_network(a)
        ticket = a.invite(net, RoleKind.OBSERVER, None, TTL, b.device_id())
        asyncio.run(b.join_with_ticket(ticket, AgentInput(id="bo", name="Bo")))
        heads = b.heads(net)
        with pytest.raises(ReflowError.NotAllowed):
            b.record_event(net, produce("apples", "1", provider="bo"))
        assert b.heads(net) == heads
    finally:
        close(b, a)


def test_node_survives_close_and_reopen(tmp_path):
    a = open_node(tmp_path / "a")
    device = a.device_id()
    net = new_network(a)
    a.record_event(net, produce("apples", "2.5"))
    heads = a.heads(net)
    asyncio.run(a.shutdown())
    with pytest.raises(ReflowError.Closed):
        a.networks()
    asyncio.run(a.shutdown())  # closing twice is harmless

    again = open_node(tmp_path / "a")
    try:
        assert again.device_id() == device
        assert again.networks() == [net]
        assert again.heads(net) == heads
        stock = again.inventory(net, ResourceFilterInput())
        assert [(r.id, r.onhand_quantity.value) for r in stock] == [("apples", "2.5")]
        again.record_event(net, produce("pears", "1"))
    finally:
        asyncio.run(again.shutdown())
    third = open_node(tmp_path / "a")
    try:
        ids = sorted(r.id for r in third.inventory(net, ResourceFilterInput()))
        assert ids == ["apples", "pears"]
    finally:
        asyncio.run(third.shutdown())


class Lines(reflow.LogSink):
    def __init__(self):
        self.records = []
        self.lock = threading.Lock()
        self.created = threading.Event()

    def log(self, record):
        with self.lock:
            self.records.append(record)
        if "network created" in record.message:
            self.created.set()


def test_log_level_and_callback(tmp_path):
    lines = Lines()
    reflow.set_log_sink(lines)
    try:
        reflow.set_log_level(reflow.LogLevel.OFF)
        a = open_node(tmp_path / "a")
        a.create_network("quiet", AgentInput(id="ana", name="Ana"))
        assert not lines.created.is_set()

        reflow.set_log_level(reflow.LogLevel.INFO)
        a.create_network("market", AgentInput(id="ana", name="Ana"))
        assert lines.created.wait(WAIT)
        asyncio.run(a.shutdown())
    finally:
        reflow.set_log_level(reflow.LogLevel.OFF)
    with lines.lock:
        records = list(lines.records)
    created = [r for r in records if "network created" in r.message]
    assert len(created) == 1
    assert created[0].target.startswith("reflow")
    assert created[0].level == reflow.LogLevel.INFO
    assert "market" in created[0].message
    assert all(r.level not in (reflow.LogLevel.DEBUG, reflow.LogLevel.TRACE) for r in records)


def test_market_flow_commitments_and_flows(tmp_path):
    """An offer with a price, accepted by another agent: an agreement with commitments both
    ways; a delivery fulfils one side (the engine derives it); the flows report totals it."""
    from reflow import CommitmentInput, FlowQueryInput, IntentInput

    node = open_node(tmp_path / "a")
    try:
        net = new_network(node)
        node.create_unit(net, "EUR", "euro", "€")
        node.create_unit(net, "hour", "hour", "h")
        node.create_agent(net, AgentInput(id="bo", name="Bo"))
        node.record_event(net, produce("apples", "10"))
        offer = node.create_intent(
            net,
            IntentInput(
                id="offer",
                action="transfer",
                provider="ana",
                resource_quantity=MeasureRecord(value="2", unit="kg"),
            ),
        )
        price = node.create_intent(
            net,
            IntentInput(
                id="price",
                action="transfer",
                receiver="ana",
                resource_quantity=MeasureRecord(value="3", unit="EUR"),
            ),
        )
        node.create_proposal(net, "p", "2 kg apples", [offer], [price])
        accepted = node.accept_proposal(net, "p", "bo")
        assert len(accepted.commitments) == 1 and len(accepted.reciprocal_commitments) == 1
        with pytest.raises(ReflowError.Invalid) as e:
            node.accept_proposal(net, "p", "bo")
        assert "not open" in str(e.value)

        deliver = accepted.commitments[0]
        by_id = {c.id: c for c in node.commitments(net, None)}
        assert by_id[deliver].progress == "open"
        assert (by_id[deliver].provider, by_id[deliver].receiver) == ("ana", "bo")
        assert by_id[deliver].agreement == accepted.agreement

        event = node.record_event(
            net,
            EventInput(
                action="transfer",
                provider="ana",
                receiver="bo",
                resource_inventoried_as="apples",
                resource_quantity=MeasureRecord(value="1.5", unit="kg"),
                has_point_in_time="2026-03-07T10:00:00Z",
                fulfills=deliver,
                creates=ResourceDescriptionInput(id="bo-apples", name="Apples"),
            ),
        )
        status = {c.id: c for c in node.commitments(net, "2026-03-08")}[deliver]
        # 1.5 of 2 kg: 75 %.
        assert status.progress == "partly"
        assert status.fulfilled == MeasureRecord(value="1.5", unit="kg")
        assert status.percent == "75"
        assert status.fulfilled_by == [event]
        assert node.event(net, event).fulfills == deliver

        # A fulfilling event of another action is refused, typed.
        with pytest.raises(ReflowError.Invalid):
            node.record_event(
                net,
                EventInput(
                    action="consume",
                    provider="ana",
                    receiver="ana",
                    resource_inventoried_as="apples",
                    resource_quantity=MeasureRecord(value="1", unit="kg"),
                    fulfills=deliver,
                ),
            )

        node.create_commitment(
            net,
            CommitmentInput(
                id="late",
                action="work",
                provider="bo",
                receiver="ana",
                effort_quantity=MeasureRecord(value="2", unit="hour"),
                due="2026-03-01",
            ),
        )
        overdue = [c.id for c in node.commitments(net, "2026-03-02") if c.overdue]
        assert overdue == ["late"]

        report = node.flows(net, FlowQueryInput(group_by=["action"], period="month"))
        assert [(r.period, r.action, r.unit, r.quantity, r.events) for r in report.rows] == [
            ("2026-03", "transfer", "kg", "1.5", 1)
        ]
        assert report.undated == 1  # the produce has no time
        assert report.csv.splitlines()[1] == "2026-03,transfer,,,,,kg,1.5,1"
        with pytest.raises(ReflowError.InvalidArgument):
            node.flows(net, FlowQueryInput(period="fortnight"))
    finally:
        close(node)


def test_network_rules_publish_test_refuse_and_flag(tmp_path):
    """Rules (docs/rules.md): templates, a malformed set refused, a draft tested, a refusal
    and a flag."""
    node = open_node(tmp_path / "a")
    try:
        net = new_network(node)
        node.create_agent(net, AgentInput(id="hub", name="Hub"))
        assert node.rules(net) is None
        assert reflow.rule_templates() == ["food-market", "repair-cafe", "collection", "time-bank"]

        heads = node.heads(net)
        with pytest.raises(ReflowError.Invalid) as err:
            node.set_rules(net, '{"name": "x", "version": 1, "rules": [{"name": "r", '
                           '"outcome": "flag", "check": "event.quantity.milli > 1.5", "message": "m"}]}')
        assert "floating-point" in str(err.value)
        assert node.heads(net) == heads

        delivery = lambda kg, to: EventInput(
            action="transferCustody",
            provider="ana",
            receiver="hub",
            resource_inventoried_as="bags",
            resource_quantity=MeasureRecord(value=kg, unit="kg"),
            creates=ResourceDescriptionInput(id=to, name="At the hub"),
        )
        found = node.test_rules(net, "collection", delivery("30", "x"))
        assert [(f.rule, f.outcome) for f in found] == [("delivery-weight-review", "flag")]
        assert node.test_rules(net, "collection", delivery("3", "x")) == []

        assert node.set_rules(net, "collection") == 1
        assert '"delivery-weight-review"' in node.rules(net)
        node.record_event(net, produce("bags", "100"))
        node.record_event(net, delivery("20", "hub-1"))
        heavy = node.record_event(net, delivery("30", "hub-2"))
        flags = [c for c in node.conflicts(net) if c.is_rule_violation()]
        assert len(flags) == 1
        assert flags[0].event == heavy and flags[0].rule == "delivery-weight-review"
        assert flags[0].version == 1 and flags[0].error is None

        # Version 2 refuses deliveries above 50 kg: this device's own write is refused.
        v2 = ('{"name": "Strict", "version": 1, "rules": [{"name": "cap", "outcome": "refuse", '
              '"check": "event.quantity == null || event.quantity.milli <= 50000", "message": "too heavy"}]}')
        assert node.set_rules(net, v2) == 2
        with pytest.raises(ReflowError.NotAllowed) as err:
            node.record_event(net, delivery("60", "hub-3"))
        assert "cap" in str(err.value)
        assert node.rule_refusals(net) == []
    finally:
        close(node)


def test_trace_bundle_verifies_and_tampering_is_named(tmp_path):
    """A trace bundle exported by a node is verified without any node; a flipped quantity
    and a flipped signature are refused, naming the event and field, the change."""
    import json

    a = open_node(tmp_path / "a")
    try:
        net = new_network(a)
        wool = a.record_event(net, produce("wool", "10"))
        a.record_event(
            net,
            EventInput(
                action="consume",
                provider="ana",
                receiver="ana",
                resource_inventoried_as="wool",
                resource_quantity=MeasureRecord(value="4", unit="kg"),
            ),
        )
        bundle = a.export_trace_bundle(net, "wool")
        with pytest.raises(ReflowError.NotFound):
            a.export_trace_bundle(net, "no-such-resource")
        device = a.device_id()
    finally:
        close(a)

    verified = reflow.verify_trace_bundle(bundle)
    assert verified.network == net and verified.network_name == "market"
    assert verified.resource == "wool" and verified.creator == device
    assert [e.event.id for e in verified.events] == [wool]
    only = verified.events[0]
    assert only.event.action == "produce"
    assert only.event.resource_quantity == MeasureRecord(value="10", unit="kg")
    assert only.member.device == device and only.member.agent == "ana"
    assert only.member.role == RoleKind.ADMIN

    doc = json.loads(bundle)
    doc["trace"]["@graph"][0]["resourceQuantity"]["hasNumericalValue"] = "100"
    with pytest.raises(ReflowError.BundleRefused) as err:
        reflow.verify_trace_bundle(json.dumps(doc).encode())
    assert f"event {wool}: field resourceQuantity.hasNumericalValue" in str(err.value)

    doc = json.loads(bundle)
    sig = doc["changes"][-1]["signature"]
    doc["changes"][-1]["signature"] = ("1" if sig[0] == "0" else "0") + sig[1:]
    with pytest.raises(ReflowError.BundleRefused) as err:
        reflow.verify_trace_bundle(json.dumps(doc).encode())
    assert f"change {doc['changes'][-1]['hash']}: signature refused" in str(err.value)

    with pytest.raises(ReflowError.BundleRefused):
        reflow.verify_trace_bundle(b"not a bundle")
