"""Rendering: one Jinja environment (autoescape on, undefined names are errors), the
console's strict Content-Security-Policy, its stylesheet, and error pages.

The pages load nothing from elsewhere: the stylesheet, the icon and one small script
(the dashboard's refresh, which the person can switch off) come from this server, and
every page works without the script.
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined

from daemon.inputs.config import Settings
from daemon.web import display
from daemon.web.session import CSRF_FIELD, Viewer

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
"""Scripts, styles and images from this server only (one script: the dashboard's
refresh switch), no inline code, forms post here only, never framed."""
HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "same-origin",
           "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
STATIC_TYPES = {"console.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml",
                "console.js": "text/javascript; charset=utf-8"}


class Pages:
    """Renders the console's templates with the helpers every page uses."""

    def __init__(self, settings: Settings, version: str) -> None:
        self.settings = settings
        self.env = Environment(loader=PackageLoader("daemon.web", "templates"),
                               autoescape=True, undefined=StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True)
        units = display.Units.of(settings)
        clock = display.Clock(ZoneInfo(settings.daemon.timezone))
        self.env.globals.update(
            amount=units.amount, field=units.field, local=clock.local, utc=clock.utc,
            duration=display.duration,
            untrusted=display.untrusted, short=display.short, query=display.query,
            join=display.join, timezone=settings.daemon.timezone, version=version,
            csrf_field=CSRF_FIELD)
        self.static = {name: resources.files("daemon.web").joinpath("static", name)
                       .read_bytes() for name in STATIC_TYPES}

    def render(self, request: Request, template: str, viewer: Viewer | None,
               status_code: int = 200, **context: Any) -> HTMLResponse:
        """A page: `template` with `context`, the signed-in `viewer` and their CSRF
        token, under the console's security headers."""
        html = self.env.get_template(template).render(
            viewer=viewer, path=request.url.path, **context)
        return HTMLResponse(html, status_code=status_code, headers=HEADERS)

    def error(self, request: Request, status_code: int, message: str,
              lines: list[str] | None = None, viewer: Viewer | None = None) -> HTMLResponse:
        """An error page that says what went wrong in one line (and every bad line)."""
        return self.render(request, "error.html", viewer, status_code=status_code,
                           message=message, lines=(lines or [])[:1000])

    def asset(self, name: str) -> Response:
        """The stylesheet or the icon (cached for an hour; they change with a release)."""
        return Response(self.static[name], media_type=STATIC_TYPES[name],
                        headers={"Cache-Control": "public, max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})
