"""Recording one reconciliation cycle: the writes `Store.record_cycle` makes in its one
transaction, and the decisions (pure functions from `daemon.rules.reconcile` and
`daemon.rules.flows`) they apply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from chains.types import Address, BalanceObservation, BaseUnits, ChainHead
from daemon.inputs.chain_settings import ChainSettings
from daemon.rules import transit
from daemon.rules.flows import Flow, classify, continuity
from daemon.rules.reconcile import (
    BALANCE_TYPES,
    Finding,
    LedgerView,
    Reconciliation,
    scan_stalled_finding,
    unverified_findings,
)
from daemon.store import models as m
from daemon.store import transfers as tx
from daemon.store.audit import AuditLog
from daemon.store.observations import (
    Pair,
    PairIds,
    Stored,
    aware,
    first_error_since_verified,
    latest_observations,
    pair_ids,
    store_observations,
)

ENGINE_ACTOR = "engine"


@dataclass(frozen=True, slots=True)
class Change:
    """One discrepancy a cycle opened, self-cleared or voided (for the logs)."""

    action: str
    """`opened`, `cleared` or `voided`."""
    id: int
    type: str
    severity: str
    address: str | None
    asset: str | None

    @classmethod
    def of(cls, action: str, row: m.Discrepancy) -> Change:
        return cls(action, row.id or 0, row.type, row.severity, row.address, row.asset)


@dataclass(frozen=True, slots=True)
class CycleWrite:
    """What one recorded cycle changed."""

    opened: int
    updated: int
    cleared: int
    observations_stored: int
    voided: int = 0
    findings: tuple[Finding, ...] = ()
    """Every condition this cycle saw: balance, transfer and continuity findings."""
    in_transit: int = 0
    """How many reconciling items explained balances (SPEC §8)."""
    changes: tuple[Change, ...] = ()
    """The discrepancies opened, self-cleared and voided, in that order."""
    checkpoint: int | None = None
    """The id of the checkpoint the cycle wrote."""


@dataclass(frozen=True, slots=True)
class CycleInput:
    """What one cycle read and decided before anything is written."""

    cycle_id: str
    block: ChainHead
    source: str
    ledger: LedgerView
    observations: Sequence[BalanceObservation]
    result: Reconciliation
    scan: tx.ScanPlan | None = None
    scan_error: str | None = None
    window: timedelta = timedelta(days=1)
    seed: tx.Seed | None = None
    shard: int = 0
    shards: int = 1
    """The wallet shard read (daemon/rules/shards.py): shard 0 scans the chain's transfers,
    the others only read and reconcile their wallets' balances."""
    checkers: frozenset[str] = frozenset()
    """The configured users whose approved withdrawals authorize transfers."""
    swept_at: datetime | None = None
    """Where the cycle's rotating re-read stopped (daemon/rules/recheck.py)."""
    wallets_read: int | None = None
    """How many wallets the cycle read (the rest of `observations` were carried)."""
    read: frozenset[Address] | None = None
    """The wallets the cycle read (None: every wallet of `observations`)."""
    carried: Mapping[tuple[Address, str], BaseUnits] = dataclasses.field(default_factory=dict)
    """The pairs carried at their newest stored balance (nothing to store or compare):
    not in `observations`, which hold what was read; `result` reconciled them already."""
    carried_wallets: int = 0

    def fresh(self) -> Sequence[BalanceObservation]:
        """The observations the cycle read (not carried)."""
        read = self.read
        if read is None:
            return self.observations
        return [o for o in self.observations if o.address in read]


