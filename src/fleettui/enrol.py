"""The one-time join code of `fleet enroll` / `fleet agent join`: what it carries, how it is
made and how a node checks it (docs/security.md, "Enrolment").

The node fetches nothing, so the code carries everything the node needs: its certificate and
key (issued by the fleet CA), the CA's certificate, a fresh action token, the node's name and
URL, an expiry and a nonce. The body is signed by the fleet CA's key, so the expiry and the
rest cannot be changed without the result being a code of some other CA (which the operator's
aggregator would not trust). The code is a secret: it holds a private key and a token. That is
why it is short-lived, shown once, never stored (the operator keeps its SHA-256, the node the
SHA-256 of its nonce, to refuse a second use) and never logged.

Format: `fj1.` + base64url(JSON body) + `.` + base64url(DER ECDSA signature). A certificate
is about 500 bytes, so a code is about 1.7 kB: long, but one line to paste, and shorter than
a scheme that would need the node to fetch its certificate from somewhere.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleettui.config import NAME_RE  # the node's name is a node name: the config's rule

PREFIX = "fj1"
VERSION = 1
MAX_CODE = 8192  # characters: a code is about 1.7 kB; anything much longer is not one
MINUTES_DEFAULT = 15
MINUTES_MAX = 24 * 60
NONCE_RE = re.compile(r"^[0-9a-f]{32}$")


class JoinError(Exception):
    """A code that cannot be used; one line that says why (never the code)."""


@dataclass(frozen=True)
class Join:
    """A checked code's content."""

    node: str
    url: str
    expires: float
    nonce: str
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    token: str


def code_hash(code: str) -> str:
    """What the operator keeps of a code it printed (never the code)."""
    return "sha256:" + hashlib.sha256(code.strip().encode()).hexdigest()


def nonce_hash(nonce: str) -> str:
    """What a node keeps of a code it used (never the code)."""
    return "sha256:" + hashlib.sha256(nonce.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_code(
    *,
    node: str,
    url: str,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    token: str,
    expires: float,
) -> str:
    """A signed join code for `node`; the caller shows it once and keeps only code_hash()."""
    der = serialization.Encoding.DER
    body = {
        "v": VERSION,
        "node": node,
        "url": url,
        "exp": int(expires),
        "nonce": secrets.token_hex(16),
        "cert": _b64(cert.public_bytes(der)),
        "key": _b64(
            key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        ),
        "ca": _b64(ca_cert.public_bytes(der)),
        "token": token,
    }
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    sig = ca_key.sign(raw, ec.ECDSA(hashes.SHA256()))
    return f"{PREFIX}.{_b64(raw)}.{_b64(sig)}"


def _field(body: dict[str, object], key: str, kind: type) -> object:
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise JoinError(f"not a join code (its {key!r} is missing or not a {kind.__name__})")
    return value


def read_code(code: str, *, now: float) -> Join:
    """Check a code's shape, signature, certificates and expiry; JoinError says what failed.
    (Single use is the caller's: it needs the node's record of used nonces.)"""
    code = code.strip()
    parts = code.split(".")
    if len(code) > MAX_CODE or len(parts) != 3 or parts[0] != PREFIX:
        raise JoinError("not a join code (it starts with fj1. and is one line; copy it whole)")
    try:
        raw, sig = _unb64(parts[1]), _unb64(parts[2])
        body = json.loads(raw)
    except (binascii.Error, ValueError):
        raise JoinError("not a join code (damaged: copy it whole, on one line)") from None
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise JoinError(f"not a version {VERSION} join code (a newer fleettui made it?)")
    node, url, nonce, token = (_field(body, k, str) for k in ("node", "url", "nonce", "token"))
    expires = _field(body, "exp", int)
    assert isinstance(node, str) and isinstance(url, str) and isinstance(expires, int)
    assert isinstance(nonce, str) and isinstance(token, str)
    if not NAME_RE.fullmatch(node) or not NONCE_RE.fullmatch(nonce) or len(token) > 200:
        raise JoinError("not a join code (a field is not what fleet enroll writes)")
    try:
        ca = x509.load_der_x509_certificate(_unb64(str(_field(body, "ca", str))))
        cert = x509.load_der_x509_certificate(_unb64(str(_field(body, "cert", str))))
        key = serialization.load_der_private_key(
            _unb64(str(_field(body, "key", str))), password=None
        )
    except (binascii.Error, ValueError, TypeError):
        raise JoinError("not a join code (its certificate or key does not parse)") from None
    # the token's own shape is the node's to check (agent/tokens.py): this module is both sides'
    ca_pub = ca.public_key()
    if not isinstance(ca_pub, ec.EllipticCurvePublicKey) or not isinstance(
        key, ec.EllipticCurvePrivateKey
    ):
        raise JoinError("not a join code (not the fleet CA's kind of key)")
    try:
        ca_pub.verify(sig, raw, ec.ECDSA(hashes.SHA256()))
        ca_pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise JoinError("the join code's signature does not verify (altered or damaged)") from None
    if key.public_key() != cert.public_key():
        raise JoinError("not a join code (its key is not its certificate's)")
    if now > expires:
        when = dt.datetime.fromtimestamp(expires, dt.UTC)
        ago = int((now - expires) // 60)
        raise JoinError(
            f"this join code expired at {when:%Y-%m-%d %H:%M} UTC ({ago} min ago); "
            f"ask for a new one (fleet enroll {node} ...)"
        )
    pem = serialization.Encoding.PEM
    return Join(
        node=node,
        url=url,
        expires=float(expires),
        nonce=nonce,
        cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        ca_pem=ca.public_bytes(pem),
        token=token,
    )
