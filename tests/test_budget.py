"""The node's memory budget (agent/collect/budget.py): each kind's rule on fixed figures."""

from __future__ import annotations

import pytest

from fleettui.agent.collect.budget import (
    default_reserve_mb,
    default_wired_limit_mb,
    node_budget,
    unified_budget,
)
from fleettui.wire import Budget, Engine, Gpu, Memory, Model

GIB = 1024.0
RAM = Memory(total_mb=64 * GIB, used_mb=16 * GIB)


def engine(*models: Model, status: str = "up", pids: tuple[int, ...] = ()) -> Engine:
    return Engine(
        name="ollama",
        url="http://127.0.0.1:11434",
        status=status,
        models=list(models),
        pids=list(pids),
    )


def gpu(i: int, total: float | None, used: float | None, attributed: float | None = None) -> Gpu:
    return Gpu(
        index=i, name="H100", memory_total_mb=total, memory_used_mb=used, attributed_mb=attributed
    )


def test_gpu_budget_uses_attribution_where_every_gpu_has_it() -> None:
    gpus = [gpu(0, 80_000, 30_000, 25_000), gpu(1, 80_000, 10_000, 8_000)]
    b = node_budget(RAM, gpus, [engine(Model(name="m", vram_mb=99_999), pids=(10,))])
    assert b == Budget(
        kind="gpu",
        total_mb=160_000,
        used_mb=40_000,
        engines_mb=33_000,  # NVML's per-process figures, not the engine's 99,999
        other_mb=7_000,
        free_mb=120_000,
        limit="GPU memory",
        inputs={"gpu_total_mb": 160_000, "gpu_used_mb": 40_000, "attributed_mb": 33_000},
        ram_free_mb=48 * GIB,
    )


def test_an_engine_without_a_known_pid_counts_its_own_figure_beside_the_attributed() -> None:
    seen = engine(Model(name="a", vram_mb=99_999), pids=(10,))
    unseen = Engine(
        name="vllm",
        url="http://127.0.0.1:8000",
        status="up",
        models=[Model(name="b", vram_mb=6_000)],
    )
    b = node_budget(RAM, [gpu(0, 80_000, 30_000, 20_000)], [seen, unseen])
    assert b is not None and (b.engines_mb, b.other_mb) == (26_000, 4_000)
    assert b.inputs["attributed_mb"] == 20_000
    assert b.inputs["unattributed_engines_vram_mb"] == 6_000


def test_gpu_budget_falls_back_to_resident_vram_without_attribution() -> None:
    gpus = [gpu(0, 24_000, 12_000, 9_000), gpu(1, 24_000, 2_000, None)]  # GPU 1 unattributed
    models = [Model(name="a", vram_mb=5_000, size_mb=6_000), Model(name="b", vram_mb=4_000)]
    down = engine(Model(name="gone", vram_mb=7_000), status="down")
    b = node_budget(RAM, gpus, [engine(*models), down])
    assert b is not None and b.kind == "gpu"
    assert (b.engines_mb, b.other_mb, b.free_mb) == (9_000, 5_000, 34_000)
    assert b.inputs["resident_vram_mb"] == 9_000 and "attributed_mb" not in b.inputs


def test_used_over_total_gives_no_free_memory_and_engines_within_used() -> None:
    """A driver reporting more used than total, engines claiming more than used: parts clamp."""
    b = node_budget(RAM, [gpu(0, 8_000, 9_500)], [engine(Model(name="m", vram_mb=20_000))])
    assert b is not None
    assert (b.used_mb, b.free_mb, b.engines_mb, b.other_mb) == (9_500, 0, 9_500, 0)


def test_a_gpu_without_a_used_figure_counts_as_full_and_one_without_total_is_left_out() -> None:
    b = node_budget(RAM, [gpu(0, 8_000, None), gpu(1, 8_000, 1_000), gpu(2, None, 500)], [])
    assert b is not None and (b.total_mb, b.used_mb, b.free_mb) == (16_000, 9_000, 7_000)
    assert b.inputs["gpu_total_mb"] == 16_000  # GPU 2 reports no total: left out


def test_gpus_with_no_memory_figures_give_no_budget_rather_than_a_ram_one() -> None:
    assert node_budget(RAM, [gpu(0, None, None)], []) is None


def test_ram_budget_on_a_cpu_only_node() -> None:
    models = [Model(name="a", size_mb=3_000, vram_mb=0), Model(name="b", vram_mb=1_000)]
    b = node_budget(RAM, [], [engine(*models)])
    assert b is not None
    assert (b.kind, b.limit, b.total_mb, b.used_mb) == ("ram", "RAM", 64 * GIB, 16 * GIB)
    assert (b.engines_mb, b.other_mb, b.free_mb) == (4_000, 16 * GIB - 4_000, 48 * GIB)
    assert b.ram_free_mb == 48 * GIB


def test_no_memory_figures_no_budget() -> None:
    assert node_budget(Memory(), [], []) is None


@pytest.mark.parametrize(
    ("ram_gib", "share"), [(8, 2 / 3), (16, 2 / 3), (36, 2 / 3), (64, 3 / 4), (192, 3 / 4)]
)
def test_default_wired_limit_heuristic(ram_gib: int, share: float) -> None:
    assert default_wired_limit_mb(ram_gib * GIB) == pytest.approx(ram_gib * GIB * share)


def test_unified_default_limit_binds_on_a_small_mac() -> None:
    cap = unified_budget(16 * GIB, wired_limit_mb=0)
    assert cap.limit == "default wired limit (heuristic)"
    assert cap.total_mb == pytest.approx(16 * GIB * 2 / 3, abs=0.1)  # 10,922.7 < 16 GiB - 4 GiB
    assert cap.inputs == {"ram_mb": 16 * GIB, "wired_limit_mb": 0, "reserve_mb": 4 * GIB}


