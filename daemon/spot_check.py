"""The spot check of one wallet (`segwatch check`, the API's check): its balances read
live at the chain head, its transfers in a range of blocks, and the comparison with the
books, with the reconciling items that explain part of a difference (SPEC §8)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chains.addresses import canonical_address
from chains.base import ChainAdapter, OutputTracker
from chains.errors import InvalidAddress, SourceUnavailable
from chains.types import Address, BalanceObservation, ChainHead, ScanResult
from daemon.errors import InputError
from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.source_settings import SourceSettings
from daemon.rules import transit
from daemon.rules.reconcile import LedgerView, Reconciliation, reconcile
from daemon.runtime.scanning import flows_of
from daemon.store.repository import Store

Connect = Callable[[ChainSettings, SourceSettings | None], ChainAdapter]
"""Opens an adapter on the chain's sources (or only the one given)."""


@dataclass(frozen=True)
class CheckReport:
    """A spot check of one wallet: live balances, ledger comparison, findings."""

    chain: ChainSettings
    address: Address
    head: ChainHead
    source: str
    observations: list[BalanceObservation]
    ledger: LedgerView
    result: Reconciliation
    in_ledger: bool
    notes: list[str] = field(default_factory=list)
    scan: ScanResult | None = None
    ledger_as_of: datetime | None = None
    """The cut-off of the snapshot compared with (SPEC §8)."""
    items: list[transit.Item] = field(default_factory=list)
    """The reconciling items that explain part of the difference (SPEC §8)."""
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def spot_check(store: Store, connect: Connect, clock: Callable[[], datetime],
               chain: ChainSettings, address_text: str, source: SourceSettings | None = None,
               blocks: tuple[int, int] | None = None) -> CheckReport:
    """Read one wallet's balances at the chain head, its transfers in `blocks` (default:
    the newest CHECK_WINDOW blocks), and compare the balances with the ledger.

    A balance that cannot be read carries its error; the transfers are still listed.
    Raises InputError (invalid address or range), SourceUnavailable, ChainMismatch.
    """
    try:
        address = canonical_address(chain.family, chain.network, address_text)
    except InvalidAddress as exc:
        raise InputError(f"{chain.name}: {exc.user_message}") from None
    ledger = _ledger_for(store, chain, address)
    adapter = connect(chain, source)
    try:
        head = adapter.head()
        start, end = _check_range(blocks, head.height)
        notes = [] if address in ledger.wallets else ["address is not in the sub-ledger"]
        if isinstance(adapter, OutputTracker):
            notes.append("core-rpc source: spends of outputs created before the scanned "
                         "blocks are not listed (the node cannot tell whose output an "
                         "input spends); pending transactions are not listed")
        scan = adapter.scan([address], start, end)
        observations = _balances_or_errors(adapter, address, chain, head)
    finally:
        adapter.close()
    if chain.family == "evm" and scan.traces == "none":
        notes.append("the source serves no trace API: internal (contract-call) transfers "
                     "are not listed; balance continuity still covers them")
    times = {b.height: b.timestamp for b in scan.blocks}
    fees = [dataclasses.replace(f, block=dataclasses.replace(
        f.block, timestamp=times.get(f.block.height))) for f in scan.fees]
    items = store.reconciling_items(ledger, head.height, chain.native_asset.symbol,
                                    [address], (list(flows_of(chain, scan)), fees))
    return CheckReport(chain, address, head, adapter.source, observations, ledger,
                       reconcile(ledger, observations, transit.adjustments(items)),
                       address in ledger.wallets, notes, scan, ledger.cut_off, items,
                       clock())

def _ledger_for(store: Store, chain: ChainSettings, address: Address) -> LedgerView:
    full = store.ledger_view(chain.name)
    wallet = full.wallets.get(address)
    return LedgerView(chain.name, {address: wallet} if wallet else {}, full.cut_off)


CHECK_WINDOW = 128
"""Blocks `check` scans for transfers when no --blocks range is given."""


def _check_range(blocks: tuple[int, int] | None, head: int) -> tuple[int, int]:
    if blocks is None:
        return max(0, head - CHECK_WINDOW + 1), head
    start, end = blocks
    if end > head:
        raise InputError(f"--blocks: block {end} is beyond the chain head ({head})")
    return start, end


def _balances_or_errors(adapter: ChainAdapter, address: Address, chain: ChainSettings,
                        head: ChainHead) -> list[BalanceObservation]:
    """Balances at `head`; when the source cannot serve them, one error per asset."""
    try:
        return adapter.balances([address], chain.assets, head)
    except SourceUnavailable as exc:
        return [BalanceObservation(address, asset, None, head, adapter.source, exc.user_message)
                for asset in chain.assets]
