"""Prometheus exposition of the latest snapshot (read at scrape time, nothing cached twice)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from fleettui.wire import NodeSnapshot

MB = 1024 * 1024
PREFIX = "fleet"


class SnapshotCollector(Collector):
    def __init__(self, latest: callable[[], NodeSnapshot | None]) -> None:  # type: ignore[valid-type]
        self._latest = latest

    def collect(self) -> Iterator[object]:
        s: NodeSnapshot | None = self._latest()
        if s is None:
            return
        p = PREFIX
        info = InfoMetricFamily(f"{p}_agent", "Agent and host identity", labels=[])
        info.add_metric(
            [],
            {
                "hostname": s.node.hostname,
                "version": s.node.agent_version,
                "os": s.node.os,
                "arch": s.node.arch,
                "simulated": str(s.node.simulated).lower(),
            },
        )
        yield info
        if s.power.watts is not None:
            g = GaugeMetricFamily(
                f"{p}_power_watts", "Current power draw of the measured sources", labels=["source"]
            )
            g.add_metric([s.power.source], s.power.watts)
            yield g
        c = CounterMetricFamily(
            f"{p}_energy_joules", "Energy integrated by the agent since its state began"
        )
        c.add_metric([], s.power.energy_wh_total * 3600.0)
        yield c
        if s.cpu.percent is not None:
            yield GaugeMetricFamily(
                f"{p}_cpu_utilization_ratio", "CPU utilisation 0-1", value=s.cpu.percent / 100
            )
        if s.memory.total_mb is not None:
            yield GaugeMetricFamily(
                f"{p}_memory_total_bytes", "Physical memory", value=s.memory.total_mb * MB
            )
        if s.memory.used_mb is not None:
            yield GaugeMetricFamily(
                f"{p}_memory_used_bytes", "Memory not available", value=s.memory.used_mb * MB
            )
        labels = ["gpu", "name", "uuid"]
        fams = {
            "mem_used": GaugeMetricFamily(
                f"{p}_gpu_memory_used_bytes", "GPU memory used", labels=labels
            ),
            "mem_total": GaugeMetricFamily(
                f"{p}_gpu_memory_total_bytes", "GPU memory total", labels=labels
            ),
            "util": GaugeMetricFamily(
                f"{p}_gpu_utilization_ratio", "GPU utilisation 0-1", labels=labels
            ),
            "power": GaugeMetricFamily(f"{p}_gpu_power_watts", "GPU power draw", labels=labels),
            "temp": GaugeMetricFamily(
                f"{p}_gpu_temperature_celsius", "GPU temperature", labels=labels
            ),
        }
        energy = CounterMetricFamily(
            f"{p}_gpu_energy_joules", "GPU energy since driver load", labels=labels
        )
        for gpu in s.gpus:
            lv = [str(gpu.index), gpu.name, gpu.uuid or ""]
            for key, val, scale in (
                ("mem_used", gpu.memory_used_mb, MB),
                ("mem_total", gpu.memory_total_mb, MB),
                ("util", gpu.util_pct, 0.01),
                ("power", gpu.power_w, 1),
                ("temp", gpu.temp_c, 1),
            ):
                if val is not None:
                    fams[key].add_metric(lv, val * scale)
            if gpu.energy_j is not None:
                energy.add_metric(lv, gpu.energy_j)
        yield from fams.values()
        yield energy
        up = GaugeMetricFamily(
            f"{p}_engine_up", "1 when the engine answers its probe", labels=["engine", "url"]
        )
        loaded = GaugeMetricFamily(
            f"{p}_model_loaded", "1 per resident model", labels=["engine", "model"]
        )
        vram = GaugeMetricFamily(
            f"{p}_model_vram_bytes",
            "GPU memory held by a resident model",
            labels=["engine", "model"],
        )
        for eng in s.engines:
            up.add_metric([eng.name, eng.url], 1.0 if eng.status == "up" else 0.0)
            for m in eng.models:
                loaded.add_metric([eng.name, m.name], 1.0)
                if m.vram_mb is not None:
                    vram.add_metric([eng.name, m.name], m.vram_mb * MB)
        yield up
        yield loaded
        yield vram
        cur = [s.cost.currency]
        today = GaugeMetricFamily(
            f"{p}_cost_today", "Energy cost so far today", labels=["currency"]
        )
        today.add_metric(cur, s.cost.today)
        week = GaugeMetricFamily(
            f"{p}_cost_7d", "Energy cost over the last 7 days", labels=["currency"]
        )
        week.add_metric(cur, s.cost.total_7d)
        price = GaugeMetricFamily(
            f"{p}_price_per_kwh", "Configured electricity price", labels=["currency"]
        )
        price.add_metric(cur, s.cost.price_per_kwh)
        yield today
        yield week
        yield price
        yield GaugeMetricFamily(
            f"{p}_audit_seq", "Newest audit log sequence number", value=s.audit.seq
        )
        yield GaugeMetricFamily(
            f"{p}_problems", "Number of current problems", value=len(s.problems)
        )


def registry_for(latest) -> CollectorRegistry:  # type: ignore[no-untyped-def]
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(latest))
    return reg


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
