"""Reconciling items (SPEC §8), property-tested: for random sequences of deposits,
withdrawals (with fees), internal moves, and cut-offs lagging or leading the pinned
block, books that are correct at their cut-off are always explained exactly; one
unbooked, unexplained unit never is; and the order the movements arrive in changes
nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.rules.transit import Movement, expected, items

START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
WALLETS = ("0xa", "0xb", "0xc")


@st.composite
def days(draw: st.DrawFn) -> tuple[list[Movement], dict[int, datetime], int, datetime]:
    """A chain of blocks (times non-decreasing, several blocks may share a second), the
    movements in them, a pinned block and a cut-off anywhere around it."""
    blocks = draw(st.integers(min_value=1, max_value=40))
    gaps = draw(st.lists(st.integers(min_value=0, max_value=30), min_size=blocks,
                         max_size=blocks))
    times: dict[int, datetime] = {}
    moment = START
    for height, gap in enumerate(gaps, start=1):
        moment += timedelta(seconds=gap)
        times[height] = moment
    movements = []
    kinds = st.sampled_from(["deposit", "withdrawal", "internal"])
    for n in range(draw(st.integers(min_value=0, max_value=30))):
        height = draw(st.integers(min_value=1, max_value=blocks))
        kind = draw(kinds)
        amount = draw(st.integers(min_value=1, max_value=10**20))
        a, b = draw(st.sampled_from(WALLETS)), draw(st.sampled_from(WALLETS))
        tx = f"0x{n:04x}"
        at = dict(height=height, time=times[height], tx_hash=tx)
        if kind == "deposit":
            movements.append(Movement(f"{tx}:in", a, "ETH", amount, **at))  # type: ignore[arg-type]
        elif kind == "withdrawal":
            fee = draw(st.integers(min_value=0, max_value=10**15))
            movements.append(Movement(f"{tx}:out", a, "ETH", -amount, **at))  # type: ignore[arg-type]
            movements.append(Movement(f"{tx}:fee", a, "ETH", -fee, **at))  # type: ignore[arg-type]
        else:  # an internal move: out of one watched wallet, into another
            movements.append(Movement(f"{tx}:out", a, "ETH", -amount, **at))  # type: ignore[arg-type]
            movements.append(Movement(f"{tx}:in", b, "ETH", amount, **at))  # type: ignore[arg-type]
    pinned = draw(st.integers(min_value=0, max_value=blocks))
    offset = draw(st.integers(min_value=-600, max_value=600))
    anchor = times[draw(st.integers(min_value=1, max_value=blocks))]
    return movements, times, pinned, anchor + timedelta(seconds=offset)


def totals(movements: list[Movement], keep: object) -> dict[tuple[str, str], int]:
    out = {(w, "ETH"): 10**21 for w in WALLETS}  # opening balances, booked and on chain
    for m in movements:
        if keep(m):  # type: ignore[operator]
            out[(m.address, m.asset)] += m.delta
    return out


@settings(max_examples=300, deadline=None)
@given(days(), st.randoms(use_true_random=False))
def test_correct_books_are_always_explained_in_any_order(
        day: tuple[list[Movement], dict[int, datetime], int, datetime], rng: object) -> None:
    """Books cut at T (every movement up to T booked) and the chain at B (every movement
    up to B): booked plus the items equals on chain for every wallet, however the
    movements are ordered; one more unbooked unit on chain is always a difference of 1."""
    movements, _, pinned, cut_off = day
    booked = totals(movements, lambda m: m.time <= cut_off)
    onchain = totals(movements, lambda m: m.height <= pinned)
    found = items(movements, cut_off, pinned)
    assert expected(booked, found) == onchain
    shuffled = list(movements)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert items(shuffled, cut_off, pinned) == found
    theft = {**onchain, ("0xa", "ETH"): onchain[("0xa", "ETH")] - 1}
    assert theft[("0xa", "ETH")] - expected(booked, found)[("0xa", "ETH")] == -1


def test_a_withdrawal_mined_before_the_books_book_it_is_an_unbooked_item() -> None:
    """The issue's example: 0.3 ETH approved, broadcast and mined at block 10 (10:00:05);
    the books cut at 10:00:00 do not have it. Chain at 10 = booked - 0.3 - fee: the item
    (and the fee) explain it, so nothing is left to raise."""
    at = START + timedelta(hours=1, seconds=5)
    out = Movement("w:out", "0xa", "ETH", -3 * 10**17, 10, at, "0xw")
    fee = Movement("w:fee", "0xa", "ETH", -21 * 10**12, 10, at, "0xw")
    found = items([out, fee], START + timedelta(hours=1), pinned=10)
    assert [i.side for i in found] == ["unbooked", "unbooked"]
    booked = {("0xa", "ETH"): 10**18}
    assert expected(booked, found) == {("0xa", "ETH"): 10**18 - 3 * 10**17 - 21 * 10**12}
    doc = found[0].as_json(at + timedelta(minutes=2))
    assert (doc["direction"], doc["age_seconds"], doc["side"]) == ("out", 120, "unbooked")


def test_books_ahead_of_the_pinned_block_subtract_what_the_chain_does_not_have_yet() -> None:
    """Books cut after a deposit in block 12 while the chain is read at block 10: the
    deposit is booked but not on chain at 10, an `ahead` item."""
    deposit = Movement("d:in", "0xb", "ETH", 5, 12, START + timedelta(seconds=30), "0xd")
    found = items([deposit], START + timedelta(seconds=40), pinned=10)
    assert [i.side for i in found] == ["ahead"]
    assert expected({("0xb", "ETH"): 105}, found) == {("0xb", "ETH"): 100}


def test_a_booked_deposit_a_reorg_removed_is_in_transit_until_books_cut_after_it() -> None:
    """Books cut at 10:00:40 booked a deposit mined at 10:00:30; a reorg removed it at
    10:00:50 (not re-included). The books have it, the chain does not: a `reorged` item
    for those books; books cut after the reorg (which no longer have it) get no item,
    and books that still have it then are a shortfall, as they should be."""
    removed_at = START + timedelta(seconds=50)
    gone = Movement("d:in", "0xb", "ETH", 5, 12, START + timedelta(seconds=30), "0xd",
                    orphaned_at=removed_at)
    found = items([gone], START + timedelta(seconds=40), pinned=20)
    assert [i.side for i in found] == ["reorged"]
    assert expected({("0xb", "ETH"): 105}, found) == {("0xb", "ETH"): 100}
    assert items([gone], START + timedelta(seconds=60), pinned=20) == []
    assert items([gone], START + timedelta(seconds=20), pinned=20) == []  # never booked
    # books cut the very second the replacing branch began still have it
    assert [i.side for i in items([gone], removed_at, pinned=20)] == ["reorged"]


def test_flagged_transfers_and_their_fees_explain_nothing() -> None:
    """A theft (an outflow no approval covers) is no reconciling item, nor is its fee:
    the books will never book it, so the balance finding fires at once. A deposit, an
    internal move and an approved withdrawal (its key matched) are items."""
    from chains.types import Address, ChainHead, FeePayment, TransferObservation
    from daemon.rules.flows import Flow
    from daemon.rules.reconcile import LedgerView, WalletView
    from daemon.rules.transit import movements

    a, b = Address("0xa"), Address("0xb")
    ledger = LedgerView("c", {a: WalletView(a, "segregated", {"ETH": {"alice": 10}}),
                              b: WalletView(b, "segregated", {"ETH": {"alice": 10}})},
                        START)
    block = ChainHead(5, "0x05", int(START.timestamp()) + 60)
    when = START + timedelta(seconds=60)

    def send(tx: str, sender: str | None, to: str) -> Flow:
        return Flow(TransferObservation("native", block, tx, None,
                                        Address(sender) if sender else None, Address(to),
                                        None, 7, "s"), "ETH", when)  # type: ignore[arg-type]

    flows = [send("0xtheft", "0xa", "0xout"), send("0xpaid", "0xa", "0xpayee"),
             send("0xdep", "0xext", "0xa"), send("0xmove", "0xa", "0xb")]
    fees = [FeePayment(block, "0xtheft", a, 1, True),  # type: ignore[arg-type]
            FeePayment(block, "0xpaid", a, 1, True)]  # type: ignore[arg-type]
    moved = movements(ledger, flows, fees, "ETH", matched={"0xpaid:native:-1:"})
    assert sorted(m.key for m in moved) == [
        "0xdep:native:-1::in", "0xmove:native:-1::in", "0xmove:native:-1::out",
        "0xpaid:native:-1::out", "fee:0xpaid"]
