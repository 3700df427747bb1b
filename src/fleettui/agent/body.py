"""An action body from raw bytes to a JSON object, under limits that make any input cheap.

Parsed once, before and independent of authentication, so the audit line of a refused attempt
and the validation of an accepted one read the same object. The limits exist because Python's
json module accepts what the rest of the agent cannot use: integers of any length (int() then
fails or burns CPU), NaN/Infinity, duplicate keys (the last wins: two parsers could disagree on
what was asked), nesting until RecursionError, and escaped lone surrogates ("\\ud800"), which are
valid JSON but not encodable as UTF-8, so they would crash the audit writer. A valid request is a
flat object of three short strings, so the limits are generous for it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from fleettui.agent.refusals import Rejection

MAX_DEPTH = 8
MAX_INT_DIGITS = 20
MAX_FLOAT_CHARS = 40
MAX_STRING = 1024  # characters; the longest valid value (a model name) has 200
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class _Refused(ValueError):
    """Raised inside json hooks; json.loads passes it through unchanged."""


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_FLOAT_CHARS:
        raise _Refused(f"number of more than {MAX_FLOAT_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("number out of range")
    return value


def _constant(name: str) -> float:
    raise _Refused(f"{name} is not JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Refused("duplicate key")
    return out


@dataclass(frozen=True)
class Body:
    """The parsed object (None when the body is not one) and why it is not a request, if so."""

    data: dict[str, Any] | None
    problem: Rejection | None = None


def _check_values(data: Any) -> None:
    """Depth, string length and surrogates of every key and value, without recursion."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_string(value)
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                if isinstance(k, str):
                    _check_string(k)
                stack.append((v, depth + 1))


def _check_string(s: str) -> None:
    if len(s) > MAX_STRING:
        raise _Refused(f"string of more than {MAX_STRING} characters")
    if _SURROGATE_RE.search(s):
        raise _Refused("string with a lone surrogate (not encodable as UTF-8)")


def parse_body(raw: bytes) -> Body:
    """Strict UTF-8 JSON under the limits above; a problem is a 400 naming the limit."""
    if not raw.strip():
        hint = 'send JSON like {"action": "restart", "engine": "ollama"}'
        return Body(None, Rejection(400, "empty body", hint))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Body(None, Rejection(400, "body is not UTF-8", {"byte_offset": exc.start}))
    try:
        data = json.loads(
            text,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
        _check_values(data)
    except _Refused as exc:
        return Body(None, Rejection(400, f"body refused: {exc}"))
    except RecursionError:
        return Body(None, Rejection(400, f"body refused: nested deeper than {MAX_DEPTH} levels"))
    except ValueError:  # json.JSONDecodeError
        return Body(None, Rejection(400, "body is not JSON"))
    if not isinstance(data, dict):
        got = type(data).__name__
        return Body(None, Rejection(400, "body must be a JSON object", {"got": got}))
    return Body(data)
