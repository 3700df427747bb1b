"""Metadata from files: GGUF headers written by the reference writer (gguf-py), config.json."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from fleettui.capacity.estimate import MIB, estimate
from fleettui.capacity.files import MetaFileError, meta_from_gguf, meta_from_hf_config
from real_parts import need


def write_gguf(path: Path, arch: str = "llama", tensors: int = 3, **keys: object) -> Path:
    """A real GGUF file (gguf-py's writer) with llama-like keys and a few small tensors."""
    w = gguf.GGUFWriter(path, arch=arch)
    w.add_block_count(int(keys.get("layers", 4)))  # type: ignore[call-overload]
    w.add_head_count(8)
    w.add_head_count_kv(keys.get("kv", 2))  # type: ignore[arg-type]
    w.add_key_length(64)
    w.add_value_length(64)
    w.add_embedding_length(512)
    w.add_context_length(8192)
    w.add_file_type(15)
    w.add_token_list([f"tok{i}" for i in range(1000)])
    w.add_token_scores([0.0] * 1000)
    if "window" in keys:
        w.add_sliding_window(int(keys["window"]))  # type: ignore[call-overload]
    if "lora" in keys:
        w.add_kv_lora_rank(int(keys["lora"]))  # type: ignore[call-overload]
        w.add_rope_dimension_count(64)
    if "ssm" in keys:
        w.add_ssm_state_size(16)
    for i in range(tensors):
        w.add_tensor(f"blk.{i}.w", np.ones((16, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_header_gives_what_the_estimator_needs(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    meta = meta_from_gguf(path)
    assert meta.source == "gguf" and meta.arch == "llama"
    assert (meta.n_layers, meta.n_heads, meta.n_kv_heads) == (4, 8, 2)
    assert (meta.key_length, meta.value_length, meta.embedding_length) == (64, 64, 512)
    assert meta.ctx_train == 8192 and meta.vocab_size == 1000  # the token list's length
    assert meta.quant == "Q4_K_M" and meta.params == 3 * 16 * 32
    assert meta.file_mb == pytest.approx(path.stat().st_size / MIB)
    assert meta.bits_per_weight == pytest.approx(32, rel=0.01)  # f32 tensors
    est = estimate(meta, engine="llamacpp", ctx=1024, parallel=1)
    assert est.total_bytes is not None and est.label == "exact"


def test_gguf_agrees_with_the_reference_reader(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", kv=[2, 4, 2, 4], window=128)
    meta = meta_from_gguf(path)
    ref = gguf.GGUFReader(path)
    assert meta.kv_heads_per_layer == list(ref.fields["llama.attention.head_count_kv"].contents())
    assert meta.n_kv_heads == 4
    assert meta.sliding_window == ref.fields["llama.attention.sliding_window"].contents() == 128
    assert meta.params == sum(int(t.n_elements) for t in ref.tensors)


def test_gguf_mla_and_recurrent_keys(tmp_path: Path) -> None:
    mla = meta_from_gguf(write_gguf(tmp_path / "a.gguf", arch="deepseek2", lora=512))
    assert (mla.kv_lora_rank, mla.rope_dim) == (512, 64)
    hybrid = meta_from_gguf(write_gguf(tmp_path / "b.gguf", arch="jamba", kv=[0, 0, 0, 2], ssm=1))
    assert hybrid.recurrent_layers == 3


def test_gguf_reads_no_tensor_data(tmp_path: Path) -> None:
    """A file cut right after its header still reads: the tensor data is never touched."""
    path = write_gguf(tmp_path / "m.gguf", tensors=200)
    full = meta_from_gguf(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 200 * 16 * 32 * 4])  # drop the tensor data
    meta = meta_from_gguf(cut)
    assert meta.params == full.params and meta.n_layers == full.n_layers
    with pytest.raises(Exception):  # noqa: B017  the reference reader memory-maps the data
        gguf.GGUFReader(cut)


def test_gguf_split_model_sums_its_parts(tmp_path: Path) -> None:
    one = write_gguf(tmp_path / "m-00001-of-00002.gguf")
    two = write_gguf(tmp_path / "m-00002-of-00002.gguf", tensors=2)
    meta = meta_from_gguf(one)
    assert meta.params == 5 * 16 * 32
    assert meta.file_mb == pytest.approx((one.stat().st_size + two.stat().st_size) / MIB)
    two.unlink()
    with pytest.raises(MetaFileError, match=r"m-00001-of-00002.gguf: split model part"):
        meta_from_gguf(one)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"PK\x03\x04" + b[4:], "not a GGUF file"),
        (lambda b: b[:4] + struct.pack("<I", 1) + b[8:], "GGUF version 1"),
        (lambda b: b[:100], "truncated"),
        (lambda b: b[:8] + struct.pack("<Q", 2**40) + b[16:], "not a real header"),
        (lambda b: b"", "not a GGUF file"),
    ],
)
def test_bad_gguf_is_one_line_naming_the_file(tmp_path: Path, mangle, message) -> None:
    good = write_gguf(tmp_path / "good.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(mangle(good))
    with pytest.raises(MetaFileError, match=message) as err:
        meta_from_gguf(bad)
    assert str(err.value).startswith("bad.gguf: ") and "\n" not in str(err.value)


def test_gguf_wrong_field_type_names_the_key(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(tmp_path / "t.gguf", arch="llama")
    w.add_string("llama.block_count", "thirty-two")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(MetaFileError, match=r"t.gguf: llama.block_count: expected a non-negative"):
        meta_from_gguf(tmp_path / "t.gguf")
    w = gguf.GGUFWriter(tmp_path / "big.gguf", arch="llama")
    w.add_uint64("llama.block_count", 2**40)  # past the wire's bound for a count
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(MetaFileError, match=r"big.gguf: n_layers: "):
        meta_from_gguf(tmp_path / "big.gguf")
    with pytest.raises(MetaFileError, match=r"missing.gguf: cannot open"):
        meta_from_gguf(tmp_path / "missing.gguf")


LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}


def safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    head = json.dumps(
        {k: {"dtype": "BF16", "shape": s, "data_offsets": [0, 0]} for k, s in shapes.items()}
        | {"__metadata__": {"format": "pt"}}
    )
    path.write_bytes(struct.pack("<Q", len(head)) + head.encode() + b"\0" * 64)


def test_hf_config_llama(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_31_8B))
    safetensors(tmp_path / "model-00001-of-00002.safetensors", {"a": [1024, 4096]})
    safetensors(tmp_path / "model-00002-of-00002.safetensors", {"b": [4096], "c": [2, 3]})
    meta = meta_from_hf_config(tmp_path)
    assert meta.source == "hf-config" and meta.arch == "llama"
    assert (meta.n_layers, meta.n_heads, meta.n_kv_heads, meta.key_length) == (32, 32, 8, 128)
    assert meta.quant == "BF16" and meta.bits_per_weight == 16
    assert meta.params == 1024 * 4096 + 4096 + 6
    size = sum(p.stat().st_size for p in tmp_path.glob("*.safetensors"))
    assert meta.file_mb == pytest.approx(size / MIB)
    est = estimate(meta, engine="vllm", ctx=None, parallel=None, gpu_total_bytes=80 * 10**9)
    assert est.total_bytes == 72 * 10**9
    kv = estimate(meta, engine="mlx", ctx=8192, parallel=1)
    assert next(t.bytes for t in kv.terms if t.name == "kv cache") == 1 << 30


def test_hf_config_gemma3_text_config_and_layer_types(tmp_path: Path) -> None:
    types = ["sliding_attention"] * 5 + ["full_attention"]
    cfg = {
        "model_type": "gemma3",
        "text_config": {
            "model_type": "gemma3_text",
            "num_hidden_layers": 6,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "hidden_size": 640,
            "sliding_window": 512,
            "layer_types": types,
            "vocab_size": 262144,
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    meta = meta_from_hf_config(path)
    assert meta.sliding_window == 512 and meta.sliding_layers == 5 and meta.n_layers == 6
    assert meta.file_mb is None  # no weights beside it: the estimator says what is missing


def test_hf_config_mla_qwen_and_mistral_windows(tmp_path: Path) -> None:
    def load(cfg: dict) -> object:
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        return meta_from_hf_config(tmp_path / "config.json")

    ds = load(
        {
            "model_type": "deepseek_v2",
            "num_hidden_layers": 27,
            "kv_lora_rank": 512,
            "qk_rope_head_dim": 64,
            "num_attention_heads": 16,
        }
    )
    assert (ds.kv_lora_rank, ds.rope_dim) == (512, 64)  # type: ignore[attr-defined]
    qwen = load(
        {
            "model_type": "qwen2",
            "num_hidden_layers": 28,
            "sliding_window": 131072,
            "use_sliding_window": False,
        }
    )
    assert qwen.sliding_window is None  # type: ignore[attr-defined]
    old_gemma = load({"model_type": "gemma3_text", "num_hidden_layers": 18, "sliding_window": 512})
    assert old_gemma.sliding_layers is None  # type: ignore[attr-defined]  # the arch pattern
    mistral = load({"model_type": "mistral", "num_hidden_layers": 32, "sliding_window": 4096})
    assert mistral.sliding_layers == 32  # type: ignore[attr-defined]
    nxt = load(
        {
            "model_type": "qwen3_next",
            "num_hidden_layers": 4,
            "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        }
    )
    assert nxt.recurrent_layers == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"num_hidden_layers": "32"}', "num_hidden_layers: expected a non-negative integer"),
        ('{"num_hidden_layers": true}', "num_hidden_layers: expected a non-negative integer"),
        ('{"layer_types": "full"}', "layer_types: expected a list of strings"),
        ('{"vocab_size": 10000000000}', "vocab_size: "),
    ],
)
def test_bad_config_is_one_line_naming_the_field(tmp_path: Path, content, message) -> None:
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(MetaFileError, match=message) as err:
        meta_from_hf_config(tmp_path)
    assert "config.json: " in str(err.value) and "\n" not in str(err.value)


def test_bad_safetensors_header_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_31_8B))
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(MetaFileError, match=r"model.safetensors: header is not valid JSON"):
        meta_from_hf_config(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 8)
    with pytest.raises(MetaFileError, match=r"model.safetensors: not a safetensors file"):
        meta_from_hf_config(tmp_path)


def test_the_real_gemma3_270m_header() -> None:
    (path,) = need("test-model")
    meta = meta_from_gguf(path)
    assert (meta.arch, meta.n_layers, meta.n_heads, meta.n_kv_heads) == ("gemma3", 18, 4, 1)
    assert (meta.key_length, meta.sliding_window, meta.vocab_size) == (256, 512, 262144)
    assert meta.quant == "Q4_K_M" and meta.params == 268_098_176
    assert meta.file_mb == pytest.approx(241.4, abs=0.1)
