"""The wire format: the one definition of what agents serve and the aggregator reads.

Agent and aggregator both import these models, so a field added here is added to both sides
and to the generated JSON Schema in docs/agent-api.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from fleettui.textsafe import clean, clean_block

# 2: the residency ledger (Model's context/slots/sources, Engine.available and .settings,
# Gpu.processes, NodeSnapshot.budget). Version-1 agents still read: every new field is optional.
SCHEMA_VERSION = 2
GENESIS_HASH = "0" * 64

# --- what a node may send ------------------------------------------------------------------
# Nothing a node sends is trusted: every number is finite and within a range no real machine
# leaves (NaN, ±Infinity, 1e308, negative watts and 5000-digit integers are refused), every
# list and string is bounded, so one hostile or broken node becomes a reason on its own row
# (`bad snapshot: gpus: List should have at most 256 items`) instead of an OverflowError,
# "€-inf" or "-4,665 W" somewhere in the views. The ranges are generous on purpose: a real
# agent never comes near them.


def _num(lo: float, hi: float) -> Any:
    return Field(ge=lo, le=hi, allow_inf_nan=False)


Percent = Annotated[float, _num(0, 100)]
MiB = Annotated[float, _num(0, 1e9)]  # a petabyte
Watts = Annotated[float, _num(0, 1e6)]  # a megawatt, for one machine
Joules = Annotated[float, _num(0, 1e15)]
WattHours = Annotated[float, _num(0, 1e12)]
Celsius = Annotated[float, _num(-100, 300)]
Money = Annotated[float, _num(0, 1e9)]
Price = Annotated[float, _num(0, 1e6)]  # per kWh, in any currency
Seconds = Annotated[float, _num(0, 1e10)]  # 317 years of uptime
MAX_UNIX_TIME = 1e10  # the year 2286
UnixTime = Annotated[float, _num(0, MAX_UNIX_TIME)]
Millis = Annotated[float, _num(0, 1e9)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]
Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
ExitCode = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
HttpStatus = Annotated[int, Field(ge=0, le=599)]  # 0: no request was answered
Tokens = Annotated[int, Field(ge=0, le=100_000_000)]  # a context length
Pid = Annotated[int, Field(ge=0, le=2**31 - 1)]
Params = Annotated[int, Field(ge=0, le=10**14)]  # a parameter count
Ratio = Annotated[float, _num(0, 1)]
MAX_GPUS = 256
MAX_ENGINES = 64
MAX_MODELS = 1024
MAX_PROBLEMS = 256
MAX_DAYS = 366
MAX_PARTS = 512  # GPUs, RAPL zones, a wall reading
# Text read with `DISPLAY` as the validation context (what the views parse, state.py) is also
# made terminal-safe (fleettui.textsafe); the aggregator and the agent keep it as sent.
DISPLAY = {"display": True}


def _display(text: str, info: ValidationInfo) -> str:
    return clean(text) if info.context is DISPLAY else text


def _display_block(text: str, info: ValidationInfo) -> str:
    return clean_block(text) if info.context is DISPLAY else text


Name = Annotated[str, Field(max_length=256), AfterValidator(_display)]  # hostnames, names
Url = Annotated[str, Field(max_length=2048), AfterValidator(_display)]
Line = Annotated[str, Field(max_length=4096), AfterValidator(_display)]  # an error, a problem
Block = Annotated[str, Field(max_length=65536), AfterValidator(_display_block)]  # output


class WireModel(BaseModel):
    """Base for wire models: unknown keys are ignored so newer agents stay readable."""

    model_config = ConfigDict(extra="ignore")


class NodeInfo(WireModel):
    hostname: Name
    os: Name
    arch: Name
    agent_version: Name
    uptime_s: Seconds = Field(description="Seconds since the host booted.")
    boot_time: UnixTime | None = Field(None, description="When the host booted, Unix seconds.")
    simulated: bool = False


class Cpu(WireModel):
    percent: Percent | None = Field(None, description="Whole-machine CPU utilisation, 0-100.")
    cores: Count | None = Field(None, description="Logical CPU count.")
    thermal: Name | None = Field(
        None,
        description="Thermal pressure where the OS tells (macOS `pmset -g therm`): 'nominal', "
        "or what it recorded ('CPU speed limit 62%', 'thermal warning level 2').",
    )


PressureLevel = Literal["normal", "warn", "critical"]


class Memory(WireModel):
    total_mb: MiB | None = None
    used_mb: MiB | None = None
    pressure_pct: Percent | None = Field(None, description="Share of memory not available, 0-100.")
    stall_s_total: Seconds | None = Field(
        None,
        description="Linux PSI: seconds some task waited for memory since boot "
        "(/proc/pressure/memory `some total`); absent without PSI.",
    )
    pressure_level: PressureLevel | None = Field(
        None, description="macOS kern.memorystatus_vm_pressure_level: 1 normal, 2 warn, 4 critical."
    )
    swap_used_mb: MiB | None = None
    swap_total_mb: MiB | None = None


class GpuProcess(WireModel):
    pid: Pid
    used_mb: MiB | None = None
    engine: Name | None = Field(None, description="The engine this process serves, if known.")


class Gpu(WireModel):
    index: Count
    name: Name
    uuid: Name | None = None
    memory_total_mb: MiB | None = None
    memory_used_mb: MiB | None = None
    util_pct: Percent | None = None
    power_w: Watts | None = None
    power_limit_w: Watts | None = Field(None, description="The enforced power limit (NVML), W.")
    energy_j: Joules | None = Field(
        None, description="GPU energy counter since driver load, joules (NVML, Volta or newer)."
    )
    temp_c: Celsius | None = None
    processes: list[GpuProcess] = Field(
        default_factory=list,
        max_length=MAX_MODELS,
        description="Compute processes holding memory on this GPU (NVML), with the engine each "
        "belongs to where the agent could attribute it by PID or port.",
    )
    attributed_mb: MiB | None = Field(
        None, description="Memory held by processes attributed to an engine, MiB."
    )
    other_mb: MiB | None = Field(
        None,
        description="used - attributed: memory nobody accounts for (other users, "
        "the driver, processes of unknown engines), MiB.",
    )


PartKind = Literal["gpu", "cpu-package", "dram", "psys", "soc", "wall"]
# What each kind of measured part covers, as the views name it: (label, one-letter code).
# psys (RAPL platform) includes the CPU packages; wall (a BMC) includes everything.
PART_NAMES: dict[str, tuple[str, str]] = {
    "gpu": ("GPU", "G"),
    "cpu-package": ("CPU package", "C"),
    "dram": ("DRAM", "M"),
    "psys": ("platform (psys)", "P"),
    "soc": ("SoC (CPU+GPU+ANE+DRAM)", "S"),  # Apple Silicon's IOReport energy rails
    "wall": ("wall", "W"),
}
# How a figure is measured. *-energy, rapl and ioreport read a hardware energy counter (exact
# between two readings); nvml-power, ipmi and redfish integrate sampled power (an approximation).
ENERGY_SOURCES = (
    "nvml-energy",
    "nvml-power",
    "rapl",
    "ioreport",
    "ipmi",
    "redfish",
    "simulated",
    "asiai",
)


class _HasKind(Protocol):
    @property
    def kind(self) -> str: ...


K = TypeVar("K", bound=_HasKind)


def in_scope(parts: Sequence[K]) -> list[K]:
    """The parts a node's power and energy add up: a wall reading alone where there is one (it
    includes every other part), else all of them."""
    return [p for p in parts if p.kind == "wall"] or list(parts)


def scope_label(kinds: list[str]) -> str:
    """'GPU + CPU package + DRAM' for the kinds a node measures, 'none' for none."""
    seen = [k for k in PART_NAMES if k in kinds]
    return " + ".join(PART_NAMES[k][0] for k in seen) or "none"


def scope_code(kinds: list[str]) -> str:
    """The scope in one to four letters for a table cell: 'GCM', 'W'; '' for none."""
    return "".join(PART_NAMES[k][1] for k in PART_NAMES if k in kinds)


def source_label(sources: list[str]) -> str:
    """'nvml-energy+rapl': every distinct source in a fixed order, 'none' for none."""
    known = [s for s in ENERGY_SOURCES if s in sources]
    return "+".join(known + sorted(set(sources) - set(known))) or "none"


class PowerPart(WireModel):
    """One measured part of the machine: a GPU, a RAPL zone, the BMC's wall reading."""

    name: Name = Field(description="gpu0, package-0, dram-0, psys, wall...")
    kind: PartKind
    source: Name = Field(description="How it is measured: one of ENERGY_SOURCES.")
    watts: Watts | None = None
    energy_j: Joules = Field(0.0, description="This part's energy since the agent started, J.")


