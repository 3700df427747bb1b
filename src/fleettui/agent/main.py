"""Entry points of `fleet agent ...`: build agents from config and flags, then serve them."""

from __future__ import annotations

import argparse
import logging
import socket
import sys

import anyio

from fleettui.agent.config import PORT_MAX, ConfigError, default_config_path, load_agent_config


def exposure_warning(host: str) -> str | None:
    """Binding beyond loopback is allowed but never silent."""
    if host in ("0.0.0.0", "::", ""):
        return (
            f"binding {host or 'all interfaces'} exposes the agent to every network this machine "
            "is on; prefer 127.0.0.1 behind a VPN or a TLS reverse proxy"
        )
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    from fleettui.agent.node import NodeAgent
    from fleettui.agent.server import BindError, bind_sockets, serve

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_agent_config(args.config)
    except ConfigError as exc:
        print(f"fleet agent: {exc}", file=sys.stderr)
        return 2
    from fleettui.agent.tls import server_context

    try:
        ssl_context = server_context(config)
    except ConfigError as exc:
        print(f"fleet agent: {args.config or default_config_path()}: {exc}", file=sys.stderr)
        return 2
    if args.interval is not None:
        config.interval_s = args.interval
    nodes = args.nodes
    if nodes > 1 and not args.simulate:
        print(
            "fleet agent: --nodes needs --simulate (one real machine is one node)", file=sys.stderr
        )
        return 2
    if args.name is not None and not args.simulate:
        print("fleet agent: --name needs --simulate (a real node is its hostname)", file=sys.stderr)
        return 2
    if args.port and args.port + nodes - 1 > PORT_MAX:
        print(
            f"fleet agent: --port {args.port} --nodes {nodes} needs ports up to "
            f"{args.port + nodes - 1}, past {PORT_MAX}; pick a lower --port (or 0)",
            file=sys.stderr,
        )
        return 2
    if warning := exposure_warning(args.host):
        print(f"fleet agent: WARNING: {warning}", file=sys.stderr)
    if config.advertise:
        from fleettui.agent.advertise import advertise_warning

        if warning := advertise_warning(args.host):
            print(f"fleet agent: WARNING: {warning}", file=sys.stderr)
    from fleettui.agent.conns import nofile_limit, nofile_warning

    if warning := nofile_warning(nofile_limit()):
        print(f"fleet agent: WARNING: {warning}", file=sys.stderr)
    ports = [args.port + i if args.port else 0 for i in range(nodes)]
    try:
        sockets = bind_sockets(args.host, ports)
    except BindError as exc:
        print(f"fleet agent: cannot listen on {exc.address}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.simulate:
        prefix = args.name or "sim"
        names = (
            [prefix] if nodes == 1 and args.name else [f"{prefix}-{i:03d}" for i in range(nodes)]
        )
        agents = [NodeAgent.simulate(config, n) for n in names]
        for i, agent in enumerate(agents):  # independent machines do not tick in lockstep
            agent.phase_s = config.interval_s * i / len(agents)
    else:
        agents = [NodeAgent.real(config)]
    from fleettui.agent.actions import ActionService
    from fleettui.agent.tokens import TokenStore, tokens_path

    tokens = TokenStore(tokens_path(args.config))  # one store: every node of this process
    for agent in agents:
        agent.actions = ActionService.for_agent(agent, tokens)

    def announce() -> None:
        for agent, sock in zip(agents, sockets, strict=True):
            host, port = sock.getsockname()[:2]
            label = agent.simulated.name if agent.simulated else socket.gethostname()
            shown = f"[{host}]" if ":" in host else host  # an IPv6 literal in a URL
            later = ""
            if isinstance(agent.actions, ActionService) and (p := agent.actions.audit.progress):
                later = f" (reads now; actions once its audit chain is verified: {p.describe()})"
            scheme = "https" if ssl_context is not None else "http"
            print(f"fleet agent: serving {label} on {scheme}://{shown}:{port}{later}", flush=True)

    level = "info" if args.verbose else "warning"
    try:
        anyio.run(
            lambda: serve(
                agents, sockets, log_level=level, on_ready=announce, ssl_context=ssl_context
            )
        )
    except KeyboardInterrupt:  # Ctrl-C during start-up, before serve() handles signals
        pass
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from fleettui.agent.tokens import cmd_create

    return cmd_create(args)


def cmd_token_list(args: argparse.Namespace) -> int:
    from fleettui.agent.tokens import cmd_list

    return cmd_list(args)


def cmd_token_rotate(args: argparse.Namespace) -> int:
    from fleettui.agent.tokens import cmd_rotate

    return cmd_rotate(args)


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from fleettui.agent.tokens import cmd_revoke

    return cmd_revoke(args)


def cmd_join(args: argparse.Namespace) -> int:
    from fleettui.agent.join import cmd_join

    return cmd_join(args)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from fleettui.agent.audit import cmd_verify

    return cmd_verify(args)


def cmd_audit_seal(args: argparse.Namespace) -> int:
    from fleettui.agent.audit import cmd_seal

    return cmd_seal(args)
