"""The node's memory budget: what a model can use here, and how it is taken now.

Pure functions over the parts of a snapshot already collected (memory, GPUs, engines), so the
rules are tested without a machine and the simulator draws the same budget a real node sends.
Three kinds (wire.Budget):

- gpu: the NVIDIA GPUs' memory. total = Σ memory_total, used = Σ memory_used (NVML), engines =
  Σ the memory NVML attributes to engine processes (plus the reported vram_mb of engines whose
  process was not found), or, where attribution is unavailable (a process list unreadable, no
  engine PID known), Σ the resident models' vram_mb as the engines report it;
  other = used - engines, free = total - used.
- ram: a node without GPUs. total = RAM, used = RAM not available, engines = Σ the resident
  models' size_mb, free = RAM available.
- unified: Apple Silicon. total = `unified_budget`'s cap; engines = Σ resident size_mb;
  free = what a new model could still take: the cap less what the engines hold, and never
  more than the RAM available now; used = total - free, other = used - engines.

Every part is clamped into 0..its whole (engines ≤ used, free ≥ 0): a driver that reports
used > total gives free 0, not a negative budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleettui.wire import Budget, BudgetKind, Engine, Gpu, Memory

GIB_MB = 1024.0
SMALL_MAC_MB = 36 * GIB_MB  # at or below: macOS wires at most ~2/3 of RAM for the GPU
DEFAULT_RESERVE_MIN_MB = 4 * GIB_MB
DEFAULT_RESERVE_SHARE = 0.10


@dataclass(frozen=True)
class Cap:
    """What bounds a unified node's model memory, with the figures it came from (inputs)."""

    total_mb: float
    limit: str
    inputs: dict[str, float] = field(default_factory=dict)


def default_wired_limit_mb(ram_mb: float) -> float:
    """macOS's GPU wired-memory limit when `iogpu.wired_limit_mb` is 0 (its default).

    A heuristic, not a documented rule: Metal's recommendedMaxWorkingSetSize has been observed
    at about 2/3 of RAM on Macs with up to 36 GB and about 3/4 above (llama.cpp and MLX users'
    reports); `unified_budget` prefers the measured Metal figure where the agent has it."""
    return ram_mb * (2 / 3 if ram_mb <= SMALL_MAC_MB else 3 / 4)


def default_reserve_mb(ram_mb: float) -> float:
    """RAM left to macOS itself (kernel, window server, the agent): 10 % of RAM, at least
    4 GiB. A heuristic: raising the wired limit past RAM - a few GiB makes macOS swap hard."""
    return max(DEFAULT_RESERVE_MIN_MB, DEFAULT_RESERVE_SHARE * ram_mb)


def unified_budget(
    ram_mb: float,
    *,
    wired_limit_mb: float | None = None,
    metal_working_set_mb: float | None = None,
    reserve_mb: float | None = None,
) -> Cap:
    """The unified-memory cap of an Apple Silicon node: min(GPU working-set limit, RAM - OS
    reserve).

    The working-set limit is, in order: Metal's `recommendedMaxWorkingSetSize`
    (`metal_working_set_mb`, measured; it follows the wired limit), else `iogpu.wired_limit_mb`
    when set (> 0), else macOS's default (`default_wired_limit_mb`, a heuristic). The reserve
    is `reserve_mb` or `default_reserve_mb(ram_mb)`. `limit` names the figure that binds."""
    reserve = default_reserve_mb(ram_mb) if reserve_mb is None else max(0.0, reserve_mb)
    if metal_working_set_mb is not None and metal_working_set_mb > 0:
        working_set, why = metal_working_set_mb, "Metal working set"
    elif wired_limit_mb is not None and wired_limit_mb > 0:
        working_set, why = wired_limit_mb, "iogpu.wired_limit_mb"
    else:
        working_set, why = default_wired_limit_mb(ram_mb), "default wired limit (heuristic)"
    after_reserve = max(0.0, ram_mb - reserve)
    total, limit = (
        (working_set, why) if working_set <= after_reserve else (after_reserve, "RAM - OS reserve")
    )
    inputs = {"ram_mb": ram_mb, "wired_limit_mb": wired_limit_mb or 0.0, "reserve_mb": reserve}
    if metal_working_set_mb is not None:
        inputs["metal_working_set_mb"] = metal_working_set_mb
    return Cap(round(total, 1), limit, {k: round(v, 1) for k, v in inputs.items()})


