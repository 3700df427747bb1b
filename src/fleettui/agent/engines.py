"""HTTP probes for the inference engines, speaking each engine's documented JSON.

A probe never raises: an engine that does not answer, answers late or answers garbage is
reported `down` with the reason in `Engine.error`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx

from fleettui.agent.collect.bounds import bounded, measured
from fleettui.wire import Engine, Model

MB = 1024 * 1024
MAX_BODY = 4 * 1024 * 1024


class ProbeError(Exception):
    """The engine answered but not in a way we can use."""


async def _get_json(client: httpx.AsyncClient, url: str) -> Any:
    r = await client.get(url)
    if r.status_code != 200:
        raise ProbeError(f"GET {httpx.URL(url).path} -> HTTP {r.status_code}")
    if len(r.content) > MAX_BODY:
        raise ProbeError(f"GET {httpx.URL(url).path}: body over {MAX_BODY} bytes")
    try:
        return r.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProbeError(f"GET {httpx.URL(url).path}: not JSON") from None


def _mb(n: Any) -> Any:
    """Bytes as MiB; anything else as sent (None, or left for `bounded` to name)."""
    if isinstance(n, int | float) and not isinstance(n, bool):
        try:
            return round(n / MB, 1)
        except OverflowError:  # an integer too big for a float
            return n
    return n


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise ProbeError(f"unexpected answer: {what}")


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or path


async def probe_ollama(client: httpx.AsyncClient, base: str) -> tuple[Any, list[dict[str, Any]]]:
    ver = await _get_json(client, f"{base}/api/version")
    _expect(isinstance(ver, dict) and isinstance(ver.get("version"), str), "/api/version")
    ps = await _get_json(client, f"{base}/api/ps")
    _expect(isinstance(ps, dict) and isinstance(ps.get("models"), list), "/api/ps")
    models = []
    for m in ps["models"]:
        _expect(isinstance(m, dict) and isinstance(m.get("name"), str), "/api/ps model")
        details = m.get("details") if isinstance(m.get("details"), dict) else {}
        models.append(
            {
                "name": m["name"],
                "size_mb": _mb(m.get("size")),
                "vram_mb": _mb(m.get("size_vram")),
                "quant": details.get("quantization_level") or None,
            }
        )
    return ver["version"], models


async def probe_llamacpp(client: httpx.AsyncClient, base: str) -> tuple[Any, list[dict[str, Any]]]:
    r = await client.get(f"{base}/health")
    if r.status_code == 503:
        raise ProbeError("loading model (HTTP 503 from /health)")
    if r.status_code != 200:
        raise ProbeError(f"GET /health -> HTTP {r.status_code}")
    version = None
    model_path = None
    try:
        props = await _get_json(client, f"{base}/props")
        if isinstance(props, dict):
            version = props.get("build_info") if isinstance(props.get("build_info"), str) else None
            model_path = (
                props.get("model_path") if isinstance(props.get("model_path"), str) else None
            )
    except ProbeError:
        props = None
    size = None
    owned_by = None
    try:
        lst = await _get_json(client, f"{base}/v1/models")
        data = lst.get("data") if isinstance(lst, dict) else None
        if isinstance(data, list) and data and isinstance(data[0], dict):
            model_path = model_path or data[0].get("id")
            owned_by = data[0].get("owned_by")
            meta = data[0].get("meta")
            if isinstance(meta, dict):
                size = _mb(meta.get("size"))
    except ProbeError:
        if props is None:
            raise
    # mlx_lm and vLLM also answer /health with 200: only /props or owned_by prove llama.cpp.
    if not isinstance(props, dict) and owned_by != "llamacpp":
        raise ProbeError("answers /health but not /props: not llama.cpp")
    models = (
        [{"name": _basename(model_path), "size_mb": size, "vram_mb": size}] if model_path else []
    )
    return version, models


async def _openai_models(client: httpx.AsyncClient, base: str) -> list[dict[str, Any]]:
    lst = await _get_json(client, f"{base}/v1/models")
    _expect(isinstance(lst, dict) and isinstance(lst.get("data"), list), "/v1/models")
    out = [m for m in lst["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    _expect(len(out) == len(lst["data"]), "/v1/models entry without id")
    return out


async def probe_vllm(client: httpx.AsyncClient, base: str) -> tuple[Any, list[dict[str, Any]]]:
    data = await _openai_models(client, base)
    version = None
    try:
        v = await _get_json(client, f"{base}/version")
        version = v.get("version") if isinstance(v, dict) else None
    except ProbeError:
        pass
    if version is None and not any(m.get("owned_by") == "vllm" for m in data):
        raise ProbeError("no /version and no model owned_by vllm: not vLLM")
    return version, [{"name": m["id"]} for m in data if not m.get("parent")]


async def probe_lmstudio(client: httpx.AsyncClient, base: str) -> tuple[Any, list[dict[str, Any]]]:
    r = await client.get(f"{base}/api/v0/models")
    if r.status_code != 200:
        raise ProbeError(f"GET /api/v0/models -> HTTP {r.status_code}")
    try:
        lst = r.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProbeError("GET /api/v0/models: not JSON") from None
    _expect(isinstance(lst, dict) and isinstance(lst.get("data"), list), "/api/v0/models")
    models = [
        {"name": m["id"], "quant": m.get("quantization") or None}
        for m in lst["data"]
        if isinstance(m, dict) and isinstance(m.get("id"), str) and m.get("state") == "loaded"
    ]
    return r.headers.get("x-lm-studio-version"), models


async def probe_mlx(client: httpx.AsyncClient, base: str) -> tuple[Any, list[dict[str, Any]]]:
    # mlx_lm's /v1/models lists the whole HF cache, not what is resident; llama-server also
    # answers here, so refuse to claim a server that has /props.
    data = await _openai_models(client, base)
    if any(m.get("owned_by") in ("llamacpp", "vllm") for m in data):
        raise ProbeError(f"this is {data[0].get('owned_by')}, not mlx_lm")
    return None, [{"name": m["id"]} for m in data[:1]]


PROBES: dict[
    str, Callable[[httpx.AsyncClient, str], Awaitable[tuple[Any, list[dict[str, Any]]]]]
] = {
    "ollama": probe_ollama,
    "llamacpp": probe_llamacpp,
    "vllm": probe_vllm,
    "lmstudio": probe_lmstudio,
    "mlx": probe_mlx,
}


def _up(name: str, url: str, version: Any, found: list[dict[str, Any]]) -> Engine:
    """An engine that answered, each figure checked against the wire's bounds on its own: an
    odd one (a negative size, an exabyte of VRAM, a 10,000-character name) is dropped and
    named in `error`, the rest shown."""
    problems: list[str] = []
    where = f"engine {name}"
    models = []
    for m in found:
        model_name = bounded(Model, "name", m["name"], f"{where}: a model", problems)
        if model_name is not None:
            fields = {k: v for k, v in m.items() if k != "name"}
            models.append(
                Model(
                    name=model_name,
                    **measured(Model, f"{where}: model {model_name}", problems, **fields),
                )
            )
    version = bounded(Engine, "version", version, where, problems)
    error = None
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        error = "; ".join(problems[:3]) + more
    return Engine(name=name, url=url, status="up", version=version, models=models, error=error)


async def probe_engine(
    client: httpx.AsyncClient, name: str, kind: str, url: str, timeout_s: float
) -> Engine:
    base = url.rstrip("/")
    err: str
    try:
        with anyio.fail_after(timeout_s):
            version, found = await PROBES[kind](client, base)
        return _up(name, url, version, found)
    except TimeoutError:
        err = f"no answer within {timeout_s:g} s"
    except httpx.ConnectError:
        err = "connection refused"
    except httpx.HTTPError as exc:
        err = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except ProbeError as exc:
        err = str(exc)
    return Engine(name=name, url=url, status="down", error=err)
