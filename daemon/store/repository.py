"""Repository functions: the only code that reads and writes the tables.

Every public method is one transaction. Writes are idempotent: the same cycle
recorded twice leaves one open discrepancy per condition.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, case, delete, func, type_coerce
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from daemon.errors import InputError
from daemon.inputs.chain_settings import ChainSettings
from daemon.rules.recheck import NO_BASIS, Basis
from daemon.rules.reconcile import Finding, LedgerView
from daemon.rules.workflow import RAISED, Refused, Request, check
from daemon.store import models as m
from daemon.store import transfers as tx
from daemon.store.audit import AuditLog
from daemon.store.audit_queries import AuditQueries
from daemon.store.books import BooksStore, chain_row
from daemon.store.console import ConsoleQueries
from daemon.store.cycle import (
    ENGINE_ACTOR,
    CycleInput,
    CycleWrite,
    record,
    record_stale,
)
from daemon.store.db import refresh_statistics, session_scope
from daemon.store.feeds import FeedQueries
from daemon.store.observations import Resident, recheck_basis
from daemon.store.types import UTCDateTime

_AUDIT_ACTION = {"propose": "proposed", "approve": "resolved", "reject": "rejected"}


@dataclass(frozen=True, slots=True)
class DiscrepancyRecord:
    """A discrepancy with its chain's name, as the CLI and exports show it."""

    row: m.Discrepancy
    chain: str
    tip: int | None = None
    """The chain's newest scanned block, for a transfer finding's confirmations."""

    @property
    def confirmations(self) -> int | None:
        """Blocks on top of (and including) a transfer finding's block; None otherwise."""
        if self.row.tx_hash is None or self.row.block_number is None or self.tip is None:
            return None
        return max(0, self.tip - self.row.block_number + 1)


@dataclass(frozen=True, slots=True)
class OpenSummary:
    """A chain's open and proposed discrepancies, counted (what `status` needs)."""

    count: int = 0
    unverified: int = 0
    """Of them, `balance_unverified` (a warning that says "not vouched for")."""
    overdue: int = 0
    nearest_deadline: datetime | None = None


HEARTBEAT_KEPT = timedelta(days=1)
"""A daemon silent for this long is forgotten (its heartbeat row deleted)."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A daemon's last heartbeat: who (host-pid-suffix), which version, since when."""

    daemon: str
    version: str
    started_at: datetime
    beat_at: datetime


