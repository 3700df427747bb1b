"""HTTPS and mutual TLS between the aggregator and real agents, with certificates from
`fleet tls init/issue` (pki.py) and from trustme (an independent CA): polled, streamed, acted
on; each way a certificate can be wrong is that node's state and reason, or the agent's refusal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.streams.tls
import pytest
import trustme

from actionfleet import write_action_agent_config
from fakes import wait_for
from fleettui import pki
from fleettui.agent.config import AgentConfig
from fleettui.agent.node import NodeAgent
from fleettui.agent.server import bind_sockets, serve
from fleettui.agent.tls import server_context
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.node import NodeWorker
from fleettui.aggregator.state import NodeState
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.errors import FetchError
from fleettui.aggregator.transport.gate import HANDSHAKES
from fleettui.aggregator.transport.sse import SSEParser
from fleettui.aggregator.transport.stream import PushStream, _SmallSSLProtocol
from fleettui.aggregator.transport.tls import TlsPolicy, ssl_context
from fleettui.config import Defaults, FleetConfig, NodeConfig, parse_fleet_config
from fleettui.wire import ActionRequest, NodeSnapshot

pytestmark = pytest.mark.anyio


@pytest.fixture
def fleet_pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    pki.init_ca(d)
    pki.issue_node(d, "localhost", ["127.0.0.1"])
    return d


def node_files(d: Path) -> dict[str, str]:
    crt, key = pki.node_paths(d, "localhost")
    return {"tls_cert": str(crt), "tls_key": str(key)}


def operator(d: Path) -> dict[str, str]:
    crt, key = pki.operator_paths(d)
    return {"ca_file": str(pki.ca_paths(d)[0]), "client_cert": str(crt), "client_key": str(key)}


@asynccontextmanager
async def tls_agent(**tls: str) -> AsyncIterator[int]:
    """A simulated agent served in-process over TLS; yields its port."""
    config = AgentConfig(interval_s=0.2, **tls)
    agent = NodeAgent.simulate(config, "tls")
    sockets = bind_sockets("127.0.0.1", [0])
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: serve(
                [agent],
                sockets,
                on_ready=ready.set,
                handle_signals=False,
                ssl_context=server_context(config),
            )
        )
        await ready.wait()
        yield sockets[0].getsockname()[1]
        tg.cancel_scope.cancel()


async def settle(node: NodeConfig, want: NodeState, reason: str = "") -> object:
    async with FleetAggregator(FleetConfig(nodes=[node]), verify_chain=False) as agg:

        def done() -> bool:
            v = agg.node(node.name)
            return v.state is want and (not reason or any(reason in r for r in v.reasons))

        try:
            await wait_for(done, 8, what=f"{want} {reason}")
        except AssertionError:
            v = agg.node(node.name)
            raise AssertionError(f"wanted {want} {reason!r}, got {v.state} {v.reasons}") from None
        return agg.node(node.name)


async def test_fleet_ca_and_mutual_tls_polled_and_streamed(fleet_pki: Path, xdg_home) -> None:
    ca = pki.ca_paths(fleet_pki)[0]
    async with tls_agent(**node_files(fleet_pki), tls_client_ca=str(ca)) as port:
        node = NodeConfig(name="n", url=f"https://127.0.0.1:{port}", **operator(fleet_pki))
        async with FleetAggregator(FleetConfig(nodes=[node]), verify_chain=False) as agg:
            await wait_for(lambda: agg.node("n").stream_ok, 8, what="the event stream over TLS")
            await wait_for(lambda: agg.node("n").tls_fingerprint is not None, 8)
            v = agg.node("n")
        assert v.state is NodeState.ONLINE, v.reasons
        assert v.tls_protocol in ("TLSv1.2", "TLSv1.3")
        assert v.tls_fingerprint == pki.cert_fingerprint(
            pki.x509.load_pem_x509_certificate(
                pki.node_paths(fleet_pki, "localhost")[0].read_bytes()
            )
        )
        assert 89 * 86400 < v.tls_expires - dt.datetime.now(dt.UTC).timestamp() <= 90 * 86400
        # the same name: localhost is a SAN too
        node = NodeConfig(name="n", url=f"https://localhost:{port}", **operator(fleet_pki))
        await settle(node, NodeState.ONLINE)


async def test_wrong_ca_missing_or_foreign_client_cert(fleet_pki: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init_ca(other)
    ca = pki.ca_paths(fleet_pki)[0]
    async with tls_agent(**node_files(fleet_pki), tls_client_ca=str(ca)) as port:
        url = f"https://127.0.0.1:{port}"
        wrong = {**operator(fleet_pki), "ca_file": str(pki.ca_paths(other)[0])}
        await settle(NodeConfig(name="n", url=url, **wrong), NodeState.OFFLINE, "not trusted")
        no_client = {"ca_file": str(ca)}
        await settle(
            NodeConfig(name="n", url=url, **no_client), NodeState.OFFLINE, "no client certificate"
        )
        foreign = {**operator(other), "ca_file": str(ca)}  # a client cert of another CA
        await settle(NodeConfig(name="n", url=url, **foreign), NodeState.OFFLINE, "client")


async def test_trustme_name_mismatch_expired_and_pinned(tmp_path: Path) -> None:
    ca = trustme.CA()
    now = dt.datetime.now(dt.UTC)
    good = ca.issue_cert("127.0.0.1", "localhost")
    old = ca.issue_cert(
        "127.0.0.1", not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1)
    )
    ca_pem = tmp_path / "trustme-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))

    def files(cert: trustme.LeafCert, name: str) -> dict[str, str]:
        crt, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(crt))
        cert.private_key_pem.write_to_path(str(key))
        return {"tls_cert": str(crt), "tls_key": str(key)}

    async with tls_agent(**files(good, "good")) as port:
        url = f"https://127.0.0.1:{port}"
        v = await settle(NodeConfig(name="n", url=url, ca_file=str(ca_pem)), NodeState.ONLINE)
        pin = v.tls_fingerprint  # type: ignore[attr-defined]
        # no ca_file: the system's CAs do not know trustme's
        await settle(NodeConfig(name="n", url=url), NodeState.OFFLINE, "not trusted")
        await settle(NodeConfig(name="n", url=url, tls_fingerprint=pin), NodeState.ONLINE)
        wrong = "sha256:" + "0" * 64
        await settle(
            NodeConfig(name="n", url=url, tls_fingerprint=wrong),
            NodeState.OFFLINE,
            "fingerprint mismatch",
        )
    async with tls_agent(**files(ca.issue_cert("other.example"), "other")) as port:
        node = NodeConfig(name="n", url=f"https://127.0.0.1:{port}", ca_file=str(ca_pem))
        await settle(node, NodeState.OFFLINE, "name mismatch")
    async with tls_agent(**files(old, "old")) as port:
        node = NodeConfig(name="n", url=f"https://127.0.0.1:{port}", ca_file=str(ca_pem))
        await settle(node, NodeState.OFFLINE, "certificate expired")


async def test_a_pinned_node_gets_no_token_from_an_impostor(tmp_path: Path) -> None:
    """The stream path checks the pin before it writes its request (with the token)."""
    ca = trustme.CA()
    crt, key = tmp_path / "a.crt", tmp_path / "a.key"
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(crt))
    leaf.private_key_pem.write_to_path(str(key))
    async with tls_agent(tls_cert=str(crt), tls_key=str(key)) as port:
        policy = TlsPolicy(fingerprint="sha256:" + "1" * 64)
        ep = NodeClient(f"https://127.0.0.1:{port}", "s3cret", 5, policy).endpoint
        with pytest.raises(FetchError, match="fingerprint mismatch"):
            await PushStream.open(ep, "/api/v1/events", {}, token="s3cret", timeout_s=5)


async def test_no_token_crosses_plain_http_to_an_https_node() -> None:
    """The node is configured https://, but what listens is plain TCP: the handshake fails,
    and nothing of HTTP (no Authorization header) reaches it, by the poller or the stream."""
    received = bytearray()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(10)

    def accept() -> None:
        for _ in range(4):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                while chunk := conn.recv(65536):
                    received.extend(chunk)
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            except OSError:
                pass
            finally:
                conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    node = NodeConfig(name="n", url=f"https://127.0.0.1:{port}", token="s3cret-token")
    await settle(node, NodeState.OFFLINE, "does not speak TLS")
    listener.close()
    t.join(5)
    assert received, "the aggregator never connected"
    assert received[0] == 0x16  # a TLS ClientHello, nothing else
    assert b"authorization" not in received.lower() and b"s3cret" not in received


def _curl_like(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = bytearray()
        while chunk := s.recv(4096):
            out += chunk
        return bytes(out)


async def test_plain_http_to_a_tls_agent_is_told_to_use_https(fleet_pki: Path) -> None:
    async with tls_agent(**node_files(fleet_pki)) as port:
        answer = await anyio.to_thread.run_sync(
            _curl_like, port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"this agent speaks HTTPS" in answer
        # and the aggregator configured http:// for it says so too
        node = NodeConfig(name="n", url=f"http://127.0.0.1:{port}")
        await settle(node, NodeState.DEGRADED, "speaks HTTPS")
        # while https on the same port works
        ca = str(pki.ca_paths(fleet_pki)[0])
        async with NodeClient(f"https://127.0.0.1:{port}", None, 5, TlsPolicy(ca)) as client:
            assert b'"ok":true' in await client.get("/healthz")


async def test_tls_agent_acted_on_and_reloaded_on_sighup(
    agent_factory, fleet_pki: Path, tmp_path: Path
) -> None:
    """A real `fleet agent serve` over mutual TLS: an action with the token goes through;
    SIGHUP loads a renewed certificate for new connections while an open stream goes on."""
    cfg, calls, secret = write_action_agent_config(tmp_path)
    files = {**node_files(fleet_pki), "tls_client_ca": str(pki.ca_paths(fleet_pki)[0])}
    cfg.write_text(
        cfg.read_text().replace(
            "[engines", "".join(f'{k} = "{v}"\n' for k, v in files.items()) + "[engines", 1
        )
    )
    agent = agent_factory("--simulate", "--name", "tls", "--config", str(cfg))
    assert agent.url.startswith("https://")
    node = NodeConfig(name="tls", url=agent.url, token=secret, **operator(fleet_pki))
    async with FleetAggregator(FleetConfig(nodes=[node]), verify_chain=False) as agg:
        await wait_for(lambda: agg.node("tls").stream_ok, 10, what="the stream over mTLS")
        first = agg.node("tls").tls_fingerprint
        env = await agg.act(["tls"], ActionRequest(action="restart", engine="ollama"))
        assert env.succeeded == ["tls"], env.failed
        assert calls.exists()
        renewed = pki.renew_node(fleet_pki, "localhost")
        before = agg.node("tls").version
        agent.proc.send_signal(signal.SIGHUP)
        with anyio.fail_after(10):  # a fresh connection shows the new certificate
            while True:
                client = NodeClient(agent.url, None, 5, agg_policy(fleet_pki))
                try:
                    await client.get("/healthz")
                finally:
                    await client.aclose()
                if client.tls and client.tls.fingerprint == renewed.fingerprint:
                    break
                await anyio.sleep(0.1)
        assert renewed.fingerprint != first
        # the stream opened before the reload still delivers
        await wait_for(lambda: agg.node("tls").version > before + 3, 10, what="stream events")
        assert agg.node("tls").stream_ok
    assert agent.proc.poll() is None


def agg_policy(d: Path) -> TlsPolicy:
    o = operator(d)
    return TlsPolicy(o["ca_file"], None, o["client_cert"], o["client_key"])


def _serve_fails(tmp_path: Path, toml: str) -> str:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(toml)
    p = subprocess.run(
        [sys.executable, "-m", "fleettui", "agent", "serve", "--config", str(cfg), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) in (1, 2) and "Traceback" not in p.stderr, p.stderr
    return p.stderr


def test_hostile_tls_settings_are_one_clear_line(fleet_pki: Path, tmp_path: Path) -> None:
    f = node_files(fleet_pki)
    ca_key = pki.ca_paths(fleet_pki)[1]
    cases = {
        f'tls_cert = "{tmp_path}/nope.crt"\ntls_key = "{f["tls_key"]}"\n': "file not found",
        f'tls_cert = "{f["tls_key"]}"\ntls_key = "{f["tls_key"]}"\n': "not a PEM certificate",
        f'tls_cert = "{f["tls_cert"]}"\ntls_key = "{ca_key}"\n': "is not the key of tls_cert",
        f'tls_cert = "{f["tls_cert"]}"\n': "tls_cert and tls_key go together",
        f'tls_client_ca = "{f["tls_cert"]}"\n': "tls_client_ca needs tls_cert",
        f'tls_cert = "{tmp_path}"\ntls_key = "{f["tls_key"]}"\n': "is a directory",
        'tls_cert = "relative.crt"\ntls_key = "/x.key"\n': "must be an absolute path",
        (
            f'tls_cert = "{f["tls_cert"]}"\ntls_key = "{f["tls_key"]}"\n'
            f'tls_client_ca = "{f["tls_key"]}"\n'
        ): "tls_client_ca",
    }
    for toml, expected in cases.items():
        assert expected in _serve_fails(tmp_path, toml), toml


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_is_one_line(fleet_pki: Path, tmp_path: Path) -> None:
    f = node_files(fleet_pki)
    Path(f["tls_key"]).chmod(0)
    toml = f'tls_cert = "{f["tls_cert"]}"\ntls_key = "{f["tls_key"]}"\n'
    assert "cannot read" in _serve_fails(tmp_path, toml)


def test_hostile_fleet_tls_keys_are_warnings_naming_the_field(tmp_path: Path) -> None:
    real = tmp_path / "ca.crt"
    real.write_text("x")
    text = f"""
