"""NO_COLOR for the dashboard: Textual's greyscale, but never grey text on a grey it cannot be
read on.

Textual answers NO_COLOR by turning every colour into its luminance; a dark colour on the dark
surface (the magenta cost sparkline: grey 59 on grey 39) then vanishes. This filter does the same
conversion and pushes any foreground too close to its background to a readable grey.
"""

from __future__ import annotations

from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style
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
