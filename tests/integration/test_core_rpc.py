"""CoreRpcAdapter against a real regtest litecoind (tests/litecoind.py), plus a few
answers no small regtest node can produce on demand, served by httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from chains.errors import InvalidAddress, SourceUnavailable
from chains.evm.devnet import free_port
from chains.types import Address, AssetRef, ChainHead
from chains.utxo.address import canonical_utxo_address
from chains.utxo.core_rpc import TOKENS_UNSUPPORTED, CoreRpcAdapter
from tests.litecoind import LitecoinNode

pytestmark = pytest.mark.litecoind

LTC = AssetRef("LTC", 8)
SATS = 10**8
BITCOIN_BECH32 = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"  # BIP-173 test vector


def sats(amount: str) -> int:
    return int(Decimal(amount) * SATS)


@pytest.fixture
def adapter(litecoind: LitecoinNode) -> Iterator[CoreRpcAdapter]:
    with CoreRpcAdapter(litecoind.url, network="litecoin-regtest") as a:
        yield a


def funded(node: LitecoinNode, wallet: str, kind: str, *amounts: str) -> Address:
    """A new address of `wallet` that receives one output per amount (not yet mined)."""
    address = node.new_address(wallet, kind)
    for amount in amounts:
        node.send(address, amount)
    return Address(address)


def test_chain_id_names_the_litecoin_regtest_network(adapter: CoreRpcAdapter) -> None:
    """A regtest litecoind configured as a Litecoin chain reports `litecoin-regtest`."""
    assert adapter.chain_id() == "litecoin-regtest"


def test_chain_id_reveals_a_litecoin_node_configured_as_bitcoin(
        litecoind: LitecoinNode) -> None:
    """The genesis block gives a litecoind away even when the chain is configured as bitcoin."""
    with CoreRpcAdapter(litecoind.url, network="regtest") as bitcoin:
        assert bitcoin.chain_id() == "litecoin-regtest"


def test_head_and_block_at_match_the_node(adapter: CoreRpcAdapter,
                                          litecoind: LitecoinNode) -> None:
    """head() is the node's best block with its time; block_at(h) is the block at h."""
    head = adapter.head()
    assert head.height == litecoind.height()
    assert head.hash == litecoind.call("getbestblockhash")
    assert head.timestamp == litecoind.call("getblockheader", head.hash)["time"]
    below = adapter.block_at(head.height - 5)
    assert below.height == head.height - 5
    assert below.hash == litecoind.call("getblockhash", head.height - 5)
    assert adapter.block_at(head.height) == head


def test_block_beyond_the_tip_is_unavailable(adapter: CoreRpcAdapter) -> None:
    """Asking for a block above the tip is SourceUnavailable naming the height."""
    height = adapter.head().height + 1000
    with pytest.raises(SourceUnavailable, match=f"no block {height} yet"):
        adapter.block_at(height)


def test_balances_equal_the_wallets_unspent_outputs(adapter: CoreRpcAdapter,
                                                    litecoind: LitecoinNode) -> None:
    """Each address's balance is exactly the satoshi sum of its confirmed outputs."""
    wallet = litecoind.create_wallet()
    many = funded(litecoind, wallet, "bech32", "0.1", "0.23456789", "1.00000001")
    legacy = funded(litecoind, wallet, "legacy", "2.5")
    wrapped = funded(litecoind, wallet, "p2sh-segwit", "0.00010001")
    empty = Address(litecoind.new_address(wallet))
    litecoind.mine(1)
    head = adapter.head()
    observed = adapter.balances([many, legacy, wrapped, empty], [LTC], head)
    amounts = {o.address: o.amount for o in observed}
    assert amounts == {many: sats("1.33456790"), legacy: sats("2.5"), wrapped: 10_001, empty: 0}
    for address, amount in amounts.items():
        assert amount == litecoind.unspent_sats(address, wallet)
        assert amount == litecoind.received_sats(address, wallet)
    assert {(o.block, o.error, o.source) for o in observed} == {(head, None, adapter.source)}


