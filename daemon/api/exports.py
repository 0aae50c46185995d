"""Export packages over the API (auditor): create one (signed with `export.sign_key`),
list them, download one, verify an uploaded one against the trusted signers
(`export.trusted_keys`). Packages live in `export.dir`; a pseudonymized package's owner
salt stays beside it on the server (owners get their proofs out of band)."""

from __future__ import annotations

import json
import re
import secrets
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict

from daemon.api.security import Caller
from daemon.errors import InputError
from daemon.service import Service

PACKAGE_ID = r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$"


class NewExport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: datetime | None = None
    reveal_owners: bool = False


def routes(api: APIRouter, service: Service) -> None:
    """Add the export routes to `api`."""
    folder = Path(service.settings.export.dir)

    @api.post("/exports", tags=["exports"], status_code=201)
    def create(who: Caller, body: NewExport) -> dict[str, Any]:
        """Make a signed package of every configured chain now (or as of a time)."""
        from daemon.export.package import load_private_key
        from daemon.export.service import export

        if service.settings.export.sign_key is None:
            raise InputError("exports through the API need export.sign_key in the "
                             "configuration")
        key = load_private_key(Path(service.settings.export.sign_key))
        moment = body.as_of
        if moment is not None and moment.tzinfo is None:
            raise InputError("as_of: give a timezone (e.g. Z or +00:00)")
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        package_id = f"{service.now():%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
        package = export(service, folder / f"{package_id}.zip", key, actor=who, as_of=moment,
                         pseudonymize=not body.reveal_owners)
        manifest = json.loads(package.files["manifest.json"])
        return {"id": package_id, "download": f"/api/v1/exports/{package_id}",
                "chains": [{"name": c["name"], "block": c["block"]}
                           for c in manifest["chains"]],
                "liabilities": manifest["liabilities"],
                "audit_head": manifest.get("audit_head")}

    @api.get("/exports", tags=["exports"])
    def listing(who: Caller) -> list[dict[str, Any]]:
        """The packages made through the API, newest first."""
        service.identity.require(who, "export", "listing packages")
        found = sorted(folder.glob("*.zip"), reverse=True) if folder.is_dir() else []
        return [{"id": p.stem, "bytes": p.stat().st_size,
                 "download": f"/api/v1/exports/{p.stem}"}
                for p in found if re.match(PACKAGE_ID, p.stem)]

    @api.get("/exports/{package_id}", tags=["exports"], response_class=FileResponse)
    def download(who: Caller, package_id: Annotated[str, PathParam(pattern=PACKAGE_ID)]
                 ) -> FileResponse:
        """The package's .zip."""
        service.identity.require(who, "export", "downloading a package")
        path = folder / f"{package_id}.zip"
        if not path.is_file():
            raise InputError(f"no package {package_id}")
        return FileResponse(path, media_type="application/zip",
                            filename=f"segwatch-{package_id}.zip")

    @api.post("/exports/verify", tags=["exports"])
    async def verify(who: Caller, request: Request) -> dict[str, Any]:
        """Verify an uploaded package (.zip as the body) against the configured trusted
        signers: signature, hashes, Merkle roots and totals."""
        from daemon.export.package import read_package, verify_package

        service.identity.require(who, "verify", "verifying a package")
        body = await request.body()
        trusted = frozenset(service.settings.export.trusted_keys)
        with tempfile.TemporaryDirectory(prefix="segwatch-verify-") as work:
            path = Path(work) / "package.zip"
            path.write_bytes(body)
            files = await run_in_threadpool(read_package, path)
            problems = await run_in_threadpool(verify_package, files, trusted)
        return {"ok": not problems, "problems": problems}
