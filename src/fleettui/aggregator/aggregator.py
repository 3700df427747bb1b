"""FleetAggregator: every node watched at once, merged into copies and one event stream.

The views only ever see deep copies and a bounded event feed, so nothing they do (a slow
repaint, a mutated row, an event log nobody reads) can block a poller or corrupt the state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import weakref
from collections import deque
from types import TracebackType

import anyio
import anyio.lowlevel
import anyio.to_thread

from fleettui.aggregator.chain import AUDIT_PATH, ChainUnreadable, parse_page
from fleettui.aggregator.http import FetchError, get_capped, make_client
from fleettui.aggregator.node import NodeWorker
from fleettui.aggregator.state import FleetEvent, NodeState, NodeView
from fleettui.config import FleetConfig
from fleettui.wire import AuditEntry, NodeSnapshot

EVENT_BUFFER = 512


def clone_view(v: NodeView) -> NodeView:
    """A deep copy that shares nothing mutable with the aggregator's own view."""
    snap = NodeSnapshot.model_validate(v.snapshot.model_dump()) if v.snapshot else None
    return dataclasses.replace(
        v,
        tags=list(v.tags),
        reasons=list(v.reasons),
        snapshot=snap,
        power_history=list(v.power_history),
        cost_daily=list(v.cost_daily),
    )


class EventSubscription:
    """One reader of the merged event stream: bounded, drops its oldest events when full."""

    def __init__(self, owner: FleetAggregator, maxlen: int) -> None:
        self._owner = owner
        self.queue: deque[FleetEvent] = deque(maxlen=maxlen)
        self.dropped = 0
        self.closed = False
        self._ev: anyio.Event | None = None

    def put(self, ev: FleetEvent) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
            self._owner._drops += 1
        self.queue.append(ev)
        if self._ev is not None:
            self._ev.set()

    def close(self) -> None:
        self.closed = True
        if self._ev is not None:
            self._ev.set()

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> FleetEvent:
        while not self.queue:
            if self.closed:
                raise StopAsyncIteration
            self._ev = anyio.Event()
            await self._ev.wait()
            self._ev = None
        return self.queue.popleft()

    async def aclose(self) -> None:
        self._owner._subs.discard(self)
        self.close()


