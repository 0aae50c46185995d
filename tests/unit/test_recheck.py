"""Incremental reads (daemon/rules/recheck.py): which wallets a cycle reads, what it
carries, and when it must read every wallet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from chains.types import Address, AssetRef, BaseUnits, ChainHead
from daemon.rules.recheck import Basis, Coverage, plan_reads, position, swept

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PERIOD = 3600.0
WALLETS = [Address(f"0x{i:040x}") for i in range(1, 401)]
SYMBOLS = ["ETH", "USDC"]
RECENT = {100: "0xa", 101: "0xb", 102: "0xc", 103: "0xd"}


def basis(**changes: object) -> Basis:
    fields: dict[str, object] = {
        "previous": ChainHead(100, "0xa"), "swept_at": T0,
        "carried": {(w, s): BaseUnits(5) for w in WALLETS for s in SYMBOLS},
        "flagged": frozenset(), "touched": frozenset(), "recent": RECENT,
        "scan_error": None, "traced_from": 50}
    fields.update(changes)
    return Basis(**fields)  # type: ignore[arg-type]


def coverage(**changes: object) -> Coverage:
    fields: dict[str, object] = {"recent": RECENT, "traced_from": 50}
    fields.update(changes)
    return Coverage(**fields)  # type: ignore[arg-type]


BLOCK = ChainHead(102, "0xc")
LATER = T0 + timedelta(seconds=60)


def test_a_quiet_cycle_reads_only_the_rotating_slice_and_carries_the_rest() -> None:
    reads = plan_reads(WALLETS, SYMBOLS, basis(), coverage(), BLOCK, LATER, PERIOD,
                       traces_needed=True)
    assert reads.reason == ""
    assert set(reads.read) == swept(WALLETS, T0, LATER, PERIOD)
    assert len(reads.read) < 40  # a minute of an hour: about 1/60 of 400 wallets
    assert set(reads.read) | set(reads.carried) == set(WALLETS)
    carried = reads.carry([AssetRef("ETH", 18)], BLOCK, "src")
    assert {o.address for o in carried} == set(reads.carried)
    assert all(o.amount == 5 and o.block == BLOCK for o in carried)
    assert reads.swept_at == LATER


def test_touched_flagged_and_unknown_wallets_are_read() -> None:
    touched, flagged, new = WALLETS[0], WALLETS[1], WALLETS[2]
    carried = {k: v for k, v in basis().carried.items() if k[0] != new}
    reads = plan_reads(WALLETS, SYMBOLS, basis(flagged=frozenset({flagged}), carried=carried),
                       coverage(touched=frozenset({touched})), BLOCK, LATER, PERIOD,
                       traces_needed=True)
    assert {touched, flagged, new} <= set(reads.read)
    assert not {touched, flagged, new} & set(reads.carried)


def test_wallets_touched_in_stored_scans_since_the_checkpoint_are_read() -> None:
    reads = plan_reads(WALLETS, SYMBOLS, basis(touched=frozenset({WALLETS[7]})), coverage(),
                       BLOCK, LATER, PERIOD, traces_needed=True)
    assert WALLETS[7] in reads.read


def full_reason(**kwargs: object) -> str:
    b = basis(**{k[2:]: v for k, v in kwargs.items() if k.startswith("b_")})
    c = coverage(**{k[2:]: v for k, v in kwargs.items() if k.startswith("c_")})
    block = kwargs.get("block", BLOCK)
    now = kwargs.get("now", LATER)
    reads = plan_reads(WALLETS, SYMBOLS, b, c, block, now, PERIOD,  # type: ignore[arg-type]
                       traces_needed=bool(kwargs.get("traces", True)))
    assert reads.full and set(reads.read) == set(WALLETS)
    return reads.reason


def test_every_wallet_is_read_when_the_scan_cannot_vouch_for_the_rest() -> None:
    assert "no previous" in full_reason(b_previous=None)
    assert "no previous" in full_reason(b_swept_at=None)
    assert "period has passed" in full_reason(now=T0 + timedelta(seconds=PERIOD))
    assert "period has passed" in full_reason(now=T0 - timedelta(seconds=1))  # clock went back
    assert "scan is failing" in full_reason(c_error="boom")
    assert "scan is failing" in full_reason(b_scan_error="boom")
    assert "not on the scanned chain" in full_reason(c_recent={**RECENT, 100: "0xother"})
    assert "reorg" in full_reason(c_fork_point=99)
    assert "does not cover" in full_reason(block=ChainHead(104, "0xe"))
    assert "does not cover" in full_reason(block=ChainHead(102, "0xforked"))
    assert "does not cover" in full_reason(block=ChainHead(99, "0x9"))
    assert "not traced" in full_reason(c_traced_from=None)
    assert "not traced" in full_reason(c_traced_from=102)


def test_a_reorg_above_the_checkpoint_still_allows_carrying() -> None:
    """Blocks replaced above the previous checkpoint's block: the balances there are the
    checkpoint's plus the live flows since, which the scan saw."""
    reads = plan_reads(WALLETS, SYMBOLS, basis(), coverage(fork_point=101), BLOCK, LATER,
                       PERIOD, traces_needed=True)
    assert not reads.full


