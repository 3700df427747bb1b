"""The documents the MCP tools return: pydantic models, so each tool's output schema is
generated from the one definition (the wire's own models wherever a figure comes from the
node) and a change to it shows in tests/data/mcp-tools.json."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fleettui.wire import (
    Budget,
    Cost,
    Cpu,
    DiskModel,
    EngineSettings,
    Gpu,
    Memory,
    Model,
    ModelMeta,
    NodeInfo,
    Power,
)

StateName = Literal["INITIALIZING", "ONLINE", "DEGRADED", "OFFLINE"]
ChainName = Literal["ok", "BROKEN", "?", "n/a"]
EventKind = Literal["state", "action", "audit", "error"]
Place = Literal["resident", "disk"]


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Freshness(Doc):
    """How old a node's figures are; every per-node part of every answer carries it."""

    state: StateName
    collected_at: float | None = Field(
        description="When the node's agent collected the snapshot shown (Unix seconds)."
    )
    age_s: float | None = Field(description="observed_at - collected_at: the figures' age.")
    last_seen: float | None = Field(description="When fleet last got a good answer (Unix).")
    stale: bool = Field(
        description="True when the node is not answering now or its figures are older than "
        "stale_after_s (the node's values are its last known ones)."
    )


class Audit(Doc):
    chain: ChainName = Field(
        description="ok: the node's hash-chained audit log verified against fleet's pin; "
        "BROKEN: rewritten or truncated; ?: not checked yet; n/a: the node keeps none."
    )
    detail: str | None = None
    seq: int | None = Field(None, description="The newest audit entry's sequence number.")


class EngineRow(Doc):
    name: str
    status: str
    models: list[str] = Field(description="Resident models (empty while the engine is down).")


class BudgetRow(Doc):
    kind: Literal["gpu", "unified", "ram"]
    total_mb: float
    free_mb: float
    limit: str = Field(description="What sets total_mb (its source): 'GPU memory'...")


class NodeRow(Doc):
    """One node as the dashboard's table shows it."""

    name: str
    kind: str = Field(description="fleettui (fleet's agent), asiai or ollama: what answers.")
    role: str
    tags: list[str]
    freshness: Freshness
    reasons: list[str] = Field(description="Why the node is DEGRADED or OFFLINE.")
    latency_ms: float | None
    stream: bool = Field(description="The node's event stream delivers (pushed updates).")
    hostname: str | None
    simulated: bool
    power_w: float | None
    power_scope: str | None = Field(description="What power_w covers: gpu, gpu+cpu, wall...")
    power_source: str | None = Field(description="How it is measured: nvml-energy, rapl...")
    cost_7d: float | None
    currency: str | None
    gpus: int
    gpu_mem_used_mb: float | None
    gpu_mem_total_mb: float | None
    budget: BudgetRow | None = Field(description="Memory a model can use (schema-2 agents).")
    engines: list[EngineRow]
    audit: Audit


class NodeList(Doc):
    observed_at: float = Field(description="When this answer was built (Unix seconds).")
    stale_after_s: float
    filter: str | None
    total: int = Field(description="Nodes in the fleet.")
    matched: int = Field(description="Nodes the filter selects (all of them without one).")
    offset: int
    next_offset: int | None = Field(
        description="Where the next page starts (call again with offset=next_offset); "
        "None on the last page."
    )
    nodes: list[NodeRow]


class Host(Doc):
    info: NodeInfo
    cpu: Cpu
    memory: Memory


class EngineDetail(Doc):
    name: str
    url: str
    status: str
    version: str | None
    error: str | None
    settings: EngineSettings | None
    pids: list[int]
    available: list[DiskModel] = Field(description="On disk, not loaded.")


class LedgerLine(Model):
    """A resident model (the wire's `Model`) and the engine holding it; `sources` says per
    figure whether the engine reported it, fleet measured it or it is estimated."""

    engine: str


class NodeDetail(Doc):
    observed_at: float
    stale_after_s: float
    name: str
    kind: str
    url: str
    role: str
    tags: list[str]
    freshness: Freshness
    reasons: list[str]
    last_error: str | None
    latency_ms: float | None
    stream: bool
    host: Host | None = Field(description="None until the node first answered.")
    gpus: list[Gpu]
    engines: list[EngineDetail]
    ledger: list[LedgerLine] = Field(description="Every resident model, engine by engine.")
    budget: Budget | None
    power: Power | None
    cost: Cost | None
    problems: list[str]
    audit: Audit


class ModelPlace(Doc):
    node: str
    freshness: Freshness
    engine: str
    engine_status: str
    name: str = Field(description="The model's name as the engine reports it.")
    where: Place
    size_mb: float | None
    vram_mb: float | None = Field(description="Of size_mb, on the GPU (resident models).")
    quant: str | None
    ctx: int | None = Field(
        description="Resident: its context per slot; disk: the engine's default context for a load."
    )
    parallel: int | None = Field(description="Resident: its slots; disk: the engine's default.")
    kv_type: str | None
    busy: bool | None
    expires_at: float | None
    sources: dict[str, str] = Field(
        description="Per figure: reported (by the engine), measured or estimated."
    )


