"""Helpers for Pilot tests of the dashboard against live sources."""

from __future__ import annotations

import html
import re
import time
from collections import defaultdict
from collections.abc import Callable

from fakes import PATIENCE_S
from fleettui.views.tui.app import FleetApp


async def until(pilot, cond: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    """Let the app run until `cond()` holds; fail after `timeout` seconds, at least
    fakes.PATIENCE_S: a loaded machine makes a condition late, not false."""
    deadline = time.monotonic() + max(timeout, PATIENCE_S)
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in time: {what}")
        await pilot.pause(0.05)


def cell(app: FleetApp, name: str, column: str = "state") -> str:
    return app.main.table.get_cell(name, column).plain


def screen_lines(app: FleetApp) -> list[str]:
    """The screen as the terminal shows it, one string per line (from the app's screenshot:
    lines the widgets did not repaint come out as they were last drawn)."""
    svg = app.export_screenshot()
    runs: dict[int, list[tuple[float, str]]] = defaultdict(list)
    pattern = r'<text [^>]*x="([\d.]+)"[^>]*clip-path="url\(#[\w-]*line-(\d+)\)">([^<]*)</text>'
    for x, line, text in re.findall(pattern, svg):
        runs[int(line)].append((float(x), html.unescape(text).replace("\xa0", " ")))
    cell_width = 12.2  # Rich's SVG export: pixels per terminal cell
    out = []
    for line in range(max(runs, default=-1) + 1):
        text = ""
        for x, run in sorted(runs.get(line, [])):
            text = text.ljust(round(x / cell_width)) + run
        out.append(text.rstrip())
    return out
