"""Audit pins that last, against a live agent: the tamper matrix, and `fleet audit forget`.

One `fleet agent serve --simulate` process serves 14 nodes, each with a real audit log written
by real authenticated actions. Seven are tampered with under a running aggregator (which must
see each BROKEN within its documented bound), seven only ever meet fresh `fleet status` runs
(which must find each on their own, from the pins an earlier run left). The full rewrite
recomputes every hash and `audit.head.json` and restarts the agent on the same ports. Those logs
are one page, which a fresh `fleet status` re-reads every run; what it guarantees on a longer
log (a share of the pages a run, every page within a few runs) is the last test.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from actionfleet import write_action_agent_config
from conftest import AgentProc, start_agent
from fakes import make_chain, rehash_from, wait_for
from fleettui.aggregator.aggregator import FleetAggregator
from fleettui.aggregator.chain import PAGE, SPOT_PAGES, ChainVerifier
from fleettui.aggregator.pins import PinStore, node_key
from fleettui.aggregator.state import ChainStatus
from fleettui.config import Defaults, FleetConfig, NodeConfig
from fleettui.wire import canonical_json

pytestmark = pytest.mark.anyio

CASES = ("edit", "delete", "insert", "swap", "truncate", "huge_seq", "rewrite")
# what each tampering looks like to the checker: the seq and why
WHY = {
    "edit": r"^seq 3: hash mismatch \(entry altered\)",
    "delete": r"^seq 3: missing or out of order \(found seq 4\)",
    "insert": r"^seq 2: sequence went backwards \(after seq 2\)",
    "swap": r"^seq 3: missing or out of order \(found seq 4\)",
    "truncate": r"^seq \d+: verified entry is gone|^head seq \d+ is behind verified seq \d+",
    "huge_seq": r"^seq 3: (the entry served there is not an audit entry \(seq: an integer of "
    r"5000 digits\)|missing or out of order)",
    "rewrite": r"^seq \d+: (head hash differs|differs from the verified entry)",
}
# the running aggregator's knobs: bound = chain_rescan_s (+ one request); see docs/aggregator.md
FAST = {"chain_recheck_s": 0.2, "chain_rescan_s": 1.0}


def free_ports(n: int) -> int:
    """A base port with n free consecutive ports after it, below the ephemeral range (32768
    on): no outgoing connection or `--port 0` agent of a busy suite takes one of them between
    here and the restart on the same ports."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32768 - n)
        socks = []
        try:
            for p in range(base, base + n):
                sk = socket.socket()
                socks.append(sk)
                # as the agent binds: a port in TIME_WAIT is free
                sk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sk.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for sk in socks:
                sk.close()
    raise RuntimeError("no run of free ports")


def tamper(path: Path, case: str) -> None:
    lines = path.read_bytes().splitlines()
    entries = [json.loads(x) for x in lines]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    out: list[bytes] | None = None
    if case == "edit":
        entries[2]["error"] = "nothing to see"  # hash left alone
    elif case == "delete":
        del entries[2]
    elif case == "insert":
        entries.insert(2, dict(entries[1]))
    elif case == "swap":
        entries[2], entries[3] = entries[3], entries[2]
    elif case == "truncate":
        del entries[-2:]
    elif case == "huge_seq":
        out = [canonical_json(e) for e in entries]
        out[2] = out[2].replace(b'"seq":3', b'"seq":' + b"9" * 5000)
    elif case == "rewrite":  # internally valid again, and the head file agrees
        entries[2]["error"] = "rewritten"
        rehash_from(entries, 2)
        head = {"seq": entries[-1]["seq"], "hash": entries[-1]["hash"], "ts": time.time()}
        (path.parent / "audit.head.json").write_text(json.dumps(head))
    if out is None:
        out = [canonical_json(e) for e in entries]
    path.write_bytes(b"".join(x + b"\n" for x in out))


def fleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleettui", *args],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        timeout=60,
    )


def status_audit(env: dict[str, str]) -> dict[str, dict]:
    r = fleet(env, "status", "--json", "--timeout", "20")
    assert r.returncode in (0, 1), r.stderr
    return {n["name"]: n["audit"] for n in json.loads(r.stdout)["nodes"]}