def test_unconfirmed_outputs_are_not_counted(adapter: CoreRpcAdapter,
                                             litecoind: LitecoinNode) -> None:
    """An output still in the mempool is not part of the balance until it is mined."""
    wallet = litecoind.create_wallet()
    address = funded(litecoind, wallet, "bech32", "0.75")
    (before,) = adapter.balances([address], [LTC], adapter.head())
    litecoind.mine(1)
    (after,) = adapter.balances([address], [LTC], adapter.head())
    assert (before.amount, after.amount) == (0, sats("0.75"))


def test_a_spend_reduces_the_balance(adapter: CoreRpcAdapter, litecoind: LitecoinNode) -> None:
    """After the wallet spends, the addresses' balances drop to what remains unspent."""
    wallet = litecoind.create_wallet()
    first = funded(litecoind, wallet, "bech32", "1.0", "0.5")
    second = funded(litecoind, wallet, "legacy", "0.25")
    litecoind.mine(1)
    before = adapter.balances([first, second], [LTC], adapter.head())
    litecoind.send(litecoind.new_address("miner"), "1.2", wallet=wallet)
    litecoind.mine(1)
    after = adapter.balances([first, second], [LTC], adapter.head())
    total = [sum(o.amount or 0 for o in obs) for obs in (before, after)]
    assert total[0] == sats("1.75") and total[1] < total[0]
    assert [o.amount for o in after] == [litecoind.unspent_sats(a, wallet)
                                         for a in (first, second)]


def test_observation_carries_the_block_the_scan_saw(adapter: CoreRpcAdapter,
                                                    litecoind: LitecoinNode) -> None:
    """Asked for a block below the tip, the observation names the tip the scan read."""
    wallet = litecoind.create_wallet()
    address = funded(litecoind, wallet, "bech32", "0.3")
    litecoind.mine(3)
    head = adapter.head()
    (observed,) = adapter.balances([address], [LTC], adapter.block_at(head.height - 2))
    assert observed.block == head and observed.amount == sats("0.3")


def test_another_networks_address_is_rejected(adapter: CoreRpcAdapter,
                                              litecoind: LitecoinNode) -> None:
    """The validator rejects a Bitcoin address on a litecoin-regtest chain; the node's
    own addresses pass, and the adapter reports the foreign one as an error observation."""
    own = litecoind.new_address("miner")
    assert canonical_utxo_address(own.upper(), "litecoin-regtest") == own
    with pytest.raises(InvalidAddress, match="bitcoin address on a litecoin-regtest chain"):
        canonical_utxo_address(BITCOIN_BECH32, "litecoin-regtest")
    (foreign,) = adapter.balances([Address(BITCOIN_BECH32)], [LTC], adapter.head())
    assert foreign.amount is None and foreign.error is not None and "not a valid" in foreign.error


def test_tokens_are_an_error_observation(adapter: CoreRpcAdapter,
                                         litecoind: LitecoinNode) -> None:
    """A token asset yields an error observation; the native balance is still read."""
    address = Address(litecoind.new_address("miner"))
    token = AssetRef("TKN", 8, Address("0x" + "11" * 20))
    native, other = adapter.balances([address], [LTC, token], adapter.head())
    assert native.error is None and native.amount is not None
    assert (other.amount, other.error) == (None, TOKENS_UNSUPPORTED)


