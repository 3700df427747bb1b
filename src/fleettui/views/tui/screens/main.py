"""The main screen: the fleet table, the event log pane, the totals line and the key footer.

The table keys live here, not on the app, so they do nothing while the detail or help screen
is up; the app only owns quitting, help, and the data loop.
"""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen

from fleettui.aggregator.placement import order_key
from fleettui.aggregator.state import NodeView
from fleettui.capacity.fit import FitRequest
from fleettui.select import SelectError, Selector, parse
from fleettui.views.tui.messages import ActionRequested
from fleettui.views.tui.screens.ask import AskBar
from fleettui.views.tui.screens.columns import ColumnChoice, ColumnsScreen
from fleettui.views.tui.screens.filter import FilterBar
from fleettui.views.tui.screens.fit import FitBar, parse_fit
from fleettui.views.tui.table import FleetTable
from fleettui.views.tui.widgets import ConfigBanner, EventLog, KeyFooter, PlaceBar, TotalsBar

# One key per wire action (tests pin that they are the same set).
ACTION_KEYS = {"R": "restart", "U": "unload", "L": "load", "P": "purge", "X": "stop", "T": "start"}
# The footer's keys, most important first: as many as fit are shown (80 columns: up to the
# first actions; read-only: no action key at all), the rest are in ? and the palette.
FOOTER_PRIORITY = (
    "help",
    "quit",
    "cancel",  # esc in the filter or fit bar (while one types, the letter keys are text)
    "filter",
    "toggle_select",
    "sort",
    "toggle_pause",
    *(f"node_action('{action}')" for action in ACTION_KEYS.values()),
    "fit",
    "toggle_events",
    "columns",
    "command_palette",
    "select_all",
    "clear_selection",
)


