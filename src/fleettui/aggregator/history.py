"""Small fixed-size histories per node, so memory stays flat however long the dashboard runs."""

from __future__ import annotations

from collections import deque

from fleettui.wire import NodeSnapshot


class PowerHistory:
    """Watts over the last `window_s`, one value per `slot_s` slot, oldest first.

    Samples arrive from polls and from the event stream at whatever rate the node ticks; slotting
    by the snapshot's own timestamp gives the sparkline a steady time axis and drops duplicates
    (the same snapshot seen by the poller and the stream counts once).
    """

    def __init__(self, window_s: float = 120.0, slot_s: float = 2.0) -> None:
        self.slot_s = slot_s
        self.slots = max(1, round(window_s / slot_s))
        self._buf: deque[tuple[int, float]] = deque(maxlen=self.slots)

    def add(self, ts: float, watts: float | None) -> bool:
        """Record a sample; returns whether the visible history changed."""
        if watts is None:
            return False
        slot = int(ts // self.slot_s)
        if self._buf:
            last_slot, last_w = self._buf[-1]
            if slot < last_slot - self.slots:
                self._buf.clear()  # the node's clock stepped far back: start over
            elif slot < last_slot:
                return False  # older than what we have (a late duplicate)
            elif slot == last_slot:
                if last_w == watts:
                    return False
                self._buf[-1] = (slot, watts)
                return True
        self._buf.append((slot, watts))
        while self._buf and self._buf[0][0] <= slot - self.slots:
            self._buf.popleft()  # a gap (node was offline): forget what is out of the window
        return True

    def values(self) -> list[float]:
        return [w for _, w in self._buf]

    def __len__(self) -> int:
        return len(self._buf)


def daily_costs(snap: NodeSnapshot, days: int = 7) -> list[float]:
    """Cost per day for the last `days` days, oldest first, as the agent reported it."""
    return [round(d.cost, 4) for d in snap.cost.daily[-days:]]
