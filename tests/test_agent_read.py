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
        "fleet_energy_cost",
        "fleet_power_info",
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


def test_real_mode_reports_this_machine(agent_factory, tmp_path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'auto_detect = false\nrapl_root = "{tmp_path}/no-rapl"\n')
    agent = agent_factory("--config", str(cfg))
    snap = NodeSnapshot.model_validate(httpx.get(f"{agent.url}/api/v1/snapshot").json())
    assert snap.node.simulated is False
    assert snap.cpu.cores and snap.cpu.cores >= 1
    assert snap.memory.total_mb and snap.memory.total_mb > 0
    assert 0 <= (snap.memory.pressure_pct or 0) <= 100
    assert snap.gpus == [] and snap.power.source == "none" and snap.power.watts is None
    assert snap.power.scope == "none" and snap.node.boot_time
    assert any(p.startswith("power: no readable source") for p in snap.problems)


def test_simulated_nodes_are_deterministic_by_name() -> None:
    from fleettui.agent.collect.energy import EnergyLedger, EnergyMeter
    from fleettui.agent.simulate import SimulatedNode

    def facts(name: str) -> tuple:
        node = SimulatedNode(name, clock=lambda: 1_700_000_000.0)
        s = node.snapshot(EnergyLedger(None, 0.3, "EUR"), EnergyMeter())
        return (
            [g.name for g in s.gpus],
            [(e.name, [m.name for m in e.models]) for e in s.engines],
            s.power.watts,
        )

    assert facts("gpu-a") == facts("gpu-a")
    assert any(facts(f"n{i}") != facts("gpu-a") for i in range(5))
    engines = [facts(f"n{i}")[1] for i in range(20)]
    assert all(e[0][0] == "ollama" and 2 <= len(e) <= 3 for e in engines)


def test_simulated_actions_change_the_node() -> None:
    from fleettui.agent.collect.energy import EnergyLedger, EnergyMeter
    from fleettui.agent.simulate import SimulatedNode

    now = [1_700_000_000.0]
    node = SimulatedNode("act", clock=lambda: now[0])
    ledger, meter = EnergyLedger(None, 0.3, "EUR"), EnergyMeter()
    model = node.snapshot(ledger, meter).engines[0].models[0].name
    assert node.act("unload", "ollama", model)[0]
    assert model not in [m.name for m in node.snapshot(ledger, meter).engines[0].models]
    assert node.act("restart", "ollama", None)[0]
    assert node.snapshot(ledger, meter).engines[0].status == "down"
    now[0] += 5
    assert node.snapshot(ledger, meter).engines[0].status == "up"
    assert node.act("stop", "nope", None) == (False, "engine 'nope' not present on this node")