def record(session: Session, chain: ChainSettings, chain_id: int, cycle: CycleInput,
           now: datetime, deadline: Callable[[datetime], datetime]) -> CycleWrite:
    """Write one cycle inside the caller's transaction: the transfer scan (retracting a
    reorged branch, voiding findings of orphaned transfers), transfer findings, balance
    continuity, changed balances, the checkpoint, and the balance findings (update open
    ones, open new ones, self-clear verified ones that cleared).
    """
    audit = AuditLog(session, defer=True)  # held from the first read of discrepancies
    transfer_findings: list[Finding] = []
    changes: list[Change] = []
    if cycle.seed is not None:
        tx.seed_wallets(session, chain_id, cycle.seed.addresses, cycle.seed.block.height,
                        cycle.seed.outputs)
    if cycle.scan is not None:
        new_flows = _record_scan(session, chain_id, cycle.scan, now)
        transfer_findings = _judge_transfers(session, chain, chain_id, cycle.ledger,
                                             new_flows, cycle.checkers)
        changes += _void_orphaned(session, audit, chain_id, now)
    elif cycle.shard == 0 and tx.scan_state(session, chain_id) is None and \
            not cycle.scan_error:
        tx.start_cursor(session, chain_id, cycle.seed.block if cycle.seed else cycle.block, now)
    stalled: list[Finding] = []
    if cycle.scan_error:
        tx.record_scan_error(session, chain_id, cycle.scan_error, now)
        finding = scan_stalled_finding(chain.name, tx.scan_failing_since(session, chain_id)
                                       or now, now, chain.freshness, cycle.scan_error)
        stalled += [finding] if finding else []
    elif cycle.scan is not None and cycle.shard == 0:
        tx.clear_scan_error(session, chain_id)
    found = _reconciling_items(session, chain, chain_id, cycle)
    covered = _scanned_through(session, chain_id, cycle.block) and \
        not (cycle.shard == 0 and cycle.scan_error)
    hold = cycle.ledger.cut_off is not None and not covered
    findings = [f for f in transit.explain(cycle.ledger, _with_carried(chain, cycle, found),
                                           cycle.result, found).findings
                if not (hold and f.type in BALANCE_TYPES)] + transfer_findings + stalled
    fresh = cycle.fresh()
    ids = pair_ids(session, chain_id, {o.address for o in fresh}, cycle.read is None)
    latest = latest_observations(session, chain_id,
                                 wallet_ids=None if cycle.read is None else ids.wallets.values())
    findings += _continuity(session, chain, chain_id, cycle, fresh, ids, latest)
    findings += unverified_findings(cycle.ledger, cycle.result.read_errors,
                                    _unverified_for(session, cycle, ids, latest, now),
                                    chain.freshness)
    stored = store_observations(session, fresh, ids, now, latest)
    result = dataclasses.replace(cycle.result, findings=tuple(findings))
    voided = len(changes)
    audit.hold()  # the chain's discrepancies: read and changed by one writer at a time
    opened, updated, cleared = _apply_findings(session, audit, chain_id, result, now, deadline,
                                               hold, scanned=cycle.shard == 0 and
                                               not cycle.scan_error, changes=changes)
    checkpoint = m.Checkpoint(
        chain_id=chain_id, cycle_id=cycle.cycle_id, block_height=cycle.block.height,
        block_hash=cycle.block.hash, block_time=_block_time(cycle.block), source=cycle.source,
        wallets=len({o.address for o in cycle.observations}) + cycle.carried_wallets,
        observations=len(cycle.observations) + len(cycle.carried),
        read_errors=len(cycle.result.read_errors),
        findings=len(findings), finished_at=now, shard=cycle.shard, shards=cycle.shards,
        scanned=covered, swept_at=cycle.swept_at, wallets_read=cycle.wallets_read)
    session.add(checkpoint)
    session.flush()
    order = {"opened": 0, "cleared": 1, "voided": 2}
    return CycleWrite(opened, updated, cleared, stored, voided, tuple(findings), len(found),
                      tuple(sorted(changes, key=lambda c: order[c.action])),
                      checkpoint.id)


def _with_carried(chain: ChainSettings, cycle: CycleInput, found: Iterable[transit.Item]
                  ) -> list[BalanceObservation]:
    """The cycle's observations and, stated at its block, the carried pairs that have
    reconciling items (the only carried pairs `transit.explain` judges again)."""
    carried = cycle.carried
    if not carried:
        return list(cycle.observations)
    assets = {asset.symbol: asset for asset in chain.assets}
    pairs = {(Address(i.movement.address), i.movement.asset) for i in found}
    return [*cycle.observations, *(
        BalanceObservation(address, assets[symbol], carried[address, symbol], cycle.block,
                           cycle.source)
        for address, symbol in sorted(pairs) if (address, symbol) in carried and symbol in assets)]


def _reconciling_items(session: Session, chain: ChainSettings, chain_id: int,
                       cycle: CycleInput) -> list[transit.Item]:
    """The reconciling items at the cycle's block for the current books' cut-off (the
    transfers this cycle scanned are stored and judged by now)."""
    cut_off = cycle.ledger.cut_off
    if cut_off is None:
        return []
    found = tx.transit_candidates(session, chain_id, cut_off, cycle.block.height)
    return transit.items(transit.movements(cycle.ledger, found.flows, found.fees,
                                           chain.native_asset.symbol, found.matched,
                                           found.removed),
                         cut_off, cycle.block.height)


