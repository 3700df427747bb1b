"""A one-line question docked above the totals, checked as it is typed: the `/` filter and the
`F` fit question. A bar, not a modal: the table stays in sight and keeps updating."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label, Static

from fleettui.aggregator.state import NodeView


class AskBar(Horizontal):
    """Hidden until `open`; posts Done with the text as `tidy` leaves it ("" clears) or None
    when cancelled. A subclass names its id prefix, prompt and placeholder and `describe`s the
    text so far: (ok, one line to show beside the input); enter on a text not ok rings."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    PREFIX: ClassVar[str]
    PROMPT: ClassVar[str]
    PLACEHOLDER: ClassVar[str]

    class Done(Message):
        """The answer: the text (tidied) on enter, None on esc."""

        def __init__(self, bar: AskBar, text: str | None) -> None:
            super().__init__()
            self.bar = bar
            self.text = text

        @property
        def control(self) -> AskBar:
            return self.bar

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._views: Callable[[], list[NodeView]] = list

    @property
    def views(self) -> list[NodeView]:
        """The nodes as they are now (the fleet moves while one types)."""
        return self._views()

    def describe(self, text: str) -> tuple[bool, Text]:
        raise NotImplementedError

    def tidy(self, text: str) -> str:
        return text.strip()

    def compose(self) -> ComposeResult:
        yield Label(self.PROMPT, id=f"{self.PREFIX}-prompt")
        box = Input(placeholder=self.PLACEHOLDER, id=f"{self.PREFIX}-input", compact=True)
        box.cursor_blink = not self.app.is_headless  # a blinking cursor breaks snapshots
        yield box
        yield Static(id=f"{self.PREFIX}-status")

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    @property
    def is_open(self) -> bool:
        return bool(self.display)

    def open(self, current: str, views: Callable[[], list[NodeView]]) -> None:
        self._views = views
        self.display = True
        with self.input.prevent(Input.Changed):  # opening is not typing
            self.input.value = current
        self.input.cursor_position = len(current)
        self.input.focus()
        self.show(current)

    def close(self) -> None:
        self.display = False
        self.input.blur()  # keys typed right after enter are not for the hidden input

    def show(self, text: str) -> bool:
        """Describe `text` beside the input; False when it cannot be used."""
        ok, msg = self.describe(text)
        self.query_one(f"#{self.PREFIX}-status", Static).update(msg)
        self.set_class(not ok, "error")
        return ok

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self.is_open:  # a key queued behind enter still reaches the input: it is dropped
            self.typed(event.value, self.show(event.value))

    def typed(self, text: str, ok: bool) -> None:
        """A keystroke changed the text (the filter applies it as one types)."""

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not self.is_open:
            return
        if self.show(event.value):
            self.close()
            self.post_message(self.Done(self, self.tidy(event.value)))
        else:
            self.app.bell()

    def action_cancel(self) -> None:
        self.close()
        self.post_message(self.Done(self, None))
