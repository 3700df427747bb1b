"""A node's parts against their host protocols: the event stream and the chain check report
to their node only through `StreamHost` / `ChainHost`, so a recording host shows exactly what
each tells it (the end-to-end behaviour is in test_aggregator*.py, over real sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from fleettui.aggregator.chaincheck import ChainCheck
from fleettui.aggregator.eventstream import EventStreamReader
from fleettui.aggregator.node import NodeWorker
from fleettui.aggregator.state import ChainStatus, FleetEvent
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.framing import Endpoint
from fleettui.aggregator.transport.sse import ServerSentEvent
from fleettui.config import Defaults, NodeConfig
from fleettui.testing.sample import sample_views
from fleettui.wire import AuditHead, NodeSnapshot


@dataclass
class Host:
    name: str = "n1"
    token: str | None = None
    endpoint: Endpoint = field(default_factory=lambda: Endpoint.parse("http://127.0.0.1:1"))
    client: NodeClient | None = None
    calls: list[tuple] = field(default_factory=list)

    def note_latency(self, t0: float) -> None:
        self.calls.append(("latency",))

    def apply_snapshot(self, snap: NodeSnapshot, raw: str | bytes | None = None) -> None:
        self.calls.append(("snapshot", snap.node.hostname, raw))

    def emit(self, event: FleetEvent) -> None:
        self.calls.append(("emit", event.kind, event.summary))

    def wants(self, kind: str) -> bool:
        return kind != "snapshot"

    def set_last_error(self, text: str) -> None:
        self.calls.append(("last_error", text))

    def stream_up(self, recovered: bool) -> None:
        self.calls.append(("up", recovered))

    def stream_down(self) -> None:
        self.calls.append(("down",))

    def audit_appended(self) -> None:
        self.calls.append(("audit",))

    def chain_changed(self, status: ChainStatus, detail: str | None, refresh: bool) -> None:
        self.calls.append(("chain", status, detail, refresh))

    def take(self) -> list[tuple]:
        out, self.calls = self.calls, []
        return out


def snapshot() -> NodeSnapshot:
    snap = sample_views()[0].snapshot
    assert snap is not None
    return snap


def sse(event: str, data: str) -> ServerSentEvent:
    return ServerSentEvent(event=event, data=data)


def test_the_stream_reports_up_once_and_recovery_after_a_failure() -> None:
    host = Host()
    reader = EventStreamReader(host, Defaults())
    raw = snapshot().model_dump_json()
    reader.handle(sse("snapshot", raw))
    assert host.take() == [("up", False), ("snapshot", snapshot().node.hostname, raw)]
    assert reader.up and reader.snap_at is not None
    reader.handle(sse("ping", ""))  # the common case: nothing for the node to do
    assert host.take() == []
    reader.reconnect_now()  # up: nothing to cut short
    assert not reader.waker._pending
    reader.failed("connection reset")
    reader.failed("connection reset")  # the same reason is one last_error, two downs
    assert host.take() == [("last_error", "event stream: connection reset"), ("down",), ("down",)]
    assert not reader.up and reader.snap_at is None and reader.down_since is not None
    reader.reconnect_now()
    assert reader.waker._pending  # a poll that answered cuts the backoff short
    reader.handle(sse("audit", '{"seq": 4, "action": "restart", "status": "ok"}'))
    assert host.take() == [
        ("up", True),
        ("emit", "audit", "audit seq 4: restart ok"),
        ("audit",),
    ]
    assert reader.error is None and reader.down_since is None


def test_a_bad_event_is_the_streams_failure_not_an_exception() -> None:
    host = Host()
    reader = EventStreamReader(host, Defaults())
    reader.handle(sse("snapshot", '{"not": "a snapshot"}'))
    (last_error, down) = host.take()
    assert last_error[1].startswith("event stream: bad snapshot event: wrong shape: ")
    assert down == ("down",) and not reader.up
    reader.handle(sse("action", "not json"))  # unreadable, but the stream delivered
    assert host.take() == [("up", True), ("emit", "action", "action (unreadable event)")]


def test_the_chain_check_publishes_changes_once_and_a_break_as_one_error_event() -> None:
    host = Host()
    check = ChainCheck(host, "http://127.0.0.1:1", Defaults())
    check.publish()
    assert host.take() == []  # UNKNOWN, no detail: what the node shows already
    check.snapshot_seen(snapshot(), first=True)  # a head to verify: the loop is woken
    assert check.head_moved and check.waker._pending and host.take() == []
    check.verifier.broken("seq 3: hash mismatch (entry altered)")
    check.publish()
    check.publish()
    assert host.take() == [
        ("emit", "error", "audit chain BROKEN: seq 3: hash mismatch (entry altered)"),
        ("chain", ChainStatus.BROKEN, "seq 3: hash mismatch (entry altered)", True),
    ]
    assert check.broken
    assert not check.verifier.check_head(AuditHead(seq=9, head_hash="0" * 64))  # sticky


@pytest.mark.parametrize(
    ("kind", "streams", "audited"), [("fleettui", True, True), ("ollama", False, False)]
)
def test_a_worker_has_the_parts_its_kind_and_config_call_for(
    kind: str, streams: bool, audited: bool
) -> None:
    cfg = NodeConfig(name="n", url="http://127.0.0.1:1", kind=kind)
    w = NodeWorker(cfg, Defaults(), verify_chain=True, on_change=lambda w: None, emit=print)
    assert (w.stream is not None, w.chain is not None) == (streams, audited)
    w = NodeWorker(cfg, Defaults(), verify_chain=False, on_change=lambda w: None, emit=print)
    assert w.chain is None and w.view.chain is ChainStatus.NOT_APPLICABLE
