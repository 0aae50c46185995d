"""PURE construction of alert messages: an `Alert` from a discrepancy and one of its
audit entries, and the generic webhook's JSON object or the Slack message for it.
No I/O and no clock; delivery, retries and cursors live in daemon/runtime/alerts.py.

A payload is built only from the discrepancy and the audit entry, never from a sink's
settings, so a sink's URL can never appear in one.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daemon.rules.amounts import format_amount
from daemon.store import models as m

EVENTS = {"detected": "detected", "escalated": "escalated", "self_cleared": "recovered",
          "resolved": "recovered", "voided": "recovered"}
"""Alert-worthy audit actions → the alert's event."""

_STATUS_AFTER = {"detected": "open", "self_cleared": "self_cleared", "resolved": "resolved",
                 "voided": "voided"}
_TITLES = {"detected": "New finding", "escalated": "Escalated", "recovered": "Recovered"}
_SLACK_FIELDS_PER_SECTION = 10  # Slack's limit for one section block
_SLACK_OWNERS_SHOWN = 5



if TYPE_CHECKING:
    from daemon.store.heads import Head


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: a discrepancy as of one of its audit entries. Amounts in base units."""

    id: str
    event: str
    action: str
    seq: int
    actor: str
    """Who made the change: `engine`, or the user who approved a resolution."""
    discrepancy_id: int
    type: str
    severity: str
    status: str
    chain: str
    address: str | None
    asset: str | None
    decimals: int | None
    owners: tuple[str, ...]
    onchain: int | None
    ledger: int | None
    difference: int | None
    amount: int | None
    counterparty: str | None
    tx_hash: str | None
    block_number: int | None
    detected_at: datetime
    cure_deadline: datetime
    occurred_at: datetime
    in_transit: int | None = None
    """Balance findings: the reconciling items' net (expected = ledger + in_transit,
    difference = onchain - expected; SPEC §8)."""


def alert_from(entry: m.AuditEntry, row: m.Discrepancy, chain: str,
               decimals: int | None = None) -> Alert | None:
    """Return the alert for audit `entry` of discrepancy `row`, or None when the entry's
    action is not alert-worthy.

    Severity, status, amounts and block are those the entry recorded (a `detected` entry
    keeps the amounts at detection, an escalation the severity it raised to and the
    status then), else the discrepancy's current ones.
    """
    event = EVENTS.get(entry.action)
    if event is None or row.id is None or entry.seq is None:
        return None
    noted = entry.payload if isinstance(entry.payload, dict) else {}
    return Alert(
        id=f"segwatch-{row.id}-{entry.seq}", event=event, action=entry.action, seq=entry.seq,
        actor=entry.actor, discrepancy_id=row.id, type=row.type,
        severity=_noted_text(noted, ("to_severity", "severity"), row.severity),
        status=_STATUS_AFTER.get(entry.action) or _noted_text(noted, ("status",), row.status),
        chain=chain, address=row.address,
        asset=row.asset, decimals=decimals, owners=tuple(row.owners),
        onchain=_noted_int(noted, "onchain", row.onchain),
        ledger=_noted_int(noted, "ledger", row.ledger),
        difference=_noted_int(noted, "difference", row.difference),
        amount=row.amount, counterparty=row.counterparty, tx_hash=row.tx_hash,
        block_number=_noted_int(noted, "block_number", row.block_number),
        detected_at=row.detected_at, cure_deadline=row.cure_deadline, occurred_at=entry.at,
        in_transit=_noted_int(noted, "in_transit", row.in_transit))


def _noted_text(noted: dict[str, Any], keys: tuple[str, ...], fallback: str) -> str:
    for key in keys:
        value = noted.get(key)
        if isinstance(value, str) and value:
            return value
    return fallback


def _noted_int(noted: dict[str, Any], key: str, fallback: int | None) -> int | None:
    value = noted.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return fallback
    return fallback


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """Return the generic webhook's JSON object; amounts are base-unit strings."""
    return {
        "id": alert.id, "event": alert.event, "action": alert.action, "actor": alert.actor,
        "discrepancy_id": alert.discrepancy_id, "type": alert.type,
        "severity": alert.severity, "status": alert.status, "chain": alert.chain,
        "address": alert.address, "asset": alert.asset, "decimals": alert.decimals,
        "owners": list(alert.owners), "onchain": _text(alert.onchain),
        "ledger": _text(alert.ledger), "in_transit": _text(alert.in_transit),
        "difference": _text(alert.difference), "amount": _text(alert.amount),
        "counterparty": alert.counterparty,
        "tx_hash": alert.tx_hash, "block_number": alert.block_number,
        "detected_at": _iso(alert.detected_at), "cure_deadline": _iso(alert.cure_deadline),
        "occurred_at": _iso(alert.occurred_at),
    }


