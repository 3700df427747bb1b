"""What went wrong talking to a node, said once: the errors and their operator-facing reasons.

Every failure of a request ends as a FetchError whose reason is a short line without URLs,
headers or secrets; `reachable` tells the node's state (it answered, or it did not).
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Mapping

import h11

ERROR_BODY = 4096  # how much of an error answer is read for its reason


class FetchError(Exception):
    """A request that gave no usable answer. `reachable` says whether the node answered at all."""

    def __init__(self, reason: str, *, reachable: bool, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reachable = reachable
        self.status = status


class StreamBroken(FetchError):
    """The connection or its HTTP framing failed mid-answer (the reason is the message)."""

    def __init__(self, reason: str, *, reachable: bool = False) -> None:
        super().__init__(reason, reachable=reachable)


def mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


def timeout_reason(timeout_s: float) -> str:
    return f"no answer within {timeout_s:g} s"


def describe_connect_error(exc: OSError) -> str:
    """A short reason for a failed connect, from the first address's error."""
    cause: BaseException | None = exc
    while cause is not None and not getattr(cause, "errno", None):
        inner = getattr(cause, "exceptions", None)
        cause = inner[0] if inner else cause.__cause__
    err = cause if isinstance(cause, OSError) else exc
    text = str(err) or type(err).__name__
    low = text.lower()
    if isinstance(err, ConnectionRefusedError) or "refused" in low:
        return "connection refused"
    if isinstance(err, ssl.SSLError):
        return tls_reason(err)
    if "name or service" in low or "nodename nor servname" in low or "resolution" in low:
        return f"cannot resolve host: {text}"
    return f"cannot connect: {text}"


def dropped(exc: BaseException) -> StreamBroken:
    if isinstance(exc, ssl.SSLError):  # TLS 1.3: a refused client certificate shows here
        return StreamBroken(tls_reason(exc))
    return StreamBroken(f"connection dropped: {exc or type(exc).__name__}")


# OpenSSL's X509_V_ERR_* codes a node's certificate fails with, in the operator's words
_VERIFY_CODES = {
    9: "certificate not yet valid",
    10: "certificate expired",
    18: "certificate not trusted (self-signed: set ca_file or tls_fingerprint)",
    19: "certificate not trusted (self-signed CA: set ca_file)",
    20: "certificate not trusted (unknown CA: set ca_file to the fleet CA)",
    21: "certificate not trusted (unknown CA: set ca_file to the fleet CA)",
    62: "name mismatch (the certificate is not for this host: reissue it with --san)",
    64: "name mismatch (the certificate is not for this IP address: reissue it with --san)",
}


def tls_reason(exc: ssl.SSLError) -> str:
    """What a failed TLS handshake means, in a line an operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        return _VERIFY_CODES.get(code, f"certificate not trusted ({exc.verify_message})")
    reason = (getattr(exc, "reason", None) or str(exc) or "").upper()
    if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason:
        return "no client certificate (the node requires one: set client_cert / client_key)"
    if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason:
        return "client certificate refused (the node trusts another CA)"
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
        return "TLS handshake failed: the node does not speak TLS (is its URL http://?)"
    return f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}"


_BYTES_REPR = re.compile(r"bytearray\(b('.*?')\)|\bb('.*?')")


def protocol_error(exc: h11.RemoteProtocolError, *, head_done: bool) -> StreamBroken:
    """h11's complaint about an answer as a reason.

    A node that speaks HTTP but frames its answer in a way RFC 9112 says to reject
    (conflicting Content-Length, a transfer coding other than chunked, a bad chunk) answered:
    it is reachable, its answer unusable. Anything that is not HTTP at all is not an answer.
    """
    text = _BYTES_REPR.sub(lambda m: m.group(1) or m.group(2), str(exc))[:160]
    low = text.lower()
    if "transfer-encoding" in low:
        return StreamBroken(
            "unsupported transfer coding (only chunked is decoded, nothing else)", reachable=True
        )
    if head_done or "content-length" in low or "chunk" in low:
        return StreamBroken(f"bad framing: {text}", reachable=True)
    if "too long" in low:
        return StreamBroken("not an HTTP answer: head over 64 KiB")
    return StreamBroken(f"not an HTTP answer: {text}")


def status_reason(status: int, headers: Mapping[str, str], body: bytes) -> str:
    """`HTTP 429: rate_limited (retry after 12 s)`: the reason for an answer that is not a
    success, from its status, redirect target, Retry-After and JSON error body (`error`,
    `detail`) when it has one."""
    try:
        data = json.loads(body[:ERROR_BODY])
    except Exception:  # any junk: the status alone is the reason
        data = None
    msg = data.get("error") if isinstance(data, dict) else None
    detail = data.get("detail") if isinstance(data, dict) else None
    reason = f"HTTP {status}"
    location = headers.get("location")
    if status in (301, 302, 303, 307, 308) and location:
        return f"{reason}: redirected to {location[:200]} (fix the node URL)"
    if msg:
        reason += f": {str(msg)[:200]}"
        if isinstance(detail, str) and detail and detail != msg:
            reason += f" ({detail[:200]})"
    elif status == 204:
        reason += ": no content"
    elif status == 401:
        reason += ": unauthorized (the node wants a valid token; check this node's token)"
    if status == 429 and (after := headers.get("retry-after")):
        reason += f" (retry after {after[:20]} s)"
    return reason
