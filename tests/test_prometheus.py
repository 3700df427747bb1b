"""Prometheus: the agent's /metrics, `fleet export`'s merged page, and the docs that list them.

Everything is checked with prometheus_client's own parser, the one Prometheus users rely on.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from fake_nodes import ASIAI_SNAPSHOT, FakeAsiai, FakeOllama, running
from fakes import free_port, snapshot_dict
from fleettui.aggregator.state import ChainStatus, NodeState, NodeView
from fleettui.commands.export import ExportError, fleet_families, parse_listen
from fleettui.promtext import Family, FamilyCollector, exposition, labelled, snapshot_families
from fleettui.wire import NodeSnapshot


def render(families: list[Family], accept: str | None = None) -> str:
    """The page the agent and `fleet export` serve for these families (one renderer)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FamilyCollector(lambda: families))
    return exposition(reg, accept)[0].decode()


ROOT = Path(__file__).resolve().parent.parent
UNITS = ("_bytes", "_watts", "_joules_total", "_seconds", "_ratio", "_celsius", "_total", "_info")
# gauges that count or price things: no base unit applies
UNITLESS = {
    "fleet_up",
    "fleet_cpu_cores",
    "fleet_engine_up",
    "fleet_model_loaded",
    "fleet_node_state",
    "fleet_problems",
    "fleet_energy_price_per_kwh",
    "fleet_audit_chain_verified",
    "fleet_event_stream_up",
    "fleet_memory_pressure_level",  # a state set: 1 for the level now (macOS)
}


def full_snapshot() -> NodeSnapshot:
    d = snapshot_dict("gpu1")
    d["gpus"] = [
        {
            "index": 0,
            "name": "NVIDIA H200",
            "uuid": "GPU-abc",
            "memory_total_mb": 143771.0,
            "memory_used_mb": 70000.0,
            "util_pct": 55.0,
            "power_w": 312.5,
            "energy_j": 123456.789,
            "temp_c": 61.0,
            "processes": [
                {"pid": 10, "used_mb": 4000.0, "engine": "ollama"},
                {"pid": 11, "used_mb": 1000.0, "engine": "ollama"},
                {"pid": 12, "used_mb": None, "engine": "ollama"},
                {"pid": 99, "used_mb": 2000.0},
            ],
            "attributed_mb": 5000.0,
            "other_mb": 65000.0,
        }
    ]
    d["budget"] = {
        "kind": "gpu",
        "total_mb": 143771.0,
        "used_mb": 70000.0,
        "engines_mb": 5000.0,
        "other_mb": 65000.0,
        "free_mb": 73771.0,
        "limit": "GPU memory",
        "ram_free_mb": 1024.0,
    }
    d["engines"][0]["models"] = [
        {"name": 'we"ird\\model\nname', "vram_mb": 100.0},
        {"name": "qwen3:8b", "vram_mb": 5000.0},
    ]
    d["audit"] = {"seq": 7, "head_hash": "a" * 64}
    d["problems"] = ["engine vllm down"]
    return NodeSnapshot.model_validate(d)


def parse(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample_map(fam, *keys: str) -> dict:  # type: ignore[no-untyped-def]
    return {tuple(s.labels[k] for k in keys): s.value for s in fam.samples}


def check_exposition(text: str) -> None:
    """Each family declared once, each series once, every name conventional."""
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    dupes = [n for n, c in Counter(n for n, _ in types).items() if c > 1]
    assert not dupes, f"declared twice: {dupes}"
    series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series)), "a series appears twice"
    for name, kind in types:
        if name.startswith(("process_", "python_")) or name.endswith("_created"):
            continue  # prometheus_client's own collectors, and counters' start times
        assert name.startswith("fleet_") and ":" not in name, name
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
            assert name.endswith(UNITS) or name in UNITLESS, f"{name}: no base unit suffix"


