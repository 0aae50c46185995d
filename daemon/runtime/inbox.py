"""The inbox feed (SPEC §8): the books system drops ledger snapshots and approved
withdrawals into a folder; the daemon imports each complete file once, all or nothing.

    INBOX/                      files written under a temporary name, then renamed:
      ledger….csv|json            a snapshot (cut-off in the name: `….asof-20261204T160000Z.csv`,
      withdrawals….csv|json       else the time it is picked up)
      .work/                    a file being imported (moved here first: atomic)
      processed/                imported (or the same content imported before)
      rejected/                 refused, with FILE.errors.txt beside it

A name starting with `.` or ending in `.tmp` or `.part` is never read (a file still being
written). A file is moved into `.work/` before it is read, so a daemon killed during a
pick-up finds it there at the next poll and imports it then: the same content twice is
imported once (snapshots by content hash; withdrawals by their ids), so nothing is lost
or doubled. Files are imported as `ledger.inbox_user`, who must hold the feeder role.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from chains.errors import SegwatchError
from daemon.auth.policy import Principal, decode_roles
from daemon.errors import InputError

if TYPE_CHECKING:
    from daemon.service import Service

log = structlog.get_logger("segwatch")

WORK, PROCESSED, REJECTED = ".work", "processed", "rejected"
_CUT_OFF = re.compile(r"\.asof-(\d{8}T\d{6}Z)\.(?:csv|json)$", re.IGNORECASE)
MAX_FILES = 100
"""Files taken per poll (the rest wait for the next one)."""


@dataclass(frozen=True, slots=True)
class Planned:
    """What a file in the inbox is: its kind and, for a snapshot, its cut-off."""

    kind: str
    as_of: datetime | None


def plan(name: str) -> Planned | None:
    """PURE: the kind of an inbox file by its name, or None for a file not to read yet (a
    temporary name) or not at all (another extension)."""
    lower = name.lower()
    if lower.startswith(".") or lower.endswith((".tmp", ".part")) or \
            not lower.endswith((".csv", ".json")):
        return None
    kind = "withdrawals" if lower.startswith("withdrawals") else "ledger"
    found = _CUT_OFF.search(name)
    as_of = datetime.strptime(found.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) \
        if found and kind == "ledger" else None
    return Planned(kind, as_of)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One file taken from the inbox."""

    name: str
    kind: str
    status: str
    """imported, already (the same content before), or rejected."""
    detail: str = ""


class Inbox:
    """Polls one folder and imports what it finds through the service."""

    def __init__(self, folder: Path, service: Service, user: str) -> None:
        self.folder, self._service, self._user = folder, service, user
        for sub in (WORK, PROCESSED, REJECTED):
            (folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    def poll(self) -> list[Outcome]:
        """Import every complete file (those interrupted in `.work/` first); return what
        happened to each. A failure to import one file never stops the others."""
        waiting = sorted((self.folder / WORK).iterdir()) + [
            p for p in sorted(self.folder.iterdir()) if p.is_file()]
        outcomes = []
        for path in waiting[:MAX_FILES]:
            planned = plan(path.name)
            if planned is None or not path.is_file() or path.is_symlink():
                continue
            outcomes.append(self._take(path, planned))
        return outcomes

    def _take(self, path: Path, planned: Planned) -> Outcome:
        work = self.folder / WORK / path.name
        if path != work:
            os.replace(path, work)  # atomic: from now on the file is ours
        try:
            status = self._import(work, planned)
        except SegwatchError as exc:
            lines = exc.lines if isinstance(exc, InputError) else [exc.user_message]
            self._reject(work, lines)
            log.warning("inbox_rejected", file=path.name, kind=planned.kind,
                        errors=len(lines), first=lines[0][:200])
            return Outcome(path.name, planned.kind, "rejected", lines[0])
        os.replace(work, _free(self.folder / PROCESSED / path.name))
        log.info("inbox_imported", file=path.name, kind=planned.kind, status=status)
        return Outcome(path.name, planned.kind, status)

    def _import(self, path: Path, planned: Planned) -> str:
        actor = self._feeder()
        service = self._service
        if planned.kind == "withdrawals":
            result = service.import_withdrawals(path, dry_run=False, actor=actor)
            return "imported" if result.summary.get("new") else "already"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if service.store.has_snapshot(digest, planned.as_of):
            return "already"
        service.import_ledger(path, dry_run=False, actor=actor, as_of=planned.as_of)
        return "imported"

    def _feeder(self) -> Principal:
        users = {u.name: u for u in self._service.identity.store.users()}
        user = users.get(self._user)
        if user is None or user.disabled:
            raise InputError(f"ledger.inbox_user {self._user!r} is not a user (add it with "
                             "`segwatch users add NAME --role feeder`)")
        return Principal(user.name, decode_roles(",".join(user.roles)), "inbox")

    def _reject(self, work: Path, lines: list[str]) -> None:
        target = _free(self.folder / REJECTED / work.name)
        errors = target.with_name(target.name + ".errors.txt")
        errors.write_text("\n".join(line.replace(str(work), work.name)
                                    for line in lines) + "\n", encoding="utf-8")
        os.replace(work, target)


def _free(path: Path) -> Path:
    """`path`, or `path` with a counter when a file of that name is there already."""
    if not path.exists():
        return path
    for n in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise InputError(f"{path.parent}: too many files named {path.name}")
