"""The `/` filter: one input, a live match count, and a pointed error for a bad expression."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from fleettui.aggregator.state import NodeView
from fleettui.select import SelectError, parse
from fleettui.views.columns import plural

HINT = "e.g.  state=OFFLINE   power>300 and engine=vllm   not tag=edge   model~llama"


def describe(text: str, views: list[NodeView]) -> tuple[bool, Text]:
    """(ok, what to show under the input) for the expression as typed so far."""
    if not text.strip():
        return True, Text(f"empty: all {plural(len(views), 'node')}", style="dim")
    try:
        sel = parse(text)
    except SelectError as exc:
        out = Text(exc.message, style="bold red")
        out.append("\n" + exc.caret, style="red")
        return False, out
    n = sum(1 for v in views if sel.matches(v))
    return True, Text(
        f"{n} of {plural(len(views), 'node')} match", style="green" if n else "yellow"
    )


class FilterScreen(ModalScreen[str | None]):
    """Dismisses with the new expression ("" clears the filter) or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: str, views: list[NodeView]) -> None:
        super().__init__()
        self.current = current
        self.views = views

    def compose(self) -> ComposeResult:
        with Vertical(id="filter-box"):
            yield Label("Filter nodes  [dim](enter applies, empty clears, esc cancels)[/]")
            box = Input(
                value=self.current,
                placeholder="state=OFFLINE or power>300 and engine=vllm",
                id="filter-input",
            )
            box.cursor_blink = not self.app.is_headless  # a blinking cursor breaks snapshots
            yield box
            yield Static(id="filter-status")
            yield Static(Text(HINT, style="dim"), id="filter-hint")

    def on_mount(self) -> None:
        self._show(self.current)

    def _show(self, text: str) -> bool:
        ok, msg = describe(text, self.views)
        self.query_one("#filter-status", Static).update(msg)
        self.query_one("#filter-box").set_class(not ok, "error")
        return ok

    def on_input_changed(self, event: Input.Changed) -> None:
        self._show(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self._show(event.value):
            self.dismiss(event.value.strip())
        else:
            self.app.bell()

    def action_cancel(self) -> None:
        self.dismiss(None)
