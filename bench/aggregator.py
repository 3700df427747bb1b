"""Aggregator benchmark: N simulated agents, the FleetAggregator and a raw baseline client.

    .venv/bin/python bench/aggregator.py [--sizes 10,100,1000] [--window 30] [--tls]

For each N: one process serves N simulated agents (`fleet agent serve --simulate --nodes N`,
one snapshot event per node every 2 s, the nodes' ticks spread over the 2 s as independent
machines' would be) pinned to core 1; the client under test runs in its own process pinned to
core 0 and reports time until every node is ONLINE, CPU share and CPU µs per node per second
over the window, RSS (peak, and per node above the process's RSS before the first node was
added), pool timeouts, event-loop lag, event latency (agent's collection time `ts` → the moment
the new snapshot is visible in `snapshots()`), snapshot polls per second, and the simulator's
own CPU share over the same window (it must not be the bottleneck). The baseline is the least a
client can do: per node one raw keep-alive GET of the snapshot every 2 s and one SSE stream,
`json.loads` on both. Every run prints the ratio aggregator ÷ baseline.

--tls: the aggregator alone, against the same simulated agents served plain, over TLS (the
aggregator checks the agents' certificates against a fleet CA from pki.py) and over mutual TLS
(the operator certificate presented too): the CPU seconds the aggregator spends per 2 s poll
cycle in each, and the time until all are ONLINE (every node's two TLS handshakes); at the
end, how much of the RSS is freed heap glibc still holds (`heap_figures`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import glibc, pct, pinned, raw_get, report, start_agents, stop  # noqa: E402

INTERVAL = 2.0
TLS_ENV = "FLEET_BENCH_TLS"
DEADLINE_ENV = "FLEET_BENCH_ONLINE_S"  # --online-deadline, for the worker processes


def online_deadline() -> float:
    """How long a run waits for every node to be ONLINE before measuring anyway."""
    return float(os.environ.get(DEADLINE_ENV, "60"))


class LagMeter:
    """Event-loop lag: how late a 50 ms sleep wakes up."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.05)
            self.samples.append((time.perf_counter() - t0 - 0.05) * 1000)


def rss_mb() -> float:
    """Peak RSS of this process."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def heap_figures() -> dict:
    """RSS now; of glibc's heap, what is freed but still held (fordblks); and RSS after a
    `malloc_trim(0)` here: how much of the RSS is freed-but-not-returned, not live. Empty where
    libc is not glibc."""
    if (libc := glibc()) is None:
        return {}
    now = psutil.Process().memory_info().rss / 2**20
    free = libc.mallinfo2().fordblks / 2**20
    libc.malloc_trim(0)
    return {
        "rss_end_mb": round(now, 1),
        "heap_free_mb": round(free, 1),
        "rss_trimmed_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
    }


class SimCpu:
    """CPU share of the simulator process over the measurement window."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid) if pid else None
        self.c0 = self.t0 = 0.0

    def _cpu(self) -> float:
        t = self.proc.cpu_times() if self.proc else None
        return t.user + t.system if t else 0.0

    def start(self) -> None:
        self.c0, self.t0 = self._cpu(), time.monotonic()

    def share(self) -> float | None:
        if self.proc is None:
            return None
        return round((self._cpu() - self.c0) / (time.monotonic() - self.t0) * 100, 1)


# --- the aggregator under test ------------------------------------------------------------------


