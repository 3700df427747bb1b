"""Collectors on fake sources: RAPL sysfs trees, a fake NVML module, known power curves."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from fleettui.agent.collect.energy import EnergyLedger, local_day
from fleettui.agent.collect.nvml import NvmlCollector
from fleettui.agent.collect.rapl import RaplCollector, counter_delta


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_zone(root: Path, name: str, label: str, energy: int, max_range: int) -> Path:
    z = root / name
    z.mkdir(parents=True)
    (z / "name").write_text(label + "\n")
    (z / "energy_uj").write_text(f"{energy}\n")
    (z / "max_energy_range_uj").write_text(f"{max_range}\n")
    return z


def test_rapl_counter_wraps_at_max_range() -> None:
    assert counter_delta(100, 300, 1000) == 200
    assert counter_delta(900, 100, 1000) == 200


def test_rapl_watts_across_wraparound_on_fake_sysfs(tmp_path: Path) -> None:
    max_range = 262_143_328_850
    pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", max_range - 50_000_000, max_range)
    make_zone(tmp_path, "intel-rapl:0:0", "core", 5, max_range)  # sub-zone: inside package, ignored
    make_zone(tmp_path, "intel-rapl:1", "psys", 5, max_range)  # platform-wide: would double count
    clock = Clock()
    rapl = RaplCollector(tmp_path, clock=clock)
    assert [z.name for z in rapl.zones] == ["package-0"]
    problems: list[str] = []
    assert rapl.watts(problems) is None  # first reading only sets the baseline
    clock.t += 2.0
    (pkg / "energy_uj").write_text(f"{70_000_000}\n")  # wrapped: 50 J before + 70 J after
    assert rapl.watts(problems) == pytest.approx(60.0)
    assert problems == []


def test_rapl_unreadable_reports_reason(tmp_path: Path) -> None:
    rapl = RaplCollector(tmp_path / "missing")
    assert not rapl.available and "no zones" in (rapl.reason or "")


def test_rapl_permission_denied_is_a_reason_not_a_crash(tmp_path: Path, monkeypatch) -> None:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 1, 10)
    real_read = Path.read_text

    def deny(self: Path, *a, **kw):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real_read(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", deny)
    rapl = RaplCollector(tmp_path)
    assert not rapl.available and "not readable" in (rapl.reason or "")


class FakeNvml:
    """Stands in for pynvml where no NVIDIA driver can exist; same call names and units."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, fail_init: bool = False, energy_supported: bool = True) -> None:
        self.fail_init = fail_init
        self.energy_supported = energy_supported
        self.shutdown = False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes | str:
        return b"NVIDIA H200" if h == 0 else "NVIDIA L40S"

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h}"

    def nvmlDeviceGetMemoryInfo(self, h: int):
        return SimpleNamespace(total=8 * 1024**3, used=2 * 1024**3, free=6 * 1024**3)

    def nvmlDeviceGetUtilizationRates(self, h: int):
        return SimpleNamespace(gpu=37, memory=12)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return 312_500  # milliwatts

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if not self.energy_supported:
            raise self.NVMLError("Not Supported")
        return 123_456_789  # millijoules

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 61


def test_nvml_absent_means_no_gpus_not_an_error() -> None:
    c = NvmlCollector(FakeNvml(fail_init=True))
    problems: list[str] = []
    assert c.gpus(problems) == [] and problems == []
    assert not c.available and "NVML unavailable" in (c.reason or "")


def test_nvml_units_and_unsupported_fields() -> None:
    fake = FakeNvml(energy_supported=False)
    c = NvmlCollector(fake)
    gpus = c.gpus([])
    assert [g.name for g in gpus] == ["NVIDIA H200", "NVIDIA L40S"]
    g = gpus[0]
    assert g.power_w == 312.5 and g.memory_total_mb == 8192 and g.memory_used_mb == 2048
    assert g.util_pct == 37 and g.temp_c == 61 and g.energy_j is None
    c.close()
    assert fake.shutdown


def test_nvml_real_library_on_this_machine_fails_soft() -> None:
    """The real nvidia-ml-py with no driver here: must come back empty, never raise."""
    c = NvmlCollector()
    problems: list[str] = []
    gpus = c.gpus(problems)
    assert isinstance(gpus, list) and problems == []
    if not c.available:
        assert gpus == [] and c.reason


def test_energy_cost_matches_known_power_curve_within_1_percent(tmp_path: Path) -> None:
    # P(t) = 300 + 200 sin(2πt/600) W sampled every 2 s for 1 h: exact energy is 300 Wh
    # (the sine integrates to zero over whole periods).
    clock = Clock(1_700_000_000.0)
    ledger = EnergyLedger(tmp_path / "energy.json", price_per_kwh=0.40, currency="EUR", clock=clock)
    t0 = clock.t
    for i in range(0, 1801):
        t = t0 + 2.0 * i
        ledger.add_sample(t, 300 + 200 * math.sin(2 * math.pi * (t - t0) / 600))
    assert ledger.total_wh == pytest.approx(300.0, rel=0.01)
    clock.t = t0 + 3600
    cost = ledger.cost()
    assert sum(d.energy_wh for d in cost.daily) == pytest.approx(300.0, rel=0.01)
    assert cost.total_7d == pytest.approx(0.12, rel=0.01)  # 0.3 kWh * 0.40
    assert len(cost.daily) == 7 and cost.currency == "EUR"


def test_energy_totals_survive_restart_and_gaps_are_not_invented(tmp_path: Path) -> None:
    clock = Clock(1_700_000_000.0)
    state = tmp_path / "state" / "energy.json"
    a = EnergyLedger(state, 1.0, "EUR", clock=clock)
    a.add_sample(clock.t, 3600.0)
    a.add_sample(clock.t + 10, 3600.0)  # 10 Wh
    a.add_sample(clock.t + 10 + 3600, 3600.0)  # an hour-long gap: not integrated
    a.maybe_save(force=True)
    assert oct(state.stat().st_mode & 0o777) == "0o644"
    b = EnergyLedger(state, 1.0, "EUR", clock=clock)
    assert b.total_wh == pytest.approx(10.0)
    assert b.daily_wh[local_day(clock.t + 5)] == pytest.approx(10.0)


def test_corrupt_energy_state_is_set_aside_with_a_problem(tmp_path: Path) -> None:
    state = tmp_path / "energy.json"
    state.write_text("{not json")
    ledger = EnergyLedger(state, 1.0, "EUR")
    assert ledger.total_wh == 0 and "unreadable" in (ledger.problem or "")
    assert (tmp_path / "energy.corrupt").exists()
