"""`fleet place MODEL`: rank every node for a model, best first, each with its score and why.

Exit codes as `fleet fit`: 0 a node takes it as things are, 3 only after evicting idle
models, 1 nowhere (or no node could tell), 2 bad input.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from fleettui.commands.fit import VERDICT_LABEL, VERDICT_STYLE, ask, explain
from fleettui.commands.io import console, markup_safe, print_json
from fleettui.views.columns import fmt_bytes

if TYPE_CHECKING:
    from fleettui.aggregator.fitwatch import FitWatch
    from fleettui.aggregator.placement import Placement


def _table(ranking: list[Placement], title: str):  # type: ignore[no-untyped-def]
    from rich.table import Table

    from fleettui.aggregator.fitwatch import spare_bytes

    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("Node", no_wrap=True)
    table.add_column("Score", justify="right", no_wrap=True)
    table.add_column("Fit", no_wrap=True)
    table.add_column("Need", justify="right", no_wrap=True)
    table.add_column("Spare", justify="right", no_wrap=True)
    table.add_column("Why", overflow="fold")
    for p in ranking:
        fit = p.fit
        style = VERDICT_STYLE[fit.verdict]
        table.add_row(
            str(p.rank),
            markup_safe(p.node),
            f"{p.score:.0f}" if p.score else "-",
            f"[{style}]{'fits cpu' if fit.offload_bytes else VERDICT_LABEL[fit.verdict]}[/]",
            fmt_bytes(fit.need_bytes),
            fmt_bytes(spare_bytes(fit), signed=True),
            markup_safe("; ".join(p.reasons)),
        )
    return table


def ranked(args: argparse.Namespace) -> tuple[FitWatch, list[Placement], float] | int:
    """The fleet polled once and ranked for `args` (shared with `fleet load --place`)."""
    from fleettui.aggregator.placement import rank

    asked = ask(args)
    if isinstance(asked, int):
        return asked
    watch, views, took = asked
    return watch, rank(views, args.strategy), took


def cmd_place(args: argparse.Namespace) -> int:
    from fleettui.aggregator.placement import place_document

    got = ranked(args)
    if isinstance(got, int):
        return got
    watch, ranking, took = got
    verdicts = {p.verdict for p in ranking if p.score > 0}
    code = 0 if "fits" in verdicts else 3 if "evict" in verdicts else 1
    if args.json:
        print_json(place_document(watch, ranking, args.strategy, time.time(), args.top))
    else:
        shown = ranking[: args.top] if args.top else ranking
        req = watch.request
        title = (
            f"{markup_safe(req.model)}: {args.strategy}, {len(shown)} of {len(ranking)} nodes"
            f"  [dim]({took:.1f} s)[/]"
        )
        console().print(_table(shown, title))
    if args.explain:
        explain(watch, [p.view for p in ranking], args.json)
    return code
