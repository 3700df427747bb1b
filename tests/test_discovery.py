"""Discovery: agents advertise over mDNS, `fleet discover` lists them, `fleet add --discovered`
adds one. The real thing runs inside network namespaces this test creates (a bridge, three
namespaces, real multicast), so nothing is sent on the machine's own networks."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import _STARTED, AgentProc
from fleettui.agent.advertise import (
    advertise_warning,
    announcements,
    loopback_only,
    served_fingerprint,
)
from fleettui.agent.config import ConfigError, load_agent_config
from fleettui.mdns import ASIAI_TYPE, SERVICE_TYPE, instance_name, read_advert, txt_record

FP = "sha256:" + "ab" * 32
SERVING = re.compile(r"serving (\S+) on (https?://\S+)")


def _read(props: dict[bytes, bytes | None], name: str = "gpu1", **kw):
    args = {"service_type": SERVICE_TYPE, "port": 8899, "addresses": ["10.0.0.5"], **kw}
    return read_advert(
        args["service_type"],
        f"{name}.{args['service_type']}",
        args["port"],
        args["addresses"],
        props,
    )


def _props(txt: dict[str, str]) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in txt.items()}


# --- the advert, as both sides read it --------------------------------------------------------


def test_an_agents_own_record_reads_back() -> None:
    plain = _read(_props(txt_record("0.1.0", None)))
    assert not isinstance(plain, str)
    assert (plain.url(), plain.tls, plain.fingerprint, plain.version) == (
        "http://10.0.0.5:8899",
        False,
        None,
        "0.1.0",
    )
    tls = _read(_props(txt_record("0.1.0", FP)), addresses=["fe80::1", "10.0.0.5"])
    assert not isinstance(tls, str)
    assert (tls.url(), tls.fingerprint) == ("https://10.0.0.5:8899", FP)  # IPv4 first
    v6 = _read(_props(txt_record("0.1.0", None)), addresses=["2001:db8::7"])
    assert not isinstance(v6, str) and v6.url() == "http://[2001:db8::7]:8899"


@pytest.mark.parametrize(
    ("name", "props", "kw", "reason"),
    [
        ("gpu\x1b[2J", {"txtvers": "1"}, {}, "not a usable node name"),
        ("x" * 64, {"txtvers": "1"}, {}, "not a usable node name"),
        ("-gpu", {"txtvers": "1"}, {}, "not a usable node name"),
        ("gpu1", {"txtvers": "1"}, {"port": None}, "no port"),
        ("gpu1", {"txtvers": "1"}, {"port": 0}, "no port"),
        ("gpu1", {"txtvers": "1"}, {"addresses": ["127.0.0.1", "::1", "0.0.0.0"]}, "address"),
        ("gpu1", {"txtvers": "1"}, {"addresses": ["not-an-ip", "224.0.0.251"]}, "address"),
        ("gpu1", {}, {}, "not a version 1 advert"),
        ("gpu1", {"txtvers": "2"}, {}, "not a version 1 advert"),
        ("gpu1", {"txtvers": "1", "tls": "1"}, {}, "fingerprint"),
        ("gpu1", {"txtvers": "1", "tls": "1", "fp": "sha256:xyz"}, {}, "fingerprint"),
        ("gpu1", {"txtvers": "1", "tls": "1", "fp": FP + "\x1b]52;c;"}, {}, "fingerprint"),
        ("gpu1", {"txtvers": "1", "tls": "1", "fp": FP + "0" * 200}, {}, "fingerprint"),
    ],
)
def test_a_hostile_advert_is_skipped_with_a_printable_reason(name, props, kw, reason) -> None:
    got = _read(_props(props), name, **kw)
    assert isinstance(got, str) and reason in got
    assert got.isprintable() and len(got) < 200


def test_odd_txt_values_are_dropped_not_shown() -> None:
    props = {
        b"txtvers": b"1",
        b"version": b"1.0\x1b[2J",
        b"tls": b"\xff\xfe",
        b"fp": None,
        b"junk": b"x" * 5000,
    }
    got = _read(props)
    assert not isinstance(got, str)
    assert (got.version, got.tls, got.fingerprint) == (None, False, None)
    asiai = _read({b"anything": b"\x00" * 300}, "mac-studio", service_type=ASIAI_TYPE)
    assert not isinstance(asiai, str) and (asiai.kind, asiai.version) == ("asiai", None)


def test_the_advertised_fingerprint_is_the_served_certificates(tmp_path: Path) -> None:
    from fleettui.pki import init_ca, issue_node

    init_ca(tmp_path / "pki")
    issued = issue_node(tmp_path / "pki", "gpu1")
    assert served_fingerprint(str(issued.cert)) == issued.fingerprint
    assert served_fingerprint(None) is None
    assert served_fingerprint(str(tmp_path / "missing.crt")) is None
    got = _read(_props(txt_record("0.1.0", issued.fingerprint)))
    assert not isinstance(got, str) and got.fingerprint == issued.fingerprint


def test_skipped_adverts_are_a_few_lines_and_a_count() -> None:
    from fleettui.aggregator.discover import MAX_SKIPPED_LINES, Discovery

    found = Discovery()
    for i in range(1000):
        found.skip(f"bad{i}: not a usable node name")
    assert len(found.skipped) == MAX_SKIPPED_LINES and found.skipped_more == 1000 - 20


def test_instance_names_from_host_names() -> None:
    assert instance_name("gpu1.lan") == "gpu1"
    assert instance_name("my box") == "my-box"
    assert instance_name("__") == "node"


# --- the agent's side -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("advertise = 1", "advertise"),
        ('advertise = "yes"', "advertise"),
        ('advertise_name = "gpu 1"', "advertise_name"),
        ('advertise_name = "-x"', "advertise_name"),
        (f'advertise_name = "{"a" * 64}"', "advertise_name"),
        ('advertise_name = "g\\u001b[2J"', "advertise_name"),
    ],
)
def test_agent_toml_refuses_hostile_advertise_values(tmp_path: Path, text: str, where) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=where):
        load_agent_config(path)


def test_a_loopback_agent_is_not_advertised_and_says_so(tmp_path: Path, agent_factory) -> None:
    assert loopback_only("127.0.0.1") and loopback_only("::1") and loopback_only("localhost")
    assert not loopback_only("10.1.2.3") and not loopback_only("0.0.0.0")
    assert advertise_warning("10.1.2.3") is None
    path = tmp_path / "agent.toml"
    path.write_text("advertise = true\nauto_detect = false\n")
    agent = agent_factory("--simulate", "--name", "lo1", "--config", str(path))
    agent.stop()
    assert "WARNING: advertise = true, but the agent listens on 127.0.0.1" in agent.stderr()
    assert "--host" in agent.stderr()


# --- for real, in network namespaces ----------------------------------------------------------


def _netns_reason() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "ip netns needs root (CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed"
    probe = f"ftprobe{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add is not permitted here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def link() -> Iterator[dict[str, str]]:
    """Three namespaces on one bridge: `op` (the operator, 10.X.0.1), `a` (.2) and `b` (.3)."""
    if (reason := _netns_reason()) is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the discovery test: {reason}")
        pytest.skip(reason)
    run = uuid.uuid4().hex[:8]
    names = {n: f"ft{run}{n}" for n in ("op", "a", "b")}
    made: list[str] = []
    try:
        for ns in names.values():
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", names["op"], "link", "add", "br0", "type", "bridge")
        _ip("-n", names["op"], "addr", "add", "10.77.0.1/24", "dev", "br0")
        _ip("-n", names["op"], "link", "set", "br0", "up")
        for i, side in enumerate(("a", "b"), start=2):
            peer = f"v{side}"
            _ip("-n", names[side], "link", "add", "eth0", "type", "veth", "peer", "name", peer,
                "netns", names["op"])  # fmt: skip
            _ip("-n", names["op"], "link", "set", peer, "master", "br0", "up")
            _ip("-n", names[side], "addr", "add", f"10.77.0.{i}/24", "dev", "eth0")
            _ip("-n", names[side], "link", "set", "eth0", "up")
        yield names
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _in(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def _agent(ns: str, name: str, host: str, config: Path, tmp: Path) -> AgentProc:
    err = tmp / f"agent-{name}.log"
    proc = subprocess.Popen(
        _in(
            ns,
            sys.executable,
            "-m",
            "fleettui",
            "agent",
            "serve",
            "--simulate",
            "--name",
            name,
            "--host",
            host,
            "--port",
            "0",
            "--config",
            str(config),
            "-v",
        ),
        stdout=subprocess.PIPE,
        stderr=err.open("w"),
        text=True,
    )
    agent = AgentProc(proc, stderr_path=err)
    _STARTED.append(agent)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 30
    while not agent.urls:
        assert time.monotonic() < deadline and proc.poll() is None, agent.stderr()
        try:
            if m := SERVING.search(lines.get(timeout=0.2)):
                agent.urls[m.group(1)] = m.group(2)
        except queue.Empty:
            pass
    return agent


FAKE_ADVERTISERS = textwrap.dedent(
    """
    import socket, sys, time
    from zeroconf import Zeroconf, ServiceInfo
    zc = Zeroconf(interfaces=["10.77.0.3"])
    def reg(kind, name, port, props):
        zc.register_service(ServiceInfo(kind, f"{name}.{kind}", port=port, properties=props,
            addresses=[socket.inet_aton("10.77.0.3")], server="fakes.local."))
    reg("_asiai-fleet._tcp.local.", "mac-studio", 8899, {"nickname": "studio"})
    reg("_fleettui._tcp.local.", "evil box\\u202e", 1, {"txtvers": "1"})
    reg("_fleettui._tcp.local.", "liar", 9000, {"txtvers": "1", "tls": "1", "fp": "x" * 200})
    print("registered", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.slow
def test_discover_lists_two_agents_and_an_asiai_node_in_namespaces(
    link: dict[str, str], tmp_path: Path, xdg_home: Path
) -> None:
    from fleettui.pki import init_ca, issue_node

    config = tmp_path / "agent.toml"
    config.write_text("advertise = true\nauto_detect = false\ninterval_s = 1.0\n")
    init_ca(tmp_path / "pki")
    cert = issue_node(tmp_path / "pki", "gpu-b", ["10.77.0.3"])
    tls_config = tmp_path / "agent-tls.toml"
    tls_config.write_text(
        config.read_text() + f'tls_cert = "{cert.cert}"\ntls_key = "{cert.key}"\n'
    )
    gpu_a = _agent(link["a"], "gpu-a", "10.77.0.2", config, tmp_path)
    gpu_b = _agent(link["b"], "gpu-b", "10.77.0.3", tls_config, tmp_path)
    fakes = subprocess.Popen(
        _in(link["b"], sys.executable, "-c", FAKE_ADVERTISERS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert fakes.stdout is not None and fakes.stderr is not None
        if fakes.stdout.readline() != "registered\n":
            fakes.kill()
            pytest.fail(f"the fake advertisers did not start: {fakes.stderr.read()[-2000:]}")
        projects = tmp_path / "projects.toml"
        projects.write_text('[[node]]\nname = "old"\nurl = "http://10.9.9.9:8899"\n')
        t0 = time.monotonic()
        out = subprocess.run(
            _in(
                link["op"],
                sys.executable,
                "-m",
                "fleettui",
                "discover",
                "--json",
                "--timeout",
                "4",
                "--config",
                str(projects),
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )
        took = time.monotonic() - t0
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        found = {d["name"]: d for d in doc["discovered"]}
        assert set(found) == {"gpu-a", "gpu-b", "mac-studio"}, doc
        assert found["gpu-a"]["url"] == gpu_a.url and found["gpu-b"]["url"] == gpu_b.url
        assert (found["gpu-a"]["kind"], found["gpu-a"]["version"]) == ("fleettui", "0.1.0")
        assert found["gpu-a"]["tls"] is False and found["gpu-a"]["fingerprint"] is None
        assert found["gpu-b"]["url"].startswith("https://")
        assert (found["gpu-b"]["tls"], found["gpu-b"]["fingerprint"]) == (True, cert.fingerprint)
        assert (found["mac-studio"]["kind"], found["mac-studio"]["url"]) == (
            "asiai",
            "http://10.77.0.3:8899",
        )
        skipped = " | ".join(doc["skipped"])
        assert "not a usable node name" in skipped and "liar: TLS without" in skipped
        assert "\u202e" not in out.stdout and took < 4 + 10

        added = subprocess.run(
            _in(
                link["op"],
                sys.executable,
                "-m",
                "fleettui",
                "add",
                "gpu-b",
                "--discovered",
                "--timeout",
                "3",
                "--config",
                str(projects),
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert added.returncode == 0, added.stderr
        assert f'url = "{gpu_b.url}"' in projects.read_text()
        assert f'tls_fingerprint = "{cert.fingerprint}"' in projects.read_text()
        again = subprocess.run(
            _in(
                link["op"],
                sys.executable,
                "-m",
                "fleettui",
                "discover",
                "--json",
                "--timeout",
                "3",
                "--config",
                str(projects),
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )
        doc = json.loads(again.stdout)
        assert {d["name"] for d in doc["discovered"]} == {"gpu-a", "mac-studio"}
        assert doc["in_config"] == 1
    finally:
        fakes.kill()
        fakes.wait()
        gpu_a.stop()
        gpu_b.stop()
    assert "advertise: gpu-a" in gpu_a.stderr()


def test_announcements_name_the_bound_address() -> None:
    import socket

    from fleettui.agent.config import AgentConfig
    from fleettui.agent.node import NodeAgent

    agent = NodeAgent.simulate(AgentConfig(), "sim-1")
    with socket.socket() as lo, socket.socket() as any_:
        lo.bind(("127.0.0.1", 0))
        any_.bind(("0.0.0.0", 0))
        assert announcements([agent], [lo], ()) == []
        [tls] = announcements([agent], [any_], ("192.168.1.4",), FP)
        assert (tls.txt["tls"], tls.txt["fp"]) == ("1", FP)
        [item] = announcements([agent], [any_], ("192.168.1.4",))
        assert (item.name, item.addresses, item.port) == (
            "sim-1",
            ("192.168.1.4",),
            any_.getsockname()[1],
        )


FLOOD = textwrap.dedent(
    """
    import asyncio, socket, sys
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
    async def main():
        zc = AsyncZeroconf(interfaces=["10.77.0.3"])
        infos = [
            AsyncServiceInfo("_fleettui._tcp.local.", f"flood{i}._fleettui._tcp.local.",
                port=1000 + i, properties={"txtvers": "1", "version": "x" * 200},
                addresses=[socket.inet_aton("10.77.0.3")], server="flood.local.")
            for i in range(int(sys.argv[1]))
        ]
        done = await asyncio.gather(
            *[zc.async_register_service(i, cooperating_responders=True) for i in infos]
        )
        await asyncio.gather(*done)
        print("registered", flush=True)
        await asyncio.sleep(60)
    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_a_flood_of_adverts_is_capped(link: dict[str, str], tmp_path: Path) -> None:
    from fleettui.mdns import MAX_ADVERTS

    flood = subprocess.Popen(
        _in(link["b"], sys.executable, "-c", FLOOD, str(MAX_ADVERTS + 44)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert flood.stdout is not None and flood.stderr is not None
        if flood.stdout.readline() != "registered\n":
            flood.kill()
            pytest.fail(f"the flood did not start: {flood.stderr.read()[-2000:]}")
        projects = tmp_path / "projects.toml"
        projects.write_text("")
        out = subprocess.run(
            _in(
                link["op"],
                sys.executable,
                "-m",
                "fleettui",
                "discover",
                "--timeout",
                "4",
                "--config",
                str(projects),
            ),
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "COLUMNS": "200"},
        )
    finally:
        flood.kill()
        flood.wait()
    assert out.returncode == 0, out.stderr
    assert f"{MAX_ADVERTS} not in" in out.stdout
    assert f"more than {MAX_ADVERTS} services advertise here" in out.stdout
    assert "x" * 33 not in out.stdout  # the version was over its bound: not shown