class Power(WireModel):
    watts: Watts | None = Field(None, description="Current draw of everything in `scope`, W.")
    scope: Name = Field(
        "none", description="What the figures cover: 'GPU + CPU package + DRAM', 'wall'..."
    )
    source: Name = Field("none", description="How they are measured, e.g. 'nvml-energy+rapl'.")
    energy_j: Joules = Field(
        0.0,
        description="Energy in `scope` since this agent process started, J (0 at each start: "
        "the Prometheus counter). Daily totals that survive restarts are in `cost.daily`.",
    )
    energy_since: UnixTime | None = Field(None, description="When `energy_j` began, Unix seconds.")
    parts: list[PowerPart] = Field(default_factory=list, max_length=MAX_PARTS)


class DailyCost(WireModel):
    date: Name = Field(description="Local calendar day, YYYY-MM-DD.")
    energy_wh: WattHours = Field(description="Energy in scope that day, from the persisted ledger.")
    cost: Money
    price_per_kwh: Price | None = Field(None, description="The price that applied that day.")


class Cost(WireModel):
    currency: Name = "EUR"
    price_per_kwh: Price = Field(0.0, description="Today's price.")
    today: Money = 0.0
    daily: list[DailyCost] = Field(
        default_factory=list, max_length=MAX_DAYS, description="Last 7 days, oldest first."
    )
    total_7d: Money = 0.0
    since_start: Money = Field(
        0.0, description="Cost of `power.energy_j`: since this agent process started."
    )


