"""Audit-chain verification against a fake audit server serving correct and tampered chains."""

from __future__ import annotations

import itertools
import json

import anyio
import httpx
import pytest

from fakes import FakeAgent, make_chain, make_entry, rehash_from, wait_for
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.chain import ChainVerifier
from fleettui.aggregator.state import ChainStatus, NodeState
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.errors import FetchError
from fleettui.config import Defaults, FleetConfig, NodeConfig
from fleettui.wire import AuditHead

pytestmark = pytest.mark.anyio


async def verified(fake: FakeAgent, v: ChainVerifier | None = None, **kw) -> ChainVerifier:
    v = v or ChainVerifier()
    async with NodeClient(fake.url, None, 2) as client:
        await v.sync(client, timeout_s=2, **kw)
    return v


@pytest.fixture
async def served():
    async with anyio.create_task_group() as tg:
        fake = await FakeAgent("audited", chain=make_chain(450)).start(tg)
        yield fake
        tg.cancel_scope.cancel()


async def test_good_chain_verifies_across_pages_then_incrementally(served: FakeAgent) -> None:
    v = await verified(served)
    assert v.status is ChainStatus.OK and v.pin.seq == 450, v.detail
    assert v.detail == "verified through seq 450"
    assert [r.query["after"] for r in served.requests_to("/api/v1/audit")] == ["0", "200", "400"]
    assert v.pin.checkpoints == {200: served.chain[199]["hash"], 400: served.chain[399]["hash"]}

    served.chain.append(make_entry(451, served.chain[-1]["hash"]))
    served.requests.clear()
    assert v.check_head(AuditHead.model_validate(served.head()))
    await verified(served, v, sweep=0)
    assert v.status is ChainStatus.OK and v.pin.seq == 451
    # only the pinned entry and what is new were fetched
    assert [r.query["after"] for r in served.requests_to("/api/v1/audit")] == ["449"]


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        ("edit", "seq 300: hash mismatch (entry altered)"),
        ("delete", "seq 300: missing or out of order (found seq 301)"),
        ("reorder", "seq 300: missing or out of order (found seq 301)"),
        ("relink", "seq 300: prev_hash does not match seq 299"),
        ("replay", "seq 299: sequence went backwards (after seq 300)"),
    ],
)
async def test_tampered_chain_is_broken_at_the_right_seq(
    served: FakeAgent, tamper: str, why: str
) -> None:
    c = served.chain
    if tamper == "edit":
        c[299]["action"] = "purge"  # hash left as it was
    elif tamper == "delete":
        del c[299]
    elif tamper == "reorder":
        c[299], c[300] = c[300], c[299]
    elif tamper == "replay":
        c.insert(300, dict(c[298]))
    elif tamper == "relink":
        c[299] = make_entry(300, "f" * 64)  # self-consistent, but not linked
    v = await verified(served)
    assert v.status is ChainStatus.BROKEN
    assert v.detail.startswith(why), v.detail


async def test_rewritten_history_breaks_the_pin(served: FakeAgent) -> None:
    v = await verified(served)
    # rewrite entry 440 and re-hash everything after it: internally valid, but not the same
    served.chain[439]["action"] = "stop"
    rehash_from(served.chain, 439)
    assert not v.check_head(AuditHead.model_validate(served.head()))
    assert v.status is ChainStatus.BROKEN
    assert "seq 450: head hash differs" in v.detail


async def test_rewrite_behind_an_unchanged_head_is_caught_by_the_pin_recheck(
    served: FakeAgent,
) -> None:
    v = await verified(served)
    served.chain[449]["error"] = "quietly edited"
    served.chain[449]["hash"] = make_entry(**{**served.chain[449]})["hash"]
    served.advertised_head = {"seq": 450, "head_hash": v.pin.hash}  # the agent's cached head
    await verified(served, v, sweep=0)
    assert v.status is ChainStatus.BROKEN
    assert v.detail == "seq 450: differs from the verified entry (rewritten)"


