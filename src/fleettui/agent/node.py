"""One node agent: a collection loop that keeps the latest snapshot and feeds the event broker.

Requests are served from `latest_json`, which the loop replaces once per tick, so a slow engine
delays only the next tick, never a reader.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from typing import Protocol

import anyio
import anyio.to_thread
import httpx

from fleettui import __version__
from fleettui.agent.broker import EventBroker
from fleettui.agent.collect.attribute import attribute
from fleettui.agent.collect.budget import Cap, node_budget, unified_budget
from fleettui.agent.collect.energy import EnergyLedger, EnergyMeter, Reading, zone
from fleettui.agent.collect.host import HostCollector
from fleettui.agent.collect.ioreport import IOReportCollector
from fleettui.agent.collect.macos import MacCollector, MacFacts
from fleettui.agent.collect.nvml import NvmlCollector, gpu_readings
from fleettui.agent.collect.rapl import RaplCollector
from fleettui.agent.collect.wall import WallCollector
from fleettui.agent.config import DEFAULT_ENGINE_URLS, AgentConfig
from fleettui.agent.engines import Probing, probe_engine
from fleettui.agent.simulate import SimulatedNode
from fleettui.wire import (
    AuditHead,
    Cpu,
    Engine,
    Gpu,
    Memory,
    NodeInfo,
    NodeSnapshot,
    Power,
    in_scope,
    scope_label,
    source_label,
)

log = logging.getLogger(__name__)


SAMPLE_MAX_S = 5.0  # energy is read at least this often, whatever the snapshot interval


def sample_every(interval_s: float) -> float:
    return min(interval_s, SAMPLE_MAX_S)


class Source(Protocol):
    meter: EnergyMeter

    async def collect(self, ledger: EnergyLedger) -> NodeSnapshot: ...

    async def sample(self, ledger: EnergyLedger) -> None: ...

    async def aclose(self) -> None: ...


class WriteSide(Protocol):
    """What the node needs of its write side (agent/actions.py), so the import points one way:
    the problems it reports and the audit head the node serves in every snapshot."""

    def audit_head(self) -> AuditHead: ...

    def problems(self) -> list[str]: ...

    async def aclose(self) -> None: ...


def meter_power(meter: EnergyMeter) -> Power:
    """The node's power from the meter's parts: a wall reading alone when there is one (it
    includes the rest), else the sum of the parts; watts only when every part has a figure."""
    parts = meter.parts()
    scoped = in_scope(parts)
    watts = [p.watts for p in scoped]
    return Power(
        watts=round(sum(w for w in watts if w is not None), 2)
        if watts and None not in watts
        else None,
        scope=scope_label([p.kind for p in scoped]),
        source=source_label([p.source for p in scoped]),
        energy_j=round(meter.node_j, 3),
        energy_since=meter.started,
        parts=parts,
    )


def book(meter: EnergyMeter, ledger: EnergyLedger, t: float, readings: list[Reading]) -> None:
    """One round of readings into the meter, and the node's share of it into the daily ledger."""
    t0, t1, joules = meter.update(t, readings)
    ledger.add(t0, t1, joules)


