"""Repository functions: the only code that reads and writes the tables.

Every public method is one transaction. Writes are idempotent: the same cycle
recorded twice leaves one open discrepancy per condition.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, case, delete, func, type_coerce
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlmodel import Session, col, select

from chains.types import Address
from daemon.errors import InputError
from daemon.inputs.config import ChainSettings, Settings
from daemon.inputs.ledger import AllocationRow
from daemon.inputs.withdrawals import ApprovedWithdrawal as ApprovedInstruction
from daemon.rules import transit
from daemon.rules.recheck import NO_BASIS, Basis
from daemon.rules.reconcile import BALANCE_TYPES, Finding, LedgerView, WalletView
from daemon.rules.workflow import RAISED, Refused, Request, check
from daemon.store import models as m
from daemon.store import transfers as tx
from daemon.store.audit import AuditLog
from daemon.store.audit_queries import AuditQueries
from daemon.store.console import ConsoleQueries
from daemon.store.cycle import (
    ENGINE_ACTOR,
    CycleInput,
    CycleWrite,
    record,
    record_stale,
)
from daemon.store.db import driver_form, insert_plain, session_scope
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


class Store(AuditQueries, FeedQueries, ConsoleQueries):
    """Reads and writes segwatch's tables through one engine (audit verification, feed
    reads and the console's reads live in store/audit_queries.py, store/feeds.py and
    store/console.py)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._ledgers: dict[str, tuple[int | None, LedgerView]] = {}
        """The current snapshot's ledger view per chain, by snapshot id (a new import is a
        new snapshot): a 10,000-wallet view costs 0.1-0.3 s to build every cycle."""

    def sync_catalog(self, settings: Settings) -> None:
        """Create or update the chain and asset rows of every configured chain."""
        with session_scope(self.engine) as session:
            for chain in settings.chains:
                row = _chain_row(session, chain.name) or m.Chain(name=chain.name, family="",
                                                                 network="")
                row.family = chain.family
                row.network = str(chain.chain_id or chain.network)
                session.add(row)
                session.flush()
                _sync_assets(session, row, chain)

    def import_allocations(self, rows: Sequence[AllocationRow], source_name: str,
                           sha256: str, now: datetime, actor: str = ENGINE_ACTOR,
                           as_of: datetime | None = None) -> tuple[int, list[int]]:
        """Store `rows` as the new current allocation snapshot, imported by `actor`; return
        its id and the ids of open balance findings it corrects.

        Wallets are created or updated (structure, label, key id); earlier
        snapshots stay as history. The catalog must be synced first. A snapshot that
        changes the booked amount of a wallet and asset with an open balance finding does
        not let that finding self-clear: it becomes `proposed` (`ledger_corrected`, by
        `actor`) and waits for a checker (SPEC §9).
        """
        cut_off = as_of or now
        with session_scope(self.engine) as session:
            audit = AuditLog(session)  # first: serializes concurrent imports (PostgreSQL)
            current = session.exec(select(m.AllocationSnapshot).order_by(
                col(m.AllocationSnapshot.id).desc())).first()
            if current is not None and cut_off < current.cut_off:
                raise InputError(f"{source_name}: cut-off {cut_off.isoformat()} is older than "
                                 f"the current snapshot's ({current.cut_off.isoformat()}, "
                                 f"snapshot {current.id}); nothing imported")
            chains = {c.name: c for c in session.exec(select(m.Chain))}
            assets = _asset_ids(session)
            wallets = _upsert_wallets(session, rows, chains)
            snapshot = m.AllocationSnapshot(imported_at=now, source_name=source_name,
                                            sha256=sha256, rows=len(rows), as_of=cut_off)
            session.add(snapshot)
            session.flush()
            table = m.Allocation.__table__  # type: ignore[attr-defined]
            connection = session.connection()
            amount = driver_form(connection, table.c.amount)
            insert_plain(connection, table, _ALLOCATION_KEYS, [  # no per-row binding
                (snapshot.id, wallets[(r.chain, r.address)],
                 assets[(chains[r.chain].id or 0, r.asset.symbol)], r.owner, amount(r.amount))
                for r in rows])
            audit.append(now, actor, "ledger_imported", None,
                         {"snapshot": snapshot.id, "rows": len(rows),
                          "source": source_name, "sha256": sha256,
                          "as_of": cut_off.isoformat()})
            corrected = _ledger_corrected(session, audit, rows, chains, snapshot.id or 0,
                                          actor, now, cut_off)
            return snapshot.id or 0, corrected

    def import_withdrawals(self, rows: Sequence[ApprovedInstruction], source_name: str,
                           now: datetime, actor: str = ENGINE_ACTOR) -> tuple[int, int]:
        """Store approved withdrawals; return (new, already known).

        Re-importing an instruction with the same id and values is a no-op; the same id
        with other values raises InputError naming the line, and nothing is written.
        """
        with session_scope(self.engine) as session:
            chains = {c.name: c.id or 0 for c in session.exec(select(m.Chain))}
            known = {w.ext_id: w for w in session.exec(select(m.ApprovedWithdrawal))}
            conflicts = [f"{source_name}:{r.line}: withdrawal id {r.id!r} was imported before "
                         "with different values" for r in rows
                         if r.id in known and not _same_instruction(known[r.id], r)]
            if conflicts:
                raise InputError(f"{source_name}: {len(conflicts)} conflicting lines; nothing "
                                 "imported", conflicts)
            new = [r for r in rows if r.id not in known]
            for r in new:
                session.add(m.ApprovedWithdrawal(
                    ext_id=r.id, chain_id=chains[r.chain], from_address=r.from_address,
                    to_address=r.to_address, asset=r.asset.symbol, amount=r.amount,
                    approved_by=r.approved_by, approved_at=r.approved_at, tx_hash=r.tx_hash,
                    imported_at=now))
            AuditLog(session).append(now, actor, "withdrawals_imported", None,
                                     {"source": source_name, "new": len(new),
                                      "known": len(rows) - len(new)})
            return len(new), len(rows) - len(new)

    def ledger_view(self, chain: str, as_of: datetime | None = None) -> LedgerView:
        """Return the wallets and allocations on `chain` of the current snapshot (or of
        the newest one imported by `as_of`)."""
        with Session(self.engine) as session:
            newest = select(func.max(m.AllocationSnapshot.id))
            if as_of is not None:
                newest = newest.where(m.AllocationSnapshot.imported_at <= as_of)
            snapshot = session.exec(newest).one()
            row = session.get(m.AllocationSnapshot, snapshot) if snapshot else None
            cut_off = row.cut_off if row else None
            cached = self._ledgers.get(chain) if as_of is None else None
            if cached is not None and cached[0] == snapshot:
                return cached[1]
            query = (
                sa_select(col(m.Wallet.address), col(m.Wallet.structure), col(m.Asset.symbol),
                          col(m.Allocation.owner), col(m.Allocation.amount))
                .join(m.Allocation, col(m.Allocation.wallet_id) == m.Wallet.id)
                .join(m.Asset, col(m.Allocation.asset_id) == m.Asset.id)
                .join(m.Chain, col(m.Wallet.chain_id) == m.Chain.id)
                .where(col(m.Chain.name) == chain, col(m.Allocation.snapshot_id) == snapshot)
            )
            rows = session.connection().execute(query)  # Core rows: no ORM loading per row
            view = dataclasses.replace(_build_view(chain, rows), cut_off=cut_off)
        if as_of is None:
            self._ledgers[chain] = (snapshot, view)
        return view

    def record_cycle(self, chain: ChainSettings, cycle: CycleInput, now: datetime,
                     deadline: Callable[[datetime], datetime],
                     fence: Callable[[Session], None] | None = None) -> CycleWrite:
        """Persist one cycle in one transaction (see `daemon.store.cycle.record`); `fence`
        runs first inside it (a replica checks it still holds the lease of the chain or
        wallet shard)."""
        with session_scope(self.engine) as session:
            if fence is not None:
                fence(session)
            chain_row = _chain_row(session, chain.name)
            if chain_row is None or chain_row.id is None:
                raise LookupError(f"chain {chain.name} is not in the store")
            write = record(session, chain, chain_row.id, cycle, now, deadline)
            chain_row.last_error = None
            chain_row.last_error_at = None
            session.add(chain_row)
            return write

    def recheck_basis(self, ledger: LedgerView, shard: tuple[int, int], symbols: Sequence[str],
                      resident: Resident | None = None) -> tuple[Basis, Resident | None]:
        """What an incremental cycle of wallet shard (index, count) of the ledger's chain
        (the shard's wallets) starts from, and the shard's newest balances
        (`daemon.store.cycle.recheck_basis`; `resident` spares loading them)."""
        with Session(self.engine) as session:
            row = _chain_row(session, ledger.chain)
            if row is None or row.id is None:
                return NO_BASIS, None
            return recheck_basis(session, row.id, *shard, ledger.wallets, symbols, resident)

    def scan_state(self, chain: str) -> tx.ScanState | None:
        """Return the transfer scanner's cursor of `chain`, or None before its first cycle."""
        with Session(self.engine) as session:
            row = _chain_row(session, chain)
            return None if row is None or row.id is None else tx.scan_state(session, row.id)

    def tracking(self, chain: str, spent_after: int) -> tuple[set[str], list[tx.TrackedRow]]:
        """Return the wallets whose UTXO outputs are tracked and the tracked outputs still
        unspent or spent above `spent_after` (see `daemon.store.transfers`)."""
        with Session(self.engine) as session:
            row = _chain_row(session, chain)
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
            row = _chain_row(session, chain)
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
            row = _chain_row(session, chain)
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


