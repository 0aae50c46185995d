"""Output shapes: the `--json` documents of SPEC §5 and the rich tables people read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

from chains.types import UNCONFIRMED, AssetRef, TransferObservation
from daemon.cli.common import plural
from daemon.inputs.chain_settings import ChainSettings
from daemon.rules.amounts import format_amount
from daemon.rules.reconcile import Finding
from daemon.rules.transit import Item, adjustments
from daemon.service import CycleResult
from daemon.spot_check import CheckReport
from daemon.status import ChainStatus
from daemon.store.models import AuditEntry
from daemon.store.repository import DiscrepancyRecord, Heartbeat


def _text(amount: int | None) -> str | None:
    return None if amount is None else str(amount)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def display(amount: int | None, decimals: int) -> str:
    """Return `amount` in display units, or '—' when unknown."""
    return "—" if amount is None else format_amount(amount, decimals)


def finding_json(finding: Finding) -> dict[str, Any]:
    """Return one (unpersisted) finding as JSON."""
    return {
        "type": finding.type, "severity": finding.severity, "chain": finding.chain,
        "address": finding.address, "asset": finding.asset, "contract": finding.contract,
        "owners": list(finding.owners), "onchain": _text(finding.onchain),
        "ledger": _text(finding.ledger), "in_transit": _text(finding.in_transit),
        "expected": _text(finding.expected if finding.in_transit is not None else None),
        "difference": _text(finding.difference),
        "tx_hash": finding.tx_hash,
        "block_number": finding.block.height if finding.block else None,
        "block_hash": finding.block.hash if finding.block else None,
    }


def check_json(report: CheckReport) -> dict[str, Any]:
    """Return the SPEC §5 document of `segwatch check`."""
    wallet = report.ledger.wallets.get(report.address)
    in_transit = adjustments(report.items)
    balances = []
    for obs in report.observations:
        ledger = wallet.ledger_total(obs.asset.symbol) if wallet else None
        moving = in_transit.get((report.address, obs.asset.symbol), 0)
        expected = None if ledger is None else ledger + moving
        difference = None if expected is None or obs.amount is None else obs.amount - expected
        balances.append({"asset": obs.asset.symbol, "contract": obs.asset.contract,
                         "onchain": _text(obs.amount), "ledger": _text(ledger),
                         "in_transit": _text(None if ledger is None else moving),
                         "expected": _text(expected),
                         "difference": _text(difference), "error": obs.error})
    return {
        "chain": report.chain.name, "address": report.address,
        "head": {"height": report.head.height, "hash": report.head.hash},
        "source": report.source,
        "structure": wallet.structure if wallet else None,
        "ledger_as_of": _iso(report.ledger_as_of),
        "balances": balances,
        "reconciling_items": [item.as_json(report.checked_at) for item in report.items],
        "transfers": [transfer_json(t, report.address, report.head.height, report.chain)
                      for t in check_transfers(report)],
        "blocks": None if report.scan is None or not report.scan.blocks else
        {"from": report.scan.blocks[0].height, "to": report.scan.blocks[-1].height},
        "traces": report.scan.traces if report.scan else None,
        "findings": [finding_json(f) for f in report.result.findings],
        "notes": report.notes,
        "status": check_status(report),
    }


def transfer_json(t: TransferObservation, address: str, head: int,
                  chain: ChainSettings) -> dict[str, Any]:
    """Return one transfer in the SPEC §5 shape, seen from `address`."""
    direction = "self" if t.sender == t.recipient else ("out" if t.sender == address else "in")
    pending = t.block == UNCONFIRMED
    sender: Any = t.sender
    recipient: Any = t.recipient
    if chain.family == "utxo":  # SPEC §5: the addresses on each side, as lists
        sender = list(t.senders) if t.senders else [t.sender] if t.sender else []
        recipient = [t.recipient]
    return {
        "tx_hash": t.tx_hash, "block_number": None if pending else t.block.height,
        "block_hash": None if pending else t.block.hash,
        "log_index": t.log_index, "kind": t.kind, "asset": asset_label(chain, t.contract),
        "contract": t.contract, "from": sender, "to": recipient, "amount": str(t.amount),
        "direction": direction, "confirmations": 0 if pending else head - t.block.height + 1,
    }


def check_transfers(report: CheckReport) -> list[TransferObservation]:
    """The transfers a spot check lists: the checked address's, confirmed then pending."""
    if report.scan is None:
        return []
    if report.chain.family != "utxo":
        return list(report.scan.transfers)
    return [t for t in (*report.scan.transfers, *report.scan.mempool)
            if report.address in (t.sender, t.recipient)]


