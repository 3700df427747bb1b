"""Messages the dashboard's parts use to talk to each other."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class FleetRefreshed(Message):
    """The app applied a new aggregator generation; open screens may redraw from `app.views`."""

    generation: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, FleetRefreshed)


@dataclass
class ActionRequested(Message):
    """An action key (R U P X T) was pressed on these nodes; the bulk-action layer handles it.

    `action` is one of wire.ACTIONS. Nothing has been sent anywhere when this is posted.
    """

    action: str
    targets: list[str]
