"""`kind = "fleettui"`: a node running `fleet agent serve` (the wire contract in docs/agent-api.md).

The only kind with an event stream and a hash-chained audit log; the agent validates every
action itself, so nothing is checked here beyond having a token.
"""

from __future__ import annotations

from pydantic import ValidationError

from fleettui.aggregator.kinds.base import NodeKind, Sent, describe_validation
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.errors import FetchError
from fleettui.config import NodeConfig
from fleettui.wire import ActionRequest, ActionResult, NodeSnapshot

SNAPSHOT_PATH = "/api/v1/snapshot"
ACTIONS_PATH = "/api/v1/actions"


class FleettuiKind(NodeKind):
    name = "fleettui"
    streams = True
    audited = True
    keeps_books = True
    needs_token = True

    async def fetch_snapshot(self, client: NodeClient, url: str, timeout_s: float) -> NodeSnapshot:
        body = await client.get(SNAPSHOT_PATH, timeout_s=timeout_s)
        try:
            return NodeSnapshot.model_validate_json(body)
        except ValidationError as exc:
            raise FetchError(f"bad snapshot: {describe_validation(exc)}", reachable=True) from None

    async def act(
        self,
        client: NodeClient,
        node: NodeConfig,
        req: ActionRequest,
    ) -> Sent:
        body = req.body()  # only what is set: an agent from before `load` reads the rest
        try:
            reply = await client.post(
                ACTIONS_PATH, body, timeout_s=self.action_timeout_s(req.action)
            )
        except FetchError as exc:
            return exc.reason, None
        if reply.status != 200:
            result = None
            if reply.status < 500:
                try:
                    result = ActionResult.model_validate_json(reply.body)
                except ValidationError:
                    pass
            return reply.reason, result
        try:
            result = ActionResult.model_validate_json(reply.body)
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
