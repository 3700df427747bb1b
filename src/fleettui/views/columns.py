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
from fleettui.aggregator.history import POWER_BUCKETS
from fleettui.aggregator.placement import order_key
from fleettui.aggregator.state import ChainStatus, NodeState, NodeView
from fleettui.select import gpu_memory, match_word
from fleettui.views.numbers import (
    DASH,
    TIMES,
    fmt_age,
    fmt_bytes,
    fmt_count,
    fmt_latency,
    fmt_mb_pair,
    fmt_money,
    fmt_money_scale,
    fmt_pct,
    fmt_watts,
    fmt_watts_scale,
)
from fleettui.views.sparkline import aligned, nice_top, sparkline
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


def cell_models(
    view: NodeView, width: int, now: float, selected: bool, lead: str | None = None
) -> Text:
    """The first resident model (or `lead`, the one a search matched), `+N` more."""
    if view.snapshot is None:
        return Text("")
    names = resident_models(view)
    if lead in names:
        names = [lead, *(n for n in names if n != lead)]
    if not names:
        return Text(DASH, style="dim")
    suffix = f" +{len(names) - 1}" if len(names) > 1 else ""
    first = Text(names[0])
    first.truncate(max(1, width - len(suffix)), overflow="ellipsis")
    return _dim_if_stale(view, first.append(suffix, style="dim"))


def cell_vram(view: NodeView, width: int, now: float, selected: bool) -> Text:
    """GPU memory over every GPU, `43/160G 27%`; red from 95 %, yellow from 85 %."""
    if view.facts is None:
        return Text("")
    mem = gpu_memory(view)
    if mem is None:
        return Text(DASH, style="dim")
    used, total = mem
    pct = 100 * used / total if total else 0.0
    style = "bold red" if pct >= 95 else "yellow" if pct >= 85 else ""
    text = Text(fmt_mb_pair(used, total), style=style)
    if text.cell_len + 4 <= width:
        text.append(f" {pct:.0f}%")
    return _dim_if_stale(view, _fit(text, width))


def _level(pct: float | None, warn: float, bad: float) -> str:
    return "" if pct is None or pct < warn else "yellow" if pct < bad else "bold red"


def cell_gpu(view: NodeView, width: int, now: float, selected: bool) -> Text:
    """`2xH100 97% 78°C 91%P` (a real times sign): count and model, then the busiest GPU's
    utilisation, temperature and power against its limit, as many as fit; it sorts by the
    utilisation."""
    if view.facts is None:
        return Text("")
    g = view.facts.gpu
    if g is None:
        return Text(DASH, style="dim")
    text = Text(f"{g.count}{TIMES}{g.model}")
    parts = [
        (fmt_pct(g.util_pct), ""),
        (DASH if g.temp_c is None else f"{g.temp_c:.0f}°C", _level(g.temp_c, 80, 90)),
        (f"{g.power_pct:.0f}%P", _level(g.power_pct, 90, 100)) if g.power_pct is not None else None,
    ]
    for part in parts:
        if part is None or text.cell_len + 1 + len(part[0]) > width:
            break
        text.append(" ")
        text.append(part[0], style=part[1])
    return _dim_if_stale(view, _fit(text, width))


def cell_cpu(view: NodeView, width: int, now: float, selected: bool) -> Text:
    facts = view.facts
    if facts is None:
        return Text("")
    pct = facts.cpu_pct
    return _dim_if_stale(view, Text(fmt_pct(pct).rjust(width), style=_level(pct, 85, 95)))


def cell_mem(view: NodeView, width: int, now: float, selected: bool) -> Text:
    """Host RAM `98/256G 38%`: used/total, then the pressure (the share not available)."""
    facts = view.facts
    if facts is None:
        return Text("")
    if facts.mem_mb is None:
        return Text(DASH, style="dim")
    text = Text(fmt_mb_pair(*facts.mem_mb))
    p = facts.mem_pressure_pct
    if p is not None and text.cell_len + 1 + len(fmt_pct(p)) <= width:
        text.append(" ")
        text.append(fmt_pct(p), style=_level(p, 80, 95))
    return _dim_if_stale(view, _fit(text, width))


