"""What this operator measured after each load: the estimate next to the model's observed
residency, per (engine, model, quantisation, ctx, parallel), and the correction it implies.

The estimator stays pure (`fleettui.capacity`): it takes the correction as an argument. This
module owns the history: one JSON file in the XDG state dir beside the audit pins, replaced
whole (fsutil.atomic_write) under a lock, bounded (the last KEEP observations per key, at most
MAX_KEYS keys, a read cap), and a file that does not parse is one warning and an empty history,
never a crash. Once a key has MIN_OBSERVATIONS, its correction is the median of observed /
estimated (docs/capacity.md, "Calibration", says why the median of the ratio).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import platformdirs

from fleettui.capacity.estimate import CALIBRATION_RANGE, MIB, Calibration
from fleettui.capacity.fit import FitRequest, check_fit, find_meta, held_bytes, same_model
from fleettui.fsutil import atomic_write, open_nofollow
from fleettui.textsafe import clean
from fleettui.wire import ActionRequest, ModelMeta, NodeSnapshot

FORMAT = 1
KEEP = 10  # observations per key: recent enough to follow an engine upgrade
MAX_KEYS = 200  # the least recently observed key goes first
MIN_OBSERVATIONS = 3  # fewer is an anecdote: one odd snapshot must not move the estimate
MAX_FILE = 1 << 20  # a bigger file is not ours
MAX_TEXT = 200  # a key's text fields (engine and model names, quantisation)
SETTLED = 0.02  # two snapshots this close agree on what a model holds


@dataclass(frozen=True)
class Key:
    """What a correction is kept for. ctx/parallel as the load asked (None: the engine's
    default), so the question asked later names the same key."""

    engine: str
    model: str
    quant: str | None
    ctx: int | None
    parallel: int | None

    def text(self) -> str:
        """The file's key: every field, `-` for a default."""
        parts = (self.engine, self.model, self.quant, self.ctx, self.parallel)
        return "|".join("-" if p is None else str(p) for p in parts)

    def describe(self) -> str:
        return (
            f"{self.engine} {self.model} {self.quant or '?'} ctx {self.ctx or 'default'} "
            f"x {self.parallel or 'default'}"
        )


def key_for(
    engine: str, model: str, quant: str | None, ctx: int | None, parallel: int | None
) -> Key:
    """Ollama's `x` and `x:latest` are one model: one key."""
    return Key(engine, model.removesuffix(":latest"), quant, ctx, parallel)


@dataclass(frozen=True)
class Observation:
    ts: float
    node: str
    estimated_bytes: int
    observed_bytes: int

    @property
    def ratio(self) -> float:
        return self.observed_bytes / self.estimated_bytes


def correction(history: list[Observation]) -> Calibration | None:
    """The median of observed / estimated once there are MIN_OBSERVATIONS, else None."""
    if len(history) < MIN_OBSERVATIONS:
        return None
    return Calibration(statistics.median(o.ratio for o in history), len(history))


def observed_bytes(snap: NodeSnapshot, engine: str, model: str) -> int | None:
    """What the model holds of the node's budget in this snapshot (its VRAM on a GPU node, its
    whole resident size elsewhere: what the estimate's total counts), or None if absent."""
    if snap.budget is None:
        return None
    for e in snap.engines:
        if e.name != engine:
            continue
        for m in e.models:
            if same_model(m.name, model):
                held = held_bytes(m, snap.budget.kind)
                return held if held > 0 else None
    return None


class CalibrationFileError(ValueError):
    """The file is there but is not a calibration history."""


def _int(v: Any, what: str, low: int = 0, high: int = 1 << 50) -> int:
    if type(v) is not int or not low <= v <= high:
        raise CalibrationFileError(f"{what}: not a whole number from {low} to {high}")
    return v


def _text(v: Any, what: str) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= MAX_TEXT:
        raise CalibrationFileError(f"{what}: not a short string")
    return clean(v)


