"""Per-node HTTP clients and capped reads, so a bad node costs only itself.

The aggregator reads every node through a small HTTP/1.1 client of its own: `NodeClient` for
GETs (polls, audit pages) over at most one kept-alive connection, and `PushStream` for the
event stream, whose bytes are handled in the event loop's read callback as they arrive. At
1000 nodes httpx's per-request work (0.6 ms of CPU a GET) and its pooled-stream wrappers under
every SSE chunk were most of what the fleet cost (docs/performance.md); one shared httpx pool
is worse still (its work grows with the square of its size). Both parse answers with
`Answer`: strict framing, bounded heads and bodies, a reason for anything else.

The node kinds' actions still use httpx (`make_client`), and `get_capped` takes either
client. Every client shares one SSL context: building one per client costs about a megabyte
and a few milliseconds each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import json
import re
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import anyio
import anyio.abc
import httpx

from fleettui import __version__

MAX_BODY = 1 << 20  # 1 MiB: a snapshot is a few KiB; anything near this is not an agent
ERROR_BODY = 4096  # how much of an error answer we read for its reason
HEAD_CAP = 64 * 1024  # status line and headers of one answer
USER_AGENT = f"fleettui/{__version__}"

# httpcore asks sniffio which event loop it runs under before every request; when sniffio is
# not installed (anyio no longer needs it) that is a failed import, a search of sys.path, each
# time. A None entry in sys.modules makes that import fail at once, exactly as it would anyway.
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]


class FetchError(Exception):
    """A request that gave no usable answer. `reachable` says whether the node answered at all."""

    def __init__(self, reason: str, *, reachable: bool, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reachable = reachable
        self.status = status


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying SSL context for every node client (honours SSL_CERT_FILE / SSL_CERT_DIR)."""
    return httpx.create_ssl_context()


def make_client(base_url: str, token: str | None, timeout_s: float) -> httpx.AsyncClient:
    """A small client for one node: a few connections, no proxies from the environment."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        verify=shared_ssl_context(),
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2, keepalive_expiry=30),
    )


def mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


def describe_transport_error(exc: Exception, timeout_s: float) -> str:
    """A short reason for a failed connection, without URLs or headers."""
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect timed out after {timeout_s:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, httpx.ConnectError):
        if "refused" in low or "all connection attempts failed" in low:
            return "connection refused"
        if "name or service" in low or "nodename nor servname" in low or "resolution" in low:
            return f"cannot resolve host: {text}"
        return f"cannot connect: {text}"
    if isinstance(exc, httpx.RemoteProtocolError):
        if "without sending" in low or "disconnected" in low:
            return "connection closed without an answer"
        return f"not an HTTP answer: {text}"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return f"connection dropped: {text}"
    return text


async def error_reason(resp: httpx.Response) -> str:
    """`HTTP 500: internal error` from an agent's JSON error body, if it has one."""
    body = bytearray()
    with contextlib.suppress(Exception):  # a broken error body: the status alone is the reason
        async for chunk in resp.aiter_raw():
            body += chunk
            if len(body) >= ERROR_BODY:
                break
    return status_reason(resp.status_code, resp.headers.get("location"), bytes(body))


def status_reason(status: int, location: str | None, body: bytes) -> str:
    """The reason for a non-200 answer, from its status, redirect target and JSON error body."""
    try:
        detail = json.loads(body[:ERROR_BODY]).get("error")
    except Exception:  # any junk: the status alone is the reason
        detail = None
    reason = f"HTTP {status}"
    if status in (301, 302, 303, 307, 308) and location:
        return f"{reason}: redirected to {location[:200]} (fix the node URL)"
    if status == 401:
        return f"{reason}: unauthorized (the node wants a valid token; check this node's token)"
    if isinstance(detail, str) and detail:
        return f"{reason}: {detail[:200]}"
    return reason


