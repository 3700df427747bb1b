"""Prometheus metric families of a NodeSnapshot, and their one renderer (prometheus_client).

Both the agent's `/metrics` and `fleet export` (one merged page for the whole fleet) build
their families here and render them through prometheus_client (text 0.0.4, or OpenMetrics
when the scraper asks), so every metric name is defined once and docs/prometheus.md can be
checked against this module. Names follow the
Prometheus conventions: prefix `fleet_`, base units (`_bytes`, `_watts`, `_joules`, `_seconds`,
`_ratio` for 0-1), counters end in `_total`, identity in an `_info` gauge that is always 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from fleettui.wire import NodeSnapshot

MB = 1024 * 1024
GPU_LABELS = ("gpu", "name", "uuid")


@dataclass
class Family:
    """One metric family. `name` is the sample name as exposed (`..._total` for counters)."""

    name: str
    type: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    created: float | None = None  # a counter's start (OpenMetrics `_created`), agent page only

    def add(self, values: Sequence[str], value: float) -> None:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name}: {len(values)} label values for {self.labels}")
        self.samples.append((tuple(values), float(value)))

    def unique(self) -> list[tuple[tuple[str, ...], float]]:
        """Samples with a repeated label set dropped (a scrape must not repeat a series)."""
        seen: set[tuple[str, ...]] = set()
        out = []
        for values, v in self.samples:
            if values not in seen:
                seen.add(values)
                out.append((values, v))
        return out


def _gauge(name: str, help: str, labels: tuple[str, ...] = ()) -> Family:
    return Family(name, "gauge", help, labels)


def _one(name: str, help: str, value: float | None, scale: float = 1.0) -> list[Family]:
    """A label-less gauge, or nothing when the value was not measured."""
    if value is None:
        return []
    f = _gauge(name, help)
    f.add((), value * scale)
    return [f]


def snapshot_families(s: NodeSnapshot, *, agent: bool = True) -> list[Family]:
    """Every family one snapshot yields, in a fixed order.

    `agent` says the snapshot came from a fleettui agent: energy, cost and the audit head are
    its own bookkeeping, which other node kinds leave at their defaults, so they are left out.
    """
    out: list[Family] = []
    info = _gauge(
        "fleet_agent_info",
        "Identity of the node and of what reports it (always 1)",
        ("hostname", "version", "os", "arch", "simulated"),
    )
    n = s.node
    info.add((n.hostname, n.agent_version, n.os, n.arch, str(n.simulated).lower()), 1)
    out.append(info)
    out += _one(
        "fleet_snapshot_timestamp_seconds", "When the node collected this snapshot (Unix)", s.ts
    )
    boot = n.boot_time if n.boot_time is not None else (s.ts - n.uptime_s if n.uptime_s else None)
    out += _one(
        "fleet_boot_time_seconds",
        "When the host booted (Unix)",
        round(boot) if boot is not None else None,
    )
    out += _power_families(s, agent)
    out += _one(
        "fleet_cpu_utilization_ratio",
        "Whole-machine CPU utilisation, 0-1",
        s.cpu.percent,
        0.01,
    )
    out += _one("fleet_cpu_cores", "Logical CPU count", s.cpu.cores)
    out += _one("fleet_memory_total_bytes", "Physical memory", s.memory.total_mb, MB)
    out += _one("fleet_memory_used_bytes", "Memory not available", s.memory.used_mb, MB)
    out += _one(
        "fleet_memory_unavailable_ratio",
        "Share of memory not available (used / total), 0-1; not PSI",
        s.memory.pressure_pct,
        0.01,
    )
    if s.memory.stall_s_total is not None:
        stall = Family(
            "fleet_memory_pressure_stalled_seconds_total",
            "counter",
            "Linux PSI: time some task waited for memory (/proc/pressure/memory some total)",
        )
        stall.add((), s.memory.stall_s_total)
        out.append(stall)
    out += _mac_families(s)
    out += _gpu_families(s)
    out += _engine_families(s)
    out += _budget_families(s)
    if agent:
        out += _cost_families(s)
        a = Family(
            "fleet_audit_entries_total", "counter", "Entries in the node's hash-chained audit log"
        )
        a.add((), s.audit.seq)
        out.append(a)
    problems = _gauge("fleet_problems", "Problems the node reports about itself")
    problems.add((), len(s.problems))
    out.append(problems)
    return out


def _mac_families(s: NodeSnapshot) -> list[Family]:
    """What macOS says of memory and heat (agent/collect/macos.py); absent elsewhere."""
    m = s.memory
    out = _one(
        "fleet_memory_swap_used_bytes", "Swap in use (macOS vm.swapusage)", m.swap_used_mb, MB
    )
    out += _one(
        "fleet_memory_swap_total_bytes", "Swap size (macOS vm.swapusage)", m.swap_total_mb, MB
    )
    if m.pressure_level is not None:
        level = _gauge(
            "fleet_memory_pressure_info",
            "macOS memory pressure (kern.memorystatus_vm_pressure_level); 1 for the level now",
            ("level",),
        )
        level.add((m.pressure_level,), 1)
        out.append(level)
    if s.cpu.thermal is not None:
        thermal = _gauge(
            "fleet_thermal_info",
            "Thermal pressure as macOS records it (pmset -g therm)",
            ("state",),
        )
        thermal.add((s.cpu.thermal,), 1)
        out.append(thermal)
    return out


def _power_families(s: NodeSnapshot, agent: bool) -> list[Family]:
    """Power and energy of the node's declared scope. Scope and source sit on an info metric,
    so the value's series stays one series when a source appears or changes."""
    p = s.power
    out: list[Family] = []
    if p.watts is None and not p.parts:
        return out
    info = _gauge(
        "fleet_power_info",
        "What fleet_power_watts and fleet_energy_joules_total cover and how they are measured "
        "(always 1)",
        ("scope", "source"),
    )
    info.add((p.scope, p.source), 1)
    out.append(info)
    out += _one(
        "fleet_power_watts",
        "Current power draw of the node's scope (see fleet_power_info)",
        p.watts,
    )
    if agent:
        e = Family(
            "fleet_energy_joules_total",
            "counter",
            "Energy of the node's scope since the agent process started (see fleet_power_info)",
            created=p.energy_since,
        )
        e.add((), p.energy_j)
        out.append(e)
    return out


