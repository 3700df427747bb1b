"""The fleet table's columns: what each shows, how wide it is, and which to drop first.

Shared by the Textual table and the Rich fallback so both draw the same cells. Cells are Rich
`Text` (Rich only, never Textual) with fixed widths, so a narrow terminal drops whole
low-priority columns instead of squeezing every cell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from fleettui.aggregator.fitwatch import spare_bytes
from fleettui.aggregator.placement import order_key
from fleettui.aggregator.state import ChainStatus, NodeState, NodeView
from fleettui.select import gpu_memory
from fleettui.views.sparkline import sparkline
from fleettui.wire import in_scope, scope_code

SEP = 1  # blank cells between columns
STATE_STYLE = {
    NodeState.ONLINE: "bold green",
    NodeState.DEGRADED: "bold yellow",
    NodeState.OFFLINE: "bold red",
    NodeState.INITIALIZING: "dim",
}
STATE_LABEL = {NodeState.INITIALIZING: "INIT…"}
STATE_ORDER = {
    NodeState.OFFLINE: 0,
    NodeState.DEGRADED: 1,
    NodeState.INITIALIZING: 2,
    NodeState.ONLINE: 3,
}
CHAIN_STYLE = {
    ChainStatus.OK: "green",
    ChainStatus.BROKEN: "bold red",
    ChainStatus.UNKNOWN: "dim",
    ChainStatus.NOT_APPLICABLE: "dim",
}
CURRENCY = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}
DASH = "—"


# --- formatting --------------------------------------------------------------------------


def fmt_watts(w: float | None) -> str:
    if w is None:
        return DASH
    return f"{w:.0f}W" if w < 9999.5 else f"{w / 1000:.1f}kW"


def fmt_money(x: float | None, currency: str = "EUR") -> str:
    if x is None:
        return DASH
    sym = CURRENCY.get(currency, "")
    if x < 10:
        num = f"{x:.2f}"
    elif x < 99.95:
        num = f"{x:.1f}"
    elif x < 9999.5:
        num = f"{x:.0f}"
    else:
        num = f"{x / 1000:.0f}k"
    return sym + num


def fmt_latency(ms: float | None) -> str:
    if ms is None:
        return DASH
    if ms < 999.5:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.1f}s" if ms < 9950 else f"{ms / 1000:.0f}s"


def fmt_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def fmt_age(seconds: float | None) -> str:
    return "never" if seconds is None else fmt_duration(seconds) + " ago"


def fmt_mb(mb: float | None) -> str:
    if mb is None:
        return DASH
    return f"{mb / 1024:.1f}G" if mb >= 1024 else f"{mb:.0f}M"


MINUS = "\u2212"  # a real minus sign (U+2212): a negative margin, not a dash


def fmt_bytes(n: int | None, signed: bool = False) -> str:
    """GiB with one decimal (none from 100 GiB, MiB under one), with a sign when `signed`;
    a dash when unknown. The estimator counts bytes; the wire's MiB go through fmt_mb."""
    if n is None:
        return DASH
    sign = ("+" if n >= 0 else MINUS) if signed else (MINUS if n < 0 else "")
    gib = abs(n) / 1024**3
    if gib >= 99.95:
        return f"{sign}{gib:.0f}G"
    return f"{sign}{gib:.1f}G" if gib >= 1 else f"{sign}{gib * 1024:.0f}M"


def _fit(text: Text, width: int) -> Text:
    text.truncate(width, overflow="ellipsis")
    return text


def _dim_if_stale(view: NodeView, text: Text) -> Text:
    if view.state is NodeState.OFFLINE:
        text.stylize("dim")
    return text


# --- cells -------------------------------------------------------------------------------


def cell_sel(view: NodeView, width: int, now: float, selected: bool) -> Text:
    return Text("✓", style="bold yellow") if selected else Text(" ")


def cell_node(view: NodeView, width: int, now: float, selected: bool) -> Text:
    return _fit(Text(view.name, style="bold" if selected else ""), width)


def cell_role(view: NodeView, width: int, now: float, selected: bool) -> Text:
    return _fit(Text(view.role or ""), width)


def cell_state(view: NodeView, width: int, now: float, selected: bool) -> Text:
    label = STATE_LABEL.get(view.state, view.state.value)
    return _fit(Text(label, style=STATE_STYLE[view.state]), width)


