"""Append-only, hash-chained audit log.

Each entry's hash is SHA-256 over a canonical JSON encoding of its fields and the
previous entry's hash, so an edited, deleted or reordered row breaks the chain.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from daemon.store.models import AuditEntry

GENESIS = "0" * 64


def entry_hash(seq: int, at: datetime, actor: str, action: str,
               discrepancy_id: int | None, payload: dict[str, Any], prev_hash: str) -> str:
    """Return the hex SHA-256 of the canonical encoding of one entry."""
    body = {
        "seq": seq,
        "at": at.isoformat(),
        "actor": actor,
        "action": action,
        "discrepancy_id": discrepancy_id,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class AuditLog:
    """Appends entries inside the caller's transaction, chaining each to the last."""

    def __init__(self, session: Session) -> None:
        self._session = session
        last = session.exec(select(AuditEntry).order_by(col(AuditEntry.seq).desc())).first()
        self._seq = (last.seq or 0) if last else 0
        self._prev = last.hash if last else GENESIS

    def append(self, at: datetime, actor: str, action: str,
               discrepancy_id: int | None, payload: dict[str, Any]) -> AuditEntry:
        """Add one entry to the session and return it."""
        self._seq += 1
        digest = entry_hash(self._seq, at, actor, action, discrepancy_id, payload, self._prev)
        entry = AuditEntry(seq=self._seq, at=at, actor=actor, action=action,
                           discrepancy_id=discrepancy_id, payload=payload,
                           prev_hash=self._prev, hash=digest)
        self._session.add(entry)
        self._prev = digest
        return entry
