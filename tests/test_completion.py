"""Shell completion generated from the parser, driven through real bash; `fleet --json`."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleettui.cli import build_parser
from fleettui.completion import FILES, NODES, bash, fish, walk, zsh

BIN = Path(sys.executable).parent


def fleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleettui", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def script() -> str:
    r = fleet("completion", "bash")
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "projects.toml"
    cfg.write_text(
        '[[node]]\nname = "gpu1"\nurl = "http://127.0.0.1:1"\n'
        '[[node]]\nname = "gpu2"\nurl = "http://127.0.0.1:2"\n'
        '[[node]]\nname = "mac"\nurl = "http://127.0.0.1:3"\nkind = "asiai"\n'
    )
    return cfg


def complete(script: str, config: Path, *words: str, cwd: Path | None = None) -> list[str]:
    """Run the bash completion function for `fleet WORDS...` (the last word is being typed)."""
    line = ["fleet", *words]
    body = (
        script
        + f"\nCOMP_WORDS=({' '.join(shlex.quote(w) for w in line)})\n"
        + f"COMP_CWORD={len(line) - 1}\n_fleet\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    )
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "FLEET_CONFIG": str(config),
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    r = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", body],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=cwd,
    )
    assert r.returncode == 0 and not r.stderr, r.stderr
    return sorted(x for x in r.stdout.splitlines() if x)


def test_bash_completes_commands_options_choices_and_nodes(
    script: str, config: Path, tmp_path: Path
) -> None:
    c = lambda *w: complete(script, config, *w)  # noqa: E731
    top = c("")
    assert {"agent", "status", "ls", "bulk", "export", "completion"} <= set(top)
    assert c("ag") == ["agent"]
    assert c("agent", "") == ["audit", "join", "serve", "token"]
    assert c("agent", "token", "r") == ["revoke", "rotate"]
    assert c("status", "--") == ["--config", "--full-audit", "--help", "--json", "--timeout"]
    assert c("add", "new", "--kind", "") == ["asiai", "fleettui", "ollama"]
    assert c("bulk", "") == ["load", "purge", "restart", "start", "stop", "unload"]
    assert c("bulk", "--engine", "ollama", "re") == ["restart"]  # the option's value is skipped
    assert c("bulk", "restart", "--names", "") == ["gpu1", "gpu2", "mac"]
    assert c("push", "") == ["gpu1", "gpu2", "mac"]
    assert c("push", "gpu1", "st") == ["start", "stop"]
    assert c("ping", "g") == ["gpu1", "gpu2"]
    assert c("fit", "llama3.1:8b", "--node", "") == ["gpu1", "gpu2", "mac"]
    assert c("fit", "m", "--kv-type", "q4") == ["q4_0", "q4_1"]
    assert c("add", "") == []  # a new name: nothing to offer
    assert c("--config", str(config), "status", "--j") == ["--json"]
    assert c("completion", "") == ["bash", "fish", "zsh"]
    assert c("export", "--listen", "") == []
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "agent.toml").write_text("")
    got = complete(script, config, "agent", "serve", "--config", "files/a", cwd=tmp_path)
    assert got == ["files/agent.toml"]


def test_scripts_cover_every_command_of_the_parser() -> None:
    cmds = walk(build_parser())
    paths = {c.path for c in cmds}
    assert {"", "agent token create", "bulk", "export", "completion"} <= paths
    z, f, b = zsh(cmds), fish(cmds), bash(cmds)
    assert "compdef _fleet fleet" in z and "'rotate:revoke a token and issue" in z
    assert "complete -c fleet -n '__fleet_pos \\'bulk\\' 0' -a 'purge unload load stop start" in f
    assert "-l kind -x -a 'fleettui asiai ollama'" in f
    assert f'"{FILES}") _files' in z and f'"{NODES}") compadd' in z
    assert f'"{FILES}") compopt' in b and f'"{NODES}") COMPREPLY' in b
    assert FILES not in f and NODES not in f  # fish: -F and `fleet completion --nodes`
    assert "-l config -r -F" in f and "(fleet completion --nodes 2>/dev/null)" in f


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_parse(shell: str) -> None:
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} not installed")
    r = fleet("completion", shell)
    check = subprocess.run([exe, "-n"], input=r.stdout, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_completion_nodes_and_usage(config: Path, tmp_path: Path) -> None:
    r = fleet("completion", "--nodes", "--config", str(config))
    assert r.stdout.split() == ["gpu1", "gpu2", "mac"]
    r = fleet("completion", "--nodes", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 0 and r.stdout == ""
    r = fleet("completion")
    assert r.returncode == 2 and "name a shell" in r.stderr
    r = fleet("completion", "tcsh")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_dashboard_json_is_status_json(config: Path) -> None:
    r = fleet("--json", "--config", str(config))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) == {"config", "summary", "nodes", "warnings", "skipped"}
    assert [n["name"] for n in doc["nodes"]] == ["gpu1", "gpu2", "mac"]
    assert {n["state"] for n in doc["nodes"]} == {"OFFLINE"}
    assert doc["summary"]["offline"] == 3
