"""Export leaves that protect other clients (SPEC §12): exact splits, owner-checkable
refs, and no proof whose sibling sums show another single owner's balance."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.rules.leaves import (
    Allocation,
    checked_ref,
    exposes_an_owner,
    owner_secret,
    private_trees,
    split,
)
from daemon.rules.merkle import Leaf, MerkleSumTree


def counter_nonce() -> object:
    state = {"n": 0}

    def nonce() -> bytes:
        state["n"] += 1
        return state["n"].to_bytes(32, "big")
    return nonce


@given(st.integers(min_value=0, max_value=10**30), st.integers(min_value=0))
def test_a_split_sums_exactly_to_the_amount_in_non_zero_parts(amount: int, seed: int) -> None:
    """2-4 parts (fewer only when the amount is smaller), none zero, summing exactly."""
    parts = split(amount, random.Random(seed))
    assert sum(parts) == amount
    assert len(parts) == (1 if amount <= 1 else min(amount, len(parts)))
    assert 1 <= len(parts) <= 4 and (amount <= 1 or all(p > 0 for p in parts))
    assert amount < 2 or len(parts) >= 2


def test_an_owner_recomputes_their_ref_and_no_one_else_can() -> None:
    """The ref is a function of the owner's id and their own secret: another secret or
    another id gives another ref; secrets differ per owner."""
    master = bytes(range(32))
    alice = owner_secret(master, "alice")
    assert alice != owner_secret(master, "bob") and len(alice) == 32
    ref = checked_ref(alice, "alice")
    assert ref.startswith("c:") and ref == checked_ref(alice, "alice")
    assert ref not in (checked_ref(alice, "bob"), checked_ref(owner_secret(master, "bob"),
                                                                 "alice"))


def sibling_ranges(index: int, count: int) -> list[range]:
    """The leaf index ranges under each sibling on leaf `index`'s path in a tree of
    `count` leaves (padding as daemon/rules/merkle.py pads: it covers no real leaf)."""
    out, width, position = [], 1, index
    size = count
    while size > 1:
        sibling = position ^ 1
        start = sibling * width
        out.append(range(start, min(start + width, count)))
        position //= 2
        width *= 2
        size = (size + 1) // 2
    return out


def revealed(tree: MerkleSumTree) -> list[tuple[str, str]]:
    """(prover, revealed owner) pairs, found by brute force over every proof path: a
    sibling whose non-zero leaves are exactly all of one other owner's non-zero leaves."""
    leaves = tree.leaves
    holdings: dict[str, set[int]] = {}
    for i, leaf in enumerate(leaves):
        if leaf.amount > 0:
            holdings.setdefault(leaf.owner_ref, set()).add(i)
    found = []
    for i, leaf in enumerate(leaves):
        for span in sibling_ranges(i, len(leaves)):
            inside = {j for j in span if leaves[j].amount > 0}
            owners = {leaves[j].owner_ref for j in inside}
            if len(owners) == 1:
                (owner,) = owners
                if owner != leaf.owner_ref and inside == holdings[owner]:
                    found.append((leaf.owner_ref, owner))
    return found


allocations = st.lists(
    st.tuples(st.sampled_from(["a1", "a2", "a3"]), st.integers(min_value=2, max_value=10**9)),
    min_size=3, max_size=30)


@settings(max_examples=150, deadline=None)
@given(allocations, st.integers(min_value=0))
def test_no_proof_shows_another_single_owners_balance(rows: list[tuple[str, int]],
                                                      seed: int) -> None:
    """Property: for three or more owners each holding at least 2 base units, the
    builder finds a layout in which, on every proof path, no sibling subtree holds
    exactly all of one other owner's non-zero leaves — so no single sibling sum is that
    owner's balance — and the layout's totals are the allocations' totals."""
    owners = [f"owner-{n}" for n in range(len(rows))]
    items = [Allocation("eth", address, "ETH", checked_ref(bytes(32), owner), amount)
             for owner, (address, amount) in zip(owners, rows, strict=True)]
    made = private_trees(items, counter_nonce(), random.Random(seed))  # type: ignore[arg-type]
    (tree,) = made.trees.values()
    assert made.exposed == ()
    assert revealed(tree) == [] and not exposes_an_owner(tree.leaves)
    assert tree.total == sum(amount for _, amount in rows)


def test_the_check_sees_an_isolated_owner() -> None:
    """bob's two leaves side by side form a sibling on alice's path (its sum would be
    bob's balance): refused; interleaved with alice's, no subtree is bob's alone."""
    def leaf(ref: str, amount: int, n: int) -> Leaf:
        return Leaf("eth", "ETH", ref, amount, f"{n:064x}")
    bob3, bob4, alice5, alice6 = (leaf("bob", 3, 1), leaf("bob", 4, 2), leaf("alice", 5, 3),
                                  leaf("alice", 6, 4))
    assert exposes_an_owner([bob3, bob4, alice5, alice6])
    assert not exposes_an_owner([bob3, alice5, bob4, alice6])