class RealSource:
    """Facts about this machine: psutil, NVML, RAPL, a BMC, on a Mac IOReport and the macOS
    tools, and the engines over HTTP. `mac` and `zeus` are seams: tests force the macOS
    collectors on with a recorded-output runner and a fake zeus module."""

    def __init__(
        self,
        config: AgentConfig,
        ledger: EnergyLedger,
        *,
        nvml: object | None = None,
        mac: MacCollector | None = None,
        zeus: object | None = None,
    ) -> None:
        self.config = config
        self.host = HostCollector()
        self.nvml = NvmlCollector(nvml)
        self.rapl = RaplCollector(config.rapl_root)
        darwin = sys.platform == "darwin"
        self.mac = mac if mac is not None else MacCollector() if darwin else None
        self.ioreport = IOReportCollector(zeus) if zeus is not None or darwin else None
        self.mac_facts = MacFacts()
        w = config.wall_power
        self.wall = (
            WallCollector(
                w.source,
                argv=w.argv,
                url=w.url,
                username=w.username,
                password_file=w.password_file,
                verify_tls=w.verify_tls,
                timeout_s=w.timeout_s,
            )
            if w is not None
            else None
        )
        self.meter = EnergyMeter(
            sample_s=sample_every(config.interval_s), boot_time=self.host.boot_time
        )
        self.meter.accept_handover(*ledger.handover_for(self.host.boot_time))
        self._gpus: list[Gpu] = []
        # engines on a node without a GPU hold their models in RAM (NVIDIA's, or Apple's)
        self.probing = Probing(
            gpus=self.nvml.available or (darwin and platform.machine() == "arm64")
        )
        self._sample_problems: list[str] = []
        # trust_env=False: engines are local; a proxy from the environment must not intercept.
        self.client = httpx.AsyncClient(
            trust_env=False, timeout=httpx.Timeout(5.0), limits=httpx.Limits(max_connections=16)
        )

    async def aclose(self) -> None:
        await self.client.aclose()
        await anyio.to_thread.run_sync(self.nvml.close)
        if self.wall is not None:
            self.wall.close()

    def _sample(self, ledger: EnergyLedger) -> None:
        """Read every energy source once and book it (blocking: runs in a worker thread)."""
        problems: list[str] = []
        self._gpus = self.nvml.gpus(problems)
        readings = gpu_readings(self._gpus)
        if self.rapl.available:
            readings += self.rapl.readings(problems)
        if self.ioreport is not None:
            readings += self.ioreport.readings(problems)
        if self.wall is not None:
            readings += self.wall.readings(problems)
        book(self.meter, ledger, time.time(), readings)
        self._sample_problems = problems + self.meter.problems

    async def sample(self, ledger: EnergyLedger) -> None:
        await anyio.to_thread.run_sync(self._sample, ledger)

    def _host_facts(self, ledger: EnergyLedger) -> tuple[NodeInfo, Cpu, Memory, list[str]]:
        problems: list[str] = []
        info = self.host.node_info(__version__)
        cpu = self.host.cpu(problems)
        mem = self.host.memory(problems)
        if self.mac is not None:
            self.mac_facts = facts = self.mac.collect(problems)
            cpu = cpu.model_copy(update=facts.cpu)
            mem = mem.model_copy(update=facts.memory)
        self._sample(ledger)
        return info, cpu, mem, problems + self._sample_problems

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
            results[i] = await probe_engine(self.client, name, kind, url, timeout, self.probing)

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

    def _unified_cap(self, mem: Memory) -> Cap | None:
        """On a Mac, the unified-memory cap from this tick's figures. A wired limit set with
        sysctl is the figure in force: Metal's working set follows it, but is read once at
        agent start, so it is passed only while the sysctl is 0 (the OS default)."""
        if self.mac is None or mem.total_mb is None:
            return None
        facts = self.mac_facts
        return unified_budget(
            mem.total_mb,
            wired_limit_mb=facts.wired_limit_mb,
            metal_working_set_mb=None if facts.wired_limit_mb else facts.working_set_mb,
        )

    async def collect(self, ledger: EnergyLedger) -> NodeSnapshot:
        (info, cpu, mem, problems), engines = await _gather(
            anyio.to_thread.run_sync, lambda: self._host_facts(ledger), self._engines
        )
        # NVML's processes by engine: the parent walk reads /proc, so off the event loop
        if any(g.processes for g in self._gpus):
            gpus, engines = await anyio.to_thread.run_sync(attribute, self._gpus, engines, problems)
        else:
            gpus, engines = attribute(self._gpus, engines, problems)
        gpus = gpus + self.mac_facts.gpus  # a new list: attribute() may hand back self._gpus
        power = meter_power(self.meter)
        if self.ioreport is not None and self.ioreport.reason:
            problems.append(self.ioreport.reason)
        elif not power.parts:
            problems.append("power: no readable source (no NVIDIA GPU, RAPL unreadable)")
        now = time.time()
        for eng in engines:
            if eng.status == "down":
                problems.append(f"engine {eng.name} down: {eng.error}")
            elif eng.error:  # up, some figures dropped (engines.py names them)
                problems.append(eng.error)
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
            power=power,
            cost=ledger.cost(now),
            engines=engines,
            budget=node_budget(mem, gpus, engines, unified=self._unified_cap(mem)),
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
    def __init__(self, node: SimulatedNode, sample_s: float) -> None:
        self.node = node
        self.meter = EnergyMeter(sample_s=sample_s, started=node.clock())

    async def collect(self, ledger: EnergyLedger) -> NodeSnapshot:
        return self.node.snapshot(ledger, self.meter)

    async def sample(self, ledger: EnergyLedger) -> None:
        book(self.meter, ledger, self.node.clock(), self.node.readings())

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
        self.actions: WriteSide | None = None  # agent/actions.py, attached by the server
        self.ticks = 0
        self.collect_s_total = 0.0
        self.phase_s = 0.0  # delay of the first loop tick (spreads many simulated nodes out)
        self._collected_problems: list[str] = []  # the last tick's, before the write side's
        self._ticking = anyio.Lock()  # the loop's ticks and a load's fresh() never overlap

    @classmethod
    def real(
        cls,
        config: AgentConfig,
        *,
        nvml: object | None = None,
        mac: MacCollector | None = None,
        zeus: object | None = None,
    ) -> NodeAgent:
        ledger = EnergyLedger(
            config.state_path() / "energy.json",
            config.price_per_kwh,
            config.currency,
            tz=zone(config.timezone),
        )
        return cls(config, RealSource(config, ledger, nvml=nvml, mac=mac, zeus=zeus), ledger)

    @classmethod
    def simulate(cls, config: AgentConfig, name: str) -> NodeAgent:
        node = SimulatedNode(name)
        ledger = EnergyLedger(
            None, config.price_per_kwh or 0.30, config.currency, tz=zone(config.timezone)
        )
        node.seed_ledger(ledger, time.time())
        return cls(
            config, SimulatedSource(node, sample_every(config.interval_s)), ledger, simulated=node
        )

    def audit_moved(self, entry_json: bytes) -> None:
        """A new audit entry: tell SSE subscribers, and serve the new head in the snapshot now,
        not next tick. The node is the one that puts the head into a snapshot."""
        self.broker.publish("audit", entry_json)
        snap = self.latest
        if snap is not None and self.actions is not None:
            snap = snap.model_copy(update={"audit": self.actions.audit_head()})
            self.latest, self.latest_json = snap, snap.model_dump_json().encode()

    def write_side_changed(self) -> None:
        """The write side's state moved between ticks (its start-up verification ended): serve
        its head and problems now, and tell SSE subscribers."""
        snap = self.latest
        if snap is None or self.actions is None:
            return
        problems = [*self._collected_problems, *self.actions.problems()]
        snap = snap.model_copy(update={"audit": self.actions.audit_head(), "problems": problems})
        self.latest, self.latest_json = snap, snap.model_dump_json().encode()
        self.broker.publish("snapshot", self.latest_json)

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
        snap.audit = self.actions.audit_head() if self.actions is not None else AuditHead()
        self._collected_problems = list(snap.problems)
        if self.actions is not None:
            snap.problems.extend(self.actions.problems())
        self.latest = snap
        self.source.meter.mark_published()
        self.latest_json = snap.model_dump_json().encode()
        self.broker.publish("snapshot", self.latest_json)
        self.ticks += 1
        self.collect_s_total += time.perf_counter() - t0
        self.ledger.maybe_save(snap.ts)
        return snap

    async def fresh(self) -> NodeSnapshot:
        """A snapshot collected now (a load checks its fit on this, not on the last tick's)."""
        async with self._ticking:
            return await self.tick()

    async def run(self) -> None:
        """Collect every interval, keeping cadence (a slow tick shortens the next sleep), and
        read energy in between when the interval is longer than the energy cadence."""
        interval = self.config.interval_s
        every = sample_every(interval)
        # the server ticks once before serving: the loop's first tick is one interval later
        next_at = time.monotonic() + self.phase_s + (interval if self.latest is not None else 0)
        next_sample = next_at + every
        try:
            while True:
                now = time.monotonic()
                if self.latest is None or now >= next_at:
                    async with self._ticking:
                        await self.tick()
                    next_at += interval
                    if next_at < time.monotonic():  # fell behind: do not burst to catch up
                        next_at = time.monotonic() + interval
                    next_sample = time.monotonic() + every
                elif now >= next_sample:
                    await self.source.sample(self.ledger)
                    next_sample = time.monotonic() + every
                await anyio.sleep(max(0.0, min(next_at, next_sample) - time.monotonic()))
        finally:
            with anyio.CancelScope(shield=True):
                self.ledger.maybe_save(force=True, handover=self.source.meter.handover())
                self.broker.close()
                await self.source.aclose()
                if self.actions is not None:
                    await self.actions.aclose()
