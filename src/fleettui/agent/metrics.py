"""Prometheus exposition of the latest snapshot (read at scrape time, nothing cached twice).

The families and their names live in fleettui.promtext (shared with `fleet export`); this
module only hands them to prometheus_client. See docs/prometheus.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fleettui.promtext import snapshot_families
from fleettui.wire import NodeSnapshot


class SnapshotCollector(Collector):
    def __init__(self, latest: Callable[[], NodeSnapshot | None]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[object]:
        s: NodeSnapshot | None = self._latest()
        if s is None:
            return
        for f in snapshot_families(s):
            cls = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
            fam = cls(f.name, f.help, labels=list(f.labels))
            for values, value in f.unique():
                fam.add_metric(list(values), value)
            yield fam


def registry_for(latest: Callable[[], NodeSnapshot | None]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(latest))
    return reg


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
