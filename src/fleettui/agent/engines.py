"""HTTP probes for the inference engines, speaking each engine's documented JSON, and the
residency ledger they fill (docs/engines.md: which figure comes from where).

A probe never raises: an engine that does not answer, answers late or answers garbage is
reported `down` with the reason in `Engine.error`; one odd figure in an otherwise good answer
is dropped and named there while the engine stays `up`.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread
import httpx
from prometheus_client.parser import text_string_to_metric_families

from fleettui.agent import procs
from fleettui.agent.collect.bounds import bounded, measured
from fleettui.capacity.files import MetaFileError, meta_from_gguf, meta_from_hf_config
from fleettui.capacity.meta import (
    meta_from_llamacpp,
    meta_from_lmstudio,
    meta_from_ollama_show,
    params_from_text,
    quant_name,
)
from fleettui.wire import (
    MAX_MODELS,
    MAX_UNIX_TIME,
    DiskModel,
    Engine,
    EngineSettings,
    Model,
    ModelMeta,
)

MB = 1024 * 1024
MAX_BODY = 4 * 1024 * 1024
SHOW_CACHE_MAX = 512  # Ollama /api/show answers kept, by model digest
SHOWS_PER_TICK = 2  # on-disk Ollama models whose metadata is fetched per tick (resident: all)
SHOW_BUDGET_S = 0.5  # the metadata may be late; the engine's status may not
LOOKUP_BUDGET_S = 2.0  # the engine's process and model files, per engine and tick
ROUTER_DETAILS = 8  # llama.cpp router: loaded models asked for their /props and /slots per tick
# LM Studio's models folders (0.3+, then older versions), under the agent user's home: its API
# names no file, so a model's GGUF is the one file there of exactly the size it reports
LMSTUDIO_DIRS = (".lmstudio/models", ".cache/lm-studio/models")
LMSTUDIO_SCAN_MAX = 1024  # files looked at per tick: a models folder, not a whole disk
HF_CONFIG_MAX = 4 << 20  # a config.json past this is not a model's config
# /v1/models owners that are llama.cpp: llama-server itself, and llama-cpp-python's server,
# which runs the same llama.cpp but answers only the OpenAI routes (no /health, no /props).
LLAMACPP_OWNERS = {"llamacpp": "llama-server", "me": "llama-cpp-python"}


class ProbeError(Exception):
    """The engine answered but not in a way we can use."""


@dataclass
class Probing:
    """What the probes learn from the node and keep between ticks (one per agent)."""

    gpus: bool = False  # the node has a GPU engines can use (NVML, or Apple Silicon's)
    shows: dict[str, tuple[ModelMeta | None, tuple[str, ...]]] = field(default_factory=dict)
    pids: dict[int, procs.Seen] = field(default_factory=dict)  # port -> who listened there
    # GGUF headers of local llama.cpp models, by (path, mtime, size): read once per file
    ggufs: dict[tuple[str, int, int], ModelMeta | None] = field(default_factory=dict)
    # the lookups run in worker threads, one per engine, and may outlive their tick
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Found:
    """What one probe read, before the wire's bounds: Model/DiskModel/EngineSettings fields
    as sent, so each odd one is named on its own (`_up`)."""

    version: Any = None
    models: list[dict[str, Any]] = field(default_factory=list)
    available: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # the listening process holds the model itself (llama-server, mlx_lm): its PID and
    # resident set are the model's; Ollama, vLLM and LM Studio serve from child processes
    one_process: bool = False


def _json(r: httpx.Response, path: str) -> Any:
    if r.status_code != 200:
        raise ProbeError(f"{r.request.method} {path} -> HTTP {r.status_code}")
    if len(r.content) > MAX_BODY:
        raise ProbeError(f"{r.request.method} {path}: body over {MAX_BODY} bytes")
    try:
        return r.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProbeError(f"{r.request.method} {path}: not JSON") from None


async def _get_json(client: httpx.AsyncClient, url: str, **params: str) -> Any:
    r = await client.get(url, params=params or None)
    return _json(r, httpx.URL(url).path)


async def _soft_json(client: httpx.AsyncClient, url: str, **params: str) -> Any:
    """An optional route: None where this engine version lacks it or answers garbage."""
    try:
        return await _get_json(client, url, **params)
    except ProbeError:
        return None


def _mb(n: Any) -> Any:
    """Bytes as MiB; anything else as sent (None, or left for `bounded` to name)."""
    if isinstance(n, int | float) and not isinstance(n, bool):
        try:  # a negative unrounded: -1 B must not become 0.0 and pass
            return round(n / MB, 1) if n >= 0 else n / MB
        except OverflowError:  # an integer too big for a float
            return n
    return n


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise ProbeError(f"unexpected answer: {what}")


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or path


def _flag(argv: Any, name: str) -> str | None:
    """The value of `name` in an argument list (`--model X` or `--model=X`), if it has one."""
    if not isinstance(argv, list):
        return None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return _str(argv[i + 1])
        if isinstance(arg, str) and arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _unix_time(v: Any) -> Any:
    """An RFC 3339 time (Ollama's expires_at) as Unix seconds. Ollama says "never" (keep_alive
    -1) with a date centuries away and "unset" with year 1: both are None, not a problem."""
    if not isinstance(v, str) or len(v) > 64:
        return v
    try:
        t = datetime.fromisoformat(v).timestamp()
    except (ValueError, OverflowError, OSError):
        return v  # left for `bounded` to name
    return t if 0 < t < MAX_UNIX_TIME else None


def _reported(*names: str) -> dict[str, str]:
    return dict.fromkeys(names, "reported")


# --- Ollama ----------------------------------------------------------------------------------


def _digest_key(m: dict[str, Any]) -> str:
    d = m.get("digest")
    return d if isinstance(d, str) and 0 < len(d) <= 128 else f"name:{m.get('name')}"


async def _show(client: httpx.AsyncClient, base: str, name: str, key: str, p: Probing) -> None:
    """One model's /api/show into the cache. A failure is not cached (a busy or restarting
    server answers next tick); a parsed answer is, problems included, so its odd figures are
    named every tick rather than once."""
    try:
        r = await client.post(f"{base}/api/show", json={"model": name})
        show = _json(r, "/api/show")
    except (ProbeError, httpx.HTTPError):
        return
    problems: list[str] = []
    meta = meta_from_ollama_show(show, problems)
    while len(p.shows) >= SHOW_CACHE_MAX:
        del p.shows[next(iter(p.shows))]
    p.shows[key] = (meta, tuple(f"model {name}: {x}" for x in problems))


def _with_file(meta: ModelMeta | None, tag: dict[str, Any] | None, problems: list[str]) -> Any:
    """The cached metadata with the file size from /api/tags (what /api/show does not say)."""
    if meta is None or tag is None or meta.file_mb is not None:
        return meta
    where = f"model {tag['name']}: /api/tags"
    file_mb = bounded(ModelMeta, "file_mb", _mb(tag.get("size")), where, problems)
    return meta if file_mb is None else meta.model_copy(update={"file_mb": file_mb})


async def probe_ollama(client: httpx.AsyncClient, base: str, p: Probing) -> Found:
    ver = await _get_json(client, f"{base}/api/version")
    _expect(isinstance(ver, dict) and isinstance(ver.get("version"), str), "/api/version")
    ps = await _get_json(client, f"{base}/api/ps")
    _expect(isinstance(ps, dict) and isinstance(ps.get("models"), list), "/api/ps")
    for m in ps["models"]:
        _expect(isinstance(m, dict) and isinstance(m.get("name"), str), "/api/ps model")
    resident: list[dict[str, Any]] = ps["models"]
    tags = _obj(await _soft_json(client, f"{base}/api/tags")).get("models")
    on_disk = {
        t["name"]: t
        for t in (tags if isinstance(tags, list) else [])
        if isinstance(t, dict) and isinstance(t.get("name"), str)
    }
    names = {m["name"] for m in resident}
    wanted = [(m["name"], _digest_key(m)) for m in resident]
    wanted += [
        (n, k)
        for n, k in ((n, _digest_key(t)) for n, t in on_disk.items() if n not in names)
        if k not in p.shows
    ][:SHOWS_PER_TICK]
    with anyio.move_on_after(SHOW_BUDGET_S):
        async with anyio.create_task_group() as tg:
            for name, key in wanted:
                if key not in p.shows:
                    tg.start_soon(_show, client, base, name, key, p)
    found = Found(version=ver["version"])

    def meta_of(m: dict[str, Any]) -> Any:
        meta, problems = p.shows.get(_digest_key(m), (None, ()))
        found.problems.extend(problems)
        return _with_file(meta, on_disk.get(m["name"]), found.problems)

    for m in resident:
        details = _obj(m.get("details"))
        found.models.append(
            {
                "name": m["name"],
                "size_mb": _mb(m.get("size")),
                "vram_mb": _mb(m.get("size_vram")),
                "quant": details.get("quantization_level") or None,
                "ctx": m.get("context_length"),
                "expires_at": _unix_time(m.get("expires_at")),
                "meta": meta_of(m),
                "sources": _reported("size_mb", "vram_mb", "ctx", "expires_at"),
            }
        )
    for name, t in on_disk.items():
        if name not in names:
            details = _obj(t.get("details"))
            found.available.append(
                {
                    "name": name,
                    "size_mb": _mb(t.get("size")),
                    "quant": details.get("quantization_level") or None,
                    "params": params_from_text(details.get("parameter_size")),
                    "meta": meta_of(t),
                }
            )
    return found


# Go's strconv.ParseBool false spellings (Ollama reads its boolean settings with it)
OLLAMA_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


def _ollama_env(env: dict[str, str], problems: list[str]) -> dict[str, Any]:
    """Ollama's memory settings from its environment (the API does not report them)."""
    out: dict[str, Any] = {}
    for key, name in (
        ("OLLAMA_NUM_PARALLEL", "num_parallel"),
        ("OLLAMA_MAX_LOADED_MODELS", "max_loaded"),
        ("OLLAMA_CONTEXT_LENGTH", "default_ctx"),
    ):
        v = env.get(key, "").strip()
        if v.isascii() and v.isdigit() and len(v) <= 12:  # "²".isdigit(), but int() refuses it
            out[name] = int(v)
        elif v:
            problems.append(f"{key} {v[:40]!r} is not a number")
    if kv := env.get("OLLAMA_KV_CACHE_TYPE", "").strip().lower():
        out["kv_type"] = kv
    if fa := env.get("OLLAMA_FLASH_ATTENTION", "").strip().strip("\"'"):
        # Ollama's envconfig.Bool: Go's ParseBool, and a value it cannot parse counts as on
        out["flash_attention"] = fa not in OLLAMA_FALSE
    return out


