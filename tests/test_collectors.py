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

    def __init__(
        self,
        fail_init: bool = False,
        energy_supported: bool = True,
        processes: dict[int, list[tuple[object, object]]] | None = None,
    ) -> None:
        self.fail_init = fail_init
        self.energy_supported = energy_supported
        self.shutdown = False
        self.processes = processes or {}  # GPU -> [(pid, usedGpuMemory bytes or None)]

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

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        if h == 1:
            raise self.NVMLError("Not Supported")
        return 700_000  # milliwatts

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if not self.energy_supported:
            raise self.NVMLError("Not Supported")
        return 123_456_789  # millijoules

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 61

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        """pynvml's friendly objects: usedGpuMemory None where the driver cannot tell."""
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0, computeInstanceId=0)
            for pid, used in self.processes.get(h, [])
        ]


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
    assert g.power_limit_w == 700.0  # the enforced limit; unsupported on the second GPU
    assert gpus[1].power_limit_w is None
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


GIB = 1024**3


def test_nvml_per_process_memory_is_read_each_gpu_on_its_own() -> None:
    fake = FakeNvml(processes={0: [(4242, 3 * GIB), (4243, None), (4244, 2**64 - 1)]})
    gpus = NvmlCollector(fake).gpus(problems := [])
    assert problems == []
    assert [(p.pid, p.used_mb, p.engine) for p in gpus[0].processes] == [
        (4242, 3072.0, None),
        (4243, None, None),  # WDDM, some vGPUs: pynvml says None
        (4244, None, None),  # NVML_VALUE_NOT_AVAILABLE as the raw unsigned value
    ]
    assert gpus[0].attributed_mb == 0.0 and gpus[1].processes == []  # read, none attributed yet


class OldDriverNvml(FakeNvml):
    """A driver without the v3 symbol: pynvml's plain call raises, the _v2 one answers."""

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        raise self.NVMLError("Function Not Found")

    def nvmlDeviceGetComputeRunningProcesses_v2(self, h: int) -> list[SimpleNamespace]:
        return super().nvmlDeviceGetComputeRunningProcesses(h)


def test_nvml_process_query_falls_back_to_v2() -> None:
    gpus = NvmlCollector(OldDriverNvml(processes={1: [(7, GIB)]})).gpus(problems := [])
    assert problems == [] and [(p.pid, p.used_mb) for p in gpus[1].processes] == [(7, 1024.0)]


class NoProcessesNvml(OldDriverNvml):
    def nvmlDeviceGetComputeRunningProcesses_v2(self, h: int) -> list[SimpleNamespace]:
        raise self.NVMLError("Insufficient Permissions")


def test_an_unreadable_process_list_is_a_problem_line_and_the_gpu_stays() -> None:
    problems: list[str] = []
    gpus = NvmlCollector(NoProcessesNvml()).gpus(problems)
    assert problems == [
        "nvml: GPU 0: processes unreadable: Function Not Found",
        "nvml: GPU 1: processes unreadable: Function Not Found",
    ]
    g = gpus[0]
    assert g.processes == [] and g.attributed_mb is None  # unknown, not "nothing attributed"
    assert g.memory_total_mb == 8192 and g.power_w == 312.5  # the rest of the GPU is there


def test_hostile_per_process_values_are_dropped_one_by_one() -> None:
    procs: list[tuple[object, object]] = [
        (1, 10**30),  # a yottabyte
        (2, -(2**40)),
        (3, "lots"),
        (4, float("nan")),
        (-5, GIB),  # no such pid
        (2**40, GIB),
        (6, GIB),  # the one true reading
        (7, 10**5000),
    ]
    problems: list[str] = []
    gpus = NvmlCollector(FakeNvml(processes={0: procs})).gpus(problems)
    assert [(p.pid, p.used_mb) for p in gpus[0].processes] == [
        (1, None),
        (2, None),
        (3, None),
        (4, None),
        (6, 1024.0),
        (7, None),
    ]
    assert len(problems) == 7 and all(line.startswith("nvml: GPU 0: ") for line in problems)
    assert "used_mb" in problems[0] and "process 1" in problems[0]
    assert "a process: pid -5" in problems[4] and "bit number" in problems[6]


