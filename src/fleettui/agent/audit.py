"""The hash-chained audit log: record, verify, rotate, page and seal.

How to record (every call is blocking file I/O: run it in a worker thread):

- `AuditLog.append(fields) -> AuditEntry` records ONE entry (chained, fsync'd) and returns it, or
  raises `AuditError` with the reason the log cannot be extended. A refusal is one such entry
  (`status="denied"`). An action is a pair: `append({..., "status": "started"})` BEFORE anything
  runs (refuse the action when it raises), then `append({..., "status": "ok"|"failed",
  "ref": started.seq})` after. `fields` are the `wire.AuditEntry` fields minus seq/hashes.
- `peek()` (fast: the last line on disk) gives the head to serve before the chain is verified;
  `open()` verifies the whole chain (streaming, bounded memory), builds the offset index and
  records every `started` entry that has no outcome as `interrupted`. It takes seconds at 1M
  entries, so the agent runs it in the background: `progress` says how far it is (None once
  done) and the write side refuses actions until then. When the chain does not verify,
  `problem` says why and every append raises until an operator acts.

Files: `audit.jsonl` is the live file; past `rotate_bytes` it is renamed to `audit.jsonl.N`, N one
more than the highest existing number (`.1` is the oldest: one rename, never a cascade), and the
chain continues in a fresh live file whose first entry links to the last hash of the previous
one. Each line is the canonical JSON of a `wire.AuditEntry`;
`hash = sha256(prev_hash + canonical_json(entry without hash))`.

Before every append the writer re-checks, under an flock on a sidecar lock file, that the bytes it
last wrote are still where it left them (inode, size, the line itself); growth by another writer
is verified from there before it is extended; anything else stops writes.

The chain alone cannot show that the newest lines were cut off, so every append also records the
head in `audit.head.json`; start-up and `verify` compare against it. That catches truncation and
a rewrite that left that file alone; whoever can rewrite every file can rewrite it too, so the
defence against a full rewrite is remote: the aggregator pins the head it verified.

Pages are served from an in-memory sparse offset index (one offset per STRIDE entries, built by the
start-up verification), so `page_json` reads O(STRIDE + limit) lines at any log size.

The operator's way out of a damaged log is `seal`: it moves every file of the broken chain to
`archive/sealed-<time>/` and starts a new chain whose first entry (`sealed`) records the reason,
the operator and the old head.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import fcntl
import getpass
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fleettui.fsutil import fsync_dir, open_nofollow, remove_stale_temps
from fleettui.wire import GENESIS_HASH, AuditEntry, AuditHead, audit_hash, canonical_json

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
HEAD_FILE = "audit.head.json"
ARCHIVE_DIR = "archive"
ROTATE_BYTES = 10 * 1024 * 1024
MAX_LINE = 256 * 1024
STRIDE = 256  # one index point per STRIDE entries: ~4k offsets at 1M entries
MAX_OPEN_INTENTS = 10_000
OUTCOMES = ("ok", "failed", "interrupted")
# A seq is at most 18 digits; a longer run of digits is no seq (int() of 5,000 digits raises).
_SEQ_RE = re.compile(rb'"seq":(\d{1,18})(?![\d.eE])')
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_FIELDS = set(AuditEntry.model_fields)
SEAL_HINT = "fleet agent audit verify; then fleet agent audit seal --reason TEXT"


class AuditError(Exception):
    """The audit log cannot be appended to; writes are refused until an operator looks."""


class _Stopped(Exception):
    """The agent is stopping: the start-up verification gives up (it is redone next start)."""


@dataclass
class Progress:
    """How far the start-up verification is; the event loop reads it while a worker walks."""

    total: int = 0  # entries expected: the head on disk (or the one audit.head.json records)
    walk: _Walk | None = None
    waiting_for_lock: bool = False
    started: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def done(self) -> int:
        return self.walk.entries if self.walk else 0

    def remaining_s(self) -> float | None:
        """Seconds left at the rate so far; None before there is a rate."""
        took = time.monotonic() - self.started
        if not self.done or took <= 0:
            return None
        return max(0.0, (self.total - self.done) * took / self.done)

    def describe(self) -> str:
        if self.waiting_for_lock:
            return "waiting for the audit log's lock (another process holds it)"
        return f"{self.done} of {self.total} entries"


def chain_files(path: Path) -> list[Path]:
    """Every file of the chain, oldest first: audit.jsonl.1, .2, ..., then audit.jsonl."""
    rotated: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        prefix = path.name + "."
        for p in path.parent.iterdir():
            suffix = p.name[len(prefix) :] if p.name.startswith(prefix) else ""
            if suffix.isdigit() and not suffix.startswith("0") and len(suffix) < 10:
                rotated.append((int(suffix), p))
    files = [p for _, p in sorted(rotated)]
    if path.exists():
        files.append(path)
    return files


def _show_int(n: int) -> str:
    """An int for a message; str() of one over 4,300 digits raises."""
    return str(n) if -(10**18) < n < 10**18 else f"<a {n.bit_length()}-bit number>"


def _read_head_file(path: Path) -> tuple[int, str] | None:
    """(seq, hash) recorded by the last append; None when absent or unreadable (deleting it is
    as easy as corrupting it, so neither is evidence)."""
    try:
        d = json.loads(path.read_bytes())
        seq, h = d["seq"], d["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(seq, int) or not isinstance(h, str) or not 0 <= seq < 10**18:
        return None
    return seq, h


def _check_entry(raw: bytes, expected_seq: int, prev_hash: str) -> tuple[dict[str, Any], str]:
    """Parse one line and check it against the chain; returns (entry, problem or '')."""
    if not raw.endswith(b"\n"):
        if len(raw) > MAX_LINE:
            return {}, f"line is longer than {MAX_LINE} bytes"
        return {}, "line is incomplete (no newline: a torn write or a cut file)"
    try:
        d = json.loads(raw)
    except (ValueError, RecursionError):  # also UnicodeDecodeError and ints over 4,300 digits
        return {}, "line is not valid JSON (or holds a number too long to read)"
    if not isinstance(d, dict):
        return {}, "line is not a JSON object"
    seq = d.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return d, "seq is missing or not an integer"
    if seq > expected_seq:
        return d, f"seq {expected_seq} is missing (found seq {_show_int(seq)}: lines deleted?)"
    if seq < expected_seq:
        return d, (
            f"found seq {_show_int(seq)} where seq {expected_seq} belongs (reordered or inserted?)"
        )
    if d.get("prev_hash") != prev_hash:
        return d, "prev_hash does not match the previous entry's hash (this or that was altered)"
    if not isinstance(d.get("hash"), str) or d["hash"] != audit_hash(d):
        return d, "hash does not match the entry's content (entry edited)"
    if not d.keys() <= _FIELDS:
        return d, "fields differ from the audit entry schema (added)"
    try:  # strict: a JSON type the writer never produces (a seq as a string...) is no entry
        AuditEntry.model_validate(d, strict=True)
    except ValidationError as exc:
        e = exc.errors()[0]
        return d, f"not an audit entry: {'.'.join(map(str, e['loc']))}: {e['msg']}"
    return d, ""


# --- the streaming walk: verification, intents, index -------------------------------------


@dataclass
class _Tail:
    """Where the newest entry is: the file (by inode), the offset after it, its bytes."""

    ino: int
    end: int
    line: bytes


@dataclass
class _FileIndex:
    path: Path
    ino: int
    first_seq: int
    offsets: array = field(default_factory=lambda: array("Q"))  # entry first_seq + k*STRIDE


@dataclass
class _Walk:
    """State of a walk along the chain; `feed` checks one file from an offset."""

    seq: int = 0
    hash: str = GENESIS_HASH
    tail: _Tail | None = None
    intents: dict[int, dict[str, Any]] = field(default_factory=dict)
    index: list[_FileIndex] = field(default_factory=list)
    anchor_seq: int = -1
    anchor_hash: str | None = None
    problem: str = ""
    bad_seq: int | None = None
    file: Path | None = None
    line: int | None = None
    entries: int = 0
    stop: threading.Event | None = None

    def feed(self, path: Path, offset: int = 0) -> bool:
        """Check every line of `path` from `offset`; False (and `problem`) at the first bad one."""
        stop = self.stop
        with path.open("rb") as fh:
            ino = os.fstat(fh.fileno()).st_ino
            fh.seek(offset)
            pos, lineno = offset, 0
            while raw := fh.readline(MAX_LINE + 1):
                lineno += 1
                expected = self.seq + 1
                d, problem = _check_entry(raw, expected, self.hash)
                if not problem:
                    problem = self.note(d, path, ino, pos)
                if problem:
                    bad = expected
                    if d.get("seq") == expected - 1 and expected > 1:
                        bad = expected - 1
                        problem = f"seq {bad} appears twice (a line was inserted)"
                    self.problem, self.bad_seq, self.file = problem, bad, path
                    self.line = lineno if offset == 0 else None
                    return False
                pos += len(raw)
                self.tail = _Tail(ino, pos, raw)
                self.entries += 1
                if stop is not None and not self.entries % 4096 and stop.is_set():
                    raise _Stopped
        return True

    def note(self, d: dict[str, Any], path: Path, ino: int, pos: int) -> str:
        """Account for one verified entry at `pos`: head, anchor, index point, open intents."""
        seq = d["seq"]
        self.seq, self.hash = seq, d["hash"]
        if seq == self.anchor_seq:
            self.anchor_hash = d["hash"]
        if not self.index or self.index[-1].ino != ino:
            self.index.append(_FileIndex(path, ino, seq))
        fi = self.index[-1]
        if (seq - fi.first_seq) % STRIDE == 0:
            fi.offsets.append(pos)
        ref, status = d.get("ref"), d.get("status")
        if status == "started":
            if len(self.intents) >= MAX_OPEN_INTENTS:
                return f"more than {MAX_OPEN_INTENTS} actions started without an outcome"
            self.intents[seq] = d
        elif ref is not None:
            if ref not in self.intents:
                return f"outcome refers to seq {_show_int(ref)}, which is no open started entry"
            if status not in OUTCOMES:
                return f"status {status!r} cannot close an action"
            del self.intents[ref]
        return ""

    def check_anchor(self, anchor: tuple[int, str] | None, last_file: Path) -> None:
        """Compare the walked chain with audit.head.json (the head the last append recorded)."""
        if self.problem or anchor is None:
            return
        seq, h = anchor
        if seq > self.seq:
            self.problem = (
                f"the log ends at seq {self.seq} but {HEAD_FILE} records seq {seq}: "
                f"entries {self.seq + 1}..{seq} were deleted"
            )
            self.bad_seq = self.seq + 1
        elif seq > 0 and self.anchor_hash != h:
            self.problem = (
                f"seq {seq} differs from the hash recorded in {HEAD_FILE} (log rewritten)"
            )
            self.bad_seq = seq
        if self.problem:
            self.file = last_file


def _walk_chain(path: Path, progress: Progress | None = None) -> tuple[_Walk, list[Path]]:
    files = chain_files(path)
    anchor = _read_head_file(path.parent / HEAD_FILE)
    w = _Walk(anchor_seq=anchor[0] if anchor else -1)
    if progress is not None:
        w.stop, progress.walk = progress.stop, w
    for f in files:
        if not w.feed(f):
            break
    w.check_anchor(anchor, files[-1] if files else path)
    return w, files


# --- verification (`fleet agent audit verify`) ---------------------------------------------


@dataclass
class VerifyResult:
    ok: bool
    path: str
    entries: int = 0
    files: list[str] = field(default_factory=list)
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    bad_seq: int | None = None
    file: str | None = None
    line: int | None = None
    reason: str | None = None
    open_intents: list[int] = field(default_factory=list)  # started, no outcome (yet)


def verify_chain(path: Path) -> VerifyResult:
    """Check every entry of every file of the chain; stop at the first bad one."""
    w, files = _walk_chain(path)
    return VerifyResult(
        ok=not w.problem,
        path=str(path),
        entries=w.entries,
        files=[str(f) for f in files],
        head_seq=w.seq,
        head_hash=w.hash,
        bad_seq=w.bad_seq,
        file=str(w.file) if w.file else None,
        line=w.line,
        reason=w.problem or None,
        open_intents=sorted(w.intents),
    )


# --- the writer -----------------------------------------------------------------------------


def _clean_text(obj: Any) -> Any:
    """Lone surrogates -> U+FFFD, so any value can be encoded as UTF-8 (and hashed)."""
    if isinstance(obj, str):
        return _SURROGATE_RE.sub("\ufffd", obj)
    if isinstance(obj, dict):
        return {_clean_text(k): _clean_text(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean_text(v) for v in obj]
    return obj


class AuditLog:
    """One node's audit log. Every method does blocking file I/O: run it in a worker thread."""

    def __init__(self, path: Path, *, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.head_path = path.parent / HEAD_FILE
        self.lock_path = path.parent / f".{path.name}.lock"
        self.seq = 0
        self.hash = GENESIS_HASH
        self.problem: str | None = None
        self._tail: _Tail | None = None
        self._index: list[_FileIndex] = []
        self._intents: dict[int, dict[str, Any]] = {}
        self._problem_seen: object = None  # the files as they were when `problem` was found
        self._tlock = threading.Lock()
        self._appending = False
        self.progress: Progress | None = Progress()  # None once open() has verified the chain

    # -- state
    def head(self) -> AuditHead:
        return AuditHead(seq=self.seq, head_hash=self.hash)

    @contextlib.contextmanager
    def _locked(self, progress: Progress | None = None) -> Iterator[None]:
        """The flock every writer takes; with `progress`, waiting for it can be stopped."""
        with self._tlock:
            fd = open_nofollow(self.lock_path, os.O_RDWR | os.O_CREAT)
            try:
                if progress is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    while not _try_flock(fd):
                        progress.waiting_for_lock = True
                        if progress.stop.wait(0.05):
                            raise _Stopped
                    progress.waiting_for_lock = False
                yield
            finally:
                os.close(fd)

    def peek(self) -> None:
        """Serve the head on disk until the chain is verified (cheap: the newest line only).
        Advertising seq 0 instead would look like a truncated log to a remote checker."""
        if self.progress is None:
            return
        with contextlib.suppress(OSError):
            self.seq, self.hash = _disk_head(self.path) or (self.seq, self.hash)
        anchor = _read_head_file(self.head_path)
        self.progress.total = max(self.seq, anchor[0] if anchor else 0)

    def open(self) -> None:
        """Verify the whole chain and close interrupted intents. Nothing is created until the
        first append, so a thousand simulated nodes that never act leave no files behind.
        `progress.stop` set from another thread ends it early (the log stays unverified)."""
        progress = self.progress or Progress()
        if not self.path.parent.is_dir():
            self.progress = None
            return
        try:
            with self._locked(progress):
                # Head-file temps are only written under this lock: any left is a killed writer's.
                remove_stale_temps(self.path.parent, HEAD_FILE, older_than_s=0)
                self._verify_all(progress)
                if not self.problem:
                    self._close_interrupted()
        except _Stopped:
            return
        except AuditError:
            pass  # `problem` says why
        except OSError as exc:
            self._fail(f"cannot open {exc.filename}: {exc.strerror}")
        self.progress = None
        if self.problem:
            log.error(
                "audit log %s: %s; actions are refused until it is fixed", self.path, self.problem
            )

    def _fingerprint(self) -> object:
        out = []
        for p in [*chain_files(self.path), self.head_path]:
            with contextlib.suppress(OSError):
                st = os.lstat(p)
                out.append((p.name, st.st_ino, st.st_size, st.st_mtime_ns))
        return out

    def _fail(self, problem: str) -> AuditError:
        self.problem = f"{problem} (run: {SEAL_HINT})"
        self._problem_seen = self._fingerprint()
        return AuditError(self.problem)

    def _adopt(self, w: _Walk) -> None:
        self.seq, self.hash, self._tail = w.seq, w.hash, w.tail
        self._index, self._intents = w.index, w.intents

    def _verify_all(self, progress: Progress | None = None) -> None:
        """The start-up check: every entry of every file, then the head file."""
        self.problem = None
        try:
            w, _ = _walk_chain(self.path, progress)
        except OSError as exc:
            self._fail(f"cannot read {exc.filename}: {exc.strerror}")
            return
        self._adopt(w)
        if w.problem:
            # Serve the head as it is on disk, not the verified prefix: a remote checker then
            # walks to the break and names it, instead of seeing a log that merely got shorter.
            self.seq, self.hash = _disk_head(self.path) or (self.seq, self.hash)
            where = w.file.name + (f" line {w.line}" if w.line else "") if w.file else ""
            at = f"seq {w.bad_seq}" + (f" ({where})" if where else "")
            self._fail(f"chain broken at {at}: {w.problem}")

    def _close_interrupted(self) -> None:
        for seq, d in sorted(self._intents.items()):
            self._append_locked(
                {
                    "ts": round(time.time(), 6),
                    "source_ip": d.get("source_ip"),
                    "token_id": d.get("token_id"),
                    "action": d.get("action"),
                    "args": d.get("args") or {},
                    "status": "interrupted",
                    "http_status": 0,
                    "error": "the agent stopped before the action finished; its outcome is unknown",
                    "ref": seq,
                }
            )
            log.warning("audit: seq %d (%s) was interrupted; recorded", seq, d.get("action"))

    def _tail_intact(self, path: Path) -> bool:
        """Are the bytes of the newest entry still at the end of `path`, where we left them?"""
        tail = self._tail
        if tail is None:
            return True
        try:
            fd = open_nofollow(path, os.O_RDONLY)
        except FileNotFoundError:  # other errors (no descriptor left) are not evidence: raised
            return False
        try:
            st = os.fstat(fd)
            got = os.pread(fd, len(tail.line), tail.end - len(tail.line))
        finally:
            os.close(fd)
        return st.st_ino == tail.ino and st.st_size >= tail.end and got == tail.line

    def _check_before_write(self) -> None:
        """Verify what the next append extends: the files, not a cached flag."""
        if self.problem:
            if self._fingerprint() == self._problem_seen:
                raise AuditError(self.problem)
            self._verify_all()  # the files changed (an operator sealed or repaired): re-check all
            if self.problem:
                raise AuditError(self.problem)
            self._close_interrupted()
            return
        files = chain_files(self.path)
        tail = self._tail
        if tail is None:
            if files:  # entries appeared since the log was found empty: another writer's
                self._catch_up(files, 0, 0)
            return
        holder = next((f for f in reversed(files) if os.lstat(f).st_ino == tail.ino), None)
        if holder is None:
            if self._sealed_over(files):
                return
            raise self._fail(f"the file holding seq {self.seq} was replaced or removed")
        size = os.lstat(holder).st_size
        if size < tail.end:
            raise self._fail(
                f"{holder.name} is shorter ({size} bytes) than the agent left it ({tail.end} "
                f"bytes): entries up to seq {self.seq} were removed or cut"
            )
        if not self._tail_intact(holder):
            raise self._fail(f"seq {self.seq}, the last entry the agent wrote, was altered")
        if size != tail.end or holder != files[-1]:
            # Growth by another writer (or its rotation): verified from our tail, then adopted.
            self._catch_up(files, files.index(holder), tail.end)

    def _sealed_over(self, files: list[Path]) -> bool:
        """Did an operator seal exactly the chain we hold? Then the new one is adopted."""
        try:
            first = json.loads(files[0].open("rb").readline(MAX_LINE)) if files else None
        except (OSError, ValueError):
            return False
        if not isinstance(first, dict) or first.get("status") != "sealed":
            return False
        args = first.get("args") or {}
        if (args.get("old_head_seq"), args.get("old_head_hash")) != (self.seq, self.hash):
            return False
        w, _ = _walk_chain(self.path)
        if w.problem:
            return False
        self._adopt(w)
        return True

    def _catch_up(self, files: list[Path], start: int, offset: int) -> None:
        w = _Walk(self.seq, self.hash, self._tail, self._intents, self._index)
        for i, f in enumerate(files[start:]):
            if not w.feed(f, offset if i == 0 else 0):
                raise self._fail(f"entries appended after seq {self.seq}: {w.problem}")
        for fi in self._index:  # another writer may have rotated: follow the inodes
            fi.path = next((f for f in files if f.stat().st_ino == fi.ino), fi.path)
        self._adopt(w)

    # -- writing
    def append(self, fields: dict[str, Any]) -> AuditEntry:
        """Record one entry (fsync'd) and return it. Raises AuditError when the log is unusable."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self._locked():
                self._check_before_write()
                self._appending = True  # its line reaches the file before the head moves
                try:
                    return self._append_locked(fields)
                finally:
                    self._appending = False
        except OSError as exc:  # nothing written (no descriptor left...): refuse this one only
            raise AuditError(f"cannot open the audit log: {exc.strerror or exc}") from None

    def _append_locked(self, fields: dict[str, Any]) -> AuditEntry:
        ref = fields.get("ref")
        if ref is not None and ref not in self._intents:  # its intent is in a sealed chain
            fields = {**fields, "ref": None, "args": {**fields.get("args", {}), "sealed_ref": ref}}
        entry = AuditEntry(seq=self.seq + 1, prev_hash=self.hash, hash="", **fields).model_dump(
            mode="json"
        )
        try:
            canonical_json(entry)
        except UnicodeEncodeError:
            entry = _clean_text(entry)
        entry["hash"] = audit_hash(entry)
        line = canonical_json(entry) + b"\n"
        size = self._size()
        try:
            if size and size + len(line) > self.rotate_bytes:
                self._rotate()
                size = 0
            fd = open_nofollow(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if self._size() == size:  # nothing reached the file (disk full...): refuse this one
                raise AuditError(f"cannot append to {self.path}: {exc.strerror}") from None
            # A partial line is on disk: stop writing until an operator looks.
            raise self._fail(f"cannot append to {self.path}: {exc.strerror}") from None
        if st.st_size != size + len(line):
            raise self._fail(f"{self.path.name} changed while the agent appended to it")
        w = _Walk(self.seq, self.hash, None, self._intents, self._index)
        w.note(entry, self.path, st.st_ino, size)
        self.seq, self.hash = entry["seq"], entry["hash"]
        self._tail = _Tail(st.st_ino, st.st_size, line)
        self._write_head_file()
        return AuditEntry.model_validate(entry)

    def _size(self) -> int:
        try:
            return os.lstat(self.path).st_size
        except FileNotFoundError:
            return 0

    def _rotate(self) -> None:
        rotated = chain_files(self.path)[:-1]
        n = int(rotated[-1].name.rsplit(".", 1)[1]) + 1 if rotated else 1
        target = self.path.with_name(f"{self.path.name}.{n}")
        os.rename(self.path, target)
        for fi in self._index:
            if fi.path == self.path:
                fi.path = target
        os.close(open_nofollow(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        fsync_dir(self.path.parent)

    def _write_head_file(self) -> None:
        """Replace audit.head.json by rename. Not fsync'd on purpose: after a crash it may lag
        the (fsync'd) log, which is harmless; it can never run ahead of it."""
        body = json.dumps({"seq": self.seq, "hash": self.hash, "ts": time.time()}).encode()
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{HEAD_FILE}.", suffix=".tmp", dir=self.path.parent)
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
            os.replace(tmp, self.head_path)
        except OSError as exc:
            log.warning("audit: cannot update %s: %s", self.head_path, exc.strerror)

    # -- the operator's way out
    def seal(self, reason: str, user: str, *, force: bool = False) -> tuple[Path, AuditEntry]:
        """Move a chain that does not verify (or, with `force`, one that does: to retire a long
        history) to archive/ and start a new one that says why."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._locked():
            w, files = _walk_chain(self.path)
            if not files:
                raise AuditError(f"no audit log at {self.path}")
            if not w.problem and not force:
                raise AuditError(
                    f"the chain verifies ({w.entries} entries, head seq {w.seq}); nothing to seal "
                    "(--force archives it all the same)"
                )
            anchor = _read_head_file(self.head_path)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            archive = self.path.parent / ARCHIVE_DIR / f"sealed-{stamp}"
            n = 1
            while archive.exists():
                n += 1
                archive = archive.with_name(f"sealed-{stamp}-{n}")
            archive.mkdir(parents=True, mode=0o700)
            for f in [*files, self.head_path]:
                if f.exists():
                    os.rename(f, archive / f.name)
            fsync_dir(archive)
            fsync_dir(self.path.parent)
            self.seq, self.hash, self.problem = 0, GENESIS_HASH, None
            self._tail, self._index, self._intents = None, [], {}
            entry = self._append_locked(
                {
                    "ts": round(time.time(), 6),
                    "action": "seal",
                    "args": {
                        "reason": reason[:500],
                        "by": user,
                        "archive": str(archive.relative_to(self.path.parent)),
                        "problem": f"seq {w.bad_seq}: {w.problem}"[:500] if w.problem else None,
                        "verified_through_seq": w.seq,
                        "verified_through_hash": w.hash,
                        "old_head_seq": anchor[0] if anchor else None,
                        "old_head_hash": anchor[1] if anchor else None,
                    },
                    "status": "sealed",
                    "http_status": 0,
                }
            )
            return archive, entry

    # -- reading
    def page_json(self, after: int, limit: int) -> bytes:
        """The `/api/v1/audit` page as JSON: entries with seq > after, oldest first, at most
        `limit`, served as the bytes on disk (so verifiers hash exactly what was written).

        An append (the action's thread) writes its line before it moves the head, so a page
        read meanwhile can hold a line past the head it serves, which every verifier must take
        for a truncated log: such lines are left for the next page. (No lock: reads are served
        while the start-up verification holds the writers' lock.)"""
        head_model = self.head()
        head = head_model.model_dump_json().encode()
        lines = self._page_lines(after, limit)
        if self._appending or self.seq != head_model.seq:  # only then can a line pass the head
            while lines and _line_seq(lines[-1]) > head_model.seq:
                lines.pop()
        return b'{"entries":[' + b",".join(lines) + b'],"head":' + head + b"}"

    def _page_lines(self, after: int, limit: int) -> list[bytes]:
        target = after + 1
        index = self._index
        i = bisect.bisect_right([fi.first_seq for fi in index], target) - 1
        if i >= 0:
            fi = index[i]
            k = min((target - fi.first_seq) // STRIDE, len(fi.offsets) - 1)
            if k >= 0:
                at = fi.first_seq + k * STRIDE
                got = self._read(fi.path, fi.ino, fi.offsets[k], at, after, limit)
                if got is not None:
                    return got
        # No index point (an empty log, or written by another process) or the file changed.
        files = chain_files(self.path)
        start = 0
        for j, f in enumerate(files):
            first = _first_seq(f)
            if first is not None and first <= target:
                start = j
        return self._read(files[start], None, 0, None, after, limit) if files else []

    def _read(
        self, path: Path, ino: int | None, offset: int, first: int | None, after: int, limit: int
    ) -> list[bytes] | None:
        """Lines from (path, offset) on, across later files; None when `path` is not the file
        the index expected (then the caller scans)."""
        files = chain_files(self.path)
        try:
            start = files.index(path)
        except ValueError:
            return None
        out: list[bytes] = []
        for n, f in enumerate(files[start:]):
            try:
                fh = f.open("rb")
            except FileNotFoundError:
                if n == 0:
                    return None
                continue
            with fh:
                if n == 0:
                    if ino is not None and os.fstat(fh.fileno()).st_ino != ino:
                        return None
                    fh.seek(offset)
                while raw := fh.readline(MAX_LINE + 1):
                    m = _SEQ_RE.search(raw)
                    seq = int(m.group(1)) if m else None
                    if first is not None:
                        if seq != first:
                            return None
                        first = None
                    if seq is None or seq <= after:
                        continue
                    try:
                        AuditEntry.model_validate_json(raw)
                    except (ValidationError, ValueError):
                        continue
                    out.append(raw.rstrip(b"\r\n"))
                    if len(out) >= limit:
                        return out
        return out


_HASH_RE = re.compile(rb'"hash":"([0-9a-f]{64})"')


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _disk_head(path: Path) -> tuple[int, str] | None:
    """(seq, hash) of the newest complete line on disk, whatever the chain says of it."""
    for f in reversed(chain_files(path)):
        with f.open("rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, end - MAX_LINE))
            lines = fh.read().splitlines(keepends=True)
        for raw in reversed(lines):
            m, h = _SEQ_RE.search(raw), _HASH_RE.search(raw)
            if raw.endswith(b"\n") and m and h:
                return int(m.group(1)), h.group(1).decode()
        if lines:
            return None
    return None


def _first_seq(path: Path) -> int | None:
    with path.open("rb") as fh:
        m = _SEQ_RE.search(fh.readline(MAX_LINE))
    return int(m.group(1)) if m else None


# --- `fleet agent audit verify` / `seal` ---------------------------------------------------


def _resolve(args: argparse.Namespace, cmd: str) -> Path | None:
    from fleettui.agent.config import ConfigError, load_agent_config

    try:
        path = args.path if args.path else load_agent_config(args.config).data_path() / AUDIT_FILE
    except ConfigError as exc:
        print(f"fleet agent audit {cmd}: {exc}", file=sys.stderr)
        return None
    return path / AUDIT_FILE if path.is_dir() else path


def cmd_verify(args: argparse.Namespace) -> int:
    path = _resolve(args, "verify")
    if path is None:
        return 2
    if not chain_files(path):
        hint = ""
        if (path.parent / "nodes").is_dir():
            hint = f"; simulated nodes keep theirs in {path.parent / 'nodes'}/NAME/{AUDIT_FILE}"
        print(
            f"fleet agent audit verify: no audit log at {path} (the agent creates it at the "
            f"first write attempt){hint}",
            file=sys.stderr,
        )
        return 2
    try:
        res = verify_chain(path)
    except OSError as exc:
        print(
            f"fleet agent audit verify: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr
        )
        return 2
    if args.json:
        print(json.dumps(asdict(res), indent=2))
    elif res.ok:
        n = len(res.files)
        pending = ""
        if res.open_intents:
            pending = (
                f"; {len(res.open_intents)} started without an outcome (seq "
                f"{', '.join(map(str, res.open_intents[:5]))}): running now, or interrupted"
            )
        print(
            f"audit chain OK: {res.entries} entries in {n} file{'s' * (n != 1)}, "
            f"head seq {res.head_seq} hash {res.head_hash[:16]}{pending}"
        )
    else:
        where = f"{res.file}" + (f" line {res.line}" if res.line else "")
        print(
            f"audit chain BROKEN at seq {res.bad_seq} ({where}): {res.reason}; "
            f"{res.entries} entries before it verify. The agent refuses actions until an "
            f"operator runs: fleet agent audit seal --reason TEXT",
        )
    return 0 if res.ok else 1


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def cmd_seal(args: argparse.Namespace) -> int:
    path = _resolve(args, "seal")
    if path is None:
        return 2
    reason = " ".join(args.reason.split())
    if not reason:
        print("fleet agent audit seal: --reason must say why", file=sys.stderr)
        return 2
    try:
        archive, entry = AuditLog(path).seal(reason, _user(), force=args.force)
    except AuditError as exc:
        print(f"fleet agent audit seal: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fleet agent audit seal: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    print(
        f"sealed: the damaged chain is in {archive}; a new chain starts at seq {entry.seq} "
        f"(hash {entry.hash[:16]}) recording why. A running agent accepts actions again at its "
        "next write; aggregators that pinned the old chain will report it rewritten."
    )
    return 0


def _line_seq(line: bytes) -> int:
    """The seq of a raw log line (-1 when it has none: such a line is served as it is)."""
    try:
        seq = json.loads(line).get("seq")
    except (ValueError, AttributeError):
        return -1
    return seq if isinstance(seq, int) else -1
