"""One action vocabulary: every place that offers or checks an action says what wire.py says."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fleettui import cli, config, wire
from fleettui.agent.config import EngineConfig
from fleettui.aggregator.kinds import KINDS
from fleettui.views.tui.screens.help import ACTION_HELP
from fleettui.views.tui.screens.main import ACTION_KEYS


def _sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _choices(parser: argparse.ArgumentParser, dest: str) -> tuple[str, ...]:
    action = next(a for a in parser._actions if a.dest == dest)
    assert action.choices is not None
    return tuple(action.choices)


def test_cli_choices_are_the_wire_actions_and_the_registered_kinds() -> None:
    p = cli.build_parser()
    assert _choices(_sub(p, "push"), "action") == wire.ACTIONS
    assert _choices(_sub(p, "bulk"), "action") == wire.ACTIONS
    assert _choices(_sub(p, "add"), "kind") == tuple(KINDS) == config.KIND_NAMES


def test_tui_keys_offer_every_action_once() -> None:
    assert sorted(ACTION_KEYS.values()) == sorted(wire.ACTIONS)
    assert [k for k, _ in ACTION_HELP] == list(ACTION_KEYS)
    assert dict(ACTION_HELP)["U"] == "unload model" and dict(ACTION_HELP)["P"] == "purge caches"
    assert dict(ACTION_HELP)["L"] == "load model"


def test_the_vocabulary_is_consistent() -> None:
    assert set(wire.ACTION_TIMEOUTS_S) == set(wire.ACTIONS)
    assert wire.NEEDS_MODEL <= wire.TAKES_MODEL <= wire.NEEDS_ENGINE < set(wire.ACTIONS)
    fields = wire.ActionRequest.model_fields
    assert set(fields) == {"action", "engine", "model", *wire.LOAD_PARAMS}


def test_agent_commands_take_exactly_the_wire_actions() -> None:
    every = {a: ["true"] for a in wire.ACTIONS}
    assert set(EngineConfig(commands=every).commands) == set(wire.ACTIONS)
    with pytest.raises(ValidationError):
        EngineConfig(commands={"reboot": ["true"]})
    with pytest.raises(ValidationError, match="an argv, no shell"):
        EngineConfig(commands={"stop": []})


@pytest.mark.parametrize(
    ("args", "field", "text"),
    [
        (("reboot", None, None), "action", "unknown action 'reboot'"),
        (("stop", "Ollama", None), "engine", "engine 'Ollama' is not a valid engine name"),
        (("unload", "ollama", "-rf"), "model", "model '-rf' is not a valid model name"),
        (("unload", "ollama", "a/../b"), "model", "model 'a/../b' is not a valid model name"),
        (("unload", "ollama", "m" * 201), "model", "is not a valid model name"),
        (("restart", None, None), "engine", "restart needs an engine"),
        (("purge", None, "m"), "model", "model only applies to unload and load, not purge"),
        (("load", "ollama", None), "model", "load needs a model"),
        (("load", None, "m"), "engine", "load needs an engine"),
    ],
)
def test_action_problem_names_the_field(args: tuple, field: str, text: str) -> None:
    problem = wire.action_problem(*args)
    assert problem is not None and problem.field == field and text in problem.text()
    with pytest.raises(ValidationError):
        wire.ActionRequest(action=args[0], engine=args[1], model=args[2])


def test_the_model_rule_is_the_agents() -> None:
    """One rule: the names Ollama and Hugging Face write, up to 200 characters."""
    for model in ("name@sha256:abc", "hf.co/org/repo:Q4_K_M", "a+b", "m" * 200):
        assert wire.action_problem("unload", "ollama", model) is None
        assert wire.ActionRequest(action="unload", engine="ollama", model=model).model == model


@given(
    st.sampled_from([*wire.ACTIONS, "reboot"]),
    st.none() | st.text(max_size=40),
    st.none() | st.text(max_size=40),
)
def test_a_request_exists_exactly_when_the_rule_allows_it(
    action: str, engine: str | None, model: str | None
) -> None:
    problem = wire.action_problem(action, engine, model)
    try:
        req = wire.ActionRequest(action=action, engine=engine, model=model)
    except ValidationError:
        assert problem is not None
    else:
        assert problem is None and req.describe() == wire.describe_action(action, engine, model)


GOOD_LOAD = {"ctx": 8192, "parallel": 2, "kv_type": "q8_0", "keep_alive": "30m", "force": True}


def test_load_takes_its_parameters_and_sends_only_what_is_set() -> None:
    req = wire.ActionRequest(action="load", engine="ollama", model="qwen3:8b", **GOOD_LOAD)
    assert req.body() == {"action": "load", "engine": "ollama", "model": "qwen3:8b", **GOOD_LOAD}
    assert req.describe() == (
        "load ollama qwen3:8b ctx=8192 parallel=2 kv_type=q8_0 keep_alive=30m force=true"
    )
    # an agent from before `load` reads every other request exactly as before
    assert wire.ActionRequest(action="restart", engine="ollama").body() == {
        "action": "restart",
        "engine": "ollama",
    }
    for keep in ("-1", "90s", "2h", "300", "1m"):
        assert wire.action_problem("load", "ollama", "m", keep_alive=keep) is None


@pytest.mark.parametrize(
    ("params", "field", "text"),
    [
        ({"ctx": -1}, "ctx", "ctx -1 is not between 1 and 16777216"),
        ({"ctx": 0}, "ctx", "is not between 1"),
        ({"ctx": 10**5000}, "ctx", "ctx of 16610 bits is not between 1"),
        ({"ctx": "4096"}, "ctx", "ctx must be an integer, not a str"),
        ({"ctx": 4096.0}, "ctx", "ctx must be an integer, not a float"),
        ({"ctx": True}, "ctx", "ctx must be an integer, not a bool"),
        ({"parallel": 0}, "parallel", "parallel 0 is not between 1 and 1024"),
        ({"parallel": 1025}, "parallel", "not between 1 and 1024"),
        ({"kv_type": "q3"}, "kv_type", "kv_type 'q3' is not a KV cache type"),
        ({"kv_type": 8}, "kv_type", "kv_type '<int>' is not a KV cache type"),
        ({"keep_alive": "forever"}, "keep_alive", "keep_alive 'forever' is not a duration"),
        ({"keep_alive": "5m; rm -rf /"}, "keep_alive", "is not a duration"),
        ({"keep_alive": 300}, "keep_alive", "keep_alive '<int>' is not a duration"),
        ({"keep_alive": "0"}, "keep_alive", "would unload the model at once"),
        ({"keep_alive": "00m"}, "keep_alive", "would unload the model at once"),
        ({"force": "true"}, "force", "force must be true or false, not a str"),
        ({"force": 1}, "force", "force must be true or false, not a int"),
    ],
)
def test_hostile_load_parameters_name_the_field(params: dict, field: str, text: str) -> None:
    problem = wire.action_problem("load", "ollama", "m", **params)
    assert problem is not None and problem.field == field and text in problem.text()
    with pytest.raises(ValidationError):
        wire.ActionRequest(action="load", engine="ollama", model="m", **params)


@pytest.mark.parametrize("param", sorted(GOOD_LOAD))
def test_load_parameters_only_apply_to_load(param: str) -> None:
    problem = wire.action_problem("unload", "ollama", "m", **{param: GOOD_LOAD[param]})
    assert problem is not None and problem.field == param
    assert f"{param} only applies to load, not unload" in problem.text()
    assert wire.action_problem("unload", "ollama", "m", force=False) is None


def test_unknown_request_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        wire.ActionRequest(action="load", engine="ollama", model="m", num_ctx=4096)


@given(
    ctx=st.none() | st.integers() | st.text(max_size=6) | st.floats(),
    parallel=st.none() | st.integers(-5, 2000) | st.booleans(),
    kv_type=st.none() | st.sampled_from([*wire.KV_TYPES, "Q8_0", "", "f16 "]),
    keep_alive=st.none() | st.from_regex(r"-?[0-9]{0,8}[smhd]?", fullmatch=True),
    force=st.booleans() | st.none() | st.integers(0, 1),
)
def test_a_load_request_exists_exactly_when_the_rule_allows_it(
    ctx: object, parallel: object, kv_type: object, keep_alive: object, force: object
) -> None:
    params = {"ctx": ctx, "parallel": parallel, "kv_type": kv_type, "keep_alive": keep_alive}
    params["force"] = force
    problem = wire.action_problem("load", "ollama", "m", **params)
    try:
        wire.ActionRequest(action="load", engine="ollama", model="m", **params)
    except ValidationError:
        assert problem is not None
    else:
        assert problem is None
