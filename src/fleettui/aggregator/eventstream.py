"""One node's event stream (GET /api/v1/events): connect, read, reconnect with backoff.

Its own module because it is the one part of a node that lives in the event loop's read
callback: events are parsed and handled as their bytes arrive, so the reader keeps only the
connection's own state (up, why not, since when, the last event id) and hands everything a
node is (snapshots, state, events) to its host through `StreamHost`. The poller reads that
state to stand down while the stream keeps the node fresh.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from pydantic import ValidationError

from fleettui.aggregator.backoff import Backoff
from fleettui.aggregator.kinds.base import describe_validation, unexpected
from fleettui.aggregator.state import FleetEvent
from fleettui.aggregator.transport.errors import (
    ERROR_BODY,
    FetchError,
    StreamBroken,
    status_reason,
)
from fleettui.aggregator.transport.framing import Endpoint
from fleettui.aggregator.transport.sse import ServerSentEvent, SSEParser, StreamError
from fleettui.aggregator.transport.stream import PushStream
from fleettui.aggregator.waker import Waker
from fleettui.config import Defaults
from fleettui.wire import ActionEvent, NodeSnapshot

EVENTS_PATH = "/api/v1/events"
STREAM_IDLE_S = 45.0  # agents send a ping comment every 15 s; three missed means it is dead


class StreamHost(Protocol):
    """What the reader needs of its node: where to connect, and where what it read goes."""

    name: str
    token: str | None
    endpoint: Endpoint

    def note_latency(self, t0: float) -> None:
        """The connection answered (perf_counter at the request): a latency until polls do."""

    def apply_snapshot(self, snap: NodeSnapshot, raw: str | bytes | None = None) -> None: ...

    def emit(self, event: FleetEvent) -> None: ...

    def wants(self, kind: str) -> bool:
        """Whether any reader takes events of this kind (skip building them)."""
        ...

    def set_last_error(self, text: str) -> None: ...

    def stream_up(self, recovered: bool) -> None:
        """The stream delivers (again, when `recovered`: it was down or had failed)."""

    def stream_down(self) -> None:
        """The stream failed; the reason is `reader.error`."""

    def audit_appended(self) -> None:
        """The node announced a new audit entry."""


class EventStreamReader:
    """The stream of one node; `run` until cancelled, never raises for the node's faults."""

    def __init__(self, host: StreamHost, defaults: Defaults) -> None:
        self.host = host
        self.timeout_s = defaults.http_timeout_s
        self.backoff = Backoff(defaults.backoff_min_s, defaults.backoff_max_s)
        self.waker = Waker()  # a poll that got an answer cuts the backoff short
        self.up = False
        self.error: str | None = None
        self.down_since: float | None = None  # monotonic
        self.snap_at: float | None = None  # monotonic time of the last streamed snapshot
        self.last_event_id = ""

    def reconnect_now(self) -> None:
        """The node answers again: reconnect now if the stream is down, not after backoff."""
        if self.down_since is not None:
            self.waker.wake()

    async def run(self) -> None:
        while True:
            try:
                await self.read_once()
                reason = "stream closed by the node"
            except (StreamError, StreamBroken) as exc:
                reason = str(exc)
            except FetchError as exc:
                reason = exc.reason
            except Exception as exc:  # the node's fault, not the fleet's (see `unexpected`)
                reason = unexpected(exc)
            self.failed(reason)
            await self.waker.sleep(self.backoff.next_delay())

    async def read_once(self) -> None:
        """One connection, read until it ends or fails.

        Events are parsed and handled as their bytes arrive, in the event loop's read callback
        (`PushStream`): no per-event task, future or timeout scope. This task only waits for
        the end, or for 45 s of silence (agents send a ping every 15 s).
        """
        host = self.host
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        timeout = self.timeout_s
        t0 = time.perf_counter()
        resp = await PushStream.open(
            host.endpoint, EVENTS_PATH, headers, token=host.token, timeout_s=timeout
        )
        host.note_latency(t0)
        try:
            if resp.status != 200:
                body = await resp.read_capped(ERROR_BODY, timeout)
                reason = status_reason(resp.status, resp.headers, body)
                raise FetchError(reason, reachable=True)
            ctype = resp.headers.get("content-type", "").partition(";")[0].strip()
            if ctype != "text/event-stream":
                raise StreamError(f"not an event stream (content-type {ctype or 'missing'!r})")
            if problem := resp.framing.encoding_problem():
                raise StreamError(problem)
            parser = SSEParser()

            def on_body(chunk: bytes) -> None:
                for sse in parser.feed(chunk):
                    self.last_event_id = parser.last_id
                    self.handle(sse)

            resp.start(on_body)
            try:
                await resp.wait(STREAM_IDLE_S)
            except TimeoutError:
                raise StreamError(f"no event or ping for {STREAM_IDLE_S:g} s") from None
            for sse in parser.finish():
                self.handle(sse)
            if parser.mid_event:
                raise StreamError("stream dropped mid-event")
        finally:
            resp.close()

    def handle(self, sse: ServerSentEvent) -> None:
        try:
            self._handle(sse)
        except Exception as exc:  # e.g. a snapshot that validates but trips a rule further on
            self.failed(f"bad {sse.event} event: {unexpected(exc)}")

    def _handle(self, sse: ServerSentEvent) -> None:
        host = self.host
        now = time.time()
        if sse.event == "snapshot":
            try:
                snap = NodeSnapshot.model_validate_json(sse.data)
            except ValidationError as exc:
                self.failed(f"bad snapshot event: {describe_validation(exc)}")
                return
            self.delivered()
            self.snap_at = time.monotonic()
            host.apply_snapshot(snap, sse.data)
            if host.wants("snapshot"):
                up = sum(e.status == "up" for e in snap.engines)
                watts = f"{snap.power.watts:.0f} W, " if snap.power.watts is not None else ""
                summary = f"snapshot: {watts}{up}/{len(snap.engines)} engines up"
                host.emit(FleetEvent(now, host.name, "snapshot", summary))
        elif sse.event == "action":
            self.delivered()
            data = _json_or_none(sse.data)
            try:
                act = ActionEvent.model_validate(data)
                what = " ".join(x for x in (act.action, act.engine, act.model) if x)
                outcome = "" if act.ok is None else (": ok" if act.ok else ": failed")
                summary = f"{act.phase} {what}{outcome}"
            except ValidationError:
                summary = "action (unreadable event)"
            host.emit(FleetEvent(now, host.name, "action", summary, _dict_or_none(data)))
        elif sse.event == "audit":
            self.delivered()
            data = _dict_or_none(_json_or_none(sse.data))
            seq = data.get("seq") if data else None
            summary = f"audit seq {seq}: {data.get('action')} {data.get('status')}" if data else ""
            host.emit(FleetEvent(now, host.name, "audit", summary or "audit entry", data))
            host.audit_appended()
        else:
            self.delivered()

    def delivered(self) -> None:
        """An event arrived: the stream is up (the common case costs one reset and two tests)."""
        self.backoff.reset()
        recovered = self.down_since is not None or self.error is not None
        if recovered:
            self.down_since = None
            self.error = None
        if recovered or not self.up:
            self.up = True
            self.host.stream_up(recovered)

    def failed(self, reason: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
        if reason != self.error:
            self.error = reason
            self.host.set_last_error(f"event stream: {reason}")
        self.up = False
        self.snap_at = None
        self.host.stream_down()


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _dict_or_none(obj: Any) -> dict[str, Any] | None:
    return obj if isinstance(obj, dict) else None
