"""The console's feed, export and admin pages (SPEC §10): ledger snapshots, their diff
and uploads of ledger and withdrawal files (every bad line shown); export packages to
create, download and verify; users, roles and tokens. Each handler parses the form, calls
the service, renders; the service authorizes.
"""

from __future__ import annotations

import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from daemon.auth.policy import ROLES
from daemon.errors import InputError
from daemon.export import packages
from daemon.service import Service
from daemon.web.pages import Pages
from daemon.web.session import PostedForm, SignedInViewer, Viewer, text

MAX_UPLOAD = 32 * 1024 * 1024
SNAPSHOTS_SHOWN = 100
MAX_CHANGES = 2000
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def routes(router: APIRouter, service: Service, pages: Pages) -> None:
    """Add the ledger, export and admin pages to `router`."""

    def ledger_page(request: Request, viewer: Viewer, status_code: int = 200,
                    **shown: Any) -> Response:
        snapshots = service.store.snapshots()
        context: dict[str, Any] = {"before": None, "after": None, "changes": None,
                                   "changed": 0, "result": None, "lines": [], **shown}
        return pages.render(request, "ledger.html", viewer, status_code=status_code,
                            snapshots=snapshots[:SNAPSHOTS_SHOWN], total=len(snapshots),
                            **context)

    @router.get("/ledger", response_class=HTMLResponse)
    def ledger(request: Request, viewer: SignedInViewer,
               before: Annotated[int | None, Query(alias="from", ge=1, le=2**62)] = None,
               after: Annotated[int | None, Query(alias="to", ge=1, le=2**62)] = None
               ) -> Response:
        from daemon.rules.snapshots import diff

        service.identity.require(viewer.principal, "read", "ledger snapshots")
        if before is None or after is None:
            return ledger_page(request, viewer)
        changes = diff(service.store.snapshot(before), service.store.snapshot(after))
        return ledger_page(request, viewer, before=before, after=after,
                           changes=changes[:MAX_CHANGES], changed=len(changes))

    @router.post("/ledger/upload", response_class=HTMLResponse)
    async def upload(request: Request, form: PostedForm) -> Response:
        viewer, fields = form
        kind = text(fields, "kind", 20)
        if kind not in ("ledger", "withdrawals"):
            raise InputError("choose what the file is: a ledger or approved withdrawals")
        dry_run = text(fields, "dry_run", 3) == "1"
        service.identity.require(viewer.principal, "read" if dry_run else "feed",
                                 f"uploading {kind}")
        filename, body = await _uploaded(fields, "choose a file to upload")
        as_of = _cut_off(text(fields, "as_of", 40), service.settings.daemon.timezone) \
            if kind == "ledger" else None
        name = _file_name(filename, kind)
        try:
            result = await run_in_threadpool(_import, service, kind, name, body, dry_run,
                                             viewer.principal, as_of)
        except InputError as exc:  # every bad line, on the page with the form
            return ledger_page(request, viewer, 400, lines=exc.lines[:1000],
                               message=exc.user_message, kind=kind)
        return ledger_page(request, viewer, result=result, kind=kind, dry_run=dry_run)

    @router.get("/exports", response_class=HTMLResponse)
    def exports(request: Request, viewer: SignedInViewer) -> Response:
        kept = packages.kept(service, viewer.principal) if viewer.may("export") else []
        return pages.render(request, "exports.html", viewer, kept=kept, created=None,
                            verdict=None, can_sign=service.settings.export.sign_key
                            is not None)

    @router.post("/exports", response_class=HTMLResponse)
    async def create_export(request: Request, form: PostedForm) -> Response:
        viewer, fields = form
        as_of = _cut_off(text(fields, "as_of", 40), service.settings.daemon.timezone)
        created = await run_in_threadpool(packages.create, service, viewer.principal, as_of,
                                          text(fields, "reveal_owners", 3) == "1")
        return pages.render(request, "exports.html", viewer,
                            kept=packages.kept(service, viewer.principal), created=created,
                            verdict=None, can_sign=True)

    @router.post("/exports/verify", response_class=HTMLResponse)
    async def verify_export(request: Request, form: PostedForm) -> Response:
        viewer, fields = form
        service.identity.require(viewer.principal, "verify", "verifying a package")
        filename, body = await _uploaded(fields, "choose a package (.zip) to verify")
        verdict = await run_in_threadpool(packages.verify_upload, service, viewer.principal,
                                          body)
        kept = packages.kept(service, viewer.principal) if viewer.may("export") else []
        return pages.render(request, "exports.html", viewer, kept=kept, created=None,
                            verdict={**verdict, "file": filename[:100]},
                            can_sign=service.settings.export.sign_key is not None)

    @router.get("/admin", response_class=HTMLResponse)
    def admin(request: Request, viewer: SignedInViewer) -> Response:
        return _admin_page(request, viewer)

    def _admin_page(request: Request, viewer: Any, status_code: int = 200,
                    **extra: Any) -> Response:
        users = service.identity.users(viewer.principal)
        return pages.render(request, "admin.html", viewer, status_code=status_code,
                            users=users, tokens=service.identity.tokens(viewer.principal),
                            roles=ROLES, now=service.now(),
                            **{"created": None, "message": None, **extra})

    @router.post("/admin/users", response_class=HTMLResponse)
    async def add_user(request: Request, form: PostedForm) -> Response:
        viewer, fields = form
        name = text(fields, "name", 128)
        roles = [r for r in fields.getlist("roles") if isinstance(r, str)]
        password = text(fields, "password", 1024) or None
        await run_in_threadpool(service.identity.add_user, viewer.principal, name, roles,
                                password)
        return RedirectResponse("/admin?done=user", status_code=303)

    @router.post("/admin/roles", response_class=HTMLResponse)
    async def set_roles(request: Request, form: PostedForm) -> Response:
        viewer, fields = form
        roles = [r for r in fields.getlist("roles") if isinstance(r, str)]
        await run_in_threadpool(service.identity.set_roles, viewer.principal,
                                text(fields, "name", 128), roles)
        return RedirectResponse("/admin?done=roles", status_code=303)

    @router.post("/admin/tokens", response_class=HTMLResponse)
    async def create_token(request: Request, form: PostedForm) -> Response:
        viewer, fields = form
        roles = [r for r in fields.getlist("roles") if isinstance(r, str)] or None
        days_text = text(fields, "expires_days", 10).strip()
        try:
            days = float(days_text) if days_text else None
        except ValueError:
            raise InputError("expires: a number of days") from None
        user = text(fields, "user", 128)
        token_id, token = await run_in_threadpool(service.identity.create_token,
                                                  viewer.principal, user, roles, days)
        return _admin_page(request, viewer, created={"id": token_id, "user": user,
                                                     "token": token})

    @router.post("/admin/tokens/{token_id}/revoke", response_class=HTMLResponse)
    async def revoke_token(request: Request, form: PostedForm, token_id: str) -> Response:
        viewer, _ = form
        await run_in_threadpool(service.identity.revoke_token, viewer.principal,
                                token_id[:24])
        return RedirectResponse("/admin?done=revoked", status_code=303)


