"""Sparklines you can read (issue 19): one scale per column for the whole fleet, shown in the
header; zero blank; a flat line at its true height; clock-aligned buckets, so a bar moves when
its bucket completes and not on every poll."""

from __future__ import annotations

import io
import itertools

import pytest
from rich.console import Console

from fleettui.aggregator.history import POWER_BUCKETS, PowerHistory
from fleettui.testing.sample import SAMPLE_NOW, SampleSource, sample_views
from fleettui.testing.scenes import sample_app
from fleettui.views.columns import (
    cell_cost,
    cell_power,
    column_label,
    cost_scale,
    fleet_scales,
    power_bars,
    power_scale,
)
from fleettui.views.numbers import TO, fmt_money_scale, fmt_watts_scale
from fleettui.views.rich import fleet_view
from fleettui.views.sparkline import BARS, aligned, nice_top, sparkline, sparkline_rows
from pilot_util import until

FULL = BARS[-1]


def test_zero_and_gaps_are_blank_and_a_flat_line_sits_at_its_height() -> None:
    assert sparkline([0.0, 0.0, 0.0], 3, 2000) == "   "  # zero is empty, not mid-height
    assert sparkline([None, float("nan"), -5.0], 3, 2000) == "   "  # no sample, a bad one
    assert sparkline([2000.0] * 3, 3, 2000) == FULL * 3  # flat and high: full height
    assert sparkline([1000.0] * 3, 3, 2000) == BARS[3] * 3  # flat at half: half height
    assert sparkline([1.0] * 3, 3, 2000) == BARS[0] * 3  # tiny but not zero: the lowest bar
    assert sparkline([], 4, 10) == "    " and sparkline([5.0], 3, 10) == "  " + BARS[3]
    assert sparkline(list(range(1, 11)), 3, 10) == BARS[5] + BARS[6] + FULL  # the last three
    assert sparkline([3000.0], 1, 2000) == FULL  # above the scale: clamped
    rows = sparkline_rows([0.0, 1000.0, 2000.0, None], 4, 2, 2000)
    assert rows == ["  █ ", " ██ "]  # 16 levels: zero and the gap are empty columns


def test_nice_tops_round_up_to_coarse_steps() -> None:
    assert [nice_top(x) for x in (1843, 1500, 1501, 88, 0.3, 10, 10.01)] == [
        2000,
        1500,
        2000,
        100,
        0.3,
        10,
        15,
    ]
    assert nice_top(0) == 0 and nice_top(float("nan")) == 0 and nice_top(-3) == 0
    # a peak that wanders between 1.55 and 1.95 kW keeps one scale
    assert {nice_top(1550 + i) for i in range(400)} == {2000}
    assert fmt_watts_scale(2000) == f"0{TO}2 kW" and fmt_watts_scale(800) == f"0{TO}800 W"
    assert fmt_watts_scale(1500) == f"0{TO}1.5 kW" and fmt_watts_scale(150_000) == f"0{TO}150 kW"
    assert fmt_money_scale(50) == f"0{TO}€50" and fmt_money_scale(0.3, "USD") == f"0{TO}$0.3"


def test_bars_are_aligned_on_absolute_buckets() -> None:
    """Groups of `per_bar` buckets start at multiples of per_bar: a new bucket changes only the
    newest bar, until a group completes and every bar shifts at once."""
    hist = [float(i) for i in range(1, 13)]  # buckets 100..111
    assert aligned(hist, 111, 4, 3) == [2.5, 6.5, 10.5]  # 100-103, 104-107, 108-111
    assert aligned(hist[:-1], 110, 4, 3) == [2.5, 6.5, 10.0]  # 108-110: the newest filling
    assert aligned([*hist, 13.0], 112, 4, 3) == [6.5, 10.5, 13.0]  # 112 starts a group
    assert aligned(hist, 111, 5, 3) == [3.0, 8.0, 11.5]  # 100-104, 105-109, 110-111
    assert aligned([5.0, None, None, None, None, 7.0], 15, 2, 3) == [5.0, None, 7.0]  # a gap
    assert aligned([5.0], 13, 2, 3) == [5.0]  # before the history began: not drawn at all


def test_a_poll_within_a_bucket_changes_no_bar() -> None:
    """What the views draw from the aggregator's history moves once per bucket (15 s), so a
    sparkline costs the terminal nothing on the polls in between."""
    h = PowerHistory()
    drawn = []
    for i in range(620):  # 10 minutes of polls, one a second
        h.add(1_000_020.0 + i, 500.0 + (i % 7) * 40)
        view = sample_views()[0]
        view.power_history, view.power_slot = h.values(), h.last
        drawn.append(power_bars(view, 7, None))
    changes = sum(a != b for a, b in itertools.pairwise(drawn))
    assert changes <= 620 / 15 + 1
    assert len(h) == POWER_BUCKETS and drawn[-1].strip()


