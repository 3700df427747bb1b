"""Calibration against the real llama.cpp: llama-server in router mode (`--models-dir`, the
real binary from scripts/llama-server) with the real Gemma 3 270M GGUF, watched by the real
agent; three loads through the aggregator (`POST /models/load` via the agent's load action,
`/models/unload` between), each observed from the snapshots after it (the child server's
resident set, the agent's measure on a CPU node), and the estimate then moves to that."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from conftest import start_agent
from fakes import free_port
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.calibration import CalibrationStore, explain
from fleettui.capacity.files import meta_from_gguf
from fleettui.capacity.fit import FitRequest
from fleettui.config import FleetConfig, NodeConfig
from fleettui.wire import ActionRequest
from test_llama_real import _wait_ready, real_parts  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
MODEL = "gemma-3-270m-q4_k_m"  # the router names a model by its file's stem
TOLERANCE = 0.01  # of the observed size: the ratio is applied to the estimate, rounded


@pytest.fixture
def router(real_parts, tmp_path: Path) -> Iterator[tuple[str, int]]:  # (url, pid)  # noqa: F811
    server, model = real_parts
    models = tmp_path / "models"
    models.mkdir()
    (models / model.name).symlink_to(model)
    log = tmp_path / "router.log"
    url = f"http://127.0.0.1:{free_port()}"
    argv = [str(server), "--models-dir", str(models), "--host", "127.0.0.1"]
    argv += ["--port", url.rsplit(":", 1)[1], "-c", "8192", "-np", "1", "-t", "1", "--no-webui"]
    argv += ["--load-mode", "none"]  # weights read in (no mmap): resident from the first snapshot
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(url, proc, log)
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, 15)  # the router and the child servers it started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


async def test_three_real_loads_move_the_estimate_to_the_observed_value(
    router: tuple[str, int],
    real_parts: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    from fleettui.agent.tokens import create_token, tokens_path

    url, _ = router
    env = {f"XDG_{d}_HOME": str(tmp_path / d.lower()) for d in ("CONFIG", "STATE", "DATA")}
    cfg_file = tmp_path / "agent.toml"
    cfg_file.write_text(f'interval_s = 0.5\n[engines.llamacpp]\nurl = "{url}"\ntimeout_s = 30\n')
    _, secret = create_token(tokens_path(cfg_file), "tests")  # beside --config
    agent = start_agent("--config", str(cfg_file), tmp=tmp_path, env=env)
    try:
        cfg = FleetConfig(nodes=[NodeConfig(name="cpu1", url=agent.url, token=secret)])
        store = CalibrationStore(tmp_path / "calibration.json")
        agg = FleetAggregator(cfg, verify_chain=False, calibration=store)
        # an unloaded router model comes without metadata: the file's header, as --gguf gives it
        gguf = real_parts[1]
        watch = agg.set_fit(FitRequest(MODEL), meta_from_gguf(gguf), f"--gguf {gguf}")
        assert watch is not None
        load = ActionRequest(action="load", engine="llamacpp", model=MODEL)
        unload = ActionRequest(action="unload", engine="llamacpp", model=MODEL)
        first = None
        for n in (1, 2, 3):
            with anyio.fail_after(30):  # the router lists it unloaded, with its metadata
                while True:
                    view = (await agg.poll_once(10))[0]
                    if view.fit is not None and view.fit.verdict in ("fits", "evict"):
                        if view.fit.reasons != ("already loaded",):
                            break
                    await anyio.sleep(0.2)
            first = first or view.fit
            env_ = await agg.act(["cpu1"], load, None)
            assert env_.succeeded == ["cpu1"], env_.failed
            assert await agg.settle_loads(15) == []
            assert len(store.history(watch.calibration_key("llamacpp"))) == n
            env_ = await agg.act(["cpu1"], unload, None)
            assert env_.succeeded == ["cpu1"], env_.failed
        view = None
        with anyio.fail_after(30):
            while view is None or view.fit is None or view.fit.reasons == ("already loaded",):
                view = (await agg.poll_once(10))[0]
                await anyio.sleep(0.2)
    finally:
        agent.stop()
    key = watch.calibration_key("llamacpp")
    history = store.history(key)
    print("\n".join(explain(store, [key])))
    assert first is not None and first.need_bytes is not None
    assert [o.estimated_bytes for o in history] == [first.need_bytes] * 3
    fit = view.fit
    assert fit.estimate is not None and fit.estimate.base_bytes == first.need_bytes
    observed = sorted(o.observed_bytes for o in history)[1]  # the median observation
    # the estimate took the model's training context (32,768: the router does not report the
    # -c its children run with); what the three loads measured corrects it
    assert observed < first.need_bytes
    assert abs(fit.need_bytes - observed) <= TOLERANCE * observed, (fit.need_bytes, observed)
    assert fit.reasons[-1].endswith("by 3 observed loads"), fit.reasons
    assert fit.estimate.notes[-1].startswith("calibrated: x0.")
