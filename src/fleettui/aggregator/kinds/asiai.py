"""`kind = "asiai"`: a machine running `asiai web` (asiai >= 1.4), read and acted on via its API.

Reads: `GET /api/v1/snapshot` (bytes, -1/0/"unknown" sentinels, `engines_status[]`) mapped onto
NodeSnapshot; serious thermal levels and memory pressure become problems. Writes:
`POST /api/v1/fleet/{nickname}/command` with asiai's Bearer token and an `Origin` equal to the
node's own origin (asiai refuses writes without one). asiai accepts only `Host: localhost`,
`127.0.0.1` or `*.local` unless the node sets ASIAI_TRUSTED_HOSTS, so its 400 says exactly that.
asiai has no event stream we read and no hash-chained audit log: polled only, Audit `n/a`.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fleettui.aggregator.kinds.base import NodeKind, Sent
from fleettui.aggregator.kinds.fleettui import failure_reason
from fleettui.aggregator.kinds.mapping import host_of, mb, parse_json, pos, shape_error
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.errors import FetchError
from fleettui.config import NodeConfig
from fleettui.wire import (
    ActionRequest,
    ActionResult,
    Cpu,
    Engine,
    Gpu,
    Memory,
    Model,
    NodeInfo,
    NodeSnapshot,
    Power,
    PowerPart,
    scope_label,
)

SNAPSHOT_PATH = "/api/v1/snapshot"
DEFAULT_NICKNAME = "self"
TAIL_CHARS = 2000
HOST_HINT = (
    "asiai accepts only Host localhost, 127.0.0.1 or *.local unless the node lists this name in "
    "ASIAI_TRUSTED_HOSTS; use the node's .local name in its url"
)
STATUS_HINTS = {
    401: "check the node's asiai token (Bearer asai_...)",
    403: "asiai wants an Origin equal to its own URL",
    501: "the node has no fleet tokens yet; create one with asiai on that machine",
    503: "asiai's command companion is not running on the node",
}


def asiai_power(watts: float | None) -> Power:
    """asiai's `power_total_watts` is the SoC's IOReport rails (CPU, GPU, ANE, DRAM)."""
    if watts is None:
        return Power()
    part = PowerPart(name="soc", kind="soc", source="asiai", watts=watts)
    return Power(watts=watts, scope=scope_label(["soc"]), source="asiai", parts=[part])


def asiai_snapshot(d: dict[str, Any], url: str) -> NodeSnapshot:
    """Map asiai's snapshot JSON (bytes, sentinels, engines_status[]) onto ours."""
    problems: list[str] = []
    pressure = d.get("mem_pressure")
    if pressure in ("warn", "critical"):
        problems.append(f"memory pressure {pressure}")
    thermal = d.get("thermal_level")
    if thermal in ("serious", "critical"):
        problems.append(f"thermal level {thermal}")
    engines = []
    for e in d.get("engines_status") or []:
        models = [
            Model(
                name=m["name"],
                vram_mb=mb(m.get("size_vram")),
                quant=m.get("quantization") or None,
            )
            for m in e.get("models") or []
        ]
        up = bool(e.get("reachable"))
        engines.append(
            Engine(
                name=e["name"],
                url=e.get("url") or url,
                status="up" if up else "down",
                version=e.get("version") or None,
                models=models,
                error=None if up else "not reachable (reported by asiai)",
            )
        )
    gpus = []
    util = d.get("gpu_utilization_pct")
    if isinstance(util, int | float) and util >= 0:
        gpus.append(
            Gpu(
                index=0,
                name="Apple GPU",
                util_pct=float(util),
                memory_used_mb=mb(d.get("gpu_mem_in_use")),
                power_w=pos(d.get("power_gpu_watts")),
            )
        )
    total_mb, used_mb = mb(d.get("mem_total")), mb(d.get("mem_used"))
    return NodeSnapshot(
        node=NodeInfo(
            hostname=host_of(url),
            os="unknown",
            arch="unknown",
            agent_version="asiai",
            uptime_s=pos(d.get("uptime")) or 0.0,
        ),
        ts=float(d.get("ts") or time.time()),
        cpu=Cpu(cores=int(c) if (c := pos(d.get("cpu_cores"))) else None),
        memory=Memory(
            total_mb=total_mb,
            used_mb=used_mb,
            pressure_pct=round(100 * used_mb / total_mb, 1) if total_mb and used_mb else None,
        ),
        gpus=gpus,
        power=asiai_power(pos(d.get("power_total_watts"))),
        engines=engines,
        problems=problems,
    )


def to_result(
    d: dict[str, Any], action: str, engine: str | None, model: str | None
) -> ActionResult:
    """asiai's `{ok, exit_code, stdout, stderr, duration_ms, error, detail}` as our result."""
    out = "\n".join(
        s.rstrip() for s in (d.get("stdout"), d.get("stderr")) if isinstance(s, str) and s.strip()
    )
    error, detail = d.get("error"), d.get("detail")
    if error and isinstance(detail, str) and detail:
        error = f"{error}: {detail}"
    code = d.get("exit_code")
    took = d.get("duration_ms")
    return ActionResult(
        ok=d.get("ok") is True,
        action=action,
        engine=engine,
        model=model,
        exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        duration_ms=float(took) if isinstance(took, int | float) else 0.0,
        output_tail=out[-TAIL_CHARS:],
        error=str(error)[:400] if error else None,
    )


class AsiaiKind(NodeKind):
    name = "asiai"

    async def fetch_snapshot(self, client: NodeClient, url: str, timeout_s: float) -> NodeSnapshot:
        try:
            body = await client.get(SNAPSHOT_PATH, timeout_s=timeout_s)
        except FetchError as exc:
            if exc.status == 400:
                raise FetchError(f"{exc.reason}: {HOST_HINT}", reachable=True, status=400) from None
            raise
        d = parse_json(body, SNAPSHOT_PATH)
        if not isinstance(d, dict):
            raise FetchError(f"bad answer from {SNAPSHOT_PATH}: not a JSON object", reachable=True)
        try:
            return asiai_snapshot(d, url)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise shape_error(SNAPSHOT_PATH, exc) from None

    def refuse(self, req: ActionRequest) -> str | None:
        if req.action == "load":  # asiai's command API has no load
            return "asiai has no load command; load needs a fleettui agent on that machine"
        return None

    async def act(
        self,
        client: NodeClient,
        node: NodeConfig,
        req: ActionRequest,
    ) -> Sent:
        action, engine, model = req.action, req.engine, req.model
        nick = quote(node.nickname or DEFAULT_NICKNAME, safe="")
        args = {k: v for k, v in (("engine", engine), ("model", model)) if v is not None}
        body = {"command": action, "args": args}
        try:
            reply = await client.post(
                f"/api/v1/fleet/{nick}/command",
                body,
                timeout_s=self.action_timeout_s(action),
                # the Origin asiai compares with its Host header: scheme://host[:port], no path
                headers={"Origin": client.endpoint.origin},
            )
        except FetchError as exc:
            return exc.reason, None
        status, data = reply.status, reply.json()
        if status in (200, 500) and isinstance(data, dict) and "ok" in data:
            result = to_result(data, action, engine, model)
            if status == 200 and result.ok:
                return None, result
            if result.ok:  # a 500 that claims success is still a failure
                result = result.model_copy(update={"ok": False})
            return failure_reason(result), result
        reason = reply.reason
        if status == 400 and not isinstance(data, dict):
            reason += f": {HOST_HINT}"
        elif hint := STATUS_HINTS.get(status):
            reason += f" ({hint})"
        return reason, None


KIND = AsiaiKind()
