"""What the dashboard writes to the terminal when a figure changes: its characters, not its
row or cell, each change of colour once; and what a terminal shows of it is the same."""

from __future__ import annotations

import io

import pyte
import pytest
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual._compositor import ChopsUpdate
from textual.strip import Strip
from textual.widgets import Static

from fleettui.testing.sample import SampleSource
from fleettui.testing.scenes import sample_app
from fleettui.views.tui.spans import changed, install, render_strip
from fleettui.views.tui.widgets import TotalsBar


def _update(spans: list[tuple[int, int, int]]) -> str:
    install()
    strip = Strip([Segment("0123456789")])
    return ChopsUpdate([{0: strip}], spans, [[10]]).render_segments(Console(color_system=None))


def test_a_span_is_written_without_the_cells_left_or_right_of_it() -> None:
    assert _update([(0, 3, 6)]) == "\x1b[1;4H345"
    assert _update([(0, 0, 10)]) == "\x1b[1;1H0123456789"
    assert _update([(0, 8, 12)]) == "\x1b[1;9H89"


@pytest.mark.anyio
async def test_a_changed_latency_repaints_only_its_digits() -> None:
    source = SampleSource()
    app = sample_app(source)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        table = app.main.table
        name = table.visible_names[2]
        regions: list = []
        real = table.refresh
        table.refresh = lambda *r, **kw: (regions.extend(r), real(*r, **kw))[1]  # type: ignore[method-assign]
        view = source.node(name)
        assert view is not None
        source.update(name, latency_ms=(view.latency_ms or 1.0) + 7)
        app.refresh_fleet()
        await pilot.pause()
        row = {r for r in regions if r.y == 3}  # the header is line 0, the third row line 3
        keys = list(table.widths)
        x = sum(table.widths[k] + 1 for k in keys[: keys.index("latency")])
        assert table.get_cell(name, "latency").plain == " 26 ms"  # was " 19 ms"
        assert [(r.x, r.width) for r in row] == [(x + 1, 2)]  # its two digits, not the cell


def _screen(output: str, width: int) -> list[tuple]:
    """What a terminal shows after `output` and one more plain character (so a style left on
    at the end shows): each cell's character, colours and attributes."""
    screen = pyte.Screen(width + 1, 1)
    pyte.Stream(screen).feed(output + "X")
    row = screen.buffer[0]
    return [
        (c.data, c.fg, c.bg, c.bold, c.italics, c.underscore, c.reverse, c.strikethrough)
        for c in (row[x] for x in range(width + 1))
    ]


def _styles() -> list[Style | None]:
    """Fresh styles (Textual keeps a style's SGR on the object, for the first colour system)."""
    return [
        None,
        Style(),
        Style(color="#e0e0e0", bgcolor="#272727"),
        Style(color="#e0e0e0", bgcolor="#272727", bold=True),
        Style(color="#a1a1a1", bgcolor="#272727", dim=True),
        Style(color="red", bold=True, underline=True),
        Style(bgcolor="#0178d4", color="#ffffff", reverse=True),
        Style(color="cyan", italic=True, strike=True),
        Style(bgcolor="#272727"),
        Style(color="#e0e0e0", bgcolor="#272727", meta={"column": "power"}),
    ]


@pytest.mark.parametrize("system", ["truecolor", "256", "standard"])
def test_each_style_change_is_said_once_and_the_cells_are_the_same(system: str) -> None:
    """Every pair of looks in both orders, as Textual writes them and as render_strip does: a
    terminal shows the same cells, and render_strip writes fewer bytes."""
    console = Console(color_system=system, force_terminal=True, file=io.StringIO())  # type: ignore[arg-type]
    styles = _styles()
    segments = [Segment(f"{i % 10}{chr(65 + i % 26)}", s) for i, s in enumerate(styles * 3)]
    segments += [Segment(t, b) for a in styles for b in styles for t in ("a", "b")]
    segments += [Segment(f"{i % 10}", a) for i, a in enumerate(styles)]
    strip = Strip(segments)
    theirs, ours = strip.render(console), render_strip(strip, console)
    assert _screen(ours, strip.cell_length) == _screen(theirs, strip.cell_length)
    assert len(ours) < len(theirs) * 0.7


