"""The load action: which parameters each engine applies, the fit gate, and the runners.

A load is refused (400) when the engine would not apply a parameter it was sent (a context
length for a llama.cpp router, which loads with the server's own -c): a load that silently
ignores what the operator asked for is worse than one refused with the reason. Before the
intent is audited the agent collects a fresh snapshot of its own node and runs the same fit
check the operator's side runs (`capacity.fit.check_fit`); a model that does not fit, or whose
fit cannot be told, is refused with 409 and the breakdown unless the request says `force`.
When it fits only after evicting idle models, the agent unloads those through their engines'
own APIs first and says so in its output (the operator saw the same list before confirming).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import anyio.to_thread
import httpx

from fleettui.agent.refusals import Rejection
from fleettui.capacity.estimate import mib
from fleettui.capacity.files import MetaFileError, meta_from_gguf
from fleettui.capacity.fit import Fit, FitRequest, check_fit, find_meta, same_model
from fleettui.wire import ActionRequest, ModelMeta, NodeSnapshot

# What each engine's own load API applies; a command configured in agent.toml applies what its
# argv names ({ctx}, {parallel}, {kv_type}); a simulated node takes them all (it only pretends).
API_PARAMS: dict[str, frozenset[str]] = {
    "ollama": frozenset({"ctx", "keep_alive"}),  # options.num_ctx; parallel and KV are server-wide
    "lmstudio": frozenset({"ctx"}),  # context_length
    "llamacpp": frozenset(),  # router mode loads with the server's own -c/-np/-ctk
}
ROUTER_POLL_S = 0.2  # how often a llama.cpp router's /models is read while a model loads
PLACEHOLDERS = {"{ctx}": "ctx", "{parallel}": "parallel", "{kv_type}": "kv_type"}


def sent_params(req: ActionRequest) -> list[str]:
    """The load parameters the request sets (force is not one an engine applies)."""
    return [k for k in ("ctx", "parallel", "kv_type", "keep_alive") if getattr(req, k)]


def check_applies(req: ActionRequest, applied: frozenset[str], by: str) -> None:
    """400 naming the first parameter `by` (an engine's API, a configured argv) would drop."""
    for name in sent_params(req):
        if name not in applied:
            raise Rejection(
                400,
                f"{name} is not applied by {by}; send the load without it"
                + (f" or use {{{name}}} in the command" if name in PLACEHOLDERS.values() else ""),
                {"field": name},
            )


def argv_params(template: list[str]) -> frozenset[str]:
    return frozenset(PLACEHOLDERS[a] for a in template if a in PLACEHOLDERS)


def fill_load_placeholders(argv: list[str], req: ActionRequest, key: str) -> list[str]:
    """`{ctx}` `{parallel}` `{kv_type}` as whole argv items; 400 when the request lacks one."""
    out = []
    for arg in argv:
        name = PLACEHOLDERS.get(arg)
        if name is None:
            out.append(arg)
            continue
        value = getattr(req, name)
        if value is None:
            raise Rejection(400, f"{key} uses {arg}; send {name}", {"field": name})
        out.append(str(value))
    return out


# --- the fit gate --------------------------------------------------------------------------


def fit_for(snap: NodeSnapshot, req: ActionRequest, meta: ModelMeta | None = None) -> Fit:
    """The agent's own answer, from its own snapshot (its budget, ledger and the metadata its
    probes read from the engine: Ollama /api/show, llama.cpp meta, LM Studio's model list)."""
    assert req.model is not None
    fit_req = FitRequest(
        model=req.model, ctx=req.ctx, parallel=req.parallel, kv_type=req.kv_type, engine=req.engine
    )
    return check_fit(snap.node.hostname, snap, meta, fit_req)


def known_meta(snap: NodeSnapshot, model: str) -> bool:
    return find_meta({"": snap}, model) is not None


def _router_path(entry: dict[str, Any]) -> Any:
    """The model's GGUF path: `path`, or (the real llama-server's /models) the `--model`
    argument of the child command line it lists under `status.args`."""
    if "path" in entry:
        return entry["path"]
    status = entry.get("status")
    args = status.get("args") if isinstance(status, dict) else None
    if isinstance(args, list):
        for flag, value in pairwise(args):
            if flag in ("--model", "-m"):
                return value
    return None


async def router_meta(client: httpx.AsyncClient, base: str, model: str) -> ModelMeta | None:
    """A llama.cpp router lists a model it has not loaded with the path of its GGUF file but no
    metadata: read the file's header (header only, capacity.files) so the fit can be told."""
    r = await client.get(f"{base}/models")
    body = r.json() if r.status_code == 200 else None
    data = body.get("data") if isinstance(body, dict) else None
    for d in data if isinstance(data, list) else []:
        path = _router_path(d) if isinstance(d, dict) and d.get("id") == model else None
        if isinstance(path, str) and path.startswith("/") and path.endswith(".gguf"):
            try:
                return await anyio.to_thread.run_sync(meta_from_gguf, path)
            except (MetaFileError, OSError):
                return None
    return None


def gate(fit: Fit, req: ActionRequest) -> Rejection | None:
    """409 with the breakdown when it does not fit or cannot be told, unless forced."""
    if fit.verdict in ("fits", "evict") or req.force:
        return None
    if fit.verdict == "unknown":
        head = f"cannot tell whether {req.model} fits on {fit.node}"
    else:
        head = f"{req.model} does not fit on {fit.node}"
    why = "; ".join(fit.reasons[:2])
    return Rejection(409, f"{head}: {why} (send force to load anyway)", fit.to_json())


def audit_fit(fit: Fit) -> dict[str, Any]:
    """What the audit entry keeps of the check: verdict, figures, what was to be evicted."""
    return {
        "verdict": fit.verdict,
        "need_mib": None if fit.need_bytes is None else round(fit.need_bytes / 2**20),
        "free_mib": None if fit.free_bytes is None else round(fit.free_bytes / 2**20),
        "evict": list(fit.evict),
    }


def engine_router(snap: NodeSnapshot | None, engine: str) -> bool:
    """Whether the named llama.cpp engine is in router mode (its probe read /models)."""
    for e in snap.engines if snap else []:
        if e.name == engine:
            return bool(e.settings and e.settings.router)
    return False


# --- the runners ---------------------------------------------------------------------------


@dataclass
class LoadOutcome:
    ok: bool
    lines: list[str]
    error: str | None = None


Unload = Callable[[str, str], Awaitable[tuple[bool, str]]]  # (engine, model) -> ok, line


def keep_alive_value(text: str) -> str | int:
    """Ollama reads a JSON number as seconds (-1: forever) and a string as a Go duration, which
    needs a unit: "300" and "-1" go as numbers."""
    return int(text) if text.lstrip("-").isdigit() else text


async def evict_first(fit: Fit, snap: NodeSnapshot, unload: Unload) -> LoadOutcome | None:
    """Unload the idle models the fit named, each through its own engine; None when all went."""
    lines: list[str] = []
    for name in fit.evict:
        owner = next(
            (e.name for e in snap.engines for m in e.models if same_model(m.name, name)), None
        )
        if owner is None:
            continue  # gone since the snapshot: nothing to free
        ok, line = await unload(owner, name)
        lines.append(line)
        if not ok:
            return LoadOutcome(False, lines, f"could not evict {name}: not loading")
    return None if not lines else LoadOutcome(True, lines)


async def load_ollama(
    client: httpx.AsyncClient, base: str, req: ActionRequest, *, pull: bool, timeout_s: float
) -> LoadOutcome:
    """POST /api/pull (when configured), then /api/generate with an empty prompt: Ollama loads
    the model with the options given and answers `done_reason: load` without generating."""
    lines: list[str] = []
    if pull:
        r = await client.post(
            f"{base}/api/pull", json={"model": req.model, "stream": False}, timeout=timeout_s
        )
        if not 200 <= r.status_code < 300:
            return LoadOutcome(False, [f"pull: HTTP {r.status_code} {r.text[:200]}"], "pull failed")
        lines.append(f"pulled {req.model}")
    body: dict[str, Any] = {"model": req.model, "prompt": "", "stream": False}
    if req.keep_alive is not None:
        body["keep_alive"] = keep_alive_value(req.keep_alive)
    if req.ctx is not None:
        body["options"] = {"num_ctx": req.ctx}
    r = await client.post(f"{base}/api/generate", json=body, timeout=timeout_s)
    return _answered(r, lines, req)


async def load_llamacpp_router(
    client: httpx.AsyncClient, base: str, req: ActionRequest, *, timeout_s: float
) -> LoadOutcome:
    deadline = anyio.current_time() + timeout_s
    r = await client.post(f"{base}/models/load", json={"model": req.model}, timeout=timeout_s)
    done = _answered(r, [], req)
    if not done.ok:
        return done
    # The router answers while its child server still reads the weights in (`loading`): the
    # load is done when /models says `loaded` (what a snapshot then shows is what it holds).
    state = None
    while anyio.current_time() < deadline:
        state = await _router_state(client, base, req.model)
        if state != "loading":
            break
        await anyio.sleep(ROUTER_POLL_S)
    if state in ("loaded", None):  # None: a router that lists no status (the load was taken)
        return done
    return LoadOutcome(
        False,
        [f"{req.model}: the router says {str(state)[:40]!r} after the load"],
        f"the router did not finish loading {req.model} ({str(state)[:40]})",
    )


async def _router_state(client: httpx.AsyncClient, base: str, model: str) -> object:
    """The model's `status.value` in the router's /models, or None when it lists none."""
    try:
        r = await client.get(f"{base}/models")
        body = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    data = body.get("data") if isinstance(body, dict) else None
    for d in data if isinstance(data, list) else []:
        if isinstance(d, dict) and d.get("id") == model:
            status = d.get("status")
            return status.get("value") if isinstance(status, dict) else None
    return None


async def load_lmstudio(
    client: httpx.AsyncClient,
    base: str,
    req: ActionRequest,
    *,
    lms: list[str] | None,
    run: Callable[[list[str]], Awaitable[tuple[bool, str, str | None]]],
    timeout_s: float,
) -> LoadOutcome:
    """REST `POST /api/v1/models/load` (LM Studio 0.4+); where the server has none (404), the
    `lms load` CLI when agent.toml names it."""
    body: dict[str, Any] = {"model": req.model}
    if req.ctx is not None:
        body["context_length"] = req.ctx
    r = await client.post(f"{base}/api/v1/models/load", json=body, timeout=timeout_s)
    if r.status_code != 404:
        return _answered(r, [], req)
    if lms is None:
        return LoadOutcome(
            False,
            [f"HTTP 404 {r.text[:200]}"],
            "this LM Studio has no REST load endpoint (before 0.4?): set "
            "engines.<name>.lms to the lms CLI in agent.toml",
        )
    assert req.model is not None
    argv = [*lms, "load", req.model]
    if req.ctx is not None:
        argv += ["--context-length", str(req.ctx)]
    ok, output, error = await run(argv)
    return LoadOutcome(ok, ["no REST load endpoint: ran lms load", output], error)


def _answered(r: httpx.Response, lines: list[str], req: ActionRequest) -> LoadOutcome:
    if 200 <= r.status_code < 300:
        return LoadOutcome(True, [*lines, f"loaded {req.model}"])
    return LoadOutcome(
        False,
        [*lines, f"{req.model}: HTTP {r.status_code} {r.text[:200]}"],
        f"the engine refused to load {req.model} (HTTP {r.status_code})",
    )


def describe_fit(fit: Fit) -> str:
    """One line for the output tail: what the agent's own check said."""
    need = "?" if fit.need_bytes is None else mib(fit.need_bytes)
    free = "?" if fit.free_bytes is None else mib(fit.free_bytes)
    return f"fit on {fit.node}: {fit.verdict} (needs {need}, {free} free)"
