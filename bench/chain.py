"""Audit-chain checks: what pins and the rotating sweep cost.

    .venv/bin/python bench/chain.py [--sizes 200,2000,10000] [--nodes 10] [--window 30]

For each log size: `--nodes` simulated agents in one process (pinned to core 1), each serving a
valid chain of that many entries (written into its data dir before it starts). This process
(core 0) then measures:

- `status_first_s` / `status_pinned_s` / `status_full_s`: one `fleet status`-style pass over
  every node (`poll_once`) with no pin (the whole log walked from seq 1), again with the pins it
  left (the pinned entry, the tail and the SPOT_PAGES pages verified longest ago), and with
  `--full-audit` (every page swept against the checkpoints: what every run did before);
- a running aggregator with the default knobs for `--window` seconds, with and without chain
  checks: audit requests and pages swept per node per minute, and the chain checks' share of
  this process's CPU (µs per node per second, with minus without);
- `bound_s`: the documented detection bound for that log size with the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from common import report, start_agents, stop  # noqa: E402

from fleettui.aggregator import chain as chain_mod  # noqa: E402
from fleettui.aggregator.aggregator import FleetAggregator  # noqa: E402
from fleettui.aggregator.pins import PinStore  # noqa: E402
from fleettui.config import Defaults, FleetConfig, NodeConfig  # noqa: E402
from fleettui.wire import GENESIS_HASH, AuditEntry, audit_hash, canonical_json  # noqa: E402


def write_chain(directory: Path, n: int) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    prev, lines = GENESIS_HASH, []
    for seq in range(1, n + 1):
        e = AuditEntry(
            seq=seq,
            ts=1_700_000_000.0 + seq,
            source_ip="127.0.0.1",
            token_id="tok_bench0000",
            action="restart",
            args={"engine": "ollama"},
            status="ok",
            http_status=200,
            duration_ms=12.5,
            exit_code=0,
            prev_hash=prev,
            hash="",
        ).model_dump(mode="json")
        e["hash"] = prev = audit_hash(e)
        lines.append(canonical_json(e) + b"\n")
    (directory / "audit.jsonl").write_bytes(b"".join(lines))
    (directory / "audit.head.json").write_text(json.dumps({"seq": n, "hash": prev, "ts": 0}))


class Counter:
    """Counts audit page requests (wraps ChainVerifier._page)."""

    def __init__(self) -> None:
        self.pages = 0
        orig = chain_mod.ChainVerifier._page

        async def counted(v, client, after, timeout_s):  # type: ignore[no-untyped-def]
            self.pages += 1
            return await orig(v, client, after, timeout_s)

        chain_mod.ChainVerifier._page = counted  # type: ignore[method-assign]


async def running(
    cfg: FleetConfig, pins: PinStore, window: float, verify: bool, counter: Counter
) -> tuple[float, int]:
    """(CPU seconds of this process, audit pages fetched) over `window`, the fleet watched."""
    async with FleetAggregator(cfg, pins=pins, verify_chain=verify):
        await anyio.sleep(3)  # past start-up (and every node's first check)
        c0, counter.pages = time.process_time(), 0
        await anyio.sleep(window)
        return time.process_time() - c0, counter.pages


def one_size(size: int, nodes: int, window: float, counter: Counter) -> dict:
    data = Path(tempfile.mkdtemp(prefix="fleet-bench-chain-"))
    names = [f"b-{i:03d}" for i in range(nodes)]
    for name in names:
        write_chain(data / "fleettui/agent/nodes" / name, size)
    proc, urls = start_agents(
        ["--simulate", "--nodes", str(nodes), "--name", "b"],
        nodes,
        core=1,
        env={"XDG_DATA_HOME": str(data)},
    )
    try:
        cfg = FleetConfig(nodes=[NodeConfig(name=n, url=u) for n, u in urls.items()])
        pins = PinStore(data / "pins")

        async def status(full_audit: bool = False) -> float:
            t0 = time.perf_counter()
            views = await FleetAggregator(cfg, pins=pins).poll_once(120, full_audit=full_audit)
            took = time.perf_counter() - t0
            bad = [v.name for v in views if v.chain.value != "ok"]
            assert not bad, (bad, views[0].chain_detail)
            return took

        first = anyio.run(status)
        pinned = anyio.run(status)
        full = anyio.run(status, True)
        with_chain, pages = anyio.run(running, cfg, pins, window, True, counter)
        without, _ = anyio.run(running, cfg, pins, window, False, counter)
    finally:
        stop(proc)
    d = Defaults()
    segments = math.ceil(size / chain_mod.PAGE)
    cap, gap = chain_mod.SWEEP_MAX_PAGES, min(d.poll_interval_s, 1.0)
    if segments <= cap * d.chain_rescan_s / gap:
        bound = d.chain_rescan_s + gap
    else:
        bound = math.ceil(segments / cap) * gap
    per_min = 60 / window / nodes
    return {
        "entries": size,
        "nodes": nodes,
        "status_first_s": round(first, 2),
        "status_pinned_s": round(pinned, 2),
        "status_full_s": round(full, 2),
        "audit_req_per_node_min": round(pages * per_min, 1),
        "chain_cpu_us_per_node_s": round((with_chain - without) / window / nodes * 1e6),
        "pages": segments,
        "bound_s": bound,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="200,2000,10000")
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--window", type=float, default=30.0)
    args = p.parse_args()
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    counter = Counter()
    rows = [one_size(int(s), args.nodes, args.window, counter) for s in args.sizes.split(",") if s]
    report(
        "chain",
        rows,
        {"bound_s": "<= 120 s with the defaults (111 s up to 220,000 entries, docs/aggregator.md)"},
    )


if __name__ == "__main__":
    main()
