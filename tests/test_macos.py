"""Apple Silicon nodes on Linux, through the real collectors: the macOS tools' outputs recorded
from real Macs (tests/data/macos/README.md names each machine and source) behind the runner
seam, Metal and zeus-apple-silicon as fakes of their published shapes, and the agent itself
serving what it made of them to a real aggregator, its dashboard and /metrics."""

from __future__ import annotations

import datetime as dt
import errno
import io
import json
import plistlib
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from textual.widgets import Static

from fleettui.agent.collect.energy import EnergyLedger, EnergyMeter, day_start
from fleettui.agent.collect.ioreport import IOReportCollector
from fleettui.agent.collect.macos import (
    IOREG,
    PRESSURE,
    SWAP,
    THERM,
    WIRED_LIMIT,
    MacCollector,
    MacParseError,
    parse_ioreg,
    parse_pressure,
    parse_swap,
    parse_sysctl_int,
    parse_therm,
)
from fleettui.agent.config import AgentConfig
from fleettui.agent.node import NodeAgent, book, meter_power
from fleettui.wire import Cpu, Gpu, Memory, NodeSnapshot
from test_energy import T0, Curve, SimClock, constant, square, truth_j

DATA = Path(__file__).parent / "data" / "macos"
WORKING_SET_16GB = 11453251584  # Metal's recommendedMaxWorkingSetSize, 16 GB Mac (README)


def shown(widget: Static) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(widget.content)
    return console.file.getvalue()


def data(name: str) -> bytes:
    return (DATA / name).read_bytes()


class RecordedMac:
    """The runner seam: each argv answers with a recorded output, or raises what a real run
    would (a missing tool, a timeout, a failing exit)."""

    def __init__(self, **over: bytes | BaseException) -> None:
        self.outputs: dict[tuple[str, ...], bytes | BaseException] = {
            IOREG: data("ioreg-m3pro.plist"),
            PRESSURE: data("sysctl-pressure-warn.txt"),
            SWAP: data("sysctl-swap-8gb.txt"),
            WIRED_LIMIT: data("sysctl-wired-limit-m2pro-mini-32gb.txt"),
            THERM: data("pmset-therm-nominal.txt"),
        }
        names = {"ioreg": IOREG, "pressure": PRESSURE, "swap": SWAP, "wired": WIRED_LIMIT}
        for key, value in over.items():
            self.outputs[names.get(key, THERM)] = value
        self.calls: list[tuple[tuple[str, ...], float]] = []

    def __call__(self, argv: Sequence[str], timeout_s: float) -> bytes:
        self.calls.append((tuple(argv), timeout_s))
        out = self.outputs[tuple(argv)]
        if isinstance(out, BaseException):
            raise out
        return out


class FakeMetal:
    """pyobjc-framework-Metal's shape: a default device and its recommendedMaxWorkingSetSize()."""

    def __init__(self, size: object) -> None:
        self.size = size

    def MTLCreateSystemDefaultDevice(self) -> SimpleNamespace:
        return SimpleNamespace(recommendedMaxWorkingSetSize=lambda: self.size)


# --- the recorded outputs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "name", "util", "in_use_mb"),
    [
        ("ioreg-m1-mbp16-2021.plist", "Apple GPU", 2, 325.2),  # no `model` in that paste
        ("ioreg-m1max-64gb.plist", "Apple M1 Max GPU", 25, 711.0),
        ("ioreg-m3pro.plist", "Apple M3 Pro GPU", 16, 541.8),
        ("ioreg-m4pro.plist", "Apple M4 Pro GPU", 27, 620.6),
    ],
)
def test_recorded_ioreg_of_three_chip_generations(
    file: str, name: str, util: int, in_use_mb: float
) -> None:
    (gpu,) = parse_ioreg(data(file))
    assert (gpu.name, gpu.util_pct) == (name, util)
    facts = MacCollector(RecordedMac(ioreg=data(file)), load_metal=False).collect(problems := [])
    (g,) = facts.gpus
    assert (g.name, g.util_pct, g.memory_used_mb) == (name, util, in_use_mb)
    assert problems == []


