"""The power-curve harness: known power curves in simulated time through the agent's own meter,
ledger, NVML and RAPL code, against the analytic energy of each curve.

A curve is its power P(t) and its exact energy E(t) = ∫P. The fake NVML GPU reports P as its
power reading and E as its total-energy counter (mJ), as a real board does; the fake RAPL tree
holds E as energy_uj, wrapping at a small max range. Everything must land within 1 %.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from fleettui.agent.collect.energy import (
    EnergyLedger,
    EnergyMeter,
    Reading,
    day_start,
    local_day,
    max_gap_s,
    split_by_day,
)
from fleettui.agent.collect.nvml import NvmlCollector, gpu_readings
from fleettui.agent.collect.rapl import RaplCollector
from fleettui.agent.collect.wall import WallCollector, parse_dcmi, parse_redfish
from fleettui.agent.config import AgentConfig
from fleettui.agent.node import NodeAgent, book, meter_power, sample_every

T0 = 1_780_000_000.0  # 2026-05-28, a plain day in both zones


@dataclass
class Curve:
    name: str
    power: Callable[[float], float]  # W at t seconds after start
    energy: Callable[[float], float]  # J from start to t


def constant(w: float) -> Curve:
    return Curve(f"constant {w:g} W", lambda t: w, lambda t: w * t)


def square(lo: float, hi: float, period: float) -> Curve:
    """lo for the first half of each period, hi for the second."""
    half = period / 2

    def power(t: float) -> float:
        return lo if (t % period) < half else hi

    def energy(t: float) -> float:
        n, r = divmod(t, period)
        return n * (lo + hi) * half + lo * min(r, half) + hi * max(0.0, r - half)

    return Curve(f"square {lo:g}<->{hi:g} W at {period:g} s", power, energy)


def ramp(w0: float, w1: float, over: float) -> Curve:
    k = (w1 - w0) / over
    return Curve(f"ramp {w0:g}->{w1:g} W", lambda t: w0 + k * t, lambda t: w0 * t + k * t * t / 2)


def sine(mean: float, amp: float, period: float) -> Curve:
    w = 2 * math.pi / period
    return Curve(
        f"sine {mean:g}±{amp:g} W",
        lambda t: mean + amp * math.sin(w * t),
        lambda t: mean * t + amp * (1 - math.cos(w * t)) / w,
    )


class CurveNvml:
    """pynvml's calls and units over curves in simulated time; one GPU per curve."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, curves: list[Curve], clock: SimClock, *, counter: bool = True) -> None:
        self.curves, self.clock, self.counter = curves, clock, counter
        self.reset_at: float | None = None  # driver reload: the counter restarts from 0

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.curves)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return "NVIDIA H200"

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-curve-{h}"

    def nvmlDeviceGetMemoryInfo(self, h: int):
        return SimpleNamespace(total=8 * 1024**3, used=1024**3, free=7 * 1024**3)

    def nvmlDeviceGetUtilizationRates(self, h: int):
        return SimpleNamespace(gpu=50, memory=10)

    def _t(self) -> float:
        return self.clock.t - T0

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return round(self.curves[h].power(self._t()) * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if not self.counter:
            raise self.NVMLError("Not Supported")
        e = self.curves[h].energy(self._t())
        if self.reset_at is not None and self._t() >= self.reset_at:
            e -= self.curves[h].energy(self.reset_at)
        # a counter that has run since long before (a simulated day may start before T0)
        return round(e * 1000) + (0 if self.reset_at is not None else 5_000_000_000_000)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 50


class SimClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run_gpus(
    curves: list[Curve],
    seconds: float,
    step: float,
    *,
    counter: bool = True,
    ledger: EnergyLedger | None = None,
    start: float = T0,
) -> tuple[EnergyMeter, EnergyLedger, list[str]]:
    clock = SimClock(start)
    nvml = CurveNvml(curves, clock, counter=counter)
    collector = NvmlCollector(nvml)
    meter = EnergyMeter(sample_s=step, started=start)
    ledger = ledger or EnergyLedger(None, 0.40, "EUR", tz=ZoneInfo("Europe/Berlin"), clock=clock)
    problems: list[str] = []
    for i in range(round(seconds / step) + 1):
        clock.t = start + i * step
        book(meter, ledger, clock.t, gpu_readings(collector.gpus(problems)))
        problems += meter.problems
    return meter, ledger, problems


def truth_j(curves: list[Curve], seconds: float, start: float = T0) -> float:
    return sum(c.energy(start - T0 + seconds) - c.energy(start - T0) for c in curves)


@pytest.mark.parametrize(
    "curve",
    [
        constant(250),
        square(100, 400, 2),
        square(100, 400, 3),
        square(100, 400, 7),
        square(100, 400, 61),
        ramp(50, 700, 3600),
        sine(300, 200, 600),
    ],
    ids=lambda c: c.name,
)
def test_nvml_counter_gives_exact_energy_and_cost_for_any_curve(curve: Curve) -> None:
    meter, ledger, problems = run_gpus([curve, constant(80)], 3600, 2.0)
    true = truth_j([curve, constant(80)], 3600)
    assert meter.node_j == pytest.approx(true, rel=0.01)
    cost = ledger.cost(T0 + 3600)
    kwh = sum(d.energy_wh for d in cost.daily) / 1000
    assert kwh == pytest.approx(true / 3.6e6, rel=0.01)
    assert cost.total_7d == pytest.approx(true / 3.6e6 * 0.40, rel=0.01)
    assert cost.since_start == pytest.approx(true / 3.6e6 * 0.40, rel=0.01)
    assert problems == []
    power = meter_power(meter)
    assert power.source == "nvml-energy" and power.scope == "GPU"
    assert [p.source for p in power.parts] == ["nvml-energy", "nvml-energy"]


def test_square_wave_at_2s_for_a_whole_day_through_a_fake_nvml_gpu() -> None:
    """The issue's case: 100<->400 W at a 2 s period, read every 2 s, a whole calendar day.
    Sampled power reads the same phase every time (+60 % before); the counter is exact."""
    start = day_start(dt.date(2026, 5, 29), ZoneInfo("Europe/Berlin"))
    assert start > T0
    curve = square(100, 400, 2)
    _, ledger, _ = run_gpus([curve], 86400, 2.0, start=start)
    day = {d.date: d for d in ledger.cost(start + 86400 + 60).daily}["2026-05-29"]
    true_wh = truth_j([curve], 86400, start) / 3600
    assert true_wh == pytest.approx(6000.0)  # 250 W mean for 24 h
    assert day.energy_wh == pytest.approx(true_wh, rel=0.01)
    assert day.cost == pytest.approx(true_wh / 1000 * 0.40, rel=0.01)


def test_sampled_power_is_the_declared_fallback_and_fine_for_slow_curves() -> None:
    meter, _, _ = run_gpus([sine(300, 200, 600)], 3600, 2.0, counter=False)
    assert meter_power(meter).source == "nvml-power"
    assert meter.node_j == pytest.approx(truth_j([sine(300, 200, 600)], 3600), rel=0.01)


def test_driver_reload_resets_the_counter_without_a_negative_or_a_jump() -> None:
    curve = constant(300)
    clock = SimClock()
    nvml = CurveNvml([curve], clock)
    collector = NvmlCollector(nvml)
    meter = EnergyMeter(sample_s=2.0, started=T0)
    problems: list[str] = []
    for i in range(1801):
        clock.t = T0 + 2.0 * i
        if i == 900:
            nvml.reset_at = clock.t - T0 - 1.0  # reloaded a second before this reading
        meter.update(clock.t, gpu_readings(collector.gpus([])))
        problems += meter.problems
    assert meter.node_j == pytest.approx(300 * 3600, rel=0.01)
    assert any("counter reset" in p for p in problems)


def make_zone(root: Path, name: str, label: str, energy_uj: int, max_range: int) -> Path:
    z = root / name
    z.mkdir(parents=True)
    (z / "name").write_text(label + "\n")
    (z / "energy_uj").write_text(f"{energy_uj}\n")
    (z / "max_energy_range_uj").write_text(f"{max_range}\n")
    return z


@pytest.mark.parametrize("step", [1.0, 2.0, 5.0])
def test_rapl_counters_through_many_wraps(tmp_path: Path, step: float) -> None:
    """A package ramping 20->180 W and its DRAM at 15 W; the package counter wraps every
    ~100 s (max range 10 kJ), dozens of times in the hour."""
    max_range = 10_000_000_000  # µJ
    pkg_curve, dram_curve = ramp(20, 180, 3600), constant(15)
    pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", 0, max_range)
    dram = make_zone(tmp_path, "intel-rapl:0:0", "dram", 0, max_range)
    rapl = RaplCollector(tmp_path)
    meter = EnergyMeter(sample_s=step, started=T0)
    for i in range(round(3600 / step) + 1):
        t = i * step
        for z, c in ((pkg, pkg_curve), (dram, dram_curve)):
            (z / "energy_uj").write_text(f"{round(c.energy(t) * 1e6 + 7e9) % max_range}\n")
        meter.update(T0 + t, rapl.readings([]))
    true = pkg_curve.energy(3600) + dram_curve.energy(3600)
    assert meter.node_j == pytest.approx(true, rel=0.01)
    power = meter_power(meter)
    assert power.scope == "CPU package + DRAM" and power.source == "rapl"
    assert power.watts == pytest.approx(180 + 15, rel=0.02)


def test_first_rapl_average_is_never_over_milliseconds(tmp_path: Path) -> None:
    """The agent's first two readings come milliseconds apart: no average from those."""
    z = make_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000, 10**12)
    rapl = RaplCollector(tmp_path)
    meter = EnergyMeter(sample_s=2.0, started=T0)
    meter.update(T0, rapl.readings([]))
    (z / "energy_uj").write_text("1900000\n")  # 0.9 J in 3 ms would read as 300 W
    meter.update(T0 + 0.003, rapl.readings([]))
    assert meter_power(meter).watts is None
    (z / "energy_uj").write_text(f"{1_000_000 + 100_000_000}\n")  # 100 J in 1 s
    meter.update(T0 + 1.0, rapl.readings([]))
    assert meter_power(meter).watts == pytest.approx(100.0, rel=0.01)


