"""Argument parsing for `fleet`; every command's work lives in the layer that owns it.

Imports are lazy (each command names its module as a string) so `fleet --help` and `fleet ls`
start fast and the agent never loads the views.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from fleettui import __version__

AGENT = "fleettui.agent.main"
COMMANDS = "fleettui.commands.fleet"
DASHBOARD = "fleettui.commands.dashboard"
BULK = "fleettui.commands.act"
LOAD = "fleettui.commands.load"
EXPORT = "fleettui.commands.export"
COMPLETION = "fleettui.completion"
CONFIG = "fleettui.config"
AUDIT = "fleettui.commands.audit"
MCP = "fleettui.commands.mcp"
FIT = "fleettui.commands.fit"
PLACE = "fleettui.commands.place"
TLS = "fleettui.commands.tls"
DISCOVER = "fleettui.commands.discover"
ENROLL = "fleettui.commands.enroll"


class Declared(Sequence[str]):
    """Choices another module declares (wire.ACTIONS, config.KIND_NAMES), read on first use:
    the flag offers exactly what the rule accepts, and `fleet --help` never imports pydantic
    (so each such flag names a metavar: argparse would list the choices to build one)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _values(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.name))

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        return self._values()[i]

    def __len__(self) -> int:
        return len(self._values())


ACTIONS = Declared("fleettui.wire", "ACTIONS")
KINDS = Declared("fleettui.config", "KIND_NAMES")
KV_TYPES = Declared("fleettui.wire", "KV_TYPES")
STRATEGIES = Declared("fleettui.aggregator.placement", "STRATEGIES")
NOTIFY = "dashboard alerts also as desktop notifications (OSC 9 and OSC 777, via the terminal)"


class FleetParser(argparse.ArgumentParser):
    """argparse with one-line errors: what is wrong and where help is, not the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _to(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if module != AGENT:
            # The views use no pydantic plugins; looking for them reads every installed
            # package's metadata (~15 ms of `fleet ls`). Not for the agent: the commands it
            # runs inherit its environment. A user who sets the variable still wins.
            os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
        return int(getattr(importlib.import_module(module), func)(args) or 0)

    return run


def _rule(name: str, module: str = "fleettui.agent.config") -> Callable[[str], Any]:
    """An argparse type checked by the config rule `name` (agent.toml's, or projects.toml's in
    fleettui.config), so a flag and the file accept the same values. Imported when used:
    `fleet --help` stays fast."""

    def check(text: str) -> Any:
        from pydantic import TypeAdapter, ValidationError

        try:
            rule = getattr(importlib.import_module(module), name)
            return TypeAdapter(rule).validate_python(text.strip())
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"]
            raise argparse.ArgumentTypeError(f"{text!r}: {msg[:1].lower()}{msg[1:]}") from None

    check.__name__ = name
    return check


def _count(bound: str) -> Callable[[str], int]:
    """An argparse type: a whole number from 1 to the wire's `bound` (read when used)."""

    def check(text: str) -> int:
        hi = getattr(importlib.import_module("fleettui.wire"), bound)
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: not a whole number") from None
        if not 1 <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r}: must be from 1 to {hi:,}")
        return value

    check.__name__ = "number"
    return check


def _pattern(rule: str, what: str) -> Callable[[str], str]:
    """An argparse type: text the wire's regular expression `rule` accepts (read when used),
    so a name `fleet fit` takes is one an action could carry."""

    def check(text: str) -> str:
        if not getattr(importlib.import_module("fleettui.wire"), rule).fullmatch(text):
            raise argparse.ArgumentTypeError(f"{text[:60]!r}: not {what}")
        return text

    check.__name__ = rule
    return check


