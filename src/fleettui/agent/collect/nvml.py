"""NVIDIA GPUs through NVML (nvidia-ml-py). No driver means no GPUs, not an error."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from fleettui.agent.collect.energy import Reading
from fleettui.wire import Gpu

log = logging.getLogger(__name__)
MB = 1024 * 1024


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
            energy_mj = self._try(n.nvmlDeviceGetTotalEnergyConsumption, h)
            temp = self._try(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU)
            out.append(
                Gpu(
                    index=i,
                    name=str(name),
                    uuid=uuid,
                    memory_total_mb=round(mem.total / MB, 1) if mem is not None else None,
                    memory_used_mb=round(mem.used / MB, 1) if mem is not None else None,
                    util_pct=float(util.gpu) if util is not None else None,
                    power_w=round(power_mw / 1000.0, 2) if power_mw is not None else None,
                    energy_j=round(energy_mj / 1000.0, 3) if energy_mj is not None else None,
                    temp_c=float(temp) if temp is not None else None,
                )
            )
        return out


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