class Store(BooksStore, AuditQueries, FeedQueries, ConsoleQueries):
    """Reads and writes segwatch's tables through one engine (the books' imports and
    views, audit verification, feed reads and the console's reads live in
    store/books.py, store/audit_queries.py, store/feeds.py and store/console.py)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._ledgers: dict[str, tuple[int | None, LedgerView]] = {}
        """The current snapshot's ledger view per chain, by snapshot id (a new import is a
        new snapshot): a 10,000-wallet view costs 0.1-0.3 s to build every cycle."""
        self._ledger_builds = threading.Lock()
        """Held while a ledger view is built: shards of one chain cycling side by side in
        one replica share one build (a million wallets: seconds and a GiB each)."""

    def record_cycle(self, chain: ChainSettings, cycle: CycleInput, now: datetime,
                     deadline: Callable[[datetime], datetime],
                     fence: Callable[[Session], None] | None = None) -> CycleWrite:
        """Persist one cycle in one transaction (see `daemon.store.cycle.record`); `fence`
        runs first inside it (a replica checks it still holds the lease of the chain or
        wallet shard)."""
        with session_scope(self.engine) as session:
            if fence is not None:
                fence(session)
            row = chain_row(session, chain.name)
            if row is None or row.id is None:
                raise LookupError(f"chain {chain.name} is not in the store")
            write = record(session, chain, row.id, cycle, now, deadline)
            row.last_error = None
            row.last_error_at = None
            session.add(row)
        refresh_statistics(self.engine, {"balance_observation": write.observations_stored})
        return write

    def recheck_basis(self, ledger: LedgerView, shard: tuple[int, int], symbols: Sequence[str],
                      resident: Resident | None = None) -> tuple[Basis, Resident | None]:
        """What an incremental cycle of wallet shard (index, count) of the ledger's chain
        (the shard's wallets) starts from, and the shard's newest balances
        (`daemon.store.cycle.recheck_basis`; `resident` spares loading them)."""
        with Session(self.engine) as session:
            row = chain_row(session, ledger.chain)
            if row is None or row.id is None:
                return NO_BASIS, None
            return recheck_basis(session, row.id, *shard, ledger.wallets, symbols, resident)

    def scan_state(self, chain: str) -> tx.ScanState | None:
        """Return the transfer scanner's cursor of `chain`, or None before its first cycle."""
        with Session(self.engine) as session:
            row = chain_row(session, chain)
            return None if row is None or row.id is None else tx.scan_state(session, row.id)

    def tracking(self, chain: str, spent_after: int) -> tuple[set[str], list[tx.TrackedRow]]:
        """Return the wallets whose UTXO outputs are tracked and the tracked outputs still
        unspent or spent above `spent_after` (see `daemon.store.transfers`)."""
        with Session(self.engine) as session:
            row = chain_row(session, chain)
            if row is None or row.id is None:
                return set(), []
            return (tx.seeded_addresses(session, row.id),
                    tx.tracked_rows(session, row.id, spent_after))

    def record_source_error(self, chain: str, message: str, now: datetime,
                            stale: Finding | None = None,
                            deadline: Callable[[datetime], datetime] | None = None) -> bool:
        """Remember that `chain` could not be read (shown by `status`) and, with `stale`,
        open or refresh its `source_stale` finding in the same transaction. Returns True
        when the finding was opened."""
        opened = False
        with session_scope(self.engine) as session:
            row = chain_row(session, chain)
            if row is not None and row.id is not None:
                row.last_error, row.last_error_at = message[:500], now
                session.add(row)
                if stale is not None and deadline is not None:
                    opened = record_stale(session, row.id, stale, now, deadline)
        return opened

    def beat(self, daemon: str, version: str, started_at: datetime, now: datetime) -> None:
        """Record that daemon `daemon` (started at `started_at`) is alive at `now`; forget
        daemons silent for HEARTBEAT_KEPT."""
        with session_scope(self.engine) as session:
            row = session.get(m.Heartbeat, daemon[:120])
            if row is None:
                row = m.Heartbeat(id=daemon[:120], version=version[:40], started_at=started_at,
                                  beat_at=now)
            row.beat_at = now
            session.add(row)
            session.execute(delete(m.Heartbeat).where(
                col(m.Heartbeat.beat_at) < now - HEARTBEAT_KEPT))

    def heartbeat(self) -> Heartbeat | None:
        """The newest daemon heartbeat, or None when no daemon ever ran on this store (or
        none within HEARTBEAT_KEPT)."""
        with Session(self.engine) as session:
            row = session.exec(select(m.Heartbeat)
                               .order_by(col(m.Heartbeat.beat_at).desc())).first()
            return Heartbeat(row.id, row.version, row.started_at, row.beat_at) if row else None

    def last_checkpoint(self, chain: str, shard: tuple[int, int] | None = None
                        ) -> m.Checkpoint | None:
        """Return the newest completed cycle of `chain` (of wallet shard `shard` = (index,
        count) when given), or None."""
        with Session(self.engine) as session:
            query = (select(m.Checkpoint).join(m.Chain, col(m.Checkpoint.chain_id) == m.Chain.id)
                     .where(m.Chain.name == chain).order_by(col(m.Checkpoint.id).desc()))
            if shard is not None:
                query = query.where(m.Checkpoint.shard == shard[0],
                                    m.Checkpoint.shards == shard[1])
            return session.exec(query).first()

    def chain_error(self, chain: str) -> tuple[str | None, datetime | None]:
        """Return the last unrecovered source error of `chain` and when it happened."""
        with Session(self.engine) as session:
            row = chain_row(session, chain)
            return (row.last_error, row.last_error_at) if row else (None, None)

    def first_observation_at(self) -> datetime | None:
        """When the store recorded its first balance observation (None: never)."""
        with Session(self.engine) as session:
            return session.exec(select(func.min(m.BalanceObservation.observed_at))).one()

    def open_counts(self) -> dict[tuple[str, str], int]:
        """Open discrepancies counted by (type, severity), for metrics."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(m.Discrepancy.type, m.Discrepancy.severity, func.count())
                .where(col(m.Discrepancy.status).in_(m.OPEN_STATUSES))
                .group_by(col(m.Discrepancy.type), col(m.Discrepancy.severity))).all()
        return {(type_, severity): count for type_, severity, count in rows}

    def discrepancies(self, *, status: Sequence[str] | None = None, chain: str | None = None,
                      type_: str | None = None, overdue_at: datetime | None = None,
                      limit: int | None = None, offset: int = 0) -> list[DiscrepancyRecord]:
        """Return discrepancies matching the filters, oldest first (`overdue_at`: open or
        proposed with a cure deadline before it), `limit` at most after `offset`."""
        with Session(self.engine) as session:
            query = select(m.Discrepancy, m.Chain.name).join(
                m.Chain, col(m.Discrepancy.chain_id) == m.Chain.id)
            if status:
                query = query.where(col(m.Discrepancy.status).in_(status))
            if chain:
                query = query.where(m.Chain.name == chain)
            if type_:
                query = query.where(m.Discrepancy.type == type_)
            if overdue_at is not None:
                query = query.where(col(m.Discrepancy.status).in_(m.OPEN_STATUSES),
                                    col(m.Discrepancy.cure_deadline) < overdue_at)
            query = query.order_by(col(m.Discrepancy.id)).offset(offset)
            rows = session.exec(query.limit(limit) if limit is not None else query).all()
            tips = _tips(session)
            return [DiscrepancyRecord(row, name, tips.get(name)) for row, name in rows]

    def open_summary(self, now: datetime) -> dict[str, OpenSummary]:
        """Per chain name: open and proposed discrepancies counted in the database (one
        aggregate query; 10,000 open rows are not loaded for a status)."""
        d = m.Discrepancy
        deadline = type_coerce(func.min(col(d.cure_deadline)), UTCDateTime())
        query = (sa_select(col(m.Chain.name), func.count(),
                           func.sum(case((col(d.type) == "balance_unverified", 1), else_=0)),
                           func.sum(case((col(d.cure_deadline) < now, 1), else_=0)), deadline)
                 .join(m.Chain, col(d.chain_id) == m.Chain.id)
                 .where(col(d.status).in_(m.OPEN_STATUSES)).group_by(col(m.Chain.name)))
        with Session(self.engine) as session:
            return {name: OpenSummary(int(count), int(unverified or 0), int(overdue or 0),
                                      nearest)
                    for name, count, unverified, overdue, nearest in session.execute(query)}

    def act(self, id_: int, request: Request, roles: Mapping[str, Sequence[str]],
            now: datetime) -> m.Discrepancy:
        """Apply a maker-checker action to discrepancy `id_` with its audit entry, in one
        transaction. A refused action writes only a `refused` audit entry (committed),
        then raises InputError with the one-line reason."""
        refused: str | None = None
        with session_scope(self.engine) as session:
            row = session.exec(select(m.Discrepancy).where(m.Discrepancy.id == id_)
                               .with_for_update()).first()
            audit = AuditLog(session)
            try:
                if row is None:
                    raise Refused(f"no discrepancy with id {id_}")
                status = check(request, row.status, row.proposed_by, roles)
            except Refused as exc:
                refused = str(exc)
                audit.append(now, request.user, "refused", row.id if row else None,
                             {"action": request.action, "discrepancy": id_,
                              "reason_code": request.reason, "refusal": refused})
            else:
                assert row is not None
                previous = row.status
                row.status = status
                if request.action == "propose":
                    row.proposed_by, row.proposed_at = request.user, now
                    row.proposed_reason, row.proposed_note = request.reason, request.note
                elif request.action == "approve":
                    row.resolved_by, row.closed_at = request.user, now
                session.add(row)
                audit.append(now, request.user, _AUDIT_ACTION[request.action], row.id,
                             {"from": previous, "to": status, "reason_code": row.proposed_reason,
                              "note": request.note if request.action != "approve"
                              else row.proposed_note})
                result = row
        if refused is not None:
            raise InputError(refused)
        return result

    def escalate_overdue(self, now: datetime) -> list[int]:
        """Raise the severity of every open or proposed discrepancy past its cure deadline
        that was not escalated yet (once each, with an audit entry); return their ids."""
        with session_scope(self.engine) as session:
            rows = session.exec(select(m.Discrepancy).where(
                col(m.Discrepancy.status).in_(m.OPEN_STATUSES),
                col(m.Discrepancy.escalated_at).is_(None),
                col(m.Discrepancy.cure_deadline) < now).with_for_update()).all()
            audit = AuditLog(session) if rows else None
            for row in rows:
                before, row.severity = row.severity, RAISED.get(row.severity, "critical")
                row.escalated_at = now
                session.add(row)
                assert audit is not None
                audit.append(now, ENGINE_ACTOR, "escalated", row.id,
                             {"from_severity": before, "to_severity": row.severity,
                              "cure_deadline": row.cure_deadline.isoformat(),
                              "status": row.status})
            return [row.id for row in rows if row.id is not None]

    def discrepancy(self, id_: int) -> tuple[DiscrepancyRecord, list[m.AuditEntry]] | None:
        """Return one discrepancy and its audit history, or None."""
        with Session(self.engine) as session:
            found = session.exec(select(m.Discrepancy, m.Chain.name).join(
                m.Chain, col(m.Discrepancy.chain_id) == m.Chain.id)
                .where(m.Discrepancy.id == id_)).first()
            if found is None:
                return None
            history = session.exec(select(m.AuditEntry).where(m.AuditEntry.discrepancy_id == id_)
                                   .order_by(col(m.AuditEntry.seq))).all()
            return DiscrepancyRecord(found[0], found[1], _tips(session).get(found[1])), \
                list(history)


def _tips(session: Session) -> dict[str, int]:
    return dict(session.exec(select(m.Chain.name, m.ScanCursor.height).join(
        m.ScanCursor, col(m.ScanCursor.chain_id) == m.Chain.id)).all())
