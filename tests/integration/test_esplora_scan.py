"""EsploraAdapter.scan against the test Esplora server (tests/esplora_server.py), which pages
through what the real regtest litecoind of tests/litecoind.py holds. Every test uses
wallets and addresses of its own; the node is shared with other tests. A few answers
no real server gives on demand come from httpx.MockTransport (at the end)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chains.errors import DecodeError, SourceUnavailable
from chains.jsonrpc import RetryPolicy
from chains.types import Address, ScanResult, TransferObservation
from chains.utxo.core_rpc import coins_to_sats
from chains.utxo.esplora import EsploraAdapter
from chains.utxo.esplora_decode import HISTORY_PAGE
from chains.utxo.flows import UNCONFIRMED
from tests.esplora_server import EsploraServer
from tests.litecoind import MINER, LitecoinNode

pytestmark = pytest.mark.litecoind

FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05)
NETWORK = "litecoin-regtest"


@pytest.fixture
def adapter(esplora: str) -> Iterator[EsploraAdapter]:
    with EsploraAdapter(esplora, network=NETWORK, retry=FAST) as a:
        yield a


@pytest.fixture(scope="module")
def receiver(litecoind: LitecoinNode) -> str:
    """A wallet that only receives: each test takes fresh addresses of it (creating a
    wallet costs the node over a second), and nothing ever spends its coins."""
    return litecoind.create_wallet()


def sats(node_amount: Any) -> int:
    return coins_to_sats(node_amount, "litecoind", "amount")


def of_tx(transfers: tuple[TransferObservation, ...], txid: str) -> list[TransferObservation]:
    return [t for t in transfers if t.tx_hash == txid]


def output_index(node: LitecoinNode, txid: str, address: str, wallet: str = MINER) -> int:
    """The index of the output of wallet transaction `txid` that pays `address`."""
    raw = node.call("gettransaction", txid, wallet=wallet)["hex"]
    for out in node.call("decoderawtransaction", raw)["vout"]:
        script = out["scriptPubKey"]
        if address in (script.get("address"), *script.get("addresses", ())):
            return int(out["n"])
    raise AssertionError(f"{txid} pays nothing to {address}")


def scan_from(adapter: EsploraAdapter, node: LitecoinNode, watched: list[Address],
              start: int) -> ScanResult:
    return adapter.scan(watched, start, node.height())


def deposit(node: LitecoinNode, wallet: str, amount: str = "0.5") -> tuple[Address, str, int]:
    """A fresh address of `wallet`, paid `amount` in a mined block: (address, txid, the
    first height after the deposit was sent)."""
    address = Address(node.new_address(wallet))
    start = node.height() + 1
    txid = node.send(address, amount)
    node.mine(1)
    return address, txid, start


# -- confirmed transfers -----------------------------------------------------------------

def test_deposit_is_a_transfer_at_its_output_index_from_the_sender(
        adapter: EsploraAdapter, litecoind: LitecoinNode, receiver: str) -> None:
    """A deposit to a watched address is one transfer of its exact amount, log_index the
    output's index, from the paying wallet's address, in the block that holds it."""
    address, txid, start = deposit(litecoind, receiver, "0.12345678")
    result = scan_from(adapter, litecoind, [address], start)
    (transfer,) = of_tx(result.transfers, txid)
    assert (transfer.recipient, transfer.amount) == (address, 12_345_678)
    assert transfer.log_index == output_index(litecoind, txid, address)
    assert transfer.sender is not None
    assert litecoind.call("getaddressinfo", transfer.sender, wallet=MINER)["ismine"] is True
    block = litecoind.call("getblockheader", transfer.block.hash)
    assert (transfer.block.height, transfer.block.timestamp) == (block["height"], block["time"])
    assert (transfer.kind, transfer.source, transfer.contract) == ("native", adapter.source, None)
    assert result.fees == () and result.traces == "none" and result.rechecked_blocks == 0


def test_spend_pays_the_outside_address_change_nets_to_zero_and_fee_is_exact(
        adapter: EsploraAdapter, litecoind: LitecoinNode) -> None:
    """A spend from a watched address is a transfer to the outside address, its change a
    transfer back to itself, and its fee (inputs minus outputs) the node's fee: the
    transfers and the fee explain the address's balance change exactly; the spent and
    created outputs are reported for the tracked-output store."""
    wallet = litecoind.create_wallet()
    address = Address(litecoind.new_address(wallet))
    litecoind.send(address, "1")
    litecoind.mine(1)
    outside = litecoind.new_address(MINER)
    start = litecoind.height() + 1
    raw = litecoind.call("createrawtransaction", [], {outside: "0.3"})
    funded = litecoind.call("fundrawtransaction", raw, {"changeAddress": address}, wallet=wallet)
    signed = litecoind.call("signrawtransactionwithwallet", funded["hex"], wallet=wallet)
    txid = litecoind.call("sendrawtransaction", signed["hex"])
    litecoind.mine(1)
    result = scan_from(adapter, litecoind, [address], start)
    moved = of_tx(result.transfers, txid)
    out = next(t for t in moved if t.recipient == outside)
    change = next(t for t in moved if t.recipient == address)
    assert (out.sender, out.amount) == (address, 30_000_000)
    assert out.log_index == output_index(litecoind, txid, outside, wallet)
    assert change.sender == address and len(moved) == 2
    (fee,) = [f for f in result.fees if f.tx_hash == txid]
    node_fee = sats(-litecoind.call("gettransaction", txid, wallet=wallet)["fee"])
    assert (fee.payer, fee.amount, fee.success) == (address, node_fee, True)
    assert change.amount == 100_000_000 - 30_000_000 - node_fee
    net = sum(t.amount for t in moved if t.recipient == address) \
        - sum(t.amount for t in moved if t.sender == address) - fee.amount
    assert net == litecoind.unspent_sats(address, wallet) - 100_000_000
    (spent,) = [s for s in result.spent if s.by_txid == txid]
    (created,) = [c for c in result.created if c.txid == txid]
    assert (created.address, created.vout, created.value) == (
        address, change.log_index, change.amount)
    assert spent.height == created.height == litecoind.height()


def test_coinbase_to_a_watched_address_is_a_deposit_without_sender(
        adapter: EsploraAdapter, litecoind: LitecoinNode, receiver: str) -> None:
    """A block reward paid to a watched address is a transfer of the coinbase output with
    no sender (a coinbase has no inputs) and no fee."""
    address = Address(litecoind.new_address(receiver))
    (block_hash,) = litecoind.call("generatetoaddress", 1, address)
    coinbase = litecoind.call("getblock", block_hash, 2)["tx"][0]
    result = adapter.scan([address], litecoind.height(), litecoind.height())
    (transfer,) = of_tx(result.transfers, coinbase["txid"])
    assert (transfer.sender, transfer.recipient, transfer.log_index) == (None, address, 0)
    assert transfer.amount == sats(coinbase["vout"][0]["value"])
    assert transfer.block.hash == block_hash and result.fees == ()


def test_a_transaction_paying_two_watched_addresses_is_read_once(
        adapter: EsploraAdapter, litecoind: LitecoinNode, receiver: str) -> None:
    """A transaction in the histories of two watched addresses yields one transfer per
    output, not one set per address."""
    one, two = (Address(litecoind.new_address(receiver)) for _ in range(2))
    start = litecoind.height() + 1
    txid = litecoind.call("sendmany", "", {one: "0.1", two: "0.2"}, wallet=MINER)
    litecoind.mine(1)
    moved = of_tx(scan_from(adapter, litecoind, [one, two], start).transfers, txid)
    assert sorted((t.recipient, t.amount) for t in moved) == sorted(
        [(one, 10_000_000), (two, 20_000_000)])


# -- paging ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Busy:
    """An address with 30 deposits in three blocks (ten each) from `start` to `end`."""

    address: Address
    txids: frozenset[str]
    start: int
    end: int


@pytest.fixture(scope="module")
def busy(litecoind: LitecoinNode, receiver: str) -> Busy:
    """One address with more confirmed transactions than a history page holds (only read)."""
    address = Address(litecoind.new_address(receiver))
    start = litecoind.height() + 1
    txids = set()
    for _ in range(3):
        txids |= {litecoind.send(address, "0.01") for _ in range(10)}
        litecoind.mine(1)  # the miner's unconfirmed change chain stays short
    return Busy(address, frozenset(txids), start, litecoind.height())


def test_a_history_longer_than_a_page_is_read_in_full(
        adapter: EsploraAdapter, esplora_server: EsploraServer, busy: Busy) -> None:
    """All 30 deposits of an address are transfers: the scan read the second history page
    (`/txs/chain/:last_seen_txid`) and checked the count against `tx_count`."""
    assert len(busy.txids) > HISTORY_PAGE
    result = adapter.scan([busy.address], busy.start, busy.end)
    assert {t.tx_hash for t in result.transfers} == busy.txids
    assert all(t.recipient == busy.address and t.amount == 1_000_000 for t in result.transfers)
    assert [t.block.height for t in result.transfers] == sorted(
        t.block.height for t in result.transfers)
    assert len(esplora_server.requested(f"/address/{busy.address}/txs/chain/")) == 1
    assert esplora_server.requested(f"/address/{busy.address}$")


def test_paging_stops_at_the_first_transaction_below_the_range(
        adapter: EsploraAdapter, esplora_server: EsploraServer, busy: Busy) -> None:
    """Scanning only the newest block reads one page: its oldest transaction is below the
    range, so no further page (and no count) is needed."""
    result = adapter.scan([busy.address], busy.end, busy.end)
    assert len(result.transfers) == 10
    assert {t.block.height for t in result.transfers} == {busy.end}
    assert esplora_server.requested("/address/") == [f"/address/{busy.address}/txs"]


# -- mempool -----------------------------------------------------------------------------

def test_a_mempool_transaction_is_listed_unconfirmed_until_mined(
        adapter: EsploraAdapter, litecoind: LitecoinNode, receiver: str) -> None:
    """An unconfirmed deposit is in `mempool` with block UNCONFIRMED and not in `transfers`;
    once mined it is a transfer and leaves `mempool`."""
    address = Address(litecoind.new_address(receiver))
    txid = litecoind.send(address, "0.2")
    tip = litecoind.height()
    pending = adapter.scan([address], tip, tip)
    (unconfirmed,) = of_tx(pending.mempool, txid)
    assert (unconfirmed.block, unconfirmed.recipient, unconfirmed.amount) == (
        UNCONFIRMED, address, 20_000_000)
    assert of_tx(pending.transfers, txid) == []
    litecoind.mine(1)
    mined = adapter.scan([address], tip + 1, tip + 1)
    assert len(of_tx(mined.transfers, txid)) == 1 and of_tx(mined.mempool, txid) == []


# -- blocks ------------------------------------------------------------------------------

def test_block_links_cover_and_chain_the_whole_range(
        adapter: EsploraAdapter, litecoind: LitecoinNode) -> None:
    """A 23-block range (three `/blocks` pages) has one link per height, each the node's
    block with its time, each the child of the one before."""
    end = litecoind.height()
    start = end - 22
    links = adapter.scan([], start, end).blocks
    assert [link.height for link in links] == list(range(start, end + 1))
    assert links[0].parent_hash == litecoind.call("getblockhash", start - 1)
    for link in links:
        header = litecoind.call("getblockheader", litecoind.call("getblockhash", link.height))
        assert (link.hash, link.timestamp) == (header["hash"], header["time"])
    assert all(b.parent_hash == a.hash for a, b in itertools.pairwise(links))


def test_an_empty_range_reads_nothing(adapter: EsploraAdapter) -> None:
    """start > end is an empty result without a request."""
    assert adapter.scan([Address("x")], 10, 9) == ScanResult((), (), (), "none", 0)
    assert adapter.requests_made == 0


def test_a_range_beyond_the_tip_is_unavailable(adapter: EsploraAdapter,
                                               litecoind: LitecoinNode) -> None:
    """A range ending above the source's tip is SourceUnavailable naming the block."""
    end = litecoind.height() + 5
    with pytest.raises(SourceUnavailable, match=f"no block {end} yet"):
        adapter.scan([], end - 1, end)


