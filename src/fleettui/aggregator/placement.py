"""Where to put a model: every node's fit turned into a score 0-100 with its reasons, ranked.

Pure over the views the aggregator hands out (each with its `fit`, state and snapshot), so
`fleet place`, `fleet load --place`, the dashboard's ranking and the MCP tool give one order.
The weights are in one table below; docs/placement.md says why each is what it is.
Deterministic: the same views give the same order, ties broken by node name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from fleettui.aggregator.fitwatch import VERDICT_ORDER, FitWatch, fit_json, spare_bytes
from fleettui.aggregator.state import NodeState, NodeView
from fleettui.capacity.estimate import MIB
from fleettui.capacity.fit import Fit, held_bytes, same_model

Strategy = Literal["binpack", "spread"]
STRATEGIES: tuple[str, ...] = ("binpack", "spread")
SCHEMA = 1  # the placement document's version

# --- the weights (docs/placement.md) ---------------------------------------------------------
BASE = {"fits": 60.0, "evict": 35.0}  # a node where it fits as things are beats any eviction
HEADROOM = 25.0  # binpack: tightest fit earns all of it; spread: the emptiest node does
OFFLOAD = 15.0  # some layers in host RAM: it runs, slower
EVICT_IDLE = 6.0  # per idle model unloaded first
EVICT_UNSURE = 12.0  # per model unloaded whose busy state the engine does not report
WAITING = 3.0  # per request queued on the node's engines (vLLM /metrics)...
WAITING_MAX = 15.0  # ...up to this much
RUNNING = 1.0  # per request running on the engine that would take the load...
RUNNING_MAX = 5.0
HOT_C = (80.0, 5.0, 88.0, 10.0)  # hottest GPU at or above 80 C: -5; at or above 88 C: -10
POWER_NEAR = 0.9  # a GPU drawing over 90% of its power limit...
POWER = 5.0  # ...costs this much
THERMAL = 8.0  # the OS reports thermal pressure (a Mac throttling)
DEGRADED = 20.0  # the node answers but something on it is wrong
ON_DISK = 10.0  # the model is already on the node's disk: no download
FLOOR = 1.0  # a node where it fits never scores 0: 0 means "cannot place here"


@dataclass(frozen=True)
class Placement:
    """One node's place in the ranking: its score, why, and the fit it came from."""

    rank: int
    node: str
    score: float
    verdict: str
    reasons: tuple[str, ...]
    view: NodeView

    @property
    def fit(self) -> Fit:
        assert self.view.fit is not None
        return self.view.fit

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "node": self.node,
            "score": self.score,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "fit": fit_json(self.view, now),
        }


def _gpu_penalties(view: NodeView) -> list[tuple[float, str]]:
    snap = view.snapshot
    if snap is None:
        return []
    out: list[tuple[float, str]] = []
    temps = [g.temp_c for g in snap.gpus if g.temp_c is not None]
    if temps:
        hot = max(temps)
        warm_c, warm, hot_c, very = HOT_C
        if hot >= hot_c:
            out.append((very, f"hottest GPU at {hot:.0f} C"))
        elif hot >= warm_c:
            out.append((warm, f"hottest GPU at {hot:.0f} C"))
    near = [
        g
        for g in snap.gpus
        if g.power_w is not None and g.power_limit_w and g.power_w >= POWER_NEAR * g.power_limit_w
    ]
    if near:
        out.append((POWER, f"{len(near)} GPU{'s' if len(near) > 1 else ''} near the power limit"))
    thermal = snap.cpu.thermal
    if thermal and thermal.strip().lower() not in ("nominal", "normal", "none"):
        out.append((THERMAL, f"thermal pressure: {thermal}"))
    return out


def _queue_penalties(view: NodeView, engine: str | None) -> list[tuple[float, str]]:
    snap = view.snapshot
    if snap is None:
        return []
    waiting = running = 0
    for e in snap.engines:
        if e.settings is None:
            continue
        waiting += e.settings.requests_waiting or 0
        if e.name == engine:
            running += e.settings.requests_running or 0
    out = []
    if waiting:
        out.append((min(WAITING_MAX, WAITING * waiting), f"{waiting} requests queued"))
    if running:
        out.append((min(RUNNING_MAX, RUNNING * running), f"{running} requests running"))
    return out


def _on_disk(view: NodeView, model: str) -> bool:
    snap = view.snapshot
    return snap is not None and any(
        same_model(d.name, model) for e in snap.engines for d in e.available
    )


