"""The node detail screen: everything about one node, updated live, plus its audit trail.

Node text is already terminal-safe here (NodeView cleans it), but a plain `str` handed to a
Rich table is read as markup: `[/]` in a model name would raise, `[link=...]` would render. So
every cell of node text is a `Text`, which Rich never parses.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from fleettui.aggregator.history import POWER_BUCKET_S, POWER_BUCKETS, POWER_WINDOW_S
from fleettui.aggregator.state import ChainStatus, NodeState, NodeView
from fleettui.textsafe import clean
from fleettui.views.columns import CHAIN_STYLE, STATE_STYLE, cost_scale, power_scale
from fleettui.views.numbers import (
    fmt_age,
    fmt_duration,
    fmt_energy,
    fmt_latency,
    fmt_mb,
    fmt_money,
    fmt_pct,
    fmt_temp,
    fmt_watts,
)
from fleettui.views.sparkline import sparkline, sparkline_rows
from fleettui.views.tui.screens.ledger import budget_bar, fit_section, ledger
from fleettui.wire import Gpu, NodeSnapshot, Power

AUDIT_LIMIT = 10


def _kv(rows: list[tuple[str, RenderableType]]) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="dim", no_wrap=True)
    t.add_column()
    for k, v in rows:
        t.add_row(k, v)
    return t


def _table(title: str, *headers: str) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", box=None, padding=(0, 1))
    t.show_edge = False
    for h in headers:
        t.add_column(h, header_style="bold dim", no_wrap=True)
    return t


def stale(view: NodeView, now: float) -> str | None:
    """`last seen 3m ago` when the node's figures are not current (it is OFFLINE: what is
    shown is its last good answer), else None."""
    if view.state is not NodeState.OFFLINE or view.snapshot is None:
        return None
    return "last seen " + fmt_age(None if view.last_seen is None else now - view.last_seen)


def header(view: NodeView, now: float) -> RenderableType:
    line = Text()
    line.append(view.name, style="bold")
    line.append("  ")
    line.append(view.state.value, style=STATE_STYLE[view.state])
    line.append(f"  {view.url}", style="dim")
    if view.role:
        line.append(f"  role {view.role}")
    if view.tags:
        line.append(f"  tags {', '.join(view.tags)}")
    line.append("  token ✓" if view.has_token else "  no token (read-only)", style="dim")
    snap = view.snapshot
    seen = fmt_age(None if view.last_seen is None else now - view.last_seen)
    rows: list[tuple[str, RenderableType]] = []
    if snap:
        n = snap.node
        rows.append(
            (
                "host",
                Text(
                    f"{n.hostname} · {n.os} {n.arch} · agent {n.agent_version}"
                    f"{' (simulated)' if n.simulated else ''} · up {fmt_duration(n.uptime_s)}"
                ),
            )
        )
        cpu = fmt_pct(snap.cpu.percent)
        mem = (
            f"{fmt_mb(snap.memory.used_mb)}/{fmt_mb(snap.memory.total_mb)}"
            f" ({snap.memory.pressure_pct:.0f}% pressure)"
            if snap.memory.pressure_pct is not None
            else "—"
        )
        rows.append(("load", Text(f"cpu {cpu} of {snap.cpu.cores or '?'} cores · memory {mem}")))
        if mac := mac_facts(snap):
            rows.append(("macos", Text(mac)))
    poll = f"rtt {fmt_latency(view.latency_ms)} · last seen {seen}"
    if view.chain is not ChainStatus.NOT_APPLICABLE:  # asiai / bare Ollama nodes never stream
        poll += " · event stream " + ("connected" if view.stream_ok else "down")
    if view.retry_at is not None:
        poll += f" · next retry in {max(0, view.retry_at - now):.0f}s"
    rows.append(("poll", Text(poll)))
    if old := stale(view, now):
        rows.append(("figures", Text(f"not current: {old}", style="bold yellow")))
    if view.tls_fingerprint is not None:  # https: what the last handshake showed
        days = ((view.tls_expires or now) - now) / 86400
        rows.append(
            (
                "tls",
                Text(
                    f"{view.tls_protocol} · expires in {days:.0f} days · {view.tls_fingerprint}",
                    style="bold yellow" if days < 14 else "",
                ),
            )
        )
    chain = Text(view.chain.value, style=CHAIN_STYLE[view.chain])
    if view.chain_detail:
        chain.append(f"  {view.chain_detail}")
    if snap and view.chain is not ChainStatus.NOT_APPLICABLE:
        chain.append(f"  (head seq {snap.audit.seq})", style="dim")
    rows.append(("audit chain", chain))
    return Group(line, _kv(rows))


def mac_facts(snap: NodeSnapshot) -> str:
    """What macOS says of memory and heat (pressure level, swap, pmset); '' elsewhere."""
    m, parts = snap.memory, []
    if m.pressure_level is not None:
        parts.append(f"memory pressure {m.pressure_level}")
    if m.swap_used_mb is not None:
        parts.append(f"swap {fmt_mb(m.swap_used_mb)}/{fmt_mb(m.swap_total_mb)}")
    if snap.cpu.thermal is not None:
        parts.append(f"thermal {snap.cpu.thermal}")
    return " · ".join(parts)


def problems(view: NodeView) -> RenderableType:
    lines = Text()
    items = list(dict.fromkeys([*view.reasons, *(view.snapshot.problems if view.snapshot else [])]))
    for p in items:
        lines.append("• ", style="yellow")
        lines.append(p + "\n")
    if view.last_error:
        lines.append("last error  ", style="bold red")
        lines.append(view.last_error + "\n")
    if not lines.plain:
        lines.append("no problems", style="green")
    lines.rstrip()
    return Group(Text("Problems", style="bold"), lines)


def power_scope(p: Power) -> Text:
    """What the figures cover and how each part is measured (counters are exact, sampled
    power an approximation), and the energy since the agent started."""
    t = Text("scope ", style="dim")
    t.append(p.scope, style="bold")
    t.append(f" · source {p.source}", style="dim")
    if p.energy_since is not None:
        t.append(f" · {fmt_energy(p.energy_j)} since agent start", style="dim")
    if p.parts:
        t.append("\nparts ", style="dim")
        t.append(
            " · ".join(f"{x.name} {fmt_watts(x.watts)} {x.source}" for x in p.parts), style="dim"
        )
    return t


def power(view: NodeView, width: int, now: float) -> RenderableType:
    hist = view.power_history
    seen = [w for w in hist if w is not None]
    snap = view.snapshot
    now_w = snap.power.watts if snap else None
    old = stale(view, now)  # an OFFLINE node draws nothing now: its last figures, said so
    scale = power_scale([view])  # from zero, like the table's (which is the fleet's)
    top = f" ({scale.text})" if scale else ""
    span = f"last {POWER_WINDOW_S / 60:.0f} min, a column per {POWER_BUCKET_S:.0f} s"
    out = [Text(f"Power, {span}{top}", style="bold")]
    if seen:
        w = max(10, min(width, POWER_BUCKETS))
        for row in sparkline_rows(hist, w, 4, scale.top if scale else 0.0):
            out.append(Text(row, style="cyan"))
        # the bars are 15 s means: a reading now can fall outside their range, so say so
        means = f"{POWER_BUCKET_S:.0f} s means {fmt_watts(min(seen))} to {fmt_watts(max(seen))}"
        out.append(
            Text(
                f"{f'{old}: ' if old else 'now '}{fmt_watts(now_w)} · {means}",
                style="bold yellow" if old else "dim",
            )
        )
    else:
        out.append(Text("no samples yet", style="dim"))
    if snap:
        out.append(power_scope(snap.power))
    if snap and snap.cost.daily:
        cost = Text("cost 7d ", style="dim")
        days = cost_scale([view])
        cost.append(sparkline([d.cost for d in snap.cost.daily], 7, days.top if days else 0.0))
        cost.append(
            f"  {fmt_money(snap.cost.total_7d, snap.cost.currency)} · today "
            f"{fmt_money(snap.cost.today, snap.cost.currency)} at "
            f"{snap.cost.price_per_kwh:.2f}/kWh (each day at its own price) · days "
            + " ".join(fmt_money(d.cost, snap.cost.currency) for d in snap.cost.daily),
            style="dim",
        )
        out.append(cost)
    return Group(*out)


def gpu_processes(g: Gpu) -> str:
    """`ollama 4.9G · pid 4321 384M`: who holds memory on the GPU (NVML's process list)."""
    return " · ".join(f"{p.engine or f'pid {p.pid}'} {fmt_mb(p.used_mb)}" for p in g.processes)


def gpus(view: NodeView, now: float) -> RenderableType:
    old = stale(view, now)
    t = _table(
        f"GPUs ({old})" if old else "GPUs",
        "#",
        "name",
        "memory",
        "util",
        "temp",
        "power/limit",
        "energy from",
        "processes",
    )
    snap = view.snapshot
    sources = {p.name: p.source for p in snap.power.parts} if snap else {}
    for g in snap.gpus if snap else []:
        mem = f"{fmt_mb(g.memory_used_mb)} / {fmt_mb(g.memory_total_mb)}"
        limit = f" / {fmt_watts(g.power_limit_w)}" if g.power_limit_w is not None else ""
        t.add_row(
            str(g.index),
            Text(g.name),
            mem,
            fmt_pct(g.util_pct),
            fmt_temp(g.temp_c),
            fmt_watts(g.power_w) + limit,
            Text(sources.get(f"gpu{g.index}", sources.get("soc-gpu", "—"))),  # a Mac: its rail
            Text(gpu_processes(g)),
        )
    if not t.row_count:
        t.add_row("", Text("no GPU reported", style="dim"), "", "", "", "", "", "")
    return t


def engines(view: NodeView, now: float) -> RenderableType:
    old = stale(view, now)
    t = _table(
        f"Engines ({old})" if old else "Engines",
        "engine",
        "status",
        "version",
        "url",
        "models",
        "error",
    )
    snap = view.snapshot
    for e in snap.engines if snap else []:
        up = e.status == "up"
        t.add_row(
            Text(e.name),
            Text(e.status, style="green" if up else "bold red"),
            Text(e.version or "—"),
            Text(e.url),
            str(len(e.models)),
            Text(e.error or "", style="red"),
        )
    if not t.row_count:
        t.add_row(Text("no engine reported", style="dim"), "", "", "", "", "")
    return t


AUDIT_STYLES = {"ok": "green", "started": "yellow", "sealed": "cyan"}


def audit(
    entries: list | None, error: str | None, fmt_time: Callable[[float], str], now: float
) -> Table:
    t = _table(
        f"Audit, last {AUDIT_LIMIT}",
        "seq",
        "time",
        "age",
        "action",
        "args",
        "status",
        "http",
        "token",
    )
    if error:
        t.add_row("", Text(f"unavailable: {clean(error)}", style="red"))
    elif entries is None:
        t.add_row("", Text("loading…", style="dim"))
    elif not entries:
        t.add_row("", Text("no actions yet", style="dim"))
    for e in reversed(entries or []):  # the node's audit page: every text field is its own
        args = " ".join(f"{k}={v}" for k, v in sorted(e.args.items()))
        # An outcome names the `started` entry it closes; a started one alone is still running.
        status = e.status + (f" ←{e.ref}" if e.ref is not None else "")
        t.add_row(
            str(e.seq) if e.seq.bit_length() <= 64 else "(huge)",  # str() refuses 4300 digits
            fmt_time(e.ts),
            fmt_age(now - e.ts),
            Text(clean(e.action or "—")[:64]),
            Text(clean(args)[:200]),
            Text(clean(status)[:40], style=AUDIT_STYLES.get(e.status, "bold red")),
            str(e.http_status),
            Text(clean(e.token_id or "—")[:64]),
        )
    return t


class DetailScreen(Screen[None]):
    """One node. The app calls `show(view)` after every refresh; audit entries load once."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("backspace", "back", show=False),
        Binding("q", "back", show=False),  # back, as in every other screen: never quits here
        Binding("r", "reload_audit", "Reload audit"),
    ]

    def __init__(
        self,
        view: NodeView,
        fetch_audit: Callable,
        clock: Callable[[], float],
        fmt_time: Callable[[float], str],
    ) -> None:
        super().__init__()
        self.node_name = view.name
        self.view = view
        self.fetch_audit = fetch_audit
        self.clock = clock
        self.fmt_time = fmt_time
        self.audit_entries: list | None = None
        self.audit_error: str | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Static(id="d-header")
            yield Static(id="d-problems")
            yield Static(id="d-fit")
            yield Static(id="d-budget")
            yield Static(id="d-ledger")
            yield Static(id="d-power")
            yield Static(id="d-gpus")
            yield Static(id="d-engines")
            yield Static(id="d-audit")
        yield Footer(show_command_palette=False)  # ctrl+p is among the keys already

    def on_mount(self) -> None:
        self.show(self.view)
        self.load_audit()

    def show(self, view: NodeView | None) -> None:
        """Redraw from a newer view of the node (None: it left the config; keep the last)."""
        if view is None:
            return
        self.view = view
        now = self.clock()
        width = max(20, self.size.width - 4) if self.size.width else 60
        self.query_one("#d-header", Static).update(header(view, now))
        self.query_one("#d-problems", Static).update(problems(view))
        fit = fit_section(view)
        self.query_one("#d-fit", Static).display = fit is not None
        self.query_one("#d-fit", Static).update(fit or "")
        self.query_one("#d-power", Static).update(power(view, min(width, 60), now))
        self.query_one("#d-gpus", Static).update(gpus(view, now))
        self.query_one("#d-engines", Static).update(engines(view, now))
        snap = view.snapshot
        self.query_one("#d-budget", Static).update(
            budget_bar(snap.budget if snap else None, min(width, 60))
        )
        self.query_one("#d-ledger", Static).update(ledger(view, now))
        self._show_audit()

    def _show_audit(self) -> None:
        self.query_one("#d-audit", Static).update(
            audit(self.audit_entries, self.audit_error, self.fmt_time, self.clock())
        )

    @work(exclusive=True, group="audit", exit_on_error=False)
    async def load_audit(self) -> None:
        try:
            self.audit_entries = list(await self.fetch_audit(self.node_name, AUDIT_LIMIT))
            self.audit_error = None
        except Exception as exc:  # any failure is shown in place, never fatal
            self.audit_error = str(exc) or type(exc).__name__
        self._show_audit()

    def action_reload_audit(self) -> None:
        self.audit_entries, self.audit_error = None, None
        self._show_audit()
        self.load_audit()

    def action_back(self) -> None:
        self.dismiss(None)
