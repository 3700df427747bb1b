"""Argument parsing for `fleet`; every command's work lives in the layers it names.

Imports are lazy so `fleet --help` and `fleet ls` start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fleettui import __version__


def _add_agent(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser("agent", help="run or manage the node agent on this machine")
    asub = agent.add_subparsers(dest="agent_cmd", required=True, metavar="COMMAND")
    serve = asub.add_parser("serve", help="serve this node's facts over HTTP (snapshot, SSE, metrics)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8899, help="port; 0 picks a free one (default 8899)")
    serve.add_argument("--config", type=Path, help="agent.toml (default: XDG config dir)")
    serve.add_argument("--simulate", action="store_true", help="serve a synthetic node instead")
    serve.add_argument("--nodes", type=int, default=1, help="with --simulate: nodes on consecutive ports")
    serve.add_argument("--name", help="with --simulate: node name (or prefix with --nodes)")
    serve.add_argument("--interval", type=float, help="collection interval in seconds (default 2)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log requests and collection")
    serve.set_defaults(func=lambda a: _run("fleettui.agent.main", "cmd_serve", a))


def _run(module: str, func: str, args: argparse.Namespace) -> int:
    import importlib

    return int(getattr(importlib.import_module(module), func)(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleet", description="A keyboard-driven dashboard and node agent for LLM-inference fleets."
    )
    p.add_argument("--version", action="version", version=f"fleettui {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    _add_agent(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
