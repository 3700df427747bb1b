"""`kind = "ollama"`: a bare Ollama server, no agent beside it.

Reads `/api/version` and `/api/ps` (one engine, its resident models). The only action Ollama
can do for itself is unloading: `POST /api/generate {"model": m, "keep_alive": 0}`, for one
model or every model `/api/ps` lists. Stopping or restarting needs something on the machine
(a fleettui agent or asiai), so those are refused here, before anything is sent.
"""

from __future__ import annotations

import json
import time

from fleettui.aggregator.kinds.base import NodeKind, Sent
from fleettui.aggregator.kinds.mapping import host_of, mb, parse_json, shape_error
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.errors import FetchError
from fleettui.config import NodeConfig
from fleettui.wire import ActionRequest, ActionResult, Engine, Model, NodeInfo, NodeSnapshot

ENGINE = "ollama"
TAIL_CHARS = 2000


def _names(ps: object) -> list[str]:
    if not isinstance(ps, dict) or not isinstance(ps.get("models"), list):
        raise ValueError("/api/ps: not {'models': [...]}")
    return [str(m["name"]) for m in ps["models"] if isinstance(m, dict) and m.get("name")]


class OllamaKind(NodeKind):
    name = "ollama"
    needs_token = False  # Ollama has no auth; a token is still sent when one is configured

    async def fetch_snapshot(self, client: NodeClient, url: str, timeout_s: float) -> NodeSnapshot:
        """A bare Ollama server as a one-engine node: version plus resident models."""
        deadline = time.monotonic() + timeout_s
        version = parse_json(await client.get("/api/version", timeout_s=timeout_s), "/api/version")
        left = max(0.05, deadline - time.monotonic())
        ps = parse_json(await client.get("/api/ps", timeout_s=left), "/api/ps")
        try:
            models = [
                Model(
                    name=m["name"],
                    size_mb=mb(m.get("size")),
                    vram_mb=mb(m.get("size_vram")),
                    quant=(m.get("details") or {}).get("quantization_level") or None,
                )
                for m in ps["models"]
            ]
            ver = str(version["version"])
            return NodeSnapshot(
                node=NodeInfo(
                    hostname=host_of(url),
                    os="unknown",
                    arch="unknown",
                    agent_version=f"ollama {ver}",
                    uptime_s=0.0,
                ),
                ts=time.time(),
                engines=[Engine(name=ENGINE, url=url, status="up", version=ver, models=models)],
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise shape_error("/api/ps", exc) from None  # ValidationError is a ValueError

    def refuse(self, req: ActionRequest) -> str | None:
        if req.action != "unload":  # asiai has no load: that needs our agent (and its fit check)
            who = "a fleettui agent" if req.action == "load" else "a fleettui agent or asiai"
            return (
                f"a bare Ollama node can only unload models (keep_alive 0); {req.action} needs "
                f"{who} on that machine"
            )
        if req.engine is not None and req.engine != ENGINE:
            return f"a bare Ollama node has only the engine 'ollama', not {req.engine!r}"
        return None

    async def act(
        self,
        client: NodeClient,
        node: NodeConfig,
        req: ActionRequest,
    ) -> Sent:
        action, model = req.action, req.model
        timeout = self.action_timeout_s(action)
        deadline = time.monotonic() + timeout
        t0 = time.perf_counter()
        lines: list[str] = []
        failed: list[str] = []
        try:
            if model:
                names = [model]
            else:
                names = _names(json.loads(await client.get("/api/ps", timeout_s=timeout)))
        except FetchError as exc:
            return (exc.reason if not exc.reachable else f"/api/ps: {exc.reason}"), None
        except ValueError as exc:
            return f"bad answer from Ollama: {exc}"[:200], None
        try:
            for m in names:
                left = max(0.05, deadline - time.monotonic())
                reply = await client.post(
                    "/api/generate", {"model": m, "keep_alive": 0}, timeout_s=left
                )
                if 200 <= reply.status < 300:
                    lines.append(f"unloaded {m}")
                else:
                    failed.append(m)
                    lines.append(f"{m}: {reply.reason}")
        except FetchError as exc:
            return exc.reason, None
        except ValueError as exc:
            return f"bad answer from Ollama: {exc}"[:200], None
        if not names:
            lines.append("no model loaded")
        result = ActionResult(
            ok=not failed,
            action=action,
            engine=ENGINE,
            model=model,
            duration_ms=round((time.perf_counter() - t0) * 1000, 1),
            output_tail="\n".join(lines)[-TAIL_CHARS:],
            error=f"could not unload {', '.join(failed)}" if failed else None,
        )
        if failed:
            detail = next(x for x in lines if x.startswith(f"{failed[0]}: "))
            return f"could not unload {detail}"[:300], result
        return None, result


KIND = OllamaKind()
