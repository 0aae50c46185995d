"""Wallet shards: one chain's wallets split into `shards` stable parts, so that several
replicas can share the balance reads of one large chain (scale-out on PostgreSQL).

A wallet's shard is a hash of its canonical address modulo the chain's shard count: it
never depends on the ledger's order or size, and every replica computes the same one.
Shard 0 also scans the chain's new blocks for the transfers of *every* wallet (the scan
cursor is the chain's); the other shards read and reconcile their wallets' balances,
pinned where they can at the block the scan has reached, so that balance continuity
between a shard's checkpoints always has the flows it needs. With one shard (the
default) a shard is the whole chain.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from daemon.inputs.chain_settings import ChainSettings


def shard_of(address: str, count: int) -> int:
    """The shard (0..count-1) of the wallet at canonical `address`."""
    if count == 1:
        return 0
    digest = hashlib.sha256(address.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count` of one chain's wallets."""

    chain: str
    index: int = 0
    count: int = 1

    @property
    def key(self) -> str:
        """The unit of work a replica leases: the chain's name when it is not split."""
        return self.chain if self.count == 1 else f"{self.chain}/{self.index}-of-{self.count}"

    @property
    def scans(self) -> bool:
        """Whether this shard's cycles scan the chain's blocks for transfers."""
        return self.index == 0

    def owns(self, address: str) -> bool:
        """Whether the wallet at `address` is read by this shard."""
        return shard_of(address, self.count) == self.index


def shards(chain: ChainSettings) -> list[Shard]:
    """Every shard of `chain`, in order."""
    return [Shard(chain.name, index, chain.shards) for index in range(chain.shards)]
