"""The column picker (`c`) and dashboard.toml: columns hidden and moved on the table, the
choice and the theme kept across restarts, a bad file a warning and the defaults."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fleettui.fsutil import UnsafePathError
from fleettui.prefs import DashboardPrefs, PrefsFile, default_prefs_path, load_prefs
from fleettui.testing.sample import sample_views
from fleettui.testing.scenes import sample_app
from fleettui.views.columns import DEFAULT_ORDER, FIXED, column_needs, fit_columns
from fleettui.views.tui.screens.columns import ColumnsScreen, full_order, picker_lines
from pilot_util import screen_lines, until

pytestmark = pytest.mark.anyio
NEEDS = column_needs(sample_views())


def read(path: Path) -> PrefsFile:
    return PrefsFile.read(path, DEFAULT_ORDER, FIXED)


def header(app) -> str:
    return screen_lines(app)[0]


# --- widths and the drop order ------------------------------------------------------------


def test_drop_order_keeps_state_why_gpu_power_whatever_the_order() -> None:
    """The operator's order moves columns, not their priority: State, Why, GPU and Power stay
    at 80 and 120 cells even when moved to the far end, and they are drawn where moved."""
    order = [k for k in DEFAULT_ORDER if k not in ("why", "gpu", "power")] + ["power", "gpu", "why"]
    for width in (80, 120):
        widths = fit_columns(width, NEEDS, order=order)
        assert {"state", "why", "gpu", "power"} <= set(widths), width
        assert list(widths)[-3:] == ["power", "gpu", "why"]
        assert sum(w + 1 for w in widths.values()) <= width


def test_an_empty_why_column_is_as_wide_as_its_header_and_its_room_goes_to_the_cut() -> None:
    """Every node ONLINE: no row has a reason, so Why keeps its place (it comes back at once
    with the first reason) but only three cells; Models and the rest take the other eleven."""
    quiet = {**NEEDS, "why": 0}
    for width in (80, 120, 160):
        busy, calm = fit_columns(width, NEEDS), fit_columns(width, quiet)
        assert calm["why"] == len("Why") < busy["why"], width
        assert sum(w + 1 for w in calm.values()) <= width
        assert set(calm) == set(busy), width  # the first reason moves no other column
        grown = {k for k in calm if calm[k] > busy[k]}
        assert grown and grown <= {"node", "models", "engines", "role", "gpu", "power"}, width


def test_hidden_columns_give_their_room_to_the_cut_ones() -> None:
    """Hiding what has room frees it: first for a column the width had dropped, then as spare
    cells for the columns whose text is cut, each up to what it needs."""
    default = fit_columns(160, NEEDS)
    assert "latency" not in default and default["why"] < NEEDS["why"]
    hide = {"vram", "cost", "audit", "latency", "seen", "role"}
    widths = fit_columns(160, NEEDS, hidden=hide)
    assert not hide & set(widths)
    assert widths["why"] == NEEDS["why"]  # FLEX_ORDER: Why first, then Models, Engines
    assert widths["models"] > default["models"] and widths["engines"] > default["engines"]
    assert sum(w + 1 for w in widths.values()) == 160  # nothing left blank
    assert set(FIXED) <= set(fit_columns(160, NEEDS, hidden=FIXED))  # never hidden


def test_picker_lines_say_why_a_column_is_missing() -> None:
    order = full_order(DEFAULT_ORDER)
    drawn = fit_columns(80, NEEDS, hidden={"role"})
    notes = {
        line[6:15].strip(): line  # the cursor mark, the box, then the name
        for line in picker_lines(order, frozenset({"role"}), 0, drawn, 80).plain.splitlines()
    }
    assert notes["Node"].rstrip().endswith("always shown")
    assert notes["Role"].rstrip().endswith("hidden")
    assert notes["Why"].rstrip().endswith(f"{drawn['why']} cells")
    assert notes["Seen"].rstrip().endswith("no room at 80 cells")
    assert notes["Fit"].rstrip().endswith("with F only")
    asked = picker_lines(order, frozenset(), 0, drawn, 80, frozenset({"fit"})).plain
    assert "Fit      fit answer (F)" in asked and "with F only" not in asked


def test_full_order_fills_in_what_a_saved_order_lacks() -> None:
    assert full_order(["power", "nope", "node", "power"])[:2] == ["power", "node"]
    assert sorted(full_order(["power"])) == sorted(DEFAULT_ORDER)


# --- the picker -------------------------------------------------------------------------


async def test_picker_hides_moves_and_the_table_shows_it() -> None:
    app = sample_app()
    async with app.run_test(size=(200, 50)) as pilot:
        t = app.main.table
        assert "Role" in header(app) and header(app).index("Why") < header(app).index("GPU")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ColumnsScreen))
        await pilot.press("down", "down", "space")  # Role: hidden
        await pilot.press("down", "down", "down")  # on Why
        await pilot.press("right_square_bracket", "shift+down", "shift+down")  # past Engines,
        await pilot.press("enter")  # Models and GPU
        await until(pilot, lambda: not isinstance(app.screen, ColumnsScreen))
        assert "role" not in t.widths and "role" in t.hidden
        keys = list(t.widths)
        assert keys.index("gpu") < keys.index("why") < keys.index("vram")
        line = header(app)
        assert "Role" not in line and line.index("GPU") < line.index("Why")
        # the fixed columns: space on Node rings and changes nothing; esc cancels a change
        await pilot.press("c", "down", "space", "down", "space", "escape")
        await until(pilot, lambda: not isinstance(app.screen, ColumnsScreen))
        assert "node" in t.widths and t.hidden == {"role"}
        # r: back to the defaults
        await pilot.press("c", "r", "enter")
        await until(pilot, lambda: t.order == DEFAULT_ORDER and not t.hidden)
        assert list(t.widths) == [k for k in DEFAULT_ORDER if k in t.widths]


async def test_a_move_alone_redraws_the_table() -> None:
    """Same columns, same widths, another order: still a new layout."""
    app = sample_app()
    async with app.run_test(size=(120, 40)) as pilot:
        assert header(app).index("Why") < header(app).index("Engines")
        await pilot.press("c", *["down"] * 5, "shift+down", "enter")  # Why after Engines
        await until(pilot, lambda: list(app.main.table.widths).index("why") == 4)
        await pilot.pause()
        assert header(app).index("Engines") < header(app).index("Why")


async def test_picker_says_which_columns_have_no_room() -> None:
    app = sample_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ColumnsScreen))
        lines = "\n".join(screen_lines(app))
        assert "Engines" in lines and "no room at 80 cells" in lines
        assert "esc cancel" in lines  # the hint fits at 80 cells
        await pilot.press("q")  # q closes the picker, not the app
        await until(pilot, lambda: not isinstance(app.screen, ColumnsScreen))
        assert app.is_running


async def test_hiding_the_sorted_column_drops_the_sort() -> None:
    app = sample_app()
    async with app.run_test(size=(120, 40)) as pilot:
        t = app.main.table
        t.sort_by("role")
        await pilot.press("c", "down", "down", "space", "enter")
        await until(pilot, lambda: "role" in t.hidden)
        assert t.sort_key is None


# --- dashboard.toml across restarts -------------------------------------------------------


async def test_columns_and_theme_persist_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "dashboard.toml"
    app = sample_app(prefs=read(path))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("c", "down", "down", "space")  # hide Role
        await pilot.press("down", "down", "down", "left_square_bracket")  # Why before Fit
        await pilot.press("t")  # the next theme, at once
        theme = app.theme
        assert theme != "textual-dark"
        await pilot.press("enter")
        await until(pilot, lambda: path.exists() and "hidden" in path.read_text())
        await until(pilot, lambda: theme in path.read_text())
        order = app.main.table.order
        await pilot.press("q")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["dashboard.toml"]  # no temp left

    again = sample_app(prefs=read(path))
    assert not again.config_warnings
    async with again.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        t = again.main.table
        assert again.theme == theme
        assert t.order == order and t.hidden == {"role"}
        assert "role" not in t.widths and "Role" not in header(again)
        # a theme changed elsewhere (the command palette) is remembered too
        again.theme = "textual-light"
        await until(pilot, lambda: 'theme = "textual-light"' in path.read_text())
        await pilot.press("c", "r", "enter")  # the defaults: no order kept, so new columns
        await until(pilot, lambda: "order = []" in path.read_text())  # land in their place
    assert load_prefs(path, DEFAULT_ORDER)[0] == DashboardPrefs(theme="textual-light")


async def test_a_corrupt_file_is_one_warning_and_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.toml"
    path.write_text('theme = "nord"\n[columns\norder = ["gpu"]\n')
    app = sample_app(prefs=read(path))
    assert len(app.config_warnings) == 1
    warning = app.config_warnings[0]
    assert warning.startswith(f"{path}: not valid TOML") and warning.endswith("defaults used")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.theme == "textual-dark" and app.main.table.order == DEFAULT_ORDER
        banner = app.main.query_one("#config-warnings")
        assert banner.display and "not valid TOML" in str(banner.render())
        await pilot.press("e")
        log = app.main.event_log
        await until(pilot, lambda: any("dashboard.toml" in line.text for line in log.lines))


async def test_hand_edited_fields_fall_back_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.toml"
    path.write_text(
        'theme = "no-such-theme"\ncolour = 1\n'
        '[columns]\norder = ["gpu", "bogus", "power"]\nhidden = ["node", "audit", 7]\nwide = 1\n'
    )
    app = sample_app(prefs=read(path))
    w = app.config_warnings
    assert f"{path}: 'colour': unknown key; ignored" in w
    assert f"{path}: columns.'wide': unknown key; ignored" in w
    assert f"{path}: columns.order: unknown column 'bogus'; ignored" in w
    assert f"{path}: columns.hidden: must be a list of column names; default used" in w
    assert f"{path}: theme: unknown theme 'no-such-theme'; textual-dark used" in w
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.theme == "textual-dark"
        assert list(app.main.table.widths)[:2] == ["gpu", "power"]  # what was known is kept
        assert not app.main.table.hidden


def test_load_prefs_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.toml"
    for text, expect in [
        (b"\xff\xfe", "not UTF-8 text"),
        (b"theme = 3\ncolumns = 1\n", "theme: must be a theme's name"),
        (b"columns = 1\n", "columns: must be a table"),
        (b'[columns]\nhidden = ["state"]\n', "columns.hidden: 'state' is always shown"),
        (b"x" * 70_000, "larger than"),
    ]:
        path.write_bytes(text)
        prefs, warnings = load_prefs(path, DEFAULT_ORDER, FIXED)
        assert prefs == DashboardPrefs() and warnings and expect in warnings[0], text[:20]
        assert all(w.startswith(str(path)) for w in warnings)
    # a hostile edit: escape sequences in keys and values never reach the terminal raw
    path.write_text(
        '"\\u001b[2J" = 1\ntheme = "\\u001b]0;pwned\\u0007"\n'
        '[columns]\n"\\u001b[31m" = 1\norder = ["\\u001b[5m"]\n'
    )
    prefs, warnings = load_prefs(path, DEFAULT_ORDER, FIXED)
    assert len(warnings) == 3 and not any("\x1b" in w for w in warnings)
    app = sample_app(prefs=read(path))
    assert len(app.config_warnings) == 4 and not any("\x1b" in w for w in app.config_warnings)
    path.unlink()
    path.mkdir()
    assert "cannot read" in load_prefs(path, DEFAULT_ORDER)[1][0]
    assert load_prefs(tmp_path / "missing.toml", DEFAULT_ORDER) == (DashboardPrefs(), [])


def test_a_write_keeps_comments_and_refuses_a_symlink(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.toml"
    path.write_text('# my columns\ntheme = "nord"\n\n[columns]\norder = []  # default\n')
    prefs = read(path)
    assert prefs.prefs.theme == "nord"
    assert prefs.want(DashboardPrefs(("gpu",), frozenset({"audit"}), "dracula"))
    prefs.write()
    text = path.read_text()
    assert text.startswith("# my columns\n") and 'theme = "dracula"' in text
    assert load_prefs(path, DEFAULT_ORDER)[0] == DashboardPrefs(
        ("gpu",), frozenset({"audit"}), "dracula"
    )
    assert not prefs.want(prefs.prefs)  # nothing new: nothing to write

    target = tmp_path / "elsewhere.toml"
    target.write_text("keep = 1\n")
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    linked = read(link)
    linked.want(DashboardPrefs(theme="nord"))
    with pytest.raises(UnsafePathError):
        linked.write()
    assert target.read_text() == "keep = 1\n"


async def test_a_refused_write_is_said_and_the_dashboard_goes_on(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.toml"
    target.write_text("")
    link = tmp_path / "dashboard.toml"
    link.symlink_to(target)
    app = sample_app(prefs=read(link))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("c", "down", "down", "space", "enter")
        await until(pilot, lambda: any("not saved" in n.message for n in app._notifications))
        assert "role" in app.main.table.hidden and app.is_running
    assert target.read_text() == ""


def test_the_file_lives_beside_the_default_projects_toml(monkeypatch, tmp_path: Path) -> None:
    from fleettui.config import default_fleet_config_path

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("FLEET_CONFIG", raising=False)
    assert default_prefs_path() == tmp_path / "fleettui" / "dashboard.toml"
    assert default_prefs_path().parent == default_fleet_config_path().parent
