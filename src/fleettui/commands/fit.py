"""`fleet fit MODEL`: poll the fleet once and say, per node, whether the model fits beside what
is loaded there, what would have to be evicted, and why.

Exit codes: 0 it fits on some node as things are, 3 only after evicting idle models (the
answer is yes, at a cost someone should choose), 1 nowhere (or no node could tell), 2 bad
input (config, an unknown node, a bad flag, an unreadable model file).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from fleettui.commands.io import console, err, load_fleet, markup_safe, named_node, print_json
from fleettui.views.columns import fmt_bytes

if TYPE_CHECKING:
    from fleettui.aggregator.fitwatch import FitWatch
    from fleettui.aggregator.state import NodeView
    from fleettui.wire import ModelMeta

VERDICT_STYLE = {"fits": "bold green", "evict": "bold yellow", "no": "bold red", "unknown": "dim"}
VERDICT_LABEL = {"fits": "fits", "evict": "evict", "no": "no", "unknown": "?"}


def _read_meta(args: argparse.Namespace) -> tuple[ModelMeta | None, str | None] | None:
    """The metadata the operator gave (--gguf, --hf-config), or (None, None) for none; None
    after saying why the file cannot be used."""
    path: Path | None = args.gguf or args.hf_config
    if path is None:
        return None, None
    flag = "--gguf" if args.gguf else "--hf-config"
    from fleettui.capacity.files import MetaFileError, meta_from_gguf, meta_from_hf_config

    reader = meta_from_gguf if args.gguf else meta_from_hf_config
    try:
        meta = reader(path)
    except (MetaFileError, OSError) as exc:  # the reader's line names the file: say it once
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        err(f"{flag} {path}: {why.removeprefix(f'{path.name}: ')}")
        return None
    return meta, f"{flag} {path}"


def _line_table(views: list[NodeView], title: str):  # type: ignore[no-untyped-def]
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("Node", no_wrap=True)
    table.add_column("Fit", no_wrap=True)
    for col in ("Need", "Free", "Spare"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("Evict")
    table.add_column("Label", no_wrap=True)
    table.add_column("Reason", overflow="fold")
    from fleettui.aggregator.fitwatch import spare_bytes

    for v in views:
        fit = v.fit
        assert fit is not None
        style = VERDICT_STYLE[fit.verdict]
        table.add_row(
            markup_safe(v.name),
            f"[{style}]{'fits cpu' if fit.offload_bytes else VERDICT_LABEL[fit.verdict]}[/]",
            fmt_bytes(fit.need_bytes),
            fmt_bytes(fit.free_bytes),
            fmt_bytes(spare_bytes(fit), signed=True),
            markup_safe(", ".join(fit.evict)) or "-",
            fit.label if fit.verdict != "unknown" else "-",
            markup_safe(fit.reasons[0]) if fit.reasons else "",
        )
    return table


def exit_code(views: list[NodeView]) -> int:
    verdicts = {v.fit.verdict for v in views if v.fit is not None}
    return 0 if "fits" in verdicts else 3 if "evict" in verdicts else 1


def _title(watch: FitWatch, views: list[NodeView], took: float) -> str:
    req = watch.request
    asked = [
        f"ctx {req.ctx}" if req.ctx else "",
        f"{req.parallel} slots" if req.parallel else "",
        f"kv {req.kv_type}" if req.kv_type else "",
        f"on {req.engine}" if req.engine else "",
    ]
    what = ", ".join(a for a in asked if a)
    verdicts = [v.fit.verdict for v in views if v.fit is not None]
    counts = {k: verdicts.count(k) for k in VERDICT_LABEL}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    source = f"metadata from {watch.meta_from}" if watch.meta_from else "no metadata found"
    return (
        f"{markup_safe(req.model)}{' (' + markup_safe(what) + ')' if what else ''}: {summary}"
        f"  [dim]({markup_safe(source)}; {took:.1f} s)[/]"
    )


def ask(args: argparse.Namespace) -> tuple[FitWatch, list[NodeView], float] | int:
    """Poll the fleet once with the fit question of `args` (`fleet fit`, `fleet place`,
    `fleet load --place`): the question, every node's view with its answer, and the seconds
    it took; or the exit code after saying what is wrong with the input."""
    cfg = load_fleet(args)
    if cfg is None:
        return 2
    nodes = []
    for name in dict.fromkeys(getattr(args, "node", [])):  # a name given twice is asked once
        node = named_node(cfg, name)
        if node is None:
            return 2
        nodes.append(node)
    given = _read_meta(args)
    if given is None:
        return 2

    import anyio

    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.capacity.fit import FitRequest
    from fleettui.config import FleetConfig

    if nodes:
        cfg = FleetConfig(path=cfg.path, defaults=cfg.defaults, nodes=nodes)
    request = FitRequest(
        model=args.model,
        ctx=args.ctx,
        parallel=args.parallel,
        kv_type=args.kv_type,
        engine=args.engine,
    )
    from fleettui.aggregator.calibration import CalibrationStore

    t0 = time.monotonic()
    store = CalibrationStore.default()
    # a fit needs snapshots, not the audit log; and what earlier loads measured
    agg = FleetAggregator(cfg, verify_chain=False, calibration=store)
    watch = agg.set_fit(request, *given)
    assert watch is not None
    views = anyio.run(partial(agg.poll_once, args.timeout))
    if store.warning:
        err(store.warning)
    return watch, views, time.monotonic() - t0


def explain(watch: FitWatch, views: list[NodeView], to_stderr: bool) -> None:
    """`--explain`: the calibration history of the question's key on every engine judged
    (on stderr beside --json, whose stdout is the document alone)."""
    from fleettui.aggregator.calibration import explain as lines

    store = watch.calibration
    assert store is not None
    engines = sorted({v.fit.engine for v in views if v.fit is not None and v.fit.engine})
    out = sys.stderr if to_stderr else sys.stdout
    if not engines:
        print("calibration: no node has an engine to judge with", file=out)
    for line in lines(store, [watch.calibration_key(e) for e in engines]):
        print(line, file=out)


def cmd_fit(args: argparse.Namespace) -> int:
    asked = ask(args)
    if isinstance(asked, int):
        return asked
    from fleettui.aggregator.fitwatch import fit_document, fit_order

    watch, views, took = asked
    views = sorted(views, key=fit_order)
    code = exit_code(views)
    if args.json:
        print_json(fit_document(watch, views, time.time()))
    else:
        console().print(_line_table(views, _title(watch, views, took)))
    if args.explain:
        explain(watch, views, args.json)
    return code
