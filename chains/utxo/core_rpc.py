"""A UTXO chain adapter over a Bitcoin Core-compatible JSON-RPC node (bitcoind, litecoind).

Heads come from `getbestblockhash`/`getblockhash` + `getblockheader`. Balances come
from `scantxoutset`, which reads the node's *current* UTXO set (confirmed outputs
only, no wallet or index needed): one scan per chunk of addresses, its unspent
outputs summed per scriptPubKey. Because the scan always sees the node's tip, a
balance observation carries the block the scan actually saw (`bestblock`/`height`
of its answer), which differs from the requested block whenever the service reads
below the tip (`confirmations` > 0) or the chain moved meanwhile; the confirmation
depth therefore cannot be honoured by this source.

Every call travels as a JSON-RPC *batch*, even a single one: Core answers a lone
call that fails with HTTP 500 (losing the error's code and message), but a batch
with HTTP 200 and one error object per item.

Exact amounts: Core prints amounts as JSON numbers in coins (`0.50000000`); the
scan's client decodes them as `Decimal` (`parse_float`), and `coins_to_sats` turns
them into `int` satoshis. They never pass through a float.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, DecimalException, Inexact, InvalidOperation
from functools import partial
from typing import Any, TypeAlias

import httpx

from chains.errors import DecodeError, SegwatchError, SourceUnavailable
from chains.http import DEFAULT_DEADLINE, DEFAULT_MAX_RESPONSE_BYTES
from chains.jsonrpc import JsonRpcClient, Request, RetryPolicy, RpcError, RpcErrorResponse
from chains.limits import max_supply_sats
from chains.types import (
    Address,
    AssetRef,
    BalanceObservation,
    BaseUnits,
    ChainHead,
    ScanResult,
    TrackedOutput,
)
from chains.utxo.address import NETWORKS
from chains.utxo.core_scan import CoreScanner
from chains.utxo.decode import block_hash, checked_height, checked_time, is_hex
from chains.utxo.networks import GENESIS_NETWORK, coin_of

COIN_DECIMALS = 8
"""Bitcoin and Litecoin amounts: 1 coin = 10**8 base units (satoshi, litoshi)."""

TOKENS_UNSUPPORTED = "tokens are not supported on utxo chains"

_GENESIS_COIN = {genesis: coin_of(network) for genesis, network in GENESIS_NETWORK.items()
                 if network != "signet"}
"""Genesis block hashes that reveal the coin (signets share one genesis: not telling)."""

_NETWORK_NAMES = {
    ("bitcoin", "main"): "bitcoin",
    ("bitcoin", "test"): "testnet",
    ("bitcoin", "signet"): "signet",
    ("bitcoin", "regtest"): "regtest",
    ("litecoin", "main"): "litecoin",
    ("litecoin", "regtest"): "litecoin-regtest",
}
"""(coin, `getblockchaininfo.chain`) → segwatch network name."""

_RPC_INVALID_PARAMETER = -8
_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation])
Outcome: TypeAlias = tuple[ChainHead, int] | str
"""A native balance read: (block the scan saw, satoshis), or why it could not be read."""


def coins_to_sats(value: Any, source: str, field: str, network: str | None = None) -> int:
    """Return an amount in coins (a Decimal as the scan client parses it, a decimal string
    or an int) as int base units.

    Raises DecodeError naming `field` for a float, a non-number, a negative amount, one
    with more than 8 decimal places, or more than the coin's supply on `network` (the
    larger coin's when None), checked before the conversion to int.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise DecodeError(source, field, f"not an exact decimal amount: {str(value)[:80]!r}")
    try:
        coins = Decimal(value)
        if not coins.is_finite():
            raise InvalidOperation
        exact = coins.scaleb(COIN_DECIMALS, context=_EXACT).to_integral_exact(context=_EXACT)
    except DecimalException:
        raise DecodeError(source, field, f"not a whole number of base units: {value!r}") from None
    if exact < 0:
        raise DecodeError(source, field, f"negative amount: {str(value)[:80]!r}")
    supply = max_supply_sats(network)
    if exact > supply:
        raise DecodeError(source, field, f"{str(value)[:80]!r} coins is out of range (at most "
                          f"{supply} base units)")
    return int(exact)


@dataclass(frozen=True, slots=True)
class Unspent:
    """One unspent output a `scantxoutset` found."""

    script: str
    txid: str
    vout: int
    sats: int
    height: int


@dataclass(frozen=True, slots=True)
class UtxoScan:
    """What one `scantxoutset` saw: its block, the satoshis per scriptPubKey (hex) and
    the outputs themselves."""

    height: int
    block_hash: str
    sats_by_script: dict[str, int]
    unspents: tuple[Unspent, ...] = ()