[defaults]
ca_file = "{tmp_path}/missing.crt"

[[node]]
name = "a"
url = "https://a:1"
tls_fingerprint = "md5:abc"

[[node]]
name = "b"
url = "http://b:1"
ca_file = "{real}"

[[node]]
name = "c"
url = "https://c:1"
client_cert = "{real}"

[[node]]
name = "d"
url = "https://d:1"
ca_file = "{real}"
tls_fingerprint = "sha256:{"A" * 64}"

[[node]]
name = "ok"
url = "https://ok:1"
tls_fingerprint = "sha256:{"A" * 64}"
"""
    cfg = parse_fleet_config(text, tmp_path / "projects.toml")
    joined = "\n".join(cfg.warnings)
    assert "defaults.ca_file" in joined and "no such file" in joined
    assert "node[0] 'a': tls_fingerprint" in joined
    assert "need an https:// url" in joined
    assert "client_cert and client_key go together" in joined
    assert "not both" in joined
    assert [n.name for n in cfg.nodes] == ["ok"]
    assert cfg.nodes[0].tls_fingerprint == "sha256:" + "a" * 64


def test_detail_screen_shows_tls_and_warns_two_weeks_before_expiry() -> None:
    from rich.console import Console

    from fleettui.aggregator.state import NodeView
    from fleettui.views.tui.screens.detail import header

    now = 1_800_000_000.0
    fp = "sha256:" + "ab" * 32
    view = NodeView(name="n", url="https://n:1", tls_protocol="TLSv1.3", tls_fingerprint=fp)

    def drawn(days: float) -> str:
        view.tls_expires = now + days * 86400
        console = Console(width=200, record=True, color_system=None)
        console.print(header(view, now))
        return console.export_text()

    assert "TLSv1.3 · expires in 40 days · " + fp in drawn(40)
    assert "expires in 3 days" in drawn(3)
    plain = NodeView(name="p", url="http://p:1")
    console = Console(width=200, record=True, color_system=None)
    console.print(header(plain, now))
    assert "tls" not in console.export_text()


async def test_a_certificate_near_its_end_is_a_reason(tmp_path: Path) -> None:
    ca = trustme.CA()
    now = dt.datetime.now(dt.UTC)
    leaf = ca.issue_cert("127.0.0.1", not_after=now + dt.timedelta(days=5))
    crt, key, ca_pem = tmp_path / "a.crt", tmp_path / "a.key", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(crt))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_pem))
    async with tls_agent(tls_cert=str(crt), tls_key=str(key)) as port:
        node = NodeConfig(name="n", url=f"https://127.0.0.1:{port}", ca_file=str(ca_pem))
        await settle(node, NodeState.DEGRADED, "TLS certificate expires in 4 days")


async def test_handshakes_wait_their_turn_and_the_wait_is_not_the_nodes_timeout(
    fleet_pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fleet-wide handshake queue (transport/gate.py): with its one place held for longer
    than the timeout, a poll and a stream connect when it frees, and neither times out."""
    monkeypatch.setattr(HANDSHAKES, "limit", 1)
    ca = str(pki.ca_paths(fleet_pki)[0])
    async with tls_agent(**node_files(fleet_pki), tls_client_ca=ca) as port:
        url = f"https://127.0.0.1:{port}"
        async with NodeClient(url, None, 0.5, agg_policy(fleet_pki)) as client:
            got: list[tuple[str, float]] = []
            held = anyio.Event()

            async def poll() -> None:
                await held.wait()
                assert b'"ok":true' in await client.get("/healthz")
                got.append(("poll", anyio.current_time()))

            async def stream() -> None:
                await held.wait()
                s = await PushStream.open(
                    client.endpoint, "/api/v1/events", {}, token=None, timeout_s=0.5
                )
                s.close()
                got.append(("stream", anyio.current_time()))

            async with anyio.create_task_group() as tg:
                tg.start_soon(poll)
                tg.start_soon(stream)
                with anyio.CancelScope() as scope:
                    async with HANDSHAKES.turn(scope):
                        held.set()
                        freed = anyio.current_time() + 1.0
                        await anyio.sleep(1.0)
        assert sorted(what for what, _ in got) == ["poll", "stream"]
        assert all(at >= freed for _, at in got)


