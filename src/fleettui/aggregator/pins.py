"""Audit pins that outlive the process: what this operator has verified of each node's chain.

One small JSON file per node in the XDG state dir (`audit-pins/`), written atomically (0600, never
through a symlink) under an exclusive lock, so every view and `fleet status` load, extend and
share the same pins. A pin is keyed by the node's address as the operator configured it
(normalised URL), never by anything the node says about itself: a renamed config entry with the
same URL keeps its pin, another node under the same name (another URL) starts fresh, and a node
that rewrites its log cannot shed its pin by changing its hostname.

Each record holds the newest verified `(seq, hash)`, the hash of every CHECKPOINT_EVERY-th entry
(what a rotating sweep compares whole pages against, and what catches a full rewrite), when each
page was last verified (so one-shot runs re-read the least recently verified pages first and
sweep the whole log over a few runs), and, once seen, why the chain is BROKEN: sticky until
`fleet audit forget` starts a new epoch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from fleettui.fsutil import atomic_write, open_nofollow
from fleettui.wire import GENESIS_HASH

CHECKPOINT_EVERY = 200  # = the audit page size: one sweep request covers one checkpoint gap
FORMAT = 1
HEX64 = frozenset("0123456789abcdef")


class PinFileError(Exception):
    """A pin file exists but cannot be used; it is left alone until an operator looks."""


def node_key(url: str) -> str:
    """The identity a pin is kept under: scheme, lower-cased host, explicit port, path."""
    parts = urlsplit(url.strip())
    scheme = (parts.scheme or "http").lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or (443 if scheme == "https" else 80)
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


@dataclass
class Pin:
    """One node's verified chain as this operator knows it."""

    key: str
    epoch: str | None = None  # None until first saved; `fleet audit forget` starts a new one
    seq: int = 0
    hash: str = GENESIS_HASH
    checkpoints: dict[int, str] = field(default_factory=dict)
    # page start seq (a multiple of CHECKPOINT_EVERY) -> wall time that page was last verified
    swept: dict[int, float] = field(default_factory=dict)
    broken: str | None = None  # "seq N: why", sticky
    hostname: str | None = None  # what the node called itself when pinned, for the BROKEN hint
    name: str | None = None  # the config name last seen, for messages

    def known(self, seq: int) -> str | None:
        """The hash this pin holds for `seq`, if any."""
        return self.hash if seq == self.seq and seq > 0 else self.checkpoints.get(seq)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "key": self.key,
            "epoch": self.epoch,
            "seq": self.seq,
            "hash": self.hash,
            "checkpoints": {str(k): v for k, v in sorted(self.checkpoints.items())},
            "swept": {str(k): v for k, v in sorted(self.swept.items())},
            "broken": self.broken,
            "hostname": self.hostname,
            "name": self.name,
            "saved_at": time.time(),
        }

    @classmethod
    def from_json(cls, d: Any, key: str) -> Pin:
        """Strict: a pin that does not parse is not silently replaced by an empty one."""
        try:
            if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("key") != key:
                raise ValueError("not a pin record for this node")
            cps = {int(k): _hash(v) for k, v in d["checkpoints"].items()}
            seq = d["seq"]
            if type(seq) is not int or seq < 0 or any(k <= 0 or k > seq for k in cps):
                raise ValueError("seq out of range")
            # absent from the pins written before one-shot runs spot-checked pages
            swept = {int(k): _time(v) for k, v in d.get("swept", {}).items()}
            if any(k < 0 or k >= seq or k % CHECKPOINT_EVERY for k in swept):
                raise ValueError("a swept page out of range")
            return cls(
                key=key,
                epoch=_opt_str(d.get("epoch")),
                seq=seq,
                hash=_hash(d["hash"]),
                checkpoints=cps,
                swept=swept,
                broken=_opt_str(d.get("broken")),
                hostname=_opt_str(d.get("hostname")),
                name=_opt_str(d.get("name")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PinFileError(f"not a valid pin record ({exc})") from None


def _hash(v: Any) -> str:
    if not isinstance(v, str) or len(v) != 64 or not set(v) <= HEX64:
        raise ValueError("a hash is not 64 hex digits")
    return v


def _time(v: Any) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
        raise ValueError("a swept time is not a finite time")
    return float(v)


def _opt_str(v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise ValueError("expected a string")
    return v


def merge(disk: Pin, mine: Pin) -> Pin:
    """Two views of one node's chain (same epoch): keep everything either verified.

    A seq both pinned with different hashes means the node served two histories: BROKEN.
    """
    out = replace(disk, checkpoints=dict(disk.checkpoints), swept=dict(disk.swept))
    for start, at in mine.swept.items():
        out.swept[start] = max(at, out.swept.get(start, 0.0))
    out.hostname = mine.hostname or disk.hostname
    out.name = mine.name or disk.name
    conflict: str | None = None
    for seq, h in mine.checkpoints.items():
        theirs = out.checkpoints.setdefault(seq, h)
        if theirs != h and conflict is None:
            conflict = f"seq {seq}: another fleet process verified a different entry there"
    if mine.seq > disk.seq:
        if (theirs := disk.known(mine.seq)) is not None and theirs != mine.hash:
            conflict = (
                conflict or f"seq {mine.seq}: another fleet process verified a different entry"
            )
        out.seq, out.hash = mine.seq, mine.hash
    elif mine.seq == disk.seq and mine.hash != disk.hash and conflict is None:
        conflict = f"seq {mine.seq}: another fleet process verified a different entry there"
    elif mine.seq < disk.seq and (theirs := mine.known(disk.seq)) is not None:
        if theirs != disk.hash and conflict is None:
            conflict = f"seq {disk.seq}: another fleet process verified a different entry there"
    out.broken = disk.broken or mine.broken or conflict
    return out


class PinStore:
    """Per-node pin files in one directory. Blocking file I/O: call from a worker thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stamps: dict[str, tuple[int, int, int] | None] = {}
        self._tlock = threading.Lock()

    @classmethod
    def default(cls) -> PinStore:
        return cls(Path(platformdirs.user_state_dir("fleettui")) / "audit-pins")

    def path_for(self, key: str) -> Path:
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._tlock:
            fd = open_nofollow(self.root / ".lock", os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _stamp(self, path: Path) -> tuple[int, int, int] | None:
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _read(self, key: str) -> Pin | None:
        path = self.path_for(key)
        try:
            fd = open_nofollow(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise PinFileError(f"{path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(16 * 1024 * 1024)
        try:
            return Pin.from_json(json.loads(raw), key)
        except ValueError as exc:  # PinFileError is not a ValueError; JSON errors are
            raise PinFileError(f"{path}: not JSON ({exc})") from None
        except PinFileError as exc:
            raise PinFileError(f"{path}: {exc}") from None

    def _write(self, pin: Pin) -> None:
        path = self.path_for(pin.key)
        atomic_write(path, json.dumps(pin.to_json(), indent=1) + "\n", mode=0o600)
        self._stamps[pin.key] = self._stamp(path)

    def load(self, key: str) -> Pin | None:
        """No lock: files are only ever replaced whole (rename), so a read sees one version;
        and a state dir that cannot be written can still be read."""
        stamp = self._stamp(self.path_for(key))
        pin = self._read(key)
        self._stamps[key] = stamp
        return pin

    def changed(self, key: str) -> bool:
        """Whether the file moved since this store last read or wrote it (another process)."""
        return self._stamp(self.path_for(key)) != self._stamps.get(key)

    def sync(self, mine: Pin) -> tuple[Pin, bool]:
        """Merge `mine` with what is on disk, save the result; returns (pin, reset).

        `reset` is True when an operator re-pinned the node since `mine` was loaded (another
        epoch on disk): the caller drops what it verified and starts from the disk's pin.
        """
        with self._locked():
            disk = self._read(mine.key)
            if disk is not None and mine.epoch is not None and disk.epoch != mine.epoch:
                self._stamps[mine.key] = self._stamp(self.path_for(mine.key))
                return disk, True
            if disk is None:
                out = replace(mine, epoch=mine.epoch or secrets.token_hex(8))
            else:
                out = merge(disk, mine)
            if out != disk:
                self._write(out)
            else:
                self._stamps[mine.key] = self._stamp(self.path_for(mine.key))
            return out, False

    def forget(self, key: str, name: str) -> Pin | None:
        """Start a new epoch with nothing pinned; returns the pin that was dropped."""
        with self._locked():
            try:
                old = self._read(key)
            except PinFileError:
                old = None  # forgetting is how an operator gets past an unusable file
            path = self.path_for(key)
            if path.is_symlink():
                path.unlink()
            self._write(Pin(key=key, epoch=secrets.token_hex(8), name=name))
            return old
