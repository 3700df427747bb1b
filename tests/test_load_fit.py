"""The agent's own fit check before a load: fits, fits after evicting an idle model, does not
fit. One real agent in process (its collection, its write side, its audit log) on a node with
one 16 GiB GPU (NVML stands in: no driver exists here) that holds 4 GiB, and a fake Ollama
whose loads and unloads change what it reports; the operator side is the real aggregator and
dashboard, or nothing at all (httpx straight at the agent, as curl would)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace

import anyio
import httpx
import pytest

from fake_engines import SHOW, FakeEngine, Loading
from fleettui.agent.config import AgentConfig
from fleettui.agent.node import NodeAgent
from fleettui.agent.server import bind_sockets, serve
from fleettui.agent.tokens import create_token, tokens_path
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.config import FleetConfig, NodeConfig
from fleettui.wire import ActionRequest, AuditPage
from test_collectors import FakeNvml

pytestmark = pytest.mark.anyio
GIB = 1 << 30


class OneGpu(FakeNvml):
    """One 16 GiB GPU with 4 GiB in use, whatever is loaded (the fake engine holds nothing)."""

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(total=16 * GIB, used=4 * GIB, free=12 * GIB)


def disk_model(name: str, size: int) -> dict:
    return {"name": name, "model": name, "size": size, "digest": name, "details": {}}


@dataclass
class Node:
    url: str
    secret: str
    ollama: FakeEngine
    state: Loading

    def resident(self) -> list[str]:
        return [m["name"] for m in self.state.resident]

    def loads(self) -> list[str]:
        return [p for p, _ in self.ollama.bodies if p == "/api/generate"]


@pytest.fixture
async def node(xdg_home, tmp_path) -> AsyncIterator[Node]:
    shows = {**SHOW}
    for name in ("big:13g", "huge:405b"):  # llama-shaped, sized by their files
        shows[name] = copy.deepcopy(SHOW["llama3.1:8b"])
    qwen = {**disk_model("qwen2.5-coder:7b", 5618579456), "size_vram": 5618579456}
    state = Loading(
        resident=[qwen],
        disk=[
            disk_model("qwen2.5-coder:7b", 5618579456),
            disk_model("llama3.1:8b", 4920753328),
            disk_model("big:13g", 13 * GIB),
            disk_model("huge:405b", 230 * 10**12),
        ],
        shows=shows,
    )
    ollama = FakeEngine(state.ollama()).start()
    config = AgentConfig.model_validate(
        {
            "interval_s": 0.5,
            "auto_detect": False,
            "data_dir": str(tmp_path / "data"),
            "state_dir": str(tmp_path / "state"),
            "engines": {"ollama": {"url": ollama.url}},
        }
    )
    _, secret = create_token(tokens_path(), "tests")
    agent = NodeAgent.real(config, nvml=OneGpu())
    sockets = bind_sockets("127.0.0.1", [0])
    url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    ready = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve([agent], sockets, on_ready=ready.set, handle_signals=False))
            with anyio.fail_after(20):
                await ready.wait()
            yield Node(url, secret, ollama, state)
            tg.cancel_scope.cancel()
    finally:
        ollama.stop()


async def post(node: Node, **body: object) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        return await c.post(
            f"{node.url}/api/v1/actions",
            json={"action": "load", "engine": "ollama", **body},
            headers={"Authorization": f"Bearer {node.secret}"},
        )


async def audit(node: Node) -> list:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
        r = await c.get(f"{node.url}/api/v1/audit", params={"limit": 1000})
    return AuditPage.model_validate(r.json()).entries


async def test_a_load_that_fits_is_loaded_and_audited_with_its_fit(node: Node) -> None:
    r = await post(node, model="llama3.1:8b", ctx=8192)
    assert r.status_code == 200 and r.json()["ok"], r.text
    assert "fit on" in r.json()["output_tail"] and ": fits (needs" in r.json()["output_tail"]
    assert node.resident() == ["qwen2.5-coder:7b", "llama3.1:8b"]
    started, done = (await audit(node))[-2:]
    assert (started.status, done.status) == ("started", "ok")
    assert started.args["fit"]["verdict"] == "fits" and started.args["force"] is False


async def test_a_load_that_does_not_fit_is_refused_even_without_the_operator(
    node: Node,
) -> None:
    """httpx straight at the agent, as curl would: no operator-side check in the way."""
    r = await post(node, model="huge:405b")
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["error"].startswith("huge:405b does not fit on ")
    assert "(send force to load anyway)" in body["error"]
    fit = body["detail"]
    assert fit["verdict"] == "no" and fit["need_bytes"] > 200 * 10**12
    assert fit["free_bytes"] == 12 * GIB and fit["estimate"]["terms"]  # the breakdown
    assert node.loads() == [] and node.resident() == ["qwen2.5-coder:7b"]
    last = (await audit(node))[-1]
    assert (last.status, last.http_status) == ("denied", 409)
    assert last.args["fit"]["verdict"] == "no" and last.args["model"] == "huge:405b"
    # forced: loaded, and the audit says it was forced past a "no"
    r = await post(node, model="huge:405b", force=True)
    assert r.status_code == 200 and r.json()["ok"], r.text
    assert "forced: loading although the check said no" in r.json()["output_tail"]
    started = (await audit(node))[-2]
    assert started.args["force"] is True and started.args["fit"]["verdict"] == "no"


async def test_a_load_that_fits_after_evicting_unloads_the_idle_model_first(node: Node) -> None:
    r = await post(node, model="big:13g")
    assert r.status_code == 200 and r.json()["ok"], r.text
    tail = r.json()["output_tail"]
    assert ": evict (needs" in tail and "unloaded qwen2.5-coder:7b" in tail
    assert node.resident() == ["big:13g"]
    sent = [b for p, b in node.ollama.bodies if p == "/api/generate"]
    assert [b'"keep_alive":0' in b for b in sent] == [True, False]  # evict, then load
    started = (await audit(node))[-2]
    assert started.args["fit"]["evict"] == ["qwen2.5-coder:7b"]


async def test_load_through_the_aggregator_on_the_chosen_node(node: Node) -> None:
    cfg = FleetConfig(nodes=[NodeConfig(name="gpu1", url=node.url, token=node.secret)])
    agg = FleetAggregator(cfg, verify_chain=False)
    env = await agg.act(
        ["gpu1"], ActionRequest(action="load", engine="ollama", model="llama3.1:8b"), None
    )
    assert env.succeeded == ["gpu1"], env.failed
    env = await agg.act(
        ["gpu1"], ActionRequest(action="load", engine="ollama", model="huge:405b"), None
    )
    assert env.failed["gpu1"].startswith("HTTP 409: huge:405b does not fit on ")
    assert node.resident() == ["qwen2.5-coder:7b", "llama3.1:8b"]


async def test_dashboard_l_shows_each_fit_and_loads_on_y(node: Node) -> None:
    from fleettui.views.tui.app import FleetApp
    from fleettui.views.tui.screens.confirm import ConfirmActionScreen
    from pilot_util import cell, screen_lines, until

    cfg = FleetConfig(nodes=[NodeConfig(name="gpu1", url=node.url, token=node.secret)])
    async with FleetAggregator(cfg, verify_chain=False) as agg:
        app = FleetApp(agg, min_refresh_s=0.05, tick_s=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: cell(app, "gpu1") == "ONLINE", what="online")
            await pilot.press("L")
            await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="modal")
            modal = app.screen
            assert modal.engine == "ollama" and modal.model == "big:13g"  # first on disk
            await pilot.pause(0.1)
            text = "\n".join(screen_lines(app))
            assert "gpu1  evict  needs 14," in text and "12,288 MiB free" in text
            assert "evicts qwen2.5-coder:7b" in text and "after unloading idle qwen" in text
            assert "evicts idle qwen2.5-coder:7b first" in text
            assert node.loads() == []  # nothing sent before y
            await pilot.press("y")
            await until(pilot, lambda: app.bulk.last is not None, what="dispatch done")
            assert app.bulk.last.succeeded == ["gpu1"], app.bulk.last.failed
            assert cell(app, "gpu1") in ("✓ ok", "ONLINE")
            assert node.resident() == ["big:13g"]


async def test_a_fit_check_that_breaks_is_a_refusal_and_frees_the_engine(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleettui.agent import load

    def broken(*args: object, **kw: object) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr(load, "fit_for", broken)
    r = await post(node, model="llama3.1:8b")
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "cannot check the fit: internal error (TypeError)"
    last = (await audit(node))[-1]
    assert (last.status, last.http_status) == ("denied", 409)
    monkeypatch.undo()
    r = await post(node, model="llama3.1:8b")  # not "already running": the engine was freed
    assert r.status_code == 200 and r.json()["ok"], r.text


async def test_dashboard_f_model_then_l_loads_it_and_the_fit_column_follows(node: Node) -> None:
    from fleettui.views.tui.app import FleetApp
    from fleettui.views.tui.screens.confirm import ConfirmActionScreen
    from fleettui.views.tui.screens.fit import FitBar
    from pilot_util import cell, until

    cfg = FleetConfig(nodes=[NodeConfig(name="gpu1", url=node.url, token=node.secret)])
    async with FleetAggregator(cfg, verify_chain=False) as agg:
        app = FleetApp(agg, min_refresh_s=0.05, tick_s=0.2)
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: cell(app, "gpu1") == "ONLINE", what="online")
            await pilot.press("F")
            await until(pilot, lambda: app.main.query_one(FitBar).is_open, what="fit bar")
            await pilot.press(*"llama3.1:8b", "enter")
            await until(pilot, lambda: "fits" in cell(app, "gpu1", "fit"), what="Fit column")
            await pilot.press("L")
            await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="modal")
            assert app.screen.model == "llama3.1:8b"  # the model F asked about
            assert app.screen.fits["gpu1"].verdict == "fits"
            assert node.loads() == []
            await pilot.press("y")
            await until(pilot, lambda: app.bulk.last is not None, what="dispatch done")
            assert app.bulk.last.succeeded == ["gpu1"], app.bulk.last.failed
            assert "llama3.1:8b" in node.resident()
            await until(  # the next snapshot holds it: the Fit column says so
                pilot,
                lambda: (
                    (v := agg.node("gpu1")) is not None
                    and v.fit is not None
                    and v.fit.reasons == ("already loaded",)
                ),
                what="fit from the next snapshot",
            )


async def test_dashboard_l_loads_with_the_f_questions_context(node: Node) -> None:
    """F asked with ctx=: the modal judges and the load asks for that context, not the
    engine's default (what the Fit column showed is what is loaded)."""
    import json as _json

    from fleettui.views.tui.app import FleetApp
    from fleettui.views.tui.screens.confirm import ConfirmActionScreen
    from fleettui.views.tui.screens.fit import FitBar
    from pilot_util import cell, until

    cfg = FleetConfig(nodes=[NodeConfig(name="gpu1", url=node.url, token=node.secret)])
    async with FleetAggregator(cfg, verify_chain=False) as agg:
        app = FleetApp(agg, min_refresh_s=0.05, tick_s=0.2)
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: cell(app, "gpu1") == "ONLINE", what="online")
            await pilot.press("F")
            await until(pilot, lambda: app.main.query_one(FitBar).is_open, what="fit bar")
            await pilot.press(*"llama3.1:8b ctx=8192", "enter")
            await until(pilot, lambda: "fits" in cell(app, "gpu1", "fit"), what="Fit column")
            await pilot.press("L")
            await until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="modal")
            assert app.screen.load_params == {"ctx": 8192}
            assert app.screen.fits["gpu1"].estimate is not None
            assert any(
                "8192" in t.formula.replace(",", "") for t in app.screen.fits["gpu1"].estimate.terms
            )
            await pilot.press("y")
            await until(pilot, lambda: app.bulk.last is not None, what="dispatch done")
            assert app.bulk.last.succeeded == ["gpu1"], app.bulk.last.failed
    sent = [_json.loads(b) for p, b in node.ollama.bodies if p == "/api/generate"]
    assert sent and sent[-1]["options"]["num_ctx"] == 8192
