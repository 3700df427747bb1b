"""One action on many nodes: the envelope of what it did, and the fan-out that sends it.

`FleetAggregator.act` is the one caller: it hands over its workers, which already hold each
node's client, token and kind, so nothing is looked up or resolved twice. Nothing leaves the
operator's machine for a node that cannot take the action: a node whose kind cannot do it (a
bare Ollama server cannot restart itself), or that needs a token and has no usable one, fails
locally with a reason. How the action travels is the node kind's business (`kinds/`: our
agent, asiai's fleet command API, Ollama's keep_alive 0). Progress per node (queued → running
→ ok/failed) is reported through a callback so the views can paint it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from fleettui.aggregator.kinds.base import SLACK_S, NodeKind, unexpected
from fleettui.aggregator.transport.client import NodeClient
from fleettui.config import NodeConfig
from fleettui.textsafe import clean
from fleettui.wire import ActionRequest, ActionResult

__all__ = ["SLACK_S", "ActionTarget", "Envelope", "NodeOutcome", "Progress", "send"]

DEFAULT_CONCURRENCY = 32


class Progress(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


@dataclass
class NodeOutcome:
    node: str
    progress: Progress = Progress.QUEUED
    reason: str | None = None
    result: ActionResult | None = None
    duration_ms: float | None = None


@dataclass
class Envelope:
    """What a bulk action did: `{"action", "targets", "succeeded", "failed": {node: reason}}`."""

    action: str
    engine: str | None
    model: str | None
    targets: list[str]
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, NodeOutcome] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "engine": self.engine,
            "model": self.model,
            "targets": self.targets,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "results": {
                name: o.result.model_dump(mode="json") if o.result else None
                for name, o in self.outcomes.items()
            },
        }


ProgressCallback = Callable[[str, Progress, str | None], None]


class ActionTarget(Protocol):
    """What sending needs of a node: its config, the token resolved for it (or why it did
    not resolve), its kind and its one client (open while the aggregator is)."""

    @property
    def cfg(self) -> NodeConfig: ...

    @property
    def token(self) -> str | None: ...

    @property
    def token_problem(self) -> str | None:
        """Why a configured token did not resolve, when it did not."""
        ...

    @property
    def kind(self) -> NodeKind: ...

    @property
    def client(self) -> NodeClient | None: ...


async def send(
    targets: Sequence[ActionTarget],
    request: ActionRequest,
    *,
    on_progress: ProgressCallback | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> Envelope:
    """Send `request` to every target at once (at most `concurrency` in flight); never raises
    for a node's failure (it is that node's reason in the envelope)."""
    names = [t.cfg.name for t in targets]
    env = Envelope(request.action, request.engine, request.model, names)
    env.outcomes = {n: NodeOutcome(n) for n in names}

    def report(name: str, progress: Progress, reason: str | None = None) -> None:
        out = env.outcomes[name]
        out.progress = progress
        reason = clean(reason) if reason else reason  # node text, bound for a terminal
        out.reason = reason
        if progress is Progress.OK:
            env.succeeded.append(name)
        elif progress is Progress.FAILED:
            env.failed[name] = reason or "failed"
        if on_progress is not None:
            on_progress(name, progress, reason)

    async def one(target: ActionTarget) -> None:
        node, kind, token = target.cfg, target.kind, target.token
        if refusal := kind.refuse(request):
            report(node.name, Progress.FAILED, f"not sent: {refusal}")
            return
        if not token and (node.has_token or kind.needs_token):
            why = target.token_problem or "no token configured (set token_env or token_file)"
            report(node.name, Progress.FAILED, f"not sent: {why}")
            return
        async with limiter:
            report(node.name, Progress.RUNNING)
            t0 = time.perf_counter()
            try:
                client = target.client
                assert client is not None, "the aggregator opens its workers before sending"
                reason, result = await kind.act(client, node, request)
            except Exception as exc:  # one node's odd answer never ends the others' dispatch
                reason, result = unexpected(exc), None
            env.outcomes[node.name].duration_ms = round((time.perf_counter() - t0) * 1000, 1)
        env.outcomes[node.name].result = result
        if reason is None and result is not None and result.ok:
            report(node.name, Progress.OK)
        else:
            report(node.name, Progress.FAILED, reason or (result and result.error) or "failed")

    for n in names:
        report(n, Progress.QUEUED)
    limiter = anyio.CapacityLimiter(max(1, concurrency))
    async with anyio.create_task_group() as tg:
        for t in targets:
            tg.start_soon(one, t)
    # keep the envelope in the order the targets were given
    env.succeeded.sort(key=env.targets.index)
    env.failed = {k: env.failed[k] for k in env.targets if k in env.failed}
    return env
