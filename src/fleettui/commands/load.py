"""`fleet load MODEL --on NODE... | --place`: load a model where the operator says (or on the
best-ranked nodes, `fleet place`), after showing, per
target, whether it fits and what would be evicted.

The fit shown is the operator's view (one poll of the fleet, metadata from any node that has
the model); the agent checks again on its own fresh ledger before loading and refuses with the
breakdown when it does not fit, so what is shown here is advice and the agent's answer is the
rule. The bulk envelope is `fleet bulk`'s: confirmation (or --yes), progress per node on
stderr, exit 0 when every target loaded, 1 when any failed, 2 when nothing was sent.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from fleettui.commands.act import check_arguments, confirm, print_envelope, run_dispatch
from fleettui.commands.io import console, err, load_fleet, print_json
from fleettui.views.columns import plural
from fleettui.wire import ActionRequest

if TYPE_CHECKING:
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.calibration import CalibrationStore
    from fleettui.aggregator.state import NodeView
    from fleettui.capacity.fit import Fit
    from fleettui.config import FleetConfig, NodeConfig

POLL_TIMEOUT_S = 10.0
# How long a successful load waits for a snapshot that shows the model (calibration): two
# poll intervals, at least SETTLE_MIN_S (an agent collects every 0.5-2 s), at most SETTLE_MAX_S.
SETTLE_MIN_S, SETTLE_MAX_S = 5.0, 15.0
# A stand-in engine name for checking the other arguments before the engine is known (it is
# chosen from the targets' fits when --engine is not given).
ANY_ENGINE = "ollama"


def params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "ctx": args.ctx,
        "parallel": args.parallel,
        "kv_type": args.kv_type,
        "keep_alive": args.keep_alive,
        "force": args.force,
    }


def choose_targets(
    cfg: FleetConfig,
    args: argparse.Namespace,
    views: list[NodeView],
    store: CalibrationStore | None = None,
) -> list[NodeConfig]:
    """The nodes to load on: each --on name (comma lists too), in the order given, or with
    --place the best `--top` of the ranking (fleet place). The one place that decides where a
    load goes. ValueError: why not."""
    if args.place:
        return _placed(cfg, args, views, store)
    wanted = [n.strip() for part in args.on for n in part.split(",") if n.strip()]
    if not wanted:
        raise ValueError("name the nodes to load on with --on NODE, or pass --place")
    missing = [n for n in wanted if cfg.node(n) is None]
    if missing:
        shown = ", ".join(n if n.isprintable() else repr(n) for n in missing)
        raise ValueError(f"no node named {shown} in {cfg.path}; see `fleet ls`")
    return [node for n in dict.fromkeys(wanted) if (node := cfg.node(n)) is not None]


def _placed(
    cfg: FleetConfig,
    args: argparse.Namespace,
    views: list[NodeView],
    store: CalibrationStore | None,
) -> list[NodeConfig]:
    """The best-ranked nodes that can take the model (score above 0), at most --top."""
    from dataclasses import replace

    from fleettui.aggregator.placement import placeable, rank

    if args.on:
        raise ValueError("--on and --place choose the targets two ways: pass one")
    fits = fits_for(views, [v.name for v in views], args, store)
    ranking = rank([replace(v, fit=fits[v.name]) for v in views], args.strategy)
    best = placeable(ranking)[: args.top]
    if not best:
        why = ranking[0].reasons[0] if ranking else "the fleet config has no nodes"
        raise ValueError(
            f"no node can take {args.model}: {ranking[0].node + ': ' if ranking else ''}{why}"
        )
    return [node for p in best if (node := cfg.node(p.node)) is not None]


def poll(agg: FleetAggregator) -> list[NodeView]:
    """One poll of the whole fleet: the targets' ledgers, and any node's model metadata."""
    import anyio

    return anyio.run(agg.poll_once, POLL_TIMEOUT_S)


def fits_for(
    views: list[NodeView],
    targets: list[str],
    args: argparse.Namespace,
    store: CalibrationStore | None = None,
) -> dict[str, Fit]:
    """Each target's fit from the operator's view, corrected by what earlier loads measured
    (`store`); a node without a snapshot is `unknown`."""
    from fleettui.capacity.fit import Fit, FitRequest, check_fit, find_meta

    snaps = {v.name: v.snapshot for v in views if v.snapshot is not None}
    meta = find_meta(snaps, args.model)
    req = FitRequest(args.model, args.ctx, args.parallel, args.kv_type, args.engine)
    quant = meta.quant if meta is not None else None
    cal = store.corrections(args.model, quant, args.ctx, args.parallel) if store else None
    out: dict[str, Fit] = {}
    for name in targets:
        snap = snaps.get(name)
        if snap is None:
            view = next((v for v in views if v.name == name), None)
            why = (view.last_error if view else None) or "no snapshot"
            out[name] = Fit(
                name, "unknown", None, None, None, None, None, (), (why,), "-", model=args.model
            )
        else:
            out[name] = check_fit(name, snap, meta, req, cal)
    return out


def pick_engine(args: argparse.Namespace, fits: dict[str, Fit]) -> str:
    """--engine, or the one engine every target's fit chose; ValueError when they differ."""
    if args.engine:
        return str(args.engine)
    chosen = {f.engine for f in fits.values() if f.engine}
    if len(chosen) == 1:
        return chosen.pop()
    if not chosen:
        raise ValueError("no target has an engine up to load with; pass --engine")
    listed = ", ".join(f"{n}: {f.engine}" for n, f in fits.items() if f.engine)
    raise ValueError(f"the targets would load with different engines ({listed}); pass --engine")


