"""Reads of what the feeds brought: ledger snapshots (with their importer), one
snapshot's allocations, approved withdrawals."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from daemon.errors import InputError
from daemon.rules import transit
from daemon.rules.flows import Flow
from daemon.rules.reconcile import LedgerView
from daemon.store import models as m
from daemon.store import transfers as tx


class FeedQueries:
    """Mixed into Store: reads of snapshots and approved withdrawals over `self.engine`."""

    engine: Engine

    def snapshots(self) -> list[dict[str, Any]]:
        """Every ledger snapshot, newest first, with who imported it (from the log)."""
        with Session(self.engine) as session:
            by = {(e.payload or {}).get("snapshot"): e.actor for e in session.exec(
                select(m.AuditEntry).where(m.AuditEntry.action == "ledger_imported"))}
            return [{"id": s.id, "as_of": s.cut_off.isoformat(),
                     "imported_at": s.imported_at.isoformat(),
                     "imported_by": by.get(s.id), "source": s.source_name, "sha256": s.sha256,
                     "rows": s.rows}
                    for s in session.exec(select(m.AllocationSnapshot).order_by(
                        col(m.AllocationSnapshot.id).desc()))]

    def snapshot_at(self, moment: datetime | None = None) -> dict[str, Any] | None:
        """The snapshot current at `moment` (default: now): the newest imported by then,
        as {"snapshot": id, "as_of": its cut-off}; None without one."""
        with Session(self.engine) as session:
            query = select(m.AllocationSnapshot)
            if moment is not None:
                query = query.where(m.AllocationSnapshot.imported_at <= moment)
            row = session.exec(query.order_by(col(m.AllocationSnapshot.id).desc())).first()
            return {"snapshot": row.id, "as_of": row.cut_off.isoformat()} if row else None

    def has_snapshot(self, sha256: str, as_of: datetime | None = None) -> bool:
        """Whether a snapshot of exactly this content (SHA-256 hex) was imported — with
        this cut-off, when `as_of` is given: the same books cut again later are a new
        snapshot (a quiet ledger stays fresh), the same file twice is not."""
        with Session(self.engine) as session:
            query = select(m.AllocationSnapshot.id).where(
                m.AllocationSnapshot.sha256 == sha256)
            if as_of is not None:
                query = query.where(m.AllocationSnapshot.as_of == as_of)
            return session.exec(query).first() is not None

    def ledger_cut_off(self) -> datetime | None:
        """The current snapshot's cut-off (aware datetime), or None without a ledger."""
        with Session(self.engine) as session:
            current = session.exec(select(m.AllocationSnapshot).order_by(
                col(m.AllocationSnapshot.id).desc())).first()
            return current.cut_off if current else None

    def snapshot(self, snapshot_id: int) -> dict[tuple[str, str, str, str], int]:
        """(chain, address, asset, owner) → amount of one snapshot. Raises InputError
        for an unknown id."""
        with Session(self.engine) as session:
            if session.get(m.AllocationSnapshot, snapshot_id) is None:
                raise InputError(f"no ledger snapshot with id {snapshot_id}")
            rows = session.execute(
                sa_select(col(m.Chain.name), col(m.Wallet.address), col(m.Asset.symbol),
                          col(m.Allocation.owner), col(m.Allocation.amount))
                .join(m.Wallet, col(m.Allocation.wallet_id) == m.Wallet.id)
                .join(m.Chain, col(m.Wallet.chain_id) == m.Chain.id)
                .join(m.Asset, col(m.Allocation.asset_id) == m.Asset.id)
                .where(col(m.Allocation.snapshot_id) == snapshot_id))
            out: dict[tuple[str, str, str, str], int] = {}
            for chain, address, asset, owner, amount in rows:
                key = (chain, address, asset, owner)
                out[key] = out.get(key, 0) + amount
            return out

    def withdrawals(self, limit: int, offset: int) -> list[dict[str, Any]]:
        """Approved withdrawals, newest import first, a page at a time."""
        with Session(self.engine) as session:
            rows = session.exec(select(m.ApprovedWithdrawal, m.Chain.name).join(
                m.Chain, col(m.ApprovedWithdrawal.chain_id) == m.Chain.id).order_by(
                col(m.ApprovedWithdrawal.id).desc()).offset(offset).limit(limit))
            return [{"id": w.ext_id, "chain": chain, "from_address": w.from_address,
                     "to_address": w.to_address, "asset": w.asset, "amount": str(w.amount),
                     "approved_by": w.approved_by, "approved_at": w.approved_at.isoformat(),
                     "tx_hash": w.tx_hash, "imported_at": w.imported_at.isoformat()}
                    for w, chain in rows]

    def observed(self, chain: str) -> dict[str, dict[str, tuple[int | None, int, str]]]:
        """address → asset → (newest amount read or None when unreadable, its block, when)
        for every wallet of `chain`."""
        from daemon.store.observations import latest_observations

        with Session(self.engine) as session:
            row = session.exec(select(m.Chain).where(m.Chain.name == chain)).first()
            if row is None or row.id is None:
                return {}
            latest = latest_observations(session, row.id)
            wallets = dict(session.exec(select(m.Wallet.id, m.Wallet.address)
                                        .where(m.Wallet.chain_id == row.id)).all())
            assets = dict(session.exec(select(m.Asset.id, m.Asset.symbol)
                                       .where(m.Asset.chain_id == row.id)).all())
            out: dict[str, dict[str, tuple[int | None, int, str]]] = {}
            for (w, a), o in latest.items():
                if w in wallets and a in assets:
                    out.setdefault(wallets[w], {})[assets[a]] = (
                        o.amount, o.block_height, o.observed_at.isoformat())
            return out

    def reconciling_items(self, ledger: LedgerView, pinned: int, native: str,
                          addresses: list[str] | None = None,
                          extra: tuple[list[Flow], list[Any]] = ([], [])
                          ) -> list[transit.Item]:
        """The reconciling items of `ledger`'s books (its cut-off) at block `pinned`, from
        the stored transfers and fees (of `addresses` when given) plus `extra` (flows and
        fees read outside the scan, e.g. by a spot check); none without a cut-off."""
        if ledger.cut_off is None:
            return []
        with Session(self.engine) as session:
            chain = session.exec(select(m.Chain.id).where(m.Chain.name == ledger.chain)).first()
            found = tx.transit_candidates(session, chain, ledger.cut_off, pinned, addresses) \
                if chain is not None else tx.Candidates([], [], set(), {})
        flows = {":".join(map(str, f.transfer.key)): f for f in (*extra[0], *found.flows)}
        fees = {f.tx_hash: f for f in (*extra[1], *found.fees)}
        return transit.items(transit.movements(ledger, flows.values(), fees.values(), native,
                                               found.matched, found.removed),
                             ledger.cut_off, pinned)
