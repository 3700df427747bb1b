"""Refusals, and how the repeated ones reach the audit log at a bounded rate.

Every refused write attempt is recorded, but a flood of them must not grow the log (and every
later chain walk) as fast as an attacker can send requests: each record is an fsync'd line. So
refusals that come before a valid token (bad Host, Origin or Content-Type, oversized body, no or
wrong token, failed-auth throttling) and rate-limit refusals are aggregated per source address:
the first one in a window is written in full at once, the rest of that window become one entry
with their count, written when the window ends (or at shutdown). At most MAX_SOURCES addresses
get their own records per window; beyond that they share one "other addresses" record, so the log
grows by at most 2 * MAX_SOURCES + 1 lines per window however many addresses send. IPv6
addresses count by /64 (`ratelimit.address_key`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from fleettui.agent.ratelimit import address_key

WINDOW_S = 60.0
MAX_SOURCES = 64
MAX_REASONS = 8  # distinct error texts counted per aggregate; the rest are counted as "other"
OTHER = "(other addresses)"


class Rejection(Exception):
    """A refusal before anything runs: HTTP status, reason and optional detail."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


@dataclass
class _Window:
    opened: float  # monotonic
    first_ts: float  # wall clock of the first refusal counted in the aggregate
    last_ts: float = 0.0
    count: int = 0
    addresses: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


class RefusalLog:
    """Aggregates refusals per address and window; `write` appends one audit entry's fields."""

    def __init__(
        self,
        write: Callable[[dict[str, Any]], Awaitable[object]],
        *,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write = write
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    async def record(self, fields: dict[str, Any]) -> None:
        """Write the refusal in full if it opens its address's window, else count it."""
        await self.flush()
        address = address_key(fields.get("source_ip"))
        key = address if address in self._windows or len(self._windows) < MAX_SOURCES else OTHER
        win = self._windows.get(key)
        if win is None:
            self._windows[key] = win = _Window(self.clock(), fields["ts"])
            if key != OTHER:
                await self.write(fields)
                return
        win.count += 1
        win.last_ts = fields["ts"]
        win.addresses.add(address)
        win.statuses[fields["http_status"]] += 1
        reason = fields.get("error") or ""
        if reason in win.reasons or len(win.reasons) < MAX_REASONS:
            win.reasons[reason] += 1
        else:
            win.reasons["(other reasons)"] += 1
        if win.count == 1:
            win.first_ts = fields["ts"]

    async def flush(self, *, force: bool = False) -> None:
        """Write the aggregate of every window that has ended (every window when forced)."""
        now = self.clock()
        for key, win in list(self._windows.items()):
            if force or now - win.opened >= self.window_s:
                del self._windows[key]
                if win.count:
                    await self.write(self._aggregate(key, win, now))

    async def run(self) -> None:
        """Close windows on time even when the flood stops."""
        while True:
            await anyio.sleep(min(1.0, self.window_s / 4))
            await self.flush()

    def _aggregate(self, key: str, win: _Window, now: float) -> dict[str, Any]:
        status, _ = win.statuses.most_common(1)[0]
        who = f"{len(win.addresses)} addresses" if key == OTHER else key
        args: dict[str, Any] = {
            "refusals": win.count,
            "window_s": round(now - win.opened, 3),
            "first_ts": round(win.first_ts, 6),
            "last_ts": round(win.last_ts, 6),
            "http_status": {str(k): v for k, v in sorted(win.statuses.items())},
            "errors": dict(win.reasons.most_common()),
        }
        if key == OTHER:
            args["addresses"] = len(win.addresses)
        return {
            "ts": round(time.time(), 6),
            "source_ip": None if key == OTHER else key,
            "token_id": None,
            "action": None,
            "args": args,
            "status": "denied",
            "http_status": status,
            "duration_ms": None,
            "exit_code": None,
            "error": f"{win.count} more refusals from {who} (aggregated)",
        }