async def get_capped(
    client: httpx.AsyncClient | NodeClient,
    path: str,
    *,
    timeout_s: float,
    params: dict[str, Any] | None = None,
    cap: int = MAX_BODY,
) -> bytes:
    """GET `path` and return the body, reading at most `cap` bytes; FetchError otherwise.

    The whole exchange has one deadline, so a node that trickles a byte a second cannot hold a
    poller longer than `timeout_s`, and a 50 MB answer is cut off after the first MiB. Takes
    the aggregator's own `NodeClient` or any httpx client.
    """
    if isinstance(client, NodeClient):
        return await client.get(path, timeout_s=timeout_s, params=params, cap=cap)
    try:
        with anyio.fail_after(timeout_s):
            async with client.stream("GET", path, params=params) as resp:
                if resp.status_code != 200:
                    raise FetchError(
                        await error_reason(resp), reachable=True, status=resp.status_code
                    )
                enc = resp.headers.get("content-encoding", "identity").lower()
                if enc not in ("", "identity"):
                    raise FetchError(f"unsupported content-encoding {enc!r}", reachable=True)
                announced = resp.headers.get("content-length", "")
                if announced.isdigit() and int(announced) > cap:
                    raise FetchError(
                        f"body over {mib(cap)} ({int(announced)} bytes announced)",
                        reachable=True,
                    )
                body = bytearray()
                async for chunk in resp.aiter_raw():
                    body += chunk
                    if len(body) > cap:
                        raise FetchError(f"body over {mib(cap)}", reachable=True)
                return bytes(body)
    except TimeoutError:
        raise FetchError(f"no answer within {timeout_s:g} s", reachable=False) from None
    except httpx.TransportError as exc:
        raise FetchError(describe_transport_error(exc, timeout_s), reachable=False) from None
    except httpx.HTTPError as exc:
        raise FetchError(str(exc) or type(exc).__name__, reachable=False) from None


# --- the aggregator's own HTTP/1.1 client --------------------------------------------------------

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,8}")
_TRAILERS_END = re.compile(rb"\r?\n\r?\n")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")


class StreamBroken(Exception):
    """The connection or its HTTP framing failed mid-answer (the reason is the message)."""