# Where a ledger figure comes from: `reported` by the engine itself, `measured` by the agent
# (the process's memory, NVML), `estimated` by fleettui.capacity from metadata.
Source = Literal["reported", "measured", "estimated"]
SOURCES: tuple[str, ...] = get_args(Source)


class ModelMeta(WireModel):
    """What the memory maths needs to know of a model, read from the engine (Ollama
    `/api/show` model_info, llama.cpp `/v1/models` meta), a GGUF header or a Hugging Face
    config.json. Every field is optional: the estimator names what it lacks."""

    source: Name = Field(description="ollama-show, llamacpp-meta, lmstudio, gguf, hf-config...")
    arch: Name | None = Field(None, description="general.architecture: llama, gemma3, qwen2...")
    params: Params | None = None
    file_mb: MiB | None = Field(None, description="Size of the weights file(s), MiB.")
    quant: Name | None = Field(None, description="Q4_K_M, Q8_0, F16, bf16...")
    bits_per_weight: Annotated[float, _num(0, 64)] | None = None
    n_layers: Count | None = Field(None, description="{arch}.block_count.")
    n_heads: Count | None = None
    n_kv_heads: Count | None = Field(None, description="Grouped-query attention: KV heads.")
    kv_heads_per_layer: list[Count] | None = Field(
        None, max_length=4096, description="Where KV heads differ per layer (GGUF array)."
    )
    key_length: Count | None = Field(None, description="Per-head key size; default embd/heads.")
    value_length: Count | None = None
    embedding_length: Count | None = None
    vocab_size: Count | None = None
    ctx_train: Tokens | None = Field(None, description="{arch}.context_length.")
    sliding_window: Tokens | None = Field(None, description="Window of sliding-window layers.")
    sliding_layers: Count | None = Field(None, description="How many layers use the window.")
    kv_lora_rank: Count | None = Field(None, description="MLA: compressed KV size per token.")
    rope_dim: Count | None = Field(None, description="MLA: the uncompressed RoPE part of K.")
    recurrent_layers: Count | None = Field(None, description="SSM / recurrent layers.")


