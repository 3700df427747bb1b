"""Pilot tests: every dashboard key, live updates, coalescing, 1000 rows, narrow terminals."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from rich.console import Console
from textual.widgets import Input, OptionList, Static

from fleettui.aggregator.state import FleetEvent, NodeState
from fleettui.testing.sample import SAMPLE_NOW, SampleSource, generated_views, sample_views
from fleettui.testing.scenes import sample_app
from fleettui.views.numbers import TO
from fleettui.views.tui.app import FleetApp
from fleettui.views.tui.messages import ActionRequested
from fleettui.views.tui.screens.detail import DetailScreen
from fleettui.views.tui.screens.filter import FilterBar
from fleettui.views.tui.screens.help import HelpScreen
from fleettui.views.tui.widgets import EventLog, TotalsBar
from pilot_util import screen_lines, until

pytestmark = pytest.mark.anyio
NAMES = [v.name for v in sample_views()]


def plain(app: FleetApp, name: str, column: str) -> str:
    return app.main.table.get_cell(name, column).plain


def shown(widget: Static) -> str:
    """What a Static displays, as plain text (it may hold a Rich renderable)."""
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(widget.content)
    return console.file.getvalue()


def totals(app: FleetApp) -> str:
    """The totals line in full (the terminal may cut its end to fit the row position)."""
    line = app.main.query_one(TotalsBar).shown
    assert line is not None
    return line.plain


async def test_cursor_keys_and_selection() -> None:
    app = sample_app()
    async with app.run_test(size=(120, 40)) as pilot:
        t = app.main.table
        assert t.visible_names == NAMES
        assert t.cursor_name == "gpu-a1"
        await pilot.press("j", "j", "down")
        assert t.cursor_name == "gpu-b2"
        await pilot.press("k", "up")
        assert t.cursor_name == "gpu-a2"
        await pilot.press("space")
        assert t.selected == {"gpu-a2"}
        assert plain(app, "gpu-a2", "sel") == "✓"
        assert "1 selected" in totals(app)
        await pilot.press("space")
        assert t.selected == set() and plain(app, "gpu-a2", "sel") == " "
        await pilot.press("a")
        assert t.selected == set(NAMES)
        assert "10 selected" in totals(app)
        await pilot.press("A")
        assert t.selected == set()
        assert "0 selected" in totals(app)


def bar(app: FleetApp) -> FilterBar:
    return app.main.query_one(FilterBar)


def bar_status(app: FleetApp) -> str:
    return shown(app.main.query_one("#filter-status", Static))


async def test_filter_applies_rejects_and_clears() -> None:
    app = sample_app()
    async with app.run_test(size=(120, 40)) as pilot:
        t = app.main.table
        await pilot.press("a")  # select everything, then filter: selection survives
        await pilot.press("slash")
        assert bar(app).is_open and app.screen is app.main  # a bar, not a screen
        await pilot.press(*"engine=vllm")
        assert "4 of 10 nodes match" in bar_status(app)
        await pilot.press("enter")
        assert not bar(app).is_open and t.has_focus
        assert t.visible_names == ["gpu-a1", "gpu-a2", "gpu-b1", "gpu-b2"]
        assert "filter engine=vllm (4/10)" in totals(app)
        assert "(6 hidden by the filter)" in totals(app)
        assert t.targets() == ["gpu-a1", "gpu-a2", "gpu-b1", "gpu-b2"]  # never hidden rows

        # a bad expression: the bar stays open, says what and where in one line, and the
        # table keeps the last good filter
        await pilot.press("slash", "ctrl+u", *"powr>3")
        await pilot.press("enter")
        assert bar(app).is_open
        status = bar_status(app)
        assert "column 1: unknown field 'powr'" in status and "\n" not in status.strip()
        assert bar(app).has_class("error")
        await pilot.press("escape")  # cancel: the old filter stays
        assert not bar(app).is_open
        assert len(t.visible_names) == 4

        await pilot.press("escape")  # on the main screen: clears the filter
        assert t.visible_names == NAMES
        assert t.selector is None


async def test_filter_with_empty_input_clears() -> None:
    app = sample_app(filter_text="state=OFFLINE")
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.main.table.visible_names == ["edge-lab-7"]
        await pilot.press("slash")
        assert app.main.query_one("#filter-input", Input).value == "state=OFFLINE"
        await pilot.press("ctrl+u", "enter")
        assert not bar(app).is_open
        assert app.main.table.visible_names == NAMES


async def test_bare_word_filters_live_with_the_table_in_sight() -> None:
    """`/` then a plain word: the rows narrow as one types (after a pause), the table stays
    on screen, matched letters are highlighted, esc puts back what was there, enter keeps."""
    source = SampleSource()
    app = sample_app(source, filter_text="tag=h100")
    async with app.run_test(size=(120, 40)) as pilot:
        t = app.main.table
        assert t.visible_names == ["gpu-a1", "gpu-a2", "gpu-c1"]
        await pilot.press("slash", "ctrl+u")
        await until(pilot, lambda: len(t.visible_names) == len(NAMES))  # empty: every node
        await pilot.press(*"qwen")  # `q` types, it does not quit
        # best first: a prefix of a value (Qwen/..., qwen2.5-...) before a word inside one
        qwen = ["gpu-a1", "gpu-a2", "edge-lab-7", "gpu-c1", "mac-studio-1"]
        await until(pilot, lambda: t.visible_names == qwen)
        assert app.is_running and bar(app).is_open
        lines = screen_lines(app)
        assert any(line.lstrip().startswith("gpu-a1") for line in lines)  # rows in sight
        assert any(line.startswith(" / qwen") for line in lines)  # the bar, one line
        assert "filter qwen (5/10)" in totals(app)
        source.update("gpu-c1", state=NodeState.OFFLINE)  # the fleet moves while one types
        await until(pilot, lambda: plain(app, "gpu-c1", "state") == "OFFLINE")
        assert bar(app).is_open and bar(app).input.value == "qwen"
        await pilot.press(*" state=ONLINE")
        await until(pilot, lambda: t.visible_names == ["gpu-a1", "gpu-a2", "mac-studio-1"])
        await pilot.click("#fleet")  # below the rows: the table takes the focus, the bar stays
        assert t.has_focus and bar(app).is_open
        await pilot.press("escape")  # esc: the filter from before `/`
        assert not bar(app).is_open
        assert t.visible_names == ["gpu-a1", "gpu-a2", "gpu-c1"]
        assert t.selector is not None and t.selector.text == "tag=h100"

        await pilot.press("slash", "ctrl+u", *"rtx-desk-2")
        await until(pilot, lambda: t.visible_names == ["rtx-desk-2"])
        await pilot.press("enter")
        assert not bar(app).is_open and t.visible_names == ["rtx-desk-2"]
        assert "filter rtx-desk-2 (1/10)" in totals(app)


async def test_bare_word_highlights_the_matched_letters() -> None:
    app = sample_app()
    async with app.run_test(size=(200, 50)) as pilot:
        t = app.main.table
        before = t.get_cell("rtx-desk-2", "engines")
        assert not [s for s in before.spans if "underline" in str(s.style)]
        await pilot.press("slash", *"llama", "enter")
        cell = t.get_cell("rtx-desk-2", "engines")  # llamacpp·1
        marked = [cell.plain[s.start : s.end] for s in cell.spans if "underline" in str(s.style)]
        assert marked == ["llama"]
        node = t.get_cell("gpu-b1", "node")
        assert not [s for s in node.spans if "underline" in str(s.style)]
        await pilot.press("slash", "ctrl+u", *"gpub", "enter")  # fuzzy: g p u then b
        node = t.get_cell("gpu-b1", "node")
        marked = [node.plain[s.start : s.end] for s in node.spans if "underline" in str(s.style)]
        assert marked == ["gpu", "b"]
        assert t.visible_names == ["gpu-b1", "gpu-b2"]
        # what is on screen follows: the drawn line of gpu-b1 carries the underline
        line = t.render_line(1 + t.visible_names.index("gpu-b1"))
        assert any(seg.style and seg.style.underline and seg.text == "gpu" for seg in line)
        await pilot.press("escape")  # no filter: no highlight left behind
        node = t.get_cell("gpu-b1", "node")
        assert not [s for s in node.spans if "underline" in str(s.style)]
        # a model that matched leads the Models cell instead of hiding behind "+2"
        assert t.get_cell("gpu-c1", "models").plain.startswith("llama3.1:8b")
        await pilot.press("slash", *"qwen", "enter")
        models = t.get_cell("gpu-c1", "models")
        assert models.plain.startswith("qwen2.5-coder:7b") and models.plain.endswith(" +2")
        marked = [
            models.plain[s.start : s.end] for s in models.spans if "underline" in str(s.style)
        ]
        assert marked == ["qwen"]


async def test_sort_cycles_reverses_and_keeps_the_cursor() -> None:
    app = sample_app()
    async with app.run_test(size=(200, 50)) as pilot:
        t = app.main.table
        await pilot.press("down", "down")  # cursor on gpu-b1
        await pilot.press("s")  # first sortable column: node name, ascending
        assert t.sort_key == "node"
        assert t.visible_names == sorted(NAMES)
        assert t.cursor_name == "gpu-b1"
        assert t.header_label("node") == "Node▲"
        await pilot.press("S")
        assert t.visible_names == sorted(NAMES, reverse=True)
        assert t.cursor_name == "gpu-b1"
        for _ in range(len(t.widths)):  # role, state, why, engines... up to power
            await pilot.press("s")
            if t.sort_key == "power":
                break
        assert t.sort_key == "power" and t.sort_reverse  # watts: highest first
        assert t.visible_names[:3] == ["gpu-a1", "gpu-a2", "gpu-b2"]
        assert t.visible_names[-1] == "new-node-9"  # unknown power sorts last
        assert "sort power ▼" in totals(app)
        assert t.cursor_name == "gpu-b1"
        for _ in range(5):  # cost, audit, latency, seen, then back to config order
            await pilot.press("s")
        assert t.sort_key is None
        assert t.visible_names == NAMES


async def test_detail_screen_shows_everything_and_updates_live() -> None:
    source = SampleSource()
    app = sample_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("down", "down", "enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        screen = app.screen
        assert isinstance(screen, DetailScreen) and screen.node_name == "gpu-b1"
        await until(pilot, lambda: screen.audit_entries is not None)
        assert source.audit_calls == ["gpu-b1"]

        def text(id_: str) -> str:
            return shown(screen.query_one(id_, Static))

        assert "DEGRADED" in text("#d-header")
        assert "rack-b, l40s" in text("#d-header")
        assert "engine vllm down: connection refused" in text("#d-problems")
        assert text("#d-gpus").count("NVIDIA L40S") == 2
        assert "connection refused" in text("#d-engines")
        assert "llama3.1:8b" in text("#d-ledger") and "4.8G" in text("#d-ledger")
        assert "now 312 W" in text("#d-power")
        assert "restart" in text("#d-audit") and "denied" in text("#d-audit")

        source.update("gpu-b1", state=NodeState.OFFLINE, last_error="connection reset")
        await until(pilot, lambda: "OFFLINE" in text("#d-header"))
        assert "connection reset" in text("#d-problems")
        await pilot.press("space", "a")  # table keys do nothing behind the detail screen
        assert app.main.table.selected == set()

        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DetailScreen))
        assert app.main.table.cursor_name == "gpu-b1"
        assert plain(app, "gpu-b1", "state") == "OFFLINE"


async def test_detail_screen_shows_an_audit_failure() -> None:
    def broken(name: str, limit: int) -> list:
        raise ConnectionError("node unreachable")

    app = sample_app(SampleSource(audit=broken))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        screen = app.screen
        await until(pilot, lambda: screen.audit_error is not None)
        assert "node unreachable" in shown(screen.query_one("#d-audit", Static))


async def test_event_log_toggles_and_follows_the_stream() -> None:
    source = SampleSource()
    app = sample_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        log = app.main.query_one(EventLog)
        assert not log.display
        await pilot.press("e")
        assert log.display
        await until(pilot, lambda: len(log.lines) == 5)
        source.emit(FleetEvent(SAMPLE_NOW, "gpu-a1", "state", "ONLINE -> OFFLINE: boom"))
        source.emit(FleetEvent(SAMPLE_NOW, "gpu-a1", "snapshot", "noise"))
        await until(pilot, lambda: len(log.lines) == 6)
        assert "ONLINE -> OFFLINE: boom" in log.lines[-1].text
        await pilot.press("e")
        assert not log.display


async def test_help_screen_opens_and_closes() -> None:
    app = sample_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        body = shown(app.screen.query_one("#help-text", Static))
        assert "restart engine" in body and "gpu_mem" in body
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen))


async def test_q_quits() -> None:
    app = sample_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)


async def test_action_keys_post_targets_or_refuse_when_read_only() -> None:
    seen: list = []
    app = sample_app()
    async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
        await pilot.press("R", "escape")  # no selection: the cursor row; the modal cancels
        await pilot.press("down", "space", "down", "down", "space", "U", "escape")
        await pilot.pause()
    posted = {id(m): m for m in seen if isinstance(m, ActionRequested)}  # hook sees each hop
    actions = [(m.action, m.targets) for m in posted.values()]
    assert actions == [("restart", ["gpu-a1"]), ("unload", ["gpu-a2", "gpu-b2"])]

    seen.clear()
    app = sample_app(read_only=True)
    async with app.run_test(size=(120, 40), message_hook=seen.append, notifications=True) as pilot:
        for key in "RUPXT":
            await pilot.press(key)
        await pilot.pause()
        notes = [n.message for n in app._notifications]
        assert "read-only" in totals(app)
    assert not [m for m in seen if isinstance(m, ActionRequested)]
    assert len(notes) == 5 and all("read-only" in n for n in notes)


async def test_live_update_touches_only_changed_cells_and_keeps_state() -> None:
    source = SampleSource()
    app = sample_app(source, tick_s=0.05, min_refresh_s=0.01)
    async with app.run_test(size=(200, 50)) as pilot:
        t = app.main.table
        await pilot.press("down", "down", "down", "space", "s")  # select gpu-b2, sort by name
        before = (t.cursor_name, set(t.selected), t.sort_key)
        refreshes = app.refreshes
        source.update("gpu-b2", latency_ms=77.0)
        await until(pilot, lambda: app.refreshes > refreshes)
        assert plain(app, "gpu-b2", "latency") == " 77 ms"
        assert t.row_updates == 1  # only one row changed
        source.update("edge-lab-7", state=NodeState.ONLINE, last_seen=SAMPLE_NOW)
        await until(pilot, lambda: plain(app, "edge-lab-7", "state") == "ONLINE")
        assert plain(app, "edge-lab-7", "seen") == "0s ago"
        assert (t.cursor_name, set(t.selected), t.sort_key) == before
        assert t.row_count == 10


async def test_refreshes_are_coalesced_per_generation() -> None:
    source = SampleSource()
    app = sample_app(source, tick_s=0.05, min_refresh_s=0.2)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.3)
        start = app.refreshes
        for i in range(50):  # a burst: 50 generations before the view gets to run
            source.update("gpu-a1", latency_ms=float(i))
        await until(pilot, lambda: plain(app, "gpu-a1", "latency") == " 49 ms")
        await pilot.pause(0.3)
        assert app.refreshes - start == 1


async def test_nodes_added_and_removed_and_clock_driven_cells() -> None:
    now = [SAMPLE_NOW]
    source = SampleSource()
    app = sample_app(source, clock=lambda: now[0], tick_s=0.05, min_refresh_s=0.01)
    async with app.run_test(size=(200, 50)) as pilot:
        t = app.main.table
        assert plain(app, "gpu-a1", "seen") == "1s ago"
        now[0] += 120  # time passes, nothing changes: the Seen column still ages
        await until(pilot, lambda: plain(app, "gpu-a1", "seen") == "2m ago")
        views = sample_views()
        extra = replace(views[0], name="gpu-z9", version=1)
        source.put([*views[1:], extra])
        await until(pilot, lambda: t.visible_names[-1] == "gpu-z9")
        assert "gpu-a1" not in t.visible_names and t.row_count == 10


async def test_narrow_terminal_hides_low_priority_columns_and_resizes() -> None:
    app = sample_app()
    async with app.run_test(size=(80, 24)) as pilot:
        t = app.main.table
        shown = set(t.widths)
        assert {"sel", "node", "state", "power", "why", "gpu", "cpu"} <= shown
        assert not {"role", "models", "cost", "seen", "engines", "audit"} & shown
        assert sum(w + 1 for w in t.widths.values()) <= 80
        await pilot.press("down", "down", "space")
        await pilot.resize_terminal(200, 40)
        await until(pilot, lambda: "role" in t.widths)
        assert len(t.widths) == 16
        assert t.cursor_name == "gpu-b1" and t.selected == {"gpu-b1"}
        assert plain(app, "gpu-b1", "sel") == "✓"


async def test_thousand_rows_keep_cursor_and_stay_consistent() -> None:
    views = generated_views(1000)
    source = SampleSource(views=views, events=[])
    app = sample_app(source, tick_s=1.0, min_refresh_s=0.01)
    async with app.run_test(size=(200, 50)) as pilot:
        t = app.main.table
        assert t.row_count == 1000
        assert sum(w + 1 for w in t.widths.values()) <= 199  # room for the scrollbar
        t.move_cursor(row=500)
        await pilot.press("space")
        name = t.cursor_name
        assert name == "n0500"
        for v in views[::10]:  # 100 nodes change at once
            source.update(v.name, latency_ms=999.0)
        await until(pilot, lambda: plain(app, "n0990", "latency") == "999 ms")
        assert t.cursor_name == name and t.cursor_row == 500
        assert t.selected == {name}
        assert t.row_updates == 100
        await pilot.press("pagedown", "j")
        assert t.cursor_row > 500
        await pilot.press("slash", *"state=OFFLINE", "enter")
        await until(pilot, lambda: t.row_count < 1000)
        expected = [v.name for v in views if v.state is NodeState.OFFLINE]
        assert t.visible_names == expected


async def test_only_changed_rows_on_screen_are_drawn_again() -> None:
    """The table's cost follows what changed on screen, not the size of the fleet."""
    views = generated_views(1000)
    source = SampleSource(views=views, events=[])
    now = [SAMPLE_NOW]
    app = sample_app(source, clock=lambda: now[0], min_refresh_s=0.01, tick_s=0.05)
    async with app.run_test(size=(200, 50)) as pilot:
        t = app.main.table
        await pilot.pause()
        drawn = t.lines_rendered
        assert drawn == t.size.height - 1  # the rows that fit under the header, once
        now[0] += 120  # only the clock moves: the Seen cells change, nothing else is drawn
        await until(pilot, lambda: "2m ago" in t.render_line(1).text)
        assert t.lines_rendered == drawn
        for v in views[100:200]:  # 100 nodes change, none of them on screen
            source.update(v.name, latency_ms=999.0)
        await until(pilot, lambda: plain(app, "n0199", "latency") == "999 ms")
        await pilot.pause()
        assert t.row_updates == 100 and t.lines_rendered == drawn
        source.update("n0003", latency_ms=998.0)  # one on screen
        await until(pilot, lambda: t.row_updates == 1)
        await pilot.pause()
        assert t.lines_rendered == drawn + 1
        await pilot.press("down")  # the cursor leaves one row and lands on another
        await pilot.pause()
        assert t.lines_rendered == drawn + 3


