"""Nothing a node sends is trusted: bounded numbers and text at the door, one sanitiser before
any terminal, and whatever slips through is that node's state and reason, never the fleet's.

The fleet tests run a fleet of hostile nodes (tests/hostile_nodes.py) beside two real agents and
look at the bytes every view writes: `fleet status` (text and JSON), `fleet --rich --once`,
`fleet ping`, `fleet push`, `fleet ls`, and the dashboard's frames under Pilot.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from pydantic import ValidationError

from actionfleet import send_action
from fake_nodes import FakeAsiai, FakeOllama, OllamaModel, running
from fakes import FakeAgent, snapshot_dict
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.history import PowerHistory
from fleettui.aggregator.state import FleetEvent, NodeState, NodeView
from fleettui.config import Defaults, FleetConfig, NodeConfig, load_fleet_config
from fleettui.textsafe import clean, clean_block
from fleettui.wire import DISPLAY, ActionEvent, ActionResult, AuditEntry, NodeSnapshot
from hostile_nodes import ESCAPES, HUGE_INT, MARKUP, fleet_toml, hostile_fleet, leaks
from pilot_util import cell, screen_lines, until

# How long the dashboard runs against the hostile fleet. The issue asks for 60 s; the suite
# runs 15 s by default (75 poll rounds and a dozen stream reconnects of every hostile node, at
# 0.2 s polls: every failure mode here shows in the first seconds), FLEET_HOSTILE_S=60 the rest.
DASHBOARD_S = float(os.environ.get("FLEET_HOSTILE_S", "15"))


# --- the sanitiser -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", sorted(ESCAPES))
def test_every_escape_class_is_shown_visibly_and_never_raw(cls: str) -> None:
    out = clean(ESCAPES[cls])
    assert not leaks(out), out
    assert out.endswith(cls)  # the marker after the sequence survives: nothing was dropped
    assert len(out) >= len(ESCAPES[cls])  # every character has a stand-in


def test_stand_ins() -> None:
    assert clean("a\x1b[2Jb") == "a␛[2Jb"
    assert clean("\x00\t\n\r\x7f") == "␀␉␊␍␡"
    assert clean("\x9b\x85") == "\\x9b\\x85"
    assert clean("\u202eabc\u2066\u200e\u2028\ud800") == "\\u202eabc\\u2066\\u200e\\u2028\\ud800"
    assert clean_block("one\ntwo\x1b]0;x\x07") == "one\ntwo␛]0;x␇"
    plain = "llama3.1:8b · 4,312 W · €261.9 · 日本語 · ✓"
    assert clean(plain) is plain  # the usual case costs no copy
    assert clean("a\u00a0b\u200bc") == "a\u00a0b\u200bc"  # odd but harmless: left alone


# --- validation at the door --------------------------------------------------------------

NUMERIC_FIELDS = [
    "ts",
    "schema_version",
    "node.uptime_s",
    "cpu.percent",
    "cpu.cores",
    "memory.total_mb",
    "memory.used_mb",
    "memory.pressure_pct",
    "gpus.0.index",
    "gpus.0.memory_total_mb",
    "gpus.0.memory_used_mb",
    "gpus.0.util_pct",
    "gpus.0.power_w",
    "gpus.0.energy_j",
    "gpus.0.temp_c",
    "power.watts",
    "power.energy_j",
    "power.energy_since",
    "power.parts.0.watts",
    "power.parts.0.energy_j",
    "cost.price_per_kwh",
    "cost.today",
    "cost.total_7d",
    "cost.since_start",
    "cost.daily.0.energy_wh",
    "cost.daily.0.cost",
    "cost.daily.0.price_per_kwh",
    "node.boot_time",
    "memory.stall_s_total",
    "engines.0.models.0.size_mb",
    "engines.0.models.0.vram_mb",
    "audit.seq",
]
POISON = ["NaN", "Infinity", "-Infinity", "1e308", "-1e308", "1" + "0" * 30, "-4665"]


def _full_snapshot() -> dict:
    d = snapshot_dict("n")
    d["gpus"] = [
        {
            "index": 0,
            "name": "H100",
            "memory_total_mb": 81920.0,
            "memory_used_mb": 1000.0,
            "util_pct": 50.0,
            "power_w": 300.0,
            "energy_j": 1e6,
            "temp_c": 60.0,
        }
    ]
    d["engines"][0]["models"] = [{"name": "m", "size_mb": 1.0, "vram_mb": 1.0}]
    d["node"]["boot_time"] = 1_699_000_000.0
    d["memory"]["stall_s_total"] = 12.0
    d["cost"]["since_start"] = 0.5
    d["cost"]["daily"][0]["price_per_kwh"] = 0.3
    return d


def _with(path: str, literal: str) -> str:
    """The full snapshot as JSON text with the field at `path` set to `literal` verbatim."""
    d = _full_snapshot()
    obj = d
    *head, last = path.split(".")
    for p in head:
        obj = obj[int(p)] if p.isdigit() else obj[p]
    obj[last] = "@@POISON@@"
    return json.dumps(d).replace('"@@POISON@@"', literal)


def test_the_full_snapshot_is_valid() -> None:
    NodeSnapshot.model_validate_json(json.dumps(_full_snapshot()))


@pytest.mark.parametrize("path", NUMERIC_FIELDS)
def test_every_numeric_field_refuses_non_finite_and_absurd_values(path: str) -> None:
    for literal in POISON:
        with pytest.raises(ValidationError) as info:
            NodeSnapshot.model_validate_json(_with(path, literal))
        locs = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
        assert path in locs or not locs - {""}, (path, literal, locs)


def test_lists_and_strings_are_bounded() -> None:
    gpus = snapshot_dict("n") | {"gpus": [{"index": i, "name": "g"} for i in range(10_000)]}
    long = snapshot_dict("x" * 1_000_000)
    problems = snapshot_dict("n") | {"problems": ["p"] * 1000}
    for d, where in ((gpus, "gpus"), (long, "node.hostname"), (problems, "problems")):
        with pytest.raises(ValidationError) as info:
            NodeSnapshot.model_validate_json(json.dumps(d))
        assert ".".join(map(str, info.value.errors()[0]["loc"])) == where
    huge_seq = json.dumps(snapshot_dict("n")).replace('"seq": 0', f'"seq": {HUGE_INT}')
    with pytest.raises(ValidationError):
        NodeSnapshot.model_validate_json(huge_seq)


def test_action_and_audit_numbers_are_bounded_too() -> None:
    with pytest.raises(ValidationError):
        ActionResult.model_validate_json('{"ok": true, "action": "x", "duration_ms": Infinity}')
    with pytest.raises(ValidationError):
        ActionResult.model_validate_json('{"ok": true, "action": "x", "exit_code": 1e30}')
    with pytest.raises(ValidationError):
        ActionEvent.model_validate_json('{"phase": "started", "action": "x", "audit_seq": -1}')
    entry = {"seq": 1, "ts": float("nan"), "status": "ok", "http_status": 200}
    with pytest.raises(ValidationError):
        AuditEntry.model_validate(entry | {"prev_hash": "0", "hash": "0"})


def test_text_is_kept_as_sent_and_cleaned_for_display() -> None:
    d = _full_snapshot()
    d["node"]["hostname"] = "h\x1b]0;owned\x07"
    d["problems"] = ["p\x1b[2J"]
    d["engines"][0]["error"] = "line1\nline2"
    raw = json.dumps(d)
    kept = NodeSnapshot.model_validate_json(raw)
    assert kept.node.hostname == "h\x1b]0;owned\x07"  # the aggregator and agent keep it as is
    shown = NodeSnapshot.model_validate_json(raw, context=DISPLAY)
    assert shown.node.hostname == "h␛]0;owned␇"
    assert shown.problems == ["p␛[2J"] and shown.engines[0].error == "line1␊line2"
    # what the views get: the snapshot parsed for display, the node's and config's text cleaned
    view = NodeView(
        name="n",
        url="http://h",
        role="r\x1b[1A",
        reasons=["x\r"],
        last_error="\x9bE",
        chain_detail="\u202ed",
        snapshot_json=raw,
    )
    assert view.snapshot is not None and view.snapshot.node.hostname == "h␛]0;owned␇"
    assert (view.role, view.reasons, view.last_error, view.chain_detail) == (
        "r␛[1A",
        ["x␍"],
        "\\x9bE",
        "\\u202ed",
    )
    ev = FleetEvent(0.0, "n", "state", "A -> B: \x1b]52;c;x\x07")
    assert ev.summary == "A -> B: ␛]52;c;x␇"


def test_sse_retry_fields_that_int_refuses_are_ignored() -> None:
    from fleettui.aggregator.transport.sse import SSEParser

    p = SSEParser()
    events = p.feed(b"retry: \xc2\xb2\nretry: " + b"9" * 5000 + b"\ndata: x\n\n")
    assert [(e.data, e.retry) for e in events] == [("x", None)]
    assert [e.retry for e in p.feed(b"retry: 1500\ndata: y\n\n")] == [1500]


def test_power_history_never_overflows() -> None:
    h = PowerHistory()
    for ts, w in ((math.inf, 1.0), (1e308, 1.0), (math.nan, 1.0), (-1.0, 1.0), (10.0, math.nan)):
        assert not h.add(ts, w)
    assert not h.add(10.0, 5.0)  # the first sample starts a bucket; it completes with the next
    assert h.add(10.0 + h.bucket_s, 6.0) and h.values() == [5.0]


# --- any failure is the node's state and reason ------------------------------------------


def _cfg(*nodes: tuple[str, str, str]) -> FleetConfig:
    d = Defaults(http_timeout_s=2, poll_interval_s=0.2, backoff_min_s=0.2, backoff_max_s=0.5)
    return FleetConfig(
        path=None, defaults=d, nodes=[NodeConfig(name=n, url=u, kind=k) for n, u, k in nodes]
    )


@pytest.mark.anyio
async def test_a_bug_in_one_node_is_its_reason_and_the_others_go_on() -> None:
    """A kind that raises something nobody foresaw (simulated: every real input is refused
    before it could) makes that node DEGRADED with the reason; poll_once still answers for
    every node, and a live stream whose event trips on the way is that stream's reason."""
    async with anyio.create_task_group() as tg:
        good = await FakeAgent(name="good").start(tg)
        bad = await FakeAgent(name="bad").start(tg)
        cfg = _cfg(("good", good.url, "fleettui"), ("bad", bad.url, "fleettui"))
        agg = FleetAggregator(cfg, verify_chain=False, freeze_gc=False)
        worker = agg._by_name["bad"]

        async def broken(timeout_s: float) -> NodeSnapshot:
            raise OverflowError("int too large to convert [/] \x1b]0;owned\x07")

        worker.fetch_snapshot = broken  # type: ignore[method-assign]
        views = {v.name: v for v in await agg.poll_once(5)}
        assert views["good"].state is NodeState.ONLINE
        assert views["bad"].state is NodeState.DEGRADED
        assert views["bad"].reasons == [
            "snapshot: unusable answer (OverflowError: int too large to convert [/] ␛]0;owned␇)"
        ]

        def trips(*args: object) -> None:
            raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")

        async with FleetAggregator(cfg, verify_chain=False, freeze_gc=False) as live:
            w = live._by_name["good"]
            await _wait(lambda: w.view.stream_ok, "stream up")
            w.apply_snapshot = trips  # type: ignore[method-assign]
            stream = w.stream
            assert stream is not None
            await _wait(lambda: stream.error is not None, "stream failed")
            assert stream.error.startswith("bad snapshot event: unusable answer (ValueError")
        tg.cancel_scope.cancel()


