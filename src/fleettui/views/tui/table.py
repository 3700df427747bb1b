"""The fleet table: a DataTable kept in step with the aggregator by keyed reconciliation.

Every refresh diffs the new NodeViews against what is on screen and touches only cells whose
text changed (rows keyed by node name; unchanged node versions are not even re-rendered), so the
cursor, the scroll position, the selection and the sort survive every update and 1000 rows cost
one render per refresh. Only a change of the visible column set (a resize) rebuilds the table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.events import Resize
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from fleettui.aggregator.state import NodeView
from fleettui.select import Selector
from fleettui.views.columns import BY_KEY, COLUMNS, SEP, SORTABLE, fit_columns, sorted_views

AGE_COLUMNS = ("seen",)  # cells that change with the clock, not with the node


def _same(a: Text, b: Text) -> bool:
    return a.plain == b.plain and a.style == b.style and a.spans == b.spans


class FleetTable(DataTable):
    """The node table. The app feeds it with `apply(views)`; it owns cursor, sort and selection."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]

    def __init__(self, *, clock: Callable[[], float] = time.time, **kwargs) -> None:
        super().__init__(cursor_type="row", cell_padding=0, **kwargs)
        self.clock = clock
        self.views: dict[str, NodeView] = {}  # every node, config order
        self.selected: set[str] = set()
        self.selector: Selector | None = None
        self.sort_key: str | None = None
        self.sort_reverse = False
        self.widths: dict[str, int] = {}
        self._cells: dict[str, dict[str, Text]] = {}
        self._rendered: dict[str, tuple] = {}  # name -> (version, selected, note) drawn
        self.notes: dict[str, Text] = {}  # per-node overlay of the State cell (action progress)
        self._order: list[str] = []  # row keys top to bottom, as the DataTable has them
        self.cell_updates = 0  # how many cells the last apply() touched (tests, benchmarks)

    # --- what the app and the screens ask --------------------------------------------
    @property
    def visible_names(self) -> list[str]:
        return list(self._order)

    @property
    def cursor_name(self) -> str | None:
        if not self._order:
            return None
        row = min(max(self.cursor_row, 0), len(self._order) - 1)
        return self._order[row]

    def targets(self) -> list[str]:
        """What an action key acts on: the selected visible rows, else the cursor row."""
        chosen = [n for n in self._order if n in self.selected]
        if chosen:
            return chosen
        return [self.cursor_name] if self.cursor_name else []

    # --- feeding ---------------------------------------------------------------------
    def apply(self, views: Iterable[NodeView] | None = None) -> None:
        """Bring the table in line with `views` (or re-check the clock-driven cells)."""
        if views is not None:
            self.views = {v.name: v for v in views}
        if self.size.width <= 0:
            return  # not laid out yet: on_resize calls us again
        want = self._wanted()
        widths = self._fit(len(want))
        if widths != self.widths:
            self.widths = widths
            self._build(want)
            return
        cursor = self.cursor_name
        self.cell_updates = 0
        with self.app.batch_update():
            keep = set(want)
            for name in [n for n in self._order if n not in keep]:
                self._remove(name)
            now = self.clock()
            have = set(self._order)
            for name in want:
                view = self.views[name]
                if name in have:
                    self._update(view, now)
                else:
                    self.add_row(*self._render(view, now).values(), key=name)
                    self._order.append(name)
            self._reorder(want)
            self._restore_cursor(cursor)

    def on_resize(self, event: Resize) -> None:
        self.apply()

    # --- selection, filter, sort -----------------------------------------------------
    def toggle_selected(self, name: str | None = None) -> None:
        name = name or self.cursor_name
        if name is None:
            return
        self.selected.symmetric_difference_update({name})
        self.apply()

    def select_visible(self) -> None:
        self.selected.update(self._order)
        self.apply()

    def clear_selection(self) -> None:
        self.selected.clear()
        self.apply()

    def set_filter(self, selector: Selector | None) -> None:
        self.selector = selector
        self.apply()

    def cycle_sort(self) -> None:
        """Next sortable visible column; after the last one, back to config order."""
        keys = [k for k in SORTABLE if k in self.widths]
        i = keys.index(self.sort_key) + 1 if self.sort_key in keys else 0
        self.sort_key = keys[i] if i < len(keys) else None
        self.sort_reverse = BY_KEY[self.sort_key].descending if self.sort_key else False
        self._labels()
        self.apply()
        self._reorder(self._wanted(), force=True)

    def reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._labels()
        self.apply()
        self._reorder(self._wanted(), force=True)

    # --- internals -------------------------------------------------------------------
    def _wanted(self) -> list[str]:
        views = list(self.views.values())
        if self.selector is not None:
            views = [v for v in views if self.selector.matches(v)]
        return [v.name for v in sorted_views(views, self.sort_key, self.sort_reverse)]

    def _fit(self, rows: int) -> dict[str, int]:
        width = self.size.width
        if rows + 1 > self.size.height:  # the header takes a line; leave room for the scrollbar
            width -= self.styles.scrollbar_size_vertical
        return fit_columns(width, max((len(n) for n in self.views), default=0))

    def _label(self, key: str) -> Text:
        col = BY_KEY[key]
        if key != self.sort_key:
            return Text(col.label)
        return Text(col.label + ("▼" if self.sort_reverse else "▲"), style="bold underline")

    def _labels(self) -> None:
        for ckey, column in self.columns.items():
            if ckey.value in BY_KEY:
                column.label = self._label(ckey.value)

    def set_note(self, name: str, note: str | Text | None, style: str = "bold cyan") -> None:
        """Show `note` in the node's State cell (e.g. bulk-action progress); None restores it."""
        if note is None:
            self.notes.pop(name, None)
        else:
            self.notes[name] = note if isinstance(note, Text) else Text(note, style=style)
        self.apply()

    def _cell(self, key: str, view: NodeView, now: float, selected: bool) -> Text:
        note = self.notes.get(view.name) if key == "state" else None
        if note is not None:
            cell = note.copy()
            cell.truncate(self.widths[key], overflow="ellipsis")
            return cell
        return BY_KEY[key].cell(view, self.widths[key], now, selected)

    def _stamp(self, view: NodeView) -> tuple:
        note = self.notes.get(view.name)
        return (view.version, view.name in self.selected, note.markup if note else None)

    def _render(self, view: NodeView, now: float) -> dict[str, Text]:
        selected = view.name in self.selected
        cells = {key: self._cell(key, view, now, selected) for key in self.widths}
        self._cells[view.name] = cells
        self._rendered[view.name] = self._stamp(view)
        return cells

    def _update(self, view: NodeView, now: float) -> None:
        """Re-render a row only when its node, selection or note changed; push changed cells."""
        name = view.name
        old = self._cells[name]
        selected = name in self.selected
        stamp = self._stamp(view)
        if self._rendered.get(name) == stamp:
            keys = [k for k in AGE_COLUMNS if k in self.widths]
        else:
            keys = list(self.widths)
            self._rendered[name] = stamp
        for key in keys:
            cell = self._cell(key, view, now, selected)
            if _same(old[key], cell):
                continue
            try:
                self.update_cell(name, key, cell)
            except CellDoesNotExist:
                continue
            old[key] = cell
            self.cell_updates += 1

    def _remove(self, name: str) -> None:
        try:
            self.remove_row(name)
        except RowDoesNotExist:
            pass
        self._order.remove(name)
        self._cells.pop(name, None)
        self._rendered.pop(name, None)

    def _reorder(self, want: list[str], force: bool = False) -> None:
        if not force and self._order == want:
            return
        pos = {name: i for i, name in enumerate(want)}
        cursor = self.cursor_name
        self.sort("node", key=lambda cell: pos.get(getattr(cell, "node", ""), len(pos)))
        self._order = list(want)
        self._restore_cursor(cursor)

    def _restore_cursor(self, name: str | None) -> None:
        if name is None or name not in self._order:
            return
        row = self._order.index(name)
        if row != self.cursor_row:
            self.move_cursor(row=row, animate=False)

    def _build(self, want: list[str]) -> None:
        """(Re)create columns and rows; only on first layout or when the column set changes."""
        cursor = self.cursor_name
        self.clear(columns=True)
        self._cells.clear()
        self._rendered.clear()
        for col in COLUMNS:
            if col.key in self.widths:
                self.add_column(self._label(col.key), width=self.widths[col.key] + SEP, key=col.key)
        now = self.clock()
        for name in want:
            self.add_row(*self._render(self.views[name], now).values(), key=name)
        self._order = list(want)
        self._restore_cursor(cursor)