def test_a_reorg_during_the_scan_is_unavailable(
        esplora: str, esplora_server: EsploraServer, litecoind: LitecoinNode,
        receiver: str) -> None:
    """When the block holding a watched transaction is replaced after the blocks were read,
    the scan is SourceUnavailable (the chain moved), never a mix of two chains."""
    address, txid, _ = deposit(litecoind, receiver)
    tip = litecoind.height()
    replaced = litecoind.call("getblockhash", tip)
    other = litecoind.new_address(MINER)

    def reorg(page: Any) -> Any:
        litecoind.call("invalidateblock", litecoind.call("getblockhash", tip))
        litecoind.call("generatetoaddress", 1, other)  # re-mines the deposit elsewhere
        return page

    esplora_server.edit_next(r"/blocks/\d", reorg)
    # one worker: the block page is read before the address history
    with EsploraAdapter(esplora, network=NETWORK, retry=FAST, concurrency=1) as adapter, \
            pytest.raises(SourceUnavailable, match="chain moved during the scan"):
        adapter.scan([address], tip, tip)
    assert litecoind.call("getblockhash", tip) != replaced
    assert litecoind.call("gettransaction", txid, wallet=MINER)["blockhash"] != replaced


# -- faults ------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["first", "chain"])
def test_a_truncated_history_page_is_a_decode_error(
        adapter: EsploraAdapter, esplora_server: EsploraServer, busy: Busy, which: str) -> None:
    """A history page cut short (invalid JSON), first or later, is a DecodeError."""
    path = f"/address/{busy.address}/txs" + ("$" if which == "first" else "/chain/")
    esplora_server.truncate_next(path)
    with pytest.raises(DecodeError, match="not valid JSON"):
        adapter.scan([busy.address], busy.start, busy.end)