def _unsure(fit: Fit) -> set[str]:
    """The evicted models the fit counted as idle without the engine saying so."""
    for note in fit.notes:
        if note.startswith("busy state not reported for "):
            listed = note.removeprefix("busy state not reported for ").split(":")[0]
            return {n.strip() for n in listed.split(",")}
    return set()


def score(view: NodeView, strategy: Strategy) -> tuple[float, tuple[str, ...]]:
    """The node's score and its reasons, the verdict first."""
    fit = view.fit
    if fit is None or fit.verdict not in BASE:
        why = fit.reasons[0] if fit is not None and fit.reasons else "no answer"
        verdict = fit.verdict if fit is not None else "unknown"
        return 0.0, (f"{'does not fit' if verdict == 'no' else 'cannot tell'}: {why}",)
    if fit.reasons and fit.reasons[0] == "already loaded":
        return 100.0, ("already loaded here",)
    points = BASE[fit.verdict]
    reasons = ["fits" if fit.verdict == "fits" else f"fits after evicting {len(fit.evict)}"]
    bonus: list[tuple[float, str]] = []
    minus: list[tuple[float, str]] = []
    spare = spare_bytes(fit)
    snap = view.snapshot
    budget = snap.budget if snap is not None else None
    if spare is not None and snap is not None and budget is not None and budget.total_mb > 0:
        spare += sum(  # what is left once the evicted models are gone
            held_bytes(m, budget.kind)
            for e in snap.engines
            for m in e.models
            if m.name in fit.evict
        )
        share = min(1.0, max(0.0, spare / (budget.total_mb * MIB)))
        term = HEADROOM * (1.0 - share if strategy == "binpack" else share)
        bonus.append((term, f"{share:.0%} of the budget left after it ({strategy})"))
    if fit.offload_bytes:
        minus.append((OFFLOAD, "partial CPU offload"))
    unsure = _unsure(fit)
    for name in fit.evict:
        if name in unsure:
            minus.append((EVICT_UNSURE, f"evicts {name} (busy state unknown)"))
        else:
            minus.append((EVICT_IDLE, f"evicts idle {name}"))
    minus += _queue_penalties(view, fit.engine)
    minus += _gpu_penalties(view)
    if view.state is NodeState.DEGRADED:
        why = view.reasons[0] if view.reasons else "degraded"
        minus.append((DEGRADED, f"DEGRADED: {why}"))
    if _on_disk(view, fit.model):
        bonus.append((ON_DISK, "already on disk"))
    points += sum(p for p, _ in bonus) - sum(p for p, _ in minus)
    reasons += [f"+{p:.0f} {why}" for p, why in bonus if round(p)]
    reasons += [f"-{p:.0f} {why}" for p, why in minus]
    if fit.label == "heuristic":
        reasons.append("estimate is heuristic")
    return round(min(100.0, max(FLOOR, points)), 1), tuple(reasons)


def order_key(view: NodeView, points: float) -> tuple[int, float, str, str]:
    """Where a node with this score goes: fits before evictions before the rest (score 0),
    then by score, then by name. `rank` and the dashboard's Fit column sort by it."""
    verdict = view.fit.verdict if view.fit is not None else "unknown"
    return (VERDICT_ORDER[verdict] if points else 9, -points, view.name.casefold(), view.name)


def rank(views: Iterable[NodeView], strategy: Strategy = "binpack") -> list[Placement]:
    """Every node, best first (`order_key`)."""
    scored = [(v, *score(v, strategy)) for v in views]
    ordered = sorted(scored, key=lambda item: order_key(item[0], item[1]))
    return [
        Placement(i, v.name, points, v.fit.verdict if v.fit else "unknown", reasons, v)
        for i, (v, points, reasons) in enumerate(ordered, 1)
    ]


def placeable(ranking: list[Placement]) -> list[Placement]:
    """The nodes a load may go to: score above 0."""
    return [p for p in ranking if p.score > 0]


def place_document(
    watch: FitWatch, ranking: list[Placement], strategy: str, now: float, top: int | None = None
) -> dict[str, Any]:
    """`fleet place --json` and the MCP rank_placement tool."""
    from dataclasses import asdict

    shown = ranking[:top] if top else ranking
    return {
        "schema": SCHEMA,
        "request": asdict(watch.request),
        "strategy": strategy,
        "meta_from": watch.meta_from,
        "observed_at": now,
        "nodes": [p.to_json(now) for p in shown],
    }
