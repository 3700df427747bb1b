"""Host and Origin allow-list: no DNS rebinding, no cross-site writes.

A web page can make a browser talk to the agent in two ways. DNS rebinding points a name the
attacker controls at 127.0.0.1 (or the node's address), so the page is same-origin with the
agent and can read its answers; the request still carries the attacker's name in `Host`, so
every route refuses a Host that is not one of this node's names (421). A cross-site form or
`fetch` with a "simple" body (text/plain, forms, or no type at all) reaches the agent without a
CORS preflight; writes therefore require `Content-Type: application/json` (415), which a page
cannot send cross-origin without a preflight the agent never grants, and refuse an `Origin` that
does not name this agent (403).

Allowed Host names: localhost names, this machine's hostname (also `NAME.local`), the bind
address, and `allowed_hosts` from agent.toml (exact names, or `*.suffix`). An IP literal is
always allowed: rebinding needs a DNS name, and an IP-literal Host cannot carry one. A request
without Host (HTTP/1.0) is allowed too: browsers always send one.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fleettui.agent.refusals import Rejection

LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
JSON_TYPE = "application/json"
CONFIG_HINT = "add it to allowed_hosts in agent.toml"


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def split_host(value: str) -> tuple[str, str]:
    """`name:port`, `[v6]:port` or a bare name -> (lower-case name without a final dot, port)."""
    value = value.strip()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""
    return name.lower().rstrip("."), port


def machine_names() -> set[str]:
    """This machine's own names. The FQDN is left out: resolving it can block on DNS."""
    host = socket.gethostname().lower().rstrip(".")
    short = host.split(".", 1)[0]
    return {n for n in (host, short, f"{short}.local") if n}


class HostPolicy:
    """Which names this node answers to, and the checks every request and every write pass."""

    def __init__(self, names: Iterable[str]) -> None:
        exact: set[str] = set()
        suffixes: list[str] = []
        for raw in names:
            name = raw.strip().lower().rstrip(".")
            if name.startswith("*."):
                suffixes.append(name[1:])
            elif name:
                exact.add(split_host(name)[0] if not _is_ip(name) else name)
        self.exact = frozenset(exact)
        self.suffixes = tuple(suffixes)

    @classmethod
    def for_node(cls, bind_host: str, allowed_hosts: Iterable[str]) -> HostPolicy:
        return cls([*LOCAL_NAMES, *machine_names(), bind_host, *allowed_hosts])

    def allows(self, name: str) -> bool:
        if not name:
            return False
        if _is_ip(name) or name in self.exact or name.endswith(".localhost"):
            return True
        return any(name.endswith(s) for s in self.suffixes)

    def check(self, method: str, headers: Headers, *, write: bool) -> Rejection | None:
        """None when the request may go on; the refusal otherwise. `write`: a write route."""
        hosts = headers.getlist("host")
        if len(hosts) > 1:
            return Rejection(400, "more than one Host header")
        host_header = hosts[0] if hosts else None
        if host_header is not None:
            name, _ = split_host(host_header)
            if not self.allows(name):
                return Rejection(
                    421,
                    "host not allowed (DNS rebinding protection)",
                    {"host": name[:100], "fix": CONFIG_HINT},
                )
        if not write or method in SAFE_METHODS:
            return None
        origins = headers.getlist("origin")
        if len(origins) > 1 or (origins and not _same_origin(origins[0], host_header)):
            return Rejection(
                403,
                "cross-origin request refused",
                {"origin": origins[0][:100], "expected": f"http://{host_header or '<Host>'}"},
            )
        types = headers.getlist("content-type")
        ctype = types[0].partition(";")[0].strip().lower() if len(types) == 1 else ""
        if ctype != JSON_TYPE:
            got = ctype or (f"{len(types)} Content-Type headers" if types else None)
            return Rejection(
                415,
                f"Content-Type must be {JSON_TYPE}",
                {"got": got[:100] if got else None, "expected": JSON_TYPE},
            )
        return None


def _same_origin(origin: str, host_header: str | None) -> bool:
    """An Origin names this agent when it is http(s)://<the Host header>, default ports equal."""
    if host_header is None:
        return False
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # includes "null" (sandboxed frames, file: pages)
    name, host_port = split_host(host_header)
    default = 443 if parts.scheme == "https" else 80
    want = int(host_port) if host_port.isdigit() else default
    return parts.hostname.rstrip(".") == name and (port or default) == want


Refused = Callable[[Scope, Rejection], Awaitable[None]]


class HostGuard:
    """ASGI middleware: HostPolicy.check before any route (`writes`: the paths that write);
    `on_refused` is told of every refusal, to record those of writes."""

    def __init__(
        self,
        app: ASGIApp,
        policy: HostPolicy,
        *,
        writes: Collection[str],
        on_refused: Refused | None = None,
    ) -> None:
        self.app, self.policy, self.writes, self.on_refused = app, policy, writes, on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            write = scope["path"] in self.writes
            rej = self.policy.check(scope["method"], Headers(scope=scope), write=write)
            if rej is not None:
                if self.on_refused is not None:
                    await self.on_refused(scope, rej)
                body = {"error": rej.message, "detail": rej.detail}
                await JSONResponse(body, status_code=rej.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)