def cell_engines(view: NodeView, width: int, now: float, selected: bool) -> Text:
    snap = view.snapshot
    if snap is None:
        return Text("")
    if not snap.engines:
        return Text(DASH, style="dim")
    out = Text()
    for i, e in enumerate(snap.engines):
        if i:
            out.append(" ")
        if e.status == "up":
            out.append(f"{e.name}·{len(e.models)}")
        else:
            out.append(f"{e.name}✗", style="bold red")
    return _dim_if_stale(view, _fit(out, width))


def resident_models(view: NodeView) -> list[str]:
    snap = view.snapshot
    if snap is None:
        return []
    return [m.name for e in snap.engines if e.status == "up" for m in e.models]


def cell_models(view: NodeView, width: int, now: float, selected: bool) -> Text:
    if view.snapshot is None:
        return Text("")
    names = resident_models(view)
    if not names:
        return Text(DASH, style="dim")
    suffix = f" +{len(names) - 1}" if len(names) > 1 else ""
    first = Text(names[0])
    first.truncate(max(1, width - len(suffix)), overflow="ellipsis")
    return _dim_if_stale(view, first.append(suffix, style="dim"))


def cell_gpu(view: NodeView, width: int, now: float, selected: bool) -> Text:
    snap = view.snapshot
    if snap is None:
        return Text("")
    mem = gpu_memory(view)
    if not snap.gpus or mem is None:
        return Text(DASH, style="dim")
    used, total = mem
    pct = 100 * used / total if total else 0.0
    mem_s = f"{used / 1024:.0f}/{total / 1024:.0f}G"
    utils = [g.util_pct for g in snap.gpus if g.util_pct is not None]
    util_s = f" {sum(utils) / len(utils):.0f}%" if utils else ""
    style = "bold red" if pct >= 95 else "yellow" if pct >= 85 else ""
    text = Text(mem_s, style=style)
    if len(mem_s) + len(util_s) <= width:
        text.append(util_s)
    return _dim_if_stale(view, _fit(text, width))


def cell_power(view: NodeView, width: int, now: float, selected: bool) -> Text:
    snap = view.snapshot
    watts = snap.power.watts if snap else None
    if snap is None:
        return Text("")
    text = Text(f"{fmt_watts(watts):>5}")
    # what the figure covers, in letters (the help screen has the key): GCM, W, S...
    code = scope_code([p.kind for p in in_scope(snap.power.parts)])
    text.append(f" {code or '?':<3}", style="dim")
    bars = width - 10
    if bars > 0:
        text.append(" ")
        text.append(sparkline(view.power_history, bars), style="cyan")
    return _dim_if_stale(view, _fit(text, width))


def cell_cost(view: NodeView, width: int, now: float, selected: bool) -> Text:
    snap = view.snapshot
    if snap is None:
        return Text("")
    text = Text(f"{fmt_money(snap.cost.total_7d, snap.cost.currency):>5}")
    daily = view.cost_daily or [d.cost for d in snap.cost.daily]
    bars = width - 6
    if bars > 0:
        text.append(" ")
        text.append(sparkline(daily, min(bars, 7)).rjust(bars), style="magenta")
    return _dim_if_stale(view, _fit(text, width))


def cell_audit(view: NodeView, width: int, now: float, selected: bool) -> Text:
    return _fit(Text(view.chain.value, style=CHAIN_STYLE[view.chain]), width)


def cell_latency(view: NodeView, width: int, now: float, selected: bool) -> Text:
    ms = view.latency_ms
    style = "" if ms is None or ms < 500 else "yellow" if ms < 2000 else "bold red"
    return _dim_if_stale(view, Text(fmt_latency(ms)[:width].rjust(width), style=style))


FIT_STYLE = {"fits": "bold green", "evict": "bold yellow", "no": "bold red", "unknown": "dim"}


def cell_fit(view: NodeView, width: int, now: float, selected: bool) -> Text:
    """The answer to the fleet's fit question: `fits +3.2G` (what is left after the load and
    the safety margin), `evict 1` (idle models), `no -4.1G` (a real minus: the shortfall),
    `fits cpu` (with part of it in host RAM), `loaded` (resident already), `?` (cannot tell)."""
    fit = view.fit
    if fit is None or fit.verdict == "unknown":
        return Text("?", style="dim")
    style = FIT_STYLE[fit.verdict]
    if fit.verdict == "evict":
        return _fit(Text(f"evict {len(fit.evict)}", style=style), width)
    if fit.offload_bytes:
        return _fit(Text("fits cpu", style="bold yellow"), width)
    spare = spare_bytes(fit)
    if spare is None:  # a fit with no free figure: the model is resident there already
        return _fit(Text("loaded", style=style), width)
    return _fit(Text(f"{fit.verdict} {fmt_bytes(spare, signed=True)}", style=style), width)


