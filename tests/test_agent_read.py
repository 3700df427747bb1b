"""The agent's read side, end to end over loopback HTTP."""

from __future__ import annotations

import httpx
from httpx_sse import connect_sse
from prometheus_client.parser import text_string_to_metric_families

from fleettui.wire import NodeSnapshot

CONTRACT_KEYS = {
    "schema_version",
    "node",
    "ts",
    "cpu",
    "memory",
    "gpus",
    "power",
    "cost",
    "engines",
    "audit",
    "problems",
}


def test_snapshot_has_every_contract_key(sim_agent) -> None:
    r = httpx.get(f"{sim_agent.url}/api/v1/snapshot")
    assert r.status_code == 200
    body = r.json()
    assert CONTRACT_KEYS <= body.keys()
    assert body["node"]["simulated"] is True
    assert body["node"]["hostname"] == "alpha"
    assert {"hostname", "os", "arch", "agent_version", "uptime_s", "simulated"} <= body[
        "node"
    ].keys()
    assert {"currency", "price_per_kwh", "today", "daily", "total_7d"} <= body["cost"].keys()
    assert len(body["cost"]["daily"]) == 7
    assert any(e["name"] == "ollama" and e["status"] == "up" for e in body["engines"])
    snap = NodeSnapshot.model_validate(body)
    assert snap.power.source == "simulated" and snap.power.watts and snap.power.watts > 0


def test_events_stream_snapshots_with_increasing_ids(sim_agent) -> None:
    ids = []
    with (
        httpx.Client(timeout=5) as c,
        connect_sse(c, "GET", f"{sim_agent.url}/api/v1/events") as es,
    ):
        for sse in es.iter_sse():
            assert sse.event == "snapshot"
            NodeSnapshot.model_validate_json(sse.data)
            ids.append(int(sse.id))
            if len(ids) == 3:
                break
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_last_event_id_gets_fresh_snapshot_first(sim_agent) -> None:
    with httpx.Client(timeout=5) as c:
        with connect_sse(c, "GET", f"{sim_agent.url}/api/v1/events") as es:
            first = next(iter(es.iter_sse()))
        headers = {"Last-Event-ID": first.id}
        with connect_sse(c, "GET", f"{sim_agent.url}/api/v1/events", headers=headers) as es:
            again = next(iter(es.iter_sse()))
    assert again.event == "snapshot"
    assert int(again.id) > int(first.id)


def test_metrics_parse_as_prometheus_text(sim_agent) -> None:
    r = httpx.get(f"{sim_agent.url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in (
        "fleet_power_watts",
        "fleet_energy_joules",
        "fleet_gpu_memory_used_bytes",
        "fleet_gpu_utilization_ratio",
        "fleet_engine_up",
        "fleet_model_loaded",
        "fleet_cost_7d",
    ):
        assert name in fams, name
    up = {s.labels["engine"]: s.value for s in fams["fleet_engine_up"].samples}
    assert up["ollama"] == 1.0


def test_unknown_path_and_method_are_json(sim_agent) -> None:
    r = httpx.get(f"{sim_agent.url}/nope")
    assert r.status_code == 404 and r.json()["error"] == "not found"
    r = httpx.delete(f"{sim_agent.url}/api/v1/snapshot")
    assert r.status_code == 405 and r.json()["error"] == "method not allowed"
    assert httpx.get(f"{sim_agent.url}/healthz").json()["ok"] is True


def test_many_simulated_nodes_in_one_process(agent_factory) -> None:
    agent = agent_factory("--simulate", "--nodes", "5", "--name", "n", nodes=5)
    names = set()
    for name, url in agent.urls.items():
        snap = httpx.get(f"{url}/api/v1/snapshot").json()
        assert snap["node"]["hostname"] == name
        names.add(name)
    assert names == {f"n-{i:03d}" for i in range(5)}