_PAIR_TYPES = (*BALANCE_TYPES, "source_disagreement", "balance_unverified")
"""Findings about one (wallet, asset) that a verified read of it clears."""


def record_stale(session: Session, chain_id: int, finding: Finding, now: datetime,
                 deadline: Callable[[datetime], datetime]) -> bool:
    """Open the chain's `source_stale` finding, or refresh the open one (its severity
    may have risen). Returns True when it was opened."""
    audit = AuditLog(session)
    row = session.exec(select(m.Discrepancy).where(
        m.Discrepancy.chain_id == chain_id, m.Discrepancy.fingerprint == finding.fingerprint,
        col(m.Discrepancy.status).in_(m.OPEN_STATUSES))).first()
    if row is None:
        _open(session, audit, chain_id, finding, now, deadline(now))
        return True
    if row.severity != finding.severity:  # past three SLAs: an escalation, alerted
        audit.append(now, ENGINE_ACTOR, "escalated", row.id,
                     {"from_severity": row.severity, "to_severity": finding.severity,
                      "status": row.status, "reason": "stale for more than three SLAs"})
        row.severity = finding.severity
    _refresh(row, finding, now)
    session.add(row)
    return False


def _unverified_for(session: Session, cycle: CycleInput, ids: PairIds,
                    latest: Mapping[Pair, Stored], now: datetime
                    ) -> dict[tuple[Address, str], float]:
    """Seconds since each pair this cycle could not read was last verified.

    Observations are stored only when a pair's amount or error changes, so a pair has
    been unverified since the first error stored after its newest amount; a pair whose
    newest stored observation has an amount fails for the first time now (0 s)."""
    if not cycle.result.read_errors:
        return {}
    failing: dict[Pair, tuple[Address, str]] = {}
    for obs in cycle.result.read_errors:
        key = ids.of(obs.address, obs.asset.symbol)
        known = latest.get(key)
        if known is not None and known.amount is None:
            failing[key] = (obs.address, obs.asset.symbol)
    since = first_error_since_verified(session, [k for k in failing if None not in k])
    return {pair: max(0.0, (now - aware(since[key])).total_seconds())
            for key, pair in failing.items() if key in since}


def _apply_findings(session: Session, audit: AuditLog, chain_id: int, result: Reconciliation,
                    now: datetime, deadline: Callable[[datetime], datetime],
                    hold: bool = False, *, scanned: bool = False,
                    changes: list[Change] | None = None) -> tuple[int, int, int]:
    """Open, refresh and self-clear. With `hold` (the transfer scan does not cover the
    block the balances were read at, so the reconciling items there are unknown), balance
    findings are neither opened nor cleared: the cycle is unverified instead (status),
    never compliant and never a false alarm. `scanned`: this cycle's scan ran without
    error (only then does a `scan_stalled` finding clear). Each row opened or cleared is
    added to `changes`."""
    changes = [] if changes is None else changes
    open_rows = {d.fingerprint: d for d in session.exec(
        select(m.Discrepancy).where(m.Discrepancy.chain_id == chain_id,
                                    col(m.Discrepancy.status).in_(m.OPEN_STATUSES)))}
    opened = updated = 0
    resolved = _resolved_before(session, chain_id, [
        f.fingerprint for f in result.findings
        if f.type in BALANCE_TYPES and f.fingerprint not in open_rows])
    for finding in result.findings:
        row = open_rows.pop(finding.fingerprint, None)
        if row is None:
            previous = resolved.get(finding.fingerprint)
            changes.append(Change.of("opened", _open(
                session, audit, chain_id, finding, now,
                previous.cure_deadline if previous else deadline(now),
                reopens=previous.id if previous else None)))
            opened += 1
        else:
            if row.type == "scan_stalled" and finding.severity == "critical" != row.severity:
                audit.append(now, ENGINE_ACTOR, "escalated", row.id,
                             {"from_severity": row.severity, "to_severity": "critical",
                              "status": row.status,
                              "reason": "scan stalled for longer than the SLA"})
                row.severity = "critical"
            _refresh(row, finding, now)
            session.add(row)
            updated += 1
    cleared = 0
    for row in open_rows.values():
        if row.proposed_reason == "ledger_corrected":
            continue  # cleared by an edit of the books, not by the chain: a checker decides
        if hold and row.type in BALANCE_TYPES:
            continue
        if row.type in ("source_stale", "ledger_stale") or \
                (row.type == "scan_stalled" and scanned) or (
                row.type in _PAIR_TYPES and (row.address, row.asset) in result.verified):
            was = row.status
            row.status, row.closed_at = "self_cleared", now
            session.add(row)
            audit.append(now, ENGINE_ACTOR, "self_cleared", row.id,
                         {"from": was, "to": "self_cleared"})
            changes.append(Change.of("cleared", row))
            cleared += 1
    return opened, updated, cleared