def test_unified_raised_wired_limit_is_capped_by_the_os_reserve() -> None:
    cap = unified_budget(192 * GIB, wired_limit_mb=188 * GIB)
    assert cap.limit == "RAM - OS reserve"
    assert cap.total_mb == pytest.approx(192 * GIB - default_reserve_mb(192 * GIB), abs=0.1)
    assert cap.inputs["reserve_mb"] == pytest.approx(19.2 * GIB, abs=0.1)


def test_unified_measured_metal_working_set_wins_over_the_sysctl_and_the_heuristic() -> None:
    cap = unified_budget(
        64 * GIB, wired_limit_mb=40 * GIB, metal_working_set_mb=50 * GIB, reserve_mb=2 * GIB
    )
    assert (cap.limit, cap.total_mb) == ("Metal working set", 50 * GIB)
    assert cap.inputs == {
        "ram_mb": 64 * GIB,
        "wired_limit_mb": 40 * GIB,
        "reserve_mb": 2 * GIB,
        "metal_working_set_mb": 50 * GIB,
    }
    assert unified_budget(64 * GIB, wired_limit_mb=40 * GIB).limit == "iogpu.wired_limit_mb"


def test_unified_budget_free_is_bounded_by_the_cap_and_by_available_ram() -> None:
    cap = unified_budget(64 * GIB, wired_limit_mb=0)  # 48 GiB
    models = [Model(name="a", size_mb=10 * GIB)]
    roomy = node_budget(
        Memory(total_mb=64 * GIB, used_mb=14 * GIB), [], [engine(*models)], unified=cap
    )
    assert roomy is not None and roomy.kind == "unified"
    assert (roomy.total_mb, roomy.engines_mb, roomy.free_mb) == (48 * GIB, 10 * GIB, 38 * GIB)
    assert roomy.other_mb == 0 and roomy.inputs["resident_mb"] == 10 * GIB
    crowded = node_budget(
        Memory(total_mb=64 * GIB, used_mb=54 * GIB), [], [engine(*models)], unified=cap
    )
    assert crowded is not None and crowded.free_mb == 10 * GIB  # RAM available binds
    assert crowded.used_mb == 38 * GIB and crowded.other_mb == 28 * GIB
    assert crowded.ram_free_mb == 10 * GIB


def test_a_tiny_mac_with_a_reserve_over_ram_has_a_zero_budget_not_a_negative_one() -> None:
    cap = unified_budget(2 * GIB, reserve_mb=8 * GIB)
    assert cap.total_mb == 0 and cap.limit == "RAM - OS reserve"
    b = node_budget(Memory(total_mb=2 * GIB, used_mb=GIB), [], [], unified=cap)
    assert b is not None and (b.total_mb, b.free_mb, b.used_mb) == (0, 0, 0)


def test_simulated_nodes_carry_the_budget_of_their_kind() -> None:
    from fleettui.agent.collect.energy import EnergyLedger, EnergyMeter
    from fleettui.agent.simulate import SimulatedNode

    kinds = {}
    for i in range(40):
        node = SimulatedNode(f"sim-{i}", clock=lambda: 1_760_000_000.0)
        snap = node.snapshot(EnergyLedger(None, 0.3, "EUR"), EnergyMeter(sample_s=2.0, started=0))
        assert snap.budget is not None
        kinds[snap.budget.kind] = node.mac
        assert snap.budget.free_mb <= snap.budget.total_mb
    assert kinds == {"gpu": False, "unified": True}


def test_the_sample_fleet_mac_has_a_unified_budget_the_others_gpu() -> None:
    from fleettui.testing.sample import sample_views

    kinds = {
        v.name: v.snapshot.budget.kind for v in sample_views() if v.snapshot and v.snapshot.budget
    }
    assert kinds.pop("mac-studio-1") == "unified"
    assert set(kinds.values()) == {"gpu"} and len(kinds) == 8


def test_the_simulated_ledger_is_schema_2_complete_and_deterministic() -> None:
    from fleettui.agent.collect.energy import EnergyLedger, EnergyMeter
    from fleettui.agent.simulate import SimulatedNode, model_meta

    def snap(name: str):
        node = SimulatedNode(name, clock=lambda: 1_760_000_000.0)
        return node.snapshot(EnergyLedger(None, 0.3, "EUR"), EnergyMeter(sample_s=2.0, started=0))

    nvidia = next(s for s in map(snap, (f"sim-{i}" for i in range(40))) if s.gpus[0].processes)
    assert snap(nvidia.node.hostname) == nvidia  # the same name, the same node
    for g in nvidia.gpus:
        assert g.attributed_mb is not None and g.other_mb is not None and g.other_mb >= 600
        assert g.attributed_mb + g.other_mb == pytest.approx(g.memory_used_mb)
        assert all(p.engine is not None for p in g.processes if p.pid != 4321)
    for eng in nvidia.engines:
        assert eng.pids and eng.settings is not None
        for m in eng.models:
            assert m.meta is not None and m.sources and m.gpus == [g.index for g in nvidia.gpus]
    b = nvidia.budget
    assert b is not None and b.engines_mb == pytest.approx(
        sum(g.attributed_mb for g in nvidia.gpus)
    )
    llama = model_meta("ollama", "llama3.1:8b", "Q4_K_M")
    assert llama is not None and (llama.n_layers, llama.n_kv_heads, llama.key_length) == (
        32,
        8,
        128,
    )
    assert (llama.vocab_size, llama.ctx_train, llama.source) == (128256, 131072, "ollama-show")
