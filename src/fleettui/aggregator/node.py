"""One node as the aggregator tracks it: its state and its poller, composed with its event
stream (`eventstream`) and its chain check (`chaincheck`).

The worker owns what the state rules read (the last good snapshot, the poll's outcome) and
derives the node's state and reasons from it and from what the stream and the chain check
report through their small host protocols. Every failure a node can meet ends up as a state
and a reason on its `NodeView`, never as an exception that reaches the aggregator: one dead or
hostile node costs its own tasks and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import anyio

from fleettui.aggregator.backoff import SHARED_RNG, Backoff
from fleettui.aggregator.chaincheck import ChainCheck
from fleettui.aggregator.eventstream import EventStreamReader
from fleettui.aggregator.fitwatch import FitWatch
from fleettui.aggregator.history import PowerHistory, daily_costs
from fleettui.aggregator.kinds import kind_for
from fleettui.aggregator.kinds.base import unexpected
from fleettui.aggregator.placement import score
from fleettui.aggregator.state import (
    ChainStatus,
    FleetEvent,
    NodeState,
    NodeView,
    SnapshotFacts,
)
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.errors import FetchError
from fleettui.aggregator.transport.framing import Endpoint
from fleettui.aggregator.transport.tls import TlsPolicy
from fleettui.aggregator.waker import Waker
from fleettui.capacity.fit import Fit
from fleettui.config import Defaults, NodeConfig
from fleettui.textsafe import clean
from fleettui.wire import NodeSnapshot

log = logging.getLogger(__name__)

# Adaptive polling: a snapshot event is a refresh, so while the stream delivers them the poller
# stands down. It polls when no snapshot arrived for STREAM_GRACE poll intervals (a late or
# silent stream, or an agent ticking slower than we poll), and every HEARTBEAT_POLLS intervals
# (less a random half) anyway, to measure latency and check the snapshot endpoint still answers.
STREAM_GRACE = 1.25
HEARTBEAT_POLLS = 15
BIG_SNAPSHOT = 32 * 1024  # keep such a snapshot re-serialised, not as the node sent it


TLS_WARN_S = 14 * 86400  # a node certificate this close to its end is a reason


def tls_policy(cfg: NodeConfig, defaults: Defaults) -> TlsPolicy:
    """The node's own TLS keys, else [defaults]'; a pinned fingerprint needs no CA."""
    own = cfg.client_cert is not None
    cert = cfg.client_cert if own else defaults.client_cert
    key = cfg.client_key if own else defaults.client_key
    ca = None if cfg.tls_fingerprint else (cfg.ca_file or defaults.ca_file)
    return TlsPolicy(ca, cfg.tls_fingerprint, cert, key)


class NodeWorker:
    """Holds one node's live state; the aggregator reads `view` and copies it out.

    It is the `StreamHost` of its event stream and the `ChainHost` of its chain check, and the
    `dispatch.ActionTarget` actions are sent through (its config, token and kind)."""

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
        self.name = cfg.name
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
        self.endpoint = Endpoint.parse(cfg.url, tls_policy(cfg, defaults))
        # The last good snapshot is kept as JSON text plus the few facts the state rules need,
        # not as a model (docs/performance.md: the collector's work). The views' copies carry
        # the text and parse it when they read it (`NodeView.snapshot`).
        self.snap_json: str | bytes | None = None
        self.snap_facts: SnapshotFacts | None = None
        self.cost_daily: list[float] = []
        self.snap_ts: float | None = None
        self.snap_reasons: list[str] = []  # the agent's problems and engines that are down
        self.audit_seq: int | None = None
        self.power = PowerHistory()
        self.poll_backoff = Backoff(defaults.backoff_min_s, defaults.backoff_max_s)
        self.kind = kind_for(cfg.kind)  # how this node is read: kinds/
        self.stream = EventStreamReader(self, defaults) if self.kind.streams else None
        self.chain = (
            ChainCheck(self, cfg.url, defaults) if verify_chain and self.kind.audited else None
        )
        if self.chain is None:
            self.view.chain = ChainStatus.NOT_APPLICABLE
        self.live = False  # loops(): the stream and staleness count; poll_once(): they do not
        self.poll_error: str | None = None
        self.poll_unreachable = False
        self.last_poll_at = 0.0
        self.standing_down = False  # the poller waits on the stream (the aggregator watches it)
        self.ts_changed_at = time.monotonic()
        self.poll_waker = Waker()
        self.polled = False  # the first poll has its outcome (`stream_loop` waits for it)
        self.first_poll = Waker()
        self.fit_watch: FitWatch | None = None  # the fleet's fit question, when one is asked
        self.snap_fit: Fit | None = None  # its answer for the last good snapshot
        self.snap_model: NodeSnapshot | None = None  # that snapshot, kept while one is asked
        # told of every good snapshot while a load waits to be observed (calibration)
        self.on_snapshot: Callable[[str, NodeSnapshot], object] | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def open(self) -> None:
        """Create the client; `self.token` must have been resolved (off the event loop)."""
        if self.client is None:
            self.client = NodeClient(
                self.cfg.url, self.token, self.defaults.http_timeout_s, self.endpoint.tls
            )

    async def aclose(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            with anyio.CancelScope(shield=True):
                await client.aclose()

    def loops(self) -> list[tuple[Callable[[], Any], str]]:
        """The node's loops and their names; the aggregator runs them in its own task group
        (a task group per node would be a thousand more tasks and cancel scopes)."""
        self.live = True
        out: list[tuple[Callable[[], Any], str]] = [(self.poll_loop, "poller")]
        if self.stream is not None:
            out.append((self.stream_loop, "event stream"))
        if self.chain is not None:
            out.append((self.chain.run, "chain check"))
        return out

    async def stream_loop(self) -> None:
        """The event stream; over TLS it connects once the first poll has its outcome. Every
        handshake waits its turn (transport/gate.py), and a node is ONLINE after its poll:
        a thousand polls first and the streams after them bring the fleet up in half the
        handshakes (docs/performance.md, "TLS")."""
        assert self.stream is not None
        if self.endpoint.scheme == "https" and not self.polled:
            await self.first_poll.sleep(math.inf)
        await self.stream.run()

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
                    self.refresh()
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
            if (tls := self.client.tls if self.client else None) is not None:
                self.view.tls_protocol = tls.protocol
                self.view.tls_expires = tls.not_after
                self.view.tls_fingerprint = tls.fingerprint
            self.apply_snapshot(snap)
        except FetchError as exc:
            return self.poll_failed(exc.reason, exc.reachable, t0)
        except Exception as exc:  # never past this node: it is the node's state and reason
            return self.poll_failed(unexpected(exc), True, t0)
        if self.stream is not None:
            self.stream.reconnect_now()  # it is back: not after the stream's backoff
        return True

    def poll_failed(self, reason: str, reachable: bool, t0: float) -> bool:
        if self.token_problem and reason.startswith("HTTP 401"):
            reason = f"{reason}; {self.token_problem}"  # e.g. the token file's chmod
        self.poll_error = reason
        self.poll_unreachable = not reachable
        self.set_last_error(f"snapshot: {reason}")
        if reachable:
            self.view.latency_ms = round((time.perf_counter() - t0) * 1000, 1)
        self.refresh()
        return reachable

    def unanswered(self, reason: str) -> None:
        """A poll the caller gave up on (`FleetAggregator.poll_once`'s deadline)."""
        self.poll_error = reason
        self.poll_unreachable = True
        self.set_last_error(f"snapshot: {reason}")
        self.refresh()

    async def poll_loop(self) -> None:
        interval = self.defaults.poll_interval_s
        rng = SHARED_RNG
        while True:
            t0 = time.monotonic()
            answered = await self.poll()
            self.last_poll_at = time.monotonic()
            if not self.polled:
                self.polled = True
                self.first_poll.wake()
            if answered:
                self.poll_backoff.reset()
                self.view.retry_at = None
                delay = max(0.0, interval * rng.uniform(0.9, 1.1) - (time.monotonic() - t0))
            else:
                delay = self.poll_backoff.next_delay()
                self.view.retry_at = time.time() + delay
                self.refresh()
            await self.poll_waker.sleep(delay)
            if answered and self.poll_error is None:
                await self.stand_down(interval)

    def stream_fresh(self, now: float) -> bool:
        """The event stream is up and delivered a snapshot within the grace period."""
        stream = self.stream
        return (
            self.live
            and stream is not None
            and stream.up
            and stream.snap_at is not None
            and now - stream.snap_at < self.defaults.poll_interval_s * STREAM_GRACE
        )

    async def stand_down(self, interval: float) -> None:
        """Skip polls while the stream keeps the node fresh (see STREAM_GRACE).

        Only the heartbeat is a timer here; a stream that goes quiet is noticed by the
        aggregator's watchdog (`check_stream`), one timer for the whole fleet instead of one
        wake-up per node per event.
        """
        # spread over half the period, so nodes started together do not poll together
        heartbeat = self.last_poll_at + interval * HEARTBEAT_POLLS * SHARED_RNG.uniform(0.5, 1)
        tls = self.endpoint.scheme == "https"
        if tls and self.client is not None and self.stream_fresh(time.monotonic()):
            # the next poll is a heartbeat, 15-30 s away: meanwhile the stream is the node's
            # one TLS connection, and the heartbeat pays a handshake (docs/performance.md)
            await self.client.drop_idle()
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

    # --- StreamHost ----------------------------------------------------------------------
    def note_latency(self, t0: float) -> None:
        if self.view.latency_ms is None:  # until the first poll answers, the stream's will do
            self.view.latency_ms = round((time.perf_counter() - t0) * 1000, 1)

    def stream_up(self, recovered: bool) -> None:
        if recovered and self.poll_unreachable:
            self.poll_waker.wake()  # the node is back: poll now, not after backoff
        elif self.endpoint.scheme == "https" and self.polled and self.poll_error is None:
            # stand down now, not at the next interval: the kept TLS poll connection closes
            # as its stream takes over, so 1000 nodes do not hold both (docs/performance.md)
            self.poll_waker.wake()
        if not self.view.stream_ok:
            self.view.stream_ok = True
            self.refresh()

    def stream_down(self) -> None:
        if self.view.stream_ok:
            self.poll_waker.wake()  # the poller stood down for the stream: poll again now
        self.view.stream_ok = False
        self.refresh()

    def audit_appended(self) -> None:
        if self.chain is not None:
            self.chain.head_seen()

    # --- ChainHost -----------------------------------------------------------------------
    def chain_changed(self, status: ChainStatus, detail: str | None, refresh: bool) -> None:
        self.view.chain, self.view.chain_detail = status, detail
        if refresh:
            self.refresh()

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
        fit = self.fit_watch.check(self.name, snap) if self.fit_watch is not None else None
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
        self.snap_fit = fit
        self.snap_model = snap if self.fit_watch is not None else None
        self.cost_daily = daily
        self.snap_ts = snap.ts
        self.audit_seq = snap.audit.seq
        if reasons != self.snap_reasons:
            self.snap_reasons = reasons
        self.view.last_seen = time.time()
        if self.chain is not None:
            self.chain.snapshot_seen(snap, first)
        if self.on_snapshot is not None:
            self.on_snapshot(self.name, snap)
        self.refresh()

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
            power_slot=self.power.last,
            cost_daily=list(self.cost_daily),
            chain=v.chain,
            chain_detail=v.chain_detail,
            stream_ok=v.stream_ok,
            version=v.version,
            kind=v.kind,
            retry_at=v.retry_at,
            tls_protocol=v.tls_protocol,
            tls_expires=v.tls_expires,
            tls_fingerprint=v.tls_fingerprint,
            fit=v.fit,
            placement=v.placement,
        )

    def refit(self) -> None:
        """Answer the fleet's (new) fit question from the last good snapshot, now."""
        watch = self.fit_watch
        self.snap_fit = self.snap_model = None
        if watch is not None and self.snap_json is not None:
            snap = NodeSnapshot.model_validate_json(self.snap_json)
            self.snap_fit, self.snap_model = watch.check(self.name, snap), snap
        self.refresh()

    def _placement(self, watch: FitWatch) -> tuple[float, tuple[str, ...]]:
        """The node's placement score for the question (what the dashboard ranks by), from
        the snapshot the fit judged; never raises (a scoring bug is that node's 0)."""
        v = self.view
        probe = NodeView(v.name, v.url, state=v.state, reasons=v.reasons, fit=v.fit)
        probe.snapshot = self.snap_model
        try:
            return score(probe, watch.strategy)  # type: ignore[arg-type]
        except Exception as exc:
            return 0.0, (clean(f"cannot score: {type(exc).__name__}: {exc}"),)

    def set_last_error(self, text: str) -> None:
        if text != self.view.last_error:
            self.view.last_error = text

    def evaluate(self) -> tuple[NodeState, list[str]]:
        """The state rules of the design sketch, from what the poller, stream and chain saw."""
        stream = self.stream if self.live else None
        if self.poll_unreachable and not (stream is not None and self.view.stream_ok):
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
                stream is not None
                and stream.down_since is not None
                and time.monotonic() - stream.down_since >= grace
            ):
                reasons.append(f"event stream: {stream.error or 'down'}")
        if (expires := self.view.tls_expires) is not None and expires - time.time() < TLS_WARN_S:
            days = max(0, int((expires - time.time()) // 86400))
            reasons.append(f"TLS certificate expires in {days} days (fleet tls renew {self.name})")
        if self.chain is not None and self.chain.broken:  # (the agent's own report is
            reasons.append(f"audit chain BROKEN: {self.view.chain_detail}")  # in its problems)
        if reasons:
            return NodeState.DEGRADED, reasons
        return (NodeState.ONLINE if has_snap else NodeState.INITIALIZING), []

    def refresh(self) -> None:
        """Re-derive state and reasons, emit a state event on a change, publish a new version
        (always: whatever called it changed something a view shows)."""
        state, reasons = self.evaluate()
        old = self.view.state
        self.view.state = state
        if reasons != self.view.reasons:
            self.view.reasons = reasons
        watch = self.fit_watch
        self.view.fit = watch.judge(self.view, self.snap_fit) if watch is not None else None
        self.view.placement = self._placement(watch) if watch is not None else None
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
        self.view.version += 1
        self.on_change(self)
