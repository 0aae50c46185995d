"""PURE rules of the exception workflow (SPEC §4): who may move a discrepancy where.

    open ──propose (maker)──▶ proposed ──approve (checker ≠ proposer)──▶ resolved
      ▲                           │
      └────reject (checker)───────┘
    self_cleared, voided: set by the engine only; escalation raises the severity of an
    item still open (or proposed) past its cure deadline, once.

`check` returns the new state or raises Refused with one line; no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Action = Literal["propose", "approve", "reject"]

REASON_CODES = ("ledger_corrected", "deposit_in_transit", "authorized_offline",
                "false_positive", "funds_restored")
ROLE_FOR: Mapping[str, str] = {"propose": "maker", "approve": "checker", "reject": "checker"}
FROM_STATUS: Mapping[str, str] = {"propose": "open", "approve": "proposed", "reject": "proposed"}
TO_STATUS: Mapping[str, str] = {"propose": "proposed", "approve": "resolved", "reject": "open"}
RAISED: Mapping[str, str] = {"info": "warning", "warning": "critical", "critical": "critical"}
"""Escalation: the severity an overdue item gets (critical stays critical, flagged)."""


class Refused(Exception):
    """An action the workflow does not allow; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Request:
    """What a user asks to do to one discrepancy."""

    action: Action
    user: str
    reason: str | None = None
    note: str | None = None


def check(request: Request, status: str, proposer: str | None,
          roles: Mapping[str, Sequence[str]]) -> str:
    """Return the status `request` moves a discrepancy in `status` to.

    Raises Refused for an unknown user, a missing role, a self-approval, an action
    illegal in `status`, an unknown reason code or a missing note.
    """
    action, user = request.action, request.user
    if user not in roles:
        raise Refused(f"unknown user {user!r} (users come from [[users]] in the configuration)")
    role = ROLE_FOR[action]
    if role not in roles[user]:
        raise Refused(f"user {user!r} may not {action}: it needs the {role} role")
    if status != FROM_STATUS[action]:
        raise Refused(f"cannot {action} a discrepancy that is {status} "
                      f"(only {FROM_STATUS[action]} ones)")
    if action == "propose" and request.reason not in REASON_CODES:
        raise Refused(f"unknown reason code {request.reason!r} "
                      f"(one of: {', '.join(REASON_CODES)})")
    if action in ("propose", "reject") and not (request.note or "").strip():
        raise Refused(f"{action} needs a note (--note TEXT)")
    if action == "approve" and user == proposer:
        raise Refused(f"user {user!r} proposed this resolution and may not approve it too "
                      "(maker-checker: another checker must)")
    return TO_STATUS[action]
