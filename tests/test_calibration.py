"""Calibration: after each load the aggregator keeps the estimate beside what the next
snapshot shows resident, and from three observations of one key the estimate is corrected to
what was observed (and says so). The node is test_load_fit's: a real agent in process, one
16 GiB GPU (NVML stands in), a fake Ollama whose loads change what it reports; the store is
a real file in the test's own state dir."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.calibration import (
    KEEP,
    MAX_KEYS,
    CalibrationStore,
    Observation,
    correction,
    explain,
    key_for,
)
from fleettui.capacity.estimate import MIB, Calibration, Estimate, Term, calibrated
from fleettui.capacity.fit import FitRequest
from fleettui.config import FleetConfig, NodeConfig
from fleettui.wire import ActionRequest
from test_load_fit import Node, node  # noqa: F401  (the fixture)

pytestmark = pytest.mark.anyio
MODEL = "llama3.1:8b"
FILE_BYTES = 4920753328  # what the fake Ollama then reports resident (size_vram)
ROUNDING = 0.01 * MIB  # the wire's MiB keep two decimals


def obs(i: int, est: int = 100 * MIB, seen: int = 110 * MIB) -> Observation:
    return Observation(1_700_000_000.0 + i, "gpu1", est, seen)


def test_the_correction_is_the_median_ratio_from_three_observations() -> None:
    assert correction([obs(0), obs(1)]) is None  # two is an anecdote
    history = [obs(0, seen=110 * MIB), obs(1, seen=200 * MIB), obs(2, seen=105 * MIB)]
    cal = correction(history)
    assert cal == Calibration(1.1, 3)  # the odd one out does not move it
    est = Estimate((Term("weights", 100 * MIB, "f", "measured"),), 100 * MIB, "exact")
    fixed = calibrated(est, cal)
    assert fixed.total_bytes == 110 * MIB and fixed.base_bytes == 100 * MIB
    assert fixed.label == "exact" and fixed.terms[-1].source == "measured"
    assert fixed.notes[-1] == "calibrated: x1.1000 from 3 observed loads of this model here"
    odd = calibrated(est, Calibration(5.0, 3))  # measures something else: not applied
    assert odd.total_bytes == 100 * MIB and "not applied" in odd.notes[-1]


def test_the_store_is_bounded_and_a_bad_file_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    store = CalibrationStore(path)
    store.load()
    key = key_for("ollama", "m:latest", "Q4_K_M", 8192, None)
    assert key == key_for("ollama", "m", "Q4_K_M", 8192, None)  # one model, one key
    for i in range(KEEP + 5):
        store.record(key, obs(i))
    for i in range(MAX_KEYS + 3):
        store.record(key_for("ollama", f"other{i}", None, None, None), obs(i))
    store.save()
    doc = json.loads(path.read_text())
    assert len(doc["keys"]) == MAX_KEYS
    again = CalibrationStore(path)
    again.load()
    assert again.warning is None
    assert again.history(key) == []  # the least recently observed key went first
    store.record(key, obs(99))
    assert len(store.history(key)) == 1

    few = CalibrationStore(tmp_path / "few.json")
    for i in range(KEEP + 5):
        few.record(key, obs(i))
    few.save()
    again = CalibrationStore(tmp_path / "few.json")
    again.load()
    assert [o.ts for o in again.history(key)] == [obs(i).ts for i in range(5, KEEP + 5)]

    for bad in (b"{not json", b'{"format": 1, "keys": [{"engine": 3}]}', b"[]"):
        path.write_bytes(bad)
        broken = CalibrationStore(path)
        broken.load()  # never raises
        assert broken.warning is not None and broken.warning.startswith(
            f"calibration history {path}: "
        )
        assert broken.warning.endswith("; starting empty") and "\n" not in broken.warning
        assert broken.history(key) == []
        broken.record(key, obs(1))
        broken.save()  # what this process measured replaces the bad file
        fresh = CalibrationStore(path)
        fresh.load()
        assert fresh.warning is None and fresh.history(key) == [obs(1)]


async def load_and_observe(agg: FleetAggregator) -> None:
    """What `fleet load` does: poll, load, wait for the snapshot that shows it; then unload."""
    await agg.poll_once(10)
    req = ActionRequest(action="load", engine="ollama", model=MODEL, ctx=8192)
    env = await agg.act(["gpu1"], req, None)
    assert env.succeeded == ["gpu1"], env.failed
    assert await agg.settle_loads(10) == []
    env = await agg.act(["gpu1"], ActionRequest(action="unload", engine="ollama", model=MODEL))
    assert env.succeeded == ["gpu1"], env.failed
    with anyio.fail_after(10):  # until the agent's next collection no longer holds it
        while (await agg.poll_once(10))[0].fit.reasons == ("already loaded",):
            await anyio.sleep(0.1)


async def test_three_loads_move_the_estimate_to_the_observed_size(
    node: Node,  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = FleetConfig(nodes=[NodeConfig(name="gpu1", url=node.url, token=node.secret)])
    path = tmp_path / "calibration.json"
    store = CalibrationStore(path)
    agg = FleetAggregator(cfg, verify_chain=False, calibration=store)
    watch = agg.set_fit(FitRequest(MODEL, ctx=8192))
    assert watch is not None
    await agg.poll_once(10)
    before = agg.node("gpu1").fit
    assert before is not None and before.need_bytes is not None
    assert before.need_bytes > FILE_BYTES + 500 * MIB  # weights + KV + buffers + CUDA context
    key = watch.calibration_key("ollama")
    for n in (1, 2):
        await load_and_observe(agg)
        assert len(store.history(key)) == n
        await agg.poll_once(10)
        fit = agg.node("gpu1").fit
        assert fit.need_bytes == before.need_bytes  # fewer than three: no correction
        assert not any("calibrated" in r for r in fit.reasons)
    await load_and_observe(agg)
    history = store.history(key)
    assert all(abs(o.observed_bytes - FILE_BYTES) <= ROUNDING for o in history)
    assert [o.estimated_bytes for o in history] == [before.need_bytes] * 3
    await agg.poll_once(10)
    after = agg.node("gpu1").fit
    assert after is not None and after.need_bytes is not None
    assert abs(after.need_bytes - history[0].observed_bytes) <= 1  # moved to what was observed
    assert after.reasons[-1].startswith("estimate calibrated x0.")
    assert after.reasons[-1].endswith("by 3 observed loads")
    assert after.estimate is not None and after.estimate.base_bytes == before.need_bytes
    assert after.to_json()["estimate"]["terms"][-1]["name"] == "measured correction"

    on_disk = CalibrationStore(path)  # what the next fleet process reads
    on_disk.load()
    assert on_disk.history(key) == history
    lines = explain(on_disk, [key])
    assert lines[0] == (
        "calibration for ollama llama3.1:8b Q4_K_M ctx 8192 x default: 3 observed loads"
    )
    assert lines[-1].startswith("  correction applied: x0.")


async def test_the_dashboard_load_is_observed_from_the_next_snapshot(
    node: Node,  # noqa: F811
    tmp_path: Path,
) -> None:
    from fleettui.views.tui.app import FleetApp
    from fleettui.views.tui.screens.confirm import ConfirmActionScreen
    from pilot_util import cell, until

    cfg = FleetConfig(nodes=[NodeConfig(name="gpu1", url=node.url, token=node.secret)])
    store = CalibrationStore(tmp_path / "calibration.json")
    async with FleetAggregator(cfg, verify_chain=False, calibration=store) as agg:
        app = FleetApp(agg, min_refresh_s=0.05, tick_s=0.2)
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: cell(app, "gpu1") == "ONLINE", what="online")
            app.main.ask_fit(MODEL)  # the modal loads with the engine's own context
            await until(pilot, lambda: "fits" in cell(app, "gpu1", "fit"), what="Fit column")
            await pilot.press("L")
            await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="modal")
            await pilot.press("y")
            await until(pilot, lambda: app.bulk.last is not None, what="dispatch done")
            key = key_for("ollama", MODEL, "Q4_K_M", None, None)
            await until(pilot, lambda: len(store.history(key)) == 1, what="observed")
            await until(pilot, lambda: store.path.exists(), what="saved")
    saved = CalibrationStore(store.path)
    saved.load()
    [seen] = saved.history(key)
    assert abs(seen.observed_bytes - FILE_BYTES) <= ROUNDING
