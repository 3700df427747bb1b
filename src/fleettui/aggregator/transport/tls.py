"""How the operator side checks a node over TLS: a CA (the fleet's, or the system's), or a
pinned SHA-256 fingerprint for a self-signed agent; and the client certificate it shows.

One SSLContext per distinct policy (a thousand nodes under one fleet CA share one context:
each costs about a megabyte, docs/performance.md). What a handshake established (protocol,
expiry, fingerprint) is read once per connection for the detail screen.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ssl
from dataclasses import dataclass

from cryptography import x509

from fleettui.aggregator.transport.errors import FetchError


@dataclass(frozen=True)
class TlsPolicy:
    """What to trust and what to present. No field set: the system's CAs, no client cert."""

    ca_file: str | None = None
    fingerprint: str | None = None  # "sha256:<64 hex>": trust exactly this certificate
    client_cert: str | None = None
    client_key: str | None = None

    def check(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> TlsInfo:
        """What the handshake established; FetchError when a pinned fingerprint differs."""
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise FetchError("TLS: the node showed no certificate", reachable=False)
        seen = "sha256:" + hashlib.sha256(der).hexdigest()
        if self.fingerprint is not None and not hmac.compare_digest(seen, self.fingerprint.lower()):
            raise FetchError(
                f"fingerprint mismatch: the node shows {seen[:19]}…, pinned "
                f"{self.fingerprint[:19]}…",
                reachable=False,
            )
        return TlsInfo.of(der, seen, ssl_object.version() if ssl_object is not None else None)


@dataclass(frozen=True)
class TlsInfo:
    """The node's certificate as the last handshake showed it."""

    protocol: str
    not_after: float  # unix time
    fingerprint: str

    @classmethod
    def of(cls, der: bytes, fingerprint: str, protocol: str | None) -> TlsInfo:
        try:
            expires = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
        except ValueError:
            expires = 0.0
        return cls(protocol or "TLS", expires, fingerprint)


@functools.cache
def _context(policy: TlsPolicy) -> ssl.SSLContext:
    if policy.fingerprint is not None:
        # the pin is the trust: no CA, no name; check() compares the certificate itself
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=policy.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if policy.client_cert is not None:
        ctx.load_cert_chain(policy.client_cert, policy.client_key)
    return ctx


DEFAULT = TlsPolicy()


def ssl_context(policy: TlsPolicy) -> ssl.SSLContext:
    """The shared context of `policy`; FetchError when its files cannot be used."""
    try:
        return _context(policy)
    except (OSError, ssl.SSLError, ValueError) as exc:
        what = f"{policy.ca_file or ''} {policy.client_cert or ''}".strip()
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise FetchError(f"TLS setup: cannot use {what}: {reason}", reachable=False) from None
