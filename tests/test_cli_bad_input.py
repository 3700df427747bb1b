"""Every `fleet` command against a table of bad inputs: one line naming what is wrong, exit 2
(or the command's documented code), never a traceback.

The commands, their options and positionals come from the argparse parser itself, so a command
added later is covered without touching this file. In-process (cli.main, as the `fleet` script
runs it): an exception escaping a command fails the test just as a traceback would. The
commands that serve forever when they accept their input run as subprocesses with a deadline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleettui import cli

NODE = "gpu1"
DEAD = "http://127.0.0.1:1"  # nothing listens: a poll fails at once
SERVES = {"agent serve", "export", "demo"}  # run forever when they accept their input
# Documented exit codes other than 2: `fleet remove` of a name the file does not hold is
# "nothing to remove" (1, docs/fleet-config.md).
CODES: dict[str, set[int]] = {"remove": {1, 2}}
# Values every valid command line needs (the mutations replace one of them at a time).
GOOD_VALUES = {"url": "http://127.0.0.1:1", "label": "ci", "listen": "127.0.0.1:0"}
NUMBER_BAD = ["abc", "-5", "nan", "1e999", ""]
TEXT_BAD = ["", "two\nlines", "\x1b]52;c;aGk=\x07"]


@dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]
    parser: argparse.ArgumentParser

    @property
    def name(self) -> str:
        return " ".join(self.path)


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[Leaf]:
    """Every runnable command: `fleet` itself and each subcommand without subcommands."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    out = [Leaf(path, parser)] if not path or not subs else []
    for action in subs:
        for name, sub in action.choices.items():
            out += leaves(sub, (*path, name))
    return out


def _takes_value(a: argparse.Action) -> bool:
    return bool(a.option_strings) and a.nargs != 0 and a.help != argparse.SUPPRESS


def _is_path(a: argparse.Action) -> bool:
    return a.type is Path


def _is_number(a: argparse.Action) -> bool:
    if a.type in (int, float):
        return True
    return getattr(a.type, "__name__", "") in ("Port", "IntervalS", "SimNodes", "TimeoutS")


def _good(a: argparse.Action) -> str:
    if a.choices:
        return str(next(iter(a.choices)))
    return GOOD_VALUES.get(a.dest, NODE)


def baseline(leaf: Leaf) -> list[tuple[argparse.Action | None, list[str]]]:
    """The shortest valid command line, as (action, its words) pieces."""
    parts: list[tuple[argparse.Action | None, list[str]]] = [(None, list(leaf.path))]
    for a in leaf.parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            continue
        if not a.option_strings:
            parts.append((a, [_good(a)] if a.nargs != "?" else []))
        elif a.required:
            parts.append((a, [a.option_strings[-1], _good(a)]))
    return parts


def cases() -> list[tuple[str, list[str], str]]:
    """(id, argv with {config}/{dir}... placeholders, what is wrong)."""
    out = []
    for leaf in leaves(cli.build_parser()):
        base = baseline(leaf)

        def argv(replace: argparse.Action | None, words: list[str], base: list = base) -> list[str]:
            done, line = False, []
            for action, piece in base:
                if action is replace:
                    line += words
                    done = True
                else:
                    line += piece
            return line if done else line + words

        out.append((f"{leaf.name or 'fleet'}:unknown-flag", argv(None, ["--no-such"]), "flag"))
        for a in leaf.parser._actions:
            if isinstance(a, argparse._SubParsersAction) or a.help == argparse.SUPPRESS:
                continue
            flag = a.option_strings[-1] if a.option_strings else None
            if a.option_strings and not _takes_value(a):
                continue
            label = flag or a.dest
            if _is_path(a):
                if a.dest not in ("config", "path"):
                    continue  # a token file may be written after the config that names it
                bad_paths = ["{dir}", "{under_file}", "/proc/nonexistent/x.toml"]
                if a.dest == "config":  # (--path names an audit log: not TOML by design)
                    bad_paths.append("{not_toml}")
                    if leaf.name != "add":  # a typo, not a first run (`add` creates the file)
                        bad_paths.append("{missing}")
                for bad in bad_paths:
                    words = [flag, bad] if flag else [bad]
                    out.append((f"{leaf.name or 'fleet'}:{label}={bad}", argv(a, words), label))
                continue
            if a.choices:
                bad_values = ["no-such-choice"]
            elif _is_number(a):
                bad_values = NUMBER_BAD
            else:
                bad_values = TEXT_BAD
            for bad in bad_values:
                words = [flag, bad] if flag else [bad]
                out.append((f"{leaf.name or 'fleet'}:{label}={bad!r}", argv(a, words), label))
    return out


