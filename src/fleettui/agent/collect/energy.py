"""Power → energy → cost.

Two separate things live here. `EnergyMeter` turns readings of the measured parts into energy:
hardware counters (NVML total energy, RAPL) by their deltas, which are exact however the power
moves between two readings, and sampled power (NVML power where the board has no counter, a BMC's
wall reading) by the trapezoid rule, a declared approximation. Its total counts from 0 at each
process start, the semantics Prometheus expects of a counter. `EnergyLedger` is the persisted
bookkeeping by calendar day (in a configured zone, DST-safe), each day with the price that
applied to it, which survives restarts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from zoneinfo import ZoneInfo

from fleettui.agent.collect.bounds import bounded
from fleettui.fsutil import atomic_write
from fleettui.wire import Cost, DailyCost, PowerPart, in_scope

log = logging.getLogger(__name__)
DAYS_KEPT = 7
SAVE_EVERY_S = 60.0
MIN_AVG_S = 0.5  # a counter average over less than this is noise (the agent's first tick)
HANDOVER_MAX_S = 600.0  # a clean restart hands its last readings on for this long
SCRAPE_CARRY_S = 300.0  # a last scrape older than this at the stop is no scraper's to miss
WRAP_SAFE_W = 1000.0  # no RAPL zone draws more on average


def max_gap_s(sample_s: float) -> float:
    """A longer gap between two readings (agent stopped, machine suspended) is not integrated
    from sampled power: we do not know what the machine drew meanwhile. It scales with the
    configured cadence, so a slow agent still integrates."""
    return 3.0 * sample_s + 5.0


@dataclass
class Reading:
    """One part at one instant: a counter in joules, a power figure, or both."""

    name: str
    kind: str
    source: str
    key: str  # identity across restarts: GPU uuid, RAPL zone path
    watts: float | None = None
    counter_j: float | None = None
    wrap_j: float | None = None  # the counter wraps here (RAPL); None: it does not wrap


@dataclass
class _Part:
    reading: Reading
    t: float
    energy_j: float = 0.0
    avg_t: float = 0.0  # start of the counter average shown as watts
    avg_j: float = 0.0
    watts: float | None = None


@dataclass
class EnergyMeter:
    """Energy of every measured part since this process started; the node's is their sum."""

    sample_s: float = 2.0
    started: float = field(default_factory=time.time)
    boot_time: float | None = None  # counters are only comparable within one boot
    node_j: float = 0.0
    _parts: dict[str, _Part] = field(default_factory=dict)
    _handover: dict[str, tuple[float, float]] = field(default_factory=dict)
    _handover_seen: dict[str, float] = field(default_factory=dict)
    _published: dict[str, float] = field(default_factory=dict)
    _scraped: dict[str, float] = field(default_factory=dict)
    _scraped_at: float | None = None
    problems: list[str] = field(default_factory=list)

    def accept_handover(
        self, readings: dict[str, tuple[float, float]], scraped: dict[str, float]
    ) -> None:
        """What the previous process handed on at a clean stop: its last counter readings
        (key -> (t, joules)), and those as of its last scrape. The first delta then covers the
        downtime, so the daily ledger loses nothing; and this process's own counter also
        carries what the previous one counted after its last scrape, so a Prometheus that
        sees the reset loses nothing either."""
        self._handover = dict(readings)
        self._handover_seen = dict(scraped)

    def mark_published(self) -> None:
        """The counters as of the snapshot just published (what a scrape shows from now on)."""
        self._published = {
            p.reading.key: p.reading.counter_j
            for p in self._parts.values()
            if p.reading.counter_j is not None
        }

    def mark_scraped(self, now: float | None = None) -> None:
        self._scraped = self._published
        self._scraped_at = time.time() if now is None else now

    def handover(self) -> dict[str, object]:
        readings = {
            p.reading.key: [p.t, p.reading.counter_j]
            for p in self._parts.values()
            if p.reading.counter_j is not None
        }
        return {
            "boot_time": self.boot_time,
            "readings": readings,
            "scraped": self._scraped,
            "scraped_at": self._scraped_at,
        }

    def update(self, t: float, readings: list[Reading]) -> tuple[float, float, float]:
        """Take one round of readings; returns (t0, t1, joules) the node used since the previous
        round. With a wall reading only it counts: the other parts are inside it."""
        self.problems = []
        readings = [self._checked(r) for r in readings]
        counted = {id(r) for r in in_scope(readings)}
        added = 0.0
        t0 = t
        for r in readings:
            prev = self._parts.get(r.name)
            if prev is None:
                prev = self._from_handover(r, t, counted=id(r) in counted)
                if prev is None:
                    self._parts[r.name] = _Part(r, t, avg_t=t, watts=r.watts)
                    continue
                self._parts[r.name] = prev
            t0 = min(t0, prev.t)
            d = self._delta(prev, r, t)
            prev.energy_j += d
            if id(r) in counted:
                added += d
            if r.counter_j is not None:
                prev.avg_j += d
                if t - prev.avg_t >= MIN_AVG_S:
                    watts = prev.avg_j / (t - prev.avg_t)
                    prev.watts = bounded(
                        PowerPart, "watts", watts, f"energy: {r.name}", self.problems
                    )
                    prev.avg_t, prev.avg_j = t, 0.0
                if r.watts is not None:  # the device's own reading is the better "now"
                    prev.watts = r.watts
            else:
                prev.watts = r.watts
            prev.reading, prev.t = r, t
        seen = {r.name for r in readings}
        for name, p in self._parts.items():
            if name not in seen:  # unreadable this round: no figure rather than an old one
                p.watts = None
        self.node_j += added
        return t0, t, added

    def _checked(self, r: Reading) -> Reading:
        """A reading whose figures the wire would refuse loses them (None: not measured)."""
        where = f"energy: {r.name}"
        watts = bounded(PowerPart, "watts", r.watts, where, self.problems)
        counter = bounded(PowerPart, "energy_j", r.counter_j, where, self.problems)
        wrap = bounded(PowerPart, "energy_j", r.wrap_j, where, self.problems)
        if (watts, counter, wrap) == (r.watts, r.counter_j, r.wrap_j):
            return r
        return replace(r, watts=watts, counter_j=counter, wrap_j=wrap)

    def _from_handover(self, r: Reading, t: float, *, counted: bool) -> _Part | None:
        got = self._handover.pop(r.key, None)
        if got is None or r.counter_j is None or not 0 < t - got[0] <= HANDOVER_MAX_S:
            return None
        old = Reading(r.name, r.kind, r.source, r.key, None, got[1], r.wrap_j)
        part = _Part(old, got[0], avg_t=t)
        seen = self._handover_seen.pop(r.key, None)
        if seen is not None:
            unseen = got[1] - seen
            if unseen < 0 and r.wrap_j is not None:
                unseen += r.wrap_j
            if 0 <= unseen <= WRAP_SAFE_W * HANDOVER_MAX_S:
                part.energy_j += unseen  # counted before; never scraped: this counter only
                if counted:
                    self.node_j += unseen
        return part

    def _delta(self, prev: _Part, r: Reading, t: float) -> float:
        dt_s = t - prev.t
        if dt_s <= 0:
            return 0.0
        gap = max_gap_s(self.sample_s)
        c0, c1 = prev.reading.counter_j, r.counter_j
        if c0 is not None and c1 is not None:
            d = c1 - c0
            if r.wrap_j is not None:
                # below WRAP_SAFE_W the counter cannot wrap twice between two readings
                if dt_s <= max(gap, r.wrap_j / WRAP_SAFE_W):
                    return d if d >= 0 else d + r.wrap_j
                return 0.0
            if d >= 0:
                return d
            # a counter that went backwards without wrapping: driver reloaded, GPU reset
            self.problems.append(f"energy: {r.name} counter reset; interval from power samples")
        if dt_s > gap:
            return 0.0
        w0 = prev.watts if prev.watts is not None else prev.reading.watts
        if w0 is None or r.watts is None:
            return 0.0
        return (w0 + r.watts) / 2.0 * dt_s

    def parts(self) -> list[PowerPart]:
        return [
            PowerPart(
                name=name,
                kind=p.reading.kind,  # type: ignore[arg-type]
                source=p.reading.source,
                watts=None if p.watts is None else round(p.watts, 2),
                energy_j=round(p.energy_j, 3),
            )
            for name, p in self._parts.items()
        ]


