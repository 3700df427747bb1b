"""dashboard.toml: the operator's own look of the dashboard (column order, hidden columns, theme).

A preference is never worth a crash: a bad or hand-edited file gives one warning line per
problem, naming the file and the field, and what it names falls back to the default. Written
by the dashboard (the column picker, a theme change) with tomlkit, so a comment the operator
added stays, atomically and never through a symlink. It holds no secret, but lives in the same
directory as projects.toml, which may.
"""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from fleettui.fsutil import atomic_write, refuse_symlink

APP_NAME = "fleettui"
FILE_NAME = "dashboard.toml"
MAX_BYTES = 64 * 1024  # a preferences file is a few lines; anything bigger is not one
KEYS = ("theme", "columns")
COLUMN_KEYS = ("order", "hidden")


def default_prefs_path() -> Path:
    """dashboard.toml in the user config dir, where projects.toml lives by default: one look
    per operator, whichever fleet config (or `fleet demo`) the dashboard shows."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / FILE_NAME


@dataclass(frozen=True)
class DashboardPrefs:
    order: tuple[str, ...] = ()  # column keys in the operator's order; () is the default order
    hidden: frozenset[str] = frozenset()
    theme: str | None = None  # None: the dashboard's default theme


def quoted(value: object) -> str:
    """A value from the file as a warning quotes it: short, repr'd (no control characters)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _column_list(
    where: str, field_name: str, value: object, columns: Collection[str], warn: list[str]
) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        warn.append(f"{where}: columns.{field_name}: must be a list of column names; default used")
        return []
    known = []
    for key in dict.fromkeys(value):
        if key in columns:
            known.append(key)
        else:
            warn.append(f"{where}: columns.{field_name}: unknown column {quoted(key)}; ignored")
    return known


def parse_prefs(
    where: str, data: dict[str, Any], columns: Sequence[str], fixed: Collection[str]
) -> tuple[DashboardPrefs, list[str]]:
    """The preferences in a parsed file, and a warning per field that was not one."""
    warn: list[str] = []
    for key in data:
        if key not in KEYS:
            warn.append(f"{where}: {quoted(key)}: unknown key; ignored")
    theme = data.get("theme")
    if theme is not None and not isinstance(theme, str):
        warn.append(f"{where}: theme: must be a theme's name; default used")
        theme = None
    cols = data.get("columns", {})
    if not isinstance(cols, dict):
        warn.append(f"{where}: columns: must be a table ([columns]); defaults used")
        cols = {}
    for key in cols:
        if key not in COLUMN_KEYS:
            warn.append(f"{where}: columns.{quoted(key)}: unknown key; ignored")
    order = _column_list(where, "order", cols.get("order", []), columns, warn)
    hidden = _column_list(where, "hidden", cols.get("hidden", []), columns, warn)
    for key in hidden:
        if key in fixed:
            warn.append(f"{where}: columns.hidden: {key!r} is always shown; ignored")
    prefs = DashboardPrefs(tuple(order), frozenset(hidden) - frozenset(fixed), theme or None)
    return prefs, warn


def load_prefs(
    path: Path, columns: Sequence[str], fixed: Collection[str] = ()
) -> tuple[DashboardPrefs, list[str]]:
    """Read `path` leniently: a missing file is the defaults, anything wrong is a warning."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return DashboardPrefs(), []
    except OSError as exc:
        return DashboardPrefs(), [f"{path}: cannot read ({exc.strerror or exc}); defaults used"]
    if len(raw) > MAX_BYTES:
        return DashboardPrefs(), [f"{path}: larger than {MAX_BYTES} bytes; defaults used"]
    try:
        data = tomllib.loads(raw.decode())
    except UnicodeDecodeError:
        return DashboardPrefs(), [f"{path}: not UTF-8 text; defaults used"]
    except tomllib.TOMLDecodeError as exc:
        return DashboardPrefs(), [f"{path}: not valid TOML ({exc}); defaults used"]
    return parse_prefs(str(path), data, columns, fixed)


def render_prefs(prefs: DashboardPrefs, old: str = "") -> str:
    """The file for `prefs`: `old`'s text with our keys replaced (its comments kept), or a
    new document when `old` is empty or not TOML."""
    import tomlkit
    import tomlkit.exceptions

    try:
        doc = tomlkit.parse(old) if old.strip() else None
    except tomlkit.exceptions.ParseError:
        doc = None
    if doc is None:
        doc = tomlkit.document()
        doc.add(tomlkit.comment("The fleet dashboard's look: written by it (c, themes); editable."))
    if prefs.theme is None:
        doc.pop("theme", None)
    else:
        doc["theme"] = prefs.theme
    cols = doc.get("columns")
    if not isinstance(cols, dict):
        cols = tomlkit.table()
        doc["columns"] = cols
    order = tomlkit.array()
    order.extend(prefs.order)
    cols["order"] = order.multiline(len(prefs.order) > 6)  # one a line: easy to move by hand
    cols["hidden"] = sorted(prefs.hidden)
    return tomlkit.dumps(doc)


@dataclass(eq=False)
class PrefsFile:
    """One dashboard.toml: what it held at start, and the writes the dashboard asks for.

    `want` then `write` from any thread: a write writes the latest wish, once, so two saves
    in flight cannot land in the wrong order."""

    path: Path
    prefs: DashboardPrefs = DashboardPrefs()  # as read at start, then as last written
    warnings: list[str] = field(default_factory=list)
    _wanted: DashboardPrefs | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def read(cls, path: Path, columns: Sequence[str], fixed: Collection[str] = ()) -> PrefsFile:
        prefs, warnings = load_prefs(path, columns, fixed)
        return cls(path, prefs, warnings)

    def want(self, prefs: DashboardPrefs) -> bool:
        """Note what should be on disk; False when it is there already."""
        self._wanted = prefs
        return prefs != self.prefs

    def write(self) -> None:
        """Write the latest wish (OSError, UnsafePathError for a symlink: the caller says so)."""
        with self._lock:
            prefs = self._wanted
            if prefs is None or prefs == self.prefs:
                return
            refuse_symlink(self.path)
            try:
                old = self.path.read_text() if self.path.stat().st_size <= MAX_BYTES else ""
            except (OSError, UnicodeDecodeError):
                old = ""
            atomic_write(self.path, render_prefs(prefs, old), mode=0o600)
            self.prefs = prefs
