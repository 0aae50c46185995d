"""PURE Merkle-sum trees of liabilities, one per (chain, asset), and inclusion proofs.

No I/O, no clock; randomness only through an injected nonce source.

Why a Merkle-*sum* tree: in a plain Merkle tree of balances the published total is
a separate claim, so a custodian can leave balances out or add negative ones and
still show every owner a valid proof. Here every node commits to both children's
hashes *and* both children's sums, so the root commits to the total, and a
verifier who also checks that every sum on the path is >= 0 knows that no hidden
leaf can have lowered the total below their own amount plus the visible sums.

Hash scheme, version 1 (an auditor can recompute it by hand)
-------------------------------------------------------------
All hashes are SHA-256 of the UTF-8 bytes of a string of fields joined by ``|``,
written as 64 lowercase hex digits. Amounts and sums are non-negative integers of
base units (wei, satoshi, ...) written in decimal without sign or leading zeros.

- Leaf::

    leaf_hash = SHA256("segwatch-leaf-v1|" + chain + "|" + asset + "|" + owner_ref
                       + "|" + amount + "|" + nonce)

  ``nonce`` is 32 random bytes as 64 lowercase hex digits, fresh per leaf, so a
  leaf hash reveals nothing about a guessable (owner, amount) pair. ``chain``,
  ``asset`` and ``owner_ref`` are non-empty and never contain ``|``, so the
  encoding is unambiguous.
- ``owner_ref`` is the owner id as given, or when pseudonymized
  ``"p:" + HMAC-SHA256(key=salt, msg=UTF-8(owner)).hexdigest()`` with one secret
  salt per export (at least 16 bytes).
- Inner node, over a left child (hash L, sum l) and a right child (hash R, sum r)::

    node_hash = SHA256("segwatch-node-v1|" + L + "|" + l + "|" + R + "|" + r)
    node_sum  = l + r

- Padding: when a level has an odd number of nodes (more than one), a padding node
  is appended with hash ``SHA256("segwatch-pad-v1")`` and sum 0. Every leaf of a
  tree of n leaves therefore has a path of exactly ceil(log2(n)) siblings, and a
  tree of one leaf has that leaf as its root.
- Leaf order: leaves are sorted by leaf hash (as hex text). The nonce makes that
  order random-looking, so a position says nothing about the owner or the amount.
  Two equal leaf hashes are refused.

Proof JSON (``Proof.to_json``)::

    {"version": 1, "chain": "ethereum", "asset": "ETH",
     "leaf": {"owner_ref": "p:…", "amount": "1500", "nonce": "…64 hex…"},
     "path": [{"side": "left", "hash": "…", "sum": "700"}, …],
     "root": {"hash": "…", "total": "123456"}}

``path`` runs from the leaf's sibling up to the root's children; ``side`` says
where the *sibling* sits. To check by hand, in Python::

    import hashlib
    h = lambda s: hashlib.sha256(s.encode()).hexdigest()
    cur = h(f"segwatch-leaf-v1|{chain}|{asset}|{owner_ref}|{amount}|{nonce}")
    total = int(amount)
    for step in path:
        s = int(step["sum"]); assert s >= 0
        if step["side"] == "left":
            cur = h(f"segwatch-node-v1|{step['hash']}|{s}|{cur}|{total}")
        else:
            cur = h(f"segwatch-node-v1|{cur}|{total}|{step['hash']}|{s}")
        total += s
    assert cur == root_hash_from_manifest and total == int(root["total"])

or one step with a shell: ``printf '%s' 'segwatch-leaf-v1|ethereum|ETH|alice|5|<nonce>'
| sha256sum``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

VERSION = 1
LEAF_TAG = "segwatch-leaf-v1"
NODE_TAG = "segwatch-node-v1"
PAD_HASH = hashlib.sha256(b"segwatch-pad-v1").hexdigest()
NONCE_BYTES = 32
MIN_SALT_BYTES = 16
PSEUDONYM_PREFIX = "p:"

NonceSource = Callable[[], bytes]
"""Returns NONCE_BYTES fresh random bytes per call (`system_nonce` in production)."""

Side = Literal["left", "right"]

_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_INTEGER = re.compile(r"0|-?[1-9][0-9]*", re.ASCII)
_MAX_DIGITS = 4000  # below Python's int/str conversion limit; far above any real amount
_MAX_PATH = 256


def system_nonce() -> bytes:
    """Return NONCE_BYTES bytes from the operating system's CSPRNG (a NonceSource)."""
    return secrets.token_bytes(NONCE_BYTES)


