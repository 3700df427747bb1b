"""Alerts in the real dashboard over the real FleetAggregator and real agents: a node down from
the start is one summary, a node killed later is one notification, one bell and (with
--notify) one OSC 9 and one OSC 777, however long it stays down."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from actionfleet import send_action
from fake_nodes import running
from fleettui.agent.tokens import create_token, tokens_path
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.config import load_fleet_config
from fleettui.views.tui.alerting import AlertTiming
from fleettui.views.tui.app import FleetApp
from fleettui.views.tui.screens.confirm import ConfirmActionScreen
from hostile_nodes import ESCAPES, HostileAgent, _escaped, leaks
from pilot_util import cell, until

pytestmark = pytest.mark.anyio


async def test_a_killed_node_is_one_notification_one_bell_one_desktop_notice(
    agent_factory, tmp_path: Path
) -> None:
    pair = agent_factory(
        "--simulate", "--nodes", "2", "--name", "pair", "--interval", "0.2", nodes=2
    )
    solo = agent_factory("--simulate", "--name", "solo", "--interval", "0.2")
    cfg_path = tmp_path / "projects.toml"
    blocks = [
        f'[[node]]\nname = "{name}"\nurl = "{url}"\n'
        for name, url in [*pair.urls.items(), *solo.urls.items(), ("dead", "http://127.0.0.1:1")]
    ]
    cfg_path.write_text(
        "[defaults]\npoll_interval_s = 0.2\nhttp_timeout_s = 1\nbackoff_min_s = 0.2\n"
        "backoff_max_s = 0.5\n\n" + "\n".join(blocks)
    )
    cfg = load_fleet_config(cfg_path)
    bells: list[int] = []
    writes: list[str] = []
    async with FleetAggregator(cfg) as agg:
        app = FleetApp(
            agg,
            read_only=True,  # read-only still alerts
            min_refresh_s=0.05,
            tick_s=0.2,
            notify_desktop=True,
            bell=lambda: bells.append(1),
            terminal_write=writes.append,
            alert_timing=AlertTiming(quiet_s=0.3, max_s=2.0, start_max_s=5.0),
        )
        relay = app.alerts

        def alerts() -> list[str]:
            return [str(n.message) for n in app._notifications if n.title.startswith("fleet")]

        def settled(count: int) -> bool:
            return len(relay.sent) == count and relay.gate.due() is None

        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: settled(1), timeout=10, what="the start-up summary")
            assert alerts() == ["dead OFFLINE: connection refused"]  # the others came up fine
            assert relay.sent[0].title == "fleet: at start"
            assert all(cell(app, n, "state") == "ONLINE" for n in ("pair-000", "pair-001", "solo"))
            assert len(bells) == 1 and len(writes) == 2

            solo.stop()
            await until(pilot, lambda: settled(2), timeout=10, what="the alert for solo")
            assert cell(app, "solo", "state") == "OFFLINE"
            (solo_alert,) = alerts()[1:]
            assert solo_alert.startswith("solo OFFLINE: ")
            assert len(bells) == 2
            osc9, osc777 = writes[2:]
            assert osc9.startswith("\x1b]9;fleet: solo OFFLINE: ") and osc9.endswith("\x07")
            assert osc777.startswith("\x1b]777;notify;fleet;solo OFFLINE: ")

            # it stays down, retried again and again (backoff at most 0.5 s): nothing more
            retries: set[float | None] = set()

            def retried() -> bool:
                view = agg.node("solo")
                retries.add(view.retry_at if view is not None else None)
                return len(retries - {None}) >= 4

            await until(pilot, retried, timeout=10, what="solo retried")
            await pilot.pause(0.5)  # a last quiet window for anything the retries raised
            assert len(alerts()) == 2 and len(bells) == 2 and len(writes) == 4


async def test_a_rack_going_down_is_one_summary_and_one_bell(agent_factory, tmp_path: Path) -> None:
    """40 nodes in one agent process: killing it takes them all down at once."""
    rack = agent_factory(
        "--simulate", "--nodes", "40", "--name", "rack", "--interval", "0.3", nodes=40
    )
    blocks = [f'[[node]]\nname = "{name}"\nurl = "{url}"\n' for name, url in rack.urls.items()]
    cfg_path = tmp_path / "projects.toml"
    cfg_path.write_text(
        "[defaults]\npoll_interval_s = 0.3\nhttp_timeout_s = 1\nbackoff_min_s = 0.3\n"
        "backoff_max_s = 1\n\n" + "\n".join(blocks)
    )
    cfg = load_fleet_config(cfg_path)
    bells: list[int] = []
    async with FleetAggregator(cfg) as agg:
        app = FleetApp(
            agg,
            min_refresh_s=0.1,
            bell=lambda: bells.append(1),
            alert_timing=AlertTiming(quiet_s=0.5, max_s=3.0),
        )
        async with app.run_test(size=(160, 40)) as pilot:
            names = list(rack.urls)
            await until(
                pilot, lambda: all(cell(app, n) == "ONLINE" for n in names), what="all ONLINE"
            )
            rack.stop()
            await until(
                pilot, lambda: all(cell(app, n) == "OFFLINE" for n in names), what="all OFFLINE"
            )
            await until(pilot, lambda: app.alerts.gate.due() is None, what="nothing pending")
            (notice,) = app.alerts.sent
            assert re.fullmatch(r"40 nodes OFFLINE: rack-\d+, rack-\d+, rack-\d+ \+37", notice.text)
            assert bells == [1]


def failing_agent_config(tmp: Path) -> tuple[Path, str]:
    """agent.toml whose ollama restart exits 3 (the agent runs it, audits it, reports the
    failure); llamacpp's is the simulator's own, which works and takes it down for 3 s."""
    cfg = tmp / "agentcfg" / "agent.toml"
    cfg.parent.mkdir(parents=True)
    argv = json.dumps([sys.executable, "-c", "import sys; sys.exit(3)"])
    cfg.write_text(
        "interval_s = 0.3\nrate_limit_per_min = 1000\n"
        f"[engines.ollama]\ncommands.restart = {argv}\n"
    )
    _, secret = create_token(tokens_path(cfg), "tests")
    return cfg, secret


async def test_a_failed_action_alerts_once_whoever_sent_it(agent_factory, tmp_path: Path) -> None:
    """Sent from elsewhere (`fleet bulk`): the agent's stream tells it, one alert. Sent from this
    dashboard: its own summary toast and one bell, the stream's report of it not again, and a
    restart that works takes its engine down for a while without an alert."""
    agent_cfg, secret = failing_agent_config(tmp_path)
    agent = agent_factory("--simulate", "--name", "box", "--config", str(agent_cfg))
    token = tmp_path / "token"
    token.write_text(secret)
    token.chmod(0o600)
    cfg_path = tmp_path / "projects.toml"
    cfg_path.write_text(
        "[defaults]\npoll_interval_s = 0.3\nhttp_timeout_s = 2\n\n"
        f'[[node]]\nname = "box"\nurl = "{agent.urls["box"]}"\ntoken_file = "{token}"\n'
    )
    cfg = load_fleet_config(cfg_path)
    bells: list[int] = []
    writes: list[str] = []
    async with FleetAggregator(cfg) as agg:
        app = FleetApp(
            agg,
            min_refresh_s=0.05,
            tick_s=0.2,
            notify_desktop=True,
            bell=lambda: bells.append(1),
            terminal_write=writes.append,
            alert_timing=AlertTiming(quiet_s=0.3, max_s=2.0),
        )
        async with app.run_test(size=(160, 40)) as pilot:
            log = app.main.event_log

            def finished_failed() -> int:
                return sum("finished restart ollama: failed" in x.text for x in log.lines)

            await pilot.press("e")  # the log draws its lines only while shown
            await until(pilot, lambda: cell(app, "box") == "ONLINE", what="ONLINE")
            await until(pilot, lambda: agg.node("box").stream_ok, what="its stream up")
            env = await send_action(cfg.nodes, "restart", "ollama")  # another operator's
            assert list(env.failed) == ["box"]
            await until(pilot, lambda: len(app.alerts.sent) == 1, what="the stream's alert")
            (notice,) = app.alerts.sent
            assert notice.lines == ("box action failed: finished restart ollama: failed",)
            assert len(bells) == 1 and len(writes) == 2

            await pilot.press("R")  # llamacpp, the first engine offered: its restart works
            await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="modal")
            assert app.screen.engine == "llamacpp"
            await pilot.press("y")
            await until(pilot, lambda: app.bulk.last is not None, what="dispatch done")
            assert app.bulk.last.ok
            await until(
                pilot,
                lambda: any("ONLINE -> DEGRADED" in x.text for x in log.lines),
                what="the restarted engine down for a while",
            )
            await until(pilot, lambda: app.alerts.gate.due() is None, what="nothing pending")
            assert len(app.alerts.sent) == 1 and len(bells) == 1  # we did that: no alert

            app.bulk.last = None
            await pilot.press("R")
            await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="modal")
            for _ in range(5):  # the engines are offered by name
                if app.screen.engine != "ollama":
                    await pilot.press("down")
            assert app.screen.engine == "ollama"  # its restart exits 3
            await pilot.press("y")
            await until(pilot, lambda: app.bulk.last is not None, what="dispatch done")
            await until(pilot, lambda: finished_failed() == 2, what="the agent's report of it")
            await until(pilot, lambda: app.alerts.gate.due() is None, what="nothing pending")
            errors = [str(n.message) for n in app._notifications if n.severity == "error"]
            assert len(errors) == 2
            assert errors[1].startswith("restart ollama: 0 ok, 1 failed: box: ")
            assert len(app.alerts.sent) == 1  # the stream's report of our action: not again
            assert len(bells) == 2
            assert writes[2].startswith("\x1b]9;fleet: restart ollama: 0 ok, 1 failed: box: ")
            assert len(writes) == 4


async def test_a_hostile_reason_reaches_toast_and_desktop_as_text_only(tmp_path: Path) -> None:
    """A node whose problems hold every class of escape sequence: the alert's toast and both
    OSC sequences carry its reason as visible stand-ins, never a sequence of its own."""
    payload = "".join(ESCAPES.values())
    node = HostileAgent("h-all", json.dumps(_escaped(payload)).encode())
    with running(node):
        cfg_path = tmp_path / "projects.toml"
        cfg_path.write_text(
            f'[defaults]\npoll_interval_s = 0.3\n\n[[node]]\nname = "h-all"\nurl = "{node.url}"\n'
        )
        cfg = load_fleet_config(cfg_path)
        writes: list[str] = []
        async with FleetAggregator(cfg) as agg:
            app = FleetApp(
                agg, notify_desktop=True, bell=lambda: None, terminal_write=writes.append
            )
            async with app.run_test(size=(160, 40)) as pilot:
                await until(pilot, lambda: len(writes) == 2, what="the desktop notification")
                (notice,) = app.alerts.sent
    assert notice.text.startswith("h-all DEGRADED: ") and "␛" in notice.text
    assert not leaks(notice.text)
    for seq, head in zip(writes, ("\x1b]9;", "\x1b]777;notify;"), strict=True):
        assert seq.startswith(head) and seq.endswith("\x07")
        body = seq[len(head) : -1]
        assert not leaks(body) and "␛" in body
