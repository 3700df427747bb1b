"""Prometheus exposition of the latest snapshot (read at scrape time, nothing cached twice).

The families, their names and the renderer live in fleettui.promtext (shared with `fleet
export`); this module adds the process's own metrics from prometheus_client's collectors.
See docs/prometheus.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.registry import Collector

from fleettui.promtext import FamilyCollector, snapshot_families
from fleettui.wire import NodeSnapshot


class _Shared(Collector):
    """prometheus_client's process, platform and GC collectors (one per process, registered
    on its default registry) shown on every node's page too."""

    def collect(self) -> Iterator[object]:
        for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            yield from c.collect()


def registry_for(latest: Callable[[], NodeSnapshot | None]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FamilyCollector(lambda: snapshot_families(s) if (s := latest()) else []))
    reg.register(_Shared())
    return reg
