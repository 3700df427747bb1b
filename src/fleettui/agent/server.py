"""The agent's HTTP surface: a Starlette app per node, served by one uvicorn server.

One process can serve many simulated nodes: every listening socket belongs to one node, and a
tiny ASGI dispatcher picks the node's app by the local port the request arrived on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fleettui.agent.actions import ACTIONS_PATH, ActionService
from fleettui.agent.conns import (
    ACCEPT_BURST,
    KEEP_ALIVE_S,
    connection_cap,
    nofile_limit,
    protocol_class,
    quiet_repeated_errors,
)
from fleettui.agent.guard import HostGuard, HostPolicy
from fleettui.agent.metrics import registry_for
from fleettui.agent.node import NodeAgent
from fleettui.agent.tls import reload as reload_tls
from fleettui.agent.tls import tls_or_refuse
from fleettui.promtext import exposition

log = logging.getLogger(__name__)
PING_EVERY_S = 15.0
JSON_TYPE = "application/json"
LISTEN_BACKLOG = 2048
# Per node. A stream is a complete request held open for good, so neither the header timeout
# nor the idle timeout frees it; without a bound, streams alone could fill the connection cap.
MAX_STREAMS = 64
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
VERIFY_GRACE_S = 0.5


def error(status: int, message: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


async def sse_stream(agent: NodeAgent, request: Request, ping_every: float) -> AsyncIterator[bytes]:
    """A fresh snapshot first (also after a reconnect with Last-Event-ID), then live events."""
    sub = agent.broker.subscribe()
    try:
        if agent.latest_json:
            first = b"id: %d\nevent: snapshot\ndata: %s\n\n" % (
                agent.broker.next_id(),
                agent.latest_json,
            )
            yield b"retry: 2000\n" + first
        while not sub.closed:
            ev = await sub.get(ping_every)
            if ev is not None:
                yield ev.encode()
            elif not sub.closed:
                yield b": ping\n\n"
    finally:
        agent.broker.unsubscribe(sub)


def service(agent: NodeAgent) -> ActionService | None:
    """The node's write side as the server drives it (node.py types it only by what it needs)."""
    return agent.actions if isinstance(agent.actions, ActionService) else None


async def read_gate(agent: NodeAgent, request: Request) -> Response | None:
    """With read_token_required, reads need a valid token too; None means allowed."""
    if not agent.config.read_token_required:
        return None
    if (actions := service(agent)) is None:  # no token store: fail closed
        return error(401, "unauthorized")
    return await actions.authorize_read(request)


def build_app(
    agent: NodeAgent, *, ping_every: float = PING_EVERY_S, bind_host: str = "127.0.0.1"
) -> ASGIApp:
    async def snapshot(request: Request) -> Response:
        if (denied := await read_gate(agent, request)) is not None:
            return denied
        if not agent.latest_json:
            return error(503, "no snapshot collected yet")
        return Response(agent.latest_json, media_type=JSON_TYPE)

    async def events(request: Request) -> Response:
        if (denied := await read_gate(agent, request)) is not None:
            return denied
        if agent.broker.subscribers >= MAX_STREAMS:  # a stream is held for good: bound them
            resp = error(429, "too many event streams", {"max": MAX_STREAMS})
            resp.headers["Retry-After"] = "5"
            return resp
        return StreamingResponse(
            sse_stream(agent, request, ping_every),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )

    registry = registry_for(lambda: agent.latest)

    async def metrics(request: Request) -> Response:
        if (denied := await read_gate(agent, request)) is not None:
            return denied
        body, content_type = exposition(registry, request.headers.get("accept"))
        agent.source.meter.mark_scraped()
        return Response(body, headers={"Content-Type": content_type})

    async def actions(request: Request) -> Response:
        if (write := service(agent)) is None:
            return error(503, "actions are not enabled on this agent")
        return await write.handle(request)

    async def audit(request: Request) -> Response:
        if (denied := await read_gate(agent, request)) is not None:
            return denied
        if (write := service(agent)) is None:
            return error(503, "actions are not enabled on this agent")
        return await write.audit_page(request)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "ticks": agent.ticks})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        reason = {404: "not found", 405: "method not allowed"}.get(exc.status_code, exc.detail)
        return error(exc.status_code, reason, {"path": request.url.path, "method": request.method})

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return error(500, "internal error")

    routes = [
        Route("/api/v1/snapshot", snapshot, methods=["GET"]),
        Route("/api/v1/events", events, methods=["GET"]),
        Route(ACTIONS_PATH, actions, methods=["POST"]),
        Route("/api/v1/audit", audit, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error}
    )
    policy = HostPolicy.for_node(bind_host, agent.config.allowed_hosts)
    write = service(agent)
    on_refused = write.guard_refused if write is not None else None
    return HostGuard(app, policy, writes={ACTIONS_PATH}, on_refused=on_refused)


