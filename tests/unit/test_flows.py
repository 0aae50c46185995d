"""Transfer rules: authorization, commingling, internal moves and balance continuity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chains.types import (
    Address,
    AssetRef,
    BalanceObservation,
    BaseUnits,
    ChainHead,
    FeePayment,
    TransferObservation,
)
from daemon.rules.flows import Flow, Instruction, classify, continuity
from daemon.rules.reconcile import LedgerView, WalletView

A = Address("0x" + "a1" * 20)   # alice, segregated
A2 = Address("0x" + "a2" * 20)  # alice's second wallet
B = Address("0x" + "b1" * 20)   # bob, segregated
H = Address("0x" + "cc" * 20)   # house
X = Address("0x" + "ee" * 20)   # outside world
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LEDGER = LedgerView("eth", {
    A: WalletView(A, "segregated", {"ETH": {"alice": 10}}),
    A2: WalletView(A2, "segregated", {"ETH": {"alice": 0}}),
    B: WalletView(B, "segregated", {"ETH": {"bob": 5}}),
    H: WalletView(H, "house", {"ETH": {"FIRM": 1}}),
})


def flow(sender: Address, recipient: Address, amount: int, tx: str = "0x01",
         height: int = 10, when: datetime = T0) -> Flow:
    t = TransferObservation("native", ChainHead(height, f"0x{height:064x}"), tx, None, sender,
                            recipient, None, BaseUnits(amount), "test")
    return Flow(t, "ETH", when)


CHECKERS = frozenset({"carol"})


def instruction(id_: int, to: Address = X, amount: int = 3, tx: str | None = None,
                at: datetime = T0 - timedelta(hours=1), by: str = "carol",
                source: Address = A, asset: str = "ETH") -> Instruction:
    return Instruction(id_, source, to, asset, amount, at, tx, by)


def types(flows: list[Flow], instructions: list[Instruction] = ()) -> list[str]:  # type: ignore[assignment]
    result = classify("eth", LEDGER, flows, instructions, timedelta(days=1), CHECKERS)
    return [f.type for f in result.findings]


def test_unapproved_outflow_is_unauthorized() -> None:
    """A client outflow to an outside address with no instruction is unauthorized."""
    assert types([flow(A, X, 3)]) == ["unauthorized_outflow"]


def test_instruction_by_destination_amount_authorizes_once() -> None:
    """An instruction matching destination, asset and amount authorizes exactly one transfer."""
    result = classify("eth", LEDGER, [flow(A, X, 3, "0x01"), flow(A, X, 3, "0x02", 11)],
                      [instruction(7)], timedelta(days=1), CHECKERS)
    assert dict(result.matches) == {("0x01", "native", -1, ""): 7}
    assert [f.tx_hash for f in result.findings] == ["0x02"]


def test_instruction_with_a_tx_hash_authorizes_only_that_exact_transfer() -> None:
    """An instruction naming a tx hash authorizes that transaction only when source,
    destination, asset and amount match too: the hash alone authorizes nothing (an
    instruction for 1 wei to a payee must not authorize 10 ETH to an attacker)."""
    assert types([flow(A, X, 3, "0xabc")], [instruction(1, tx="0xABC")]) == []
    assert types([flow(A, X, 99, "0xabc")], [instruction(1, amount=1, tx="0xABC")]) == [
        "unauthorized_outflow"]


def test_an_instruction_with_a_tx_hash_does_not_authorize_another_transaction() -> None:
    """An instruction bound to one tx hash does not match another transaction of the same
    destination and amount."""
    assert types([flow(A, X, 3, "0xdef")], [instruction(1, tx="0xabc")]) == [
        "unauthorized_outflow"]


@pytest.mark.parametrize(("change", "why"), [
    ({"amount": 4}, "wrong amount"),
    ({"to": B}, "wrong destination"),
    ({"asset": "USDC"}, "wrong asset"),
    ({"source": A2}, "wrong source wallet"),
    ({"at": T0 + timedelta(minutes=1)}, "approved after the block"),
    ({"at": T0 - timedelta(days=2)}, "approved longer ago than the window"),
    ({"by": "mallory"}, "approver is not a configured checker"),
    ({"by": ""}, "no approver"),
])
@pytest.mark.parametrize("tx", [None, "0x01"])
def test_an_instruction_that_differs_in_anything_authorizes_nothing(
        change: dict[str, object], why: str, tx: str | None) -> None:
    """Each mismatch (with or without a tx hash) leaves the outflow unauthorized."""
    fields: dict[str, object] = {"tx": tx, **change}
    assert types([flow(A, X, 3, "0x01")], [instruction(1, **fields)]) == [  # type: ignore[arg-type]
        "unauthorized_outflow"], why


def test_a_transfer_whose_block_time_is_unknown_is_not_authorized() -> None:
    """Without the block's time the approval window cannot be checked: fail closed."""
    assert types([Flow(flow(A, X, 3).transfer, "ETH", None)], [instruction(1)]) == [
        "unauthorized_outflow"]


def test_instruction_outside_the_window_does_not_match() -> None:
    """An instruction approved longer ago than the window authorizes nothing."""
    old = instruction(1, at=T0 - timedelta(days=3))
    assert types([flow(A, X, 3)], [old]) == ["unauthorized_outflow"]


def test_client_to_house_and_other_owner_is_commingling() -> None:
    """Client → house and client → another owner's wallet are commingling."""
    assert types([flow(A, H, 1), flow(A, B, 1, "0x02")]) == ["commingling", "commingling"]


def test_house_into_client_is_commingling_and_same_owner_is_internal() -> None:
    """Firm funds into a client wallet commingle; alice → alice's other wallet is internal."""
    assert types([flow(H, A, 1), flow(A, A2, 1, "0x02")]) == ["commingling"]


def test_deposits_from_outside_raise_nothing() -> None:
    """An inflow from an outside address is a deposit, not a finding."""
    assert types([flow(X, A, 1)]) == []


def test_findings_name_the_transfer() -> None:
    """A transfer finding carries tx hash, amount, counterparty and a per-transfer identity."""
    (finding,) = classify("eth", LEDGER, [flow(A, X, 3, "0x01")], [], timedelta(1),
                          CHECKERS).findings
    assert (finding.tx_hash, finding.amount, finding.counterparty) == ("0x01", 3, X)
    assert finding.fingerprint.endswith("0x01:native:-1:")


def test_continuity_accepts_flows_and_fees_and_flags_the_rest() -> None:
    """Δbalance equal to inflows - outflows - fees passes; anything else is unexplained."""
    since = ChainHead(10, "0x" + "10" * 32)
    now = ChainHead(20, "0x" + "20" * 32)
    eth = AssetRef("ETH", 18)
    previous = {(A, "ETH"): 100, (B, "ETH"): 50}
    flows = [flow(X, A, 30, height=12), flow(A, X, 10, "0x02", height=15)]
    fees = [FeePayment(now, "0x02", A, BaseUnits(1), True)]
    observations = [BalanceObservation(A, eth, BaseUnits(119), now, "t"),
                    BalanceObservation(B, eth, BaseUnits(42), now, "t")]
    (finding,) = continuity("eth", LEDGER, since, previous, observations, flows, fees, "ETH")
    assert (finding.type, finding.address, finding.difference) == (
        "unexplained_balance_change", B, -8)
    assert finding.event == "10-20"
