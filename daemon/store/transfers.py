"""Persistence of the transfer scan: cursor, recent block hashes, transfers, fees,
approved withdrawals. Functions take the caller's session: they run inside the
cycle's one transaction (`Store.record_cycle`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from chains.types import (
    Address,
    BlockLink,
    ChainHead,
    FeePayment,
    ScanResult,
    SpentOutput,
    TrackedOutput,
    TransferObservation,
)
from daemon.rules.flows import Flow, Instruction
from daemon.rules.recheck import traced_since
from daemon.store import models as m

RECENT_BLOCKS = 256
"""Scanned block hashes kept per chain: the deepest reorg segwatch can unwind."""


@dataclass(frozen=True, slots=True)
class ScanState:
    """Where a chain's scanner stands."""

    start_height: int
    height: int
    hash: str
    recent: dict[int, str]
    error: str | None = None
    traced_from: int | None = None
    """EVM: the height from which every scanned block's internal transfers were traced."""


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """A scan to record: blocks above `fork_point` are retracted first (a reorg)."""

    result: ScanResult
    flows: tuple[Flow, ...]
    fork_point: int | None = None


@dataclass(frozen=True, slots=True)
class Seed:
    """Unspent outputs of wallets not tracked before, read at `block` (UTXO Core sources).
    The first seed of a chain also starts its scan cursor at `block`."""

    block: ChainHead
    addresses: tuple[str, ...]
    outputs: tuple[TrackedOutput, ...]


def scan_state(session: Session, chain_id: int) -> ScanState | None:
    """Return the chain's scan cursor and recent block hashes, or None before the first scan."""
    cursor = session.get(m.ScanCursor, chain_id)
    if cursor is None:
        return None
    recent = dict(session.exec(select(m.ScannedBlock.height, m.ScannedBlock.hash)
                               .where(m.ScannedBlock.chain_id == chain_id)).all())
    return ScanState(cursor.start_height, cursor.height, cursor.hash, recent, cursor.error,
                     cursor.traced_from)


def start_cursor(session: Session, chain_id: int, block: ChainHead, now: datetime) -> None:
    """Begin scanning after `block` (the chain's first balance checkpoint)."""
    session.add(m.ScanCursor(chain_id=chain_id, start_height=block.height, height=block.height,
                             hash=block.hash, updated_at=now))
    session.add(m.ScannedBlock(chain_id=chain_id, height=block.height, hash=block.hash,
                               parent_hash=""))


def scan_failing_since(session: Session, chain_id: int) -> datetime | None:
    """When the chain's current run of failed scans began (None: the last scan worked)."""
    cursor = session.get(m.ScanCursor, chain_id)
    if cursor is None or cursor.error is None or cursor.error_at is None:
        return None
    began: datetime = cursor.error_at
    return began if began.tzinfo else began.replace(tzinfo=UTC)


def record_scan_error(session: Session, chain_id: int, message: str, now: datetime) -> None:
    """Remember why the cursor could not advance (shown by `status`), and when the run of
    failed scans began (`error_at`, kept while the failures go on)."""
    cursor = session.get(m.ScanCursor, chain_id)
    if cursor is not None:
        if cursor.error is None or cursor.error_at is None:
            cursor.error_at = now
        cursor.error = message[:500]
        session.add(cursor)


def clear_scan_error(session: Session, chain_id: int) -> None:
    """A scan worked (even one with no new block): the run of failures is over."""
    cursor = session.get(m.ScanCursor, chain_id)
    if cursor is not None and cursor.error is not None:
        cursor.error = cursor.error_at = None
        session.add(cursor)