class LiveFleet:
    def __init__(self, tmp: Path, home: Path) -> None:
        self.tmp, self.home = tmp, home
        self.cfg, _, self.secret = write_action_agent_config(tmp)
        self.port = free_ports(len(CASES) * 2)
        self.agent: AgentProc | None = None
        names = [f"act-{i:03d}" for i in range(len(CASES) * 2)]
        self.status_nodes = dict(zip(CASES, names[: len(CASES)], strict=True))
        self.live_nodes = dict(zip(CASES, names[len(CASES) :], strict=True))
        self.urls: dict[str, str] = {}
        self.entries = 0
        self.fleet_toml = tmp / "fleet.toml"
        self.env = {**os.environ, "FLEET_CONFIG": str(self.fleet_toml)}

    def start(self) -> None:
        self.agent = start_agent(
            "--simulate",
            "--nodes",
            str(len(CASES) * 2),
            "--name",
            "act",
            "--port",
            str(self.port),
            "--config",
            str(self.cfg),
            nodes=len(CASES) * 2,
            tmp=self.tmp,
        )
        if self.urls:
            assert self.agent.urls == self.urls  # same ports: the pins still apply
        self.urls = dict(self.agent.urls)

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()

    def log(self, name: str) -> Path:
        return self.home / ".local/share/fleettui/agent/nodes" / name / "audit.jsonl"

    def act(self) -> None:
        """Real authenticated actions: two restarts that run, four refusals, per node."""
        headers = {"Authorization": f"Bearer {self.secret}"}
        with httpx.Client(timeout=30, headers=headers) as c:
            for url in self.urls.values():
                for body in (
                    {"action": "restart", "engine": "ollama"},
                    {"action": "restart", "engine": "nope"},
                    {"action": "stop", "engine": "ollama"},
                    {"action": "rm"},
                    {"action": "restart", "engine": "ollama"},
                    {"action": "unload"},
                ):
                    c.post(f"{url}/api/v1/actions", json=body)
        counts = {len(self.log(name).read_bytes().splitlines()) for name in self.urls}
        assert len(counts) == 1 and min(counts) >= 6, counts
        self.entries = counts.pop()

    def write_config(self, names: list[str]) -> None:
        text = "[defaults]\nhttp_timeout_s = 5\n"
        for n in names:
            text += f'\n[[node]]\nname = "{n}"\nurl = "{self.urls[n]}"\n'
        self.fleet_toml.write_text(text)


@pytest.fixture
def live(tmp_path: Path, xdg_home: Path):
    lf = LiveFleet(tmp_path, xdg_home)
    try:  # act() can fail after start(): the agent must not outlive it (fixed ports)
        lf.start()
        lf.act()
        yield lf
    finally:
        lf.stop()


def fast_config(lf: LiveFleet, names: list[str]) -> FleetConfig:
    d = Defaults(
        poll_interval_s=0.2, http_timeout_s=5, backoff_min_s=0.1, backoff_max_s=0.5, **FAST
    )
    return FleetConfig(nodes=[NodeConfig(name=n, url=lf.urls[n]) for n in names], defaults=d)


async def test_tamper_matrix_is_broken_in_fresh_status_and_in_a_running_aggregator(
    live: LiveFleet, xdg_home: Path
) -> None:
    everyone = [*live.status_nodes.values(), *live.live_nodes.values()]
    live.write_config(everyone)
    first = status_audit(live.env)  # pins every node
    assert {n: a["chain"] for n, a in first.items()} == dict.fromkeys(everyone, "ok"), first
    pins = PinStore(xdg_home / ".local/state/fleettui/audit-pins")
    assert len(list(pins.root.glob("*.json"))) == len(everyone)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in pins.root.glob("*.json"))

    watched = list(live.live_nodes.values())
    async with FleetAggregator(fast_config(live, watched), pins=pins) as agg:
        await wait_for(
            lambda: all(v.chain is ChainStatus.OK for v in agg.snapshots()), 15, what="pinned"
        )
        for case in CASES:
            if case != "rewrite":
                tamper(live.log(live.status_nodes[case]), case)
                tamper(live.log(live.live_nodes[case]), case)
        t0 = time.monotonic()
        in_place = [live.live_nodes[c] for c in CASES if c != "rewrite"]
        bound = FAST["chain_rescan_s"] + 5.0  # + requests on a busy 2-core machine
        with anyio.move_on_after(bound):
            while not all(agg.node(n).chain is ChainStatus.BROKEN for n in in_place):
                await anyio.sleep(0.02)
        took = time.monotonic() - t0
        # a fresh `fleet status` meanwhile: the watched nodes by the break their pins record,
        # the others by their own checks against the pins the first run left
        during = status_audit(live.env)

        # the full rewrite needs the agent down: hashes and head file recomputed, restarted
        live.stop()
        tamper(live.log(live.status_nodes["rewrite"]), "rewrite")
        tamper(live.log(live.live_nodes["rewrite"]), "rewrite")
        live.start()
        rewritten = live.live_nodes["rewrite"]
        await wait_for(
            lambda: agg.node(rewritten).chain is ChainStatus.BROKEN, 15, what="rewrite BROKEN"
        )
        seen = {c: agg.node(n).chain_detail or "" for c, n in live.live_nodes.items()}
    print(f"running aggregator: {seen}")
    for case, detail in seen.items():
        assert re.search(WHY[case], detail), (case, detail)
    print(f"running aggregator: every in-place tampering BROKEN {took:.2f} s after it")

    after = status_audit(live.env)  # after the restart: the rewrite, and the rest stays so
    for case in CASES:
        for name in (live.status_nodes[case], live.live_nodes[case]):
            a = during[name] if case != "rewrite" else after[name]
            assert a["chain"] == "BROKEN", (case, name, a)
            assert re.search(WHY[case], a["detail"]), (case, name, a["detail"])
    assert {n: a["chain"] for n, a in after.items()} == dict.fromkeys(everyone, "BROKEN")


