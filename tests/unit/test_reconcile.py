"""Reconciliation is a pure function of the ledger view and the observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from chains.types import Address, AssetRef, BalanceObservation, BaseUnits, ChainHead
from daemon.rules.reconcile import (
    MAX_DETAIL_CHARS,
    Finding,
    LedgerView,
    WalletView,
    reconcile,
    scan_stalled_finding,
)

ETH = AssetRef("ETH", 18)
USDC = AssetRef("USDC", 6, Address("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"))
BLOCK = ChainHead(10, "0x" + "11" * 32)
A = Address("0x" + "aa" * 20)
B = Address("0x" + "bb" * 20)
HOUSE = Address("0x" + "cc" * 20)


def obs(address: Address, asset: AssetRef, amount: int | None,
        error: str | None = None) -> BalanceObservation:
    value = None if amount is None else BaseUnits(amount)
    return BalanceObservation(address, asset, value, BLOCK, "test", error)


def view() -> LedgerView:
    return LedgerView("ethereum", {
        A: WalletView(A, "segregated", {"ETH": {"alice": 100}, "USDC": {"alice": 5}}),
        B: WalletView(B, "omnibus", {"ETH": {"bob": 60, "carol": 40}}),
        HOUSE: WalletView(HOUSE, "house", {"ETH": {"FIRM": 1_000}}),
    })


def test_matching_balances_produce_no_findings() -> None:
    """A client wallet whose on-chain balance equals its allocation total is reconciled."""
    result = reconcile(view(), [obs(A, ETH, 100), obs(A, USDC, 5), obs(B, ETH, 100)])
    assert result.findings == ()
    assert result.verified == {(A, "ETH"), (A, "USDC"), (B, "ETH")}


def test_shortfall_is_critical_with_signed_difference() -> None:
    """A balance below the allocation total is a critical balance_shortfall with owners."""
    (finding,) = reconcile(view(), [obs(B, ETH, 70)]).findings
    assert finding.type == "balance_shortfall"
    assert finding.severity == "critical"
    assert (finding.onchain, finding.ledger, finding.difference) == (70, 100, -30)
    assert finding.owners == ("bob", "carol")
    assert finding.block == BLOCK


def test_surplus_is_a_warning() -> None:
    """A balance above the allocation total is a balance_surplus warning."""
    (finding,) = reconcile(view(), [obs(A, USDC, 6)]).findings
    assert (finding.type, finding.severity, finding.difference) == ("balance_surplus",
                                                                   "warning", 1)


def test_unallocated_asset_on_client_wallet_is_a_surplus() -> None:
    """A token the ledger does not allocate in a client wallet counts as unallocated surplus."""
    (finding,) = reconcile(view(), [obs(B, USDC, 9)]).findings
    assert (finding.type, finding.ledger, finding.owners) == ("balance_surplus", 0,
                                                             ("bob", "carol"))


def test_house_wallets_never_produce_client_findings() -> None:
    """House wallets are the firm's own: any balance is fine for client reconciliation."""
    assert reconcile(view(), [obs(HOUSE, ETH, 1), obs(HOUSE, USDC, 7)]).findings == ()


def test_unreadable_balance_is_neither_finding_nor_verified() -> None:
    """A balance that could not be read proves nothing: no finding, not verified, reported."""
    result = reconcile(view(), [obs(A, USDC, None, "balanceOf reverted")])
    assert result.findings == ()
    assert result.verified == frozenset()
    assert [o.error for o in result.read_errors] == ["balanceOf reverted"]


def test_addresses_outside_the_ledger_are_ignored() -> None:
    """An observation of an address the ledger does not list produces nothing."""
    stranger = Address("0x" + "dd" * 20)
    result = reconcile(view(), [obs(stranger, ETH, 5)])
    assert result.findings == () and result.verified == frozenset()


amounts = st.integers(min_value=0, max_value=10**30)


@given(st.lists(st.tuples(st.sampled_from([A, B, HOUSE]), st.sampled_from([ETH, USDC]),
                          amounts), unique_by=lambda t: (t[0], t[1].symbol)), st.randoms())
def test_result_is_independent_of_input_order(rows: list[tuple[Address, AssetRef, int]],
                                              rnd: object) -> None:
    """Shuffling the observations never changes the findings or the verified set."""
    observations = [obs(a, asset, n) for a, asset, n in rows]
    shuffled = list(observations)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    first, second = reconcile(view(), observations), reconcile(view(), shuffled)
    assert first == second


@given(amounts, amounts)
def test_difference_is_onchain_minus_ledger(onchain: int, allocated: int) -> None:
    """Every finding's difference equals on-chain minus ledger, and none when they match."""
    ledger = LedgerView("ethereum", {A: WalletView(A, "segregated", {"ETH": {"x": allocated}})})
    findings = reconcile(ledger, [obs(A, ETH, onchain)]).findings
    assert len(findings) == (onchain != allocated)
    for finding in findings:
        assert finding.difference == onchain - allocated


def test_scan_stalled_opens_at_half_the_sla_is_critical_past_it_and_is_bounded() -> None:
    """`scan_stalled` is raised once the scan has failed for half the chain's SLA (before
    that the chain is only unverified: a failure the next cycle mends pages nobody), as a
    warning, and is critical once the failures outlast the SLA; its description says for
    how long and what is wrong, with 32-byte hashes shortened, the source prefix dropped,
    and never more than MAX_DETAIL_CHARS whatever the source said."""
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    problem = (f"source node-1 unavailable: block 22 has parent 0x{'00' * 32}, expected the "
               f"hash of block 21 (0x{'ab' * 32})")

    def after(seconds: int, text: str = problem) -> Finding | None:
        return scan_stalled_finding("ethereum", now - timedelta(seconds=seconds), now, 600,
                                    text)

    assert after(299) is None
    warning, critical = after(300), after(601)
    assert warning is not None and critical is not None
    assert (warning.type, warning.severity, critical.severity) == \
        ("scan_stalled", "warning", "critical")
    assert warning.fingerprint == critical.fingerprint == "scan_stalled:ethereum:::"
    assert warning.counterparty == ("stalled 300 s: block 22 has parent 0x000000…000000, "
                                    "expected the hash of block 21 (0xababab…ababab)")
    flood = after(300, "[bold]x" * 10_000)
    assert flood is not None and flood.counterparty is not None
    assert len(flood.counterparty) == MAX_DETAIL_CHARS
