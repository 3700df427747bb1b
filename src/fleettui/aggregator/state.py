"""What the aggregator hands the views: plain, copyable values, never its internals."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

from fleettui.capacity.fit import Fit
from fleettui.textsafe import clean
from fleettui.wire import DISPLAY, NodeSnapshot, in_scope, scope_code


class NodeState(enum.StrEnum):
    INITIALIZING = "INITIALIZING"
    ONLINE = "ONLINE"
    DEGRADED = "DEGRADED"
    OFFLINE = "OFFLINE"


class ChainStatus(enum.StrEnum):
    OK = "ok"
    BROKEN = "BROKEN"
    UNKNOWN = "?"
    NOT_APPLICABLE = "n/a"


@dataclass(frozen=True, slots=True)
class BudgetFacts:
    """The node's model-memory budget, for fleet totals (wire.Budget has the rest)."""

    kind: str  # gpu | unified | ram
    total_mb: float
    free_mb: float
    limit: str  # what sets the total, terminal-safe


@dataclass(frozen=True, slots=True)
class GpuFacts:
    """The GPUs in one line: how many, of which model, and the busiest one's figures (the
    GPU column shows and sorts by these)."""

    count: int
    model: str  # the short name of the first GPU's model ("H100"), "mixed" when they differ
    util_pct: float | None  # the busiest GPU's
    temp_c: float | None
    power_pct: float | None  # its power against its enforced limit, 0-100+


def short_gpu_name(name: str) -> str:
    """`NVIDIA H100 80GB HBM3` -> `H100`, `NVIDIA GeForce RTX 4090` -> `4090`,
    `Apple M2 Ultra GPU` -> `M2Ultra`: what tells two GPUs apart in a narrow cell."""
    words = [w for w in name.split() if w.casefold() not in _GPU_NOISE]
    if not words:
        return name[:8]
    if len(words) > 1 and words[0][:1] in "Mm" and words[0][1:].isdigit():  # Apple M2 Ultra
        return (words[0] + words[1])[:8]
    return words[0][:8]


_GPU_NOISE = frozenset({"nvidia", "geforce", "rtx", "tesla", "quadro", "apple", "amd", "gpu"})


def _gpu_facts(snap: NodeSnapshot) -> GpuFacts | None:
    if not snap.gpus:
        return None
    models = {clean(short_gpu_name(g.name)) for g in snap.gpus}  # facts skip DISPLAY parsing
    busiest = max(snap.gpus, key=lambda g: (g.util_pct or 0.0, g.temp_c or 0.0))
    power_pct = None
    if busiest.power_w is not None and busiest.power_limit_w:
        power_pct = 100 * busiest.power_w / busiest.power_limit_w
    return GpuFacts(
        count=len(snap.gpus),
        model=models.pop() if len(models) == 1 else "mixed",
        util_pct=busiest.util_pct,
        temp_c=busiest.temp_c,
        power_pct=power_pct,
    )


def _models_len(snap: NodeSnapshot) -> int:
    """How wide `first-model +N` is: the Models cell's natural width."""
    names = [m.name for e in snap.engines if e.status == "up" for m in e.models]
    return (
        len(names[0]) + len(f" +{len(names) - 1}")
        if len(names) > 1
        else len(names[0])
        if names
        else 0
    )


@dataclass(frozen=True, slots=True)
class SnapshotFacts:
    """The snapshot figures a view needs for every node (fleet totals, every sort key, numeric
    filters), kept beside the snapshot so that reading them never parses it."""

    watts: float | None
    cost_7d: float
    currency: str
    gpu_mem_mb: tuple[float, float] | None = None  # (used, total) over every GPU, if all known
    engines_down: int = 0
    models: int = 0  # resident in engines that are up
    scope: str = ""  # what `watts` covers, in letters (wire.scope_code): GCM, W...
    ts: float | None = None  # when the node collected the snapshot (the node's clock)
    cost_today: float = 0.0
    budget: BudgetFacts | None = None
    cpu_pct: float | None = None
    mem_mb: tuple[float, float] | None = None  # host RAM (used, total), if both known
    mem_pressure_pct: float | None = None
    gpu: GpuFacts | None = None
    engines_len: int = 0  # the Engines and Models cells' natural widths (views/columns.py)
    models_len: int = 0
    engine_names: tuple[str, ...] = ()  # what `engine=` and a bare search word read
    model_names: tuple[str, ...] = ()  # resident in engines that are up (`model=`)
    cost_day_max: float = 0.0  # the dearest of the last 7 days (the fleet's cost scale)

    @classmethod
    def of(cls, snap: NodeSnapshot) -> SnapshotFacts:
        used = [g.memory_used_mb for g in snap.gpus]
        total = [g.memory_total_mb for g in snap.gpus]
        mem = None
        if snap.gpus and None not in used and None not in total:
            mem = (sum(u for u in used if u is not None), sum(t for t in total if t is not None))
        return cls(
            watts=snap.power.watts,
            cost_7d=snap.cost.total_7d,
            currency=snap.cost.currency,
            gpu_mem_mb=mem,
            engines_down=sum(e.status != "up" for e in snap.engines),
            models=sum(len(e.models) for e in snap.engines if e.status == "up"),
            scope=scope_code([p.kind for p in in_scope(snap.power.parts)]),
            ts=snap.ts,
            cost_today=snap.cost.today,
            budget=None
            if (b := snap.budget) is None
            else BudgetFacts(b.kind, b.total_mb, b.free_mb, clean(b.limit)),
            cpu_pct=snap.cpu.percent,
            mem_mb=None
            if (m := snap.memory).used_mb is None or m.total_mb is None
            else (m.used_mb, m.total_mb),
            mem_pressure_pct=snap.memory.pressure_pct,
            gpu=_gpu_facts(snap),
            engines_len=sum(
                len(e.name) + (2 + len(str(len(e.models))) if e.status == "up" else 2)
                for e in snap.engines
            )
            - 1
            if snap.engines
            else 0,
            models_len=_models_len(snap),
            engine_names=tuple(e.name for e in snap.engines),
            model_names=tuple(m.name for e in snap.engines if e.status == "up" for m in e.models),
            cost_day_max=max((d.cost for d in snap.cost.daily[-7:]), default=0.0),
        )


