"""FleetAggregator against real loopback servers: simulated agents and misbehaving fakes."""

from __future__ import annotations

import resource
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from conftest import AgentProc, start_agent
from fakes import FakeAgent, wait_for
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.history import POWER_BUCKET_S
from fleettui.aggregator.state import NodeState
from fleettui.config import Defaults, FleetConfig, NodeConfig

pytestmark = pytest.mark.anyio

POLL = 0.25
FAST = dict(
    poll_interval_s=POLL,
    http_timeout_s=0.5,
    backoff_min_s=0.1,
    backoff_max_s=0.5,
    stale_after_s=5.0,
    chain_recheck_s=0.5,
)


def fleet(*nodes: tuple[str, str], **over: float) -> FleetConfig:
    return FleetConfig(
        defaults=Defaults(**{**FAST, **over}),
        nodes=[NodeConfig(name=n, url=u) for n, u in nodes],
    )


def agent_env(tmp: Path) -> dict[str, str]:
    return {
        "HOME": str(tmp),
        "XDG_CONFIG_HOME": str(tmp / ".config"),
        "XDG_DATA_HOME": str(tmp / ".local/share"),
        "XDG_STATE_HOME": str(tmp / ".local/state"),
        "FLEET_AGENT_CONFIG": str(tmp / "none.toml"),
    }


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    """Two simulated nodes with a fast tick, shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("sims")
    agent = start_agent(
        "--simulate", "--nodes", "2", "--interval", "0.3", nodes=2, tmp=tmp, env=agent_env(tmp)
    )
    try:
        yield agent
    finally:
        agent.stop()


def healthy_nodes(sims: AgentProc) -> list[tuple[str, str]]:
    return list(sims.urls.items())


# name -> (FakeAgent fields, expected state, expected reason fragment)
FAULTS: dict[str, tuple[dict, NodeState, str]] = {
    "blackhole": ({"fault": "blackhole"}, NodeState.OFFLINE, "no answer within 0.5 s"),
    "slow-20s": ({"fault": "slow"}, NodeState.OFFLINE, "no answer within 0.5 s"),
    "garbage": (
        {"snapshot_fault": "garbage"},
        NodeState.DEGRADED,
        "snapshot: bad snapshot: invalid JSON",
    ),
    "wrong-shape": (
        {"snapshot_fault": "wrong_shape"},
        NodeState.DEGRADED,
        "snapshot: bad snapshot: wrong shape: node",
    ),
    "http500": (
        {"snapshot_fault": "http500"},
        NodeState.DEGRADED,
        "snapshot: HTTP 500: internal error",
    ),
    "50mb": ({"snapshot_fault": "huge"}, NodeState.DEGRADED, "snapshot: body over 1 MiB"),
    "50mb-announced": (
        {"snapshot_fault": "huge_announced"},
        NodeState.DEGRADED,
        "(52428800 bytes announced)",
    ),
    "sse-drop": (
        {"events_fault": "drop_mid_event"},
        NodeState.DEGRADED,
        "event stream: stream dropped mid-event",
    ),
    "sse-malformed": (
        {"events_fault": "malformed"},
        NodeState.DEGRADED,
        "event stream: bad snapshot event: invalid JSON",
    ),
    "sse-huge-line": (
        {"events_fault": "huge_line"},
        NodeState.DEGRADED,
        "event stream: event over 1 MiB",
    ),
    "sse-not-sse": ({"events_fault": "not_sse"}, NodeState.DEGRADED, "not an event stream"),
}


def _has_reason(view, fragment: str) -> bool:
    return any(fragment in r for r in view.reasons)


# RFC 9112 on a client reading an answer -> (state, reason fragment; "" when no reason)
FRAMED: dict[str, tuple[NodeState, str]] = {
    # 204 has no body by definition (not a wait for one): answered, without a snapshot
    "no_content": (NodeState.DEGRADED, "snapshot: HTTP 204: no content"),
    # duplicates of one valid length may be taken as that length (RFC 9110 8.6)
    "dup_length": (NodeState.ONLINE, ""),
    # differing lengths: unrecoverable framing error, the answer is discarded (6.3)
    "conflicting_length": (NodeState.DEGRADED, "snapshot: bad framing: conflicting Content-Length"),
    # a coding we cannot decode before chunked: refused, never read as JSON (6.1)
    "gzip_chunked": (NodeState.DEGRADED, "snapshot: unsupported transfer coding"),
    # obs-fold in a response: replaced by a space before the field is interpreted (5.2)
    "folded": (NodeState.ONLINE, ""),
}


async def test_answers_are_framed_as_rfc_9112_says() -> None:
    async with anyio.create_task_group() as tg:
        fakes = {n: await FakeAgent(n, snapshot_fault=n).start(tg) for n in FRAMED}
        async with FleetAggregator(fleet(*((n, f.url) for n, f in fakes.items()))) as agg:

            def settled() -> bool:
                return all(
                    agg.node(n).state is st
                    and (_has_reason(agg.node(n), why) if why else not agg.node(n).reasons)
                    for n, (st, why) in FRAMED.items()
                )

            await wait_for(settled, 10)
        tg.cancel_scope.cancel()
    assert all(f.requests_to("/api/v1/snapshot") for f in fakes.values())


async def test_faulty_nodes_never_stall_healthy_ones_and_recover(sims: AgentProc) -> None:
    healthy = healthy_nodes(sims)
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with anyio.create_task_group() as tg:
        fakes = {name: await FakeAgent(name, **kw).start(tg) for name, (kw, _, _) in FAULTS.items()}
        refused = await FakeAgent("refused").start(tg)
        await refused.stop()  # a port nobody listens on
        cfg = fleet(
            *healthy,
            *((n, f.url) for n, f in fakes.items()),
            ("refused", refused.url),
        )
        expected = {n: (state, why) for n, (_, state, why) in FAULTS.items()}
        expected["refused"] = (NodeState.OFFLINE, "connection refused")

        async with FleetAggregator(cfg) as agg:

            def faulty_ok() -> bool:
                return all(
                    agg.node(n).state is st and _has_reason(agg.node(n), why)
                    for n, (st, why) in expected.items()
                )

            await wait_for(faulty_ok, 8, what="every faulty node in its expected state")
            for n, (st, why) in expected.items():
                v = agg.node(n)
                assert v.state is st and _has_reason(v, why), (n, v.state, v.reasons)

            # healthy nodes stay ONLINE and fresh the whole time the faulty ones misbehave
            first_ts = {n: agg.node(n).snapshot.ts for n, _ in healthy}
            # A starved CPU delays this loop's wake-ups as much as the pollers': that delay is
            # allowed on top (a node held up behind a faulty one leaves this loop on time).
            t_end = time.monotonic() + 1.5
            late = 0.0
            while time.monotonic() < t_end:
                now = time.time()
                for n, _ in healthy:
                    v = agg.node(n)
                    assert v.state is NodeState.ONLINE, (n, v.reasons)
                    stale = now - v.last_seen
                    assert stale <= 2 * POLL + late, f"{n} not updated for {stale} (late {late})"
                due = time.monotonic() + 0.05
                await anyio.sleep(0.05)
                late = max(0.0, time.monotonic() - due)
            for n, _ in healthy:
                assert agg.node(n).snapshot.ts > first_ts[n]
                assert agg.node(n).stream_ok
            offline = [n for n, (st, _) in expected.items() if st is NodeState.OFFLINE]
            assert all(agg.node(n).retry_at is not None for n in offline)

            # every fault cleared: each node comes back ONLINE
            for f in fakes.values():
                f.fault = f.snapshot_fault = f.events_fault = None
            await refused.restart()
            await wait_for(
                lambda: all(v.state is NodeState.ONLINE for v in agg.snapshots()),
                8,
                what="every node ONLINE after recovery",
            )
            assert all(v.retry_at is None for v in agg.snapshots())
        tg.cancel_scope.cancel()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before) / 1024
    assert grown_mb < 40, f"peak RSS grew {grown_mb:.0f} MB: a 50 MB body was buffered"


async def test_50mb_bodies_are_never_buffered() -> None:
    async with anyio.create_task_group() as tg:
        huge = await FakeAgent("huge", snapshot_fault="huge", events_fault="huge_line").start(tg)
        tracemalloc.start()
        try:
            async with FleetAggregator(fleet(("huge", huge.url))) as agg:
                await wait_for(lambda: len(huge.requests_to("/api/v1/snapshot")) >= 3, 5)
                await wait_for(lambda: len(huge.requests_to("/api/v1/events")) >= 2, 5)
                await wait_for(lambda: len(agg.node("huge").reasons) == 2, 5)
                v = agg.node("huge")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        tg.cancel_scope.cancel()
    assert v.state is NodeState.DEGRADED
    assert _has_reason(v, "body over 1 MiB") and _has_reason(v, "event over 1 MiB")
    assert peak < 12 * 1024 * 1024, f"peak traced memory {peak / 2**20:.1f} MiB"


async def test_offline_backs_off_with_jitter_and_resets_on_success() -> None:
    async with anyio.create_task_group() as tg:
        fake = await FakeAgent("flaky", snapshot_fault="close", events_fault="blackhole").start(tg)
        cfg = fleet(
            ("flaky", fake.url), poll_interval_s=0.05, backoff_min_s=0.05, backoff_max_s=0.4
        )
        async with FleetAggregator(cfg) as agg:
            await wait_for(lambda: agg.node("flaky").state is NodeState.OFFLINE, 3)
            assert agg.node("flaky").reasons == ["connection closed without an answer"]
            start = len(fake.requests_to("/api/v1/snapshot"))
            await anyio.sleep(1.6)
            tries = len(fake.requests_to("/api/v1/snapshot")) - start
            # without backoff this would be ~32 polls; the window doubles up to 0.4 s
            assert 2 <= tries <= 14, tries
            fake.snapshot_fault = fake.events_fault = None
            await wait_for(lambda: agg.node("flaky").state is NodeState.ONLINE, 3)
            start = len(fake.requests_to("/api/v1/snapshot"))
            await anyio.sleep(0.5)
            # back at the poll interval (0.05 s), not at the backoff cap
            assert len(fake.requests_to("/api/v1/snapshot")) - start >= 5
        tg.cancel_scope.cancel()


async def test_stream_reconnects_with_last_event_id() -> None:
    async with anyio.create_task_group() as tg:
        fake = await FakeAgent("sse", event_every=0.05).start(tg)
        async with FleetAggregator(fleet(("sse", fake.url))) as agg:
            await wait_for(lambda: fake._next_id >= 3 and agg.node("sse").stream_ok, 3)
            fake.events_fault = "drop_mid_event"  # ends the good stream; the next drops mid-event
            await wait_for(lambda: len(fake.requests_to("/api/v1/events")) >= 3, 3)
            first, second, third = fake.requests_to("/api/v1/events")[:3]
            assert "last-event-id" not in first.headers
            last_good = int(second.headers["last-event-id"])
            assert last_good >= 3
            # the half-received event's id was never committed
            assert int(third.headers["last-event-id"]) == last_good
            await wait_for(lambda: agg.node("sse").state is NodeState.DEGRADED, 3)
            fake.events_fault = None
            await wait_for(lambda: agg.node("sse").state is NodeState.ONLINE, 3)
        tg.cancel_scope.cancel()


async def test_snapshots_are_deep_copies(sims: AgentProc) -> None:
    async with FleetAggregator(fleet(*healthy_nodes(sims))) as agg:
        name = healthy_nodes(sims)[0][0]
        await wait_for(lambda: agg.node(name).state is NodeState.ONLINE, 5)
        mine = agg.snapshots()[0]
        keep = (
            mine.snapshot.node.hostname,
            len(mine.snapshot.engines),
            mine.snapshot.engines[0].models[:],
            list(mine.power_history),
            list(mine.reasons),
            list(mine.tags),
        )
        mine.snapshot.node.hostname = "mutated"
        mine.snapshot.engines.clear()
        mine.power_history.append(-1.0)
        mine.reasons.append("mutated")
        mine.tags.append("mutated")
        mine.state = NodeState.OFFLINE
        theirs = agg.node(name)
        assert theirs.snapshot.node.hostname == keep[0]
        assert (
            len(theirs.snapshot.engines) == keep[1] and theirs.snapshot.engines[0].models == keep[2]
        )
        assert -1.0 not in theirs.power_history and "mutated" not in theirs.reasons
        assert theirs.tags == keep[5] and theirs.state is NodeState.ONLINE


async def test_history_generation_and_events(sims: AgentProc) -> None:
    nodes = healthy_nodes(sims)
    agg = FleetAggregator(fleet(*nodes), event_buffer=4)
    slow_reader = agg.events()  # registered now, never read: it must not block anything
    async with agg:
        reader = agg.events()
        gen = agg.generation
        new = await agg.wait_changed(gen, 3)
        assert new > gen
        assert await agg.wait_changed(new + 10**6, 0.05) >= new  # timeout returns, no hang
        await wait_for(lambda: all(v.state is NodeState.ONLINE for v in agg.snapshots()), 5)
        w = agg._by_name[nodes[0][0]]  # a power bucket completes each 15 s: skip to the next
        assert w.snap_ts is not None and w.power.add(w.snap_ts + POWER_BUCKET_S, 100.0)
        v = agg.node(nodes[0][0])
        assert v.power_history and v.power_slot == (w.snap_ts + POWER_BUCKET_S) // 15 - 1
        assert len(v.cost_daily) == 7 and v.latency_ms is not None and v.latency_ms > 0
        assert v.last_seen is not None and v.stream_ok
        await wait_for(lambda: agg.drops > 0, 5, what="the unread subscriber overflowing")
        assert slow_reader.dropped > 0 and len(slow_reader.queue) == 4
        got = []
        with anyio.fail_after(3):
            async for ev in reader:
                got.append(ev)
                if {e.kind for e in got} >= {"snapshot"} and len(got) >= 4:
                    break
        assert all(e.node in dict(nodes) for e in got)
    # after the aggregator stops, a reader drains what is left and ends
    with anyio.fail_after(1):
        rest = [ev async for ev in reader]
    assert len(rest) <= 4


async def test_poll_once_caps_total_time() -> None:
    async with anyio.create_task_group() as tg:
        hole = await FakeAgent("hole", fault="blackhole").start(tg)
        ok = await FakeAgent("ok").start(tg)
        agg = FleetAggregator(fleet(("hole", hole.url), ("ok", ok.url), http_timeout_s=30))
        t0 = time.monotonic()
        views = await agg.poll_once(0.6)
        assert time.monotonic() - t0 < 2
        by = {v.name: v for v in views}
        assert by["ok"].state is NodeState.ONLINE and by["ok"].chain.value == "ok"
        assert by["hole"].state is NodeState.OFFLINE
        assert by["hole"].reasons == ["no answer within 0.6 s"]
        tg.cancel_scope.cancel()


async def test_dead_node_goes_offline_and_comes_back_on_the_same_port(sims: AgentProc) -> None:
    """A real agent process killed and restarted is OFFLINE, then ONLINE again."""
    async with anyio.create_task_group() as tg:
        node = await FakeAgent("phoenix").start(tg)
        async with FleetAggregator(fleet(*healthy_nodes(sims), ("phoenix", node.url))) as agg:
            await wait_for(lambda: agg.node("phoenix").state is NodeState.ONLINE, 5)
            await node.stop()
            await wait_for(lambda: agg.node("phoenix").state is NodeState.OFFLINE, 3)
            assert agg.node("phoenix").reasons == ["connection refused"]
            assert all(agg.node(n).state is NodeState.ONLINE for n, _ in healthy_nodes(sims))
            await node.restart()
            await wait_for(lambda: agg.node("phoenix").state is NodeState.ONLINE, 3)
            assert agg.node("phoenix").stream_ok
        tg.cancel_scope.cancel()


async def test_run_until_cancelled_closes_every_connection() -> None:
    async with anyio.create_task_group() as tg:
        fake = await FakeAgent("n", event_every=0.05).start(tg)
        agg = FleetAggregator(fleet(("n", fake.url)))
        events = agg.events()
        async with anyio.create_task_group() as inner:
            inner.start_soon(agg.run)
            await wait_for(lambda: agg.node("n").stream_ok, 3)
            assert fake.open_connections >= 1  # the held-open event stream
            inner.cancel_scope.cancel()
        await wait_for(lambda: fake.open_connections == 0, 3, what="connections closed")
        with anyio.fail_after(1):  # subscribers end instead of waiting forever
            assert [e async for e in events]
        tg.cancel_scope.cancel()


async def test_changed_copies_only_what_moved_and_events_can_be_filtered(sims: AgentProc) -> None:
    nodes = healthy_nodes(sims)
    agg = FleetAggregator(fleet(*nodes))
    with pytest.raises(ValueError, match="unknown event kinds"):
        agg.events(kinds=["snapshot", "bogus"])
    transitions = agg.events(kinds=["state"])
    async with agg:
        await wait_for(lambda: all(v.state is NodeState.ONLINE for v in agg.snapshots()), 5)
        held = {v.name: v for v in agg.snapshots()}
        assert [v.name for v in agg.changed({})] == [n for n, _ in nodes]  # config order
        first = nodes[0][0]
        known = {n: v.version for n, v in held.items()}
        await wait_for(lambda: agg.node(first).version > known[first], 5, what="a new snapshot")
        moved = agg.changed(known)
        assert first in [v.name for v in moved]
        assert all(v.version != known[v.name] for v in moved)
        mine = moved[0]
        mine.snapshot.engines.clear()  # still deep copies: the aggregator is not affected
        assert agg.node(mine.name).snapshot.engines
    with anyio.fail_after(2):
        got = [e async for e in transitions]
    assert got and {e.kind for e in got} == {"state"}  # no snapshot events queued for it


async def test_poller_stands_down_while_the_stream_delivers() -> None:
    async with anyio.create_task_group() as tg:
        fake = await FakeAgent("busy", event_every=0.05).start(tg)
        async with FleetAggregator(fleet(("busy", fake.url), poll_interval_s=0.2)) as agg:
            await wait_for(lambda: agg.node("busy").stream_ok, 3)
            await anyio.sleep(0.3)
            start = len(fake.requests_to("/api/v1/snapshot"))
            await anyio.sleep(1.0)  # five poll intervals; the first heartbeat is 7.5 or more
            assert len(fake.requests_to("/api/v1/snapshot")) - start <= 1
            v = agg.node("busy")
            assert v.state is NodeState.ONLINE and time.time() - v.last_seen <= 2 * 0.2
        tg.cancel_scope.cancel()


async def test_poller_resumes_at_once_when_the_stream_goes_quiet() -> None:
    """One event on connect, then silence on a connection that stays open: the fleet's
    watchdog wakes the poller long before its heartbeat (7.5-15 poll intervals) would."""
    async with anyio.create_task_group() as tg:
        fake = await FakeAgent("quiet", event_every=30.0).start(tg)
        async with FleetAggregator(fleet(("quiet", fake.url), poll_interval_s=0.1)) as agg:
            await wait_for(lambda: agg.node("quiet").stream_ok, 3)
            start = len(fake.requests_to("/api/v1/snapshot"))
            await anyio.sleep(0.6)
            assert len(fake.requests_to("/api/v1/snapshot")) - start >= 3
            v = agg.node("quiet")
            assert v.state is NodeState.ONLINE and v.stream_ok
        tg.cancel_scope.cancel()
