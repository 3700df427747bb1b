"""Fixtures that start real things on 127.0.0.1: agents as subprocesses, fake engine servers."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SERVING_RE = re.compile(r"serving (\S+) on (https?://\S+)")

# Temp dirs (tmp_path, and the children's TMPDIR) on tmpfs where there is one: on ext4 every
# rewrite of a small file (fake sysfs counters, thousands per test) is flushed at close, 1 ms
# and more each on a busy disk. Nothing asserted depends on the filesystem. FLEET_TEST_TMPDIR
# picks another place (e.g. a real disk).
_TMP = os.environ.get("FLEET_TEST_TMPDIR") or os.environ.get("TMPDIR") or "/dev/shm"
if os.path.isdir(_TMP) and os.access(_TMP, os.W_OK | os.X_OK):
    os.environ["TMPDIR"] = tempfile.tempdir = _TMP


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and the `fleet` it runs) keeps audit pins of its own: tests reuse loopback
    ports, and a pin left by one would make the next test's fresh agent look rewritten."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture
def xdg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Relocate HOME and every XDG dir into tmp_path, for this process and its children."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.delenv("FLEET_CONFIG", raising=False)
    monkeypatch.delenv("FLEET_AGENT_CONFIG", raising=False)
    return home


@dataclass
class AgentProc:
    """A `fleet agent serve` subprocess; `urls` maps node name to base URL."""

    proc: subprocess.Popen[str]
    urls: dict[str, str] = field(default_factory=dict)
    stderr_path: Path | None = None

    @property
    def url(self) -> str:
        return next(iter(self.urls.values()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path else ""


_STARTED: list[AgentProc] = []  # every agent start_agent started, for the fixture below


@pytest.fixture(autouse=True)
def _no_agent_outlives_its_test() -> Iterator[None]:
    """An agent a test started and never stopped (an assert failed before its stop(), a fixture
    failed after starting one) would hold its ports and a core for the rest of the session and
    beyond: stopped here. Agents of module-scoped fixtures are started before this runs and
    are left to their fixture."""
    first = len(_STARTED)
    try:
        yield
    finally:
        for agent in _STARTED[first:]:
            agent.stop()
        del _STARTED[first:]


def start_agent(
    *args: str, nodes: int = 1, tmp: Path, env: dict[str, str] | None = None
) -> AgentProc:
    """Start `fleet agent serve --port 0 ARGS` and wait until every node prints its URL."""
    err = tmp / f"agent-stderr-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleettui", "agent", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=err.open("w"),
        text=True,
        env={**os.environ, **(env or {})},
    )
    agent = AgentProc(proc, stderr_path=err)
    _STARTED.append(agent)
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    # a thread drains stdout so the agent never blocks on a full pipe
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    while len(agent.urls) < nodes:
        if time.monotonic() > deadline or proc.poll() is not None:
            agent.stop()
            raise RuntimeError(f"agent did not start: {agent.stderr()}")
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if m := SERVING_RE.search(line):
            agent.urls[m.group(1)] = m.group(2)
    return agent


@pytest.fixture
def agent_factory(tmp_path: Path, xdg_home: Path) -> Iterator:
    started: list[AgentProc] = []

    def factory(*args: str, nodes: int = 1, env: dict[str, str] | None = None) -> AgentProc:
        a = start_agent(*args, nodes=nodes, tmp=tmp_path, env=env)
        started.append(a)
        return a

    try:
        yield factory
    finally:
        for a in started:
            a.stop()


@pytest.fixture
def sim_agent(agent_factory) -> AgentProc:
    """One simulated node with a fast tick."""
    return agent_factory("--simulate", "--name", "alpha", "--interval", "0.3")


@pytest.fixture
def fleet(agent_factory, tmp_path: Path):
    """Three simulated agents in one process whose ollama restart runs a recording script,
    a token for them, and a dead port (see tests/actionfleet.py)."""
    from actionfleet import ActionFleet, dead_port_url, write_action_agent_config

    cfg, calls, secret = write_action_agent_config(tmp_path)
    agent = agent_factory(
        "--simulate", "--nodes", "3", "--name", "act", "--config", str(cfg), nodes=3
    )
    return ActionFleet(cfg, calls, secret, agent.urls, dead_port_url())
