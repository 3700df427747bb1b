"""A node's one client: every request the operator side sends it (polls, audit pages, actions).

GETs and POSTs go one after another over at most one kept-alive idle connection: no pool, no
proxy from the environment, no redirects, one deadline per exchange so a node that trickles a
byte a second holds nobody longer than its timeout, bodies capped. httpx spent about 0.6 ms of
CPU on a keep-alive GET, and a fresh client per action cost a connection and a megabyte of SSL
context each (docs/performance.md). Every client shares one SSL context.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.abc
import anyio.streams.tls
import h11

from fleettui.aggregator.transport import framing
from fleettui.aggregator.transport.errors import (
    ERROR_BODY,
    FetchError,
    describe_connect_error,
    dropped,
    mib,
    status_reason,
    timeout_reason,
)
from fleettui.aggregator.transport.framing import MAX_BODY, Endpoint, Framing
from fleettui.aggregator.transport.gate import HANDSHAKES
from fleettui.aggregator.transport.tls import DEFAULT, TlsInfo, TlsPolicy, ssl_context


@dataclass(frozen=True)
class Reply:
    """A complete answer: status, headers (lower-case names) and at most the capped body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def reason(self) -> str:
        return status_reason(self.status, self.headers, self.body)


class Connection:
    """One TCP (or TLS) connection to a node, for exchanges one after another."""

    def __init__(self, stream: anyio.abc.ByteStream, tls: TlsInfo | None = None) -> None:
        self._stream = stream
        self.tls = tls  # what the handshake showed (https only)
        # the exchange in progress; none while the connection waits idle, so a kept connection
        # holds no parser state (an h11 machine and the last head: about 1.6 KB a node)
        self.framing: Framing | None = None
        self._pending = b""  # body bytes that arrived with the head

    @classmethod
    async def connect(cls, ep: Endpoint, scope: anyio.CancelScope) -> Connection:
        """Open a connection (TLS for https, with the shared context); FetchError when not.

        A TLS handshake waits its turn (`HANDSHAKES`); `scope`, the timeout, stands still meanwhile.
        """
        try:
            if ep.scheme == "https":
                async with HANDSHAKES.turn(scope):
                    stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                        ep.host,
                        ep.port,
                        ssl_context=ssl_context(ep.tls),
                        tls_standard_compatible=False,
                    )
            else:
                stream = await anyio.connect_tcp(ep.host, ep.port)
        except OSError as exc:
            raise FetchError(describe_connect_error(exc), reachable=False) from None
        if ep.scheme != "https":
            return cls(stream)
        try:
            info = ep.tls.check(stream.extra(anyio.streams.tls.TLSAttribute.ssl_object))  # noqa: S610
        except FetchError:
            await anyio.aclose_forcefully(stream)
            raise
        return cls(stream, info)

    @property
    def answer(self) -> Framing:
        assert self.framing is not None, "no exchange in progress"
        return self.framing

    def rest(self) -> None:
        """The exchange is over and the connection kept: drop its state."""
        self.framing = None

    async def exchange(self, req: h11.Request, body: bytes) -> None:
        """Send a request and read the answer's status and headers (a fresh framing per
        exchange, which is what h11 would reset to for the next one anyway)."""
        self.framing = f = Framing()
        try:
            await self._stream.send(f.send(req, body))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise dropped(exc) from None
        self._pending = b""
        while not f.head_done:
            raw = await self._recv()
            self._pending = f.feed(raw) if raw else f.eof()

    async def _recv(self) -> bytes:
        try:
            return await self._stream.receive()
        except anyio.EndOfStream:
            return b""
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise dropped(exc) from None

    async def receive(self) -> bytes:
        """The next piece of the body; b"" once it is complete."""
        f = self.answer
        if self._pending:
            out, self._pending = self._pending, b""
            return out
        while not f.done:
            raw = await self._recv()
            out = f.feed(raw) if raw else f.eof()
            if out:
                return out
        return b""

    async def read_capped(self, cap: int) -> bytes:
        """The body, at most `cap` bytes; FetchError past the cap."""
        announced = self.answer.announced_over(cap)
        if announced is not None:
            raise FetchError(f"body over {mib(cap)} ({announced} bytes announced)", reachable=True)
        body = bytearray()
        while chunk := await self.receive():
            body += chunk
            if len(body) > cap:
                raise FetchError(f"body over {mib(cap)}", reachable=True)
        return bytes(body)

    async def read_reason_body(self) -> bytes:
        """Up to ERROR_BODY bytes of an error answer, for its reason (a broken one: none)."""
        body = bytearray()
        try:
            while len(body) < ERROR_BODY and (chunk := await self.receive()):
                body += chunk
        except FetchError:
            pass
        return bytes(body[:ERROR_BODY])

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(self._stream)


