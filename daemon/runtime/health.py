"""`/healthz` and `/metrics` on the daemon's listen address (default loopback), served by
an ASGI app (FastAPI) on uvicorn in a thread of its own; it never touches a chain source.

`/healthz` answers 200 with each chain's signal as JSON when every chain had a
successful cycle within its freshness SLA and every balance was vouched for, else 503
naming the stale and the unverified chains; either way it says this process's version,
start and uptime, and the newest daemon heartbeat in the store (`Liveness`). `/metrics`
is the Prometheus text format, behind a bearer token when `daemon.metrics_token_env` is
set. Anything else is a JSON 404/405.

Hostile or careless clients cannot starve it:
- a connection must deliver a complete request within REQUEST_SECONDS of opening (a
  slow-loris client dripping its headers is closed), idle keep-alive connections close
  after KEEP_ALIVE_SECONDS, headers are capped at MAX_HEADER_BYTES;
- the event loop holds connections without a thread each; past MAX_CONNECTIONS uvicorn
  answers 503 at once;
- the store is asked for the chains' statuses at most once per STATUS_CACHE_SECONDS, by
  one thread at a time, however many clients ask.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import structlog
import uvicorn
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from daemon import __version__
from daemon.errors import ConfigError
from daemon.inputs.source_settings import is_loopback
from daemon.runtime.metrics import Metrics
from daemon.status import ChainStatus

log = structlog.get_logger("segwatch")

REQUEST_SECONDS = 5.0
KEEP_ALIVE_SECONDS = 5
MAX_HEADER_BYTES = 16 * 1024
MAX_CONNECTIONS = 512
STATUS_CACHE_SECONDS = 1.0


T = TypeVar("T")


@dataclass(frozen=True)
class Liveness:
    """This process (version, start) and the newest daemon heartbeat in the store."""

    heartbeat: Callable[[], datetime | None] = lambda: None
    """When a daemon last said it was alive (`segwatch run` beats every HEARTBEAT_SECONDS
    in the store), or None."""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.monotonic)

    def as_json(self) -> dict[str, Any]:
        """`version`, `started_at`, `uptime_seconds`, `heartbeat_at`, `heartbeat_age_seconds`
        (None without a heartbeat); a store that cannot be read leaves the heartbeat None."""
        try:
            beat = self.heartbeat()
        except Exception:  # the chains' part of /healthz says the store is down
            beat = None
        now = datetime.now(UTC)
        return {"version": __version__, "started_at": self.started_at.isoformat(),
                "uptime_seconds": round(time.monotonic() - self.started, 1),
                "heartbeat_at": beat.isoformat() if beat else None,
                "heartbeat_age_seconds": round((now - beat).total_seconds(), 1) if beat
                else None}


def health_document(statuses: list[ChainStatus]) -> tuple[int, dict[str, Any]]:
    """Return the HTTP status and JSON body of `/healthz` for the chains' statuses: 503
    while a chain is stale (no recent good cycle) or unverified (a balance or the scan
    could not be read or verified)."""
    stale = [s.chain for s in statuses if not s.fresh]
    unverified = [s.chain for s in statuses if s.fresh and s.status == "unverified"]
    chains = {s.chain: {"fresh": s.fresh, "status": s.status,
                        "last_cycle_at": s.last_cycle_at.isoformat() if s.last_cycle_at
                        else None,
                        "block": s.block, "open_findings": s.open_findings,
                        "last_error": s.last_error} for s in statuses}
    overall = "stale" if stale else "unverified" if unverified else "ok"
    body = {"status": overall, "stale": stale, "unverified": unverified, "chains": chains}
    return (503 if stale or unverified else 200), body


class StatusCache(Generic[T]):
    """`statuses()` at most once per `ttl` seconds, computed by one caller at a time
    (the others wait for that answer); an error is cached like an answer."""

    def __init__(self, statuses: Callable[[], T], ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._statuses, self._ttl, self._clock = statuses, ttl, clock
        self._lock = threading.Lock()
        self._value: tuple[float, T | Exception] | None = None

    def get(self) -> T:
        """The chains' statuses, at most `ttl` seconds old. Raises what `statuses` raised."""
        with self._lock:
            if self._value is None or self._clock() - self._value[0] >= self._ttl:
                try:
                    result: T | Exception = self._statuses()
                except Exception as exc:  # the store is down: cached, then re-raised
                    result = exc
                self._value = (self._clock(), result)
            value = self._value[1]
        if isinstance(value, Exception):
            raise value
        return value


