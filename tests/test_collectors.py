"""Collectors on fake sources: RAPL sysfs trees, a fake NVML module, known power curves."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from fleettui.agent.collect.energy import EnergyLedger
from fleettui.agent.collect.nvml import NvmlCollector
from fleettui.agent.collect.rapl import RaplCollector


def make_zone(root: Path, name: str, label: str, energy: int, max_range: int) -> Path:
    z = root / name
    z.mkdir(parents=True)
    (z / "name").write_text(label + "\n")
    (z / "energy_uj").write_text(f"{energy}\n")
    (z / "max_energy_range_uj").write_text(f"{max_range}\n")
    return z


def test_rapl_reads_packages_and_dram_not_core_and_not_twice(tmp_path: Path) -> None:
    max_range = 262_143_328_850
    make_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000, max_range)
    make_zone(tmp_path, "intel-rapl:0:0", "core", 5, max_range)  # inside the package
    make_zone(tmp_path, "intel-rapl:0:1", "dram", 2_000_000, max_range)  # beside it
    make_zone(tmp_path, "intel-rapl:1", "package-1", 3_000_000, max_range)
    rapl = RaplCollector(tmp_path)
    assert [(z.name, z.kind) for z in rapl.zones] == [
        ("package-0", "cpu-package"),
        ("dram-0", "dram"),
        ("package-1", "cpu-package"),
    ]
    problems: list[str] = []
    got = {r.name: (r.kind, r.source, r.counter_j, r.wrap_j) for r in rapl.readings(problems)}
    assert got["dram-0"] == ("dram", "rapl", 2.0, max_range / 1e6)
    assert problems == []


def test_rapl_psys_alone_where_present(tmp_path: Path) -> None:
    """psys covers the platform, packages included: read it alone, never psys + package."""
    make_zone(tmp_path, "intel-rapl:0", "package-0", 1, 1000)
    make_zone(tmp_path, "intel-rapl:0:2", "dram", 1, 1000)
    make_zone(tmp_path, "intel-rapl:1", "psys", 5, 1000)
    rapl = RaplCollector(tmp_path)
    assert [(z.name, z.kind) for z in rapl.zones] == [("psys", "psys")]


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


def test_corrupt_energy_state_is_set_aside_with_a_problem(tmp_path: Path) -> None:
    state = tmp_path / "energy.json"
    state.write_text("{not json")
    ledger = EnergyLedger(state, 1.0, "EUR")
    assert ledger.days == {} and "unreadable" in (ledger.problem or "")
    assert (tmp_path / "energy.corrupt").exists()


class PoisonNvml(FakeNvml):
    """A driver gone odd on GPU 0 (every figure impossible); GPU 1 still reads true."""

    def nvmlDeviceGetName(self, h: int) -> bytes | str:
        return "X" * 10_000 if h == 0 else super().nvmlDeviceGetName(h)

    def nvmlDeviceGetMemoryInfo(self, h: int):
        if h == 0:
            return SimpleNamespace(total=10**30, used=-(2**40), free=0)
        return super().nvmlDeviceGetMemoryInfo(h)

    def nvmlDeviceGetUtilizationRates(self, h: int):
        return SimpleNamespace(gpu=float("nan") if h == 0 else 37, memory=0)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return -5_000 if h == 0 else 312_500

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        return 10**5000 if h == 0 else 123_456_789

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 2**31 - 1 if h == 0 else 61


def test_odd_nvml_values_are_dropped_per_field_with_the_gpu_named() -> None:
    problems: list[str] = []
    bad, good = NvmlCollector(PoisonNvml()).gpus(problems)
    assert bad.name == "GPU 0" and bad.uuid == "GPU-0"  # what the driver said well is kept
    dropped = ["memory_total_mb", "memory_used_mb", "util_pct", "power_w", "energy_j", "temp_c"]
    assert all(getattr(bad, f) is None for f in dropped)
    assert good == NvmlCollector(FakeNvml()).gpus([])[1]  # the other GPU is untouched
    assert len(problems) == 7  # one line a field (name too), each naming the GPU and the field
    for field, line in zip(["name", *dropped], problems, strict=True):
        assert line.startswith(f"nvml: GPU 0: {field} ") and "dropped" in line, line
    assert "16610-bit number" in problems[5]  # never str() of the 5,000-digit counter


@pytest.mark.anyio
async def test_a_real_source_with_an_odd_gpu_still_publishes_the_node(xdg_home: Path) -> None:
    """Before: one NaN from the driver failed the whole collection ("collection failed")."""
    from fleettui.agent.config import AgentConfig
    from fleettui.agent.node import NodeAgent

    config = AgentConfig(auto_detect=False, rapl_root=str(xdg_home / "no-rapl"))
    agent = NodeAgent.real(config, nvml=PoisonNvml())
    try:
        snap = await agent.tick()
    finally:
        await agent.source.aclose()
    assert not any("collection failed" in p for p in snap.problems), snap.problems
    assert [g.power_w for g in snap.gpus] == [None, 312.5]
    assert any(p.startswith("nvml: GPU 0: temp_c") for p in snap.problems)
    assert snap.cpu.cores and snap.memory.total_mb  # the rest of the node is there
    assert snap.budget is not None and snap.budget.kind == "gpu"  # over the GPU that reads
    assert (snap.budget.total_mb, snap.budget.used_mb) == (8192, 2048)


def test_odd_host_figures_are_dropped_not_fatal(monkeypatch) -> None:
    import psutil

    from fleettui.agent.collect.host import HostCollector

    host = HostCollector()
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: float("inf"))
    monkeypatch.setattr(psutil, "cpu_count", lambda: -4)
    monkeypatch.setattr(
        psutil, "virtual_memory", lambda: SimpleNamespace(total=10**40, available=-1)
    )
    problems: list[str] = []
    cpu, mem = host.cpu(problems), host.memory(problems)
    assert cpu.percent is None and cpu.cores is None
    assert mem.total_mb is None and mem.used_mb is None
    assert [p.split(" ", 2)[:2] for p in problems[:4]] == [
        ["cpu:", "percent"],
        ["cpu:", "cores"],
        ["memory:", "total_mb"],
        ["memory:", "used_mb"],
    ]


def test_the_meter_drops_impossible_readings_and_books_the_rest() -> None:
    from fleettui.agent.collect.energy import EnergyMeter, Reading

    meter = EnergyMeter(sample_s=2.0, started=0.0)
    for t, wall in ((100.0, 400.0), (102.0, -1e9)):  # a broken BMC's second figure
        meter.update(
            t,
            [
                Reading("wall", "wall", "ipmi", "wall", watts=wall),
                Reading("gpu0", "gpu", "nvml-energy", "g0", watts=float("nan"), counter_j=50.0 * t),
            ],
        )
    parts = {p.name: p for p in meter.parts()}
    assert parts["wall"].watts is None and parts["gpu0"].energy_j == 100.0  # 50 W for 2 s
    assert meter.problems == [
        "energy: wall: watts -1000000000.0 dropped, not a plausible reading "
        "(Input should be greater than or equal to 0)",
        "energy: gpu0: watts nan dropped, not a plausible reading "
        "(Input should be a finite number)",
    ]
