"""The fleet's own small CA: one EC P-256 key on the operator machine signs node certificates
and the operator's client certificate, so agents and the aggregator can authenticate each other
without a separate PKI project (docs/security.md, "TLS and mutual TLS").

Files (the directory is `pki_dir()`, XDG data dir + `/pki`, unless a caller passes another):

    ca.crt  ca.key                     the fleet CA; ca.key 0600, never leaves this machine
    operator.crt  operator.key         the aggregator's client certificate (mutual TLS)
    nodes/NAME/NAME.crt  NAME.key      one node's server certificate, copied to that node

Everything is a function of (directory, arguments) so `fleet tls` and enrolment share it; every
write goes through fsutil.atomic_write (temp, fsync, rename, never through a symlink).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleettui.fsutil import UnsafePathError, atomic_write

APP_NAME = "fleettui"
CA_DAYS = 3650
NODE_DAYS = 90  # short: `fleet tls issue NODE` again renews (docs/security.md)
DAYS_MAX = 3650
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
DNS_RE = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
SKEW = dt.timedelta(minutes=5)  # not-before a little in the past: clocks differ


class PkiError(Exception):
    """A request the CA refuses or files it cannot use; one line naming what and why."""


@dataclass(frozen=True)
class Issued:
    """Where a certificate and its key were written, and what identifies it."""

    cert: Path
    key: Path
    fingerprint: str
    not_after: dt.datetime


def pki_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "pki"


def ca_paths(directory: Path) -> tuple[Path, Path]:
    return directory / "ca.crt", directory / "ca.key"


def node_paths(directory: Path, node: str) -> tuple[Path, Path]:
    return directory / "nodes" / node / f"{node}.crt", directory / "nodes" / node / f"{node}.key"


def operator_paths(directory: Path) -> tuple[Path, Path]:
    return directory / "operator.crt", directory / "operator.key"


def fingerprint(der: bytes) -> str:
    """`sha256:<hex>` of a certificate's DER: the pin `tls_fingerprint` holds."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def cert_fingerprint(cert: x509.Certificate) -> str:
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleettui"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _days(days: int) -> dt.timedelta:
    if not isinstance(days, int) or not 1 <= days <= DAYS_MAX:
        raise PkiError(f"--days must be a whole number from 1 to {DAYS_MAX}, not {days!r}")
    return dt.timedelta(days=days)


def _write_pair(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, paths: tuple[Path, Path]
) -> None:
    crt_path, key_path = paths
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        crt_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(key_path, pem_key, mode=0o600)  # the key first: a cert without it is useless
        atomic_write(crt_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    except UnsafePathError as exc:
        raise PkiError(str(exc)) from None
    except OSError as exc:
        raise PkiError(
            f"{exc.filename or crt_path.parent}: cannot write: {exc.strerror or exc}"
        ) from None


def init_ca(directory: Path, *, days: int = CA_DAYS, force: bool = False) -> Issued:
    """A new fleet CA and an operator client certificate signed by it. An existing CA is kept
    unless `force` (rotating the CA: every node needs a new certificate afterwards)."""
    lifetime = _days(days)
    crt_path, key_path = ca_paths(directory)
    if not force and (crt_path.exists() or key_path.exists()):
        raise PkiError(f"{directory}: a fleet CA exists already (--force replaces it: rotation)")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = _name("fleettui fleet CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(cert, key, (crt_path, key_path))
    issue_operator(directory)
    return Issued(crt_path, key_path, cert_fingerprint(cert), cert.not_valid_after_utc)


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt_path, key_path = ca_paths(directory)
    try:
        cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise PkiError(f"{exc.filename}: no fleet CA here (run `fleet tls init` first)") from None
    except OSError as exc:
        raise PkiError(f"{exc.filename}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, TypeError):
        raise PkiError(f"{directory}: ca.crt or ca.key is not a PEM certificate/key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise PkiError(f"{key_path}: is not the key of {crt_path}")
    return cert, key


def parse_sans(names: list[str]) -> list[x509.GeneralName]:
    """Each `--san` as an IP address when it parses as one, else as a DNS name."""
    out: list[x509.GeneralName] = []
    for raw in names:
        text = raw.strip().strip("[]")
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(text)))
            continue
        except ValueError:
            pass
        if len(text) > 253 or not DNS_RE.fullmatch(text):
            raise PkiError(f"--san {raw!r}: not a host name or an IP address")
        out.append(x509.DNSName(text.lower()))
    return list(dict.fromkeys(out))


def _leaf(
    directory: Path,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
    paths: tuple[Path, Path],
) -> Issued:
    lifetime = _days(days)
    ca_cert, ca_key = load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_pair(cert, key, paths)
    return Issued(paths[0], paths[1], cert_fingerprint(cert), not_after)


def issue_node(
    directory: Path, node: str, sans: list[str] | None = None, *, days: int = NODE_DAYS
) -> Issued:
    """A server certificate for `node`: its name is always a SAN, `sans` add the names and
    addresses the aggregator uses in its URL. Issuing again is renewal (the old one is replaced)."""
    if not NODE_NAME_RE.fullmatch(node):
        raise PkiError(f"node name {node!r}: 1-63 letters, digits, '.', '_' or '-'")
    names = parse_sans([node, *(sans or [])])
    return _leaf(
        directory, node, names, ExtendedKeyUsageOID.SERVER_AUTH, days, node_paths(directory, node)
    )


def issue_operator(directory: Path, *, days: int = 365) -> Issued:
    """The aggregator's client certificate, for agents that require one (tls_client_ca)."""
    return _leaf(
        directory,
        "fleettui operator",
        [],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        days,
        operator_paths(directory),
    )


def renew_node(directory: Path, node: str, *, days: int = NODE_DAYS) -> Issued:
    """Issue `node`'s certificate again with the names and addresses its current one has."""
    crt_path, _ = node_paths(directory, node)
    if not NODE_NAME_RE.fullmatch(node):
        raise PkiError(f"node name {node!r}: 1-63 letters, digits, '.', '_' or '-'")
    try:
        cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
    except FileNotFoundError:
        raise PkiError(
            f"{crt_path}: no certificate for {node} (`fleet tls issue {node}`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise PkiError(f"{crt_path}: cannot read a certificate: {exc}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return issue_node(directory, node, names, days=days)
