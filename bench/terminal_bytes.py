"""Bytes to the terminal: what `fleet demo` writes per second under a pty in steady state.

    .venv/bin/python bench/terminal_bytes.py [--nodes 8,300] [--size 160x45] [--start 10]
                                             [--end 40] [--runs 1] [--dump DIR]

Over SSH on a slow link, what the dashboard writes is what the user waits for. Each run starts
`fleet demo --nodes N` on a fresh pty of `--size`, drains everything it writes, and counts the
bytes between `--start` and `--end` seconds after the start (start-up, first paint and the
nodes coming ONLINE are before the window). It reports KB/s (1 KB = 1000 bytes) and writes
per second. Targets (issue 19): at most 4 KB/s at 8 nodes and 8 KB/s at 300. `--dump DIR`
keeps each run's window as written (`DIR/nodes-N-run-R.bin`) and prints where its bytes went:
per screen line and per column of the table, and how many were escape codes.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import report, scratch_env

TARGETS = {8: 4.0, 300: 8.0}  # KB/s


def measure(
    nodes: int, cols: int, rows: int, start: float, end: float, dump: Path | None = None
) -> dict:
    """One `fleet demo --nodes N` under a pty; bytes written in the [start, end) window."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the dashboard on the pty
        env = {**os.environ, **scratch_env(), "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        env.pop("NO_COLOR", None)
        os.execvpe(
            sys.executable, [sys.executable, "-m", "fleettui", "demo", "--nodes", str(nodes)], env
        )
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    t0 = time.monotonic()
    total = window = writes = 0
    kept = bytearray()
    try:
        while (now := time.monotonic() - t0) < end:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break  # the child exited
            if not chunk:
                break
            total += len(chunk)
            if now >= start:
                window += len(chunk)
                writes += 1
                if dump is not None:
                    kept += chunk
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # keep draining so it can write its goodbye
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    if not os.read(fd, 65536):
                        break
                except OSError:
                    break
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    seconds = end - start
    if dump is not None:
        dump.write_bytes(bytes(kept))
    return {
        "nodes": nodes,
        "size": f"{cols}x{rows}",
        "window_s": f"{start:g}-{end:g}",
        "kb_per_s": round(window / seconds / 1000, 2),
        "writes_per_s": round(writes / seconds, 1),
        "total_kb": round(total / 1000, 1),
        "target_kb_per_s": TARGETS.get(nodes),
    }


MOVE = re.compile(rb"\x1b\[(\d+);(\d+)H")
ESCAPE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def where(data: bytes, seconds: float, top: int = 12) -> list[dict]:
    """Where a dump's bytes went: each run after a cursor move, by its line and first column
    (the table's columns start at fixed cells), with the share that was escape codes."""
    spots: dict[tuple[int, int], list[int]] = {}
    moves = list(MOVE.finditer(data))
    for m, nxt in zip(moves, [*moves[1:], None], strict=True):
        run = data[m.start() : nxt.start() if nxt else len(data)]
        y, x = int(m[1]), int(m[2])
        key = (0 if y == 1 else 2 if y > 3 else 1, x)  # header, first row(s), the rest
        spot = spots.setdefault(key, [0, 0, 0])
        spot[0] += len(run)
        spot[1] += sum(len(e) for e in ESCAPE.findall(run))
        spot[2] += 1
    rows = sorted(spots.items(), key=lambda kv: -kv[1][0])[:top]
    return [
        {
            "lines": ("header", "lines 2-3", "lines 4+")[k[0]],
            "column": k[1],
            "bytes_per_s": round(v[0] / seconds),
            "escape_share": round(v[1] / v[0], 2),
            "writes": v[2],
        }
        for k, v in rows
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="8,300")
    ap.add_argument("--size", default="160x45")
    ap.add_argument("--start", type=float, default=10.0)
    ap.add_argument("--end", type=float, default=40.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--dump", type=Path, default=None)
    a = ap.parse_args()
    cols, rows = (int(x) for x in a.size.split("x"))
    out = []
    for n in (int(x) for x in a.nodes.split(",")):
        for run in range(a.runs):
            path = None if a.dump is None else a.dump / f"nodes-{n}-run-{run + 1}.bin"
            out.append({**measure(n, cols, rows, a.start, a.end, path), "run": run + 1})
            if path is not None:
                for spot in where(path.read_bytes(), a.end - a.start):
                    print(f"  {n} nodes: {spot}")
    report(
        "terminal_bytes",
        out,
        {f"{n} nodes": f"<= {kb} KB/s" for n, kb in TARGETS.items()},
    )


if __name__ == "__main__":
    main()
