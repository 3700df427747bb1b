"""Prometheus exposition of the latest snapshot (read at scrape time, nothing cached twice).

The families and their names live in fleettui.promtext (shared with `fleet export`); this
module hands them to prometheus_client, adds the process's own metrics from its collectors,
and lets the scraper's Accept header pick text 0.0.4 or OpenMetrics. See docs/prometheus.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
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


class _Shared(Collector):
    """prometheus_client's process, platform and GC collectors (one per process, registered
    on its default registry) shown on every node's page too."""

    def collect(self) -> Iterator[object]:
        for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            yield from c.collect()


def registry_for(latest: Callable[[], NodeSnapshot | None]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(latest))
    reg.register(_Shared())
    return reg


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The page and its content type: OpenMetrics when the scraper asks for it, else text."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
