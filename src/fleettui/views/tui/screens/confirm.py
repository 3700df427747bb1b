"""The confirmation modal for R/U/L/P/X/T: which nodes, which engine (and model), then y or esc.

Nothing is sent until the operator confirms. The engines and models offered are the ones
present on the target nodes, counted, so a typo cannot send `restart vlm` to forty machines.
For a load the models are those on the targets' disks (and resident elsewhere), and each
target's fit is shown with what would be evicted (the agent checks again before loading).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList, Static
from textual.widgets.option_list import Option

from fleettui.aggregator.state import NodeView
from fleettui.capacity.estimate import mib
from fleettui.capacity.fit import Fit, FitRequest, check_fit, find_meta
from fleettui.views.columns import plural
from fleettui.wire import NEEDS_ENGINE, TAKES_MODEL

ALL_MODELS = "\x00all"  # option id of "every resident model"
MAX_LISTED = 12
MAX_LISTED_COMPACT = 4
COMPACT_BELOW_ROWS = 32  # shorter terminals get the compact modal


@dataclass(frozen=True)
class ActionChoice:
    action: str
    targets: list[str]
    engine: str | None
    model: str | None
    params: dict[str, Any] = field(default_factory=dict)  # a load's ctx / parallel / kv_type


def engines_on(views: list[NodeView]) -> Counter[str]:
    """How many target nodes run each engine (up or down: a down engine is what one starts)."""
    c: Counter[str] = Counter()
    for v in views:
        if v.snapshot is not None:
            c.update({e.name for e in v.snapshot.engines})
    return c


def engines_down(views: list[NodeView]) -> Counter[str]:
    """How many target nodes have each engine down: what `start` is for."""
    c: Counter[str] = Counter()
    for v in views:
        if v.snapshot is not None:
            c.update({e.name for e in v.snapshot.engines if e.status != "up"})
    return c


def holders(views: list[NodeView], engine: str, model: str | None) -> list[NodeView]:
    """The nodes an unload is for: those running `engine` and, when named, holding `model`."""
    out = []
    for v in views:
        engines = [e for e in (v.snapshot.engines if v.snapshot else []) if e.name == engine]
        if engines and (model is None or any(m.name == model for m in engines[0].models)):
            out.append(v)
    return out


def models_on(views: list[NodeView], engine: str) -> Counter[str]:
    c: Counter[str] = Counter()
    for v in views:
        if v.snapshot is None:
            continue
        for e in v.snapshot.engines:
            if e.name == engine:
                c.update({m.name for m in e.models})
    return c


def loadable_on(views: list[NodeView], engine: str) -> Counter[str]:
    """Models a load could name: on the targets' disks for `engine`, or resident in it."""
    c: Counter[str] = Counter()
    for v in views:
        for e in v.snapshot.engines if v.snapshot else []:
            if e.name == engine:
                c.update({m.name for m in [*e.available, *e.models]})
    return c


FIT_STYLE = {"fits": "green", "evict": "yellow", "no": "red", "unknown": "dim"}


def fits_of(
    views: list[NodeView],
    fleet: list[NodeView],
    engine: str,
    model: str,
    params: dict[str, Any] | None = None,
) -> list[Fit]:
    """Each target's fit for loading `model` with `engine` (and the load's ctx / parallel /
    kv_type), metadata from any node of the fleet."""
    meta = find_meta({v.name: v.snapshot for v in fleet if v.snapshot is not None}, model)
    req = FitRequest(model, engine=engine, **(params or {}))
    out = []
    for v in views:
        if v.snapshot is None:
            why = (v.reasons or ["no snapshot yet"])[0]
            out.append(
                Fit(v.name, "unknown", None, None, None, None, None, (), (why,), "-", model=model)
            )
        else:
            out.append(check_fit(v.name, v.snapshot, meta, req))
    return out


