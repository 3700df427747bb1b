"""The one place numbers are written (views/numbers.py): separators, units, precision."""

from __future__ import annotations

from fleettui.views.numbers import (
    fmt_age,
    fmt_bytes,
    fmt_energy,
    fmt_latency,
    fmt_mb,
    fmt_mb_pair,
    fmt_money,
    fmt_watts,
)


def test_watts_have_separators_and_a_unit() -> None:
    assert fmt_watts(None) == "—" and fmt_watts(412.4) == "412 W"
    assert fmt_watts(6224) == "6,224 W" and fmt_watts(12500) == "12.5 kW"
    assert fmt_watts(127_057) == "127 kW" and fmt_watts(1_234_567) == "1,235 kW"


def test_money_has_separators_and_cents_only_while_they_matter() -> None:
    assert fmt_money(9.871) == "€9.87" and fmt_money(41.23) == "€41.2"
    assert fmt_money(262.4, "USD") == "$262" and fmt_money(6224) == "€6,224"
    assert fmt_money(127_057, "CHF") == "127,057" and fmt_money(None) == "—"


def test_latency_never_says_zero() -> None:
    assert fmt_latency(0.0) == "<1 ms" and fmt_latency(0.4) == "<1 ms"
    assert fmt_latency(12.4) == "12 ms" and fmt_latency(1240) == "1.2 s"
    assert fmt_latency(None) == "—" and fmt_latency(12_345_000) == "12,345 s"


def test_sizes_ages_and_energy() -> None:
    assert fmt_mb(512) == "512M" and fmt_mb(12_595) == "12.3G" and fmt_mb(1_048_576) == "1,024G"
    assert fmt_mb_pair(44_032, 81_920) == "43/80G" and fmt_mb_pair(None, 1) == "—"
    assert fmt_bytes(-(4 * 1024**3), signed=True) == "\u22124.0G"
    assert fmt_age(None) == "never" and fmt_age(3.9) == "3s ago" and fmt_age(184) == "3m ago"
    assert fmt_age(7200) == "2h ago" and fmt_age(-5) == "0s ago"
    assert fmt_energy(3600 * 12.3) == "12.3 Wh" and fmt_energy(3600 * 1_234_500) == "1,234.50 kWh"
