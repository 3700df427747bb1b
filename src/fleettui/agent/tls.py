"""HTTPS for the agent: the one server SSL context, built from agent.toml and reloaded in place.

uvicorn hands the same SSLContext object to every listening socket; load_cert_chain on that
object changes what the next handshake presents, while connections already up (an operator's
event stream) keep the session they have. So SIGHUP renews a certificate without dropping
anyone, and a bad new file leaves the old certificate in use. (A new tls_client_ca, a CA
rotation, takes a restart: verify locations can only be added to a context.)
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleettui.agent.config import AgentConfig, ConfigError

log = logging.getLogger(__name__)
TLS_HANDSHAKE = 0x16  # the first byte of every TLS connection (a handshake record)
PLAIN_HTTP_BODY = json.dumps(
    {"error": "this agent speaks HTTPS: use https:// in the node's URL"}
).encode()


def _check_readable(key: str, path: str) -> None:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            fh.read(1)
    except FileNotFoundError:
        raise ConfigError(f"{key} = {path!r}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{key} = {path!r}: is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{key} = {path!r}: cannot read: {exc.strerror or exc}") from None


def load_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    """The certificate and key into `ctx`; ConfigError naming the file when they do not fit."""
    _check_readable("tls_cert", cert)
    _check_readable("tls_key", key)
    if b"-----BEGIN CERTIFICATE-----" not in Path(cert).read_bytes()[: 1 << 20]:
        raise ConfigError(f"tls_cert = {cert!r}: is not a PEM certificate")
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        text = f"{exc.reason or exc}".lower()
        if "mismatch" in text:
            raise ConfigError(f"tls_key = {key!r}: is not the key of tls_cert {cert!r}") from None
        raise ConfigError(
            f"tls_cert / tls_key: {cert!r} with {key!r} is not a PEM certificate and its key "
            f"({exc.reason or exc})"
        ) from None


def server_context(config: AgentConfig) -> ssl.SSLContext | None:
    """The agent's SSL context (TLS 1.2 or later), or None when agent.toml sets no tls_cert.
    With tls_client_ca, every connection must show a certificate that CA signed (mutual TLS)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # No TLS 1.3 session tickets: a client keeps a 16 KB OpenSSL buffer for as long as a
    # connection that received one lives, and resuming would save the aggregator about 1 ms
    # a handshake, less than that memory is worth at 1000 nodes (docs/performance.md, "TLS").
    ctx.num_tickets = 0
    load_chain(ctx, config.tls_cert, config.tls_key)
    if config.tls_client_ca is not None:
        _check_readable("tls_client_ca", config.tls_client_ca)
        try:
            ctx.load_verify_locations(cafile=config.tls_client_ca)
        except (ssl.SSLError, ValueError):
            raise ConfigError(
                f"tls_client_ca = {config.tls_client_ca!r}: is not a PEM CA certificate"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def reload(ctx: ssl.SSLContext, config: AgentConfig) -> str:
    """SIGHUP: the certificate files read again into the live context; what happened, in a line
    (a broken new file keeps the old certificate, it does not stop the agent)."""
    assert config.tls_cert is not None and config.tls_key is not None
    try:
        load_chain(ctx, config.tls_cert, config.tls_key)
    except ConfigError as exc:
        log.warning("TLS reload failed, keeping the old certificate: %s", exc)
        return f"TLS reload failed, keeping the old certificate: {exc}"
    return "TLS certificate reloaded"


class _AlertingSSLProtocol(asyncio.sslproto.SSLProtocol):
    """asyncio's server TLS, but a failed handshake sends its alert before the connection is
    dropped: without it a client refused for having no certificate sees only a closed
    connection instead of "certificate required" (the aggregator's `no client certificate`).
    Its read buffer is one TLS record, not asyncio's 256 KiB a connection (docs/performance.md)."""

    max_size = 16 * 1024 + 256

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(Exception):
                self._process_outgoing()  # type: ignore[attr-defined]
        super()._on_handshake_complete(handshake_exc)  # type: ignore[misc]


class TlsOrRefuse(asyncio.Protocol):
    """The first byte of a connection decides: a TLS handshake goes on to TLS (asyncio's own
    SSLProtocol, as loop.start_tls sets it up) over the agent's HTTP protocol; anything else,
    plain HTTP to the HTTPS port, gets a 400 saying so, then the connection closes. Without
    this, OpenSSL drops it silently and curl says only "Empty reply from server"."""

    def __init__(self, inner: asyncio.BaseProtocol, ctx: ssl.SSLContext, timeout_s: float) -> None:
        self.inner, self.ctx, self.timeout_s = inner, ctx, timeout_s
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._timer = asyncio.get_running_loop().call_later(self.timeout_s, transport.abort)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self._timer is not None:
            self._timer.cancel()
        if data[0] != TLS_HANDSHAKE:
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
                % (len(PLAIN_HTTP_BODY), PLAIN_HTTP_BODY)
            )
            self.transport.close()
            return
        tls = _AlertingSSLProtocol(
            asyncio.get_running_loop(),
            self.inner,  # type: ignore[arg-type]
            self.ctx,
            None,
            server_side=True,
            ssl_handshake_timeout=self.timeout_s,
        )
        self.transport.set_protocol(tls)
        tls.connection_made(self.transport)
        view = memoryview(data)
        while view:
            buf = tls.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            tls.buffer_updated(n)
            view = view[n:]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


def tls_or_refuse(
    inner: Callable[..., asyncio.BaseProtocol], ctx: ssl.SSLContext, timeout_s: float
) -> Callable[..., asyncio.Protocol]:
    """uvicorn's `http` protocol factory, wrapped: its sockets are then served without uvicorn's
    own ssl (the wrapper does TLS), everything else as before."""

    def make(**kwargs: Any) -> asyncio.Protocol:
        return TlsOrRefuse(inner(**kwargs), ctx, timeout_s)

    return make
