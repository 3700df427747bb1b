"""The load action against a real agent on loopback and fake engines speaking their JSON:
what each engine is sent, what each refuses and why, and the audit record of every attempt.

The fit gate itself (fits / evict / does not fit) is in test_load_fit.py; here the fakes hold
no model metadata, so a load the agent cannot judge is refused unless forced.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actionfleet import dead_port_url
from conftest import AgentProc, start_agent
from fake_engines import LLAMACPP, OLLAMA, VLLM, FakeEngine, js, router_loading
from test_agent_write import Env, audit_entries, make_env, post
from test_capacity_files import write_gguf

LOADED = js(
    {"model": "m", "created_at": "2025-08-01T10:00:00Z", "done": True, "done_reason": "load"}
)
LOAD_PATHS = {"/api/generate", "/api/pull", "/api/v1/models/load", "/models/load"}
LMS_RECORDER = """\
import json, sys
with open({log!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
print("Model loaded successfully")
"""


@dataclass
class Node:
    env: Env
    agent: AgentProc
    secret: str
    ollama: FakeEngine
    lmstudio: FakeEngine
    lmstudio_old: FakeEngine
    llamacpp: FakeEngine
    router: FakeEngine
    lms_log: Path

    def sent(self, eng: FakeEngine, path: str) -> list[dict]:
        return [json.loads(b) for p, b in eng.bodies if p == path]

    def loads_sent(self) -> int:
        """Requests to any load endpoint (the probes' reads, /api/show, are not loads)."""
        engines = (self.ollama, self.lmstudio, self.lmstudio_old, self.llamacpp, self.router)
        return sum(1 for e in engines for p, _ in e.bodies if p in LOAD_PATHS)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("load")
    ollama = FakeEngine(
        {**OLLAMA, "/api/generate": LOADED, "/api/pull": js({"status": "success"})}
    ).start()
    lmstudio = FakeEngine(
        {
            "/api/v0/models": js({"object": "list", "data": []}),
            "/api/v1/models/load": js(
                {"model_instance_id": "qwen/qwen3-4b", "load_time_seconds": 1.5}
            ),
        }
    ).start()
    lmstudio_old = FakeEngine({"/api/v0/models": js({"object": "list", "data": []})}).start()
    llamacpp = FakeEngine(LLAMACPP).start()
    gguf = write_gguf(tmp / "tiny.gguf")  # a real GGUF header: the router lists only its path
    router = FakeEngine(
        router_loading(
            {
                "object": "list",
                "data": [
                    {"id": "tiny", "path": str(gguf), "status": {"value": "unloaded"}},
                    {"id": "pathless", "status": {"value": "unloaded"}},
                ],
            }
        )
    ).start()
    vllm = FakeEngine(VLLM).start()
    lms_log = tmp / "lms.log"
    lms = tmp / "lms"
    lms.write_text(f"#!{sys.executable}\n" + LMS_RECORDER.format(log=str(lms_log)))
    lms.chmod(0o755)
    e = make_env(
        tmp,
        "auto_detect = false\nrate_limit_per_min = 1000\n"
        f'[engines.ollama]\nurl = "{ollama.url}"\npull = true\n'
        f'[engines.lmstudio]\nurl = "{lmstudio.url}"\n'
        f'[engines.lmold]\nkind = "lmstudio"\nurl = "{lmstudio_old.url}"\nlms = "{lms}"\n'
        f'[engines.lmbare]\nkind = "lmstudio"\nurl = "{lmstudio_old.url}"\n'
        f'[engines.llamaone]\nkind = "llamacpp"\nurl = "{llamacpp.url}"\n'
        f'[engines.llamacpp]\nurl = "{router.url}"\n'
        f'[engines.vllm]\nurl = "{vllm.url}"\n'
        f'[engines.mlx]\nurl = "{dead_port_url()}"\n',
        commands="",
    )
    # vLLM loads through the administrator's command: the recorder, with {model} and {ctx}
    rec = json.dumps([sys.executable, str(e.tmp / "scripts" / "recorder.py")])[1:-1]
    with e.config.open("a") as fh:
        fh.write(f'[engines.vllm.commands]\nload = [{rec}, "load", "{{model}}", "{{ctx}}"]\n')
    agent = start_agent("--config", str(e.config), tmp=tmp, env=e.env)
    try:
        yield Node(e, agent, e.token(), ollama, lmstudio, lmstudio_old, llamacpp, router, lms_log)
    finally:
        agent.stop()
        for eng in (ollama, lmstudio, lmstudio_old, llamacpp, router, vllm):
            eng.stop()


def load(node: Node, **body: object) -> tuple[int, dict]:
    r = post(node.agent.url, {"action": "load", **body}, node.secret)
    return r.status_code, r.json()


def test_a_load_the_agent_cannot_judge_is_refused_with_the_breakdown(node: Node) -> None:
    before = node.loads_sent()
    status, body = load(node, engine="ollama", model="gemma3:270m", ctx=4096)
    assert status == 409, body
    assert "cannot tell whether gemma3:270m fits" in body["error"]
    assert "send force to load anyway" in body["error"]
    fit = body["detail"]
    assert fit["verdict"] == "unknown" and fit["model"] == "gemma3:270m"
    assert fit["engine"] == "ollama" and fit["reasons"]
    assert node.loads_sent() == before  # the engine was never asked
    last = audit_entries(node.agent.url)[-1]
    assert (last.status, last.http_status, last.action) == ("denied", 409, "load")
    assert last.args["fit"]["verdict"] == "unknown" and last.args["ctx"] == 4096


def test_forced_ollama_load_pulls_then_loads_and_is_audited_as_forced(node: Node) -> None:
    status, body = load(
        node, engine="ollama", model="gemma3:270m", ctx=8192, keep_alive="30m", force=True
    )
    assert status == 200 and body["ok"], body
    assert "forced: loading although the check said unknown" in body["output_tail"]
    assert "pulled gemma3:270m" in body["output_tail"]
    assert node.sent(node.ollama, "/api/pull")[-1] == {"model": "gemma3:270m", "stream": False}
    assert node.sent(node.ollama, "/api/generate")[-1] == {
        "model": "gemma3:270m",
        "prompt": "",
        "stream": False,
        "keep_alive": "30m",
        "options": {"num_ctx": 8192},
    }
    started, done = audit_entries(node.agent.url)[-2:]
    assert started.status == "started" and done.status == "ok" and done.ref == started.seq
    assert started.args["force"] is True and started.args["keep_alive"] == "30m"
    assert started.args["fit"]["verdict"] == "unknown" and started.args["via"] == "api"


def test_keep_alive_without_a_unit_goes_as_seconds(node: Node) -> None:
    status, body = load(node, engine="ollama", model="gemma3:270m", keep_alive="-1", force=True)
    assert status == 200 and body["ok"], body
    sent = node.sent(node.ollama, "/api/generate")[-1]
    assert sent["keep_alive"] == -1 and "options" not in sent


def test_lmstudio_rest_load_and_the_lms_fallback(node: Node) -> None:
    status, body = load(node, engine="lmstudio", model="qwen/qwen3-4b", ctx=16384, force=True)
    assert status == 200 and body["ok"], body
    assert node.sent(node.lmstudio, "/api/v1/models/load")[-1] == {
        "model": "qwen/qwen3-4b",
        "context_length": 16384,
    }
    # an LM Studio without the REST endpoint: the configured lms CLI, argv only
    status, body = load(node, engine="lmold", model="qwen/qwen3-4b", ctx=4096, force=True)
    assert status == 200 and body["ok"], body
    calls = [json.loads(x) for x in node.lms_log.read_text().splitlines()]
    assert calls[-1] == ["load", "qwen/qwen3-4b", "--context-length", "4096"]
    assert "Model loaded successfully" in body["output_tail"]
    # ... and without one configured: failed, saying which key to set
    status, body = load(node, engine="lmbare", model="qwen/qwen3-4b", force=True)
    assert status == 200 and body["ok"] is False
    assert "engines.<name>.lms" in body["error"]
    assert audit_entries(node.agent.url)[-1].status == "failed"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"engine": "llamaone", "model": "m"}, 400, "not in router mode"),
        ({"engine": "ollama", "model": "m", "parallel": 2}, 400, "parallel is not applied by"),
        ({"engine": "ollama", "model": "m", "kv_type": "q8_0"}, 400, "kv_type is not applied"),
        ({"engine": "lmstudio", "model": "m", "keep_alive": "5m"}, 400, "keep_alive is not"),
        ({"engine": "mlx", "model": "m"}, 400, "engines.mlx.commands.load"),
        ({"engine": "vllm", "model": "m"}, 400, "engines.vllm.commands.load uses {ctx}"),
        ({"engine": "vllm", "model": "m", "ctx": 8, "parallel": 2}, 400, "use {parallel}"),
        ({"engine": "ollama"}, 400, "load needs a model"),
        ({"model": "m"}, 400, "load needs an engine"),
        ({"engine": "ollama", "model": "m", "ctx": -1}, 400, "ctx -1 is not between"),
        ({"engine": "ollama", "model": "m", "ctx": 1 << 40}, 400, "is not between 1 and"),
        ({"engine": "ollama", "model": "m", "ctx": "4096"}, 400, "ctx must be an integer"),
        ({"engine": "ollama", "model": "m", "ctx": 4096.0}, 400, "ctx must be an integer"),
        ({"engine": "ollama", "model": "m", "parallel": 0}, 400, "parallel 0 is not between"),
        ({"engine": "ollama", "model": "m", "keep_alive": "1y"}, 400, "not a duration"),
        ({"engine": "ollama", "model": "m", "keep_alive": "0"}, 400, "would unload the model"),
        ({"engine": "ollama", "model": "m", "force": "true"}, 400, "force must be true or false"),
        ({"engine": "ollama", "model": "m", "force": 1}, 400, "force must be true or false"),
        ({"engine": "ollama", "model": "m", "num_ctx": 4096}, 400, "unknown field"),
        ({"engine": "ollama", "model": "-m"}, 400, "is not a valid model name"),
    ],
)
def test_refused_loads_name_the_reason_and_reach_no_engine(
    node: Node, body: dict, status: int, needle: str
) -> None:
    sent = node.loads_sent()
    calls = len(node.env.calls_made())
    got, answer = load(node, **body)
    assert got == status and needle in answer["error"], answer
    assert node.loads_sent() == sent
    assert len(node.env.calls_made()) == calls
    last = audit_entries(node.agent.url)[-1]
    assert last.status == "denied" and last.http_status == status