def observe(agg: FleetAggregator, cfg: FleetConfig, model: str) -> None:
    """Wait (bounded) for a snapshot of each node that loaded, so the calibration history
    gets the model's observed size next to its estimate; say so where none came in time."""
    import anyio

    wait = min(SETTLE_MAX_S, max(SETTLE_MIN_S, 2 * cfg.defaults.poll_interval_s))
    for name in anyio.run(agg.settle_loads, wait):
        err(
            f"{name}: no snapshot showed {model} within {wait:g} s: this load is not in the "
            "calibration history"
        )


def print_fits(fits: dict[str, Fit]) -> None:
    from rich.table import Table
    from rich.text import Text

    from fleettui.capacity.estimate import mib

    style = {"fits": "green", "evict": "yellow", "no": "red", "unknown": "dim"}
    table = Table(title="fit (the operator's view; the agent checks again)", title_justify="left")
    for col in ("node", "verdict", "engine", "needs", "free", "evicts", "why"):
        table.add_column(col, overflow="fold" if col == "why" else "ellipsis")
    for name, f in fits.items():
        table.add_row(
            Text(name),
            Text(f.verdict, style=style.get(f.verdict, "")),
            Text(f.engine or "-"),
            "-" if f.need_bytes is None else mib(f.need_bytes),
            "-" if f.free_bytes is None else mib(f.free_bytes),
            Text(", ".join(f.evict) or "-"),
            Text("; ".join(f.reasons)),
        )
    console().print(table)


def cmd_load(args: argparse.Namespace) -> int:
    if problem := check_arguments("load", args.engine or ANY_ENGINE, args.model, params(args)):
        err(problem)
        return 2
    cfg = load_fleet(args)
    if cfg is None:
        return 2
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.calibration import CalibrationStore

    store = CalibrationStore.default()
    agg = FleetAggregator(cfg, verify_chain=False, calibration=store)
    views = poll(agg)
    if store.warning:
        err(store.warning)
    try:
        targets = choose_targets(cfg, args, views, store)
    except ValueError as exc:
        err(str(exc))
        return 2
    names = [t.name for t in targets]
    fits = fits_for(views, names, args, store)
    try:
        engine = pick_engine(args, fits)
    except ValueError as exc:
        err(str(exc))
        return 2
    req = ActionRequest(action="load", engine=engine, model=args.model, **params(args))
    what = req.describe()
    if args.dry_run:
        if args.json:
            print_json(
                {**req.body(), "targets": names, "dry_run": True}
                | {"fits": {n: f.to_json() for n, f in fits.items()}}
            )
        else:
            print_fits(fits)
            print(f"would {what} on {plural(len(names), 'node')}: {', '.join(names)}")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            err(
                f"refusing to {what} on {plural(len(names), 'node')} without confirmation: "
                f"pass --yes (targets: {', '.join(names)})"
            )
            return 2
        print_fits(fits)
        evicting = sorted({m for f in fits.values() for m in f.evict})
        if evicting:
            print(f"the agents will first unload idle {', '.join(evicting)}", file=sys.stderr)
        if not confirm(f"{what} on {plural(len(names), 'node')}?"):
            err("cancelled; nothing sent")
            return 2
    env = run_dispatch(cfg, targets, req, live=not args.json, agg=agg)
    observe(agg, cfg, args.model)
    if args.json:
        print_json(env.to_json())
    else:
        print_envelope(env)
    return 0 if env.ok else 1
