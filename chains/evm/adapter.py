"""The EVM chain adapter: heads and balances over one JSON-RPC endpoint.

Every balance read is pinned to one block, so all wallets and assets of a cycle are
observed at the same state. A source is probed once (`SourceFeatures`, shared by every
adapter of the same source in a process) for how to pin:
- `hash`: EIP-1898 `{"blockHash": ...}` on every call (the node resolves the hash);
- `number`: the block's number on every call, proven by reading the block's hash at
  that number in the same batch before and after the reads: both must equal the
  pinned hash, else the read is retried once and then refused (SourceUnavailable).
  Chosen where block-hash parameters are refused (ganache 7) or answered much slower
  than numbers (reported once for anvil, about 130x; not seen on anvil 1.7.1 here).
Reads never cost a round trip per wallet: with Multicall3 deployed, up to
`calls_per_multicall` balance calls are packed into one `aggregate3` eth_call and many
such eth_calls travel in one JSON-RPC batch; without it, plain `eth_getBalance` /
`balanceOf` calls are batched.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import httpx
from eth_utils.address import to_checksum_address

from chains.errors import ChainMismatch, DecodeError, InvalidAddress, SourceUnavailable
from chains.evm.decode import ETHEREUM_FEES, FeeRules
from chains.evm.fields import hex_quantity
from chains.evm.multicall import (
    Call,
    CallResult,
    balance_of_call,
    encode_aggregate3,
    get_eth_balance_call,
)
from chains.evm.replies import (
    CannotRun,
    NoCode,
    Outcome,
    decode_aggregate_reply,
    direct_outcome,
    is_hash,
    observation_of,
    outcome_of,
    proof_hash,
    raise_if_source_failed,
)
from chains.evm.scan import RangeScanner
from chains.http import DEFAULT_DEADLINE, DEFAULT_MAX_RESPONSE_BYTES
from chains.jsonrpc import JsonRpcClient, Request, RetryPolicy, RpcError
from chains.limits import MAX_HEIGHT, MAX_TIMESTAMP, UINT256_MAX
from chains.types import (
    Address,
    AssetRef,
    BalanceObservation,
    ChainHead,
    ScanResult,
    TraceMode,
    TrackedOutput,
)

CANONICAL_MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
"""Multicall3's address on mainnet and most EVM chains (same deployer, same nonce)."""

Pinning: TypeAlias = Literal["hash", "number"]
PROBE_CALLS = 16
"""Calls per form in the pinning probe (one batch each)."""
SLOW_HASH_RATIO = 4.0
"""Hash-pinned calls this many times slower than number-pinned ones choose `number`."""
SLOW_HASH_FLOOR = 0.02
"""...and only when the hash-pinned probe batch took at least this many seconds."""
_ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
WINDOW_PAIRS = 32_768
"""A balance read holds the requests and replies of at most about this many (wallet,
asset) pairs at a time (10,000 wallets of two assets: one window)."""


@dataclass
class SourceFeatures:
    """What a source supports, probed once and then remembered for every adapter on the
    same source in the process (None: not probed yet). A feature whose use fails is
    forgotten, so that it is probed again."""

    pinning: Pinning | None = None
    multicall: bool | None = None
    trace_mode: TraceMode | None = None
    probes: int = 0
    """How many probes were run (for tests and metrics)."""


