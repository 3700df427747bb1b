"""TUI benchmark: the Textual dashboard fed 1000 nodes headless, 10 % of rows changing per tick.

    .venv/bin/python bench/tui.py [--nodes 1000] [--ticks 60] [--change 0.1] [--sort none,power]
                                  [--gpus N] [--expand] [--filter EXPR] [--profile] [--per-tick]

    .venv/bin/python bench/tui.py --nodes 100 --gpus 8 --expand   # ~900 lines (issue 19)

The source is a real FleetAggregator that is never started (no network): its workers are primed
with `generated_views` and each tick feeds new snapshots to 10 % of them through the workers'
own `apply_snapshot`, so the dashboard sees exactly what it sees in production (generation bump,
`snapshots()` copies, versions). The app runs its real update path (`follow_source` ->
`refresh_fleet` -> table reconciliation -> Textual layout and compositor), once in config
order and once sorted by power (every tick then moves rows too). Per tick it reports:

- tick_ms: from the new data being in the aggregator to the frame being rendered (wall);
- refresh_ms: the app's `refresh_fleet` call (copies + table apply + totals);
- copy_ms: of which the aggregator's copies (`changed()` for the nodes whose version moved,
  `snapshots()` when the app asks for every node);
- paint_ms: Textual's layout and compositor (the table renders the lines that changed) and the
  frame turned into terminal output (headless mode skips writing it; the bench renders it to
  a string so that cost counts too);
- cpu_ms: process CPU time over the same span.

After the ticks it presses keys (`KEYS`: the cursor down, page down, `g` on the cursor's node,
`s` for the next sort) and reports each key's wall time to its frame. `--gpus N` gives every
node N GPUs; `--expand` unfolds every node into its GPU sub-rows through the `g` key's code
path (`FleetTable.expand`), so 100 nodes x 8 GPUs are about 900 lines.

Once the first 1000 rows are drawn the bench collects and freezes the heap, as the running
aggregator does once every node has answered (docs/aggregator.md).

`--profile` prints where the time goes (cProfile over all ticks); `--per-tick` every tick's
figures (to see what an outlier is made of).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
import io
import pstats
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import pct, report

# Keys pressed after the ticks, each timed to its frame: the cursor down and a page down, `g`
# (folds or unfolds the cursor's node: the row count changes) and `s` (the next sort column).
KEYS = (("down", 40), ("pagedown", 10), ("g", 20), ("s", 10))


def primed_aggregator(count: int, gpus: int | None = None):  # type: ignore[no-untyped-def]
    """A FleetAggregator (not started) whose workers hold `generated_views(count, gpus=gpus)`."""
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.config import Defaults, FleetConfig, NodeConfig
    from fleettui.testing.sample import generated_views

    views = generated_views(count, gpus=gpus)
    cfg = FleetConfig(
        path=None,
        defaults=Defaults(),
        nodes=[NodeConfig(name=v.name, url=v.url, role=v.role, tags=v.tags) for v in views],
    )
    agg = FleetAggregator(cfg, verify_chain=False, freeze_gc=False)
    now = time.time()
    for w, v in zip(agg._workers, views, strict=True):
        if v.snapshot is not None:
            w.apply_snapshot(v.snapshot)  # the worker's own path: JSON text, facts, costs
        w.view = dataclasses.replace(v, snapshot=None, last_seen=now if v.snapshot else None)
        for i, watts in enumerate(v.power_history):
            w.power.add(now - 2 * (len(v.power_history) - i), watts)
    return agg


def tick(agg, rng: random.Random, share: float) -> int:  # type: ignore[no-untyped-def]
    """New snapshots for `share` of the nodes that have one, through the real apply path."""
    from fleettui.wire import NodeSnapshot

    live = [w for w in agg._workers if w.snap_json is not None]
    chosen = rng.sample(live, min(len(live), max(1, round(len(agg._workers) * share))))
    for w in chosen:
        snap = NodeSnapshot.model_validate_json(w.snap_json)
        snap.ts += 2.0
        snap.power.watts = round((snap.power.watts or 100.0) * rng.uniform(0.9, 1.1), 1)
        snap.cpu.percent = round(rng.uniform(0, 100), 1)
        for g in snap.gpus:
            g.util_pct = round(rng.uniform(0, 100), 1)
        w.apply_snapshot(snap)
    return len(chosen)


async def run(
    nodes: int,
    ticks: int,
    share: float,
    size: tuple[int, int],
    profile: bool,
    per_tick: bool = False,
    sort: str | None = None,
    gpus: int | None = None,
    expand: bool = False,
    filter_text: str = "",
) -> dict:
    from fleettui.views.tui.app import FleetApp

    agg = primed_aggregator(nodes, gpus)
    app = FleetApp(agg, min_refresh_s=0.25, tick_s=3600.0)
    timings: dict[str, list[float]] = {k: [] for k in ("refresh", "copy", "paint")}
    marks = {"displayed": 0.0}

    refresh_fleet, display = app.refresh_fleet, app._display

    def timed_refresh(force: bool = False) -> None:
        t = time.perf_counter()
        refresh_fleet(force)
        timings["refresh"].append(time.perf_counter() - t)

    def copying(fn):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timings["copy"].append(time.perf_counter() - t)

        return wrapper

    def timed_display(screen, renderable) -> None:  # type: ignore[no-untyped-def]
        if renderable is not None and hasattr(renderable, "render_segments"):
            renderable.render_segments(app.console)  # what a terminal would be sent
        display(screen, renderable)
        marks["displayed"] = time.perf_counter()

    depth = [0]

    def timed(fn):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            depth[0] += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if not depth[0]:  # a layout refresh runs a compositor refresh: count it once
                    timings["paint"].append(time.perf_counter() - t)

        return wrapper

    app.refresh_fleet = timed_refresh  # type: ignore[method-assign]
    agg.snapshots = copying(agg.snapshots)  # type: ignore[method-assign]
    agg.changed = copying(agg.changed)  # type: ignore[method-assign]
    app._display = timed_display  # type: ignore[method-assign]
    app.main._refresh_layout = timed(app.main._refresh_layout)  # type: ignore[method-assign]
    app.main._compositor_refresh = timed(app.main._compositor_refresh)  # type: ignore[method-assign]
    app.console.file = io.StringIO()

    rng = random.Random(1)
    rows: dict[str, list[float]] = {k: [] for k in ("tick", "refresh", "copy", "paint", "cpu")}
    prof = cProfile.Profile() if profile else None
    t_start = time.perf_counter()
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 60
        while app.main.table.row_count < nodes and time.monotonic() < deadline:
            await pilot.pause(0.05)
        build_s = time.perf_counter() - t_start
        table = app.main.table
        if expand:  # what `g` does on each row
            for name in list(table.visible_names):
                table.expand(name)
        if sort:
            table.sort_by(sort)  # the rows move every tick as well
        if filter_text:  # e.g. a bare word: every tick re-matches (and ranks) every node
            app.main.set_filter(filter_text)
        await pilot.pause(0.3)
        # what the running aggregator does once every node has answered (it is not started
        # here): collect, then freeze the start-up heap out of later collections
        gc.collect()
        gc.freeze()
        for _ in range(ticks):
            for v in timings.values():
                v.clear()
            seen = app.refreshes
            tick(agg, rng, share)
            t0, c0 = time.perf_counter(), time.process_time()
            if prof:
                prof.enable()
            while app.refreshes == seen:
                await asyncio.sleep(0.001)
            await pilot.pause()  # layout and compositor run; the frame is rendered
            if prof:
                prof.disable()
            c1 = time.process_time()
            rows["tick"].append(marks["displayed"] - t0)
            rows["cpu"].append(c1 - c0)
            for k in ("refresh", "copy", "paint"):
                rows[k].append(sum(timings[k]))
            await asyncio.sleep(0.3)  # past the app's min_refresh_s: the next tick is not held
        updates, lines, shown = table.row_updates, table.line_count, table.row_count
        table.move_cursor(row=0)
        await pilot.pause(0.3)
        keys: dict[str, list[float]] = {k: [] for k, _ in KEYS}
        for key, times in KEYS:
            for _ in range(times):
                t0 = time.perf_counter()
                if prof:
                    prof.enable()
                await pilot.press(key)  # the key's action, then the frame it paints
                deadline = time.monotonic() + 1.0  # a key that moves nothing paints nothing
                while marks["displayed"] < t0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.001)
                if prof:
                    prof.disable()
                keys[key].append(marks["displayed"] - t0)
                await asyncio.sleep(0.05)
    if prof:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(45)
        print(out.getvalue(), file=sys.stderr)
    ms = {k: [x * 1000 for x in v] for k, v in rows.items()}
    if per_tick:
        for i in range(len(ms["tick"])):
            print({k: round(v[i], 1) for k, v in ms.items()}, file=sys.stderr)
    return {
        "nodes": nodes,
        "sort": sort or "config order",
        "gpus": "expanded" if expand else "collapsed",
        "lines": lines,
        **({"filter": filter_text, "shown": shown} if filter_text else {}),
        "changed_per_tick": round(nodes * share),
        "ticks": ticks,
        "size": f"{size[0]}x{size[1]}",
        "first_build_s": round(build_s, 2),
        "tick_p50_ms": round(pct(ms["tick"], 50), 1),
        "tick_p99_ms": round(pct(ms["tick"], 99), 1),
        "refresh_p50_ms": round(pct(ms["refresh"], 50), 1),
        "copy_p50_ms": round(pct(ms["copy"], 50), 1),
        "paint_p50_ms": round(pct(ms["paint"], 50), 1),
        "cpu_p50_ms": round(pct(ms["cpu"], 50), 1),
        "cpu_p99_ms": round(pct(ms["cpu"], 99), 1),
        "rows_last_tick": updates,
        **{
            f"{key}_{q}_ms": round(pct([x * 1000 for x in keys[key]], p), 1)
            for key, _ in KEYS
            for q, p in (("p50", 50), ("p99", 99))
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=60)
    ap.add_argument("--change", type=float, default=0.1)
    ap.add_argument("--size", default="160x50")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--per-tick", action="store_true", help="print each tick's figures")
    ap.add_argument("--gpus", type=int, default=None, help="GPUs on every node (else 1, 2 or 4)")
    ap.add_argument("--expand", action="store_true", help="every node's GPU sub-rows unfolded")
    ap.add_argument("--filter", default="", help="a `/` filter applied for every case")
    ap.add_argument(
        "--sort",
        default="none,power",
        help="cases, comma-separated: 'none' (config order) or a column key to sort by",
    )
    a = ap.parse_args()
    w, h = (int(x) for x in a.size.split("x"))
    rows = []
    for key in a.sort.split(","):
        sort = None if key == "none" else key
        rows.append(
            asyncio.run(
                run(
                    a.nodes,
                    a.ticks,
                    a.change,
                    (w, h),
                    a.profile,
                    a.per_tick,
                    sort,
                    a.gpus,
                    a.expand,
                    a.filter,
                )
            )
        )
    report("tui", rows, {"tick at 1000 rows": "median < 25 ms, p99 < 50 ms"})


if __name__ == "__main__":
    main()
