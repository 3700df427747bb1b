"""The fleet's fit question over N simulated nodes, in memory (no network):

    .venv/bin/python bench/fit.py [--nodes 1000] [--repeat 7]

The snapshots are the simulator's own (`agent.simulate.SimulatedNode`: budgets, ledgers with
busy and idle models, several engines), with the model's metadata on every node's disk. Once
they are in, it times (best and median of --repeat):

1. `check_fit` over all N parsed snapshots: the pure estimator and verdict (the issue's
   target: 1000 nodes under 100 ms);
2. `FleetAggregator.set_fit`: what pressing `F` costs the dashboard, each node's snapshot
   parsed from the JSON the worker keeps, judged, and its view republished;
3. one snapshot arriving with the question asked vs without (`NodeWorker.apply_snapshot`):
   what the question adds to every tick of every node, µs;
4. `fleet fit`'s work after the poll: N views sorted and its `--json` document built.

Prints one JSON line (for bench/run_all) and a table; runs on core 0 like the others.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402

from fleettui.agent.collect.energy import EnergyLedger, EnergyMeter  # noqa: E402
from fleettui.agent.simulate import SimulatedNode  # noqa: E402
from fleettui.aggregator.aggregator import FleetAggregator  # noqa: E402
from fleettui.aggregator.fitwatch import fit_json, fit_order  # noqa: E402
from fleettui.capacity.fit import FitRequest, check_fit  # noqa: E402
from fleettui.config import FleetConfig, NodeConfig  # noqa: E402
from fleettui.wire import DiskModel, ModelMeta, NodeSnapshot  # noqa: E402

MODEL = "llama3.1:8b"
META = ModelMeta(
    source="ollama-show",
    arch="llama",
    params=8_030_261_248,
    file_mb=4692.8,
    quant="Q4_K_M",
    n_layers=32,
    n_heads=32,
    n_kv_heads=8,
    key_length=128,
    value_length=128,
    embedding_length=4096,
    vocab_size=128256,
    ctx_train=131072,
)
REQUEST = FitRequest(MODEL, ctx=8192, parallel=1)


def simulated(n: int) -> dict[str, NodeSnapshot]:
    """N simulator snapshots, the model on disk beside each node's first engine."""
    out = {}
    for i in range(n):
        name = f"sim-{i:04d}"
        snap = SimulatedNode(name).snapshot(EnergyLedger(None, 0.3, "EUR"), EnergyMeter())
        disk = DiskModel(name=MODEL, size_mb=META.file_mb, quant="Q4_K_M", meta=META)
        snap.engines[0].available.append(disk)
        out[name] = snap
    return out


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(best, median) milliseconds of `fn()` over `repeat` runs."""
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000)
    return round(min(runs), 2), round(statistics.median(runs), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})  # one core, as the other benches pin the process under test
    snaps = simulated(a.nodes)
    n = len(snaps)
    gc.collect()
    gc.freeze()  # as the aggregator does once its nodes answered (_settle_gc)

    # 1. the pure loop
    verdicts: list = []

    def pure() -> None:  # the metadata found once, as FitWatch passes it
        verdicts[:] = [check_fit(name, s, META, REQUEST) for name, s in snaps.items()]

    pure_best, pure_med = timed(pure, a.repeat)
    split = dict(Counter(f.verdict for f in verdicts))

    # 2. the aggregator: workers holding the snapshots as the poller leaves them
    cfg = FleetConfig(
        nodes=[
            NodeConfig(name=name, url=f"http://127.0.0.1:{20000 + i}")
            for i, name in enumerate(snaps)
        ]
    )
    agg = FleetAggregator(cfg, verify_chain=False, freeze_gc=False)
    workers = agg._workers  # the bench drives what a poll would have done
    for w in workers:
        w.apply_snapshot(snaps[w.name])
    gc.collect()
    gc.freeze()
    set_best, set_med = timed(lambda: agg.set_fit(REQUEST), a.repeat)

    # 3. one snapshot arriving, with and without the question
    w0 = workers[0]
    snap0 = snaps[w0.name]
    reps = 2000
    per: dict[str, float] = {}
    for label, asked in (("without", None), ("with", REQUEST)):
        agg.set_fit(asked)
        t = time.perf_counter()
        for _ in range(reps):
            w0.apply_snapshot(snap0)
        per[label] = (time.perf_counter() - t) / reps * 1e6

    # 4. fleet fit's work after the poll
    agg.set_fit(REQUEST)
    views = agg.snapshots()
    now = time.time()
    out_best, out_med = timed(
        lambda: json.dumps([fit_json(v, now) for v in sorted(views, key=fit_order)]), a.repeat
    )

    row = {
        "bench": "fit",
        "nodes": n,
        "check_fit_ms": pure_best,
        "check_fit_median_ms": pure_med,
        "set_fit_ms": set_best,
        "set_fit_median_ms": set_med,
        "snapshot_us_without": round(per["without"], 1),
        "snapshot_us_with": round(per["with"], 1),
        "fit_document_ms": out_best,
        "fit_document_median_ms": out_med,
        "verdicts": split,
        "load": round(os.getloadavg()[0], 2),
        "machine": machine(),
    }
    print(json.dumps(row))
    print(f"{n} simulated nodes, {MODEL} at ctx 8192 x 1; verdicts {split}")
    print(f"  check_fit over all nodes          {pure_best:8.2f} ms best, {pure_med:.2f} median")
    print(f"  FleetAggregator.set_fit (F)       {set_best:8.2f} ms best, {set_med:.2f} median")
    print(
        f"  one snapshot arriving             {per['without']:8.1f} µs without the question, "
        f"{per['with']:.1f} µs with it"
    )
    print(f"  fleet fit: sort + --json document {out_best:8.2f} ms best, {out_med:.2f} median")


if __name__ == "__main__":
    main()
