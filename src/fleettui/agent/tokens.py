"""Action tokens: creation, storage and constant-time checking, plus `fleet agent token ...`.

A secret is `tok_<8 hex>.<43 url-safe chars>` (32 random bytes). The id before the dot is not
secret; it lets the agent find the one stored record to compare against, and it names the token
in the audit log. Only a salted hash of the secret is stored, in `tokens.json` next to the agent
config (mode 0600, never written through a symlink, read-modify-write under an exclusive flock
on a sidecar lock file so concurrent `create` calls cannot lose each other's tokens).

Why HMAC-SHA256 and not a slow KDF: slow KDFs exist to protect guessable passwords. These secrets
carry 256 bits of randomness, so brute-forcing a stored hash is infeasible at any hash speed,
while a per-request KDF would cost tens of milliseconds of CPU on every authenticated call and
hand a cheap denial-of-service lever to anyone who can reach the port.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fleettui.fsutil import UnsafePathError, atomic_write, open_nofollow

log = logging.getLogger(__name__)

TOKENS_FILE = "tokens.json"
FILE_VERSION = 1
ID_RE = re.compile(r"^tok_[0-9a-f]{8}$")
# Anything shaped like one of our secrets, anywhere in a string: used to redact.
SECRET_SHAPE_RE = re.compile(r"tok_[0-9a-f]{8}\.[A-Za-z0-9_-]{43}")
LAST_USED_PERSIST_S = 60.0
MAX_LABEL = 100
MAX_FILE_BYTES = 4 * 1024 * 1024
# Compared against when the presented id is unknown, so every 401 costs the same work.
_DUMMY_SALT = secrets.token_bytes(16)
_DUMMY_HASH = hmac.new(_DUMMY_SALT, secrets.token_bytes(32), hashlib.sha256).hexdigest()


class TokenError(Exception):
    """The tokens file or a token operation cannot be used; the message names file and reason."""


@dataclass
class TokenRecord:
    id: str
    label: str
    created: float
    salt: str
    hash: str
    last_used: float | None = None
    revoked: float | None = None
    rotated_from: str | None = None
    rotated_to: str | None = None

    def public(self) -> dict[str, Any]:
        """What `token list` may show: everything except salt and hash."""
        d = asdict(self)
        del d["salt"], d["hash"]
        return d


def tokens_path(config_path: Path | None = None) -> Path:
    """tokens.json lives beside agent.toml: the directory of --config, else the default one."""
    from fleettui.agent.config import default_config_path

    return (config_path or default_config_path()).parent / TOKENS_FILE


def hash_secret(salt: bytes, secret: str) -> str:
    return hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()


def split_secret(secret: str) -> str | None:
    """The token id a presented secret claims, or None when it is not shaped like ours."""
    tid, dot, _ = secret.partition(".")
    return tid if dot and ID_RE.fullmatch(tid) else None


# --- file I/O ------------------------------------------------------------------------------


def _read_records(path: Path) -> list[TokenRecord]:
    """Parse tokens.json; a missing file is no tokens, a broken one raises TokenError."""
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if path.is_symlink():
            raise TokenError(f"{path}: is a symlink; refusing to read tokens through it") from None
        raise TokenError(f"{path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise TokenError(f"{path}: larger than {MAX_FILE_BYTES} bytes; not a tokens file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise TokenError(f'{path}: expected an object with a "tokens" list')
    out = []
    for i, item in enumerate(data["tokens"]):
        try:
            rec = TokenRecord(**item)
        except TypeError as exc:
            raise TokenError(f"{path}: tokens[{i}]: {exc}") from None
        if not ID_RE.fullmatch(str(rec.id)):
            raise TokenError(f"{path}: tokens[{i}].id: {rec.id!r} is not a token id")
        out.append(rec)
    return out


def _write_records(path: Path, records: list[TokenRecord]) -> None:
    body = {"version": FILE_VERSION, "tokens": [asdict(r) for r in records]}
    try:
        atomic_write(path, json.dumps(body, indent=2) + "\n", mode=0o600)
    except UnsafePathError as exc:
        raise TokenError(str(exc)) from None
    except OSError as exc:
        raise TokenError(f"{path}: cannot write: {exc.strerror}") from None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[list[TokenRecord]]:
    """Read-modify-write: yields the records; whatever the caller leaves in the list is saved.

    The exclusive flock is on a sidecar file (`.tokens.json.lock`), because the data file itself
    is replaced by rename on every write and a lock on a replaced inode protects nothing.
    """
    lock = path.parent / f".{path.name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise TokenError(f"{path.parent}: a file is in the way of this directory") from None
    except OSError as exc:
        raise TokenError(f"{path.parent}: cannot create: {exc.strerror}") from None
    try:
        fd = open_nofollow(lock, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise TokenError(f"{lock}: cannot open lock file: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        records = _read_records(path)
        before = [asdict(r) for r in records]
        yield records
        if [asdict(r) for r in records] != before:
            _write_records(path, records)
    finally:
        os.close(fd)  # closing releases the flock


def _new_record(label: str, taken: set[str], rotated_from: str | None = None) -> tuple[Any, str]:
    label = label.strip()
    if not label or len(label) > MAX_LABEL or any(ord(c) < 32 or ord(c) == 127 for c in label):
        raise TokenError(f"label must be 1-{MAX_LABEL} printable characters")
    while True:
        secret = new_secret()
        tid = secret.partition(".")[0]
        if tid not in taken:
            break
    return _record(tid, label, secret, rotated_from), secret


def new_secret() -> str:
    """A token secret: its id, a dot, 256 random bits (`fleet enroll` makes one for a node)."""
    return f"tok_{secrets.token_hex(4)}.{secrets.token_urlsafe(32)}"


def _record(tid: str, label: str, secret: str, rotated_from: str | None = None) -> TokenRecord:
    salt = secrets.token_bytes(16)
    return TokenRecord(
        id=tid,
        label=label,
        created=round(time.time(), 3),
        salt=salt.hex(),
        hash=hash_secret(salt, secret),
        rotated_from=rotated_from,
    )


def create_token(path: Path, label: str) -> tuple[str, str]:
    """Add a token; returns (id, secret). The secret exists only in the return value."""
    with locked(path) as records:
        rec, secret = _new_record(label, {r.id for r in records})
        records.append(rec)
    return rec.id, secret


def import_token(path: Path, label: str, secret: str) -> str:
    """Store a secret made elsewhere (a join code's), hashed like every other; returns its id."""
    tid = split_secret(secret)
    if tid is None or not SECRET_SHAPE_RE.fullmatch(secret):
        raise TokenError("the token is not shaped like a fleettui token")
    with locked(path) as records:
        if any(r.id == tid for r in records):
            raise TokenError(f"{path}: a token {tid} is there already (this code was used?)")
        label = label.strip()[:MAX_LABEL]
        records.append(_record(tid, label, secret))
    return tid


def _find(records: list[TokenRecord], tid: str, path: Path) -> TokenRecord:
    for r in records:
        if r.id == tid:
            return r
    raise TokenError(f"{path}: no token with id {tid!r} (see `fleet agent token list`)")


def revoke_token(path: Path, tid: str) -> bool:
    """Revoke; returns False when it was already revoked (revoking twice is not an error)."""
    with locked(path) as records:
        rec = _find(records, tid, path)
        if rec.revoked is not None:
            return False
        rec.revoked = round(time.time(), 3)
    return True


def rotate_token(path: Path, tid: str) -> tuple[str, str]:
    """Revoke `tid` and issue a new token with the same label, in one locked write."""
    with locked(path) as records:
        old = _find(records, tid, path)
        rec, secret = _new_record(old.label, {r.id for r in records}, rotated_from=old.id)
        old.revoked = old.revoked or round(time.time(), 3)
        old.rotated_to = rec.id
        records.append(rec)
    return rec.id, secret


def list_tokens(path: Path) -> list[TokenRecord]:
    return _read_records(path)


# --- the agent's view ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    token_id: str | None  # set when the presented id is a known token (even a revoked one)
    reason: str  # for the audit log only; every failure gets the same HTTP response


class TokenStore:
    """The agent's cached view of tokens.json, re-read whenever the file changes.

    `refresh` and `persist_last_used` do file I/O: call them from a worker thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, TokenRecord] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._persisted_use: dict[str, float] = {}
        self._pending_use: dict[str, float] = {}
        self._lock = threading.Lock()
        self.problem: str | None = None

    def refresh(self) -> None:
        """Reload when (inode, size, mtime) changed: a revoke takes effect on the next request."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            self._fail(f"{self.path}: cannot stat: {exc.strerror}")
            return
        with self._lock:
            if stamp == self._stamp and self.problem is None:
                return
            try:
                records = _read_records(self.path) if stamp is not None else []
            except TokenError as exc:
                self._fail(str(exc))
                return
            self._records = {r.id: r for r in records}
            for r in records:
                if r.last_used is not None:
                    self._persisted_use[r.id] = max(r.last_used, self._persisted_use.get(r.id, 0.0))
            self._stamp = stamp
            self.problem = None

    def _fail(self, message: str) -> None:
        """A broken tokens file denies every token (fail closed) and says why once."""
        if self.problem != message:
            log.error("tokens: %s; every token is refused until this is fixed", message)
        self.problem = message
        self._records = {}
        self._stamp = None

    def check(self, secret: str | None) -> AuthResult:
        """Constant-time check: unknown, revoked and wrong secrets cost the same and look alike."""
        if not secret:
            hmac.compare_digest(_DUMMY_HASH, hash_secret(_DUMMY_SALT, ""))
            return AuthResult(False, None, "missing token")
        tid = split_secret(secret)
        rec = self._records.get(tid) if tid else None
        if rec is None:
            hmac.compare_digest(_DUMMY_HASH, hash_secret(_DUMMY_SALT, secret))
            return AuthResult(False, None, "unknown token")
        match = hmac.compare_digest(rec.hash, hash_secret(bytes.fromhex(rec.salt), secret))
        if not match:
            return AuthResult(False, rec.id, "wrong secret")
        if rec.revoked is not None:
            return AuthResult(False, rec.id, "revoked token")
        return AuthResult(True, rec.id, "ok")

    def note_use(self, tid: str, now: float) -> bool:
        """Remember a use; True when it is time to persist (first use, then once a minute)."""
        self._pending_use[tid] = now
        return now - self._persisted_use.get(tid, 0.0) >= LAST_USED_PERSIST_S

    def persist_last_used(self) -> None:
        """Write pending last_used stamps; a read-only config dir only costs a warning."""
        pending, self._pending_use = self._pending_use, {}
        if not pending:
            return
        try:
            with locked(self.path) as records:
                for r in records:
                    if r.id in pending and (r.last_used or 0.0) < pending[r.id]:
                        r.last_used = round(pending[r.id], 3)
        except TokenError as exc:
            log.warning("tokens: cannot record last use: %s", exc)
        for tid, ts in pending.items():
            self._persisted_use[tid] = ts


# --- `fleet agent token ...` ----------------------------------------------------------------


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _fail(message: str) -> int:
    print(f"fleet agent token: {message}", file=sys.stderr)
    return 2


def _print_secret(args: argparse.Namespace, tid: str, secret: str, extra: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps({"id": tid, "secret": secret, **extra}))
        return
    for k, v in extra.items():
        print(f"{k}: {v}")
    print(f"token id: {tid}")
    print(f"secret:   {secret}")
    print(
        "The secret is shown once and stored only as a hash; keep it in a secret manager or an\n"
        "environment variable (fleet add NODE --url URL --token-env VAR).",
        file=sys.stderr,
    )


def _cli_path(args: argparse.Namespace) -> Path:
    """tokens.json for a command; an explicit --config must be a usable agent.toml, so a typo
    cannot put tokens in a directory the agent never reads. Raises ConfigError."""
    from fleettui.agent.config import load_agent_config

    if args.config is not None:
        load_agent_config(args.config)
    return tokens_path(args.config)


def cmd_create(args: argparse.Namespace) -> int:
    from fleettui.agent.config import ConfigError

    try:
        tid, secret = create_token(_cli_path(args), args.label)
    except (TokenError, ConfigError) as exc:
        return _fail(str(exc))
    _print_secret(args, tid, secret, {})
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from fleettui.agent.config import ConfigError

    try:
        tid, secret = rotate_token(_cli_path(args), args.id)
    except (TokenError, ConfigError) as exc:
        return _fail(str(exc))
    _print_secret(args, tid, secret, {"revoked": args.id})
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from fleettui.agent.config import ConfigError

    try:
        changed = revoke_token(_cli_path(args), args.id)
    except (TokenError, ConfigError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps({"id": args.id, "revoked": True, "already_revoked": not changed}))
    else:
        print(f"{args.id} {'revoked' if changed else 'was already revoked'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from fleettui.agent.config import ConfigError

    try:
        path = _cli_path(args)
        records = list_tokens(path)
    except (TokenError, ConfigError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps([r.public() for r in records], indent=2))
        return 0
    if not records:
        print(f"no tokens in {path}; create one with: fleet agent token create --label NAME")
        return 0
    rows = [("ID", "LABEL", "CREATED", "LAST USED", "STATUS")]
    for r in records:
        status = "active"
        if r.revoked is not None:
            status = f"revoked {_fmt_time(r.revoked)}"
            if r.rotated_to:
                status += f" (rotated to {r.rotated_to})"
        rows.append((r.id, r.label, _fmt_time(r.created), _fmt_time(r.last_used), status))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0
