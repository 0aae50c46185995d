"""The only reader of TOML and environment: produces frozen, validated settings.

Precedence: environment (`SEGWATCH_SECTION__KEY`) over the TOML file over defaults.
A source's URL may instead name an environment variable (`url_env`), which keeps
API keys out of the file. Every bad value becomes one line naming the file, the
key and the problem (`ConfigError.lines`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from chains.errors import InvalidAddress
from chains.evm.address import canonical_evm_address
from chains.types import Address, AssetRef, FeeModel
from daemon.errors import ConfigError
from daemon.inputs.auth_settings import AuthSettings, UserSettings
from daemon.rules.calendar import is_known_calendar

DEFAULT_CONFIG = "segwatch.toml"
CANONICAL_MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
UTXO_NETWORKS = ("bitcoin", "testnet", "signet", "regtest", "litecoin", "litecoin-regtest")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~\-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
MIB = 1024 * 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceSettings(_Frozen):
    kind: Literal["jsonrpc", "esplora", "core-rpc"]
    name: str = ""
    """How the source is named in the database, logs, metrics, manifests and reports
    (never its URL); default `KIND-N`, N its position among the chain's sources."""
    url: str = ""
    url_env: str | None = None
    ws_url: str = ""
    """jsonrpc: a WebSocket endpoint (ws:// on loopback, else wss://) whose `newHeads`
    notifications wake the chain's next cycle at once; polling goes on regardless."""
    ws_url_env: str | None = None
    """The environment variable holding `ws_url` (when it carries an API key)."""
    zmq_url: str = ""
    """core-rpc: the node's ZMQ `hashblock` publisher (`-zmqpubhashblock`), tcp://HOST:PORT;
    each notification wakes the chain's next cycle at once; polling goes on regardless.
    ZMQ is plaintext: loopback only unless `allow_insecure`."""
    headers_env: dict[str, str] = Field(default_factory=dict)
    """HTTP header → environment variable holding its value (API keys sent as headers)."""
    allow_insecure: bool = False
    """Allow plain http:// to a host that is not loopback."""
    timeout_seconds: float = Field(default=10.0, gt=0)
    deadline_seconds: float = Field(default=30.0, gt=0)
    """Overall limit for one request, however slowly the answer trickles in."""
    max_response_bytes: int = Field(default=64 * MIB, ge=1024)
    """A larger response body is a source error."""
    max_batch: int = Field(default=500, ge=1)
    concurrency: int = Field(default=16, ge=1, le=256)
    """Esplora: address requests in flight at once."""
    rate_limit: float | None = Field(default=None, gt=0)
    """Esplora: at most this many requests per second (a public instance's quota)."""
    _headers: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value) if value else value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value and not _SOURCE_NAME.fullmatch(value):
            raise ValueError("source name must be 1-64 letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        _resolve_url(self)
        _check_transport(self.url, self.allow_insecure)
        _resolve_ws_url(self)
        _check_zmq_url(self)
        self._headers = _resolve_headers(self.headers_env)
        if not self.name:
            object.__setattr__(self, "name", self.kind)
        return self

    @property
    def headers(self) -> dict[str, str]:
        """The extra HTTP headers (values from the environment: secrets, never logged)."""
        return dict(self._headers)

    @property
    def host(self) -> str:
        """The URL's host: with the name, the only part of a source shown anywhere."""
        return urlsplit(self.url).hostname or ""


def _resolve_headers(names: dict[str, str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for header, env in names.items():
        if not _HEADER_NAME.fullmatch(header):
            raise ValueError(f"headers_env: {header!r} is not an HTTP header name")
        if not _ENV_NAME.fullmatch(env):
            raise ValueError(f"headers_env.{header}: {env!r} is not an environment variable name")
        value = os.environ.get(env, "")
        if not value:
            raise ValueError(f"environment variable {env} (headers_env.{header}) is not set")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"environment variable {env} (headers_env.{header}) holds a "
                             "line break")
        headers[header] = value
    return headers


def _check_transport(url: str, allow_insecure: bool) -> None:
    """Refuse plain http:// to a host that is not loopback unless `allow_insecure`."""
    parts = urlsplit(url)
    if parts.scheme != "http" or allow_insecure or is_loopback(parts.hostname or ""):
        return
    raise ValueError(f"plain http:// to {parts.hostname}, which is not loopback: use https:// "
                     "or set allow_insecure = true")


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine (localhost or a loopback address)."""
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _resolve_url(model: SourceSettings | AlertSettings) -> None:
    """Take the URL from `url_env` when named; a URL is required either way."""
    if model.url_env:
        url = os.environ.get(model.url_env, "")
        if not url:
            raise ValueError(f"environment variable {model.url_env} (url_env) is not set")
        try:
            check_url(url)
        except ValueError as exc:
            raise ValueError(f"{model.url_env} (url_env): {exc}") from None
        object.__setattr__(model, "url", url)
    elif not model.url:
        raise ValueError("url (or url_env) is required")


def _resolve_ws_url(model: SourceSettings) -> None:
    """Take `ws_url` from `ws_url_env` when named; check it (ws:// or wss:// with a host;
    plain ws:// only to loopback unless `allow_insecure`; jsonrpc sources only)."""
    if model.ws_url_env:
        value = os.environ.get(model.ws_url_env, "")
        if not value:
            raise ValueError(f"environment variable {model.ws_url_env} (ws_url_env) is not set")
        object.__setattr__(model, "ws_url", value)
    if not model.ws_url:
        return
    if model.kind != "jsonrpc":
        raise ValueError("ws_url is for jsonrpc sources (newHeads subscriptions)")
    try:
        check_url(model.ws_url, ("ws", "wss"))
    except ValueError as exc:
        raise ValueError(f"ws_url: {exc}") from None
    parts = urlsplit(model.ws_url)
    if parts.scheme == "ws" and not model.allow_insecure and not is_loopback(parts.hostname or ""):
        raise ValueError(f"ws_url: plain ws:// to {parts.hostname}, which is not loopback: "
                         "use wss:// or set allow_insecure = true")


def _check_zmq_url(model: SourceSettings) -> None:
    """`zmq_url`: core-rpc sources only; tcp:// with a host and a port; loopback unless
    `allow_insecure` (nothing on it is trusted, but a stranger could wake cycles)."""
    if not model.zmq_url:
        return
    if model.kind != "core-rpc":
        raise ValueError("zmq_url is for core-rpc sources (hashblock notifications)")
    try:
        check_url(model.zmq_url, ("tcp", "tcp"))
        port = urlsplit(model.zmq_url).port
    except ValueError as exc:
        raise ValueError(f"zmq_url: {exc}") from None
    if port is None:
        raise ValueError("zmq_url: give the port (tcp://HOST:PORT)")
    host = urlsplit(model.zmq_url).hostname or ""
    if not model.allow_insecure and not is_loopback(host):
        raise ValueError(f"zmq_url: {host} is not loopback and ZMQ is plaintext: "
                         "set allow_insecure = true to use it")


def check_url(url: str, schemes: tuple[str, str] = ("http", "https")) -> str:
    """Return `url` if it is an absolute URL of one of `schemes` with a host; raise
    ValueError."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in schemes and bool(parts.hostname)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"bad URL (expected {schemes[0]}:// or {schemes[1]}:// with a host)")
    return url


class TokenSettings(_Frozen):
    symbol: str = Field(min_length=1, max_length=20)
    contract: str
    decimals: int = Field(ge=0, le=77)

    @field_validator("contract")
    @classmethod
    def _checksum(cls, value: str) -> str:
        try:
            return canonical_evm_address(value)
        except InvalidAddress as exc:
            raise ValueError(exc.user_message) from None


class ChainSettings(_Frozen):
    name: str
    family: Literal["evm", "utxo"]
    chain_id: int | None = Field(default=None, ge=1)
    network: str | None = None
    native_symbol: str | None = None
    native_decimals: int | None = Field(default=None, ge=0, le=77)
    confirmations: int = Field(default=12, ge=0)
    poll_seconds: float = Field(default=30.0, gt=0)
    freshness_seconds: float | None = Field(default=None, gt=0)
    max_lag_blocks: int = Field(default=3, ge=0)
    max_head_age_seconds: float | None = Field(default=None, gt=0)
    verify: int = Field(default=1, ge=1, le=2)
    max_future_seconds: float | None = Field(default=None, gt=0)
    """A block stamped further than this in the future is refused (default 300 s for
    evm chains; 7,200 s for utxo chains, whose consensus allows two hours)."""
    shards: int = Field(default=1, ge=1, le=64)
    """Wallet shards of this chain: on PostgreSQL, replicas lease them one by one
    (daemon/rules/shards.py)."""
    withdrawal_window_seconds: float = Field(default=86_400.0, gt=0)
    full_recheck_seconds: float = Field(default=3_600.0, ge=0)
    """Every wallet is re-read at least this often; between, a cycle reads only the
    wallets its scan saw touched, those with open findings and a rotating slice of the
    rest (daemon/rules/recheck.py). 0: every cycle reads every wallet."""
    ledger_max_age_seconds: float = Field(default=86_400.0, gt=0)
    """A ledger snapshot cut longer ago than this raises `ledger_stale` (SPEC §8)."""
    multicall: str | None = CANONICAL_MULTICALL3
    fee_model: FeeModel | None = None
    """How the chain charges a transaction's sender (evm): `ethereum`, `op-stack` or
    `arbitrum`; default by chain id (`fees`)."""
    jovian_time: int | None = Field(default=None, ge=0)
    """OP-stack: when the Jovian upgrade activated (unix seconds): the operator fee's
    formula changed then. Unset: a fee that differs between the formulas is refused."""
    sources: list[SourceSettings] = Field(min_length=1)
    tokens: list[TokenSettings] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("chain name must be lowercase letters, digits, '-' or '_'")
        return value

    @field_validator("multicall")
    @classmethod
    def _multicall(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        try:
            return canonical_evm_address(value)
        except InvalidAddress as exc:
            raise ValueError(exc.user_message) from None

    @model_validator(mode="after")
    def _family_rules(self) -> ChainSettings:
        if self.family == "evm":
            _check_evm_chain(self)
        else:
            _check_utxo_chain(self)
        symbols = [t.symbol for t in self.tokens] + [self.native_asset.symbol]
        dupes = sorted({s for s in symbols if symbols.count(s) > 1})
        if dupes:
            raise ValueError(f"duplicate asset symbol {dupes[0]!r}")
        if self.verify > len(self.sources):
            raise ValueError(f"verify = {self.verify} needs at least that many sources")
        _name_sources(self.sources)
        return self

    @property
    def native_asset(self) -> AssetRef:
        """The chain's native coin as an asset."""
        if self.family == "evm":
            return AssetRef(self.native_symbol or "ETH", self.native_decimals or 18)
        default = "LTC" if (self.network or "").startswith("litecoin") else "BTC"
        return AssetRef(self.native_symbol or default, 8 if self.native_decimals is None
                        else self.native_decimals)

    @property
    def assets(self) -> tuple[AssetRef, ...]:
        """The native coin first, then the configured tokens."""
        tokens = (AssetRef(t.symbol, t.decimals, Address(t.contract)) for t in self.tokens)
        return (self.native_asset, *tokens)

    @property
    def fees(self) -> FeeModel:
        """The fee model: the configured one, else `op-stack` for OP Mainnet, Base and
        their Sepolia testnets, `arbitrum` for Arbitrum One, Nova and Sepolia, else
        `ethereum`."""
        return self.fee_model or DEFAULT_FEE_MODELS.get(self.chain_id or 0, "ethereum")

    @property
    def jovian(self) -> int | None:
        """When Jovian activated (OP-stack): the configured time, else the known one of OP
        Mainnet and Base (DEFAULT_JOVIAN_TIMES), else None (unknown)."""
        if self.jovian_time is not None:
            return self.jovian_time
        return DEFAULT_JOVIAN_TIMES.get(self.chain_id or 0) if self.fees == "op-stack" else None

    @property
    def freshness(self) -> float:
        """Seconds after which a chain with no successful cycle counts as stale."""
        return self.freshness_seconds or max(3 * self.poll_seconds, 60.0)

    @property
    def head_age_limit(self) -> float:
        """Seconds after which a source's newest block is too old to use: the configured
        value, else 10 minutes for EVM chains and 3 hours for UTXO chains (Bitcoin
        blocks are sometimes an hour or more apart)."""
        return self.max_head_age_seconds or (600.0 if self.family == "evm" else 10_800.0)

    @property
    def future_limit(self) -> float:
        """Seconds a block's timestamp may be ahead of this machine's clock."""
        return self.max_future_seconds or (300.0 if self.family == "evm" else 7_200.0)


DEFAULT_FEE_MODELS: dict[int, FeeModel] = {
    10: "op-stack", 8453: "op-stack", 11155420: "op-stack", 84532: "op-stack",
    42161: "arbitrum", 42170: "arbitrum", 421614: "arbitrum",
}
"""Chain id → fee model, for chains configured without `fee_model`."""

DEFAULT_JOVIAN_TIMES: dict[int, int] = {10: 1_764_691_201, 8453: 1_764_691_201}
"""Jovian's activation on OP Mainnet and Base (2025-12-02 16:00:01 UTC; from Base's
BASE_MAINNET_JOVIAN_TIMESTAMP and op-reth's OP Mainnet fork list). Where the formulas
differ, a wrong time gives a wrong fee for blocks between the two times only, which
continuity then reports (never a silent pass); `jovian_time` overrides it."""


def _name_sources(sources: list[SourceSettings]) -> None:
    """Give each unnamed source its default name `KIND-N`; refuse duplicate names."""
    for index, source in enumerate(sources, start=1):
        if "name" not in source.model_fields_set:
            object.__setattr__(source, "name", f"{source.kind}-{index}")
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate source name {dupes[0]!r}")


def _check_evm_chain(chain: ChainSettings) -> None:
    if chain.chain_id is None:
        raise ValueError("an evm chain needs chain_id")
    if chain.network is not None:
        raise ValueError("network is for utxo chains; evm chains use chain_id")
    bad = [s.kind for s in chain.sources if s.kind != "jsonrpc"]
    if bad:
        raise ValueError(f"source kind {bad[0]!r} does not serve an evm chain (use jsonrpc)")


def _check_utxo_chain(chain: ChainSettings) -> None:
    if chain.network not in UTXO_NETWORKS:
        raise ValueError(f"unknown network {chain.network!r} (expected one of "
                         f"{', '.join(UTXO_NETWORKS)})")
    if chain.chain_id is not None:
        raise ValueError("chain_id is for evm chains; utxo chains use network")
    if chain.tokens:
        raise ValueError("utxo chains have no tokens")
    if chain.fee_model is not None or chain.jovian_time is not None:
        raise ValueError("fee_model and jovian_time are for evm chains")
    bad = [s.kind for s in chain.sources if s.kind == "jsonrpc"]
    if bad:
        raise ValueError("source kind 'jsonrpc' does not serve a utxo chain "
                         "(use esplora or core-rpc)")


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
        _resolve_url(self)
        _check_transport(self.url, self.allow_insecure)
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
