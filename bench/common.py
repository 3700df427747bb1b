"""Shared helpers for the benchmark scripts: machine info, agents as subprocesses, reporting."""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SERVING = re.compile(r"serving (\S+) on (https?://\S+)")


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        # other work on the machine skews every figure: say how busy it was
        "load_1m": round(os.getloadavg()[0], 2),
    }


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
        "keepcost".split()
    ]


def glibc() -> ctypes.CDLL | None:
    """This process's glibc with `mallinfo2` typed, for the C heap OpenSSL allocates from
    (tracemalloc does not see it); None where libc is not glibc 2.33+."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    return libc


def pinned(argv: list[str], core: int | None) -> list[str]:
    """Prefix argv with taskset when asked and available (keeps load generators off our core)."""
    if core is None or not shutil.which("taskset") or (os.cpu_count() or 1) <= core:
        return argv
    return ["taskset", "-c", str(core), *argv]


def scratch_env() -> dict[str, str]:
    """HOME and XDG dirs in a throwaway directory: benchmarks never touch the user's files."""
    home = tempfile.mkdtemp(prefix="fleet-bench-")
    atexit.register(shutil.rmtree, home, True)
    return {
        "HOME": home,
        "XDG_CONFIG_HOME": f"{home}/.config",
        "XDG_STATE_HOME": f"{home}/.local/state",
        "XDG_DATA_HOME": f"{home}/.local/share",
    }


def start_agents(
    args: list[str], nodes: int, core: int | None = None, env: dict | None = None
) -> tuple[subprocess.Popen, dict[str, str]]:
    argv = pinned([sys.executable, "-m", "fleettui", "agent", "serve", "--port", "0", *args], core)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **scratch_env(), **(env or {})},
    )
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := SERVING.search(line):
            urls[m.group(1)] = m.group(2)
        if len(urls) >= nodes or time.monotonic() > deadline:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    if len(urls) < nodes:
        proc.kill()
        raise RuntimeError(f"only {len(urls)}/{nodes} agents started")
    return proc, urls


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def report(name: str, rows: list[dict], targets: dict[str, str] | None = None) -> None:
    """One JSON line per result row (machine info included) and a human table."""
    for row in rows:
        print(json.dumps({"bench": name, **row, "machine": machine()}))
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "machine"))
    widths = {k: max(len(k), *(len(_fmt(r.get(k))) for r in rows)) for k in keys}
    print()
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(_fmt(r.get(k)).ljust(widths[k]) for k in keys))
    for k, v in (targets or {}).items():
        print(f"target {k}: {v}")
    print()


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


async def raw_get(reader, writer, host: str, path: str) -> bytes:  # type: ignore[no-untyped-def]
    """One keep-alive GET over a raw asyncio connection: the cheapest client there is."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    n = next(
        int(h.split(b":")[1])
        for h in head.split(b"\r\n")
        if h.lower().startswith(b"content-length")
    )
    return await reader.readexactly(n)