async def _wait(cond, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with anyio.fail_after(timeout):
        while not cond():
            await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_dispatch_turns_an_unforeseen_exception_into_that_nodes_reason() -> None:
    from fleettui.aggregator.kinds.fleettui import FleettuiKind

    async with anyio.create_task_group() as tg:
        ok = await FakeAgent(name="ok").start(tg)
        nodes = [NodeConfig(name=n, url=ok.url, token="t") for n in ("a", "b")]
        original = FleettuiKind.act

        async def act(self, client, node, *args):  # type: ignore[no-untyped-def]
            if node.name == "b":
                raise RuntimeError("[bold]\x1b[2J")
            return await original(self, client, node, *args)

        FleettuiKind.act = act  # type: ignore[method-assign]
        try:
            env = await send_action(nodes, "unload", "ollama")
        finally:
            FleettuiKind.act = original  # type: ignore[method-assign]
        assert env.failed == {
            "a": "HTTP 404: not found",  # sent and answered, whatever happened to b
            "b": "unusable answer (RuntimeError: [bold]␛[2J)",
        }
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_asiai_and_ollama_kinds_map_hostile_answers_to_reasons() -> None:
    asiai_bad = {
        "ts": 1e308,
        "cpu_cores": math.inf,
        "mem_total": math.nan,
        "gpu_utilization_pct": math.inf,
        "power_total_watts": -4665,
        "engines_status": [{"name": "e\x1b]0;x\x07", "reachable": True}],
    }
    asiai_odd = {  # not measurable rather than wrong: NaN/Infinity sentinels read as "none"
        "ts": 1_700_000_000,
        "cpu_cores": math.inf,
        "power_total_watts": math.nan,
        "mem_used": 2 * 1024**3,
        "mem_total": 1024**3,  # used > total: a pressure over 100 % is refused
    }
    hostile = OllamaModel("m\x1b[2J", math.inf)  # type: ignore[arg-type]
    with (
        running(FakeAsiai(snapshot=asiai_bad)) as a1,
        running(FakeAsiai(snapshot=asiai_odd)) as a2,
        running(FakeOllama([hostile], version="0.1\x1b]52;c;x\x07")) as ol,
    ):
        cfg = _cfg(
            ("a1", a1.url, "asiai"),
            ("a2", a2.url, "asiai"),
            ("ol", ol.url, "ollama"),
        )
        views = {v.name: v for v in await FleetAggregator(cfg).poll_once(5)}
    assert views["a1"].state is NodeState.DEGRADED
    assert views["a1"].reasons[0].startswith("snapshot: bad answer from /api/v1/snapshot: out of")
    assert views["a2"].state is NodeState.DEGRADED
    assert "out of bounds: pressure_pct: " in views["a2"].reasons[0]
    ol_view = views["ol"]
    assert ol_view.state is NodeState.ONLINE and ol_view.snapshot is not None
    assert ol_view.snapshot.engines[0].models[0].name == "m␛[2J"
    assert ol_view.snapshot.engines[0].models[0].size_mb is None  # Infinity is "not measured"
    assert ol_view.snapshot.node.agent_version == "ollama 0.1␛]52;c;x␇"


# --- the hostile fleet -------------------------------------------------------------------


def fleet_cli(*args: str, config: Path, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "FLEET_CONFIG": str(config), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "fleettui", *args], capture_output=True, env=env, timeout=timeout
    )


