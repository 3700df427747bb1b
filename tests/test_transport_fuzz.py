"""Hypothesis: the transport's framing and SSE parser under any byte split and hostile input.

Whatever a node sends, in whatever pieces the network cuts it, the answer parses to the same
body (or the same refusal) and nothing but the transport's own errors ever comes out.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleettui.aggregator.transport import framing
from fleettui.aggregator.transport.errors import FetchError
from fleettui.aggregator.transport.sse import SSEParser, StreamError

EP = framing.Endpoint.parse("http://127.0.0.1:9")
FAST = settings(max_examples=150, deadline=None)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[i:j] for i, j in zip([0, *points], [*points, len(data)], strict=True)]


def read(pieces: list[bytes], *, eof: bool = True) -> tuple[str, bytes, int]:
    """(outcome, body, status): outcome is "done", "open" or the refusal's reason."""
    f = framing.Framing()
    f.send(framing.request(EP, "GET", "/api/v1/snapshot", {}, "tok"))
    body = bytearray()
    try:
        for p in pieces:
            body += f.feed(p)
        if eof and not f.done:
            body += f.eof()
    except FetchError as exc:
        return exc.reason, bytes(body), f.status
    return ("done" if f.done else "open"), bytes(body), f.status


def chunked(body: bytes, sizes: list[int], trailers: bytes) -> bytes:
    out, i = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0
    for n in sizes:
        part = body[i : i + n]
        if not part:
            break
        out += b"%x;ext=%d\r\n%s\r\n" % (len(part), n, part)
        i += len(part)
    if i < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - i, body[i:])
    return out + b"0\r\n" + trailers + b"\r\n"


answers = st.builds(
    lambda body, sizes, trailers, interim, form: (
        body,
        (b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b"")
        + (
            chunked(body, sizes, trailers)
            if form == "chunked"
            else b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), len(body), body)
            if form == "sized"
            else b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Fold: a\r\n b\r\n\r\n" + body
        ),
    ),
    st.binary(max_size=400),
    st.lists(st.integers(1, 64), max_size=8),
    st.sampled_from([b"", b"X-Sum: 1\r\n", b"A: 1\r\nB: 2\r\n"]),
    st.booleans(),
    st.sampled_from(["chunked", "sized", "until-close"]),
)


@FAST
@given(answers, st.lists(st.integers(0, 10_000), max_size=20))
def test_any_split_of_a_valid_answer_gives_its_body(answer, cuts) -> None:
    body, wire = answer
    assert read(split(wire, cuts)) == ("done", body, 200)


@FAST
@given(st.binary(max_size=600), st.lists(st.integers(0, 10_000), max_size=12))
def test_hostile_bytes_end_as_a_reason_the_same_for_every_split(junk, cuts) -> None:
    for wire in (
        junk,
        b"HTTP/1.1 200 OK\r\n" + junk,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + junk,
    ):
        whole = read([wire])
        outcome, body, _ = whole
        assert read(split(wire, cuts)) == whole
        assert len(body) <= len(wire)
        assert outcome == "done" or len(outcome) <= 200


# --- the SSE parser --------------------------------------------------------------------------

lines = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=30
)
events = st.lists(
    st.tuples(
        st.sampled_from(["", "snapshot", "action", "audit"]),
        st.lists(lines, min_size=1, max_size=4),
        st.one_of(st.none(), st.text("0123456789abc", min_size=1, max_size=8)),
    ),
    max_size=6,
)


def sse_read(parser: SSEParser, pieces: list[bytes]) -> list[tuple[str, str, str]]:
    out = []
    for p in pieces:
        out += [(e.event, e.data, e.id) for e in parser.feed(p)]
    return out + [(e.event, e.data, e.id) for e in parser.finish()]


@FAST
@given(
    events,
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.booleans(),
    st.lists(st.integers(0, 10_000), max_size=20),
)
def test_any_split_of_an_event_stream_gives_its_events(evs, eol, comments, cuts) -> None:
    text, want, last = "", [], ""
    for name, data, ident in evs:
        if comments:
            text += f": ping{eol}"
        if name:
            text += f"event: {name}{eol}"
        if ident is not None:
            text += f"id: {ident}{eol}"
            last = ident
        text += "".join(f"data: {d}{eol}" for d in data) + eol
        want.append((name or "message", "\n".join(data), last))
    raw = text.encode()
    parser = SSEParser()
    assert sse_read(parser, split(raw, cuts)) == want
    assert not parser.mid_event and parser.last_id == last


@FAST
@given(st.binary(max_size=2000), st.lists(st.integers(0, 10_000), max_size=12))
def test_hostile_event_streams_give_the_same_events_or_the_cap(junk, cuts) -> None:
    def run(pieces: list[bytes]) -> object:
        p = SSEParser(cap=512)
        try:
            return sse_read(p, pieces), p.last_id, p.mid_event
        except StreamError as exc:
            return str(exc)

    assert run(split(junk, cuts)) == run([junk])
