"""The agent under attack and abuse, as real processes on loopback: DNS rebinding, cross-site
writes, failed-auth floods, held partial requests, descriptor exhaustion, and clean stops."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import start_agent
from test_agent_write import JSON, audit_entries, make_env, post


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_rebinding_and_cross_site_writes_are_refused(tmp_path: Path) -> None:
    e = make_env(tmp_path, 'allowed_hosts = ["fleet.example.net", "*.tailnet.example"]')
    agent = start_agent(
        "--simulate", "--name", "rb", "--config", str(e.config), tmp=tmp_path, env=e.env
    )
    try:
        secret = e.token()
        port = _port(agent.url)
        url = agent.url
        body = json.dumps({"action": "restart", "engine": "ollama"})
        auth = {"Authorization": f"Bearer {secret}"}
        # The rebinding request as a browser sends it: foreign Host, its Origin, text/plain.
        r = httpx.post(
            f"{url}/api/v1/actions",
            content=body,
            headers={
                **auth,
                "Host": f"evil.example:{port}",
                "Origin": f"http://evil.example:{port}",
                "Content-Type": "text/plain;charset=UTF-8",
            },
        )
        assert r.status_code == 421 and "rebinding" in r.json()["error"], r.text
        # Each defence holds on its own.
        for headers, code in (
            ({"Host": f"evil.example:{port}", **JSON}, 421),
            ({"Origin": f"http://evil.example:{port}", **JSON}, 403),
            ({"Origin": f"http://127.0.0.1:{port + 1}", **JSON}, 403),  # another local page
            ({"Origin": "null", **JSON}, 403),
            ({"Content-Type": "text/plain"}, 415),
            ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
            ({}, 415),  # fetch() with a Blob body sends no Content-Type
        ):
            r = httpx.post(f"{url}/api/v1/actions", content=body, headers={**auth, **headers})
            assert r.status_code == code and r.json()["error"], (headers, r.text)
        assert e.calls_made() == []  # none of them ran
        # Reads refuse a foreign Host too; the node's own names and allowed_hosts work.
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
            r = httpx.get(f"{url}/api/v1/snapshot", headers={"Host": host})
            assert r.status_code == 421 and r.json()["detail"]["fix"], host
        for host in (
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            f"[::1]:{port}",
            f"{socket.gethostname()}:{port}",
            "fleet.example.net",
            "node7.tailnet.example",
            "LOCALHOST.",
        ):
            assert httpx.get(f"{url}/api/v1/snapshot", headers={"Host": host}).status_code == 200
        # A same-origin write with the right type runs.
        r = httpx.post(
            f"{url}/api/v1/actions",
            content=body,
            headers={**auth, **JSON, "Origin": f"http://127.0.0.1:{port}"},
        )
        assert r.status_code == 200 and r.json()["ok"], r.text
        assert len(e.calls_made()) == 1
        # The refused writes are on the record (aggregated: one address, one window).
        denied = [x for x in audit_entries(url) if x.status == "denied"]
        assert denied[0].http_status == 421 and "rebinding" in (denied[0].error or "")
    finally:
        agent.stop()
    entries = [json.loads(x) for x in (e.data / "nodes" / "rb" / "audit.jsonl").open()]
    agg = [x for x in entries if "refusals" in x["args"]]
    assert len(agg) == 1 and agg[0]["args"]["refusals"] == 7  # written at shutdown
    assert agg[0]["args"]["http_status"] == {"403": 3, "415": 3, "421": 1}
    v = e.fleet("agent", "audit", "verify", "--path", str(e.data / "nodes" / "rb"))
    assert v.returncode == 0, v.stdout


def test_failed_auth_flood_is_throttled_and_bounded_in_the_log(tmp_path: Path) -> None:
    e = make_env(tmp_path)  # defaults: 10 failures per minute per address, 60 s windows
    agent = start_agent(
        "--simulate", "--name", "fl", "--config", str(e.config), tmp=tmp_path, env=e.env
    )
    log = e.data / "nodes" / "fl" / "audit.jsonl"
    try:
        good = e.token()
        body = {"action": "restart", "engine": "ollama"}
        with httpx.Client(timeout=10, headers=JSON) as c:
            codes = []
            for i in range(300):
                headers = {"Authorization": "Bearer tok_0123abcd.wrong"} if i % 2 else {}
                codes.append(c.post(f"{agent.url}/api/v1/actions", json=body, headers=headers))
        statuses = [r.status_code for r in codes]
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429] * 290
        last = codes[-1]
        assert 1 <= int(last.headers["Retry-After"]) <= 60 and last.json()["detail"]
        assert _lines(log) == 1  # the first refusal, in full; the rest wait for the window
        # A valid token from the flooded address is not locked out.
        assert post(agent.url, body, good).status_code == 200
        # Reads that need no token are unaffected.
        assert httpx.get(f"{agent.url}/api/v1/snapshot").status_code == 200
    finally:
        agent.stop()
    entries = [json.loads(x) for x in log.open()]
    assert len(entries) == 4  # first refusal, the action (started, ok), the aggregate at stop
    agg = entries[-1]
    assert agg["args"]["refusals"] == 299
    assert agg["args"]["http_status"] == {"401": 9, "429": 290}
    v = e.fleet("agent", "audit", "verify", "--path", str(log))
    assert v.returncode == 0, v.stdout


def test_held_partial_requests_are_closed_and_the_agent_keeps_answering(tmp_path: Path) -> None:
    e = make_env(tmp_path, "header_timeout_s = 1.5")
    agent = start_agent(
        "--simulate", "--name", "sl", "--config", str(e.config), tmp=tmp_path, env=e.env
    )
    port = _port(agent.url)
    held: list[socket.socket] = []
    opened: list[float] = []
    try:
        for i in range(500):
            opened.append(time.monotonic())
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 3 == 0:
                s.sendall(b"GET /api/v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            elif i % 3 == 1:
                s.sendall(b"\r\n")  # blank lines only: never begins a request
            held.append(s)  # and the rest send nothing at all
        latencies = []
        t0 = time.monotonic()
        with httpx.Client(timeout=5) as c:
            while time.monotonic() - t0 < 1.0:
                t = time.perf_counter()
                assert c.get(f"{agent.url}/api/v1/snapshot").status_code == 200
                latencies.append(time.perf_counter() - t)
        assert latencies
        took = []
        for s, t_open in zip(held, opened, strict=True):
            s.settimeout(max(0.1, t_open + 6 - time.monotonic()))
            data = b""
            try:
                while chunk := s.recv(4096):
                    data += chunk
            except TimeoutError:
                pytest.fail("a partial request was still open after 6 s")
            except ConnectionResetError:
                pass
            took.append(time.monotonic() - t_open)
            assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data[:80]
        assert max(took) < 1.5 + 2.5  # header timeout plus slack for a busy machine
        assert httpx.get(f"{agent.url}/api/v1/snapshot").status_code == 200
        assert "Traceback" not in agent.stderr()
    finally:
        for s in held:
            s.close()
        agent.stop()


def test_event_streams_are_bounded_per_node(tmp_path: Path) -> None:
    from fleettui.agent.server import MAX_STREAMS

    e = make_env(tmp_path)
    agent = start_agent(
        "--simulate", "--name", "ev", "--config", str(e.config), tmp=tmp_path, env=e.env
    )
    streams: list[socket.socket] = []
    try:
        port = _port(agent.url)
        req = b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for _ in range(MAX_STREAMS):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(req)
            got = b""
            while b"event: snapshot" not in got:
                got += s.recv(65536)
            streams.append(s)
        r = httpx.get(f"{agent.url}/api/v1/events", timeout=5)
        assert r.status_code == 429 and r.json()["detail"]["max"] == MAX_STREAMS
        assert r.headers["Retry-After"] == "5"
        assert httpx.get(f"{agent.url}/api/v1/snapshot").status_code == 200  # reads go on
        streams.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the agent notices the closed stream at its next write (a tick)
            with httpx.stream("GET", f"{agent.url}/api/v1/events", timeout=5) as r:
                if r.status_code == 200:
                    break
            assert time.monotonic() < deadline, "a freed stream slot was not reused"
            time.sleep(0.3)
    finally:
        for s in streams:
            s.close()
        agent.stop()


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))


def test_a_low_descriptor_limit_warns_and_caps_connections_without_log_floods(
    tmp_path: Path,
) -> None:
    e = make_env(tmp_path)
    e.env["FLEET_AGENT_CONFIG"] = str(e.config)
    err = tmp_path / "stderr.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleettui", "agent", "serve", "--port", "0", "--simulate"],
        stdout=subprocess.PIPE,
        stderr=err.open("w"),
        text=True,
        env=e.env,
        preexec_fn=_low_nofile,
    )
    held: list[socket.socket] = []
    t0 = time.monotonic()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" on ", 1)[1].strip()
        for _ in range(400):  # twice the descriptor limit
            try:
                held.append(socket.create_connection(("127.0.0.1", _port(url)), timeout=5))
            except OSError:
                break
        open_ = list(held)
        for s in open_:
            s.setblocking(False)
        deadline = time.monotonic() + 8  # asyncio retries a failed accept after a second
        while len(open_) > 16 + 5 and time.monotonic() < deadline:
            time.sleep(0.2)
            still = []
            for s in open_:
                try:
                    if s.recv(1) != b"":
                        still.append(s)
                except BlockingIOError:
                    still.append(s)
                except ConnectionResetError:
                    pass
            open_ = still
        assert len(open_) <= 16 + 5, len(open_)  # over the cap (16 at this limit): closed
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # served again once the cap has room
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("agent did not serve again")
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
    seconds = time.monotonic() - t0
    text = err.read_text()
    assert rc == 0
    assert "open-file limit is 200" in text and "at most 16 connections" in text
    assert "Traceback" not in text and "out of system resource" not in text
    for line in ("connection cap (16) reached", "accept failed"):  # at most once per second
        assert text.count(line) <= seconds + 1, text


def _fake_rapl(root: Path) -> Path:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    counter = zone / "energy_uj"
    counter.write_text("0\n")
    return counter


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_the_ledger_and_exit_0(tmp_path: Path, sig: int) -> None:
    counter = _fake_rapl(tmp_path / "powercap")
    state = tmp_path / "state"
    e = make_env(
        tmp_path,
        f"auto_detect = false\nrapl_root = {json.dumps(str(tmp_path / 'powercap'))}\n"
        f"state_dir = {json.dumps(str(state))}\n",
        commands="",
    )
    stop = threading.Event()

    def burn() -> None:  # a package drawing ~50 W: 50 J per second on the counter
        uj, t0 = 0, time.monotonic()
        while not stop.wait(0.05):
            uj = int((time.monotonic() - t0) * 50e6)
            tmp = counter.with_suffix(".tmp")
            tmp.write_text(f"{uj}\n")
            os.replace(tmp, counter)

    th = threading.Thread(target=burn, daemon=True)
    th.start()
    agent = start_agent("--config", str(e.config), "--interval", "0.2", tmp=tmp_path, env=e.env)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            snap = httpx.get(f"{agent.url}/api/v1/snapshot").json()
            if snap["power"]["energy_j"] > 20:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"no energy integrated: {snap['power']}")
        live_wh = snap["power"]["energy_j"] / 3600
        # energy.json was written at the first tick and is next due in a minute
        agent.proc.send_signal(sig)
        rc = agent.proc.wait(10)
    finally:
        stop.set()
        agent.stop()
    assert rc == 0, agent.stderr()
    saved = json.loads((state / "energy.json").read_text())
    # what the agent had integrated by then (the first tick's save held almost nothing); the wire
    # rounds energy_j, hence the margin
    assert sum(d["wh"] for d in saved["days"].values()) >= live_wh * 0.99
    assert saved["handover"]  # only the shutdown save hands the counters on
    assert "Traceback" not in agent.stderr()
