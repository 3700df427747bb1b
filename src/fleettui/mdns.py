"""The mDNS advert's one definition: service types, TXT keys, and how a received one is judged.

The agent writes an advert with `txt_record`; `fleet discover` reads whatever any machine on
the link sends and keeps only what `read_advert` accepts. Everything received is untrusted:
names and values are bounded, checked against the config's own rules and sanitised, so a
hostile advertiser costs a skipped line, never a crash or a flooded terminal. Plain Python: no
zeroconf here (an import-linter contract), so both sides share it without the network code.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from fleettui.config import NAME_RE  # an advert's name is a node name: the config's rule
from fleettui.textsafe import clean

# The service label must be at most 15 bytes (RFC 6763 7.2): "_fleettui" is 9.
SERVICE_TYPE = "_fleettui._tcp.local."
ASIAI_TYPE = "_asiai-fleet._tcp.local."  # asiai's planned type (its nodes are kind = "asiai")
TXT_VERSION = "1"
FINGERPRINT_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
VERSION_RE = re.compile(r"^[0-9A-Za-z.+_-]{1,32}$")
MAX_ADVERTS = 256  # distinct services one `fleet discover` keeps; more are counted, not kept
MAX_VALUE = 128  # bytes of one TXT value that are read at all
MAX_ADDRESSES = 8


@dataclass(frozen=True, slots=True)
class Advert:
    """One node as its advert describes it, already checked."""

    name: str
    kind: str  # "fleettui" | "asiai": which config kind `fleet add --discovered` writes
    addresses: tuple[str, ...]
    port: int
    version: str | None
    tls: bool
    fingerprint: str | None

    def url(self) -> str:
        host = self.addresses[0]
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{shown}:{self.port}"


def txt_record(version: str, fingerprint: str | None) -> dict[str, str]:
    """What an agent puts in its TXT record: `tls=1` and `fp` only when it serves HTTPS."""
    txt = {"txtvers": TXT_VERSION, "version": version, "tls": "1" if fingerprint else "0"}
    if fingerprint:
        txt["fp"] = fingerprint
    return txt


def instance_name(name: str) -> str:
    """A node name as an mDNS instance label: a hostname may carry what NAME_RE refuses."""
    label = re.sub(r"[^A-Za-z0-9_-]", "-", name.partition(".")[0]).lstrip("_-")[:63]
    return label or "node"


def _value(props: dict[bytes, bytes | None], key: bytes) -> str | None:
    raw = props.get(key)
    if raw is None or len(raw) > MAX_VALUE:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _addresses(raw: list[str]) -> tuple[str, ...]:
    """Usable addresses, IPv4 first; loopback, unspecified and multicast are not a node's."""
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in raw[: MAX_ADDRESSES * 4]:
        try:
            ip = ipaddress.ip_address(text.partition("%")[0])
        except ValueError:
            continue
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
            continue
        out.append(ip)
    out.sort(key=lambda ip: ip.version)
    return tuple(dict.fromkeys(str(ip) for ip in out))[:MAX_ADDRESSES]


def read_advert(
    service_type: str,
    full_name: str,
    port: int | None,
    addresses: list[str],
    props: dict[bytes, bytes | None],
) -> Advert | str:
    """An Advert, or why this one is skipped (already safe to print)."""
    suffix = "." + service_type
    label = full_name[: -len(suffix)] if full_name.endswith(suffix) else ""
    shown = clean(full_name[:80])
    if not NAME_RE.fullmatch(label):
        return f"{shown}: not a usable node name"
    if port is None or not 1 <= port <= 65535:
        return f"{label}: no port"
    addrs = _addresses(addresses)
    if not addrs:
        return f"{label}: no usable address"
    if service_type == ASIAI_TYPE:  # asiai's TXT is its own; none of ours is read from it
        return Advert(label, "asiai", addrs, port, None, False, None)
    if _value(props, b"txtvers") != TXT_VERSION:
        return f"{label}: not a version {TXT_VERSION} advert"
    version = _value(props, b"version")
    if version is not None and not VERSION_RE.fullmatch(version):
        version = None
    tls = _value(props, b"tls") == "1"
    fp = _value(props, b"fp")
    if tls and (fp is None or not FINGERPRINT_RE.fullmatch(fp)):
        return f"{label}: TLS without a valid sha256 fingerprint"
    return Advert(label, "fleettui", addrs, port, version, tls, fp if tls else None)
