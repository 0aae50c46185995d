"""Export packages over the API (auditor): create one (signed with `export.sign_key`),
list them, download one, verify an uploaded one against the trusted signers
(`export.trusted_keys`); the work is in daemon/export/packages.py, shared with the
console."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict

from daemon.api.security import Caller
from daemon.export import packages
from daemon.export.packages import PACKAGE_ID
from daemon.service import Service


class NewExport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: datetime | None = None
    reveal_owners: bool = False


def routes(api: APIRouter, service: Service) -> None:
    """Add the export routes to `api`."""

    @api.post("/exports", tags=["exports"], status_code=201)
    def create(who: Caller, body: NewExport) -> dict[str, Any]:
        """Make a signed package of every configured chain now (or as of a time)."""
        return packages.create(service, who, body.as_of, body.reveal_owners)

    @api.get("/exports", tags=["exports"])
    def listing(who: Caller) -> list[dict[str, Any]]:
        """The packages made through the API, newest first."""
        return [{"id": k.id, "bytes": k.bytes, "download": f"/api/v1/exports/{k.id}"}
                for k in packages.kept(service, who)]

    @api.get("/exports/{package_id}", tags=["exports"], response_class=FileResponse)
    def download(who: Caller, package_id: Annotated[str, PathParam(pattern=PACKAGE_ID)]
                 ) -> FileResponse:
        """The package's .zip."""
        return FileResponse(packages.path_of(service, who, package_id),
                            media_type="application/zip",
                            filename=f"segwatch-{package_id}.zip")

    @api.post("/exports/verify", tags=["exports"])
    async def verify(who: Caller, request: Request) -> dict[str, Any]:
        """Verify an uploaded package (.zip as the body) against the configured trusted
        signers: signature, hashes, Merkle roots and totals."""
        service.identity.require(who, "verify", "verifying a package")
        body = await request.body()
        return await run_in_threadpool(packages.verify_upload, service, who, body)
