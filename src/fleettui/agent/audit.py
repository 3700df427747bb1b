"""The hash-chained audit log: append (fsync'd), rotate, read pages, verify.

Files: `audit.jsonl` is the live file; at 10 MB it is renamed to `audit.jsonl.N`, N one more
than the highest existing number (so `.1` is the oldest: a rotation is one rename, never a
cascade), and the chain simply continues in a fresh live file. Each line is the canonical JSON of
a `wire.AuditEntry`; `hash = sha256(prev_hash + canonical_json(entry without hash))`.

Appends hold an exclusive flock on a sidecar lock file and re-read the head when the live file
changed under them, so even two processes writing one log keep one valid chain.

The chain alone cannot show that the newest lines were cut off, so every append also records the
head in `audit.head.json`; `verify` and the agent's start-up check compare against it. That
catches accidental or naive truncation only: someone who can rewrite the files can rewrite that
one too. The defence against a full rewrite is remote: the aggregator pins the head it verified.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fleettui.fsutil import fsync_dir, open_nofollow
from fleettui.wire import GENESIS_HASH, AuditEntry, AuditHead, AuditPage, audit_hash, canonical_json

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
HEAD_FILE = "audit.head.json"
ROTATE_BYTES = 10 * 1024 * 1024
MAX_LINE = 256 * 1024
_SEQ_RE = re.compile(rb'"seq":(\d+)')


class AuditError(Exception):
    """The audit log cannot be appended to; writes are refused until an operator looks."""


def chain_files(path: Path) -> list[Path]:
    """Every file of the chain, oldest first: audit.jsonl.1, .2, ..., then audit.jsonl."""
    rotated: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        prefix = path.name + "."
        for p in path.parent.iterdir():
            suffix = p.name[len(prefix) :] if p.name.startswith(prefix) else ""
            if suffix.isdigit() and not suffix.startswith("0"):
                rotated.append((int(suffix), p))
    files = [p for _, p in sorted(rotated)]
    if path.exists():
        files.append(path)
    return files


def _last_line(path: Path) -> bytes:
    """The final line of a file (with its newline, if it has one), read from the end."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        if end == 0:
            return b""
        pos, buf = end, b""
        while pos > 0:
            step = min(8192, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            cut = buf.rfind(b"\n", 0, len(buf) - 1)
            if cut >= 0:
                return buf[cut + 1 :]
            if len(buf) > MAX_LINE:
                return buf
        return buf


def _first_seq(path: Path) -> int | None:
    with path.open("rb") as fh:
        m = _SEQ_RE.search(fh.readline(MAX_LINE))
    return int(m.group(1)) if m else None


def _check_entry(raw: bytes, expected_seq: int, prev_hash: str) -> tuple[dict[str, Any], str]:
    """Parse one line and check it against the chain; returns (entry, problem or '')."""
    if not raw.endswith(b"\n"):
        return {}, "line is incomplete (no newline: a torn write or a cut file)"
    try:
        d = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}, "line is not valid JSON"
    if not isinstance(d, dict):
        return {}, "line is not a JSON object"
    seq = d.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return d, "seq is missing or not an integer"
    if seq > expected_seq:
        return d, f"seq {expected_seq} is missing (found seq {seq}: lines deleted?)"
    if seq < expected_seq:
        return d, f"found seq {seq} where seq {expected_seq} belongs (reordered or inserted?)"
    if d.get("prev_hash") != prev_hash:
        return d, "prev_hash does not match the previous entry's hash (this or that was altered)"
    if d.get("hash") != audit_hash(d):
        return d, "hash does not match the entry's content (entry edited)"
    try:
        canonical = AuditEntry.model_validate(d).model_dump(mode="json")
    except ValidationError as exc:
        return d, f"not an audit entry: {exc.errors()[0]['msg']}"
    if canonical != d:
        return d, "fields differ from the audit entry schema (added, removed or retyped)"
    return d, ""