def decode_scan(raw: Any, source: str, network: str | None = None) -> UtxoScan:
    """Return a `scantxoutset start` answer as a UtxoScan.

    Raises SourceUnavailable when the scan did not complete (aborted on the node),
    DecodeError naming the field for anything malformed, including an answer without
    `height`/`bestblock` (nodes older than Core 0.21 cannot pin the scan to a block), and
    amounts, each or together, above the coin's supply on `network`.
    """
    if not isinstance(raw, dict):
        raise DecodeError(source, "scantxoutset", "not a JSON object")
    if raw.get("success") is not True:
        raise SourceUnavailable(source, "scantxoutset did not complete (aborted on the node)")
    height = checked_height(raw.get("height"), source, "scantxoutset.height")
    best = block_hash(raw.get("bestblock"), source, "scantxoutset.bestblock")
    unspents = raw.get("unspents")
    if not isinstance(unspents, list):
        raise DecodeError(source, "scantxoutset.unspents", "not a JSON array")
    totals: dict[str, int] = {}
    found = []
    for index, item in enumerate(unspents):
        unspent = _unspent(item, source, f"scantxoutset.unspents[{index}]", network)
        totals[unspent.script] = totals.get(unspent.script, 0) + unspent.sats
        found.append(unspent)
    if sum(totals.values()) > max_supply_sats(network):
        raise DecodeError(source, "scantxoutset.unspents", "amounts sum to more than the "
                          "coin's supply")
    return UtxoScan(height, best, totals, tuple(found))


def _unspent(item: Any, source: str, field: str, network: str | None) -> Unspent:
    """Return one unspent output. Raises DecodeError."""
    if not isinstance(item, dict):
        raise DecodeError(source, field, "not a JSON object")
    script = item.get("scriptPubKey")
    if not isinstance(script, str) or not is_hex(script):
        raise DecodeError(source, f"{field}.scriptPubKey", f"not hex: {str(script)[:80]!r}")
    return Unspent(script.lower(), block_hash(item.get("txid"), source, f"{field}.txid"),
                   checked_height(item.get("vout"), source, f"{field}.vout"),
                   coins_to_sats(item.get("amount"), source, f"{field}.amount", network),
                   checked_height(item.get("height"), source, f"{field}.height"))


def decode_header(raw: Any, source: str) -> ChainHead:
    """Return a verbose `getblockheader` answer as a ChainHead. Raises DecodeError."""
    if not isinstance(raw, dict):
        raise DecodeError(source, "block header", "not a JSON object")
    return ChainHead(
        height=checked_height(raw.get("height"), source, "header.height"),
        hash=block_hash(raw.get("hash"), source, "header.hash"),
        timestamp=checked_time(raw.get("time"), source, "header.time"),
    )


def network_name(coin: str, chain: str) -> str:
    """Return segwatch's name for `chain` (`getblockchaininfo.chain`) of `coin`; an
    unknown combination gets a descriptive name that matches no configurable network."""
    return _NETWORK_NAMES.get((coin, chain), f"{coin}-{chain}")


