"""The agent's write side: POST /api/v1/actions from raw bytes to an audited result.

Order of checks, each before any process starts (every attempt, refused or not, is audited):
  0. foreign Host 421, foreign Origin 403, not application/json 415 (guard.py, before routing)
  1. body over 64 KiB -> 413 (Content-Length first, then a running cap while streaming), or
     not received within BODY_TIMEOUT_S -> 408; then it is parsed once, strictly (body.py)
  2. missing / unknown / revoked token -> 401, all alike, constant-time comparison; past
     `auth_failures_per_min` failures from one address -> 429 with Retry-After
  3. over the per-token rate limit -> 429 with Retry-After
  4. a body that is not a request, not a whitelisted action, or an argument failing its
     pattern -> 400 naming the field
  5. nothing configured for the action -> 400 naming the agent.toml key to set
  6. another action already running on the same engine -> 409
Refusals up to 3 are recorded through refusals.RefusalLog (aggregated per address and window),
the later ones one entry each (they need a valid token, so the token's rate limit bounds them).

While the start-up verification of the audit chain runs (seconds at 1M entries, in the
background: reads are served meanwhile) a request that passed 1-6 is answered 503 with how far
it is and Retry-After; refusals meanwhile are held (at most MAX_PENDING) and recorded once the
chain verified, since nothing may extend it before.

Then the intent is recorded (`started`, chained and fsync'd) -- when that fails the answer is
503 and nothing runs -- and the action runs: an argv the administrator configured (list argv,
never a shell, its own timeout, the process group killed on timeout), the engine's own unload
API, or, on a simulated node without a configured argv, the simulation. An argv element that is
exactly `{engine}` or `{model}` is replaced by the validated value;
nothing else is ever substituted.

Executed actions answer 200 with `ok` false when the command failed: the request itself was
valid and handled, and the exit code and output tail say what went wrong. The outcome (`ok` /
`failed`) is a second audit entry whose `ref` is the seq of the `started` one.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from fleettui.agent import load
from fleettui.agent.audit import AUDIT_FILE, AuditError, AuditLog
from fleettui.agent.body import Body, parse_body
from fleettui.agent.config import DEFAULT_ENGINE_URLS, EngineConfig
from fleettui.agent.ratelimit import RateLimiter, address_key, retry_after_header
from fleettui.agent.refusals import RefusalLog, Rejection
from fleettui.agent.tokens import SECRET_SHAPE_RE, TokenStore, tokens_path
from fleettui.fsutil import STALE_TEMP_S, remove_stale_temps
from fleettui.wire import (
    ACTION_TIMEOUTS_S,
    AUDIT_PROBLEM_PREFIX,
    LOAD_PARAMS,
    ActionEvent,
    ActionRequest,
    ActionResult,
    AuditEntry,
    AuditHead,
    NodeSnapshot,
    action_problem,
)

if TYPE_CHECKING:
    from fleettui.agent.node import NodeAgent

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
BODY_TIMEOUT_S = 10.0
TAIL_CHARS = 2000
KEEP_BYTES = 16 * 1024
DRAIN_AFTER_EXIT_S = 0.5
AUDIT_PAGE_DEFAULT = 100
AUDIT_PAGE_MAX = 1000
MAX_PENDING = 4096  # refusals held while the chain is verified; past it they are only counted
VERIFYING = "audit chain being verified: "  # not AUDIT_PROBLEM_PREFIX: nothing is damaged
REQUEST_FIELDS = ("action", "engine", "model", *LOAD_PARAMS)
ACTIONS_PATH = "/api/v1/actions"
# Said alike to a client that sent no token and to one whose token is wrong or revoked, so it
# must fit both: telling someone who sent a token to send one sends them the wrong way.
UNAUTHORIZED_DETAIL = "no valid token: missing, unknown or revoked (fleet agent token list)"
REDACTED = "[redacted]"


# --- input -----------------------------------------------------------------------------------


def scrub(value: str, secret: str | None, limit: int = 200) -> str:
    """For responses, logs and the audit: no token secret, and bounded length."""
    if secret:
        value = value.replace(secret, REDACTED)
    value = SECRET_SHAPE_RE.sub(REDACTED, value)
    return value if len(value) <= limit else value[:limit] + "..."


def _show(value: str, secret: str | None) -> str:
    return repr(scrub(value, secret, 80))


def audit_view(
    data: dict[str, Any] | None, secret: str | None
) -> tuple[str | None, dict[str, Any]]:
    """Best effort (action, args) of a parsed body, for the audit line of a refused attempt."""
    if data is None:
        return None, {}
    action = data.get("action")
    args: dict[str, Any] = {}
    for key in REQUEST_FIELDS[1:]:
        v = data.get(key)
        if isinstance(v, str):
            args[key] = scrub(v, secret)
        elif isinstance(v, bool) or (isinstance(v, int) and abs(v) < 10**12):
            args[key] = v
        elif v is not None:
            args[key] = f"<{type(v).__name__}>"
    extra = sorted(scrub(str(k), secret, 40) for k in data if k not in REQUEST_FIELDS)
    if extra:
        args["unknown_fields"] = extra[:10]
    shown = scrub(action, secret, 64) if isinstance(action, str) else None
    return shown, args


def request_from(body: Body, secret: str | None = None) -> ActionRequest:
    """Parsed body -> validated request, or Rejection(400) naming the field. Never echoes a
    secret: a value shaped like a token is refused before the wire's rule shows any value."""
    if body.problem is not None or body.data is None:
        raise body.problem or Rejection(400, "body is not JSON")
    data = body.data
    unknown = [k for k in data if k not in REQUEST_FIELDS]
    if unknown:
        names = [scrub(str(k), secret, 40) for k in unknown[:5]]
        raise Rejection(400, "unknown field", {"fields": names, "allowed": list(REQUEST_FIELDS)})
    for key in ("action", "engine", "model"):  # the load parameters' types: action_problem
        v = data.get(key)
        if (v is None and key == "action") or (v is not None and not isinstance(v, str)):
            what = "missing" if v is None else f"a {type(v).__name__}"
            raise Rejection(400, f"{key} must be a string", {"field": key, "got": what})
    action, engine, model = data["action"], data.get("engine"), data.get("model")
    params = {k: data[k] for k in LOAD_PARAMS if data.get(k) is not None}
    texts = [("action", action), ("engine", engine), ("model", model)]
    texts += [(k, v) for k, v in params.items() if isinstance(v, str)]
    for key, v in texts:
        if v is not None and ((secret and secret in v) or SECRET_SHAPE_RE.search(v)):
            raise Rejection(
                400,
                f"{key} looks like an access token; refusing to use or record it",
                {"field": key},
            )
    if problem := action_problem(action, engine, model, **params):
        raise Rejection(
            400,
            problem.text(lambda v: _show(v, secret)),
            {"field": problem.field, **problem.detail},
        )
    return ActionRequest(action=action, engine=engine, model=model, **params)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


