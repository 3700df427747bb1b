"""What the dashboard writes to the terminal when one cell changes: that cell, not its row."""

from __future__ import annotations

import pytest
from rich.console import Console
from rich.segment import Segment
from textual._compositor import ChopsUpdate
from textual.strip import Strip

from fleettui.testing.sample import SampleSource
from fleettui.testing.scenes import sample_app
from fleettui.views.tui.spans import install


def _update(spans: list[tuple[int, int, int]]) -> str:
    install()
    strip = Strip([Segment("0123456789")])
    return ChopsUpdate([{0: strip}], spans, [[10]]).render_segments(Console(color_system=None))


def test_a_span_is_written_without_the_cells_left_or_right_of_it() -> None:
    assert _update([(0, 3, 6)]) == "\x1b[1;4H345"
    assert _update([(0, 0, 10)]) == "\x1b[1;1H0123456789"
    assert _update([(0, 8, 12)]) == "\x1b[1;9H89"


@pytest.mark.anyio
async def test_a_changed_latency_repaints_only_its_cell() -> None:
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
        assert len(row) == 1 and row.pop().width == table.widths["latency"] + 1
        assert table.get_cell(name, "latency").plain.strip().endswith("ms")