class Model(WireModel):
    """A resident model: one line of the node's residency ledger."""

    name: Name
    size_mb: MiB | None = Field(None, description="Total resident memory, MiB.")
    vram_mb: MiB | None = Field(None, description="Of which on GPU, MiB (0 on a CPU-only run).")
    quant: Name | None = None
    gpus: list[Count] = Field(
        default_factory=list, max_length=MAX_GPUS, description="GPU indices, where known."
    )
    ctx: Tokens | None = Field(None, description="Context length per slot, tokens.")
    parallel: Count | None = Field(None, description="Parallel slots (sequences).")
    kv_type: Name | None = Field(None, description="KV cache type: f16, q8_0, q4_0...")
    expires_at: UnixTime | None = Field(None, description="When the engine unloads it, if idle.")
    busy: bool | None = Field(None, description="Serving a request now (None: unknown).")
    pid: Pid | None = Field(None, description="The process holding it, where known.")
    sources: dict[str, Source] = Field(
        default_factory=dict,
        max_length=32,
        description="Where each figure comes from, by field name: reported / measured / estimated.",
    )
    meta: ModelMeta | None = None


class DiskModel(WireModel):
    """A model present on the node's disk (pulled, not loaded)."""

    name: Name
    size_mb: MiB | None = None
    quant: Name | None = None
    params: Params | None = None
    meta: ModelMeta | None = None


class EngineSettings(WireModel):
    """Engine-wide settings that change how much memory a load takes, where the engine tells."""

    default_ctx: Tokens | None = None
    num_parallel: Count | None = Field(None, description="Ollama OLLAMA_NUM_PARALLEL, slots.")
    max_loaded: Count | None = Field(None, description="Ollama OLLAMA_MAX_LOADED_MODELS.")
    kv_type: Name | None = None
    flash_attention: bool | None = Field(
        None, description="Ollama OLLAMA_FLASH_ATTENTION: on, its graph keeps no score matrix."
    )
    gpu_memory_utilization: Ratio | None = Field(
        None, description="vLLM: the share of each GPU it claims at start, whatever it holds."
    )
    num_gpu_blocks: Count | None = None
    block_size: Count | None = None
    kv_usage_pct: Percent | None = Field(None, description="vLLM KV cache in use, 0-100.")
    requests_running: Count | None = None
    requests_waiting: Count | None = None
    router: bool = Field(False, description="llama.cpp router mode: loads models on request.")


EngineStatus = Literal["up", "down"]


class Engine(WireModel):
    name: Name = Field(description="The engine's name in agent.toml (its kind by default).")
    kind: Name | None = Field(
        None,
        description="Engine kind: ollama, llamacpp, vllm, lmstudio, mlx; absent: the name is.",
    )
    url: Url
    status: EngineStatus
    version: Name | None = None
    models: list[Model] = Field(default_factory=list, max_length=MAX_MODELS)
    available: list[DiskModel] = Field(
        default_factory=list, max_length=MAX_MODELS, description="Models on disk, not loaded."
    )
    settings: EngineSettings | None = None
    pids: list[Pid] = Field(
        default_factory=list, max_length=MAX_MODELS, description="The engine's processes."
    )
    error: Line | None = Field(None, description="Why the engine is down or its answer unusable.")


def engine_kind(engine: Engine) -> str:
    """The kind an engine's rules key on: a table named `[engines.big] kind = "llamacpp"` is
    llama.cpp; agents older than the `kind` field named every engine by its kind."""
    return engine.kind or engine.name


# How a snapshot's `problems[]` line about the agent's own audit log begins (agent/actions.py
# writes it): the aggregator never calls a chain `ok` that its own agent reports damaged.
AUDIT_PROBLEM_PREFIX = "audit log: "


BudgetKind = Literal["gpu", "unified", "ram"]


class Budget(WireModel):
    """The memory a model can use on this node, and how it is taken now.

    gpu: the GPUs' memory (NVML); unified: Apple Silicon, min(GPU working-set limit, RAM - an
    OS reserve); ram: a CPU-only node, RAM. free = total - used, never below 0."""

    kind: BudgetKind
    total_mb: MiB
    used_mb: MiB
    engines_mb: MiB = Field(0.0, description="Of used, what the engines' resident models hold.")
    other_mb: MiB = Field(0.0, description="Of used, what nobody accounts for.")
    free_mb: MiB
    limit: Name = Field(description="What sets total_mb: 'GPU memory', 'iogpu.wired_limit_mb'...")
    inputs: dict[str, Annotated[float, _num(-1e12, 1e12)]] = Field(
        default_factory=dict, max_length=32, description="The figures total_mb came from, MiB."
    )
    ram_free_mb: MiB | None = Field(None, description="RAM free for a partial CPU offload.")


