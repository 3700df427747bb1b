"""Docs that are generated from code must match the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_agent_api_doc_matches_wire_models() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_agent_api", ROOT / "scripts" / "gen_agent_api.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    committed = (ROOT / "docs" / "agent-api.md").read_text()
    assert committed == mod.render(), "run: python scripts/gen_agent_api.py"
    for key in ("schema_version", "energy_since", "head_hash", "output_tail", "prev_hash"):
        assert key in committed


def test_security_threat_table_names_tests_that_exist() -> None:
    """Each threat's "proven by" cell must name a real test, or the table proves nothing."""
    import re

    text = (ROOT / "docs" / "security.md").read_text()
    named = set(re.findall(r"`(test_\w+\.py)::(\w+)`", text))
    assert len(named) > 20
    for file, test in sorted(named):
        path = ROOT / "tests" / file
        assert path.exists() and f"def {test}(" in path.read_text(), f"{file}::{test}"