# --- calendar days ----------------------------------------------------------------------------

DST_DAYS = [
    ("Europe/Berlin", dt.date(2026, 3, 29), 23),
    ("Europe/Berlin", dt.date(2026, 10, 25), 25),
    ("America/New_York", dt.date(2026, 3, 8), 23),
    ("America/New_York", dt.date(2026, 11, 1), 25),
]


@pytest.mark.parametrize(("zone", "day", "hours"), DST_DAYS, ids=lambda v: str(v))
def test_dst_days_keep_their_bucket_and_their_hours(zone: str, day: dt.date, hours: int) -> None:
    tz = ZoneInfo(zone)
    start = day_start(day, tz)
    assert day_start(day + dt.timedelta(days=1), tz) - start == hours * 3600
    # 1 kW from the evening before to the morning after, read once a minute
    ledger = EnergyLedger(None, 0.25, "EUR", tz=tz)
    meter = EnergyMeter(sample_s=60.0, started=start - 7200)
    for i in range(round((hours + 4) * 60) + 1):
        t = start - 7200 + 60 * i
        book(meter, ledger, t, [Reading("wall", "wall", "ipmi", "wall", watts=1000.0)])
    for later in range(0, 6 * 86400, 3 * 3600):  # the bucket is listed on every later day
        cost = ledger.cost(start + hours * 3600 + later)
        dates = [d.date for d in cost.daily]
        assert dates == sorted(set(dates)) and len(dates) == 7
        as_days = [dt.date.fromisoformat(d) for d in dates]
        assert all((b - a).days == 1 for a, b in itertools.pairwise(as_days))
        assert day.isoformat() in dates
        got = {d.date: d for d in cost.daily}[day.isoformat()]
        assert got.energy_wh == pytest.approx(hours * 1000, rel=0.01)
        assert got.cost == pytest.approx(hours * 0.25, rel=0.01)