def test_more_processes_than_the_bound_keeps_the_biggest_and_says_so() -> None:
    from fleettui.wire import MAX_MODELS, NodeSnapshot

    procs = [(pid, pid * 1024**2) for pid in range(1, MAX_MODELS + 501)]  # pid n holds n MiB
    problems: list[str] = []
    gpus = NvmlCollector(FakeNvml(processes={0: procs})).gpus(problems)
    kept = gpus[0].processes
    assert len(kept) == MAX_MODELS and kept[0].pid == 501 and kept[-1].pid == MAX_MODELS + 500
    assert problems == [
        f"nvml: GPU 0: {MAX_MODELS + 500} processes, the {MAX_MODELS} holding most memory kept"
    ]
    NodeSnapshot.model_validate(  # what the aggregator reads of it: valid
        {
            "node": {"hostname": "h", "os": "o", "arch": "a", "agent_version": "v", "uptime_s": 1},
            "ts": 1,
            "gpus": [g.model_dump() for g in gpus],
        }
    )


def test_one_pid_listed_per_mig_instance_is_one_process_with_their_sum() -> None:
    procs: list[tuple[object, object]] = [(9, GIB), (9, 2 * GIB), (9, None)]
    gpus = NvmlCollector(FakeNvml(processes={0: procs})).gpus([])
    assert [(p.pid, p.used_mb) for p in gpus[0].processes] == [(9, 3072.0)]
    half_a_petabyte = 6 * 10**8 * 1024**2  # each plausible on its own, the sum is not
    problems: list[str] = []
    gpus = NvmlCollector(FakeNvml(processes={0: [(9, half_a_petabyte)] * 2})).gpus(problems)
    assert [(p.pid, p.used_mb) for p in gpus[0].processes] == [(9, None)]
    assert len(problems) == 1 and "process 9: used_mb" in problems[0]


def _gpu(index: int, used: float, procs: list[tuple[int, float | None]]):
    from fleettui.wire import Gpu, GpuProcess

    return Gpu(
        index=index,
        name="H100",
        memory_total_mb=81559,
        memory_used_mb=used,
        processes=[GpuProcess(pid=p, used_mb=u) for p, u in procs],
        attributed_mb=0.0,  # the collector's "read, not attributed yet"
    )


# a made-up process tree: ollama serve 10 -> runners 11 and 12 (12 under 11); vllm 20 -> 21
TREE = {11: [10, 1], 12: [11, 10, 1], 21: [20, 1], 99: [1], 10: [1], 20: [1]}


