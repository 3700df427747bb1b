"""What the aggregator hands the views: plain, copyable values, never its internals."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from fleettui.wire import NodeSnapshot


class NodeState(enum.StrEnum):
    INITIALIZING = "INITIALIZING"
    ONLINE = "ONLINE"
    DEGRADED = "DEGRADED"
    OFFLINE = "OFFLINE"


class ChainStatus(enum.StrEnum):
    OK = "ok"
    BROKEN = "BROKEN"
    UNKNOWN = "?"
    NOT_APPLICABLE = "n/a"


@dataclass
class NodeView:
    """One node as the views see it. `snapshots()` returns deep copies of these."""

    name: str
    url: str
    role: str = ""
    tags: list[str] = field(default_factory=list)
    has_token: bool = False
    state: NodeState = NodeState.INITIALIZING
    reasons: list[str] = field(default_factory=list)  # why DEGRADED / OFFLINE
    snapshot: NodeSnapshot | None = None
    latency_ms: float | None = None  # last snapshot request round trip
    last_seen: float | None = None  # unix time of the last good answer
    last_error: str | None = None
    power_history: list[float] = field(default_factory=list)  # ~2 min of watts, oldest first
    cost_daily: list[float] = field(default_factory=list)  # 7 days, oldest first
    chain: ChainStatus = ChainStatus.UNKNOWN
    chain_detail: str | None = None  # e.g. "seq 12: hash mismatch"
    stream_ok: bool = False  # SSE stream connected and delivering
    version: int = 0  # bumped on every change, so views can skip unchanged rows
    kind: str = "fleettui"  # fleettui | asiai | ollama (from the fleet config)
    retry_at: float | None = None  # unix time of the next attempt while OFFLINE (backoff)


@dataclass(frozen=True)
class FleetEvent:
    """One entry of the merged event stream the views show in their event log."""

    ts: float
    node: str
    kind: str  # "snapshot" | "action" | "audit" | "state" | "error"
    summary: str  # one human line, e.g. "ONLINE -> OFFLINE: connection refused"
    data: dict | None = None