def test_a_short_first_page_that_disagrees_with_tx_count_is_a_decode_error(
        adapter: EsploraAdapter, esplora_server: EsploraServer,
        litecoind: LitecoinNode, receiver: str) -> None:
    """A page that ends the history with fewer transactions than `chain_stats.tx_count`
    is a DecodeError (history incomplete), not a shorter history."""
    address, _, start = deposit(litecoind, receiver)
    esplora_server.edit_next(f"/address/{address}/txs$", lambda page: page[:-1])
    with pytest.raises(DecodeError, match="history incomplete"):
        scan_from(adapter, litecoind, [address], start)


def test_a_later_page_that_disagrees_with_tx_count_is_a_decode_error(
        adapter: EsploraAdapter, esplora_server: EsploraServer, busy: Busy) -> None:
    """A short last page (`/txs/chain/`) missing a transaction is a DecodeError."""
    esplora_server.edit_next(f"/address/{busy.address}/txs/chain/", lambda page: page[1:])
    with pytest.raises(DecodeError, match="history incomplete"):
        adapter.scan([busy.address], busy.start, busy.end)


def test_a_tx_count_above_the_history_read_is_a_decode_error(
        adapter: EsploraAdapter, esplora_server: EsploraServer,
        litecoind: LitecoinNode, receiver: str) -> None:
    """An address whose `tx_count` claims more transactions than its pages list is a
    DecodeError naming the counts."""
    address, _, start = deposit(litecoind, receiver)

    def more(stats: Any) -> Any:
        stats["chain_stats"]["tx_count"] += 1
        return stats

    esplora_server.edit_next(f"/address/{address}$", more)
    with pytest.raises(DecodeError, match=r"read 1 confirmed transactions, .*tx_count is 2"):
        scan_from(adapter, litecoind, [address], start)


