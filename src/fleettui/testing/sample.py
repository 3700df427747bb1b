"""A fixed-data fleet for snapshot tests, screenshots and view tests.

`SampleSource` satisfies `FleetSource` with hand-written nodes covering every state the views
must draw (online, degraded, offline, initialising, a broken audit chain, a Mac, a node with no
GPU data), all pinned to `SAMPLE_NOW`, so a rendered screen is identical on every run. Tests
mutate it (`update`, `emit`) to drive refreshes without a network.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace

import anyio
import anyio.lowlevel

from fleettui.agent.collect.attribute import attribute
from fleettui.agent.collect.budget import node_budget, unified_budget
from fleettui.agent.simulate import MODEL_POOL, model_meta
from fleettui.aggregator.dispatch import Envelope, Progress, ProgressCallback
from fleettui.aggregator.fitwatch import FitWatch
from fleettui.aggregator.history import POWER_BUCKET_S
from fleettui.aggregator.placement import score
from fleettui.aggregator.state import ChainStatus, FleetEvent, NodeState, NodeView
from fleettui.capacity.fit import FitRequest
from fleettui.wire import (
    GENESIS_HASH,
    ActionRequest,
    AuditEntry,
    AuditHead,
    Cost,
    Cpu,
    DailyCost,
    DiskModel,
    Engine,
    EngineSettings,
    Gpu,
    GpuProcess,
    Memory,
    Model,
    NodeInfo,
    NodeSnapshot,
    Power,
    PowerPart,
    audit_hash,
    in_scope,
    scope_label,
    source_label,
)

SAMPLE_NOW = 1_760_000_000.0  # a fixed "now" for every sample timestamp and age
DAYS = ["2025-10-03", "2025-10-04", "2025-10-05", "2025-10-06", "2025-10-07", "2025-10-08"]

H100 = ("NVIDIA H100 80GB HBM3", 81559.0, 700.0)
L40S = ("NVIDIA L40S", 46068.0, 350.0)
RTX = ("NVIDIA RTX 4090", 24564.0, 450.0)
M2 = ("Apple M2 Ultra", 196608.0, 90.0)


def _power_history(base: float, swing: float, phase: float, n: int = 40) -> list[float | None]:
    return [round(base + swing * math.sin(phase + i / 6.0), 1) for i in range(n)]


def _cost(daily: list[float], price: float = 0.30) -> Cost:
    days = [*DAYS, "2025-10-09"]
    entries = [
        DailyCost(date=d, energy_wh=round(c / price * 1000, 1), cost=c)
        for d, c in zip(days, daily, strict=False)
    ]
    return Cost(
        currency="EUR",
        price_per_kwh=price,
        today=daily[-1],
        daily=entries,
        total_7d=round(sum(daily), 2),
    )


def _power(watts: float, gpu_watts: list[float], *, mac: bool, wall: bool) -> Power:
    """A node's power as its parts: SoC on a Mac; GPUs by their NVML counters, CPU package and
    DRAM by RAPL elsewhere, with a BMC's wall reading on top where `wall`."""
    if mac:
        parts = [PowerPart(name="soc", kind="soc", source="simulated", watts=watts)]
    else:
        parts = [
            PowerPart(name=f"gpu{i}", kind="gpu", source="nvml-energy", watts=w)
            for i, w in enumerate(gpu_watts)
        ]
        rest = max(0.0, watts - sum(gpu_watts))
        cpu_w, dram_w = round(rest * 0.8, 1), round(rest * 0.2, 1)
        parts += [
            PowerPart(name="package-0", kind="cpu-package", source="rapl", watts=cpu_w),
            PowerPart(name="dram-0", kind="dram", source="rapl", watts=dram_w),
        ]
        if wall:
            parts.append(PowerPart(name="wall", kind="wall", source="ipmi", watts=watts))
    scoped = in_scope(parts)
    return Power(
        watts=watts,
        scope=scope_label([p.kind for p in scoped]),
        source=source_label([p.source for p in scoped]),
        energy_j=184_444_200.0,
        energy_since=SAMPLE_NOW - 86400 * 3,
        parts=parts,
    )


