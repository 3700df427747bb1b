"""What the views read and ask: the slice of FleetAggregator they depend on, as a Protocol.

The dashboard, the Rich view and the snapshot tests all take a `FleetSource`, so the tests and
screenshots can hand them a fixed-data fake while `fleet` hands them the real aggregator. It is
the views' one door to the nodes: reading, the audit log and actions all go through it, so no
view needs the fleet config, a token or a client of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from fleettui.aggregator.dispatch import Envelope, Progress, ProgressCallback
from fleettui.aggregator.fitwatch import FitWatch
from fleettui.aggregator.state import FleetEvent, NodeView
from fleettui.capacity.fit import FitRequest
from fleettui.wire import ActionRequest, AuditEntry


@runtime_checkable
class FleetSource(Protocol):
    @property
    def generation(self) -> int:
        """Bumped whenever any node changed."""
        ...

    @property
    def names(self) -> list[str]:
        """Every node's name, in config order."""
        ...

    @property
    def config_warnings(self) -> list[str]:
        """What loading the fleet config warned about (shown in a banner and the event log)."""
        ...

    @property
    def skipped(self) -> int:
        """How many config entries were not loaded."""
        ...

    def snapshots(self) -> list[NodeView]:
        """Deep copies of every node, in config order."""
        ...

    def changed(self, known: Mapping[str, int]) -> list[NodeView]:
        """Copies of the nodes whose `version` differs from `known` (name -> version)."""
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

    async def act(
        self,
        names: Sequence[str],
        request: ActionRequest,
        on_progress: ProgressCallback | None = None,
    ) -> Envelope:
        """Send one action to the named nodes; per-node progress goes to `on_progress`."""
        ...

    def set_fit(self, request: FitRequest | None, *, strategy: str = "binpack") -> FitWatch | None:
        """Ask whether a model fits on every node (None: stop asking); from then on each
        view's `fit` answers it and its `placement` scores it by `strategy`, recomputed on
        every snapshot (aggregator/fitwatch.py, aggregator/placement.py)."""
        ...


__all__ = [
    "AuditEntry",
    "Envelope",
    "FitRequest",
    "FitWatch",
    "FleetEvent",
    "FleetSource",
    "NodeView",
    "Progress",
]