# A reason's long head and the short word for it: the Why column is narrow, the detail
# screen has the full text.
_REASON_SHORT = (
    ("audit chain BROKEN", "chain BROKEN"),
    ("snapshot stale: not updated for ", "stale "),
    ("snapshot: ", ""),
    ("event stream: ", "stream "),
    ("engine ", ""),
)


def short_reason(reason: str) -> str:
    """`engine vllm down: connection refused` -> `vllm down: connection refused`,
    `audit chain BROKEN: seq 12: ...` -> `chain BROKEN`."""
    for head, short in _REASON_SHORT:
        if reason.startswith(head):
            rest = reason[len(head) :]
            return short if short.endswith("BROKEN") else short + rest
    return reason


def why_text(view: NodeView) -> str:
    """The Why cell's text: empty for an ONLINE node, else its first reason, `+N` more."""
    if view.state is NodeState.ONLINE or not view.reasons:
        return "" if view.state is not NodeState.INITIALIZING else "first poll"
    more = f" +{len(view.reasons) - 1}" if len(view.reasons) > 1 else ""
    return short_reason(view.reasons[0]) + more


def cell_why(view: NodeView, width: int, now: float, selected: bool) -> Text:
    text = why_text(view)
    if not text:
        return Text("")
    more = text.rfind(" +")
    style = STATE_STYLE[view.state].replace("bold ", "")
    if more > 0 and view.reasons[1:]:  # keep the "+N": cut the reason instead
        head = Text(text[:more], style=style)
        head.truncate(max(1, width - (len(text) - more)), overflow="ellipsis")
        return head.append(text[more:], style="dim")
    return _fit(Text(text, style=style), width)


@dataclass(frozen=True)
class Scale:
    """A sparkline column's scale, one for the whole fleet: every row's bars are drawn against
    0..`top`, so equal heights are equal figures (a row scaled to its own min and max made a
    2 W wobble look like a full swing)."""

    top: float
    text: str  # what the header says of it: 0 to 2 kW (numbers.fmt_watts_scale)


Scales = dict[str, Scale]  # column key -> its scale (fleet_scales)


def power_scale(views: Iterable[NodeView]) -> Scale | None:
    """0 to the fleet's highest 15 s mean, rounded up to a NICE step (so it rarely moves)."""
    top = nice_top(max((v.power_peak for v in views), default=0.0))
    return Scale(top, fmt_watts_scale(top)) if top else None


def cost_scale(views: Iterable[NodeView]) -> Scale | None:
    """0 to the fleet's dearest day of the last 7, rounded up to a NICE step."""
    facts = [v.facts for v in views if v.facts is not None]
    top = nice_top(max((f.cost_day_max for f in facts), default=0.0))
    currencies = {f.currency for f in facts}
    currency = currencies.pop() if len(currencies) == 1 else ""
    return Scale(top, fmt_money_scale(top, currency)) if top else None


