"""The service layer: every use case the CLI and the scheduler offer, as plain functions
over the store and the chain adapters. Callers only parse input and map errors.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from chains.addresses import canonical_address
from chains.base import ChainAdapter
from chains.errors import ChainMismatch, InvalidAddress, SegwatchError, SourceUnavailable
from chains.types import Address, BalanceObservation, ChainHead
from daemon.calendar import add_business_day
from daemon.config import ChainSettings, Settings, SourceSettings
from daemon.errors import InputError
from daemon.ledger import AllocationRow, parse_ledger, summarize
from daemon.reconcile import Finding, LedgerView, Reconciliation, reconcile
from daemon.store.models import OPEN_STATUSES
from daemon.store.repository import CycleWrite, DiscrepancyRecord, Store

AdapterFactory = Callable[[ChainSettings, SourceSettings], ChainAdapter]
log = structlog.get_logger("segwatch")


def utcnow() -> datetime:
    """Return the current time, aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class CycleResult:
    """The outcome of one poll + reconcile cycle of one chain."""

    chain: str
    cycle_id: str
    duration: float
    head: ChainHead | None = None
    block: ChainHead | None = None
    source: str | None = None
    wallets: int = 0
    findings: tuple[Finding, ...] = ()
    read_errors: int = 0
    write: CycleWrite | None = None
    error: str | None = None
    rpc_requests: int = 0


@dataclass(frozen=True)
class ImportResult:
    """A validated (and, unless dry-run, stored) sub-ledger."""

    rows: Sequence[AllocationRow]
    summary: dict[str, object]
    snapshot_id: int | None


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


@dataclass(frozen=True)
class ChainStatus:
    """The operational signal of one chain."""

    chain: str
    status: str
    open_findings: int
    last_cycle_at: datetime | None
    block: int | None
    fresh: bool
    last_error: str | None


