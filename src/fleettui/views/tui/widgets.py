"""Small widgets around the table: the totals bar and the event log pane."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.widgets import Footer, RichLog, Static
from textual.widgets._footer import FooterKey

from fleettui.aggregator.placement import order_key
from fleettui.aggregator.state import FleetEvent, NodeView
from fleettui.textsafe import clean
from fleettui.views.columns import BY_KEY, fleet_totals, totals_text
from fleettui.views.numbers import fmt_duration
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
    status_parts: tuple[tuple[int, int], float | None] = ((0, 0), None)

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
            self._draw()

    def status(self, position: tuple[int, int], paused_s: float | None = None) -> None:
        """The cursor's node of the shown ones, and (while `p` holds the updates) how old
        the shown figures are: on the right, never cut. Cheap: a cursor move does not add
        the fleet up again."""
        if (position, paused_s) != self.status_parts:
            self.status_parts = (position, paused_s)
            self._draw()

    def _right(self, size: int) -> Text:
        """The status in one of four sizes: 2 says the most, 0 the least, -1 only the pause."""
        (row, rows), paused_s = self.status_parts
        right = Text()
        if paused_s is not None:
            age = fmt_duration(paused_s)
            words = (
                f"PAUSED, {age} old",
                f"PAUSED, data {age} old",
                f"PAUSED, data {age} old, p resumes",
            )
            right.append(f" {words[max(size, 0)]} ", style="reverse bold")
        if rows and size >= 0:
            right.append(f" {'row ' if size else ''}{row:,}/{rows:,}", style="bold")
        return right

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        """The status in the largest size that leaves the totals uncut. When none does, the
        row position goes if the totals fit without it (a filter or a count matters more),
        else the smallest size takes the end of totals that were cut anyway."""
        line = (self.shown or Text()).copy()
        width = self.content_size.width
        right = self._right(2)
        for size in (1, 0, -1):
            if not width or line.cell_len + right.cell_len <= width:
                break
            if size == -1 and line.cell_len + self._right(-1).cell_len > width:
                break  # cut anyway: keep the position (size 0)
            right = self._right(size)
        if width and right:
            line.truncate(max(0, width - right.cell_len), overflow="ellipsis", pad=True)
        line.append_text(right)
        self.update(line, layout=False)  # one line, fixed height: no layout pass needed


class KeyFooter(Footer):
    """A compact footer that keeps the keys that matter when the terminal is narrow.

    Textual's footer lists every key and lets the right end fall off, at 80 columns help
    and quit with it. Here `priority` names the actions most important first: the longest
    run of them that fits is shown, in binding order; the others are in ? and ctrl+p. A
    binding its screen's check_action hides (read-only's action keys) is never listed.
    """

    def __init__(self, priority: Sequence[str], **kwargs) -> None:
        super().__init__(compact=True, show_command_palette=False, **kwargs)
        self.priority = {action: i for i, action in enumerate(priority)}
        self._width = 0

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        self._width = width = self.size.width or self.app.size.width
        keys = {}  # one key per action, as the screen resolves them
        for _, binding, enabled, tooltip in self.screen.active_bindings.values():
            if binding.show and binding.action in self.priority:
                keys.setdefault(binding.action, (binding, enabled, tooltip))
        used, chosen = 0, set()
        for action in sorted(keys, key=self.priority.__getitem__):
            binding = keys[action][0]
            # compact: key, a space, the description, a cell of margin
            used += cell_len(self.app.get_key_display(binding)) + cell_len(binding.description) + 2
            if used > width + 1:  # the last key needs no margin
                break
            chosen.add(action)
        for action, (binding, enabled, tooltip) in keys.items():
            if action in chosen:
                yield FooterKey(
                    binding.key,
                    self.app.get_key_display(binding),
                    binding.description,
                    binding.action,
                    disabled=not enabled,
                    tooltip=tooltip,
                ).data_bind(compact=Footer.compact)

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._width:
            self.call_after_refresh(self.recompose)


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
