"""Agent benchmark: /api/v1/snapshot latency under 50 concurrent clients, collection loop CPU.

    .venv/bin/python bench/agent.py [--clients 50] [--seconds 10]

The agent runs pinned to core 0, the load generator to core 1 (raw asyncio keep-alive GETs, so the
client costs as little as possible). Three loads, 50 clients each:

- saturated: closed loop, every client sends its next request as soon as the answer is in, so
  the agent runs flat out and latency is mostly queueing (50 requests always in flight);
- open loop at 2 s: each client asks every 2 s, as 50 dashboards would;
- open loop at 50 ms: each client asks 20 times a second (1000 requests/s, 40 dashboards' worth
  each): a heavy but not saturating rate.

Open-loop latency counts from when the request was due, not when it was sent, so a stalled
agent shows up as latency instead of as fewer samples. The loop's CPU share is measured on a
real-mode agent with no clients, at the default 2 s interval.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from urllib.parse import urlsplit

from common import cpu_seconds, pct, raw_get, report, start_agents, stop


async def client(host: str, port: int, path: str, until: float, lat: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            await raw_get(reader, writer, host, path)
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        writer.close()


async def paced(
    host: str, port: int, path: str, t0: float, until: float, period: float, lat: list[float]
) -> None:
    """Open loop: one request every `period` from `t0`, latency counted from when it was due."""
    reader, writer = await asyncio.open_connection(host, port)
    due = t0
    try:
        while due < until:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await raw_get(reader, writer, host, path)
            lat.append((time.perf_counter() - due) * 1000)
            due += period
    finally:
        writer.close()


async def open_loop(url: str, clients: int, seconds: float, period: float) -> list[float]:
    u = urlsplit(url)
    lat: list[float] = []
    start = time.perf_counter() + 0.2
    until = start + seconds
    await asyncio.gather(
        *(
            paced(
                u.hostname,
                u.port,
                "/api/v1/snapshot",
                start + period * i / clients,
                until,
                period,
                lat,
            )
            for i in range(clients)
        )
    )
    return lat


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
    url = next(iter(urls.values()))
    try:
        runs = [
            (f"snapshot, {a.clients} clients, saturated (closed loop)", None),
            (f"snapshot, {a.clients} clients, each every 2 s (open loop)", 2.0),
            (f"snapshot, {a.clients} clients, each every 50 ms (open loop)", 0.05),
        ]
        for case, period in runs:
            if period is None:
                lat = asyncio.run(load(url, a.clients, a.seconds))
            else:
                lat = asyncio.run(open_loop(url, a.clients, a.seconds, period))
            rows.append(
                {
                    "case": case,
                    "requests": len(lat),
                    "rps": round(len(lat) / a.seconds),
                    "p50_ms": round(pct(lat, 50), 2),
                    "p99_ms": round(pct(lat, 99), 2),
                }
            )
    finally:
        stop(proc)

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
