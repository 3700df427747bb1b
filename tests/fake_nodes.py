"""Fake asiai and bare-Ollama nodes on 127.0.0.1 that speak their documented JSON.

FakeAsiai enforces what asiai enforces (../shared/design/asiai.md): only `Host: localhost`,
`127.0.0.1` or `*.local` (400 otherwise); every POST needs an Origin (or Referer) whose
host:port equals Host (403 `Missing Origin header` / `Cross-origin request rejected`); then the
fleet command checks in asiai's order. FakeOllama keeps resident models in `/api/ps` and
unloads them on `POST /api/generate {"model": m, "keep_alive": 0}`.
"""

from __future__ import annotations

import fnmatch
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DATA = Path(__file__).parent / "data"
ASIAI_SNAPSHOT = json.loads((DATA / "asiai-snapshot.json").read_text())
BUDGETS = {
    "purge": 30,
    "load": 300,
    "unload": 60,
    "stop": 60,
    "start": 120,
    "restart": 120,
    "enable": 60,
    "disable": 120,
    "install": 300,
    "uninstall": 120,
    "upgrade": 600,
}
ENGINE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MODEL_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_./:\-]{0,127}$")
NICK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ASIAI_HOSTS = ("localhost", "127.0.0.1", "*.local")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


class _Server:
    """A threaded HTTP server; subclasses implement `handle(method, path, headers, body)`."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                with owner.lock:
                    status, body, extra = owner.handle(self.command, self.path, headers, raw)
                if isinstance(body, bytes):
                    data, ctype = body, "text/plain; charset=utf-8"
                else:
                    data, ctype = json.dumps(body).encode(), "application/json"
                extra = dict(extra)
                ctype = extra.pop("Content-Type", ctype)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = _answer
            do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def handle(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def start(self) -> _Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.ident is not None:  # shutdown() waits for serve_forever: only if it ran
            self.server.shutdown()
        self.server.server_close()


@dataclass
class Outcome:
    """What the node's command companion does for one command."""

    ok: bool = True
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    detail: str | None = None


