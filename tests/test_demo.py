"""`fleet demo`: real simulated agents, a real token, the real dashboard, and a clean exit."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import httpx
import pyte
import pytest

from fleettui.commands.demo import DemoError, DemoFleet
from fleettui.config import load_fleet_config

STARTED_RE = re.compile(rb"agent pids ([\d ]+), temp dir (\S+)")
ANSI_RE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_demo_fleet_has_working_tokens_and_cleans_up() -> None:
    with DemoFleet(2) as demo:
        tmp, proc = demo.tmp, demo.procs[0]
        assert len(demo.procs) == 2  # one process per node: each can be killed alone
        assert tmp is not None and proc is not None
        cfg = load_fleet_config(demo.config_path)
        assert [n.name for n in cfg.nodes] == ["demo-000", "demo-001"]
        assert not cfg.warnings
        token_file = cfg.nodes[0].token_file
        assert token_file is not None and stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert cfg.nodes[0].token_problem() is None
        secret = cfg.nodes[1].resolve_token()
        url = cfg.nodes[1].url
        ok = httpx.post(
            f"{url}/api/v1/actions",
            json={"action": "purge"},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        assert ok.status_code == 200 and ok.json()["ok"] is True
        assert httpx.post(f"{url}/api/v1/actions", json={"action": "purge"}).status_code == 401
    assert not tmp.exists()
    assert proc.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)


def test_demo_rejects_a_silly_node_count() -> None:
    with pytest.raises(DemoError, match="between 1 and 2000"):
        DemoFleet(0)


def test_demo_piped_prints_the_table_and_cleans_up() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fleettui", "demo", "--nodes", "3"],
        capture_output=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    for name in ("demo-000", "demo-001", "demo-002"):
        line = next(row for row in text.splitlines() if row.startswith(name))
        assert "ONLINE" in line and "W " in line
    assert "online 3/3" in text
    m = STARTED_RE.search(out.stderr)
    assert m, out.stderr
    assert all(gone(int(pid)) for pid in m.group(1).split())
    assert not Path(m.group(2).decode()).exists()


# --- in a real terminal (a pty): the Textual dashboard, keys, signals ----------------------


class Terminal:
    """`fleet demo` on a pseudo-terminal of a fixed size, with its output collected."""

    def __init__(self, *args: str, cols: int = 120, rows: int = 40) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "TEXTUAL_ANIMATIONS": "none"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleettui", "demo", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.out = b""
        # what the terminal shows: the dashboard writes only the characters that changed, so
        # a text typed or updated bit by bit is never one run in the raw output
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)

    def pump(self, timeout: float = 0.05) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                chunk = os.read(self.master, 65536)
                self.out += chunk
                self.stream.feed(chunk)
            except OSError:  # the child closed the terminal
                time.sleep(timeout)

    def wait_for(self, *needles: bytes, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(n in ANSI_RE.sub(b"", self.out) or n in self.shown() for n in needles):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"never saw {needles}: ...{self.out[-1500:]!r}")
            self.pump()

    def shown(self) -> bytes:
        return "\n".join(self.screen.display).encode()

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait_exit(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"did not exit: ...{self.out[-1500:]!r}")
            self.pump()
        return self.proc.returncode

    def started(self) -> tuple[int, Path]:
        """The first agent's pid and the temp dir."""
        m = STARTED_RE.search(self.out)
        assert m, self.out[-1500:]
        return int(m.group(1).split()[0]), Path(m.group(2).decode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def terminal():
    opened: list[Terminal] = []

    def start(*args: str) -> Terminal:
        t = Terminal(*args)
        opened.append(t)
        return t

    yield start
    for t in opened:
        t.close()


def test_demo_dashboard_in_a_terminal_reacts_to_keys_and_quits_cleanly(terminal) -> None:
    term = terminal("--nodes", "3")
    term.wait_for(b"demo-000", b"demo-002", b"ONLINE", b"online 3/3")
    pid, tmp = term.started()
    term.send(b"/")
    term.wait_for(b"word (llama, demo-003)")  # the filter bar's placeholder
    term.send(b"demo-001")  # a bare word, filtered as it is typed
    term.wait_for(b"1 of 3 nodes match", b"filter demo-001 (1/3)")
    term.send(b"\r")
    term.out = b""
    term.wait_for(b"Quit")  # the footer of the table again: the bar is gone
    term.send(b"q")
    assert term.wait_exit() == 0
    assert gone(pid) and not tmp.exists()


@pytest.mark.parametrize(
    ("args", "sig", "status"),
    [
        (("--nodes", "2"), signal.SIGTERM, 128 + signal.SIGTERM),
        (("--nodes", "2"), signal.SIGHUP, 128 + signal.SIGHUP),
        (("--nodes", "2", "--rich"), signal.SIGTERM, 128 + signal.SIGTERM),
        (("--nodes", "2", "--rich"), signal.SIGINT, 0),
    ],
    ids=["tui-sigterm", "tui-sighup", "rich-sigterm", "rich-ctrl-c"],
)
def test_demo_cleans_up_when_interrupted(terminal, args, sig, status) -> None:
    term = terminal(*args)
    term.wait_for(b"demo-001", b"ONLINE")
    pid, tmp = term.started()
    term.proc.send_signal(sig)
    assert term.wait_exit() == status
    if "--rich" not in args:  # the dashboard left the alternate screen: the terminal is usable
        assert b"\x1b[?1049l" in term.out
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid) and not tmp.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_killed_demo_takes_its_agent_along(terminal) -> None:
    """SIGKILL leaves no chance to clean up; the agent still must not outlive the demo."""
    term = terminal("--nodes", "1", "--rich")
    term.wait_for(b"demo", b"ONLINE")
    pid, tmp = term.started()
    term.proc.kill()
    term.wait_exit()
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid)
    shutil.rmtree(tmp, ignore_errors=True)  # the one thing SIGKILL cannot let the demo do


