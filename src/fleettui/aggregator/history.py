"""Small fixed-size histories per node, so memory stays flat however long the dashboard runs."""

from __future__ import annotations

import math
from array import array

from fleettui.wire import MAX_UNIX_TIME, NodeSnapshot


class PowerHistory:
    """Watts over the last `window_s`, one value per `slot_s` slot, oldest first.

    Samples arrive from polls and from the event stream at whatever rate the node ticks; slotting
    by the snapshot's own timestamp gives the sparkline a steady time axis and drops duplicates
    (the same snapshot seen by the poller and the stream counts once). Slots and watts live in
    two flat arrays (16 bytes a sample, not a tuple of two boxed numbers: 1 KB a node, not 6).
    """

    def __init__(self, window_s: float = 120.0, slot_s: float = 2.0) -> None:
        self.slot_s = slot_s
        self.slots = max(1, round(window_s / slot_s))
        self._slot = array("q")
        self._watts = array("d")

    def add(self, ts: float, watts: float | None) -> bool:
        """Record a sample; returns whether the visible history changed."""
        if watts is None or not (math.isfinite(watts) and 0 <= ts <= MAX_UNIX_TIME):
            return False  # the wire refuses these; a caller that skipped it gets no crash
        slot = int(ts // self.slot_s)
        slots, ws = self._slot, self._watts
        if slots:
            last_slot = slots[-1]
            if slot < last_slot - self.slots:
                del slots[:], ws[:]  # the node's clock stepped far back: start over
            elif slot < last_slot:
                return False  # older than what we have (a late duplicate)
            elif slot == last_slot:
                if ws[-1] == watts:
                    return False
                ws[-1] = watts
                return True
        slots.append(slot)
        ws.append(watts)
        # a gap (node was offline) or a full window: forget what is out of the window
        drop = 0
        while drop < len(slots) and slots[drop] <= slot - self.slots:
            drop += 1
        if drop:
            del slots[:drop], ws[:drop]
        return True

    def values(self) -> list[float]:
        return self._watts.tolist()

    def __len__(self) -> int:
        return len(self._watts)


def daily_costs(snap: NodeSnapshot, days: int = 7) -> list[float]:
    """Cost per day for the last `days` days, oldest first, as the agent reported it."""
    return [round(d.cost, 4) for d in snap.cost.daily[-days:]]
