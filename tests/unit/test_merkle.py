"""Merkle-sum trees of liabilities and inclusion proofs (daemon.rules.merkle)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.rules.merkle import (
    PAD_HASH,
    Leaf,
    MerkleSumTree,
    Proof,
    build,
    node_hash,
    owner_ref,
    tree_for,
    verify_proof,
)

SALT = b"export-secret-salt-0123456789abc"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def nonce_hex(i: int) -> str:
    return hashlib.sha256(f"nonce-{i}".encode()).hexdigest()


def counter_nonces(start: int = 0) -> Callable[[], bytes]:
    """A deterministic NonceSource: SHA-256 of a counter."""
    counter: Iterator[int] = itertools.count(start)
    return lambda: hashlib.sha256(next(counter).to_bytes(8, "big")).digest()


def make_tree(amounts: list[int], owners: list[str] | None = None) -> MerkleSumTree:
    names = owners or [f"owner-{i}" for i in range(len(amounts))]
    return build(Leaf("ethereum", "ETH", name, amount, nonce_hex(i))
                 for i, (name, amount) in enumerate(zip(names, amounts, strict=True)))


def depth(n: int) -> int:
    """ceil(log2(n)) for n >= 1."""
    return (n - 1).bit_length()


# The documented scheme, pinned by hand ------------------------------------------------

def test_two_leaf_tree_matches_the_documented_scheme_by_hand() -> None:
    """A two-leaf tree's leaf, node and root values are exactly the documented formulas."""
    alice_nonce, bob_nonce = "11" * 32, "22" * 32
    alice = sha(f"segwatch-leaf-v1|ethereum|ETH|alice|5|{alice_nonce}")
    bob = sha(f"segwatch-leaf-v1|ethereum|ETH|bob|7|{bob_nonce}")
    assert alice == "c637f37e40739173c596f799d1bf049d54f8816ef37a04247bc3065b872d02d8"
    assert bob == "239fd5e89f1cce0636cfb5ce6a0832598f5a2ddd7061f5144ec8c43d3b761b3c"
    root = sha(f"segwatch-node-v1|{bob}|7|{alice}|5")  # bob's hash sorts first
    assert root == "d8a7723b40a435f989248a0feb06531865f86e99f126c67f40c88a383a606bca"

    tree = build([Leaf("ethereum", "ETH", "alice", 5, alice_nonce),
                  Leaf("ethereum", "ETH", "bob", 7, bob_nonce)])

    assert [leaf.hash for leaf in tree.leaves] == [bob, alice]
    assert (tree.root_hash, tree.total) == (root, 12)
    assert tree.proofs_for("alice")[0].to_json() == {
        "version": 1, "chain": "ethereum", "asset": "ETH",
        "leaf": {"owner_ref": "alice", "amount": "5", "nonce": alice_nonce},
        "path": [{"side": "left", "hash": bob, "sum": "7"}],
        "root": {"hash": root, "total": "12"},
    }


def test_odd_levels_are_padded_with_the_documented_zero_node() -> None:
    """Three leaves: the third is paired with SHA-256("segwatch-pad-v1") of sum 0."""
    assert sha("segwatch-pad-v1") == PAD_HASH
    tree = make_tree([1, 2, 3])
    h = [leaf.hash for leaf in tree.leaves]
    s = [leaf.amount for leaf in tree.leaves]
    left = sha(f"segwatch-node-v1|{h[0]}|{s[0]}|{h[1]}|{s[1]}")
    right = sha(f"segwatch-node-v1|{h[2]}|{s[2]}|{PAD_HASH}|0")
    assert tree.root_hash == sha(f"segwatch-node-v1|{left}|{s[0] + s[1]}|{right}|{s[2]}")
    assert tree.proof(2).path[0].hash == PAD_HASH and tree.proof(2).path[0].sum == 0


def test_a_single_leaf_is_its_own_root() -> None:
    """A tree of one leaf has an empty path and the leaf as root."""
    tree = make_tree([42])
    proof = tree.proof(0)
    assert (tree.root_hash, tree.total, proof.path) == (tree.leaves[0].hash, 42, ())
    assert verify_proof(proof.to_json(), tree.root_hash, 42).ok


def test_owner_ref_pseudonym_is_hmac_sha256_of_the_owner() -> None:
    """A pseudonymized ref is "p:" + HMAC-SHA256(salt, owner) in hex."""
    expected = hmac.new(SALT, b"alice", hashlib.sha256).hexdigest()
    assert owner_ref("alice", SALT) == "p:" + expected
    assert owner_ref("alice", None) == "alice"


# Proofs verify, and only untouched ones ------------------------------------------------

SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200]


