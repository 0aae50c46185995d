"""Faults the fault-injection run (tests/integration/test_fault_injection.py) found in the
JSON-RPC client and the EVM adapter, each pinned by one test on httpx.MockTransport."""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
import pytest

from chains.errors import SourceUnavailable
from chains.evm.adapter import EvmAdapter
from chains.jsonrpc import JsonRpcClient, RetryPolicy, RpcError
from chains.types import Address, AssetRef, ChainHead

URL = "http://rpc.example.com/"
NO_WAIT = RetryPolicy(attempts=3, initial_wait=0, max_wait=0)
MULTICALL = "0xcA11bde05977b3631167028862bE2a173976CA11"
WALLET = Address("0x1000000000000000000000000000000000000001")
BLOCK = ChainHead(7, "0x" + "ab" * 32, 1_700_000_000)


def client_for(handler: Any) -> JsonRpcClient:
    return JsonRpcClient(URL, transport=httpx.MockTransport(handler), retry=NO_WAIT)


def error_object(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def test_json_nested_past_the_parser_limit_is_a_source_error() -> None:
    """A 200 body of arrays nested deeper than the JSON parser's recursion limit is retried
    and then raises SourceUnavailable, never RecursionError (it crashed the daemon)."""
    nested = b"[" * 100_000 + b"]" * 100_000
    client = client_for(lambda r: httpx.Response(200, content=nested))
    with pytest.raises(SourceUnavailable, match="nested too deeply"):
        client.batch([("eth_blockNumber", [])])
    assert client.requests_made == 3


def test_clients_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating a client loads no CA bundle once one client exists: the daemon creates one
    per source per cycle, and loading the bundle took ~50 ms of CPU each time."""
    JsonRpcClient(URL).close()
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    for _ in range(5):
        JsonRpcClient(URL).close()
    assert loads == []


@pytest.mark.parametrize("error", [
    (429, "Your app has exceeded its compute units per second capacity"),
    (-32005, "daily request count exceeded, request rate limited"),
    (-32007, "15/second request limit reached - reduce calls per second"),
])
def test_rate_limit_error_body_is_retried_then_fails_over(error: tuple[int, str]) -> None:
    """A JSON-RPC rate-limit error answering a call with HTTP 200 is retried like HTTP 429,
    then raises SourceUnavailable saying so (the service then tries the next source)."""
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=error_object(json.loads(request.content)["id"], *error))

    client = client_for(handle)
    with pytest.raises(SourceUnavailable, match="rate limited") as caught:
        client.call("eth_getLogs", [{}])
    assert not hasattr(caught.value, "error")  # not an answer about the request
    assert client.requests_made == 3


@pytest.mark.parametrize("shape", ["one object", "one per item"])
def test_rate_limited_batch_is_not_mistaken_for_a_batch_size_cap(shape: str) -> None:
    """A batch answered only by rate-limit errors (one object for all, or one per item) is
    retried and then raises SourceUnavailable; the batch size is kept (a cap is not)."""
    def handle(request: httpx.Request) -> httpx.Response:
        ids = [item["id"] for item in json.loads(request.content)]
        if shape == "one object":
            return httpx.Response(200, json=error_object(None, 429, "Too Many Requests"))
        return httpx.Response(200, json=[error_object(i, 429, "Too Many Requests")
                                         for i in ids])

    client = client_for(handle)
    with pytest.raises(SourceUnavailable, match="rate limited"):
        client.batch([("eth_getBlockByNumber", [hex(n), True]) for n in range(8)])
    assert client.batch_size == 500 and client.requests_made == 3


def test_one_rate_limited_item_is_returned_marked() -> None:
    """One throttled item among answers comes back as an RpcError marked rate_limited."""
    def handle(request: httpx.Request) -> httpx.Response:
        first, second = json.loads(request.content)
        return httpx.Response(200, json=[{"jsonrpc": "2.0", "id": first["id"], "result": "0x1"},
                                         error_object(second["id"], -32007,
                                                      "request rate exceeded")])

    results = client_for(handle).batch([("a", []), ("b", [])])
    assert results[0] == "0x1"
    assert isinstance(results[1], RpcError) and results[1].rate_limited
    assert not RpcError(-32000, "execution reverted").rate_limited
    assert not RpcError(-32005, "query returned more than 10000 results").rate_limited


@pytest.mark.parametrize("multicall", [MULTICALL, None])
def test_a_throttled_balance_read_fails_over_instead_of_a_read_error(
        multicall: str | None) -> None:
    """A balance call the source answers with a rate-limit error (among other answers) makes
    the source unavailable, so the service fails over to the next one: it is neither a
    per-wallet read error nor, with Multicall3, split and re-asked call by call."""
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body[0]["method"] == "eth_getCode":  # Multicall3 is deployed
            return httpx.Response(200, json=[{"jsonrpc": "2.0", "id": body[0]["id"],
                                              "result": "0x6001"}])
        throttled = error_object(body[0]["id"], -32000, "rate limit exceeded, retry in 1s")
        return httpx.Response(200, json=[throttled, *[
            {"jsonrpc": "2.0", "id": item["id"], "result": "0x" + "00" * 32}
            for item in body[1:]]])

    # pinning chosen: the reads themselves are throttled (the probe is the next test)
    adapter = EvmAdapter(URL, expected_chain_id=None, multicall_address=multicall,
                         calls_per_multicall=1, transport=httpx.MockTransport(handle),
                         retry=NO_WAIT, pinning="hash")
    assets = [AssetRef("ETH", 18), AssetRef("USDC", 6, Address(MULTICALL))]
    with pytest.raises(SourceUnavailable, match="rate limited"):
        adapter.balances([WALLET], assets, BLOCK)
    assert adapter.requests_made == (2 if multicall else 1)
    assert adapter.features.pinning is None  # probed again next time


def test_a_throttled_pinning_probe_fails_over_and_chooses_nothing() -> None:
    """The pinning probe's batch answered with a rate-limit error makes the source
    unavailable (after the client's retries): the throttle is not taken for a refusal of
    the call, and no pinning is remembered from it."""
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        items = body if isinstance(body, list) else [body]
        return httpx.Response(200, json=[
            error_object(item["id"], -32005, "rate limit exceeded") for item in items])

    adapter = EvmAdapter(URL, expected_chain_id=None, multicall_address=MULTICALL,
                         transport=httpx.MockTransport(handle), retry=NO_WAIT)
    with pytest.raises(SourceUnavailable, match="rate limited"):
        adapter.balances([WALLET], [AssetRef("ETH", 18)], BLOCK)
    assert adapter.requests_made == NO_WAIT.attempts  # the probe batch, retried
    assert adapter.features.pinning is None
    assert adapter.features.multicall is None


def test_an_empty_aggregate3_reply_reads_the_balances_directly() -> None:
    """An aggregate3 eth_call answered with no data ("0x", what a call to an address
    without code returns: Multicall3 not there at the pinned block, e.g. a node whose
    state lost it after a reorg) is neither a malformed answer that fails the cycle nor a
    zero balance: the pairs are read directly in the same call, and Multicall3 is probed
    again next time."""
    sent: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        items = body if isinstance(body, list) else [body]
        replies = []
        for item in items:
            sent.append(item["method"])
            result = {"eth_getCode": "0x6001", "eth_call": "0x",
                      "eth_getBalance": hex(5 * 10**18)}[item["method"]]
            replies.append({"jsonrpc": "2.0", "id": item["id"], "result": result})
        return httpx.Response(200, json=replies if isinstance(body, list) else replies[0])

    adapter = EvmAdapter(URL, expected_chain_id=None, multicall_address=MULTICALL,
                         transport=httpx.MockTransport(handle), retry=NO_WAIT,
                         pinning="hash")
    (seen,) = adapter.balances([WALLET], [AssetRef("ETH", 18)], BLOCK)
    assert seen.amount == 5 * 10**18 and seen.error is None
    assert sent == ["eth_getCode", "eth_call", "eth_getBalance"]
    assert adapter.features.multicall is None


def test_http_429_retry_after_is_honoured() -> None:
    """A 429 with `Retry-After: 1` is retried no sooner than one second later (the
    exponential backoff alone would wait 0.2 s)."""
    import json
    import time

    import httpx

    from chains.jsonrpc import JsonRpcClient, RetryPolicy

    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return httpx.Response(429, headers={"Retry-After": "1"}, text="slow down")
        (call,) = json.loads(request.read())
        return httpx.Response(200, json=[{"jsonrpc": "2.0", "id": call["id"],
                                          "result": "0x1"}])

    client = JsonRpcClient("http://rpc.example", retry=RetryPolicy(attempts=3),
                           transport=httpx.MockTransport(handler))
    assert client.batch([("eth_chainId", [])]) == ["0x1"]
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.95
