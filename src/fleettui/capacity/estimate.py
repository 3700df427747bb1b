"""How many bytes a model takes once loaded: weights + KV cache + compute buffers + footprint.

Pure: metadata and settings in, an `Estimate` out (each term with its formula in words and
its numbers), so the operator's `fleet fit`, the agent's load check and the MCP tool give one
answer. With too little input it names what is missing instead of guessing; docs/capacity.md
has every formula and where each input comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from fleettui.wire import EngineSettings, ModelMeta

MIB = 1 << 20
GIB = 1 << 30

Platform = Literal["cuda", "metal", "cpu"]
Label = Literal["exact", "heuristic"]
# Where a term's figure is held: `budget` counts in the total (the GPU memory, the unified
# memory or the RAM of a CPU-only node); `host` is system RAM beside a GPU budget (not counted).
Where = Literal["budget", "host"]

# --- the constants, in one place, with why -------------------------------------------------
# KV cache bytes per element by cache type (ggml block sizes: q8_0 holds 32 values in 34
# bytes, q4_0 in 18, q4_1 in 20, q5_0 in 22, q5_1 in 24, iq4_nl in 18).
KV_TYPES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
    "iq4_nl": 18 / 32,
    # vLLM's cache_dtype values: fp8 variants are one byte; auto is the model's 16-bit dtype
    "fp8": 1.0,
    "fp8_e4m3": 1.0,
    "fp8_e5m2": 1.0,
    "auto": 2.0,
}
# GGUF tensor types: (weights per block, bytes per block), gguf-py GGML_QUANT_SIZES. Only a
# fallback when the file size is unknown: a Q4_K_M file mixes types per tensor.
GGUF_BLOCKS: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q8_0": (32, 34),
    "IQ4_NL": (32, 18),
    "Q2_K": (256, 84),
    "Q3_K": (256, 110),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
}
# llama.cpp pads its KV cache (per sequence) to a multiple of this many cells.
KV_PAD = 256
# llama.cpp's default micro-batch (-ub 512): the compute graph is reserved for this many tokens.
N_UBATCH = 512
# mlx_lm processes a prompt in steps of this many tokens (its prefill_step_size).
MLX_PREFILL_STEP = 2048
# Activations per token of a micro-batch, in multiples of n_embd f32 values, beside the logits.
# With flash attention (llama.cpp's default where the backend has it) no ctx x ctx matrix is
# materialised; the graph allocator reuses buffers, so a few rows of n_embd remain.
ACTIVATION_ROWS = 4
# Engines that run without flash attention unless told (OLLAMA_FLASH_ATTENTION): their graph
# holds a micro-batch's attention scores, ubatch x ctx x heads.
NO_FLASH_BY_DEFAULT = frozenset({"ollama"})
# Without vocab/embedding sizes the compute buffer cannot be worked out: this stands in
# (the label becomes heuristic and a note says so).
COMPUTE_FALLBACK = 256 * MIB
# Per-platform footprint. cuda: the CUDA context, 250 MiB of VRAM and 150 MiB of host RAM
# (gguf-parser-go). cpu/metal: the process itself (binary, libraries, threads) plus the
# tokenizer's tables, which grow with the vocabulary; fitted to llama-server's measured VmRSS
# for gemma-3-270m (docs/capacity.md, "Measured").
CUDA_VRAM_FOOTPRINT = 250 * MIB
CUDA_HOST_FOOTPRINT = 150 * MIB
PROCESS_FOOTPRINT = 48 * MIB
TOKENIZER_BYTES_PER_TOKEN = 96
# llama.cpp: --fit keeps this much free on each GPU; --cache-ram's default host prompt cache.
LLAMACPP_FIT_MARGIN = 1024 * MIB
LLAMACPP_CACHE_RAM = 8192 * MIB
# vLLM's default share of a GPU when /metrics does not say.
VLLM_DEFAULT_UTILIZATION = 0.9
# Ollama's default context by total VRAM (docs/context-length): below 24 GiB, below 48 GiB, else.
OLLAMA_CTX_TIERS: tuple[tuple[int, int], ...] = ((24 * GIB, 4096), (48 * GIB, 32768))
OLLAMA_CTX_TOP = 262144
# Architectures whose sliding-window layers follow a fixed pattern in llama.cpp: every Nth
# layer is full attention, the others slide (gemma2 alternates, gemma3 is 5 sliding : 1 full).
# Keyed by GGUF architecture and by the Hugging Face model_type of the same models.
SLIDING_PATTERNS: dict[str, int] = {
    "gemma2": 2,
    "gemma3": 6,
    "gemma3_text": 6,
    "gemma3n": 5,
    "gemma3n_text": 5,
    "cohere2": 4,
}
# Engines that run ggml (llama.cpp's runtime): same buffers, same sliding-window cache rule.
GGML_ENGINES = frozenset({"llamacpp", "ollama", "lmstudio"})


@dataclass(frozen=True)
class Term:
    """One part of the total: its bytes, how they were worked out (in words, with the
    numbers) and where its input came from (reported / measured / estimated)."""

    name: str
    bytes: int
    formula: str
    source: str
    where: Where = "budget"


CALIBRATION_TERM = "measured correction"
# A correction outside this range says the observations measure something else (a snapshot
# taken mid-load, another process counted in): it is not applied.
CALIBRATION_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class Calibration:
    """What this operator measured for one (engine, model, quantisation, ctx, parallel):
    `ratio` = the median of observed / estimated over `n` loads (the aggregator's store)."""

    ratio: float
    n: int


@dataclass(frozen=True)
class Estimate:
    terms: tuple[Term, ...]
    total_bytes: int | None
    label: Label
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    # Why the engine would refuse this load whatever is free (vLLM: the model outgrows its claim)
    problems: tuple[str, ...] = ()
    calibration: Calibration | None = None  # the measured correction applied to the total

    @property
    def base_bytes(self) -> int | None:
        """The total before any measured correction: what a new observation is compared with."""
        if self.total_bytes is None:
            return None
        return self.total_bytes - sum(t.bytes for t in self.terms if t.name == CALIBRATION_TERM)

    @property
    def host_bytes(self) -> int:
        """Host RAM beside a GPU budget (the CUDA context's share, llama.cpp's prompt cache)."""
        return sum(t.bytes for t in self.terms if t.where == "host")


def mib(n: float) -> str:
    """'1,024 MiB': the one way this module writes a size."""
    return f"{n / MIB:,.0f} MiB" if n >= 10 * MIB or n == 0 else f"{n / MIB:,.1f} MiB"


def quant_bits(quant: str | None) -> float | None:
    """Bits per weight of a GGUF type or file type name: 'Q4_K_M' -> Q4_K's 4.5; None if unknown.

    A file type (Q4_K_M, Q5_K_S) names its main tensor type; the others differ, so this is a
    fallback for when the file size is unknown, never a replacement for it."""
    if not quant:
        return None
    q = quant.strip().upper().replace("-", "_").replace(" ", "")
    for name in sorted(GGUF_BLOCKS, key=len, reverse=True):
        if q == name or q.startswith(name + "_"):
            per, size = GGUF_BLOCKS[name]
            return size * 8 / per
    return None


def ollama_default_ctx(vram_bytes: int) -> int:
    """Ollama's context when neither the request nor OLLAMA_CONTEXT_LENGTH sets it."""
    for limit, ctx in OLLAMA_CTX_TIERS:
        if vram_bytes < limit:
            return ctx
    return OLLAMA_CTX_TOP


def _weights(meta: ModelMeta, missing: list[str], notes: list[str]) -> Term | None:
    if meta.file_mb:
        src = "measured" if meta.source in ("gguf", "hf-config") else "reported"
        size = round(meta.file_mb * MIB)
        return Term("weights", size, f"the weights file: {mib(size)}", src)
    bits, how = meta.bits_per_weight, "bits per weight"
    if not bits and (bits := quant_bits(meta.quant)):
        how = f"bits per weight of {meta.quant}'s main tensor type"
    if meta.params and bits:
        size = math.ceil(meta.params * bits / 8)
        notes.append("weights from parameters x bits per weight: the file size would be exact")
        return Term(
            "weights",
            size,
            f"{meta.params:,} parameters x {bits:g} {how} / 8 = {mib(size)}",
            "estimated",
        )
    missing.append("weights: the file size (or parameter count and bits per weight)")
    return None


def _kv_layers(meta: ModelMeta, notes: list[str]) -> tuple[int, int, int] | None:
    """(full-attention layers, sliding-window layers, recurrent layers), or None."""
    n = meta.n_layers or (len(meta.kv_heads_per_layer) if meta.kv_heads_per_layer else None)
    if not n:
        return None
    recurrent = min(meta.recurrent_layers or 0, n)
    sliding = 0
    if meta.sliding_window:
        if meta.sliding_layers is not None:
            sliding = meta.sliding_layers
        elif (every := SLIDING_PATTERNS.get(meta.arch or "")) is not None:
            sliding = n - n // every
        else:
            notes.append(
                f"a sliding window of {meta.sliding_window} but not which layers use it: "
                "counted every layer as full attention (an upper bound)"
            )
    sliding = min(sliding, n - recurrent)
    return n - sliding - recurrent, sliding, recurrent


def _pad(cells: int) -> int:
    return -(-cells // KV_PAD) * KV_PAD


def _kv(
    meta: ModelMeta,
    engine: str,
    ctx: int,
    parallel: int,
    unified: bool,
    kv_type: str,
    missing: list[str],
    notes: list[str],
    inexact: list[str],
) -> Term | None:
    per_elem = KV_TYPES.get(kv_type.lower())
    if per_elem is None:
        missing.append(f"KV cache type {kv_type!r}: one of {', '.join(KV_TYPES)}")
    layers = _kv_layers(meta, notes)
    if layers is None:
        missing.append("KV cache: the number of layers")
    if per_elem is None or layers is None:
        return None
    full, sliding, recurrent = layers
    n = full + sliding + recurrent
    if recurrent:
        notes.append(
            f"{recurrent} recurrent layers hold a fixed state this estimate does not count "
            "(unsupported)"
        )
        inexact.append("recurrent state")
    if meta.kv_lora_rank:  # MLA: one compressed latent plus the RoPE part of K, per token
        width = meta.kv_lora_rank + (meta.rope_dim or 0)
        how = f"(kv_lora_rank {meta.kv_lora_rank} + rope {meta.rope_dim or 0}) per layer (MLA)"
        if meta.rope_dim is None:
            notes.append("MLA without the RoPE dimension: counted as 0")
            inexact.append("rope_dim")
        heads: list[int] | None = None
    else:
        k, v = meta.key_length, meta.value_length
        if k is None or v is None:
            if not (meta.embedding_length and meta.n_heads):
                missing.append("KV cache: key/value length (or embedding length and head count)")
                return None
            head = meta.embedding_length // meta.n_heads
            k, v = k or head, v or head
        if meta.kv_heads_per_layer:
            heads = list(meta.kv_heads_per_layer[:n]) + [meta.n_kv_heads or 0] * (
                n - len(meta.kv_heads_per_layer)
            )
            width = k + v
            how = f"(key {k} + value {v}) x the KV heads of each layer"
        elif meta.n_kv_heads or meta.n_heads:
            kvh = meta.n_kv_heads or meta.n_heads or 0
            if not meta.n_kv_heads:
                notes.append("no KV head count: took the attention head count (no GQA)")
            heads, width = None, (k + v) * kvh
            how = f"(key {k} + value {v}) x {kvh} KV heads"
        else:
            missing.append("KV cache: the KV head count")
            return None
    if heads is None:  # every layer alike: which ones slide or recur does not matter
        full_elems, slide_elems = width * full, width * sliding
    else:  # which layers slide: the pattern's non-full ones; with only a count, the first ones
        every = SLIDING_PATTERNS.get(meta.arch or "")
        if sliding and every and meta.sliding_layers is None:
            slides = [(i + 1) % every != 0 for i in range(n)]
        else:
            slides = [i < sliding for i in range(n)]
        full_elems = width * sum(h for h, s in zip(heads, slides, strict=True) if not s)
        slide_elems = width * sum(h for h, s in zip(heads, slides, strict=True) if s)
    ggml = engine in GGML_ENGINES
    cells = _pad(ctx) if ggml else ctx  # per sequence; llama.cpp pads its cache to 256 cells
    full_cells = cells if unified else cells * parallel
    window_cells = 0
    if sliding and meta.sliding_window:
        if ggml:  # llama.cpp's SWA cache: the window (per sequence) + one micro-batch, per stream
            per_stream = meta.sliding_window * (parallel if unified else 1) + N_UBATCH
            window_cells = min(cells, _pad(per_stream)) * (1 if unified else parallel)
        else:
            window_cells = min(ctx, meta.sliding_window) * parallel
    full_bytes = full_cells * full_elems * per_elem
    slide_bytes = window_cells * slide_elems * per_elem
    total = math.ceil(full_bytes + slide_bytes)
    per_token = full_elems * per_elem
    shape = f"{ctx:,} ctx x {parallel} parallel"
    if unified:
        shape = f"{ctx:,} ctx shared by {parallel} slots (unified KV)"
    if full_cells != (ctx if unified else ctx * parallel):
        shape += f" = {full_cells:,} cells (padded to 256)"
    formula = (
        f"{shape} x {full} full-attention layers x {how} x {per_elem:g} bytes ({kv_type}) "
        f"= {mib(full_bytes)} ({per_token / 1024:g} KiB per token)"
    )
    if sliding:
        formula += (
            f"; {sliding} sliding-window layers hold {window_cells:,} cells in all "
            f"(window {meta.sliding_window}) = {mib(slide_bytes)}"
        )
    return Term("kv cache", total, formula, "estimated")


def _compute(
    meta: ModelMeta,
    engine: str,
    platform: Platform,
    ctx: int,
    parallel: int,
    flash: bool,
    notes: list[str],
    inexact: list[str],
) -> Term:
    vocab, embd = meta.vocab_size, meta.embedding_length
    if not (vocab and embd):
        notes.append(
            f"no vocab/embedding sizes: the compute buffer taken as {mib(COMPUTE_FALLBACK)}"
        )
        inexact.append("compute buffer")
        return Term(
            "compute buffer", COMPUTE_FALLBACK, "a stand-in: vocab/embedding unknown", "estimated"
        )
    if engine == "mlx":
        act = 4 * MLX_PREFILL_STEP * ACTIVATION_ROWS * embd
        logits = 4 * vocab * parallel
        return Term(
            "compute buffer",
            act + logits,
            f"4 bytes x {MLX_PREFILL_STEP} prefill tokens x {ACTIVATION_ROWS} x {embd} embd "
            f"+ 4 bytes x {vocab:,} vocab x {parallel} parallel = {mib(act + logits)}",
            "estimated",
        )
    ub = N_UBATCH
    if platform == "cpu":
        # Host pages are committed when first written: generation writes one row of logits per
        # sequence, not the n_ubatch rows the graph reserves.
        act, logits = 4 * ub * ACTIVATION_ROWS * embd, 4 * vocab * parallel
        return Term(
            "compute buffer",
            act + logits,
            f"4 bytes x {ub} ubatch x {ACTIVATION_ROWS} x {embd} embd + 4 bytes x {vocab:,} "
            f"vocab x {parallel} parallel (the logits written) = {mib(act + logits)}",
            "estimated",
        )
    # The graph reserved for one micro-batch: the larger of the attention step and the output
    # step (Ollama's own GraphSize for llama-like models). Flash attention keeps no scores.
    out = 4 * ub * (embd + vocab)
    if flash:
        attn = 4 * ub * (1 + ACTIVATION_ROWS * embd)
        how = f"4 bytes x {ub} ubatch x (1 + {ACTIVATION_ROWS} x {embd} embd) (flash attention)"
    else:
        heads = meta.n_heads or 0
        if not heads:
            notes.append("no head count: the attention scores left out of the compute buffer")
            inexact.append("heads")
        # Ollama holds one cache of ctx x parallel; llama.cpp attends one sequence's cells
        cells = ctx * parallel if engine == "ollama" else ctx
        attn = 4 * ub * (1 + ACTIVATION_ROWS * embd + cells * (1 + heads))
        how = (
            f"4 bytes x {ub} ubatch x (1 + {ACTIVATION_ROWS} x {embd} embd + {cells:,} ctx x "
            f"(1 + {heads} heads))"
        )
    size = max(attn, out)
    return Term(
        "compute buffer",
        size,
        f"the larger of {how} = {mib(attn)} and 4 bytes x {ub} ubatch x ({embd} embd + "
        f"{vocab:,} vocab) = {mib(out)}",
        "estimated",
    )


def _footprint(meta: ModelMeta | None, platform: Platform) -> list[Term]:
    if platform == "cuda":
        return [
            Term(
                "platform footprint",
                CUDA_VRAM_FOOTPRINT,
                f"CUDA context on the GPU: {mib(CUDA_VRAM_FOOTPRINT)}",
                "estimated",
            ),
            Term(
                "host footprint",
                CUDA_HOST_FOOTPRINT,
                f"CUDA context in host RAM: {mib(CUDA_HOST_FOOTPRINT)}",
                "estimated",
                "host",
            ),
        ]
    vocab = (meta.vocab_size or 0) if meta else 0
    tok = vocab * TOKENIZER_BYTES_PER_TOKEN
    return [
        Term(
            "process footprint",
            PROCESS_FOOTPRINT + tok,
            f"the process {mib(PROCESS_FOOTPRINT)} + {TOKENIZER_BYTES_PER_TOKEN} bytes x "
            f"{vocab:,} vocab (tokenizer) = {mib(PROCESS_FOOTPRINT + tok)}",
            "estimated",
        )
    ]


def _vllm(
    settings: EngineSettings | None,
    gpu_total_bytes: int | None,
    missing: list[str],
    notes: list[str],
    inexact: list[str],
) -> Term | None:
    util = settings.gpu_memory_utilization if settings else None
    src = "reported"
    if util is None:
        util, src = VLLM_DEFAULT_UTILIZATION, "estimated"
        notes.append(f"gpu_memory_utilization not reported: took vLLM's default {util:g}")
        inexact.append("gpu_memory_utilization")
    if not gpu_total_bytes:
        missing.append("vLLM: the GPU's total memory")
        return None
    claim = math.floor(util * gpu_total_bytes)
    return Term(
        "vLLM claim",
        claim,
        f"gpu_memory_utilization {util:g} x {mib(gpu_total_bytes)} GPU = {mib(claim)}, "
        "whatever the model (weights, KV cache and buffers live inside it)",
        src,
    )


def estimate(
    meta: ModelMeta | None,
    *,
    engine: str,
    ctx: int | None,
    parallel: int | None,
    kv_type: str | None = None,
    platform: Platform = "cuda",
    settings: EngineSettings | None = None,
    gpu_total_bytes: int | None = None,
    kv_unified: bool = False,
    flash_attention: bool | None = None,
) -> Estimate:
    """The bytes `meta` takes loaded by `engine` at `ctx` x `parallel` on `platform`.

    ctx/parallel None: the engine's default (its settings, Ollama's VRAM tiers, the model's
    training context for llama.cpp and vLLM). kv_type None: the engine's setting, else f16.
    kv_unified: llama-server's one KV pool shared by
    all slots (its default when -np is not given): ctx cells in all, not ctx x parallel.
    flash_attention None: the engine's setting (Ollama's OLLAMA_FLASH_ATTENTION), else its
    default (on for llama.cpp and LM Studio, off for Ollama).
    Never raises on missing or odd input: `missing` says what lacks, `total_bytes` is None."""
    missing: list[str] = []
    notes: list[str] = []
    inexact: list[str] = []
    terms: list[Term] = []
    kv_type = kv_type or (settings.kv_type if settings else None) or "f16"
    if engine == "vllm":
        if (term := _vllm(settings, gpu_total_bytes, missing, notes, inexact)) is None:
            return _done(terms, missing, notes, inexact)
        terms.append(term)
        inside = _vllm_inside(meta, ctx, kv_type, term.bytes)
        return _done(terms, missing, notes + inside[:1], inexact, tuple(inside[1:]))
    if meta is None:
        missing.append("model metadata (no node has the model, no --gguf file)")
        return _done(terms, missing, notes, inexact)
    if ctx is None:
        ctx = _default_ctx(meta, engine, settings, gpu_total_bytes, notes)
    if parallel is None:
        parallel = (settings.num_parallel if settings else None) or 1
        if not (settings and settings.num_parallel):
            notes.append("parallel slots not given: took 1")
    if (term := _weights(meta, missing, notes)) is not None:
        terms.append(term)
        if term.source == "estimated":
            inexact.append("weights")
    if ctx is None:
        missing.append("context length (give --ctx: the engine's default is not known)")
    elif ctx <= 0 or parallel <= 0:
        missing.append("a positive context length and parallel slot count")
    elif (
        term := _kv(meta, engine, ctx, parallel, kv_unified, kv_type, missing, notes, inexact)
    ) is not None:
        terms.append(term)
    if engine == "mlx":
        notes.append("MLX grows its KV cache as tokens arrive: this is the cache at a full context")
    if flash_attention is None and settings is not None:
        flash_attention = settings.flash_attention
    if flash_attention is None:
        flash_attention = engine not in NO_FLASH_BY_DEFAULT
    terms.append(
        _compute(
            meta, engine, platform, ctx or 0, max(parallel, 1), flash_attention, notes, inexact
        )
    )
    terms.extend(_footprint(meta, platform))
    if engine == "llamacpp":
        terms.append(
            Term(
                "host prompt cache (up to)",
                LLAMACPP_CACHE_RAM,
                f"--cache-ram default {mib(LLAMACPP_CACHE_RAM)} of host RAM, filled as prompts "
                "are cached (not at load)",
                "estimated",
                "host",
            )
        )
    return _done(terms, missing, notes, inexact)


def _default_ctx(
    meta: ModelMeta,
    engine: str,
    settings: EngineSettings | None,
    gpu_total_bytes: int | None,
    notes: list[str],
) -> int | None:
    if settings and settings.default_ctx:
        return settings.default_ctx
    if engine == "ollama" and gpu_total_bytes is not None:
        ctx = ollama_default_ctx(gpu_total_bytes)
        notes.append(f"Ollama's default context for {mib(gpu_total_bytes)} of VRAM: {ctx:,}")
        return ctx
    if engine in ("llamacpp", "vllm") and meta.ctx_train:
        notes.append(
            f"the engine's default context: the model's training context {meta.ctx_train:,}"
        )
        return meta.ctx_train
    return None


def _vllm_inside(meta: ModelMeta | None, ctx: int | None, kv_type: str, claim: int) -> list[str]:
    """[what the model needs inside vLLM's claim, and a problem if it outgrows it] or []: vLLM
    must hold the weights and one sequence of max_model_len tokens in its claim, or refuses."""
    if meta is None or (ctx := ctx or meta.ctx_train) is None:
        return []
    scratch: list[str] = []
    weights = _weights(meta, scratch, scratch)
    kv = _kv(meta, "vllm", ctx, 1, False, kv_type, scratch, scratch, scratch)
    if weights is None or kv is None:
        return []
    need = weights.bytes + kv.bytes
    said = [
        f"inside the claim: weights {mib(weights.bytes)} + one {ctx:,}-token sequence's "
        f"KV {mib(kv.bytes)} = {mib(need)} of {mib(claim)}"
    ]
    if need > claim:
        said.append(
            f"vLLM would refuse to start: the weights and one {ctx:,}-token sequence "
            f"need {mib(need)}, more than its claim of {mib(claim)}"
        )
    return said


def _done(
    terms: list[Term],
    missing: list[str],
    notes: list[str],
    inexact: list[str],
    problems: tuple[str, ...] = (),
) -> Estimate:
    total = None if missing else sum(t.bytes for t in terms if t.where == "budget")
    label: Label = "exact" if not missing and not inexact else "heuristic"
    return Estimate(tuple(terms), total, label, tuple(missing), tuple(notes), problems)


def calibrated(est: Estimate, calibration: Calibration | None) -> Estimate:
    """`est` with the measured correction as a term (the total scaled by the ratio), and a
    note saying so; unchanged without one, without a total, or with an implausible ratio."""
    if calibration is None or est.total_bytes is None:
        return est
    low, high = CALIBRATION_RANGE
    ratio = calibration.ratio
    if not (math.isfinite(ratio) and low <= ratio <= high):
        note = (
            f"a measured correction x{ratio:.3g} over {calibration.n} loads is outside "
            f"{low:g}-{high:g}: not applied"
        )
        return replace(est, notes=(*est.notes, note))
    delta = round(est.total_bytes * (ratio - 1))
    term = Term(
        CALIBRATION_TERM,
        delta,
        f"{mib(est.total_bytes)} x {ratio:.4f} (median observed / estimated over "
        f"{calibration.n} loads) - {mib(est.total_bytes)} = {'+' if delta >= 0 else '-'}"
        f"{mib(abs(delta))}",
        "measured",
    )
    note = f"calibrated: x{ratio:.4f} from {calibration.n} observed loads of this model here"
    return replace(
        est,
        terms=(*est.terms, term),
        total_bytes=est.total_bytes + delta,
        notes=(*est.notes, note),
        calibration=calibration,
    )
