"""Token store and `fleet agent token ...`: real files, real subprocesses, real flock."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fleettui.agent.tokens import (
    LAST_USED_PERSIST_S,
    SECRET_SHAPE_RE,
    TokenError,
    TokenStore,
    create_token,
    list_tokens,
    revoke_token,
    rotate_token,
)


def fleet(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `fleet ARGS` as a subprocess with this process's (relocated) environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "fleettui", *args], capture_output=True, text=True, timeout=60
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def tokens_file(xdg_home: Path) -> Path:
    return xdg_home / ".config" / "fleettui" / "agent" / "tokens.json"


def test_create_prints_secret_once_and_stores_only_a_salted_hash(tokens_file: Path) -> None:
    out = json.loads(fleet("agent", "token", "create", "--label", "ops laptop", "--json").stdout)
    assert set(out) == {"id", "secret"}
    assert SECRET_SHAPE_RE.fullmatch(out["secret"]) and out["secret"].startswith(out["id"] + ".")
    raw = tokens_file.read_text()
    assert out["secret"] not in raw and out["secret"].split(".")[1] not in raw
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    (rec,) = json.loads(raw)["tokens"]
    assert rec["id"] == out["id"] and rec["label"] == "ops laptop"
    assert len(rec["salt"]) == 32 and len(rec["hash"]) == 64
    # The text form shows the secret too, and the two secrets differ.
    text = fleet("agent", "token", "create", "--label", "ci").stdout
    assert "secret:" in text and out["secret"] not in text


def test_list_never_shows_secrets_or_hashes(tokens_file: Path) -> None:
    secret = json.loads(fleet("agent", "token", "create", "--label", "a", "--json").stdout)[
        "secret"
    ]
    stored = json.loads(tokens_file.read_text())["tokens"][0]
    for args in (("--json",), ()):
        out = fleet("agent", "token", "list", *args).stdout
        assert secret not in out and stored["hash"] not in out and stored["salt"] not in out
    rows = json.loads(fleet("agent", "token", "list", "--json").stdout)
    assert rows[0].keys() >= {"id", "label", "created", "last_used", "revoked"}
    assert "hash" not in rows[0] and "salt" not in rows[0]


def test_concurrent_creates_lose_nothing(tokens_file: Path) -> None:
    n = 8
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fleettui", "agent", "token", "create", "--label", f"t{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    labels = sorted(r.label for r in list_tokens(tokens_file))
    assert labels == sorted(f"t{i}" for i in range(n))
    assert len({r.id for r in list_tokens(tokens_file)}) == n


def test_rotate_and_revoke(tokens_file: Path) -> None:
    tid, secret = create_token(tokens_file, "ops")
    out = json.loads(fleet("agent", "token", "rotate", tid, "--json").stdout)
    assert out["revoked"] == tid and out["id"] != tid
    store = TokenStore(tokens_file)
    store.refresh()
    assert not store.check(secret).ok and store.check(secret).reason == "revoked token"
    assert store.check(out["secret"]).ok
    new = {r.id: r for r in list_tokens(tokens_file)}[out["id"]]
    assert new.label == "ops" and new.rotated_from == tid

    r = json.loads(fleet("agent", "token", "revoke", out["id"], "--json").stdout)
    assert r == {"id": out["id"], "revoked": True, "already_revoked": False}
    again = fleet("agent", "token", "revoke", out["id"]).stdout
    assert "already revoked" in again
    store.refresh()
    assert not store.check(out["secret"]).ok

    missing = fleet("agent", "token", "revoke", "tok_00000000", check=False)
    assert missing.returncode == 2 and "no token with id 'tok_00000000'" in missing.stderr
    missing = fleet("agent", "token", "rotate", "nope", check=False)
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_tokens_file_beside_explicit_config(tmp_path: Path, xdg_home: Path) -> None:
    cfg = tmp_path / "etc" / "agent.toml"
    cfg.parent.mkdir()
    cfg.write_text("")
    out = json.loads(
        fleet("agent", "token", "create", "--label", "x", "--config", str(cfg), "--json").stdout
    )
    assert [r.id for r in list_tokens(cfg.parent / "tokens.json")] == [out["id"]]


def test_refuses_symlinked_tokens_file(tokens_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("precious")
    tokens_file.parent.mkdir(parents=True)
    tokens_file.symlink_to(target)
    r = fleet("agent", "token", "create", "--label", "x", check=False)
    assert r.returncode == 2 and "symlink" in r.stderr
    assert target.read_text() == "precious"
    with pytest.raises(TokenError, match="symlink"):
        create_token(tokens_file, "y")


def test_broken_file_is_reported_and_kept(tokens_file: Path) -> None:
    tokens_file.parent.mkdir(parents=True)
    tokens_file.write_text('{"tokens": [{"id": "tok_zz"')
    r = fleet("agent", "token", "create", "--label", "x", check=False)
    assert r.returncode == 2 and str(tokens_file) in r.stderr and "not valid JSON" in r.stderr
    assert tokens_file.read_text() == '{"tokens": [{"id": "tok_zz"'
    r = fleet("agent", "token", "list", check=False)
    assert r.returncode == 2 and str(tokens_file) in r.stderr
    # The agent's store fails closed: no token is accepted while the file is broken.
    store = TokenStore(tokens_file)
    store.refresh()
    assert store.problem and not store.check("tok_00000000." + "a" * 43).ok


@pytest.mark.parametrize("label", ["", "   ", "x" * 101, "bad\nlabel", "tab\there"])
def test_bad_labels_are_refused(tokens_file: Path, label: str) -> None:
    with pytest.raises(TokenError, match="label"):
        create_token(tokens_file, label)
    assert not tokens_file.exists()


def test_check_outcomes(tokens_file: Path) -> None:
    tid, secret = create_token(tokens_file, "a")
    other_id, other = create_token(tokens_file, "b")
    revoke_token(tokens_file, other_id)
    store = TokenStore(tokens_file)
    store.refresh()
    assert store.check(secret).ok and store.check(secret).token_id == tid
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    cases = {
        None: ("missing token", None),
        "": ("missing token", None),
        wrong: ("wrong secret", tid),
        "tok_ffffffff." + "a" * 43: ("unknown token", None),
        "not-a-token": ("unknown token", None),
        other: ("revoked token", other_id),
    }
    for presented, (reason, token_id) in cases.items():
        res = store.check(presented)
        assert not res.ok and res.reason == reason and res.token_id == token_id, presented


def test_revocation_reaches_a_running_store(tokens_file: Path) -> None:
    tid, secret = create_token(tokens_file, "a")
    store = TokenStore(tokens_file)
    store.refresh()
    assert store.check(secret).ok
    rotate_token(tokens_file, tid)
    store.refresh()
    assert not store.check(secret).ok


def test_last_used_is_throttled(tokens_file: Path) -> None:
    tid, _ = create_token(tokens_file, "a")
    store = TokenStore(tokens_file)
    store.refresh()
    t = 1_000_000.0
    assert store.note_use(tid, t) is True  # first use: persist
    store.persist_last_used()
    assert list_tokens(tokens_file)[0].last_used == t
    before = tokens_file.stat().st_mtime_ns
    assert store.note_use(tid, t + 5) is False  # within the minute: no rewrite
    assert store.note_use(tid, t + LAST_USED_PERSIST_S) is True
    store.persist_last_used()
    assert list_tokens(tokens_file)[0].last_used == t + LAST_USED_PERSIST_S
    assert tokens_file.stat().st_mtime_ns >= before


def test_lock_file_and_dir_are_private(tokens_file: Path) -> None:
    create_token(tokens_file, "a")
    lock = tokens_file.parent / ".tokens.json.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert stat.S_IMODE(tokens_file.parent.stat().st_mode) & 0o077 == 0
