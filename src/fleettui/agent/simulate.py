"""Deterministic synthetic nodes for demos, tests and benchmarks.

A simulated node is seeded by its name: the same name always gets the same GPUs, engines,
models and power curve shape, so screenshots and tests are stable. Actions really change it
(restart takes an engine down for a few seconds, unload drops a model, purge frees memory).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fleettui import __version__
from fleettui.agent.collect.budget import node_budget, unified_budget
from fleettui.agent.collect.energy import EnergyLedger, EnergyMeter, Reading, day_start, local_day
from fleettui.wire import (
    Cpu,
    Engine,
    Gpu,
    Memory,
    Model,
    NodeInfo,
    NodeSnapshot,
    Power,
    scope_label,
    source_label,
)

ENGINE_PORTS = {"ollama": 11434, "llamacpp": 8080, "vllm": 8000, "lmstudio": 1234, "mlx": 8081}
MODEL_POOL = {
    "ollama": [
        ("llama3.1:8b", 4920, "Q4_K_M"),
        ("qwen2.5-coder:7b", 5358, "Q4_K_M"),
        ("mistral-nemo:12b", 7100, "Q4_0"),
        ("gemma3:27b", 17400, "Q4_K_M"),
        ("nomic-embed-text:latest", 274, "F16"),
        ("deepseek-r1:14b", 9000, "Q4_K_M"),
    ],
    "llamacpp": [("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", 4685, "Q4_K_M")],
    "vllm": [
        ("meta-llama/Llama-3.1-8B-Instruct", 16060, "bf16"),
        ("Qwen/Qwen2.5-32B-Instruct-AWQ", 19300, "awq"),
    ],
    "lmstudio": [("meta-llama-3.1-8b-instruct", 4920, "Q4_K_M")],
    "mlx": [("mlx-community/Qwen2.5-7B-Instruct-4bit", 4300, "4bit")],
}
SOC_RAILS = {"soc-cpu": 0.3, "soc-gpu": 0.55, "soc-ane": 0.05, "soc-dram": 0.1}
GPU_KINDS = [
    ("NVIDIA RTX 4090", 24564, 450.0),
    ("NVIDIA L40S", 46068, 350.0),
    ("NVIDIA H100 80GB HBM3", 81559, 700.0),
]


def seed_of(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


@dataclass
class _SimEngine:
    name: str
    models: list[tuple[str, float, str]]
    down_until: float = 0.0
    stopped: bool = False


@dataclass
class SimulatedNode:
    """The synthetic machine. `now` is injectable so tests can pin time."""

    name: str
    clock: Callable[[], float] = time.time
    engines: list[_SimEngine] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(seed_of(self.name))
        self.mac = rng.random() < 0.25
        self.cores = rng.choice([16, 24, 32, 64]) if not self.mac else rng.choice([12, 16, 24])
        self.mem_total_mb = float(
            rng.choice([65536, 131072, 262144])
            if not self.mac
            else rng.choice([65536, 131072, 196608])
        )
        self.wired_limit_mb = 0.0  # a Mac's iogpu.wired_limit_mb: 0 is the OS default
        if self.mac:
            self.gpus_spec: list[tuple[str, float, float]] = [
                ("Apple M2 Ultra GPU", self.mem_total_mb, 90.0)
            ]
        else:
            kind = rng.choice(GPU_KINDS)
            self.gpus_spec = [kind] * rng.choice([1, 2, 4])
        self.idle_w = 40.0 + rng.random() * 60.0 + (0 if self.mac else 30.0 * len(self.gpus_spec))
        self.peak_w = sum(g[2] for g in self.gpus_spec) * (0.6 + 0.3 * rng.random()) + 80.0
        self.period_s = 60.0 + rng.random() * 120.0
        self.phase = rng.random() * 2 * math.pi
        self.load_bias = rng.random()
        others = ["mlx", "lmstudio"] if self.mac else ["vllm", "llamacpp", "lmstudio"]
        picked = ["ollama", *rng.sample(others, rng.choice([1, 2]))]
        for eng in picked:
            pool = MODEL_POOL[eng]
            k = 1 if eng != "ollama" else rng.choice([1, 2, 3])
            self.engines.append(_SimEngine(eng, rng.sample(pool, min(k, len(pool)))))
        self.purged_at = 0.0
        self.started = self.clock()
        self.boot_uptime = 3600.0 * (1 + rng.random() * 500)
        self._rng = rng

    # --- facts ---------------------------------------------------------------------------
    def load(self, t: float) -> float:
        """0..1 utilisation: a slow wave plus a deterministic wobble."""
        wave = 0.5 + 0.5 * math.sin(2 * math.pi * t / self.period_s + self.phase)
        wobble = ((seed_of(f"{self.name}:{int(t)}") % 1000) / 1000.0 - 0.5) * 0.1
        return min(1.0, max(0.0, 0.15 + 0.7 * wave * (0.5 + 0.5 * self.load_bias) + wobble))

    def watts(self, t: float) -> float:
        return round(self.idle_w + (self.peak_w - self.idle_w) * self.load(t), 1)

    def seed_ledger(self, ledger: EnergyLedger, now: float) -> None:
        """Give a fresh simulated node plausible cost history: six full days and today so far."""
        mean_w = (self.idle_w + self.peak_w) / 2
        today = local_day(now, ledger.tz)
        for i in range(7):
            day = today - dt.timedelta(days=i)
            start = day_start(day, ledger.tz)
            end = min(now, day_start(day + dt.timedelta(days=1), ledger.tz))
            factor = 0.7 + 0.6 * ((seed_of(f"{self.name}:{day}") % 1000) / 1000.0)
            wh = mean_w * (end - start) / 3600.0 * factor
            ledger.days.setdefault(day.isoformat(), (wh, ledger.price_per_kwh))

    def readings(self) -> list[Reading]:
        """The synthetic machine measured whole, as a BMC would: one wall part; a Mac by its
        SoC's rails, as IOReport splits them (collect/ioreport.py)."""
        w = self.watts(self.clock())
        if self.mac:
            return [
                Reading(name=n, kind="soc", source="simulated", key=n, watts=w * k)
                for n, k in SOC_RAILS.items()
            ]
        return [Reading(name="wall", kind="wall", source="simulated", key="wall", watts=w)]

    def snapshot(self, ledger: EnergyLedger, meter: EnergyMeter) -> NodeSnapshot:
        t = self.clock()
        load = self.load(t)
        watts = self.watts(t)
        t0, t1, joules = meter.update(t, self.readings())
        ledger.add(t0, t1, joules)
        parts = meter.parts()
        engines: list[Engine] = []
        problems: list[str] = []
        resident_mb = 0.0
        for e in self.engines:
            url = f"http://127.0.0.1:{ENGINE_PORTS[e.name]}"
            if e.stopped or t < e.down_until:
                engines.append(
                    Engine(name=e.name, url=url, status="down", error="connection refused")
                )
                problems.append(f"engine {e.name} down: connection refused")
                continue
            models = [Model(name=m, size_mb=s, vram_mb=s, quant=q) for m, s, q in e.models]
            resident_mb += sum(s for _, s, _ in e.models)
            engines.append(
                Engine(name=e.name, url=url, status="up", version=_version(e.name), models=models)
            )
        gpus: list[Gpu] = []
        per_gpu_mb = resident_mb / max(1, len(self.gpus_spec))
        for i, (gname, gmem, gmax) in enumerate(self.gpus_spec):
            gw = round(gmax * (0.1 + 0.85 * load), 1)
            gpus.append(
                Gpu(
                    index=i,
                    name=gname,
                    uuid=f"GPU-sim-{seed_of(self.name + str(i)) % 10**12:012d}",
                    memory_total_mb=gmem,
                    memory_used_mb=round(min(gmem, 600 + per_gpu_mb), 1),
                    util_pct=round(100 * load, 1),
                    power_w=gw,
                    temp_c=round(35 + 45 * load, 1),
                )
            )
        purge_relief = 0.0 if t - self.purged_at > 30 else 0.15
        pressure = max(
            5.0, min(99.0, 100 * (0.25 + 0.3 * self.load_bias + 0.1 * load - purge_relief))
        )
        memory = Memory(
            total_mb=self.mem_total_mb,
            used_mb=round(self.mem_total_mb * pressure / 100, 1),
            pressure_pct=round(pressure, 1),
        )
        unified = (
            unified_budget(self.mem_total_mb, wired_limit_mb=self.wired_limit_mb)
            if self.mac
            else None
        )
        if self.mac and unified is not None:  # what collect/macos.py reads on a real Mac
            gpus = [g.model_copy(update={"memory_total_mb": unified.total_mb}) for g in gpus]
            memory = memory.model_copy(
                update={
                    "pressure_level": "normal"
                    if pressure < 70
                    else "warn"
                    if pressure < 90
                    else "critical",
                    "swap_used_mb": round(max(0.0, pressure - 60) * 40, 1),
                    "swap_total_mb": 4096.0,
                }
            )
        return NodeSnapshot(
            node=NodeInfo(
                hostname=self.name,
                os="Darwin 24.1.0" if self.mac else "Linux 6.8.0",
                arch="arm64" if self.mac else "x86_64",
                agent_version=__version__,
                uptime_s=round(max(0.0, self.boot_uptime + t - self.started), 1),
                simulated=True,
            ),
            ts=t,
            cpu=Cpu(
                percent=round(100 * load * 0.6, 1),
                cores=self.cores,
                thermal="nominal" if self.mac else None,
            ),
            memory=memory,
            gpus=gpus,
            power=Power(
                watts=watts,
                scope=scope_label([p.kind for p in parts]),
                source=source_label([p.source for p in parts]),
                energy_j=round(meter.node_j, 3),
                energy_since=meter.started,
                parts=parts,
            ),
            cost=ledger.cost(t),
            engines=engines,
            budget=node_budget(memory, gpus, engines, unified=unified),
            problems=problems,
        )

    # --- actions -------------------------------------------------------------------------
    def engine(self, name: str) -> _SimEngine | None:
        return next((e for e in self.engines if e.name == name), None)

    def act(self, action: str, engine: str | None, model: str | None) -> tuple[bool, str]:
        """Apply an action to the synthetic machine; returns (ok, what happened)."""
        now = self.clock()
        if action == "purge":
            self.purged_at = now
            return True, "page cache dropped (simulated)"
        eng = self.engine(engine or "")
        if eng is None:
            return False, f"engine {engine!r} not present on this node"
        if action == "restart":
            eng.stopped = False
            eng.down_until = now + 3.0
            return True, f"{eng.name} restarting (simulated, back in 3 s)"
        if action == "stop":
            eng.stopped = True
            return True, f"{eng.name} stopped (simulated)"
        if action == "start":
            eng.stopped = False
            eng.down_until = 0.0
            return True, f"{eng.name} started (simulated)"
        if action == "unload":
            before = len(eng.models)
            eng.models = [m for m in eng.models if model is not None and m[0] != model]
            gone = before - len(eng.models)
            if model is not None and gone == 0:
                return False, f"model {model!r} not resident in {eng.name}"
            return True, f"unloaded {gone} model(s) from {eng.name} (simulated)"
        if action == "load" and model is not None:
            if any(m[0] == model for m in eng.models):
                return True, f"{model} already loaded in {eng.name} (simulated)"
            known = {m[0]: m for m in MODEL_POOL.get(eng.name, [])}
            if model not in known:
                return False, f"model {model!r} not on this node's disk for {eng.name}"
            eng.models.append(known[model])
            return True, f"loaded {model} in {eng.name} (simulated)"
        return False, f"unknown action {action!r}"


def _version(engine: str) -> str:
    return {
        "ollama": "0.11.4",
        "llamacpp": "b6100",
        "vllm": "0.10.1",
        "lmstudio": "0.3.24",
        "mlx": "0.26.0",
    }[engine]
