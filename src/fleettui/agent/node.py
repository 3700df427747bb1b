"""One node agent: a collection loop that keeps the latest snapshot and feeds the event broker.

Requests are served from `latest_json`, which the loop replaces once per tick, so a slow engine
delays only the next tick, never a reader.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.to_thread
import httpx

from fleettui import __version__
from fleettui.agent.broker import EventBroker
from fleettui.agent.collect.energy import EnergyLedger
from fleettui.agent.collect.host import HostCollector
from fleettui.agent.collect.nvml import NvmlCollector
from fleettui.agent.collect.rapl import RaplCollector
from fleettui.agent.config import DEFAULT_ENGINE_URLS, AgentConfig
from fleettui.agent.engines import probe_engine
from fleettui.agent.simulate import SimulatedNode
from fleettui.wire import AuditHead, Cpu, Engine, Gpu, Memory, NodeInfo, NodeSnapshot, Power

if TYPE_CHECKING:
    from fleettui.agent.actions import ActionService

log = logging.getLogger(__name__)


class Source(Protocol):
    async def collect(self, ledger: EnergyLedger) -> NodeSnapshot: ...

    async def aclose(self) -> None: ...


class RealSource:
    """Facts about this machine: psutil, NVML, RAPL and the engines over HTTP."""

    def __init__(self, config: AgentConfig, *, nvml: object | None = None) -> None:
        self.config = config
        self.host = HostCollector()
        self.nvml = NvmlCollector(nvml)
        self.rapl = RaplCollector(config.rapl_root)
        # trust_env=False: engines are local; a proxy from the environment must not intercept.
        self.client = httpx.AsyncClient(
            trust_env=False, timeout=httpx.Timeout(5.0), limits=httpx.Limits(max_connections=16)
        )

    async def aclose(self) -> None:
        await self.client.aclose()
        await anyio.to_thread.run_sync(self.nvml.close)

    def _host_facts(self) -> tuple[NodeInfo, Cpu, Memory, list[Gpu], float | None, list[str]]:
        problems: list[str] = []
        info = self.host.node_info(__version__)
        cpu = self.host.cpu(problems)
        mem = self.host.memory(problems)
        gpus = self.nvml.gpus(problems)
        rapl_w = self.rapl.watts(problems) if self.rapl.available else None
        return info, cpu, mem, gpus, rapl_w, problems

    async def _engines(self) -> list[Engine]:
        cfg = self.config
        targets: list[tuple[str, str, str, float, bool]] = [
            (name, e.kind or name, e.url or DEFAULT_ENGINE_URLS[e.kind or name], e.timeout_s, True)
            for name, e in cfg.engines.items()
        ]
        if cfg.detect:
            configured = {t[0] for t in targets}
            targets += [
                (kind, kind, url, 1.0, False)
                for kind, url in DEFAULT_ENGINE_URLS.items()
                if kind not in configured
            ]
        results: list[Engine | None] = [None] * len(targets)

        async def one(i: int, name: str, kind: str, url: str, timeout: float) -> None:
            results[i] = await probe_engine(self.client, name, kind, url, timeout)

        async with anyio.create_task_group() as tg:
            for i, (name, kind, url, timeout, _) in enumerate(targets):
                tg.start_soon(one, i, name, kind, url, timeout)
        out: list[Engine] = []
        claimed: set[str] = set()
        for (_, _, url, _, explicit), eng in zip(targets, results, strict=True):
            assert eng is not None
            if explicit:
                out.append(eng)
            elif (
                eng.status == "up" and url not in claimed
            ):  # detected engines only when they answer
                out.append(eng)
            if eng.status == "up":
                claimed.add(url)
        return out

    async def collect(self, ledger: EnergyLedger) -> NodeSnapshot:
        (info, cpu, mem, gpus, rapl_w, problems), engines = await _gather(
            anyio.to_thread.run_sync, self._host_facts, self._engines
        )
        gpu_w = [g.power_w for g in gpus if g.power_w is not None]
        watts: float | None = None
        source = "none"
        if gpu_w and rapl_w is not None:
            watts, source = sum(gpu_w) + rapl_w, "nvml+rapl"
        elif gpu_w:
            watts, source = sum(gpu_w), "nvml"
        elif rapl_w is not None:
            watts, source = rapl_w, "rapl"
        if source == "none" and not self.rapl.available and not gpus:
            problems.append("power: no readable source (no NVIDIA GPU, RAPL unreadable)")
        now = time.time()
        ledger.add_sample(now, watts)
        for eng in engines:
            if eng.status == "down":
                problems.append(f"engine {eng.name} down: {eng.error}")
        if mem.pressure_pct is not None and mem.pressure_pct >= 95:
            problems.append(f"memory pressure {mem.pressure_pct:.0f}%")
        if ledger.problem:
            problems.append(ledger.problem)
        return NodeSnapshot(
            node=info,
            ts=now,
            cpu=cpu,
            memory=mem,
            gpus=gpus,
            power=Power(
                watts=round(watts, 2) if watts is not None else None,
                source=source,  # type: ignore[arg-type]
                energy_wh_total=round(ledger.total_wh, 3),
            ),
            cost=ledger.cost(now),
            engines=engines,
            problems=problems,
        )


async def _gather(run_sync, host_fn, engines_fn):  # type: ignore[no-untyped-def]
    """Run the blocking host reads in a worker thread while the engine probes run."""
    out: dict[str, object] = {}

    async def host() -> None:
        out["host"] = await run_sync(host_fn)

    async def engines() -> None:
        out["engines"] = await engines_fn()

    async with anyio.create_task_group() as tg:
        tg.start_soon(host)
        tg.start_soon(engines)
    return out["host"], out["engines"]


class SimulatedSource:
    def __init__(self, node: SimulatedNode) -> None:
        self.node = node

    async def collect(self, ledger: EnergyLedger) -> NodeSnapshot:
        return self.node.snapshot(ledger)

    async def aclose(self) -> None:
        return None


class NodeAgent:
    """Holds the latest snapshot of one node and publishes a `snapshot` event per tick."""

    def __init__(
        self,
        config: AgentConfig,
        source: Source,
        ledger: EnergyLedger,
        *,
        simulated: SimulatedNode | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.ledger = ledger
        self.simulated = simulated
        self.broker = EventBroker()
        self.latest: NodeSnapshot | None = None
        self.latest_json: bytes = b""
        self.audit_head: Callable[[], AuditHead] = AuditHead
        self.actions: ActionService | None = None  # the write side, attached by the server
        self.ticks = 0
        self.collect_s_total = 0.0
        self.phase_s = 0.0  # delay of the first loop tick (spreads many simulated nodes out)

    @classmethod
    def real(cls, config: AgentConfig, *, nvml: object | None = None) -> NodeAgent:
        ledger = EnergyLedger(
            config.state_path() / "energy.json", config.price_per_kwh, config.currency
        )
        return cls(config, RealSource(config, nvml=nvml), ledger)

    @classmethod
    def simulate(cls, config: AgentConfig, name: str) -> NodeAgent:
        node = SimulatedNode(name)
        ledger = EnergyLedger(None, config.price_per_kwh or 0.30, config.currency)
        node.seed_ledger(ledger, time.time())
        return cls(config, SimulatedSource(node), ledger, simulated=node)

    async def tick(self) -> NodeSnapshot:
        t0 = time.perf_counter()
        try:
            snap = await self.source.collect(self.ledger)
        except Exception as exc:  # a collector bug must not kill the agent
            log.exception("collection failed")
            prev = self.latest
            if prev is None:
                raise
            snap = prev.model_copy(
                update={"ts": time.time(), "problems": [f"collection failed: {exc}"]}
            )
        snap.audit = self.audit_head()
        if self.actions is not None:
            snap.problems.extend(self.actions.problems())
        self.latest = snap
        self.latest_json = snap.model_dump_json().encode()
        self.broker.publish("snapshot", self.latest_json)
        self.ticks += 1
        self.collect_s_total += time.perf_counter() - t0
        self.ledger.maybe_save(snap.ts)
        return snap

    async def run(self) -> None:
        """Collect every interval, keeping cadence (a slow tick shortens the next sleep)."""
        interval = self.config.interval_s
        next_at = time.monotonic() + self.phase_s
        try:
            while True:
                if self.latest is None or time.monotonic() >= next_at:
                    await self.tick()
                    next_at += interval
                    if next_at < time.monotonic():  # fell behind: do not burst to catch up
                        next_at = time.monotonic() + interval
                await anyio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            with anyio.CancelScope(shield=True):
                self.ledger.maybe_save(force=True)
                self.broker.close()
                await self.source.aclose()
                if self.actions is not None:
                    await self.actions.aclose()