def retract_above(session: Session, chain_id: int, fork_point: int,
                  at: datetime | None = None) -> None:
    """Orphan every transfer and fee above `fork_point` (`at`: the time of the first
    block of the branch that replaced them); forget those block hashes and the UTXO
    outputs those blocks created or spent."""
    for table in (m.Transfer, m.FeePaid):
        session.execute(update(table).where(col(table.chain_id) == chain_id,
                                            col(table.block_number) > fork_point,
                                            col(table.orphaned).is_(False))
                        .values(orphaned=True, orphaned_at=at))
    session.execute(delete(m.TrackedUtxo).where(col(m.TrackedUtxo.chain_id) == chain_id,
                                                col(m.TrackedUtxo.height) > fork_point))
    session.execute(update(m.TrackedUtxo).where(col(m.TrackedUtxo.chain_id) == chain_id,
                                                col(m.TrackedUtxo.spent_height) > fork_point)
                    .values(spent_by=None, spent_height=None))
    session.execute(delete(m.ScannedBlock).where(col(m.ScannedBlock.chain_id) == chain_id,
                                                 col(m.ScannedBlock.height) > fork_point))


def store_blocks(session: Session, chain_id: int, blocks: Sequence[BlockLink],
                 now: datetime, *, traced: bool = False) -> None:
    """Record the scanned blocks, move the cursor to the last one, prune old hashes.
    `traced`: the range's internal transfers were traced (kept in `traced_from`)."""
    if not blocks:
        return
    for block in blocks:
        session.merge(m.ScannedBlock(chain_id=chain_id, height=block.height, hash=block.hash,
                                     parent_hash=block.parent_hash))
    last = blocks[-1]
    cursor = session.get(m.ScanCursor, chain_id)
    assert cursor is not None
    cursor.height, cursor.hash, cursor.updated_at = last.height, last.hash, now
    cursor.error = cursor.error_at = None
    cursor.traced_from = traced_since(cursor.traced_from, blocks[0].height, traced)
    session.add(cursor)
    session.execute(delete(m.ScannedBlock).where(
        col(m.ScannedBlock.chain_id) == chain_id,
        col(m.ScannedBlock.height) <= last.height - RECENT_BLOCKS))


def upsert_transfers(session: Session, chain_id: int, flows: Iterable[Flow],
                     now: datetime) -> list[Flow]:
    """Store the flows; a transfer already known (also one re-included after a reorg) is
    updated and un-orphaned. Returns the flows not seen before (to be classified)."""
    by_key = {transfer_key(f.transfer): f for f in flows}
    known = _existing(session, m.Transfer, chain_id, m.Transfer.key, list(by_key))
    new: list[Flow] = []
    values: list[dict[str, Any]] = []
    for key, flow in by_key.items():
        t = flow.transfer
        row = known.get(key)
        if row is None:  # a bulk insert: a busy block brings thousands
            new.append(flow)
            values.append({
                "chain_id": chain_id, "key": key, "kind": t.kind, "tx_hash": t.tx_hash,
                "log_index": t.log_index, "trace_path": t.trace_path, "sender": t.sender,
                "recipient": t.recipient, "contract": t.contract, "asset": flow.asset,
                "amount": t.amount, "block_number": t.block.height, "block_hash": t.block.hash,
                "orphaned": False, "withdrawal_id": None, "seen_at": now,
                "block_time": flow.block_time, "orphaned_at": None})
            continue
        row.block_number, row.block_hash, row.orphaned = t.block.height, t.block.hash, False
        row.block_time = _earliest(row.block_time, flow.block_time)
        row.orphaned_at = None
        session.add(row)
    for start in range(0, len(values), 5000):
        session.execute(insert(m.Transfer), values[start:start + 5000])
    session.flush()
    return new


def _earliest(known: datetime | None, new: datetime | None) -> datetime | None:
    """A transfer a reorg moved keeps the time it was first mined: books that booked it
    then have it (SPEC §8), wherever it was re-included."""
    if known is None or new is None:
        return new or known
    return min(known if known.tzinfo else known.replace(tzinfo=UTC), new)