def _ledger_corrected(session: Session, audit: AuditLog, rows: Sequence[AllocationRow],
                      chains: Mapping[str, m.Chain], snapshot: int, actor: str,
                      now: datetime, cut_off: datetime) -> list[int]:
    """Move every open or proposed balance finding whose expected balance the new
    snapshot changes to `proposed` with reason `ledger_corrected` by `actor`; return
    their ids. Expected, not booked (SPEC §8): books that merely book what was in
    transit at the finding's block leave the expected balance as it was, and the finding
    stands; an edit that changes what the chain is compared with goes to a checker."""
    found = session.exec(select(m.Discrepancy).where(
        col(m.Discrepancy.status).in_(m.OPEN_STATUSES),
        col(m.Discrepancy.type).in_(BALANCE_TYPES)).with_for_update()).all()
    if not found:
        return []  # nothing to correct: spare a large import the views below
    booked: dict[tuple[int, str, str], int] = defaultdict(int)
    for r in rows:
        booked[(chains[r.chain].id or 0, r.address, r.asset.symbol)] += r.amount
    by_id = {c.id: c.name for c in chains.values()}
    built: dict[str, LedgerView] = {}

    def view(name: str) -> LedgerView:
        """The new snapshot's books of chain `name`, built when a finding needs them."""
        if name not in built:
            built[name] = dataclasses.replace(_build_view(name, (
                (r.address, r.structure, r.asset.symbol, r.owner, r.amount)
                for r in rows if r.chain == name)), cut_off=cut_off)
        return built[name]
    natives = dict(session.exec(select(m.Asset.chain_id, m.Asset.symbol)
                                .where(col(m.Asset.contract).is_(None))).all())
    ids = []
    for row in found:
        now_booked = booked.get((row.chain_id, row.address or "", row.asset or ""), 0)
        if row.ledger is None or \
                (row.status == "proposed" and row.proposed_reason == "ledger_corrected"):
            continue
        moving = 0
        if row.block_number is not None and row.address and row.chain_id in by_id:
            found_items = tx.transit_candidates(session, row.chain_id, cut_off,
                                                row.block_number, [row.address])
            moving = transit.adjustments(transit.items(transit.movements(
                view(by_id[row.chain_id]), found_items.flows, found_items.fees,
                natives.get(row.chain_id, ""), found_items.matched, found_items.removed),
                cut_off, row.block_number)).get((row.address, row.asset or ""), 0)
        if now_booked + moving == row.ledger + (row.in_transit or 0):
            continue
        previous = (row.status, row.proposed_by, row.proposed_reason)
        row.status, row.proposed_by, row.proposed_at = "proposed", actor, now
        row.proposed_reason = "ledger_corrected"
        row.proposed_note = (f"ledger snapshot {snapshot} expects {now_booked + moving} "
                             f"(booked {now_booked}, in transit {moving}) where the finding "
                             f"expected {row.ledger + (row.in_transit or 0)} (base units)")
        session.add(row)
        audit.append(now, actor, "proposed", row.id,
                     {"from": previous[0], "to": "proposed", "reason_code": "ledger_corrected",
                      "note": row.proposed_note, "snapshot": snapshot,
                      "replaces": {"proposed_by": previous[1], "reason_code": previous[2]}
                      if previous[0] == "proposed" else None})
        ids.append(row.id or 0)
    return ids


