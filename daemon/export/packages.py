"""Packages kept on the server (`export.dir`) for the API and the console: make a signed
one now (auditor), list them, find one to download, verify an uploaded one against the
trusted signers (`export.trusted_keys`). A pseudonymized package's owner salt stays
beside it on the server (owners get their proofs out of band)."""

from __future__ import annotations

import json
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.auth.policy import Principal
from daemon.errors import InputError
from daemon.service import Service

PACKAGE_ID = r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$"


@dataclass(frozen=True, slots=True)
class Kept:
    """A package in `export.dir`."""

    id: str
    bytes: int
    made_at: datetime


def folder(service: Service) -> Path:
    return Path(service.settings.export.dir)


def create(service: Service, who: Principal, as_of: datetime | None,
           reveal_owners: bool) -> dict[str, Any]:
    """Make a signed package of every configured chain now (or as of a time); return its
    id, pinned blocks, liabilities and audit head. Raises InputError, Forbidden."""
    from daemon.export.package import load_private_key
    from daemon.export.service import export

    service.identity.require(who, "export", "creating a package")
    if service.settings.export.sign_key is None:
        raise InputError("exports through the API need export.sign_key in the configuration")
    if as_of is not None and as_of.tzinfo is None:
        raise InputError("as_of: give a timezone (e.g. Z or +00:00)")
    key = load_private_key(Path(service.settings.export.sign_key))
    folder(service).mkdir(mode=0o700, parents=True, exist_ok=True)
    package_id = f"{service.now():%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    package = export(service, folder(service) / f"{package_id}.zip", key, actor=who,
                     as_of=as_of, pseudonymize=not reveal_owners)
    manifest = json.loads(package.files["manifest.json"])
    return {"id": package_id, "download": f"/api/v1/exports/{package_id}",
            "chains": [{"name": c["name"], "block": c["block"]} for c in manifest["chains"]],
            "liabilities": manifest["liabilities"], "audit_head": manifest.get("audit_head")}


def kept(service: Service, who: Principal) -> list[Kept]:
    """The packages made through the API or the console, newest first."""
    from datetime import UTC

    service.identity.require(who, "export", "listing packages")
    where = folder(service)
    found = sorted(where.glob("*.zip"), reverse=True) if where.is_dir() else []
    return [Kept(p.stem, p.stat().st_size,
                 datetime.strptime(p.stem[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC))
            for p in found if re.match(PACKAGE_ID, p.stem)]


def path_of(service: Service, who: Principal, package_id: str) -> Path:
    """The .zip of a kept package. Raises InputError for an unknown id."""
    service.identity.require(who, "export", "downloading a package")
    path = folder(service) / f"{package_id}.zip"
    if not re.match(PACKAGE_ID, package_id) or not path.is_file():
        raise InputError(f"no package {package_id[:40]}")
    return path


def verify_upload(service: Service, who: Principal, body: bytes) -> dict[str, Any]:
    """Verify an uploaded package (.zip bytes) against the trusted signers: signature,
    hashes, Merkle roots and totals; {"ok", "problems"}. Raises InputError for a file
    that is not a package."""
    from daemon.export.package import read_package
    from daemon.export.verify import verify_package

    service.identity.require(who, "verify", "verifying a package")
    trusted = frozenset(service.settings.export.trusted_keys)
    with tempfile.TemporaryDirectory(prefix="segwatch-verify-") as work:
        path = Path(work) / "package.zip"
        path.write_bytes(body)
        files = read_package(path)
        problems = verify_package(files, trusted)
    return {"ok": not problems, "problems": problems}
