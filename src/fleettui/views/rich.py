"""The headless view: the same table drawn with Rich, live or once. Never imports Textual.

For terminals where Textual cannot run (no TTY on stdin, TERM=dumb, a log file) and for cron:
`fleet --rich` redraws with `rich.live.Live` until Ctrl-C, `fleet --rich --once` prints one
table after one complete poll of every node.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable

import anyio
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fleettui.aggregator.state import NodeState, NodeView
from fleettui.views.columns import (
    BY_KEY,
    COLUMNS,
    Scales,
    column_label,
    column_needs,
    fit_columns,
    fleet_scales,
    fleet_totals,
    full_width,
    render_cells,
    totals_text,
)
from fleettui.views.source import FleetSource

FILE_WIDTH = full_width() + sum(c.flex for c in COLUMNS)  # every column at its widest


def fleet_table(
    views: list[NodeView], now: float, width: int | None = None, scales: Scales | None = None
) -> Table:
    """The fleet table; `width` None draws every column (for files and pipes). `scales`: the
    sparkline columns' (fleet_scales of the whole fleet when `views` is only part of it)."""
    needs = column_needs(views)
    scales = fleet_scales(views) if scales is None else scales
    widths = {k: w for k, w in fit_columns(width or FILE_WIDTH, needs).items() if k != "sel"}
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
        label = column_label(key, scales, w)
        table.add_column(label, width=w, no_wrap=True, justify=col.justify)  # type: ignore[arg-type]
    for v in views:
        table.add_row(*render_cells(v, widths, now, scales=scales).values())
    return table


def fit_rows(views: list[NodeView], rows: int) -> list[NodeView]:
    """At most `rows` of `views`: all of them when they fit, else the nodes that need attention
    (not ONLINE) first, then the others, each in config order."""
    if len(views) <= rows:
        return views
    urgent = [v for v in views if v.state is not NodeState.ONLINE]
    calm = [v for v in views if v.state is NodeState.ONLINE]
    return (urgent + calm)[: max(rows, 0)]


def fleet_view(
    views: list[NodeView],
    now: float,
    width: int | None = None,
    title: str | None = None,
    height: int | None = None,
    skipped: int = 0,
) -> RenderableType:
    """Title, table and totals; with `height`, only the rows that fit in it are drawn (the live
    view at 1000 nodes would otherwise render 1000 rows a frame for the terminal to crop)."""
    parts: list[RenderableType] = []
    if title:
        parts.append(Text(title, style="dim"))
    shown = views
    if height is not None:  # title, header, its rule, totals, and the "more" line
        shown = fit_rows(views, height - len(parts) - 4)
    parts.append(fleet_table(shown, now, width, fleet_scales(views)))
    if len(shown) < len(views):
        more = len(views) - len(shown)
        # fit_rows shows those first: the hidden ones not ONLINE are what did not fit of them
        urgent = max(0, sum(v.state is not NodeState.ONLINE for v in views) - len(shown))
        which = f"{urgent} of them not ONLINE" if urgent else "all ONLINE"
        parts.append(Text(f"… {more} more nodes, {which} (`fleet` scrolls)", style="dim"))
    parts.append(totals_text(fleet_totals(views, skipped)))
    return Group(*parts)


def print_once(
    console: Console, views: list[NodeView], now: float | None = None, skipped: int = 0
) -> None:
    """One table: fitted to a terminal, every column when writing to a file or a pipe."""
    now = time.time() if now is None else now
    width = console.width if console.is_terminal else None
    if width is None:
        console.width = max(console.width, FILE_WIDTH)
    console.print(fleet_view(views, now, width, skipped=skipped))


async def run_live(
    source: FleetSource,
    console: Console,
    *,
    clock: Callable[[], float] = time.time,
    min_refresh_s: float = 0.25,
    tick_s: float = 1.0,
    stop: anyio.Event | None = None,
    skipped: int = 0,
) -> None:
    """Redraw on every generation change (at most every `min_refresh_s`) until cancelled."""

    def frame() -> RenderableType:
        stamp = time.strftime("%H:%M:%S", time.localtime(clock()))
        title = f"fleet · {stamp} · Ctrl-C quits"
        views = source.snapshots()
        return fleet_view(views, clock(), console.width, title, console.height, skipped)

    gen = source.generation
    try:
        with Live(frame(), console=console, auto_refresh=False, transient=False) as live:
            while stop is None or not stop.is_set():
                gen = await source.wait_changed(gen, timeout=tick_s)
                live.update(frame(), refresh=True)
                await anyio.sleep(min_refresh_s)
    except OSError as exc:
        if exc.errno not in (errno.EIO, errno.EPIPE):
            raise
        _drop_output(console)  # the terminal is gone (a closed SSH session): nothing to draw on


def _drop_output(console: Console) -> None:
    """Send what is still buffered for a vanished terminal to /dev/null, so the interpreter's
    last flush does not print an error about it either."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fd = console.file.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
