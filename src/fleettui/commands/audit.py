"""`fleet audit forget NODE`: drop a node's audit pin on purpose (e.g. after a reinstall).

Every view and `fleet status` pin what they verified of each node's chain (aggregator/pins.py),
and a chain that no longer extends its pin is BROKEN until an operator says otherwise: this is
how. The next check walks the chain the node serves now from seq 1 and pins that.
"""

from __future__ import annotations

import argparse


def cmd_forget(args: argparse.Namespace) -> int:
    from fleettui.aggregator.kinds import kind_for
    from fleettui.aggregator.pins import PinStore, node_key
    from fleettui.commands.io import err, load_config, named_node

    cfg = load_config(args)
    if cfg is None:
        return 2
    node = named_node(cfg, args.name)
    if node is None:
        return 2
    if not kind_for(node.kind).audited:
        err(f"{node.name} is an {node.kind} node: it keeps no fleettui audit log, so no pin")
        return 2
    store = PinStore.default()
    try:
        old = store.forget(node_key(node.url), node.name)
    except OSError as exc:
        err(f"cannot write the audit pin in {store.root}: {exc.strerror or exc}")
        return 2
    if old is None or (old.seq == 0 and not old.broken):
        was = "no pin was held"
    else:
        was = f"dropped the pin at seq {old.seq}"
        if old.broken:
            was += f" (it was BROKEN: {old.broken})"
    print(
        f"fleet audit forget: {node.name} ({node.url}): {was}; the next check pins the chain "
        "the node serves now"
    )
    return 0