def cell_seen(view: NodeView, width: int, now: float, selected: bool) -> Text:
    age = None if view.last_seen is None else now - view.last_seen
    style = "dim" if age is None else "" if age < 30 else "yellow" if age < 300 else "red"
    return _fit(Text(fmt_age(age), style=style), width)


# --- sort keys (None sorts last whatever the direction) ----------------------------------


def _watts(v: NodeView) -> float | None:
    return v.facts.watts if v.facts else None


def _cost(v: NodeView) -> float | None:
    return v.facts.cost_7d if v.facts else None


def _gpu_pct(v: NodeView) -> float | None:
    mem = gpu_memory(v)
    return 100 * mem[0] / mem[1] if mem and mem[1] else None


def _engines_down(v: NodeView) -> int | None:
    return v.facts.engines_down if v.facts else None


def _models(v: NodeView) -> int:
    return v.facts.models if v.facts else 0


def _fit_rank(v: NodeView) -> tuple[int, float, str, str] | None:
    """The placement ranking of the question asked (aggregator/placement.order_key): fits
    before evictions before the rest, then by score, then by name; "cannot tell" last
    whatever the direction."""
    if v.placement is None or v.fit is None or v.fit.verdict == "unknown":
        return None
    return order_key(v, v.placement[0])


CellFn = Callable[[NodeView, int, float, bool], Text]


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int  # minimum content width
    priority: int  # 0 is always shown; the highest is dropped first
    cell: CellFn
    sort: Callable[[NodeView], Any] | None = None
    descending: bool = False  # natural direction when first sorted by this column
    flex: int = 0  # how many extra cells it may take when the terminal is wide
    justify: str = "left"
    optional: bool = False  # shown only when asked for (the Fit column, once `F` asked)


COLUMNS: tuple[Column, ...] = (
    Column("sel", "", 1, 0, cell_sel),
    Column("node", "Node", 11, 0, cell_node, lambda v: v.name.casefold(), flex=13),
    Column("role", "Role", 7, 9, cell_role, lambda v: v.role.casefold(), flex=9),
    Column("state", "State", 8, 0, cell_state, lambda v: STATE_ORDER[v.state]),
    Column("fit", "Fit", 11, 0, cell_fit, _fit_rank, optional=True),
    Column("engines", "Engines", 13, 2, cell_engines, _engines_down, True, flex=11),
    Column("models", "Models", 11, 6, cell_models, _models, True, 29),
    Column("gpu", "GPU", 12, 3, cell_gpu, _gpu_pct, True),
    Column("power", "Power", 13, 1, cell_power, _watts, True, flex=8),
    Column("cost", "Cost 7d", 13, 5, cell_cost, _cost, True),
    Column("audit", "Audit", 6, 4, cell_audit, lambda v: v.chain is not ChainStatus.BROKEN),
    Column("latency", "RTT", 5, 7, cell_latency, lambda v: v.latency_ms, True, justify="right"),
    Column(
        "seen", "Seen", 7, 8, cell_seen, lambda v: None if v.last_seen is None else -v.last_seen
    ),
)
BY_KEY = {c.key: c for c in COLUMNS}
SORTABLE = tuple(c.key for c in COLUMNS if c.sort is not None)
FLEX_ORDER = ("node", "models", "engines", "role", "power")


def full_width(columns: Iterable[Column] = COLUMNS) -> int:
    return sum(c.width + SEP for c in columns)


