"""Power → energy → cost: trapezoid integration with daily totals that survive restarts."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from fleettui.fsutil import atomic_write
from fleettui.wire import Cost, DailyCost

log = logging.getLogger(__name__)
DAYS_KEPT = 7
SAVE_EVERY_S = 60.0


def local_day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).date().isoformat()


class EnergyLedger:
    """Integrates watt samples into Wh per local day; persisted in a small JSON state file.

    A gap longer than `max_gap_s` (agent stopped, machine suspended) is not integrated: we do not
    know what the machine drew meanwhile, and guessing would invent cost.
    """

    def __init__(
        self,
        state_file: Path | None,
        price_per_kwh: float,
        currency: str,
        *,
        max_gap_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_file = state_file
        self.price_per_kwh = price_per_kwh
        self.currency = currency
        self.max_gap_s = max_gap_s
        self._clock = clock
        self.daily_wh: dict[str, float] = {}
        self.total_wh = 0.0
        self._last: tuple[float, float] | None = None
        self._last_save = 0.0
        self.problem: str | None = None
        self._load()

    def _load(self) -> None:
        if self.state_file is None:
            return
        try:
            data = json.loads(self.state_file.read_text())
            self.daily_wh = {str(k): float(v) for k, v in data.get("daily_wh", {}).items()}
            self.total_wh = float(data.get("total_wh", 0.0))
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # A corrupt state file costs history, never the agent; keep it aside for inspection.
            self.problem = f"energy state {self.state_file} unreadable ({exc}); starting afresh"
            log.warning(self.problem)
            try:
                self.state_file.rename(self.state_file.with_suffix(".corrupt"))
            except OSError:
                pass

    def add_sample(self, ts: float, watts: float | None) -> None:
        if watts is None or watts < 0:
            self._last = None
            return
        if self._last is not None:
            t0, w0 = self._last
            dt_s = ts - t0
            if 0 < dt_s <= self.max_gap_s:
                wh = (w0 + watts) / 2.0 * dt_s / 3600.0
                day = local_day(t0 + dt_s / 2.0)
                self.daily_wh[day] = self.daily_wh.get(day, 0.0) + wh
                self.total_wh += wh
        self._last = (ts, watts)
        self._prune(ts)

    def _prune(self, now: float) -> None:
        keep = {local_day(now - 86400 * i) for i in range(DAYS_KEPT + 1)}
        for day in [d for d in self.daily_wh if d not in keep]:
            del self.daily_wh[day]

    def cost(self, now: float | None = None) -> Cost:
        now = self._clock() if now is None else now
        days = [local_day(now - 86400 * i) for i in range(DAYS_KEPT - 1, -1, -1)]
        price = self.price_per_kwh
        daily = [
            DailyCost(
                date=d,
                energy_wh=round(self.daily_wh.get(d, 0.0), 3),
                cost=round(self.daily_wh.get(d, 0.0) / 1000.0 * price, 4),
            )
            for d in days
        ]
        return Cost(
            currency=self.currency,
            price_per_kwh=price,
            today=daily[-1].cost,
            daily=daily,
            total_7d=round(sum(c.cost for c in daily), 4),
        )

    def maybe_save(self, now: float | None = None, *, force: bool = False) -> None:
        if self.state_file is None:
            return
        now = self._clock() if now is None else now
        if not force and now - self._last_save < SAVE_EVERY_S:
            return
        self._last_save = now
        body = json.dumps({"version": 1, "total_wh": self.total_wh, "daily_wh": self.daily_wh})
        try:
            atomic_write(self.state_file, body, mode=0o644)
        except OSError as exc:
            self.problem = f"energy state not saved: {exc}"
            log.warning(self.problem)