async def test_paging_keeps_the_cursor_row_on_screen() -> None:
    views = generated_views(1000)
    app = sample_app(SampleSource(views=views, events=[]))
    async with app.run_test(size=(120, 40)) as pilot:
        t = app.main.table
        rows_on_screen = t.size.height - 1  # under the header
        await pilot.press("end")
        assert t.cursor_name == "n0999"
        assert t.scroll_offset.y == 1000 - rows_on_screen
        assert "n0999" in t.render_line(rows_on_screen).text  # the last line shows it
        await pilot.press("pageup")
        assert t.cursor_row == 999 - rows_on_screen
        assert "n0999" not in t.render_line(rows_on_screen).text
        await pilot.press("home")
        assert t.cursor_row == 0 and t.scroll_offset.y == 0
        await pilot.press("pagedown", "pagedown")
        assert t.cursor_row == 2 * rows_on_screen
        assert t.cursor_name in t.render_line(rows_on_screen).text


async def test_rows_that_move_are_repainted_where_they_land() -> None:
    """Sorted by power, a node whose power jumps moves to the top, on screen too."""
    source = SampleSource()
    app = sample_app(source, min_refresh_s=0.01)
    async with app.run_test(size=(120, 40)) as pilot:
        t = app.main.table
        t.sort_by("power")
        await pilot.pause()
        first = t.visible_names
        assert first[:3] == ["gpu-a1", "gpu-a2", "gpu-b2"]
        rows = [line.split()[0] for line in screen_lines(app)[1:4]]
        assert rows == first[:3]
        snap = next(v for v in source.snapshots() if v.name == "embed-1").snapshot
        snap.power.watts = 9000.0
        source.update("embed-1", snapshot=snap)
        await until(pilot, lambda: t.visible_names[0] == "embed-1")
        await pilot.pause()
        shown = [line.split()[0].lstrip("✓") for line in screen_lines(app)[1:11]]
        assert shown == t.visible_names[:10]
        assert t.visible_names[1:4] == first[:3]


