"""PURE: reconciling items (SPEC §8) — the transfers that explain why the books, cut at
`as_of`, and the chain, read at the pinned block B, differ without anything being wrong.

    books (cut at T) ──────────────┐
                                   │ in transit: booked on one side only
    chain (read at block B) ───────┘

    unbooked: a movement in a block at or below B whose time is after T — the chain has
              it, the books do not yet (a withdrawal mined before the books book it);
    ahead:    a movement in a block above B whose time is at or before T — the books
              have it, the chain at B does not yet (the books lead the pinned block).

    expected(wallet, asset) = booked + Σ unbooked - Σ ahead

For books that are correct at their cut-off, expected equals the on-chain balance at B,
whatever the order the movements are given in; a balance finding is raised only for
what the items do not explain. Not yet wired into the cycle (issue 14 continues): the
cycle still compares with the booked amount.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Side = Literal["unbooked", "ahead"]


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


@dataclass(frozen=True, slots=True)
class Item:
    """A reconciling item: a movement booked on one side only."""

    movement: Movement
    side: Side

    @property
    def adjustment(self) -> int:
        """What the item adds to the booked amount to give the expected one."""
        return self.movement.delta if self.side == "unbooked" else -self.movement.delta

    def as_json(self, now: datetime) -> dict[str, Any]:
        m = self.movement
        return {"address": m.address, "asset": m.asset, "tx_hash": m.tx_hash,
                "direction": "in" if m.delta > 0 else "out", "amount": str(abs(m.delta)),
                "block": m.height, "block_time": m.time.isoformat(), "side": self.side,
                "age_seconds": int((now - m.time).total_seconds())}


def items(movements: Iterable[Movement], cut_off: datetime, pinned: int) -> list[Item]:
    """The reconciling items among `movements` for books cut at `cut_off` and a chain
    read at block `pinned`, by (address, asset, height, key): unique per movement key."""
    unique = {m.key: m for m in movements}
    found = []
    for m in unique.values():
        if m.height <= pinned and m.time > cut_off:
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
