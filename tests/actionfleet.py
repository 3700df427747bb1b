"""A small real fleet for action tests: simulated agents with a recording restart command."""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from fleettui.agent.tokens import create_token, tokens_path
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.dispatch import Envelope, ProgressCallback
from fleettui.config import FleetConfig, NodeConfig
from fleettui.wire import ActionRequest

RECORDER = """\
import json, sys
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps(sys.argv[2:]) + "\\n")
print("restarted", *sys.argv[2:])
"""


@dataclass
class ActionFleet:
    agent_config: Path
    calls_file: Path
    secret: str
    urls: dict[str, str]
    dead_url: str

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(x) for x in self.calls_file.read_text().splitlines()]

    def fleet_config(
        self, *, with_dead: bool = True, tokenless: tuple[str, ...] = ()
    ) -> FleetConfig:
        nodes = [
            NodeConfig(name=n, url=u, token=None if n in tokenless else self.secret)
            for n, u in self.urls.items()
        ]
        if with_dead:
            nodes.append(NodeConfig(name="dead", url=self.dead_url, token=self.secret))
        return FleetConfig(path=None, nodes=nodes)


_HELD: list[socket.socket] = []


def dead_port_url() -> str:
    """A loopback port that refuses connections: bound, never listening, and held for the
    session, so no agent of a test running beside this one can take it meanwhile."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return f"http://127.0.0.1:{s.getsockname()[1]}"


def write_action_agent_config(tmp: Path) -> tuple[Path, Path, str]:
    """agent.toml whose ollama restart runs a harmless script that records its call."""
    script = tmp / "recorder.py"
    script.write_text(RECORDER)
    calls = tmp / "calls.jsonl"
    cfg = tmp / "agentcfg" / "agent.toml"
    cfg.parent.mkdir(parents=True)
    argv = json.dumps([sys.executable, str(script), str(calls), "{engine}"])
    cfg.write_text(
        "interval_s = 0.3\nrate_limit_per_min = 1000\n"
        f"[engines.ollama]\ncommands.restart = {argv}\n"
    )
    _, secret = create_token(tokens_path(cfg), "tests")
    return cfg, calls, secret


async def send_action(
    nodes: list[NodeConfig],
    action: str,
    engine: str | None = None,
    model: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Envelope:
    """One action through FleetAggregator.act over just `nodes`, as `fleet bulk` sends it."""
    agg = FleetAggregator(FleetConfig(nodes=list(nodes)), verify_chain=False)
    request = ActionRequest(action=action, engine=engine, model=model)
    return await agg.act([n.name for n in nodes], request, on_progress)
