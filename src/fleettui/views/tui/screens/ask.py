"""A one-line question checked as it is typed: the `/` filter and the `F` fit question."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from fleettui.aggregator.state import NodeView


class AskScreen(ModalScreen[str | None]):
    """Dismisses with the text as `tidy` leaves it ("" clears) or None when cancelled. A
    subclass names its widgets' id prefix, its title, placeholder and hint, and `describe`s
    the text so far: (ok, what to show under the input); enter on a text not ok rings."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    PREFIX: ClassVar[str]
    TITLE: ClassVar[str]
    PLACEHOLDER: ClassVar[str]
    HINT: ClassVar[str]

    def __init__(self, current: str, views: list[NodeView]) -> None:
        super().__init__()
        self.current = current
        self.views = views

    def describe(self, text: str) -> tuple[bool, Text]:
        raise NotImplementedError

    def tidy(self, text: str) -> str:
        return text.strip()

    def compose(self) -> ComposeResult:
        with Vertical(id=f"{self.PREFIX}-box"):
            yield Label(self.TITLE)
            box = Input(value=self.current, placeholder=self.PLACEHOLDER, id=f"{self.PREFIX}-input")
            box.cursor_blink = not self.app.is_headless  # a blinking cursor breaks snapshots
            yield box
            yield Static(id=f"{self.PREFIX}-status")
            yield Static(Text(self.HINT, style="dim"), id=f"{self.PREFIX}-hint")

    def on_mount(self) -> None:
        self._show(self.current)

    def _show(self, text: str) -> bool:
        ok, msg = self.describe(text)
        self.query_one(f"#{self.PREFIX}-status", Static).update(msg)
        self.query_one(f"#{self.PREFIX}-box").set_class(not ok, "error")
        return ok

    def on_input_changed(self, event: Input.Changed) -> None:
        self._show(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self._show(event.value):
            self.dismiss(self.tidy(event.value))
        else:
            self.app.bell()

    def action_cancel(self) -> None:
        self.dismiss(None)