def owner_ref(owner: str, salt: bytes | None) -> str:
    """Return the reference a leaf commits to: `owner`, or its salted pseudonym.

    Raises ValueError for an empty owner or a salt shorter than MIN_SALT_BYTES.
    """
    if not owner:
        raise ValueError("owner must not be empty")
    if salt is None:
        return owner
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"salt must be at least {MIN_SALT_BYTES} bytes, got {len(salt)}")
    return PSEUDONYM_PREFIX + hmac.digest(salt, owner.encode("utf-8"), "sha256").hex()


def leaf_hash(chain: str, asset: str, owner_ref: str, amount: int, nonce: str) -> str:
    """Return the hex leaf hash of the scheme (no validation: see `Leaf`)."""
    text = f"{LEAF_TAG}|{chain}|{asset}|{owner_ref}|{amount}|{nonce}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def node_hash(left_hash: str, left_sum: int, right_hash: str, right_sum: int) -> str:
    """Return the hex hash of an inner node over two children (no validation)."""
    text = f"{NODE_TAG}|{left_hash}|{left_sum}|{right_hash}|{right_sum}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Leaf:
    """One owner's allocation of one asset on one chain, with its random nonce.

    Raises ValueError on construction for an empty field or one containing '|', a
    negative or non-integer amount, or a nonce that is not 64 lowercase hex digits.
    """

    chain: str
    asset: str
    owner_ref: str
    amount: int
    nonce: str
    hash: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_text("chain", self.chain)
        _check_text("asset", self.asset)
        _check_text("owner_ref", self.owner_ref)
        if type(self.amount) is not int:  # not bool, not float
            raise ValueError(f"amount must be an integer, got {type(self.amount).__name__}")
        if self.amount < 0:
            raise ValueError(f"amount cannot be negative: {self.amount}")
        if type(self.nonce) is not str or not _HEX64.fullmatch(self.nonce):
            raise ValueError("nonce must be 64 lowercase hex digits")
        try:
            digest = leaf_hash(self.chain, self.asset, self.owner_ref, self.amount, self.nonce)
        except UnicodeEncodeError:
            raise ValueError("chain, asset and owner_ref must be valid Unicode text") from None
        object.__setattr__(self, "hash", digest)


@dataclass(frozen=True, slots=True)
class PathStep:
    """One sibling on the way from a leaf to the root, and the side it sits on."""

    side: Side
    hash: str
    sum: int


