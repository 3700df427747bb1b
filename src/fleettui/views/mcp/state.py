"""What the MCP server reads: the aggregator through a narrow Protocol with no way to act,
node views cached by version (a tool call parses only the snapshots that changed since the
last one), the recent events, and the scrubbing of secrets out of every answer."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Protocol

import anyio
import anyio.lowlevel

from fleettui.aggregator.calibration import CalibrationStore
from fleettui.aggregator.state import FleetEvent, NodeState, NodeView
from fleettui.capacity.fit import Fit, FitRequest

RECORDED = ("state", "action", "audit", "error")  # every kind but the per-tick snapshot
EVENTS_KEPT = 1000
# How often the copies are brought up to date between calls: a call then parses only what
# changed since (a quarter second of a fleet's ticks), not every snapshot (bench/mcp_tools.py).
REFRESH_S = 0.25
PARSE_BATCH = 16  # snapshots parsed between two yields to the event loop (~1 ms)
# The background refresh runs while an agent is using the server: this long after its last
# call (an agent's questions come in bursts; the server may sit idle for hours in between).
ACTIVE_S = 120.0
FITS_KEPT = 4  # fit questions whose answers are kept per node version (an agent's few models)
REDACTED = "[redacted]"


class FleetReader(Protocol):
    """The slice of FleetAggregator this server uses: reading only (no `act`)."""

    @property
    def names(self) -> list[str]: ...

    @property
    def generation(self) -> int: ...

    def changed(self, known: Mapping[str, int]) -> list[NodeView]: ...

    def events(self, kinds: Iterable[str] | None = None) -> AsyncIterator[FleetEvent]: ...


class Redactor:
    """Replaces each node's secrets (its token, its token file's path) in that node's part of
    an answer. Per node, so the cost stays flat however many nodes have tokens; the token
    file's path turns up in reasons ("token file X is readable by others")."""

    def __init__(self, secrets: Mapping[str, Sequence[str]]) -> None:
        self._by_node = {
            node: tuple(sorted({s for s in found if s}, key=len, reverse=True))
            for node, found in secrets.items()
        }
        self._by_node = {n: s for n, s in self._by_node.items() if s}
        self._all = tuple(sorted({s for s in self._by_node.values() for s in s}, key=len))[::-1]

    def node(self, name: str, obj: Any) -> Any:
        found = self._by_node.get(name)
        return _scrub(obj, found) if found else obj

    def fleet(self, obj: Any) -> Any:
        """For text that belongs to no one node (an event's summary can name another)."""
        return _scrub(obj, self._all) if self._all else obj


def _scrub(obj: Any, found: tuple[str, ...]) -> Any:
    if isinstance(obj, str):
        for s in found:
            if s in obj:
                obj = obj.replace(s, REDACTED)
        return obj
    if isinstance(obj, dict):
        return {_scrub(k, found): _scrub(v, found) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_scrub(v, found) for v in obj]
    return obj


class FleetState:
    """The server's view of the fleet: fresh copies on demand and the last events."""

    def __init__(
        self,
        reader: FleetReader,
        *,
        stale_after_s: float,
        redactor: Redactor | None = None,
        kept: int = EVENTS_KEPT,
        calibration: CalibrationStore | None = None,
    ) -> None:
        self.reader = reader
        self.stale_after_s = stale_after_s
        self.redact = redactor or Redactor({})
        self.calibration = calibration  # the fit questions' corrections (as `fleet fit`)
        self._views: dict[str, NodeView] = {}
        self._versions: dict[str, int] = {}
        self._generation: int | None = None
        self._ordered: list[NodeView] = []
        self._unparsed: dict[str, NodeView] = {}  # copies keep_current has not parsed yet
        self._refreshed = -REFRESH_S
        self._active_until = 0.0  # keep_current refreshes until then (touched)
        self.last_call = -ACTIVE_S  # monotonic time of the last call (touched)
        self.events: deque[FleetEvent] = deque(maxlen=kept)
        # per fit question: what it was judged with (the metadata, the calibration's
        # version), and per node (version, answer)
        self.fits: dict[FitRequest, tuple[object, dict[str, tuple[int, Fit | None]]]]
        self.fits = {}
        self.since = time.time()

    def views(self) -> list[NodeView]:
        """Every node in config order, at most REFRESH_S old: only the changed ones are
        copied (their snapshots parsed when first read, once per version). Each node's
        `freshness` says how old its figures are whatever this adds."""
        now = time.monotonic()
        if now - self._refreshed < REFRESH_S:
            return self._ordered
        return self._refresh(now)

    def touched(self) -> None:
        """A call came in: keep the copies current for the next ACTIVE_S."""
        self.last_call = time.monotonic()
        self._active_until = self.last_call + ACTIVE_S

    def _refresh(self, now: float) -> list[NodeView]:
        self._refreshed = now
        gen = self.reader.generation
        if gen != self._generation:
            self._generation = gen
            for v in self.reader.changed(self._versions):
                self._views[v.name] = v
                self._versions[v.name] = v.version
                self._unparsed[v.name] = v
            self._ordered = [self._views[n] for n in self.reader.names if n in self._views]
        return self._ordered

    async def keep_current(self) -> None:
        """While an agent is using the server, refresh the copies every REFRESH_S and parse
        what changed, a few nodes at a time (runs beside the server): the parsing is spread
        over time, between calls, instead of landing on the next call or holding the event
        loop for a whole fleet. Idle, it costs nothing; the first call after that parses
        what changed meanwhile."""
        while True:
            if time.monotonic() < self._active_until:
                self._refresh(time.monotonic())
            while self._unparsed:
                for _ in range(min(PARSE_BATCH, len(self._unparsed))):
                    _, v = self._unparsed.popitem()
                    _ = v.snapshot
                await anyio.lowlevel.checkpoint()
            await anyio.sleep(REFRESH_S)

    def view(self, name: str) -> NodeView | None:
        self.views()
        return self._views.get(name)

    def remember_fits(
        self, request: FitRequest, basis: object, known: dict[str, tuple[int, Fit | None]]
    ) -> None:
        """Keep a question's answers: asked again on the same `basis`, only the nodes that
        changed are judged."""
        self.fits.pop(request, None)
        self.fits[request] = (basis, known)
        while len(self.fits) > FITS_KEPT:
            del self.fits[next(iter(self.fits))]

    async def record(self) -> None:
        """Keep the last events of the kinds worth telling (runs beside the server)."""
        async for ev in self.reader.events(RECORDED):
            self.events.append(ev)

    def freshness(self, v: NodeView, now: float) -> dict[str, Any]:
        ts = v.facts.ts if v.facts else None  # the facts: no parse
        age = round(max(0.0, now - ts), 3) if ts is not None else None
        answering = v.state in (NodeState.ONLINE, NodeState.DEGRADED)
        return {
            "state": v.state.value,
            "collected_at": ts,
            "age_s": age,
            "last_seen": v.last_seen,
            "stale": not answering or age is None or age > self.stale_after_s,
        }
