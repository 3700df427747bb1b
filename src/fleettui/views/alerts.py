"""Which fleet events interrupt the operator, how often, and in what words.

A dashboard that beeps on every poll of a flapping node, or 300 times when a rack's switch
dies, gets muted, and then it tells no one anything. So: `classify` picks the events worth an
alert (a node going OFFLINE or DEGRADED, its audit chain turning BROKEN, an action failing,
and, quietly, a node coming back); `AlertGate` batches them (everything that arrives within
`quiet_s` of the previous one, at most `max_s`, becomes ONE notice and one bell, however many
nodes), keeps a per-node cooldown so that a flapping node rings once per `cooldown_s` unless it
gets worse, and folds what the first poll finds (INITIALIZING -> OFFLINE) into one summary
once every node has answered; `osc_notify` turns a notice into the OSC 9 and OSC 777 desktop
notifications, with nothing in them a terminal could take for a command.

Plain Python over `FleetEvent` (no Textual, an import-linter contract): the dashboard's wiring
is views/tui/alerting.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fleettui.aggregator.state import ChainStatus, FleetEvent, NodeState
from fleettui.textsafe import clean


@dataclass(frozen=True, slots=True)
class Kind:
    """What an alert says and how loud it is: `rank` orders the kinds (a node that gets worse
    passes its own cooldown), `family` is what the cooldown is kept per."""

    label: str
    severity: str  # a Textual severity: error | warning | information
    rank: int
    family: str

    @property
    def rings(self) -> bool:
        return self.rank > 0


KINDS = {  # worst first: the order of a notice's lines
    "OFFLINE": Kind("OFFLINE", "error", 3, "state"),
    "BROKEN": Kind("audit chain BROKEN", "error", 3, "chain"),
    "FAILED": Kind("action failed", "error", 2, "action"),
    "DEGRADED": Kind("DEGRADED", "warning", 2, "state"),
    "ONLINE": Kind("back ONLINE", "information", 0, "state"),
}
REASON_MAX = 100  # characters of a node's reason in a notice line
NAMES_SHOWN = 3  # names in a storm's summary line before "+N"
OSC_MAX = 200  # characters of a desktop notification's body


@dataclass(frozen=True, slots=True)
class Alert:
    """One event worth telling: `what` is a KINDS key; `at_start` marks the first poll's
    verdict on a node (a transition out of INITIALIZING), which also settles it."""

    node: str
    what: str | None  # None: a node that came up fine at start (it only settles)
    reason: str = ""
    at_start: bool = False

    @property
    def kind(self) -> Kind | None:
        return KINDS.get(self.what) if self.what is not None else None


def classify(event: FleetEvent) -> Alert | None:
    """The alert in one event of the aggregator's stream, or None."""
    data = event.data if isinstance(event.data, dict) else {}
    if event.kind == "state":
        old, new = data.get("from"), data.get("to")
        reasons = data.get("reasons")
        first = reasons[0] if isinstance(reasons, list) and reasons else ""
        reason = clean(first) if isinstance(first, str) else ""
        at_start = old == NodeState.INITIALIZING
        if new in (NodeState.OFFLINE, NodeState.DEGRADED):
            return Alert(event.node, str(new), reason, at_start)
        if new == NodeState.ONLINE:
            return Alert(event.node, None if at_start else "ONLINE", "", at_start)
        return None
    if event.kind == "error" and data.get("chain") == ChainStatus.BROKEN:
        detail = data.get("detail")
        return Alert(event.node, "BROKEN", clean(detail) if isinstance(detail, str) else "")
    if event.kind == "action" and data.get("phase") == "finished" and data.get("ok") is False:
        return Alert(event.node, "FAILED", event.summary)
    return None


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification: a title, a line per kind of alert, how loud."""

    title: str
    lines: tuple[str, ...]
    severity: str
    ring: bool

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(alerts: Iterable[Alert], *, title: str = "fleet") -> Notice | None:
    """One notice for a batch: per kind, the node and its reason, or for several nodes their
    count and the first names (`12 nodes OFFLINE: a, b, c +9`); the worst kind first."""
    by_kind: dict[str, list[Alert]] = {}
    for a in alerts:
        if a.kind is not None:
            by_kind.setdefault(a.what or "", []).append(a)
    if not by_kind:
        return None
    order = [w for w in KINDS if w in by_kind]  # KINDS is worst first
    lines = []
    for what in order:
        group, kind = by_kind[what], KINDS[what]
        if len(group) == 1:
            a = group[0]
            reason = f": {_short(a.reason, REASON_MAX)}" if a.reason else ""
            lines.append(f"{a.node} {kind.label}{reason}")
        else:
            names = ", ".join(a.node for a in group[:NAMES_SHOWN])
            more = f" +{len(group) - NAMES_SHOWN}" if len(group) > NAMES_SHOWN else ""
            lines.append(f"{len(group)} nodes {kind.label}: {names}{more}")
    worst = KINDS[order[0]]
    return Notice(title, tuple(lines), worst.severity, any(KINDS[w].rings for w in order))


@dataclass
class _Batch:
    """Alerts waiting to be told, one per node (its worst; of equals, the latest)."""

    opened: float
    last: float
    by_node: dict[str, Alert] = field(default_factory=dict)

    def add(self, alert: Alert, now: float) -> None:
        held = self.by_node.get(alert.node)
        if held is None or _rank(alert) >= _rank(held):
            self.by_node[alert.node] = alert
        self.last = now


def _rank(alert: Alert) -> int:
    return alert.kind.rank if alert.kind is not None else -1


class AlertGate:
    """Debounce, storms and the first poll: alerts in, at most a notice per batch out.

    Times are the caller's monotonic seconds, so tests drive it without sleeping.
    """

    def __init__(
        self,
        names: Iterable[str],
        now: float,
        *,
        quiet_s: float = 1.5,
        max_s: float = 6.0,
        cooldown_s: float = 60.0,
        start_max_s: float = 15.0,
    ) -> None:
        self.quiet_s, self.max_s, self.cooldown_s = quiet_s, max_s, cooldown_s
        self.unsettled = set(names)  # nodes the first poll has not judged yet
        self.start_deadline = now + start_max_s
        self.start: _Batch | None = _Batch(now, now) if self.unsettled else None  # None: done
        self.batch: _Batch | None = None
        self.told: dict[tuple[str, str], tuple[float, int]] = {}  # (node, family): when, rank
        self.down: set[str] = set()  # nodes told bad, whose recovery is worth a line
        self.suppressed = 0  # alerts the cooldown swallowed (the event log still has them)

    def offer(self, alert: Alert, now: float) -> None:
        if alert.at_start:
            self.unsettled.discard(alert.node)
            if not self.unsettled and self.start is not None and not self.start.by_node:
                self.start = None  # every node came up fine: nothing to sum up
        kind = alert.kind
        if kind is None:
            return
        if not kind.rings:  # a recovery: worth a line only after a bad one was told
            if alert.node not in self.down:
                return
            self.down.discard(alert.node)
        else:
            key = (alert.node, kind.family)
            told = self.told.get(key)
            if told is not None and now - told[0] < self.cooldown_s and kind.rank <= told[1]:
                self.suppressed += 1
                return
            self.told[key] = (now, kind.rank)
            if kind.family == "state":
                self.down.add(alert.node)
        if alert.at_start and self.start is not None:
            self.start.add(alert, now)
            return
        if self.batch is None:
            self.batch = _Batch(now, now)
        self.batch.add(alert, now)

    def _start_due(self) -> float | None:
        if self.start is None:
            return None
        return self.start.last if not self.unsettled else self.start_deadline

    def _batch_due(self) -> float | None:
        b = self.batch
        return None if b is None else min(b.last + self.quiet_s, b.opened + self.max_s)

    def due(self) -> float | None:
        """When `take` has something to hand out, at the earliest (None: nothing pending)."""
        times = [t for t in (self._start_due(), self._batch_due()) if t is not None]
        return min(times) if times else None

    def take(self, now: float) -> list[Notice]:
        """The notices due by `now`: the first poll's summary, then the latest batch's."""
        out: list[Notice] = []
        start_due = self._start_due()
        if self.start is not None and start_due is not None and now >= start_due:
            held, self.start = self.start, None
            if (notice := summarize(held.by_node.values(), title="fleet: at start")) is not None:
                out.append(notice)
        batch_due = self._batch_due()
        if self.batch is not None and batch_due is not None and now >= batch_due:
            held, self.batch = self.batch, None
            if (notice := summarize(held.by_node.values())) is not None:
                out.append(notice)
        return out


def osc_text(text: str, limit: int = OSC_MAX) -> str:
    """Text for inside an OSC string: terminal-safe, one line, no `;` (OSC 777 splits its
    fields on it, and OSC 9 text that starts `4;` is a progress-bar command to some
    terminals), nothing unprintable, at most `limit` characters."""
    safe = clean(text.replace("\n", " · ")).replace(";", ",")
    safe = "".join(c if c.isprintable() else "?" for c in safe)
    return _short(safe, limit)


def osc_notify(notice: Notice) -> tuple[str, str]:
    """The notice as a desktop notification: OSC 9 (iTerm2, WezTerm) and OSC 777 (foot,
    Ghostty, WezTerm, rxvt-unicode's notify extension, VTE with Fedora's patch), each ended by
    BEL; a terminal that knows neither ignores both."""
    title, body = osc_text(notice.title, 40), osc_text(notice.text)
    return f"\x1b]9;{title}: {body}\x07", f"\x1b]777;notify;{title};{body}\x07"
