"""CLI cold start: whole-process wall time of `fleet --help` and `fleet ls`, median of N runs.

.venv/bin/python bench/cli.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, pct, report

FLEET = (
    str(ROOT / ".venv" / "bin" / "fleet")
    if (ROOT / ".venv" / "bin" / "fleet").exists()
    else "fleet"
)


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
        )
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    # An installed package ships bytecode; a source checkout whose .pyc files are stale (or an
    # environment with PYTHONDONTWRITEBYTECODE) would compile every changed module on every run.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "fleettui")], check=False
    )
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "projects.toml"
        cfg.write_text(
            "".join(
                f'[[node]]\nname = "n{i}"\nurl = "http://127.0.0.1:{20000 + i}"\n'
                for i in range(50)
            )
        )
        env = {**os.environ, "FLEET_CONFIG": str(cfg), "HOME": tmp}
        commands = {
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
            "fleet --help": [FLEET, "--help"],
            "fleet ls (50 nodes)": [FLEET, "ls"],
            "fleet ls --json (50 nodes)": [FLEET, "ls", "--json"],
        }
        for argv in commands.values():  # warm the page cache: "cold" is a fresh process
            timed(argv, env, 2)
        # round robin, so a burst of other work on the machine hits every command alike
        times: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(a.runs):
            for label, argv in commands.items():
                times[label] += timed(argv, env, 1)
        rows = [
            {
                "command": label,
                "runs": a.runs,
                "median_ms": round(pct(t, 50), 1),
                "p90_ms": round(pct(t, 90), 1),
                "min_ms": round(min(t), 1),
            }
            for label, t in times.items()
        ]
    report("cli", rows, {"fleet ls cold start": "< 250 ms"})


if __name__ == "__main__":
    main()