def test_scan_follows_a_tracked_output_into_its_spend_with_the_nodes_fee(
        adapter: CoreRpcAdapter, litecoind: LitecoinNode) -> None:
    """A deposit block gives a transfer per output paying the watched address (log_index =
    output index) and a created tracked output; `unspent` seeds it, and scanning the
    spending block yields the payment, the change, the spent outpoint and a fee equal to
    the one the node's wallet reports."""
    wallet = litecoind.create_wallet()
    watched = funded(litecoind, wallet, "bech32", "0.8")
    deposit_height = litecoind.height() + 1
    litecoind.mine(1)
    deposit = adapter.scan([watched], deposit_height, deposit_height)
    (incoming,) = [t for t in deposit.transfers if t.recipient == watched]
    (created,) = deposit.created
    assert (incoming.amount, incoming.log_index, incoming.kind) == (sats("0.8"), created.vout,
                                                                    "native")
    seen, unspent = adapter.unspent([watched])
    assert [o.outpoint for o in unspent] == [created.outpoint] and seen == adapter.head()
    outside = Address(litecoind.new_address(litecoind.create_wallet()))
    txid = litecoind.send(outside, "0.3", wallet=wallet)
    litecoind.mine(1)
    height = litecoind.height()
    spend = adapter.scan([watched], height, height, unspent)
    node_fee = -Decimal(str(litecoind.call("gettransaction", txid, wallet=wallet)["fee"]))
    assert [(f.tx_hash, f.payer, f.amount) for f in spend.fees] == [
        (txid, watched, sats(str(node_fee)))]
    assert [(s.txid, s.vout, s.by_txid) for s in spend.spent] == [
        (created.txid, created.vout, txid)]
    paid = {(t.sender, t.recipient): t.amount for t in spend.transfers if t.tx_hash == txid}
    assert paid[(watched, outside)] == sats("0.3")
    change = sum(a for (_, recipient), a in paid.items() if recipient != outside)
    assert change == sats("0.8") - sats("0.3") - sats(str(node_fee))
    (block,) = spend.blocks
    assert (block.height, block.hash) == (height, adapter.head().hash)


def test_scan_of_an_empty_range_reads_nothing(adapter: CoreRpcAdapter) -> None:
    """A range that ends before it starts is empty, without a request."""
    before = adapter.requests_made
    assert adapter.scan([], 5, 4).blocks == () and adapter.requests_made == before


def test_unreachable_source_never_shows_its_password() -> None:
    """A URL with credentials where nothing listens is SourceUnavailable without the password."""
    secret = "s3cret-pa55"
    url = f"http://segwatch:{secret}@127.0.0.1:{free_port()}"
    with CoreRpcAdapter(url, network="litecoin-regtest", timeout=2.0) as adapter, \
            pytest.raises(SourceUnavailable) as raised:
        adapter.head()
    assert secret not in str(raised.value) and secret not in raised.value.user_message
    assert secret not in adapter.source


def test_wrong_password_is_unavailable_without_the_password(litecoind: LitecoinNode) -> None:
    """The node refuses wrong credentials (HTTP 401); the message does not repeat them."""
    url = litecoind.url.replace(litecoind.password, "wrong-password-123")
    with CoreRpcAdapter(url, network="litecoin-regtest") as adapter, \
            pytest.raises(SourceUnavailable, match="HTTP 401") as raised:
        adapter.chain_id()
    assert "wrong-password-123" not in raised.value.user_message


def test_two_hundred_addresses_take_one_scan(adapter: CoreRpcAdapter,
                                             litecoind: LitecoinNode) -> None:
    """200 addresses cost one validateaddress batch, one scan and one header; then two."""
    wallet = litecoind.create_wallet()
    addresses = [Address(litecoind.new_address(wallet)) for _ in range(200)]
    for address in addresses[::50]:
        litecoind.send(address, "0.01")
    litecoind.mine(1)
    head = adapter.head()
    start = adapter.requests_made
    observed = adapter.balances(addresses, [LTC], head)
    assert adapter.requests_made - start == 1 + 1  # validateaddress batch + scan
    assert sum(o.amount or 0 for o in observed) == 4 * sats("0.01")
    litecoind.mine(1)
    start = adapter.requests_made
    adapter.balances(addresses, [LTC], head)
    assert adapter.requests_made - start == 2  # scan + the new block's header


