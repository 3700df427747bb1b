"""check_fit over fixed node snapshots: room, an idle model to evict, no room, no budget."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from fleettui.capacity.estimate import GIB, MIB
from fleettui.capacity.fit import FitRequest, check_fit, find_meta, smallest_set
from fleettui.wire import (
    Budget,
    DiskModel,
    Engine,
    EngineSettings,
    Gpu,
    Model,
    ModelMeta,
    NodeInfo,
    NodeSnapshot,
)

META = ModelMeta(
    source="ollama-show",
    arch="llama",
    n_layers=32,
    n_heads=32,
    n_kv_heads=8,
    key_length=128,
    value_length=128,
    embedding_length=4096,
    vocab_size=128256,
    file_mb=4693,
)
WANT = FitRequest("llama3.1:8b", ctx=8192, parallel=1)


def node(
    total_gib: float,
    used_gib: float,
    models: list[Model],
    *,
    engine: str = "ollama",
    engine_kind: str | None = None,
    kind: str = "gpu",
    ram_free_mb: float | None = None,
    settings: EngineSettings | None = None,
    available: list[DiskModel] | None = None,
) -> NodeSnapshot:
    total, used = total_gib * 1024, used_gib * 1024
    gpus = (
        [Gpu(index=0, name="GPU", memory_total_mb=total, memory_used_mb=used)]
        if kind == "gpu"
        else []
    )
    return NodeSnapshot(
        node=NodeInfo(hostname="n", os="Linux", arch="x86_64", agent_version="t", uptime_s=1),
        ts=1.0,
        gpus=gpus,
        engines=[
            Engine(
                name=engine,
                kind=engine_kind,
                url="http://127.0.0.1:11434",
                status="up",
                models=models,
                settings=settings,
                available=available or [],
            )
        ],
        budget=Budget(
            kind=kind,
            total_mb=total,
            used_mb=used,
            free_mb=total - used,
            limit="GPU memory" if kind == "gpu" else "RAM",
            ram_free_mb=ram_free_mb,
        ),
    )


def resident(name: str, gib: float, busy: bool | None = False) -> Model:
    return Model(name=name, size_mb=gib * 1024, vram_mb=gib * 1024, busy=busy)


def test_three_nodes_fits_evict_no() -> None:
    room = check_fit("room", node(24, 2, []), META, WANT)
    assert room.verdict == "fits" and room.evict == ()
    assert room.need_bytes is not None and room.need_bytes > 5 * GIB
    assert "to spare" in room.reasons[0] and "safety margin" in room.reasons[0]

    crowded = node(
        24,
        22,
        [
            resident("big:70b", 4, busy=True),
            resident("qwen:7b", 6),
            resident("phi:3b", 3),
            resident("tiny:1b", 1),
        ],
    )
    ev = check_fit("crowded", crowded, META, WANT)
    assert ev.verdict == "evict"
    assert ev.evict == ("qwen:7b",)  # one model frees enough; the busy one is never named
    assert "after unloading idle qwen:7b" in ev.reasons[0]
    assert not any("busy state" in n for n in ev.notes)  # every resident said idle or busy

    full = node(8, 7, [resident("busy:7b", 6, busy=True)])
    no = check_fit("full", full, META, WANT)
    assert no.verdict == "no" and no.evict == ()
    assert "short" in no.reasons[0]
    assert any("busy model never evicted" in r for r in no.reasons)


def test_evict_picks_the_fewest_then_the_least_memory() -> None:
    crowded = node(24, 22, [resident("a", 2), resident("b", 2), resident("c", 5), resident("d", 6)])
    ev = check_fit("n", crowded, META, WANT)
    assert ev.verdict == "evict" and ev.evict == ("c",)  # 5 GiB frees enough; 6 would waste
    assert smallest_set([], 1) is None and smallest_set([], 0) == []


def test_smallest_set_with_many_candidates_takes_the_largest_first() -> None:
    eng = node(24, 2, []).engines[0]
    other = eng.model_copy(update={"name": "lmstudio"})
    cands = [(f"m{i:02}", (i + 1) * MIB, eng) for i in range(20)]
    assert [c[0] for c in smallest_set(cands, 39 * MIB) or []] == ["m19", "m18"]
    assert smallest_set(cands, 10**12) is None
    mixed = [(f"o{i:02}", 100 * MIB, other) for i in range(17)] + [("mine", MIB, eng)]
    assert [c[0] for c in smallest_set(mixed, 50 * MIB, must=eng) or []] == ["mine", "o00"]


def test_unreported_busy_state_counts_as_idle_and_says_so() -> None:
    crowded = node(24, 22, [resident("quiet:7b", 6, busy=None)])
    fit = check_fit("n", crowded, META, WANT)
    assert fit.verdict == "evict" and fit.evict == ("quiet:7b",)
    assert "busy state not reported for quiet:7b: counted as idle" in fit.notes
    assert fit.to_json()["notes"] == list(fit.notes)


def test_already_loaded_fits() -> None:
    snap = node(8, 7.5, [resident("llama3.1:8b", 6)])
    fit = check_fit("n", snap, None, WANT)
    assert fit.verdict == "fits" and fit.reasons == ("already loaded",)
    tagged = node(8, 7.5, [resident("llama3.1:latest", 6)])
    assert check_fit("n", tagged, None, FitRequest("llama3.1")).reasons == ("already loaded",)


def test_no_budget_is_unknown_with_the_reason() -> None:
    snap = node(24, 2, []).model_copy(update={"budget": None})
    fit = check_fit("old", snap, META, WANT)
    assert fit.verdict == "unknown" and "schema 2" in fit.reasons[0]


def test_missing_metadata_is_unknown_naming_it() -> None:
    fit = check_fit("n", node(24, 2, []), None, WANT)
    assert fit.verdict == "unknown" and "metadata" in fit.reasons[0]
    bare = check_fit("n", node(24, 2, []), ModelMeta(source="x"), WANT)
    assert bare.verdict == "unknown" and any("weights" in r for r in bare.reasons)


def test_meta_comes_from_the_node_or_any_node() -> None:
    disk = [DiskModel(name="llama3.1:8b", size_mb=4693, meta=META)]
    snap = node(24, 2, [], available=disk)
    assert check_fit("n", snap, None, WANT).verdict == "fits"
    assert find_meta({"a": node(24, 2, []), "b": snap}, "llama3.1:8b") == META
    assert find_meta({"a": snap}, "other") is None


def test_cpu_only_node_budget_is_ram() -> None:
    snap = node(16, 4, [], engine="llamacpp", kind="ram")
    fit = check_fit("cpu", snap, META, WANT)
    assert fit.verdict == "fits"
    terms = {t.name for t in fit.estimate.terms} if fit.estimate else set()
    assert "process footprint" in terms and "platform footprint" not in terms
    tight = check_fit("cpu", node(8, 4, [], engine="llamacpp", kind="ram"), META, WANT)
    assert tight.verdict == "no"


def test_apple_unified_budget_with_mlx() -> None:
    snap = node(36, 20, [], engine="mlx", kind="unified")
    fit = check_fit("mac", snap, META, WANT)
    assert fit.verdict == "fits" and fit.engine == "mlx"
    assert fit.estimate is not None and "cuda" not in str(fit.estimate.terms).lower()
    full = node(36, 32, [resident("qwen:7b", 5)], engine="mlx", kind="unified")
    no = check_fit("mac", full, META, WANT)
    assert no.verdict == "no"  # mlx_lm cannot unload a model by its API: nothing to evict


def test_find_meta_takes_the_fullest_metadata() -> None:
    thin = DiskModel(name="llama3.1:8b", meta=ModelMeta(source="ollama-tags", file_mb=4693))
    a = node(24, 2, [], available=[thin])
    b = node(24, 2, [], available=[DiskModel(name="llama3.1:latest", meta=META)])
    # b has llama3.1:latest, another model: only a's thin metadata is llama3.1:8b's
    assert find_meta({"a": a, "b": b}, "llama3.1:8b") == thin.meta
    c = node(24, 2, [resident("llama3.1:8b", 5)], available=[])
    c.engines[0].models[0].meta = META
    assert find_meta({"a": a, "c": c}, "llama3.1:8b") == META


def test_partial_offload_when_ram_covers_the_rest() -> None:
    snap = node(8, 4, [], engine="llamacpp", ram_free_mb=64 * 1024)
    fit = check_fit("n", snap, META, WANT)
    assert fit.verdict == "fits" and fit.offload_bytes > 0
    assert "partial CPU offload" in fit.reasons[0]
    # a full GPU is not a partial offload: the whole model would run from host RAM
    full = check_fit("n", node(24, 24, [], engine="llamacpp", ram_free_mb=64 * 1024), META, WANT)
    assert full.verdict == "no" and full.offload_bytes == 0
    vllm = check_fit("n", node(8, 4, [], engine="vllm", ram_free_mb=64 * 1024), META, WANT)
    assert vllm.verdict != "fits" or vllm.offload_bytes == 0


def test_llamacpp_keeps_its_fit_margin_per_gpu() -> None:
    fit = check_fit("n", node(24, 2, [], engine="llamacpp"), META, WANT)
    assert fit.margin_bytes == 1024 * MIB and "--fit" in fit.reasons[0]


def test_rules_follow_the_engines_kind_not_its_name() -> None:
    """`[engines.llamaone] kind = "llamacpp"`: llama.cpp's defaults (context from the model's
    training length, the --fit margin); an agent older than `kind` names engines by kind."""
    meta = META.model_copy(update={"ctx_train": 8192})
    want = FitRequest("llama3.1:8b")
    named = check_fit("n", node(24, 2, [], engine="llamaone", engine_kind="llamacpp"), meta, want)
    assert named.verdict == "fits" and named.engine == "llamaone"
    assert named.margin_bytes == 1024 * MIB and "--fit" in named.reasons[0]
    by_kind = check_fit("n", node(24, 2, [], engine="llamacpp"), meta, want)
    assert named.need_bytes == by_kind.need_bytes
    unknown = check_fit("n", node(24, 2, [], engine="llamaone"), meta, want)
    assert unknown.verdict == "unknown"
    assert unknown.reasons[0].startswith("cannot estimate: context length")


def test_ollama_max_loaded_models_forces_an_eviction() -> None:
    s = EngineSettings(max_loaded=2)
    snap = node(80, 10, [resident("a:1b", 1), resident("b:2b", 2)], settings=s)
    fit = check_fit("n", snap, META, WANT)
    assert fit.verdict == "evict" and fit.evict == ("a:1b",)
    assert "OLLAMA_MAX_LOADED_MODELS" in fit.reasons[1]
    busy = node(80, 10, [resident("a:1b", 1, True), resident("b:2b", 2, True)], settings=s)
    assert check_fit("n", busy, META, WANT).verdict == "no"


def test_vllm_node_needs_its_whole_claim() -> None:
    s = EngineSettings(gpu_memory_utilization=0.9)
    ok = check_fit("v", node(80, 0.5, [], engine="vllm", settings=s), None, WANT)
    assert ok.verdict == "fits" and ok.need_bytes == round(0.9 * 80 * GIB)
    busy = check_fit("v", node(80, 20, [], engine="vllm", settings=s), None, WANT)
    assert busy.verdict == "no"
    huge = META.model_copy(update={"file_mb": 140_000.0})
    refused = check_fit("v", node(80, 0.5, [], engine="vllm", settings=s), huge, WANT)
    assert refused.verdict == "no" and "would refuse to start" in refused.reasons[0]


def test_engine_not_on_the_node_is_no_and_a_down_one_unknown() -> None:
    fit = check_fit("n", node(24, 2, []), META, FitRequest("m", ctx=1, engine="vllm"))
    assert fit.verdict == "no" and fit.reasons == ("no vllm engine on this node",)
    snap = node(24, 2, [])
    snap.engines[0].status, snap.engines[0].error = "down", "connection refused"
    down = check_fit("n", snap, META, FitRequest("m", ctx=1, engine="ollama"))
    assert down.verdict == "unknown"
    assert down.reasons == ("the node's ollama engine is down (ollama: connection refused)",)
    assert check_fit("n", snap, META, WANT).verdict == "unknown"
    bare = snap.model_copy(update={"engines": []})
    assert check_fit("n", bare, META, WANT).reasons == ("no engine on this node",)


def test_to_json_is_a_stable_document() -> None:
    fit = check_fit("room", node(24, 2, []), META, WANT)
    doc = fit.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert list(doc) == [
        "schema",
        "node",
        "model",
        "verdict",
        "engine",
        "need_bytes",
        "free_bytes",
        "margin_bytes",
        "offload_bytes",
        "evict",
        "reasons",
        "notes",
        "label",
        "estimate",
    ]
    assert doc["verdict"] == "fits" and doc["model"] == "llama3.1:8b"
    assert {t["name"] for t in doc["estimate"]["terms"]} >= {"weights", "kv cache"}


resident_st = st.builds(
    Model,
    name=st.sampled_from(["a", "b", "c", "d", "e", "llama3.1:8b", "f:latest"]),
    size_mb=st.one_of(st.none(), st.floats(0, 100_000)),
    vram_mb=st.one_of(st.none(), st.floats(0, 100_000)),
    busy=st.one_of(st.none(), st.booleans()),
)
engine_st = st.builds(
    Engine,
    name=st.sampled_from(["ollama", "llamacpp", "vllm", "lmstudio", "mlx"]),
    url=st.just("http://127.0.0.1:1"),
    status=st.sampled_from(["up", "down"]),
    models=st.lists(resident_st, max_size=8),
    settings=st.one_of(
        st.none(),
        st.builds(
            EngineSettings,
            num_parallel=st.one_of(st.none(), st.integers(0, 8)),
            max_loaded=st.one_of(st.none(), st.integers(0, 4)),
            gpu_memory_utilization=st.one_of(st.none(), st.floats(0, 1)),
            router=st.booleans(),
        ),
    ),
)


@st.composite
def snapshot_st(draw: st.DrawFn) -> NodeSnapshot:
    kind = draw(st.sampled_from(["gpu", "unified", "ram"]))
    total = draw(st.floats(0, 200_000))
    used = draw(st.floats(0, 200_000))
    budget = Budget(
        kind=kind,
        total_mb=total,
        used_mb=used,
        free_mb=max(total - used, 0),
        limit="x",
        ram_free_mb=draw(st.one_of(st.none(), st.floats(0, 500_000))),
    )
    gpus = [Gpu(index=i, name="g", memory_total_mb=total) for i in range(draw(st.integers(0, 3)))]
    return NodeSnapshot(
        node=NodeInfo(hostname="n", os="Linux", arch="x", agent_version="t", uptime_s=1),
        ts=1.0,
        gpus=gpus if kind == "gpu" else [],
        engines=draw(st.lists(engine_st, max_size=3)),
        budget=draw(st.one_of(st.none(), st.just(budget))),
    )


@settings(max_examples=150, deadline=None)
@given(
    snapshot_st(),
    st.one_of(st.none(), st.just(META)),
    st.builds(
        FitRequest,
        model=st.sampled_from(["llama3.1:8b", "new:7b", "f"]),
        ctx=st.one_of(st.none(), st.integers(1, 200_000)),
        parallel=st.one_of(st.none(), st.integers(1, 16)),
        kv_type=st.sampled_from([None, "f16", "q4_0", "bogus"]),
        engine=st.sampled_from([None, "ollama", "vllm", "llamacpp"]),
    ),
)
def test_check_fit_never_raises_and_keeps_its_promises(snap, meta, req) -> None:
    fit = check_fit("n", snap, meta, req)
    assert fit.verdict in ("fits", "evict", "no", "unknown") and fit.reasons
    json.dumps(fit.to_json())
    busy = {m.name for e in snap.engines for m in e.models if m.busy}
    idle = {m.name for e in snap.engines for m in e.models if not m.busy}
    assert not set(fit.evict) & (busy - idle)  # a busy model is never proposed
    assert (fit.verdict == "evict") == bool(fit.evict)
    if fit.verdict == "fits" and fit.reasons != ("already loaded",):
        assert fit.need_bytes is not None and fit.free_bytes is not None
        assert fit.margin_bytes is not None
        if not fit.offload_bytes and "OLLAMA" not in " ".join(fit.reasons):
            assert fit.need_bytes + fit.margin_bytes <= fit.free_bytes
