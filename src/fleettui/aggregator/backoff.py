"""Exponential backoff with full jitter: dead nodes are retried gently and unsynchronised.

Delay n (counting from 0) is drawn uniformly from [min_s, min(max_s, min_s * 2**n)]: the window
doubles on every failure up to the cap, and the draw spreads retries of many nodes that went down
at the same moment (a switch reboot) instead of hammering in lockstep. Success resets it.
"""

from __future__ import annotations

import random

# One generator for every node: the numbers need not be independent, and a Random carries
# 2.5 KB of state (docs/performance.md, "What changed, and why").
SHARED_RNG = random.Random()


class Backoff:
    def __init__(self, min_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        if min_s <= 0 or max_s < min_s:
            raise ValueError("need 0 < min_s <= max_s")
        self.min_s = min_s
        self.max_s = max_s
        self.failures = 0
        self._rng = rng or SHARED_RNG

    def window(self) -> float:
        """Upper bound of the next delay."""
        return min(self.max_s, self.min_s * 2.0 ** min(self.failures, 64))

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next attempt."""
        delay = self._rng.uniform(self.min_s, self.window())
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
