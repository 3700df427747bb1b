"""The audit log at a million entries: start-up verification, page reads, the agent serving them.

    python bench/audit.py [--entries 1000000] [--seconds 10] [--clients 8] [--baseline-src DIR]

Writes a valid chain (started/ok pairs and denied refusals, rotated at 10 MB as the agent does)
into a temp dir, then measures, each in a fresh process so peak RSS is its own:
  - `verify_chain` (what `fleet agent audit verify` runs): entries/s, seconds, peak RSS;
  - `AuditLog.open` (the agent's start-up check: verification + offset index + open intents);
  - one page of 100 read through the index vs by the scan used when there is no index;
  - a real agent on that log, from spawn: seconds to its first snapshot answer, to its
    "serving" line and to writes open (the snapshot no longer says the chain is being
    verified), and snapshot latency while it verifies (polled every 50 ms);
  - then GET /api/v1/audit?limit=100 (and 1000) at random `after` from keep-alive clients:
    requests/s, p50/p99, RSS after.
`--baseline-src` repeats the agent rows with another checkout's `src/` first on PYTHONPATH (e.g.
`git worktree add /tmp/old COMMIT`, then `--baseline-src /tmp/old/src`): before vs after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import pct, pinned, raw_get, report, scratch_env, start_agents, stop

from fleettui.agent.audit import (
    AUDIT_FILE,
    HEAD_FILE,
    ROTATE_BYTES,
    AuditLog,
    verify_chain,
)
from fleettui.wire import GENESIS_HASH, audit_hash, canonical_json


def generate(directory: Path, n: int) -> float:
    """n entries as the agent writes them (no fsync: this is setup, not the measurement)."""
    t0 = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    prev, part, size = GENESIS_HASH, 0, 0
    fh = (directory / AUDIT_FILE).open("wb")
    for seq in range(1, n + 1):
        kind = seq % 3  # a refusal, started, its outcome
        if seq == n and kind == 1:  # leave no intent open (start-up would close it)
            kind = 0
        entry = {
            "seq": seq,
            "ts": 1_790_000_000.0 + seq / 10,
            "source_ip": "10.0.0.2",
            "token_id": None if kind == 0 else "tok_0123abcd",
            "action": "restart",
            "args": {"engine": "ollama", "model": None, "via": "argv"},
            "status": ("denied", "started", "ok")[kind],
            "http_status": 401 if kind == 0 else 200,
            "duration_ms": 12.5,
            "exit_code": 0 if kind == 2 else None,
            "error": "unauthorized: no token" if kind == 0 else None,
            "ref": seq - 1 if kind == 2 else None,
            "prev_hash": prev,
        }
        entry["hash"] = prev = audit_hash(entry)
        line = canonical_json(entry) + b"\n"
        if size and size + len(line) > ROTATE_BYTES:
            fh.close()
            part += 1
            os.rename(directory / AUDIT_FILE, directory / f"{AUDIT_FILE}.{part}")
            fh, size = (directory / AUDIT_FILE).open("wb"), 0
        fh.write(line)
        size += len(line)
    fh.close()
    (directory / HEAD_FILE).write_text(json.dumps({"seq": n, "hash": prev, "ts": 0}))
    return time.perf_counter() - t0


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def phase(name: str, directory: Path) -> dict:
    """Run in a child process: one measurement, its own peak RSS."""
    path = directory / AUDIT_FILE
    base = peak_rss_mb()
    t0 = time.perf_counter()
    if name == "verify":
        res = verify_chain(path)
        assert res.ok, res
        n = res.entries
    elif name == "open":
        log = AuditLog(path)
        log.open()
        assert log.problem is None, log.problem
        n = log.seq
    else:  # pages: through the index, then by the scan an index-less reader does
        log = AuditLog(path)
        log.open()
        n, rng = log.seq, random.Random(7)
        t0 = time.perf_counter()
        for _ in range(200):
            log.page_json(rng.randrange(n), 100)
        indexed_ms = (time.perf_counter() - t0) / 200 * 1000
        scan = AuditLog(path)
        t0 = time.perf_counter()
        for _ in range(3):
            scan.page_json(rng.randrange(n), 100)
        scan_ms = (time.perf_counter() - t0) / 3 * 1000
        return {
            "case": f"one page of 100 at a random seq, {n} entries",
            "indexed_ms": round(indexed_ms, 3),
            "scan_ms": round(scan_ms, 1),
            "peak_rss_mb": peak_rss_mb(),
        }
    s = time.perf_counter() - t0
    what = "verify_chain" if name == "verify" else "AuditLog.open (verify + index)"
    return {
        "case": f"{what}, {n} entries",
        "seconds": round(s, 2),
        "entries_per_s": round(n / s),
        "rss_before_mb": base,
        "peak_rss_mb": peak_rss_mb(),
    }


async def page_load(url: str, clients: int, seconds: float, limit: int, n: int) -> list[float]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    lat: list[float] = []
    until = time.monotonic() + seconds

    async def one(i: int) -> None:
        rng = random.Random(i)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.monotonic() < until:
                t0 = time.perf_counter()
                body = await raw_get(
                    reader,
                    writer,
                    f"{host}:{port}",
                    f"/api/v1/audit?after={rng.randrange(n)}&limit={limit}",
                )
                lat.append((time.perf_counter() - t0) * 1000)
                assert body.startswith(b'{"entries":[{'), body[:200]
        finally:
            writer.close()

    await asyncio.gather(*(one(i) for i in range(clients)))
    return lat


def startup_row(cfg: Path, n: int, src: Path | None) -> dict:
    """Spawn to first snapshot answer, to the serving line, to writes open (polled)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["agent", "serve", "--port", str(port), "--simulate", "--name", "bench"]
    argv = pinned([sys.executable, "-m", "fleettui", *args, "--config", str(cfg)], 0)
    env = {**os.environ, **scratch_env(), **({"PYTHONPATH": str(src)} if src else {})}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    line_at: list[float] = []

    def watch() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "serving" in line and not line_at:
                line_at.append(time.monotonic() - t0)

    threading.Thread(target=watch, daemon=True).start()
    first = opened = None
    lat: list[float] = []
    try:
        with httpx.Client(trust_env=False, timeout=5) as c:
            while opened is None and time.monotonic() - t0 < 600:
                t1 = time.perf_counter()
                try:
                    r = c.get(f"http://127.0.0.1:{port}/api/v1/snapshot")
                except httpx.TransportError:
                    time.sleep(0.01)
                    continue
                now = time.monotonic() - t0
                if r.status_code != 200:
                    continue
                first = first if first is not None else now
                lat.append((time.perf_counter() - t1) * 1000)
                if not any(p.startswith("audit chain being") for p in r.json()["problems"]):
                    opened = now
                time.sleep(0.05)
    finally:
        stop(proc)
    return {
        "case": f"agent start-up on {n} entries{f' [{src}]' if src else ''}",
        "first_snapshot_s": round(first or -1, 2),
        "serving_line_s": round(line_at[0], 2) if line_at else None,
        "writes_open_s": round(opened or -1, 2),
        "snapshot_p50_ms": round(pct(lat, 50), 1),
        "snapshot_p99_ms": round(pct(lat, 99), 1),
        "snapshots": len(lat),
    }


