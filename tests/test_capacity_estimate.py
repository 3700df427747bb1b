"""The estimator against published figures, and its properties over arbitrary input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleettui.capacity.estimate import (
    GGUF_BLOCKS,
    GIB,
    KV_TYPES,
    MIB,
    N_UBATCH,
    Estimate,
    estimate,
    ollama_default_ctx,
    quant_bits,
)
from fleettui.wire import EngineSettings, ModelMeta

# Llama-3.1-8B: 32 layers, 32 heads, 8 KV heads, head dim 128 (GGUF metadata of the release)
LLAMA_8B = ModelMeta(
    source="gguf",
    arch="llama",
    n_layers=32,
    n_heads=32,
    n_kv_heads=8,
    key_length=128,
    value_length=128,
    embedding_length=4096,
    vocab_size=128256,
    ctx_train=131072,
    file_mb=4692.8,
)
# gemma-3-270m: 18 layers (15 sliding with a 512 window, 3 full), 4 heads, 1 KV head of 256
GEMMA_270M = ModelMeta(
    source="gguf",
    arch="gemma3",
    n_layers=18,
    n_heads=4,
    n_kv_heads=1,
    key_length=256,
    value_length=256,
    embedding_length=640,
    vocab_size=262144,
    ctx_train=32768,
    sliding_window=512,
    file_mb=241.4,
)


def term(est: Estimate, name: str) -> int:
    return next(t.bytes for t in est.terms if t.name == name)


def test_llama_31_8b_f16_kv_is_128_kib_per_token_and_1_gib_at_8k() -> None:
    est = estimate(LLAMA_8B, engine="llamacpp", ctx=8192, parallel=1)
    assert term(est, "kv cache") == 1 * GIB
    assert "128 KiB per token" in next(t.formula for t in est.terms if t.name == "kv cache")
    big = estimate(LLAMA_8B, engine="llamacpp", ctx=131072, parallel=1)
    assert term(big, "kv cache") == 16 * GIB
    assert est.label == "exact" and not est.missing


def test_kv_scales_with_parallel_and_kv_type() -> None:
    two = estimate(LLAMA_8B, engine="llamacpp", ctx=8192, parallel=2)
    assert term(two, "kv cache") == 2 * GIB
    q8 = estimate(LLAMA_8B, engine="llamacpp", ctx=8192, parallel=1, kv_type="q8_0")
    assert term(q8, "kv cache") == GIB * 34 // 64  # 34 bytes per 32 values instead of 64
    q4 = estimate(LLAMA_8B, engine="llamacpp", ctx=8192, parallel=1, kv_type="q4_0")
    assert term(q4, "kv cache") == GIB * 18 // 64


def test_q4_k_is_144_bytes_per_256_weights() -> None:
    assert GGUF_BLOCKS["Q4_K"] == (256, 144)
    assert quant_bits("Q4_K") == 4.5
    assert quant_bits("Q4_K_M") == 4.5  # the file type's main tensor type
    assert quant_bits("q8_0") == 34 * 8 / 32
    assert quant_bits("Q6_K") == 210 * 8 / 256
    assert quant_bits("mystery") is None and quant_bits(None) is None
    meta = LLAMA_8B.model_copy(update={"file_mb": None, "params": 8_030_261_248, "quant": "Q4_K_M"})
    est = estimate(meta, engine="llamacpp", ctx=8192, parallel=1)
    assert term(est, "weights") == 8_030_261_248 * 144 // 256
    assert est.label == "heuristic"  # parameters x bits is not the file


def test_vllm_claims_its_share_of_the_gpu_whatever_the_model() -> None:
    s = EngineSettings(gpu_memory_utilization=0.9)
    for meta in (None, LLAMA_8B, GEMMA_270M):
        est = estimate(
            meta, engine="vllm", ctx=None, parallel=None, settings=s, gpu_total_bytes=80 * 10**9
        )
        assert est.total_bytes == 72 * 10**9
        assert est.label == "exact"
    unknown = estimate(LLAMA_8B, engine="vllm", ctx=None, parallel=None, gpu_total_bytes=80 * GIB)
    assert unknown.total_bytes == int(0.9 * 80 * GIB) and unknown.label == "heuristic"
    nogpu = estimate(LLAMA_8B, engine="vllm", ctx=None, parallel=None, settings=s)
    assert nogpu.total_bytes is None and "GPU's total memory" in nogpu.missing[0]


def test_vllm_refuses_a_model_that_outgrows_its_claim() -> None:
    s = EngineSettings(gpu_memory_utilization=0.9)
    fits = estimate(
        LLAMA_8B, engine="vllm", ctx=8192, parallel=None, settings=s, gpu_total_bytes=80 * 10**9
    )
    assert not fits.problems and any("inside the claim" in n for n in fits.notes)
    big = LLAMA_8B.model_copy(update={"file_mb": 140_000.0})  # a 70B model at bf16
    est = estimate(
        big, engine="vllm", ctx=8192, parallel=None, settings=s, gpu_total_bytes=80 * 10**9
    )
    assert est.total_bytes == 72 * 10**9
    assert est.problems and "would refuse to start" in est.problems[0]


def test_kv_type_defaults_to_the_engines_setting() -> None:
    s = EngineSettings(kv_type="q8_0")
    est = estimate(LLAMA_8B, engine="ollama", ctx=8192, parallel=1, settings=s)
    assert term(est, "kv cache") == GIB * 34 // 64
    own = estimate(LLAMA_8B, engine="ollama", ctx=8192, parallel=1, settings=s, kv_type="f16")
    assert term(own, "kv cache") == GIB
    fp8 = estimate(LLAMA_8B, engine="mlx", ctx=8192, parallel=1, kv_type="fp8")
    assert term(fp8, "kv cache") == GIB // 2


def test_gemma3_sliding_layers_hold_the_window_not_the_context() -> None:
    est = estimate(GEMMA_270M, engine="llamacpp", ctx=8192, parallel=1, platform="cpu")
    full = 8192 * 3 * (256 + 256) * 1 * 2  # 3 full-attention layers
    window = (512 + N_UBATCH) * 15 * (256 + 256) * 1 * 2  # 15 sliding: window + a ubatch
    assert term(est, "kv cache") == full + window
    # vLLM / MLX keep the window alone
    mlx = estimate(GEMMA_270M, engine="mlx", ctx=8192, parallel=1, platform="metal")
    assert term(mlx, "kv cache") == full + 512 * 15 * 512 * 2
    # a context below the window: every layer holds the context
    small = estimate(GEMMA_270M, engine="llamacpp", ctx=256, parallel=2, platform="cpu")
    assert term(small, "kv cache") == 256 * 2 * 18 * 512 * 2
    # the Hugging Face name of the same architecture follows the same pattern
    hf = GEMMA_270M.model_copy(update={"arch": "gemma3_text"})
    assert (
        term(estimate(hf, engine="llamacpp", ctx=8192, parallel=1, platform="cpu"), "kv cache")
        == full + window
    )
    # an unknown architecture with a window but no layer count: all full, said so
    odd = GEMMA_270M.model_copy(update={"arch": "newarch"})
    est2 = estimate(odd, engine="llamacpp", ctx=8192, parallel=1, platform="cpu")
    assert term(est2, "kv cache") == 8192 * 18 * 512 * 2
    assert any("upper bound" in n for n in est2.notes)


def test_per_layer_heads_follow_the_sliding_pattern() -> None:
    uniform = estimate(GEMMA_270M, engine="llamacpp", ctx=8192, parallel=1, platform="cpu")
    listed = GEMMA_270M.model_copy(update={"kv_heads_per_layer": [1] * 18})
    assert term(
        estimate(listed, engine="llamacpp", ctx=8192, parallel=1, platform="cpu"), "kv cache"
    ) == term(uniform, "kv cache")
    # two KV heads on the full-attention layers (5, 11, 17) only: their share doubles
    heads = [2 if (i + 1) % 6 == 0 else 1 for i in range(18)]
    mixed = GEMMA_270M.model_copy(update={"kv_heads_per_layer": heads})
    est = estimate(mixed, engine="llamacpp", ctx=8192, parallel=1, platform="cpu")
    assert term(est, "kv cache") == 8192 * 3 * 2 * 1024 + 1024 * 15 * 1024


def test_gemma3_270m_total_is_near_the_measured_rss() -> None:
    # llama-server -c 8192 -np 1, CPU: VmRSS 358 MiB after one completion (wave-2 notes)
    est = estimate(GEMMA_270M, engine="llamacpp", ctx=8192, parallel=1, platform="cpu")
    assert est.total_bytes is not None
    assert abs(est.total_bytes / MIB - 358) / 358 < 0.15


def test_mla_counts_the_compressed_latent_per_layer() -> None:
    # DeepSeek-V2-Lite: 27 layers, kv_lora_rank 512, rope 64
    meta = ModelMeta(
        source="gguf",
        arch="deepseek2",
        n_layers=27,
        n_heads=16,
        n_kv_heads=16,
        key_length=192,
        value_length=128,
        kv_lora_rank=512,
        rope_dim=64,
        embedding_length=2048,
        vocab_size=102400,
        file_mb=9000,
    )
    est = estimate(meta, engine="llamacpp", ctx=4096, parallel=1)
    assert term(est, "kv cache") == 4096 * 27 * (512 + 64) * 2
    assert "MLA" in next(t.formula for t in est.terms if t.name == "kv cache")


def test_gqa_heads_per_layer() -> None:
    heads = [8, 4] * 16  # alternating KV heads per layer (an OpenELM-like model)
    meta = LLAMA_8B.model_copy(update={"kv_heads_per_layer": heads, "n_kv_heads": None})
    est = estimate(meta, engine="mlx", ctx=1000, parallel=1)
    assert term(est, "kv cache") == 1000 * sum(h * 256 * 2 for h in heads)


def test_llamacpp_pads_each_sequence_to_256_cells_and_unified_shares_one_pool() -> None:
    est = estimate(LLAMA_8B, engine="llamacpp", ctx=1000, parallel=1)
    assert term(est, "kv cache") == 1024 * 128 * 1024
    assert "padded to 256" in next(t.formula for t in est.terms if t.name == "kv cache")
    # -c 8192 -np 2: two slots of 4096 (what /props reports as n_ctx)
    two = estimate(GEMMA_270M, engine="llamacpp", ctx=4096, parallel=2, platform="cpu")
    per_cell = 512 * 2  # (key 256 + value 256) x 1 KV head x 2 bytes
    assert term(two, "kv cache") == 2 * 4096 * 3 * per_cell + 2 * 1024 * 15 * per_cell
    # -np unset: 4 slots share one pool of -c cells; the SWA pool holds 4 windows + a ubatch
    uni = estimate(
        GEMMA_270M, engine="llamacpp", ctx=8192, parallel=4, platform="cpu", kv_unified=True
    )
    assert term(uni, "kv cache") == 8192 * 3 * per_cell + (4 * 512 + 512) * 15 * per_cell


def test_key_length_defaults_to_embedding_over_heads_and_kv_heads_to_heads() -> None:
    meta = LLAMA_8B.model_copy(
        update={"key_length": None, "value_length": None, "n_kv_heads": None}
    )
    est = estimate(meta, engine="llamacpp", ctx=1024, parallel=1)
    assert term(est, "kv cache") == 1024 * 32 * 256 * 32 * 2  # 4096 / 32 = 128 per head, MHA
    assert any("no GQA" in n for n in est.notes)


def test_recurrent_layers_are_declared_unsupported() -> None:
    meta = LLAMA_8B.model_copy(update={"recurrent_layers": 24})
    est = estimate(meta, engine="llamacpp", ctx=8192, parallel=1)
    assert term(est, "kv cache") == GIB // 4  # 8 of 32 layers attend
    assert est.label == "heuristic" and any("unsupported" in n for n in est.notes)


def test_missing_inputs_are_named_not_guessed() -> None:
    bare = ModelMeta(source="ollama-show", arch="llama")
    est = estimate(bare, engine="llamacpp", ctx=8192, parallel=1)
    assert est.total_bytes is None and est.label == "heuristic"
    assert any("weights" in m for m in est.missing)
    assert any("layers" in m for m in est.missing)
    none = estimate(None, engine="ollama", ctx=8192, parallel=1)
    assert none.total_bytes is None and "metadata" in none.missing[0]
    odd_kv = estimate(LLAMA_8B, engine="llamacpp", ctx=8192, parallel=1, kv_type="q3_x")
    assert odd_kv.total_bytes is None and "q3_x" in odd_kv.missing[0]
    noctx = estimate(
        LLAMA_8B.model_copy(update={"ctx_train": None}), engine="lmstudio", ctx=None, parallel=1
    )
    assert noctx.total_bytes is None and "context length" in noctx.missing[0]


def test_ollama_defaults_context_by_vram_and_slots_by_num_parallel() -> None:
    assert ollama_default_ctx(16 * GIB) == 4096
    assert ollama_default_ctx(24 * GIB) == 32768
    assert ollama_default_ctx(47 * GIB) == 32768
    assert ollama_default_ctx(48 * GIB) == 262144
    s = EngineSettings(num_parallel=4)
    est = estimate(
        LLAMA_8B, engine="ollama", ctx=None, parallel=None, settings=s, gpu_total_bytes=16 * GIB
    )
    assert term(est, "kv cache") == 4096 * 4 * 128 * 1024  # 4k ctx x 4 slots x 128 KiB
    set_ctx = estimate(
        LLAMA_8B,
        engine="ollama",
        ctx=None,
        parallel=None,
        settings=EngineSettings(default_ctx=8192),
        gpu_total_bytes=16 * GIB,
    )
    assert term(set_ctx, "kv cache") == GIB


def test_compute_buffer_is_the_larger_of_attention_and_output_steps() -> None:
    # llama.cpp on a GPU, flash attention on: the output step, 4 x 512 x (4096 + 128,256)
    fa = estimate(LLAMA_8B, engine="llamacpp", ctx=8192, parallel=1)
    assert term(fa, "compute buffer") == 4 * 512 * (4096 + 128256)  # 258.5 MiB
    # Ollama (no flash attention unless told): the scores of ctx x parallel cells x 32 heads
    ol = estimate(LLAMA_8B, engine="ollama", ctx=4096, parallel=2)
    assert term(ol, "compute buffer") == 4 * 512 * (1 + 4 * 4096 + 8192 * 33)
    told = estimate(LLAMA_8B, engine="ollama", ctx=4096, parallel=2, flash_attention=True)
    assert term(told, "compute buffer") == term(fa, "compute buffer")
    # OLLAMA_FLASH_ATTENTION as the agent read it (settings), both ways; the argument wins
    on = EngineSettings(flash_attention=True)
    set_on = estimate(LLAMA_8B, engine="ollama", ctx=4096, parallel=2, settings=on)
    assert term(set_on, "compute buffer") == 4 * 512 * (4096 + 128256)
    off = EngineSettings(flash_attention=False)
    set_off = estimate(LLAMA_8B, engine="ollama", ctx=4096, parallel=2, settings=off)
    assert term(set_off, "compute buffer") == 4 * 512 * (1 + 4 * 4096 + 8192 * 33)
    asked = estimate(
        LLAMA_8B, engine="ollama", ctx=4096, parallel=2, settings=off, flash_attention=True
    )
    assert term(asked, "compute buffer") == term(set_on, "compute buffer")
    no_fa = estimate(LLAMA_8B, engine="llamacpp", ctx=8192, parallel=2, flash_attention=False)
    assert term(no_fa, "compute buffer") == 4 * 512 * (1 + 4 * 4096 + 8192 * 33)  # per sequence


def test_llamacpp_prompt_cache_is_host_ram_outside_the_total() -> None:
    est = estimate(LLAMA_8B, engine="llamacpp", ctx=8192, parallel=1)
    counted = sum(t.bytes for t in est.terms if t.where == "budget")
    assert est.total_bytes == counted
    assert est.host_bytes == 8192 * MIB + 150 * MIB  # --cache-ram + the CUDA context's RAM


meta_st = st.builds(
    ModelMeta,
    source=st.just("x"),
    arch=st.sampled_from([None, "llama", "gemma3", "gemma2", "deepseek2", "odd"]),
    params=st.one_of(st.none(), st.integers(0, 10**12)),
    file_mb=st.one_of(st.none(), st.floats(0, 1e6)),
    quant=st.sampled_from([None, "Q4_K_M", "F16", "weird"]),
    bits_per_weight=st.one_of(st.none(), st.floats(0, 32)),
    n_layers=st.one_of(st.none(), st.integers(0, 200)),
    n_heads=st.one_of(st.none(), st.integers(0, 256)),
    n_kv_heads=st.one_of(st.none(), st.integers(0, 256)),
    kv_heads_per_layer=st.one_of(st.none(), st.lists(st.integers(0, 64), max_size=200)),
    key_length=st.one_of(st.none(), st.integers(0, 1024)),
    value_length=st.one_of(st.none(), st.integers(0, 1024)),
    embedding_length=st.one_of(st.none(), st.integers(0, 32768)),
    vocab_size=st.one_of(st.none(), st.integers(0, 10**6)),
    ctx_train=st.one_of(st.none(), st.integers(0, 10**6)),
    sliding_window=st.one_of(st.none(), st.integers(0, 10**5)),
    sliding_layers=st.one_of(st.none(), st.integers(0, 300)),
    kv_lora_rank=st.one_of(st.none(), st.integers(0, 2048)),
    rope_dim=st.one_of(st.none(), st.integers(0, 256)),
    recurrent_layers=st.one_of(st.none(), st.integers(0, 300)),
)
engine_st = st.sampled_from(["ollama", "llamacpp", "vllm", "lmstudio", "mlx", "other"])
platform_st = st.sampled_from(["cuda", "metal", "cpu"])


@settings(max_examples=150, deadline=None)
@given(
    meta_st,
    engine_st,
    platform_st,
    st.integers(1, 10**6),
    st.integers(1, 64),
    st.sampled_from([*KV_TYPES, "bogus"]),
)
def test_never_raises_never_negative(meta, engine, platform, ctx, parallel, kv) -> None:
    est = estimate(
        meta,
        engine=engine,
        ctx=ctx,
        parallel=parallel,
        kv_type=kv,
        platform=platform,
        gpu_total_bytes=80 * GIB,
    )
    assert all(t.bytes >= 0 for t in est.terms)
    if est.total_bytes is None:
        assert est.missing
    else:
        assert est.total_bytes >= 0 and not est.missing


@settings(max_examples=100, deadline=None)
@given(
    meta_st,
    engine_st,
    platform_st,
    st.integers(1, 10**5),
    st.integers(1, 10**5),
    st.integers(1, 32),
    st.integers(1, 32),
)
def test_monotonic_in_ctx_and_parallel(meta, engine, platform, c1, c2, p1, p2) -> None:
    (c1, c2), (p1, p2) = sorted((c1, c2)), sorted((p1, p2))
    small = estimate(
        meta, engine=engine, ctx=c1, parallel=p1, platform=platform, gpu_total_bytes=80 * GIB
    )
    big = estimate(
        meta, engine=engine, ctx=c2, parallel=p2, platform=platform, gpu_total_bytes=80 * GIB
    )
    assert (small.total_bytes is None) == (big.total_bytes is None)
    if small.total_bytes is not None:
        assert small.total_bytes <= big.total_bytes
