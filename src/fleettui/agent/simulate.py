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
from functools import cache

from fleettui import __version__
from fleettui.agent.collect.attribute import attribute
from fleettui.agent.collect.budget import node_budget, unified_budget
from fleettui.agent.collect.energy import EnergyLedger, EnergyMeter, Reading, day_start, local_day
from fleettui.wire import (
    Cpu,
    DiskModel,
    Engine,
    EngineSettings,
    Gpu,
    GpuProcess,
    Memory,
    Model,
    ModelMeta,
    NodeInfo,
    NodeSnapshot,
    Power,
    Source,
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
# What the engines' metadata says of each model (published config.json / GGUF header
# figures); file_mb is the weights file, the pool's size the resident total.
_LLAMA31_8B = dict(
    arch="llama", params=8_030_261_248, n_layers=32, n_heads=32, n_kv_heads=8,
    key_length=128, value_length=128, embedding_length=4096, vocab_size=128256,
    ctx_train=131072,
)  # fmt: skip
_QWEN25_7B = dict(
    arch="qwen2", params=7_615_616_512, n_layers=28, n_heads=28, n_kv_heads=4,
    key_length=128, value_length=128, embedding_length=3584, vocab_size=152064,
    ctx_train=32768,
)  # fmt: skip
_ARCH: dict[str, tuple[dict[str, object], float, float]] = {  # name -> (arch, file MiB, bpw)
    "llama3.1:8b": (_LLAMA31_8B, 4692, 4.89),
    "qwen2.5-coder:7b": (_QWEN25_7B, 4466, 4.91),
    "mistral-nemo:12b": (
        dict(
            arch="llama", params=12_247_782_400, n_layers=40, n_heads=32, n_kv_heads=8,
            key_length=128, value_length=128, embedding_length=5120, vocab_size=131072,
            ctx_train=1_024_000,
        ),
        6757, 4.5,
    ),
    "gemma3:27b": (
        dict(
            arch="gemma3", params=27_432_406_640, n_layers=62, n_heads=32, n_kv_heads=16,
            key_length=128, value_length=128, embedding_length=5376, vocab_size=262208,
            ctx_train=131072, sliding_window=1024, sliding_layers=52,
        ),
        16504, 4.9,
    ),
    "nomic-embed-text:latest": (
        dict(
            arch="nomic-bert", params=136_731_648, n_layers=12, n_heads=12, n_kv_heads=12,
            key_length=64, value_length=64, embedding_length=768, vocab_size=30522,
            ctx_train=2048,
        ),
        262, 16.0,
    ),
    "deepseek-r1:14b": (
        dict(
            arch="qwen2", params=14_770_033_664, n_layers=48, n_heads=40, n_kv_heads=8,
            key_length=128, value_length=128, embedding_length=5120, vocab_size=152064,
            ctx_train=131072,
        ),
        8583, 4.87,
    ),
    "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf": (_LLAMA31_8B, 4692, 4.89),
    "meta-llama/Llama-3.1-8B-Instruct": (_LLAMA31_8B, 15317, 16.0),
    "Qwen/Qwen2.5-32B-Instruct-AWQ": (
        dict(
            arch="qwen2", params=32_763_876_352, n_layers=64, n_heads=40, n_kv_heads=8,
            key_length=128, value_length=128, embedding_length=5120, vocab_size=152064,
            ctx_train=32768,
        ),
        18650, 4.25,
    ),
    "meta-llama-3.1-8b-instruct": (_LLAMA31_8B, 4692, 4.89),
    "mlx-community/Qwen2.5-7B-Instruct-4bit": (_QWEN25_7B, 4100, 4.5),
}  # fmt: skip
META_SOURCE = {
    "ollama": "ollama-show",
    "llamacpp": "llamacpp-meta",
    "vllm": "hf-config",
    "lmstudio": "lmstudio",
    "mlx": "hf-config",
}
# Which figures each engine reports itself (the rest are measured by the agent or absent),
# as the probes in agent/engines.py read them.
REPORTED = {
    "ollama": ("size_mb", "vram_mb", "ctx", "expires_at"),
    "llamacpp": ("size_mb", "ctx", "parallel", "busy"),
    "vllm": ("ctx", "kv_type", "busy"),
    "lmstudio": ("size_mb", "ctx", "parallel"),
    "mlx": (),
}
STRAY_PID, STRAY_MB = 4321, 384.0  # someone's notebook on GPU 0: part of the "other" memory
DRIVER_MB = 600.0  # what each GPU holds before any model (context, driver, the stray)


@cache
def model_meta(engine: str, name: str, quant: str) -> ModelMeta | None:
    """The metadata an engine would report for one of the pool's models (one shared object
    per model: a thousand simulated nodes build their snapshots every tick)."""
    found = _ARCH.get(name)
    if found is None:
        return None
    arch, file_mb, bpw = found
    return ModelMeta(
        source=META_SOURCE[engine], file_mb=file_mb, quant=quant, bits_per_weight=bpw, **arch
    )


GPU_SHARE = 0.8  # at most this much of a node's watts is its GPUs' (the rest: CPU, fans...)
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

    def gpu_load(self, t: float, index: int, load: float) -> float:
        """GPU `index`'s share of the work: the node's load, skewed per GPU (the first ones
        take the most) and wobbling on its own, 0..1."""
        skew = 1.15 - 0.2 * index + ((seed_of(f"{self.name}:gpu{index}") % 100) / 100 - 0.5) * 0.3
        wobble = ((seed_of(f"{self.name}:gpu{index}:{int(t)}") % 1000) / 1000.0 - 0.5) * 0.1
        return min(1.0, max(0.0, load * skew + wobble))

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
        placed: list[tuple[int, float]] = []  # (pid holding it, MiB over all GPUs)
        tree: dict[int, list[int]] = {}  # pid -> its parents, nearest first
        for ei, e in enumerate(self.engines):
            url = f"http://127.0.0.1:{ENGINE_PORTS[e.name]}"
            if e.stopped or t < e.down_until:
                engines.append(
                    Engine(name=e.name, url=url, status="down", error="connection refused")
                )
                problems.append(f"engine {e.name} down: connection refused")
                continue
            eng, held = self._engine(e, 1000 + 100 * ei, url, t, load)
            engines.append(eng)
            for pid, mb in held:
                placed.append((pid, mb))
                if pid not in eng.pids:
                    tree[pid] = [eng.pids[0], 1]
        gpus: list[Gpu] = []
        n_gpus = max(1, len(self.gpus_spec))
        per_gpu_mb = sum(mb for _, mb in placed) / n_gpus
        # each GPU its own load around the node's; together they draw at most GPU_SHARE of it
        loads = [self.gpu_load(t, i, load) for i in range(len(self.gpus_spec))]
        draws = [g[2] * (0.1 + 0.85 * x) for g, x in zip(self.gpus_spec, loads, strict=True)]
        fit = min(1.0, GPU_SHARE * watts / sum(draws)) if draws and sum(draws) else 1.0
        for i, (gname, gmem, gmax) in enumerate(self.gpus_spec):
            gw = round(draws[i] * fit, 1)
            used = round(min(gmem, DRIVER_MB + per_gpu_mb), 1)
            # what a GPU cannot hold the engines offloaded: the processes' shares shrink to fit
            scale = min(1.0, (used - DRIVER_MB) / per_gpu_mb) if per_gpu_mb else 1.0
            procs = [GpuProcess(pid=STRAY_PID, used_mb=STRAY_MB)] if i == 0 else []
            procs += [
                GpuProcess(pid=pid, used_mb=round(mb / n_gpus * scale, 1)) for pid, mb in placed
            ]
            gpus.append(
                Gpu(
                    index=i,
                    name=gname,
                    uuid=f"GPU-sim-{seed_of(self.name + str(i)) % 10**12:012d}",
                    memory_total_mb=gmem,
                    memory_used_mb=used,
                    util_pct=round(100 * loads[i], 1),
                    power_w=gw,
                    power_limit_w=None if self.mac else float(gmax),
                    temp_c=round(35 + 45 * loads[i], 1),
                    # Apple's GPU has no NVML process list: nothing to attribute there
                    processes=[] if self.mac else procs,
                    attributed_mb=None if self.mac else 0.0,
                )
            )
        gpus, engines = attribute(gpus, engines, problems, lambda pid: tree.get(pid, [1]))
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

    def _engine(
        self, e: _SimEngine, pid: int, url: str, t: float, load: float
    ) -> tuple[Engine, list[tuple[int, float]]]:
        """One engine that answers, as its probe would read it: the residency ledger (context,
        slots, expiry, busy, metadata, which figure is reported), what is on disk, its
        settings; and which of its processes holds how much of each model."""
        kind = e.name
        ctx, parallel, kv = {
            "ollama": (4096, 1, "f16"),
            "llamacpp": (8192, 4, "f16"),
            "vllm": (None, None, "bf16"),
            "lmstudio": (4096, 1, "f16"),
            "mlx": (None, None, None),
        }[kind]
        models: list[Model] = []
        held: list[tuple[int, float]] = []
        for k, (name, size, quant) in enumerate(e.models):
            meta = model_meta(kind, name, quant)
            m_ctx = ctx
            if kind == "vllm" and meta is not None:
                m_ctx = meta.ctx_train  # vLLM's max_model_len defaults to the model's
            # Ollama runs a runner process per model, vLLM an engine-core child; the others
            # serve from the one server process
            holder = pid + 1 + k if kind in ("ollama", "vllm") else pid
            busy = load > 0.3 and seed_of(f"{self.name}:{name}:{int(t // 20)}") % 2 == 0
            fields: dict[str, object] = {
                "size_mb": size,
                "vram_mb": size,  # on a Mac too: Ollama and mlx run on Metal, in unified memory
                "ctx": m_ctx,
                "parallel": parallel,
                "kv_type": kv,
                "busy": busy,
                "expires_at": round(t) + 60 + seed_of(f"{self.name}:{name}") % 240
                if kind == "ollama"
                else None,
            }
            sources: dict[str, Source] = {
                f: "reported" for f in REPORTED[kind] if fields.get(f) is not None
            }
            for f in ("size_mb", "vram_mb"):  # vLLM and mlx tell no size: NVML, the process
                sources.setdefault(f, "measured")
            models.append(
                Model(name=name, quant=quant, pid=holder, meta=meta, sources=sources, **fields)
            )
            held.append((holder, size))
        available = _on_disk(kind, frozenset(m.name for m in models))
        settings = {
            "ollama": EngineSettings(
                default_ctx=4096, num_parallel=1, max_loaded=3 * len(self.gpus_spec), kv_type="f16"
            ),
            "llamacpp": EngineSettings(default_ctx=8192, num_parallel=4, kv_type="f16"),
            "vllm": EngineSettings(
                gpu_memory_utilization=0.9,
                num_gpu_blocks=9000 * len(self.gpus_spec),
                block_size=16,
                kv_usage_pct=round(80 * load, 1),
                requests_running=int(8 * load),
                requests_waiting=int(4 * max(0.0, load - 0.7) * 10),
            ),
            "lmstudio": EngineSettings(default_ctx=4096, num_parallel=1),
            "mlx": None,
        }[kind]
        eng = Engine(
            name=kind,
            url=url,
            status="up",
            version=_version(kind),
            models=models,
            available=list(available),
            settings=settings,
            pids=[pid],
        )
        return eng, held

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


@cache
def _on_disk(kind: str, resident: frozenset[str]) -> tuple[DiskModel, ...]:
    """The pool's models an Ollama or LM Studio node has pulled and not loaded."""
    if kind not in ("ollama", "lmstudio"):
        return ()
    return tuple(
        DiskModel(name=name, size_mb=meta.file_mb, quant=quant, params=meta.params, meta=meta)
        for name, _, quant in MODEL_POOL[kind]
        if name not in resident and (meta := model_meta(kind, name, quant)) is not None
    )


def _version(engine: str) -> str:
    return {
        "ollama": "0.11.4",
        "llamacpp": "b6100",
        "vllm": "0.10.1",
        "lmstudio": "0.3.24",
        "mlx": "0.26.0",
    }[engine]
