"""The detail screen's capacity sections: the residency ledger, the memory budget as a bar, and
the answer to the fit question when one is asked (`F`).

Every text that came from the node is a `Text` (never markup), as in detail.py.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleettui.aggregator.fitwatch import spare_bytes
from fleettui.aggregator.state import NodeView
from fleettui.views.columns import FIT_STYLE
from fleettui.views.numbers import fmt_bytes, fmt_duration, fmt_mb
from fleettui.wire import Budget, Model

BAR = (("engines", "█", "cyan"), ("other", "▓", "magenta"), ("free", "░", "green"))
VERDICT_WORDS = {
    "fits": "fits",
    "evict": "fits after evicting",
    "no": "does not fit",
    "unknown": "cannot tell",
}
MAX_ON_DISK = 6  # on-disk names listed before "+N more"


def _state(m: Model) -> Text:
    if m.busy is None:
        return Text("?", style="dim")
    return Text("busy", style="bold yellow") if m.busy else Text("idle", style="green")


def _expiry(m: Model, now: float) -> str:
    if m.expires_at is None:
        return "—"
    left = m.expires_at - now
    return "now" if left <= 0 else f"in {fmt_duration(left)}"


def _sources(m: Model) -> Text:
    """How the figures are known: one word when they agree, else size's and the others'."""
    seen = list(dict.fromkeys(m.sources.values()))
    if not seen:
        return Text("—", style="dim")
    return Text("/".join(seen), style="dim" if seen == ["reported"] else "")


def ledger(view: NodeView, now: float) -> RenderableType:
    """Each resident model: total, on GPU, context, slots, idle or busy, expiry, source."""
    t = Table(
        title="Residency ledger", title_justify="left", title_style="bold", box=None, padding=(0, 1)
    )
    t.show_edge = False
    for h in ("engine", "model", "total", "on GPU", "context", "slots", "state", "expires"):
        t.add_column(h, header_style="bold dim", no_wrap=True)
    t.add_column("source", header_style="bold dim", no_wrap=True)
    snap = view.snapshot
    on_disk: list[str] = []
    for e in snap.engines if snap else []:
        on_disk += [d.name for d in e.available]
        for m in e.models:
            t.add_row(
                Text(e.name),
                Text(m.name),
                fmt_mb(m.size_mb),
                fmt_mb(m.vram_mb),
                "—" if m.ctx is None else f"{m.ctx:,}",
                "—" if m.parallel is None else str(m.parallel),
                _state(m),
                _expiry(m, now),
                _sources(m),
            )
    if not t.row_count:
        t.add_row("", Text("no model resident", style="dim"), *[""] * 7)
    if not on_disk:
        return t
    disk = Text("on disk, not loaded: ", style="dim")
    disk.append(", ".join(on_disk[:MAX_ON_DISK]))
    if len(on_disk) > MAX_ON_DISK:
        disk.append(f" +{len(on_disk) - MAX_ON_DISK} more", style="dim")
    return Group(t, disk)


def budget_bar(budget: Budget | None, width: int) -> RenderableType:
    """The memory a model can use, as one bar: used by engines, by others, free."""
    title = Text("Memory budget", style="bold")
    if budget is None:
        return Group(title, Text("not reported (an agent older than schema 2)", style="dim"))
    title.append(f"  {fmt_mb(budget.total_mb)} {budget.kind}", style="bold")
    title.append(f" · set by {budget.limit}", style="dim")
    parts = {"engines": budget.engines_mb, "other": budget.other_mb, "free": budget.free_mb}
    total = sum(parts.values()) or 1.0
    cells = {k: round(width * v / total) for k, v in parts.items()}
    cells["free"] = max(0, width - cells["engines"] - cells["other"])  # rounding: fill exactly
    bar, legend = Text(), Text()
    for i, (key, glyph, style) in enumerate(BAR):
        bar.append(glyph * cells[key], style=style)
        legend.append(" · " if i else "")
        legend.append(glyph, style=style)
        legend.append(f" {key} {fmt_mb(parts[key])}")
    if budget.ram_free_mb is not None:
        legend.append(f" · RAM free for offload {fmt_mb(budget.ram_free_mb)}", style="dim")
    return Group(title, bar, legend)


def fit_section(view: NodeView) -> RenderableType | None:
    """The fit question's answer for this node: verdict, need against free, what would be
    evicted, the estimate's terms and the reasons; None while no question is asked."""
    fit = view.fit
    if fit is None:
        return None
    head = Text("Fit", style="bold")
    head.append(f" {fit.model}", style="bold")
    head.append(": ")
    head.append(VERDICT_WORDS[fit.verdict], style=FIT_STYLE[fit.verdict])
    if fit.verdict != "unknown":
        head.append(f" ({fit.label})", style="dim")
    out: list[RenderableType] = [head]
    figures = [
        f"need {fmt_bytes(fit.need_bytes)}",
        f"free {fmt_bytes(fit.free_bytes)}",
        f"kept free {fmt_bytes(fit.margin_bytes)}",
        f"spare {fmt_bytes(spare_bytes(fit), signed=True)}",
    ]
    if fit.offload_bytes:
        figures.append(f"in host RAM {fmt_bytes(fit.offload_bytes)}")
    if fit.engine:
        figures.append(f"on {fit.engine}")
    if fit.need_bytes is not None or fit.free_bytes is not None:
        out.append(Text(" · ".join(figures), style="dim"))
    if fit.evict:
        out.append(Text("evict (idle): ", style="yellow").append(", ".join(fit.evict)))
    if fit.estimate is not None and fit.estimate.terms:
        terms = Table.grid(padding=(0, 2))
        terms.add_column(no_wrap=True)
        terms.add_column(no_wrap=True, justify="right")
        terms.add_column(no_wrap=True)
        terms.add_column(overflow="fold")  # the formula: wraps rather than push the rest out
        for term in fit.estimate.terms:
            terms.add_row(
                Text(term.name),
                fmt_bytes(term.bytes),
                Text(term.source, style="dim"),
                Text(term.formula, style="dim"),
            )
        out.append(terms)
    for reason in (*fit.reasons, *fit.notes):
        out.append(Text("• ", style="yellow").append(reason))
    return Group(*out)
