"""The event stream: a GET on a connection of its own, its body handled in the read callback.

Read through a stream object, every event cost a task wake-up, a future and two epoll changes
(pausing and resuming the socket), most of what 1000 nodes cost (docs/performance.md); here
the bytes go from the socket through the framing to `on_body` in one callback. The task that
opened it only waits for the end (`wait`).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
import time
from collections.abc import Callable

import anyio

from fleettui.aggregator.transport import framing
from fleettui.aggregator.transport.errors import (
    FetchError,
    StreamBroken,
    describe_connect_error,
    dropped,
    timeout_reason,
    tls_reason,
)
from fleettui.aggregator.transport.framing import Endpoint, Framing
from fleettui.aggregator.transport.gate import HANDSHAKES
from fleettui.aggregator.transport.tls import ssl_context


class _SmallSSLProtocol(asyncio.sslproto.SSLProtocol):
    """asyncio's TLS with a 4 KiB socket read buffer: its default 256 KiB per connection was
    most of the memory a thousand streams over TLS took, and one record's 16 KiB still 16 MB
    (docs/performance.md). OpenSSL gathers a record's pieces itself: a bigger event only
    takes more reads."""

    max_size = 4 * 1024


async def _connect(
    proto: asyncio.Protocol, ep: Endpoint, timeout_s: float, scope: anyio.CancelScope
) -> None:
    """What create_connection(ssl=...) does, with the small-buffer TLS protocol; the
    handshake waits its turn (`HANDSHAKES`), and `scope`, the timeout, stands still meanwhile."""
    loop = asyncio.get_running_loop()
    if ep.scheme != "https":
        await loop.create_connection(lambda: proto, ep.host, ep.port)
        return
    ctx = ssl_context(ep.tls)
    async with HANDSHAKES.turn(scope):
        waiter = loop.create_future()
        tls = _SmallSSLProtocol(
            loop, proto, ctx, waiter, server_hostname=ep.host, ssl_handshake_timeout=timeout_s
        )
        transport, _ = await loop.create_connection(lambda: tls, ep.host, ep.port)
        try:
            await waiter
        except BaseException:
            transport.abort()
            raise


class PushStream(asyncio.Protocol):
    """One streamed answer. Exceptions from `on_body` end the stream with that exception."""

    def __init__(self, request: bytes, framing: Framing) -> None:
        self._request = request
        self.framing = framing
        self._pending = bytearray()  # body that arrived before `start`
        self._transport: asyncio.Transport | None = None
        self._on_body: Callable[[bytes], None] | None = None
        self._head = anyio.Event()
        self._end = anyio.Event()
        self.error: BaseException | None = None
        self.last_rx = time.monotonic()

    @classmethod
    async def open(
        cls,
        ep: Endpoint,
        target: str,
        headers: dict[str, str],
        *,
        token: str | None,
        timeout_s: float,
    ) -> PushStream:
        """Connect, send the GET and wait for the answer's head, all within `timeout_s`.

        Raises FetchError (connect failures, no answer, not HTTP).
        """
        f = Framing()
        proto = cls(f.send(framing.request(ep, "GET", target, headers, token)), f)
        tls = ep.scheme == "https"
        try:
            with anyio.fail_after(timeout_s) as scope:
                try:
                    await _connect(proto, ep, timeout_s, scope)
                except OSError as exc:
                    raise FetchError(describe_connect_error(exc), reachable=False) from None
                if tls and proto._transport is not None:  # the pin before any byte is sent
                    ep.tls.check(proto._transport.get_extra_info("ssl_object"))
                proto.send_request()
                await proto._head.wait()
        except TimeoutError:
            proto.close()
            raise FetchError(timeout_reason(timeout_s), reachable=False) from None
        except BaseException:
            proto.close()
            raise
        if proto.error is not None:
            proto.close()
            raise proto.error
        return proto

    @property
    def status(self) -> int:
        return self.framing.status

    @property
    def headers(self) -> dict[str, str]:
        return self.framing.headers

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def send_request(self) -> None:
        """Once the connection is up and, for https, its certificate checked."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        f = self.framing
        try:
            body = f.feed(data)
            if not f.head_done:
                return
            self._head.set()
            self._deliver(body)
        except BaseException as exc:  # the stream ends with it; the waiting task raises it
            self._finish(exc)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        f = self.framing
        if isinstance(exc, ssl.SSLError):
            self._finish(StreamBroken(tls_reason(exc)))
            return
        if exc is not None and f.head_done:
            self._finish(dropped(exc))
            return
        try:
            self._deliver(f.eof())
        except FetchError as err:
            # a stream cut off mid-chunk is the node's end of the stream; the event parser
            # says whether an event was cut with it
            if f.head_done and err.reason == "connection closed mid-answer":
                self._finish(None)
            else:
                self._finish(err)
            return
        except BaseException as err:
            self._finish(err)
            return
        self._finish(None)

    # --- the owning task -----------------------------------------------------------------
    def start(self, on_body: Callable[[bytes], None]) -> None:
        """Hand the body (what has arrived and all that follows) to `on_body`."""
        self._on_body = on_body
        pending, self._pending = bytes(self._pending), bytearray()
        try:
            self._deliver(pending)
        except BaseException as exc:
            self._finish(exc)

    async def wait(self, idle_s: float) -> None:
        """Until the answer ends; raises what ended it. TimeoutError after `idle_s` without a
        byte from the node."""
        while not self._end.is_set():
            left = self.last_rx + idle_s - time.monotonic()
            if left <= 0:
                raise TimeoutError
            with anyio.move_on_after(left):
                await self._end.wait()
        if self.error is not None:
            raise self.error

    async def read_capped(self, cap: int, timeout_s: float) -> bytes:
        """Up to `cap` bytes of the body (for the reason of an error answer)."""
        body = bytearray()

        def take(data: bytes) -> None:
            body.extend(data[: cap - len(body)])
            if len(body) >= cap:
                self._finish(None)

        self.start(take)
        with anyio.move_on_after(timeout_s):
            await self._end.wait()
        return bytes(body)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._finish(None)

    # --- internals -----------------------------------------------------------------------
    def _deliver(self, body: bytes) -> None:
        if body:
            if self._on_body is None:
                self._pending += body
            else:
                self._on_body(body)
        if self.framing.done and self._on_body is not None:
            self._finish(None)

    def _finish(self, error: BaseException | None) -> None:
        if self._end.is_set():
            return
        self.error = error
        self._head.set()
        self._end.set()
        if self._transport is not None and (error is not None or self.framing.done):
            self._transport.close()
