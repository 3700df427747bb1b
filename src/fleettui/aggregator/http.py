"""Per-node HTTP clients and capped reads, so a bad node costs only itself.

httpcore's pool does work quadratic in its size on every request, so one shared pool holding
every node's connections (held-open SSE streams included) collapses at a few hundred nodes.
Each node gets its own small client instead; they all share one SSL context, because building
one per client costs about a megabyte and a few milliseconds each.
"""

from __future__ import annotations

import functools
import json
import ssl
from typing import Any

import anyio
import httpx

from fleettui import __version__

MAX_BODY = 1 << 20  # 1 MiB: a snapshot is a few KiB; anything near this is not an agent
ERROR_BODY = 4096  # how much of an error answer we read for its reason
USER_AGENT = f"fleettui/{__version__}"


class FetchError(Exception):
    """A request that gave no usable answer. `reachable` says whether the node answered at all."""

    def __init__(self, reason: str, *, reachable: bool, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reachable = reachable
        self.status = status


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying SSL context for every node client (honours SSL_CERT_FILE / SSL_CERT_DIR)."""
    return httpx.create_ssl_context()


def make_client(base_url: str, token: str | None, timeout_s: float) -> httpx.AsyncClient:
    """A small client for one node: a few connections, no proxies from the environment."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        verify=shared_ssl_context(),
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2, keepalive_expiry=30),
    )


def mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


def describe_transport_error(exc: Exception, timeout_s: float) -> str:
    """A short reason for a failed connection, without URLs or headers."""
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect timed out after {timeout_s:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, httpx.ConnectError):
        if "refused" in low or "all connection attempts failed" in low:
            return "connection refused"
        if "name or service" in low or "nodename nor servname" in low or "resolution" in low:
            return f"cannot resolve host: {text}"
        return f"cannot connect: {text}"
    if isinstance(exc, httpx.RemoteProtocolError):
        if "without sending" in low or "disconnected" in low:
            return "connection closed without an answer"
        return f"not an HTTP answer: {text}"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return f"connection dropped: {text}"
    return text


async def error_reason(resp: httpx.Response) -> str:
    """`HTTP 500: internal error` from an agent's JSON error body, if it has one."""
    body = bytearray()
    try:
        async for chunk in resp.aiter_raw():
            body += chunk
            if len(body) >= ERROR_BODY:
                break
        detail = json.loads(bytes(body[:ERROR_BODY])).get("error")
    except Exception:  # any junk: the status alone is the reason
        detail = None
    reason = f"HTTP {resp.status_code}"
    if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("location"):
        return f"{reason}: redirected to {resp.headers['location'][:200]} (fix the node URL)"
    if resp.status_code == 401:
        return f"{reason}: unauthorized (configure a token for this node)"
    if isinstance(detail, str) and detail:
        return f"{reason}: {detail[:200]}"
    return reason


async def get_capped(
    client: httpx.AsyncClient,
    path: str,
    *,
    timeout_s: float,
    params: dict[str, Any] | None = None,
    cap: int = MAX_BODY,
) -> bytes:
    """GET `path` and return the body, reading at most `cap` bytes; FetchError otherwise.

    The whole exchange has one deadline, so a node that trickles a byte a second cannot hold a
    poller longer than `timeout_s`, and a 50 MB answer is cut off after the first MiB.
    """
    try:
        with anyio.fail_after(timeout_s):
            async with client.stream("GET", path, params=params) as resp:
                if resp.status_code != 200:
                    raise FetchError(
                        await error_reason(resp), reachable=True, status=resp.status_code
                    )
                enc = resp.headers.get("content-encoding", "identity").lower()
                if enc not in ("", "identity"):
                    raise FetchError(f"unsupported content-encoding {enc!r}", reachable=True)
                announced = resp.headers.get("content-length", "")
                if announced.isdigit() and int(announced) > cap:
                    raise FetchError(
                        f"body over {mib(cap)} ({int(announced)} bytes announced)",
                        reachable=True,
                    )
                body = bytearray()
                async for chunk in resp.aiter_raw():
                    body += chunk
                    if len(body) > cap:
                        raise FetchError(f"body over {mib(cap)}", reachable=True)
                return bytes(body)
    except TimeoutError:
        raise FetchError(f"no answer within {timeout_s:g} s", reachable=False) from None
    except httpx.TransportError as exc:
        raise FetchError(describe_transport_error(exc, timeout_s), reachable=False) from None
    except httpx.HTTPError as exc:
        raise FetchError(str(exc) or type(exc).__name__, reachable=False) from None
