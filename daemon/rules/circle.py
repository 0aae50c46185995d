"""The re-read circle and the views of what a cycle carries (PURE; daemon/rules/recheck.py).

Each wallet has a fixed position on a circle (a CRC-32 of its address); the cycles sweep
it once per `full_recheck_seconds`. `Circle` places a shard's wallets once per version of
the books, so a cycle finds the wallets of its arc by bisection instead of hashing every
address. `Remaining` and `CarriedAmounts` state what a cycle carries without listing it:
a steady cycle then costs what it reads, not what is watched.
"""

from __future__ import annotations

import zlib
from array import array
from bisect import bisect_left
from collections.abc import Collection, Container, Iterable, Iterator, Mapping, Sequence
from datetime import datetime

from chains.types import Address, BaseUnits


def position(address: str) -> float:
    """The wallet's fixed place on the re-read circle, in [0, 1)."""
    return zlib.crc32(address.encode()) / 2**32


def turn(moment: datetime, period: float) -> float:
    """Where the sweep stands at `moment`, in [0, 1)."""
    return (moment.timestamp() / period) % 1.0


class Circle:
    """A shard's wallets placed on the circle, sorted by position, and the shard's
    membership test (`members`: its books' wallets)."""

    __slots__ = ("_placed", "_positions", "members")

    def __init__(self, wallets: Iterable[Address],
                 members: Container[Address] | None = None) -> None:
        placed = sorted((position(wallet), wallet) for wallet in wallets)
        self._positions = array("d", (at for at, _ in placed))
        self._placed = [wallet for _, wallet in placed]
        self.members: Container[Address] = set(self._placed) if members is None else members

    def __iter__(self) -> Iterator[Address]:
        return iter(self._placed)

    def __len__(self) -> int:
        return len(self._placed)

    def arc(self, since: datetime, now: datetime, period: float) -> list[Address]:
        """The wallets on the arc the sweep covers from `since` to `now` (shorter than the
        circle). Both ends are computed as `turn` computes them, so the arc of one cycle
        ends exactly where the next one's starts: consecutive arcs tile the circle."""
        if (now - since).total_seconds() <= 0:
            return []
        start, end = turn(since, period), turn(now, period)
        lo, hi = bisect_left(self._positions, start), bisect_left(self._positions, end)
        if start <= end:
            return self._placed[lo:hi]
        return self._placed[lo:] + self._placed[:hi]  # the arc wraps past 0


class Remaining(Collection[Address]):
    """The wallets of `wallets` (sorted) not in `read`: what a cycle carries, counted
    without being listed (listing it walks every wallet; only a fallback needs that)."""

    __slots__ = ("_members", "_read", "_size", "_wallets")

    def __init__(self, wallets: Sequence[Address], members: Container[Address],
                 read: Collection[Address]) -> None:
        self._wallets, self._members, self._read = wallets, members, read
        self._size = len(wallets) - len(read)

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Address]:
        return (wallet for wallet in self._wallets if wallet not in self._read)

    def __contains__(self, wallet: object) -> bool:
        return wallet in self._members and wallet not in self._read


class CarriedAmounts(Mapping[tuple[Address, str], BaseUnits]):
    """The carried pairs' amounts: `amounts` (a shard's newest stored balances, every
    pair of a carried wallet among them) without the wallets `read` and the assets not
    in `symbols`; `size` pairs."""

    __slots__ = ("_amounts", "_members", "_read", "_size", "_symbols")

    def __init__(self, amounts: Mapping[tuple[Address, str], BaseUnits],
                 members: Container[Address], read: Container[Address],
                 symbols: Collection[str], size: int) -> None:
        self._amounts, self._members, self._read = amounts, members, read
        self._symbols, self._size = symbols, size

    def _carried(self, key: tuple[Address, str]) -> bool:
        return key[1] in self._symbols and key[0] in self._members and key[0] not in self._read

    def __getitem__(self, key: tuple[Address, str]) -> BaseUnits:
        if not self._carried(key):
            raise KeyError(key)
        return self._amounts[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and self._carried(key) and \
            key in self._amounts

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[tuple[Address, str]]:
        return (key for key in self._amounts if self._carried(key))


__all__ = ["CarriedAmounts", "Circle", "Remaining", "position", "turn"]
