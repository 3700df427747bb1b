"""Memory per aggregator connection, plain and mutual TLS: Python's heap (tracemalloc) against
the process's RSS, whose difference is OpenSSL's own state (docs/performance.md, "TLS").

    .venv/bin/python bench/tls_memory.py

200 poll connections (`NodeClient`, one snapshot GET each, kept) and 200 event streams
(`PushStream`) from this process to one simulated agent in its own process on core 1; prints
KB per connection and the five lines of code that hold most of the heap.
"""

from __future__ import annotations

import asyncio
import gc
import json
import tempfile
import tracemalloc
from pathlib import Path

import psutil
from common import start_agents, stop

from fleettui import pki
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.stream import PushStream
from fleettui.aggregator.transport.tls import TlsPolicy

K = 200


def rss_kb() -> float:
    return psutil.Process().memory_info().rss / 1024


def heap_kb() -> float:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] / 1024


async def one(mode: str, agent_toml: Path | None, policy: TlsPolicy) -> None:
    args = ["--simulate", "--nodes", "1", "--name", "m"]
    proc, urls = start_agents(args + (["--config", str(agent_toml)] if agent_toml else []), 1, 1)
    url = next(iter(urls.values()))
    try:
        warm = NodeClient(url, None, 30, policy)
        await warm.get("/healthz")  # the shared SSL context and imports before counting
        tracemalloc.start()
        r0, t0 = rss_kb(), heap_kb()
        clients = [NodeClient(url, None, 30, policy) for _ in range(K)]
        for c in clients:
            await c.get("/api/v1/snapshot")  # what a poll reads: a record of about 7 KB
        r1, t1 = rss_kb(), heap_kb()
        ep = clients[0].endpoint
        streams = [
            await PushStream.open(ep, "/api/v1/events", {}, token=None, timeout_s=30)
            for _ in range(K)
        ]
        for s in streams:
            s.start(lambda _body: None)
        await asyncio.sleep(1)
        r2, t2 = rss_kb(), heap_kb()
        top = tracemalloc.take_snapshot().statistics("lineno")[:5]
        tracemalloc.stop()
        poll = {"heap": round((t1 - t0) / K, 1), "rss": round((r1 - r0) / K, 1)}
        stream = {"heap": round((t2 - t1) / K, 1), "rss": round((r2 - r1) / K, 1)}
        print(json.dumps({"mode": mode, "poll_conn_kb": poll, "stream_conn_kb": stream}))
        for stat in top:
            print("   ", str(stat)[:160])
        for s in streams:
            s.close()
        for c in [*clients, warm]:
            await c.aclose()
    finally:
        stop(proc)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-tlsmem-") as tmp:
        d = Path(tmp) / "pki"
        pki.init_ca(d)
        pki.issue_node(d, "localhost", ["127.0.0.1"])
        crt, key = pki.node_paths(d, "localhost")
        ca = pki.ca_paths(d)[0]
        op_crt, op_key = pki.operator_paths(d)
        toml = Path(tmp) / "agent.toml"
        toml.write_text(f'tls_cert = "{crt}"\ntls_key = "{key}"\ntls_client_ca = "{ca}"\n')
        asyncio.run(one("plain", None, TlsPolicy()))
        asyncio.run(one("mTLS", toml, TlsPolicy(str(ca), None, str(op_crt), str(op_key))))


if __name__ == "__main__":
    main()
