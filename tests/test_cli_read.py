"""`fleet ls/status/ping/add/remove` as real subprocesses against real agents."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def fleet(*args: str, config: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEET_CONFIG": str(config), "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "fleettui", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


_HELD: list[socket.socket] = []


def dead_port() -> int:
    """A port that refuses connections: bound, never listening, and held for the session, so
    no agent of a test running beside this one (xdist, other suites) can take it meanwhile."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return s.getsockname()[1]


def write_config(path: Path, nodes: dict[str, str], extra: str = "") -> Path:
    text = "[defaults]\nhttp_timeout_s = 2\n" + extra
    for name, url in nodes.items():
        text += f'\n[[node]]\nname = "{name}"\nurl = "{url}"\n'
    path.write_text(text)
    return path


@pytest.fixture
def two_sims(agent_factory):  # type: ignore[no-untyped-def]
    return agent_factory("--simulate", "--nodes", "2", "--interval", "0.3", nodes=2)


def test_status_json_two_online_one_offline_exits_1(two_sims, tmp_path: Path) -> None:
    nodes = {**two_sims.urls, "dead": f"http://127.0.0.1:{dead_port()}"}
    cfg = write_config(tmp_path / "p.toml", nodes)
    r = fleet("status", "--json", "--timeout", "5", config=cfg)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    states = {n["name"]: n["state"] for n in out["nodes"]}
    assert states == {**dict.fromkeys(two_sims.urls, "ONLINE"), "dead": "OFFLINE"}
    assert out["summary"] == {
        "total": 3,
        "online": 2,
        "degraded": 0,
        "offline": 1,
        "initializing": 0,
        "skipped": 0,
    }
    by = {n["name"]: n for n in out["nodes"]}
    assert by["dead"]["reasons"] == ["connection refused"]
    sim = by[next(iter(two_sims.urls))]
    assert sim["latency_ms"] > 0 and sim["power_w"] > 0 and sim["engines"]
    assert (sim["power_scope"], sim["power_source"]) == ("wall", "simulated")
    assert sim["audit"]["chain"] == "ok"

    table = fleet("status", "--timeout", "5", config=cfg)
    assert table.returncode == 1
    assert "2/3 ONLINE, 1 OFFLINE" in table.stdout and "connection refused" in table.stdout