def slack_summary(alert: Alert) -> str:
    """Return the one-line summary Slack shows in notifications."""
    title = _TITLES[alert.event]
    if alert.event == "recovered":
        title = f"{title} ({alert.status})"
    where = " ".join(p for p in (alert.chain, alert.address, alert.asset) if p)
    return (f"{title}: discrepancy #{alert.discrepancy_id} {alert.type} "
            f"[{alert.severity}] on {where}")


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Return a Slack incoming-webhook message: `text` plus section blocks."""
    fields = [{"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(value)}"}
              for name, value in _slack_fields(alert) if value is not None]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": f"*{_slack_escape(slack_summary(alert))}*"}}]
    for start in range(0, len(fields), _SLACK_FIELDS_PER_SECTION):
        blocks.append({"type": "section",
                       "fields": fields[start:start + _SLACK_FIELDS_PER_SECTION]})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"`{alert.id}` · {_iso(alert.occurred_at)}"}]})
    return {"text": _slack_escape(slack_summary(alert)), "blocks": blocks}


def with_head(payload: dict[str, Any], kind: str, head: Head | None) -> dict[str, Any]:
    """`payload` carrying the newest signed audit head (SPEC §9): as `audit_head` in a
    webhook's JSON, as a context line in Slack. A receiver keeps it: the log must still
    extend it later (`segwatch audit verify --against`)."""
    if head is None:
        return payload
    if kind == "webhook":
        return {**payload, "audit_head": head.as_json()}
    blocks = [*payload.get("blocks", []), {"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"audit head #{head.seq} `{head.hash}` signed by "
                                   f"`{head.key[:16]}`"}]}]
    return {**payload, "blocks": blocks}


def build_payload(kind: str, alert: Alert) -> dict[str, Any]:
    """Return the message for a sink of `kind` (`webhook` or `slack`); raise ValueError
    for another kind."""
    if kind == "webhook":
        return webhook_payload(alert)
    if kind == "slack":
        return slack_payload(alert)
    raise ValueError(f"unknown alert sink kind {kind!r}")


def _slack_fields(alert: Alert) -> list[tuple[str, str | None]]:
    owners = list(alert.owners[:_SLACK_OWNERS_SHOWN])
    if len(alert.owners) > _SLACK_OWNERS_SHOWN:
        owners.append(f"and {len(alert.owners) - _SLACK_OWNERS_SHOWN} more")
    return [
        ("Type", alert.type), ("Severity", alert.severity), ("Status", alert.status),
        ("Chain", alert.chain), ("Address", alert.address), ("Asset", alert.asset),
        ("Owners", ", ".join(owners) or None),
        ("On-chain", _display(alert, alert.onchain)), ("Ledger", _display(alert, alert.ledger)),
        ("Difference", _display(alert, alert.difference)),
        ("Amount", _display(alert, alert.amount)), ("Counterparty", alert.counterparty),
        ("Tx", alert.tx_hash), ("Block", _text(alert.block_number)),
        ("Detected", _iso(alert.detected_at)), ("Cure deadline", _iso(alert.cure_deadline)),
        ("By", alert.actor if alert.event == "recovered" else None),
    ]


def _display(alert: Alert, amount: int | None) -> str | None:
    if amount is None:
        return None
    if alert.decimals is None:
        return f"{amount} base units"
    return f"{format_amount(amount, alert.decimals)} {alert.asset or ''}".rstrip()


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


SIGNATURE_HEADER = "X-Segwatch-Signature"
"""Webhook signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256>` over
`<t>.` followed by the exact body bytes, keyed by the sink's `secret_env` secret."""
SIGNATURE_TOLERANCE = 300
"""Seconds a receiver accepts a signature's timestamp away from its own clock."""


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """Return the SIGNATURE_HEADER value for `body` sent at `timestamp`."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, header: str, body: bytes, now: float,
                     tolerance: float = SIGNATURE_TOLERANCE) -> str | None:
    """What a receiver checks: None when `header` signs exactly `body` with `secret` and
    its timestamp is within `tolerance` of `now`; else why not ("malformed", "stale
    timestamp" (a replay), "bad signature"). Never raises."""
    parts = dict(item.partition("=")[::2] for item in header.split(",") if "=" in item)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    if not stamp.isdigit() or len(stamp) > 12 or len(given) != 64:
        return "malformed"
    if abs(now - int(stamp)) > tolerance:
        return "stale timestamp"
    expected = sign(secret, body, int(stamp)).partition(",v1=")[2]
    return None if hmac.compare_digest(expected, given) else "bad signature"
