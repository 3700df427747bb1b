"""Untrusted text made safe to show in a terminal: the one sanitiser for node and config text.

A terminal obeys what it is sent: `ESC [ 2 J` clears the screen, `ESC ] 52 ;` writes the
clipboard, `ESC ] 0 ;` retitles the window, a CR or a cursor move overwrites other rows, and a
bidi override (U+202E) makes text read backwards. So every string that came from a node or a
config file goes through `clean` before any view draws or prints it. Nothing is dropped: each
such character is replaced by a visible stand-in (`␛[2J`, `\\x9b`, `\\u202e`), so the operator
sees that something odd was sent. Plain Python, no Rich or Textual (an import-linter contract),
so the wire models, the aggregator and every view share it. `shown` is the same care for a
value quoted in a problem line.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls and DEL have Unicode "control pictures" (one cell each: ␛ ␊ ␀ ␡); C1 controls,
# bidi controls, line/paragraph separators and lone surrogates have none, so they are spelled
# as Python escapes.
_PICTURES = {c: chr(0x2400 + c) for c in range(0x20)} | {0x7F: "\u2421"}
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_UNSAFE_BLOCK = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _stand_in(m: re.Match[str]) -> str:
    c = ord(m.group())
    if c in _PICTURES:
        return _PICTURES[c]
    return f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}"


def clean(text: str) -> str:
    """One line of untrusted text, safe for a terminal (newlines and tabs become ␊ and ␉)."""
    if text.isprintable():  # the usual case: one C call, no copy
        return text
    return _UNSAFE.sub(_stand_in, text)


def clean_block(text: str) -> str:
    """Like `clean`, but newlines stay: for multi-line text such as a command's output."""
    if text.isprintable():
        return text
    return _UNSAFE_BLOCK.sub(_stand_in, text)


def shown(value: Any) -> str:
    """A value for a problem line: short, and never str() of a 5,000-digit int (it raises)."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(10**18) < value < 10**18:
        return f"a {value.bit_length()}-bit number"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."