def asset_label(chain: ChainSettings, contract: str | None) -> str:
    """The symbol of a configured asset, else the token's contract address."""
    for asset in chain.assets:
        if asset.contract == contract:
            return asset.symbol
    return contract or chain.native_asset.symbol


def check_status(report: CheckReport) -> str:
    """Return `discrepancy`, `unverified` (a balance could not be read), `unknown` (not
    in the ledger), or `compliant`."""
    if report.result.findings:
        return "discrepancy"
    if report.result.read_errors:
        return "unverified"
    if not report.in_ledger:
        return "unknown"
    return "compliant"


def check_table(report: CheckReport) -> Table:
    """Return the balances of a spot check as a table."""
    doc = check_json(report)
    table = Table(title=f"{report.chain.name} {report.address} at block {report.head.height}")
    for column in ("asset", "on-chain", "ledger", "in transit", "expected", "difference",
                   "error"):
        table.add_column(column, justify="right" if column != "asset" else "left")
    assets = {a.symbol: a for a in report.chain.assets}
    for row in doc["balances"]:
        decimals = assets[row["asset"]].decimals
        table.add_row(row["asset"], *(_display_text(row[k], decimals) for k in
                                      ("onchain", "ledger", "in_transit", "expected",
                                       "difference")),
                      untrusted(row["error"]))
    return table


ITEMS_SHOWN = 20
"""A table lists at most this many reconciling items (JSON lists them all)."""


def items_table(items: Sequence[Item], now: datetime, chain: ChainSettings) -> Table:
    """Reconciling items (SPEC §8) as a table: transfer, direction, amount, block time,
    age, and whether the chain has it and the books not yet (unbooked) or the books have
    it and the pinned block not yet (ahead, or a reorg removed it: reorged); the oldest
    first, at most ITEMS_SHOWN."""
    shown = _oldest(items, ITEMS_SHOWN)
    more = f", the oldest {len(shown)} shown" if len(items) > len(shown) else ""
    table = Table(title=f"{plural(len(items), 'reconciling item')} (in transit){more}")
    for column in ("address", "tx", "what", "dir", "asset", "amount", "block", "block time",
                   "age", "side"):
        table.add_column(column)
    decimals = {a.symbol: a.decimals for a in chain.assets}
    for item in shown:
        doc = item.as_json(now)
        table.add_row(doc["address"], doc["tx_hash"] or "", untrusted(doc["what"]),
                      doc["direction"], untrusted(doc["asset"]),
                      display(abs(item.movement.delta), decimals.get(doc["asset"], 0)),
                      str(doc["block"]), _iso(item.movement.time) or "",
                      _duration(max(0, doc["age_seconds"])), doc["side"])
    return table


UNTRUSTED_CHARS = 300
"""At most this much of a source's text (an error a node answered) is shown."""


def untrusted(text: str | None) -> str:
    """`text` from outside (a node's error message), bounded and escaped for Rich, so
    that it is shown as written: `[bold]` is not markup and `[/x]` cannot crash output."""
    if not text:
        return ""
    short = text if len(text) <= UNTRUSTED_CHARS else text[:UNTRUSTED_CHARS] + "…"
    return escape(short.replace("\r", " ").replace("\n", " "))


def _display_text(value: str | None, decimals: int) -> str:
    return display(None if value is None else int(value), decimals)


def discrepancy_json(record: DiscrepancyRecord, now: datetime,
                     depth: int | None = None) -> dict[str, Any]:
    """Return one discrepancy in the SPEC §5 list shape."""
    row = record.row
    remaining = (row.cure_deadline - now).total_seconds() if row.status in ("open", "proposed") \
        else None
    return {
        "id": row.id, "type": row.type, "severity": row.severity, "status": row.status,
        "chain": record.chain, "address": row.address, "asset": row.asset,
        "contract": row.contract, "owners": list(row.owners),
        "onchain": _text(row.onchain), "ledger": _text(row.ledger),
        "in_transit": _text(row.in_transit),
        "expected": None if row.in_transit is None or row.ledger is None
        else str(row.ledger + row.in_transit),
        "difference": _text(row.difference), "tx_hash": row.tx_hash,
        "block_number": row.block_number, "block_hash": row.block_hash,
        "confirmations": record.confirmations,
        "final": None if record.confirmations is None or depth is None
        else record.confirmations >= depth,
        "amount": _text(row.amount), "counterparty": row.counterparty,
        "detected_at": _iso(row.detected_at), "last_seen_at": _iso(row.last_seen_at),
        "cure_deadline": _iso(row.cure_deadline), "closed_at": _iso(row.closed_at),
        "cure_remaining_seconds": None if remaining is None else int(remaining),
        "overdue": remaining is not None and remaining < 0,
        "escalated_at": _iso(row.escalated_at),
        "proposal": None if row.proposed_by is None else {
            "by": row.proposed_by, "reason": row.proposed_reason, "note": row.proposed_note,
            "at": _iso(row.proposed_at)},
        "resolved_by": row.resolved_by,
        "reopens": row.reopens,
    }


