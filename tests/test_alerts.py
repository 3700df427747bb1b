"""The alert rules (views/alerts.py): which events alert, the debounce, storms, the first poll,
and the OSC text; the events come from the real producers (a NodeWorker's state changes, the
chain check, the event stream), so a change in what they send shows here."""

from __future__ import annotations

import re

import pytest

from fleettui.aggregator.chaincheck import ChainCheck
from fleettui.aggregator.eventstream import EventStreamReader
from fleettui.aggregator.node import NodeWorker
from fleettui.aggregator.state import FleetEvent
from fleettui.config import Defaults, NodeConfig
from fleettui.views.alerts import (
    OSC_MAX,
    Alert,
    AlertGate,
    Notice,
    classify,
    osc_notify,
    osc_text,
    summarize,
)
from test_aggregator_split import Host, sse


class Worker:
    """A real NodeWorker whose state we set as its poller would."""

    def __init__(self, name: str = "n1") -> None:
        self.events: list[FleetEvent] = []
        cfg = NodeConfig(name=name, url="http://127.0.0.1:1")
        self.w = NodeWorker(
            cfg, Defaults(), verify_chain=False, on_change=lambda w: None, emit=self.events.append
        )

    def down(self, error: str = "connection refused") -> FleetEvent:
        self.w.poll_unreachable, self.w.poll_error = True, error
        self.w.refresh()
        return self.events[-1]

    def up(self) -> FleetEvent:
        self.w.poll_unreachable, self.w.poll_error = False, None
        self.w.snap_json = b"{}"  # a snapshot is held: ONLINE
        self.w.refresh()
        return self.events[-1]

    def degraded(self, why: str) -> FleetEvent:
        self.w.poll_unreachable, self.w.poll_error = False, why
        self.w.snap_json = b"{}"
        self.w.refresh()
        return self.events[-1]


def test_state_changes_alert_by_where_they_go() -> None:
    w = Worker()
    first = classify(w.down())  # INITIALIZING -> OFFLINE: the first poll's verdict
    assert first == Alert("n1", "OFFLINE", "connection refused", at_start=True)
    assert classify(w.up()) == Alert("n1", "ONLINE", "")
    assert classify(w.degraded("HTTP 500")) == Alert("n1", "DEGRADED", "snapshot: HTTP 500")
    assert classify(w.down()) == Alert("n1", "OFFLINE", "connection refused")
    up_at_start = Worker("n2").up()
    assert classify(up_at_start) == Alert("n2", None, "", at_start=True)  # settles, no alert


def test_a_broken_chain_and_a_failed_action_alert_the_rest_does_not() -> None:
    host = Host()
    events: list[FleetEvent] = []
    host.emit = events.append  # type: ignore[method-assign]
    check = ChainCheck(host, "http://127.0.0.1:1", Defaults())
    check.verifier.broken("seq 3: hash mismatch (entry altered)")
    check.publish()
    (broken,) = events
    assert classify(broken) == Alert("n1", "BROKEN", "seq 3: hash mismatch (entry altered)")

    reader = EventStreamReader(host, Defaults())
    for data in (
        '{"phase": "finished", "action": "restart", "engine": "vllm", "ok": false}',
        '{"phase": "finished", "action": "restart", "engine": "vllm", "ok": true}',
        '{"phase": "started", "action": "restart", "engine": "vllm"}',
        '{"phase": "finished", "ok": "no"}',  # unreadable: not a failure we can name
    ):
        reader.handle(sse("action", data))
    failed, *rest = events[1:]
    assert classify(failed) == Alert("n1", "FAILED", "finished restart vllm: failed")
    assert [classify(e) for e in rest] == [None, None, None]
    reader.handle(sse("audit", '{"seq": 4, "action": "restart", "status": "failed"}'))
    assert classify(events[-1]) is None  # the action's own event already told it
    assert classify(FleetEvent(0, "(config)", "error", "tokn_env: unknown key")) is None
    hostile = FleetEvent(0, "n1", "state", "x", {"to": "OFFLINE", "reasons": [5, "x"]})
    assert classify(hostile) == Alert("n1", "OFFLINE", "")  # odd data: no reason, no crash


