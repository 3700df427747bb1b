#!/usr/bin/env python3
"""The agent under abuse: a no-token flood and held partial requests, with snapshot latency.

    bench/abuse.py [--seconds 10] [--clients 20] [--partials 500] [--src CHECKOUT]

Cases (one agent, simulated, scratch HOME; loopback only, bounded in count and time):
- idle: /api/v1/snapshot latency with nothing else going on;
- flood: `--clients` keep-alive connections POSTing a valid action without a token as fast as
  the agent answers, for `--seconds`: answers/s by status, audit lines and bytes per second,
  the agent's CPU, and snapshot p50/p99 measured meanwhile by a paced reader (every 20 ms);
- partials: `--partials` connections that send half a request and hold it: snapshot p50/p99
  while they are held, and how long the agent takes to close them (`header_timeout_s`).
`--src` runs the agent from another checkout (its `src/` first on PYTHONPATH), to measure the
same cases before a change. One JSON line per case, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, start_agents

BODY = b'{"action": "restart", "engine": "ollama"}'


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def flooder(port: int, until: float, counts: dict[int, int]) -> None:
    req = (
        b"POST /api/v1/actions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
    )
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            while time.monotonic() < until:
                writer.write(req)
                status = await read_response(reader)
                counts[status] = counts.get(status, 0) + 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def snapshot_reader(port: int, until: float, lat: list[float], period: float) -> None:
    req = b"GET /api/v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < until:
            t = time.perf_counter()
            writer.write(req)
            await read_response(reader)
            lat.append(time.perf_counter() - t)
            await asyncio.sleep(max(0.0, period - (time.perf_counter() - t)))
    finally:
        writer.close()


def audit_size(data: Path) -> tuple[int, int]:
    lines = size = 0
    for f in data.rglob("audit.jsonl*"):
        raw = f.read_bytes()
        lines += raw.count(b"\n")
        size += len(raw)
    return lines, size


async def case_idle(port: int, seconds: float) -> dict:
    lat: list[float] = []
    await snapshot_reader(port, time.monotonic() + seconds, lat, 0.02)
    return {
        "case": "idle",
        "snapshots": len(lat),
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
    }


async def case_flood(port: int, proc: psutil.Process, data: Path, a: argparse.Namespace) -> dict:
    counts: dict[int, int] = {}
    lat: list[float] = []
    lines0, bytes0 = audit_size(data)
    cpu0 = proc.cpu_times()
    t0 = time.monotonic()
    until = t0 + a.seconds
    await asyncio.gather(
        snapshot_reader(port, until, lat, 0.02),
        *(flooder(port, until, counts) for _ in range(a.clients)),
    )
    took = time.monotonic() - t0
    cpu1 = proc.cpu_times()
    await asyncio.sleep(0.5)  # the last fsyncs land
    lines1, bytes1 = audit_size(data)
    return {
        "case": "no-token flood",
        "clients": a.clients,
        "seconds": round(took, 1),
        "answers_per_s": round(sum(counts.values()) / took),
        "statuses": {str(k): v for k, v in sorted(counts.items())},
        "audit_lines_per_s": round((lines1 - lines0) / took, 2),
        "audit_kb_per_s": round((bytes1 - bytes0) / took / 1024, 2),
        "agent_cpu_pct": round(
            100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / took, 1
        ),
        "snapshots": len(lat),
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
    }


async def case_partials(port: int, a: argparse.Namespace) -> dict:
    conns = []
    for _ in range(a.partials):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        conns.append((reader, writer, time.monotonic()))
    lat: list[float] = []
    await snapshot_reader(port, time.monotonic() + min(a.seconds, 5), lat, 0.02)

    async def closed_after(reader: asyncio.StreamReader, opened: float) -> float | None:
        try:
            async with asyncio.timeout(max(0.1, opened + a.hold_limit - time.monotonic())):
                while await reader.read(4096):
                    pass
        except TimeoutError:
            return None
        except OSError:
            pass
        return time.monotonic() - opened

    closed = await asyncio.gather(*(closed_after(r, t) for r, _, t in conns))
    for _, w, _ in conns:
        w.close()
    done = [c for c in closed if c is not None]
    return {
        "case": f"{a.partials} partial requests held",
        "snapshots": len(lat),
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "closed": len(done),
        "still_open_after_s": None if len(done) == len(conns) else a.hold_limit,
        "closed_after_s_median": round(statistics.median(done), 2) if done else None,
        "closed_after_s_max": round(max(done), 2) if done else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--partials", type=int, default=500)
    ap.add_argument("--hold-limit", type=float, default=20, help="give up on a partial after")
    ap.add_argument("--src", type=Path, help="run the agent from this checkout")
    a = ap.parse_args()
    env = {"PYTHONPATH": str(a.src.resolve() / "src")} if a.src else {}
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the load on core 1, the agent on core 0
    proc, urls = start_agents(
        ["--simulate", "--name", "bench", "--interval", "2"], 1, core=0, env=env
    )
    port = int(next(iter(urls.values())).rsplit(":", 1)[1])
    agent = psutil.Process(proc.pid)  # taskset execs the agent: same pid
    data = Path(agent.environ()["XDG_DATA_HOME"]) / "fleettui" / "agent"
    info = {"bench": "abuse", "src": str(a.src) if a.src else "this checkout", "machine": machine()}
    rows = []
    try:
        for coro in (
            case_idle(port, min(a.seconds, 5)),
            case_flood(port, agent, data, a),
            case_partials(port, a),
        ):
            row = {**info, **asyncio.run(coro)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    cols = ["case", "answers_per_s", "audit_lines_per_s", "agent_cpu_pct", "p50_ms", "p99_ms"]
    cols += ["closed", "closed_after_s_max"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |")


if __name__ == "__main__":
    main()