def _existing(session: Session, table: Any, chain_id: int, column: Any,
              keys: Sequence[str]) -> dict[str, Any]:
    """Rows of `table` on the chain whose `column` is one of `keys` (queried in chunks)."""
    found: dict[str, Any] = {}
    for first in range(0, len(keys), 500):
        rows = session.exec(select(table).where(col(table.chain_id) == chain_id,
                                                col(column).in_(keys[first:first + 500])))
        found.update({getattr(row, column.key): row for row in rows})
    return found


def upsert_fees(session: Session, chain_id: int, fees: Iterable[FeePayment],
                times: Mapping[int, datetime | None]) -> None:
    """Store fees paid by watched wallets with their block's time (`times`: by height);
    a re-included transaction is un-orphaned."""
    by_tx = {fee.tx_hash: fee for fee in fees}
    known = _existing(session, m.FeePaid, chain_id, m.FeePaid.tx_hash, list(by_tx))
    for tx_hash, fee in by_tx.items():
        row = known.get(tx_hash) or m.FeePaid(chain_id=chain_id, tx_hash=tx_hash,
                                              payer=fee.payer, amount=fee.amount,
                                              success=fee.success, block_number=0,
                                              block_hash="")
        row.block_number, row.block_hash, row.orphaned = fee.block.height, fee.block.hash, False
        row.amount, row.success = fee.amount, fee.success
        row.block_time = _earliest(row.block_time, times.get(fee.block.height))
        row.orphaned_at = None
        session.add(row)


def link_withdrawals(session: Session, chain_id: int,
                     matches: dict[tuple[str, str, int, str], int]) -> None:
    """Mark each authorized transfer with the instruction it used."""
    for key, withdrawal_id in matches.items():
        session.execute(update(m.Transfer).where(
            col(m.Transfer.chain_id) == chain_id, col(m.Transfer.key) == _key_text(key))
            .values(withdrawal_id=withdrawal_id))


def unused_instructions(session: Session, chain_id: int) -> list[Instruction]:
    """Approved withdrawals of the chain not used by a live (non-orphaned) transfer."""
    used = select(m.Transfer.withdrawal_id).where(
        m.Transfer.chain_id == chain_id, col(m.Transfer.orphaned).is_(False),
        col(m.Transfer.withdrawal_id).is_not(None))
    rows = session.exec(select(m.ApprovedWithdrawal).where(
        m.ApprovedWithdrawal.chain_id == chain_id,
        col(m.ApprovedWithdrawal.id).not_in(used))).all()
    return [Instruction(r.id or 0, r.from_address, r.to_address, r.asset, r.amount,
                        r.approved_at, r.tx_hash, r.approved_by) for r in rows]


def orphaned_keys(session: Session, chain_id: int) -> set[str]:
    """Keys of the chain's transfers that a reorg orphaned and no scan brought back."""
    return set(session.exec(select(m.Transfer.key).where(
        m.Transfer.chain_id == chain_id, col(m.Transfer.orphaned).is_(True))).all())


def touched_above(session: Session, chain_id: int, after: int) -> set[str]:
    """The addresses in live transfers (either side) and fees (the payer) above block
    `after`: the wallets whose balances the scanned blocks since then moved."""
    touched: set[str] = set()
    for sender, recipient in session.execute(
            sa_select(col(m.Transfer.sender), col(m.Transfer.recipient)).where(
                col(m.Transfer.chain_id) == chain_id, col(m.Transfer.orphaned).is_(False),
                col(m.Transfer.block_number) > after)).all():
        touched.update((sender, recipient) if sender else (recipient,))
    touched.update(session.execute(sa_select(col(m.FeePaid.payer)).where(
        col(m.FeePaid.chain_id) == chain_id, col(m.FeePaid.orphaned).is_(False),
        col(m.FeePaid.block_number) > after)).scalars())
    return touched