def _fit_question(p: argparse.ArgumentParser) -> None:
    """The fit question's flags, shared by `fleet fit` and `fleet place`."""
    _fleet_config(p)
    p.add_argument(
        "model",
        type=_pattern("MODEL_RE", "a model name (like llama3.1:8b)"),
        help="the model's name as the engines call it",
    )
    p.add_argument("--ctx", type=_count("CTX_MAX"), help="context length per slot, tokens")
    p.add_argument("--parallel", type=_count("PARALLEL_MAX"), help="parallel slots (sequences)")
    p.add_argument("--kv-type", choices=KV_TYPES, metavar="TYPE", help="KV cache type: %(choices)s")
    p.add_argument(
        "--engine",
        type=_pattern("ENGINE_RE", "an engine name"),
        help="judge for this engine (default: the node's own choice)",
    )
    meta = p.add_mutually_exclusive_group()
    meta.add_argument("--gguf", type=Path, help="read the model's metadata from this GGUF file")
    meta.add_argument("--hf-config", type=Path, help="... or from a Hugging Face config.json")
    p.add_argument(
        "--timeout", type=_rule("TimeoutS", CONFIG), default=10.0, help="overall cap, seconds"
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="also print the estimate vs observed history of earlier loads, and its correction",
    )
    _json(p)


def _placement(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        metavar="STRATEGY",
        default="binpack",
        help="%(choices)s; binpack: the tightest fit that keeps the margin, spread: the most "
        "room left (default %(default)s)",
    )


