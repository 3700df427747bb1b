"""CPU package power from Linux RAPL energy counters in powercap sysfs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class _Zone:
    path: Path
    name: str
    max_range_uj: int
    last_uj: int | None = None
    last_t: float | None = None


def counter_delta(prev: int, now: int, max_range: int) -> int:
    """Energy used between two readings of a counter that wraps at max_range."""
    d = now - prev
    if d < 0:
        d += max_range
    return d


class RaplCollector:
    """Reads top-level package zones only: sub-zones (core, uncore, dram) are inside a package."""

    def __init__(self, root: str | Path = "/sys/class/powercap", clock=time.monotonic) -> None:
        self.root = Path(root)
        self._clock = clock
        self.zones: list[_Zone] = []
        self.reason: str | None = None
        self._discover()

    def _discover(self) -> None:
        try:
            candidates = sorted(self.root.glob("intel-rapl:*"))
        except OSError as exc:
            self.reason = f"rapl: {exc}"
            return
        for p in candidates:
            if p.name.count(":") != 1:  # intel-rapl:0:1 is a sub-zone
                continue
            try:
                name = (p / "name").read_text().strip() if (p / "name").exists() else p.name
                if name == "psys":
                    continue  # platform-wide: overlaps the packages
                max_range = int((p / "max_energy_range_uj").read_text())
                int((p / "energy_uj").read_text())
            except PermissionError:
                self.reason = f"rapl: {p / 'energy_uj'} not readable (root only since Linux 5.10)"
                continue
            except (OSError, ValueError) as exc:
                self.reason = f"rapl: {p}: {exc}"
                continue
            self.zones.append(_Zone(path=p, name=name, max_range_uj=max_range))
        if not candidates and self.reason is None:
            self.reason = f"rapl: no zones under {self.root}"

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def watts(self, problems: list[str]) -> float | None:
        """Average package watts since the previous call; None on the first call or on failure."""
        total = 0.0
        have = False
        for z in self.zones:
            try:
                now_uj = int((z.path / "energy_uj").read_text())
            except (OSError, ValueError) as exc:
                problems.append(f"rapl: {z.name}: {exc}")
                continue
            t = self._clock()
            if z.last_uj is not None and z.last_t is not None and t > z.last_t:
                d = counter_delta(z.last_uj, now_uj, z.max_range_uj)
                total += d / 1e6 / (t - z.last_t)
                have = True
            z.last_uj, z.last_t = now_uj, t
        return round(total, 2) if have else None
