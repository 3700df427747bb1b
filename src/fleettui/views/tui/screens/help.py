"""The `?` screen: every key, what the columns mean, and the filter grammar."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from fleettui.views.tui.screens.main import ACTION_KEYS
from fleettui.wire import NEEDS_ENGINE, TAKES_MODEL

KEYS = [
    ("↑ ↓  j k", "move"),
    ("pgup pgdn  home G", "page, top, bottom"),
    ("g  →  ←", "one row per GPU: g toggles, → opens, ← folds"),
    ("space", "select / unselect the node"),
    ("a  A", "select all shown, clear selection"),
    ("enter", "node detail (GPUs, engines, models, audit)"),
    ("click", "a row twice: detail; a header: sort"),
    ("/", "filter as you type: llama, state=OFFLINE"),
    ("F", "does a model fit? adds the Fit column, ranked"),
    ("b", "rank by binpack / spread (after F)"),
    ("esc", "clear the filter; close a screen or the bar"),
    ("s  S", "next sort column, reverse the sort"),
    ("e", "show / hide the event log"),
    ("c", "columns and theme, kept across runs"),
    ("p", "pause / resume updates"),
    ("ctrl+p", "every action by name, themes"),
    ("ctrl+s", "save an SVG screenshot here"),
    ("?", "this help"),
    ("q", "back; on the table: quit"),
]


def _acts_on(action: str) -> str:
    """What an action key acts on, said from the wire's vocabulary."""
    if action in TAKES_MODEL:
        return "model"
    return "engine" if action in NEEDS_ENGINE else "caches"


ACTION_HELP = [(key, f"{action} {_acts_on(action)}") for key, action in ACTION_KEYS.items()]
GRAMMAR = [
    ("words", "llama · demo-003 · l8b: name, role, tags, engines, models; letters in order"),
    ("fields", "name role tag state engine model fit   power cost gpu_mem latency"),
    ("operators", "=  !=  >  <  >=  <=  ~ (regex, so a word is a substring)"),
    ("combine", "and  or  not  ( )"),
    ("units", "power 1.5kW · latency 2s · gpu_mem 90 (%) or 40GB · quote 'two words'"),
    ("examples", "state=OFFLINE · power>300 and engine=vllm · not (tag=edge or role~embed)"),
    ("fit", "fit=yes · fit=evict · fit=no · fit=unknown (after F asked for a model)"),
]
COLUMNS = (
    "✓ selected · Engines name·models, ✗ down · GPU used/total memory and utilisation · "
    "Power watts, scope (G GPU · C CPU package · M DRAM · P platform · S SoC · W wall) and "
    "the last ~2 min · Cost 7d total and per day · Audit hash chain "
    "ok / BROKEN / ? · RTT snapshot round trip · Seen last good answer · "
    "Fit (F) fits and the margin, evict N idle models, no and the shortfall, ? cannot tell"
)


def _pairs(rows: list[tuple[str, str]], dim: bool = False) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column()
    for k, v in rows:
        t.add_row(k, Text(v, style="dim") if dim else v)
    return t


def help_text(read_only: bool = False, wide: bool = True) -> RenderableType:
    """Keys and action keys (side by side when `wide`), the filter grammar, the legend."""
    actions_title = "Actions on the selection" + (" (off: --read-only)" if read_only else "")
    keys = Group(Text("Keys", style="bold"), _pairs(KEYS))
    actions = Group(
        Text(actions_title, style="bold"),
        Text("or the cursor row when none is selected", style="dim"),
        _pairs(ACTION_HELP, dim=read_only),
    )
    top = Table.grid(padding=(0, 4))
    top.add_column()
    if wide:
        top.add_column()
        top.add_row(keys, actions)
    else:
        top.add_row(keys)
        top.add_row(Text(""))
        top.add_row(actions)
    return Group(
        top,
        Text(""),
        Text("Filter  ( / here, fleet bulk --filter on the command line )", style="bold"),
        _pairs(GRAMMAR),
        Text(""),
        Text(COLUMNS, style="dim"),
    )


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", show=False),
        Binding("q", "close", show=False),
    ]

    def __init__(self, read_only: bool = False) -> None:
        super().__init__()
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(id="help-text")

    def on_resize(self) -> None:
        wide = self.size.width >= 100
        self.query_one("#help-text", Static).update(help_text(self.read_only, wide))

    def action_close(self) -> None:
        self.dismiss(None)
