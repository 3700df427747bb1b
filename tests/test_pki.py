"""`fleet tls init / issue / renew`: the fleet CA's files, what it signs, and what it refuses."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from fleettui import pki
from fleettui.cli import main


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_and_issue_make_a_chain_openssl_accepts(tmp_path: Path, capsys) -> None:
    d = tmp_path / "pki"
    assert main(["tls", "init", "--dir", str(d)]) == 0
    assert (
        main(["tls", "issue", "gpu1", "--san", "10.0.0.5", "--san", "GPU1.lan", "--dir", str(d)])
        == 0
    )
    out = capsys.readouterr().out
    assert "tls_cert" in out and "ca_file" in out
    ca_crt, ca_key = pki.ca_paths(d)
    crt, key = pki.node_paths(d, "gpu1")
    for secret in (ca_key, key, pki.operator_paths(d)[1]):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    node = _cert(crt)
    node.verify_directly_issued_by(_cert(ca_crt))
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gpu1", "gpu1.lan"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    lifetime = node.not_valid_after_utc - node.not_valid_before_utc
    assert 89 < lifetime.days <= 90
    # what the agent and the aggregator do with them: a server and a client context load them
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(crt, key)
    client = ssl.create_default_context(cafile=ca_crt)
    client.load_cert_chain(*pki.operator_paths(d))
    op = _cert(pki.operator_paths(d)[0])
    usage = op.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage


def test_renew_keeps_the_names_and_replaces_the_certificate(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    pki.init_ca(d)
    first = pki.issue_node(d, "gpu1", ["10.0.0.5"])
    again = pki.renew_node(d, "gpu1", days=30)
    assert again.fingerprint != first.fingerprint
    san = _cert(again.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ipaddress.ip_address("10.0.0.5") in san.value.get_values_for_type(x509.IPAddress)
    assert pki.cert_fingerprint(_cert(again.cert)) == (again.fingerprint)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["tls", "issue", "bad name"], "node name 'bad name'"),
        (["tls", "issue", "gpu1", "--san", "a b"], "--san 'a b': not a host name"),
        (["tls", "issue", "gpu1", "--days", "0"], "--days must be a whole number"),
        (["tls", "issue", "gpu1", "--days", "99999"], "--days must be a whole number"),
        (["tls", "renew", "nosuch"], "no certificate for nosuch"),
        (["tls", "init"], "a fleet CA exists already"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, argv, expected) -> None:
    d = tmp_path / "pki"
    pki.init_ca(d)
    assert main([*argv, "--dir", str(d)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_issue_without_a_ca_says_so(tmp_path: Path, capsys) -> None:
    assert main(["tls", "issue", "gpu1", "--dir", str(tmp_path)]) == 2
    assert "run `fleet tls init` first" in capsys.readouterr().err


def test_a_key_that_is_not_the_cas_is_refused(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    pki.init_ca(a)
    pki.init_ca(b)
    pki.ca_paths(a)[1].write_bytes(pki.ca_paths(b)[1].read_bytes())
    assert main(["tls", "issue", "gpu1", "--dir", str(a)]) == 2
    assert "is not the key of" in capsys.readouterr().err


def test_never_writes_through_a_symlink(tmp_path: Path, capsys) -> None:
    d = tmp_path / "pki"
    pki.init_ca(d)
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    _crt, key = pki.node_paths(d, "gpu1")
    key.parent.mkdir(parents=True)
    key.symlink_to(target)
    assert main(["tls", "issue", "gpu1", "--dir", str(d)]) == 2
    assert "symlink" in capsys.readouterr().err
    assert target.read_text() == "untouched"


def test_force_rotates_the_ca(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    old = pki.init_ca(d)
    new = pki.init_ca(d, force=True)
    assert new.fingerprint != old.fingerprint
