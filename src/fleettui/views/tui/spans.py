"""Write only the dirty spans of a line to the terminal, not the line up to them.

Textual 8.2.8's partial update (`ChopsUpdate.render_segments`) crops a dirty span on the right
only: a watts cell at column 100 that changed is written together with the 100 cells to its
left (its source says "TODO: crop to x extents"). The fleet table marks only the cells that
changed as dirty, so cropping both ends is what turns "one row per change" into "one cell per
change" on the wire: over SSH that is most of what the dashboard writes (bench/terminal_bytes.py,
docs/performance.md). `install()` replaces that one method; textual is pinned, and
tests/test_tui_bytes.py checks the output byte for byte against a full repaint.
"""

from __future__ import annotations

from rich.console import Console
from rich.control import Control
from textual._compositor import ChopsUpdate


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
            out.append(strip.render(console))
        if y != last_y:
            out.append("\n")
    return "".join(out)


def install() -> None:
    ChopsUpdate.render_segments = render_segments  # type: ignore[method-assign]
