"""The only reader of TOML and environment: produces frozen, validated settings.

Precedence: environment (`SEGWATCH_SECTION__KEY`) over the TOML file over defaults.
A source's URL may instead name an environment variable (`url_env`), which keeps
API keys out of the file. Every bad value becomes one line naming the file, the
key and the problem (`ConfigError.lines`).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from daemon.errors import ConfigError
from daemon.inputs.auth_settings import AuthSettings, UserSettings
from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.source_settings import check_transport, check_url, resolve_url
from daemon.rules.calendar import is_known_calendar

DEFAULT_CONFIG = "segwatch.toml"
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreSettings(_Frozen):
    url: str = "sqlite:///segwatch.db"


class LedgerSettings(_Frozen):
    inbox: str | None = None
    """A folder the books system drops ledger snapshots and approved withdrawals into
    (daemon/runtime/inbox.py); none: imports come only through the CLI or the API."""
    inbox_user: str = "books"
    """The feeder the inbox's files are imported as (it must exist with the feeder role:
    write access to the folder is its credential)."""
    inbox_seconds: float = Field(default=5.0, ge=0.5, le=3600)


class DaemonSettings(_Frozen):
    listen: str = "127.0.0.1:9464"
    timezone: str = "America/New_York"
    calendar: str = "NYSE"
    firm_owner: str = Field(default="FIRM", min_length=1)
    lease_seconds: float = Field(default=15.0, ge=1.0, le=3600.0)
    """PostgreSQL scale-out: how long a replica's chain lease lasts without renewal."""
    metrics_token_env: str | None = None
    """Environment variable holding a bearer token that /metrics then requires."""
    allow_dual_role: bool = False
    """Let one person hold both maker and checker (off: maker-checker needs two people)."""
    audit_key: str | None = None
    """Ed25519 private key (PEM, mode 0600, outside the database) that signs audit heads."""

    @field_validator("metrics_token_env")
    @classmethod
    def _metrics_token(cls, value: str | None) -> str | None:
        if value is not None and not os.environ.get(value):
            raise ValueError(f"environment variable {value} (metrics_token_env) is not set")
        return value

    @property
    def metrics_token(self) -> str | None:
        """The token /metrics requires, or None (a secret: never logged)."""
        return os.environ.get(self.metrics_token_env) if self.metrics_token_env else None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"listen {value[:80]!r} must be HOST:PORT, e.g. 127.0.0.1:9464")
        if not 0 < int(port) < 65536:
            raise ValueError(f"listen port {port[:10]} must be between 1 and 65535 (a fixed "
                             "port: probes and scrapers must know where to connect)")
        return value

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, value: str) -> str:
        if not is_known_calendar(value):
            raise ValueError(f"unknown calendar {value!r} (a financial calendar such as NYSE, "
                             "a country code such as US, or none)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}") from None
        return value