class PortDispatcher:
    """ASGI app that routes each connection to the app of the port it arrived on."""

    def __init__(self, apps: dict[int, ASGIApp]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            msg = await receive()
            while msg["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
                msg = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        server = scope.get("server") or (None, None)
        app = self.apps.get(server[1]) if len(self.apps) > 1 else next(iter(self.apps.values()))
        if app is None:
            await JSONResponse({"error": "no node on this port"}, status_code=404)(
                scope, receive, send
            )
            return
        await app(scope, receive, send)


class BindError(OSError):
    """A port could not be bound; `address` names which (with --nodes, not always the first)."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_sockets(host: str, ports: Sequence[int]) -> list[socket.socket]:
    """Bind before serving so port 0 works and the caller learns the real ports."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for port in ports:
            # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the
            # listener says TCP; without it Nagle + delayed ACK add 40 ms to every answer.
            s = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            socks.append(s)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(LISTEN_BACKLOG)
            s.setblocking(False)
    except OSError as exc:
        for s in socks:
            s.close()
        raise BindError(host, port, exc) from exc
    return socks


async def serve(
    agents: Sequence[NodeAgent],
    sockets: Sequence[socket.socket],
    *,
    ping_every: float = PING_EVERY_S,
    log_level: str = "warning",
    on_ready: Callable[[], None] | None = None,
    handle_signals: bool = True,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Run every agent's collection loop and one uvicorn server until a signal or cancellation.
    With `ssl_context` every socket speaks HTTPS only (agent/tls.py; SIGHUP reloads it)."""
    for agent in agents:  # the write side: tokens, the audit head (its chain verified below)
        if (write := service(agent)) is None:
            agent.actions = write = ActionService.for_agent(agent)
        await write.start()
    for agent in agents:  # serve a real snapshot from the first request on
        await agent.tick()
    apps = {
        s.getsockname()[1]: build_app(a, ping_every=ping_every, bind_host=s.getsockname()[0])
        for a, s in zip(agents, sockets, strict=True)
    }
    header_timeout_s = agents[0].config.header_timeout_s
    http: Any = protocol_class(connection_cap(nofile_limit(), len(agents)), header_timeout_s)
    if ssl_context is not None:
        http = tls_or_refuse(http, ssl_context, header_timeout_s)
    config = uvicorn.Config(
        PortDispatcher(apps),
        http=http,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=int(KEEP_ALIVE_S),
        backlog=ACCEPT_BURST,
    )
    server = AgentServer(config)
    if ssl_context is not None:
        server.on_hangup = lambda: reload_tls(ssl_context, agents[0].config)
    quiet_repeated_errors(asyncio.get_running_loop())

    async def watch_exit() -> None:
        while not server.should_exit:
            await anyio.sleep(0.1)
        for agent in agents:  # end SSE streams so the graceful shutdown is quick
            agent.broker.close()

    # Chains are verified while reads are served; CPU-bound under the GIL, so two at a time
    # is as fast as more, and the default thread pool stays free for requests.
    verifiers = anyio.CapacityLimiter(2)
    async with anyio.create_task_group() as tg:
        for agent in agents:
            tg.start_soon(agent.run)
            if (write := service(agent)) is not None:
                tg.start_soon(write.refusals.run)
                tg.start_soon(write.verify, verifiers)
        tg.start_soon(watch_exit)
        tg.start_soon(_widen_listen_queues, server, sockets)
        if agents[0].config.advertise:
            tg.start_soon(_advertise, server, agents, sockets)
        if on_ready is not None:
            tg.start_soon(_call_when_started, server, on_ready, agents)
        try:
            if handle_signals:
                await server.serve(sockets=list(sockets))
            else:
                await server._serve(sockets=list(sockets))
        finally:
            server.should_exit = True
            for srv in getattr(server, "servers", []):  # cancelled mid-serve: still free the ports
                srv.close()
            tg.cancel_scope.cancel()


class AgentServer(uvicorn.Server):
    """uvicorn's server, but a signal only asks it to stop.

    uvicorn re-raises the SIGTERM or SIGINT it caught once serve() returns, so SIGTERM killed the
    process (exit 143) before the shutdown after serve() ran: the energy ledger was never saved.
    Here both signals take the same path: stop serving, then the caller's shutdown, then exit 0.
    A second signal forces the exit (open streams are not waited for). SIGHUP calls `on_hangup`
    (the TLS certificate read again) and serving goes on.
    """

    on_hangup: Callable[[], object] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        if self.on_hangup is not None:
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hangup)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _hangup(self, sig: int, frame: object) -> None:
        if self.on_hangup is not None:
            self.on_hangup()

    def _stop(self, sig: int, frame: object) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


async def _call_when_started(
    server: uvicorn.Server, on_ready: Callable[[], None], agents: Sequence[NodeAgent]
) -> None:
    """Once the sockets accept requests; a verification that ends within VERIFY_GRACE_S is
    waited for, so a small log is writable when the line says serving (no 503 race)."""
    while not server.started:
        await anyio.sleep(0.01)
    with anyio.move_on_after(VERIFY_GRACE_S):
        while any((w := service(a)) is not None and w.verifying() for a in agents):
            await anyio.sleep(0.01)
    on_ready()


async def _advertise(
    server: uvicorn.Server, agents: Sequence[NodeAgent], sockets: Sequence[socket.socket]
) -> None:
    """mDNS adverts from the moment the sockets answer until the server stops."""
    from fleettui.agent.advertise import advertise

    while not server.started:
        await anyio.sleep(0.01)
    await advertise(agents, sockets)


async def _widen_listen_queues(server: uvicorn.Server, sockets: Sequence[socket.socket]) -> None:
    """asyncio uses uvicorn's `backlog` both for listen() and as its accept burst; the burst
    must stay small (conns.py), the queue need not: once serving, widen it again."""
    while not server.started:
        await anyio.sleep(0.01)
    for s in sockets:
        s.listen(LISTEN_BACKLOG)
