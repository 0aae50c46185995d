"""Plain data shapes that adapters produce. Amounts are `int` base units, never floats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

Address = NewType("Address", str)
"""A canonical address: EIP-55 checksummed for EVM chains."""

BaseUnits = NewType("BaseUnits", int)
"""An amount in the asset's smallest unit (wei, satoshi)."""


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A block a read is pinned to."""

    height: int
    hash: str
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class AssetRef:
    """A native coin (`contract is None`) or a token contract on one chain."""

    symbol: str
    decimals: int
    contract: Address | None = None

    @property
    def is_native(self) -> bool:
        return self.contract is None


@dataclass(frozen=True, slots=True)
class BalanceObservation:
    """What a source reported for one (address, asset) at one block.

    Exactly one of `amount` and `error` is set: a balance that could not be read
    (a token whose `balanceOf` reverts, malformed return data) carries the reason.
    """

    address: Address
    asset: AssetRef
    amount: BaseUnits | None
    block: ChainHead
    source: str
    error: str | None = None
