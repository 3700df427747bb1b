"""projects.toml: lenient per-entry validation, token sources, and edits that lose nothing."""

from __future__ import annotations

import os
import stat
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fleettui.config import (
    Defaults,
    FleetConfigError,
    NodeConfig,
    NodeNotFound,
    add_node,
    default_fleet_config_path,
    load_fleet_config,
    remove_node,
)

GOOD = """\
# my fleet
[defaults]
poll_interval_s = 1.5
http_timeout_s = 3

# the big box
[[node]]
name = "gpu1"
url = "http://gpu1.lan:8899/"
role = "inference"
tags = ["rack-a", "h100"]
token_env = "FLEET_TOKEN_GPU1"

[[node]]
name = "mac1"
url = "https://mac1.local:8899"
kind = "asiai"
token_file = "~/tokens/mac1"  # keep it 0600
"""


def write(tmp_path: Path, text: str, name: str = "projects.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    p.chmod(0o600)
    return p


def test_good_file_loads(tmp_path: Path, xdg_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_fleet_config(write(tmp_path, GOOD))
    assert cfg.warnings == [] and cfg.exists
    assert cfg.defaults.poll_interval_s == 1.5 and cfg.defaults.http_timeout_s == 3
    assert cfg.defaults.backoff_min_s == 1.0 and cfg.defaults.backoff_max_s == 30.0
    gpu1, mac1 = cfg.nodes
    assert gpu1.url == "http://gpu1.lan:8899" and gpu1.tags == ["rack-a", "h100"]
    assert gpu1.kind == "fleettui" and mac1.kind == "asiai"
    assert mac1.token_file == xdg_home / "tokens/mac1"
    assert gpu1.has_token and gpu1.resolve_token() is None
    assert gpu1.token_problem() == "environment variable FLEET_TOKEN_GPU1 is not set"
    monkeypatch.setenv("FLEET_TOKEN_GPU1", " s3cret-env \n")
    assert gpu1.resolve_token() == "s3cret-env" and gpu1.token_problem() is None
    (xdg_home / "tokens").mkdir()
    (xdg_home / "tokens/mac1").write_text("s3cret-file\n")
    (xdg_home / "tokens/mac1").chmod(0o644)
    assert mac1.resolve_token() is None  # a secret others can read is not sent
    assert f"readable by others, so it is not used (fix: chmod 600 {mac1.token_file})" in (
        mac1.token_problem() or ""
    )
    (xdg_home / "tokens/mac1").chmod(0o600)
    assert mac1.resolve_token() == "s3cret-file"
    assert mac1.token_problem() is None


def test_broken_entries_become_warnings_and_the_rest_loads(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """\
surprise = 1
[defaults]
poll_interval_s = -1
backoff_max_s = 10

[[node]]
name = "ok1"
url = "http://10.0.0.1:8899"

[[node]]
name = "nourl"

[[node]]
name = "gpu3"
url = "ftp://gpu3"

[[node]]
name = "typo"
url = "http://typo:8899"
tokn_env = "X"

[[node]]
name = "ok1"
url = "http://10.0.0.2:8899"

[[node]]
name = "two-tokens"
url = "http://t:1"
token_env = "A"
token = "B"

[[node]]
name = "bad tag"
url = "http://user:pw@host:1"
tags = ["has space"]

[[node]]
name = "ok2"
url = "http://[::1]:8899"
""",
    )
    cfg = load_fleet_config(p)
    assert [n.name for n in cfg.nodes] == ["ok1", "ok2"]
    assert cfg.defaults.poll_interval_s == 2.0 and cfg.defaults.backoff_max_s == 10
    w = cfg.warnings
    assert f"{p}: unknown top-level key 'surprise' (expected [defaults], [[node]])" in w
    assert any(x.startswith(f"{p}: defaults.poll_interval_s: Input should be greater") for x in w)
    assert f"{p}: node[1] 'nourl': url: Field required; skipped" in w
    assert f"{p}: node[2] 'gpu3': url: must start with http:// or https://; skipped" in w
    assert f"{p}: node[3] 'typo': tokn_env: unknown key (did you mean token_env?); skipped" in w
    assert f"{p}: node[4] 'ok1': name: duplicate of node[0]; skipped" in w
    assert any(x.startswith(f"{p}: node[5] 'two-tokens': (entry): give at most one") for x in w)
    assert f"{p}: node[6] 'bad tag': name: must be 1-63 letters" in " ".join(w)
    assert any("node[6] 'bad tag': url: must not contain credentials" in x for x in w)
    assert any("node[6] 'bad tag': tags: tag 'has space'" in x for x in w)
    assert len(w) == 10
    assert cfg.skipped == [
        "node[1] 'nourl'",
        "node[2] 'gpu3'",
        "node[3] 'typo'",
        "node[4] 'ok1'",
        "node[5] 'two-tokens'",
        "node[6] 'bad tag'",
    ]


def test_unusable_files_raise_naming_the_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "[[node]\nname=", "bad.toml")
    with pytest.raises(FleetConfigError, match=rf"^{bad}: not valid TOML"):
        load_fleet_config(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(FleetConfigError, match="not UTF-8"):
        load_fleet_config(binary)
    huge = write(tmp_path, "[defaults]\npoll_interval_s = 1" + "0" * 5000 + "\n", "huge.toml")
    with pytest.raises(FleetConfigError, match=rf"^{huge}: not valid TOML"):  # past int()'s limit
        load_fleet_config(huge)
    with pytest.raises(FleetConfigError, match="is a directory"):
        load_fleet_config(tmp_path)
    missing = load_fleet_config(tmp_path / "missing.toml")  # a first run, not an error
    assert not missing.exists and missing.nodes == []


def test_inline_token_is_secret_and_file_permissions_are_checked(tmp_path: Path) -> None:
    p = write(tmp_path, '[[node]]\nname = "a"\nurl = "http://a:1"\ntoken = "hunter2-secret"\n')
    cfg = load_fleet_config(p)
    node = cfg.nodes[0]
    assert node.resolve_token() == "hunter2-secret" and node.token_source == "inline"
    assert "hunter2" not in repr(node) and "hunter2" not in str(node.model_dump())
    assert cfg.warnings == []
    p.chmod(0o644)
    assert "readable by others" in load_fleet_config(p).warnings[0]


def test_default_path_order(xdg_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_fleet_config_path() == xdg_home / ".config/fleettui/projects.toml"
    monkeypatch.setenv("FLEET_CONFIG", "~/elsewhere.toml")
    assert default_fleet_config_path() == xdg_home / "elsewhere.toml"
    assert load_fleet_config(None).path == xdg_home / "elsewhere.toml"


def test_defaults_order_checked() -> None:
    with pytest.raises(ValueError, match="backoff_max_s must be >= backoff_min_s"):
        Defaults(backoff_min_s=5, backoff_max_s=1)


def test_add_keeps_comments_and_entries_and_writes_0600(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    p.chmod(0o644)
    add_node(p, NodeConfig(name="gpu9", url="http://gpu9:8899", tags=["x"], token_env="T9"))
    text = p.read_text()
    assert text.startswith(GOOD)  # byte for byte, comments included
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    cfg = load_fleet_config(p)
    assert [n.name for n in cfg.nodes] == ["gpu1", "mac1", "gpu9"] and cfg.warnings == []
    assert cfg.nodes[2].token_env == "T9" and cfg.nodes[2].tags == ["x"]
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".tmp")] == []

    with pytest.raises(FleetConfigError, match="a node named 'gpu9' already exists"):
        add_node(p, NodeConfig(name="gpu9", url="http://other:1"))
    assert load_fleet_config(p).nodes[2].url == "http://gpu9:8899"


def test_add_creates_a_fresh_file(tmp_path: Path) -> None:
    p = tmp_path / "new/dir/projects.toml"
    add_node(p, NodeConfig(name="a", url="http://a:1"))
    assert tomllib.loads(p.read_text()) == {"node": [{"name": "a", "url": "http://a:1"}]}
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_edits_refuse_a_symlink(tmp_path: Path) -> None:
    target = write(tmp_path, GOOD, "real.toml")
    link = tmp_path / "projects.toml"
    link.symlink_to(target)
    with pytest.raises(FleetConfigError, match="symlink"):
        add_node(link, NodeConfig(name="x", url="http://x:1"))
    with pytest.raises(FleetConfigError, match="symlink"):
        remove_node(link, "gpu1")
    assert target.read_text() == GOOD and link.is_symlink()


def test_remove_keeps_everything_else(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + '\n# third\n[[node]]\nname = "c"\nurl = "http://c:1"\n')
    remove_node(p, "mac1")
    text = p.read_text()
    assert "# my fleet" in text and "# the big box" in text and "# third" in text
    assert "mac1" not in text
    assert [n.name for n in load_fleet_config(p).nodes] == ["gpu1", "c"]
    remove_node(p, "c")
    remove_node(p, "gpu1")
    assert load_fleet_config(p).nodes == [] and "poll_interval_s = 1.5" in p.read_text()
    with pytest.raises(NodeNotFound, match="no node named 'gpu1'"):
        remove_node(p, "gpu1")


def test_add_then_remove_gives_back_the_file_byte_for_byte(tmp_path: Path) -> None:
    """tomlkit edits in place: every comment (above a header, after a value, at the end), the
    blank lines and the key order survive an add and a remove of a node in the middle."""
    text = (
        GOOD + '\n# third, kept above its header\n[[node]]\nurl = "http://c:1"\nname = "c"\n# end\n'
    )
    p = write(tmp_path, text)
    add_node(p, NodeConfig(name="d", url="http://d:1"))
    assert p.read_text().startswith(text) and p.read_text().endswith(
        'name = "d"\nurl = "http://d:1"\n'
    )
    remove_node(p, "d")
    remove_node(p, "mac1")
    want = text.replace(
        '[[node]]\nname = "mac1"\nurl = "https://mac1.local:8899"\nkind = "asiai"\n'
        'token_file = "~/tokens/mac1"  # keep it 0600\n',
        "",
    )
    # blank lines may move by one; every other byte is where it was
    got = p.read_text().replace("\n\n\n", "\n\n").rstrip("\n")
    assert got == want.replace("\n\n\n", "\n\n").rstrip("\n")
    assert [n.name for n in load_fleet_config(p).nodes] == ["gpu1", "c"]


def test_remove_from_an_inline_array_layout_rewrites_correctly(tmp_path: Path) -> None:
    p = write(
        tmp_path, 'node = [{name = "a", url = "http://a:1"}, {name = "b", url = "http://b:1"}]\n'
    )
    remove_node(p, "a")
    assert [n.name for n in load_fleet_config(p).nodes] == ["b"]
    add_node(p, NodeConfig(name="c", url="http://c:1"))
    assert [n.name for n in load_fleet_config(p).nodes] == ["b", "c"]


def test_concurrent_adds_lose_nothing(tmp_path: Path) -> None:
    p = tmp_path / "projects.toml"

    def add(i: int) -> None:
        add_node(p, NodeConfig(name=f"n{i}", url=f"http://n{i}:1"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(16)))
    assert sorted(n.name for n in load_fleet_config(p).nodes) == sorted(f"n{i}" for i in range(16))
    assert os.access(p, os.R_OK)


def test_the_example_config_loads_cleanly() -> None:
    example = Path(__file__).resolve().parent.parent / "projects.example.toml"
    cfg = load_fleet_config(example)
    assert cfg.warnings == [] and [n.name for n in cfg.nodes] == ["gpu1", "gpu2"]
    assert cfg.defaults == Defaults()  # the example documents the defaults, it does not change them


def test_an_unknown_key_is_named_without_its_control_characters(tmp_path: Path) -> None:
    p = write(tmp_path, '[[node]]\nname = "a"\nurl = "http://a:1"\n"x\\u001b]0;pwned\\u0007" = 1\n')
    cfg = load_fleet_config(p)
    assert cfg.nodes == [] and cfg.skipped == ["node[0] 'a'"]
    assert "\x1b" not in cfg.warnings[0] and "'x\\x1b]0;pwned\\x07'" in cfg.warnings[0]


def test_add_and_remove_clear_the_temp_files_a_killed_edit_left(tmp_path: Path) -> None:
    """A `fleet add` killed between writing its temp file and renaming it leaves the temp, which
    can hold an inline token; the next edit removes it (only its own pattern, only if stale)."""
    import subprocess
    import sys
    import time

    p = write(tmp_path, GOOD)
    killed = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "from fleettui import fsutil\n"
            "os.replace = lambda *a: time.sleep(60)  # killed before the rename\n"
            "fsutil.atomic_write(sys.argv[1], 'token = \"s3cret\"\\n')\n",
            str(p),
        ]
    )
    deadline = time.monotonic() + 20
    while not (stale := list(tmp_path.glob(f".{p.name}.*.tmp"))):
        assert time.monotonic() < deadline and killed.poll() is None
        time.sleep(0.02)
    killed.kill()
    killed.wait()
    assert "s3cret" in stale[0].read_text()
    old = time.time() - 120
    os.utime(stale[0], (old, old))
    in_flight = tmp_path / f".{p.name}.abcd1234.tmp"  # another edit's, a second old: left alone
    in_flight.write_text("x")
    other = tmp_path / ".other.toml.abcd1234.tmp"  # not this file's
    other.write_text("x")
    os.utime(other, (old, old))
    add_node(p, NodeConfig(name="gpu9", url="http://gpu9:8899"))
    assert not stale[0].exists() and in_flight.exists() and other.exists()
    os.utime(in_flight, (old, old))
    remove_node(p, "gpu9")
    assert not in_flight.exists() and other.exists()
    assert [n.name for n in load_fleet_config(p).nodes] == ["gpu1", "mac1"]
