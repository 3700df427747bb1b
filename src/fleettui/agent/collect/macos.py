"""Apple Silicon facts without root: the GPU from the IORegistry, memory pressure, swap and the
GPU working-set limit from sysctl, thermal pressure from pmset, Metal's recommended working set.

Every source is an argv (never a shell) run with a timeout by an injectable runner, from the
agent's worker thread (never the event loop). Each parser turns one output into figures or
raises `MacParseError` with a sentence; the collector turns that, a missing tool or a timeout
into a `problems` line, so a Mac whose ioreg prints something new still shows everything else.
"""

from __future__ import annotations

import plistlib
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleettui.agent.collect.bounds import bounded, measured
from fleettui.wire import MAX_GPUS, Cpu, Gpu, Memory, PressureLevel

MB = 1024 * 1024
MAX_OUTPUT = 4 * MB  # an IOAccelerator plist is a few KiB; anything larger is not one
TIMEOUT_S = 3.0

IOREG = ("ioreg", "-r", "-d", "1", "-c", "IOAccelerator", "-a")
PRESSURE = ("sysctl", "-n", "kern.memorystatus_vm_pressure_level")
SWAP = ("sysctl", "vm.swapusage")
WIRED_LIMIT = ("sysctl", "-n", "iogpu.wired_limit_mb")
THERM = ("pmset", "-g", "therm")

# argv, timeout -> stdout; raises OSError, subprocess.SubprocessError on failure
Runner = Callable[[Sequence[str], float], bytes]


class MacParseError(ValueError):
    """An output that is not what the tool prints; the message says what is wrong."""


def run_argv(argv: Sequence[str], timeout_s: float) -> bytes:
    """The default runner: no shell, no stdin, stdout only, bounded in time and size."""
    done = subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=True
    )
    return done.stdout[:MAX_OUTPUT]


@dataclass(frozen=True)
class AppleGpu:
    """One IOAccelerator entry's PerformanceStatistics."""

    name: str
    util_pct: Any  # as read; the wire's bounds decide (bounds.measured)
    in_use_bytes: Any


def _figure(value: Any) -> Any:
    """A figure as read, for the wire's bounds to judge; a bool (plist <true/>) is no number."""
    return str(value) if isinstance(value, bool) else value


