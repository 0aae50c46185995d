"""EvmAdapter against a real anvil node: chain id, heads, pinned balance reads."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chains.errors import ChainMismatch, SourceUnavailable
from chains.evm.adapter import EvmAdapter, Pinning, SourceFeatures
from chains.evm.devnet import (
    ANVIL_CHAIN_ID,
    DEV_ACCOUNT,
    AnvilNode,
    call_data,
    deploy_contract,
    deploy_test_token,
    free_port,
    install_multicall,
    mint,
    mint_many,
    random_wallets,
    send_eth,
    set_bad_token_mode,
    set_balances,
    transfer_token,
)
from chains.jsonrpc import RetryPolicy
from chains.types import Address, AssetRef, BalanceObservation, ChainHead

pytestmark = pytest.mark.anvil

ETH = AssetRef("ETH", 18)
NO_WAIT = RetryPolicy(attempts=2, initial_wait=0, max_wait=0)
SECRETS = ("hunter2", "s3cr3t")


@dataclass(frozen=True)
class Funded:
    """Wallets holding ETH and a TestToken on the anvil node (no Multicall3 yet)."""

    wallets: list[Address]
    token: AssetRef


def fund(node: AnvilNode, count: int) -> Funded:
    """Deploy a token and give `count` wallets distinct ETH and token balances."""
    token = deploy_test_token(node)
    wallets = random_wallets(count)
    set_balances(node, {w: 10**18 + i for i, w in enumerate(wallets)})
    mint_many(node, token, wallets, [1000 * i + 1 for i in range(count)])
    return Funded(wallets, AssetRef("TUSD", 6, token))


@pytest.fixture
def funded(anvil_node: AnvilNode) -> Funded:
    return fund(anvil_node, 150)


def make_adapter(url: str, **kwargs: Any) -> EvmAdapter:
    kwargs.setdefault("expected_chain_id", ANVIL_CHAIN_ID)
    kwargs.setdefault("retry", NO_WAIT)
    return EvmAdapter(url, **kwargs)


def amounts(observations: Sequence[BalanceObservation]) -> dict[tuple[str, str], int | None]:
    return {(o.address, o.asset.symbol): o.amount for o in observations}


def per_wallet_reads(
    node: AnvilNode, wallets: Sequence[Address], assets: Sequence[AssetRef], block: ChainHead
) -> dict[tuple[str, str], int | None]:
    """Read each balance with its own JSON-RPC call, pinned to `block` by number."""
    at = hex(block.height)
    reads: dict[tuple[str, str], int | None] = {}
    for wallet in wallets:
        for asset in assets:
            if asset.contract is None:
                reads[(wallet, asset.symbol)] = int(node.call("eth_getBalance", [wallet, at]), 16)
                continue
            data = "0x" + call_data("balanceOf(address)", ["address"], [wallet]).hex()
            reply = node.call("eth_call", [{"to": asset.contract, "data": data}, at])
            reads[(wallet, asset.symbol)] = int(reply, 16)
    return reads


class CappedTransport(httpx.BaseTransport):
    """Forwards to the node but refuses JSON-RPC batches larger than `cap`, in one of
    three provider styles: HTTP 413, one error object, or answering only `cap` items."""

    def __init__(self, cap: int, style: str) -> None:
        self._inner = httpx.HTTPTransport()
        self._cap = cap
        self._style = style
        self.refusals = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if not isinstance(body, list) or len(body) <= self._cap:
            return self._inner.handle_request(request)
        self.refusals += 1
        if self._style == "413":
            return httpx.Response(413, text="request entity too large")
        if self._style == "object":
            error = {"code": -32600, "message": f"batch limit {self._cap} exceeded"}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": None, "error": error})
        content = json.dumps(body[: self._cap]).encode()
        headers = {"Content-Type": "application/json"}
        return self._inner.handle_request(
            httpx.Request("POST", request.url, headers=headers, content=content)
        )

    def close(self) -> None:
        self._inner.close()


def test_check_chain_id_accepts_matching_source(anvil: AnvilNode) -> None:
    """check_chain_id returns the chain id when it is the expected one."""
    with make_adapter(anvil.url) as adapter:
        assert adapter.chain_id() == ANVIL_CHAIN_ID
        assert adapter.check_chain_id() == ANVIL_CHAIN_ID


def test_chain_mismatch_names_redacted_source(anvil: AnvilNode) -> None:
    """A source serving another chain raises ChainMismatch naming the source without secrets."""
    url = anvil.url.replace("http://", "http://alice:hunter2@") + "/?apikey=s3cr3t"
    with make_adapter(url, expected_chain_id=1) as adapter, pytest.raises(ChainMismatch) as caught:
        adapter.check_chain_id()
    message = caught.value.user_message
    assert "127.0.0.1" in message and "31337" in message
    assert not any(secret in message for secret in SECRETS)


def test_head_and_block_at_agree(anvil_node: AnvilNode) -> None:
    """head() is the newest block and block_at(height) returns the same block."""
    anvil_node.mine(3)
    with make_adapter(anvil_node.url) as adapter:
        head = adapter.head()
        assert head.height == anvil_node.block_number()
        assert head.timestamp is not None and head.timestamp > 0
        assert adapter.block_at(head.height) == head
        assert adapter.block_at(head.height - 1).hash != head.hash


def test_block_at_future_height_raises(anvil: AnvilNode) -> None:
    """Asking for a block beyond the head raises SourceUnavailable."""
    with make_adapter(anvil.url) as adapter, pytest.raises(SourceUnavailable):
        adapter.block_at(anvil.block_number() + 1000)


def test_multicall_reads_equal_per_wallet_reads(anvil_node: AnvilNode, funded: Funded) -> None:
    """With Multicall3, native and token balances of many wallets equal per-wallet reads,
    in two HTTP requests (code check, then one batch of aggregate3 calls) once the source's
    pinning is probed (three requests, once per source)."""
    install_multicall(anvil_node)
    assets = [ETH, funded.token]
    with make_adapter(anvil_node.url, calls_per_multicall=64) as adapter:
        head = adapter.head()
        before = adapter.requests_made
        observations = adapter.balances(funded.wallets, assets, head)
        assert adapter.requests_made - before == 3 + 2
        assert adapter.features.probes == 1
        before = adapter.requests_made
        assert adapter.balances(funded.wallets, assets, head) == observations
        assert adapter.requests_made - before == 1  # nothing probed again
    assert len(observations) == len(funded.wallets) * 2
    assert all(o.error is None and o.block == head for o in observations)
    assert all(isinstance(o.amount, int) for o in observations)
    assert amounts(observations) == per_wallet_reads(anvil_node, funded.wallets, assets, head)


def test_a_large_read_is_taken_a_window_at_a_time(anvil_node: AnvilNode, funded: Funded,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Balances are read a window of wallets at a time (bounded memory whatever the count):
    with a window of 16 pairs (8 wallets of two assets, four aggregate3 calls of 4), 150
    wallets take 19 windows, one HTTP request each, and read exactly what one unwindowed
    read and per-wallet reads do."""
    install_multicall(anvil_node)
    assets = [ETH, funded.token]
    with make_adapter(anvil_node.url, calls_per_multicall=4) as adapter:
        head = adapter.head()
        whole = adapter.balances(funded.wallets, assets, head)
        monkeypatch.setattr("chains.evm.adapter.WINDOW_PAIRS", 16)
        before = adapter.requests_made
        windowed = adapter.balances(funded.wallets, assets, head)
        assert adapter.requests_made - before == -(-150 // 8) == 19
    assert windowed == whole
    assert [(o.address, o.asset) for o in windowed] == \
        [(w, a) for w in funded.wallets for a in assets]
    assert amounts(windowed) == per_wallet_reads(anvil_node, funded.wallets, assets, head)


@pytest.mark.parametrize("multicall_address", [None, "0xcA11bde05977b3631167028862bE2a173976CA11"])
def test_fallback_without_multicall_equals_per_wallet_reads(
    anvil_node: AnvilNode, funded: Funded, multicall_address: str | None
) -> None:
    """Without Multicall3 (disabled, or no code at its address) batched plain reads give the
    same balances as per-wallet reads."""
    assets = [ETH, funded.token]
    adapter = make_adapter(anvil_node.url, multicall_address=multicall_address, max_batch=100)
    with adapter:
        head = adapter.head()
        observations = adapter.balances(funded.wallets, assets, head)
        # head, pinning probe, code check, 300 reads (+2 proofs when pinned by number) / 100
        assert adapter.requests_made <= 1 + 3 + 1 + 4
    assert all(o.error is None for o in observations)
    assert amounts(observations) == per_wallet_reads(anvil_node, funded.wallets, assets, head)


@pytest.mark.parametrize("with_multicall", [True, False])
def test_reads_are_pinned_to_the_given_block(
    anvil_node: AnvilNode, funded: Funded, with_multicall: bool
) -> None:
    """Balances read at an older block are that block's, even after later transfers."""
    if with_multicall:
        install_multicall(anvil_node)
    wallet = funded.wallets[0]
    assets = [ETH, funded.token]
    with make_adapter(anvil_node.url) as adapter:
        old = adapter.head()
        old_values = amounts(adapter.balances([wallet], assets, old))
        send_eth(anvil_node, wallet, 5)
        assert funded.token.contract is not None
        mint(anvil_node, funded.token.contract, DEV_ACCOUNT, 7)
        transfer_token(anvil_node, funded.token.contract, wallet, 7)
        new = adapter.head()
        assert new.height > old.height
        assert amounts(adapter.balances([wallet], assets, old)) == old_values
        new_values = amounts(adapter.balances([wallet], assets, new))
    assert new_values[(wallet, "ETH")] == (old_values[(wallet, "ETH")] or 0) + 5
    assert new_values[(wallet, "TUSD")] == (old_values[(wallet, "TUSD")] or 0) + 7


@pytest.mark.parametrize("with_multicall", [True, False])
def test_misbehaving_token_fails_only_its_own_reads(
    anvil_node: AnvilNode, funded: Funded, with_multicall: bool
) -> None:
    """A token that reverts, returns short or long data, or burns all gas yields an error
    for that (wallet, asset) only; every other balance is still read correctly."""
    if with_multicall:
        install_multicall(anvil_node)
    bad_token = deploy_contract(anvil_node, "BadToken")
    wallets = funded.wallets[:40]
    modes = {wallet: index % 5 for index, wallet in enumerate(wallets)}
    for wallet, mode in modes.items():
        set_bad_token_mode(anvil_node, bad_token, wallet, 42, mode)
    bad = AssetRef("BAD", 0, bad_token)
    with make_adapter(anvil_node.url) as adapter:
        head = adapter.head()
        observations = adapter.balances(wallets, [ETH, funded.token, bad], head)
    expected = per_wallet_reads(anvil_node, wallets, [ETH, funded.token], head)
    for o in observations:
        if o.asset != bad:
            assert o.error is None and o.amount == expected[(o.address, o.asset.symbol)]
        elif modes[o.address] == 0:
            assert o.error is None and o.amount == 42
        else:
            assert o.amount is None and o.error, (modes[o.address], o)
    errors = {modes[o.address]: o.error for o in observations if o.error}
    assert "BadToken: no balance for you" in str(errors[1])
    assert "16 bytes" in str(errors[2]) and "64 bytes" in str(errors[3])


def test_out_of_gas_aggregate_is_split_down_to_single_calls(
    anvil_node: AnvilNode, funded: Funded
) -> None:
    """When gas-burning calls make a whole aggregate3 fail, it is split in halves until
    the good calls succeed and only the burning (wallet, asset) pairs carry errors."""
    install_multicall(anvil_node)
    bad_token = deploy_contract(anvil_node, "BadToken")
    wallets = funded.wallets[:64]
    burners = set(wallets[::8])
    for wallet in wallets:
        set_bad_token_mode(anvil_node, bad_token, wallet, 9, 4 if wallet in burners else 0)
    bad = AssetRef("BAD", 0, bad_token)
    with make_adapter(anvil_node.url) as adapter:
        head = adapter.head()
        observations = adapter.balances(wallets, [bad], head)
        assert adapter.requests_made > 3, "expected at least one split round"
    failed = {o.address for o in observations if o.error}
    assert failed == burners
    assert all(o.amount == 9 for o in observations if o.address not in burners)


@pytest.mark.parametrize("style", ["413", "object", "truncate"])
@pytest.mark.parametrize("with_multicall", [True, False])
def test_batch_capped_provider_still_reads_everything(
    anvil_node: AnvilNode, funded: Funded, style: str, with_multicall: bool
) -> None:
    """A provider that refuses batches above 5 requests still yields every balance, and the
    adapter keeps the smaller batch size instead of being refused again."""
    if with_multicall:
        install_multicall(anvil_node)
    wallets = funded.wallets[:60]
    assets = [ETH, funded.token]
    transport = CappedTransport(cap=5, style=style)
    with make_adapter(anvil_node.url, calls_per_multicall=4, transport=transport) as adapter:
        head = adapter.head()
        first = adapter.balances(wallets, assets, head)
        refusals = transport.refusals
        second = adapter.balances(wallets, assets, head)
    assert refusals > 0 and transport.refusals == refusals
    assert all(o.error is None for o in first)
    assert amounts(first) == amounts(second) == per_wallet_reads(anvil_node, wallets, assets, head)


def test_dead_url_raises_redacted_source_unavailable() -> None:
    """A URL nobody listens on raises SourceUnavailable whose message has no secrets."""
    url = f"http://alice:hunter2@127.0.0.1:{free_port()}/rpc?apikey=s3cr3t"
    with make_adapter(url, timeout=2.0) as adapter, pytest.raises(SourceUnavailable) as caught:
        adapter.head()
    message = caught.value.user_message
    assert "127.0.0.1" in message
    assert not any(secret in message for secret in SECRETS)


def test_unknown_block_hash_raises_source_unavailable(
    anvil_node: AnvilNode, funded: Funded
) -> None:
    """Reading at a block hash the node does not know raises SourceUnavailable."""
    install_multicall(anvil_node)
    ghost = ChainHead(height=1, hash="0x" + "ab" * 32)
    for multicall_address in ("0xcA11bde05977b3631167028862bE2a173976CA11", None):
        with make_adapter(anvil_node.url, multicall_address=multicall_address) as adapter:
            adapter.head()
            with pytest.raises(SourceUnavailable, match="unavailable"):
                adapter.balances(funded.wallets[:3], [ETH, funded.token], ghost)


def test_2000_wallets_cost_few_http_requests(anvil_node: AnvilNode) -> None:
    """Native and token balances of 2,000 wallets (4,000 reads) take at most 2 HTTP requests
    (plus the source's one-time pinning probe, 3 requests)."""
    funded = fund(anvil_node, 2000)
    install_multicall(anvil_node)
    with make_adapter(anvil_node.url) as adapter:
        head = adapter.head()
        before = adapter.requests_made
        observations = adapter.balances(funded.wallets, [ETH, funded.token], head)
        assert adapter.requests_made - before <= 3 + 2
    assert len(observations) == 4000
    assert all(o.error is None for o in observations)
    assert observations[-1].amount == 1000 * 1999 + 1


def test_malformed_block_hash_is_rejected_before_any_request() -> None:
    """balances() with a block whose hash is not 32 bytes of hex raises ValueError at once."""
    with make_adapter(f"http://127.0.0.1:{free_port()}") as adapter:
        with pytest.raises(ValueError, match="32-byte block hash"):
            adapter.balances([Address("0x" + "11" * 20)], [ETH], ChainHead(1, "0x1234"))
        assert adapter.requests_made == 0


class HashRefusingTransport(httpx.BaseTransport):
    """Forwards to the node, but answers any request with an EIP-1898 block-hash parameter
    as ganache 7.9 does (`-32700 Cannot wrap a "object"`), or, with `delay`, answers it
    that many seconds late (a node that resolves hashes slowly). Counts such requests."""

    def __init__(self, delay: float | None = None) -> None:
        self._inner = httpx.HTTPTransport()
        self._delay = delay
        self.hash_requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if b'"blockHash"' not in request.content:
            return self._inner.handle_request(request)
        self.hash_requests += 1
        if self._delay is not None:
            time.sleep(self._delay)
            return self._inner.handle_request(request)
        error = {"code": -32700, "message": 'Cannot wrap a "object" as a json-rpc type'}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": None, "error": error})

    def close(self) -> None:
        self._inner.close()


@pytest.mark.parametrize("with_multicall", [True, False])
@pytest.mark.parametrize("pinning", ["hash", "number"])
def test_hash_and_number_pinning_read_the_same(
    anvil_node: AnvilNode, funded: Funded, pinning: Pinning, with_multicall: bool
) -> None:
    """Reads pinned by number (proven by the block's hash) equal per-wallet reads at the
    block, with and without Multicall3, and cost one request once probed."""
    if with_multicall:
        install_multicall(anvil_node)
    assets = [ETH, funded.token]
    with make_adapter(anvil_node.url, pinning=pinning) as adapter:
        head = adapter.head()
        adapter.balances(funded.wallets[:1], assets, head)
        before = adapter.requests_made
        observations = adapter.balances(funded.wallets, assets, head)
        assert adapter.requests_made - before == 1
        assert adapter.pinning == pinning and adapter.features.probes == 0
    assert all(o.error is None and o.block == head for o in observations)
    assert amounts(observations) == per_wallet_reads(anvil_node, funded.wallets, assets, head)


@pytest.mark.parametrize("with_multicall", [True, False])
def test_number_pinned_read_of_a_replaced_block_is_refused(
    anvil_node: AnvilNode, funded: Funded, with_multicall: bool
) -> None:
    """Attack: the block read by number is no longer the pinned one (a reorg between the
    head and the read). The proof (the hash at that number, read before and after in the
    same batch) differs, so the read is refused, naming both hashes: never balances of
    another block reported as the pinned block's."""
    if with_multicall:
        install_multicall(anvil_node)
    snapshot = anvil_node.snapshot()
    anvil_node.mine(1)
    with make_adapter(anvil_node.url, pinning="number") as adapter:
        pinned = adapter.head()
        anvil_node.revert(snapshot)
        anvil_node.call("evm_setNextBlockTimestamp", [(pinned.timestamp or 0) + 7])
        anvil_node.mine(1)
        replaced = adapter.block_at(pinned.height)
        assert replaced.hash != pinned.hash
        with pytest.raises(SourceUnavailable, match="changed during the read") as caught:
            adapter.balances(funded.wallets[:3], [ETH, funded.token], pinned)
    assert pinned.hash in caught.value.user_message
    assert replaced.hash in caught.value.user_message


def test_probe_chooses_number_where_block_hash_params_are_refused(
    anvil_node: AnvilNode, funded: Funded
) -> None:
    """A node refusing EIP-1898 block-hash parameters (ganache 7.9's answer) is probed once
    and then read by number: every balance is right and no later read carries a hash."""
    transport = HashRefusingTransport()
    features = SourceFeatures()
    assets = [ETH, funded.token]
    with make_adapter(anvil_node.url, transport=transport, features=features) as adapter:
        head = adapter.head()
        observations = adapter.balances(funded.wallets, assets, head)
    assert adapter.pinning == "number" and features.probes == 1
    assert transport.hash_requests == 1  # the probe's single call
    assert all(o.error is None for o in observations)
    assert amounts(observations) == per_wallet_reads(anvil_node, funded.wallets, assets, head)
    with make_adapter(anvil_node.url, transport=transport, features=features) as again:
        again.balances(funded.wallets, assets, again.head())
    assert features.probes == 1 and transport.hash_requests == 1  # remembered per source


def test_probe_chooses_number_where_block_hash_reads_are_slow(
    anvil_node: AnvilNode, funded: Funded
) -> None:
    """A node that answers hash-pinned reads far slower than number-pinned ones (anvil on a
    long chain: measured ~130x) is read by number."""
    transport = HashRefusingTransport(delay=0.05)
    with make_adapter(anvil_node.url, transport=transport) as adapter:
        head = adapter.head()
        adapter.balances(funded.wallets, [ETH], head)
    assert adapter.pinning == "number"
