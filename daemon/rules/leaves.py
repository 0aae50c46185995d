"""PURE: the leaves of an export's liability trees, made so that a proof protects others.

SPEC §12: an owner can check their own leaves, and no proof reveals another single
client's balance.

- **Owner-checkable refs.** Each owner gets a secret of their own,
  ``secret = HMAC-SHA256(key=master_salt, msg="segwatch-owner-secret-v1|" + owner)``,
  handed to that owner with their proofs and to no one else. Their leaves commit to
  ``owner_ref = "c:" + HMAC-SHA256(key=secret, msg="segwatch-owner-ref-v1|" + owner)``:
  the owner recomputes it from their id and secret (so one leaf cannot be shown to two
  clients), while without the secret a ref says nothing about whose it is.
- **Split leaves.** Every allocation is split into 2-4 leaves of random non-zero
  amounts summing to it exactly (an allocation of one base unit cannot be split), and
  each tree gets zero-amount padding leaves under random refs. Leaves are ordered by
  their (nonce-randomized) hash, so one owner's fragments are scattered.
- **No sibling is one other owner.** A tree is rebuilt with fresh splits and nonces
  while some node's subtree holds exactly all the non-zero leaves of one owner and its
  sibling holds another owner's: that sibling sum, on the other owner's proof, would be
  the first owner's whole balance (`exposes_an_owner`). When an owner's holding cannot
  be hidden (one base unit; or one other owner, whose balance the total minus one's own
  gives away anyway), the last attempt is kept and reported.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from daemon.rules.merkle import NONCE_BYTES, Leaf, MerkleSumTree, build

SECRET_TAG = "segwatch-owner-secret-v1"  # noqa: S105 - a domain tag, not a secret
REF_TAG = "segwatch-owner-ref-v1"
CHECKED_PREFIX = "c:"
ATTEMPTS = 64
"""Rebuilds of one tree before its exposure is accepted (and reported)."""


def owner_secret(master: bytes, owner: str) -> bytes:
    """The secret handed to `owner` with their proofs (32 bytes)."""
    return hmac.digest(master, f"{SECRET_TAG}|{owner}".encode(), "sha256")


def checked_ref(secret: bytes, owner: str) -> str:
    """The ref `owner`'s leaves commit to, which they recompute from `secret`."""
    return CHECKED_PREFIX + hmac.digest(secret, f"{REF_TAG}|{owner}".encode(), "sha256").hex()


@dataclass(frozen=True, slots=True)
class Allocation:
    chain: str
    address: str
    asset: str
    ref: str
    amount: int


@dataclass(frozen=True, slots=True)
class Placed:
    """A leaf and the wallet whose allocation it is a fragment of."""

    address: str
    leaf: Leaf


@dataclass(frozen=True)
class Trees:
    leaves: dict[tuple[str, str], list[Placed]]
    trees: dict[tuple[str, str], MerkleSumTree]
    exposed: tuple[tuple[str, str], ...]
    """(chain, asset) trees where some owner's balance could not be hidden."""


def split(amount: int, rng: random.Random) -> list[int]:
    """`amount` as 2-4 random non-zero parts summing to it (fewer when it is smaller)."""
    count = min(amount, 2 + rng.randrange(3))
    if count <= 1:
        return [amount]
    chosen: set[int] = set()
    while len(chosen) < count - 1:  # distinct cut points in 1..amount-1 (amount >= count)
        chosen.add(rng.randrange(1, amount))
    cuts = sorted(chosen)
    return [b - a for a, b in zip([0, *cuts], [*cuts, amount], strict=True)]


def private_trees(allocations: Sequence[Allocation], nonce: Callable[[], bytes],
                  rng: random.Random) -> Trees:
    """One Merkle-sum tree per (chain, asset) of split and padded leaves, rebuilt until
    no node exposes an owner (at most ATTEMPTS times). Raises ValueError for an invalid
    allocation or nonce."""
    grouped: dict[tuple[str, str], list[Allocation]] = {}
    for allocation in allocations:
        grouped.setdefault((allocation.chain, allocation.asset), []).append(allocation)
    leaves: dict[tuple[str, str], list[Placed]] = {}
    trees: dict[tuple[str, str], MerkleSumTree] = {}
    exposed = []
    for key in sorted(grouped):
        for _ in range(ATTEMPTS):
            placed = _fragments(grouped[key], nonce, rng)
            tree = build(p.leaf for p in placed)
            if not exposes_an_owner(tree.leaves):
                break
        else:
            exposed.append(key)
        leaves[key], trees[key] = placed, tree
    return Trees(leaves, trees, tuple(exposed))


def _fragments(allocations: Sequence[Allocation], nonce: Callable[[], bytes],
               rng: random.Random) -> list[Placed]:
    out: list[Placed] = []
    for a in allocations:
        for part in split(a.amount, rng):
            out.append(Placed(a.address, Leaf(a.chain, a.asset, a.ref, part, _hex(nonce))))
    addresses = sorted({a.address for a in allocations})
    for _ in range(1 + len(out) // 8):  # padding: zero leaves under refs of no one
        first = allocations[0]
        ref = CHECKED_PREFIX + hashlib.sha256(nonce()).hexdigest()
        out.append(Placed(rng.choice(addresses), Leaf(first.chain, first.asset, ref, 0,
                                                      _hex(nonce))))
    return out


def _hex(nonce: Callable[[], bytes]) -> str:
    value = nonce()
    if not isinstance(value, bytes) or len(value) != NONCE_BYTES:
        raise ValueError(f"the nonce source must return {NONCE_BYTES} bytes")
    return value.hex()


_MIXED = "*"
_State = tuple[str | None, int, str | None]
"""(the one owner of the node's non-zero leaves, or _MIXED, or None for none; how many
non-zero leaves that owner has in it; the one ref of all its leaves, zero ones included,
or _MIXED, or None for an empty padding node)."""


def exposes_an_owner(ordered: Sequence[Leaf]) -> bool:
    """Whether, in the tree over `ordered` leaves (padded as daemon/rules/merkle.py pads), some
    node holds all the non-zero leaves of one owner and no other owner's non-zero leaf,
    while its sibling holds a leaf of someone else (a zero-amount one included): that
    sibling sum, on the other's proof, would be the first owner's whole balance."""
    totals = Counter(leaf.owner_ref for leaf in ordered if leaf.amount > 0)
    level: list[_State] = [(leaf.owner_ref if leaf.amount > 0 else None,
                            1 if leaf.amount > 0 else 0, leaf.owner_ref) for leaf in ordered]
    while len(level) > 1:
        if len(level) % 2:
            level.append((None, 0, None))
        up: list[_State] = []
        for left, right in zip(level[0::2], level[1::2], strict=True):
            if _isolates(left, right, totals) or _isolates(right, left, totals):
                return True
            up.append(_merge(left, right))
        level = up
    return False


def _isolates(node: _State, sibling: _State, totals: Counter[str]) -> bool:
    owner, count, _ = node
    if owner is None or owner == _MIXED or count != totals[owner]:
        return False
    return sibling[2] is not None and sibling[2] != owner


def _merge(left: _State, right: _State) -> _State:
    owner, count = _join(left[0], right[0]), left[1] + right[1]
    return owner, count if owner not in (None, _MIXED) else 0, _join(left[2], right[2])


def _join(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if a == b else _MIXED