def test_split_by_day_spans_midnight_and_dst() -> None:
    tz = ZoneInfo("Europe/Berlin")
    start = day_start(dt.date(2026, 3, 29), tz)
    parts = split_by_day(start - 3600, start + 23 * 3600 + 3600, tz)
    assert [(d.isoformat(), round(f * 25, 6)) for d, f in parts] == [
        ("2026-03-28", 1.0),
        ("2026-03-29", 23.0),
        ("2026-03-30", 1.0),
    ]
    assert local_day(start + 23 * 3600 - 1, tz) == dt.date(2026, 3, 29)


def test_a_price_change_leaves_past_days_as_they_were(tmp_path: Path) -> None:
    state = tmp_path / "energy.json"
    tz = ZoneInfo("America/New_York")
    d1 = day_start(dt.date(2026, 6, 1), tz)
    a = EnergyLedger(state, 0.30, "USD", tz=tz)
    a.add(d1 + 3600, d1 + 7200, 3.6e6)  # 1 kWh on June 1st
    a.maybe_save(d1 + 7200, force=True)
    b = EnergyLedger(state, 0.50, "USD", tz=tz)  # restarted with a new price on June 2nd
    b.add(d1 + 86400 + 3600, d1 + 86400 + 7200, 7.2e6)  # 2 kWh
    days = {d.date: d for d in b.cost(d1 + 86400 + 7200).daily}
    assert days["2026-06-01"].cost == pytest.approx(0.30)
    assert days["2026-06-01"].price_per_kwh == 0.30
    assert days["2026-06-02"].cost == pytest.approx(1.00)
    assert b.cost(d1 + 86400 + 7200).total_7d == pytest.approx(1.30)
    assert oct(state.stat().st_mode & 0o777) == "0o644"


