"""The event stream's parser: server-sent events from body bytes, bounded.

Fed from `stream.PushStream`'s read callback, so it never waits. A line of any length is
never held: an event larger than the cap ends the stream, and an event cut off by the
connection closing is reported as such (`mid_event`) instead of being silently dropped (or
worse, half applied).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleettui.aggregator.transport.errors import mib
from fleettui.aggregator.transport.framing import MAX_BODY

_EOL = re.compile(rb"\r\n|\r|\n")


class StreamError(Exception):
    """The event stream broke in a way worth showing to the operator."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event (`event` defaults to "message", as the spec says)."""

    event: str
    data: str
    id: str = ""
    retry: int | None = None


class SSEParser:
    """Incremental parser following the WHATWG event-stream rules, with a size cap per event."""

    def __init__(self, cap: int = MAX_BODY) -> None:
        self.cap = cap
        self._buf = bytearray()
        self._first = True
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self._id_buf: str | None = None
        self._retry: int | None = None
        self.last_id = ""

    def finish(self) -> list[ServerSentEvent]:
        """End of stream: a trailing CR still ends its line; a partial event is not dispatched."""
        return self.feed(b"\n") if self._buf == b"\r" else []

    @property
    def mid_event(self) -> bool:
        """Some of an event has arrived but not its terminating blank line."""
        return bool(self._buf or self._data or self._event or self._id_buf is not None)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if not self._buf and not self._first and b"\r" not in chunk:
            return self._feed_lf(chunk)
        self._buf += chunk
        if self._first:
            if len(self._buf) < 3 and b"\xef\xbb\xbf".startswith(self._buf):
                return []  # maybe the start of a byte-order mark: wait for more
            if self._buf.startswith(b"\xef\xbb\xbf"):
                del self._buf[:3]
            self._first = False
        out: list[ServerSentEvent] = []
        pos = 0
        while True:
            m = _EOL.search(self._buf, pos)
            # a lone CR at the end may be the first half of CRLF: wait for the next chunk
            if m is None or (m.group() == b"\r" and m.end() == len(self._buf)):
                break
            line = bytes(self._buf[pos : m.start()]).decode("utf-8", errors="replace")
            pos = m.end()
            ev = self._line(line)
            if ev is not None:
                out.append(ev)
        del self._buf[:pos]
        if len(self._buf) + self._size > self.cap:
            raise StreamError(f"event over {mib(self.cap)}")
        return out

    def _feed_lf(self, chunk: bytes) -> list[ServerSentEvent]:
        """The usual case, whole LF-terminated lines and nothing buffered: decode the lines in
        one go (UTF-8 never has a 0x0A inside a character, so this equals line by line)."""
        end = chunk.rfind(b"\n")
        out: list[ServerSentEvent] = []
        if end >= 0:
            for line in chunk[:end].decode("utf-8", errors="replace").split("\n"):
                ev = self._line(line)
                if ev is not None:
                    out.append(ev)
        rest = chunk[end + 1 :]
        if rest:
            self._buf += rest
        if len(self._buf) + self._size > self.cap:
            raise StreamError(f"event over {mib(self.cap)}")
        return out

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
            self._size += len(value) + 1
            if self._size > self.cap:
                raise StreamError(f"event over {mib(self.cap)}")
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id_buf = value
        elif name == "retry" and value.isascii() and value.isdigit() and len(value) <= 9:
            self._retry = int(value)  # "²" is a digit to isdigit() and not to int(); and 5000
            # digits would not even convert: the field is ignored, as the spec says for junk
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if self._id_buf is not None:  # the id only counts once its event is complete
            self.last_id = self._id_buf
            self._id_buf = None
        data, event, self._data, self._event, self._size = self._data, self._event, [], "", 0
        if not data:
            return None
        return ServerSentEvent(
            event=event or "message", data="\n".join(data), id=self.last_id, retry=self._retry
        )
