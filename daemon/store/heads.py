"""Signed audit heads: the log's newest (seq, hash, time) signed with an Ed25519 key kept
outside the database (`daemon.audit_key`), so that an insider who rewrites the log and
recomputes every hash, or deletes its newest entries, no longer matches what was signed
and sent away (alerts, export manifests).

What a head proves: the log held exactly that entry at that sequence number. `verify`
checks every stored head against the log; `extends` checks one head taken from
elsewhere (a package's manifest) — the stronger check, as an insider who can write the
database can also delete stored heads, but not recall a package or an alert.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from daemon.export import signing
from daemon.store import models as m
from daemon.store.db import session_scope


def message(seq: int, hash_: str, at: str) -> bytes:
    """The exact bytes a head's signature covers."""
    return json.dumps({"seq": seq, "hash": hash_, "at": at}, sort_keys=True,
                      separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Head:
    """A signed audit head as carried in alerts and manifests."""

    seq: int
    hash: str
    at: str
    key: str
    signature: str

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": self.at, "key": self.key,
                "signature": self.signature}

    @classmethod
    def from_json(cls, doc: Any) -> Head:
        """Parse a head from a manifest or alert. Raises ValueError."""
        if not isinstance(doc, dict):
            raise ValueError("audit_head is not an object")
        try:
            seq, hash_, at = doc["seq"], doc["hash"], doc["at"]
            key, signature = doc.get("key") or "", doc.get("signature") or ""
        except KeyError as exc:
            raise ValueError(f"audit_head has no {exc.args[0]}") from None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or \
                not all(isinstance(v, str) and len(v) <= 200 for v in (hash_, at, key, signature)):
            raise ValueError("audit_head holds a value of the wrong type")
        return cls(seq, hash_, at, key, signature)


class HeadSigner:
    """Signs heads with the audit key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = key.public_key()
        self.fingerprint = signing.fingerprint(self.public)

    @classmethod
    def from_file(cls, path: Path) -> HeadSigner:
        """Load `daemon.audit_key` (mode 0600 enforced). Raises InputError."""
        return cls(signing.load_private_key(path, "daemon.audit_key"))

    def sign(self, seq: int, hash_: str, at: datetime) -> Head:
        stamp = at.isoformat()
        signature = self._key.sign(message(seq, hash_, stamp)).hex()
        return Head(seq, hash_, stamp, self.fingerprint, signature)


def sign_newest(engine: Engine, signer: HeadSigner, now: datetime) -> Head | None:
    """Sign the log's newest entry unless a head already covers it; return the newest
    head (None on an empty log). One transaction."""
    with session_scope(engine) as session:
        last = session.exec(select(m.AuditEntry).order_by(col(m.AuditEntry.seq).desc())).first()
        if last is None:
            return None
        signed = _newest_head(session)
        if signed is not None and signed.seq >= (last.seq or 0):
            return _head(signed)
        head = signer.sign(last.seq or 0, last.hash, now)
        session.add(m.AuditHead(seq=head.seq, hash=head.hash, at=now, key=head.key,
                                signature=head.signature))
        return head


def current(engine: Engine) -> Head | None:
    """The log's newest entry as an unsigned head (key and signature empty): what an
    export manifest records when no audit key is configured (the manifest's own
    signature then anchors it). None on an empty log."""
    with Session(engine) as session:
        last = session.exec(select(m.AuditEntry).order_by(col(m.AuditEntry.seq).desc())).first()
        return Head(last.seq or 0, last.hash, last.at.isoformat(), "", "") if last else None


def newest(engine: Engine) -> Head | None:
    """The newest stored head, or None."""
    with Session(engine) as session:
        row = _newest_head(session)
        return _head(row) if row else None


def check_signature(head: Head, public: Ed25519PublicKey) -> str | None:
    """Why `head`'s signature does not hold under `public`, or None."""
    if head.key != signing.fingerprint(public):
        return f"head {head.seq} was signed by key {head.key[:16]}…, not the audit key"
    try:
        public.verify(bytes.fromhex(head.signature), message(head.seq, head.hash, head.at))
    except (InvalidSignature, ValueError):
        return f"head {head.seq}: the signature does not match (forged or altered)"
    return None


def extends(session: Session, head: Head) -> str | None:
    """Why the log does not extend `head` (it was truncated below it, or the entry at
    its sequence number was rewritten), or None."""
    entry = session.get(m.AuditEntry, head.seq)
    if entry is None:
        top = session.exec(select(m.AuditEntry.seq).order_by(
            col(m.AuditEntry.seq).desc())).first() or 0
        return (f"the log ends at entry {top} but the head recorded entry {head.seq}: "
                "entries were deleted (truncated)")
    if entry.hash != head.hash:
        return (f"entry {head.seq} no longer has the hash the head recorded: the log was "
                "rewritten")
    return None


def verify(session: Session, public: Ed25519PublicKey | None) -> tuple[int, list[str]]:
    """Check every stored head: its signature (when `public` is given) and that the log
    still extends it. Return (heads checked, problems)."""
    problems: list[str] = []
    rows = list(session.exec(select(m.AuditHead).order_by(col(m.AuditHead.seq))))
    for row in rows:
        head = _head(row)
        if public is not None and (bad := check_signature(head, public)):
            problems.append(bad)
        if bad := extends(session, head):
            problems.append(bad)
    return len(rows), problems


def _newest_head(session: Session) -> m.AuditHead | None:
    return session.exec(select(m.AuditHead).order_by(col(m.AuditHead.seq).desc())).first()


def _head(row: m.AuditHead) -> Head:
    return Head(row.seq, row.hash, row.at.isoformat(), row.key, row.signature)
