"""Reads of the audit log for verification: the hash chain, the signed heads, the replay
of every discrepancy against the table, and the outcome of the daemon's last check."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from daemon.rules import replay
from daemon.store import heads
from daemon.store import models as m
from daemon.store.audit import Verification, verify


class AuditQueries:
    """Mixed into Store: audit verification reads over `self.engine`."""

    engine: Engine

    def verify_audit(self) -> Verification:
        """Check the audit log's hash chain end to end."""
        with Session(self.engine) as session:
            return verify(session)

    def replay_audit(self) -> list[str]:
        """Replay every discrepancy's state from the audit log and name each row of the
        table that differs (daemon/rules/replay.py)."""
        with Session(self.engine) as session:
            events = (replay.Event(d, actor, action, payload or {}) for d, actor, action, payload
                      in session.execute(sa_select(
                          col(m.AuditEntry.discrepancy_id), col(m.AuditEntry.actor),
                          col(m.AuditEntry.action), col(m.AuditEntry.payload))
                          .where(col(m.AuditEntry.discrepancy_id).is_not(None))
                          .order_by(col(m.AuditEntry.seq))))
            states = replay.replay(events)
            rows = [replay.Row(i, st, sev, p, r) for i, st, sev, p, r in session.execute(
                sa_select(col(m.Discrepancy.id), col(m.Discrepancy.status),
                          col(m.Discrepancy.severity), col(m.Discrepancy.proposed_by),
                          col(m.Discrepancy.resolved_by)))]
            return replay.compare(rows, states)

    def audit_alarm(self) -> str | None:
        """The first problem the newest `audit_checked` entry recorded, when it found the
        log and the table disagreeing; None when it found none (or none ran yet)."""
        with Session(self.engine) as session:
            newest = session.exec(select(m.AuditEntry.payload).where(
                m.AuditEntry.action == "audit_checked").order_by(
                col(m.AuditEntry.seq).desc())).first()
        if not newest or newest.get("ok", True):
            return None
        problems = newest.get("problems") or ["the audit log does not verify"]
        return str(problems[0])[:300]

    def verify_heads(self, public: Ed25519PublicKey | None) -> tuple[int, list[str]]:
        """Check every stored signed audit head against the log (and `public`)."""
        with Session(self.engine) as session:
            return heads.verify(session, public)

    def extends(self, head: heads.Head) -> str | None:
        """Why the log does not extend `head`, or None."""
        with Session(self.engine) as session:
            return heads.extends(session, head)

    def reopenings(self, id_: int) -> dict[str, list[int]]:
        """The discrepancies `id_` reopens (the earlier ones, newest first) and those that
        reopen it (the later ones, oldest first): one condition's history (SPEC §8)."""
        with Session(self.engine) as session:
            earlier: list[int] = []
            row = session.get(m.Discrepancy, id_)
            while row is not None and row.reopens is not None and len(earlier) < 1000:
                earlier.append(row.reopens)
                row = session.get(m.Discrepancy, row.reopens)
            later: list[int] = []
            current: int | None = id_
            while current is not None and len(later) < 1000:
                current = session.exec(select(m.Discrepancy.id).where(
                    m.Discrepancy.reopens == current)).first()
                if current is not None:
                    later.append(current)
            return {"earlier": earlier, "later": later}