@pytest.mark.parametrize("n", SIZES)
def test_every_leaf_proof_verifies_with_logarithmic_length(n: int) -> None:
    """Each leaf's proof verifies against the root and has ceil(log2(n)) steps."""
    tree = make_tree([(i * 7919) % 1000 for i in range(n)])
    for i in range(n):
        proof = tree.proof(i).to_json()
        assert len(proof["path"]) == depth(n)
        result = verify_proof(proof, tree.root_hash, tree.total)
        assert result.ok, result.reason


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**256), min_size=1, max_size=200))
def test_random_trees_verify_and_total_the_amounts(amounts: list[int]) -> None:
    """For any amounts, total is their sum and every proof verifies after a JSON round trip."""
    tree = make_tree(amounts)
    assert tree.total == sum(amounts)
    for i in range(len(amounts)):
        proof = json.loads(json.dumps(tree.proof(i).to_json()))
        assert len(proof["path"]) == depth(len(amounts))
        result = verify_proof(proof, tree.root_hash, sum(amounts))
        assert (result.ok, result.root_hash, result.total) == (True, tree.root_hash, tree.total)


def test_proof_json_round_trips() -> None:
    """Proof.from_json(to_json()) gives back the same proof."""
    tree = make_tree([3, 1, 4, 1, 5])
    for i in range(5):
        assert Proof.from_json(json.loads(json.dumps(tree.proof(i).to_json()))) == tree.proof(i)


