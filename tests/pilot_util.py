"""Helpers for Pilot tests of the dashboard against live sources."""

from __future__ import annotations

import time
from collections.abc import Callable

from fleettui.views.tui.app import FleetApp


async def until(pilot, cond: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    """Let the app run until `cond()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in time: {what}")
        await pilot.pause(0.05)


def cell(app: FleetApp, name: str, column: str = "state") -> str:
    return app.main.table.get_cell(name, column).plain
