"""NO_COLOR and 16-colour terminals for the dashboard: legible with few colours or none.

Textual answers NO_COLOR by turning every colour into its luminance; a dark colour on the dark
surface (the magenta cost sparkline: grey 59 on grey 39) then vanishes. This filter does the same
conversion and pushes any foreground too close to its background to a readable grey.

On a 16-colour terminal Textual turns named colours into its truecolor idea of them and Rich
maps those back to the nearest of the 16: red came out magenta and yellow red (OFFLINE read
as purple, DEGRADED as red). `sixteen_colors` tells the dashboard to keep them the terminal's
own (Textual's `ansi_color`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping

from rich.color import Color as RichColor
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual import constants
from textual.color import Color
from textual.filter import LineFilter, Monochrome, monochrome_style

MIN_CONTRAST = 96  # grey levels between text and its background (0-255)
LIGHT, DARK = RichColor.from_rgb(200, 200, 200), RichColor.from_rgb(40, 40, 40)


def legible(style: Style, background: Color) -> Style:
    """`style` in greys, its foreground moved away from its background when too close."""
    style = monochrome_style(style)
    if style.color is None or style.color.triplet is None:
        return style
    fg = style.color.triplet.red  # a grey: red == green == blue
    bg_color = style.bgcolor
    bg = bg_color.triplet.red if bg_color and bg_color.triplet else background.monochrome.r
    if abs(fg - bg) >= MIN_CONTRAST:
        return style
    return style + Style(color=LIGHT if bg < 128 else DARK)


class LegibleMonochrome(LineFilter):
    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [
            Segment(text, None if style is None else legible(style, background), None)
            for text, style, _ in segments
        ]


def make_legible(filters: list[LineFilter]) -> list[LineFilter]:
    """The app's filters with Textual's Monochrome (NO_COLOR) replaced by the legible one."""
    return [LegibleMonochrome() if isinstance(f, Monochrome) else f for f in filters]


def sixteen_colors(environ: Mapping[str, str]) -> bool:
    """Whether Textual would write to this terminal in 16 colours (`TERM=xterm`, no COLORTERM):
    Rich's own answer, as Textual asks it (TEXTUAL_COLOR_SYSTEM included)."""
    console = Console(
        color_system=constants.COLOR_SYSTEM,  # type: ignore[arg-type]
        file=io.StringIO(),
        force_terminal=True,
        _environ=dict(environ),
    )
    return console.color_system in ("standard", "windows")
