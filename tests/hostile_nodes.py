"""A fleet of hostile fleettui-kind nodes on 127.0.0.1, for the "survives any node" tests.

Each node is a threaded HTTP server speaking the agent's API (snapshot, event stream, audit
page, actions) with one kind of poison: numbers that are not finite or not sane, 10,000 GPUs,
a 1 MB hostname, each class of terminal escape sequence in every text field, Rich markup, and
error bodies holding both. Bodies are built once; serving them costs only the copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fake_nodes import _Server
from fakes import make_entry, snapshot_dict
from fleettui.wire import GENESIS_HASH

# One sequence per class a terminal would obey; each ends in a marker so a leak is findable.
ESCAPES = {
    "csi": "\x1b[2J\x1b[H\x1b[3A\x1b[2Kcsi",  # clear screen, home, cursor up, erase line
    "osc52": "\x1b]52;c;b3duZWQ=\x07osc52",  # write the clipboard
    "osc0": "\x1b]0;owned\x1b\\osc0",  # retitle the window (ST-terminated)
    "dcs": "\x1bP+q544e\x1b\\dcs",  # device control string (a terminfo query)
    "c1": "\x9b2J\x9d0;owned\x9cc1",  # 8-bit CSI, OSC and ST
    "bidi": "\u202etxt.exe\u2066x\u2069\u200fbidi",  # right-to-left override, isolates
    "cr": "gone\r\x08\x08\x7f\x07\x00cr",  # carriage return, backspace, DEL, BEL, NUL
}
# What must never reach a terminal from a node: the raw introducers of every class above.
RAW = ("\x1b", "\x9b", "\x9c", "\x9d", "\u202e", "\u2066", "\u200f", "\r", "\x08", "\x07", "\x00")
MARKUP = "[/][bold red]x[link=file:///etc/passwd]y[/link]"
HUGE_INT = "1" + "0" * 5000  # beyond what Python will even print (4300 digits)


def _escaped(payload: str) -> dict[str, Any]:
    """A valid snapshot with `payload` in every text field a view shows."""
    d = snapshot_dict(f"host{payload}")
    d["node"].update(os=f"Linux{payload}", arch=payload, agent_version=f"0.1{payload}")
    d["gpus"] = [{"index": 0, "name": f"H100{payload}", "memory_total_mb": 81920.0}]
    d["engines"] = [
        {
            "name": f"ollama{payload}",
            "url": f"http://127.0.0.1:1/{payload}",
            "status": "up",
            "version": f"0.5{payload}",
            "models": [{"name": f"llama{payload}", "quant": f"Q4{payload}"}],
        },
        {
            "name": f"vllm{payload}",
            "url": "http://127.0.0.1:2",
            "status": "down",
            "error": f"refused{payload}",
        },
    ]
    d["problems"] = [f"problem{payload}"]
    d["cost"]["currency"] = f"EUR{payload}"
    return d


def _numbers(**paths: Any) -> dict[str, Any]:
    d = snapshot_dict("numbers")
    d["gpus"] = [{"index": 0, "name": "H100", "memory_total_mb": 81920.0}]
    for path, value in paths.items():
        obj = d
        *head, last = path.split("__")
        for p in head:
            obj = obj[int(p)] if p.isdigit() else obj[p]
        obj[last] = value
    return d


def hostile_snapshots() -> dict[str, bytes]:
    """Node name -> the snapshot body it serves (JSON that Python's json would write: NaN and
    Infinity literals included, as a careless agent would send them)."""
    nan, inf = float("nan"), float("inf")
    bodies: dict[str, Any] = {
        "h-nan": _numbers(power__watts=nan, cost__total_7d=-inf, cpu__percent=nan),
        "h-inf": _numbers(memory__used_mb=inf, gpus__0__power_w=inf, cost__today=inf),
        "h-huge": _numbers(ts=1e308, node__uptime_s=1e308, gpus__0__memory_total_mb=1e308),
        "h-neg": _numbers(power__watts=-4665.0, cost__daily__0__cost=-1e9),
        "h-gpus": snapshot_dict("gpus")
        | {"gpus": [{"index": i, "name": "g"} for i in range(10_000)]},
        "h-long": snapshot_dict("x" * 1_000_000),
        "h-markup": _escaped(MARKUP),
        **{f"h-{k}": _escaped(v) for k, v in ESCAPES.items()},
    }
    out = {name: json.dumps(body).encode() for name, body in bodies.items()}
    out["h-bigint"] = (
        json.dumps(_numbers(audit__seq=0)).replace('"seq": 0', f'"seq": {HUGE_INT}').encode()
    )
    return out


SNAPSHOT_500 = {"error": f"[/]boom[bold]{ESCAPES['osc0']}{ESCAPES['csi']}"}


class HostileAgent(_Server):
    """One hostile node. `snapshot` is the body of every snapshot read and event; None answers
    HTTP 500 with markup and escapes in its error. Actions always fail the same way."""

    def __init__(self, name: str, snapshot: bytes | None, payload: str = "") -> None:
        super().__init__()
        self.name = name
        self.snapshot = snapshot
        self.chain = self._chain(payload) if payload else None
        if self.chain is not None and snapshot is not None:  # advertise the chain's real head
            head = {"seq": 3, "head_hash": self.chain[-1]["hash"]}
            snap = json.loads(snapshot)
            self.snapshot = json.dumps(snap | {"audit": head}).encode()

    @staticmethod
    def _chain(payload: str) -> list[dict]:
        """Three entries that verify, with the payload in every text field the detail shows."""
        chain: list[dict] = []
        prev = GENESIS_HASH
        for seq in (1, 2, 3):
            chain.append(
                make_entry(
                    seq,
                    prev,
                    action=f"restart{payload}",
                    token_id=f"tok{payload}",
                    status=f"ok{payload}",
                    error=f"err{payload}",
                    args={f"engine{payload}": f"ollama{payload}"},
                )
            )
            prev = chain[-1]["hash"]
        return chain

    def handle(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        url = urlsplit(path)
        if method == "POST" and url.path == "/api/v1/actions":
            return 500, SNAPSHOT_500, {}
        if url.path == "/api/v1/snapshot":
            if self.snapshot is None:
                return 500, SNAPSHOT_500, {}
            return 200, self.snapshot, {"Content-Type": "application/json"}
        if url.path == "/api/v1/events":
            if self.snapshot is None:
                return 500, SNAPSHOT_500, {}
            event = b"event: snapshot\ndata: " + self.snapshot + b"\n\n"
            return 200, event, {"Content-Type": "text/event-stream"}
        if url.path == "/api/v1/audit" and self.chain is not None:
            after = int(parse_qs(url.query).get("after", ["0"])[0])
            entries = [e for e in self.chain if e["seq"] > after]
            head = {"seq": self.chain[-1]["seq"], "head_hash": self.chain[-1]["hash"]}
            return 200, {"entries": entries, "head": head}, {}
        return 404, {"error": "not found"}, {}


@contextmanager
def hostile_fleet() -> Iterator[dict[str, HostileAgent]]:
    """Every hostile node, started; name -> server."""
    payloads = {f"h-{k}": v for k, v in ESCAPES.items()} | {"h-markup": MARKUP}
    nodes = {
        name: HostileAgent(name, body, payloads.get(name, ""))
        for name, body in hostile_snapshots().items()
    }
    nodes["h-500"] = HostileAgent("h-500", None)
    try:  # one that fails to start must not leave the others serving
        for n in nodes.values():
            n.start()
        yield nodes
    finally:
        for n in nodes.values():
            n.stop()


def fleet_toml(hostile: dict[str, HostileAgent], healthy: dict[str, str], **defaults: Any) -> str:
    """projects.toml for the hostile nodes (with a token, so actions are sent) and the healthy."""
    text = "[defaults]\n" + "".join(f"{k} = {v}\n" for k, v in defaults.items())
    for name, node in hostile.items():
        text += f'\n[[node]]\nname = "{name}"\nurl = "{node.url}"\ntoken = "tok_hostile"\n'
    for name, url in healthy.items():
        text += f'\n[[node]]\nname = "{name}"\nurl = "{url}"\n'
    return text


# In a stream that has escape sequences of its own (the dashboard's frames: colours, cursor
# moves), what only a node could have put there: OSC, DCS, clear screen, and the rest of RAW.
FOREIGN = ("\x1b]", "\x1bP", "\x1b[2J", *RAW[1:])


def leaks(text: str, *, styled: bool = False) -> list[str]:
    """What of the node's raw sequences is in `text` (empty when nothing leaked). `styled`:
    `text` is a terminal stream with escape sequences of its own (see FOREIGN)."""
    return [repr(c) for c in (FOREIGN if styled else RAW) if c in text]
