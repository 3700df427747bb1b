"""Write docs/mcp-tools.json: every tool `fleet mcp` lists (name, title, description, input and
output schemas, annotations) and its resources, as an MCP client sees them.

Run `python scripts/gen_mcp_tools.py` after changing a tool or a model its answers use (the
wire's included); tests/test_mcp.py fails when the committed file no longer matches, so a
change to what agents are told is a deliberate one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fleettui.views.mcp.server import build_server  # noqa: E402
from fleettui.views.mcp.state import FleetState  # noqa: E402

OUT = ROOT / "docs" / "mcp-tools.json"


class _NoFleet:
    """A reader with no nodes: the listing does not depend on the fleet."""

    names: list[str] = []

    def changed(self, known: Mapping[str, int]) -> list:
        return []

    def events(self, kinds: Iterable[str] | None = None):  # type: ignore[no-untyped-def]
        raise NotImplementedError


async def listing() -> dict:
    server = build_server(FleetState(_NoFleet(), stale_after_s=10.0))
    dump = {"mode": "json", "by_alias": True, "exclude_none": True}
    return {
        "tools": [t.model_dump(**dump) for t in await server.list_tools()],
        "resources": [r.model_dump(**dump) for r in await server.list_resources()],
        "resource_templates": [
            r.model_dump(**dump) for r in await server.list_resource_templates()
        ],
    }


def render() -> str:
    return json.dumps(anyio.run(listing), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT.relative_to(ROOT)}")
