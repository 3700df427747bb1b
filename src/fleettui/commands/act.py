"""`fleet push` and `fleet bulk`: one action on one or many nodes, from a shell or a cron line.

Targets come from --names and --filter (the grammar in fleettui.select, shared with the TUI).
Nothing is sent before the target list is final: a bad expression or an unknown name exits 2,
and without --yes an interactive terminal must confirm while a non-interactive one refuses.
Exit codes: 0 every target succeeded, 1 any failed, 2 nothing was sent (usage, config, refusal).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from fleettui.commands.io import console, err, load_fleet, named_node, print_json
from fleettui.views.columns import plural
from fleettui.wire import ActionRequest, action_problem, describe_action

if TYPE_CHECKING:
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.dispatch import Envelope
    from fleettui.config import FleetConfig, NodeConfig

POLL_TIMEOUT_S = 10.0


def check_arguments(
    action: str, engine: str | None, model: str | None, params: dict[str, Any] | None = None
) -> str | None:
    """The wire's rule, said with the flag to fix; the agent applies the same rule again."""
    if problem := action_problem(action, engine, model, **(params or {})):
        return f"{problem.text()} (--{problem.field.replace('_', '-')})"
    return None


def check_selection(names: list[str], expr: str | None, every: bool) -> str | None:
    """Why a selection is refused, or None. An empty selection never means "everything" (an
    unset shell variable must not restart the fleet): every node takes an explicit --all."""
    if expr is not None and not expr.strip():
        return "--filter is empty (an unset shell variable?); pass --all to mean every node"
    if expr is not None and not expr.isprintable():
        return f"--filter {expr!r} must be one line of printable text"
    if any(not n.strip() for part in names for n in part.split(",")):
        return f"--names {','.join(names)!r} holds an empty name; pass --all to mean every node"
    if every and (names or expr is not None):
        return "--all cannot be combined with --names or --filter"
    if not (every or names or expr is not None):
        return "name the targets with --names or --filter, or pass --all for every node"
    return None


def pick_targets(cfg: FleetConfig, names: list[str], expr: str | None) -> list[NodeConfig]:
    """Resolve --names and --filter against the config; raises ValueError with the reason.

    A filter over live fields (state, engine, power...) needs one poll of the candidates first.
    """
    from fleettui.select import parse

    wanted = [n.strip() for part in names for n in part.split(",") if n.strip()]
    known = {n.name for n in cfg.nodes}
    if unknown := [n for n in wanted if n not in known]:
        shown = ", ".join(n if n.isprintable() else repr(n) for n in unknown)
        raise ValueError(f"no node named {shown} in {cfg.path}; see `fleet ls`")
    selector = parse(expr) if expr else None  # SelectError (a ValueError) before any network
    candidates = [n for n in cfg.nodes if not wanted or n.name in wanted]
    if selector is None:
        return candidates

    import anyio

    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.config import FleetConfig as Config

    sub = Config(path=cfg.path, defaults=cfg.defaults, nodes=candidates, warnings=[])
    views = anyio.run(FleetAggregator(sub, verify_chain=False).poll_once, POLL_TIMEOUT_S)
    matched = {v.name for v in views if selector.matches(v)}
    return [n for n in candidates if n.name in matched]


def confirm(prompt: str) -> bool:
    try:
        answer = input(f"{prompt} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def run_dispatch(
    cfg: FleetConfig,
    targets: list[NodeConfig],
    request: ActionRequest,
    *,
    live: bool,
    agg: FleetAggregator | None = None,
) -> Envelope:
    """Send through an aggregator over just the targets (it resolves their tokens once), or
    through `agg` (`fleet load`: the one that polled, which then watches the load settle)."""
    import anyio

    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.dispatch import Progress
    from fleettui.config import FleetConfig as Config

    def progress(node: str, state: Progress, reason: str | None) -> None:
        if live and state in (Progress.OK, Progress.FAILED):  # the dispatcher cleans reasons
            mark = "ok" if state is Progress.OK else f"FAILED: {reason}"
            print(f"  {node}: {mark}", file=sys.stderr, flush=True)

    if agg is None:
        sub = Config(path=cfg.path, defaults=cfg.defaults, nodes=targets, warnings=[])
        agg = FleetAggregator(sub, verify_chain=False)
    return anyio.run(agg.act, [t.name for t in targets], request, progress)


