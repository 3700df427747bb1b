"""Per-host and per-GPU depth: the CPU, Mem, GPU and Why columns, GPU sub-rows that expand and
fold under their node, and the simulator's GPUs (each its own load, within the node's watts)."""

from __future__ import annotations

import pytest

from fleettui.aggregator.state import NodeState, short_gpu_name
from fleettui.testing.sample import SAMPLE_NOW, SampleSource, generated_views, sample_views
from fleettui.testing.scenes import sample_app
from fleettui.views.columns import BY_KEY, short_reason, sorted_views, why_text
from fleettui.views.tui.table import GPU_SEP
from pilot_util import screen_lines, until

VIEWS = {v.name: v for v in sample_views()}


def cell(name: str, key: str, width: int = 40) -> str:
    return BY_KEY[key].cell(VIEWS[name], width, SAMPLE_NOW, False).plain


def test_short_gpu_names() -> None:
    assert short_gpu_name("NVIDIA H100 80GB HBM3") == "H100"
    assert short_gpu_name("NVIDIA GeForce RTX 4090") == "4090"
    assert short_gpu_name("NVIDIA L40S") == "L40S"
    assert short_gpu_name("Apple M2 Ultra GPU") == "M2Ultra"


def test_gpu_column_says_count_model_and_the_busiest_gpu() -> None:
    view = VIEWS["gpu-a1"]
    gpus = view.snapshot.gpus
    busiest = max(gpus, key=lambda g: g.util_pct)
    text = cell("gpu-a1", "gpu")
    assert text.startswith(f"{len(gpus)}\N{MULTIPLICATION SIGN}H100 {busiest.util_pct:.0f}%")
    assert f"{busiest.temp_c:.0f}°C" in text
    assert f"{100 * busiest.power_w / busiest.power_limit_w:.0f}%P" in text
    # sorting by GPU sorts by the figure shown: the busiest GPU's utilisation
    ordered = sorted_views(VIEWS.values(), "gpu", reverse=True)
    shown = [v.facts.gpu.util_pct for v in ordered if v.facts and v.facts.gpu]
    assert shown == sorted(shown, reverse=True) and len(shown) >= 5


def test_cpu_and_mem_columns() -> None:
    snap = VIEWS["gpu-a1"].snapshot
    assert cell("gpu-a1", "cpu", 4) == f"{snap.cpu.percent:.0f}%".rjust(4)
    assert cell("gpu-a1", "mem", 11) == "96/256G 38%"  # used/total, then the pressure


def test_why_is_empty_when_online_and_short_otherwise() -> None:
    assert why_text(VIEWS["gpu-a1"]) == ""
    assert short_reason("engine vllm down: connection refused") == "vllm down: connection refused"
    assert short_reason("audit chain BROKEN: seq 12: hash mismatch") == "chain BROKEN"
    assert short_reason("snapshot stale: not updated for 40 s") == "stale 40 s"
    for v in VIEWS.values():
        if v.state is not NodeState.ONLINE:
            assert why_text(v), v.name  # every row that is not ONLINE says why
    assert cell("gpu-b1", "why", 14) == "vllm down: co…"


def test_simulated_gpus_differ_and_stay_within_the_node_watts() -> None:
    from fleettui.agent.collect.energy import EnergyLedger, EnergyMeter
    from fleettui.agent.simulate import SimulatedNode

    multi = 0
    for i in range(40):
        node = SimulatedNode(f"sim-{i}", clock=lambda: 1_760_000_000.0)
        snap = node.snapshot(EnergyLedger(None, 0.3, "EUR"), EnergyMeter(sample_s=2.0, started=0))
        assert sum(g.power_w or 0 for g in snap.gpus) <= snap.power.watts
        for g in snap.gpus:
            assert g.power_limit_w is None or g.power_w <= g.power_limit_w
        if len(snap.gpus) > 1:
            multi += 1
            assert len({g.util_pct for g in snap.gpus}) > 1  # not identical copies
    assert multi >= 5


def test_sample_gpus_stay_within_the_node_watts() -> None:
    for v in VIEWS.values():
        if v.snapshot and v.snapshot.gpus and v.snapshot.power.watts:
            assert sum(g.power_w or 0 for g in v.snapshot.gpus) <= v.snapshot.power.watts


