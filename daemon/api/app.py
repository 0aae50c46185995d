"""The HTTP API (SPEC §9) under /api/v1, on the same ASGI app as /healthz and /metrics.

Handlers only parse input, call the service (daemon/service.py, daemon/auth/service.py)
and shape output with the CLI's --json shapes (daemon/cli/present.py); authorization
happens in the service, so the CLI and the API cannot disagree. Described by the
OpenAPI document at /api/v1/openapi.json.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from daemon.api import exports
from daemon.api.security import (
    CSRF_HEADER,
    SESSION_COOKIE,
    BodyLimit,
    Caller,
    RateLimit,
    client_of,
    error,
    install_errors,
)
from daemon.auth.policy import Principal
from daemon.cli.present import audit_json, discrepancy_json, status_json
from daemon.errors import InputError
from daemon.rules.transit import adjustments
from daemon.runtime.health import (
    STATUS_CACHE_SECONDS,
    Liveness,
    StatusCache,
    Statuses,
    health_app,
)
from daemon.runtime.metrics import Metrics
from daemon.service import Service
from daemon.status import overall
from daemon.store.identity import SignedIn

if TYPE_CHECKING:
    from daemon.auth.oidc import OidcClient
    from daemon.store.repository import Heartbeat

PREFIX = "/api/v1"
MAX_PAGE = 1000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Login(_Body):
    name: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class Propose(_Body):
    reason: str = Field(max_length=40)
    note: str = Field(max_length=2000)


class Reject(_Body):
    note: str = Field(max_length=2000)


class Approve(_Body):
    pass


class NewUser(_Body):
    name: str = Field(min_length=1, max_length=128)
    roles: list[str] = Field(min_length=1, max_length=6)
    password: str | None = Field(default=None, max_length=1024)


class NewToken(_Body):
    user: str = Field(min_length=1, max_length=128)
    roles: list[str] | None = Field(default=None, max_length=6)
    expires_days: float | None = Field(default=None, gt=0, le=3650)


def _beat_at(beat: Heartbeat | None) -> datetime | None:
    return beat.beat_at if beat else None


def build_app(service: Service, metrics: Metrics, metrics_token: str | None = None,
              console: bool = True) -> FastAPI:
    """The whole ASGI app: /healthz, /metrics, the API and (unless `console` is off) the
    operator console's pages over `service`."""
    statuses = StatusCache(service.status, STATUS_CACHE_SECONDS)
    """/healthz and /api/v1/status ask the store at most once a second between them."""
    heartbeat = StatusCache(service.heartbeat, STATUS_CACHE_SECONDS)
    app = health_app(statuses.get, metrics, metrics_token,
                     liveness=Liveness(lambda: _beat_at(heartbeat.get())))
    install_errors(app)
    app.state.service = service

    @app.get(f"{PREFIX}/openapi.json", include_in_schema=False)
    def openapi(who: Caller) -> dict[str, Any]:
        """The OpenAPI document (for any signed-in role)."""
        service.identity.require(who, "read", "the API description")
        return app.openapi()

    oidc = None
    if service.settings.auth.oidc is not None:
        from daemon.auth.oidc import OidcClient

        oidc = OidcClient(service.settings.auth.oidc, service.store.engine, service.now)
    api = APIRouter(prefix=PREFIX)
    _auth_routes(api, service, oidc)
    _review_routes(api, service, statuses)
    _feed_routes(api, service)
    _admin_routes(api, service)
    exports.routes(api, service)
    app.include_router(api)
    if console:
        from daemon import __version__
        from daemon.web.app import install

        install(app, service, statuses, oidc, __version__)

    @app.middleware("http")
    async def _headers(request: Request,
                       call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'none'; frame-ancestors 'none'")
        return response

    app.add_middleware(BodyLimit)
    return app


def _auth_routes(api: APIRouter, service: Service, oidc: OidcClient | None) -> None:
    secure = service.settings.auth.secure_cookies

    def session_started(response: Response, signed: SignedIn,
                        samesite: Literal["strict", "lax"]) -> dict[str, Any]:
        """Set the session cookie; the answer carries the CSRF token to send back."""
        response.set_cookie(SESSION_COOKIE, signed.cookie, httponly=True, secure=secure,
                            samesite=samesite, path="/",
                            max_age=int(service.settings.auth.session_hours * 3600))
        return {"user": signed.principal.name, "roles": sorted(signed.principal.roles),
                "csrf": signed.csrf, "expires_at": signed.expires_at.isoformat()}

    limiter = RateLimit()

    @api.post("/auth/login", tags=["auth"], responses={429: {"description": "too many"}})
    def login(body: Login, request: Request, response: Response) -> Any:
        """Sign in with a local account; sets the session cookie, returns the CSRF token
        that every state-changing request with the cookie must send as X-CSRF-Token.
        At most 10 attempts a minute from one address (429), besides the per-account
        lockout."""
        wait = limiter.retry_after(request.client.host if request.client else "?")
        if wait is not None:
            return error(429, "too many sign-in attempts from this address; try later",
                         **{"Retry-After": str(max(1, int(wait) + 1))})
        signed = service.identity.sign_in(body.name, body.password, client_of(request))
        return session_started(response, signed, "strict")

    @api.get("/auth/oidc/login", tags=["auth"], status_code=302,
             response_class=RedirectResponse)
    def oidc_login() -> RedirectResponse:
        """Sign in through the identity provider (authorization code + PKCE): redirects
        the browser there; it comes back to /auth/oidc/callback."""
        if oidc is None:
            raise InputError("sign-in through an identity provider is not configured "
                             "([auth.oidc])")
        return RedirectResponse(oidc.authorization_url(), status_code=302)

    @api.get("/auth/oidc/callback", tags=["auth"])
    def oidc_callback(request: Request, response: Response,
                      code: Annotated[str | None, Query(max_length=2048)] = None,
                      state: Annotated[str | None, Query(max_length=100)] = None,
                      error: Annotated[str | None, Query(max_length=200)] = None
                      ) -> Any:
        """The identity provider's redirect: checks the code and the ID token, maps the
        claims to roles, sets the session cookie; returns the CSRF token (a sign-in
        started from the console goes back to the console instead)."""
        from daemon.auth.oidc import CONSOLE_STATE, check_callback

        if oidc is None:
            raise InputError("sign-in through an identity provider is not configured "
                             "([auth.oidc])")
        who = oidc.complete(*check_callback(code, state, error))
        signed = service.identity.oidc_sign_in(who.name, who.roles, client_of(request))
        if state is not None and state.startswith(CONSOLE_STATE):
            back = RedirectResponse("/", status_code=303)
            session_started(back, signed, "lax")
            return back
        return session_started(response, signed, "lax")  # the provider's redirect

    @api.post("/auth/logout", tags=["auth"])
    def logout(who: Caller, request: Request, response: Response) -> dict[str, Any]:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            service.identity.sign_out(cookie)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return {"user": who.name, "signed_out": cookie is not None}

    @api.get("/auth/me", tags=["auth"])
    def me(who: Caller) -> dict[str, Any]:
        return {"user": who.name, "roles": sorted(who.roles), "via": who.via,
                "csrf_header": CSRF_HEADER}


def _review_routes(api: APIRouter, service: Service, statuses: Statuses) -> None:
    def read(who: Principal, what: str) -> None:
        service.identity.require(who, "read", what)

    @api.get("/status", tags=["review"])
    def status(who: Caller) -> dict[str, Any]:
        """One signal per chain and overall (the CLI's `status --json`)."""
        read(who, "status")
        current = statuses.get()
        return status_json(current, overall(current), service.now(), service.heartbeat())

    @api.get("/chains", tags=["review"])
    def chains(who: Caller) -> list[dict[str, Any]]:
        read(who, "chains")
        return [{"name": c.name, "family": c.family, "confirmations": c.confirmations,
                 "verify": c.verify, "assets": [a.symbol for a in c.assets],
                 "sources": [s.name for s in c.sources]} for c in service.settings.chains]

    @api.get("/wallets", tags=["review"])
    def wallets(who: Caller, chain: Annotated[str, Query(max_length=64)],
                limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> list[dict[str, Any]]:
        """A chain's wallets, by address, a page at a time: structure, and per asset the
        booked total (the current ledger), the reconciling items' net (in transit) and
        the expected balance at the last cycle's block (SPEC §8), the newest balance read
        (null: unreadable), its block and time, and the difference (on-chain minus
        expected); each wallet's reconciling items."""
        read(who, "wallets")
        settings = service.settings.chain(chain)
        if settings is None:
            raise InputError(f"unknown chain {chain!r}")
        ledger = service.store.ledger_view(chain)
        seen = service.store.observed(chain)
        page = sorted(ledger.wallets)[offset:offset + limit]
        checkpoint = service.store.last_checkpoint(chain)
        items = service.store.reconciling_items(
            ledger, checkpoint.block_height, settings.native_asset.symbol, list(page)) \
            if checkpoint and page else []
        moving = adjustments(items)
        now = service.now()
        out = []
        for address in page:
            wallet = ledger.wallets[address]
            read_here = seen.get(address, {})
            rows = []
            for asset in sorted({*wallet.allocations, *read_here}):
                booked = wallet.ledger_total(asset)
                expected = booked + moving.get((address, asset), 0)
                amount, block, at = read_here.get(asset, (None, None, None))
                rows.append({"asset": asset, "booked": str(booked),
                             "in_transit": str(expected - booked), "expected": str(expected),
                             "onchain": None if amount is None else str(amount),
                             "block": block, "read_at": at,
                             "difference": None if amount is None else str(amount - expected)})
            out.append({"chain": chain, "address": address, "structure": wallet.structure,
                        "owners": sorted(wallet.all_owners), "assets": rows,
                        "reconciling_items": [i.as_json(now) for i in items
                                              if i.movement.address == address]})
        return out

    @api.get("/discrepancies", tags=["review"])
    def discrepancies(
        who: Caller,
        status: Literal["open", "proposed", "resolved", "self_cleared", "voided"] | None = None,
        chain: Annotated[str | None, Query(max_length=64)] = None,
        type: Annotated[str | None, Query(max_length=40)] = None,
        overdue: bool = False,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> list[dict[str, Any]]:
        """Discrepancies, oldest first, a page at a time (the CLI's `list --json`)."""
        read(who, "discrepancies")
        records = service.discrepancies(status=status, chain=chain, type_=type,
                                        overdue=overdue, limit=limit, offset=offset)
        now = service.now()
        depths = {c.name: c.confirmations for c in service.settings.chains}
        return [discrepancy_json(r, now, depths.get(r.chain)) for r in records]

    @api.get("/discrepancies/{id_}", tags=["review"])
    def discrepancy(who: Caller, id_: Annotated[int, PathParam(ge=1, le=2**62)]) -> dict[str, Any]:
        """One discrepancy with its history (the CLI's `show --json`)."""
        read(who, "a discrepancy")
        found = service.store.discrepancy(id_)
        if found is None:
            raise InputError(f"no discrepancy with id {id_}")
        record, history = found
        now = service.now()
        return {**discrepancy_json(record, now),
                "reopenings": service.store.reopenings(id_),
                "reconciling_items": [i.as_json(now) for i in service.items_for(record)],
                "history": [audit_json(e) for e in history]}

    def acted(id_: int, action: Any, who: Principal, reason: str | None = None,
              note: str | None = None) -> dict[str, Any]:
        record = service.act(id_, action, who, reason=reason, note=note)
        return discrepancy_json(record, service.now())

    @api.post("/discrepancies/{id_}/propose", tags=["workflow"])
    def propose(who: Caller, id_: Annotated[int, PathParam(ge=1, le=2**62)],
                body: Propose) -> dict[str, Any]:
        """A maker proposes a resolution: open → proposed."""
        return acted(id_, "propose", who, body.reason, body.note)

    @api.post("/discrepancies/{id_}/approve", tags=["workflow"])
    def approve(who: Caller, id_: Annotated[int, PathParam(ge=1, le=2**62)],
                body: Approve | None = None) -> dict[str, Any]:
        """A checker other than the proposer approves: proposed → resolved."""
        return acted(id_, "approve", who)

    @api.post("/discrepancies/{id_}/reject", tags=["workflow"])
    def reject(who: Caller, id_: Annotated[int, PathParam(ge=1, le=2**62)],
               body: Reject) -> dict[str, Any]:
        """A checker rejects a proposal: proposed → open."""
        return acted(id_, "reject", who, note=body.note)

    @api.get("/audit/verify", tags=["audit"])
    def audit_verify(who: Caller) -> dict[str, Any]:
        """Verify the audit log: hash chain, signed heads, each discrepancy replayed
        against the table (auditor)."""
        from daemon.audit import verify

        service.identity.require(who, "verify", "verifying the audit log")
        return verify(service).as_json()

    @api.get("/audit/head", tags=["audit"])
    def audit_head(who: Caller) -> dict[str, Any] | None:
        """The newest signed audit head (unsigned without daemon.audit_key)."""
        from daemon.store.heads import current

        read(who, "the audit head")
        head = service.sign_head() or current(service.store.engine)
        return head.as_json() if head else None


def _feed_routes(api: APIRouter, service: Service) -> None:
    async def pushed(request: Request, kind: str, fmt: str, dry_run: bool, who: Principal,
                     importer: Callable[..., Any], **options: Any) -> dict[str, Any]:
        body = await request.body()
        with tempfile.TemporaryDirectory(prefix="segwatch-push-") as folder:
            path = Path(folder) / f"{kind}-api.{fmt}"
            path.write_bytes(body)
            result = await run_in_threadpool(importer, path, dry_run=dry_run,
                                             actor=None if dry_run else who, **options)
        return {"dry_run": dry_run, "rows": len(result.rows), "snapshot": result.snapshot_id,
                **result.summary, "pushed_by": who.name}

    @api.get("/ledger/snapshots", tags=["feeds"])
    def snapshots(who: Caller) -> list[dict[str, Any]]:
        """Every ledger snapshot, newest first, with its importer."""
        service.identity.require(who, "read", "ledger snapshots")
        return service.store.snapshots()

    @api.get("/ledger/diff", tags=["feeds"])
    def ledger_diff(who: Caller,
                    before: Annotated[int, Query(alias="from", ge=1, le=2**62)],
                    after: Annotated[int, Query(alias="to", ge=1, le=2**62)]
                    ) -> list[dict[str, Any]]:
        """Allocations added, removed or changed from one snapshot to another."""
        from daemon.rules.snapshots import diff

        service.identity.require(who, "read", "a ledger diff")
        return [c.as_json() for c in diff(service.store.snapshot(before),
                                           service.store.snapshot(after))]

    @api.get("/withdrawals", tags=["feeds"])
    def withdrawals(who: Caller, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                    offset: Annotated[int, Query(ge=0, le=10**9)] = 0
                    ) -> list[dict[str, Any]]:
        """Approved withdrawals, newest import first."""
        service.identity.require(who, "read", "approved withdrawals")
        return service.store.withdrawals(limit, offset)

    @api.post("/ledger", tags=["feeds"])
    async def push_ledger(who: Caller, request: Request,
                          format: Literal["csv", "json"] = "csv",
                          as_of: datetime | None = None,
                          dry_run: bool = False) -> dict[str, Any]:
        """Push a sub-ledger snapshot (feeder; the body is the CSV or JSON file) cut at
        `as_of` (ISO-8601 with a timezone; default: now). All or nothing: every bad line
        is listed in error.lines."""
        service.identity.require(who, "read" if dry_run else "feed", "pushing a ledger")
        return await pushed(request, "ledger", format, dry_run, who, service.import_ledger,
                            as_of=as_of)

    @api.post("/withdrawals", tags=["feeds"])
    async def push_withdrawals(who: Caller, request: Request,
                               format: Literal["csv", "json"] = "csv",
                               dry_run: bool = False) -> dict[str, Any]:
        """Push approved withdrawals (feeder)."""
        service.identity.require(who, "read" if dry_run else "feed",
                                 "pushing withdrawals")
        return await pushed(request, "withdrawals", format, dry_run, who,
                            service.import_withdrawals)


def _admin_routes(api: APIRouter, service: Service) -> None:
    @api.get("/users", tags=["admin"])
    def users(who: Caller) -> list[dict[str, Any]]:
        return [u.as_json() for u in service.identity.users(who)]

    @api.post("/users", tags=["admin"], status_code=201)
    def add_user(who: Caller, body: NewUser) -> dict[str, Any]:
        service.identity.add_user(who, body.name, body.roles, body.password)
        return {"user": body.name, "roles": sorted(body.roles)}

    @api.get("/tokens", tags=["admin"])
    def tokens(who: Caller, user: Annotated[str | None, Query(max_length=128)] = None
               ) -> list[dict[str, Any]]:
        return [t.as_json() for t in service.identity.tokens(who, user)]

    @api.post("/tokens", tags=["admin"], status_code=201)
    def create_token(who: Caller, body: NewToken) -> dict[str, Any]:
        """Create a token (shown once in this answer, stored only hashed)."""
        token_id, token = service.identity.create_token(who, body.user, body.roles,
                                                        body.expires_days)
        return {"id": token_id, "user": body.user, "token": token}

    @api.delete("/tokens/{token_id}", tags=["admin"])
    def revoke_token(who: Caller, token_id: Annotated[str, PathParam(max_length=24)]
                     ) -> dict[str, Any]:
        return {"id": token_id, "user": service.identity.revoke_token(who, token_id),
                "revoked": True}
