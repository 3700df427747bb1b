"""`kind = "fleettui"`: a node running `fleet agent serve` (the wire contract in docs/agent-api.md).

The only kind with an event stream and a hash-chained audit log; the agent validates every
action itself, so nothing is checked here beyond having a token.
"""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from fleettui.aggregator.http import FetchError, get_capped, make_client
from fleettui.aggregator.kinds.base import (
    NodeKind,
    Sent,
    describe_validation,
    error_reason,
    json_or_none,
    post_capped,
    transport_reason,
)
from fleettui.config import NodeConfig
from fleettui.wire import ActionResult, NodeSnapshot

SNAPSHOT_PATH = "/api/v1/snapshot"
ACTIONS_PATH = "/api/v1/actions"


class FleettuiKind(NodeKind):
    name = "fleettui"
    streams = True
    audited = True
    needs_token = True

    async def fetch_snapshot(
        self, client: httpx.AsyncClient, url: str, timeout_s: float
    ) -> NodeSnapshot:
        body = await get_capped(client, SNAPSHOT_PATH, timeout_s=timeout_s)
        try:
            return NodeSnapshot.model_validate_json(body)
        except ValidationError as exc:
            raise FetchError(f"bad snapshot: {describe_validation(exc)}", reachable=True) from None

    async def act(
        self,
        node: NodeConfig,
        token: str | None,
        action: str,
        engine: str | None,
        model: str | None,
    ) -> Sent:
        timeout = self.action_timeout_s(action)
        body = {"action": action, "engine": engine, "model": model}
        try:
            async with make_client(node.url, token, timeout) as client:
                status, headers, raw = await post_capped(
                    client, ACTIONS_PATH, body, timeout_s=timeout
                )
        except httpx.HTTPError as exc:
            return transport_reason(exc, timeout), None
        except ValueError as exc:
            return str(exc), None
        if status != 200:
            result = None
            if status < 500:
                try:
                    result = ActionResult.model_validate_json(raw)
                except ValidationError:
                    pass
            return error_reason(status, json_or_none(raw), headers), result
        try:
            result = ActionResult.model_validate_json(raw)
        except ValidationError:
            return "answer is not an action result", None
        if not result.ok:
            return failure_reason(result), result
        return None, result


def failure_reason(result: ActionResult) -> str:
    """`exited with status 1: Job for ollama.service failed` from a failed result."""
    tail = result.output_tail.strip().splitlines()[-1:] if result.output_tail else []
    detail = result.error or (
        f"exit {result.exit_code}" if result.exit_code is not None else "failed"
    )
    line = tail[0].strip()[:160] if tail else ""
    if not line or line in detail:  # the engine's message is often the error itself
        return detail
    return line if detail in line else f"{detail}: {line}"


KIND = FleettuiKind()
