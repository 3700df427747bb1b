"""The MCP server: the tools and resources over FleetState, on the official SDK (`mcp` 2.x).

Every tool is read-only and closed-world (it reads what the aggregator already holds, it
reaches nothing else); arguments are typed and bounded, so the SDK's schema says what a
call may carry and refuses the rest with a reason. A call that cannot be answered (an
unknown node, a bad filter) is a tool error with the reason in its text, which is how MCP
tells a model it can correct itself (spec 2025-11-25, SEP-1303).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from fleettui import __version__
from fleettui.aggregator.placement import Strategy
from fleettui.capacity.fit import FitRequest
from fleettui.views.mcp import documents as docs
from fleettui.views.mcp.models import (
    EventKind,
    Events,
    FitDocument,
    ModelSearch,
    NodeDetail,
    NodeList,
    PlaceDocument,
    Summary,
)
from fleettui.views.mcp.state import FleetState
from fleettui.wire import CTX_MAX, ENGINE_PATTERN, MODEL_PATTERN, PARALLEL_MAX, KvType

TOP_K = 10  # rank_placement's: the nodes an agent would choose among
FIT_PAGE = 50  # check_fit's: an answer with its breakdown is about 1.5 KB
PAGE = 100  # the default page: a fleet of 1000 in full is 1.3 MB of JSON, past any context

INSTRUCTIONS = (
    "fleettui watches a fleet of LLM-inference machines (GPUs, engines such as Ollama, "
    "llama.cpp, vLLM, LM Studio, MLX; the models resident on each and on disk; power, cost "
    "and audit state). Every tool is read-only: nothing here can change a node. Each answer "
    "says when it was observed and how old each node's figures are (`freshness`); a stale "
    "node's figures are its last known ones. Start with fleet_summary or list_nodes."
)

Tool = TypeVar("Tool", bound=Callable[..., Any])
NodeName = Annotated[str, Field(min_length=1, max_length=63, description="A node's name.")]
FitModel = Annotated[
    str,
    Field(pattern=MODEL_PATTERN, description="The model's name as the engines call it."),
]
# The rest of a fit question, as check_fit and rank_placement both take it.
Ctx = Annotated[int | None, Field(ge=1, le=CTX_MAX, description="Context per slot, tokens.")]
Parallel = Annotated[int | None, Field(ge=1, le=PARALLEL_MAX, description="Parallel slots.")]
KvArg = Annotated[KvType | None, Field(description="KV cache type.")]
EngineArg = Annotated[
    str | None, Field(pattern=ENGINE_PATTERN, description="Judge for this engine (ollama...).")
]
ModelName = Annotated[
    str,
    Field(min_length=1, max_length=200, description="A model name, e.g. llama3.1:8b."),
]


def _tool(mcp: MCPServer, state: FleetState, title: str) -> Callable[[Tool], Tool]:
    """Register a read-only, closed-world tool; its docstring, on one line, describes it.
    Each call tells `state` an agent is at work (it keeps its copies current meanwhile)."""

    def register(fn: Tool) -> Tool:
        @functools.wraps(fn)
        async def touching(*args: Any, **kwargs: Any) -> Any:
            state.touched()
            try:
                return await fn(*args, **kwargs)
            finally:
                state.touched()  # a pause counts from a call's end (collect_between_calls)

        mcp.add_tool(
            touching,
            title=title,
            description=" ".join((fn.__doc__ or "").split()),
            annotations=ToolAnnotations(title=title, read_only_hint=True, open_world_hint=False),
        )
        return fn

    return register


def build_server(state: FleetState) -> MCPServer:
    """The server with its tools and resources, reading `state` (served by the caller)."""
    mcp = MCPServer(
        "fleettui",
        title="fleettui",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )

    @_tool(mcp, state, "List nodes")
    async def list_nodes(
        filter: Annotated[
            str | None,
            Field(
                max_length=1000,
                description="Keep only the nodes this expression selects, in the grammar of "
                "the dashboard's `/` and `fleet bulk --filter`: fields name role tag state "
                "engine model (text) and power cost gpu_mem latency (numbers); operators "
                "= != > < >= <= ~ (regex); and, or, not, parentheses; a bare word searches "
                "name, role, tags, engines and models (fuzzy). E.g. "
                "'state=ONLINE and engine=vllm', 'gpu_mem<50', 'llama state=ONLINE'.",
            ),
        ] = None,
        limit: Annotated[
            int, Field(ge=1, le=1000, description="At most this many nodes per answer.")
        ] = PAGE,
        offset: Annotated[int, Field(ge=0, le=1_000_000, description="Skip this many.")] = 0,
    ) -> NodeList:
        """The nodes (all, or those the filter selects), a page at a time in config order,
        with the dashboard table's facts: state and why, freshness, power (and its source),
        7-day cost, GPU memory, the model-memory budget, engines and their resident models,
        audit chain status. `matched` and `next_offset` say how many more there are."""
        try:
            return docs.list_nodes(state, filter, limit, offset)
        except docs.Refused as exc:
            raise ToolError(str(exc)) from None

    @_tool(mcp, state, "Get one node")
    async def get_node(name: NodeName) -> NodeDetail:
        """One node in full: host (OS, CPU, memory), GPUs (with per-process memory), engines
        (settings, models on disk), the residency ledger (each resident model's size, share
        on GPU, context, slots, KV type, expiry, busy, and the source of each figure), the
        memory budget, power and cost, problems and the audit chain status."""
        try:
            return docs.get_node(state, name)
        except docs.Refused as exc:
            raise ToolError(str(exc)) from None

    @_tool(mcp, state, "Find a model")
    async def find_model(
        model: ModelName,
        limit: Annotated[
            int, Field(ge=1, le=1000, description="At most this many places per answer.")
        ] = PAGE,
    ) -> ModelSearch:
        """Where a model is resident or on disk across the fleet, with its context and slots
        (on disk: the engine's defaults for a load), resident places first. Exact name
        matches (ignoring case) when there are any, otherwise every name containing the
        text; `matched` says how many places there are in all."""
        try:
            return docs.find_model(state, model, limit)
        except docs.Refused as exc:
            raise ToolError(str(exc)) from None

    @_tool(mcp, state, "Check a fit")
    async def check_fit(
        model: FitModel,
        node: Annotated[
            str | None,
            Field(min_length=1, max_length=63, description="Only this node (default: all)."),
        ] = None,
        ctx: Ctx = None,
        parallel: Parallel = None,
        kv_type: KvArg = None,
        engine: EngineArg = None,
        limit: Annotated[
            int, Field(ge=1, le=1000, description="At most this many node answers.")
        ] = FIT_PAGE,
    ) -> FitDocument:
        """Would the model fit on each node beside what is loaded there, and if not, what
        would have to be evicted: the estimator's verdict (fits, evict, no, unknown), the
        breakdown of the memory it needs (weights, KV cache, buffers, each with its formula
        and the source of its input), free memory, margin and the reasons in words. Exactly
        `fleet fit MODEL --json`, its best `limit` answers (fits first) and `nodes_total`.
        Unset arguments take the engine's defaults."""
        try:
            request = FitRequest(model, ctx, parallel, kv_type, engine)
            return docs.check_fit(state, request, node, limit)
        except docs.Refused as exc:
            raise ToolError(str(exc)) from None

    @_tool(mcp, state, "Rank placements")
    async def rank_placement(
        model: FitModel,
        ctx: Ctx = None,
        parallel: Parallel = None,
        kv_type: KvArg = None,
        engine: EngineArg = None,
        strategy: Annotated[
            Strategy,
            Field(
                description="binpack: the tightest node that leaves the margin (keeps big "
                "nodes free); spread: the emptiest node."
            ),
        ] = "binpack",
        top_k: Annotated[
            int, Field(ge=1, le=1000, description="The best this many nodes.")
        ] = TOP_K,
    ) -> PlaceDocument:
        """Where to put the model: every node's fit turned into a score 0-100 with its
        reasons (the verdict first; then headroom by strategy; penalties for CPU offload,
        evictions, queued requests, heat, power caps, DEGRADED nodes; a bonus when the model
        is already on the node's disk), best first, deterministic. Exactly `fleet place
        MODEL --json --top K`. It only ranks: nothing is loaded."""
        try:
            request = FitRequest(model, ctx, parallel, kv_type, engine)
            return docs.rank_placement(state, request, strategy, top_k)
        except docs.Refused as exc:
            raise ToolError(str(exc)) from None

    @_tool(mcp, state, "Fleet summary")
    async def fleet_summary() -> Summary:
        """The fleet at a glance: nodes by state and how many are stale, total power and
        cost, free model memory by budget kind (gpu, unified, ram), the largest model by
        bytes that fits anywhere now, resident models and engines down."""
        return docs.fleet_summary(state)

    @_tool(mcp, state, "Recent events")
    async def recent_events(
        limit: Annotated[int, Field(ge=1, le=500, description="At most this many.")] = 50,
        kinds: Annotated[
            list[EventKind] | None,
            Field(max_length=4, description="Only these kinds (default: all)."),
        ] = None,
    ) -> Events:
        """What happened since this server started, newest first: state transitions
        (ONLINE -> OFFLINE and why), actions run on nodes (by anyone), audit entries and
        errors such as a BROKEN audit chain."""
        return docs.recent_events(state, limit, kinds)

    @mcp.resource(
        "fleet://nodes",
        name="nodes",
        description="Every node with the table's facts (list_nodes without a filter).",
        mime_type="application/json",
    )
    async def nodes_resource() -> str:
        return docs.list_nodes(state).model_dump_json()

    @mcp.resource(
        "fleet://nodes/{name}",
        name="node",
        description="One node in full (get_node).",
        mime_type="application/json",
    )
    async def node_resource(name: str) -> str:
        try:
            return docs.get_node(state, name).model_dump_json()
        except docs.Refused as exc:
            raise ResourceError(str(exc)) from None

    return mcp
