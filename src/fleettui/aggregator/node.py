"""One node as the aggregator tracks it: a status poller, an event-stream reader, a chain check.

Each node owns its client and its tasks, and every failure it can meet ends up as a state and a
reason on its `NodeView`, never as an exception that reaches the aggregator: one dead or hostile
node costs its own three tasks and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
from httpx_sse import ServerSentEvent
from pydantic import ValidationError

from fleettui.aggregator.backoff import SHARED_RNG, Backoff
from fleettui.aggregator.chain import ChainVerifier
from fleettui.aggregator.history import PowerHistory, daily_costs
from fleettui.aggregator.http import (
    ERROR_BODY,
    Endpoint,
    FetchError,
    NodeClient,
    PushStream,
    StreamBroken,
    status_reason,
)
from fleettui.aggregator.kinds import kind_for
from fleettui.aggregator.kinds.base import describe_validation, unexpected
from fleettui.aggregator.pins import Pin, PinFileError, PinStore, node_key
from fleettui.aggregator.sse import SSEParser, StreamError
from fleettui.aggregator.state import (
    ChainStatus,
    FleetEvent,
    NodeState,
    NodeView,
    SnapshotFacts,
)
from fleettui.config import Defaults, NodeConfig
from fleettui.fsutil import UnsafePathError
from fleettui.wire import AUDIT_PROBLEM_PREFIX, ActionEvent, NodeSnapshot

log = logging.getLogger(__name__)

EVENTS_PATH = "/api/v1/events"
STREAM_IDLE_S = 45.0  # agents send a ping comment every 15 s; three missed means it is dead
# Adaptive polling: a snapshot event is a refresh, so while the stream delivers them the poller
# stands down. It polls when no snapshot arrived for STREAM_GRACE poll intervals (a late or
# silent stream, or an agent ticking slower than we poll), and every HEARTBEAT_POLLS intervals
# (less a random half) anyway, to measure latency and check the snapshot endpoint still answers.
STREAM_GRACE = 1.25
HEARTBEAT_POLLS = 15
BIG_SNAPSHOT = 32 * 1024  # keep such a snapshot re-serialised, not as the node sent it


class Waker:
    """A sleep that another task can cut short (a node that came back should not wait 30 s).

    Events are created lazily, so workers can be built before an event loop runs.
    """

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


class NodeWorker:
    """Holds one node's live state; the aggregator reads `view` and copies it out."""

    def __init__(
        self,
        cfg: NodeConfig,
        defaults: Defaults,
        *,
        verify_chain: bool,
        on_change: Callable[[NodeWorker], None],
        emit: Callable[[FleetEvent], None],
        wants: Callable[[str], bool] = lambda kind: True,
    ) -> None:
        self.cfg = cfg
        self.defaults = defaults
        self.on_change = on_change
        self.emit = emit
        self.wants = wants  # whether any reader takes events of a kind (skip building them)
        self.view = NodeView(
            name=cfg.name,
            url=cfg.url,
            role=cfg.role,
            tags=list(cfg.tags),
            has_token=cfg.has_token,
            kind=cfg.kind,
        )
        self.client: NodeClient | None = None
        self.token: str | None = None
        self.token_problem: str | None = None  # why a configured token is not sent
        self.endpoint = Endpoint.parse(cfg.url)
        # The last good snapshot is kept as JSON text plus the few facts the state rules need,
        # not as a model: a model is ~150 objects that the garbage collector would walk over
        # and over (500 replaced a second at 1000 nodes). The views' copies carry the text and
        # parse it when they read it (`NodeView.snapshot`).
        self.snap_json: str | bytes | None = None
        self.snap_facts: SnapshotFacts | None = None
        self.cost_daily: list[float] = []
        self.snap_ts: float | None = None
        self.snap_reasons: list[str] = []  # the agent's problems and engines that are down
        self.audit_seq: int | None = None
        self.power = PowerHistory()
        self.poll_backoff = Backoff(defaults.backoff_min_s, defaults.backoff_max_s)
        self.stream_backoff = Backoff(defaults.backoff_min_s, defaults.backoff_max_s)
        self.kind = kind_for(cfg.kind)  # how this node is read: kinds/
        self.streams = self.kind.streams
        self.chain: ChainVerifier | None = (
            ChainVerifier(key=node_key(cfg.url)) if verify_chain and self.kind.audited else None
        )
        self.pins: PinStore | None = None  # set by load_pin: where the chain's pin persists
        self.hostname: str | None = None  # as the node last reported it
        if self.chain is None:
            self.view.chain = ChainStatus.NOT_APPLICABLE
        self.live = False  # run(): the stream and staleness count; poll_once(): they do not
        self.poll_error: str | None = None
        self.poll_unreachable = False
        self.stream_error: str | None = None
        self.stream_down_since: float | None = None
        self.stream_snap_at: float | None = None  # monotonic time of the last streamed snapshot
        self.last_poll_at = 0.0
        self.standing_down = False  # the poller waits on the stream (the aggregator watches it)
        self.ts_changed_at = time.monotonic()
        self.last_event_id = ""
        self.poll_waker = Waker()
        self.stream_waker = Waker()
        self.chain_waker = Waker()
        self.head_moved = True  # the chain loop's next check extends the pin (the tail)

    # --- lifecycle -----------------------------------------------------------------------
    def open(self) -> None:
        """Create the client; `self.token` must have been resolved (off the event loop)."""
        if self.client is None:
            self.client = NodeClient(self.cfg.url, self.token, self.defaults.http_timeout_s)

    async def aclose(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            with anyio.CancelScope(shield=True):
                await client.aclose()

    def loops(self) -> list[tuple[Callable[[], Any], str]]:
        """The node's loops and their names; the aggregator runs them in its own task group
        (a task group per node would be 1000 more tasks and cancel scopes)."""
        self.live = True
        out: list[tuple[Callable[[], Any], str]] = [(self.poll_loop, "poller")]
        if self.streams:
            out.append((self.stream_loop, "event stream"))
        if self.chain is not None:
            out.append((self.chain_loop, "chain check"))
        return out

    async def run(self) -> None:
        """The node's tasks, until cancelled."""
        async with anyio.create_task_group() as tg:
            for loop, what in self.loops():
                tg.start_soon(self.guard, loop, what)

    async def guard(self, loop: Callable[[], Any], what: str) -> None:
        """Restart a loop that hit a bug instead of letting it take the whole fleet down."""
        while True:
            try:
                await loop()
                return
            except Exception as exc:
                log.exception("%s %s crashed", self.cfg.name, what)
                self.set_last_error(f"internal error in {what}: {type(exc).__name__}: {exc}")
                with contextlib.suppress(Exception):
                    self.refresh(force=True)
                await anyio.sleep(max(1.0, self.defaults.backoff_min_s))

    # --- polling -------------------------------------------------------------------------
    async def fetch_snapshot(self, timeout_s: float) -> NodeSnapshot:
        assert self.client is not None
        return await self.kind.fetch_snapshot(self.client, self.cfg.url, timeout_s)

    async def poll(self, timeout_s: float | None = None) -> bool:
        """One snapshot request; records the outcome. Returns whether the node answered."""
        timeout_s = timeout_s or self.defaults.http_timeout_s
        t0 = time.perf_counter()
        try:
            snap = await self.fetch_snapshot(timeout_s)
            self.poll_error = None
            self.poll_unreachable = False
            self.view.latency_ms = round((time.perf_counter() - t0) * 1000, 1)
            self.apply_snapshot(snap)
        except FetchError as exc:
            return self.poll_failed(exc.reason, exc.reachable, t0)
        except Exception as exc:  # never past this node: it is the node's state and reason
            return self.poll_failed(unexpected(exc), True, t0)
        if self.streams and self.stream_down_since is not None:
            self.stream_waker.wake()  # it is back: reconnect the stream now, not after backoff
        return True

    def poll_failed(self, reason: str, reachable: bool, t0: float) -> bool:
        if self.token_problem and reason.startswith("HTTP 401"):
            reason = f"{reason}; {self.token_problem}"  # e.g. the token file's chmod
        self.poll_error = reason
        self.poll_unreachable = not reachable
        self.set_last_error(f"snapshot: {reason}")
        if reachable:
            self.view.latency_ms = round((time.perf_counter() - t0) * 1000, 1)
        self.refresh(force=True)
        return reachable

    async def poll_loop(self) -> None:
        interval = self.defaults.poll_interval_s
        rng = SHARED_RNG
        while True:
            t0 = time.monotonic()
            answered = await self.poll()
            self.last_poll_at = time.monotonic()
            if answered:
                self.poll_backoff.reset()
                self.view.retry_at = None
                delay = max(0.0, interval * rng.uniform(0.9, 1.1) - (time.monotonic() - t0))
            else:
                delay = self.poll_backoff.next_delay()
                self.view.retry_at = time.time() + delay
                self.refresh(force=True)
            await self.poll_waker.sleep(delay)
            if answered and self.poll_error is None:
                await self.stand_down(interval)

    def stream_fresh(self, now: float) -> bool:
        """The event stream is up and delivered a snapshot within the grace period."""
        return (
            self.live
            and self.view.stream_ok
            and self.stream_snap_at is not None
            and now - self.stream_snap_at < self.defaults.poll_interval_s * STREAM_GRACE
        )

    async def stand_down(self, interval: float) -> None:
        """Skip polls while the stream keeps the node fresh (see STREAM_GRACE).

        Only the heartbeat is a timer here; a stream that goes quiet is noticed by the
        aggregator's watchdog (`check_stream`), one timer for the whole fleet instead of one
        wake-up per node per event.
        """
        # spread over half the period, so nodes started together do not poll together
        heartbeat = self.last_poll_at + interval * HEARTBEAT_POLLS * SHARED_RNG.uniform(0.5, 1)
        self.standing_down = True
        try:
            while self.stream_fresh(time.monotonic()):
                wait = heartbeat - time.monotonic()
                if wait <= 0:
                    return
                await self.poll_waker.sleep(wait)  # a stream failing or gone quiet wakes us
        finally:
            self.standing_down = False

    def check_stream(self, now: float) -> None:
        """Watchdog tick: wake a poller that stood down for a stream that has gone quiet."""
        if self.standing_down and not self.stream_fresh(now):
            self.poll_waker.wake()

    # --- event stream --------------------------------------------------------------------
    async def stream_loop(self) -> None:
        while True:
            try:
                await self.stream_once()
                reason = "stream closed by the node"
            except (StreamError, StreamBroken) as exc:
                reason = str(exc)
            except FetchError as exc:
                reason = exc.reason
            except Exception as exc:  # the node's fault, not the fleet's (see `unexpected`)
                reason = unexpected(exc)
            self.stream_failed(reason)
            await self.stream_waker.sleep(self.stream_backoff.next_delay())

    async def stream_once(self) -> None:
        """One connection to the event stream, read until it ends or fails.

        Events are parsed and handled as their bytes arrive, in the event loop's read callback
        (`PushStream`): no per-event task, future or timeout scope. This task only waits for
        the end, or for 45 s of silence (agents send a ping every 15 s).
        """
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        timeout = self.defaults.http_timeout_s
        t0 = time.perf_counter()
        resp = await PushStream.open(
            self.endpoint, EVENTS_PATH, headers, token=self.token, timeout_s=timeout
        )
        if self.view.latency_ms is None:  # until the first poll answers, the stream's will do
            self.view.latency_ms = round((time.perf_counter() - t0) * 1000, 1)
        try:
            if resp.status != 200:
                body = await resp.read_capped(ERROR_BODY, timeout)
                reason = status_reason(resp.status, resp.headers.get("location"), body)
                raise FetchError(reason, reachable=True)
            ctype = resp.headers.get("content-type", "").partition(";")[0].strip()
            if ctype != "text/event-stream":
                raise StreamError(f"not an event stream (content-type {ctype or 'missing'!r})")
            if problem := resp.answer.encoding_problem():
                raise StreamError(problem)
            parser = SSEParser()

            def on_body(chunk: bytes) -> None:
                for sse in parser.feed(chunk):
                    self.last_event_id = parser.last_id
                    self.handle_event(sse)

            resp.start(on_body)
            try:
                await resp.wait(STREAM_IDLE_S)
            except TimeoutError:
                raise StreamError(f"no event or ping for {STREAM_IDLE_S:g} s") from None
            for sse in parser.finish():
                self.handle_event(sse)
            if parser.mid_event:
                raise StreamError("stream dropped mid-event")
        finally:
            resp.close()

    def handle_event(self, sse: ServerSentEvent) -> None:
        try:
            self._handle_event(sse)
        except Exception as exc:  # e.g. a snapshot that validates but trips a rule further on
            self.stream_failed(f"bad {sse.event} event: {unexpected(exc)}")

    def _handle_event(self, sse: ServerSentEvent) -> None:
        now = time.time()
        if sse.event == "snapshot":
            try:
                snap = NodeSnapshot.model_validate_json(sse.data)
            except ValidationError as exc:
                self.stream_failed(f"bad snapshot event: {describe_validation(exc)}")
                return
            self.stream_ok()
            self.stream_snap_at = time.monotonic()
            self.apply_snapshot(snap, sse.data)
            if self.wants("snapshot"):
                up = sum(e.status == "up" for e in snap.engines)
                watts = f"{snap.power.watts:.0f} W, " if snap.power.watts is not None else ""
                summary = f"snapshot: {watts}{up}/{len(snap.engines)} engines up"
                self.emit(FleetEvent(now, self.cfg.name, "snapshot", summary))
        elif sse.event == "action":
            self.stream_ok()
            data = _json_or_none(sse.data)
            try:
                act = ActionEvent.model_validate(data)
                what = " ".join(x for x in (act.action, act.engine, act.model) if x)
                outcome = "" if act.ok is None else (": ok" if act.ok else ": failed")
                summary = f"{act.phase} {what}{outcome}"
            except ValidationError:
                summary = "action (unreadable event)"
            self.emit(FleetEvent(now, self.cfg.name, "action", summary, _dict_or_none(data)))
        elif sse.event == "audit":
            self.stream_ok()
            data = _dict_or_none(_json_or_none(sse.data))
            seq = data.get("seq") if data else None
            summary = f"audit seq {seq}: {data.get('action')} {data.get('status')}" if data else ""
            self.emit(FleetEvent(now, self.cfg.name, "audit", summary or "audit entry", data))
            if self.chain is not None:
                self.head_moved = True
                self.chain_waker.wake()
        else:
            self.stream_ok()

    def stream_ok(self) -> None:
        self.stream_backoff.reset()
        if self.stream_down_since is not None or self.stream_error is not None:
            self.stream_down_since = None
            self.stream_error = None
            if self.poll_unreachable:
                self.poll_waker.wake()  # the node is back: poll now, not after backoff
        if not self.view.stream_ok:
            self.view.stream_ok = True
            self.refresh(force=True)

    def stream_failed(self, reason: str) -> None:
        if self.stream_down_since is None:
            self.stream_down_since = time.monotonic()
        if reason != self.stream_error:
            self.stream_error = reason
            self.set_last_error(f"event stream: {reason}")
        if self.view.stream_ok:
            self.poll_waker.wake()  # the poller stood down for the stream: poll again now
        self.view.stream_ok = False
        self.stream_snap_at = None
        self.refresh(force=True)

    # --- audit chain ---------------------------------------------------------------------
    async def chain_loop(self) -> None:
        """Check when a new head shows up (woken: extend the pin), when a page of the older
        log falls due (each is read again every chain_rescan_s, see ChainVerifier.sweep_due),
        and re-read the pinned entry at least every chain_recheck_s. A node whose audit cannot
        be read is retried with backoff, not on every snapshot."""
        assert self.chain is not None
        d = self.defaults
        retry = Backoff(d.backoff_min_s, max(d.backoff_min_s, d.chain_recheck_s))
        min_gap = min(d.poll_interval_s, 1.0)  # coalesce a burst of audit events
        await self.chain_waker.sleep(math.inf)  # wait for the first snapshot
        tail_at = 0.0  # when the pinned entry is next re-read anyway
        while True:
            now = time.monotonic()
            tail = self.head_moved or now >= tail_at
            if tail:
                self.head_moved = False
                # anywhere in the second half of the period, so a fleet started at once does
                # not check in step
                tail_at = now + d.chain_recheck_s * SHARED_RNG.uniform(0.5, 1)
            share = self.chain.sweep_due(now, d.chain_rescan_s)
            ok = await self.sync_chain(d.http_timeout_s, sweep=share, tail=tail)
            if ok:
                retry.reset()
                await anyio.sleep(min_gap)
                if self.chain.pin.broken:
                    wait = tail_at  # nothing to check; only look for a `fleet audit forget`
                elif self.chain.pin.seq == 0:
                    wait = math.inf  # an empty log: nothing to re-read until a head shows
                else:
                    wait = min(tail_at, self.chain.next_due(d.chain_rescan_s))
                await self.chain_waker.sleep(max(0.0, wait - time.monotonic()))
            else:
                self.head_moved = True  # retried in full
                await anyio.sleep(retry.next_delay())
                self.chain_waker.clear()

    async def sync_chain(
        self, timeout_s: float, *, sweep: int | None = None, tail: bool = True
    ) -> bool:
        """One verification pass (`sweep`: pages of the older log to re-read, None for all of
        it); False when the chain could not be read (retry later). What was verified is saved
        even when the pass is cut short."""
        assert self.chain is not None and self.client is not None
        ok = True
        try:
            await self.chain.sync(self.client, timeout_s=timeout_s, sweep=sweep, tail=tail)
        except FetchError as exc:
            self.set_last_error(f"audit: {exc.reason}")
            ok = False
        except Exception as exc:  # the node's fault, not the fleet's (see `unexpected`)
            self.set_last_error(f"audit: {unexpected(exc)}")
            ok = False
        finally:
            with anyio.CancelScope(shield=True):
                await self.save_pin()
        if self.chain.status is ChainStatus.UNKNOWN:
            ok = False
        self.publish_chain()
        return ok

    def load_pin(self, store: PinStore) -> None:
        """Start from the pin on disk (blocking: called in a worker thread)."""
        assert self.chain is not None
        self.pins = store
        try:
            pin = store.load(self.chain.pin.key)
        except (PinFileError, OSError) as exc:
            self.chain.store_problem = self._store_problem(exc)
            return
        if pin is not None:
            self.chain.adopt(pin, reset=False)

    def _store_problem(self, exc: Exception) -> str:
        return f"audit pin unusable ({exc}); `fleet audit forget {self.cfg.name}` replaces it"

    async def save_pin(self) -> None:
        """Merge this process's pin with the one on disk (other views, `fleet audit forget`)."""
        chain, store = self.chain, self.pins
        if chain is None or store is None or chain.store_problem:
            return
        pin = chain.pin
        if pin.hostname is None and self.hostname is not None:
            pin.hostname = self.hostname
        pin.name = self.cfg.name
        mine = Pin(**{**vars(pin), "checkpoints": dict(pin.checkpoints)})
        dirty = chain.dirty

        def sync() -> tuple[Pin, bool] | None:
            if not dirty and not store.changed(pin.key):
                return None
            return store.sync(mine)

        try:
            out = await anyio.to_thread.run_sync(sync)
        except (PinFileError, UnsafePathError) as exc:  # a bad or planted file: left alone
            chain.store_problem = self._store_problem(exc)
            return
        except OSError as exc:
            chain.save_problem = f"pin not saved ({exc.strerror or exc})"
            return
        chain.save_problem = None
        if out is None:
            return
        merged, reset = out
        late = chain.pin.broken if not reset and not merged.broken else None
        chain.adopt(merged, reset=reset)
        chain.dirty = late is not None  # broken while the save ran: saved next time
        if late is not None:
            merged.broken = late

    def chain_detail(self) -> str | None:
        """The chain's detail, with a hint when the node now calls itself something else."""
        assert self.chain is not None
        detail = self.chain.detail
        pinned = self.chain.pin.hostname
        if self.chain.pin.broken and pinned and self.hostname and self.hostname != pinned:
            detail = (
                f"{detail}; the node now reports hostname {self.hostname!r} (pinned as "
                f"{pinned!r}): if it was reinstalled, `fleet audit forget {self.cfg.name}`"
            )
        return detail

    def publish_chain(self, *, refresh: bool = True) -> None:
        """Copy the chain's status to the view; a new BROKEN is an `error` event."""
        if self.chain is None:
            return
        status, detail = self.chain.status, self.chain_detail()
        if (status, detail) == (self.view.chain, self.view.chain_detail):
            return
        if status is ChainStatus.BROKEN and self.view.chain is not ChainStatus.BROKEN:
            self.emit(
                FleetEvent(time.time(), self.cfg.name, "error", f"audit chain BROKEN: {detail}")
            )
        self.view.chain, self.view.chain_detail = status, detail
        if refresh:
            self.refresh(force=True)

    # --- state ---------------------------------------------------------------------------
    def apply_snapshot(self, snap: NodeSnapshot, raw: str | bytes | None = None) -> None:
        """Keep a validated snapshot: as text (`raw`, the JSON it was validated from, when
        given) plus the facts the state rules read. See `snap_json`.

        Everything is derived before anything is kept, so a snapshot that trips on the way
        (the caller makes that the node's reason) leaves the last good one whole."""
        first = self.snap_json is None
        if raw is None or len(raw) > BIG_SNAPSHOT:
            raw = snap.model_dump_json()  # unknown extra fields are not kept (nor re-parsed)
        facts = SnapshotFacts.of(snap)
        daily = daily_costs(snap)
        reasons = list(snap.problems)
        for eng in snap.engines:
            if eng.status == "down" and not any(f"engine {eng.name}" in r for r in reasons):
                err = f": {eng.error}" if eng.error else ""
                reasons.append(f"engine {eng.name} down{err}")
        self.power.add(snap.ts, snap.power.watts)
        if self.snap_ts != snap.ts:
            self.ts_changed_at = time.monotonic()
        self.snap_json = raw
        self.snap_facts = facts
        self.cost_daily = daily
        self.snap_ts = snap.ts
        self.audit_seq = snap.audit.seq
        if reasons != self.snap_reasons:
            self.snap_reasons = reasons
        self.view.last_seen = time.time()
        self.hostname = snap.node.hostname
        if self.chain is not None:
            self.chain.agent_problem = next(
                (
                    p[len(AUDIT_PROBLEM_PREFIX) :]
                    for p in snap.problems
                    if p.startswith(AUDIT_PROBLEM_PREFIX)
                ),
                None,
            )
            if self.chain.check_head(snap.audit):
                self.head_moved = True
                self.chain_waker.wake()
            elif first:  # start the chain loop
                self.chain_waker.wake()
            self.publish_chain(refresh=False)
        self.refresh(force=True)

    def view_copy(self) -> NodeView:
        """What the views get: a copy that shares nothing mutable with the worker. The snapshot
        goes as its (immutable) JSON text; the view parses its own model if it is read."""
        v = self.view
        return NodeView(
            name=v.name,
            url=v.url,
            role=v.role,
            tags=list(v.tags),
            has_token=v.has_token,
            state=v.state,
            reasons=list(v.reasons),
            snapshot_json=self.snap_json,
            facts=self.snap_facts,
            latency_ms=v.latency_ms,
            last_seen=v.last_seen,
            last_error=v.last_error,
            power_history=self.power.values(),
            cost_daily=list(self.cost_daily),
            chain=v.chain,
            chain_detail=v.chain_detail,
            stream_ok=v.stream_ok,
            version=v.version,
            kind=v.kind,
            retry_at=v.retry_at,
        )

    def set_last_error(self, text: str) -> None:
        if text != self.view.last_error:
            self.view.last_error = text

    def evaluate(self) -> tuple[NodeState, list[str]]:
        """The state rules of the design sketch, from what the poller, stream and chain saw."""
        stream_up = self.live and self.streams and self.view.stream_ok
        if self.poll_unreachable and not stream_up:
            return NodeState.OFFLINE, [self.poll_error or "unreachable"]
        reasons: list[str] = []
        if self.poll_error:
            reasons.append(f"snapshot: {self.poll_error}")
        reasons.extend(self.snap_reasons)
        has_snap = self.snap_json is not None
        if self.live:
            age = time.monotonic() - self.ts_changed_at
            if has_snap and age > self.defaults.stale_after_s:
                reasons.append(f"snapshot stale: not updated for {age:.0f} s")
            grace = max(self.defaults.poll_interval_s, self.defaults.backoff_min_s)
            if (
                self.streams
                and self.stream_down_since is not None
                and time.monotonic() - self.stream_down_since >= grace
            ):
                reasons.append(f"event stream: {self.stream_error or 'down'}")
        if self.chain is not None and self.chain.pin.broken:  # (the agent's own report is
            reasons.append(f"audit chain BROKEN: {self.view.chain_detail}")  # in its problems)
        if reasons:
            return NodeState.DEGRADED, reasons
        return (NodeState.ONLINE if has_snap else NodeState.INITIALIZING), []

    def refresh(self, *, force: bool = False) -> None:
        """Re-derive state and reasons, emit a state event on a change, publish the new version."""
        state, reasons = self.evaluate()
        old = self.view.state
        same_reasons = reasons == self.view.reasons
        changed = force or state != old or not same_reasons
        self.view.state = state
        if not same_reasons:
            self.view.reasons = reasons
        if state != old:
            why = f": {reasons[0]}" if reasons else ""
            self.emit(
                FleetEvent(
                    time.time(),
                    self.cfg.name,
                    "state",
                    f"{old.value} -> {state.value}{why}",
                    {"from": old.value, "to": state.value, "reasons": list(reasons)},
                )
            )
        if changed:
            self.view.version += 1
            self.on_change(self)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _dict_or_none(obj: Any) -> dict[str, Any] | None:
    return obj if isinstance(obj, dict) else None