async def test_the_agent_sends_no_session_tickets(fleet_pki: Path) -> None:
    """A TLS 1.3 ticket keeps a 16 KB OpenSSL buffer on the client for as long as its
    connection lives (two per node at the aggregator; docs/performance.md, "TLS"): the agent
    sends none, so a connection that read a whole answer holds no ticket."""
    async with tls_agent(**node_files(fleet_pki)) as port:
        ctx = ssl_context(agg_policy(fleet_pki))
        async with await anyio.connect_tcp("127.0.0.1", port, ssl_context=ctx) as s:
            await s.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = bytearray()
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    answer += await s.receive()
            tls = s.extra(anyio.streams.tls.TLSAttribute.ssl_object)
            assert answer.startswith(b"HTTP/1.1 200 ") and b'"ok":true' in answer
            assert tls.version() == "TLSv1.3"  # where tickets come after the handshake
            assert tls.session is not None and not tls.session.has_ticket


async def test_events_longer_than_the_read_buffer_arrive_whole_over_tls(fleet_pki: Path) -> None:
    """The stream reads TLS in 4 KiB pieces; a snapshot event is longer than that (about
    7 KB simulated) and arrives whole, record after record."""
    async with tls_agent(**node_files(fleet_pki)) as port:
        ep = NodeClient(f"https://127.0.0.1:{port}", None, 5, agg_policy(fleet_pki)).endpoint
        s = await PushStream.open(ep, "/api/v1/events", {}, token=None, timeout_s=5)
        parser = SSEParser()
        snapshots: list[str] = []
        s.start(
            lambda chunk: snapshots.extend(
                e.data for e in parser.feed(chunk) if e.event == "snapshot"
            )
        )
        try:
            await wait_for(lambda: len(snapshots) >= 2, 8, what="two streamed snapshots")
        finally:
            s.close()
    assert all(len(d) > _SmallSSLProtocol.max_size for d in snapshots)  # read in pieces
    assert all(NodeSnapshot.model_validate_json(d).node for d in snapshots)


