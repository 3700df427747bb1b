"""FleetAggregator.act against real agents: real auth, real audit, real runner, one dead port."""

from __future__ import annotations

import httpx
import pytest

from actionfleet import ActionFleet, send_action
from fleettui.aggregator.dispatch import Progress
from fleettui.config import NodeConfig

pytestmark = pytest.mark.anyio


async def test_restart_on_three_agents_and_a_dead_port(fleet: ActionFleet) -> None:
    seen: list[tuple[str, Progress]] = []
    env = await send_action(
        fleet.fleet_config().nodes,
        "restart",
        "ollama",
        on_progress=lambda n, p, r: seen.append((n, p)),
    )
    assert env.targets == ["act-000", "act-001", "act-002", "dead"]
    assert env.succeeded == ["act-000", "act-001", "act-002"]
    assert env.failed == {"dead": "connection refused"}
    assert not env.ok
    assert sorted(fleet.calls()) == [["ollama"]] * 3
    for name in env.succeeded:
        assert [p for n, p in seen if n == name] == [Progress.QUEUED, Progress.RUNNING, Progress.OK]
        result = env.outcomes[name].result
        assert result is not None and result.audit_seq and "restarted ollama" in result.output_tail
    body = env.to_json()
    assert set(body) >= {"action", "targets", "succeeded", "failed"}
    # each node audited exactly its one restart: the intent, then its outcome
    for name, url in fleet.urls.items():
        entries = httpx.get(f"{url}/api/v1/audit").json()["entries"]
        pairs = [(e["action"], e["status"]) for e in entries]
        assert pairs == [("restart", "started"), ("restart", "ok")], name


async def test_node_without_token_fails_locally_and_nothing_is_sent(fleet: ActionFleet) -> None:
    cfg = fleet.fleet_config(with_dead=False, tokenless=("act-001",))
    env = await send_action(cfg.nodes, "restart", "ollama")
    assert env.succeeded == ["act-000", "act-002"]
    assert env.failed["act-001"].startswith("not sent: no token configured")
    assert len(fleet.calls()) == 2
    entries = httpx.get(f"{fleet.urls['act-001']}/api/v1/audit").json()["entries"]
    assert entries == []  # not even a denied attempt reached it


async def test_agent_refusals_become_reasons(fleet: ActionFleet) -> None:
    nodes = fleet.fleet_config(with_dead=False).nodes
    first = nodes[0]
    bad_token = [NodeConfig(name=first.name, url=first.url, token_env="NO_SUCH_VAR_FOR_TEST")]
    env = await send_action(bad_token, "restart", "ollama")
    assert "NO_SUCH_VAR_FOR_TEST" in env.failed["act-000"]
    # a valid request the node cannot serve: its 400 is the reason
    env = await send_action(nodes[:1], "stop", "vllm")
    assert env.failed["act-000"].startswith("HTTP 400: ")
    wrong = [NodeConfig(name=first.name, url=first.url, token="tok_00000000.nope")]
    env = await send_action(wrong, "restart", "ollama")
    assert env.failed["act-000"].startswith("HTTP 401")
    assert fleet.calls() == []
