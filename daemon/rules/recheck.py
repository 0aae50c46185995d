"""Incremental reads (PURE): which wallets a cycle reads, and what it carries for the rest.

A cycle reads the balances of:
- the wallets its transfer scan saw touched since the shard's previous checkpoint (a
  transfer from or to them, a fee they paid, a reward or withdrawal they received);
- every wallet with an open finding, without a stored balance, or whose stored reading is
  an error;
- a rotating slice of the rest: each wallet has a fixed position on a circle (a CRC-32 of
  its address), and the cycles sweep the circle once per `full_recheck_seconds`, each
  reading the arc from where the previous checkpoint's sweep stopped to now. Consecutive
  arcs tile the circle, so every wallet is re-read at least once per period, whatever
  the cycles' pace.

Every other wallet is carried: its last read balance, stated at the cycle's block. That is
exact when the scan saw every way its balance can move between the two blocks (the scan
covers the span without error, the previous checkpoint's block is still on the chain and,
on EVM chains, internal transfers were traced). A change no scan can see (a direct state
edit, a rebasing token, a scan that missed something) is caught by the wallet's next
re-read: balance continuity then finds the change unexplained and the reconciliation finds
any shortfall, at most one period later. When any condition fails, the cycle reads every
wallet (`Reads.reason` says why).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain

from chains.types import (
    Address,
    AssetRef,
    BalanceObservation,
    BaseUnits,
    ChainHead,
    TrackedOutput,
)
from daemon.rules.circle import CarriedAmounts, Circle, Remaining, position


@dataclass(frozen=True, slots=True)
class Basis:
    """What the store says before a cycle reads anything (one shard of one chain)."""

    previous: ChainHead | None
    """The shard's newest checkpoint's block, when its transfers were scanned."""
    swept_at: datetime | None
    """Where that checkpoint's rotating re-read stopped (None: a full read or none)."""
    carried: Mapping[tuple[Address, str], BaseUnits]
    """Per (wallet, asset symbol), the newest stored balance, when it is an amount."""
    flagged: frozenset[Address]
    """Wallets with an open finding: read every cycle until it closes."""
    touched: frozenset[Address]
    """Wallets in stored transfers and fees above the previous checkpoint's block."""
    recent: Mapping[int, str]
    """The scan cursor's recent block hashes (height → hash), the cursor's block included."""
    scan_error: str | None = None
    """Why the chain's scan last failed (None: it works)."""
    traced_from: int | None = None
    """EVM: the stored cursor's `traced_from` (daemon/store/models.py ScanCursor)."""
    unread: Collection[Address] | None = None
    """The wallets lacking a carried amount of some asset, when the caller keeps them
    (None: found from `carried`, walking every wallet)."""


NO_BASIS = Basis(None, None, {}, frozenset(), frozenset(), {})
"""Nothing to start from: the cycle reads every wallet."""


@dataclass(frozen=True, slots=True)
class Coverage:
    """What this cycle's scan adds (shard 0 scans before it reads)."""

    touched: frozenset[Address] = frozenset()
    """Wallets in the transfers and fees this cycle scanned."""
    fork_point: int | None = None
    """The scan found a reorg: blocks above this height were replaced."""
    recent: Mapping[int, str] = field(default_factory=dict)
    """The recent scanned blocks' hashes once this cycle's scan is recorded."""
    traced_from: int | None = None
    """EVM: the lowest height from which every block scanned (stored or by this cycle)
    had its internal transfers traced (None: the newest range was not traced)."""
    error: str | None = None
    """Why this cycle's scan failed."""


@dataclass(frozen=True, slots=True)
class Reads:
    """The wallets a cycle reads; the rest are carried at the block."""

    read: tuple[Address, ...]
    carried: Collection[Address] = ()
    swept_at: datetime | None = None
    reason: str = ""
    """Why every wallet is read (empty for an incremental cycle)."""
    amounts: Mapping[tuple[Address, str], BaseUnits] = field(default_factory=dict)
    computed: bool = False
    """The carried amounts were computed now (tracked outputs), not the stored ones."""

    @property
    def full(self) -> bool:
        return not self.carried

    @property
    def carries_stored(self) -> bool:
        """Some wallets are carried at their newest stored balances (nothing to store or
        compare again for them)."""
        return not self.full and not self.computed

    def carry(self, assets: Sequence[AssetRef], block: ChainHead, source: str,
              pairs: Iterable[tuple[Address, str]] | None = None
              ) -> list[BalanceObservation]:
        """The carried wallets' balances (only those of `pairs` that are carried, when
        given), stated at `block`."""
        if pairs is None:
            return [BalanceObservation(address, asset, self.amounts[address, asset.symbol],
                                       block, source)
                    for address in self.carried for asset in assets]
        by_symbol = {asset.symbol: asset for asset in assets}
        return [BalanceObservation(address, by_symbol[symbol], self.amounts[address, symbol],
                                   block, source)
                for address, symbol in sorted(pairs)
                if (address, symbol) in self.amounts and symbol in by_symbol]


def everything(wallets: Sequence[Address], reason: str, swept_at: datetime | None) -> Reads:
    return Reads(tuple(wallets), (), swept_at, reason)