def test_a_cycle_at_the_checkpoints_own_block_needs_no_traces() -> None:
    """A shard that does not scan, cycling again before the scan moved past the block of
    its first checkpoint (the cursor was only started there, so nothing is traced yet):
    no block lies between them, so nothing could have moved untraced. It carries (was: a
    second full read of the shard)."""
    same = ChainHead(100, "0xa")
    reads = plan_reads(WALLETS, SYMBOLS, basis(traced_from=None), coverage(traced_from=None),
                       same, LATER, PERIOD, traces_needed=True)
    assert not reads.full and reads.reason == ""
    assert "not traced" in full_reason(c_traced_from=None, block=ChainHead(101, "0xb"))


def test_utxo_chains_need_no_traces() -> None:
    reads = plan_reads(WALLETS, SYMBOLS, basis(traced_from=None), coverage(traced_from=None),
                       BLOCK, LATER, PERIOD, traces_needed=False)
    assert not reads.full


def test_period_zero_reads_every_wallet() -> None:
    reads = plan_reads(WALLETS, SYMBOLS, basis(), coverage(), BLOCK, LATER, 0,
                       traces_needed=True)
    assert reads.full and "off" in reads.reason


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=1, max_value=900), min_size=1, max_size=40))
def test_consecutive_sweeps_read_every_wallet_once_per_period(gaps: list[float]) -> None:
    """Whatever the cycles' pace, the arcs of consecutive cycles tile the circle: the sweep
    passes each wallet once per period, and the cycle that ends next reads it. So no
    wallet goes unread longer than the period plus the longest time between two cycles
    (a full read at T0 starts the sweep)."""
    last_read = {w: T0 for w in WALLETS}
    since = T0
    for gap in gaps:
        now = since + timedelta(seconds=gap)
        for wallet in swept(WALLETS, since, now, PERIOD):
            assert (now - last_read[wallet]).total_seconds() <= PERIOD + gap + 1e-6
            last_read[wallet] = now
        since = now
    for wallet, at in last_read.items():
        assert (since - at).total_seconds() < PERIOD + max(gaps), wallet


def test_positions_are_stable_and_spread() -> None:
    assert position("0xabc") == position("0xabc")
    assert 0 <= position("ltc1qxyz") < 1
    buckets = {int(position(w) * 4) for w in WALLETS}
    assert buckets == {0, 1, 2, 3}


def test_kept_balances_follow_what_each_cycle_stored_and_which_differ_from_the_books(
        ) -> None:
    """A replica's kept balances (daemon/store/cycle.py Resident): a stored amount
    replaces the pair's, a read error drops it (read again next time), and `differing`
    holds exactly the pairs whose amount differs from a client wallet's books (a house
    wallet never has a balance finding) — the only carried pairs a cycle reconciles."""
    from chains.types import BalanceObservation
    from daemon.rules.reconcile import WalletView
    from daemon.store.observations import Resident

    client, house = Address("0xc1"), Address("0xh1")
    wallets = {client: WalletView(client, "segregated", {"ETH": {"alice": 10}}),
               house: WalletView(house, "house", {"ETH": {"FIRM": 5}})}
    kept = Resident.of(1, {(client, "ETH"): BaseUnits(10), (house, "ETH"): BaseUnits(9)},
                       wallets, ["ETH"])
    assert kept.differing == set() and kept.unread == set()
    eth = AssetRef("ETH", 18)
    block = ChainHead(7, "0x07")

    def observed(address: Address, amount: int | None) -> BalanceObservation:
        return BalanceObservation(address, eth, None if amount is None else BaseUnits(amount),
                                  block, "node", None if amount is not None else "timeout")

    kept.advance(2, [observed(client, 4)], wallets)
    assert (kept.checkpoint, kept.amounts[client, "ETH"], kept.differing) == \
        (2, 4, {(client, "ETH")})
    kept.advance(3, [observed(client, None)], wallets)
    assert (client, "ETH") not in kept.amounts and kept.differing == set()
    assert kept.unread == {client}  # no amount to carry: read next cycle
    kept.advance(4, [observed(client, 10), observed(Address("0xunbooked"), 1)], wallets)
    assert kept.amounts == {(client, "ETH"): 10, (house, "ETH"): 9}
    assert kept.differing == set() and kept.unread == set()
    fresh = Resident.of(5, {}, wallets, ["ETH"])  # a full read starts from nothing
    assert fresh.unread == {client, house}


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0, max_value=10 * PERIOD), st.floats(min_value=0.5, max_value=PERIOD - 1))
def test_the_placed_circle_finds_the_arc_every_wallet_position_says(
        start: float, length: float) -> None:
    """The circle placed once per version of the books (bisection) finds exactly the
    wallets whose position lies on the arc, as hashing every address finds them."""
    from daemon.rules.circle import Circle, turn

    since = T0 + timedelta(seconds=start)
    now = since + timedelta(seconds=length)
    begin, end = turn(since, PERIOD), turn(now, PERIOD)
    edge = {w for w in WALLETS if min(abs(position(w) - begin), abs(position(w) - end)) < 1e-9}
    expected = {w for w in WALLETS  # the offset along the circle from the arc's start
                if (position(w) - begin) % 1.0 < length / PERIOD}
    assert set(Circle(WALLETS).arc(since, now, PERIOD)) - edge == expected - edge
