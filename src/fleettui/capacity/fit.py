"""Does a model fit on a node beside what is resident there, and if not, what would have to go.

Pure: a node's snapshot (its budget and ledger), the model's metadata and the request in, a
`Fit` out — the verdict, the figures and the reasons in plain words. `fleet fit`, the
dashboard's Fit column, the agent's load re-check and the MCP tool all call `check_fit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

from fleettui.capacity.estimate import (
    LLAMACPP_FIT_MARGIN,
    MIB,
    Calibration,
    Estimate,
    Platform,
    calibrated,
    estimate,
    mib,
)
from fleettui.wire import Budget, Engine, Model, ModelMeta, NodeSnapshot, engine_kind

Verdict = Literal["fits", "evict", "no", "unknown"]
PLATFORMS: dict[str, Platform] = {"gpu": "cuda", "unified": "metal", "ram": "cpu"}
# The safety margin kept free on every node: the larger of a floor and a share of the budget,
# for what the estimate cannot see (fragmentation, the driver, a neighbour's growth).
MARGIN_FLOOR = 512 * MIB
MARGIN_SHARE = 0.02
# Ollama's OLLAMA_MAX_LOADED_MODELS default: 3 per GPU (3 on a CPU-only node).
OLLAMA_MAX_LOADED_PER_GPU = 3
# Engines that can unload one model through their own API (what `fleet act unload` uses):
# vLLM and mlx_lm hold their model for the process's life; llama.cpp only in router mode.
UNLOADS = frozenset({"ollama", "lmstudio"})
# Engines whose runtime can leave some layers in host RAM (partial CPU offload).
OFFLOADS = frozenset({"ollama", "llamacpp", "lmstudio"})
SCHEMA = 1  # Fit.to_json()'s document version
Cand = tuple[str, int, Engine]  # an idle model: name, bytes its unloading frees, its engine


@dataclass(frozen=True)
class FitRequest:
    """What is asked: the model, and what the load would use (None: the engine's default)."""

    model: str
    ctx: int | None = None
    parallel: int | None = None
    kv_type: str | None = None
    engine: str | None = None


@dataclass(frozen=True)
class Fit:
    """One node's answer. need = the estimate's total; it fits when need + margin <= free.
    `evict` names the idle models to unload first; `offload_bytes` > 0 means partial CPU
    offload; `label` is the estimate's (exact / heuristic)."""

    node: str
    verdict: Verdict
    engine: str | None
    estimate: Estimate | None
    need_bytes: int | None
    free_bytes: int | None
    margin_bytes: int | None
    evict: tuple[str, ...]
    reasons: tuple[str, ...]
    label: str
    model: str = ""
    offload_bytes: int = 0
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The stable document `fleet fit --json`, the MCP tool and `fleet place` share."""
        est = self.estimate
        return {
            "schema": SCHEMA,
            "node": self.node,
            "model": self.model,
            "verdict": self.verdict,
            "engine": self.engine,
            "need_bytes": self.need_bytes,
            "free_bytes": self.free_bytes,
            "margin_bytes": self.margin_bytes,
            "offload_bytes": self.offload_bytes,
            "evict": list(self.evict),
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "label": self.label,
            "estimate": None
            if est is None
            else {
                "total_bytes": est.total_bytes,
                "host_bytes": est.host_bytes,
                "label": est.label,
                "missing": list(est.missing),
                "notes": list(est.notes),
                "problems": list(est.problems),
                "terms": [
                    {
                        "name": t.name,
                        "bytes": t.bytes,
                        "formula": t.formula,
                        "source": t.source,
                        "where": t.where,
                    }
                    for t in est.terms
                ],
            },
        }


def same_model(a: str, b: str) -> bool:
    """Ollama names 'llama3.1' and 'llama3.1:latest' the same model."""
    return a == b or a.removesuffix(":latest") == b.removesuffix(":latest")


def _richness(meta: ModelMeta) -> int:
    return sum(v is not None for v in meta.model_dump().values())


def find_meta(snaps: Mapping[str, NodeSnapshot], model: str) -> ModelMeta | None:
    """The fullest metadata any node has for `model`, resident or on disk."""
    found: list[ModelMeta] = []
    for snap in snaps.values():
        for eng in snap.engines:
            for m in [*eng.models, *eng.available]:
                if m.meta is not None and same_model(m.name, model):
                    found.append(m.meta)
    return max(found, key=_richness, default=None)


def _node_meta(snap: NodeSnapshot, model: str) -> ModelMeta | None:
    return find_meta({"": snap}, model)


def _pick_engine(snap: NodeSnapshot, req: FitRequest) -> Engine | tuple[Verdict, str]:
    """The engine to load with, or the verdict and why there is none: `no` where the node
    has no such engine, `unknown` where it has one that is down (its ledger is not known)."""
    named = [e for e in snap.engines if e.name == req.engine] if req.engine else snap.engines
    up = [e for e in named if e.status == "up"]
    what = f"{req.engine} engine" if req.engine else "engine"
    if not named:
        return "no", f"no {what} on this node"
    if not up:
        errors = "; ".join(f"{e.name}: {e.error}" for e in named if e.error)
        return "unknown", f"the node's {what} is down" + (f" ({errors})" if errors else "")
    for e in up:  # the engine that has the model on disk, else the first one up
        if any(same_model(d.name, req.model) for d in e.available):
            return e
    return up[0]


def held_bytes(m: Model, kind: str) -> int:
    """What unloading `m` frees from the budget: its GPU share, or all of it without a GPU."""
    mb = m.vram_mb if kind == "gpu" and m.vram_mb is not None else m.size_mb
    return round((mb or 0) * MIB)


def _evictable(snap: NodeSnapshot, kind: str) -> tuple[list[Cand], int]:
    """Idle models an engine can unload: (name, bytes freed, engine); and how many are busy."""
    out = []
    busy = 0
    for e in snap.engines:
        ek = engine_kind(e)
        can = ek in UNLOADS or (ek == "llamacpp" and e.settings and e.settings.router)
        for m in e.models:
            if m.busy:
                busy += 1
            elif can and held_bytes(m, kind) > 0:
                out.append((m.name, held_bytes(m, kind), e))
    return out, busy


def smallest_set(cands: list[Cand], need: int, must: Engine | None = None) -> list[Cand] | None:
    """Fewest models that free `need` bytes (one of them `must`'s, when given), and of those the
    set freeing least; [] when nothing has to go, None when no set is enough."""
    if need <= 0 and must is None:
        return []

    def enough(chosen: tuple[Cand, ...] | list[Cand]) -> bool:
        has_must = must is None or any(c[2] is must for c in chosen)
        return has_must and sum(c[1] for c in chosen) >= need

    if len(cands) > 16:  # combinations grow fast: the largest first (must's largest leading)
        order = sorted(cands, key=lambda c: (must is not None and c[2] is not must, -c[1], c[0]))
        picked: list[Cand] = []
        for c in order:
            picked.append(c)
            if enough(picked):
                return picked
        return None
    named = sorted(cands, key=lambda c: c[0])
    for k in range(1, len(named) + 1):
        sets = [s for s in combinations(named, k) if enough(s)]
        if sets:
            return list(min(sets, key=lambda s: (sum(c[1] for c in s), [c[0] for c in s])))
    return None


def margin_for(budget: Budget, n_gpus: int, engine: str) -> tuple[int, str]:
    """The safety margin kept free, and why that much."""
    total = round(budget.total_mb * MIB)
    base = max(MARGIN_FLOOR, round(total * MARGIN_SHARE))
    why = f"{mib(base)} safety margin (the larger of {mib(MARGIN_FLOOR)} and 2% of the budget)"
    if engine == "llamacpp" and budget.kind == "gpu" and n_gpus:
        fitm = LLAMACPP_FIT_MARGIN * n_gpus
        if fitm > base:
            return fitm, f"{mib(fitm)} margin (llama.cpp --fit keeps 1024 MiB free per GPU)"
    return base, why


def check_fit(
    node: str,
    snap: NodeSnapshot,
    meta: ModelMeta | None,
    req: FitRequest,
    calibration: Mapping[str, Calibration] | None = None,
) -> Fit:
    """fits / evict (which idle models) / no / unknown, with the figures and reasons.
    `calibration`: the operator's measured correction for this question, by engine name
    (aggregator/calibration.py); when one applies, the last reason says so."""

    def out(verdict: Verdict, reasons: Iterable[str], **kw: Any) -> Fit:
        base: dict[str, Any] = {
            "engine": None,
            "estimate": None,
            "need_bytes": None,
            "free_bytes": None,
            "margin_bytes": None,
            "evict": (),
            "label": "heuristic",
        }
        base.update(kw)
        cal = base["estimate"].calibration if base["estimate"] is not None else None
        if cal is not None:
            reasons = [*reasons, f"estimate calibrated x{cal.ratio:.3f} by {cal.n} observed loads"]
        return Fit(node, verdict, reasons=tuple(reasons), model=req.model, **base)

    for e in snap.engines:
        for m in e.models:
            if same_model(m.name, req.model):
                held = round((m.size_mb or 0) * MIB) or None
                return out(
                    "fits", ["already loaded"], engine=e.name, need_bytes=held, label="exact"
                )
    budget = snap.budget
    if budget is None:
        return out("unknown", ["the node sends no memory budget (an agent older than schema 2)"])
    picked = _pick_engine(snap, req)
    if isinstance(picked, tuple):
        return out(picked[0], [picked[1]])
    eng = picked
    meta = meta or _node_meta(snap, req.model)
    platform = PLATFORMS[budget.kind]
    gpu_total = _gpu_total(snap)
    est = estimate(
        meta,
        engine=engine_kind(eng),
        ctx=req.ctx,
        parallel=req.parallel,
        kv_type=req.kv_type,
        platform=platform,
        settings=eng.settings,
        gpu_total_bytes=gpu_total,
    )
    est = calibrated(est, (calibration or {}).get(eng.name))
    free = round(budget.free_mb * MIB)
    margin, margin_why = margin_for(budget, len(snap.gpus), engine_kind(eng))
    common = {
        "engine": eng.name,
        "estimate": est,
        "free_bytes": free,
        "margin_bytes": margin,
        "notes": est.notes,
    }
    if est.total_bytes is None:
        return out("unknown", [f"cannot estimate: {m}" for m in est.missing], **common)
    need = est.total_bytes
    common |= {"need_bytes": need, "label": est.label}
    if est.problems:
        return out("no", est.problems, **common)
    short = need + margin - free
    head = f"needs {mib(need)} + {margin_why}; {mib(free)} free ({budget.limit})"
    slots = _ollama_slots(snap, eng)
    if short <= 0 and slots is None:
        return out("fits", [f"{head}: {mib(-short)} to spare"], **common)
    cands, busy = _evictable(snap, budget.kind)
    chosen = smallest_set(cands, short, must=eng if slots else None)
    extra = [slots] if slots else []
    if chosen:
        return _evicted(out, chosen, head, extra, common)
    if slots:
        mine = any(c[2] is eng for c in cands)
        why = f"{head}: evicting every idle model is not enough"
        if not mine:
            why = f"no idle {eng.name} model to unload"
        return out("no", [slots, why], **common)
    offload = _offload(engine_kind(eng), budget, est, short)
    if offload:
        return out(
            "fits",
            [f"{head}: fits with partial CPU offload ({mib(offload)} of layers in host RAM)"],
            offload_bytes=offload,
            **common,
        )
    freeable = sum(c[1] for c in cands)
    reasons = [f"{head}: {mib(short)} short"]
    if freeable:
        reasons.append(f"evicting every idle model frees only {mib(freeable)}")
    if busy:
        reasons.append(f"{busy} busy model{'s' if busy != 1 else ''} never evicted")
    return out("no", reasons, **common)


def _evicted(
    out: Any,
    chosen: list[Cand],
    head: str,
    extra: list[str],
    common: dict[str, Any],
) -> Fit:
    names = tuple(c[0] for c in chosen)
    freed = sum(c[1] for c in chosen)
    unsure = [n for n, _, e in chosen if any(m.name == n and m.busy is None for m in e.models)]
    if unsure:
        common = common | {
            "notes": (
                *common.get("notes", ()),
                f"busy state not reported for {', '.join(unsure)}: counted as idle",
            )
        }
    listed = ", ".join(f"{c[0]} ({mib(c[1])})" for c in chosen)
    return out(
        "evict",
        [f"{head}: after unloading idle {listed}, {mib(freed)} freed", *extra],
        evict=names,
        **common,
    )


def _ollama_slots(snap: NodeSnapshot, eng: Engine) -> str | None:
    """Why Ollama must unload one of its models first (MAX_LOADED_MODELS), or None."""
    if engine_kind(eng) != "ollama":
        return None
    limit = (eng.settings.max_loaded if eng.settings else None) or OLLAMA_MAX_LOADED_PER_GPU * max(
        len(snap.gpus), 1
    )
    if len(eng.models) < limit:
        return None
    return f"Ollama holds {len(eng.models)} models, its OLLAMA_MAX_LOADED_MODELS limit is {limit}"


def _offload(engine: str, budget: Budget, est: Estimate, short: int) -> int:
    """Bytes of layers left in host RAM when the GPU lacks `short` and RAM has it (ggml engines
    only). Partial: only layers move, so the shortfall must be less than the weights and
    the GPU must keep the rest (its free memory above the margin); else 0."""
    if engine not in OFFLOADS or budget.kind != "gpu" or budget.ram_free_mb is None:
        return 0
    weights = sum(t.bytes for t in est.terms if t.name == "weights")
    if not 0 < short < weights or round(budget.ram_free_mb * MIB) < short + MARGIN_FLOOR:
        return 0
    return short


def _gpu_total(snap: NodeSnapshot) -> int | None:
    """Total GPU memory of the node (the budget's total on a GPU node), bytes."""
    totals = [g.memory_total_mb for g in snap.gpus if g.memory_total_mb]
    if totals:
        return round(sum(totals) * MIB)
    if snap.budget is not None and snap.budget.kind != "ram":
        return round(snap.budget.total_mb * MIB)
    return None
