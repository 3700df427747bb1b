"""NVIDIA GPUs through NVML (nvidia-ml-py). No driver means no GPUs, not an error."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from fleettui.agent.collect.bounds import bounded, measured
from fleettui.agent.collect.energy import Reading
from fleettui.wire import MAX_MODELS, Gpu, GpuProcess

log = logging.getLogger(__name__)
MB = 1024 * 1024
# pynvml's plain name calls the newest struct version (v3); a driver older than that one lacks
# the symbol (NVMLError_FunctionNotFound), so the older versions are tried after it.
PROCESS_CALLS = (
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetComputeRunningProcesses_v2",
)
NOT_AVAILABLE = 2**64 - 1  # NVML_VALUE_NOT_AVAILABLE as an unsigned long long


def _load_pynvml() -> ModuleType | None:
    try:
        import pynvml  # type: ignore[import-untyped]
    except ImportError:
        return None
    return pynvml


class NvmlCollector:
    """Initialises NVML once; every per-field call is guarded because boards differ in support."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml if nvml is not None else _load_pynvml()
        self.available = False
        self.reason: str | None = None
        if self._nvml is None:
            self.reason = "nvidia-ml-py not installed"
            return
        try:
            self._nvml.nvmlInit()
            self.available = True
        except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA here
            self.reason = f"NVML unavailable: {exc}"

    def close(self) -> None:
        if self.available:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                log.debug("nvmlShutdown failed", exc_info=True)
            self.available = False

    def _try(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            return None

    def gpus(self, problems: list[str]) -> list[Gpu]:
        if not self.available:
            return []
        n = self._nvml
        try:
            count = n.nvmlDeviceGetCount()
        except Exception as exc:
            problems.append(f"nvml: cannot count GPUs: {exc}")
            return []
        out: list[Gpu] = []
        for i in range(count):
            try:
                h = n.nvmlDeviceGetHandleByIndex(i)
            except Exception as exc:
                problems.append(f"nvml: GPU {i} unreadable: {exc}")
                continue
            name = self._try(n.nvmlDeviceGetName, h) or f"GPU {i}"
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            uuid = self._try(n.nvmlDeviceGetUUID, h)
            if isinstance(uuid, bytes):
                uuid = uuid.decode(errors="replace")
            mem = self._try(n.nvmlDeviceGetMemoryInfo, h)
            util = self._try(n.nvmlDeviceGetUtilizationRates, h)
            power_mw = self._try(n.nvmlDeviceGetPowerUsage, h)
            limit_mw = self._try(getattr(n, "nvmlDeviceGetEnforcedPowerLimit", None), h)
            energy_mj = self._try(n.nvmlDeviceGetTotalEnergyConsumption, h)
            temp = self._try(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU)
            where = f"nvml: GPU {i}"
            processes = self._processes(h, where, problems)
            out.append(
                Gpu(
                    index=i,
                    name=bounded(Gpu, "name", str(name), where, problems) or f"GPU {i}",
                    **measured(
                        Gpu,
                        where,
                        problems,
                        uuid=uuid if isinstance(uuid, str) else None,
                        memory_total_mb=_scaled(mem, "total", MB, 1),
                        memory_used_mb=_scaled(mem, "used", MB, 1),
                        util_pct=_scaled(util, "gpu", 1, 1),
                        power_w=_scaled(power_mw, None, 1000.0, 2),
                        power_limit_w=_scaled(limit_mw, None, 1000.0, 2),
                        energy_j=_scaled(energy_mj, None, 1000.0, 3),
                        temp_c=_scaled(temp, None, 1, 1),
                    ),
                    processes=processes or [],
                    # read, nothing attributed yet (attribute.py does that with the engines);
                    # None: the process list was unreadable, so nothing can be attributed.
                    attributed_mb=None if processes is None else 0.0,
                )
            )
        return out

    def _processes(self, h: Any, where: str, problems: list[str]) -> list[GpuProcess] | None:
        """The compute processes on one GPU and the memory each holds; None (and a problem
        line) when the driver cannot list them. One PID listed several times (one entry per
        MIG instance) is one process holding their sum; past MAX_MODELS the biggest are kept."""
        raw: Any = None
        error: Exception | None = None
        for call in PROCESS_CALLS:
            fn = getattr(self._nvml, call, None)
            if fn is None:
                continue
            try:
                raw = fn(h)
                break
            except Exception as exc:  # NotSupported, FunctionNotFound, NoPermission...
                error = error or exc
        if raw is None:
            if error is not None:
                problems.append(f"{where}: processes unreadable: {error}")
            return None
        try:
            entries = list(raw)
        except TypeError:
            problems.append(f"{where}: processes unreadable: not a list")
            return None
        held: dict[int, float | None] = {}
        for entry in entries:
            pid = bounded(
                GpuProcess, "pid", getattr(entry, "pid", None), f"{where}: a process", problems
            )
            if pid is None:
                continue
            used = getattr(entry, "usedGpuMemory", None)
            used = None if used == NOT_AVAILABLE else _scaled(used, None, MB, 1)
            used = bounded(GpuProcess, "used_mb", used, f"{where}: process {pid}", problems)
            before = held.get(pid)
            held[pid] = used if before is None else before + (used or 0.0)
        if len(held) > MAX_MODELS:
            problems.append(
                f"{where}: {len(held)} processes, the {MAX_MODELS} holding most memory kept"
            )
            top = set(sorted(held, key=lambda p: -(held[p] or 0.0))[:MAX_MODELS])
            held = {p: u for p, u in held.items() if p in top}
        # a sum of MIG entries is bounded again: many plausible parts can add up to nonsense
        held = {
            p: bounded(GpuProcess, "used_mb", u, f"{where}: process {p}", problems)
            for p, u in held.items()
        }
        return [GpuProcess(pid=pid, used_mb=used) for pid, used in held.items()]


def _scaled(raw: Any, attr: str | None, unit: float, digits: int) -> Any:
    """A driver figure in wire units, or the raw value when it is no number (then `measured`
    names it); None when the board does not report it."""
    value = getattr(raw, attr, None) if attr is not None else raw
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return round(value / unit, digits)
        except (OverflowError, ValueError):  # an int too big for a float
            return value
    return value


def gpu_readings(gpus: list[Gpu]) -> list[Reading]:
    """Each GPU as a meter reading: its total-energy counter where the board has one (exact),
    else its power samples (integrated, and declared so as nvml-power)."""
    return [
        Reading(
            name=f"gpu{g.index}",
            kind="gpu",
            source="nvml-energy" if g.energy_j is not None else "nvml-power",
            key=f"nvml:{g.uuid or g.index}",
            watts=g.power_w,
            counter_j=g.energy_j,
        )
        for g in gpus
    ]
