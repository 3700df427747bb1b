"""The pin store and the sweep against a fake audit server: persistence, merging, forgetting,
the detection bound, and hostile pages (a 5000-digit seq)."""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import anyio
import pytest

from fakes import FakeAgent, make_chain, make_entry, rehash_from, wait_for
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.chain import ChainVerifier
from fleettui.aggregator.pins import Pin, PinFileError, PinStore, merge, node_key
from fleettui.aggregator.state import ChainStatus
from fleettui.aggregator.transport.client import NodeClient
from fleettui.config import Defaults, FleetConfig, NodeConfig
from fleettui.fsutil import UnsafePathError

pytestmark = pytest.mark.anyio


async def checked(fake: FakeAgent, v: ChainVerifier, **kw) -> ChainVerifier:
    async with NodeClient(fake.url, None, 2) as client:
        await v.sync(client, timeout_s=2, **kw)
    return v


@pytest.fixture
async def served():
    async with anyio.create_task_group() as tg:
        fake = await FakeAgent("audited", chain=make_chain(1000)).start(tg)
        yield fake
        tg.cancel_scope.cancel()


def test_node_key_is_the_configured_address_normalised() -> None:
    assert node_key("http://GPU1.lan:8899/") == node_key("http://gpu1.lan:8899")
    assert node_key("http://gpu1.lan") == "http://gpu1.lan:80"
    assert node_key("https://gpu1.lan/") == "https://gpu1.lan:443"
    assert node_key("http://[::1]:8899") == "http://[::1]:8899"
    assert node_key("http://gpu1.lan:8899") != node_key("http://gpu2.lan:8899")


def test_sweep_pages_fall_due_at_the_log_size_per_rescan_s() -> None:
    def due(pin_seq: int, checks: list[float], rescan_s: float = 110) -> list[int]:
        v = ChainVerifier(Pin(key="k", seq=pin_seq, hash="1" * 64))
        v.credit = 0.0  # (a random start otherwise)
        out = []
        for t in checks:
            n = v.sweep_due(t, rescan_s)
            v.credit -= n  # as if swept
            out.append(n)
        return out

    ten_s = [10.0 * i for i in range(25)]
    assert due(0, ten_s) == [0] * 25  # nothing pinned, nothing to sweep
    one_page = due(200, ten_s)  # one page: read once per 110 s
    assert sum(one_page) == 2 and one_page.index(1) == 11
    assert sum(due(3000, ten_s)) == 32  # 15 pages per 110 s: 32 in 240 s
    assert due(300_000, ten_s)[1:] == [10] * 24  # capped: 1500 pages take 150 checks
    assert due(2000, [0, 10_000]) == [0, 10]  # after a long gap: one sweep's worth, capped
    v = ChainVerifier(Pin(key="k", seq=2000, hash="1" * 64))
    v.credit = 0.25
    assert v.next_due(110) == math.inf  # no check yet
    v.sweep_due(100.0, 110)
    assert v.next_due(110) == pytest.approx(100 + 0.75 * 11)  # 10 pages: one every 11 s