async def run_aggregator(
    urls: dict[str, str], window: float, warmup: float, sim: SimCpu, base_rss: float
) -> dict:
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.node import NodeWorker
    from fleettui.aggregator.state import NodeState
    from fleettui.config import Defaults, FleetConfig, NodeConfig

    polls = [0]
    poll = NodeWorker.poll

    async def counted_poll(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        polls[0] += 1
        return await poll(self, *args, **kwargs)

    NodeWorker.poll = counted_poll  # type: ignore[method-assign]

    from fleettui.aggregator.transport.gate import HandshakeGate

    handshakes = [0]  # TLS connections opened (each waits its turn at the gate once)
    turn = HandshakeGate.turn

    def counted_turn(self, scope):  # type: ignore[no-untyped-def]
        handshakes[0] += 1
        return turn(self, scope)

    HandshakeGate.turn = counted_turn  # type: ignore[method-assign]

    tls = json.loads(os.environ.get(TLS_ENV, "{}"))  # --tls: the operator's ca/cert/key
    cfg = FleetConfig(
        path=None,
        defaults=Defaults(poll_interval_s=INTERVAL, **tls),
        nodes=[NodeConfig(name=n, url=u) for n, u in urls.items()],
    )
    agg = FleetAggregator(cfg)
    latencies: list[float] = []
    last_ts: dict[str, float] = {}
    measuring = False
    original = agg._on_change

    def on_change(worker) -> None:  # bench-only hook: when a new snapshot becomes visible
        original(worker)
        ts = worker.snap_ts
        if measuring and ts is not None and last_ts.get(worker.cfg.name) != ts:
            latencies.append((time.time() - ts) * 1000)
        if ts is not None:
            last_ts[worker.cfg.name] = ts

    agg._on_change = on_change
    for w in agg._workers:
        w.on_change = on_change
    lag = LagMeter()
    t_start = time.monotonic()
    online_s = None
    async with agg:
        lag_task = asyncio.ensure_future(lag.run())
        deadline = t_start + online_deadline()
        while time.monotonic() < deadline:
            if all(v.state is NodeState.ONLINE for v in agg._workers_views()):
                online_s = time.monotonic() - t_start
                break
            await asyncio.sleep(0.02)
        at_online = handshakes[0]
        await asyncio.sleep(warmup)
        lag.samples.clear()
        measuring = True
        c0, t0, p0, h0 = time.process_time(), time.monotonic(), polls[0], handshakes[0]
        sim.start()
        await asyncio.sleep(window)
        cpu = time.process_time() - c0
        wall = time.monotonic() - t0
        sim_share = sim.share()
        polls_s = (polls[0] - p0) / wall
        handshakes_s = (handshakes[0] - h0) / wall
        streams_up = sum(1 for w in agg._workers if w.stream is not None and w.stream.up)
        heap = heap_figures()  # while every connection is still open
        measuring = False
        views = agg.snapshots()
        lag_task.cancel()
    states = {}
    for v in views:
        states[v.state.value] = states.get(v.state.value, 0) + 1
    pool_timeouts = sum(1 for v in views if v.last_error and "pool" in v.last_error.lower())
    figures = _figures(
        "aggregator",
        len(urls),
        online_s,
        cpu,
        wall,
        lag,
        latencies,
        pool_timeouts,
        states,
        base_rss=base_rss,
        polls_s=polls_s,
        sim_cpu=sim_share,
    )
    # TLS handshakes until all were ONLINE, and per second over the window; streams up at its end
    figures |= {
        "hs_to_online": at_online,
        "hs_per_s": round(handshakes_s, 1),
        "streams_up": streams_up,
    } | heap
    return figures


def _workers_views(self):  # type: ignore[no-untyped-def]
    return [w.view for w in self._workers]


# --- the raw baseline ---------------------------------------------------------------------------


async def baseline_node(
    url: str, seen: dict[str, float], latencies: list[float], flags: dict
) -> None:
    u = urlsplit(url)

    async def poller() -> None:
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        while True:
            body = json.loads(await raw_get(reader, writer, u.hostname, "/api/v1/snapshot"))
            seen[url] = body["ts"]
            await asyncio.sleep(INTERVAL)

    async def stream() -> None:
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        writer.write(f"GET /api/v1/events HTTP/1.1\r\nHost: {u.hostname}\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                body = json.loads(line[6:])
                if flags["measuring"] and "ts" in body:
                    latencies.append((time.time() - body["ts"]) * 1000)
                seen[url] = body.get("ts", 0)

    await asyncio.gather(poller(), stream())


async def run_baseline(
    urls: dict[str, str], window: float, warmup: float, sim: SimCpu, base_rss: float
) -> dict:
    seen: dict[str, float] = {}
    latencies: list[float] = []
    flags = {"measuring": False}
    lag = LagMeter()
    t_start = time.monotonic()
    tasks = [asyncio.ensure_future(baseline_node(u, seen, latencies, flags)) for u in urls.values()]
    lag_task = asyncio.ensure_future(lag.run())
    online_s = None
    while time.monotonic() < t_start + online_deadline():
        if len(seen) == len(urls):
            online_s = time.monotonic() - t_start
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(warmup)
    lag.samples.clear()
    flags["measuring"] = True
    c0, t0 = time.process_time(), time.monotonic()
    sim.start()
    await asyncio.sleep(window)
    cpu = time.process_time() - c0
    wall = time.monotonic() - t0
    sim_share = sim.share()
    for t in [*tasks, lag_task]:
        t.cancel()
    return _figures(
        "baseline",
        len(urls),
        online_s,
        cpu,
        wall,
        lag,
        latencies,
        0,
        {"ONLINE": len(seen)},
        base_rss=base_rss,
        polls_s=len(urls) / INTERVAL,
        sim_cpu=sim_share,
    )


def _figures(
    client,
    n,
    online_s,
    cpu,
    wall,
    lag,
    latencies,
    pool_timeouts,
    states,
    *,
    base_rss,
    polls_s,
    sim_cpu,
) -> dict:  # type: ignore[no-untyped-def]
    return {
        "client": client,
        "nodes": n,
        "online_s": round(online_s, 2) if online_s is not None else None,
        "cpu_pct": round(cpu / wall * 100, 1),
        "cpu_us_per_node_s": round(cpu / wall / n * 1e6, 1),
        "rss_mb": round(rss_mb(), 1),
        "rss_kb_per_node": round((rss_mb() - base_rss) * 1024 / n, 1),
        "pool_timeouts": pool_timeouts,
        "lag_p99_ms": round(pct(lag.samples, 99), 1),
        "lat_p50_ms": round(pct(latencies, 50), 1),
        "lat_p99_ms": round(pct(latencies, 99), 1),
        "polls_per_s": round(polls_s, 1),
        "sim_cpu_pct": sim_cpu,
        "states": states,
    }


# --- driver -------------------------------------------------------------------------------------


def worker_main(kind: str, urls_file: str, window: float, warmup: float, sim_pid: int) -> None:
    from fleettui.aggregator.aggregator import FleetAggregator

    FleetAggregator._workers_views = _workers_views  # type: ignore[attr-defined]
    base_rss = rss_mb()  # everything imported, no node yet
    urls = json.loads(Path(urls_file).read_text())
    fn = run_aggregator if kind == "aggregator" else run_baseline
    print(json.dumps(asyncio.run(fn(urls, window, warmup, SimCpu(sim_pid), base_rss))))


def measure(
    kind: str,
    urls: dict[str, str],
    window: float,
    warmup: float,
    core: int | None,
    sim_pid: int = 0,
) -> dict:
    path = HERE / f".urls-{os.getpid()}.json"
    path.write_text(json.dumps(urls))
    try:
        argv = pinned(
            [
                sys.executable,
                __file__,
                "--worker",
                kind,
                str(path),
                str(window),
                str(warmup),
                str(sim_pid),
            ],
            core,
        )
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=window + warmup + online_deadline() + 120
        )
    finally:
        path.unlink(missing_ok=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(
            sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
        )
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,500,1000")
    ap.add_argument("--window", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument(
        "--online-deadline",
        type=float,
        default=60,
        help="seconds to wait for all ONLINE before measuring anyway (a busy machine needs more)",
    )
    ap.add_argument("--tls", action="store_true", help="aggregator CPU with and without TLS")
    a = ap.parse_args()
    os.environ[DEADLINE_ENV] = str(a.online_deadline)
    if a.tls:
        tls_main([int(x) for x in a.sizes.split(",")], a.window, a.warmup)
        return
    rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        proc, urls = start_agents(
            ["--simulate", "--nodes", str(n), "--name", "b", "--interval", str(INTERVAL)], n, core=1
        )
        try:
            agg = measure("aggregator", urls, a.window, a.warmup, core=0, sim_pid=proc.pid)
            base = measure("baseline", urls, a.window, a.warmup, core=0, sim_pid=proc.pid)
        finally:
            stop(proc)
        ratio = round(agg["cpu_pct"] / base["cpu_pct"], 2) if base["cpu_pct"] else None
        for r in (agg, base):
            r["cpu_ratio_vs_baseline"] = ratio if r is agg else 1.0
            rows.append(r)
    report(
        "aggregator",
        rows,
        {
            "all ONLINE": "< 5 s at 1000 nodes, zero pool timeouts",
            "cpu": "aggregator <= 2x baseline at 500 and 1000; < 35 % of a core at 1000",
            "rss": "< 150 MB at 1000",
            "latency": "p99 < 100 ms at 100 nodes",
        },
    )


def tls_main(sizes: list[int], window: float, warmup: float) -> None:
    import tempfile

    from fleettui import pki

    with tempfile.TemporaryDirectory(prefix="fleet-bench-tls-") as tmp:
        d = Path(tmp) / "pki"
        pki.init_ca(d)
        crt, key = pki.node_paths(d, "localhost")
        pki.issue_node(d, "localhost", ["127.0.0.1"])
        ca = pki.ca_paths(d)[0]
        served = f'tls_cert = "{crt}"\ntls_key = "{key}"\n'
        op_crt, op_key = pki.operator_paths(d)
        # what the agents are told (agent.toml) and what the aggregator presents (Defaults)
        modes: dict[str, tuple[str | None, dict[str, str]]] = {
            "plain": (None, {}),
            "TLS": (served, {"ca_file": str(ca)}),
            "mTLS": (
                served + f'tls_client_ca = "{ca}"\n',
                {"ca_file": str(ca), "client_cert": str(op_crt), "client_key": str(op_key)},
            ),
        }
        rows = []
        for n in sizes:
            for mode, (agent_toml, operator) in modes.items():
                args = ["--simulate", "--nodes", str(n), "--name", "b", "--interval", str(INTERVAL)]
                if agent_toml is not None:
                    path = Path(tmp) / f"agent-{mode}.toml"
                    path.write_text(agent_toml)
                    args += ["--config", str(path)]
                os.environ[TLS_ENV] = json.dumps(operator)
                proc, urls = start_agents(args, n, core=1)
                try:
                    r = measure("aggregator", urls, window, warmup, core=0, sim_pid=proc.pid)
                finally:
                    stop(proc)
                r["tls"] = mode
                r["cpu_s_per_cycle"] = round(r["cpu_pct"] / 100 * INTERVAL, 4)
                rows.append(r)
        os.environ.pop(TLS_ENV, None)
    report("aggregator-tls", rows, {"tls": "the peer figures hold with TLS on (docs)"})


if __name__ == "__main__":
    main()