def test_version_1_state_keeps_its_days(tmp_path: Path) -> None:
    state = tmp_path / "energy.json"
    state.write_text('{"version": 1, "total_wh": 10.0, "daily_wh": {"2026-06-01": 10.0}}')
    ledger = EnergyLedger(state, 0.2, "EUR")
    assert ledger.days == {"2026-06-01": (10.0, 0.2)}


# --- restarts ---------------------------------------------------------------------------------


def test_restarts_lose_nothing_after_a_clean_stop_and_count_nothing_twice_after_a_crash(
    tmp_path: Path,
) -> None:
    """Three processes over one counter: the first stops cleanly (hands its last readings on),
    the second crashes (its last periodic save has no handover). Each process's own counter
    starts at 0; the ledger keeps the days."""
    state = tmp_path / "energy.json"
    curve = square(100, 400, 7)
    clock = SimClock()
    nvml = CurveNvml([curve], clock)
    segments = [(0.0, 1200.0, "clean"), (1210.0, 2400.0, "crash"), (2420.0, 3600.0, "clean")]
    counted = []
    for a, b, stop in segments:
        ledger = EnergyLedger(state, 0.40, "EUR", tz=ZoneInfo("Europe/Berlin"), clock=clock)
        meter = EnergyMeter(sample_s=2.0, started=T0 + a, boot_time=1.0)
        meter.accept_handover(*ledger.handover_for(1.0))
        collector = NvmlCollector(nvml)
        t = a
        while t <= b:
            clock.t = T0 + t
            book(meter, ledger, clock.t, gpu_readings(collector.gpus([])))
            if stop == "crash" and t == b - 100:
                ledger.maybe_save(clock.t, force=True)  # the last periodic save before the crash
            t += 2.0
        counted.append(meter.node_j)
        if stop == "clean":
            ledger.maybe_save(clock.t, force=True, handover=meter.handover())
    e = curve.energy
    assert counted[0] == pytest.approx(e(1200), rel=0.01)
    assert counted[1] == pytest.approx(e(2400) - e(1200), rel=0.01)  # includes the downtime
    assert counted[2] == pytest.approx(e(3600) - e(2420), rel=0.01)  # the crash's gap is lost
    final = EnergyLedger(state, 0.40, "EUR", tz=ZoneInfo("Europe/Berlin"))
    wh = sum(w for w, _ in final.days.values())
    lost = e(2420) - e(2300)  # after the crashed process's last save, to the restart
    assert wh * 3600 == pytest.approx(e(3600) - lost, rel=0.01)