def _gpu_families(s: NodeSnapshot) -> list[Family]:
    fams = {
        "used": _gauge("fleet_gpu_memory_used_bytes", "GPU memory in use", GPU_LABELS),
        "total": _gauge("fleet_gpu_memory_total_bytes", "GPU memory in total", GPU_LABELS),
        "util": _gauge("fleet_gpu_utilization_ratio", "GPU utilisation, 0-1", GPU_LABELS),
        "power": _gauge("fleet_gpu_power_watts", "GPU board power draw (NVML)", GPU_LABELS),
        "temp": _gauge("fleet_gpu_temperature_celsius", "GPU temperature", GPU_LABELS),
        "attributed": _gauge(
            "fleet_gpu_memory_attributed_bytes",
            "GPU memory held by processes attributed to an engine (NVML per process)",
            GPU_LABELS,
        ),
        "other": _gauge(
            "fleet_gpu_memory_other_bytes",
            "GPU memory in use that no engine accounts for (used - attributed)",
            GPU_LABELS,
        ),
    }
    by_engine = _gauge(
        "fleet_gpu_process_memory_bytes",
        "GPU memory an engine's processes hold (NVML per process, summed per engine)",
        (*GPU_LABELS, "engine"),
    )
    energy = Family(
        "fleet_gpu_energy_joules_total",
        "counter",
        "GPU energy since the driver loaded (NVML, Volta or newer)",
        GPU_LABELS,
    )
    for g in s.gpus:
        lv = (str(g.index), g.name, g.uuid or "")
        for key, val, scale in (
            ("used", g.memory_used_mb, MB),
            ("total", g.memory_total_mb, MB),
            ("util", g.util_pct, 0.01),
            ("power", g.power_w, 1.0),
            ("temp", g.temp_c, 1.0),
            ("attributed", g.attributed_mb, MB),
            ("other", g.other_mb, MB),
        ):
            if val is not None:
                fams[key].add(lv, val * scale)
        if g.energy_j is not None:
            energy.add(lv, g.energy_j)
        held: dict[str, float] = {}
        for p in g.processes:
            if p.engine is not None:
                held[p.engine] = held.get(p.engine, 0.0) + (p.used_mb or 0.0)
        for engine, mb in held.items():
            by_engine.add((*lv, engine), mb * MB)
    return [*fams.values(), energy, by_engine]


BUDGET_PARTS = ("total", "used", "engines", "other", "free")