def _mib(value: Any) -> Any:
    """Bytes as MiB; anything else as is (then the bounds name it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return round(value / MB, 1)
        except OverflowError:  # an integer past float range
            return value
    return value


def parse_ioreg(data: bytes) -> list[AppleGpu]:
    """`ioreg -r -d 1 -c IOAccelerator -a`: a plist array of registry entries. Entries without
    PerformanceStatistics (a display controller) are skipped; none at all is an error."""
    if len(data) > MAX_OUTPUT:
        raise MacParseError("ioreg: output too large to be an IOAccelerator list")
    try:
        entries = plistlib.loads(data)
    except Exception as exc:  # plistlib raises many kinds on broken input (expat, struct...)
        raise MacParseError(f"ioreg: not a plist ({type(exc).__name__})") from None
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise MacParseError("ioreg: not a list of registry entries")
    out = []
    for e in entries:
        stats = e.get("PerformanceStatistics") if isinstance(e, dict) else None
        if not isinstance(stats, dict):
            continue
        model = e.get("model")
        klass = e.get("IOClass") or e.get("IOObjectClass") or e.get("IORegistryEntryName")
        if isinstance(model, str) and model:
            name = f"{model} GPU"
        elif isinstance(klass, str) and klass.startswith("AGX"):
            name = "Apple GPU"
        else:
            name = klass if isinstance(klass, str) and klass else "GPU"
        out.append(
            AppleGpu(
                name=name,
                util_pct=_figure(stats.get("Device Utilization %")),
                in_use_bytes=_figure(stats.get("In use system memory")),
            )
        )
    if not out:
        raise MacParseError("ioreg: no IOAccelerator with PerformanceStatistics")
    return out


def _text(data: bytes, what: str) -> str:
    text = data.decode("utf-8", "replace").strip()
    if not text:
        raise MacParseError(f"{what}: empty output")
    return text


def parse_sysctl_int(data: bytes, name: str) -> int:
    """`NAME: 12` (sysctl NAME) or `12` (sysctl -n NAME)."""
    text = _text(data, name)
    m = re.fullmatch(rf"(?:{re.escape(name)}\s*:\s*)?(\d{{1,18}})", text)
    if m is None:
        raise MacParseError(f"{name}: not an integer: {text[:60]!r}")
    return int(m.group(1))


PRESSURE_LEVELS: dict[int, PressureLevel] = {1: "normal", 2: "warn", 4: "critical"}


def parse_pressure(data: bytes) -> PressureLevel:
    name = "kern.memorystatus_vm_pressure_level"
    level = parse_sysctl_int(data, name)
    if level not in PRESSURE_LEVELS:
        raise MacParseError(f"{name}: unknown level {level} (1 normal, 2 warn, 4 critical)")
    return PRESSURE_LEVELS[level]


_UNITS = {"B": 1 / MB, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}
_SWAP_RE = re.compile(
    r"total\s*=\s*(\d{1,15}(?:\.\d+)?)([BKMGT])\s+used\s*=\s*(\d{1,15}(?:\.\d+)?)([BKMGT])"
)


def parse_swap(data: bytes) -> tuple[float, float]:
    """`vm.swapusage: total = 1024.00M  used = 407.50M  free = 616.50M  (encrypted)` ->
    (used MiB, total MiB)."""
    text = _text(data, "vm.swapusage")
    m = _SWAP_RE.search(text)
    if m is None:
        raise MacParseError(f"vm.swapusage: no total/used figures: {text[:60]!r}")
    total = float(m.group(1)) * _UNITS[m.group(2)]
    used = float(m.group(3)) * _UNITS[m.group(4)]
    return round(used, 1), round(total, 1)


_SPEED_RE = re.compile(r"CPU_Speed_Limit\s*=\s*(\d{1,3})\b")
_LEVEL_RE = re.compile(r"(thermal|performance) warning level\D{0,16}(\d{1,3})", re.IGNORECASE)


def parse_therm(data: bytes) -> str:
    """`pmset -g therm`: 'nominal' when macOS recorded no warning and no CPU speed limit below
    100 %; else what it recorded. Output with neither is not read as healthy."""
    text = _text(data, "pmset -g therm")
    found = []
    for kind, level in _LEVEL_RE.findall(text):
        if int(level) > 0:
            found.append(f"{kind.lower()} warning level {int(level)}")
    speeds = [int(s) for s in _SPEED_RE.findall(text)]
    if speeds and speeds[-1] < 100:
        found.append(f"CPU speed limit {speeds[-1]}%")
    if found:
        return ", ".join(found)
    if speeds or "no thermal warning level has been recorded" in text.lower():
        return "nominal"
    raise MacParseError(f"pmset -g therm: no thermal state in {text[:60]!r}")


def _load_metal() -> Any | None:
    try:
        import Metal  # type: ignore[import-not-found]  # pyobjc-framework-Metal, macOS only
    except ImportError:
        return None
    return Metal


def metal_working_set(metal: Any) -> tuple[float | None, str | None]:
    """Metal's recommendedMaxWorkingSetSize in MiB (what the OS lets the GPU keep resident by
    default; mlx_lm wires up to it), and why not where it cannot be read."""
    try:
        device = metal.MTLCreateSystemDefaultDevice()
        size = device.recommendedMaxWorkingSetSize() if device is not None else None
    except Exception as exc:  # a pyobjc bridge error is this figure's problem only
        return None, f"metal: recommendedMaxWorkingSetSize unreadable: {exc}"
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        return None, f"metal: recommendedMaxWorkingSetSize {size!r} is not a size"
    return round(size / MB, 1), None


@dataclass
class MacFacts:
    gpus: list[Gpu] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)  # Memory fields to update
    cpu: dict[str, Any] = field(default_factory=dict)  # Cpu fields to update
    wired_limit_mb: int | None = None  # 0: the OS default
    working_set_mb: float | None = None  # Metal's recommendedMaxWorkingSetSize

    @property
    def gpu_limit_mb(self) -> float | None:
        """The GPU working-set limit in force: the sysctl when an administrator set one, else
        Metal's default."""
        if self.wired_limit_mb:
            return float(self.wired_limit_mb)
        return self.working_set_mb


