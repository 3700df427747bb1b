"""Engine probes against real loopback servers speaking each engine's documented JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from fake_engines import (
    LLAMA_PROPS,
    LLAMACPP,
    LLAMACPP_OLD,
    LLAMACPP_ROUTER,
    LMSTUDIO,
    LMSTUDIO_V1,
    LMSTUDIO_V1_MODELS,
    MLX,
    OLLAMA,
    OLLAMA_FULL,
    ROUTER_MODELS,
    VLLM,
    VLLM_METRICS,
    VLLM_METRICS_OLD,
    fake_engine,
    js,
)
from fleettui.agent import engines, procs
from fleettui.agent.engines import Probing, _gguf, _ollama_env, probe_engine, vllm_metrics
from test_capacity_files import LLAMA_31_8B, safetensors, write_gguf

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _patient_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process lookup's 2 s budget is the agent's tick, not what these tests check: on a
    starved machine it ran out and a test saw no PID (a timeout test passes its own)."""
    monkeypatch.setattr(engines, "LOOKUP_BUDGET_S", 60.0)


async def probe(kind: str, url: str, timeout: float = 30.0, probing: Probing | None = None):
    """A probe with a patient default timeout (loaded machine); hang tests pass a short one."""
    async with httpx.AsyncClient(trust_env=False) as c:
        return await probe_engine(c, kind, kind, url, timeout, probing)


async def test_ollama_reports_resident_models_with_vram() -> None:
    with fake_engine(OLLAMA) as eng:
        e = await probe("ollama", eng.url)
    assert e.status == "up" and e.version == "0.11.4"
    by = {m.name: m for m in e.models}
    assert by["qwen2.5-coder:7b"].vram_mb == pytest.approx(5358.4, abs=0.1)
    assert by["qwen2.5-coder:7b"].quant == "Q4_K_M"
    assert by["llama3:70b"].size_mb == pytest.approx(9216.0) and by[
        "llama3:70b"
    ].vram_mb == pytest.approx(6144.0)


async def test_llamacpp_older_server_model_from_props_and_size_from_models() -> None:
    with fake_engine(LLAMACPP_OLD) as eng:
        e = await probe("llamacpp", eng.url, probing=Probing(gpus=True))
    assert e.status == "up" and e.version == "b6100-1a2b3c4d"
    assert [m.name for m in e.models] == ["Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"]
    m = e.models[0]
    assert m.size_mb == pytest.approx(4685.3, abs=0.1) and m.sources["size_mb"] == "reported"
    # no /slots, no model_ftype (older servers): context and slots from /props, busy unknown
    assert (m.ctx, m.parallel, m.busy, m.quant) == (8192, 1, None, None)
    assert m.meta is not None and m.meta.params == 8030261312


async def test_llamacpp_loading_is_down_with_reason() -> None:
    routes = {**LLAMACPP, "/health": js({"error": {"code": 503, "message": "Loading model"}}, 503)}
    with fake_engine(routes) as eng:
        e = await probe("llamacpp", eng.url)
    assert e.status == "down" and "loading" in (e.error or "")


async def test_vllm_lists_served_models_but_not_lora_adapters() -> None:
    with fake_engine(VLLM) as eng:
        e = await probe("vllm", eng.url)
    assert e.status == "up" and e.version == "0.10.1"
    assert [m.name for m in e.models] == ["meta-llama/Llama-3.1-8B-Instruct"]


async def test_lmstudio_before_0_4_loaded_models_and_the_rest_on_disk() -> None:
    with fake_engine(LMSTUDIO) as eng:  # no /api/v1/models: /api/v0/models
        e = await probe("lmstudio", eng.url)
    assert e.status == "up" and e.version == "0.3.24"
    assert [(m.name, m.quant) for m in e.models] == [("meta-llama-3.1-8b-instruct", "Q4_K_M")]
    assert e.models[0].meta is not None and e.models[0].meta.ctx_train == 131072
    assert [(d.name, d.quant) for d in e.available] == [("qwen2-vl-7b-instruct", "4bit")]


async def test_mlx_up_and_not_confused_with_llamacpp() -> None:
    with fake_engine(MLX) as eng:
        assert (await probe("mlx", eng.url)).status == "up"
        wrong = await probe("llamacpp", eng.url)  # mlx_lm answers /health too, but has no /props
    assert wrong.status == "down" and "not llama.cpp" in (wrong.error or "")
    with fake_engine(LLAMACPP) as eng:
        assert (await probe("mlx", eng.url)).status == "down"


@pytest.mark.parametrize(
    "routes, reason",
    [
        ({"/api/version": (200, b"<html>oops", {}), "/api/ps": (200, b"{", {})}, "not JSON"),
        ({"/api/version": js({"version": 3}), "/api/ps": js({"models": []})}, "unexpected answer"),
        (
            {"/api/version": js({"version": "1"}), "/api/ps": js({"models": "x"})},
            "unexpected answer",
        ),
        ({"/api/version": js({"version": "1"}), "/api/ps": js({}, 500)}, "HTTP 500"),
    ],
)
async def test_garbage_is_down_with_reason_not_a_crash(routes, reason) -> None:
    with fake_engine(routes) as eng:
        e = await probe("ollama", eng.url)
    assert e.status == "down" and reason in (e.error or "")