async def test_agent_reporting_its_log_damaged_is_never_ok(live: LiveFleet) -> None:
    name = live.status_nodes["truncate"]
    live.stop()
    tamper(live.log(name), "truncate")  # head file still says 6: the agent sees the cut
    live.start()
    cfg = fast_config(live, [name])
    [v] = await FleetAggregator(cfg).poll_once(10)  # no pin at all: only the agent's word
    assert v.chain is ChainStatus.BROKEN, v.chain_detail
    assert v.chain_detail.startswith("the agent reports its audit log damaged: ")
    assert "audit.head.json records seq" in v.chain_detail
    assert any(r.startswith("audit log: ") for r in v.reasons)


async def test_forget_repins_deliberately_and_a_running_view_follows(
    live: LiveFleet, xdg_home: Path
) -> None:
    name = live.live_nodes["rewrite"]
    live.write_config([name])
    assert status_audit(live.env)[name]["chain"] == "ok"
    pins = PinStore(xdg_home / ".local/state/fleettui/audit-pins")
    [pin_file] = pins.root.glob("*.json")
    before = pin_file.stat()
    assert status_audit(live.env)[name]["chain"] == "ok"  # read whole again, nothing new:
    after = pin_file.stat()  # the pin is not rewritten (an fsync'd write per node per run)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    live.stop()
    tamper(live.log(name), "rewrite")
    live.start()
    async with FleetAggregator(fast_config(live, [name]), pins=pins) as agg:
        await wait_for(lambda: agg.node(name).chain is ChainStatus.BROKEN, 15)
        assert status_audit(live.env)[name]["chain"] == "BROKEN"

        r = fleet(live.env, "audit", "forget", name)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"fleet audit forget: {name} ({live.urls[name]}): dropped the pin at seq "
            f"{live.entries} (it was BROKEN: seq {live.entries}:"
        ), lines
        assert lines[0].endswith("the next check pins the chain the node serves now")
        # the running aggregator notices the new epoch and pins the rewritten chain
        await wait_for(lambda: agg.node(name).chain is ChainStatus.OK, 15, what="re-pinned")
        assert agg.node(name).chain_detail == f"verified through seq {live.entries}"
    assert status_audit(live.env)[name]["chain"] == "ok"

    again = fleet(live.env, "audit", "forget", name)
    assert again.returncode == 0 and f"dropped the pin at seq {live.entries};" in again.stdout

    live.fleet_toml.write_text(
        live.fleet_toml.read_text() + '\n[[node]]\nname = "mac"\nurl = "http://mac.local:8000"\n'
        'kind = "asiai"\n'
    )
    asiai = fleet(live.env, "audit", "forget", "mac")
    assert asiai.returncode == 2
    assert (
        asiai.stderr == "fleet: mac is an asiai node: it keeps no fleettui audit log, so no pin\n"
    )
    bad = fleet(live.env, "audit", "forget", "nosuch")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"fleet: no node named 'nosuch' in {live.fleet_toml} (known: {name}, mac; see `fleet ls`)"
    ]


async def test_a_renamed_entry_keeps_its_pin_and_another_node_under_that_name_does_not(
    live: LiveFleet,
) -> None:
    a, b = live.live_nodes["rewrite"], live.live_nodes["edit"]
    live.write_config([a])
    assert status_audit(live.env)[a]["chain"] == "ok"
    live.stop()
    tamper(live.log(a), "rewrite")
    live.start()
    # the same URL under a new name: still pinned, so the rewrite shows
    live.fleet_toml.write_text(f'[[node]]\nname = "renamed"\nurl = "{live.urls[a]}/"\n')
    assert status_audit(live.env)["renamed"]["chain"] == "BROKEN"
    # the old name now pointing at another node: that node's own (first) pin, not a's
    live.fleet_toml.write_text(f'[[node]]\nname = "{a}"\nurl = "{live.urls[b]}"\n')
    assert status_audit(live.env)[a] == {
        "chain": "ok",
        "detail": f"verified through seq {live.entries}",
        "seq": live.entries,
    }


