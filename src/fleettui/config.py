"""projects.toml: the operator's list of nodes, loaded leniently and edited without losing anything.

A typo in one `[[node]]` block must not hide the other forty nodes, so every entry is validated
on its own and a broken one becomes a warning naming the file, the entry and the field. Edits
(`fleet add` / `fleet remove`) keep comments and the other entries byte for byte where they can,
and always write atomically with mode 0600 because the file may hold tokens.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fleettui.fsutil import (
    STALE_TEMP_S,
    UnsafePathError,
    atomic_write,
    refuse_symlink,
    remove_stale_temps,
)

if TYPE_CHECKING:
    from tomlkit import TOMLDocument
    from tomlkit.items import AoT, Item

APP_NAME = "fleettui"
CONFIG_ENV = "FLEET_CONFIG"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,62}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
NodeKind = Literal["fleettui", "asiai", "ollama"]  # each is a module in aggregator/kinds/
KIND_NAMES: tuple[str, ...] = get_args(NodeKind)
TimeoutS = Annotated[float, Field(gt=0, le=3600)]  # `fleet status/ping --timeout`: finite


FINGERPRINT_RE = re.compile(r"^sha256:[0-9A-Fa-f]{64}$")


def tls_file(v: str | None) -> str | None:
    """A certificate or key path of the fleet config: ~ expanded, and a file that is there
    (a typo is a warning at load time, not a TLS error on every poll)."""
    if v is None:
        return None
    p = Path(v).expanduser()
    if not p.is_file():
        raise ValueError(f"{v}: no such file")
    try:
        with p.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ValueError(f"{v}: cannot read: {exc.strerror or exc}") from None
    return str(p)


class FleetConfigError(Exception):
    """The fleet config cannot be used at all (unreadable, not TOML, or an edit was refused)."""


class NodeNotFound(FleetConfigError):
    """`fleet remove` named a node the file does not have."""


class NodeConfig(BaseModel):
    """One `[[node]]` block. At most one token source; the token itself is never printed."""

    model_config = ConfigDict(extra="forbid")

    name: str
    url: str
    role: str = Field("", max_length=64)
    tags: list[str] = Field(default_factory=list, max_length=32)
    kind: NodeKind = "fleettui"
    nickname: str | None = None  # kind = "asiai": the node's fleet nickname (default "self")
    token_env: str | None = None
    token_file: Path | None = None
    token: SecretStr | None = None
    ca_file: str | None = None  # https: the CA that signed this node (default: [defaults])
    tls_fingerprint: str | None = None  # "sha256:<hex>": trust exactly this certificate
    client_cert: str | None = None  # mutual TLS: the operator certificate this node wants
    client_key: str | None = None

    @field_validator("ca_file", "client_cert", "client_key")
    @classmethod
    def _tls_file(cls, v: str | None) -> str | None:
        return tls_file(v)

    @field_validator("tls_fingerprint")
    @classmethod
    def _fingerprint(cls, v: str | None) -> str | None:
        if v is not None and not FINGERPRINT_RE.fullmatch(v):
            raise ValueError('must be "sha256:" and 64 hex digits (`fleet tls issue` prints it)')
        return v.lower() if v is not None else None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return normalize_url(v)

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if not v.isprintable():
            raise ValueError("must be one line of printable text (no newline or control character)")
        return v

    @field_validator("nickname")
    @classmethod
    def _nickname(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("kind", "fleettui") != "asiai":
            raise ValueError('only applies to kind = "asiai"')
        if v is not None and not NAME_RE.match(v):
            raise ValueError("must be 1-63 letters, digits, '.', '_' or '-'")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for t in v:
            if not TAG_RE.match(t):
                raise ValueError(f"tag {t!r} must be letters, digits and . _ : / - (no spaces)")
        return list(dict.fromkeys(v))

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, v: str | None) -> str | None:
        if v is not None and not ENV_RE.match(v):
            raise ValueError("must be an environment variable name like FLEET_TOKEN_GPU1")
        return v

    @field_validator("token_file")
    @classmethod
    def _token_file(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @field_validator("token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().strip():
            raise ValueError("is empty")
        return v

    @model_validator(mode="after")
    def _tls_keys(self) -> NodeConfig:
        tls = ("ca_file", "tls_fingerprint", "client_cert", "client_key")
        if not self.url.startswith("https://") and any(getattr(self, k) for k in tls):
            raise ValueError(
                "ca_file, tls_fingerprint, client_cert and client_key need an https:// url"
            )
        if self.ca_file and self.tls_fingerprint:
            raise ValueError("give ca_file or tls_fingerprint, not both (a pin needs no CA)")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        return self

    @model_validator(mode="after")
    def _one_token_source(self) -> NodeConfig:
        given = [k for k in ("token_env", "token_file", "token") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of token_env, token_file, token (got {given})")
        return self

    @property
    def has_token(self) -> bool:
        """A token source is configured (whether it resolves is `token_problem()`)."""
        return any(x is not None for x in (self.token_env, self.token_file, self.token))

    @property
    def token_source(self) -> str:
        """Where the token comes from, for `fleet ls`; never the token."""
        if self.token_env:
            return f"env {self.token_env}"
        if self.token_file:
            return f"file {_tilde(self.token_file)}"
        if self.token is not None:
            return "inline"
        return ""

    def resolve_token(self) -> str | None:
        """The token from env, file or inline; None when none is configured, it is unreadable,
        or its file is readable by others (a leaked secret is not used: `token_problem()` says
        which chmod fixes it).

        Blocking (reads a file): call it from a worker thread inside async code.
        """
        if self.token_env:
            return (os.environ.get(self.token_env) or "").strip() or None
        if self.token_file:
            try:
                if self.token_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                    return None
                return self.token_file.read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeDecodeError):
                return None
        if self.token is not None:
            return self.token.get_secret_value().strip() or None
        return None

    def token_problem(self) -> str | None:
        """Why a configured token would not resolve, in words that never include the token."""
        if self.token_env and not (os.environ.get(self.token_env) or "").strip():
            return f"environment variable {self.token_env} is not set"
        if self.token_file:
            try:
                st = self.token_file.stat()
                if not self.token_file.read_text(encoding="utf-8").strip():
                    return f"token file {self.token_file} is empty"
            except FileNotFoundError:
                return f"token file {self.token_file} does not exist"
            except (OSError, UnicodeDecodeError) as exc:
                return f"token file {self.token_file} unreadable: {exc}"
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                return (
                    f"token file {self.token_file} is readable by others, so it is not used "
                    f"(fix: chmod 600 {self.token_file})"
                )
        return None

    def to_toml_dict(self) -> dict[str, Any]:
        """The entry as written back to projects.toml (defaults left out, inline token kept)."""
        d: dict[str, Any] = {"name": self.name, "url": self.url}
        if self.role:
            d["role"] = self.role
        if self.tags:
            d["tags"] = list(self.tags)
        if self.kind != type(self).model_fields["kind"].default:
            d["kind"] = self.kind
        if self.nickname is not None:
            d["nickname"] = self.nickname
        if self.token_env:
            d["token_env"] = self.token_env
        if self.token_file:
            d["token_file"] = str(self.token_file)
        if self.token is not None:
            d["token"] = self.token.get_secret_value()
        for key in ("ca_file", "tls_fingerprint", "client_cert", "client_key"):
            if (value := getattr(self, key)) is not None:
                d[key] = value
        return d


class Defaults(BaseModel):
    """`[defaults]`: timing knobs shared by every node."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `true` is not a number

    poll_interval_s: float = Field(2.0, ge=0.05, le=3600)
    http_timeout_s: float = Field(5.0, gt=0, le=300)
    backoff_min_s: float = Field(1.0, gt=0, le=3600)
    backoff_max_s: float = Field(30.0, gt=0, le=86400)
    stale_after_s: float = Field(
        30.0, gt=0, le=86400, description="A snapshot whose ts has not advanced this long is stale."
    )
    chain_recheck_s: float = Field(
        60.0, gt=0, le=86400, description="Re-fetch the pinned audit entry at least this often."
    )
    ca_file: str | None = Field(None, description="https nodes: the fleet CA (fleet tls init).")
    client_cert: str | None = Field(None, description="The operator certificate (mutual TLS).")
    client_key: str | None = None
    chain_rescan_s: float = Field(
        110.0,
        gt=0,
        le=10**7,
        description="Every audit entry is read again this often (a sweep, a page at a time): "
        "the bound for seeing an edit anywhere in the log (docs/aggregator.md).",
    )

    @field_validator("ca_file", "client_cert", "client_key")
    @classmethod
    def _tls_file(cls, v: str | None) -> str | None:
        return tls_file(v)

    @model_validator(mode="after")
    def _order(self) -> Defaults:
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must be >= backoff_min_s")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        return self


