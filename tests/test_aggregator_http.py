"""The transport (NodeClient, PushStream) against a scripted loopback server and a real agent.

The server answers each request with the next scripted answer, written in pieces (down to a
byte at a time) so every framing path is crossed at every boundary: chunk headers, chunk data,
the CRLF after it, trailers, sized and close-delimited bodies, interim 1xx answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import anyio.abc
import anyio.to_thread
import httpx
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from httpx_sse import connect_sse

from fakes import wait_for
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.errors import FetchError, StreamBroken
from fleettui.aggregator.transport.framing import Endpoint
from fleettui.aggregator.transport.sse import SSEParser
from fleettui.aggregator.transport.stream import PushStream
from fleettui.wire import NodeSnapshot

pytestmark = pytest.mark.anyio

CLOSE = b"<close>"  # a script step: close the connection here
HANG = b"<hang>"  # a script step: say nothing more, keep the connection open


@dataclass
class Scripted:
    """Answers requests in order; each answer is a list of byte pieces sent one by one."""

    answers: list[list[bytes]]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def serve(self, tg: anyio.abc.TaskGroup) -> Scripted:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.start_soon(self._serve, listener)
        return self

    async def _serve(self, listener: anyio.abc.SocketListener) -> None:
        async with listener:  # closed when cancelled: the port then refuses connections
            await listener.serve(self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        buf = BufferedByteReceiveStream(stream)
        async with stream:
            while self.answers:
                try:
                    self.requests.append(await buf.receive_until(b"\r\n\r\n", 65536))
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                    return
                for piece in self.answers.pop(0):
                    if piece == CLOSE:
                        return
                    if piece == HANG:
                        await anyio.sleep_forever()
                    await stream.send(piece)
                    await anyio.sleep(0)


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def chunked(body: bytes, size: int = 7, trailers: bytes = b"") -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i in range(0, len(body), size):
        part = body[i : i + size]
        out += b"%x;ext=1\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n" + trailers + b"\r\n"


def sized(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


@pytest.fixture
def body() -> bytes:
    return b'{"hello": "world", "n": [1, 2, 3]}' * 20


async def fetch_all(server: Scripted, *paths: str, **kw) -> Iterator[bytes]:
    async with NodeClient(server.url, kw.pop("token", None), 2.0) as client:
        return [await client.get(p, **kw) for p in paths]


async def test_chunked_and_sized_bodies_byte_by_byte_reuse_one_connection(body: bytes) -> None:
    async with anyio.create_task_group() as tg:
        server = await Scripted(
            [
                bytewise(chunked(body, trailers=b"X-Checksum: 1\r\n")),
                bytewise(sized(body)),
                [b"HTTP/1.1 100 Continue\r\n\r\n", sized(b"after interim")],
                [sized(b"")],
            ]
        ).serve(tg)
        got = await fetch_all(server, "/a", "/b", "/c", "/d")
        tg.cancel_scope.cancel()
    assert got == [body, body, b"after interim", b""]
    assert server.connections == 1  # kept alive across all four answers


async def test_bodiless_answers_end_at_their_head_and_keep_the_connection() -> None:
    """204, 304 and 1xx have no body whatever their headers say (RFC 9112 6.3), so the next
    answer on the connection is read as the next answer, not as their body."""
    async with anyio.create_task_group() as tg:
        server = await Scripted(
            [
                [sized(b"zero")],
                [b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"],
                [b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"],
                [b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", sized(b"third")],
                [sized(b"fourth")],
            ]
        ).serve(tg)
        async with NodeClient(server.url, None, 2.0) as client:
            assert await client.get("/a") == b"zero"
            first = await client.post("/act", {"x": 1})
            with pytest.raises(FetchError, match="HTTP 304") as info:
                await client.get("/b")
            assert info.value.reachable
            got = [await client.get("/c"), await client.get("/d")]
        tg.cancel_scope.cancel()
    assert (first.status, first.body) == (204, b"")
    assert got == [b"third", b"fourth"]
    assert server.connections == 2  # the POST took a fresh one; the GETs kept theirs


async def test_duplicate_lengths_and_folded_headers_are_read_as_rfc_9112_says() -> None:
    async with anyio.create_task_group() as tg:
        server = await Scripted(
            [
                [sized(b"ok", extra=b"Content-Length: 2\r\n")],
                [b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"],
                [sized(b"{}", b"429 Slow Down", b"Retry-After:\r\n \t 12\r\n")],
            ]
        ).serve(tg)
        async with NodeClient(server.url, None, 2.0) as client:
            got = [await client.get("/a"), await client.get("/b")]
            reply = await client.request("GET", "/c")
        tg.cancel_scope.cancel()
    assert got == [b"ok", b"ok"]
    assert reply.status == 429 and reply.headers["retry-after"] == "12"
    assert reply.reason == "HTTP 429 (retry after 12 s)"
    assert server.connections == 1


async def test_post_sends_json_with_its_length_and_returns_any_status() -> None:
    async with anyio.create_task_group() as tg:
        server = await Scripted([[sized(b'{"error": "nope", "detail": "why"}', b"400 Bad")]]).serve(
            tg
        )
        async with NodeClient(server.url, "tok", 2.0) as client:
            reply = await client.post(
                "/api/v1/actions", {"action": "purge"}, headers={"Origin": "x"}
            )
        tg.cancel_scope.cancel()
    head = server.requests[0].decode()
    assert head.startswith("POST /api/v1/actions HTTP/1.1\r\n")
    assert "Content-Type: application/json" in head and "Content-Length: 18" in head
    assert "Authorization: Bearer tok" in head and "Origin: x" in head
    assert reply.status == 400 and reply.reason == "HTTP 400: nope (why)"


async def test_idle_connection_closed_by_the_node_is_replaced_transparently(body: bytes) -> None:
    async with anyio.create_task_group() as tg:
        server = await Scripted([[sized(body)], [CLOSE], [sized(b"second")]]).serve(tg)
        got = await fetch_all(server, "/a", "/b")
        tg.cancel_scope.cancel()
    assert got == [body, b"second"]
    assert server.connections == 2


async def test_connection_close_and_unsized_bodies_are_not_reused() -> None:
    async with anyio.create_task_group() as tg:
        server = await Scripted(
            [
                [sized(b"one", extra=b"Connection: close\r\n"), CLOSE],
                [b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"close", CLOSE],
                [b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nold 1", CLOSE],
                [sized(b"four")],
            ]
        ).serve(tg)
        got = await fetch_all(server, "/1", "/2", "/3", "/4")
        tg.cancel_scope.cancel()
    assert got == [b"one", b"until close", b"old 1", b"four"]
    assert server.connections == 4


async def test_request_line_headers_prefix_and_query() -> None:
    async with anyio.create_task_group() as tg:
        server = await Scripted([[sized(b"ok")]]).serve(tg)
        async with NodeClient(server.url + "/fleet/node a", "s3cret", 2.0) as client:
            await client.get("/api/v1/audit", params={"after": 5, "limit": 200}, timeout_s=2)
        tg.cancel_scope.cancel()
    line, *headers = server.requests[0].decode().split("\r\n")
    assert line == "GET /fleet/node%20a/api/v1/audit?after=5&limit=200 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in headers
    assert "Authorization: Bearer s3cret" in headers
    assert "Accept-Encoding: identity" in headers


@pytest.mark.parametrize(
    ("answer", "reason", "reachable"),
    [
        (
            [b"SSH-2.0-OpenSSH_9.6\r\n\r\n"],
            "not an HTTP answer: illegal status line: 'SSH-2.0-OpenSSH_9.6'",
            False,
        ),
        ([b"HTTP/1.1 200 OK\r\n", CLOSE], "connection closed mid-head", False),
        ([CLOSE], "connection closed without an answer", False),
        ([b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000], "head over 64 KiB", False),
        (
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n"],
            "bad framing: illegal chunk header: '-5\\r\\n'",
            True,
        ),
        (
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX"],
            "bad framing: malformed chunk footer: 'XX' (expected '\\r\\n')",
            True,
        ),
        ([sized(b"x", extra=b"Content-Encoding: gzip\r\n")], "content-encoding 'gzip'", True),
        (
            [sized(b"ok", extra=b"Content-Length: 3\r\n")],
            "bad framing: conflicting Content-Length headers",
            True,
        ),
        (
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            "unsupported transfer coding (only chunked is decoded",
            True,
        ),
        ([b"HTTP/1.1 200 OK\r\n folded: first\r\n\r\n"], "continuation line at start", False),
        ([sized(b"", b"204 No Content")], "HTTP 204: no content", True),
        ([sized(b'{"error": "boom"}', b"500 Internal Server Error")], "HTTP 500: boom", True),
        ([sized(b"", b"401 Unauthorized")], "HTTP 401: unauthorized (the node wants a valid", True),
        (
            [sized(b"", b"301 Moved", b"Location: https://elsewhere/\r\n")],
            "redirected to https://elsewhere/ (fix the node URL)",
            True,
        ),
        (
            [b"HTTP/1.1 200 OK\r\nContent-Length: 52428800\r\n\r\n"],
            "body over 1 MiB (52428800 bytes announced)",
            True,
        ),
        ([b"HTTP/1.1 200 OK\r\n\r\n", *[b"z" * 65536] * 20], "body over 1 MiB", True),
    ],
)
async def test_bad_answers_become_reasons(
    answer: list[bytes], reason: str, reachable: bool
) -> None:
    async with anyio.create_task_group() as tg:
        server = await Scripted([answer]).serve(tg)
        with pytest.raises(FetchError) as info:
            await fetch_all(server, "/x")
        tg.cancel_scope.cancel()
    assert reason in info.value.reason, info.value.reason
    assert info.value.reachable is reachable


async def test_no_answer_and_refused() -> None:
    async with anyio.create_task_group() as tg:
        server = await Scripted([[b"HTTP/1.1 200 OK\r\n", HANG]]).serve(tg)
        async with NodeClient(server.url, None, 0.3) as client:
            with anyio.fail_after(3), pytest.raises(FetchError, match=r"no answer within 0.3 s"):
                await client.get("/x")
        tg.cancel_scope.cancel()
    async with NodeClient(f"http://127.0.0.1:{server.port}", None, 1) as client:
        with pytest.raises(FetchError, match="connection refused") as info:
            await client.get("/x")
    assert not info.value.reachable


async def test_header_injection_is_refused_before_sending() -> None:
    async with anyio.create_task_group() as tg:
        server = await Scripted([[sized(b"ok")]]).serve(tg)
        with pytest.raises(FetchError, match="Authorization header has characters"):
            await fetch_all(server, "/x", token="abc\r\nX-Evil: 1")
        ep = Endpoint.parse(server.url)
        with pytest.raises(FetchError, match="Last-Event-ID header"):
            await PushStream.open(ep, "/e", {"Last-Event-ID": "1\n2"}, token=None, timeout_s=1)
        tg.cancel_scope.cancel()
    assert server.requests == []


def test_endpoint_parsing() -> None:
    e = Endpoint.parse("https://bücher.example:8443/base/")
    assert (e.scheme, e.host, e.port, e.prefix) == ("https", "xn--bcher-kva.example", 8443, "/base")
    assert e.host_header == "xn--bcher-kva.example:8443"
    v6 = Endpoint.parse("http://[::1]/")
    assert (v6.host, v6.port, v6.host_header, v6.prefix) == ("::1", 80, "[::1]", "")


async def push(server: Scripted, idle_s: float = 2.0) -> tuple[PushStream, bytes]:
    """Open a PushStream, take its whole body through the callback, wait for the end."""
    got = bytearray()
    stream = await PushStream.open(Endpoint.parse(server.url), "/e", {}, token=None, timeout_s=2)
    try:
        stream.start(got.extend)
        await stream.wait(idle_s)
    finally:
        stream.close()
    return stream, bytes(got)


async def test_push_stream_hands_over_the_body_as_it_arrives(body: bytes) -> None:
    async with anyio.create_task_group() as tg:
        one = await Scripted([bytewise(chunked(body, size=5))]).serve(tg)
        two = await Scripted([[b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"the end", CLOSE]]).serve(tg)
        s1, got1 = await push(one)
        _, got2 = await push(two)
        tg.cancel_scope.cancel()
    assert got1 == body and s1.status == 200
    assert got2 == b"until the end"


async def test_push_stream_failures() -> None:
    async with anyio.create_task_group() as tg:
        silent = await Scripted([[b"HTTP/1.1 200 OK\r\n\r\n", HANG]]).serve(tg)
        with anyio.fail_after(3), pytest.raises(TimeoutError):
            await push(silent, idle_s=0.2)  # no byte for idle_s
        broken = await Scripted(
            [[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]]
        ).serve(tg)
        with pytest.raises(StreamBroken, match="illegal chunk header"):
            await push(broken)
        closed = await Scripted([[CLOSE]]).serve(tg)
        with pytest.raises(FetchError, match="connection closed without an answer"):
            await push(closed)
        error = await Scripted([[sized(b'{"error": "no"}', b"503 Busy")]]).serve(tg)
        stream = await PushStream.open(Endpoint.parse(error.url), "/e", {}, token=None, timeout_s=2)
        assert stream.status == 503 and await stream.read_capped(4096, 2) == b'{"error": "no"}'
        stream.close()
        tg.cancel_scope.cancel()


async def test_our_stream_reader_and_httpx_sse_read_a_real_agent_alike(sim_agent) -> None:
    """httpx-sse, an independent client, and PushStream + SSEParser on the same agent's
    /api/v1/events: every event both saw has the same name, id and data (each subscriber's
    first event is a fresh snapshot of its own, so it is left out)."""

    def theirs() -> dict[str, tuple[str, str]]:
        seen = {}
        with (
            httpx.Client(timeout=5) as c,
            connect_sse(c, "GET", f"{sim_agent.url}/api/v1/events") as es,
        ):
            for n, sse in enumerate(es.iter_sse()):
                if n:
                    seen[sse.id] = (sse.event, sse.data)
                if len(seen) == 5:
                    return seen
        return seen

    ours: dict[str, tuple[str, str]] = {}
    parser = SSEParser()

    def on_body(chunk: bytes) -> None:
        for ev in parser.feed(chunk):
            ours[ev.id] = (ev.event, ev.data)

    stream = await PushStream.open(
        Endpoint.parse(sim_agent.url), "/api/v1/events", {}, token=None, timeout_s=5
    )
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        stream.start(on_body)
        seen = await anyio.to_thread.run_sync(theirs)
        await wait_for(lambda: set(seen) <= set(ours), 5, what=f"{sorted(seen)} in {sorted(ours)}")
    finally:
        stream.close()
    assert len(seen) == 5 and all(ours[i] == seen[i] for i in seen)
    assert {e for e, _ in seen.values()} == {"snapshot"}
    for _, data in seen.values():
        NodeSnapshot.model_validate_json(data)