class AuditHead(WireModel):
    seq: Seq = Field(0, description="Sequence number of the newest audit entry (0 when empty).")
    head_hash: Name = GENESIS_HASH


class NodeSnapshot(WireModel):
    """Everything one agent knows about its node at one collection tick."""

    schema_version: Count = SCHEMA_VERSION
    node: NodeInfo
    ts: UnixTime = Field(description="Collection time, Unix seconds.")
    cpu: Cpu = Field(default_factory=Cpu)
    memory: Memory = Field(default_factory=Memory)
    gpus: list[Gpu] = Field(default_factory=list, max_length=MAX_GPUS)
    power: Power = Field(default_factory=Power)
    cost: Cost = Field(default_factory=Cost)
    engines: list[Engine] = Field(default_factory=list, max_length=MAX_ENGINES)
    audit: AuditHead = Field(default_factory=AuditHead)
    budget: Budget | None = Field(None, description="Memory a model can use (schema 2).")
    problems: list[Line] = Field(
        default_factory=list,
        max_length=MAX_PROBLEMS,
        description="Human-readable reasons this node is degraded.",
    )


# --- the action vocabulary -------------------------------------------------------------------
# The one definition of what may be asked of a node: the agent refuses, the kinds and the CLI
# check before sending, the TUI offers keys for, exactly these.

ActionName = Literal["purge", "unload", "load", "stop", "start", "restart"]
ACTIONS: tuple[str, ...] = get_args(ActionName)
NEEDS_ENGINE = frozenset({"unload", "load", "stop", "start", "restart"})  # purge alone is node-wide
TAKES_MODEL = frozenset({"unload", "load"})
NEEDS_MODEL = frozenset({"load"})  # unload without a model unloads every resident one
# How long each action may run on the node; callers wait a little longer than this. A load
# reads the weights from disk (and, where the agent is told to pull, downloads them first).
ACTION_TIMEOUTS_S: dict[str, float] = {
    "purge": 30.0,
    "unload": 60.0,
    "load": 300.0,
    "stop": 60.0,
    "start": 120.0,
    "restart": 120.0,
}
ENGINE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
# Names as Ollama and Hugging Face write them: "llama3.1:8b", "hf.co/org/repo:Q4_K_M",
# "Qwen/Qwen2.5-7B-Instruct", "model.gguf", "name@sha256:...". No whitespace, no leading "-"
# (an argv option), and no ".." path segment (see action_problem).
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$"
ENGINE_RE = re.compile(ENGINE_PATTERN)
MODEL_RE = re.compile(MODEL_PATTERN)
# KV cache types the engines take (llama.cpp -ctk/-ctv, OLLAMA_KV_CACHE_TYPE); the estimator
# knows the bytes per element of each (capacity/estimate.py KV_TYPES).
KvType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"]
KV_TYPES: tuple[str, ...] = get_args(KvType)
# Load parameters: bounds no real model reaches (16M tokens, 1024 slots), so a typo or a
# hostile value is refused before an engine allocates for it.
CTX_MAX = 1 << 24
PARALLEL_MAX = 1024
# Ollama's keep_alive: a duration ("30m", "2h", "90s", "300": seconds) or -1 (keep loaded).
KEEP_ALIVE_PATTERN = r"^(-1|[0-9]{1,6}(s|m|h)?)$"
KEEP_ALIVE_RE = re.compile(KEEP_ALIVE_PATTERN)
LOAD_PARAMS = ("ctx", "parallel", "kv_type", "keep_alive", "force")


@dataclass(frozen=True)
class ActionProblem:
    """Why an action's arguments are refused: the field, and a sentence whose `{value}` the
    caller fills the way it must show a hostile value (the agent scrubs secrets first)."""

    field: Literal["action", "engine", "model", "ctx", "parallel", "kv_type", "keep_alive", "force"]
    template: str
    value: str
    detail: dict[str, Any]

    def text(self, show: Callable[[str], str] = repr) -> str:
        return self.template.format(value=show(self.value))