def test_vllm_loads_through_the_configured_command_with_whole_argv_items(node: Node) -> None:
    status, body = load(
        node, engine="vllm", model="Qwen/Qwen2.5-7B-Instruct", ctx=32768, force=True
    )
    assert status == 200 and body["ok"], body
    assert node.env.calls_made()[-1] == ["load", "Qwen/Qwen2.5-7B-Instruct", "32768"]
    started = audit_entries(node.agent.url)[-2]
    assert started.args["via"] == "argv" and started.args["ctx"] == 32768


def test_every_load_attempt_is_on_the_chain(node: Node) -> None:
    v = node.env.fleet("agent", "audit", "verify", "--path", str(node.env.data / "audit.jsonl"))
    assert v.returncode == 0, v.stdout + v.stderr
    loads = [e for e in audit_entries(node.agent.url) if e.action == "load"]
    assert {e.status for e in loads} >= {"denied", "started", "ok", "failed"}


def test_llamacpp_router_loads_what_its_gguf_header_says_fits(node: Node) -> None:
    status, body = load(node, engine="llamacpp", model="tiny")
    assert status == 200 and body["ok"], body
    assert ": fits (needs" in body["output_tail"]
    assert node.sent(node.router, "/models/load") == [{"model": "tiny"}]
    started = audit_entries(node.agent.url)[-2]
    assert started.args["fit"]["verdict"] == "fits" and started.args["via"] == "api"
    # a model the router lists without a file: the agent cannot tell, and refuses
    status, body = load(node, engine="llamacpp", model="pathless")
    assert status == 409 and body["detail"]["verdict"] == "unknown", body
    assert node.sent(node.router, "/models/load") == [{"model": "tiny"}]
    # router mode loads with the server's own settings: a context length would be dropped
    status, body = load(node, engine="llamacpp", model="tiny", ctx=4096)
    assert status == 400 and "ctx is not applied by llamacpp's load API" in body["error"]
