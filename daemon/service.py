"""The service layer: every use case the CLI and the scheduler offer, as plain functions
over the store and the chain adapters. Callers only parse input and map errors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from sqlmodel import Session

from chains.base import ChainAdapter
from chains.errors import (
    DecodeError,
    SegwatchError,
    SourceUnavailable,
)
from chains.types import ChainHead
from daemon.auth.policy import Principal
from daemon.auth.service import IdentityService
from daemon.errors import InputError
from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.config import Settings
from daemon.inputs.ledger import parse_ledger, summarize
from daemon.inputs.source_settings import SourceSettings
from daemon.inputs.withdrawals import checkers, parse_withdrawals, summarize_withdrawals
from daemon.rules import transit
from daemon.rules.calendar import add_business_day
from daemon.rules.reconcile import (
    BALANCE_TYPES,
    SEVERITY,
    Finding,
    ledger_stale_finding,
    reconcile,
    stale_finding,
)
from daemon.rules.shards import Shard, shards
from daemon.rules.workflow import Action, Request
from daemon.runtime.chain_scan import ChainScanner
from daemon.runtime.memory import full_passes_deferred, settle
from daemon.runtime.reads import CycleReads
from daemon.runtime.shard_memory import ShardMemory
from daemon.runtime.sources import AdapterFactory, NoFreshSource, SourceObserver, Sources
from daemon.spot_check import CheckReport, spot_check
from daemon.status import ChainStatus, chain_statuses
from daemon.store.cycle import CycleInput, CycleWrite
from daemon.store.heads import Head, HeadSigner, sign_newest
from daemon.store.identity import Identities
from daemon.store.repository import DiscrepancyRecord, Heartbeat, Store

log = structlog.get_logger("segwatch")
MAX_LOGGED_CHANGES = 200
"""Discrepancies opened, cleared or voided that one cycle logs one line each (the rest
are counted in one line: a first cycle over broken books must not flood the logs)."""


def _log_changes(bound: structlog.typing.FilteringBoundLogger, write: CycleWrite) -> None:
    """One info line per discrepancy the cycle opened, self-cleared or voided."""
    for change in write.changes[:MAX_LOGGED_CHANGES]:
        bound.info(f"finding_{change.action}", id=change.id, type=change.type,
                   severity=change.severity, address=change.address, asset=change.asset)
    if len(write.changes) > MAX_LOGGED_CHANGES:
        bound.info("finding_changes_not_logged",
                   count=len(write.changes) - MAX_LOGGED_CHANGES,
                   hint="segwatch discrepancies list")


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
    scanned_to: int | None = None
    scan_error: str | None = None
    shard: str = ""
    """The wallet shard's key (daemon/rules/shards.py); the chain's name when it is not split."""
    wallets_read: int = 0
    """How many of `wallets` were read; the others were carried (daemon/rules/recheck.py)."""
    full_read: str = ""
    """Why every wallet was read (empty: an incremental cycle)."""


@dataclass(frozen=True)
class ImportResult:
    """A validated (and, unless dry-run, stored) import file."""

    rows: Sequence[object]
    summary: dict[str, object]
    snapshot_id: int | None


class Service:
    """segwatch's use cases over one store and an adapter factory."""

    def __init__(self, settings: Settings, store: Store, adapters: AdapterFactory,
                 clock: Callable[[], datetime] = utcnow,
                 observer: SourceObserver | None = None) -> None:
        self.settings = settings
        self.store = store
        self._adapters = adapters
        self._clock = clock
        self.sources = Sources(store, adapters, clock, observer)
        """Source selection: fresh sources, failover of balance reads, cross-checks."""
        self.head_signer: HeadSigner | None = None
        """Signs the audit log's head after every write (daemon.audit_key), if set."""
        self.identity = IdentityService(settings, Identities(store.engine), clock)
        """Users, tokens, sign-in and authorization."""
        self.fence: Callable[[Session, str], None] | None = None
        """Runs first in every cycle's transaction with the shard's key (scale-out: the
        lease check)."""
        self.memory = ShardMemory()
        """What the replica keeps per wallet shard between cycles."""
        self.scanner = ChainScanner(store, self.sources, adapters)
        """Shard 0's transfer scan, with failover and a second source's check."""

    @property
    def observer(self) -> SourceObserver | None:
        """Told each source's requests and failures (the daemon's metrics); assignable
        after construction (the scheduler does), and shared with `sources`."""
        return self.sources.observer

    @observer.setter
    def observer(self, observer: SourceObserver | None) -> None:
        self.sources.observer = observer

    def now(self) -> datetime:
        """The service's clock (aware UTC)."""
        return self._clock()

    def sign_head(self) -> Head | None:
        """Sign the audit log's newest entry with the audit key, unless a head covers it
        already; return the newest head (None without a key or entries)."""
        if self.head_signer is None:
            return None
        return sign_newest(self.store.engine, self.head_signer, self._clock())

    # --- ledger -------------------------------------------------------------------------
    def import_ledger(self, path: Path, *, dry_run: bool, actor: Principal | None = None,
                      as_of: datetime | None = None) -> ImportResult:
        """Validate `path` and, unless `dry_run`, store it as the new allocation snapshot,
        cut at `as_of` (default: now, the import time; SPEC §8), imported by `actor` (the
        feeder role). Open balance findings whose booked amount it changes become
        `proposed` (`ledger_corrected`) for a checker.

        Raises InputError listing every bad line, or for a cut-off without a timezone, in
        the future, or older than the current snapshot's; nothing is written then. Raises
        Unauthenticated or Forbidden for a write without a feeder. No full garbage
        collection runs within (a file of millions of lines is millions of live objects
        until it is stored: daemon/runtime/memory.py).
        """
        with full_passes_deferred():
            return self._import_ledger(path, dry_run, actor, as_of)

    def _import_ledger(self, path: Path, dry_run: bool, actor: Principal | None,
                       as_of: datetime | None) -> ImportResult:
        cut_off = self._cut_off(as_of)
        rows = parse_ledger(path, self.settings)
        summary = {**summarize(rows), "as_of": (cut_off or self._clock()).isoformat(),
                   "as_of_given": cut_off is not None}
        if dry_run:
            return ImportResult(rows, summary, None)
        who = self.identity.require(actor, "feed", "importing the ledger")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.store.sync_catalog(self.settings)
        snapshot, corrected = self.store.import_allocations(rows, path.name, digest,
                                                            self._clock(), who.name, cut_off)
        self.sign_head()
        return ImportResult(rows, {**summary, "ledger_corrected": corrected}, snapshot)

    def import_withdrawals(self, path: Path, *, dry_run: bool,
                           actor: Principal | None = None) -> ImportResult:
        """Validate `path` and, unless `dry_run`, store its approved withdrawals, imported
        by `actor` (the feeder role).

        Raises InputError listing every bad line; nothing is written then. Raises
        Unauthenticated or Forbidden for a write without a feeder. No full garbage
        collection runs within (as for the ledger).
        """
        with full_passes_deferred():
            return self._import_withdrawals(path, dry_run, actor)

    def _import_withdrawals(self, path: Path, dry_run: bool,
                            actor: Principal | None) -> ImportResult:
        rows = parse_withdrawals(path, self.settings, self.approvers())
        summary = summarize_withdrawals(rows)
        if dry_run:
            return ImportResult(rows, summary, None)
        who = self.identity.require(actor, "feed", "importing withdrawals")
        self.store.sync_catalog(self.settings)
        new, known = self.store.import_withdrawals(rows, path.name, self._clock(), who.name)
        self.sign_head()
        return ImportResult(rows, {**summary, "new": new, "already_imported": known}, None)

    def _cut_off(self, as_of: datetime | None) -> datetime | None:
        """A snapshot's cut-off as given, checked: aware, not in the future."""
        if as_of is None:
            return None
        if as_of.tzinfo is None:
            raise InputError(f"as_of {as_of.isoformat()}: give a timezone (e.g. Z or +00:00)")
        if as_of > self._clock() + CUT_OFF_SKEW:
            raise InputError(f"as_of {as_of.isoformat()} is in the future")
        return as_of.astimezone(UTC)

    def approvers(self) -> frozenset[str]:
        """Who may approve a withdrawal: users with the checker role, declared in the
        configuration or in the store."""
        return checkers(self.settings) | self.identity.store.role_holders("checker")

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
                    self.sources.check_chain(chain, adapter)
                except SourceUnavailable as exc:
                    unavailable.append(exc.user_message)
                    log.warning("source_unavailable", chain=chain.name, error=exc.user_message)
                finally:
                    adapter.close()
        return unavailable

    def run_once(self, on_done: Callable[[CycleResult], None] | None = None
                 ) -> list[CycleResult]:
        """Run one cycle of every configured chain (of each of its wallet shards, shard 0
        first); a failing chain does not stop the others."""
        self.store.sync_catalog(self.settings)
        self.verify_sources()
        results = []
        for chain in self.settings.chains:
            for shard in shards(chain):
                result = self.run_cycle(chain, shard)
                results.append(result)
                if on_done:
                    on_done(result)
        return results

    def run_cycle(self, chain: ChainSettings, shard: Shard | None = None) -> CycleResult:
        """Scan new blocks for transfers, read the wallets at the pinned block (those the
        scan saw touched, those with open findings and a rotating slice; every one when
        the scan cannot vouch for the rest: daemon/rules/recheck.py), reconcile, persist —
        one transaction. With `shard`, only that wallet shard's balances are read; only
        shard 0 scans (for every wallet of the chain).

        Source failures are caught and returned as `error` (and remembered for `status`);
        a scan that fails stops the cursor but the balances are still reconciled.
        Configuration errors (a source serving another chain) propagate. No full garbage
        collection runs within the cycle (daemon/runtime/memory.py).
        """
        with full_passes_deferred():
            return self._cycle(chain, shard or Shard(chain.name))

    def _cycle(self, chain: ChainSettings, shard: Shard) -> CycleResult:
        cycle_id = uuid.uuid4().hex[:12]
        started = time.monotonic()
        bound = log.bind(chain=chain.name, cycle_id=cycle_id)
        if shard.count > 1:
            bound = bound.bind(shard=shard.key)
        ledger = self.store.ledger_view(chain.name)
        _, mine, sorted_mine, addresses, watched, circle = self.memory.slice(ledger, chain,
                                                                             shard)
        usable, kept = self.memory.take(shard, ledger)  # back once this cycle is recorded
        reads = CycleReads(self.store, chain, shard, mine, sorted_mine,
                           lambda adapter, head: self.scanner.scan(chain, adapter, head,
                                                                   addresses, watched),
                           self._clock, usable, circle)
        try:
            adapter, head, block, observations, disagreements, chosen = self.sources.read(
                chain, mine, shard, reads.choose, sorted_mine)
        except (SourceUnavailable, DecodeError) as exc:
            stale = self._stale(chain, shard, exc)
            opened = self.store.record_source_error(chain.name, exc.user_message, self._clock(),
                                                    stale, self._deadline)
            self.sign_head()
            bound.warning("cycle_failed", error=exc.user_message,
                          source_stale=stale.severity if stale else None, opened=int(opened))
            if opened and stale is not None:
                bound.info("finding_opened", type=stale.type, severity=stale.severity)
            return CycleResult(chain.name, cycle_id, time.monotonic() - started,
                               findings=(stale,) if stale else (), error=exc.user_message,
                               shard=shard.key)
        self.sources.release(chain, adapter)
        plan, scan_error, seed = reads.plan, reads.scan_error, reads.seed
        if scan_error:
            bound.warning("scan_failed", error=scan_error)
        result = reconcile(mine, [*observations, *self.memory.carried_differing(
            chain, chosen, reads.resident, block, adapter.source)])
        stale_books = ledger_stale_finding(chain.name, ledger.cut_off,
                                           self._clock(), chain.ledger_max_age_seconds)
        extra = (*disagreements, *((stale_books,) if stale_books else ()))
        if extra:
            result = dataclasses.replace(result, findings=(*result.findings, *extra))
        cycle = CycleInput(
            cycle_id, block, adapter.source, ledger, observations, result, plan, scan_error,
            seed=seed, shard=shard.index, shards=shard.count,
            checkers=self.approvers(), swept_at=chosen.swept_at,
            wallets_read=len(chosen.read),
            read=frozenset(chosen.read) if chosen.carries_stored else None,
            carried=chosen.amounts if chosen.carries_stored else {},
            carried_wallets=len(chosen.carried) if chosen.carries_stored else 0)
        write = self.store.record_cycle(chain, cycle, self._clock(), self._deadline,
                                        self._fence_for(shard))
        if self.memory.keep(chain, shard, ledger, mine, cycle, write, reads.resident, kept):
            settle(len(mine.wallets))  # the books or kept balances were built: freeze them
        self.sign_head()
        duration = time.monotonic() - started
        (bound.warning if result.read_errors else bound.info)(
            "cycle", head=head.height, block=block.height, wallets=len(mine.wallets),
            wallets_read=len(chosen.read), full_read=chosen.reason or None,
            findings=len(write.findings), opened=write.opened, cleared=write.cleared,
            voided=write.voided, in_transit=write.in_transit,
            read_errors=len(result.read_errors),
            scanned=len(plan.result.blocks) if plan else 0,
            rpc_requests=adapter.requests_made, duration=round(duration, 3))
        _log_changes(bound, write)
        return CycleResult(chain.name, cycle_id, duration, head, block, adapter.source,
                           len(mine.wallets), write.findings, len(result.read_errors), write,
                           rpc_requests=adapter.requests_made,
                           scanned_to=plan.result.blocks[-1].height
                           if plan and plan.result.blocks else None, scan_error=scan_error,
                           shard=shard.key, wallets_read=len(chosen.read),
                           full_read=chosen.reason)

    def _fence_for(self, shard: Shard) -> Callable[[Session], None] | None:
        fence = self.fence
        if fence is None:
            return None
        return lambda session: fence(session, shard.key)

    def _stale(self, chain: ChainSettings, shard: Shard, exc: SegwatchError
               ) -> Finding | None:
        """The `source_stale` finding a failed cycle raises: at once when the sources
        answered with stale heads, else once the shard's last good cycle is older than
        the chain's freshness SLA; critical past three times the SLA."""
        checkpoint = self.store.last_checkpoint(chain.name, (shard.index, shard.count))
        since = (self._clock() - checkpoint.finished_at).total_seconds() if checkpoint \
            else None
        if not isinstance(exc, NoFreshSource) and (since is None or since <= chain.freshness):
            return None
        return stale_finding(chain.name, since is not None and since > 3 * chain.freshness)

    def connect(self, chain: ChainSettings, only: SourceSettings | None = None) -> ChainAdapter:
        """Return an adapter on the first source of `chain` that answers with the right chain
        (`Sources.connect`).

        Raises ChainMismatch (a configuration error) or SourceUnavailable naming every
        source's failure.
        """
        return self.sources.connect(chain, only)

    def _deadline(self, detected: datetime) -> datetime:
        return add_business_day(detected, self.settings.daemon.timezone,
                                self.settings.daemon.calendar)

    # --- spot check and review -------------------------------------------------------------
    def check(self, chain: ChainSettings, address_text: str,
              source: SourceSettings | None = None,
              blocks: tuple[int, int] | None = None) -> CheckReport:
        """One wallet's spot check (`daemon.spot_check.spot_check`). Raises InputError
        (invalid address or range), SourceUnavailable, ChainMismatch."""
        return spot_check(self.store, self.connect, self._clock, chain, address_text,
                          source, blocks)

    def status(self) -> list[ChainStatus]:
        """One signal per configured chain (`daemon.status.chain_statuses`)."""
        return chain_statuses(self.settings, self.store, self._clock())

    def items_for(self, record: DiscrepancyRecord) -> list[transit.Item]:
        """The reconciling items of an open balance discrepancy's wallet and asset at the
        block its last cycle read (SPEC §8); none for other types or closed ones."""
        row, chain = record.row, self.settings.chain(record.chain)
        if chain is None or row.type not in BALANCE_TYPES or row.address is None or \
                row.status not in ("open", "proposed") or row.block_number is None:
            return []
        found = self.store.reconciling_items(self.store.ledger_view(chain.name),
                                             row.block_number, chain.native_asset.symbol,
                                             [row.address])
        return [i for i in found
                if (i.movement.address, i.movement.asset) == (row.address, row.asset)]

    def heartbeat(self) -> Heartbeat | None:
        """The newest heartbeat of a daemon (`segwatch run`) on this store, or None."""
        return self.store.heartbeat()

    def beat(self, daemon: str, started_at: datetime) -> None:
        """Say in the store that daemon `daemon` (this process) is alive."""
        from daemon import __version__

        self.store.beat(daemon, __version__, started_at, self._clock())

    def discrepancies(self, *, status: str | None = None, chain: str | None = None,
                      type_: str | None = None, overdue: bool = False,
                      limit: int | None = None, offset: int = 0) -> list[DiscrepancyRecord]:
        """Return the discrepancies matching the filters (`overdue`: open or proposed past
        the cure deadline), oldest first, a page of `limit` after `offset` when given.
        Raises InputError for a bad filter."""
        if chain and self.settings.chain(chain) is None:
            raise InputError(f"unknown chain {chain[:64]!r}")
        if type_ and type_ not in SEVERITY:
            raise InputError(f"unknown discrepancy type {type_[:64]!r} (one of: "
                             f"{', '.join(SEVERITY)})")
        return self.store.discrepancies(status=[status] if status else None, chain=chain,
                                        type_=type_,
                                        overdue_at=self._clock() if overdue else None,
                                        limit=limit, offset=offset)

    # --- exception workflow ---------------------------------------------------------------
    def act(self, id_: int, action: Action, actor: Principal | None, *,
            reason: str | None = None, note: str | None = None) -> DiscrepancyRecord:
        """Apply a maker-checker action as the authenticated `actor`.

        Raises Unauthenticated without an actor, Forbidden without the role (audited), and
        InputError (one line) for a refused action (audited); nothing else is written.
        """
        who = self.identity.require(actor, action, f"{action} discrepancy {id_}", id_)
        try:
            self.store.act(id_, Request(action, who.name, reason, note),
                           {who.name: sorted(who.roles)}, self._clock())
        finally:
            self.sign_head()
        found = self.store.discrepancy(id_)
        assert found is not None
        log.info("discrepancy_action", id=id_, action=action, user=who.name,
                 status=found[0].row.status)
        return found[0]

    def escalate(self) -> list[int]:
        """Escalate open items past their cure deadline (once each); return their ids."""
        ids = self.store.escalate_overdue(self._clock())
        if ids:
            self.sign_head()
            log.warning("escalated", ids=ids)
        return ids


CUT_OFF_SKEW = timedelta(minutes=2)
"""A snapshot's as_of may be this far ahead of segwatch's clock (clocks differ)."""


__all__ = ["CycleResult", "ImportResult", "NoFreshSource", "SegwatchError", "Service",
           "SourceObserver"]
