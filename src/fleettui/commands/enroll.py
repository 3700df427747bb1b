"""`fleet enroll NAME --url https://...`: issue a node's certificate and token, put the node in
projects.toml, and print the one-time code `fleet agent join` installs them from (enrol.py).

The node is added at once (it shows OFFLINE until it has joined and serves): the operator's
side then holds everything it needs to poll it, and nothing waits on a first contact. What is
kept of the code is its SHA-256 and expiry (`enrolments.json` in the XDG state dir: which codes
are out, until when); the code itself goes to stdout once and nowhere else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from fleettui.commands.io import config_arg, err

PENDING_FILE = "enrolments.json"


def _pending(path: Path, record: dict[str, object]) -> None:
    """Add `record` to the operator's list of codes out, dropping the expired ones."""
    from fleettui.fsutil import atomic_write, open_nofollow

    now = time.time()
    kept: list[object] = []
    try:
        with os.fdopen(open_nofollow(path, os.O_RDONLY), "rb") as fh:
            data = json.loads(fh.read(4 << 20))
        if isinstance(data, dict) and isinstance(data.get("pending"), list):
            kept = [
                r
                for r in data["pending"]
                if isinstance(r, dict)
                and isinstance(r.get("expires"), int | float)
                and r["expires"] >= now
            ][-1000:]
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        kept = []  # a broken list of codes out is only history: start it again
    body = {"version": 1, "pending": [*kept, record]}
    atomic_write(path, json.dumps(body, indent=2) + "\n", mode=0o600)


def cmd_enroll(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from pydantic import ValidationError

    from fleettui.agent.tokens import new_secret
    from fleettui.config import (
        FleetConfigError,
        NodeConfig,
        add_node,
        load_fleet_config,
        normalize_url,
        resolve_config_path,
    )
    from fleettui.enrol import MINUTES_MAX, code_hash, make_code
    from fleettui.fsutil import UnsafePathError, atomic_write
    from fleettui.pki import PkiError, ca_paths, issue_node, load_ca, operator_paths, pki_dir

    if not 1 <= args.minutes <= MINUTES_MAX:
        err(f"enroll: --minutes must be from 1 to {MINUTES_MAX}")
        return 2
    try:
        url = normalize_url(args.url)
    except ValueError as exc:
        err(f"enroll: --url: {exc}")
        return 2
    if not url.startswith("https://"):
        err("enroll: --url must be https:// (the node serves the certificate the code carries)")
        return 2
    path = resolve_config_path(config_arg(args))
    try:
        if load_fleet_config(path).node(args.name) is not None:
            err(
                f"enroll: {path}: a node named {args.name!r} exists already (fleet remove it first)"
            )
            return 2
    except FleetConfigError as exc:
        err(f"enroll: {exc}")
        return 2
    directory = Path(args.dir).expanduser() if args.dir else pki_dir()
    token_file = path.parent / "tokens" / f"{args.name}.token"
    try:
        ca_cert, ca_key = load_ca(directory)
        issued = issue_node(
            directory, args.name, [urlsplit(url).hostname or "", *(args.san or [])], days=args.days
        )
        cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
        key = serialization.load_pem_private_key(issued.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        op_crt, op_key = operator_paths(directory)
        node = NodeConfig(
            name=args.name,
            url=url,
            role=args.role,
            tags=args.tag,
            token_file=token_file,
            ca_file=str(ca_paths(directory)[0]),
            **({"client_cert": str(op_crt), "client_key": str(op_key)} if op_crt.exists() else {}),
        )
        token = new_secret()
        expires = time.time() + args.minutes * 60
        code = make_code(
            node=args.name,
            url=url,
            cert=cert,
            key=key,
            ca_cert=ca_cert,
            ca_key=ca_key,
            token=token,
            expires=expires,
        )
        issued.key.unlink()  # the node's key now lives in the code alone: none kept here
        atomic_write(token_file, token + "\n", mode=0o600)
        add_node(path, node)
        state = Path(platformdirs.user_state_dir("fleettui")) / PENDING_FILE
        _pending(
            state,
            {
                "node": args.name,
                "code": code_hash(code),
                "expires": int(expires),
                "created": int(time.time()),
            },
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        err(f"enroll: {'.'.join(map(str, first['loc']))}: {first['msg']}")
        return 2
    except (PkiError, FleetConfigError, UnsafePathError) as exc:
        err(f"enroll: {exc}")
        return 2
    except OSError as exc:
        err(f"enroll: {exc.filename}: cannot write: {exc.strerror or exc}")
        return 2
    print(
        f"fleet enroll: {args.name} added to {path} ({url}); on the node, within "
        f"{args.minutes} min, run once:\n  fleet agent join CODE\n"
        "with this code (a secret: it carries the node's key and token; it works once):",
        file=sys.stderr,
    )
    print(code)
    return 0