async def _uploaded(fields: Any, missing: str) -> tuple[str, bytes]:
    """The form's file: its name and bytes. Raises InputError (`missing` without one,
    or for a file over MAX_UPLOAD bytes)."""
    file = fields.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        raise InputError(missing)
    body = await file.read(MAX_UPLOAD + 1)
    if len(body) > MAX_UPLOAD:
        raise InputError(f"the file is larger than {MAX_UPLOAD} bytes")
    return file.filename, body


def _import(service: Service, kind: str, name: str, body: bytes, dry_run: bool,
            actor: Any, as_of: datetime | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="segwatch-upload-") as folder:
        path = Path(folder) / name
        path.write_bytes(body)
        try:
            if kind == "ledger":
                result = service.import_ledger(path, dry_run=dry_run, actor=None if dry_run
                                               else actor, as_of=as_of)
            else:
                result = service.import_withdrawals(path, dry_run=dry_run,
                                                    actor=None if dry_run else actor)
        except InputError as exc:  # name the file as uploaded, not the server's folder
            local = f"{folder}/"
            raise InputError(exc.user_message.replace(local, ""),
                             [line.replace(local, "") for line in exc.lines]) from None
    return {"rows": len(result.rows), "snapshot": result.snapshot_id, **result.summary}


def _file_name(uploaded: str, kind: str) -> str:
    """PURE: a safe local name for an uploaded file, keeping its .csv/.json suffix (the
    format) and a readable stem (the snapshot's source name)."""
    base = uploaded.replace("\\", "/").rsplit("/", 1)[-1]
    suffix = ".json" if base.lower().endswith(".json") else ".csv"
    stem = SAFE_NAME.sub("_", base.rsplit(".", 1)[0])[:80].strip("._") or kind
    return f"{stem}{suffix}"


def _cut_off(value: str, zone: str) -> datetime | None:
    """PURE: a form's time: ISO-8601 with a timezone, or a browser's datetime-local value
    (no zone), which the form labels as the configured timezone. Blank: None."""
    value = value.strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"not a time: {value[:40]!r} (e.g. 2026-12-04T17:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))
