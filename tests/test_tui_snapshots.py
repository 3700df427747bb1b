"""Snapshot tests: the fixed-data scenes (main, detail, filter, help) at 120x40 and 80x24.

The same scenes feed `scripts/screenshots`. Update deliberately, after looking at the report:
`pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import pytest

from fleettui.testing.scenes import SCENES, Scene


@pytest.mark.parametrize("scene", SCENES, ids=[s.name for s in SCENES])
def test_scene(scene: Scene, snap_compare) -> None:
    assert snap_compare(scene.app(), terminal_size=scene.size, run_before=scene.drive)


def test_scenes_cover_both_sizes() -> None:
    for kind in ("main", "detail", "filter", "help", "gpus", "columns", "nocolor", "colors16"):
        sizes = {s.size for s in SCENES if s.name.split("_")[0] == kind}
        assert {(120, 40), (80, 24)} <= sizes, kind
    for kind in ("main", "gpus", "filter", "columns", "nocolor", "colors16"):
        sizes = {s.size for s in SCENES if s.name.split("_")[0] == kind}
        assert {(80, 24), (200, 50)} <= sizes, kind
