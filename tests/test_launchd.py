"""Mac engines under launchd: start, stop and restart of a configured job go through launchctl
in the agent user's own domain, as an argv (never a shell); LM Studio's server through `lms`.
Hostile agent.toml values are one clear line. A real agent runs a stand-in launchctl."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from fleettui.agent.actions import service_argv
from fleettui.agent.config import ConfigError, EngineConfig, load_agent_config
from fleettui.agent.tokens import create_token, tokens_path
from fleettui.wire import ActionResult

LABEL = "homebrew.mxcl.ollama"
PLIST = "/Users/me/Library/LaunchAgents/homebrew.mxcl.ollama.plist"


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[engines.ollama.launchd]\nlabel = "gui/501/evil"', "engines.ollama.launchd.label"),
        ('[engines.ollama.launchd]\nlabel = "-k"', "engines.ollama.launchd.label"),
        ('[engines.ollama.launchd]\nlabel = "a b"', "engines.ollama.launchd.label"),
        ('[engines.ollama.launchd]\nlabel = ""', "engines.ollama.launchd.label"),
        ('[engines.ollama.launchd]\nlabel = "x\\u001b]0;t\\u0007"', "engines.ollama.launchd.label"),
        ("[engines.ollama.launchd]\nlabel = 5", "engines.ollama.launchd.label"),
        ('[engines.ollama.launchd]\nplist = "/x.plist"', "engines.ollama.launchd.label"),
        (
            f'[engines.ollama.launchd]\nlabel = "{LABEL}"\nplist = "x.plist"',
            "engines.ollama.launchd.plist: Value error, must be an absolute path",
        ),
        (
            f'[engines.ollama.launchd]\nlabel = "{LABEL}"\nplist = "/a\\u0000b"',
            "engines.ollama.launchd.plist",
        ),
        (
            f'[engines.ollama.launchd]\nlabel = "{LABEL}"\ndomain = "system"',
            "engines.ollama.launchd.domain",
        ),
        (
            f'[engines.ollama.launchd]\nlabel = "{LABEL}"\nlaunchctl = "launchctl"',
            "engines.ollama.launchd.launchctl",
        ),
        (
            f'[engines.ollama.launchd]\nlabel = "{LABEL}"\nkeepalive = true',
            "engines.ollama.launchd.keepalive",
        ),
        ('[engines.ollama]\nlaunchd = "homebrew.mxcl.ollama"', "engines.ollama.launchd"),
    ],
)
def test_hostile_launchd_values_are_one_clear_error(tmp_path: Path, toml: str, needle: str) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_agent_config(cfg)
    text = str(info.value)
    assert text.startswith(f"{cfg}: ") and needle in text, text
    assert "\x1b" not in text and "Traceback" not in text


def engine(toml: str, tmp_path: Path, name: str = "ollama") -> EngineConfig:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(toml)
    return load_agent_config(cfg).engines[name]


def test_launchd_argv_per_action_in_the_users_domain(tmp_path: Path) -> None:
    job = engine(f'[engines.ollama.launchd]\nlabel = "{LABEL}"\nplist = "{PLIST}"\n', tmp_path)
    assert service_argv(job, "restart", 501) == [
        "/bin/launchctl",
        "kickstart",
        "-k",
        f"gui/501/{LABEL}",
    ]
    assert service_argv(job, "stop", 501) == ["/bin/launchctl", "bootout", f"gui/501/{LABEL}"]
    assert service_argv(job, "start", 501) == ["/bin/launchctl", "bootstrap", "gui/501", PLIST]
    assert service_argv(job, "unload", 501) is None and service_argv(job, "purge", 501) is None
    bare = engine(f'[engines.ollama.launchd]\nlabel = "{LABEL}"\ndomain = "user"\n', tmp_path)
    assert service_argv(bare, "start", 502) == ["/bin/launchctl", "kickstart", f"user/502/{LABEL}"]
    lms = engine('[engines.lmstudio]\nlms = "/Users/me/.lmstudio/bin/lms"\n', tmp_path, "lmstudio")
    assert service_argv(lms, "stop", 501) == ["/Users/me/.lmstudio/bin/lms", "server", "stop"]
    assert service_argv(lms, "start", 501) == ["/Users/me/.lmstudio/bin/lms", "server", "start"]
    assert service_argv(lms, "restart", 501) is None  # lms has no one-step restart
    assert service_argv(engine("[engines.ollama]\n", tmp_path), "restart", 501) is None


LAUNCHCTL = """\
#!{python}
import json, sys
with open({calls!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
print("launchctl", *sys.argv[1:])
"""


def test_a_real_agent_restarts_stops_and_starts_a_launchd_job(
    agent_factory, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.jsonl"
    launchctl = tmp_path / "launchctl"
    launchctl.write_text(LAUNCHCTL.format(python=sys.executable, calls=str(calls)))
    launchctl.chmod(0o755)
    cfg = tmp_path / "etc" / "agent.toml"
    cfg.parent.mkdir()
    cfg.write_text(
        "interval_s = 0.3\nrate_limit_per_min = 1000\n"
        f"[engines.ollama]\nlaunchd = {{ label = {json.dumps(LABEL)}, plist = "
        f"{json.dumps(PLIST)}, launchctl = {json.dumps(str(launchctl))} }}\n"
        # an explicit argv still wins over the launchd job
        '[engines.ollama.commands]\nstop = ["/bin/true"]\n'
    )
    _, secret = create_token(tokens_path(cfg), "tests")
    agent = agent_factory("--simulate", "--name", "mac", "--config", str(cfg))
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    results = []
    for action in ("restart", "stop", "start"):
        r = httpx.post(
            f"{agent.url}/api/v1/actions",
            json={"action": action, "engine": "ollama"},
            headers=headers,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        results.append(ActionResult.model_validate(r.json()))
    assert all(res.ok and res.exit_code == 0 for res in results), results
    uid = os.getuid()
    recorded = [json.loads(x) for x in calls.read_text().splitlines()]
    assert recorded == [
        ["kickstart", "-k", f"gui/{uid}/{LABEL}"],
        ["bootstrap", f"gui/{uid}", PLIST],
    ]
    assert f"launchctl kickstart -k gui/{uid}/{LABEL}" in results[0].output_tail
