"""Who is calling: a bearer token or a session cookie (with its CSRF token on every
state-changing request), as a FastAPI dependency; errors as JSON; bounded bodies.

Every route but `/healthz` (and `/metrics` without a token configured) needs a
principal: 401 without credentials, 403 without the role (daemon/auth/policy.py).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from chains.errors import SegwatchError, SourceUnavailable
from daemon.auth.policy import Principal
from daemon.auth.secrets import same
from daemon.errors import Forbidden, InputError, Unauthenticated
from daemon.service import Service

SESSION_COOKIE = "segwatch_session"
CSRF_HEADER = "x-csrf-token"
MAX_BODY_BYTES = 32 * 1024 * 1024
"""The largest request body (a ledger or withdrawals file pushed by a feeder)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def error(status: int, message: str, **headers: str) -> JSONResponse:
    """The one error shape of the API: {"error": {"code", "message"}}."""
    return JSONResponse({"error": {"code": status, "message": message}}, status_code=status,
                        headers=headers or None)


def client_of(request: Request) -> str:
    """How a caller is named in the audit log (address and user agent, bounded)."""
    host = request.client.host if request.client else "?"
    agent = request.headers.get("user-agent", "")[:80]
    return f"{host} {agent}".strip()[:200]


def principal_of(service: Service, request: Request) -> Principal:
    """The caller's principal. Raises Unauthenticated (no, bad, expired or revoked
    credentials; a cookie request that changes state without its CSRF token)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Authorization must be 'Bearer TOKEN'")
        return service.identity.from_token(token.strip(), client_of(request))
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:
        raise Unauthenticated("credentials are required (Authorization: Bearer TOKEN, or "
                              "sign in)")
    principal, csrf = service.identity.from_session(cookie)
    if request.method not in SAFE_METHODS and \
            not same(request.headers.get(CSRF_HEADER, "")[:100], csrf):
        raise Unauthenticated(f"a session request that changes state needs its "
                              f"{CSRF_HEADER} header (CSRF protection)")
    return principal


def _caller(request: Request) -> Principal:
    return principal_of(request.app.state.service, request)


Caller = Annotated[Principal, Depends(_caller)]
"""The authenticated principal of a request (401 without valid credentials)."""


class RateLimit:
    """At most `attempts` calls per `seconds` per client address (sign-in: slows a
    password guesser across accounts, where the per-account lockout cannot). In memory,
    per process; bounded to `clients` addresses (the oldest forgotten first)."""

    def __init__(self, attempts: int = 10, seconds: float = 60.0, clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts, self.seconds, self.clients, self._clock = attempts, seconds, clients, clock
        self._seen: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float | None:
        """Record an attempt; return seconds to wait when over the limit, else None."""
        now = self._clock()
        with self._lock:
            times = [t for t in self._seen.pop(client, []) if now - t < self.seconds]
            if len(times) >= self.attempts:
                self._seen[client] = times
                return self.seconds - (now - times[0])
            times.append(now)
            self._seen[client] = times
            while len(self._seen) > self.clients:
                self._seen.popitem(last=False)
            return None


class BodyLimit:
    """ASGI middleware: a request whose body exceeds `limit` bytes is answered 413 before
    any handler reads it (by Content-Length, or while it streams in)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await error(413, f"request body larger than {self.limit} bytes")(scope, receive,
                                                                              send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, bounded, send)
        except _TooLarge:
            await error(413, f"request body larger than {self.limit} bytes")(scope, receive,
                                                                              send)


class _TooLarge(Exception):
    pass


NOT_PAGES = ("/api/", "/healthz", "/metrics")
"""Paths answered in JSON; every other path is a console page (daemon/web/)."""


def _answer(request: Request, status: int, message: str, lines: list[str] | None = None,
            **headers: str) -> Response:
    """An error as JSON for the API, or as the console's error page (app.state.page_error,
    when the console is installed) for a page."""
    page_error = getattr(request.app.state, "page_error", None)
    if page_error is not None and not request.url.path.startswith(NOT_PAGES):
        if status == 401:
            return RedirectResponse("/login", status_code=303)
        response: Response = page_error(request, status, message, lines)
        return response
    if lines is not None:
        return JSONResponse({"error": {"code": status, "message": message,
                                       "lines": lines[:1000]}}, status_code=status)
    return error(status, message, **headers)


def install_errors(app: FastAPI) -> None:
    """Map segwatch's errors to JSON answers (or console pages): 401, 403, 404, 400, 422,
    503; a bug is a 500 naming its type, never a traceback."""

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(request: Request, exc: Unauthenticated) -> Response:
        return _answer(request, 401, exc.user_message, None, **{"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        return _answer(request, 403, exc.user_message)

    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError) -> Response:
        status = 404 if exc.user_message.startswith("no discrepancy with id") else 400
        if len(exc.lines) > 1 or exc.lines != [exc.user_message]:
            return _answer(request, status, exc.user_message, exc.lines)
        return _answer(request, status, exc.user_message)

    @app.exception_handler(SourceUnavailable)
    async def _source(request: Request, exc: SourceUnavailable) -> Response:
        return _answer(request, 503, exc.user_message)

    @app.exception_handler(SegwatchError)
    async def _segwatch(request: Request, exc: SegwatchError) -> Response:
        return _answer(request, 400, exc.user_message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return _answer(request, 422, f"{where}: {first.get('msg', 'invalid request')}"[:300])

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        return _answer(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        return _answer(request, 500, f"internal error ({type(exc).__name__})")