async def test_old_entry_edit_is_caught_by_the_sweep(served: FakeAgent) -> None:
    v = await verified(served)
    served.chain[9]["args"] = {"engine": "vllm"}
    await verified(served, v, sweep=0)  # only the pin and the tail: still fine
    assert v.status is ChainStatus.OK
    await verified(served, v)  # a full sweep (what `fleet status` does)
    assert v.status is ChainStatus.BROKEN and v.detail == "seq 10: hash mismatch (entry altered)"


async def test_truncation_and_seq_going_backwards(served: FakeAgent) -> None:
    v = await verified(served)
    del served.chain[440:]
    assert not v.check_head(AuditHead.model_validate(served.head()))
    assert v.status is ChainStatus.BROKEN
    assert v.detail == "head seq 440 is behind verified seq 450 (log truncated)"

    v2 = await verified(served)  # a fresh verifier accepts the shorter chain ...
    assert v2.status is ChainStatus.OK
    served.advertised_head = {"seq": 450, "head_hash": "0" * 64}  # ... but not a head it lacks
    v3 = await verified(served)
    assert v3.status is ChainStatus.BROKEN and "no entries are served after 440" in v3.detail


async def test_broken_is_sticky(served: FakeAgent) -> None:
    served.chain[0]["status"] = "denied"
    v = await verified(served)
    assert v.status is ChainStatus.BROKEN
    served.chain[:] = make_chain(450)
    await verified(served, v)
    assert v.status is ChainStatus.BROKEN and v.detail.startswith("seq 1:")


async def test_unreadable_audit_endpoint_is_unknown_not_broken(served: FakeAgent) -> None:
    served.audit_fault = "http404"
    v = await verified(served)
    assert v.status is ChainStatus.UNKNOWN and v.detail == "audit: HTTP 404: not found"
    served.audit_fault = "garbage"
    v = await verified(served)
    assert v.status is ChainStatus.UNKNOWN and "not an audit page" in v.detail
    served.audit_fault = None
    await verified(served, v)
    assert v.status is ChainStatus.OK


async def test_unreachable_keeps_the_last_status(served: FakeAgent) -> None:
    v = await verified(served)
    await served.stop()
    with pytest.raises(FetchError):
        await verified(served, v)
    assert v.status is ChainStatus.OK


async def test_aggregator_turns_broken_chain_into_degraded(served: FakeAgent) -> None:
    cfg = FleetConfig(
        defaults=Defaults(
            poll_interval_s=0.2,
            http_timeout_s=1,
            backoff_min_s=0.1,
            backoff_max_s=0.5,
            chain_recheck_s=0.2,
        ),
        nodes=[NodeConfig(name="audited", url=served.url)],
    )
    async with FleetAggregator(cfg) as agg:
        await wait_for(lambda: agg.node("audited").chain is ChainStatus.OK, 5)
        assert agg.node("audited").state is NodeState.ONLINE
        entries = await agg.fetch_audit("audited", limit=5)
        assert [e.seq for e in entries] == [446, 447, 448, 449, 450]
        events = agg.events()
        served.chain[449]["status"] = "denied"  # edited in place behind the same head
        await wait_for(lambda: agg.node("audited").chain is ChainStatus.BROKEN, 5)
        v = agg.node("audited")
        assert v.state is NodeState.DEGRADED
        assert v.chain_detail == "seq 450: differs from the verified entry (rewritten)"
        assert "audit chain BROKEN: seq 450" in v.reasons[0]
        with anyio.fail_after(2):
            async for ev in events:
                if ev.kind == "error":
                    assert "BROKEN" in ev.summary
                    break


async def test_fetch_audit_errors_are_clear() -> None:
    agg = FleetAggregator(FleetConfig(nodes=[NodeConfig(name="a", url="http://127.0.0.1:9")]))
    with pytest.raises(FetchError, match="no node named 'b'"):
        await agg.fetch_audit("b")
    with pytest.raises(FetchError, match="connection refused"):
        await agg.fetch_audit("a")


def _rewrite(path, edit) -> None:  # type: ignore[no-untyped-def]
    from fleettui.wire import canonical_json

    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    entries = edit(entries)
    path.write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))