@pytest.mark.anyio
async def test_g_expands_a_node_into_gpu_rows_and_folds_them_back() -> None:
    app = sample_app(SampleSource())
    async with app.run_test(size=(160, 40)) as pilot:
        t = app.main.table
        gpus = VIEWS["gpu-a1"].snapshot.gpus
        assert t.line_count == t.row_count == 10
        await pilot.press("g")  # the cursor is on gpu-a1
        await pilot.pause()
        assert t.expanded == {"gpu-a1"} and t.line_count == 10 + len(gpus)
        lines = screen_lines(app)
        sub = [line for line in lines if "#0" in line or "#1" in line]
        assert len(sub) >= 2 and gpus[0].name[:20] in sub[0]
        assert "°C" in sub[0] and "/700 W" in sub[0]
        await pilot.press("down")  # onto GPU 0: actions and selection still mean the node
        assert t.cursor_name == "gpu-a1" and t.cursor_gpu == 0
        await pilot.press("space")
        assert t.selected == {"gpu-a1"} and t.targets() == ["gpu-a1"]
        await pilot.press("s")  # sorted by name: the sub-rows follow their node
        assert t.sort_key == "node"
        rows = t._order
        at = rows.index("gpu-a1")
        assert [r.split("\x00")[0] for r in rows[at : at + 1 + len(gpus)]] == ["gpu-a1"] * (
            1 + len(gpus)
        )
        assert t.cursor_name == "gpu-a1" and t.cursor_gpu == 0
        await pilot.press("left")  # fold: the cursor goes back to the node's row
        assert t.expanded == set() and t.line_count == 10
        assert t.cursor_name == "gpu-a1" and t.cursor_gpu is None
        await pilot.press("right", "g")  # right expands, g on an expanded node folds
        assert t.expanded == set()


def _groups(rows: list[str]) -> list[tuple[str, list[str]]]:
    """The table's lines as (node, its sub-rows' GPU indexes) in screen order."""
    out: list[tuple[str, list[str]]] = []
    for row in rows:
        name, _, gpu = row.partition(GPU_SEP)
        if gpu:
            assert out and out[-1][0] == name, f"GPU row {row!r} not under its node"
            out[-1][1].append(gpu)
        else:
            out.append((name, []))
    return out


@pytest.mark.anyio
async def test_100_expanded_nodes_of_8_gpus_render_and_follow_a_live_sort() -> None:
    """The bench's expanded case (bench/tui.py --nodes 100 --gpus 8 --expand) as behaviour:
    every node's 8 sub-rows sit under it, in GPU order, drawn, and stay with it as a live sort
    by power moves it, the cursor on its GPU row included."""
    views = generated_views(100, gpus=8)
    with_gpus = {v.name for v in views if v.facts and v.facts.gpu}
    source = SampleSource(views)
    app = sample_app(source)
    async with app.run_test(size=(160, 40)) as pilot:
        t = app.main.table
        await until(pilot, lambda: t.row_count == 100, what="100 rows")
        await pilot.press("g")  # the first through the key, the others through what it calls
        for name in t.visible_names[1:]:
            t.expand(name)
        assert t.expanded == {v.name for v in views}
        assert t.line_count == 100 + 8 * len(with_gpus) and len(with_gpus) > 90
        eight = [str(i) for i in range(8)]
        assert all(gpus == (eight if n in with_gpus else []) for n, gpus in _groups(t._order))

        t.sort_by("power")
        await pilot.pause()
        by_power = [v.name for v in sorted_views(views, "power", reverse=True)]
        assert [n for n, _ in _groups(t._order)] == by_power
        assert all(gpus == (eight if n in with_gpus else []) for n, gpus in _groups(t._order))

        last = next(n for n in reversed(by_power) if n in with_gpus)
        t.move_cursor(row=t._order.index(f"{last}{GPU_SEP}3"))
        assert t.cursor_name == last and t.cursor_gpu == 3
        old = source._views[last].snapshot
        assert old is not None
        snap = old.model_copy(update={"power": old.power.model_copy(update={"watts": 9000.0})})
        source.update(last, snapshot=snap)  # the lowest node draws most now: it moves to the top
        await until(pilot, lambda: t.visible_names[0] == last, what="the live sort moved it")
        groups = _groups(t._order)
        assert groups[0] == (last, eight)
        assert all(gpus == (eight if n in with_gpus else []) for n, gpus in groups)
        assert t.cursor_name == last and t.cursor_gpu == 3  # the cursor stayed on its GPU
        await pilot.press("home")  # its node's line is above the screen's top: show it
        await pilot.pause()
        lines = screen_lines(app)
        top = next(i for i, line in enumerate(lines) if last in line)
        below = lines[top + 1 : top + 9]
        gpu = snap.gpus[0].name[:20]
        assert all(f"#{i}" in line and gpu in line for i, line in enumerate(below)), below
        assert "└" in below[-1] and all("├" in line for line in below[:-1])
