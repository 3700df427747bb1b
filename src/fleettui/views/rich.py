"""The headless view: the same table drawn with Rich, live or once. Never imports Textual.

For terminals where Textual cannot run (no TTY on stdin, TERM=dumb, a log file) and for cron:
`fleet --rich` redraws with `rich.live.Live` until Ctrl-C, `fleet --rich --once` prints one
table after one complete poll of every node.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fleettui.aggregator.state import NodeView
from fleettui.views.columns import (
    BY_KEY,
    COLUMNS,
    fit_columns,
    fleet_totals,
    full_width,
    render_cells,
    totals_text,
)
from fleettui.views.source import FleetSource

FILE_WIDTH = full_width() + sum(c.flex for c in COLUMNS)  # every column at its widest


def fleet_table(views: list[NodeView], now: float, width: int | None = None) -> Table:
    """The fleet table; `width` None draws every column (for files and pipes)."""
    longest = max((len(v.name) for v in views), default=0)
    widths = {k: w for k, w in fit_columns(width or FILE_WIDTH, longest).items() if k != "sel"}
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 0),
        collapse_padding=True,
        header_style="bold",
    )
    for key, w in widths.items():
        col = BY_KEY[key]
        table.add_column(col.label, width=w, no_wrap=True, justify=col.justify)  # type: ignore[arg-type]
    for v in views:
        table.add_row(*render_cells(v, widths, now).values())
    return table


def fleet_view(
    views: list[NodeView], now: float, width: int | None = None, title: str | None = None
) -> RenderableType:
    parts: list[RenderableType] = []
    if title:
        parts.append(Text(title, style="dim"))
    parts.append(fleet_table(views, now, width))
    parts.append(totals_text(fleet_totals(views)))
    return Group(*parts)


def print_once(console: Console, views: list[NodeView], now: float | None = None) -> None:
    """One table: fitted to a terminal, every column when writing to a file or a pipe."""
    now = time.time() if now is None else now
    width = console.width if console.is_terminal else None
    if width is None:
        console.width = max(console.width, FILE_WIDTH)
    console.print(fleet_view(views, now, width))


async def run_live(
    source: FleetSource,
    console: Console,
    *,
    clock: Callable[[], float] = time.time,
    min_refresh_s: float = 0.25,
    tick_s: float = 1.0,
    stop: anyio.Event | None = None,
) -> None:
    """Redraw on every generation change (at most every `min_refresh_s`) until cancelled."""

    def frame() -> RenderableType:
        stamp = time.strftime("%H:%M:%S", time.localtime(clock()))
        title = f"fleet · {stamp} · Ctrl-C quits"
        return fleet_view(source.snapshots(), clock(), console.width, title)

    gen = source.generation
    with Live(frame(), console=console, auto_refresh=False, transient=False) as live:
        while stop is None or not stop.is_set():
            gen = await source.wait_changed(gen, timeout=tick_s)
            live.update(frame(), refresh=True)
            await anyio.sleep(min_refresh_s)
