"""Signing in to the console and out again: a local account's form (rate-limited, the
per-account lockout of the identity service besides), or the firm's identity provider
(authorization code + PKCE; its callback, under /api/v1, sends a console sign-in back
here). The session cookie is the API's; it expires with the session (auth.session_hours).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from daemon.api.security import RateLimit, client_of
from daemon.auth.secrets import new_secret, same
from daemon.errors import InputError, Unauthenticated
from daemon.service import Service
from daemon.store.identity import SignedIn
from daemon.web.pages import Pages
from daemon.web.session import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    FormRefused,
    SignInNeeded,
    local_target,
    posted,
    text,
    viewer_of,
)

LOGIN_SECONDS = 600


def start_session(response: Response, service: Service, signed: SignedIn,
                  samesite: Any) -> Response:
    """Set the session cookie on `response`."""
    response.set_cookie(SESSION_COOKIE, signed.cookie, httponly=True,
                        secure=service.settings.auth.secure_cookies, samesite=samesite,
                        path="/", max_age=int(service.settings.auth.session_hours * 3600))
    return response


def routes(router: APIRouter, service: Service, pages: Pages, oidc: Any) -> None:
    """Add /login, /login/oidc and /logout to `router`."""
    limiter = RateLimit()
    secure = service.settings.auth.secure_cookies

    def form(request: Request, status_code: int = 200, message: str | None = None,
             name: str = "", target: str = "/", expired: bool = False) -> Response:
        nonce = new_secret()
        response = pages.render(request, "login.html", None, status_code=status_code,
                                message=message, name=name, next=target, nonce=nonce,
                                expired=expired, oidc=oidc is not None)
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, secure=secure,
                            samesite="strict", path="/login", max_age=LOGIN_SECONDS)
        return response

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request,
                   next: Annotated[str, Query(max_length=500)] = "/",
                   expired: Annotated[str, Query(max_length=3)] = "",
                   signed_out: Annotated[str, Query(max_length=3)] = "") -> Response:
        message = "You are signed out." if signed_out else None
        return form(request, message=message, target=local_target(next),
                    expired=bool(expired))

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        fields = await request.form(max_fields=8)
        target = local_target(text(fields, "next", 500))
        name = text(fields, "name", 128)
        if not same(text(fields, "nonce", 100), request.cookies.get(LOGIN_COOKIE, "")[:100]) \
                or not request.cookies.get(LOGIN_COOKIE):
            return form(request, 403, "The sign-in form expired or came from elsewhere: "
                        "try again.", name, target)
        wait = limiter.retry_after(request.client.host if request.client else "?")
        if wait is not None:
            return form(request, 429, "Too many sign-in attempts from this address; try "
                        "again in a minute.", name, target)
        try:
            signed = service.identity.sign_in(name, text(fields, "password", 1024),
                                              client_of(request))
        except Unauthenticated as exc:
            return form(request, 401, exc.user_message, name, target)
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return start_session(response, service, signed, "strict")

    @router.get("/login/oidc")
    def login_oidc() -> Response:
        if oidc is None:
            raise InputError("sign-in through an identity provider is not configured")
        return RedirectResponse(oidc.authorization_url(console=True), status_code=303)

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            try:
                await posted(request, viewer_of(request))
            except (SignInNeeded, FormRefused):  # expired, or forged: the cookie goes
                pass
            else:
                service.identity.sign_out(cookie[:200])
        response = RedirectResponse("/login?signed_out=1", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