def test_families_render_to_valid_text_with_escaped_labels() -> None:
    text = render(labelled(snapshot_families(full_snapshot()), "node", "gpu1"))
    check_exposition(text)
    fams = parse(text)
    assert fams["fleet_energy_joules"].type == "counter"
    assert [s.name for s in fams["fleet_energy_joules"].samples] == ["fleet_energy_joules_total"]
    assert fams["fleet_energy_joules"].samples[0].value == 3600.0  # 1 Wh
    info = fams["fleet_power_info"].samples[0].labels
    assert info == {"node": "gpu1", "scope": "wall", "source": "simulated"}
    assert fams["fleet_cost_info"].samples[0].labels == {"node": "gpu1", "currency": "EUR"}
    assert fams["fleet_energy_cost"].type == "counter"
    assert fams["fleet_boot_time_seconds"].samples[0].value == round(full_snapshot().ts - 1000)
    gpu = fams["fleet_gpu_power_watts"].samples[0]
    assert gpu.labels == {"node": "gpu1", "gpu": "0", "name": "NVIDIA H200", "uuid": "GPU-abc"}
    assert gpu.value == 312.5
    assert fams["fleet_gpu_utilization_ratio"].samples[0].value == 0.55
    assert fams["fleet_gpu_memory_used_bytes"].samples[0].value == 70000.0 * 2**20
    models = sample_map(fams["fleet_model_loaded"], "model")
    assert models == {('we"ird\\model\nname',): 1.0, ("qwen3:8b",): 1.0}
    assert fams["fleet_audit_entries"].samples[0].value == 7
    assert fams["fleet_problems"].samples[0].value == 1
    assert all(s.labels["node"] == "gpu1" for f in fams.values() for s in f.samples)


def test_budget_and_gpu_attribution_as_metrics() -> None:
    fams = parse(render(snapshot_families(full_snapshot())))
    gib = 2**20  # MiB in bytes
    assert fams["fleet_gpu_memory_attributed_bytes"].samples[0].value == 5000 * gib
    assert fams["fleet_gpu_memory_other_bytes"].samples[0].value == 65000 * gib
    held = sample_map(fams["fleet_gpu_process_memory_bytes"], "gpu", "engine")
    assert held == {("0", "ollama"): 5000 * gib}  # summed per engine; the stranger is other
    assert fams["fleet_budget_info"].samples[0].labels == {"kind": "gpu", "limit": "GPU memory"}
    parts = sample_map(fams["fleet_budget_bytes"], "part")
    assert parts == {
        ("total",): 143771 * gib,
        ("used",): 70000 * gib,
        ("engines",): 5000 * gib,
        ("other",): 65000 * gib,
        ("free",): 73771 * gib,
    }
    assert fams["fleet_budget_ram_free_bytes"].samples[0].value == 1024 * gib
    no_budget = full_snapshot().model_copy(update={"budget": None})  # a schema-1 agent
    names = {f.name for f in snapshot_families(no_budget)}
    assert not {"fleet_budget_info", "fleet_budget_bytes"} & names


def test_foreign_snapshots_leave_out_the_agents_bookkeeping() -> None:
    names = {f.name for f in snapshot_families(full_snapshot(), agent=False)}
    assert "fleet_power_watts" in names and "fleet_engine_up" in names
    for own in (
        "fleet_energy_joules_total",
        "fleet_energy_cost_total",
        "fleet_audit_entries_total",
    ):
        assert own not in names