def fit_lines(fits: list[Fit], limit: int = MAX_LISTED // 2) -> Group:
    """Two lines per target: node, verdict, needs / free, what would be evicted; the reason."""
    lines: list[Text] = []
    for f in fits[:limit]:
        need = "?" if f.need_bytes is None else mib(f.need_bytes)
        free = "?" if f.free_bytes is None else mib(f.free_bytes)
        line = Text.assemble((f.node, "bold"), "  ", (f.verdict, FIT_STYLE[f.verdict]))
        if f.need_bytes is not None or f.free_bytes is not None:
            line.append(f"  needs {need}, {free} free", style="dim")
        if f.evict:
            line.append(f"  evicts {', '.join(f.evict)}", style="yellow")
        lines.append(line)
        first = (f.reasons or ("",))[0]
        # the figures are on the line above: what follows them is the news
        reason = Text(f"  {first.split('): ', 1)[-1]}", style="dim")
        reason.no_wrap, reason.overflow = True, "ellipsis"
        lines.append(reason)
    if len(fits) > limit:
        lines.append(Text(f"… and {len(fits) - limit} more", style="dim"))
    return Group(*lines)


def targets_table(views: list[NodeView], limit: int = MAX_LISTED) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True)
    for v in views[:limit]:
        token = (
            Text("token ✓", style="green")
            if v.has_token
            else Text("no token: not sent", style="red")
        )
        t.add_row(Text(v.name, style="bold"), Text(v.state.value, style="dim"), token)
    if len(views) > limit:
        t.add_row(Text(f"… and {len(views) - limit} more", style="dim"), "", "")
    return t


