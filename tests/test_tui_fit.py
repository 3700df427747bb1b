"""The dashboard's fit question: `F` asks, the Fit column answers (sorted, filterable with
`fit=`), the detail screen shows the ledger, the budget and the answer; on fixed data
(SampleSource over tests/fit_fleet.py's snapshots) and on the real aggregator against live
nodes, where the answer follows every snapshot."""

from __future__ import annotations

import copy

import pytest
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from fit_fleet import MODEL, fit_fleet, fit_snapshots
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.state import NodeState, NodeView
from fleettui.config import FleetConfig, NodeConfig
from fleettui.testing.sample import SAMPLE_NOW, SampleSource
from fleettui.testing.scenes import sample_app
from fleettui.views.tui.app import FleetApp
from fleettui.views.tui.screens.detail import DetailScreen
from fleettui.views.tui.screens.filter import FilterBar
from fleettui.views.tui.screens.fit import FitBar, parse_fit
from fleettui.wire import NodeSnapshot
from pilot_util import cell, until
from test_tui import shown, totals

pytestmark = pytest.mark.anyio


def fit_views() -> list[NodeView]:
    views = [
        NodeView(
            name=name,
            url=f"http://10.0.1.{i}:8899",
            state=NodeState.ONLINE,
            snapshot=NodeSnapshot.model_validate(snap),
            last_seen=SAMPLE_NOW - 1,
            version=1,
        )
        for i, (name, snap) in enumerate(fit_snapshots().items())
    ]
    views.append(NodeView(name="gone", url="http://10.0.1.9:8899", state=NodeState.OFFLINE))
    views[-1].reasons = ["connection refused"]
    return views


async def ask(pilot, text: str) -> None:
    bar = pilot.app.main.query_one(FitBar)
    await pilot.press("F")
    await until(pilot, lambda: bar.is_open, what="fit bar")
    bar.input.value = ""  # it opens with the question asked before
    await pilot.press(*text, "enter")
    await until(pilot, lambda: not bar.is_open, what="asked")


async def test_f_adds_a_sorted_fit_column_and_the_filter_reads_it() -> None:
    app = sample_app(SampleSource(fit_views()))
    async with app.run_test(size=(120, 30)) as pilot:
        t = app.main.table
        assert "fit" not in t.widths
        await ask(pilot, f"{MODEL} ctx=8192")
        assert "fit" in t.widths and t.sort_key == "fit"
        assert t.visible_names == ["roomy", "tight", "full", "gone"]  # best first
        assert cell(app, "roomy", "fit").startswith("fits +")
        assert cell(app, "tight", "fit") == "evict 1"
        assert cell(app, "full", "fit").startswith("no \u2212")
        assert cell(app, "gone", "fit") == "?"
        assert f"fit {MODEL} ctx=8192" in totals(app)

        await pilot.press("slash", *"fit=evict or fit=no", "enter")
        assert t.visible_names == ["tight", "full"]
        await pilot.press("slash")
        await until(pilot, lambda: app.main.query_one(FilterBar).is_open, what="filter")
        box = app.main.query_one("#filter-input", Input)
        box.value = "fit=maybe"
        await pilot.pause()
        assert "unknown fit 'maybe'" in shown(app.main.query_one("#filter-status", Static))
        await pilot.press("escape", "escape")  # cancel, then clear the filter
        assert len(t.visible_names) == 4

        await pilot.press("S")  # reversed: unknown answers still last
        assert t.visible_names == ["full", "tight", "roomy", "gone"]

        await ask(pilot, "")  # empty: the question and the column go
        assert "fit" not in t.widths and t.sort_key is None
        assert all(v.fit is None for v in t.views.values())


async def test_the_fit_screen_refuses_a_bad_question() -> None:
    app = sample_app(SampleSource(fit_views()))
    async with app.run_test(size=(120, 30)) as pilot:
        bar = app.main.query_one(FitBar)
        await pilot.press("F")
        await until(pilot, lambda: bar.is_open, what="fit bar")
        await pilot.press(*f"{MODEL} ctx=lots", "enter")
        assert bar.is_open and bar.has_class("error")  # still asking
        status = shown(app.main.query_one("#fit-status", Static))
        assert "ctx: a whole number from 1" in status
        bar.input.value = "nowhere:1b"
        await pilot.pause()
        assert "on no node" in shown(app.main.query_one("#fit-status", Static))
        await pilot.press("escape")
        assert "fit" not in app.main.table.widths


