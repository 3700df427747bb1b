"""Block sparklines as plain strings, shared by the Textual table, the detail screen and Rich.

Plain strings (not widgets) because a sparkline lives inside a table cell, must have a fixed
width to keep columns steady, and must render the same in the Rich fallback and in snapshots.

The rules that make them readable (issue 19): every bar is drawn against a scale from zero
to `top` (the column's, shared by the whole fleet), so a 2 W wobble is a flat line and 300 W
sits at its height; zero and "no sample" are blank, never a bar; the time axis is made of
buckets aligned on the clock (`aligned`), so a bar changes when its bucket completes, not on
every poll (what the terminal is sent, bench/terminal_bytes.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BARS = "▁▂▃▄▅▆▇█"
NICE = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)  # steps of a scale's top, per decade


def nice_top(peak: float) -> float:
    """The smallest NICE step times a power of ten that is at least `peak` (0 for none).

    Rounding up to a coarse step keeps a fleet's scale still while its peak wanders, so the
    sparklines are not redrawn with every new maximum."""
    if not (math.isfinite(peak) and peak > 0):
        return 0.0
    e = math.floor(math.log10(peak))
    steps = [s * 10.0**e if e >= 0 else s / 10.0**-e for s in NICE]  # 0.3, not 0.30000000000000004
    return next(s for s in steps if s >= peak * (1 - 1e-9))


def _level(v: float | None, top: float, levels: int) -> int:
    """0 (blank) for zero, a gap or a bad value; else 1..levels, by the value's share of top."""
    if v is None or not math.isfinite(v) or v <= 0 or top <= 0:
        return 0
    return max(1, min(levels, round(v / top * levels)))


def sparkline(values: Sequence[float | None], width: int, top: float) -> str:
    """The last `width` values, one cell each, newest at the right, against 0..`top`;
    blanks pad a short history on the left."""
    if width <= 0:
        return ""
    bars = "".join(
        " " if (n := _level(v, top, len(BARS))) == 0 else BARS[n - 1] for v in values[-width:]
    )
    return bars.rjust(width)


def aligned(
    values: Sequence[float | None], last: int, per_bar: int, bars: int
) -> list[float | None]:
    """`values` (one per time bucket, the newest being bucket number `last`) merged into at most
    `bars` means of `per_bar` buckets each, oldest first.

    Groups are aligned on absolute bucket numbers (multiples of `per_bar`), not on the newest
    bucket: so only the newest group's bar moves as its buckets complete, and all bars shift
    together once per group, instead of every bar changing with every bucket."""
    per_bar = max(1, per_bar)
    first = last - len(values) + 1
    sums: dict[int, tuple[float, int]] = {}
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            continue
        g = (first + i) // per_bar
        s, n = sums.get(g, (0.0, 0))
        sums[g] = (s + v, n + 1)
    newest = last // per_bar
    out: list[float | None] = []
    for g in range(newest - bars + 1, newest + 1):
        if g < first // per_bar:
            continue  # before the history began: left blank by sparkline's padding
        s, n = sums.get(g, (0.0, 0))
        out.append(s / n if n else None)
    return out


def sparkline_rows(
    values: Sequence[float | None], width: int, height: int, top: float
) -> list[str]:
    """A taller sparkline: `height` lines of the last `width` values, top line first.

    Each column is filled with full blocks up to its value plus one partial block, giving
    8 * height levels of 0..`top`; zero and gaps are empty columns."""
    if width <= 0 or height <= 0:
        return []
    vals = list(values[-width:])
    levels = 8 * height
    heights = [_level(v, top, levels) for v in vals]
    pad = width - len(vals)
    rows = []
    for r in range(height - 1, -1, -1):  # r = row index from the bottom
        line = []
        for h in heights:
            fill = h - 8 * r
            line.append(" " if fill <= 0 else "█" if fill >= 8 else BARS[fill - 1])
        rows.append(" " * pad + "".join(line))
    return rows
