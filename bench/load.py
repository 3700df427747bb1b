"""What the load action's own fit check costs on the agent: a fresh snapshot of the node, the
estimate and verdict, the audit entry, per request.

    .venv/bin/python bench/load.py [--requests 200]

One simulated agent pinned to core 0, requests sent one after another from this process
(keep-alive). Three requests, each `--requests` times:

- `load refused`: a model no node knows, so the fit is `unknown` and the answer is 409: a
  fresh collection, `check_fit`, one `denied` audit line (fsync'd);
- `load ok`: a model the node has on disk (unloaded again after each, untimed): the fresh
  collection, the fit, `started` and `ok` lines, the (simulated) load;
- `restart` (the baseline every action pays): `started` and `ok` lines, no collection, no fit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from common import pct, report, scratch_env, start_agents, stop


def timed(
    client: httpx.Client, url: str, body: dict, undo: dict | None, n: int
) -> tuple[list[float], set[int]]:
    """`n` timed requests, each followed by its untimed `undo` (the unload after a load)."""
    lat, codes = [], set()
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.post(f"{url}/api/v1/actions", json=body)
        lat.append((time.perf_counter() - t0) * 1000)
        codes.add(r.status_code)
        if undo is not None:
            client.post(f"{url}/api/v1/actions", json=undo)
    return lat, codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    env = scratch_env()
    config = Path(env["HOME"]) / "agent.toml"
    config.write_text("interval_s = 2\nrate_limit_per_min = 100000\n")
    create = ["agent", "token", "create", "--label", "bench", "--config", str(config)]
    out = subprocess.run(
        [sys.executable, "-m", "fleettui", *create],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    ).stdout
    secret = next(x.split()[1] for x in out.splitlines() if x.startswith("secret:"))
    proc, urls = start_agents(
        ["--simulate", "--name", "bench", "--config", str(config)], 1, core=0, env=env
    )
    url = urls["bench"]
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        with httpx.Client(headers=headers, timeout=30, trust_env=False) as client:
            snap = client.get(f"{url}/api/v1/snapshot").json()
            ollama = next(e for e in snap["engines"] if e["name"] == "ollama")
            held = {m["name"] for m in ollama["models"]}
            disk = next(m["name"] for m in ollama["available"] if m["name"] not in held)
            load = {"action": "load", "engine": "ollama"}
            cases = {  # restart last: the simulated engine is down for 3 s after each
                "load refused": ({**load, "model": "nosuch:1b"}, None),
                "load ok": ({**load, "model": disk}, {**load, "action": "unload", "model": disk}),
                "restart": ({"action": "restart", "engine": "ollama"}, None),
            }
            rows = []
            for name, (body, undo) in cases.items():
                lat, codes = timed(client, url, body, undo, args.requests)
                rows.append(
                    {
                        "request": name,
                        "n": len(lat),
                        "status": ",".join(map(str, sorted(codes))),
                        "p50_ms": pct(lat, 50),
                        "p99_ms": pct(lat, 99),
                        "max_ms": max(lat),
                    }
                )
    finally:
        stop(proc)
    report("load", rows)


if __name__ == "__main__":
    main()
