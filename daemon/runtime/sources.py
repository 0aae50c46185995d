"""Source selection: which of a chain's configured sources a cycle reads, and at which block.

- Fresh heads: every source is asked for its head; one lagging the best head by more than
  `max_lag_blocks`, or whose newest block is older than `head_age_limit`, is not used
  (`NoFreshSource` when sources answered but none is fresh).
- Not behind the last checkpoint: a source whose pinned block is below the last
  reconciled block is dropped, so older balances never self-clear a finding.
- Failover of balance reads: balances are read from the first fresh source that can,
  in configured order; which wallets, the service decides once the block is known
  (`Choose`: scan first, then read what changed; daemon/runtime/reads.py), the others
  are carried at the block.
- `verify = 2`: the same pairs are read again from the next fresh source and
  cross-checked; a disagreement is read once more from both before it is raised
  (`source_disagreement` findings).
- A wallet shard that does not scan reads at the newest block shard 0 has scanned, so
  that its balance continuity has the flows it needs.

Every source is checked once to serve the configured chain (`ChainMismatch` otherwise);
the observer is told each source's requests and failures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

import structlog

from chains.base import ChainAdapter
from chains.errors import ChainMismatch, DecodeError, SegwatchError, SourceUnavailable
from chains.types import Address, BalanceObservation, ChainHead
from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.source_settings import SourceSettings
from daemon.rules.recheck import Reads, everything
from daemon.rules.reconcile import CrossCheck, Finding, LedgerView, cross_check
from daemon.rules.shards import Shard
from daemon.store.models import Checkpoint
from daemon.store.repository import Store

AdapterFactory = Callable[[ChainSettings, SourceSettings], ChainAdapter]
Choose = Callable[[ChainAdapter, ChainHead, ChainHead], Reads]
"""Given the source, its head and the block a cycle reads at, which wallets to read
(the service scans first, then decides: daemon/rules/recheck.py)."""
log = structlog.get_logger("segwatch")


class NoFreshSource(SourceUnavailable):
    """Every source that answered is behind the best head or older than its SLA."""


class SourceObserver(Protocol):
    """Told how much each source was used and how it failed (the daemon's metrics)."""

    def requests(self, chain: str, source: str, count: int) -> None: ...

    def source_error(self, chain: str, source: str, error: SegwatchError) -> None: ...


class Read(NamedTuple):
    """One cycle's balance read (`Sources.read`)."""

    adapter: ChainAdapter
    """The source read (the caller closes it)."""
    head: ChainHead
    block: ChainHead
    """The block read at."""
    observations: list[BalanceObservation]
    """The balances read, and those computed for the carried wallets when the carried
    amounts are not the stored ones (`Reads.carries_stored`: the caller carries those)."""
    disagreements: tuple[Finding, ...]
    """`source_disagreement` findings of a cross-check (`verify = 2`)."""
    reads: Reads


class Sources:
    """Source selection over an adapter factory: fresh sources, failover, cross-checks."""

    def __init__(self, store: Store, adapters: AdapterFactory,
                 clock: Callable[[], datetime],
                 observer: SourceObserver | None = None) -> None:
        self.store = store
        """Read for the scan state and the last checkpoint of a shard."""
        self.adapters = adapters
        self.clock = clock
        self.observer = observer
        self.verified: set[tuple[str, str]] = set()
        """(chain, source) pairs already checked to serve the configured chain."""

    def read(self, chain: ChainSettings, ledger: LedgerView, shard: Shard,
             choose: Choose | None = None, addresses: Sequence[Address] | None = None
             ) -> Read:
        """Read the wallets' balances at the pinned block from the first fresh source
        that can (failing over in order), cross-checked by a second one with `verify = 2`.
        `choose` picks the wallets read (the rest are carried at the block); without it
        every wallet is read; `addresses` are the ledger's, sorted (the caller may keep
        them). Raises NoFreshSource, SourceUnavailable.
        """
        addresses = sorted(ledger.wallets) if addresses is None else addresses
        fresh = self.fresh(chain, shard)
        failures: list[str] = []
        try:
            while fresh:
                adapter, head = fresh.pop(0)
                try:
                    block, observations, reads = self._balances(chain, adapter, head,
                                                                addresses, shard, choose)
                except (SourceUnavailable, DecodeError) as exc:
                    failures.append(self.failed(chain, adapter.source, exc))
                    self.release(chain, adapter)
                    continue
                disagreements: tuple[Finding, ...] = ()
                if chain.verify >= 2 and observations:
                    try:
                        checked = self._verify(chain, ledger, adapter, fresh, block,
                                               observations)
                    except BaseException:
                        self.release(chain, adapter)
                        raise
                    observations, disagreements = list(checked.observations), checked.findings
                if not reads.carries_stored:  # computed balances are stored and compared
                    observations += reads.carry(chain.assets, block, adapter.source)
                return Read(adapter, head, block, observations, disagreements, reads)
            raise SourceUnavailable(chain.name, "; ".join(failures))
        finally:
            for other, _ in fresh:
                self.release(chain, other)

    def _balances(self, chain: ChainSettings, adapter: ChainAdapter, head: ChainHead,
                  addresses: Sequence[Address], shard: Shard, choose: Choose | None
                  ) -> tuple[ChainHead, list[BalanceObservation], Reads]:
        height = max(0, head.height - chain.confirmations)
        block = head if height == head.height else adapter.block_at(height)
        if not shard.scans and chain.family == "evm":
            block = self._scanned_block(chain, adapter, shard, block)
        reads = choose(adapter, head, block) if choose else everything(addresses, "", None)
        wanted = list(reads.read)
        observations = adapter.balances(wanted, chain.assets, block) if wanted else []
        seen = {o.block for o in observations if o.amount is not None}
        if len(seen) == 1 and (read_at := seen.pop()) != block:
            # a UTXO source reads at its tip, not at `block`: past what the scan covered,
            # so nothing can be carried there
            if not reads.full:
                observations += adapter.balances(list(reads.carried), chain.assets, block)
                reads = everything(addresses, f"the source read at block {read_at.height}, "
                                              f"not {block.height}", reads.swept_at)
            if {o.block for o in observations if o.amount is not None} == {read_at}:
                block = read_at
        return block, observations, reads

    def _scanned_block(self, chain: ChainSettings, adapter: ChainAdapter, shard: Shard,
                       block: ChainHead) -> ChainHead:
        """The block a shard that does not scan reads at: the newest block shard 0 has
        scanned, when it is below `block` by at most `max_lag_blocks` and not below the
        shard's last checkpoint, so that its balance continuity always has the flows it
        needs; else `block` itself."""
        state = self.store.scan_state(chain.name)
        if state is None or state.height >= block.height or \
                block.height - state.height > chain.max_lag_blocks:
            return block
        last = self.store.last_checkpoint(chain.name, (shard.index, shard.count))
        scanned = adapter.block_at(state.height)
        if (last is not None and scanned.height < last.block_height) or \
                state.recent.get(scanned.height, scanned.hash) != scanned.hash:
            return block
        return scanned

    def _verify(self, chain: ChainSettings, ledger: LedgerView, primary: ChainAdapter,
                others: Sequence[tuple[ChainAdapter, ChainHead]], block: ChainHead,
                observations: list[BalanceObservation]) -> CrossCheck:
        """Read the same pairs at `block` from the next fresh source that can; without
        one, nothing is verified (every pair becomes a read error). A disagreement is
        read again from both sources before it is raised (`_recheck`)."""
        addresses = sorted({o.address for o in observations})
        split: list[str] = []
        failures: list[str] = []
        confirmed = False
        for adapter, _ in others:
            try:
                theirs = adapter.block_at(block.height).hash
                if theirs != block.hash:
                    split.append(f"{adapter.source} has {theirs}")
                    self.failed(chain, adapter.source, SourceUnavailable(
                        adapter.source, f"block {block.height} is {theirs} here, "
                                        f"{block.hash} at {primary.source}"))
                    continue
                confirmed = True
                second = adapter.balances(addresses, chain.assets, block)
            except (SourceUnavailable, DecodeError) as exc:
                failures.append(self.failed(chain, adapter.source, exc))
                log.warning("verify_source_failed", chain=chain.name, error=failures[-1])
                continue
            checked = cross_check(ledger, observations, second)
            if checked.findings:
                checked = self._recheck(chain, ledger, primary, adapter, block, checked)
            return checked
        # no checkpoint at a block the sources do not agree on, or no other source vouched for
        if split:
            raise SourceUnavailable(chain.name, f"sources disagree on block {block.height}: "
                                                f"{primary.source} has {block.hash}, "
                                                + ", ".join(split))
        if not confirmed:
            raise SourceUnavailable(chain.name, f"block {block.height} is not confirmed by a "
                                                "second source: "
                                                + ("; ".join(failures) or "none is fresh"))
        return cross_check(ledger, observations, ())  # the block agreed, its balances not

    def _recheck(self, chain: ChainSettings, ledger: LedgerView, primary: ChainAdapter,
                 second: ChainAdapter, block: ChainHead, checked: CrossCheck) -> CrossCheck:
        """Read the disputed wallets once more from both sources at `block`: only a
        disagreement that repeats is raised. One that does not (a node answering with the
        state of a block it is mining, a load-balanced provider whose backends briefly
        differ) is no reason to wake anybody; the pairs both now agree on are kept with
        the agreed amounts. When a re-read fails or is of another block (a UTXO source
        reads at its tip), the first comparison stands."""
        disputed = sorted({f.address for f in checked.findings})
        try:
            first = primary.balances(disputed, chain.assets, block)
            again = cross_check(ledger, first, second.balances(disputed, chain.assets, block))
        except (SourceUnavailable, DecodeError) as exc:
            log.warning("verify_recheck_failed", chain=chain.name, error=exc.user_message)
            return checked
        if any(o.block.hash != block.hash for o in first if o.amount is not None):
            return checked  # a UTXO source re-read at a newer tip: not the cycle's block
        fresh = {(o.address, o.asset.symbol): o for o in again.observations}
        log.info("verify_rechecked", chain=chain.name, disputed=len(disputed),
                 still=len(again.findings))
        return CrossCheck(tuple(fresh.get((o.address, o.asset.symbol), o)
                                for o in checked.observations), again.findings)

    def fresh(self, chain: ChainSettings, shard: Shard
              ) -> list[tuple[ChainAdapter, ChainHead]]:
        """Return the sources whose head is fresh, in configured order, with their heads.

        A source lagging the best head by more than `max_lag_blocks`, or whose newest
        block is older than `head_age_limit`, is not used. Raises NoFreshSource when
        sources answered but none is fresh, SourceUnavailable when none answered
        (a source serving another chain counts as not answering).
        """
        answered: list[tuple[ChainAdapter, ChainHead]] = []
        failures: list[str] = []
        try:
            for source in chain.sources:
                adapter = self.adapters(chain, source)
                try:
                    self.check_chain(chain, adapter)
                    answered.append((adapter, adapter.head()))
                except (SourceUnavailable, DecodeError, ChainMismatch) as exc:
                    failures.append(self.failed(chain, adapter.source, exc))
                    self.release(chain, adapter)
        except BaseException:
            for adapter, _ in answered:
                self.release(chain, adapter)
            raise
        if not answered:
            raise SourceUnavailable(chain.name, "; ".join(failures) or "no source configured")
        now = self.clock().timestamp()
        usable = []
        for adapter, head in answered:
            reason = _implausible(chain, head, now)
            if reason is None:
                usable.append((adapter, head))
                continue
            failures.append(self.failed(chain, adapter.source,
                                        NoFreshSource(adapter.source, reason)))
            self.release(chain, adapter)
        fresh: list[tuple[ChainAdapter, ChainHead]] = []
        if usable:
            reference = self._reference(chain, usable)
            for adapter, head in usable:
                if reference is None or head.height > reference:
                    reason = f"head {head.height} is not confirmed by any other source"
                elif reference - head.height > chain.max_lag_blocks:
                    reason = f"{reference - head.height} blocks behind"
                else:
                    fresh.append((adapter, head))
                    continue
                failures.append(self.failed(chain, adapter.source,
                                            NoFreshSource(adapter.source, reason)))
                self.release(chain, adapter)
        if not fresh:
            raise NoFreshSource(chain.name, "no fresh source: " + "; ".join(failures))
        return self._not_behind_last_read(chain, shard, fresh)

    def _reference(self, chain: ChainSettings, heads: Sequence[tuple[ChainAdapter, ChainHead]]
                   ) -> int | None:
        """The agreed reference height, never taken from the highest claim alone.

        One source: its head. Several: the highest head that another source confirms,
        by height (within `max_lag_blocks`) and by the hash at their common height. When
        no two heads are that close (a source claiming a head far ahead, or one far
        behind), the highest head that another source has on its own chain with the same
        hash: a lone claim nobody else has is never the reference. None when the sources
        agree on no block at all."""
        if len(heads) == 1:
            return heads[0][1].height
        cache: dict[tuple[int, int], str | None] = {}
        unanswered: list[int] = []

        def hash_at(index: int, height: int) -> str | None:
            adapter, head = heads[index]
            if height == head.height:
                return head.hash
            if height > head.height:
                return None
            if (index, height) not in cache:
                try:
                    cache[index, height] = adapter.block_at(height).hash
                except (SourceUnavailable, DecodeError) as exc:
                    self.failed(chain, adapter.source, exc)
                    unanswered.append(index)
                    cache[index, height] = None
            return cache[index, height]

        def agree(i: int, j: int, height: int) -> bool:
            mine = hash_at(i, height)
            return mine is not None and mine == hash_at(j, height)

        heights = [head.height for _, head in heads]
        pairs = [(i, j) for i in range(len(heads)) for j in range(len(heads)) if i != j]
        confirmed = [heights[i] for i, j in pairs
                     if abs(heights[i] - heights[j]) <= chain.max_lag_blocks
                     and agree(i, j, min(heights[i], heights[j]))]
        if confirmed:
            return max(confirmed)
        held = [(i, j) for i, j in pairs if heights[j] >= heights[i] and agree(i, j, heights[i])]
        if not held and unanswered:
            # nothing shows a lie, a source just failed to answer for a block (a transient
            # error): the lowest head, which no source can have pushed forward
            log.warning("heads_unconfirmed", chain=chain.name,
                        heads={a.source: h.height for a, h in heads})
            return min(heights)
        if not held:
            return None
        # The lower head is on the other's chain. The higher one is the reference when it
        # extends that chain at a plausible pace (a source behind by a few blocks); a
        # claim far beyond what the time between the two heads allows is not used.
        reference = max(heights[i] for i, _ in held)
        ahead = [heights[j] for i, j in held if heights[i] == reference and heights[j] > reference
                 and _plausible_lead(chain, heads[i][1], heads[j][1])]
        chosen = max(ahead, default=reference)
        log.warning("heads_disagree", chain=chain.name,
                    heads={a.source: h.height for a, h in heads}, reference=chosen)
        return chosen

    def _not_behind_last_read(self, chain: ChainSettings, shard: Shard,
                              fresh: list[tuple[ChainAdapter, ChainHead]]
                              ) -> list[tuple[ChainAdapter, ChainHead]]:
        """Drop fresh sources whose pinned block would be below the last checkpoint's:
        reading older balances could self-clear a finding that still holds (and reopen it
        a cycle later). When every fresh source is behind, the cycle fails (no finding:
        a reorg to a shorter branch does that too, briefly)."""
        checkpoint = self.store.last_checkpoint(chain.name, (shard.index, shard.count))
        if checkpoint is None:
            return fresh
        depth = chain.confirmations if chain.family == "evm" else 0
        ahead = [(a, h) for a, h in fresh if h.height - depth >= checkpoint.block_height]
        if not ahead and _implausible_checkpoint(checkpoint, fresh):
            log.warning("checkpoint_implausible", chain=chain.name,
                        checkpoint=checkpoint.block_height,
                        heads={a.source: h.height for a, h in fresh})
            return fresh
        for adapter, head in fresh:
            if (adapter, head) not in ahead:
                self.failed(chain, adapter.source, NoFreshSource(
                    adapter.source, f"head {head.height} is behind the last reconciled block "
                                    f"{checkpoint.block_height}"))
                self.release(chain, adapter)
        if not ahead:
            raise SourceUnavailable(chain.name, "every fresh source is behind the last "
                                                f"reconciled block {checkpoint.block_height}")
        return ahead

    def release(self, chain: ChainSettings, adapter: ChainAdapter) -> None:
        """Close an adapter the cycle is done with, reporting its requests."""
        if self.observer is not None:
            self.observer.requests(chain.name, adapter.source, adapter.requests_made)
        adapter.close()

    def failed(self, chain: ChainSettings, source: str, error: SegwatchError) -> str:
        """Report a source failure; return its message."""
        if self.observer is not None:
            self.observer.source_error(chain.name, source, error)
        return error.user_message

    def connect(self, chain: ChainSettings, only: SourceSettings | None = None) -> ChainAdapter:
        """Return an adapter on the first source of `chain` that answers with the right chain.

        Raises ChainMismatch (a configuration error) or SourceUnavailable naming every
        source's failure.
        """
        failures: list[str] = []
        for source in [only] if only else chain.sources:
            adapter = self.adapters(chain, source)
            try:
                self.check_chain(chain, adapter)
                return adapter
            except SourceUnavailable as exc:
                failures.append(exc.user_message)
                adapter.close()
            except BaseException:
                adapter.close()
                raise
        raise SourceUnavailable(chain.name, "; ".join(failures) or "no source configured")

    def check_chain(self, chain: ChainSettings, adapter: ChainAdapter) -> None:
        """Raise ChainMismatch unless `adapter` serves the configured chain (checked once
        per source; SourceUnavailable when it does not answer)."""
        key = (chain.name, adapter.source)
        if key in self.verified:
            return
        expected = chain.chain_id if chain.family == "evm" else chain.network
        actual = adapter.chain_id()
        if actual != expected:
            raise ChainMismatch(f"source {adapter.source} serves chain {actual}, "
                                f"but chain {chain.name!r} is configured as {expected}")
        self.verified.add(key)


MAX_BLOCKS_PER_SECOND = 10
"""The fastest block pace a head ahead of the others may claim (the fastest chains make
about four blocks a second)."""


def _plausible_lead(chain: ChainSettings, lower: ChainHead, higher: ChainHead) -> bool:
    """Whether `higher` can be a real head extending `lower`'s chain: no more blocks
    ahead than the time between their stamps allows at MAX_BLOCKS_PER_SECOND (plus the
    allowed lag)."""
    if lower.timestamp is None or higher.timestamp is None:
        return False
    seconds = max(higher.timestamp - lower.timestamp, 1)
    return higher.height - lower.height <= chain.max_lag_blocks + MAX_BLOCKS_PER_SECOND * seconds


def _implausible_checkpoint(checkpoint: Checkpoint,
                            fresh: Sequence[tuple[ChainAdapter, ChainHead]]) -> bool:
    """Whether the last checkpoint cannot be a block of the chain the fresh sources
    serve: it is higher than every fresh head, yet stamped before a lower one (block
    times grow with height). A source that once claimed a head far ahead left it; the
    honest sources must not stay "behind" it forever."""
    if checkpoint.block_time is None:
        return False
    stamped = checkpoint.block_time.replace(tzinfo=checkpoint.block_time.tzinfo or UTC)
    return all(h.timestamp is not None and h.height < checkpoint.block_height
               and h.timestamp > stamped.timestamp() for _, h in fresh)


MAX_HEIGHT = 2**31 - 1
"""The highest block height stored (a 32-bit column: centuries of blocks on any chain)."""


def _implausible(chain: ChainSettings, head: ChainHead, now: float) -> str | None:
    """Why a source's head cannot be used (a height out of range, stamped in the future
    beyond the allowed drift, or older than the chain's head age limit), or None."""
    if not 0 <= head.height <= MAX_HEIGHT:
        return f"head height {head.height} is out of range"
    if head.timestamp is None:
        return None
    age = now - head.timestamp
    if -age > chain.future_limit:
        return f"block {head.height} is stamped {-age:.0f} s in the future"
    if age > chain.head_age_limit:
        return f"newest block {head.height} is {age:.0f} s old"
    return None


__all__ = ["AdapterFactory", "Choose", "NoFreshSource", "Read", "SourceObserver", "Sources"]
