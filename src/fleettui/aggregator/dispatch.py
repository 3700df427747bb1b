"""Send one action to many nodes at once, each with its own token and timeout.

Nothing leaves the operator's machine for a node that cannot be authenticated: a node without
a usable token fails locally with a reason. Progress per node (queued → running → ok/failed) is
reported through a callback so the views can paint it as it happens.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import httpx
from pydantic import ValidationError

from fleettui.aggregator.http import make_client
from fleettui.config import NodeConfig
from fleettui.wire import ACTION_TIMEOUTS_S, ACTIONS, ActionResult

DEFAULT_CONCURRENCY = 32
SLACK_S = 10.0  # the agent's own timeout plus time to answer


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


def _reason_from_error_body(r: httpx.Response) -> str:
    try:
        body = r.json()
        msg = body.get("error") if isinstance(body, dict) else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        msg = None
    reason = f"HTTP {r.status_code}"
    if msg:
        reason += f": {str(msg)[:200]}"
    if r.status_code == 429 and (after := r.headers.get("retry-after")):
        reason += f" (retry after {after} s)"
    return reason


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
        if node.kind != "fleettui":
            self._report(
                env, node.name, Progress.FAILED, f"actions on {node.kind} nodes are not supported"
            )
            return
        token = await anyio.to_thread.run_sync(node.resolve_token)
        if not token:
            why = node.token_problem() or "no token configured (set token_env or token_file)"
            self._report(env, node.name, Progress.FAILED, f"not sent: {why}")
            return
        async with limiter:
            self._report(env, node.name, Progress.RUNNING)
            t0 = time.perf_counter()
            reason, result = await self._post(node, token, env)
            env.outcomes[node.name].duration_ms = round((time.perf_counter() - t0) * 1000, 1)
        env.outcomes[node.name].result = result
        if reason is None and result is not None and result.ok:
            self._report(env, node.name, Progress.OK)
        else:
            self._report(
                env, node.name, Progress.FAILED, reason or (result and result.error) or "failed"
            )

    async def _post(
        self, node: NodeConfig, token: str, env: Envelope
    ) -> tuple[str | None, ActionResult | None]:
        timeout = ACTION_TIMEOUTS_S[env.action] + SLACK_S
        body = {"action": env.action, "engine": env.engine, "model": env.model}
        try:
            async with make_client(node.url, token, timeout) as client:
                r = await client.post("/api/v1/actions", json=body)
        except httpx.ConnectError:
            return "connection refused", None
        except httpx.TimeoutException:
            return f"no answer within {timeout:g} s", None
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:200], None
        if r.status_code != 200:
            result = None
            if r.status_code < 500:
                try:
                    result = ActionResult.model_validate_json(r.content)
                except ValidationError:
                    pass
            return _reason_from_error_body(r), result
        try:
            result = ActionResult.model_validate_json(r.content)
        except ValidationError:
            return "answer is not an action result", None
        if not result.ok:
            tail = result.output_tail.strip().splitlines()[-1:] if result.output_tail else []
            detail = result.error or (
                f"exit {result.exit_code}" if result.exit_code is not None else "failed"
            )
            return (f"{detail}: {tail[0][:160]}" if tail else detail), result
        return None, result