class CoreRpcAdapter:
    """Reads one Bitcoin or Litecoin chain through a Core JSON-RPC node (a ChainAdapter).

    `url` carries the RPC credentials as `http://user:password@host:port`; httpx sends
    them as HTTP basic auth, and only the source's name (`source`) appears in messages.
    Two clients share the endpoint: one for quick calls (`timeout`, `retry`), one for
    `scantxoutset` (`scan_timeout`, never retried: a retry would find the first scan
    still running). `scan_chunk` addresses go into one scan.
    """

    def __init__(
        self,
        url: str,
        *,
        network: str,
        timeout: float = 10.0,
        max_batch: int = 500,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        scan_timeout: float = 600.0,
        scan_chunk: int = 1000,
        block_batch: int = 10,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        """`name` labels the source everywhere (default: the URL's host); `headers` go with
        every request; `max_response_bytes` and `deadline` bound each response (the
        `scantxoutset` client, whose scans take minutes, waits up to `scan_timeout`)."""
        if network not in NETWORKS:
            raise ValueError(f"unknown utxo network {network!r}")
        if scan_chunk < 1:
            raise ValueError("scan_chunk must be at least 1")
        self._coin = "litecoin" if network.startswith("litecoin") else "bitcoin"
        self._network = network
        bounds: dict[str, Any] = {"name": name, "headers": headers,
                                  "max_response_bytes": max_response_bytes}
        self._client = JsonRpcClient(url, timeout=timeout, max_batch=max_batch, retry=retry,
                                     transport=transport, deadline=deadline, **bounds)
        self._scanner = JsonRpcClient(
            url, timeout=scan_timeout, max_batch=1, retry=RetryPolicy(attempts=1),
            transport=transport, parse_float=Decimal, deadline=max(deadline, scan_timeout),
            **bounds,
        )
        self._scan_chunk = scan_chunk
        self._blocks = JsonRpcClient(
            url, timeout=max(timeout, 60.0), max_batch=max_batch, retry=retry,
            transport=transport, parse_float=Decimal, deadline=max(deadline, 60.0), **bounds,
        )
        self._block_scanner = CoreScanner(self._blocks, partial(coins_to_sats, network=network),
                                          block_batch)
        self._scripts: dict[Address, str] = {}
        self._rejected: dict[Address, str] = {}
        self._headers: dict[str, ChainHead] = {}

    @property
    def source(self) -> str:
        """The source's name, safe to log (never its URL)."""
        return self._client.source

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far by both clients (retries included)."""
        return (self._client.requests_made + self._scanner.requests_made
                + self._blocks.requests_made)

    def close(self) -> None:
        """Release connections."""
        self._client.close()
        self._scanner.close()
        self._blocks.close()

    def __enter__(self) -> CoreRpcAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def chain_id(self) -> str:
        """Return the network the node serves in segwatch naming (`litecoin-regtest`, …).

        The coin is that of the configured network unless the node's genesis block
        belongs to a known network of the other coin (mainnet, testnet3, regtest of
        Bitcoin and Litecoin): so a bitcoind configured as a Litecoin chain is told
        apart on those networks, but a node of an unknown network or fork (e.g. a
        custom signet) is assumed to be of the configured coin, which RPC cannot
        disprove. Raises SourceUnavailable, DecodeError.
        """
        info, genesis = self._batch([("getblockchaininfo", []), ("getblockhash", [0])])
        chain = info.get("chain") if isinstance(info, dict) else None
        if not isinstance(chain, str):
            raise DecodeError(self.source, "getblockchaininfo.chain", "missing or not a string")
        coin = _GENESIS_COIN.get(genesis, self._coin) if isinstance(genesis, str) else self._coin
        return network_name(coin, chain)

    def head(self) -> ChainHead:
        """Return the node's best block. Raises SourceUnavailable, DecodeError."""
        (best,) = self._batch([("getbestblockhash", [])])
        return self._header(block_hash(best, self.source, "getbestblockhash"))

    def block_at(self, height: int) -> ChainHead:
        """Return the active chain's block at `height`. Raises SourceUnavailable (also when
        it does not exist yet), DecodeError, ValueError for a negative height."""
        if height < 0:
            raise ValueError("height must not be negative")
        try:
            (found,) = self._batch([("getblockhash", [height])])
        except RpcErrorResponse as exc:
            if exc.error.code == _RPC_INVALID_PARAMETER:
                raise SourceUnavailable(self.source, f"no block {height} yet") from None
            raise
        return self._header(block_hash(found, self.source, "getblockhash"))

    def balances(
        self,
        addresses: Sequence[Address],
        assets: Sequence[AssetRef],
        block: ChainHead,
    ) -> list[BalanceObservation]:
        """Return one observation per (address, asset), address-major.

        Native balances are read at the node's tip by `scantxoutset` and carry the block
        the scan saw, which may differ from `block` (see the module docstring); a token,
        or an address the node rejects, carries an `error` at `block`. Raises
        SourceUnavailable when the node fails or is busy with another scan, DecodeError
        for a malformed answer.
        """
        if not addresses or not assets:
            return []
        native = any(asset.is_native for asset in assets)
        outcomes = self._native_outcomes(list(dict.fromkeys(addresses))) if native else {}
        return [
            self._observation(address, asset, block, outcomes.get(address, TOKENS_UNSUPPORTED))
            for address in addresses
            for asset in assets
        ]

    def scan(self, watched: Collection[Address], start: int, end: int,
             tracked: Collection[TrackedOutput] = ()) -> ScanResult:
        """Return the transfers and fees of `watched` in blocks start..end, following the
        `tracked` outputs (see chains/utxo/core_scan.py). Raises SourceUnavailable,
        DecodeError."""
        if start > end:
            return ScanResult((), (), (), "none", 0)
        return self._block_scanner.scan(watched, start, end, tracked)

    def unspent(self, addresses: Sequence[Address]) -> tuple[ChainHead, list[TrackedOutput]]:
        """Return the addresses' unspent outputs and the one block every scan saw: what a
        transfer scan starting after that block must track. Raises SourceUnavailable
        (also when the chain moved between scan chunks), DecodeError."""
        self._learn_scripts(list(dict.fromkeys(addresses)))
        holders: dict[str, Address] = {}
        for address in addresses:
            if address in self._scripts:
                holders.setdefault(self._scripts[address], address)
        seen: set[str] = set()
        outputs: list[TrackedOutput] = []
        for chunk in _chunks(list(holders), self._scan_chunk):
            found = self._scan_utxos([holders[script] for script in chunk])
            seen.add(found.block_hash)
            outputs += [TrackedOutput(u.txid, u.vout, holders[u.script], u.sats, u.height)
                        for u in found.unspents if u.script in holders]
        if len(seen) > 1:
            raise SourceUnavailable(self.source, "the chain moved between scantxoutset chunks")
        head = self._header(seen.pop()) if seen else self.head()
        return head, outputs

    # -- calls and blocks -------------------------------------------------------------

    def _batch(self, requests: Sequence[Request]) -> list[Any]:
        """Return the results of `requests` sent as one batch. Raises RpcErrorResponse for
        the first item the node answered with an error, SourceUnavailable."""
        results = self._client.batch(requests)
        for result in results:
            if isinstance(result, RpcError):
                raise RpcErrorResponse(self.source, result)
        return results

    def _header(self, block_hash: str) -> ChainHead:
        """Return the block `block_hash` (remembered: a hash names one block forever)."""
        known = self._headers.get(block_hash)
        if known is None:
            (raw,) = self._batch([("getblockheader", [block_hash, True])])
            known = decode_header(raw, self.source)
            if known.hash != block_hash:
                raise DecodeError(self.source, "header.hash", f"asked for {block_hash}")
            self._headers[block_hash] = known
        return known

    # -- balances ---------------------------------------------------------------------

    def _native_outcomes(self, addresses: list[Address]) -> dict[Address, Outcome]:
        """Scan every address's outputs, `scan_chunk` scripts per scantxoutset."""
        self._learn_scripts(addresses)
        outcomes: dict[Address, Outcome] = {
            a: self._rejected[a] for a in addresses if a in self._rejected
        }
        holders: dict[str, list[Address]] = {}
        for address in addresses:
            if address in self._scripts:
                holders.setdefault(self._scripts[address], []).append(address)
        for chunk in _chunks(list(holders), self._scan_chunk):
            found = self._scan_utxos([holders[script][0] for script in chunk])
            seen = self._header(found.block_hash)
            for script in chunk:
                for address in holders[script]:
                    outcomes[address] = (seen, found.sats_by_script.get(script, 0))
        return outcomes

    def _learn_scripts(self, addresses: list[Address]) -> None:
        """Ask the node (once per address) for its scriptPubKey via `validateaddress`."""
        unknown = [a for a in addresses if a not in self._scripts and a not in self._rejected]
        if not unknown:
            return
        answers = self._client.batch([("validateaddress", [a]) for a in unknown])
        for address, answer in zip(unknown, answers, strict=True):
            if isinstance(answer, RpcError):
                self._rejected[address] = f"validateaddress failed: {answer.message}"
            elif not isinstance(answer, dict) or answer.get("isvalid") is not True:
                self._rejected[address] = "not a valid address on the node's network"
            else:
                script = answer.get("scriptPubKey")
                if not isinstance(script, str) or not is_hex(script):
                    raise DecodeError(self.source, "validateaddress.scriptPubKey", "not hex")
                self._scripts[address] = script.lower()

    def _scan_utxos(self, addresses: list[Address]) -> UtxoScan:
        """Run one `scantxoutset start` over `addresses`. Raises SourceUnavailable (also
        when another scan is running), DecodeError."""
        descriptors = [{"desc": f"addr({address})"} for address in addresses]
        try:
            (raw,) = self._scanner.batch([("scantxoutset", ["start", descriptors])])
        except SourceUnavailable as exc:
            self._abort_scan()
            raise SourceUnavailable(self.source, f"scantxoutset failed: {exc.reason}") from None
        if isinstance(raw, RpcError):
            raise SourceUnavailable(self.source, _scan_error_reason(raw))
        return decode_scan(raw, self.source, self._network)

    def _abort_scan(self) -> None:
        """Best effort: stop a scan the node may still run for a request we gave up on
        (e.g. after a timeout), so that the next cycle's scan can start."""
        with contextlib.suppress(SegwatchError):
            self._client.batch([("scantxoutset", ["abort"])])

    def _observation(
        self, address: Address, asset: AssetRef, block: ChainHead, outcome: Outcome
    ) -> BalanceObservation:
        if not asset.is_native:
            outcome = TOKENS_UNSUPPORTED
        if isinstance(outcome, str):
            return BalanceObservation(address, asset, None, block, self.source, error=outcome)
        seen, sats = outcome
        return BalanceObservation(address, asset, BaseUnits(sats), seen, self.source)


def _scan_error_reason(error: RpcError) -> str:
    if "in progress" in error.message.lower():
        return ("another scantxoutset is already running on the node (only one may run at "
                "a time); retry later")
    return f"scantxoutset failed: {error}"


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]



