"""Engine probes: one tick's cost per engine kind, and what the caches save.

    .venv/bin/python bench/probes.py [--ticks 200]

Each kind's probe (`agent/engines.probe_engine`) against the fake engine servers of the tests
(tests/fake_engines.py, real HTTP on 127.0.0.1, in this process): milliseconds per tick, p50
and p99, with the caches warm (Ollama's /api/show by digest, the engine's PID by port, GGUF
headers). Then the two lookups the caches avoid: a cold Ollama tick (every /api/show asked)
and the process lookup by port with and without the last PID (`agent/procs.facts`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_engines import (
    LLAMACPP,
    LLAMACPP_ROUTER,
    LMSTUDIO_V1,
    MLX,
    OLLAMA_FULL,
    VLLM,
    fake_engine,
)
from fleettui.agent import procs
from fleettui.agent.engines import Probing, probe_engine

KINDS = [
    ("ollama", OLLAMA_FULL),
    ("llamacpp", LLAMACPP),
    ("llamacpp (router)", LLAMACPP_ROUTER),
    ("vllm", VLLM),
    ("lmstudio", LMSTUDIO_V1),
    ("mlx", MLX),
]


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


async def ticks(kind: str, url: str, n: int, p: Probing) -> list[float]:
    out = []
    async with httpx.AsyncClient(trust_env=False) as c:
        for _ in range(n):
            t = time.perf_counter()
            e = await probe_engine(c, kind, kind.split()[0], url, 5.0, p)
            out.append((time.perf_counter() - t) * 1000)
            assert e.status == "up", e.error
    return out


async def main(n: int) -> None:
    print(f"{'engine':<20}{'p50 ms':>9}{'p99 ms':>9}   ({n} ticks, caches warm)")
    for kind, routes in KINDS:
        with fake_engine(routes) as eng:
            p = Probing()
            await ticks(kind, eng.url, 1, p)
            ms = await ticks(kind, eng.url, n, p)
        print(f"{kind:<20}{statistics.median(ms):>9.2f}{pct(ms, 0.99):>9.2f}")
    with fake_engine(OLLAMA_FULL) as eng:
        cold = [(await ticks("ollama", eng.url, 1, Probing()))[0] for _ in range(n // 4)]
        warm_p = Probing()
        await ticks("ollama", eng.url, 1, warm_p)
        warm = await ticks("ollama", eng.url, n // 4, warm_p)
        shows = sum(1 for path, _ in eng.bodies if path == "/api/show")
    print(
        f"ollama, /api/show cache: cold tick p50 {statistics.median(cold):.2f} ms, "
        f"warm {statistics.median(warm):.2f} ms; {shows} /api/show requests in "
        f"{len(cold) + len(warm) + 1} ticks"
    )
    with fake_engine(LLAMACPP) as eng:
        port = httpx.URL(eng.url).port or 0
        f = procs.facts(port)
        assert f.pid is not None and f.started is not None
        last = (f.pid, f.started)
        for label, cached in (("none seen (system socket list)", None), ("last tick's", last)):
            t = time.perf_counter()
            for _ in range(n):
                procs.facts(port, cached)
            ms = (time.perf_counter() - t) / n * 1000
            print(f"the engine's process by port, {label}: {ms:.2f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=200)
    anyio.run(main, ap.parse_args().ticks)
