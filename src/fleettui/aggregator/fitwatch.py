"""A fit question asked of the whole fleet: "does MODEL fit there?", answered per node on every
snapshot.

The estimator (`fleettui.capacity.fit`) answers for one snapshot; this adds what only the
fleet knows: where the model's metadata comes from (a file the operator gave, or the first
node that has the model resident or on disk), that a node we cannot reach now is "unknown"
whatever its last snapshot said, the order verdicts are listed in, and the JSON document of
an answer. `fleet fit`, the dashboard's Fit column and the MCP tool all go through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fleettui.aggregator.calibration import CalibrationStore, Key, key_for
from fleettui.aggregator.state import NodeState, NodeView
from fleettui.capacity.estimate import Calibration
from fleettui.capacity.fit import Fit, FitRequest, check_fit, find_meta
from fleettui.textsafe import clean
from fleettui.wire import ModelMeta, NodeSnapshot

# fits, then fits after evicting, then does not fit, then cannot tell: the order of every list
VERDICT_ORDER = {"fits": 0, "evict": 1, "no": 2, "unknown": 3}
# How the `/` filter names verdicts (`fit=yes`): the words an operator types.
FILTER_WORDS = {"fits": "yes", "evict": "evict", "no": "no", "unknown": "unknown"}


def unknown(node: str, request: FitRequest, reason: str) -> Fit:
    """The answer for a node we cannot judge (offline, no snapshot yet, the estimator failed)."""
    return Fit(
        node=node,
        verdict="unknown",
        engine=request.engine,
        estimate=None,
        need_bytes=None,
        free_bytes=None,
        margin_bytes=None,
        evict=(),
        reasons=(clean(reason),),
        label="heuristic",
        model=request.model,
    )


def _safe(fit: Fit) -> Fit:
    """The answer with the node's text in it (model and engine names in reasons and evict)
    made terminal-safe: the worker's snapshot is kept as sent, not cleaned for display."""
    return replace(
        fit,
        engine=clean(fit.engine) if fit.engine is not None else None,
        evict=tuple(clean(x) for x in fit.evict),
        reasons=tuple(clean(x) for x in fit.reasons),
        notes=tuple(clean(x) for x in fit.notes),
    )


@dataclass
class FitWatch:
    """The question and the model's metadata. `meta` given (a GGUF header, a config.json) is
    used as is; otherwise the first node that has the model provides it (`learn`), and
    `on_meta` is told so that the nodes judged before then are judged again."""

    request: FitRequest
    meta: ModelMeta | None = None
    meta_from: str | None = None  # "--gguf model.gguf", "node gpu-a"...
    on_meta: Callable[[], None] | None = field(default=None, repr=False)
    # what this operator measured after earlier loads (aggregator/calibration.py), if kept
    calibration: CalibrationStore | None = field(default=None, repr=False)
    strategy: str = "binpack"  # how the dashboard ranks the answers (aggregator/placement.py)
    _corrections: tuple[tuple[int, str | None], dict[str, Calibration]] | None = field(
        default=None, repr=False
    )

    def calibration_key(self, engine: str) -> Key:
        """The key this question's corrections are kept under, for one engine."""
        req = self.request
        quant = self.meta.quant if self.meta is not None else None
        return key_for(engine, req.model, quant, req.ctx, req.parallel)

    def corrections(self) -> dict[str, Calibration]:
        """By engine; worked out again only when the store or the metadata changed (this is
        asked for every snapshot of every node)."""
        if self.calibration is None:
            return {}
        req = self.request
        quant = self.calibration_key("").quant
        stamp = (self.calibration.version, quant)
        if self._corrections is None or self._corrections[0] != stamp:
            found = self.calibration.corrections(req.model, quant, req.ctx, req.parallel)
            self._corrections = (stamp, found)
        return self._corrections[1]

    def learn(self, node: str, snap: NodeSnapshot) -> bool:
        """Take the model's metadata from this node if we have none yet; True when it did."""
        if self.meta is not None:
            return False
        try:
            meta = find_meta({node: snap}, self.request.model)
        except Exception:  # a node's odd snapshot is that node's problem, never the question's
            return False
        if meta is None:
            return False
        self.meta, self.meta_from = meta, f"node {clean(node)}"
        return True

    def learn_all(self, snaps: Iterable[tuple[str, NodeSnapshot]]) -> None:
        for node, snap in snaps:
            if self.learn(node, snap):
                return

    def check(self, node: str, snap: NodeSnapshot) -> Fit:
        """The estimator's answer for this snapshot; never raises (an estimator bug on one
        node's data is that node's "unknown", not a dead poller)."""
        if self.learn(node, snap) and self.on_meta is not None:
            self.on_meta()
        try:
            return _safe(check_fit(node, snap, self.meta, self.request, self.corrections()))
        except Exception as exc:
            return unknown(node, self.request, f"estimator failed: {type(exc).__name__}: {exc}")

    def judge(self, view: NodeView, fit: Fit | None) -> Fit:
        """What a view shows: `fit` (from the node's last snapshot) while the node answers,
        "unknown" with the reason while it is offline or has not answered yet."""
        if view.state is NodeState.OFFLINE:
            why = "; ".join(view.reasons) or "unreachable"
            return unknown(view.name, self.request, f"node OFFLINE: {why}")
        if fit is None:
            return unknown(view.name, self.request, "no snapshot from this node yet")
        return fit


def spare_bytes(fit: Fit) -> int | None:
    """What is left after the load and the safety margin kept free (negative: the shortfall);
    None when a figure is unknown (an "already loaded" answer has no free figure)."""
    if fit.need_bytes is None or fit.free_bytes is None or fit.margin_bytes is None:
        return None
    return fit.free_bytes - fit.need_bytes - fit.margin_bytes


def fit_order(view: NodeView) -> tuple[int, str]:
    """Sort key of `fleet fit`'s lines: fits, evict, no, unknown, then by name."""
    rank = VERDICT_ORDER[view.fit.verdict] if view.fit is not None else len(VERDICT_ORDER)
    return rank, view.name.casefold()


def fit_json(view: NodeView, now: float | None = None) -> dict[str, Any]:
    """One node's answer for `--json` (and MCP): the estimator's document plus what is left
    after the load (`spare_bytes`), the node's state, when the snapshot it judged was taken
    and how old it is."""
    assert view.fit is not None
    now = time.time() if now is None else now
    snap = view.snapshot
    doc = view.fit.to_json()
    doc["spare_bytes"] = spare_bytes(view.fit)
    doc["state"] = view.state.value
    doc["observed_at"] = snap.ts if snap else None
    doc["age_s"] = round(max(0.0, now - snap.ts), 1) if snap else None
    return doc


def fit_document(watch: FitWatch, views: Iterable[NodeView], now: float) -> dict[str, Any]:
    """`fleet fit --json` and the MCP check_fit tool: the question, where the metadata came
    from, one answer per node (each view's `fit`, in the order given)."""
    return {
        "request": asdict(watch.request),
        "meta_from": watch.meta_from,
        "meta": watch.meta.model_dump(mode="json") if watch.meta is not None else None,
        "nodes": [fit_json(v, now) for v in views],
    }
