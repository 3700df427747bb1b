"""Messages the dashboard's parts use to talk to each other (so no part imports another's
owner: the bulk-action layer posts progress, the table paints it, the app sums it up)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from fleettui.aggregator.dispatch import Envelope, Progress


@dataclass
class ActionRequested(Message):
    """An action key (R U P X T) was pressed on these nodes; the bulk-action layer handles it.

    `action` is one of wire.ACTIONS. Nothing has been sent anywhere when this is posted.
    """

    action: str
    targets: list[str]


@dataclass
class ActionProgress(Message):
    """A node of a running bulk action moved on (queued, running, ok, failed); the table
    shows it in the node's State cell."""

    node: str
    progress: Progress


@dataclass
class ActionDone(Message):
    """A bulk action ended; posted after its last ActionProgress, to the same table, so it
    bubbles up to the app only once every row shows its outcome."""

    what: str  # how the operator would say it: `restart ollama`
    envelope: Envelope