async def test_pin_persists_and_a_fresh_verifier_catches_a_rewrite_below_the_head(
    served: FakeAgent, tmp_path: Path
) -> None:
    store = PinStore(tmp_path / "pins")
    key = node_key(served.url)
    v = await checked(served, ChainVerifier(key=key))
    assert v.status is ChainStatus.OK and v.pin.seq == 1000
    pin, reset = store.sync(v.pin)
    assert not reset and pin.epoch and sorted(pin.checkpoints) == [200, 400, 600, 800, 1000]
    path = store.path_for(key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["key"] == key

    # rewrite from seq 350 on, keeping even the head entry's hash as pinned
    original = [dict(e) for e in served.chain]
    served.chain[349]["action"] = "stop"
    rehash_from(served.chain, 349)
    served.chain[-1]["hash"] = original[-1]["hash"]
    fresh = await checked(served, ChainVerifier(store.load(key)), sweep=0)  # pin + tail only
    assert fresh.status is ChainStatus.BROKEN
    assert fresh.detail == "seq 1000: differs from the verified entry (rewritten)"

    # rewrite 350..400 only (401 still links to the old 400): the pin and the tail are as
    # pinned; the sweep's page (200, 400] links, and lands on a hash unlike checkpoint 400
    served.chain[:] = original
    served.chain[349]["action"] = "stop"
    for e, prev in zip(served.chain[349:400], served.chain[348:399], strict=True):
        e["prev_hash"] = prev["hash"]
        e["hash"] = make_entry(**{k: v for k, v in e.items() if k != "hash"})["hash"]
    fresh = await checked(served, ChainVerifier(store.load(key)), sweep=0)
    assert fresh.status is ChainStatus.OK
    await checked(served, fresh)  # a full sweep, as `fleet status` does
    assert fresh.status is ChainStatus.BROKEN
    assert fresh.detail == "seq 400: differs from the entry verified earlier (rewritten)"


async def test_the_sweep_rotates_and_finds_an_old_edit_within_the_bound(
    served: FakeAgent, tmp_path: Path
) -> None:
    """1000 entries = 5 pages; rescan 0.5 s: a page per 0.1 s, any entry re-read within
    0.5 s (+ the 0.1 s check gap and a request)."""
    d = Defaults(
        poll_interval_s=0.1,
        http_timeout_s=2,
        backoff_min_s=0.1,
        backoff_max_s=0.5,
        chain_recheck_s=5,
        chain_rescan_s=0.5,
    )
    cfg = FleetConfig(nodes=[NodeConfig(name="n", url=served.url)], defaults=d)
    async with FleetAggregator(cfg, pins=PinStore(tmp_path / "pins")) as agg:
        await wait_for(lambda: agg.node("n").chain is ChainStatus.OK, 5)
        served.requests.clear()

        def afters() -> list[int]:
            return [int(r.query["after"]) for r in served.requests_to("/api/v1/audit")]

        pages = {0, 200, 400, 600, 800}
        t0 = time.monotonic()
        await wait_for(lambda: all(afters().count(p) >= 2 for p in pages), 2, what="2 rotations")
        took = time.monotonic() - t0
        # round robin at 5 pages per 0.5 s, not the whole log per check (two rotations would
        # then take 0.2 s): time and counts bounded from below, which a loaded machine only
        # makes larger; the pinned entry (after=999) once (a snapshot came during the first
        # walk), then only every chain_recheck_s (5 s)
        seen = afters()
        sweeps = [a for a in seen if a != 999]
        assert took >= 0.5, (took, seen)
        assert seen.count(999) <= 1 + took / 2.5 and set(sweeps) == pages, seen
        ring = sorted(pages)
        assert all(ring[(ring.index(a) + 1) % 5] == b for a, b in itertools.pairwise(sweeps)), seen
        served.requests.clear()
        served.chain[511]["error"] = "edited"  # behind the pin, far from the head
        await wait_for(lambda: agg.node("n").chain is ChainStatus.BROKEN, 3)
        assert agg.node("n").chain_detail == "seq 512: hash mismatch (entry altered)"
        # found within one rotation: counted in pages read, not in seconds (a loaded machine
        # stretches the seconds, not the rotation); 5 pages, the pinned entry and one page in
        # flight when the edit was made
        pages = [int(r.query["after"]) for r in served.requests_to("/api/v1/audit")]
        assert len(pages) <= 5 + 2, pages


async def test_a_5000_digit_seq_is_broken_with_a_reason(served: FakeAgent) -> None:
    pinned = await checked(served, ChainVerifier())
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # so the fake can serve it at all
    try:
        served.chain[299]["seq"] = int("9" * 5000)
        fresh = await checked(served, ChainVerifier())
        await checked(served, pinned, sweep=0)  # the fake serves it after the pin, too
    finally:
        sys.set_int_max_str_digits(old)
    why = "the entry served there is not an audit entry (seq: an integer of 5000 digits)"
    assert fresh.status is ChainStatus.BROKEN and fresh.detail == f"seq 300: {why}"
    assert pinned.status is ChainStatus.BROKEN and pinned.detail == f"seq 1000: {why}"


async def test_unreadable_is_unknown_until_read_and_never_hides_broken(served: FakeAgent) -> None:
    v = await checked(served, ChainVerifier())
    served.audit_fault = "garbage"
    await checked(served, v)
    assert v.status is ChainStatus.UNKNOWN and "not an audit page" in v.detail
    served.audit_fault = None
    served.chain[5]["status"] = "denied"
    await checked(served, v)
    assert v.status is ChainStatus.BROKEN
    served.audit_fault = "garbage"
    await checked(served, v)
    assert v.status is ChainStatus.BROKEN and v.detail == "seq 6: hash mismatch (entry altered)"


def test_merge_keeps_both_sides_and_a_disagreement_is_broken() -> None:
    a = Pin(key="k", epoch="e", seq=400, hash="a" * 64, checkpoints={200: "1" * 64, 400: "a" * 64})
    b = Pin(key="k", epoch="e", seq=600, hash="b" * 64, checkpoints={200: "1" * 64, 400: "a" * 64})
    b.checkpoints[600] = "b" * 64
    m = merge(a, b)
    assert (m.seq, m.hash, m.broken) == (600, "b" * 64, None) and len(m.checkpoints) == 3
    c = Pin(key="k", epoch="e", seq=400, hash="c" * 64, checkpoints={200: "2" * 64, 400: "c" * 64})
    m = merge(a, c)
    assert m.broken == "seq 200: another fleet process verified a different entry there"


def test_two_processes_share_one_pin_and_forget_starts_a_new_epoch(tmp_path: Path) -> None:
    one, two = PinStore(tmp_path), PinStore(tmp_path)
    p1, _ = one.sync(Pin(key="k", seq=3, hash="3" * 64))
    p2, reset = two.sync(Pin(key="k", seq=5, hash="5" * 64))  # no epoch yet: joins p1's
    assert not reset and p2.epoch == p1.epoch and p2.seq == 5
    assert one.changed("k") and not two.changed("k")
    old = two.forget("k", "gpu1")
    assert old is not None and old.seq == 5
    again, reset = one.sync(p1)  # a process still holding the old epoch drops what it had
    assert reset and again.seq == 0 and again.epoch != p1.epoch and again.name == "gpu1"


def test_pin_files_are_never_written_through_a_symlink_nor_replaced_when_bad(
    tmp_path: Path,
) -> None:
    store = PinStore(tmp_path)
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    tmp_path.joinpath(store.path_for("k").name).symlink_to(target)
    with pytest.raises((PinFileError, UnsafePathError)):
        store.sync(Pin(key="k", seq=1, hash="1" * 64))
    assert target.read_text() == "keep"
    store.path_for("j").write_text("{not json")
    with pytest.raises(PinFileError, match="not JSON"):
        store.load("j")
    with pytest.raises(PinFileError):
        store.sync(Pin(key="j", seq=1, hash="1" * 64))
    assert store.path_for("j").read_text() == "{not json"  # left for the operator
    assert store.forget("j", "n") is None and store.load("j").seq == 0  # forget replaces it
    os.unlink(store.path_for("k"))


async def test_an_unusable_pin_file_is_unknown_with_the_fix(
    served: FakeAgent, tmp_path: Path
) -> None:
    store = PinStore(tmp_path)
    store.root.mkdir(exist_ok=True)
    store.path_for(node_key(served.url)).write_text("[]")
    cfg = FleetConfig(nodes=[NodeConfig(name="n", url=served.url)])
    [v] = await FleetAggregator(cfg, pins=store).poll_once(5)
    assert v.chain is ChainStatus.UNKNOWN
    assert v.chain_detail.startswith("audit pin unusable (") and v.chain_detail.endswith(
        "`fleet audit forget n` replaces it"
    )


async def test_a_state_dir_that_cannot_be_written_keeps_the_checks(
    served: FakeAgent, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cfg = FleetConfig(nodes=[NodeConfig(name="n", url=served.url)])
    [v] = await FleetAggregator(cfg, pins=PinStore(blocker / "pins")).poll_once(5)
    assert v.chain is ChainStatus.OK
    assert v.chain_detail.startswith("verified through seq 1000; pin not saved (")