async def test_hanging_engine_times_out() -> None:
    with fake_engine(OLLAMA, hang_s=5) as eng:
        t0 = time.monotonic()
        e = await probe("ollama", eng.url, timeout=0.3)
    assert e.status == "down" and "no answer within 0.3 s" in (e.error or "")
    assert time.monotonic() - t0 < 3


async def test_refused_connection_is_down() -> None:
    with fake_engine(OLLAMA) as eng:
        url = eng.url
    e = await probe("ollama", url)
    assert e.status == "down" and e.error == "connection refused"


def write_agent_toml(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(body)
    return p


STUCK_S = 3.0  # how long the hanging engine holds each tick


def measured(snap: dict) -> bool:
    """llama.cpp's model measured on the machine's side (its process found in time)."""
    models = [m for e in snap["engines"] if e["name"] == "llamacpp" for m in e["models"]]
    return bool(snap["gpus"]) or any(m["sources"].get("vram_mb") == "measured" for m in models)


def test_agent_reports_every_engine_and_a_hang_does_not_slow_snapshot(
    agent_factory, tmp_path
) -> None:
    with (
        fake_engine(OLLAMA) as ol,
        fake_engine(VLLM) as vl,
        fake_engine(LLAMACPP) as lc,
        fake_engine(LMSTUDIO) as lm,
        fake_engine(MLX) as mx,
        fake_engine(OLLAMA, hang_s=20) as hung,
        fake_engine({"/api/version": (200, b"garbage", {})}) as bad,
    ):
        cfg = write_agent_toml(
            tmp_path,
            f"""
interval_s = 0.5
price_per_kwh = 0.25
currency = "USD"
[engines.ollama]
url = "{ol.url}"
[engines.vllm]
url = "{vl.url}"
[engines.llamacpp]
url = "{lc.url}"
[engines.lmstudio]
url = "{lm.url}"
[engines.mlx]
url = "{mx.url}"
[engines.stuck]
kind = "ollama"
url = "{hung.url}"
timeout_s = {STUCK_S}
[engines.broken]
kind = "ollama"
url = "{bad.url}"
""",
        )
        agent = agent_factory("--config", str(cfg))
        # a tick lasts as long as "stuck" hangs (STUCK_S); every read during it stays fast. A
        # read that waited for the tick would take up to STUCK_S: the bound is half that, far
        # from a loaded machine's slow answer (0.5 s against a 1 s hang failed under load).
        worst = 0.0
        deadline = time.monotonic() + STUCK_S
        with httpx.Client(timeout=5) as c:
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                snap = c.get(f"{agent.url}/api/v1/snapshot").json()
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.1)
            # the process lookup has a 2 s budget a tick: a starved machine can leave a tick
            # without the measured figures, which its thread brings to a later one
            deadline = time.monotonic() + 60
            while not measured(snap) and time.monotonic() < deadline:
                time.sleep(0.2)
                snap = c.get(f"{agent.url}/api/v1/snapshot").json()
        status = {e["name"]: e["status"] for e in snap["engines"]}
        assert status == {
            "ollama": "up",
            "vllm": "up",
            "llamacpp": "up",
            "lmstudio": "up",
            "mlx": "up",
            "stuck": "down",
            "broken": "down",
        }
        assert worst < STUCK_S / 2, f"snapshot took {worst:.2f}s while an engine hung"
        # the ledger over the wire; on a machine without a GPU llama.cpp's model is RAM
        by = {e["name"]: e for e in snap["engines"]}
        lc = by["llamacpp"]["models"][0]
        assert (lc["ctx"], lc["parallel"], lc["busy"]) == (4096, 2, True)
        assert lc["meta"]["ctx_train"] == 32768
        if not snap["gpus"]:
            assert lc["vram_mb"] == 0.0 and lc["sources"]["vram_mb"] == "measured"
        assert by["vllm"]["settings"]["gpu_memory_utilization"] == 0.9
        assert by["lmstudio"]["available"][0]["name"] == "qwen2-vl-7b-instruct"
        assert any("engine stuck down" in p for p in snap["problems"])
        assert any("engine broken down" in p and "not JSON" in p for p in snap["problems"])
        assert snap["cost"]["currency"] == "USD" and snap["cost"]["price_per_kwh"] == 0.25
        assert snap["node"]["simulated"] is False


