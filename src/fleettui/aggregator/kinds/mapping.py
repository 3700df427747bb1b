"""Helpers for mapping foreign JSON onto NodeSnapshot: sentinels, units, shape errors."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from fleettui.aggregator.kinds.base import describe_validation
from fleettui.aggregator.transport.errors import FetchError

MB = 1024 * 1024


def parse_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FetchError(f"bad answer from {what}: invalid JSON ({exc})", reachable=True) from None


def pos(x: Any) -> float | None:
    """A measured value, or None for the 'not measured' sentinels (-1, 0, null, strings) and
    for what is no measurement at all (NaN, Infinity, integers beyond any float)."""
    if not isinstance(x, int | float) or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except OverflowError:
        return None
    return v if math.isfinite(v) and v > 0 else None


def mb(x: Any) -> float | None:
    """Bytes to MiB (one decimal), None when not measured."""
    v = pos(x)
    return round(v / MB, 1) if v is not None else None


def host_of(url: str) -> str:
    return urlsplit(url).hostname or url


def shape_error(what: str, exc: Exception) -> FetchError:
    if isinstance(exc, ValidationError):  # e.g. NaN watts: `out of bounds: power.watts: ...`
        return FetchError(f"bad answer from {what}: {describe_validation(exc)}", reachable=True)
    return FetchError(f"bad answer from {what}: wrong shape: {exc}", reachable=True)
