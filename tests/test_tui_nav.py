"""Pilot tests for getting around the dashboard: the row position, pause, the cursor under
sorts, the command palette, screenshots, q/esc on every screen, the footer at 80x24, and an
OFFLINE node's detail."""

from __future__ import annotations

import os

import pytest
from textual.command import CommandPalette

from fleettui.aggregator.state import NodeState
from fleettui.testing.sample import SAMPLE_NOW, SampleSource, generated_views
from fleettui.testing.scenes import sample_app
from fleettui.views.tui.app import FleetApp
from fleettui.views.tui.screens.confirm import ConfirmActionScreen
from fleettui.views.tui.screens.detail import DetailScreen
from fleettui.views.tui.screens.filter import FilterBar
from fleettui.views.tui.screens.fit import FitBar
from fleettui.views.tui.screens.help import HelpScreen
from pilot_util import screen_lines, until

pytestmark = pytest.mark.anyio


def bar(app: FleetApp) -> str:
    """The totals line as the terminal shows it."""
    return screen_lines(app)[-2]


def footer(app: FleetApp) -> str:
    return screen_lines(app)[-1]


def power_of(source: SampleSource, name: str, watts: float) -> None:
    view = source.node(name)
    assert view is not None and view.snapshot is not None
    snap = view.snapshot.model_copy(deep=True)
    snap.power.watts = watts
    source.update(name, snapshot=snap)


# --- row position ------------------------------------------------------------------------


async def test_the_bar_says_which_row_of_the_shown_ones_the_cursor_is_on() -> None:
    app = sample_app(SampleSource(views=generated_views(300), events=[]))
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: bar(app).endswith("row 1/300"), what="drawn")
        await pilot.press(*["down"] * 41)
        assert bar(app).endswith("row 42/300")
        await pilot.press("end")
        assert bar(app).endswith("row 300/300")
        await pilot.press("home", "slash", *"state=OFFLINE", "enter")
        shown = app.main.table.row_count
        assert 0 < shown < 300
        await until(pilot, lambda: bar(app).endswith(f"row 1/{shown}"), what="filtered count")


async def test_a_gpu_sub_row_counts_as_its_node() -> None:
    app = sample_app()
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("down", "g")  # gpu-a2 (2 GPUs) opens under row 2
        assert bar(app).endswith("row 2/10")
        await pilot.press("down", "down")  # its two GPU lines
        assert app.main.table.cursor_gpu == 1
        assert bar(app).endswith("row 2/10")
        await pilot.press("down")  # the next node, though it is the 5th line
        assert app.main.table.cursor_name == "gpu-b1"
        assert bar(app).endswith("row 3/10")


async def test_at_80_columns_the_position_stays_and_the_totals_give_way() -> None:
    app = sample_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("down", "down")
        line = bar(app)
        assert line.endswith(" 3/10") and "…" in line and len(line) <= 80


async def test_the_position_never_cuts_totals_that_would_fit_without_it() -> None:
    """Where the totals (a filter, the counts) fit only alone, the position gives way."""
    from fleettui.testing.sample import sample_views
    from fleettui.views.tui.widgets import TotalsBar

    app = sample_app(SampleSource(views=sample_views()[:2], events=[]))
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("slash", *"name=gpu-a1", "enter")
        line = app.main.query_one(TotalsBar).shown
        await until(pilot, lambda: "filter name=gpu-a1 (1/2)" in bar(app), what="filtered")
        assert line is not None
        await pilot.resize_terminal(line.cell_len + 2 + 2, 45)  # padding, and 2 spare cells
        await until(pilot, lambda: bar(app).endswith("(1/2)"), what="the position gives way")
        await pilot.resize_terminal(line.cell_len + 2 + 12, 45)
        await until(pilot, lambda: bar(app).endswith(" row 1/1"), what="room again")
        assert "filter name=gpu-a1 (1/2)" in bar(app)


# --- pause -------------------------------------------------------------------------------


async def test_p_freezes_the_figures_and_p_again_applies_the_latest_at_once() -> None:
    source = SampleSource()
    now = [SAMPLE_NOW]
    app = sample_app(source, clock=lambda: now[0], min_refresh_s=0.01, tick_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        t = app.main.table
        await pilot.press("p")
        assert "PAUSED" in bar(app)
        shown_before = t.get_cell("gpu-a1", "power").plain
        refreshes = app.refreshes
        power_of(source, "gpu-a1", 4321.0)
        now[0] += 75
        await until(pilot, lambda: "PAUSED, data 1m old" in bar(app), what="the age moves")
        assert t.get_cell("gpu-a1", "power").plain == shown_before
        assert app.refreshes == refreshes  # no snapshot applied while paused
        # keys, sort and screens still work while paused
        await pilot.press("down", "s")
        assert t.cursor_name == "gpu-a2" and t.sort_key == "node"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main)
        await pilot.press("p")  # resume: applied by the key itself, not the next tick
        assert "4,321 W" in t.get_cell("gpu-a1", "power").plain
        assert "PAUSED" not in bar(app)
        power_of(source, "gpu-a1", 12.0)
        await until(pilot, lambda: "12 W" in t.get_cell("gpu-a1", "power").plain)