def fit_columns(
    available: int, longest_name: int | None = None, optional: Iterable[str] = ()
) -> dict[str, int]:
    """Which columns fit in `available` cells, with their widths, in display order.

    Columns are admitted by priority while they fit (an optional one only when named in
    `optional`); leftover space then widens the flexible ones in FLEX_ORDER: node names first
    (up to `longest_name`), then models, engines...
    """
    chosen: set[str] = set()
    used = 0
    wanted = set(optional)
    for col in sorted(COLUMNS, key=lambda c: c.priority):
        if col.optional and col.key not in wanted:
            continue
        need = col.width + SEP
        if col.priority == 0 or used + need <= available:
            chosen.add(col.key)
            used += need
    widths = {c.key: c.width for c in COLUMNS if c.key in chosen}
    spare = max(0, available - used)
    for key in FLEX_ORDER:
        col = BY_KEY[key]
        if key in chosen and spare:
            room = col.flex
            if key == "node" and longest_name is not None:  # no wider than the longest name
                room = max(0, min(room, longest_name - col.width))
            extra = min(room, spare)
            widths[key] += extra
            spare -= extra
    return widths


def render_cells(
    view: NodeView, widths: dict[str, int], now: float, selected: bool = False
) -> dict[str, Text]:
    """The row for `view`: one Text per visible column."""
    return {key: BY_KEY[key].cell(view, w, now, selected) for key, w in widths.items()}


def sorted_views(
    views: Iterable[NodeView], key: str | None, reverse: bool = False
) -> list[NodeView]:
    """Views ordered by column `key` (None: config order); unknown values always go last."""
    items = list(views)
    if key is None:
        return list(reversed(items)) if reverse else items
    fn = BY_KEY[key].sort
    assert fn is not None
    known = [(fn(v), i, v) for i, v in enumerate(items)]
    have = [t for t in known if t[0] is not None]
    missing = [t[2] for t in known if t[0] is None]
    have.sort(key=lambda t: t[0], reverse=reverse)  # stable: ties stay in config order
    return [t[2] for t in have] + missing


# --- fleet totals ------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    total: int
    online: int
    degraded: int
    offline: int
    starting: int
    watts: float
    cost_7d: float
    currency: str
    skipped: int = 0  # configured, not loaded (a config error): counted in the total
    scope: str = ""  # what the watts cover: one node scope's letters, or "mixed"


def plural(n: int, word: str) -> str:
    """`1 node`, `2 nodes`."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def fleet_totals(views: Iterable[NodeView], skipped: int = 0) -> Totals:
    """Fleet-wide figures for the footer; stale power of OFFLINE nodes is not counted."""
    views = list(views)
    counts = {s: 0 for s in NodeState}
    watts = cost = 0.0
    currencies: set[str] = set()
    scopes: set[str] = set()
    for v in views:
        counts[v.state] += 1
        facts = v.facts  # not v.snapshot: that would parse every node's snapshot
        if facts is None:
            continue
        if v.state is not NodeState.OFFLINE and facts.watts is not None:
            watts += facts.watts
            scopes.add(facts.scope)
        cost += facts.cost_7d
        currencies.add(facts.currency)
    return Totals(
        total=len(views) + skipped,
        skipped=skipped,
        online=counts[NodeState.ONLINE],
        degraded=counts[NodeState.DEGRADED],
        offline=counts[NodeState.OFFLINE],
        starting=counts[NodeState.INITIALIZING],
        watts=watts,
        cost_7d=cost,
        currency=currencies.pop() if len(currencies) == 1 else "",
        scope=scopes.pop() if len(scopes) == 1 else "mixed" if scopes else "",
    )


def totals_text(t: Totals, selected: int | None = None) -> Text:
    """`online 6/10 │ 4,312 W │ €261.9 7d │ 2 selected │ 2 degraded · 1 offline`.

    The figures every operator needs come first so a narrow terminal cuts only the breakdown.
    """
    sep = " │ "
    out = Text()
    out.append(f"online {t.online}/{t.total}", style="bold green" if t.online else "bold")
    out.append(sep)
    out.append(f"{t.watts:,.0f} W", style="cyan")
    if t.scope:  # a sum over nodes that measure different things says so
        out.append(f" ({t.scope})", style="dim")
    out.append(sep)
    out.append(f"{fmt_money(t.cost_7d, t.currency)} 7d", style="magenta")
    if selected is not None:
        out.append(sep)
        out.append(f"{selected} selected", style="bold yellow" if selected else "dim")
    parts = [
        (t.degraded, "degraded", "yellow"),
        (t.offline, "offline", "red"),
        (t.starting, "starting", "dim"),
        (t.skipped, "skipped", "bold red"),
    ]
    shown = [(n, label, style) for n, label, style in parts if n]
    for i, (n, label, style) in enumerate(shown):
        out.append(sep if i == 0 else " · ")
        out.append(f"{n} {label}", style=style)
    return out
