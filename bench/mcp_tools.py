"""MCP server benchmark: `fleet mcp` on N simulated nodes, each tool's answer time.

    .venv/bin/python bench/mcp_tools.py [--nodes 1000] [--calls 40]

One process serves N simulated agents (`fleet agent serve --simulate --nodes N`, pinned to
core 1); `fleet mcp --config` runs as the real stdio subprocess an MCP client starts (pinned
to core 0) and this script drives it with the SDK's stdio client and ClientSession. Once every
node is ONLINE (and a short warm-up), each tool is called `--calls` times, one after the
other, and the round trip (request written to the server's stdin -> answer parsed) is timed:
median, p99, max, and the answer's size; and the server process's CPU time per call (the
mean: CPU time comes in 10 ms ticks; it includes the aggregator's own work during the call,
and it is what the call cost whatever else the machine runs) and its CPU share between calls
(`between_cpu_pct`: the aggregator on 1000 nodes plus the copies kept current, over 5 s with
no call). The client's own re-validation of each answer against the output schema
(jsonschema: the client's cost, not the server's) is switched off.
Target (issue 18): every tool under 50 ms at 1000 nodes once the fleet is online.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import pct, pinned, report, scratch_env, start_agents, stop  # noqa: E402

TARGET_MS = 50.0


def calls(first: str, model: str) -> list[tuple[str, str, dict]]:
    """(label, tool, arguments): each tool, and list_nodes with a filter too."""
    return [
        ("fleet_summary", "fleet_summary", {}),
        ("list_nodes", "list_nodes", {}),
        ("list_nodes filter", "list_nodes", {"filter": "state=ONLINE and power>300"}),
        ("get_node", "get_node", {"name": first}),
        ("find_model", "find_model", {"model": model}),
        ("check_fit", "check_fit", {"model": model, "ctx": 8192}),
        ("rank_placement", "rank_placement", {"model": model, "ctx": 8192}),
        ("recent_events", "recent_events", {"limit": 50}),
    ]


async def drive(cfg: Path, nodes: int, n_calls: int, warmup: float) -> list[dict]:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    async def no_validation(self, name, result) -> None:  # type: ignore[no-untyped-def]
        return None

    ClientSession.validate_tool_result = no_validation  # type: ignore[method-assign]
    argv = pinned([sys.executable, "-m", "fleettui", "mcp", "--config", str(cfg)], 0)
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
    rows: list[dict] = []
    with open(os.devnull, "w") as devnull:
        async with (
            stdio_client(params, errlog=devnull) as (r, w),
            ClientSession(r, w) as s,
        ):
            await s.initialize()
            [server] = [
                p
                for p in psutil.Process().children(recursive=True)
                if "mcp" in p.cmdline() and "fleettui" in p.cmdline()
            ]

            def cpu_ms() -> float:
                t = server.cpu_times()
                return (t.user + t.system) * 1000

            t0 = time.monotonic()
            online_s = None
            while time.monotonic() - t0 < 120:
                got = await s.call_tool("fleet_summary", {})
                if got.structured_content["states"]["ONLINE"] == nodes:
                    online_s = round(time.monotonic() - t0, 2)
                    break
                await anyio.sleep(0.2)
            await anyio.sleep(warmup)
            c0, t0 = cpu_ms(), time.monotonic()
            await anyio.sleep(5)
            between_pct = round((cpu_ms() - c0) / (time.monotonic() - t0) / 10, 1)
            detail = await s.call_tool("list_nodes", {"filter": "state=ONLINE"})
            first = detail.structured_content["nodes"][0]
            model = next(m for e in first["engines"] for m in e["models"])
            for label, tool, args in calls(first["name"], model):
                times: list[float] = []
                cpu: list[float] = []
                size = 0
                for _ in range(n_calls):
                    c, t = cpu_ms(), time.perf_counter()
                    res = await s.call_tool(tool, args)
                    times.append((time.perf_counter() - t) * 1000)
                    cpu.append(cpu_ms() - c)
                    assert not res.is_error, res.content
                    size = len(res.content[0].text)
                rows.append(
                    {
                        "mode": "stdio",
                        "nodes": nodes,
                        "tool": label,
                        "calls": n_calls,
                        "p50_ms": round(pct(times, 50), 1),
                        "p99_ms": round(pct(times, 99), 1),
                        "max_ms": round(max(times), 1),
                        "cpu_ms_mean": round(sum(cpu) / len(cpu), 1),
                        "answer_kb": round(size / 1024, 1),
                        "online_s": online_s,
                        "between_cpu_pct": between_pct,
                    }
                )
    return rows


class FixedFleet:
    """The aggregator as the server reads it, without the aggregator: N simulated nodes'
    snapshots (JSON and facts made once), each getting a new version every `tick_s`, spread
    over the tick as independent nodes' are. What a call costs the server itself."""

    def __init__(self, n: int, tick_s: float = 2.0) -> None:
        from fleettui.agent.collect.energy import EnergyLedger, EnergyMeter
        from fleettui.agent.simulate import SimulatedNode
        from fleettui.aggregator.state import SnapshotFacts
        from fleettui.wire import NodeSnapshot

        self.names = [f"sim-{i:04d}" for i in range(n)]
        self._json, self._facts = [], []
        for name in self.names:
            text = SimulatedNode(name).snapshot(EnergyLedger(None, 0.3, "EUR"), EnergyMeter())
            raw = text.model_dump_json()
            self._json.append(raw)
            self._facts.append(SnapshotFacts.of(NodeSnapshot.model_validate_json(raw)))
        self.t0, self.tick_s = time.monotonic(), tick_s

    def _version(self, i: int) -> int:
        return int((time.monotonic() - self.t0) / self.tick_s + i / len(self.names))

    @property
    def generation(self) -> int:
        return int((time.monotonic() - self.t0) / self.tick_s * len(self.names))

    def changed(self, known):  # type: ignore[no-untyped-def]
        from fleettui.aggregator.state import NodeState, NodeView

        out = []
        for i, name in enumerate(self.names):
            v = self._version(i)
            if known.get(name) != v:
                out.append(
                    NodeView(
                        name=name,
                        url="http://127.0.0.1:1",
                        state=NodeState.ONLINE,
                        snapshot_json=self._json[i],
                        facts=self._facts[i],
                        version=v,
                        last_seen=time.time(),
                    )
                )
        return out

    async def events(self, kinds=None):  # type: ignore[no-untyped-def]
        await anyio.sleep_forever()
        yield