PORTS = {"ollama": 11434, "vllm": 8000, "llamacpp": 8080, "mlx": 8081, "lmstudio": 1234}
SETTINGS = {
    "ollama": EngineSettings(default_ctx=4096, num_parallel=1, max_loaded=3, kv_type="f16"),
    "llamacpp": EngineSettings(default_ctx=8192, num_parallel=4, kv_type="f16"),
    "vllm": EngineSettings(
        gpu_memory_utilization=0.9, num_gpu_blocks=27000, block_size=16, kv_usage_pct=41.5
    ),
}
# what each engine reports of a resident model itself (the rest the agent measures)
REPORTED = {
    "ollama": ("size_mb", "vram_mb", "ctx", "expires_at"),
    "llamacpp": ("size_mb", "ctx", "parallel", "busy"),
    "vllm": ("ctx", "kv_type", "busy"),
}
STRAY_PID = 4321  # someone's notebook on GPU 0: part of each GPU node's "other" memory


def _engine(
    name: str, models: list[tuple[str, float, str]], up: bool = True, error: str | None = None
) -> Engine:
    """An engine as the agent reports it: the residency ledger (the first model busy, the
    others idle), the engine's process (PID = its port; Ollama's runners and vLLM's engine
    core are its children, PID port+1...), its settings and, for Ollama, what is on disk."""
    versions = {"ollama": "0.11.4", "vllm": "0.10.1", "llamacpp": "b6100", "mlx": "0.26.0"}
    port = PORTS.get(name, 9000)
    ctx, parallel, kv = {
        "ollama": (4096, 1, "f16"),
        "llamacpp": (8192, 4, "f16"),
        "vllm": (32768, None, "bf16"),
    }.get(name, (None, None, None))
    ledger = []
    for k, (m, size, quant) in enumerate(models if up else []):
        fields: dict[str, object] = {
            "size_mb": size,
            "vram_mb": size,
            "ctx": ctx,
            "parallel": parallel,
            "kv_type": kv,
            "busy": k == 0,
            "expires_at": SAMPLE_NOW + 240 + 60 * k if name == "ollama" else None,
        }
        sources = {f: "reported" for f in REPORTED.get(name, ()) if fields.get(f) is not None}
        sources = {"size_mb": "measured", "vram_mb": "measured", **sources}
        ledger.append(
            Model(
                name=m,
                quant=quant,
                pid=port + 1 + k if name == "ollama" else None,
                meta=model_meta(name, m, quant),
                sources=sources,
                **fields,
            )
        )
    resident = {m for m, _, _ in models}
    available = [
        DiskModel(name=m, size_mb=meta.file_mb, quant=q, params=meta.params, meta=meta)
        for m, _, q in MODEL_POOL["ollama"]
        if name == "ollama" and up and m not in resident and (meta := model_meta(name, m, q))
    ]
    return Engine(
        name=name,
        url=f"http://127.0.0.1:{port}",
        status="up" if up else "down",
        version=versions.get(name) if up else None,
        models=ledger,
        available=available,
        settings=SETTINGS.get(name) if up else None,
        pids=[port] if up else [],
        error=error,
    )


