"""Model metadata from the engines' own JSON: Ollama `/api/show`, llama.cpp `/v1/models` meta,
LM Studio `/api/v1/models`. Pure parsing, no I/O, so the agent's probes and the tests share it.

Nothing an engine sends is trusted: a figure of the wrong type or outside the wire's range for
its field (a NaN layer count, 1e308 parameters, a 10,000-character architecture) is dropped and
named in `problems`; the rest of the metadata is kept. Every field is optional, because older
engine versions omit most of them; the estimator names what it lacks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from fleettui.capacity.estimate import SLIDING_PATTERNS
from fleettui.textsafe import shown
from fleettui.wire import ModelMeta

MB = 1024 * 1024
_PARAMS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
# llama.cpp's file-type names (llama_model_ftype_name) as the short names files and Ollama use.
_FTYPE_SIZES = {"Small": "S", "Medium": "M", "Large": "L"}


def _num(v: Any) -> Any:
    """An int as sent; a float that is an integer as an int; anything else for the wire to judge."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
        return int(v)
    return v


def build_meta(source: str, fields: Mapping[str, Any], problems: list[str] | None) -> ModelMeta:
    """A ModelMeta of the fields the wire accepts; each refused one is dropped and named (a
    bool too: no field here is one, and pydantic's lax mode would read True as 1)."""
    values = {k: _num(v) for k, v in fields.items() if v is not None}
    for name in [k for k, v in values.items() if isinstance(v, bool)]:
        if problems is not None:
            problems.append(f"{source}: {name} {values[name]!r} dropped")
        del values[name]
    for _ in range(len(values) + 1):
        try:
            return ModelMeta.model_validate({"source": source, **values})
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            if not bad & set(values):  # the source itself: say so, keep nothing
                break
            for name in sorted(bad & set(values)):
                if problems is not None:
                    problems.append(f"{source}: {name} {shown(values[name])} dropped")
                del values[name]
    return ModelMeta(source="unknown")


def params_from_text(text: Any) -> int | None:
    """'7.6B', '270M', '8B' (Ollama parameter_size, LM Studio params_string) as a count."""
    if not isinstance(text, str) or len(text) > 32:
        return None
    m = _PARAMS_RE.match(text)
    if m is None:
        return None
    return round(float(m.group(1)) * _SCALE[m.group(2).upper()])


def quant_name(ftype: Any) -> Any:
    """llama.cpp's `model_ftype` ('Q4_K - Medium', 'all F32', 'IQ4_NL - 4.5 bpw') as the name
    GGUF files and Ollama use ('Q4_K_M', 'F32', 'IQ4_NL'); anything else as sent."""
    if not isinstance(ftype, str) or len(ftype) > 64:
        return ftype
    text = ftype.removeprefix("all ").strip()
    base, _, size = text.partition(" - ")
    if size in _FTYPE_SIZES:
        return f"{base}_{_FTYPE_SIZES[size]}"
    return base if size.endswith("bpw") else text


def _mib(n: Any) -> Any:
    if isinstance(n, int | float) and not isinstance(n, bool):
        try:  # a negative unrounded: -1 B must not become 0.0 and pass
            return round(n / MB, 1) if n >= 0 else n / MB
        except OverflowError:
            return n
    return n


def meta_from_ollama_show(show: Any, problems: list[str] | None = None) -> ModelMeta:
    """Ollama `POST /api/show` → ModelMeta, from `model_info` (GGUF keys) and `details`."""
    src = "ollama-show"
    if not isinstance(show, dict):
        if problems is not None:
            problems.append(f"{src}: not an object")
        return ModelMeta(source=src)
    info = show.get("model_info") if isinstance(show.get("model_info"), dict) else {}
    details = show.get("details") if isinstance(show.get("details"), dict) else {}
    arch = info.get("general.architecture") or details.get("family")
    fields = _gguf_fields(info, arch if isinstance(arch, str) else None)
    fields.setdefault("quant", details.get("quantization_level") or None)
    if fields.get("params") is None:
        fields["params"] = params_from_text(details.get("parameter_size"))
    return build_meta(src, fields, problems)


