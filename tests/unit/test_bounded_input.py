"""Bounded input from sources (issue 12): size cap, overall deadline, range-checked
quantities, configured headers and names. Every refusal is a source error (the daemon
fails over and counts it), never a crash, and names the source by its name only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest

from chains.errors import DecodeError, SourceUnavailable
from chains.evm.adapter import EvmAdapter
from chains.evm.fields import hex_quantity
from chains.http import host_name
from chains.jsonrpc import JsonRpcClient, RetryPolicy
from chains.limits import MAX_HEIGHT, UINT256_MAX
from chains.registry import make_adapter
from chains.types import Address, AssetRef, ChainHead
from chains.utxo.core_rpc import coins_to_sats, decode_scan
from chains.utxo.decode import checked_sats
from chains.utxo.esplora import EsploraAdapter
from chains.utxo.esplora_decode import decode_address_balance, decode_tx
from tests.httpserve import LoopbackServer, QuietHandler, answer

MIB = 1024 * 1024
HUGE = 100 * MIB
KEY = "k3y-Sekrit9"  # short on purpose: short keys leaked before (issue 12)
WALLET = Address("0x52908400098527886E0F7030069857D2E4169EE7")
ETH = AssetRef("ETH", 18)
BLOCK = ChainHead(7, "0x" + "ab" * 32, 1_700_000_000)
BTC_SUPPLY = 21_000_000 * 10**8
LTC_SUPPLY = 84_000_000 * 10**8
ONCE = RetryPolicy(attempts=1)
SOURCE_ERRORS = (SourceUnavailable, DecodeError)


class _Handler(QuietHandler):
    """Answers by the server's `mode`: "json" (a JSON-RPC result), "huge" (100 MB, streamed
    lazily, with or without Content-Length), "drip" (one byte a second)."""

    mode: ClassVar[str] = "json"
    seen_headers: ClassVar[list[dict[str, str]]] = []
    sent: ClassVar[list[int]] = [0]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"null")
        self._serve(body.get("id", 1) if isinstance(body, dict) else 1)

    def do_GET(self) -> None:
        self._serve(None)

    def _serve(self, request_id: int | None) -> None:
        type(self).seen_headers.append({k.lower(): v for k, v in self.headers.items()})
        if self.mode == "json":
            result: Any = {"jsonrpc": "2.0", "id": request_id, "result": "0x10"}
            answer(self, 200, json.dumps(result).encode(), {"Content-Type": "application/json"})
        elif self.mode in ("huge", "huge-unannounced"):
            self._stream_huge(announce=self.mode == "huge")
        elif self.mode == "drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self._drip(100)
        elif self.mode == "drip-headers":  # the status line, then a header byte a second
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            self._drip(100)

    def _stream_huge(self, *, announce: bool) -> None:
        self.send_response(200)
        if announce:
            self.send_header("Content-Length", str(HUGE))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = b"[" + b" " * (64 * 1024 - 1)
        try:
            while type(self).sent[0] < HUGE:  # written only as fast as the client reads
                self.wfile.write(chunk)
                type(self).sent[0] += len(chunk)
        except OSError:
            pass

    def _drip(self, count: int) -> None:
        try:
            for _ in range(count):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            pass


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    _Handler.mode = "json"
    _Handler.seen_headers = []
    _Handler.sent = [0]
    served = LoopbackServer(_Handler, name="bounded-test").start()
    yield served
    served.stop()


def _client(url: str, **kwargs: Any) -> JsonRpcClient:
    return JsonRpcClient(url, name="alpha", retry=ONCE, timeout=10.0, **kwargs)


# -- size cap -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["huge", "huge-unannounced"])
def test_a_100_mb_body_is_refused_without_reading_it(server: LoopbackServer, mode: str) -> None:
    """Announced (Content-Length) or not, a body past the cap is a source error found
    while streaming: fast, and far less than 100 MB ever leaves the server."""
    _Handler.mode = mode
    started = time.monotonic()
    with _client(server.url, max_response_bytes=MIB) as client, \
            pytest.raises(SourceUnavailable) as info:
        client.call("eth_blockNumber")
    assert time.monotonic() - started < 5
    assert "exceeds the cap" in info.value.user_message
    assert info.value.source == "alpha"
    time.sleep(0.2)
    assert _Handler.sent[0] < HUGE // 4


def test_esplora_refuses_a_100_mb_body(server: LoopbackServer) -> None:
    _Handler.mode = "huge-unannounced"
    started = time.monotonic()
    adapter = EsploraAdapter(server.url, network="regtest", name="esp", retry=ONCE,
                             max_response_bytes=MIB)
    with adapter, pytest.raises(SourceUnavailable) as info:
        adapter.head()
    assert time.monotonic() - started < 5
    assert info.value.source == "esp" and "exceeds the cap" in info.value.user_message


# -- deadline -------------------------------------------------------------------------

def test_a_one_byte_per_second_drip_is_refused_at_the_deadline(
        server: LoopbackServer) -> None:
    """Each byte comes well within the 10 s read timeout; the 2 s deadline still ends it."""
    _Handler.mode = "drip"
    started = time.monotonic()
    with _client(server.url, deadline=2.0) as client, pytest.raises(SourceUnavailable) as info:
        client.call("eth_blockNumber")
    elapsed = time.monotonic() - started
    assert 1.9 < elapsed < 4.5, elapsed
    assert "deadline" in info.value.user_message and info.value.source == "alpha"


@pytest.mark.parametrize("mode", ["drip", "drip-headers"])
def test_a_drip_in_the_body_or_the_headers_is_refused_at_the_deadline(
        server: LoopbackServer, mode: str) -> None:
    _Handler.mode = mode
    started = time.monotonic()
    with _client(server.url, deadline=2.0) as client, pytest.raises(SourceUnavailable) as info:
        client.call("eth_blockNumber")
    assert time.monotonic() - started < 4.5
    assert "deadline" in info.value.user_message


def test_esplora_drip_is_refused_at_the_deadline(server: LoopbackServer) -> None:
    _Handler.mode = "drip"
    started = time.monotonic()
    adapter = EsploraAdapter(server.url, network="regtest", name="esp", retry=ONCE,
                             deadline=2.0)
    with adapter, pytest.raises(SourceUnavailable) as info:
        adapter.head()
    assert time.monotonic() - started < 4.5
    assert "deadline" in info.value.user_message


# -- EVM quantities -------------------------------------------------------------------

def _evm(result: Any, url: str = "http://127.0.0.1:1/v3/SECRETKEY123") -> EvmAdapter:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        items = body if isinstance(body, list) else [body]
        answers = [{"jsonrpc": "2.0", "id": item["id"], "result": result} for item in items]
        return httpx.Response(200, json=answers if isinstance(body, list) else answers[0])

    return EvmAdapter(url, expected_chain_id=None, multicall_address=None, name="alpha",
                      retry=ONCE, transport=httpx.MockTransport(handle))


def test_a_4000_digit_balance_is_a_decode_error_naming_the_source() -> None:
    adapter = _evm("0x" + "f" * 4000)
    with adapter, pytest.raises(DecodeError) as info:
        adapter.balances([WALLET], [ETH], BLOCK)
    message = info.value.user_message
    assert info.value.source == "alpha" and message.startswith("source alpha returned")
    assert "SECRETKEY123" not in message and "127.0.0.1" not in message
    assert len(message) < 300


def test_uint256_bounds() -> None:
    assert hex_quantity(hex(UINT256_MAX), "v", "alpha") == UINT256_MAX
    assert hex_quantity("0x" + "0" * 63 + "1", "v", "alpha") == 1  # a padded word
    with pytest.raises(DecodeError, match="source alpha"):
        hex_quantity(hex(UINT256_MAX + 1), "v", "alpha")
    with _evm(hex(UINT256_MAX)) as adapter:
        assert adapter.balances([WALLET], [ETH], BLOCK)[0].amount == UINT256_MAX
    with _evm(hex(UINT256_MAX + 1)) as adapter, pytest.raises(DecodeError):
        adapter.balances([WALLET], [ETH], BLOCK)


def test_block_heights_and_timestamps_are_bounded() -> None:
    assert hex_quantity(hex(MAX_HEIGHT), "n", "alpha", MAX_HEIGHT) == MAX_HEIGHT
    with pytest.raises(DecodeError, match="out of range"):
        hex_quantity(hex(MAX_HEIGHT + 1), "n", "alpha", MAX_HEIGHT)
    block = {"number": hex(2**40), "hash": BLOCK.hash, "timestamp": "0x10"}
    with _evm(block) as adapter, pytest.raises(DecodeError, match=r"block\.number"):
        adapter.head()
    block = {"number": "0x10", "hash": BLOCK.hash, "timestamp": hex(2**60)}
    with _evm(block) as adapter, pytest.raises(DecodeError, match=r"block\.timestamp"):
        adapter.head()


# -- UTXO amounts ---------------------------------------------------------------------

def test_utxo_amounts_over_the_supply_are_refused() -> None:
    assert checked_sats(BTC_SUPPLY, "esp", "value", "bitcoin") == BTC_SUPPLY
    for network in ("bitcoin", "testnet", "signet", "regtest"):
        with pytest.raises(DecodeError, match="out of range"):
            checked_sats(BTC_SUPPLY + 1, "esp", "value", network)
    assert checked_sats(LTC_SUPPLY, "esp", "value", "litecoin-regtest") == LTC_SUPPLY
    with pytest.raises(DecodeError):
        checked_sats(LTC_SUPPLY + 1, "esp", "value", "litecoin")
    with pytest.raises(DecodeError, match="source core"):
        coins_to_sats("21000000.00000001", "core", "amount", network="bitcoin")
    with pytest.raises(DecodeError):
        coins_to_sats("1e4000", "core", "amount", network="bitcoin")
    assert coins_to_sats("21000000", "core", "amount", network="regtest") == BTC_SUPPLY


def test_esplora_and_core_answers_over_the_supply_are_refused() -> None:
    stats = {"funded_txo_sum": BTC_SUPPLY + 1, "spent_txo_sum": 0, "tx_count": 1}
    with pytest.raises(DecodeError, match="source esp"):
        decode_address_balance({"chain_stats": stats}, "esp", "a", "regtest")
    huge = {"funded_txo_sum": 10**4000, "spent_txo_sum": 0}
    with pytest.raises(DecodeError) as info:
        decode_address_balance({"chain_stats": huge}, "esp", "a", "bitcoin")
    assert len(info.value.user_message) < 300
    tx = {"txid": "ab" * 32, "vin": [], "vout": [
        {"scriptpubkey": "00", "value": BTC_SUPPLY + 1, "scriptpubkey_address": None}]}
    with pytest.raises(DecodeError, match="vout"):
        decode_tx(tx, "esp", "regtest", "tx")
    half = {"scriptPubKey": "00", "txid": "cd" * 32, "vout": 0, "amount": "15000000",
            "height": 1}
    scan = {"success": True, "height": 1, "bestblock": "ef" * 32,
            "unspents": [half, {**half, "vout": 1}]}
    with pytest.raises(DecodeError, match="supply"):
        decode_scan(scan, "core", "bitcoin")
    assert decode_scan(scan, "core", "litecoin").sats_by_script["00"] == 3 * 10**15


# -- headers and names ----------------------------------------------------------------

def test_headers_are_sent_and_never_shown(server: LoopbackServer) -> None:
    with _client(server.url, headers={"X-Api-Key": KEY}) as client:
        assert client.call("eth_blockNumber") == "0x10"
        assert KEY not in repr(client) and KEY not in client.source
    assert _Handler.seen_headers[-1]["x-api-key"] == KEY
    adapter = EsploraAdapter(server.url, network="regtest", name="esp", retry=ONCE,
                             headers={"Authorization": f"Bearer {KEY}"})
    with adapter, pytest.raises(SOURCE_ERRORS):
        adapter.head()
    assert _Handler.seen_headers[-1]["authorization"] == f"Bearer {KEY}"
    _Handler.mode = "drip"
    with _client(server.url, headers={"X-Api-Key": KEY}, deadline=1.0) as client, \
            pytest.raises(SourceUnavailable) as info:
        client.call("eth_blockNumber")
    assert KEY not in info.value.user_message and KEY not in repr(info.value)


def test_a_refused_connection_names_the_source_without_url_or_headers() -> None:
    url = f"http://user:pw{KEY}@127.0.0.1:9/rpc/{KEY}?apikey={KEY}"
    with JsonRpcClient(url, name="alpha", retry=ONCE, headers={"X-Key": KEY}) as client, \
            pytest.raises(SourceUnavailable) as info:
        client.call("eth_blockNumber")
    assert info.value.user_message.startswith("source alpha unavailable")
    assert KEY not in info.value.user_message and "127.0.0.1" not in info.value.user_message


@pytest.mark.parametrize(("family", "kind", "network"), [
    ("evm", "jsonrpc", None), ("utxo", "core-rpc", "regtest"), ("utxo", "esplora", "regtest")])
def test_the_source_label_is_the_name(family: str, kind: str, network: str | None) -> None:
    url = f"https://u:p@rpc.example.com/v3/{KEY}?key={KEY}"
    named = make_adapter(family, kind, url, chain_id=1, multicall=None, max_batch=10,
                         timeout=1.0, network=network, name="infura-main")
    unnamed = make_adapter(family, kind, url, chain_id=1, multicall=None, max_batch=10,
                           timeout=1.0, network=network)
    try:
        assert named.source == "infura-main"
        assert unnamed.source == "rpc.example.com" == host_name(url)
    finally:
        named.close()
        unnamed.close()


def test_the_cap_applies_per_request_not_per_client(server: LoopbackServer) -> None:
    """Many small answers in a row stay under a small cap (bytes are not accumulated)."""
    with _client(server.url, max_response_bytes=1024) as client:
        for _ in range(20):
            assert client.call("eth_blockNumber") == "0x10"
