"""Fixed-data dashboard scenes: what the snapshot tests compare and `scripts/screenshots` draws.

One list so the committed screenshots are always the screens the tests pin down.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from rich.color import Color as RichColor
from rich.color import ColorSystem
from rich.segment import Segment
from rich.style import Style
from rich.terminal_theme import TerminalTheme
from textual.color import Color
from textual.filter import LineFilter
from textual.pilot import Pilot

from fleettui.testing.sample import SAMPLE_NOW, SampleSource
from fleettui.views.tui.app import FleetApp


def utc_hms(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


class SixteenColors(LineFilter):
    """Every colour as a 16-colour terminal shows it: the one of its 16 that Rich sends there
    (the nearest), in the palette Textual assumes a dark terminal has (a screenshot is always
    truecolor)."""

    def __init__(self, palette: TerminalTheme) -> None:
        super().__init__()
        self.palette = palette

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [Segment(text, self._style(style), control) for text, style, control in segments]

    def _style(self, style: Style | None) -> Style | None:
        if style is None or (style.color is None and style.bgcolor is None):
            return style
        return style + Style(color=self._color(style.color), bgcolor=self._color(style.bgcolor))

    def _color(self, color: RichColor | None) -> RichColor | None:
        number = None if color is None else color.downgrade(ColorSystem.STANDARD).number
        if number is None:  # no colour, or the terminal's default one
            return color
        return RichColor.from_triplet(self.palette.ansi_colors[number])


def sample_app(source: SampleSource | None = None, **kwargs) -> FleetApp:
    """The dashboard over the sample fleet with a frozen clock and no periodic refresh."""
    kwargs.setdefault("clock", lambda: SAMPLE_NOW)
    kwargs.setdefault("fmt_time", utc_hms)
    kwargs.setdefault("tick_s", 3600.0)
    return FleetApp(source or SampleSource(), **kwargs)


@dataclass(frozen=True)
class Scene:
    name: str
    press: tuple[str, ...] = ()
    size: tuple[int, int] = (120, 40)
    app_kwargs: dict = field(default_factory=dict)
    source_kwargs: dict = field(default_factory=dict)
    screenshot: bool = False  # also written to screenshots/ by scripts/screenshots
    colors: str = ""  # "none": as under NO_COLOR; "16": as a 16-colour terminal shows it

    def app(self) -> FleetApp:
        if self.colors != "none":
            app = sample_app(SampleSource(**self.source_kwargs), **self.app_kwargs)
        else:  # the app reads NO_COLOR once, when it is built
            os.environ["NO_COLOR"] = "1"
            try:
                app = sample_app(SampleSource(**self.source_kwargs), **self.app_kwargs)
            finally:
                del os.environ["NO_COLOR"]
        if self.colors == "16":
            app._filters.append(SixteenColors(app.ansi_theme))  # no public way to add a filter
        return app

    async def drive(self, pilot: Pilot) -> None:
        """Press the scene's keys, then wait for one-shot workers (the audit fetch) to finish."""
        await pilot.pause()
        await pilot.press(*self.press)
        oneshot = [w for w in pilot.app.workers if w.group == "audit"]
        if oneshot:  # an empty list would mean "every worker", the endless ones included
            await pilot.app.workers.wait_for_complete(oneshot)
        await pilot.pause()

    async def svg(self) -> str:
        """The scene rendered headless, as the snapshot tests see it."""
        app = self.app()
        async with app.run_test(size=self.size) as pilot:
            await self.drive(pilot)
            return app.export_screenshot(title=f"fleet · {self.name}")


_TYPO = dict(
    config_warnings=[
        "~/.config/fleettui/projects.toml: node[10] 'gpu-d1': tokn_env: unknown key "
        "(did you mean token_env?); skipped",
        "~/.config/fleettui/projects.toml: node[11] 'gpu-d2': url: must start with http:// or "
        "https:// (did you mean 'http://gpu-d2.lan:8899'?); skipped",
    ],
    skipped=2,
)

_ANSI = dict(ansi_color=True)  # what the dashboard command asks for on a 16-colour terminal