def test_recorded_sysctl_and_pmset_outputs() -> None:
    wired = WIRED_LIMIT[-1]
    assert parse_sysctl_int(data("sysctl-wired-limit-m2pro-mini-32gb.txt"), wired) == 0
    assert parse_sysctl_int(data("sysctl-wired-limit-m5max-128gb.txt"), wired) == 0
    assert parse_sysctl_int(data("sysctl-wired-limit-raised-14000.txt"), wired) == 14000
    assert parse_sysctl_int(b"14000\n", wired) == 14000  # the -n form
    levels = [
        parse_pressure(data(f"sysctl-pressure-{n}.txt")) for n in ("normal", "warn", "critical")
    ]
    assert levels == ["normal", "warn", "critical"]
    assert parse_pressure(b"4\n") == "critical"
    assert parse_swap(data("sysctl-swap-8gb.txt")) == (407.5, 1024.0)
    assert parse_swap(data("sysctl-swap-heavy.txt")) == (6119.1, 7168.0)
    assert parse_swap(data("sysctl-swap-none.txt")) == (0.0, 0.0)
    assert parse_swap(b"vm.swapusage: total = 1.50G  used = 512.00K  free = 1.50G") == (0.5, 1536.0)
    assert parse_therm(data("pmset-therm-nominal.txt")) == "nominal"
    assert parse_therm(data("pmset-therm-throttled.txt")) == "CPU speed limit 28%"


def test_the_gpu_limit_is_the_sysctl_when_set_else_metals_working_set() -> None:
    metal = FakeMetal(WORKING_SET_16GB)
    default = MacCollector(RecordedMac(), metal).collect(problems := [])
    assert (default.wired_limit_mb, default.working_set_mb) == (0, 10922.7)
    assert default.gpu_limit_mb == 10922.7 and default.gpus[0].memory_total_mb == 10922.7
    raised = MacCollector(RecordedMac(wired=data("sysctl-wired-limit-raised-14000.txt")), metal)
    assert raised.collect(problems).gpu_limit_mb == 14000.0
    assert problems == []
    no_metal = MacCollector(RecordedMac(), load_metal=False).collect(problems)
    assert no_metal.gpu_limit_mb is None and no_metal.gpus[0].memory_total_mb is None
    odd = MacCollector(RecordedMac(), FakeMetal("lots"))
    assert odd.working_set_mb is None and "recommendedMaxWorkingSetSize 'lots'" in odd.metal_problem


def test_every_source_is_an_argv_with_a_timeout() -> None:
    run = RecordedMac()
    MacCollector(run, load_metal=False, timeout_s=1.5).collect([])
    assert {argv for argv, _ in run.calls} == {IOREG, PRESSURE, SWAP, WIRED_LIMIT, THERM}
    assert {t for _, t in run.calls} == {1.5}


@pytest.mark.parametrize(
    ("key", "failure", "says"),
    [
        ("ioreg", FileNotFoundError(errno.ENOENT, "No such file or directory"), "cannot run"),
        ("ioreg", subprocess.TimeoutExpired(list(IOREG), 3.0), "no answer within"),
        ("ioreg", b"<?xml version='1.0'?><plist><array><dict><key>", "not a plist"),
        ("ioreg", plistlib.dumps([{"IOClass": "AppleDisplay"}]), "no IOAccelerator with"),
        ("pressure", b"kern.memorystatus_vm_pressure_level: 3\n", "unknown level 3"),
        ("pressure", subprocess.CalledProcessError(1, list(PRESSURE)), "exited with status 1"),
        ("swap", b"vm.swapusage: unknown oid\n", "no total/used figures"),
        ("wired", b"sysctl: unknown oid 'iogpu.wired_limit_mb'\n", "not an integer"),
        ("therm", b"", "empty output"),
        ("therm", b"pmset: something new\n", "no thermal state"),
    ],
)
def test_a_missing_or_garbled_source_is_one_problem_line(
    key: str, failure: bytes | BaseException, says: str
) -> None:
    facts = MacCollector(RecordedMac(**{key: failure}), load_metal=False).collect(problems := [])
    assert len(problems) == 1 and problems[0].startswith("macos: ") and says in problems[0]
    assert (facts.gpus == []) == (key == "ioreg")  # the other sources still count
    assert (facts.memory["pressure_level"] is None) == (key == "pressure")
    assert (facts.cpu["thermal"] is None) == (key == "therm")


