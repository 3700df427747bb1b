"""Apple Silicon energy from IOReport through zeus-apple-silicon (ml.energy's binding).

`AppleEnergyMonitor().get_cumulative_energy()` gives each rail's energy since the monitor was
made, in millijoules: CPU, GPU, ANE (Neural Engine) and DRAM, any of them None where the chip
does not report it. Each rail is one meter part of kind `soc`, read as a counter like RAPL (its
deltas are exact however the power moves between readings). Rails that never report are no
part; one that stops reporting mid-run leaves its part without a figure (the meter's rule).
No module or an unsupported chip is a reason, never an exception.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from fleettui.agent.collect.energy import Reading

# part name -> the AppleEnergyMetrics attributes that hold it (zeus-apple-silicon 1.0 named
# the CPU total `cpu_mj`; later releases `cpu_total_mj`)
RAILS: dict[str, tuple[str, ...]] = {
    "soc-cpu": ("cpu_total_mj", "cpu_mj"),
    "soc-gpu": ("gpu_mj",),
    "soc-ane": ("ane_mj",),
    "soc-dram": ("dram_mj",),
}


def _load_zeus() -> ModuleType | None:
    try:
        import zeus_apple_silicon  # type: ignore[import-not-found]  # macOS wheels only
    except ImportError:
        return None
    return zeus_apple_silicon


def _mj(metrics: Any, attrs: tuple[str, ...]) -> float | None:
    for attr in attrs:
        v = getattr(metrics, attr, None)
        if isinstance(v, int | float) and not isinstance(v, bool):
            try:
                return float(v)
            except OverflowError:  # an integer past float range: no reading
                return None
    return None


class IOReportCollector:
    """Makes the monitor once; `readings` reads its counters (the meter does the arithmetic)."""

    def __init__(self, zeus: Any | None = None) -> None:
        module = zeus if zeus is not None else _load_zeus()
        self.reason: str | None = None
        self._monitor: Any = None
        # counters start at 0 with each monitor: a key of this process's own, so a restart's
        # handover never pairs them with the previous process's readings
        self._key = f"ioreport:{os.getpid()}:"
        if module is None:
            self.reason = (
                "ioreport: zeus-apple-silicon not installed (pip install 'fleettui[agent]' "
                "on macOS); no SoC power or energy"
            )
            return
        try:
            self._monitor = module.AppleEnergyMonitor()
        except Exception as exc:  # no IOReport energy channels: an unsupported chip
            self.reason = f"ioreport: unsupported here ({exc}); no SoC power or energy"

    @property
    def available(self) -> bool:
        return self._monitor is not None

    def readings(self, problems: list[str]) -> list[Reading]:
        if self._monitor is None:
            return []
        try:
            metrics = self._monitor.get_cumulative_energy()
        except Exception as exc:
            problems.append(f"ioreport: energy unreadable: {exc}")
            return []
        out = []
        for name, attrs in RAILS.items():
            mj = _mj(metrics, attrs)
            if mj is not None:
                key = self._key + name
                out.append(Reading(name, "soc", "ioreport", key, counter_j=mj / 1000.0))
        if not out:
            problems.append("ioreport: no rail reports energy (CPU, GPU, ANE, DRAM)")
        return out