class EvmAdapter:
    """Reads one EVM chain through one JSON-RPC source (implements ChainAdapter)."""

    def __init__(
        self,
        url: str,
        *,
        expected_chain_id: int | None,
        multicall_address: str | None = CANONICAL_MULTICALL3,
        max_batch: int = 500,
        calls_per_multicall: int = 500,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float = DEFAULT_DEADLINE,
        features: SourceFeatures | None = None,
        pinning: Pinning | None = None,
        fees: FeeRules = ETHEREUM_FEES,
    ) -> None:
        """`name` labels the source everywhere (default: the URL's host); `headers` go with
        every request; `max_response_bytes` and `deadline` bound each response;
        `features`: what earlier adapters on this source found (shared and updated);
        `pinning` forces a pinning instead of probing it; `fees`: the chain's fee model."""
        if calls_per_multicall < 1:
            raise ValueError("calls_per_multicall must be at least 1")
        self._client = JsonRpcClient(
            url,
            timeout=timeout,
            max_batch=max_batch,
            retry=retry,
            transport=transport,
            name=name,
            headers=headers,
            max_response_bytes=max_response_bytes,
            deadline=deadline,
        )
        self._expected_chain_id = expected_chain_id
        self._multicall = to_checksum_address(multicall_address) if multicall_address else None
        self._calls_per_multicall = calls_per_multicall
        self.features = features if features is not None else SourceFeatures()
        if pinning is not None:
            self.features.pinning = pinning
        if not self._multicall:
            self.features.multicall = False
        self._scanner = RangeScanner(self._client, self.features, fees)

    @property
    def pinning(self) -> Pinning | None:
        """How reads are pinned to a block on this source (None until first probed)."""
        return self.features.pinning

    @property
    def source(self) -> str:
        """The source's name, safe to log (never its URL)."""
        return self._client.source

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (retries included)."""
        return self._client.requests_made

    def scan(self, watched: Collection[Address], start: int, end: int,
             tracked: Collection[TrackedOutput] = ()) -> ScanResult:
        """Return the transfers and fees of `watched` in blocks start..end (see
        `chains.evm.scan`). Raises SourceUnavailable, DecodeError."""
        return self._scanner.scan(watched, start, end)

    def close(self) -> None:
        """Release connections."""
        self._client.close()

    def __enter__(self) -> EvmAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def chain_id(self) -> int:
        """Return the chain id the source serves. Raises SourceUnavailable, DecodeError."""
        return self._quantity(self._client.call("eth_chainId", []), "chain id")

    def check_chain_id(self) -> int:
        """Return the source's chain id.

        Raises ChainMismatch (naming the source) when it differs from the
        expected chain id; SourceUnavailable, DecodeError when it cannot be read.
        """
        actual = self.chain_id()
        expected = self._expected_chain_id
        if expected is not None and actual != expected:
            raise ChainMismatch(
                f"source {self.source} serves chain id {actual}, expected {expected}"
            )
        return actual

    def head(self) -> ChainHead:
        """Return the newest block. Raises SourceUnavailable, DecodeError."""
        return self._block("latest")

    def block_at(self, height: int) -> ChainHead:
        """Return the block at `height`. Raises SourceUnavailable (also when it does not
        exist yet), DecodeError."""
        if height < 0:
            raise ValueError("height must not be negative")
        return self._block(hex(height))

    def balances(
        self,
        addresses: Sequence[Address],
        assets: Sequence[AssetRef],
        block: ChainHead,
    ) -> list[BalanceObservation]:
        """Return one observation per (address, asset), address-major, all read at `block`.

        A balance that cannot be read (a token that reverts or returns malformed data)
        carries an `error`. Raises SourceUnavailable when the source or the block is
        unavailable, DecodeError when Multicall3's answer as a whole does not parse,
        InvalidAddress for an address or contract that is not 20 bytes of hex, ValueError
        when `block.hash` is not a 32-byte hex hash.
        """
        if not is_hash(block.hash):
            raise ValueError(f"not a 32-byte block hash: {block.hash!r}")
        if not addresses or not assets:
            return []
        self._probe_pinning(block)
        observations: list[BalanceObservation] = []
        # A window of wallets at a time: the requests, the replies and their decoding
        # are held for one window only, so a million wallets cost no more memory than a
        # window's worth; a window is whole aggregate3 calls.
        per_window = max(self._calls_per_multicall,
                         WINDOW_PAIRS // self._calls_per_multicall * self._calls_per_multicall)
        window = max(1, per_window // len(assets))
        for start in range(0, len(addresses), window):
            pairs = [(address, asset) for address in addresses[start:start + window]
                     for asset in assets]
            try:
                outcomes = None
                if self._multicall_ready(block):
                    outcomes = self._read_multicall(pairs, block)
                if outcomes is None:
                    outcomes = self._read_direct(pairs, block)
            except (SourceUnavailable, DecodeError):
                self.features.multicall = None if self._multicall else False
                self.features.pinning = None  # probed again: the source may have changed
                raise
            observations += [
                observation_of(address, asset, block, outcome, self.source)
                for (address, asset), outcome in zip(pairs, outcomes, strict=True)
            ]
        return observations

    # -- blocks -------------------------------------------------------------------

    def _block(self, tag: str) -> ChainHead:
        raw = self._client.call("eth_getBlockByNumber", [tag, False])
        if raw is None:
            raise SourceUnavailable(self.source, f"no block {tag} yet")
        if not isinstance(raw, dict):
            raise DecodeError(self.source, "block", "not a JSON object")
        block_hash = raw.get("hash")
        if not is_hash(block_hash):
            raise DecodeError(self.source, "block.hash", f"not a 32-byte hex hash: {block_hash!r}")
        return ChainHead(
            height=self._quantity(raw.get("number"), "block.number", MAX_HEIGHT),
            hash=str(block_hash),
            timestamp=self._quantity(raw.get("timestamp"), "block.timestamp", MAX_TIMESTAMP),
        )

    def _quantity(self, value: Any, field: str, limit: int = UINT256_MAX) -> int:
        """Return a JSON-RPC hex quantity ≤ `limit` as int. Raises DecodeError naming
        `field` and the source."""
        return hex_quantity(value, field, self.source, limit)

    # -- pinning ------------------------------------------------------------------

    def _probe_pinning(self, block: ChainHead) -> None:
        """Choose how to pin reads on this source, once: `number` when the source refuses
        EIP-1898 block-hash parameters or answers them much slower than numbers."""
        if self.features.pinning is not None:
            return
        self.features.probes += 1
        number, by_hash = hex(block.height), {"blockHash": block.hash}
        started = time.monotonic()
        for reply in self._client.batch([("eth_getBalance", [_ZERO_ADDRESS, number])]
                                        * PROBE_CALLS):
            if isinstance(reply, RpcError):
                raise_if_source_failed(reply, self.source)
                # the call itself is refused whatever the pinning: keep hash pinning, and
                # each read will say why it failed
                self.features.pinning = "hash"
                return
        by_number_seconds = time.monotonic() - started
        try:  # alone first: a refused batch would shrink the client's batch size
            self._client.call("eth_getBalance", [_ZERO_ADDRESS, by_hash])
        except SourceUnavailable:  # e.g. ganache 7: -32700 Cannot wrap a "object"
            self.features.pinning = "number"  # always correct: the reads are proven
            return
        started = time.monotonic()
        replies = self._client.batch([("eth_getBalance", [_ZERO_ADDRESS, by_hash])]
                                     * PROBE_CALLS)
        by_hash_seconds = time.monotonic() - started
        slow = by_hash_seconds >= SLOW_HASH_FLOOR and \
            by_hash_seconds > SLOW_HASH_RATIO * by_number_seconds
        refused = any(isinstance(r, RpcError) for r in replies)
        self.features.pinning = "number" if refused or slow else "hash"

    def _pinned_batch(self, requests: Sequence[Request], block: ChainHead) -> list[Any]:
        """Send `requests` (pinned with `_param(block)`) in JSON-RPC batches. Pinned by
        number, the block's hash is read in the same batches before and after; both must
        be `block`'s, else the batch is sent once more and then refused."""
        if self.features.pinning != "number":
            return self._client.batch(requests)
        proof: Request = ("eth_getBlockByNumber", [hex(block.height), False])
        found: list[str] = []
        for _ in range(2):
            replies = self._client.batch([proof, *requests, proof])
            found = [proof_hash(replies[0]), proof_hash(replies[-1])]
            if found == [block.hash.lower()] * 2:
                return replies[1:-1]
        raise SourceUnavailable(self.source, f"block {block.height} changed during the read: "
                                             f"expected {block.hash}, read "
                                             f"{' then '.join(found)}")

    def _param(self, block: ChainHead) -> str | dict[str, str]:
        """The block parameter that pins a read to `block` on this source."""
        return hex(block.height) if self.features.pinning == "number" else _at(block)

    # -- balances -----------------------------------------------------------------

    def _multicall_ready(self, block: ChainHead) -> bool:
        """Whether Multicall3 code exists at its address; asked once, then remembered."""
        if self.features.multicall is None:
            code = self._pinned_batch([("eth_getCode", [self._multicall, self._param(block)])],
                                      block)[0]
            if isinstance(code, RpcError):
                raise_if_source_failed(code, self.source)
            self.features.multicall = isinstance(code, str) and len(code) > 2
        return self.features.multicall

    def _read_multicall(
        self, pairs: Sequence[tuple[Address, AssetRef]], block: ChainHead
    ) -> list[Outcome] | None:
        """Read every pair through `aggregate3` eth_calls sent in JSON-RPC batches. None
        when Multicall3 cannot serve them, and the caller reads the pairs directly: an
        aggregate3 that returned no data at all, as a call to an address without code
        does (not there at `block`: a block before it was deployed, a node whose state
        lost it; probed again next time), or one the node's EVM cannot run ("invalid
        opcode": a Multicall3 built for a newer EVM than the node's, e.g. ganache 7 and
        the Cancun build; not used on this source again)."""
        calls = [self._balance_call(address, asset) for address, asset in pairs]
        try:
            results = self._aggregate(calls, block)
        except NoCode:
            self.features.multicall = None
            return None
        except CannotRun:
            self.features.multicall = False
            return None
        return [outcome_of(result) for result in results]

    def _balance_call(self, address: Address, asset: AssetRef) -> Call:
        try:
            if asset.contract is None:
                assert self._multicall is not None
                return get_eth_balance_call(self._multicall, address)
            return balance_of_call(asset.contract, address)
        except ValueError as exc:
            raise InvalidAddress(str(exc)) from None

    def _aggregate(self, calls: Sequence[Call], block: ChainHead) -> list[CallResult | str]:
        """Run `calls` through aggregate3, `calls_per_multicall` at a time.

        A whole aggregate3 that fails (e.g. out of gas) is split in halves and retried,
        down to single calls; a single call that still fails yields its error text.
        """
        results: list[CallResult | str] = [""] * len(calls)
        step = self._calls_per_multicall
        spans = [(start, min(start + step, len(calls))) for start in range(0, len(calls), step)]
        while spans:
            replies = self._pinned_batch(
                [self._aggregate_request(calls[a:b], block) for a, b in spans], block
            )
            retry: list[tuple[int, int]] = []
            for (start, end), reply in zip(spans, replies, strict=True):
                if reply == "0x":
                    raise NoCode
                if isinstance(reply, RpcError) and "invalid opcode" in reply.message.lower():
                    raise CannotRun(reply.message)
                if not isinstance(reply, RpcError):
                    results[start:end] = decode_aggregate_reply(reply, end - start, self.source)
                    continue
                raise_if_source_failed(reply, self.source)
                if end - start == 1:
                    results[start] = f"aggregate3 failed: {reply.message}"
                else:
                    middle = (start + end) // 2
                    retry += [(start, middle), (middle, end)]
            spans = retry
        return results

    def _aggregate_request(self, calls: Sequence[Call], block: ChainHead) -> Request:
        data = "0x" + encode_aggregate3(calls).hex()
        return ("eth_call", [{"to": self._multicall, "data": data}, self._param(block)])

    def _read_direct(
        self, pairs: Sequence[tuple[Address, AssetRef]], block: ChainHead
    ) -> list[Outcome]:
        """Read every pair with batched eth_getBalance / eth_call balanceOf requests."""
        requests = [self._direct_request(address, asset, block) for address, asset in pairs]
        replies = self._pinned_batch(requests, block)
        return [
            direct_outcome(reply, asset.contract is None, self.source)
            for (_, asset), reply in zip(pairs, replies, strict=True)
        ]

    def _direct_request(self, address: Address, asset: AssetRef, block: ChainHead) -> Request:
        if asset.contract is None:
            return ("eth_getBalance", [address, self._param(block)])
        call = self._balance_call(address, asset)
        return ("eth_call", [{"to": call.target, "data": "0x" + call.call_data.hex()},
                             self._param(block)])


def _at(block: ChainHead) -> dict[str, str]:
    """The EIP-1898 block parameter that pins a read to `block` by hash."""
    return {"blockHash": block.hash}