def _gpu_processes(gpus: list[Gpu], engines: list[Engine]) -> tuple[list[Gpu], list[Engine]]:
    """NVML's view of the sample GPUs: each model's process holding an even share of it on
    every GPU, vLLM's engine core its claim (0.9 of the GPU), a stray process on GPU 0, all
    within what the GPU has in use; then the agent's own attribution."""
    tree: dict[int, list[int]] = {}
    shares: list[tuple[int, float]] = []  # (pid, MiB per GPU)
    claims: list[int] = []
    n = max(1, len(gpus))
    for eng in engines:
        if eng.status != "up":
            continue
        if eng.name == "vllm":
            claims.append(eng.pids[0] + 1)
            tree[eng.pids[0] + 1] = [eng.pids[0], 1]
            continue
        for m in eng.models:
            pid = m.pid if m.pid is not None else eng.pids[0]
            tree.setdefault(pid, [eng.pids[0], 1] if pid != eng.pids[0] else [1])
            shares.append((pid, (m.vram_mb or 0.0) / n))
    out = []
    for g in gpus:
        room = max(0.0, (g.memory_used_mb or 0.0) - 600.0)
        listed = [(STRAY_PID, min(384.0, room))] if g.index == 0 else []
        left = room - sum(mb for _, mb in listed)
        total = sum(mb for _, mb in shares)
        scale = min(1.0, left / total) if total else 1.0
        listed += [(pid, mb * scale) for pid, mb in shares]
        left -= total * scale
        for pid in claims:
            claim = min(0.9 * (g.memory_total_mb or 0.0), left) / len(claims)
            listed.append((pid, claim))
        procs = [GpuProcess(pid=pid, used_mb=round(mb, 1)) for pid, mb in listed]
        out.append(g.model_copy(update={"processes": procs, "attributed_mb": 0.0}))
    return attribute(out, engines, [], lambda pid: tree.get(pid, [1]))


GPU_SKEW = (1.0, 0.8, 0.9, 0.6)  # one node's GPUs do not carry the same load


def _snapshot(
    host: str,
    gpus: list[tuple[str, float, float]],
    used_frac: float,
    util: float,
    watts: float,
    engines: list[Engine],
    daily: list[float],
    *,
    ts: float = SAMPLE_NOW - 1,
    mac: bool = False,
    problems: list[str] | None = None,
    seq: int = 3,
    wall: bool = False,
) -> NodeSnapshot:
    gpu_list = [
        Gpu(
            index=i,
            name=gname,
            uuid=f"GPU-sample-{host}-{i}",
            memory_total_mb=total,
            memory_used_mb=round(total * used_frac, 1),
            util_pct=round(max(0.0, min(100.0, util * GPU_SKEW[i % 4])), 1),
            # the GPUs' watts: within the node's, each below its limit, the busy ones most
            power_w=round(
                min(
                    gmax,
                    watts * 0.8 * GPU_SKEW[i % 4] / sum(GPU_SKEW[j % 4] for j in range(len(gpus))),
                ),
                1,
            ),
            power_limit_w=None if mac else gmax,
            temp_c=round(38 + 0.4 * util * GPU_SKEW[i % 4], 1),
        )
        for i, (gname, total, gmax) in enumerate(gpus)
    ]
    memory = Memory(total_mb=262144, used_mb=98304, pressure_pct=37.5)
    unified = unified_budget(memory.total_mb or 0.0, wired_limit_mb=0.0) if mac else None
    if not mac:  # Apple's GPU has no NVML process list
        gpu_list, engines = _gpu_processes(gpu_list, engines)
    return NodeSnapshot(
        node=NodeInfo(
            hostname=host,
            os="Darwin 24.1.0" if mac else "Linux 6.8.0",
            arch="arm64" if mac else "x86_64",
            agent_version="0.1.0",
            uptime_s=86400 * 12 + 3600 * 5,
            simulated=True,
        ),
        ts=ts,
        cpu=Cpu(percent=round(util * 0.4, 1), cores=24 if mac else 64),
        memory=memory,
        gpus=gpu_list,
        power=_power(watts, [g.power_w or 0.0 for g in gpu_list], mac=mac, wall=wall),
        cost=_cost(daily),
        engines=engines,
        budget=node_budget(memory, gpu_list, engines, unified=unified),
        audit=AuditHead(seq=seq, head_hash="ab" * 32),
        problems=problems or [],
    )


LLAMA8 = ("llama3.1:8b", 4920.0, "Q4_K_M")
QWEN7 = ("qwen2.5-coder:7b", 5358.0, "Q4_K_M")
NOMIC = ("nomic-embed-text:latest", 274.0, "F16")
VLLM_LLAMA = ("meta-llama/Llama-3.1-8B-Instruct", 16060.0, "bf16")
VLLM_QWEN = ("Qwen/Qwen2.5-32B-Instruct-AWQ", 19300.0, "awq")


