"""Bulk actions from the dashboard, end to end: Pilot drives the keys, real agents act.

Three agents (simulated facts, real auth, real audit, a recording restart script) and one dead
port; `a` selects all four, `R` asks, `y` confirms.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actionfleet import ActionFleet
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.state import ChainStatus, NodeState
from fleettui.config import load_fleet_config
from fleettui.views.tui.app import FleetApp
from fleettui.views.tui.screens.confirm import ConfirmActionScreen
from pilot_util import cell, until

pytestmark = pytest.mark.anyio


def projects_toml(fleet: ActionFleet, tmp_path: Path) -> Path:
    token = tmp_path / "token"
    token.write_text(fleet.secret)
    token.chmod(0o600)
    body = "[defaults]\npoll_interval_s = 0.3\nhttp_timeout_s = 1\nchain_recheck_s = 0.3\n"
    for name, url in [*fleet.urls.items(), ("dead", fleet.dead_url)]:
        body += f'\n[[node]]\nname = "{name}"\nurl = "{url}"\ntoken_file = "{token}"\n'
    path = tmp_path / "projects.toml"
    path.write_text(body)
    return path


async def test_bulk_restart_from_the_keyboard(fleet: ActionFleet, tmp_path: Path) -> None:
    cfg = load_fleet_config(projects_toml(fleet, tmp_path))
    names = [*fleet.urls, "dead"]
    async with FleetAggregator(cfg) as agg:
        app = FleetApp(agg, min_refresh_s=0.05, tick_s=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(
                pilot,
                lambda: (
                    all(cell(app, n) == "ONLINE" for n in fleet.urls)
                    and cell(app, "dead") == "OFFLINE"
                ),
                what="three ONLINE, one OFFLINE",
            )
            await pilot.press("a", "R")
            await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="modal")
            modal = app.screen
            assert modal.engine == "ollama"  # every simulated node runs it
            assert [v.name for v in modal.views] == names
            assert fleet.calls() == []  # nothing sent before the confirmation
            await pilot.press("y")
            await until(pilot, lambda: app.bulk.last is not None, what="dispatch done")
            env = app.bulk.last
            assert env.succeeded == list(fleet.urls) and list(env.failed) == ["dead"]
            assert env.failed["dead"] == "connection refused"
            for n in fleet.urls:  # the simulated restart takes ollama down for 3 s: DEGRADED
                live = app.main.views[n].state  # shows through the success note
                assert cell(app, n) == ("✓ ok" if live is NodeState.ONLINE else live.value)
            assert cell(app, "dead") == "✗ failed"
            assert app.main.table.selected == {"dead"}  # kept for a retry
            assert sorted(fleet.calls()) == [["ollama"]] * 3
            # the aggregator fetched and verified the three new audit entries
            await until(
                pilot,
                lambda: all(
                    (v := agg.node(n)).chain is ChainStatus.OK
                    and v.snapshot
                    and v.snapshot.audit.seq == 2
                    for n in fleet.urls
                ),
                what="chains verified at seq 2 (started, ok)",
            )
            await pilot.press("e")  # the event log pane
            log = app.main.event_log

            def text() -> str:
                return "\n".join(line.text for line in log.lines)

            await until(pilot, lambda: "FAILED" in text(), what="event log lines")
            lines = text()
            assert "restart ollama: FAILED: connection refused" in lines
            assert lines.count("action finished restart ollama: ok") == 3  # from the agents
            assert "restart ollama: 3/4 ok" in lines


async def test_cancel_sends_nothing_and_read_only_refuses(
    fleet: ActionFleet, tmp_path: Path
) -> None:
    cfg = load_fleet_config(projects_toml(fleet, tmp_path))
    async with FleetAggregator(cfg) as agg:
        app = FleetApp(agg, min_refresh_s=0.05, tick_s=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: cell(app, "act-000") == "ONLINE", what="online")
            await pilot.press("X")
            await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="modal")
            await pilot.press("escape")
            await pilot.pause(0.3)
            assert app.bulk.last is None and fleet.calls() == []
        app = FleetApp(agg, read_only=True, min_refresh_s=0.05, tick_s=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("a", "R")
            await pilot.pause(0.2)
            assert not isinstance(app.screen, ConfirmActionScreen)
            assert any("read-only" in str(n.message) for n in app._notifications)
    assert fleet.calls() == []
