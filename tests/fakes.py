"""Misbehaving agents on 127.0.0.1: a tiny raw HTTP/1.1 server speaking the agent's JSON.

Raw sockets rather than a framework, because the point is to misbehave in ways a framework
will not: answer never, answer half an event, send 50 MB, or send bytes that are not HTTP.
Faults can be switched at runtime, so the same node can fail and then recover.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from fleettui.wire import GENESIS_HASH, audit_hash

CHUNK = b"x" * 65536
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1, below the kernel's ephemeral range.

    bind(0) picks from that range, which every outgoing connection and every port-0 listener
    of the other test workers draws from too: by the time a server was started on it, seconds
    later on a loaded machine, one of them sometimes held it ("Address already in use")."""
    try:
        low = int(EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def snapshot_dict(name: str, *, ts: float | None = None, audit: dict | None = None) -> dict:
    """A healthy, valid NodeSnapshot as an agent would serve it."""
    return {
        "schema_version": 1,
        "node": {
            "hostname": name,
            "os": "Linux 6.8.0",
            "arch": "x86_64",
            "agent_version": "0.1.0",
            "uptime_s": 1000.0,
            "simulated": True,
        },
        "ts": ts if ts is not None else time.time(),
        "cpu": {"percent": 12.5, "cores": 16},
        "memory": {"total_mb": 65536, "used_mb": 20000, "pressure_pct": 30.5},
        "gpus": [],
        "power": {
            "watts": 250.0,
            "scope": "wall",
            "source": "simulated",
            "energy_j": 3600.0,
            "energy_since": 1_700_000_000.0,
            "parts": [{"name": "wall", "kind": "wall", "source": "simulated", "watts": 250.0}],
        },
        "cost": {
            "currency": "EUR",
            "price_per_kwh": 0.3,
            "today": 0.1,
            "daily": [
                {"date": f"2026-01-0{i + 1}", "energy_wh": 1000.0 * (i + 1), "cost": 0.3 * (i + 1)}
                for i in range(7)
            ],
            "total_7d": 8.4,
        },
        "engines": [
            {"name": "ollama", "url": "http://127.0.0.1:11434", "status": "up", "models": []}
        ],
        "audit": audit or {"seq": 0, "head_hash": GENESIS_HASH},
        "problems": [],
    }


def make_entry(seq: int, prev_hash: str, action: str = "restart", **over: Any) -> dict:
    """One audit entry with a correct hash."""
    e: dict[str, Any] = {
        "seq": seq,
        "ts": 1_700_000_000.0 + seq,
        "source_ip": "127.0.0.1",
        "token_id": "t1",
        "action": action,
        "args": {"engine": "ollama"},
        "status": "ok",
        "http_status": 200,
        "duration_ms": 12.5,
        "exit_code": 0,
        "error": None,
        "prev_hash": prev_hash,
    }
    e.update(over)
    e["hash"] = audit_hash(e)
    return e


def make_chain(n: int) -> list[dict]:
    chain: list[dict] = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        chain.append(make_entry(seq, prev))
        prev = chain[-1]["hash"]
    return chain


def rehash_from(chain: list[dict], index: int) -> None:
    """Recompute hashes from `index` on: a rewrite that keeps the chain internally valid."""
    for i in range(index, len(chain)):
        chain[i]["prev_hash"] = chain[i - 1]["hash"] if i else GENESIS_HASH
        chain[i]["seq"] = i + 1
        chain[i]["hash"] = audit_hash({k: v for k, v in chain[i].items() if k != "hash"})


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)  # when it came: spacing, not rates


def _sized(body: bytes, extra: bytes = b"") -> bytes:
    n = len(body)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (n, extra, body)


# snapshot answers framed in the ways RFC 9112 says how a client treats (`snapshot_fault`)
FRAMINGS = {
    "no_content": lambda body: b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
    "dup_length": lambda body: _sized(body, b"Content-Length: %d\r\n" % len(body)),
    "conflicting_length": lambda body: _sized(body, b"Content-Length: %d\r\n" % (len(body) + 1)),
    "gzip_chunked": lambda body: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    ),
    "folded": lambda body: _sized(body, b"Content-Type: application/json;\r\n charset=utf-8\r\n"),
}


