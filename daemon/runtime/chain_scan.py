"""Reading the next transfer scan range, failing over to a chain's other sources and, with
`verify >= 2`, checked block by block against a second source (daemon/runtime/scanning.py
plans the range; the adapters read it)."""

from __future__ import annotations

from collections.abc import Sequence

from chains.base import ChainAdapter, OutputTracker
from chains.errors import ChainMismatch, DecodeError, SourceUnavailable
from chains.types import Address, ChainHead
from daemon.inputs.chain_settings import ChainSettings
from daemon.runtime.scanning import compare_scans, plan_scan
from daemon.runtime.sources import AdapterFactory, Sources
from daemon.store.repository import Store
from daemon.store.transfers import ScanPlan, ScanState, Seed, TrackedRow


class ChainScanner:
    """Scans a chain's new blocks for the watched wallets' transfers (shard 0's part of a
    cycle)."""

    def __init__(self, store: Store, sources: Sources, adapters: AdapterFactory) -> None:
        self.store = store
        self.sources = sources
        self._adapters = adapters

    def scan(self, chain: ChainSettings, adapter: ChainAdapter, head: ChainHead,
             addresses: Sequence[Address], watched: frozenset[Address]
             ) -> tuple[ScanPlan | None, str | None, Seed | None]:
        """Plan and read the next scan range of the `watched` wallets (`addresses`,
        sorted), failing over to the chain's other sources; when none can serve it, the
        failures of all become the scan error."""
        state = self.store.scan_state(chain.name)
        seeded, tracked = self.store.tracking(
            chain.name, min(state.recent, default=state.height) if state else 0)
        failures: list[str] = []
        try:
            scanned = self._result(chain, adapter, state, head, addresses, watched,
                                   seeded, tracked)
            refused = self._verify(chain, adapter, scanned[0], watched, tracked)
            return scanned if refused is None else (None, refused, scanned[2])
        except (SourceUnavailable, DecodeError) as exc:
            failures.append(self.sources.failed(chain, adapter.source, exc))
        for source in chain.sources:
            other = self._adapters(chain, source)
            try:
                if other.source == adapter.source:
                    continue
                self.sources.check_chain(chain, other)
                return self._result(chain, other, state, head, addresses, watched,
                                    seeded, tracked)
            except (SourceUnavailable, DecodeError, ChainMismatch) as exc:
                failures.append(self.sources.failed(chain, other.source, exc))
            finally:
                self.sources.release(chain, other)
        return None, "; ".join(failures), None

    def _verify(self, chain: ChainSettings, primary: ChainAdapter, plan: ScanPlan | None,
                watched: frozenset[Address], tracked: Sequence[TrackedRow]) -> str | None:
        """With `verify >= 2`, read the scanned range again from another source and compare
        block hashes and each block's transfer count (`compare_scans`). Returns why the
        scan is refused (the cursor then stays: never a silent pass), or None."""
        if chain.verify < 2 or plan is None or not plan.result.blocks:
            return None
        start, end = plan.result.blocks[0].height, plan.result.blocks[-1].height
        before = [row.output for row in tracked if row.unspent_after(start - 1)]
        failures = []
        for source in chain.sources:
            other = self._adapters(chain, source)
            try:
                if other.source == primary.source:
                    continue
                self.sources.check_chain(chain, other)
                differs = compare_scans(plan.result,
                                        other.scan(watched, start, end, before))
                if differs is None:
                    return None
                failures.append(f"{other.source}: {differs}")
                self.sources.failed(chain, other.source, SourceUnavailable(other.source,
                                                                           differs))
            except (SourceUnavailable, DecodeError, ChainMismatch) as exc:
                failures.append(self.sources.failed(chain, other.source, exc))
            finally:
                self.sources.release(chain, other)
        return f"scan of blocks {start}-{end} not verified by a second source: " + \
            "; ".join(failures or ["no other source"])

    def _result(self, chain: ChainSettings, adapter: ChainAdapter, state: ScanState | None,
                head: ChainHead, addresses: Sequence[Address], watched: frozenset[Address],
                seeded: set[str], tracked: list[TrackedRow]
                ) -> tuple[ScanPlan | None, None, Seed | None]:
        """Seed wallets not tracked yet (Core sources), then plan and read the scan."""
        seed = None
        new = [a for a in addresses if a not in seeded] \
            if isinstance(adapter, OutputTracker) else []
        if new:
            assert isinstance(adapter, OutputTracker)
            block, outputs = adapter.unspent(new)
            seed = Seed(block, tuple(new), tuple(outputs))
            tracked = [*tracked, *(TrackedRow(o, None) for o in outputs)]
        if state is None:
            return None, None, seed
        return plan_scan(adapter, chain, state, head, watched, tracked), None, seed


__all__ = ["ChainScanner"]
