"""EsploraAdapter against the test Esplora server (tests/esplora_server.py), which serves
what the real regtest litecoind of tests/litecoind.py holds; a few answers no such
server gives on demand come from httpx.MockTransport."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from decimal import Decimal

import httpx
import pytest

from chains.errors import DecodeError, SourceUnavailable
from chains.jsonrpc import RetryPolicy
from chains.types import Address, AssetRef, ChainHead
from chains.utxo.core_rpc import TOKENS_UNSUPPORTED
from chains.utxo.esplora import EsploraAdapter
from tests.esplora_server import EsploraServer
from tests.litecoind import LitecoinNode

pytestmark = pytest.mark.litecoind

LTC = AssetRef("LTC", 8)
FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)


def sats(amount: str) -> int:
    return int(Decimal(amount) * 10**8)


@pytest.fixture
def adapter(esplora: str) -> Iterator[EsploraAdapter]:
    with EsploraAdapter(esplora, network="litecoin-regtest", retry=FAST) as a:
        yield a


def funded(node: LitecoinNode, wallet: str, kind: str, *amounts: str) -> Address:
    """A new address of `wallet` that receives one output per amount (not yet mined)."""
    address = node.new_address(wallet, kind)
    for amount in amounts:
        node.send(address, amount)
    return Address(address)


def test_head_and_block_at_match_the_node(adapter: EsploraAdapter,
                                          litecoind: LitecoinNode) -> None:
    """head() is the node's best block with its time; block_at(h) is the block at h."""
    head = adapter.head()
    assert head.hash == litecoind.call("getbestblockhash")
    assert head.height == litecoind.height()
    assert head.timestamp == litecoind.call("getblockheader", head.hash)["time"]
    below = adapter.block_at(head.height - 3)
    assert (below.height, below.hash) == (head.height - 3,
                                          litecoind.call("getblockhash", head.height - 3))
    assert adapter.block_at(head.height) == head


def test_block_beyond_the_tip_is_unavailable(adapter: EsploraAdapter) -> None:
    """A block above the tip is SourceUnavailable naming the height."""
    height = adapter.head().height + 1000
    with pytest.raises(SourceUnavailable, match=f"no block {height} yet"):
        adapter.block_at(height)


def test_chain_id_is_the_configured_network(adapter: EsploraAdapter) -> None:
    """A regtest litecoind behind Esplora, configured as litecoin-regtest, reports it."""
    assert adapter.chain_id() == "litecoin-regtest"


def test_chain_id_reveals_the_genesis_network(esplora: str) -> None:
    """Configured as bitcoin regtest, the source still reports the network its genesis names."""
    with EsploraAdapter(esplora, network="regtest") as bitcoin:
        assert bitcoin.chain_id() == "litecoin-regtest"


def test_unknown_genesis_is_unavailable() -> None:
    """A genesis of no known network is SourceUnavailable saying so."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="ab" * 32)

    with EsploraAdapter("http://esplora", network="bitcoin",
                        transport=httpx.MockTransport(handler)) as adapter, \
            pytest.raises(SourceUnavailable, match="no known network"):
        adapter.chain_id()


def test_balances_equal_the_nodes_view(adapter: EsploraAdapter,
                                       litecoind: LitecoinNode) -> None:
    """Each address's balance is exactly the satoshi sum of its confirmed unspent outputs."""
    wallet = litecoind.create_wallet()
    many = funded(litecoind, wallet, "bech32", "0.1", "0.23456789", "1.00000001")
    legacy = funded(litecoind, wallet, "legacy", "2.5")
    wrapped = funded(litecoind, wallet, "p2sh-segwit", "0.00010001")
    empty = Address(litecoind.new_address(wallet))
    litecoind.mine(1)
    litecoind.send(litecoind.new_address("miner"), "1.2", wallet=wallet)  # spends some
    litecoind.mine(1)
    head = adapter.head()
    observed = adapter.balances([many, legacy, wrapped, empty], [LTC], head)
    for o in observed:
        assert o.amount == litecoind.unspent_sats(o.address, wallet)
        assert (o.block, o.error, o.source) == (head, None, adapter.source)
    assert sum(o.amount or 0 for o in observed) < sats("3.83466791")
    assert observed[-1].amount == 0