def _tips(session: Session) -> dict[str, int]:
    return dict(session.exec(select(m.Chain.name, m.ScanCursor.height).join(
        m.ScanCursor, col(m.ScanCursor.chain_id) == m.Chain.id)).all())


def _same_instruction(row: m.ApprovedWithdrawal, new: ApprovedInstruction) -> bool:
    return (row.from_address, row.to_address, row.asset, row.amount, row.approved_by,
            row.approved_at, row.tx_hash) == (new.from_address, new.to_address,
                                              new.asset.symbol, new.amount, new.approved_by,
                                              new.approved_at, new.tx_hash)


def _chain_row(session: Session, name: str) -> m.Chain | None:
    return session.exec(select(m.Chain).where(m.Chain.name == name)).first()


def _sync_assets(session: Session, chain_row: m.Chain, chain: ChainSettings) -> None:
    existing = {a.symbol: a for a in session.exec(
        select(m.Asset).where(m.Asset.chain_id == chain_row.id))}
    for asset in chain.assets:
        row = existing.get(asset.symbol) or m.Asset(chain_id=chain_row.id or 0,
                                                     symbol=asset.symbol, decimals=0)
        row.contract, row.decimals = asset.contract, asset.decimals
        session.add(row)


def _asset_ids(session: Session) -> dict[tuple[int, str], int]:
    return {(a.chain_id, a.symbol): a.id or 0 for a in session.exec(select(m.Asset))}