def power_bars(view: NodeView, bars: int, scale: Scale | None) -> str:
    """The last 10 minutes in `bars` cells, each the mean of a clock-aligned run of buckets."""
    hist = view.power_history
    if bars <= 0 or not hist:
        return " " * max(0, bars)
    per_bar = -(-POWER_BUCKETS // bars)  # ceil: the whole window in the cells there are
    last = view.power_slot if view.power_slot is not None else len(hist) - 1
    top = scale.top if scale else nice_top(view.power_peak)
    return sparkline(aligned(hist, last, per_bar, bars), bars, top)


def cell_power(
    view: NodeView, width: int, now: float, selected: bool, scale: Scale | None = None
) -> Text:
    """`1,843 W GCM ▅▆▇`: the watts now, what they cover, the last 10 minutes on the fleet's
    scale (the header says it; without one, the row's own from zero)."""
    snap = view.snapshot
    watts = snap.power.watts if snap else None
    if snap is None:
        return Text("")
    text = Text(f"{fmt_watts(watts):>7}")
    # what the figure covers, in letters (the help screen has the key): GCM, W, S...
    code = scope_code([p.kind for p in in_scope(snap.power.parts)])
    text.append(f" {code or '?':<3}", style="dim")
    bars = width - 12
    if bars > 0:
        text.append(" ")
        text.append(power_bars(view, bars, scale), style="cyan")
    return _dim_if_stale(view, _fit(text, width))


def cell_cost(
    view: NodeView, width: int, now: float, selected: bool, scale: Scale | None = None
) -> Text:
    """`€270 ▆▇▆▇▆▇▃`: 7 days' cost, then one bar a day on the fleet's scale, in the text's
    own colour (a coloured bar on every row read as an alarm)."""
    snap = view.snapshot
    if snap is None:
        return Text("")
    text = Text(f"{fmt_money(snap.cost.total_7d, snap.cost.currency):>6}")
    daily = view.cost_daily or [d.cost for d in snap.cost.daily]
    bars = width - 7
    if bars > 0:
        top = scale.top if scale else nice_top(max(daily, default=0.0))
        text.append(" ")
        text.append(sparkline(daily, min(bars, 7), top).rjust(bars))
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


# --- search highlight --------------------------------------------------------------------

SEARCHABLE = frozenset({"node", "role", "engines", "models"})  # cells a bare word marks
HIGHLIGHT = "bold underline"  # legible without colour too


def search_cell(
    key: str, view: NodeView, width: int, now: float, selected: bool, words: tuple[str, ...]
) -> Text:
    """A SEARCHABLE cell while the filter has bare words: the Models cell leads with the model
    that matched best (else the match hides behind `+N`), and the matched letters marked."""
    if key != "models":
        return highlight(BY_KEY[key].cell(view, width, now, selected), words)
    hits = [(h.score, n) for n in resident_models(view) for w in words if (h := match_word(w, n))]
    lead = min(hits, key=lambda x: x[0])[1] if hits else None
    return highlight(cell_models(view, width, now, selected, lead), words)


def highlight(cell: Text, words: Iterable[str]) -> Text:
    """Mark in `cell` the characters the filter's bare words matched (select.match_word),
    value by value: the cell's space-separated parts are the values it shows."""
    plain = cell.plain
    start = 0
    for part in plain.split(" "):
        marks = sorted({p for w in words if (hit := match_word(w, part)) for p in hit.positions})
        run = 0
        for n, i in enumerate(marks):  # one span per run of adjacent characters
            if n + 1 == len(marks) or marks[n + 1] != i + 1:
                cell.stylize(HIGHLIGHT, start + marks[run], start + i + 1)
                run = n + 1
        start += len(part) + 1
    return cell


# --- sort keys (None sorts last whatever the direction) ----------------------------------


def _watts(v: NodeView) -> float | None:
    return v.facts.watts if v.facts else None


def _cost(v: NodeView) -> float | None:
    return v.facts.cost_7d if v.facts else None


def _gpu_util(v: NodeView) -> float | None:
    return v.facts.gpu.util_pct if v.facts and v.facts.gpu else None


def _cpu(v: NodeView) -> float | None:
    return v.facts.cpu_pct if v.facts else None


def _mem(v: NodeView) -> float | None:
    return v.facts.mem_pressure_pct if v.facts else None


def _why(v: NodeView) -> str | None:
    return why_text(v).casefold() or None


def _vram_pct(v: NodeView) -> float | None:
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


def _models_need(v: NodeView) -> int:
    return v.facts.models_len if v.facts else 0


def _engines_need(v: NodeView) -> int:
    return v.facts.engines_len if v.facts else 0


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
    need: Callable[[NodeView], int] | None = None  # the width a row's text wants, if it varies
    title: str = ""  # what the column picker says of it
    # a sparkline column's fleet-wide scale; its cell then takes `scale=` (render_cells)
    scale: Callable[[Iterable[NodeView]], Scale | None] | None = None


# Display order by default; `priority` is the drop order when the terminal is narrow: at 80
# columns State, Why, GPU and Power stay (with CPU); at 120 Engines, Mem, Models and Audit join.
COLUMNS: tuple[Column, ...] = (
    Column("sel", "", 1, 0, cell_sel, title="selection mark"),
    Column(
        "node",
        "Node",
        11,
        0,
        cell_node,
        lambda v: v.name.casefold(),
        flex=13,
        need=lambda v: len(v.name),
    ),
    Column(
        "role",
        "Role",
        7,
        10,
        cell_role,
        lambda v: v.role.casefold(),
        flex=9,
        need=lambda v: len(v.role),
        title="the node's role (config)",
    ),
    Column(
        "state",
        "State",
        8,
        0,
        cell_state,
        lambda v: STATE_ORDER[v.state],
        title="ONLINE · DEGRADED · OFFLINE",
    ),
    Column("fit", "Fit", 11, 0, cell_fit, _fit_rank, optional=True, title="fit answer (F)"),
    Column(
        "why",
        "Why",
        14,
        3,
        cell_why,
        _why,
        flex=26,
        need=lambda v: len(why_text(v)),
        title="why a node is not ONLINE",
    ),
    Column(
        "engines",
        "Engines",
        13,
        4,
        cell_engines,
        _engines_down,
        True,
        flex=11,
        need=_engines_need,
        title="engines, models on each",
    ),
    Column(
        "models",
        "Models",
        11,
        7,
        cell_models,
        _models,
        True,
        29,
        need=_models_need,
        title="resident",
    ),
    Column(
        "gpu", "GPU", 16, 2, cell_gpu, _gpu_util, True, flex=6, title="count and model, busiest GPU"
    ),
    Column("vram", "VRAM", 11, 11, cell_vram, _vram_pct, True, title="GPU memory over all GPUs"),
    Column("cpu", "CPU", 4, 5, cell_cpu, _cpu, True, justify="right", title="host CPU %"),
    Column("mem", "Mem", 11, 6, cell_mem, _mem, True, title="host RAM used/total, pressure"),
    Column("power", "Power", 15, 1, cell_power, _watts, True, flex=8, scale=power_scale),
    Column("cost", "Cost 7d", 13, 8, cell_cost, _cost, True, scale=cost_scale),
    Column(
        "audit",
        "Audit",
        6,
        9,
        cell_audit,
        lambda v: v.chain is not ChainStatus.BROKEN,
        title="audit hash chain",
    ),
    Column(
        "latency",
        "RTT",
        6,
        12,
        cell_latency,
        lambda v: v.latency_ms,
        True,
        justify="right",
        title="snapshot round trip",
    ),
    Column(
        "seen",
        "Seen",
        7,
        13,
        cell_seen,
        lambda v: None if v.last_seen is None else -v.last_seen,
        title="since the last good answer",
    ),
)
BY_KEY = {c.key: c for c in COLUMNS}
SORTABLE = tuple(c.key for c in COLUMNS if c.sort is not None)
DEFAULT_ORDER = tuple(c.key for c in COLUMNS)
FIXED = frozenset({"sel", "node", "state"})  # the picker cannot hide these
# Who gets spare cells first: a column whose text is cut, in this order, up to what it needs.
FLEX_ORDER = ("node", "why", "models", "engines", "role", "gpu", "power")
EMPTY_NARROWS = frozenset({"why"})  # with no text in any row: as wide as its header


def full_width(columns: Iterable[Column] = COLUMNS) -> int:
    return sum(c.width + SEP for c in columns)


def column_needs(views: Iterable[NodeView]) -> dict[str, int]:
    """The widest text each variable-width column would show for `views`."""
    views = list(views)
    return {
        c.key: max((c.need(v) for v in views), default=0) for c in COLUMNS if c.need is not None
    }


def fit_columns(
    available: int,
    needs: dict[str, int] | None = None,
    optional: Iterable[str] = (),
    order: Iterable[str] = DEFAULT_ORDER,
    hidden: Iterable[str] = (),
) -> dict[str, int]:
    """Which columns fit in `available` cells, with their widths, in `order`.

    Columns are admitted by priority while they fit (an optional one only when named in
    `optional`, none of `hidden`); leftover space then goes to the columns whose text is cut
    (`needs`: the widest text each would show), in FLEX_ORDER, each up to its need and its
    `flex`; what is still left widens them up to `flex` alone.
    """
    chosen: set[str] = set()
    used = 0
    wanted, skip = set(optional), set(hidden) - FIXED
    needs = needs or {}
    for col in sorted(COLUMNS, key=lambda c: c.priority):
        if (col.optional and col.key not in wanted) or col.key in skip:
            continue
        need = col.width + SEP
        if col.priority == 0 or used + need <= available:
            chosen.add(col.key)
            used += need
    keys = [k for k in order if k in chosen] + [k for k in DEFAULT_ORDER if k in chosen]
    widths = {k: BY_KEY[k].width for k in dict.fromkeys(keys)}
    spare = max(0, available - used)
    # a column no row has text for (Why while every node is ONLINE) keeps its place, so the
    # first reason moves nothing else, but gives all but its header's cells to the cut ones
    empty = {k for k in EMPTY_NARROWS if k in widths and needs.get(k) == 0}
    for key in empty:
        spare += widths[key] - len(BY_KEY[key].label)
        widths[key] = len(BY_KEY[key].label)
    for capped in (True, False):
        for key in FLEX_ORDER:
            col = BY_KEY[key]
            if key not in widths or not spare or key in empty:
                continue
            room = col.width + col.flex - widths[key]
            if capped or key == "node":  # a node column no wider than the longest name
                room = min(room, needs.get(key, col.width + col.flex) - widths[key])
            extra = max(0, min(room, spare))
            widths[key] += extra
            spare -= extra
    return widths


def fleet_scales(views: Iterable[NodeView]) -> Scales:
    """Each sparkline column's scale over `views` (the whole fleet, not one screen of it)."""
    views = list(views)
    return {c.key: scale for c in COLUMNS if c.scale is not None and (scale := c.scale(views))}


def column_label(key: str, scales: Scales, width: int) -> str:
    """The header of column `key` in `width` cells: its name, then its scale if it has one
    and it fits: `Power 0\N{EN DASH}2 kW`; `Cost 0\N{EN DASH}€40` when the `7d` does not fit."""
    col = BY_KEY[key]
    scale = scales.get(key)
    if scale is not None:
        for head in (col.label, col.label.split(" ")[0]):
            if len(text := f"{head} {scale.text}") <= width:
                return text
    return col.label


def draw_cell(
    key: str, view: NodeView, width: int, now: float, selected: bool, scales: Scales
) -> Text:
    """One cell; a sparkline column's is drawn on its fleet-wide scale."""
    col = BY_KEY[key]
    if col.scale is None:
        return col.cell(view, width, now, selected)
    return col.cell(view, width, now, selected, scale=scales.get(key))  # type: ignore[call-arg]


def render_cells(
    view: NodeView,
    widths: dict[str, int],
    now: float,
    selected: bool = False,
    scales: Scales | None = None,
) -> dict[str, Text]:
    """The row for `view`: one Text per visible column."""
    scales = scales or {}
    return {key: draw_cell(key, view, w, now, selected, scales) for key, w in widths.items()}


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
    out.append(
        f"online {fmt_count(t.online)}/{fmt_count(t.total)}",
        style="bold green" if t.online else "bold",
    )
    out.append(sep)
    out.append(fmt_watts(t.watts), style="cyan")
    if t.scope:  # a sum over nodes that measure different things says so
        out.append(f" ({t.scope})", style="dim")
    out.append(sep)
    out.append(f"{fmt_money(t.cost_7d, t.currency)} 7d", style="magenta")
    if selected is not None:
        out.append(sep)
        out.append(f"{fmt_count(selected)} selected", style="bold yellow" if selected else "dim")
    parts = [
        (t.degraded, "degraded", "yellow"),
        (t.offline, "offline", "red"),
        (t.starting, "starting", "dim"),
        (t.skipped, "skipped", "bold red"),
    ]
    shown = [(n, label, style) for n, label, style in parts if n]
    for i, (n, label, style) in enumerate(shown):
        out.append(sep if i == 0 else " · ")
        out.append(f"{fmt_count(n)} {label}", style=style)
    return out
