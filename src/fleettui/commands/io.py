"""How every command speaks: one-line errors on stderr, JSON on stdout, a Rich console that
does not wrap into pipes, and the fleet config loaded or refused with a reason.

Rich is imported inside the helpers that need it, so `--json` output never loads it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from fleettui.config import FleetConfig, NodeConfig


def err(msg: str) -> None:
    print(f"fleet: {msg}", file=sys.stderr)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def markup_safe(text: str) -> str:
    """Config or node text inside a Rich markup string: terminal-safe, its `[` escaped."""
    from rich.markup import escape

    from fleettui.textsafe import clean

    return escape(clean(text))


def console() -> Console:
    """Rich's console; into a pipe or a file it does not wrap at 80 columns (a line per row,
    for grep and awk), it still does on a terminal."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(highlight=False, width=100_000, soft_wrap=True)


def config_arg(args: argparse.Namespace) -> Path | None:
    return getattr(args, "config", None)


def first_run_hint(path: Path | None) -> str:
    where = f" ({path})" if path else ""
    return (
        f"No fleet config yet{where}. Add a node with `fleet add NAME --url URL`, "
        "or try `fleet demo`."
    )


def load_config(args: argparse.Namespace) -> FleetConfig | None:
    """The fleet config, or None after printing why it cannot be used. A --config that names
    no file is a mistake (a typo), not a first run."""
    from fleettui.config import FleetConfigError, load_fleet_config

    try:
        cfg = load_fleet_config(config_arg(args))
    except FleetConfigError as exc:
        err(str(exc))
        return None
    if not cfg.exists and config_arg(args) is not None:
        err(f"--config {cfg.path}: no such file (`fleet add ... --config` creates one)")
        return None
    return cfg


def named_node(cfg: FleetConfig, name: str) -> NodeConfig | None:
    """The node called `name`, or None after saying which names the config does hold."""
    node = cfg.node(name)
    if node is None:
        known = ", ".join(n.name for n in cfg.nodes[:10]) or "none"
        more = f" and {len(cfg.nodes) - 10} more" if len(cfg.nodes) > 10 else ""
        err(f"no node named {name!r} in {cfg.path} (known: {known}{more}; see `fleet ls`)")
    return node


def print_warnings(cfg: FleetConfig) -> None:
    from fleettui.textsafe import clean

    for w in cfg.warnings:
        print(f"warning: {clean(w)}", file=sys.stderr)


def load_fleet(args: argparse.Namespace) -> FleetConfig | None:
    """The config of a command that talks to nodes: warnings shown, and None (after saying
    why) when it is unreadable, missing (first run) or holds no valid node."""
    cfg = load_config(args)
    if cfg is None:
        return None
    print_warnings(cfg)
    if not cfg.exists:
        err(first_run_hint(cfg.path))
        return None
    if not cfg.nodes:
        err(f"no valid node in {cfg.path}; see the warnings above, or `fleet ls`")
        return None
    return cfg