def _fleet_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="fleet config (default: $FLEET_CONFIG or ~/.config/fleettui/projects.toml)",
    )


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _full_audit(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument(
        "--full-audit",
        action="store_true",
        help=f"{what}re-verify every audit entry, not only what is new and the 10 pages "
        "verified longest ago",
    )


def _add_agent(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser("agent", help="run or manage the node agent on this machine")
    asub = agent.add_subparsers(dest="agent_cmd", required=True, metavar="COMMAND")

    serve = asub.add_parser("serve", help="serve this node's facts over HTTP")
    serve.add_argument(
        "--host", type=_rule("Host"), default="127.0.0.1", help="bind address (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=_rule("Port"), default=8899, help="port; 0 picks a free one")
    serve.add_argument("--config", type=Path, help="agent.toml (default: XDG config dir)")
    serve.add_argument("--simulate", action="store_true", help="serve a synthetic node instead")
    serve.add_argument(
        "--nodes", type=_rule("SimNodes"), default=1, help="with --simulate: nodes on N ports"
    )
    serve.add_argument(
        "--name", type=_rule("SimName"), help="with --simulate: node name (prefix with --nodes)"
    )
    serve.add_argument(
        "--interval", type=_rule("IntervalS"), help="collection interval, seconds (default 2)"
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log requests")
    serve.set_defaults(func=_to(AGENT, "cmd_serve"))

    token = asub.add_parser("token", help="create, list, rotate and revoke action tokens")
    tsub = token.add_subparsers(dest="token_cmd", required=True, metavar="COMMAND")
    for name, helptext in (
        ("create", "create a token; the secret is printed once"),
        ("list", "list tokens (never their secrets)"),
        ("rotate", "revoke a token and issue a new secret in one step"),
        ("revoke", "revoke a token"),
    ):
        tp = tsub.add_parser(name, help=helptext)
        if name == "create":
            tp.add_argument("--label", required=True, help="what the token is for")
        if name in ("rotate", "revoke"):
            tp.add_argument("id", help="token id")
        tp.add_argument("--config", type=Path, help="agent.toml (its dirs hold the tokens)")
        _json(tp)
        tp.set_defaults(func=_to(AGENT, f"cmd_token_{name}"))

    join = asub.add_parser("join", help="join the fleet with the code `fleet enroll` printed")
    join.add_argument(
        "code", help="the join code (one line, fj1....); - reads it from stdin (not in ps)"
    )
    join.add_argument("--config", type=Path, help="agent.toml to write (default: XDG config dir)")
    join.add_argument("--force", action="store_true", help="replace a tls_client_ca of another CA")
    join.set_defaults(func=_to(AGENT, "cmd_join"))

    audit = asub.add_parser("audit", help="inspect the agent's hash-chained audit log")
    ausub = audit.add_subparsers(dest="audit_cmd", required=True, metavar="COMMAND")
    verify = ausub.add_parser("verify", help="check the whole chain; exit 1 at the first bad seq")
    verify.add_argument("--config", type=Path, help="agent.toml")
    verify.add_argument("--path", type=Path, help="audit.jsonl to check (default: XDG data dir)")
    _json(verify)
    verify.set_defaults(func=_to(AGENT, "cmd_audit_verify"))
    seal = ausub.add_parser(
        "seal", help="archive a chain that does not verify and start a new one recording why"
    )
    seal.add_argument("--reason", required=True, help="why (recorded in the new chain)")
    seal.add_argument("--config", type=Path, help="agent.toml")
    seal.add_argument("--path", type=Path, help="audit.jsonl to seal (default: XDG data dir)")
    seal.add_argument(
        "--force", action="store_true", help="seal a chain that verifies (retire its history)"
    )
    seal.set_defaults(func=_to(AGENT, "cmd_audit_seal"))


def _add_fleet(sub: argparse._SubParsersAction) -> None:
    ls = sub.add_parser("ls", help="list configured nodes (no network)")
    _fleet_config(ls)
    _json(ls)
    ls.set_defaults(func=_to(COMMANDS, "cmd_ls"))

    status = sub.add_parser("status", help="poll every node once; exit 0 when all are ONLINE")
    _fleet_config(status)
    _json(status)
    status.add_argument(
        "--timeout", type=_rule("TimeoutS", CONFIG), default=10.0, help="overall cap, seconds"
    )
    _full_audit(status)
    status.set_defaults(func=_to(COMMANDS, "cmd_status"))

    ping = sub.add_parser("ping", help="poll one node and show its round trip")
    _fleet_config(ping)
    _json(ping)
    ping.add_argument("name")
    ping.add_argument("--timeout", type=_rule("TimeoutS", CONFIG), default=5.0, help="seconds")
    _full_audit(ping)
    ping.set_defaults(func=_to(COMMANDS, "cmd_ping"))

    add = sub.add_parser("add", help="add a node to the fleet config")
    _fleet_config(add)
    add.add_argument("name")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="agent URL, e.g. http://gpu1.lan:8899")
    where.add_argument(
        "--discovered",
        action="store_true",
        help="the node NAME `fleet discover` hears: its URL, kind and TLS fingerprint",
    )
    add.add_argument(
        "--timeout", type=_rule("TimeoutS", CONFIG), default=3.0, help="with --discovered: seconds"
    )
    add.add_argument("--role", default="", help="free text, e.g. inference, embeddings")
    add.add_argument("--tag", action="append", default=[], help="repeatable")
    add.add_argument(
        "--kind",
        default="fleettui",
        choices=KINDS,
        metavar="KIND",
        help="%(choices)s (default %(default)s)",
    )
    add.add_argument(
        "--nickname", help="with --kind asiai: the node's fleet nickname (default self)"
    )
    tok = add.add_mutually_exclusive_group()
    tok.add_argument("--token-env", help="environment variable holding the token")
    tok.add_argument("--token-file", type=Path, help="file holding the token")
    add.set_defaults(func=_to(COMMANDS, "cmd_add"))

    discover = sub.add_parser(
        "discover", help="list agents advertising on the local link (mDNS) not in the config"
    )
    _fleet_config(discover)
    _json(discover)
    discover.add_argument(
        "--timeout", type=_rule("TimeoutS", CONFIG), default=3.0, help="listen this long, seconds"
    )
    discover.set_defaults(func=_to(DISCOVER, "cmd_discover"))

    remove = sub.add_parser("remove", help="remove a node from the fleet config")
    _fleet_config(remove)
    remove.add_argument("name")
    remove.set_defaults(func=_to(COMMANDS, "cmd_remove"))

    push = sub.add_parser("push", help="run one action on one node")
    _fleet_config(push)
    push.add_argument("node")
    push.add_argument("action", choices=ACTIONS, metavar="ACTION", help="%(choices)s")
    push.add_argument("--engine")
    push.add_argument("--model")
    _json(push)
    push.set_defaults(func=_to(BULK, "cmd_push"))

    bulk = sub.add_parser("bulk", help="run one action on many nodes at once")
    _fleet_config(bulk)
    bulk.add_argument("action", choices=ACTIONS, metavar="ACTION", help="%(choices)s")
    bulk.add_argument("--names", action="append", default=[], help="node name (repeatable)")
    bulk.add_argument("--filter", help="selection expression, e.g. 'state=ONLINE and engine=vllm'")
    bulk.add_argument("--all", action="store_true", help="every node (instead of --names/--filter)")
    bulk.add_argument("--engine")
    bulk.add_argument("--model")
    bulk.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    bulk.add_argument("--dry-run", action="store_true", help="list the targets, send nothing")
    _json(bulk)
    bulk.set_defaults(func=_to(BULK, "cmd_bulk"))

    load = sub.add_parser(
        "load", help="load a model on nodes, after showing whether it fits on each"
    )
    _fleet_config(load)
    load.add_argument("model")
    load.add_argument("--on", action="append", default=[], metavar="NODE", help="(repeatable)")
    load.add_argument(
        "--place", action="store_true", help="load on the best-ranked nodes (see fleet place)"
    )
    load.add_argument(
        "--top", type=_count("PARALLEL_MAX"), default=1, help="with --place: how many (default 1)"
    )
    _placement(load)
    load.add_argument("--engine", help="default: the engine each target's fit picks")
    load.add_argument("--ctx", type=int, help="context length per slot, tokens")
    load.add_argument("--parallel", type=int, help="parallel slots")
    load.add_argument("--kv-type", choices=KV_TYPES, metavar="TYPE", help="%(choices)s")
    load.add_argument("--keep-alive", help="Ollama: how long it stays loaded idle (30m, -1)")
    load.add_argument("--force", action="store_true", help="load even where it does not fit")
    load.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    load.add_argument("--dry-run", action="store_true", help="show each target's fit, send nothing")
    _json(load)
    load.set_defaults(func=_to(LOAD, "cmd_load"))

    export = sub.add_parser(
        "export", help="serve the whole fleet as one Prometheus endpoint (see docs/prometheus.md)"
    )
    _fleet_config(export)
    export.add_argument(
        "--listen",
        default="127.0.0.1:9464",
        metavar="HOST:PORT",
        help="address to serve /metrics on (default 127.0.0.1:9464; port 0 picks a free one)",
    )
    export.set_defaults(func=_to(EXPORT, "cmd_export"))

    audit = sub.add_parser("audit", help="the audit pins this operator keeps per node")
    ausub = audit.add_subparsers(dest="audit_cmd", required=True, metavar="COMMAND")
    forget = ausub.add_parser(
        "forget", help="drop a node's pin on purpose (after a reinstall); the next check re-pins"
    )
    _fleet_config(forget)
    forget.add_argument("name")
    forget.set_defaults(func=_to(AUDIT, "cmd_forget"))

    mcp = sub.add_parser(
        "mcp", help="serve the fleet to AI agents as a read-only MCP server on stdio"
    )
    _fleet_config(mcp)
    mcp.set_defaults(func=_to(MCP, "cmd_mcp"))

    fit = sub.add_parser(
        "fit",
        help="does MODEL fit on each node beside what is loaded there? exit 0 fits somewhere, "
        "3 only after evicting idle models, 1 nowhere",
    )
    _fit_question(fit)
    fit.add_argument(
        "--node", action="append", default=[], help="only this node (repeatable; default all)"
    )
    fit.set_defaults(func=_to(FIT, "cmd_fit"))

    place = sub.add_parser(
        "place",
        help="rank every node for MODEL, best first, with a score 0-100 and its reasons",
    )
    _fit_question(place)
    _placement(place)
    place.add_argument("--top", type=_count("PARALLEL_MAX"), help="show the best K nodes only")
    place.set_defaults(func=_to(PLACE, "cmd_place"))

    completion = sub.add_parser(
        "completion", help="print a shell completion script: source <(fleet completion bash)"
    )
    completion.add_argument("shell", nargs="?", choices=("bash", "zsh", "fish"))
    completion.add_argument(
        "--nodes", action="store_true", help="print the configured node names (used by the scripts)"
    )
    _fleet_config(completion)
    completion.set_defaults(func=_to(COMPLETION, "cmd_completion"))

    demo = sub.add_parser("demo", help="start simulated agents and open the dashboard on them")
    demo.add_argument("--nodes", type=_rule("SimNodes"), default=8, help="how many (default 8)")
    # SUPPRESS: `fleet --rich demo` and `fleet --read-only demo` keep the top-level flag.
    demo.add_argument(
        "--rich", action="store_true", default=argparse.SUPPRESS, help="use the Rich view"
    )
    demo.add_argument(
        "--read-only",
        action="store_true",
        default=argparse.SUPPRESS,
        help="disable every action key",
    )
    demo.add_argument("--notify", action="store_true", default=argparse.SUPPRESS, help=NOTIFY)
    demo.set_defaults(func=_to(DASHBOARD, "cmd_demo"))


def _add_tls(sub: argparse._SubParsersAction) -> None:
    tls = sub.add_parser("tls", help="the fleet CA: node and operator certificates (mutual TLS)")
    tsub = tls.add_subparsers(dest="tls_cmd", required=True, metavar="COMMAND")
    init = tsub.add_parser("init", help="create the fleet CA and the operator's client certificate")
    init.add_argument("--days", type=int, default=3650, help="CA validity (default 3650)")
    init.add_argument("--force", action="store_true", help="replace an existing CA (rotation)")
    issue = tsub.add_parser("issue", help="issue (or re-issue) a node's server certificate")
    issue.add_argument("node", help="node name (always a SAN of its certificate)")
    issue.add_argument(
        "--san", action="append", metavar="NAME|IP", help="another name or address (repeatable)"
    )
    renew = tsub.add_parser("renew", help="issue a node's certificate again with the same names")
    renew.add_argument("node", help="node name")
    for p, func in ((init, "cmd_init"), (issue, "cmd_issue"), (renew, "cmd_renew")):
        if p is not init:
            p.add_argument("--days", type=int, default=90, help="validity (default 90)")
        p.add_argument("--dir", type=Path, help="PKI directory (default: XDG data dir/pki)")
        p.set_defaults(func=_to(TLS, func))


def _add_enroll(sub: argparse._SubParsersAction) -> None:
    enroll = sub.add_parser(
        "enroll", help="add a node and print the one-time code `fleet agent join` takes"
    )
    _fleet_config(enroll)
    enroll.add_argument("name", help="node name (its certificate's name too)")
    enroll.add_argument("--url", required=True, help="the node's https:// URL, as it will serve")
    enroll.add_argument(
        "--san", action="append", metavar="NAME|IP", help="another name or address (repeatable)"
    )
    enroll.add_argument("--minutes", type=int, default=15, help="the code's lifetime (15)")
    enroll.add_argument("--days", type=int, default=90, help="certificate validity (90)")
    enroll.add_argument("--role", default="", help="free text, e.g. inference")
    enroll.add_argument("--tag", action="append", default=[], help="repeatable")
    enroll.add_argument("--dir", type=Path, help="PKI directory (default: XDG data dir/pki)")
    enroll.set_defaults(func=_to(ENROLL, "cmd_enroll"))


def build_parser() -> argparse.ArgumentParser:
    p = FleetParser(
        prog="fleet",
        description="A keyboard-driven dashboard and node agent for LLM-inference fleets. "
        "Without a command, opens the dashboard.",
    )
    p.add_argument("--version", action="version", version=f"fleettui {__version__}")
    p.add_argument("--config", type=Path, help="fleet config (default: XDG config dir)")
    p.add_argument("--rich", action="store_true", help="headless Rich view instead of Textual")
    p.add_argument("--once", action="store_true", help="with --rich: print one table and exit")
    p.add_argument("--read-only", action="store_true", help="disable every action key")
    p.add_argument("--notify", action="store_true", help=NOTIFY)
    p.add_argument(
        "--json",
        dest="dashboard_json",
        action="store_true",
        help="poll every node once and print `fleet status --json`'s document",
    )
    _full_audit(p, "with --once or --json: ")
    p.set_defaults(func=_to(DASHBOARD, "cmd_dashboard"))
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    _add_agent(sub)
    _add_fleet(sub)
    _add_tls(sub)
    _add_enroll(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `fleet ls --json | head`: the reader left, which is no error of ours
        # Python would report the failed flush of stdout at exit: point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it


if __name__ == "__main__":
    sys.exit(main())
