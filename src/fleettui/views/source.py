"""What the views read: the slice of FleetAggregator they depend on, as a Protocol.

The dashboard, the Rich view and the snapshot tests all take a `FleetSource`, so the tests and
screenshots can hand them a fixed-data fake while `fleet` hands them the real aggregator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol, runtime_checkable

from fleettui.aggregator.state import FleetEvent, NodeView
from fleettui.wire import AuditEntry


@runtime_checkable
class FleetSource(Protocol):
    @property
    def generation(self) -> int:
        """Bumped whenever any node changed."""
        ...

    def snapshots(self) -> list[NodeView]:
        """Deep copies of every node, in config order."""
        ...

    def node(self, name: str) -> NodeView | None: ...

    def events(self, kinds: Iterable[str] | None = None) -> AsyncIterator[FleetEvent]:
        """The merged event stream of every node (never ends while the source runs);
        `kinds` keeps only those event kinds."""
        ...

    async def wait_changed(self, after: int, timeout: float) -> int:
        """Return the generation once it differs from `after`, or after `timeout` seconds."""
        ...

    async def fetch_audit(self, name: str, limit: int = 20) -> list:
        """The node's newest audit entries (AuditEntry), newest last."""
        ...


__all__ = ["AuditEntry", "FleetEvent", "FleetSource", "NodeView"]
