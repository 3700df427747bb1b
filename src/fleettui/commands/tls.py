"""`fleet tls init | issue | renew`: the operator's fleet CA and its certificates (pki.py).

The CA key stays in the operator's data dir; what a node needs (its .crt and .key, the CA's
.crt) is printed as paths to copy, with the agent.toml and projects.toml lines that use them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleettui.pki import Issued


def _dir(args: argparse.Namespace) -> Path:
    from fleettui.pki import pki_dir

    return Path(args.dir).expanduser() if args.dir else pki_dir()


def cmd_init(args: argparse.Namespace) -> int:
    from fleettui.commands.io import err
    from fleettui.pki import PkiError, init_ca, operator_paths

    directory = _dir(args)
    try:
        ca = init_ca(directory, days=args.days, force=args.force)
    except PkiError as exc:
        err(f"tls init: {exc}")
        return 2
    op_crt, op_key = operator_paths(directory)
    print(f"fleet tls init: CA {ca.cert} (key {ca.key}, 0600: keep it on this machine)")
    print(f"  fingerprint {ca.fingerprint}, valid until {ca.not_after:%Y-%m-%d}")
    print(f"  operator client certificate {op_crt} (key {op_key})")
    print("  projects.toml [defaults]:")
    print(f'    ca_file = "{ca.cert}"')
    print(f'    client_cert = "{op_crt}"')
    print(f'    client_key = "{op_key}"')
    return 0


def _issued(verb: str, node: str, issued: Issued, ca_cert: Path) -> None:
    print(f"fleet tls {verb}: {node}: {issued.cert} (key {issued.key})")
    print(f"  fingerprint {issued.fingerprint}, valid until {issued.not_after:%Y-%m-%d}")
    print(f"  copy both and {ca_cert} to the node; its agent.toml:")
    print(f'    tls_cert = "/path/on/node/{issued.cert.name}"')
    print(f'    tls_key = "/path/on/node/{issued.key.name}"')
    print(
        f'    tls_client_ca = "/path/on/node/{ca_cert.name}"   # mutual TLS: require the operator'
    )
    print("  then send the agent SIGHUP (or restart it) to load the new certificate")


def cmd_issue(args: argparse.Namespace) -> int:
    from fleettui.commands.io import err
    from fleettui.pki import PkiError, ca_paths, issue_node

    directory = _dir(args)
    try:
        issued = issue_node(directory, args.node, args.san or [], days=args.days)
    except PkiError as exc:
        err(f"tls issue: {exc}")
        return 2
    _issued("issue", args.node, issued, ca_paths(directory)[0])
    return 0


def cmd_renew(args: argparse.Namespace) -> int:
    from fleettui.commands.io import err
    from fleettui.pki import PkiError, ca_paths, renew_node

    directory = _dir(args)
    try:
        issued = renew_node(directory, args.node, days=args.days)
    except PkiError as exc:
        err(f"tls renew: {exc}")
        return 2
    _issued("renew", args.node, issued, ca_paths(directory)[0])
    return 0
