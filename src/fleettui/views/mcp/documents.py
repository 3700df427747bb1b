"""Each tool's answer, built from the server's FleetState: plain functions, no SDK, so the
same documents serve the tools, the resources and the tests.

Every per-node part carries its freshness (the node's collection time, its age, whether it
is stale) and is scrubbed of that node's secrets before it becomes a model.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from fleettui.aggregator.fitwatch import FitWatch, fit_document, fit_order
from fleettui.aggregator.placement import Strategy, place_document, rank
from fleettui.aggregator.state import NodeView
from fleettui.capacity.fit import FitRequest
from fleettui.select import SelectError, parse
from fleettui.views.mcp.models import (
    Event,
    Events,
    FitDocument,
    ModelSearch,
    NodeDetail,
    NodeList,
    PlaceDocument,
    Summary,
)
from fleettui.views.mcp.state import FleetState
from fleettui.wire import DiskModel, Engine, Model


class Refused(Exception):
    """A call this server cannot answer (unknown node, bad argument): the message says why."""


def unknown_node(state: FleetState, name: str) -> Refused:
    names = state.reader.names
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return Refused(f"no node named {name!r} (the fleet has: {shown or 'no nodes'})")


def _audit(v: NodeView) -> dict[str, Any]:
    snap = v.snapshot
    return {
        "chain": v.chain.value,
        "detail": v.chain_detail,
        "seq": snap.audit.seq if snap else None,
    }


def node_row(state: FleetState, v: NodeView, now: float) -> dict[str, Any]:
    snap, facts = v.snapshot, v.facts
    mem = facts.gpu_mem_mb if facts else None
    budget = snap.budget if snap else None
    row = {
        "name": v.name,
        "kind": v.kind,
        "role": v.role,
        "tags": list(v.tags),
        "freshness": state.freshness(v, now),
        "reasons": list(v.reasons),
        "latency_ms": v.latency_ms,
        "stream": v.stream_ok,
        "hostname": snap.node.hostname if snap else None,
        "simulated": snap.node.simulated if snap else False,
        "power_w": snap.power.watts if snap else None,
        "power_scope": snap.power.scope if snap else None,
        "power_source": snap.power.source if snap else None,
        "cost_7d": snap.cost.total_7d if snap else None,
        "currency": snap.cost.currency if snap else None,
        "gpus": len(snap.gpus) if snap else 0,
        "gpu_mem_used_mb": mem[0] if mem else None,
        "gpu_mem_total_mb": mem[1] if mem else None,
        "budget": (
            {
                "kind": budget.kind,
                "total_mb": budget.total_mb,
                "free_mb": budget.free_mb,
                "limit": budget.limit,
            }
            if budget
            else None
        ),
        "engines": [
            {
                "name": e.name,
                "status": e.status,
                "models": [m.name for m in e.models] if e.status == "up" else [],
            }
            for e in (snap.engines if snap else [])
        ],
        "audit": _audit(v),
    }
    return state.redact.node(v.name, row)


def list_nodes(
    state: FleetState, expr: str | None = None, limit: int | None = None, offset: int = 0
) -> NodeList:
    """A page of the nodes the filter selects, in config order (`limit` None: all)."""
    views = state.views()
    total = len(views)
    if expr is not None and expr.strip():
        try:
            sel = parse(expr)
        except SelectError as exc:
            raise Refused(f"filter: {exc}") from None
        views = [v for v in views if sel.matches(v)]
    end = len(views) if limit is None else offset + limit
    now = time.time()
    return NodeList.model_validate(
        {
            "observed_at": now,
            "stale_after_s": state.stale_after_s,
            "filter": expr,
            "total": total,
            "matched": len(views),
            "offset": offset,
            "next_offset": end if end < len(views) else None,
            "nodes": [node_row(state, v, now) for v in views[offset:end]],
        }
    )


def get_node(state: FleetState, name: str) -> NodeDetail:
    v = state.view(name)
    if v is None:
        raise unknown_node(state, name)
    now = time.time()
    snap = v.snapshot
    doc: dict[str, Any] = {
        "observed_at": now,
        "stale_after_s": state.stale_after_s,
        "name": v.name,
        "kind": v.kind,
        "url": v.url,
        "role": v.role,
        "tags": list(v.tags),
        "freshness": state.freshness(v, now),
        "reasons": list(v.reasons),
        "last_error": v.last_error,
        "latency_ms": v.latency_ms,
        "stream": v.stream_ok,
        "host": None,
        "gpus": [],
        "engines": [],
        "ledger": [],
        "budget": None,
        "power": None,
        "cost": None,
        "problems": [],
        "audit": _audit(v),
    }
    if snap is not None:
        dump = snap.model_dump(mode="json")
        doc |= {
            "host": {"info": dump["node"], "cpu": dump["cpu"], "memory": dump["memory"]},
            "gpus": dump["gpus"],
            "engines": [
                {
                    k: e[k]
                    for k in (
                        "name",
                        "url",
                        "status",
                        "version",
                        "error",
                        "settings",
                        "pids",
                        "available",
                    )
                }
                for e in dump["engines"]
            ],
            "ledger": [{**m, "engine": e["name"]} for e in dump["engines"] for m in e["models"]],
            "budget": dump["budget"],
            "power": dump["power"],
            "cost": dump["cost"],
            "problems": dump["problems"],
        }
    return NodeDetail.model_validate(state.redact.node(v.name, doc))


# A query of printable ASCII reads the same in the node's JSON text unless JSON may escape
# one of its characters (a quote, a backslash, "/" as "\/"): a node whose text does not
# contain it holds no such model, and is not parsed.
_PLAIN = re.compile(r"[ -~]+")
_ESCAPED = ('"', "\\", "/")


def _may_hold(v: NodeView, query: str) -> bool:
    raw = v.snapshot_json
    if raw is None or any(c in query for c in _ESCAPED):
        return True
    if isinstance(raw, bytes):
        return query.encode() in raw.lower()
    return query in raw.lower()


def _place(state: FleetState, v: NodeView, e: Engine, m: Model | DiskModel, now: float) -> dict:
    """One find_model line: a resident model (the ledger's figures) or one on disk (the
    engine's defaults for a load)."""
    line: dict[str, Any] = {
        "node": v.name,
        "freshness": state.freshness(v, now),
        "engine": e.name,
        "engine_status": e.status,
        "name": m.name,
        "size_mb": m.size_mb,
        "quant": m.quant,
    }
    if isinstance(m, Model):
        line |= {
            "where": "resident",
            "vram_mb": m.vram_mb,
            "ctx": m.ctx,
            "parallel": m.parallel,
            "kv_type": m.kv_type,
            "busy": m.busy,
            "expires_at": m.expires_at,
            "sources": dict(m.sources),
        }
    else:
        settings = e.settings
        line |= {
            "where": "disk",
            "vram_mb": None,
            "ctx": settings.default_ctx if settings else None,
            "parallel": settings.num_parallel if settings else None,
            "kv_type": settings.kv_type if settings else None,
            "busy": None,
            "expires_at": None,
            "sources": {},
        }
    return state.redact.node(v.name, line)


def find_model(state: FleetState, model: str, limit: int | None = None) -> ModelSearch:
    """Every place the name is found, counted; only the first `limit` become lines."""
    query = model.strip().lower()
    if not query:
        raise Refused("model: give a model name (or part of one), e.g. llama3.1:8b")
    now = time.time()
    resident: list[tuple[NodeView, Engine, Model | DiskModel]] = []
    disk: list[tuple[NodeView, Engine, Model | DiskModel]] = []
    exact = False
    plain = _PLAIN.fullmatch(query) is not None
    for v in state.views():
        if plain and not _may_hold(v, query):
            continue
        snap = v.snapshot
        for e in snap.engines if snap is not None else ():
            for m in e.models:
                if query in (name := m.name.lower()):
                    resident.append((v, e, m))
                    exact = exact or name == query
            for d in e.available:
                if query in (name := d.name.lower()):
                    disk.append((v, e, d))
                    exact = exact or name == query
    found = [
        x for x in resident + disk if not exact or x[2].name.lower() == query
    ]  # resident first, then on disk, each by node
    return ModelSearch.model_validate(
        {
            "observed_at": now,
            "stale_after_s": state.stale_after_s,
            "model": model,
            "exact": exact,
            "matched": len(found),
            "matches": [_place(state, v, e, m, now) for v, e, m in found[:limit]],
        }
    )


def fleet_summary(state: FleetState) -> Summary:
    """From the facts the aggregator keeps beside each snapshot: no snapshot is parsed."""
    views = state.views()
    now = time.time()
    states = {"INITIALIZING": 0, "ONLINE": 0, "DEGRADED": 0, "OFFLINE": 0}
    stale = power_nodes = resident = down = 0
    power = 0.0
    cost_7d: dict[str, float] = {}
    cost_today: dict[str, float] = {}
    by_kind: dict[str, dict[str, float]] = {}
    largest: dict[str, Any] | None = None
    for v in views:
        states[v.state.value] += 1
        is_stale = state.freshness(v, now)["stale"]
        stale += is_stale
        facts = v.facts
        if facts is None:
            continue
        if facts.watts is not None:
            power += facts.watts
            power_nodes += 1
        cur = facts.currency
        cost_7d[cur] = cost_7d.get(cur, 0.0) + facts.cost_7d
        cost_today[cur] = cost_today.get(cur, 0.0) + facts.cost_today
        resident += facts.models
        down += facts.engines_down
        b = facts.budget
        if b is None or is_stale:
            continue
        k = by_kind.setdefault(b.kind, {"nodes": 0, "total_mb": 0.0, "free_mb": 0.0})
        k["nodes"] += 1
        k["total_mb"] += b.total_mb
        k["free_mb"] += b.free_mb
        free = int(b.free_mb * 2**20)
        if largest is None or free > largest["free_bytes"]:
            largest = {
                "node": v.name,
                "free_bytes": free,
                "budget_kind": b.kind,
                "limit": state.redact.node(v.name, b.limit),
            }
    return Summary.model_validate(
        {
            "observed_at": now,
            "stale_after_s": state.stale_after_s,
            "nodes": len(views),
            "states": states,
            "stale": stale,
            "power_w": round(power, 1),
            "power_nodes": power_nodes,
            "cost_7d": {k: round(c, 4) for k, c in cost_7d.items()},
            "cost_today": {k: round(c, 4) for k, c in cost_today.items()},
            "free_by_kind": {
                k: {**d, "total_mb": round(d["total_mb"], 1), "free_mb": round(d["free_mb"], 1)}
                for k, d in by_kind.items()
            },
            "largest_fit": largest,
            "resident_models": resident,
            "engines_down": down,
        }
    )


def recent_events(state: FleetState, limit: int, kinds: Sequence[str] | None) -> Events:
    wanted = set(kinds) if kinds else None
    out: list[dict[str, Any]] = []
    for ev in reversed(state.events):
        if len(out) >= limit:
            break
        if wanted is not None and ev.kind not in wanted:
            continue
        data = ev.data if ev.kind == "state" and isinstance(ev.data, dict) else {}
        out.append(
            state.redact.fleet(
                state.redact.node(
                    ev.node,
                    {
                        "ts": ev.ts,
                        "node": ev.node,
                        "kind": ev.kind,
                        "summary": ev.summary,
                        "from_state": data.get("from"),
                        "to_state": data.get("to"),
                    },
                )
            )
        )
    return Events(
        observed_at=time.time(),
        since=state.since,
        kept=state.events.maxlen or 0,
        events=[Event.model_validate(e) for e in out],
    )


def _judged(
    state: FleetState, request: FitRequest, node: str | None = None
) -> tuple[FitWatch, list[NodeView]]:
    """Every node's view (or one) with its `fit` for `request`, as `fleet fit` judges them:
    the metadata from the first node that has the model, offline nodes "unknown"."""
    if node is not None:
        v = state.view(node)
        if v is None:
            raise unknown_node(state, node)
        views = [v]
    else:
        views = list(state.views())
    watch = FitWatch(request, calibration=state.calibration)
    watch.learn_all((v.name, v.snapshot) for v in views if v.snapshot is not None)
    cal = state.calibration
    basis = (watch.meta, cal.version if cal is not None else None)
    seen, known = state.fits.get(request, (None, {}))
    if seen != basis:  # new metadata or a new calibration (or first asked): judge all again
        known = {}
    for v in views:
        hit = known.get(v.name)
        if hit is not None and hit[0] == v.version:
            fit = hit[1]
        else:
            snap = v.snapshot
            fit = watch.check(v.name, snap) if snap is not None else None
            known[v.name] = (v.version, fit)
        v.fit = watch.judge(v, fit)
    state.remember_fits(request, basis, known)
    return watch, views


def check_fit(
    state: FleetState,
    request: FitRequest,
    node: str | None = None,
    limit: int | None = None,
) -> FitDocument:
    """`fleet fit --json` for the fleet as it is now (or one node): the same FitWatch, the
    same order and the same document builder as the command; `nodes` cut to the first
    `limit` answers (the best verdicts), `nodes_total` says how many there were."""
    watch, views = _judged(state, request, node)
    views.sort(key=fit_order)
    doc = fit_document(watch, views[:limit], time.time())
    doc["nodes"] = [state.redact.node(n["node"], n) for n in doc["nodes"]]
    doc["nodes_total"] = len(views)
    return FitDocument.model_validate(doc)


def rank_placement(
    state: FleetState, request: FitRequest, strategy: Strategy, top: int | None
) -> PlaceDocument:
    """`fleet place --json [--top K]`: the same judging, ranking and document builder."""
    watch, views = _judged(state, request)
    doc = place_document(watch, rank(views, strategy), strategy, time.time(), top)
    doc["nodes"] = [state.redact.node(n["node"], n) for n in doc["nodes"]]
    return PlaceDocument.model_validate(doc)
