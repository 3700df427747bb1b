"""The service files under contrib/ run the agent as written.

The systemd unit keeps host, port and config in Environment= lines, so an operator changes them
with a drop-in and never edits ExecStart. This test does what such a drop-in does: it replaces
the port with 0 (a free one), the config and HOME with scratch paths, and the venv path
`/opt/fleettui/bin/fleet` with this venv's `fleet`; then it expands ExecStart the way systemd
does (`${VAR}` is one word, `$VAR` splits on whitespace) and runs it.
"""

from __future__ import annotations

import os
import plistlib
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from fleettui.agent.conns import WANT_NOFILE
from fleettui.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "fleet-agent.service"
PLIST = ROOT / "contrib" / "dev.fleettui.agent.plist"
USER_PLIST = ROOT / "contrib" / "dev.fleettui.agent.user.plist"
INSTALLED = "/opt/fleettui/bin/fleet"
VENV_FLEET = Path(sys.executable).parent / "fleet"


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections -> (key, value) pairs in order; continuation lines joined."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def unit_environment(service: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in service:
        if key == "Environment":
            for assignment in shlex.split(value):
                k, _, v = assignment.partition("=")
                env[k] = v
    return env


def expand_exec(line: str, env: dict[str, str]) -> list[str]:
    """systemd's ExecStart variable expansion for the forms the unit uses."""
    line = line.lstrip("-@:+!")
    assert "%" not in line, "specifiers are not expanded by this test"
    argv: list[str] = []
    for word in shlex.split(line):
        if m := re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word):
            argv += env.get(m.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env[m.group(1)], word))
    return argv


def test_unit_is_hardened_and_unprivileged() -> None:
    service = dict(parse_unit(UNIT.read_text())["Service"])
    assert service["User"] == "fleet" and service["Group"] == "fleet"
    for key, want in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
        "ProtectKernelTunables": "yes",
        "SystemCallFilter": "@system-service",
        "LimitNOFILE": str(WANT_NOFILE),  # room for the connection cap; the agent warns below
    }.items():
        assert service.get(key) == want, key
    rw = [v for k, v in parse_unit(UNIT.read_text())["Service"] if k == "ReadWritePaths"]
    assert "/var/lib/fleettui" in rw
    env = unit_environment(parse_unit(UNIT.read_text())["Service"])
    assert env["FLEET_AGENT_HOST"] == "127.0.0.1"  # never exposed unless the operator says so


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "fleet-agent.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(VENV_FLEET)))
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    complaints = [x for x in (r.stdout + r.stderr).splitlines() if "fleet-agent.service" in x]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr


def test_exec_start_as_written_serves_healthz(xdg_home: Path, tmp_path: Path) -> None:
    service = parse_unit(UNIT.read_text())["Service"]
    [exec_start] = [v for k, v in service if k == "ExecStart"]
    env = unit_environment(service)
    agent_toml = tmp_path / "etc" / "agent.toml"
    agent_toml.parent.mkdir()
    agent_toml.write_text("interval_s = 0.5\nauto_detect = false\n")
    # what `systemctl edit fleet-agent` would put in a drop-in on a test machine
    env |= {"FLEET_AGENT_PORT": "0", "FLEET_AGENT_CONFIG": str(agent_toml), "HOME": str(xdg_home)}
    argv = expand_exec(exec_start, env)
    assert argv[0] == INSTALLED
    argv[0] = str(VENV_FLEET)
    assert argv[1:] == ["agent", "serve", "--host", "127.0.0.1", "--port", "0"]

    serve_as_written(argv, env, "/")


def serve_as_written(argv: list[str], env: dict[str, str], cwd: str) -> None:
    """Run a service file's argv as its supervisor would, check it serves, stop it cleanly."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")} | env
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env,
        cwd=cwd,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        url = ""
        deadline = time.monotonic() + 30
        while not url:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if m := re.search(r"serving \S+ on (http://127\.0\.0\.1:\d+)", line):
                url = m.group(1)
        assert httpx.get(f"{url}/healthz").json()["ok"] is True
        snap = httpx.get(f"{url}/api/v1/snapshot").json()
        assert snap["node"]["simulated"] is False  # the real collectors, as on a node
    finally:
        proc.terminate()  # what `systemctl stop` and `launchctl bootout` send
        rc = proc.wait(timeout=10)
    assert rc == 0  # a clean stop, not death by signal (systemd would log it as a failure)


def test_launchd_plist_runs_the_agent_as_an_unprivileged_user() -> None:
    plist = plistlib.loads(PLIST.read_bytes())
    assert plist["Label"] == "dev.fleettui.agent"
    assert plist["UserName"] == "_fleet" and plist["UserName"] != "root"
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["Umask"] == 0o077
    argv = plist["ProgramArguments"]
    assert argv[0] == INSTALLED
    args = build_parser().parse_args(argv[1:])
    assert (args.agent_cmd, args.host, args.port) == ("serve", "127.0.0.1", 8899)
    assert str(args.config).startswith("/usr/local/etc/fleettui/")
    for limits in ("SoftResourceLimits", "HardResourceLimits"):  # launchd's default is 256
        assert plist[limits]["NumberOfFiles"] == WANT_NOFILE


def test_the_user_launch_agent_runs_as_written_without_root(xdg_home: Path) -> None:
    """The per-user LaunchAgent for Apple Silicon: the user's own job (no UserName, no root),
    its paths under the home directory the install step substitutes, and the agent extra it
    installs brings zeus-apple-silicon on macOS."""
    home = str(xdg_home)
    plist = plistlib.loads(USER_PLIST.read_bytes().replace(b"__HOME__", home.encode()))
    assert plist["Label"] == "dev.fleettui.agent.user" and "UserName" not in plist
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["Umask"] == 0o077 and plist["WorkingDirectory"] == home
    assert plist["StandardOutPath"].startswith(f"{home}/Library/Logs/")
    for limits in ("SoftResourceLimits", "HardResourceLimits"):
        assert plist[limits]["NumberOfFiles"] == WANT_NOFILE
    argv = plist["ProgramArguments"]
    assert argv[0] == f"{home}/.local/fleettui/bin/fleet"
    args = build_parser().parse_args(argv[1:])
    assert (args.agent_cmd, args.host, args.port, args.config) == ("serve", "127.0.0.1", 8899, None)
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "zeus-apple-silicon>=1.0; sys_platform == 'darwin'" in extra["agent"]
    # as launchd runs it: HOME set, the default config under it (none yet: defaults)
    argv[0], argv[argv.index("8899")] = str(VENV_FLEET), "0"
    serve_as_written(argv, {"HOME": home}, plist["WorkingDirectory"])
