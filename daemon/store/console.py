"""Reads the operator console needs (SPEC §10) that the CLI does not: a filtered, sorted
page of discrepancies with its total, open items by severity, per chain and asset the
on-chain total of the newest reads, wallet search, a wallet's stored transfers.

Each is one short read transaction with bounded results; nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, case, func, or_, type_coerce
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from daemon.store import models as m
from daemon.store.types import UTCDateTime

Sort = Literal["id", "detected", "deadline", "severity", "chain", "type", "status"]
SORTS: tuple[Sort, ...] = ("id", "detected", "deadline", "severity", "chain", "type", "status")
SEVERITY_ORDER = ("critical", "warning", "info")
MAX_SEARCH = 50
MAX_TRANSFERS = 100


@dataclass(frozen=True, slots=True)
class Filters:
    """What a discrepancy list shows: `status` (several), chain, type, severity,
    `overdue_at` (open or proposed with a cure deadline before it)."""

    status: tuple[str, ...] = ()
    chain: str | None = None
    type: str | None = None
    severity: str | None = None
    overdue_at: datetime | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class SeverityCount:
    """Open and proposed discrepancies of one chain and severity."""

    chain: str
    severity: str
    count: int
    overdue: int
    nearest_deadline: datetime | None


@dataclass(frozen=True, slots=True)
class OnchainTotal:
    """The newest reads of one chain's ledger wallets for one asset, summed."""

    asset: str
    total: int
    read: int
    """Wallet balances summed (read successfully)."""
    unreadable: int
    """Wallet balances whose newest read failed: the total is then incomplete."""


@dataclass(frozen=True, slots=True)
class WalletHit:
    chain: str
    address: str
    structure: str
    label: str | None
    owners: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WalletTransfer:
    kind: str
    block_number: int
    block_time: datetime | None
    tx_hash: str | None
    sender: str | None
    recipient: str
    asset: str
    amount: int
    orphaned: bool
    withdrawal: str | None


