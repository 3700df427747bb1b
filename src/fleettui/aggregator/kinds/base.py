"""The one interface every node kind implements, and the checks the kinds share.

A kind says how to read a node (its JSON mapped onto NodeSnapshot), what it has beyond polling
(an event stream, a verifiable audit chain), and how one action is sent to it, always through
the node's one client (`transport.client.NodeClient`). The aggregator and the dispatcher only
talk to this interface, so a new kind is one module in this package.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import ClassVar

from pydantic import ValidationError

from fleettui.aggregator.transport.client import NodeClient
from fleettui.config import NodeConfig
from fleettui.wire import ACTION_TIMEOUTS_S, ActionRequest, ActionResult, NodeSnapshot

log = logging.getLogger(__name__)
SLACK_S = 10.0  # the node's own action timeout plus time to answer

# (reason when it failed or None, the node's result when it sent one)
Sent = tuple[str | None, ActionResult | None]


class NodeKind(ABC):
    """How fleet reads and acts on one sort of node."""

    name: ClassVar[str]
    streams: ClassVar[bool] = False  # serves the fleettui SSE stream (GET /api/v1/events)
    audited: ClassVar[bool] = False  # keeps a hash-chained audit log fleet can verify
    needs_token: ClassVar[bool] = True  # actions are refused locally without one
    # keeps its own energy, cost and audit books (our agent): other kinds leave them at zero
    keeps_books: ClassVar[bool] = False

    @abstractmethod
    async def fetch_snapshot(self, client: NodeClient, url: str, timeout_s: float) -> NodeSnapshot:
        """One poll; raises transport.errors.FetchError with a reason the operator can act on."""

    def refuse(self, req: ActionRequest) -> str | None:
        """Why this action cannot be sent to such a node at all (checked before any I/O); the
        request itself is valid (wire.ActionRequest), this is what the kind cannot do."""
        return None

    def action_timeout_s(self, action: str) -> float:
        return ACTION_TIMEOUTS_S[action] + SLACK_S

    @abstractmethod
    async def act(
        self,
        client: NodeClient,
        node: NodeConfig,
        req: ActionRequest,
    ) -> Sent:
        """Send one action; never raises for a network or node failure (it is the reason)."""


# pydantic error types of the wire's bounds (finite, in range, not too long): a value, not a shape
OUT_OF_BOUNDS = frozenset(
    {
        "finite_number",
        "greater_than_equal",
        "less_than_equal",
        "string_too_long",
        "too_long",
    }
)


def describe_validation(exc: ValidationError) -> str:
    """`invalid JSON: ...`, `wrong shape: node.hostname: Field required (+2 more)` or
    `out of bounds: power.watts: Input should be a finite number`."""
    errs = exc.errors()
    first = errs[0]
    if first["type"] == "json_invalid":
        return f"invalid JSON ({first['msg'].removeprefix('Invalid JSON: ')})"
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    what = "out of bounds" if first["type"] in OUT_OF_BOUNDS else "wrong shape"
    return f"{what}: {loc}: {first['msg']}{more}"


def unexpected(exc: Exception) -> str:
    """The reason for an exception nothing foresaw. Whatever caused it (input no wire rule
    caught, a bug in a kind), it happened to one node, so it is that node's reason, never an
    exception past its worker or its dispatch."""
    log.debug("unexpected %s", type(exc).__name__, exc_info=exc)
    return f"unusable answer ({type(exc).__name__}: {exc})"[:300]