def test_gpu_processes_are_attributed_to_engines_through_their_parents() -> None:
    from fleettui.agent.collect.attribute import attribute
    from fleettui.wire import Engine, Model

    ollama = Engine(
        name="ollama",
        url="http://127.0.0.1:11434",
        status="up",
        pids=[10],
        models=[
            Model(name="llama3.1:8b", vram_mb=5000, pid=12),
            Model(name="qwen2.5:7b", vram_mb=4000, pid=11, gpus=[3]),  # the engine said
            Model(name="nomic", vram_mb=300),  # no pid: placed nowhere
        ],
    )
    vllm = Engine(
        name="vllm",
        url="http://127.0.0.1:8000",
        status="up",
        pids=[20],
        models=[Model(name="meta-llama/Llama-3.1-8B-Instruct")],  # vLLM reports no memory
    )
    gpus = [
        _gpu(0, 30_000, [(12, 5200.0), (11, 4100.0), (99, 1500.0)]),
        _gpu(1, 70_000, [(21, 69_000.0), (12, None)]),
    ]
    problems: list[str] = []
    out, engines = attribute(gpus, [ollama, vllm], problems, TREE.get)
    assert problems == []
    assert [(p.pid, p.engine) for p in out[0].processes] == [
        (12, "ollama"),
        (11, "ollama"),
        (99, None),
    ]
    assert (out[0].attributed_mb, out[0].other_mb) == (9300, 20_700)
    assert (out[1].attributed_mb, out[1].other_mb) == (69_000, 1000)
    llama, qwen, nomic = engines[0].models
    assert llama.gpus == [0, 1] and llama.sources == {"gpus": "measured"}
    assert llama.vram_mb == 5000  # the engine's own figure is kept
    assert qwen.gpus == [3] and nomic.gpus == []
    served = engines[1].models[0]
    assert served.gpus == [1] and served.vram_mb == 69_000  # one model a server: NVML's figure
    assert served.sources == {"gpus": "measured", "vram_mb": "measured"}
    guessed = Model(name="m.gguf", vram_mb=4685, sources={"vram_mb": "estimated"})
    llamacpp = vllm.model_copy(update={"name": "llamacpp", "models": [guessed]})
    _, engines = attribute(gpus, [ollama, llamacpp], [], TREE.get)
    assert engines[1].models[0].vram_mb == 69_000  # a measurement replaces an estimate
    assert engines[1].models[0].sources["vram_mb"] == "measured"


def test_no_engine_pid_known_or_no_process_list_means_unattributed_not_zero() -> None:
    from fleettui.agent.collect.attribute import attribute
    from fleettui.wire import Engine

    gpu = _gpu(0, 30_000, [(12, 5200.0)])
    unread = gpu.model_copy(update={"attributed_mb": None})
    eng = Engine(name="ollama", url="http://127.0.0.1:11434", status="up")
    out, _ = attribute([gpu, unread], [eng], [], TREE.get)
    assert [(g.attributed_mb, g.other_mb) for g in out] == [(None, None), (None, None)]
    down = eng.model_copy(update={"status": "down", "pids": [10]})  # a stale pid: not trusted
    out, _ = attribute([gpu], [down], [], TREE.get)
    assert out[0].attributed_mb is None
    out, _ = attribute([gpu, unread], [eng.model_copy(update={"pids": [10]})], [], TREE.get)
    assert [(g.attributed_mb, g.other_mb) for g in out] == [(5200, 24_800), (None, None)]


def test_attributed_beyond_used_leaves_other_at_zero_and_sums_past_the_bound_are_named() -> None:
    from fleettui.agent.collect.attribute import attribute
    from fleettui.wire import Engine, Model

    eng = Engine(
        name="vllm", url="http://127.0.0.1:8000", status="up", pids=[20], models=[Model(name="m")]
    )
    out, _ = attribute([_gpu(0, 1000, [(21, 4000.0)])], [eng], [], TREE.get)
    assert (out[0].attributed_mb, out[0].other_mb) == (4000, 0)
    huge = [(21, 9e8), (20, 9e8)]  # each within the bound, their sum past it
    problems: list[str] = []
    out, engines = attribute([_gpu(0, 1000, huge)], [eng], problems, TREE.get)
    assert out[0].attributed_mb is None and out[0].other_mb is None
    assert engines[0].models[0].vram_mb is None
    assert [line.split(":")[0:2] for line in problems] == [
        ["nvml", " GPU 0"],
        ["engine vllm", " model m"],
    ]


def test_the_real_parent_walk_finds_an_engine_child_process() -> None:
    """psutil on this machine: a real child of this test process is attributed to an engine
    whose PID is this process."""
    import os
    import subprocess
    import sys

    from fleettui.agent.collect.attribute import attribute, process_ancestors
    from fleettui.wire import Engine

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert os.getpid() in process_ancestors(child.pid)
        eng = Engine(name="llamacpp", url="http://127.0.0.1:8080", status="up", pids=[os.getpid()])
        out, _ = attribute([_gpu(0, 8000, [(child.pid, 4000.0)])], [eng], [])
        assert out[0].processes[0].engine == "llamacpp" and out[0].other_mb == 4000
    finally:
        child.kill()
        child.wait()
    assert process_ancestors(child.pid) == []  # gone: no parents, no exception


