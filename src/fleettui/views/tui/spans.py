"""Write only the dirty spans of a line to the terminal, and each style change only once.

Textual 8.2.8's partial update (`ChopsUpdate.render_segments`) crops a dirty span on the right
only: a watts cell at column 100 that changed is written together with the 100 cells to its
left (its source says "TODO: crop to x extents"). The fleet table marks only the cells that
changed as dirty, so cropping both ends is what turns "one row per change" into "one cell per
change" on the wire: over SSH that is most of what the dashboard writes (bench/terminal_bytes.py,
docs/performance.md).

Textual then writes each segment as its full SGR sequence, its text and a reset: a cell of
six characters cost 44 bytes in truecolor, and a row of cells in the same colours said those
colours again for every cell and every pad. `render_strip` writes what changed from one
segment to the next instead (nothing for the same look; the new colour alone when only it
changed; a reset only when an attribute goes off) and one reset at the end of the span.

`install()` replaces that one method; textual is pinned, and tests/test_tui_bytes.py checks
the output against Textual's own, cell by cell in a terminal emulator. `LineStatic` is a
one-line Static that marks only its changed cells dirty, as the table does (the totals line's
watts move four times a second; the rest of it does not).
"""

from __future__ import annotations

from functools import lru_cache

from rich.cells import cell_len
from rich.color import ColorSystem
from rich.console import Console
from rich.control import Control
from rich.style import Style
from rich.text import Text
from textual._compositor import ChopsUpdate
from textual.geometry import Region
from textual.strip import SGR_STYLES, Strip
from textual.visual import VisualType
from textual.widget import Widget
from textual.widgets import Static

Look = tuple[int, str, str]  # attribute bits that are on, foreground codes, background codes
PLAIN: Look = (0, "", "")


@lru_cache(maxsize=4096)
def _look(style: Style | None, system: ColorSystem) -> Look:
    """What a style shows, as SGR parts (meta and links aside: they draw nothing)."""
    if style is None:
        return PLAIN
    fg = "" if style._color is None else ";".join(style._color.downgrade(system).get_ansi_codes())
    bg = style._bgcolor
    back = "" if bg is None else ";".join(bg.downgrade(system).get_ansi_codes(False))
    return style._attributes & style._set_attributes, fg, back


def _codes(attributes: int) -> list[str]:
    return [SGR_STYLES[bit] for bit in range(attributes.bit_length()) if attributes >> bit & 1]


def _change(was: Look, now: Look) -> str:
    """The SGR sequence that turns look `was` into `now` ("" when they are the same)."""
    if was == now:
        return ""
    if was[0] & ~now[0] or (was[1] and not now[1]) or (was[2] and not now[2]):
        # something goes off: start from the terminal's defaults
        sgr = ["0", *_codes(now[0]), *filter(None, now[1:])]
    else:
        sgr = _codes(now[0] & ~was[0])
        sgr += [part for old, part in zip(was[1:], now[1:], strict=True) if part != old]
    return f"\x1b[{';'.join(sgr)}m"


def render_strip(strip: Strip, console: Console) -> str:
    """The strip as terminal output that leaves the same cells as `Strip.render`, with each
    change of look said once; the terminal is back at its defaults after it."""
    segments = list(strip)
    if any(style is not None and style._link for _, style, _ in segments):
        return strip.render(console)  # hyperlinks: Textual's own way (the table has none)
    system = console._color_system or ColorSystem.TRUECOLOR
    out: list[str] = []
    look = PLAIN
    for text, style, _ in segments:
        now = _look(style, system)
        out.append(_change(look, now))
        out.append(text)
        look = now
    if look != PLAIN:
        out.append("\x1b[0m")
    return "".join(out)


def render_segments(self: ChopsUpdate, console: Console) -> str:
    """The update as terminal output: each dirty span's cells, nothing left or right of it."""
    out: list[str] = []
    move_to = Control.move_to
    last_y = self.spans[-1][0]
    for y, x1, x2 in self.spans:
        for end, (x, strip) in zip(self.chop_ends[y], self.chops[y].items(), strict=False):
            if strip is None or x >= x2 or end <= x1:
                continue
            left, right = max(x, x1), min(end, x2)
            if left > x or right < end:
                strip = strip.crop(left - x, right - x)
            out.append(move_to(left, y).segment.text)
            out.append(render_strip(strip, console))
        if y != last_y:
            out.append("\n")
    return "".join(out)


Cell = tuple[str, object]  # a character (or "" right of a wide one) and its style


def _cells(content: Text, console: Console) -> list[Cell]:
    out: list[Cell] = []
    for text, style, _ in content.render(console):
        for ch in text:
            out.append((ch, style))
            if cell_len(ch) == 2:
                out.append(("", style))
    return out


def changed(old: list[Cell], new: list[Cell]) -> tuple[int, int] | None:
    """The first and one past the last cell that differ (a shorter line's tail counts)."""
    n = max(len(old), len(new))
    start = next((i for i in range(n) if i >= len(old) or i >= len(new) or old[i] != new[i]), n)
    if start == n:
        return None
    end = n
    while end > start and end <= min(len(old), len(new)) and old[end - 1] == new[end - 1]:
        end -= 1
    return start, end


class LineStatic(Static):
    """A one-line Static whose `update` with a Text repaints only the cells that changed."""

    _drawn: list[Cell] | None = None
    _only: Region | None = None

    def update(self, content: VisualType = "", *, layout: bool = True) -> None:
        cells = _cells(content, self.app.console) if isinstance(content, Text) else None
        old, self._drawn = self._drawn, cells
        if old is not None and cells is not None and not layout:
            span = changed(old, cells)
            if span is None:
                return
            self._only = Region(span[0], 0, span[1] - span[0], 1)
        try:
            super().update(content, layout=layout)
        finally:
            self._only = None

    def refresh(self, *regions: Region, **kwargs) -> Widget:
        if self._only is not None and not regions:
            regions = (self._only,)
        return super().refresh(*regions, **kwargs)


def install() -> None:
    ChopsUpdate.render_segments = render_segments  # type: ignore[method-assign]