def test_scan_chunks_split_the_addresses(litecoind: LitecoinNode) -> None:
    """With scan_chunk=100, 200 addresses take two scans and give the same balances."""
    wallet = litecoind.create_wallet()
    addresses = [Address(litecoind.new_address(wallet)) for _ in range(200)]
    litecoind.send(addresses[0], "0.02")
    litecoind.send(addresses[-1], "0.03")
    litecoind.mine(1)
    with CoreRpcAdapter(litecoind.url, network="litecoin-regtest", scan_chunk=100) as adapter:
        head = adapter.head()
        start = adapter.requests_made
        observed = adapter.balances(addresses, [LTC], head)
        assert adapter.requests_made - start == 1 + 2
    assert (observed[0].amount, observed[-1].amount) == (sats("0.02"), sats("0.03"))


# -- answers served by a mock transport -------------------------------------------------

HASH_A, HASH_B = "aa" * 32, "bb" * 32
SCRIPT = "0014" + "11" * 20


def mock_node(scan_answer: dict[str, object]) -> httpx.MockTransport:
    """A Core-like node answering batches: validateaddress, getblockheader, scantxoutset."""
    def reply(method: str, params: list[object]) -> dict[str, object]:
        if method == "validateaddress":
            return {"result": {"isvalid": True, "scriptPubKey": SCRIPT}, "error": None}
        if method == "getblockheader":
            height = 7 if params[0] == HASH_B else 5
            return {"result": {"hash": params[0], "height": height, "time": 1}, "error": None}
        if method == "scantxoutset" and params[0] == "start":
            return scan_answer
        return {"result": None, "error": None}

    def handler(request: httpx.Request) -> httpx.Response:
        calls = json.loads(request.content)
        body = [{**reply(c["method"], c["params"]), "id": c["id"]} for c in calls]
        text = json.dumps(body).replace('"AMOUNT"', "83999999.12345678")
        return httpx.Response(200, text=text)

    return httpx.MockTransport(handler)


def test_amounts_are_exact_beyond_float_precision() -> None:
    """83,999,999.12345678 coins (16 significant digits; just under litecoin's supply, the
    most a source may report) become exactly 8399999912345678."""
    scan: dict[str, object] = {"result": {"success": True, "height": 5, "bestblock": HASH_A, "unspents": [
        {"txid": HASH_A, "vout": 0, "height": 5, "scriptPubKey": SCRIPT,
         "amount": "AMOUNT"}]}, "error": None}
    adapter = CoreRpcAdapter("http://u:p@node", network="litecoin",
                             transport=mock_node(scan))
    (observed,) = adapter.balances([Address("x")], [LTC], ChainHead(5, HASH_A))
    assert observed.amount == 8_399_999_912_345_678


def test_scan_already_in_progress_is_unavailable() -> None:
    """A node busy with another scan makes balances() SourceUnavailable saying so."""
    busy: dict[str, object] = {"result": None, "error": {"code": -8, "message": "Scan already in progress, use "
                                      "action \"abort\" or \"status\""}}
    adapter = CoreRpcAdapter("http://u:p@node", network="litecoin",
                             transport=mock_node(busy))
    with pytest.raises(SourceUnavailable, match="already running on the node"):
        adapter.balances([Address("x")], [LTC], ChainHead(5, HASH_A))


def test_a_timed_out_scan_is_aborted_on_the_node() -> None:
    """A scan that times out is SourceUnavailable, and the node is told to abort it."""
    sent: list[list[object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        (call,) = json.loads(request.content)
        sent.append(call["params"])
        if call["params"][0] == "start":
            raise httpx.ReadTimeout("timed out", request=request)
        result = {"isvalid": True, "scriptPubKey": SCRIPT} if call["method"] == "validateaddress" \
            else True
        return httpx.Response(200, json=[{"result": result, "error": None, "id": call["id"]}])

    adapter = CoreRpcAdapter("http://u:p@node", network="litecoin",
                             transport=httpx.MockTransport(handler))
    with pytest.raises(SourceUnavailable, match=r"scantxoutset failed: no answer within [\d.]+ s \(ReadTimeout\)"):
        adapter.balances([Address("x")], [LTC], ChainHead(5, HASH_A))
    assert [params[0] for params in sent] == ["x", "start", "abort"]
