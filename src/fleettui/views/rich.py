"""The headless view: the same table drawn with Rich, live or once. Never imports Textual.

For terminals where Textual cannot run (no TTY on stdin, TERM=dumb, a log file) and for cron:
`fleet --rich` redraws with `rich.live.Live` until `q` (on a terminal) or Ctrl-C, `fleet --rich
--once` prints one table after one complete poll of every node.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator

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
    keys: int | None = None,
) -> None:
    """Redraw on every generation change (at most every `min_refresh_s`) until cancelled, or
    until `q` is typed on the terminal `keys` (a file descriptor; None: Ctrl-C only)."""

    def frame() -> RenderableType:
        stamp = time.strftime("%H:%M:%S", time.localtime(clock()))
        title = f"fleet · {stamp} · {'q or ' if keys is not None else ''}Ctrl-C quits"
        views = source.snapshots()
        return fleet_view(views, clock(), console.width, title, console.height, skipped)

    gen = source.generation
    try:
        with (
            _one_key_at_a_time(keys),
            Live(frame(), console=console, auto_refresh=False, transient=False) as live,
        ):
            async with anyio.create_task_group() as tg:
                if keys is not None:
                    tg.start_soon(_quit_on_q, keys, tg.cancel_scope)
                while stop is None or not stop.is_set():
                    gen = await source.wait_changed(gen, timeout=tick_s)
                    live.update(frame(), refresh=True)
                    await anyio.sleep(min_refresh_s)
                tg.cancel_scope.cancel()
    except OSError as exc:
        if exc.errno not in (errno.EIO, errno.EPIPE):
            raise
        _drop_output(console)  # the terminal is gone (a closed SSH session): nothing to draw on


@contextlib.contextmanager
def _one_key_at_a_time(fd: int | None) -> Iterator[None]:
    """The terminal in cbreak mode while the view runs: each key arrives as typed and is not
    echoed over the table; Ctrl-C stays a signal. Restored as it was, whatever ends the view."""
    if fd is None:
        yield
        return
    import termios  # POSIX only, and only for a terminal
    import tty

    try:
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd, termios.TCSANOW)
    except (termios.error, OSError):  # not a terminal after all: no keys, Ctrl-C still works
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):  # a terminal gone is not restored
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _quit_on_q(fd: int, scope: anyio.CancelScope) -> None:
    """Cancel `scope` when `q` is typed. Waits for the terminal to be readable, so the event
    loop never blocks on a read; a terminal that goes away only ends the watching."""
    while True:
        try:
            await anyio.wait_readable(fd)
            typed = os.read(fd, 1024)
        except OSError:
            typed = b""
        if not typed:  # EOF or an error: no more keys will come; the signals still end it
            await anyio.sleep_forever()
        if b"q" in typed or b"Q" in typed:
            scope.cancel()
            return


def _drop_output(console: Console) -> None:
    """Send what is still buffered for a vanished terminal to /dev/null, so the interpreter's
    last flush does not print an error about it either."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fd = console.file.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
