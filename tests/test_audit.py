"""The hash-chained audit log on real files: append, rotate, page, and tamper detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
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


# --- write-ahead, re-checks before writing, huge numbers, the index, sealing ----------------


def test_started_without_outcome_is_recorded_as_interrupted(tmp_path: Path) -> None:
    log = make_log(tmp_path, 2)
    intent = log.append(fields(2, status="started"))
    log.append(fields(3, status="denied", http_status=401))
    assert verify_chain(log.path).open_intents == [intent.seq]
    again = AuditLog(log.path)
    again.open()  # what a restarted agent does
    assert again.problem is None
    last = AuditEntry.model_validate_json(lines_of(log.path)[-1])
    assert last.status == "interrupted" and last.ref == intent.seq and last.http_status == 0
    assert last.action == intent.action and last.args == intent.args
    res = verify_chain(log.path)
    assert res.ok and res.open_intents == [] and res.entries == 5
    third = AuditLog(log.path)
    third.open()  # closed once, not again
    assert third.seq == 5


def test_an_outcome_must_close_an_open_intent(tmp_path: Path) -> None:
    log = make_log(tmp_path, 1)
    intent = log.append(fields(1, status="started"))
    ok = log.append(fields(2, status="ok", ref=intent.seq))
    d = {**ok.model_dump(), "seq": 4, "status": "failed", "prev_hash": ok.hash}
    d["hash"] = audit_hash(d)  # a second outcome for the same intent, linked correctly
    with log.path.open("ab") as fh:
        fh.write(canonical_json(d) + b"\n")
    res = verify_chain(log.path)
    assert not res.ok and res.bad_seq == 4 and "no open started entry" in (res.reason or "")


def test_last_line_deleted_while_running_stops_the_next_write(tmp_path: Path) -> None:
    log = make_log(tmp_path, 4)
    lines = lines_of(log.path)
    log.path.write_text("".join(lines[:-1]))  # same inode, shorter
    with pytest.raises(AuditError, match="shorter"):
        log.append(fields(9))
    with pytest.raises(AuditError, match="shorter"):  # sticky: nothing changed since
        log.append(fields(9))
    assert lines_of(log.path) == lines[:-1]


@pytest.mark.parametrize("how", ["replace", "edit-last", "junk", "forged-append"])
def test_the_tail_is_rechecked_before_every_write(tmp_path: Path, how: str) -> None:
    log = make_log(tmp_path, 3)
    lines = lines_of(log.path)
    if how == "replace":  # a new file under the name, its last entry re-hashed
        d = json.loads(lines[-1])
        d["token_id"] = "tok_ffffffff"
        d["hash"] = audit_hash(d)
        log.path.unlink()
        log.path.write_text("".join(lines[:-1]) + canonical_json(d).decode() + "\n")
    elif how == "edit-last":  # same size, in place
        log.path.write_text("".join(lines[:-1]) + lines[-1].replace('"ok"', '"no"'))
    elif how == "junk":
        with log.path.open("a") as fh:
            fh.write("not an entry\n")
    else:  # appended with a wrong prev_hash by someone who did not hold the lock
        d = json.loads(lines[-1])
        d.update(seq=4, prev_hash=GENESIS_HASH)
        d["hash"] = audit_hash(d)
        with log.path.open("a") as fh:
            fh.write(canonical_json(d).decode() + "\n")
    with pytest.raises(AuditError):
        log.append(fields(9))
    assert log.problem


def test_a_second_writers_entries_are_verified_then_extended(tmp_path: Path) -> None:
    a = make_log(tmp_path, 2, rotate_bytes=4096)
    b = AuditLog(a.path, rotate_bytes=4096)
    b.open()
    for i in range(12):  # b rotates under a
        b.append(fields(i))
    assert len(chain_files(a.path)) > 1
    assert a.append(fields(99)).seq == 15 and verify_chain(a.path).ok


def test_huge_seq_in_the_log_is_reported_not_raised(tmp_path: Path) -> None:
    log = make_log(tmp_path, 3)
    with log.path.open("a") as fh:
        fh.write('{"seq":' + "9" * 5000 + ',"status":"ok"}\n')
    res = verify_chain(log.path)
    assert not res.ok and res.bad_seq == 4 and "number too long" in (res.reason or "")
    page = page_of(log, 0, 100)
    assert [e.seq for e in page.entries] == [1, 2, 3]
    r = verify_cli("--path", str(log.path))
    assert r.returncode == 1 and "BROKEN at seq 4" in r.stdout and "Traceback" not in r.stderr
    # A number that parses but is far beyond the chain: named, not printed in full.
    lines = lines_of(log.path)[:-1]
    log.path.write_text("".join(lines) + '{"seq":1' + "0" * 4000 + "}\n")
    res = verify_chain(log.path)
    assert not res.ok and res.bad_seq == 4 and len(res.reason or "") < 200


def test_pages_from_the_index_equal_a_full_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fleettui.agent.audit as audit

    monkeypatch.setattr(audit, "STRIDE", 4)
    make_log(tmp_path, 60, rotate_bytes=4096)
    log = AuditLog(tmp_path / "audit.jsonl", rotate_bytes=4096)
    log.open()  # the index is built by the start-up verification...
    assert sum(len(fi.offsets) for fi in log._index) >= 15
    for i in range(10):  # ...and extended by appends, across rotations
        log.append(fields(i))
    assert len(chain_files(log.path)) >= 4
    scan = AuditLog(log.path)  # never opened: no index, every page is a scan
    for after in (0, 1, 3, 4, 5, 17, 33, 59, 63, 69, 70, 500):
        for limit in (1, 3, 7, 100):
            got = log.page_json(after, limit)
            assert (
                json.loads(got)["entries"] == json.loads(scan.page_json(after, limit))["entries"]
            ), (after, limit)
            want = list(range(after + 1, min(70, after + limit) + 1))
            assert [e.seq for e in AuditPage.model_validate_json(got).entries] == want
    # Served bytes are the bytes on disk (verifiers hash exactly what was written).
    first = b"".join(p.read_bytes() for p in chain_files(log.path)).split(b"\n")[0]
    assert log.page_json(0, 1).startswith(b'{"entries":[' + first + b"]")


def test_pages_of_a_damaged_log_still_serve_what_is_there(tmp_path: Path) -> None:
    log = make_log(tmp_path, N)
    _tamper(log.path, "delete", 3)
    again = AuditLog(log.path)
    again.open()
    assert again.problem
    assert [e.seq for e in page_of(again, 0, 100).entries] == [1, 2, 4, 5, 6]


def test_lone_surrogates_are_recorded_as_replacement_characters(tmp_path: Path) -> None:
    log = make_log(tmp_path, 1)
    entry = log.append(fields(1, args={"engine": "\ud800x"}, error="bad \udfff"))
    assert entry.args["engine"] == "\ufffdx" and entry.error == "bad \ufffd"
    assert verify_chain(log.path).ok


def test_stale_temp_files_are_removed_at_open(tmp_path: Path) -> None:
    from fleettui.fsutil import remove_stale_temps

    make_log(tmp_path, 1)
    stale = [tmp_path / ".audit.head.json.ab_cd123", tmp_path / ".audit.head.json.zzzzzzzz.tmp"]
    keep = [tmp_path / ".audit.head.json.bak", tmp_path / "audit.head.json.abcdefgh"]
    for p in stale + keep:
        p.write_text("x")
    AuditLog(tmp_path / "audit.jsonl").open()
    assert [p.exists() for p in stale + keep] == [False, False, True, True]
    young = tmp_path / ".tokens.json.abcdefgh.tmp"
    young.write_text("hash")
    assert remove_stale_temps(tmp_path, "tokens.json", older_than_s=60) == []
    os.utime(young, (0, 0))
    assert remove_stale_temps(tmp_path, "tokens.json", older_than_s=60) == [young]


def test_seal_archives_a_broken_chain_and_starts_a_new_one(tmp_path: Path) -> None:
    log = make_log(tmp_path, N, rotate_bytes=4096)
    old_head = log.head()
    r = seal_cli("--path", str(log.path), "--reason", "test")
    assert r.returncode == 2 and "nothing to seal" in r.stderr
    _tamper(log.path, "edit", N - 1)
    with pytest.raises(AuditError):
        log.append(fields(0))
    r = seal_cli("--path", str(log.path), "--reason", "  disk  restored from backup ")
    assert r.returncode == 0 and "archive/sealed-" in r.stdout, r.stderr
    archived = list((tmp_path / "archive").iterdir())
    assert len(archived) == 1 and (archived[0] / "audit.jsonl").exists()
    assert (archived[0] / HEAD_FILE).exists()
    assert not verify_chain(archived[0] / "audit.jsonl").ok  # the evidence, unchanged
    res = verify_chain(log.path)
    assert res.ok and res.entries == 1
    first = AuditEntry.model_validate_json(lines_of(log.path)[0])
    assert first.seq == 1 and first.prev_hash == GENESIS_HASH and first.status == "sealed"
    assert first.args["reason"] == "disk restored from backup"
    assert first.args["old_head_seq"] == old_head.seq
    assert first.args["old_head_hash"] == old_head.head_hash
    assert first.args["verified_through_seq"] == N - 2 and first.args["by"]
    assert "seq 5" in first.args["problem"]
    # The writer that refused notices the operator's act at its next write.
    assert log.append(fields(1)).seq == 2 and verify_chain(log.path).ok
    # --force retires a chain that verifies: the agent verifies from seq 1, so old rotated
    # files are retired this way, never by deleting them.
    r = seal_cli("--path", str(log.path), "--reason", "retire 2026", "--force")
    assert r.returncode == 0, r.stderr
    first = AuditEntry.model_validate_json(lines_of(log.path)[0])
    assert first.args["problem"] is None and first.args["verified_through_seq"] == 2
    assert len(list((tmp_path / "archive").iterdir())) == 2


def seal_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleettui", "agent", "audit", "seal", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_write_that_reached_nothing_refuses_once_not_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    log = make_log(tmp_path, 2)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(AuditError, match="No space left"):
        log.append(fields(2, status="started"))
    assert log.problem is None  # nothing torn: the disk freed, the next write goes on
    monkeypatch.setattr(os, "write", real_write)
    assert log.append(fields(3)).seq == 3 and verify_chain(log.path).ok
    torn = [True]

    def half(fd: int, data: bytes) -> int:
        if torn[0]:
            torn[0] = False
            real_write(fd, bytes(data[:10]))
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(AuditError):
        log.append(fields(4))
    assert log.problem  # a partial line is on disk: stopped until an operator looks
    with pytest.raises(AuditError):
        log.append(fields(5))


def test_a_running_writer_follows_a_forced_seal_of_its_own_chain(tmp_path: Path) -> None:
    log = make_log(tmp_path, 3)
    intent = log.append(fields(3, status="started"))  # an action is running during the seal
    r = seal_cli("--path", str(log.path), "--reason", "retire", "--force")
    assert r.returncode == 0, r.stderr
    outcome = log.append(fields(4, status="ok", ref=intent.seq))  # no 503: the seal is ours
    assert outcome.seq == 2 and outcome.ref is None and outcome.args["sealed_ref"] == intent.seq
    assert verify_chain(log.path).ok
    # A chain sealed over some other head is not ours to extend.
    other = make_log(tmp_path / "b", 2)
    (tmp_path / "b" / "audit.jsonl").unlink()
    (tmp_path / "b" / HEAD_FILE).unlink()
    with pytest.raises(AuditError, match="replaced or removed"):
        other.append(fields(9))


def test_start_up_verification_reports_progress_and_can_be_stopped(tmp_path: Path) -> None:
    path, prev, out = tmp_path / "audit.jsonl", GENESIS_HASH, []
    for seq in range(1, 4101):  # past one stop check (every 4096 entries); not fsync'd: fast
        d = AuditEntry(seq=seq, prev_hash=prev, hash="", **fields(seq)).model_dump(mode="json")
        d["hash"] = prev = audit_hash(d)
        out.append(canonical_json(d) + b"\n")
    path.write_bytes(b"".join(out))
    again = AuditLog(path)
    again.peek()  # before verification: the head on disk, the count to expect
    assert (again.seq, again.hash) == (4100, prev)
    progress = again.progress
    assert progress is not None and progress.describe() == "0 of 4100 entries"
    progress.stop.set()
    again.open()  # asked to stop: gives up, unverified, nothing written
    assert again.progress is progress and 4096 <= progress.done < 4100
    assert again._index == [] and len(lines_of(path)) == 4100
    fresh = AuditLog(path)
    fresh.peek()
    watched = fresh.progress
    fresh.open()
    assert fresh.progress is None and fresh.problem is None
    assert watched is not None and watched.describe() == "4100 of 4100 entries"


def test_a_page_never_serves_an_entry_past_its_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page read while an append is between writing its line and moving the head (held in
    its fsync here) leaves that line for later: a page whose entries pass its head reads as a
    truncated log to every verifier (seen by hand: `fleet bulk` beside a running dashboard
    turned every chain BROKEN)."""
    log = make_log(tmp_path, 3)
    gate, entered = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def held_fsync(fd: int) -> None:
        entered.set()
        gate.wait(5)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", held_fsync)
    writer = threading.Thread(target=log.append, args=(fields(99),))
    writer.start()
    assert entered.wait(5)
    got: list[bytes] = []
    got.append(log.page_json(2, 10))  # the line is on disk, the head not yet moved
    gate.set()
    writer.join(5)
    got.append(log.page_json(2, 10))
    during, after = (AuditPage.model_validate_json(b) for b in got)
    assert [e.seq for e in during.entries] == [3] and during.head.seq == 3  # 4 waits its turn
    assert [e.seq for e in after.entries] == [3, 4] and after.head.seq == 4