class NodeClient:
    """Requests to one node, each within its own deadline; FetchError for anything unusable."""

    def __init__(
        self, base_url: str, token: str | None, timeout_s: float, tls: TlsPolicy = DEFAULT
    ) -> None:
        self.endpoint = Endpoint.parse(base_url, tls)
        self.tls: TlsInfo | None = None  # the last handshake's certificate (https)
        self.token = token
        self.timeout_s = timeout_s
        self._idle: Connection | None = None
        self.closed = False

    async def get(
        self,
        path: str,
        *,
        timeout_s: float | None = None,
        params: dict[str, Any] | None = None,
        cap: int = MAX_BODY,
    ) -> bytes:
        """GET `path` and return the body of its 200 (at most `cap` bytes); FetchError for any
        other answer, with the reason its status and error body give."""
        target = f"{path}?{urlencode(params)}" if params else path
        reply = await self.request("GET", target, timeout_s=timeout_s, cap=cap, strict=True)
        return reply.body

    async def post(
        self,
        path: str,
        body: Any,
        *,
        timeout_s: float | None = None,
        headers: dict[str, str] | None = None,
        cap: int = MAX_BODY,
    ) -> Reply:
        """POST `body` as JSON; the Reply whatever its status (the caller reads its reason).
        FetchError when no complete answer came."""
        data = json.dumps(body, separators=(",", ":")).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        return await self.request(
            "POST", path, timeout_s=timeout_s, cap=cap, headers=sent, body=data
        )

    async def request(
        self,
        method: str,
        target: str,
        *,
        timeout_s: float | None = None,
        cap: int = MAX_BODY,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        strict: bool = False,
    ) -> Reply:
        """One exchange. `strict`: only a 200 is an answer (FetchError with its reason else)."""
        if self.closed:
            raise FetchError("client closed", reachable=False)
        timeout_s = timeout_s or self.timeout_s
        req = framing.request(self.endpoint, method, target, headers or {}, self.token, body)
        conn: Connection | None = None
        try:
            with anyio.fail_after(timeout_s) as scope:
                # only a GET is sent again when a kept connection turns out closed: an action
                # is never risked twice, so it takes a fresh connection
                if method == "GET":
                    conn, self._idle = self._idle, None
                if conn is not None:
                    try:
                        await conn.exchange(req, body)
                    except FetchError:
                        if conn.answer.received:
                            raise
                        await conn.aclose()  # the node closed it while idle: once more, fresh
                        conn = None
                if conn is None:
                    conn = await Connection.connect(self.endpoint, scope)
                    self.tls = conn.tls
                    await conn.exchange(req, body)
                return await self._answer(conn, cap, strict)
        except TimeoutError:
            raise FetchError(timeout_reason(timeout_s), reachable=False) from None
        finally:
            if conn is not None and not (conn.answer.reusable and self._keep(conn)):
                await conn.aclose()

    def _keep(self, conn: Connection) -> bool:
        if self._idle is not None or self.closed:
            return False
        conn.rest()
        self._idle = conn
        return True

    async def _answer(self, conn: Connection, cap: int, strict: bool) -> Reply:
        f = conn.answer
        if f.status != 200 and (strict or not 200 <= f.status < 300):
            body = await conn.read_reason_body()
            if strict:
                raise FetchError(
                    status_reason(f.status, f.headers, body), reachable=True, status=f.status
                )
            return Reply(f.status, f.headers, body)
        if problem := f.encoding_problem():
            raise FetchError(problem, reachable=True)
        return Reply(f.status, f.headers, await conn.read_capped(cap))

    async def drop_idle(self) -> None:
        """Close the kept connection, if one waits: a TLS one holds 20-40 KB of OpenSSL state
        while idle (NodeWorker.stand_down)."""
        conn, self._idle = self._idle, None
        if conn is not None:
            await conn.aclose()

    async def aclose(self) -> None:
        self.closed = True
        await self.drop_idle()

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