def test_odd_figures_are_dropped_by_the_wires_bounds_not_fatal() -> None:
    """A broken driver's plist: 250 %, a 400-digit byte count, a bool for a size."""
    odd = (
        b"<plist><array><dict><key>model</key><string>Apple M9</string>"
        b"<key>PerformanceStatistics</key><dict><key>Device Utilization %</key><integer>250"
        b"</integer><key>In use system memory</key><integer>" + b"9" * 400 + b"</integer>"
        b"</dict></dict><dict><key>PerformanceStatistics</key><dict><key>In use system memory"
        b"</key><true/></dict><key>IOClass</key><string>AGXAcceleratorG15X</string></dict>"
        b"</array></plist>"
    )
    facts = MacCollector(RecordedMac(ioreg=odd), load_metal=False).collect(problems := [])
    g, h = facts.gpus
    assert g.name == "Apple M9 GPU" and g.util_pct is None and g.memory_used_mb is None
    assert h.name == "Apple GPU" and h.memory_used_mb is None
    assert [p.split(" dropped")[0] for p in problems] == [
        "macos: Apple M9 GPU: util_pct 250",
        "macos: Apple M9 GPU: memory_used_mb a 1329-bit number",
        "macos: Apple GPU: memory_used_mb 'True'",
    ]


def test_more_accelerators_than_the_wire_holds_are_cut_with_a_line() -> None:
    many = plistlib.dumps([{"model": f"M{i}", "PerformanceStatistics": {}} for i in range(300)])
    facts = MacCollector(RecordedMac(ioreg=many), load_metal=False).collect(problems := [])
    assert len(facts.gpus) == 256 and facts.gpus[-1].name == "M255 GPU"
    assert problems == ["macos: ioreg lists 300 accelerators; the first 256 kept"]


# --- Hypothesis: no output makes a parser raise anything but MacParseError ---------------


PARSERS = [
    parse_ioreg,
    parse_pressure,
    parse_swap,
    parse_therm,
    lambda d: parse_sysctl_int(d, "iogpu.wired_limit_mb"),
]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512), st.sampled_from(range(len(PARSERS))))
def test_any_bytes_parse_or_are_one_parse_error(raw: bytes, which: int) -> None:
    try:
        PARSERS[which](raw)
    except MacParseError as exc:
        assert str(exc)


TEXTS = st.sampled_from(
    [
        "iogpu.wired_limit_mb: ",
        "kern.memorystatus_vm_pressure_level: ",
        "vm.swapusage: total = ",
        "M  used = ",
        "G  free = ",
        "Note: No thermal warning level has been recorded\n",
        "CPU_Speed_Limit \t= ",
        "Thermal Warning Level = ",
        "-",
        ".",
        "\n",
    ]
) | st.integers(-(10**20), 10**20).map(str)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXTS, max_size=8).map("".join), st.sampled_from(range(1, len(PARSERS))))
def test_near_miss_text_parses_or_is_one_parse_error(text: str, which: int) -> None:
    try:
        PARSERS[which](text.encode())
    except MacParseError as exc:
        assert str(exc)


LEAF = (
    st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=8)
)
PLIST = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["PerformanceStatistics", "Device Utilization %", "In use system memory", "model"]
            )
            | st.text(max_size=8),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PLIST, st.booleans())
def test_any_plist_through_the_collector_is_figures_or_problem_lines(
    obj: object, binary: bool
) -> None:
    fmt = plistlib.FMT_BINARY if binary else plistlib.FMT_XML
    try:
        raw = plistlib.dumps(obj, fmt=fmt)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # not every value has a plist form
        raw = repr(obj).encode()
    facts = MacCollector(RecordedMac(ioreg=raw), load_metal=False).collect(problems := [])
    for g in facts.gpus:  # what the collector built, the wire accepts as is
        assert Gpu.model_validate(g.model_dump()) == g
    assert Memory(**facts.memory) and Cpu(**facts.cpu)
    assert all(p.startswith("macos: ") for p in problems)


# --- IOReport energy through zeus-apple-silicon's shape ------------------------------------


