"""The books: the catalog of chains and assets, ledger imports (allocation snapshots,
their wallets, the findings a new snapshot corrects), approved withdrawals, and the
current books of a chain as a resident view. Mixed into the Store (store/repository.py)."""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, func
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlmodel import Session, col, select

from chains.types import Address
from daemon.errors import InputError
from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.config import Settings
from daemon.inputs.ledger import AllocationRow
from daemon.inputs.withdrawals import ApprovedWithdrawal as ApprovedInstruction
from daemon.rules import transit
from daemon.rules.reconcile import BALANCE_TYPES, LedgerView, WalletView
from daemon.store import models as m
from daemon.store import transfers as tx
from daemon.store.audit import AuditLog
from daemon.store.cycle import ENGINE_ACTOR
from daemon.store.db import (
    driver_form,
    insert_plain,
    refresh_statistics,
    roomy_page_cache,
    session_scope,
)


class BooksStore:
    """Mixed into Store: writes of the books and reads of their current version over
    `self.engine`."""

    engine: Engine
    _ledgers: dict[str, tuple[int | None, LedgerView]]
    """The current snapshot's ledger view per chain, by snapshot id (set by the Store)."""
    _ledger_builds: threading.Lock
    """Held while a ledger view is built (set by the Store)."""

    def sync_catalog(self, settings: Settings) -> None:
        """Create or update the chain and asset rows of every configured chain."""
        with session_scope(self.engine) as session:
            for chain in settings.chains:
                row = chain_row(session, chain.name) or \
                    m.Chain(name=chain.name, family="", network="")
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
            ids = {name: c.id or 0 for name, c in chains.items()}
            named = {id_: name for name, id_ in ids.items()}
            assets = {(named[chain_id], symbol): id_ for (chain_id, symbol), id_ in
                      _asset_ids(session).items() if chain_id in named}
            connection = session.connection()
            snapshot = m.AllocationSnapshot(imported_at=now, source_name=source_name,
                                            sha256=sha256, rows=len(rows), as_of=cut_off)
            session.add(snapshot)
            session.flush()
            table = m.Allocation.__table__  # type: ignore[attr-defined]
            amount = driver_form(connection, table.c.amount)
            with roomy_page_cache(connection):  # new rows land all over the indexes
                wallets, written = _upsert_wallets(session, rows, ids)
                snapshot_id = snapshot.id  # an ORM attribute: read once, not per row
                insert_plain(connection, table, _ALLOCATION_KEYS, [  # no per-row binding
                    (snapshot_id, wallets[(r.chain, r.address)],
                     assets[(r.chain, r.asset.symbol)], r.owner, amount(r.amount))
                    for r in rows])
            audit.append(now, actor, "ledger_imported", None,
                         {"snapshot": snapshot.id, "rows": len(rows),
                          "source": source_name, "sha256": sha256,
                          "as_of": cut_off.isoformat()})
            corrected = _ledger_corrected(session, audit, rows, chains, snapshot.id or 0,
                                          actor, now, cut_off)
        refresh_statistics(self.engine, {"wallet": written, "allocation": len(rows)})
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
            if as_of is not None:
                return dataclasses.replace(self._build_ledger(session, chain, snapshot),
                                           cut_off=cut_off)
            cached = self._ledgers.get(chain)
            if cached is not None and cached[0] == snapshot:
                return cached[1]
            with self._ledger_builds:  # another shard may be building this very view
                cached = self._ledgers.get(chain)
                if cached is not None and cached[0] == snapshot:
                    return cached[1]
                view = dataclasses.replace(self._build_ledger(session, chain, snapshot),
                                           cut_off=cut_off)
                self._ledgers[chain] = (snapshot, view)
                return view

    @staticmethod
    def _build_ledger(session: Session, chain: str, snapshot: int | None) -> LedgerView:
        query = (
            sa_select(col(m.Wallet.address), col(m.Wallet.structure), col(m.Asset.symbol),
                      col(m.Allocation.owner), col(m.Allocation.amount))
            .join(m.Allocation, col(m.Allocation.wallet_id) == m.Wallet.id)
            .join(m.Asset, col(m.Allocation.asset_id) == m.Asset.id)
            .join(m.Chain, col(m.Wallet.chain_id) == m.Chain.id)
            .where(col(m.Chain.name) == chain, col(m.Allocation.snapshot_id) == snapshot)
        )
        rows = session.connection().execute(query)  # Core rows: no ORM loading per row
        return _build_view(chain, rows)


def chain_row(session: Session, name: str) -> m.Chain | None:
    return session.exec(select(m.Chain).where(m.Chain.name == name)).first()


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


def _same_instruction(row: m.ApprovedWithdrawal, new: ApprovedInstruction) -> bool:
    return (row.from_address, row.to_address, row.asset, row.amount, row.approved_by,
            row.approved_at, row.tx_hash) == (new.from_address, new.to_address,
                                              new.asset.symbol, new.amount, new.approved_by,
                                              new.approved_at, new.tx_hash)


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


def _upsert_wallets(session: Session, rows: Sequence[AllocationRow], chain_ids: Mapping[str, int]
                    ) -> tuple[dict[tuple[str, Address], int], int]:
    """Insert new wallets and update changed ones in bulk; return (chain, address) → id,
    and how many wallet rows were written."""
    table = m.Wallet.__table__  # type: ignore[attr-defined]
    wanted: dict[tuple[str, str], tuple[str, str | None, str | None]] = {}
    for r in rows:
        wanted.setdefault((r.chain, r.address), (r.structure, r.label, r.mpc_key_id))
    by_id = {id_: name for name, id_ in chain_ids.items()}
    existing = {(by_id[cid], addr): (id_, (structure, label, key))
                for id_, cid, addr, structure, label, key in session.execute(sa_select(
                    table.c.id, table.c.chain_id, table.c.address, table.c.structure,
                    table.c.label, table.c.mpc_key_id)).all() if cid in by_id}
    new = [(chain_ids[name], addr, *v) for (name, addr), v in wanted.items()
           if (name, addr) not in existing]
    changed = [{"b_id": existing[k][0], "b_structure": v[0], "b_label": v[1], "b_key": v[2]}
               for k, v in wanted.items() if k in existing and existing[k][1] != v]
    insert_plain(session.connection(), table, ("chain_id", "address", "structure", "label",
                                               "mpc_key_id"), new)
    if changed:
        session.execute(sa_update(table).where(table.c.id == bindparam("b_id")).values(
            structure=bindparam("b_structure"), label=bindparam("b_label"),
            mpc_key_id=bindparam("b_key")), changed)
    ids = session.execute(sa_select(table.c.chain_id, table.c.address, table.c.id)).all()
    return ({(by_id[cid], Address(addr)): id_ for cid, addr, id_ in ids if cid in by_id},
            len(new) + len(changed))


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
