"""Mount the console on the ASGI app: its pages at `/`, its stylesheet and icon, and
its errors as pages (the API's stay JSON).

A page without a session redirects to the sign-in page; a refusal (no role, a forged
form, a bad filter) is an error page with one line saying why, and the status code the
API would give.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from daemon.runtime.health import Statuses
from daemon.service import Service
from daemon.web import manage, signin, views
from daemon.web.pages import STATIC_TYPES, Pages
from daemon.web.session import FormRefused, SignInNeeded, login_url, viewer_of

API_PATHS = ("/api/", "/healthz", "/metrics")


def is_console(request: Request) -> bool:
    """Whether a request is for a console page (answered in HTML, not JSON)."""
    return not request.url.path.startswith(API_PATHS)


def install(app: FastAPI, service: Service, statuses: Statuses, oidc: Any,
            version: str) -> Pages:
    """Add the console's routes to `app`; return its renderer (for error pages)."""
    pages = Pages(service.settings, version)
    router = APIRouter(include_in_schema=False)
    signin.routes(router, service, pages, oidc)
    views.routes(router, service, pages, statuses)
    manage.routes(router, service, pages)

    for name in STATIC_TYPES:
        def asset(name: str = name) -> Response:
            return pages.asset(name)
        router.add_api_route(f"/static/{name}", asset, methods=["GET"])
    router.add_api_route("/favicon.ico", lambda: pages.asset("favicon.svg"), methods=["GET"])
    app.include_router(router)

    @app.exception_handler(SignInNeeded)
    async def _sign_in(_request: Request, exc: SignInNeeded) -> Response:
        return RedirectResponse(login_url(exc.back_to, exc.expired), status_code=303)

    @app.exception_handler(FormRefused)
    async def _refused(request: Request, exc: FormRefused) -> Response:
        return page_error(request, 403, exc.user_message)

    def page_error(request: Request, status: int, message: str,
                   lines: list[str] | None = None) -> Response:
        try:
            viewer = viewer_of(request)
        except SignInNeeded:
            viewer = None
        return pages.error(request, status, message, lines, viewer)

    app.state.page_error = page_error
    return pages