@dataclass
class NodeView:
    """One node as the views see it. `snapshots()` returns deep copies of these.

    Its text is terminal-safe (fleettui.textsafe): what came from the node or the config is
    cleaned when the view is built, and the snapshot is parsed with the `DISPLAY` context,
    which cleans every string in it. So no view can forget to, whatever it draws.

    The aggregator hands the snapshot over as its JSON text (`snapshot_json`): `snapshot` is
    parsed from it on first access, so a dashboard that changes 100 rows a tick parses only
    the few it draws (docs/performance.md). `facts` holds what every row needs without it.
    """

    name: str
    url: str
    role: str = ""
    tags: list[str] = field(default_factory=list)
    has_token: bool = False
    state: NodeState = NodeState.INITIALIZING
    reasons: list[str] = field(default_factory=list)  # why DEGRADED / OFFLINE
    snapshot: NodeSnapshot | None = None
    latency_ms: float | None = None  # last snapshot request round trip
    last_seen: float | None = None  # unix time of the last good answer
    last_error: str | None = None
    # Mean watts per 15 s bucket over 10 minutes, oldest first, None where no sample came;
    # the newest is bucket number `power_slot` (aggregator/history.PowerHistory).
    power_history: list[float | None] = field(default_factory=list)
    power_slot: int | None = None
    cost_daily: list[float] = field(default_factory=list)  # 7 days, oldest first
    chain: ChainStatus = ChainStatus.UNKNOWN
    chain_detail: str | None = None  # e.g. "seq 12: hash mismatch"
    stream_ok: bool = False  # SSE stream connected and delivering
    version: int = 0  # bumped on every change, so views can skip unchanged rows
    kind: str = "fleettui"  # fleettui | asiai | ollama (from the fleet config)
    retry_at: float | None = None  # unix time of the next attempt while OFFLINE (backoff)
    # https: the node's certificate as the last handshake showed it (the detail screen)
    tls_protocol: str | None = None
    tls_expires: float | None = None  # unix time
    tls_fingerprint: str | None = None
    snapshot_json: str | bytes | None = field(default=None, repr=False, compare=False)
    facts: SnapshotFacts | None = field(default=None, repr=False, compare=False)
    # The answer to the fleet's fit question (FitWatch), when one is asked; immutable, shared.
    fit: Fit | None = field(default=None, repr=False, compare=False)
    # Its placement score and reasons (aggregator/placement.score, the question's strategy).
    placement: tuple[float, tuple[str, ...]] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def power_peak(self) -> float:
        """The highest bucket of `power_history` (0 for none): the fleet's power scale is the
        highest of these, and a view is copied anew whenever its node changes, so a refresh at
        1000 nodes reads 1000 numbers, not 40,000. Kept from the first read: set the history
        when the view is built, not after."""
        return max(filter(None, self.power_history), default=0.0)

    def __post_init__(self) -> None:
        self.url, self.role = clean(self.url), clean(self.role)
        self.tags = [clean(t) for t in self.tags]
        self.reasons = [clean(r) for r in self.reasons]
        if self.last_error is not None:
            self.last_error = clean(self.last_error)
        if self.chain_detail is not None:
            self.chain_detail = clean(self.chain_detail)
        snap = self.__dict__.get("_snapshot")
        if snap is not None:  # a model given: the facts follow it, whatever else was passed
            self.facts = SnapshotFacts.of(snap)


def _get_snapshot(view: NodeView) -> NodeSnapshot | None:
    snap = view.__dict__.get("_snapshot")
    if snap is None and view.snapshot_json is not None:
        snap = NodeSnapshot.model_validate_json(view.snapshot_json, context=DISPLAY)
        view.__dict__["_snapshot"] = snap
    return snap


def _set_snapshot(view: NodeView, snap: NodeSnapshot | None) -> None:
    view.__dict__["_snapshot"] = snap
    if snap is not None and "facts" in view.__dict__:  # after __init__: keep facts in step
        view.facts = SnapshotFacts.of(snap)


# A property over the dataclass field: `NodeView(snapshot=...)` and `view.snapshot = ...` work
# as for any field, and a view built from JSON parses it only when someone looks.
NodeView.snapshot = property(_get_snapshot, _set_snapshot)  # type: ignore[assignment]


@dataclass(frozen=True)
class FleetEvent:
    """One entry of the merged event stream the views show in their event log."""

    ts: float
    node: str
    kind: str  # "snapshot" | "action" | "audit" | "state" | "error"
    summary: str  # one human line, e.g. "ONLINE -> OFFLINE: connection refused"
    data: dict | None = None  # the node's own JSON, as sent: never print it raw

    def __post_init__(self) -> None:
        # node text ends up in summaries (reasons, action and audit fields): clean it once here
        object.__setattr__(self, "node", clean(self.node))
        object.__setattr__(self, "summary", clean(self.summary))
