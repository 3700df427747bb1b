"""The Rich fallback: the same table without Textual, live or once, on real agents."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from fleettui.aggregator.state import NodeState
from fleettui.testing.sample import SAMPLE_NOW, SampleSource, generated_views, sample_views
from fleettui.views.rich import fleet_table, fleet_view, print_once, run_live


def render(obj, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(obj)
    return console.file.getvalue()


def test_table_fits_the_terminal_width() -> None:
    wide = render(fleet_table(sample_views(), SAMPLE_NOW, 200), 200)
    header = wide.splitlines()[0]
    for label in ("Node", "Role", "State", "Engines", "Models", "GPU", "Power", "Cost 7d"):
        assert label in header
    assert "Audit" in header and "RTT" in header and "Seen" in header
    assert "BROKEN" in wide and "OFFLINE" in wide and "3m ago" in wide
    assert max(len(line) for line in wide.splitlines()) <= 200

    narrow = render(fleet_table(sample_views(), SAMPLE_NOW, 80), 80)
    header = narrow.splitlines()[0]
    assert "Power" in header and "State" in header
    assert "Cost 7d" not in header and "Role" not in header
    assert max(len(line) for line in narrow.splitlines()) <= 80


def test_once_to_a_file_prints_every_column_without_colour() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80)  # not a terminal, whatever COLUMNS says
    print_once(console, sample_views(), SAMPLE_NOW)
    text = out.getvalue()
    assert "\x1b[" not in text
    header = text.splitlines()[0]
    assert "Role" in header and "Cost 7d" in header and "Seen" in header
    assert "mac-studio-1" in text and "online 6/10" in text


@pytest.mark.anyio
async def test_live_redraws_on_changes() -> None:
    source = SampleSource()
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=True, color_system=None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: run_live(source, console, clock=lambda: SAMPLE_NOW, min_refresh_s=0.01)
        )
        with anyio.fail_after(5):
            while "gpu-a1" not in out.getvalue():
                await anyio.sleep(0.02)
            source.update("gpu-a1", latency_ms=4321.0)
            while "4.3 s" not in out.getvalue():
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()


# --- the real command, on real agents ------------------------------------------------------


def write_config(path: Path, nodes: dict[str, str]) -> Path:
    lines = ["[defaults]", "poll_interval_s = 0.5", "http_timeout_s = 2", ""]
    for name, url in nodes.items():
        lines += ["[[node]]", f'name = "{name}"', f'url = "{url}"', 'role = "inference"', ""]
    path.write_text("\n".join(lines))
    return path


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens here any more


PROBE = (
    "import sys\n"
    "from fleettui.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('TEXTUAL-LOADED' if 'textual' in sys.modules else 'NO-TEXTUAL', file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def fleet(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_rich_once_against_real_agents_never_loads_textual(sim_agent, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "projects.toml", {"alpha": sim_agent.url, "gone": dead_url()})
    started = time.monotonic()
    out = fleet("--rich", "--once", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "NO-TEXTUAL" in out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert "ONLINE" in rows["alpha"] and "ollama·" in rows["alpha"]
    assert "OFFLINE" in rows["gone"]
    assert "online 1/2" in out.stdout and "1 offline" in out.stdout
    assert time.monotonic() - started < 30


def test_plain_fleet_with_stdout_piped_behaves_like_rich_once(sim_agent, tmp_path) -> None:
    cfg = write_config(tmp_path / "projects.toml", {"alpha": sim_agent.url})
    out = fleet("--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "NO-TEXTUAL" in out.stderr
    assert out.stdout.splitlines()[0].split()[:3] == ["Node", "Role", "State"]
    assert "alpha" in out.stdout and "ONLINE" in out.stdout


def test_first_run_shows_the_two_ways_on(xdg_home: Path) -> None:
    out = fleet()
    assert out.returncode == 0, out.stderr
    assert "no nodes configured yet" in out.stdout
    assert "fleet add NAME --url URL" in out.stdout and "fleet demo" in out.stdout
    assert str(xdg_home / ".config" / "fleettui" / "projects.toml") in out.stdout


def test_unreadable_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "projects.toml"
    bad.write_text("[[node]\nname = ")
    out = fleet("--config", str(bad))
    assert out.returncode == 2
    assert str(bad) in out.stderr and "not valid TOML" in out.stderr
    missing = fleet("--config", str(tmp_path / "nope.toml"))  # a typo, not a first run
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"fleet: --config {tmp_path / 'nope.toml'}: no such file")


# --- the shared cells and sparklines -------------------------------------------------------


def test_fit_columns_drop_order() -> None:
    from fleettui.views.columns import fit_columns

    for width in (60, 80, 100, 120, 200):
        widths = fit_columns(width)
        assert {"sel", "node", "state"} <= set(widths)
        assert sum(w + 1 for w in widths.values()) <= max(width, 30)
    for width in (80, 120):  # what the issue asks to keep at both widths
        assert {"state", "why", "gpu", "power"} <= set(fit_columns(width - 2))
    assert {"engines", "mem", "models", "cpu"} <= set(fit_columns(118))
    assert "engines" not in fit_columns(78) and "seen" not in fit_columns(118)
    assert len(fit_columns(200)) == 16  # every column but the optional Fit


def test_live_view_draws_what_fits_problem_nodes_first() -> None:
    views = generated_views(80)
    bad = [v.name for v in views if v.state is not NodeState.ONLINE]
    assert 0 < len(bad) < 20
    console = Console(file=io.StringIO(), width=160, height=30, color_system=None)
    console.print(fleet_view(views, SAMPLE_NOW, console.width, "fleet", console.height))
    lines = console.file.getvalue().splitlines()
    assert len(lines) <= 30
    rows = [line.split()[0] for line in lines[3:-2]]  # title, header, rule ... more, totals
    assert rows[: len(bad)] == bad  # the nodes that need attention come first
    assert len(rows) == 30 - 5
    assert lines[-2].startswith(f"… {80 - len(rows)} more nodes, all ONLINE")
    assert "online" in lines[-1] and f"/{len(views)}" in lines[-1]  # totals count every node
    few = Console(file=io.StringIO(), width=160, height=30, color_system=None)
    few.print(fleet_view(views[:10], SAMPLE_NOW, few.width, "fleet", few.height))
    assert "more nodes" not in few.file.getvalue()


def test_the_live_view_exits_quietly_when_its_terminal_closes(tmp_path: Path) -> None:
    """The terminal goes away (an SSH session drops): writes fail with EIO. One line or none,
    never a traceback."""
    import pty

    cfg = tmp_path / "projects.toml"
    cfg.write_text('[[node]]\nname = "dead"\nurl = "http://127.0.0.1:1"\n')
    master, slave = pty.openpty()
    err = tmp_path / "stderr"
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleettui", "--config", str(cfg)],
            stdin=slave,
            stdout=slave,
            stderr=err_file,  # not a terminal: the Rich live view, not Textual
            env={**os.environ, "TERM": "xterm"},
        )
    os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 20
        while seen.count(b"dead") < 2 and time.monotonic() < deadline:  # a second frame:
            seen += os.read(master, 65536)  # its signal handlers are in place by then
        assert seen.count(b"dead") >= 2
    finally:
        os.close(master)  # the terminal is gone...
    proc.send_signal(signal.SIGHUP)  # ...and the kernel hangs up its session
    code = proc.wait(timeout=20)
    text = err.read_text()
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert code == 128 + signal.SIGHUP and text.count("\n") <= 1, (code, text)


def test_totals_say_what_the_summed_watts_cover() -> None:
    from fleettui.testing.sample import sample_views
    from fleettui.views.columns import fleet_totals, totals_text

    views = sample_views()
    mixed = fleet_totals(views)
    assert mixed.scope == "mixed" and "W (mixed)" in totals_text(mixed).plain
    gcm = [v for v in views if v.facts and v.facts.scope == "GCM"]
    assert fleet_totals(gcm).scope == "GCM" and "W (GCM)" in totals_text(fleet_totals(gcm)).plain


def test_skipped_config_entries_are_counted_in_the_rich_totals() -> None:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_once(console, sample_views(), now=SAMPLE_NOW, skipped=2)
    last = console.file.getvalue().strip().splitlines()[-1]
    assert last.startswith("online 6/12") and "2 skipped" in last


def test_the_live_view_quits_on_q_and_gives_the_terminal_back(tmp_path: Path) -> None:
    """On a real terminal (a pty) `q` ends `fleet --rich` with status 0, and the terminal's
    modes (echo, line editing) are what they were before it started."""
    import pty
    import termios

    cfg = tmp_path / "projects.toml"
    cfg.write_text('[[node]]\nname = "dead"\nurl = "http://127.0.0.1:1"\n')
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    err = tmp_path / "stderr"
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleettui", "--rich", "--config", str(cfg)],
            stdin=slave,
            stdout=slave,
            stderr=err_file,
            env={**os.environ, "TERM": "xterm"},
        )
    try:
        seen = b""
        deadline = time.monotonic() + 20
        while seen.count(b"dead") < 2 and time.monotonic() < deadline:  # a second frame:
            seen += os.read(master, 65536)  # the key reader is in place by then
        assert b"q or Ctrl-C quits" in seen
        during = termios.tcgetattr(slave)
        assert not during[3] & termios.ECHO and not during[3] & termios.ICANON  # cbreak
        os.write(master, b"x")  # any other key does nothing
        time.sleep(0.3)
        assert proc.poll() is None
        os.write(master, b"q")
        assert proc.wait(timeout=10) == 0
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    assert "Traceback" not in err.read_text()


def test_the_live_view_with_stdin_not_a_terminal_quits_on_ctrl_c_only(tmp_path: Path) -> None:
    """stdin a pipe, stdout a terminal: no key reader (a `q` in the pipe is not a key), the
    title says Ctrl-C, and Ctrl-C (SIGINT) ends it with status 0."""
    import pty

    cfg = tmp_path / "projects.toml"
    cfg.write_text('[[node]]\nname = "dead"\nurl = "http://127.0.0.1:1"\n')
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleettui", "--rich", "--config", str(cfg)],
        stdin=subprocess.PIPE,
        stdout=slave,
        stderr=subprocess.PIPE,
        env={**os.environ, "TERM": "xterm"},
    )
    try:
        seen = b""
        deadline = time.monotonic() + 20
        while seen.count(b"dead") < 2 and time.monotonic() < deadline:
            seen += os.read(master, 65536)
        assert b"Ctrl-C quits" in seen and b"q or" not in seen
        assert proc.stdin is not None
        proc.stdin.write(b"q\n")
        proc.stdin.flush()
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()
