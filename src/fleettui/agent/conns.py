"""Connection limits: header-read timeout and size, connection cap, descriptors, quiet logs.

uvicorn bounds the idle time between requests (`timeout_keep_alive`) but not the time a client
takes to send a request's headers: a connection that sends half a request line and then nothing
is held forever, so 500 of them hold 500 descriptors. `limit_concurrency` does not help: it
answers 503 to complete requests and never closes a partial one. So the agent runs uvicorn's own
httptools protocol with these additions, and nothing else of HTTP is handled here:

- a header timer, armed when a connection opens and when bytes of a new request arrive
  (uvicorn's keep-alive timer stops at the first byte, so trickled blank lines kept it
  forever), disarmed when the headers are complete: a client that has not sent them within
  `header_timeout_s` (agent.toml) gets 408 and is closed (an action's body has its own
  deadline, in actions.py); more than MAX_HEADER_BYTES before the headers end gets 431
  (httptools sets no limit, and uvicorn keeps every header in memory);
- a connection cap below the descriptor limit: a connection over it is closed at once, so the
  process does not reach EMFILE at a sane limit (LOW_NOFILE and up), where asyncio's accept
  loop logs one traceback per pending connection per retry (a flood logged 106,000 in 10 s).
  asyncio accepts up to `backlog` connections per wake-up before any of them is seen here, so
  uvicorn gets `backlog=ACCEPT_BURST` and server.py widens the listen queue afterwards.

Errors that a flood repeats (uvicorn's "Invalid HTTP request received.", accept failures) are
logged at most once per second each, with a count of the ones left out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

# Idle time allowed between requests on one connection: longer than the aggregator's
# keepalive_expiry (30 s), so the client always drops an idle connection first and no request
# races a close by the server; short enough that idle connections do not pile up.
KEEP_ALIVE_S = 35.0
MAX_CONNECTIONS = 1024  # per node served (one process can serve many simulated nodes)
RESERVED_FDS = 128  # audit and token files, engine probes, action pipes, listeners
ACCEPT_BURST = 64
WANT_NOFILE = 8192  # what the contrib units set; the soft limit is raised towards it
LOW_NOFILE = MAX_CONNECTIONS + RESERVED_FDS + 2 * ACCEPT_BURST
# Bytes that may arrive while a request's headers are incomplete (the same reads may carry
# the start of a body of up to 64 KiB, so this is not a tight header limit, just a bound).
MAX_HEADER_BYTES = 128 * 1024
TIMEOUT_BODY = b'{"error":"request headers not received in time"}'
HEADERS_TOO_BIG = b'{"error":"request headers too large"}'


class OncePerSecond(logging.Filter):
    """Lets each distinct message through at most once per second; says how many it dropped."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)
        now = self.clock()
        last, dropped = self._last.get(key, (-1e9, 0))
        if now - last < 1.0:
            self._last[key] = (last, dropped + 1)
            return False
        if len(self._last) > 256:
            self._last.clear()
        self._last[key] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like this in the last second)"
        return True


def nofile_limit() -> int:
    """The soft RLIMIT_NOFILE, first raised towards WANT_NOFILE where the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = WANT_NOFILE if hard == resource.RLIM_INFINITY else min(WANT_NOFILE, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return WANT_NOFILE if soft == resource.RLIM_INFINITY else soft


def connection_cap(nofile: int, nodes: int = 1) -> int:
    """Room for the reserve and accept bursts: an over-cap connection is closed a few loop
    iterations after its accept, so a burst or two can be open beyond the cap at once. (At a
    limit of a few hundred, a flood can still touch EMFILE; then it is logged once a second.)"""
    return max(16, min(MAX_CONNECTIONS * nodes, nofile - RESERVED_FDS - 2 * ACCEPT_BURST))


def nofile_warning(nofile: int) -> str | None:
    if nofile >= LOW_NOFILE:
        return None
    return (
        f"the open-file limit is {nofile}, so the agent accepts at most "
        f"{connection_cap(nofile)} connections; raise it (LimitNOFILE={WANT_NOFILE} in the "
        "systemd unit, NumberOfFiles in the launchd plist, or ulimit -n)"
    )


_limited = OncePerSecond()


def quiet_repeated_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Throttle uvicorn's per-request warnings and asyncio's accept errors (no traceback)."""
    logging.getLogger("uvicorn.error").addFilter(_limited)
    default = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            if _limited.filter(logging.makeLogRecord({"msg": context["message"]})):
                exc = context.get("exception")
                log.error("accept failed (retrying in a second): %s", exc)
            return
        if default is not None:
            default(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)


class AgentHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a header-read timeout and a connection cap."""

    max_connections: int  # both set by protocol_class()
    header_timeout_s: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            if _limited.filter(logging.makeLogRecord({"msg": "connection cap"})):
                log.warning(
                    "connection cap (%d) reached: closing new connections", self.max_connections
                )
            transport.abort()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:  # bytes of a next request
            self._arm()
        if self._header_timer is not None:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse(b"431 Request Header Fields Too Large", HEADERS_TOO_BIG)
                return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        self._header_bytes = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        self._refuse(b"408 Request Timeout", TIMEOUT_BODY)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to malformed HTTP, as JSON like every other refusal."""
        self._refuse(b"400 Bad Request", json.dumps({"error": msg}).encode())

    def _refuse(self, status: bytes, body: bytes) -> None:
        """Answer (unless mid-response on this connection) and close."""
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(
                b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (status, len(body), body)
            )
        self.transport.close()


def protocol_class(max_connections: int, header_timeout_s: float) -> type[AgentHttpProtocol]:
    """A protocol class with this process's limits (uvicorn takes a class, not an instance)."""
    limits = {"max_connections": max_connections, "header_timeout_s": header_timeout_s}
    return type("AgentHttpProtocol", (AgentHttpProtocol,), limits)