def _gguf_fields(kv: Mapping[str, Any], arch: str | None) -> dict[str, Any]:
    """The estimator's inputs from GGUF keys, as the file says them (its defaults, such as a
    key length of embedding_length / head_count or as many KV heads as heads, are the
    estimator's): `{arch}.block_count`, `.attention.head_count`, `.attention.head_count_kv` (an
    int, or one per layer), key/value lengths, context length, sliding window, MLA, recurrent
    layers."""
    fields: dict[str, Any] = {"arch": arch, "params": kv.get("general.parameter_count")}
    if arch is None:
        return fields

    def key(name: str) -> Any:
        return kv.get(f"{arch}.{name}")

    n_layers = key("block_count")
    heads = key("attention.head_count")
    kv_heads = key("attention.head_count_kv")
    if isinstance(heads, list):  # heads per layer too: the widest sets the head size
        heads = max((h for h in heads if isinstance(h, int)), default=None)
    per_layer = kv_heads if isinstance(kv_heads, list) else None
    if per_layer is not None:
        ints = [h for h in per_layer if isinstance(h, int) and not isinstance(h, bool)]
        kv_heads = max(ints, default=None)
    fields.update(
        n_layers=n_layers,
        n_heads=heads,
        n_kv_heads=kv_heads,
        kv_heads_per_layer=per_layer,
        embedding_length=key("embedding_length"),
        vocab_size=key("vocab_size"),
        ctx_train=key("context_length"),
        key_length=key("attention.key_length"),
        value_length=key("attention.value_length"),
        sliding_window=key("attention.sliding_window"),
        kv_lora_rank=key("attention.kv_lora_rank"),
    )
    if fields["kv_lora_rank"] is not None:
        fields["rope_dim"] = key("rope.dimension_count")
    pattern = key("attention.sliding_window_pattern")
    if isinstance(pattern, list):  # one bool per layer: true where the window applies
        fields["sliding_layers"] = sum(1 for x in pattern if x is True)
    elif (
        isinstance(pattern, int)
        and not isinstance(pattern, bool)
        and pattern > 0
        and isinstance(n_layers, int)
        and arch not in SLIDING_PATTERNS  # the estimator knows those archs' fixed patterns
    ):
        fields["sliding_layers"] = n_layers - n_layers // pattern
    if any(k.startswith((f"{arch}.ssm.", f"{arch}.wkv.")) for k in kv):
        if per_layer is not None:  # hybrid: the layers without KV heads are recurrent
            fields["recurrent_layers"] = sum(1 for h in per_layer if h == 0)
        elif not kv_heads:  # no attention at all (mamba, rwkv)
            fields["recurrent_layers"] = n_layers
    return fields


def meta_from_llamacpp(meta: Any, props: Any, problems: list[str] | None = None) -> ModelMeta:
    """llama.cpp `/v1/models` `data[].meta` (n_params, size, n_ctx_train, n_embd, n_vocab,
    ftype; null while loading) and `/props` (model_ftype: the quantisation) → ModelMeta."""
    src = "llamacpp-meta"
    meta = meta if isinstance(meta, dict) else {}
    props = props if isinstance(props, dict) else {}
    return build_meta(
        src,
        {
            "params": meta.get("n_params"),
            "file_mb": _mib(meta.get("size")),
            "ctx_train": meta.get("n_ctx_train"),
            "embedding_length": meta.get("n_embd"),
            "vocab_size": meta.get("n_vocab"),
            "quant": quant_name(props.get("model_ftype") or meta.get("ftype")),
        },
        problems,
    )


def meta_from_lmstudio(model: Any, problems: list[str] | None = None) -> ModelMeta:
    """LM Studio `/api/v1/models` entry (0.4+: architecture, quantization{name,
    bits_per_weight}, size_bytes, params_string, max_context_length) or a `/api/v0/models`
    entry (arch, quantization as a string, max_context_length) → ModelMeta."""
    src = "lmstudio"
    if not isinstance(model, dict):
        return ModelMeta(source=src)
    quant = model.get("quantization")
    bpw = None
    if isinstance(quant, dict):
        bpw = quant.get("bits_per_weight")
        quant = quant.get("name")
    return build_meta(
        src,
        {
            "arch": model.get("architecture") or model.get("arch"),
            "params": params_from_text(model.get("params_string")),
            "file_mb": _mib(model.get("size_bytes")),
            "quant": quant or None,
            "bits_per_weight": bpw,
            "ctx_train": model.get("max_context_length"),
        },
        problems,
    )
