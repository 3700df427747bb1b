"""`fleet demo`: a throwaway simulated fleet with real agents, real tokens and a real config.

Everything lives in one temporary directory (HOME and the XDG dirs of the agents point into it).
Up to PER_NODE_MAX nodes each get their own `fleet agent serve --simulate` process, so an
operator can kill one and watch its row turn OFFLINE while the rest go on; larger demos share
one `--nodes N` process. `close()` stops them and deletes the directory however the dashboard
ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import tomlkit

from fleettui.agent.config import SIM_NODES_MAX
from fleettui.fsutil import atomic_write

SERVING_RE = re.compile(r"serving (\S+) on (http://\S+)")
ROLES = ("inference", "inference", "embeddings", "batch")
RACKS = ("rack-a", "rack-b", "rack-c")
PER_NODE_MAX = 16  # one agent process per node up to here (each costs ~40 MB)


def _die_with_parent() -> None:
    """Linux, in the agent's child process: SIGTERM it if `fleet demo` dies without cleaning
    up (SIGKILL, OOM), so no simulated agent outlives the demo. Runs before the dashboard
    starts any thread, so forking here is safe."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class DemoError(RuntimeError):
    """The demo fleet could not be started; the message says why."""


class DemoFleet:
    """Start with `with DemoFleet(8) as demo:`; `demo.config_path` is the fleet config."""

    def __init__(
        self,
        nodes: int = 8,
        *,
        interval_s: float = 1.0,
        poll_interval_s: float = 1.0,
        startup_timeout_s: float = 30.0,
    ) -> None:
        if not 1 <= nodes <= SIM_NODES_MAX:  # the simulated agent's own limit
            raise DemoError(f"--nodes must be between 1 and {SIM_NODES_MAX}, not {nodes}")
        self.nodes = nodes
        self.interval_s = interval_s
        self.poll_interval_s = poll_interval_s
        self.startup_timeout_s = startup_timeout_s
        self.tmp: Path | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: dict[str, str] = {}
        self.token_file: Path | None = None
        self.config_path: Path | None = None

    # --- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> DemoFleet:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="fleet-demo-"))
        self.token_file = self._create_token()
        self._start_agent()
        self.config_path = self._write_config()

    def close(self) -> None:
        """Stop the agents and delete the temporary directory; safe to call twice."""
        procs, self.procs = self.procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        tmp, self.tmp = self.tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    # --- steps -----------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """The environment of the demo's agent: its HOME and XDG dirs inside the temp dir."""
        assert self.tmp is not None
        home = self.tmp / "home"
        env = {
            k: v for k, v in os.environ.items() if k not in ("FLEET_CONFIG", "FLEET_AGENT_CONFIG")
        }
        env["HOME"] = str(home)
        for var, sub in (
            ("XDG_CONFIG_HOME", ".config"),
            ("XDG_STATE_HOME", ".local/state"),
            ("XDG_DATA_HOME", ".local/share"),
            ("XDG_CACHE_HOME", ".cache"),
        ):
            env[var] = str(home / sub)
        return env

    def _fleet(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fleettui", *args]

    def _create_token(self) -> Path:
        """One action token for every demo node (their agents share one HOME, so one store)."""
        assert self.tmp is not None
        try:
            out = subprocess.run(
                self._fleet("agent", "token", "create", "--label", "fleet-demo", "--json"),
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DemoError("creating the demo token timed out") from None
        if out.returncode != 0:
            raise DemoError(f"could not create the demo token: {out.stderr.strip()[-500:]}")
        try:
            secret = json.loads(out.stdout)["secret"]
        except (ValueError, KeyError, TypeError):
            raise DemoError("`fleet agent token create --json` printed no secret") from None
        path = self.tmp / "demo.token"
        atomic_write(path, secret + "\n", mode=0o600)
        return path

    def _start_agent(self) -> None:
        assert self.tmp is not None
        common = ["agent", "serve", "--simulate", "--port", "0", "--interval", str(self.interval_s)]
        if self.nodes <= PER_NODE_MAX:
            runs = [
                (f"demo-{i:03d}", [*common, "--name", f"demo-{i:03d}"]) for i in range(self.nodes)
            ]
        else:
            runs = [("demo", [*common, "--nodes", str(self.nodes), "--name", "demo"])]
        logs = []
        for label, args in runs:
            out_path, err_path = self.tmp / f"{label}.out", self.tmp / f"{label}.err"
            with out_path.open("wb") as out, err_path.open("wb") as err:
                self.procs.append(
                    subprocess.Popen(
                        self._fleet(*args),
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                    )
                )
            logs.append((out_path, err_path))
        deadline = time.monotonic() + self.startup_timeout_s
        urls: dict[str, str] = {}
        while len(urls) < self.nodes:
            for (out_path, err_path), proc in zip(logs, self.procs, strict=True):
                for m in SERVING_RE.finditer(out_path.read_text(errors="replace")):
                    urls[m.group(1)] = m.group(2)
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = err_path.read_text(errors="replace").strip()[-800:]
                    state = "exited" if proc.poll() is not None else "did not start in time"
                    raise DemoError(f"a simulated agent {state}: {why or 'no output'}")
            time.sleep(0.05)
        self.urls = dict(sorted(urls.items()))

    def _write_config(self) -> Path:
        assert self.tmp is not None
        nodes = []
        for i, (name, url) in enumerate(self.urls.items()):
            node: dict[str, object] = {
                "name": name,
                "url": url,
                "role": ROLES[i % len(ROLES)],
                "tags": ["demo", RACKS[i % len(RACKS)]],
            }
            if self.token_file is not None:
                node["token_file"] = str(self.token_file)
            nodes.append(node)
        doc = {"defaults": {"poll_interval_s": self.poll_interval_s}, "node": nodes}
        path = self.tmp / "projects.toml"
        atomic_write(path, "# written by `fleet demo`; deleted on exit\n" + tomlkit.dumps(doc))
        return path

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


@contextlib.contextmanager
def exit_on_signals():  # type: ignore[no-untyped-def]
    """Turn SIGTERM and SIGHUP into SystemExit so `with DemoFleet()` still cleans up."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