Statuses = StatusCache[list[ChainStatus]]
"""The chains' statuses, cached (what /healthz, the API and the console share)."""


def health_app(statuses: Callable[[], list[ChainStatus]], metrics: Metrics,
               token: str | None = None, openapi_url: str | None = None,
               liveness: Liveness | None = None) -> FastAPI:
    """The ASGI app serving `/healthz` and `/metrics` (handlers run in uvicorn's bounded
    thread pool; the status cache spares the store); daemon/api adds the API to it."""
    app = FastAPI(title="segwatch", docs_url=None, redoc_url=None, openapi_url=openapi_url)
    cache = StatusCache(statuses, STATUS_CACHE_SECONDS)
    alive = liveness or Liveness()

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        try:
            status, body = health_document(cache.get())
        except Exception as exc:  # the store is down: unhealthy, say why
            status, body = 503, {"status": "error", "error": type(exc).__name__}
        return JSONResponse({**body, **alive.as_json()}, status_code=status)

    @app.get("/metrics", include_in_schema=False)
    def metrics_text(authorization: str | None = Header(default=None)) -> Response:
        if token is not None and not _bearer_matches(authorization, token):
            return JSONResponse({"error": {"code": 401, "message": "a valid bearer token "
                                           "is required for /metrics"}},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": {"code": exc.status_code, "message": str(exc.detail)}},
                            status_code=exc.status_code)

    return app


def _bearer_matches(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


class _RequestDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus a deadline for the first complete request of a
    connection (uvicorn itself waits for ever for a client that never finishes one)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = self.loop.call_later(
            REQUEST_SECONDS, self._expire)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and self._deadline is not None:  # a request arrived
            self._deadline.cancel()
            self._deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def _expire(self) -> None:
        self._deadline = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()


class HealthServer:
    """Serves `/healthz` from `statuses()` and `/metrics` from `metrics` on `listen` (or
    `app`, the whole API, which includes both)."""

    def __init__(self, listen: str, statuses: Callable[[], list[ChainStatus]],
                 metrics: Metrics, token: str | None = None, app: FastAPI | None = None
                 ) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        self._socket = _bind(host, int(port), listen)
        if app is not None and not is_loopback(host):
            log.warning("api_plain_http", listen=listen,
                        hint="tokens, passwords and session cookies cross the network in "
                             "clear: serve the API behind a TLS-terminating proxy")
        if metrics_exposed(host, token):
            log.warning("metrics_exposed", listen=listen,
                        hint="/metrics answers anyone who can reach this address; set "
                             "daemon.metrics_token_env")
        config = uvicorn.Config(app or health_app(statuses, metrics, token),
                                log_level="warning",
                                access_log=False, lifespan="off", http=_RequestDeadline,
                                timeout_keep_alive=KEEP_ALIVE_SECONDS,
                                limit_concurrency=MAX_CONNECTIONS,
                                h11_max_incomplete_event_size=MAX_HEADER_BYTES)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]}, name="health",
                                        daemon=True)

    @property
    def address(self) -> str:
        """HOST:PORT actually bound (useful with port 0)."""
        host, port = self._socket.getsockname()[:2]
        return f"{host!s}:{port}"

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()


def metrics_exposed(host: str, token: str | None) -> bool:
    """Whether `/metrics` would answer anyone on the network: a listen host that is not
    loopback and no token. Allowed, but worth a warning at start."""
    return token is None and not is_loopback(host)


def _bind(host: str, port: int, listen: str) -> socket.socket:
    """A listening socket on host:port. Raises ConfigError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio then sets TCP_NODELAY on every accepted connection (it
    # checks the protocol), so a response written as headers then body is not held back
    # by Nagle until the client's delayed ACK (~40 ms a request)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"daemon.listen: cannot listen on {listen}: "
                          f"{exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
