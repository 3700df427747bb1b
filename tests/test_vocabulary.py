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


def test_the_vocabulary_is_consistent() -> None:
    assert set(wire.ACTION_TIMEOUTS_S) == set(wire.ACTIONS)
    assert wire.TAKES_MODEL <= wire.NEEDS_ENGINE < set(wire.ACTIONS)


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
        (("purge", None, "m"), "model", "model only applies to unload, not purge"),
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