class ConfirmActionScreen(ModalScreen[ActionChoice | None]):
    """Dismisses with the operator's choice, or None when cancelled."""

    BINDINGS = [
        Binding("escape,n,q", "cancel", "Cancel"),
        Binding("y", "confirm", "Confirm"),
    ]

    def __init__(
        self,
        action: str,
        views: list[NodeView],
        fleet: list[NodeView] | None = None,
        asked: FitRequest | None = None,
    ) -> None:
        super().__init__()
        self.action = action
        self.views = views
        self.fleet = fleet if fleet is not None else views  # where a load's metadata may be
        # a load: the F question; its model is highlighted first, and loading that model
        # asks for the question's ctx / parallel / kv_type (what its Fit column judged)
        self.asked = asked
        self.prefer = asked.model if asked is not None else None
        self.engines = engines_on(views)
        self.down = engines_down(views)
        self.fits: dict[str, Fit] = {}  # load: each target's, for the model highlighted

    @property
    def compact(self) -> bool:
        return self.app.size.height < COMPACT_BELOW_ROWS

    def compose(self) -> ComposeResult:
        n = len(self.views)
        with Vertical(id="confirm-box"):
            yield Label(
                f"[b]{self.action.title()}[/b] on {n} node{'s' if n != 1 else ''}",
                id="confirm-title",
            )
            limit = MAX_LISTED_COMPACT if self.compact else MAX_LISTED
            yield Static(targets_table(self.views, limit), id="confirm-targets")
            if self.action in NEEDS_ENGINE:
                yield Label("Engine", classes="confirm-label")
                yield OptionList(*self._engine_options(), id="confirm-engine")
            if self.action in TAKES_MODEL:
                yield Label("Model", classes="confirm-label")
                yield OptionList(id="confirm-model")
            if self.action == "load":
                yield Static(id="confirm-fit")
            yield Static(id="confirm-summary")
            with Horizontal(id="confirm-buttons"):
                yield Button(self.action.title(), variant="error", id="confirm-yes")
                yield Button("Cancel", id="confirm-no")
            hint = Text.assemble(
                ("y", "bold"),
                " confirm · ",
                ("n", "bold"),
                "/",
                ("esc", "bold"),
                " cancel · ",
                ("tab", "bold"),
                " next list",
            )
            yield Label(hint, id="confirm-hint")

    def _engine_options(self) -> list[Option]:
        """Most common first; for `start`, the engines that are down first (the first option
        is the one highlighted, and starting an engine that runs would do nothing)."""
        n = len(self.views)
        start = self.action == "start"

        def order(name: str) -> tuple[int, int, str]:
            return (-self.down[name] if start else 0, -self.engines[name], name)

        options = []
        for name in sorted(self.engines, key=order):
            label = Text.assemble(name, (f"  on {self.engines[name]}/{n}", "dim"))
            if self.down[name]:
                label.append(f"  down on {self.down[name]}", style="yellow")
            options.append(Option(label, id=name))
        return options

    def on_mount(self) -> None:
        # Short terminals (80x24): drop the buttons and spacing; y / esc still work.
        self.query_one("#confirm-box").set_class(self.compact, "compact")
        if self.action in NEEDS_ENGINE:
            engines = self.query_one("#confirm-engine", OptionList)
            if engines.option_count:
                engines.highlighted = 0
            engines.focus()
        self._fill_models()
        self._summarise()

    # --- choices -----------------------------------------------------------------------
    @property
    def engine(self) -> str | None:
        if self.action not in NEEDS_ENGINE:
            return None
        ol = self.query_one("#confirm-engine", OptionList)
        if ol.highlighted is None:
            return None
        return ol.get_option_at_index(ol.highlighted).id

    @property
    def model(self) -> str | None:
        if self.action not in TAKES_MODEL:
            return None
        ol = self.query_one("#confirm-model", OptionList)
        if ol.highlighted is None:
            return None
        mid = ol.get_option_at_index(ol.highlighted).id
        return None if mid == ALL_MODELS else mid

    def _fill_models(self) -> None:
        if self.action not in TAKES_MODEL:
            return
        ol = self.query_one("#confirm-model", OptionList)
        ol.clear_options()
        engine = self.engine
        if engine is None:
            return
        if self.action == "load":
            counts = loadable_on(self.views, engine)
        else:
            counts = models_on(self.views, engine)
            ol.add_option(Option("every resident model", id=ALL_MODELS))
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        for name, count in ordered:
            ol.add_option(Option(Text.assemble(name, (f"  on {count}", "dim")), id=name))
        names = [n for n, _ in ordered]
        ol.highlighted = names.index(self.prefer) if self.prefer in names else 0

    def _summarise(self) -> None:
        words = [self.action]
        if self.action in NEEDS_ENGINE:
            if self.engine is None:
                self.query_one("#confirm-summary", Static).update(
                    Text("no engine on these nodes: nothing to act on", style="bold red")
                )
                return
            words.append(self.engine)
        if self.action == "unload":
            words.append(self.model or "(every model)")
        if self.action == "load":
            if self.model is None:
                self.query_one("#confirm-summary", Static).update(
                    Text(f"no model on these nodes' disks for {self.engine}", style="bold red")
                )
                return
            words.append(self.model)
            self._show_fits(self.engine or "", self.model)
            words += [f"{k}={v}" for k, v in self.load_params.items()]
        targets = self.targets
        unsent = sum(1 for v in targets if not v.has_token)
        text = Text(" ".join(words), style="bold")
        text.append(f" on {plural(len(targets) - unsent, 'node')}")
        if unsent:
            text.append(f"; {unsent} without a token will fail here, unsent", style="yellow")
        if self.action == "unload" and (left := len(self.views) - len(targets)):
            what = self.model or self.engine
            text.append(f"; {left} without {what} left out", style="yellow")
        elif self.action in NEEDS_ENGINE and self.engine is not None and self.action != "load":
            lacking = len(self.views) - self.engines[self.engine]
            if lacking:
                text.append(f"; {lacking} not running {self.engine} will refuse it", style="yellow")
        if self.action == "load":
            refused = sum(f.verdict in ("no", "unknown") for f in self.fits.values())
            if refused:
                text.append(f"; {refused} will refuse it (no fit, or cannot tell)", style="yellow")
            if evicting := sorted({m for f in self.fits.values() for m in f.evict}):
                text.append(f"; evicts idle {', '.join(evicting)} first", style="yellow")
        self.query_one("#confirm-summary", Static).update(text)

    @property
    def load_params(self) -> dict[str, Any]:
        """The F question's ctx / parallel / kv_type when the model to load is its model."""
        q = self.asked
        if self.action != "load" or q is None or self.model != q.model:
            return {}
        given = {"ctx": q.ctx, "parallel": q.parallel, "kv_type": q.kv_type}
        return {k: v for k, v in given.items() if v is not None}

    def _show_fits(self, engine: str, model: str) -> None:
        fits = fits_of(self.views, self.fleet, engine, model, self.load_params)
        limit = (MAX_LISTED_COMPACT if self.compact else MAX_LISTED) // 2
        self.query_one("#confirm-fit", Static).update(fit_lines(fits, limit))
        self.fits = {f.node: f for f in fits}

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "confirm-engine":
            self._fill_models()
        self._summarise()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Enter on the engine list moves on to the models; enter on the last list confirms."""
        if event.option_list.id == "confirm-engine" and self.action in TAKES_MODEL:
            self.query_one("#confirm-model", OptionList).focus()
        else:
            self.query_one("#confirm-yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm-yes":
            self.action_confirm()
        else:
            self.action_cancel()

    @property
    def targets(self) -> list[NodeView]:
        """Who gets the action: for unload only the nodes holding what is unloaded."""
        if self.action == "unload" and self.engine is not None:
            return holders(self.views, self.engine, self.model)
        return self.views

    def action_confirm(self) -> None:
        targets = self.targets
        lacking = self.action == "load" and self.model is None
        if (self.action in NEEDS_ENGINE and self.engine is None) or not targets or lacking:
            self.app.bell()
            return
        self.dismiss(
            ActionChoice(
                self.action, [v.name for v in targets], self.engine, self.model, self.load_params
            )
        )

    def action_cancel(self) -> None:
        self.dismiss(None)