class ConsoleQueries:
    """Mixed into Store: the console's reads over `self.engine`."""

    engine: Engine

    def discrepancy_page(self, filters: Filters, sort: Sort = "id", descending: bool = False,
                         limit: int = 50, offset: int = 0
                         ) -> tuple[list[tuple[m.Discrepancy, str]], int]:
        """One page of discrepancies matching `filters` in `sort` order (ties by id), and
        how many match in all."""
        d = m.Discrepancy
        query = select(d, m.Chain.name).join(m.Chain, col(d.chain_id) == m.Chain.id)
        count = sa_select(func.count()).select_from(d).join(m.Chain, col(d.chain_id) ==
                                                            m.Chain.id)
        conditions: list[ColumnElement[bool]] = []
        if filters.status:
            conditions.append(col(d.status).in_(filters.status))
        if filters.chain:
            conditions.append(col(m.Chain.name) == filters.chain)
        if filters.type:
            conditions.append(col(d.type) == filters.type)
        if filters.severity:
            conditions.append(col(d.severity) == filters.severity)
        if filters.address:
            conditions.append(col(d.address) == filters.address)
        if filters.overdue_at is not None:
            conditions += [col(d.status).in_(m.OPEN_STATUSES),
                           col(d.cure_deadline) < filters.overdue_at]
        if conditions:
            query, count = query.where(*conditions), count.where(*conditions)
        rank = case({s: i for i, s in enumerate(SEVERITY_ORDER)}, value=col(d.severity),
                    else_=len(SEVERITY_ORDER))
        key = {"id": col(d.id), "detected": col(d.detected_at),
               "deadline": col(d.cure_deadline), "severity": rank, "chain": col(m.Chain.name),
               "type": col(d.type), "status": col(d.status)}[sort]
        order = [key.desc() if descending else key.asc(),
                 col(d.id).desc() if descending else col(d.id).asc()]
        with Session(self.engine) as session:
            total = int(session.execute(count).scalar_one())
            rows = session.exec(query.order_by(*order).offset(offset).limit(limit)).all()
        return [(row, name) for row, name in rows], total

    def severity_counts(self, now: datetime) -> list[SeverityCount]:
        """Open and proposed discrepancies per chain and severity, with the overdue count
        and the nearest cure deadline (one aggregate query)."""
        d = m.Discrepancy
        deadline = type_coerce(func.min(col(d.cure_deadline)), UTCDateTime())
        query = (sa_select(col(m.Chain.name), col(d.severity), func.count(),
                           func.sum(case((col(d.cure_deadline) < now, 1), else_=0)), deadline)
                 .join(m.Chain, col(d.chain_id) == m.Chain.id)
                 .where(col(d.status).in_(m.OPEN_STATUSES))
                 .group_by(col(m.Chain.name), col(d.severity)))
        with Session(self.engine) as session:
            return [SeverityCount(chain, severity, int(n), int(late or 0), nearest)
                    for chain, severity, n, late, nearest in session.execute(query)]

    def onchain_totals(self, chain: str) -> list[OnchainTotal]:
        """Per asset, the sum of the newest balance read of every wallet in the current
        ledger snapshot on `chain` (amounts are exact integers, summed here: they are
        stored as text)."""
        o = m.BalanceObservation
        with Session(self.engine) as session:
            chain_id = session.exec(select(m.Chain.id).where(m.Chain.name == chain)).first()
            snapshot = session.exec(select(func.max(m.AllocationSnapshot.id))).one()
            if chain_id is None or snapshot is None:
                return []
            booked = (sa_select(col(m.Allocation.wallet_id)).join(
                m.Wallet, col(m.Allocation.wallet_id) == m.Wallet.id)
                .where(col(m.Allocation.snapshot_id) == snapshot,
                       col(m.Wallet.chain_id) == chain_id).distinct())
            newest = (sa_select(func.max(o.id).label("id"))
                      .where(col(o.wallet_id).in_(booked))
                      .group_by(col(o.wallet_id), col(o.asset_id)).subquery())
            rows = session.execute(
                sa_select(col(m.Asset.symbol), col(o.amount))
                .join(newest, col(o.id) == newest.c.id)
                .join(m.Asset, col(o.asset_id) == m.Asset.id))
            sums: dict[str, list[int]] = {}
            for symbol, amount in rows:
                entry = sums.setdefault(symbol, [0, 0, 0])
                if amount is None:
                    entry[2] += 1
                else:
                    entry[0] += amount
                    entry[1] += 1
        return [OnchainTotal(a, t, r, u) for a, (t, r, u) in sorted(sums.items())]

    def search_wallets(self, text: str, limit: int = MAX_SEARCH) -> list[WalletHit]:
        """Wallets of the current snapshot whose address or label contains `text`
        (case-insensitive), or with an owner whose id contains it; at most `limit`."""
        needle = f"%{_like_escape(text.strip().lower())}%"
        with Session(self.engine) as session:
            snapshot = session.exec(select(func.max(m.AllocationSnapshot.id))).one()
            if snapshot is None or not text.strip():
                return []
            owned = (sa_select(col(m.Allocation.wallet_id))
                     .where(col(m.Allocation.snapshot_id) == snapshot,
                            func.lower(col(m.Allocation.owner)).like(needle, escape="\\")))
            current = sa_select(col(m.Allocation.wallet_id)).where(
                col(m.Allocation.snapshot_id) == snapshot)
            found = session.exec(
                select(m.Wallet, m.Chain.name).join(m.Chain, col(m.Wallet.chain_id) ==
                                                    m.Chain.id)
                .where(col(m.Wallet.id).in_(current), or_(
                    func.lower(col(m.Wallet.address)).like(needle, escape="\\"),
                    func.lower(func.coalesce(col(m.Wallet.label), "")).like(needle,
                                                                            escape="\\"),
                    col(m.Wallet.id).in_(owned)))
                .order_by(col(m.Chain.name), col(m.Wallet.address)).limit(limit)).all()
            ids = [w.id for w, _ in found]
            owners: dict[int, set[str]] = {}
            for wallet_id, owner in session.execute(
                    sa_select(col(m.Allocation.wallet_id), col(m.Allocation.owner))
                    .where(col(m.Allocation.snapshot_id) == snapshot,
                           col(m.Allocation.wallet_id).in_(ids))):
                owners.setdefault(wallet_id, set()).add(owner)
        return [WalletHit(name, w.address, w.structure, w.label,
                          tuple(sorted(owners.get(w.id or 0, ())))) for w, name in found]

    def wallet_row(self, chain: str, address: str) -> m.Wallet | None:
        """The stored wallet (label, structure, key id), or None."""
        with Session(self.engine) as session:
            return session.exec(select(m.Wallet).join(
                m.Chain, col(m.Wallet.chain_id) == m.Chain.id)
                .where(m.Chain.name == chain, m.Wallet.address == address)).first()

    def wallet_reads(self, chain: str, address: str
                     ) -> dict[str, tuple[int | None, str | None, int, datetime]]:
        """asset → (newest amount read or None, its error, block, when) of one wallet."""
        o = m.BalanceObservation
        with Session(self.engine) as session:
            wallet = self.wallet_row(chain, address)
            if wallet is None:
                return {}
            newest = (sa_select(func.max(o.id).label("id")).where(col(o.wallet_id) == wallet.id)
                      .group_by(col(o.asset_id)).subquery())
            rows = session.execute(
                sa_select(col(m.Asset.symbol), col(o.amount), col(o.error),
                          col(o.block_height), col(o.observed_at))
                .join(newest, col(o.id) == newest.c.id)
                .join(m.Asset, col(o.asset_id) == m.Asset.id))
            return {symbol: (amount, error, block, at)
                    for symbol, amount, error, block, at in rows}

    def wallet_transfers(self, chain: str, address: str, limit: int = MAX_TRANSFERS
                         ) -> list[WalletTransfer]:
        """The newest stored transfers into or out of one wallet (reorged ones marked)."""
        t = m.Transfer
        return self._transfers(chain, or_(col(t.sender) == address, col(t.recipient) == address),
                               [col(t.block_number).desc(), col(t.id).desc()], limit)

    def transfers_of(self, chain: str, tx_hash: str) -> list[WalletTransfer]:
        """Every stored transfer of one transaction."""
        return self._transfers(chain, col(m.Transfer.tx_hash) == tx_hash,
                               [col(m.Transfer.id)], MAX_TRANSFERS)

    def _transfers(self, chain: str, where: ColumnElement[bool], order: list[Any],
                   limit: int) -> list[WalletTransfer]:
        t = m.Transfer
        with Session(self.engine) as session:
            rows = session.exec(
                select(t, m.ApprovedWithdrawal.ext_id)
                .join(m.Chain, col(t.chain_id) == m.Chain.id)
                .outerjoin(m.ApprovedWithdrawal,
                           col(t.withdrawal_id) == m.ApprovedWithdrawal.id)
                .where(col(m.Chain.name) == chain, where)
                .order_by(*order).limit(limit)).all()
        return [WalletTransfer(r.kind, r.block_number, r.block_time, r.tx_hash, r.sender,
                               r.recipient, r.asset, r.amount, r.orphaned, ext)
                for r, ext in rows]

    def checkpoint_id(self, chain: str) -> int | None:
        """The newest checkpoint's id of `chain` (what changes when a cycle records)."""
        with Session(self.engine) as session:
            return session.exec(select(func.max(m.Checkpoint.id)).join(
                m.Chain, col(m.Checkpoint.chain_id) == m.Chain.id)
                .where(m.Chain.name == chain)).one()


def _like_escape(text: str) -> str:
    return text[:200].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

