"""The agent's write side against the real agent on loopback: auth, limits, validation, audit.

"No process spawned" is proven with a recorder script configured as the argv of every action:
it appends its argv to a file, so an empty file means nothing ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from conftest import AgentProc, start_agent
from fleettui.agent.tokens import create_token, revoke_token
from fleettui.wire import ACTIONS, ActionResult, AuditPage, NodeSnapshot, audit_hash

RECORDER = """\
import json, sys
with open({log!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
print("recorder ran:", " ".join(sys.argv[1:]))
print("to stderr too", file=sys.stderr)
"""
FAILER = """\
import sys
print("engine refused to restart", file=sys.stderr)
sys.exit(3)
"""
BLOCKER = """\
import pathlib, sys, time
d = pathlib.Path({d!r})
(d / "started").write_text("1")
deadline = time.monotonic() + 20
while not (d / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
print("released")
"""


@dataclass
class Env:
    home: Path
    env: dict[str, str]
    config: Path
    calls: Path  # the recorder's log
    data: Path
    tmp: Path

    @property
    def tokens(self) -> Path:
        return self.config.parent / "tokens.json"

    def token(self, label: str = "test") -> str:
        return create_token(self.tokens, label)[1]

    def calls_made(self) -> list[list[str]]:
        if not self.calls.exists():
            return []
        return [json.loads(x) for x in self.calls.read_text().splitlines()]

    def fleet(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fleettui", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )


def make_env(tmp: Path, extra_toml: str = "", commands: str | None = None) -> Env:
    home = tmp / "home"
    home.mkdir(parents=True)
    env = {**os.environ, "HOME": str(home)}
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
    ):
        env[var] = str(home / sub)
    env.pop("FLEET_AGENT_CONFIG", None)
    calls = tmp / "calls.log"
    scripts = tmp / "scripts"
    scripts.mkdir()
    (scripts / "recorder.py").write_text(RECORDER.format(log=str(calls)))
    (scripts / "failer.py").write_text(FAILER)
    (scripts / "blocker.py").write_text(BLOCKER.format(d=str(tmp)))
    py = json.dumps(sys.executable)

    def argv(script: str, *rest: str) -> str:
        return (
            "[" + ", ".join([py, json.dumps(str(scripts / script)), *map(json.dumps, rest)]) + "]"
        )

    if commands is None:
        commands = f"""
purge = {argv("recorder.py", "purge")}
[engines.ollama.commands]
restart = {argv("recorder.py", "restart", "{engine}")}
stop = {argv("recorder.py", "stop", "{engine}")}
start = {argv("recorder.py", "start", "{engine}")}
[engines.vllm.commands]
restart = {argv("failer.py")}
[engines.llamacpp.commands]
restart = {argv("blocker.py")}
"""
    data = tmp / "data"
    config = tmp / "etc" / "agent.toml"
    config.parent.mkdir()
    config.write_text(
        f"interval_s = 0.3\ndata_dir = {json.dumps(str(data))}\n{extra_toml}\n{commands}"
    )
    return Env(home, env, config, calls, data, tmp)


JSON = {"Content-Type": "application/json"}


def post(url: str, body: object, secret: str | None = None, **kw: object) -> httpx.Response:
    headers = {**JSON, "Authorization": f"Bearer {secret}"} if secret else JSON
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/api/v1/actions", content=content, headers=headers, timeout=30, **kw)


def audit_entries(url: str, after: int = 0, **kw: object) -> list:
    r = httpx.get(f"{url}/api/v1/audit", params={"after": after, "limit": 1000}, **kw)
    assert r.status_code == 200, r.text
    return AuditPage.model_validate(r.json()).entries


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, AgentProc]]:
    """One simulated node `alpha` with the default rate limit and the recorder configured;
    failed authentication is not throttled here and refusals aggregate over 0.5 s windows."""
    tmp = tmp_path_factory.mktemp("write")
    e = make_env(tmp, "auth_failures_per_min = 100000\nrefusal_window_s = 0.5")
    agent = start_agent(
        "--simulate", "--name", "alpha", "--config", str(e.config), "-v", tmp=tmp, env=e.env
    )
    try:
        yield e, agent
    finally:
        agent.stop()


# --- authentication ------------------------------------------------------------------------


def test_no_wrong_or_revoked_token_is_401_and_alike(sim) -> None:
    e, agent = sim
    good = e.token("good")
    revoked_id, revoked = create_token(e.tokens, "old")
    revoke_token(e.tokens, revoked_id)
    wrong = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    body = {"action": "restart", "engine": "ollama"}
    before = len(e.calls_made())
    answers = []
    with httpx.Client(timeout=30) as c:  # one connection: the five land in one window, loaded too
        for secret in (None, wrong, "tok_00000000." + "x" * 43, "garbage", revoked):
            headers = {**JSON, "Authorization": f"Bearer {secret}"} if secret else JSON
            r = c.post(f"{agent.url}/api/v1/actions", json=body, headers=headers)
            assert r.status_code == 401
            answers.append((r.content, r.headers.get("www-authenticate")))
    assert len(set(answers)) == 1 and answers[0][1].startswith("Bearer")
    assert json.loads(answers[0][0])["error"] == "unauthorized"
    assert len(e.calls_made()) == before  # nothing ran

    def counted() -> tuple[list, int]:
        denied = [x for x in audit_entries(agent.url) if x.http_status == 401]
        return denied, sum(sum((x.args.get("errors") or {x.error: 1}).values()) for x in denied)

    # the refusal window (0.5 s) closes and its aggregate is written: wait for all five to be
    # on the record (a fixed 0.6 s sleep was 0.1 s from the flush on a loaded machine)
    deadline = time.monotonic() + 60
    while (got := counted())[1] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    denied = got[0]
    assert denied[0].error == "unauthorized: missing token" and denied[0].action == "restart"
    reasons: dict[str, int] = {}
    for x in denied:  # in full, or counted in an aggregate (a slow machine may split windows)
        assert x.status == "denied" and x.source_ip == denied[0].source_ip
        for reason, n in (x.args.get("errors") or {x.error: 1}).items():
            reasons[reason] = reasons.get(reason, 0) + n
    assert len(denied) < 5 and reasons == {
        "unauthorized: missing token": 1,
        "unauthorized: unknown token": 2,
        "unauthorized: wrong secret": 1,
        "unauthorized: revoked token": 1,
    }
    # The good token works, so the 401s were about the tokens.
    assert post(agent.url, body, good).status_code == 200


def test_31st_call_in_a_minute_is_429(sim) -> None:
    e, agent = sim
    secret, other = e.token("burst"), e.token("other")
    time.sleep(0.6)  # earlier refusals' window is over: the 429 is recorded in full
    with httpx.Client(timeout=30) as c:
        headers = {"Authorization": f"Bearer {secret}"}
        codes = [
            c.post(f"{agent.url}/api/v1/actions", json={"action": "rm"}, headers=headers)
            for _ in range(31)
        ]
    assert [r.status_code for r in codes[:30]] == [400] * 30
    last = codes[30]
    assert last.status_code == 429 and last.json()["error"] == "rate limited"
    assert 1 <= int(last.headers["Retry-After"]) <= 60
    # Per token: another token is not limited.
    assert post(agent.url, {"action": "rm"}, other).status_code == 400
    (entry,) = [x for x in audit_entries(agent.url) if x.http_status == 429]
    assert entry.status == "denied" and entry.token_id and entry.token_id in secret


def test_body_over_64k_is_413_without_reading_it(sim) -> None:
    e, agent = sim
    secret = e.token()
    before = len(e.calls_made())
    big = b'{"action": "purge", "pad": "' + b"x" * (65 * 1024) + b'"}'
    r = post(agent.url, big, secret)
    assert r.status_code == 413 and "65536" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the running cap must catch it
        for _ in range(80):
            yield b" " * 1024

    r = httpx.post(
        f"{agent.url}/api/v1/actions",
        content=chunks(),
        headers={**JSON, "Authorization": f"Bearer {secret}"},
        timeout=30,
    )
    assert r.status_code == 413
    # Even without a token, size is checked first.
    assert post(agent.url, big).status_code == 413
    assert len(e.calls_made()) == before
    assert post(agent.url, b" " * 1000 + b'{"action": "purge"}', secret).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "rm"}, "action"),
        ({"action": "restart", "engine": "ollama; rm -rf /"}, "engine"),
        ({"action": "restart", "engine": "$(reboot)"}, "engine"),
        ({"action": "unload", "engine": "ollama", "model": "-rf"}, "model"),
        ({"action": "unload", "engine": "ollama", "model": "a b"}, "model"),
        ({"action": "unload", "engine": "ollama", "model": "../../etc/passwd"}, "model"),
        ({"action": "restart"}, "engine"),
        ({"action": "restart", "engine": "ollama", "model": "x"}, "model"),
        ({"action": "restart", "engine": "ollama", "argv": ["sh"]}, None),
        ({"action": ["restart"]}, "action"),
        ({"action": "restart", "engine": 7}, "engine"),
    ],
)
def test_bad_input_is_400_and_spawns_nothing(sim, body: dict, field: str | None) -> None:
    e, agent = sim
    secret = e.token()
    before = len(e.calls_made())
    r = post(agent.url, body, secret)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["error"]
    if field:
        assert err["detail"]["field"] == field
    assert len(e.calls_made()) == before


def test_valid_restart_runs_the_configured_argv_and_is_audited(sim) -> None:
    e, agent = sim
    secret = e.token()
    before = len(e.calls_made())
    r = post(agent.url, {"action": "restart", "engine": "ollama"}, secret)
    assert r.status_code == 200, r.text
    res = ActionResult.model_validate(r.json())
    assert res.ok and res.exit_code == 0 and res.action == "restart" and res.engine == "ollama"
    assert "recorder ran: restart ollama" in res.output_tail
    assert "to stderr too" in res.output_tail and res.duration_ms > 0
    assert e.calls_made()[before:] == [["restart", "ollama"]]
    entry = next(x for x in audit_entries(agent.url) if x.seq == res.audit_seq)
    assert entry.status == "ok" and entry.http_status == 200 and entry.exit_code == 0
    assert entry.action == "restart" and entry.args["engine"] == "ollama"
    assert entry.args["via"] == "argv" and entry.token_id and entry.token_id in secret
    assert entry.hash == audit_hash(entry.model_dump())
    intent = next(x for x in audit_entries(agent.url) if x.seq == entry.ref)
    assert intent.status == "started" and intent.args == entry.args and intent.ts == entry.ts
    # The snapshot carries the new head at once.
    snap = NodeSnapshot.model_validate(httpx.get(f"{agent.url}/api/v1/snapshot").json())
    assert snap.audit.seq >= res.audit_seq
    path = e.data / "nodes" / "alpha" / "audit.jsonl"
    v = e.fleet("agent", "audit", "verify", "--path", str(path), "--json")
    assert v.returncode == 0 and json.loads(v.stdout)["ok"] is True, v.stdout + v.stderr


def test_failing_command_reports_its_exit_code(sim) -> None:
    e, agent = sim
    r = post(agent.url, {"action": "restart", "engine": "vllm"}, e.token())
    assert r.status_code == 200
    res = ActionResult.model_validate(r.json())
    assert not res.ok and res.exit_code == 3 and "refused to restart" in res.output_tail
    entry = next(x for x in audit_entries(agent.url) if x.seq == res.audit_seq)
    assert entry.status == "failed" and entry.exit_code == 3


def test_second_action_on_a_busy_engine_is_409(sim) -> None:
    e, agent = sim
    secret = e.token()
    first: list[httpx.Response] = []
    t = threading.Thread(
        target=lambda: first.append(
            post(agent.url, {"action": "restart", "engine": "llamacpp"}, secret)
        )
    )
    t.start()
    try:
        deadline = time.monotonic() + 20
        while not (e.tmp / "started").exists():
            assert time.monotonic() < deadline, "blocker never started"
            time.sleep(0.02)
        r = post(agent.url, {"action": "restart", "engine": "llamacpp"}, secret)
        assert r.status_code == 409 and "llamacpp" in r.json()["error"]
        # Another engine is not blocked.
        assert post(agent.url, {"action": "start", "engine": "ollama"}, secret).status_code == 200
    finally:
        (e.tmp / "release").write_text("1")
        t.join(30)
    assert first[0].status_code == 200 and first[0].json()["ok"] is True


def test_sse_action_and_audit_events(sim) -> None:
    e, agent = sim
    secret = e.token()
    seen: dict[str, list[dict]] = {"action": [], "audit": []}
    with (
        httpx.Client(timeout=10) as c,
        connect_sse(c, "GET", f"{agent.url}/api/v1/events") as es,
    ):
        events = es.iter_sse()
        assert next(events).event == "snapshot"
        r = post(agent.url, {"action": "stop", "engine": "ollama"}, secret)
        seq = r.json()["audit_seq"]
        for ev in events:
            if ev.event in seen:
                seen[ev.event].append(json.loads(ev.data))
            done = any(a.get("phase") == "finished" for a in seen["action"])
            if done and len(seen["audit"]) >= 2:
                break
    phases = [(a["phase"], a["action"], a["engine"]) for a in seen["action"]]
    assert phases == [("started", "stop", "ollama"), ("finished", "stop", "ollama")]
    assert seen["action"][1]["ok"] is True and seen["action"][1]["audit_seq"] == seq
    # Write-ahead: the intent is on record (and announced) before the outcome.
    intent, outcome = seen["audit"][:2]
    assert seen["action"][0]["audit_seq"] == intent["seq"] == seq - 1
    assert intent["status"] == "started" and intent["ref"] is None
    assert outcome["seq"] == seq and outcome["status"] == "ok" and outcome["ref"] == seq - 1


def test_simulated_actions_change_the_node(sim) -> None:
    e, agent = sim
    secret = e.token()
    snap = httpx.get(f"{agent.url}/api/v1/snapshot").json()
    ollama = next(x for x in snap["engines"] if x["name"] == "ollama")
    model = ollama["models"][0]["name"]
    before = len(e.calls_made())
    r = post(agent.url, {"action": "unload", "engine": "ollama", "model": model}, secret)
    assert r.status_code == 200 and r.json()["ok"], r.text
    assert "simulated" in r.json()["output_tail"]
    assert len(e.calls_made()) == before  # no unload argv configured: the simulation acted
    deadline = time.monotonic() + 10
    while True:
        eng = next(
            x
            for x in httpx.get(f"{agent.url}/api/v1/snapshot").json()["engines"]
            if x["name"] == "ollama"
        )
        if eng["status"] == "up" and model not in [m["name"] for m in eng["models"]]:
            break
        assert time.monotonic() < deadline, eng
        time.sleep(0.1)
    # Unloading it again: the action ran and failed, reported as such.
    r = post(agent.url, {"action": "unload", "engine": "ollama", "model": model}, secret)
    assert r.status_code == 200 and r.json()["ok"] is False
    # An engine the node does not have and no argv for it: 400 before anything runs.
    r = post(agent.url, {"action": "restart", "engine": "nosuch"}, secret)
    assert r.status_code == 400 and "not present" in r.json()["error"]


def test_audit_endpoint_paging_and_bad_params(sim) -> None:
    _e, agent = sim
    all_entries = audit_entries(agent.url)
    assert [x.seq for x in all_entries] == list(range(1, len(all_entries) + 1))
    r = httpx.get(f"{agent.url}/api/v1/audit", params={"after": 1, "limit": 2})
    page = AuditPage.model_validate(r.json())
    assert [x.seq for x in page.entries] == [2, 3] and page.head.seq >= len(all_entries)
    for params in ({"after": "x"}, {"after": -1}, {"limit": 0}, {"limit": 1001}, {"limit": "1e3"}):
        r = httpx.get(f"{agent.url}/api/v1/audit", params=params)
        assert r.status_code == 400 and r.json()["error"] and r.json()["detail"]["param"], params


def test_secret_never_leaks(sim) -> None:
    e, agent = sim
    out = e.fleet(
        "agent", "token", "create", "--label", "leak-check", "--json", "--config", str(e.config)
    )
    secret = json.loads(out.stdout)["secret"]
    tail = secret.split(".", 1)[1]
    bodies: list[object] = [
        {"action": "restart", "engine": "ollama"},
        {"action": "unload", "engine": "ollama", "model": secret},
        {"action": "unload", "engine": "ollama", "model": f"x{secret}"},
        {"action": secret},
        {"action": "restart", "engine": secret},
        {secret: 1, "action": "purge"},
        {"action": "restart", "engine": "nosuch"},
        b"not json " + secret.encode(),
    ]
    texts = []
    codes = set()
    for b in bodies:
        for s in (secret, secret + "x", None):
            r = post(agent.url, b, s)
            codes.add(r.status_code)
            texts.append(r.text + str(r.headers))
    assert codes == {200, 400, 401}  # the token was accepted, and refusals happened too
    texts.append(httpx.get(f"{agent.url}/api/v1/audit", params={"limit": 1000}).text)
    texts.append(e.fleet("agent", "token", "list", "--config", str(e.config)).stdout)
    texts.append(e.fleet("agent", "token", "list", "--json", "--config", str(e.config)).stdout)
    texts.append(e.tokens.read_text())
    texts.append(agent.stderr())
    for f in (e.data / "nodes" / "alpha").iterdir():
        texts.append(f.read_text())
    for t in texts:
        assert tail not in t
    assert "action restart engine=ollama" in agent.stderr()  # -v did log the actions


def test_last_used_is_recorded(sim) -> None:
    e, agent = sim
    tid, secret = create_token(e.tokens, "lu")
    assert post(agent.url, {"action": "rm"}, secret).status_code == 400
    rows = json.loads(e.fleet("agent", "token", "list", "--json", "--config", str(e.config)).stdout)
    assert next(r for r in rows if r["id"] == tid)["last_used"] is not None


# --- other agents -------------------------------------------------------------------------


def test_fuzzed_bodies_never_5xx_and_never_spawn_for_invalid_input(tmp_path: Path) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    e = make_env(tmp_path, "rate_limit_per_min = 100000")
    agent = start_agent(
        "--simulate", "--name", "fuzz", "--config", str(e.config), tmp=tmp_path, env=e.env
    )
    try:
        secret = e.token("fuzz")
        leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
        json_values = st.recursive(
            leaves,
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
            max_leaves=6,
        )
        names = st.sampled_from(
            [
                "ollama",
                "vllm",
                "llamacpp",
                "lmstudio",
                "mlx",
                "ollama; rm -rf /",
                "-rf",
                "$(id)",
                "../x",
                "OLLAMA",
                "a" * 33,
                "",
                " ollama",
                "ollama\n",
                "ollama\x00",
            ]
        ) | st.text(max_size=40)
        models = st.sampled_from(
            [
                "llama3.1:8b",
                "hf.co/org/m:Q4_K_M",
                "-x",
                "--help",
                "a b",
                "../x",
                "x/../y",
                "q\x00",
                "m" * 201,
                "tok_0123abcd." + "a" * 43,
            ]
        ) | st.text(max_size=60)
        actions = st.sampled_from([*ACTIONS, "rm", "RESTART", "", "restart "]) | st.text(
            max_size=12
        )
        requests = st.fixed_dictionaries(
            {"action": actions | json_values},
            optional={
                "engine": names | json_values,
                "model": models | json_values,
                "extra": json_values,
                # load's parameters: bounded integers, a KV type, a duration, a boolean
                "ctx": st.integers() | json_values,
                "parallel": st.integers(-2, 2000) | json_values,
                "kv_type": st.sampled_from(["f16", "q8_0", "Q8_0", "q3"]) | json_values,
                "keep_alive": st.sampled_from(["30m", "-1", "0", "5m; id"]) | json_values,
                "force": st.booleans() | json_values,
            },
        )
        valid = st.fixed_dictionaries(  # so the fuzz also walks the path that runs things
            {"action": st.sampled_from(["restart", "stop", "start"]), "engine": st.just("ollama")}
        ) | st.fixed_dictionaries({"action": st.just("purge")})
        # What Python's json accepts and the agent must refuse cleanly: escaped lone surrogates
        # (in keys and values), integers of thousands of digits, NaN, duplicate keys.
        surrogates = st.sampled_from(["\\ud800", "\\udfff", "a\\ud83d", "\\udc00b"])
        digits = st.integers(1, 6000).map(lambda n: "9" * n)
        nasty = st.one_of(
            surrogates.map(lambda s: f'{{"action": "purge", "engine": "{s}"}}'),
            surrogates.map(lambda s: f'{{"{s}": 1, "action": "restart"}}'),
            digits.map(lambda d: f'{{"action": "purge", "n": {d}}}'),
            digits.map(lambda d: f'{{"action": {d}}}'),
            st.sampled_from(["NaN", "-Infinity", "1e99999"]).map(
                lambda c: f'{{"action": "purge", "n": {c}}}'
            ),
            st.just('{"action": "purge", "action": "restart"}'),
        ).map(str.encode)
        bodies = st.one_of(
            nasty,
            requests.map(lambda d: json.dumps(d).encode()),
            requests.map(lambda d: json.dumps(d, ensure_ascii=False).encode()),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=200),
            valid.map(lambda d: json.dumps(d).encode()),
        )
        seen: dict[str, int] = {"spawned": 0}
        client = httpx.Client(timeout=30, headers={**JSON, "Authorization": f"Bearer {secret}"})

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        @given(body=bodies)
        def check(body: bytes) -> None:
            before = len(e.calls_made())
            r = client.post(f"{agent.url}/api/v1/actions", content=body)
            assert r.status_code < 500, (body, r.status_code, r.text)
            data = r.json()
            spawned = len(e.calls_made()) - before
            seen[str(r.status_code)] = seen.get(str(r.status_code), 0) + 1
            seen["spawned"] += spawned
            if r.status_code == 200:
                assert spawned <= 1 and "ok" in data
            else:
                assert r.status_code in (400, 409, 413) and data["error"], (body, r.text)
                assert spawned == 0, (body, r.text)

        try:
            check()
        finally:
            client.close()
        assert seen["spawned"] and seen["200"] and seen["400"], seen  # both paths were walked
        entries = audit_entries(agent.url)
        assert len(entries) >= 150
        v = e.fleet("agent", "audit", "verify", "--path", str(e.data / "nodes" / "fuzz"))
        assert v.returncode == 0, v.stdout
    finally:
        agent.stop()


class FakeOllama(BaseHTTPRequestHandler):
    """Speaks the documented Ollama JSON: /api/version, /api/ps, /api/generate keep_alive 0."""

    loaded: list[str]
    posts: list[dict]

    def _json(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self._json(200, {"version": "0.11.4"})
        elif self.path == "/api/ps":
            self._json(200, {"models": [{"name": m, "model": m, "size": 1} for m in self.loaded]})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.posts.append({"path": self.path, **body})
        if self.path == "/api/generate" and body.get("keep_alive") == 0:
            if body["model"] in self.loaded:
                self.loaded.remove(body["model"])
                self._json(200, {"model": body["model"], "done": True, "done_reason": "unload"})
            else:
                self._json(404, {"error": f"model '{body['model']}' not found"})
        else:
            self._json(400, {"error": "unexpected"})

    def log_message(self, *args: object) -> None:
        pass


def test_real_mode_unload_uses_ollama_api_and_unconfigured_actions_say_what_to_set(
    tmp_path: Path,
) -> None:
    handler = type("H", (FakeOllama,), {"loaded": ["llama3.1:8b", "qwen2.5:7b"], "posts": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        e = make_env(
            tmp_path,
            f'auto_detect = false\n[engines.ollama]\nurl = "{url}"\n'
            '[engines.vllm]\nurl = "http://127.0.0.1:9"\n',
            commands="",
        )
        agent = start_agent("--config", str(e.config), tmp=tmp_path, env=e.env)
        try:
            secret = e.token()
            r = post(
                agent.url, {"action": "unload", "engine": "ollama", "model": "llama3.1:8b"}, secret
            )
            assert r.status_code == 200 and r.json()["ok"], r.text
            assert handler.posts[-1] == {
                "path": "/api/generate",
                "model": "llama3.1:8b",
                "keep_alive": 0,
            }
            r = post(
                agent.url, {"action": "unload", "engine": "ollama", "model": "gone:1b"}, secret
            )
            assert (
                r.status_code == 200
                and r.json()["ok"] is False
                and "404" in r.json()["output_tail"]
            )
            r = post(agent.url, {"action": "unload", "engine": "ollama"}, secret)  # all loaded
            assert r.json()["ok"] and handler.loaded == []
            assert "unloaded qwen2.5:7b" in r.json()["output_tail"]

            cases = {
                ("restart", "vllm"): "engines.vllm.commands.restart",
                ("unload", "vllm"): "engines.vllm.commands.unload",
                ("restart", "ollama"): "engines.ollama.commands.restart",
                ("purge", None): "purge",
                ("stop", "mlx"): "engines.mlx.commands.stop",
            }
            for (action, engine), key in cases.items():
                r = post(agent.url, {"action": action, "engine": engine}, secret)
                assert r.status_code == 400 and key in r.json()["error"], r.text
                assert r.json()["detail"]["configure"] == key
            path = e.data / "audit.jsonl"  # a real node's log is in the data dir itself
            assert e.fleet("agent", "audit", "verify", "--path", str(path)).returncode == 0
        finally:
            agent.stop()
    finally:
        server.shutdown()
        thread.join(5)


def test_read_token_required_gates_reads(tmp_path: Path) -> None:
    e = make_env(tmp_path, "read_token_required = true")
    agent = start_agent(
        "--simulate", "--name", "ro", "--config", str(e.config), tmp=tmp_path, env=e.env
    )
    try:
        secret = e.token()
        auth = {"Authorization": f"Bearer {secret}"}
        for path in ("/api/v1/snapshot", "/api/v1/audit", "/metrics"):
            r = httpx.get(f"{agent.url}{path}")
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
            assert httpx.get(f"{agent.url}{path}", headers=auth).status_code == 200, path
        assert httpx.get(f"{agent.url}/api/v1/events", timeout=5).status_code == 401
        with (
            httpx.Client(timeout=5) as c,
            connect_sse(c, "GET", f"{agent.url}/api/v1/events", headers=auth) as es,
        ):
            assert next(es.iter_sse()).event == "snapshot"
        assert httpx.get(f"{agent.url}/healthz").status_code == 200
    finally:
        agent.stop()


def test_many_nodes_share_tokens_but_not_audit_logs(tmp_path: Path) -> None:
    e = make_env(tmp_path)
    agent = start_agent(
        "--simulate",
        "--nodes",
        "2",
        "--name",
        "n",
        "--config",
        str(e.config),
        nodes=2,
        tmp=tmp_path,
        env=e.env,
    )
    try:
        secret = e.token()
        for url in agent.urls.values():
            assert post(url, {"action": "purge"}, secret).status_code == 200
        for name in agent.urls:
            path = e.data / "nodes" / name / "audit.jsonl"
            assert len(path.read_text().splitlines()) == 2  # started, ok
            assert e.fleet("agent", "audit", "verify", "--path", str(path)).returncode == 0
    finally:
        agent.stop()


def test_damaged_audit_log_stops_actions_but_not_reads(tmp_path: Path) -> None:
    e = make_env(tmp_path)
    log = e.data / "nodes" / "dmg" / "audit.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text('{"seq": 1, "ts": ')  # a torn write
    agent = start_agent(
        "--simulate", "--name", "dmg", "--config", str(e.config), tmp=tmp_path, env=e.env
    )
    try:
        r = post(agent.url, {"action": "restart", "engine": "ollama"}, e.token())
        assert r.status_code == 503 and "audit" in r.json()["error"]
        assert e.calls_made() == []
        snap = httpx.get(f"{agent.url}/api/v1/snapshot").json()
        assert any(p.startswith("audit log:") for p in snap["problems"])
        assert log.read_text() == '{"seq": 1, "ts": '  # the evidence is left as it was
    finally:
        agent.stop()