def test_handover_needs_the_same_boot(tmp_path: Path) -> None:
    state = tmp_path / "energy.json"
    ledger = EnergyLedger(state, 0.4, "EUR")
    ledger.maybe_save(force=True, handover={"boot_time": 100.0, "readings": {"k": [T0, 5.0]}})
    assert EnergyLedger(state, 0.4, "EUR").handover_for(100.0) == ({"k": (T0, 5.0)}, {})
    assert EnergyLedger(state, 0.4, "EUR").handover_for(9999.0) == ({}, {})


@pytest.mark.parametrize(("last_scrape_before_stop", "carried"), [(20, True), (400, False)])
def test_what_prometheus_never_scraped_moves_to_the_next_process(
    tmp_path: Path, last_scrape_before_stop: int, carried: bool
) -> None:
    """The old process counts on after its last scrape; the next one's counter carries that
    energy, so the sum of what Prometheus sees is the truth. The ledger counts it once. A last
    scrape long before the stop is nobody's to miss: nothing is carried then."""
    state = tmp_path / "energy.json"
    clock = SimClock()
    nvml = CurveNvml([constant(100)], clock)
    seen = []
    for a, b in ((0, 1000), (1004, 1100)):
        ledger = EnergyLedger(state, 0.40, "EUR", clock=clock)
        meter = EnergyMeter(sample_s=2.0, started=T0 + a, boot_time=1.0)
        meter.accept_handover(*ledger.handover_for(1.0))
        collector = NvmlCollector(nvml)
        for t in range(a, b + 1, 2):
            clock.t = T0 + t
            book(meter, ledger, clock.t, gpu_readings(collector.gpus([])))
            meter.mark_published()
            if t <= b - last_scrape_before_stop:
                meter.mark_scraped(clock.t)
                last_scraped = meter.node_j
        seen.append(last_scraped if a == 0 else meter.node_j)
        ledger.maybe_save(clock.t, force=True, handover=meter.handover())
    unseen = 100.0 * last_scrape_before_stop
    assert seen[0] == pytest.approx(100 * (1000 - last_scrape_before_stop))
    assert seen[1] == pytest.approx(100 * 100 + (unseen if carried else 0.0))
    wh = sum(w for w, _ in EnergyLedger(state, 0.4, "EUR").days.values())
    assert wh * 3600 == pytest.approx(100 * 1100)


# --- intervals --------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [0.5, 2.0, 60.0, 120.0, 3600.0])
def test_sampled_power_integrates_at_any_configured_interval(interval: float) -> None:
    step = sample_every(interval)
    assert step <= 5.0 and max_gap_s(step) > step
    meter = EnergyMeter(sample_s=interval, started=T0)
    for i in range(11):  # the gap rule scales with the cadence: 120 s steps still count
        meter.update(T0 + interval * i, [Reading("wall", "wall", "ipmi", "wall", watts=500.0)])
    assert meter.node_j == pytest.approx(500.0 * interval * 10)