async def test_header_click_sorts_and_a_second_click_reverses() -> None:
    app = sample_app()
    async with app.run_test(size=(200, 50)) as pilot:
        t = app.main.table
        at = list(t.widths).index("power")
        x = sum(w + 1 for k, w in t.widths.items() if list(t.widths).index(k) < at)
        await pilot.click("#fleet", offset=(x + 1, 0))
        assert t.sort_key == "power" and t.sort_reverse  # highest first
        assert t.visible_names[:3] == ["gpu-a1", "gpu-a2", "gpu-b2"]
        assert t.header_label("power") == f"Power 0{TO}2 kW▼"  # with the fleet's scale
        await pilot.pause()
        assert "sort power ▼" in totals(app)
        await pilot.click("#fleet", offset=(x + 1, 0))
        assert t.sort_key == "power" and not t.sort_reverse
        await pilot.click("#fleet", offset=(0, 0))  # the selection mark: not sortable
        assert t.sort_key == "power"


async def test_clicking_the_cursor_row_opens_its_detail() -> None:
    app = sample_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.click("#fleet", offset=(5, 2))
        assert app.main.table.cursor_name == "gpu-a2" and app.screen is app.main
        await pilot.click("#fleet", offset=(5, 2))
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        assert app.screen.node_name == "gpu-a2"