def _text(out: bytes) -> str:
    return out.decode("utf-8", errors="surrogateescape")


@pytest.fixture
def healthy(agent_factory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Two real agents, each its own `fleet agent serve --simulate` process."""
    urls: dict[str, str] = {}
    for name in ("ok-a", "ok-b"):
        urls |= agent_factory("--simulate", "--name", name, "--interval", "0.2").urls
    return urls


def test_status_ping_rich_push_and_ls_name_every_node_and_leak_nothing(
    healthy: dict[str, str], tmp_path: Path
) -> None:
    with hostile_fleet() as nodes:
        cfg = tmp_path / "projects.toml"
        cfg.write_text(fleet_toml(nodes, healthy, http_timeout_s=3))
        cfg.chmod(0o600)
        r = fleet_cli("status", "--json", "--timeout", "10", config=cfg)
        assert r.returncode == 1, _text(r.stderr)
        assert b"Traceback" not in r.stderr
        doc = json.loads(r.stdout)
        by = {n["name"]: n for n in doc["nodes"]}
        assert set(by) == set(nodes) | set(healthy)
        for name in nodes:
            assert by[name]["state"] == "DEGRADED" and by[name]["reasons"], by[name]
        for name in healthy:
            assert by[name]["state"] == "ONLINE" and by[name]["reasons"] == [], by[name]
        assert not leaks(_text(r.stdout))  # json escapes them anyway; the text is clean too
        reasons = {n: by[n]["reasons"][0] for n in nodes}
        assert reasons["h-nan"].startswith("snapshot: bad snapshot: out of bounds: ")
        assert "gpus: List should have at most 256 items" in reasons["h-gpus"]
        assert "node.hostname: String should have at most 256 characters" in reasons["h-long"]
        assert reasons["h-500"].startswith("snapshot: HTTP 500: [/]boom[bold]␛]0;owned")
        assert reasons["h-osc52"] == "problem␛]52;c;b3duZWQ=␇osc52"
        assert by["h-markup"]["engines"][0]["name"] == f"ollama{MARKUP}"
        assert doc["summary"]["online"] == 2 and doc["summary"]["degraded"] == len(nodes)

        runs = {
            "status": ("status", "--timeout", "10"),
            "rich": ("--rich", "--once"),
            "push": ("push", "h-markup", "restart", "--engine", "ollama"),
            **{f"ping {n}": ("ping", n) for n in nodes},
        }
        # a few at a time: each is mostly a Python start-up, which two cores run side by side
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {
                what: pool.submit(fleet_cli, *argv, config=cfg) for what, argv in runs.items()
            }
            outputs = {what: f.result() for what, f in futures.items()}
        for what, out in outputs.items():
            text = _text(out.stdout) + _text(out.stderr)
            assert not leaks(text), (what, leaks(text))
            assert "Traceback" not in text, (what, text[-2000:])
        assert "␛]52;c;b3duZWQ=␇osc52" in _text(outputs["ping h-osc52"].stdout)
        assert MARKUP in _text(outputs["ping h-markup"].stdout)  # shown literally, not rendered
        assert outputs["rich"].returncode == 0
        totals = _text(outputs["rich"].stdout).strip().splitlines()[-1]
        # no "-4,665 W", no "€-inf": only the healthy and the valid hostile nodes count
        assert re.fullmatch(
            r"online 2/18 │ [\d,]+ W( \(\w+\))? │ \S?[\d.]+k? 7d │ 16 degraded", totals
        ), totals
        title = _text(outputs["status"].stdout).splitlines()[0]
        assert f"2/{len(nodes) + 2} ONLINE, {len(nodes)} DEGRADED" in title
        push = _text(outputs["push"].stdout)
        assert outputs["push"].returncode == 1 and "[/]boom[bold]␛]0;owned" in push

    role = 'role = "\\u001b]0;owned\\u0007"\n'
    cfg.write_text(cfg.read_text().replace('token = "tok_hostile"\n', role, 1))
    ls = fleet_cli("ls", config=cfg)
    assert not leaks(_text(ls.stdout) + _text(ls.stderr))


@pytest.mark.slow
@pytest.mark.anyio
async def test_dashboard_stays_up_with_healthy_rows_fresh_and_no_node_escape_on_screen(
    healthy: dict[str, str], tmp_path: Path
) -> None:
    from fleettui.views.tui.app import FleetApp
    from fleettui.views.tui.screens.confirm import ConfirmActionScreen
    from fleettui.views.tui.screens.detail import DetailScreen

    with hostile_fleet() as nodes:
        path = tmp_path / "projects.toml"
        path.write_text(
            fleet_toml(
                nodes,
                healthy,
                poll_interval_s=0.2,
                http_timeout_s=10,  # no node here hangs: an audit page late under load is no error
                backoff_min_s=0.2,
                backoff_max_s=0.5,
            )
        )
        path.chmod(0o600)
        cfg = load_fleet_config(path)
        async with FleetAggregator(cfg) as agg:
            app = FleetApp(agg, min_refresh_s=0.1, tick_s=0.5)
            frames: list[str] = []
            display = app._display

            def capture(screen, renderable) -> None:  # type: ignore[no-untyped-def]
                if renderable is not None and hasattr(renderable, "render_segments"):
                    frames.append(renderable.render_segments(app.console))  # what a tty gets
                display(screen, renderable)

            app._display = capture  # type: ignore[method-assign]
            async with app.run_test(size=(160, 45), notifications=True) as pilot:
                table = app.main.table
                await until(
                    pilot,
                    lambda: (
                        all(cell(app, n) == "ONLINE" for n in healthy)
                        and all(cell(app, n) == "DEGRADED" for n in nodes)
                    ),
                    what="every row in its state",
                )
                t_end = time.monotonic() + DASHBOARD_S
                visited = False
                while time.monotonic() < t_end:
                    before = {n: table.views[n].version for n in healthy}
                    await until(
                        pilot,
                        lambda b=before: all(table.views[n].version > b[n] for n in healthy),
                        timeout=5,
                        what="healthy rows keep updating",
                    )
                    for n in healthy:
                        v = table.views[n]
                        assert v.state is NodeState.ONLINE
                        assert v.last_seen is not None and time.time() - v.last_seen < 2.0
                    if not visited:  # every screen that shows node text, once
                        visited = True
                        await _visit_screens(app, pilot, DetailScreen, ConfirmActionScreen)
                    await pilot.pause(0.5)
                assert app.is_running
                lines = screen_lines(app)
        assert frames
        for frame in frames:
            assert not leaks(frame, styled=True), leaks(frame, styled=True)
        shown = "\n".join(lines)
        assert "␛" in shown and not leaks(shown)


async def _visit_screens(app, pilot, detail_cls, confirm_cls) -> None:  # type: ignore[no-untyped-def]
    """Detail of a node of each escape class and of markup; the confirm dialog and the failure
    notification (the node's 500 has markup and escapes in it) for the markup node.

    Through the key bindings' actions, not `pilot.press`: that waits until every widget is idle,
    which an app refreshing 18 live rows ten times a second takes seconds to be."""
    from fleettui.views.tui.screens.confirm import ActionChoice

    table = app.main.table
    for name in [f"h-{k}" for k in ESCAPES] + ["h-markup"]:
        table.move_cursor(row=table.visible_names.index(name))
        table.action_choose()  # enter
        await until(pilot, lambda: isinstance(app.screen, detail_cls), what=f"{name} detail")
        screen = app.screen
        await until(pilot, lambda s=screen: s.audit_entries is not None, what="audit loaded")
        assert len(screen.audit_entries) == 3 and screen.audit_error is None
        await pilot.pause(0.2)  # drawn, live updates included
        screen.action_back()  # escape
        await until(pilot, lambda: not isinstance(app.screen, detail_cls), what="back")
    app.main.action_node_action("restart")  # R
    await until(pilot, lambda: isinstance(app.screen, confirm_cls), what="confirm")
    await pilot.pause(0.2)
    # The engines offered are the nodes' own names, markup included: no request is built
    # from one the wire's rule refuses, and the reason says so without drawing the markup.
    assert app.screen.engine is not None and "[" in app.screen.engine
    app.screen.action_confirm()  # y
    await until(pilot, lambda: app.bulk.last is not None, what="refused locally")
    assert "is not a valid engine name" in app.bulk.last.failed["h-markup"]
    app.bulk.last = None
    app.main.action_node_action("restart")
    await until(pilot, lambda: isinstance(app.screen, confirm_cls), what="confirm again")
    targets = [v.name for v in app.screen.targets]
    # a valid engine name: sent, and the node's 500 is the reason
    app.screen.dismiss(ActionChoice("restart", targets, "ollama", None))
    await until(pilot, lambda: app.bulk.last is not None, what="action done")
    assert "HTTP 500: [/]boom[bold]␛]0;owned" in app.bulk.last.failed["h-markup"]
    await until(
        pilot,
        lambda: any("restart ollama:" in str(n.message) for n in app._notifications),
        what="failure notified",  # (the start-up alert for the DEGRADED rows is one too)
    )
    await pilot.pause(0.3)  # the toast is drawn
