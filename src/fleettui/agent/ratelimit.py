"""Sliding-window rate limits: at most N calls per key in any 60-second window.

A sliding log (one timestamp per allowed call) is exact, unlike a fixed window that lets 2N
calls through around a minute boundary; memory is bounded by N per key and keys by MAX_KEYS.
The agent keeps two: actions per token id (`rate_limit_per_min`), and failed authentications
per source address (`auth_failures_per_min`, keyed by `address_key`).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 60.0
MAX_KEYS = 10_000


class RateLimiter:
    def __init__(
        self,
        limit: int,
        window_s: float = WINDOW_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._calls: dict[str, deque[float]] = {}

    def hit(self, key: str) -> float:
        """Count one call; returns 0 when allowed, else the seconds until one would be."""
        now = self.clock()
        calls = self._calls.get(key)
        if calls is None:
            if len(self._calls) >= MAX_KEYS:
                self._prune(now)
            calls = self._calls[key] = deque()
        while calls and calls[0] <= now - self.window_s:
            calls.popleft()
        if len(calls) >= self.limit:
            return max(calls[0] + self.window_s - now, 0.001)
        calls.append(now)
        return 0.0

    def wait(self, key: str) -> float:
        """What hit() would answer now, without counting a call."""
        calls = self._calls.get(key)
        now = self.clock()
        if not calls or len(calls) < self.limit or calls[0] <= now - self.window_s:
            return 0.0
        return max(calls[0] + self.window_s - now, 0.001)

    def _prune(self, now: float) -> None:
        """Forget keys with no call in the window; if still full, the oldest-touched go."""
        for key in [k for k, c in self._calls.items() if not c or c[-1] <= now - self.window_s]:
            del self._calls[key]
        while len(self._calls) >= MAX_KEYS:
            del self._calls[min(self._calls, key=lambda k: self._calls[k][-1])]


def address_key(ip: str | None) -> str:
    """The throttling key of a client address: IPv6 by /64, since one host usually holds a
    whole /64 and could otherwise rotate through addresses to dodge a per-address limit."""
    if not ip:
        return "unknown"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def retry_after_header(wait_s: float) -> str:
    """Retry-After takes whole seconds; round up so a client that obeys it is never early."""
    return str(max(1, math.ceil(wait_s)))