def _upsert_wallets(session: Session, rows: Sequence[AllocationRow],
                    chains: dict[str, m.Chain]) -> dict[tuple[str, Address], int]:
    """Insert new wallets and update changed ones in bulk; return (chain, address) → id."""
    table = m.Wallet.__table__  # type: ignore[attr-defined]
    wanted: dict[tuple[int, str], tuple[str, str | None, str | None]] = {}
    for r in rows:
        wanted.setdefault((chains[r.chain].id or 0, r.address),
                          (r.structure, r.label, r.mpc_key_id))
    existing = {(cid, addr): (id_, (structure, label, key)) for id_, cid, addr, structure, label,
                key in session.execute(sa_select(table.c.id, table.c.chain_id, table.c.address,
                                                 table.c.structure, table.c.label,
                                                 table.c.mpc_key_id))}
    new = [(cid, addr, *v) for (cid, addr), v in wanted.items() if (cid, addr) not in existing]
    changed = [{"b_id": existing[k][0], "b_structure": v[0], "b_label": v[1], "b_key": v[2]}
               for k, v in wanted.items() if k in existing and existing[k][1] != v]
    insert_plain(session.connection(), table, ("chain_id", "address", "structure", "label",
                                               "mpc_key_id"), new)
    if changed:
        session.execute(sa_update(table).where(table.c.id == bindparam("b_id")).values(
            structure=bindparam("b_structure"), label=bindparam("b_label"),
            mpc_key_id=bindparam("b_key")), changed)
    by_name = {c.id: name for name, c in chains.items()}
    ids = session.execute(sa_select(table.c.chain_id, table.c.address, table.c.id))
    return {(by_name[cid], Address(addr)): id_ for cid, addr, id_ in ids if cid in by_name}


_ALLOCATION_KEYS = ("snapshot_id", "wallet_id", "asset_id", "owner", "amount")


def _build_view(chain: str, rows: Iterable[Any]) -> LedgerView:
    structures: dict[Address, str] = {}
    allocations: dict[Address, dict[str, dict[str, int]]] = defaultdict(dict)
    shared: dict[str, str] = {}  # one object per distinct text: the view stays resident
    for address, structure, symbol, owner, amount in rows:
        structures[address] = shared.setdefault(structure, structure)
        per_owner = allocations[address].setdefault(shared.setdefault(symbol, symbol), {})
        owner = shared.setdefault(owner, owner)
        per_owner[owner] = per_owner.get(owner, 0) + amount
    wallets = {a: WalletView(a, s, allocations[a]) for a, s in structures.items()}  # type: ignore[arg-type]
    return LedgerView(chain, wallets)
