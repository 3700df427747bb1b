"""The hash-chained audit log on real files: append, rotate, page, and tamper detection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleettui.agent.audit import HEAD_FILE, AuditError, AuditLog, chain_files, verify_chain
from fleettui.wire import GENESIS_HASH, AuditEntry, AuditPage, audit_hash, canonical_json

N = 6


def fields(i: int, **extra: object) -> dict:
    base = {
        "ts": 1_700_000_000.0 + i,
        "source_ip": "127.0.0.1",
        "token_id": "tok_0123abcd",
        "action": "restart",
        "args": {"engine": "ollama", "model": None},
        "status": "ok",
        "http_status": 200,
        "duration_ms": 12.5,
        "exit_code": 0,
        "error": None,
    }
    return {**base, **extra}


def make_log(tmp_path: Path, n: int = N, **kw: int) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl", **kw)
    log.open()
    for i in range(n):
        log.append(fields(i))
    return log


def page_of(log: AuditLog, after: int, limit: int) -> AuditPage:
    return AuditPage.model_validate_json(log.page_json(after, limit))


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_entries_follow_the_wire_contract(tmp_path: Path) -> None:
    log = make_log(tmp_path, 3)
    prev = GENESIS_HASH
    for i, line in enumerate(lines_of(log.path), 1):
        d = json.loads(line)
        assert d["seq"] == i and d["prev_hash"] == prev
        assert d["hash"] == audit_hash(d)
        assert line.encode() == canonical_json(d) + b"\n"
        # A verifier holding the pydantic model computes the same hash.
        assert audit_hash(AuditEntry.model_validate(d).model_dump()) == d["hash"]
        prev = d["hash"]
    assert log.head().seq == 3 and log.head().head_hash == prev
    res = verify_chain(log.path)
    assert res.ok and res.entries == 3 and res.head_hash == prev


def _tamper(path: Path, op: str, k: int) -> None:
    """Apply op to the line holding seq k (1-based)."""
    lines = lines_of(path)
    i = k - 1
    if op == "edit":
        d = json.loads(lines[i])
        d["status"] = "denied" if d["status"] != "denied" else "ok"
        lines[i] = json.dumps(d, sort_keys=True, separators=(",", ":")) + "\n"
    elif op == "delete":
        del lines[i]
    elif op == "insert":
        d = json.loads(lines[i])
        d.update(action="purge", error="forged")
        d["hash"] = audit_hash(d)
        lines.insert(i, json.dumps(d, sort_keys=True, separators=(",", ":")) + "\n")
    elif op == "reorder":
        j = i + 1 if i + 1 < len(lines) else i - 1
        lines[i], lines[j] = lines[j], lines[i]
        k = min(i, j) + 1
    path.write_text("".join(lines))


@pytest.mark.parametrize("op", ["edit", "delete", "insert", "reorder"])
@pytest.mark.parametrize("k", range(1, N + 1))
def test_every_tampering_is_caught_at_its_seq(tmp_path: Path, op: str, k: int) -> None:
    log = make_log(tmp_path)
    _tamper(log.path, op, k)
    res = verify_chain(log.path)
    expected = min(k, N - 1) if op == "reorder" and k == N else k
    assert not res.ok and res.bad_seq == expected, res


def test_edit_with_recomputed_hash_is_still_caught(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    for k, where in ((3, 4), (N, N)):  # middle: the next link breaks; last: the head file
        lines = lines_of(log.path)
        original = lines[k - 1]
        d = json.loads(original)
        d["token_id"] = "tok_ffffffff"
        d["hash"] = audit_hash(d)
        lines[k - 1] = canonical_json(d).decode() + "\n"
        log.path.write_text("".join(lines))
        res = verify_chain(log.path)
        assert not res.ok and res.bad_seq == where, res
        lines[k - 1] = original
        log.path.write_text("".join(lines))
    assert verify_chain(log.path).ok


def verify_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleettui", "agent", "audit", "verify", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("op", ["edit", "delete", "insert", "reorder"])
def test_cli_verify_names_the_first_bad_seq(tmp_path: Path, op: str) -> None:
    log = make_log(tmp_path)
    ok = verify_cli("--path", str(log.path))
    assert ok.returncode == 0 and f"{N} entries" in ok.stdout, ok.stderr
    _tamper(log.path, op, 3)
    r = verify_cli("--path", str(log.path))
    assert r.returncode == 1 and "BROKEN at seq 3" in r.stdout, r.stdout + r.stderr
    rj = verify_cli("--path", str(tmp_path), "--json")  # a directory means its audit.jsonl
    body = json.loads(rj.stdout)
    assert rj.returncode == 1 and body["ok"] is False and body["bad_seq"] == 3
    assert body["line"] == (4 if op == "insert" else 3) and body["reason"]


def test_cli_verify_without_a_log(tmp_path: Path, xdg_home: Path) -> None:
    r = verify_cli()
    assert r.returncode == 2 and "no audit log at" in r.stderr


def test_rotation_keeps_one_chain(tmp_path: Path) -> None:
    log = make_log(tmp_path, 40, rotate_bytes=2000)
    files = chain_files(log.path)
    assert len(files) >= 4 and files[0].name == "audit.jsonl.1" and files[-1] == log.path
    assert all(f.stat().st_size <= 2000 for f in files)
    res = verify_chain(log.path)
    assert res.ok and res.entries == 40 and len(res.files) == len(files)
    # Continuity across the boundary: the new file's first prev_hash is the old file's last hash.
    last = json.loads(lines_of(files[0])[-1])
    first = json.loads(lines_of(files[1])[0])
    assert first["prev_hash"] == last["hash"] and first["seq"] == last["seq"] + 1

    # A restarted agent continues the chain from the files.
    again = AuditLog(log.path, rotate_bytes=2000)
    again.open()
    assert again.head() == log.head() and again.problem is None
    assert again.append(fields(99)).seq == 41
    assert verify_chain(log.path).ok

    # Pages cross file boundaries and respect after/limit.
    page = page_of(again, 5, 10)
    assert [e.seq for e in page.entries] == list(range(6, 16))
    assert page.head.seq == 41
    assert [e.seq for e in page_of(again, 38, 100).entries] == [39, 40, 41]
    assert page_of(again, 41, 5).entries == []

    # Losing a whole rotated file is caught where it starts.
    second_first = json.loads(lines_of(files[1])[0])["seq"]
    files[1].unlink()
    res = verify_chain(log.path)
    assert not res.ok and res.bad_seq == second_first


def test_head_is_loaded_when_the_live_file_was_just_rotated(tmp_path: Path) -> None:
    log = make_log(tmp_path, 3)
    log.path.rename(tmp_path / "audit.jsonl.1")
    log.path.touch()
    again = AuditLog(log.path)
    again.open()
    assert again.head() == log.head()
    assert again.append(fields(3)).seq == 4 and verify_chain(log.path).ok


def test_two_writers_on_one_file_keep_the_chain(tmp_path: Path) -> None:
    a = AuditLog(tmp_path / "audit.jsonl")
    b = AuditLog(tmp_path / "audit.jsonl")
    a.open()
    b.open()
    seqs = [w.append(fields(i)).seq for i, w in enumerate([a, b, a, a, b, b, a])]
    assert seqs == list(range(1, 8))
    assert verify_chain(a.path).ok


def test_truncated_tail_stops_writes_at_startup(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.path.write_text("".join(lines_of(log.path)[:-2]))
    res = verify_chain(log.path)
    assert not res.ok and res.bad_seq == N - 1 and HEAD_FILE in (res.reason or "")
    again = AuditLog(log.path)
    again.open()
    assert again.problem and "entries 5..6 were deleted" in again.problem
    with pytest.raises(AuditError):
        again.append(fields(0))
    assert len(lines_of(log.path)) == N - 2  # nothing appended over the evidence


def test_torn_last_line_stops_writes(tmp_path: Path) -> None:
    log = make_log(tmp_path, 3)
    with log.path.open("a") as fh:
        fh.write('{"seq":4,"ts":')
    again = AuditLog(log.path)
    again.open()
    assert again.problem and "incomplete" in again.problem
    res = verify_chain(log.path)
    assert not res.ok and res.bad_seq == 4 and "incomplete" in (res.reason or "")


def test_missing_head_file_is_not_fatal(tmp_path: Path) -> None:
    log = make_log(tmp_path, 3)
    (tmp_path / HEAD_FILE).unlink()
    assert verify_chain(log.path).ok
    again = AuditLog(log.path)
    again.open()
    assert again.problem is None and again.append(fields(3)).seq == 4


def test_files_are_private(tmp_path: Path) -> None:
    log = make_log(tmp_path / "d", 1)
    assert log.path.stat().st_mode & 0o077 == 0
    assert log.path.parent.stat().st_mode & 0o077 == 0
