"""`fleet export --listen HOST:PORT`: the whole fleet as one Prometheus endpoint.

One FleetAggregator watches every node (fleettui agents over SSE, asiai and Ollama nodes by
polling) and each scrape of `/metrics` renders one merged exposition: every family declared
once, a `node` label on every sample, `fleet_up{node}` per node, the snapshot families of the
nodes that answered, rendered by prometheus_client like the agent's page (OpenMetrics when
the scraper's Accept asks for it). No web framework: h11 reads each request on an anyio
listener that answers GET and HEAD on `/metrics`, `/healthz` and `/`, and closes every
connection after one answer.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import h11
from prometheus_client import CollectorRegistry

from fleettui.aggregator.kinds import kind_for
from fleettui.aggregator.state import ChainStatus, NodeState, NodeView
from fleettui.promtext import (
    Family,
    FamilyCollector,
    exposition,
    labelled,
    merge,
    snapshot_families,
)
from fleettui.views.columns import plural

if TYPE_CHECKING:
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.config import FleetConfig

DEFAULT_LISTEN = "127.0.0.1:9464"
MAX_HEAD = 16 * 1024  # request line plus headers; Prometheus sends well under 1 KiB
READ_TIMEOUT_S = 10.0
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
ANSWERED = (NodeState.ONLINE, NodeState.DEGRADED)


class ExportError(Exception):
    """The exporter cannot start (bad --listen, port taken); the message says why."""


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464` -> (host, port)."""
    host, sep, port_s = text.rpartition(":")
    if not sep or not host:
        raise ExportError(
            f"--listen {text!r}: give HOST:PORT, e.g. 127.0.0.1:9464 (0.0.0.0:9464 for every "
            "interface)"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_s)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ExportError(f"--listen {text!r}: port must be a number from 0 to 65535")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the exposition ------------------------------------------------------------------------


def fleet_families(views: list[NodeView]) -> list[Family]:
    """The merged families for these nodes, in a stable order (fleet-level ones first)."""
    up = Family(
        "fleet_up",
        "gauge",
        "1 when fleet reached the node at its last poll (ONLINE or DEGRADED), else 0",
        ("node",),
    )
    state = Family("fleet_node_state", "gauge", "1 for the node's current state", ("node", "state"))
    info = Family(
        "fleet_node_info",
        "gauge",
        "The node as configured in the fleet config (always 1)",
        ("node", "kind", "url", "role"),
    )
    latency = Family(
        "fleet_node_latency_seconds", "gauge", "Round trip of the last snapshot request", ("node",)
    )
    seen = Family(
        "fleet_node_last_seen_timestamp_seconds",
        "gauge",
        "When fleet last got a good answer from the node (Unix)",
        ("node",),
    )
    chain = Family(
        "fleet_audit_chain_verified",
        "gauge",
        "1 when the node's audit chain verified, 0 when it is BROKEN (fleettui nodes only)",
        ("node",),
    )
    stream = Family(
        "fleet_event_stream_up",
        "gauge",
        "1 while the node's event stream delivers (fleettui nodes only)",
        ("node",),
    )
    per_node: list[list[Family]] = []
    for v in views:
        answered = v.state in ANSWERED
        up.add((v.name,), 1.0 if answered else 0.0)
        for s in NodeState:
            state.add((v.name, s.value), 1.0 if v.state is s else 0.0)
        info.add((v.name, v.kind, v.url, v.role), 1.0)
        if answered and v.latency_ms is not None:  # an OFFLINE node's last RTT is old news
            latency.add((v.name,), v.latency_ms / 1000)
        if v.last_seen is not None:
            seen.add((v.name,), v.last_seen)
        if v.chain in (ChainStatus.OK, ChainStatus.BROKEN):
            chain.add((v.name,), 1.0 if v.chain is ChainStatus.OK else 0.0)
        kind = kind_for(v.kind)
        if kind.streams:
            stream.add((v.name,), 1.0 if v.stream_ok else 0.0)
        # a node that did not answer has only its last snapshot: old facts, not exported
        if answered and v.snapshot is not None:
            fams = snapshot_families(v.snapshot, agent=kind.keeps_books)
            per_node.append(labelled(fams, "node", v.name))
    return merge([[up, state, info, latency, seen, chain, stream], *per_node])