@pytest.mark.anyio
async def test_a_real_source_publishes_gpu_processes_and_a_budget(xdg_home: Path) -> None:
    from fleettui.agent.config import AgentConfig
    from fleettui.agent.node import NodeAgent

    config = AgentConfig(auto_detect=False, rapl_root=str(xdg_home / "no-rapl"))
    agent = NodeAgent.real(config, nvml=FakeNvml(processes={0: [(4242, GIB)]}))
    try:
        snap = await agent.tick()
    finally:
        await agent.source.aclose()
    g = snap.gpus[0]
    assert [(p.pid, p.used_mb, p.engine) for p in g.processes] == [(4242, 1024.0, None)]
    assert g.attributed_mb is None  # no engine here, so no PID to attribute to
    b = snap.budget
    assert b is not None and (b.kind, b.total_mb, b.used_mb, b.engines_mb) == (
        "gpu",
        16384,
        4096,
        0,
    )
    assert b.inputs["resident_vram_mb"] == 0 and b.ram_free_mb is not None


@pytest.mark.anyio
async def test_a_real_agent_attributes_an_engine_child_on_the_gpu_end_to_end(
    xdg_home: Path,
) -> None:
    """The whole path on real parts: a fake vLLM listening here (its PID found by its port,
    agent/procs.py), a real child process standing for its engine core, which the fake NVML
    lists on GPU 0 beside a stranger (pid 1); the tick attributes the child by its parent."""
    import subprocess
    import sys

    from fake_engines import VLLM, fake_engine
    from fleettui.agent.config import AgentConfig, EngineConfig
    from fleettui.agent.node import NodeAgent

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with fake_engine(VLLM) as eng:
            config = AgentConfig(
                auto_detect=False,
                rapl_root=str(xdg_home / "no-rapl"),
                engines={"vllm": EngineConfig(url=eng.url)},
            )
            nvml = FakeNvml(processes={0: [(child.pid, 1536 * 1024**2), (1, 256 * 1024**2)]})
            agent = NodeAgent.real(config, nvml=nvml)
            try:
                snap = await agent.tick()
            finally:
                await agent.source.aclose()
    finally:
        child.kill()
        child.wait()
    vllm = snap.engines[0]
    assert vllm.status == "up" and vllm.pids, vllm.error
    g0, g1 = snap.gpus
    assert [(p.pid, p.engine) for p in g0.processes] == [(child.pid, "vllm"), (1, None)]
    assert (g0.attributed_mb, g0.other_mb) == (1536, 512)  # the stranger and the unlisted rest
    assert (g1.attributed_mb, g1.other_mb) == (0, 2048)
    model = vllm.models[0]
    assert model.gpus == [0] and model.vram_mb == 1536  # vLLM tells no size: NVML's figure
    assert model.sources["vram_mb"] == "measured" and model.sources["gpus"] == "measured"
    b = snap.budget
    assert b is not None and (b.engines_mb, b.other_mb, b.free_mb) == (1536, 2560, 12288)


class PoisonLimitNvml(FakeNvml):
    """An enforced power limit no GPU has: negative on GPU 0, a 5,000-digit number on GPU 1."""

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return -700_000 if h == 0 else 10**5000


def test_odd_power_limits_are_dropped_with_the_gpu_named() -> None:
    problems: list[str] = []
    gpus = NvmlCollector(PoisonLimitNvml()).gpus(problems)
    assert [g.power_limit_w for g in gpus] == [None, None]
    assert [g.power_w for g in gpus] == [312.5, 312.5]  # the rest of each GPU is kept
    assert len(problems) == 2, problems
    for i, line in enumerate(problems):
        assert line.startswith(f"nvml: GPU {i}: power_limit_w ") and "dropped" in line, line
