"""The `F` question: which model to judge on every node, with the context, slots, KV type and
engine `fleet fit` takes as flags and the ranking strategy `fleet place` takes, typed as
`MODEL ctx=8192 parallel=2 kv=q8_0 engine=ollama strategy=spread`.
"""

from __future__ import annotations

from rich.text import Text

from fleettui.aggregator.placement import STRATEGIES, Strategy
from fleettui.aggregator.state import NodeView
from fleettui.capacity.fit import FitRequest
from fleettui.views.columns import plural
from fleettui.views.tui.screens.ask import AskBar
from fleettui.wire import CTX_MAX, KV_TYPES, MODEL_RE, PARALLEL_MAX

OPTIONS = "ctx, parallel, kv, engine, strategy"
LIMITS = {"ctx": CTX_MAX, "parallel": PARALLEL_MAX}  # the wire's, as `fleet fit` takes them


def parse_fit(text: str) -> tuple[FitRequest, Strategy]:
    """`MODEL [ctx=N] [parallel=N] [kv=TYPE] [engine=NAME] [strategy=binpack|spread]`: the
    question and how to rank its answers; ValueError saying what is wrong."""
    words = text.split()
    if not words:
        raise ValueError("name a model")
    model, options = words[0], {}
    strategy: Strategy = "binpack"
    if "=" in model:
        raise ValueError(f"the model comes first, then options: got {model!r}")
    if not MODEL_RE.fullmatch(model):
        raise ValueError(f"{model[:60]!r} is not a model name (like llama3.1:8b)")
    seen: set[str] = set()
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or not value:
            raise ValueError(f"{word!r}: expected key=value ({OPTIONS})")
        if key in seen:
            raise ValueError(f"{key} given twice")
        seen.add(key)
        if key in LIMITS:
            if not value.isdigit() or not 1 <= int(value) <= LIMITS[key]:
                raise ValueError(f"{key}: a whole number from 1 to {LIMITS[key]:,}")
            options[key] = int(value)
        elif key == "kv":
            if value not in KV_TYPES:
                raise ValueError(f"kv: one of {', '.join(KV_TYPES)}")
            options["kv_type"] = value
        elif key == "engine":
            options[key] = value
        elif key == "strategy":
            if value not in STRATEGIES:
                raise ValueError(f"strategy: one of {', '.join(STRATEGIES)}")
            strategy = value  # type: ignore[assignment]
        else:
            raise ValueError(f"unknown option {key!r} ({OPTIONS})")
    return FitRequest(model=model, **options), strategy


def _has(view: NodeView, model: str) -> bool:
    snap = view.snapshot
    return snap is not None and any(
        m.name == model for e in snap.engines for m in [*e.models, *e.available]
    )


def describe(text: str, views: list[NodeView]) -> tuple[bool, Text]:
    """(ok, one line to show beside the input) for the question as typed so far."""
    if not text.strip():
        return True, Text("empty: hide the Fit column", style="dim")
    try:
        req, _ = parse_fit(text)
    except ValueError as exc:
        return False, Text(str(exc), style="bold red")
    n = sum(_has(v, req.model) for v in views)
    if n:
        return True, Text(f"resident or on disk on {plural(n, 'node')}", style="green")
    return True, Text(
        "on no node: without its metadata every node answers '?' (fleet fit --gguf can judge it)",
        style="yellow",
    )


class FitBar(AskBar):
    """Done with the question as typed ("" clears it) or None when cancelled; asked on enter
    only (each question re-judges every node)."""

    PREFIX = "fit"
    PROMPT = "fit?"
    PLACEHOLDER = "MODEL [ctx=N parallel=N kv=TYPE engine=NAME strategy=spread]"

    def describe(self, text: str) -> tuple[bool, Text]:
        return describe(text, self.views)

    def tidy(self, text: str) -> str:
        return " ".join(text.split())
