"""The `/` filter bar: applied as one types (the table stays in sight), a match count or the
problem with the expression in one line; enter keeps it, esc puts back the one before."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.timer import Timer

from fleettui.aggregator.state import NodeView
from fleettui.select import SelectError, Selector, parse
from fleettui.views.columns import plural
from fleettui.views.tui.screens.ask import AskBar

DEBOUNCE_S = 0.15  # a pause in typing; each keystroke at 1000 rows would re-filter them all


def describe(text: str, views: list[NodeView]) -> tuple[Text, Selector | None]:
    """One line to show beside the input for the expression as typed so far, and the
    expression compiled (None when empty or bad: the line says which)."""
    if not text.strip():
        return Text(f"empty: all {plural(len(views), 'node')}", style="dim"), None
    try:
        sel = parse(text)
    except SelectError as exc:
        return Text(f"✗ column {exc.pos + 1}: {exc.message}", style="bold red"), None
    n = sum(1 for v in views if sel.matches(v))
    count = f"{n} of {plural(len(views), 'node')} match"
    return Text(count, style="green" if n else "yellow"), sel


class FilterBar(AskBar):
    """Posts Typed as the expression changes (after a pause, only when it parses) and Done."""

    BINDINGS = [Binding("escape", "cancel", "Restore")]  # the filter from before `/`
    PREFIX = "filter"
    PROMPT = "/"
    PLACEHOLDER = "a word (llama, demo-003) or state=OFFLINE, power>300 and engine=vllm"

    class Typed(Message):
        """The expression as typed so far, compiled (None: empty, every node)."""

        def __init__(self, selector: Selector | None) -> None:
            super().__init__()
            self.selector = selector

    _timer: Timer | None = None
    _compiled: Selector | None = None  # the text as last described, compiled

    def describe(self, text: str) -> tuple[bool, Text]:
        msg, self._compiled = describe(text, self.views)
        return self._compiled is not None or not text.strip(), msg

    def typed(self, text: str, ok: bool) -> None:
        if self._timer is not None:
            self._timer.stop()
        sel = self._compiled  # the one the count came from: its scores are kept
        self._timer = self.set_timer(DEBOUNCE_S, lambda: self._apply(sel)) if ok else None

    def _apply(self, sel: Selector | None) -> None:
        self._timer = None
        if self.is_open:
            self.post_message(self.Typed(sel))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        super().close()