def _flip_hex(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


def _steps(proof: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = proof["path"]
    return steps


TAMPERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "amount up": lambda p: p["leaf"].update(amount=str(int(p["leaf"]["amount"]) + 1)),
    "amount down": lambda p: p["leaf"].update(amount=str(int(p["leaf"]["amount"]) - 1)),
    "nonce": lambda p: p["leaf"].update(nonce=_flip_hex(p["leaf"]["nonce"])),
    "owner": lambda p: p["leaf"].update(owner_ref="owner-x"),
    "chain": lambda p: p.update(chain="bitcoin"),
    "asset": lambda p: p.update(asset="USDC"),
    "root hash": lambda p: p["root"].update(hash=_flip_hex(p["root"]["hash"])),
    "root total": lambda p: p["root"].update(total=str(int(p["root"]["total"]) + 1)),
    "step dropped": lambda p: p["path"].pop(),
    "step added": lambda p: p["path"].append({"side": "right", "hash": PAD_HASH, "sum": "0"}),
}

STEP_TAMPERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "sibling hash": lambda s: s.update(hash=_flip_hex(s["hash"])),
    "sibling sum up": lambda s: s.update(sum=str(int(s["sum"]) + 1)),
    "sibling sum down": lambda s: s.update(sum=str(int(s["sum"]) - 1)),
    "side": lambda s: s.update(side="right" if s["side"] == "left" else "left"),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_a_changed_leaf_or_root_fails(name: str) -> None:
    """Changing the leaf, its chain/asset, the path length or the root breaks every proof."""
    tree = make_tree([10, 20, 30, 40, 50, 60, 70])
    for i in range(7):
        proof = copy.deepcopy(tree.proof(i).to_json())
        TAMPERS[name](proof)
        result = verify_proof(proof)
        assert not result.ok and result.reason


@pytest.mark.parametrize("name", sorted(STEP_TAMPERS))
def test_a_changed_sibling_fails_at_every_level(name: str) -> None:
    """Changing any sibling's hash, sum or side, at any level, breaks the proof."""
    tree = make_tree([10, 20, 30, 40, 50, 60, 70])
    for i in range(7):
        for level in range(depth(7)):
            proof = copy.deepcopy(tree.proof(i).to_json())
            STEP_TAMPERS[name](_steps(proof)[level])
            result = verify_proof(proof)
            assert not result.ok and result.reason


def test_a_self_consistent_forgery_fails_against_the_published_root() -> None:
    """A proof rewritten to a lower amount with its own root recomputed fails the published one."""
    tree = make_tree([10, 20, 30])
    leaf = tree.leaves[0]
    forged_leaf = Leaf(leaf.chain, leaf.asset, leaf.owner_ref, leaf.amount - 1, leaf.nonce)
    forged = build([forged_leaf, *tree.leaves[1:]]).proofs_for(leaf.owner_ref)[0].to_json()

    assert verify_proof(forged).ok
    assert verify_proof(forged, expected_root_hash=tree.root_hash).reason == (
        "the root hash differs from the published root")
    assert not verify_proof(forged, expected_total=tree.total).ok


# Negative amounts cannot lower the total ------------------------------------------------

def test_a_negative_amount_is_rejected_at_build() -> None:
    """A leaf with a negative amount cannot be made, so no tree can contain one."""
    with pytest.raises(ValueError, match="negative"):
        Leaf("ethereum", "ETH", "alice", -1, nonce_hex(0))
    with pytest.raises(ValueError, match="negative"):
        tree_for([("ethereum", "ETH", "alice", 5), ("ethereum", "ETH", "mallory", -5)],
                 None, counter_nonces())


def test_a_negative_sibling_sum_fails_even_with_consistent_hashes() -> None:
    """A root hiding a -100 sibling (total 0) is refused although every hash checks out."""
    alice = Leaf("ethereum", "ETH", "alice", 100, nonce_hex(0))
    hidden = Leaf("ethereum", "ETH", "hidden", 1, nonce_hex(1)).hash
    root = node_hash(alice.hash, 100, hidden, -100)
    proof = {
        "version": 1, "chain": "ethereum", "asset": "ETH",
        "leaf": {"owner_ref": "alice", "amount": "100", "nonce": alice.nonce},
        "path": [{"side": "right", "hash": hidden, "sum": "-100"}],
        "root": {"hash": root, "total": "0"},
    }
    result = verify_proof(proof, expected_root_hash=root, expected_total=0)
    assert not result.ok
    assert result.reason == "path[0].sum is negative: -100"


def test_a_proof_with_a_negative_leaf_amount_fails() -> None:
    """A proof whose leaf amount is negative is refused as malformed."""
    proof = make_tree([5, 6]).proof(0).to_json()
    proof["leaf"]["amount"] = "-5"
    result = verify_proof(proof)
    assert not result.ok and "negative" in (result.reason or "")


# Pseudonymization -----------------------------------------------------------------------

def test_pseudonymized_proofs_never_contain_the_owner_id() -> None:
    """With a salt, the owner's id appears nowhere in their proof's JSON, and it verifies."""
    owner = "client-Quillon-7781"
    trees = tree_for([("ethereum", "ETH", owner, 5), ("ethereum", "ETH", "client-Zed", 9)],
                     SALT, counter_nonces())
    tree = trees[("ethereum", "ETH")]
    proofs = tree.proofs_for(owner_ref(owner, SALT))
    assert len(proofs) == 1 and tree.proofs_for(owner) == []
    text = json.dumps(proofs[0].to_json())
    assert owner not in text and "Quillon" not in text and "client-Zed" not in text
    assert verify_proof(json.loads(text), tree.root_hash, 14).ok


def test_pseudonyms_differ_per_salt_and_per_owner() -> None:
    """The same owner gets a different ref under another salt; two owners never share one."""
    other_salt = b"another-export-salt-0123456789ab"
    assert owner_ref("alice", SALT) != owner_ref("alice", other_salt)
    assert owner_ref("alice", SALT) != owner_ref("bob", SALT)
    assert owner_ref("alice", SALT) == owner_ref("alice", SALT)


def test_a_short_salt_is_refused() -> None:
    """A salt under 16 bytes would let low-entropy owner ids be brute-forced."""
    with pytest.raises(ValueError, match="salt"):
        owner_ref("alice", b"short")


# Construction rules ----------------------------------------------------------------------

def test_leaves_are_ordered_by_leaf_hash_not_by_owner_or_input() -> None:
    """Tree order is the sorted leaf hashes, whatever order the leaves came in."""
    leaves = [Leaf("ethereum", "ETH", f"owner-{i}", i, nonce_hex(i)) for i in range(20)]
    forward, backward = build(leaves), build(reversed(leaves))
    hashes = [leaf.hash for leaf in forward.leaves]
    assert hashes == sorted(hashes)
    assert forward.leaves == backward.leaves and forward.root_hash == backward.root_hash


@pytest.mark.parametrize(("fields", "message"), [
    (("ethereum", "ETH", "al|ice", 5, "11" * 32), "'|'"),
    (("", "ETH", "alice", 5, "11" * 32), "chain"),
    (("ethereum", "", "alice", 5, "11" * 32), "asset"),
    (("ethereum", "ETH", "", 5, "11" * 32), "owner_ref"),
    (("ethereum", "ETH", "alice", True, "11" * 32), "integer"),
    (("ethereum", "ETH", "alice", 5.0, "11" * 32), "integer"),
    (("ethereum", "ETH", "alice", 5, "AB" * 32), "nonce"),
    (("ethereum", "ETH", "alice", 5, "11" * 31), "nonce"),
    (("ethereum", "ETH", "al\udcffice", 5, "11" * 32), "Unicode"),
])
def test_invalid_leaves_are_refused(fields: tuple[Any, ...], message: str) -> None:
    """Ambiguous text, non-integer amounts and malformed nonces raise ValueError."""
    with pytest.raises(ValueError, match=message):
        Leaf(*fields)


def test_build_refuses_empty_mixed_and_duplicate_leaves() -> None:
    """No leaves, two (chain, asset) pairs or the same leaf twice are refused."""
    leaf = Leaf("ethereum", "ETH", "alice", 5, nonce_hex(0))
    with pytest.raises(ValueError, match="at least one"):
        build([])
    with pytest.raises(ValueError, match="share chain and asset"):
        build([leaf, Leaf("ethereum", "USDC", "alice", 5, nonce_hex(1))])
    with pytest.raises(ValueError, match="duplicate"):
        build([leaf, Leaf("ethereum", "ETH", "alice", 5, nonce_hex(0))])


def test_proof_of_a_missing_index_raises() -> None:
    """Asking for a leaf outside the tree raises IndexError."""
    with pytest.raises(IndexError):
        make_tree([1, 2]).proof(2)


def test_tree_for_builds_one_tree_per_chain_and_asset() -> None:
    """Allocations are grouped per (chain, asset), one leaf each, nonces drawn in order."""
    allocations = [("ethereum", "ETH", "alice", 5), ("ethereum", "USDC", "alice", 7),
                   ("litecoin", "LTC", "bob", 9), ("ethereum", "ETH", "alice", 1),
                   ("ethereum", "ETH", "bob", 2)]
    trees = tree_for(allocations, None, counter_nonces())
    assert sorted(trees) == [("ethereum", "ETH"), ("ethereum", "USDC"), ("litecoin", "LTC")]
    eth = trees[("ethereum", "ETH")]
    assert (eth.chain, eth.asset, eth.total, len(eth.leaves)) == ("ethereum", "ETH", 8, 3)
    assert sorted(p.leaf.amount for p in eth.proofs_for("alice")) == [1, 5]
    again = tree_for(allocations, None, counter_nonces())
    assert again[("ethereum", "ETH")].root_hash == eth.root_hash
    other = tree_for(allocations, None, counter_nonces(start=100))
    assert other[("ethereum", "ETH")].root_hash != eth.root_hash


def test_tree_for_refuses_a_bad_nonce_source() -> None:
    """A nonce source that returns anything but 32 bytes is refused."""
    with pytest.raises(ValueError, match="32 bytes"):
        tree_for([("ethereum", "ETH", "alice", 5)], None, lambda: b"\x00" * 16)


# Bad input data never raises ----------------------------------------------------------------

def _valid_proof() -> dict[str, Any]:
    return make_tree([5, 6, 7]).proof(1).to_json()


def _with(path: tuple[Any, ...], value: object) -> dict[str, Any]:
    proof = _valid_proof()
    target: Any = proof
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return proof


MALFORMED: list[object] = [
    None, [], "proof", 7, {},
    _with(("version",), 2), _with(("version",), True), _with(("version",), "1"),
    _with(("chain",), None), _with(("leaf",), []), _with(("leaf", "amount"), 5),
    _with(("leaf", "amount"), "5.0"), _with(("leaf", "amount"), "05"),
    _with(("leaf", "amount"), "9" * 5000), _with(("leaf", "nonce"), "zz" * 32),
    _with(("leaf", "owner_ref"), "a\udcffb"), _with(("leaf", "owner_ref"), ["x"]),
    _with(("path",), {}), _with(("path", 0), "step"), _with(("path", 0, "side"), "up"),
    _with(("path", 0, "side"), ["left"]), _with(("path", 0, "hash"), "AB" * 32),
    _with(("path", 0, "sum"), "-0"), _with(("path", 0, "sum"), 1.5),
    _with(("path",), [{"side": "left", "hash": PAD_HASH, "sum": "0"}] * 300),
    _with(("root",), None), _with(("root", "total"), "1e3"), _with(("root", "hash"), ""),
]


@pytest.mark.parametrize("proof", MALFORMED)
def test_malformed_proofs_are_refused_with_a_reason(proof: object) -> None:
    """Malformed input gives ok=False and a reason, never an exception."""
    result = verify_proof(proof)
    assert not result.ok and result.reason


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)
FIELDS = [("version",), ("chain",), ("asset",), ("leaf",), ("leaf", "owner_ref"),
          ("leaf", "amount"), ("leaf", "nonce"), ("path",), ("path", 0),
          ("path", 0, "side"), ("path", 0, "hash"), ("path", 0, "sum"), ("root",),
          ("root", "hash"), ("root", "total")]


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_arbitrary_json_never_raises(value: object) -> None:
    """Any JSON value verifies to ok=False with a reason."""
    result = verify_proof(value)
    assert not result.ok and result.reason


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), JSON)
def test_any_field_replaced_by_any_json_never_raises(path: tuple[Any, ...], value: object) -> None:
    """Replacing one field of a valid proof with any JSON value never raises."""
    result = verify_proof(_with(path, value))
    assert result.ok or result.reason