@dataclass
class FakeAgent:
    """A fake agent. `snapshot_fault` / `events_fault` / `audit_fault` pick the misbehaviour.

    snapshot faults: garbage, wrong_shape, http500, huge, huge_announced, blackhole, slow,
    close; and framings RFC 9112 rules on: no_content (204), dup_length (two identical
    Content-Length), conflicting_length, gzip_chunked, folded (an obs-fold header line).
    events faults: drop_mid_event, malformed, huge_line, http500, not_sse, blackhole.
    `fault` (whole server): blackhole, slow.
    """

    name: str = "fake"
    fault: str | None = None
    snapshot_fault: str | None = None
    events_fault: str | None = None
    audit_fault: str | None = None
    event_every: float = 0.2
    slow_s: float = 20.0
    chain: list[dict] = field(default_factory=list)
    advertised_head: dict | None = None  # override the head the snapshot/audit page report
    requests: list[Request] = field(default_factory=list)
    routes: dict[str, Any] = field(default_factory=dict)  # path -> JSON body (other APIs)
    open_connections: int = 0
    port: int = 0
    _listener: anyio.abc.Listener | None = None
    _done: anyio.Event | None = None
    _tg: anyio.abc.TaskGroup | None = None
    _next_id: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def head(self) -> dict:
        if self.advertised_head is not None:
            return self.advertised_head
        if not self.chain:
            return {"seq": 0, "head_hash": GENESIS_HASH}
        return {"seq": self.chain[-1]["seq"], "head_hash": self.chain[-1]["hash"]}

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self, tg: anyio.abc.TaskGroup) -> FakeAgent:
        multi = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        self._listener = multi.listeners[0]
        self.port = self._listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = tg
        self._done = anyio.Event()
        started = anyio.Event()
        tg.start_soon(self._serve, self._listener, self._done, started)
        await started.wait()
        return self

    async def _serve(
        self, listener: anyio.abc.SocketListener, done: anyio.Event, started: anyio.Event
    ) -> None:
        # Stopping shuts the socket down so accept() fails by itself: cancelling a pending
        # accept races with an arriving connection in asyncio (InvalidStateError on 3.11).
        try:
            async with anyio.create_task_group() as conns:
                started.set()
                while True:
                    try:
                        stream = await listener.accept()
                    except Exception:
                        break
                    conns.start_soon(self._handle, stream)
                conns.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()
            done.set()

    async def stop(self) -> None:
        """Close the port and every open connection: the node is gone (connection refused)."""
        if self._listener is not None:
            raw = self._listener.extra(anyio.abc.SocketAttribute.raw_socket)
            self._listener = None
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
            await self._done.wait()

    async def restart(self) -> None:
        """Listen again on the same port."""
        assert self._tg is not None
        await self.stop()
        await self.start(self._tg)

    # --- HTTP ----------------------------------------------------------------------------
    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        self.open_connections += 1
        try:
            await self._handle_one(stream)
        finally:
            self.open_connections -= 1

    async def _handle_one(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            buf = BufferedByteReceiveStream(stream)
            try:
                head = await buf.receive_until(b"\r\n\r\n", 65536)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound):
                return
            except (anyio.BrokenResourceError, OSError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = [*lines[0].split(" "), "", ""][:3]
            path, _, qs = target.partition("?")
            query = dict(p.partition("=")[::2] for p in qs.split("&") if p)
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            req = Request(method, path, query, headers)
            self.requests.append(req)
            try:
                await self._route(stream, req)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass

    async def _send(
        self, stream: anyio.abc.SocketStream, status: int, body: bytes, ctype: str
    ) -> None:
        reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(status, "X")
        await stream.send(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    async def _json(self, stream: anyio.abc.SocketStream, obj: Any, status: int = 200) -> None:
        await self._send(stream, status, json.dumps(obj).encode(), "application/json")

    async def _route(self, stream: anyio.abc.SocketStream, req: Request) -> None:
        if self.fault == "blackhole":
            await anyio.sleep_forever()
        if self.fault == "slow":
            await anyio.sleep(self.slow_s)
        if req.path in self.routes:
            body = self.routes[req.path]
            if isinstance(body, bytes):
                await self._send(stream, 200, body, "application/json")
            else:
                await self._json(stream, body)
        elif req.path == "/api/v1/snapshot":
            await self._snapshot(stream)
        elif req.path == "/api/v1/events":
            await self._events(stream, req)
        elif req.path == "/api/v1/audit":
            await self._audit(stream, req)
        else:
            await self._json(stream, {"error": "not found"}, 404)

    async def _snapshot(self, stream: anyio.abc.SocketStream) -> None:
        f = self.snapshot_fault
        if f == "blackhole":
            await anyio.sleep_forever()
        if f == "slow":
            await anyio.sleep(self.slow_s)
        if f == "close":
            return
        if f in FRAMINGS:
            body = json.dumps(snapshot_dict(self.name, audit=self.head())).encode()
            await stream.send(FRAMINGS[f](body))
        elif f == "garbage":
            await self._send(stream, 200, b"\x00\xffnot json {{{", "application/json")
        elif f == "wrong_shape":
            await self._json(stream, {"hello": "world", "node": 42})
        elif f == "http500":
            await self._json(stream, {"error": "internal error"}, 500)
        elif f in ("huge", "huge_announced"):
            length = f"Content-Length: {50 * 1024 * 1024}\r\n" if f == "huge_announced" else ""
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + length.encode()
                + b"Connection: close\r\n\r\n"
            )
            await stream.send(b'{"pad": "')
            for _ in range(800):  # 50 MiB
                await stream.send(CHUNK)
        else:
            await self._json(stream, snapshot_dict(self.name, audit=self.head()))

    async def _events(self, stream: anyio.abc.SocketStream, req: Request) -> None:
        f = self.events_fault
        if f == "blackhole":
            await anyio.sleep_forever()
        if f == "http500":
            await self._json(stream, {"error": "internal error"}, 500)
            return
        ctype = "application/json" if f == "not_sse" else "text/event-stream"
        await stream.send(
            f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nCache-Control: no-cache\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        if f == "drop_mid_event":
            self._next_id += 1
            await stream.send(f'id: {self._next_id}\nevent: snapshot\ndata: {{"node'.encode())
            return
        if f == "huge_line":
            await stream.send(b"event: snapshot\ndata: ")
            for _ in range(800):
                await stream.send(CHUNK)
            return
        while True:
            if self.events_fault == "malformed":
                await stream.send(b"event: snapshot\ndata: {this is not json\n\n")
            else:
                await stream.send(
                    self.encode_event("snapshot", snapshot_dict(self.name, audit=self.head()))
                )
            await anyio.sleep(self.event_every)
            if self.events_fault != f:  # switched: end this stream, the client reconnects
                return

    def encode_event(self, kind: str, obj: Any) -> bytes:
        self._next_id += 1
        return f"id: {self._next_id}\nevent: {kind}\ndata: {json.dumps(obj)}\n\n".encode()

    async def _audit(self, stream: anyio.abc.SocketStream, req: Request) -> None:
        f = self.audit_fault
        if f == "http404":
            await self._json(stream, {"error": "not found"}, 404)
            return
        if f == "garbage":
            await self._send(stream, 200, b"[1, 2, 3]", "application/json")
            return
        after = int(req.query.get("after", "0") or 0)
        limit = int(req.query.get("limit", "100") or 100)
        entries = [e for e in self.chain if e["seq"] > after][:limit]
        await self._json(stream, {"entries": entries, "head": self.head()})


PATIENCE_S = 60.0  # the least any wait for a condition allows (pilot_util.until too)


async def wait_for(
    cond: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> None:
    """Poll `cond` until true; fail with `what` after `timeout` (never a fixed long sleep).

    `timeout` says how long the condition takes on an idle machine; the wait allows at least
    PATIENCE_S, since a starved one makes a condition late, not false (the suite's reruns
    came from such waits: docs/performance.md). A test that means a time bound measures it.
    """
    with anyio.move_on_after(max(timeout, PATIENCE_S)):
        while not cond():
            await anyio.sleep(interval)
        return
    raise AssertionError(f"timed out after {max(timeout, PATIENCE_S)} s waiting for {what or cond}")
