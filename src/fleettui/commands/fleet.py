"""The `fleet` commands on the fleet config and its nodes: ls, status, ping, add, remove.

Rich and the aggregator are imported inside the commands that need them, so `fleet ls` (no
network) starts without loading httpx, and `--json` output never goes through Rich.
Exit codes: 0 fine, 1 a node is not ONLINE (status) / did not answer (ping) / nothing to
remove, 2 the config cannot be used or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleettui.aggregator.state import NodeView
    from fleettui.config import FleetConfig, NodeConfig

from fleettui.commands.io import (
    config_arg,
    console,
    err,
    first_run_hint,
    load_config,
    load_fleet,
    markup_safe,
    named_node,
    print_json,
    print_warnings,
)
from fleettui.views.columns import plural

STATE_STYLE = {
    "ONLINE": "bold green",
    "DEGRADED": "bold yellow",
    "OFFLINE": "bold red",
    "INITIALIZING": "dim",
}


# --- fleet ls ------------------------------------------------------------------------------


def _token_cell(node: NodeConfig) -> tuple[str, str | None]:
    if not node.has_token:
        return "no", None
    return node.token_source, node.token_problem()


def cmd_ls(args: argparse.Namespace) -> int:
    """List the configured nodes without touching the network; never prints a token."""
    cfg = load_config(args)
    if cfg is None:
        return 2
    if args.json:
        nodes = []
        for n in cfg.nodes:
            problem = n.token_problem() if n.has_token else None
            nodes.append(
                {
                    "name": n.name,
                    "url": n.url,
                    "kind": n.kind,
                    "role": n.role,
                    "tags": list(n.tags),
                    "token_configured": n.has_token,
                    "token_source": n.token_source or None,
                    "token_problem": problem,
                }
            )
        print_json(
            {
                "config": str(cfg.path),
                "exists": cfg.exists,
                "nodes": nodes,
                "warnings": cfg.warnings,
            }
        )
        print_warnings(cfg)
        return 0
    if not cfg.exists:
        print(first_run_hint(cfg.path))
        return 0
    print_warnings(cfg)
    if not cfg.nodes:
        print(f"No valid nodes in {cfg.path}. Add one with `fleet add NAME --url URL`.")
        return 0
    from rich.table import Table

    escape = markup_safe
    title = f"{plural(len(cfg.nodes), 'node')} in {escape(str(cfg.path))}"
    table = Table(title=title, title_justify="left")
    table.add_column("Name", no_wrap=True)
    table.add_column("URL", overflow="fold")
    table.add_column("Kind", no_wrap=True)
    for col in ("Role", "Tags", "Token"):
        table.add_column(col, overflow="fold")
    notes = []
    for n in cfg.nodes:
        token, problem = _token_cell(n)
        if problem:
            notes.append(f"{n.name}: token: {problem}")
        table.add_row(
            escape(n.name),
            escape(n.url),
            n.kind,
            escape(n.role) or "-",
            escape(", ".join(n.tags)) or "-",
            f"[yellow]{escape(token)} (!)[/]" if problem else escape(token),
        )
    out = console()
    out.print(table)
    for note in notes:
        out.print(f"[yellow]{escape(note)}[/]")
    return 0


# --- fleet status / ping -------------------------------------------------------------------


def node_json(v: NodeView) -> dict[str, Any]:
    """A node's state for `--json`: stable keys, no token, no internals."""
    s = v.snapshot
    engines = [
        {
            "name": e.name,
            "status": e.status,
            "version": e.version,
            "models": [m.name for m in e.models],
            "error": e.error,
        }
        for e in (s.engines if s else [])
    ]
    return {
        "name": v.name,
        "url": v.url,
        "kind": v.kind,
        "role": v.role,
        "tags": list(v.tags),
        "state": v.state.value,
        "reasons": list(v.reasons),
        "latency_ms": v.latency_ms,
        "last_seen": v.last_seen,
        "last_error": v.last_error,
        "hostname": s.node.hostname if s else None,
        "agent_version": s.node.agent_version if s else None,
        "engines": engines,
        "power_w": s.power.watts if s else None,
        "power_scope": s.power.scope if s else None,
        "power_source": s.power.source if s else None,
        "gpus": [
            {
                "name": g.name,
                "util_pct": g.util_pct,
                "memory_used_mb": g.memory_used_mb,
                "memory_total_mb": g.memory_total_mb,
            }
            for g in (s.gpus if s else [])
        ],
        "cost_7d": s.cost.total_7d if s else None,
        "currency": s.cost.currency if s else None,
        "audit": {
            "chain": v.chain.value,
            "detail": v.chain_detail,
            "seq": s.audit.seq if s else None,
        },
    }


def _engines_cell(v: NodeView) -> str:
    """Markup; the names in it are the node's (terminal-safe already, see NodeView), escaped."""
    if v.snapshot is None or not v.snapshot.engines:
        return "-"
    parts = []
    for e in v.snapshot.engines:
        name = markup_safe(e.name)
        parts.append(f"{name}·{len(e.models)}" if e.status == "up" else f"[red]{name}✗[/]")
    return " ".join(parts)


def _status_table(views: list[NodeView], title: str):  # type: ignore[no-untyped-def]
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("Node")
    table.add_column("State")
    table.add_column("Latency", justify="right")
    table.add_column("Engines")
    table.add_column("Power", justify="right")
    table.add_column("Audit")
    table.add_column("Reason / error", overflow="fold")
    for v in views:
        s = v.snapshot
        power = (
            f"{s.power.watts:.0f} W [dim]{escape(s.power.scope)}[/]"
            if s and s.power.watts is not None
            else "-"
        )
        latency = f"{v.latency_ms:.0f} ms" if v.latency_ms is not None else "-"
        audit = v.chain.value
        if audit == "BROKEN":
            audit = "[bold red]BROKEN[/]"
        reason = "; ".join(v.reasons) if v.reasons else ""
        table.add_row(
            escape(v.name),
            f"[{STATE_STYLE.get(v.state.value, '')}]{v.state.value}[/]",
            latency,
            _engines_cell(v),
            power,
            audit,
            escape(reason),
        )
    return table


