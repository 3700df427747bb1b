"""Model metadata from files on this machine: a GGUF header, a Hugging Face config.json.

The GGUF header is parsed here (the format's key/value and tensor-info sections, as the GGUF
spec in ggml's docs/gguf.md defines them) rather than with the `gguf` package's GGUFReader:
measured on gemma-3-270m Q4_K_M (241 MiB, 262,144 tokenizer strings), GGUFReader took 15.5 s
and 723 MiB of RSS turning every tokenizer entry into numpy arrays; this reader skips those
arrays by their lengths, reads no tensor data and answers in well under a second
(bench/gguf_header.py). Every failure is one `MetaFileError` line naming the file and field.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import struct
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fleettui.capacity.estimate import MIB, SLIDING_PATTERNS
from fleettui.wire import ModelMeta


class MetaFileError(ValueError):
    """A model file that cannot be read: one line naming the file and the field."""


# GGUF value types (spec): id -> struct format; 8 is a string, 9 an array.
_SCALARS: dict[int, str] = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
# Bounds no real header comes near: a hostile file is an error, never a 10 GB allocation.
MAX_KEY = 65536
MAX_KEPT_STRING = 1 << 20  # longer string values are skipped, not kept
MAX_KEPT_ARRAY = 4096  # numeric arrays kept (per-layer head counts); longer ones skipped
MAX_COUNT = 1 << 32
MAX_DIMS = 8
# llama.h's llama_ftype: general.file_type -> the file type's name.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}
_SPLIT = re.compile(r"^(?P<stem>.*)-(?P<n>\d{5})-of-(?P<total>\d{5})\.gguf$")


class _Reader:
    """Reads a header out of a read-only memory map: only the pages it walks are touched."""

    def __init__(self, buf: mmap.mmap, name: str, endian: str, pos: int) -> None:
        self.buf, self.name, self.e, self.pos = buf, name, endian, pos
        self.where = "the header"

    def fail(self, what: str) -> MetaFileError:
        return MetaFileError(f"{self.name}: {self.where}: {what}")

    def skip(self, n: int) -> int:
        start = self.pos
        if start + n > len(self.buf):
            raise self.fail("truncated (the file ends inside its header)")
        self.pos += n
        return start

    def scalar(self, fmt: str) -> Any:
        return struct.unpack_from(self.e + fmt, self.buf, self.skip(struct.calcsize(fmt)))[0]

    def count(self) -> int:
        n: int = self.scalar("Q")
        if n > MAX_COUNT:
            raise self.fail(f"a length of {n} (not a real header)")
        return n

    def string(self, keep: bool = True, limit: int = MAX_KEPT_STRING) -> str | None:
        n = self.count()
        start = self.skip(n)
        if not keep or n > limit:
            return None
        try:
            return self.buf[start : start + n].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("a string that is not UTF-8") from None

    def value(self, vtype: int, keep: bool = True) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string(keep)
        if vtype != _ARRAY:
            raise self.fail(f"unknown value type {vtype}")
        etype, n = self.scalar("I"), self.count()
        if etype == _ARRAY:
            raise self.fail("an array of arrays")
        if etype in _SCALARS and (n > MAX_KEPT_ARRAY or not keep):
            self.skip(n * struct.calcsize(_SCALARS[etype]))
            return _Skipped(n)
        if etype == _STRING:  # the tokenizer's strings: walked by their lengths, never decoded
            buf, unpack, end = self.buf, struct.Struct(self.e + "Q").unpack_from, len(self.buf)
            pos = self.pos
            for _ in range(n):
                if pos + 8 > end:
                    raise self.fail("truncated (the file ends inside its header)")
                pos += 8 + unpack(buf, pos)[0]
            if pos > end:
                raise self.fail("truncated (the file ends inside its header)")
            self.pos = pos
            return _Skipped(n)
        return [self.value(etype) for _ in range(n)]


class _Skipped:
    """An array left unread: only its length is known (the tokenizer's 262,144 tokens)."""

    def __init__(self, n: int) -> None:
        self.n = n


def _header(path: Path) -> tuple[dict[str, Any], int, int]:
    """(key/values, parameter count, bytes of tensor data) of one GGUF file."""
    name = path.name
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise MetaFileError(f"{name}: not a GGUF file ({size} bytes)")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise MetaFileError(f"{name}: cannot open: {exc.strerror or exc}") from None
    with buf:
        if buf[:4] != b"GGUF":
            raise MetaFileError(f"{name}: not a GGUF file (it begins {buf[:4]!r})")
        endian = "<" if struct.unpack_from("<I", buf, 4)[0] < 0x10000 else ">"
        version = struct.unpack_from(endian + "I", buf, 4)[0]
        if version not in (2, 3):
            raise MetaFileError(f"{name}: GGUF version {version} (this reads versions 2 and 3)")
        r = _Reader(buf, name, endian, 8)
        n_tensors, n_kv = r.count(), r.count()
        kv: dict[str, Any] = {}
        for i in range(n_kv):
            r.where = f"key {i + 1} of {n_kv}"
            key = r.string(limit=MAX_KEY)
            if key is None:
                raise r.fail("a key longer than 64 KiB")
            r.where = key
            vtype = r.scalar("I")
            kv[key] = r.value(vtype, keep=not key.startswith("tokenizer.ggml."))
        params = 0
        for i in range(n_tensors):
            r.where = f"tensor {i + 1} of {n_tensors}"
            r.string(keep=False)
            dims = r.scalar("I")
            if dims > MAX_DIMS:
                raise r.fail(f"{dims} dimensions")
            params += math.prod(r.scalar("Q") for _ in range(dims))
            r.skip(4 + 8)  # type, offset
        align = kv.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0:
            raise MetaFileError(f"{name}: general.alignment: {align!r} is not a positive integer")
        start = -(-r.pos // align) * align
    return kv, params, max(size - start, 0)


def _parts(path: Path) -> list[Path]:
    """A split model's parts (model-00001-of-00003.gguf ...), or the one file."""
    m = _SPLIT.match(path.name)
    if not m:
        return [path]
    total = int(m["total"])
    parts = [
        path.with_name(f"{m['stem']}-{i:05d}-of-{total:05d}.gguf") for i in range(1, total + 1)
    ]
    for p in parts:
        if not p.is_file():
            raise MetaFileError(f"{path.name}: split model part {p.name} is missing")
    return parts


def _int(kv: dict[str, Any], key: str, name: str) -> int | None:
    v = kv.get(key)
    if v is None or isinstance(v, _Skipped):
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise MetaFileError(f"{name}: {key}: expected a non-negative integer, got {v!r}")
    return v


def _ints(kv: dict[str, Any], key: str, name: str) -> int | list[int] | None:
    """An integer, or a per-layer array of them."""
    v = kv.get(key)
    if isinstance(v, list):
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
            raise MetaFileError(f"{name}: {key}: expected non-negative integers")
        return v
    return _int(kv, key, name)


def meta_from_gguf(path: str | Path) -> ModelMeta:
    """What the estimator needs from a GGUF file's header (no tensor data is read)."""
    path = Path(path)
    name = path.name
    parts = _parts(path)
    kv, params, data = _header(parts[0])
    for p in parts[1:]:
        _, more, more_data = _header(p)
        params, data = params + more, data + more_data
    arch = kv.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise MetaFileError(f"{name}: general.architecture: missing or not a string")
    a = arch + "."
    heads = _ints(kv, a + "attention.head_count", name)
    kv_heads = _ints(kv, a + "attention.head_count_kv", name)
    per_layer = kv_heads if isinstance(kv_heads, list) else None
    n_layers = _int(kv, a + "block_count", name)
    vocab = _int(kv, a + "vocab_size", name)
    if vocab is None and isinstance(tokens := kv.get("tokenizer.ggml.tokens"), _Skipped):
        vocab = tokens.n
    sliding_layers = None
    pattern = kv.get(a + "attention.sliding_window_pattern")
    if isinstance(pattern, list):
        sliding_layers = sum(1 for x in pattern if x)
    elif isinstance(pattern, int) and pattern > 0 and n_layers and arch not in SLIDING_PATTERNS:
        sliding_layers = n_layers - n_layers // pattern
    recurrent = None
    if any(k.startswith((a + "ssm.", a + "wkv.")) for k in kv):
        if per_layer is not None:
            recurrent = sum(1 for h in per_layer if h == 0)
        elif not kv_heads:
            recurrent = n_layers
    kv_lora = _int(kv, a + "attention.kv_lora_rank", name)
    ftype = _int(kv, "general.file_type", name)
    size = sum(p.stat().st_size for p in parts)
    return _meta(
        name,
        source="gguf",
        arch=arch,
        params=params or None,
        file_mb=size / MIB,
        quant=FILE_TYPES.get(ftype) if ftype is not None else None,
        bits_per_weight=min(data * 8 / params, 64) if params else None,
        n_layers=n_layers,
        n_heads=max(heads) if isinstance(heads, list) and heads else heads or None,
        n_kv_heads=max(per_layer)
        if per_layer
        else (kv_heads if isinstance(kv_heads, int) else None),
        kv_heads_per_layer=per_layer,
        key_length=_int(kv, a + "attention.key_length", name),
        value_length=_int(kv, a + "attention.value_length", name),
        embedding_length=_int(kv, a + "embedding_length", name),
        vocab_size=vocab,
        ctx_train=_int(kv, a + "context_length", name),
        sliding_window=_int(kv, a + "attention.sliding_window", name),
        sliding_layers=sliding_layers,
        kv_lora_rank=kv_lora,
        rope_dim=_int(kv, a + "rope.dimension_count", name) if kv_lora else None,
        recurrent_layers=recurrent,
    )


def _meta(name: str, **fields: Any) -> ModelMeta:
    """The wire's bounds apply to a file too: a value past them is the file's error."""
    try:
        return ModelMeta(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        raise MetaFileError(f"{name}: {field}: {err['msg']}") from None


# --- Hugging Face config.json ---------------------------------------------------------------
_DTYPES: dict[str, tuple[str, float]] = {
    "bfloat16": ("BF16", 16),
    "float16": ("F16", 16),
    "float32": ("F32", 32),
}
# layer_types entries that attend (everything else, linear_attention, mamba..., is recurrent)
_FULL, _SLIDING = {"full_attention", "attention"}, {"sliding_attention"}


def meta_from_hf_config(path: str | Path) -> ModelMeta:
    """What the estimator needs from a Hugging Face config.json (a file, or its directory);
    the weights' size and parameter count from the *.safetensors headers beside it."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    name = path.name if path.name != "config.json" else f"{path.parent.name}/config.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MetaFileError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetaFileError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MetaFileError(f"{name}: expected a JSON object")
    # multimodal configs (gemma3, llava...) keep the language model under text_config
    text = doc.get("text_config")
    cfg = {**doc, **text} if isinstance(text, dict) else doc

    def num(key: str) -> int | None:
        v = cfg.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise MetaFileError(f"{name}: {key}: expected a non-negative integer, got {v!r}")
        return v

    n_layers, heads = num("num_hidden_layers"), num("num_attention_heads")
    arch = cfg.get("model_type")
    arch = arch if isinstance(arch, str) else None
    window = num("sliding_window")
    if cfg.get("use_sliding_window") is False:
        window = None
    sliding = recurrent = None
    types = cfg.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise MetaFileError(f"{name}: layer_types: expected a list of strings")
        sliding = sum(t in _SLIDING for t in types) if window else 0
        recurrent = sum(t not in _FULL | _SLIDING for t in types) or None
    elif window and arch not in SLIDING_PATTERNS:
        sliding = n_layers  # Mistral-style: every layer slides
    dtype = cfg.get("torch_dtype", cfg.get("dtype"))
    quant, bits = _DTYPES.get(dtype, (None, None)) if isinstance(dtype, str) else (None, None)
    params, size = _safetensors(path.parent, name)
    head = num("head_dim")
    kv_lora = num("kv_lora_rank")
    return _meta(
        name,
        source="hf-config",
        arch=arch,
        params=params,
        file_mb=size / MIB if size else None,
        quant=quant,
        bits_per_weight=bits,
        n_layers=n_layers,
        n_heads=heads,
        n_kv_heads=num("num_key_value_heads") or heads,
        key_length=head,
        value_length=num("v_head_dim") or head,
        embedding_length=num("hidden_size"),
        vocab_size=num("vocab_size"),
        ctx_train=num("max_position_embeddings"),
        sliding_window=window,
        sliding_layers=sliding,
        kv_lora_rank=kv_lora,
        rope_dim=num("qk_rope_head_dim") if kv_lora else None,
        recurrent_layers=recurrent,
    )


MAX_SAFETENSORS_HEADER = 100 << 20  # the format's own limit


def _safetensors(folder: Path, name: str) -> tuple[int | None, int]:
    """(parameter count, bytes) of the *.safetensors files beside config.json: headers only."""
    params, size = 0, 0
    for p in sorted(folder.glob("*.safetensors")):
        try:
            with p.open("rb") as f:
                raw = f.read(8)
                n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
                if not 0 < n <= MAX_SAFETENSORS_HEADER:
                    raise MetaFileError(f"{p.name}: not a safetensors file (header length)")
                head = json.loads(f.read(n))
            size += p.stat().st_size
        except OSError as exc:
            raise MetaFileError(f"{p.name}: cannot read: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MetaFileError(f"{p.name}: header is not valid JSON") from None
        if not isinstance(head, dict):
            raise MetaFileError(f"{p.name}: header is not a JSON object")
        for key, t in head.items():
            shape = t.get("shape") if isinstance(t, dict) and key != "__metadata__" else None
            if isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape):
                params += math.prod(shape)
    return params or None, size
