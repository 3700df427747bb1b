"""Small fixed-size histories per node, so memory stays flat however long the dashboard runs."""

from __future__ import annotations

import math
from array import array

from fleettui.wire import MAX_UNIX_TIME, NodeSnapshot

POWER_BUCKET_S = 15.0  # one sparkline bucket: the mean of the samples in it
POWER_WINDOW_S = 600.0  # how much of it is kept: ten minutes
POWER_BUCKETS = round(POWER_WINDOW_S / POWER_BUCKET_S)


class PowerHistory:
    """Mean watts per `bucket_s` bucket over the last `window_s`, oldest first.

    Buckets are aligned on the snapshot's own clock (bucket n covers [n, n + 1) * bucket_s),
    so a node's history moves only when a bucket completes, whatever the poll rate: the views
    redraw a sparkline every 15 s, not every poll (docs/performance.md, bytes to the terminal).
    Samples arrive from polls and from the event stream; one seen twice (same timestamp) or
    late counts once or not at all. Memory is flat: one float a bucket in a flat array (40 of
    them, 320 bytes a node) plus the running sum of the bucket being filled.
    """

    def __init__(self, window_s: float = POWER_WINDOW_S, bucket_s: float = POWER_BUCKET_S) -> None:
        self.bucket_s = bucket_s
        self.buckets = max(1, round(window_s / bucket_s))
        self._means = array("d")  # completed buckets, oldest first; NaN where no sample came
        self._filling: int | None = None  # the bucket being filled; the last mean is the one before
        self._sum = 0.0
        self._count = 0
        self._last_ts = -math.inf
        self._values: list[float | None] = []

    def add(self, ts: float, watts: float | None) -> bool:
        """Record a sample; returns whether the completed history changed."""
        if watts is None or not (math.isfinite(watts) and 0 <= ts <= MAX_UNIX_TIME):
            return False  # the wire refuses these; a caller that skipped it gets no crash
        bucket = int(ts // self.bucket_s)
        filling = self._filling
        if filling is not None and bucket < filling - self.buckets:
            self._start_over()  # the node's clock stepped far back
            filling = None
        if filling is None:
            self._filling, self._sum, self._count, self._last_ts = bucket, watts, 1, ts
            return False
        if ts <= self._last_ts:
            return False  # the same snapshot again (poll and stream), or an older one
        self._last_ts = ts
        if bucket == filling:
            self._sum += watts
            self._count += 1
            return False
        means = self._means
        means.append(self._sum / self._count)
        gap = min(bucket - filling - 1, self.buckets)  # buckets with no sample: the node was away
        means.extend([math.nan] * gap)
        if len(means) > self.buckets:
            del means[: len(means) - self.buckets]
        self._filling, self._sum, self._count = bucket, watts, 1
        self._values = [None if math.isnan(m) else m for m in means]
        return True

    def _start_over(self) -> None:
        del self._means[:]
        self._values = []
        self._filling = None
        self._last_ts = -math.inf

    def values(self) -> list[float | None]:
        """The completed buckets' means, oldest first (None: no sample in that bucket)."""
        return list(self._values)

    @property
    def last(self) -> int | None:
        """The number of the newest completed bucket (`values()[-1]`), None before one."""
        return None if self._filling is None or not self._means else self._filling - 1

    def __len__(self) -> int:
        return len(self._means)


def daily_costs(snap: NodeSnapshot, days: int = 7) -> list[float]:
    """Cost per day for the last `days` days, oldest first, as the agent reported it."""
    return [round(d.cost, 4) for d in snap.cost.daily[-days:]]
