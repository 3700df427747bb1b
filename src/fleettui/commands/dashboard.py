"""The dashboard launcher (`fleet`, `fleet demo`): pick the view (Textual, Rich live, Rich
once) and run it.

Textual is imported only on the Textual path, so `fleet --rich`, cron jobs and pipes never
load it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from fleettui.commands.io import err, print_json
from fleettui.config import FleetConfig, FleetConfigError, load_fleet_config

ONCE_TIMEOUT_S = 10.0


def first_run_text(path: Path | None) -> str:
    where = f" ({path})" if path else ""
    return (
        f"fleet: no nodes configured yet{where}.\n"
        "  fleet add NAME --url URL    watch a machine running `fleet agent serve`\n"
        "  fleet demo                  try the dashboard on a simulated fleet"
    )


def can_run_tui() -> bool:
    """Textual needs a terminal on stdin and on the stream it draws to (the real stderr)."""
    streams = (sys.stdin, sys.stdout, sys.__stderr__)
    if any(s is None or not s.isatty() for s in streams):
        return False
    return os.environ.get("TERM", "") not in ("", "dumb")


def _console():  # type: ignore[no-untyped-def]
    """The views' console: a terminal's width, or Rich's default into a pipe (the table fits)."""
    from rich.console import Console

    return Console(highlight=False)


def run_dashboard(
    cfg: FleetConfig,
    *,
    rich: bool = False,
    once: bool = False,
    read_only: bool = False,
    full_audit: bool = False,
    notify: bool = False,
) -> int:
    """Open the right view on `cfg`; returns the exit status (`full_audit`: for one table,
    `notify`: the dashboard's alerts also as desktop notifications)."""
    if once or not sys.stdout.isatty():
        return anyio.run(_rich_once, cfg, full_audit)
    try:
        if rich or not can_run_tui():
            return anyio.run(_rich_live, cfg)
        return anyio.run(_tui, cfg, read_only, notify)
    except KeyboardInterrupt:
        return 0


async def _until_signal(main: Callable[[], Awaitable[None]], stop: Callable[[], None]) -> int:
    """Run `main`; SIGTERM or SIGHUP (`kill`, a closed SSH session) calls `stop`, so the view
    ends the way `q` ends it and the terminal is given back as it was. So does SIGINT (Ctrl-C):
    left to asyncio it cancels the main task once, and under load that one cancellation could
    be lost in the aggregator's timeouts, the view staying up. Returns 0 (also for Ctrl-C), or
    128 + the signal's number."""
    got: list[int] = []

    async def watch() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP, signal.SIGINT) as signals:
            async for signum in signals:
                got.append(signum)
                stop()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await main()
        tg.cancel_scope.cancel()
    return 128 + got[0] if got and got[0] != signal.SIGINT else 0


async def _rich_once(cfg: FleetConfig, full_audit: bool) -> int:
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.pins import PinStore
    from fleettui.views.rich import print_once

    agg = FleetAggregator(cfg, pins=PinStore.default())
    timeout = max(ONCE_TIMEOUT_S, cfg.defaults.http_timeout_s + 1)
    views = await agg.poll_once(timeout, full_audit=full_audit)
    print_once(_console(), views, skipped=len(cfg.skipped))
    return 0


async def _json_once(cfg: FleetConfig, full_audit: bool) -> int:
    """`fleet --json`: what `--once` shows, as `fleet status --json`'s document."""
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.pins import PinStore
    from fleettui.commands.fleet import status_document

    agg = FleetAggregator(cfg, pins=PinStore.default())
    timeout = max(ONCE_TIMEOUT_S, cfg.defaults.http_timeout_s + 1)
    views = await agg.poll_once(timeout, full_audit=full_audit)
    print_json(status_document(cfg, views))
    return 0


async def _rich_live(cfg: FleetConfig) -> int:
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.pins import PinStore
    from fleettui.views.rich import run_live

    async with FleetAggregator(cfg, pins=PinStore.default()) as agg:
        scope = anyio.CancelScope()

        # q quits when the keys come from a terminal; from a pipe or /dev/null only Ctrl-C
        keys = (
            sys.stdin.fileno() if sys.stdin and sys.stdin.isatty() and os.name == "posix" else None
        )

        async def live() -> None:
            with scope:
                await run_live(agg, _console(), skipped=len(cfg.skipped), keys=keys)

        return await _until_signal(live, scope.cancel)


async def _tui(cfg: FleetConfig, read_only: bool, notify: bool) -> int:
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.calibration import CalibrationStore
    from fleettui.aggregator.pins import PinStore
    from fleettui.prefs import PrefsFile, default_prefs_path
    from fleettui.views.columns import DEFAULT_ORDER, FIXED
    from fleettui.views.tui.app import FleetApp
    from fleettui.views.tui.nocolor import sixteen_colors

    calibration = CalibrationStore.default()  # L records what each load holds; F corrects by it
    # the operator's columns and theme (c); read before the first frame, off the event loop
    prefs = await anyio.to_thread.run_sync(
        PrefsFile.read, default_prefs_path(), DEFAULT_ORDER, FIXED
    )
    async with FleetAggregator(cfg, pins=PinStore.default(), calibration=calibration) as agg:
        app = FleetApp(
            agg,
            read_only=read_only,
            prefs=prefs,
            notify_desktop=notify,
            ansi_color=sixteen_colors(os.environ) or None,
        )
        return await _until_signal(app.run_async, app.exit)


def _load(path: Path | None) -> FleetConfig | None:
    try:
        cfg = load_fleet_config(path)
    except FleetConfigError as exc:
        err(str(exc))
        return None
    if not cfg.exists and path is not None:
        err(f"--config {cfg.path}: no such file")
        return None
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return cfg


def cmd_dashboard(args: argparse.Namespace) -> int:
    cfg = _load(getattr(args, "config", None))
    if cfg is None:
        return 2
    if getattr(args, "dashboard_json", False):
        return anyio.run(_json_once, cfg, getattr(args, "full_audit", False))
    if not cfg.nodes:
        print(first_run_text(cfg.path))
        return 2 if cfg.warnings else 0
    return run_dashboard(
        cfg,
        rich=getattr(args, "rich", False),
        once=getattr(args, "once", False),
        read_only=getattr(args, "read_only", False),
        full_audit=getattr(args, "full_audit", False),
        notify=getattr(args, "notify", False),
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from fleettui.commands.demo import DemoError, DemoFleet, exit_on_signals

    try:
        with exit_on_signals(), DemoFleet(args.nodes) as demo:
            pids = " ".join(map(str, demo.pids))
            print(
                f"fleet demo: {demo.nodes} simulated nodes, agent pids {pids}, temp dir {demo.tmp}",
                file=sys.stderr,
            )
            cfg = _load(demo.config_path)
            if cfg is None:
                return 1
            # the demo's audit pins live and die with it (its agents reuse loopback ports)
            os.environ["XDG_STATE_HOME"] = str(demo.tmp / "operator-state")
            return run_dashboard(
                cfg,
                rich=getattr(args, "rich", False),
                read_only=getattr(args, "read_only", False),
                notify=getattr(args, "notify", False),
            )
    except DemoError as exc:
        print(f"fleet demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
