"""The dashboard's alerts: the event stream through views/alerts.py's gate, out as a toast,
the terminal bell and (with `--notify`) an OSC 9 + OSC 777 desktop notification.

The bell and the terminal writer are handed in, so tests count them; the app's defaults go
through Textual's driver, whose writer also draws the frames, so the sequences never land in the
middle of one. An action this dashboard sent reports its own failures (app.on_action_done): the
agents' stream events about it are skipped here, or each failure would be told twice, and so is
its targets turning DEGRADED meanwhile (a restarted engine is down for a while).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from textual.app import App
from textual.timer import Timer

from fleettui.aggregator.state import FleetEvent
from fleettui.views.alerts import AlertGate, Notice, classify, osc_notify

TIMEOUT_S = {"error": 10.0, "warning": 8.0, "information": 4.0}  # how long a toast stays
OWN_ACTION_GRACE_S = 10.0  # the agents' stream can tell of our action after its answer came
# What our own action makes of its targets: its failure (the app's summary says so) and the
# engine it restarts or stops being down for a while (DEGRADED). OFFLINE still alerts.
OWN_EXPECTED = frozenset({"FAILED", "DEGRADED"})


@dataclass(frozen=True, slots=True)
class AlertTiming:
    """The gate's windows (views/alerts.py); tests shorten them."""

    quiet_s: float = 1.5
    max_s: float = 6.0
    cooldown_s: float = 60.0
    start_max_s: float = 15.0


DEFAULT_TIMING = AlertTiming()


class AlertRelay:
    def __init__(
        self,
        app: App,
        names: Iterable[str],
        *,
        bell: Callable[[], None],
        write: Callable[[str], None] | None,  # None: no desktop notifications
        timing: AlertTiming = DEFAULT_TIMING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app, self.bell, self.write, self.clock = app, bell, write, clock
        self.gate = AlertGate(
            names,
            clock(),
            quiet_s=timing.quiet_s,
            max_s=timing.max_s,
            cooldown_s=timing.cooldown_s,
            start_max_s=timing.start_max_s,
        )
        self.own: dict[str, float] = {}  # node -> until when its action events are ours
        self.sent: list[Notice] = []  # every notice shown (tests, and nothing else reads it)
        self._timer: Timer | None = None
        self._timer_due = math.inf

    def see(self, event: FleetEvent) -> None:
        alert = classify(event)
        if alert is None:
            return
        if alert.what in OWN_EXPECTED and self.own.get(alert.node, 0.0) > self.clock():
            return
        self.gate.offer(alert, self.clock())
        self._arm()

    # --- the dashboard's own actions -------------------------------------------------
    def acting(self, names: Iterable[str]) -> None:
        for name in names:
            self.own[name] = math.inf

    def acted(self, names: Iterable[str], failure: str | None) -> None:
        """Our action is over. A failure (`failure`: the app's summary, already a toast) rings
        and, with `--notify`, goes to the desktop: it may have run for minutes, the operator
        elsewhere."""
        now = self.clock()
        self.own = {n: t for n, t in self.own.items() if t > now}
        for name in names:
            self.own[name] = now + OWN_ACTION_GRACE_S
        if failure is not None:
            self.bell()
            self._desktop(Notice("fleet", (failure,), "error", True))

    # --- out -------------------------------------------------------------------------
    def _arm(self) -> None:
        """One timer, for the gate's next due time (sooner when the last node settles)."""
        due = self.gate.due()
        if due is None or (self._timer is not None and self._timer_due <= due):
            return
        if self._timer is not None:
            self._timer.stop()
        self._timer_due = due
        delay = max(0.01, due - self.clock())  # (a 0 s Textual timer divides by zero)
        self._timer = self.app.set_timer(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        notices = self.gate.take(self.clock())
        for notice in notices:
            self.sent.append(notice)
            self.app.notify(
                notice.text,
                title=notice.title,
                severity=notice.severity,  # type: ignore[arg-type]
                timeout=TIMEOUT_S.get(notice.severity, 8.0),
                markup=False,  # node text: never markup
            )
            if notice.ring:
                self._desktop(notice)
        if any(n.ring for n in notices):
            self.bell()  # one per flush, however many notices
        self._arm()

    def _desktop(self, notice: Notice) -> None:
        if self.write is not None:
            for sequence in osc_notify(notice):
                self.write(sequence)