class FakeZeus:
    """zeus_apple_silicon's shape: AppleEnergyMonitor().get_cumulative_energy() -> millijoules
    per rail since the monitor was made, each rail following a known power curve."""

    def __init__(
        self, rails: dict[str, Curve | None], clock: Callable[[], float], *, chip_ok: bool = True
    ) -> None:
        outer = self
        self.reads = 0

        class AppleEnergyMonitor:
            def __init__(self) -> None:
                if not chip_ok:
                    raise RuntimeError("no IOReport Energy Model channels on this chip")
                self.t0 = clock() - T0

            def get_cumulative_energy(self) -> SimpleNamespace:
                outer.reads += 1
                t = clock() - T0
                return SimpleNamespace(
                    **{
                        attr: None if c is None else round((c.energy(t) - c.energy(self.t0)) * 1e3)
                        for attr, c in rails.items()
                    }
                )

        self.AppleEnergyMonitor = AppleEnergyMonitor


# 100 W and 400 W in the two halves of each period, split over the four rails
RAILS_100_400 = {
    "cpu_total_mj": square(25, 70, 2),
    "gpu_mj": square(60, 300, 2),
    "ane_mj": constant(5),
    "dram_mj": square(10, 25, 2),
}


def test_square_waves_100_400_w_for_a_day_through_ioreport_are_within_1_percent() -> None:
    start = day_start(dt.date(2026, 5, 29), ZoneInfo("Europe/Berlin"))
    clock = SimClock(start)
    collector = IOReportCollector(FakeZeus(RAILS_100_400, clock))
    assert collector.available and collector.reason is None
    meter = EnergyMeter(sample_s=2.0, started=start)
    ledger = EnergyLedger(None, 0.40, "EUR", tz=ZoneInfo("Europe/Berlin"), clock=clock)
    problems: list[str] = []
    for i in range(43200 + 1):
        clock.t = start + i * 2.0
        book(meter, ledger, clock.t, collector.readings(problems))
    curves = list(RAILS_100_400.values())
    true_wh = truth_j(curves, 86400, start) / 3600
    assert true_wh == pytest.approx(6000.0)  # 250 W mean for 24 h
    day = {d.date: d for d in ledger.cost(start + 86400 + 60).daily}["2026-05-29"]
    assert day.energy_wh == pytest.approx(true_wh, rel=0.01)
    power = meter_power(meter)
    assert (power.source, power.scope) == ("ioreport", "SoC (CPU+GPU+ANE+DRAM)")
    assert [(p.name, p.kind, p.source) for p in power.parts] == [
        (n, "soc", "ioreport") for n in ("soc-cpu", "soc-gpu", "soc-ane", "soc-dram")
    ]
    assert problems == []


def test_zeus_missing_unsupported_or_failing_is_a_reason_not_an_exception() -> None:
    clock = SimClock()
    assert "zeus-apple-silicon not installed" in (IOReportCollector(None).reason or "")
    unsupported = IOReportCollector(FakeZeus(RAILS_100_400, clock, chip_ok=False))
    assert not unsupported.available and "unsupported here" in (unsupported.reason or "")
    assert unsupported.readings(problems := []) == [] and problems == []

    no_ane = IOReportCollector(FakeZeus({**RAILS_100_400, "ane_mj": None}, clock))
    assert [r.name for r in no_ane.readings(problems)] == ["soc-cpu", "soc-gpu", "soc-dram"]
    old = IOReportCollector(FakeZeus({"cpu_mj": constant(9), "gpu_mj": None}, clock))
    clock.t += 1
    assert [(r.name, r.counter_j) for r in old.readings(problems)] == [("soc-cpu", 9.0)]
    blank = IOReportCollector(FakeZeus({"gpu_mj": None}, clock))
    assert blank.readings(problems) == [] and "no rail reports energy" in problems[-1]

    class Broken:
        class AppleEnergyMonitor:
            def get_cumulative_energy(self) -> None:
                raise OSError("IOReportCreateSamples failed")

    assert IOReportCollector(Broken()).readings(problems) == []
    assert problems[-1] == "ioreport: energy unreadable: IOReportCreateSamples failed"


# --- the agent, its dashboard and /metrics, with the macOS collectors forced on -----------