@dataclass
class FleetConfig:
    path: Path | None = None
    defaults: Defaults = field(default_factory=Defaults)
    nodes: list[NodeConfig] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "node[3] 'gpu3'": entries not loaded
    exists: bool = True  # False: no file yet (first run)

    def node(self, name: str) -> NodeConfig | None:
        return next((n for n in self.nodes if n.name == name), None)


def _tilde(path: Path) -> str:
    """~/x instead of /home/me/x, for display."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except (ValueError, RuntimeError):
        return str(path)


def normalize_url(v: str) -> str:
    """An agent base URL: http(s), a host, no credentials, query or fragment; no trailing '/'."""
    v = v.strip()
    if "://" not in v and v:
        raise ValueError(f"must start with http:// or https:// (did you mean {'http://' + v!r}?)")
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as exc:
        host = v.partition("://")[2].partition("/")[0]
        if host.count(":") > 1 and "[" not in host:
            ip, _, last = host.rpartition(":")
            raise ValueError(
                f"an IPv6 address goes in brackets: {v.partition('://')[0]}://[{ip}]:{last}"
            ) from None
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials (use token_env or token_file)")
    if parts.query or parts.fragment:
        raise ValueError("must not contain a query or fragment")
    if port == 0:
        raise ValueError("port 0 is not a port you can connect to")
    return v.rstrip("/")


def default_fleet_config_path() -> Path:
    """$FLEET_CONFIG, else projects.toml in the user config dir (XDG on Linux)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "projects.toml"


