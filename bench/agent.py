"""Agent benchmark: /api/v1/snapshot latency under 50 concurrent clients, collection loop CPU.

    .venv/bin/python bench/agent.py [--clients 50] [--seconds 10]

The agent runs pinned to core 0, the load generator to core 1 (raw asyncio keep-alive GETs, so the
client costs as little as possible). The loop's CPU share is measured on a real-mode agent with
no clients, at the default 2 s interval.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from urllib.parse import urlsplit

from common import cpu_seconds, pct, report, start_agents, stop


async def client(host: str, port: int, path: str, until: float, lat: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            writer.write(req)
            await writer.drain()
            headers = await reader.readuntil(b"\r\n\r\n")
            n = int(
                next(
                    h.split(b":")[1]
                    for h in headers.split(b"\r\n")
                    if h.lower().startswith(b"content-length")
                )
            )
            await reader.readexactly(n)
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        writer.close()


async def load(url: str, clients: int, seconds: float) -> list[float]:
    u = urlsplit(url)
    lat: list[float] = []
    until = time.perf_counter() + seconds
    await asyncio.gather(
        *(client(u.hostname, u.port, "/api/v1/snapshot", until, lat) for _ in range(clients))
    )
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--idle-seconds", type=float, default=30)
    a = ap.parse_args()
    rows = []
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})

    proc, urls = start_agents(["--simulate", "--name", "bench"], 1, core=0)
    try:
        lat = asyncio.run(load(next(iter(urls.values())), a.clients, a.seconds))
    finally:
        stop(proc)
    rows.append(
        {
            "case": f"snapshot, {a.clients} clients, simulated",
            "requests": len(lat),
            "rps": round(len(lat) / a.seconds),
            "p50_ms": round(pct(lat, 50), 2),
            "p99_ms": round(pct(lat, 99), 2),
        }
    )

    proc, urls = start_agents([], 1, core=0)  # real collectors, default interval
    try:
        time.sleep(3)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(a.idle_seconds)
        share = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0) * 100
    finally:
        stop(proc)
    rows.append(
        {
            "case": f"collection loop, real mode, 2 s interval, {a.idle_seconds:g} s",
            "cpu_pct_of_core": round(share, 2),
        }
    )
    report("agent", rows, {"snapshot p99": "< 10 ms", "collection loop": "< 1 % of a core"})


if __name__ == "__main__":
    main()