class FakeAsiai(_Server):
    def __init__(
        self,
        *,
        snapshot: dict | None = None,
        tokens: tuple[str, ...] = (),
        nickname: str = "studio",
        hosts: tuple[str, ...] = ASIAI_HOSTS,
        rate_per_min: int = 30,
    ) -> None:
        super().__init__()
        self.snapshot = snapshot if snapshot is not None else dict(ASIAI_SNAPSHOT)
        self.tokens = list(tokens)
        self.nickname = nickname
        self.hosts = hosts
        self.rate_per_min = rate_per_min
        self.companion_up = True
        self.outcomes: dict[tuple[str, str | None], Outcome] = {}
        self.commands: list[dict] = []  # accepted and run: {"nickname", "command", "args"}
        self._uses: dict[str, list[float]] = {}

    def _host_ok(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return any(fnmatch.fnmatch(name, pat) for pat in self.hosts)

    def handle(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        self.seen.append(Seen(method, path, headers, raw))
        host = headers.get("host", "")
        if not self._host_ok(host):
            return 400, b"Invalid host header", {}
        if method == "POST":
            origin = headers.get("origin") or headers.get("referer")
            if not origin:
                return 403, {"error": "Missing Origin header"}, {}
            if urlsplit(origin).netloc != host:
                return 403, {"error": "Cross-origin request rejected"}, {}
        if method == "GET" and path == "/api/v1/snapshot":
            return 200, self.snapshot, {}
        if method == "GET" and path == "/api/v1/status":
            return 200, {"status": "ok", "ts": int(time.time()), "engines": {}}, {}
        m = re.fullmatch(r"/api/v1/fleet/([^/]*)/command", path)
        if method == "POST" and m:
            return self._command(m.group(1), headers, raw)
        return 404, {"detail": "Not Found"}, {}

    def _command(
        self, nick: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if not NICK_RE.match(nick):
            return 400, {"error": "invalid_nickname"}, {}
        if nick not in ("self", self.nickname):
            return 404, {"error": "unknown_node", "detail": nick}, {}
        if len(raw) > 64 * 1024:
            return 413, {"error": "body_too_large"}, {}
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return 401, {"error": "unauthorized"}, {}
        if not self.tokens:
            return 501, {"error": "not_initialized"}, {}
        secret = auth.removeprefix("Bearer ")
        if not any(hmac.compare_digest(secret, t) for t in self.tokens):
            return 401, {"error": "unauthorized"}, {}
        now = time.monotonic()
        uses = [t for t in self._uses.get(secret, []) if now - t < 60]
        if len(uses) >= self.rate_per_min:
            return 429, {"error": "rate_limited"}, {"Retry-After": "42"}
        self._uses[secret] = [*uses, now]
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"error": "invalid_json"}, {}
        problem = _payload_problem(body)
        if problem:
            return 400, {"error": "bad_payload", "detail": problem}, {}
        if not self.companion_up:
            return 503, {"error": "aisctl_serve_unavailable"}, {}
        args = body.get("args") or {}
        self.commands.append({"nickname": nick, "command": body["command"], "args": args})
        out = self.outcomes.get((body["command"], args.get("engine")), Outcome())
        answer: dict[str, Any] = {
            "ok": out.ok,
            "exit_code": out.exit_code,
            "stdout": out.stdout or f"{body['command']} {args.get('engine', '')}: done\n",
            "stderr": out.stderr,
            "duration_ms": 37,
            "command": body["command"],
            "nickname": nick,
        }
        if not out.ok:
            answer["error"] = out.error or "command_failed"
            if out.detail:
                answer["detail"] = out.detail
        return (200 if out.ok else 500), answer, {}


def _payload_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or set(body) - {"command", "args"}:
        return "expected {command, args}"
    cmd, args = body.get("command"), body.get("args") or {}
    if cmd not in BUDGETS:
        return f"unknown command {cmd!r}"
    if not isinstance(args, dict) or set(args) - {"engine", "model"}:
        return "args: only engine and model"
    engine, model = args.get("engine"), args.get("model")
    if cmd != "purge" and not engine:
        return "engine required"
    if engine is not None and not (isinstance(engine, str) and ENGINE_RE.match(engine)):
        return "bad engine"
    if model is not None and not (isinstance(model, str) and MODEL_RE.match(model)):
        return "bad model"
    return None


@dataclass
class OllamaModel:
    name: str
    size: int
    quant: str = "Q4_K_M"


@dataclass
class FakeOllamaState:
    installed: set[str] = field(default_factory=set)
    loaded: list[OllamaModel] = field(default_factory=list)


class FakeOllama(_Server):
    def __init__(self, loaded: list[OllamaModel] | None = None, version: str = "0.12.6") -> None:
        super().__init__()
        self.version = version
        models = loaded if loaded is not None else [OllamaModel("qwen3:8b", 6_200_000_000)]
        self.state = FakeOllamaState({m.name for m in models}, list(models))

    def handle(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        body = json.loads(raw) if raw else None
        self.seen.append(Seen(method, path, headers, body))
        if method == "GET" and path == "/api/version":
            return 200, {"version": self.version}, {}
        if method == "GET" and path == "/api/ps":
            return 200, {"models": [self._ps_entry(m) for m in self.state.loaded]}, {}
        if method == "POST" and path == "/api/generate":
            name = (body or {}).get("model")
            if name not in self.state.installed:
                return 404, {"error": f"model '{name}' not found"}, {}
            if body.get("keep_alive") == 0 and not body.get("prompt"):
                self.state.loaded = [m for m in self.state.loaded if m.name != name]
                return (
                    200,
                    {
                        "model": name,
                        "created_at": "2025-01-01T00:00:00Z",
                        "response": "",
                        "done": True,
                        "done_reason": "unload",
                    },
                    {},
                )
            return 400, {"error": "this fake only unloads"}, {}
        return 404, {"error": "not found"}, {}

    @staticmethod
    def _ps_entry(m: OllamaModel) -> dict:
        return {
            "name": m.name,
            "model": m.name,
            "size": m.size,
            "size_vram": m.size,
            "digest": "0" * 64,
            "details": {"format": "gguf", "quantization_level": m.quant},
            "expires_at": "2318-01-01T00:00:00Z",
        }

    def posts(self) -> list[Any]:
        return [s.body for s in self.seen if s.method == "POST"]


@contextmanager
def running(server: _Server) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