def resolve_config_path(path: Path | None) -> Path:
    """--config wins, then $FLEET_CONFIG, then the XDG default."""
    return Path(path).expanduser() if path is not None else default_fleet_config_path()


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    """`tags.0`; a key that is not plain text (a quoted TOML key may hold anything) quoted."""
    parts = (str(p) if str(p).isprintable() else repr(str(p)) for p in loc)
    return ".".join(parts) or "(entry)"


def unknown_key(key: str, known: Iterable[str]) -> str:
    """ "unknown key", with the near miss a typo most likely meant."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"


def _error_lines(err: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = unknown_key(str(e["loc"][-1]), model.model_fields)
        out.append((_fmt_loc(e["loc"]), msg))
    return out


def _load_defaults(path: Path, raw: Any, warnings: list[str]) -> Defaults:
    """Validate [defaults]; a bad key falls back to its built-in value with a warning."""
    if raw is None:
        return Defaults()
    if not isinstance(raw, dict):
        warnings.append(f"{path}: defaults: must be a table ([defaults]); using built-in defaults")
        return Defaults()
    data = dict(raw)
    while True:
        try:
            return Defaults.model_validate(data)
        except ValidationError as exc:
            bad = {e["loc"][0] for e in exc.errors() if e["loc"] and e["loc"][0] in data}
            for loc, msg in _error_lines(exc, Defaults):
                where = f"defaults.{loc}" if loc != "(entry)" else "defaults"
                warnings.append(f"{path}: {where}: {msg}; using the built-in value")
            if not bad:
                return Defaults()
            for key in bad:
                del data[key]


def _describe_entry(i: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"node[{i}] {name!r}" if isinstance(name, str) else f"node[{i}]"


def parse_fleet_config(text: str, path: Path) -> FleetConfig:
    """Validate a projects.toml text; raises FleetConfigError only for invalid TOML."""
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: a 4300+ digit integer
        raise FleetConfigError(f"{path}: not valid TOML: {exc}") from None
    warnings: list[str] = []
    for key in data:
        if key not in ("defaults", "node"):
            hint = unknown_key(key, ("defaults", "node")).removeprefix("unknown key")
            warnings.append(
                f"{path}: unknown top-level key {key!r}{hint} (expected [defaults], [[node]])"
            )
    defaults = _load_defaults(path, data.get("defaults"), warnings)
    raw_nodes = data.get("node", [])
    if not isinstance(raw_nodes, list):
        warnings.append(f"{path}: node: must be an array of tables ([[node]] blocks)")
        raw_nodes = []
    nodes: list[NodeConfig] = []
    skipped: list[str] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw_nodes):
        where = f"{path}: {_describe_entry(i, entry)}"
        if not isinstance(entry, dict):
            warnings.append(f"{where}: must be a table; skipped")
            skipped.append(_describe_entry(i, entry))
            continue
        try:
            node = NodeConfig.model_validate(entry)
        except ValidationError as exc:
            for loc, msg in _error_lines(exc, NodeConfig):
                warnings.append(f"{where}: {loc}: {msg}; skipped")
            skipped.append(_describe_entry(i, entry))
            continue
        if node.name in seen:
            warnings.append(f"{where}: name: duplicate of node[{seen[node.name]}]; skipped")
            skipped.append(_describe_entry(i, entry))
            continue
        seen[node.name] = i
        nodes.append(node)
    if any(n.token is not None for n in nodes):
        with contextlib.suppress(OSError):
            if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                warnings.append(
                    f"{path}: holds inline tokens but is readable by others (chmod 600 it, "
                    "or use token_env / token_file)"
                )
    return FleetConfig(
        path=path, defaults=defaults, nodes=nodes, warnings=warnings, skipped=skipped
    )


def load_fleet_config(path: Path | None = None) -> FleetConfig:
    """Load the fleet config. A missing file is a first run (`exists` False), not an error.

    Raises FleetConfigError only when the file cannot be read or parsed at all; broken
    entries become `warnings` and the good ones still load.
    """
    path = resolve_config_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return FleetConfig(path=path, exists=False)
    except IsADirectoryError:
        raise FleetConfigError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise FleetConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FleetConfigError(f"{path}: not UTF-8 text: {exc}") from None
    return parse_fleet_config(text, path)


# --- editing ------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the config between concurrent `fleet add` calls; also
    the moment to remove the temp files a killed one left (they can hold inline tokens)."""
    lock = path.parent / f".{path.name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        refuse_symlink(lock)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except UnsafePathError as exc:
        raise FleetConfigError(str(exc)) from None
    except FileExistsError:  # mkdir met a file where a directory must be
        raise FleetConfigError(f"{path}: a parent of it is a file, not a directory") from None
    except OSError as exc:
        where = exc.filename or path.parent
        raise FleetConfigError(f"{path}: cannot create {where}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        remove_stale_temps(path.parent, path.name, older_than_s=STALE_TEMP_S)
        yield
    finally:
        os.close(fd)


def _read_for_edit(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        refuse_symlink(path)
    except UnsafePathError as exc:
        raise FleetConfigError(str(exc)) from None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "", {}
    except IsADirectoryError:
        raise FleetConfigError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise FleetConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise FleetConfigError(f"{path}: not UTF-8 text: {exc}") from None
    try:
        return text, tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: a 4300+ digit integer
        raise FleetConfigError(f"{path}: not valid TOML, not editing it: {exc}") from None


def _write(path: Path, text: str) -> None:
    try:
        atomic_write(path, text, mode=0o600)
    except UnsafePathError as exc:
        raise FleetConfigError(str(exc)) from None
    except OSError as exc:
        raise FleetConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _raw_nodes(data: dict[str, Any]) -> list[Any]:
    nodes = data.get("node", [])
    return nodes if isinstance(nodes, list) else []


def _document(path: Path, text: str) -> TOMLDocument:
    """The file as tomlkit reads it: every comment, blank line and key order kept for the
    write back. The text already parsed with tomllib, so this only fails on what tomlkit
    alone refuses. (tomlkit is imported by the edits only: `fleet ls` loads without it.)"""
    import tomlkit
    import tomlkit.exceptions

    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise FleetConfigError(
            f"{path}: cannot edit this TOML layout ({exc}); edit it by hand"
        ) from None


def _checked(path: Path, doc: TOMLDocument, want: dict[str, Any]) -> str:
    """The edited text, once it is known to read back as exactly `want`."""
    import tomlkit

    text = tomlkit.dumps(doc)
    if tomllib.loads(text) != want:
        raise FleetConfigError(f"{path}: cannot edit this TOML layout safely; edit it by hand")
    return text


def add_node(path: Path, node: NodeConfig) -> None:
    """Append a `[[node]]` table, keeping the rest of the file (comments, order) as it was."""
    path = Path(path)
    with _locked(path):
        text, data = _read_for_edit(path)
        if "node" in data and not isinstance(data["node"], list):
            raise FleetConfigError(f"{path}: 'node' is not an array of tables; fix it by hand")
        for i, entry in enumerate(_raw_nodes(data)):
            if isinstance(entry, dict) and entry.get("name") == node.name:
                raise FleetConfigError(
                    f"{path}: a node named {node.name!r} already exists (node[{i}]); "
                    f"remove it first with `fleet remove {node.name}`"
                )
        import tomlkit
        from tomlkit.items import AoT

        doc = _document(path, text)
        entry = node.to_toml_dict()
        if "node" not in doc:
            doc.append("node", tomlkit.aot())
        nodes = doc["node"]
        if isinstance(nodes, AoT):
            table = tomlkit.table()
            if text.strip() and not text.endswith("\n\n"):  # a blank line above the header
                table.trivia.indent = "\n"
        else:
            table = tomlkit.inline_table()
        table.update(entry)
        nodes.append(table)
        _write(path, _checked(path, doc, {**data, "node": [*_raw_nodes(data), entry]}))


def remove_node(path: Path, name: str) -> None:
    """Remove the node named `name`, keeping the rest of the file as it was; raises
    NodeNotFound when there is none."""
    path = Path(path)
    with _locked(path):
        text, data = _read_for_edit(path)
        if not text and not path.exists():
            raise NodeNotFound(f"{path}: no fleet config here, nothing to remove")
        raw = _raw_nodes(data)
        idx = [i for i, e in enumerate(raw) if isinstance(e, dict) and e.get("name") == name]
        if not idx:
            raise NodeNotFound(f"{path}: no node named {name!r}")
        want = {**data, "node": [e for i, e in enumerate(raw) if i not in idx]}
        from tomlkit.items import AoT

        doc = _document(path, text)
        nodes = doc["node"]
        left: list[Item] = []
        for i in reversed(idx):
            if isinstance(nodes, AoT):
                left = _drop_table(nodes, i)
            else:  # `node = [{...}, ...]`: an array of inline tables
                del nodes[i]
        if not want["node"]:
            del want["node"]
            del doc["node"]
            for item in left:
                doc.append(None, item)
        _write(path, _checked(path, doc, want))


def _drop_table(nodes: AoT, i: int) -> list[Item]:
    """Delete `nodes[i]`, keeping the comments that follow its keys: tomlkit reads them into
    that table, but they sit above the next header and belong to what follows. Returns those
    it had nowhere to put (the array is empty now)."""
    body = nodes[i].value.body
    from tomlkit.items import Comment, Whitespace

    trailing: list[Item] = []
    while body and body[-1][0] is None and isinstance(body[-1][1], Whitespace | Comment):
        trailing.insert(0, body.pop()[1])
    while trailing and isinstance(trailing[0], Whitespace):  # what came before separates
        trailing.pop(0)
    del nodes[i]
    if i < len(nodes):  # above the next [[node]] header, where they were
        nodes[i].trivia.indent = "".join(t.as_string() for t in trailing) + nodes[i].trivia.indent
    elif i > 0:
        for item in trailing:
            nodes[i - 1].value.append(None, item)
    else:
        return trailing
    return []
