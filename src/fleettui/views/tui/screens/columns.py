"""The `c` column picker: which columns the table shows, in which order, and the theme.

Every column is listed in the table's order with what it shows. Space hides or shows one (the
selection mark, Node and State always show), `[`/`]` or shift+↑/↓ move it, `r` goes back to
the defaults, enter applies, esc or q cancels. Each line says whether the column would fit at
the table's present width, so hiding one shows at once which column gets its room.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from fleettui.views.columns import BY_KEY, DEFAULT_ORDER, FIXED

# order, hidden -> the columns the table would draw, with their widths
Layout = Callable[[tuple[str, ...], frozenset[str]], dict[str, int]]


@dataclass(frozen=True)
class ColumnChoice:
    order: tuple[str, ...]
    hidden: frozenset[str]


def full_order(order: Iterable[str]) -> list[str]:
    """`order` with the unknown keys left out and every column it lacks at its default place
    at the end (what the table does with a partial order)."""
    known = [k for k in dict.fromkeys(order) if k in BY_KEY]
    return known + [k for k in DEFAULT_ORDER if k not in known]


NOTE_AT = 46  # where the note starts: after the longest title
NOTE_WIDTH = 22  # "no room at 120 cells"


def column_name(key: str) -> str:
    return BY_KEY[key].label or "✓"


def picker_lines(
    order: list[str],
    hidden: frozenset[str],
    cursor: int,
    drawn: dict[str, int],
    width: int,
    asked: frozenset[str] = frozenset(),
) -> Text:
    """One line per column: the cursor mark, shown or not, its name, what it is, and its width
    in the table, or why a shown one is missing from it (no room at this width, waiting for F)."""
    out = Text()
    for i, key in enumerate(order):
        col = BY_KEY[key]
        here = i == cursor
        line = Text()
        line.append("▸ " if here else "  ", style="bold")
        if key in FIXED:
            line.append("[✓] ", style="dim")
        elif key in hidden:
            line.append("[ ] ")
        else:
            line.append("[✓] ", style="bold green")
        line.append(f"{column_name(key):<8} ", style="bold" if key not in hidden else "dim")
        line.append(col.title or "", style="dim" if key in hidden else "")
        if key in FIXED:
            note = "always shown"
        elif key in hidden:
            note = "hidden"
        elif key in drawn:
            note = f"{drawn[key]} cells"
        elif col.optional and key not in asked:
            note = "with F only"
        else:
            note = f"no room at {width} cells"
        line.truncate(NOTE_AT, overflow="ellipsis")
        line.pad_right(NOTE_AT - line.cell_len)
        line.append(
            f" {note:<{NOTE_WIDTH}}", style="yellow" if note.startswith("no room") else "dim"
        )
        if here:
            line.stylize("reverse")
        out.append_text(line)
        if i < len(order) - 1:
            out.append("\n")
    return out


HINT = "space show/hide · [ ] move · r defaults · t theme · enter apply · esc cancel"


class ColumnsScreen(ModalScreen[ColumnChoice | None]):
    """Dismisses with the chosen order and hidden columns, or None when cancelled. The theme
    (`t`) changes at once: it is the app's, and the app remembers it."""

    BINDINGS = [
        Binding("up,k", "move_cursor(-1)", show=False),
        Binding("down,j", "move_cursor(1)", show=False),
        Binding("space", "toggle", "Show/hide"),
        Binding("shift+up,left_square_bracket", "move_column(-1)", "Move up"),
        Binding("shift+down,right_square_bracket", "move_column(1)", "Move down"),
        Binding("r", "reset", "Defaults"),
        Binding("t", "next_theme", "Theme"),
        Binding("enter", "apply", "Apply"),
        Binding("escape,q", "cancel", "Cancel"),
    ]
    DEFAULT_CSS = """
    ColumnsScreen {
        align: center middle;
        background: $background 40%;
    }
    #columns-box {
        width: auto;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        padding: 0 1;
        border: round $primary;
        background: $surface;
    }
    #columns-list, #columns-title, #columns-hint {
        width: auto;
    }
    #columns-hint {
        color: $text-muted;
    }
    """

    def __init__(
        self,
        order: Iterable[str],
        hidden: Iterable[str],
        layout: Layout,
        width: int,
        asked: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.asked = frozenset(asked)  # the optional columns asked for (Fit, once F asked)
        self.order = full_order(order)
        self.hidden = frozenset(hidden) - FIXED
        self.preview = layout
        self.table_width = width  # the table's, for "no room at N cells"
        self.cursor = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="columns-box"):
            yield Static(id="columns-title")
            yield Static(id="columns-list")
            yield Static(Text(HINT), id="columns-hint")

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._show())
        self._show()

    def _show(self) -> None:
        drawn = self.preview(tuple(self.order), self.hidden)
        title = Text("Columns", style="bold")
        title.append(f"  {len(drawn)} of {len(self.order)} fit", style="dim")
        title.append(f" · theme {self.app.theme} (t)", style="dim")
        self.query_one("#columns-title", Static).update(title)
        lines = picker_lines(
            self.order, self.hidden, self.cursor, drawn, self.table_width, self.asked
        )
        self.query_one("#columns-list", Static).update(lines)

    @property
    def key(self) -> str:
        return self.order[self.cursor]

    def action_move_cursor(self, step: int) -> None:
        self.cursor = min(max(self.cursor + step, 0), len(self.order) - 1)
        self._show()

    def action_toggle(self) -> None:
        if self.key in FIXED:
            self.app.bell()
            self.notify(f"{column_name(self.key)} is always shown", timeout=3)
            return
        self.hidden ^= {self.key}
        self._show()

    def action_move_column(self, step: int) -> None:
        to = self.cursor + step
        if not 0 <= to < len(self.order):
            self.app.bell()
            return
        self.order[self.cursor], self.order[to] = self.order[to], self.order[self.cursor]
        self.cursor = to
        self._show()

    def action_reset(self) -> None:
        key = self.key
        self.order, self.hidden = list(DEFAULT_ORDER), frozenset()
        self.cursor = self.order.index(key)  # the cursor stays on its column
        self._show()

    def action_next_theme(self) -> None:
        names = sorted(self.app.available_themes)
        at = names.index(self.app.theme) if self.app.theme in names else -1
        self.app.theme = names[(at + 1) % len(names)]

    def action_apply(self) -> None:
        self.dismiss(ColumnChoice(tuple(self.order), self.hidden))

    def action_cancel(self) -> None:
        self.dismiss(None)
