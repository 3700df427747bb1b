"""`fleet load` as a person runs it: real processes, three simulated agents and a dead port.

The simulated nodes list models on disk with their metadata, so their agents judge a load of
those; a model no node knows is one they cannot judge: refused (409) unless forced.
"""

from __future__ import annotations

import json

import httpx

from test_cli_bulk import fleet_cli, projects  # noqa: F401  (the fixture)


def dry_run(projects, *nodes: str, model: str) -> dict:  # noqa: F811
    args = [a for n in nodes for a in ("--on", n)]
    r = fleet_cli(projects, "load", model, *args, "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def audit_len(url: str) -> int:
    return len(httpx.get(f"{url}/api/v1/audit", params={"limit": 1000}).json()["entries"])


def test_dry_run_shows_each_targets_fit_and_sends_nothing(fleet, projects) -> None:  # noqa: F811
    doc = dry_run(projects, "act-000", "act-001,dead", model="llama3.1:8b")
    assert doc["action"] == "load" and doc["dry_run"] is True and doc["engine"] == "ollama"
    assert doc["targets"] == ["act-000", "act-001", "dead"]
    assert set(doc["fits"]) == {"act-000", "act-001", "dead"}
    assert doc["fits"]["dead"]["verdict"] == "unknown" and doc["fits"]["dead"]["reasons"]
    for name in ("act-000", "act-001"):
        fit = doc["fits"][name]
        assert fit["verdict"] in ("fits", "unknown") and fit["node"] == name
    assert all(audit_len(u) == 0 for u in fleet.urls.values())
    r = fleet_cli(projects, "load", "llama3.1:8b", "--on", "act-000", "--dry-run")
    assert r.returncode == 0 and "would load ollama llama3.1:8b on 1 node" in r.stdout
    assert "verdict" in r.stdout  # the fit table


def test_bad_input_exits_2_naming_the_flag(fleet, projects) -> None:  # noqa: F811
    cases = {
        ("m", "--on", "act-000", "--ctx", "-3"): "ctx -3 is not between 1 and 16777216 (--ctx)",
        ("m", "--on", "act-000", "--parallel", "0"): "(--parallel)",
        ("m", "--on", "act-000", "--keep-alive", "soon"): "(--keep-alive)",
        ("-x", "--on", "act-000"): "",  # argparse: an option, not a model
        ("m", "--on", "nosuch"): "no node named nosuch",
        ("m",): "name the nodes to load on with --on NODE",
        ("m", "--on", "act-000", "--kv-type", "q3"): "invalid choice",
        ("m", "--on", "act-000", "--ctx", "9" * 5000): "invalid int value",
        ("../m", "--on", "act-000"): "is not a valid model name (--model)",
    }
    for args, needle in cases.items():
        r = fleet_cli(projects, "load", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert all(audit_len(u) == 0 for u in fleet.urls.values())


def test_load_without_yes_refuses_when_not_interactive(fleet, projects) -> None:  # noqa: F811
    r = fleet_cli(projects, "load", "llama3.1:8b", "--on", "act-000")
    assert r.returncode == 2 and "without confirmation" in r.stderr
    assert audit_len(fleet.urls["act-000"]) == 0


def test_load_where_it_fits_refuse_what_the_agent_cannot_judge_force_it(fleet, projects) -> None:  # noqa: F811
    snap = httpx.get(f"{fleet.urls['act-000']}/api/v1/snapshot").json()
    held = {m["name"] for e in snap["engines"] if e["name"] == "ollama" for m in e["models"]}
    on_disk = {m["name"] for e in snap["engines"] if e["name"] == "ollama" for m in e["available"]}
    absent = sorted(on_disk - held)[0]
    assert dry_run(projects, "act-000", model=absent)["fits"]["act-000"]["verdict"] == "fits"
    r = fleet_cli(
        projects, "load", absent, "--on", "act-000", "--on", "dead", "--yes", "--ctx", "8192"
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"loaded {absent} in ollama (simulated)" in r.stdout
    assert "act-000: ok" in r.stderr and "dead: FAILED: connection refused" in r.stderr
    assert dry_run(projects, "act-000", model=absent)["fits"]["act-000"]["reasons"] == [
        "already loaded"
    ]  # the next snapshot holds it
    # fleet load waited for that snapshot: the load is in the calibration history
    assert "calibration history" not in r.stderr, r.stderr
    r = fleet_cli(projects, "fit", absent, "--ctx", "8192", "--node", "act-000", "--explain")
    assert r.returncode == 0, r.stderr
    assert f"calibration for ollama {absent} " in r.stdout and " ctx 8192 x default: 1 " in r.stdout
    assert "no correction: it takes 3 observed loads, 1 so far" in r.stdout
    # a model no node knows: the agent cannot judge it and refuses, with the reason
    r = fleet_cli(projects, "load", "nosuch:1b", "--on", "act-000", "--yes", "--json")
    assert r.returncode == 1, r.stderr
    env = json.loads(r.stdout)
    assert env["failed"]["act-000"].startswith("HTTP 409: cannot tell whether nosuch:1b fits")
    r = fleet_cli(projects, "load", "nosuch:1b", "--on", "act-000", "--yes", "--force")
    assert r.returncode == 1 and "not on this node's disk" in r.stdout, r.stdout
    entries = httpx.get(f"{fleet.urls['act-000']}/api/v1/audit").json()["entries"]
    assert [e["status"] for e in entries] == ["started", "ok", "denied", "started", "failed"]
    assert entries[0]["args"]["ctx"] == 8192 and entries[0]["args"]["fit"]["verdict"] == "fits"
    assert entries[0]["args"]["force"] is False and entries[3]["args"]["force"] is True
    assert entries[2]["args"]["fit"]["verdict"] == "unknown"
