"""agent.toml: what the node's administrator tells the agent (engines, price, actions)."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fleettui.wire import ACTION_TIMEOUTS_S, ENGINE_PATTERN, ENGINE_RE, ActionName

__all__ = [
    "ACTION_TIMEOUTS_S",
    "PORT_MAX",
    "SIM_NODES_MAX",
    "AgentConfig",
    "ConfigError",
    "Host",
    "IntervalS",
    "Port",
    "SimName",
    "SimNodes",
    "load_agent_config",
]

APP_NAME = "fleettui"
HOST_NAME_RE = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$")
EngineKind = Literal["ollama", "llamacpp", "vllm", "lmstudio", "mlx"]

# Usual ports. llama.cpp and mlx_lm share 8080: the probes tell them apart by their endpoints.
DEFAULT_ENGINE_URLS: dict[str, str] = {
    "ollama": "http://127.0.0.1:11434",
    "lmstudio": "http://127.0.0.1:1234",
    "llamacpp": "http://127.0.0.1:8080",
    "vllm": "http://127.0.0.1:8000",
    "mlx": "http://127.0.0.1:8080",
}


# Rules shared with the flags of `fleet agent serve` (cli.py checks the flags with these).
PORT_MAX = 65535
SIM_NODES_MAX = 2000
Port = Annotated[int, Field(ge=0, le=PORT_MAX)]  # 0: the OS picks a free one
IntervalS = Annotated[float, Field(ge=0.1, le=3600)]
SimNodes = Annotated[int, Field(ge=1, le=SIM_NODES_MAX)]
SimName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,55}$")]
Host = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:%_-]+$")]


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file, the key and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `true` is not a number


def _argv(v: list[str]) -> list[str]:
    if not v or not all(isinstance(a, str) and a for a in v):
        raise ValueError("must be a non-empty list of non-empty strings (an argv, no shell)")
    return v


# An argv the administrator allows the agent to run, never through a shell.
Argv = Annotated[list[str], AfterValidator(_argv)]


def _abs_path(v: str | None) -> str | None:
    if v is not None and not (v.startswith("/") and "\x00" not in v and len(v) <= 4096):
        raise ValueError("must be an absolute path")
    return v


AbsPath = Annotated[str, AfterValidator(_abs_path)]
# launchd job labels as macOS writes them (homebrew.mxcl.ollama, ai.lmstudio.server): no '/',
# so a label can never name another domain or service in `DOMAIN/UID/LABEL`
LAUNCHD_LABEL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class LaunchdConfig(_Strict):
    """An engine that runs as a launchd job of the agent's own user (macOS): start, stop and
    restart go through launchctl in that user's domain (`gui/UID/LABEL`), as an argv."""

    label: str = Field(pattern=LAUNCHD_LABEL, description="The job's Label.")
    plist: AbsPath | None = Field(
        None, description="The job's plist; start bootstraps it (stop boots the job out)."
    )
    domain: Literal["gui", "user"] = Field(
        "gui", description="gui: a LaunchAgent of the logged-in user; user: without a login."
    )
    launchctl: AbsPath = "/bin/launchctl"


class EngineConfig(_Strict):
    kind: EngineKind | None = Field(None, description="Defaults to the table's name.")
    url: str | None = None
    timeout_s: float = Field(1.5, gt=0, le=30)
    commands: dict[ActionName, Argv] = Field(
        default_factory=dict,
        description="argv per action (wire.ACTIONS) for this engine; `{engine}`, `{model}`, "
        "and for load `{ctx}`, `{parallel}`, `{kv_type}` are replaced as whole items.",
    )
    pull: bool = Field(False, description="Ollama: POST /api/pull before each load.")
    lms: str | None = Field(
        None,
        description="LM Studio: absolute path of the `lms` CLI, for loads where the server "
        "has no REST load endpoint (before 0.4); also start and stop (`lms server start`).",
    )
    launchd: LaunchdConfig | None = Field(
        None, description="macOS: start, stop and restart through this launchd job."
    )

    @field_validator("lms")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("/") and "\x00" not in v and len(v) <= 4096):
            raise ValueError("must be an absolute path, e.g. /home/me/.lmstudio/bin/lms")
        return v


class WallPowerConfig(_Strict):
    """A BMC that measures the whole machine: IPMI DCMI (an argv, never a shell) or Redfish."""

    source: Literal["ipmi", "redfish"]
    argv: list[str] = Field(default_factory=lambda: ["ipmitool", "dcmi", "power", "reading"])
    url: str | None = Field(None, description="Redfish Power resource, e.g. .../Chassis/1/Power")
    username: str | None = None
    password_file: str | None = None
    verify_tls: bool = True
    timeout_s: float = Field(5.0, gt=0, le=30)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @field_validator("argv")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        if not v or not all(a for a in v):
            raise ValueError("must be a non-empty list of non-empty strings (an argv, no shell)")
        return v


