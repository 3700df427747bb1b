"""Nodes without a fleettui agent: asiai and bare Ollama servers, read through adapters."""

from __future__ import annotations

import anyio
import pytest

from fakes import FakeAgent, wait_for
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.state import ChainStatus, NodeState
from fleettui.config import Defaults, FleetConfig, NodeConfig

pytestmark = pytest.mark.anyio
GB = 1_000_000_000

ASIAI = {  # trimmed from a real asiai 1.34 answer on Linux (sentinels: -1, 0, "unknown")
    "ts": 1795455473,
    "cpu_cores": -1,
    "mem_total": 0,
    "mem_used": 0,
    "mem_pressure": "unknown",
    "thermal_level": "unknown",
    "uptime": -1,
    "gpu_utilization_pct": -1.0,
    "engines_status": [
        {
            "name": "ollama",
            "url": "http://127.0.0.1:18434",
            "reachable": True,
            "version": "0.12.6",
            "models": [{"name": "qwen3:8b", "size_vram": 6.2 * GB, "quantization": "Q4_K_M"}],
        },
        {"name": "llamacpp", "url": "http://127.0.0.1:18080", "reachable": False, "models": []},
    ],
}
MAC = {
    **ASIAI,
    "cpu_cores": 24,
    "mem_total": 192 * 2**30,
    "mem_used": 96 * 2**30,
    "mem_pressure": "critical",
    "gpu_utilization_pct": 55.0,
    "power_total_watts": 61.5,
    "engines_status": ASIAI["engines_status"][:1],
}
PS = {
    "models": [
        {
            "name": "qwen2.5-coder:7b",
            "model": "qwen2.5-coder:7b",
            "size": 5618579456,
            "size_vram": 5618579456,
            "details": {"format": "gguf", "quantization_level": "Q4_K_M"},
            "expires_at": "2025-08-06T14:23:28.7482+02:00",
        }
    ]
}


async def test_asiai_and_ollama_nodes_are_read_only_nodes() -> None:
    async with anyio.create_task_group() as tg:
        linux = await FakeAgent("linux", routes={"/api/v1/snapshot": ASIAI}).start(tg)
        mac = await FakeAgent("mac", routes={"/api/v1/snapshot": MAC}).start(tg)
        oll = await FakeAgent(
            "oll", routes={"/api/version": {"version": "0.11.4"}, "/api/ps": PS}
        ).start(tg)
        bad = await FakeAgent(
            "bad", routes={"/api/version": {"version": "1"}, "/api/ps": [1]}
        ).start(tg)
        cfg = FleetConfig(
            defaults=Defaults(poll_interval_s=0.2, http_timeout_s=1, backoff_min_s=0.1),
            nodes=[
                NodeConfig(name="linux", url=linux.url, kind="asiai"),
                NodeConfig(name="mac", url=mac.url, kind="asiai"),
                NodeConfig(name="oll", url=oll.url, kind="ollama"),
                NodeConfig(name="bad", url=bad.url, kind="ollama"),
            ],
        )
        async with FleetAggregator(cfg) as agg:
            await wait_for(
                lambda: all(v.state is not NodeState.INITIALIZING for v in agg.snapshots()), 5
            )
            await anyio.sleep(0.5)  # several polls: no stream or audit fetch is ever attempted
            by = {v.name: v for v in agg.snapshots()}
        tg.cancel_scope.cancel()

    lx = by["linux"]
    assert lx.state is NodeState.DEGRADED
    assert lx.reasons == ["engine llamacpp down: not reachable (reported by asiai)"]
    assert lx.snapshot.memory.total_mb is None and lx.snapshot.cpu.cores is None
    assert lx.snapshot.engines[0].models[0].vram_mb == round(6.2 * GB / 2**20, 1)
    assert lx.chain is ChainStatus.NOT_APPLICABLE and not lx.stream_ok

    m = by["mac"]
    assert m.state is NodeState.DEGRADED and m.reasons == ["memory pressure critical"]
    assert m.snapshot.memory.pressure_pct == 50.0 and m.snapshot.cpu.cores == 24
    assert m.snapshot.power.watts == 61.5 and m.snapshot.gpus[0].util_pct == 55.0

    o = by["oll"]
    assert o.state is NodeState.ONLINE, o.reasons
    [eng] = o.snapshot.engines
    assert eng.version == "0.11.4" and eng.models[0].quant == "Q4_K_M"
    assert o.snapshot.node.agent_version == "ollama 0.11.4"

    assert by["bad"].state is NodeState.DEGRADED
    assert by["bad"].reasons[0].startswith("snapshot: bad answer from /api/ps: wrong shape")
    for fake in (linux, mac, oll):
        assert not fake.requests_to("/api/v1/events") and not fake.requests_to("/api/v1/audit")