class MacCollector:
    """Reads the macOS sources once per tick (blocking: call it from a worker thread)."""

    def __init__(
        self,
        run: Runner = run_argv,
        metal: Any | None = None,
        *,
        timeout_s: float = TIMEOUT_S,
        load_metal: bool = True,
    ) -> None:
        self._run = run
        self.timeout_s = timeout_s
        self.working_set_mb: float | None = None
        self.metal_problem: str | None = None
        metal = metal if metal is not None else (_load_metal() if load_metal else None)
        if metal is not None:  # a fixed figure per boot: read once
            self.working_set_mb, self.metal_problem = metal_working_set(metal)

    def _out(self, argv: Sequence[str], problems: list[str]) -> bytes | None:
        what = " ".join(argv)
        try:
            return self._run(argv, self.timeout_s)
        except subprocess.TimeoutExpired:
            problems.append(f"macos: {what}: no answer within {self.timeout_s:g} s")
        except subprocess.CalledProcessError as exc:
            problems.append(f"macos: {what}: exited with status {exc.returncode}")
        except OSError as exc:
            problems.append(f"macos: {what}: cannot run: {exc.strerror or exc}")
        return None

    def _parsed(
        self, argv: Sequence[str], parse: Callable[[bytes], Any], problems: list[str]
    ) -> Any:
        data = self._out(argv, problems)
        if data is None:
            return None
        try:
            return parse(data)
        except MacParseError as exc:
            problems.append(f"macos: {exc}")
            return None

    def collect(self, problems: list[str]) -> MacFacts:
        facts = MacFacts(working_set_mb=self.working_set_mb)
        if self.metal_problem:
            problems.append(self.metal_problem)
        limit = self._parsed(WIRED_LIMIT, lambda d: parse_sysctl_int(d, WIRED_LIMIT[-1]), problems)
        facts.wired_limit_mb = bounded(Memory, "total_mb", limit, "macos: wired limit", problems)
        gpus = self._parsed(IOREG, parse_ioreg, problems) or []
        if len(gpus) > MAX_GPUS:  # the wire holds no more; a real Mac has one
            problems.append(
                f"macos: ioreg lists {len(gpus)} accelerators; the first {MAX_GPUS} kept"
            )
            gpus = gpus[:MAX_GPUS]
        for i, g in enumerate(gpus):
            where = f"macos: {g.name}"
            facts.gpus.append(
                Gpu(
                    index=i,
                    name=bounded(Gpu, "name", g.name, where, problems) or "Apple GPU",
                    **measured(
                        Gpu,
                        where,
                        problems,
                        util_pct=g.util_pct,
                        memory_used_mb=_mib(g.in_use_bytes),
                        memory_total_mb=facts.gpu_limit_mb,
                    ),
                )
            )
        level = self._parsed(PRESSURE, parse_pressure, problems)
        swap = self._parsed(SWAP, parse_swap, problems)
        used, total = swap if swap is not None else (None, None)
        facts.memory = measured(
            Memory,
            "macos",
            problems,
            pressure_level=level,
            swap_used_mb=used,
            swap_total_mb=total,
        )
        facts.cpu = measured(
            Cpu, "macos", problems, thermal=self._parsed(THERM, parse_therm, problems)
        )
        return facts
