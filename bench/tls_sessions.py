"""What TLS 1.3 session tickets cost and buy the aggregator (docs/performance.md, "TLS").

    .venv/bin/python bench/tls_sessions.py [--connections 200] [--handshakes 300]

A small stdlib TLS server in its own process on core 1 (EC P-256 certificates from pki.py,
optionally requiring the operator's client certificate), sending 0 or 2 tickets a connection;
this process on core 0:

- memory: `--connections` TLS connections held open, each after one 7 KB answer, and the C
  heap they hold, KB per connection (glibc's mallinfo2: what OpenSSL allocated, which
  tracemalloc does not see; Linux/glibc only);
- handshakes: `--handshakes` connections one after another the way the aggregator opens a
  poll connection (anyio over the shared context), each full, then each resuming the last
  one's session (`SSLContext.sslobject_class` offering it before the first `do_handshake`):
  CPU ms per handshake on each side and how many were resumed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from contextvars import ContextVar
from pathlib import Path

import anyio
import anyio.streams.tls
import psutil
from common import glibc, pinned, report

from fleettui import pki

ANSWER = 7000  # about a simulated snapshot
SERVER = r"""
import socket, ssl, sys, threading
cert, key, client_ca, tickets, answer = sys.argv[1:6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.num_tickets = int(tickets)
if client_ca != "-":
    ctx.load_verify_locations(client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
body = b"x" * int(answer)
head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
s = socket.create_server(("127.0.0.1", 0), backlog=1024)
print(s.getsockname()[1], flush=True)

def serve(c):
    try:
        with ctx.wrap_socket(c, server_side=True) as t:
            while t.recv(4096):
                t.sendall(head + body)
    except OSError:
        pass

while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def c_heap_kb() -> float:
    m = glibc().mallinfo2()
    return (m.uordblks + m.hblkhd) / 1024


OFFER: ContextVar[ssl.SSLSession | None] = ContextVar("offer", default=None)


class _Resuming(ssl.SSLObject):
    """Offers OFFER's session: set before the first handshake step, as SSLObject allows."""

    _offered = False

    def do_handshake(self) -> None:
        if not self._offered:
            self._offered = True
            if (session := OFFER.get()) is not None:
                self.session = session
        super().do_handshake()


def server(files: dict[str, str], mtls: bool, tickets: int) -> tuple[subprocess.Popen, int]:
    argv = [sys.executable, "-c", SERVER, files["crt"], files["key"]]
    argv += [files["ca"] if mtls else "-", str(tickets), str(ANSWER)]
    proc = subprocess.Popen(pinned(argv, 1), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def client_context(files: dict[str, str], mtls: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=files["ca"])
    if mtls:
        ctx.load_cert_chain(files["op_crt"], files["op_key"])
    return ctx


def held_connections(ctx: ssl.SSLContext, port: int, k: int) -> float:
    def one() -> ssl.SSLSocket:
        s = ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", port)), server_hostname="localhost"
        )
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got = 0
        while got < ANSWER:
            got += len(s.recv(65536))
        return s

    held = [one()]
    c0 = c_heap_kb()
    held += [one() for _ in range(k)]
    kb = (c_heap_kb() - c0) / k
    for s in held:
        s.close()
    return round(kb, 1)


async def handshakes(ctx: ssl.SSLContext, port: int, n: int, resume: bool) -> tuple[float, int]:
    saved: list[ssl.SSLSession | None] = [None]
    reused = 0

    async def one() -> None:
        nonlocal reused
        token = OFFER.set(saved[0] if resume else None)
        try:
            stream = await anyio.connect_tcp(
                "localhost", port, ssl_context=ctx, tls_standard_compatible=False
            )
        finally:
            OFFER.reset(token)
        async with stream:
            await stream.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            got = 0
            while got < ANSWER:
                got += len(await stream.receive())
            tls = stream.extra(anyio.streams.tls.TLSAttribute.ssl_object)
            reused += tls.session_reused
            saved[0] = tls.session  # the ticket came with the answer

    await one()
    reused = 0
    t0 = time.process_time()
    for _ in range(n):
        await one()
    return (time.process_time() - t0) / n * 1000, reused


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--handshakes", type=int, default=300)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-sessions-") as tmp:
        d = Path(tmp) / "pki"
        pki.init_ca(d)
        pki.issue_node(d, "localhost", ["127.0.0.1"])
        crt, key = pki.node_paths(d, "localhost")
        op_crt, op_key = pki.operator_paths(d)
        files = {"crt": str(crt), "key": str(key), "ca": str(pki.ca_paths(d)[0])}
        files |= {"op_crt": str(op_crt), "op_key": str(op_key)}
        for mtls in (False, True):
            for tickets in (0, 2):
                proc, port = server(files, mtls, tickets)
                try:
                    ctx = client_context(files, mtls)
                    row: dict[str, object] = {"tls": "mTLS" if mtls else "TLS", "tickets": tickets}
                    row["c_heap_kb_per_conn"] = held_connections(ctx, port, a.connections)
                    if tickets:
                        ctx.sslobject_class = _Resuming
                        srv = psutil.Process(proc.pid)
                        for resume in (False, True):
                            s0 = sum(srv.cpu_times()[:2])
                            ms, reused = asyncio.run(handshakes(ctx, port, a.handshakes, resume))
                            server_ms = (sum(srv.cpu_times()[:2]) - s0) / a.handshakes * 1000
                            kind = "resumed" if resume else "full"
                            row[f"{kind}_client_ms"] = round(ms, 2)
                            row[f"{kind}_server_ms"] = round(server_ms, 2)
                            row[f"{kind}_reused"] = reused
                    rows.append(row)
                finally:
                    proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
    report("tls-sessions", rows, {"tickets": "kept only if resuming pays for their memory"})


if __name__ == "__main__":
    main()
