"""What a replica keeps per wallet shard between cycles (the service's memory of the
books' slices and of the newest stored balances; daemon/store/observations.py Resident)."""

from __future__ import annotations

import threading
from array import array
from typing import NamedTuple

from chains.types import Address, BalanceObservation, ChainHead
from daemon.inputs.chain_settings import ChainSettings
from daemon.rules.recheck import Circle, Reads
from daemon.rules.reconcile import LedgerView, WalletView
from daemon.rules.shards import Shard, shard_of
from daemon.runtime.memory import settle
from daemon.store.cycle import CycleInput, CycleWrite
from daemon.store.observations import Resident


class Slice(NamedTuple):
    """One wallet shard's part of one version of the books."""

    ledger: LedgerView
    """The books it was cut from."""
    mine: LedgerView
    """The shard's books."""
    sorted: list[Address]
    """The shard's addresses, sorted."""
    addresses: list[Address]
    """Every address of the chain, sorted (what shard 0 scans for; empty for others)."""
    watched: frozenset[Address]
    """The same addresses as a set (a scan's membership test, built once)."""
    circle: Circle | None
    """The shard's wallets on the re-read circle (None: incremental reads are off)."""


class ShardMemory:
    """What a replica keeps per wallet shard between cycles: its slice of the current
    books and its newest stored balances (`Resident`), so that a steady cycle costs what
    it reads, not what is watched."""

    def __init__(self) -> None:
        self._slices: dict[str, Slice] = {}
        """Per shard key: its slice of the books, recomputed when the books change."""
        self._resident: dict[str, tuple[LedgerView, Resident]] = {}
        """Per shard key: the books and the shard's newest stored balances its last cycle
        left, while the books stay the same."""
        self._split: dict[tuple[str, int], tuple[LedgerView, array[int]]] = {}
        """Per chain and shard count: the shard of each wallet of the books, in their
        order, hashed once for the shards this replica holds (a million addresses hashed
        per shard: seconds)."""
        self._splitting = threading.Lock()

    def take(self, shard: Shard, ledger: LedgerView) -> tuple[Resident | None, Resident | None]:
        """The shard's kept balances, taken out until its cycle is recorded (`keep`): the
        ones usable with `ledger` (None when kept with other books), and whatever was
        kept (None: nothing)."""
        kept = self._resident.pop(shard.key, None)
        if kept is None:
            return None, None
        return (kept[1] if kept[0] is ledger else None), kept[1]

    def slice(self, ledger: LedgerView, chain: ChainSettings, shard: Shard) -> Slice:
        """The shard's books, its addresses sorted, the chain's addresses sorted and the
        shard's wallets on the re-read circle, computed once per version of the books (a
        million wallets: seconds of hashing and sorting per cycle)."""
        cached = self._slices.get(shard.key)
        if cached is not None and cached.ledger is ledger:
            return cached
        mine = ledger if shard.count == 1 else LedgerView(
            ledger.chain, self._part(ledger, shard), ledger.cut_off)
        sorted_mine = sorted(mine.wallets)
        addresses = (sorted_mine if shard.count == 1 else sorted(ledger.wallets)) \
            if shard.scans else []  # only shard 0 scans
        circle = Circle(sorted_mine, mine.wallets) if chain.full_recheck_seconds > 0 else None
        cached = self._slices[shard.key] = Slice(ledger, mine, sorted_mine, addresses,
                                                  frozenset(addresses), circle)
        settle(len(mine.wallets))  # before a first (full) read walks them in every pass
        return cached

    def _part(self, ledger: LedgerView, shard: Shard) -> dict[Address, WalletView]:
        """The wallets of `ledger` in `shard`, from one split per version of the books
        shared by the shards of its chain (they ask side by side)."""
        key = (shard.chain, shard.count)
        with self._splitting:
            split = self._split.get(key)
            if split is None or split[0] is not ledger:
                split = self._split[key] = (ledger, array("I", (
                    shard_of(address, shard.count) for address in ledger.wallets)))
        index = shard.index
        return {address: wallet for (address, wallet), of in
                zip(ledger.wallets.items(), split[1], strict=True) if of == index}

    @staticmethod
    def carried_differing(chain: ChainSettings, chosen: Reads, resident: Resident | None,
                          block: ChainHead, source: str) -> list[BalanceObservation]:
        """The carried pairs that can have a balance finding, stated at `block`: those whose
        stored amount differs from the books (every carried pair, without a resident)."""
        if not chosen.carries_stored:
            return []
        if resident is None:
            return chosen.carry(chain.assets, block, source)
        return chosen.carry(chain.assets, block, source, resident.differing)

    def keep(self, chain: ChainSettings, shard: Shard, ledger: LedgerView, mine: LedgerView,
             cycle: CycleInput, write: CycleWrite, resident: Resident | None,
             before: Resident | None) -> bool:
        """Keep the shard's newest stored balances for its next cycle: the ones this cycle
        started from with what it stored (a cycle that read every wallet starts afresh).
        Returns whether they were loaded from the store rather than kept (`before`), or
        the books changed: long-lived structures were built."""
        if chain.full_recheck_seconds <= 0 or write.checkpoint is None:
            return False
        loaded = resident is not None and resident is not before
        if cycle.read is None or resident is None:
            resident = Resident.of(write.checkpoint, {}, mine.wallets,
                                   [asset.symbol for asset in chain.assets])
        resident.advance(write.checkpoint, cycle.fresh(), mine.wallets)
        self._resident[shard.key] = (ledger, resident)
        return loaded or before is None


__all__ = ["ShardMemory", "Slice"]
