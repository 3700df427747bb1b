"""Read-only adapters for nodes that run no fleettui agent: their JSON mapped onto NodeSnapshot.

`kind = "asiai"` reads an asiai node API (`GET /api/v1/snapshot`, its own shape; see
design notes in docs/fleet-config.md), `kind = "ollama"` a bare Ollama server (`/api/version`
and `/api/ps`). Neither has an event stream or an audit chain, so those nodes are polled only
and their Audit column is n/a. Sentinels (-1, 0, "unknown") mean "not measured" and become None.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from fleettui.aggregator.http import FetchError, get_capped
from fleettui.wire import Cpu, Engine, Gpu, Memory, Model, NodeInfo, NodeSnapshot, Power

MB = 1024 * 1024


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FetchError(f"bad answer from {what}: invalid JSON ({exc})", reachable=True) from None


def _pos(x: Any) -> float | None:
    """A measured value, or None for the adapters' 'not measured' sentinels."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and x > 0 else None


def _mb(x: Any) -> float | None:
    v = _pos(x)
    return round(v / MB, 1) if v is not None else None


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


def _shape_error(what: str, exc: Exception) -> FetchError:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        return FetchError(f"bad answer from {what}: wrong shape: {loc}: {e['msg']}", reachable=True)
    return FetchError(f"bad answer from {what}: wrong shape: {exc}", reachable=True)


async def fetch_ollama(client: httpx.AsyncClient, url: str, timeout_s: float) -> NodeSnapshot:
    """A bare Ollama server as a one-engine node: version plus resident models."""
    deadline = time.monotonic() + timeout_s
    version = _json(await get_capped(client, "/api/version", timeout_s=timeout_s), "/api/version")
    left = max(0.05, deadline - time.monotonic())
    ps = _json(await get_capped(client, "/api/ps", timeout_s=left), "/api/ps")
    try:
        models = [
            Model(
                name=m["name"],
                size_mb=_mb(m.get("size")),
                vram_mb=_mb(m.get("size_vram")),
                quant=(m.get("details") or {}).get("quantization_level") or None,
            )
            for m in ps["models"]
        ]
        ver = str(version["version"])
        return NodeSnapshot(
            node=NodeInfo(
                hostname=_host(url),
                os="unknown",
                arch="unknown",
                agent_version=f"ollama {ver}",
                uptime_s=0.0,
            ),
            ts=time.time(),
            engines=[Engine(name="ollama", url=url, status="up", version=ver, models=models)],
        )
    except (KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise _shape_error("/api/ps", exc) from None


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
                vram_mb=_mb(m.get("size_vram")),
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
                memory_used_mb=_mb(d.get("gpu_mem_in_use")),
                power_w=_pos(d.get("power_gpu_watts")),
            )
        )
    total_mb, used_mb = _mb(d.get("mem_total")), _mb(d.get("mem_used"))
    return NodeSnapshot(
        node=NodeInfo(
            hostname=_host(url),
            os="unknown",
            arch="unknown",
            agent_version="asiai",
            uptime_s=_pos(d.get("uptime")) or 0.0,
        ),
        ts=float(d.get("ts") or time.time()),
        cpu=Cpu(cores=int(c) if (c := _pos(d.get("cpu_cores"))) else None),
        memory=Memory(
            total_mb=total_mb,
            used_mb=used_mb,
            pressure_pct=round(100 * used_mb / total_mb, 1) if total_mb and used_mb else None,
        ),
        gpus=gpus,
        # asiai measures through IOReport; the wire has no such source name, so "none" it is
        power=Power(watts=_pos(d.get("power_total_watts")), source="none"),
        engines=engines,
        problems=problems,
    )


async def fetch_asiai(client: httpx.AsyncClient, url: str, timeout_s: float) -> NodeSnapshot:
    d = _json(await get_capped(client, "/api/v1/snapshot", timeout_s=timeout_s), "/api/v1/snapshot")
    if not isinstance(d, dict):
        raise FetchError("bad answer from /api/v1/snapshot: not a JSON object", reachable=True)
    try:
        return asiai_snapshot(d, url)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _shape_error("/api/v1/snapshot", exc) from None