def test_one_node_down_is_one_notice_after_the_quiet_window() -> None:
    gate = AlertGate(["a", "b"], 0.0, quiet_s=1.0)
    for n in ("a", "b"):
        gate.offer(Alert(n, None, at_start=True), 0.1)
    assert gate.take(0.1) == [] and gate.due() is None  # everyone up: nothing to say
    gate.offer(Alert("a", "OFFLINE", "connection refused"), 5.0)
    assert gate.due() == 6.0 and gate.take(5.9) == []
    assert gate.take(6.0) == [
        Notice("fleet", ("a OFFLINE: connection refused",), "error", ring=True)
    ]
    assert gate.due() is None and gate.take(100.0) == []


def test_a_300_node_outage_is_one_summary_and_one_bell() -> None:
    names = [f"n{i:03}" for i in range(300)]
    gate = AlertGate(names, 0.0, quiet_s=1.0, max_s=5.0)
    for n in names:
        gate.offer(Alert(n, None, at_start=True), 0.0)
    for i, n in enumerate(names):  # they time out over three seconds
        gate.offer(Alert(n, "OFFLINE", "timed out"), 10.0 + i / 100)
    (notice,) = gate.take(20.0)
    assert notice.lines == ("300 nodes OFFLINE: n000, n001, n002 +297",)
    assert notice.ring and notice.severity == "error"


def test_a_storm_longer_than_max_s_is_cut_into_few_notices() -> None:
    gate = AlertGate([], 0.0, quiet_s=1.0, max_s=5.0)
    notices = []
    for i in range(200):  # one node every 0.1 s for 20 s: never quiet
        now = i / 10
        gate.offer(Alert(f"n{i}", "OFFLINE"), now)
        notices += gate.take(now)
    notices += gate.take(100.0)
    assert len(notices) == 4
    assert sum(int(re.match(r"\d+", n.lines[0]).group()) for n in notices) == 200


def test_a_flapping_node_rings_once_per_cooldown_unless_it_gets_worse() -> None:
    gate = AlertGate([], 0.0, quiet_s=0.5, cooldown_s=60.0)
    told: list[Notice] = []
    for t in range(0, 50, 2):  # OFFLINE and back every 2 s for 50 s
        gate.offer(Alert("a", "OFFLINE", "connection refused"), t)
        told += gate.take(t + 0.9)
        gate.offer(Alert("a", "ONLINE"), t + 1)
        told += gate.take(t + 1.9)
    assert [n.lines for n in told] == [("a OFFLINE: connection refused",), ("a back ONLINE",)]
    assert [n.ring for n in told] == [True, False]
    assert gate.suppressed == 24

    gate.offer(Alert("a", "OFFLINE"), 61.0)  # the cooldown is over: rings again
    assert [n.lines for n in gate.take(70.0)] == [("a OFFLINE",)]

    gate = AlertGate([], 0.0, quiet_s=0.5)
    gate.offer(Alert("b", "DEGRADED", "engine down"), 0.0)
    assert gate.take(1.0)[0].severity == "warning"
    gate.offer(Alert("b", "DEGRADED", "engine down"), 2.0)
    gate.offer(Alert("b", "OFFLINE", "timed out"), 3.0)  # worse: passes the cooldown
    assert [n.lines for n in gate.take(4.0)] == [("b OFFLINE: timed out",)]
    gate.offer(Alert("b", "BROKEN", "seq 3"), 5.0)  # another family: its own cooldown
    assert [n.lines for n in gate.take(6.0)] == [("b audit chain BROKEN: seq 3",)]


def test_a_recovery_is_quiet_and_only_after_a_told_alert() -> None:
    gate = AlertGate([], 0.0, quiet_s=0.5)
    gate.offer(Alert("a", "ONLINE"), 1.0)  # never told down: nothing to say
    assert gate.due() is None
    gate.offer(Alert("a", "DEGRADED", "x"), 2.0)
    gate.take(3.0)
    gate.offer(Alert("a", "ONLINE"), 4.0)
    (back,) = gate.take(5.0)
    assert back == Notice("fleet", ("a back ONLINE",), "information", ring=False)


def test_one_node_in_one_batch_is_one_line_its_worst() -> None:
    gate = AlertGate([], 0.0, quiet_s=0.5)
    gate.offer(Alert("a", "BROKEN", "seq 3"), 1.0)  # the chain check, then the state it causes
    gate.offer(Alert("a", "DEGRADED", "audit chain BROKEN: seq 3"), 1.0)
    gate.offer(Alert("b", "DEGRADED", "engine vllm down"), 1.1)
    gate.offer(Alert("c", "FAILED", "finished restart vllm: failed"), 1.2)
    (notice,) = gate.take(2.0)
    assert notice.lines == (
        "a audit chain BROKEN: seq 3",
        "c action failed: finished restart vllm: failed",
        "b DEGRADED: engine vllm down",
    )
    assert notice.severity == "error" and notice.ring