def _summary(views: list[NodeView]) -> dict[str, int]:
    out = {"total": len(views), "online": 0, "degraded": 0, "offline": 0, "initializing": 0}
    for v in views:
        out[v.state.value.lower()] += 1
    return out


def status_document(cfg: FleetConfig, views: list[NodeView]) -> dict[str, Any]:
    """`fleet status --json` (and `fleet --json`): the config, a summary, every node."""
    summary = _summary(views)
    summary["skipped"] = len(cfg.skipped)  # configured but not loaded: counted in the total
    summary["total"] += len(cfg.skipped)
    return {
        "config": str(cfg.path),
        "summary": summary,
        "nodes": [node_json(v) for v in views],
        "warnings": cfg.warnings,
        "skipped": cfg.skipped,
    }


def cmd_status(args: argparse.Namespace) -> int:
    """Poll every node once, in parallel, within --timeout; exit 0 only if all are ONLINE."""
    cfg = load_fleet(args)
    if cfg is None:
        return 2

    import anyio

    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.pins import PinStore

    t0 = time.monotonic()
    agg = FleetAggregator(cfg, pins=PinStore.default())
    views = anyio.run(partial(agg.poll_once, args.timeout, full_audit=args.full_audit))
    took = time.monotonic() - t0
    summary = _summary(views)
    # A node skipped for a config error is a node not watched: as bad as one not answering.
    code = 0 if summary["online"] == summary["total"] and not cfg.skipped else 1
    if args.json:
        print_json(status_document(cfg, views))
        return code
    skipped = len(cfg.skipped)
    title = (
        f"{summary['online']}/{summary['total'] + skipped} ONLINE"
        + (f", {summary['degraded']} DEGRADED" if summary["degraded"] else "")
        + (f", {summary['offline']} OFFLINE" if summary["offline"] else "")
        + (f", {skipped} SKIPPED (config errors above)" if skipped else "")
        + f"  ({took:.1f} s)"
    )
    console().print(_status_table(views, title))
    return code


def cmd_ping(args: argparse.Namespace) -> int:
    """Poll one node once; exit 0 when it answered, 1 when it did not."""
    cfg = load_config(args)
    if cfg is None:
        return 2
    node = named_node(cfg, args.name)
    if node is None:
        return 2

    import anyio

    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.pins import PinStore
    from fleettui.config import FleetConfig

    one = FleetConfig(path=cfg.path, defaults=cfg.defaults, nodes=[node])
    agg = FleetAggregator(one, pins=PinStore.default())
    [v] = anyio.run(partial(agg.poll_once, args.timeout, full_audit=args.full_audit))
    answered = v.state.value in ("ONLINE", "DEGRADED")
    if args.json:
        print_json(node_json(v))
        return 0 if answered else 1
    if not answered:
        print(f"{v.name} {v.url}: {v.state.value}: {'; '.join(v.reasons) or 'no answer'}")
        return 1
    s = v.snapshot
    facts = ""
    if s is not None:
        up = sum(e.status == "up" for e in s.engines)
        facts = (
            f" (agent {s.node.agent_version} on {s.node.hostname}, "
            f"{up}/{len(s.engines)} engines up)"
        )
    line = f"{v.name} {v.url}: {v.state.value} in {v.latency_ms:.1f} ms{facts}"
    if v.reasons:
        line += f"\n  {'; '.join(v.reasons)}"
    print(line)
    return 0


# --- fleet add / remove --------------------------------------------------------------------


def cmd_add(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from fleettui.config import FleetConfigError, NodeConfig, add_node, resolve_config_path

    path = resolve_config_path(config_arg(args))
    found: dict[str, Any] = {"url": args.url, "kind": args.kind}
    if args.discovered:
        from fleettui.commands.discover import discovered_node

        if (heard := discovered_node(args)) is None:
            return 2
        found = heard
    try:
        node = NodeConfig(
            name=args.name,
            role=args.role,
            tags=args.tag,
            nickname=getattr(args, "nickname", None),
            token_env=args.token_env,
            token_file=args.token_file,
            **found,
        )
    except ValidationError as exc:
        for e in exc.errors():
            field = ".".join(str(p) for p in e["loc"]) or "node"
            flag = {"name": "NAME", "tags": "--tag"}.get(
                field.split(".")[0], f"--{field.split('.')[0].replace('_', '-')}"
            )
            err(f"{flag}: {e['msg'].removeprefix('Value error, ')}")
        return 2
    try:
        add_node(path, node)
    except FleetConfigError as exc:
        err(str(exc))
        return 2
    print(f"added {node.name} ({node.url}) to {path}")
    if node.has_token and (problem := node.token_problem()):
        print(f"note: {problem}", file=sys.stderr)
    elif not node.has_token:
        print(
            "note: no token configured, so actions on this node will be refused "
            "(add one with --token-env or --token-file)",
            file=sys.stderr,
        )
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from fleettui.config import FleetConfigError, NodeNotFound, remove_node, resolve_config_path

    path = resolve_config_path(config_arg(args))
    try:
        remove_node(path, args.name)
    except NodeNotFound as exc:
        err(str(exc))
        return 1
    except FleetConfigError as exc:
        err(str(exc))
        return 2
    print(f"removed {args.name} from {path}")
    return 0
