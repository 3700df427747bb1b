"""Energy accuracy: known power curves through the agent's meter, counter vs sampled power.

    .venv/bin/python bench/energy.py [--hours 1] [--step 2]

Each curve is read every `--step` seconds for `--hours` of simulated time, once as a GPU with
NVML's total-energy counter (`nvml-energy`) and once as one without (`nvml-power`: its power
samples integrated). Prints each one's error against the curve's exact energy. No hardware,
no wall time to speak of: the curves are evaluated in simulated time.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from fleettui.agent.collect.energy import EnergyMeter, Reading

Curve = tuple[str, Callable[[float], float], Callable[[float], float]]


def square(lo: float, hi: float, period: float) -> Curve:
    half = period / 2

    def energy(t: float) -> float:
        n, r = divmod(t, period)
        return n * (lo + hi) * half + lo * min(r, half) + hi * max(0.0, r - half)

    return (
        f"square {lo:g}<->{hi:g} W, {period:g} s",
        lambda t: lo if t % period < half else hi,
        energy,
    )


def sine(mean: float, amp: float, period: float) -> Curve:
    w = 2 * math.pi / period
    return (
        f"sine {mean:g}±{amp:g} W, {period:g} s",
        lambda t: mean + amp * math.sin(w * t),
        lambda t: mean * t + amp * (1 - math.cos(w * t)) / w,
    )


def run(curve: Curve, seconds: float, step: float, counter: bool) -> float:
    _, power, energy = curve
    meter = EnergyMeter(sample_s=step, started=0.0)
    for i in range(round(seconds / step) + 1):
        t = i * step
        r = Reading(
            "gpu0",
            "gpu",
            "nvml-energy" if counter else "nvml-power",
            "gpu0",
            watts=power(t),
            counter_j=round(energy(t) * 1000) / 1000 if counter else None,  # mJ, as NVML
        )
        meter.update(t, [r])
    return meter.node_j / energy(seconds) - 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--step", type=float, default=2.0)
    args = ap.parse_args()
    seconds = args.hours * 3600
    curves = [square(100, 400, p) for p in (2, 3, 7, 61)] + [sine(300, 200, 600)]
    print(f"{args.hours:g} h read every {args.step:g} s; error against the exact energy")
    print(f"{'curve':<32} {'nvml-energy':>12} {'nvml-power':>12}")
    for c in curves:
        exact = run(c, seconds, args.step, True)
        sampled = run(c, seconds, args.step, False)
        print(f"{c[0]:<32} {100 * exact:>+11.3f}% {100 * sampled:>+11.2f}%")


if __name__ == "__main__":
    main()