def _count_problem(name: Literal["ctx", "parallel"], v: object, hi: int) -> ActionProblem | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return ActionProblem(name, f"{name} must be an integer, not a {type(v).__name__}", "", {})
    if not 1 <= v <= hi:
        shown = str(v) if abs(v) < 10**12 else f"of {v.bit_length()} bits"
        return ActionProblem(name, f"{name} {shown} is not between 1 and {hi}", "", {"max": hi})
    return None


def _load_problem(
    action: str, ctx: object, parallel: object, kv_type: object, keep_alive: object, force: object
) -> ActionProblem | None:
    if action != "load":
        given = (("ctx", ctx), ("parallel", parallel), ("kv_type", kv_type))
        for name, v in (*given, ("keep_alive", keep_alive)):
            if v is not None:
                return ActionProblem(name, f"{name} only applies to load, not {action}", "", {})  # type: ignore[arg-type]
    if not isinstance(force, bool):
        return ActionProblem(
            "force", f"force must be true or false, not a {type(force).__name__}", "", {}
        )
    if force and action != "load":
        return ActionProblem("force", f"force only applies to load, not {action}", "", {})
    if ctx is not None and (p := _count_problem("ctx", ctx, CTX_MAX)):
        return p
    if parallel is not None and (p := _count_problem("parallel", parallel, PARALLEL_MAX)):
        return p
    if kv_type is not None and kv_type not in KV_TYPES:
        shown = kv_type if isinstance(kv_type, str) else f"<{type(kv_type).__name__}>"
        return ActionProblem(
            "kv_type", "kv_type {value} is not a KV cache type", shown, {"allowed": list(KV_TYPES)}
        )
    if keep_alive is not None:
        if not isinstance(keep_alive, str) or not KEEP_ALIVE_RE.fullmatch(keep_alive):
            shown = keep_alive if isinstance(keep_alive, str) else f"<{type(keep_alive).__name__}>"
            return ActionProblem(
                "keep_alive",
                "keep_alive {value} is not a duration like 30m, 2h, 90s or -1",
                shown,
                {"pattern": KEEP_ALIVE_PATTERN},
            )
        if keep_alive.rstrip("smh").strip("0") == "":
            return ActionProblem(
                "keep_alive",
                "keep_alive {value} would unload the model at once (send unload for that)",
                keep_alive,
                {},
            )
    return None


def action_problem(
    action: str,
    engine: str | None,
    model: str | None,
    *,
    ctx: object = None,
    parallel: object = None,
    kv_type: object = None,
    keep_alive: object = None,
    force: object = False,
) -> ActionProblem | None:
    """The one rule for an action and its arguments; None when it may be sent."""
    if action not in ACTIONS:
        return ActionProblem("action", "unknown action {value}", action, {"allowed": list(ACTIONS)})
    if engine is not None and not ENGINE_RE.fullmatch(engine):
        return ActionProblem(
            "engine",
            "engine {value} is not a valid engine name",
            engine,
            {"pattern": ENGINE_PATTERN},
        )
    if model is not None and (not MODEL_RE.fullmatch(model) or ".." in model.split("/")):
        return ActionProblem(
            "model",
            "model {value} is not a valid model name",
            model,
            {"pattern": MODEL_PATTERN, "also": "no '..' path segment"},
        )
    if action in NEEDS_ENGINE and engine is None:
        return ActionProblem("engine", f"{action} needs an engine", action, {})
    if action in NEEDS_MODEL and model is None:
        return ActionProblem("model", f"{action} needs a model", action, {})
    if action not in TAKES_MODEL and model is not None:
        return ActionProblem(
            "model", f"model only applies to unload and load, not {action}", model, {}
        )
    return _load_problem(action, ctx, parallel, kv_type, keep_alive, force)


def describe_action(
    action: str,
    engine: str | None,
    model: str | None,
    params: dict[str, Any] | None = None,
) -> str:
    """`restart ollama`, `unload ollama llama3:8b`, `load ollama qwen3:8b ctx=8192`, `purge`:
    how the operator would say it."""
    shown = [f"{k}={'true' if v is True else v}" for k, v in (params or {}).items() if v]
    return " ".join(x for x in (action, engine, model, *shown) if x)