class Service:
    """segwatch's use cases over one store and an adapter factory."""

    def __init__(self, settings: Settings, store: Store, adapters: AdapterFactory,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.store = store
        self._adapters = adapters
        self._clock = clock
        self._verified_sources: set[tuple[str, str]] = set()

    # --- ledger -------------------------------------------------------------------------
    def import_ledger(self, path: Path, *, dry_run: bool) -> ImportResult:
        """Validate `path` and, unless `dry_run`, store it as the new allocation snapshot.

        Raises InputError listing every bad line; nothing is written then.
        """
        rows = parse_ledger(path, self.settings)
        summary = summarize(rows)
        if dry_run:
            return ImportResult(rows, summary, None)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.store.sync_catalog(self.settings)
        snapshot = self.store.import_allocations(rows, path.name, digest, self._clock())
        return ImportResult(rows, summary, snapshot)

    # --- cycles -------------------------------------------------------------------------
    def verify_sources(self) -> list[str]:
        """Check every source of every chain serves the configured chain; return the
        (redacted) failures of sources that did not answer.

        Raises ChainMismatch for a source that serves another chain.
        """
        unavailable = []
        for chain in self.settings.chains:
            for source in chain.sources:
                adapter = self._adapters(chain, source)
                try:
                    self._check_chain(chain, adapter)
                except SourceUnavailable as exc:
                    unavailable.append(exc.user_message)
                    log.warning("source_unavailable", chain=chain.name, error=exc.user_message)
                finally:
                    adapter.close()
        return unavailable

    def run_once(self, on_done: Callable[[CycleResult], None] | None = None
                 ) -> list[CycleResult]:
        """Run one cycle of every configured chain; a failing chain does not stop the others."""
        self.store.sync_catalog(self.settings)
        self.verify_sources()
        results = []
        for chain in self.settings.chains:
            result = self.run_cycle(chain)
            results.append(result)
            if on_done:
                on_done(result)
        return results

    def run_cycle(self, chain: ChainSettings) -> CycleResult:
        """Read every watched wallet of `chain` at its pinned block, reconcile, persist.

        Source failures are caught and returned as `error` (and remembered for `status`);
        configuration errors (a source serving another chain) propagate.
        """
        cycle_id = uuid.uuid4().hex[:12]
        started = time.monotonic()
        bound = log.bind(chain=chain.name, cycle_id=cycle_id)
        ledger = self.store.ledger_view(chain.name)
        addresses = sorted(ledger.wallets)
        try:
            adapter, head, block, observations = self._read(chain, addresses)
        except SourceUnavailable as exc:
            self.store.record_source_error(chain.name, exc.user_message, self._clock())
            bound.warning("cycle_failed", error=exc.user_message)
            return CycleResult(chain.name, cycle_id, time.monotonic() - started,
                               error=exc.user_message)
        result = reconcile(ledger, observations)
        write = self.store.record_cycle(chain.name, cycle_id, block, adapter.source,
                                        observations, result, self._clock(), self._deadline)
        adapter.close()
        duration = time.monotonic() - started
        bound.info("cycle", head=head.height, block=block.height, wallets=len(addresses),
                   findings=len(result.findings), opened=write.opened, cleared=write.cleared,
                   read_errors=len(result.read_errors), rpc_requests=adapter.requests_made,
                   duration=round(duration, 3))
        return CycleResult(chain.name, cycle_id, duration, head, block, adapter.source,
                           len(addresses), result.findings, len(result.read_errors), write,
                           rpc_requests=adapter.requests_made)

    def _read(self, chain: ChainSettings, addresses: Sequence[Address]
              ) -> tuple[ChainAdapter, ChainHead, ChainHead, list[BalanceObservation]]:
        adapter = self.connect(chain)
        try:
            head = adapter.head()
            height = max(0, head.height - chain.confirmations)
            block = head if height == head.height else adapter.block_at(height)
            observations = adapter.balances(addresses, chain.assets, block) if addresses else []
        except BaseException:
            adapter.close()
            raise
        return adapter, head, block, observations

    def connect(self, chain: ChainSettings, only: SourceSettings | None = None) -> ChainAdapter:
        """Return an adapter on the first source of `chain` that answers with the right chain.

        Raises ChainMismatch (a configuration error) or SourceUnavailable naming every
        source's failure.
        """
        failures: list[str] = []
        for source in [only] if only else chain.sources:
            adapter = self._adapters(chain, source)
            try:
                self._check_chain(chain, adapter)
                return adapter
            except SourceUnavailable as exc:
                failures.append(exc.user_message)
                adapter.close()
            except BaseException:
                adapter.close()
                raise
        raise SourceUnavailable(chain.name, "; ".join(failures) or "no source configured")

    def _check_chain(self, chain: ChainSettings, adapter: ChainAdapter) -> None:
        key = (chain.name, adapter.source)
        if key in self._verified_sources:
            return
        expected = chain.chain_id if chain.family == "evm" else chain.network
        actual = adapter.chain_id()
        if actual != expected:
            raise ChainMismatch(f"source {adapter.source} serves chain {actual}, "
                                f"but chain {chain.name!r} is configured as {expected}")
        self._verified_sources.add(key)

    def _deadline(self, detected: datetime) -> datetime:
        return add_business_day(detected, self.settings.daemon.timezone,
                                self.settings.daemon.calendar)

    # --- spot check ---------------------------------------------------------------------
    def check(self, chain: ChainSettings, address_text: str,
              source: SourceSettings | None = None) -> CheckReport:
        """Read one wallet's balances at the chain head and compare them with the ledger.

        Raises InputError (invalid address), SourceUnavailable, ChainMismatch.
        """
        try:
            address = canonical_address(chain.family, chain.network, address_text)
        except InvalidAddress as exc:
            raise InputError(f"{chain.name}: {exc.user_message}") from None
        ledger = self._ledger_for(chain, address)
        adapter = self.connect(chain, source)
        try:
            head = adapter.head()
            observations = adapter.balances([address], chain.assets, head)
        finally:
            adapter.close()
        notes = [] if address in ledger.wallets else ["address is not in the sub-ledger"]
        return CheckReport(chain, address, head, adapter.source, observations, ledger,
                           reconcile(ledger, observations), address in ledger.wallets, notes)

    def _ledger_for(self, chain: ChainSettings, address: Address) -> LedgerView:
        full = self.store.ledger_view(chain.name)
        wallet = full.wallets.get(address)
        return LedgerView(chain.name, {address: wallet} if wallet else {})

    # --- review -------------------------------------------------------------------------
    def status(self) -> list[ChainStatus]:
        """Return one signal per configured chain: compliant, discrepancy or stale."""
        now = self._clock()
        open_items = self.store.discrepancies(status=OPEN_STATUSES)
        out = []
        for chain in self.settings.chains:
            checkpoint = self.store.last_checkpoint(chain.name)
            error, _ = self.store.chain_error(chain.name)
            last = checkpoint.finished_at if checkpoint else None
            fresh = last is not None and (now - last).total_seconds() <= chain.freshness
            count = sum(1 for d in open_items if d.chain == chain.name)
            signal = "discrepancy" if count else ("compliant" if fresh else "stale")
            out.append(ChainStatus(chain.name, signal, count, last,
                                   checkpoint.block_height if checkpoint else None, fresh, error))
        return out

    def discrepancies(self, *, status: str | None = None, chain: str | None = None,
                      type_: str | None = None) -> list[DiscrepancyRecord]:
        """Return the discrepancies matching the filters. Raises InputError for a bad filter."""
        if chain and self.settings.chain(chain) is None:
            raise InputError(f"unknown chain {chain!r}")
        return self.store.discrepancies(status=[status] if status else None, chain=chain,
                                        type_=type_)


def overall(statuses: Sequence[ChainStatus]) -> str:
    """Return the worst signal: discrepancy, then stale, then compliant."""
    signals = {s.status for s in statuses}
    for signal in ("discrepancy", "stale"):
        if signal in signals:
            return signal
    return "compliant"


__all__ = ["CheckReport", "CycleResult", "ImportResult", "SegwatchError", "Service", "overall"]
