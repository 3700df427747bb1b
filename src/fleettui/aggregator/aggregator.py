"""FleetAggregator: every node watched at once, merged into copies and one event stream.

The views only ever see deep copies and a bounded event feed, so nothing they do (a slow
repaint, a mutated row, an event log nobody reads) can block a poller or corrupt the state.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

import anyio
import anyio.lowlevel
import anyio.to_thread

from fleettui.aggregator.calibration import CalibrationStore, Calibrator, Observation, expectation
from fleettui.aggregator.chain import ALL_PAGES, AUDIT_PATH, ChainUnreadable, parse_page
from fleettui.aggregator.dispatch import Envelope, ProgressCallback, send
from fleettui.aggregator.fitwatch import FitWatch
from fleettui.aggregator.node import STREAM_GRACE, NodeWorker
from fleettui.aggregator.pins import PinStore
from fleettui.aggregator.state import FleetEvent, NodeState, NodeView
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.errors import FetchError
from fleettui.capacity.estimate import MIB
from fleettui.capacity.fit import FitRequest, find_meta
from fleettui.config import FleetConfig, NodeConfig
from fleettui.wire import ActionRequest, AuditEntry, ModelMeta, NodeSnapshot

EVENT_BUFFER = 512
SETTLE_MAX_S = 10.0  # freeze the start-up heap at the latest this long after start
EXPECT_S = 60.0  # a load no snapshot shows within this long is not observed
EVENT_KINDS = frozenset({"snapshot", "action", "audit", "state", "error"})


class EventSubscription:
    """One reader of the merged event stream: bounded, drops its oldest events when full."""

    def __init__(
        self, owner: FleetAggregator, maxlen: int, kinds: frozenset[str] = EVENT_KINDS
    ) -> None:
        self._owner = owner
        self.kinds = kinds
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
    """Polls, streams and verifies every configured node, and sends actions to them: the one
    object the views talk to (views/source.py); see docs/aggregator.md."""

    def __init__(
        self,
        config: FleetConfig,
        *,
        verify_chain: bool = True,
        pins: PinStore | None = None,
        event_buffer: int = EVENT_BUFFER,
        freeze_gc: bool = True,
        calibration: CalibrationStore | None = None,
    ) -> None:
        self.config = config
        self.verify_chain = verify_chain
        self.pins = pins  # where audit pins persist; None: this process's memory only
        self.event_buffer = event_buffer
        self.freeze_gc = freeze_gc
        self._workers = [
            NodeWorker(
                n,
                config.defaults,
                verify_chain=verify_chain,
                on_change=self._on_change,
                emit=self._emit,
                wants=self._wants,
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
        self._fit: FitWatch | None = None
        # estimate vs observed after each load (None: nothing kept, no correction applied)
        self.calibrator = Calibrator(calibration) if calibration is not None else None
        self._save_wanted: anyio.Event | None = None

    # --- lifecycle -----------------------------------------------------------------------
    async def _open(self) -> None:
        """Resolve tokens and load audit pins off the event loop (files), then build the
        clients."""
        pins = self.pins

        def token(cfg: NodeConfig) -> tuple[str | None, str | None]:
            secret = cfg.resolve_token()
            return secret, cfg.token_problem() if cfg.has_token and secret is None else None

        def prepare() -> list[tuple[str | None, str | None]]:
            if self.calibrator is not None:
                self.calibrator.store.load()
            if pins is not None:
                for w in self._workers:
                    if w.chain is not None:
                        w.chain.load_pin(pins)
            return [token(w.cfg) for w in self._workers]

        tokens = await anyio.to_thread.run_sync(prepare)
        if self.calibrator is not None and (warning := self.calibrator.store.warning):
            self._emit(FleetEvent(time.time(), "(calibration)", "error", warning))
        for w, (secret, problem) in zip(self._workers, tokens, strict=True):
            w.token, w.token_problem = secret, problem
            w.open()
            if w.chain is not None:
                w.chain.publish()  # a pin that is BROKEN shows so before the node answers
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
                for loop, what in w.loops():
                    tg.start_soon(w.guard, loop, what, name=f"{w.cfg.name} {what}")
            tg.start_soon(self._watch_streams)
            if self.calibrator is not None:
                tg.start_soon(self._save_calibration)
            if self.freeze_gc:
                tg.start_soon(self._settle_gc)
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

    async def _watch_streams(self) -> None:
        """Wake the poller of any node whose event stream went quiet while it stood down.

        One timer for the fleet, ticking at an eighth of the poll interval (0.25 s at 2 s):
        a node is polled at most that long after its grace period ran out.
        """
        interval = self.config.defaults.poll_interval_s
        period = max(0.01, interval * (STREAM_GRACE - 1) / 2)
        workers = [w for w in self._workers if w.stream is not None]
        while workers:
            await anyio.sleep(period)
            now = time.monotonic()
            for w in workers:
                if w.standing_down:
                    w.check_stream(now)

    async def _settle_gc(self) -> None:
        """Once every node has answered (or after SETTLE_MAX_S), collect and freeze the heap,
        so later full collections walk only what was allocated since, not the long-lived
        tasks, connections and per-node state (a stall of the loop otherwise: performance.md).
        """
        deadline = time.monotonic() + SETTLE_MAX_S
        while time.monotonic() < deadline and any(
            w.view.state is NodeState.INITIALIZING for w in self._workers
        ):
            await anyio.sleep(0.1)
        gc.collect()
        gc.freeze()

    # --- reading -------------------------------------------------------------------------
    def snapshots(self) -> list[NodeView]:
        """Deep copies of every node, in config order."""
        return [w.view_copy() for w in self._workers]

    def changed(self, known: Mapping[str, int]) -> list[NodeView]:
        """Copies of the nodes whose `version` differs from `known` (name -> version), in
        config order: for a view that keeps the rows it already holds (a refresh in which a
        tenth of the nodes changed costs a tenth of `snapshots()`, docs/performance.md).
        """
        return [w.view_copy() for w in self._workers if known.get(w.cfg.name) != w.view.version]

    def node(self, name: str) -> NodeView | None:
        w = self._by_name.get(name)
        return w.view_copy() if w else None

    @property
    def names(self) -> list[str]:
        return [w.cfg.name for w in self._workers]

    @property
    def config_warnings(self) -> list[str]:
        return list(self.config.warnings)

    @property
    def skipped(self) -> int:
        return len(self.config.skipped)

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

    def events(self, kinds: Iterable[str] | None = None) -> EventSubscription:
        """A new subscriber to the merged event stream, registered now (not at first read).

        `kinds` keeps only those kinds: a reader that only wants transitions and actions
        should not have to skip the `snapshot` events (most of them, docs/aggregator.md).
        """
        chosen = EVENT_KINDS if kinds is None else frozenset(kinds)
        if unknown := chosen - EVENT_KINDS:
            raise ValueError(f"unknown event kinds: {sorted(unknown)}")
        sub = EventSubscription(self, self.event_buffer, chosen)
        self._subs.add(sub)
        return sub

    def _on_change(self, worker: NodeWorker) -> None:
        self._generation += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _emit(self, ev: FleetEvent) -> None:
        for sub in list(self._subs):
            if ev.kind in sub.kinds:
                sub.put(ev)

    def _wants(self, kind: str) -> bool:
        return any(kind in sub.kinds for sub in self._subs)

    # --- the fit question ----------------------------------------------------------------
    @property
    def fit(self) -> FitWatch | None:
        return self._fit

    def set_fit(
        self,
        request: FitRequest | None,
        meta: ModelMeta | None = None,
        meta_from: str | None = None,
        strategy: str = "binpack",
    ) -> FitWatch | None:
        """Ask (or, with None, stop asking) whether a model fits on every node: each view's
        `fit` answers it from then on, recomputed on every snapshot. Without `meta` the
        model's metadata comes from the first node that has it resident or on disk; what
        this operator measured after earlier loads corrects the estimates (calibration.py)."""
        watch = None
        if request is not None:
            store = self.calibrator.store if self.calibrator is not None else None
            watch = FitWatch(
                request,
                meta,
                meta_from if meta else None,
                on_meta=self._refit,
                calibration=store,
                strategy=strategy,
            )
        self._fit = watch
        for w in self._workers:
            w.fit_watch = watch
        if watch is not None and watch.meta is None:
            watch.learn_all(
                (w.name, NodeSnapshot.model_validate_json(w.snap_json))
                for w in self._workers
                if w.snap_json is not None
            )
        self._refit()
        return watch

    def _refit(self) -> None:
        for w in self._workers:
            w.refit()

    # --- one-shot requests ---------------------------------------------------------------
    async def poll_once(self, timeout: float, *, full_audit: bool = False) -> list[NodeView]:
        """Poll every node once in parallel (snapshot, then the audit chain), capped at `timeout`.

        The chain: the pinned entry, what is new and a bounded share of the older log (the
        pages verified longest ago), or with `full_audit` all of it; the whole log on first
        contact.

        Nodes without an answer by then are OFFLINE with that reason. Works with or without the
        aggregator running.
        """
        temporary = not self._opened
        if temporary:
            await self._open()
        answered: set[str] = set()
        deadline = time.monotonic() + timeout

        async def one(w: NodeWorker) -> None:
            ok = await w.poll(min(w.defaults.http_timeout_s, timeout))  # never raises
            answered.add(w.cfg.name)
            left = deadline - time.monotonic()
            if ok and w.chain is not None and w.snap_json is not None and left > 0:
                sweep = ALL_PAGES if full_audit else None  # None: the stalest pages
                await w.chain.sync(min(w.defaults.http_timeout_s, left), sweep=sweep)  # nor this

        try:
            with anyio.move_on_after(timeout):
                async with anyio.create_task_group() as tg:
                    for w in self._workers:
                        tg.start_soon(one, w)
            for w in self._workers:
                if w.cfg.name not in answered:
                    w.unanswered(f"no answer within {timeout:g} s")
        finally:
            if temporary:
                await self._close()
        return self.snapshots()

    async def fetch_audit(self, name: str, limit: int = 20) -> list[AuditEntry]:
        """The node's newest `limit` audit entries, oldest first; FetchError when unavailable."""
        w = self._by_name.get(name)
        if w is None:
            raise FetchError(f"no node named {name!r}", reachable=False)
        if not w.kind.audited:
            raise FetchError(f"{w.cfg.kind} nodes keep no fleettui audit log", reachable=True)
        limit = max(1, min(limit, 500))
        timeout = w.defaults.http_timeout_s
        async with contextlib.AsyncExitStack() as stack:
            client = w.client
            if client is None:
                token = await anyio.to_thread.run_sync(w.cfg.resolve_token)
                client = NodeClient(w.cfg.url, token, timeout, w.endpoint.tls)
                stack.push_async_callback(client.aclose)
            try:
                head = w.audit_seq
                if head is None:
                    probe = await client.get(
                        AUDIT_PATH, params={"after": 0, "limit": 1}, timeout_s=timeout
                    )
                    head = parse_page(probe).head.seq
                body = await client.get(
                    AUDIT_PATH,
                    params={"after": max(0, head - limit), "limit": limit},
                    timeout_s=timeout,
                )
                page = parse_page(body)
            except ChainUnreadable as exc:
                raise FetchError(str(exc), reachable=True) from None
        return [e for _, e in page.entries if isinstance(e, AuditEntry)][-limit:]

    # --- actions -------------------------------------------------------------------------
    async def act(
        self,
        names: Sequence[str],
        request: ActionRequest,
        on_progress: ProgressCallback | None = None,
    ) -> Envelope:
        """Send one action to the named nodes (in that order in the envelope), each through
        the client, token and kind its worker holds. Works with or without the aggregator
        running (`fleet bulk` opens it for the call). ValueError for an unknown name."""
        if unknown := [n for n in names if n not in self._by_name]:
            raise ValueError(f"no node named {', '.join(map(repr, unknown))}")
        temporary = not self._opened
        if temporary:
            await self._open()
        try:
            targets = [self._by_name[n] for n in names]
            expected = self._expected_loads(targets, request)
            env = await send(targets, request, on_progress=on_progress)
        finally:
            if temporary:
                await self._close()
        if self.calibrator is not None:
            for name in env.succeeded:
                if (exp := expected.get(name)) is not None:
                    self.calibrator.expect(name, exp)
                    self._by_name[name].on_snapshot = self._seen
        return env

    # --- calibration ---------------------------------------------------------------------
    def _expected_loads(self, targets: list[NodeWorker], request: ActionRequest) -> dict:
        """Each target's estimate for a load, from its last snapshot (the model's metadata
        from the fit question, else the targets', else any node's)."""
        if self.calibrator is None or request.action != "load" or not request.model:
            return {}
        snaps = {
            w.name: NodeSnapshot.model_validate_json(w.snap_json)
            for w in targets
            if w.snap_json is not None
        }
        model = request.model
        watch = self._fit
        meta = watch.meta if watch is not None and watch.request.model == model else None
        if meta is None:
            meta = find_meta(snaps, model)
        if meta is None:
            meta = find_meta(
                {
                    w.name: NodeSnapshot.model_validate_json(w.snap_json)
                    for w in self._workers
                    if w.snap_json is not None and w.name not in snaps
                },
                model,
            )
        return {
            name: exp
            for name, snap in snaps.items()
            if (exp := expectation(snap, meta, request)) is not None
        }

    def _seen(self, name: str, snap: NodeSnapshot) -> Observation | None:
        """A snapshot of a node a load is expected on: record what it holds, once it shows."""
        assert self.calibrator is not None
        obs = self.calibrator.seen(name, snap)
        self.calibrator.expire(EXPECT_S)
        if name not in self.calibrator.expected:
            self._by_name[name].on_snapshot = None
        if obs is not None:
            self._emit(
                FleetEvent(
                    time.time(),
                    name,
                    "action",
                    f"calibration: estimated {obs.estimated_bytes / MIB:,.0f} MiB, "
                    f"observed {obs.observed_bytes / MIB:,.0f} MiB",
                )
            )
            if self._save_wanted is not None:
                self._save_wanted.set()
            if self._fit is not None:
                self._refit()
        return obs

    async def _save_calibration(self) -> None:
        """Write what was observed, off the event loop, whenever there is something new."""
        assert self.calibrator is not None
        store = self.calibrator.store
        try:
            while True:
                self._save_wanted = anyio.Event()
                await self._save_wanted.wait()
                await self._save(store)
        finally:
            self._save_wanted = None
            with anyio.CancelScope(shield=True):
                await self._save(store)

    async def _save(self, store: CalibrationStore) -> None:
        try:
            await anyio.to_thread.run_sync(store.save)
        except OSError as exc:  # the state dir unwritable: the dashboard carries on
            self._emit(FleetEvent(time.time(), "(calibration)", "error", f"cannot save: {exc}"))

    async def settle_loads(self, timeout: float) -> list[str]:
        """Poll the nodes a load is expected on until a snapshot shows the model (or
        `timeout`), save what was observed; returns the nodes none showed it on in time.
        For one-shot commands (`fleet load`): a running aggregator sees the next snapshots
        by itself."""
        cal = self.calibrator
        if cal is None or not cal.expected:
            return []
        deadline = time.monotonic() + timeout
        interval = min(0.5, self.config.defaults.poll_interval_s)
        temporary = not self._opened
        if temporary:
            await self._open()
        try:
            while cal.expected and (left := deadline - time.monotonic()) > 0:
                waiting = [self._by_name[n] for n in cal.expected]
                with anyio.move_on_after(left):
                    async with anyio.create_task_group() as tg:
                        for w in waiting:
                            tg.start_soon(w.poll, min(w.defaults.http_timeout_s, left))
                if cal.expected:
                    await anyio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        finally:
            if temporary:
                await self._close()
        missed = list(cal.expected)
        cal.expected.clear()
        await self._save(cal.store)
        return missed