async def test_mouse_click_moves_the_cursor() -> None:
    app = sample_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.click("#fleet", offset=(5, 4))  # header is line 0: line 4 is the 4th node
        assert app.main.table.cursor_name == "gpu-b2"


async def test_notes_overlay_the_state_cell_for_action_progress() -> None:
    app = sample_app()
    async with app.run_test(size=(120, 40)) as pilot:
        t = app.main.table
        t.set_note("gpu-a1", "running…")
        assert plain(app, "gpu-a1", "state") == "running…"
        t.set_note("gpu-a1", "failed", style="bold red")
        assert plain(app, "gpu-a1", "state") == "failed"
        t.set_note("gpu-a1", None)
        await pilot.pause()
        assert plain(app, "gpu-a1", "state") == "ONLINE"


async def test_the_header_shows_the_sort_arrow_as_it_moves() -> None:
    """What the terminal shows, not what render_line would draw: the header must be repainted."""
    app = sample_app()
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        assert "▲" not in screen_lines(app)[0]
        await pilot.press("s")
        await pilot.pause()
        assert "Node▲" in screen_lines(app)[0]
        await pilot.press("S")
        await pilot.pause()
        assert "Node▼" in screen_lines(app)[0]
        await pilot.press("s")  # next column: the arrow leaves Node
        await pilot.pause()
        header = screen_lines(app)[0]
        assert "Node " in header and "Role▲" in header


