"""Wallet shard assignment (pure): stable, spread evenly, one shard per wallet; a replica's
slices of the books (daemon/runtime/shard_memory.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chains.types import Address
from daemon.inputs.chain_settings import ChainSettings
from daemon.rules.reconcile import LedgerView, WalletView
from daemon.rules.shards import Shard, shard_of, shards
from daemon.runtime import shard_memory
from daemon.runtime.shard_memory import ShardMemory


def test_one_shard_is_the_whole_chain() -> None:
    """Unsplit, the shard's key is the chain's name (the lease name of before) and it scans."""
    whole = Shard("ethereum")
    assert whole.key == "ethereum" and whole.scans and whole.owns("0xabc")


def test_a_wallets_shard_is_a_fixed_hash_of_its_address() -> None:
    """The assignment is a function of the address alone (every replica agrees), known
    vectors included."""
    assert shard_of("0x1000000000000000000000000000000000000001", 4) == \
        int.from_bytes(__import__("hashlib").sha256(
            b"0x1000000000000000000000000000000000000001").digest()[:8], "big") % 4
    assert shard_of("bc1qexample", 1) == 0


@given(st.lists(st.text(min_size=1, max_size=64), min_size=1, max_size=50, unique=True),
       st.integers(min_value=1, max_value=16))
def test_every_wallet_is_owned_by_exactly_one_shard(addresses: list[str], count: int) -> None:
    chain = ChainSettings(name="ethereum", family="evm", chain_id=1, shards=count,
                          sources=[{"kind": "jsonrpc", "url": "http://127.0.0.1:1/"}])  # type: ignore[list-item]
    parts = shards(chain)
    assert [p.index for p in parts] == list(range(count))
    assert [p.scans for p in parts] == [True] + [False] * (count - 1)
    for address in addresses:
        assert sum(p.owns(address) for p in parts) == 1


def test_wallets_spread_evenly_over_the_shards() -> None:
    """10,000 addresses over 4 shards: each gets 25 % within 2 points."""
    counts = Counter(shard_of(f"0x{n:040x}", 4) for n in range(10_000))
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(2_300 <= c <= 2_700 for c in counts.values()), counts


def test_shard_keys_name_the_chain_the_index_and_the_count() -> None:
    assert Shard("ethereum", 1, 3).key == "ethereum/1-of-3"
    assert not Shard("ethereum", 1, 3).scans


def test_a_replicas_shards_slice_the_books_from_one_hashing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The shards a replica holds cut their slices of the books from one split: each
    address is hashed once for all of them (a million addresses hashed per shard took
    seconds), the slices are exactly what `owns` says, and new books split again."""
    chain = ChainSettings(name="ethereum", family="evm", chain_id=1, shards=3,
                          sources=[{"kind": "jsonrpc", "url": "http://127.0.0.1:1/"}])  # type: ignore[list-item]
    wallets = {Address(f"0x{n:040x}"): WalletView(Address(f"0x{n:040x}"), "segregated")
               for n in range(300)}
    books = LedgerView("ethereum", wallets)
    hashed: list[str] = []

    def counted(address: str, count: int) -> int:
        hashed.append(address)
        return shard_of(address, count)

    monkeypatch.setattr(shard_memory, "shard_of", counted)
    memory = ShardMemory()
    slices = [memory.slice(books, chain, part) for part in shards(chain)]
    assert len(hashed) == len(wallets)
    for part, cut in zip(shards(chain), slices, strict=True):
        assert set(cut.mine.wallets) == {a for a in wallets if part.owns(a)}
        assert cut.sorted == sorted(cut.mine.wallets)
    assert sum(len(cut.mine.wallets) for cut in slices) == len(wallets)
    assert memory.slice(books, chain, shards(chain)[1]) is slices[1]  # kept
    memory.slice(LedgerView("ethereum", dict(wallets)), chain, shards(chain)[2])
    assert len(hashed) == 2 * len(wallets)  # new books: split again
