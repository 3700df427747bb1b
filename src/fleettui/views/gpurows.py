"""One line per GPU under its node, as nvitop draws them: index, model, utilisation, memory,
temperature, power against its limit and the engine processes holding memory on it.

Rich only (the Textual table draws these lines under an expanded node); the figures are
written by fleettui.views.numbers like every other cell.
"""

from __future__ import annotations

from rich.text import Text

from fleettui.views.numbers import DASH, fmt_mb, fmt_mb_pair, fmt_pct, fmt_temp, fmt_watts
from fleettui.wire import Gpu

INDENT = 4  # under the node's name, past the selection mark
NAME_W = 22


def _level(value: float | None, warn: float, bad: float) -> str:
    return "" if value is None or value < warn else "yellow" if value < bad else "bold red"


def processes_text(g: Gpu) -> str:
    """`ollama 4.9G · pid 4321 384M`: who holds memory on the GPU, engine where known."""
    return " · ".join(f"{p.engine or f'pid {p.pid}'} {fmt_mb(p.used_mb)}" for p in g.processes)


def gpu_line(g: Gpu, width: int, last: bool, dim: bool = False) -> Text:
    """`    └ #1 NVIDIA H100 80GB HBM3     97%  43/80G   78°C  640 W/700 W  vllm 40.1G`."""
    out = Text(" " * INDENT)
    out.append("└ " if last else "├ ", style="dim")
    out.append(f"#{g.index:<2}", style="dim")
    name = Text(g.name)
    name.truncate(NAME_W, overflow="ellipsis", pad=True)
    out.append_text(name)
    out.append(f"{fmt_pct(g.util_pct):>5}")
    mem_pct = (
        100 * g.memory_used_mb / g.memory_total_mb
        if g.memory_used_mb is not None and g.memory_total_mb
        else None
    )
    out.append(
        f"  {fmt_mb_pair(g.memory_used_mb, g.memory_total_mb):<10}", style=_level(mem_pct, 85, 95)
    )
    out.append(f"{fmt_temp(g.temp_c):>6}", style=_level(g.temp_c, 80, 90))
    power_pct = 100 * g.power_w / g.power_limit_w if g.power_w and g.power_limit_w else None
    limit = f"/{fmt_watts(g.power_limit_w)}" if g.power_limit_w is not None else ""
    out.append(f"  {fmt_watts(g.power_w) + limit:<13}", style=_level(power_pct, 90, 100))
    procs = processes_text(g)
    out.append("  ")
    out.append(procs or DASH, style="" if procs else "dim")
    if dim:
        out.stylize("dim")
    out.truncate(width, overflow="ellipsis")
    return out
