"""`advertise = true`: announce each served node over mDNS for `fleet discover`, for exactly as
long as the server runs.

The advert names the address the agent really listens on (a wildcard bind: every non-loopback
address of the machine), so what `fleet discover` offers is what answers. A loopback bind is
never advertised: nothing else can reach it (main.py says so at start). A failure to announce
is a warning in the log, never the agent's end: discovery is a convenience, serving is not.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from fleettui import __version__
from fleettui.agent.node import NodeAgent
from fleettui.mdns import SERVICE_TYPE, instance_name, txt_record
from fleettui.pki import fingerprint

log = logging.getLogger(__name__)
UNREGISTER_S = 2.0  # the goodbye packets on shutdown: bounded, the agent is stopping


@dataclass(frozen=True, slots=True)
class Announcement:
    """One node's advert: its name, the port it serves and the addresses it answers on."""

    name: str
    port: int
    addresses: tuple[str, ...]
    txt: dict[str, str]


def loopback_only(host: str) -> bool:
    """True when `host` is reachable from this machine alone (advertising it is pointless)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False


def advertise_warning(host: str) -> str | None:
    """The start-up warning for `advertise = true` that cannot work as asked."""
    if importlib.util.find_spec("zeroconf") is None:
        return (
            "advertise = true needs python-zeroconf (pip install 'fleettui[agent]'): "
            "nothing is advertised"
        )
    if loopback_only(host):
        return (
            f"advertise = true, but the agent listens on {host}, which no other machine can "
            "reach: nothing is advertised (bind a LAN address with --host to be discovered)"
        )
    return None


def _wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::")


def _machine_addresses(v6: bool) -> tuple[str, ...]:
    """Every non-loopback address of this machine (blocking: run in a worker thread)."""
    import ifaddr

    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            addr = ipaddress.ip_address(text)
            if addr.is_loopback or addr.is_link_local or (addr.version == 6 and not v6):
                continue
            out.append(text)
    return tuple(dict.fromkeys(out))


def node_name(agent: NodeAgent) -> str:
    if agent.simulated is not None:
        return agent.simulated.name
    return agent.config.advertise_name or instance_name(socket.gethostname())


def served_fingerprint(cert_path: str | None) -> str | None:
    """`sha256:<hex>` of the DER of the certificate the agent serves (the pin `fleet add
    --discovered` writes), None without TLS or when it cannot be read (blocking: a thread)."""
    if cert_path is None:
        return None
    try:
        pem = Path(cert_path).read_text(encoding="ascii", errors="replace")
        return fingerprint(ssl.PEM_cert_to_DER_cert(pem))
    except (OSError, ValueError) as exc:
        log.warning("advertise: cannot read %s for its fingerprint: %s", cert_path, exc)
        return None


def announcements(
    agents: Sequence[NodeAgent],
    sockets: Sequence[socket.socket],
    machine: tuple[str, ...],
    fingerprint: str | None = None,
) -> list[Announcement]:
    """The adverts of the nodes whose socket another machine can reach."""
    out = []
    for agent, sock in zip(agents, sockets, strict=True):
        host, port = sock.getsockname()[:2]
        if loopback_only(host):
            continue
        addresses = machine if _wildcard(host) else (host,)
        if addresses:
            out.append(
                Announcement(
                    node_name(agent), port, addresses, txt_record(__version__, fingerprint)
                )
            )
    return out


async def advertise(agents: Sequence[NodeAgent], sockets: Sequence[socket.socket]) -> None:
    """Announce every reachable node, then wait to be cancelled and say goodbye."""
    try:
        from zeroconf import IPVersion, NonUniqueNameException
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
    except ImportError:  # said at start (advertise_warning)
        return

    hosts = {s.getsockname()[0] for s in sockets}
    machine: tuple[str, ...] = ()
    if any(_wildcard(h) for h in hosts):
        machine = await anyio.to_thread.run_sync(_machine_addresses, "::" in hosts)
    fp = await anyio.to_thread.run_sync(served_fingerprint, agents[0].config.tls_cert)
    items = announcements(agents, sockets, machine, fp)
    if not items:
        return
    bound = sorted({a for item in items for a in item.addresses})
    v6 = any(":" in a for a in bound)
    v4 = any(":" not in a for a in bound)
    version = IPVersion.All if v4 and v6 else (IPVersion.V6Only if v6 else IPVersion.V4Only)
    try:
        zc = AsyncZeroconf(interfaces=bound, ip_version=version)
    except OSError as exc:
        log.warning("advertise: cannot open the mDNS sockets: %s", exc)
        return
    try:
        for item in items:
            info = AsyncServiceInfo(
                SERVICE_TYPE,
                f"{item.name}.{SERVICE_TYPE}",
                port=item.port,
                properties=item.txt,
                parsed_addresses=list(item.addresses),
                server=f"{item.name}.local.",
            )
            try:
                await (await zc.async_register_service(info, allow_name_change=True))
            except (NonUniqueNameException, OSError) as exc:
                log.warning("advertise: cannot announce %s: %s", item.name, exc)
                continue
            log.info("advertise: %s on %s port %d", info.name, ", ".join(item.addresses), item.port)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(UNREGISTER_S):
            await zc.async_unregister_all_services()
        with anyio.CancelScope(shield=True), anyio.move_on_after(UNREGISTER_S):
            await zc.async_close()
