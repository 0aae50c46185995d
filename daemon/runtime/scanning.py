"""Planning a transfer scan: which blocks to read next, and where a reorg forked.

The adapter does the reading; this module decides ranges and checks that the blocks
it got form one chain with what was scanned before.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection, Sequence

from chains.base import ChainAdapter
from chains.errors import SourceUnavailable
from chains.types import Address, BlockLink, ChainHead, ScanResult
from daemon.inputs.chain_settings import ChainSettings
from daemon.rules.flows import Flow
from daemon.store.transfers import ScanPlan, ScanState, TrackedRow, block_time

MAX_BLOCKS_PER_CYCLE = 2_000
"""A cycle scans at most this many blocks; a daemon that was down catches up over
several cycles, never skipping a block."""


def plan_scan(adapter: ChainAdapter, chain: ChainSettings, state: ScanState, head: ChainHead,
              watched: Collection[Address], tracked: Sequence[TrackedRow] = ()) -> ScanPlan:
    """Scan the blocks after the cursor up to the head (at most MAX_BLOCKS_PER_CYCLE).

    When the first new block does not extend the last scanned one, walks back to the
    fork point and rescans from there. `tracked`: the UTXO outputs followed for the
    watched wallets (each scan gets those unspent before its first block). Raises
    SourceUnavailable when the range cannot be read or the source's blocks do not form
    one chain.
    """
    def scan(start: int, end: int) -> ScanResult:
        before = [row.output for row in tracked if row.unspent_after(start - 1)]
        return adapter.scan(watched, start, end, before)

    end = min(head.height, state.height + MAX_BLOCKS_PER_CYCLE)
    if end <= state.height:
        if state.recent.get(head.height) in (head.hash, None):
            return ScanPlan(ScanResult((), (), (), "none", 0), ())
        branch = find_fork(adapter, state)  # same height or shorter, but another branch
        result = scan(branch + 1, head.height)
        _check_links(adapter.source, result.blocks)
        return ScanPlan(result, flows_of(chain, result), branch)
    result = scan(state.height + 1, end)
    _check_links(adapter.source, result.blocks)
    fork: int | None = None
    if result.blocks and result.blocks[0].parent_hash != state.hash:
        fork = find_fork(adapter, state)
        result = scan(fork + 1, end)
        _check_links(adapter.source, result.blocks)
        if result.blocks and result.blocks[0].parent_hash != state.recent.get(fork):
            raise SourceUnavailable(adapter.source, "chain changed again while rescanning")
    return ScanPlan(result, flows_of(chain, result), fork)


def find_fork(adapter: ChainAdapter, state: ScanState) -> int:
    """Return the newest remembered block the source still has on its chain."""
    for height in sorted(state.recent, reverse=True):
        if adapter.block_at(height).hash == state.recent[height]:
            return height
    raise SourceUnavailable(adapter.source, "reorg deeper than the remembered blocks "
                                            f"(below {min(state.recent, default=state.height)})")


def flows_of(chain: ChainSettings, result: ScanResult) -> tuple[Flow, ...]:
    """Resolve each transfer's asset symbol (an unconfigured token keeps its contract)."""
    symbols = {a.contract: a.symbol for a in chain.assets}
    times = {b.height: block_time(b) for b in result.blocks}
    return tuple(Flow(t, symbols.get(t.contract) or str(t.contract), times.get(t.block.height))
                 for t in result.transfers)


def compare_scans(first: ScanResult, second: ScanResult) -> str | None:
    """PURE: why two sources' scans of the same range disagree (a block hash, or a
    block's number of transfers of the watched wallets), or None when they agree.
    Internal (traced) transfers are compared only when both sources trace the same way."""
    theirs = {b.height: b.hash for b in second.blocks}
    for block in first.blocks:
        if theirs.get(block.height) != block.hash:
            return f"block {block.height} is {block.hash} at one source and " \
                   f"{theirs.get(block.height, 'missing')} at the other"
    same_traces = first.traces == second.traces

    def counts(result: ScanResult) -> Counter[int]:
        return Counter(t.block.height for t in result.transfers
                       if same_traces or t.kind != "internal")

    mine, other = counts(first), counts(second)
    for height in sorted(set(mine) | set(other)):
        if mine[height] != other[height]:
            return f"block {height} has {mine[height]} transfers of watched wallets at one " \
                   f"source and {other[height]} at the other"
    return None


def _check_links(source: str, blocks: Sequence[BlockLink]) -> None:
    """Raise SourceUnavailable naming the first block that does not extend the one before."""
    for parent, child in itertools.pairwise(blocks):
        if child.height != parent.height + 1:
            raise SourceUnavailable(source, f"block {child.height} follows block "
                                            f"{parent.height}: the range has a gap")
        if child.parent_hash != parent.hash:
            raise SourceUnavailable(source, f"block {child.height} has parent "
                                            f"{child.parent_hash}, expected the hash of block "
                                            f"{parent.height} ({parent.hash})")
