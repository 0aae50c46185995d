"""Who is looking at the console: the session cookie of a signed-in person (the same
session the API accepts), and the CSRF token every form posts back.

A console page without a valid session redirects to the sign-in page (saying so when
the session expired). Every POST carries the session's CSRF token as the form field
`csrf` and, when the browser sends an Origin header, comes from this origin; otherwise it
is refused before any handler runs. The sign-in form, which has no session yet, carries a
random value that must match the `segwatch_login` cookie set with the form (double
submit), so that another site cannot sign a visitor in as someone else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from starlette.datastructures import FormData

from chains.errors import SegwatchError
from daemon.auth.policy import Principal
from daemon.auth.secrets import same
from daemon.errors import Unauthenticated

SESSION_COOKIE = "segwatch_session"
LOGIN_COOKIE = "segwatch_login"
CSRF_FIELD = "csrf"
MAX_FORM_FIELDS = 64


class SignInNeeded(Exception):
    """The console needs a (new) session: answered with a redirect to /login."""

    def __init__(self, back_to: str, expired: bool) -> None:
        super().__init__(back_to)
        self.back_to, self.expired = back_to, expired


class FormRefused(SegwatchError):
    """A console POST without its CSRF token, or from another origin (403)."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in person: their principal and their session's CSRF token."""

    principal: Principal
    csrf: str

    @property
    def name(self) -> str:
        return self.principal.name

    def may(self, permission: str) -> bool:
        return self.principal.may(permission)  # type: ignore[arg-type]


def back_to(request: Request) -> str:
    """Where to return after signing in: this path and query (local only)."""
    path = request.url.path
    if request.method != "GET":
        return "/"
    return path + (f"?{request.url.query}" if request.url.query else "")


def local_target(target: str | None) -> str:
    """PURE: `target` if it is a path on this site, else "/" (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or \
            "\\" in target or len(target) > 500:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def login_url(target: str, expired: bool) -> str:
    return f"/login?next={quote(target, safe='/')}" + ("&expired=1" if expired else "")


def viewer_of(request: Request) -> Viewer:
    """The signed-in person of a request. Raises SignInNeeded."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise SignInNeeded(back_to(request), expired=False)
    service = request.app.state.service
    try:
        principal, csrf = service.identity.from_session(cookie[:200])
    except Unauthenticated:
        raise SignInNeeded(back_to(request), expired=True) from None
    return Viewer(principal, csrf)


SignedInViewer = Annotated[Viewer, Depends(viewer_of)]
"""The signed-in person of a console page (else a redirect to the sign-in page)."""


def same_origin(request: Request) -> bool:
    """Whether the request's Origin header (when sent) names this site."""
    origin = request.headers.get("origin")
    if origin is None:  # a browser sends it on every cross-site POST
        return True
    host = request.headers.get("host", "")
    parts = urlsplit(origin)
    return parts.netloc == host and parts.scheme in ("http", "https")


async def posted(request: Request, viewer: Viewer) -> FormData:
    """The form of a console POST, after its CSRF token and origin are checked."""
    form = await request.form(max_fields=MAX_FORM_FIELDS)
    token = form.get(CSRF_FIELD)
    if not isinstance(token, str) or not same(token[:100], viewer.csrf):
        raise FormRefused("this form's CSRF token is missing or wrong: reload the page "
                          "and try again")
    if not same_origin(request):
        raise FormRefused("this form was posted from another site")
    return form


async def _form_viewer(request: Request) -> tuple[Viewer, FormData]:
    viewer = viewer_of(request)
    return viewer, await posted(request, viewer)


PostedForm = Annotated[tuple[Viewer, FormData], Depends(_form_viewer)]
"""A console POST: the signed-in person and their form (CSRF and origin checked)."""


def text(form: FormData, name: str, limit: int) -> str:
    """A text field of a form, bounded ("" when absent or a file)."""
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""