class Exporter:
    """Answers the scrapes: the merged families rendered by prometheus_client, at most once
    per aggregator generation and exposition format."""

    def __init__(self, agg: FleetAggregator) -> None:
        self.agg = agg
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FamilyCollector(lambda: fleet_families(self.agg.snapshots())))
        self._cache: dict[str, tuple[int, bytes, str]] = {}

    def metrics(self, accept: str | None) -> tuple[bytes, str]:
        gen = self.agg.generation
        key = accept or ""
        hit = self._cache.get(key)
        if hit is None or hit[0] != gen:
            body, ctype = exposition(self.registry, accept)
            if len(self._cache) > 8:  # scrapers send one or two Accept values, not hundreds
                self._cache.clear()
            self._cache[key] = hit = (gen, body, ctype)
        return hit[1], hit[2]

    def answer(
        self, method: str, path: str, accept: str | None
    ) -> tuple[int, str, bytes, dict[str, str]]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n", {"Allow": "GET, HEAD"}
        if path == "/metrics":
            body, ctype = self.metrics(accept)
            return 200, ctype, body, {}
        if path == "/healthz":
            body = json.dumps({"ok": True, "nodes": len(self.agg.names)}).encode()
            return 200, "application/json", body, {}
        if path == "/":
            return 200, "text/plain", b"fleet export: Prometheus metrics at /metrics\n", {}
        return 404, "text/plain", b"not found; metrics are at /metrics\n", {}

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        """One request per connection: h11 reads the head (any malformed one is a 400)."""
        async with stream:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
            try:
                with anyio.fail_after(READ_TIMEOUT_S):
                    event = conn.next_event()
                    while event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive())
                        event = conn.next_event()
            except (TimeoutError, h11.RemoteProtocolError):
                return await self._send(stream, "GET", 400, "text/plain", b"bad request\n", {})
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            if not isinstance(event, h11.Request):  # the peer closed before a request
                return
            method = event.method.decode("latin-1")
            target = event.target.decode("latin-1")
            accept = ", ".join(v.decode("latin-1") for k, v in event.headers if k == b"accept")
            status, ctype, body, extra = self.answer(method, target.split("?", 1)[0], accept)
            await self._send(stream, method, status, ctype, body, extra)

    @staticmethod
    async def _send(
        stream: anyio.abc.ByteStream,
        method: str,
        status: int,
        ctype: str,
        body: bytes,
        extra: dict[str, str],
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in extra.items())
            + "\r\n"
        ).encode("latin-1")
        try:
            await stream.send(head + (b"" if method == "HEAD" else body))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass


async def serve_export(
    cfg: FleetConfig, host: str, port: int, on_ready: Callable[[str], None]
) -> None:
    """Bind, start watching the fleet, serve until SIGINT/SIGTERM (or cancellation)."""
    from fleettui.aggregator.aggregator import FleetAggregator
    from fleettui.aggregator.pins import PinStore

    try:
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as exc:
        raise ExportError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    async with (
        listener,
        FleetAggregator(cfg, pins=PinStore.default()) as agg,
        anyio.create_task_group() as tg,
    ):
        exporter = Exporter(agg)
        tg.start_soon(_stop_on_signals, tg.cancel_scope)
        tg.start_soon(listener.serve, exporter.handle)
        addr = anyio.abc.SocketAttribute.local_address
        bound_host, bound_port = listener.extra(addr)[:2]  # noqa: S610 (anyio, not Django)
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        on_ready(f"http://{shown}:{bound_port}/metrics")


async def _stop_on_signals(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def cmd_export(args: argparse.Namespace) -> int:
    from fleettui.commands.io import err, load_fleet

    try:
        host, port = parse_listen(args.listen)
    except ExportError as exc:
        err(str(exc))
        return 2
    cfg = load_fleet(args)
    if cfg is None:
        return 2
    if not is_loopback(host):
        err(
            f"WARNING: listening on {host} shows every node's facts to anyone who can reach "
            "this port (no authentication); prefer 127.0.0.1 with Prometheus on this machine"
        )

    def ready(url: str) -> None:
        print(
            f"fleet export: {plural(len(cfg.nodes), 'node')}, serving metrics on {url}",
            flush=True,
        )

    try:
        anyio.run(serve_export, cfg, host, port, ready)
    except ExportError as exc:
        err(str(exc))
        return 2
    except KeyboardInterrupt:
        pass
    return 0
