"""The operational signal of each chain (`segwatch status`, the API, the console, the
health endpoint): discrepancy, stale, unverified or compliant, with what stands behind
it (open findings, cure deadlines, the scan's reach, the reconciling items)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.config import Settings
from daemon.rules import transit
from daemon.rules.shards import shards
from daemon.store.models import Checkpoint
from daemon.store.repository import OpenSummary, Store


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
    scanned_to: int | None = None
    scan_error: str | None = None
    overdue: int = 0
    next_cure_deadline: datetime | None = None
    next_cure_remaining: int | None = None
    """Seconds to the nearest cure deadline of an open item (negative: overdue)."""
    ledger_as_of: datetime | None = None
    """The current ledger snapshot's cut-off (SPEC §8)."""
    items: list[transit.Item] = field(default_factory=list)
    """The reconciling items at the last cycle's block (SPEC §8)."""


def chain_statuses(settings: Settings, store: Store, now: datetime) -> list[ChainStatus]:
    """Return one signal per configured chain: `discrepancy` (open findings), `stale`
    (no recent cycle), `unverified` (recent, but a balance or the transfer scan could
    not be read or verified, or the newest cycle failed: not vouched for), or
    `compliant`."""
    # checkpoints first: a cycle committing between the two reads then shows as not
    # yet done (stale), never as done without its findings (a false "compliant")
    checkpoints = {c.name: shard_checkpoints(store, c) for c in settings.chains}
    summaries = store.open_summary(now)
    alarm = store.audit_alarm()
    cut_off = store.ledger_cut_off()
    out = []
    for chain in settings.chains:
        newest = checkpoints[chain.name]
        checkpoint = min(newest, key=lambda c: c.finished_at) if newest else None
        error, _ = store.chain_error(chain.name)
        if alarm is not None:  # the table was changed behind the audit log's back
            error = f"audit log and table disagree: {alarm}" + (f"; {error}" if error
                                                                  else "")
        last = checkpoint.finished_at if checkpoint else None
        fresh = last is not None and (now - last).total_seconds() <= chain.freshness
        mine = summaries.get(chain.name, OpenSummary())
        unverified = error is not None or any(
            c.read_errors or (c.shard == 0 and not c.scanned) for c in newest) or \
            mine.unverified > 0
        signal = _signal(fresh, unverified, mine.count - mine.unverified)
        scan = store.scan_state(chain.name)
        nearest = mine.nearest_deadline
        items = store.reconciling_items(
            store.ledger_view(chain.name), checkpoint.block_height,
            chain.native_asset.symbol) if checkpoint else []
        out.append(ChainStatus(
            chain.name, signal, mine.count, last,
            checkpoint.block_height if checkpoint else None,
            fresh, error, scan.height if scan else None, scan.error if scan else None,
            overdue=mine.overdue,
            next_cure_deadline=nearest,
            next_cure_remaining=None if nearest is None
            else int((nearest - now).total_seconds()), ledger_as_of=cut_off, items=items))
    return out


def shard_checkpoints(store: Store, chain: ChainSettings) -> list[Checkpoint]:
    """The newest checkpoint of each of the chain's wallet shards; empty while a shard
    has none (a chain is only as fresh as its stalest shard)."""
    if chain.shards == 1:
        last = store.last_checkpoint(chain.name)
        return [last] if last else []
    newest = [store.last_checkpoint(chain.name, (s.index, s.count))
              for s in shards(chain)]
    return [] if any(c is None for c in newest) else [c for c in newest if c is not None]


def _signal(fresh: bool, unverified: bool, discrepancies: int) -> str:
    if discrepancies:
        return "discrepancy"
    if not fresh:
        return "stale"
    return "unverified" if unverified else "compliant"


SIGNALS = ("discrepancy", "stale", "unverified", "compliant")
"""The operational signals, worst first."""


def overall(statuses: Sequence[ChainStatus]) -> str:
    """Return the worst signal: discrepancy, then stale, then unverified, then compliant."""
    signals = {s.status for s in statuses}
    for signal in SIGNALS[:-1]:
        if signal in signals:
            return signal
    return "compliant"
