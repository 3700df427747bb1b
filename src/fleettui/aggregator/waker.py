"""Waker: a sleep another task can cut short.

Each of a node's loops sleeps on one, so a node that came back is polled and its stream
reconnected now, not when its 30 s backoff runs out, and without a task or a timer per wake.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel


class Waker:
    """Events are created lazily, so workers can be built before an event loop runs."""

    __slots__ = ("_ev", "_pending")

    def __init__(self) -> None:
        self._ev: anyio.Event | None = None
        self._pending = False

    def wake(self) -> None:
        self._pending = True
        if self._ev is not None:
            self._ev.set()

    async def sleep(self, delay: float) -> None:
        if self._pending:
            self._pending = False
            await anyio.lowlevel.checkpoint()
            return
        self._ev = anyio.Event()
        with anyio.move_on_after(delay):
            await self._ev.wait()
        self._ev = None
        self._pending = False

    def clear(self) -> None:
        """Forget wakes that arrived while the owner was busy."""
        self._pending = False
