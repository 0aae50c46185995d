"""PURE: every discrepancy's state replayed from the audit log, compared with the table.

The table is what `status` reads; the log is what is hash-chained and signed. A row
changed by a direct UPDATE (a finding "resolved" with no approval, a severity lowered,
an approver's name swapped) no longer matches its replay, and is named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STATUS_AFTER: Mapping[str, str] = {
    "detected": "open", "proposed": "proposed", "resolved": "resolved", "rejected": "open",
    "self_cleared": "self_cleared", "voided": "voided",
}
"""The status each audited action leaves a discrepancy in (`escalated` and `refused`
leave it as it was)."""


@dataclass
class Replayed:
    """What the log says of one discrepancy."""

    status: str | None = None
    severity: str | None = None
    proposed_by: str | None = None
    resolved_by: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """One audit entry about a discrepancy."""

    discrepancy_id: int
    actor: str
    action: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Row:
    """The table's view of one discrepancy."""

    id: int
    status: str
    severity: str
    proposed_by: str | None
    resolved_by: str | None


def replay(events: Iterable[Event]) -> dict[int, Replayed]:
    """Fold the log's events (in sequence order) into each discrepancy's state."""
    states: dict[int, Replayed] = {}
    for event in events:
        state = states.setdefault(event.discrepancy_id, Replayed())
        if event.action in STATUS_AFTER:
            state.status = STATUS_AFTER[event.action]
        if event.action == "detected":
            state.severity = str(event.payload.get("severity"))
        elif event.action == "escalated":
            state.severity = str(event.payload.get("to_severity"))
        elif event.action == "proposed":
            state.proposed_by = event.actor
        elif event.action == "resolved":
            state.resolved_by = event.actor
    return states


def compare(rows: Iterable[Row], states: Mapping[int, Replayed]) -> list[str]:
    """Every way the table differs from the replayed log, one line each, by id."""
    problems = []
    seen = set()
    for row in rows:
        seen.add(row.id)
        state = states.get(row.id)
        if state is None or state.status is None:
            problems.append(f"discrepancy {row.id}: in the table but never detected in the "
                            "log (inserted directly)")
            continue
        for name, table, logged in (("status", row.status, state.status),
                                    ("severity", row.severity, state.severity),
                                    ("proposed_by", row.proposed_by, state.proposed_by),
                                    ("resolved_by", row.resolved_by, state.resolved_by)):
            if table != logged:
                problems.append(f"discrepancy {row.id}: the table says {name} {table!r}, the "
                                f"log says {logged!r} (changed outside the workflow)")
    for missing in sorted(set(states) - seen):
        if states[missing].status is not None:
            problems.append(f"discrepancy {missing}: in the log but not in the table "
                            "(deleted)")
    return problems
