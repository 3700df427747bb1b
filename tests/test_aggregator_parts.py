"""The aggregator's small parts: the bounded SSE parser, backoff, history, config-free helpers."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from pydantic import ValidationError

from fleettui.aggregator.backoff import Backoff
from fleettui.aggregator.history import PowerHistory
from fleettui.aggregator.state import NodeView, SnapshotFacts
from fleettui.aggregator.transport.sse import SSEParser, StreamError
from fleettui.select import gpu_memory, parse
from fleettui.testing.sample import sample_views
from fleettui.views.columns import BY_KEY, SORTABLE, resident_models


def feed_all(parser: SSEParser, *chunks: bytes) -> list[tuple[str, str, str]]:
    out = []
    for c in chunks:
        out += [(e.event, e.data, e.id) for e in parser.feed(c)]
    out += [(e.event, e.data, e.id) for e in parser.finish()]
    return out


def test_sse_parser_follows_the_spec_across_chunk_boundaries() -> None:
    raw = (
        b'\xef\xbb\xbfretry: 2000\n: ping\n\nid: 7\nevent: snapshot\ndata: {"a":\r\ndata: 1}\r\n\r'
        b"\ndata: plain\n\nid: 8\nevent: audit\ndata: x\n\n"
    )
    whole = feed_all(SSEParser(), raw)
    assert whole == [("snapshot", '{"a":\n1}', "7"), ("message", "plain", "7"), ("audit", "x", "8")]
    for size in (1, 2, 3, 5, 7):  # the same events whatever the chunking (CRLF split included)
        p = SSEParser()
        assert feed_all(p, *(raw[i : i + size] for i in range(0, len(raw), size))) == whole
        assert p.last_id == "8" and not p.mid_event


def test_sse_parser_lf_only_streams_split_anywhere() -> None:
    """LF-only input takes a faster path; any split (inside a line, inside a multi-byte
    character, between events) must give the same events as one feed."""
    raw = (
        ': ping\n\nid: 1\nevent: snapshot\ndata: {"w": "\u00e9t\u00e9 \u2603"}\n\n'
        "data: a\ndata: b\n\nid: 2\nevent: audit\ndata: x\n\n"
    ).encode()
    whole = feed_all(SSEParser(), raw)
    assert whole[0] == ("snapshot", '{"w": "\u00e9t\u00e9 \u2603"}', "1")
    assert whole[1:] == [("message", "a\nb", "1"), ("audit", "x", "2")]
    rng = random.Random(3)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(raw)), rng.randint(1, 12)))
        parts = [raw[i:j] for i, j in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        p = SSEParser()
        assert feed_all(p, *parts) == whole
        assert p.last_id == "2" and not p.mid_event


def test_sse_partial_event_does_not_commit_its_id() -> None:
    p = SSEParser()
    p.feed(b'id: 1\ndata: a\n\nid: 2\nevent: snapshot\ndata: {"half')
    assert p.last_id == "1" and p.mid_event


def test_sse_event_size_is_capped_with_or_without_newlines() -> None:
    with pytest.raises(StreamError, match="event over"):
        SSEParser(cap=1000).feed(b"data: " + b"x" * 2000)
    p = SSEParser(cap=1000)
    with pytest.raises(StreamError, match="event over"):
        for _ in range(30):  # many short data lines add up to one oversized event
            p.feed(b"data: " + b"y" * 60 + b"\n")
    ok = SSEParser(cap=1000)
    for _ in range(30):  # the same volume split into small events is fine
        assert len(ok.feed(b"data: " + b"y" * 60 + b"\n\n")) == 1


def test_sse_invalid_utf8_is_replaced_not_raised() -> None:
    [ev] = SSEParser().feed(b"data: \xff\xfe ok\n\n")
    assert ev.data == "\ufffd\ufffd ok"


def test_backoff_full_jitter_window_doubles_to_the_cap_and_resets() -> None:
    b = Backoff(1.0, 30.0, rng=random.Random(4))
    windows, delays = [], []
    for _ in range(8):
        windows.append(b.window())
        delays.append(b.next_delay())
    assert windows == [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(1.0 <= d <= w for d, w in zip(delays, windows, strict=True))
    assert len({round(d, 6) for d in delays[2:]}) == 6  # jittered, not fixed steps
    b.reset()
    assert b.window() == 1.0 and b.next_delay() == 1.0
    spread = [Backoff(1, 30, rng=random.Random(i)) for i in range(50)]
    for x in spread:
        for _ in range(5):
            x.next_delay()
    firsts = [x.next_delay() for x in spread]  # 50 nodes that died together do not retry together
    assert max(firsts) - min(firsts) > 10
    with pytest.raises(ValueError):
        Backoff(5, 1)


def test_power_history_is_a_bounded_window_of_clock_aligned_buckets() -> None:
    h = PowerHistory(window_s=600, bucket_s=15)
    changed = [h.add(1005.0 + i * 0.5, float(i)) for i in range(4000)]  # 2,000 s of samples
    assert len(h) == 40  # 10 minutes of 15 s buckets, however many samples came in
    # the history moves only when a bucket completes: once per 30 samples, not every sample
    assert sum(changed) == (1005 + 3999 * 0.5) // 15 - 1005 // 15
    assert h.last == int((1005 + 3999 * 0.5) // 15) - 1
    vals = h.values()
    assert vals == sorted(vals) and vals[-1] == sum(range(3960, 3990)) / 30  # 2,985-3,000 s
    assert not h.add(2990.0, 5.0)  # a late sample from an older bucket changes nothing
    assert not h.add(3004.5, 1.0)  # nor one seen twice (the poll and the stream)
    assert not h.add(3005.0, None)
    assert h.add(3100.0, 7.0)  # the bucket at 3,000 s completes; then 5 with no sample
    assert h.values()[-6:] == [sum(range(3990, 4000)) / 10, None, None, None, None, None]
    assert len(h) == 40 and h.last == 205
    assert not h.add(100.0, 2.0) and h.values() == []  # the clock stepped back far: start over
    assert h.add(115.0, 3.0) and h.values() == [2.0] and h.last == 6


def test_node_view_parses_its_snapshot_only_when_read() -> None:
    snap = sample_views()[0].snapshot
    facts = SnapshotFacts.of(snap)
    assert (facts.watts, facts.cost_7d, facts.currency) == (1843.0, 270.4, "EUR")
    lazy = NodeView(name="n", url="u", snapshot_json="{broken", facts=facts)
    assert lazy.facts == facts  # totals and sorting never need the text parsed
    with pytest.raises(ValidationError):
        _ = lazy.snapshot  # parsed on first read, not before
    text = snap.model_dump_json()
    a = NodeView(name="a", url="u", snapshot_json=text, facts=facts)
    b = NodeView(name="b", url="u", snapshot_json=text, facts=facts)
    assert a.snapshot == snap and a.snapshot is a.snapshot  # parsed once, then kept
    a.snapshot.engines.clear()
    assert b.snapshot.engines  # each view parses its own model: nothing is shared
    other = sample_views()[1].snapshot
    a.snapshot = other  # setting a model keeps the facts in step
    assert a.facts == SnapshotFacts.of(other)
    assert NodeView(name="c", url="u", snapshot=snap, facts=None).facts == facts
    assert NodeView(name="d", url="u").snapshot is None


def test_sorting_and_numeric_filters_read_facts_not_the_snapshot() -> None:
    """At 1000 nodes a sort or filter that parsed every snapshot would cost a frame's budget."""
    view = sample_views()[0]  # gpu-a1: two GPUs, vllm and ollama up, three models
    facts = view.facts
    assert facts is not None and facts.gpu_mem_mb == gpu_memory(view)
    assert facts.gpu_mem_mb is not None and facts.gpu_mem_mb[1] > facts.gpu_mem_mb[0] > 0
    assert (facts.engines_down, facts.models) == (0, len(resident_models(view)))
    lazy = replace(view, snapshot=None, snapshot_json="{broken", facts=facts)
    for key in SORTABLE:
        BY_KEY[key].sort(lazy)  # none of them parses: the JSON is broken
    assert parse("state=ONLINE and power>1000 and gpu_mem>50 and name~gpu").matches(lazy)
    # engine and model names are facts too: a bare word searches 1000 nodes without parsing
    assert parse("engine=vllm and model~qwen and llama and gpu-a1").matches(lazy)
    assert lazy.facts is facts and lazy.__dict__.get("_snapshot") is None
