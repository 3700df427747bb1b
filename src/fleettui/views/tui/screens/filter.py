"""The `/` filter: one input, a live match count, and a pointed error for a bad expression."""

from __future__ import annotations

from rich.text import Text

from fleettui.aggregator.state import NodeView
from fleettui.select import SelectError, parse
from fleettui.views.columns import plural
from fleettui.views.tui.screens.ask import AskScreen

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


class FilterScreen(AskScreen):
    """Dismisses with the new expression ("" clears the filter) or None when cancelled."""

    PREFIX = "filter"
    TITLE = "Filter nodes  [dim](enter applies, empty clears, esc cancels)[/]"
    PLACEHOLDER = "state=OFFLINE or power>300 and engine=vllm"
    HINT = HINT

    def describe(self, text: str) -> tuple[bool, Text]:
        return describe(text, self.views)