def sample_views(now: float = SAMPLE_NOW) -> list[NodeView]:
    """Ten hand-made nodes, one per situation the dashboard has to show."""
    v: list[NodeView] = []

    def node(name: str, role: str, tags: list[str], **kw) -> NodeView:
        view = NodeView(
            name=name,
            url=f"http://10.0.0.{len(v) + 11}:8899",
            role=role,
            tags=tags,
            has_token=kw.pop("has_token", True),
            power_slot=kw.pop("power_slot", int(now // POWER_BUCKET_S) - 1),
            **kw,
        )
        v.append(view)
        return view

    node(
        "gpu-a1",
        "inference",
        ["rack-a", "h100"],
        state=NodeState.ONLINE,
        snapshot=_snapshot(
            "gpu-a1",
            [H100] * 4,
            0.62,
            81.0,
            1843.0,
            [_engine("vllm", [VLLM_QWEN]), _engine("ollama", [LLAMA8, QWEN7])],
            [41.2, 39.8, 44.1, 42.7, 40.3, 43.9, 18.4],
            ts=now - 1,
        ),
        latency_ms=12.4,
        last_seen=now - 1,
        power_history=_power_history(1700, 180, 0.0),
        chain=ChainStatus.OK,
        stream_ok=True,
        version=7,
    )
    node(
        "gpu-a2",
        "inference",
        ["rack-a", "h100"],
        state=NodeState.ONLINE,
        snapshot=_snapshot(
            "gpu-a2",
            [H100] * 2,
            0.97,
            96.0,
            1288.5,
            [_engine("vllm", [VLLM_LLAMA, VLLM_QWEN])],
            [30.1, 31.4, 29.9, 33.0, 32.2, 31.8, 14.0],
            ts=now - 2,
            wall=True,
        ),
        latency_ms=15.0,
        last_seen=now - 2,
        power_history=_power_history(1200, 90, 1.3),
        chain=ChainStatus.OK,
        stream_ok=True,
        version=5,
    )
    node(
        "gpu-b1",
        "inference",
        ["rack-b", "l40s"],
        state=NodeState.DEGRADED,
        reasons=["engine vllm down: connection refused"],
        snapshot=_snapshot(
            "gpu-b1",
            [L40S] * 2,
            0.21,
            12.0,
            312.0,
            [
                _engine("vllm", [], up=False, error="connection refused"),
                _engine("ollama", [LLAMA8]),
            ],
            [12.3, 12.9, 11.7, 13.4, 12.0, 12.6, 5.1],
            ts=now - 1,
            problems=["engine vllm down: connection refused"],
        ),
        latency_ms=18.9,
        last_seen=now - 1,
        power_history=_power_history(330, 40, 2.0),
        chain=ChainStatus.OK,
        stream_ok=True,
        version=9,
    )
    node(
        "gpu-b2",
        "batch",
        ["rack-b", "l40s"],
        state=NodeState.ONLINE,
        snapshot=_snapshot(
            "gpu-b2",
            [L40S] * 2,
            0.48,
            55.0,
            598.2,
            [_engine("vllm", [VLLM_LLAMA]), _engine("llamacpp", [])],
            [17.5, 18.2, 16.9, 19.1, 18.8, 17.7, 7.9],
            ts=now - 1,
        ),
        latency_ms=21.3,
        last_seen=now - 1,
        power_history=_power_history(560, 70, 3.1),
        chain=ChainStatus.OK,
        stream_ok=True,
        version=4,
    )
    node(
        "embed-1",
        "embeddings",
        ["rack-c"],
        state=NodeState.ONLINE,
        snapshot=_snapshot(
            "embed-1",
            [RTX],
            0.08,
            9.0,
            141.7,
            [_engine("ollama", [NOMIC])],
            [3.1, 3.0, 3.3, 3.2, 2.9, 3.1, 1.2],
            ts=now - 3,
        ),
        latency_ms=9.8,
        last_seen=now - 3,
        power_history=_power_history(140, 8, 0.5),
        chain=ChainStatus.OK,
        stream_ok=True,
        version=3,
    )
    node(
        "mac-studio-1",
        "dev",
        ["mac"],
        state=NodeState.ONLINE,
        snapshot=_snapshot(
            "mac-studio-1",
            [M2],
            0.11,
            34.0,
            88.3,
            [
                _engine("mlx", [("mlx-community/Qwen2.5-7B-Instruct-4bit", 4300.0, "4bit")]),
                _engine("ollama", [LLAMA8]),
            ],
            [1.2, 1.4, 1.1, 1.3, 1.5, 1.2, 0.5],
            ts=now - 2,
            mac=True,
        ),
        latency_ms=31.0,
        last_seen=now - 2,
        power_history=_power_history(85, 15, 4.2),
        chain=ChainStatus.OK,
        stream_ok=True,
        version=6,
    )
    node(
        "edge-lab-7",
        "edge",
        ["edge"],
        state=NodeState.OFFLINE,
        reasons=["connection refused"],
        snapshot=_snapshot(
            "edge-lab-7",
            [RTX],
            0.30,
            0.0,
            96.0,
            [_engine("ollama", [QWEN7])],
            [2.0, 2.2, 2.1, 1.9, 2.3, 2.0, 0.3],
            ts=now - 184,
        ),
        latency_ms=None,
        last_seen=now - 184,
        last_error="connection refused (127.0.0.1:8899)",
        power_history=_power_history(95, 5, 1.0, n=20),
        power_slot=int((now - 184) // POWER_BUCKET_S) - 1,
        chain=ChainStatus.UNKNOWN,
        retry_at=now + 12,
        version=11,
    )
    node(
        "gpu-c1",
        "inference",
        ["rack-c", "h100"],
        state=NodeState.DEGRADED,
        reasons=["audit chain BROKEN: seq 12: hash mismatch"],
        snapshot=_snapshot(
            "gpu-c1",
            [H100],
            0.55,
            47.0,
            455.0,
            [_engine("ollama", [LLAMA8, QWEN7, NOMIC])],
            [10.2, 11.1, 10.8, 9.7, 10.4, 11.5, 4.4],
            ts=now - 1,
            seq=14,
        ),
        latency_ms=44.0,
        last_seen=now - 1,
        power_history=_power_history(450, 60, 2.6),
        chain=ChainStatus.BROKEN,
        chain_detail="seq 12: hash mismatch",
        stream_ok=True,
        version=8,
    )
    node(
        "new-node-9",
        "",
        [],
        state=NodeState.INITIALIZING,
        has_token=False,
        version=1,
    )
    node(
        "rtx-desk-2",
        "dev",
        ["4090"],
        state=NodeState.ONLINE,
        snapshot=_snapshot(
            "rtx-desk-2",
            [RTX],
            0.41,
            22.0,
            233.4,
            [_engine("llamacpp", [("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", 4685.0, "Q4_K_M")])],
            [4.0, 4.4, 3.8, 4.9, 4.1, 4.6, 2.0],
            ts=now - 4,
        ),
        latency_ms=1240.0,
        last_seen=now - 4,
        power_history=_power_history(230, 25, 5.0),
        chain=ChainStatus.NOT_APPLICABLE,
        stream_ok=False,
        version=2,
    )
    return v


def generated_views(
    count: int, now: float = SAMPLE_NOW, seed: int = 7, gpus: int | None = None
) -> list[NodeView]:
    """`count` plausible nodes from a seeded generator, for 1000-row tests; `gpus` GPUs on
    each (else 1, 2 or 4), the same nodes otherwise."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        r = rng.random()
        state = (
            NodeState.ONLINE
            if r < 0.85
            else NodeState.DEGRADED
            if r < 0.93
            else NodeState.OFFLINE
            if r < 0.98
            else NodeState.INITIALIZING
        )
        gpu = rng.choice([H100, L40S, RTX])
        watts = round(rng.uniform(80, 1800), 1)
        snap = None
        if state is not NodeState.INITIALIZING:
            per_node = rng.choice([1, 2, 4])  # drawn as before: the same nodes with `gpus`
            snap = _snapshot(
                f"n{i:04d}",
                [gpu] * (gpus or per_node),
                rng.random(),
                round(rng.uniform(0, 100), 1),
                watts,
                [_engine("ollama", [LLAMA8]), _engine("vllm", [VLLM_LLAMA], up=r < 0.9)],
                [round(rng.uniform(1, 40), 2) for _ in range(7)],
                ts=now - 1,
            )
        out.append(
            NodeView(
                name=f"n{i:04d}",
                url=f"http://127.0.0.1:{20000 + i}",
                role=rng.choice(["inference", "batch", "embeddings"]),
                tags=[f"rack-{i % 8}"],
                has_token=True,
                state=state,
                snapshot=snap,
                latency_ms=round(rng.uniform(2, 80), 1) if snap else None,
                last_seen=now - rng.randint(0, 5) if snap else None,
                power_history=[round(watts + rng.uniform(-50, 50), 1) for _ in range(40)],
                power_slot=int(now // POWER_BUCKET_S) - 1,
                chain=ChainStatus.OK,
                version=1,
            )
        )
    return out


def sample_events(now: float = SAMPLE_NOW) -> list[FleetEvent]:
    return [
        FleetEvent(now - 240, "gpu-c1", "error", "audit chain BROKEN: seq 12: hash mismatch"),
        FleetEvent(now - 190, "edge-lab-7", "state", "ONLINE -> OFFLINE: connection refused"),
        FleetEvent(now - 95, "gpu-b1", "action", "restart vllm started"),
        FleetEvent(now - 92, "gpu-b1", "audit", "audit seq 3: restart ok"),
        FleetEvent(now - 60, "gpu-b1", "state", "ONLINE -> DEGRADED: engine vllm down"),
    ]


def sample_audit(name: str, count: int = 5, now: float = SAMPLE_NOW) -> list[AuditEntry]:
    """A real hash chain of `count` entries (oldest first), as an agent would serve it."""
    actions = [
        ("restart", {"engine": "vllm"}, "ok", 200, 0),
        ("unload", {"engine": "ollama", "model": "qwen2.5-coder:7b"}, "ok", 200, 0),
        ("restart", {"engine": "ollama"}, "denied", 401, None),
        ("purge", {}, "ok", 200, 0),
        ("stop", {"engine": "llamacpp"}, "failed", 200, 1),
    ]
    prev = GENESIS_HASH
    out = []
    for seq in range(1, count + 1):
        action, args, status, http, code = actions[(seq - 1) % len(actions)]
        entry = {
            "seq": seq,
            "ts": now - 3600 * (count - seq + 1),
            "source_ip": "10.0.0.2",
            "token_id": None if http == 401 else "tok_ops01",
            "action": action,
            "args": args,
            "status": status,
            "http_status": http,
            "duration_ms": 1520.0,
            "exit_code": code,
            "error": "exit status 1" if code == 1 else None,
            "prev_hash": prev,
        }
        entry["hash"] = audit_hash(entry)
        prev = entry["hash"]
        out.append(AuditEntry.model_validate(entry))
    return out


class SampleSource:
    """A FleetSource over fixed views; `update` and `emit` drive changes in tests."""

    def __init__(
        self,
        views: list[NodeView] | None = None,
        events: list[FleetEvent] | None = None,
        audit: Callable[[str, int], list[AuditEntry]] | None = None,
        config_warnings: Sequence[str] = (),
        skipped: int = 0,
    ) -> None:
        self._views = {v.name: v for v in (sample_views() if views is None else views)}
        self._generation = 1
        self._changed = anyio.Event()
        self._events = list(sample_events() if events is None else events)
        self._event_waiters: list[anyio.Event] = []
        self._audit = audit or (lambda name, limit: sample_audit(name)[-limit:])
        self.audit_calls: list[str] = []
        self.acted: list[tuple[list[str], ActionRequest]] = []  # what `act` was asked to send
        self._config_warnings = list(config_warnings)
        self._skipped = skipped
        self._fit: FitWatch | None = None

    # --- FleetSource -----------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self._generation

    @property
    def names(self) -> list[str]:
        return list(self._views)

    @property
    def config_warnings(self) -> list[str]:
        return list(self._config_warnings)

    @property
    def skipped(self) -> int:
        return self._skipped

    def snapshots(self) -> list[NodeView]:
        return [copy.deepcopy(v) for v in self._views.values()]

    def changed(self, known: Mapping[str, int]) -> list[NodeView]:
        return [copy.deepcopy(v) for n, v in self._views.items() if known.get(n) != v.version]

    def node(self, name: str) -> NodeView | None:
        v = self._views.get(name)
        return copy.deepcopy(v) if v is not None else None

    async def events(self, kinds: Iterable[str] | None = None) -> AsyncIterator[FleetEvent]:
        wanted = None if kinds is None else set(kinds)
        i = 0
        while True:
            while i < len(self._events):
                if wanted is None or self._events[i].kind in wanted:
                    yield self._events[i]
                i += 1
            waiter = anyio.Event()
            self._event_waiters.append(waiter)
            await waiter.wait()

    async def wait_changed(self, after: int, timeout: float) -> int:
        if self._generation != after:
            return self._generation
        with anyio.move_on_after(timeout):
            await self._changed.wait()
        return self._generation

    async def fetch_audit(self, name: str, limit: int = 20) -> list[AuditEntry]:
        self.audit_calls.append(name)
        if name not in self._views:
            raise KeyError(name)
        return self._audit(name, limit)

    async def act(
        self,
        names: Sequence[str],
        request: ActionRequest,
        on_progress: ProgressCallback | None = None,
    ) -> Envelope:
        """Sends nothing: records the request and reports every node queued, running, ok."""
        self.acted.append((list(names), request))
        env = Envelope(request.action, request.engine, request.model, list(names))
        for progress in (Progress.QUEUED, Progress.RUNNING, Progress.OK):
            for n in names:
                if on_progress is not None:
                    on_progress(n, progress, None)
            await anyio.lowlevel.checkpoint()
        env.succeeded = list(names)
        return env

    def set_fit(self, request: FitRequest | None, *, strategy: str = "binpack") -> FitWatch | None:
        """As the aggregator does it, through the same FitWatch, over the fixed views."""
        watch = FitWatch(request, strategy=strategy) if request is not None else None
        self._fit = watch
        if watch is not None:
            watch.learn_all((v.name, v.snapshot) for v in self._views.values() if v.snapshot)
        for name, view in list(self._views.items()):
            self._views[name] = self._judge(replace(view, version=view.version + 1))
        self._bump()
        return watch

    def _judge(self, view: NodeView) -> NodeView:
        """The view with its fit and placement score for the question asked (none: neither)."""
        watch = self._fit
        if watch is None:
            return replace(view, fit=None, placement=None)
        snap = view.snapshot
        fit = watch.judge(view, watch.check(view.name, snap) if snap is not None else None)
        judged = replace(view, fit=fit)
        return replace(judged, placement=score(judged, watch.strategy))  # type: ignore[arg-type]

    # --- test drivers ----------------------------------------------------------------
    def update(self, name: str, **changes) -> NodeView:
        """Change one node (bumping its version; its fit follows) and wake the views."""
        old = self._views[name]
        new = replace(old, version=old.version + 1, **changes)
        self._views[name] = self._judge(new)
        self._bump()
        return self._views[name]

    def put(self, views: list[NodeView]) -> None:
        """Replace the whole fleet (adds and removes nodes)."""
        self._views = {v.name: v for v in views}
        self._bump()

    def emit(self, event: FleetEvent) -> None:
        self._events.append(event)
        waiters, self._event_waiters = self._event_waiters, []
        for w in waiters:
            w.set()

    def _bump(self) -> None:
        self._generation += 1
        self._changed.set()
        self._changed = anyio.Event()
