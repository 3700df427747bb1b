"""Fan-out of server-sent events to any number of subscribers without ever blocking the producer."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import anyio

SUBSCRIBER_BUFFER = 32


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    data: bytes

    def encode(self) -> bytes:
        return b"id: %d\nevent: %s\ndata: %s\n\n" % (self.id, self.type.encode(), self.data)


class Subscription:
    """A bounded queue per client: a slow client loses its oldest events, never stalls others."""

    def __init__(self) -> None:
        self.queue: deque[Event] = deque(maxlen=SUBSCRIBER_BUFFER)
        self._wake = anyio.Event()
        self.closed = False
        self.dropped = 0

    def put(self, ev: Event) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(ev)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def get(self, timeout: float) -> Event | None:
        """Next event, or None after `timeout` seconds (time to send a ping) or once closed."""
        if not self.queue and not self.closed:
            with anyio.move_on_after(timeout):
                await self._wake.wait()
            self._wake = anyio.Event()
        return self.queue.popleft() if self.queue else None


class EventBroker:
    """Numbers events so ids keep increasing even across agent restarts (they start at now-ms)."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._last_id = int(time.time() * 1000)
        self.closed = False

    def next_id(self) -> int:
        self._last_id = max(self._last_id + 1, int(time.time() * 1000))
        return self._last_id

    def publish(self, type_: str, data: bytes) -> Event:
        ev = Event(self.next_id(), type_, data)
        for sub in self._subs:
            sub.put(ev)
        return ev

    def subscribe(self) -> Subscription:
        sub = Subscription()
        if self.closed:
            sub.close()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        self.closed = True
        for sub in self._subs:
            sub.close()