async def test_an_ok_note_never_hides_a_degraded_node() -> None:
    from fleettui.aggregator.dispatch import Progress
    from fleettui.views.tui.messages import ActionProgress

    source = SampleSource()
    app = sample_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.main.table
        table.post_message(ActionProgress("gpu-a1", Progress.OK))
        table.post_message(ActionProgress("gpu-a2", Progress.FAILED))
        await until(pilot, lambda: plain(app, "gpu-a1", "state") == "✓ ok")
        source.update("gpu-a1", state=NodeState.DEGRADED, reasons=["engine vllm down"])
        source.update("gpu-a2", state=NodeState.DEGRADED, reasons=["engine vllm down"])
        await until(pilot, lambda: plain(app, "gpu-a1", "state") == "DEGRADED")
        assert plain(app, "gpu-a2", "state") == "✗ failed"  # a failure stays in view
        table.post_message(ActionProgress("gpu-a1", Progress.RUNNING))  # a new action's shows
        await until(pilot, lambda: plain(app, "gpu-a1", "state") == "⟳ busy")


async def test_a_confirmed_action_goes_through_the_source_and_its_progress_reaches_the_rows() -> (
    None
):
    """The dashboard's one door: the action is the source's `act`; progress and the outcome
    come back as messages the table paints and the app sums up."""
    from fleettui.views.tui.screens.confirm import ActionChoice

    source = SampleSource()
    app = sample_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        app._confirmed(ActionChoice("restart", ["gpu-a1", "gpu-b1"], "vllm", None))
        await until(pilot, lambda: app.bulk.last is not None)
        ((names, request),) = source.acted
        assert names == ["gpu-a1", "gpu-b1"]
        assert (request.action, request.engine, request.model) == ("restart", "vllm", None)
        assert plain(app, "gpu-a1", "state") == "✓ ok"
        assert plain(app, "gpu-b1", "state") == "DEGRADED"  # an ok note yields to it
        assert "gpu-b1" in app.main.table.notes and "gpu-a2" not in app.main.table.notes
        assert app.main.table.selected == set()  # nothing failed: nothing left for a retry
        assert any("restart vllm: all 2 ok" in str(n.message) for n in app._notifications)