def _read_head_file(path: Path) -> tuple[int, str] | None:
    """(seq, hash) recorded by the last append; None when absent or unreadable (a crash can
    leave it empty, and deleting it is as easy as corrupting it, so neither is evidence)."""
    try:
        d = json.loads(path.read_bytes())
        return int(d["seq"]), str(d["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- verification -----------------------------------------------------------------------


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


def verify_chain(path: Path) -> VerifyResult:
    """Check every entry of every file of the chain; stop at the first bad one."""
    files = chain_files(path)
    res = VerifyResult(ok=True, path=str(path), files=[str(f) for f in files])
    anchor = _read_head_file(path.parent / HEAD_FILE)
    expected, prev = 1, GENESIS_HASH
    anchor_hash: str | None = None
    for f in files:
        with f.open("rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                d, problem = _check_entry(raw, expected, prev)
                if problem:
                    bad = expected
                    if d.get("seq") == expected - 1 and expected > 1:
                        bad = expected - 1
                        problem = f"seq {bad} appears twice (a line was inserted)"
                    res.ok = False
                    res.bad_seq, res.file, res.line, res.reason = bad, str(f), lineno, problem
                    return res
                if anchor and anchor[0] == expected:
                    anchor_hash = d["hash"]
                prev = d["hash"]
                res.entries += 1
                res.head_seq, res.head_hash = expected, prev
                expected += 1
    if anchor is not None:
        seq, h = anchor
        bad = ""
        if seq > res.head_seq:
            bad = (
                f"the log ends at seq {res.head_seq} but {HEAD_FILE} records seq {seq}: "
                f"entries {res.head_seq + 1}..{seq} were deleted"
            )
            res.bad_seq = res.head_seq + 1
        elif seq > 0 and anchor_hash != h:
            bad = f"seq {seq} differs from the hash recorded in {HEAD_FILE} (entry rewritten)"
            res.bad_seq = seq
        if bad:
            res.ok, res.reason = False, bad
            res.file = str(files[-1]) if files else str(path)
    return res


# --- the writer -----------------------------------------------------------------------------


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
        self._stamp: tuple[int, int] | None = None
        self._tlock = threading.Lock()

    # -- state
    def head(self) -> AuditHead:
        return AuditHead(seq=self.seq, head_hash=self.hash)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._tlock:
            fd = open_nofollow(self.lock_path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def open(self) -> None:
        """Load and check the head. Nothing is created until the first append, so a thousand
        simulated nodes that never act leave no files behind."""
        if not self.path.parent.is_dir():
            return
        with self._locked():
            self._load_head()
        if self.problem:
            log.error(
                "audit log %s: %s; actions are refused until it is fixed", self.path, self.problem
            )

    def _live_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size

    def _load_head(self) -> None:
        """Head = the newest entry on disk; a torn or edited tail or a cut log is a problem."""
        self.seq, self.hash, self.problem = 0, GENESIS_HASH, None
        for f in reversed(chain_files(self.path)):
            raw = _last_line(f)
            if not raw:
                continue
            try:
                d = json.loads(raw)
                seq, h = int(d["seq"]), str(d["hash"])
            except (ValueError, KeyError, TypeError):
                self.problem = (
                    f"the last line of {f.name} is damaged (run: fleet agent audit verify)"
                )
                return
            if not raw.endswith(b"\n") or audit_hash(d) != h:
                self.problem = f"the last entry (seq {seq}) of {f.name} does not verify"
                return
            self.seq, self.hash = seq, h
            break
        anchor = _read_head_file(self.head_path)
        if anchor is not None and (
            anchor[0] > self.seq or (anchor[0] == self.seq and anchor[1] != self.hash)
        ):
            self.problem = (
                f"the log ends at seq {self.seq} but {HEAD_FILE} records seq {anchor[0]}: "
                "entries were removed or rewritten"
            )
            return
        self._stamp = self._live_stamp()

    # -- writing
    def append(self, fields: dict[str, Any]) -> AuditEntry:
        """Append one entry (fsync'd) and return it. Raises AuditError when the log is unusable."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._locked():
            if self._live_stamp() != self._stamp:  # another writer, a rotation, or a fresh start
                self._load_head()
            if self.problem:
                raise AuditError(self.problem)
            entry = AuditEntry(seq=self.seq + 1, prev_hash=self.hash, hash="", **fields).model_dump(
                mode="json"
            )
            entry["hash"] = audit_hash(entry)
            line = canonical_json(entry) + b"\n"
            size = self._stamp[1] if self._stamp else 0
            if size and size + len(line) > self.rotate_bytes:
                self._rotate()
            try:
                fd = open_nofollow(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                # A partial line may be on disk: stop writing until an operator looks.
                self.problem = f"cannot append to {self.path}: {exc.strerror}"
                raise AuditError(self.problem) from None
            self.seq, self.hash = entry["seq"], entry["hash"]
            self._stamp = self._live_stamp()
            self._write_head_file()
            return AuditEntry.model_validate(entry)

    def _rotate(self) -> None:
        rotated = chain_files(self.path)[:-1]
        n = int(rotated[-1].name.rsplit(".", 1)[1]) + 1 if rotated else 1
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{n}"))
        os.close(open_nofollow(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        fsync_dir(self.path.parent)
        self._stamp = self._live_stamp()

    def _write_head_file(self) -> None:
        """Replace audit.head.json by rename. Not fsync'd on purpose: after a crash it may lag
        the (fsync'd) log, which is harmless; it can never run ahead of it."""
        body = json.dumps({"seq": self.seq, "hash": self.hash, "ts": time.time()}).encode()
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{HEAD_FILE}.", dir=self.path.parent)
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
            os.replace(tmp, self.head_path)
        except OSError as exc:
            log.warning("audit: cannot update %s: %s", self.head_path, exc.strerror)

    # -- reading
    def page(self, after: int, limit: int) -> AuditPage:
        """Entries with seq > after, oldest first, at most `limit`; unparseable lines skipped."""
        files = chain_files(self.path)
        start = 0
        for i, f in enumerate(files):
            first = _first_seq(f)
            if first is not None and first <= after + 1:
                start = i
        entries: list[AuditEntry] = []
        for f in files[start:]:
            with f.open("rb") as fh:
                for raw in fh:
                    m = _SEQ_RE.search(raw)
                    if not m or int(m.group(1)) <= after:
                        continue
                    try:
                        entries.append(AuditEntry.model_validate_json(raw))
                    except ValidationError:
                        continue
                    if len(entries) >= limit:
                        return AuditPage(entries=entries, head=self.head())
        return AuditPage(entries=entries, head=self.head())


# --- `fleet agent audit verify` -----------------------------------------------------------


def default_audit_path(config_path: Path | None) -> Path:
    from fleettui.agent.config import load_agent_config

    return load_agent_config(config_path).data_path() / AUDIT_FILE


def cmd_verify(args: argparse.Namespace) -> int:
    from fleettui.agent.config import ConfigError

    try:
        path = args.path if args.path else default_audit_path(args.config)
    except ConfigError as exc:
        print(f"fleet agent audit verify: {exc}", file=sys.stderr)
        return 2
    if path.is_dir():
        path = path / AUDIT_FILE
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
        print(
            f"audit chain OK: {res.entries} entries in {n} file{'s' * (n != 1)}, "
            f"head seq {res.head_seq} hash {res.head_hash[:16]}"
        )
    else:
        where = f"{res.file}" + (f" line {res.line}" if res.line else "")
        print(
            f"audit chain BROKEN at seq {res.bad_seq} ({where}): {res.reason}; "
            f"{res.entries} entries before it verify",
        )
    return 0 if res.ok else 1
