"""Reflow Python bindings: two loopback nodes in one process, errors, reopen, logging."""
import asyncio
import threading

import pytest

import reflow
from reflow import (
    AgentInput,
    EventInput,
    MeasureRecord,
    OpenConfig,
    ResourceDescriptionInput,
    ResourceFilterInput,
    ReflowError,
    RoleKind,
)

WAIT = 30  # seconds: upper bound on a wait for a signal, never a synchronisation sleep


def open_node(path):
    return asyncio.run(reflow.open_node(OpenConfig(data_dir=str(path), loopback=True)))


def produce(resource, value):
    return EventInput(
        action="produce",
        provider="ana",
        receiver="ana",
        resource_quantity=MeasureRecord(value=value, unit="kg"),
        creates=ResourceDescriptionInput(id=resource, name=resource.capitalize()),
    )


def new_network(node):
    net = node.create_network("market", AgentInput(id="ana", name="Ana"))
    node.create_unit(net, "kg", "kilogram", "kg")
    return net


class Updates(reflow.LedgerListener):
    """Collects ledger updates; `wait_for_heads` blocks until an update reaches heads."""

    def __init__(self):
        self.cond = threading.Condition()
        self.updates = []

    def on_update(self, update):
        with self.cond:
            self.updates.append(update)
            self.cond.notify_all()

    def wait_for_heads(self, heads):
        with self.cond:
            return self.cond.wait_for(
                lambda: any(sorted(u.heads) == sorted(heads) for u in self.updates), WAIT
            )


def test_two_nodes_sync_and_callback_fires(tmp_path):
    a = open_node(tmp_path / "a")
    b = open_node(tmp_path / "b")
    try:
        net = new_network(a)
        a.add_member(net, b.device_id(), RoleKind.MEMBER, "ana")
        asyncio.run(b.join(net, a.addr()))
        assert net in b.networks()
        assert {m.device for m in b.members(net)} == {a.device_id(), b.device_id()}

        updates = Updates()
        sub = b.subscribe(net, updates)
        event_id = a.record_event(net, produce("apples", "5"))
        assert updates.wait_for_heads(a.heads(net)), "B's listener never saw A's event"
        assert any(u.from_device == a.device_id() for u in updates.updates)

        stock = b.inventory(net, ResourceFilterInput())
        assert [r.id for r in stock] == ["apples"]
        assert stock[0].onhand_quantity == MeasureRecord(value="5", unit="kg")
        assert stock[0].custodian == "ana"
        event = b.event(net, event_id)
        assert event is not None and event.action == "produce"
        assert event.created_resource == "apples"
        assert any(p.device == a.device_id() and p.connected for p in b.peers(net))
        sub.cancel()
    finally:
        asyncio.run(b.close())
        asyncio.run(a.close())


def test_errors_raise_typed_exceptions(tmp_path):
    a = open_node(tmp_path / "a")
    c = open_node(tmp_path / "c")
    try:
        net = new_network(a)
        # consume needs a resource: a validation error
        with pytest.raises(ReflowError.Invalid) as err:
            a.record_event(net, EventInput(action="consume", provider="ana", receiver="ana"))
        assert "resource" in str(err.value)
        with pytest.raises(ReflowError.Invalid):
            a.record_event(net, EventInput(action="frobnicate", provider="ana", receiver="ana"))
        with pytest.raises(ReflowError.InvalidArgument):
            a.record_event(net, produce("x", "not a number"))
        with pytest.raises(ReflowError.InvalidArgument):
            a.inventory("not-a-network-id", ResourceFilterInput())
        assert a.inventory(net, ResourceFilterInput()) == []
        # c holds no replica of the network, and was never admitted to it
        with pytest.raises(ReflowError.UnknownNetwork):
            c.record_event(net, produce("apples", "1"))
        with pytest.raises(ReflowError.Refused):
            asyncio.run(c.join(net, a.addr()))
        assert net not in c.networks()
        # every kind is a ReflowError
        assert issubclass(ReflowError.Refused, ReflowError)
    finally:
        asyncio.run(c.close())
        asyncio.run(a.close())


def test_node_survives_close_and_reopen(tmp_path):
    a = open_node(tmp_path / "a")
    device = a.device_id()
    net = new_network(a)
    a.record_event(net, produce("apples", "2.5"))
    heads = a.heads(net)
    asyncio.run(a.close())
    with pytest.raises(ReflowError.Closed):
        a.networks()

    again = open_node(tmp_path / "a")
    try:
        assert again.device_id() == device
        assert again.networks() == [net]
        assert again.heads(net) == heads
        stock = again.inventory(net, ResourceFilterInput())
        assert [(r.id, r.onhand_quantity.value) for r in stock] == [("apples", "2.5")]
    finally:
        asyncio.run(again.close())


class Lines(reflow.LogSink):
    def __init__(self):
        self.records = []
        self.lock = threading.Lock()

    def log(self, record):
        with self.lock:
            self.records.append(record)


def test_log_callback_receives_lines(tmp_path):
    lines = Lines()
    reflow.set_log_sink(lines)
    reflow.set_log_level(reflow.LogLevel.INFO)
    try:
        a = open_node(tmp_path / "a")
        a.create_network("market", AgentInput(id="ana", name="Ana"))
        asyncio.run(a.close())
    finally:
        reflow.set_log_level(reflow.LogLevel.OFF)
    with lines.lock:
        records = list(lines.records)
    assert any(r.target.startswith("reflow") and "network created" in r.message for r in records)
    assert all(r.level != reflow.LogLevel.DEBUG for r in records)
