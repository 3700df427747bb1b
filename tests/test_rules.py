"""contrib/fleettui.rules.yml: Prometheus accepts it, and it names only metrics fleet exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "contrib" / "fleettui.rules.yml"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_promtool_accepts_the_rules() -> None:
    done = _check(RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_promtool_refuses_a_broken_expression(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rules.yml"
    bad.write_text(RULES.read_text().replace("fleet_up == 0", "fleet_up ==", 1))
    assert _check(bad).returncode != 0


def test_every_metric_in_the_rules_is_documented_as_exported() -> None:
    documented = set(
        re.findall(r"^\| `(fleet_\w+)`", (ROOT / "docs/prometheus.md").read_text(), re.M)
    )
    exprs = re.findall(r"^\s+expr: (.*)$", RULES.read_text(), re.M)
    used = {m for e in exprs for m in re.findall(r"\bfleet_\w+", e)}
    assert used and used <= documented, used - documented
