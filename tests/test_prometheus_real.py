"""A real Prometheus (Debian's `prometheus`) scraping a real agent that is restarted twice.

The agent reads a fake RAPL tree whose counter a thread advances along a known power curve, so
the true energy of any window is known. Prometheus scrapes every second with the scrape config
from docs/prometheus.md; its HTTP API on loopback must then say: `increase()` over the window
within 2 % of the truth, `resets()` equal to the restarts, and a `node` label for an IP target.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import AgentProc, start_agent
from fakes import free_port

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian: prometheus)"),
]
MAX_RANGE_UJ = 262_143_328_850


def power(t: float) -> float:
    return 200.0 + 100.0 * math.sin(2 * math.pi * t / 10.0)


def energy(t: float) -> float:
    """∫ power from 0 to t, joules."""
    return 200.0 * t + 100.0 * 10.0 / (2 * math.pi) * (1 - math.cos(2 * math.pi * t / 10.0))


class RaplWriter:
    """Advances intel-rapl:0/energy_uj along `energy` (wrapping like the hardware)."""

    def __init__(self, root: Path) -> None:
        self.zone = root / "intel-rapl:0"
        self.zone.mkdir(parents=True)
        (self.zone / "name").write_text("package-0\n")
        (self.zone / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
        self.t0 = time.time()
        self.offset_uj = MAX_RANGE_UJ - 3_000_000_000  # wraps 15 s in
        self.write()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def true_j(self, a: float, b: float) -> float:
        return energy(b - self.t0) - energy(a - self.t0)

    def write(self) -> None:
        uj = (self.offset_uj + round(energy(time.time() - self.t0) * 1e6)) % MAX_RANGE_UJ
        tmp = self.zone / "energy_uj.tmp"
        tmp.write_text(f"{uj}\n")
        os.replace(tmp, self.zone / "energy_uj")

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.write()


def agents_scrape_config(target: str) -> str:
    """The `fleet-agents` job exactly as docs/prometheus.md gives it, pointed at `target`."""
    doc = (ROOT / "docs" / "prometheus.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "fleet-agents" in b)
    block = re.sub(r"targets: \[.*?\]", f'targets: ["{target}"]', block)
    return block.replace("scrape_interval: 15s", "scrape_interval: 1s")


def query(prom: str, expr: str, at: float) -> list[dict]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr, "time": at}, timeout=10)
    r.raise_for_status()
    return r.json()["data"]["result"]


def test_increase_matches_true_energy_across_restarts(tmp_path: Path, xdg_home: Path) -> None:
    rapl = RaplWriter(tmp_path / "rapl")
    port = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'auto_detect = false\nrapl_root = "{tmp_path / "rapl"}"\n'
        f'state_dir = "{tmp_path / "state"}"\ninterval_s = 0.25\nprice_per_kwh = 0.30\n'
    )
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        + agents_scrape_config(f"127.0.0.1:{port}")
    )
    prom = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    base = f"http://127.0.0.1:{prom_port}"
    agent: AgentProc | None = None
    try:
        deadline = time.monotonic() + 30
        while True:  # Prometheus answers its API once it is ready
            try:
                if httpx.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not start"
            time.sleep(0.2)
        agent = start_agent("--config", str(cfg), "--port", str(port), tmp=tmp_path)
        deadline = time.monotonic() + 30
        while not query(base, "fleet_energy_joules_total", time.time()):
            assert time.monotonic() < deadline, "Prometheus never scraped the agent"
            time.sleep(0.5)
        begin = time.time()
        segment_s = 6.0
        for _ in range(2):  # two restarts, the way a service manager stops it
            time.sleep(segment_s)
            agent.proc.send_signal(signal.SIGTERM)
            assert agent.proc.wait(timeout=15) == 0
            agent = start_agent("--config", str(cfg), "--port", str(port), tmp=tmp_path)
        time.sleep(segment_s)
        time.sleep(1.5)
        # the window runs from one scrape to another, so Prometheus extrapolates nothing
        # and the truth is the curve's energy between the two scrape times
        raw = query(base, f"fleet_energy_joules_total[{time.time() - begin:.0f}s]", time.time())
        stamps = [float(t) for t, _ in raw[0]["values"]]
        first, end = stamps[0], stamps[-1]
        window = f"{round((end - first) * 1000)}ms"
        [inc] = query(base, f"increase(fleet_energy_joules_total[{window}])", end)
        [resets] = query(base, f"resets(fleet_energy_joules_total[{window}])", end)
        true = rapl.true_j(first, end)
        got = float(inc["value"][1])
        print(f"increase {got:.0f} J, truth {true:.0f} J, error {100 * (got / true - 1):+.2f} %")
        assert got == pytest.approx(true, rel=0.02)
        assert float(resets["value"][1]) == 2
        # the docs' relabeling gives an IP target a whole-address node label
        assert inc["metric"]["node"] == "127.0.0.1"
        # and the agent's own identity joins on instance for a host name
        joined = query(
            base,
            "fleet_power_watts * on (instance) group_left (hostname) fleet_agent_info",
            end,
        )
        assert joined and joined[0]["metric"]["hostname"] == socket.gethostname()
        [info] = query(base, "fleet_power_info", end)
        assert (info["metric"]["scope"], info["metric"]["source"]) == ("CPU package", "rapl")
    finally:
        rapl.stop.set()
        if agent is not None:
            agent.stop()
        prom.send_signal(signal.SIGTERM)
        try:
            prom.wait(timeout=15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        if sys.exc_info()[0] is not None:
            print((tmp_path / "prometheus.log").read_text()[-2000:])