def flows_between(session: Session, chain_id: int, after: int, upto: int
                  ) -> tuple[list[Flow], list[FeePayment]]:
    """Live transfers and fees in blocks after..upto (exclusive, inclusive)."""
    rows = session.exec(select(m.Transfer).where(
        m.Transfer.chain_id == chain_id, col(m.Transfer.orphaned).is_(False),
        col(m.Transfer.block_number) > after, col(m.Transfer.block_number) <= upto)).all()
    flows = [Flow(TransferObservation(
        r.kind, ChainHead(r.block_number, r.block_hash), r.tx_hash, r.log_index,  # type: ignore[arg-type]
        Address(r.sender) if r.sender else None, Address(r.recipient),
        Address(r.contract) if r.contract else None, r.amount, "store", r.trace_path),  # type: ignore[arg-type]
        r.asset) for r in rows]
    fees = session.exec(select(m.FeePaid).where(
        m.FeePaid.chain_id == chain_id, col(m.FeePaid.orphaned).is_(False),
        col(m.FeePaid.block_number) > after, col(m.FeePaid.block_number) <= upto)).all()
    return flows, [FeePayment(ChainHead(f.block_number, f.block_hash), f.tx_hash,
                              Address(f.payer), f.amount, f.success) for f in fees]  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Candidates:
    """Stored live transfers and fees that may be reconciling items, and the keys of the
    transfers an approved withdrawal authorized."""

    flows: list[Flow]
    fees: list[FeePayment]
    matched: set[str]
    removed: dict[str, datetime]
    """Keys of transfers (and `fee:TX` of fees) a reorg removed after the cut-off that
    the books had booked → when the replacing branch began."""


_TRANSFERS: Any = m.Transfer.__table__  # type: ignore[attr-defined]
_FEES: Any = m.FeePaid.__table__  # type: ignore[attr-defined]


def transit_candidates(session: Session, chain_id: int, cut_off: datetime, pinned: int,
                       addresses: Sequence[str] | None = None) -> Candidates:
    """Transfers and fees booked on one side only for books cut at `cut_off` and a chain
    read at block `pinned` (SPEC §8): live ones after the cut-off at or below the block,
    or above the block at or before the cut-off, and ones a reorg removed at or after the
    cut-off that were mined before it; only those touching `addresses` when given.

    Three queries per table, each served by its own index ((chain, block_time), (chain,
    block_number), (chain, orphaned_at)): what is read is what is in transit, never the
    history."""
    def windows(table: Any) -> list[Any]:
        live = table.c.orphaned.is_(False)
        return [
            (table.c.block_time > cut_off) & (table.c.block_number <= pinned) & live,
            (table.c.block_number > pinned) & (table.c.block_time <= cut_off) & live,
            (table.c.orphaned_at >= cut_off) & (table.c.block_time <= cut_off)
            & table.c.orphaned.is_(True),
        ]

    # plain rows, not ORM objects: every shard's every cycle reads the chain's items
    transfers, paid = _TRANSFERS, _FEES
    rows: dict[int, Any] = {}
    for window in windows(transfers):
        query = sa_select(transfers).where(transfers.c.chain_id == chain_id, window)
        if addresses is not None:
            query = query.where(transfers.c.sender.in_(addresses)
                                | transfers.c.recipient.in_(addresses))
        rows.update((r.id or 0, r) for r in session.execute(query))
    fees: dict[int, Any] = {}
    for window in windows(paid):
        fee_query = sa_select(paid).where(paid.c.chain_id == chain_id, window)
        if addresses is not None:
            fee_query = fee_query.where(paid.c.payer.in_(addresses))
        fees.update((f.id or 0, f) for f in session.execute(fee_query))
    return Candidates(
        [_flow(r) for r in rows.values()],
        [FeePayment(ChainHead(f.block_number, f.block_hash, _stamp(f.block_time)), f.tx_hash,
                    Address(f.payer), f.amount, f.success) for f in fees.values()],
        {r.key for r in rows.values() if r.withdrawal_id is not None},
        {**{r.key: _aware(r.orphaned_at) for r in rows.values()
            if r.orphaned and r.orphaned_at},
         **{f"fee:{f.tx_hash}": _aware(f.orphaned_at) for f in fees.values()
            if f.orphaned and f.orphaned_at}})


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stamp(moment: datetime | None) -> int | None:
    return None if moment is None else int(_aware(moment).timestamp())


