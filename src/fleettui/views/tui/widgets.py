"""Small widgets around the table: the totals bar and the event log pane."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from rich.text import Text
from textual.widgets import RichLog, Static

from fleettui.aggregator.placement import order_key
from fleettui.aggregator.state import FleetEvent, NodeView
from fleettui.textsafe import clean
from fleettui.views.columns import BY_KEY, fleet_totals, totals_text
from fleettui.views.tui.spans import LineStatic

EVENT_STYLE = {
    "state": "bold yellow",
    "error": "bold red",
    "action": "cyan",
    "audit": "magenta",
    "snapshot": "dim",
}


class TotalsBar(LineStatic):
    """One line: fleet totals, selection count, and the active filter and sort."""

    shown: Text | None = None

    def show(
        self,
        views: list[NodeView],
        selected: int,
        shown: int,
        filter_text: str | None,
        sort_key: str | None,
        reverse: bool,
        read_only: bool = False,
        hidden_selected: int = 0,
        skipped: int = 0,
        fit_text: str | None = None,
    ) -> None:
        line = totals_text(fleet_totals(views, skipped), selected)
        if hidden_selected:
            line.append(f" ({hidden_selected} hidden by the filter)", style="yellow")
        if filter_text:
            line.append(" │ ")
            line.append(f"filter {filter_text}", style="bold")
            line.append(f" ({shown}/{len(views)})", style="dim")
        if fit_text:
            line.append(" │ ")
            line.append(f"fit {clean(fit_text)}", style="bold")
        if sort_key:
            line.append(" │ ")
            line.append(f"sort {BY_KEY[sort_key].label.lower()} {'▼' if reverse else '▲'}")
        if read_only:
            line.append(" │ ")
            line.append("read-only", style="bold red")
        if line != self.shown:  # called on every refresh: an unchanged line costs no repaint
            self.shown = line
            self.update(line, layout=False)  # one line, fixed height: no layout pass needed


class PlaceBar(Static):
    """While a fit question is asked: why the node under the cursor ranks where it does
    (its placement score and reasons, aggregator/placement.py), on one line."""

    def show(self, views: list[NodeView], name: str | None, strategy: str) -> None:
        ranked = sorted(
            (v for v in views if v.placement is not None),
            key=lambda v: order_key(v, v.placement[0]),  # type: ignore[index]
        )
        view = next((v for v in ranked if v.name == name), None)
        self.display = view is not None
        if view is None or view.placement is None:
            return
        points, reasons = view.placement
        line = Text()
        line.append(f"{strategy} #{ranked.index(view) + 1}/{len(ranked)} ", style="dim")
        line.append(view.name, style="bold")
        line.append(f"  score {points:.0f}", style="bold green" if points else "bold red")
        line.append(": " + " · ".join(reasons))
        line.truncate(max(1, self.size.width - 2) if self.size.width else 200, overflow="ellipsis")
        self.update(line, layout=False)


class ConfigBanner(Static):
    """The config's warnings, inside the screen: printed to stderr they would vanish behind
    the full-screen view, and a typo would silently drop a node from monitoring."""

    def __init__(self, warnings: list[str], skipped: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.display = bool(warnings)
        line = Text("⚠ config: ", style="bold")
        if skipped:
            line.append(f"{skipped} node{'s' if skipped != 1 else ''} skipped", style="bold")
            line.append("; ")
        # a dropped node first: a fallen-back default matters less than a node nobody watches
        first = next(
            (w for w in warnings if w.endswith("skipped")), warnings[0] if warnings else ""
        )
        line.append(clean(first))  # config text: terminal-safe like a node's
        if len(warnings) > 1:
            line.append(f" (+{len(warnings) - 1} more in the event log: e)", style="italic")
        self.update(line)


def event_line(ev: FleetEvent, fmt_time: Callable[[float], str]) -> Text:
    line = Text()
    line.append(fmt_time(ev.ts), style="dim")
    line.append(" ")
    line.append(f"{ev.node:<14}", style="bold")
    line.append(f"{ev.kind:<7}", style=EVENT_STYLE.get(ev.kind, ""))
    line.append(ev.summary)
    return line


class EventLog(RichLog):
    """The merged event stream, newest at the bottom; batched so a flood costs one redraw."""

    def __init__(self, fmt_time: Callable[[float], str], **kwargs) -> None:
        super().__init__(max_lines=1000, wrap=False, markup=False, highlight=False, **kwargs)
        self.fmt_time = fmt_time
        self._pending: deque[FleetEvent] = deque(maxlen=1000)
        self.received = 0

    def on_mount(self) -> None:
        self.set_interval(0.25, self.flush)

    def add(self, event: FleetEvent) -> None:
        if event.kind == "snapshot":
            return  # one per node per tick: noise, and the table already shows it
        self._pending.append(event)
        self.received += 1

    def flush(self) -> None:
        while self._pending:
            self.write(event_line(self._pending.popleft(), self.fmt_time))