def test_unconfirmed_outputs_are_not_counted(adapter: EsploraAdapter,
                                             litecoind: LitecoinNode) -> None:
    """An output still in the mempool is not part of the balance until it is mined."""
    wallet = litecoind.create_wallet()
    address = funded(litecoind, wallet, "bech32", "0.75")
    (before,) = adapter.balances([address], [LTC], adapter.head())
    litecoind.mine(1)
    (after,) = adapter.balances([address], [LTC], adapter.head())
    assert (before.amount, after.amount) == (0, sats("0.75"))


def test_observation_carries_the_tip_read(adapter: EsploraAdapter,
                                          litecoind: LitecoinNode) -> None:
    """Asked for a block below the tip, the observation names the tip the reads saw."""
    address = funded(litecoind, litecoind.create_wallet(), "bech32", "0.3")
    litecoind.mine(3)
    head = adapter.head()
    (observed,) = adapter.balances([address], [LTC], adapter.block_at(head.height - 2))
    assert observed.block == head and observed.amount == sats("0.3")


def test_tokens_and_foreign_addresses_are_error_observations(
        adapter: EsploraAdapter, litecoind: LitecoinNode) -> None:
    """A token, and an address the source rejects, yield error observations at `block`."""
    own = Address(litecoind.new_address("miner"))
    foreign = Address("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
    token = AssetRef("TKN", 8, Address("0x" + "11" * 20))
    head = adapter.head()
    native, other, bad, _ = adapter.balances([own, foreign], [LTC, token], head)
    assert native.error is None and native.amount is not None
    assert (other.amount, other.error, other.block) == (None, TOKENS_UNSUPPORTED, head)
    assert bad.amount is None and bad.error is not None and "not a valid address" in bad.error


def test_request_count_is_addresses_plus_a_few(adapter: EsploraAdapter,
                                               litecoind: LitecoinNode) -> None:
    """N addresses cost N address requests plus two tip reads and at most one block read."""
    wallet = litecoind.create_wallet()
    addresses = [Address(litecoind.new_address(wallet)) for _ in range(40)]
    for address in addresses[::10]:
        litecoind.send(address, "0.01")
    litecoind.mine(1)
    start = adapter.requests_made
    observed = adapter.balances(addresses, [LTC], ChainHead(0, "00" * 32))
    assert len(addresses) + 2 <= adapter.requests_made - start <= len(addresses) + 3
    assert sum(o.amount or 0 for o in observed) == 4 * sats("0.01")


def test_rate_limit_with_retry_after_is_retried(adapter: EsploraAdapter,
                                                esplora_server: EsploraServer) -> None:
    """Two 429s with Retry-After: 1 are waited out (about a second each), then head() succeeds."""
    esplora_server.fail_with(429, times=2, retry_after="1")
    started = time.monotonic()
    head = adapter.head()
    assert head.hash == esplora_server.node.call("getbestblockhash")
    assert time.monotonic() - started >= 1.9
    assert esplora_server.paths[:3] == ["/blocks/tip/hash"] * 3


def test_one_server_error_is_retried(adapter: EsploraAdapter,
                                     esplora_server: EsploraServer) -> None:
    """A single HTTP 500 is retried and the read succeeds."""
    esplora_server.fail_with(500, times=1)
    assert adapter.chain_id() == "litecoin-regtest"


def test_persistent_server_error_hides_the_urls_secrets(esplora_server: EsploraServer) -> None:
    """Persistent HTTP 500 is SourceUnavailable after bounded attempts, without the URL's
    password or query secrets."""
    esplora_server.fail_with(500, times=None)
    password, key = "pa55-w0rd-secret", "api-key-9f8e7d6c5b4a"
    url = esplora_server.url.replace("http://", f"http://user:{password}@") + f"/api?key={key}"
    with EsploraAdapter(url, network="litecoin-regtest", retry=FAST) as adapter, \
            pytest.raises(SourceUnavailable, match="HTTP 500") as raised:
        adapter.head()
    assert adapter.requests_made == FAST.attempts
    message = f"{raised.value} {raised.value.user_message} {adapter.source}"
    assert password not in message and key not in message
    assert esplora_server.paths == ["/api/blocks/tip/hash"] * FAST.attempts


# -- answers served by a mock transport -------------------------------------------------

HASH_A, HASH_B = "aa" * 32, "bb" * 32


def mock_esplora(tips: list[str], stats: Mapping[str, object]) -> httpx.MockTransport:
    """Tip reads return `tips` in order (the last one repeats); every address has `stats`."""
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/blocks/tip/hash":
            return httpx.Response(200, text=tips.pop(0) if len(tips) > 1 else tips[0])
        if path.startswith("/block/"):
            return httpx.Response(200, json={"id": path[7:], "height": 9, "timestamp": 1})
        mempool = {"funded_txo_sum": 7, "spent_txo_sum": 0}  # unconfirmed: ignored
        return httpx.Response(200, json={"chain_stats": stats, "mempool_stats": mempool})
    return httpx.MockTransport(handler)


def test_balances_are_read_again_until_the_tip_holds_still() -> None:
    """When the tip moves during the reads, they are repeated and carry the tip that held;
    the amount is the exact confirmed sum (mempool_stats ignored), beyond float precision
    (and under litecoin's supply: a larger balance is refused, issue 12)."""
    stats = {"funded_txo_sum": 8_399_999_912_345_678, "spent_txo_sum": 1}
    transport = mock_esplora([HASH_A, HASH_B, HASH_B], stats)
    with EsploraAdapter("http://esplora", network="litecoin", transport=transport) as adapter:
        (observed,) = adapter.balances([Address("x")], [LTC], ChainHead(5, HASH_A))
    assert observed.block.hash == HASH_B and observed.amount == 8_399_999_912_345_677


def test_a_tip_that_never_holds_still_is_unavailable() -> None:
    """A tip that moves during every attempt makes balances() SourceUnavailable."""
    stats = {"funded_txo_sum": 1, "spent_txo_sum": 0}
    tips = [HASH_A, HASH_B] * 5
    with EsploraAdapter("http://esplora", network="litecoin",
                        transport=mock_esplora(tips, stats)) as adapter, \
            pytest.raises(SourceUnavailable, match="tip moved"):
        adapter.balances([Address("x")], [LTC], ChainHead(5, HASH_A))


@pytest.mark.parametrize("stats", [
    {"funded_txo_sum": 1.5, "spent_txo_sum": 0},
    {"funded_txo_sum": 1, "spent_txo_sum": 2},
    {"spent_txo_sum": 0},
])
def test_malformed_chain_stats_are_a_decode_error(stats: dict[str, object]) -> None:
    """A float, a negative balance or a missing sum is a DecodeError naming the field."""
    with EsploraAdapter("http://esplora", network="litecoin",
                        transport=mock_esplora([HASH_A], stats)) as adapter, \
            pytest.raises(DecodeError, match="chain_stats"):
        adapter.balances([Address("x")], [LTC], ChainHead(5, HASH_A))


def test_rate_limit_spaces_the_requests_across_threads() -> None:
    """`rate_limit` = 50/s: 20 address reads on 8 threads (plus 3 tip/block reads) take at
    least 22 intervals of 20 ms; without it they take far less."""
    stats = {"funded_txo_sum": 5, "spent_txo_sum": 0}
    addresses = [Address(f"a{n}") for n in range(20)]
    timings = {}
    for limit in (None, 50.0):
        with EsploraAdapter("http://esplora", network="litecoin", concurrency=8,
                            rate_limit=limit, transport=mock_esplora([HASH_A], stats)) as adapter:
            started = time.monotonic()
            observed = adapter.balances(addresses, [LTC], ChainHead(5, HASH_A))
            timings[limit] = time.monotonic() - started
        assert [o.amount for o in observed] == [5] * 20
    assert timings[50.0] >= 22 * 0.02 > 2 * timings[None]
