"""The real parts some tests need that take a build or a download: the llama-server binary
(`scripts/llama-server`) and the real GGUF (`scripts/test-model`), both kept in the XDG cache.

Missing locally, the test skips saying which script makes it; under CI (CI=true) it fails,
so CI cannot pass without running it (.ci/run makes both first).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cached(script: str) -> Path | None:
    """What `scripts/SCRIPT --cached` prints: the built/assembled file, or None (never builds)."""
    r = subprocess.run(
        [str(ROOT / "scripts" / script), "--cached"], capture_output=True, text=True, check=False
    )
    return Path(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip() else None


def need(*scripts: str) -> list[Path]:
    """The files SCRIPTS make, or skip (fail under CI) naming the ones not made yet."""
    found = {s: cached(s) for s in scripts}
    missing = [f"scripts/{s}" for s, p in found.items() if p is None]
    if missing:
        why = f"not in the XDG cache yet: run {' and '.join(missing)} once"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; CI must run this test (.ci/run makes them)")
        pytest.skip(why)
    return [p for p in found.values() if p is not None]