def swept(wallets: Iterable[Address], since: datetime, now: datetime, period: float
          ) -> set[Address]:
    """The wallets whose position lies on the arc the sweep covers from `since` to `now`
    (the arc [since/period, now/period) modulo 1; shorter than the circle)."""
    circle = wallets if isinstance(wallets, Circle) else Circle(wallets)
    return set(circle.arc(since, now, period))


def plan_reads(wallets: Sequence[Address], symbols: Collection[str], basis: Basis,
               coverage: Coverage, block: ChainHead, now: datetime, period: float, *,
               traces_needed: bool, circle: Circle | None = None) -> Reads:
    """Which of `wallets` (sorted) to read at `block`; see the module's docstring.
    `circle`: the same wallets placed on the re-read circle (kept per version of the
    books by the caller; placed here when not given). What is carried is stated, not
    listed: the cost is that of the wallets read."""
    previous = basis.previous
    reason = _why_full(basis, coverage, block, now, period, traces_needed)
    if reason is not None:
        return everything(wallets, reason, now)
    assert previous is not None and basis.swept_at is not None
    circle = circle if circle is not None else Circle(wallets)
    members = circle.members
    unread: Iterable[Address] = basis.unread if basis.unread is not None else (
        wallet for wallet in wallets if any((wallet, s) not in basis.carried for s in symbols))
    wanted = chain(basis.touched, coverage.touched, basis.flagged,
                   swept(circle, basis.swept_at, now, period), unread)
    read = {wallet for wallet in wanted if wallet in members}
    carried = Remaining(wallets, members, read)
    amounts = CarriedAmounts(basis.carried, members, read, frozenset(symbols),
                             len(carried) * len(symbols))
    return Reads(tuple(sorted(read)), carried, now, "", amounts)


def plan_computed(wallets: Sequence[Address], symbol: str, basis: Basis, coverage: Coverage,
                  block: ChainHead, now: datetime, period: float,
                  computed: Mapping[Address, BaseUnits], unknown: Collection[Address]
                  ) -> Reads:
    """UTXO sources that track the watched outputs (Core RPC): every wallet's balance is
    computed from its tracked outputs at `block` (`utxo_balances`) instead of read with
    `scantxoutset`, which walks the node's whole UTXO set per call. Only the wallets in
    `unknown` (not tracked since before this cycle) are read; every wallet is read once
    per period (one call), and whenever `_why_full` says so or the scan found a reorg."""
    reason = _why_full(basis, coverage, block, now, period, traces_needed=False)
    if reason is None and coverage.fork_point is not None:
        reason = f"a reorg replaced blocks above {coverage.fork_point}"
    if reason is not None:
        return everything(wallets, reason, now)
    read = tuple(w for w in wallets if w in unknown)
    carried = tuple(w for w in wallets if w not in unknown)
    amounts = {(w, symbol): computed.get(w, BaseUnits(0)) for w in carried}
    # `swept_at` stays at the last full read: the next one is due a period after it
    return Reads(read, carried, basis.swept_at, "", amounts, computed=True)


def utxo_balances(outputs: Iterable[tuple[TrackedOutput, int | None]], height: int
                  ) -> dict[Address, BaseUnits]:
    """Each address's balance once block `height` was applied: its tracked outputs created
    at or below it and not spent by then ((output, spent height or None) pairs; an
    outpoint listed twice counts once)."""
    seen: set[tuple[str, int]] = set()
    totals: dict[Address, int] = {}
    for output, spent in outputs:
        if output.outpoint in seen:
            continue
        seen.add(output.outpoint)
        if output.height <= height and (spent is None or spent > height):
            totals[output.address] = totals.get(output.address, 0) + output.value
    return {address: BaseUnits(value) for address, value in totals.items()}


def traced_since(stored: int | None, first: int | None, traced: bool) -> int | None:
    """The scan cursor's `traced_from` after a range starting at `first` (None: no block)
    was scanned, `traced` or not."""
    if first is None:
        return stored
    if not traced:
        return None
    return first if stored is None or stored > first else stored


def _why_full(basis: Basis, coverage: Coverage, block: ChainHead, now: datetime,
              period: float, traces_needed: bool) -> str | None:
    """Why this cycle must read every wallet, or None when it may carry."""
    previous = basis.previous
    if period <= 0:
        return "incremental reads are off (full_recheck_seconds = 0)"
    if previous is None or basis.swept_at is None:
        return "no previous scanned checkpoint"
    if not 0 <= (now - basis.swept_at).total_seconds() < period:
        return "the re-read period has passed since the previous checkpoint"
    if coverage.error or basis.scan_error:
        return "the transfer scan is failing"
    if coverage.fork_point is not None and coverage.fork_point < previous.height:
        return f"a reorg replaced blocks above {coverage.fork_point}"
    if coverage.recent.get(previous.height) != previous.hash:
        return f"the previous checkpoint's block {previous.height} is not on the scanned chain"
    if block.height < previous.height or coverage.recent.get(block.height) != block.hash:
        return f"the transfer scan does not cover block {block.height}"
    if traces_needed and block.height > previous.height and (
            coverage.traced_from is None or coverage.traced_from > previous.height + 1):
        return "internal transfers are not traced"  # no block between them: none to trace
    return None


__all__ = ["NO_BASIS", "Basis", "Circle", "Coverage", "Reads", "everything", "plan_computed",
           "plan_reads", "position", "swept", "traced_since", "utxo_balances"]