def test_a_gap_far_beyond_the_cadence_is_not_invented() -> None:
    meter = EnergyMeter(sample_s=2.0, started=T0)
    for t in (0, 2, 4, 3604, 3606):
        meter.update(T0 + t, [Reading("wall", "wall", "ipmi", "wall", watts=3600.0)])
    assert meter.node_j == pytest.approx(3600.0 * 6)


@pytest.mark.anyio
async def test_agent_with_interval_120_reads_energy_between_ticks(tmp_path: Path) -> None:
    """--interval 120: ticks every 2 minutes, energy every 5 s in between (the run loop's
    `sample`); driven by hand here with the simulated node's clock."""
    agent = NodeAgent.simulate(AgentConfig(interval_s=120), "sim-120")
    node = agent.simulated
    assert node is not None
    clock = SimClock(node.started)
    node.clock = clock
    first = await agent.tick()
    truth = 0.0
    for _ in range(24):
        w0 = node.watts(clock.t)
        clock.t += 5.0
        truth += (w0 + node.watts(clock.t)) / 2 * 5.0
        await agent.source.sample(agent.ledger)
    snap = await agent.tick()
    assert first.power.energy_j == 0.0
    assert snap.power.energy_j == pytest.approx(truth, rel=1e-6)
    assert node.mac  # a simulated Mac: measured by its SoC rails, like a real one
    assert snap.power.scope == "SoC (CPU+GPU+ANE+DRAM)" and snap.power.source == "simulated"


# --- wall power -------------------------------------------------------------------------------

DCMI_OUT = """
    Instantaneous power reading:                   412 Watts
    Minimum during sampling period:                 95 Watts
    Maximum during sampling period:                640 Watts
    Average power reading over sample period:      380 Watts
    IPMI timestamp:                           Tue Dec  1 08:00:00 2026
    Sampling period:                          00000001 Seconds.
    Power reading state is:                   activated
"""


def test_parse_dcmi_and_redfish() -> None:
    assert parse_dcmi(DCMI_OUT) == 412.0
    with pytest.raises(ValueError, match="Instantaneous"):
        parse_dcmi("Power reading state is: deactivated")
    assert parse_redfish({"PowerControl": [{"PowerConsumedWatts": 245}]}) == 245.0
    assert parse_redfish({"PowerWatts": {"Reading": 310.5}}) == 310.5
    for bad in ({}, {"PowerControl": [{"PowerConsumedWatts": "x"}]}, [], {"PowerWatts": 3}):
        with pytest.raises(ValueError):
            parse_redfish(bad)
    assert parse_redfish({"PowerWatts": {"Reading": -5}}) == -5.0  # judged by readings()


def test_ipmi_argv_runs_a_real_program_without_a_shell(tmp_path: Path) -> None:
    fake = tmp_path / "ipmitool"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint({DCMI_OUT!r})\n")
    fake.chmod(0o755)
    wall = WallCollector("ipmi", argv=[str(fake), "dcmi", "power", "reading"])
    problems: list[str] = []
    [r] = wall.readings(problems)
    assert (r.kind, r.source, r.watts) == ("wall", "ipmi", 412.0) and problems == []
    broken = WallCollector("ipmi", argv=[str(tmp_path / "missing")])
    [r] = broken.readings(problems)
    assert r.watts is None and "wall power (ipmi)" in problems[0]


