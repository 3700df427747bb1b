"""An engine's own processes, found by the port it listens on (psutil), and what they hold.

The engines do not say which process they are, so the agent looks for the process listening on
the engine's port: its PID (and its children's: Ollama's runners, vLLM's engine core) lets NVML
memory be attributed to the engine, and its resident set is a `measured` size where an engine
reports none. Blocking (psutil reads /proc): run it in a worker thread. Never raises: a process
of another user, a port forwarded by Docker, a platform where listing sockets needs root, all
mean "not known", not an error.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import psutil

# Loopback names and wildcard binds: an engine reached through one of these runs here.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"})
# Processes that listen for a port on behalf of another (a container's, a tunnel's): their own
# memory says nothing about the engine's.
FORWARDERS = frozenset({"docker-proxy", "rootlessport", "slirp4netns", "ssh", "sshd", "kubectl"})
MAX_FAMILY = 64  # the engine and its children: more is a fork bomb, not an engine
# The only environment the probes read: Ollama's settings that change what a load takes.
ENV_KEYS = frozenset(
    {
        "OLLAMA_NUM_PARALLEL",
        "OLLAMA_MAX_LOADED_MODELS",
        "OLLAMA_CONTEXT_LENGTH",
        "OLLAMA_KV_CACHE_TYPE",
        "OLLAMA_FLASH_ATTENTION",
    }
)


@dataclass
class ProcFacts:
    """The engine's listening process and its children, where they could be seen."""

    pid: int | None = None
    started: float | None = None  # its create_time: with the PID, which process this is
    pids: list[int] = field(default_factory=list)
    rss_bytes: int | None = None
    cmdline: list[str] = field(default_factory=list)
    cwd: str | None = None  # where the engine's relative model paths start
    # each child's model file (its --model) and resident set: a llama.cpp router's servers
    child_models: dict[int, tuple[str, int]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def is_local(host: str) -> bool:
    """Whether `host` (from an engine URL) is this machine: loopback, a wildcard, our name or
    one of our interface addresses."""
    host = host.strip("[]").lower()
    if host in LOCAL_HOSTS or host.startswith("127.") or host == socket.gethostname().lower():
        return True
    try:
        addrs = psutil.net_if_addrs()
    except (OSError, psutil.Error):
        return False
    return any(a.address.split("%", 1)[0].lower() == host for al in addrs.values() for a in al)


def _conns(p: psutil.Process) -> list[Any]:
    method = getattr(p, "net_connections", None) or p.connections  # psutil < 6 names it so
    return list(method(kind="tcp"))


def _listens(p: psutil.Process, port: int) -> bool:
    try:
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in _conns(p)
        )
    except (OSError, psutil.Error):
        return False


# A process found listening, as (pid, its start time): the same pair next tick is the same
# process, whatever it listens on, so it is not looked for again among every socket.
Seen = tuple[int, float]


def _alive(seen: Seen) -> bool:
    try:
        return psutil.Process(seen[0]).create_time() == seen[1]
    except (OSError, psutil.Error):
        return False


def listening_pid(port: int) -> int | None:
    """The PID listening on TCP `port`: from the system's socket list (its cost grows with
    every socket on the machine), or, where that list is refused (macOS without root), from
    each process's own."""
    try:
        # Linux without root: sockets of other users' processes come back with pid None
        listeners = [
            c
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        ]
    except (OSError, psutil.Error):
        listeners = None
    if listeners is not None:
        # a listener without a PID is another user's process: its own list is hidden too
        return next((c.pid for c in listeners if c.pid), None)
    for p in psutil.process_iter():
        if _listens(p, port):
            return p.pid
    return None


def facts(port: int, seen: Seen | None = None) -> ProcFacts:
    """The listening process on `port` (`seen`: last tick's, reused while it lives), its
    children, its resident set, its command line and the Ollama settings in its environment
    (each left empty where the OS does not show it)."""
    pid = seen[0] if seen is not None and _alive(seen) else listening_pid(port)
    if pid is None:
        return ProcFacts()
    try:
        p = psutil.Process(pid)
        if p.name() in FORWARDERS:
            return ProcFacts()
        out = ProcFacts(pid=pid, pids=[pid], started=p.create_time())
        children = p.children(recursive=True)[: MAX_FAMILY - 1]
        out.pids += [c.pid for c in children]
        out.rss_bytes = p.memory_info().rss
    except (OSError, psutil.Error):
        return ProcFacts()
    for c in children:
        try:
            argv = c.cmdline()
            model = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--model"), None)
            if model is not None:
                out.child_models[c.pid] = (model, c.memory_info().rss)
        except (OSError, psutil.Error):
            continue
    try:
        out.cmdline = p.cmdline()
        out.cwd = p.cwd()
    except (OSError, psutil.Error):
        pass
    try:
        out.env = {k: v for k, v in p.environ().items() if k in ENV_KEYS}
    except (OSError, psutil.Error):
        pass
    return out