def _parse(raw: bytes) -> dict[str, tuple[Key, list[Observation]]]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise CalibrationFileError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CalibrationFileError(f"not a format-{FORMAT} calibration file")
    entries = doc.get("keys")
    if not isinstance(entries, list) or len(entries) > MAX_KEYS:
        raise CalibrationFileError(f"keys: not a list of at most {MAX_KEYS}")
    out: dict[str, tuple[Key, list[Observation]]] = {}
    for i, e in enumerate(entries):
        where = f"keys[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("observations"), list):
            raise CalibrationFileError(f"{where}: not a key with observations")
        ctx, par = e.get("ctx"), e.get("parallel")
        key = Key(
            _text(e.get("engine"), f"{where}.engine"),
            _text(e.get("model"), f"{where}.model"),
            None if e.get("quant") is None else _text(e.get("quant"), f"{where}.quant"),
            None if ctx is None else _int(ctx, f"{where}.ctx", 1),
            None if par is None else _int(par, f"{where}.parallel", 1),
        )
        obs = []
        for j, o in enumerate(e["observations"][-KEEP:]):
            at = f"{where}.observations[{j}]"
            if not isinstance(o, dict):
                raise CalibrationFileError(f"{at}: not an object")
            ts = o.get("ts")
            if type(ts) not in (int, float) or not math.isfinite(ts) or ts < 0:
                raise CalibrationFileError(f"{at}.ts: not a time")
            obs.append(
                Observation(
                    float(ts),
                    _text(o.get("node"), f"{at}.node"),
                    _int(o.get("estimated_bytes"), f"{at}.estimated_bytes", 1),
                    _int(o.get("observed_bytes"), f"{at}.observed_bytes", 1),
                )
            )
        out[key.text()] = (key, obs)
    return out


