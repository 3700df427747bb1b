"""Engine probes against real loopback servers speaking each engine's documented JSON."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from fake_engines import LLAMACPP, LMSTUDIO, MLX, OLLAMA, VLLM, fake_engine, js
from fleettui.agent.engines import probe_engine

pytestmark = pytest.mark.anyio


async def probe(kind: str, url: str, timeout: float = 2.0):
    async with httpx.AsyncClient(trust_env=False) as c:
        return await probe_engine(c, kind, kind, url, timeout)


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


async def test_llamacpp_model_from_props_and_size_from_models() -> None:
    with fake_engine(LLAMACPP) as eng:
        e = await probe("llamacpp", eng.url)
    assert e.status == "up" and e.version == "b6100-1a2b3c4d"
    assert [m.name for m in e.models] == ["Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"]
    assert e.models[0].size_mb == pytest.approx(4685.3, abs=0.1)


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


async def test_lmstudio_only_loaded_models() -> None:
    with fake_engine(LMSTUDIO) as eng:
        e = await probe("lmstudio", eng.url)
    assert e.status == "up" and e.version == "0.3.24"
    assert [(m.name, m.quant) for m in e.models] == [("meta-llama-3.1-8b-instruct", "Q4_K_M")]


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
timeout_s = 1.0
[engines.broken]
kind = "ollama"
url = "{bad.url}"
""",
        )
        agent = agent_factory("--config", str(cfg))
        # several ticks pass while "stuck" hangs; every read stays fast
        worst = 0.0
        deadline = time.monotonic() + 3
        with httpx.Client(timeout=5) as c:
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                snap = c.get(f"{agent.url}/api/v1/snapshot").json()
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.1)
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
        assert worst < 0.5, f"snapshot took {worst:.2f}s while an engine hung"
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