def mac_agent(run: RecordedMac, zeus: FakeZeus, xdg_home: Path) -> NodeAgent:
    config = AgentConfig(auto_detect=False, rapl_root=str(xdg_home / "no-rapl"), interval_s=0.2)
    mac = MacCollector(run, FakeMetal(WORKING_SET_16GB))
    return NodeAgent.real(config, mac=mac, zeus=zeus)


@pytest.mark.anyio
async def test_a_mac_agent_serves_its_facts_to_the_snapshot_the_dashboard_and_metrics(
    xdg_home: Path, tmp_path: Path
) -> None:
    from fleettui.agent.server import bind_sockets, serve
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.config import load_fleet_config
    from fleettui.views.tui.app import FleetApp
    from fleettui.views.tui.screens.detail import DetailScreen
    from pilot_util import until

    zeus = FakeZeus(RAILS_100_400, time.time)
    agent = mac_agent(RecordedMac(), zeus, xdg_home)
    sockets = bind_sockets("127.0.0.1", [0])
    url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve([agent], sockets, on_ready=ready.set, handle_signals=False))
        with anyio.fail_after(10):
            await ready.wait()
            while zeus.reads < 3:  # readings a few apart: the counters have an interval
                await anyio.sleep(0.1)
        async with httpx.AsyncClient(timeout=5, trust_env=False) as c:
            snap = NodeSnapshot.model_validate_json((await c.get(f"{url}/api/v1/snapshot")).content)
            metrics = (await c.get(f"{url}/metrics")).text
        (gpu,) = snap.gpus
        assert (gpu.name, gpu.util_pct, gpu.memory_used_mb) == ("Apple M3 Pro GPU", 16, 541.8)
        assert gpu.memory_total_mb == 10922.7  # wired limit 0: Metal's working set
        m = snap.memory
        assert (m.pressure_level, m.swap_used_mb, m.swap_total_mb) == ("warn", 407.5, 1024.0)
        assert snap.cpu.thermal == "nominal"
        assert (snap.power.source, snap.power.scope) == ("ioreport", "SoC (CPU+GPU+ANE+DRAM)")
        b = snap.budget  # this machine's RAM, the recorded Mac's limits
        assert b is not None and b.kind == "unified" and snap.memory.total_mb is not None
        assert b.inputs["metal_working_set_mb"] == 10922.7 and b.inputs["wired_limit_mb"] == 0
        assert b.inputs["ram_mb"] == snap.memory.total_mb
        reserve = max(4096.0, 0.1 * snap.memory.total_mb)
        assert b.total_mb == pytest.approx(min(10922.7, snap.memory.total_mb - reserve), abs=0.2)
        assert not any(p.startswith(("macos", "ioreport", "power:")) for p in snap.problems)
        assert 'fleet_memory_pressure_info{level="warn"} 1.0' in metrics
        assert 'fleet_thermal_info{state="nominal"} 1.0' in metrics
        assert "fleet_memory_swap_used_bytes 4.2729472e+08" in metrics
        assert (
            'fleet_gpu_utilization_ratio{gpu="0",name="Apple M3 Pro GPU",uuid=""} 0.16' in metrics
        )
        assert 'scope="SoC (CPU+GPU+ANE+DRAM)",source="ioreport"' in metrics

        cfg_path = tmp_path / "projects.toml"
        cfg_path.write_text(
            f'[defaults]\npoll_interval_s = 0.2\n\n[[node]]\nname = "mac"\nurl = "{url}"\n'
        )
        async with FleetAggregator(load_fleet_config(cfg_path)) as agg:
            app = FleetApp(agg, min_refresh_s=0.05, tick_s=0.2)
            async with app.run_test(size=(140, 50)) as pilot:
                await until(pilot, lambda: app.main.table.row_count == 1, what="the node")
                await pilot.press("enter")
                await until(pilot, lambda: isinstance(app.screen, DetailScreen), what="detail")
                screen = app.screen

                def text(id_: str) -> str:
                    return shown(screen.query_one(id_, Static))

                await until(pilot, lambda: "Apple M3 Pro GPU" in text("#d-gpus"), what="gpu")
                assert "memory pressure warn" in text("#d-header")
                assert "thermal nominal" in text("#d-header")
                assert "16%" in text("#d-gpus")
                assert "SoC (CPU+GPU+ANE+DRAM)" in text("#d-power")
                assert "ioreport" in text("#d-power")
                gpu_row = text("#d-gpus").split("Apple M3 Pro GPU")[1].split("\n")[0]
                assert gpu_row.rstrip().endswith("ioreport")  # the GPU's energy: its SoC rail
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_raised_wired_limit_is_the_budgets_working_set(xdg_home: Path) -> None:
    """Metal's figure is read once at agent start; a sysctl set since is the one in force."""
    run = RecordedMac(wired=data("sysctl-wired-limit-raised-14000.txt"))
    agent = mac_agent(run, FakeZeus(RAILS_100_400, time.time), xdg_home)
    try:
        snap = await agent.tick()
    finally:
        await agent.source.aclose()
    b, ram = snap.budget, snap.memory.total_mb
    assert b is not None and ram is not None and b.kind == "unified"
    assert b.inputs["wired_limit_mb"] == 14000 and "metal_working_set_mb" not in b.inputs
    assert b.total_mb == pytest.approx(min(14000.0, ram - max(4096.0, 0.1 * ram)), abs=0.2)
    assert snap.gpus[0].memory_total_mb == 14000.0