def test_agent_metrics_are_conventional_and_come_from_promtext(sim_agent) -> None:
    r = httpx.get(f"{sim_agent.url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    check_exposition(r.text)
    fams = parse(r.text)
    snap = NodeSnapshot.model_validate(httpx.get(f"{sim_agent.url}/api/v1/snapshot").json())
    expected = {f.name.removesuffix("_total") for f in snapshot_families(snap)}
    ours = {n for n in fams if n.startswith("fleet_") and not n.endswith("_created")}
    assert ours == expected
    # the process's own metrics, from prometheus_client's collectors
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= set(fams)
    power = {"scope": snap.power.scope, "source": "simulated"}  # alpha is a Mac: its SoC
    assert fams["fleet_power_info"].samples[0].labels == power
    assert fams["fleet_energy_joules"].type == "counter"
    assert fams["fleet_audit_entries"].type == "counter"
    info = fams["fleet_agent_info"].samples[0].labels
    assert info["hostname"] == "alpha" and info["simulated"] == "true"


# --- fleet export ----------------------------------------------------------------------------


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9464", ":9464", "127.0.0.1:http", "127.0.0.1:70000"):
        with pytest.raises(ExportError, match="--listen"):
            parse_listen(bad)


def view(name: str, state: NodeState, kind: str = "fleettui", **kw: object) -> NodeView:
    return NodeView(name=name, url=f"http://{name}:1", state=state, kind=kind, **kw)  # type: ignore[arg-type]


def test_fleet_families_merge_nodes_and_skip_stale_facts() -> None:
    snap = full_snapshot()
    views = [
        view("a", NodeState.ONLINE, snapshot=snap, chain=ChainStatus.OK, stream_ok=True),
        view("b", NodeState.DEGRADED, snapshot=snap, chain=ChainStatus.BROKEN),
        view("c", NodeState.OFFLINE, snapshot=snap),  # its last snapshot is old news
        view("m", NodeState.ONLINE, kind="asiai", snapshot=snap, chain=ChainStatus.NOT_APPLICABLE),
    ]
    text = render(fleet_families(views))
    check_exposition(text)
    fams = parse(text)
    assert sample_map(fams["fleet_up"], "node") == {("a",): 1, ("b",): 1, ("c",): 0, ("m",): 1}
    assert sample_map(fams["fleet_audit_chain_verified"], "node") == {("a",): 1, ("b",): 0}
    assert {s.labels["node"] for s in fams["fleet_power_watts"].samples} == {"a", "b", "m"}
    assert {s.labels["node"] for s in fams["fleet_energy_joules"].samples} == {"a", "b"}
    states = sample_map(fams["fleet_node_state"], "node", "state")
    assert states[("c", "OFFLINE")] == 1 and states[("c", "ONLINE")] == 0
    assert sum(v for (n, _), v in states.items() if n == "c") == 1


def test_export_leaves_out_an_offline_nodes_latency_and_names_asiai_power() -> None:
    from fleettui.aggregator.kinds.asiai import asiai_snapshot

    mac = asiai_snapshot({**ASIAI_SNAPSHOT, "power_total_watts": 41.5}, "http://mac.local:8899")
    views = [
        view("a", NodeState.ONLINE, snapshot=full_snapshot(), latency_ms=12.0),
        view("c", NodeState.OFFLINE, snapshot=full_snapshot(), latency_ms=9000.0),
        view("m", NodeState.ONLINE, kind="asiai", snapshot=mac, latency_ms=5.0),
    ]
    fams = parse(render(fleet_families(views)))
    assert sample_map(fams["fleet_node_latency_seconds"], "node") == {("a",): 0.012, ("m",): 0.005}
    info = {s.labels["node"]: s.labels for s in fams["fleet_power_info"].samples}
    assert (info["m"]["scope"], info["m"]["source"]) == ("SoC (CPU+GPU+ANE+DRAM)", "asiai")
    assert sample_map(fams["fleet_power_watts"], "node")[("m",)] == 41.5


def test_memory_pressure_is_psi_where_the_kernel_has_it() -> None:
    d = snapshot_dict("gpu1")
    d["memory"]["stall_s_total"] = 12.5
    fams = parse(render(snapshot_families(NodeSnapshot.model_validate(d))))
    assert fams["fleet_memory_pressure_stalled_seconds"].type == "counter"
    assert fams["fleet_memory_pressure_stalled_seconds"].samples[0].value == 12.5
    assert fams["fleet_memory_unavailable_ratio"].samples[0].value == 0.305
    assert "fleet_memory_pressure_ratio" not in fams
    without = parse(render(snapshot_families(full_snapshot())))
    assert "fleet_memory_pressure_stalled_seconds" not in without


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: prometheus)")
def test_promtool_accepts_the_agent_page_and_the_export_page(sim_agent) -> None:
    views = [view("a", NodeState.ONLINE, snapshot=full_snapshot(), latency_ms=3, last_seen=1.0)]
    pages = {
        "agent": httpx.get(f"{sim_agent.url}/metrics").text,
        "export": render(fleet_families(views)),
    }
    for name, text in pages.items():
        r = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (name, r)