class FakeBmc:
    """A Redfish chassis Power resource on 127.0.0.1 behind basic auth."""

    def __init__(self, watts: float) -> None:
        import base64
        import http.server
        import json
        import threading

        self.watts = watts
        bmc = self
        good = "Basic " + base64.b64encode(b"monitor:s3cret").decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != good:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps(
                    {
                        "@odata.id": "/redfish/v1/Chassis/1/Power",
                        "PowerControl": [{"MemberId": "0", "PowerConsumedWatts": bmc.watts}],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/redfish/v1/Chassis/1/Power"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_redfish_wall_power_is_the_scope_and_the_gpus_stay_parts(tmp_path: Path) -> None:
    bmc = FakeBmc(600.0)
    pw = tmp_path / "bmc-password"
    pw.write_text("s3cret\n")
    try:
        wall = WallCollector("redfish", url=bmc.url, username="monitor", password_file=str(pw))
        wrong = WallCollector("redfish", url=bmc.url, username="monitor")
        clock = SimClock()
        collector = NvmlCollector(CurveNvml([constant(300)], clock))
        meter = EnergyMeter(sample_s=2.0, started=T0)
        problems: list[str] = []
        for i in range(31):
            clock.t = T0 + 2.0 * i
            meter.update(clock.t, gpu_readings(collector.gpus([])) + wall.readings(problems))
        assert problems == []
        assert meter.node_j == pytest.approx(600.0 * 60)  # the wall only: the GPU is inside it
        power = meter_power(meter)
        assert (power.scope, power.source, power.watts) == ("wall", "redfish", 600.0)
        assert {p.name: p.source for p in power.parts} == {"gpu0": "nvml-energy", "wall": "redfish"}
        [r] = wrong.readings(problems)
        assert r.watts is None and problems == ["wall power (redfish): HTTP 401"]
        assert "s3cret" not in " ".join(problems)
        wall.close()
        wrong.close()
    finally:
        bmc.close()


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('timezone = "Mars/Olympus"', "timezone: Value error, unknown time zone 'Mars/Olympus'"),
        ('[wall_power]\nsource = "redfish"', "source = 'redfish' needs url"),
        ('[wall_power]\nsource = "ipmi"\nargv = []', "wall_power.argv"),
        ('[wall_power]\nsource = "redfish"\nurl = "ftp://bmc"', "wall_power.url"),
        ('[wall_power]\nsource = "snmp"', "wall_power.source"),
    ],
)
def test_bad_power_config_is_one_clear_line_and_exit_2(
    tmp_path: Path, toml: str, needle: str
) -> None:
    import subprocess

    cfg = tmp_path / "agent.toml"
    cfg.write_text(toml + "\n")
    r = subprocess.run(
        [sys.executable, "-m", "fleettui", "agent", "serve", "--config", str(cfg), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and str(cfg) in r.stderr and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.anyio
async def test_the_loop_does_not_tick_again_right_after_the_servers_first_tick() -> None:
    """serve() ticks once before it listens; the loop's first tick is one interval later (it
    used to follow within milliseconds: a RAPL average over a few ms in the second snapshot)."""
    import anyio

    from fakes import wait_for

    agent = NodeAgent.simulate(AgentConfig(interval_s=1.0), "once")
    await agent.tick()
    async with anyio.create_task_group() as tg:
        t0 = time.monotonic()
        tg.start_soon(agent.run)
        await wait_for(lambda: agent.ticks == 2, 2, interval=0.005, what="the loop's first tick")
        # not before one interval; a loaded machine can only make it later (no upper bound)
        assert time.monotonic() - t0 >= 0.95
        tg.cancel_scope.cancel()


def test_a_part_unreadable_this_round_has_no_figure_and_the_node_none() -> None:
    meter = EnergyMeter(sample_s=2.0, started=T0)
    gpu = Reading("gpu0", "gpu", "nvml-power", "g", watts=300.0)
    cpu = Reading("package-0", "cpu-package", "rapl", "c", counter_j=0.0, wrap_j=1e6)
    meter.update(T0, [gpu, cpu])
    meter.update(T0 + 2, [gpu, Reading("package-0", "cpu-package", "rapl", "c", counter_j=100.0)])
    assert meter_power(meter).watts == pytest.approx(350.0)
    meter.update(T0 + 4, [gpu])  # RAPL read failed
    power = meter_power(meter)
    assert power.watts is None and power.scope == "GPU + CPU package"
    assert {p.name: p.watts for p in power.parts} == {"gpu0": 300.0, "package-0": None}