@pytest.mark.anyio
async def test_a_simulated_mac_sends_the_fields_a_real_one_does() -> None:
    agent = NodeAgent.simulate(AgentConfig(), "sim-120")  # this name draws a Mac
    assert agent.simulated is not None and agent.simulated.mac
    snap = await agent.tick()
    (gpu,) = snap.gpus
    assert gpu.name == "Apple M2 Ultra GPU" and snap.budget is not None
    assert snap.budget.kind == "unified" and gpu.memory_total_mb == snap.budget.total_mb
    assert snap.memory.pressure_level in ("normal", "warn", "critical")
    assert snap.memory.swap_total_mb == 4096.0 and snap.cpu.thermal == "nominal"
    assert {p.kind for p in snap.power.parts} == {"soc"}
    assert snap.power.scope == "SoC (CPU+GPU+ANE+DRAM)"


# --- the unified budget in the capacity answer: a 16 GB Mac, 10.7 GB wired limit -----------

MAC16_RAM_MB, MAC16_WIRED_MB, RESIDENT = 16384.0, 10922.0, ("llama3.1:8b", 4920.0, "Q4_K_M")


def small_mac(
    ram_mb: float = MAC16_RAM_MB,
    wired_mb: float = MAC16_WIRED_MB,
    resident: list[tuple[str, float, str]] | None = None,
) -> NodeAgent:
    """A simulated Mac: by default 16 GB with the wired limit set to 10922 MiB (10.7 GB, what
    Metal recommends there), Ollama holding one model, memory pressure low and steady."""
    from fleettui.agent.simulate import _SimEngine

    agent = NodeAgent.simulate(AgentConfig(), "mac16")
    node = agent.simulated
    assert node is not None
    node.mac, node.mem_total_mb, node.wired_limit_mb = True, ram_mb, wired_mb
    node.gpus_spec, node.load_bias = [("Apple M2 GPU", ram_mb, 20.0)], 0.0
    node.engines = [_SimEngine("ollama", [RESIDENT] if resident is None else resident)]
    node.load = lambda t: 0.2  # type: ignore[method-assign]  # steady: the resident stays idle
    return agent


def expected_fit(snap: NodeSnapshot, model: str) -> tuple[str, int, int, int]:
    """The verdict from the Mac's own figures: cap = min(wired limit, RAM - max(4 GiB, 10 %)),
    free = cap - resident (RAM available is larger here), the 512 MiB floor margin (2 % of
    10.7 GB is less), the estimator's need; the resident model may go only when idle."""
    from fleettui.capacity.estimate import MIB, estimate
    from fleettui.capacity.fit import find_meta

    cap = min(MAC16_WIRED_MB, MAC16_RAM_MB - max(4096.0, 0.1 * MAC16_RAM_MB))
    free = round((cap - RESIDENT[1]) * MIB)
    margin = 512 * MIB
    (eng,) = snap.engines
    need = estimate(
        find_meta({"m": snap}, model), engine="ollama", ctx=None, parallel=None,
        platform="metal", settings=eng.settings, gpu_total_bytes=round(cap * MIB),
    ).total_bytes  # fmt: skip
    assert need is not None
    idle = not eng.models[0].busy
    verdict = (
        "fits"
        if need + margin <= free
        else "evict"
        if idle and need + margin <= free + round(RESIDENT[1] * MIB)
        else "no"
    )
    return verdict, need, free, margin


