"""GPU memory by engine: NVML's per-process figures matched to the engines' processes.

NVML lists the processes holding memory on each GPU; the engine probes know each engine's
PIDs (`Engine.pids`, by port or process lookup) and, where the engine tells, the PID serving a
model (`Model.pid`). A GPU process belongs to an engine when it is one of that engine's PIDs
or a descendant of one (Ollama's runners, vLLM's workers are children of the server), found
by walking its parents. What no engine accounts for is the GPU's `other_mb`.

Pure over its inputs: the parent walk is passed in (`ancestors`, psutil in the agent), so the
rules are tested on a made-up process tree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import psutil

from fleettui.agent.collect.bounds import bounded
from fleettui.wire import Engine, Gpu, GpuProcess, Model

Ancestors = Callable[[int], Sequence[int]]


def process_ancestors(pid: int) -> list[int]:
    """The PIDs above `pid` up to init, nearest first; [] for a process gone or hidden."""
    try:
        return [p.pid for p in psutil.Process(pid).parents()]
    except (psutil.Error, OSError, ValueError):  # NoSuchProcess, AccessDenied, a bad pid
        return []


def attribute(
    gpus: list[Gpu],
    engines: list[Engine],
    problems: list[str],
    ancestors: Ancestors = process_ancestors,
) -> tuple[list[Gpu], list[Engine]]:
    """The GPUs with each process's engine, `attributed_mb` and `other_mb` filled, and the
    engines' models with the GPUs they sit on (`Model.gpus`, and `vram_mb` where the engine
    does not report it or it was only estimated: NVML's figure, `measured`).

    A GPU whose process list was unreadable (`attributed_mb` None from the collector) stays
    unattributed; so does every GPU when no engine that answers has a known PID: 0 there
    would claim the engines hold nothing, which nobody measured. Sums are checked against
    the wire's bounds like any reading (a problem line, not a snapshot the fleet refuses)."""
    owner: dict[int, str] = {}
    for eng in engines:
        if eng.status == "up":
            for pid in eng.pids:
                owner.setdefault(pid, eng.name)
    model_at: dict[int, tuple[int, int]] = {}
    for ei, eng in enumerate(engines):
        for mi, m in enumerate(eng.models):
            if m.pid is not None and eng.status == "up":
                model_at.setdefault(m.pid, (ei, mi))
    chains: dict[int, list[int]] = {}

    def chain(pid: int) -> list[int]:
        if pid not in chains:
            chains[pid] = [pid, *ancestors(pid)]
        return chains[pid]

    by_model: dict[tuple[int, int], dict[int, float]] = {}  # model -> gpu index -> MiB
    by_engine: dict[str, dict[int, float]] = {}
    out_gpus: list[Gpu] = []
    for g in gpus:
        if g.attributed_mb is None or not owner:
            unset = g.attributed_mb is None and g.other_mb is None
            out_gpus.append(
                g if unset else g.model_copy(update={"attributed_mb": None, "other_mb": None})
            )
            continue
        procs: list[GpuProcess] = []
        attributed = 0.0
        for p in g.processes:
            line = chain(p.pid)
            engine = next((owner[q] for q in line if q in owner), None)
            procs.append(p if p.engine == engine else p.model_copy(update={"engine": engine}))
            if engine is None:
                continue
            attributed += p.used_mb or 0.0
            held = by_engine.setdefault(engine, {})
            held[g.index] = held.get(g.index, 0.0) + (p.used_mb or 0.0)
            model = next((model_at[q] for q in line if q in model_at), None)
            if model is not None:
                on = by_model.setdefault(model, {})
                on[g.index] = on.get(g.index, 0.0) + (p.used_mb or 0.0)
        where = f"nvml: GPU {g.index}"
        total = bounded(Gpu, "attributed_mb", round(attributed, 1), where, problems)
        used = g.memory_used_mb
        other = None if used is None or total is None else round(max(0.0, used - total), 1)
        out_gpus.append(
            g.model_copy(update={"processes": procs, "attributed_mb": total, "other_mb": other})
        )
    placed = [_placed(ei, e, by_model, by_engine, problems) for ei, e in enumerate(engines)]
    return out_gpus, placed


def _placed(
    ei: int,
    eng: Engine,
    by_model: dict[tuple[int, int], dict[int, float]],
    by_engine: dict[str, dict[int, float]],
    problems: list[str],
) -> Engine:
    """The engine with each model's GPUs: by the model's own PID, or, for an engine with one
    resident model, by the engine's processes (llama-server, vLLM: one model a server)."""
    if eng.status != "up" or not eng.models:
        return eng
    models = []
    changed = False
    for mi, m in enumerate(eng.models):
        on = by_model.get((ei, mi))
        if on is None and len(eng.models) == 1 and m.pid is None:
            on = by_engine.get(eng.name)
        if not on or m.gpus:  # nothing measured, or the engine said itself
            models.append(m)
            continue
        sources = {**m.sources, "gpus": "measured"}
        update: dict[str, object] = {"gpus": sorted(on), "sources": sources}
        if m.vram_mb is None or m.sources.get("vram_mb") == "estimated":  # measured wins
            where = f"engine {eng.name}: model {m.name}"
            vram = bounded(Model, "vram_mb", round(sum(on.values()), 1), where, problems)
            if vram is not None:
                update["vram_mb"] = vram
                sources["vram_mb"] = "measured"
        models.append(m.model_copy(update=update))
        changed = True
    return eng.model_copy(update={"models": models}) if changed else eng