@pytest.mark.anyio
async def test_table_lines_look_the_same_written_either_way() -> None:
    """Every line of the dashboard (table, header, totals, footer) through both renderers."""
    app = sample_app(SampleSource())
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        await pilot.press("down", "space")
        await pilot.pause()
        console = Console(color_system="truecolor", force_terminal=True, file=io.StringIO())
        lines = app.screen._compositor.render_update(full=True).strips  # type: ignore[union-attr]
        saved = 0
        for chops in lines:
            # Textual keeps what it rendered on the Strip and each style's SGR on the Style,
            # whatever the colour system: one per dashboard process, but in a test process
            # Rich's shared styles may carry an SGR written for 16 colours by an earlier app
            strip = Strip(list(Strip.join(list(chops))))
            for _, style, _ in strip:
                if style is not None:
                    style._ansi = None
            theirs, ours = strip.render(console), render_strip(strip, console)
            assert _screen(ours, 200) == _screen(theirs, 200)
            saved += len(theirs) - len(ours)
        assert saved > 10_000


def test_changed_chars_and_merged_spans() -> None:
    from fleettui.views.tui.table import _changed_chars, _merged

    look = ("1,843 W", "", ())
    assert _changed_chars(look, ("1,851 W", "", ()), 8) == (3, 5)
    assert _changed_chars(look, ("1,843 W", "dim", ()), 8) == (0, 8)  # a style: all of it
    assert _changed_chars(None, look, 8) == (0, 8)
    assert _changed_chars(("9 ms", "", ()), ("10 ms", "", ()), 6) == (0, 5)
    assert _changed_chars(("漢字 1", "", ()), ("漢字 2", "", ()), 8) == (0, 8)  # wide: all
    assert _merged([(3, 5), (9, 10), (40, 42)], 8) == [(3, 10), (40, 42)]


def test_changed_finds_the_cells_that_differ() -> None:
    def cells(s: str) -> list:
        return [(c, None) for c in s]

    assert changed(cells("4,960 W │ €806"), cells("4,972 W │ €806")) == (3, 5)
    assert changed(cells("abc"), cells("abc")) is None
    assert changed(cells("abcdef"), cells("abc")) == (3, 6)  # the tail that went is repainted
    assert changed(cells("ab"), [("a", None), ("b", "bold")]) == (1, 2)  # a style alone


@pytest.mark.anyio
async def test_the_totals_line_repaints_only_the_figures_that_moved(monkeypatch) -> None:
    source = SampleSource()
    app = sample_app(source)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        bar = app.main.query_one(TotalsBar)
        regions: list = []
        real = Static.refresh  # what LineStatic asks its base to repaint

        def spy(self, *r, **kw):
            if self is bar:
                regions.append(r)
            return real(self, *r, **kw)

        monkeypatch.setattr(Static, "refresh", spy)
        view = source.node("gpu-a1")
        assert view is not None and view.snapshot is not None
        snap = view.snapshot.model_copy(deep=True)
        snap.power.watts = 1855.0  # the fleet's total: 4,960 W -> 4,972 W
        source.update("gpu-a1", snapshot=snap)
        app.refresh_fleet()
        await pilot.pause()
        assert "4,972 W" in str(bar.content)
        assert [[(r.x, r.width) for r in call] for call in regions] == [[(17, 2)]]  # "72"


def test_a_column_that_widened_keeps_its_width_a_while(monkeypatch) -> None:
    """A node DEGRADED for a second must not move every column twice: each move repaints the
    whole table."""
    from fleettui.views.tui import table as table_module

    now = [1000.0]
    monkeypatch.setattr(table_module.time, "monotonic", lambda: now[0])
    table = table_module.FleetTable()
    assert table._held({"why": 14}) == {"why": 14}
    assert table._held({"why": 29}) == {"why": 29}  # wider: at once
    now[0] += table_module.NEED_HOLD_S - 1
    assert table._held({"why": 14}) == {"why": 29}  # narrower: not yet
    now[0] += 2
    assert table._held({"why": 14}) == {"why": 14}  # 30 s since it last needed 29
