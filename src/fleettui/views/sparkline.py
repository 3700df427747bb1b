"""Block sparklines as plain strings, shared by the Textual table, the detail screen and Rich.

Plain strings (not widgets) because a sparkline lives inside a table cell, must have a fixed
width to keep columns steady, and must render the same in the Rich fallback and in snapshots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BARS = "▁▂▃▄▅▆▇█"


def _fit(values: Sequence[float], width: int) -> list[float]:
    """At most `width` values: longer series are averaged into `width` equal buckets."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if len(vals) <= width:
        return vals
    out = []
    for i in range(width):
        lo = i * len(vals) // width
        hi = max(lo + 1, (i + 1) * len(vals) // width)
        bucket = vals[lo:hi]
        out.append(sum(bucket) / len(bucket))
    return out


def _scale(vals: list[float], lo: float | None, hi: float | None) -> tuple[float, float]:
    low = min(vals) if lo is None else lo
    high = max(vals) if hi is None else hi
    return low, high


def sparkline(
    values: Sequence[float], width: int, lo: float | None = None, hi: float | None = None
) -> str:
    """`width` characters, newest value at the right; blanks pad a short history on the left.

    A flat series draws a mid-height line so it still reads as "steady", not "zero".
    """
    if width <= 0:
        return ""
    vals = _fit(values, width)
    if not vals:
        return " " * width
    low, high = _scale(vals, lo, hi)
    span = high - low
    if span <= 0:
        bars = BARS[3] * len(vals)
    else:
        top = len(BARS) - 1
        bars = "".join(BARS[max(0, min(top, round((v - low) / span * top)))] for v in vals)
    return bars.rjust(width)


def sparkline_rows(
    values: Sequence[float], width: int, height: int, lo: float | None = None
) -> list[str]:
    """A taller sparkline: `height` lines of `width` columns, top line first.

    Each column is filled with full blocks up to its value plus one partial block, giving
    8 * height levels. The scale starts at `lo` (default: the series minimum).
    """
    if width <= 0 or height <= 0:
        return []
    vals = _fit(values, width)
    if not vals:
        return [" " * width for _ in range(height)]
    low, high = _scale(vals, lo, None)
    span = high - low
    levels = 8 * height
    heights = [levels // 2 if span <= 0 else max(1, round((v - low) / span * levels)) for v in vals]
    pad = width - len(vals)
    rows = []
    for r in range(height - 1, -1, -1):  # r = row index from the bottom
        line = []
        for h in heights:
            fill = h - 8 * r
            line.append(" " if fill <= 0 else "█" if fill >= 8 else BARS[fill - 1])
        rows.append(" " * pad + "".join(line))
    return rows
