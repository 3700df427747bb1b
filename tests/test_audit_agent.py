"""The audit promise against the real agent process: kill -9, damaged logs, sealing, rotation.

The action command is a recorder that, when it runs, notes the seq and status of the newest line
of audit.jsonl: the write-ahead rule says that line is its own `started` entry, already on disk.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import AgentProc, start_agent
from fleettui.agent.audit import HEAD_FILE, chain_files, verify_chain
from fleettui.agent.tokens import create_token
from fleettui.aggregator.chain import check_link
from fleettui.wire import GENESIS_HASH, AuditEntry, AuditPage, audit_hash, canonical_json

RUN_LOGGER = """\
import json, pathlib, sys, time
log = pathlib.Path({audit!r})
last = log.read_bytes().splitlines()[-1]
d = json.loads(last)
with open({runs!r}, "a") as fh:
    fh.write(json.dumps([d["seq"], d["status"], d["action"]]) + "\\n")
time.sleep({sleep})
"""


class Node:
    """One simulated node `k` whose restart/stop commands log each run."""

    def __init__(self, tmp: Path, *, sleep: float = 0.0, extra: str = "") -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.audit = self.data / "nodes" / "k" / "audit.jsonl"
        self.runs = tmp / "runs.log"
        script = tmp / "run_logger.py"
        body = RUN_LOGGER.format(audit=str(self.audit), runs=str(self.runs), sleep=sleep)
        script.write_text(body)
        argv = json.dumps([sys.executable, str(script)])
        self.config = tmp / "agent.toml"
        self.config.write_text(
            f"interval_s = 0.5\nrate_limit_per_min = 100000\n"
            f"data_dir = {json.dumps(str(self.data))}\n{extra}\n"
            f"[engines.ollama.commands]\nrestart = {argv}\nstop = {argv}\n"
        )
        self.secret = create_token(tmp / "tokens.json", "audit-test")[1]  # beside agent.toml

    def start(self) -> AgentProc:
        return start_agent("--simulate", "--name", "k", "--config", str(self.config), tmp=self.tmp)

    def act(self, url: str, action: str = "restart", timeout: float = 10) -> httpx.Response:
        return httpx.post(
            f"{url}/api/v1/actions",
            json={"action": action, "engine": "ollama"},
            headers={"Authorization": f"Bearer {self.secret}"},
            timeout=timeout,
        )

    def run_log(self) -> list[list]:
        if not self.runs.exists():
            return []
        return [json.loads(x) for x in self.runs.read_text().splitlines()]

    def entries(self) -> list[dict]:
        return [
            json.loads(line)
            for f in chain_files(self.audit)
            for line in f.read_bytes().splitlines()
        ]


@pytest.fixture
def node(tmp_path: Path) -> Node:
    """A node whose commands return at once."""
    return Node(tmp_path)


def test_kill_9_twenty_times_during_actions_leaves_no_action_unrecorded(tmp_path: Path) -> None:
    n = Node(tmp_path, sleep=0.05, extra="audit_rotate_bytes = 16384")
    rng = random.Random(13)
    for _ in range(20):
        agent = n.start()
        res = verify_chain(n.audit) if n.audit.exists() else None
        assert res is None or (res.ok and res.open_intents == []), res  # verified after restart
        stop = threading.Event()

        def loop(url: str = agent.url, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                try:
                    n.act(url, rng.choice(["restart", "stop"]), timeout=5)
                except httpx.HTTPError:
                    return

        t = threading.Thread(target=loop)
        t.start()
        time.sleep(rng.uniform(0.15, 0.4))
        agent.proc.kill()  # SIGKILL, mid-action most of the time
        agent.proc.wait()
        stop.set()
        t.join()
    time.sleep(0.2)  # commands orphaned by the last kill finish their run log
    agent = n.start()  # closes what the last kill interrupted
    agent.stop()
    res = verify_chain(n.audit)
    assert res.ok and res.open_intents == [], res
    entries = n.entries()
    by_seq = {d["seq"]: d for d in entries}
    runs = n.run_log()
    assert len(runs) >= 20
    for seq, status, action in runs:  # every run had its intent on disk before it started
        assert status == "started" and by_seq[seq]["action"] == action, (seq, status)
    started = {d["seq"] for d in entries if d["status"] == "started"}
    closed = {d["ref"]: d["status"] for d in entries if d.get("ref") is not None}
    assert started == set(closed), started ^ set(closed)  # each intent has exactly one outcome
    assert set(closed.values()) <= {"ok", "interrupted"}
    assert "interrupted" in closed.values()  # the kills did land mid-action
    assert {r[0] for r in runs} <= started
    assert len(chain_files(n.audit)) > 1  # and rotation happened along the way


def _refused(n: Node, url: str) -> str:
    before = len(n.run_log())
    r = n.act(url)
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["error"] == "audit log unusable; actions refused" and body["detail"]
    assert len(n.run_log()) == before  # nothing ran
    return body["detail"]


def test_last_line_deleted_while_running_refuses_at_once_until_sealed(node: Node) -> None:
    agent = node.start()
    try:
        assert node.act(agent.url).status_code == 200
        lines = node.audit.read_bytes().splitlines(keepends=True)
        with node.audit.open("r+b") as fh:  # cut in place: same inode, shorter
            fh.truncate(sum(map(len, lines[:-1])))
        detail = _refused(node, agent.url)  # the very next request: a re-check, not a flag
        assert "shorter" in detail and "seal" in detail
        assert _refused(node, agent.url) == detail  # and every one after it
        deadline = time.monotonic() + 5  # reads still work; the next tick names the problem
        while time.monotonic() < deadline:
            snap = httpx.get(f"{agent.url}/api/v1/snapshot").json()
            if any(p.startswith("audit log:") for p in snap["problems"]):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no audit problem in the snapshot: {snap['problems']}")
        page = AuditPage.model_validate(httpx.get(f"{agent.url}/api/v1/audit").json())
        assert [e.seq for e in page.entries] == [1]
        r = node_cli(node, "seal", "--reason", "line 2 lost; see ticket 7")
        assert r.returncode == 0, r.stderr
        ok = node.act(agent.url)  # the operator acted: the next write re-verifies and goes on
        assert ok.status_code == 200 and ok.json()["ok"], ok.text
        assert len(node.run_log()) == 2
        first = node.entries()[0]
        assert first["status"] == "sealed" and first["args"]["old_head_seq"] == 2
        assert node_cli(node, "verify").returncode == 0
    finally:
        agent.stop()


def _edit_middle(n: Node) -> None:
    lines = n.audit.read_bytes().splitlines(keepends=True)
    d = json.loads(lines[1])
    d["source_ip"] = "10.6.6.6"  # hash left as it was
    lines[1] = canonical_json(d) + b"\n"
    n.audit.write_bytes(b"".join(lines))


def _rewrite(n: Node) -> None:
    """A forged chain: valid links from genesis, fewer and different entries."""
    prev, out = GENESIS_HASH, []
    for d in n.entries()[:2]:
        d.update(prev_hash=prev, source_ip="10.6.6.6")
        d["hash"] = prev = audit_hash(d)
        out.append(canonical_json(d) + b"\n")
    n.audit.write_bytes(b"".join(out))


@pytest.mark.parametrize("damage", [_edit_middle, _rewrite], ids=["middle-edited", "rewritten"])
def test_damage_while_stopped_refuses_writes_at_start(node: Node, damage) -> None:
    agent = node.start()
    for _ in range(2):
        assert node.act(agent.url).status_code == 200
    agent.stop()
    damage(node)
    evidence = node.audit.read_bytes()
    agent = node.start()
    try:
        detail = _refused(node, agent.url)
        assert ("seq 2" in detail) if damage is _edit_middle else (HEAD_FILE in detail)
        assert _refused(node, agent.url) == detail
        assert node.audit.read_bytes() == evidence  # nothing written over the evidence
        assert node_cli(node, "verify").returncode == 1
    finally:
        agent.stop()
    assert node_cli(node, "seal", "--reason", "tampering investigated").returncode == 0
    agent = node.start()
    try:
        assert node.act(agent.url).status_code == 200
    finally:
        agent.stop()


def test_huge_seq_in_the_log_gives_no_500_and_no_crash(node: Node) -> None:
    agent = node.start()
    assert node.act(agent.url).status_code == 200
    agent.stop()
    with node.audit.open("ab") as fh:
        fh.write(b'{"seq":' + b"7" * 5000 + b',"status":"ok"}\n')
    agent = node.start()
    try:
        r = httpx.get(f"{agent.url}/api/v1/audit", params={"after": 0})
        assert r.status_code == 200 and [e["seq"] for e in r.json()["entries"]] == [1, 2]
        r = httpx.get(f"{agent.url}/api/v1/audit", params={"after": "9" * 5000})
        assert r.status_code == 400 and "after" in r.json()["error"]
        assert "number too long" in _refused(node, agent.url)
    finally:
        agent.stop()
    v = node_cli(node, "verify")
    assert v.returncode == 1 and "BROKEN at seq 3" in v.stdout and not v.stderr
    assert "Traceback" not in agent.stderr()


def test_rotation_through_the_agent_pages_as_one_chain(tmp_path: Path) -> None:
    n = Node(tmp_path, extra="audit_rotate_bytes = 4096")
    agent = n.start()
    try:
        for _ in range(15):
            assert n.act(agent.url).status_code == 200
        assert len(chain_files(n.audit)) >= 3
        agent.stop()
        agent = n.start()  # a restart verifies every file and continues the chain
        assert n.act(agent.url).status_code == 200
        seq, h, after = 0, GENESIS_HASH, 0
        while True:  # the aggregator's own link check, page by page across file boundaries
            body = httpx.get(f"{agent.url}/api/v1/audit", params={"after": after, "limit": 7})
            obj = body.json()
            for raw in obj["entries"]:
                check_link(raw, AuditEntry.model_validate(raw), seq, h)
                seq, h = raw["seq"], raw["hash"]
            if not obj["entries"]:
                break
            after = seq
        assert seq == 32 and obj["head"] == {"seq": 32, "head_hash": h}
    finally:
        agent.stop()


def node_cli(n: Node, *args: str):  # type: ignore[no-untyped-def]
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "fleettui", "agent", "audit", *args, "--path", str(n.audit)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_start_up_removes_the_temp_files_a_kill_9_left(node: Node) -> None:
    import os

    agent = node.start()
    assert node.act(agent.url).status_code == 200
    agent.proc.kill()
    agent.proc.wait()
    d = node.audit.parent
    stale = [d / ".audit.head.json.k9k9k9k9", node.tmp / ".tokens.json.k9k9k9k9.tmp"]
    young = node.tmp / ".tokens.json.young123.tmp"  # another process may be writing it now
    for p in [*stale, young]:
        p.write_text('{"partial": ')
    os.utime(stale[1], (time.time() - 3600,) * 2)
    agent = node.start()
    try:
        assert [p.exists() for p in [*stale, young]] == [False, False, True]
        assert node.act(agent.url).status_code == 200  # and the chain goes on
    finally:
        agent.stop()
    assert verify_chain(node.audit).ok


def _snapshot_problems(url: str) -> list[str]:
    return httpx.get(f"{url}/api/v1/snapshot", timeout=5).json()["problems"]


def test_reads_are_served_while_the_chain_is_verified_and_writes_wait(node: Node) -> None:
    """The verification holds the audit log's flock; this test holds it first (as a `fleet agent
    audit seal` in another process would), so the agent stays verifying as long as it likes."""
    agent = node.start()
    assert node.act(agent.url).status_code == 200  # the log exists: seq 1 started, 2 ok
    agent.stop()
    fd = os.open(node.audit.parent / ".audit.jsonl.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        stopped = node.start()  # a stop while it waits is prompt and clean
        t0 = time.monotonic()
        stopped.stop()
        assert stopped.proc.returncode == 0 and time.monotonic() - t0 < 5, stopped.stderr()
        agent = node.start()
        snap = httpx.get(f"{agent.url}/api/v1/snapshot", timeout=5).json()
        assert snap["audit"]["seq"] == 2  # the head on disk, not 0 (that would look truncated)
        assert any(p.startswith("audit chain being verified: waiting") for p in snap["problems"])
        assert httpx.get(f"{agent.url}/healthz", timeout=5).status_code == 200
        page = httpx.get(f"{agent.url}/api/v1/audit", timeout=5).json()  # from the files
        assert [e["seq"] for e in page["entries"]] == [1, 2] and page["head"]["seq"] == 2
        r = node.act(agent.url)
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
        assert r.json()["error"].startswith("audit chain being verified: waiting")
        bad = httpx.post(
            f"{agent.url}/api/v1/actions",
            json={"action": "restart", "engine": "ollama"},
            headers={"Authorization": "Bearer wrong"},
            timeout=5,
        )
        assert bad.status_code == 401  # every other answer is as usual
        assert len(node.run_log()) == 1 and len(node.entries()) == 2  # nothing ran or was written
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    try:
        deadline = time.monotonic() + 10
        while any(p.startswith("audit chain being") for p in _snapshot_problems(agent.url)):
            assert time.monotonic() < deadline, "writes never opened"
            time.sleep(0.05)
        assert node.act(agent.url).status_code == 200
    finally:
        agent.stop()
    entries = node.entries()
    assert [(e["status"], e["http_status"]) for e in entries[2:]] == [
        ("denied", 503),  # the refusals held during verification, recorded once it verified
        ("denied", 401),
        ("started", 200),
        ("ok", 200),
    ]
    assert verify_chain(node.audit).ok