def _capture_choice(app: FleetApp) -> list:
    chosen: list = []
    app._confirmed = chosen.append  # type: ignore[method-assign]
    return chosen


async def test_unload_goes_only_to_the_nodes_that_hold_the_model() -> None:
    from fleettui.views.tui.screens.confirm import ConfirmActionScreen

    app = sample_app()
    chosen = _capture_choice(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("space", "down", "space", "down", "space")  # gpu-a1, gpu-a2, gpu-b1
        await pilot.press("U")
        await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        assert app.screen.engine == "vllm"  # on all three
        await pilot.press("tab", "down", "down")  # the model list: the one only gpu-a2 holds
        assert app.screen.model == "meta-llama/Llama-3.1-8B-Instruct"
        summary = shown(app.screen.query_one("#confirm-summary", Static))
        assert "on 1 node;" in summary and "2 without meta-llama/Llama-3.1-8B-Instruct" in summary
        await pilot.press("y")
        await until(pilot, lambda: bool(chosen))
    assert chosen[0].targets == ["gpu-a2"]


async def test_start_preselects_the_engine_that_is_down() -> None:
    from fleettui.views.tui.screens.confirm import ConfirmActionScreen

    app = sample_app()
    chosen = _capture_choice(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("down", "down", "space", "down", "down", "space", "down", "space")
        assert sorted(app.main.table.selected) == ["embed-1", "gpu-b1", "mac-studio-1"]
        await pilot.press("T")  # ollama runs on all three; vllm is down on gpu-b1
        await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        assert app.screen.engine == "vllm"
        first = app.screen.query_one("#confirm-engine", OptionList).get_option_at_index(0)
        assert "down on 1" in str(first.prompt)
        await pilot.press("y")
        await until(pilot, lambda: bool(chosen))
    assert chosen[0].engine == "vllm"


async def test_no_color_keeps_every_cell_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR turns colours into greys; none may end up on a grey it cannot be read on (the
    cost sparkline was grey 59 on grey 39)."""
    from fleettui.views.tui.nocolor import MIN_CONTRAST

    monkeypatch.setenv("NO_COLOR", "1")
    app = sample_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        t = app.main.table
        bg = t.background_colors[1]
        checked = 0
        for y in range(1, 1 + t.row_count):
            segments = list(t.render_line(y))
            for f in app.get_line_filters():
                segments = f.apply(segments, bg)
            for seg in segments:
                style = seg.style
                if not seg.text.strip() or style is None or style.color is None:
                    continue
                back = style.bgcolor.triplet.red if style.bgcolor else bg.monochrome.r
                assert abs(style.color.triplet.red - back) >= MIN_CONTRAST, (y, seg)
                checked += 1
        assert checked > 50


def test_audit_table_shows_intents_and_their_outcomes() -> None:
    from fleettui.testing.sample import sample_audit
    from fleettui.views.tui.screens.detail import audit

    base = sample_audit("n", 1)[0]
    rows = [
        base.model_copy(update={"seq": 7, "status": "started"}),
        base.model_copy(update={"seq": 8, "status": "ok", "ref": 7}),
        base.model_copy(update={"seq": 9, "status": "started"}),
        base.model_copy(update={"seq": 10, "status": "interrupted", "ref": 9, "http_status": 0}),
    ]
    console = Console(file=io.StringIO(), width=140, color_system="truecolor", record=True)
    console.print(audit(rows, None, lambda ts: "12:00", SAMPLE_NOW))
    text = console.export_text()
    assert "ok ←7" in text and "interrupted ←9" in text and text.count("started") == 2
    styles = {
        seg.text.strip(): str(seg.style)
        for seg in console.render(audit(rows, None, lambda ts: "12:00", SAMPLE_NOW))
        if seg.text.strip() in ("ok ←7", "started", "interrupted ←9")
    }
    assert styles == {"ok ←7": "green", "started": "yellow", "interrupted ←9": "bold red"}


async def test_q_goes_back_from_the_detail_screen_and_quits_only_from_the_table() -> None:
    app = sample_app(SampleSource())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        await pilot.press("q")
        await until(pilot, lambda: not isinstance(app.screen, DetailScreen))
        assert app.is_running and app.screen is app.main
        await pilot.press("R")  # the confirm modal: q cancels it, sends nothing
        await until(pilot, lambda: app.screen is not app.main)
        await pilot.press("q")
        await until(pilot, lambda: app.screen is app.main)
        assert app.is_running
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
