"""What the wheel ships: the package without its test fixtures (built in-process by hatchling,
the build backend pyproject names, so no network and no build isolation)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from hatchling.builders.wheel import WheelBuilder

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_the_package_but_no_fixtures(tmp_path: Path) -> None:
    [wheel] = WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"])
    names = zipfile.ZipFile(wheel).namelist()
    assert "fleettui/commands/io.py" in names and "fleettui/views/tui/app.tcss" in names
    assert not [n for n in names if n.startswith("fleettui/testing/")]
    assert (ROOT / "src/fleettui/testing/sample.py").exists()  # excluded, not missing
