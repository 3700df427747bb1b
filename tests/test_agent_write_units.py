"""The write side's parts on their own: validation table, rate limiter, the argv runner."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from fleettui.agent.actions import (
    audit_view,
    bearer,
    fill_argv,
    request_from,
    run_argv,
    scrub,
)
from fleettui.agent.body import parse_body
from fleettui.agent.ratelimit import RateLimiter, retry_after_header
from fleettui.agent.refusals import Rejection
from fleettui.wire import ActionRequest

SECRET = "tok_0123abcd." + "Z" * 43


def parse_request(body: bytes, secret: str | None = None) -> ActionRequest:
    return request_from(parse_body(body), secret)


@pytest.mark.parametrize(
    "body",
    [
        {"action": "purge"},
        {"action": "unload", "engine": "ollama"},
        {"action": "unload", "engine": "ollama", "model": "llama3.1:8b"},
        {"action": "unload", "engine": "ollama", "model": "hf.co/bartowski/Llama-3.2-1B:Q4_K_M"},
        {"action": "unload", "engine": "vllm", "model": "Qwen/Qwen2.5-32B-Instruct-AWQ"},
        {"action": "unload", "engine": "llamacpp", "model": "Meta-Llama-3.1-8B-Q4_K_M.gguf"},
        {"action": "unload", "engine": "ollama", "model": "m@sha256:0a1b"},
        {"action": "restart", "engine": "my-engine_2", "model": None},
    ],
)
def test_valid_requests(body: dict) -> None:
    call = parse_request(json.dumps(body).encode())
    assert call == ActionRequest(**body)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty body"),
        (b"{", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"action": "purge", "engine": "\xed\xa0\x80"}', "not UTF-8"),  # encoded surrogate
        (b'{"action": "purge", "engine": "\\ud800"}', "lone surrogate"),
        (b'{"action": "purge", "\\udfff": 1}', "lone surrogate"),
        (b'{"action": "purge", "n": ' + b"9" * 5000 + b"}", "more than 20 digits"),
        (b'{"action": "purge", "n": -' + b"9" * 21 + b"}", "more than 20 digits"),
        (b'{"action": "purge", "n": 1.' + b"5" * 50 + b"}", "more than 40 characters"),
        (b'{"action": "purge", "n": 1e999}', "out of range"),
        (b'{"action": "purge", "n": NaN}', "NaN is not JSON"),
        (b'{"action": "purge", "n": -Infinity}', "Infinity is not JSON"),
        (b'{"action": "purge", "action": "restart"}', "duplicate key"),
        (b'{"action": "purge", "x": "' + b"s" * 1025 + b'"}', "more than 1024 characters"),
        (b'{"x": ' + b"[" * 8 + b"]" * 8 + b"}", "nested deeper than 8"),
        (b"\xef\xbb\xbf{}", "not JSON"),  # a BOM
        (b"[1]", "JSON object"),
        (b'"restart"', "JSON object"),
        (b'{"action": "restart", "engine": "ollama", "shell": true}', "unknown field"),
        (b"{}", "action must be a string"),
        (b'{"action": null}', "action must be a string"),
        (b'{"action": "reboot"}', "unknown action 'reboot'"),
        (b'{"action": "Restart", "engine": "ollama"}', "unknown action"),
        (b'{"action": "restart", "engine": "Ollama"}', "not a valid engine name"),
        (b'{"action": "restart", "engine": "-ollama"}', "not a valid engine name"),
        (b'{"action": "restart", "engine": "ollama\\n"}', "not a valid engine name"),
        (b'{"action": "restart", "engine": "' + b"a" * 33 + b'"}', "not a valid engine name"),
        (b'{"action": "restart", "engine": "ollama && id"}', "not a valid engine name"),
        (b'{"action": "unload", "engine": "ollama", "model": "--all"}', "not a valid model"),
        (b'{"action": "unload", "engine": "ollama", "model": " m"}', "not a valid model"),
        (b'{"action": "unload", "engine": "ollama", "model": "a\\tb"}', "not a valid model"),
        (b'{"action": "unload", "engine": "ollama", "model": "a/../b"}', "not a valid model"),
        (b'{"action": "unload", "engine": "ollama", "model": "a;b"}', "not a valid model"),
        (b'{"action": "unload", "engine": "ollama", "model": "$(id)"}', "not a valid model"),
        (b'{"action": "unload", "engine": "ollama", "model": ""}', "not a valid model"),
        (b'{"action": "unload", "engine": "ollama", "model": "' + b"m" * 201 + b'"}', "model"),
        (b'{"action": "unload"}', "unload needs an engine"),
        (b'{"action": "purge", "model": "x"}', "model only applies to unload"),
        (b'{"action": "unload", "engine": "ollama", "model": 1}', "model must be a string"),
        (b"[" * 100_000, "nested deeper"),
    ],
)
def test_invalid_requests(body: bytes, needle: str) -> None:
    with pytest.raises(Rejection) as info:
        parse_request(body)
    assert info.value.status == 400 and needle in info.value.message


def test_token_shaped_values_are_refused_and_never_echoed() -> None:
    for body in (
        {"action": "unload", "engine": "ollama", "model": SECRET},
        {"action": SECRET},
        {"action": "purge", SECRET: 1},
        {"action": "unload", "engine": "ollama", "model": "prefix" + SECRET},
    ):
        with pytest.raises(Rejection) as info:
            parse_request(json.dumps(body).encode(), SECRET)
        shown = json.dumps([info.value.message, info.value.detail])
        assert "Z" * 43 not in shown
    action, args = audit_view({"action": SECRET, "model": SECRET}, None)
    assert action == "[redacted]" and args == {"model": "[redacted]"}
    assert scrub(f"a {SECRET} b", None) == "a [redacted] b"
    assert scrub("custom-secret-value", "custom-secret-value") == "[redacted]"


def test_bearer_parsing() -> None:
    assert bearer(f"Bearer {SECRET}") == SECRET
    assert bearer(f"bearer   {SECRET} ") == SECRET
    for h in (None, "", "Bearer", "Bearer ", f"Basic {SECRET}", SECRET):
        assert bearer(h) is None


def test_argv_placeholders_are_whole_elements_only() -> None:
    call = ActionRequest(action="unload", engine="ollama", model="llama3.1:8b")
    assert fill_argv(["ollama", "stop", "{model}"], call, "k") == ["ollama", "stop", "llama3.1:8b"]
    assert fill_argv(["x", "--m={model}"], call, "k") == ["x", "--m={model}"]
    with pytest.raises(Rejection, match="send a model"):
        fill_argv(["x", "{model}"], ActionRequest(action="unload", engine="ollama"), "k")


def test_rate_limiter_sliding_window() -> None:
    now = [1000.0]
    rl = RateLimiter(3, clock=lambda: now[0])
    assert [rl.hit("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.hit("a")
    assert wait == pytest.approx(60.0) and retry_after_header(wait) == "60"
    assert rl.hit("b") == 0.0  # per key
    assert rl.wait("a") == pytest.approx(60.0) and rl.wait("c") == 0.0  # peeks, counts nothing
    now[0] += 30
    assert rl.hit("a") == pytest.approx(30.0)  # refusals do not count
    now[0] += 30.001
    assert rl.hit("a") == 0.0
    assert retry_after_header(0.2) == "1"


def test_rate_limiter_bounds_its_memory() -> None:
    from fleettui.agent import ratelimit

    now = [0.0]
    rl = RateLimiter(1, clock=lambda: now[0])
    for i in range(ratelimit.MAX_KEYS + 10):
        now[0] += 0.001
        rl.hit(str(i))
    assert len(rl._calls) <= ratelimit.MAX_KEYS


def _script(tmp_path: Path, name: str, body: str) -> list[str]:
    p = tmp_path / name
    p.write_text(body)
    return [sys.executable, str(p)]


@pytest.mark.anyio
async def test_runner_keeps_the_output_tail_and_exit_code(tmp_path: Path) -> None:
    argv = _script(
        tmp_path,
        "chatty.py",
        "import sys\nfor i in range(5000): print('line', i)\nprint('bad', file=sys.stderr)\n"
        "sys.exit(4)\n",
    )
    out = await run_argv(argv, 30)
    assert not out.ok and out.exit_code == 4 and out.error == "exited with status 4"
    assert len(out.output) == 2000 and out.output.endswith("line 4999\nbad\n")


@pytest.mark.anyio
async def test_runner_kills_the_process_group_on_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    argv = _script(
        tmp_path,
        "hang.py",
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('started', flush=True)\ntime.sleep(60)\n",
    )
    out = await run_argv(argv, 1.0)
    assert not out.ok and "timed out after 1 s" in (out.error or "")
    assert "started" in out.output
    for pid in map(int, pids.read_text().split()):
        with anyio.fail_after(10):
            while _alive(pid):
                await anyio.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of a reaped group member still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.anyio
async def test_runner_does_not_wait_for_a_daemon_holding_the_pipe(tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    argv = _script(
        tmp_path,
        "daemonize.py",
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'],"
        " start_new_session=True)\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\nprint('daemon started')\n",
    )
    try:
        with anyio.fail_after(15):  # far below the daemon's 30 s
            out = await run_argv(argv, 120)
        assert out.ok and out.exit_code == 0 and "daemon started" in out.output
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), 9)


@pytest.mark.anyio
async def test_runner_reports_a_missing_program(tmp_path: Path) -> None:
    out = await run_argv([str(tmp_path / "no-such-program")], 5)
    assert not out.ok and out.exit_code is None and "cannot run" in (out.error or "")


def test_host_policy() -> None:
    from starlette.datastructures import Headers

    from fleettui.agent.guard import HostPolicy, split_host

    assert split_host("[::1]:8899") == ("::1", "8899")
    assert split_host("Gpu1.Example.NET.:443") == ("gpu1.example.net", "443")
    policy = HostPolicy(["localhost", "gpu1.example.net", "*.ts.example", "10.0.0.7"])
    for ok in ("localhost", "gpu1.example.net", "a.ts.example", "192.0.2.9", "::1", "x.localhost"):
        assert policy.allows(ok), ok
    for bad in ("evil.example", "ts.example.evil", "gpu1.example.net.evil", "", "localhost.evil"):
        assert not policy.allows(bad), bad

    def check(method: str, write: bool = True, **headers: str):  # type: ignore[no-untyped-def]
        h = Headers(headers={k.replace("_", "-"): v for k, v in headers.items()})
        rej = policy.check(method, h, write=write)
        return rej.status if rej else None

    json_ct = {"content_type": "application/json; charset=utf-8"}
    assert check("GET", host="evil.example:80", write=False) == 421
    assert check("POST", host="localhost:8899", write=False) is None  # not a write route
    assert check("POST", host="localhost:8899", **json_ct) is None
    assert check("POST", host="localhost:8899", origin="http://localhost:8899", **json_ct) is None
    assert check("POST", host="localhost", origin="http://localhost:80", **json_ct) is None
    assert check("POST", host="localhost", origin="https://localhost", **json_ct) is None  # TLS
    assert check("POST", host="localhost", origin="https://localhost:80", **json_ct) == 403
    assert check("POST", host="localhost:8899", origin="http://localhost:8898", **json_ct) == 403
    assert check("POST", host="localhost:8899", origin="null", **json_ct) == 403
    assert check("POST", host="localhost:8899", origin="file://", **json_ct) == 403
    assert check("POST", host="localhost:8899", content_type="text/plain") == 415
    assert check("POST", host="localhost:8899") == 415


def test_address_key_groups_ipv6_by_64() -> None:
    from fleettui.agent.ratelimit import address_key

    assert address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key(None) == "unknown" and address_key("not-an-ip") == "not-an-ip"


@pytest.mark.anyio
async def test_refusal_log_is_bounded_however_many_addresses_send() -> None:
    from fleettui.agent import refusals

    now = [0.0]
    written: list[dict] = []

    async def write(fields: dict) -> None:
        written.append(fields)

    log = refusals.RefusalLog(write, window_s=60, clock=lambda: now[0])

    def refusal(ip: str, status: int = 401) -> dict:
        return {"ts": 1.0, "source_ip": ip, "http_status": status, "error": f"e{status}"}

    for i in range(5000):  # 1000 addresses, five refusals each, in one window
        await log.record(refusal(f"10.0.{i % 1000 // 250}.{i % 250}", 401 + (i % 2) * 28))
    assert len(written) == refusals.MAX_SOURCES  # the first of each address that got a slot
    now[0] = 61.0
    await log.flush()
    assert len(written) <= 2 * refusals.MAX_SOURCES + 1
    aggregates = [w for w in written if "refusals" in w.get("args", {})]
    assert sum(a["args"]["refusals"] for a in aggregates) + refusals.MAX_SOURCES == 5000
    (other,) = [a for a in aggregates if a["source_ip"] is None]
    assert other["args"]["addresses"] == 1000 - refusals.MAX_SOURCES
    # addresses 64..999 share it; an address's five refusals have one status (by its parity)
    assert other["args"]["http_status"] == {"401": 468 * 5, "429": 468 * 5}