class ModelSearch(Doc):
    observed_at: float
    stale_after_s: float
    model: str
    exact: bool = Field(
        description="True when some name equals the query (case-insensitive); "
        "otherwise the matches are names that contain it."
    )
    matched: int = Field(description="Places found; `matches` holds the first `limit`.")
    matches: list[ModelPlace] = Field(description="Resident first, then on disk, by node.")


class StateCounts(Doc):
    INITIALIZING: int = 0
    ONLINE: int = 0
    DEGRADED: int = 0
    OFFLINE: int = 0


class MemoryByKind(Doc):
    nodes: int
    total_mb: float
    free_mb: float


class Largest(Doc):
    node: str
    free_bytes: int = Field(
        description="A model needing up to this many bytes (weights, KV "
        "cache and buffers) fits there now, without evicting anything."
    )
    budget_kind: Literal["gpu", "unified", "ram"]
    limit: str


class Summary(Doc):
    observed_at: float
    stale_after_s: float
    nodes: int
    states: StateCounts
    stale: int = Field(description="Nodes whose figures are stale (see list_nodes).")
    power_w: float = Field(description="Sum over the nodes that report power.")
    power_nodes: int = Field(description="How many nodes power_w covers.")
    cost_7d: dict[str, float] = Field(description="7-day cost per currency.")
    cost_today: dict[str, float]
    free_by_kind: dict[str, MemoryByKind] = Field(
        description="Model memory per budget kind (gpu, unified, ram) over fresh nodes."
    )
    largest_fit: Largest | None = Field(
        description="The node with the most free model memory (fresh nodes only): the "
        "largest model by bytes that fits anywhere now."
    )
    resident_models: int
    engines_down: int


class Event(Doc):
    ts: float
    node: str
    kind: EventKind
    summary: str
    from_state: StateName | None = None
    to_state: StateName | None = None


class Events(Doc):
    observed_at: float
    since: float = Field(description="When this server began recording events (Unix).")
    kept: int = Field(description="How many events the server keeps (the oldest go first).")
    events: list[Event] = Field(description="Newest first.")


# --- check_fit: `fleet fit --json`'s document (aggregator/fitwatch.py fit_document, from
# capacity.fit's Fit.to_json); tests/test_mcp.py holds the two equal for the same fleet.


class FitTerm(Doc):
    name: str
    bytes: int
    formula: str = Field(description="How the bytes were worked out, with the numbers.")
    source: str = Field(description="Where its input came from: reported, measured...")
    where: Literal["budget", "host"]


class FitEstimate(Doc):
    total_bytes: int | None
    host_bytes: int = Field(description="Host RAM beside a GPU budget.")
    label: Literal["exact", "heuristic"]
    missing: list[str] = Field(description="Inputs it lacked (then total_bytes may be None).")
    notes: list[str]
    problems: list[str] = Field(description="Why the engine would refuse the load anyway.")
    terms: list[FitTerm]


class FitAnswer(Doc):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: int = Field(alias="schema", description="This document's version.")
    node: str
    model: str
    verdict: Literal["fits", "evict", "no", "unknown"] = Field(
        description="fits: as things are; evict: after unloading the idle models in `evict`; "
        "no: not even then; unknown: the reasons say what is missing."
    )
    engine: str | None
    need_bytes: int | None = Field(description="The estimate's total.")
    free_bytes: int | None
    margin_bytes: int | None = Field(description="Kept free beside the load.")
    offload_bytes: int = Field(description="Of need, what would spill to CPU RAM.")
    evict: list[str]
    reasons: list[str]
    notes: list[str]
    label: Literal["exact", "heuristic"] = Field(
        description="exact when every input was reported or measured, else heuristic."
    )
    estimate: FitEstimate | None
    spare_bytes: int | None = Field(description="free - need - margin (negative: short).")
    state: StateName
    observed_at: float | None = Field(description="When the judged snapshot was collected.")
    age_s: float | None


class FitAsked(Doc):
    model: str
    ctx: int | None
    parallel: int | None
    kv_type: str | None
    engine: str | None


class FitDocument(Doc):
    """`fleet fit --json`: the question, the model's metadata and its source, every node's
    answer (fits, then evict, no, unknown; then by name), and how many nodes were judged."""

    request: FitAsked
    meta_from: str | None = Field(description="'node gpu1': whose snapshot gave the metadata.")
    meta: ModelMeta | None
    nodes: list[FitAnswer] = Field(description="The first `limit` answers, best first.")
    nodes_total: int = Field(description="Nodes judged (the MCP tool's one addition).")


class PlaceLine(Doc):
    rank: int
    node: str
    score: float = Field(description="0-100; 0: the model cannot be placed there.")
    verdict: Literal["fits", "evict", "no", "unknown"]
    reasons: list[str] = Field(description="What earned and cost points (docs/placement.md).")
    fit: FitAnswer


class PlaceDocument(Doc):
    """`fleet place --json`: every node ranked for the model, best first."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: int = Field(alias="schema", description="This document's version.")
    request: FitAsked
    strategy: Literal["binpack", "spread"]
    meta_from: str | None
    observed_at: float = Field(description="When the ranking was made (Unix seconds).")
    nodes: list[PlaceLine] = Field(description="The best `top_k`, in rank order.")