async def test_over_tls_the_stream_connects_after_the_first_poll(
    fleet_pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every handshake waits its turn at the fleet's gate, and a node is ONLINE once its poll
    answers: over TLS the stream waits for the first poll's outcome, so a fleet's first polls
    are not queued behind its streams. The first poll is made slow here; the stream follows it."""
    seen: list[str] = []
    poll, open_stream = NodeWorker.poll, PushStream.open

    async def slow_first_poll(self: NodeWorker, *args: object, **kwargs: object) -> bool:
        if "poll" not in seen:
            await anyio.sleep(0.5)
        answered = await poll(self, *args, **kwargs)
        seen.append("poll")
        return answered

    async def noted_open(*args: object, **kwargs: object) -> PushStream:
        seen.append("stream")
        return await open_stream(*args, **kwargs)

    monkeypatch.setattr(NodeWorker, "poll", slow_first_poll)
    monkeypatch.setattr(PushStream, "open", noted_open)
    async with tls_agent(**node_files(fleet_pki)) as port:
        node = NodeConfig(name="n", url=f"https://127.0.0.1:{port}", **operator(fleet_pki))
        async with FleetAggregator(FleetConfig(nodes=[node]), verify_chain=False) as agg:
            await wait_for(lambda: agg.node("n").stream_ok, 8, what="the event stream over TLS")
            assert agg.node("n").state is NodeState.ONLINE
    assert seen[:2] == ["poll", "stream"]


async def test_while_the_stream_serves_a_tls_node_its_poll_connection_is_closed(
    fleet_pki: Path,
) -> None:
    """A TLS connection holds 20-40 KB of OpenSSL state while idle; while the stream keeps a
    node fresh the poller stands down for 15-30 s, so over TLS it closes its kept connection
    and the stream is the node's one connection. The heartbeat poll connects again. A plain
    node keeps its idle connection (a few KB)."""
    async with tls_agent(**node_files(fleet_pki)) as port, tls_agent() as plain_port:
        nodes = [
            NodeConfig(name="tls", url=f"https://127.0.0.1:{port}", **operator(fleet_pki)),
            NodeConfig(name="plain", url=f"http://127.0.0.1:{plain_port}"),
        ]
        async with FleetAggregator(FleetConfig(nodes=nodes), verify_chain=False) as agg:
            tls, plain = agg._by_name["tls"], agg._by_name["plain"]
            await wait_for(lambda: tls.standing_down and plain.standing_down, 8, what="stand-down")
            assert tls.client is not None and tls.client._idle is None
            assert plain.client is not None and plain.client._idle is not None
            assert await tls.poll()  # the heartbeat: a fresh connection, checked as ever
            assert agg.node("tls").state is NodeState.ONLINE
            assert agg.node("tls").tls_fingerprint is not None


async def test_a_tls_poll_connection_closes_when_the_stream_comes_up_not_an_interval_later(
    fleet_pki: Path,
) -> None:
    """At start-up a thousand TLS nodes would each hold a poll connection and a new stream
    until the next poll interval; the stream's first event stands the poller down at once,
    so the poll connection closes as the stream takes over. The interval here is a minute:
    without that, the poller would still be asleep holding its connection."""
    async with tls_agent(**node_files(fleet_pki)) as port:
        nodes = [NodeConfig(name="tls", url=f"https://127.0.0.1:{port}", **operator(fleet_pki))]
        cfg = FleetConfig(defaults=Defaults(poll_interval_s=60), nodes=nodes)
        async with FleetAggregator(cfg, verify_chain=False) as agg:
            tls = agg._by_name["tls"]
            await wait_for(lambda: tls.standing_down, 8, what="stand-down as the stream is up")
            assert agg.node("tls").stream_ok
            assert tls.client is not None and tls.client._idle is None
            assert agg.node("tls").state is NodeState.ONLINE
