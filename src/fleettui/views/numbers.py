"""How every view writes a number: one rule per unit, so the table, the totals line, the detail
screen and the Rich view never disagree ("€6224" beside "127,057 W" was two rules).

The rules: thousands separators from 1,000 on; a space before a unit word (`263 W`,
`12 ms`, `1.2 kWh`), none before a suffix letter of a size (`43G`, `512M`: GiB and MiB, the
columns are narrow) or a percent; a figure too small to show is `<1 ms`, never `0ms`; an
unknown one is a dash. Only Python and Rich: no view framework.
"""

from __future__ import annotations

DASH = "—"
MINUS = "\u2212"  # a real minus sign (U+2212): a negative margin, not a dash
TIMES = "\N{MULTIPLICATION SIGN}"  # count and model: 2xH100
TO = "\N{EN DASH}"  # a range: a sparkline's scale, 0 to 2 kW
CURRENCY = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}


def fmt_watts(w: float | None) -> str:
    """`263 W`, `1,263 W`, `12.3 kW`, `127 kW`."""
    return DASH if w is None else _two_units(w, 9999.5, " W", 1000, " kW")


def fmt_money(x: float | None, currency: str = "EUR") -> str:
    """`€4.20`, `€42.5`, `€6,224`: cents only while they matter."""
    if x is None:
        return DASH
    sym = CURRENCY.get(currency, "")
    if x < 9.995:
        return f"{sym}{x:.2f}"
    if x < 99.95:
        return f"{sym}{x:.1f}"
    return f"{sym}{x:,.0f}"


def _round_figure(x: float) -> str:
    """A scale's round figure without trailing zeros: `2`, `1.5`, `0.15`, `1,500`."""
    return f"{x:,.0f}" if x >= 10 else f"{x:.3g}"


def fmt_watts_scale(top: float) -> str:
    """A sparkline's scale in watts, from zero, with an en dash: 0 to `800 W`, `2 kW`, `1.5 kW`."""
    return f"0{TO}{_round_figure(top)} W" if top < 1000 else f"0{TO}{_round_figure(top / 1000)} kW"


def fmt_money_scale(top: float, currency: str = "EUR") -> str:
    """A sparkline's scale in money, from zero, with an en dash: 0 to `€40`, `€1.5`."""
    return f"0{TO}{CURRENCY.get(currency, '')}{_round_figure(top)}"


def fmt_latency(ms: float | None) -> str:
    """`<1 ms`, `12 ms`, `1.2 s`, `14 s`."""
    if ms is None:
        return DASH
    if ms < 0.5:
        return "<1 ms"
    if ms < 999.5:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s" if ms < 9950 else f"{ms / 1000:,.0f} s"


def fmt_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400:,}d"


def fmt_age(seconds: float | None) -> str:
    return "never" if seconds is None else fmt_duration(seconds) + " ago"


def fmt_mb(mb: float | None) -> str:
    """MiB from the wire: `512M`, `12.3G` (GiB), `1,024G`."""
    return DASH if mb is None else _two_units(mb, 1023.5, "M", 1024, "G")


def _two_units(x: float, limit: float, small: str, per: float, big: str) -> str:
    """Whole `small` units below `limit`, else `big` ones: one decimal under 100, then whole."""
    if x < limit:
        return f"{x:,.0f}{small}"
    y = x / per
    return f"{y:.1f}{big}" if y < 99.95 else f"{y:,.0f}{big}"


def fmt_mb_pair(used: float | None, total: float | None) -> str:
    """`43/80G`: two sizes in the larger one's unit, without decimals."""
    if used is None or total is None:
        return DASH
    if total < 1023.5:
        return f"{used:.0f}/{total:.0f}M"
    return f"{used / 1024:,.0f}/{total / 1024:,.0f}G"


def fmt_bytes(n: int | None, signed: bool = False) -> str:
    """GiB with one decimal (none from 100 GiB, MiB under one), with a sign when `signed`;
    a dash when unknown. The estimator counts bytes; the wire's MiB go through fmt_mb."""
    if n is None:
        return DASH
    sign = ("+" if n >= 0 else MINUS) if signed else (MINUS if n < 0 else "")
    gib = abs(n) / 1024**3
    if gib >= 99.95:
        return f"{sign}{gib:,.0f}G"
    return f"{sign}{gib:.1f}G" if gib >= 1 else f"{sign}{gib * 1024:.0f}M"


def fmt_energy(j: float) -> str:
    """`12.3 Wh`, `1.25 kWh`, `1,234.50 kWh`."""
    wh = j / 3600.0
    return f"{wh:,.1f} Wh" if wh < 999.95 else f"{wh / 1000:,.2f} kWh"


def fmt_pct(p: float | None) -> str:
    return DASH if p is None else f"{p:.0f}%"


def fmt_temp(c: float | None) -> str:
    return DASH if c is None else f"{c:.0f}°C"


def fmt_count(n: int) -> str:
    return f"{n:,}"