def _record_scan(session: Session, chain_id: int, plan: tx.ScanPlan,
                 now: datetime) -> list[Flow]:
    if plan.fork_point is not None:
        first = plan.result.blocks[0] if plan.result.blocks else None
        tx.retract_above(session, chain_id, plan.fork_point,
                         (tx.block_time(first) if first else None) or now)
    tx.store_blocks(session, chain_id, plan.result.blocks, now,
                    traced=plan.result.traces != "none")
    new_flows = tx.upsert_transfers(session, chain_id, plan.flows, now)
    tx.upsert_fees(session, chain_id, plan.result.fees,
                   {b.height: tx.block_time(b) for b in plan.result.blocks})
    tx.track_outputs(session, chain_id, plan.result.created, plan.result.spent)
    return new_flows


def _judge_transfers(session: Session, chain: ChainSettings, chain_id: int, ledger: LedgerView,
                     new_flows: Sequence[Flow], checkers: frozenset[str]) -> list[Finding]:
    if not new_flows:
        return []
    instructions = tx.unused_instructions(session, chain_id)
    verdict = classify(chain.name, ledger, new_flows, instructions,
                       timedelta(seconds=chain.withdrawal_window_seconds), checkers)
    tx.link_withdrawals(session, chain_id, dict(verdict.matches))
    return list(verdict.findings)


def _void_orphaned(session: Session, audit: AuditLog, chain_id: int, now: datetime
                   ) -> list[Change]:
    """Void open findings whose transfer a reorg removed and no rescan brought back."""
    orphans = tx.orphaned_keys(session, chain_id)
    if not orphans:
        return []
    audit.hold()
    rows = session.exec(select(m.Discrepancy).where(
        m.Discrepancy.chain_id == chain_id, col(m.Discrepancy.status).in_(m.OPEN_STATUSES),
        col(m.Discrepancy.event).in_(orphans))).all()
    for row in rows:
        previous = row.status
        row.status, row.closed_at = "voided", now
        session.add(row)
        audit.append(now, ENGINE_ACTOR, "voided", row.id,
                     {"from": previous, "to": "voided", "reason": "transaction orphaned by a "
                      "reorg", "tx_hash": row.tx_hash, "block_hash": row.block_hash})
    return [Change.of("voided", row) for row in rows]


def _scanned_through(session: Session, chain_id: int, block: ChainHead) -> bool:
    """Whether the chain's transfer scan has covered `block` (another shard scans)."""
    state = tx.scan_state(session, chain_id)
    return state is not None and state.start_height <= block.height <= state.height and \
        state.recent.get(block.height, block.hash) == block.hash