def test_a_malformed_amount_is_a_decode_error_naming_the_field(
        adapter: EsploraAdapter, esplora_server: EsploraServer,
        litecoind: LitecoinNode, receiver: str) -> None:
    """A float amount in a history page is a DecodeError naming the output's value."""
    address, _, start = deposit(litecoind, receiver)

    def floated(page: Any) -> Any:
        page[0]["vout"][0]["value"] = page[0]["vout"][0]["value"] / 1e8
        return page

    esplora_server.edit_next(f"/address/{address}/txs$", floated)
    with pytest.raises(DecodeError, match=r"txs\[0\]\.vout\[0\]\.value"):
        scan_from(adapter, litecoind, [address], start)


def test_rate_limits_and_server_errors_are_retried_and_the_scan_completes(
        adapter: EsploraAdapter, esplora_server: EsploraServer,
        litecoind: LitecoinNode, receiver: str) -> None:
    """A 429 with Retry-After: 1 on the history and two 503s on a block page are retried
    (the Retry-After waited out) and the scan still finds the deposit."""
    address, txid, start = deposit(litecoind, receiver)
    esplora_server.fail_with(429, times=1, retry_after="1", path=f"/address/{address}/txs$")
    esplora_server.fail_with(503, times=2, path=r"/blocks/\d")
    started = time.monotonic()
    result = scan_from(adapter, litecoind, [address], start)
    assert time.monotonic() - started >= 0.9
    assert len(of_tx(result.transfers, txid)) == 1
    assert len(esplora_server.requested(f"/address/{address}/txs$")) == 2
    assert len(esplora_server.requested(r"/blocks/\d")) == 3


