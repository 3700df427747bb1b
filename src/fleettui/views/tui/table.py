"""The fleet table: a Line-API widget that draws only the rows that changed.

Textual's DataTable clears every render cache on any `update_cell`, so at 1000 rows each
refresh re-rendered every visible line (60-90 ms a frame). This widget keeps one rendered line
(`Strip`) per row, keyed by what the row shows: the node's version, its selection, its action
note, the Seen text and whether the cursor is on it. A refresh compares keys, repaints only the
screen lines whose key moved, and renders cells only for rows that are on screen, so its cost
follows what changed on screen, not the size of the fleet.

Rows are keyed by node name, so the cursor, the scroll position, the selection and the sort
survive every update.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import lru_cache

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from fleettui.aggregator.dispatch import Progress
from fleettui.aggregator.state import NodeState, NodeView
from fleettui.select import Selector
from fleettui.views.columns import (
    BY_KEY,
    COLUMNS,
    DEFAULT_ORDER,
    SEARCHABLE,
    SEP,
    SORTABLE,
    Scales,
    column_label,
    column_needs,
    draw_cell,
    fit_columns,
    fleet_scales,
    search_cell,
    sorted_views,
)
from fleettui.views.gpurows import gpu_line
from fleettui.views.tui.messages import ActionProgress

NEED_HOLD_S = 30.0  # how long a column that had to widen keeps its width (_held)
AGE_COLUMNS = frozenset({"seen"})  # cells that change with the clock, not with the node
SCALED_COLUMNS = frozenset(c.key for c in COLUMNS if c.scale is not None)  # fleet-wide scale
HEADER = 1  # lines above the first row
# Bulk-action progress in the State cell: short enough for its 8 cells at any terminal width.
PROGRESS_NOTES = {
    Progress.QUEUED: ("· queued", "dim"),
    Progress.RUNNING: ("⟳ busy", "bold cyan"),
    Progress.OK: ("✓ ok", "bold green"),
    Progress.FAILED: ("✗ failed", "bold red"),
}
_META = {c.key: Style.from_meta({"column": c.key}) for c in COLUMNS}
GPU_SEP = "\x00"  # a GPU sub-row's id: node name, GPU_SEP, GPU index (names never hold it)


def node_of(row: str) -> str:
    """The node a row belongs to (a GPU sub-row's parent)."""
    return row.partition(GPU_SEP)[0]


@lru_cache(maxsize=4096)
def _gpu_rows(name: str, count: int) -> tuple[str, ...]:
    """A node's GPU sub-row ids, made once: with 1000 nodes expanded, building 8000 ids (and
    an index of them) on every refresh cost 2 ms of it (docs/performance.md)."""
    return tuple(f"{name}{GPU_SEP}{i}" for i in range(count))


class FleetTable(ScrollView, can_focus=True):
    """The node table. The app feeds it with `apply(views)`; it owns cursor, sort and selection."""

    COMPONENT_CLASSES = {"fleet-table--header", "fleet-table--cursor"}
    DEFAULT_CSS = """
    FleetTable {
        background: $surface;
        color: $foreground;
        &:focus { background-tint: $foreground 5%; }
        & > .fleet-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .fleet-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .fleet-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """
    BINDINGS = [
        Binding("enter", "choose", "Details", show=False),
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "cursor_top", "Top", show=False),
        Binding("g,right", "expand", "GPUs", show=False),
        Binding("left", "collapse", "Collapse", show=False),
        Binding("end,G", "cursor_bottom", "Bottom", show=False),
    ]

    class NodeChosen(Message):
        """Enter on a row, or a click on the cursor row: the user wants that node's details."""

        def __init__(self, table: FleetTable, node: str) -> None:
            super().__init__()
            self.table = table
            self.node = node

        @property
        def control(self) -> FleetTable:
            return self.table

    class CursorMoved(Message):
        """The cursor is on another row, or its row moved (the placement line and the row
        position follow it)."""

        def __init__(self, table: FleetTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> FleetTable:
            return self.table

    class SortChanged(Message):
        """A click on a column header changed the sort (the keys' callers know already)."""

        def __init__(self, table: FleetTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> FleetTable:
            return self.table

    def __init__(self, *, clock: Callable[[], float] = time.time, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.views: dict[str, NodeView] = {}  # every node, config order
        self.selected: set[str] = set()
        self.selector: Selector | None = None
        self.optional: frozenset[str] = frozenset()  # optional columns asked for (columns.py)
        self.order: tuple[str, ...] = DEFAULT_ORDER  # the operator's column order (picker)
        self.hidden: frozenset[str] = frozenset()  # and the columns they hid
        self.expanded: set[str] = set()  # nodes shown with one sub-row per GPU
        # Called as the cursor moves, in the same call: what shows its row (the totals line)
        # repaints in the cursor's frame, not in one more after the CursorMoved message.
        self.on_cursor: Callable[[], None] | None = None
        self._keep_line = False  # the next reorder is a new sort: the cursor keeps its line
        self._needs: dict[str, int] = {}  # the widest text of each variable column
        self._need_peaks: dict[str, tuple[int, float]] = {}  # each one's widest, and when
        # the sparkline columns' fleet-wide scales; part of every row's stamp (they rarely move)
        self._scales: Scales = {}
        self._scales_key: tuple = ()
        self._node_rows: list[str] = []  # node rows top to bottom (no GPU sub-rows)
        self.sort_key: str | None = None
        self.sort_reverse = False
        self.widths: dict[str, int] = {}
        self.notes: dict[str, Text] = {}  # per-node overlay of the State cell (action progress)
        self.soft_notes: set[str] = set()  # notes that yield to a live state other than ONLINE
        self._notes_dirty = False
        self.row_updates = 0  # rows whose content changed in the last apply() (tests, benches)
        self.lines_rendered = 0  # row lines drawn anew, not served from the cache (tests)
        self._order: list[str] = []  # row ids top to bottom: node names and GPU sub-rows
        self._cursor = 0
        self._now = clock()
        self._known: dict[str, tuple] = {}  # name -> stamp at the last apply()
        # name -> (stamp, the clock its age cells were drawn for, cells)
        self._cells: dict[str, tuple[tuple, float, dict[str, Text]]] = {}
        # name -> ((stamp, ages, cursor), line, the line's segments left of the age cells)
        self._lines: dict[str, tuple[tuple, Strip, list[Segment]]] = {}
        # name -> each cell's look when its line was last drawn (what a repaint compares)
        self._drawn: dict[str, dict[str, tuple]] = {}
        self._gpu_lines: dict[str, tuple[tuple, Strip]] = {}  # sub-row -> (key, line)
        self._body: list[str] = []  # visible columns left of the first age column
        self._tail: list[str] = []  # that column and those after it
        self._header: tuple[tuple, Strip] | None = None

    # --- what the app and the screens ask --------------------------------------------
    @property
    def visible_names(self) -> list[str]:
        return list(self._node_rows)

    @property
    def row_count(self) -> int:
        """Node rows shown (GPU sub-rows are not counted)."""
        return len(self._node_rows)

    @property
    def line_count(self) -> int:
        """Lines of the table body, GPU sub-rows included."""
        return len(self._order)

    @property
    def position(self) -> tuple[int, int]:
        """(the cursor's node among the shown nodes, from 1; how many are shown): a GPU
        sub-row counts as its node."""
        name = self.cursor_name
        if name is None:
            return 0, len(self._node_rows)
        if not self.expanded:  # every line is a node's
            return self._cursor + 1, len(self._node_rows)
        return _find(self._node_rows, (name,), 0) + 1, len(self._node_rows)

    @property
    def cursor_row(self) -> int:
        return self._cursor

    @property
    def cursor_name(self) -> str | None:
        """The node under the cursor (on a GPU sub-row: its node)."""
        return node_of(self._order[self._cursor]) if self._order else None

    @property
    def cursor_gpu(self) -> int | None:
        """The GPU index when the cursor is on a GPU sub-row."""
        if not self._order or GPU_SEP not in (row := self._order[self._cursor]):
            return None
        return int(row.partition(GPU_SEP)[2])

    def targets(self) -> list[str]:
        """What an action key acts on: the selected visible rows, else the cursor row."""
        chosen = [n for n in self._node_rows if n in self.selected]
        if chosen:
            return chosen
        return [self.cursor_name] if self.cursor_name else []

    def header_label(self, key: str) -> str:
        return self._label(key).plain

    def get_cell(self, name: str, key: str) -> Text:
        """The cell as drawn now (KeyError for an unknown node or a hidden column)."""
        return self._row_cells(name)[key]

    # --- feeding ---------------------------------------------------------------------
    def apply(self, views: Iterable[NodeView] | None = None) -> None:
        """Bring the table in line with `views` (or, with None, only with the clock)."""
        if views is not None:
            self.views = {v.name: v for v in views}
            self._needs = self._held(column_needs(self.views.values()))
            scales = fleet_scales(self.views.values())
            if scales != self._scales:
                self._scales = scales
                self._scales_key = tuple((k, s.top) for k, s in scales.items())
            self.expanded &= self.views.keys()
        self._now = self.clock()
        if self.size.width <= 0:
            return  # not laid out yet: on_resize calls us again
        nodes = self._wanted()
        rows = self._rows(nodes)
        widths = self._fit(len(rows))
        layout_changed = list(widths.items()) != list(self.widths.items())  # order too
        if layout_changed:
            self.widths = widths
            keys = list(widths)
            split = next((i for i, k in enumerate(keys) if k in AGE_COLUMNS), len(keys))
            self._body, self._tail = keys[:split], keys[split:]
            self._cells.clear()
            self._lines.clear()
            self._drawn.clear()
            self._gpu_lines.clear()
        self._node_rows = nodes
        want = rows
        stamps = {name: self._stamp(self.views[name]) for name in nodes}
        known = self._known
        self.row_updates = sum(1 for n, s in stamps.items() if known.get(n) != s)
        self._known = stamps
        for gone in [n for n in self._cells if n not in stamps]:
            self._forget(gone)
        if layout_changed or len(want) != len(self._order):
            self._set_order(want)
            self.refresh()
            return
        if want != self._order:  # rows moved (a sort by a value that changed, a new filter)
            top, before = self._top, self._order[self._top : self._top + self._page]
            self._set_order(want)
            if self._top != top:
                self.refresh()
                return
            after = want[top : top + self._page]  # as long as `before`: same row count and top
            moved = (i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b)
            self._refresh_rows(top + i for i in moved)
        if self._header is not None and self._header[0] != self._header_key():
            self.refresh(Region(0, 0, self.size.width, HEADER))  # the sort arrow moved
        self._refresh_changed_lines()

    def on_resize(self, event: events.Resize) -> None:
        self.apply()
        self._scroll_to_cursor(False)  # a shorter table must still show the cursor row

    def notify_style_update(self) -> None:
        """Focus, theme or CSS changed: every cached line holds old colours."""
        super().notify_style_update()
        self._lines.clear()
        self._gpu_lines.clear()
        self._header = None

    # --- selection, filter, sort -----------------------------------------------------
    def toggle_selected(self, name: str | None = None) -> None:
        name = name or self.cursor_name
        if name is None:
            return
        self.selected.symmetric_difference_update({name})
        self.apply()

    def select_visible(self) -> None:
        self.selected.update(self._node_rows)
        self.apply()

    def clear_selection(self) -> None:
        self.selected.clear()
        self.apply()

    def set_filter(self, selector: Selector | None) -> None:
        self.selector = selector
        self.apply()

    def show_optional(self, keys: Iterable[str]) -> None:
        """Show exactly these optional columns (e.g. `fit` while a fit question is asked)."""
        self.optional = frozenset(keys)
        if self.sort_key is not None and BY_KEY[self.sort_key].optional:
            if self.sort_key not in self.optional:
                self.sort_key, self.sort_reverse = None, False
        self.apply()

    def set_columns(self, order: Iterable[str], hidden: Iterable[str]) -> None:
        """The operator's column order and hidden columns (the picker, their saved choice)."""
        self.order = tuple(order)
        self.hidden = frozenset(hidden)
        if self.sort_key in self.hidden:
            self.sort_key, self.sort_reverse = None, False
        self.apply()

    def expand(self, name: str | None = None) -> None:
        """Show the node's GPUs as sub-rows under it (a node without GPUs has none)."""
        name = name or self.cursor_name
        if name is not None and name in self.views:
            self.expanded.add(name)
            self.apply()

    def collapse(self, name: str | None = None) -> None:
        """Fold the node's GPU sub-rows back; the cursor goes to the node's row."""
        name = name or self.cursor_name
        if name is not None and name in self.expanded:
            self.expanded.discard(name)
            self.apply()

    def action_expand(self) -> None:
        """`g` or right: expand the cursor's node; `g` on an expanded one folds it."""
        name = self.cursor_name
        if name in self.expanded:
            self.collapse(name)
        else:
            self.expand(name)

    def action_collapse(self) -> None:
        self.collapse()

    def cycle_sort(self) -> None:
        """Next sortable visible column; after the last one, back to config order."""
        keys = [k for k in SORTABLE if k in self.widths]
        i = keys.index(self.sort_key) + 1 if self.sort_key in keys else 0
        self.sort_by(keys[i] if i < len(keys) else None)

    def sort_by(self, key: str | None) -> None:
        self.sort_key = key
        self.sort_reverse = BY_KEY[key].descending if key else False
        self._keep_line = True
        self.apply()

    def reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._keep_line = True
        self.apply()

    def set_note(self, name: str, note: str | Text | None, style: str = "bold cyan") -> None:
        """Show `note` in the node's State cell (e.g. bulk-action progress); None restores it."""
        if note is None:
            self.notes.pop(name, None)
        else:
            self.notes[name] = note if isinstance(note, Text) else Text(note, style=style)
        self.apply()

    def on_action_progress(self, message: ActionProgress) -> None:
        """A bulk action's progress: in the node's State cell until `clear_notes`."""
        message.stop()
        label, style = PROGRESS_NOTES[message.progress]
        self.notes[message.node] = Text(label, style=style)
        if message.progress is Progress.OK:  # a success says nothing about the node's state now
            self.soft_notes.add(message.node)
        else:
            self.soft_notes.discard(message.node)
        if not self._notes_dirty:  # many nodes report at once: one table pass per refresh
            self._notes_dirty = True
            self.call_after_refresh(self._flush_notes)

    def _flush_notes(self) -> None:
        self._notes_dirty = False
        self.apply()

    def clear_notes(self, names: Iterable[str]) -> None:
        for n in names:
            self.notes.pop(n, None)
            self.soft_notes.discard(n)
        self.apply()

    # --- cursor ----------------------------------------------------------------------
    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        """Put the cursor on `row` (clamped) and scroll it into view."""
        row = min(max(row, 0), max(len(self._order) - 1, 0))
        old, self._cursor = self._cursor, row
        if old != row:
            self._refresh_rows((old, row))
            self.post_message(self.CursorMoved(self))
            if self.on_cursor is not None:
                self.on_cursor()
        self._scroll_to_cursor(animate)

    @property
    def _page(self) -> int:
        return max(1, self.size.height - HEADER)

    def action_cursor_up(self) -> None:
        self.move_cursor(row=self._cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(row=self._cursor + 1)

    def action_page_up(self) -> None:
        self.move_cursor(row=self._cursor - self._page)

    def action_page_down(self) -> None:
        self.move_cursor(row=self._cursor + self._page)

    def action_cursor_top(self) -> None:
        self.move_cursor(row=0)

    def action_cursor_bottom(self) -> None:
        self.move_cursor(row=len(self._order) - 1)

    def action_choose(self) -> None:
        if self.cursor_name is not None:
            self.post_message(self.NodeChosen(self, self.cursor_name))

    def on_click(self, event: events.Click) -> None:
        """A row moves the cursor there (a second click opens it); a header sorts by it."""
        offset = event.get_content_offset(self)
        if offset is None:
            return
        event.stop()
        if offset.y < HEADER:
            key = self._column_at(offset.x)
            if key in SORTABLE:
                if key == self.sort_key:
                    self.reverse_sort()
                else:
                    self.sort_by(key)
                self.post_message(self.SortChanged(self))
            return
        row = self._top + offset.y - HEADER
        if row >= len(self._order):
            return
        if row == self._cursor:
            self.action_choose()
        else:
            self.move_cursor(row=row)

    # --- rendering -------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        if y < HEADER:
            return self._header_line()
        row = self._top + y - HEADER
        if row >= len(self._order):
            return Strip.blank(self.size.width, self.rich_style)
        rid = self._order[row]
        if GPU_SEP in rid:
            return self._gpu_line(rid, row == self._cursor)
        return self._row_line(rid, row == self._cursor)

    @property
    def _top(self) -> int:
        return round(self.scroll_offset.y)

    def _header_key(self) -> tuple:
        return (
            self.size.width,
            self.sort_key,
            self.sort_reverse,
            tuple(self.widths.items()),
            self._scales_key,
        )

    def _header_line(self) -> Strip:
        key = self._header_key()
        if self._header is None or self._header[0] != key:
            labels = {k: self._label(k) for k in self.widths}
            style = self.rich_style + self.get_component_rich_style("fleet-table--header")
            segments = self._segments(labels, list(self.widths), style, Style())
            self._header = (key, Strip(segments).adjust_cell_length(self.size.width, style))
        return self._header[1]

    def _line_key(self, name: str) -> tuple[tuple, tuple[str, ...]]:
        """What a row's line shows apart from the cursor: its stamp and its age texts."""
        cells = self._row_cells(name)
        stamp = self._cells[name][0]
        return stamp, tuple(cells[k].plain for k in self._tail if k in AGE_COLUMNS)

    def _gpu_key(self, rid: str) -> tuple:
        name = node_of(rid)
        return (self.views[name].version, self.size.width)

    def _gpu_line(self, rid: str, cursor: bool) -> Strip:
        """A GPU sub-row: drawn from the node's snapshot, kept until the node's version moves."""
        key = (*self._gpu_key(rid), cursor)
        cached = self._gpu_lines.get(rid)
        if cached is not None and cached[0] == key:
            return cached[1]
        name, _, index = rid.partition(GPU_SEP)
        view = self.views[name]
        gpus = view.snapshot.gpus if view.snapshot else []
        base = self.rich_style
        if cursor:
            base += self.get_component_rich_style("fleet-table--cursor")
        i = int(index)
        text = (
            gpu_line(gpus[i], self.size.width, i == len(gpus) - 1, view.state is NodeState.OFFLINE)
            if i < len(gpus)
            else Text("")
        )
        segments = Segment.apply_style(text.render(self.app.console), base)
        strip = Strip(list(segments)).adjust_cell_length(self.size.width, base)
        self.lines_rendered += 1
        self._gpu_lines[rid] = (key, strip)
        return strip

    def _row_line(self, name: str, cursor: bool) -> Strip:
        """The row's line. The part left of the age cells is kept per (stamp, cursor), so when
        only the clock moved (every row, once a second) just the age cells are rendered."""
        stamp, ages = self._line_key(name)
        cached = self._lines.get(name)
        if cached is not None and cached[0] == (stamp, ages, cursor):
            return cached[1]
        base = self.rich_style
        post = Style()
        if cursor:
            cursor_style = self.get_component_rich_style("fleet-table--cursor")
            base += cursor_style
            post = Style.from_color(cursor_style.color)  # the cursor's colour wins, as in DataTable
        cells = self._cells[name][2]
        if cached is not None and cached[0][0] == stamp and cached[0][2] == cursor:
            body = cached[2]
        else:
            body = self._segments(cells, self._body, base, post)
            self.lines_rendered += 1
        tail = self._segments(cells, self._tail, base, post)
        strip = Strip([*body, *tail]).adjust_cell_length(self.size.width, base)
        self._lines[name] = ((stamp, ages, cursor), strip, body)
        self._drawn[name] = {key: _look(cell) for key, cell in cells.items()}
        return strip

    def _segments(
        self, cells: dict[str, Text], keys: list[str], style: Style, post: Style
    ) -> list[Segment]:
        """Cells `keys`, each padded to its column, `style` under them and `post` over them.

        Each cell's segments carry the column in their meta (as DataTable's do), so they stay
        separate runs: a screenshot places every cell at its own column.
        """
        console = self.app.console
        segments: list[Segment] = []
        for key in keys:
            cell = cells[key]
            cell_style = _META[key] + console.get_style(cell.style) if cell.style else _META[key]
            segments.extend(Segment.apply_style(cell.render(console), cell_style))
            if (pad := self.widths[key] + SEP - cell.cell_len) > 0:
                segments.append(Segment(" " * pad, _META[key]))
        return list(Segment.apply_style(segments, style, post or None))

    def _row_cells(self, name: str) -> dict[str, Text]:
        """The row's cells, re-rendered when its stamp moved; age cells when the clock did."""
        view = self.views[name]
        stamp = self._known.get(name) or self._stamp(view)  # apply() stamped every shown row
        cached = self._cells.get(name)
        now = self._now
        if cached is None or cached[0] != stamp:
            selected = name in self.selected
            if cached is not None and cached[0][:-1] == stamp[:-1]:  # only the scale moved
                cells = dict(cached[2])  # every row's bars redraw: just those cells
                redo = SCALED_COLUMNS | (AGE_COLUMNS if cached[1] != now else frozenset())
                for key in redo & cells.keys():
                    cells[key] = self._cell(key, view, now, selected)
            else:
                cells = {key: self._cell(key, view, now, selected) for key in self.widths}
        else:
            _, aged, cells = cached
            if aged == now:
                return cells
            for key in AGE_COLUMNS & cells.keys():
                cells[key] = self._cell(key, view, now, name in self.selected)
        self._cells[name] = (stamp, now, cells)
        return cells

    def _cell(self, key: str, view: NodeView, now: float, selected: bool) -> Text:
        note = self.notes.get(view.name) if key == "state" else None
        if view.name in self.soft_notes and view.state is not NodeState.ONLINE:
            note = None  # "✓ ok" must not hide that the node is DEGRADED or worse right now
        if note is not None:
            cell = note.copy()
            cell.truncate(self.widths[key], overflow="ellipsis")
            return cell
        words = self.selector.words if self.selector else ()
        if words and key in SEARCHABLE:
            return search_cell(key, view, self.widths[key], now, selected, words)
        return draw_cell(key, view, self.widths[key], now, selected, self._scales)

    def _stamp(self, view: NodeView) -> tuple:
        """What a row's cells depend on; the fleet's scale last (_row_cells redraws only the
        bars when it alone moved)."""
        note = self.notes.get(view.name)
        words = self.selector.words if self.selector else ()  # the highlight follows them
        return (
            view.version,
            view.name in self.selected,
            note.markup if note else None,
            words,
            self._scales_key,
        )

    def _label(self, key: str) -> Text:
        width = self.widths.get(key, BY_KEY[key].width)
        if key != self.sort_key:
            return Text(column_label(key, self._scales, width))
        label = column_label(key, self._scales, width - 1)
        return Text(label + ("▼" if self.sort_reverse else "▲"), style="bold underline")

    def _column_at(self, x: int) -> str | None:
        for key, width in self.widths.items():
            if x < width + SEP:
                return key
            x -= width + SEP
        return None

    # --- internals -------------------------------------------------------------------
    def _rows(self, nodes: list[str]) -> list[str]:
        """The body's row ids: each node, then its GPU sub-rows when it is expanded."""
        if not self.expanded:
            return nodes
        rows: list[str] = []
        for name in nodes:
            rows.append(name)
            if name in self.expanded:
                facts = self.views[name].facts
                count = facts.gpu.count if facts and facts.gpu else 0
                rows.extend(_gpu_rows(name, count))
        return rows

    def _wanted(self) -> list[str]:
        views = list(self.views.values())
        if self.selector is not None:
            views = [v for v in views if self.selector.matches(v)]
            if self.selector.words and self.sort_key is None:  # best matches first
                views.sort(key=self.selector.rank)
        return [v.name for v in sorted_views(views, self.sort_key, self.sort_reverse)]

    def _fit(self, rows: int) -> dict[str, int]:
        return self.layout_for(self.order, self.hidden, rows)

    def layout_for(
        self, order: Iterable[str], hidden: Iterable[str], rows: int | None = None
    ) -> dict[str, int]:
        """The columns and widths drawn with this order and these hidden (the picker asks)."""
        width = self.size.width
        if (len(self._order) if rows is None else rows) + HEADER > self.size.height:
            width -= self.styles.scrollbar_size_vertical  # leave room for the scrollbar
        return fit_columns(width, self._needs, self.optional, order, hidden)

    def _held(self, needs: dict[str, int]) -> dict[str, int]:
        """What each variable column needs, a wider need kept for NEED_HOLD_S after it was last
        seen: a node DEGRADED for a second (a long Why) would otherwise move every column twice,
        and each move repaints the whole table (bench/terminal_bytes.py)."""
        now = time.monotonic()
        held = {}
        for key, need in needs.items():
            peak, seen = self._need_peaks.get(key, (0, now))
            if need >= peak or now - seen > NEED_HOLD_S:
                self._need_peaks[key] = (need, now)
                peak = need
            held[key] = peak
        return held

    def _set_order(self, want: list[str]) -> None:
        """New row order: the cursor follows its node (or keeps its row if the node left)."""
        cursor = self._order[self._cursor] if self._order else None
        line = self._cursor - self._top  # the cursor's line on screen, when it is on screen
        before = (self._cursor, cursor)
        self._order = want
        width = sum(w + SEP for w in self.widths.values())
        self.virtual_size = Size(width, len(want) + HEADER)
        row = 0
        if cursor is not None:  # a folded GPU sub-row: its node's row
            row = _find(want, (cursor, node_of(cursor)), self._cursor)
        self._cursor = min(max(row, 0), max(len(want) - 1, 0))
        # A new sort reorders everything: the cursor's node stays on its screen line. A live
        # re-sort moves a few rows: the view stays, the cursor goes with its node and the view
        # scrolls only to keep it in sight (scrolling with it would repaint every line).
        keep, self._keep_line = self._keep_line, False
        if keep and cursor is not None and 0 <= line < self._page:
            top = min(max(self._cursor - line, 0), max(len(want) - self._page, 0))
            if top != self._top:
                self.scroll_to(y=top, animate=False, force=True)
        self._scroll_to_cursor(False)
        if (self._cursor, want[self._cursor] if want else None) != before:
            self.post_message(self.CursorMoved(self))  # its row moved, or its node left
            if self.on_cursor is not None:
                self.on_cursor()

    def _refresh_changed_lines(self) -> None:
        """Repaint the cells that would differ from the ones drawn, on the rows on screen.

        Characters, not rows: Textual writes only the dirty spans of a line, so a row whose
        watts moved from 1,843 to 1,851 costs those two digits on the terminal, not the line
        nor the cell (bench/terminal_bytes.py). Changes a few cells apart are one span: a
        span's cursor move and colours cost more than the cells between."""
        top = self._top
        rows = range(top, min(top + self._page, len(self._order)))
        stale = []
        regions = []
        for row in rows:
            name = self._order[row]
            if GPU_SEP in name:
                drawn = self._gpu_lines.get(name)
                if drawn is None or drawn[0][:2] != self._gpu_key(name):
                    stale.append(row)
                continue
            cached = self._lines.get(name)
            if cached is not None and cached[0][:2] == self._line_key(name):
                continue
            drawn = self._drawn.get(name)
            if cached is None or drawn is None:
                stale.append(row)
                continue
            cells, y, x = self._cells[name][2], row - top + HEADER, 0
            spans: list[tuple[int, int]] = []
            for key, width in self.widths.items():
                old, new = drawn.get(key), _look(cells[key])
                if old != new:
                    lo, hi = _changed_chars(old, new, width + SEP)
                    spans.append((x + lo, x + hi))
                x += width + SEP
            regions += [Region(a, y, b - a, 1) for a, b in _merged(spans, MERGE_GAP)]
        self._refresh_rows(stale)
        if regions:
            self.refresh(*regions)

    def _refresh_rows(self, rows: Iterable[int]) -> None:
        top, width = self._top, self.size.width
        regions = [
            Region(0, row - top + HEADER, width, 1) for row in rows if top <= row < top + self._page
        ]
        if regions:
            self.refresh(*regions)

    def _scroll_to_cursor(self, animate: bool) -> None:
        # force: right after the rows change, the scrollbar (which normally allows scrolling)
        # only appears at the next layout; the target is clamped to the new rows anyway.
        top, page = self._top, self._page
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=animate, force=True)
        elif self._cursor >= top + page:
            self.scroll_to(y=self._cursor - page + 1, animate=animate, force=True)

    def _forget(self, name: str) -> None:
        self._cells.pop(name, None)
        self._lines.pop(name, None)
        self._drawn.pop(name, None)
        for rid in [r for r in self._gpu_lines if node_of(r) == name]:
            del self._gpu_lines[rid]


def _find(rows: list[str], wanted: tuple[str, ...], default: int) -> int:
    """Where the first of `wanted` that is there is: a scan in C per refresh costs less than
    keeping an index of every line (8000 with 1000 expanded nodes)."""
    for row in wanted:
        try:
            return rows.index(row)
        except ValueError:
            continue
    return default


def _look(cell: Text) -> tuple:
    """What a cell shows: its text and its styles (equal looks draw the same cells)."""
    return cell.plain, str(cell.style), tuple(cell.spans)


MERGE_GAP = 8  # unchanged cells between two changes that still cost less than a second span


def _changed_chars(old: tuple | None, new: tuple, width: int) -> tuple[int, int]:
    """The cells of a `width`-cell column that differ between two looks: the characters that
    moved when only the text did (the styles and their places are the same), else all."""
    if old is None or old[1:] != new[1:]:
        return 0, width
    a, b = old[0], new[0]
    if not (a.isascii() and b.isascii()) and any(cell_len(c) != 1 for c in a + b):
        return 0, width  # a wide character moves every cell after it
    short = min(len(a), len(b))
    lo = next((i for i in range(short) if a[i] != b[i]), short)
    hi = max(len(a), len(b))
    if len(a) == len(b):
        while hi > lo and a[hi - 1] == b[hi - 1]:
            hi -= 1
    return lo, max(hi, lo + 1)


def _merged(spans: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Spans (in order) joined where fewer than `gap` cells lie between them."""
    out: list[tuple[int, int]] = []
    for lo, hi in spans:
        if out and lo - out[-1][1] < gap:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out