async def test_real_agent_audit_log_rewritten_on_disk_turns_broken(agent_factory, xdg_home) -> None:
    """The agent's own audit.jsonl, edited under it, is BROKEN as seen by the aggregator."""
    agent_toml = xdg_home / ".config/fleettui/agent/agent.toml"
    agent_toml.parent.mkdir(parents=True)
    agent_toml.write_text("refusal_window_s = 0.1\n")  # each refusal below: a window, one entry
    agent = agent_factory("--simulate", "--nodes", "2", "--interval", "0.3", nodes=2)
    async with httpx.AsyncClient() as c:
        for _ in range(3):  # denied attempts are audited too
            for url in agent.urls.values():
                r = await c.post(f"{url}/api/v1/actions", json={"action": "restart"})
                assert r.status_code == 401
            await anyio.sleep(0.25)
    cfg = FleetConfig(
        defaults=Defaults(
            poll_interval_s=0.2,
            http_timeout_s=2,
            backoff_min_s=0.1,
            backoff_max_s=0.5,
            chain_recheck_s=0.2,
            chain_rescan_s=0.6,
        ),
        nodes=[NodeConfig(name=n, url=u) for n, u in agent.urls.items()],
    )
    logs = {
        n: xdg_home / ".local/share/fleettui/agent/nodes" / n / "audit.jsonl" for n in agent.urls
    }
    a, b = agent.urls
    async with FleetAggregator(cfg) as agg:
        await wait_for(
            lambda: all(v.chain_detail == "verified through seq 3" for v in agg.snapshots()),
            8,
            what="both chains verified",
        )
        assert all(v.state is NodeState.ONLINE for v in agg.snapshots())

        def drop_second_and_relink(entries: list[dict]) -> list[dict]:
            del entries[1]
            rehash_from(entries, 1)
            return entries

        def edit_first(entries: list[dict]) -> list[dict]:
            entries[0]["error"] = None  # hide why it was denied; hash left alone
            return entries

        _rewrite(logs[a], drop_second_and_relink)  # a clean rewrite: the chain is valid again
        _rewrite(logs[b], edit_first)  # an old entry edited in place
        await wait_for(
            lambda: all(v.chain is ChainStatus.BROKEN for v in agg.snapshots()),
            8,
            what="both chains BROKEN",
        )
        va, vb = agg.node(a), agg.node(b)
        assert va.chain_detail == "seq 3: verified entry is gone (history rewritten)"
        assert vb.chain_detail == "seq 1: hash mismatch (entry altered)"
        assert va.state is NodeState.DEGRADED and vb.state is NodeState.DEGRADED
        assert any("audit chain BROKEN" in r for r in va.reasons)


async def test_node_without_audit_endpoint_is_unknown_and_not_hammered() -> None:
    async with anyio.create_task_group() as tg:
        old = await FakeAgent("old", audit_fault="http404", event_every=0.05).start(tg)
        cfg = FleetConfig(
            defaults=Defaults(
                poll_interval_s=0.05, http_timeout_s=1, backoff_min_s=0.1, chain_recheck_s=0.5
            ),
            nodes=[NodeConfig(name="old", url=old.url)],
        )

        # every snapshot (polled, or streamed: the poller stands down while the stream delivers)
        # advertises an unverified head, yet the audit log is retried with backoff only
        def snapshots() -> int:
            return len(old.requests_to("/api/v1/snapshot")) + old._next_id

        async with FleetAggregator(cfg) as agg:
            await wait_for(lambda: agg.node("old").chain_detail is not None, 30)
            start = snapshots()
            await wait_for(lambda: snapshots() >= start + 20, 30, what="20 more snapshots")
            v = agg.node("old")
        tg.cancel_scope.cancel()
    assert v.chain is ChainStatus.UNKNOWN and v.chain_detail == "audit: HTTP 404: not found"
    assert v.state is NodeState.ONLINE  # not verifiable is not evidence of tampering
    # Spacing, not a count over a wall-clock window (a loaded machine stretches the window):
    # each retry waits at least backoff_min_s (0.1 s) while snapshots come every 0.05 s.
    audits = [r.at for r in old.requests_to("/api/v1/audit")]
    gaps = [b - a for a, b in itertools.pairwise(audits)]
    assert len(audits) >= 2 and min(gaps) >= 0.1, gaps
    assert len(audits) <= snapshots() / 2, (len(audits), snapshots())
