"""One cycle's choice of wallets to read: scan first, then read what the scan saw touched,
the wallets with open findings and the rotating slice (daemon/rules/recheck.py decides).

`CycleReads.choose` is handed to `Sources.read`, which calls it with the source, its head
and the block it is about to read at. Shard 0 scans there (once per cycle, whichever
source the balances finally come from); the other shards rely on the stored scan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from chains.base import ChainAdapter, OutputTracker
from chains.types import Address, BaseUnits, ChainHead
from daemon.inputs.chain_settings import ChainSettings
from daemon.rules.recheck import (
    NO_BASIS,
    Circle,
    Coverage,
    Reads,
    plan_computed,
    plan_reads,
    traced_since,
    utxo_balances,
)
from daemon.rules.reconcile import LedgerView
from daemon.rules.shards import Shard
from daemon.store.observations import Resident
from daemon.store.repository import Store
from daemon.store.transfers import ScanPlan, Seed

Scan = Callable[[ChainAdapter, ChainHead], tuple[ScanPlan | None, str | None, Seed | None]]
"""Plan and read the next scan range from a source at its head: (plan, error, seed)."""

class CycleReads:
    """Scans (shard 0) and chooses the wallets one cycle reads."""

    def __init__(self, store: Store, chain: ChainSettings, shard: Shard, mine: LedgerView,
                 wallets: Sequence[Address], scan: Scan, clock: Callable[[], datetime],
                 resident: Resident | None = None, circle: Circle | None = None) -> None:
        """`mine`: the books of the shard's wallets; `wallets`: their addresses, sorted;
        `resident`: the shard's newest balances as the previous cycle left them;
        `circle`: the wallets placed on the re-read circle."""
        self.circle = circle
        self.store = store
        self.chain = chain
        self.shard = shard
        self.wallets = wallets
        self.scan = scan
        self.clock = clock
        self.mine = mine
        self.based = False
        self.resident = resident
        """The shard's newest stored balances once `choose` ran (None: every wallet is read
        or none was stored)."""
        self.basis = NO_BASIS
        """Loaded when the block to read at is known (`choose`): a shard that does not
        scan reads at a block shard 0 scanned, maybe since this cycle started, and its
        basis must hold that scan (the transfers that touched wallets, the block's hash)."""
        self.scanned = False
        self.plan: ScanPlan | None = None
        self.scan_error: str | None = None
        self.seed: Seed | None = None

    def choose(self, adapter: ChainAdapter, head: ChainHead, block: ChainHead) -> Reads:
        """Scan (shard 0, first call only), then decide which wallets to read at `block`."""
        if self.shard.scans and not self.scanned:
            self.plan, self.scan_error, self.seed = self.scan(adapter, head)
            self.scanned = True
        if not self.based and self.chain.full_recheck_seconds > 0:
            self.basis, self.resident = self.store.recheck_basis(
                self.mine, (self.shard.index, self.shard.count),
                [asset.symbol for asset in self.chain.assets], self.resident)
            self.based = True
        if self.chain.family == "utxo" and isinstance(adapter, OutputTracker) and \
                self.chain.full_recheck_seconds > 0 and len(self.chain.assets) == 1:
            computed, unknown = self.tracked_balances(block)
            return plan_computed(self.wallets, self.chain.assets[0].symbol, self.basis,
                                 self.coverage(), block, self.clock(),
                                 self.chain.full_recheck_seconds, computed, unknown)
        return plan_reads(self.wallets, [a.symbol for a in self.chain.assets], self.basis,
                          self.coverage(), block, self.clock(),
                          self.chain.full_recheck_seconds,
                          traces_needed=self.chain.family == "evm", circle=self.circle)

    def tracked_balances(self, block: ChainHead
                         ) -> tuple[dict[Address, BaseUnits], set[Address]]:
        """The balances at `block` of the wallets whose outputs were tracked before this
        cycle (the stored outputs, with what this cycle's scan created and spent), and the
        wallets that were not (seeded now, or never): those must be read."""
        seeded, rows = self.store.tracking(self.chain.name, block.height)
        plan, seed = self.plan, self.seed
        spent = {(s.txid, s.vout): s.height for s in plan.result.spent} if plan else {}
        outputs = [(r.output, r.spent_height if r.spent_height is not None
                    else spent.get(r.output.outpoint)) for r in rows]
        if plan is not None:
            outputs += [(o, spent.get(o.outpoint)) for o in plan.result.created]
        fresh = set(seed.addresses) if seed else set()
        unknown = {w for w in self.wallets if w in fresh or w not in seeded}
        return utxo_balances(outputs, block.height), unknown

    def coverage(self) -> Coverage:
        """What the stored scan and this cycle's scan (shard 0) cover."""
        basis, plan = self.basis, self.plan
        if self.scan_error:
            return Coverage(error=self.scan_error)
        if plan is None:
            return Coverage(recent=basis.recent, traced_from=basis.traced_from)
        fork = plan.fork_point
        recent = {h: x for h, x in basis.recent.items() if fork is None or h <= fork}
        recent.update((b.height, b.hash) for b in plan.result.blocks)
        touched = {f.transfer.recipient for f in plan.flows}
        touched.update(f.transfer.sender for f in plan.flows if f.transfer.sender)
        touched.update(fee.payer for fee in plan.result.fees)
        blocks = plan.result.blocks
        traced_from = traced_since(basis.traced_from, blocks[0].height if blocks else None,
                                   plan.result.traces != "none")
        return Coverage(frozenset(touched), fork, recent, traced_from)


__all__ = ["CycleReads", "Scan"]