def print_envelope(env: Envelope) -> None:
    from rich.table import Table
    from rich.text import Text

    from fleettui.textsafe import clean

    table = Table(
        title=f"{describe_action(env.action, env.engine, env.model)}: "
        f"{len(env.succeeded)}/{len(env.targets)} ok",
        title_justify="left",
    )
    table.add_column("node")
    table.add_column("result")
    table.add_column("ms", justify="right")
    table.add_column("detail", overflow="fold")
    for name in env.targets:
        out = env.outcomes[name]
        ok = name in env.succeeded
        detail = env.failed.get(name) or ""
        if ok and out.result is not None:  # the node's own output: cleaned, never markup
            detail = clean((out.result.output_tail.strip().splitlines() or [""])[-1])
        table.add_row(
            Text(name),
            "[green]ok[/]" if ok else "[red]failed[/]",
            f"{out.duration_ms:.0f}" if out.duration_ms is not None else "-",
            Text(detail),
        )
    console().print(table)


def _act(
    args: argparse.Namespace, cfg: FleetConfig, targets: list[NodeConfig], *, ask: bool
) -> int:
    what = describe_action(args.action, args.engine, args.model)
    names = [t.name for t in targets]
    if not targets:
        err("no node matches; nothing sent")
        if args.json:
            print_json({"action": args.action, "targets": [], "succeeded": [], "failed": {}})
        return 2
    if getattr(args, "dry_run", False):
        if args.json:
            print_json(
                {
                    "action": args.action,
                    "engine": args.engine,
                    "model": args.model,
                    "targets": names,
                    "dry_run": True,
                }
            )
        else:
            print(f"would {what} on {plural(len(names), 'node')}: {', '.join(names)}")
        return 0
    if ask:
        if not sys.stdin.isatty():
            err(
                f"refusing to {what} on {plural(len(names), 'node')} without confirmation: "
                f"pass --yes (targets: {', '.join(names)})"
            )
            return 2
        print(f"{what} on {plural(len(names), 'node')}:", file=sys.stderr)
        for n in names:
            print(f"  {n}", file=sys.stderr)
        if not confirm("Proceed?"):
            err("cancelled; nothing sent")
            return 2
    req = ActionRequest(action=args.action, engine=args.engine, model=args.model)
    env = run_dispatch(cfg, targets, req, live=not args.json)
    if args.json:
        print_json(env.to_json())
    else:
        print_envelope(env)
    return 0 if env.ok else 1


def _prepare(args: argparse.Namespace) -> FleetConfig | None:
    if problem := check_arguments(args.action, args.engine, args.model):
        err(problem)
        return None
    return load_fleet(args)


def cmd_push(args: argparse.Namespace) -> int:
    """One action on one named node; naming the node is the confirmation."""
    cfg = _prepare(args)
    if cfg is None:
        return 2
    node = named_node(cfg, args.node)
    if node is None:
        return 2
    return _act(args, cfg, [node], ask=False)


def cmd_bulk(args: argparse.Namespace) -> int:
    """One action on every node picked by --names/--filter, or by --all."""
    from fleettui.select import SelectError, parse

    if problem := check_selection(args.names, args.filter, args.all):
        err(problem)
        return 2
    cfg = _prepare(args)
    if cfg is None:
        return 2
    try:
        if args.yes and not args.dry_run and args.filter and parse(args.filter).fuzzy:
            err(
                f"--filter {args.filter!r} holds a bare word (a fuzzy search): with --yes name "
                "the nodes exactly (name=, role=, tag=, model=...), or drop --yes to confirm "
                "the list"
            )
            return 2
        targets = pick_targets(cfg, args.names, args.filter)
    except SelectError as exc:
        err(f"bad --filter: {exc}")
        return 2
    except ValueError as exc:
        err(str(exc))
        return 2
    return _act(args, cfg, targets, ask=not args.yes)
