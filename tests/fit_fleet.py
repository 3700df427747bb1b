"""A fleet for the fit tests: fleettui-kind nodes on 127.0.0.1 serving crafted schema-2
snapshots (a budget, a residency ledger, model metadata), so each verdict is known in advance.

- `roomy`: a 48 GiB GPU with 40 GiB free: the model fits as things are.
- `tight`: a 24 GiB GPU with 2 GiB free; an idle 10 GiB model (would go) and a busy 8 GiB one
  (never proposed): fits after evicting the idle one.
- `full`: a 24 GiB GPU with 1 GiB free and only a busy 22 GiB model: does not fit.
The model is Llama-3.1-8B Q4_K_M (4.58 GiB file, 32 layers, 8 KV heads of 128): about 5.6 GiB
at 8k context, far from every edge above whatever the estimator's overheads.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from fake_nodes import _Server
from fakes import snapshot_dict

MODEL = "llama3.1:8b"
GIB_MB = 1024.0
LLAMA_META: dict[str, Any] = {
    "source": "ollama-show",
    "arch": "llama",
    "params": 8_030_261_248,
    "file_mb": 4692.8,
    "quant": "Q4_K_M",
    "bits_per_weight": 4.89,
    "n_layers": 32,
    "n_heads": 32,
    "n_kv_heads": 8,
    "key_length": 128,
    "value_length": 128,
    "embedding_length": 4096,
    "vocab_size": 128256,
    "ctx_train": 131072,
}


def _model(name: str, gib: float, *, busy: bool, ctx: int = 4096) -> dict[str, Any]:
    return {
        "name": name,
        "size_mb": gib * GIB_MB,
        "vram_mb": gib * GIB_MB,
        "quant": "Q4_K_M",
        "gpus": [0],
        "ctx": ctx,
        "parallel": 1,
        "kv_type": "f16",
        "expires_at": 4_000_000_000.0,
        "busy": busy,
        "sources": {"size_mb": "reported", "vram_mb": "reported", "ctx": "reported"},
    }


def fit_snapshot(
    name: str,
    total_gib: float,
    free_gib: float,
    resident: list[dict[str, Any]],
    *,
    on_disk: bool = False,
) -> dict[str, Any]:
    """A schema-2 snapshot: one GPU of `total_gib`, `free_gib` of it free, `resident` models
    in Ollama; the model on disk there (with its metadata) when `on_disk`."""
    d = snapshot_dict(name)
    d["schema_version"] = 2
    total, free = total_gib * GIB_MB, free_gib * GIB_MB
    engines_mb = sum(m["vram_mb"] for m in resident)
    used = total - free
    d["gpus"] = [
        {
            "index": 0,
            "name": "NVIDIA Test GPU",
            "memory_total_mb": total,
            "memory_used_mb": used,
            "attributed_mb": engines_mb,
            "other_mb": max(0.0, used - engines_mb),
        }
    ]
    available = []
    if on_disk:
        available = [{"name": MODEL, "size_mb": 4692.8, "quant": "Q4_K_M", "meta": LLAMA_META}]
    d["engines"] = [
        {
            "name": "ollama",
            "url": "http://127.0.0.1:11434",
            "status": "up",
            "version": "0.12.6",
            "models": resident,
            "available": available,
            "settings": {"default_ctx": 4096, "num_parallel": 1, "max_loaded": 3},
        }
    ]
    d["budget"] = {
        "kind": "gpu",
        "total_mb": total,
        "used_mb": used,
        "engines_mb": engines_mb,
        "other_mb": max(0.0, used - engines_mb),
        "free_mb": free,
        "limit": "GPU memory",
        "inputs": {"gpu0": total},
    }
    return d


def fit_snapshots() -> dict[str, dict[str, Any]]:
    return {
        "roomy": fit_snapshot("roomy", 48, 40, [], on_disk=True),
        "tight": fit_snapshot(
            "tight",
            24,
            2,
            [_model("qwen-idle:14b", 10, busy=False), _model("coder-busy:7b", 8, busy=True)],
            on_disk=True,
        ),
        "full": fit_snapshot("full", 24, 1, [_model("big-busy:32b", 22, busy=True)], on_disk=True),
    }


class SnapshotNode(_Server):
    """A fleettui-kind node that serves one snapshot (changeable) and nothing else."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        super().__init__()
        self.snapshot = snapshot

    def handle(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if method == "GET" and urlsplit(path).path == "/api/v1/snapshot":
            return 200, json.dumps(self.snapshot).encode(), {"Content-Type": "application/json"}
        return 404, {"error": "not found"}, {}


@contextmanager
def fit_fleet() -> Iterator[dict[str, SnapshotNode]]:
    nodes = {name: SnapshotNode(copy.deepcopy(s)) for name, s in fit_snapshots().items()}
    try:
        for n in nodes.values():
            n.start()
        yield nodes
    finally:
        for n in nodes.values():
            n.stop()
