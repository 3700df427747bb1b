"""Runs a confirmed bulk action from the dashboard through the source (the aggregator).

Everything it has to say travels as messages to the table: per node, queued → running → ✓ / ✗
(`ActionProgress`, painted in the State cell), then `ActionDone`, which bubbles up to the app
for the summary, the event-log lines and the retry selection. So this module knows the source
and the messages, not the app or the table.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.message import Message

from fleettui.aggregator.dispatch import Envelope, Progress
from fleettui.views.source import FleetSource
from fleettui.views.tui.messages import ActionDone, ActionProgress
from fleettui.views.tui.screens.confirm import ActionChoice
from fleettui.wire import ActionRequest, action_problem, describe_action

OK_NOTE_S = 5.0  # how long a success stays in the row before the live state returns
FAILED_NOTE_S = 20.0


class BulkRunner:
    def __init__(self, source: FleetSource, to_table: Callable[[Message], object]) -> None:
        self.source = source
        self.to_table = to_table  # posts a message to the table
        self.last: Envelope | None = None  # the latest envelope, once the app summed it up

    async def run(self, choice: ActionChoice) -> Envelope:
        problem = action_problem(choice.action, choice.engine, choice.model)

        def progress(name: str, state: Progress, reason: str | None) -> None:
            self.to_table(ActionProgress(name, state))

        if problem is None:
            request = ActionRequest(
                action=choice.action, engine=choice.engine, model=choice.model, **choice.params
            )
            env = await self.source.act(choice.targets, request, progress)
        else:  # a name a node listed that no agent would accept: every target, not sent
            env = Envelope(choice.action, choice.engine, choice.model, choice.targets)
            env.failed = {n: f"not sent: {problem.text()}" for n in choice.targets}
        what = describe_action(choice.action, choice.engine, choice.model)
        self.to_table(ActionDone(what, env))
        return env