async def drive_server(nodes: int, n_calls: int) -> list[dict]:
    """The server in this process (the SDK's in-memory client), over FixedFleet with its
    background refresh running: each call's wall and CPU time (time.process_time)."""
    from mcp import Client, ClientSession

    from fleettui.views.mcp.server import build_server
    from fleettui.views.mcp.state import FleetState

    async def no_validation(self, name, result) -> None:  # type: ignore[no-untyped-def]
        return None

    ClientSession.validate_tool_result = no_validation  # type: ignore[method-assign]
    fleet = FixedFleet(nodes)
    state = FleetState(fleet, stale_after_s=10)
    rows: list[dict] = []
    async with anyio.create_task_group() as tg, Client(build_server(state)) as client:
        tg.start_soon(state.keep_current)
        state.touched()
        await client.call_tool("fleet_summary", {})
        await anyio.sleep(3)  # every snapshot parsed once, as a running server has them
        first = state.views()[0]
        model = first.snapshot.engines[0].models[0].name
        for label, tool, args in calls(first.name, model):
            times: list[float] = []
            cpu: list[float] = []
            for _ in range(n_calls):
                c, t = time.process_time(), time.perf_counter()
                res = await client.call_tool(tool, args)
                times.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
                assert not res.is_error, res.content
                await anyio.sleep(0.1)  # an agent's pace, and the refresh's turn
            rows.append(
                {
                    "mode": "server",
                    "nodes": nodes,
                    "tool": label,
                    "calls": n_calls,
                    "p50_ms": round(pct(times, 50), 1),
                    "p99_ms": round(pct(times, 99), 1),
                    "max_ms": round(max(times), 1),
                    "cpu_ms_mean": round(sum(cpu) / len(cpu), 1),
                    "answer_kb": round(len(res.content[0].text) / 1024, 1),
                }
            )
        tg.cancel_scope.cancel()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument(
        "--mode",
        choices=("both", "server", "stdio"),
        default="both",
        help="server: the server alone in this process over fixed snapshots; stdio: the "
        "real subprocess on simulated agents",
    )
    a = ap.parse_args()
    rows = anyio.run(drive_server, a.nodes, a.calls) if a.mode != "stdio" else []
    if a.mode == "server":
        report("mcp", rows, {"each tool": f"p99 < {TARGET_MS:g} ms at 1000 nodes"})
        return
    os.environ.update(scratch_env())
    proc, urls = start_agents(["--simulate", "--nodes", str(a.nodes)], a.nodes, core=1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "projects.toml"
            cfg.write_text(
                "[defaults]\npoll_interval_s = 2\n"
                + "".join(f'[[node]]\nname = "{n}"\nurl = "{u}"\n' for n, u in urls.items())
            )
            rows += anyio.run(drive, cfg, a.nodes, a.calls, a.warmup)
    finally:
        stop(proc)
    report("mcp", rows, {"each tool": f"p99 < {TARGET_MS:g} ms at 1000 nodes, fleet online"})


if __name__ == "__main__":
    main()