AMOUNT_KEYS = ("onchain", "ledger", "in_transit", "expected", "difference", "amount")


def discrepancy_lines(doc: dict[str, Any], decimals: int | None) -> list[tuple[str, str]]:
    """`discrepancies show` for people: each field of `doc` (discrepancy_json plus its
    reopenings and reconciling items) as (label, text): amounts in display units with
    their asset, nothing unset shown as None, lists joined, the proposal in one line.
    The texts are not escaped (the caller prints them as plain text)."""
    lines: list[tuple[str, str]] = []
    for key, value in doc.items():
        if key == "history":
            continue
        if key in AMOUNT_KEYS and value is not None and decimals is not None:
            text = f"{format_amount(int(value), decimals)} {doc.get('asset') or ''}".rstrip()
        elif key == "proposal" and isinstance(value, dict):
            text = f"{value['reason']} by {value['by']} at {value['at']}: {value['note']}"
        elif key == "reconciling_items" and isinstance(value, list):
            text = plural(len(value), "item") if value else "—"
        elif isinstance(value, list):
            text = _joined(value)
        elif isinstance(value, dict):
            text = "; ".join(f"{k}: {_joined(v) if isinstance(v, list) else v}"
                             for k, v in value.items())
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        else:
            text = "—" if value is None else str(value)
        lines.append((key.replace("_", " "), text))
    return lines


def _joined(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values) or "—"


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    """Return one audit entry as JSON."""
    return {"seq": entry.seq, "at": _iso(entry.at), "actor": entry.actor,
            "action": entry.action, "payload": entry.payload, "hash": entry.hash}


def discrepancy_table(records: Sequence[DiscrepancyRecord], now: datetime,
                      decimals: dict[tuple[str, str], int]) -> Table:
    """Return discrepancies as a table, amounts in display units."""
    table = Table(title=plural(len(records), "discrepancy", "discrepancies"))
    for column in ("id", "type", "severity", "status", "chain", "address", "asset",
                   "on-chain", "ledger", "difference", "amount", "cure in"):
        table.add_column(column)
    for record in records:
        row = record.row
        places = decimals.get((record.chain, row.asset or ""))
        doc = discrepancy_json(record, now)
        table.add_row(str(row.id), row.type, row.severity, row.status, record.chain,
                      untrusted(row.address), untrusted(row.asset),
                      _units(row.onchain, places), _units(row.ledger, places),
                      _units(row.difference, places),
                      "" if row.amount is None else _units(row.amount, places),
                      _remaining(doc["cure_remaining_seconds"]))
    return table


def _units(amount: int | None, decimals: int | None) -> str:
    """Display units; base units for an asset whose decimals are unknown (an unconfigured
    token)."""
    if decimals is None:
        return "—" if amount is None else str(amount)
    return display(amount, decimals)