def test_persistent_server_errors_are_unavailable(
        adapter: EsploraAdapter, esplora_server: EsploraServer,
        litecoind: LitecoinNode, receiver: str) -> None:
    """A history that answers HTTP 500 every time is SourceUnavailable after the retries."""
    address, _, start = deposit(litecoind, receiver)
    esplora_server.fail_with(500, times=None, path="/address/")
    with pytest.raises(SourceUnavailable, match="HTTP 500"):
        scan_from(adapter, litecoind, [address], start)
    assert len(esplora_server.requested("/address/")) == FAST.attempts


def test_addresses_are_read_concurrently_within_the_limit(
        esplora: str, esplora_server: EsploraServer, litecoind: LitecoinNode,
        receiver: str) -> None:
    """With slow answers, eight addresses are read in parallel but never more than
    `concurrency` requests are open at once."""
    addresses = [Address(litecoind.new_address(receiver)) for _ in range(8)]
    esplora_server.latency = 0.05
    tip = litecoind.height()
    with EsploraAdapter(esplora, network=NETWORK, retry=FAST, concurrency=3) as adapter:
        result = adapter.scan(addresses, tip, tip)
    assert result.transfers == () and len(result.blocks) == 1
    assert 1 < esplora_server.max_in_flight <= 3


# -- answers served by a mock transport ------------------------------------------------

HASH_A, HASH_B, TXID = "aa" * 32, "bb" * 32, "cc" * 32


def mock_esplora(tips: list[str], tx_count: int) -> httpx.MockTransport:
    """Block 5 is HASH_A; the tip reads return `tips` in order; address `x` has one
    confirmed transaction in block 5 and claims `tx_count`."""
    tx = {"txid": TXID, "vin": [{"is_coinbase": True}],
          "vout": [{"scriptpubkey": "00", "scriptpubkey_address": "x", "value": 7}],
          "status": {"confirmed": True, "block_height": 5, "block_hash": HASH_A}}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/blocks/tip/hash":
            return httpx.Response(200, text=tips.pop(0) if len(tips) > 1 else tips[0])
        if path == "/blocks/5":
            return httpx.Response(200, json=[{"id": HASH_A, "height": 5, "timestamp": 1,
                                              "previousblockhash": HASH_B}])
        if path == "/block-height/5":
            return httpx.Response(200, text=HASH_A)
        if path == "/address/x/txs":
            return httpx.Response(200, json=[tx])
        return httpx.Response(200, json={"chain_stats": {"tx_count": tx_count}})
    return httpx.MockTransport(handler)


def test_a_count_mismatch_while_the_tip_moved_is_unavailable_not_malformed() -> None:
    """When the tip moved during the scan, a history that disagrees with `tx_count` may
    just have grown meanwhile: SourceUnavailable (retried next cycle), not DecodeError."""
    transport = mock_esplora([HASH_A, HASH_B], tx_count=2)
    with EsploraAdapter("http://esplora", network="litecoin", transport=transport) as adapter, \
            pytest.raises(SourceUnavailable, match="changed meanwhile"):
        adapter.scan([Address("x")], 5, 5)


def test_a_tip_that_moved_above_the_range_keeps_the_scan() -> None:
    """A new block above the range during the scan does not void a complete history."""
    transport = mock_esplora([HASH_A, HASH_B], tx_count=1)
    with EsploraAdapter("http://esplora", network="litecoin", transport=transport) as adapter:
        result = adapter.scan([Address("x")], 5, 5)
    (transfer,) = result.transfers
    assert (transfer.tx_hash, transfer.amount, transfer.sender) == (TXID, 7, None)