class ActionRequest(WireModel):
    """Body of POST /api/v1/actions. A request that exists is one `action_problem` allows, so
    the kinds and the agent's runners never check it again. Unset load parameters are left
    out of the body, so an agent from before `load` reads every other request as before."""

    model_config = ConfigDict(extra="forbid")

    # the patterns and bounds are documented in the schema and enforced, with one message, by
    # _allowed; strict: "4096" or 4096.0 is not a context length, 1 is not true
    action: ActionName
    engine: str | None = Field(None, json_schema_extra={"pattern": ENGINE_PATTERN})
    model: str | None = Field(None, json_schema_extra={"pattern": MODEL_PATTERN})
    ctx: int | None = Field(
        None,
        strict=True,
        description="load: context length per slot, tokens (default: the engine's).",
        json_schema_extra={"minimum": 1, "maximum": CTX_MAX},
    )
    parallel: int | None = Field(
        None,
        strict=True,
        description="load: parallel slots, where the engine takes it per model.",
        json_schema_extra={"minimum": 1, "maximum": PARALLEL_MAX},
    )
    kv_type: KvType | None = Field(None, description="load: KV cache type the fit assumes.")
    keep_alive: str | None = Field(
        None,
        description="load, Ollama: how long the model stays loaded when idle.",
        json_schema_extra={"pattern": KEEP_ALIVE_PATTERN},
    )
    force: bool = Field(
        False,
        strict=True,
        description="load: load even when the agent's fit check says it does not fit "
        "(audited as such).",
    )

    @model_validator(mode="after")
    def _allowed(self) -> ActionRequest:
        if problem := action_problem(self.action, self.engine, self.model, **self.params()):
            raise ValueError(problem.text())
        return self

    def params(self) -> dict[str, Any]:
        """The load parameters, as action_problem takes them."""
        return {k: getattr(self, k) for k in LOAD_PARAMS}

    def body(self) -> dict[str, Any]:
        """The JSON to send: what is set, nothing at its default."""
        return self.model_dump(exclude_defaults=True) | {"action": self.action}

    def describe(self) -> str:
        return describe_action(
            self.action, self.engine, self.model, {k: v for k, v in self.params().items() if v}
        )


class ActionResult(WireModel):
    ok: bool
    action: Name
    engine: Name | None = None
    model: Name | None = None
    exit_code: ExitCode | None = None
    duration_ms: Millis = 0.0
    output_tail: Block = ""
    audit_seq: Seq | None = None
    error: Line | None = None


class ActionEvent(WireModel):
    """Payload of the SSE `action` event: sent when an action starts and when it finishes."""

    phase: Literal["started", "finished"]
    action: Name
    engine: Name | None = None
    model: Name | None = None
    ok: bool | None = None
    audit_seq: Seq | None = None


class AuditEntry(WireModel):
    """One line of the hash-chained audit log.

    hash = sha256(prev_hash + canonical_json(entry without hash)).
    """

    seq: int
    ts: UnixTime
    source_ip: str | None = None
    token_id: str | None = None
    action: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    status: str = Field(
        description="denied (refused before running), started (written before the action "
        "runs), ok / failed / interrupted (its outcome; interrupted: the agent stopped "
        "mid-action and found the intent at its next start), sealed (first entry of a chain "
        "an operator started after archiving a damaged log)."
    )
    http_status: HttpStatus = Field(
        description="The status answered; 0 when no request was answered."
    )
    duration_ms: Millis | None = None
    exit_code: ExitCode | None = None
    error: str | None = None
    ref: Seq | None = Field(
        None, description="On an outcome entry: the seq of the `started` entry it closes."
    )
    prev_hash: str
    hash: str


class AuditPage(WireModel):
    entries: list[AuditEntry]
    head: AuditHead


class ErrorBody(WireModel):
    error: str
    detail: Any = None


def wire_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of every wire model, for docs/agent-api.md."""
    models: list[type[BaseModel]] = [
        NodeSnapshot,
        ActionRequest,
        ActionResult,
        ActionEvent,
        AuditEntry,
        AuditPage,
        ErrorBody,
    ]
    return {m.__name__: m.model_json_schema() for m in models}


def canonical_json(obj: Any) -> bytes:
    """The byte form the audit hash is computed over: sorted keys, no spaces, UTF-8."""
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def audit_hash(entry: dict[str, Any]) -> str:
    """hash = sha256(prev_hash + canonical_json(entry without `hash`))."""
    import hashlib

    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(entry["prev_hash"].encode() + canonical_json(body)).hexdigest()