def _remaining(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds < 0:
        return f"overdue {_duration(-seconds)}"
    return _duration(seconds)


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m"


def heartbeat_json(beat: Heartbeat | None, now: datetime) -> dict[str, Any] | None:
    """The daemon's heartbeat: which daemon, its version, since when, how long ago."""
    if beat is None:
        return None
    return {"id": beat.daemon, "version": beat.version, "started_at": _iso(beat.started_at),
            "uptime_seconds": round((beat.beat_at - beat.started_at).total_seconds(), 1),
            "heartbeat_at": _iso(beat.beat_at),
            "heartbeat_age_seconds": round((now - beat.beat_at).total_seconds(), 1)}


def heartbeat_line(beat: Heartbeat | None, now: datetime) -> str:
    """`segwatch status`'s line about the daemon (plain text, no markup)."""
    if beat is None:
        return "daemon: no heartbeat in this store (no `segwatch run` has run on it lately)"
    seconds = max(0, int((now - beat.beat_at).total_seconds()))
    ago = f"{seconds} s" if seconds < 120 else _duration(seconds)
    return (f"daemon: segwatch {beat.version} ({beat.daemon}), up since "
            f"{_iso(beat.started_at)}, last heartbeat {ago} ago")


def status_json(statuses: Sequence[ChainStatus], overall: str,
                now: datetime | None = None, heartbeat: Heartbeat | None = None
                ) -> dict[str, Any]:
    """Return the `segwatch status` document: the overall signal, this segwatch's
    version, the daemon's newest heartbeat (None without one) and each chain."""
    from daemon import __version__

    now = now or datetime.now(UTC)
    return {"status": overall, "version": __version__,
            "daemon": heartbeat_json(heartbeat, now), "chains": [
        {"chain": s.chain, "status": s.status, "open_findings": s.open_findings,
         "last_cycle_at": _iso(s.last_cycle_at), "block_number": s.block, "fresh": s.fresh,
         "last_error": s.last_error, "scanned_to": s.scanned_to, "scan_error": s.scan_error,
         "overdue": s.overdue, "next_cure_deadline": _iso(s.next_cure_deadline),
         "next_cure_remaining_seconds": s.next_cure_remaining,
         "ledger_as_of": _iso(s.ledger_as_of),
         "reconciling_items_total": len(s.items),
         "reconciling_items": [i.as_json(now) for i in _oldest(s.items, STATUS_ITEMS)]}
        for s in statuses]}


STATUS_ITEMS = 1000
"""`status --json` (and GET /status) lists at most this many reconciling items per chain,
the oldest first (`reconciling_items_total` counts them all)."""


def _oldest(items: Sequence[Item], limit: int) -> list[Item]:
    return sorted(items, key=lambda i: (i.movement.time, i.movement.key))[:limit]


def status_table(statuses: Sequence[ChainStatus], overall: str) -> Table:
    """Return `segwatch status` as a table."""
    table = Table(title=f"overall: {overall}")
    for column in ("chain", "status", "open findings", "overdue", "next cure in", "last cycle",
                   "block", "scanned to", "ledger as of", "in transit", "last error"):
        table.add_column(column)
    for s in statuses:
        cure = _remaining(s.next_cure_remaining)
        table.add_row(s.chain, s.status, str(s.open_findings), str(s.overdue), cure,
                      _iso(s.last_cycle_at) or "never",
                      "" if s.block is None else str(s.block),
                      "" if s.scanned_to is None else str(s.scanned_to),
                      _iso(s.ledger_as_of) or "no ledger", str(len(s.items)),
                      untrusted(s.last_error or s.scan_error))
    return table


def cycle_json(result: CycleResult) -> dict[str, Any]:
    """Return one cycle's outcome as JSON."""
    return {
        "chain": result.chain, "cycle_id": result.cycle_id, "error": result.error,
        "head": None if result.head is None else result.head.height,
        "block": None if result.block is None else
        {"height": result.block.height, "hash": result.block.hash},
        "source": result.source, "wallets": result.wallets,
        "findings": [finding_json(f) for f in result.findings],
        "read_errors": result.read_errors,
        "rpc_requests": result.rpc_requests,
        "opened": result.write.opened if result.write else 0,
        "self_cleared": result.write.cleared if result.write else 0,
        "duration_seconds": round(result.duration, 3),
    }


def asset_decimals(assets: dict[str, tuple[AssetRef, ...]]) -> dict[tuple[str, str], int]:
    """Return (chain, symbol) → decimals for display."""
    return {(chain, a.symbol): a.decimals for chain, refs in assets.items() for a in refs}


def transfers_table(report: CheckReport) -> Table:
    """Return a spot check's transfers as a table, amounts in display units."""
    scan = report.scan
    span = f"blocks {scan.blocks[0].height}-{scan.blocks[-1].height}" if scan and scan.blocks \
        else "no blocks"
    table = Table(title=f"transfers, {span}")
    for column in ("block", "kind", "dir", "asset", "amount", "counterparty", "tx", "conf"):
        table.add_column(column)
    decimals = {a.symbol: a.decimals for a in report.chain.assets}
    for t in check_transfers(report):
        doc = transfer_json(t, report.address, report.head.height, report.chain)
        other = doc["from"] if doc["direction"] == "in" else doc["to"]
        if isinstance(other, list):
            other = ", ".join(other)
        table.add_row(str(doc["block_number"] or "mempool"), doc["kind"], doc["direction"],
                      untrusted(doc["asset"]),
                      display(t.amount, decimals.get(doc["asset"], 0)), other or "",
                      doc["tx_hash"] or f"withdrawal #{doc['log_index']}",
                      str(doc["confirmations"]))
    return table
