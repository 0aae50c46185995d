"""A UTXO chain adapter over the Esplora REST API (Blockstream, mempool.space, electrs).

Heads come from `/blocks/tip/hash` or `/block-height/:h`, then `/block/:hash`. A
balance is `chain_stats.funded_txo_sum - chain_stats.spent_txo_sum` of
`/address/:a`: confirmed outputs only; `mempool_stats` (unconfirmed) is ignored, as
the Core-RPC source ignores the mempool too.

Esplora cannot read an address at a chosen block: it always answers at its tip. The
adapter therefore reads the tip hash before and after the address requests and
accepts the balances only when both agree (else it reads them all again, a bounded
number of times), and the observations carry that tip, not the requested block.
Between the two tip reads the server may briefly answer from different indexes
behind a load balancer; nothing in the API can rule that out.

Transfer history (`scan`) reads the range's blocks with `/blocks/:height` (ten per
answer) and each watched address's history with `/address/:a/txs` (its mempool
transactions, then its newest 25 confirmed ones) and `/address/:a/txs/chain/:txid`
(the next 25), newest first, until a transaction below the range appears or the
history ends. A page of fewer than 25 confirmed transactions ends the history, and
then the count read must be the address's `chain_stats.tx_count`: a truncated page is
an error, never a shorter history. Esplora gives every input's prevout (address and
value), so fees are exact and no outputs need tracking. Transactions are ordered by
block, then by txid: an address history does not tell a transaction's position in
its block. The mempool is read as far as the first page lists it (at most 50).

Histories, too, are answered at the source's tip, so `scan` reads the tip hash before
and after its reads: a transaction in the range whose block is not the range's block
at its height, or a range whose last block changed, means the chain moved
(SourceUnavailable: the daemon retries next cycle). A history that disagrees with
`tx_count` is a DecodeError while the tip held still, but SourceUnavailable when it
moved (the history may just have grown between the reads).

Amounts arrive as JSON integers (satoshis) and stay `int`. Transient failures (429,
5xx, timeouts, refused connections) are retried with exponential backoff that
honours `Retry-After`; messages name only the redacted URL.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeAlias
from urllib.parse import quote

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from chains.errors import DecodeError, SourceUnavailable
from chains.http import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RESPONSE_BYTES,
    BodyRefused,
    BoundedResponse,
    bounded_transport,
    describe_http_error,
    host_name,
    send_bounded,
)
from chains.jsonrpc import (
    BackoffOrRetryAfter,
    RetryPolicy,
    Transient,
    retry_after_seconds,
    tls_context,
)
from chains.types import (
    Address,
    AssetRef,
    BalanceObservation,
    BaseUnits,
    BlockLink,
    ChainHead,
    ScanResult,
    TrackedOutput,
)
from chains.urls import url_secrets
from chains.utxo.address import NETWORKS
from chains.utxo.core_rpc import TOKENS_UNSUPPORTED
from chains.utxo.decode import block_hash
from chains.utxo.esplora_decode import (
    AddressHistory,
    HistoryPage,
    chain_links,
    decode_address_balance,
    decode_block,
    decode_block_page,
    decode_history_page,
    decode_tx_count,
    json_body,
    scan_result,
)
from chains.utxo.esplora_http import BadRequest, NotFound, Pace, short_text
from chains.utxo.esplora_scan import address_history, cancel_all, gather_all
from chains.utxo.networks import GENESIS_NETWORK

__all__ = ["BLOCKS_PAGE", "TIP_ATTEMPTS", "EsploraAdapter", "Outcome"]

TIP_ATTEMPTS = 3
"""How often balances() reads all addresses again when the tip moved meanwhile."""

BLOCKS_PAGE = 10
"""Blocks per `/blocks/:height` answer: that block and the nine below it."""

Outcome: TypeAlias = int | str
"""A native balance read: satoshis, or why the address could not be read."""

_Transient = Transient


class EsploraAdapter:
    """Reads one Bitcoin or Litecoin chain through an Esplora REST API (a ChainAdapter).

    `url` is the API's base (`https://blockstream.info/api`); user info becomes HTTP
    basic auth and a query string (API key) is sent with every request, but only the
    source's name (`source`) appears in messages. Up to `concurrency` address requests
    run at once.
    """

    def __init__(
        self,
        url: str,
        *,
        network: str,
        timeout: float = 10.0,
        concurrency: int = 16,
        rate_limit: float | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        """`name` labels the source everywhere (default: the URL's host); `headers` go with
        every request; `max_response_bytes` and `deadline` bound each response."""
        if network not in NETWORKS:
            raise ValueError(f"unknown utxo network {network!r}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._network = network
        try:
            self._base = httpx.URL(url)
        except httpx.InvalidURL:
            raise ValueError(f"invalid esplora url for source {name or 'esplora'}") from None
        self._source = name or host_name(url)
        self._secrets = url_secrets(url) + [v for v in (headers or {}).values() if v]
        self._send_headers = dict(headers or {})
        self._max_bytes = max_response_bytes
        self._deadline = deadline
        self._retry = retry or RetryPolicy()
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._http = httpx.Client(timeout=timeout, transport=transport or bounded_transport(
            verify=tls_context(), limits=limits))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="esplora")
        self._lock = threading.Lock()
        self._pace = Pace(rate_limit)
        self._requests = 0
        self._headers: dict[str, ChainHead] = {}

    @property
    def source(self) -> str:
        """The source's name, safe to log (never its URL)."""
        return self._source

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (retries included)."""
        return self._requests

    def close(self) -> None:
        """Release connections and the worker threads."""
        self._pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> EsploraAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def chain_id(self) -> str:
        """Return the network the source serves, told by its genesis block hash.

        That is the configured network when the genesis is the configured network's, else
        the network the genesis names. Raises SourceUnavailable for a genesis of no known
        network (segwatch cannot tell what it serves), DecodeError.
        """
        genesis = self._block_hash_at(0)
        known = GENESIS_NETWORK.get(genesis)
        if known is None:
            raise SourceUnavailable(
                self.source, f"genesis block {genesis} belongs to no known network; "
                f"cannot confirm it serves {self._network}")
        return known

    def head(self) -> ChainHead:
        """Return the source's tip. Raises SourceUnavailable, DecodeError."""
        return self._header(self._tip_hash())

    def block_at(self, height: int) -> ChainHead:
        """Return the block at `height`. Raises SourceUnavailable (also when it does not
        exist yet), DecodeError, ValueError for a negative height."""
        if height < 0:
            raise ValueError("height must not be negative")
        return self._header(self._block_hash_at(height))

    def balances(
        self,
        addresses: Sequence[Address],
        assets: Sequence[AssetRef],
        block: ChainHead,
    ) -> list[BalanceObservation]:
        """Return one observation per (address, asset), address-major.

        Native balances are confirmed balances at the source's tip and carry that tip,
        which may differ from `block` (see the module docstring); a token, or an address
        the source rejects (HTTP 400), carries an `error` at `block`. Raises
        SourceUnavailable when the source fails or its tip keeps moving during the
        reads, DecodeError for a malformed answer.
        """
        if not addresses or not assets:
            return []
        unique = list(dict.fromkeys(addresses))
        seen, outcomes = block, dict[Address, Outcome]()
        if any(asset.is_native for asset in assets):
            seen, outcomes = self._consistent_balances(unique)
        observations = []
        for address in addresses:
            for asset in assets:
                outcome = outcomes.get(address, TOKENS_UNSUPPORTED) if asset.is_native \
                    else TOKENS_UNSUPPORTED
                observations.append(self._observation(address, asset, block, seen, outcome))
        return observations

    def scan(self, watched: Collection[Address], start: int, end: int,
             tracked: Collection[TrackedOutput] = ()) -> ScanResult:
        """Return the transfers and fees of `watched` in blocks start..end (inclusive), a
        link for every block of the range, and the watched addresses' mempool transfers.

        Block pages and address histories are read concurrently (at most `concurrency`
        requests at once); `tracked` is not needed (Esplora knows every prevout).
        Raises SourceUnavailable when the range cannot be read or the chain moved during
        the scan, DecodeError for a malformed answer or an incomplete history,
        ValueError for a negative `start`.
        """
        if start < 0:
            raise ValueError("start must not be negative")
        if start > end:
            return ScanResult((), (), (), "none", 0)
        addresses = list(dict.fromkeys(watched))
        tip = self._tip_hash()
        pages = [self._pool.submit(self._block_page, top)
                 for top in range(end, start - 1, -BLOCKS_PAGE)]
        reads = [self._pool.submit(address_history, address, start, self._history_page,
                                   self._tx_count, self.source) for address in addresses]
        try:
            blocks = gather_all(pages)
            links = chain_links(blocks, start, end, self.source)
            histories = gather_all(reads)
        finally:
            cancel_all(pages, reads)  # after a failure, the reads not yet started are moot
        self._settle(tip, links[-1], histories)
        return scan_result(links, histories, frozenset(addresses), self.source)

    # -- blocks -------------------------------------------------------------------------

    def _tip_hash(self) -> str:
        return block_hash(self._get_text("/blocks/tip/hash"), self.source, "tip hash")

    def _block_hash_at(self, height: int) -> str:
        try:
            text = self._get(f"/block-height/{height}", rejectable=True).text.strip()
        except (NotFound, BadRequest):
            raise SourceUnavailable(self.source, f"no block {height} yet") from None
        return block_hash(text, self.source, f"block-height/{height}")

    def _header(self, block_hash: str) -> ChainHead:
        """Return the block `block_hash` (remembered: a hash names one block forever)."""
        known = self._headers.get(block_hash)
        if known is None:
            try:
                response = self._get(f"/block/{block_hash}", rejectable=True)
            except (NotFound, BadRequest):
                raise SourceUnavailable(self.source, f"block {block_hash} vanished") from None
            known = decode_block(json_body(response, self.source, "block"), self.source)
            if known.hash != block_hash:
                raise DecodeError(self.source, "block.id", f"asked for {block_hash}")
            self._headers[block_hash] = known
        return known

    # -- transfer history ---------------------------------------------------------------

    def _block_page(self, top: int) -> list[BlockLink]:
        """Return block `top` and the nine below it, newest first."""
        try:
            response = self._get(f"/blocks/{top}", rejectable=True)
        except (NotFound, BadRequest):
            raise SourceUnavailable(self.source, f"no block {top} yet") from None
        return decode_block_page(json_body(response, self.source, f"blocks/{top}"), self.source,
                                 top)

    def _history_page(self, path: str) -> HistoryPage:
        raw = json_body(self._get(path), self.source, path[1:])
        return decode_history_page(raw, self.source, self._network, path[1:])

    def used(self, addresses: Sequence[Address]) -> set[Address]:
        """Return the addresses with any transaction, confirmed or pending (HD discovery
        with a gap limit). Raises SourceUnavailable, DecodeError."""
        def touched(address: Address) -> bool:
            field = f"address/{address}"
            raw = json_body(self._get(f"/address/{quote(address, safe='')}"), self.source, field)
            confirmed = decode_tx_count(raw, self.source, address)
            pending = raw.get("mempool_stats") or {}
            return confirmed > 0 or (isinstance(pending, dict) and
                                     bool(pending.get("tx_count")))
        unique = list(dict.fromkeys(addresses))
        return {a for a, hit in zip(unique, self._pool.map(touched, unique), strict=True) if hit}

    def _tx_count(self, address: Address) -> int:
        field = f"address/{address}"
        raw = json_body(self._get(f"/address/{quote(address, safe='')}"), self.source, field)
        return decode_tx_count(raw, self.source, address)

    def _settle(self, tip: str, last: BlockLink, histories: Sequence[AddressHistory]) -> None:
        """Accept the reads if the chain held still during them, or moved only above the
        range with every history complete. Raises DecodeError for an incomplete history
        read while the tip held still, SourceUnavailable when the chain moved."""
        gaps = [history for history in histories if history.gap is not None]
        if self._tip_hash() == tip:
            if gaps:
                raise DecodeError(self.source, f"address/{gaps[0].address}/txs",
                                  f"history incomplete: {gaps[0].gap}")
            return
        if self._block_hash_at(last.height) != last.hash:
            raise SourceUnavailable(self.source, "the chain moved during the scan")
        if gaps:
            raise SourceUnavailable(
                self.source, f"the chain moved during the scan and the history of "
                f"{gaps[0].address} changed meanwhile ({gaps[0].gap})")

    # -- balances -----------------------------------------------------------------------

    def _consistent_balances(
        self, addresses: list[Address]
    ) -> tuple[ChainHead, dict[Address, Outcome]]:
        """Read every address between two equal tip reads; return that tip and outcomes."""
        before = self._tip_hash()
        for _ in range(TIP_ATTEMPTS):
            outcomes = dict(zip(addresses, self._pool.map(self._address_outcome, addresses),
                                strict=True))
            after = self._tip_hash()
            if after == before:
                return self._header(after), outcomes
            before = after
        raise SourceUnavailable(
            self.source, f"the tip moved during each of {TIP_ATTEMPTS} balance reads")

    def _address_outcome(self, address: Address) -> Outcome:
        try:
            response = self._get(f"/address/{quote(address, safe='')}", rejectable=True)
        except (BadRequest, NotFound) as rejected:
            return f"not a valid address on the source's network: {rejected}"
        raw = json_body(response, self.source, f"address/{address}")
        return decode_address_balance(raw, self.source, address, self._network)

    def _observation(self, address: Address, asset: AssetRef, block: ChainHead,
                     seen: ChainHead, outcome: Outcome) -> BalanceObservation:
        if isinstance(outcome, str):
            return BalanceObservation(address, asset, None, block, self.source, error=outcome)
        return BalanceObservation(address, asset, BaseUnits(outcome), seen, self.source)

    # -- HTTP ---------------------------------------------------------------------------

    def _get_text(self, path: str) -> str:
        return self._get(path).text.strip()

    def _get(self, path: str, *, rejectable: bool = False) -> BoundedResponse:
        """GET `path` below the base URL with bounded retries.

        Raises NotFound (HTTP 404) and BadRequest (HTTP 400) when `rejectable`, else
        SourceUnavailable for them as for every other failure.
        """
        policy = self._retry
        retrying = Retrying(
            stop=stop_after_attempt(max(1, policy.attempts)),
            wait=BackoffOrRetryAfter(policy),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            return retrying(self._get_once, path)
        except _Transient as exc:
            raise SourceUnavailable(exc.source, exc.reason) from None
        except (NotFound, BadRequest) as exc:
            if rejectable:
                raise
            raise SourceUnavailable(self.source, f"{exc.args[0]} for {path}") from None

    def _get_once(self, path: str) -> BoundedResponse:
        self._pace.wait()
        with self._lock:
            self._requests += 1
        url = self._base.copy_with(path=self._base.path.rstrip("/") + path)
        try:
            request = self._http.build_request("GET", url, headers=self._send_headers)
            response = send_bounded(self._http, request, max_bytes=self._max_bytes,
                                    deadline=self._deadline)
        except BodyRefused as exc:  # not retried: the same source would do it again
            raise SourceUnavailable(self.source, f"{exc} for {path}") from None
        except httpx.HTTPError as exc:
            raise _Transient(self.source, self._describe(exc)) from None
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise _Transient(self.source, f"HTTP {status} for {path}", retry_after)
        if status == 404:
            raise NotFound(f"HTTP 404: {short_text(response.text)}")
        if status == 400:
            raise BadRequest(f"HTTP 400: {short_text(response.text)}")
        if status != 200:
            raise SourceUnavailable(self.source, f"HTTP {status} for {path}")
        return response

    def _describe(self, exc: Exception) -> str:
        return describe_http_error(exc, self._secrets, self._http)
