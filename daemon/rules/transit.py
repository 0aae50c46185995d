"""PURE: reconciling items (SPEC §8) — the transfers that explain why the books, cut at
`as_of`, and the chain, read at the pinned block B, differ without anything being wrong.

    books (cut at T) ──────────────┐
                                   │ in transit: booked on one side only
    chain (read at block B) ───────┘

    unbooked: a movement in a block at or below B whose time is after T — the chain has
              it, the books do not yet (a withdrawal mined before the books book it);
    ahead:    a movement in a block above B whose time is at or before T — the books
              have it, the chain at B does not yet (the books lead the pinned block);
    reorged:  a movement the books booked (its time at or before T) that a reorg removed
              at or after T (the time of the replacing branch's first block) — the books
              have it, the chain no longer does; books cut after the reorg no longer
              have it, so it is no item for them. A movement a reorg
              moved to another block keeps the time it was first mined.

    expected(wallet, asset) = booked + Σ unbooked - Σ ahead

For books that are correct at their cut-off, expected equals the on-chain balance at B,
whatever the order the movements are given in; a balance finding is raised only for
what the items do not explain.

Only movements the books are expected to book are items: deposits, moves between a
client's own wallets, withdrawals an approved instruction authorized, and their fees. A
transfer that raised `unauthorized_outflow` or `commingling` explains nothing: the books
will never book a theft, so the balance finding for it fires at once too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from chains.types import BalanceObservation, FeePayment
from daemon.rules.flows import Flow, flagged
from daemon.rules.reconcile import BALANCE_TYPES, LedgerView, Reconciliation, reconcile

Side = Literal["unbooked", "ahead", "reorged"]


@dataclass(frozen=True, slots=True)
class Movement:
    """One change of a watched wallet's balance seen on chain: a transfer in or out, or
    a fee it paid; `delta` is signed for that wallet (base units)."""

    key: str
    address: str
    asset: str
    delta: int
    height: int
    time: datetime
    tx_hash: str | None = None
    orphaned_at: datetime | None = None
    """When a reorg removed it (None: on the chain)."""


@dataclass(frozen=True, slots=True)
class Item:
    """A reconciling item: a movement booked on one side only."""

    movement: Movement
    side: Side

    @property
    def adjustment(self) -> int:
        """What the item adds to the booked amount to give the expected one: an unbooked
        movement its delta; an ahead or reorged one (the books have it, the chain at B
        does not) minus its delta."""
        return self.movement.delta if self.side == "unbooked" else -self.movement.delta

    def as_json(self, now: datetime) -> dict[str, Any]:
        m = self.movement
        return {"address": m.address, "asset": m.asset, "tx_hash": m.tx_hash,
                "what": "fee" if m.key.startswith("fee:") else "transfer",
                "direction": "in" if m.delta > 0 else "out", "amount": str(abs(m.delta)),
                "block": m.height, "block_time": m.time.isoformat(), "side": self.side,
                "age_seconds": int((now - m.time).total_seconds())}


def items(movements: Iterable[Movement], cut_off: datetime, pinned: int) -> list[Item]:
    """The reconciling items among `movements` for books cut at `cut_off` and a chain
    read at block `pinned`, by (address, asset, height, key): unique per movement key."""
    unique = {m.key: m for m in movements}
    found = []
    for m in unique.values():
        if m.orphaned_at is not None:
            if m.time <= cut_off <= m.orphaned_at:
                found.append(Item(m, "reorged"))
        elif m.height <= pinned and m.time > cut_off:
            found.append(Item(m, "unbooked"))
        elif m.height > pinned and m.time <= cut_off:
            found.append(Item(m, "ahead"))
    return sorted(found, key=lambda i: (i.movement.address, i.movement.asset,
                                        i.movement.height, i.movement.key))


def expected(booked: Mapping[tuple[str, str], int], found: Iterable[Item]
             ) -> dict[tuple[str, str], int]:
    """(address, asset) → the expected balance: booked plus the items' adjustments."""
    out: dict[tuple[str, str], int] = defaultdict(int, booked)
    for item in found:
        out[(item.movement.address, item.movement.asset)] += item.adjustment
    return dict(out)


def movements(ledger: LedgerView, flows: Iterable[Flow], fees: Iterable[FeePayment],
              native: str, matched: Iterable[str] = (),
              removed: Mapping[str, datetime] | None = None) -> list[Movement]:
    """The movements of the ledger's wallets the books are expected to book, from
    transfers (`matched`: the stored keys of transfers an approved withdrawal authorized)
    and fees. A flow without a block time cannot be placed against a cut-off and is not a
    movement (fail closed: it explains nothing); neither is a flagged transfer, nor the
    fee of a transaction that carried one."""
    authorized, removed = set(matched), removed or {}
    out: list[Movement] = []
    suspicious: set[str] = set()
    for flow in flows:
        t, key = flow.transfer, ":".join(str(part) for part in flow.transfer.key)
        if flagged(ledger, flow) and key not in authorized:
            if t.tx_hash:
                suspicious.add(t.tx_hash.lower())
            continue
        if flow.block_time is None:
            continue
        gone = removed.get(key)
        if t.recipient in ledger.wallets:
            out.append(Movement(f"{key}:in", t.recipient, flow.asset, t.amount,
                                t.block.height, flow.block_time, t.tx_hash, gone))
        if t.sender is not None and t.sender in ledger.wallets:
            out.append(Movement(f"{key}:out", t.sender, flow.asset, -t.amount,
                                t.block.height, flow.block_time, t.tx_hash, gone))
    for fee in fees:
        when = fee.block.timestamp
        if fee.payer not in ledger.wallets or when is None or \
                fee.tx_hash.lower() in suspicious:
            continue
        out.append(Movement(f"fee:{fee.tx_hash}", fee.payer, native, -fee.amount,
                            fee.block.height, datetime.fromtimestamp(when, UTC), fee.tx_hash,
                            removed.get(f"fee:{fee.tx_hash}")))
    return out


def adjustments(found: Iterable[Item]) -> dict[tuple[str, str], int]:
    """(address, asset) → the net the items add to the booked amount."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for item in found:
        out[(item.movement.address, item.movement.asset)] += item.adjustment
    return dict(out)


def explain(ledger: LedgerView, observations: Iterable[BalanceObservation],
            result: Reconciliation, found: Iterable[Item]) -> Reconciliation:
    """`result` with its balance findings judged against the expected balance (booked
    plus the items) instead of the booked one; its other findings are kept."""
    net = adjustments(found)  # only the pairs with items can judge differently
    again = reconcile(ledger, [o for o in observations if (o.address, o.asset.symbol) in net],
                      net)
    kept = [f for f in result.findings
            if f.type not in BALANCE_TYPES or (f.address, f.asset) not in net]
    return Reconciliation(tuple(sorted((*kept, *again.findings), key=lambda f: f.fingerprint)),
                          result.verified, result.read_errors)
