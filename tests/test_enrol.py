"""Enrolment in one step: `fleet enroll` on the operator side, `fleet agent join` on the node,
each a real process with a home of its own; a reused, expired or altered code is refused."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import _STARTED, AgentProc
from fakes import free_port
from fleettui.enrol import JoinError, code_hash, make_code, read_code
from fleettui.pki import init_ca, issue_node, load_ca


def _home(root: Path) -> dict[str, str]:
    home = root / "home"
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "XDG_"))}
    env["HOME"] = str(home)
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_DATA_HOME", ".local/share"),
    ):
        env[var] = str(home / sub)
    return env


def _fleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleettui", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def homes(tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    operator, node = _home(tmp_path / "operator"), _home(tmp_path / "node")
    made = _fleet(operator, "tls", "init")
    assert made.returncode == 0, made.stderr
    return operator, node


def test_enroll_then_join_between_two_homes(homes, tmp_path: Path) -> None:
    operator, node = homes
    port = free_port()  # below the ephemeral range: no other test's connection takes it
    url = f"https://127.0.0.1:{port}"
    enrolled = _fleet(operator, "enroll", "gpu1", "--url", url, "--tag", "a")
    assert enrolled.returncode == 0, enrolled.stderr
    code = enrolled.stdout.strip()
    assert code.startswith("fj1.") and "\n" not in code and len(code) < 4000
    assert "a secret" in enrolled.stderr and code not in enrolled.stderr

    # the operator side: the node is in projects.toml with its token file and the CA
    op_config = Path(operator["XDG_CONFIG_HOME"]) / "fleettui"
    projects = (op_config / "projects.toml").read_text()
    assert 'name = "gpu1"' in projects and f'url = "{url}"' in projects
    assert "ca_file" in projects and "token_file" in projects and "tok_" not in projects
    pki_nodes = Path(operator["XDG_DATA_HOME"]) / "fleettui" / "pki" / "nodes" / "gpu1"
    assert sorted(p.name for p in pki_nodes.iterdir()) == ["gpu1.crt"]  # no node key kept
    token_file = op_config / "tokens" / "gpu1.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    pending = json.loads(
        (Path(operator["XDG_STATE_HOME"]) / "fleettui" / "enrolments.json").read_text()
    )
    [record] = pending["pending"]
    assert record["code"] == code_hash(code) and record["node"] == "gpu1"
    state_text = "".join(
        p.read_text(errors="replace")
        for p in Path(operator["HOME"]).rglob("*")
        if p.is_file() and p.stat().st_size < 1 << 20
    )
    assert code not in state_text  # the code is kept nowhere on the operator side

    # the node side: nothing fetched, everything installed from the code
    joined = subprocess.run(
        [sys.executable, "-m", "fleettui", "agent", "join", "-"],
        env=node,
        input=code + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert joined.returncode == 0, joined.stderr
    agent_dir = Path(node["XDG_CONFIG_HOME"]) / "fleettui" / "agent"
    toml = (agent_dir / "agent.toml").read_text()
    for key, name in (
        ("tls_cert", "node.crt"),
        ("tls_key", "node.key"),
        ("tls_client_ca", "ca.crt"),
    ):
        assert f'{key} = "{agent_dir / "tls" / name}"' in toml
    assert stat.S_IMODE((agent_dir / "tls" / "node.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((agent_dir / "tls" / "node.crt").read_bytes())
    ca, _ = load_ca(Path(operator["XDG_DATA_HOME"]) / "fleettui" / "pki")
    assert cert.issuer == ca.subject
    assert (agent_dir / "tls" / "ca.crt").read_bytes() == ca.public_bytes(
        serialization.Encoding.PEM
    )
    tokens = json.loads((agent_dir / "tokens.json").read_text())
    [rec] = tokens["tokens"]
    assert rec["id"] == token.partition(".")[0] and token not in json.dumps(tokens)
    node_text = "".join(
        p.read_text(errors="replace") for p in Path(node["HOME"]).rglob("*") if p.is_file()
    )
    assert code not in node_text and token not in node_text

    # the same code again: refused, one line, exit 2, nothing changed
    again = _fleet(node, "agent", "join", code)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "used already" in again.stderr
    assert (agent_dir / "agent.toml").read_text() == toml

    # the joined agent serves HTTPS with mutual TLS; the operator polls it with what enroll wrote
    agent = AgentProc(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleettui",
                "agent",
                "serve",
                "--simulate",
                "--name",
                "gpu1",
                "--port",
                str(port),
            ],
            env=node,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "agent.log").open("w"),
        ),
        stderr_path=tmp_path / "agent.log",
    )
    _STARTED.append(agent)
    try:
        deadline = time.monotonic() + 30
        while True:
            ping = _fleet(operator, "ping", "gpu1", "--json", "--timeout", "3")
            if ping.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert ping.returncode == 0, (ping.stdout, agent.stderr())
        status = json.loads(_fleet(operator, "status", "--json").stdout)
        [view] = status["nodes"]
        assert (view["name"], view["state"], view["url"]) == ("gpu1", "ONLINE", url)
    finally:
        agent.stop()


def _code(tmp_path: Path, *, expires: float) -> str:
    pki = tmp_path / "pki"
    init_ca(pki)
    ca_cert, ca_key = load_ca(pki)
    issued = issue_node(pki, "gpu2", ["127.0.0.1"])
    cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    key = serialization.load_pem_private_key(issued.key.read_bytes(), password=None)
    return make_code(
        node="gpu2",
        url="https://127.0.0.1:8443",
        cert=cert,
        key=key,  # type: ignore[arg-type]
        ca_cert=ca_cert,
        ca_key=ca_key,
        token="tok_0123abcd." + "A" * 43,
        expires=expires,
    )


def test_an_expired_code_is_refused_in_one_line(tmp_path: Path) -> None:
    node = _home(tmp_path / "node")
    code = _code(tmp_path, expires=time.time() - 120)
    out = _fleet(node, "agent", "join", code)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "expired at" in out.stderr and "2 min ago" in out.stderr
    assert not (Path(node["XDG_CONFIG_HOME"]) / "fleettui" / "agent").exists()


def test_an_altered_or_damaged_code_is_refused(tmp_path: Path) -> None:
    code = _code(tmp_path, expires=time.time() + 600)
    assert read_code(code, now=time.time()).node == "gpu2"
    prefix, body, sig = code.split(".")
    import base64

    raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw["exp"] += 86400  # a longer life, not re-signed
    forged = base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()
    for bad, why in (
        (f"{prefix}.{forged}.{sig}", "signature does not verify"),
        (code[:-10], "damaged|signature"),
        (code[:200], "not a join code"),
        ("fj1.%%%.x", "not a join code"),
        ("hello", "not a join code"),
        ("fj1." + "A" * 9000 + ".x", "not a join code"),
    ):
        with pytest.raises(JoinError, match=why) as err:
            read_code(bad, now=time.time())
        assert code not in str(err.value) and len(str(err.value)) < 200
    with pytest.raises(JoinError, match="expired"):
        read_code(code, now=time.time() + 601)


def test_enroll_refuses_plain_http_and_a_known_name(homes) -> None:
    operator, _ = homes
    out = _fleet(operator, "enroll", "gpu1", "--url", "http://127.0.0.1:8899")
    assert out.returncode == 2 and "https://" in out.stderr and out.stdout == ""
    assert _fleet(operator, "enroll", "gpu1", "--url", "https://10.0.0.1:8443").returncode == 0
    again = _fleet(operator, "enroll", "gpu1", "--url", "https://10.0.0.1:8443")
    assert again.returncode == 2 and "exists already" in again.stderr and again.stdout == ""


def test_join_refuses_a_code_of_another_ca_unless_forced(tmp_path: Path) -> None:
    node = _home(tmp_path / "node")
    other = tmp_path / "other-pki"
    init_ca(other)
    theirs = issue_node(other, "gpu2")
    agent_toml = tmp_path / "agent.toml"
    agent_toml.write_text(
        f'tls_cert = "{theirs.cert}"\ntls_key = "{theirs.key}"\n'
        f'tls_client_ca = "{other / "ca.crt"}"\n# kept\n'
    )
    code = _code(tmp_path, expires=time.time() + 600)
    out = _fleet(node, "agent", "join", code, "--config", str(agent_toml))
    assert out.returncode == 2 and "another CA" in out.stderr and "--force" in out.stderr
    forced = _fleet(node, "agent", "join", code, "--config", str(agent_toml), "--force")
    assert forced.returncode == 0, forced.stderr
    text = agent_toml.read_text()
    assert "# kept" in text and f'tls_client_ca = "{tmp_path / "tls" / "ca.crt"}"' in text
