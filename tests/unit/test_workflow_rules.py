"""The pure maker-checker rules (daemon/rules/workflow.py)."""

from __future__ import annotations

import pytest

from daemon.rules.workflow import REASON_CODES, Refused, Request, check

ROLES = {"mia": ["maker"], "carl": ["checker"], "cora": ["maker", "checker"], "val": ["viewer"]}


@pytest.mark.parametrize(("request_", "status", "proposer", "to"), [
    (Request("propose", "mia", "ledger_corrected", "fixed"), "open", None, "proposed"),
    (Request("approve", "carl"), "proposed", "mia", "resolved"),
    (Request("reject", "carl", note="no"), "proposed", "mia", "open"),
    (Request("reject", "cora", note="withdrawn"), "proposed", "cora", "open"),
])
def test_allowed_transitions(request_: Request, status: str, proposer: str | None,
                             to: str) -> None:
    """open → proposed (maker), proposed → resolved (another checker) or → open (checker)."""
    assert check(request_, status, proposer, ROLES) == to


@pytest.mark.parametrize(("request_", "status", "proposer", "message"), [
    (Request("propose", "ghost", "false_positive", "x"), "open", None, "unknown user"),
    (Request("propose", "carl", "false_positive", "x"), "open", None, "maker role"),
    (Request("approve", "mia"), "proposed", "cora", "checker role"),
    (Request("approve", "val"), "proposed", "mia", "checker role"),
    (Request("approve", "cora"), "proposed", "cora", "may not approve it too"),
    (Request("approve", "carl"), "open", None, "that is open"),
    (Request("propose", "mia", "false_positive", "x"), "resolved", None, "that is resolved"),
    (Request("propose", "mia", "false_positive", "x"), "self_cleared", None, "self_cleared"),
    (Request("propose", "mia", "false_positive", "x"), "voided", None, "voided"),
    (Request("propose", "mia", "typo", "x"), "open", None, "unknown reason code"),
    (Request("propose", "mia", "false_positive", ""), "open", None, "needs a note"),
    (Request("reject", "carl", note=None), "proposed", "mia", "needs a note"),
])
def test_refusals(request_: Request, status: str, proposer: str | None, message: str) -> None:
    """Every refusal is one line naming the rule."""
    with pytest.raises(Refused, match=message) as refused:
        check(request_, status, proposer, ROLES)
    assert "\n" not in str(refused.value)


def test_the_reason_codes() -> None:
    """The SPEC's reason codes, exactly."""
    assert set(REASON_CODES) == {"ledger_corrected", "deposit_in_transit",
                                 "authorized_offline", "false_positive", "funds_restored"}