def test_parse_fit_takes_the_flags_of_fleet_fit() -> None:
    req, strategy = parse_fit("  qwen3:8b  ctx=32768 parallel=2 kv=q8_0 engine=ollama ")
    assert strategy == "binpack"
    assert parse_fit("m strategy=spread")[1] == "spread"
    assert (req.model, req.ctx, req.parallel, req.kv_type, req.engine) == (
        "qwen3:8b",
        32768,
        2,
        "q8_0",
        "ollama",
    )
    for bad, why in [
        ("", "name a model"),
        ("ctx=5", "the model comes first"),
        ("m ctx=0", "ctx: a whole number"),
        ("m parallel=9999", "parallel: a whole number"),
        ("-rf ctx=1", "is not a model name"),
        ("m kv=q3", "kv: one of"),
        ("m ctx", "expected key=value"),
        ("m ctx=1 ctx=2", "ctx given twice"),
        ("m gpus=2", "unknown option 'gpus'"),
        ("m strategy=best", "strategy: one of binpack, spread"),
        ("m strategy=spread strategy=binpack", "strategy given twice"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_fit(bad)


async def test_detail_shows_the_ledger_the_budget_and_the_answer() -> None:
    app = sample_app(SampleSource(fit_views()))
    async with app.run_test(size=(120, 60)) as pilot:
        await ask(pilot, MODEL)
        await pilot.press("down", "enter")  # tight
        await until(pilot, lambda: isinstance(app.screen, DetailScreen), what="detail")
        screen = app.screen
        fit = shown(screen.query_one("#d-fit", Static))
        assert f"Fit {MODEL}: fits after evicting" in fit
        assert "evict (idle): qwen-idle:14b" in fit and "kv cache" in fit
        ledger = shown(screen.query_one("#d-ledger", Static))
        for text in ("qwen-idle:14b", "coder-busy:7b", "idle", "busy", "4,096", "reported"):
            assert text in ledger
        assert "on disk, not loaded: llama3.1:8b" in ledger
        budget = shown(screen.query_one("#d-budget", Static))
        assert "24.0G gpu" in budget and "free 2.0G" in budget and "engines 18.0G" in budget


async def test_the_answer_follows_every_snapshot_on_the_real_aggregator() -> None:
    with fit_fleet() as nodes:
        cfg = FleetConfig(nodes=[NodeConfig(name=n, url=s.url) for n, s in nodes.items()])
        cfg.defaults.poll_interval_s = 0.2
        async with FleetAggregator(cfg, verify_chain=False) as agg:
            app = FleetApp(agg, min_refresh_s=0.05, tick_s=0.2)
            async with app.run_test(size=(120, 30)) as pilot:
                t = app.main.table
                await until(pilot, lambda: t.row_count == 3 and t.views["full"].snapshot)
                await ask(pilot, f"{MODEL} ctx=8192")
                await until(pilot, lambda: cell(app, "tight", "fit") == "evict 1", what="evict")
                assert agg.fit is not None and agg.fit.meta_from is not None
                # the idle model went away on the node: the next snapshot says it fits now
                snap = copy.deepcopy(nodes["tight"].snapshot)
                snap["engines"][0]["models"] = snap["engines"][0]["models"][1:]
                snap["budget"]["free_mb"] += 10 * 1024
                nodes["tight"].snapshot = snap
                await until(
                    pilot, lambda: cell(app, "tight", "fit").startswith("fits +"), what="fits"
                )
                assert t.visible_names[-1] == "full"


async def test_f_ranks_by_placement_and_explains_the_row_under_the_cursor() -> None:
    from fleettui.aggregator.placement import rank
    from fleettui.views.tui.screens.confirm import ConfirmActionScreen

    app = sample_app(SampleSource(fit_views()))
    async with app.run_test(size=(160, 30)) as pilot:
        t = app.main.table
        await ask(pilot, f"{MODEL} ctx=8192")
        views = list(t.views.values())
        assert t.visible_names == [p.node for p in rank(views, "binpack")]
        best = rank(views, "binpack")[0]
        assert best.node == "roomy" and best.score > 0

        def line() -> str:
            return shown(app.main.query_one("#place", Static))

        assert line().startswith(f"binpack #1/4 roomy  score {best.score:.0f}: fits · ")
        await pilot.press("down")
        tight = next(p for p in rank(views, "binpack") if p.node == "tight")
        assert line().startswith(f"binpack #2/4 tight  score {tight.score:.0f}: fits after")
        assert "-6 evicts idle qwen-idle:14b" in line()

        await pilot.press("b")  # the other strategy: same question, ranked for spread
        await until(pilot, lambda: app.main.strategy == "spread", what="spread")
        assert app.main.fit_text == f"{MODEL} ctx=8192 strategy=spread"
        views = list(t.views.values())
        spread = {p.node: p.score for p in rank(views, "spread")}
        assert {n: v.placement[0] for n, v in t.views.items()} == spread
        assert spread["roomy"] > best.score  # the emptiest node earns the headroom now
        assert "(spread)" in line()
        await pilot.press("b")
        await until(pilot, lambda: app.main.strategy == "binpack", what="binpack")
        assert app.main.fit_text == f"{MODEL} ctx=8192"

        await pilot.press("L")  # nothing selected: the best-ranked node, not the cursor's
        await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="modal")
        assert [v.name for v in app.screen.views] == ["roomy"]
        assert app.screen.model == MODEL
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmActionScreen), what="closed")
        t.move_cursor(row=t.visible_names.index("full"))
        await pilot.press("space", "L")  # a selection: the selection, whatever it scores
        await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="modal")
        assert [v.name for v in app.screen.views] == ["full"]


async def test_l_says_so_when_no_node_can_take_the_model() -> None:
    app = sample_app(SampleSource(fit_views()))
    async with app.run_test(size=(160, 30)) as pilot:
        await ask(pilot, "nosuch:1b")  # no node has its metadata: every node '?'
        assert all(v.placement is not None and v.placement[0] == 0 for v in app.main.views.values())
        await pilot.press("L")
        await pilot.pause()
        assert not isinstance(app.screen, ModalScreen)
        assert any("no node can take the model" in str(n.message) for n in app._notifications)
