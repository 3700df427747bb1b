"""HTTP/1.1 framing: h11 (what aggregator.transport uses) vs httptools, on a node's answers.

    .venv/bin/python bench/framing.py [--repeat 20000]

Two workloads, CPU µs per unit, best of 5 runs: a keep-alive snapshot GET (request out, a
3 KB sized answer in) and one event-stream chunk (a 3 KB snapshot event in a chunked body),
the unit the aggregator parses about 500 times a second at 1000 nodes. Then, for each
framing RFC 9112 rules on, what each parser does with it: the choice is the fastest one that
does what the RFC says, without hand-written framing around it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httptools

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import report  # noqa: E402

from fleettui.aggregator.transport import framing  # noqa: E402
from fleettui.aggregator.transport.errors import FetchError  # noqa: E402

BODY = json.dumps({"node": {"hostname": "gpu1"}, "pad": "y" * 3000}).encode()
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(
    BODY
) + (b"date: Tue, 01 Dec 2026 10:00:00 GMT\r\nserver: uvicorn\r\n\r\n" + BODY)
EVENT = b"event: snapshot\nid: 12\ndata: " + BODY + b"\n\n"
CHUNK = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
EP = framing.Endpoint.parse("http://127.0.0.1:8765")

OK = b"HTTP/1.1 200 OK\r\n"
CASES = {
    "204 then an answer": b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
    "duplicate identical Content-Length": OK + b"content-length: 2\r\ncontent-length: 2\r\n\r\nok",
    "differing Content-Length": OK + b"content-length: 2\r\ncontent-length: 3\r\n\r\nok",
    "Transfer-Encoding: gzip, chunked": OK
    + b"transfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "obs-fold in a header": OK + b"x-a: one\r\n two\r\ncontent-length: 2\r\n\r\nok",
}
RFC = {
    "204 then an answer": "no body: the answer ends at its head",
    "duplicate identical Content-Length": "may be taken as the one length (RFC 9110 8.6)",
    "differing Content-Length": "unrecoverable: discard, close",
    "Transfer-Encoding: gzip, chunked": "refuse: nothing decodes gzip",
    "obs-fold in a header": "MUST replace with SP (5.2)",
}


def best(fn, n: int) -> float:
    runs = []
    for _ in range(5):
        t0 = time.process_time()
        fn(n)
        runs.append((time.process_time() - t0) / n * 1e6)
    return round(min(runs), 2)


def h11_get(n: int) -> None:
    for _ in range(n):  # as NodeClient does: a fresh framing per exchange
        f = framing.Framing()
        f.send(framing.request(EP, "GET", "/api/v1/snapshot", {}, "tok"))
        f.feed(ANSWER)
        assert f.done and f.reusable


class _Sink:
    def __init__(self) -> None:
        self.body = bytearray()
        self.done = False

    def on_body(self, b: bytes) -> None:
        self.body += b

    def on_message_complete(self) -> None:
        self.done = True


def httptools_get(n: int) -> None:
    # httptools only parses: the request is bytes, the least any client can do to send one
    req = b"GET /api/v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n"
    req += b"Authorization: Bearer tok\r\n\r\n"
    for _ in range(n):
        bytes(req)
        sink = _Sink()
        p = httptools.HttpResponseParser(sink)
        p.feed_data(ANSWER)
        assert sink.done


def h11_stream(n: int) -> None:
    f = framing.Framing()
    f.send(framing.request(EP, "GET", "/api/v1/events", {}, "tok"))
    f.feed(STREAM_HEAD)
    for _ in range(n):
        f.feed(CHUNK)


def httptools_stream(n: int) -> None:
    p = httptools.HttpResponseParser(_Sink())
    p.feed_data(STREAM_HEAD)
    for _ in range(n):
        p.feed_data(CHUNK)


def h11_verdict(data: bytes) -> str:
    f = framing.Framing()
    f.send(framing.request(EP, "GET", "/", {}, None))
    try:
        body = f.feed(data)
    except FetchError as exc:
        return f"refused: {exc.reason}"
    extra = " (" + ", ".join(f"{k}: {v}" for k, v in f.headers.items() if k == "x-a") + ")"
    return f"status {f.status}, body {body!r}" + (extra if "x-a" in f.headers else "")


def httptools_verdict(data: bytes) -> str:
    sink = _Sink()
    p = httptools.HttpResponseParser(sink)
    try:
        p.feed_data(data)
    except httptools.HttpParserError as exc:
        return f"refused: {exc}"
    return f"status {p.get_status_code()}, body {bytes(sink.body)!r}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20000)
    n = ap.parse_args().repeat
    rows = [
        {"parser": "h11", "get_us": best(h11_get, n), "stream_chunk_us": best(h11_stream, n)},
        {
            "parser": "httptools",
            "get_us": best(httptools_get, n),
            "stream_chunk_us": best(httptools_stream, n),
        },
    ]
    report("framing", rows)
    print()
    for name, data in CASES.items():
        print(f"{name}: RFC: {RFC[name]}")
        print(f"    h11:       {h11_verdict(data)}")
        print(f"    httptools: {httptools_verdict(data)}")


if __name__ == "__main__":
    main()
