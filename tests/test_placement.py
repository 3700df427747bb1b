"""Placement: five nodes whose order and reasons are known in advance, for binpack and spread,
ranked by the pure module and by `fleet place --json` through the real aggregator.

- `free`: a 48 GiB GPU with 40 GiB free, the model on its disk.
- `evict`: a 24 GiB GPU with 2 GiB free and an idle 10 GiB model that must go first.
- `busy`: a 24 GiB GPU with 12 GiB free beside a busy model, requests running and queued.
- `mac`: a 16 GB Mac whose 10.7 GB GPU working-set limit is nearly taken (a tight fit).
- `sick`: like `free` but DEGRADED (its agent reports a problem).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fit_fleet import GIB_MB, MODEL, SnapshotNode, _model, fit_snapshot
from fleettui.aggregator.placement import rank, score
from fleettui.aggregator.state import NodeState, NodeView
from fleettui.capacity.fit import FitRequest, check_fit, find_meta
from fleettui.wire import ModelMeta, NodeSnapshot
from test_cli_read import fleet, write_config

REQUEST = FitRequest(model=MODEL, ctx=8192, parallel=1)


def five() -> dict[str, dict[str, Any]]:
    busy = fit_snapshot("busy", 24, 12, [_model("coder-busy:7b", 8, busy=True)])
    busy["engines"][0]["settings"] |= {"requests_running": 2, "requests_waiting": 3}
    sick = fit_snapshot("sick", 48, 40, [], on_disk=True)
    sick["problems"] = ["nvml: GPU 0: temperature unreadable"]
    mac = fit_snapshot("mac", 10.7, 7.2, [_model("phi3:mini", 3, busy=False)], on_disk=True)
    mac["gpus"] = [
        {
            "index": 0,
            "name": "Apple M2 GPU",
            "memory_total_mb": 10.7 * GIB_MB,
            "memory_used_mb": 3.5 * GIB_MB,
        }
    ]
    mac["budget"] |= {
        "kind": "unified",
        "limit": "iogpu.wired_limit_mb",
        "inputs": {"ram_mb": 16384.0, "wired_limit_mb": 10.7 * GIB_MB},
    }
    mac["cpu"]["thermal"] = "nominal"
    return {
        "free": fit_snapshot("free", 48, 40, [], on_disk=True),
        "evict": fit_snapshot(
            "evict", 24, 2, [_model("qwen-idle:14b", 10, busy=False)], on_disk=True
        ),
        "busy": busy,
        "mac": mac,
        "sick": sick,
    }


def meta() -> ModelMeta | None:
    """As the aggregator finds it: from a node that has the model."""
    return find_meta({n: NodeSnapshot.model_validate(d) for n, d in five().items()}, MODEL)


def views() -> list[NodeView]:
    snaps = {name: NodeSnapshot.model_validate(d) for name, d in five().items()}
    found = meta()
    out = []
    for name, d in five().items():
        snap = snaps[name]
        state = NodeState.DEGRADED if d.get("problems") else NodeState.ONLINE
        out.append(
            NodeView(
                name=name,
                url="http://127.0.0.1:1",
                state=state,
                reasons=list(d.get("problems", [])),
                snapshot=snap,
                fit=check_fit(name, snap, found, REQUEST),
            )
        )
    return out


def test_binpack_prefers_the_tightest_fit_that_keeps_the_margin() -> None:
    ranking = rank(views(), "binpack")
    assert [p.node for p in ranking] == ["mac", "free", "busy", "sick", "evict"]
    by = {p.node: p for p in ranking}
    assert by["mac"].verdict == "fits" and by["mac"].reasons[0] == "fits"
    assert by["evict"].verdict == "evict"
    assert by["evict"].reasons[0] == "fits after evicting 1"
    assert "-6 evicts idle qwen-idle:14b" in by["evict"].reasons
    assert "+10 already on disk" in by["free"].reasons
    assert "-9 3 requests queued" in by["busy"].reasons
    assert "-2 2 requests running" in by["busy"].reasons
    assert "-20 DEGRADED: nvml: GPU 0: temperature unreadable" in by["sick"].reasons
    assert all(0 < p.score <= 100 for p in ranking)
    assert [p.rank for p in ranking] == [1, 2, 3, 4, 5]


def test_spread_prefers_the_most_room() -> None:
    ranking = rank(views(), "spread")
    assert [p.node for p in ranking] == ["free", "mac", "sick", "busy", "evict"]
    by = {p.node: p for p in ranking}
    # the same node scores differently by strategy: most of it free is worth more to spread
    binpack = {p.node: p.score for p in rank(views(), "binpack")}
    assert by["free"].score > binpack["free"]
    assert by["mac"].score < binpack["mac"]


def test_deterministic_and_ties_broken_by_name() -> None:
    vs = views()
    twin = copy.copy(vs[0])  # `free` again under another name: the same score
    twin.name = "a-free"
    first = [p.node for p in rank([*vs, twin], "binpack")]
    again = [p.node for p in rank(list(reversed([*vs, twin])), "binpack")]
    assert first == again
    assert first.index("a-free") == first.index("free") - 1


def test_nodes_where_it_cannot_go_score_zero_and_come_last() -> None:
    vs = views()
    full = fit_snapshot("full", 24, 1, [_model("big-busy:32b", 22, busy=True)])
    snap = NodeSnapshot.model_validate(full)
    vs.append(
        NodeView(
            name="full",
            url="http://127.0.0.1:1",
            state=NodeState.ONLINE,
            snapshot=snap,
            fit=check_fit("full", snap, meta(), REQUEST),
        )
    )
    vs.append(NodeView(name="gone", url="http://127.0.0.1:1", state=NodeState.OFFLINE))
    ranking = rank(vs, "binpack")
    assert [p.node for p in ranking[-2:]] == ["full", "gone"]
    assert ranking[-2].score == 0 and ranking[-2].reasons[0].startswith("does not fit: ")
    assert ranking[-1].score == 0 and ranking[-1].reasons == ("cannot tell: no answer",)


def test_already_loaded_scores_100() -> None:
    d = fit_snapshot("has", 24, 10, [_model(MODEL, 5, busy=False)])
    snap = NodeSnapshot.model_validate(d)
    v = NodeView(
        name="has",
        url="http://127.0.0.1:1",
        state=NodeState.ONLINE,
        snapshot=snap,
        fit=check_fit("has", snap, None, REQUEST),
    )
    assert score(v, "binpack") == (100.0, ("already loaded here",))


def test_hot_gpus_and_power_near_the_limit_cost_points() -> None:
    d = five()["free"]
    cool = NodeSnapshot.model_validate(d)
    d["gpus"][0] |= {"temp_c": 90.0, "power_w": 340.0, "power_limit_w": 350.0}
    hot = NodeSnapshot.model_validate(d)

    def points(snap: NodeSnapshot) -> tuple[float, tuple[str, ...]]:
        fit = check_fit("n", snap, None, REQUEST)
        return score(
            NodeView("n", "http://x", state=NodeState.ONLINE, snapshot=snap, fit=fit), "binpack"
        )

    (cold, _), (warm, why) = points(cool), points(hot)
    assert cold - warm == 15
    assert "-10 hottest GPU at 90 C" in why and "-5 1 GPU near the power limit" in why


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    nodes = {name: SnapshotNode(d) for name, d in five().items()}
    for n in nodes.values():
        n.start()
    try:
        yield write_config(tmp_path / "p.toml", {name: n.url for name, n in nodes.items()})
    finally:
        for n in nodes.values():
            n.stop()


def test_fleet_place_json_through_the_aggregator(config: Path) -> None:
    for strategy, order in (
        ("binpack", ["mac", "free", "busy", "sick", "evict"]),
        ("spread", ["free", "mac", "sick", "busy", "evict"]),
    ):
        r = fleet(
            "place", MODEL, "--ctx", "8192", "--parallel", "1", "--strategy", strategy,
            "--json", config=config,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["strategy"] == strategy and doc["request"]["model"] == MODEL
        assert [n["node"] for n in doc["nodes"]] == order
        assert doc["nodes"][0]["fit"]["verdict"] == "fits"
        assert doc["nodes"][-1]["fit"]["evict"] == ["qwen-idle:14b"]
    r = fleet("place", MODEL, "--top", "2", config=config)
    assert r.returncode == 0 and "mac" in r.stdout and "evict" not in r.stdout.split("\n", 2)[2]
    r = fleet("place", MODEL, "--strategy", "fastest", config=config)
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


def test_fleet_load_place_picks_the_best_ranked(config: Path) -> None:
    def dry(*args: str) -> tuple[int, Any, str]:
        r = fleet("load", MODEL, "--ctx", "8192", "--place", "--dry-run", "--json", *args,
                  config=config)  # fmt: skip
        return r.returncode, json.loads(r.stdout) if r.returncode == 0 else None, r.stderr

    code, doc, _ = dry()
    assert code == 0 and doc["targets"] == ["mac"] and doc["dry_run"] is True
    code, doc, _ = dry("--strategy", "spread", "--top", "2")
    assert code == 0 and doc["targets"] == ["free", "mac"]
    code, _, stderr = dry("--on", "free")
    assert code == 2 and "--on and --place" in stderr
    r = fleet("load", "nobody-has:1b", "--place", "--dry-run", config=config)
    assert r.returncode == 2 and "no node can take nobody-has:1b" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("top", ["0", "-1", "abc", "9" * 400, "1e3", ""])
def test_a_bad_top_is_one_line_exit_2(config: Path, top: str) -> None:
    r = fleet("place", MODEL, "--top", top, config=config)
    assert r.returncode == 2 and "--top" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
