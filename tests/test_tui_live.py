"""The dashboard on the real FleetAggregator and real agents: one node dies, the rest go on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.config import load_fleet_config
from fleettui.views.tui.app import FleetApp
from fleettui.views.tui.screens.detail import DetailScreen
from pilot_util import cell, until

pytestmark = pytest.mark.anyio


async def test_killed_node_turns_offline_while_the_others_keep_updating(
    agent_factory, tmp_path: Path
) -> None:
    pair = agent_factory(
        "--simulate", "--nodes", "2", "--name", "pair", "--interval", "0.2", nodes=2
    )
    solo = agent_factory("--simulate", "--name", "solo", "--interval", "0.2")
    cfg_path = tmp_path / "projects.toml"
    blocks = [
        f'[[node]]\nname = "{name}"\nurl = "{url}"\nrole = "inference"\n'
        for name, url in [*pair.urls.items(), *solo.urls.items()]
    ]
    cfg_path.write_text(
        "[defaults]\npoll_interval_s = 0.2\nhttp_timeout_s = 1\nbackoff_min_s = 0.2\n"
        "backoff_max_s = 0.5\n\n" + "\n".join(blocks)
    )
    cfg = load_fleet_config(cfg_path)
    names = [n.name for n in cfg.nodes]
    assert names == ["pair-000", "pair-001", "solo"]

    async with FleetAggregator(cfg) as agg:
        app = FleetApp(agg, min_refresh_s=0.05, tick_s=0.2)
        async with app.run_test(size=(200, 50)) as pilot:
            t = app.main.table
            await until(
                pilot,
                lambda: t.row_count == 3 and all(cell(app, n, "state") == "ONLINE" for n in names),
                what="all ONLINE",
            )
            await until(
                pilot,
                lambda: all(re.search(r"\d W\b", cell(app, n, "power")) for n in names),
                what="power filled",
            )
            for n in names:  # every column has something to show
                for col in ("engines", "models", "gpu", "cost", "audit", "latency", "seen"):
                    assert cell(app, n, col).strip(), (n, col)
            await pilot.press("down", "space")  # cursor and selection on pair-001
            solo.stop()
            await until(pilot, lambda: cell(app, "solo", "state") == "OFFLINE", what="OFFLINE")
            before = {n: t.views[n].version for n in names[:2]}
            await until(
                pilot,
                lambda: all(t.views[n].version > before[n] for n in names[:2]),
                what="the others keep updating",
            )
            assert all(cell(app, n, "state") == "ONLINE" for n in names[:2])
            assert t.cursor_name == "pair-001" and t.selected == {"pair-001"}

            await pilot.press("enter")  # detail with the audit fetched from the real agent
            await until(pilot, lambda: isinstance(app.screen, DetailScreen), what="detail")
            screen = app.screen
            await until(
                pilot,
                lambda: screen.audit_entries is not None or screen.audit_error is not None,
                what="audit loaded",
            )
            assert screen.audit_error is None and screen.audit_entries == []
            await pilot.press("escape", "e")
            log = app.main.event_log
            await until(
                pilot,
                lambda: any("OFFLINE" in line.text for line in log.lines),
                what="event log shows the state change",
            )


async def test_start_up_transitions_and_config_warnings_reach_the_screen(
    sim_agent, tmp_path: Path
) -> None:
    """A node that is down from the start, and an entry skipped for a typo, are both on screen:
    the transition in the event log (it happened before the log existed), the typo in a banner,
    the event log and the totals."""
    from fleettui.views.tui.widgets import EventLog, TotalsBar

    cfg_path = tmp_path / "projects.toml"
    cfg_path.write_text(
        "[defaults]\npoll_interval_s = 0.2\nhttp_timeout_s = 1\n\n"
        f'[[node]]\nname = "alpha"\nurl = "{sim_agent.urls["alpha"]}"\n\n'
        '[[node]]\nname = "dead"\nurl = "http://127.0.0.1:1"\n\n'
        '[[node]]\nname = "typo"\nurl = "http://127.0.0.1:2"\ntokn_env = "T"\n'
    )
    cfg = load_fleet_config(cfg_path)
    async with FleetAggregator(cfg) as agg:
        app = FleetApp(agg, min_refresh_s=0.05, tick_s=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            log = app.main.query_one(EventLog)
            await pilot.press("e")  # the log draws lines only while it is shown
            await until(pilot, lambda: cell(app, "dead", "state") == "OFFLINE", what="OFFLINE")
            await until(
                pilot,
                lambda: any("dead" in line.text and "OFFLINE" in line.text for line in log.lines),
                what="the start-up transition in the event log",
            )
            assert any(
                "tokn_env: unknown key (did you mean token_env?)" in x.text for x in log.lines
            )
            banner = app.main.query_one("#config-warnings")
            assert banner.display
            assert "1 node skipped" in str(banner.render()) and "typo" in str(banner.render())
            totals = str(app.main.query_one(TotalsBar).render())
            assert "online 1/3" in totals and "1 skipped" in totals