def test_broken_config_exits_2_naming_file_and_key(tmp_path, xdg_home) -> None:
    import subprocess
    import sys

    cfg = write_agent_toml(tmp_path, 'interval_s = "fast"\n[engines.ollama]\nurl = 3\n')
    r = subprocess.run(
        [sys.executable, "-m", "fleettui", "agent", "serve", "--config", str(cfg), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert str(cfg) in r.stderr and "interval_s" in r.stderr and "engines.ollama.url" in r.stderr
    bad_toml = write_agent_toml(tmp_path, "interval_s = = 2\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleettui",
            "agent",
            "serve",
            "--config",
            str(bad_toml),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "not valid TOML" in r.stderr and "line 1" in r.stderr


async def test_odd_model_figures_are_dropped_and_named_the_engine_stays_up() -> None:
    models = [
        {"name": "ok:7b", "size": 5 * 2**30, "size_vram": 2**30, "details": {}},
        {"name": "weird:1b", "size": -(2**30), "size_vram": 10**30, "details": {}},
        {"name": "n" * 10_000, "size": 1, "details": {}},
    ]
    routes = {**OLLAMA, "/api/ps": js({"models": models})}
    with fake_engine(routes) as eng:
        e = await probe("ollama", eng.url)
    assert e.status == "up"
    assert [(m.name, m.size_mb, m.vram_mb) for m in e.models] == [
        ("ok:7b", 5120.0, 1024.0),
        ("weird:1b", None, None),
    ]
    assert e.error is not None
    assert "engine ollama: model weird:1b: size_mb -1024.0 dropped" in e.error
    assert "vram_mb 9.5367431640625e+23 dropped" in e.error
    assert "engine ollama: a model: name 'nnnn" in e.error


# --- the residency ledger: what each probe fills -----------------------------------------------

HERE = Path(__file__).parent


def rss_mb(pid: int | None = None) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


@contextmanager
def engine_process(
    routes: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
):
    """A fake engine in a process of its own (its own PID, command line, environment and
    working directory)."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fake_engines.py"), routes, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_ollama_ledger_context_expiry_metadata_and_models_on_disk() -> None:
    with fake_engine(OLLAMA_FULL) as eng:
        e = await probe("ollama", eng.url)
    assert e.status == "up" and e.error is None
    qwen, big = e.models
    assert qwen.ctx == 4096 and big.ctx is None  # context_length: newer servers only
    assert qwen.expires_at == pytest.approx(1754483008.7482)
    assert big.expires_at is None  # keep_alive -1: "never", a date in 2318
    assert qwen.sources == {
        "size_mb": "reported",
        "vram_mb": "reported",
        "ctx": "reported",
        "expires_at": "reported",
    }
    m = qwen.meta
    assert m is not None and m.source == "ollama-show"
    assert (m.arch, m.n_layers, m.n_heads, m.n_kv_heads) == ("qwen2", 28, 28, 4)
    assert m.key_length is None  # not in model_info: the estimator's default (embd / heads)
    assert m.ctx_train == 32768 and m.params == 7615616512 and m.quant == "Q4_K_M"
    assert m.file_mb == pytest.approx(4683087332 / 2**20, abs=0.1)  # from /api/tags
    assert big.meta is None  # /api/show does not know it: no metadata, no problem
    disk = {d.name: d for d in e.available}
    assert set(disk) == {"llama3.1:8b", "gemma3:270m"}
    assert disk["llama3.1:8b"].params == 8_000_000_000 and disk["llama3.1:8b"].quant == "Q4_K_M"
    assert disk["llama3.1:8b"].size_mb == pytest.approx(4692.8, abs=0.1)
    g = disk["gemma3:270m"].meta
    # gemma3's layers slide in a fixed pattern its GGUF does not spell out: the estimator's
    assert g is not None and (g.key_length, g.sliding_window, g.sliding_layers) == (256, 512, None)
    assert disk["llama3.1:8b"].meta is not None and disk["llama3.1:8b"].meta.n_kv_heads == 8


async def test_ollama_show_is_cached_by_digest_not_asked_every_tick() -> None:
    p = Probing()
    with fake_engine(OLLAMA_FULL) as eng:
        for _ in range(3):
            e = await probe("ollama", eng.url, probing=p)
    shows = [json.loads(b)["model"] for path, b in eng.bodies if path == "/api/show"]
    # the resident qwen once; llama3:70b is unknown to /api/show and asked again next tick
    assert shows.count("qwen2.5-coder:7b") == 1 and shows.count("llama3:70b") == 3
    assert shows.count("llama3.1:8b") == 1 and shows.count("gemma3:270m") == 1
    assert e.models[0].meta is not None and e.models[0].meta.n_layers == 28


async def test_ollama_settings_from_its_environment_and_its_pids() -> None:
    env = {
        "OLLAMA_NUM_PARALLEL": "4",
        "OLLAMA_KV_CACHE_TYPE": "Q8_0",
        "OLLAMA_CONTEXT_LENGTH": "8192",
        "OLLAMA_MAX_LOADED_MODELS": "lots",
        "OLLAMA_FLASH_ATTENTION": "1",
    }
    with engine_process("OLLAMA_FULL", env=env) as (proc, url):
        e = await probe("ollama", url)
    assert e.status == "up" and e.pids[0] == proc.pid
    assert e.settings is not None
    assert (e.settings.num_parallel, e.settings.kv_type, e.settings.default_ctx) == (
        4,
        "q8_0",
        8192,
    )
    assert e.settings.max_loaded is None and e.settings.flash_attention is True
    assert "engine ollama: OLLAMA_MAX_LOADED_MODELS 'lots' is not a number" in (e.error or "")
    assert all(m.pid is None for m in e.models)  # Ollama's runners hold the models, not it


async def test_llamacpp_ledger_on_a_gpu_node() -> None:
    with fake_engine(LLAMACPP) as eng:
        e = await probe("llamacpp", eng.url, probing=Probing(gpus=True))
    assert e.status == "up" and e.version == "b6500-9f8e7d6c" and e.error is None
    (m,) = e.models
    assert m.name == "gemma-3-270m-q4_k_m.gguf" and m.quant == "Q4_K_M"
    assert (m.ctx, m.parallel, m.busy) == (4096, 2, True)  # slot 1 is processing
    assert m.size_mb == pytest.approx(241.0, abs=0.1) and m.sources["size_mb"] == "reported"
    assert m.vram_mb is None and "vram_mb" not in m.sources  # NVML's, per process (attribute)
    assert m.pid == os.getpid() and os.getpid() in e.pids  # the fake listens in this process
    assert m.meta is not None and m.meta.source == "llamacpp-meta"
    assert (m.meta.ctx_train, m.meta.embedding_length, m.meta.vocab_size) == (32768, 640, 262144)
    assert m.meta.quant == "Q4_K_M" and m.meta.file_mb == pytest.approx(241.0, abs=0.1)
    assert e.settings is not None and (e.settings.default_ctx, e.settings.num_parallel) == (4096, 2)
    assert e.settings.router is False


async def test_llamacpp_on_a_node_without_gpu_is_ram_measured_not_vram() -> None:
    with engine_process("LLAMACPP") as (proc, url):
        e = await probe("llamacpp", url, probing=Probing(gpus=False))
        want = rss_mb(proc.pid)
    (m,) = e.models
    assert m.vram_mb == 0 and m.sources["vram_mb"] == "measured"
    assert m.pid == proc.pid and e.pids == [proc.pid]
    # on a CPU run the process's resident set is the model's total: weights, KV, buffers
    assert m.size_mb == pytest.approx(want, rel=0.2) and m.sources["size_mb"] == "measured"
    assert m.meta is not None and m.meta.file_mb == pytest.approx(241.0, abs=0.1)


async def test_llamacpp_without_health_is_up_when_props_answer() -> None:
    routes = {k: v for k, v in LLAMACPP.items() if k != "/health"}
    with fake_engine(routes) as eng:
        e = await probe("llamacpp", eng.url)
    assert e.status == "up" and [m.name for m in e.models] == ["gemma-3-270m-q4_k_m.gguf"]


async def test_llama_cpp_python_is_llamacpp_never_mlx() -> None:
    with engine_process("LLAMA_CPP_PYTHON") as (proc, url):
        e = await probe("llamacpp", url)
        wrong = await probe("mlx", url)
    assert e.status == "up" and e.version is None
    (m,) = e.models
    assert m.name == "qwen2.5-0.5b-instruct-q4_k_m.gguf" and m.pid == proc.pid
    assert m.sources == {"size_mb": "measured", "vram_mb": "measured"}  # its RSS: no /props
    assert wrong.status == "down" and "llama-cpp-python" in (wrong.error or "")


async def test_llamacpp_router_mode_loaded_loading_and_on_disk() -> None:
    with fake_engine(LLAMACPP_ROUTER) as eng:
        e = await probe("llamacpp", eng.url, probing=Probing(gpus=True))
    assert e.status == "up" and e.error is None
    assert e.settings is not None and e.settings.router and e.settings.max_loaded == 4
    loaded, loading = e.models
    assert loaded.name == "ggml-org/gemma-3-270m-GGUF:Q4_K_M"
    # the child's /props and /slots, asked with autoload=false (the fake refuses otherwise)
    assert (loaded.ctx, loaded.parallel, loaded.busy) == (8192, 1, False)
    assert loaded.meta is not None and loaded.meta.params == 268098176
    assert loaded.pid is None  # the router's children hold the models
    assert loading.name == "unsloth/Qwen3-4B-GGUF:Q4_K_M" and loading.ctx is None
    assert [d.name for d in e.available] == [
        "ggml-org/Qwen3-0.6B-GGUF:Q8_0",
        "bartowski/Llama-3.2-1B-GGUF:Q4_K_M",  # sleeping: weights freed
    ]
    assert not any("autoload=true" in h or h.endswith("/props?model=") for h in eng.hits)


async def test_llamacpp_router_model_is_its_child_server_process() -> None:
    path = ROUTER_MODELS["data"][0]["path"]
    with engine_process("LLAMACPP_ROUTER", "--child", path) as (proc, url):
        e = await probe("llamacpp", url, probing=Probing(gpus=False))
        child = next(c for c in psutil.Process(proc.pid).children() if path in c.cmdline())
        want = rss_mb(child.pid)
    loaded = e.models[0]
    assert loaded.pid == child.pid and e.pids == [proc.pid, child.pid]
    assert (
        loaded.size_mb == pytest.approx(want, rel=0.2) and loaded.sources["size_mb"] == "measured"
    )
    assert e.models[1].pid is None  # loading: no server of its own yet


async def test_llamacpp_sleeping_server_holds_nothing() -> None:
    routes = {**LLAMACPP, "/props": js({**LLAMA_PROPS, "is_sleeping": True})}
    with fake_engine(routes) as eng:
        e = await probe("llamacpp", eng.url)
    assert e.status == "up" and e.models == []
    assert [d.name for d in e.available] == ["gemma-3-270m-q4_k_m.gguf"]


async def test_vllm_cache_config_usage_and_requests_from_metrics() -> None:
    with fake_engine(VLLM) as eng:
        e = await probe("vllm", eng.url, probing=Probing(gpus=True))
    assert e.status == "up" and e.error is None
    s = e.settings
    assert s is not None
    assert (s.gpu_memory_utilization, s.num_gpu_blocks, s.block_size) == (0.9, 27349, 16)
    assert (s.kv_type, s.kv_usage_pct) == ("auto", 25.0)
    assert (s.requests_running, s.requests_waiting) == (3, 1)
    (m,) = e.models
    assert (m.ctx, m.busy, m.kv_type) == (131072, True, "auto")
    assert m.sources == {"ctx": "reported", "kv_type": "reported", "busy": "reported"}


async def test_vllm_older_metrics_and_none_at_all() -> None:
    old = {**VLLM, "/metrics": (200, VLLM_METRICS_OLD.encode(), {})}
    with fake_engine(old) as eng:
        e = await probe("vllm", eng.url)
    s = e.settings
    assert s is not None and (s.kv_usage_pct, s.kv_type, s.gpu_memory_utilization) == (
        50.0,
        "fp8",
        0.85,
    )
    assert e.models[0].busy is False
    bare = {k: v for k, v in VLLM.items() if k != "/metrics"}
    with fake_engine(bare) as eng:
        e = await probe("vllm", eng.url)
    assert e.status == "up" and e.settings is None and e.models[0].busy is None
    assert e.models[0].ctx == 131072


async def test_lmstudio_0_4_instances_context_parallel_and_on_disk() -> None:
    with fake_engine(LMSTUDIO_V1) as eng:
        e = await probe("lmstudio", eng.url)
    assert e.status == "up" and e.version == "0.4.1" and e.error is None
    (m,) = e.models
    assert (m.name, m.quant, m.ctx, m.parallel) == ("qwen/qwen3-4b", "Q4_K_M", 8192, 4)
    assert m.size_mb == pytest.approx(2381.6, abs=0.1)
    assert m.meta is not None
    assert (m.meta.arch, m.meta.bits_per_weight, m.meta.params, m.meta.ctx_train) == (
        "qwen3",
        4.8,
        4_000_000_000,
        40960,
    )
    disk = {d.name: d for d in e.available}
    assert set(disk) == {"google/gemma-3-12b", "text-embedding-nomic-embed-text-v1.5"}
    assert disk["google/gemma-3-12b"].params == 12_000_000_000
    assert disk["google/gemma-3-12b"].quant == "Q3_K_L"


async def test_mlx_resident_model_is_its_model_flag_and_its_memory_measured() -> None:
    name = "mlx-community/Qwen2.5-7B-Instruct-4bit"
    with engine_process("MLX", "--model", name) as (proc, url):
        e = await probe("mlx", url, probing=Probing(gpus=True))
        want = rss_mb(proc.pid)
    assert e.status == "up"
    (m,) = e.models
    assert m.name == name and m.pid == proc.pid
    assert m.size_mb == pytest.approx(want, rel=0.2) and m.sources == {"size_mb": "measured"}
    assert e.available == []
    with fake_engine(MLX) as eng:  # no --model known: its list is what is on disk
        e = await probe("mlx", eng.url, probing=Probing(gpus=True))
    assert e.models == [] and [d.name for d in e.available] == [name]


def test_listener_found_by_each_process_where_the_system_list_is_refused(monkeypatch) -> None:
    def refused(kind: str = "inet") -> list:
        raise psutil.AccessDenied()  # what macOS answers a user that is not root

    with fake_engine(LLAMACPP) as eng:
        port = httpx.URL(eng.url).port
        assert port is not None and procs.listening_pid(port) == os.getpid()
        monkeypatch.setattr(psutil, "net_connections", refused)
        assert procs.listening_pid(port) == os.getpid()
    assert procs.listening_pid(port) is None  # nobody listens any more


def test_the_process_seen_last_tick_is_reused_while_it_lives() -> None:
    with engine_process("LLAMACPP") as (proc, url):
        port = httpx.URL(url).port
        assert port is not None
        first = procs.facts(port)
        assert first.pid == proc.pid and first.started is not None
        seen = (first.pid, first.started)
    # gone: the same pair is not reused, and nobody else listens there
    assert procs.facts(port, seen).pid is None
    me = psutil.Process()
    assert procs.facts(port, (me.pid, me.create_time())).pid == me.pid  # alive: reused


def test_local_hosts() -> None:
    assert procs.is_local("127.0.0.1") and procs.is_local("localhost") and procs.is_local("[::1]")
    assert not procs.is_local("192.0.2.7")  # TEST-NET-1: never this machine


async def test_a_remote_engine_gets_no_pid_and_no_ram_claim() -> None:
    # the same fake through a name that is not this machine's: nothing measured, nothing claimed
    async with httpx.AsyncClient(trust_env=False, transport=_Rewrite()) as c:
        with fake_engine(LLAMACPP) as eng:
            _Rewrite.target = eng.url
            e = await probe_engine(c, "llamacpp", "llamacpp", "http://192.0.2.7:8080", 2.0)
    (m,) = e.models
    assert e.pids == [] and m.pid is None and m.vram_mb is None
    assert m.sources["size_mb"] == "reported"


class _Rewrite(httpx.AsyncHTTPTransport):
    """Sends every request to `target`: an engine that looks remote but answers here."""

    target = ""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        t = httpx.URL(self.target)
        request.url = request.url.copy_with(host=t.host, port=t.port)
        return await super().handle_async_request(request)


async def test_llamacpp_local_model_file_gives_the_gguf_header_as_metadata(tmp_path) -> None:
    write_gguf(tmp_path / "gemma-3-270m-q4_k_m.gguf", layers=6, window=512)
    with engine_process("LLAMACPP_HERE", cwd=tmp_path) as (_, url):
        e = await probe("llamacpp", url, probing=Probing(gpus=True))
    m = e.models[0].meta
    # what llama.cpp's /v1/models meta leaves out: layers, heads, KV heads, key/value lengths
    assert m is not None and m.source == "gguf"
    assert (m.n_layers, m.n_heads, m.n_kv_heads, m.key_length, m.sliding_window) == (
        6,
        8,
        2,
        64,
        512,
    )


def test_model_files_the_probe_refuses_to_read(tmp_path) -> None:
    p = Probing()
    good = write_gguf(tmp_path / "m.gguf")
    os.symlink(good, tmp_path / "link.gguf")  # the Hugging Face cache links its blobs
    os.mkfifo(tmp_path / "fifo.gguf")  # reading it would block the worker thread forever
    (tmp_path / "dir.gguf").mkdir()
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\xff" * 64)
    (tmp_path / "passwd").write_text("root:x:0:0")
    read = {n: _gguf(str(tmp_path / n), None, p) for n in os.listdir(tmp_path)}
    assert read["link.gguf"] is not None and read["link.gguf"].n_layers == 4
    assert all(read[n] is None for n in ("fifo.gguf", "dir.gguf", "junk.gguf", "passwd"))
    assert _gguf("m.gguf", None, p) is None  # relative, and the engine's folder unknown
    assert _gguf("m.gguf", str(tmp_path), p) is not None
    assert _gguf("bad\x00name.gguf", str(tmp_path), p) is None


# --- hostile values in every new input: a named problem, the engine up, never an exception ----

NAN = float("nan")


def _ps(**over: object) -> dict:
    return {**OLLAMA_FULL, "/api/ps": js({"models": [{"name": "qwen2.5-coder:7b", **over}]})}


def _llama(props: dict | None = None, slots: object = None, meta: dict | None = None) -> dict:
    routes = {**LLAMACPP, "/props": js({**LLAMA_PROPS, **(props or {})})}
    if slots is not None:
        routes["/slots"] = js(slots)
    if meta is not None:
        entry = {"id": "m.gguf", "owned_by": "llamacpp", "meta": meta}
        routes["/v1/models"] = js({"data": [entry]})
    return routes


def _metrics(text: str) -> dict:
    return {**VLLM, "/metrics": (200, text.encode(), {})}


def _lms(*models: object) -> dict:
    return {**LMSTUDIO, "/api/v1/models": js({"models": list(models)})}


# (kind, routes, the problems named): at most three each, the lines `Engine.error` shows
HOSTILE = [
    (
        "ollama",
        _ps(context_length=1e308, expires_at="not a date", size=-1),
        [
            "model qwen2.5-coder:7b: ctx 1e+308 dropped",
            "expires_at 'not a date' dropped",
            "size_mb -9.5367431640625e-07 dropped",
        ],
    ),
    ("ollama", _ps(context_length=-1, expires_at="x" * 10_000), ["ctx -1", "expires_at 'xxxx"]),
    (
        "ollama",
        {
            **OLLAMA_FULL,
            "/api/show": js(
                {
                    "model_info": {
                        "general.architecture": "qwen2",
                        "general.parameter_count": 10**30,
                        "qwen2.block_count": NAN,
                        "qwen2.attention.head_count": -5,
                    }
                }
            ),
        },
        [
            "model qwen2.5-coder:7b: ollama-show: n_layers nan dropped",
            "ollama-show: n_heads -5 dropped",
            "ollama-show: params a 100-bit number dropped",
        ],
    ),
    (
        "ollama",
        {
            **OLLAMA_FULL,
            "/api/show": js(
                {
                    "model_info": {
                        "general.architecture": "qwen2",
                        "qwen2.attention.head_count_kv": ["a", None, 10**30],
                        "qwen2.context_length": 1e308,
                        "qwen2.embedding_length": "wide",
                    }
                }
            ),
        },
        [
            "ollama-show: ctx_train 1e+308 dropped",
            "ollama-show: embedding_length 'wide' dropped",
            "ollama-show: kv_heads_per_layer ['a', None,",
        ],
    ),
    (
        "ollama",
        {**OLLAMA_FULL, "/api/show": js("just a string")},
        ["model qwen2.5-coder:7b: ollama-show: not an object"],
    ),
    (
        "ollama",
        {
            **OLLAMA,
            "/api/tags": js(
                {
                    "models": [
                        {"name": "a:1b", "size": -1, "details": {"parameter_size": "9999999T"}},
                        {"name": "b" * 10_000, "size": 1},
                        "not a model",
                    ]
                }
            ),
        },
        ["model a:1b: size_mb -9.5", "params a 64-bit number dropped", "a model on disk: name"],
    ),
    (
        "llamacpp",
        _llama({"total_slots": -3}, [{"n_ctx": 1e308, "is_processing": "yes"}]),
        ["model gemma-3-270m-q4_k_m.gguf: ctx 1e+308", "parallel -3", "settings: num_parallel -3"],
    ),
    (
        "llamacpp",
        _llama({"model_ftype": 5}),
        ["llamacpp-meta: quant 5 dropped", "model gemma-3-270m-q4_k_m.gguf: quant 5 dropped"],
    ),
    (
        "llamacpp",
        _llama(meta={"n_params": 10**30, "size": NAN, "n_ctx_train": -1}),
        [
            "model gemma-3-270m-q4_k_m.gguf: llamacpp-meta: ctx_train -1 dropped",
            "llamacpp-meta: file_mb nan dropped",
            "llamacpp-meta: params a 100-bit number dropped",
        ],
    ),
    ("llamacpp", _llama(meta={"size": -(2**40)}), ["size_mb -1048576.0 dropped"]),
    ("llamacpp", _llama({"model_path": "/m/" + "x" * 10_000}), ["a model: name 'xxxx"]),
    ("vllm", _metrics("\x00\xff{garbage"), ["/metrics: not Prometheus text"]),
    (
        "vllm",
        _metrics(
            "# TYPE vllm:cache_config_info gauge\n"
            'vllm:cache_config_info{gpu_memory_utilization="1e308",num_gpu_blocks="-5",'
            'block_size="nan"} 1.0\n'
        ),
        [
            "settings: gpu_memory_utilization 1e+308 dropped",
            "settings: num_gpu_blocks -5 dropped",
            "settings: block_size nan dropped",
        ],
    ),
    (
        "vllm",
        _metrics(
            "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc 1e300\n"
            "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running NaN\n"
            "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting +Inf\n"
        ),
        [
            "kv_usage_pct 1e+302 dropped",
            "requests_running nan dropped",
            "requests_waiting inf dropped",
        ],
    ),
    (
        "vllm",
        _metrics(
            "# TYPE vllm:cache_config_info gauge\n"
            f'vllm:cache_config_info{{cache_dtype="{"x" * 5000}"}} 1.0\n'
        ),
        ["model meta-llama/Llama-3.1-8B-Instruct: kv_type 'xxxx", "settings: kv_type 'xxxx"],
    ),
    (
        "lmstudio",
        _lms(
            {
                "key": "q",
                "loaded_instances": [
                    {"id": "q", "config": {"context_length": "huge", "parallel": 10**9}}
                ],
            }
        ),
        ["model q: ctx 'huge' dropped", "model q: parallel 1000000000 dropped"],
    ),
    (
        "lmstudio",
        _lms({"key": "q", "size_bytes": -1, "loaded_instances": [{"id": "q"}]}),
        ["model q: size_mb -9.5", "model q: lmstudio: file_mb -9.5"],
    ),
    (
        "lmstudio",
        _lms(
            {
                "key": "q",
                "quantization": {"name": "Q4_K_M", "bits_per_weight": 1e308},
                "params_string": "x" * 100,
            },
            {"key": "k" * 10_000, "loaded_instances": "yes"},
            ["not", "a", "model"],
        ),
        ["model q: lmstudio: bits_per_weight 1e+308 dropped", "a model on disk: name 'kkkk"],
    ),
]


@pytest.mark.parametrize("kind, routes, named", HOSTILE)
async def test_hostile_figures_are_named_problems_never_exceptions(kind, routes, named) -> None:
    with fake_engine(routes) as eng:
        e = await probe(kind, eng.url, probing=Probing(gpus=True))
    assert e.status == "up", e.error
    problems = _all_problems(e)
    for part in named:
        assert any(part in p for p in problems), f"{part!r} not in {problems}"


def _all_problems(e) -> list[str]:
    """Every problem line: `error` shows the first three, the rest are counted."""
    return (e.error or "").split("; ")


async def test_problem_lines_show_three_and_count_the_rest() -> None:
    routes = _llama({"total_slots": -3}, [{"n_ctx": -1}], {"n_params": -1, "size": -1})
    with fake_engine(routes) as eng:
        e = await probe("llamacpp", eng.url, probing=Probing(gpus=True))
    # parallel, ctx, size; the settings' num_parallel; the metadata's params and file size
    assert e.error is not None and e.error.endswith("(and 3 more)")


async def test_thousands_of_models_on_disk_are_cut_to_the_wire_limit_and_said() -> None:
    tags = {"models": [{"name": f"m{i}:1b", "size": 2**30} for i in range(1500)]}
    with fake_engine({**OLLAMA, "/api/tags": js(tags)}) as eng:
        e = await probe("ollama", eng.url)
    assert e.status == "up" and len(e.available) == 1024
    assert "1500 on disk, the first 1024 shown" in (e.error or "")


async def test_ollama_environment_number_past_any_setting_is_named() -> None:
    env = {"OLLAMA_NUM_PARALLEL": "9" * 40, "OLLAMA_CONTEXT_LENGTH": "²"}
    with engine_process("OLLAMA_FULL", env=env) as (_, url):
        e = await probe("ollama", url)
    assert e.status == "up" and (e.settings is None or e.settings.num_parallel is None)
    assert "OLLAMA_NUM_PARALLEL '9999" in (e.error or "")
    assert "OLLAMA_CONTEXT_LENGTH '²' is not a number" in (e.error or "")


def test_mutated_vllm_metrics_never_raise() -> None:
    """Character-level mutations of a real /metrics page (Hypothesis, bounded, derandomised):
    the parser's failures are a problem line, never an exception out of the probe."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    base = VLLM_METRICS
    edits = st.lists(
        st.tuples(st.integers(0, len(base)), st.integers(0, 8), st.text(max_size=6)),
        min_size=1,
        max_size=4,
    )

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(edits=edits)
    def check(edits: list[tuple[int, int, str]]) -> None:
        text = base
        for at, cut, ins in edits:
            text = text[:at] + ins + text[at + cut :]
        problems: list[str] = []
        out = vllm_metrics(text, problems)
        assert isinstance(out, dict) and all(isinstance(p, str) for p in problems)

    check()


async def test_an_engine_named_apart_from_its_kind_says_its_kind() -> None:
    """`[engines.llamaone] kind = "llamacpp"`: the wire carries both, up or down, so the fit
    rules can key on the kind."""
    async with httpx.AsyncClient(trust_env=False) as c:
        with fake_engine(LLAMACPP) as eng:
            up = await probe_engine(c, "llamaone", "llamacpp", eng.url, 2.0)
        down = await probe_engine(c, "llamaone", "llamacpp", eng.url, 2.0)
    assert (up.name, up.kind, up.status) == ("llamaone", "llamacpp", "up")
    assert (down.name, down.kind, down.status) == ("llamaone", "llamacpp", "down")


@pytest.mark.parametrize(
    ("value", "on"),
    [("1", True), ("true", True), ("yes", True), ("0", False), ("False", False), ("'f'", False)],
)
def test_ollama_flash_attention_reads_as_ollama_does(value: str, on: bool) -> None:
    # Go's ParseBool spellings; a value it cannot parse is on, as in Ollama's envconfig.Bool
    assert _ollama_env({"OLLAMA_FLASH_ATTENTION": value}, []) == {"flash_attention": on}
    assert _ollama_env({"OLLAMA_FLASH_ATTENTION": " "}, []) == {}  # unset: Ollama's default


async def test_lmstudio_model_gets_its_local_gguf_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LM Studio names no file: its GGUF is the one file in its models folder of the size it
    reports, resident or on disk; a symlink there (it could point anywhere) is not followed."""
    monkeypatch.setenv("HOME", str(tmp_path))
    repo = tmp_path / ".lmstudio/models/lmstudio-community/Qwen3-4B-GGUF"
    repo.mkdir(parents=True)
    loaded = write_gguf(repo / "Qwen3-4B-Q4_K_M.gguf", layers=36)
    other = tmp_path / ".cache/lm-studio/models/google/gemma-3-12b-GGUF"
    other.mkdir(parents=True)
    disk = write_gguf(other / "gemma-3-12b-Q3_K_L.gguf", layers=48, tensors=5)
    away = tmp_path / "elsewhere.gguf"
    write_gguf(away, layers=7, tensors=9)
    (repo / "link.gguf").symlink_to(away)
    models = json.loads(json.dumps(LMSTUDIO_V1_MODELS))
    models["models"][0]["size_bytes"] = loaded.stat().st_size
    models["models"][1]["size_bytes"] = disk.stat().st_size
    models["models"].append({**models["models"][1], "key": "x/linked"})
    models["models"][2]["size_bytes"] = away.stat().st_size
    with fake_engine({**LMSTUDIO_V1, "/api/v1/models": js(models)}) as eng:
        e = await probe("lmstudio", eng.url)
    (m,) = e.models
    assert m.meta is not None and (m.meta.source, m.meta.n_layers, m.meta.n_kv_heads) == (
        "gguf",
        36,
        2,
    )
    by = {d.name: d for d in e.available}
    assert by["google/gemma-3-12b"].meta is not None
    assert by["google/gemma-3-12b"].meta.n_layers == 48
    linked = by["x/linked"].meta
    assert linked is None or linked.n_layers != 7  # the API's own metadata, never the link's


async def test_mlx_model_folder_gives_its_config_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mlx_lm's --model: a local folder (relative to its working directory) or a repo id in
    the Hugging Face cache; its config.json gives the layers and heads, a fifo gives none."""
    local = tmp_path / "work/qwen-4bit"
    local.mkdir(parents=True)
    (local / "config.json").write_text(json.dumps(LLAMA_31_8B))
    safetensors(local / "model.safetensors", {"a": [64, 64]})
    with engine_process("MLX", "--model", "qwen-4bit", cwd=tmp_path / "work") as (_, url):
        e = await probe("mlx", url)
    (m,) = e.models
    assert m.meta is not None and (m.meta.source, m.meta.n_layers, m.meta.n_kv_heads) == (
        "hf-config",
        32,
        8,
    )
    hub = tmp_path / "hub"
    snap = hub / "models--mlx-community--Qwen2.5-7B-Instruct-4bit/snapshots/abc123"
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs/main").write_text("abc123")
    os.mkfifo(snap / "config.json")  # reading it would hang the probe's thread
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    name = "mlx-community/Qwen2.5-7B-Instruct-4bit"
    with engine_process("MLX", "--model", name) as (_, url):
        fifo = await probe("mlx", url)
    assert fifo.models[0].meta is None
    (snap / "config.json").unlink()
    (snap / "config.json").write_text(json.dumps({**LLAMA_31_8B, "num_hidden_layers": 28}))
    with engine_process("MLX", "--model", name) as (_, url):
        cached = await probe("mlx", url)
    assert cached.models[0].meta is not None and cached.models[0].meta.n_layers == 28