# --- llama.cpp -------------------------------------------------------------------------------


def _llamacpp_model(
    name: str, props: dict[str, Any], slots: Any, entry: dict[str, Any], problems: list[str]
) -> dict[str, Any]:
    """One llama-server model: context per slot and busy from /slots (where enabled), slots
    and quantisation from /props, sizes and metadata from /v1/models `meta`."""
    slot_list = [s for s in slots if isinstance(s, dict)] if isinstance(slots, list) else []
    dgs = _obj(props.get("default_generation_settings"))
    meta_json = _obj(entry.get("meta"))
    has_meta = bool(meta_json) or "model_ftype" in props
    odd: list[str] = []
    meta = meta_from_llamacpp(meta_json, props, odd) if has_meta else None
    problems.extend(f"model {name}: {x}" for x in odd)
    ctx = slot_list[0].get("n_ctx") if slot_list else dgs.get("n_ctx") or meta_json.get("n_ctx")
    return {
        "name": name,
        "size_mb": _mb(meta_json.get("size")),
        "quant": quant_name(props.get("model_ftype") or meta_json.get("ftype")),
        "ctx": ctx,
        "parallel": props.get("total_slots", len(slot_list) or None),
        "busy": any(s.get("is_processing") is True for s in slot_list) if slot_list else None,
        "meta": meta,
        "sources": _reported("size_mb", "ctx", "parallel", "busy"),
        "gguf": _str(props.get("model_path"))
        or _str(entry.get("path"))
        or _flag(_obj(entry.get("status")).get("args"), "--model")  # a router's child
        or _str(entry.get("id")),
    }