def local_day(ts: float, tz: dt.tzinfo | None = None) -> dt.date:
    """The calendar day of `ts` in zone `tz` (None: the machine's local zone)."""
    if tz is None:
        return dt.datetime.fromtimestamp(ts).astimezone().date()
    return dt.datetime.fromtimestamp(ts, tz).date()


def day_start(day: dt.date, tz: dt.tzinfo | None = None) -> float:
    """Unix time of local midnight starting `day` (23 or 25 hours before the next on DST days)."""
    if tz is None:
        return dt.datetime.combine(day, dt.time()).timestamp()
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).timestamp()


def split_by_day(t0: float, t1: float, tz: dt.tzinfo | None) -> list[tuple[dt.date, float]]:
    """The share of [t0, t1] that falls on each local calendar day."""
    if t1 <= t0:
        return [(local_day(t1, tz), 1.0)]
    out = []
    t = t0
    while t < t1:
        day = local_day(t, tz)
        end = min(t1, day_start(day + dt.timedelta(days=1), tz))
        if end <= t:  # a zone without that midnight: never loop forever
            end = t1
        out.append((day, (end - t) / (t1 - t0)))
        t = end
    return out


def zone(name: str | None) -> dt.tzinfo | None:
    return ZoneInfo(name) if name else None


class EnergyLedger:
    """Wh per calendar day with the price of each day, persisted in a small JSON state file.

    A day's price is the configured price when energy was last added to it, so changing
    `price_per_kwh` re-prices today and leaves past days as they were.
    """

    def __init__(
        self,
        state_file: Path | None,
        price_per_kwh: float,
        currency: str,
        *,
        tz: dt.tzinfo | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_file = state_file
        self.price_per_kwh = price_per_kwh
        self.currency = currency
        self.tz = tz
        self._clock = clock
        self.days: dict[str, tuple[float, float]] = {}  # date -> (Wh, price per kWh)
        self.since_start_cost = 0.0
        self._handover: dict[str, object] = {}
        self._last_save = 0.0
        self.problem: str | None = None
        self._load()

    def _load(self) -> None:
        if self.state_file is None:
            return
        try:
            data = json.loads(self.state_file.read_text())
            if data.get("version") == 1:  # Wh per day, no price: the current price is all we know
                self.days = {
                    str(k): (float(v), self.price_per_kwh) for k, v in data["daily_wh"].items()
                }
            else:
                self.days = {
                    str(k): (float(v["wh"]), float(v["price"])) for k, v in data["days"].items()
                }
                self._handover = data.get("handover") or {}
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
            # A corrupt state file costs history, never the agent; keep it aside for inspection.
            self.problem = f"energy state {self.state_file} unreadable ({exc}); starting afresh"
            log.warning(self.problem)
            self.days, self._handover = {}, {}
            try:
                self.state_file.rename(self.state_file.with_suffix(".corrupt"))
            except OSError:
                pass

    def handover_for(
        self, boot_time: float | None
    ) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
        """The previous process's handover (EnergyMeter.accept_handover), if it stopped cleanly
        in this boot: counters from another boot are not comparable."""
        h, self._handover = self._handover, {}
        saved = h.get("boot_time")
        if boot_time is None or not isinstance(saved, int | float) or abs(saved - boot_time) > 5:
            return {}, {}
        try:
            readings = {str(k): (float(t), float(j)) for k, (t, j) in h["readings"].items()}  # type: ignore[attr-defined]
            scraped = {str(k): float(j) for k, j in (h.get("scraped") or {}).items()}  # type: ignore[attr-defined]
            at = h.get("scraped_at")
        except (AttributeError, KeyError, TypeError, ValueError):
            return {}, {}
        stopped = max((t for t, _ in readings.values()), default=0.0)
        if not isinstance(at, int | float) or stopped - at > SCRAPE_CARRY_S:
            scraped = {}
        return readings, scraped

    def add(self, t0: float, t1: float, joules: float) -> None:
        """Book energy used between t0 and t1, split over the calendar days it spans."""
        if joules <= 0:
            return
        price = self.price_per_kwh
        for day, share in split_by_day(t0, t1, self.tz):
            key = day.isoformat()
            wh = self.days.get(key, (0.0, price))[0] + joules * share / 3600.0
            self.days[key] = (wh, price)
        self.since_start_cost += joules / 3.6e6 * price
        self._prune(t1)

    def _prune(self, now: float) -> None:
        oldest = (local_day(now, self.tz) - dt.timedelta(days=DAYS_KEPT)).isoformat()
        for day in [d for d in self.days if d < oldest]:
            del self.days[day]

    def cost(self, now: float | None = None) -> Cost:
        now = self._clock() if now is None else now
        today = local_day(now, self.tz)
        daily = []
        for i in range(DAYS_KEPT - 1, -1, -1):
            key = (today - dt.timedelta(days=i)).isoformat()
            wh, price = self.days.get(key, (0.0, None))
            daily.append(
                DailyCost(
                    date=key,
                    energy_wh=round(wh, 3),
                    cost=round(wh / 1000.0 * (price or 0.0), 4),
                    price_per_kwh=price,
                )
            )
        return Cost(
            currency=self.currency,
            price_per_kwh=self.price_per_kwh,
            today=daily[-1].cost,
            daily=daily,
            total_7d=round(sum(c.cost for c in daily), 4),
            since_start=round(self.since_start_cost, 9),
        )

    def maybe_save(
        self,
        now: float | None = None,
        *,
        force: bool = False,
        handover: dict[str, object] | None = None,
    ) -> None:
        """Save every minute; the final save at shutdown also hands the meter's last counter
        readings to the next process (periodic saves do not: after a crash they would count
        energy twice)."""
        if self.state_file is None:
            return
        now = self._clock() if now is None else now
        if not force and now - self._last_save < SAVE_EVERY_S:
            return
        self._last_save = now
        body = json.dumps(
            {
                "version": 2,
                "days": {d: {"wh": wh, "price": p} for d, (wh, p) in sorted(self.days.items())},
                "handover": handover or {},
            }
        )
        try:
            atomic_write(self.state_file, body, mode=0o644)
        except OSError as exc:
            self.problem = f"energy state not saved: {exc}"
            log.warning(self.problem)