@dataclass(frozen=True)
class Endpoint:
    """A node's base URL, split once: where to connect and what to put in the request line."""

    scheme: str
    host: str
    port: int
    prefix: str  # path of the base URL without its trailing slash
    host_header: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = u.port or (443 if u.scheme == "https" else 80)
        host = u.hostname if u.hostname.isascii() else u.hostname.encode("idna").decode()
        shown = f"[{host}]" if ":" in host else host
        default = (u.scheme == "https" and port == 443) or (u.scheme == "http" and port == 80)
        shown = shown if default else f"{shown}:{port}"
        prefix = quote(u.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        return cls(u.scheme, host, port, prefix, shown)


def request_bytes(ep: Endpoint, target: str, headers: dict[str, str], token: str | None) -> bytes:
    """A GET for `target` (path and query); FetchError for a header value HTTP does not allow
    (a token or an event id with a line break would otherwise smuggle in headers)."""
    lines = [f"GET {ep.prefix}{target} HTTP/1.1", f"Host: {ep.host_header}"]
    sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    for k, v in sent.items():
        if not _HEADER_VALUE.fullmatch(v):
            raise FetchError(f"{k} header has characters HTTP does not allow", reachable=True)
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class Answer:
    """One HTTP/1.1 answer, parsed from bytes as they arrive (no I/O here): the head, then the
    body's framing (chunked, sized or until close). Every answer is bounded: a head over 64 KiB,
    a bad chunk header or a non-HTTP answer ends it with a reason (StreamBroken); the caller
    caps what it keeps of the body."""

    def __init__(self) -> None:
        self.buf = bytearray()  # received, not yet parsed
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.done = False  # the body is complete (or the node closed the connection)
        self.keep = False  # the node lets the connection be reused after this answer
        self._chunked = False
        self._left = -1  # chunked: bytes left in this chunk; -1 size line, -2 CRLF, -3 trailers
        self._length: int | None = None  # sized body: bytes still to come (None: until close)

    def parse_head(self) -> bool:
        """Take the head off `buf` if it is all there (interim 1xx answers are skipped)."""
        while True:
            m = _HEAD_END.search(self.buf)
            if m is None:
                if len(self.buf) > HEAD_CAP:
                    raise StreamBroken("not an HTTP answer: head over 64 KiB")
                return False
            head = bytes(self.buf[: m.start()]).decode("latin-1")
            del self.buf[: m.end()]
            version = self._parse_head(head)
            if not 100 <= self.status < 200:
                break
        te = self.headers.get("transfer-encoding", "").lower()
        if te:
            if te.rsplit(",", 1)[-1].strip() != "chunked":
                raise StreamBroken(f"unsupported transfer-encoding {te!r}")
            self._chunked = True
        elif (cl := self.headers.get("content-length", "").strip()).isdigit():
            self._length = int(cl)
            self.done = self._length == 0
        conn = self.headers.get("connection", "").lower()
        self.keep = (
            version == "HTTP/1.1"
            and "close" not in conn
            and (self._chunked or self._length is not None)
        )
        self.head_done = True
        return True

    def _parse_head(self, head: str) -> str:
        status_line, *header_lines = re.split(r"\r?\n", head)
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit() or rest[3:4] not in ("", " "):
            raise StreamBroken(f"not an HTTP answer: {status_line[:80]!r}")
        self.status = int(code)
        self.headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise StreamBroken(f"not an HTTP answer: bad header line {line[:80]!r}")
            name, value = name.lower(), value.strip()
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value
        return version

    def encoding_problem(self) -> str | None:
        enc = self.headers.get("content-encoding", "identity").lower()
        return None if enc in ("", "identity") else f"unsupported content-encoding {enc!r}"

    def eof(self) -> None:
        """The node closed the connection: the body ends here, whatever its framing said."""
        self.done = True
        self.keep = False

    def body(self) -> bytes:
        """The body bytes decodable from `buf` now (b"" when more must arrive first)."""
        buf = self.buf
        if not self._chunked:
            if self._length is None:
                out = bytes(buf)
                buf.clear()
            else:
                out = bytes(buf[: self._length])
                del buf[: len(out)]
                self._length -= len(out)
                self.done = self._length == 0
            return out
        out = bytearray()
        while buf and not self.done:
            if self._left > 0:
                take = buf[: self._left]
                out += take
                del buf[: len(take)]
                self._left -= len(take)
                if self._left == 0:
                    self._left = -2
            elif self._left == -3:  # after the last chunk: trailer lines, then an empty line
                if buf[:2] == b"\r\n" or buf[:1] == b"\n":
                    del buf[: 2 if buf[:1] == b"\r" else 1]
                    self.done = True
                    break
                m = _TRAILERS_END.search(buf)
                if m is None:
                    if len(buf) > HEAD_CAP:
                        raise StreamBroken("bad chunked encoding: trailers over 64 KiB")
                    break
                del buf[: m.end()]
                self.done = True
            elif self._left == -2:  # the CRLF after a chunk's data
                if buf[:2] == b"\r\n":
                    del buf[:2]
                elif buf[:1] == b"\n":
                    del buf[:1]
                elif buf == b"\r":
                    break  # the LF is still on its way
                else:
                    raise StreamBroken("bad chunked encoding: no CRLF after a chunk")
                self._left = -1
            else:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > 1024:
                        raise StreamBroken("bad chunked encoding: chunk header over 1 KiB")
                    break
                size = bytes(buf[:nl]).split(b";", 1)[0].strip()
                del buf[: nl + 1]
                if not _CHUNK_SIZE.fullmatch(size):
                    raise StreamBroken(f"bad chunked encoding: chunk size {size[:20]!r}")
                self._left = int(size, 16) or -3
        return bytes(out)


class Connection:
    """One HTTP/1.1 connection to a node for requests one after another (`NodeClient`)."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self.answer = Answer()
        self.received = False  # any byte of the current answer arrived

    @classmethod
    async def connect(cls, ep: Endpoint) -> Connection:
        """Open a connection (TLS for https, with the shared context); FetchError when not."""
        try:
            if ep.scheme == "https":
                stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                    ep.host,
                    ep.port,
                    ssl_context=shared_ssl_context(),
                    tls_standard_compatible=False,
                )
            else:
                stream = await anyio.connect_tcp(ep.host, ep.port)
        except OSError as exc:
            raise FetchError(describe_connect_error(exc), reachable=False) from None
        return cls(stream)

    @property
    def status(self) -> int:
        return self.answer.status

    @property
    def headers(self) -> dict[str, str]:
        return self.answer.headers

    @property
    def reusable(self) -> bool:
        """The answer was read to its end and the node keeps the connection open."""
        a = self.answer
        return a.done and a.keep and not a.buf

    async def request(
        self, ep: Endpoint, target: str, headers: dict[str, str], token: str | None
    ) -> None:
        """Send a GET for `target` (path and query) and read the answer's status and headers."""
        data = request_bytes(ep, target, headers, token)
        self.answer = answer = Answer()
        self.received = False
        try:
            await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise StreamBroken(f"connection dropped: {exc or type(exc).__name__}") from None
        while not answer.parse_head():
            chunk = await self._recv()
            if not chunk:
                if answer.buf:
                    raise StreamBroken("not an HTTP answer: connection closed mid-head")
                raise FetchError("connection closed without an answer", reachable=False)
            answer.buf += chunk

    async def _recv(self) -> bytes:
        try:
            data = await self._stream.receive()
        except anyio.EndOfStream:
            return b""
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise StreamBroken(f"connection dropped: {exc or type(exc).__name__}") from None
        self.received = True
        return data

    async def receive(self) -> bytes:
        """The next piece of the body; b"" once it is complete or the node closed it."""
        a = self.answer
        while not a.done:
            if a.buf:
                out = a.body()
                if out or a.done:
                    return out
            raw = await self._recv()  # nothing decodable yet: the rest is on its way
            if not raw:
                a.eof()
                return b""
            a.buf += raw
        return b""

    async def read_capped(self, cap: int) -> bytes:
        """The rest of the body, at most `cap` bytes (for the reason of an error answer)."""
        body = bytearray()
        while len(body) < cap and (chunk := await self.receive()):
            body += chunk
        return bytes(body[:cap])

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(self._stream)


class PushStream(asyncio.Protocol):
    """A GET on a connection of its own whose answer is handled in the event loop's read
    callback as it arrives: the event stream.

    Read through a stream object, every event cost a task wake-up, a future and two epoll
    changes (pausing and resuming the socket), most of what 1000 nodes cost; here the bytes go
    from the socket to `on_body` in one callback. The task that opened it only waits for the
    end (`wait`). Exceptions from `on_body` end the stream with that exception.
    """

    def __init__(self, request: bytes) -> None:
        self._request = request
        self.answer = Answer()
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

        Raises FetchError (connect failures, no answer) or StreamBroken (not HTTP).
        """
        proto = cls(request_bytes(ep, target, headers, token))
        tls = ep.scheme == "https"
        try:
            with anyio.fail_after(timeout_s):
                try:
                    await asyncio.get_running_loop().create_connection(
                        lambda: proto,
                        ep.host,
                        ep.port,
                        ssl=shared_ssl_context() if tls else None,
                        server_hostname=ep.host if tls else None,
                    )
                except OSError as exc:
                    raise FetchError(describe_connect_error(exc), reachable=False) from None
                await proto._head.wait()
        except TimeoutError:
            proto.close()
            raise FetchError(f"no answer within {timeout_s:g} s", reachable=False) from None
        except BaseException:
            proto.close()
            raise
        if proto.error is not None:
            proto.close()
            raise proto.error
        return proto

    @property
    def status(self) -> int:
        return self.answer.status

    @property
    def headers(self) -> dict[str, str]:
        return self.answer.headers

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        a = self.answer
        a.buf += data
        try:
            if not a.head_done:
                if not a.parse_head():
                    return
                self._head.set()
            if self._on_body is not None:
                self._pump()
        except BaseException as exc:  # the stream ends with it; the waiting task raises it
            self._finish(exc)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        a = self.answer
        if not a.head_done:
            if a.buf:
                self._finish(StreamBroken("not an HTTP answer: connection closed mid-head"))
            else:
                self._finish(FetchError("connection closed without an answer", reachable=False))
            return
        a.eof()
        if exc is not None:
            self._finish(StreamBroken(f"connection dropped: {exc or type(exc).__name__}"))
        self._finish(None)

    # --- the owning task -----------------------------------------------------------------
    def start(self, on_body: Callable[[bytes], None]) -> None:
        """Hand the body (what has arrived and all that follows) to `on_body`."""
        self._on_body = on_body
        try:
            self._pump()
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
    def _pump(self) -> None:
        a, on_body = self.answer, self._on_body
        assert on_body is not None
        while a.buf and not a.done:
            out = a.body()
            if out:
                on_body(out)
            elif not a.done:
                return  # the rest of a chunk header is on its way
        if a.done:
            self._finish(None)

    def _finish(self, error: BaseException | None) -> None:
        if self._end.is_set():
            return
        self.error = error
        self._head.set()
        self._end.set()
        if self._transport is not None and (error is not None or self.answer.done):
            self._transport.close()


class NodeClient:
    """A node's reads (snapshot polls, audit pages): GETs over at most one kept-alive idle
    connection, no pool, no proxy, no redirects, the shared SSL context.

    httpx spends about 0.6 ms of CPU on a keep-alive GET (1.5 ms with a new connection);
    this spends a fraction of that, which is what a thousand nodes' heartbeat polls and
    audit rechecks cost (docs/performance.md). Any kind's reads go through `get_capped`,
    which takes either this or an httpx client.
    """

    def __init__(self, base_url: str, token: str | None, timeout_s: float) -> None:
        self.endpoint = Endpoint.parse(base_url)
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
        """GET `path` and return the body (at most `cap` bytes); FetchError otherwise."""
        if self.closed:
            raise FetchError("client closed", reachable=False)
        timeout_s = timeout_s or self.timeout_s
        target = f"{path}?{urlencode(params)}" if params else path
        conn: Connection | None = None
        try:
            with anyio.fail_after(timeout_s):
                conn, self._idle = self._idle, None
                if conn is not None:
                    try:
                        await conn.request(self.endpoint, target, {}, self.token)
                    except (FetchError, StreamBroken):
                        if conn.received:
                            raise
                        await conn.aclose()  # the node closed it while idle: once more, fresh
                        conn = None
                if conn is None:
                    conn = await Connection.connect(self.endpoint)
                    await conn.request(self.endpoint, target, {}, self.token)
                body = await self._body(conn, cap)
        except TimeoutError:
            raise FetchError(f"no answer within {timeout_s:g} s", reachable=False) from None
        except StreamBroken as exc:
            raise FetchError(str(exc), reachable=False) from None
        finally:
            if conn is not None and not (conn.reusable and self._keep(conn)):
                await conn.aclose()
        return body

    def _keep(self, conn: Connection) -> bool:
        if self._idle is not None or self.closed:
            return False
        self._idle = conn
        return True

    async def _body(self, conn: Connection, cap: int) -> bytes:
        if conn.status != 200:
            body = await conn.read_capped(ERROR_BODY)
            reason = status_reason(conn.status, conn.headers.get("location"), body)
            raise FetchError(reason, reachable=True, status=conn.status)
        if problem := conn.answer.encoding_problem():
            raise FetchError(problem, reachable=True)
        announced = conn.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > cap:
            raise FetchError(
                f"body over {mib(cap)} ({int(announced)} bytes announced)", reachable=True
            )
        body = bytearray()
        while chunk := await conn.receive():
            body += chunk
            if len(body) > cap:
                raise FetchError(f"body over {mib(cap)}", reachable=True)
        return bytes(body)

    async def aclose(self) -> None:
        self.closed = True
        conn, self._idle = self._idle, None
        if conn is not None:
            await conn.aclose()

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def describe_connect_error(exc: OSError) -> str:
    """A short reason for a failed connect, from the first address's error."""
    cause: BaseException | None = exc
    while cause is not None and not getattr(cause, "errno", None):
        inner = getattr(cause, "exceptions", None)
        cause = inner[0] if inner else cause.__cause__
    err = cause if isinstance(cause, OSError) else exc
    text = str(err) or type(err).__name__
    low = text.lower()
    if isinstance(err, ConnectionRefusedError) or "refused" in low:
        return "connection refused"
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed: {getattr(err, 'reason', None) or text}"
    if "name or service" in low or "nodename nor servname" in low or "resolution" in low:
        return f"cannot resolve host: {text}"
    return f"cannot connect: {text}"
