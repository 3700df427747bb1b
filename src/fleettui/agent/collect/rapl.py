"""CPU power from Linux RAPL energy counters in powercap sysfs.

The zone tree: `intel-rapl:N` is a package (or `psys`, the platform), `intel-rapl:N:M` its
sub-zones. core and uncore are inside their package; dram is beside it (its own domain, listed
under the package). psys covers the whole SoC platform, packages included, so where it exists it
is read alone; otherwise every package and its dram zone are. Nothing is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleettui.agent.collect.energy import Reading


@dataclass
class _Zone:
    path: Path
    name: str
    kind: str  # cpu-package, dram, psys
    max_range_uj: int


class RaplCollector:
    """Finds the zones once; `readings` reads their counters (the meter does the arithmetic)."""

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        self.root = Path(root)
        self.zones: list[_Zone] = []
        self.reason: str | None = None
        self._discover()

    def _zone(self, p: Path) -> _Zone | None:
        try:
            name = (p / "name").read_text().strip() if (p / "name").exists() else p.name
            max_range = int((p / "max_energy_range_uj").read_text())
            int((p / "energy_uj").read_text())
        except PermissionError:
            self.reason = f"rapl: {p / 'energy_uj'} not readable (root only since Linux 5.10)"
            return None
        except (OSError, ValueError) as exc:
            self.reason = f"rapl: {p}: {exc}"
            return None
        kind = "psys" if name == "psys" else "dram" if name == "dram" else "cpu-package"
        return _Zone(path=p, name=name, kind=kind, max_range_uj=max_range)

    def _discover(self) -> None:
        try:
            tops = sorted(p for p in self.root.glob("intel-rapl:*") if p.name.count(":") == 1)
        except OSError as exc:
            self.reason = f"rapl: {exc}"
            return
        zones = [z for z in (self._zone(p) for p in tops) if z is not None]
        psys = [z for z in zones if z.kind == "psys"]
        if psys:
            self.zones = psys
        else:
            for top in [z for z in zones if z.kind == "cpu-package"]:
                self.zones.append(top)
                for sub in sorted(self.root.glob(f"{top.path.name}:*")):
                    z = self._zone(sub)
                    if z is not None and z.kind == "dram":
                        z.name = f"dram-{top.name.removeprefix('package-')}"
                        self.zones.append(z)
        if not tops and self.reason is None:
            self.reason = f"rapl: no zones under {self.root}"

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def readings(self, problems: list[str]) -> list[Reading]:
        out = []
        for z in self.zones:
            try:
                uj = int((z.path / "energy_uj").read_text())
            except (OSError, ValueError) as exc:
                problems.append(f"rapl: {z.name}: {exc}")
                continue
            out.append(
                Reading(
                    name=z.name,
                    kind=z.kind,
                    source="rapl",
                    key=f"rapl:{z.path}",
                    counter_j=uj / 1e6,
                    wrap_j=z.max_range_uj / 1e6,
                )
            )
        return out