class AlertSettings(_Frozen):
    kind: Literal["webhook", "slack"]
    url: str = ""
    url_env: str | None = None
    secret_env: str | None = None
    """Webhook: environment variable holding the HMAC-SHA256 signing secret."""
    allow_insecure: bool = False
    """Allow plain http:// to a host that is not loopback."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value) if value else value

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        resolve_url(self)
        check_transport(self.url, self.allow_insecure)
        if self.secret_env is not None:
            if self.kind != "webhook":
                raise ValueError("secret_env signs webhook alerts; Slack does not check it")
            if len(os.environ.get(self.secret_env, "")) < 16:
                raise ValueError(f"environment variable {self.secret_env} (secret_env) must "
                                 "hold a secret of at least 16 characters")
        return self

    @property
    def secret(self) -> bytes | None:
        """The webhook signing secret, or None (never logged)."""
        return os.environ[self.secret_env].encode() if self.secret_env else None


class ExportSettings(_Frozen):
    trusted_keys: list[str] = Field(default_factory=list)
    """SHA-256 fingerprints (hex) of the Ed25519 public keys whose packages verify."""
    sign_key: str | None = None
    """The Ed25519 key (PEM, mode 0600) that signs packages made through the API."""
    dir: str = "exports"
    """Where packages made through the API are kept (each with its owner salt beside it)."""

    @field_validator("trusted_keys")
    @classmethod
    def _fingerprints(cls, value: list[str]) -> list[str]:
        keys = [v.strip().lower().replace(":", "") for v in value]
        bad = [v for v in keys if not _FINGERPRINT.fullmatch(v)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a key fingerprint (64 hex digits)")
        return keys


class Settings(BaseSettings):
    """The whole validated configuration; immutable."""

    model_config = SettingsConfigDict(
        env_prefix="SEGWATCH_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    store: StoreSettings = StoreSettings()
    daemon: DaemonSettings = DaemonSettings()
    chains: list[ChainSettings] = Field(default_factory=list)
    alerts: list[AlertSettings] = Field(default_factory=list)
    users: list[UserSettings] = Field(default_factory=list)
    export: ExportSettings = ExportSettings()
    auth: AuthSettings = AuthSettings()
    ledger: LedgerSettings = LedgerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _unique_chains(self) -> Settings:
        names = [c.name for c in self.chains]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"duplicate chain name {name!r}")
        return self

    def chain(self, name: str) -> ChainSettings | None:
        """Return the chain called `name`, or None."""
        return next((c for c in self.chains if c.name == name), None)


_NOT_FROM_ENV = ("SEGWATCH_USERS", "SEGWATCH_AUTH")
"""Who may act is not an environment variable away (an insider once granted himself
checker with SEGWATCH_USERS); the OIDC issuer and client come from their own variables."""


def config_path(explicit: str | None) -> Path:
    """Return the configuration path: explicit, else $SEGWATCH_CONFIG, else the default."""
    return Path(explicit or os.environ.get("SEGWATCH_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: Path, *, required: bool = True) -> Settings:
    """Read and validate `path` (plus environment overrides).

    A missing file gives default settings when `required` is false.
    Raises ConfigError with one line per problem.
    """
    from_env = sorted(k for k in os.environ if k.upper() in _NOT_FROM_ENV or
                      k.upper().startswith(tuple(f"{n}__" for n in _NOT_FROM_ENV)))
    if from_env:
        raise ConfigError(f"{from_env[0]}: users, roles and sign-in settings cannot come from "
                          "the environment (declare [[users]] and [auth] in the file, or use "
                          "`segwatch users`)")
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: malformed TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    elif required:
        raise ConfigError(f"{path}: configuration file not found (use --config or SEGWATCH_CONFIG)")
    overrides = _chain_overrides(data)
    try:
        with _without_env(overrides):
            return Settings(**data)
    except ValidationError as exc:
        lines = [f"{path}: {_describe(err, data)}" for err in exc.errors()]
        raise ConfigError(lines[0] if len(lines) == 1 else
                          f"{path}: {len(lines)} configuration errors", lines) from None


CHAIN_ENV = "SEGWATCH_CHAINS__"


def _chain_overrides(data: dict[str, Any]) -> list[str]:
    """Apply `SEGWATCH_CHAINS__<NAME>__<KEY>=value` to the chain called NAME in `data` (a
    '-' in a name is '_' in the variable; a value starting with `[` or `{` is JSON); return
    the variables used. Raises ConfigError for a variable naming no chain (a list index
    included: chains are named, not numbered)."""
    used = sorted(k for k in os.environ if k.upper().startswith(CHAIN_ENV))
    chains = data.get("chains")
    for variable in used:
        name, _, key = variable[len(CHAIN_ENV):].partition("__")
        wanted = name.upper()
        found = [c for c in chains or [] if isinstance(c, dict) and
                 str(c.get("name", "")).upper().replace("-", "_") == wanted]
        if not key or not found:
            known = ", ".join(str(c.get("name")) for c in chains or [] if isinstance(c, dict))
            raise ConfigError(f"{variable}: no chain named {name.lower()!r} (use "
                              f"{CHAIN_ENV}<NAME>__<KEY> with a configured chain's name: "
                              f"{known or 'none configured'})")
        value: Any = os.environ[variable]
        if value.lstrip()[:1] in ("[", "{"):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f"{variable}: not valid JSON") from None
        found[0][key.lower()] = value
    return used


@contextmanager
def _without_env(names: Iterable[str]) -> Iterator[None]:
    """Hide `names` from the environment while pydantic-settings reads it (it would take
    SEGWATCH_CHAINS__… for the whole `chains` list)."""
    hidden = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(hidden)


def _describe(err: Any, data: dict[str, Any]) -> str:
    key = _key_path(tuple(err["loc"]), data)
    kind, msg = err["type"], str(err["msg"])
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "literal_error":
        field = key.rsplit(".", 1)[-1]
        return f"{key}: unknown {field} {err['input']!r} ({msg.lower()})"
    return f"{key}: {msg.removeprefix('Value error, ')}"


def _key_path(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and item < len(node) and \
                isinstance(node[item], dict) else None
            parts[-1] += f"[{item}]" if name is None else f"[{name!r}]"
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"
