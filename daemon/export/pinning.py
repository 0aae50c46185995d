"""Balances at one chosen block, for the auditor export and its `--recheck`.

EVM sources read any (recent enough) block directly. UTXO sources read only their tip,
so the balance at an earlier height H is the tip balance minus the watched wallets'
net flows in blocks H+1..tip, read through the same transfer scan the daemon uses
(a Core source follows the wallets' outputs tracked in the store).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from chains.base import ChainAdapter, OutputTracker
from chains.errors import SourceUnavailable
from chains.types import Address, BalanceObservation, BaseUnits, ChainHead
from daemon.errors import InputError
from daemon.inputs.chain_settings import ChainSettings
from daemon.store.repository import Store

MAX_ROLLBACK_BLOCKS = 2_000
"""A UTXO balance is rolled back at most this many blocks below the source's tip."""


def block_at_time(adapter: ChainAdapter, newest: ChainHead, moment: datetime) -> ChainHead:
    """Return the newest block at or below `newest` whose timestamp is ≤ `moment`
    (binary search over heights). Raises InputError when even block 0 is later."""
    target = moment.timestamp()
    if newest.timestamp is not None and newest.timestamp <= target:
        return newest
    low, high = 0, newest.height
    found: ChainHead | None = None
    while low <= high:
        middle = (low + high) // 2
        block = adapter.block_at(middle)
        if block.timestamp is None:
            raise SourceUnavailable(adapter.source, f"block {middle} has no timestamp")
        if block.timestamp <= target:
            found, low = block, middle + 1
        else:
            high = middle - 1
    if found is None:
        raise InputError(f"--as-of {moment.isoformat()} is before the chain's first block")
    return found


def pinned_balances(adapter: ChainAdapter, chain: ChainSettings, store: Store,
                    addresses: Sequence[Address], height: int | None = None,
                    as_of: datetime | None = None) -> tuple[ChainHead, list[BalanceObservation]]:
    """Return the block pinned (by `height`, else the newest at confirmation depth no later
    than `as_of`) and every (address, asset) balance at it.

    Raises SourceUnavailable, DecodeError, InputError (a block the source cannot reach).
    """
    head = adapter.head()
    if height is None:
        depth = adapter.block_at(max(0, head.height - chain.confirmations))
        block = block_at_time(adapter, depth, as_of) if as_of else depth
    else:
        if height > head.height:
            raise InputError(f"{chain.name}: block {height} is beyond the source's head "
                             f"({head.height})")
        block = adapter.block_at(height)
    if chain.family == "evm":
        return block, adapter.balances(addresses, chain.assets, block)
    return block, _utxo_at(adapter, chain, store, addresses, block)


def _utxo_at(adapter: ChainAdapter, chain: ChainSettings, store: Store,
             addresses: Sequence[Address], block: ChainHead) -> list[BalanceObservation]:
    tip_observations = adapter.balances(addresses, chain.assets, block)
    seen = {o.block for o in tip_observations if o.amount is not None}
    if len(seen) > 1:
        raise SourceUnavailable(adapter.source, "balances were read at different tips")
    tip = seen.pop() if seen else block
    if tip.height < block.height:
        raise SourceUnavailable(adapter.source, f"the source's tip {tip.height} is below the "
                                                f"pinned block {block.height}")
    if tip.height - block.height > MAX_ROLLBACK_BLOCKS:
        raise InputError(f"{chain.name}: block {block.height} is more than "
                         f"{MAX_ROLLBACK_BLOCKS} blocks below the tip")
    net: dict[Address, int] = defaultdict(int)
    if tip.height > block.height:
        seeded, tracked = store.tracking(chain.name, block.height)
        if isinstance(adapter, OutputTracker) and not set(addresses) <= seeded:
            raise InputError(f"{chain.name}: a core-rpc source can roll balances back below "
                             "its tip only for wallets the daemon already tracks; run "
                             "`segwatch run --once` first")
        before = [row.output for row in tracked if row.unspent_after(block.height)]
        scan = adapter.scan(addresses, block.height + 1, tip.height, before)
        if not scan.blocks or scan.blocks[-1].hash != tip.hash:
            raise SourceUnavailable(adapter.source, "the chain moved while rolling back")
        for t in scan.transfers:
            net[t.recipient] += t.amount
            if t.sender is not None:
                net[t.sender] -= t.amount
        for fee in scan.fees:
            net[fee.payer] -= fee.amount
    return [BalanceObservation(o.address, o.asset, None if o.amount is None
                               else BaseUnits(o.amount - net[o.address]), block, o.source,
                               o.error) for o in tip_observations]
