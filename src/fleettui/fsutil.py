"""Crash-safe file writes shared by every layer that persists something.

A crash must never leave a half-written config, token, state or audit file, and a file that
holds secrets must never be written through a symlink an attacker planted.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from pathlib import Path


class UnsafePathError(OSError):
    """The target path is a symlink (or its parent is not a directory)."""


def refuse_symlink(path: Path) -> None:
    if path.is_symlink():
        raise UnsafePathError(f"refusing to write through symlink: {path}")


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the target."""
    path = Path(path)
    refuse_symlink(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_new(directory: Path, stem: str, suffix: str, data: str, tries: int = 100) -> Path:
    """Write `data` to `directory/stem+suffix`, or `stem-2`, `stem-3`... whichever is free:
    never over an existing file, never through a symlink (os.link refuses any existing
    name), and never half-written (temp, fsync, then the link). Returns the path."""
    directory = Path(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o644)  # a picture to share, not a secret
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        for n in range(1, tries + 1):
            path = directory / f"{stem}{'' if n == 1 else f'-{n}'}{suffix}"
            try:
                os.link(tmp, path, follow_symlinks=False)
            except FileExistsError:
                continue
            fsync_dir(directory)
            return path
        raise FileExistsError(f"{directory / (stem + suffix)}: {tries} such files exist already")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory entry too."""
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open that refuses a symlink at the final component."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


STALE_TEMP_S = 60.0  # older than any atomic_write still in flight in another process


def remove_stale_temps(directory: Path, name: str, *, older_than_s: float) -> list[Path]:
    """Delete temp files a killed writer of `name` left in `directory` (mkstemp's
    `.NAME.XXXXXXXX` with or without `.tmp`), at least `older_than_s` old so a write in flight
    in another process is left alone. They can hold secrets (a token file being rewritten)."""
    pattern = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}(\.tmp)?")
    removed: list[Path] = []
    try:
        candidates = [p for p in Path(directory).iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return removed
    now = time.time()
    for p in candidates:
        with contextlib.suppress(OSError):
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= older_than_s:
                os.unlink(p)
                removed.append(p)
    return removed