def _continuity(session: Session, chain: ChainSettings, chain_id: int, cycle: CycleInput,
                fresh: Sequence[BalanceObservation], ids: PairIds,
                latest: Mapping[Pair, Stored]) -> list[Finding]:
    """Balance continuity since the shard's previous scanned checkpoint, when the scan
    covers the span and the checkpoint's block is still on the scanned chain, of the
    pairs the cycle read (`fresh`; a carried pair is its stored balance, and no scanned
    flow touched it, or it would have been read). `latest` holds their newest stored
    observations."""
    state = tx.scan_state(session, chain_id)
    previous = session.exec(select(m.Checkpoint).where(
        m.Checkpoint.chain_id == chain_id, col(m.Checkpoint.scanned).is_(True),
        m.Checkpoint.shard == cycle.shard, m.Checkpoint.shards == cycle.shards)
        .order_by(col(m.Checkpoint.id).desc())).first()
    if state is None or previous is None or cycle.scan_error or \
            not state.start_height <= previous.block_height <= cycle.block.height <= state.height:
        return []
    if state.recent.get(previous.block_height, previous.block_hash) != previous.block_hash:
        return []  # the previous checkpoint's block was reorged out: no common base
    wallets = {id_: address for address, id_ in ids.wallets.items()}
    assets = {id_: symbol for symbol, id_ in ids.assets.items()}
    if previous.block_height == cycle.block.height:
        if previous.block_hash != cycle.block.hash or previous.wallets_read is None or \
                previous.wallets_read >= previous.wallets:
            return []  # another block at that height, or the previous cycle read everything
        # The previous checkpoint carried some pairs: it stated their stored balance at this
        # very block without reading it. Reading one now must agree (nothing moves a
        # balance within one block), or an edit made before that block would be stored as
        # the new normal, never found unexplained.
        fresh = [o for o in fresh if (stored := latest.get(ids.of(o.address, o.asset.symbol)))
                 is not None and stored.block_height < previous.block_height]
        if not fresh:
            return []
    # The balances the previous checkpoint read: usually the newest stored (nothing was
    # stored after it), which spares a second read of every pair's newest observation.
    then = latest if all(o.observed_at <= previous.finished_at and
                         o.block_height <= previous.block_height for o in latest.values()) \
        else latest_observations(session, chain_id,
                                 upto=(previous.finished_at, previous.block_height),
                                 wallet_ids=None if cycle.read is None else wallets)
    amounts = {(Address(wallets[w]), assets[a]): o.amount for (w, a), o in then.items()
               if o.amount is not None and w in wallets and a in assets}
    flows, fees = tx.flows_between(session, chain_id, previous.block_height, cycle.block.height)
    since = ChainHead(previous.block_height, previous.block_hash)
    return continuity(chain.name, cycle.ledger, since, amounts, fresh, flows, fees,
                      chain.native_asset.symbol)


def _resolved_before(session: Session, chain_id: int, fingerprints: Sequence[str]
                     ) -> dict[str, m.Discrepancy]:
    """Per fingerprint, its newest discrepancy when a checker resolved it: a balance
    condition that shows again reopens it (SPEC §8), keeping its cure deadline. One that
    self-cleared since (the funds came back) and shows again is a new condition."""
    newest: dict[str, m.Discrepancy] = {}
    for start in range(0, len(fingerprints), 500):
        rows = session.exec(select(m.Discrepancy).where(
            m.Discrepancy.chain_id == chain_id,
            col(m.Discrepancy.fingerprint).in_(fingerprints[start:start + 500]))
            .order_by(col(m.Discrepancy.id)))
        newest.update((row.fingerprint, row) for row in rows)
    return {key: row for key, row in newest.items() if row.status == "resolved"}


def _open(session: Session, audit: AuditLog, chain_id: int, finding: Finding,
          now: datetime, cure_deadline: datetime, reopens: int | None = None
          ) -> m.Discrepancy:
    row = m.Discrepancy(fingerprint=finding.fingerprint, chain_id=chain_id, type=finding.type,
                        severity=finding.severity, status="open",
                        address=finding.address or None, asset=finding.asset or None,
                        contract=finding.contract,
                        owners=list(finding.owners), tx_hash=finding.tx_hash,
                        event=finding.event,
                        detected_at=now, last_seen_at=now, cure_deadline=cure_deadline,
                        reopens=reopens)
    _refresh(row, finding, now)
    session.add(row)
    session.flush()
    payload: dict[str, Any] = {
        "type": finding.type, "severity": finding.severity, "address": finding.address,
        "asset": finding.asset, "onchain": _text(finding.onchain),
        "ledger": _text(finding.ledger), "difference": _text(finding.difference),
        "in_transit": _text(finding.in_transit),
        "block_number": finding.block.height if finding.block else None}
    if reopens is not None:
        payload["reopens"] = reopens
    audit.append(now, ENGINE_ACTOR, "detected", row.id, payload)
    return row


def _refresh(row: m.Discrepancy, finding: Finding, now: datetime) -> None:
    row.onchain, row.ledger, row.difference = finding.onchain, finding.ledger, finding.difference
    row.in_transit = finding.in_transit
    row.amount, row.counterparty, row.event = finding.amount, finding.counterparty, finding.event
    row.owners = list(finding.owners)
    row.block_number = finding.block.height if finding.block else None
    row.block_hash = finding.block.hash if finding.block else None
    row.last_seen_at = now


def _text(amount: int | None) -> str | None:
    return None if amount is None else str(amount)


def _block_time(head: ChainHead) -> datetime | None:
    return None if head.timestamp is None else datetime.fromtimestamp(head.timestamp, UTC)
