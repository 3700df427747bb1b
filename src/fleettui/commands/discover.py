"""`fleet discover` and `fleet add --discovered NAME`: the agents the local link advertises.

Both listen for the same time (`--timeout`): `add --discovered` listens again rather than
trusting a list from an earlier run, so what it writes is what answers now. python-zeroconf is
an extra (`fleettui[discover]`, also in `[agent]`): the base install stays light.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fleettui.commands.io import console, err, load_config, markup_safe, print_json
from fleettui.mdns import MAX_ADVERTS

if TYPE_CHECKING:
    from fleettui.aggregator.discover import Discovery
    from fleettui.config import FleetConfig
    from fleettui.mdns import Advert

MISSING = (
    "{what} needs python-zeroconf: pip install 'fleettui[discover]' "
    "(or add nodes by URL: fleet add NAME --url URL)"
)
VPN_HINT = "mDNS does not cross routers or VPNs such as Tailscale: add those nodes by URL"


def _listen(what: str, timeout_s: float) -> Discovery | None:
    import anyio

    from fleettui.aggregator.discover import browse, zeroconf_missing

    if zeroconf_missing():
        err(MISSING.format(what=what))
        return None
    try:
        return anyio.run(browse, timeout_s)
    except OSError as exc:
        err(f"{what}: cannot listen for mDNS: {exc.strerror or exc}")
        return None


def _endpoint(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port


def known(cfg: FleetConfig, advert: Advert) -> bool:
    """In the config already: by name, or by an address and port a node's URL names."""
    if cfg.node(advert.name) is not None:
        return True
    ends = {_endpoint(n.url) for n in cfg.nodes}
    return any((a.lower(), advert.port) in ends for a in advert.addresses)


def advert_json(a: Advert) -> dict[str, Any]:
    return {
        "name": a.name,
        "kind": a.kind,
        "url": a.url(),
        "addresses": list(a.addresses),
        "port": a.port,
        "version": a.version,
        "tls": a.tls,
        "fingerprint": a.fingerprint,
    }


def cmd_discover(args: argparse.Namespace) -> int:
    """List what advertises on the link and is not in the fleet config yet; exit 0."""
    cfg = load_config(args)
    if cfg is None:
        return 2
    found = _listen("fleet discover", args.timeout)
    if found is None:
        return 2
    fresh = [a for _, a in sorted(found.adverts.items()) if not known(cfg, a)]
    already = len(found.adverts) - len(fresh)
    if args.json:
        print_json(
            {
                "config": str(cfg.path),
                "timeout_s": args.timeout,
                "discovered": [advert_json(a) for a in fresh],
                "in_config": already,
                "skipped": found.skipped,
                "skipped_more": found.skipped_more,
                "overflow": found.overflow,
            }
        )
        return 0
    out = console()
    if not fresh:
        print(
            f"nothing new heard in {args.timeout:g} s ({already} already in the config); {VPN_HINT}"
        )
    else:
        from rich.table import Table

        table = Table(
            title=f"{len(fresh)} not in {markup_safe(str(cfg.path))} "
            f"({already} already there); add one with `fleet add --discovered NAME`",
            title_justify="left",
        )
        for col in ("Name", "Kind", "URL", "Version", "TLS fingerprint"):
            table.add_column(col, overflow="fold")
        for a in fresh:
            table.add_row(
                markup_safe(a.name),
                a.kind,
                markup_safe(a.url()),
                markup_safe(a.version or "-"),
                markup_safe(a.fingerprint or "-"),
            )
        out.print(table)
    for line in found.skipped:
        out.print(f"[yellow]skipped: {markup_safe(line)}[/]")
    if found.skipped_more:
        out.print(f"[yellow]skipped {found.skipped_more} more adverts (not usable)[/]")
    if found.overflow:
        out.print(
            f"[yellow]more than {MAX_ADVERTS} services advertise here: "
            f"{found.overflow} more announcements ignored[/]"
        )
    return 0


def discovered_node(args: argparse.Namespace) -> dict[str, Any] | None:
    """The `fleet add` fields of the advert named args.name, or None after saying why."""
    found = _listen("fleet add --discovered", args.timeout)
    if found is None:
        return None
    advert = found.adverts.get(args.name)
    if advert is None:
        heard = ", ".join(sorted(found.adverts)[:10]) or "none"
        err(
            f"--discovered: no advert named {args.name!r} heard in {args.timeout:g} s "
            f"(heard: {heard}; see `fleet discover`)"
        )
        return None
    fields: dict[str, Any] = {"url": advert.url(), "kind": advert.kind}
    if advert.fingerprint:  # trust on first use: docs/deploy.md says how to check it
        fields["tls_fingerprint"] = advert.fingerprint
    return fields
