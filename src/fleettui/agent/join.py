"""`fleet agent join CODE`: install what a join code carries, on the node, from the code alone.

The code is checked (enrol.read_code: signature, certificates, expiry), its nonce is recorded
as used before anything is installed (a second use is refused even if this one fails half way:
the operator makes a new code in a second), then the certificate, key and CA go beside
agent.toml under tls/, the token into tokens.json (hashed), and agent.toml gets its tls_cert,
tls_key and tls_client_ca lines. Every write is atomic and refuses symlinks; keys are 0600.
The code itself is never written anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fleettui.agent.config import (
    AgentConfig,
    ConfigError,
    default_config_path,
    format_validation_error,
    load_agent_config,
)
from fleettui.enrol import MAX_CODE, JoinError, nonce_hash, read_code
from fleettui.fsutil import UnsafePathError, atomic_write, open_nofollow

USED_FILE = "joins.json"
MAX_USED = 10_000  # entries past their expiry are dropped, so this is only a backstop


def _fail(message: str) -> int:
    print(f"fleet agent join: {message}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _used_nonces(path: Path) -> Iterator[dict[str, float]]:
    """The node's record of used codes (nonce hash -> expiry), locked; saved when changed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = open_nofollow(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        used: dict[str, float] = {}
        try:
            rfd = open_nofollow(path, os.O_RDONLY)
            with os.fdopen(rfd, "rb") as fh:
                data = json.loads(fh.read(4 << 20) or b"{}")
            if isinstance(data, dict) and isinstance(data.get("used"), dict):
                used = {
                    k: float(v)
                    for k, v in data["used"].items()
                    if isinstance(k, str) and isinstance(v, int | float)
                }
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            raise JoinError(f"{path}: cannot read the record of used codes: {exc}") from None
        before = dict(used)
        yield used
        if used != before:
            now = time.time()
            kept = dict(sorted((k, v) for k, v in used.items() if v >= now)[-MAX_USED:])
            atomic_write(path, json.dumps({"version": 1, "used": kept}) + "\n", mode=0o600)
    finally:
        os.close(fd)


def _edit_agent_toml(path: Path, values: dict[str, str]) -> None:
    """Set `values` in agent.toml (keeping everything else), checked before it is written."""
    import tomlkit

    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        doc = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.ParseError) as exc:
        raise ConfigError(f"{path}: cannot edit: {exc}") from None
    for key, value in values.items():
        doc[key] = value
    out = tomlkit.dumps(doc)
    from pydantic import ValidationError

    try:
        AgentConfig.model_validate(tomlkit.parse(out).unwrap())
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None
    atomic_write(path, out, mode=0o600)


def _install(config_path: Path, join: Any) -> dict[str, str]:
    tls = config_path.parent / "tls"
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = {
        "tls_key": (tls / "node.key", join.key_pem, 0o600),
        "tls_cert": (tls / "node.crt", join.cert_pem, 0o644),
        "tls_client_ca": (tls / "ca.crt", join.ca_pem, 0o644),
    }
    for path, data, mode in files.values():
        atomic_write(path, data, mode=mode)
    return {k: str(v[0]) for k, v in files.items()}


def cmd_join(args: argparse.Namespace) -> int:
    from fleettui.agent.tokens import SECRET_SHAPE_RE, TokenError, import_token, tokens_path

    config_path = Path(args.config) if args.config else default_config_path()
    try:
        config = load_agent_config(args.config)  # the default one may not exist yet
        code = sys.stdin.read(MAX_CODE + 1) if args.code == "-" else args.code
        join = read_code(code, now=time.time())
    except (ConfigError, JoinError) as exc:
        return _fail(str(exc))
    if not SECRET_SHAPE_RE.fullmatch(join.token):
        return _fail("not a join code (its token is not shaped like a fleettui token)")
    current = config.tls_client_ca
    if current and not args.force:
        try:
            same = Path(current).read_bytes().strip() == join.ca_pem.strip()
        except OSError:
            same = False
        if not same:
            return _fail(
                f"agent.toml trusts another CA already (tls_client_ca = {current}): a code of "
                "another fleet? --force replaces it"
            )
    try:
        with _used_nonces(config.state_path() / USED_FILE) as used:
            key = nonce_hash(join.nonce)
            if key in used:
                return _fail(
                    "this join code was used already; ask for a new one "
                    f"(fleet enroll {join.node} ...)"
                )
            used[key] = join.expires
        values = _install(config_path, join)
        tid = import_token(
            tokens_path(config_path), f"operator (joined as {join.node})", join.token
        )
        _edit_agent_toml(config_path, values)
    except (JoinError, ConfigError, TokenError) as exc:
        return _fail(str(exc))
    except UnsafePathError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename or config_path}: cannot write: {exc.strerror or exc}")
    print(f"fleet agent join: joined the fleet as {join.node} ({join.url})")
    print(f"  certificate {values['tls_cert']} (key {values['tls_key']}, 0600)")
    print(f"  operator CA {values['tls_client_ca']} (mutual TLS), token {tid}")
    print(f"  {config_path}: tls_cert, tls_key, tls_client_ca set")
    where = urlsplit(join.url)
    print("  start the agent (or restart it) where that URL points:")
    print(
        f"    fleet agent serve --host {where.hostname} --port {where.port or 443} "
        f"--config {config_path}"
    )
    return 0
