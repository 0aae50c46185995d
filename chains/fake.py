"""An in-memory adapter for tests of the service layer: swap it in instead of patching."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from chains.errors import SourceUnavailable
from chains.types import (
    Address,
    AssetRef,
    BalanceObservation,
    BaseUnits,
    BlockLink,
    ChainHead,
    FeePayment,
    ScanResult,
    TrackedOutput,
    TransferObservation,
)


@dataclass
class FakeAdapter:
    """Serves fixed balances at a fixed head; `fail` makes every read unavailable."""

    balances_by_key: Mapping[tuple[str, str], int] = field(default_factory=dict)
    head_block: ChainHead = field(
        default_factory=lambda: ChainHead(100, "0x" + "ab" * 32))
    network: int | str = 1
    name: str = "fake://source"
    fail: bool = False
    fail_balances: bool = False
    fail_scan: bool = False
    errors: Mapping[tuple[str, str], str] = field(default_factory=dict)
    reads: int = 0
    transfers: list[TransferObservation] = field(default_factory=list)
    fees: list[FeePayment] = field(default_factory=list)
    delay: float = 0.0
    """Seconds each balances() call takes (a slow or hanging source)."""
    active: int = 0
    most_active: int = 0
    """balances() calls running at once, now and at most (overlap checks)."""

    @property
    def source(self) -> str:
        return self.name

    @property
    def requests_made(self) -> int:
        return self.reads

    def _guard(self) -> None:
        if self.fail:
            raise SourceUnavailable(self.name, "connection refused")

    def chain_id(self) -> int | str:
        self._guard()
        return self.network

    def head(self) -> ChainHead:
        self._guard()
        return self.head_block

    def block_at(self, height: int) -> ChainHead:
        self._guard()
        return ChainHead(height, f"0x{height:064x}", self.head_block.timestamp)

    def balances(
        self, addresses: Sequence[Address], assets: Sequence[AssetRef], block: ChainHead
    ) -> list[BalanceObservation]:
        self._guard()
        if self.fail_balances:
            raise SourceUnavailable(self.name, "missing trie node (pruned state)")
        self.reads += 1
        if self.delay:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            time.sleep(self.delay)
            self.active -= 1
        out = []
        for address in addresses:
            for asset in assets:
                key = (address, asset.symbol)
                error = self.errors.get(key)
                amount = None if error else BaseUnits(self.balances_by_key.get(key, 0))
                out.append(BalanceObservation(address, asset, amount, block, self.name, error))
        return out

    def scan(self, watched: Collection[Address], start: int, end: int,
             tracked: Collection[TrackedOutput] = ()) -> ScanResult:
        self._guard()
        if self.fail_scan:
            raise SourceUnavailable(self.name, "eth_getLogs timed out")
        self.reads += 1
        blocks = tuple(BlockLink(h, f"0x{h:064x}", f"0x{h - 1:064x}", None)
                       for h in range(start, end + 1))
        moved = tuple(t for t in self.transfers if start <= t.block.height <= end
                      and (t.sender in watched or t.recipient in watched))
        paid = tuple(f for f in self.fees if start <= f.block.height <= end
                     and f.payer in watched)
        return ScanResult(blocks, moved, paid, "none", 0)

    def close(self) -> None:
        return None