def test_agent_serves_openmetrics_when_asked(sim_agent) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    r = httpx.get(f"{sim_agent.url}/metrics", headers={"Accept": accept})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    fams = {f.name: f for f in om_parse(r.text)}
    energy = fams["fleet_energy_joules"]
    assert energy.type == "counter"
    snap = httpx.get(f"{sim_agent.url}/api/v1/snapshot").json()
    [total] = [s for s in energy.samples if s.name == "fleet_energy_joules_total"]
    assert total.timestamp is None
    created = [s for s in energy.samples if s.name == "fleet_energy_joules_created"]
    assert created[0].value == pytest.approx(snap["power"]["energy_since"])
    assert fams["fleet_power_info"].type in ("gauge", "info")
    plain = httpx.get(f"{sim_agent.url}/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")


class Export:
    """`fleet export` as a subprocess; `url` is printed once it listens."""

    def __init__(self, config: Path, listen: str = "127.0.0.1:0") -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleettui",
                "export",
                "--listen",
                listen,
                "--config",
                str(config),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(
            target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True
        ).start()
        deadline = time.monotonic() + 20
        self.url = ""
        while not self.url:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"export did not start: {self.proc.stderr.read()}")
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if m := re.search(r"serving metrics on (http://\S+)", line):
                self.url = m.group(1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode


def test_export_serves_one_merged_exposition_of_a_mixed_fleet(sim_agent, tmp_path: Path) -> None:
    mac = {**ASIAI_SNAPSHOT, "power_total_watts": 41.5, "thermal_level": "nominal"}
    with running(FakeAsiai(snapshot=mac)) as asiai, running(FakeOllama()) as ollama:
        cfg = tmp_path / "projects.toml"
        cfg.write_text(
            "[defaults]\npoll_interval_s = 0.3\nhttp_timeout_s = 1\nbackoff_min_s = 0.2\n"
            f'[[node]]\nname = "gpu1"\nurl = "{sim_agent.url}"\nrole = "inference"\n'
            f'[[node]]\nname = "mac"\nurl = "{asiai.url}"\nkind = "asiai"\n'
            f'[[node]]\nname = "oll"\nurl = "{ollama.url}"\nkind = "ollama"\n'
            f'[[node]]\nname = "dead"\nurl = "http://127.0.0.1:{free_port()}"\n'
        )
        exp = Export(cfg)
        try:
            deadline = time.monotonic() + 15
            while True:
                text = httpx.get(exp.url).text
                fams = parse(text)
                up = sample_map(fams["fleet_up"], "node")
                chain = sample_map(fams["fleet_audit_chain_verified"], "node")
                if up == {("gpu1",): 1, ("mac",): 1, ("oll",): 1, ("dead",): 0} and chain:
                    break
                assert time.monotonic() < deadline, text
                time.sleep(0.1)
            check_exposition(text)
            for fam in fams.values():
                for s in fam.samples:
                    assert "node" in s.labels, (fam.name, s)
            assert chain == {("gpu1",): 1}
            assert sample_map(fams["fleet_power_watts"], "node")[("mac",)] == 41.5
            loaded = sample_map(fams["fleet_model_loaded"], "node", "engine", "model")
            assert loaded[("oll", "ollama", "qwen3:8b")] == 1
            assert loaded[("mac", "llamacpp", "Qwen3-30B-A3B-Q4_K_M.gguf")] == 1
            kinds = sample_map(fams["fleet_node_info"], "node", "kind")
            assert set(kinds) == {("gpu1", "fleettui"), ("mac", "asiai"), ("oll", "ollama"),
                                  ("dead", "fleettui")}  # fmt: skip
            nodes_with_engines = {s.labels["node"] for s in fams["fleet_engine_up"].samples}
            assert nodes_with_engines == {"gpu1", "mac", "oll"}
            assert {s.labels["node"] for s in fams["fleet_energy_joules"].samples} == {"gpu1"}

            # prometheus_client renders it: OpenMetrics when the scraper asks, text otherwise
            assert httpx.get(exp.url).headers["content-type"].startswith("text/plain; version=0")
            om = httpx.get(
                exp.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
            assert om.headers["content-type"].startswith("application/openmetrics-text")
            assert om.text.endswith("# EOF\n") and 'fleet_up{node="gpu1"} 1.0' in om.text
            assert 'fleet_energy_joules_total{node="gpu1"}' in om.text

            base = exp.url.removesuffix("/metrics")
            assert httpx.get(f"{base}/healthz").json() == {"ok": True, "nodes": 4}
            assert httpx.get(f"{base}/nope").status_code == 404
            r = httpx.post(exp.url, content=b"x")
            assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
            head = httpx.head(exp.url)
            assert head.status_code == 200 and head.content == b""
            with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as s:
                s.sendall(b"garbage\r\n\r\n")
                assert s.recv(100).startswith(b"HTTP/1.1 400")
        finally:
            code = exp.stop()
    assert code == 0


def test_export_refuses_a_taken_port_and_an_empty_config(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[[node]]\nname = "a"\nurl = "http://127.0.0.1:9"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "fleettui", "export", "--listen", f"127.0.0.1:{port}",
             "--config", str(cfg)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "fleettui", "export", "--config", str(tmp_path / "none.toml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2 and "none.toml: no such file" in r.stderr


# --- docs ------------------------------------------------------------------------------------


def all_metric_names() -> set[str]:
    snap = full_snapshot()
    snap.memory.stall_s_total = 1.0
    snap.memory.pressure_level, snap.memory.swap_used_mb, snap.memory.swap_total_mb = "warn", 1, 2
    snap.cpu.thermal = "nominal"  # what a Mac adds
    views = [
        view("a", NodeState.ONLINE, snapshot=snap, chain=ChainStatus.OK, latency_ms=3,
             last_seen=1.0)
    ]  # fmt: skip
    return {f.name for f in fleet_families(views)}


def test_prometheus_doc_lists_every_metric_and_the_dashboard_uses_real_ones() -> None:
    doc = (ROOT / "docs" / "prometheus.md").read_text()
    names = all_metric_names()
    missing = [n for n in sorted(names) if f"`{n}`" not in doc]
    assert not missing, f"docs/prometheus.md does not document {missing}"
    documented = set(re.findall(r"\b(fleet_[a-z0-9_]+)\b", doc))
    assert documented <= names | {"fleet_agent", "fleet_export", "fleet_tui"}, documented - names
    assert "scrape_configs" in doc and "job_name" in doc
    dash = json.loads((ROOT / "contrib" / "grafana-fleettui.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 6
    used = {m for e in exprs for m in re.findall(r"\b(fleet_[a-z0-9_]+)\b", e)}
    assert used <= names, used - names
    assert os.path.exists(ROOT / "contrib" / "grafana-fleettui.json")


def test_grafana_dashboard_asks_for_its_data_source_and_has_the_schema_fields() -> None:
    dash = json.loads((ROOT / "contrib" / "grafana-fleettui.json").read_text())
    [inp] = dash["__inputs"]
    assert (inp["name"], inp["type"], inp["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    for key in ("title", "uid", "schemaVersion", "panels", "templating", "time", "__requires"):
        assert key in dash, key
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == "${DS_PROMETHEUS}"  # filled in by the import
    node = variables["node"]
    assert "definition" not in node
    assert node["query"]["query"] == "label_values(fleet_agent_info, node)"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert {"id", "type", "title", "gridPos", "datasource", "targets"} <= set(p), p["title"]
        assert set(p["gridPos"]) == {"h", "w", "x", "y"}
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["refId"]
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    assert "fleet_model_loaded" in exprs and "fleet_power_info" in exprs
    assert "increase(fleet_energy_cost_total" in exprs
