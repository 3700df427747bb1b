"""The agent served in-process (same code as the CLI), for behaviour that needs a short clock."""

from __future__ import annotations

import anyio
import httpx
import pytest

from fleettui.agent.config import AgentConfig
from fleettui.agent.node import NodeAgent
from fleettui.agent.server import bind_sockets, serve

pytestmark = pytest.mark.anyio


async def test_idle_stream_gets_pings_and_shutdown_ends_it(xdg_home) -> None:
    agent = NodeAgent.simulate(AgentConfig(interval_s=3600), "quiet")
    sockets = bind_sockets("127.0.0.1", [0])
    url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    ready = anyio.Event()
    lines: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: serve(
                [agent], sockets, ping_every=0.2, on_ready=ready.set, handle_signals=False
            )
        )
        await ready.wait()
        async with httpx.AsyncClient(timeout=5, trust_env=False) as c:
            async with c.stream("GET", f"{url}/api/v1/events") as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                with anyio.fail_after(5):
                    async for line in r.aiter_lines():
                        lines.append(line)
                        if lines.count(": ping") >= 2:
                            break
        tg.cancel_scope.cancel()
    assert lines[0] == "retry: 2000"
    assert "event: snapshot" in lines
    # the agent was cancelled: its port is free again
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=1)


async def test_slow_subscriber_loses_oldest_events_not_the_agent() -> None:
    from fleettui.agent.broker import SUBSCRIBER_BUFFER, EventBroker

    broker = EventBroker()
    sub = broker.subscribe()
    for i in range(SUBSCRIBER_BUFFER + 10):
        broker.publish("snapshot", b"%d" % i)
    assert sub.dropped == 10
    first = await sub.get(0.1)
    assert first is not None and first.data == b"10"
    ids = [first.id]
    while (ev := await sub.get(0.01)) is not None:
        ids.append(ev.id)
    assert ids == sorted(ids) and len(ids) == SUBSCRIBER_BUFFER


def test_binding_all_interfaces_warns_loopback_does_not() -> None:
    from fleettui.agent.main import exposure_warning

    assert "exposes the agent" in (exposure_warning("0.0.0.0") or "")
    assert "exposes the agent" in (exposure_warning("::") or "")
    assert exposure_warning("127.0.0.1") is None


def test_listeners_are_tcp_with_nodelay() -> None:
    """Without IPPROTO_TCP asyncio skips TCP_NODELAY and every answer waits 40 ms for an ACK."""
    import socket

    (s,) = bind_sockets("127.0.0.1", [0])
    try:
        assert s.proto == socket.IPPROTO_TCP
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        s.close()