def test_status_all_online_exits_0_and_ping(two_sims, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "p.toml", dict(two_sims.urls))
    r = fleet("status", "--json", config=cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    name = next(iter(two_sims.urls))
    p = fleet("ping", name, config=cfg)
    assert p.returncode == 0 and f"{name} {two_sims.urls[name]}: ONLINE in" in p.stdout
    assert "engines up" in p.stdout


def test_ping_unknown_and_dead(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "p.toml", {"dead": f"http://127.0.0.1:{dead_port()}"})
    r = fleet("ping", "nope", config=cfg)
    assert r.returncode == 2 and "no node named 'nope'" in r.stderr
    r = fleet("ping", "dead", "--json", config=cfg)
    assert r.returncode == 1 and json.loads(r.stdout)["state"] == "OFFLINE"


def test_status_exit_2_only_when_config_unusable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[node]\n")
    r = fleet("status", config=bad)
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    none_valid = tmp_path / "none.toml"
    none_valid.write_text('[[node]]\nname = "x"\nurl = "gopher://x"\n')
    r = fleet("status", config=none_valid)
    assert r.returncode == 2
    assert "node[0] 'x': url: must start with http://" in r.stderr and "no valid node" in r.stderr
    r = fleet("status", config=tmp_path / "missing.toml")
    assert r.returncode == 2 and "fleet add NAME --url URL" in r.stderr
    r = fleet("status", "--timeout", "0", config=bad)  # argparse: before the config
    assert r.returncode == 2 and "--timeout" in r.stderr


def test_ls_first_run_and_no_token_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "projects.toml"
    r = fleet("ls", config=missing)
    assert r.returncode == 0
    assert r.stdout.strip().count("\n") == 0  # one friendly line
    assert "fleet add NAME --url URL" in r.stdout and "fleet demo" in r.stdout

    cfg = write_config(missing, {"a": "http://a:1"})
    with cfg.open("a") as fh:
        fh.write('\n[[node]]\nname = "b"\nurl = "http://b:1"\ntoken = "sup3r-secret-value"\n')
        fh.write('\n[[node]]\nname = "c"\nurl = "http://c:1"\ntoken_env = "C_TOKEN"\n')
        fh.write('\n[[node]]\nname = "d"\nurl = "nope"\n')
    cfg.chmod(0o600)
    r = fleet("ls", "--json", config=cfg)
    assert r.returncode == 0 and "sup3r" not in r.stdout + r.stderr
    out = json.loads(r.stdout)
    tok = {n["name"]: (n["token_configured"], n["token_source"]) for n in out["nodes"]}
    assert tok == {"a": (False, None), "b": (True, "inline"), "c": (True, "env C_TOKEN")}
    assert out["warnings"] == [
        f"{cfg}: node[3] 'd': url: must start with http:// or https:// "
        "(did you mean 'http://nope'?); skipped"
    ]
    r = fleet("ls", config=cfg)
    assert r.returncode == 0 and "sup3r" not in r.stdout + r.stderr
    assert "inline" in r.stdout and "c: token: environment variable C_TOKEN is not set" in r.stdout
    assert "warning:" in r.stderr and "node[3] 'd'" in r.stderr


def test_add_and_remove(tmp_path: Path) -> None:
    cfg = tmp_path / "conf/projects.toml"
    r = fleet(
        "add", "gpu1", "--url", "http://gpu1:8899", "--tag", "a", "--token-env", "T", config=cfg
    )
    assert r.returncode == 0 and "added gpu1" in r.stdout, r.stderr
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    r = fleet("add", "gpu1", "--url", "http://other:1", config=cfg)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = fleet("add", "gpu2", "--url", "gpu2:8899", config=cfg)
    assert r.returncode == 2 and "--url: must start with http://" in r.stderr
    r = fleet("add", "gpu2", "--url", "http://gpu2:1", "--kind", "nonsense", config=cfg)
    assert r.returncode == 2 and "--kind" in r.stderr
    r = fleet("ls", "--json", config=cfg)
    assert [n["name"] for n in json.loads(r.stdout)["nodes"]] == ["gpu1"]
    r = fleet("remove", "gpu1", config=cfg)
    assert r.returncode == 0 and "removed gpu1" in r.stdout
    r = fleet("remove", "gpu1", config=cfg)
    assert r.returncode == 1 and "no node named 'gpu1'" in r.stderr
    link = tmp_path / "link.toml"
    link.symlink_to(cfg)
    r = fleet("add", "x", "--url", "http://x:1", config=link)
    assert r.returncode == 2 and "symlink" in r.stderr


def test_skipped_entries_fail_status_and_are_counted(sim_agent, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "p.toml", sim_agent.urls)
    with cfg.open("a") as fh:
        fh.write('\n[[node]]\nname = "typo"\nurl = "http://127.0.0.1:1"\ntokn_env = "T"\n')
        fh.write('\n[[node]]\nname = "noscheme"\nurl = "gpu1.lan:8899"\n')
    r = fleet("status", "--timeout", "5", config=cfg)
    assert r.returncode == 1  # the one configured agent answers, but two nodes are not watched
    assert "1/3 ONLINE, 2 SKIPPED" in r.stdout
    assert "tokn_env: unknown key (did you mean token_env?); skipped" in r.stderr
    assert "did you mean 'http://gpu1.lan:8899'?" in r.stderr
    doc = json.loads(fleet("status", "--json", "--timeout", "5", config=cfg).stdout)
    assert doc["summary"]["total"] == 3 and doc["summary"]["skipped"] == 2
    assert doc["skipped"] == ["node[1] 'typo'", "node[2] 'noscheme'"]
    assert len(doc["warnings"]) == 2


def test_a_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    for args in (["--config", str(missing), "ls"], ["ls", "--config", str(missing)]):
        r = subprocess.run(
            [sys.executable, "-m", "fleettui", *args], capture_output=True, text=True, timeout=30
        )
        assert (
            r.returncode == 2
            and r.stderr
            == f"fleet: --config {missing}: no such file (`fleet add ... --config` creates one)\n"
        )
    r = subprocess.run(
        [sys.executable, "-m", "fleettui", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "no such file" in r.stderr


def test_config_paths_that_cannot_be_written_are_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for path, why in (
        (tmp_path / "file" / "p.toml", "a parent of it is a file, not a directory"),
        (Path("/proc/nonexistent/p.toml"), "cannot create /proc/nonexistent"),
        (Path("/sys/p.toml"), "cannot create /sys/.p.toml.lock"),  # read-only even for root
        (tmp_path, "is a directory, not a file"),
    ):
        r = fleet("add", "x", "--url", "http://x:1", config=path)
        assert r.returncode == 2 and why in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert "Traceback" not in r.stderr


def test_add_names_the_flag_and_rejects_a_multiline_role(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    r = fleet("add", "x", "--url", "http://x:1", "--tag", "", config=cfg)
    assert r.returncode == 2 and r.stderr.startswith("fleet: --tag: tag ''"), r.stderr
    r = fleet("add", "x", "--url", "http://x:1", "--role", "a\nwarning: forged", config=cfg)
    assert r.returncode == 2 and r.stderr.startswith("fleet: --role: must be one line"), r.stderr
    r = fleet("add", "x", "--url", "http://::1:8899", config=cfg)
    assert r.returncode == 2 and "brackets: http://[::1]:8899" in r.stderr
    r = fleet("add", "x", "--url", "http://[::1]:8899", config=cfg)
    assert r.returncode == 0 and 'url = "http://[::1]:8899"' in cfg.read_text()


def test_piped_tables_do_not_wrap_and_one_node_is_singular(tmp_path: Path) -> None:
    long_role = "embeddings-and-reranking-for-the-search-cluster-in-rack-b"
    cfg = write_config(tmp_path / "p.toml", {"only": f"http://{'h' * 60}.lan:8899"})
    cfg.write_text(cfg.read_text() + f'role = "{long_role}"\n')
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # a pipe, not a terminal
    r = subprocess.run(
        [sys.executable, "-m", "fleettui", "ls", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("1 node in ")
    row = next(line for line in lines if "only" in line)
    assert long_role in row and len(row) > 80


def test_ping_checks_the_audit_chain_of_a_fleettui_node(sim_agent, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "p.toml", sim_agent.urls)
    r = fleet("ping", "alpha", "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["audit"]["chain"] == "ok"  # not "n/a": the node keeps one


def test_a_read_token_others_can_read_is_not_sent_and_the_reason_says_so(
    agent_factory, tmp_path: Path
) -> None:
    from fleettui.agent.tokens import create_token, tokens_path

    agent_toml = tmp_path / "agent" / "agent.toml"
    agent_toml.parent.mkdir()
    agent_toml.write_text("read_token_required = true\n")
    _, secret = create_token(tokens_path(agent_toml), "reader")
    agent = agent_factory("--simulate", "--name", "locked", "--config", str(agent_toml))
    token = tmp_path / "token"
    token.write_text(secret + "\n")
    token.chmod(0o644)
    cfg = write_config(tmp_path / "p.toml", {})
    cfg.write_text(
        cfg.read_text()
        + f'\n[[node]]\nname = "locked"\nurl = "{agent.urls["locked"]}"\ntoken_file = "{token}"\n'
    )
    doc = json.loads(fleet("status", "--json", "--timeout", "5", config=cfg).stdout)
    [node] = doc["nodes"]
    assert node["state"] != "ONLINE"
    assert any(f"chmod 600 {token}" in r for r in node["reasons"]), node["reasons"]
    token.chmod(0o600)
    doc = json.loads(fleet("status", "--json", "--timeout", "5", config=cfg).stdout)
    assert doc["nodes"][0]["state"] == "ONLINE", doc["nodes"][0]["reasons"]
