"""`fleet fit` as a real subprocess against a fake fleet (tests/fit_fleet.py): the three
verdicts with their reasons and exit codes, an offline node, and bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from fit_fleet import MODEL, fit_fleet
from test_cli_read import dead_port, fleet, write_config

GIB = 1024**3


@pytest.fixture(scope="module")
def nodes():  # type: ignore[no-untyped-def]
    with fit_fleet() as nodes:
        yield nodes


@pytest.fixture
def config(nodes, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    urls = {name: n.url for name, n in nodes.items()}
    urls["dead"] = f"http://127.0.0.1:{dead_port()}"
    return write_config(tmp_path / "p.toml", urls)


def fit_json(config: Path, *args: str) -> tuple[int, dict]:
    r = fleet("fit", MODEL, "--ctx", "8192", "--parallel", "1", "--json", *args, config=config)
    assert r.stderr == "", r.stderr
    return r.returncode, json.loads(r.stdout)


def test_three_verdicts_and_an_offline_node(config: Path) -> None:
    code, doc = fit_json(config)
    assert code == 0  # it fits somewhere as things are
    # the first node to answer that has the model gives its metadata
    assert doc["meta_from"] in ("node roomy", "node tight", "node full")
    assert doc["meta"]["n_kv_heads"] == 8
    assert doc["request"] == {
        "model": MODEL,
        "ctx": 8192,
        "parallel": 1,
        "kv_type": None,
        "engine": None,
    }
    by = {n["node"]: n for n in doc["nodes"]}
    assert [n["node"] for n in doc["nodes"]] == ["roomy", "tight", "full", "dead"]
    assert [n["verdict"] for n in doc["nodes"]] == ["fits", "evict", "no", "unknown"]

    roomy = by["roomy"]
    assert roomy["free_bytes"] == 40 * GIB
    assert 5 * GIB < roomy["need_bytes"] < 8 * GIB
    spare = roomy["free_bytes"] - roomy["need_bytes"] - roomy["margin_bytes"]
    assert roomy["spare_bytes"] == spare > 30 * GIB  # the safety margin is kept free too
    assert roomy["evict"] == []
    assert roomy["state"] == "ONLINE" and roomy["observed_at"] > 0 and roomy["age_s"] < 30

    tight = by["tight"]  # the idle model goes; the busy one is never proposed
    assert tight["evict"] == ["qwen-idle:14b"]
    assert tight["spare_bytes"] < 0  # as things are
    assert any("after unloading idle qwen-idle:14b" in r for r in tight["reasons"])
    assert not any("coder-busy" in x for x in tight["evict"])

    full = by["full"]  # only a busy model there: nothing to evict
    assert full["evict"] == [] and full["spare_bytes"] < 0
    assert "short" in full["reasons"][0]
    assert "1 busy model never evicted" in full["reasons"]

    dead = by["dead"]
    assert dead["state"] == "OFFLINE" and dead["observed_at"] is None
    assert dead["reasons"] == ["node OFFLINE: connection refused"]


@pytest.mark.parametrize(
    ("only", "code", "verdict"),
    [("tight", 3, "evict"), ("full", 1, "no"), ("dead", 1, "unknown")],
)
def test_exit_code_follows_the_best_verdict(
    config: Path, only: str, code: int, verdict: str
) -> None:
    got, doc = fit_json(config, "--node", only)
    assert (got, [n["verdict"] for n in doc["nodes"]]) == (code, [verdict])
    assert doc["meta_from"] == (None if only == "dead" else f"node {only}")


def test_metadata_from_a_config_json_is_used_as_given(config: Path) -> None:
    hf = config.parent / "config.json"
    hf.write_text(json.dumps(HF_LLAMA))
    _, doc = fit_json(config, "--node", "roomy", "--hf-config", str(hf))
    assert doc["meta_from"] == f"--hf-config {hf}"
    assert doc["meta"]["source"] == "hf-config" and doc["meta"]["n_layers"] == 32


HF_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 131072,
    "vocab_size": 128256,
    "torch_dtype": "bfloat16",
}


def test_table_one_line_per_node_sorted(config: Path) -> None:
    r = fleet("fit", MODEL, "--ctx", "8192", config=config)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["roomy", "tight", "full", "dead"]
    assert [row.split("│")[2].strip() for row in rows] == ["fits", "evict", "no", "?"]
    assert "qwen-idle:14b" in rows[1] and "connection refused" in rows[3]
    assert "metadata from node " in r.stdout


def test_unknown_model_is_unknown_everywhere(config: Path) -> None:
    r = fleet("fit", "nowhere:1b", "--json", config=config)
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["meta"] is None and {n["verdict"] for n in doc["nodes"]} == {"unknown"}


def _bad(config: Path, *args: str) -> str:
    r = fleet("fit", MODEL, *args, config=config)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_bad_input_is_one_line_exit_2(config: Path, tmp_path: Path) -> None:
    assert "no node named 'nope'" in _bad(config, "--node", "nope")
    assert "known: roomy, tight, full, dead" in _bad(config, "--node", "nope")
    assert "--ctx: '0': must be from 1" in _bad(config, "--ctx", "0")
    assert "--ctx: 'lots': not a whole number" in _bad(config, "--ctx", "lots")
    assert "--parallel" in _bad(config, "--parallel", "-1")
    assert "--kv-type" in _bad(config, "--kv-type", "q3")
    missing = tmp_path / "no.gguf"
    assert _bad(config, "--gguf", str(missing)).startswith(f"fleet: --gguf {missing}: ")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"NOTGGUF" + struct.pack("<Q", 3) * 8)
    assert _bad(config, "--gguf", str(junk)).startswith(f"fleet: --gguf {junk}: ")
    bad_json = tmp_path / "config.json"
    bad_json.write_text("{not json")
    assert _bad(config, "--hf-config", str(bad_json)).startswith(f"fleet: --hf-config {bad_json}")


def test_against_real_simulated_agents(agent_factory, tmp_path: Path) -> None:
    """The agent's own schema-2 snapshots (budget, ledger, metadata of the models on disk):
    every node judged, none unknown for a model of the simulator's pool."""
    sims = agent_factory(
        "--simulate", "--nodes", "3", "--name", "fit", "--interval", "0.3", nodes=3
    )
    cfg = write_config(tmp_path / "p.toml", dict(sims.urls))
    r = fleet("fit", "gemma3:27b", "--ctx", "8192", "--json", config=cfg)
    assert r.returncode in (0, 1, 3), r.stderr
    doc = json.loads(r.stdout)
    assert doc["meta_from"].startswith("node fit-") and doc["meta"]["n_layers"]
    assert sorted(n["node"] for n in doc["nodes"]) == sorted(sims.urls)
    for n in doc["nodes"]:
        assert n["verdict"] in ("fits", "evict", "no"), n
        assert n["state"] == "ONLINE" and n["reasons"] and n["age_s"] < 30
    assert r.returncode == {"fits": 0, "evict": 3, "no": 1}[doc["nodes"][0]["verdict"]]
