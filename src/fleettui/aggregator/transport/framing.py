"""HTTP/1.1 framing of requests and answers, by h11 (no I/O here).

h11 does what RFC 9112 asks of a client: interim 1xx answers skipped, no body after a 204 or
304, duplicate identical Content-Length accepted and differing ones refused, obs-fold replaced
by a space, any transfer coding but chunked refused (nothing here decodes gzip), chunked
bodies decoded with their trailers. `Framing` adds what a node's answers need on top: bounded
heads, headers as one dict, the reason for whatever h11 refuses. docs/performance.md has the
benchmark that chose h11 over httptools and a hand-written parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import h11

from fleettui import __version__
from fleettui.aggregator.transport.errors import FetchError, StreamBroken, protocol_error
from fleettui.aggregator.transport.tls import DEFAULT, TlsPolicy

MAX_BODY = 1 << 20  # 1 MiB: a snapshot is a few KiB; anything near this is not an agent
HEAD_CAP = 64 * 1024  # status line and headers of one answer
USER_AGENT = f"fleettui/{__version__}"
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True)
class Endpoint:
    """A node's base URL, split once: where to connect and what to put in the request line."""

    scheme: str
    host: str
    port: int
    prefix: str  # path of the base URL without its trailing slash
    host_header: str
    tls: TlsPolicy = DEFAULT  # for https: what is trusted and shown (transport/tls.py)

    @classmethod
    def parse(cls, url: str, tls: TlsPolicy = DEFAULT) -> Endpoint:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = u.port or (443 if u.scheme == "https" else 80)
        host = u.hostname if u.hostname.isascii() else u.hostname.encode("idna").decode()
        shown = f"[{host}]" if ":" in host else host
        default = (u.scheme == "https" and port == 443) or (u.scheme == "http" and port == 80)
        shown = shown if default else f"{shown}:{port}"
        prefix = quote(u.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        return cls(u.scheme, host, port, prefix, shown, tls)

    @property
    def origin(self) -> str:
        """scheme://host[:port], as a browser would send it in Origin."""
        return f"{self.scheme}://{self.host_header}"


def request(
    ep: Endpoint,
    method: str,
    target: str,
    headers: dict[str, str],
    token: str | None,
    body: bytes = b"",
) -> h11.Request:
    """A request for `target` (path and query); FetchError for a header value HTTP does not
    allow (a token or an event id with a line break would otherwise smuggle in headers)."""
    sent = {
        "Host": ep.host_header,
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",
        **headers,
    }
    if token:
        sent["Authorization"] = f"Bearer {token}"
    if method != "GET":
        sent["Content-Length"] = str(len(body))
    for k, v in sent.items():
        if not _HEADER_VALUE.fullmatch(v):
            raise FetchError(f"{k} header has characters HTTP does not allow", reachable=True)
    return h11.Request(method=method, target=f"{ep.prefix}{target}", headers=list(sent.items()))


class Framing:
    """One exchange on a connection: request bytes out, body bytes in.

    `feed` takes what the socket delivered and returns the body bytes it completes; the head
    (`status`, `headers`) is set as soon as it is whole. Errors are StreamBroken with a reason.
    """

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_CAP)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.done = False  # the body is complete (or the node closed the connection)
        self.received = False  # any byte of the current answer arrived

    def send(self, req: h11.Request, body: bytes = b"") -> bytes:
        """The bytes of the request (one exchange per Framing)."""
        h = self._h11
        data = h.send(req) or b""
        if body:
            data += h.send(h11.Data(data=body)) or b""
        return data + (h.send(h11.EndOfMessage()) or b"")

    @property
    def reusable(self) -> bool:
        """The answer was read to its end, the node keeps the connection open and sent nothing
        more (h11 moves to MUST_CLOSE for `Connection: close`, HTTP/1.0 or a body to EOF)."""
        h = self._h11
        return (
            self.done
            and h.our_state is h11.DONE
            and h.their_state is h11.DONE
            and not h.trailing_data[0]
        )

    def feed(self, data: bytes) -> bytes:
        """Body bytes completed by `data` (b"" when more must arrive first)."""
        if not data:
            return b""  # to h11 an empty read is the end of the connection: that is `eof`
        self.received = True
        self._h11.receive_data(data)
        return self._events()

    def _events(self) -> bytes:
        h = self._h11
        out: list[bytes] = []
        while not self.done:
            try:
                ev = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise protocol_error(exc, head_done=self.head_done) from None
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                break
            if type(ev) is h11.Data:
                out.append(ev.data)
            elif type(ev) is h11.Response:
                self.status = ev.status_code
                headers: dict[str, str] = {}
                for name, value in ev.headers:
                    k, v = name.decode("latin-1"), value.decode("latin-1")
                    headers[k] = f"{headers[k]}, {v}" if k in headers else v
                self.headers = headers
                self.head_done = True
            elif type(ev) is h11.EndOfMessage or type(ev) is h11.ConnectionClosed:
                self.done = True
        return b"".join(out) if len(out) != 1 else out[0]

    def eof(self) -> bytes:
        """The node closed the connection: the rest of the body, or StreamBroken when the
        answer's framing said more was to come."""
        if not self.head_done:
            if self.received:
                raise StreamBroken("not an HTTP answer: connection closed mid-head")
            raise FetchError("connection closed without an answer", reachable=False)
        if self.done:
            return b""
        try:
            self._h11.receive_data(b"")
            return self._events()
        except StreamBroken:
            self.done = True
            raise StreamBroken("connection closed mid-answer", reachable=True) from None

    def encoding_problem(self) -> str | None:
        enc = self.headers.get("content-encoding", "identity").lower()
        return None if enc in ("", "identity") else f"unsupported content-encoding {enc!r}"

    def announced_over(self, cap: int) -> int | None:
        """The announced Content-Length when it is over `cap`."""
        n = self.headers.get("content-length", "")
        return int(n) if n.isdigit() and int(n) > cap else None