@pytest.mark.anyio
async def test_fleet_fit_on_a_16_gb_mac_with_a_10_7_gb_wired_limit(tmp_path: Path) -> None:
    """`fleet fit` (a real subprocess) against the Mac served on 127.0.0.1: each verdict, need,
    free and margin is the one computed from 16 GB, 10.7 GB and the one resident model."""
    from fleettui.agent.server import bind_sockets, serve
    from fleettui.capacity.estimate import mib
    from test_cli_read import fleet, write_config

    agent = small_mac()
    sockets = bind_sockets("127.0.0.1", [0])
    url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    config = write_config(tmp_path / "projects.toml", {"mac16": url})
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve([agent], sockets, on_ready=ready.set, handle_signals=False))
        with anyio.fail_after(10):
            await ready.wait()
        async with httpx.AsyncClient(timeout=5, trust_env=False) as c:
            snap = NodeSnapshot.model_validate_json((await c.get(f"{url}/api/v1/snapshot")).content)
        b = snap.budget
        assert b is not None and (b.kind, b.limit) == ("unified", "iogpu.wired_limit_mb")
        assert (b.total_mb, b.engines_mb, b.free_mb) == (10922.0, 4920.0, 6002.0)
        assert b.inputs["wired_limit_mb"] == 10922.0 and b.inputs["ram_mb"] == 16384.0
        exits = {"fits": 0, "evict": 3, "no": 1}
        seen = []
        for model in (
            "nomic-embed-text:latest",
            "qwen2.5-coder:7b",
            "mistral-nemo:12b",
            "gemma3:27b",
        ):
            verdict, need, free, margin = expected_fit(snap, model)
            r = await anyio.to_thread.run_sync(
                lambda m=model: fleet("fit", m, "--json", config=config)  # type: ignore[misc]
            )
            assert r.returncode == exits[verdict] and r.stderr == "", (r.returncode, r.stderr)
            (got,) = json.loads(r.stdout)["nodes"]
            assert (got["verdict"], got["need_bytes"], got["free_bytes"], got["margin_bytes"]) == (
                verdict, need, free, margin
            ), got["reasons"]  # fmt: skip
            assert got["spare_bytes"] == free - need - margin
            assert f"{mib(free)} free (iogpu.wired_limit_mb)" in got["reasons"][0]
            assert got["evict"] == (["llama3.1:8b"] if verdict == "evict" else [])
            seen.append(verdict)
        # the embedder fits beside it, the 12B needs the resident gone, a 27B never fits
        assert (seen[0], seen[2], seen[3]) == ("fits", "evict", "no")
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("ram_gb", "model", "cap_mb", "limit", "verdict"),
    [
        # an 8 GB MacBook: RAM - 4 GiB binds (4,096 MiB); a 7B Q4_K_M (about 5 GB) is refused
        (8, "qwen2.5-coder:7b", 4096.0, "RAM - OS reserve", "no"),
        # a 128 GB Mac Studio: the default wired limit (3/4 of RAM) binds; a 27B fits
        (128, "gemma3:27b", 98304.0, "default wired limit (heuristic)", "fits"),
    ],
)
async def test_the_unified_budget_on_an_8_gb_and_a_128_gb_mac(
    ram_gb: int, model: str, cap_mb: float, limit: str, verdict: str
) -> None:
    from fleettui.capacity.fit import FitRequest, check_fit, find_meta

    snap = await small_mac(ram_gb * 1024.0, 0.0, resident=[]).tick()
    b = snap.budget
    assert b is not None and (b.kind, b.total_mb, b.limit) == ("unified", cap_mb, limit)
    assert b.ram_free_mb is not None and b.free_mb == min(cap_mb, b.ram_free_mb)
    fit = check_fit("mac", snap, find_meta({"mac": snap}, model), FitRequest(model))
    assert fit.verdict == verdict, fit.reasons