SPOT_LOG = (SPOT_PAGES + 2) * PAGE  # 12 pages: more than one one-shot re-reads


@pytest.fixture
def big_logs(tmp_path: Path, xdg_home: Path):
    """Two simulated nodes whose logs hold SPOT_LOG valid entries, written before start."""
    chain = make_chain(SPOT_LOG)
    logs = {}
    for name in ("big-000", "big-001"):
        d = xdg_home / ".local/share/fleettui/agent/nodes" / name
        d.mkdir(parents=True, mode=0o700)
        (d / "audit.jsonl").write_bytes(b"".join(canonical_json(e) + b"\n" for e in chain))
        head = {"seq": SPOT_LOG, "hash": chain[-1]["hash"], "ts": time.time()}
        (d / "audit.head.json").write_text(json.dumps(head))
        logs[name] = d / "audit.jsonl"
    agent = start_agent("--simulate", "--nodes", "2", "--name", "big", nodes=2, tmp=tmp_path)
    yield agent, logs
    agent.stop()


def edit_in_place(log: Path, seq: int) -> None:
    """Change one entry's content, same length, hash left alone (the agent is not told)."""
    lines = log.read_bytes().splitlines(keepends=True)
    assert b'"duration_ms":12.5' in lines[seq - 1]
    lines[seq - 1] = lines[seq - 1].replace(b'"duration_ms":12.5', b'"duration_ms":99.5')
    log.write_bytes(b"".join(lines))


async def test_a_one_shot_reads_a_bounded_share_and_repeated_runs_cover_the_log(
    big_logs, xdg_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fleet status` re-reads the pinned entry, what is new and the SPOT_PAGES pages verified
    longest ago (as the pin on disk records), so an edit deep in a long log is BROKEN within
    ceil(pages / SPOT_PAGES) runs, and at once with `--full-audit`."""
    agent, logs = big_logs
    afters: dict[str, list[int]] = {}
    orig = ChainVerifier._page

    async def counted(v: ChainVerifier, client, after: int, timeout_s: float):  # type: ignore[no-untyped-def]
        afters.setdefault(v.pin.key, []).append(after)
        return await orig(v, client, after, timeout_s)

    monkeypatch.setattr(ChainVerifier, "_page", counted)
    pins = PinStore(xdg_home / ".local/state/fleettui/audit-pins")
    a, b = "big-000", "big-001"

    async def one_shot(name: str, **kw: bool) -> tuple[ChainStatus, str, list[int]]:
        afters.clear()
        cfg = FleetConfig(nodes=[NodeConfig(name=name, url=agent.urls[name])])
        [v] = await FleetAggregator(cfg, pins=pins).poll_once(20, **kw)
        return v.chain, v.chain_detail or "", afters.pop(node_key(agent.urls[name]))

    every_page = list(range(0, SPOT_LOG, PAGE))
    for name in (a, b):  # first contact: the whole log, from genesis
        assert await one_shot(name) == (
            ChainStatus.OK,
            f"verified through seq {SPOT_LOG}",
            every_page,
        )
    edited = SPOT_LOG - PAGE // 2  # in the last page, the one a second run does not re-read
    for log in logs.values():
        edit_in_place(log, edited)

    # run 2: the pinned entry, and the 10 pages verified longest ago (all alike: by seq)
    chain, _, read = await one_shot(a)
    assert (chain, read) == (ChainStatus.OK, [SPOT_LOG - 1, *every_page[:SPOT_PAGES]])
    # run 3 (a fresh process: the pin on disk says which pages run 2 read): the two it left
    # come first, and the second holds the edit
    chain, detail, read = await one_shot(a)
    assert chain is ChainStatus.BROKEN and detail == f"seq {edited}: hash mismatch (entry altered)"
    assert read == [SPOT_LOG - 1, *every_page[SPOT_PAGES:]]

    # `--full-audit` in a fresh `fleet status`: every page, so run 2 already finds it
    fleet_toml = xdg_home / "fleet.toml"
    fleet_toml.write_text(f'[[node]]\nname = "{b}"\nurl = "{agent.urls[b]}"\n')
    env = {**os.environ, "FLEET_CONFIG": str(fleet_toml)}
    r = fleet(env, "status", "--json", "--full-audit")
    assert r.returncode == 1, r.stderr
    [node] = json.loads(r.stdout)["nodes"]
    assert node["audit"]["chain"] == "BROKEN"
    assert node["audit"]["detail"] == f"seq {edited}: hash mismatch (entry altered)"
    # `fleet ping` loads the same pins: the break sticks there too, with no log read
    r = fleet(env, "ping", b, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["audit"]["chain"] == "BROKEN"
