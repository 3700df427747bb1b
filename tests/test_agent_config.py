"""agent.toml keys added for abuse limits, rotation and cost days: every hostile value is one
ConfigError naming the file and the key (or, for TOML itself refuses, why), never a traceback
or a value taken silently (`true` is not a number)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleettui.agent.config import ConfigError, load_agent_config


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("header_timeout_s = nan", "header_timeout_s"),
        ("header_timeout_s = inf", "header_timeout_s"),
        ("header_timeout_s = 0", "header_timeout_s"),
        ("refusal_window_s = -1.0", "refusal_window_s"),
        ("refusal_window_s = 1e308", "refusal_window_s"),
        ("auth_failures_per_min = 0", "auth_failures_per_min"),
        ("auth_failures_per_min = true", "auth_failures_per_min"),
        ("auth_failures_per_min = 1" + "0" * 5000, "not valid TOML"),  # past int() limits
        ('audit_rotate_bytes = "10MB"', "audit_rotate_bytes"),
        ("audit_rotate_bytes = 1", "audit_rotate_bytes"),
        ('allowed_hosts = [""]', "allowed_hosts"),
        ('allowed_hosts = ["evil.example\\u001b]0;x\\u0007"]', "allowed_hosts"),
        ('allowed_hosts = "gpu1.lan"', "allowed_hosts"),
        ('timezone = ""', "timezone"),
        ('timezone = "../../etc/passwd"', "timezone"),
        ('[engines.ollama]\npull = "yes"', "engines.ollama.pull"),
        ("[engines.ollama]\npull = 1", "engines.ollama.pull"),
        ("[engines.vllm]\npull = true", "pull applies to ollama, not vllm"),
        ('[engines.lmstudio]\nlms = "lms"', "engines.lmstudio.lms: Value error, must be an abs"),
        ('[engines.lmstudio]\nlms = ["/bin/lms"]', "engines.lmstudio.lms"),
        ('[engines.lmstudio]\nlms = "/bin/lms\\u0000x"', "engines.lmstudio.lms"),
        ('[engines.ollama]\nlms = "/bin/lms"', "lms applies to lmstudio, not ollama"),
        ("[engines.vllm.commands]\nload = []", "engines.vllm.commands.load"),
        ('[engines.vllm.commands]\nload = "vllm serve {model}"', "engines.vllm.commands.load"),
        ('[engines.vllm.commands]\nload = ["x", ""]', "engines.vllm.commands.load"),
    ],
)
def test_hostile_values_are_one_clear_error(tmp_path: Path, toml: str, needle: str) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_agent_config(cfg)
    text = str(info.value)
    assert text.startswith(f"{cfg}: ") and needle in text
    assert "\x1b" not in text and "Traceback" not in text


def test_strict_still_takes_what_toml_means(tmp_path: Path) -> None:
    """Strict numbers refuse `true`, yet an integer is a fine number of seconds and tables
    still become their models."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        "header_timeout_s = 5\nauth_failures_per_min = 3\n"
        '[engines.ollama]\ncommands = { restart = ["systemctl", "restart", "ollama"] }\n'
        '[wall_power]\nsource = "ipmi"\n'
        '[engines.lmstudio]\nlms = "/opt/lms"\n[engines.vllm.commands]\nload = ["/x", "{model}"]\n'
        "[engines.ollama2]\nkind = 'ollama'\npull = true\n"
    )
    got = load_agent_config(cfg)
    assert got.header_timeout_s == 5.0 and got.auth_failures_per_min == 3
    assert got.engines["ollama"].kind == "ollama" and got.wall_power is not None
    assert got.wall_power.source == "ipmi"
    assert got.engines["lmstudio"].lms == "/opt/lms" and got.engines["ollama2"].pull
    assert got.engines["vllm"].commands["load"] == ["/x", "{model}"]
