"""Wallet shard assignment (pure): stable, spread evenly, one shard per wallet."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from daemon.inputs.chain_settings import ChainSettings
from daemon.rules.shards import Shard, shard_of, shards


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
