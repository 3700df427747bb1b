"""Compatibility names for the read side of the asiai and ollama kinds (see `kinds/`).

NodeWorker still calls these by name; new code asks `kinds.kind_for(name)` instead.
"""

from __future__ import annotations

import httpx

from fleettui.aggregator.kinds.asiai import KIND as ASIAI
from fleettui.aggregator.kinds.asiai import asiai_snapshot
from fleettui.aggregator.kinds.ollama import KIND as OLLAMA
from fleettui.wire import NodeSnapshot

__all__ = ["asiai_snapshot", "fetch_asiai", "fetch_ollama"]


async def fetch_asiai(client: httpx.AsyncClient, url: str, timeout_s: float) -> NodeSnapshot:
    return await ASIAI.fetch_snapshot(client, url, timeout_s)


async def fetch_ollama(client: httpx.AsyncClient, url: str, timeout_s: float) -> NodeSnapshot:
    return await OLLAMA.fetch_snapshot(client, url, timeout_s)
