"""docs/architecture.md lists every import arrow of the package: checked against the real graph."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| `(fleettui(?:\.[\w.]+)?)` \| [^|]* \|\s*([^|]*?)\s*\|$")


def documented() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = {}
    for line in text.splitlines():
        if m := ROW.match(line.strip()):
            rows[m[1]] = {x.strip() for x in m[2].split(",") if x.strip()}
    return rows


def real(parts: list[str]) -> tuple[dict[str, set[str]], set[str]]:
    """Arrows between the parts (and to third-party packages), and modules no part holds."""
    graph = grimp.build_graph("fleettui", include_external_packages=True)

    def part(module: str) -> str | None:
        if module != "fleettui" and not module.startswith("fleettui."):
            top = module.split(".")[0]
            return None if top in sys.stdlib_module_names else top
        held = [p for p in parts if module == p or module.startswith(p + ".")]
        return max(held, key=len)

    arrows: dict[str, set[str]] = {p: set() for p in parts}
    orphans = set()
    for module in graph.modules:
        src = part(module)
        if src is None or not src.startswith("fleettui"):
            continue
        if src == "fleettui" and module != "fleettui":
            orphans.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            dst = part(imported)
            if dst is not None and dst != src:
                arrows[src].add(dst.removeprefix("fleettui.") if dst != "fleettui" else dst)
    return arrows, orphans


def test_the_architecture_table_lists_every_import_arrow() -> None:
    doc = documented()
    assert len(doc) > 10
    arrows, orphans = real(list(doc))
    assert not orphans, f"modules with no row in docs/architecture.md: {sorted(orphans)}"
    for part in doc:
        missing, extra = arrows[part] - doc[part], doc[part] - arrows[part]
        assert not missing and not extra, f"{part}: undocumented {missing}, not real {extra}"
