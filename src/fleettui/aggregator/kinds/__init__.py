"""Node kinds: how fleet reads and acts on each sort of node, one module per kind.

`fleettui` (our agent: snapshot, event stream, audit chain, actions), `asiai` (an asiai node
API: snapshot and fleet commands) and `ollama` (a bare Ollama server: snapshot and unload).
Each implements `base.NodeKind`; adding a kind is one module plus its line in `KINDS` (and its
name in config.NodeKind, so fleet configs may use it).
"""

from __future__ import annotations

from fleettui.aggregator.kinds import asiai, ollama
from fleettui.aggregator.kinds import fleettui as agent
from fleettui.aggregator.kinds.base import NodeKind

KINDS: dict[str, NodeKind] = {k.name: k for k in (agent.KIND, asiai.KIND, ollama.KIND)}


def kind_for(name: str) -> NodeKind:
    """The kind named in a node's config; KeyError names the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown node kind {name!r}; known: {', '.join(KINDS)}") from None