def _budget_families(s: NodeSnapshot) -> list[Family]:
    """The node's memory budget: what bounds it on an info metric (so the parts stay the same
    series when the binding limit changes), its parts by label, RAM for a partial offload."""
    b = s.budget
    if b is None:
        return []
    info = _gauge(
        "fleet_budget_info",
        "What bounds the memory a model can use on the node: kind (gpu, unified, ram) and "
        "the limit that binds (always 1)",
        ("kind", "limit"),
    )
    info.add((b.kind, b.limit), 1)
    parts = _gauge(
        "fleet_budget_bytes",
        "The node's model memory budget by part: total, used, engines (resident models), "
        "other (used by nobody accounted), free",
        ("part",),
    )
    for part in BUDGET_PARTS:
        parts.add((part,), getattr(b, f"{part}_mb") * MB)
    out = [info, parts]
    out += _one(
        "fleet_budget_ram_free_bytes",
        "RAM available for a model's layers offloaded to the CPU",
        b.ram_free_mb,
        MB,
    )
    return out


def _engine_families(s: NodeSnapshot) -> list[Family]:
    up = _gauge("fleet_engine_up", "1 when the engine answers its probe, else 0", ("engine", "url"))
    loaded = _gauge("fleet_model_loaded", "1 per resident model", ("engine", "model"))
    vram = _gauge(
        "fleet_model_vram_bytes", "GPU memory a resident model holds", ("engine", "model")
    )
    for eng in s.engines:
        up.add((eng.name, eng.url), 1.0 if eng.status == "up" else 0.0)
        for m in eng.models:
            loaded.add((eng.name, m.name), 1.0)
            if m.vram_mb is not None:
                vram.add((eng.name, m.name), m.vram_mb * MB)
    return [up, loaded, vram]


def _cost_families(s: NodeSnapshot) -> list[Family]:
    """Cost as a counter in the currency's major unit (EUR, not cents); the currency is a label
    of a constant info metric, so one metric name serves a fleet priced in several currencies
    and windows come from PromQL (`increase`), not from the agent's local midnight."""
    info = _gauge(
        "fleet_cost_info",
        "Currency of fleet_energy_cost_total and the price (always 1)",
        ("currency",),
    )
    info.add((s.cost.currency,), 1)
    total = Family(
        "fleet_energy_cost_total",
        "counter",
        "Cost of fleet_energy_joules_total at each day's price, in the currency's major unit",
        created=s.power.energy_since,
    )
    total.add((), s.cost.since_start)
    price = _gauge(
        "fleet_energy_price_per_kwh", "Today's configured electricity price per kWh (currency)"
    )
    price.add((), s.cost.price_per_kwh)
    return [info, total, price]


def labelled(families: Iterable[Family], label: str, value: str) -> list[Family]:
    """The same families with `label="value"` put first on every sample."""
    return [
        Family(
            f.name,
            f.type,
            f.help,
            (label, *f.labels),
            [((value, *lv), v) for lv, v in f.samples],
        )
        for f in families
    ]


def merge(groups: Iterable[Iterable[Family]]) -> list[Family]:
    """One family per name, samples concatenated in order: each family is declared once."""
    by_name: dict[str, Family] = {}
    for group in groups:
        for f in group:
            have = by_name.get(f.name)
            if have is None:
                by_name[f.name] = Family(f.name, f.type, f.help, f.labels, list(f.samples))
            elif (have.type, have.labels) != (f.type, f.labels):
                raise ValueError(f"{f.name}: declared twice with different types or labels")
            else:
                have.samples.extend(f.samples)
    return list(by_name.values())


def metric_families(families: Iterable[Family]) -> Iterator[Metric]:
    """The families as prometheus_client's, which renders text 0.0.4 and OpenMetrics."""
    for f in families:
        if f.type == "counter":
            fam: CounterMetricFamily | GaugeMetricFamily = CounterMetricFamily(
                f.name, f.help, labels=list(f.labels)
            )
            for values, value in f.unique():
                fam.add_metric(list(values), value, created=f.created)
        else:
            fam = GaugeMetricFamily(f.name, f.help, labels=list(f.labels))
            for values, value in f.unique():
                fam.add_metric(list(values), value)
        yield fam


class FamilyCollector(Collector):
    """A prometheus_client collector of the families `families()` gives at scrape time."""

    def __init__(self, families: Callable[[], Iterable[Family]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self._families())


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The page and its content type: OpenMetrics when the scraper asks for it, else text."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