# --- the cursor under sorts --------------------------------------------------------------


async def test_the_cursor_keeps_its_node_and_its_line_when_the_sort_changes() -> None:
    views = generated_views(300)
    app = sample_app(SampleSource(views=views, events=[]))
    async with app.run_test(size=(160, 45)) as pilot:
        t = app.main.table
        await until(pilot, lambda: bar(app).endswith("row 1/300"), what="drawn")
        await pilot.press(*["down"] * 10)
        name = t.cursor_name
        page, last_top = t.size.height - 1, 300 - (t.size.height - 1)
        for key in ("s",) * 8 + ("S",):  # node, role, state, why...: each keeps the node
            line = t.cursor_row - t._top
            await pilot.press(key)
            assert t.cursor_name == name
            # on the same screen line, unless the top or the bottom of the list is in the way
            assert t._top == min(max(t.cursor_row - line, 0), last_top), t.sort_key
            assert 0 <= t.cursor_row - t._top < page
            assert name in screen_lines(app)[1 + t.cursor_row - t._top]
            assert bar(app).endswith(f"row {t.cursor_row + 1}/300")


async def test_a_live_re_sort_keeps_the_cursor_on_its_node_and_in_view() -> None:
    views = generated_views(300)
    source = SampleSource(views=views, events=[])
    app = sample_app(source, min_refresh_s=0.01)
    async with app.run_test(size=(160, 45)) as pilot:
        t = app.main.table
        await until(pilot, lambda: bar(app).endswith("row 1/300"), what="drawn")
        t.sort_by("power")
        await pilot.pause()
        await pilot.press(*["down"] * 20)
        name, top, page = t.cursor_name, t._top, t.size.height - 1
        assert name is not None
        t.move_cursor(row=top + 20)
        name = t.cursor_name
        assert name is not None
        below = t.views[t.visible_names[top + 30]].snapshot  # on screen, ten rows further down
        assert below is not None
        power_of(source, name, below.power.watts - 0.01)
        await until(pilot, lambda: t.visible_names.index(name) >= top + 29, what="re-sorted")
        await pilot.pause()
        assert t.cursor_name == name and t._top == top  # the view stays: the cursor moves
        assert name in screen_lines(app)[1 + t.cursor_row - t._top]
        far = (top + page + 60) % 280  # off the screen, below or above
        other = t.views[t.visible_names[far]].snapshot
        assert other is not None
        power_of(source, name, other.power.watts - 0.01)
        await until(pilot, lambda: abs(t.visible_names.index(name) - far) <= 1, what="moved")
        await pilot.pause()
        line = t.cursor_row - t._top
        assert t.cursor_name == name and line in (0, page - 1)  # scrolled just into view
        assert name in screen_lines(app)[1 + line]
        assert bar(app).endswith(f"row {t.cursor_row + 1}/300")
        power_of(source, name, 9000.0)  # to the top
        await until(pilot, lambda: t.visible_names[0] == name, what="to the top")
        await pilot.pause()
        assert t.cursor_name == name and t.cursor_row == 0 and t._top == 0
        assert name in screen_lines(app)[1]
        assert bar(app).endswith("row 1/300")


# --- the command palette -----------------------------------------------------------------


def titles(app: FleetApp) -> set[str]:
    return {c.title for c in app.get_system_commands(app.main)}


async def test_the_palette_offers_every_action_and_runs_one() -> None:
    app = sample_app()
    async with app.run_test(size=(160, 45)) as pilot:
        have = titles(app)
        for title in (
            "Filter",
            "Sort: next column",
            "Sort by Power",
            "Select",
            "Select all",
            "Clear selection",
            "Node detail",
            "GPUs: expand / fold",
            "Event log",
            "Fit",
            "Pause updates",
            "Help",
            "Screenshot",
            "Quit",
            "Theme",  # Textual's own: the picker remembers the choice
            *(f"{a} ({k})" for k, a in [("R", "Restart"), ("U", "Unload"), ("X", "Stop")]),
        ):
            assert title in have, title
        await pilot.press("ctrl+p")
        await until(pilot, lambda: CommandPalette.is_open(app), what="palette open")
        await pilot.press(*"sort by power")
        await pilot.pause(0.3)  # the palette searches in a worker
        await pilot.press("enter")
        await until(pilot, lambda: app.main.table.sort_key == "power", what="sorted")
        assert app.screen is app.main and "sort power ▼" in bar(app)


async def test_the_palette_offers_no_action_when_read_only() -> None:
    app = sample_app(read_only=True)
    async with app.run_test(size=(160, 45)):
        have = titles(app)
        assert "Filter" in have and "Pause updates" in have
        assert not {t for t in have if t.endswith(("(R)", "(U)", "(L)", "(P)", "(X)", "(T)"))}


