"""`fleet push` and `fleet bulk` as a person runs them: real processes, real agents, a dead port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from actionfleet import ActionFleet
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.state import ChainStatus
from fleettui.config import load_fleet_config


@pytest.fixture
def projects(fleet: ActionFleet, tmp_path: Path) -> Path:
    token = tmp_path / "token"
    token.write_text(fleet.secret + "\n")
    token.chmod(0o600)
    nodes = {**fleet.urls, "dead": fleet.dead_url}
    body = "[defaults]\npoll_interval_s = 0.5\nhttp_timeout_s = 2\n"
    for i, (name, url) in enumerate(nodes.items()):
        role = "inference" if i % 2 == 0 else "embeddings"
        body += (
            f'\n[[node]]\nname = "{name}"\nurl = "{url}"\nrole = "{role}"\ntoken_file = "{token}"\n'
        )
    path = tmp_path / "projects.toml"
    path.write_text(body)
    return path


def fleet_cli(
    projects: Path, *args: str, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fleettui", *args, "--config", str(projects)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=stdin,
    )


def test_bulk_restart_yes_json_three_ok_one_failed(fleet, projects) -> None:
    r = fleet_cli(projects, "bulk", "restart", "--engine", "ollama", "--all", "--yes", "--json")
    assert r.returncode == 1, r.stderr
    env = json.loads(r.stdout)
    assert env["action"] == "restart" and env["engine"] == "ollama"
    assert env["targets"] == ["act-000", "act-001", "act-002", "dead"]
    assert env["succeeded"] == ["act-000", "act-001", "act-002"]
    assert env["failed"] == {"dead": "connection refused"}
    assert sorted(fleet.calls()) == [["ollama"]] * 3
    assert fleet.secret not in r.stdout + r.stderr

    async def chains() -> dict[str, tuple[ChainStatus, int]]:
        cfg = load_fleet_config(projects)
        async with FleetAggregator(cfg) as agg:
            with anyio.fail_after(15):
                while True:
                    views = {v.name: v for v in agg.snapshots() if v.name != "dead"}
                    if all(v.chain is ChainStatus.OK and v.snapshot for v in views.values()):
                        return {n: (v.chain, v.snapshot.audit.seq) for n, v in views.items()}
                    await anyio.sleep(0.1)

    verified = anyio.run(chains)
    assert verified == {n: (ChainStatus.OK, 2) for n in fleet.urls}  # started, ok


def test_bulk_without_yes_refuses_when_not_interactive(fleet, projects) -> None:
    r = fleet_cli(projects, "bulk", "restart", "--engine", "ollama", "--all")
    assert r.returncode == 2
    assert "without confirmation" in r.stderr and "act-000" in r.stderr
    assert fleet.calls() == []


def test_bulk_asks_an_interactive_terminal(fleet, projects) -> None:
    for answer, code, calls in ((b"n\n", 2, 0), (b"y\n", 0, 1)):
        master, slave = os.openpty()
        try:
            os.write(master, answer)
            r = fleet_cli(
                projects, "bulk", "restart", "--engine", "ollama", "--names", "act-001", stdin=slave
            )
        finally:
            os.close(slave)
            os.close(master)
        assert r.returncode == code, r.stderr
        assert "act-001" in r.stderr and "Proceed?" in r.stdout
        assert len(fleet.calls()) == calls


def test_bad_filter_points_at_the_problem_and_sends_nothing(fleet, projects) -> None:
    r = fleet_cli(
        projects, "bulk", "restart", "--engine", "ollama", "--yes", "--filter", "power>>3"
    )
    assert r.returncode == 2
    assert "bad --filter" in r.stderr and "^" in r.stderr and "power>>3" in r.stderr
    assert fleet.calls() == []
    r = fleet_cli(projects, "bulk", "restart", "--engine", "ollama", "--yes", "--names", "nope")
    assert r.returncode == 2 and "no node named nope" in r.stderr


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        (["--filter", ""], "--filter is empty"),
        (["--filter", " \t"], "--filter is empty"),
        (["--names", ""], "empty name"),
        (["--names", "act-000", "--names", " "], "empty name"),
        (["--names", "act-000,,act-001"], "empty name"),
        ([], "pass --all for every node"),
        (["--all", "--names", "act-000"], "--all cannot be combined"),
        (["--all", "--filter", "state=ONLINE"], "--all cannot be combined"),
    ],
)
def test_an_empty_selection_is_refused_not_the_whole_fleet(fleet, projects, flags, why) -> None:
    r = fleet_cli(projects, "bulk", "restart", "--engine", "ollama", "--yes", *flags)
    assert r.returncode == 2 and why in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert fleet.calls() == []


def test_filter_and_names_pick_targets_dry_run_sends_nothing(fleet, projects) -> None:
    r = fleet_cli(
        projects,
        "bulk",
        "restart",
        "--engine",
        "ollama",
        "--dry-run",
        "--json",
        "--filter",
        "state=ONLINE and role=inference",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["targets"] == ["act-000", "act-002"]
    r = fleet_cli(  # a bare word, as in the dashboard's `/`
        projects,
        "bulk",
        "restart",
        "--engine",
        "ollama",
        "--dry-run",
        "--json",
        "--filter",
        "act-002",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["targets"] == ["act-002"]
    for expr in ("act-002", "not act-002", "act state=ONLINE"):  # unattended: no fuzzy words
        r = fleet_cli(projects, "bulk", "restart", "--engine", "ollama", "--yes", "--filter", expr)
        assert r.returncode == 2, (expr, r.stdout)
        assert "bare word" in r.stderr and "--yes" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = fleet_cli(
        projects,
        "bulk",
        "restart",
        "--engine",
        "ollama",
        "--dry-run",
        "--names",
        "act-001,dead",
        "--names",
        "act-000",
    )
    assert r.returncode == 0 and "act-000, act-001, dead" in r.stdout
    r = fleet_cli(
        projects, "bulk", "restart", "--engine", "ollama", "--yes", "--filter", "name~^act-00[12]$"
    )
    assert r.returncode == 0, r.stderr
    assert len(fleet.calls()) == 2 and "2/2 ok" in r.stdout


def test_push_one_node(fleet, projects) -> None:
    r = fleet_cli(projects, "push", "act-002", "restart", "--engine", "ollama", "--json")
    assert r.returncode == 0, r.stderr
    env = json.loads(r.stdout)
    assert env["succeeded"] == ["act-002"] and env["results"]["act-002"]["audit_seq"] == 2
    r = fleet_cli(projects, "push", "dead", "restart", "--engine", "ollama")
    assert r.returncode == 1 and "connection refused" in r.stdout
    r = fleet_cli(projects, "push", "act-002", "restart")
    assert r.returncode == 2 and "restart needs an engine (--engine)" in r.stderr
    assert len(fleet.calls()) == 1


def test_a_token_file_others_can_read_is_never_sent(fleet, projects, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.chmod(0o644)
    r = fleet_cli(projects, "push", "act-000", "restart", "--engine", "ollama", "--json")
    assert r.returncode == 1
    reason = json.loads(r.stdout)["failed"]["act-000"]
    assert f"readable by others, so it is not used (fix: chmod 600 {token})" in reason
    r = fleet_cli(projects, "bulk", "purge", "--all", "--yes")
    assert r.returncode == 1 and f"chmod 600 {token}" in r.stdout + r.stderr
    assert fleet.calls() == []  # nothing reached an agent
    token.chmod(0o600)
    r = fleet_cli(projects, "push", "act-000", "restart", "--engine", "ollama")
    assert r.returncode == 0, r.stdout + r.stderr


def test_failure_reasons_are_said_once_and_fit_a_sent_token(fleet, projects, tmp_path) -> None:
    r = fleet_cli(
        projects, "push", "act-000", "unload", "--engine", "ollama", "--model", "nope:1b", "--json"
    )
    assert r.returncode == 1
    reason = json.loads(r.stdout)["failed"]["act-000"]
    assert reason.count("not resident") == 1, reason
    token = tmp_path / "token"
    token.write_text("tok_wrong.secret\n")  # a token is sent, just not a valid one
    r = fleet_cli(projects, "push", "act-000", "purge", "--json")
    reason = json.loads(r.stdout)["failed"]["act-000"]
    assert reason.startswith("HTTP 401: unauthorized") and "missing, unknown or revoked" in reason
    assert "send" not in reason, reason