CASES = cases()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A fleet config with one dead node, an agent.toml, and the bad paths, under tmp_path;
    every XDG dir points there too, so no case touches the real home."""
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("FLEET_CONFIG", raising=False)
    monkeypatch.delenv("FLEET_AGENT_CONFIG", raising=False)
    config = tmp_path / "projects.toml"
    config.write_text(f'[[node]]\nname = "{NODE}"\nurl = "{DEAD}"\n')
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("")
    (tmp_path / "bad.toml").write_text("[[node]\n")
    return {
        "config": config,
        "dir": tmp_path / "dir",
        "under_file": tmp_path / "file" / "x.toml",
        "not_toml": tmp_path / "bad.toml",
        "missing": tmp_path / "missing.toml",
    }


def _fill(argv: list[str], env: dict[str, Path]) -> list[str]:
    return [w.format(**{k: str(v) for k, v in env.items()}) if "{" in w else w for w in argv]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    words = {" ".join(argv[i : i + 2]) for i in range(len(argv))} | set(argv[:3])
    if SERVES & words:
        r = subprocess.run(
            [sys.executable, "-m", "fleettui.cli", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            env=os.environ,
        )
        return r.returncode, r.stderr
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    return code, capsys.readouterr().err


def test_the_table_covers_every_command() -> None:
    names = {c[0].split(":")[0] for c in CASES}
    assert {"fleet", "ls", "status", "add", "bulk", "agent serve", "agent token create"} <= names
    assert len(names) == len(leaves(cli.build_parser()))


@pytest.mark.parametrize(("case", "argv", "what"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(
    case: str, argv: list[str], what: str, env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _fill(argv, env)
    if "--config" not in argv and argv[:1] != ["agent"]:
        argv = ["--config", str(env["config"]), *argv]
    code, err = run(argv, capsys)
    assert "Traceback" not in err, err
    assert code in CODES.get(case.split(":")[0], {2}), (code, err)
    if code != 2:
        return  # a documented result, not a usage error
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("fleet"), err


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleettui", "agent", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--interval", "0"], "argument --interval: '0': input should be greater than or equal"),
        (["--interval", "-1"], "argument --interval"),
        (["--simulate", "--nodes", "0"], "argument --nodes: '0'"),
        (["--port", "99999"], "argument --port: '99999': input should be less than or equal"),
        (["--port", "-5"], "argument --port: '-5'"),
        (["--simulate", "--nodes", "2001"], "argument --nodes"),
        (["--simulate", "--nodes", "1000", "--port", "65000"], "past 65535"),
        (["--name", "x"], "--name needs --simulate"),
        (["--host", ""], "argument --host"),
    ],
)
def test_agent_flags_follow_agent_toml_rules(args: list[str], why: str) -> None:
    r = _serve(*args)
    assert r.returncode == 2 and why in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_agent_toml_has_the_same_interval_rule(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("interval_s = 0\n")
    r = _serve("--config", str(cfg))
    assert r.returncode == 2 and "interval_s: Input should be greater than or equal to 0.1" in (
        r.stderr
    )


def test_a_bind_error_names_the_busy_port_and_ipv6_urls_have_brackets() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _serve("--simulate", "--nodes", "2", "--port", str(port - 1))
        if r.returncode == 2 and f":{port - 1}:" in r.stderr:
            pytest.skip(f"port {port - 1} happened to be taken too")
        assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}:" in r.stderr, r.stderr
    if not socket.has_ipv6:
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleettui", "agent", "serve", "--host", "::1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if "serving" not in line:
        pytest.skip("no IPv6 loopback here")
    assert "on http://[::1]:" in line, line


def test_a_reader_that_leaves_early_is_no_traceback() -> None:
    """`fleet completion bash | head -1`: the pipe closes under the writer."""
    import subprocess
    import sys

    p = subprocess.Popen(
        [sys.executable, "-m", "fleettui", "completion", "bash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # before it writes a byte
    err = p.stderr.read().decode()
    assert p.wait(timeout=30) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