class AgentConfig(_Strict):
    interval_s: IntervalS = 2.0
    price_per_kwh: float = Field(0.0, ge=0)
    currency: str = Field("EUR", min_length=1, max_length=8)
    auto_detect: bool | None = Field(
        None, description="Probe the usual engine ports; defaults to true when no engine is set."
    )
    engines: dict[str, EngineConfig] = Field(default_factory=dict)
    purge: list[str] | None = Field(None, description="argv for the node-wide purge action.")
    rapl_root: str = "/sys/class/powercap"
    wall_power: WallPowerConfig | None = None
    timezone: str | None = Field(
        None, description="IANA zone of the daily cost buckets; default: the machine's."
    )
    rate_limit_per_min: int = Field(30, ge=1, le=100_000)
    auth_failures_per_min: int = Field(
        10, ge=1, le=100_000, description="Failed authentications per source address, then 429."
    )
    header_timeout_s: float = Field(
        10.0, ge=0.5, le=300, description="Time a client has to send a request's headers."
    )
    refusal_window_s: float = Field(
        60.0, ge=0.1, le=3600, description="Refusals per address per window share one record."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Extra Host names the agent answers to (exact, or *.suffix).",
    )
    read_token_required: bool = False
    tls_cert: AbsPath | None = Field(None, description="PEM certificate: serve HTTPS.")
    tls_key: AbsPath | None = Field(None, description="PEM key of tls_cert (0600).")
    tls_client_ca: AbsPath | None = Field(
        None, description="PEM CA: every client must show a certificate it signed (mutual TLS)."
    )
    state_dir: str | None = None
    data_dir: str | None = None
    audit_rotate_bytes: int = Field(
        10 * 1024 * 1024,
        ge=4096,
        le=1 << 40,
        description="Size at which audit.jsonl is renamed to audit.jsonl.N (the chain continues).",
    )
    advertise: bool = Field(
        False, description="Announce the agent over mDNS (`_fleettui._tcp`) for `fleet discover`."
    )
    advertise_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description="The name advertised; default: the host name (or the simulated node's).",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not HOST_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a host name (letters, digits, '-', '.', '*.')")
        return v

    @field_validator("engines")
    @classmethod
    def _engine_names(cls, v: dict[str, EngineConfig]) -> dict[str, EngineConfig]:
        for name, eng in v.items():
            if not ENGINE_RE.fullmatch(name):
                raise ValueError(f"engine name {name!r} must match {ENGINE_PATTERN}")
            if eng.kind is None:
                if name not in DEFAULT_ENGINE_URLS:
                    raise ValueError(
                        f"engine {name!r} needs kind = one of {sorted(DEFAULT_ENGINE_URLS)}"
                    )
                eng.kind = name  # type: ignore[assignment]
            if eng.url is None:
                eng.url = DEFAULT_ENGINE_URLS[eng.kind]
            if eng.pull and eng.kind != "ollama":
                raise ValueError(f"engine {name!r}: pull applies to ollama, not {eng.kind}")
            if eng.lms is not None and eng.kind != "lmstudio":
                raise ValueError(f"engine {name!r}: lms applies to lmstudio, not {eng.kind}")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ValueError, ZoneInfoNotFoundError):
                raise ValueError(f"unknown time zone {v!r} (e.g. Europe/Berlin)") from None
        return v

    @model_validator(mode="after")
    def _redfish_url(self) -> AgentConfig:
        if self.wall_power and self.wall_power.source == "redfish" and not self.wall_power.url:
            raise ValueError("wall_power: source = 'redfish' needs url")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> AgentConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS)")
        return self

    @property
    def detect(self) -> bool:
        return self.auto_detect if self.auto_detect is not None else not self.engines

    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else agent_state_dir()

    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else agent_data_dir()


def agent_config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "agent"


def agent_state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP_NAME)) / "agent"


def agent_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "agent"


def default_config_path() -> Path:
    env = os.environ.get("FLEET_AGENT_CONFIG")
    return Path(env) if env else agent_config_dir() / "agent.toml"


def format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid agent config"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {key}: {e['msg']}")
    return "\n".join(lines)


def load_agent_config(path: Path | None, *, required: bool = False) -> AgentConfig:
    """Load agent.toml; a missing default file means defaults, a broken one raises ConfigError."""
    explicit = path is not None
    path = path or default_config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicit or required:
            raise ConfigError(f"{path}: file not found") from None
        return AgentConfig()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError) as exc:
        # ValueError: an integer past Python's 4300-digit conversion limit
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None
