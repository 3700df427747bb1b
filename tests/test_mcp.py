"""`fleet mcp`: the SDK's own clients against the server, in process and as a real stdio
subprocess, over real simulated agents (one of them with a token, one dead node whose token
file others can read, so its reason names that file)."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from mcp import Client, ClientSession, MCPError, StdioServerParameters, stdio_client

from actionfleet import ActionFleet
from fakes import wait_for
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.commands import mcp as mcp_command
from fleettui.views.mcp.server import build_server
from fleettui.views.mcp.state import FleetState, Redactor
from fleettui.wire import ActionRequest

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
TOOLS = (
    "list_nodes",
    "get_node",
    "find_model",
    "check_fit",
    "rank_placement",
    "fleet_summary",
    "recent_events",
)
ENV_SECRET = "env-secret-4b1d0c2f9e"
# settled: three agents ONLINE with their audit chains verified, locked DEGRADED (no read
# token sent), dead OFFLINE (neither chain checked)
CHAINS = [("ONLINE", "ok")] * 3 + [("DEGRADED", "?"), ("OFFLINE", "?")]


def _load_gen() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_mcp_tools", ROOT / "scripts" / "gen_mcp_tools.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_tool_list_is_the_committed_one() -> None:
    """Names, descriptions, input/output schemas and annotations: a change is deliberate."""
    committed = (ROOT / "docs" / "mcp-tools.json").read_text()
    assert committed == _load_gen().render(), "run: python scripts/gen_mcp_tools.py"
    listed = json.loads(committed)
    assert tuple(t["name"] for t in listed["tools"]) == TOOLS
    for t in listed["tools"]:
        assert t["annotations"]["readOnlyHint"] is True, t["name"]
        assert t["annotations"]["openWorldHint"] is False, t["name"]
        assert t["description"] and t["outputSchema"]["type"] == "object", t["name"]
    assert [r["uri"] for r in listed["resources"]] == ["fleet://nodes"]
    assert [r["uriTemplate"] for r in listed["resource_templates"]] == ["fleet://nodes/{name}"]


# --- the fleet ------------------------------------------------------------------------------


def secrets_and_config(
    fleet: ActionFleet, locked: tuple[str, str], tmp: Path
) -> tuple[list[str], str]:
    """projects.toml for the three agents, a node that wants a read token (given in a file
    others can read: not sent, and the reason names the file) and a dead node; each token
    source once."""
    names = list(fleet.urls)
    good = tmp / "good.token"
    good.write_text(fleet.secret + "\n")
    good.chmod(0o600)
    locked_url, locked_secret = locked
    leaky = tmp / "leaky.token"
    leaky.write_text(locked_secret + "\n")
    leaky.chmod(0o644)
    text = "[defaults]\nhttp_timeout_s = 1\npoll_interval_s = 0.3\nbackoff_max_s = 0.5\n"
    text += f'[[node]]\nname = "{names[0]}"\nurl = "{fleet.urls[names[0]]}"\n'
    text += f'token_file = "{good}"\n'
    text += f'[[node]]\nname = "{names[1]}"\nurl = "{fleet.urls[names[1]]}"\n'
    text += 'token_env = "MCP_TEST_TOKEN"\ntags = ["gpu"]\n'
    text += f'[[node]]\nname = "{names[2]}"\nurl = "{fleet.urls[names[2]]}"\n'
    text += f'token = "{fleet.secret}"\n'
    text += f'[[node]]\nname = "locked"\nurl = "{locked_url}"\ntoken_file = "{leaky}"\n'
    text += f'[[node]]\nname = "dead"\nurl = "{fleet.dead_url}"\n'
    return [fleet.secret, ENV_SECRET, locked_secret, str(good), str(leaky)], text


def assert_no_secret(answers: list[str], secrets: list[str]) -> None:
    assert answers
    for text in answers:
        for s in secrets:
            assert s not in text, f"{s!r} in an answer"


def check_schema(tool: Any, result: Any) -> dict:
    """The structured content is valid against the tool's output schema, and the text
    content says the same."""
    assert not result.is_error, result.content
    jsonschema.validate(result.structured_content, tool.output_schema)
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


async def drive(client: Client | ClientSession, names: list[str]) -> list[str]:
    """Every tool once with real arguments (and the error cases); returns every answer's
    JSON text for the secret scan."""
    answers: list[str] = []
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tuple(tools) == TOOLS

    async def call(name: str, args: dict) -> dict:
        result = await client.call_tool(name, args)
        answers.append(result.model_dump_json())
        return check_schema(tools[name], result)

    summary = await call("fleet_summary", {})
    assert summary["nodes"] == 5
    assert summary["states"] == {"INITIALIZING": 0, "ONLINE": 3, "DEGRADED": 1, "OFFLINE": 1}
    assert summary["stale"] == 2  # locked (never answered with a snapshot) and dead
    assert summary["power_w"] > 0 and summary["power_nodes"] == 3
    assert summary["largest_fit"]["node"] in names

    listed = await call("list_nodes", {})
    assert [n["name"] for n in listed["nodes"]] == [*names, "locked", "dead"]
    locked, dead = listed["nodes"][-2:]
    assert dead["freshness"]["stale"] and dead["freshness"]["state"] == "OFFLINE"
    assert any("chmod 600 [redacted]" in r for r in locked["reasons"]), locked["reasons"]
    live = listed["nodes"][0]
    assert not live["freshness"]["stale"] and live["freshness"]["age_s"] < 10
    assert live["power_source"] == "simulated" and live["audit"]["chain"] == "ok"

    page = await call("list_nodes", {"limit": 2})
    assert [n["name"] for n in page["nodes"]] == names[:2]
    assert (page["matched"], page["offset"], page["next_offset"]) == (5, 0, 2)
    last = await call("list_nodes", {"limit": 2, "offset": 4})
    assert [n["name"] for n in last["nodes"]] == ["dead"] and last["next_offset"] is None

    gpu = await call("list_nodes", {"filter": "tag=gpu and state=ONLINE"})
    assert [n["name"] for n in gpu["nodes"]] == [names[1]] and gpu["total"] == 5
    word = await call("list_nodes", {"filter": "gpu state=ONLINE"})  # a bare word: its tag
    assert [n["name"] for n in word["nodes"]] == [names[1]]

    node = await call("get_node", {"name": names[0]})
    assert node["host"]["info"]["hostname"] == names[0]
    assert node["ledger"] and all(m["engine"] for m in node["ledger"])
    assert node["budget"]["total_mb"] > 0
    assert {e["name"] for e in node["engines"]} >= {m["engine"] for m in node["ledger"]}
    model = node["ledger"][0]["name"]
    dead = await call("get_node", {"name": "dead"})
    assert dead["host"] is None and dead["freshness"]["stale"]

    found = await call("find_model", {"model": model.upper()})
    assert found["exact"] and found["matches"]
    assert all(m["name"] == model for m in found["matches"])
    assert (names[0], "resident") in {(m["node"], m["where"]) for m in found["matches"]}
    resident = node["ledger"][0]
    here = next(m for m in found["matches"] if (m["node"], m["where"]) == (names[0], "resident"))
    assert (here["ctx"], here["parallel"], here["sources"]) == (
        resident["ctx"],
        resident["parallel"],
        resident["sources"],
    )
    one = await call("find_model", {"model": model, "limit": 1})
    assert one["matched"] == found["matched"] and len(one["matches"]) == 1
    assert one["matches"][0]["where"] == "resident"
    part = await call("find_model", {"model": model[:3]})
    assert not part["exact"] or all(m["name"].lower() == model[:3] for m in part["matches"])
    assert (await call("find_model", {"model": "no-such-model-anywhere"}))["matches"] == []

    fit = await call("check_fit", {"model": model, "ctx": 8192})
    assert fit["request"]["model"] == model and fit["meta_from"].startswith("node ")
    assert {n["node"] for n in fit["nodes"]} == {*names, "locked", "dead"}
    assert next(n for n in fit["nodes"] if n["node"] == "dead")["verdict"] == "unknown"
    assert all(n["verdict"] != "unknown" for n in fit["nodes"] if n["node"] in names)
    one = await call("check_fit", {"model": model, "node": names[2], "kv_type": "q8_0"})
    assert [n["node"] for n in one["nodes"]] == [names[2]]
    assert one["request"]["kv_type"] == "q8_0"

    ranked = await call("rank_placement", {"model": model, "strategy": "spread", "top_k": 3})
    assert [p["rank"] for p in ranked["nodes"]] == [1, 2, 3] and ranked["strategy"] == "spread"
    assert all(p["node"] in names for p in ranked["nodes"])  # the live ones rank first
    assert ranked["nodes"][0]["score"] >= ranked["nodes"][-1]["score"]

    events = await call("recent_events", {"limit": 500})
    kinds = {e["kind"] for e in events["events"]}
    assert "state" in kinds
    assert [e["ts"] for e in events["events"]] == sorted(
        (e["ts"] for e in events["events"]), reverse=True
    )
    only = await call("recent_events", {"limit": 1, "kinds": ["state"]})
    assert len(only["events"]) == 1 and only["events"][0]["kind"] == "state"

    # errors: MCP tool errors carrying the reason
    bad = [
        ("get_node", {"name": "nope"}, "no node named 'nope'"),
        ("get_node", {"name": ""}, "at least 1 character"),
        ("get_node", {}, "name"),
        ("list_nodes", {"filter": "power>>"}, "expected a value after power>"),
        ("list_nodes", {"filter": "nosuchfield=1"}, "nosuchfield"),
        ("find_model", {"model": "   "}, "give a model name"),
        ("recent_events", {"limit": 0}, "greater than or equal to 1"),
        ("list_nodes", {"limit": 1001}, "less than or equal to 1000"),
        ("recent_events", {"kinds": ["snapshot"]}, "kinds"),
        ("check_fit", {"model": "llama3.1:8b", "node": "nope"}, "no node named 'nope'"),
        ("check_fit", {"model": "-rf"}, "String should match pattern"),
        ("check_fit", {"model": "x", "kv_type": "q3"}, "kv_type"),
        ("check_fit", {"model": "x", "ctx": 0}, "greater than or equal to 1"),
        ("rank_placement", {"model": "x", "strategy": "random"}, "strategy"),
        ("rank_placement", {"model": "x", "top_k": 0}, "greater than or equal to 1"),
        ("no_such_tool", {}, "Unknown tool"),
    ]
    for name, args, reason in bad:
        result = await client.call_tool(name, args)
        answers.append(result.model_dump_json())
        assert result.is_error, (name, args)
        assert result.structured_content is None
        assert reason in result.content[0].text, (name, args, result.content[0].text)

    # the resources mirror list_nodes and get_node
    res = await client.read_resource("fleet://nodes")
    answers.append(res.model_dump_json())
    listed = json.loads(res.contents[0].text)["nodes"]
    assert [n["name"] for n in listed] == [*names, "locked", "dead"]
    res = await client.read_resource(f"fleet://nodes/{names[1]}")
    answers.append(res.model_dump_json())
    assert json.loads(res.contents[0].text)["name"] == names[1]
    with pytest.raises(MCPError, match="no node named 'nope'"):
        await client.read_resource("fleet://nodes/nope")
    return answers


@pytest.fixture
def locked(agent_factory, tmp_path: Path) -> tuple[str, str]:
    """A node that answers only with a read token: its URL and its token."""
    from fleettui.agent.tokens import create_token, tokens_path

    agent_toml = tmp_path / "locked" / "agent.toml"
    agent_toml.parent.mkdir()
    agent_toml.write_text("read_token_required = true\n")
    _, secret = create_token(tokens_path(agent_toml), "reader")
    agent = agent_factory("--simulate", "--name", "locked", "--config", str(agent_toml))
    return agent.urls["locked"], secret


@pytest.fixture
def fleet_toml(fleet: ActionFleet, locked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MCP_TEST_TOKEN", ENV_SECRET)
    secrets, text = secrets_and_config(fleet, locked, tmp_path)
    path = tmp_path / "projects.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path, secrets


async def test_in_process_every_tool_answers_from_the_live_fleet(fleet_toml, fleet) -> None:
    from fleettui.config import load_fleet_config

    path, secrets = fleet_toml
    cfg = load_fleet_config(path)
    names = list(fleet.urls)
    agg = FleetAggregator(cfg)
    state = FleetState(agg, stale_after_s=5.0, redactor=Redactor(mcp_command.secrets_of(cfg)))
    async with agg, anyio.create_task_group() as tg:
        tg.start_soon(state.record)
        await wait_for(
            lambda: [(v.state.value, v.chain.value) for v in agg.snapshots()] == CHAINS,
            10,
            what="three nodes ONLINE, locked DEGRADED, dead OFFLINE",
        )
        # an action by someone else (fleet bulk, the dashboard) shows as events
        envelope = await agg.act([names[0]], ActionRequest(action="restart", engine="ollama"))
        assert envelope.succeeded == [names[0]], envelope.failed
        await wait_for(
            lambda: {"action", "audit"} <= {e.kind for e in state.events}, 5, what="events"
        )
        async with Client(build_server(state), raise_exceptions=True) as client:
            answers = await drive(client, names)
            acted = await client.call_tool("recent_events", {"kinds": ["action", "audit"]})
            answers.append(acted.model_dump_json())
            summaries = [e["summary"] for e in acted.structured_content["events"]]
            assert any("restart ollama" in s for s in summaries), summaries
        tg.cancel_scope.cancel()
    assert_no_secret(answers, secrets)


async def test_as_a_real_stdio_subprocess(fleet_toml, fleet, tmp_path: Path) -> None:
    path, secrets = fleet_toml
    names = list(fleet.urls)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "fleettui", "mcp", "--config", str(path)],
        env={**os.environ, "MCP_TEST_TOKEN": ENV_SECRET},
    )
    errlog = (tmp_path / "mcp-stderr.log").open("w+")
    with anyio.fail_after(60):
        async with stdio_client(params, errlog=errlog) as (r, w), ClientSession(r, w) as s:
            init = await s.initialize()
            assert init.server_info.name == "fleettui"
            assert "read-only" in (init.instructions or "")

            async def settled() -> bool:
                got = (await s.call_tool("list_nodes", {})).structured_content["nodes"]
                return [(n["freshness"]["state"], n["audit"]["chain"]) for n in got] == CHAINS

            while not await settled():
                await anyio.sleep(0.1)
            answers = await drive(s, names)
    errlog.seek(0)
    log = errlog.read()
    assert "Traceback" not in log, log
    assert_no_secret([*answers, log], secrets)


def test_without_the_sdk_the_command_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mcp" else real(name, *a)
    )
    assert mcp_command.cmd_mcp(argparse.Namespace()) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fleet: {mcp_command.INSTALL_HINT}" and "fleettui[mcp]" in err


def test_a_missing_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "fleettui", "mcp", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no such file" in r.stderr


def test_the_redactor_scrubs_each_node_part_and_fleet_text() -> None:
    red = Redactor({"a": ["s3cret", "/t/a.token", ""], "b": []})
    assert red.node("a", {"r": ["token file /t/a.token leaks s3cret"], "k": 1}) == {
        "r": ["token file [redacted] leaks [redacted]"],
        "k": 1,
    }
    assert red.node("b", "s3cret") == "s3cret"  # b's part: b has no secret
    assert red.fleet("a said s3cret") == "a said [redacted]"
    assert Redactor({}).fleet("s3cret") == "s3cret"


async def test_check_fit_is_fleet_fit_json(tmp_path: Path) -> None:
    """The same fleet (fixed snapshots: one node with room, one that must evict an idle
    model, one full, one dead): the tool's document is `fleet fit --json`'s."""
    from fit_fleet import MODEL, fit_fleet
    from fleettui.config import load_fleet_config
    from test_cli_read import dead_port, fleet, write_config

    with fit_fleet() as nodes:
        urls = {name: n.url for name, n in nodes.items()}
        urls["dead"] = f"http://127.0.0.1:{dead_port()}"
        path = write_config(tmp_path / "p.toml", urls)
        args = ["--ctx", "8192", "--parallel", "1"]
        r = await anyio.to_thread.run_sync(
            lambda: fleet("fit", MODEL, *args, "--json", config=path)
        )
        assert r.returncode == 0, r.stderr
        want = json.loads(r.stdout)
        place = ["place", MODEL, *args, "--strategy", "spread", "--top", "3", "--json"]
        r = await anyio.to_thread.run_sync(lambda: fleet(*place, config=path))
        assert r.returncode == 0, r.stderr
        want_place = json.loads(r.stdout)
        agg = FleetAggregator(load_fleet_config(path), verify_chain=False)
        async with agg:
            await wait_for(
                lambda: [v.state.value for v in agg.snapshots()] == ["ONLINE"] * 3 + ["OFFLINE"],
                10,
            )
            async with Client(build_server(FleetState(agg, stale_after_s=10))) as client:
                tools = {t.name: t for t in (await client.list_tools()).tools}
                res = await client.call_tool(
                    "check_fit", {"model": MODEL, "ctx": 8192, "parallel": 1}
                )
                got = check_schema(tools["check_fit"], res)
                res = await client.call_tool("check_fit", {"model": MODEL, "node": "tight"})
                tight = check_schema(tools["check_fit"], res)
                res = await client.call_tool("check_fit", {"model": MODEL, "limit": 2})
                best = check_schema(tools["check_fit"], res)
                res = await client.call_tool(
                    "rank_placement",
                    {"model": MODEL, "ctx": 8192, "parallel": 1, "strategy": "spread", "top_k": 3},
                )
                placed = check_schema(tools["rank_placement"], res)
    assert [n["verdict"] for n in best["nodes"]] == ["fits", "evict"]
    assert best["nodes_total"] == 4

    assert got.pop("nodes_total") == len(got["nodes"]) == 4  # the tool's one addition

    def timeless(doc: dict) -> dict:
        out = {**doc, "meta_from": None}  # whichever node has it first: the same metadata
        out["nodes"] = [{**n, "observed_at": None, "age_s": None} for n in doc["nodes"]]
        return out

    assert [n["verdict"] for n in got["nodes"]] == ["fits", "evict", "no", "unknown"]
    assert got["meta_from"] in {"node roomy", "node tight", "node full"}
    assert timeless(got) == timeless(want)
    assert [n["node"] for n in tight["nodes"]] == ["tight"] and tight["nodes_total"] == 1

    def unplaced(doc: dict) -> dict:
        nodes = [
            {**p, "fit": {**p["fit"], "observed_at": None, "age_s": None}} for p in doc["nodes"]
        ]
        return {**doc, "observed_at": None, "meta_from": None, "nodes": nodes}

    assert [p["node"] for p in placed["nodes"]][:2] == ["roomy", "tight"]
    assert unplaced(placed) == unplaced(want_place)
    assert tight["nodes"][0]["evict"] == ["qwen-idle:14b"]


def test_each_node_s_secrets_are_its_token_and_the_paths_of_its_token_and_client_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleettui.config import Defaults, FleetConfig, NodeConfig

    monkeypatch.setenv("T_ENV", "from-env")
    token = tmp_path / "t.token"
    token.write_text("from-file\n")
    token.chmod(0o600)
    key = tmp_path / "op.key"
    for f in (key, tmp_path / "op.crt"):
        f.write_text("-----BEGIN-----\n")
        f.chmod(0o600)
    cfg = FleetConfig(
        defaults=Defaults(client_cert=str(tmp_path / "op.crt"), client_key=str(key)),
        nodes=[
            NodeConfig(name="a", url="http://127.0.0.1:1", token_file=token),
            NodeConfig(name="b", url="https://127.0.0.1:2", token_env="T_ENV"),
            NodeConfig(name="c", url="http://127.0.0.1:3"),
        ],
    )
    got = mcp_command.secrets_of(cfg)
    assert {"from-file", str(token), str(key)} <= set(got["a"])
    assert {"from-env", str(key)} <= set(got["b"]) and str(token) not in got["b"]
    assert str(key) in got["c"] and not {"from-env", "from-file"} & set(got["c"])


async def test_full_collections_wait_for_a_pause_between_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While calls keep coming no full collection runs (CPython's own is made rare); once
    they pause for QUIET_S, one does."""
    monkeypatch.setattr(mcp_command, "QUIET_S", 0.2)
    full: list[float] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(time.monotonic())

    state = argparse.Namespace(last_call=time.monotonic())
    before = gc.get_threshold()
    gc.callbacks.append(seen)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(mcp_command.collect_between_calls, state, 0.05)
            for _ in range(20):  # an agent calling every 20 ms for 0.4 s
                state.last_call = time.monotonic()
                await anyio.sleep(0.02)
            assert gc.get_threshold()[2] == mcp_command.GEN2_EVERY
            assert full == []
            paused = state.last_call
            with anyio.fail_after(5):
                while not full:
                    await anyio.sleep(0.02)
            assert full[0] - paused >= 0.2
            tg.cancel_scope.cancel()
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*before)
