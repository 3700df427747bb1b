"""Runs a confirmed bulk action from the dashboard and paints its progress into the rows.

Per node: queued → running → ✓ / ✗ in the State cell; then a summary notification, one event-log
line per node, and the failed nodes left selected so the same key retries exactly them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.text import Text

from fleettui.aggregator.dispatch import Dispatcher, Envelope, Progress
from fleettui.aggregator.state import FleetEvent
from fleettui.views.tui.screens.confirm import ActionChoice
from fleettui.wire import describe_action

if TYPE_CHECKING:
    from fleettui.views.tui.app import FleetApp

# Short enough for the State column (8 cells) at any terminal width.
NOTE_STYLE = {
    Progress.QUEUED: ("· queued", "dim"),
    Progress.RUNNING: ("⟳ busy", "bold cyan"),
    Progress.OK: ("✓ ok", "bold green"),
    Progress.FAILED: ("✗ failed", "bold red"),
}
OK_NOTE_S = 5.0  # how long a success stays in the row before the live state returns
FAILED_NOTE_S = 20.0


class BulkRunner:
    def __init__(self, app: FleetApp) -> None:
        self.app = app
        self.last: Envelope | None = None  # the latest envelope, for tests and the event log
        self.running = 0
        self._dirty = False

    def _note(self, name: str, progress: Progress) -> None:
        label, style = NOTE_STYLE[progress]
        table = self.app.main.table
        table.notes[name] = Text(label, style=style)
        if progress is Progress.OK:  # a success says nothing about the node's state now
            table.soft_notes.add(name)
        else:
            table.soft_notes.discard(name)
        if not self._dirty:  # many nodes report at once: one table pass per refresh
            self._dirty = True
            self.app.call_after_refresh(self._flush)

    def _flush(self) -> None:
        self._dirty = False
        self.app.main.table.apply()

    def _clear_notes(self, names: list[str]) -> None:
        table = self.app.main.table
        for n in names:
            table.notes.pop(n, None)
            table.soft_notes.discard(n)
        table.apply()

    async def run(self, choice: ActionChoice) -> Envelope:
        app = self.app
        assert app.config is not None
        what = describe_action(choice.action, choice.engine, choice.model)
        nodes = [n for name in choice.targets if (n := app.config.node(name)) is not None]

        def progress(name: str, state: Progress, reason: str | None) -> None:
            self._note(name, state)

        self.running += 1
        try:
            env = await Dispatcher(on_progress=progress).dispatch(
                nodes, choice.action, choice.engine, choice.model
            )
        finally:
            self.running -= 1
        self.last = env
        now = time.time()
        # The agents stream their own started/finished events; what only we know is why a
        # node failed before or without answering, and the outcome of the whole bulk action.
        log = app.main.event_log
        for name, reason in env.failed.items():
            log.add(FleetEvent(now, name, "action", f"{what}: FAILED: {reason}"))
        log.add(
            FleetEvent(
                now,
                "(fleet)",
                "action",
                f"{what}: {len(env.succeeded)}/{len(env.targets)} ok",
            )
        )
        table = app.main.table
        table.selected = set(env.failed)  # the failed ones, ready for a retry
        table.apply()
        if env.failed:
            first = next(iter(env.failed.items()))
            more = f" (+{len(env.failed) - 1} more)" if len(env.failed) > 1 else ""
            app.notify(
                f"{what}: {len(env.succeeded)} ok, {len(env.failed)} failed: "
                f"{first[0]}: {first[1]}{more}. Failed nodes stay selected for a retry.",
                severity="error",
                timeout=10,
                markup=False,  # the reason is the node's text: never markup
            )
        else:
            app.notify(f"{what}: all {len(env.succeeded)} ok", timeout=5, markup=False)
        app.set_timer(OK_NOTE_S, lambda: self._clear_notes(env.succeeded))
        app.set_timer(FAILED_NOTE_S, lambda: self._clear_notes(list(env.failed)))
        return env