async def probe_llamacpp(client: httpx.AsyncClient, base: str, p: Probing) -> Found:
    r = await client.get(f"{base}/health")
    if r.status_code == 503:
        raise ProbeError("loading model (HTTP 503 from /health)")
    # /health may be missing (llama-cpp-python) while /props or /v1/models answer: they decide
    props = await _soft_json(client, f"{base}/props")
    lst = await _soft_json(client, f"{base}/v1/models")
    data = _obj(lst).get("data")
    entries = [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
    owners = {str(d.get("owned_by")) for d in entries}
    if not isinstance(props, dict) and not owners & LLAMACPP_OWNERS.keys():
        if props is None and lst is None and r.status_code != 200:
            raise ProbeError(f"GET /health -> HTTP {r.status_code}")
        other = sorted(owners - {"None"})
        raise ProbeError(
            f"models owned_by {other[0]!r}: not llama.cpp"
            if other
            else "answers /health but not /props: not llama.cpp"
        )
    props = _obj(props)
    version = _str(props.get("build_info"))
    if props.get("role") == "router" or any(isinstance(d.get("status"), dict) for d in entries):
        return await _llamacpp_router(client, base, props, entries, version)
    found = Found(version=version, one_process=True)
    first = entries[0] if entries else {}
    path = _str(props.get("model_path")) or _str(first.get("id"))
    if path is None:
        return found
    if props.get("is_sleeping") is True:  # weights freed until the next request
        found.available.append({"name": _basename(path)})
        return found
    slots = await _soft_json(client, f"{base}/slots")
    found.models.append(_llamacpp_model(_basename(path), props, slots, first, found.problems))
    found.settings = {
        "default_ctx": _obj(props.get("default_generation_settings")).get("n_ctx"),
        "num_parallel": props.get("total_slots"),
    }
    return found


async def _llamacpp_router(
    client: httpx.AsyncClient,
    base: str,
    props: dict[str, Any],
    entries: list[dict[str, Any]],
    version: Any,
) -> Found:
    """Router mode (llama-server without a model): /models lists every model it can load with
    `status.value`; loaded ones run in child servers reached through `?model=`, always with
    `autoload=false` (a model unloaded since the list must not be loaded by a look)."""
    found = Found(version=version, settings={"router": True})
    found.settings["max_loaded"] = props.get("max_instances")
    if not any(isinstance(d.get("status"), dict) for d in entries):
        data = _obj(await _soft_json(client, f"{base}/models")).get("data")
        entries = [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
    for d in entries:
        mid = _str(d.get("id"))
        if mid is None:
            continue
        state = _obj(d.get("status")).get("value")
        if state not in ("loaded", "loading"):  # unloaded, sleeping: on disk, not in memory
            found.available.append({"name": mid})
            continue
        child: dict[str, Any] = {}
        slots = None
        if state == "loaded" and len(found.models) < ROUTER_DETAILS:
            q = {"model": mid, "autoload": "false"}
            child = _obj(await _soft_json(client, f"{base}/props", **q))
            slots = await _soft_json(client, f"{base}/slots", **q)
        found.models.append(_llamacpp_model(mid, child, slots, d, found.problems))
    return found


# --- vLLM ------------------------------------------------------------------------------------


async def _openai_models(client: httpx.AsyncClient, base: str) -> list[dict[str, Any]]:
    lst = await _get_json(client, f"{base}/v1/models")
    _expect(isinstance(lst, dict) and isinstance(lst.get("data"), list), "/v1/models")
    out = [m for m in lst["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    _expect(len(out) == len(lst["data"]), "/v1/models entry without id")
    return out


def _label_num(v: Any) -> Any:
    """A Prometheus label's text as a number; anything else left for `bounded` to name."""
    if not isinstance(v, str) or len(v) > 32:
        return v
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def _whole(v: float) -> Any:
    return int(v) if isinstance(v, int) or v.is_integer() else v


def vllm_metrics(text: str, problems: list[str]) -> dict[str, Any]:
    """EngineSettings fields from vLLM's /metrics (prometheus_client's own text parser):
    `vllm:cache_config_info` labels, KV cache usage (1 = 100 %), requests running/waiting."""
    try:
        families = {f.name: f for f in text_string_to_metric_families(text)}
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        problems.append(f"/metrics: not Prometheus text ({type(exc).__name__})")
        return {}
    out: dict[str, Any] = {}
    info = families.get("vllm:cache_config_info") or families.get("vllm:cache_config")
    if info is not None and info.samples:
        labels = info.samples[0].labels
        out["gpu_memory_utilization"] = _label_num(labels.get("gpu_memory_utilization"))
        out["num_gpu_blocks"] = _label_num(labels.get("num_gpu_blocks"))
        out["block_size"] = _label_num(labels.get("block_size"))
        out["kv_type"] = labels.get("cache_dtype") or None
    # kv_cache_usage_perc since v0.10; gpu_cache_usage_perc before (deprecated, still sent)
    usage = families.get("vllm:kv_cache_usage_perc") or families.get("vllm:gpu_cache_usage_perc")
    if usage is not None and usage.samples:
        out["kv_usage_pct"] = max(s.value for s in usage.samples) * 100
    for metric, name in (
        ("vllm:num_requests_running", "requests_running"),
        ("vllm:num_requests_waiting", "requests_waiting"),
    ):
        fam = families.get(metric)
        if fam is not None and fam.samples:
            out[name] = _whole(sum(s.value for s in fam.samples))
    return out


async def probe_vllm(client: httpx.AsyncClient, base: str, p: Probing) -> Found:
    data = await _openai_models(client, base)
    version = _str(_obj(await _soft_json(client, f"{base}/version")).get("version"))
    if version is None and not any(m.get("owned_by") == "vllm" for m in data):
        raise ProbeError("no /version and no model owned_by vllm: not vLLM")
    found = Found(version=version)
    r = await client.get(f"{base}/metrics")
    if r.status_code == 200 and len(r.content) <= MAX_BODY:
        text = r.content.decode("utf-8", errors="replace")
        found.settings = await anyio.to_thread.run_sync(vllm_metrics, text, found.problems)
    running = found.settings.get("requests_running")
    busy = running > 0 if isinstance(running, int | float) and running == running else None
    for m in data:
        if m.get("parent"):  # a LoRA adapter on a served model: no memory of its own to speak of
            continue
        found.models.append(
            {
                "name": m["id"],
                "ctx": m.get("max_model_len"),
                "kv_type": found.settings.get("kv_type"),
                "busy": busy,
                "sources": _reported("ctx", "kv_type", "busy"),
            }
        )
    return found


# --- LM Studio -------------------------------------------------------------------------------


def _lmstudio_v1(entries: list[Any], version: Any) -> Found:
    """LM Studio 0.4+ `/api/v1/models`: every model on disk, with its loaded instances."""
    found = Found(version=version)
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("key"), str):
            continue
        quant = e.get("quantization")
        qname = _obj(quant).get("name") if isinstance(quant, dict) else quant
        odd: list[str] = []
        meta = meta_from_lmstudio(e, odd)
        found.problems.extend(f"model {e['key']}: {x}" for x in odd)
        instances = e.get("loaded_instances")
        size = e.get("size_bytes") if e.get("format") == "gguf" else None
        if not isinstance(instances, list) or not instances:
            found.available.append(
                {
                    "name": e["key"],
                    "size_mb": _mb(e.get("size_bytes")),
                    "quant": qname or None,
                    "params": params_from_text(e.get("params_string")),
                    "meta": meta,
                    "lms_size": size,
                }
            )
            continue
        for inst in instances[:MAX_MODELS]:
            cfg = _obj(_obj(inst).get("config"))
            found.models.append(
                {
                    "name": _str(_obj(inst).get("id")) or e["key"],
                    "size_mb": _mb(e.get("size_bytes")),
                    "quant": qname or None,
                    "ctx": cfg.get("context_length"),
                    "parallel": cfg.get("parallel"),
                    "meta": meta,
                    "lms_size": size,
                    "sources": _reported("size_mb", "ctx", "parallel"),
                }
            )
    return found


async def probe_lmstudio(client: httpx.AsyncClient, base: str, p: Probing) -> Found:
    r = await client.get(f"{base}/api/v1/models")
    version = r.headers.get("x-lm-studio-version")
    if r.status_code == 200:
        try:
            lst = _json(r, "/api/v1/models")
        except ProbeError:
            lst = None
        if isinstance(lst, dict) and isinstance(lst.get("models"), list):
            return _lmstudio_v1(lst["models"], version)
    r = await client.get(f"{base}/api/v0/models")  # before 0.4
    lst = _json(r, "/api/v0/models")
    _expect(isinstance(lst, dict) and isinstance(lst.get("data"), list), "/api/v0/models")
    found = Found(version=r.headers.get("x-lm-studio-version"))
    for m in lst["data"]:
        if not isinstance(m, dict) or not isinstance(m.get("id"), str):
            continue
        entry = {"name": m["id"], "quant": m.get("quantization") or None}
        odd: list[str] = []
        entry["meta"] = meta_from_lmstudio(m, odd)
        found.problems.extend(f"model {m['id']}: {x}" for x in odd)
        if m.get("state") == "loaded":
            found.models.append(entry)
        else:
            found.available.append(entry)
    return found


# --- mlx_lm ----------------------------------------------------------------------------------


async def probe_mlx(client: httpx.AsyncClient, base: str, p: Probing) -> Found:
    """mlx_lm.server's /v1/models lists the models on disk (the Hugging Face cache), not the
    one in memory: which one is resident comes from its `--model` (see `_attribute`)."""
    data = await _openai_models(client, base)
    # mlx_lm sends no owned_by; llama-server, llama-cpp-python ("me"), vLLM and LM Studio do
    owners = sorted({str(m["owned_by"]) for m in data if m.get("owned_by") is not None})
    if owners:
        who = LLAMACPP_OWNERS.get(owners[0], owners[0])
        raise ProbeError(f"models owned_by {owners[0]!r} ({who}): not mlx_lm")
    found = Found(one_process=True)
    found.available = [{"name": m["id"]} for m in data]
    return found


PROBES: dict[str, Callable[[httpx.AsyncClient, str, Probing], Awaitable[Found]]] = {
    "ollama": probe_ollama,
    "llamacpp": probe_llamacpp,
    "vllm": probe_vllm,
    "lmstudio": probe_lmstudio,
    "mlx": probe_mlx,
}


# --- the engine's process --------------------------------------------------------------------


def _hf_dir(model: str, cwd: str | None) -> str | None:
    """Where mlx_lm's `--model` lives: a local folder (relative: from the engine's working
    directory), else a Hugging Face repo id's snapshot in the HF cache (`refs/main`)."""
    local = os.path.join(cwd or "", model)
    if os.path.isabs(local) and os.path.isdir(local):
        return local
    org, _, name = model.partition("/")
    if not (org and name) or "/" in name or org.startswith(".") or name.startswith("."):
        return None
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub"
    )
    repo = os.path.join(hub, f"models--{org}--{name}")
    try:
        with open(os.path.join(repo, "refs", "main"), encoding="ascii") as f:
            rev = f.read(64).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return os.path.join(repo, "snapshots", rev) if rev.isalnum() else None


def _hf_config(model: str, cwd: str | None, p: Probing) -> ModelMeta | None:
    """The config.json (and safetensors headers) of mlx_lm's model, read once per version;
    only a regular file of a config's size (never a fifo, a device or a whole disk)."""
    folder = _hf_dir(model, cwd)
    if folder is None:
        return None
    config = os.path.join(folder, "config.json")
    try:
        st = os.stat(config)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > HF_CONFIG_MAX:
        return None
    return _read_once(p, (config, st.st_mtime_ns, st.st_size), lambda: meta_from_hf_config(folder))


def _read_once(
    p: Probing, key: tuple[str, int, int], read: Callable[[], ModelMeta]
) -> ModelMeta | None:
    """A model file's metadata, read once per (path, mtime, size) and kept in a bounded cache;
    an unreadable or bad file is None (and is not read again until it changes)."""
    with p.lock:
        if key in p.ggufs:
            return p.ggufs[key]
    try:
        meta: ModelMeta | None = read()
    except (MetaFileError, OSError):
        meta = None
    with p.lock:
        while len(p.ggufs) >= SHOW_CACHE_MAX:
            del p.ggufs[next(iter(p.ggufs))]
        p.ggufs[key] = meta
    return meta


def _gguf(path: str, cwd: str | None, p: Probing) -> ModelMeta | None:
    """The header of a model file the engine names (a relative path is the engine's, from its
    working directory), read once per file version. Only a regular file named *.gguf: the
    path comes from the engine's answer, which is not trusted to point anywhere sensible."""
    try:
        full = os.path.join(cwd or "", path) if not os.path.isabs(path) else path
        if not full.lower().endswith(".gguf") or not os.path.isabs(full):
            return None
        st = os.stat(full)
    except (OSError, ValueError):  # gone, unreadable, a NUL in the name
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return _read_once(p, (full, st.st_mtime_ns, st.st_size), lambda: meta_from_gguf(full))


def _lookup(
    url: str, p: Probing, files: list[str], sizes: list[int], kind: str
) -> tuple[bool, procs.ProcFacts, dict[str, ModelMeta | None]]:
    """(whether the engine runs on this machine, its process, the headers of the model files
    it names, of LM Studio's files of the `sizes` it reports (keyed `size:N`) and of mlx_lm's
    --model config.json (`hf:MODEL`)) from its URL (blocking: run in a worker thread)."""
    u = httpx.URL(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    if not procs.is_local(u.host):
        return False, procs.ProcFacts(), {}
    with p.lock:
        seen = p.pids.get(port)
    facts = procs.facts(port, seen)
    if facts.pid is not None and facts.started is not None:
        with p.lock:
            p.pids[port] = (facts.pid, facts.started)
    headers = {f: _gguf(f, facts.cwd, p) for f in files[:ROUTER_DETAILS]}
    if sizes:
        by_size = _lmstudio_files(sizes[:ROUTER_DETAILS])
        headers |= {f"size:{n}": _gguf(f, None, p) for n, f in by_size.items()}
    if kind == "mlx" and (model := _flag(facts.cmdline, "--model")):
        headers[f"hf:{model}"] = _hf_config(model, facts.cwd, p)
    return True, facts, headers


def _lmstudio_files(sizes: list[int]) -> dict[int, str]:
    """LM Studio's GGUF of each size (`<models>/<publisher>/<repo>/<file>.gguf`): a size that
    no file or more than one file has is left out. Regular files only, and no symlink is
    followed below the models folder (a link could point anywhere)."""
    want = {n for n in sizes if isinstance(n, int) and n > 0}
    hits: dict[int, list[str]] = {}
    seen = 0
    for sub in LMSTUDIO_DIRS:
        root = os.path.join(os.path.expanduser("~"), sub)
        for level1 in _dirs(root):
            for level2 in _dirs(level1):
                try:
                    entries = list(os.scandir(level2))
                except OSError:
                    continue
                for f in entries:
                    seen += 1
                    if seen > LMSTUDIO_SCAN_MAX:
                        return {n: fs[0] for n, fs in hits.items() if len(fs) == 1}
                    try:
                        if not f.name.lower().endswith(".gguf") or not f.is_file(
                            follow_symlinks=False
                        ):
                            continue
                        size = f.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
                    if size in want:
                        hits.setdefault(size, []).append(f.path)
    return {n: fs[0] for n, fs in hits.items() if len(fs) == 1}


def _dirs(path: str) -> list[str]:
    """The folders directly in `path` (no symlinks), sorted; [] where it cannot be read."""
    try:
        return sorted(e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def _attribute(
    kind: str,
    found: Found,
    local: bool,
    proc: procs.ProcFacts,
    headers: dict[str, ModelMeta | None],
    p: Probing,
) -> None:
    """What the engine's machine adds to its answer: the resident mlx model (its --model),
    PIDs, a measured size where the engine reports none (or, on a CPU run, its whole resident
    set), RAM-not-VRAM on a node without a GPU, and a local model file's GGUF header as the
    metadata (layers, heads, window: what llama.cpp's own `meta` leaves out)."""
    if kind == "mlx" and (resident := _flag(proc.cmdline, "--model")):
        found.available = [m for m in found.available if m["name"] != resident]
        found.models.append(
            {"name": resident, "sources": {}, "meta": headers.get(f"hf:{resident}")}
        )
    if kind == "ollama" and proc.env:
        found.settings.update(_ollama_env(proc.env, found.problems))
    for m in [*found.models, *found.available]:  # LM Studio: its file's header, where found
        if (header := headers.get(f"size:{m.pop('lms_size', None)}")) is not None:
            m["meta"] = header
    cpu_only = local and not p.gpus
    by_file = {path: (pid, rss) for pid, (path, rss) in proc.child_models.items()}
    for m in found.models:
        m.setdefault("sources", {})
        path = m.pop("gguf", None) or ""
        if (header := headers.get(path)) is not None:
            m["meta"] = header
        if found.settings.get("router") and path in by_file:  # the child serving this model
            m["pid"], rss = by_file[path]
            if cpu_only or not m.get("size_mb"):
                m["size_mb"] = _mb(rss)
                m["sources"]["size_mb"] = "measured"
        if found.one_process and proc.pid is not None:
            m["pid"] = proc.pid
            # on a CPU run the process's resident set is the model's total (weights, KV cache,
            # buffers); elsewhere it is a fallback for an engine that reports no size at all
            if proc.rss_bytes and len(found.models) == 1 and (cpu_only or not m.get("size_mb")):
                m["size_mb"] = _mb(proc.rss_bytes)
                m["sources"]["size_mb"] = "measured"
        # (on a GPU node an engine's unreported VRAM is NVML's, per process: collect/attribute)
        if cpu_only and m.get("vram_mb") is None:
            m["vram_mb"] = 0.0
            m["sources"]["vram_mb"] = "measured"


# --- onto the wire ---------------------------------------------------------------------------


def _model(m: dict[str, Any], where: str, problems: list[str]) -> Model | None:
    name = bounded(Model, "name", m["name"], f"{where}: a model", problems)
    if name is None:
        return None
    plain = {k: v for k, v in m.items() if k not in ("name", "meta", "sources")}
    fields = measured(Model, f"{where}: model {name}", problems, **plain)
    sources = {k: v for k, v in m.get("sources", {}).items() if fields.get(k) is not None}
    return Model(name=name, meta=m.get("meta"), sources=sources, **fields)


def _disk(m: dict[str, Any], where: str, problems: list[str]) -> DiskModel | None:
    name = bounded(DiskModel, "name", m["name"], f"{where}: a model on disk", problems)
    if name is None:
        return None
    plain = {k: v for k, v in m.items() if k not in ("name", "meta")}
    fields = measured(DiskModel, f"{where}: model {name}", problems, **plain)
    return DiskModel(name=name, meta=m.get("meta"), **fields)


def _capped(items: list[Any], what: str, where: str, problems: list[str]) -> list[Any]:
    if len(items) > MAX_MODELS:
        problems.append(f"{where}: {len(items)} {what}, the first {MAX_MODELS} shown")
    return items[:MAX_MODELS]


def _up(name: str, kind: str, url: str, found: Found, pids: list[int]) -> Engine:
    """An engine that answered, each figure checked against the wire's bounds on its own: an
    odd one (a negative size, an exabyte of VRAM, a 10,000-character name) is dropped and
    named in `error`, the rest shown."""
    where = f"engine {name}"
    problems = [f"{where}: {x}" for x in found.problems]
    models = [_model(m, where, problems) for m in found.models]
    available = [_disk(m, where, problems) for m in found.available]
    settings = None
    if found.settings:
        fields = measured(EngineSettings, f"{where}: settings", problems, **found.settings)
        settings = EngineSettings(**{k: v for k, v in fields.items() if v is not None})
    version = bounded(Engine, "version", found.version, where, problems)
    shown = _capped([m for m in models if m is not None], "models", where, problems)
    disk = _capped([m for m in available if m is not None], "on disk", where, problems)
    error = None
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        error = "; ".join(problems[:3]) + more
    return Engine(
        name=name,
        kind=kind,
        url=url,
        status="up",
        version=version,
        models=shown,
        available=disk,
        settings=settings,
        pids=pids[:MAX_MODELS],
        error=error,
    )


async def probe_engine(
    client: httpx.AsyncClient,
    name: str,
    kind: str,
    url: str,
    timeout_s: float,
    probing: Probing | None = None,
) -> Engine:
    """One engine's state. `probing` carries the node's facts and the caches between ticks
    (a fresh one, without GPUs, where the caller keeps none)."""
    p = probing if probing is not None else Probing()
    base = url.rstrip("/")
    err: str
    try:
        with anyio.fail_after(timeout_s):
            found = await PROBES[kind](client, base, p)
        # the machine's side has a budget of its own: a slow process table costs this tick
        # the PIDs (the lookup finishes in its thread and fills the cache), never the engine
        local, proc, headers = False, procs.ProcFacts(), {}
        files = [m["gguf"] for m in found.models if m.get("gguf")]
        sizes = [m["lms_size"] for m in [*found.models, *found.available] if m.get("lms_size")]
        with anyio.move_on_after(LOOKUP_BUDGET_S):
            local, proc, headers = await anyio.to_thread.run_sync(
                _lookup, url, p, files, sizes, kind, abandon_on_cancel=True
            )
        _attribute(kind, found, local, proc, headers, p)
        return _up(name, kind, url, found, proc.pids)
    except TimeoutError:
        err = f"no answer within {timeout_s:g} s"
    except httpx.ConnectError:
        err = "connection refused"
    except httpx.HTTPError as exc:
        err = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except ProbeError as exc:
        err = str(exc)
    return Engine(name=name, kind=kind, url=url, status="down", error=err)