class FleetAggregator:
    """Polls, streams and verifies every configured node; see docs/aggregator.md."""

    def __init__(
        self, config: FleetConfig, *, verify_chain: bool = True, event_buffer: int = EVENT_BUFFER
    ) -> None:
        self.config = config
        self.verify_chain = verify_chain
        self.event_buffer = event_buffer
        self._workers = [
            NodeWorker(
                n,
                config.defaults,
                verify_chain=verify_chain,
                on_change=self._on_change,
                emit=self._emit,
            )
            for n in config.nodes
        ]
        self._by_name = {w.cfg.name: w for w in self._workers}
        if len(self._by_name) != len(self._workers):
            raise ValueError("node names must be unique")
        self._generation = 0
        self._changed: anyio.Event | None = None
        self._subs: weakref.WeakSet[EventSubscription] = weakref.WeakSet()
        self._drops = 0
        self._opened = False
        self._stack: contextlib.AsyncExitStack | None = None

    # --- lifecycle -----------------------------------------------------------------------
    async def _open(self) -> None:
        """Resolve tokens off the event loop (they may live in files), then build the clients."""
        tokens = await anyio.to_thread.run_sync(
            lambda: [w.cfg.resolve_token() for w in self._workers]
        )
        for w, token in zip(self._workers, tokens, strict=True):
            w.token = token
            w.open()
        self._opened = True

    async def _close(self) -> None:
        self._opened = False
        with anyio.CancelScope(shield=True):
            for w in self._workers:
                await w.aclose()
                w.token = None
        for sub in list(self._subs):
            sub.close()

    async def __aenter__(self) -> FleetAggregator:
        if self._stack is not None:
            raise RuntimeError("FleetAggregator is already running")
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._open()
            stack.push_async_callback(self._close)
            tg = await stack.enter_async_context(anyio.create_task_group())
            for w in self._workers:
                tg.start_soon(w.run)
            stack.callback(tg.cancel_scope.cancel)
        except BaseException:
            await stack.__aexit__(*sys.exc_info())
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    async def run(self) -> None:
        """Run until cancelled (e.g. as a Textual worker)."""
        async with self:
            await anyio.sleep_forever()

    # --- reading -------------------------------------------------------------------------
    def snapshots(self) -> list[NodeView]:
        """Deep copies of every node, in config order."""
        return [clone_view(w.view) for w in self._workers]

    def node(self, name: str) -> NodeView | None:
        w = self._by_name.get(name)
        return clone_view(w.view) if w else None

    @property
    def names(self) -> list[str]:
        return [w.cfg.name for w in self._workers]

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def drops(self) -> int:
        """Events dropped across all subscribers because a reader fell behind."""
        return self._drops

    async def wait_changed(self, after: int, timeout: float) -> int:
        """Wait until the generation moves past `after` (or `timeout`); returns the current one."""
        if self._generation != after:
            await anyio.lowlevel.checkpoint()
            return self._generation
        if self._changed is None:
            self._changed = anyio.Event()
        ev = self._changed
        with anyio.move_on_after(timeout):
            await ev.wait()
        return self._generation

    def events(self) -> EventSubscription:
        """A new subscriber to the merged event stream, registered now (not at first read)."""
        sub = EventSubscription(self, self.event_buffer)
        self._subs.add(sub)
        return sub

    def _on_change(self, worker: NodeWorker) -> None:
        self._generation += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _emit(self, ev: FleetEvent) -> None:
        for sub in list(self._subs):
            sub.put(ev)

    # --- one-shot requests ---------------------------------------------------------------
    async def poll_once(self, timeout: float) -> list[NodeView]:
        """Poll every node once in parallel (snapshot, then the audit chain), capped at `timeout`.

        Nodes without an answer by then are OFFLINE with that reason. Works with or without the
        aggregator running.
        """
        temporary = not self._opened
        if temporary:
            await self._open()
        answered: set[str] = set()
        deadline = time.monotonic() + timeout

        async def one(w: NodeWorker) -> None:
            ok = await w.poll(min(w.defaults.http_timeout_s, timeout))
            answered.add(w.cfg.name)
            left = deadline - time.monotonic()
            if ok and w.chain is not None and w.view.snapshot is not None and left > 0:
                await w.sync_chain(min(w.defaults.http_timeout_s, left))

        try:
            with anyio.move_on_after(timeout):
                async with anyio.create_task_group() as tg:
                    for w in self._workers:
                        tg.start_soon(one, w)
            for w in self._workers:
                if w.cfg.name not in answered:
                    w.poll_error = f"no answer within {timeout:g} s"
                    w.poll_unreachable = True
                    w.set_last_error(f"snapshot: {w.poll_error}")
                    w.refresh(force=True)
        finally:
            if temporary:
                await self._close()
        return self.snapshots()

    async def fetch_audit(self, name: str, limit: int = 20) -> list[AuditEntry]:
        """The node's newest `limit` audit entries, oldest first; FetchError when unavailable."""
        w = self._by_name.get(name)
        if w is None:
            raise FetchError(f"no node named {name!r}", reachable=False)
        if w.cfg.kind != "fleettui":
            raise FetchError(f"a {w.cfg.kind} node keeps no fleettui audit log", reachable=True)
        limit = max(1, min(limit, 500))
        timeout = w.defaults.http_timeout_s
        async with contextlib.AsyncExitStack() as stack:
            client = w.client
            if client is None:
                token = await anyio.to_thread.run_sync(w.cfg.resolve_token)
                client = make_client(w.cfg.url, token, timeout)
                stack.push_async_callback(client.aclose)
            try:
                head = w.view.snapshot.audit.seq if w.view.snapshot else None
                if head is None:
                    probe = await get_capped(
                        client, AUDIT_PATH, params={"after": 0, "limit": 1}, timeout_s=timeout
                    )
                    head = parse_page(probe).head.seq
                body = await get_capped(
                    client,
                    AUDIT_PATH,
                    params={"after": max(0, head - limit), "limit": limit},
                    timeout_s=timeout,
                )
                page = parse_page(body)
            except ChainUnreadable as exc:
                raise FetchError(str(exc), reachable=True) from None
        return [e for _, e in page.entries][-limit:]

    def summary(self) -> dict[str, int]:
        """Counts per state, for footers and `fleet status`."""
        out = {s.value: 0 for s in NodeState}
        for w in self._workers:
            out[w.view.state.value] += 1
        return out