def test_killing_one_demo_node_turns_only_its_row_offline() -> None:
    import anyio

    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.state import NodeState

    async def watch(demo: DemoFleet) -> dict[str, NodeState]:
        cfg = load_fleet_config(demo.config_path)
        async with FleetAggregator(cfg) as agg:
            with anyio.fail_after(20):
                while any(v.state is not NodeState.ONLINE for v in agg.snapshots()):
                    await anyio.sleep(0.1)
                demo.procs[1].kill()
                before = {v.name: v.last_seen for v in agg.snapshots()}
                while True:
                    views = {v.name: v for v in agg.snapshots()}
                    fresh = all(
                        views[n].last_seen and views[n].last_seen > (before[n] or 0)
                        for n in ("demo-000", "demo-002")
                    )
                    if views["demo-001"].state is NodeState.OFFLINE and fresh:
                        return {n: v.state for n, v in views.items()}
                    await anyio.sleep(0.1)

    with DemoFleet(3) as demo:
        states = anyio.run(watch, demo)
    assert states == {
        "demo-000": NodeState.ONLINE,
        "demo-001": NodeState.OFFLINE,
        "demo-002": NodeState.ONLINE,
    }


def test_demo_read_only_offers_and_runs_no_action(terminal) -> None:
    from fleettui.cli import build_parser

    for argv in (["--read-only", "demo"], ["demo", "--read-only"]):  # either place
        assert build_parser().parse_args(argv).read_only is True
    term = terminal("--nodes", "1", "--read-only")
    term.wait_for(b"demo-000", b"ONLINE", b"read-only")
    assert b"Restart" not in ANSI_RE.sub(b"", term.out)  # the footer offers no action key
    term.send(b"R")
    term.wait_for(b"is disabled")
    term.send(b"q")
    assert term.wait_exit() == 0