def test_the_first_poll_is_one_summary_once_every_node_answered() -> None:
    gate = AlertGate(["a", "b", "c", "d"], 0.0, quiet_s=0.5, start_max_s=15.0)
    gate.offer(Alert("a", "OFFLINE", "connection refused", at_start=True), 0.1)
    gate.offer(Alert("b", None, at_start=True), 0.2)
    gate.offer(Alert("c", "DEGRADED", "engine down", at_start=True), 0.3)
    assert gate.due() == 15.0 and gate.take(5.0) == []  # d has not answered yet
    gate.offer(Alert("d", "OFFLINE", "timed out", at_start=True), 5.0)
    (notice,) = gate.take(5.0)
    assert notice.title == "fleet: at start"
    assert notice.lines == ("2 nodes OFFLINE: a, d", "c DEGRADED: engine down")
    assert notice.ring
    gate.offer(Alert("a", "ONLINE"), 8.0)  # told at start: its recovery is a line
    assert [n.lines for n in gate.take(9.0)] == [("a back ONLINE",)]

    gate = AlertGate(["a", "never"], 0.0, start_max_s=15.0)
    gate.offer(Alert("a", "OFFLINE", at_start=True), 0.1)
    assert gate.take(14.0) == []
    assert [n.lines for n in gate.take(15.0)] == [("a OFFLINE",)]  # "never" is not waited for
    gate = AlertGate(["a"], 0.0)
    gate.offer(Alert("a", None, at_start=True), 0.1)
    assert gate.take(0.1) == [] and gate.due() is None  # all fine at start: silence


def test_summary_lines_are_bounded() -> None:
    long = Alert("a", "OFFLINE", "x" * 5000)
    (line,) = summarize([long]).lines  # type: ignore[union-attr]
    assert len(line) < 120 and line.endswith("…")
    assert summarize([Alert("a", None)]) is None


HOSTILE = [
    "\x1b]52;c;ZXZpbA==\x07",  # clipboard write
    "\x9d0;title\x9c",  # C1 OSC ... ST
    "evil\x07\x1b\\",  # BEL and ST: the end of our OSC
    "4;3;100",  # ConEmu / Windows Terminal: OSC 9;4 is a progress bar
    "a;b;c\nd\re\u202e\u200b\ufeff",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_osc_text_has_nothing_a_terminal_obeys(text: str) -> None:
    safe = osc_text(text)
    assert ";" not in safe and safe.isprintable()
    assert not re.search("[\x00-\x1f\x7f-\x9f]", safe)


@pytest.mark.parametrize("text", HOSTILE)
def test_osc_sequences_carry_exactly_their_own_fields(text: str) -> None:
    notice = Notice(f"fleet{text}", (f"{text} OFFLINE: {text * 100}",), "error", True)
    osc9, osc777 = osc_notify(notice)
    assert osc9.startswith("\x1b]9;") and osc9.endswith("\x07")
    assert osc777.startswith("\x1b]777;notify;") and osc777.endswith("\x07")
    for seq in (osc9, osc777):  # one ESC, one BEL: the ones we put there
        assert seq.count("\x1b") == 1 and seq.count("\x07") == 1
        assert not re.search("[\x00-\x06\x08-\x1a\x1c-\x1f\x7f-\x9f]", seq)
    assert osc9[4:].count(";") == 0
    assert osc777[len("\x1b]777;notify;") :].count(";") == 1  # title ; body
    assert len(osc777) < OSC_MAX + 60


def test_osc_text_keeps_what_is_harmless() -> None:
    assert osc_text("demo-003 OFFLINE: connection refused") == (
        "demo-003 OFFLINE: connection refused"
    )
    assert osc_text("a\nb") == "a · b"
    assert osc_text("x" * 500, 50) == "x" * 49 + "…"


def test_notify_is_a_flag_of_the_dashboard_and_the_demo() -> None:
    from fleettui.cli import build_parser

    p = build_parser()
    assert not p.parse_args([]).notify
    assert p.parse_args(["--notify"]).notify
    assert p.parse_args(["demo", "--notify"]).notify
    assert p.parse_args(["--notify", "demo"]).notify  # the top-level flag is kept