class CalibrationStore:
    """The history file. Blocking file I/O: the aggregator calls it from a worker thread;
    what it holds in memory (`history`, `correction`) is safe to read from the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: dict[str, tuple[Key, list[Observation]]] = {}
        self._pending: list[tuple[Key, Observation]] = []  # recorded, not yet saved
        self._tlock = threading.Lock()
        self.warning: str | None = None  # why the file on disk was not used
        self.version = 0  # bumped on every change: a fit question re-reads its corrections

    @classmethod
    def default(cls) -> CalibrationStore:
        return cls(Path(platformdirs.user_state_dir("fleettui")) / "calibration.json")

    def _read(self) -> dict[str, tuple[Key, list[Observation]]]:
        try:
            fd = open_nofollow(self.path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as exc:
            raise CalibrationFileError(exc.strerror or str(exc)) from None
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(MAX_FILE + 1)
        if len(raw) > MAX_FILE:
            raise CalibrationFileError(f"larger than {MAX_FILE // MIB} MiB")
        return _parse(raw)

    def load(self) -> None:
        """Read the file; one that cannot be used is `warning` and an empty history (the next
        save replaces it)."""
        try:
            keys = self._read()
        except CalibrationFileError as exc:
            keys = {}
            self.warning = f"calibration history {self.path}: {exc}; starting empty"
        with self._tlock:
            self._keys = keys
            for key, obs in self._pending:
                self._add(self._keys, key, obs)
        self.version += 1

    def history(self, key: Key) -> list[Observation]:
        got = self._keys.get(key.text())
        return list(got[1]) if got else []

    def correction(self, key: Key) -> Calibration | None:
        return correction(self.history(key))

    def corrections(
        self, model: str, quant: str | None, ctx: int | None, parallel: int | None
    ) -> dict[str, Calibration]:
        """Every engine's correction for this question (what `check_fit` takes)."""
        out = {}
        for key, obs in list(self._keys.values()):
            if (
                same_model(key.model, model)
                and (key.quant, key.ctx, key.parallel) == (quant, ctx, parallel)
                and (cal := correction(obs)) is not None
            ):
                out[key.engine] = cal
        return out

    @staticmethod
    def _add(keys: dict[str, tuple[Key, list[Observation]]], key: Key, obs: Observation) -> None:
        _, have = keys.pop(key.text(), (key, []))
        if obs not in have:
            have = [*have, obs][-KEEP:]
        keys[key.text()] = (key, have)  # last: the most recently observed key
        while len(keys) > MAX_KEYS:
            del keys[next(iter(keys))]

    def record(self, key: Key, obs: Observation) -> None:
        """In memory now (the next fit question uses it), on disk at the next `save`."""
        with self._tlock:
            self._add(self._keys, key, obs)
            self._pending.append((key, obs))
        self.version += 1

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = open_nofollow(self.path.with_name(f".{self.path.name}.lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def save(self) -> None:
        """Merge what was recorded here into the file as it is now (another fleet process may
        have added to it) and replace it whole."""
        with self._tlock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        with self._locked():
            try:
                keys = self._read()
            except CalibrationFileError:
                keys = {}  # `load` said so; what this process measured replaces it
            for key, obs in pending:
                self._add(keys, key, obs)
            doc = {
                "format": FORMAT,
                "saved_at": time.time(),
                "keys": [
                    {**asdict(key), "observations": [asdict(o) for o in obs]}
                    for key, obs in keys.values()
                ],
            }
            atomic_write(self.path, json.dumps(doc, indent=1) + "\n", mode=0o644)
        with self._tlock:
            for key, obs in self._pending:
                self._add(keys, key, obs)
            self._keys = keys
        self.version += 1


@dataclass(frozen=True)
class Expected:
    """A load that succeeded on a node, waiting for a snapshot that shows the model."""

    key: Key
    estimated_bytes: int  # the estimate before any correction
    since_ts: float | None  # the ts of the snapshot the estimate was made from
    at: float  # time.monotonic() when the load finished


def expectation(
    snap: NodeSnapshot, meta: ModelMeta | None, request: ActionRequest
) -> Expected | None:
    """What the estimator says the load will hold on this node (without any correction:
    observations are always compared with the estimator's own figure); None when there is no
    figure, or the model is resident already (nothing to learn)."""
    req = FitRequest(
        request.model or "", request.ctx, request.parallel, request.kv_type, request.engine
    )
    try:
        fit = check_fit("", snap, meta, req)
    except Exception:  # an estimator bug on one node's data: nothing to learn from it
        return None
    est = fit.estimate
    if est is None or est.total_bytes is None or fit.engine is None or est.total_bytes <= 0:
        return None
    meta = meta or find_meta({"": snap}, req.model)
    key = key_for(fit.engine, req.model, meta.quant if meta else None, req.ctx, req.parallel)
    return Expected(key, est.total_bytes, snap.ts, time.monotonic())


class Calibrator:
    """Turns "a load succeeded" plus the node's next snapshot into an observation."""

    def __init__(self, store: CalibrationStore) -> None:
        self.store = store
        self.expected: dict[str, Expected] = {}
        self._last: dict[str, tuple[float, int]] = {}  # node -> (ts, bytes) of the last look

    def expect(self, node: str, expected: Expected) -> None:
        self.expected[node] = expected
        self._last.pop(node, None)

    def expire(self, older_than_s: float) -> list[str]:
        """Drop (and name) the loads no snapshot showed within `older_than_s`."""
        now = time.monotonic()
        gone = [n for n, e in self.expected.items() if now - e.at > older_than_s]
        for n in gone:
            del self.expected[n]
            self._last.pop(n, None)
        return gone

    def seen(self, node: str, snap: NodeSnapshot) -> Observation | None:
        """Record the observation once two fresh snapshots after the load agree on what the
        model holds (within SETTLED); None until then. One is not enough: an engine can
        answer the load while still reading the weights in (a llama.cpp router says
        `loading` for seconds), and mmapped weights become resident as they are touched."""
        exp = self.expected.get(node)
        if exp is None or snap.ts == exp.since_ts:
            return None
        got = observed_bytes(snap, exp.key.engine, exp.key.model)
        if got is None:
            return None
        before = self._last.get(node)
        if before is None or before[0] == snap.ts or abs(got - before[1]) > SETTLED * got:
            self._last[node] = (snap.ts, got)
            return None
        del self.expected[node], self._last[node]
        obs = Observation(time.time(), clean(node), exp.estimated_bytes, got)
        self.store.record(exp.key, obs)
        return obs


def explain(store: CalibrationStore, keys: list[Key]) -> list[str]:
    """`--explain`: each key's history, newest last, and whether its correction applies."""
    lines: list[str] = []
    for key in keys:
        history = store.history(key)
        cal = correction(history)
        lines.append(f"calibration for {key.describe()}: {len(history)} observed loads")
        for o in history:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(o.ts))
            lines.append(
                f"  {when} {o.node}: estimated {o.estimated_bytes / MIB:,.1f} MiB, observed "
                f"{o.observed_bytes / MIB:,.1f} MiB (x{o.ratio:.4f})"
            )
        if cal is None:
            lines.append(
                f"  no correction: it takes {MIN_OBSERVATIONS} observed loads, "
                f"{len(history)} so far"
            )
        elif not CALIBRATION_RANGE[0] <= cal.ratio <= CALIBRATION_RANGE[1]:
            lines.append(
                f"  no correction: x{cal.ratio:.4f} is outside {CALIBRATION_RANGE[0]:g}-"
                f"{CALIBRATION_RANGE[1]:g} (these observations measure something else)"
            )
        else:
            lines.append(
                f"  correction applied: x{cal.ratio:.4f} (the median of {cal.n} observed loads)"
            )
    return lines