class MainScreen(Screen[None]):
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("space", "toggle_select", "Select"),
        Binding("a", "select_all", "All"),
        Binding("A", "clear_selection", "None"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
        Binding("e", "toggle_events", "Events"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        *(
            Binding(key, f"node_action('{action}')", action.title())
            for key, action in ACTION_KEYS.items()
        ),
        Binding("F", "fit", "Fit"),  # last: a narrow footer drops it before an action key
        Binding("c", "columns", "Columns"),  # the footer shows it where it fits
        Binding("b", "strategy", "binpack/spread", show=False),
        # Read-only: the footer offers no action key, and pressing one says why (check_action).
        *(
            Binding(key, f"refuse_action('{action}')", show=False)
            for key, action in ACTION_KEYS.items()
        ),
    ]

    def __init__(
        self,
        clock: Callable[[], float],
        fmt_time: Callable[[float], str],
        read_only: bool = False,
        on_ready: Callable[[], None] | None = None,
        config_warnings: list[str] | None = None,
        skipped: int = 0,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.fmt_time = fmt_time
        self.read_only = read_only
        self.on_ready = on_ready
        self.skipped = skipped
        self.config_warnings = list(config_warnings or [])
        self.fit_text: str | None = None  # the fit question asked with F, as typed
        self.fit_request: FitRequest | None = None  # ... and as parsed
        self.strategy = "binpack"  # how its answers are ranked (strategy= in F, or b)
        self.filter_before: Selector | None = None  # what esc in the filter bar puts back
        self.paused_at: float | None = None  # while `p` holds the updates: since when

    def compose(self) -> ComposeResult:
        yield FleetTable(id="fleet", clock=self.clock)
        log = EventLog(self.fmt_time, id="events")
        log.border_title = "events"
        yield log
        yield ConfigBanner(self.config_warnings, self.skipped, id="config-warnings")
        yield PlaceBar(id="place")
        yield FilterBar(id="filter-bar")
        yield FitBar(id="fit-bar")
        yield TotalsBar(id="totals")
        yield KeyFooter(FOOTER_PRIORITY)

    def on_mount(self) -> None:
        self.table.focus()
        self.table.on_cursor = self.update_status  # the row position, in the cursor's frame
        if self.on_ready is not None:
            self.on_ready()  # the app starts feeding us only once the table exists

    @property
    def table(self) -> FleetTable:
        return self.query_one(FleetTable)

    @property
    def event_log(self) -> EventLog:
        return self.query_one(EventLog)

    @property
    def views(self) -> dict[str, NodeView]:
        return self.table.views

    def show(self, views: list[NodeView] | None) -> None:
        """New snapshots (or None: only the clock moved)."""
        self.table.apply(views)
        self.update_totals()
        if views is not None:
            self.update_place()

    def update_place(self) -> None:
        """The placement line: the score and reasons of the row under the cursor."""
        t = self.table
        self.query_one(PlaceBar).show(list(t.views.values()), t.cursor_name, self.strategy)

    def update_totals(self) -> None:
        t = self.table
        selected = t.selected & set(t.views)
        self.query_one(TotalsBar).show(
            list(t.views.values()),
            len(selected),
            len(t.visible_names),
            t.selector.text if t.selector else None,
            t.sort_key,
            t.sort_reverse,
            self.read_only,
            hidden_selected=len(selected - set(t.visible_names)),
            skipped=self.skipped,
            fit_text=self.fit_text,
        )
        self.update_status()

    def update_status(self) -> None:
        """The right end of the totals line: the cursor's row, and the pause."""
        paused = None if self.paused_at is None else self.clock() - self.paused_at
        self.query_one(TotalsBar).status(self.table.position, paused)

    # --- keys ------------------------------------------------------------------------
    def action_toggle_select(self) -> None:
        self.table.toggle_selected()
        self.update_totals()

    def action_select_all(self) -> None:
        self.table.select_visible()
        self.update_totals()

    def action_clear_selection(self) -> None:
        self.table.clear_selection()
        self.update_totals()

    def action_sort(self) -> None:
        self.table.cycle_sort()
        self.update_totals()

    def sort_by(self, key: str) -> None:
        self.table.sort_by(key)
        self.update_totals()

    def action_reverse_sort(self) -> None:
        self.table.reverse_sort()
        self.update_totals()

    def action_toggle_events(self) -> None:
        log = self.event_log
        log.display = not log.display
        if log.display:
            log.flush()

    def _ask(self, bar: type[AskBar], current: str) -> None:
        """Open one bar (the other one, if open, is cancelled)."""
        for other in self.query(AskBar):
            if other.is_open and not isinstance(other, bar):
                other.action_cancel()
        self.query_one(bar).open(current, lambda: list(self.views.values()))

    def action_filter(self) -> None:
        bar = self.query_one(FilterBar)
        if not bar.is_open:
            self.filter_before = self.table.selector
        self._ask(FilterBar, self.table.selector.text if self.table.selector else "")

    @on(FilterBar.Typed)
    def filter_typed(self, event: FilterBar.Typed) -> None:
        self.table.set_filter(event.selector)
        self.update_totals()

    @on(AskBar.Done)
    def answered(self, event: AskBar.Done) -> None:
        self.table.focus()
        if isinstance(event.bar, FitBar):
            self.ask_fit(event.text)
        elif event.text is None:  # esc: the filter from before the bar opened
            self.table.set_filter(self.filter_before)
            self.update_totals()
        else:
            self.set_filter(event.text)

    def set_filter(self, text: str | None) -> bool:
        """Apply a filter expression ("" clears it, None leaves it); False when it is bad."""
        if text is None:
            return True
        try:
            self.table.set_filter(parse(text) if text else None)
        except SelectError as exc:  # the filter bar validates; this is for direct callers
            self.notify(str(exc), severity="error", markup=False)
            return False
        self.update_totals()
        return True

    def action_fit(self) -> None:
        self._ask(FitBar, self.fit_text or "")

    def ask_fit(self, text: str | None) -> None:
        """Ask the source the fit question typed with F ("" stops asking, None leaves it);
        the Fit column shows its answers, best first."""
        if text is None:
            return
        # the fit bar validated it
        request, self.strategy = parse_fit(text) if text else (None, "binpack")
        watch = self.app.source.set_fit(request, strategy=self.strategy)  # type: ignore[attr-defined]
        self.fit_text, self.fit_request = text or None, request
        table = self.table
        table.show_optional({"fit"} if request else ())
        if request is not None:
            table.sort_by("fit")
            if watch is not None and watch.meta is None:  # the fit bar warned already
                self.notify(
                    f"{request.model}: no node has its metadata, so every node answers '?'",
                    severity="warning",
                    markup=False,
                )
        self.app.refresh_fleet()  # type: ignore[attr-defined]
        self.update_totals()
        self.update_place()

    def action_strategy(self) -> None:
        """b: rank the fit question's answers the other way (binpack <-> spread)."""
        if self.fit_text is None:
            self.notify("ask a fit question first (F)", severity="warning")
            return
        other = "spread" if self.strategy == "binpack" else "binpack"
        words = [w for w in self.fit_text.split() if not w.startswith("strategy=")]
        self.ask_fit(" ".join([*words, *([f"strategy={other}"] if other == "spread" else [])]))

    def action_columns(self) -> None:
        t = self.table
        screen = ColumnsScreen(t.order, t.hidden, t.layout_for, t.size.width, t.optional)
        self.app.push_screen(screen, self.set_columns)

    def set_columns(self, choice: ColumnChoice | None) -> None:
        """The picker's choice (None: cancelled), on the table and remembered by the app."""
        if choice is None:
            return
        self.table.set_columns(choice.order, choice.hidden)
        self.update_totals()  # a sort by a column now hidden is gone
        self.app.remember()  # type: ignore[attr-defined]

    def action_clear_filter(self) -> None:
        bar = self.query_one(FilterBar)
        if bar.is_open:  # the bar lost the focus (a click on the table): esc still cancels it
            bar.action_cancel()
            return
        if self.table.selector is not None:
            self.set_filter("")

    @on(FleetTable.SortChanged, "#fleet")
    def sorted_by_click(self) -> None:
        self.update_totals()

    @on(FleetTable.CursorMoved, "#fleet")
    def cursor_moved(self) -> None:
        self.update_place()

    @on(FleetTable.NodeChosen, "#fleet")
    def open_detail(self, event: FleetTable.NodeChosen) -> None:
        self.app.open_detail(event.node)  # type: ignore[attr-defined]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "node_action":
            return not self.read_only
        if action == "refuse_action":
            return self.read_only
        return True

    def action_refuse_action(self, action: str) -> None:
        self.notify(
            f"read-only: '{action}' is disabled (fleet was started with --read-only)",
            severity="warning",
        )

    def _best_placed(self) -> list[str] | None:
        """L with nothing selected while a fit question is asked: the best-ranked visible
        node that can take the model (score above 0); None after saying there is none."""
        t = self.table
        ranked = sorted(
            (v for n in t.visible_names if (v := t.views[n]).placement is not None),
            key=lambda v: order_key(v, v.placement[0]),  # type: ignore[index]
        )
        best = [v.name for v in ranked if v.placement and v.placement[0] > 0][:1]
        if not best:
            why = f": {ranked[0].name}: {ranked[0].placement[1][0]}" if ranked else ""  # type: ignore[index]
            self.notify(f"no node can take the model{why}", severity="warning", markup=False)
            return None
        return best

    def action_node_action(self, action: str) -> None:
        """R/U/L/P/X/T: hand the targets to the bulk-action layer (never bound when read-only)."""
        targets = self.table.targets()
        if action == "load" and self.fit_text and not self.table.selected & set(targets):
            targets = self._best_placed()
            if targets is None:
                return
        if not targets:
            self.notify("no node to act on", severity="warning")
            return
        self.post_message(ActionRequested(action, targets))