def _resident(engines: list[Engine], attr: str) -> float:
    """Σ of one figure over the models of the engines that answer (size_mb falls back to
    vram_mb: an engine that reports only one figure reports what it holds)."""
    total = 0.0
    for eng in engines:
        if eng.status != "up":
            continue
        for m in eng.models:
            v = getattr(m, attr)
            if v is None and attr == "size_mb":
                v = m.vram_mb
            total += v or 0.0
    return total


def _ram_free(memory: Memory) -> float | None:
    if memory.total_mb is None or memory.used_mb is None:
        return None
    return max(0.0, memory.total_mb - memory.used_mb)


def _parts(
    kind: BudgetKind,
    total: float,
    used: float,
    engines: float,
    limit: str,
    inputs: dict[str, float],
    ram_free: float | None,
) -> Budget:
    engines = min(max(0.0, engines), max(0.0, used))
    return Budget(
        kind=kind,
        total_mb=round(total, 1),
        used_mb=round(used, 1),
        engines_mb=round(engines, 1),
        other_mb=round(max(0.0, used - engines), 1),
        free_mb=round(max(0.0, total - used), 1),
        limit=limit,
        inputs={k: round(v, 1) for k, v in inputs.items()},
        ram_free_mb=None if ram_free is None else round(ram_free, 1),
    )


def gpu_budget(gpus: list[Gpu], engines: list[Engine], ram_free: float | None) -> Budget | None:
    """The gpu kind over the GPUs that report a total; a GPU without a used figure counts as
    full (nothing on it can be promised). None when no GPU reports a total."""
    sized = [g for g in gpus if g.memory_total_mb is not None]
    if not sized:
        return None
    total = sum(g.memory_total_mb or 0.0 for g in sized)
    used = sum(g.memory_total_mb if g.memory_used_mb is None else g.memory_used_mb for g in sized)
    inputs = {"gpu_total_mb": total, "gpu_used_mb": used}  # MiB only, as the wire says
    if all(g.attributed_mb is not None for g in sized):
        engines_mb = sum(g.attributed_mb or 0.0 for g in sized)
        inputs["attributed_mb"] = engines_mb
        # an engine whose process the agent could not find (no PID) holds memory NVML shows
        # among the unattributed processes: its own figure moves that from other to engines
        unseen = [e for e in engines if not e.pids]
        if unseen_mb := _resident(unseen, "vram_mb"):
            engines_mb += unseen_mb
            inputs["unattributed_engines_vram_mb"] = unseen_mb
    else:
        engines_mb = _resident(engines, "vram_mb")
        inputs["resident_vram_mb"] = engines_mb
    return _parts("gpu", total, used, engines_mb, "GPU memory", inputs, ram_free)


def ram_budget(memory: Memory, engines: list[Engine]) -> Budget | None:
    if memory.total_mb is None or memory.used_mb is None:
        return None
    resident = _resident(engines, "size_mb")
    inputs = {"ram_mb": memory.total_mb, "ram_used_mb": memory.used_mb, "resident_mb": resident}
    return _parts(
        "ram", memory.total_mb, memory.used_mb, resident, "RAM", inputs, _ram_free(memory)
    )


def cap_budget(cap: Cap, memory: Memory, engines: list[Engine]) -> Budget:
    """A unified node's budget under its cap: free = min(cap - engines, RAM available)."""
    resident = _resident(engines, "size_mb")
    ram_free = _ram_free(memory)
    free = max(0.0, cap.total_mb - resident)
    if ram_free is not None:
        free = min(free, ram_free)
    inputs = dict(cap.inputs, resident_mb=resident)
    if memory.used_mb is not None:
        inputs["ram_used_mb"] = memory.used_mb
    used = max(0.0, cap.total_mb - free)
    return _parts("unified", cap.total_mb, used, resident, cap.limit, inputs, ram_free)


def node_budget(
    memory: Memory, gpus: list[Gpu], engines: list[Engine], *, unified: Cap | None = None
) -> Budget | None:
    """The node's budget: unified where the caller knows the node is Apple Silicon (it passes
    `unified_budget`'s cap), else gpu when a GPU reports its memory, else ram when the node
    has no GPU. None when nothing can be said (GPUs present, none reporting memory)."""
    if unified is not None:
        return cap_budget(unified, memory, engines)
    if gpus:
        return gpu_budget(gpus, engines, _ram_free(memory))
    return ram_budget(memory, engines)