def agent_rows(data: Path, n: int, clients: int, seconds: float, src: Path | None) -> list[dict]:
    cfg = data.parent / "agent.toml"
    cfg.write_text(f"data_dir = {json.dumps(str(data))}\ninterval_s = 2\n")
    label = f" [{src}]" if src else ""
    env = {"PYTHONPATH": str(src)} if src else None
    start = startup_row(cfg, n, src)
    args = ["--simulate", "--name", "bench", "--config", str(cfg)]
    proc, urls = start_agents(args, 1, core=0, env=env)
    url = next(iter(urls.values()))
    rows = []
    try:
        while any(  # page reads through the index: once the chain is verified
            p.startswith("audit chain being")
            for p in httpx.get(f"{url}/api/v1/snapshot", trust_env=False).json()["problems"]
        ):
            time.sleep(0.2)
        rss0 = psutil.Process(proc.pid).memory_info().rss / 2**20
        rows.append(start | {"rss_mb": round(rss0, 1)})
        for limit in (100, 1000):
            lat = asyncio.run(page_load(url, clients, seconds, limit, n))
            rss = psutil.Process(proc.pid).memory_info().rss / 2**20
            rows.append(
                {
                    "case": f"GET /api/v1/audit?limit={limit}, {clients} clients{label}",
                    "rps": round(len(lat) / seconds),
                    "p50_ms": round(pct(lat, 50), 2),
                    "p99_ms": round(pct(lat, 99), 2),
                    "rss_before_mb": round(rss0, 1),
                    "rss_after_mb": round(rss, 1),
                }
            )
    finally:
        stop(proc)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--baseline-src", type=Path, help="another checkout's src/ to compare")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase:
        print(json.dumps(phase(a.phase, a.dir)))
        return
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory(prefix="fleet-bench-audit-") as tmp:
        data = Path(tmp) / "data"
        node_dir = data / "nodes" / "bench"
        gen_s = generate(node_dir, a.entries)
        files = len(list(node_dir.glob(f"{AUDIT_FILE}*")))
        mb = sum(p.stat().st_size for p in node_dir.glob(f"{AUDIT_FILE}*")) / 2**20
        rows = [
            {
                "case": f"setup: {a.entries} entries, {files} files, {mb:.0f} MB",
                "seconds": round(gen_s, 1),
            }
        ]
        for name in ("verify", "open", "pages"):
            out = subprocess.run(
                [sys.executable, __file__, "--phase", name, "--dir", str(node_dir)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout))
        rows += agent_rows(data, a.entries, a.clients, a.seconds, None)
        if a.baseline_src:
            rows += agent_rows(data, a.entries, a.clients, a.seconds, a.baseline_src.resolve())
    report("audit", rows, {"start-up verification at 1M": "measured", "page reads": "O(page)"})


if __name__ == "__main__":
    main()
