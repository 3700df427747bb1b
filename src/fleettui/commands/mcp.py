"""`fleet mcp`: the fleet as a read-only MCP server on stdio, for AI agents (docs/mcp.md).

It watches the configured fleet with its own FleetAggregator, like the dashboard, and answers
from that live state; it never acts on a node. The MCP SDK is an optional extra
(`fleettui[mcp]`): without it the command says how to install it.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from fleettui.commands.io import err, load_fleet

if TYPE_CHECKING:
    from fleettui.config import FleetConfig
    from fleettui.views.mcp.state import FleetState

INSTALL_HINT = (
    "fleet mcp needs the MCP SDK (mcp 2.x): pip install 'fleettui[mcp]' "
    "(or pip install 'mcp>=2,<3' beside fleettui)"
)
# Full garbage collections. The parsed copies (about 150 k tracked objects at 1000 nodes,
# renewed every poll) make CPython's rule (a full pass once a quarter of the heap is new) fire
# about once a second, 50-150 ms each, and they land on calls: the p99s of performance.md.
# They hold no cycles (a pass collects nothing), so the automatic full pass is made rare and
# one runs between calls instead.
GEN2_EVERY = 1000  # young passes between automatic full ones (CPython's default: 10)
COLLECT_EVERY_S = 30.0  # a full pass this often, once no call came for QUIET_S
QUIET_S = 1.0


def secrets_of(cfg: FleetConfig) -> dict[str, list[str]]:
    """Per node, what no answer may show: its token, the token file's path and the path of
    the TLS client key it would present."""
    out: dict[str, list[str]] = {}
    for n in cfg.nodes:
        found = [n.resolve_token() or ""]
        key = n.client_key or cfg.defaults.client_key
        for path in (n.token_file, Path(key) if key else None):
            if path is not None:
                found += [str(path), str(path.expanduser())]
                try:
                    found.append(str(path.expanduser().resolve()))
                except OSError:
                    pass
        out[n.name] = [s for s in found if s]
    return out


async def serve_stdio(cfg: FleetConfig) -> None:
    """Watch the fleet and serve MCP on stdin/stdout until the client hangs up (or a signal)."""
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.calibration import CalibrationStore
    from fleettui.aggregator.pins import PinStore
    from fleettui.views.mcp.server import build_server
    from fleettui.views.mcp.state import FleetState, Redactor

    redactor = Redactor(await anyio.to_thread.run_sync(secrets_of, cfg))
    stale = cfg.defaults.stale_after_s  # the aggregator's own rule for a stale snapshot
    store = CalibrationStore.default()  # what earlier loads measured, as `fleet fit` reads it
    async with (
        FleetAggregator(cfg, pins=PinStore.default(), calibration=store) as agg,
        anyio.create_task_group() as tg,
    ):
        state = FleetState(agg, stale_after_s=stale, redactor=redactor, calibration=store)
        tg.start_soon(state.record)
        tg.start_soon(state.keep_current)
        tg.start_soon(collect_between_calls, state)
        tg.start_soon(_stop_on_signals, tg.cancel_scope)
        await build_server(state).run_stdio_async()
        tg.cancel_scope.cancel()


async def collect_between_calls(state: FleetState, every_s: float = COLLECT_EVERY_S) -> None:
    """Make full collections rare, and run one every `every_s` once the agent has paused."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, GEN2_EVERY)
    while True:
        await anyio.sleep(every_s)
        while (quiet := time.monotonic() - state.last_call) < QUIET_S:
            await anyio.sleep(QUIET_S - quiet)
        gc.collect()


async def _stop_on_signals(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def cmd_mcp(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("mcp") is None:
        err(INSTALL_HINT)
        return 2
    cfg = load_fleet(args)
    if cfg is None:
        return 2
    anyio.run(serve_stdio, cfg)
    return 0
