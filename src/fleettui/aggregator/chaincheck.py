"""When and how often one node's audit chain is checked, and where its pin persists.

`chain.ChainVerifier` knows how to verify; this module decides when (a new head, a page of
the older log falling due, the periodic re-read of the pinned entry), retries with backoff a
node whose audit cannot be read, keeps the pin in step with the one on disk (`pins.PinStore`,
shared with other views and `fleet audit forget`), and publishes the chain's status to its
node through `ChainHost`. It knows nothing of the event stream: a new head reaches it as
`head_seen`, from the snapshot or the stream alike.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

import anyio
import anyio.to_thread

from fleettui.aggregator.backoff import SHARED_RNG, Backoff
from fleettui.aggregator.chain import ChainVerifier
from fleettui.aggregator.kinds.base import unexpected
from fleettui.aggregator.pins import Pin, PinFileError, PinStore, node_key
from fleettui.aggregator.state import ChainStatus, FleetEvent
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.errors import FetchError
from fleettui.aggregator.waker import Waker
from fleettui.config import Defaults
from fleettui.fsutil import UnsafePathError
from fleettui.wire import AUDIT_PROBLEM_PREFIX, NodeSnapshot


class ChainHost(Protocol):
    """What the check needs of its node: the client to read with, and where results go."""

    name: str
    client: NodeClient | None

    def set_last_error(self, text: str) -> None: ...

    def emit(self, event: FleetEvent) -> None: ...

    def chain_changed(self, status: ChainStatus, detail: str | None, refresh: bool) -> None:
        """A new status or detail to show (`refresh`: re-derive the node's state now)."""


class ChainCheck:
    """One node's chain check; `run` until cancelled, never raises for the node's faults."""

    def __init__(self, host: ChainHost, url: str, defaults: Defaults) -> None:
        self.host = host
        self.defaults = defaults
        self.verifier = ChainVerifier(key=node_key(url))
        self.pins: PinStore | None = None  # set by load_pin: where the pin persists
        self.hostname: str | None = None  # as the node last reported it
        self.waker = Waker()
        self.head_moved = True  # the next check extends the pin (the tail)
        self.shown: tuple[ChainStatus, str | None] = (ChainStatus.UNKNOWN, None)

    @property
    def broken(self) -> bool:
        return bool(self.verifier.pin.broken)

    # --- what the node tells us ----------------------------------------------------------
    def snapshot_seen(self, snap: NodeSnapshot, first: bool) -> None:
        """A validated snapshot: its audit head, the agent's own audit problem, its hostname."""
        chain = self.verifier
        self.hostname = snap.node.hostname
        chain.agent_problem = next(
            (
                p[len(AUDIT_PROBLEM_PREFIX) :]
                for p in snap.problems
                if p.startswith(AUDIT_PROBLEM_PREFIX)
            ),
            None,
        )
        if chain.check_head(snap.audit):
            self.head_seen()
        elif first:  # start the loop
            self.waker.wake()
        self.publish(refresh=False)

    def head_seen(self) -> None:
        """A new audit entry exists: extend the pin at the next check, soon."""
        self.head_moved = True
        self.waker.wake()

    # --- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Check when a new head shows up (woken: extend the pin), when a page of the older
        log falls due (each is read again every chain_rescan_s, see ChainVerifier.sweep_due),
        and re-read the pinned entry at least every chain_recheck_s. A node whose audit cannot
        be read is retried with backoff, not on every snapshot."""
        chain, d = self.verifier, self.defaults
        retry = Backoff(d.backoff_min_s, max(d.backoff_min_s, d.chain_recheck_s))
        min_gap = min(d.poll_interval_s, 1.0)  # coalesce a burst of audit events
        await self.waker.sleep(math.inf)  # wait for the first snapshot
        tail_at = 0.0  # when the pinned entry is next re-read anyway
        while True:
            now = time.monotonic()
            tail = self.head_moved or now >= tail_at
            if tail:
                self.head_moved = False
                # anywhere in the second half of the period, so a fleet started at once does
                # not check in step
                tail_at = now + d.chain_recheck_s * SHARED_RNG.uniform(0.5, 1)
            share = chain.sweep_due(now, d.chain_rescan_s)
            ok = await self.sync(d.http_timeout_s, sweep=share, tail=tail)
            if ok:
                retry.reset()
                await anyio.sleep(min_gap)
                if chain.pin.broken:
                    wait = tail_at  # nothing to check; only look for a `fleet audit forget`
                elif chain.pin.seq == 0:
                    wait = math.inf  # an empty log: nothing to re-read until a head shows
                else:
                    wait = min(tail_at, chain.next_due(d.chain_rescan_s))
                await self.waker.sleep(max(0.0, wait - time.monotonic()))
            else:
                self.head_moved = True  # retried in full
                await anyio.sleep(retry.next_delay())
                self.waker.clear()

    async def sync(self, timeout_s: float, *, sweep: int | None = None, tail: bool = True) -> bool:
        """One verification pass (`sweep`: see ChainVerifier.sync); False when the chain could
        not be read (retry later). What was verified is saved even when the pass is cut short."""
        client = self.host.client
        assert client is not None
        ok = True
        try:
            await self.verifier.sync(client, timeout_s=timeout_s, sweep=sweep, tail=tail)
        except FetchError as exc:
            self.host.set_last_error(f"audit: {exc.reason}")
            ok = False
        except Exception as exc:  # the node's fault, not the fleet's (see `unexpected`)
            self.host.set_last_error(f"audit: {unexpected(exc)}")
            ok = False
        finally:
            with anyio.CancelScope(shield=True):
                await self.save_pin()
        if self.verifier.status is ChainStatus.UNKNOWN:
            ok = False
        self.publish()
        return ok

    # --- the pin on disk -----------------------------------------------------------------
    def load_pin(self, store: PinStore) -> None:
        """Start from the pin on disk (blocking: called in a worker thread)."""
        self.pins = store
        try:
            pin = store.load(self.verifier.pin.key)
        except (PinFileError, OSError) as exc:
            self.verifier.store_problem = self._store_problem(exc)
            return
        if pin is not None:
            self.verifier.adopt(pin, reset=False)

    def _store_problem(self, exc: Exception) -> str:
        return f"audit pin unusable ({exc}); `fleet audit forget {self.host.name}` replaces it"

    async def save_pin(self) -> None:
        """Merge this process's pin with the one on disk (other views, `fleet audit forget`)."""
        chain, store = self.verifier, self.pins
        if store is None or chain.store_problem:
            return
        pin = chain.pin
        if pin.hostname is None and self.hostname is not None:
            pin.hostname = self.hostname
        pin.name = self.host.name
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

    # --- what the node shows -------------------------------------------------------------
    def detail(self) -> str | None:
        """The chain's detail, with a hint when the node now calls itself something else."""
        chain = self.verifier
        detail = chain.detail
        pinned = chain.pin.hostname
        if chain.pin.broken and pinned and self.hostname and self.hostname != pinned:
            detail = (
                f"{detail}; the node now reports hostname {self.hostname!r} (pinned as "
                f"{pinned!r}): if it was reinstalled, `fleet audit forget {self.host.name}`"
            )
        return detail

    def publish(self, *, refresh: bool = True) -> None:
        """Hand a changed status or detail to the node; a new BROKEN is an `error` event."""
        status, detail = self.verifier.status, self.detail()
        if (status, detail) == self.shown:
            return
        if status is ChainStatus.BROKEN and self.shown[0] is not ChainStatus.BROKEN:
            self.host.emit(
                FleetEvent(
                    time.time(),
                    self.host.name,
                    "error",
                    f"audit chain BROKEN: {detail}",
                    {"chain": status.value, "detail": detail},  # what the dashboard alerts on
                )
            )
        self.shown = (status, detail)
        self.host.chain_changed(status, detail, refresh)