# --- screenshots -------------------------------------------------------------------------


def notes(app: FleetApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_ctrl_s_saves_an_svg_here_and_never_overwrites(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = sample_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+s")
        first = list(tmp_path.glob("fleet-*.svg"))
        assert len(first) == 1 and first[0].read_text().startswith("<svg")
        assert notes(app)[-1] == f"screenshot saved: {first[0]}"
        first[0].write_text("mine")  # the same second again: not written over
        outside = tmp_path / "outside"
        outside.write_text("untouched")
        os.symlink(outside, first[0].with_name(first[0].stem + "-2.svg"))  # nor through
        await pilot.press("ctrl+s")
        third = first[0].with_name(first[0].stem + "-3.svg")
        assert third.read_text().startswith("<svg")
        assert first[0].read_text() == "mine" and outside.read_text() == "untouched"
        assert notes(app)[-1] == f"screenshot saved: {third}"
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


async def test_a_screenshot_that_cannot_be_written_is_a_notification(tmp_path, monkeypatch) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # the current directory was deleted under us (root may write anywhere else)
    app = sample_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.is_running
        assert notes(app)[-1].startswith("screenshot not saved in the current directory: ")
        assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
async def test_a_screenshot_into_a_read_only_directory_is_a_notification(
    tmp_path, monkeypatch
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.chdir(ro)
    app = sample_app()
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("ctrl+s")
            assert notes(app)[-1] == f"screenshot not saved in {ro}: Permission denied"
    finally:
        ro.chmod(0o755)


# --- q and esc ---------------------------------------------------------------------------


async def test_q_and_esc_go_back_from_every_screen() -> None:
    app = sample_app()
    async with app.run_test(size=(120, 40)) as pilot:
        opens = {
            "detail": (("enter",), DetailScreen),
            "help": (("question_mark",), HelpScreen),
            "confirm": (("R",), ConfirmActionScreen),
        }
        for name, (keys, kind) in opens.items():
            for back in ("q", "escape"):
                await pilot.press(*keys)
                await until(pilot, lambda k=kind: isinstance(app.screen, k), what=name)
                await pilot.press(back)
                await until(pilot, lambda: app.screen is app.main, what=f"{back} on {name}")
                assert app.is_running
        for name, key, kind in (("filter", "slash", FilterBar), ("fit", "F", FitBar)):
            ask = app.main.query_one(kind)
            await pilot.press(key)
            await until(pilot, lambda a=ask: a.is_open, what=name)
            await pilot.press("q")  # a letter of the text being typed, not a way out
            assert ask.input.value == "q" and app.is_running
            await pilot.press("escape")
            await until(pilot, lambda a=ask: not a.is_open, what=f"escape on {name}")
            assert app.main.table.has_focus
        await pilot.press("ctrl+p")
        await until(pilot, lambda: CommandPalette.is_open(app))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main, what="escape on the palette")
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, what="q on the table quits")


# --- the footer --------------------------------------------------------------------------


async def test_at_80x24_the_footer_keeps_help_and_quit() -> None:
    app = sample_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "Quit" in footer(app), what="the footer")
        keys = footer(app)
        assert keys.endswith("? Help q Quit") and len(keys) <= 80
        assert keys.startswith("/ Filter space Select s Sort")
        assert "R Restart" in keys  # the first actions fit too
        await pilot.resize_terminal(200, 40)
        await until(pilot, lambda: "T Start" in footer(app), what="wider: every key")
        await pilot.resize_terminal(56, 24)
        await until(pilot, lambda: "R Restart" not in footer(app), what="narrower")
        assert footer(app) == "/ Filter space Select s Sort p Pause ? Help q Quit"


async def test_read_only_lists_no_action_key_in_the_footer() -> None:
    app = sample_app(read_only=True)
    async with app.run_test(size=(200, 40)) as pilot:
        await until(pilot, lambda: "Quit" in footer(app), what="the footer")
        keys = footer(app)
        assert "/ Filter" in keys and "? Help q Quit" in keys
        for label in ("Restart", "Unload", "Load", "Purge", "Stop", "Start"):
            assert label not in keys, label


# --- an OFFLINE node's detail ------------------------------------------------------------


async def test_an_offline_nodes_detail_says_last_seen_not_now() -> None:
    app = sample_app()
    async with app.run_test(size=(120, 60)) as pilot:
        t = app.main.table
        t.move_cursor(row=t.visible_names.index("edge-lab-7"))
        assert t.views["edge-lab-7"].state is NodeState.OFFLINE
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        text = "\n".join(screen_lines(app))
        assert "now 96 W" not in text
        assert "last seen 3m ago: 96 W" in text
        assert "GPUs (last seen 3m ago)" in text and "Engines (last seen 3m ago)" in text
        await pilot.press("escape")
        t.move_cursor(row=0)  # an ONLINE node: its figures are current
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        text = "\n".join(screen_lines(app))
        assert "now 1,843 W" in text and "last seen 3m" not in text
