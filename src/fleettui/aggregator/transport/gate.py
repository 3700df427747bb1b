"""A fleet-wide cap on TLS handshakes in flight.

A thousand nodes' pollers and streams start together; over TLS that is two thousand
handshakes at once. Each costs both ends milliseconds of CPU, so all of them in flight
finish late together: past the timeout, retried, and the fleet never comes up
(docs/performance.md, "TLS"). Queued a few dozen at a time they finish in turn, as fast as
the nodes answer. The wait in the queue is not the node's fault: the caller's timeout is
held while it lasts (`turn`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

import anyio

# Enough to keep a node's CPU and the round trips busy, few enough to finish each in time.
HANDSHAKES_IN_FLIGHT = 32


class HandshakeGate:
    def __init__(self, limit: int = HANDSHAKES_IN_FLIGHT) -> None:
        self.limit = limit
        # an asyncio.Semaphore belongs to one event loop; tests run many, one after another
        self._per_loop: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._per_loop is None or self._per_loop[0] is not loop:
            self._per_loop = (loop, asyncio.Semaphore(self.limit))
        return self._per_loop[1]

    @contextlib.asynccontextmanager
    async def turn(self, scope: anyio.CancelScope) -> AsyncIterator[None]:
        """Hold one of the places; `scope`'s deadline (the caller's timeout) stands still
        while waiting for it."""
        sem = self._semaphore()
        if sem.locked():
            left = scope.deadline - anyio.current_time()
            scope.deadline = math.inf
            try:
                await sem.acquire()
            finally:
                scope.deadline = anyio.current_time() + left
        else:
            await sem.acquire()
        try:
            yield
        finally:
            sem.release()


HANDSHAKES = HandshakeGate()
