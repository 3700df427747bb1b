"""FleetApp: the full-screen dashboard over a FleetSource (the aggregator, or a fake in tests).

The app never polls anything itself. One worker waits for the source's generation to change
and applies at most one refresh per change and per `min_refresh_s` (about 4 a second), so a
1000-node fleet that changes constantly still costs a bounded amount of redraw; between changes
it only re-checks the clock-driven "Seen" cells once per `tick_s`. Another worker feeds the
event log. Action keys only post `ActionRequested`; the bulk-action layer acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import anyio
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from fleettui.aggregator.state import FleetEvent, NodeView
from fleettui.fsutil import write_new
from fleettui.prefs import DashboardPrefs, PrefsFile, quoted
from fleettui.select import parse
from fleettui.textsafe import clean
from fleettui.views.columns import BY_KEY, DEFAULT_ORDER, SORTABLE
from fleettui.views.source import FleetSource
from fleettui.views.tui.alerting import DEFAULT_TIMING, AlertRelay, AlertTiming
from fleettui.views.tui.bulk import FAILED_NOTE_S, OK_NOTE_S, BulkRunner
from fleettui.views.tui.messages import ActionDone, ActionRequested
from fleettui.views.tui.nocolor import make_legible
from fleettui.views.tui.screens.confirm import ActionChoice, ConfirmActionScreen
from fleettui.views.tui.screens.detail import DetailScreen
from fleettui.views.tui.screens.help import ACTION_HELP, HelpScreen
from fleettui.views.tui.screens.main import ACTION_KEYS, MainScreen
from fleettui.views.tui.spans import install as write_only_dirty_spans

DEFAULT_THEME = "textual-dark"


def local_hms(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


class FleetApp(App[None]):
    """The dashboard. `clock` and `fmt_time` are injectable so snapshots never drift; `bell`
    and `terminal_write` so tests count the alerts (views/tui/alerting.py)."""

    CSS_PATH = "app.tcss"
    TITLE = "fleet"
    BINDINGS = [
        Binding("p", "toggle_pause", "Pause"),
        Binding("ctrl+p", "command_palette", "Commands", priority=True),
        Binding("ctrl+s", "screenshot", "Screenshot", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", show=False, priority=True),
    ]

    def __init__(
        self,
        source: FleetSource,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        fmt_time: Callable[[float], str] = local_hms,
        min_refresh_s: float = 0.25,
        tick_s: float = 1.0,
        filter_text: str = "",
        prefs: PrefsFile | None = None,
        notify_desktop: bool = False,
        bell: Callable[[], None] | None = None,
        terminal_write: Callable[[str], None] | None = None,
        alert_timing: AlertTiming = DEFAULT_TIMING,
        ansi_color: bool | None = None,  # True on a 16-colour terminal (nocolor.sixteen_colors)
    ) -> None:
        super().__init__(ansi_color=ansi_color)
        write_only_dirty_spans()
        if self.no_color:
            self._filters = make_legible(self._filters)
        self.source = source
        self.read_only = read_only
        self.clock = clock
        self.fmt_time = fmt_time
        self.min_refresh_s = min_refresh_s
        self.tick_s = tick_s
        self.initial_filter = parse(filter_text) if filter_text else None
        self.generation = -1
        self.refreshes = 0  # snapshot refreshes applied (tests check coalescing with it)
        self.prefs = prefs  # the operator's dashboard.toml (None: nothing remembered)
        self.config_warnings = [*source.config_warnings, *(prefs.warnings if prefs else [])]
        self.theme = self._saved_theme()
        self.main = MainScreen(
            clock,
            fmt_time,
            read_only,
            on_ready=self._start,
            config_warnings=self.config_warnings,
            skipped=source.skipped,
        )
        self.bulk = BulkRunner(source, lambda message: self.main.table.post_message(message))
        # Subscribed now, not once the screen is up: the first polls (a node down from the
        # start) happen while the app is still starting, and their transitions belong in the log.
        self._events = source.events(kinds=("action", "audit", "state", "error"))
        self.alerts = AlertRelay(
            self,
            source.names,
            bell=bell or self.bell,
            write=(terminal_write or self._write_terminal) if notify_desktop else None,
            timing=alert_timing,
        )
        self._resumed = asyncio.Event()  # set whenever updates are not paused (p)
        self._resumed.set()

    def get_default_screen(self) -> MainScreen:
        return self.main

    def _saved_theme(self) -> str:
        theme = self.prefs.prefs.theme if self.prefs else None
        if theme is None or theme in self.available_themes:
            return theme or DEFAULT_THEME
        assert self.prefs is not None
        self.config_warnings.append(
            f"{self.prefs.path}: theme: unknown theme {quoted(theme)}; {DEFAULT_THEME} used"
        )
        return DEFAULT_THEME

    def _start(self) -> None:
        self.main.table.selector = self.initial_filter
        if self.prefs is not None:
            saved = self.prefs.prefs
            self.main.table.set_columns(saved.order or DEFAULT_ORDER, saved.hidden)
            self.theme_changed_signal.subscribe(self, lambda _theme: self.remember())
        self.refresh_fleet(force=True)
        self.run_worker(self.follow_source, group="follow", exclusive=True, exit_on_error=False)
        self.run_worker(self.follow_events, group="events", exclusive=True, exit_on_error=False)

    # --- data ------------------------------------------------------------------------
    def refresh_fleet(self, force: bool = False) -> None:
        """Apply the source's state: new snapshots if the generation moved, else only ages."""
        gen = self.source.generation
        if force or gen != self.generation:
            self.generation = gen
            self.main.show(self._fresh_views(force))
            self.refreshes += 1
            if isinstance(self.screen, DetailScreen):
                self.screen.show(self.main.views.get(self.screen.node_name))
        else:
            self.main.show(None)

    def _fresh_views(self, full: bool) -> list[NodeView]:
        """Every node, copying only those whose version moved (a full copy of 1000 nodes
        costs several times a refresh, docs/performance.md)."""
        held = self.main.views
        if full or not held or list(held) != self.source.names:  # nodes came or went
            return self.source.snapshots()
        fresh = {v.name: v for v in self.source.changed({n: v.version for n, v in held.items()})}
        return [fresh.get(name) or view for name, view in held.items()]

    async def follow_source(self) -> None:
        """One refresh per generation change, at most one per `min_refresh_s`.

        The pause after a refresh is also at least twice what the refresh cost, so however
        large the fleet, the keyboard always gets two thirds of the event loop.
        """
        while True:
            if self.main.paused_at is not None:  # p: hold the figures; only their age moves
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._resumed.wait(), self.tick_s)
                self.main.show(None)
                continue
            spent = 0.0
            try:
                await self.source.wait_changed(self.generation, timeout=self.tick_s)
                started = time.perf_counter()
                self.refresh_fleet()
                spent = time.perf_counter() - started
            except Exception as exc:  # a broken source must not kill the dashboard
                self.notify(
                    clean(f"refresh failed: {exc}"), severity="error", timeout=5, markup=False
                )
                await asyncio.sleep(1.0)
            await asyncio.sleep(max(self.min_refresh_s, 2 * spent))

    async def follow_events(self) -> None:
        log = self.main.event_log
        for warning in self.config_warnings:
            log.add(FleetEvent(self.clock(), "(config)", "error", warning))
        # Not `snapshot`: at 1000 nodes that is 500 events a second the log would only skip.
        stream = self._events
        try:
            async for event in stream:
                log.add(event)
                self.alerts.see(event)
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:  # unsubscribe now, not whenever it is collected
                with contextlib.suppress(Exception):
                    await close()

    # --- the operator's preferences ---------------------------------------------------
    def remember(self) -> None:
        """Save the table's columns and the theme to dashboard.toml, off the event loop."""
        if self.prefs is None:
            return
        table = self.main.table
        wish = DashboardPrefs(
            () if table.order == DEFAULT_ORDER else table.order,
            table.hidden,
            None if self.theme == DEFAULT_THEME else self.theme,
        )
        if self.prefs.want(wish):
            self.run_worker(self._write_prefs(self.prefs), group="prefs", exit_on_error=False)

    async def _write_prefs(self, prefs: PrefsFile) -> None:
        try:
            await anyio.to_thread.run_sync(prefs.write)
        except OSError as exc:  # a symlink refused too: say so, keep the dashboard
            self.notify(
                clean(f"not saved: {prefs.path}: {exc.strerror or exc}"),
                severity="warning",
                timeout=8,
                markup=False,
            )

    # --- alerts ----------------------------------------------------------------------
    def _write_terminal(self, sequence: str) -> None:
        """Through the driver, between frames (a desktop notification's OSC)."""
        if not self.is_headless and self._driver is not None:
            self._driver.write(sequence)

    def action_toggle_pause(self) -> None:
        """p: stop applying new snapshots (keys, cursor, sort and screens still work); p
        again applies the latest at once."""
        main = self.main
        if main.paused_at is None:
            main.paused_at = self.clock()
            self._resumed.clear()
        else:
            main.paused_at = None
            self._resumed.set()
            self.refresh_fleet()
        main.update_status()

    def action_screenshot(self) -> None:
        """ctrl+s: the screen as SVG in the current directory, next to what is there."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.clock()))
        here: Path | str = "the current directory"
        try:
            here = Path.cwd()
            path = write_new(here, f"fleet-{stamp}", ".svg", self.export_screenshot())
        except OSError as exc:  # read-only, full, or gone: said, never a crash
            self.notify(
                f"screenshot not saved in {here}: {exc.strerror or exc}",
                severity="error",
                timeout=8,
                markup=False,
            )
            return
        self.notify(f"screenshot saved: {path}", timeout=8, markup=False)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The command palette (ctrl+p): every key's action by name. Textual's own theme,
        keys and maximize commands stay; its screenshot would overwrite, so ours replaces it."""
        for command in super().get_system_commands(screen):
            if command.title != "Screenshot":
                yield command
        paused = self.main.paused_at is not None
        yield SystemCommand(
            "Resume updates" if paused else "Pause updates",
            "apply the latest snapshots again (p)" if paused else "hold the figures shown (p)",
            self.action_toggle_pause,
        )
        yield SystemCommand(
            "Help", "every key, the columns, the filter grammar (?)", self.action_help
        )
        yield SystemCommand(
            "Screenshot",
            "save the screen as SVG in the current directory (ctrl+s)",
            self.action_screenshot,
        )
        if screen is self.main:
            yield from self._main_commands()

    def _main_commands(self) -> Iterable[SystemCommand]:
        main, table = self.main, self.main.table
        yield SystemCommand("Filter", "show only the nodes that match (/)", main.action_filter)
        if table.selector is not None:
            yield SystemCommand("Clear filter", "show every node (esc)", main.action_clear_filter)
        yield SystemCommand("Sort: next column", "(s)", main.action_sort)
        yield SystemCommand("Sort: reverse", "(S)", main.action_reverse_sort)
        for key in SORTABLE:
            if key in table.widths:
                label = BY_KEY[key].label
                yield SystemCommand(
                    f"Sort by {label}", f"sort the rows by {label}", partial(main.sort_by, key)
                )
        yield SystemCommand(
            "Select", "select / unselect the cursor's node (space)", main.action_toggle_select
        )
        yield SystemCommand("Select all", "select every node shown (a)", main.action_select_all)
        yield SystemCommand("Clear selection", "(A)", main.action_clear_selection)
        yield SystemCommand("Node detail", "the cursor's node (enter)", table.action_choose)
        yield SystemCommand(
            "GPUs: expand / fold", "one row per GPU of the cursor's node (g)", table.action_expand
        )
        yield SystemCommand("Event log", "show / hide it (e)", main.action_toggle_events)
        yield SystemCommand(
            "Columns", "show, hide and order the columns; theme (c)", main.action_columns
        )
        yield SystemCommand("Fit", "does a model fit? the Fit column, ranked (F)", main.action_fit)
        yield SystemCommand(
            "Fit: binpack / spread", "rank the fit answers the other way (b)", main.action_strategy
        )
        if not self.read_only:  # read-only: no action is offered, here or in the footer
            for key, what in ACTION_HELP:
                action = ACTION_KEYS[key]
                yield SystemCommand(
                    f"{action.title()} ({key})",
                    f"{what}, on the selection or the cursor's node; asks first",
                    partial(main.action_node_action, action),
                )

    # --- screens ---------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(read_only=self.read_only))

    def open_detail(self, name: str) -> None:
        view = self.main.views.get(name)
        if view is not None:
            self.push_screen(DetailScreen(view, self.source.fetch_audit, self.clock, self.fmt_time))

    # --- bulk actions ----------------------------------------------------------------
    def on_action_requested(self, message: ActionRequested) -> None:
        """Ask first: the modal lists the targets and the engines (and models) on them."""
        views = [self.main.views[n] for n in message.targets if n in self.main.views]
        if views:
            fleet = list(self.main.views.values())  # a load's model metadata: from any node
            asked = self.main.fit_request if message.action == "load" else None
            screen = ConfirmActionScreen(message.action, views, fleet, asked)
            self.push_screen(screen, self._confirmed)

    def _confirmed(self, choice: ActionChoice | None) -> None:
        if choice is None:
            self.notify("cancelled: nothing sent", timeout=3)
            return
        self.alerts.acting(choice.targets)
        self.run_worker(self.bulk.run(choice), group="action", exit_on_error=False)

    def on_action_done(self, message: ActionDone) -> None:
        """Every row shows the outcome now (the table handled the progress before this bubbled
        up): what only we know is why a node failed before or without answering (the agents
        stream their own started/finished events) and the outcome of the whole action."""
        what, env = message.what, message.envelope
        now = time.time()
        log = self.main.event_log
        for name, reason in env.failed.items():
            log.add(FleetEvent(now, name, "action", f"{what}: FAILED: {reason}"))
        log.add(
            FleetEvent(
                now, "(fleet)", "action", f"{what}: {len(env.succeeded)}/{len(env.targets)} ok"
            )
        )
        table = self.main.table
        table.selected = set(env.failed)  # the failed ones, ready for a retry
        table.apply()
        failure = None
        if env.failed:
            first = next(iter(env.failed.items()))
            more = f" (+{len(env.failed) - 1} more)" if len(env.failed) > 1 else ""
            failure = (
                f"{what}: {len(env.succeeded)} ok, {len(env.failed)} failed: "
                f"{first[0]}: {first[1]}{more}"
            )
            self.notify(
                f"{failure}. Failed nodes stay selected for a retry.",
                severity="error",
                timeout=10,
                markup=False,  # the reason is the node's text: never markup
            )
        else:
            self.notify(f"{what}: all {len(env.succeeded)} ok", timeout=5, markup=False)
        self.alerts.acted(env.targets, failure)
        self.set_timer(OK_NOTE_S, lambda: table.clear_notes(env.succeeded))
        self.set_timer(FAILED_NOTE_S, lambda: table.clear_notes(list(env.failed)))
        self.bulk.last = env