def test_one_scale_for_the_whole_fleet_in_every_row() -> None:
    views = sample_views()
    scales = fleet_scales(views)
    assert scales["power"].top == 2000 and scales["power"].text == f"0{TO}2 kW"  # gpu-a1's 1.88 kW
    assert scales["cost"].text == f"0{TO}€50"  # gpu-a1's dearest day, €44.1
    by = {v.name: v for v in views}
    small = cell_power(by["embed-1"], 23, SAMPLE_NOW, False, scales["power"]).plain
    big = cell_power(by["gpu-a1"], 23, SAMPLE_NOW, False, scales["power"]).plain
    assert set(small[-11:]) == {BARS[0]}  # 140 W of a 2 kW scale: the lowest bar, not a swing
    assert set(big[-11:]) <= set(BARS[5:])
    own = cell_power(by["embed-1"], 23, SAMPLE_NOW, False).plain  # no fleet: its own, from 0
    assert set(own[-11:]) <= set(BARS[5:])
    cost = cell_cost(by["mac-studio-1"], 13, SAMPLE_NOW, False, scales["cost"])
    assert not cost.spans and cost.style == ""  # the bars in the text's colour: no alarm
    assert power_scale([]) is None and cost_scale([]) is None
    zero = sample_views()[4]
    zero.power_history = [0.0] * 10
    assert power_scale([zero]) is None  # nothing to scale: the cells draw no bars
    assert cell_power(zero, 23, SAMPLE_NOW, False).plain.endswith(" " * 11)


def test_the_header_says_the_scale_when_it_fits() -> None:
    scales = fleet_scales(sample_views())
    assert column_label("power", scales, 15) == f"Power 0{TO}2 kW"
    assert column_label("cost", scales, 13) == f"Cost 7d 0{TO}€50"
    assert column_label("cost", scales, 12) == f"Cost 0{TO}€50"  # a sort arrow takes one cell
    assert column_label("cost", scales, 5) == "Cost 7d"  # no room: the name alone
    assert column_label("node", scales, 15) == "Node" and column_label("power", {}, 15) == "Power"


def test_the_rich_view_scales_rows_by_the_whole_fleet() -> None:
    """`--rich` on a short terminal draws some rows; their scale is still the fleet's."""
    views = sample_views()
    console = Console(file=io.StringIO(), width=160, height=9, color_system=None)
    few = [v for v in views if v.name == "embed-1"]
    console.print(fleet_view(few + [v for v in views if v not in few], SAMPLE_NOW, 160, None, 9))
    lines = console.file.getvalue().splitlines()
    assert f"Power 0{TO}2 kW" in lines[0]
    row = next(line for line in lines if line.startswith("embed-1"))
    assert f"142 W GCM {BARS[0] * 3}" in row


@pytest.mark.anyio
async def test_the_table_header_follows_the_fleet_scale_and_repaints_only_when_it_moves() -> None:
    source = SampleSource()
    app = sample_app(source, min_refresh_s=0.01)  # no clock ticks: row_updates stays put
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.main.table
        await pilot.pause()
        assert table.header_label("power") == f"Power 0{TO}2 kW"
        assert f"Power 0{TO}2 kW" in table.render_line(0).text
        refreshes = app.refreshes
        regions: list = []
        real = table.refresh
        table.refresh = lambda *r, **kw: (regions.extend(r), real(*r, **kw))[1]  # type: ignore[method-assign]
        hist = source.node("embed-1").power_history
        source.update("embed-1", power_history=[*hist[1:], 150.0])  # a new bucket, same scale
        await until(pilot, lambda: app.refreshes > refreshes)
        await pilot.pause()
        assert table.row_updates == 1  # the scale did not move: no other row is drawn again
        assert {r.y for r in regions} <= {5}  # embed-1's line only (the header is line 0)
        regions.clear()
        node_cell, power_cell = (table.get_cell("gpu-a1", k) for k in ("node", "power"))
        source.update("embed-1", power_history=[*hist[1:], 2900.0])  # a new fleet peak
        await until(pilot, lambda: table.header_label("power") == f"Power 0{TO}3 kW")
        await pilot.pause()
        assert table.row_updates == 10  # every row's bars are on the new scale
        gpu_a1 = table.get_cell("gpu-a1", "power").plain
        assert FULL not in gpu_a1  # 1.9 kW of 3 kW
        assert table.get_cell("gpu-a1", "power") is not power_cell
        assert table.get_cell("gpu-a1", "node") is node_cell  # only the bars were drawn again
        keys = list(table.widths)
        power_x = sum(table.widths[k] + 1 for k in keys[: keys.index("power")])
        rows = {r.y for r in regions if r.y > 0}
        assert rows and all(r.x >= power_x - 1 for r in regions if r.y > 0)  # only those cells
        assert f"Power 0{TO}3 kW" in table.render_line(0).text


def test_a_16_colour_terminal_keeps_the_named_colours_its_own() -> None:
    """Textual's truecolor red (its Monokai idea of the terminal's), mapped back to 16 colours by
    Rich, is magenta and its yellow is red: on such a terminal the dashboard asks for the
    terminal's own colours (the colors16 scenes)."""
    from rich.color import Color, ColorSystem
    from rich.terminal_theme import MONOKAI

    from fleettui.views.tui.nocolor import sixteen_colors

    red, yellow = (Color.from_triplet(MONOKAI.ansi_colors[i]) for i in (1, 3))
    assert red.downgrade(ColorSystem.STANDARD).number == 5  # magenta: the problem
    assert yellow.downgrade(ColorSystem.STANDARD).number == 9  # bright red
    assert sixteen_colors({"TERM": "xterm"}) and sixteen_colors({"TERM": "screen"})
    assert not sixteen_colors({"TERM": "xterm-256color"})
    assert not sixteen_colors({"TERM": "xterm", "COLORTERM": "truecolor"})