# Keys: "down" moves the cursor, "space" selects, "enter" opens the detail screen.
SCENES: tuple[Scene, ...] = (
    Scene("main", ("down", "space", "down", "down", "space"), screenshot=True),
    Scene("main_80x24", ("down", "space"), size=(80, 24)),
    Scene("main_200x50", ("down", "space"), size=(200, 50)),
    # `g` expands a node into its GPUs (gpu-a1, then gpu-b1 further down)
    Scene("gpus", ("g", "down", "down", "down", "down", "down", "g"), screenshot=True),
    Scene("gpus_80x24", ("g", "down"), size=(80, 24)),
    Scene("gpus_200x50", ("g", "down", "down", "down", "down", "down", "g"), size=(200, 50)),
    Scene("detail", ("down", "down", "enter"), screenshot=True),
    Scene("detail_80x24", ("down", "down", "enter"), size=(80, 24)),
    # `/`: the bar above the totals filters as one types (after a pause: "wait:"); a bare
    # word searches names, roles, tags, engines and models, its letters highlighted
    Scene("filter", ("slash", *"llama state=ONLINE", "enter")),
    Scene("filter_typing", ("slash", *"llama", "wait:400"), screenshot=True),
    Scene("filter_error", ("slash", *"powr>300 and", "wait:400", "enter")),
    Scene("filter_80x24", ("slash", *"gpub", "wait:400"), size=(80, 24)),
    Scene("filter_200x50", ("slash", *"embed", "wait:400"), size=(200, 50)),
    Scene("filter_fields", ("slash", *"power>300 and engine=vllm", "enter")),
    Scene("help", ("question_mark",), screenshot=True),
    Scene("help_80x24", ("question_mark",), size=(80, 24)),
    Scene("sorted_events", ("s", "s", "s", "s", "e")),
    Scene("read_only", ("R",), app_kwargs={"read_only": True}),
    Scene("config_warnings", ("e",), source_kwargs=_TYPO),
    Scene("fit", ("F", *"llama3.1:8b ctx=8192", "enter"), screenshot=True),
    Scene("fit_80x24", ("F", *"llama3.1:8b", "enter"), size=(80, 24)),
    Scene("fit_typing", ("F", *"llama3.1:8b ctx=8192")),
    Scene("fit_filter", ("F", *"llama3.1:8b", "enter", "slash", *"fit=yes", "enter")),
    Scene(
        "fit_detail",
        ("F", *"llama3.1:8b ctx=32768", "enter", "slash", *"name=embed-1", "enter", "enter"),
        screenshot=True,
    ),
    Scene("confirm_restart", ("space", "down", "space", "down", "space", "R"), screenshot=True),
    Scene("confirm_unload_80x24", ("down", "space", "U", "down"), size=(80, 24)),
    Scene("confirm_load", ("space", "down", "space", "L", "down"), screenshot=True),
    # `c`: the column picker, Role hidden and the cursor moved to Why (no file: prefs=None)
    Scene("columns", ("c", "down", "down", "space", "down", "down", "down"), screenshot=True),
    Scene("columns_80x24", ("c", "down", "down", "space", "down", "down", "down"), size=(80, 24)),
    Scene("columns_200x50", ("c", "down", "down", "space"), size=(200, 50)),
    Scene("columns_applied", ("c", "down", "down", "space", "down", "down", "down", "]", "enter")),
    # sparklines and every other colour, legible without colour and with 16 (issue 19)
    Scene("nocolor", ("down", "space", "down"), colors="none"),
    Scene("colors16", ("down", "space", "down"), colors="16", app_kwargs=_ANSI),
    Scene("nocolor_80x24", ("g", "down"), size=(80, 24), colors="none"),
    Scene("nocolor_200x50", ("g", "down"), size=(200, 50), colors="none"),
    Scene("colors16_80x24", ("g", "down"), size=(80, 24), colors="16", app_kwargs=_ANSI),
    Scene("colors16_200x50", ("g", "down"), size=(200, 50), colors="16", app_kwargs=_ANSI),
    Scene("colors16_detail", ("down", "down", "enter"), colors="16", app_kwargs=_ANSI),
    # navigation: p pauses (the bar says so, with the row position); the footer at 80x24
    # keeps ? and q, and read-only lists no action key
    Scene("paused_80x24", ("down", "down", "p"), size=(80, 24)),
    Scene("read_only_80x24", ("down",), size=(80, 24), app_kwargs={"read_only": True}),
    Scene("detail_offline", ("down",) * 6 + ("enter",)),
)
BY_NAME = {s.name: s for s in SCENES}