async def read_body(request: Request) -> bytes:
    """The whole body within MAX_BODY and BODY_TIMEOUT_S, or the Rejection that says why not."""
    try:
        with anyio.fail_after(BODY_TIMEOUT_S):
            body = await read_capped(request)
    except ClientDisconnect:
        raise Rejection(400, "client disconnected before sending the body") from None
    except TimeoutError:
        raise Rejection(408, f"body not received within {BODY_TIMEOUT_S:g} s") from None
    if body is None:
        raise Rejection(413, f"request body over {MAX_BODY} bytes")
    return body


async def read_capped(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The body, or None once it is known to exceed `limit` (never reading more than that)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                return None
        except ValueError:
            raise Rejection(400, "bad Content-Length header") from None
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


# --- plans and runners -------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool
    exit_code: int | None = None
    output: str = ""
    error: str | None = None


@dataclass
class Plan:
    """What will run for a validated request; built before anything starts."""

    req: ActionRequest
    via: str  # "argv" | "api" | "simulated"
    timeout_s: float
    argv: list[str] = field(default_factory=list)
    engine_kind: str | None = None
    engine_url: str | None = None
    pull: bool = False  # load, Ollama: POST /api/pull first
    lms: list[str] | None = None  # load, LM Studio without a REST load: the lms CLI
    fit: load.Fit | None = None  # load: the agent's own check, made before the intent is audited
    snapshot: NodeSnapshot | None = None  # the fresh one the check was made on

    @property
    def busy_key(self) -> str:
        return self.req.engine or "(node)"


def fill_argv(template: list[str], req: ActionRequest, key: str) -> list[str]:
    out = []
    for arg in template:
        if arg == "{engine}":
            out.append(req.engine or "")
        elif arg == "{model}":
            if req.model is None:
                raise Rejection(400, f"{key} uses {{model}}; send a model", {"field": "model"})
            out.append(req.model)
        else:
            out.append(arg)
    if "" in out:
        raise Rejection(400, f"{key} uses {{engine}}; send an engine", {"field": "engine"})
    return out


def service_argv(eng: EngineConfig, action: str, uid: int) -> list[str] | None:
    """start / stop / restart of an engine run by launchd (`launchctl kickstart -k`, `bootout`,
    `bootstrap`, in the agent user's domain) or, for LM Studio, by its `lms` CLI."""
    if (job := eng.launchd) is not None:
        target = f"{job.domain}/{uid}"
        service = f"{target}/{job.label}"
        if action == "restart":
            return [job.launchctl, "kickstart", "-k", service]
        if action == "stop":
            return [job.launchctl, "bootout", service]
        if action == "start" and job.plist:  # a job booted out is gone: its plist brings it back
            return [job.launchctl, "bootstrap", target, job.plist]
        if action == "start":
            return [job.launchctl, "kickstart", service]
    if eng.lms is not None and action in ("start", "stop"):
        return [eng.lms, "server", action]
    return None


def _tail(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text[-TAIL_CHARS:]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def run_argv(argv: list[str], timeout_s: float) -> Outcome:
    """Run an argv (no shell) in its own session; kill the whole group on timeout.

    Output is read while the process runs so a chatty command cannot block on a full pipe; once
    it exits, a daemon it left holding the pipe gets DRAIN_AFTER_EXIT_S, not the full timeout.
    """
    try:
        proc = await anyio.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return Outcome(False, None, "", f"cannot run {argv[0]}: {exc.strerror or exc}")
    buf = bytearray()
    drained = anyio.Event()
    timed_out = False

    async def reader() -> None:
        assert proc.stdout is not None
        try:
            async for chunk in proc.stdout:
                buf.extend(chunk)
                del buf[:-KEEP_BYTES]
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        drained.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            with anyio.move_on_after(timeout_s) as scope:
                await proc.wait()
            if scope.cancelled_caught:
                timed_out = True
                _kill_group(proc.pid)
                await proc.wait()
            with anyio.move_on_after(DRAIN_AFTER_EXIT_S):
                await drained.wait()
            tg.cancel_scope.cancel()
    finally:
        if proc.returncode is None:  # cancelled (agent shutting down): leave nothing behind
            _kill_group(proc.pid)
        with anyio.CancelScope(shield=True):
            await proc.aclose()
    code = proc.returncode
    if timed_out:
        return Outcome(False, code, _tail(bytes(buf)), f"timed out after {timeout_s:g} s; killed")
    err = None if code == 0 else f"exited with status {code}"
    return Outcome(code == 0, code, _tail(bytes(buf)), err)


async def _unload_http(client: httpx.AsyncClient, plan: Plan) -> Outcome:
    """Unload through the engine's own API: Ollama keep_alive 0, LM Studio, llama.cpp router."""
    base = (plan.engine_url or "").rstrip("/")
    kind, model = plan.engine_kind, plan.req.model
    lines: list[str] = []
    failed: list[str] = []

    async def post(path: str, body: dict[str, Any], name: str) -> None:
        r = await client.post(f"{base}{path}", json=body)
        if 200 <= r.status_code < 300:
            lines.append(f"unloaded {name}")
        else:
            failed.append(name)
            lines.append(f"{name}: HTTP {r.status_code} {r.text[:200]}")

    try:
        if kind == "ollama":
            names = [model] if model else await _ollama_loaded(client, base)
            for m in names:
                await post("/api/generate", {"model": m, "keep_alive": 0}, m)
        elif kind == "lmstudio":
            names = [model] if model else await _lmstudio_loaded(client, base)
            for m in names:
                await post("/api/v1/models/unload", {"instance_id": m}, m)
        else:  # llamacpp router mode; plan() made sure there is a model
            names = [model or ""]
            await post("/models/unload", {"model": model}, model or "")
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        what = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
        return Outcome(False, None, _tail("\n".join(lines)), f"{kind} at {base}: {what}")
    if not names:
        lines.append("no model loaded")
    err = f"could not unload {', '.join(failed)}" if failed else None
    return Outcome(not failed, None, _tail("\n".join(lines)), err)


async def _ollama_loaded(client: httpx.AsyncClient, base: str) -> list[str]:
    r = await client.get(f"{base}/api/ps")
    r.raise_for_status()
    return [m["name"] for m in r.json()["models"]]


async def _lmstudio_loaded(client: httpx.AsyncClient, base: str) -> list[str]:
    r = await client.get(f"{base}/api/v1/models")
    r.raise_for_status()
    return [i["id"] for m in r.json()["models"] for i in m.get("loaded_instances") or []]


# --- the service -------------------------------------------------------------------------


@dataclass
class Attempt:
    """What the audit line of one request will say."""

    started: float
    t0: float
    source_ip: str | None
    token_id: str | None = None
    action: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


class ActionService:
    """Tokens, rate limits, validation, execution and audit for one node."""

    def __init__(self, agent: NodeAgent, tokens: TokenStore, audit: AuditLog) -> None:
        self.agent = agent
        self.config = agent.config
        self.tokens = tokens
        self.audit = audit
        self.limiter = RateLimiter(self.config.rate_limit_per_min)
        self.auth_failures = RateLimiter(self.config.auth_failures_per_min)
        self.refusals = RefusalLog(self._append, window_s=self.config.refusal_window_s)
        self.busy: set[str] = set()
        self._client: httpx.AsyncClient | None = None
        self._pending: list[dict[str, Any]] | None = []  # None once the chain is verified
        self._pending_dropped = 0

    @classmethod
    def for_agent(cls, agent: NodeAgent, tokens: TokenStore | None = None) -> ActionService:
        """Tokens are per machine (shared by every simulated node); audit logs are per node."""
        data = agent.config.data_path()
        if agent.simulated is not None:
            data = data / "nodes" / agent.simulated.name
        audit = AuditLog(data / AUDIT_FILE, rotate_bytes=agent.config.audit_rotate_bytes)
        return cls(agent, tokens or TokenStore(tokens_path()), audit)

    async def start(self) -> None:
        """What must be done before serving (fast); the chain is verified by `verify`."""
        await anyio.to_thread.run_sync(self.audit.peek)
        await anyio.to_thread.run_sync(self._remove_stale_temps)
        await anyio.to_thread.run_sync(self.tokens.refresh)

    async def verify(self, limiter: anyio.CapacityLimiter | None = None) -> None:
        """The start-up verification in a worker thread, then the refusals held meanwhile.
        Cancelled (the agent stops), it asks the walk to stop and waits for it: a thread left
        running could be killed mid-append at exit."""
        progress = self.audit.progress
        done = threading.Event()

        def work() -> None:
            try:
                self.audit.open()
            finally:
                done.set()

        try:
            await anyio.to_thread.run_sync(work, abandon_on_cancel=True, limiter=limiter)
        except anyio.get_cancelled_exc_class():
            if progress is not None:
                progress.stop.set()
            with anyio.CancelScope(shield=True):
                while not done.is_set():
                    await anyio.sleep(0.01)
            if self._pending:
                log.warning(
                    "audit: %d refusals not recorded: the agent stopped before its chain "
                    "was verified",
                    len(self._pending) + self._pending_dropped,
                )
            raise
        pending, self._pending = self._pending or [], None
        for fields in pending:
            await self._append(fields)
        if self._pending_dropped:
            await self._append(self._dropped_record(self._pending_dropped))
        self.agent.write_side_changed()

    @staticmethod
    def _dropped_record(n: int) -> dict[str, Any]:
        return {
            "ts": round(time.time(), 6),
            "action": None,
            "args": {"refusals": n},
            "status": "denied",
            "http_status": 503,
            "error": f"{n} more refusals while the chain was being verified (over {MAX_PENDING}: "
            "counted, not recorded one by one)",
        }

    def verifying(self) -> str | None:
        """How far the start-up verification is, or None once it is done."""
        progress = self.audit.progress
        return None if progress is None else VERIFYING + progress.describe()

    def _remove_stale_temps(self) -> None:
        """Temp files of atomic writes a kill -9 interrupted (a token file's may hold hashes)."""
        targets = [self.tokens.path]
        if self.agent.ledger.state_file is not None:
            targets.append(self.agent.ledger.state_file)
        for target in targets:
            for p in remove_stale_temps(target.parent, target.name, older_than_s=STALE_TEMP_S):
                log.info("removed stale temp file %s", p)

    async def aclose(self) -> None:
        await self.refusals.flush(force=True)
        if self._client is not None:
            await self._client.aclose()

    def audit_head(self) -> AuditHead:
        return self.audit.head()

    def problems(self) -> list[str]:
        out = []
        if (verifying := self.verifying()) is not None:
            out.append(f"{verifying}; actions are refused until it is done")
        if self.audit.problem:
            out.append(AUDIT_PROBLEM_PREFIX + self.audit.problem)
        if self.tokens.problem:
            out.append(f"tokens: {self.tokens.problem}")
        return out

    # -- reads
    async def authorize_read(self, request: Request) -> Response | None:
        """With read_token_required, any valid token may read; None means allowed."""
        if not self.config.read_token_required:
            return None
        await anyio.to_thread.run_sync(self.tokens.refresh)
        if self.tokens.check(bearer(request.headers.get("authorization"))).ok:
            return None
        client = request.client.host if request.client else None
        return self._auth_throttled(client) or unauthorized()

    def _auth_throttled(self, source_ip: str | None) -> JSONResponse | None:
        """Count one failed authentication; the 429 once the address is over its limit.

        A valid token is never throttled, even from an address others flood (NAT, loopback):
        guessing a 256-bit secret is hopeless at any rate, so the limit is about the cost of
        failures, and a lockout would let any local user deny the dashboard."""
        wait = self.auth_failures.hit(address_key(source_ip))
        if not wait:
            return None
        resp = _error(
            429,
            "too many failed authentications from this address",
            {"limit_per_min": self.auth_failures.limit, "retry_after_s": round(wait, 1)},
        )
        resp.headers["Retry-After"] = retry_after_header(wait)
        return resp

    async def audit_page(self, request: Request) -> Response:
        q = request.query_params
        try:
            after = _int_param(q.get("after"), "after", 0, 0, None)
            limit = _int_param(q.get("limit"), "limit", AUDIT_PAGE_DEFAULT, 1, AUDIT_PAGE_MAX)
        except Rejection as exc:
            return _error(exc.status, exc.message, exc.detail)
        body = await anyio.to_thread.run_sync(self.audit.page_json, after, limit)
        return Response(body, media_type="application/json")

    # -- writes
    async def handle(self, request: Request) -> Response:
        at = Attempt(
            time.time(), time.perf_counter(), request.client.host if request.client else None
        )
        secret = bearer(request.headers.get("authorization"))
        authenticated = False
        if secret is None and self.auth_failures.wait(address_key(at.source_ip)):
            # Cannot authenticate, and its address is over the limit: answer before any work
            # (body, token store), so a no-token flood costs the least it can.
            throttled = self._auth_throttled(at.source_ip)
            assert throttled is not None
            await self._record_refusal(at, 429, "too many failed authentications: no token", True)
            return throttled
        try:
            body = parse_body(await read_body(request))
            at.action, at.args = audit_view(body.data, secret)
            await anyio.to_thread.run_sync(self.tokens.refresh)
            auth = self.tokens.check(secret)
            at.token_id = auth.token_id
            if not auth.ok:
                if (throttled := self._auth_throttled(at.source_ip)) is not None:
                    why = f"too many failed authentications: {auth.reason}"
                    await self._record_refusal(at, 429, why, True)
                    return throttled
                rej = Rejection(401, "unauthorized")
                return await self._refuse(at, rej, auth.reason, aggregate=True)
            if self.tokens.note_use(auth.token_id or "", time.time()):
                await anyio.to_thread.run_sync(self.tokens.persist_last_used)
            wait = self.limiter.hit(auth.token_id or "")
            if wait:
                resp = await self._refuse(
                    at,
                    Rejection(
                        429,
                        "rate limited",
                        {"limit_per_min": self.limiter.limit, "retry_after_s": round(wait, 1)},
                    ),
                    aggregate=True,
                )
                resp.headers["Retry-After"] = retry_after_header(wait)
                return resp
            authenticated = True
            req = request_from(body, secret)
            plan = self.plan(req)
            if plan.busy_key in self.busy:
                raise Rejection(409, f"an action is already running on {plan.busy_key}")
        except Rejection as rej:
            return await self._refuse(at, rej, aggregate=not authenticated)
        if (verifying := self.verifying()) is not None:
            return await self._refuse_verifying(at, verifying)
        if req.action == "load":
            self.busy.add(plan.busy_key)  # held while the fresh snapshot is collected
            try:
                await self._check_load(plan)
            except Exception as exc:  # a check that cannot be made is a refusal, never a 5xx
                self.busy.discard(plan.busy_key)
                if not isinstance(exc, Rejection):
                    log.exception("load: the fit check failed")
                    exc = Rejection(
                        409, f"cannot check the fit: internal error ({type(exc).__name__})"
                    )
                if plan.fit is not None:
                    at.args["fit"] = load.audit_fit(plan.fit)
                return await self._refuse(at, exc)
        return await self._execute(at, plan)

    async def _check_load(self, plan: Plan) -> None:
        """On a fresh snapshot of this node: the llama.cpp router check, then the fit gate."""
        req = plan.req
        snap = await self.agent.fresh()
        plan.snapshot = snap
        if plan.via == "api" and plan.engine_kind == "llamacpp":
            if not load.engine_router(snap, req.engine or ""):
                raise Rejection(
                    400,
                    f"{req.engine} is not in router mode (llama-server was started with a "
                    "model): it loads no other; set "
                    f"engines.{req.engine}.commands.load in agent.toml",
                    {"configure": f"engines.{req.engine}.commands.load"},
                )
        meta = None
        if plan.engine_kind == "llamacpp" and not load.known_meta(snap, req.model or ""):
            try:
                base = (plan.engine_url or "").rstrip("/")
                meta = await load.router_meta(self._http(), base, req.model or "")
            except (httpx.HTTPError, ValueError):
                meta = None  # the fit says what is missing
        plan.fit = load.fit_for(snap, req, meta)
        if (rej := load.gate(plan.fit, req)) is not None:
            raise rej

    async def _refuse_verifying(self, at: Attempt, verifying: str) -> JSONResponse:
        progress = self.audit.progress
        left = progress.remaining_s() if progress is not None else None
        wait = 5.0 if left is None else min(60.0, max(1.0, left))
        detail = {"retry_after_s": round(wait, 1)}
        if progress is not None and not progress.waiting_for_lock:
            detail |= {"verified": progress.done, "of": progress.total}
        resp = await self._refuse(
            at, Rejection(503, f"{verifying}; actions refused until then", detail)
        )
        resp.headers["Retry-After"] = retry_after_header(wait)
        return resp

    async def guard_refused(self, scope: Scope, rej: Rejection) -> None:
        """Record a write refused by the Host/Origin/Content-Type guard (reads are not)."""
        if scope.get("path") != ACTIONS_PATH or scope.get("method") != "POST":
            return
        client = scope.get("client")
        at = Attempt(time.time(), time.perf_counter(), client[0] if client else None)
        await self._record_refusal(at, rej.status, rej.message, True)

    def plan(self, req: ActionRequest) -> Plan:
        """Decide what will run, or refuse with the agent.toml key to configure."""
        cfg, sim = self.config, self.agent.simulated
        eng_cfg = cfg.engines.get(req.engine) if req.engine else None
        timeout = ACTION_TIMEOUTS_S[req.action]
        sim_has = sim is not None and req.engine is not None and sim.engine(req.engine) is not None
        if req.action == "purge":
            key = f"engines.{req.engine}.commands.purge" if req.engine else "purge"
            argv = (eng_cfg.commands.get("purge") if eng_cfg else None) if req.engine else cfg.purge
            if argv:
                return Plan(req, "argv", timeout, fill_argv(argv, req, key))
            if sim is not None and (req.engine is None or sim_has):
                return Plan(req, "simulated", timeout)
            hint = (
                " (or send purge without an engine for the node-wide purge)" if req.engine else ""
            )
            raise Rejection(
                400,
                f"purge is not configured: set {key} in agent.toml{hint}",
                {"configure": key, "example": '["sync"]'},
            )
        assert req.engine is not None
        key = f"engines.{req.engine}.commands.{req.action}"
        argv = eng_cfg.commands.get(req.action) if eng_cfg else None
        argv = argv or (service_argv(eng_cfg, req.action, os.getuid()) if eng_cfg else None)
        if argv:
            if req.action == "load":
                load.check_applies(req, load.argv_params(argv), key)
                argv = load.fill_load_placeholders(argv, req, key)
            return Plan(req, "argv", timeout, fill_argv(argv, req, key))
        if sim is not None:
            if sim_has:
                return Plan(req, "simulated", timeout)
            raise Rejection(
                400, f"engine {req.engine!r} is not present on this node", {"field": "engine"}
            )
        kind, url = self._engine_target(req.engine)
        if kind is None:
            raise Rejection(
                400,
                f"engine {req.engine!r} is not configured on this node: set {key} in agent.toml",
                {"configure": key, "example": f'["systemctl", "{req.action}", "{req.engine}"]'},
            )
        if req.action == "unload" and (
            kind in ("ollama", "lmstudio") or (kind == "llamacpp" and req.model)
        ):
            return Plan(req, "api", timeout, engine_kind=kind, engine_url=url)
        if req.action == "load" and kind in load.API_PARAMS:
            load.check_applies(req, load.API_PARAMS[kind], f"{kind}'s load API")
            lms = eng_cfg.lms if eng_cfg else None
            return Plan(
                req,
                "api",
                timeout,
                engine_kind=kind,
                engine_url=url,
                pull=bool(eng_cfg and eng_cfg.pull),
                lms=[lms] if lms else None,
            )
        examples = {
            "unload": '["/usr/local/bin/unload-model", "{model}"]',
            "load": '["/usr/local/bin/swap-model", "{model}", "{ctx}"]',
        }
        example = examples.get(req.action, f'["systemctl", "{req.action}", "{req.engine}"]')
        bare = " without a model" if kind == "llamacpp" else ""
        why = {
            "unload": f" ({kind} has no unload API{bare})",
            "load": f" ({kind} has no load API: it serves the model it was started with)",
        }
        raise Rejection(
            400,
            f"{req.action} is not configured for {req.engine}: set {key} in agent.toml"
            + why.get(req.action, ""),
            {"configure": key, "example": example},
        )

    def _engine_target(self, name: str) -> tuple[str | None, str | None]:
        eng = self.config.engines.get(name)
        if eng is not None:
            return eng.kind or name, eng.url
        snap = self.agent.latest
        for e in snap.engines if snap else []:
            if e.name == name:
                return (name if name in DEFAULT_ENGINE_URLS else None), e.url
        return None, None

    async def _run(self, plan: Plan) -> Outcome:
        if plan.req.action == "load":
            return await self._run_load(plan)
        return await self._run_one(plan)

    async def _run_load(self, plan: Plan) -> Outcome:
        """Evict what the fit named (not when forced), then load; the output says both."""
        lines = [load.describe_fit(plan.fit)] if plan.fit else []
        if plan.req.force and plan.fit is not None and plan.fit.verdict != "fits":
            lines.append(f"forced: loading although the check said {plan.fit.verdict}")
        elif plan.fit is not None and plan.fit.evict and plan.snapshot is not None:
            evicted = await load.evict_first(plan.fit, plan.snapshot, self._unload_one)
            if evicted is not None:
                lines += evicted.lines
                if not evicted.ok:
                    return Outcome(False, None, _tail("\n".join(lines)), evicted.error)
        outcome = await self._run_one(plan)
        text = "\n".join([*lines, outcome.output] if outcome.output else lines)
        return Outcome(outcome.ok, outcome.exit_code, _tail(text), outcome.error)

    async def _unload_one(self, engine: str, model: str) -> tuple[bool, str]:
        """One idle model out, through its engine (what the fit said must go first)."""
        req = ActionRequest(action="unload", engine=engine, model=model)
        try:
            plan = self.plan(req)
        except Rejection as rej:
            return False, f"cannot evict {model} from {engine}: {rej.message}"
        out = await self._run_one(plan)
        return out.ok, out.output.strip() or out.error or f"evicted {model}"

    def _http(self) -> httpx.AsyncClient:
        """One client for the engines; they are local, so no proxy from the environment."""
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(10.0))
        return self._client

    async def _run_one(self, plan: Plan) -> Outcome:
        if plan.via == "argv":
            return await run_argv(plan.argv, plan.timeout_s)
        if plan.via == "api":
            with anyio.move_on_after(plan.timeout_s):
                if plan.req.action == "load":
                    return await self._load_http(plan)
                return await _unload_http(self._http(), plan)
            return Outcome(False, None, "", f"timed out after {plan.timeout_s:g} s")
        assert self.agent.simulated is not None
        ok, message = self.agent.simulated.act(plan.req.action, plan.req.engine, plan.req.model)
        return Outcome(ok, None, message, None if ok else message)

    async def _load_http(self, plan: Plan) -> Outcome:
        client, req, t = self._http(), plan.req, plan.timeout_s
        base, kind = (plan.engine_url or "").rstrip("/"), plan.engine_kind

        async def run(argv: list[str]) -> tuple[bool, str, str | None]:
            out = await run_argv(argv, t)
            return out.ok, out.output, out.error

        try:
            if kind == "ollama":
                got = await load.load_ollama(client, base, req, pull=plan.pull, timeout_s=t)
            elif kind == "lmstudio":
                got = await load.load_lmstudio(
                    client, base, req, lms=plan.lms, run=run, timeout_s=t
                )
            else:
                got = await load.load_llamacpp_router(client, base, req, timeout_s=t)
        except httpx.HTTPError as exc:
            what = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
            return Outcome(False, None, "", f"{kind} at {base}: {what}")
        return Outcome(got.ok, None, _tail("\n".join(got.lines)), got.error)

    async def _execute(self, at: Attempt, plan: Plan) -> Response:
        req = plan.req
        at.action, at.args = req.action, {"engine": req.engine, "model": req.model, "via": plan.via}
        if req.action == "load":  # what was asked, and what the agent's own check said
            at.args |= {k: getattr(req, k) for k in load.sent_params(req)}
            at.args["force"] = req.force
            if plan.fit is not None:
                at.args["fit"] = load.audit_fit(plan.fit)
        self.busy.add(plan.busy_key)
        try:  # write-ahead: no record of the intent, no action
            started = await anyio.to_thread.run_sync(
                self.audit.append, self._fields(at, "started", 200)
            )
        except AuditError as exc:
            self.busy.discard(plan.busy_key)
            return await self._refuse(
                at, Rejection(503, "audit log unusable; actions refused", str(exc))
            )
        self._published(started)
        self._publish_action(
            ActionEvent(
                phase="started",
                action=req.action,
                engine=req.engine,
                model=req.model,
                audit_seq=started.seq,
            )
        )
        outcome = Outcome(False, None, "", "cancelled: the agent is shutting down")
        try:
            outcome = await self._run(plan)
        except Exception as exc:  # a runner bug is a failed action, not a dead request
            log.exception("action %s failed unexpectedly", req.action)
            outcome = Outcome(False, None, "", f"internal error: {type(exc).__name__}")
        finally:
            self.busy.discard(plan.busy_key)
            with anyio.CancelScope(shield=True):
                entry = await self._audit(
                    at,
                    "ok" if outcome.ok else "failed",
                    200,
                    error=outcome.error,
                    exit_code=outcome.exit_code,
                    ref=started.seq,
                )
                seq = entry.seq if entry else None
                self._publish_action(
                    ActionEvent(
                        phase="finished",
                        action=req.action,
                        engine=req.engine,
                        model=req.model,
                        ok=outcome.ok,
                        audit_seq=seq,
                    )
                )
        duration = round((time.perf_counter() - at.t0) * 1000, 3)
        log.info(
            "action %s engine=%s model=%s by %s from %s: %s in %.0f ms%s",
            req.action,
            req.engine,
            req.model,
            at.token_id,
            at.source_ip,
            "ok" if outcome.ok else "FAILED",
            duration,
            f" ({outcome.error})" if outcome.error else "",
        )
        result = ActionResult(
            ok=outcome.ok,
            action=req.action,
            engine=req.engine,
            model=req.model,
            exit_code=outcome.exit_code,
            duration_ms=duration,
            output_tail=outcome.output,
            audit_seq=seq,
            error=outcome.error,
        )
        return Response(result.model_dump_json().encode(), media_type="application/json")

    async def _refuse(
        self, at: Attempt, rej: Rejection, why: str | None = None, *, aggregate: bool = False
    ) -> JSONResponse:
        """Audit a refusal and answer it. `why` (401 only) goes to the audit, never the client.
        Refusals before a valid token, and rate-limit ones, are aggregated (refusals.py)."""
        error = rej.message if why is None else f"{rej.message}: {why}"
        await self._record_refusal(at, rej.status, error, aggregate)
        if rej.status == 401:
            return unauthorized()
        return _error(rej.status, rej.message, rej.detail)

    async def _record_refusal(self, at: Attempt, status: int, error: str, aggregate: bool) -> None:
        log.info(
            "refused %r from %s (token %s): %d %r",
            at.action or "request",
            at.source_ip,
            at.token_id,
            status,
            error,
        )
        fields = self._fields(at, "denied", status, error=error)
        if aggregate:
            await self.refusals.record(fields)
        else:
            await self._append(fields)

    @staticmethod
    def _fields(
        at: Attempt,
        status: str,
        http_status: int,
        *,
        error: str | None = None,
        exit_code: int | None = None,
        ref: int | None = None,
    ) -> dict[str, Any]:
        return {
            "ts": round(at.started, 6),
            "source_ip": at.source_ip,
            "token_id": at.token_id,
            "action": at.action,
            "args": at.args,
            "status": status,
            "http_status": http_status,
            "duration_ms": round((time.perf_counter() - at.t0) * 1000, 3),
            "exit_code": exit_code,
            "error": error[:500] if error else None,
            "ref": ref,
        }

    async def _audit(
        self,
        at: Attempt,
        status: str,
        http_status: int,
        *,
        error: str | None = None,
        exit_code: int | None = None,
        ref: int | None = None,
    ) -> AuditEntry | None:
        """Record one entry; a log that cannot be written is logged, not raised (the answer
        still goes out: a refusal, or the outcome of an action whose intent is on record)."""
        fields = self._fields(at, status, http_status, error=error, exit_code=exit_code, ref=ref)
        return await self._append(fields)

    async def _append(self, fields: dict[str, Any]) -> AuditEntry | None:
        if self._pending is not None:  # the chain is not verified yet: nothing may extend it
            if len(self._pending) < MAX_PENDING:
                self._pending.append(fields)
            else:
                self._pending_dropped += 1
            return None
        try:
            entry = await anyio.to_thread.run_sync(self.audit.append, fields)
        except (AuditError, OSError) as exc:
            log.error("audit: could not record %s attempt: %s", fields.get("action"), exc)
            return None
        self._published(entry)
        return entry

    def _published(self, entry: AuditEntry) -> None:
        self.agent.audit_moved(entry.model_dump_json().encode())

    def _publish_action(self, ev: ActionEvent) -> None:
        self.agent.broker.publish("action", ev.model_dump_json().encode())


def _int_param(raw: str | None, name: str, default: int, lo: int, hi: int | None) -> int:
    if raw is None or raw == "":
        return default
    if len(raw) > 20:  # int() of thousands of digits costs, and no seq is that long
        raise Rejection(400, f"{name} must be an integer of at most 20 digits", {"param": name})
    try:
        v = int(raw)
    except ValueError:
        raise Rejection(400, f"{name} must be an integer", {"param": name}) from None
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise Rejection(400, f"{name} must be {rng}", {"param": name})
    return v


def _error(status: int, message: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


def unauthorized() -> JSONResponse:
    resp = _error(401, "unauthorized", UNAUTHORIZED_DETAIL)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="fleet-agent"'
    return resp
