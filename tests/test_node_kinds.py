"""asiai and bare-Ollama nodes, read and acted on by fleet's real adapters over loopback HTTP.

The fakes enforce asiai's Host and Origin checks and its command check order, so a header the
adapter forgets fails these tests the way it would fail against a real Mac.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import ValidationError

from actionfleet import dead_port_url, send_action
from fake_nodes import ASIAI_SNAPSHOT, FakeAsiai, FakeOllama, OllamaModel, Outcome, running
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.dispatch import Envelope
from fleettui.aggregator.kinds import KINDS, kind_for
from fleettui.aggregator.state import ChainStatus, NodeState
from fleettui.config import Defaults, FleetConfig, NodeConfig

pytestmark = pytest.mark.anyio
SECRET = "asai_" + "k" * 43
GB = 1_000_000_000


@pytest.fixture
def asiai():  # type: ignore[no-untyped-def]
    with running(FakeAsiai(tokens=(SECRET,))) as fake:
        yield fake


@pytest.fixture
def ollama():  # type: ignore[no-untyped-def]
    models = [OllamaModel("qwen3:8b", 6 * GB), OllamaModel("llama3:70b", 40 * GB, "Q4_0")]
    with running(FakeOllama(models)) as fake:
        yield fake


def mac(url: str, **kw: object) -> NodeConfig:
    return NodeConfig(name="mac", url=url, kind="asiai", **{"token": SECRET, **kw})


async def run(
    node: NodeConfig, action: str, engine: str | None = None, model: str | None = None
) -> Envelope:
    return await send_action([node], action, engine, model)


def posts(fake: FakeAsiai) -> int:
    return sum(s.method == "POST" for s in fake.seen)


# --- the fake is as strict as asiai ----------------------------------------------------------


def test_fake_asiai_enforces_host_and_origin(asiai: FakeAsiai) -> None:
    cmd = f"{asiai.url}/api/v1/fleet/self/command"
    r = httpx.get(f"{asiai.url}/api/v1/snapshot", headers={"Host": "gpu1.lan"})
    assert r.status_code == 400
    r = httpx.get(f"{asiai.url}/api/v1/snapshot", headers={"Host": "studio.local:8899"})
    assert r.status_code == 200
    body = {"command": "stop", "args": {"engine": "ollama"}}
    r = httpx.post(cmd, json=body, headers={"Authorization": f"Bearer {SECRET}"})
    assert (r.status_code, r.json()) == (403, {"error": "Missing Origin header"})
    r = httpx.post(cmd, json=body, headers={"Origin": "http://evil.local:1"})
    assert (r.status_code, r.json()) == (403, {"error": "Cross-origin request rejected"})
    assert asiai.commands == []


def test_every_kind_is_registered_and_config_accepts_it() -> None:
    assert set(KINDS) == {"fleettui", "asiai", "ollama"}
    for name in KINDS:
        NodeConfig(name="n", url="http://127.0.0.1:1", kind=name)
        assert kind_for(name).name == name
    with pytest.raises(KeyError, match="known: fleettui, asiai, ollama"):
        kind_for("vllm")


# --- asiai: writes ---------------------------------------------------------------------------


async def test_asiai_restart_sends_bearer_origin_and_self(asiai: FakeAsiai) -> None:
    env = await run(mac(asiai.url), "restart", "ollama")
    assert env.succeeded == ["mac"], env.failed
    assert asiai.commands == [
        {"nickname": "self", "command": "restart", "args": {"engine": "ollama"}}
    ]
    [post] = [s for s in asiai.seen if s.method == "POST"]
    assert post.path == "/api/v1/fleet/self/command"
    assert post.headers["origin"] == asiai.url
    assert post.headers["authorization"] == f"Bearer {SECRET}"
    result = env.outcomes["mac"].result
    assert result is not None and result.ok and result.exit_code == 0
    assert result.duration_ms == 37 and "restart ollama: done" in result.output_tail
    assert result.action == "restart" and result.engine == "ollama" and result.audit_seq is None


async def test_asiai_configured_nickname_and_model(asiai: FakeAsiai) -> None:
    env = await run(mac(asiai.url, nickname="studio"), "unload", "ollama", "qwen3:8b")
    assert env.succeeded == ["mac"], env.failed
    assert asiai.commands[-1] == {
        "nickname": "studio",
        "command": "unload",
        "args": {"engine": "ollama", "model": "qwen3:8b"},
    }
    env = await run(mac(asiai.url, nickname="other"), "purge")
    assert env.failed["mac"] == "HTTP 404: unknown_node (other)"


async def test_asiai_failed_command_is_a_result_with_its_output(asiai: FakeAsiai) -> None:
    asiai.outcomes["restart", "ollama"] = Outcome(
        ok=False, exit_code=1, stderr="Job for ollama.service failed.\n", detail="exit status 1"
    )
    env = await run(mac(asiai.url), "restart", "ollama")
    assert env.failed == {"mac": "command_failed: exit status 1: Job for ollama.service failed."}
    result = env.outcomes["mac"].result
    assert result is not None and not result.ok and result.exit_code == 1
    assert result.output_tail.endswith("Job for ollama.service failed.")


async def test_asiai_refusals_become_reasons(asiai: FakeAsiai) -> None:
    wrong = mac(asiai.url, token="asai_wrong")
    assert (
        (await run(wrong, "stop", "ollama"))
        .failed["mac"]
        .startswith("HTTP 401: unauthorized (check the node's asiai token")
    )
    asiai.companion_up = False
    assert (
        (await run(mac(asiai.url), "stop", "ollama"))
        .failed["mac"]
        .startswith("HTTP 503: aisctl_serve_unavailable (asiai's command companion is not running")
    )
    asiai.companion_up = True
    asiai.rate_per_min = 0
    reason = (await run(mac(asiai.url), "stop", "ollama")).failed["mac"]
    assert reason == "HTTP 429: rate_limited (retry after 42 s)"
    asiai.tokens = []
    reason = (await run(mac(asiai.url), "stop", "ollama")).failed["mac"]
    assert reason.startswith("HTTP 501: not_initialized (the node has no fleet tokens yet")
    assert asiai.commands == []


async def test_asiai_arguments_are_checked_before_sending(asiai: FakeAsiai) -> None:
    with pytest.raises(ValidationError, match="restart needs an engine"):
        await run(mac(asiai.url), "restart")  # no request exists that the wire's rule refuses
    with pytest.raises(ValidationError, match="model '-rf /' is not a valid model name"):
        await run(mac(asiai.url), "unload", "ollama", "-rf /")
    tokenless = NodeConfig(name="mac", url=asiai.url, kind="asiai")
    env = await run(tokenless, "stop", "ollama")
    assert env.failed["mac"].startswith("not sent: no token configured")
    assert posts(asiai) == 0


async def test_asiai_unreachable_is_connection_refused() -> None:
    env = await run(mac(dead_port_url()), "stop", "ollama")
    assert env.failed == {"mac": "connection refused"}


# --- asiai: reads ----------------------------------------------------------------------------


def fleet_of(*nodes: NodeConfig) -> FleetConfig:
    return FleetConfig(defaults=Defaults(http_timeout_s=2), nodes=list(nodes))


async def test_asiai_captured_linux_snapshot(asiai: FakeAsiai) -> None:
    [v] = await FleetAggregator(fleet_of(mac(asiai.url))).poll_once(5)
    assert v.state is NodeState.ONLINE, v.reasons
    assert v.chain is ChainStatus.NOT_APPLICABLE and v.kind == "asiai"
    s = v.snapshot
    assert s is not None and s.ts == ASIAI_SNAPSHOT["ts"]
    assert [(e.name, e.status, [m.name for m in e.models]) for e in s.engines] == [
        ("ollama", "up", ["qwen3:8b"]),
        ("llamacpp", "up", ["Qwen3-30B-A3B-Q4_K_M.gguf"]),
    ]
    # Linux sentinels are "not measured", not zeros
    assert s.memory.total_mb is None and s.cpu.cores is None and s.power.watts is None
    assert s.gpus == [] and s.node.uptime_s == 0.0
    assert [s.path for s in asiai.seen] == ["/api/v1/snapshot"]  # no stream, no audit reads


async def test_asiai_mac_snapshot_power_and_thermal(asiai: FakeAsiai) -> None:
    asiai.snapshot = {
        **ASIAI_SNAPSHOT,
        "cpu_cores": 16,
        "mem_total": 64 * 2**30,
        "mem_used": 16 * 2**30,
        "mem_pressure": "normal",
        "thermal_level": "serious",
        "gpu_utilization_pct": 81.0,
        "gpu_mem_in_use": 20 * 2**30,
        "power_gpu_watts": 30.5,
        "power_total_watts": 41.5,
        "power_source": "ioreport",
    }
    [v] = await FleetAggregator(fleet_of(mac(asiai.url))).poll_once(5)
    assert v.state is NodeState.DEGRADED and v.reasons == ["thermal level serious"]
    s = v.snapshot
    assert s is not None and s.power.watts == 41.5 and s.cpu.cores == 16
    assert s.memory.pressure_pct == 25.0
    [gpu] = s.gpus
    assert (gpu.name, gpu.util_pct, gpu.power_w, gpu.memory_used_mb) == (
        "Apple GPU",
        81.0,
        30.5,
        20480.0,
    )
    asiai.snapshot = {**asiai.snapshot, "power_total_watts": None, "thermal_level": "nominal"}
    [v] = await FleetAggregator(fleet_of(mac(asiai.url))).poll_once(5)
    assert v.state is NodeState.ONLINE and v.snapshot and v.snapshot.power.watts is None


async def test_asiai_host_rejection_is_explained() -> None:
    # the node answers as asiai does when reached under a name it does not trust (a LAN IP)
    with running(FakeAsiai(tokens=(SECRET,), hosts=("localhost", "*.local"))) as strict:
        [v] = await FleetAggregator(fleet_of(mac(strict.url))).poll_once(5)
        env = await run(mac(strict.url), "stop", "ollama")
    assert v.state is NodeState.DEGRADED
    assert v.reasons[0].startswith("snapshot: HTTP 400: asiai accepts only Host localhost")
    assert "ASIAI_TRUSTED_HOSTS" in v.reasons[0]
    assert env.failed["mac"].startswith("HTTP 400: asiai accepts only Host localhost")


# --- bare Ollama -----------------------------------------------------------------------------


def oll(url: str) -> NodeConfig:
    return NodeConfig(name="oll", url=url, kind="ollama")


async def test_ollama_unload_one_model(ollama: FakeOllama) -> None:
    env = await run(oll(ollama.url), "unload", "ollama", "qwen3:8b")
    assert env.succeeded == ["oll"], env.failed
    assert ollama.posts() == [{"model": "qwen3:8b", "keep_alive": 0}]
    assert [m.name for m in ollama.state.loaded] == ["llama3:70b"]
    result = env.outcomes["oll"].result
    assert result is not None and result.output_tail == "unloaded qwen3:8b"


async def test_ollama_unload_without_model_unloads_every_resident_one(ollama: FakeOllama) -> None:
    env = await run(oll(ollama.url), "unload", "ollama")
    assert env.succeeded == ["oll"], env.failed
    assert [p["model"] for p in ollama.posts()] == ["qwen3:8b", "llama3:70b"]
    assert ollama.state.loaded == []
    env = await run(oll(ollama.url), "unload", "ollama")
    result = env.outcomes["oll"].result
    assert env.ok and result is not None and result.output_tail == "no model loaded"
    [v] = await FleetAggregator(fleet_of(oll(ollama.url))).poll_once(5)
    assert v.snapshot is not None and v.snapshot.engines[0].models == []


async def test_ollama_unload_of_an_unknown_model_fails_with_ollamas_reason(
    ollama: FakeOllama,
) -> None:
    env = await run(oll(ollama.url), "unload", "ollama", "nope:1b")
    assert env.failed == {"oll": "could not unload nope:1b: HTTP 404: model 'nope:1b' not found"}
    assert len(ollama.state.loaded) == 2


async def test_ollama_other_actions_are_refused_locally(ollama: FakeOllama) -> None:
    for action in ("restart", "stop", "start", "purge"):
        env = await run(oll(ollama.url), action, "ollama")
        assert env.failed["oll"].startswith(
            f"not sent: a bare Ollama node can only unload models (keep_alive 0); {action} needs"
        )
    env = await run(oll(ollama.url), "unload", "vllm")
    assert (
        env.failed["oll"] == "not sent: a bare Ollama node has only the engine 'ollama', not 'vllm'"
    )
    env = await run(oll(ollama.url), "load", "ollama", "llama3.1:8b")  # only our agent checks fit
    assert env.failed["oll"].endswith("load needs a fleettui agent on that machine")
    assert ollama.seen == []
    env = await run(oll(dead_port_url()), "unload", "ollama")
    assert env.failed == {"oll": "connection refused"}


async def test_ollama_sends_a_configured_token(ollama: FakeOllama) -> None:
    """Behind an authenticating proxy the token matters; without one nothing is required."""
    node = NodeConfig(name="oll", url=ollama.url, kind="ollama", token="proxy-secret")
    assert (await run(node, "unload", "ollama", "qwen3:8b")).ok
    assert {s.headers.get("authorization") for s in ollama.seen} == {"Bearer proxy-secret"}
    broken = NodeConfig(name="oll", url=ollama.url, kind="ollama", token_env="NO_SUCH_VAR_X")
    env = await run(broken, "unload", "ollama")
    assert env.failed["oll"] == "not sent: environment variable NO_SUCH_VAR_X is not set"


# --- a mixed fleet through the CLI -----------------------------------------------------------


def fleet_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleettui", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "160"},
    )


def write_mixed(path: Path, agent_url: str, asiai_url: str, ollama_url: str) -> Path:
    path.write_text(
        "[defaults]\nhttp_timeout_s = 3\n"
        f'[[node]]\nname = "gpu1"\nurl = "{agent_url}"\n'
        f'[[node]]\nname = "mac"\nurl = "{asiai_url}"\nkind = "asiai"\ntoken = "{SECRET}"\n'
        f'[[node]]\nname = "oll"\nurl = "{ollama_url}"\nkind = "ollama"\n'
    )
    path.chmod(0o600)
    return path


def test_mixed_fleet_in_status_json_and_bulk(sim_agent, asiai, ollama, tmp_path: Path) -> None:
    cfg = write_mixed(tmp_path / "projects.toml", sim_agent.url, asiai.url, ollama.url)
    r = fleet_cli(cfg, "status", "--json", "--timeout", "8")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    by = {n["name"]: n for n in out["nodes"]}
    assert {k: (v["kind"], v["state"], v["audit"]["chain"]) for k, v in by.items()} == {
        "gpu1": ("fleettui", "ONLINE", "ok"),
        "mac": ("asiai", "ONLINE", "n/a"),
        "oll": ("ollama", "ONLINE", "n/a"),
    }
    assert [e["name"] for e in by["mac"]["engines"]] == ["ollama", "llamacpp"]
    assert by["oll"]["engines"][0]["models"] == ["qwen3:8b", "llama3:70b"]
    assert SECRET not in r.stdout

    r = fleet_cli(cfg, "bulk", "unload", "--engine", "ollama", "--all", "--yes", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    env = json.loads(r.stdout)
    assert env["succeeded"] == ["mac", "oll"]
    assert env["failed"]["gpu1"].startswith("not sent: no token configured")
    assert asiai.commands == [
        {"nickname": "self", "command": "unload", "args": {"engine": "ollama"}}
    ]
    assert ollama.state.loaded == []
    assert SECRET not in r.stdout + r.stderr


async def test_aggregator_never_streams_or_audits_foreign_kinds(asiai, ollama) -> None:
    cfg = FleetConfig(
        defaults=Defaults(poll_interval_s=0.1, http_timeout_s=1, backoff_min_s=0.1),
        nodes=[mac(asiai.url), oll(ollama.url)],
    )
    async with FleetAggregator(cfg) as agg:
        with anyio.fail_after(5):
            while sum(s.path == "/api/v1/snapshot" for s in asiai.seen) < 3:
                await anyio.sleep(0.05)
        views = agg.snapshots()
    assert {v.state for v in views} == {NodeState.ONLINE}
    assert {s.path for s in asiai.seen} == {"/api/v1/snapshot"}
    assert {s.path for s in ollama.seen} <= {"/api/version", "/api/ps"}


def test_fleet_add_asiai_with_nickname_round_trips(tmp_path: Path) -> None:
    cfg = tmp_path / "projects.toml"
    r = fleet_cli(
        cfg, "add", "mac", "--url", "http://mac.local:8899", "--kind", "asiai",
        "--nickname", "studio", "--token-env", "ASIAI_TOKEN_MAC",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert 'kind = "asiai"\nnickname = "studio"\ntoken_env = "ASIAI_TOKEN_MAC"' in cfg.read_text()
    r = fleet_cli(cfg, "ls", "--json")
    [node] = json.loads(r.stdout)["nodes"]
    assert (node["kind"], node["token_source"]) == ("asiai", "env ASIAI_TOKEN_MAC")
    r = fleet_cli(cfg, "add", "box", "--url", "http://10.0.0.9:11434", "--nickname", "x")
    assert r.returncode == 2 and '--nickname: only applies to kind = "asiai"' in r.stderr
    r = fleet_cli(cfg, "add", "box", "--url", "http://10.0.0.9:11434", "--kind", "vllm")
    assert r.returncode == 2 and "invalid choice: 'vllm'" in r.stderr


async def test_asiai_refuses_load_locally() -> None:
    """asiai's command API has no load: nothing is sent, the reason says what would do it."""
    env = await run(mac(dead_port_url()), "load", "ollama", "llama3.1:8b")
    assert env.failed == {
        "mac": "not sent: asiai has no load command; load needs a fleettui agent on that machine"
    }
