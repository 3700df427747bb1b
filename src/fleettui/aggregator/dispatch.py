"""Send one action to many nodes at once, each with its own token and timeout.

Nothing leaves the operator's machine for a node that cannot take the action: a node whose
kind cannot do it (a bare Ollama server cannot restart itself), or that needs a token and has
no usable one, fails locally with a reason. How the action travels is the node kind's business
(`kinds/`: our agent, asiai's fleet command API, Ollama's keep_alive 0). Progress per node
(queued → running → ok/failed) is reported through a callback so the views can paint it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from fleettui.aggregator.kinds import kind_for
from fleettui.aggregator.kinds.base import SLACK_S, unexpected
from fleettui.config import NodeConfig
from fleettui.textsafe import clean
from fleettui.wire import ACTIONS, ActionResult

__all__ = ["SLACK_S", "Dispatcher", "Envelope", "NodeOutcome", "Progress"]

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


class Dispatcher:
    def __init__(
        self,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.on_progress = on_progress

    def _report(
        self, env: Envelope, name: str, progress: Progress, reason: str | None = None
    ) -> None:
        out = env.outcomes[name]
        out.progress = progress
        reason = clean(reason) if reason else reason  # node text, bound for a terminal
        out.reason = reason
        if progress is Progress.OK:
            env.succeeded.append(name)
        elif progress is Progress.FAILED:
            env.failed[name] = reason or "failed"
        if self.on_progress is not None:
            self.on_progress(name, progress, reason)

    async def dispatch(
        self,
        nodes: Sequence[NodeConfig],
        action: str,
        engine: str | None = None,
        model: str | None = None,
    ) -> Envelope:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        env = Envelope(action, engine, model, [n.name for n in nodes])
        env.outcomes = {n.name: NodeOutcome(n.name) for n in nodes}
        for n in nodes:
            self._report(env, n.name, Progress.QUEUED)
        limiter = anyio.CapacityLimiter(max(1, self.concurrency))
        async with anyio.create_task_group() as tg:
            for n in nodes:
                tg.start_soon(self._one, env, n, limiter)
        # keep the envelope in the order the targets were given
        env.succeeded.sort(key=env.targets.index)
        env.failed = {k: env.failed[k] for k in env.targets if k in env.failed}
        return env

    async def _one(self, env: Envelope, node: NodeConfig, limiter: anyio.CapacityLimiter) -> None:
        kind = kind_for(node.kind)
        if refusal := kind.refuse(env.action, env.engine, env.model):
            self._report(env, node.name, Progress.FAILED, f"not sent: {refusal}")
            return
        token = await anyio.to_thread.run_sync(node.resolve_token) if node.has_token else None
        if not token and (node.has_token or kind.needs_token):
            why = node.token_problem() or "no token configured (set token_env or token_file)"
            self._report(env, node.name, Progress.FAILED, f"not sent: {why}")
            return
        async with limiter:
            self._report(env, node.name, Progress.RUNNING)
            t0 = time.perf_counter()
            try:
                reason, result = await kind.act(node, token, env.action, env.engine, env.model)
            except Exception as exc:  # one node's odd answer never ends the others' dispatch
                reason, result = unexpected(exc), None
            env.outcomes[node.name].duration_ms = round((time.perf_counter() - t0) * 1000, 1)
        env.outcomes[node.name].result = result
        if reason is None and result is not None and result.ok:
            self._report(env, node.name, Progress.OK)
        else:
            self._report(
                env, node.name, Progress.FAILED, reason or (result and result.error) or "failed"
            )
