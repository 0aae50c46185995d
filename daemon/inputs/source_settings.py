"""A chain's sources in the settings: where each is read (URLs, from the file or the
environment), how (limits, headers holding API keys) and the transport checks (TLS off
loopback unless allowed; WebSocket and ZMQ head notifications)."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Literal, Protocol, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~\-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
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
        resolve_url(self)
        check_transport(self.url, self.allow_insecure)
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


def check_transport(url: str, allow_insecure: bool) -> None:
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


class _FromUrl(Protocol):
    """A model with a URL that may come from an environment variable (a source, an alert
    sink)."""

    @property
    def url(self) -> str: ...

    @property
    def url_env(self) -> str | None: ...


def resolve_url(model: _FromUrl) -> None:
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