def _flow(r: Any) -> Flow:
    """A stored transfer (an ORM object or a plain row of its table) as a flow."""
    return Flow(TransferObservation(
        r.kind, ChainHead(r.block_number, r.block_hash, _stamp(r.block_time)), r.tx_hash,
        r.log_index, Address(r.sender) if r.sender else None, Address(r.recipient),
        Address(r.contract) if r.contract else None, r.amount, "store", r.trace_path),
        r.asset, r.block_time)


@dataclass(frozen=True, slots=True)
class TrackedRow:
    """A tracked UTXO output and the block that spent it (None: unspent)."""

    output: TrackedOutput
    spent_height: int | None

    def unspent_after(self, height: int) -> bool:
        """True when the output existed and was unspent once block `height` was applied."""
        return self.output.height <= height and \
            (self.spent_height is None or self.spent_height > height)


def tracked_rows(session: Session, chain_id: int, spent_after: int) -> list[TrackedRow]:
    """The chain's tracked outputs still unspent, or spent above `spent_after` (what a
    rescan after a reorg down to that height needs)."""
    rows = session.exec(select(m.TrackedUtxo).where(
        m.TrackedUtxo.chain_id == chain_id,
        (col(m.TrackedUtxo.spent_height).is_(None))
        | (col(m.TrackedUtxo.spent_height) > spent_after))).all()
    return [TrackedRow(TrackedOutput(r.txid, r.vout, Address(r.address), r.amount, r.height),
                       r.spent_height) for r in rows]


def seeded_addresses(session: Session, chain_id: int) -> set[str]:
    """Wallets whose unspent outputs are being tracked."""
    return set(session.exec(select(m.UtxoSeed.address)
                            .where(m.UtxoSeed.chain_id == chain_id)).all())


def track_outputs(session: Session, chain_id: int, created: Iterable[TrackedOutput],
                  spent: Iterable[SpentOutput]) -> None:
    """Start tracking `created` outputs (a known one is kept) and mark `spent` ones."""
    outputs = {o.outpoint: o for o in created}
    for (txid, vout), out in outputs.items():
        known = session.exec(select(m.TrackedUtxo).where(
            m.TrackedUtxo.chain_id == chain_id, m.TrackedUtxo.txid == txid,
            m.TrackedUtxo.vout == vout)).first()
        if known is None:
            session.add(m.TrackedUtxo(chain_id=chain_id, txid=txid, vout=vout,
                                      address=out.address, amount=out.value,
                                      height=out.height))
    session.flush()
    for s in spent:
        session.execute(update(m.TrackedUtxo).where(
            col(m.TrackedUtxo.chain_id) == chain_id, col(m.TrackedUtxo.txid) == s.txid,
            col(m.TrackedUtxo.vout) == s.vout).values(spent_by=s.by_txid,
                                                      spent_height=s.height))


def seed_wallets(session: Session, chain_id: int, addresses: Iterable[str], height: int,
                 outputs: Iterable[TrackedOutput]) -> None:
    """Record the wallets' unspent outputs read at `height` and mark them seeded."""
    track_outputs(session, chain_id, outputs, ())
    for address in addresses:
        session.merge(m.UtxoSeed(chain_id=chain_id, address=address, height=height))


def transfer_key(t: TransferObservation) -> str:
    """The stored identity of a transfer (independent of the block it landed in)."""
    return _key_text(t.key)


def _key_text(key: tuple[str, str, int, str]) -> str:
    return ":".join(str(part) for part in key)


def block_time(link: BlockLink) -> datetime | None:
    """The block's time as an aware UTC datetime, if the source gave one."""
    return None if link.timestamp is None else datetime.fromtimestamp(link.timestamp, UTC)
