"""capacity/meta.py: the engines' JSON as ModelMeta, every figure optional and bounded."""

from __future__ import annotations

import pytest

from fleettui.capacity.estimate import estimate
from fleettui.capacity.meta import (
    build_meta,
    meta_from_llamacpp,
    meta_from_lmstudio,
    meta_from_ollama_show,
    params_from_text,
    quant_name,
)


@pytest.mark.parametrize(
    "ftype, name",
    [
        ("Q4_K - Medium", "Q4_K_M"),
        ("Q3_K - Small", "Q3_K_S"),
        ("Q3_K - Large", "Q3_K_L"),
        ("Q8_0", "Q8_0"),
        ("all F32", "F32"),
        ("BF16", "BF16"),
        ("IQ4_NL - 4.5 bpw", "IQ4_NL"),
        ("MXFP4 MoE", "MXFP4 MoE"),
        (7, 7),  # not text: as sent, for the wire to refuse
    ],
)
def test_llamacpp_file_type_names(ftype, name) -> None:
    assert quant_name(ftype) == name


@pytest.mark.parametrize(
    "text, n",
    [
        ("7.6B", 7_600_000_000),
        ("268.10M", 268_100_000),
        ("8B", 8_000_000_000),
        ("1.5t", 1_500_000_000_000),
        ("350", 350),
        ("", None),
        ("big", None),
        ("7B" * 20, None),
        (7, None),
    ],
)
def test_parameter_counts_from_text(text, n) -> None:
    assert params_from_text(text) == n


def _show(arch: str, **keys: object) -> dict:
    return {
        "model_info": {"general.architecture": arch, **{f"{arch}.{k}": v for k, v in keys.items()}}
    }


def test_llama_3_1_8b_from_ollama_gives_the_published_kv_per_token() -> None:
    show = _show(
        "llama",
        **{
            "block_count": 32,
            "attention.head_count": 32,
            "attention.head_count_kv": 8,
            "embedding_length": 4096,
            "context_length": 131072,
        },
    )
    show["model_info"]["general.parameter_count"] = 8030261248
    m = meta_from_ollama_show(show)
    assert (m.n_layers, m.n_heads, m.n_kv_heads, m.ctx_train) == (32, 32, 8, 131072)
    # the estimator's default head size (4096 / 32 = 128): 128 KiB per token at f16
    e = estimate(m, engine="llamacpp", ctx=8192, parallel=1, kv_type="f16", platform="cpu")
    kv = next(t for t in e.terms if t.name.lower().startswith("kv"))
    assert kv.bytes == 2**30


def test_per_layer_kv_heads_and_hybrid_recurrent_layers() -> None:
    show = _show(
        "granitehybrid",
        **{"block_count": 4, "attention.head_count": 8, "attention.head_count_kv": [0, 4, 0, 0]},
    )
    show["model_info"]["granitehybrid.ssm.state_size"] = 128
    m = meta_from_ollama_show(show)
    assert m.kv_heads_per_layer == [0, 4, 0, 0] and m.n_kv_heads == 4
    assert m.recurrent_layers == 3


def test_recurrent_only_mla_and_an_explicit_sliding_pattern() -> None:
    mamba = _show("mamba", **{"block_count": 64, "ssm.state_size": 16})
    assert meta_from_ollama_show(mamba).recurrent_layers == 64
    mla = _show(
        "deepseek2",
        **{"block_count": 61, "attention.kv_lora_rank": 512, "rope.dimension_count": 64},
    )
    m = meta_from_ollama_show(mla)
    assert (m.kv_lora_rank, m.rope_dim) == (512, 64)
    llama = _show("llama", **{"rope.dimension_count": 128})
    assert meta_from_ollama_show(llama).rope_dim is None  # only MLA has a separate RoPE part
    swa = _show("gpt-oss", **{"block_count": 24, "attention.sliding_window": 128})
    swa["model_info"]["gpt-oss.attention.sliding_window_pattern"] = [True, False] * 12
    assert meta_from_ollama_show(swa).sliding_layers == 12
    every4 = _show("newarch", **{"block_count": 8, "attention.sliding_window_pattern": 4})
    assert meta_from_ollama_show(every4).sliding_layers == 6
    gemma = _show("gemma3", **{"block_count": 18, "attention.sliding_window_pattern": 6})
    assert meta_from_ollama_show(gemma).sliding_layers is None  # the estimator's fixed pattern


def test_older_ollama_without_model_info_keeps_what_details_say() -> None:
    m = meta_from_ollama_show(
        {"details": {"family": "qwen2", "parameter_size": "7.6B", "quantization_level": "Q4_0"}}
    )
    assert (m.arch, m.params, m.quant, m.n_layers) == ("qwen2", 7_600_000_000, "Q4_0", None)


def test_llamacpp_meta_and_props() -> None:
    m = meta_from_llamacpp(
        {"n_params": 268098176, "size": 252716032, "n_ctx_train": 32768, "n_embd": 640},
        {"model_ftype": "Q4_K - Medium"},
    )
    assert (m.params, m.file_mb, m.ctx_train, m.embedding_length, m.quant) == (
        268098176,
        241.0,
        32768,
        640,
        "Q4_K_M",
    )
    assert meta_from_llamacpp(None, None).source == "llamacpp-meta"  # still loading: nothing


def test_lmstudio_v1_and_v0_entries() -> None:
    v1 = meta_from_lmstudio(
        {
            "architecture": "qwen3",
            "quantization": {"name": "Q4_K_M", "bits_per_weight": 4.8},
            "size_bytes": 2497280256,
            "params_string": "4B",
            "max_context_length": 40960,
        }
    )
    assert (v1.arch, v1.quant, v1.bits_per_weight, v1.params) == ("qwen3", "Q4_K_M", 4.8, 4 * 10**9)
    v0 = meta_from_lmstudio({"arch": "llama", "quantization": "Q4_K_M", "max_context_length": 8192})
    assert (v0.arch, v0.quant, v0.ctx_train) == ("llama", "Q4_K_M", 8192)


@pytest.mark.parametrize(
    "field, value, shown",
    [
        ("n_layers", float("nan"), "nan"),
        ("n_layers", -1, "-1"),
        ("params", 10**30, "a 100-bit number"),
        ("arch", "x" * 10_000, "'xxxxxxxx"),
        ("bits_per_weight", 1e308, "1e+308"),
        ("kv_heads_per_layer", [1, "two"], "[1, 'two']"),
        ("ctx_train", "long", "'long'"),
        ("sliding_window", True, "True"),  # not a window: pydantic's lax int would read 1
    ],
)
def test_a_refused_figure_is_dropped_and_named_the_rest_kept(field, value, shown) -> None:
    problems: list[str] = []
    m = build_meta("test", {field: value, "n_heads": 8}, problems)
    assert m.n_heads == 8 and getattr(m, field) is None
    (line,) = problems
    assert line.startswith(f"test: {field} {shown}") and line.endswith(" dropped")


def test_not_an_object_is_a_problem_not_an_exception() -> None:
    problems: list[str] = []
    for junk in ("text", 3, None, [1, 2]):
        assert meta_from_ollama_show(junk, problems).n_layers is None
    assert problems == ["ollama-show: not an object"] * 4
    assert meta_from_lmstudio("junk").source == "lmstudio"