@dataclass(frozen=True, slots=True)
class Proof:
    """An inclusion proof: the leaf, its sibling path and the root it claims."""

    leaf: Leaf
    path: tuple[PathStep, ...]
    root_hash: str
    total: int

    def to_json(self) -> dict[str, Any]:
        """Return the proof as a JSON-ready dict (amounts and sums as strings)."""
        return {
            "version": VERSION,
            "chain": self.leaf.chain,
            "asset": self.leaf.asset,
            "leaf": {"owner_ref": self.leaf.owner_ref, "amount": str(self.leaf.amount),
                     "nonce": self.leaf.nonce},
            "path": [{"side": s.side, "hash": s.hash, "sum": str(s.sum)} for s in self.path],
            "root": {"hash": self.root_hash, "total": str(self.total)},
        }

    @classmethod
    def from_json(cls, data: object) -> Proof:
        """Return the proof in a parsed JSON value.

        Raises ValueError naming the first malformed field. Sibling sums may parse
        as negative here: `verify_proof` rejects them with a precise reason.
        """
        doc = _object(data, "proof")
        version = doc.get("version")
        if type(version) is not int or version != VERSION:
            raise ValueError(f"unsupported proof version {version!r}")
        raw_leaf = _object(doc.get("leaf"), "leaf")
        leaf = Leaf(chain=_string(doc, "chain"), asset=_string(doc, "asset"),
                    owner_ref=_string(raw_leaf, "owner_ref"),
                    amount=_integer(raw_leaf, "amount", "leaf.amount"),
                    nonce=_string(raw_leaf, "nonce"))
        raw_path = doc.get("path")
        if not isinstance(raw_path, list):
            raise ValueError("path must be a list")
        if len(raw_path) > _MAX_PATH:
            raise ValueError(f"path is too long ({len(raw_path)} steps)")
        path = tuple(_step(raw, i) for i, raw in enumerate(raw_path))
        root = _object(doc.get("root"), "root")
        return cls(leaf=leaf, path=path, root_hash=_hex(root, "hash", "root.hash"),
                   total=_integer(root, "total", "root.total"))


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking a proof; `reason` says why when not ok."""

    ok: bool
    reason: str | None = None
    root_hash: str | None = None
    total: int | None = None


class MerkleSumTree:
    """A built tree: its leaves in tree order, every level, the root and the total."""

    def __init__(self, leaves: tuple[Leaf, ...], hashes: list[list[str]],
                 sums: list[list[int]]) -> None:
        self.leaves = leaves
        self._hashes = hashes
        self._sums = sums
        self._by_owner: dict[str, list[int]] | None = None

    @property
    def chain(self) -> str:
        return self.leaves[0].chain

    @property
    def asset(self) -> str:
        return self.leaves[0].asset

    @property
    def root_hash(self) -> str:
        return self._hashes[-1][0]

    @property
    def total(self) -> int:
        return self._sums[-1][0]

    def proof(self, index: int) -> Proof:
        """Return the inclusion proof of the leaf at `index` (tree order).

        Raises IndexError when there is no such leaf.
        """
        if not 0 <= index < len(self.leaves):
            raise IndexError(f"no leaf {index} in a tree of {len(self.leaves)}")
        leaf = self.leaves[index]
        path = []
        for hashes, sums in zip(self._hashes[:-1], self._sums[:-1], strict=True):
            sibling = index ^ 1
            side: Side = "left" if sibling < index else "right"
            path.append(PathStep(side=side, hash=hashes[sibling], sum=sums[sibling]))
            index >>= 1
        return Proof(leaf=leaf, path=tuple(path), root_hash=self.root_hash, total=self.total)

    def proofs_for(self, owner_ref: str) -> list[Proof]:
        """Return the proofs of every leaf committing to `owner_ref` (empty if none)."""
        if self._by_owner is None:  # built on first use: most exports ask for no proof
            self._by_owner = {}
            for index, leaf in enumerate(self.leaves):
                self._by_owner.setdefault(leaf.owner_ref, []).append(index)
        return [self.proof(i) for i in self._by_owner.get(owner_ref, [])]


def build(leaves: Iterable[Leaf]) -> MerkleSumTree:
    """Return the Merkle-sum tree of `leaves`, which must share one (chain, asset).

    Raises ValueError for no leaves, leaves of several chains or assets, or two
    leaves with the same hash (the same leaf counted twice).
    """
    ordered = sorted(leaves, key=_leaf_key)
    if not ordered:
        raise ValueError("a tree needs at least one leaf")
    kinds = {(leaf.chain, leaf.asset) for leaf in ordered}
    if len(kinds) > 1:
        raise ValueError(f"leaves of one tree must share chain and asset, got {sorted(kinds)}")
    hashes = [leaf.hash for leaf in ordered]
    for before, after in pairwise(hashes):
        if before == after:
            raise ValueError(f"duplicate leaf {after}")
    levels_h, levels_s = [hashes], [[leaf.amount for leaf in ordered]]
    while len(levels_h[-1]) > 1:
        up_h, up_s = _level_up(levels_h[-1], levels_s[-1])
        levels_h.append(up_h)
        levels_s.append(up_s)
    return MerkleSumTree(tuple(ordered), levels_h, levels_s)


def tree_for(allocations: Iterable[tuple[str, str, str, int]], salt: bytes | None,
             nonce_source: NonceSource) -> dict[tuple[str, str], MerkleSumTree]:
    """Return one tree per (chain, asset) of (chain, asset, owner, amount) allocations.

    Each allocation becomes its own leaf with a fresh nonce (an owner may hold
    several). Owners are pseudonymized with `salt` when it is not None. Raises
    ValueError for an invalid allocation, salt or nonce (see `Leaf`, `owner_ref`).
    """
    grouped: dict[tuple[str, str], list[Leaf]] = {}
    refs: dict[str, str] = {}
    for chain, asset, owner, amount in allocations:
        nonce = nonce_source()
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise ValueError(f"the nonce source must return {NONCE_BYTES} bytes")
        ref = refs.get(owner)
        if ref is None:
            ref = refs[owner] = owner_ref(owner, salt)
        leaf = Leaf(chain, asset, ref, amount, nonce.hex())
        grouped.setdefault((chain, asset), []).append(leaf)
    return {key: build(grouped[key]) for key in sorted(grouped)}


def verify_proof(proof: object, expected_root_hash: str | None = None,
                 expected_total: int | None = None) -> VerifyResult:
    """Check a proof in parsed JSON form; never raises for bad input data.

    Recomputes the leaf hash, folds the path (refusing negative sibling sums) and
    compares the result with the proof's own root and, when given, with the
    published root hash and total. Returns VerifyResult(ok=False, reason=...) on
    the first failure.
    """
    try:
        parsed = Proof.from_json(proof)
    except ValueError as exc:
        return VerifyResult(ok=False, reason=f"malformed proof: {exc}")
    current, total = parsed.leaf.hash, parsed.leaf.amount
    for i, step in enumerate(parsed.path):
        if step.sum < 0:
            return VerifyResult(ok=False, reason=f"path[{i}].sum is negative: {step.sum}")
        if step.side == "left":
            current = node_hash(step.hash, step.sum, current, total)
        else:
            current = node_hash(current, total, step.hash, step.sum)
        total += step.sum
    result = VerifyResult(ok=True, root_hash=current, total=total)
    if current != parsed.root_hash:
        return _fail(result, "the path does not lead to the proof's root hash")
    if total != parsed.total:
        return _fail(result, f"the path sums to {total}, the proof claims {parsed.total}")
    if expected_root_hash is not None and current != expected_root_hash.lower():
        return _fail(result, "the root hash differs from the published root")
    if expected_total is not None and total != expected_total:
        return _fail(result, f"the total {total} differs from the published {expected_total}")
    return result


def _fail(result: VerifyResult, reason: str) -> VerifyResult:
    return VerifyResult(ok=False, reason=reason, root_hash=result.root_hash,
                        total=result.total)


def _leaf_key(leaf: Leaf) -> str:
    return leaf.hash


def _level_up(hashes: list[str], sums: list[int]) -> tuple[list[str], list[int]]:
    """Return the parents of one level, padding it in place when its size is odd."""
    if len(hashes) % 2:
        hashes.append(PAD_HASH)
        sums.append(0)
    sha256 = hashlib.sha256
    up_h = [
        sha256(f"{NODE_TAG}|{hashes[i]}|{sums[i]}|{hashes[i + 1]}|{sums[i + 1]}"
               .encode()).hexdigest()
        for i in range(0, len(hashes), 2)
    ]
    up_s = [sums[i] + sums[i + 1] for i in range(0, len(sums), 2)]
    return up_h, up_s


def _check_text(name: str, value: object) -> None:
    if type(value) is not str or not value or "|" in value:
        raise ValueError(f"{name} must be a non-empty string without '|'")


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    return value


def _string(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _hex(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ValueError(f"{where} must be 64 lowercase hex digits")
    return value


def _integer(doc: dict[str, Any], key: str, where: str) -> int:
    value = doc.get(key)
    if not isinstance(value, str) or len(value) > _MAX_DIGITS or not _INTEGER.fullmatch(value):
        raise ValueError(f"{where} must be a decimal integer string")
    return int(value)


def _step(raw: object, i: int) -> PathStep:
    step = _object(raw, f"path[{i}]")
    side = step.get("side")
    if side not in ("left", "right"):
        raise ValueError(f"path[{i}].side must be 'left' or 'right'")
    return PathStep(side="left" if side == "left" else "right",
                    hash=_hex(step, "hash", f"path[{i}].hash"),
                    sum=_integer(step, "sum", f"path[{i}].sum"))
